//! The `[target_group.agent_check]` table: where and how often a group's targets are
//! asked for their weight (as HAProxy's `agent-check`).

use std::time::Duration;

use super::{
    health::{timeout, DEFAULT_HC_INTERVAL_SECS, HC_INTERVAL_SECS},
    raw, Report, NONZERO_PORT,
};
use crate::config::AgentCheck;

/// Agent check timeout default: HAProxy's agent-check answers in a line, so a short
/// timeout keeps a hung agent from holding a stale weight (lowered to the interval).
const DEFAULT_AGENT_TIMEOUT_SECS: u64 = 2;

/// The group's agent check: `Some(None)` if there is none, `None` if it failed.
pub(super) fn agent_check(
    r: &mut Report,
    item: &str,
    group: &raw::TargetGroup,
) -> Option<Option<AgentCheck>> {
    let Some(raw) = &group.agent_check else {
        return Some(None);
    };
    // The health check's interval, when it is valid (else it was reported).
    let default_interval = match group.health_check.interval_secs {
        None => Some(DEFAULT_HC_INTERVAL_SECS),
        Some(i) if HC_INTERVAL_SECS.contains(&i) => u64::try_from(i).ok(),
        Some(_) => None,
    };
    let port = r.required_int(item, "agent_check.port", raw.port, NONZERO_PORT);
    let interval: Option<u64> = match raw.interval_secs {
        None => default_interval,
        Some(i) => r.in_range(item, "agent_check.interval_secs", i, HC_INTERVAL_SECS),
    };
    let timeout = timeout(
        r,
        item,
        "agent_check.timeout_secs",
        raw.timeout_secs,
        DEFAULT_AGENT_TIMEOUT_SECS,
        interval,
    );
    Some(Some(AgentCheck {
        port: port?,
        interval: Duration::from_secs(interval?),
        timeout: Duration::from_secs(timeout?),
    }))
}
