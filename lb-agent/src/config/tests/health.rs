//! The `[target_group.health_check]` table (`validate/health.rs`): defaults, ranges, the
//! HTTP(S) and exec settings, and status matchers.

use std::time::Duration;

use super::{group_g, ok, problem, problems, syntax, vip};
use crate::config::{HealthCheck, HealthCheckProtocol, StatusMatcher};

#[test]
fn http_and_https_health_check_defaults() {
    for (name, protocol) in [
        ("http", HealthCheckProtocol::Http),
        ("https", HealthCheckProtocol::Https),
    ] {
        let c = ok(&(vip(&[])
            + &group_g(&format!(
                "[target_group.health_check]\nprotocol = \"{name}\""
            ))));
        let hc = &c.target_groups[0].health_check;
        assert_eq!(hc.protocol, protocol);
        assert_eq!(hc.timeout, Duration::from_secs(6), "{name}");
        assert_eq!(hc.interval, Duration::from_secs(30));
        let http = hc.http.as_ref().expect("http settings");
        assert_eq!(http.body_contains, None);
        assert_eq!(http.path, "/");
        assert_eq!(http.matcher.to_string(), "200-399");
        assert!(http.matcher.matches(200) && http.matcher.matches(399));
        assert!(!http.matcher.matches(400));
    }
}

#[test]
fn default_timeout_is_lowered_to_a_shorter_interval() {
    let c = ok(&(vip(&[]) + &group_g("[target_group.health_check]\ninterval_secs = 5")));
    assert_eq!(
        c.target_groups[0].health_check.timeout,
        Duration::from_secs(5)
    );
    let c = ok(&(vip(&[])
        + &group_g("[target_group.health_check]\nprotocol = \"http\"\ninterval_secs = 3")));
    assert_eq!(
        c.target_groups[0].health_check.timeout,
        Duration::from_secs(3)
    );
}

#[test]
fn health_check_settings_are_checked() {
    let cases = [
        (
            "protocol = \"icmp\"",
            "protocol",
            "\"icmp\" is not one of \"tcp\", \"http\", \"https\", \"exec\"",
        ),
        (
            "port = 0",
            "port",
            "0 is out of range: must be between 1 and 65535",
        ),
        (
            "interval_secs = 0",
            "interval_secs",
            "0 is out of range: must be between 1 and 300",
        ),
        (
            "interval_secs = 301",
            "interval_secs",
            "301 is out of range: must be between 1 and 300",
        ),
        (
            "timeout_secs = 121",
            "timeout_secs",
            "121 is out of range: must be between 1 and 120",
        ),
        (
            "interval_secs = 5\ntimeout_secs = 6",
            "timeout_secs",
            "6 is longer than interval_secs (5): a check must end before the next one starts",
        ),
        (
            "healthy_threshold = 1",
            "healthy_threshold",
            "1 is out of range: must be between 2 and 10",
        ),
        (
            "unhealthy_threshold = 11",
            "unhealthy_threshold",
            "11 is out of range: must be between 2 and 10",
        ),
        (
            "path = \"/health\"",
            "path",
            "only for protocol = \"http\" or \"https\", not \"tcp\"",
        ),
        (
            "matcher = \"200\"",
            "matcher",
            "only for protocol = \"http\" or \"https\", not \"tcp\"",
        ),
        (
            "protocol = \"http\"\npath = \"health\"",
            "path",
            "\"health\" does not start with '/'",
        ),
        (
            "protocol = \"http\"\npath = \"/a b\"",
            "path",
            "\"/a b\" contains ' '; a path is visible ASCII (percent-encode anything else)",
        ),
        (
            "protocol = \"https\"\nmatcher = \"200-600\"",
            "matcher",
            "status code 600 is out of range: must be between 200 and 599",
        ),
        (
            "protocol = \"http\"\nmatcher = \"199\"",
            "matcher",
            "status code 199 is out of range: must be between 200 and 599",
        ),
        (
            "protocol = \"http\"\nmatcher = \"2xx\"",
            "matcher",
            "\"2xx\" is not a status code; write codes, ranges and comma lists such as \"200\", \
             \"200-299\" or \"200,202\"",
        ),
        (
            "protocol = \"http\"\nmatcher = \"300-200\"",
            "matcher",
            "\"300-200\" is an empty range (write the smaller code first)",
        ),
        (
            "protocol = \"http\"\nmatcher = \"200,\"",
            "matcher",
            "\"\" is not a status code; write codes, ranges and comma lists such as \"200\", \
             \"200-299\" or \"200,202\"",
        ),
    ];
    for (lines, field, why) in cases {
        assert_eq!(
            problem(&(vip(&[]) + &group_g(&format!("[target_group.health_check]\n{lines}")))),
            format!("target_group \"g\": field \"health_check.{field}\": {why}"),
            "{lines}"
        );
    }
    // Below NLB's minimums (interval 5, timeout 2) is allowed; timeout = interval too.
    let c =
        ok(&(vip(&[])
            + &group_g("[target_group.health_check]\ninterval_secs = 1\ntimeout_secs = 1")));
    let hc = &c.target_groups[0].health_check;
    assert_eq!(
        (hc.interval, hc.timeout),
        (Duration::from_secs(1), Duration::from_secs(1))
    );
}

