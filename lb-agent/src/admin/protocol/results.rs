//! The results: what the agent answers for each command. The CLI renders these,
//! tolerantly: unknown fields are ignored and missing ones default, so either side can
//! grow fields within protocol version 1.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

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
    pub config: Option<String>,
    pub vips: usize,
    pub backends: usize,
    /// The running `lb_xdp` program: `{"id": 123, "tag": "<16 hex digits>", "name":
    /// "lb_xdp"}`. The id changes at every start, the tag only with a different object
    /// (an upgrade). Absent when the agent cannot read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<crate::dataplane::ProgramInfo>,
    /// Runtime edits changed the running configuration since it was read from `config`.
    #[serde(default)]
    pub config_edited: bool,
    /// How many targets are in each NLB state (`healthy`, `unhealthy`, `draining`, …).
    #[serde(default)]
    pub targets: std::collections::BTreeMap<String, usize>,
    /// Target groups with no healthy target whose traffic goes to every target anyway
    /// (fail open).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failing_open: Vec<String>,
}

/// One entry of `vip_list` (`{"vips": [...]}`), and `vip_show`'s result (with backends).
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
    pub backends: usize,
    pub ring_size: u32,
    /// Ring fingerprint, as 16 hex digits.
    pub fingerprint: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backend_list: Vec<BackendInfo>,
}

/// One entry of `backend_list` (`{"backends": [...]}`).
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
    /// `flow_table` (an established entry) or `ring` (where a new flow would go), or
    /// `none` (no VIP matches / VIP without backends).
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

/// `apply` result.
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
    /// [`crate::services::Services`]; `flows_touched` is left unknown for the caller to
    /// fill in from the flow table.
    pub fn from_report(report: &crate::services::ApplyReport, dry_run: bool) -> Self {
        let mut vips: Vec<VipApply> = report
            .changed
            .iter()
            .map(|c| {
                let (moved, forced, collateral, size) = c
                    .disruption
                    .map_or((0, 0, 0, 0), |d| (d.moved, d.forced, d.collateral, d.size));
                VipApply {
                    name: c.name.clone(),
                    change: if c.disruption.is_some() {
                        "changed"
                    } else {
                        "added"
                    }
                    .into(),
                    ring_size: size,
                    moved,
                    forced,
                    collateral,
                    flows_touched: None,
                    backends: c.backends,
                    fingerprint: format!("{:016x}", c.fingerprint),
                }
            })
            .collect();
        for (names, change) in [
            (&report.unchanged, "unchanged"),
            (&report.removed, "removed"),
        ] {
            vips.extend(names.iter().map(|n| VipApply {
                name: n.clone(),
                change: change.into(),
                flows_touched: (change == "unchanged").then_some(0),
                ..VipApply::default()
            }));
        }
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
