//! `lb-agent`: loads lb's XDP data plane onto an interface and owns it while it runs.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use std::sync::{Arc, Mutex};

use lb_agent::{
    admin,
    agent::{Agent, AgentState, StateFile},
    config,
    dataplane::{self, decap::DecapPlane, AttachMode, Counters, Dataplane, LoadOptions, PinLayout},
    object,
    services::Services,
};
use lb_common::{TrafficClass, Verdict};
use nix::unistd::Gid;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::Notify,
};
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
        /// Admin socket for `lb-agent ctl` [default: /run/lb/admin.sock, or
        /// /run/lb/netns-<name>/admin.sock in a named network namespace].
        #[arg(long, value_name = "PATH")]
        admin_socket: Option<PathBuf>,
        /// Let this group use the admin socket too (mode 0660 instead of 0600).
        #[arg(long, value_name = "GROUP")]
        admin_group: Option<String>,
    },
    /// Talk to the running agent through its admin socket (status, VIPs, backends,
    /// "which backend for this flow?", apply with --dry-run, counters, down).
    Ctl(lb_agent::admin::ctl::CtlArgs),
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
            admin_socket,
            admin_group,
        } => run(RunArgs {
            iface,
            mode: xdp_mode,
            ephemeral,
            bpf_object,
            stats_interval,
            config_path: config,
            admin_socket,
            admin_group,
        }),
        Command::Ctl(args) => lb_agent::admin::ctl::run_ctl(args),
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

struct RunArgs {
    iface: String,
    mode: Mode,
    ephemeral: bool,
    bpf_object: Option<PathBuf>,
    stats_interval: u64,
    config_path: Option<PathBuf>,
    admin_socket: Option<PathBuf>,
    admin_group: Option<String>,
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let RunArgs {
        iface,
        mode,
        ephemeral,
        bpf_object,
        stats_interval,
        config_path,
        admin_socket,
        admin_group,
    } = args;
    let iface = iface.as_str();
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
    let (mut dp, services) = if ephemeral {
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
    let mut st = AgentState {
        dp,
        services,
        config: None,
        config_path: config_path.clone(),
        state_file: (!ephemeral).then_some(state),
        iface: iface.to_owned(),
        xdp_mode: format!("{mode:?}").to_lowercase(),
        started: std::time::Instant::now(),
    };
    // Configure before attaching (or swapping in) the program: its first packet already
    // sees every VIP.
    if let Some(cfg) = cfg {
        st.apply(cfg)?;
    }
    if ephemeral {
        st.dp
            .attach(iface, mode)
            .with_context(|| format!("attaching to {iface}"))?;
    } else {
        st.dp
            .attach_pinned(iface, mode, &layout)
            .with_context(|| format!("attaching to {iface}"))?;
    }
    let admin = admin_socket.unwrap_or_else(|| default_admin_socket(iface));
    let group = admin_group
        .map(|name| -> anyhow::Result<Gid> {
            Ok(nix::unistd::Group::from_name(&name)
                .with_context(|| format!("looking up group {name}"))?
                .with_context(|| format!("no group named {name}"))?
                .gid)
        })
        .transpose()?;
    let agent = Arc::new(Agent {
        state: Mutex::new(st),
        down: Arc::new(Notify::new()),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let stop = rt.block_on(serve(agent.clone(), admin.clone(), group, stats_interval))?;
    // The socket goes with the agent (serve_listener leaves it to its caller), and its
    // directory too when nothing else is in it.
    match std::fs::remove_file(&admin) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(socket = %admin.display(), "removing the admin socket: {e}"),
    }
    if let Some(dir) = admin.parent().filter(|d| d.starts_with("/run/lb")) {
        // Not empty means another agent's state or socket is there, which stays.
        let _ = std::fs::remove_dir(dir);
    }
    let mut st = agent
        .state
        .lock()
        .map_err(|_| anyhow::anyhow!("agent state poisoned"))?;
    log_counters(&st.dp.counters()?);
    match stop {
        Stop::Down => {
            if let Some(state) = &st.state_file {
                state.remove()?;
            }
            if ephemeral {
                st.dp.detach().context("detaching")?;
            } else {
                dataplane::down(iface)?;
            }
        }
        Stop::Signal(name) => {
            info!(signal = name, "stopping");
            if ephemeral {
                st.dp.detach().context("detaching")?;
            } else {
                info!(
                    iface,
                    "the data plane keeps forwarding; `lb-agent down --iface {iface}` removes it"
                );
            }
        }
    }
    Ok(())
}

/// `/run/lb/admin.sock`, or `/run/lb/netns-<name>/admin.sock` in a named namespace.
fn default_admin_socket(iface: &str) -> PathBuf {
    let scope = dataplane::scope(iface);
    let dir = scope.parent().filter(|p| !p.as_os_str().is_empty());
    let mut path = PathBuf::from("/run/lb");
    if let Some(d) = dir {
        path.push(d);
    }
    path.join("admin.sock")
}

/// Serves the admin socket, logs counters every `stats_interval` seconds and reloads the
/// configuration on SIGHUP, until SIGINT / SIGTERM or `ctl down`.
async fn serve(
    agent: Arc<Agent>,
    admin: PathBuf,
    admin_group: Option<Gid>,
    stats_interval: u64,
) -> anyhow::Result<Stop> {
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let listener = admin::server::bind(&admin, admin_group)
        .with_context(|| format!("opening the admin socket {}", admin.display()))?;
    info!(socket = %admin.display(), group = ?admin_group.map(|g| g.as_raw()), "admin socket ready (lb-agent ctl)");
    let shutdown = Arc::new(Notify::new());
    let server = tokio::spawn({
        let (agent, shutdown) = (agent.clone(), shutdown.clone());
        async move {
            let handler: Arc<dyn admin::server::Handler> = agent;
            admin::server::serve_listener(listener, admin_group, handler, async move {
                shutdown.notified().await
            })
            .await
        }
    });
    let period = Duration::from_secs(stats_interval.max(1));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let down = agent.down.clone();
    let stop = loop {
        tokio::select! {
            _ = term.recv() => break Stop::Signal("SIGTERM"),
            _ = int.recv() => break Stop::Signal("SIGINT"),
            _ = down.notified() => break Stop::Down,
            _ = hup.recv() => match agent.state.lock() {
                Ok(mut st) => st.reload(),
                Err(_) => error!("agent state poisoned; reload skipped"),
            },
            _ = ticker.tick(), if stats_interval > 0 => match agent.state.lock() {
                Ok(st) => log_counters(&st.dp.counters()?),
                Err(_) => error!("agent state poisoned; counters skipped"),
            },
        }
    };
    shutdown.notify_one();
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => error!("admin socket: {e}"),
        Err(e) => error!("admin socket task: {e}"),
    }
    Ok(stop)
}

enum Stop {
    Signal(&'static str),
    Down,
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
