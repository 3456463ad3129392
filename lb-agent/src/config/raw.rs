//! The file as TOML spells it, before any checking.
//!
//! Unknown keys are rejected here (with TOML's line and column). Everything else is
//! optional at this stage and numbers are plain `i64` (TOML's integer type), so that
//! missing and out-of-range values are reported by validation, all of them at once and
//! naming the VIP or target group, rather than by serde one at a time.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    #[serde(default)]
    pub agent: Agent,
    #[serde(default)]
    pub vip: Vec<Vip>,
    #[serde(default)]
    pub target_group: Vec<TargetGroup>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Agent {
    pub hash_seed: Option<i64>,
    pub flow_table_entries: Option<i64>,
    pub udp_idle_timeout_secs: Option<i64>,
    pub max_new_flows_per_cpu: Option<i64>,
    pub tunnel_source_v4: Option<String>,
    pub tunnel_source_v6: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Vip {
    pub name: Option<String>,
    pub address: Option<String>,
    pub port: Option<i64>,
    pub protocol: Option<String>,
    pub mode: Option<String>,
    pub gue_port: Option<i64>,
    pub hash: Option<String>,
    pub ring_size: Option<i64>,
    pub fragments: Option<String>,
    pub target_group: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TargetGroup {
    pub name: Option<String>,
    #[serde(default)]
    pub target: Vec<Target>,
    #[serde(default)]
    pub health_check: HealthCheck,
    pub deregistration_delay_secs: Option<i64>,
    pub slow_start_secs: Option<i64>,
    pub fail_open: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Target {
    pub address: Option<String>,
    pub weight: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HealthCheck {
    pub enabled: Option<bool>,
    pub protocol: Option<String>,
    pub port: Option<i64>,
    pub path: Option<String>,
    pub interval_secs: Option<i64>,
    pub timeout_secs: Option<i64>,
    pub healthy_threshold: Option<i64>,
    pub unhealthy_threshold: Option<i64>,
    pub matcher: Option<String>,
}
