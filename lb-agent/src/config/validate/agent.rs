//! The `[agent]` table: the flow hash, the flow table and the tunnel source prefixes.

use std::{ops::RangeInclusive, time::Duration};

use super::{
    address::{v4_prefix, v6_prefix},
    raw, Report,
};
use crate::config::AgentSettings;

/// About 100 bytes an entry, preallocated: 2^26 is several GiB already.
const FLOW_TABLE_ENTRIES: RangeInclusive<i64> = 1024..=(1 << 26);
const UDP_IDLE_TIMEOUT_SECS: RangeInclusive<i64> = 1..=3600;

pub(super) fn agent(r: &mut Report, raw: &raw::Agent) -> AgentSettings {
    let item = "agent";
    let d = AgentSettings::default();
    let hash_seed = r.int(
        item,
        "hash_seed",
        raw.hash_seed,
        0..=i64::from(u32::MAX),
        d.hash_seed,
    );
    let flow_table_entries = r.int(
        item,
        "flow_table_entries",
        raw.flow_table_entries,
        FLOW_TABLE_ENTRIES,
        d.flow_table_entries,
    );
    let udp_idle_timeout = r
        .int(
            item,
            "udp_idle_timeout_secs",
            raw.udp_idle_timeout_secs,
            UDP_IDLE_TIMEOUT_SECS,
            d.udp_idle_timeout.as_secs(),
        )
        .map(Duration::from_secs);
    let max_new_flows_per_cpu = r.int(
        item,
        "max_new_flows_per_cpu",
        raw.max_new_flows_per_cpu,
        0..=i64::from(u32::MAX),
        d.max_new_flows_per_cpu,
    );
    let tunnel_source_v4 = match raw.tunnel_source_v4.as_deref() {
        None => None,
        Some(text) => r.ok(item, "tunnel_source_v4", v4_prefix(text)),
    };
    let tunnel_source_v6 = match raw.tunnel_source_v6.as_deref() {
        None => None,
        Some(text) => r.ok(item, "tunnel_source_v6", v6_prefix(text)),
    };
    // A value that failed was reported: the configuration is rejected, so the default
    // standing in for it is never used.
    AgentSettings {
        hash_seed: hash_seed.unwrap_or(d.hash_seed),
        flow_table_entries: flow_table_entries.unwrap_or(d.flow_table_entries),
        udp_idle_timeout: udp_idle_timeout.unwrap_or(d.udp_idle_timeout),
        max_new_flows_per_cpu: max_new_flows_per_cpu.unwrap_or(d.max_new_flows_per_cpu),
        tunnel_source_v4: tunnel_source_v4.unwrap_or(d.tunnel_source_v4),
        tunnel_source_v6: tunnel_source_v6.unwrap_or(d.tunnel_source_v6),
    }
}
