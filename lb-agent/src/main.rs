//! `lb-agent`: loads lb's XDP data plane onto an interface and owns it while it runs.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use lb_agent::{
    config,
    dataplane::{self, decap::DecapPlane, AttachMode, Counters, Dataplane, LoadOptions, PinLayout},
    object,
    services::{Services, ServicesState},
};
use lb_common::{TrafficClass, Verdict};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

/// lb's agent: loads and owns the XDP load-balancer data plane.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the data plane, attach it to an interface, and run until SIGINT/SIGTERM.
    ///
    /// The program, its maps (flow table and counters included) and its link are pinned
    /// under /sys/fs/bpf/lb/<iface>: stopping or killing the agent never stops forwarding,
    /// and the next `run` adopts them (replacing the program atomically, which is also
    /// how an upgrade to a new object happens). `lb-agent down` removes it all.
    /// With --ephemeral nothing is pinned and stopping the agent detaches the program.
    Run {
        /// Interface to attach to (the load balancer's ingress).
        #[arg(long)]
        iface: String,
        /// XDP attach mode. Native runs in the driver; generic is slow and for testing.
        #[arg(long, value_enum, default_value_t = Mode::Native)]
        xdp_mode: Mode,
        /// Pin nothing; detach when the agent stops (for trying things out).
        #[arg(long)]
        ephemeral: bool,
        /// Load this eBPF object instead of the one embedded at build time.
        #[arg(long)]
        bpf_object: Option<PathBuf>,
        /// Seconds between counter summaries in the log (0 turns them off).
        #[arg(long, default_value_t = 10)]
        stats_interval: u64,
        /// Configuration file (VIPs, target groups; see examples/lb.toml). Applied at
        /// start; SIGHUP re-reads it, and an invalid file leaves the running one in place.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Backend side: strip lb's tunnels (IPIP, IP6IP6, 4in6, 6in4, GUE) addressed to this
    /// host, for kernels without the ipip / fou modules. Runs until SIGINT/SIGTERM.
    ///
    /// Also gives a veth backend the XDP receive path that frames redirected by lb need.
    Decap {
        /// The backend's interface facing the load balancer.
        #[arg(long)]
        iface: String,
        /// Outer destination addresses to decapsulate for (this host's addresses that
        /// lb tunnels to). Repeat for several.
        #[arg(long = "address", required = true)]
        addresses: Vec<std::net::IpAddr>,
        /// Accept GUE on this UDP port.
        #[arg(long)]
        gue_port: Option<u16>,
        #[arg(long, value_enum, default_value_t = Mode::Native)]
        xdp_mode: Mode,
        /// Load this eBPF object instead of the one embedded at build time.
        #[arg(long)]
        bpf_object: Option<PathBuf>,
    },
    /// Remove persisted state for an interface: detach the program and unpin its maps.
    Down {
        #[arg(long)]
        iface: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Native,
    Generic,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            iface,
            xdp_mode,
            ephemeral,
            bpf_object,
            stats_interval,
            config,
        } => run(
            &iface,
            xdp_mode,
            ephemeral,
            bpf_object,
            stats_interval,
            config,
        ),
        Command::Decap {
            iface,
            addresses,
            gue_port,
            xdp_mode,
            bpf_object,
        } => decap(&iface, &addresses, gue_port, xdp_mode, bpf_object),
        Command::Down { iface } => down(&iface),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    iface: &str,
    mode: Mode,
    ephemeral: bool,
    bpf_object: Option<PathBuf>,
    stats_interval: u64,
    config_path: Option<PathBuf>,
) -> anyhow::Result<()> {
    // Read and validate the configuration before touching the kernel: a bad file stops
    // the agent with the reason and changes nothing.
    let cfg = config_path
        .as_deref()
        .map(config::load)
        .transpose()
        .context("reading the configuration")?;
    let bytes = object::load_bytes(bpf_object.as_deref())?;
    let options = LoadOptions {
        flow_entries: cfg
            .as_ref()
            .map_or(LoadOptions::default().flow_entries, |c| {
                c.agent.flow_table_entries
            }),
    };
    let mode = match mode {
        Mode::Native => AttachMode::Native,
        Mode::Generic => AttachMode::Generic,
    };
    let layout = PinLayout::for_interface(iface);
    let state = StateFile::for_interface(iface);
    let (mut dp, mut services) = if ephemeral {
        let dp = Dataplane::load_with(&bytes, &options).context("loading the data plane")?;
        (dp, Services::new())
    } else {
        let (dp, adopted) = Dataplane::load_pinned(&bytes, &options, &layout)
            .context("loading the data plane (pinned)")?;
        let services = if adopted {
            match state.load()? {
                Some(saved) => {
                    info!(path = %state.path.display(), "continuing the previous agent's VIP and backend ids");
                    Services::restore(&saved)
                }
                None => {
                    warn!("pinned maps found but no saved ids: VIP ids may change and flows re-hash once");
                    Services::new()
                }
            }
        } else {
            Services::new()
        };
        (dp, services)
    };
    dataplane::enable_forwarding(iface)?;
    allow_egress(&mut dp)?;
    // Configure before attaching (or swapping in) the program: its first packet already
    // sees every VIP.
    if let Some(cfg) = &cfg {
        apply(&mut services, cfg, &mut dp)?;
        if !ephemeral {
            state.save(&services.state())?;
        }
    }
    if ephemeral {
        dp.attach(iface, mode)
            .with_context(|| format!("attaching to {iface}"))?;
    } else {
        dp.attach_pinned(iface, mode, &layout)
            .with_context(|| format!("attaching to {iface}"))?;
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let persisted = (!ephemeral).then_some(&state);
    let signal_name = rt.block_on(serve(
        &mut dp,
        &mut services,
        config_path.as_deref(),
        persisted,
        stats_interval,
    ))?;
    info!(signal = signal_name, "stopping");
    log_counters(&dp.counters()?);
    if ephemeral {
        dp.detach().context("detaching")?;
    } else {
        info!(
            iface,
            "the data plane keeps forwarding; `lb-agent down --iface {iface}` removes it"
        );
    }
    Ok(())
}

/// Where the agent keeps its id allocation between runs (`/run`: gone at reboot, as the
/// pins are).
struct StateFile {
    path: PathBuf,
}

impl StateFile {
    fn for_interface(iface: &str) -> Self {
        Self {
            path: Path::new("/run/lb")
                .join(dataplane::scope(iface))
                .join("state.json"),
        }
    }

    fn load(&self) -> anyhow::Result<Option<ServicesState>> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                Ok(Some(serde_json::from_str(&text).with_context(|| {
                    format!("parsing {}", self.path.display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.path.display())),
        }
    }

    /// Written to a temporary file and renamed over the old one: a crash never leaves a
    /// half-written state.
    fn save(&self, state: &ServicesState) -> anyhow::Result<()> {
        let dir = self.path.parent().context("state path has no directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(state).context("serializing the state")?;
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("replacing {}", self.path.display()))
    }

    fn remove(&self) -> anyhow::Result<()> {
        if let Some(dir) = self.path.parent() {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
            }
            // Empty parents (netns-<name>/, /run/lb) go too; errors here only mean
            // another interface still has state, which stays.
            let mut parent = dir.parent();
            while let Some(p) = parent.filter(|p| p.starts_with("/run/lb")) {
                if std::fs::remove_dir(p).is_err() {
                    break;
                }
                parent = p.parent();
            }
        }
        Ok(())
    }
}

/// Logs counters every `stats_interval` seconds and reloads the configuration on SIGHUP,
/// until SIGINT or SIGTERM arrives.
async fn serve(
    dp: &mut Dataplane,
    services: &mut Services,
    config_path: Option<&Path>,
    state: Option<&StateFile>,
    stats_interval: u64,
) -> anyhow::Result<&'static str> {
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let period = Duration::from_secs(stats_interval.max(1));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            _ = term.recv() => return Ok("SIGTERM"),
            _ = int.recv() => return Ok("SIGINT"),
            _ = hup.recv() => reload(dp, services, config_path, state),
            _ = ticker.tick(), if stats_interval > 0 => log_counters(&dp.counters()?),
        }
    }
}

