//! Installing services in the data plane: from a validated configuration's VIPs and the
//! lifecycle's [`Serving`] (which targets each group holds, at what ring weight) to VIP and
//! backend ids, Maglev rings, and the order of writes that keeps every packet on a
//! consistent view. A weight becomes ring slots here, in `plan_vip`, and nowhere else.
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

mod fingerprint;
mod recover;
#[cfg(test)]
mod tests;

pub use recover::{recover, Recovered};

use crate::{
    config::{self, Config},
    dataplane::{Dataplane, DataplaneError},
    lifecycle::Serving,
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
    pub ring_size: u32,
}

/// What an apply did (or, for a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub changed: Vec<VipChange>,
    /// VIPs whose ring, key and settings stay as they are (`disruption` is `None`).
    pub unchanged: Vec<VipChange>,
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
    /// The rings of the last apply with what they were built from: an apply whose group
    /// serves the same targets at the same weights reuses its ring instead of building it.
    rings: BTreeMap<(String, u32), BuiltRing>,
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
    rings: BTreeMap<(String, u32), BuiltRing>,
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
            rings: BTreeMap::new(),
        }
    }

    /// What [`Services::apply`] would do, without writing anything.
    pub fn dry_run(&self, cfg: &Config, serving: &Serving) -> Result<ApplyReport, ApplyError> {
        Ok(self.plan(cfg, serving)?.1)
    }

    /// Makes the data plane serve `cfg`'s VIPs with the targets, ring weights and flow
    /// decisions of `serving` (the lifecycle's output, or [`Serving::as_configured`]). On
    /// error, what was written so far stays (every intermediate state is consistent, see
    /// the module docs) and the record is not updated, so the next apply rewrites it all.
    pub fn apply(
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
        self.rings = plan.rings;
        Ok(report)
    }

    fn plan(&self, cfg: &Config, serving: &Serving) -> Result<(Plan, ApplyReport), ApplyError> {
        let mut report = ApplyReport::default();
        let backends = self.plan_backends(cfg, serving, &mut report)?;
        // VIP ids: keep existing ones, lowest free id for new VIPs.
        let used: BTreeSet<u32> = self
            .vip_ids
            .iter()
            .filter(|(name, _)| cfg.vip(name).is_some())
            .map(|(_, (id, _))| *id)
            .collect();
        let mut free_ids = (0..MAX_VIPS).filter(|id| !used.contains(id));
        let mut vips = Vec::new();
        let mut rings = Rings {
            serving,
            backend_ids: &backends.ids,
            previous: &self.rings,
            built: BTreeMap::new(),
        };
        for vip in &cfg.vips {
            let id = match self.vip_ids.get(&vip.name) {
                Some((id, _)) => *id,
                None => free_ids.next().ok_or(ApplyError::TooManyVips)?,
            };
            let installed = self.plan_vip(cfg, vip, id, &mut rings, &mut report)?;
            vips.push((vip.name.clone(), installed));
        }
        let built = rings.built;
        let fragment_entries = cfg
            .fragment_entries()
            .into_iter()
            .map(|(key, i)| (key, vips[i].1.meta))
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
                backend_ids: backends.ids,
                next_backend: backends.next,
                freed_backends: backends.freed,
                new_backends: backends.slots,
                vips,
                fragment_entries,
                removed_vips,
                dropped_backends: backends.dropped,
                rings: built,
            },
            report,
        ))
    }

    /// Backend ids and slots: existing targets keep their ids, new ones get the next
    /// never-used id (or, after the last, the lowest freed one).
    fn plan_backends(
        &self,
        cfg: &Config,
        serving: &Serving,
        report: &mut ApplyReport,
    ) -> Result<BackendPlan, ApplyError> {
        let mut ids = BTreeMap::new();
        let mut next = self.next_backend;
        let mut freed = self.freed_backends.clone();
        let mut slots = Vec::new();
        for group in &cfg.target_groups {
            for target in serving.group(&group.name) {
                let key = (group.name.clone(), target.address);
                let id = match self.backend_ids.get(&key) {
                    Some(id) => *id,
                    None => {
                        let id = if next < MAX_BACKENDS {
                            next += 1;
                            next - 1
                        } else {
                            freed.pop_first().ok_or(ApplyError::TooManyBackends)?
                        };
                        report.backends_added += 1;
                        BackendId(id)
                    }
                };
                let (addr, family) = addr16(target.address);
                slots.push((
                    id,
                    Backend {
                        addr,
                        family,
                        // A cleared slot keeps the id reserved but sends its flows back
                        // to the ring.
                        flags: if target.serving.keeps_flows {
                            backend_flags::IN_USE
                        } else {
                            0
                        },
                        _pad: [0; 2],
                    },
                ));
                ids.insert(key, id);
            }
        }
        let live: BTreeSet<BackendId> = ids.values().copied().collect();
        let dropped: Vec<BackendId> = self
            .backend_ids
            .values()
            .filter(|id| !live.contains(id))
            .copied()
            .collect();
        for id in &dropped {
            freed.insert(id.0);
        }
        report.backends_removed = dropped.len();
        Ok(BackendPlan {
            ids,
            next,
            freed,
            slots,
            dropped,
        })
    }

    /// VIP `vip`'s ring and entry as id `id`, and how it changes (into `report`).
    fn plan_vip(
        &self,
        cfg: &Config,
        vip: &config::Vip,
        id: u32,
        rings: &mut Rings<'_>,
        report: &mut ApplyReport,
    ) -> Result<Installed, ApplyError> {
        let (table, active) = rings.ring(cfg, vip)?;
        let meta = vip.meta(id, table.size());
        let old = self.vips.get(&vip.name);
        let unchanged =
            old.is_some_and(|o| o.table == table && o.meta == meta && o.key == vip.key());
        let change = VipChange {
            name: vip.name.clone(),
            vip_id: id,
            disruption: None,
            fingerprint: table.fingerprint(),
            backends: active,
            ring_size: table.size(),
        };
        if unchanged {
            report.unchanged.push(change);
        } else {
            report.changed.push(VipChange {
                disruption: old.map(|o| maglev::disruption(&o.table, &table)),
                ..change
            });
        }
        Ok(Installed {
            id,
            key: vip.key(),
            meta,
            table,
        })
    }
}

