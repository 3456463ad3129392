//! Between the running state and the announce table: after every change (a configuration,
//! a health verdict, the lifecycle tick, attaching, the operator) the agent decides again
//! which VIP addresses it wants announced ([`crate::announce::decide`]), logs every VIP
//! whose announcement changed with the reason, and hands the routes to the
//! [`Announcer`](crate::announce::kernel::Announcer) task.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, Instant, SystemTime},
};

use tracing::info;

use super::running::AgentState;
use crate::{
    announce::{self, kernel::Wanted, Decisions, HostState, RouteState, VipInput},
    config::{self, AnnounceSettings, Config},
    lifecycle::{self, TargetState},
    target::TargetKey,
};

/// The announcement side of the running state.
#[derive(Default)]
pub struct Announcements {
    /// The task writing the routes (none for an agent without a runtime, in tests).
    pub announcer: Option<announce::kernel::Announcer>,
    pub host: HostState,
    /// When the operator withdrew the host.
    pub withdrawn_at: Option<SystemTime>,
    /// The decisions last handed to the task.
    pub decisions: Decisions,
    /// The fleet fingerprint of what is installed.
    pub fingerprint: u64,
    /// Each group's healthy targets, and since when they are these (for settling).
    group_health: BTreeMap<String, (BTreeSet<IpAddr>, Instant)>,
    /// Decisions go to the task only once the agent has attached (or adopted) the data
    /// plane: until then a restarting agent must not withdraw what the previous one
    /// announced.
    live: bool,
}

impl Announcements {
    /// The routes the last decisions want, with this host's route tag.
    pub fn wanted(&self, cfg: Option<&Config>) -> Wanted {
        Wanted {
            table: cfg.map_or(AnnounceSettings::default().table, |c| c.announce.table),
            routes: self.decisions.routes(self.route_tag(cfg)),
        }
    }

    /// The metric of an announced route: the fleet fingerprint's route tag, or 1 with
    /// `[announce] route_tag = false`.
    pub fn route_tag(&self, cfg: Option<&Config>) -> u32 {
        if cfg.is_none_or(|c| c.announce.route_tag) {
            announce::route_tag(self.fingerprint)
        } else {
            1
        }
    }
}

impl AgentState {
    /// Decides again what to announce; logs what changed and hands it to the task.
    pub(super) fn sync_announcements(&mut self) {
        let healthy = self.healthy_targets();
        let now = Instant::now();
        self.track_group_health(&healthy, now);
        let inputs = self.config.as_ref().map_or_else(Vec::new, |cfg| {
            vip_inputs(cfg, &healthy, |vip| self.settling(cfg, vip, now))
        });
        let decisions = announce::decide(&self.announce.host, &inputs);
        let before: BTreeMap<&str, RouteState> = self
            .announce
            .decisions
            .vips
            .iter()
            .map(|v| (v.name.as_str(), v.state))
            .collect();
        for v in &decisions.vips {
            let old = before.get(v.name.as_str()).copied();
            if old != Some(v.state) {
                info!(
                    vip = v.name,
                    address = %v.address,
                    from = old.map_or("-", RouteState::as_str),
                    to = v.state.as_str(),
                    reason = v.reason,
                    "announcement"
                );
            }
        }
        self.announce.decisions = decisions;
        let wanted = self.announce.wanted(self.config.as_ref());
        if let (Some(task), true) = (&self.announce.announcer, self.announce.live) {
            task.want(wanted);
        }
    }

    /// The program is attached (VIPs may be announced from now on), or about to be
    /// detached (every VIP is withdrawn).
    pub fn set_attached(&mut self, attached: bool) {
        if !self.announce.live {
            // Decisions made before the data plane was live (every VIP withdrawn: not
            // attached) are no "before" to settle from: a restarted agent continues
            // what the previous one announced.
            self.announce.decisions = Decisions::default();
        }
        self.announce.host.attached = attached;
        self.announce.live = true;
        self.sync_announcements();
    }

    /// The operator withdraws every VIP (`why` says how) while forwarding goes on, or
    /// (`None`) lets the policies decide again. Returns whether anything changed.
    pub fn set_withdrawn(&mut self, why: Option<String>) -> bool {
        if self.announce.host.withdrawn == why {
            return false;
        }
        self.announce.withdrawn_at = why.as_ref().map(|_| SystemTime::now());
        match &why {
            Some(w) => info!(reason = w, "every VIP withdrawn; forwarding continues"),
            None => info!("withdrawal undone: VIPs are announced as their policies say"),
        }
        self.announce.host.withdrawn = why;
        self.sync_announcements();
        self.save();
        true
    }

    /// Records, per group of the running configuration, its healthy targets and since
    /// when they are these.
    fn track_group_health(&mut self, healthy: &BTreeSet<TargetKey>, now: Instant) {
        let Some(cfg) = &self.config else {
            return;
        };
        let mut tracked = BTreeMap::new();
        for g in &cfg.target_groups {
            let set: BTreeSet<IpAddr> = healthy
                .iter()
                .filter(|k| k.group == g.name)
                .map(|k| k.address)
                .collect();
            let since = match self.announce.group_health.get(&g.name) {
                Some((old, since)) if *old == set => *since,
                _ => now,
            };
            tracked.insert(g.name.clone(), (set, since));
        }
        self.announce.group_health = tracked;
    }

    /// How long `vip` must wait before it is announced normally again, if it must: it
    /// was not announced normally at the last decision, and its group's healthy targets
    /// changed less than one health-check interval ago. An agent's first decision never
    /// waits (a restarted agent continues what the previous one announced).
    fn settling(&self, cfg: &Config, vip: &config::Vip, now: Instant) -> Option<Duration> {
        let previous = self.announce.decisions.vip(&vip.name)?;
        if previous.state == RouteState::Announced {
            return None;
        }
        let group = cfg.group_of(vip)?;
        if !group.health_check.enabled {
            return None;
        }
        let hold = group.health_check.interval;
        let (_, since) = self.announce.group_health.get(&group.name)?;
        (now.duration_since(*since) < hold).then_some(hold)
    }

    /// The targets that are healthy right now.
    fn healthy_targets(&self) -> BTreeSet<TargetKey> {
        let now = lifecycle::now_ms();
        self.lifecycle
            .targets()
            .filter(|(key, _)| {
                self.lifecycle
                    .view(key, now, &self.failing_open)
                    .is_some_and(|v| v.state == TargetState::Healthy)
            })
            .map(|(key, _)| key.clone())
            .collect()
    }
}

/// Each VIP of `cfg` with its rule and its group's health, in configuration order.
/// Only registered targets count (a deregistering one may still be healthy, but takes
/// no new flows).
fn vip_inputs(
    cfg: &Config,
    healthy: &BTreeSet<TargetKey>,
    settling: impl Fn(&config::Vip) -> Option<Duration>,
) -> Vec<VipInput> {
    cfg.vips
        .iter()
        .map(|vip| {
            let (policy, min_healthy) = cfg.announce_rule(vip);
            let targets = cfg.group_of(vip).map_or(&[][..], |g| &g.targets[..]);
            let up = targets
                .iter()
                .filter(|t| healthy.contains(&TargetKey::new(&vip.target_group, t.address)))
                .count();
            VipInput {
                name: vip.name.clone(),
                address: vip.address,
                policy,
                min_healthy,
                healthy: u32::try_from(up).unwrap_or(u32::MAX),
                targets: u32::try_from(targets.len()).unwrap_or(u32::MAX),
                standby: cfg.announce.standby,
                settling: settling(vip),
            }
        })
        .collect()
}
