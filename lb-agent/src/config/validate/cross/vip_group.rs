//! Rules between a VIP and the target group it names: the group exists, and its targets
//! suit the VIP's mode and ring.

use std::{collections::BTreeSet, net::IpAddr};

use super::{GroupDraft, Report, Scope, VipDraft};
use crate::{config::Mode, maglev};

type VipGroupRule = fn(&mut Report, &VipDraft<'_>, &GroupDraft<'_>);

/// The rules between a VIP and the target group it names, in order.
const VIP_GROUP_RULES: &[VipGroupRule] = &[
    dr_targets_share_the_vip_family,
    ring_holds_the_targets,
    group_has_serving_targets,
];

/// Each VIP names an existing target group, and meets [`VIP_GROUP_RULES`] with it.
pub(super) fn vips_against_their_groups(r: &mut Report, s: &Scope<'_, '_>) {
    for v in s.vips {
        let Some(g) = target_group_exists(r, s, v) else {
            continue;
        };
        for rule in VIP_GROUP_RULES {
            rule(r, v, g);
        }
    }
}

/// The group `v` names, or `None` (reported, unless the name itself is missing).
fn target_group_exists<'d>(
    r: &mut Report,
    s: &Scope<'d, '_>,
    v: &VipDraft<'_>,
) -> Option<&'d GroupDraft<'d>> {
    let group_name = v.target_group?;
    if let Some(&gi) = s.group_index.get(group_name) {
        return Some(&s.groups[gi]);
    }
    let known: Vec<String> = s
        .group_index
        .keys()
        .copied()
        .collect::<BTreeSet<_>>()
        .iter()
        .map(|n| format!("{n:?}"))
        .collect();
    let known = if known.is_empty() {
        "there are none".to_owned()
    } else {
        format!("defined: {}", known.join(", "))
    };
    r.problem(
        &v.label,
        "target_group",
        format!("no target_group is named {group_name:?} ({known})"),
    );
    None
}

/// Direct routing rewrites MAC addresses only, so it cannot cross address families.
fn dr_targets_share_the_vip_family(r: &mut Report, v: &VipDraft<'_>, g: &GroupDraft<'_>) {
    let (Some(Mode::Dr), Some(vip_addr)) = (v.mode, v.address) else {
        return;
    };
    let foreign: Vec<String> = g
        .targets
        .iter()
        .filter_map(|t| t.address)
        .filter(|a| a.is_ipv4() != vip_addr.is_ipv4())
        .map(|a| a.to_string())
        .collect();
    if !foreign.is_empty() {
        r.problem(
            &v.label,
            "mode",
            format!(
                "\"dr\" only reaches targets of the VIP's address family ({}), but {} has {}; \
                 use mode = \"tunnel\" or \"gue\" to mix families",
                family(vip_addr),
                g.label,
                foreign.join(", ")
            ),
        );
    }
}

fn family(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// A ring needs a slot per target, and warns when it is too small to share them evenly.
fn ring_holds_the_targets(r: &mut Report, v: &VipDraft<'_>, g: &GroupDraft<'_>) {
    let Some(size) = v.ring_size else { return };
    let n = g.targets.len();
    if n > size as usize {
        r.problem(
            &v.label,
            "ring_size",
            format!(
                "{size} slots cannot hold the {n} targets of {}; use a larger size",
                g.label
            ),
        );
    } else if let Some(why) = maglev::warn_small(size, n) {
        r.warn(
            &v.label,
            "ring_size",
            format!("{why} ({} has {n} targets)", g.label),
        );
    }
}

/// A warning when the VIP's group can take no new flow.
fn group_has_serving_targets(r: &mut Report, v: &VipDraft<'_>, g: &GroupDraft<'_>) {
    let group = &g.label;
    if g.targets.is_empty() {
        r.warn(
            &v.label,
            "target_group",
            format!("{group} has no targets: the VIP drops every packet (counted as no_backend)"),
        );
    } else if g.targets.iter().all(|t| t.weight == Some(0)) {
        r.warn(
            &v.label,
            "target_group",
            format!(
                "every target of {group} has weight 0: the VIP drops every new flow (counted \
                 as no_backend)"
            ),
        );
    }
}
