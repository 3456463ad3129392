//! The per-target health state machine: probe results in, transitions out. Pure: the
//! caller passes the time of each result, so tests drive it with a fake clock.
//!
//! A target starts `initial` (`Elb.InitialHealthChecking`). `healthy_threshold`
//! consecutive successes make it `healthy`; `unhealthy_threshold` consecutive failures make
//! it `unhealthy` (from `initial` too), with the reason of the last failure, as NLB
//! reports it. While it stays unhealthy, a failure with another reason or detail (a 500,
//! then the port closed) is reported too, as an `unhealthy` → `unhealthy` transition, so
//! what the operator reads is the current failure.
//!
//! **Flap damping.** A target that goes unhealthy again within [`FLAP_WINDOW_INTERVALS`] ×
//! interval of its last recovery has flapped. Each flap doubles the consecutive successes
//! its next recovery needs (`healthy_threshold × 2^flaps`, at most
//! [`MAX_PENALTY_FACTOR`] × `healthy_threshold`), so a target that fails under load is not
//! put back into the rings (and its share of flows moved twice) every few seconds. The
//! penalty decays to nothing once the target has stayed healthy for
//! [`FLAP_WINDOW_INTERVALS`] × interval.

use std::time::{Duration, Instant};

use super::{HealthState, ProbeOutcome, Reason};

/// A recovery that lasts less than this many intervals counts as a flap; a recovery that
/// lasts this long clears the penalty.
pub const FLAP_WINDOW_INTERVALS: u32 = 10;

/// The flap penalty multiplies the healthy threshold by at most this.
pub const MAX_PENALTY_FACTOR: u32 = 8;

/// A change of health state, or of an unhealthy target's reason or detail, for the agent
/// to log and act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: HealthState,
    pub to: HealthState,
    /// The reason of the new state (`None` for healthy).
    pub reason: Option<Reason>,
    /// The detail of the probe that caused it.
    pub detail: String,
}

/// One target's health.
#[derive(Clone, Debug)]
pub struct TargetHealth {
    healthy_threshold: u32,
    unhealthy_threshold: u32,
    /// [`FLAP_WINDOW_INTERVALS`] × the check interval.
    flap_window: Duration,
    state: HealthState,
    reason: Option<Reason>,
    /// The detail last reported in a [`Transition`].
    reported_detail: String,
    consecutive_successes: u32,
    consecutive_failures: u32,
    /// Flaps counted against the next recovery (2^flaps ≤ MAX_PENALTY_FACTOR).
    flaps: u32,
    /// When it last became healthy again after being unhealthy.
    recovered_at: Option<Instant>,
    last: Option<(ProbeOutcome, Instant)>,
}

impl TargetHealth {
    /// A target not yet checked. Thresholds of 0 count as 1.
    pub fn new(healthy_threshold: u8, unhealthy_threshold: u8, interval: Duration) -> Self {
        Self {
            healthy_threshold: u32::from(healthy_threshold.max(1)),
            unhealthy_threshold: u32::from(unhealthy_threshold.max(1)),
            flap_window: interval.saturating_mul(FLAP_WINDOW_INTERVALS),
            state: HealthState::Initial,
            reason: Some(Reason::InitialHealthChecking),
            reported_detail: String::new(),
            consecutive_successes: 0,
            consecutive_failures: 0,
            flaps: 0,
            recovered_at: None,
            last: None,
        }
    }

    pub fn state(&self) -> HealthState {
        self.state
    }

    pub fn reason(&self) -> Option<Reason> {
        self.reason
    }

