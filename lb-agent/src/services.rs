//! From a validated configuration to the data plane: VIP and backend ids, Maglev rings,
//! and the order of writes that keeps every packet on a consistent view.
//!
//! [`Services::apply`] computes everything first (ids, rings, what moves) and only then
//! writes, through the [`DataplaneOps`] seam (the real `Dataplane`, or an in-memory fake
//! in tests). Writes go in an order that never leaves a packet without a valid answer:
//! 1. runtime settings;
//! 2. backend slots of every current target (new ones first exist before any ring
//!    points at them);
//! 3. per VIP: a ring growing in size is installed before its VIP entry, one shrinking
//!    after it (see `Dataplane::install_ring`), so every index a packet computes exists;
//!    rings are swapped whole;
//! 4. VIPs no longer configured are removed;
//! 5. backend slots no ring refers to any more are cleared (their flows re-hash).
//!
//! Ids are stable for the agent's lifetime: a VIP keeps its id while its name exists, a
//! target keeps its backend id while (group, address) exists. Freed backend ids are not
//! reused until every other id has been used once, so a flow-table entry left behind by
//! a removed backend never silently points at a new one.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::IpAddr,
};

use lb_common::{
    service::{addr16, backend_flags, MAX_BACKENDS, MAX_VIPS},
    Backend, LbConfig, VipKey, VipMeta,
};
use tracing::info;

use crate::{
    config::Config,
    dataplane::{Dataplane, DataplaneError},
    maglev,
};

/// The data-plane writes [`Services`] needs: a seam for tests.
pub trait DataplaneOps {
    fn set_config(&mut self, cfg: &LbConfig) -> Result<(), DataplaneError>;
    fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<(), DataplaneError>;
    fn set_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<(), DataplaneError>;
    fn remove_vip(&mut self, key: &VipKey) -> Result<(), DataplaneError>;
    fn install_ring(&mut self, vip_id: u32, slots: &[u32]) -> Result<(), DataplaneError>;
}

impl DataplaneOps for Dataplane {
    fn set_config(&mut self, cfg: &LbConfig) -> Result<(), DataplaneError> {
        Dataplane::set_config(self, cfg)
    }
    fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<(), DataplaneError> {
        Dataplane::set_backend(self, id, backend)
    }
    fn set_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<(), DataplaneError> {
        Dataplane::set_vip(self, key, meta)
    }
    fn remove_vip(&mut self, key: &VipKey) -> Result<(), DataplaneError> {
        Dataplane::remove_vip(self, key)
    }
    fn install_ring(&mut self, vip_id: u32, slots: &[u32]) -> Result<(), DataplaneError> {
        Dataplane::install_ring(self, vip_id, slots)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("more than {MAX_VIPS} VIPs")]
    TooManyVips,
    #[error("more than {MAX_BACKENDS} targets")]
    TooManyBackends,
    #[error("building the ring of VIP {vip:?}: {source}")]
    Ring {
        vip: String,
        source: maglev::MaglevError,
    },
    #[error("writing to the data plane: {0}")]
    Dataplane(#[from] DataplaneError),
}

/// The id allocation a restarted agent continues (saved as JSON between runs).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServicesState {
    pub vips: Vec<SavedVip>,
    pub backends: Vec<SavedBackend>,
    pub next_backend: u32,
    pub freed_backends: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedVip {
    pub name: String,
    pub id: u32,
    pub address: IpAddr,
    pub port: u16,
    pub proto: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedBackend {
    pub group: String,
    pub address: IpAddr,
    pub id: u32,
}

fn key_addr(key: &VipKey) -> IpAddr {
    if key.family == lb_common::service::FAMILY_V4 {
        IpAddr::from([key.addr[0], key.addr[1], key.addr[2], key.addr[3]])
    } else {
        IpAddr::from(key.addr)
    }
}

fn saved_key(v: &SavedVip) -> VipKey {
    let (addr, family) = addr16(v.address);
    VipKey {
        addr,
        port: v.port.to_be(),
        proto: v.proto,
        family,
    }
}

/// One target as the data plane knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct BackendId(u32);

/// What is installed for one VIP.
#[derive(Clone, Debug)]
struct Installed {
    id: u32,
    key: VipKey,
    meta: VipMeta,
    table: maglev::Table,
}

/// How one VIP changed in an apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipChange {
    pub name: String,
    pub vip_id: u32,
    /// `None` for a new VIP.
    pub disruption: Option<maglev::Disruption>,
    pub fingerprint: u64,
    pub backends: usize,
}

/// How the backend lifecycle wants one target served (see `crate::lifecycle`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetServing {
    /// Its weight in the ring, in thousandths of a configured weight unit: a target at
    /// full weight `w` has `1000·w`; slow start and agent-check percentages scale it; 0 takes
    /// no new flows. Maglev shares depend only on the ratios, so the common factor changes
    /// nothing for targets at full weight.
    pub ring_weight: u32,
    /// Whether flows already pinned to it in the flow table stay there. `false` clears its
    /// backend slot: such flows re-hash onto the ring (which must not contain it).
    pub keeps_flows: bool,
}

