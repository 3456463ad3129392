//! Between the configuration, the health checker and the lifecycle: which targets are
//! checked and how, and what a health event changes.

use tracing::{info, warn};

use super::AgentState;
use crate::{
    config::{Config, HealthCheckProtocol},
    health::{AgentCheckSpec, AgentStatus, CheckKind, CheckSpec, HealthEvent, HealthState},
    lifecycle::{self, Health},
    target::TargetKey,
};

/// What the checker should check for `cfg`: every target of every group with checks
/// enabled and a port to check (a group no VIP uses and without a configured port has
/// nothing to check).
pub fn check_specs(cfg: &Config) -> Vec<(TargetKey, CheckSpec, Option<AgentCheckSpec>)> {
    let mut out = Vec::new();
    for g in &cfg.target_groups {
        let hc = &g.health_check;
        let Some(port) = hc.port.filter(|_| hc.enabled) else {
            continue;
        };
        let kind = match (hc.protocol, &hc.http, &hc.command) {
            (HealthCheckProtocol::Tcp, _, _) => CheckKind::Tcp,
            (HealthCheckProtocol::Http, Some(h), _) => CheckKind::Http {
                path: h.path.clone(),
                matcher: h.matcher.clone(),
                body_contains: h.body_contains.clone(),
            },
            (HealthCheckProtocol::Https, Some(h), _) => CheckKind::Https {
                path: h.path.clone(),
                matcher: h.matcher.clone(),
                body_contains: h.body_contains.clone(),
            },
            (HealthCheckProtocol::Exec, _, Some(command)) => CheckKind::Exec {
                command: command.clone(),
            },
            // Validation guarantees the parts each protocol needs.
            (p, _, _) => {
                warn!(group = g.name, protocol = %p, "health check incomplete, not checked");
                continue;
            }
        };
        let spec = CheckSpec {
            kind,
            port,
            interval: hc.interval,
            timeout: hc.timeout,
            healthy_threshold: hc.healthy_threshold,
            unhealthy_threshold: hc.unhealthy_threshold,
        };
        let agent = g.agent_check.map(|a| AgentCheckSpec {
            port: a.port,
            interval: a.interval,
            timeout: a.timeout,
        });
        for t in &g.targets {
            out.push((TargetKey::new(&g.name, t.address), spec.clone(), agent));
        }
    }
    out
}

impl AgentState {
    /// Tells the checker what the running configuration wants checked.
    pub(super) fn sync_health(&self) {
        if let (Some(checker), Some(cfg)) = (&self.health, &self.config) {
            checker.set_targets(check_specs(cfg));
        }
    }

    /// Health events, as many as arrived together: the lifecycle learns them, then the
    /// data plane follows once (rings are rebuilt once per batch, not per event).
    pub fn on_health_events(
        &mut self,
        events: impl IntoIterator<Item = HealthEvent>,
    ) -> anyhow::Result<()> {
        let mut changed = false;
        for event in events {
            changed |= self.learn(event);
        }
        if changed {
            self.reconcile()?;
        }
        Ok(())
    }

    /// Records one health event in the lifecycle; returns whether anything changed.
    fn learn(&mut self, event: HealthEvent) -> bool {
        let now = lifecycle::now_ms();
        match event {
            HealthEvent::State {
                key,
                from,
                to,
                reason,
                detail,
            } => {
                let health = match to {
                    HealthState::Healthy => Health::Healthy,
                    HealthState::Unhealthy => Health::Unhealthy,
                    // A restarted check starts over; the target keeps its last known
                    // health until the check has a verdict.
                    HealthState::Initial => return false,
                };
                info!(
                    target = %key,
                    from = from.as_str(),
                    to = to.as_str(),
                    reason = reason.map_or("-", |r| r.as_str()),
                    detail,
                    "health check verdict"
                );
                self.lifecycle
                    .on_health(&key, health, reason.map(|r| r.as_str()), &detail, now)
            }
            HealthEvent::Weight { key, pct } => {
                let Some(mut report) = self.lifecycle.get(&key).map(|l| l.report) else {
                    return false;
                };
                report.weight_pct = pct;
                info!(target = %key, weight_pct = ?pct, "the target reports its weight");
                self.lifecycle.on_report(&key, report)
            }
            HealthEvent::AgentSays { key, status } => {
                let Some(mut report) = self.lifecycle.get(&key).map(|l| l.report) else {
                    return false;
                };
                report.drain = status == AgentStatus::Drain;
                report.down = status == AgentStatus::Down;
                info!(target = %key, status = status.as_str(), "the target's agent check");
                self.lifecycle.on_report(&key, report)
            }
        }
    }
}
