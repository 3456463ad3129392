//! The flow table: established flows stay on their backend.

/// Key of the flow table: the client's 5-tuple as it arrives (destination = the VIP).
/// IPv4 addresses occupy `[0..4]`; ports in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);

/// Value of the flow table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    pub backend_id: u32,
    /// The VIP the entry was made for; an entry whose VIP changed id is stale.
    pub vip_id: u32,
    /// `bpf_ktime_get_ns()` of the last packet (for TCP refreshed at most every
    /// [`TCP_REFRESH_NS`], to spare the cache line), plus the [`FLOW_CLOSING`] bit once the
    /// client sent a FIN or RST. UDP entries expire after the configured idle time; TCP
    /// entries are left to the LRU, and the agent uses the time and bit only to estimate
    /// which flows are still active.
    pub last_seen_ns: u64,
}

/// Bit of [`FlowValue::last_seen_ns`]: the client sent a FIN or RST on this flow. (The
/// monotonic clock would need 292 years of uptime to reach it.)
pub const FLOW_CLOSING: u64 = 1 << 63;

/// A TCP entry's `last_seen_ns` is rewritten only when it is older than this.
pub const TCP_REFRESH_NS: u64 = 1_000_000_000;

impl FlowValue {
    /// When the flow last saw a packet, without the [`FLOW_CLOSING`] bit.
    pub fn last_seen(&self) -> u64 {
        self.last_seen_ns & !FLOW_CLOSING
    }

    /// Whether the client has sent a FIN or RST.
    pub fn closing(&self) -> bool {
        self.last_seen_ns & FLOW_CLOSING != 0
    }
}
const _: () = assert!(core::mem::size_of::<FlowValue>() == 16);

/// `BPF_F_NO_COMMON_LRU`: per-CPU LRU lists (and memory), one shared key space, so a
/// flow whose packets arrive on different CPUs still finds its entry.
pub const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;
/// Default flow-table capacity; the agent sets the real size at load time.
pub const DEFAULT_FLOW_ENTRIES: u32 = 1 << 20;

#[cfg(feature = "user")]
// SAFETY: repr(C), integers and byte arrays only, explicit padding, size asserted.
unsafe impl aya::Pod for FlowKey {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for FlowValue {}