/// Per-target serving decisions; a target not listed is served as configured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Serving {
    pub targets: BTreeMap<(String, IpAddr), TargetServing>,
}

impl Serving {
    /// How `address` of `group`, configured with `weight`, is served.
    pub fn of(&self, group: &str, address: IpAddr, weight: u16) -> TargetServing {
        self.targets
            .get(&(group.to_owned(), address))
            .copied()
            .unwrap_or(TargetServing {
                ring_weight: u32::from(weight) * 1000,
                keeps_flows: true,
            })
    }
}

/// What an apply did (or, for a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub changed: Vec<VipChange>,
    pub unchanged: Vec<String>,
    pub removed: Vec<String>,
    pub backends_added: usize,
    pub backends_removed: usize,
}

/// The agent's record of what it installed in the data plane.
#[derive(Debug, Default)]
pub struct Services {
    /// VIP name → id and key, for every VIP in the data plane (also those adopted from a
    /// previous agent, whose rings this agent has not built itself).
    vip_ids: BTreeMap<String, (u32, VipKey)>,
    /// What this agent installed itself (rings it can diff against).
    vips: BTreeMap<String, Installed>,
    backend_ids: BTreeMap<(String, IpAddr), BackendId>,
    /// The next never-used backend id; after the last, freed ids are reused lowest first.
    next_backend: u32,
    freed_backends: BTreeSet<u32>,
    config: Option<LbConfig>,
}

/// Everything an apply will write, computed before writing anything.
struct Plan {
    config: LbConfig,
    backend_ids: BTreeMap<(String, IpAddr), BackendId>,
    next_backend: u32,
    freed_backends: BTreeSet<u32>,
    new_backends: Vec<(BackendId, Backend)>,
    vips: Vec<(String, Installed)>,
    fragment_entries: Vec<(VipKey, VipMeta)>,
    removed_vips: Vec<String>,
    dropped_backends: Vec<BackendId>,
}

impl Services {
    pub fn new() -> Self {
        Self::default()
    }

    /// The installed ring's fingerprint of each VIP, by name (for `status` and restarts).
    pub fn fingerprints(&self) -> BTreeMap<String, u64> {
        self.vips
            .iter()
            .map(|(name, v)| (name.clone(), v.table.fingerprint()))
            .collect()
    }

    /// The VIP id and the ring this agent installed for VIP `name`.
    pub fn vip(&self, name: &str) -> Option<(u32, &maglev::Table)> {
        self.vips.get(name).map(|v| (v.id, &v.table))
    }

    /// The backend id of target `address` in group `group`.
    pub fn backend_id(&self, group: &str, address: IpAddr) -> Option<u32> {
        self.backend_ids
            .get(&(group.to_owned(), address))
            .map(|b| b.0)
    }

