//! Checks between items, on whatever parsed: one function per rule, run in the order of
//! [`RULES`] (the order their problems are listed in). Here are the rules about the whole
//! file (data-plane limits, unused groups, health-check ports); [`unique`] holds those
//! about what two items may not share, [`vip_group`] those between a VIP and its target
//! group. A health check's traffic port, the one value that depends on other items, is
//! filled in here too.

mod unique;
mod vip_group;

use std::collections::{BTreeSet, HashMap};

use super::{group::GroupDraft, health::CheckPort, vip::VipDraft, Limits, Report};
use unique::{target_group_names_unique, targets_are_not_vips, vip_keys_unique, vip_names_unique};
use vip_group::vips_against_their_groups;

/// Checks the items against each other, and fills in each health check's port.
pub(super) fn cross_check(
    r: &mut Report,
    vips: &[VipDraft<'_>],
    groups: &mut [GroupDraft<'_>],
    limits: &Limits,
) {
    let s = Scope::new(vips, groups, limits);
    for rule in RULES {
        rule(r, &s);
    }
    // A port that could not be resolved was reported by `health_check_ports_are_known`.
    let ports: Vec<Option<u16>> = (0..groups.len())
        .map(|gi| s.check_port(gi).ok().flatten())
        .collect();
    for (g, port) in groups.iter_mut().zip(ports) {
        if let Some(check) = g.health_check.as_mut() {
            check.port = port;
        }
    }
}

type Rule = fn(&mut Report, &Scope<'_, '_>);

/// Every rule between items, in the order their problems (and warnings) are listed.
const RULES: &[Rule] = &[
    target_group_names_unique,
    vip_names_unique,
    vip_keys_unique,
    targets_are_not_vips,
    vips_against_their_groups,
    groups_are_used,
    health_check_ports_are_known,
    vips_fit_the_data_plane,
    targets_fit_the_data_plane,
    some_vip_is_defined,
];

/// What the rules read: every item as far as it parsed, and which VIPs use which group.
struct Scope<'d, 'a> {
    vips: &'d [VipDraft<'a>],
    groups: &'d [GroupDraft<'a>],
    limits: &'d Limits,
    /// The first target group of each name (its index in `groups`).
    group_index: HashMap<&'a str, usize>,
    /// For each group, the VIPs (indexes in `vips`) that name it.
    users: Vec<Vec<usize>>,
}

impl<'d, 'a> Scope<'d, 'a> {
    fn new(vips: &'d [VipDraft<'a>], groups: &'d [GroupDraft<'a>], limits: &'d Limits) -> Self {
        let mut group_index: HashMap<&'a str, usize> = HashMap::new();
        for g in groups {
            if let Some(name) = g.name {
                group_index.entry(name).or_insert(g.index);
            }
        }
        let mut users = vec![Vec::new(); groups.len()];
        for (vi, v) in vips.iter().enumerate() {
            if let Some(&gi) = v.target_group.and_then(|n| group_index.get(n)) {
                users[gi].push(vi);
            }
        }
        Self {
            vips,
            groups,
            limits,
            group_index,
            users,
        }
    }

    fn used_by(&self, gi: usize) -> Vec<&'d VipDraft<'a>> {
        self.users[gi].iter().map(|&vi| &self.vips[vi]).collect()
    }

    /// The port group `gi`'s health check uses: the configured one, else the one port
    /// all of the group's VIPs use (NLB's "traffic-port"); the error says why there is
    /// none.
    fn check_port(&self, gi: usize) -> Result<Option<u16>, String> {
        let g = &self.groups[gi];
        let Some(check) = g.health_check.as_ref() else {
            return Ok(None);
        };
        match g.check_port {
            CheckPort::Port(p) => Ok(Some(p)),
            CheckPort::Invalid => Ok(None),
            CheckPort::Traffic if !check.enabled => Ok(None),
            CheckPort::Traffic => traffic_port(&self.used_by(gi)),
        }
    }
}

/// The one port the VIPs of a group use, if they use one.
fn traffic_port(used_by: &[&VipDraft<'_>]) -> Result<Option<u16>, String> {
    if let Some(all_ports) = used_by.iter().find(|v| v.port == Some(0)) {
        return Err(format!(
            "missing: required because {} forwards every port (port = 0), so there is no \
             single traffic port to check",
            all_ports.label
        ));
    }
    let ports: BTreeSet<u16> = used_by.iter().filter_map(|v| v.port).collect();
    if ports.len() > 1 {
        let list: Vec<String> = used_by
            .iter()
            .filter_map(|v| v.port.map(|p| format!("{} port {p}", v.label)))
            .collect();
        return Err(format!(
            "missing: required because the group serves VIPs on several ports ({}); say \
             which one to check",
            list.join(", ")
        ));
    }
    Ok(ports.first().copied())
}

/// A warning for a group no VIP uses (a duplicate name was reported already).
fn groups_are_used(r: &mut Report, s: &Scope<'_, '_>) {
    for (gi, g) in s.groups.iter().enumerate() {
        let first_of_its_name = g.name.and_then(|n| s.group_index.get(n)) == Some(&g.index);
        if s.users[gi].is_empty() && first_of_its_name {
            r.warnings.push(format!(
                "{}: no VIP uses this target group; its targets receive no traffic",
                g.label
            ));
        }
    }
}

fn health_check_ports_are_known(r: &mut Report, s: &Scope<'_, '_>) {
    for (gi, g) in s.groups.iter().enumerate() {
        if let Err(why) = s.check_port(gi) {
            r.problem(&g.label, "health_check.port", why);
        }
    }
}

fn vips_fit_the_data_plane(r: &mut Report, s: &Scope<'_, '_>) {
    if s.vips.len() > s.limits.max_vips {
        r.problems.push(format!(
            "too many VIPs: {} are defined, the data plane holds at most {}",
            s.vips.len(),
            s.limits.max_vips
        ));
    }
}

fn targets_fit_the_data_plane(r: &mut Report, s: &Scope<'_, '_>) {
    let targets: usize = s.groups.iter().map(|g| g.targets.len()).sum();
    if targets > s.limits.max_targets {
        r.problems.push(format!(
            "too many targets: {targets} across all target groups, the data plane holds at \
             most {}",
            s.limits.max_targets
        ));
    }
}

/// A warning for a file that forwards nothing.
fn some_vip_is_defined(r: &mut Report, s: &Scope<'_, '_>) {
    if s.vips.is_empty() {
        r.warnings.push(
            "no VIPs are defined: the load balancer forwards nothing (every packet passes to \
             the kernel)"
                .to_owned(),
        );
    }
}
