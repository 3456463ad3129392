//! The running agent's state, shared by its signal handling and its admin socket, and
//! the admin [`Handler`] that answers `lb-agent ctl`.
//!
//! One mutex guards the data plane, the services record and the current configuration:
//! admin requests, SIGHUP reloads and counter logging take turns, so no two changes
//! interleave.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use anyhow::Context as _;
use lb_common::{
    service::{addr16, vip_flags},
    FlowKey,
};
use serde_json::Value;
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::{
    admin::{
        protocol::{
            ApplyResult, BackendInfo, Command, ErrorBody, ErrorCode, FlowAnswer, StatusInfo,
            VipInfo, PROTOCOL_VERSION,
        },
        server::{Handler, Peer},
        table::counters_json,
    },
    config::{self, Config},
    dataplane::{self, Dataplane},
    services::{ApplyReport, Services, ServicesState},
};

/// Where the agent keeps its id allocation between runs (`/run`: gone at reboot, as the
/// pins are).
pub struct StateFile {
    pub path: PathBuf,
}

impl StateFile {
    pub fn for_interface(iface: &str) -> Self {
        Self {
            path: Path::new("/run/lb")
                .join(dataplane::scope(iface))
                .join("state.json"),
        }
    }

    pub fn load(&self) -> anyhow::Result<Option<ServicesState>> {
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
    pub fn save(&self, state: &ServicesState) -> anyhow::Result<()> {
        let dir = self.path.parent().context("state path has no directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(state).context("serializing the state")?;
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("replacing {}", self.path.display()))
    }

    pub fn remove(&self) -> anyhow::Result<()> {
        if let Some(dir) = self.path.parent() {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
            }
            // Empty parents (netns-<name>/, /run/lb) go too; an error only means another
            // interface still has state there, which stays.
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

/// Everything the running agent owns.
pub struct AgentState {
    pub dp: Dataplane,
    pub services: Services,
    pub config: Option<Config>,
    pub config_path: Option<PathBuf>,
    /// `None` for an ephemeral agent (nothing survives it).
    pub state_file: Option<StateFile>,
    pub iface: String,
    pub xdp_mode: String,
    pub started: Instant,
}

impl AgentState {
    /// Applies `cfg` (and remembers it), then saves the id allocation.
    pub fn apply(&mut self, cfg: Config) -> anyhow::Result<ApplyReport> {
        for w in &cfg.warnings {
            warn!("configuration: {w}");
        }
        warm_neighbours(&cfg);
        let report = self
            .services
            .apply(&cfg, &mut self.dp)
            .context("applying the configuration")?;
        info!(
            changed = report.changed.len(),
            unchanged = report.unchanged.len(),
            removed = report.removed.len(),
            backends_added = report.backends_added,
            backends_removed = report.backends_removed,
            "configuration applied"
        );
        if let Some(state) = &self.state_file {
            state
                .save(&self.services.state())
                .context("saving the VIP and backend ids")?;
        }
        self.config = Some(cfg);
        Ok(report)
    }

    /// SIGHUP: re-read the configuration file; an invalid one changes nothing.
    pub fn reload(&mut self) {
        let Some(path) = self.config_path.clone() else {
            warn!("SIGHUP ignored: the agent was started without --config");
            return;
        };
        info!(path = %path.display(), "SIGHUP: reloading the configuration");
        match config::load(&path) {
            Ok(cfg) => {
                if let Err(e) = self.apply(cfg) {
                    error!("applying the reloaded configuration failed: {e:#}");
                }
            }
            Err(e) => error!("configuration rejected, the running one stays in place: {e}"),
        }
    }
}

/// Asks the kernel to resolve every target's neighbour entry now (an empty datagram to
/// the discard port), so the first packets of real flows find it; until then the data
/// plane passes them to the kernel (`fib_no_neighbour`).
fn warm_neighbours(cfg: &Config) {
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

/// The agent as the admin socket sees it.
pub struct Agent {
    pub state: Mutex<AgentState>,
    /// Notified by `ctl down` after it replied: the agent removes its data plane and exits.
    pub down: Arc<Notify>,
}

fn internal(e: impl std::fmt::Display) -> ErrorBody {
    ErrorBody::new(ErrorCode::Internal, e.to_string())
}

fn json(v: impl serde::Serialize) -> Result<Value, ErrorBody> {
    serde_json::to_value(v).map_err(internal)
}

impl Agent {
    pub fn lock(&self) -> Result<MutexGuard<'_, AgentState>, ErrorBody> {
        self.state
            .lock()
            .map_err(|_| internal("agent state poisoned by an earlier panic"))
    }
}

impl Handler for Agent {
    fn handle(&self, cmd: Command, _peer: &Peer) -> Result<Value, ErrorBody> {
        let mut st = self.lock()?;
        match cmd {
            Command::Status => json(StatusInfo {
                version: env!("CARGO_PKG_VERSION").into(),
                protocol: PROTOCOL_VERSION,
                pid: std::process::id(),
                uptime_secs: st.started.elapsed().as_secs(),
                iface: Some(st.iface.clone()),
                xdp_mode: Some(st.xdp_mode.clone()),
                config: st.config_path.as_ref().map(|p| p.display().to_string()),
                vips: st.config.as_ref().map_or(0, |c| c.vips.len()),
                backends: st
                    .config
                    .as_ref()
                    .map_or(0, |c| c.target_groups.iter().map(|g| g.targets.len()).sum()),
            }),
            Command::VipList => json(vip_infos(&st, false)?),
            Command::VipShow { name } => {
                let vips = vip_infos(&st, true)?;
                let vip = vips
                    .into_iter()
                    .find(|v| v.name == name)
                    .ok_or_else(|| ErrorBody::new(ErrorCode::NotFound, format!("no VIP named {name:?}")))?;
                json(vip)
            }
            Command::BackendList { group } => {
                let flows = st.dp.flow_counts().map_err(internal)?;
                let list: Vec<BackendInfo> = backend_infos(&st, &flows)
                    .into_iter()
                    .filter(|b| group.as_ref().is_none_or(|g| *g == b.group))
                    .collect();
                if let Some(g) = &group {
                    if list.is_empty() && st.config.as_ref().and_then(|c| c.target_group(g)).is_none() {
                        return Err(ErrorBody::new(ErrorCode::NotFound, format!("no target group named {g:?}")));
                    }
                }
                json(list)
            }
            Command::Flow {
                proto,
                src,
                sport,
                dst,
                dport,
            } => json(flow_answer(&st, proto.number(), src, sport, dst, dport)?),
            Command::Apply { path, dry_run } => {
                let cfg = config::load(Path::new(&path))
                    .map_err(|e| ErrorBody::new(ErrorCode::InvalidConfig, e.to_string()))?;
                let warnings = cfg.warnings.clone();
                let mut result = if dry_run {
                    let report = st.services.dry_run(&cfg).map_err(internal)?;
                    ApplyResult::from_report(&report, true)
                } else {
                    let report = st.apply(cfg.clone()).map_err(|e| internal(format!("{e:#}")))?;
                    if st.config_path.is_none() {
                        st.config_path = Some(PathBuf::from(&path));
                    }
                    ApplyResult::from_report(&report, false)
                };
                result.warnings = warnings;
                // Live flows a change touches: entries on backends the new configuration
                // no longer has (they re-hash); flows on surviving backends stay put.
                let flows = st.dp.flow_counts().map_err(internal)?;
                for v in &mut result.vips {
                    if let Some((vip_id, _)) = st.services.vip(&v.name) {
                        let kept: Vec<u32> = cfg
                            .vip(&v.name)
                            .and_then(|vip| cfg.group_of(vip))
                            .map(|g| {
                                g.targets
                                    .iter()
                                    .filter_map(|t| st.services.backend_id(&g.name, t.address))
                                    .collect()
                            })
                            .unwrap_or_default();
                        let touched = flows
                            .iter()
                            .filter(|((vid, bid), _)| *vid == vip_id && !kept.contains(bid))
                            .map(|(_, n)| *n)
                            .sum();
                        v.flows_touched = Some(touched);
                    }
                }
                json(result)
            }
            Command::Stats => Ok(counters_json(&st.dp.counters().map_err(internal)?)),
            Command::Down => {
                info!("ctl down: the data plane is removed and the agent exits");
                self.down.notify_one();
                json(serde_json::json!({ "down": st.iface }))
            }
            other => Err(ErrorBody::new(
                ErrorCode::Unsupported,
                format!(
                    "`{}` is not supported yet: edit the configuration file and `lb-agent ctl apply` it",
                    other.name()
                ),
            )),
        }
    }
}

fn vip_infos(st: &AgentState, with_backends: bool) -> Result<Vec<VipInfo>, ErrorBody> {
    let Some(cfg) = &st.config else {
        return Ok(Vec::new());
    };
    let flows = if with_backends {
        st.dp.flow_counts().map_err(internal)?
    } else {
        HashMap::new()
    };
    let backends = backend_infos(st, &flows);
    Ok(cfg
        .vips
        .iter()
        .map(|v| {
            let ring = st.services.vip(&v.name);
            let counts = ring.map(|(_, t)| t.counts()).unwrap_or_default();
            VipInfo {
                name: v.name.clone(),
                address: Some(v.address),
                port: v.port,
                proto: v.protocol.as_str().into(),
                mode: v.mode.as_str().into(),
                target_group: v.target_group.clone(),
                vip_id: ring.map_or(0, |(id, _)| id),
                backends: counts
                    .keys()
                    .filter(|id| **id != crate::maglev::NO_BACKEND)
                    .count(),
                ring_size: ring.map_or(v.ring_size, |(_, t)| t.size()),
                fingerprint: ring
                    .map_or_else(String::new, |(_, t)| format!("{:016x}", t.fingerprint())),
                backend_list: if with_backends {
                    backends
                        .iter()
                        .filter(|b| b.group == v.target_group)
                        .map(|b| {
                            let vip_id = ring.map_or(u32::MAX, |(id, _)| id);
                            BackendInfo {
                                slots: b
                                    .backend_id
                                    .map(|id| counts.get(&id).copied().unwrap_or(0) as u64),
                                flows: b
                                    .backend_id
                                    .map(|id| flows.get(&(vip_id, id)).copied().unwrap_or(0)),
                                ..b.clone()
                            }
                        })
                        .collect()
                } else {
                    Vec::new()
                },
            }
        })
        .collect())
}

fn backend_infos(st: &AgentState, flows: &HashMap<(u32, u32), u64>) -> Vec<BackendInfo> {
    let Some(cfg) = &st.config else {
        return Vec::new();
    };
    cfg.target_groups
        .iter()
        .flat_map(|g| {
            g.targets.iter().map(|t| {
                let id = st.services.backend_id(&g.name, t.address);
                BackendInfo {
                    group: g.name.clone(),
                    address: Some(t.address),
                    weight: t.weight,
                    // Health checking arrives with the lifecycle work; until then a target
                    // is either taking new flows or quiesced by weight 0.
                    state: if t.weight == 0 {
                        "quiesced"
                    } else {
                        "registered"
                    }
                    .into(),
                    backend_id: id,
                    flows: id.map(|id| {
                        flows
                            .iter()
                            .filter(|((_, b), _)| *b == id)
                            .map(|(_, n)| *n)
                            .sum()
                    }),
                    slots: None,
                }
            })
        })
        .collect()
}

/// Which backend a flow goes to: the flow table's entry if it has a current one, else the
/// ring's pick for the flow hash, exactly as the data plane decides.
fn flow_answer(
    st: &AgentState,
    proto: u8,
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
) -> Result<FlowAnswer, ErrorBody> {
    let cfg = st
        .config
        .as_ref()
        .ok_or_else(|| ErrorBody::new(ErrorCode::NotFound, "no configuration applied"))?;
    let vip = cfg
        .vips
        .iter()
        .find(|v| v.address == dst && v.protocol.number() == proto && v.port == dport)
        .or_else(|| {
            cfg.vips
                .iter()
                .find(|v| v.address == dst && v.protocol.number() == proto && v.port == 0)
        })
        .ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::NotFound,
                format!("{dst} port {dport} is not a VIP: the flow is passed to the kernel"),
            )
        })?;
    let (vip_id, table) = st.services.vip(&vip.name).ok_or_else(|| {
        ErrorBody::new(
            ErrorCode::NotFound,
            format!("VIP {:?} has no ring yet", vip.name),
        )
    })?;
    let (src16, family) = addr16(src);
    let (dst16, _) = addr16(dst);
    let key = FlowKey {
        src: src16,
        dst: dst16,
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto,
        family,
        _pad: [0; 2],
    };
    let group = cfg.group_of(vip);
    let name_of = |id: u32| {
        group.and_then(|g| {
            g.targets
                .iter()
                .find(|t| st.services.backend_id(&g.name, t.address) == Some(id))
                .map(|t| t.address)
        })
    };
    let frag_route = vip.flags() & vip_flags::FRAG_ROUTE != 0;
    if !frag_route {
        if let Some(entry) = st.dp.flow(&key).map_err(internal)? {
            if entry.vip_id == vip_id {
                return Ok(FlowAnswer {
                    vip: Some(vip.name.clone()),
                    backend: name_of(entry.backend_id),
                    backend_id: Some(entry.backend_id),
                    group: Some(vip.target_group.clone()),
                    source: "flow table".into(),
                    ring_slot: None,
                });
            }
        }
    }
    let seed = cfg.agent.hash_seed;
    let hash = lb_common::hash::flow_hash(&key, vip.flags(), seed);
    let slot = hash % table.size();
    let id = table.slots()[slot as usize];
    Ok(FlowAnswer {
        vip: Some(vip.name.clone()),
        backend: name_of(id),
        backend_id: (id != crate::maglev::NO_BACKEND).then_some(id),
        group: Some(vip.target_group.clone()),
        source: "ring".into(),
        ring_slot: Some(slot),
    })
}
