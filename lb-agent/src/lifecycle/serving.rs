//! The lifecycle's output, [`Serving`]: for every target group, the targets the data plane
//! holds right now, each with its ring weight and whether it keeps its established flows.
//! It is the one source of what the rings hold: the installer (`crate::install`) builds
//! backend slots and Maglev rings from it and from nothing else, and a configured weight
//! becomes a ring weight only in [`ring_weight`].

use std::{collections::BTreeMap, net::IpAddr};

use crate::config::Config;

/// Ring weights are thousandths of a configured weight unit: a target at full weight `w`
/// has `1000·w`, and slow-start steps and reported percentages scale that without
/// rounding to nothing. Maglev shares depend only on the ratios, so the common factor
/// changes no ring for targets at full weight.
pub const RING_WEIGHT_SCALE: u32 = 1000;

/// The ring weight of a target at its full configured `weight`.
pub fn ring_weight(weight: u16) -> u32 {
    u32::from(weight) * RING_WEIGHT_SCALE
}

/// How the lifecycle wants one target served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetServing {
    /// Its weight for new flows, in [`RING_WEIGHT_SCALE`] units; 0 takes no new flows.
    pub ring_weight: u32,
    /// Whether flows already pinned to it in the flow table stay there. `false` clears its
    /// backend slot: such flows re-hash onto the ring (which then must not contain it).
    pub keeps_flows: bool,
}

impl TargetServing {
    /// At full configured weight, keeping its flows.
    pub fn full(weight: u16) -> Self {
        Self {
            ring_weight: ring_weight(weight),
            keeps_flows: true,
        }
    }

    /// The weight its ring slots are built from: a target whose flows must move is in no
    /// ring, because packets hashed to a cleared backend slot would be dropped.
    pub fn ring_share(&self) -> u32 {
        if self.keeps_flows {
            self.ring_weight
        } else {
            0
        }
    }
}

/// One target the data plane holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServedTarget {
    pub address: IpAddr,
    /// No longer in the configuration but still draining its flows for the group's
    /// deregistration delay (always at ring weight 0).
    pub deregistering: bool,
    pub serving: TargetServing,
}

/// Per target group, in configuration order: its registered targets in configuration
/// order, then its deregistered targets still draining.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Serving {
    groups: Vec<(String, Vec<ServedTarget>)>,
    /// Where each group is in `groups`, and each target in its group: lookups stay
    /// logarithmic with thousands of targets (`ctl backend list` asks for every one).
    group_index: BTreeMap<String, usize>,
    target_index: BTreeMap<(String, IpAddr), usize>,
}

impl Serving {
    /// Every configured target at full weight, keeping its flows: what is served before
    /// the lifecycle knows anything (and what tests and tools without one use).
    pub fn as_configured(cfg: &Config) -> Self {
        let mut serving = Self::default();
        for g in &cfg.target_groups {
            serving.add_group(&g.name);
            for t in &g.targets {
                serving.push(&g.name, t.address, false, TargetServing::full(t.weight));
            }
        }
        serving
    }

    /// The targets of `group` (none for a group it does not know).
    pub fn group(&self, group: &str) -> &[ServedTarget] {
        self.group_index
            .get(group)
            .map_or(&[], |&g| self.groups[g].1.as_slice())
    }

    /// Target `address` of `group`, if the data plane holds it.
    pub fn target(&self, group: &str, address: IpAddr) -> Option<&ServedTarget> {
        let t = *self.target_index.get(&(group.to_owned(), address))?;
        self.group(group).get(t)
    }

    /// Changes how target `address` of `group` is served; false if it is not held.
    pub fn set(&mut self, group: &str, address: IpAddr, serving: TargetServing) -> bool {
        let (Some(&g), Some(&t)) = (
            self.group_index.get(group),
            self.target_index.get(&(group.to_owned(), address)),
        ) else {
            return false;
        };
        self.groups[g].1[t].serving = serving;
        true
    }

    /// Starts group `name` (in the order groups are added; a group is added once).
    pub(super) fn add_group(&mut self, name: &str) {
        if !self.group_index.contains_key(name) {
            self.group_index.insert(name.to_owned(), self.groups.len());
            self.groups.push((name.to_owned(), Vec::new()));
        }
    }

    /// Adds a target to group `group` (added before); a target is added once.
    pub(super) fn push(
        &mut self,
        group: &str,
        address: IpAddr,
        deregistering: bool,
        serving: TargetServing,
    ) {
        let Some(&g) = self.group_index.get(group) else {
            return;
        };
        let key = (group.to_owned(), address);
        if self.target_index.contains_key(&key) {
            return;
        }
        let targets = &mut self.groups[g].1;
        self.target_index.insert(key, targets.len());
        targets.push(ServedTarget {
            address,
            deregistering,
            serving,
        });
    }
}
