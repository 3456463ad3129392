//! The fixed hash functions the Maglev builder depends on: SipHash-2-4 for the per-backend
//! permutations and FNV-1a 64 for table fingerprints.
//!
//! Both are written out here rather than taken from `std` or a crate because the table must
//! be bit-identical on every load-balancer host and across releases: `std`'s hashers are
//! documented as unspecified and may change, and a dependency upgrade must never silently
//! reshuffle every ring. Known-answer tests below pin the exact functions.

/// SipHash-2-4 (Aumasson & Bernstein, 2012) of `msg` under the 128-bit key `(k0, k1)`,
/// the 64-bit output variant. Chosen over MurmurHash3 because it has published test
/// vectors and well-mixed output for short, structured keys such as address + port.
pub(super) fn siphash24(k0: u64, k1: u64, msg: &[u8]) -> u64 {
    let mut s = SipState {
        v0: k0 ^ 0x736f_6d65_7073_6575,
        v1: k1 ^ 0x646f_7261_6e64_6f6d,
        v2: k0 ^ 0x6c79_6765_6e65_7261,
        v3: k1 ^ 0x7465_6462_7974_6573,
    };
    let mut blocks = msg.chunks_exact(8);
    for block in &mut blocks {
        let mut word = [0u8; 8];
        word.copy_from_slice(block);
        s.compress(u64::from_le_bytes(word));
    }
    // Final block: the 0..=7 leftover bytes, little-endian, with the message length
    // (mod 256) in the top byte.
    let mut last = [0u8; 8];
    let tail = blocks.remainder();
    last[..tail.len()].copy_from_slice(tail);
    last[7] = msg.len() as u8;
    s.compress(u64::from_le_bytes(last));

    s.v2 ^= 0xff;
    for _ in 0..4 {
        s.round();
    }
    s.v0 ^ s.v1 ^ s.v2 ^ s.v3
}

struct SipState {
    v0: u64,
    v1: u64,
    v2: u64,
    v3: u64,
}

impl SipState {
    /// Absorbs one 64-bit message word with two rounds (the "2" in 2-4).
    fn compress(&mut self, m: u64) {
        self.v3 ^= m;
        self.round();
        self.round();
        self.v0 ^= m;
    }

    fn round(&mut self) {
        self.v0 = self.v0.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(13) ^ self.v0;
        self.v0 = self.v0.rotate_left(32);
        self.v2 = self.v2.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(16) ^ self.v2;
        self.v0 = self.v0.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(21) ^ self.v0;
        self.v2 = self.v2.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(17) ^ self.v2;
        self.v2 = self.v2.rotate_left(32);
    }
}

/// FNV-1a, 64-bit: a trivially reproducible fingerprint (an operator can recompute it from a
/// ring dump with a few lines of any language). Not collision-resistant; it only has to make
/// two different tables look different in `status`.
pub(crate) fn fnv1a64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .into_iter()
        .fold(OFFSET_BASIS, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference key of the SipHash paper's test vectors: bytes 00 01 .. 0f.
    const K0: u64 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
    const K1: u64 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);

    #[test]
    fn siphash24_known_answers() {
        // From the SipHash paper (appendix A) and its reference vectors.h: messages are the
        // byte strings 00, 00 01, 00 01 02, ... of the given length.
        let msg: Vec<u8> = (0u8..64).collect();
        assert_eq!(siphash24(K0, K1, &msg[..0]), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash24(K0, K1, &msg[..1]), 0x74f8_39c5_93dc_67fd);
        assert_eq!(siphash24(K0, K1, &msg[..15]), 0xa129_ca61_49be_45e5);
    }

    #[test]
    #[expect(
        deprecated,
        reason = "std's SipHasher is deprecated but still SipHash-2-4"
    )]
    fn siphash24_matches_std_for_every_tail_length() {
        use std::hash::Hasher as _;
        let msg: Vec<u8> = (0u8..=255).map(|b| b.wrapping_mul(37) ^ 0x5a).collect();
        for (k0, k1) in [(K0, K1), (0, 0), (u64::MAX, 0x0123_4567_89ab_cdef)] {
            for len in 0..=64 {
                let mut std_hasher = std::hash::SipHasher::new_with_keys(k0, k1);
                std_hasher.write(&msg[..len]);
                assert_eq!(
                    siphash24(k0, k1, &msg[..len]),
                    std_hasher.finish(),
                    "len {len}"
                );
            }
        }
    }

    #[test]
    fn fnv1a64_known_answers() {
        // The FNV reference test suite (Fowler/Noll/Vo).
        assert_eq!(fnv1a64(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(*b"foobar"), 0x8594_4171_f739_67e8);
    }
}
