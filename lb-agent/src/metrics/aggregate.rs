//! Per-second cumulative samples in, per-period CloudWatch values out.
//!
//! Periods are aligned to multiples of their length since the Unix epoch (whole minutes
//! for 60 s), as CloudWatch buckets them; the first period after start is partial. The
//! first sample is only a baseline: the counters are cumulative since the data plane was
//! loaded, and the history before the agent started is not this period's traffic.
//!
//! Counters become per-period deltas. A counter that went *down* was reset (the data
//! plane was unloaded and loaded afresh, `lb-agent down` then `up`, between two samples):
//! its new value is all traffic since the reset, so it is taken as the delta. A VIP,
//! target or drop reason seen for the first time is a baseline too (delta 0 for that
//! second), for the same reason as the first sample.
//!
//! A sample's delta covers the second before it, so it is counted in the period that
//! second belongs to: the sample at or just after a period's end closes that period, and
//! the gauges of that sample are its end values.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use lb_common::ServiceCounter;

use super::{Sample, TargetSample, VipSample};
use crate::config::Protocol;

/// CloudWatch units used here (NLB uses `Count` for the `Peak*PerSecond` metrics too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Bytes => "Bytes",
        }
    }
}

/// One value of a period.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// NLB's metric name (or `DroppedPackets`, lb's own).
    pub name: &'static str,
    pub unit: Unit,
    /// The dimensions other than `AvailabilityZone`, in CloudWatch's (alphabetical) order.
    pub dimensions: Vec<(&'static str, String)>,
    /// Whether the metric is also published with `AvailabilityZone` added to
    /// `dimensions`, when a zone is configured.
    pub zonal: bool,
    pub value: f64,
}

impl Metric {
    /// The dimension sets to publish the value under: `dimensions`, and `dimensions` with
    /// `AvailabilityZone` (in alphabetical position) when zonal and a zone is given.
    pub fn dimension_sets<'a>(
        &'a self,
        zone: Option<&'a str>,
    ) -> Vec<Vec<(&'static str, &'a str)>> {
        let base: Vec<(&'static str, &str)> = self
            .dimensions
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        let mut sets = vec![base.clone()];
        if let (true, Some(zone)) = (self.zonal, zone) {
            let mut zonal = base;
            zonal.push(("AvailabilityZone", zone));
            zonal.sort_by_key(|(k, _)| *k);
            sets.push(zonal);
        }
        sets
    }
}

/// The values of one completed period.
#[derive(Clone, Debug, PartialEq)]
pub struct Period {
    /// The period's start (the CloudWatch timestamp of its values).
    pub start: SystemTime,
    /// The configured period (1 s = high resolution).
    pub length: Duration,
    pub metrics: Vec<Metric>,
    /// The sample that closed the period (cumulative counters and end gauges).
    pub last: Sample,
}

impl Period {
    /// Whether the values are high resolution (CloudWatch `StorageResolution` 1).
    pub fn high_resolution(&self) -> bool {
        self.length < Duration::from_secs(60)
    }

    /// The value of the metric `name` with exactly `dimensions` (tests, `ctl`).
    pub fn value(&self, name: &str, dimensions: &[(&str, &str)]) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| {
                m.name == name
                    && m.dimensions.len() == dimensions.len()
                    && m.dimensions
                        .iter()
                        .zip(dimensions)
                        .all(|((k, v), (k2, v2))| k == k2 && v == v2)
            })
            .map(|m| m.value)
    }
}

/// How a target in NLB state `state` counts: `Some(true)` healthy (`healthy`),
/// `Some(false)` unhealthy (`initial`, `unhealthy`, `unhealthy.draining`: registered
/// targets that get no new flows because of their health, as NLB counts them), `None`
/// neither (`draining` and `unused`: deregistered or not serving, so not hosts of the
/// group; unknown states likewise).
pub fn host_health(state: &str) -> Option<bool> {
    match state {
        "healthy" => Some(true),
        "initial" | "unhealthy" | "unhealthy.draining" => Some(false),
        _ => None,
    }
}

/// NLB's peak metrics are the highest rate over 10-second sub-windows of the period.
const PEAK_WINDOW: Duration = Duration::from_secs(10);

/// Accumulates samples and yields a [`Period`] whenever one completes.
#[derive(Debug)]
pub struct Aggregator {
    period: Duration,
    /// The sub-window of the peak rates: 10 s, or the period when that is shorter.
    window: Duration,
    prev: Option<Sample>,
    /// Start of the current period, of the current sub-window.
    start: SystemTime,
    window_start: SystemTime,
    vips: HashMap<String, VipTotals>,
    targets: HashMap<(String, IpAddr), ServiceCounter>,
    drops: HashMap<String, u64>,
}

#[derive(Clone, Copy, Debug, Default)]
struct VipTotals {
    counts: ServiceCounter,
    /// New flows while the VIP's group was failing open.
    unhealthy_routed: u64,
    window_packets: u64,
    window_bytes: u64,
    peak_packets: f64,
    peak_bytes: f64,
}

