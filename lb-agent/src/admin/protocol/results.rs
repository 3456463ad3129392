//! The replies: what the agent answers for each command, one type per result shape.
//! The agent builds these and the CLI reads them back, so each wire field name is
//! written once, here.
//!
//! Reading is tolerant: unknown fields are ignored and missing ones default, so either
//! side can grow fields within protocol version 1. The field order of a type is the
//! order `lb-agent ctl` lists its fields in (on the wire every object's keys are
//! sorted).

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dataplane::{Counters, ProgramInfo};

/// `status` result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusInfo {
    pub version: String,
    pub protocol: u32,
    pub pid: u32,
    pub uptime_secs: u64,
    pub iface: Option<String>,
    pub xdp_mode: Option<String>,
    /// The running `lb_xdp` program: `{"id": 123, "tag": "<16 hex digits>", "name":
    /// "lb_xdp"}`. The id changes at every start, the tag only with a different object
    /// (an upgrade). Absent when the agent cannot read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<ProgramInfo>,
    /// The program on the interface, and its pins.
    pub attachment: AttachmentInfo,
    pub config: Option<String>,
    /// Runtime edits changed the running configuration since it was read from `config`.
    pub config_edited: bool,
    pub vips: usize,
    pub backends: usize,
    /// How many targets are in each NLB state (`healthy`, `unhealthy`, `draining`, …):
    /// every state, zeros included.
    pub targets: BTreeMap<String, usize>,
    /// Target groups with no healthy target whose traffic goes to every target anyway
    /// (fail open); always present, `[]` when none.
    pub failing_open: Vec<String>,
    /// The fleet fingerprint (16 hex digits): the hash seed, every VIP and every ring slot
    /// as the target it names. Every host behind one ECMP group must show the same.
    pub fingerprint: String,
    /// The metric of this host's announced routes: the low 30 bits of the fingerprint
    /// (never 0), or 1 with `[announce] route_tag = false`.
    pub route_tag: u32,
    /// What this host announces.
    pub announce: AnnounceInfo,
}

/// `status`'s `attachment`: whether the program runs on the interface, and whether what
/// runs is pinned (what a restart adopts).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AttachmentInfo {
    /// `attached`, or `detached`: the interface is gone or the XDP link was severed from
    /// it; every VIP is withdrawn until the agent attaches again (within a second of the
    /// interface being back).
    pub state: String,
    /// The interface index and the XDP link's kernel id (a new link after attaching
    /// afresh); 0 when detached.
    pub ifindex: u32,
    pub link_id: u32,
    /// Times the agent attached afresh since it started.
    pub reattached: u64,
    /// Why detached, and since when (Unix milliseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// Where the link and the maps are pinned; absent for an ephemeral agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_dir: Option<String>,
    /// Why the pins cannot be put right (bpffs unmounted and not mountable, …): the data
    /// plane runs, but a restart would lose it, every flow included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_error: Option<String>,
}

/// `status`'s `announce`: the announce table and every VIP address in it or not.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnnounceInfo {
    /// The kernel routing table of lb's routes.
    pub table: u32,
    /// The operator withdrew every VIP (`withdraw`, or `down` before detaching).
    pub withdrawn_by_operator: bool,
    /// Why and since when (Unix milliseconds), when withdrawn by the operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withdrawn_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withdrawn_at_ms: Option<u64>,
    /// When the table last matched what the agent wants (Unix milliseconds).
    pub in_sync_at_ms: Option<u64>,
    /// The last failure writing the table, until the next success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// One per VIP address, in address order.
    pub routes: Vec<RouteInfo>,
}

/// One VIP address in `announce.routes`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteInfo {
    pub address: Option<IpAddr>,
    /// `announced`, `standby` (announced, but the router prefers any host announcing it
    /// normally) or `withdrawn`.
    pub state: String,
    /// The route's metric (the route tag, plus 2^30 for standby); `None` when withdrawn.
    pub metric: Option<u32>,
    /// The VIPs on the address.
    pub vips: Vec<String>,
    /// Why, from the VIP that decided the state.
    pub reason: String,
}

/// A VIP's announcement, in `vip_list` and `vip_show`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VipAnnounce {
    /// `healthy`, `always` or `never`.
    pub policy: String,
    /// `announced`, `standby` or `withdrawn` (the VIP's own; its address takes the best
    /// of its VIPs).
    pub state: String,
    pub reason: String,
}

/// `withdraw` and `announce` result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WithdrawResult {
    /// False when the host already was (or was not) withdrawn.
    pub changed: bool,
    /// Whether the operator's withdrawal holds now.
    pub withdrawn: bool,
    /// The VIP addresses with a route now (after `announce`), or whose route went (after
    /// `withdraw`).
    pub addresses: Vec<IpAddr>,
    /// When (Unix milliseconds).
    pub at_ms: u64,
}

