//! The fleet fingerprint: one number for everything that decides where this host sends a
//! new flow (the hash seed, every VIP's key, mode and hash fields, and every ring slot as
//! the target address it names). Hosts behind one ECMP group must show the same one, or
//! a flow the router moves between them changes target.
//!
//! Slots are hashed as target addresses, not backend ids: ids are each host's own
//! numbering (they depend on the order targets were added), so two hosts with the same
//! configuration reached by different edits build rings that differ in ids but send
//! every flow to the same target.

use std::{collections::HashMap, net::IpAddr};

use lb_common::service::addr16;

use super::Services;
use crate::maglev::fnv1a64;

impl Services {
    /// FNV-1a 64 over the seed and the installed VIPs in key order (see the module docs).
    pub fn fleet_fingerprint(&self, hash_seed: u32) -> u64 {
        let address_of: HashMap<u32, IpAddr> = self
            .backend_ids
            .iter()
            .map(|((_, address), id)| (id.0, *address))
            .collect();
        let mut vips: Vec<_> = self.vips.values().collect();
        vips.sort_by_key(|v| (v.key.family, v.key.addr, v.key.proto, v.key.port));
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&hash_seed.to_le_bytes());
        for vip in vips {
            bytes.extend_from_slice(&vip.key.addr);
            bytes.extend_from_slice(&vip.key.port.to_le_bytes());
            bytes.extend([vip.key.proto, vip.key.family, vip.meta.mode]);
            bytes.extend_from_slice(&vip.meta.flags.to_le_bytes());
            bytes.extend_from_slice(&vip.meta.gue_port.to_le_bytes());
            bytes.extend_from_slice(&vip.meta.ring_size.to_le_bytes());
            for slot in vip.table.slots() {
                // An empty slot (no usable target) hashes as all ones: no address.
                let target = address_of.get(slot).map_or([0xff; 16], |a| addr16(*a).0);
                bytes.extend_from_slice(&target);
            }
        }
        fnv1a64(bytes)
    }
}
