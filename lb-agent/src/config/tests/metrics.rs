//! The `[metrics]` table.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use super::{ok, problem, problems, vip_and_group, EXAMPLE};
use crate::config::{EmfOutput, MetricsSettings};

fn with_metrics(lines: &str) -> String {
    format!("[metrics]\n{lines}\n{}", vip_and_group(&[]))
}

#[test]
fn defaults_and_the_example() {
    let c = ok(&vip_and_group(&[]));
    assert_eq!(c.metrics, MetricsSettings::default());
    assert_eq!(c.metrics.namespace, "lb");
    assert_eq!(c.metrics.availability_zone, None);
    assert_eq!(c.metrics.period, Duration::from_secs(60));
    assert!(!c.metrics.high_resolution());
    assert_eq!(c.metrics.emf, EmfOutput::Off);
    assert_eq!(c.metrics.prometheus_listen, None);
    // The example spells out the defaults.
    assert_eq!(ok(EXAMPLE).metrics, MetricsSettings::default());
    assert_eq!(ok(&with_metrics("")).metrics, MetricsSettings::default());
}

#[test]
fn every_key() {
    let c = ok(&with_metrics(
        "namespace = \"Edge/lb-1\"\navailability_zone = \"eu-west-1a\"\nperiod_secs = 1\n\
         emf = \"udp://127.0.0.1:25888\"\nprometheus_listen = \"127.0.0.1:9469\"",
    ));
    let addr: SocketAddr = "127.0.0.1:9469".parse().expect("addr");
    assert_eq!(
        c.metrics,
        MetricsSettings {
            namespace: "Edge/lb-1".to_owned(),
            availability_zone: Some("eu-west-1a".to_owned()),
            period: Duration::from_secs(1),
            emf: EmfOutput::Udp("127.0.0.1:25888".to_owned()),
            prometheus_listen: Some(addr),
        }
    );
    assert!(c.metrics.high_resolution());
    assert_eq!(c.warnings, Vec::<String>::new());
}

#[test]
fn emf_outputs() {
    let emf = |value: &str| ok(&with_metrics(&format!("emf = \"{value}\""))).metrics.emf;
    assert_eq!(emf("off"), EmfOutput::Off);
    assert_eq!(emf("stdout"), EmfOutput::Stdout);
    assert_eq!(emf("agent"), EmfOutput::Agent);
    assert_eq!(
        emf("file:/var/log/lb/emf.log"),
        EmfOutput::File(PathBuf::from("/var/log/lb/emf.log"))
    );
    assert_eq!(
        emf("tcp://cw-agent.internal:25888"),
        EmfOutput::Tcp("cw-agent.internal:25888".to_owned())
    );
    assert_eq!(
        emf("udp://[::1]:25888"),
        EmfOutput::Udp("[::1]:25888".to_owned())
    );
    for value in [
        "off",
        "stdout",
        "agent",
        "file:/x",
        "tcp://h:1",
        "udp://[::1]:2",
    ] {
        assert_eq!(emf(value).to_string(), value);
    }
}

#[test]
fn problems_name_the_field_and_why() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "namespace = \"AWS/NetworkELB\"",
            "namespace",
            "\"AWS/NetworkELB\" starts with \"AWS/\", which CloudWatch reserves for AWS \
             services; use a custom namespace such as \"lb\"",
        ),
        (
            "namespace = \"\"",
            "namespace",
            "is 0 characters long; CloudWatch namespaces have 1 to 255",
        ),
        (
            "namespace = \"lb$\"",
            "namespace",
            "\"lb$\" contains '$'; CloudWatch namespaces use only letters, digits, spaces and \
             . - _ / # :",
        ),
        (
            "availability_zone = \"eu west\"",
            "availability_zone",
            "\"eu west\" contains ' '; an availability zone is printable ASCII without spaces",
        ),
        (
            "period_secs = 30",
            "period_secs",
            "30 is not a CloudWatch storage resolution: use 60 (standard) or 1 (high \
             resolution)",
        ),
        (
            "emf = \"syslog\"",
            "emf",
            "\"syslog\" is not one of \"off\", \"stdout\", \"file:/path\", \"agent\", \
             \"tcp://host:port\" or \"udp://host:port\"",
        ),
        (
            "emf = \"file:relative.log\"",
            "emf",
            "\"file:relative.log\": the file must be an absolute path, such as \
             \"file:/var/log/lb/metrics.log\"",
        ),
        (
            "emf = \"tcp://127.0.0.1\"",
            "emf",
            "\"127.0.0.1\" is not host:port (such as \"127.0.0.1:25888\" or \"[::1]:25888\")",
        ),
        (
            "emf = \"udp://127.0.0.1:0\"",
            "emf",
            "\"127.0.0.1:0\": port 0 is not a destination",
        ),
        (
            "prometheus_listen = \"localhost:9469\"",
            "prometheus_listen",
            "\"localhost:9469\" is not address:port (such as \"127.0.0.1:9469\" or \
             \"[::1]:9469\")",
        ),
        (
            "prometheus_listen = \"127.0.0.1:0\"",
            "prometheus_listen",
            "\"127.0.0.1:0\": give a port (1 to 65535)",
        ),
    ];
    for (line, field, why) in cases {
        assert_eq!(
            problem(&with_metrics(line)),
            format!("metrics: field \"{field}\": {why}"),
            "{line}"
        );
    }
    // All at once.
    let all = problems(&with_metrics(
        "namespace = \"AWS/x\"\nperiod_secs = 0\nemf = \"x\"\nprometheus_listen = \"x\"",
    ));
    assert_eq!(all.len(), 4, "{all:#?}");
    let namespace = "a".repeat(256);
    assert!(
        problem(&with_metrics(&format!("namespace = \"{namespace}\"")))
            .contains("is 256 characters long")
    );
    assert_eq!(
        ok(&with_metrics(&format!(
            "namespace = \"{}\"",
            &namespace[..255]
        )))
        .metrics
        .namespace
        .len(),
        255
    );
}

#[test]
fn a_prometheus_address_off_loopback_is_a_warning() {
    let c = ok(&with_metrics("prometheus_listen = \"0.0.0.0:9469\""));
    assert_eq!(
        c.metrics.prometheus_listen,
        Some("0.0.0.0:9469".parse().expect("addr"))
    );
    assert_eq!(
        c.warnings,
        vec![
            "metrics: field \"prometheus_listen\": 0.0.0.0:9469 is not a loopback address: \
             anyone who can reach it can read the metrics (names of VIPs, target groups and \
             targets)"
                .to_owned()
        ]
    );
    assert_eq!(
        ok(&with_metrics("prometheus_listen = \"[::1]:9469\"")).warnings,
        Vec::<String>::new()
    );
}

#[test]
fn unknown_metrics_keys_are_syntax_errors() {
    let e = crate::config::parse(&with_metrics("namespce = \"lb\"")).expect_err("unknown key");
    assert!(
        matches!(e, crate::config::ConfigError::Syntax { .. })
            && e.to_string().contains("namespce"),
        "{e}"
    );
}