/// One entry of `vip_list`, and `vip_show`'s result (with backends).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VipInfo {
    pub name: String,
    pub address: Option<IpAddr>,
    pub port: u16,
    pub proto: String,
    pub mode: String,
    pub target_group: String,
    pub vip_id: u32,
    pub ring_size: u32,
    /// Backends owning slots of the ring (the agent always sends it; `None` only when
    /// read from a reply without it).
    pub backends: Option<usize>,
    /// Ring fingerprint, as 16 hex digits.
    pub fingerprint: String,
    /// Whether this host announces the VIP, and why.
    pub announce: VipAnnounce,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backend_list: Vec<BackendInfo>,
}

/// `vip_list` result as a client reads it: the agent sends a bare list; a `{"vips":
/// [...]}` object is read too.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum VipList {
    Bare(Vec<VipInfo>),
    Wrapped {
        #[serde(default)]
        vips: Vec<VipInfo>,
    },
}

impl VipList {
    pub fn vips(&self) -> &[VipInfo] {
        match self {
            VipList::Bare(vips) | VipList::Wrapped { vips } => vips,
        }
    }
}

/// One entry of `backend_list`, of `vip_show`'s `backend_list`, and the target a drain
/// changed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackendInfo {
    pub group: String,
    pub address: Option<IpAddr>,
    /// The configured weight.
    pub weight: u16,
    /// NLB's target state: `initial`, `healthy`, `unhealthy`, `unhealthy.draining`,
    /// `draining`, `unused`.
    pub state: String,
    /// NLB's reason code (`Target.Timeout`, `Target.DeregistrationInProgress`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The last health check's result in words.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// The weight new flows see now: configured weight × slow-start ramp × the target's
    /// own reported percentage; 0 when it takes no new flows.
    pub effective_weight: f64,
    /// Seconds left of a drain, an unhealthy draining interval or a slow-start ramp.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_secs: Option<u64>,
    /// It takes flows only because its whole group is unhealthy (fail open).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fail_open: bool,
    pub backend_id: Option<u32>,
    /// Flow-table entries pointing at this backend, when known.
    pub flows: Option<u64>,
    /// Ring slots this backend owns, summed over VIPs, when known.
    pub slots: Option<u64>,
}

/// `backend_list` result as a client reads it: the agent sends a bare list; a
/// `{"backends": [...]}` object is read too.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum BackendList {
    Bare(Vec<BackendInfo>),
    Wrapped {
        #[serde(default)]
        backends: Vec<BackendInfo>,
    },
}

impl BackendList {
    pub fn backends(&self) -> &[BackendInfo] {
        match self {
            BackendList::Bare(backends) | BackendList::Wrapped { backends } => backends,
        }
    }
}

/// `backend_drain` and `backend_undrain` result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DrainResult {
    /// False when the backend already was (un)drained.
    pub changed: bool,
    /// The backend as `backend_list` shows it now.
    pub backend: BackendInfo,
}

/// `down` result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DownResult {
    /// The interface whose data plane is removed.
    pub down: String,
    /// The VIP addresses whose routes were withdrawn first.
    pub withdrawn: Vec<IpAddr>,
    /// When they were (Unix milliseconds).
    pub withdrawn_at_ms: u64,
    /// Seconds the data plane keeps forwarding after the withdrawal, so the router can
    /// move the flows to other hosts; 0 when nothing was announced.
    pub grace_secs: u64,
}

/// `config_show` result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfigInfo {
    /// The running configuration as TOML.
    pub toml: String,
    /// The file it was read from, if any.
    pub source: Option<String>,
    /// Whether runtime edits (`vip_add`, `backend_set_weight`, …) changed it since.
    pub edited: bool,
}

/// `flow` result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FlowAnswer {
    pub vip: Option<String>,
    pub backend: Option<IpAddr>,
    pub backend_id: Option<u32>,
    pub group: Option<String>,
    /// `flow table` (an established entry) or `ring` (where a new flow would go; a VIP
    /// without a usable backend answers `ring` with no backend). A destination that is not
    /// a VIP is a `not_found` error, not an answer.
    pub source: String,
    pub ring_slot: Option<u32>,
}

/// Per-VIP part of an `apply` result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VipApply {
    pub name: String,
    /// `added`, `changed`, `unchanged`, `removed`.
    pub change: String,
    pub ring_size: u32,
    pub moved: u32,
    /// Slots that had to move (removed or re-weighted backends).
    pub forced: u32,
    /// Slots moved only because of how Maglev fills the ring.
    pub collateral: u32,
    /// Live flow-table entries whose new ring slot points elsewhere, when known.
    pub flows_touched: Option<u64>,
    pub backends: usize,
    pub fingerprint: String,
}

