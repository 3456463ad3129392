//! Start-up and adoption: the configuration to start with (the file, or the previous
//! agent's running configuration with its runtime edits), the data plane (loaded fresh
//! or adopted from the pins with the previous agent's ids, health and drains), the host
//! settings it needs; then the event loop; then what stopping leaves behind.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use nix::unistd::Gid;
use tracing::{info, warn};

use super::{
    event_loop::{self, Stop},
    running::{with_path, AgentState, Source},
    state_file::{SavedAgent, StateFile},
    Agent, RunOptions,
};
use crate::{
    announce::{self, kernel::Announcer},
    config::{Config, Draft},
    dataplane::{self, AttachMode, Dataplane, LoadOptions, PinLayout},
    health::HealthChecker,
    install::{self, Services},
    lifecycle::Lifecycle,
    object,
};

/// `lb-agent run`: starts the agent and runs it until a signal or `ctl down`.
pub fn run(opts: RunOptions) -> anyhow::Result<()> {
    // The runtime first: the health checker's tasks start with the first configuration.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let _runtime = rt.enter();
    let (st, health_events) = start(&opts)?;
    let admin = opts
        .admin_socket
        .clone()
        .unwrap_or_else(|| default_admin_socket(&opts.iface));
    let group = opts.admin_group.as_deref().map(group_id).transpose()?;
    let agent = Arc::new(Agent::new(st));
    let stop = rt.block_on(event_loop::serve(
        agent.clone(),
        admin.clone(),
        group,
        opts.stats_interval,
        health_events,
    ))?;
    remove_admin_socket(&admin);
    let mut st = agent
        .write()
        .map_err(|_| anyhow::anyhow!("agent state poisoned"))?;
    event_loop::log_counters(&st.dp.counters()?);
    let detaching = matches!(stop, Stop::Down) || opts.ephemeral;
    if detaching {
        // Nothing may stay announced for a host that stops forwarding.
        st.set_attached(false);
        let table = st.announce.wanted(st.config.as_ref()).table;
        match rt.block_on(announce::kernel::withdraw(table)) {
            Ok(gone) if !gone.is_empty() => {
                info!(routes = gone.len(), table, "VIP routes withdrawn")
            }
            Ok(_) => {}
            Err(e) => warn!("withdrawing the VIP routes: {e}"),
        }
    }
    finish(&mut st, stop, &opts)
}

/// Everything before the event loop: the configuration read and validated (before the
/// kernel is touched: a bad file stops the agent with the reason and changes nothing),
/// the data plane loaded or adopted, configured, then attached.
fn start(
    opts: &RunOptions,
) -> anyhow::Result<(
    AgentState,
    tokio::sync::mpsc::UnboundedReceiver<crate::health::HealthEvent>,
)> {
    let iface = opts.iface.as_str();
    let file = opts
        .config
        .as_deref()
        .map(read_config)
        .transpose()
        .context("reading the configuration")?;
    let layout = PinLayout::for_interface(iface);
    let state = StateFile::for_interface(iface);
    if opts.reset {
        // Only after the configuration was accepted: a typo never costs the flow table.
        state.remove()?;
        if dataplane::down(iface)? {
            warn!(
                iface,
                "--reset: removed the previous agent's data plane, flow table and counters"
            );
        }
    }
    let saved = if opts.ephemeral {
        None
    } else {
        load_saved(&state, &layout, opts.recover_state)?
    };
    let start = starting_config(file, saved.as_ref());
    let options = LoadOptions {
        flow_entries: start
            .as_ref()
            .map_or(LoadOptions::default().flow_entries, |s| {
                s.config.agent.flow_table_entries
            }),
    };
    let (mut dp, services, lifecycle) = load_data_plane(
        opts,
        &options,
        &layout,
        &state,
        saved.as_ref(),
        start.as_ref().map(|s| &s.config),
    )?;
    dataplane::enable_forwarding(iface)?;
    let egress = allow_egress(&mut dp)?;
    let mode = AttachMode::from(opts.xdp_mode);
    let mut st = AgentState::new(
        dp,
        services,
        lifecycle,
        iface,
        &format!("{mode:?}").to_lowercase(),
        (!opts.ephemeral).then_some(state),
    );
    let (health_tx, health_events) = tokio::sync::mpsc::unbounded_channel();
    let (_, probes) = super::fd_limit::raise();
    st.health = Some(HealthChecker::with_max_in_flight(health_tx, probes));
    st.announce.announcer =
        Some(Announcer::spawn().context("opening the netlink socket for VIP routes")?);
    if let Some(why) = saved.as_ref().and_then(|s| s.withdrawn.clone()) {
        warn!(reason = why, "the previous agent's operator withdrawal holds: no VIP is announced until `ctl announce`");
        st.announce.host.withdrawn = Some(why);
        st.announce.withdrawn_at = Some(std::time::SystemTime::now());
    }
    // Configure before attaching (or swapping in) the program: its first packet already
    // sees every VIP.
    if let Some(start) = start {
        st.install(start.draft, start.config, start.source, start.edited)?;
    }
    if opts.ephemeral {
        st.dp
            .attach(iface, mode)
            .with_context(|| format!("attaching to {iface}"))?;
    } else {
        st.dp
            .attach_pinned(iface, mode, &layout)
            .with_context(|| format!("attaching to {iface}"))?;
    }
    st.set_attached(true);
    // XDP_TX goes back out of the ingress; redirects go to the egress interfaces.
    let ingress =
        nix::net::if_::if_nametoindex(iface).with_context(|| format!("looking up {iface}"))?;
    let mut sends_into = egress;
    sends_into.push(ingress);
    sends_into.sort_unstable();
    sends_into.dedup();
    super::veth_check::spawn(sends_into);
    Ok((st, health_events))
}

