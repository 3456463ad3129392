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

/// Defines a counter enum: `#[repr(u32)]`, one variant per slot of its per-CPU counter
/// array, each with the name operators see (metrics and docs use it, so it never changes).
/// Gives the enum `COUNT` (the array's length), `ALL` (every variant, in index order),
/// `name()` and `from_u32()`; the discriminants must be `0..COUNT` in order, which is
/// checked at compile time (a gap would leave a counter nobody reads).
macro_rules! counter_enum {
    (
        $(#[$meta:meta])*
        pub enum $enum:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $index:literal => $name:literal,
            )+
        }
    ) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $enum {
            $(
                $(#[$vmeta])*
                $variant = $index,
            )+
        }

        impl $enum {
            /// Every variant, in index order.
            pub const ALL: [$enum; [$($enum::$variant),+].len()] = [$($enum::$variant),+];
            /// How many variants, so how many slots the counter array has.
            pub const COUNT: u32 = Self::ALL.len() as u32;

            /// The name operators see (metric labels, `status` output).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)+
                }
            }

            /// The variant whose index is `v`.
            pub const fn from_u32(v: u32) -> Option<Self> {
                if v < Self::COUNT {
                    Some(Self::ALL[v as usize])
                } else {
                    None
                }
            }
        }

        const _: () = {
            let mut i = 0;
            while i < $enum::ALL.len() {
                assert!(
                    $enum::ALL[i] as usize == i,
                    concat!(stringify!($enum), "'s discriminants must be 0, 1, 2, … in order")
                );
                i += 1;
            }
        };
    };
}
pub(crate) use counter_enum;

counter_enum! {
    /// The XDP program's final verdict. Discriminants equal the kernel's `enum xdp_action`,
    /// so a verdict is both the program's return value and the index of its counter.
    pub enum Verdict {
        Aborted = 0 => "aborted",
        Drop = 1 => "drop",
        Pass = 2 => "pass",
        Tx = 3 => "tx",
        Redirect = 4 => "redirect",
    }
}

counter_enum! {
    /// What kind of frame arrived, decided from the Ethernet type (after at most two VLAN
    /// tags) and the IP protocol / IPv6 next header. Counted for every frame the program
    /// sees, whatever its verdict: this is the interface's ingress mix as the load balancer
    /// saw it. A frame too short for the header that would classify it counts as
    /// [`TrafficClass::Runt`].
    pub enum TrafficClass {
        /// Shorter than the header needed to classify it.
        Runt = 0 => "runt",
        Arp = 1 => "arp",
        /// Any other non-IP Ethernet type (LLDP, …).
        OtherL2 = 2 => "other_l2",
        Ipv4Tcp = 3 => "ipv4_tcp",
        Ipv4Udp = 4 => "ipv4_udp",
        Ipv4Icmp = 5 => "ipv4_icmp",
        Ipv4Other = 6 => "ipv4_other",
        Ipv6Tcp = 7 => "ipv6_tcp",
        Ipv6Udp = 8 => "ipv6_udp",
        Ipv6Icmp = 9 => "ipv6_icmp",
        Ipv6Other = 10 => "ipv6_other",
    }
}

counter_enum! {
    /// Why a packet for a VIP was dropped. The discriminant is both the error value inside
    /// the program and the index of its per-CPU counter.
    pub enum DropReason {
        /// A VIP packet whose headers are inconsistent: a wrong IPv4 header checksum, IPv4
        /// IHL < 5 or past the end, total length larger than the frame or smaller than the
        /// header, TCP data offset < 5 or past the end, L4 header truncated, too many IPv6
        /// extension headers.
        Malformed = 0 => "malformed",
        /// An IP fragment for a VIP not configured to route fragments.
        Fragment = 1 => "fragment",
        /// The VIP has no usable backend (no ring, or every weight 0).
        NoBackend = 2 => "no_backend",
        /// The encapsulated packet would exceed the egress MTU and no ICMP error could be
        /// sent in its place (IPv4 without DF is never fragmented by lb).
        Mtu = 3 => "mtu",
        /// The kernel FIB has no usable route to the backend (unreachable, blackhole, …).
        FibFailed = 4 => "fib_failed",
        /// Making room for headers (`bpf_xdp_adjust_head`) failed.
        AdjustFailed = 5 => "adjust_failed",
        /// The ring pointed at a backend slot that is not in use (an update raced).
        BadBackend = 6 => "bad_backend",
        /// The egress interface is not in the redirect map (the agent did not allow it).
        NoTxPort = 7 => "no_tx_port",
    }
}

counter_enum! {
    /// Notable things that happened to VIP traffic that are not drops. Indices of a per-CPU
    /// counter array, like [`DropReason`].
    pub enum Event {
        /// The flow table had an entry for the packet.
        FlowHit = 0 => "flow_hit",
        /// A new flow was picked from the ring and entered in the flow table.
        FlowNew = 1 => "flow_new",
        /// A new flow above the per-CPU rate limit: forwarded by hash, not entered.
        FlowThrottled = 2 => "flow_throttled",
        /// A TCP SYN re-hashed although an entry existed (the client reused the tuple).
        SynRehash = 3 => "syn_rehash",
        /// An entry was ignored: UDP idle past the timeout, or made for another VIP.
        FlowStale = 4 => "flow_stale",
        /// A TCP RST without a flow entry: forwarded by hash, never entered.
        RstNoEntry = 5 => "rst_no_entry",
        /// An ICMP error quoting a VIP flow, sent to that flow's backend.
        IcmpErrorRouted = 6 => "icmp_error_routed",
        /// An ICMP fragmentation-needed / packet-too-big sent back instead of an oversize
        /// encapsulated packet.
        IcmpTooBigSent = 7 => "icmp_too_big_sent",
        /// A fragment routed by (source, destination, protocol).
        FragmentRouted = 8 => "fragment_routed",
        /// No neighbour entry for the next hop yet: passed to the kernel, which resolves it.
        FibNoNeighbour = 9 => "fib_no_neighbour",
        /// IP traffic that matched no VIP: passed to the kernel.
        PassNotVip = 10 => "pass_not_vip",
        /// A packet forwarded to a backend (DR or tunnel).
        Forwarded = 11 => "forwarded",
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
    use crate::decap::DecapEvent;

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

    /// `COUNT` is the number of variants, `ALL` holds each once at its own index, and
    /// names are distinct snake_case (they become metric labels), for all five enums.
    #[test]
    fn counter_enums_tie_count_to_variants() {
        /// `all`: each variant of `ALL` as (index, name).
        fn check(all: &[(u32, &str)], count: u32) {
            assert_eq!(all.len(), count as usize);
            for (i, &(index, name)) in all.iter().enumerate() {
                assert_eq!(index, i as u32);
                assert!(!name.is_empty());
                let snake = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
                assert!(name.bytes().all(snake), "{name}");
                assert!(all[i + 1..].iter().all(|&(_, other)| other != name));
            }
        }
        macro_rules! check_each {
            ($($enum:ident),+) => {$(
                check(&$enum::ALL.map(|v| (v as u32, v.name())), $enum::COUNT);
            )+};
        }
        check_each!(Verdict, TrafficClass, DropReason, Event, DecapEvent);
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
