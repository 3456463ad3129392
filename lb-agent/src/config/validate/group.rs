//! The `[[target_group]]` tables and their `[[target_group.target]]`s: names, targets and
//! weights, and the lifecycle settings (deregistration, slow start, unhealthy handling).
//! The two check tables are [`super::health`] and [`super::agent_check`].

use std::{collections::HashMap, net::IpAddr, ops::RangeInclusive, time::Duration};

use super::{
    address::unicast,
    agent_check::agent_check,
    health::{health_check, CheckPort},
    label, name, raw, Report,
};
use crate::config::{AgentCheck, HealthCheck, Target, TargetGroup};

const WEIGHT: RangeInclusive<i64> = 0..=65535;
const DEFAULT_WEIGHT: u16 = 1;
/// NLB: deregistration delay 0–3600 s, default 300.
const DEREGISTRATION_DELAY_SECS: RangeInclusive<i64> = 0..=3600;
const DEFAULT_DEREGISTRATION_DELAY_SECS: u64 = 300;
/// 0 (off) or this range, as for ALB target groups.
const SLOW_START_SECS: RangeInclusive<i64> = 30..=900;
/// NLB: target_health_state.unhealthy.draining_interval_seconds, 0–360000 s, default 0.
const UNHEALTHY_DRAINING_INTERVAL_SECS: RangeInclusive<i64> = 0..=360_000;

/// A target group as far as it parsed.
pub(super) struct GroupDraft<'a> {
    pub label: String,
    pub index: usize,
    pub name: Option<&'a str>,
    pub targets: Vec<TargetDraft>,
    /// Every field but `port`, which depends on the VIPs.
    pub health_check: Option<HealthCheck>,
    pub check_port: CheckPort,
    deregistration_delay: Option<Duration>,
    slow_start: Option<Duration>,
    fail_open: bool,
    unhealthy_connection_termination: bool,
    unhealthy_draining_interval: Option<Duration>,
    /// `None` if it failed; `Some(None)` if there is none.
    agent_check: Option<Option<AgentCheck>>,
}

pub(super) struct TargetDraft {
    pub label: String,
    pub address: Option<IpAddr>,
    pub weight: Option<u16>,
}

impl GroupDraft<'_> {
    pub fn finish(self) -> Option<TargetGroup> {
        let targets: Option<Vec<Target>> = self
            .targets
            .into_iter()
            .map(|t| {
                Some(Target {
                    address: t.address?,
                    weight: t.weight?,
                })
            })
            .collect();
        Some(TargetGroup {
            name: self.name?.to_owned(),
            targets: targets?,
            health_check: self.health_check?,
            deregistration_delay: self.deregistration_delay?,
            slow_start: self.slow_start?,
            fail_open: self.fail_open,
            unhealthy_connection_termination: self.unhealthy_connection_termination,
            unhealthy_draining_interval: self.unhealthy_draining_interval?,
            agent_check: self.agent_check?,
        })
    }
}

pub(super) fn group<'a>(r: &mut Report, index: usize, raw: &'a raw::TargetGroup) -> GroupDraft<'a> {
    let label = label("target_group", index, raw.name.as_deref());
    let item = label.as_str();

    let name = name(r, item, raw.name.as_deref());
    let deregistration_delay = r
        .int(
            item,
            "deregistration_delay_secs",
            raw.deregistration_delay_secs,
            DEREGISTRATION_DELAY_SECS,
            DEFAULT_DEREGISTRATION_DELAY_SECS,
        )
        .map(Duration::from_secs);
    let slow_start = slow_start(r, item, raw.slow_start_secs);
    let targets = targets(r, item, &raw.target);
    let unhealthy_connection_termination = raw.unhealthy_connection_termination.unwrap_or(true);
    let unhealthy_draining_interval = unhealthy_draining_interval(
        r,
        item,
        raw.unhealthy_draining_interval_secs,
        unhealthy_connection_termination,
    );
    let (health_check, check_port) = health_check(r, item, &raw.health_check);
    let agent_check = agent_check(r, item, raw);
    GroupDraft {
        label,
        index,
        name,
        targets,
        health_check,
        check_port,
        deregistration_delay,
        slow_start,
        fail_open: raw.fail_open.unwrap_or(true),
        unhealthy_connection_termination,
        unhealthy_draining_interval,
        agent_check,
    }
}

/// Zero (off) when absent.
fn slow_start(r: &mut Report, item: &str, value: Option<i64>) -> Option<Duration> {
    match value {
        None | Some(0) => Some(Duration::ZERO),
        Some(s) => match u64::try_from(s) {
            Ok(secs) if SLOW_START_SECS.contains(&s) => Some(Duration::from_secs(secs)),
            _ => {
                r.problem(
                    item,
                    "slow_start_secs",
                    format!(
                        "{s} is out of range: must be 0 (off) or between {} and {}",
                        SLOW_START_SECS.start(),
                        SLOW_START_SECS.end()
                    ),
                );
                None
            }
        },
    }
}

/// The group's targets, each address at most once; `group` is the group's label.
fn targets(r: &mut Report, group: &str, raw: &[raw::Target]) -> Vec<TargetDraft> {
    let mut targets = Vec::with_capacity(raw.len());
    let mut seen: HashMap<IpAddr, usize> = HashMap::new();
    for (i, t) in raw.iter().enumerate() {
        let tlabel = match t.address.as_deref() {
            Some(a) => format!("{group}: target {a}"),
            None => format!("{group}: target #{}", i + 1),
        };
        let address = r
            .required(&tlabel, "address", t.address.as_deref())
            .and_then(|text| r.ok(&tlabel, "address", unicast(text)));
        if let Some(addr) = address {
            if let Some(first) = seen.insert(addr, i) {
                r.problem(
                    &tlabel,
                    "address",
                    format!(
                        "{addr} is listed twice in the group (targets #{} and #{}); each \
                         address may appear once per group",
                        first + 1,
                        i + 1
                    ),
                );
            }
        }
        let weight = r.int(&tlabel, "weight", t.weight, WEIGHT, DEFAULT_WEIGHT);
        targets.push(TargetDraft {
            label: tlabel,
            address,
            weight,
        });
    }
    targets
}

/// Zero when absent; anything else only with `unhealthy_connection_termination` off.
fn unhealthy_draining_interval(
    r: &mut Report,
    item: &str,
    value: Option<i64>,
    termination: bool,
) -> Option<Duration> {
    let Some(s) = value else {
        return Some(Duration::ZERO);
    };
    let secs: u64 = r.in_range(
        item,
        "unhealthy_draining_interval_secs",
        s,
        UNHEALTHY_DRAINING_INTERVAL_SECS,
    )?;
    if secs > 0 && termination {
        r.problem(
            item,
            "unhealthy_draining_interval_secs",
            format!(
                "{secs} needs unhealthy_connection_termination = false (as in an AWS NLB: \
                 with termination on, an unhealthy target's flows move at once; with it off, \
                 they stay for this interval)"
            ),
        );
        return None;
    }
    Some(Duration::from_secs(secs))
}