    /// The id allocation, to be saved and handed to the next agent ([`Services::restore`]),
    /// so that a restarted agent keeps every VIP and backend id and the flow table stays
    /// valid.
    pub fn state(&self) -> ServicesState {
        ServicesState {
            vips: self
                .vip_ids
                .iter()
                .map(|(name, (id, key))| SavedVip {
                    name: name.clone(),
                    id: *id,
                    address: key_addr(key),
                    port: u16::from_be(key.port),
                    proto: key.proto,
                })
                .collect(),
            backends: self
                .backend_ids
                .iter()
                .map(|((group, address), id)| SavedBackend {
                    group: group.clone(),
                    address: *address,
                    id: id.0,
                })
                .collect(),
            next_backend: self.next_backend,
            freed_backends: self.freed_backends.iter().copied().collect(),
        }
    }

    /// Services that continue a previous agent's id allocation. Rings are rebuilt on the
    /// next apply (identical ones for an unchanged configuration, swapped in whole).
    pub fn restore(state: &ServicesState) -> Self {
        Self {
            vip_ids: state
                .vips
                .iter()
                .map(|v| (v.name.clone(), (v.id, saved_key(v))))
                .collect(),
            vips: BTreeMap::new(),
            backend_ids: state
                .backends
                .iter()
                .map(|b| ((b.group.clone(), b.address), BackendId(b.id)))
                .collect(),
            next_backend: state.next_backend,
            freed_backends: state.freed_backends.iter().copied().collect(),
            config: None,
        }
    }

    /// What [`Services::apply`] would do, without writing anything.
    pub fn dry_run(&self, cfg: &Config) -> Result<ApplyReport, ApplyError> {
        self.dry_run_serving(cfg, &Serving::default())
    }

    /// [`Services::dry_run`] with the lifecycle's serving decisions.
    pub fn dry_run_serving(
        &self,
        cfg: &Config,
        serving: &Serving,
    ) -> Result<ApplyReport, ApplyError> {
        Ok(self.plan(cfg, serving)?.1)
    }

    /// Makes the data plane serve `cfg`. On error, what was written so far stays (every
    /// intermediate state is consistent, see the module docs) and the record is not
    /// updated, so the next apply rewrites it all.
    pub fn apply(
        &mut self,
        cfg: &Config,
        dp: &mut impl DataplaneOps,
    ) -> Result<ApplyReport, ApplyError> {
        self.apply_serving(cfg, &Serving::default(), dp)
    }

    /// [`Services::apply`] with the lifecycle's serving decisions: ring weights and which
    /// targets keep their established flows.
    pub fn apply_serving(
        &mut self,
        cfg: &Config,
        serving: &Serving,
        dp: &mut impl DataplaneOps,
    ) -> Result<ApplyReport, ApplyError> {
        let (plan, report) = self.plan(cfg, serving)?;
        dp.set_config(&plan.config)?;
        // Slots a ring will point at are written before the rings; slots losing IN_USE
        // (their flows must move) only after, when no ring points at them any more.
        let (live, cleared): (Vec<_>, Vec<_>) = plan
            .new_backends
            .iter()
            .partition(|(_, b)| b.flags & backend_flags::IN_USE != 0);
        for (id, backend) in &live {
            dp.set_backend(id.0, backend)?;
        }
        for (name, vip) in &plan.vips {
            let old_size = self.vips.get(name).map_or(0, |v| v.meta.ring_size);
            let same_ring = self.vips.get(name).is_some_and(|v| v.table == vip.table);
            if vip.meta.ring_size >= old_size {
                if !same_ring {
                    dp.install_ring(vip.id, vip.table.slots())?;
                }
                dp.set_vip(&vip.key, &vip.meta)?;
            } else {
                dp.set_vip(&vip.key, &vip.meta)?;
                dp.install_ring(vip.id, vip.table.slots())?;
            }
        }
        for (key, meta) in &plan.fragment_entries {
            dp.set_vip(key, meta)?;
        }
        let live_frag_keys: HashSet<VipKey> =
            plan.fragment_entries.iter().map(|(k, _)| *k).collect();
        for name in &plan.removed_vips {
            if let Some((_, key)) = self.vip_ids.get(name) {
                dp.remove_vip(key)?;
                let frag = key.fragment_key();
                if !live_frag_keys.contains(&frag) {
                    dp.remove_vip(&frag)?;
                }
            }
        }
        for (id, backend) in &cleared {
            dp.set_backend(id.0, backend)?;
        }
        for id in &plan.dropped_backends {
            dp.set_backend(id.0, &Backend::default())?;
        }
        for change in &report.changed {
            info!(
                vip = change.name,
                vip_id = change.vip_id,
                backends = change.backends,
                fingerprint = format!("{:016x}", change.fingerprint),
                moved = change.disruption.as_ref().map(|d| d.moved),
                forced = change.disruption.as_ref().map(|d| d.forced),
                "ring installed"
            );
        }
        for name in &report.removed {
            info!(vip = name, "VIP removed");
        }
        self.vip_ids = plan
            .vips
            .iter()
            .map(|(name, v)| (name.clone(), (v.id, v.key)))
            .collect();
        self.vips = plan.vips.into_iter().collect();
        self.backend_ids = plan.backend_ids;
        self.next_backend = plan.next_backend;
        self.freed_backends = plan.freed_backends;
        self.config = Some(plan.config);
        Ok(report)
    }

