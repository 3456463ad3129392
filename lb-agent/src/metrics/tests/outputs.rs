//! EMF, PutMetricData, Prometheus and JSON renderings.

use std::{collections::HashSet, time::Duration};

use serde_json::Value;

use super::{
    c, emf_schema::emf_check, parse_json, python, sample, settings, steady_minute, wide_period,
    Aggregator, Sample, MISSING_MODULE,
};
use crate::metrics::{datum, emf, json, prometheus};

/// Parses a Prometheus page (stdin) with prometheus_client; prints one JSON line per
/// sample: [family, type, sample name, labels, value].
const PROMETHEUS_CHECK: &str = r#"
import json, sys
try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError as e:
    print(e, file=sys.stderr); sys.exit(77)
for family in text_string_to_metric_families(sys.stdin.read()):
    if not family.documentation:
        sys.exit("family %s has no HELP" % family.name)
    for s in family.samples:
        print(json.dumps([family.name, family.type, s.name, s.labels, s.value]))
"#;

#[test]
fn missing_modules_are_a_failure_not_a_skip() {
    let script = format!("import sys\nsys.exit({MISSING_MODULE})");
    let result = std::panic::catch_unwind(|| python(&script, ""));
    let message = match result {
        Ok(_) => panic!("a missing module passed"),
        Err(e) => e.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(message.contains("cargo xtask setup"), "{message}");
}

#[test]
fn emf_documents_validate_against_the_schema() {
    let p = steady_minute();
    for zone in [None, Some("eu-west-1a")] {
        let lines = emf::render(&p, &settings(zone));
        assert_eq!(emf_check(&lines), lines.len());
        let mut combinations = HashSet::new();
        let mut total = 0;
        for line in &lines {
            let doc = parse_json(line);
            let aws = &doc["_aws"];
            assert_eq!(aws["Timestamp"], Value::from(super::T0 * 1000));
            let directives = aws["CloudWatchMetrics"].as_array().expect("directives");
            assert_eq!(directives.len(), 1);
            assert_eq!(directives[0]["Namespace"], "lb/test");
            let dims = directives[0]["Dimensions"][0].as_array().expect("set");
            let values: Vec<String> = dims
                .iter()
                .map(|k| {
                    format!(
                        "{}={}",
                        k.as_str().unwrap_or(""),
                        doc[k.as_str().unwrap_or("")]
                    )
                })
                .collect();
            assert!(
                combinations.insert(values.join(",")),
                "two documents for one dimension combination: {line}"
            );
            for m in directives[0]["Metrics"].as_array().expect("metrics") {
                // Standard resolution is the default and is not written.
                assert!(m.get("StorageResolution").is_none(), "{line}");
                total += 1;
            }
        }
        let sets = if zone.is_some() { 2 } else { 1 };
        // Per VIP sets: web 12 metrics + 2 host counts, dns 10 + 2 (zonal); per target 4
        // (not zonal); drops 2 reasons (zonal).
        assert_eq!(total, (12 + 2 + 10 + 2 + 2) * sets + 4, "{lines:#?}");
        let web = lines
            .iter()
            .map(|l| parse_json(l))
            .find(|d| {
                d["LoadBalancer"] == "web"
                    && d.get("TargetGroup").is_none()
                    && d.get("AvailabilityZone").map(|z| z == "eu-west-1a") == zone.map(|_| true)
            })
            .expect("web's document");
        assert_eq!(web["ProcessedPackets"], 600);
        assert_eq!(web["PeakPacketsPerSecond"], 10);
        if zone.is_some() {
            let set = &web["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0];
            assert_eq!(
                set,
                &serde_json::json!(["AvailabilityZone", "LoadBalancer"])
            );
        }
    }
}

#[test]
fn emf_high_resolution_says_storage_resolution_1() {
    let mut agg = Aggregator::new(Duration::from_secs(1));
    agg.push(sample(0, c(0, 0, 0, 0), c(0, 0, 0, 0), 0));
    let p = agg
        .push(sample(1, c(5, 500, 1, 0), c(0, 0, 0, 0), 0))
        .expect("a period");
    let lines = emf::render(&p, &settings(Some("az1")));
    assert_eq!(emf_check(&lines), lines.len());
    for line in &lines {
        let doc = parse_json(line);
        for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .expect("metrics")
        {
            assert_eq!(m["StorageResolution"], 1, "{line}");
        }
    }
}

#[test]
fn emf_splits_directives_at_100_metrics() {
    let p = wide_period(250);
    let lines = emf::render(&p, &settings(None));
    assert_eq!(lines.len(), 3);
    assert_eq!(emf_check(&lines), 3);
    let sizes: Vec<usize> = lines
        .iter()
        .map(|l| {
            parse_json(l)["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .map_or(0, Vec::len)
        })
        .collect();
    assert_eq!(sizes, [100, 100, 50]);
    assert_eq!(parse_json(&lines[2])["Metric249"], 249);
}

#[test]
fn put_metric_data_shape_and_batches() {
    let p = steady_minute();
    let calls = datum::render(&p, &settings(Some("eu-west-1a")));
    assert_eq!(calls.len(), 1);
    let data = calls[0]["MetricData"].as_array().expect("MetricData");
    assert_eq!(calls[0]["Namespace"], "lb/test");
    assert_eq!(data.len(), (12 + 2 + 10 + 2 + 2) * 2 + 4);
    let d = data
        .iter()
        .find(|d| {
            d["MetricName"] == "ProcessedBytes"
                && d["Dimensions"]
                    == serde_json::json!([
                        {"Name": "AvailabilityZone", "Value": "eu-west-1a"},
                        {"Name": "LoadBalancer", "Value": "web"}
                    ])
        })
        .expect("ProcessedBytes of web in the zone");
    assert_eq!(d["Value"], 60_000);
    assert_eq!(d["Unit"], "Bytes");
    assert_eq!(d["StorageResolution"], 60);
    assert_eq!(d["Timestamp"], "2026-11-22T08:40:00.000Z");
    let keys: Vec<&str> = d
        .as_object()
        .map_or(Vec::new(), |o| o.keys().map(String::as_str).collect());
    assert_eq!(
        keys.iter().copied().collect::<HashSet<_>>(),
        HashSet::from([
            "MetricName",
            "Dimensions",
            "Timestamp",
            "Value",
            "Unit",
            "StorageResolution"
        ])
    );

    // 2500 metrics, each under two dimension sets: 5000 datums in five calls.
    let calls = datum::render(&wide_period(2500), &settings(Some("az")));
    let sizes: Vec<usize> = calls
        .iter()
        .map(|c| c["MetricData"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, [1000; 5]);
    let calls = datum::render(&wide_period(1001), &settings(None));
    let sizes: Vec<usize> = calls
        .iter()
        .map(|c| c["MetricData"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, [1000, 1]);
}

#[test]
fn json_for_ctl() {
    let p = steady_minute();
    let v = json::render(&p, &settings(None));
    assert_eq!(v["namespace"], "lb/test");
    assert_eq!(v["period_secs"], 60);
    assert_eq!(v["timestamp"], "2026-11-22T08:40:00.000Z");
    let m = v["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .find(|m| {
            m["name"] == "NewFlowCount"
                && m["dimensions"] == serde_json::json!({"LoadBalancer": "web"})
        })
        .expect("NewFlowCount of web");
    assert_eq!(m["value"], 60);
    assert_eq!(m["unit"], "Count");
}

fn prometheus_samples(page: &str) -> Vec<(String, String, String, Value, f64)> {
    python(PROMETHEUS_CHECK, page)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn prometheus_value(
    samples: &[(String, String, String, Value, f64)],
    name: &str,
    labels: Value,
) -> Option<(String, f64)> {
    samples
        .iter()
        .find(|(_, _, n, l, _)| n == name && *l == labels)
        .map(|(_, kind, _, _, v)| (kind.clone(), *v))
}

#[test]
fn prometheus_page_parses_and_values_round_trip() {
    let mut s: Sample = sample(60, c(5600, 960_000, 100, 8), c(160, 10_240, 110, 0), 129);
    s.unhealthy_routed_flows = Some(17);
    s.targets[0].active_flows = 5;
    // Label values with every character the format escapes.
    let zone = "az \"1\"\\\nb";
    let page = prometheus::render(&s, &settings(Some(zone)));
    assert!(
        page.contains("availability_zone=\"az \\\"1\\\"\\\\\\nb\""),
        "{page}"
    );
    let samples = prometheus_samples(&page);
    let z = |mut v: Value| {
        v["availability_zone"] = zone.into();
        v
    };
    let web = z(serde_json::json!({"load_balancer": "web"}));
    assert_eq!(
        prometheus_value(&samples, "lb_processed_packets_total", web.clone()),
        Some(("counter".to_owned(), 5600.0))
    );
    assert_eq!(
        prometheus_value(&samples, "lb_processed_bytes_total", web.clone()),
        Some(("counter".to_owned(), 960_000.0))
    );
    assert_eq!(
        prometheus_value(&samples, "lb_tcp_client_resets_total", web.clone()),
        Some(("counter".to_owned(), 8.0))
    );
    assert_eq!(
        prometheus_value(&samples, "lb_active_flows", web),
        Some(("gauge".to_owned(), 7.0))
    );
    assert_eq!(
        prometheus_value(
            &samples,
            "lb_healthy_hosts",
            z(serde_json::json!({"load_balancer": "dns", "target_group": "web-servers"}))
        ),
        Some(("gauge".to_owned(), 1.0))
    );
    assert_eq!(
        prometheus_value(
            &samples,
            "lb_target_active_flows",
            z(serde_json::json!({"target_group": "web-servers", "target": "198.18.11.2"}))
        ),
        Some(("gauge".to_owned(), 5.0))
    );
    assert_eq!(
        prometheus_value(
            &samples,
            "lb_dropped_packets_total",
            z(serde_json::json!({"reason": "malformed"}))
        ),
        Some(("counter".to_owned(), 129.0))
    );
    assert_eq!(
        prometheus_value(
            &samples,
            "lb_unhealthy_routing_flows_total",
            z(serde_json::json!({}))
        ),
        Some(("counter".to_owned(), 17.0))
    );
    // No TCP reset series for a UDP VIP.
    assert!(!page.contains("lb_tcp_client_resets_total{load_balancer=\"dns\""));
    // Without a zone there is no zone label at all.
    let page = prometheus::render(&s, &settings(None));
    assert!(!page.contains("availability_zone"));
    prometheus_samples(&page);
}

#[test]
fn prometheus_label_escaping() {
    assert_eq!(prometheus::escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    assert_eq!(prometheus::escape_label("plain"), "plain");
}

#[test]
fn the_emf_check_rejects_what_the_spec_forbids() {
    let fails = |line: &str| {
        let line = line.to_owned();
        std::panic::catch_unwind(move || emf_check(&[line])).is_err()
    };
    let ok = r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"lb","Dimensions":[["LoadBalancer"]],"Metrics":[{"Name":"X","Unit":"Count"}]}]},"LoadBalancer":"web","X":1}"#;
    assert!(!fails(ok));
    // A metric value that is not a root member; a dimension that is not; no timestamp;
    // a string timestamp; an unknown unit; 101 metrics.
    assert!(fails(&ok.replace(r#","X":1"#, "")));
    assert!(fails(&ok.replace(r#""LoadBalancer":"web","#, "")));
    assert!(fails(&ok.replace(r#""Timestamp":1,"#, "")));
    assert!(fails(&ok.replace(r#""Timestamp":1"#, r#""Timestamp":"1""#)));
    assert!(fails(
        &ok.replace(r#""Unit":"Count""#, r#""Unit":"Packets""#)
    ));
    let many: Vec<String> = (0..101).map(|i| format!(r#"{{"Name":"M{i}"}}"#)).collect();
    let values: String = (0..101).map(|i| format!(r#","M{i}":1"#)).collect();
    let wide = format!(
        r#"{{"_aws":{{"Timestamp":1,"CloudWatchMetrics":[{{"Namespace":"lb","Dimensions":[[]],"Metrics":[{}]}}]}}{values}}}"#,
        many.join(",")
    );
    assert!(fails(&wide));
}

/// The fleet's place in every output: the info metric and each VIP's route state on the
/// Prometheus page (parsed by the official parser), `FleetFingerprint` in every EMF
/// document (still valid EMF), `fleet` in the JSON.
#[test]
fn the_fleet_fingerprint_reaches_every_output() {
    let fleet = crate::metrics::Fleet {
        fingerprint: "975d6bb6b95a26cc".into(),
        route_tag: 962_209_484,
        vips: vec![("web".into(), "announced"), ("dns".into(), "standby")],
    };
    let mut s: Sample = sample(60, c(1, 1, 1, 0), c(1, 1, 1, 0), 0);
    s.fleet = Some(fleet.clone());
    let page = prometheus::render(&s, &settings(None));
    let samples = prometheus_samples(&page);
    assert_eq!(
        prometheus_value(
            &samples,
            "lb_fleet_info",
            serde_json::json!({"fingerprint": "975d6bb6b95a26cc", "route_tag": "962209484"})
        ),
        Some(("gauge".into(), 1.0))
    );
    assert_eq!(
        prometheus_value(
            &samples,
            "lb_vip_announce_state",
            serde_json::json!({"load_balancer": "dns"})
        ),
        Some(("gauge".into(), 1.0))
    );
    let mut p = steady_minute();
    p.last.fleet = Some(fleet);
    let lines = emf::render(&p, &settings(None));
    assert_eq!(emf_check(&lines), lines.len());
    assert!(lines
        .iter()
        .all(|l| parse_json(l)["FleetFingerprint"] == "975d6bb6b95a26cc"));
    let v = json::render(&p, &settings(None));
    assert_eq!(v["fleet"]["route_tag"], 962_209_484);
    assert_eq!(v["fleet"]["announce"]["dns"], "standby");
}
