//! The forwarding tables: writing what the data plane forwards by (runtime config, VIPs,
//! backends, Maglev rings and the interfaces packets may be redirected to) and reading
//! the flow table back. `crate::install` decides what to write and in which order.

use std::os::fd::AsFd as _;

use aya::maps::{Array, ArrayOfMaps, DevMapHash, HashMap, IterableMap as _, MapData};
use lb_common::{
    maps,
    service::{BPF_F_INNER_MAP, MAX_BACKENDS, MAX_RING_SIZE, MAX_VIPS},
    Backend, FlowKey, FlowValue, LbConfig, VipKey, VipMeta,
};

use super::{batch, Dataplane, DataplaneError};

impl Dataplane {
    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, DataplaneError> {
        self.ebpf
            .map_mut(name)
            .ok_or(DataplaneError::MissingMap(name))
    }

    /// Replaces the runtime config (one map update: packets see old or new, never a mix).
    pub fn set_config(&mut self, cfg: &LbConfig) -> Result<(), DataplaneError> {
        let name = maps::CONFIG;
        let mut m = Array::<_, LbConfig>::try_from(self.map_mut(name)?)
            .map_err(|source| DataplaneError::Map { name, source })?;
        m.set(0, cfg, 0)
            .map_err(|source| DataplaneError::Map { name, source })
    }

    /// The runtime config the data plane currently reads.
    pub fn config(&self) -> Result<LbConfig, DataplaneError> {
        let name = maps::CONFIG;
        let map = self
            .ebpf
            .map(name)
            .ok_or(DataplaneError::MissingMap(name))?;
        let m = Array::<_, LbConfig>::try_from(map)
            .map_err(|source| DataplaneError::Map { name, source })?;
        m.get(&0, 0)
            .map_err(|source| DataplaneError::Map { name, source })
    }

    /// Writes backend slot `id` (set `backend_flags::IN_USE` for a live backend; an
    /// all-zero value clears the slot).
    pub fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<(), DataplaneError> {
        if id >= MAX_BACKENDS {
            return Err(DataplaneError::OutOfRange {
                what: "backend id",
                value: id,
                max: MAX_BACKENDS - 1,
            });
        }
        let name = maps::BACKENDS;
        let mut m = Array::<_, Backend>::try_from(self.map_mut(name)?)
            .map_err(|source| DataplaneError::Map { name, source })?;
        m.set(id, backend, 0)
            .map_err(|source| DataplaneError::Map { name, source })
    }

    /// Adds or replaces a VIP entry (including fragment entries, see
    /// `lb_common::service::FAMILY_FRAG_KEY`).
    pub fn set_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<(), DataplaneError> {
        if meta.vip_id >= MAX_VIPS {
            return Err(DataplaneError::OutOfRange {
                what: "VIP id",
                value: meta.vip_id,
                max: MAX_VIPS - 1,
            });
        }
        let name = maps::VIPS;
        let mut m = HashMap::<_, VipKey, VipMeta>::try_from(self.map_mut(name)?)
            .map_err(|source| DataplaneError::Map { name, source })?;
        m.insert(key, meta, 0)
            .map_err(|source| DataplaneError::Map { name, source })
    }

    /// Removes a VIP entry; removing one that does not exist is not an error.
    pub fn remove_vip(&mut self, key: &VipKey) -> Result<(), DataplaneError> {
        let name = maps::VIPS;
        let mut m = HashMap::<_, VipKey, VipMeta>::try_from(self.map_mut(name)?)
            .map_err(|source| DataplaneError::Map { name, source })?;
        match m.remove(key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(DataplaneError::Map { name, source }),
        }
    }

