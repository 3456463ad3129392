//! The `[metrics]` table: the CloudWatch namespace and dimensions, the period, and the
//! endpoints metrics are published to (EMF output, Prometheus listener).

use std::{
    net::{Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use super::{raw, Report};
use crate::config::{EmfOutput, MetricsSettings};

/// CloudWatch: a namespace is 1 to 255 characters of these.
const NAMESPACE_MAX: usize = 255;
/// CloudWatch: a dimension value is 1 to 1024 characters; an availability zone name is
/// far shorter, so a long value is a mistake.
const AVAILABILITY_ZONE_MAX: usize = 255;
/// CloudWatch's two storage resolutions.
const METRICS_PERIOD_SECS: [i64; 2] = [1, 60];

pub(super) fn metrics(r: &mut Report, raw: &raw::Metrics) -> MetricsSettings {
    let item = "metrics";
    let d = MetricsSettings::default();
    let namespace = match raw.namespace.as_deref() {
        None => None,
        Some(text) => r.ok(item, "namespace", check_namespace(text)),
    };
    let availability_zone = match raw.availability_zone.as_deref() {
        None => None,
        Some(text) => r.ok(item, "availability_zone", check_zone(text)),
    };
    let period = match raw.period_secs {
        None => d.period,
        Some(secs) if METRICS_PERIOD_SECS.contains(&secs) => {
            Duration::from_secs(secs.unsigned_abs())
        }
        Some(secs) => {
            r.problem(
                item,
                "period_secs",
                format!(
                    "{secs} is not a CloudWatch storage resolution: use 60 (standard) or 1 \
                     (high resolution)"
                ),
            );
            d.period
        }
    };
    let emf = match raw.emf.as_deref() {
        None => None,
        Some(text) => r.ok(item, "emf", emf_output(text)),
    };
    let prometheus_listen = match raw.prometheus_listen.as_deref() {
        None => None,
        Some(text) => r.ok(item, "prometheus_listen", listen_address(text)),
    };
    if let Some(addr) = prometheus_listen {
        if !addr.ip().is_loopback() {
            r.warn(
                item,
                "prometheus_listen",
                format!(
                    "{addr} is not a loopback address: anyone who can reach it can read \
                     the metrics (names of VIPs, target groups and targets)"
                ),
            );
        }
    }
    MetricsSettings {
        namespace: namespace.unwrap_or(d.namespace),
        availability_zone,
        period,
        emf: emf.unwrap_or(d.emf),
        prometheus_listen,
    }
}

fn check_namespace(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > NAMESPACE_MAX {
        return Err(format!(
            "is {} characters long; CloudWatch namespaces have 1 to {NAMESPACE_MAX}",
            text.len()
        ));
    }
    if text.starts_with("AWS/") {
        return Err(format!(
            "{text:?} starts with \"AWS/\", which CloudWatch reserves for AWS services; \
             use a custom namespace such as \"lb\""
        ));
    }
    if let Some(c) = text.chars().find(|c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | '#' | ':' | ' '))
    }) {
        return Err(format!(
            "{text:?} contains {c:?}; CloudWatch namespaces use only letters, digits, \
             spaces and . - _ / # :"
        ));
    }
    Ok(text.to_owned())
}

fn check_zone(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > AVAILABILITY_ZONE_MAX {
        return Err(format!(
            "is {} characters long; give 1 to {AVAILABILITY_ZONE_MAX}, such as \"eu-west-1a\"",
            text.len()
        ));
    }
    if let Some(c) = text.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "{text:?} contains {c:?}; an availability zone is printable ASCII without spaces"
        ));
    }
    Ok(text.to_owned())
}

fn emf_output(text: &str) -> Result<EmfOutput, String> {
    const CHOICES: &str =
        "\"off\", \"stdout\", \"file:/path\", \"agent\", \"tcp://host:port\" or \"udp://host:port\"";
    match text {
        "off" => return Ok(EmfOutput::Off),
        "stdout" => return Ok(EmfOutput::Stdout),
        "agent" => return Ok(EmfOutput::Agent),
        _ => {}
    }
    if let Some(path) = text.strip_prefix("file:") {
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Err(format!(
                "{text:?}: the file must be an absolute path, such as \"file:/var/log/lb/metrics.log\""
            ));
        }
        return Ok(EmfOutput::File(path));
    }
    if let Some(addr) = text.strip_prefix("tcp://") {
        return host_port(addr).map(EmfOutput::Tcp);
    }
    if let Some(addr) = text.strip_prefix("udp://") {
        return host_port(addr).map(EmfOutput::Udp);
    }
    Err(format!("{text:?} is not one of {CHOICES}"))
}

/// `host:port` (an IPv6 address in brackets) with a nonzero port; the host is resolved
/// when the sink connects.
pub(crate) fn host_port(text: &str) -> Result<String, String> {
    let bad =
        || format!("{text:?} is not host:port (such as \"127.0.0.1:25888\" or \"[::1]:25888\")");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(format!("{text:?}: port 0 is not a destination"));
    }
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let ok = match bare {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        }
    };
    if !ok {
        return Err(bad());
    }
    Ok(text.to_owned())
}

fn listen_address(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text.parse().map_err(|_| {
        format!("{text:?} is not address:port (such as \"127.0.0.1:9469\" or \"[::1]:9469\")")
    })?;
    if addr.port() == 0 {
        return Err(format!("{text:?}: give a port (1 to 65535)"));
    }
    Ok(addr)
}
