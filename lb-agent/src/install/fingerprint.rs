//! The fleet fingerprint: one number for everything that decides where this host sends a
//! new flow (the hash seed, every VIP's key, mode and hash fields, and every ring slot as
//! the target address it names). Hosts behind one ECMP group must show the same one, or
//! a flow the router moves between them changes target.
//!
//! Slots are hashed as target addresses, not backend ids: ids are each host's own
//! numbering (they depend on the order targets were added), so two hosts with the same
//! configuration reached by different edits build rings that differ in ids but send
//! every flow to the same target.

use lb_common::service::addr16;

use super::Services;
use crate::maglev::fnv1a64;

impl Services {
    /// FNV-1a 64 over the seed and the installed VIPs in key order (see the module docs).
    pub fn fleet_fingerprint(&self, hash_seed: u32) -> u64 {
        // Each id's address bytes, by id (ids are dense and below MAX_BACKENDS); an empty
        // slot (no usable target) hashes as all ones: no address.
        let mut address_of: Vec<[u8; 16]> = Vec::new();
        for ((_, address), id) in &self.backend_ids {
            let i = id.0 as usize;
            if address_of.len() <= i {
                address_of.resize(i + 1, [0xff; 16]);
            }
            address_of[i] = addr16(*address).0;
        }
        let mut vips: Vec<_> = self.vips.values().collect();
        vips.sort_by_key(|v| (v.key.family, v.key.addr, v.key.proto, v.key.port));
        let mut h = Fnv1a64::new();
        h.write(&hash_seed.to_le_bytes());
        for vip in vips {
            h.write(&vip.key.addr);
            h.write(&vip.key.port.to_le_bytes());
            h.write(&[vip.key.proto, vip.key.family, vip.meta.mode]);
            h.write(&vip.meta.flags.to_le_bytes());
            h.write(&vip.meta.gue_port.to_le_bytes());
            h.write(&vip.meta.ring_size.to_le_bytes());
            for slot in vip.table.slots() {
                h.write(address_of.get(*slot as usize).unwrap_or(&[0xff; 16]));
            }
        }
        h.finish()
    }
}

/// FNV-1a 64 fed piece by piece: the same value as [`fnv1a64`] over the concatenation,
/// without building it (a few MB for large rings).
struct Fnv1a64(u64);

impl Fnv1a64 {
    fn new() -> Self {
        Self(fnv1a64([]))
    }

    fn write(&mut self, bytes: &[u8]) {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(PRIME);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fed_in_pieces_it_is_fnv1a64() {
        let mut h = Fnv1a64::new();
        h.write(b"foo");
        h.write(b"");
        h.write(b"bar");
        assert_eq!(h.finish(), fnv1a64(*b"foobar"));
    }
}