impl Aggregator {
    /// An aggregator for periods of `period` (60 s standard, 1 s high resolution; zero
    /// is taken as 1 s).
    pub fn new(period: Duration) -> Self {
        let period = period.max(Duration::from_secs(1));
        Self {
            period,
            window: PEAK_WINDOW.min(period),
            prev: None,
            start: UNIX_EPOCH,
            window_start: UNIX_EPOCH,
            vips: HashMap::new(),
            targets: HashMap::new(),
            drops: HashMap::new(),
        }
    }

    /// The configured period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Adds the sample taken at `sample.at` (about once a second, in time order); the
    /// completed period, if this sample completes one.
    pub fn push(&mut self, sample: Sample) -> Option<Period> {
        let Some(prev) = self.prev.take() else {
            self.start = align(sample.at, self.period);
            self.window_start = align(sample.at, self.window);
            self.prev = Some(sample);
            return None;
        };
        // A clock stepped backwards: restart the alignment so the period still ends
        // about `period` from now, keeping what was accumulated.
        if sample.at < self.start {
            self.start = align(sample.at, self.period);
            self.window_start = align(sample.at, self.window);
        }
        self.accumulate(&prev, &sample);
        if sample.at >= self.window_start + self.window {
            self.close_window();
            self.window_start = align(sample.at, self.window);
        }
        let done = if sample.at >= self.start + self.period {
            let period = self.finish(&sample);
            self.start = align(sample.at, self.period);
            Some(period)
        } else {
            None
        };
        self.prev = Some(sample);
        done
    }

    fn accumulate(&mut self, prev: &Sample, now: &Sample) {
        // Indexed once per sample: with thousands of targets a search per target would
        // cost millions of comparisons a second.
        let failing_open: HashSet<&str> = now
            .targets
            .iter()
            .filter(|t| t.fail_open)
            .map(|t| t.group.as_str())
            .collect();
        let before_targets: HashMap<(&str, IpAddr), &TargetSample> = prev
            .targets
            .iter()
            .map(|t| ((t.group.as_str(), t.address), t))
            .collect();
        for vip in &now.vips {
            let Some(before) = prev.vips.iter().find(|v| v.name == vip.name) else {
                continue;
            };
            let d = counter_delta(&before.counter, &vip.counter);
            let t = self.vips.entry(vip.name.clone()).or_default();
            add(&mut t.counts, &d);
            if failing_open.contains(vip.target_group.as_str()) {
                t.unhealthy_routed += d.new_flows;
            }
            t.window_packets += d.packets;
            t.window_bytes += d.bytes;
        }
        for target in &now.targets {
            let Some(before) = before_targets.get(&(target.group.as_str(), target.address)) else {
                continue;
            };
            let d = counter_delta(&before.counter, &target.counter);
            let key = (target.group.clone(), target.address);
            add(self.targets.entry(key).or_default(), &d);
        }
        for (reason, packets) in &now.drops {
            let Some((_, before)) = prev.drops.iter().find(|(r, _)| r == reason) else {
                continue;
            };
            *self.drops.entry(reason.clone()).or_default() += delta(*before, *packets);
        }
    }

    fn close_window(&mut self) {
        let secs = self.window.as_secs_f64();
        for t in self.vips.values_mut() {
            t.peak_packets = t.peak_packets.max(t.window_packets as f64 / secs);
            t.peak_bytes = t.peak_bytes.max(t.window_bytes as f64 / secs);
            t.window_packets = 0;
            t.window_bytes = 0;
        }
    }

    /// The period's values (for the VIPs, targets and reasons of `last`: one removed
    /// during the period is not reported), and a fresh start for the next one.
    fn finish(&mut self, last: &Sample) -> Period {
        // A sub-window still open (samples missed at the boundary) counts as it stands.
        if self.vips.values().any(|t| t.window_packets > 0) {
            self.close_window();
        }
        let vips = std::mem::take(&mut self.vips);
        let targets = std::mem::take(&mut self.targets);
        let drops = std::mem::take(&mut self.drops);
        let mut metrics = Vec::new();

        for vip in &last.vips {
            let t = vips.get(&vip.name).copied().unwrap_or_default();
            vip_metrics(&mut metrics, vip, &t, &last.targets);
        }
        // Per target, by group and address: a group may serve several VIPs and the data
        // plane counts per (group, target), so a LoadBalancer dimension here would
        // repeat one figure under each VIP.
        for target in &last.targets {
            let c = targets
                .get(&(target.group.clone(), target.address))
                .copied()
                .unwrap_or_default();
            let dims = vec![
                ("Target", target.address.to_string()),
                ("TargetGroup", target.group.clone()),
            ];
            push_all(
                &mut metrics,
                &dims,
                false,
                vec![
                    count("ActiveFlowCount", target.active_flows),
                    count("NewFlowCount", c.new_flows),
                    bytes("ProcessedBytes", c.bytes),
                    count("ProcessedPackets", c.packets),
                ],
            );
        }
        for (reason, _) in &last.drops {
            let dims = vec![("Reason", reason.clone())];
            let value = drops.get(reason).copied().unwrap_or(0);
            push_all(
                &mut metrics,
                &dims,
                true,
                vec![count("DroppedPackets", value)],
            );
        }
        Period {
            start: self.start,
            length: self.period,
            metrics,
            last: last.clone(),
        }
    }
}

