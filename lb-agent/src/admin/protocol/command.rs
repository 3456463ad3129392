//! The requests: every [`Command`] with its arguments, as the wire carries them after
//! `"cmd"`, and the argument types they share with the command line ([`VipSpec`],
//! [`Proto`], [`MetricsFormat`]).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Layer-4 protocol of a flow (`flow` command) or a VIP (`vip_add`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => lb_common::ip::PROTO_TCP,
            Proto::Udp => lb_common::ip::PROTO_UDP,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl std::str::FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" | "6" => Ok(Proto::Tcp),
            "udp" | "17" => Ok(Proto::Udp),
            _ => Err(format!("unknown protocol {s:?} (expected tcp or udp)")),
        }
    }
}

/// A VIP to add at runtime: the `[[vip]]` keys of the configuration file, optional ones
/// `None` for the file's default (strings as the file spells them, checked like the
/// file's). One definition for the three places that spell these fields: the `vip_add`
/// request's arguments (serde), `lb-agent ctl vip add`'s options (clap) and
/// [`crate::config::Draft::add_vip`].
///
/// The field doc comments are `ctl vip add --help`'s text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct VipSpec {
    pub name: String,
    /// The VIP address.
    #[arg(long)]
    pub address: IpAddr,
    /// Port; 0 = all ports.
    #[arg(long)]
    pub port: u16,
    /// tcp or udp.
    #[arg(long, default_value = "tcp")]
    pub proto: Proto,
    /// The target group whose backends serve it.
    #[arg(long)]
    pub target_group: String,
    /// dr, tunnel or gue [default: dr].
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The targets' GUE port (required with --mode gue).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gue_port: Option<u16>,
    /// five-tuple, source-ip or source-ip-dest-port [default: five-tuple].
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Maglev ring size, a supported prime [default: 65537].
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_size: Option<u32>,
    /// When this host announces the VIP's address: healthy, always or never [default: the
    /// [announce] policy].
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce: Option<String>,
    /// With --announce healthy: healthy targets needed [default: [announce] min_healthy].
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce_min_healthy: Option<u32>,
}

/// Every command, with its arguments. Serialized as `"cmd": "<snake_case name>"` plus
/// the fields of the variant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Agent state: interface, program, config, VIP and backend counts.
    Status,
    /// Every VIP.
    VipList,
    /// One VIP with its target group's backends.
    VipShow { name: String },
    /// Add a VIP (fields as in the configuration file, flat in the request: `mode`,
    /// `gue_port`, `hash` and `ring_size` may be left out).
    VipAdd(VipSpec),
    /// Remove a VIP.
    VipRemove { name: String },
    /// Backends of one target group, or of all of them.
    BackendList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
    },
    /// Add a backend to a target group.
    BackendAdd {
        group: String,
        address: IpAddr,
        weight: u16,
    },
    /// Remove a backend from a target group.
    BackendRemove { group: String, address: IpAddr },
    /// Change a backend's weight (0 = no new flows, existing flows continue).
    BackendSetWeight {
        group: String,
        address: IpAddr,
        weight: u16,
    },
    /// Stop sending new flows to a backend; existing flows continue.
    BackendDrain { group: String, address: IpAddr },
    /// Undo `backend_drain`.
    BackendUndrain { group: String, address: IpAddr },
    /// Which backend this flow goes to, from the data plane's ring and flow table.
    Flow {
        proto: Proto,
        src: IpAddr,
        sport: u16,
        dst: IpAddr,
        dport: u16,
    },
    /// Load a configuration file (a path the agent can read) and apply it, or with
    /// `dry_run` only report what would change.
    Apply {
        path: String,
        #[serde(default)]
        dry_run: bool,
    },
    /// Data-plane counters.
    Stats,
    /// The running configuration as TOML (the file plus runtime edits).
    ConfigShow,
    /// The last completed metrics period in a format: `emf`, `datum`, `json`, or `prom`
    /// (the Prometheus page, current counters).
    Metrics { format: MetricsFormat },
    /// Per-VIP and per-target rates over the last second, active flows and health (what
    /// `ctl top` shows).
    Top,
    /// Withdraw every VIP from the routing daemon while forwarding goes on (the router
    /// moves the flows to other hosts).
    Withdraw,
    /// Undo `withdraw`: VIPs are announced as their policies say.
    Announce,
    /// Withdraw every VIP, keep forwarding for the grace period (`grace_secs`, default
    /// `[announce] down_grace_secs`), then remove the data plane and stop the agent.
    Down {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grace_secs: Option<u64>,
    },
}

/// Formats of `metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MetricsFormat {
    /// CloudWatch Embedded Metric Format documents, one per line.
    Emf,
    /// PutMetricData requests (`MetricDatum` JSON).
    Datum,
    /// The period's values as plain JSON.
    Json,
    /// Prometheus text exposition of the current counters.
    Prom,
}

/// Every command name, as it appears in `cmd`.
pub const COMMAND_NAMES: &[&str] = &[
    "status",
    "vip_list",
    "vip_show",
    "vip_add",
    "vip_remove",
    "backend_list",
    "backend_add",
    "backend_remove",
    "backend_set_weight",
    "backend_drain",
    "backend_undrain",
    "flow",
    "apply",
    "stats",
    "config_show",
    "metrics",
    "top",
    "withdraw",
    "announce",
    "down",
];

impl Command {
    /// The command's name as it appears in `cmd`.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Status => "status",
            Command::VipList => "vip_list",
            Command::VipShow { .. } => "vip_show",
            Command::VipAdd(_) => "vip_add",
            Command::VipRemove { .. } => "vip_remove",
            Command::BackendList { .. } => "backend_list",
            Command::BackendAdd { .. } => "backend_add",
            Command::BackendRemove { .. } => "backend_remove",
            Command::BackendSetWeight { .. } => "backend_set_weight",
            Command::BackendDrain { .. } => "backend_drain",
            Command::BackendUndrain { .. } => "backend_undrain",
            Command::Flow { .. } => "flow",
            Command::Apply { .. } => "apply",
            Command::Stats => "stats",
            Command::ConfigShow => "config_show",
            Command::Metrics { .. } => "metrics",
            Command::Top => "top",
            Command::Withdraw => "withdraw",
            Command::Announce => "announce",
            Command::Down { .. } => "down",
        }
    }

    /// Whether the command changes anything (these are logged with the peer).
    pub fn is_mutating(&self) -> bool {
        match self {
            Command::Status
            | Command::VipList
            | Command::VipShow { .. }
            | Command::BackendList { .. }
            | Command::Flow { .. }
            | Command::Stats
            | Command::ConfigShow
            | Command::Metrics { .. }
            | Command::Top => false,
            Command::Apply { dry_run, .. } => !dry_run,
            Command::VipAdd(_)
            | Command::VipRemove { .. }
            | Command::BackendAdd { .. }
            | Command::BackendRemove { .. }
            | Command::BackendSetWeight { .. }
            | Command::BackendDrain { .. }
            | Command::BackendUndrain { .. }
            | Command::Withdraw
            | Command::Announce
            | Command::Down { .. } => true,
        }
    }
}
