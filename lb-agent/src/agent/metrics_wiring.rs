//! Between the data plane and the metrics module: a [`Sample`] every second, periods
//! published as EMF, the Prometheus page kept current, and what `ctl metrics` and
//! `ctl top` read.

use std::{
    collections::HashMap,
    time::{Duration, Instant, SystemTime},
};

use lb_common::DropReason;
use tracing::{info, warn};

use super::AgentState;
use crate::{
    config::MetricsSettings,
    dataplane::tables::FlowTally,
    lifecycle,
    metrics::{
        emf, prometheus, sink::Destination, sink::EmfSink, Aggregator, Fleet, Period, Sample,
        ServiceCounter, TargetSample, VipSample,
    },
    target::TargetKey,
};

/// How stale the flow-table tally may be: walking a large table costs real time (one
/// lookup per entry), so the active-flow gauges are refreshed at most this often.
const TALLY_MAX_AGE: Duration = Duration::from_secs(10);

/// Flow-table tallies per (VIP id, backend id), and when they were taken.
type Tally = (Instant, HashMap<(u32, u32), FlowTally>);

/// The agent's metrics machinery.
pub struct MetricsState {
    pub settings: MetricsSettings,
    aggregator: Aggregator,
    /// The last completed period (for `ctl metrics`).
    pub last_period: Option<Period>,
    /// The last two samples (for `ctl top` rates).
    pub last_sample: Option<Sample>,
    pub prev_sample: Option<Sample>,
    sink: Option<EmfSink>,
    /// The Prometheus page the endpoint serves.
    pub page: prometheus::Page,
    pub server: Option<prometheus::Server>,
    tally: Option<Tally>,
    /// The sink's dropped-document count last logged, so each loss is reported once.
    sink_dropped_logged: u64,
}

impl MetricsState {
    pub fn new(settings: MetricsSettings) -> Self {
        Self {
            aggregator: Aggregator::new(settings.period),
            settings,
            last_period: None,
            last_sample: None,
            prev_sample: None,
            sink: None,
            page: prometheus::Page::default(),
            server: None,
            tally: None,
            sink_dropped_logged: 0,
        }
    }
}

impl AgentState {
    /// Applies the running configuration's `[metrics]` settings: a new period restarts
    /// aggregation, a new EMF destination or Prometheus address restarts that output.
    pub(super) fn sync_metrics(&mut self) {
        let Some(settings) = self.config.as_ref().map(|c| c.metrics.clone()) else {
            return;
        };
        let fresh = self.metrics.is_none();
        let m = self
            .metrics
            .get_or_insert_with(|| MetricsState::new(settings.clone()));
        let old = std::mem::replace(&mut m.settings, settings.clone());
        if fresh || old.period != settings.period {
            m.aggregator = Aggregator::new(settings.period);
        }
        if fresh || old.emf != settings.emf {
            m.sink_dropped_logged = 0;
            m.sink = match Destination::from_env(&settings.emf)
                .and_then(|d| d.map(EmfSink::start).transpose())
            {
                Ok(sink) => {
                    if sink.is_some() {
                        info!(output = ?settings.emf, "publishing Embedded Metric Format documents");
                    }
                    sink
                }
                Err(e) => {
                    warn!(
                        "EMF output {:?} unusable, not publishing: {e}",
                        settings.emf
                    );
                    None
                }
            };
        }
        if fresh || old.prometheus_listen != settings.prometheus_listen {
            m.server = None;
            if let Some(addr) = settings.prometheus_listen {
                if !addr.ip().is_loopback() {
                    warn!(%addr, "the Prometheus endpoint listens beyond this host");
                }
                match start_server(addr, m.page.clone()) {
                    Ok(server) => {
                        info!(addr = %server.local_addr(), "serving Prometheus metrics at /metrics");
                        m.server = Some(server);
                    }
                    Err(e) => warn!(%addr, "cannot serve Prometheus metrics: {e}"),
                }
            }
        }
    }