/// `apply` result, and the result of every runtime edit (`vip_add`, `backend_add`, …).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApplyResult {
    pub dry_run: bool,
    pub vips: Vec<VipApply>,
    pub backends_added: usize,
    pub backends_removed: usize,
    pub warnings: Vec<String>,
}

impl ApplyResult {
    /// The result for an apply (or dry run) the agent computed with
    /// [`crate::install::Services`]; `flows_touched` is left unknown for the caller to
    /// fill in from the flow table.
    pub fn from_report(report: &crate::install::ApplyReport, dry_run: bool) -> Self {
        let mut vips: Vec<VipApply> = report
            .changed
            .iter()
            .map(|c| {
                let (moved, forced, collateral) = c
                    .disruption
                    .map_or((0, 0, 0), |d| (d.moved, d.forced, d.collateral));
                VipApply {
                    name: c.name.clone(),
                    change: if c.disruption.is_some() {
                        "changed"
                    } else {
                        "added"
                    }
                    .into(),
                    ring_size: c.ring_size,
                    moved,
                    forced,
                    collateral,
                    flows_touched: None,
                    backends: c.backends,
                    fingerprint: format!("{:016x}", c.fingerprint),
                }
            })
            .collect();
        vips.extend(report.unchanged.iter().map(|c| VipApply {
            name: c.name.clone(),
            change: "unchanged".into(),
            ring_size: c.ring_size,
            flows_touched: Some(0),
            backends: c.backends,
            fingerprint: format!("{:016x}", c.fingerprint),
            ..VipApply::default()
        }));
        vips.extend(report.removed.iter().map(|n| VipApply {
            name: n.clone(),
            change: "removed".into(),
            ..VipApply::default()
        }));
        vips.sort_by(|a, b| a.name.cmp(&b.name));
        ApplyResult {
            dry_run,
            vips,
            backends_added: report.backends_added,
            backends_removed: report.backends_removed,
            warnings: Vec::new(),
        }
    }
}

/// One counter of `stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterInfo {
    pub packets: u64,
    pub bytes: u64,
}

/// A section of `stats`: counters by the name operators see (`pass`, `no_backend`, …).
pub type CounterSection = BTreeMap<String, CounterInfo>;

/// `stats` result: the data plane's counters in sections, named as operators see them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatsInfo {
    pub verdicts: CounterSection,
    pub traffic: CounterSection,
    pub drops: CounterSection,
    pub events: CounterSection,
    /// Fields an agent may add after these ("further fields may follow"), kept so that
    /// the CLI shows them.
    #[serde(flatten)]
    pub more: BTreeMap<String, Value>,
}

impl From<&Counters> for StatsInfo {
    fn from(c: &Counters) -> Self {
        use lb_common::{Counter, DropReason, Event, TrafficClass, Verdict};
        fn section<'a>(items: impl Iterator<Item = (&'a str, Counter)>) -> CounterSection {
            items
                .map(|(name, c)| {
                    let counter = CounterInfo {
                        packets: c.packets,
                        bytes: c.bytes,
                    };
                    (name.to_owned(), counter)
                })
                .collect()
        }
        StatsInfo {
            verdicts: section(Verdict::ALL.iter().map(|v| (v.name(), c.verdict(*v)))),
            traffic: section(TrafficClass::ALL.iter().map(|t| (t.name(), c.traffic(*t)))),
            drops: section(DropReason::ALL.iter().map(|d| (d.name(), c.drop(*d)))),
            events: section(Event::ALL.iter().map(|e| (e.name(), c.event(*e)))),
            more: BTreeMap::new(),
        }
    }
}

/// `top` result: rates between the agent's last two one-second samples.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopInfo {
    pub interval_secs: f64,
    pub vips: Vec<TopVip>,
    pub targets: Vec<TopTarget>,
}

/// One VIP of `top`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopVip {
    pub name: String,
    pub proto: String,
    pub packets_per_sec: f64,
    pub bytes_per_sec: f64,
    pub new_flows_per_sec: f64,
    pub active_flows: u64,
    /// Healthy targets of its group, as `healthy/all`.
    pub healthy: String,
}

/// One target of `top`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopTarget {
    pub group: String,
    pub address: Option<IpAddr>,
    pub state: String,
    pub packets_per_sec: f64,
    pub bytes_per_sec: f64,
    pub new_flows_per_sec: f64,
    pub active_flows: u64,
    pub fail_open: bool,
}

/// `metrics` result with format `emf`: Embedded Metric Format documents.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmfResult {
    pub lines: Vec<String>,
}

/// `metrics` result with format `datum`: PutMetricData requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatumResult {
    pub requests: Vec<Value>,
}

/// `metrics` result with format `prom`: the Prometheus page. (Format `json` answers
/// with the period itself, as docs/metrics.md describes it.)
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PromResult {
    pub text: String,
}
