//! The agent's event loop: the admin socket, SIGHUP reloads, health events, the
//! one-second lifecycle, metrics and data-plane watchdog tick and the counter log line,
//! until SIGINT/SIGTERM or `ctl down`.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use lb_common::{TrafficClass, Verdict};
use nix::unistd::Gid;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::Notify,
};
use tracing::{error, info};

use super::Agent;
use crate::{admin, dataplane::Counters, health::HealthEvent};

/// Serves the admin socket, logs counters every `stats_interval` seconds and reloads the
/// configuration on SIGHUP, until SIGINT / SIGTERM or `ctl down`.
pub async fn serve(
    agent: Arc<Agent>,
    admin: PathBuf,
    admin_group: Option<Gid>,
    stats_interval: u64,
    mut health_events: tokio::sync::mpsc::UnboundedReceiver<HealthEvent>,
) -> anyhow::Result<Stop> {
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let listener = admin::server::bind(&admin, admin_group)
        .with_context(|| format!("opening the admin socket {}", admin.display()))?;
    info!(socket = %admin.display(), group = ?admin_group.map(|g| g.as_raw()), "admin socket ready (lb-agent ctl)");
    let shutdown = Arc::new(Notify::new());
    let server = tokio::spawn({
        let (agent, shutdown) = (agent.clone(), shutdown.clone());
        async move {
            let handler: Arc<dyn admin::server::Handler> = agent;
            admin::server::serve_listener(listener, admin_group, handler, async move {
                shutdown.notified().await
            })
            .await
        }
    });
    let period = Duration::from_secs(stats_interval.max(1));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let down = agent.down.clone();
    // The lifecycle's clock (deregistration delays, unhealthy draining intervals and
    // slow-start steps end on time) and the metrics' one-second samples.
    let mut lifecycle_tick = tokio::time::interval(Duration::from_secs(1));
    lifecycle_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // `ctl down` withdrew the VIPs; the data plane forwards until this instant.
    let mut detach_at: Option<tokio::time::Instant> = None;
    let stop = loop {
        tokio::select! {
            _ = term.recv() => break Stop::Signal("SIGTERM"),
            _ = int.recv() => break Stop::Signal("SIGINT"),
            _ = down.notified() => {
                let grace = agent.read().ok().and_then(|st| st.going_down).unwrap_or_default();
                detach_at = Some(tokio::time::Instant::now() + grace);
            }
            _ = sleep_until_some(detach_at) => break Stop::Down,
            _ = hup.recv() => match agent.write() {
                Ok(mut st) => st.reload(),
                Err(_) => error!("agent state poisoned; reload skipped"),
            },
            Some(first) = health_events.recv() => match agent.write() {
                Ok(mut st) => {
                    let mut batch = vec![first];
                    while let Ok(more) = health_events.try_recv() {
                        batch.push(more);
                    }
                    if let Err(e) = st.on_health_events(batch) {
                        error!("updating the data plane for a health change: {e:#}");
                    }
                }
                Err(_) => error!("agent state poisoned; health event skipped"),
            },
            _ = lifecycle_tick.tick() => match agent.write() {
                Ok(mut st) => {
                    if let Err(e) = st.reconcile() {
                        error!("updating the data plane for the backend lifecycle: {e:#}");
                    }
                    if let Err(e) = st.sample_metrics() {
                        error!("reading the counters for metrics: {e:#}");
                    }
                    st.watch_data_plane();
                }
                Err(_) => error!("agent state poisoned; lifecycle skipped"),
            },
            _ = ticker.tick(), if stats_interval > 0 => match agent.read() {
                Ok(st) => log_counters(&st.dp.counters()?),
                Err(_) => error!("agent state poisoned; counters skipped"),
            },
        }
    };
    shutdown.notify_one();
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => error!("admin socket: {e}"),
        Err(e) => error!("admin socket task: {e}"),
    }
    Ok(stop)
}

/// Sleeps until `at`; never returns without one.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Why the agent stops.
pub enum Stop {
    Signal(&'static str),
    Down,
}

/// Logs the verdict and traffic-class counters in one line.
pub fn log_counters(c: &Counters) {
    let verdicts: Vec<String> = Verdict::ALL
        .iter()
        .map(|v| format!("{}={}", v.name(), c.verdict(*v).packets))
        .collect();
    let traffic: Vec<String> = TrafficClass::ALL
        .iter()
        .filter(|t| c.traffic(**t).packets > 0)
        .map(|t| format!("{}={}", t.name(), c.traffic(*t).packets))
        .collect();
    info!(
        verdicts = verdicts.join(" "),
        traffic = traffic.join(" "),
        "packet counters"
    );
}
