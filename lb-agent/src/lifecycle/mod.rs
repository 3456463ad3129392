//! The backend lifecycle: which targets take new flows, at what weight, and which keep the
//! flows they already have, with the states and reason codes of an AWS Network Load
//! Balancer target group.
//!
//! Inputs: the running configuration (registration: a target in the configuration is
//! registered), health-check results, operator drains, and weight reports from the
//! targets themselves (exec output or an agent-check port). Output: a [`Serving`]
//! decision per target plus the targets still draining after deregistration, which
//! `Services` turns into rings and backend slots.
//!
//! The rules, per target:
//! - **initial** (`Elb.InitialHealthChecking`): registered, not yet checked healthy. No
//!   new flows (unless the group fails open).
//! - **healthy**: new flows at its weight × slow-start ramp × reported percentage.
//! - **unhealthy**: out of the ring for new flows at once. Its established flows follow
//!   the group's settings, as in an NLB: with `unhealthy_connection_termination` (the
//!   default) they are moved to healthy targets at once (its backend slot is cleared, so
//!   the data plane re-hashes them); without it they stay on it, for good or, with an
//!   `unhealthy_draining_interval`, for that long (state **unhealthy.draining**) before
//!   they move.
//! - **draining** (`Target.DeregistrationInProgress`): deregistered (gone from the
//!   configuration) or drained by the operator. No new flows; established flows continue
//!   for the group's deregistration delay. Then a deregistered target is removed (its
//!   flows re-hash) and an operator-drained one becomes **unused** (`Lb.Drained`: no
//!   flows at all) until it is undrained. lb does not end draining early when a target's
//!   connections close: in direct-routing modes the replies bypass the load balancer, so
//!   it cannot see a connection end; the flow table only shows entries that have not
//!   been reused yet.
//! - **Fail open**: when a group has registered, undrained targets but none of them is
//!   healthy, and the group has `fail_open` (the default, as NLB), all of them take new
//!   flows at their configured weights, and the group is reported as failing open.
//!   Without it, the group's VIPs have no target and drop new flows. At the very first
//!   start every target is `initial`, so a failing-open group serves from the first
//!   packet, as it did before lb checked anything; a restarted agent restores the
//!   previous agent's health states instead (see [`LifecycleState`]).
//! - **Slow start** (when configured): a target that becomes healthy ramps its weight
//!   linearly over the slow-start duration, in [`RAMP_STEPS`] steps (each step rebuilds
//!   the rings once, so the ring never changes more often than that). A health
//!   regression ends the ramp; the next recovery starts it again from the bottom.
//!
//! Times are wall-clock milliseconds since the Unix epoch, so that a restarted agent
//! continues a deregistration delay where the previous one left it.

mod serving;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Duration,
};

pub use serving::{ring_weight, ServedTarget, Serving, TargetServing, RING_WEIGHT_SCALE};

use crate::{
    config::{Config, TargetGroup},
    target::TargetKey,
};

/// A slow-start ramp has this many steps: the weight goes 1/20, 2/20, … of the full weight.
pub const RAMP_STEPS: u64 = 20;

/// What the health checks say about a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not yet enough results.
    Initial,
    Healthy,
    Unhealthy,
}

/// A target's state, as NLB names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetState {
    Initial,
    Healthy,
    Unhealthy,
    UnhealthyDraining,
    Draining,
    Unused,
}

impl TargetState {
    /// Every state, in lifecycle order.
    pub const ALL: [Self; 6] = [
        Self::Initial,
        Self::Healthy,
        Self::Unhealthy,
        Self::UnhealthyDraining,
        Self::Draining,
        Self::Unused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::UnhealthyDraining => "unhealthy.draining",
            Self::Draining => "draining",
            Self::Unused => "unused",
        }
    }
}

/// Reason codes the lifecycle itself sets (health reasons come from the checks).
pub mod reason {
    pub const INITIAL: &str = "Elb.InitialHealthChecking";
    pub const DEREGISTERING: &str = "Target.DeregistrationInProgress";
    pub const CHECK_DISABLED: &str = "Target.HealthCheckDisabled";
    pub const FAILED: &str = "Target.FailedHealthChecks";
    /// Not an NLB code: drained by the operator (`ctl backend drain`) and past the delay.
    pub const DRAINED: &str = "Lb.Drained";
}