/// The previous agent's saved state. An unreadable file is refused (with the way out)
/// while a pinned data plane depends on its ids, unless `recover` says to set it aside
/// and rebuild them from the pins; with nothing pinned there is nothing to lose, and it
/// is set aside with a warning.
fn load_saved(
    state: &StateFile,
    layout: &PinLayout,
    recover: bool,
) -> anyhow::Result<Option<SavedAgent>> {
    match state.load() {
        Ok(saved) => Ok(saved),
        Err(e) => {
            let pinned = layout.map(lb_common::maps::VIPS).exists();
            if pinned && !recover {
                return Err(e.into());
            }
            let aside = state.set_aside()?;
            warn!(
                kept = %aside.display(),
                "{e}: set aside; {}",
                if pinned {
                    "--recover-state: rebuilding the ids from the pinned tables"
                } else {
                    "nothing is pinned, so no flow depends on it"
                }
            );
            Ok(None)
        }
    }
}

/// A fresh data plane (ephemeral, or nothing pinned), or the pinned one adopted with the
/// previous agent's ids, target health and drains; without them, with the ids rebuilt
/// from the pinned tables for `cfg` (the configuration it starts with).
fn load_data_plane(
    opts: &RunOptions,
    options: &LoadOptions,
    layout: &PinLayout,
    state: &StateFile,
    saved: Option<&SavedAgent>,
    cfg: Option<&Config>,
) -> anyhow::Result<(Dataplane, Services, Lifecycle)> {
    let bytes = object::load_bytes(opts.bpf_object.as_deref())?;
    if opts.ephemeral {
        let dp = Dataplane::load_with(&bytes, options).context("loading the data plane")?;
        return Ok((dp, Services::new(), Lifecycle::new()));
    }
    let (dp, adopted) = Dataplane::load_pinned(&bytes, options, layout)
        .context("loading the data plane (pinned)")?;
    Ok(match (adopted, saved) {
        (true, Some(saved)) => {
            info!(path = %state.path.display(), "continuing the previous agent's ids, target health and drains");
            (
                dp,
                Services::restore(&saved.services),
                Lifecycle::restore(&saved.lifecycle),
            )
        }
        (true, None) => {
            let services = match cfg {
                Some(cfg) => recovered_services(&dp, cfg)?,
                None => {
                    warn!("pinned maps found but no saved ids and no --config: nothing is changed until a configuration is applied, whose ids may differ (flows re-hash once)");
                    Services::new()
                }
            };
            (dp, services, Lifecycle::new())
        }
        (false, _) => (dp, Services::new(), Lifecycle::new()),
    })
}

/// Services continuing the ids the pinned tables show (see `install::recover`), with
/// what could not be matched in the log.
fn recovered_services(dp: &Dataplane, cfg: &Config) -> anyhow::Result<Services> {
    let tables = dp
        .installed_tables()
        .context("reading the pinned tables to rebuild the ids")?;
    let recovered = install::recover(&tables, cfg);
    warn!(
        vips = recovered.state.vips.len(),
        backends = recovered.state.backends.len(),
        "no saved ids: rebuilt them from the pinned tables, so established flows keep their backends; target health starts over and drains, runtime edits and a withdrawal not in the configuration file are not known"
    );
    for vip in &recovered.unknown_vips {
        warn!("{vip} is not in the configuration: it is removed");
    }
    for backend in &recovered.orphan_backends {
        warn!("{backend} matches no configured target: its established flows continue and its id is not reused");
    }
    Ok(Services::restore(&recovered.state))
}

