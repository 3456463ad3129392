//! The file as TOML spells it, before any checking.
//!
//! Unknown keys are rejected here (with TOML's line and column). Everything else is
//! optional at this stage and numbers are plain `i64` (TOML's integer type), so that
//! missing and out-of-range values are reported by validation, all of them at once and
//! naming the VIP or target group, rather than by serde one at a time.
//!
//! The same types are written back by [`super::Draft::to_toml`]: a key that was absent
//! stays absent (so its default still applies), and a table's plain keys are declared
//! before its sub-tables, which TOML requires of the output.

use serde::{Deserialize, Serialize};

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    #[serde(default, skip_serializing_if = "is_default")]
    pub agent: Agent,
    #[serde(default, skip_serializing_if = "is_default")]
    pub metrics: Metrics,
    #[serde(default, skip_serializing_if = "is_default")]
    pub announce: Announce,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vip: Vec<Vip>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_group: Vec<TargetGroup>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Agent {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_table_entries: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_idle_timeout_secs: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_new_flows_per_cpu: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel_source_v4: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel_source_v6: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Metrics {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_secs: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emf: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus_listen: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Announce {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_healthy: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standby: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_tag: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_grace_secs: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Vip {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gue_port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ring_size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fragments: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub announce: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub announce_min_healthy: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_group: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TargetGroup {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deregistration_delay_secs: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_start_secs: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_open: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unhealthy_connection_termination: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unhealthy_draining_interval_secs: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target: Vec<Target>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub health_check: HealthCheck,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_check: Option<AgentCheck>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Target {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HealthCheck {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_secs: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matcher: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Kept as an array even when empty, so that an empty `command` stays an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AgentCheck {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_secs: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<i64>,
}