    fn plan(&self, cfg: &Config, serving: &Serving) -> Result<(Plan, ApplyReport), ApplyError> {
        let mut report = ApplyReport::default();
        // Backend ids: keep existing ones, allocate for new targets.
        let mut backend_ids = BTreeMap::new();
        let mut next_backend = self.next_backend;
        let mut freed = self.freed_backends.clone();
        let mut new_backends = Vec::new();
        for group in &cfg.target_groups {
            for target in &group.targets {
                let key = (group.name.clone(), target.address);
                let id = match self.backend_ids.get(&key) {
                    Some(id) => *id,
                    None => {
                        let id = if next_backend < MAX_BACKENDS {
                            next_backend += 1;
                            next_backend - 1
                        } else {
                            freed.pop_first().ok_or(ApplyError::TooManyBackends)?
                        };
                        report.backends_added += 1;
                        BackendId(id)
                    }
                };
                let (addr, family) = addr16(target.address);
                let keeps = serving
                    .of(&group.name, target.address, target.weight)
                    .keeps_flows;
                new_backends.push((
                    id,
                    Backend {
                        addr,
                        family,
                        // A cleared slot keeps the id reserved but sends its flows back
                        // to the ring.
                        flags: if keeps { backend_flags::IN_USE } else { 0 },
                        _pad: [0; 2],
                    },
                ));
                backend_ids.insert(key, id);
            }
        }
        let live: BTreeSet<BackendId> = backend_ids.values().copied().collect();
        let dropped_backends: Vec<BackendId> = self
            .backend_ids
            .values()
            .filter(|id| !live.contains(id))
            .copied()
            .collect();
        for id in &dropped_backends {
            freed.insert(id.0);
        }
        report.backends_removed = dropped_backends.len();

        // VIP ids: keep existing ones, lowest free id for new VIPs.
        let used: BTreeSet<u32> = self
            .vip_ids
            .iter()
            .filter(|(name, _)| cfg.vip(name).is_some())
            .map(|(_, (id, _))| *id)
            .collect();
        let mut free_ids = (0..MAX_VIPS).filter(|id| !used.contains(id));
        let mut vips = Vec::new();
        let mut metas = Vec::new();
        for vip in &cfg.vips {
            let id = match self.vip_ids.get(&vip.name) {
                Some((id, _)) => *id,
                None => free_ids.next().ok_or(ApplyError::TooManyVips)?,
            };
            let members: Vec<maglev::Backend> = cfg
                .group_of(vip)
                .map(|g| {
                    g.targets
                        .iter()
                        .filter_map(|t| {
                            let serve = serving.of(&g.name, t.address, t.weight);
                            // A slot without IN_USE must never be in a ring: packets
                            // hashed to it would be dropped.
                            let weight = if serve.keeps_flows {
                                serve.ring_weight
                            } else {
                                0
                            };
                            backend_ids
                                .get(&(g.name.clone(), t.address))
                                .map(|id| maglev::Backend::for_target(id.0, t.address, weight))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let table =
                maglev::build(&members, vip.ring_size, cfg.agent.hash_seed).map_err(|source| {
                    ApplyError::Ring {
                        vip: vip.name.clone(),
                        source,
                    }
                })?;
            let meta = vip.meta(id, table.size());
            let old = self.vips.get(&vip.name);
            let unchanged =
                old.is_some_and(|o| o.table == table && o.meta == meta && o.key == vip.key());
            if unchanged {
                report.unchanged.push(vip.name.clone());
            } else {
                report.changed.push(VipChange {
                    name: vip.name.clone(),
                    vip_id: id,
                    disruption: old.map(|o| maglev::disruption(&o.table, &table)),
                    fingerprint: table.fingerprint(),
                    backends: members.iter().filter(|m| m.weight > 0).count(),
                });
            }
            metas.push(meta);
            vips.push((
                vip.name.clone(),
                Installed {
                    id,
                    key: vip.key(),
                    meta,
                    table,
                },
            ));
        }
        let fragment_entries = cfg
            .fragment_entries()
            .into_iter()
            .map(|(key, i)| (key, metas[i]))
            .collect();
        let removed_vips: Vec<String> = self
            .vip_ids
            .keys()
            .filter(|name| cfg.vip(name).is_none())
            .cloned()
            .collect();
        report.removed = removed_vips.clone();
        Ok((
            Plan {
                config: cfg.agent.lb_config(),
                backend_ids,
                next_backend,
                freed_backends: freed,
                new_backends,
                vips,
                fragment_entries,
                removed_vips,
                dropped_backends,
            },
            report,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use std::collections::HashMap;

    /// The data plane as maps in memory, recording the order of writes.
    #[derive(Default)]
    struct Fake {
        config: Option<LbConfig>,
        backends: HashMap<u32, Backend>,
        vips: HashMap<VipKey, VipMeta>,
        rings: HashMap<u32, Vec<u32>>,
        log: Vec<String>,
    }

    impl DataplaneOps for Fake {
        fn set_config(&mut self, cfg: &LbConfig) -> Result<(), DataplaneError> {
            self.config = Some(*cfg);
            self.log.push("config".into());
            Ok(())
        }
        fn set_backend(&mut self, id: u32, b: &Backend) -> Result<(), DataplaneError> {
            // A slot is never cleared while a ring still points at it.
            if b.flags & backend_flags::IN_USE == 0 {
                for (vip, ring) in &self.rings {
                    assert!(
                        !ring.contains(&id),
                        "backend {id} cleared while the ring of VIP {vip} points at it"
                    );
                }
            }
            self.backends.insert(id, *b);
            self.log.push(format!("backend {id}"));
            Ok(())
        }
        fn set_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<(), DataplaneError> {
            self.vips.insert(*key, *meta);
            self.log
                .push(format!("vip {} size {}", meta.vip_id, meta.ring_size));
            Ok(())
        }
        fn remove_vip(&mut self, key: &VipKey) -> Result<(), DataplaneError> {
            self.vips.remove(key);
            self.log.push("remove vip".into());
            Ok(())
        }
        fn install_ring(&mut self, vip_id: u32, slots: &[u32]) -> Result<(), DataplaneError> {
            // Every slot must name a backend that is already in use.
            for s in slots {
                if *s != maglev::NO_BACKEND {
                    let in_use = self
                        .backends
                        .get(s)
                        .is_some_and(|b| b.flags & backend_flags::IN_USE != 0);
                    assert!(
                        in_use,
                        "ring of VIP {vip_id} points at backend {s} before it exists"
                    );
                }
            }
            self.rings.insert(vip_id, slots.to_vec());
            self.log.push(format!("ring {vip_id} size {}", slots.len()));
            Ok(())
        }
    }

    fn cfg(text: &str) -> Config {
        config::parse(text).unwrap_or_else(|e| panic!("test config invalid: {e}"))
    }

    const TWO_VIPS: &str = r#"
        [[vip]]
        name = "web"
        address = "198.18.200.1"
        port = 80
        protocol = "tcp"
        mode = "dr"
        ring_size = 1021
        target_group = "web"

        [[vip]]
        name = "dns"
        address = "198.18.200.1"
        port = 53
        protocol = "udp"
        mode = "dr"
        ring_size = 1021
        target_group = "web"

        [[target_group]]
        name = "web"
        [target_group.health_check]
        port = 80
        [[target_group.target]]
        address = "198.18.11.2"
        [[target_group.target]]
        address = "198.18.12.2"
        [[target_group.target]]
        address = "198.18.13.2"
    "#;

    #[test]
    fn serving_decisions_scale_weights_and_clear_slots_after_the_rings() {
        let mut s = Services::new();
        let mut dp = Fake::default();
        s.apply(&cfg(TWO_VIPS), &mut dp).expect("apply");
        let plain = s.fingerprints();
        // A common factor on every weight changes no ring.
        let a: IpAddr = "198.18.11.2".parse().expect("ip");
        let mut serving = Serving::default();
        for t in ["198.18.11.2", "198.18.12.2", "198.18.13.2"] {
            serving.targets.insert(
                ("web".into(), t.parse().expect("ip")),
                TargetServing {
                    ring_weight: 7,
                    keeps_flows: true,
                },
            );
        }
        let report = s
            .apply_serving(&cfg(TWO_VIPS), &serving, &mut dp)
            .expect("apply");
        assert_eq!(report.changed.len(), 0);
        assert_eq!(s.fingerprints(), plain);
        // One target stops keeping its flows: out of every ring, its slot cleared (after
        // the rings, which the fake checks), its id kept.
        let id = s.backend_id("web", a).expect("id");
        serving.targets.insert(
            ("web".into(), a),
            TargetServing {
                ring_weight: 7,
                keeps_flows: false,
            },
        );
        s.apply_serving(&cfg(TWO_VIPS), &serving, &mut dp)
            .expect("apply");
        assert!(dp.rings.values().all(|r| !r.contains(&id)));
        assert_eq!(dp.backends[&id].flags & backend_flags::IN_USE, 0);
        assert_eq!(s.backend_id("web", a), Some(id));
        // And back: the slot is in use before any ring points at it again.
        s.apply_serving(&cfg(TWO_VIPS), &Serving::default(), &mut dp)
            .expect("apply");
        assert!(dp.rings.values().all(|r| r.contains(&id)));
        assert_eq!(s.fingerprints(), plain);
    }

    #[test]
    fn first_apply_installs_everything_in_a_safe_order() {
        let mut s = Services::new();
        let mut dp = Fake::default();
        let report = s.apply(&cfg(TWO_VIPS), &mut dp).expect("apply");
        assert_eq!(report.changed.len(), 2);
        assert_eq!(report.backends_added, 3);
        assert_eq!(dp.backends.len(), 3);
        assert_eq!(dp.rings.len(), 2);
        // Two VIP entries and one fragment entry per (address, protocol): tcp and udp.
        assert_eq!(dp.vips.len(), 4);
        let first_ring = dp
            .log
            .iter()
            .position(|l| l.starts_with("ring"))
            .expect("a ring");
        let last_backend = dp
            .log
            .iter()
            .rposition(|l| l.starts_with("backend"))
            .expect("backends");
        assert!(
            last_backend < first_ring,
            "rings before backends: {:?}",
            dp.log
        );
        // Both VIPs share the target group, so they share backend ids.
        assert_eq!(
            s.vip("web").map(|v| v.1.clone()),
            s.vip("dns").map(|v| v.1.clone())
        );
    }

    #[test]
    fn reapplying_the_same_config_changes_nothing() {
        let mut s = Services::new();
        let mut dp = Fake::default();
        s.apply(&cfg(TWO_VIPS), &mut dp).expect("apply");
        dp.log.clear();
        let report = s.apply(&cfg(TWO_VIPS), &mut dp).expect("apply");
        assert!(report.changed.is_empty(), "{report:?}");
        assert_eq!(report.unchanged.len(), 2);
        assert!(
            !dp.log.iter().any(|l| l.starts_with("ring")),
            "rings rewritten: {:?}",
            dp.log
        );
    }

    #[test]
    fn removing_a_target_reports_disruption_and_clears_its_slot() {
        let mut s = Services::new();
        let mut dp = Fake::default();
        s.apply(&cfg(TWO_VIPS), &mut dp).expect("apply");
        let gone = s
            .backend_id("web", "198.18.13.2".parse().expect("ip"))
            .expect("id");
        let without = TWO_VIPS.replace(
            "[[target_group.target]]\n        address = \"198.18.13.2\"",
            "",
        );
        let dry = s.dry_run(&cfg(&without)).expect("dry run");
        let report = s.apply(&cfg(&without), &mut dp).expect("apply");
        assert_eq!(dry, report, "dry run and apply must agree");
        assert_eq!(report.backends_removed, 1);
        let web = report
            .changed
            .iter()
            .find(|c| c.name == "web")
            .expect("web changed");
        let d = web
            .disruption
            .as_ref()
            .expect("disruption of an existing VIP");
        assert!(d.forced > 0 && d.moved >= d.forced, "{d:?}");
        assert_eq!(
            dp.backends[&gone],
            Backend::default(),
            "removed backend's slot not cleared"
        );
        assert!(!dp.rings.values().any(|r| r.contains(&gone)));
        // Ids of the survivors are unchanged.
        assert_eq!(
            s.backend_id("web", "198.18.11.2".parse().expect("ip")),
            Some(0)
        );
    }

    #[test]
    fn removed_vip_entries_go_and_ids_stay_stable() {
        let mut s = Services::new();
        let mut dp = Fake::default();
        s.apply(&cfg(TWO_VIPS), &mut dp).expect("apply");
        let web_id = s.vip("web").map(|v| v.0);
        let only_web = TWO_VIPS;
        let start = only_web
            .find("        [[vip]]\n        name = \"dns\"")
            .expect("dns block");
        let end = only_web.find("        [[target_group]]").expect("groups");
        let only_web = format!("{}{}", &only_web[..start], &only_web[end..]);
        let report = s.apply(&cfg(&only_web), &mut dp).expect("apply");
        assert_eq!(report.removed, vec!["dns".to_string()]);
        assert_eq!(s.vip("web").map(|v| v.0), web_id);
        // web's tcp entry and its tcp fragment entry remain; dns's udp entries are gone.
        assert_eq!(dp.vips.len(), 2, "{:?}", dp.log);
    }

    #[test]
    fn a_restored_agent_keeps_every_id_and_installs_identical_rings() {
        let mut first = Services::new();
        let mut dp = Fake::default();
        first.apply(&cfg(TWO_VIPS), &mut dp).expect("apply");
        let rings = dp.rings.clone();
        let vips = dp.vips.clone();
        let saved = first.state();
        let json = serde_json::to_string(&saved).expect("serialize");
        let restored: ServicesState = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(restored, saved);
        let mut second = Services::restore(&restored);
        second.apply(&cfg(TWO_VIPS), &mut dp).expect("apply");
        assert_eq!(dp.rings, rings, "rings changed across a restart");
        assert_eq!(dp.vips, vips, "VIP entries changed across a restart");
        assert_eq!(second.state(), saved);
        // A VIP removed while the agent was down is removed on the restored agent's apply.
        let start = TWO_VIPS
            .find("        [[vip]]\n        name = \"dns\"")
            .expect("dns block");
        let end = TWO_VIPS.find("        [[target_group]]").expect("groups");
        let only_web = format!("{}{}", &TWO_VIPS[..start], &TWO_VIPS[end..]);
        let mut third = Services::restore(&saved);
        let report = third.apply(&cfg(&only_web), &mut dp).expect("apply");
        assert_eq!(report.removed, vec!["dns".to_string()]);
        assert_eq!(dp.vips.len(), 2);
    }

    #[test]
    fn freed_backend_ids_are_not_reused_at_once() {
        let mut s = Services::new();
        let mut dp = Fake::default();
        s.apply(&cfg(TWO_VIPS), &mut dp).expect("apply");
        let swapped = TWO_VIPS.replace("198.18.13.2", "198.18.14.2");
        s.apply(&cfg(&swapped), &mut dp).expect("apply");
        assert_eq!(
            s.backend_id("web", "198.18.14.2".parse().expect("ip")),
            Some(3)
        );
    }
}
