//! `lb-agent`: loads lb's XDP data plane onto an interface and owns it while it runs.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use clap::Parser as _;
use std::sync::{Arc, Mutex};

use lb_agent::{
    admin,
    agent::{with_path, Agent, AgentState, SavedAgent, Source, StateFile},
    cli::{Cli, Command, Mode},
    config::{Config, Draft},
    dataplane::{self, decap::DecapPlane, AttachMode, Counters, Dataplane, LoadOptions, PinLayout},
    health::{HealthChecker, HealthEvent},
    lifecycle::Lifecycle,
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
            reset,
            bpf_object,
            stats_interval,
            config,
            admin_socket,
            admin_group,
        } => run(RunArgs {
            iface,
            mode: xdp_mode,
            ephemeral,
            reset,
            bpf_object,
            stats_interval,
            config_path: config,
            admin_socket,
            admin_group,
        }),
        Command::Ctl(args) => lb_agent::admin::ctl::run_ctl(args),
        Command::Completions { shell } => {
            lb_agent::cli::write_completions(shell, &mut std::io::stdout().lock());
            Ok(())
        }
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
    reset: bool,
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
        reset,
        bpf_object,
        stats_interval,
        config_path,
        admin_socket,
        admin_group,
    } = args;
    let iface = iface.as_str();
    // The runtime first: the health checker's tasks start with the first configuration.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let _runtime = rt.enter();
    // Read and validate the configuration before touching the kernel: a bad file stops
    // the agent with the reason and changes nothing.
    let file = config_path
        .as_deref()
        .map(read_config)
        .transpose()
        .context("reading the configuration")?;
    let layout = PinLayout::for_interface(iface);
    let state = StateFile::for_interface(iface);
    if reset {
        // Only after the configuration was accepted: a typo never costs the flow table.
        state.remove()?;
        if dataplane::down(iface)? {
            warn!(
                iface,
                "--reset: removed the previous agent's data plane, flow table and counters"
            );
        }
    }
    let saved = if ephemeral { None } else { state.load()? };
    let start = starting_config(file, saved.as_ref());
    let bytes = object::load_bytes(bpf_object.as_deref())?;
    let options = LoadOptions {
        flow_entries: start
            .as_ref()
            .map_or(LoadOptions::default().flow_entries, |s| {
                s.config.agent.flow_table_entries
            }),
    };
    let mode = match mode {
        Mode::Native => AttachMode::Native,
        Mode::Generic => AttachMode::Generic,
    };
    let (mut dp, services, lifecycle) = if ephemeral {
        let dp = Dataplane::load_with(&bytes, &options).context("loading the data plane")?;
        (dp, Services::new(), Lifecycle::new())
    } else {
        let (dp, adopted) = Dataplane::load_pinned(&bytes, &options, &layout)
            .context("loading the data plane (pinned)")?;
        match (adopted, &saved) {
            (true, Some(saved)) => {
                info!(path = %state.path.display(), "continuing the previous agent's ids, target health and drains");
                (
                    dp,
                    Services::restore(&saved.services),
                    Lifecycle::restore(&saved.lifecycle),
                )
            }
            (true, None) => {
                warn!(
                    "pinned maps found but no saved ids: VIP ids may change and flows re-hash once"
                );
                (dp, Services::new(), Lifecycle::new())
            }
            (false, _) => (dp, Services::new(), Lifecycle::new()),
        }
    };
    dataplane::enable_forwarding(iface)?;
    allow_egress(&mut dp)?;
    let mut st = AgentState::new(
        dp,
        services,
        lifecycle,
        iface,
        &format!("{mode:?}").to_lowercase(),
        (!ephemeral).then_some(state),
    );
    let (health_tx, health_events) = tokio::sync::mpsc::unbounded_channel();
    st.health = Some(HealthChecker::new(health_tx));
    // Configure before attaching (or swapping in) the program: its first packet already
    // sees every VIP.
    if let Some(start) = start {
        st.install(start.draft, start.config, start.source, start.edited)?;
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
    let stop = rt.block_on(serve(
        agent.clone(),
        admin.clone(),
        group,
        stats_interval,
        health_events,
    ))?;
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

/// A configuration file read and validated, with its text.
struct FileConfig {
    draft: Draft,
    config: Config,
    source: Source,
}

fn read_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the configuration file {}", path.display()))?;
    let (draft, config) = Draft::parse(&text)
        .and_then(|d| d.validate().map(|c| (d, c)))
        .map_err(|e| with_path(e, path))?;
    Ok(FileConfig {
        draft,
        config,
        source: Source {
            path: path.to_owned(),
            text,
        },
    })
}