    /// Installs a complete Maglev ring for `vip_id`: a new inner map is created and filled
    /// first, then swapped in with a single update of the outer array, so no packet ever
    /// sees a half-written ring. Returns once the new ring is live.
    ///
    /// If the ring size changes, update the VIP's `ring_size` after installing a larger
    /// ring and before installing a smaller one, so every index a packet computes exists.
    pub fn install_ring(&mut self, vip_id: u32, slots: &[u32]) -> Result<(), DataplaneError> {
        let size = slots.len() as u32;
        if vip_id >= MAX_VIPS {
            return Err(DataplaneError::OutOfRange {
                what: "VIP id",
                value: vip_id,
                max: MAX_VIPS - 1,
            });
        }
        if size == 0 || size > MAX_RING_SIZE {
            return Err(DataplaneError::OutOfRange {
                what: "ring size",
                value: size,
                max: MAX_RING_SIZE,
            });
        }
        let name = maps::RINGS;
        let mut inner = Array::<MapData, u32>::create(size, BPF_F_INNER_MAP)
            .map_err(|source| DataplaneError::Map { name, source })?;
        // One batched call; slot by slot only where the kernel refuses batches.
        if let Err(error) = batch::set_u32_array(inner.map().fd().as_fd(), slots) {
            tracing::debug!(%error, "batched ring write refused; writing slot by slot");
            for (i, slot) in slots.iter().enumerate() {
                inner
                    .set(i as u32, slot, 0)
                    .map_err(|source| DataplaneError::Map { name, source })?;
            }
        }
        let mut outer = ArrayOfMaps::<_, Array<MapData, u32>>::try_from(self.map_mut(name)?)
            .map_err(|source| DataplaneError::Map { name, source })?;
        outer
            .set(vip_id, &inner, 0)
            .map_err(|source| DataplaneError::Map { name, source })
    }

    /// Allows `XDP_REDIRECT` to interface `ifindex` (egress other than the ingress one).
    /// The kernel resolves `ifindex` in the calling thread's network namespace, so call
    /// this from the namespace the interface lives in.
    pub fn add_tx_port(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        let name = maps::TX_PORTS;
        let mut m = DevMapHash::try_from(self.map_mut(name)?)
            .map_err(|source| DataplaneError::Map { name, source })?;
        m.insert(ifindex, ifindex, None, 0)
            .map_err(|e| DataplaneError::TxPort {
                ifindex,
                reason: e.to_string(),
            })
    }

    /// The flow table's entry for `key`, if any.
    pub fn flow(&self, key: &FlowKey) -> Result<Option<FlowValue>, DataplaneError> {
        match self.flows()?.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(DataplaneError::Map {
                name: maps::FLOWS,
                source,
            }),
        }
    }

    /// The flow table, typed.
    fn flows(&self) -> Result<HashMap<&MapData, FlowKey, FlowValue>, DataplaneError> {
        let name = maps::FLOWS;
        let map = self
            .ebpf
            .map(name)
            .ok_or(DataplaneError::MissingMap(name))?;
        HashMap::try_from(map).map_err(|source| DataplaneError::Map { name, source })
    }
}

/// What the data plane forwards by, read back: every VIP entry, every backend slot in
/// use and each VIP's ring. A restarted agent without its saved ids rebuilds them from
/// this (`crate::install::recover`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstalledTables {
    /// VIP entries, fragment entries included.
    pub vips: Vec<(VipKey, VipMeta)>,
    /// Backend slots whose address is set (in use, or cleared but still reserved).
    pub backends: Vec<(u32, Backend)>,
    /// Each VIP id's ring: the backend id of every slot.
    pub rings: std::collections::BTreeMap<u32, Vec<u32>>,
}

impl Dataplane {
    /// Reads the VIP, backend and ring tables (one system call per entry: for a
    /// one-off recovery, not for every request).
    pub fn installed_tables(&self) -> Result<InstalledTables, DataplaneError> {
        let map = |name: &'static str| self.ebpf.map(name).ok_or(DataplaneError::MissingMap(name));
        let err = |name: &'static str| move |source| DataplaneError::Map { name, source };
        let vips: Vec<(VipKey, VipMeta)> =
            HashMap::<_, VipKey, VipMeta>::try_from(map(maps::VIPS)?)
                .map_err(err(maps::VIPS))?
                .iter()
                .collect::<Result<_, _>>()
                .map_err(err(maps::VIPS))?;
        let slots =
            Array::<_, Backend>::try_from(map(maps::BACKENDS)?).map_err(err(maps::BACKENDS))?;
        let mut backends = Vec::new();
        for id in 0..MAX_BACKENDS {
            let b = slots.get(&id, 0).map_err(err(maps::BACKENDS))?;
            if b.family != 0 {
                backends.push((id, b));
            }
        }
        let outer = ArrayOfMaps::<_, Array<MapData, u32>>::try_from(map(maps::RINGS)?)
            .map_err(err(maps::RINGS))?;
        let mut rings = std::collections::BTreeMap::new();
        for (_, meta) in &vips {
            if rings.contains_key(&meta.vip_id) {
                continue;
            }
            match outer.get(&meta.vip_id, 0) {
                Ok(inner) => {
                    let slots: Vec<u32> = inner
                        .iter()
                        .collect::<Result<_, _>>()
                        .map_err(err(maps::RINGS))?;
                    rings.insert(meta.vip_id, slots);
                }
                // No ring installed for it (yet): nothing to learn from.
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(source) => return Err(err(maps::RINGS)(source)),
            }
        }
        Ok(InstalledTables {
            vips,
            backends,
            rings,
        })
    }
}

