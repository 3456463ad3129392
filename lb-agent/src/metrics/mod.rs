//! Metrics: the AWS Network Load Balancer's CloudWatch metrics, computed from the data
//! plane's cumulative counters, and the formats and sinks they are published through.
//!
//! Pure and aya-free: every second the agent builds a [`Sample`] (cumulative counters and
//! current gauges, read through the dataplane module) and pushes it into an
//! [`Aggregator`], which yields a [`Period`] of CloudWatch values whenever a period
//! completes. Renderers turn a period into Embedded Metric Format lines ([`emf`]),
//! PutMetricData requests ([`datum`]) or JSON for `ctl metrics` ([`json`]); the Prometheus
//! text format ([`prometheus`]) is rendered from a sample, since Prometheus wants the
//! cumulative counters themselves. [`sink`] delivers EMF lines without ever blocking the
//! agent, and [`prometheus::Server`] serves the latest page.
//!
//! Each VIP is what an NLB calls a load balancer (dimension `LoadBalancer` = the VIP's
//! name), with exactly one protocol and one target group.

pub mod aggregate;
pub mod datum;
pub mod emf;
pub mod json;
pub mod prometheus;
pub mod sink;
#[cfg(test)]
mod tests;
pub mod time;

use std::{net::IpAddr, time::SystemTime};

pub use aggregate::{host_health, Aggregator, Metric, Period, Unit};
pub use lb_common::ServiceCounter;

use crate::config::Protocol;

/// What the data plane and the lifecycle say at one instant. Counters are cumulative
/// since the data plane was loaded (they survive agent restarts); gauges are current.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// When the counters were read.
    pub at: SystemTime,
    pub vips: Vec<VipSample>,
    pub targets: Vec<TargetSample>,
    /// Cumulative dropped packets by `DropReason::name`, host-wide.
    pub drops: Vec<(String, u64)>,
    /// Cumulative new flows sent to unhealthy targets only because their group failed
    /// open, host-wide, when the data plane knows it. Published in Prometheus and JSON as
    /// is; the per-VIP `UnhealthyRoutingFlowCount` is derived from
    /// [`TargetSample::fail_open`] instead (see [`Aggregator`]).
    pub unhealthy_routed_flows: Option<u64>,
    /// This host's place in its fleet, when the agent knows it.
    pub fleet: Option<Fleet>,
}

/// What a fleet's monitoring compares across hosts: the fleet fingerprint (equal on every
/// host behind one ECMP group), and what each VIP's address has in the announce table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fleet {
    /// 16 hex digits.
    pub fingerprint: String,
    pub route_tag: u32,
    /// VIP name and its route state (`announced`, `standby`, `withdrawn`), in
    /// configuration order.
    pub vips: Vec<(String, &'static str)>,
}

/// One VIP (an NLB load balancer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipSample {
    pub name: String,
    pub target_group: String,
    pub proto: Protocol,
    /// Cumulative; `resets` counts TCP RSTs from clients.
    pub counter: ServiceCounter,
    /// Flow-table entries of this VIP now (all targets).
    pub active_flows: u64,
}

/// One target of a target group (one data-plane backend).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSample {
    pub group: String,
    pub address: IpAddr,
    /// NLB target state: `initial`, `healthy`, `unhealthy`, `unhealthy.draining`,
    /// `draining` or `unused` (see [`host_health`]).
    pub state: String,
    /// Cumulative, summed over the VIPs the group serves (`resets` is unused).
    pub counter: ServiceCounter,
    /// Flow-table entries pointing at this target now.
    pub active_flows: u64,
    /// Whether the target's group is failing open now (every target unhealthy, so
    /// traffic goes to all of them).
    pub fail_open: bool,
}