/// What a target reports about itself (exec check output or agent-check line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SelfReport {
    /// Percentage of its configured weight, 0–100.
    pub weight_pct: Option<u8>,
    /// The target asks for no new flows (agent-check `drain`).
    pub drain: bool,
    /// The target says it is down (agent-check `down`, `fail`, `stopped`, `maint`).
    pub down: bool,
}

/// One target's record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Life {
    pub configured_weight: u16,
    /// In the running configuration. A deregistered target drains, then goes.
    pub registered: bool,
    /// Drained by the operator.
    pub drained: bool,
    /// When the current drain (deregistration or operator drain) began.
    pub drain_started_ms: Option<u64>,
    pub health: Health,
    /// The health checks' reason code for an unhealthy or initial target.
    pub health_reason: Option<String>,
    /// The last check's result in words ("HTTP 500 not in 200-399").
    pub health_detail: String,
    /// Health checks are off for its group: it counts as healthy.
    pub checks_disabled: bool,
    /// When it last became unhealthy.
    pub unhealthy_since_ms: Option<u64>,
    /// When it last became healthy (the slow-start ramp's origin), if it was ever
    /// unhealthy or initial before; `None` for a target healthy from the start.
    pub ramp_started_ms: Option<u64>,
    pub report: SelfReport,
}

/// Per-group settings the lifecycle uses.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupPolicy {
    pub deregistration_delay: Duration,
    pub slow_start: Duration,
    pub fail_open: bool,
    pub unhealthy_connection_termination: bool,
    pub unhealthy_draining_interval: Duration,
    pub checks_enabled: bool,
}

impl GroupPolicy {
    fn of(g: &TargetGroup) -> Self {
        Self {
            deregistration_delay: g.deregistration_delay,
            slow_start: g.slow_start,
            fail_open: g.fail_open,
            unhealthy_connection_termination: g.unhealthy_connection_termination,
            unhealthy_draining_interval: g.unhealthy_draining_interval,
            checks_enabled: g.health_check.enabled,
        }
    }
}

/// What an operator sees for one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetView {
    pub state: TargetState,
    pub reason: Option<String>,
    pub detail: String,
    /// Effective share of new flows, in thousandths of a configured weight unit.
    pub ring_weight: u32,
    pub keeps_flows: bool,
    /// Milliseconds left of a drain or of the unhealthy draining interval.
    pub remaining_ms: Option<u64>,
    /// The group is failing open and this target takes flows because of it.
    pub fail_open: bool,
}

impl TargetView {
    /// The view as the data plane serves it. The lifecycle's view runs up to a second
    /// ahead of the installed data plane (the agent applies once a second): a target
    /// whose drain or unhealthy draining interval has just ended still has its
    /// established flows served until that apply, so it reads `draining` (or
    /// `unhealthy.draining`) with 0 ms left until then, never `unused` (or `unhealthy`)
    /// while its connections are still answered.
    pub fn as_installed(mut self, installed_keeps_flows: Option<bool>) -> Self {
        if self.keeps_flows || installed_keeps_flows != Some(true) {
            return self;
        }
        self.state = match self.state {
            TargetState::Unused => TargetState::Draining,
            TargetState::Unhealthy => TargetState::UnhealthyDraining,
            other => other,
        };
        self.keeps_flows = true;
        self.remaining_ms = Some(0);
        self
    }
}

/// The serving decisions for one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// What the data plane holds: the running configuration's targets plus deregistered
    /// targets still draining (at ring weight 0).
    pub serving: Serving,
    /// Groups failing open.
    pub failing_open: BTreeSet<String>,
}

/// What survives an agent restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LifecycleState {
    pub targets: Vec<(TargetKey, Life)>,
    /// Settings of groups with deregistered targets still draining.
    #[serde(default)]
    pub policies: Vec<(String, GroupPolicy)>,
}

/// Every target's lifecycle.
#[derive(Clone, Debug, Default)]
pub struct Lifecycle {
    targets: BTreeMap<TargetKey, Life>,
    policies: BTreeMap<String, GroupPolicy>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, ms)
}

impl Lifecycle {
    pub fn new() -> Self {
        Self::default()
    }

