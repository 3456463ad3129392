//! Virtual services (VIPs), backends and the Maglev ring map, as the data plane reads them.

/// Slot value of a ring with no usable backend (and of an unused backend slot).
pub const NO_BACKEND: u32 = u32::MAX;

/// How many VIPs one data plane holds (VIP ids are `0..MAX_VIPS`).
pub const MAX_VIPS: u32 = 1024;
/// How many backends one data plane holds across all VIPs (ids are `0..MAX_BACKENDS`).
pub const MAX_BACKENDS: u32 = 65536;
/// Ring size used for the inner-map template; each VIP's ring may differ (the template
/// carries `BPF_F_INNER_MAP`, kernel ≥ 5.10), but is never larger than [`MAX_RING_SIZE`].
pub const DEFAULT_RING_SIZE: u32 = 65537;
pub const MAX_RING_SIZE: u32 = 131071;
/// `BPF_F_INNER_MAP`: lets inner maps of one map-in-map differ in `max_entries`.
pub const BPF_F_INNER_MAP: u32 = 1 << 12;

/// Address family as stored in map keys and values.
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// Set in `VipKey::family` for the fragment entry of a VIP address and protocol. Later
/// fragments carry no ports, so they are matched on (address, protocol) alone, in this
/// separate key space: the agent adds one such entry per address and protocol that has
/// VIPs, pointing at the VIP whose `FRAG_ROUTE` flag decides (route, or drop as
/// `Fragment`). At most one fragment-routing VIP may share an address and protocol.
pub const FAMILY_FRAG_KEY: u8 = 0x80;

/// The transport protocols a VIP (`VipKey::proto`) can have.
pub use crate::ip::{PROTO_TCP, PROTO_UDP};

/// Key of the VIP map: what a packet's destination must match.
/// IPv4 addresses occupy `addr[0..4]`, the rest is zero. `port` is in network byte order;
/// port 0 matches every port of the address (looked up after the exact port misses).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipKey {
    pub addr: [u8; 16],
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}
const _: () = assert!(core::mem::size_of::<VipKey>() == 20);

impl VipKey {
    /// The key of the fragment entry for this key's address and protocol (see
    /// [`FAMILY_FRAG_KEY`]).
    pub fn fragment_key(&self) -> VipKey {
        VipKey {
            port: 0,
            family: self.family | FAMILY_FRAG_KEY,
            ..*self
        }
    }
}

/// `addr` as map keys and values hold it: IPv4 in bytes `0..4` (the rest zero), and its
/// family ([`FAMILY_V4`] / [`FAMILY_V6`]).
pub fn addr16(addr: core::net::IpAddr) -> ([u8; 16], u8) {
    match addr {
        core::net::IpAddr::V4(a) => {
            let mut bytes = [0u8; 16];
            let o = a.octets();
            bytes[0] = o[0];
            bytes[1] = o[1];
            bytes[2] = o[2];
            bytes[3] = o[3];
            (bytes, FAMILY_V4)
        }
        core::net::IpAddr::V6(a) => (a.octets(), FAMILY_V6),
    }
}

/// Forwarding method of a VIP (`VipMeta::mode`).
pub mod mode {
    /// LVS direct routing: rewrite MACs only; the backend holds the VIP and replies directly.
    pub const DR: u8 = 0;
    /// LVS tunnelling: IP-in-IP (IPIP, IP6IP6, 4in6, 6in4 by the two address families).
    pub const TUNNEL: u8 = 1;
    /// Tunnelling over UDP (GUE variant 1: the UDP payload is the inner IP packet).
    pub const GUE: u8 = 2;
    // 3 is reserved for NAT (DNAT + SNAT, replies through the load balancer).
}

/// Bits of `VipMeta::flags`.
pub mod vip_flags {
    /// Hash the source address only (source-IP stickiness).
    pub const HASH_SRC_ONLY: u32 = 1 << 0;
    /// Hash the source address and destination port.
    pub const HASH_SRC_DPORT: u32 = 1 << 1;
    /// Route IP fragments by (source, destination, protocol) instead of dropping them.
    /// Implies the whole VIP is hashed that way, so that first and later fragments of a
    /// datagram, and unfragmented packets of the same flow, all reach the same backend.
    pub const FRAG_ROUTE: u32 = 1 << 2;
}

/// Value of the VIP map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipMeta {
    /// Index into the ring map, the VIP counters and the flow table's backend checks.
    pub vip_id: u32,
    /// [`vip_flags`] bits.
    pub flags: u32,
    /// One of [`mode`].
    pub mode: u8,
    pub _pad: u8,
    /// GUE destination port, network byte order (mode GUE only).
    pub gue_port: u16,
    /// Slots in this VIP's ring (the inner map's size). 0 until a ring is installed.
    pub ring_size: u32,
}
const _: () = assert!(core::mem::size_of::<VipMeta>() == 16);

/// Bits of `Backend::flags`.
pub mod backend_flags {
    /// The slot holds a backend (slots of removed backends are cleared).
    pub const IN_USE: u8 = 1 << 0;
}

/// Value of the backend array, indexed by backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// IPv4 in `addr[0..4]`.
    pub addr: [u8; 16],
    pub family: u8,
    /// [`backend_flags`] bits.
    pub flags: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<Backend>() == 20);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is `repr(C)`, made of integers and byte arrays, with explicit
    // padding fields (size asserted next to its definition), so every bit pattern is valid.
    unsafe impl aya::Pod for super::VipKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VipMeta {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Backend {}
}
