//! The `[target_group.agent_check]` table (`validate/agent_check.rs`).

use std::time::Duration;

use super::{group_g, ok, problems, syntax, vip};

#[test]
fn agent_check_defaults_follow_the_health_check() {
    let agent = |keys: &str| {
        let c = ok(&(vip(&[]) + &group_g(keys)));
        c.target_groups[0].agent_check.expect("agent check")
    };
    let a = agent("[target_group.agent_check]\nport = 5555");
    assert_eq!(a.port, 5555);
    assert_eq!(a.interval, Duration::from_secs(30), "health check default");
    assert_eq!(a.timeout, Duration::from_secs(2));
    let a = agent(
        "[target_group.health_check]\ninterval_secs = 7\n[target_group.agent_check]\nport = 1",
    );
    assert_eq!(
        (a.interval, a.timeout),
        (Duration::from_secs(7), Duration::from_secs(2))
    );
    let a = agent(
        "[target_group.health_check]\ninterval_secs = 1\ntimeout_secs = 1\n\
         [target_group.agent_check]\nport = 65535",
    );
    assert_eq!(
        (a.interval, a.timeout),
        (Duration::from_secs(1), Duration::from_secs(1))
    );
    let a =
        agent("[target_group.agent_check]\nport = 5555\ninterval_secs = 300\ntimeout_secs = 120");
    assert_eq!(
        (a.interval, a.timeout),
        (Duration::from_secs(300), Duration::from_secs(120))
    );
    let a = agent("[target_group.agent_check]\nport = 5555\ninterval_secs = 5\ntimeout_secs = 5");
    assert_eq!(
        (a.interval, a.timeout),
        (Duration::from_secs(5), Duration::from_secs(5))
    );
}

#[test]
fn agent_check_settings_are_checked() {
    let cases = [
        ("", "port", "missing (required)"),
        (
            "port = 0",
            "port",
            "0 is out of range: must be between 1 and 65535",
        ),
        (
            "port = 65536",
            "port",
            "65536 is out of range: must be between 1 and 65535",
        ),
        (
            "port = 1\ninterval_secs = 0",
            "interval_secs",
            "0 is out of range: must be between 1 and 300",
        ),
        (
            "port = 1\ninterval_secs = 301",
            "interval_secs",
            "301 is out of range: must be between 1 and 300",
        ),
        (
            "port = 1\ntimeout_secs = 0",
            "timeout_secs",
            "0 is out of range: must be between 1 and 120",
        ),
        (
            "port = 1\ntimeout_secs = 121",
            "timeout_secs",
            "121 is out of range: must be between 1 and 120",
        ),
        (
            "port = 1\ninterval_secs = 3\ntimeout_secs = 4",
            "timeout_secs",
            "4 is longer than interval_secs (3): a check must end before the next one starts",
        ),
    ];
    for (lines, field, why) in cases {
        assert_eq!(
            problems(&(vip(&[]) + &group_g(&format!("[target_group.agent_check]\n{lines}")))),
            [format!(
                "target_group \"g\": field \"agent_check.{field}\": {why}"
            )],
            "{lines}"
        );
    }
    // The default interval is the health check's: a longer timeout does not fit it.
    assert_eq!(
        problems(
            &(vip(&[])
                + &group_g(
                    "[target_group.health_check]\ninterval_secs = 3\n\
                 [target_group.agent_check]\nport = 1\ntimeout_secs = 10"
                ))
        ),
        [
            "target_group \"g\": field \"agent_check.timeout_secs\": 10 is longer than \
          interval_secs (3): a check must end before the next one starts"
        ]
    );
    // An invalid health-check interval is reported once, not again for the agent check.
    assert_eq!(
        problems(
            &(vip(&[])
                + &group_g(
                    "[target_group.health_check]\ninterval_secs = 0\n\
                 [target_group.agent_check]\nport = 1"
                ))
        ),
        [
            "target_group \"g\": field \"health_check.interval_secs\": 0 is out of range: must be \
          between 1 and 300"
        ]
    );
    let (_, _, message) =
        syntax(&(vip(&[]) + &group_g("[target_group.agent_check]\nport = 1\nweight = 50")));
    assert!(message.contains("unknown field `weight`"), "{message}");
}
