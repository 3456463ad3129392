//! Active health checks of targets, with the semantics of AWS Network Load Balancer target
//! health: TCP, HTTP, HTTPS and exec probes, thresholds of consecutive results, and NLB's
//! reason codes. Pure tokio: no aya and no configuration parsing here; the agent maps its
//! configuration into [`CheckSpec`]s and turns [`HealthEvent`]s into lifecycle changes.
//!
//! - [`probe`] runs one check and says what happened ([`ProbeOutcome`]); [`agent_probe`]
//!   asks a target's agent port (HAProxy's `agent-check`) what weight it wants.
//! - [`TargetHealth`] (module `state`) is the per-target state machine: `initial` until
//!   `healthy_threshold` consecutive successes (→ `healthy`) or `unhealthy_threshold`
//!   consecutive failures (→ `unhealthy`), with flap damping (see [`TargetHealth`]). It is
//!   pure: results and times are its inputs, transitions its outputs.
//! - [`HealthChecker`] owns one tokio task per target (two with an agent check), spreads
//!   their first probes over the interval, caps the probes in flight, and reports every
//!   change as a [`HealthEvent`].
//!
//! Probes are bounded by the check's `timeout` as a whole (connect, TLS, request and
//! response together), as NLB's are, so a target that accepts but never answers fails
//! with `Target.Timeout` rather than holding its task.

mod agent_check;
mod checker;
mod http;
mod probe;
mod state;

use std::{fmt, time::Duration};

pub use agent_check::{
    agent_probe, parse_agent_line, AgentCheckError, AgentReply, AgentStatus, AGENT_LINE_MAX,
};
pub use checker::{
    spread_offset, AgentView, HealthChecker, HealthEvent, TargetHealthView, MAX_IN_FLIGHT,
};
pub use probe::{probe, BODY_LIMIT, USER_AGENT};
pub use state::{TargetHealth, Transition, FLAP_WINDOW_INTERVALS, MAX_PENALTY_FACTOR};

/// A target: its group and address, the key the lifecycle uses too, so that health events
/// need no translation.
pub use crate::target::TargetKey;

use crate::config::StatusMatcher;

/// How, where and how often a target is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    pub kind: CheckKind,
    /// The target's port to check (exec checks get it as `LB_TARGET_PORT`).
    pub port: u16,
    pub interval: Duration,
    /// Bounds a whole probe; a probe that takes longer fails with `Target.Timeout`.
    pub timeout: Duration,
    /// Consecutive successes that make a target healthy.
    pub healthy_threshold: u8,
    /// Consecutive failures that make a target unhealthy.
    pub unhealthy_threshold: u8,
}

/// What a probe does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// A TCP connection is accepted.
    Tcp,
    /// `GET path` over HTTP/1.1 answers with a matching status (and body substring).
    Http {
        path: String,
        matcher: StatusMatcher,
        /// Looked for in the first [`BODY_LIMIT`] bytes of the body.
        body_contains: Option<String>,
    },
    /// As `Http`, over TLS without certificate verification (as NLB: targets rarely have
    /// certificates for their IP addresses, and the check is about liveness, not identity).
    Https {
        path: String,
        matcher: StatusMatcher,
        body_contains: Option<String>,
    },
    /// A program (`command[0]` with the rest as arguments, no shell) exits with status 0.
    /// It gets `LB_TARGET_ADDRESS`, `LB_TARGET_PORT` and `LB_TARGET_GROUP` in its
    /// environment, runs in its own process group, and the group is killed on timeout. A
    /// stdout line `weight=N` or `N%` (0–100) reports that percentage of the target's
    /// configured weight, like keepalived's `MISC_CHECK` dynamic weight.
    Exec { command: Vec<String> },
}

impl CheckKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Http { .. } => "http",
            Self::Https { .. } => "https",
            Self::Exec { .. } => "exec",
        }
    }
}

/// An agent check (HAProxy's `agent-check`): the target's agent port answers one line
/// saying what weight percentage it wants and whether to drain it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentCheckSpec {
    pub port: u16,
    pub interval: Duration,
    pub timeout: Duration,
}

/// NLB's target-health reason codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    RegistrationInProgress,
    InitialHealthChecking,
    /// The HTTP status did not match, or the body lacked the required text.
    ResponseCodeMismatch,
    Timeout,
    /// Connection refused or reset, or an exec check exited non-zero.
    FailedHealthChecks,
    NotRegistered,
    NotInUse,
    DeregistrationInProgress,
    InvalidState,
    IpUnusable,
    HealthCheckDisabled,
    /// lb could not run the check (an exec program that cannot start, a bad request path).
    InternalError,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RegistrationInProgress => "Elb.RegistrationInProgress",
            Self::InitialHealthChecking => "Elb.InitialHealthChecking",
            Self::ResponseCodeMismatch => "Target.ResponseCodeMismatch",
            Self::Timeout => "Target.Timeout",
            Self::FailedHealthChecks => "Target.FailedHealthChecks",
            Self::NotRegistered => "Target.NotRegistered",
            Self::NotInUse => "Target.NotInUse",
            Self::DeregistrationInProgress => "Target.DeregistrationInProgress",
            Self::InvalidState => "Target.InvalidState",
            Self::IpUnusable => "Target.IpUnusable",
            Self::HealthCheckDisabled => "Target.HealthCheckDisabled",
            Self::InternalError => "Elb.InternalError",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the checks say about a target. The lifecycle states (draining, unused,
/// unhealthy.draining) are the agent's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthState {
    Initial,
    Healthy,
    Unhealthy,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        }
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeOutcome {
    pub healthy: bool,
    /// Why it failed; `None` when healthy.
    pub reason: Option<Reason>,
    /// Short text for operators: "HTTP 500 not in 200-399", "connection refused".
    pub detail: String,
    /// A weight percentage the target reported (exec checks), 0–100.
    pub weight_pct: Option<u8>,
    pub latency: Duration,
}

impl ProbeOutcome {
    pub fn success(detail: impl Into<String>, latency: Duration) -> Self {
        Self {
            healthy: true,
            reason: None,
            detail: detail.into(),
            weight_pct: None,
            latency,
        }
    }

    pub fn failure(reason: Reason, detail: impl Into<String>, latency: Duration) -> Self {
        Self {
            healthy: false,
            reason: Some(reason),
            detail: detail.into(),
            weight_pct: None,
            latency,
        }
    }
}

/// A duration as operators write it: "2s", "300ms", "1.5s".
pub(crate) fn human(duration: Duration) -> String {
    if duration.subsec_millis() == 0 && duration.as_secs() > 0 {
        format!("{}s", duration.as_secs())
    } else if duration.as_secs() == 0 {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_are_nlbs() {
        assert_eq!(Reason::Timeout.as_str(), "Target.Timeout");
        assert_eq!(
            Reason::InitialHealthChecking.as_str(),
            "Elb.InitialHealthChecking"
        );
        assert_eq!(Reason::InternalError.to_string(), "Elb.InternalError");
        assert_eq!(HealthState::Unhealthy.as_str(), "unhealthy");
    }

    #[test]
    fn durations_read_as_written() {
        assert_eq!(human(Duration::from_secs(2)), "2s");
        assert_eq!(human(Duration::from_millis(300)), "300ms");
        assert_eq!(human(Duration::from_millis(1500)), "1.5s");
    }
}