    pub fn consecutive_successes(&self) -> u32 {
        self.consecutive_successes
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Flaps currently counted against the next recovery.
    pub fn flaps(&self) -> u32 {
        self.flaps
    }

    /// The last probe's result and when it arrived.
    pub fn last(&self) -> Option<&(ProbeOutcome, Instant)> {
        self.last.as_ref()
    }

    /// Consecutive successes the target needs to become healthy now.
    pub fn successes_needed(&self) -> u32 {
        match self.state {
            HealthState::Initial => self.healthy_threshold,
            _ => {
                let factor = (1u32 << self.flaps.min(31)).min(MAX_PENALTY_FACTOR);
                self.healthy_threshold * factor
            }
        }
    }

    /// Takes one probe result, arrived at `now`; returns the transition it caused.
    pub fn observe(&mut self, outcome: &ProbeOutcome, now: Instant) -> Option<Transition> {
        self.last = Some((outcome.clone(), now));
        if self.state == HealthState::Healthy && self.stayed_healthy(now) {
            self.flaps = 0;
        }
        if outcome.healthy {
            self.consecutive_successes = self.consecutive_successes.saturating_add(1);
            self.consecutive_failures = 0;
            if self.state != HealthState::Healthy
                && self.consecutive_successes >= self.successes_needed()
            {
                // Only a recovery from unhealthy can be followed by a flap: the first
                // healthy verdict after registration is no recovery.
                self.recovered_at = (self.state == HealthState::Unhealthy).then_some(now);
                return Some(self.enter(HealthState::Healthy, None, outcome));
            }
            return None;
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.consecutive_successes = 0;
        let reason = outcome.reason.unwrap_or(Reason::FailedHealthChecks);
        match self.state {
            HealthState::Unhealthy => {
                // Still unhealthy: show why the latest probe failed, as NLB does, and say
                // so when that is not what was last reported.
                let changed = self.reason != Some(reason) || self.reported_detail != outcome.detail;
                changed.then(|| self.enter(HealthState::Unhealthy, Some(reason), outcome))
            }
            _ if self.consecutive_failures < self.unhealthy_threshold => None,
            HealthState::Healthy => {
                if self.recovered_at.is_some() && !self.stayed_healthy(now) {
                    self.flaps = (self.flaps + 1).min(MAX_PENALTY_FACTOR.trailing_zeros());
                }
                Some(self.enter(HealthState::Unhealthy, Some(reason), outcome))
            }
            HealthState::Initial => Some(self.enter(HealthState::Unhealthy, Some(reason), outcome)),
        }
    }

    /// Whether the target has been healthy for a whole flap window by `now`.
    fn stayed_healthy(&self, now: Instant) -> bool {
        self.recovered_at
            .is_some_and(|at| now.saturating_duration_since(at) >= self.flap_window)
    }

    fn enter(
        &mut self,
        to: HealthState,
        reason: Option<Reason>,
        outcome: &ProbeOutcome,
    ) -> Transition {
        let from = self.state;
        self.state = to;
        self.reason = reason;
        self.reported_detail.clone_from(&outcome.detail);
        Transition {
            from,
            to,
            reason,
            detail: outcome.detail.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(1);

    fn ok() -> ProbeOutcome {
        ProbeOutcome::success("connected", Duration::from_millis(1))
    }

    fn refused() -> ProbeOutcome {
        ProbeOutcome::failure(
            Reason::FailedHealthChecks,
            "connection refused",
            Duration::ZERO,
        )
    }

    fn timed_out() -> ProbeOutcome {
        ProbeOutcome::failure(Reason::Timeout, "timed out after 2s", INTERVAL)
    }

    /// Feeds results one interval apart from `clock`, advancing it; returns the
    /// transitions.
    fn feed(
        health: &mut TargetHealth,
        clock: &mut Instant,
        outcomes: &[ProbeOutcome],
    ) -> Vec<Transition> {
        outcomes
            .iter()
            .filter_map(|outcome| {
                *clock += INTERVAL;
                health.observe(outcome, *clock)
            })
            .collect()
    }

    #[test]
    fn healthy_after_threshold_successes() {
        let mut clock = Instant::now();
        let mut health = TargetHealth::new(3, 2, INTERVAL);
        assert_eq!(health.state(), HealthState::Initial);
        assert_eq!(health.reason(), Some(Reason::InitialHealthChecking));
        assert!(feed(&mut health, &mut clock, &[ok(), ok()]).is_empty());
        assert_eq!(health.consecutive_successes(), 2);
        let transitions = feed(&mut health, &mut clock, &[ok()]);
        assert_eq!(
            transitions,
            vec![Transition {
                from: HealthState::Initial,
                to: HealthState::Healthy,
                reason: None,
                detail: "connected".into(),
            }]
        );
        assert_eq!(health.reason(), None);
        assert!(feed(&mut health, &mut clock, &[ok(), ok()]).is_empty());
    }

    #[test]
    fn initial_to_unhealthy_with_the_last_failures_reason() {
        let mut clock = Instant::now();
        let mut health = TargetHealth::new(3, 2, INTERVAL);
        assert!(feed(&mut health, &mut clock, &[refused()]).is_empty());
        // Still initial until the threshold.
        assert_eq!(health.reason(), Some(Reason::InitialHealthChecking));
        let transitions = feed(&mut health, &mut clock, &[timed_out()]);
        assert_eq!(transitions.len(), 1);
        assert_eq!(transitions[0].from, HealthState::Initial);
        assert_eq!(transitions[0].to, HealthState::Unhealthy);
        assert_eq!(transitions[0].reason, Some(Reason::Timeout));
        // The reason follows the latest failure while unhealthy, and a change is
        // reported (once).
        assert_eq!(
            feed(&mut health, &mut clock, &[refused(), refused()]),
            vec![Transition {
                from: HealthState::Unhealthy,
                to: HealthState::Unhealthy,
                reason: Some(Reason::FailedHealthChecks),
                detail: "connection refused".into(),
            }]
        );
        assert_eq!(health.reason(), Some(Reason::FailedHealthChecks));
        assert_eq!(
            health.last().map(|(o, _)| o.detail.as_str()),
            Some("connection refused")
        );
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let mut clock = Instant::now();
        let mut health = TargetHealth::new(1, 3, INTERVAL);
        feed(&mut health, &mut clock, &[ok()]);
        let transitions = feed(
            &mut health,
            &mut clock,
            &[refused(), refused(), ok(), refused(), refused()],
        );
        assert!(transitions.is_empty());
        assert_eq!(health.state(), HealthState::Healthy);
        assert_eq!(health.consecutive_failures(), 2);
        let transitions = feed(&mut health, &mut clock, &[refused()]);
        assert_eq!(transitions[0].to, HealthState::Unhealthy);
    }

    #[test]
    fn flapping_doubles_the_successes_needed_up_to_eight_times() {
        let mut clock = Instant::now();
        let mut health = TargetHealth::new(2, 1, INTERVAL);
        feed(&mut health, &mut clock, &[ok(), ok()]);
        assert_eq!(health.state(), HealthState::Healthy);
        // The first relapse follows registration, not a recovery: no flap yet. Each
        // relapse after that comes 1 s after a recovery and is one.
        let mut needed = Vec::new();
        for _ in 0..5 {
            feed(&mut health, &mut clock, &[refused()]);
            assert_eq!(health.state(), HealthState::Unhealthy);
            needed.push(health.successes_needed());
            let mut successes = 0;
            while health.state() != HealthState::Healthy {
                feed(&mut health, &mut clock, &[ok()]);
                successes += 1;
            }
            assert_eq!(successes, *needed.last().unwrap_or(&0));
        }
        assert_eq!(needed, vec![2, 4, 8, 16, 16]);
    }

    #[test]
    fn the_penalty_decays_after_a_long_healthy_spell() {
        let mut clock = Instant::now();
        let mut health = TargetHealth::new(2, 1, INTERVAL);
        feed(
            &mut health,
            &mut clock,
            &[ok(), ok(), refused(), ok(), ok(), refused()],
        );
        assert_eq!(health.flaps(), 1);
        feed(&mut health, &mut clock, &vec![ok(); 4]);
        assert_eq!(health.state(), HealthState::Healthy);
        // Healthy for 10 intervals: the penalty is gone, and the next failure is no flap.
        feed(&mut health, &mut clock, &vec![ok(); 10]);
        assert_eq!(health.flaps(), 0);
        feed(&mut health, &mut clock, &[refused()]);
        assert_eq!(health.flaps(), 0);
        assert_eq!(health.successes_needed(), 2);
    }

    #[test]
    fn a_late_relapse_is_not_a_flap() {
        let mut clock = Instant::now();
        let mut health = TargetHealth::new(1, 1, INTERVAL);
        feed(&mut health, &mut clock, &[ok(), refused(), ok()]);
        // No probe for a while (e.g. results delayed): the time, not the count, matters.
        clock += INTERVAL * 20;
        feed(&mut health, &mut clock, &[refused()]);
        assert_eq!(health.state(), HealthState::Unhealthy);
        assert_eq!(health.flaps(), 0);
    }
}
