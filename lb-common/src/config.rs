//! Runtime settings the data plane reads on every packet (a one-entry array map), so the
//! agent can change them without reloading the program.

/// The single entry of the config map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LbConfig {
    /// Seed of the flow hash. Every load balancer host behind one ECMP group must use the
    /// same seed (and the same ring), so that any host sends a flow to the same backend.
    pub hash_seed: u32,
    /// New flows per second per CPU above which the flow table stops taking entries and
    /// packets are forwarded by hash alone (flood guard). 0 = no limit.
    pub max_new_flows_per_cpu: u32,
    /// UDP flow entries idle longer than this are ignored (re-hashed). Nanoseconds.
    pub udp_idle_ns: u64,
    /// Outer IPv4 source for tunnels: `tunnel_src4 | (flow_hash & !mask)`, where the mask
    /// has `tunnel_src4_prefix` leading ones. Network byte order.
    pub tunnel_src4: [u8; 4],
    pub tunnel_src4_prefix: u8,
    pub tunnel_src6_prefix: u8,
    pub _pad: [u8; 2],
    /// Outer IPv6 source prefix for tunnels (low bits from the flow hash as above).
    pub tunnel_src6: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<LbConfig>() == 40);

impl Default for LbConfig {
    fn default() -> Self {
        Self {
            hash_seed: 0x6c62_0001,
            max_new_flows_per_cpu: 125_000,
            udp_idle_ns: 30_000_000_000,
            tunnel_src4: [198, 18, 255, 0],
            tunnel_src4_prefix: 24,
            tunnel_src6_prefix: 64,
            _pad: [0; 2],
            tunnel_src6: [0x20, 0x01, 0, 2, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0],
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), integers and byte arrays only, explicit padding, size asserted.
unsafe impl aya::Pod for LbConfig {}
