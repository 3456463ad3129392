//! The `[target_group.health_check]` table: how and how often a group's targets are
//! checked (all but the port, which depends on the group's VIPs: [`super::cross`]), and
//! the timeout rule the agent check shares.

use std::{ops::RangeInclusive, time::Duration};

use super::{raw, Report, NONZERO_PORT};
use crate::config::{HealthCheck, HealthCheckProtocol, HttpCheck, StatusMatcher};

/// NLB: 5–300 s, default 30. Below 5 is accepted for lab and edge setups that must react
/// faster than NLB can.
pub(super) const HC_INTERVAL_SECS: RangeInclusive<i64> = 1..=300;
pub(super) const DEFAULT_HC_INTERVAL_SECS: u64 = 30;
/// NLB: 2–120 s. 1 is accepted so that a 1 s interval has a timeout that fits in it.
const HC_TIMEOUT_SECS: RangeInclusive<i64> = 1..=120;
/// NLB: 10 s for TCP, 6 s for HTTP and HTTPS (lowered to the interval if that is shorter).
const DEFAULT_HC_TIMEOUT_TCP_SECS: u64 = 10;
const DEFAULT_HC_TIMEOUT_HTTP_SECS: u64 = 6;
/// NLB: 2–10 for both; defaults 5 healthy, 2 unhealthy.
const HC_THRESHOLD: RangeInclusive<i64> = 2..=10;
const DEFAULT_HEALTHY_THRESHOLD: u8 = 5;
const DEFAULT_UNHEALTHY_THRESHOLD: u8 = 2;
const DEFAULT_HC_PATH: &str = "/";
const HC_PATH_MAX: usize = 1024;
const DEFAULT_HC_MATCHER: &str = "200-399";
/// A body check is a substring search of the first part of the response, not a parser.
const HC_BODY_MAX: usize = 256;
/// argv of an exec check: the program and up to 31 arguments.
const HC_COMMAND_MAX: usize = 32;

/// The explicitly configured health-check port.
#[derive(Clone, Copy)]
pub(super) enum CheckPort {
    /// Not configured: NLB's "traffic-port", the port of the group's VIPs.
    Traffic,
    Port(u16),
    /// Configured but wrong (already reported).
    Invalid,
}

/// Everything about a group's health check except the port (see [`CheckPort`]).
pub(super) fn health_check(
    r: &mut Report,
    item: &str,
    raw: &raw::HealthCheck,
) -> (Option<HealthCheck>, CheckPort) {
    let check_port = match raw.port {
        None => CheckPort::Traffic,
        Some(p) => match r.in_range(item, "health_check.port", p, NONZERO_PORT) {
            Some(port) => CheckPort::Port(port),
            None => CheckPort::Invalid,
        },
    };
    let protocol = r.choice(
        item,
        "health_check.protocol",
        raw.protocol.as_deref(),
        &[
            ("tcp", HealthCheckProtocol::Tcp),
            ("http", HealthCheckProtocol::Http),
            ("https", HealthCheckProtocol::Https),
            ("exec", HealthCheckProtocol::Exec),
        ],
        Some(HealthCheckProtocol::Tcp),
    );
    let http = protocol.and_then(|p| http(r, item, raw, p));
    let command = protocol.and_then(|p| command(r, item, raw, p));
    let interval: Option<u64> = r.int(
        item,
        "health_check.interval_secs",
        raw.interval_secs,
        HC_INTERVAL_SECS,
        DEFAULT_HC_INTERVAL_SECS,
    );
    let default_timeout = match protocol {
        Some(HealthCheckProtocol::Http | HealthCheckProtocol::Https) => {
            DEFAULT_HC_TIMEOUT_HTTP_SECS
        }
        Some(HealthCheckProtocol::Tcp | HealthCheckProtocol::Exec) | None => {
            DEFAULT_HC_TIMEOUT_TCP_SECS
        }
    };
    let timeout = timeout(
        r,
        item,
        "health_check.timeout_secs",
        raw.timeout_secs,
        default_timeout,
        interval,
    );
    let healthy_threshold = r.int(
        item,
        "health_check.healthy_threshold",
        raw.healthy_threshold,
        HC_THRESHOLD,
        DEFAULT_HEALTHY_THRESHOLD,
    );
    let unhealthy_threshold = r.int(
        item,
        "health_check.unhealthy_threshold",
        raw.unhealthy_threshold,
        HC_THRESHOLD,
        DEFAULT_UNHEALTHY_THRESHOLD,
    );
    let check = || {
        Some(HealthCheck {
            enabled: raw.enabled.unwrap_or(true),
            protocol: protocol?,
            port: None,
            http: http?,
            command: command?,
            interval: Duration::from_secs(interval?),
            timeout: Duration::from_secs(timeout?),
            healthy_threshold: healthy_threshold?,
            unhealthy_threshold: unhealthy_threshold?,
        })
    };
    (check(), check_port)
}