/// The problems of VIP "v" and group "g" with a `[target_group.health_check]` of `lines`.
fn health_check_problems(lines: &str) -> Vec<String> {
    problems(&(vip(&[]) + &group_g(&format!("[target_group.health_check]\n{lines}"))))
}

fn health_check_of(lines: &str) -> HealthCheck {
    let c = ok(&(vip(&[]) + &group_g(&format!("[target_group.health_check]\n{lines}"))));
    c.target_groups[0].health_check.clone()
}

#[test]
fn exec_health_check() {
    let hc =
        health_check_of("protocol = \"exec\"\ncommand = [\"/usr/bin/check\", \"-q\", \"web\"]");
    assert_eq!(hc.protocol, HealthCheckProtocol::Exec);
    assert_eq!(hc.protocol.to_string(), "exec");
    assert_eq!(
        hc.command.as_deref(),
        Some(
            &[
                "/usr/bin/check".to_owned(),
                "-q".to_owned(),
                "web".to_owned()
            ][..]
        )
    );
    assert_eq!(hc.http, None);
    assert_eq!(hc.port, Some(80), "the traffic port, passed to the program");
    assert_eq!(hc.timeout, Duration::from_secs(10), "tcp's default");
    let argv: Vec<String> = (0..32).map(|i| format!("\"/a{i}\"")).collect();
    let hc = health_check_of(&format!(
        "protocol = \"exec\"\ncommand = [{}]\nport = 8080\ninterval_secs = 3",
        argv.join(", ")
    ));
    assert_eq!(hc.command.map(|c| c.len()), Some(32));
    assert_eq!((hc.port, hc.timeout), (Some(8080), Duration::from_secs(3)));

    let field =
        |f: &str, why: &str| format!("target_group \"g\": field \"health_check.{f}\": {why}");
    let too_long: Vec<String> = (0..33).map(|_| "\"/bin/true\"".to_owned()).collect();
    let cases = [
        (
            "protocol = \"exec\"".to_owned(),
            field(
                "command",
                "missing: required when protocol = \"exec\" (the program to run and its \
                 arguments)",
            ),
        ),
        (
            "protocol = \"exec\"\ncommand = []".to_owned(),
            field(
                "command",
                "is empty; give the program to run (an absolute path) and its arguments",
            ),
        ),
        (
            format!("protocol = \"exec\"\ncommand = [{}]", too_long.join(", ")),
            field(
                "command",
                "has 33 elements; at most 32 are allowed (the program and 31 arguments)",
            ),
        ),
        (
            "protocol = \"exec\"\ncommand = [\"check\", \"/x\"]".to_owned(),
            field(
                "command",
                "\"check\" is not an absolute path; the program (the first element) must be \
                 given as one, since no PATH is searched",
            ),
        ),
        (
            "protocol = \"exec\"\ncommand = [\"/bin/check\", \"a\\u0000b\"]".to_owned(),
            field(
                "command",
                "element #2 contains a NUL character, which cannot be passed to a program",
            ),
        ),
        (
            "command = [\"/bin/true\"]".to_owned(),
            field("command", "only for protocol = \"exec\", not \"tcp\""),
        ),
        (
            "protocol = \"http\"\ncommand = [\"/bin/true\"]".to_owned(),
            field("command", "only for protocol = \"exec\", not \"http\""),
        ),
        (
            "protocol = \"exec\"\ncommand = [\"/bin/true\"]\npath = \"/\"".to_owned(),
            field(
                "path",
                "only for protocol = \"http\" or \"https\", not \"exec\"",
            ),
        ),
        (
            "protocol = \"exec\"\ncommand = [\"/bin/true\"]\nmatcher = \"200\"".to_owned(),
            field(
                "matcher",
                "only for protocol = \"http\" or \"https\", not \"exec\"",
            ),
        ),
    ];
    for (lines, want) in cases {
        assert_eq!(health_check_problems(&lines), [want], "{lines}");
    }
    // Checked even with checks disabled, as the HTTP settings are.
    assert_eq!(
        health_check_problems("enabled = false\nprotocol = \"exec\"").len(),
        1
    );
    // A command that is not a list of strings is a TOML-level error.
    let (_, _, message) = syntax(
        &(vip(&[])
            + &group_g(
                "[target_group.health_check]\nprotocol = \"exec\"\ncommand = \"/bin/true\"",
            )),
    );
    assert!(message.contains("invalid type"), "{message}");
}

