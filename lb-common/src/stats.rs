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
