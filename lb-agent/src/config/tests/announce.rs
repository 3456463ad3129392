//! The `[announce]` table and the VIPs' own policies (`validate/announce.rs`).

use std::time::Duration;

use super::{ok, problem, problems, vip_and_group};
use crate::config::{AnnouncePolicy, AnnounceSettings};

#[test]
fn announce_defaults() {
    let c = ok(&vip_and_group(&[]));
    assert_eq!(
        c.announce,
        AnnounceSettings {
            table: 100,
            policy: AnnouncePolicy::Healthy,
            min_healthy: 1,
            standby: true,
            route_tag: true,
            down_grace: Duration::from_secs(5),
        }
    );
    assert_eq!(c.announce_rule(&c.vips[0]), (AnnouncePolicy::Healthy, 1));
}

#[test]
fn a_vip_overrides_the_agent_wide_policy() {
    let c = ok(&format!(
        "[announce]\ntable = 4000\npolicy = \"always\"\nmin_healthy = 2\nstandby = false\n\
         route_tag = false\ndown_grace_secs = 0\n{}",
        vip_and_group(&[("announce", "\"healthy\""), ("announce_min_healthy", "3")])
    ));
    assert_eq!(c.announce.table, 4000);
    assert_eq!(c.announce.policy, AnnouncePolicy::Always);
    assert_eq!(c.announce.down_grace, Duration::ZERO);
    assert!(!c.announce.standby);
    assert!(!c.announce.route_tag);
    assert_eq!(c.announce_rule(&c.vips[0]), (AnnouncePolicy::Healthy, 3));
    let c = ok(&format!(
        "[announce]\npolicy = \"never\"\n{}",
        vip_and_group(&[("announce_min_healthy", "2")])
    ));
    assert_eq!(c.announce_rule(&c.vips[0]), (AnnouncePolicy::Never, 2));
}

#[test]
fn announce_settings_are_checked() {
    let cases = [
        (
            "table = 254",
            "table",
            "254 is the kernel's default, main or local table (253, 254, 255), which the \
             host forwards by: use a table of its own, e.g. 100",
        ),
        (
            "table = 0",
            "table",
            "0 is out of range: must be between 1 and 4294967295",
        ),
        (
            "policy = \"sometimes\"",
            "policy",
            "\"sometimes\" is not one of \"healthy\", \"always\", \"never\"",
        ),
        (
            "min_healthy = 0",
            "min_healthy",
            "0 is out of range: must be between 1 and 65535",
        ),
        (
            "down_grace_secs = 3601",
            "down_grace_secs",
            "3601 is out of range: must be between 0 and 3600",
        ),
    ];
    for (line, field, why) in cases {
        assert_eq!(
            problem(&format!("[announce]\n{line}\n{}", vip_and_group(&[]))),
            format!("announce: field \"{field}\": {why}")
        );
    }
    let p = problems(&vip_and_group(&[
        ("announce", "\"maybe\""),
        ("announce_min_healthy", "0"),
    ]));
    assert_eq!(
        p,
        [
            "vip \"v\": field \"announce\": \"maybe\" is not one of \"healthy\", \"always\", \"never\"",
            "vip \"v\": field \"announce_min_healthy\": 0 is out of range: must be between 1 and 65535",
        ]
    );
}
