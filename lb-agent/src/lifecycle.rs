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

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
    time::Duration,
};

use crate::{
    config::{Config, Target, TargetGroup},
    services::{Serving, TargetServing},
};

/// A slow-start ramp has this many steps: the weight goes 1/20, 2/20, … of the full weight.
pub const RAMP_STEPS: u64 = 20;

/// A target: its group and address.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct TargetKey {
    pub group: String,
    pub address: IpAddr,
}

impl TargetKey {
    pub fn new(group: &str, address: IpAddr) -> Self {
        Self {
            group: group.to_owned(),
            address,
        }
    }
}

impl fmt::Display for TargetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.group, self.address)
    }
}

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

/// The serving decisions for one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The configuration to install: the running one plus deregistered targets that are
    /// still draining (weight 0).
    pub config: Option<Config>,
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
        let mut config = cfg.clone();
        let mut serving = Serving::default();
        for g in &mut config.target_groups {
            // Deregistered targets still draining stay in the data plane at weight 0.
            for (key, life) in self
                .targets
                .range(TargetKey::new(&g.name, IpAddr::from([0u8; 4]))..)
            {
                if key.group != g.name {
                    break;
                }
                if !life.registered && !g.targets.iter().any(|t| t.address == key.address) {
                    g.targets.push(Target {
                        address: key.address,
                        weight: 0,
                    });
                }
            }
            let Some(policy) = self.policies.get(&g.name) else {
                continue;
            };
            let open = failing_open.contains(&g.name);
            for t in &g.targets {
                let key = TargetKey::new(&g.name, t.address);
                if let Some(life) = self.targets.get(&key) {
                    let v = view(life, policy, now, open);
                    serving.targets.insert(
                        (g.name.clone(), t.address),
                        TargetServing {
                            ring_weight: v.ring_weight,
                            keeps_flows: v.keeps_flows,
                        },
                    );
                }
            }
        }
        Plan {
            config: Some(config),
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
    let full = u32::from(life.configured_weight) * 1000;
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

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "198.18.11.2";
    const B: &str = "198.18.12.2";
    const C: &str = "198.18.13.2";

    /// One VIP on group "g" with targets `addrs` and the group settings `extra`.
    fn cfg(addrs: &[&str], extra: &str) -> Config {
        let mut text = String::from(
            "[[vip]]\nname = \"web\"\naddress = \"198.18.200.1\"\nport = 80\nprotocol = \"tcp\"\ntarget_group = \"g\"\n\n[[target_group]]\nname = \"g\"\n",
        );
        text.push_str(extra);
        text.push('\n');
        for a in addrs {
            text.push_str(&format!(
                "[[target_group.target]]\naddress = \"{a}\"\nweight = 2\n"
            ));
        }
        crate::config::parse(&text).expect("valid test configuration")
    }

    fn key(a: &str) -> TargetKey {
        TargetKey::new("g", a.parse().expect("address"))
    }

    fn serve(plan: &Plan, a: &str) -> TargetServing {
        plan.serving.targets[&("g".to_owned(), a.parse().expect("address"))]
    }

    fn state(l: &Lifecycle, a: &str, now: u64) -> TargetState {
        l.view(&key(a), now, &l.failing_open(&cfg(&[], "")))
            .expect("known")
            .state
    }

    fn healthy(l: &mut Lifecycle, addrs: &[&str], now: u64) {
        for a in addrs {
            l.on_health(&key(a), Health::Healthy, None, "", now);
        }
    }

    #[test]
    fn new_targets_are_initial_and_the_group_fails_open_until_one_is_healthy() {
        let c = cfg(&[A, B], "");
        let mut l = Lifecycle::new();
        l.sync(&c, 0);
        let p = l.plan(&c, 0);
        assert_eq!(p.failing_open, BTreeSet::from(["g".to_owned()]));
        assert_eq!(
            serve(&p, A).ring_weight,
            2000,
            "fail open: configured weight"
        );
        let v = l.view(&key(A), 0, &p.failing_open).expect("view");
        assert_eq!((v.state, v.fail_open), (TargetState::Initial, true));
        assert_eq!(v.reason.as_deref(), Some(reason::INITIAL));

        healthy(&mut l, &[A], 10);
        let p = l.plan(&c, 10);
        assert!(p.failing_open.is_empty());
        assert_eq!(serve(&p, A).ring_weight, 2000);
        assert_eq!(serve(&p, B).ring_weight, 0, "initial: no new flows");
        assert!(serve(&p, B).keeps_flows);
    }

    #[test]
    fn without_fail_open_an_all_unhealthy_group_serves_nothing() {
        let c = cfg(&[A, B], "fail_open = false");
        let mut l = Lifecycle::new();
        l.sync(&c, 0);
        let p = l.plan(&c, 0);
        assert!(p.failing_open.is_empty());
        assert_eq!(serve(&p, A).ring_weight + serve(&p, B).ring_weight, 0);
    }

    #[test]
    fn unhealthy_targets_leave_the_ring_and_their_flows_follow_the_policy() {
        // NLB's default: connection termination on, no draining interval.
        let c = cfg(&[A, B], "");
        let mut l = Lifecycle::new();
        l.sync(&c, 0);
        healthy(&mut l, &[A, B], 0);
        assert!(l.on_health(
            &key(A),
            Health::Unhealthy,
            Some("Target.Timeout"),
            "timed out",
            100
        ));
        let p = l.plan(&c, 100);
        assert_eq!(
            serve(&p, A),
            TargetServing {
                ring_weight: 0,
                keeps_flows: false
            }
        );
        let v = l.view(&key(A), 100, &p.failing_open).expect("view");
        assert_eq!(v.state, TargetState::Unhealthy);
        assert_eq!(v.reason.as_deref(), Some("Target.Timeout"));
        assert_eq!(v.detail, "timed out");

        // Termination off with a draining interval keeps the flows for a while:
        // unhealthy.draining.
        let c = cfg(
            &[A, B],
            "unhealthy_connection_termination = false\nunhealthy_draining_interval_secs = 30",
        );
        l.sync(&c, 100);
        let p = l.plan(&c, 100 + 29_000);
        assert_eq!(
            serve(&p, A),
            TargetServing {
                ring_weight: 0,
                keeps_flows: true
            }
        );
        assert_eq!(state(&l, A, 100 + 29_000), TargetState::UnhealthyDraining);
        let p = l.plan(&c, 100 + 30_000);
        assert!(!serve(&p, A).keeps_flows);

        // Termination off: the flows stay for as long as they last.
        let c = cfg(&[A, B], "unhealthy_connection_termination = false");
        l.sync(&c, 100);
        let p = l.plan(&c, 10_000_000);
        assert_eq!(
            serve(&p, A),
            TargetServing {
                ring_weight: 0,
                keeps_flows: true
            }
        );
        assert_eq!(state(&l, A, 10_000_000), TargetState::Unhealthy);
    }

    #[test]
    fn deregistration_drains_for_the_delay_then_the_target_goes() {
        let both = cfg(&[A, B], "deregistration_delay_secs = 60");
        let only_b = cfg(&[B], "deregistration_delay_secs = 60");
        let mut l = Lifecycle::new();
        l.sync(&both, 0);
        healthy(&mut l, &[A, B], 0);
        l.sync(&only_b, 1_000);
        let p = l.plan(&only_b, 1_000);
        // Still in the data plane (flows keep their backend), weight 0.
        let g = &p.config.as_ref().expect("config").target_groups[0];
        assert!(g
            .targets
            .iter()
            .any(|t| t.address == key(A).address && t.weight == 0));
        assert_eq!(
            serve(&p, A),
            TargetServing {
                ring_weight: 0,
                keeps_flows: true
            }
        );
        let v = l.view(&key(A), 31_000, &p.failing_open).expect("view");
        assert_eq!(v.state, TargetState::Draining);
        assert_eq!(v.reason.as_deref(), Some(reason::DEREGISTERING));
        assert_eq!(v.remaining_ms, Some(30_000));
        // Draining targets cannot be drained again or undrained.
        assert_eq!(
            l.drain(&key(A), 2_000),
            Err(LifecycleError::Deregistering(key(A)))
        );
        assert!(l.expire(60_999).is_empty());
        assert_eq!(l.expire(61_000), vec![key(A)]);
        assert!(l.get(&key(A)).is_none());
        let p = l.plan(&only_b, 61_000);
        assert_eq!(
            p.config.as_ref().expect("config").target_groups[0]
                .targets
                .len(),
            1
        );
    }

    #[test]
    fn re_registering_a_draining_target_cancels_the_drain() {
        let both = cfg(&[A, B], "");
        let mut l = Lifecycle::new();
        l.sync(&both, 0);
        healthy(&mut l, &[A, B], 0);
        l.sync(&cfg(&[B], ""), 1_000);
        assert_eq!(state(&l, A, 2_000), TargetState::Draining);
        l.sync(&both, 3_000);
        assert_eq!(state(&l, A, 3_000), TargetState::Healthy, "health was kept");
        assert_eq!(serve(&l.plan(&both, 3_000), A).ring_weight, 2000);
    }

    #[test]
    fn a_zero_delay_removes_at_once() {
        let mut l = Lifecycle::new();
        l.sync(&cfg(&[A, B], "deregistration_delay_secs = 0"), 0);
        l.sync(&cfg(&[B], "deregistration_delay_secs = 0"), 5);
        assert_eq!(l.expire(5), vec![key(A)]);
    }

    #[test]
    fn operator_drain_then_unused_until_undrained() {
        let c = cfg(&[A, B], "deregistration_delay_secs = 10");
        let mut l = Lifecycle::new();
        l.sync(&c, 0);
        healthy(&mut l, &[A, B], 0);
        assert_eq!(l.drain(&key(A), 100), Ok(true));
        assert_eq!(l.drain(&key(A), 200), Ok(false), "already drained");
        let p = l.plan(&c, 5_000);
        assert_eq!(
            serve(&p, A),
            TargetServing {
                ring_weight: 0,
                keeps_flows: true
            }
        );
        assert_eq!(state(&l, A, 5_000), TargetState::Draining);
        let p = l.plan(&c, 10_100);
        assert_eq!(
            serve(&p, A),
            TargetServing {
                ring_weight: 0,
                keeps_flows: false
            }
        );
        let v = l.view(&key(A), 10_100, &p.failing_open).expect("view");
        assert_eq!(v.state, TargetState::Unused);
        assert_eq!(v.reason.as_deref(), Some(reason::DRAINED));
        assert!(
            l.expire(1_000_000).is_empty(),
            "a drained target stays registered"
        );
        assert_eq!(l.undrain(&key(A)), Ok(true));
        assert_eq!(serve(&l.plan(&c, 10_200), A).ring_weight, 2000);
        assert_eq!(
            l.drain(&TargetKey::new("g", "10.9.9.9".parse().expect("ip")), 0),
            Err(LifecycleError::NotFound(TargetKey::new(
                "g",
                "10.9.9.9".parse().expect("ip")
            )))
        );
    }

    #[test]
    fn a_drained_group_does_not_fail_open_onto_its_drained_targets() {
        let c = cfg(&[A], "");
        let mut l = Lifecycle::new();
        l.sync(&c, 0);
        l.drain(&key(A), 0).expect("drain");
        let p = l.plan(&c, 0);
        assert!(p.failing_open.is_empty());
        assert_eq!(serve(&p, A).ring_weight, 0);
    }

    #[test]
    fn slow_start_ramps_in_steps_and_restarts_after_a_regression() {
        let c = cfg(&[A, B], "slow_start_secs = 100");
        let mut l = Lifecycle::new();
        l.sync(&c, 0);
        healthy(&mut l, &[B], 0);
        healthy(&mut l, &[A], 1_000);
        let w = |l: &Lifecycle, t: u64| serve(&l.plan(&c, t), A).ring_weight;
        assert_eq!(w(&l, 1_000), 100, "first step at once: 1/20 of 2000");
        assert_eq!(w(&l, 1_000 + 4_999), 100);
        assert_eq!(w(&l, 1_000 + 5_000), 200);
        assert_eq!(w(&l, 1_000 + 50_000), 1100);
        assert_eq!(w(&l, 1_000 + 99_999), 2000);
        assert_eq!(w(&l, 1_000 + 100_000), 2000);
        // Only RAMP_STEPS distinct weights over the ramp.
        let distinct: BTreeSet<u32> = (0..1000).map(|i| w(&l, 1_000 + i * 100)).collect();
        assert_eq!(distinct.len() as u64, RAMP_STEPS);
        // A regression ends the ramp; the next recovery starts from the bottom.
        l.on_health(&key(A), Health::Unhealthy, None, "", 60_000);
        assert_eq!(w(&l, 60_000), 0);
        l.on_health(&key(A), Health::Healthy, None, "", 70_000);
        assert_eq!(w(&l, 70_000), 100);
        // A target healthy from a restored state (no ramp origin) is at full weight.
        let mut l = Lifecycle::new();
        l.sync(&cfg(&[A, B], ""), 0);
        healthy(&mut l, &[A, B], 0);
        assert_eq!(serve(&l.plan(&cfg(&[A, B], ""), 0), A).ring_weight, 2000);
    }

    #[test]
    fn targets_report_their_own_weight() {
        let c = cfg(&[A, B, C], "");
        let mut l = Lifecycle::new();
        l.sync(&c, 0);
        healthy(&mut l, &[A, B, C], 0);
        assert!(l.on_report(
            &key(A),
            SelfReport {
                weight_pct: Some(25),
                ..SelfReport::default()
            }
        ));
        assert!(!l.on_report(
            &key(A),
            SelfReport {
                weight_pct: Some(25),
                ..SelfReport::default()
            }
        ));
        l.on_report(
            &key(B),
            SelfReport {
                drain: true,
                ..SelfReport::default()
            },
        );
        l.on_report(
            &key(C),
            SelfReport {
                down: true,
                ..SelfReport::default()
            },
        );
        let p = l.plan(&c, 0);
        assert_eq!(serve(&p, A).ring_weight, 500);
        assert_eq!(serve(&p, B).ring_weight, 0);
        assert_eq!(state(&l, B, 0), TargetState::Healthy);
        assert_eq!(serve(&p, C).ring_weight, 0);
        assert_eq!(state(&l, C, 0), TargetState::Unhealthy);
    }

    #[test]
    fn disabled_checks_make_targets_healthy() {
        let c = cfg(&[A], "[target_group.health_check]\nenabled = false");
        let mut l = Lifecycle::new();
        l.sync(&c, 0);
        let p = l.plan(&c, 0);
        assert!(p.failing_open.is_empty());
        assert_eq!(serve(&p, A).ring_weight, 2000);
        let v = l.view(&key(A), 0, &p.failing_open).expect("view");
        assert_eq!(v.state, TargetState::Healthy);
        assert_eq!(v.reason.as_deref(), Some(reason::CHECK_DISABLED));
        // Results of checks that no longer run are ignored.
        assert!(!l.on_health(&key(A), Health::Unhealthy, None, "", 1));
    }

    #[test]
    fn state_survives_a_restart() {
        let c = cfg(&[A, B], "deregistration_delay_secs = 60");
        let mut l = Lifecycle::new();
        l.sync(&c, 0);
        healthy(&mut l, &[A, B], 0);
        l.on_health(&key(B), Health::Unhealthy, Some("Target.Timeout"), "t", 5);
        l.sync(&cfg(&[B], "deregistration_delay_secs = 60"), 10);
        let saved = serde_json::to_string(&l.state()).expect("json");
        let mut back = Lifecycle::restore(&serde_json::from_str(&saved).expect("json"));
        assert_eq!(back.state(), l.state());
        assert_eq!(state(&back, A, 20), TargetState::Draining);
        assert_eq!(back.expire(60_010 - 1).len(), 0);
    }

    #[test]
    fn removing_a_group_forgets_its_targets() {
        let mut l = Lifecycle::new();
        l.sync(&cfg(&[A], ""), 0);
        l.sync(&crate::config::parse("").expect("empty"), 1);
        assert_eq!(l.targets().count(), 0);
    }
}