    /// Reads the counters once (every second): feeds the aggregator, publishes a
    /// completed period, refreshes the Prometheus page.
    pub fn sample_metrics(&mut self) -> anyhow::Result<()> {
        if self.metrics.is_none() {
            return Ok(());
        }
        let sample = self.sample()?;
        let Some(m) = self.metrics.as_mut() else {
            return Ok(());
        };
        if let Ok(mut page) = m.page.lock() {
            *page = prometheus::render(&sample, &m.settings);
        }
        if let Some(period) = m.aggregator.push(sample.clone()) {
            if let Some(sink) = &m.sink {
                sink.send_all(emf::render(&period, &m.settings));
                let dropped = sink.dropped();
                if dropped > m.sink_dropped_logged {
                    tracing::warn!(
                        dropped = dropped - m.sink_dropped_logged,
                        total = dropped,
                        destination = %m.settings.emf,
                        "EMF documents could not be delivered in time and were dropped"
                    );
                    m.sink_dropped_logged = dropped;
                }
            }
            m.last_period = Some(period);
        }
        m.prev_sample = m.last_sample.replace(sample);
        Ok(())
    }

    /// The flow table's tally, at most [`TALLY_MAX_AGE`] old (every sample at high
    /// resolution).
    fn tally(&mut self) -> anyhow::Result<HashMap<(u32, u32), FlowTally>> {
        let max_age = self
            .metrics
            .as_ref()
            .map_or(TALLY_MAX_AGE, |m| m.settings.period.min(TALLY_MAX_AGE));
        if let Some((at, t)) = self.metrics.as_ref().and_then(|m| m.tally.as_ref()) {
            if at.elapsed() < max_age {
                return Ok(t.clone());
            }
        }
        let t = self.dp.flow_tally()?;
        if let Some(m) = self.metrics.as_mut() {
            m.tally = Some((Instant::now(), t.clone()));
        }
        Ok(t)
    }

    /// The counters and gauges now.
    pub fn sample(&mut self) -> anyhow::Result<Sample> {
        let tally = self.tally()?;
        let now = lifecycle::now_ms();
        let mut vips = Vec::new();
        let mut targets = Vec::new();
        if let Some(cfg) = &self.config {
            for v in &cfg.vips {
                let Some((vip_id, _)) = self.services.vip(&v.name) else {
                    continue;
                };
                vips.push(VipSample {
                    name: v.name.clone(),
                    target_group: v.target_group.clone(),
                    proto: v.protocol,
                    counter: self.dp.vip_counters(vip_id)?,
                    active_flows: tally
                        .iter()
                        .filter(|((vid, _), _)| *vid == vip_id)
                        .map(|(_, t)| t.active())
                        .sum(),
                });
            }
            for (key, _) in self.lifecycle.targets() {
                let TargetKey { group, address } = key;
                let Some(id) = self.services.backend_id(group, *address) else {
                    continue;
                };
                let view = self.target_view(key, now);
                targets.push(TargetSample {
                    group: group.clone(),
                    address: *address,
                    state: view
                        .as_ref()
                        .map_or("unused", |v| v.state.as_str())
                        .to_owned(),
                    counter: self.dp.backend_counters(id)?,
                    active_flows: tally
                        .iter()
                        .filter(|((_, bid), _)| *bid == id)
                        .map(|(_, t)| t.active())
                        .sum(),
                    fail_open: view.as_ref().is_some_and(|v| v.fail_open),
                });
            }
        }
        let counters = self.dp.counters()?;
        Ok(Sample {
            at: SystemTime::now(),
            vips,
            targets,
            drops: DropReason::ALL
                .iter()
                .map(|r| (r.name().to_owned(), counters.drop(*r).packets))
                .collect(),
            unhealthy_routed_flows: None,
            fleet: Some(Fleet {
                fingerprint: format!("{:016x}", self.announce.fingerprint),
                route_tag: self.announce.route_tag(self.config.as_ref()),
                vips: self
                    .announce
                    .decisions
                    .vips
                    .iter()
                    .map(|v| (v.name.clone(), v.state.as_str()))
                    .collect(),
            }),
        })
    }
}

/// Starts the Prometheus endpoint from synchronous code, whatever the caller's context
/// (startup, an admin request's blocking thread, or the signal loop): on a fresh thread
/// that borrows the runtime's handle.
fn start_server(
    addr: std::net::SocketAddr,
    page: prometheus::Page,
) -> std::io::Result<prometheus::Server> {
    let handle = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
    std::thread::scope(|s| {
        s.spawn(|| handle.block_on(prometheus::Server::start(addr, page)))
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the starting thread panicked")))
    })
}

/// Per-second rates between two samples, for `ctl top`.
pub fn rate(now: &ServiceCounter, before: &ServiceCounter, secs: f64) -> [f64; 3] {
    let d = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs.max(1e-3);
    [
        d(now.packets, before.packets),
        d(now.bytes, before.bytes),
        d(now.new_flows, before.new_flows),
    ]
}
