//! Aggregation tables, and every output format checked by an independent parser (EMF by
//! the `jsonschema` crate against the EMF schema, Prometheus by the system python's
//! `prometheus_client`, installed by `cargo xtask setup`).

use std::{
    io::Write as _,
    net::IpAddr,
    process::{Command, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;

mod emf_schema;
mod outputs;
mod sinks;

use super::{
    aggregate::Unit, Aggregator, Metric, Period, Sample, ServiceCounter, TargetSample, VipSample,
};
use crate::config::{MetricsSettings, Protocol};

/// A whole minute (divisible by 60), so periods start at `at(0)`.
const T0: u64 = 1_795_336_800;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0 + secs)
}

fn c(packets: u64, bytes: u64, new_flows: u64, resets: u64) -> ServiceCounter {
    ServiceCounter {
        packets,
        bytes,
        new_flows,
        resets,
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("address")
}

fn vip(name: &str, proto: Protocol, counter: ServiceCounter, active: u64) -> VipSample {
    VipSample {
        name: name.to_owned(),
        target_group: "web-servers".to_owned(),
        proto,
        counter,
        active_flows: active,
    }
}

fn target(group: &str, address: &str, state: &str, counter: ServiceCounter) -> TargetSample {
    TargetSample {
        group: group.to_owned(),
        address: ip(address),
        state: state.to_owned(),
        counter,
        active_flows: 0,
        fail_open: false,
    }
}

/// VIPs "web" (tcp) and "dns" (udp) of group "web-servers" with the given cumulative
/// counters, one healthy target carrying web's traffic, and drops.
fn sample(t: u64, web: ServiceCounter, dns: ServiceCounter, malformed: u64) -> Sample {
    Sample {
        fleet: None,
        at: at(t),
        vips: vec![
            vip("web", Protocol::Tcp, web, 7),
            vip("dns", Protocol::Udp, dns, 3),
        ],
        targets: vec![target("web-servers", "198.18.11.2", "healthy", web)],
        drops: vec![
            ("malformed".to_owned(), malformed),
            ("no_backend".to_owned(), 0),
        ],
        unhealthy_routed_flows: Some(0),
    }
}

/// Pushes `samples`, asserting that only the last completes a period; that period.
fn run(agg: &mut Aggregator, samples: impl IntoIterator<Item = Sample>) -> Period {
    let samples: Vec<Sample> = samples.into_iter().collect();
    let n = samples.len();
    let mut out = None;
    for (i, s) in samples.into_iter().enumerate() {
        let at = s.at;
        let p = agg.push(s);
        if i + 1 < n {
            assert!(p.is_none(), "a period completed early, at {at:?}");
        } else {
            out = p;
        }
    }
    out.expect("the last sample completes a period")
}

fn lb(p: &Period, name: &str, vip: &str) -> f64 {
    p.value(name, &[("LoadBalancer", vip)])
        .unwrap_or_else(|| panic!("no {name} for {vip}: {:#?}", p.metrics))
}

fn settings(zone: Option<&str>) -> MetricsSettings {
    MetricsSettings {
        namespace: "lb/test".to_owned(),
        availability_zone: zone.map(str::to_owned),
        ..MetricsSettings::default()
    }
}

/// A minute of steady traffic on web (10 packets, 1000 bytes, 1 new flow, and every
/// tenth second a reset, per second) after a baseline with history.
fn steady_minute() -> Period {
    let mut agg = Aggregator::new(Duration::from_secs(60));
    run(
        &mut agg,
        (0..=60).map(|t| {
            sample(
                t,
                c(5000 + 10 * t, 900_000 + 1000 * t, 40 + t, 2 + t / 10),
                c(100 + t, 6400 + 64 * t, 50 + t, 0),
                9 + 2 * t,
            )
        }),
    )
}

// ---------------------------------------------------------------------------------------
// Aggregation
// ---------------------------------------------------------------------------------------

#[test]
fn deltas_of_cumulative_counters() {
    let p = steady_minute();
    assert_eq!(p.start, at(0));
    assert_eq!(p.length, Duration::from_secs(60));
    assert!(!p.high_resolution());
    assert_eq!(lb(&p, "ProcessedPackets", "web"), 600.0);
    assert_eq!(lb(&p, "ProcessedBytes", "web"), 60_000.0);
    assert_eq!(lb(&p, "ProcessedBytes_TCP", "web"), 60_000.0);
    assert_eq!(lb(&p, "NewFlowCount", "web"), 60.0);
    assert_eq!(lb(&p, "NewFlowCount_TCP", "web"), 60.0);
    assert_eq!(lb(&p, "TCP_Client_Reset_Count", "web"), 6.0);
    assert_eq!(lb(&p, "TCP_ELB_Reset_Count", "web"), 0.0);
    assert_eq!(lb(&p, "ProcessedPackets", "dns"), 60.0);
    assert_eq!(lb(&p, "ProcessedBytes_UDP", "dns"), 3840.0);
    assert_eq!(lb(&p, "NewFlowCount_UDP", "dns"), 60.0);
    // Protocol-specific metrics only for the VIP's own protocol; TCP resets only for TCP.
    assert_eq!(
        p.value("ProcessedBytes_UDP", &[("LoadBalancer", "web")]),
        None
    );
    assert_eq!(
        p.value("TCP_Client_Reset_Count", &[("LoadBalancer", "dns")]),
        None
    );
    assert_eq!(
        p.value("DroppedPackets", &[("Reason", "malformed")]),
        Some(120.0)
    );
    assert_eq!(
        p.value("DroppedPackets", &[("Reason", "no_backend")]),
        Some(0.0)
    );
    let target = [("Target", "198.18.11.2"), ("TargetGroup", "web-servers")];
    assert_eq!(p.value("ProcessedPackets", &target), Some(600.0));
    assert_eq!(p.value("NewFlowCount", &target), Some(60.0));
    assert_eq!(p.value("ProcessedBytes", &target), Some(60_000.0));
    // Units: Bytes for bytes, Count for everything else (the peaks included).
    for m in &p.metrics {
        let bytes = m.name.starts_with("ProcessedBytes");
        assert_eq!(m.unit == Unit::Bytes, bytes, "{}", m.name);
    }
}

#[test]
fn a_counter_that_goes_down_was_reset_and_its_value_is_the_delta() {
    let mut agg = Aggregator::new(Duration::from_secs(60));
    let web = |t: u64| match t {
        0 => 1000,
        1..=10 => 1000 + 100 * t, // 2000 at t = 10
        // The data plane was reloaded between t = 10 and 11: 50 packets since.
        _ => 50 + 30 * (t - 11),
    };
    let p = run(
        &mut agg,
        (0..=60).map(|t| sample(t, c(web(t), 0, 0, 0), c(0, 0, 0, 0), 0)),
    );
    // 1000 before the reset, 50 at it, 30 a second for the 49 seconds after.
    assert_eq!(
        lb(&p, "ProcessedPackets", "web"),
        (1000 + 50 + 30 * 49) as f64
    );
}

#[test]
fn peaks_are_the_highest_ten_second_rate() {
    let mut agg = Aggregator::new(Duration::from_secs(60));
    // Per-second packets: 10, except 100 in t = 21..=30 (the third sub-window), and one
    // 500-packet second at t = 45 (its window averages (9 × 10 + 500) / 10 = 59).
    let rate = |t: u64| match t {
        21..=30 => 100,
        45 => 500,
        _ => 10,
    };
    let mut total = 0;
    let samples: Vec<Sample> = (0..=60)
        .map(|t| {
            if t > 0 {
                total += rate(t);
            }
            sample(t, c(total, 64 * total, 0, 0), c(0, 0, 0, 0), 0)
        })
        .collect();
    let p = run(&mut agg, samples);
    assert_eq!(lb(&p, "PeakPacketsPerSecond", "web"), 100.0);
    assert_eq!(lb(&p, "PeakBytesPerSecond", "web"), 6400.0);
    assert_eq!(lb(&p, "PeakPacketsPerSecond", "dns"), 0.0);
    // The next period starts from nothing: its peak is its own.
    let p2 = run(
        &mut agg,
        (61..=120).map(|t| {
            total += 1;
            sample(t, c(total, 64 * total, 0, 0), c(0, 0, 0, 0), 0)
        }),
    );
    assert_eq!(p2.start, at(60));
    assert_eq!(lb(&p2, "PeakPacketsPerSecond", "web"), 1.0);
}

#[test]
fn gauges_are_end_values_and_host_counts_follow_states() {
    let mut agg = Aggregator::new(Duration::from_secs(60));
    let zero = c(0, 0, 0, 0);
    let with_states = |t: u64, active: u64| {
        let mut s = sample(t, zero, zero, 0);
        s.vips[0].active_flows = active;
        s.targets = [
            ("198.18.11.2", "healthy"),
            ("198.18.12.2", "healthy"),
            ("198.18.13.2", "initial"),
            ("198.18.14.2", "unhealthy"),
            ("198.18.15.2", "unhealthy.draining"),
            ("198.18.16.2", "draining"),
            ("198.18.17.2", "unused"),
        ]
        .iter()
        .map(|(a, st)| TargetSample {
            active_flows: 4,
            ..target("web-servers", a, st, zero)
        })
        .chain([target("other", "198.18.30.2", "healthy", zero)])
        .collect();
        s
    };
    let p = run(&mut agg, (0..=60).map(|t| with_states(t, 100 + t)));
    assert_eq!(lb(&p, "ActiveFlowCount", "web"), 160.0);
    assert_eq!(lb(&p, "ActiveFlowCount_TCP", "web"), 160.0);
    assert_eq!(lb(&p, "ActiveFlowCount_UDP", "dns"), 3.0);
    let tg = |vip| [("LoadBalancer", vip), ("TargetGroup", "web-servers")];
    for vip in ["web", "dns"] {
        assert_eq!(p.value("HealthyHostCount", &tg(vip)), Some(2.0));
        assert_eq!(p.value("UnHealthyHostCount", &tg(vip)), Some(3.0));
    }
    assert_eq!(
        p.value(
            "ActiveFlowCount",
            &[("Target", "198.18.16.2"), ("TargetGroup", "web-servers")]
        ),
        Some(4.0)
    );
    assert_eq!(super::host_health("healthy"), Some(true));
    assert_eq!(super::host_health("unhealthy.draining"), Some(false));
    assert_eq!(super::host_health("unused"), None);
}

#[test]
fn the_first_sample_is_a_baseline_and_periods_align_to_the_minute() {
    let mut agg = Aggregator::new(Duration::from_secs(60));
    // Starting at :30 with a long history: the first period covers 30 s only.
    let p = run(
        &mut agg,
        (30..=60).map(|t| sample(t, c(1_000_000 + t, 0, 0, 0), c(0, 0, 0, 0), 0)),
    );
    assert_eq!(p.start, at(0));
    assert_eq!(lb(&p, "ProcessedPackets", "web"), 30.0);
    // A VIP added mid-period starts from a baseline too.
    let mut s = sample(61, c(1_000_061, 0, 0, 0), c(0, 0, 0, 0), 0);
    s.vips.push(vip("new", Protocol::Udp, c(500, 0, 0, 0), 0));
    assert!(agg.push(s).is_none());
    let p = run(
        &mut agg,
        (62..=120).map(|t| {
            let mut s = sample(t, c(1_000_000 + t, 0, 0, 0), c(0, 0, 0, 0), 0);
            s.vips
                .push(vip("new", Protocol::Udp, c(500 + t - 61, 0, 0, 0), 0));
            s
        }),
    );
    assert_eq!(p.start, at(60));
    assert_eq!(lb(&p, "ProcessedPackets", "web"), 60.0);
    assert_eq!(lb(&p, "ProcessedPackets", "new"), 59.0);
}

#[test]
fn new_flows_while_failing_open_are_unhealthy_routing() {
    let mut agg = Aggregator::new(Duration::from_secs(60));
    let p = run(
        &mut agg,
        (0..=60).map(|t| {
            let mut s = sample(t, c(0, 0, 2 * t, 0), c(0, 0, t, 0), 0);
            // The group fails open from t = 41: 20 seconds of web's and dns's new flows.
            for target in &mut s.targets {
                target.state = if t > 40 { "unhealthy" } else { "healthy" }.to_owned();
                target.fail_open = t > 40;
            }
            s
        }),
    );
    assert_eq!(lb(&p, "UnhealthyRoutingFlowCount", "web"), 40.0);
    assert_eq!(lb(&p, "UnhealthyRoutingFlowCount", "dns"), 20.0);
    assert_eq!(lb(&p, "NewFlowCount", "web"), 120.0);
}

#[test]
fn a_one_second_period_is_high_resolution() {
    let mut agg = Aggregator::new(Duration::from_secs(1));
    assert!(agg
        .push(sample(0, c(0, 0, 0, 0), c(0, 0, 0, 0), 0))
        .is_none());
    for t in 1..=3 {
        let total = 100 * t * t;
        let p = agg
            .push(sample(t, c(total, total, 0, 0), c(0, 0, 0, 0), 0))
            .expect("every second completes a period");
        assert!(p.high_resolution());
        assert_eq!(p.start, at(t - 1));
        let per_second = (100 * (2 * t - 1)) as f64;
        assert_eq!(lb(&p, "ProcessedPackets", "web"), per_second);
        // A 1 s period has 1 s sub-windows: the peak is the second's rate.
        assert_eq!(lb(&p, "PeakPacketsPerSecond", "web"), per_second);
    }
}

// ---------------------------------------------------------------------------------------
// The independent checkers
// ---------------------------------------------------------------------------------------

/// The system python (Debian's, where `cargo xtask setup` installs the modules; a
/// per-user python on PATH would not have them).
const PYTHON: &str = "/usr/bin/python3";
/// Exit status of the scripts below when a module is missing.
const MISSING_MODULE: i32 = 77;

/// Runs `script` with `input` on stdin; its stdout. Fails (never skips) when python or a
/// module it imports is missing.
fn python(script: &str, input: &str) -> String {
    let setup = "run `cargo xtask setup` (it installs python3-prometheus-client, which \
                 these tests check the Prometheus page with)";
    let mut child = Command::new(PYTHON)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {PYTHON} ({e}): {setup}"));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write to python");
    drop(stdin);
    let out = child.wait_with_output().expect("python output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(MISSING_MODULE) {
        panic!("{PYTHON} lacks a module ({}): {setup}", stderr.trim());
    }
    assert!(
        out.status.success(),
        "the python check failed:\n{stderr}\n--- input ---\n{input}"
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A period with `n` distinct metrics under one dimension combination.
fn wide_period(n: usize) -> Period {
    let names: Vec<&'static str> = (0..n)
        .map(|i| &*Box::leak(format!("Metric{i}").into_boxed_str()))
        .collect();
    Period {
        start: at(0),
        length: Duration::from_secs(60),
        metrics: names
            .into_iter()
            .enumerate()
            .map(|(i, name)| Metric {
                name,
                unit: Unit::Count,
                dimensions: vec![("LoadBalancer", "web".to_owned())],
                zonal: true,
                value: i as f64,
            })
            .collect(),
        last: sample(60, c(0, 0, 0, 0), c(0, 0, 0, 0), 0),
    }
}

fn parse_json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}