    /// Continues a previous agent's lifecycle (health, drains, deregistrations).
    pub fn restore(state: &LifecycleState) -> Self {
        Self {
            targets: state.targets.iter().cloned().collect(),
            policies: state.policies.iter().cloned().collect(),
        }
    }

    pub fn state(&self) -> LifecycleState {
        LifecycleState {
            targets: self
                .targets
                .iter()
                .map(|(k, l)| (k.clone(), l.clone()))
                .collect(),
            policies: self
                .policies
                .iter()
                .map(|(k, p)| (k.clone(), p.clone()))
                .collect(),
        }
    }

    pub fn get(&self, key: &TargetKey) -> Option<&Life> {
        self.targets.get(key)
    }

    /// Every target, registered or draining.
    pub fn targets(&self) -> impl Iterator<Item = (&TargetKey, &Life)> {
        self.targets.iter()
    }

    /// Registration follows `cfg`: new targets start `initial` (or healthy when their
    /// group has no checks), targets no longer in it start draining, re-registered ones
    /// stop draining. A group removed as a whole takes its targets with it at once (no
    /// VIP can reach them any more).
    pub fn sync(&mut self, cfg: &Config, now: u64) {
        let mut seen = BTreeSet::new();
        for g in &cfg.target_groups {
            let policy = GroupPolicy::of(g);
            for t in &g.targets {
                let key = TargetKey::new(&g.name, t.address);
                seen.insert(key.clone());
                let life = self.targets.entry(key).or_insert_with(|| Life {
                    configured_weight: t.weight,
                    registered: true,
                    drained: false,
                    drain_started_ms: None,
                    health: Health::Initial,
                    health_reason: Some(reason::INITIAL.to_owned()),
                    health_detail: String::new(),
                    checks_disabled: false,
                    unhealthy_since_ms: None,
                    ramp_started_ms: None,
                    report: SelfReport::default(),
                });
                life.configured_weight = t.weight;
                if !life.registered {
                    life.registered = true;
                    if !life.drained {
                        life.drain_started_ms = None;
                    }
                }
                life.checks_disabled = !policy.checks_enabled;
                if life.checks_disabled {
                    life.health = Health::Healthy;
                    life.health_reason = Some(reason::CHECK_DISABLED.to_owned());
                    life.health_detail.clear();
                    life.report = SelfReport::default();
                }
            }
            // AWS: a target already healthy when slow start is enabled does not enter
            // slow start (only targets that become healthy from now on ramp).
            let enabling = self
                .policies
                .get(&g.name)
                .is_some_and(|old| old.slow_start.is_zero())
                && !policy.slow_start.is_zero();
            if enabling {
                for (_, life) in self
                    .targets
                    .iter_mut()
                    .filter(|(k, l)| k.group == g.name && l.health == Health::Healthy)
                {
                    life.ramp_started_ms = None;
                }
            }
            self.policies.insert(g.name.clone(), policy);
        }
        let groups: BTreeSet<&str> = cfg.target_groups.iter().map(|g| g.name.as_str()).collect();
        self.targets.retain(|key, life| {
            if seen.contains(key) {
                return true;
            }
            if !groups.contains(key.group.as_str()) {
                return false;
            }
            if life.registered {
                life.registered = false;
                // An operator drain already under way keeps its start.
                if life.drain_started_ms.is_none() {
                    life.drain_started_ms = Some(now);
                }
            }
            true
        });
        self.policies
            .retain(|name, _| groups.contains(name.as_str()));
    }

    /// Records a health-check result; returns whether the target's health changed.
    pub fn on_health(
        &mut self,
        key: &TargetKey,
        health: Health,
        reason: Option<&str>,
        detail: &str,
        now: u64,
    ) -> bool {
        let Some(life) = self.targets.get_mut(key) else {
            return false;
        };
        if life.checks_disabled {
            return false;
        }
        life.health_detail = detail.to_owned();
        if life.health == health {
            if health != Health::Healthy {
                life.health_reason = reason.map(str::to_owned);
            }
            return false;
        }
        match health {
            Health::Healthy => {
                life.health_reason = None;
                life.unhealthy_since_ms = None;
                life.ramp_started_ms = Some(now);
            }
            Health::Unhealthy => {
                life.health_reason = Some(reason.unwrap_or(reason::FAILED).to_owned());
                life.unhealthy_since_ms = Some(now);
                life.ramp_started_ms = None;
            }
            Health::Initial => {
                life.health_reason = Some(reason.unwrap_or(reason::INITIAL).to_owned());
                life.ramp_started_ms = None;
            }
        }
        life.health = health;
        true
    }