/// What stopping leaves: after `ctl down` nothing; after a signal, a pinned data plane
/// that keeps forwarding (an ephemeral one detaches).
fn finish(st: &mut AgentState, stop: Stop, opts: &RunOptions) -> anyhow::Result<()> {
    let iface = opts.iface.as_str();
    match stop {
        Stop::Down => {
            if let Some(state) = &st.state_file {
                state.remove()?;
            }
            if opts.ephemeral {
                st.dp.detach().context("detaching")?;
            } else {
                dataplane::down(iface)?;
            }
        }
        Stop::Signal(name) => {
            info!(signal = name, "stopping");
            if opts.ephemeral {
                st.dp.detach().context("detaching")?;
            } else {
                // What keeps forwarding after the agent is what is pinned: put back
                // whatever went missing since the last check.
                st.watch_pins();
                info!(
                    iface,
                    "the data plane keeps forwarding; `lb-agent down --iface {iface}` removes it"
                );
            }
        }
    }
    Ok(())
}

fn group_id(name: &str) -> anyhow::Result<Gid> {
    Ok(nix::unistd::Group::from_name(name)
        .with_context(|| format!("looking up group {name}"))?
        .with_context(|| format!("no group named {name}"))?
        .gid)
}

/// The socket goes with the agent (`serve_listener` leaves it to its caller), and its
/// directory too when nothing else is in it.
fn remove_admin_socket(admin: &Path) {
    match std::fs::remove_file(admin) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(socket = %admin.display(), "removing the admin socket: {e}"),
    }
    if let Some(dir) = admin.parent().filter(|d| d.starts_with("/run/lb")) {
        // Not empty means another agent's state or socket is there, which stays.
        let _ = std::fs::remove_dir(dir);
    }
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

/// Allows `XDP_REDIRECT` to every interface of this network namespace but loopback: the
/// FIB decides where a backend is; the device map only limits where lb may send.
/// Interfaces added after start are not included (restart or reload to pick them up).
/// Returns their indexes.
fn allow_egress(dp: &mut Dataplane) -> anyhow::Result<Vec<u32>> {
    let mut allowed = Vec::new();
    let mut indexes = Vec::new();
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
        indexes.push(iface.index());
        allowed.push(name);
    }
    allowed.sort();
    info!(
        interfaces = allowed.join(","),
        "egress interfaces allowed for XDP_REDIRECT"
    );
    Ok(indexes)
}

/// `lb-agent down`: takes a stopped agent's host out: withdraws its VIP routes, keeps
/// the data plane forwarding for the grace period (`grace_secs`, else the saved
/// configuration's `down_grace_secs`; none when nothing was announced), then removes
/// what it left on `iface` (program, maps, link and saved state).
pub fn down(iface: &str, grace_secs: Option<u64>) -> anyhow::Result<()> {
    let state = StateFile::for_interface(iface);
    let saved = state
        .load()
        .unwrap_or_else(|super::state_file::StateFileError::Unreadable { path, reason }| {
            warn!(path = %path.display(), "the saved state is unreadable ({reason}): withdrawing with the default announce settings");
            None
        })
        .and_then(|s| s.running_config)
        .and_then(|text| Draft::parse(&text).ok()?.validate().ok())
        .map(|c| c.announce)
        .unwrap_or_default();
    let gone = announce::kernel::withdraw_blocking(saved.table)
        .with_context(|| format!("withdrawing the VIP routes of table {}", saved.table))?;
    if !gone.is_empty() {
        let grace = grace_secs.unwrap_or(saved.down_grace.as_secs());
        let addresses: Vec<String> = gone.iter().map(|r| r.address.to_string()).collect();
        println!(
            "lb: withdrew {} from table {} at {}; forwarding for {grace} s more",
            addresses.join(", "),
            saved.table,
            super::handler::unix_ms(Some(std::time::SystemTime::now())),
        );
        std::thread::sleep(std::time::Duration::from_secs(grace));
    }
    state.remove()?;
    if dataplane::down(iface)? {
        println!("lb: removed persisted data plane on {iface}");
    } else {
        println!("lb: nothing persisted for {iface}");
    }
    Ok(())
}
