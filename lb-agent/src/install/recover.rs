//! Rebuilding the VIP and backend ids from the pinned tables, for an agent that adopts a
//! running data plane without the previous agent's saved ids (the state file is missing,
//! or unreadable and the operator asked for `--recover-state`).
//!
//! A fresh allocation would number VIPs and targets in the file's order, which need not
//! be the order the previous agent numbered them in: flow-table entries would then name
//! another backend's id and their connections would move. The tables hold the answer:
//! each VIP entry its id, each backend slot its address, each ring the backend ids a
//! VIP's target group uses. Matched against the configuration:
//! - a VIP entry whose address, port and protocol a configured VIP has is that VIP; one
//!   no configured VIP has is recorded under a placeholder name, so the first apply
//!   removes it as it removes any VIP the configuration no longer has;
//! - a backend slot in a configured VIP's ring is the target of that VIP's group with
//!   the slot's address; a slot in no ring (quiesced, unhealthy, initial or draining
//!   targets) is the target with that address if exactly one group not yet matched has
//!   it;
//! - a slot matching nothing (a deregistered target still draining, a target added at
//!   run time and not in the file, an address in several groups) is left as it is: its
//!   id is never handed out again and its established flows keep going to it.
//!
//! Ids above the highest one in use are never-used; unused ones below it count as freed
//! (reused only after every other id), as the saved allocation would have them.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use lb_common::{
    service::{FAMILY_FRAG_KEY, FAMILY_V4},
    Backend,
};

use super::{key_addr, SavedBackend, SavedVip, ServicesState};
use crate::{config::Config, dataplane::tables::InstalledTables};

/// The rebuilt allocation and what could not be matched, in words for the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub state: ServicesState,
    /// VIP entries no configured VIP has (removed by the first apply).
    pub unknown_vips: Vec<String>,
    /// Backend slots no configured target matched (left as they are).
    pub orphan_backends: Vec<String>,
}

fn backend_addr(b: &Backend) -> IpAddr {
    if b.family == FAMILY_V4 {
        IpAddr::from([b.addr[0], b.addr[1], b.addr[2], b.addr[3]])
    } else {
        IpAddr::from(b.addr)
    }
}

/// The id allocation `tables` shows, named after `cfg`'s VIPs and targets.
pub fn recover(tables: &InstalledTables, cfg: &Config) -> Recovered {
    let mut out = Recovered::default();
    // VIP id → the configured VIP's target group.
    let mut vip_groups: BTreeMap<u32, &str> = BTreeMap::new();
    for (key, meta) in tables
        .vips
        .iter()
        .filter(|(k, _)| k.family & FAMILY_FRAG_KEY == 0)
    {
        let configured = cfg.vips.iter().find(|v| v.key() == *key);
        let name = match configured {
            Some(v) => {
                vip_groups.insert(meta.vip_id, v.target_group.as_str());
                v.name.clone()
            }
            None => {
                let what = format!(
                    "VIP id {} ({}:{} protocol {})",
                    meta.vip_id,
                    key_addr(key),
                    u16::from_be(key.port),
                    key.proto
                );
                out.unknown_vips.push(what);
                format!("(recovered VIP id {})", meta.vip_id)
            }
        };
        out.state.vips.push(SavedVip {
            name,
            id: meta.vip_id,
            address: key_addr(key),
            port: u16::from_be(key.port),
            proto: key.proto,
        });
    }
    let slots: BTreeMap<u32, IpAddr> = tables
        .backends
        .iter()
        .map(|(id, b)| (*id, backend_addr(b)))
        .collect();
    let mut ids: BTreeMap<(String, IpAddr), u32> = BTreeMap::new();
    let mut matched: BTreeSet<u32> = BTreeSet::new();
    // First what the rings say: a ring's backend belongs to its VIP's group.
    for (vip_id, group) in &vip_groups {
        let Some(ring) = tables.rings.get(vip_id) else {
            continue;
        };
        let members: BTreeSet<u32> = ring.iter().copied().collect();
        for id in members {
            let Some(address) = slots.get(&id) else {
                continue;
            };
            let configured = cfg
                .target_groups
                .iter()
                .any(|g| g.name == *group && g.targets.iter().any(|t| t.address == *address));
            let key = (group.to_string(), *address);
            if configured && !matched.contains(&id) && !ids.contains_key(&key) {
                ids.insert(key, id);
                matched.insert(id);
            }
        }
    }
    // Then slots in no ring: by address, where exactly one group still lacks it.
    for (id, address) in &slots {
        if matched.contains(id) {
            continue;
        }
        let mut candidates = cfg.target_groups.iter().filter(|g| {
            g.targets.iter().any(|t| t.address == *address)
                && !ids.contains_key(&(g.name.clone(), *address))
        });
        match (candidates.next(), candidates.next()) {
            (Some(g), None) => {
                ids.insert((g.name.clone(), *address), *id);
                matched.insert(*id);
            }
            _ => out
                .orphan_backends
                .push(format!("backend id {id} ({address})")),
        }
    }
    out.state.backends = ids
        .into_iter()
        .map(|((group, address), id)| SavedBackend { group, address, id })
        .collect();
    out.state.next_backend = slots.keys().next_back().map_or(0, |max| max + 1);
    out.state.freed_backends = (0..out.state.next_backend)
        .filter(|id| !slots.contains_key(id))
        .collect();
    out
}