/// A ring and what it was built from.
#[derive(Clone, Debug)]
struct BuiltRing {
    members: Vec<maglev::Backend>,
    seed: u32,
    table: maglev::Table,
}

/// The rings of a plan, each built once: VIPs of one target group with one ring size
/// (ports 80 and 443 of a site) share it, and one whose group serves what it served at
/// the last apply is that apply's.
struct Rings<'a> {
    serving: &'a Serving,
    backend_ids: &'a BTreeMap<(String, IpAddr), BackendId>,
    previous: &'a BTreeMap<(String, u32), BuiltRing>,
    /// (group, ring size) → the ring.
    built: BTreeMap<(String, u32), BuiltRing>,
}

impl Rings<'_> {
    /// `vip`'s ring and how many backends it holds.
    fn ring(
        &mut self,
        cfg: &Config,
        vip: &config::Vip,
    ) -> Result<(maglev::Table, usize), ApplyError> {
        let key = (vip.target_group.clone(), vip.ring_size);
        let active = |r: &BuiltRing| r.members.iter().filter(|m| m.weight > 0).count();
        if let Some(r) = self.built.get(&key) {
            return Ok((r.table.clone(), active(r)));
        }
        // Where a weight becomes ring slots: each target served for the VIP's group
        // takes its ring share (see `crate::lifecycle::serving`), and Maglev turns the
        // shares into slot counts.
        let members: Vec<maglev::Backend> = self
            .serving
            .group(&vip.target_group)
            .iter()
            .filter_map(|t| {
                self.backend_ids
                    .get(&(vip.target_group.clone(), t.address))
                    .map(|id| maglev::Backend::for_target(id.0, t.address, t.serving.ring_share()))
            })
            .collect();
        let seed = cfg.agent.hash_seed;
        let table = match self.previous.get(&key) {
            Some(r) if r.seed == seed && r.members == members => r.table.clone(),
            _ => {
                maglev::build(&members, vip.ring_size, seed).map_err(|source| ApplyError::Ring {
                    vip: vip.name.clone(),
                    source,
                })?
            }
        };
        let ring = BuiltRing {
            members,
            seed,
            table,
        };
        let out = (ring.table.clone(), active(&ring));
        self.built.insert(key, ring);
        Ok(out)
    }
}

/// The backend side of a plan.
struct BackendPlan {
    ids: BTreeMap<(String, IpAddr), BackendId>,
    next: u32,
    freed: BTreeSet<u32>,
    /// Every current target's slot.
    slots: Vec<(BackendId, Backend)>,
    /// Ids no target has any more: their slots are cleared.
    dropped: Vec<BackendId>,
}