    /// Records what a target reports about itself; returns whether it changed.
    pub fn on_report(&mut self, key: &TargetKey, report: SelfReport) -> bool {
        match self.targets.get_mut(key) {
            Some(life) if life.report != report => {
                life.report = report;
                true
            }
            _ => false,
        }
    }

    /// Operator drain: no new flows; established ones continue for the deregistration
    /// delay, then the target is `unused` until [`Lifecycle::undrain`].
    pub fn drain(&mut self, key: &TargetKey, now: u64) -> Result<bool, LifecycleError> {
        let life = self.registered_mut(key)?;
        if life.drained {
            return Ok(false);
        }
        life.drained = true;
        life.drain_started_ms = Some(now);
        Ok(true)
    }

    /// Ends an operator drain; the target takes new flows again as its health allows.
    pub fn undrain(&mut self, key: &TargetKey) -> Result<bool, LifecycleError> {
        let life = self.registered_mut(key)?;
        if !life.drained {
            return Ok(false);
        }
        life.drained = false;
        life.drain_started_ms = None;
        Ok(true)
    }

    fn registered_mut(&mut self, key: &TargetKey) -> Result<&mut Life, LifecycleError> {
        match self.targets.get_mut(key) {
            Some(life) if life.registered => Ok(life),
            Some(_) => Err(LifecycleError::Deregistering(key.clone())),
            None => Err(LifecycleError::NotFound(key.clone())),
        }
    }

    /// Forgets deregistered targets whose delay is over; returns them.
    pub fn expire(&mut self, now: u64) -> Vec<TargetKey> {
        let policies = &self.policies;
        let mut gone = Vec::new();
        self.targets.retain(|key, life| {
            let over = !life.registered
                && life.drain_started_ms.is_none_or(|start| {
                    let delay = policies
                        .get(&key.group)
                        .map_or(0, |p| ms(p.deregistration_delay));
                    now >= start.saturating_add(delay)
                });
            if over {
                gone.push(key.clone());
            }
            !over
        });
        gone
    }

    /// The view of one target at `now`, with `failing_open` the groups failing open.
    pub fn view(
        &self,
        key: &TargetKey,
        now: u64,
        failing_open: &BTreeSet<String>,
    ) -> Option<TargetView> {
        let life = self.targets.get(key)?;
        let policy = self.policies.get(&key.group)?;
        Some(view(life, policy, now, failing_open.contains(&key.group)))
    }

    /// The serving decisions at `now` for the running configuration `cfg` (the one last
    /// given to [`Lifecycle::sync`]).
    pub fn plan(&self, cfg: &Config, now: u64) -> Plan {
        let failing_open = self.failing_open(cfg);
        let mut serving = Serving::default();
        for g in &cfg.target_groups {
            serving.add_group(&g.name);
            let policy = self.policies.get(&g.name);
            let open = failing_open.contains(&g.name);
            let decide = |key: &TargetKey, weight: u16| match (self.targets.get(key), policy) {
                (Some(life), Some(policy)) => {
                    let v = view(life, policy, now, open);
                    TargetServing {
                        ring_weight: v.ring_weight,
                        keeps_flows: v.keeps_flows,
                    }
                }
                // Not synced yet: as configured.
                _ => TargetServing::full(weight),
            };
            for t in &g.targets {
                let key = TargetKey::new(&g.name, t.address);
                serving.push(&g.name, t.address, false, decide(&key, t.weight));
            }
            // Deregistered targets still draining stay in the data plane at weight 0, so
            // their flows keep their backend slot.
            for (key, life) in self
                .targets
                .range(TargetKey::new(&g.name, IpAddr::from([0u8; 4]))..)
                .take_while(|(key, _)| key.group == g.name)
            {
                if !life.registered && !g.targets.iter().any(|t| t.address == key.address) {
                    serving.push(&g.name, key.address, true, decide(key, 0));
                }
            }
        }
        Plan {
            serving,
            failing_open,
        }
    }