/// How long a TCP flow with no packet still counts as active: an NLB's TCP idle timeout
/// (350 s). Entries stay in the table longer (until the LRU reuses them).
pub const TCP_ACTIVE_NS: u64 = 350 * 1_000_000_000;

/// Flow-table entries of one (VIP id, backend id).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowTally {
    /// Every entry, active or not.
    pub entries: u64,
    /// TCP entries seen within [`TCP_ACTIVE_NS`] whose client has not sent FIN or RST.
    pub active_tcp: u64,
    /// UDP entries seen within the configured UDP idle time.
    pub active_udp: u64,
}

impl FlowTally {
    pub fn active(&self) -> u64 {
        self.active_tcp + self.active_udp
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
            + u64::try_from(t.tv_nsec()).unwrap_or(0)
    })
}

impl Dataplane {
    /// Active flows per (VIP id, backend id) (see [`FlowTally`]). Walks the whole table:
    /// for the admin interface and periodic metrics, not per packet.
    pub fn flow_counts(
        &self,
    ) -> Result<std::collections::HashMap<(u32, u32), u64>, DataplaneError> {
        Ok(self
            .flow_tally()?
            .into_iter()
            .map(|(k, t)| (k, t.active()))
            .collect())
    }

    /// Entries and active flows per (VIP id, backend id).
    pub fn flow_tally(
        &self,
    ) -> Result<std::collections::HashMap<(u32, u32), FlowTally>, DataplaneError> {
        let udp_idle = self.config()?.udp_idle_ns;
        let m = self.flows()?;
        let now = monotonic_ns();
        let mut counts = std::collections::HashMap::<(u32, u32), FlowTally>::new();
        // In batches (one system call per few thousand entries); entry by entry only
        // where the kernel refuses batches. The map's key and value sizes were checked
        // against FlowKey and FlowValue when it was loaded or adopted.
        let walked =
            batch::for_each_hash_entry::<FlowKey, FlowValue>(m.map().fd().as_fd(), |k, v| {
                tally(&mut counts, k, v, now, udp_idle)
            });
        if let Err(error) = walked {
            tracing::debug!(%error, "batched flow-table walk refused; walking entry by entry");
            counts.clear();
            // An entry evicted between listing and reading is simply not counted.
            for (k, v) in m.iter().flatten() {
                tally(&mut counts, &k, &v, now, udp_idle);
            }
        }
        Ok(counts)
    }
}

/// Counts one flow-table entry into its (VIP, backend) tally: TCP entries are active
/// while not closing and seen within NLB's idle timeout, UDP ones within the VIP's.
fn tally(
    counts: &mut std::collections::HashMap<(u32, u32), FlowTally>,
    k: &FlowKey,
    v: &FlowValue,
    now: u64,
    udp_idle: u64,
) {
    let t = counts.entry((v.vip_id, v.backend_id)).or_default();
    t.entries += 1;
    let idle = now.saturating_sub(v.last_seen());
    if k.proto == lb_common::service::PROTO_UDP {
        if idle <= udp_idle {
            t.active_udp += 1;
        }
    } else if !v.closing() && idle <= TCP_ACTIVE_NS {
        t.active_tcp += 1;
    }
}