/// A VIP's metrics for the period: per load balancer, and per load balancer and target
/// group (the host counts).
fn vip_metrics(
    metrics: &mut Vec<Metric>,
    vip: &VipSample,
    t: &VipTotals,
    targets: &[TargetSample],
) {
    let (active, new, processed) = match vip.proto {
        Protocol::Tcp => (
            "ActiveFlowCount_TCP",
            "NewFlowCount_TCP",
            "ProcessedBytes_TCP",
        ),
        Protocol::Udp => (
            "ActiveFlowCount_UDP",
            "NewFlowCount_UDP",
            "ProcessedBytes_UDP",
        ),
    };
    let mut values = vec![
        count("ActiveFlowCount", vip.active_flows),
        count(active, vip.active_flows),
        count("NewFlowCount", t.counts.new_flows),
        count(new, t.counts.new_flows),
        bytes("ProcessedBytes", t.counts.bytes),
        bytes(processed, t.counts.bytes),
        count("ProcessedPackets", t.counts.packets),
        ("PeakPacketsPerSecond", Unit::Count, t.peak_packets),
        ("PeakBytesPerSecond", Unit::Count, t.peak_bytes),
        count("UnhealthyRoutingFlowCount", t.unhealthy_routed),
    ];
    if vip.proto == Protocol::Tcp {
        values.push(count("TCP_Client_Reset_Count", t.counts.resets));
        // lb never sends a reset of its own: a packet it cannot place is dropped
        // and counted, so this is always 0 (published for dashboards built for
        // NLB).
        values.push(count("TCP_ELB_Reset_Count", 0));
    }
    let lb = vec![("LoadBalancer", vip.name.clone())];
    push_all(metrics, &lb, true, values);

    let (healthy, unhealthy) = health_counts(targets, &vip.target_group);
    let tg = vec![
        ("LoadBalancer", vip.name.clone()),
        ("TargetGroup", vip.target_group.clone()),
    ];
    push_all(
        metrics,
        &tg,
        true,
        vec![
            count("HealthyHostCount", healthy),
            count("UnHealthyHostCount", unhealthy),
        ],
    );
}

/// A count metric.
fn count(name: &'static str, value: u64) -> (&'static str, Unit, f64) {
    (name, Unit::Count, value as f64)
}

/// A bytes metric.
fn bytes(name: &'static str, value: u64) -> (&'static str, Unit, f64) {
    (name, Unit::Bytes, value as f64)
}

/// Healthy and unhealthy targets of `group` (see [`host_health`]).
fn health_counts(targets: &[TargetSample], group: &str) -> (u64, u64) {
    let mut counts = (0, 0);
    for t in targets.iter().filter(|t| t.group == group) {
        match host_health(&t.state) {
            Some(true) => counts.0 += 1,
            Some(false) => counts.1 += 1,
            None => {}
        }
    }
    counts
}

fn push_all(
    metrics: &mut Vec<Metric>,
    dimensions: &[(&'static str, String)],
    zonal: bool,
    values: Vec<(&'static str, Unit, f64)>,
) {
    for (name, unit, value) in values {
        metrics.push(Metric {
            name,
            unit,
            dimensions: dimensions.to_vec(),
            zonal,
            value,
        });
    }
}

/// `now - before`, or `now` when the counter went down (it was reset, see the module
/// documentation).
fn delta(before: u64, now: u64) -> u64 {
    now.checked_sub(before).unwrap_or(now)
}

fn counter_delta(before: &ServiceCounter, now: &ServiceCounter) -> ServiceCounter {
    ServiceCounter {
        packets: delta(before.packets, now.packets),
        bytes: delta(before.bytes, now.bytes),
        new_flows: delta(before.new_flows, now.new_flows),
        resets: delta(before.resets, now.resets),
    }
}

fn add(total: &mut ServiceCounter, d: &ServiceCounter) {
    total.packets = total.packets.saturating_add(d.packets);
    total.bytes = total.bytes.saturating_add(d.bytes);
    total.new_flows = total.new_flows.saturating_add(d.new_flows);
    total.resets = total.resets.saturating_add(d.resets);
}

/// The start of the `len`-long slot (counted from the Unix epoch) that holds `at`.
fn align(at: SystemTime, len: Duration) -> SystemTime {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let len_ns = len.as_nanos().max(1);
    let slots = since.as_nanos() / len_ns;
    let start_ns = slots * len_ns;
    let secs = u64::try_from(start_ns / 1_000_000_000).unwrap_or(u64::MAX);
    // Below 10^9, so it fits.
    let nanos = u32::try_from(start_ns % 1_000_000_000).unwrap_or(0);
    UNIX_EPOCH + Duration::new(secs, nanos)
}