/// SIGHUP: re-read the configuration; an invalid one is reported and changes nothing.
fn reload(
    dp: &mut Dataplane,
    services: &mut Services,
    config_path: Option<&Path>,
    state: Option<&StateFile>,
) {
    let Some(path) = config_path else {
        warn!("SIGHUP ignored: the agent was started without --config");
        return;
    };
    info!(path = %path.display(), "SIGHUP: reloading the configuration");
    match config::load(path) {
        Ok(cfg) => {
            if let Err(e) = apply(services, &cfg, dp) {
                error!("applying the reloaded configuration failed: {e:#}");
            } else if let Some(state) = state {
                if let Err(e) = state.save(&services.state()) {
                    error!("saving the VIP and backend ids failed: {e:#}");
                }
            }
        }
        Err(e) => error!("configuration rejected, the running one stays in place: {e}"),
    }
}

/// Allows `XDP_REDIRECT` to every interface of this network namespace but loopback: the
/// FIB decides where a backend is; the device map only limits where lb may send.
/// Interfaces added after start are not included (restart or reload to pick them up).
fn allow_egress(dp: &mut Dataplane) -> anyhow::Result<()> {
    let mut allowed = Vec::new();
    // Through netlink, not /sys/class/net: sysfs shows the namespace that mounted it.
    for iface in nix::net::if_::if_nameindex()
        .context("listing interfaces")?
        .iter()
    {
        let name = iface.name().to_string_lossy().into_owned();
        if name == "lo" {
            continue;
        }
        dp.add_tx_port(iface.index())
            .with_context(|| format!("allowing redirects to {name}"))?;
        allowed.push(name);
    }
    allowed.sort();
    info!(
        interfaces = allowed.join(","),
        "egress interfaces allowed for XDP_REDIRECT"
    );
    Ok(())
}