#[test]
fn http_body_check() {
    let hc = health_check_of("protocol = \"https\"\nbody = \"ready\"");
    let http = hc.http.expect("http settings");
    assert_eq!(http.body_contains.as_deref(), Some("ready"));
    let max = "x".repeat(256);
    let hc = health_check_of(&format!("protocol = \"http\"\nbody = \"{max}\""));
    assert_eq!(
        hc.http.and_then(|h| h.body_contains).map(|b| b.len()),
        Some(256)
    );

    let field = |why: &str| format!("target_group \"g\": field \"health_check.body\": {why}");
    let cases = [
        (
            "protocol = \"http\"\nbody = \"\"".to_owned(),
            field("must not be empty (leave it out to accept any body)"),
        ),
        (
            format!("protocol = \"http\"\nbody = \"{}\"", "é".repeat(129)),
            field("is 258 bytes long; at most 256 are allowed"),
        ),
        (
            "body = \"OK\"".to_owned(),
            field("only for protocol = \"http\" or \"https\", not \"tcp\""),
        ),
        (
            "protocol = \"exec\"\ncommand = [\"/bin/true\"]\nbody = \"OK\"".to_owned(),
            field("only for protocol = \"http\" or \"https\", not \"exec\""),
        ),
    ];
    for (lines, want) in cases {
        assert_eq!(health_check_problems(&lines), [want], "{lines}");
    }
}

#[test]
fn status_matcher() {
    let m = StatusMatcher::parse("200-299, 302,404").expect("matcher");
    assert_eq!(m.to_string(), "200-299,302,404");
    for (code, yes) in [
        (200, true),
        (299, true),
        (300, false),
        (302, true),
        (404, true),
        (500, false),
    ] {
        assert_eq!(m.matches(code), yes, "{code}");
    }
    assert_eq!(
        StatusMatcher::parse("200-599")
            .expect("matcher")
            .to_string(),
        "200-599"
    );
}