    /// Groups with registered, undrained targets of which none is healthy, and fail open
    /// configured.
    pub fn failing_open(&self, cfg: &Config) -> BTreeSet<String> {
        cfg.target_groups
            .iter()
            .filter(|g| g.fail_open)
            .filter(|g| {
                let mut candidates = g
                    .targets
                    .iter()
                    .filter_map(|t| self.targets.get(&TargetKey::new(&g.name, t.address)))
                    .filter(|l| l.registered && !l.drained)
                    .peekable();
                candidates.peek().is_some()
                    && candidates.all(|l| l.health != Health::Healthy || l.report.down)
            })
            .map(|g| g.name.clone())
            .collect()
    }
}

/// A target's state and serving decision.
fn view(life: &Life, policy: &GroupPolicy, now: u64, group_failing_open: bool) -> TargetView {
    let full = ring_weight(life.configured_weight);
    let mut v = TargetView {
        state: TargetState::Healthy,
        reason: life.health_reason.clone(),
        detail: life.health_detail.clone(),
        ring_weight: 0,
        keeps_flows: true,
        remaining_ms: None,
        fail_open: false,
    };
    if !life.registered || life.drained {
        let end = life
            .drain_started_ms
            .unwrap_or(now)
            .saturating_add(ms(policy.deregistration_delay));
        if now < end {
            v.state = TargetState::Draining;
            v.reason = Some(reason::DEREGISTERING.to_owned());
            v.remaining_ms = Some(end - now);
        } else {
            // Past the delay: a deregistered target is about to go (expire), a drained
            // one stays unused; either way its flows move.
            v.state = TargetState::Unused;
            v.reason = Some(
                if life.registered {
                    reason::DRAINED
                } else {
                    reason::DEREGISTERING
                }
                .to_owned(),
            );
            v.keeps_flows = false;
        }
        return v;
    }
    let healthy = life.health == Health::Healthy && !life.report.down;
    if !healthy {
        v.state = if life.health == Health::Initial && !life.report.down {
            TargetState::Initial
        } else {
            TargetState::Unhealthy
        };
        if life.report.down && life.health != Health::Unhealthy {
            v.reason = Some(reason::FAILED.to_owned());
            v.detail = "the target's agent check says it is down".to_owned();
        }
        if v.state == TargetState::Unhealthy {
            if policy.unhealthy_connection_termination {
                v.keeps_flows = false;
            } else if !policy.unhealthy_draining_interval.is_zero() {
                let since = life.unhealthy_since_ms.unwrap_or(now);
                let end = since.saturating_add(ms(policy.unhealthy_draining_interval));
                if now < end {
                    v.state = TargetState::UnhealthyDraining;
                    v.remaining_ms = Some(end - now);
                } else {
                    v.keeps_flows = false;
                }
            }
        }
        if group_failing_open {
            v.ring_weight = full;
            v.keeps_flows = true;
            v.fail_open = true;
        }
        return v;
    }
    v.reason = if life.checks_disabled {
        Some(reason::CHECK_DISABLED.to_owned())
    } else {
        None
    };
    let mut weight = u64::from(full);
    if let (Some(start), false) = (life.ramp_started_ms, policy.slow_start.is_zero()) {
        let total = ms(policy.slow_start).max(1);
        let elapsed = now.saturating_sub(start);
        if elapsed < total {
            // Steps of 1/RAMP_STEPS, the first one at once.
            let step = (elapsed * RAMP_STEPS / total + 1).min(RAMP_STEPS);
            weight = weight * step / RAMP_STEPS;
            v.remaining_ms = Some(total - elapsed);
        }
    }
    if let Some(pct) = life.report.weight_pct {
        weight = weight * u64::from(pct.min(100)) / 100;
    }
    if life.report.drain {
        weight = 0;
    }
    v.ring_weight = u32::try_from(weight).unwrap_or(u32::MAX);
    v
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LifecycleError {
    #[error("target {0} is not registered")]
    NotFound(TargetKey),
    #[error("target {0} is being deregistered")]
    Deregistering(TargetKey),
}
