//! The flow hash, shared by the data plane (picking a ring slot) and the agent (answering
//! "which backend for this 5-tuple?"), so both compute exactly the same value.
//!
//! MurmurHash3's 32-bit block mix and finaliser over the selected 32-bit words of the
//! flow key. Words are read little-endian from the key's bytes, so every host (x86-64,
//! arm64, the BPF VM) computes the same hash for the same packet and seed.

use crate::{service::vip_flags, FlowKey};

#[inline(always)]
fn mix(h: u32, k: u32) -> u32 {
    let k = k
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn finish(h: u32, words: u32) -> u32 {
    let mut h = h ^ (words * 4);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[inline(always)]
fn addr_words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_le_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_le_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_le_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_le_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

/// Hash of the fields a VIP selects (`vip_flags`): the 5-tuple by default; the source
/// address only (`HASH_SRC_ONLY`); source address and destination port
/// (`HASH_SRC_DPORT`); source, destination and protocol (`FRAG_ROUTE`, so that every
/// fragment of a datagram hashes alike).
#[inline(always)]
pub fn flow_hash(key: &FlowKey, vip_flags: u32, seed: u32) -> u32 {
    let src = addr_words(&key.src);
    let mut h = seed;
    h = mix(h, src[0]);
    h = mix(h, src[1]);
    h = mix(h, src[2]);
    h = mix(h, src[3]);
    if vip_flags & vip_flags::HASH_SRC_ONLY != 0 {
        return finish(h, 4);
    }
    if vip_flags & vip_flags::HASH_SRC_DPORT != 0 {
        h = mix(h, key.dport as u32);
        return finish(h, 5);
    }
    let dst = addr_words(&key.dst);
    h = mix(h, dst[0]);
    h = mix(h, dst[1]);
    h = mix(h, dst[2]);
    h = mix(h, dst[3]);
    if vip_flags & vip_flags::FRAG_ROUTE != 0 {
        h = mix(h, key.proto as u32);
        return finish(h, 9);
    }
    h = mix(h, (key.sport as u32) << 16 | key.dport as u32);
    h = mix(h, key.proto as u32);
    finish(h, 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FlowKey {
        FlowKey {
            src: [198, 18, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst: [198, 18, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
            proto: 6,
            family: 4,
            _pad: [0; 2],
        }
    }

    #[test]
    fn known_answers_do_not_change() {
        // Frozen: every load balancer host must agree; a change here reshuffles all flows
        // on an upgrade, so it must be deliberate (and bump the ABI version).
        assert_eq!(flow_hash(&key(), 0, 0x6c62_0001), 0x5f9c_40cb);
        assert_eq!(
            flow_hash(&key(), vip_flags::HASH_SRC_ONLY, 0x6c62_0001),
            0xc004_99e3
        );
    }

    #[test]
    fn selected_fields_decide() {
        let a = key();
        let mut b = key();
        b.sport = 40001u16.to_be();
        assert_ne!(flow_hash(&a, 0, 1), flow_hash(&b, 0, 1));
        assert_eq!(
            flow_hash(&a, vip_flags::HASH_SRC_ONLY, 1),
            flow_hash(&b, vip_flags::HASH_SRC_ONLY, 1)
        );
        assert_eq!(
            flow_hash(&a, vip_flags::HASH_SRC_DPORT, 1),
            flow_hash(&b, vip_flags::HASH_SRC_DPORT, 1)
        );
        assert_eq!(
            flow_hash(&a, vip_flags::FRAG_ROUTE, 1),
            flow_hash(&b, vip_flags::FRAG_ROUTE, 1)
        );
        assert_ne!(flow_hash(&a, 0, 1), flow_hash(&a, 0, 2), "seed matters");
    }
}
