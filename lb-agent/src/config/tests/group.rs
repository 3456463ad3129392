//! A `[[target_group]]` table and its targets (`validate/group.rs`): addresses, weights and
//! the lifecycle settings.

use std::time::Duration;

use super::{group, group_g, ok, problem, problems, syntax, vip};

#[test]
fn target_addresses_are_unique_within_a_group() {
    let text = vip(&[]) + &group("g", "", &["198.18.11.2", "198.18.12.2", "198.18.11.2"]);
    assert_eq!(
        problem(&text),
        "target_group \"g\": target 198.18.11.2: field \"address\": 198.18.11.2 is listed twice \
         in the group (targets #1 and #3); each address may appear once per group"
    );
    // The same address in two groups is two targets.
    ok(&(vip(&[("name", "\"a\"")])
        + &vip(&[("name", "\"b\""), ("port", "81"), ("target_group", "\"h\"")])
        + &group_g("")
        + &group("h", "", &["198.18.11.2"])));
}

#[test]
fn weights_are_checked() {
    let text = vip(&[]) + &group_g("") + "weight = 70000\n";
    assert_eq!(
        problem(&text),
        "target_group \"g\": target 198.18.11.2: field \"weight\": 70000 is out of range: must \
         be between 0 and 65535"
    );
    let c = ok(&(vip(&[]) + &group("g", "", &["198.18.11.2", "198.18.12.2"]) + "weight = 65535\n"));
    assert_eq!(
        c.target_groups[0]
            .targets
            .iter()
            .map(|t| t.weight)
            .collect::<Vec<_>>(),
        [1, 65535]
    );
}

#[test]
fn lifecycle_settings_are_checked() {
    let cases = [
        (
            "deregistration_delay_secs = 3601",
            "deregistration_delay_secs",
            "3601 is out of range: must be between 0 and 3600",
        ),
        (
            "slow_start_secs = 29",
            "slow_start_secs",
            "29 is out of range: must be 0 (off) or between 30 and 900",
        ),
        (
            "slow_start_secs = 901",
            "slow_start_secs",
            "901 is out of range: must be 0 (off) or between 30 and 900",
        ),
    ];
    for (line, field, why) in cases {
        assert_eq!(
            problem(&(vip(&[]) + &group_g(line))),
            format!("target_group \"g\": field \"{field}\": {why}")
        );
    }
    let c = ok(&(vip(&[])
        + &group_g("deregistration_delay_secs = 0\nslow_start_secs = 30\nfail_open = false")));
    let g = &c.target_groups[0];
    assert_eq!(g.deregistration_delay, Duration::ZERO);
    assert_eq!(g.slow_start, Duration::from_secs(30));
    assert!(!g.fail_open);
}

#[test]
fn unhealthy_connection_handling() {
    let group_of = |keys: &str| ok(&(vip(&[]) + &group_g(keys))).target_groups[0].clone();
    let g = group_of(
        "unhealthy_connection_termination = false\nunhealthy_draining_interval_secs = 360000",
    );
    assert!(!g.unhealthy_connection_termination);
    assert_eq!(g.unhealthy_draining_interval, Duration::from_secs(360_000));
    let g =
        group_of("unhealthy_connection_termination = true\nunhealthy_draining_interval_secs = 0");
    assert!(g.unhealthy_connection_termination);
    assert_eq!(g.unhealthy_draining_interval, Duration::ZERO);
    let g = group_of("unhealthy_connection_termination = false");
    assert!(!g.unhealthy_connection_termination);
    assert_eq!(g.unhealthy_draining_interval, Duration::ZERO);

    let field = |why: &str| {
        format!("target_group \"g\": field \"unhealthy_draining_interval_secs\": {why}")
    };
    let cases = [
        (
            "unhealthy_draining_interval_secs = 360001",
            field("360001 is out of range: must be between 0 and 360000"),
        ),
        (
            "unhealthy_draining_interval_secs = -1",
            field("-1 is out of range: must be between 0 and 360000"),
        ),
        (
            "unhealthy_draining_interval_secs = 30",
            field(
                "30 needs unhealthy_connection_termination = false (as in an AWS NLB: with \
                 termination on, an unhealthy target's flows move at once; with it off, they \
                 stay for this interval)",
            ),
        ),
    ];
    for (keys, want) in cases {
        assert_eq!(problems(&(vip(&[]) + &group_g(keys))), [want], "{keys}");
    }
    let (_, _, message) = syntax(&(vip(&[]) + &group_g("unhealthy_connection_termination = 1")));
    assert!(message.contains("invalid type"), "{message}");
}
