//! The `fleet` section: a hard host failure under long-lived connections, on the fleet
//! topology of the fleet tests (a BIRD 2 router with ECMP, three lb hosts each running
//! lb-agent and BIRD 2 with BFD, three backends).
//!
//! 300 connections (100 with `--quick`) each ask their backend every 100 ms. The
//! baseline is the same connections' longest pause in a quiet window of the same run;
//! then one host's uplink is pulled. Figures: `failover_gap_ms` (the longest pause any
//! connection saw from the failure on), `survived_pct` (connections that neither reset
//! nor changed backend), `detection_ms` (until the router's route no longer has the
//! host), the connections that moved host; then the host's return (`return_ms`, moved
//! back, broken).

use std::{net::IpAddr, time::Duration};

use serde_json::{json, Value};

use super::Progress;
use crate::fleet::{Fleet, VIP4};

const EVERY: Duration = Duration::from_millis(100);

pub fn run(quick: bool, progress: Progress<'_>) -> anyhow::Result<Value> {
    let connections = if quick { 100 } else { 300 };
    progress("building the router, 3 lb hosts and 3 backends");
    let fleet = Fleet::new("lbbench-fleet")?;
    let vip = IpAddr::V4(VIP4);
    progress(&format!(
        "{connections} long-lived connections, a request every {} ms each",
        EVERY.as_millis()
    ));
    let workload = fleet.long_lived(vip, connections, EVERY)?;
    // A second for every connection's first requests, then a quiet window as long as
    // the failure's.
    std::thread::sleep(Duration::from_secs(1));
    let quiet_from = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    let baseline = workload.report_since(quiet_from);
    progress("pulling h0's uplink");
    let failure = fleet.hard_failure(0, &workload, Duration::from_secs(3))?;
    progress("plugging it back");
    let back = fleet.host_return(0, &[&workload], Duration::from_secs(3))?;
    let total = workload.stop();
    let c = &failure.connections;
    // Gaps no longer than two request intervals are not recorded: report the interval
    // pair as the floor rather than zero.
    let floor = |d: Duration| d.max(EVERY * 2).as_secs_f64() * 1000.0;
    Ok(json!({
        "failover_gap_ms": floor(c.longest_gap),
        "survived_pct": c.survived_pct(),
        "baseline_gap_ms": floor(baseline.longest_gap),
        "detection_ms": failure.detection.as_secs_f64() * 1000.0,
        "connections": connections,
        "moved": failure.moved,
        "broken": c.broken.len(),
        "return_ms": back.convergence.as_secs_f64() * 1000.0,
        "moved_back": back.moved,
        "moved_back_broken": back.moved_broken,
        "detail": {
            "requests": total.replies,
            "intact": total.intact,
            "broken": c.broken,
        },
    }))
}