/// Asks the kernel to resolve every target's neighbour entry now (an empty datagram to
/// the discard port), so the first packets of real flows find it; until then the data
/// plane passes them to the kernel (`fib_no_neighbour`).
fn warm_neighbours(cfg: &config::Config) {
    for target in cfg.target_groups.iter().flat_map(|g| &g.targets) {
        let bind = if target.address.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let sent = std::net::UdpSocket::bind(bind)
            .and_then(|s| s.send_to(&[], std::net::SocketAddr::new(target.address, 9)));
        if let Err(e) = sent {
            warn!(target = %target.address, "could not prompt neighbour resolution: {e}");
        }
    }
}

fn apply(services: &mut Services, cfg: &config::Config, dp: &mut Dataplane) -> anyhow::Result<()> {
    for w in &cfg.warnings {
        warn!("configuration: {w}");
    }
    warm_neighbours(cfg);
    let report = services
        .apply(cfg, dp)
        .context("applying the configuration")?;
    info!(
        changed = report.changed.len(),
        unchanged = report.unchanged.len(),
        removed = report.removed.len(),
        backends_added = report.backends_added,
        backends_removed = report.backends_removed,
        "configuration applied"
    );
    Ok(())
}

fn log_counters(c: &Counters) {
    let verdicts: Vec<String> = Verdict::ALL
        .iter()
        .map(|v| format!("{}={}", v.name(), c.verdict(*v).packets))
        .collect();
    let traffic: Vec<String> = TrafficClass::ALL
        .iter()
        .filter(|t| c.traffic(**t).packets > 0)
        .map(|t| format!("{}={}", t.name(), c.traffic(*t).packets))
        .collect();
    info!(
        verdicts = verdicts.join(" "),
        traffic = traffic.join(" "),
        "packet counters"
    );
}

fn decap(
    iface: &str,
    addresses: &[std::net::IpAddr],
    gue_port: Option<u16>,
    mode: Mode,
    bpf_object: Option<PathBuf>,
) -> anyhow::Result<()> {
    let bytes = object::load_bytes(bpf_object.as_deref())?;
    let mut plane = DecapPlane::load(&bytes).context("loading lb_decap")?;
    for a in addresses {
        plane.add_address(*a)?;
    }
    if let Some(port) = gue_port {
        plane.set_gue_port(port)?;
    }
    let mode = match mode {
        Mode::Native => AttachMode::Native,
        Mode::Generic => AttachMode::Generic,
    };
    plane
        .attach(iface, mode)
        .with_context(|| format!("attaching lb_decap to {iface}"))?;
    let list: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    info!(iface, addresses = list.join(","), gue_port, "decapsulating");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let signal_name = rt.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        anyhow::Ok(tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        })
    })?;
    let c = plane.counters()?;
    let counts: Vec<String> = lb_common::decap::DecapEvent::ALL
        .iter()
        .map(|e| format!("{}={}", e.name(), c[*e as usize].packets))
        .collect();
    info!(
        signal = signal_name,
        counters = counts.join(" "),
        "stopping; lb_decap detaches"
    );
    Ok(())
}

fn down(iface: &str) -> anyhow::Result<()> {
    StateFile::for_interface(iface).remove()?;
    if dataplane::down(iface)? {
        println!("lb: removed persisted data plane on {iface}");
    } else {
        println!("lb: nothing persisted for {iface}");
    }
    Ok(())
}
