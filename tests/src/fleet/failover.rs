//! A host's hard failure and its return under long-lived connections, measured: how long
//! the router takes to see it, how many flows it moves, and what the connections saw.
//! Fleet check 3 and 4 and the bench's `fleet` section run these.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{workload::LongLived, Fleet, HOSTS, LINE_PORT, VIP4};
use crate::fleet::workload::LongLivedReport;

/// What [`Fleet::hard_failure`] measured.
#[derive(Clone, Debug)]
pub struct FailureReport {
    /// The host that failed.
    pub host: usize,
    /// From the uplink going down to the router's route without the host.
    pub detection: Duration,
    /// Connections the router sent to the failed host before, now on the others.
    pub moved: usize,
    /// The connections, from the failure on: breaks and the longest gap.
    pub connections: LongLivedReport,
}

/// What [`Fleet::host_return`] measured.
#[derive(Clone, Debug)]
pub struct ReturnReport {
    pub host: usize,
    /// From the uplink coming back to the router's route with the host again (BGP
    /// session, BFD, then the host's health checks passing).
    pub convergence: Duration,
    /// Connections the router moved onto the returning host.
    pub moved: usize,
    /// Of those, the ones that broke (from the return on).
    pub moved_broken: usize,
    /// All connections of all the workloads, from the return on.
    pub connections: LongLivedReport,
}

impl Fleet {
    /// The host each of `workload`'s connections (to [`VIP4`]'s line port) takes now.
    pub fn workload_hosts(&self, workload: &LongLived) -> anyhow::Result<Vec<Option<usize>>> {
        let sports: Vec<u16> = workload.flows().iter().map(|f| f.0).collect();
        self.ecmp_hosts(IpAddr::V4(VIP4), LINE_PORT, &sports)
    }

    /// Takes `host`'s uplink down while `workload` (connections to [`VIP4`]'s line
    /// port) runs, waits until the router has dropped the host and then `settle` more,
    /// and reports. The host stays down.
    pub fn hard_failure(
        &self,
        host: usize,
        workload: &LongLived,
        settle: Duration,
    ) -> anyhow::Result<FailureReport> {
        let before = self.workload_hosts(workload)?;
        let others: Vec<usize> = (0..HOSTS).filter(|h| *h != host).collect();
        let at = Instant::now();
        self.set_uplink(host, false)?;
        let detection = self
            .wait_router_hosts(IpAddr::V4(VIP4), &others, Duration::from_secs(10))
            .context("the router never dropped the failed host")?;
        std::thread::sleep(settle);
        let after = self.workload_hosts(workload)?;
        let moved = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| **b == Some(host) && **a != Some(host))
            .count();
        Ok(FailureReport {
            host,
            detection,
            moved,
            connections: workload.report_since(at),
        })
    }

    /// Brings `host`'s uplink back while `workloads` run, waits until the router uses
    /// the host again and then `settle` more, and reports (the workloads' figures
    /// together).
    pub fn host_return(
        &self,
        host: usize,
        workloads: &[&LongLived],
        settle: Duration,
    ) -> anyhow::Result<ReturnReport> {
        let before: Vec<Vec<Option<usize>>> = workloads
            .iter()
            .map(|w| self.workload_hosts(w))
            .collect::<Result<_, _>>()?;
        let at = Instant::now();
        self.set_uplink(host, true)?;
        let all: Vec<usize> = (0..HOSTS).collect();
        let convergence = self
            .wait_router_hosts(IpAddr::V4(VIP4), &all, Duration::from_secs(30))
            .context("the router never took the host back")?;
        std::thread::sleep(settle);
        let mut report = ReturnReport {
            host,
            convergence,
            moved: 0,
            moved_broken: 0,
            connections: LongLivedReport::default(),
        };
        for (workload, before) in workloads.iter().zip(&before) {
            let after = self.workload_hosts(workload)?;
            for ((b, a), r) in before.iter().zip(&after).zip(&workload.records()) {
                if *b != Some(host) && *a == Some(host) {
                    report.moved += 1;
                    if r.broken.as_ref().is_some_and(|(t, _)| *t >= at) {
                        report.moved_broken += 1;
                    }
                }
            }
            report.connections.merge(&workload.report_since(at));
        }
        Ok(report)
    }
}
