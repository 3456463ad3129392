//! Counter layouts and the enums that index the per-CPU counter arrays.

/// One per-CPU counter slot: packets and bytes (frame length as seen by XDP).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<Counter>() == 16);

impl Counter {
    /// Sums per-CPU slots (user space reads one value per possible CPU).
    pub fn sum<'a>(values: impl IntoIterator<Item = &'a Counter>) -> Counter {
        values
            .into_iter()
            .fold(Counter::default(), |acc, c| Counter {
                packets: acc.packets.wrapping_add(c.packets),
                bytes: acc.bytes.wrapping_add(c.bytes),
            })
    }
}

#[cfg(feature = "user")]
// SAFETY: `Counter` is `repr(C)`, two `u64`s, no padding, valid for any bit pattern.
unsafe impl aya::Pod for Counter {}

/// The XDP program's final verdict. Discriminants equal the kernel's `enum xdp_action`,
/// so a verdict is both the program's return value and the index of its counter.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Aborted = 0,
    Drop = 1,
    Pass = 2,
    Tx = 3,
    Redirect = 4,
}

impl Verdict {
    pub const COUNT: u32 = 5;
    pub const ALL: [Verdict; Self::COUNT as usize] = [
        Self::Aborted,
        Self::Drop,
        Self::Pass,
        Self::Tx,
        Self::Redirect,
    ];

    /// The name operators see (`XDP_PASS` → `pass`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Aborted => "aborted",
            Self::Drop => "drop",
            Self::Pass => "pass",
            Self::Tx => "tx",
            Self::Redirect => "redirect",
        }
    }

    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Aborted),
            1 => Some(Self::Drop),
            2 => Some(Self::Pass),
            3 => Some(Self::Tx),
            4 => Some(Self::Redirect),
            _ => None,
        }
    }
}

/// What kind of frame arrived, decided from the Ethernet type (after at most two VLAN
/// tags) and the IP protocol / IPv6 next header. Counted for every frame the program
/// sees, whatever its verdict: this is the interface's ingress mix as the load balancer
/// saw it. A frame too short for the header that would classify it counts as
/// [`TrafficClass::Runt`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrafficClass {
    /// Shorter than the header needed to classify it.
    Runt = 0,
    Arp = 1,
    /// Any other non-IP Ethernet type (LLDP, …).
    OtherL2 = 2,
    Ipv4Tcp = 3,
    Ipv4Udp = 4,
    Ipv4Icmp = 5,
    Ipv4Other = 6,
    Ipv6Tcp = 7,
    Ipv6Udp = 8,
    Ipv6Icmp = 9,
    Ipv6Other = 10,
}

impl TrafficClass {
    pub const COUNT: u32 = 11;
    pub const ALL: [TrafficClass; Self::COUNT as usize] = [
        Self::Runt,
        Self::Arp,
        Self::OtherL2,
        Self::Ipv4Tcp,
        Self::Ipv4Udp,
        Self::Ipv4Icmp,
        Self::Ipv4Other,
        Self::Ipv6Tcp,
        Self::Ipv6Udp,
        Self::Ipv6Icmp,
        Self::Ipv6Other,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Runt => "runt",
            Self::Arp => "arp",
            Self::OtherL2 => "other_l2",
            Self::Ipv4Tcp => "ipv4_tcp",
            Self::Ipv4Udp => "ipv4_udp",
            Self::Ipv4Icmp => "ipv4_icmp",
            Self::Ipv4Other => "ipv4_other",
            Self::Ipv6Tcp => "ipv6_tcp",
            Self::Ipv6Udp => "ipv6_udp",
            Self::Ipv6Icmp => "ipv6_icmp",
            Self::Ipv6Other => "ipv6_other",
        }
    }
}

/// Why a packet for a VIP was dropped. The discriminant is both the error value inside
/// the program and the index of its per-CPU counter.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A VIP packet whose headers are inconsistent: IPv4 IHL < 5 or past the end, total
    /// length larger than the frame or smaller than the header, TCP data offset < 5 or past
    /// the end, L4 header truncated, too many IPv6 extension headers.
    Malformed = 0,
    /// An IP fragment for a VIP not configured to route fragments.
    Fragment = 1,
    /// The VIP has no usable backend (no ring, or every weight 0).
    NoBackend = 2,
    /// The encapsulated packet would exceed the egress MTU and no ICMP error could be
    /// sent in its place (IPv4 without DF is never fragmented by lb).
    Mtu = 3,
    /// The kernel FIB has no usable route to the backend (unreachable, blackhole, …).
    FibFailed = 4,
    /// Making room for headers (`bpf_xdp_adjust_head`) failed.
    AdjustFailed = 5,
    /// The ring pointed at a backend slot that is not in use (an update raced).
    BadBackend = 6,
    /// The egress interface is not in the redirect map (the agent did not allow it).
    NoTxPort = 7,
}

