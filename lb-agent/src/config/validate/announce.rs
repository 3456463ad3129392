//! The `[announce]` table (the routing table the agent writes VIP routes into, the
//! default policy, the grace period of `down`) and the policy names a VIP may use.

use std::{ops::RangeInclusive, time::Duration};

use super::{raw, Report};
use crate::config::{AnnouncePolicy, AnnounceSettings};

/// Kernel table ids are 32 bits; 0 is "unspecified".
const TABLE: RangeInclusive<i64> = 1..=(u32::MAX as i64);
/// `default`, `main` and `local`: routes there are used for forwarding by every host.
const RESERVED_TABLES: [i64; 3] = [253, 254, 255];
pub(super) const MIN_HEALTHY: RangeInclusive<i64> = 1..=65535;
const DOWN_GRACE_SECS: RangeInclusive<i64> = 0..=3600;

pub(super) fn announce(r: &mut Report, raw: &raw::Announce) -> AnnounceSettings {
    let item = "announce";
    let d = AnnounceSettings::default();
    let table = match raw.table {
        Some(t) if RESERVED_TABLES.contains(&t) => {
            r.problem(
                item,
                "table",
                format!(
                    "{t} is the kernel's default, main or local table (253, 254, 255), which \
                     the host forwards by: use a table of its own, e.g. 100"
                ),
            );
            None
        }
        value => r.int(item, "table", value, TABLE, d.table),
    };
    let policy = match raw.policy.as_deref() {
        None => Some(d.policy),
        text => policy(r, item, "policy", text),
    };
    let min_healthy = r.int(
        item,
        "min_healthy",
        raw.min_healthy,
        MIN_HEALTHY,
        d.min_healthy,
    );
    let standby = raw.standby.unwrap_or(d.standby);
    let route_tag = raw.route_tag.unwrap_or(d.route_tag);
    let down_grace = r
        .int(
            item,
            "down_grace_secs",
            raw.down_grace_secs,
            DOWN_GRACE_SECS,
            d.down_grace.as_secs(),
        )
        .map(Duration::from_secs);
    // A value that failed was reported: the configuration is rejected, so the default
    // standing in for it is never used.
    AnnounceSettings {
        table: table.unwrap_or(d.table),
        policy: policy.unwrap_or(d.policy),
        min_healthy: min_healthy.unwrap_or(d.min_healthy),
        standby,
        route_tag,
        down_grace: down_grace.unwrap_or(d.down_grace),
    }
}

/// A policy name (`text` present), or `None` after reporting it.
pub(super) fn policy(
    r: &mut Report,
    item: &str,
    field: &str,
    text: Option<&str>,
) -> Option<AnnouncePolicy> {
    r.choice(
        item,
        field,
        text,
        &[
            ("healthy", AnnouncePolicy::Healthy),
            ("always", AnnouncePolicy::Always),
            ("never", AnnouncePolicy::Never),
        ],
        None,
    )
}