/// The configuration an agent starts with.
struct Start {
    draft: Draft,
    config: Config,
    source: Option<Source>,
    edited: bool,
}

/// The previous agent's running configuration (with its runtime edits) while the file
/// it came from is unchanged; otherwise the file; without a file, whatever the previous
/// agent ran.
fn starting_config(file: Option<FileConfig>, saved: Option<&SavedAgent>) -> Option<Start> {
    let previous = saved.and_then(|s| {
        let text = s.running_config.as_ref()?;
        match Draft::parse(text).and_then(|d| d.validate().map(|c| (d, c))) {
            Ok((draft, config)) => Some((draft, config, s.source.clone(), s.edited)),
            Err(e) => {
                warn!("the previous agent's running configuration is not usable, ignoring it: {e}");
                None
            }
        }
    });
    match (file, previous) {
        (Some(f), Some((draft, config, Some(src), edited)))
            if src.path == f.source.path && src.text == f.source.text =>
        {
            if edited {
                info!(path = %src.path.display(), "continuing the previous agent's runtime edits (the file is unchanged)");
            }
            Some(Start {
                draft,
                config,
                source: Some(Source {
                    path: src.path,
                    text: src.text,
                }),
                edited,
            })
        }
        (Some(f), previous) => {
            if previous.is_some_and(|p| p.3) {
                warn!(path = %f.source.path.display(), "the configuration file changed since the last agent: its runtime edits are discarded");
            }
            Some(Start {
                draft: f.draft,
                config: f.config,
                source: Some(f.source),
                edited: false,
            })
        }
        (None, Some((draft, config, src, edited))) => {
            info!("no --config: continuing the previous agent's running configuration");
            Some(Start {
                draft,
                config,
                source: src.map(|s| Source {
                    path: s.path,
                    text: s.text,
                }),
                edited,
            })
        }
        (None, None) => None,
    }
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
    mut health_events: tokio::sync::mpsc::UnboundedReceiver<HealthEvent>,
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
    // The lifecycle's clock (deregistration delays, unhealthy draining intervals and
    // slow-start steps end on time) and the metrics' one-second samples.
    let mut lifecycle_tick = tokio::time::interval(Duration::from_secs(1));
    lifecycle_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = loop {
        tokio::select! {
            _ = term.recv() => break Stop::Signal("SIGTERM"),
            _ = int.recv() => break Stop::Signal("SIGINT"),
            _ = down.notified() => break Stop::Down,
            _ = hup.recv() => match agent.state.lock() {
                Ok(mut st) => st.reload(),
                Err(_) => error!("agent state poisoned; reload skipped"),
            },
            Some(first) = health_events.recv() => match agent.state.lock() {
                Ok(mut st) => {
                    let mut batch = vec![first];
                    while let Ok(more) = health_events.try_recv() {
                        batch.push(more);
                    }
                    if let Err(e) = st.on_health_events(batch) {
                        error!("updating the data plane for a health change: {e:#}");
                    }
                }
                Err(_) => error!("agent state poisoned; health event skipped"),
            },
            _ = lifecycle_tick.tick() => match agent.state.lock() {
                Ok(mut st) => {
                    if let Err(e) = st.reconcile() {
                        error!("updating the data plane for the backend lifecycle: {e:#}");
                    }
                    if let Err(e) = st.sample_metrics() {
                        error!("reading the counters for metrics: {e:#}");
                    }
                }
                Err(_) => error!("agent state poisoned; lifecycle skipped"),
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