/// The HTTP(S) settings: `Some(None)` for the other protocols, which must not set them.
fn http(
    r: &mut Report,
    item: &str,
    raw: &raw::HealthCheck,
    protocol: HealthCheckProtocol,
) -> Option<Option<HttpCheck>> {
    if !matches!(
        protocol,
        HealthCheckProtocol::Http | HealthCheckProtocol::Https
    ) {
        for (field, set) in [
            ("health_check.path", raw.path.is_some()),
            ("health_check.matcher", raw.matcher.is_some()),
            ("health_check.body", raw.body.is_some()),
        ] {
            if set {
                r.problem(
                    item,
                    field,
                    format!("only for protocol = \"http\" or \"https\", not \"{protocol}\""),
                );
            }
        }
        return Some(None);
    }
    let path = r.ok(
        item,
        "health_check.path",
        check_path(raw.path.as_deref().unwrap_or(DEFAULT_HC_PATH)),
    );
    let matcher = r.ok(
        item,
        "health_check.matcher",
        StatusMatcher::parse(raw.matcher.as_deref().unwrap_or(DEFAULT_HC_MATCHER)),
    );
    let body_contains = match raw.body.as_deref() {
        None => Some(None),
        Some(body) => r.ok(item, "health_check.body", check_body(body)).map(Some),
    };
    Some(Some(HttpCheck {
        path: path?,
        matcher: matcher?,
        body_contains: body_contains?,
    }))
}

/// The exec check's argv: `Some(None)` for the other protocols, which must not set it.
fn command(
    r: &mut Report,
    item: &str,
    raw: &raw::HealthCheck,
    protocol: HealthCheckProtocol,
) -> Option<Option<Vec<String>>> {
    if protocol != HealthCheckProtocol::Exec {
        if raw.command.is_some() {
            r.problem(
                item,
                "health_check.command",
                format!("only for protocol = \"exec\", not \"{protocol}\""),
            );
        }
        return Some(None);
    }
    let Some(argv) = raw.command.as_deref() else {
        r.problem(
            item,
            "health_check.command",
            "missing: required when protocol = \"exec\" (the program to run and its \
             arguments)",
        );
        return None;
    };
    r.ok(item, "health_check.command", check_command(argv))
        .map(Some)
}

/// A check's timeout: in [`HC_TIMEOUT_SECS`] and at most `interval`; when absent,
/// `default` lowered to `interval`.
pub(super) fn timeout(
    r: &mut Report,
    item: &str,
    field: &str,
    value: Option<i64>,
    default: u64,
    interval: Option<u64>,
) -> Option<u64> {
    match value {
        None => Some(interval.map_or(default, |i| i.min(default))),
        Some(t) => match (r.in_range::<u64>(item, field, t, HC_TIMEOUT_SECS), interval) {
            (Some(t), Some(i)) if t > i => {
                r.problem(
                    item,
                    field,
                    format!(
                        "{t} is longer than interval_secs ({i}): a check must end before the \
                         next one starts"
                    ),
                );
                None
            }
            (t, _) => t,
        },
    }
}

fn check_body(body: &str) -> Result<String, String> {
    if body.is_empty() {
        return Err("must not be empty (leave it out to accept any body)".to_owned());
    }
    if body.len() > HC_BODY_MAX {
        return Err(format!(
            "is {} bytes long; at most {HC_BODY_MAX} are allowed",
            body.len()
        ));
    }
    Ok(body.to_owned())
}

/// The argv of an exec check. The program is run directly (no shell, no `PATH` search),
/// so it must be an absolute path.
fn check_command(argv: &[String]) -> Result<Vec<String>, String> {
    let Some(program) = argv.first() else {
        return Err(
            "is empty; give the program to run (an absolute path) and its arguments".to_owned(),
        );
    };
    if argv.len() > HC_COMMAND_MAX {
        return Err(format!(
            "has {} elements; at most {HC_COMMAND_MAX} are allowed (the program and {} \
             arguments)",
            argv.len(),
            HC_COMMAND_MAX - 1
        ));
    }
    if !program.starts_with('/') {
        return Err(format!(
            "{program:?} is not an absolute path; the program (the first element) must be \
             given as one, since no PATH is searched"
        ));
    }
    if let Some(i) = argv.iter().position(|a| a.contains('\0')) {
        return Err(format!(
            "element #{} contains a NUL character, which cannot be passed to a program",
            i + 1
        ));
    }
    Ok(argv.to_vec())
}

fn check_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} does not start with '/'"));
    }
    if path.len() > HC_PATH_MAX {
        return Err(format!(
            "is {} characters long; at most {HC_PATH_MAX} are allowed",
            path.len()
        ));
    }
    if let Some(c) = path.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "{path:?} contains {c:?}; a path is visible ASCII (percent-encode anything else)"
        ));
    }
    Ok(path.to_owned())
}