impl DropReason {
    pub const COUNT: u32 = 8;
    pub const ALL: [DropReason; Self::COUNT as usize] = [
        Self::Malformed,
        Self::Fragment,
        Self::NoBackend,
        Self::Mtu,
        Self::FibFailed,
        Self::AdjustFailed,
        Self::BadBackend,
        Self::NoTxPort,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Fragment => "fragment",
            Self::NoBackend => "no_backend",
            Self::Mtu => "mtu",
            Self::FibFailed => "fib_failed",
            Self::AdjustFailed => "adjust_failed",
            Self::BadBackend => "bad_backend",
            Self::NoTxPort => "no_tx_port",
        }
    }
}

/// Notable things that happened to VIP traffic that are not drops. Indices of a per-CPU
/// counter array, like [`DropReason`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// The flow table had an entry for the packet.
    FlowHit = 0,
    /// A new flow was picked from the ring and entered in the flow table.
    FlowNew = 1,
    /// A new flow above the per-CPU rate limit: forwarded by hash, not entered.
    FlowThrottled = 2,
    /// A TCP SYN re-hashed although an entry existed (the client reused the tuple).
    SynRehash = 3,
    /// An entry was ignored: UDP idle past the timeout, or made for another VIP.
    FlowStale = 4,
    /// A TCP RST without a flow entry: forwarded by hash, never entered.
    RstNoEntry = 5,
    /// An ICMP error quoting a VIP flow, sent to that flow's backend.
    IcmpErrorRouted = 6,
    /// An ICMP fragmentation-needed / packet-too-big sent back instead of an oversize
    /// encapsulated packet.
    IcmpTooBigSent = 7,
    /// A fragment routed by (source, destination, protocol).
    FragmentRouted = 8,
    /// No neighbour entry for the next hop yet: passed to the kernel, which resolves it.
    FibNoNeighbour = 9,
    /// IP traffic that matched no VIP: passed to the kernel.
    PassNotVip = 10,
    /// A packet forwarded to a backend (DR or tunnel).
    Forwarded = 11,
}

impl Event {
    pub const COUNT: u32 = 12;
    pub const ALL: [Event; Self::COUNT as usize] = [
        Self::FlowHit,
        Self::FlowNew,
        Self::FlowThrottled,
        Self::SynRehash,
        Self::FlowStale,
        Self::RstNoEntry,
        Self::IcmpErrorRouted,
        Self::IcmpTooBigSent,
        Self::FragmentRouted,
        Self::FibNoNeighbour,
        Self::PassNotVip,
        Self::Forwarded,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::FlowHit => "flow_hit",
            Self::FlowNew => "flow_new",
            Self::FlowThrottled => "flow_throttled",
            Self::SynRehash => "syn_rehash",
            Self::FlowStale => "flow_stale",
            Self::RstNoEntry => "rst_no_entry",
            Self::IcmpErrorRouted => "icmp_error_routed",
            Self::IcmpTooBigSent => "icmp_too_big_sent",
            Self::FragmentRouted => "fragment_routed",
            Self::FibNoNeighbour => "fib_no_neighbour",
            Self::PassNotVip => "pass_not_vip",
            Self::Forwarded => "forwarded",
        }
    }
}

/// Per-VIP and per-backend counters (per CPU). For a VIP, `resets` counts TCP RSTs from
/// clients; for a backend it is unused (DSR: the backend's own resets bypass lb).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceCounter {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub resets: u64,
}
const _: () = assert!(core::mem::size_of::<ServiceCounter>() == 32);

impl ServiceCounter {
    pub fn sum<'a>(values: impl IntoIterator<Item = &'a ServiceCounter>) -> ServiceCounter {
        values
            .into_iter()
            .fold(ServiceCounter::default(), |a, c| ServiceCounter {
                packets: a.packets.wrapping_add(c.packets),
                bytes: a.bytes.wrapping_add(c.bytes),
                new_flows: a.new_flows.wrapping_add(c.new_flows),
                resets: a.resets.wrapping_add(c.resets),
            })
    }
}

#[cfg(feature = "user")]
// SAFETY: `ServiceCounter` is `repr(C)`, four `u64`s, no padding.
unsafe impl aya::Pod for ServiceCounter {}

/// Per-CPU state of the new-flow rate limiter (flood guard).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodWindow {
    /// Start of the current one-second window, `bpf_ktime_get_ns()`.
    pub window_start_ns: u64,
    /// New flows entered in the window.
    pub new_flows: u64,
}
const _: () = assert!(core::mem::size_of::<FloodWindow>() == 16);

#[cfg(feature = "user")]
// SAFETY: two `u64`s, no padding.
unsafe impl aya::Pod for FloodWindow {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_match_all() {
        for (i, v) in Verdict::ALL.iter().enumerate() {
            assert_eq!(*v as usize, i);
            assert_eq!(Verdict::from_u32(i as u32), Some(*v));
        }
        assert_eq!(Verdict::from_u32(Verdict::COUNT), None);
        for (i, c) in TrafficClass::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        for (i, d) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i);
        }
        for (i, e) in Event::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i);
        }
    }

    #[test]
    fn counter_sum_adds_every_cpu() {
        let per_cpu = [
            Counter {
                packets: 1,
                bytes: 60,
            },
            Counter {
                packets: 2,
                bytes: 100,
            },
        ];
        assert_eq!(
            Counter::sum(&per_cpu),
            Counter {
                packets: 3,
                bytes: 160
            }
        );
    }
}
