//! Bounds-checked packet access and header parsing.
//!
//! Parsing never modifies the packet. It classifies every frame for the traffic counters
//! and, for IP, extracts what VIP matching needs. A frame whose IP header is inconsistent
//! (bad version, IHL < 5, lengths past the frame, too many IPv6 extension headers) is not
//! attributable to a VIP and is passed to the kernel, whose IP input validation drops it.
//! L4 problems of a packet that does match a VIP are reported through `l4_ok`, and the
//! caller drops it as malformed.

use aya_ebpf::programs::XdpContext;
use core::mem;
use lb_common::{
    ip::{
        PROTO_DSTOPTS, PROTO_FRAGMENT, PROTO_HOPOPTS, PROTO_ICMP, PROTO_ICMPV6, PROTO_ROUTING,
        PROTO_TCP, PROTO_UDP,
    },
    service::{FAMILY_V4, FAMILY_V6},
    FlowKey, TrafficClass,
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
    vlan::VlanHdr,
};

// Raw wire values (network byte order as read into a u16 on little-endian BPF).
pub const ETH_P_IP: u16 = 0x0800u16.to_be();
pub const ETH_P_IPV6: u16 = 0x86DDu16.to_be();
const ETH_P_ARP: u16 = 0x0806u16.to_be();
const ETH_P_8021Q: u16 = 0x8100u16.to_be();
const ETH_P_8021AD: u16 = 0x88A8u16.to_be();

/// How many IPv6 extension headers (hop-by-hop, routing, fragment, destination options)
/// are skipped before giving up on a packet; more is not attributed to a VIP.
pub const MAX_IPV6_EXT_HEADERS: usize = 4;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// The only way this crate reads packet memory: a pointer to a `T` at `offset`, or `None`
/// if any byte of it lies past the end of the frame.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

/// Mutable twin of [`ptr_at`], for the forwarding rewrites.
#[inline(always)]
pub fn ptr_at_mut<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    ptr_at::<T>(ctx, offset).map(|p| p as *mut T)
}

/// Where an IP packet is fragmented.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Frag {
    /// Not a fragment (or an IPv6 atomic fragment: offset 0, no more fragments).
    No,
    /// The first fragment: it carries the L4 header.
    First,
    /// A later fragment: no L4 header; its ports are never read.
    Later,
}

/// What the data plane needs of an IP packet.
pub struct Packet {
    /// Bytes of Ethernet and VLAN headers before the IP header.
    pub l3: usize,
    /// Offset of the L4 header (after IPv4 options / IPv6 extension headers).
    pub l4: usize,
    /// IP total length (IPv4 `tot_len`; IPv6 40 + payload length).
    pub ip_len: usize,
    /// Length of the whole frame as it arrived, as a plain number: computing it again
    /// from packet pointers after a head or tail adjustment trips the verifier.
    pub frame_len: usize,
    /// Addresses, ports (zero when unknown), protocol and family.
    pub key: FlowKey,
    /// IPv4 TOS / IPv6 traffic class (DSCP + ECN), copied to tunnel headers.
    pub tos: u8,
    pub frag: Frag,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// The L4 header is complete and consistent (TCP data offset, UDP length).
    pub l4_ok: bool,
}

pub enum Parsed {
    /// Not IP, or IP that cannot be attributed to a VIP: pass it.
    Other(TrafficClass),
    Ip(Packet, TrafficClass),
}

/// Where the L3 header starts and which Ethernet type it carries, after skipping up to
/// two VLAN tags (802.1Q, or 802.1ad outer + 802.1Q inner).
#[inline(always)]
pub fn l3_start(ctx: &XdpContext) -> Option<(usize, u16)> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: `ptr_at` checked that the whole header lies inside the frame.
    let mut ether_type = unsafe { (*eth).ether_type };
    let mut offset = EthHdr::LEN;
    for _ in 0..2 {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        let vlan: *const VlanHdr = ptr_at(ctx, offset)?;
        // SAFETY: bounds checked by `ptr_at`.
        ether_type = unsafe { (*vlan).ether_type };
        offset += VlanHdr::LEN;
    }
    Some((offset, ether_type))
}

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Parsed {
    let Some((l3, ether_type)) = l3_start(ctx) else {
        return Parsed::Other(TrafficClass::Runt);
    };
    match ether_type {
        ETH_P_IP => parse_v4(ctx, l3),
        ETH_P_IPV6 => parse_v6(ctx, l3),
        ETH_P_ARP => Parsed::Other(TrafficClass::Arp),
        _ => Parsed::Other(TrafficClass::OtherL2),
    }
}

#[inline(always)]
fn class_v4(proto: u8) -> TrafficClass {
    match proto {
        PROTO_TCP => TrafficClass::Ipv4Tcp,
        PROTO_UDP => TrafficClass::Ipv4Udp,
        PROTO_ICMP => TrafficClass::Ipv4Icmp,
        _ => TrafficClass::Ipv4Other,
    }
}

#[inline(always)]
fn class_v6(proto: u8) -> TrafficClass {
    match proto {
        PROTO_TCP => TrafficClass::Ipv6Tcp,
        PROTO_UDP => TrafficClass::Ipv6Udp,
        PROTO_ICMPV6 => TrafficClass::Ipv6Icmp,
        _ => TrafficClass::Ipv6Other,
    }
}

/// Whether the IPv4 header of `pkt` (options included) carries a correct checksum: its
/// 16-bit words sum to 0xffff (RFC 1071). A router discards a header that does not (RFC
/// 1812 §5.2.2), and so does lb for VIP traffic, before the header keys a flow. Checked
/// only for VIP packets, so other traffic pays nothing.
#[inline(always)]
pub fn ipv4_checksum_ok(ctx: &XdpContext, pkt: &Packet) -> bool {
    // 20 to 60 bytes, a multiple of 4 (checked in `parse_v4`).
    let ihl = pkt.l4 - pkt.l3;
    let mut sum = 0u32;
    let mut off = 0;
    // At most 15 words of 4 bytes: the constant bound is for the verifier.
    while off < 60 {
        if off >= ihl {
            break;
        }
        let Some(word) = ptr_at::<[u8; 4]>(ctx, pkt.l3 + off) else {
            return false;
        };
        // SAFETY: bounds checked by `ptr_at`.
        let w = unsafe { *word };
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]))
            + u32::from(u16::from_be_bytes([w[2], w[3]]));
        off += 4;
    }
    crate::csum::fold(sum) == 0xffff
}

#[inline(always)]
fn frame_len(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, l3: usize) -> Parsed {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, l3) else {
        return Parsed::Other(TrafficClass::Runt);
    };
    // SAFETY: bounds checked by `ptr_at`.
    let ip = unsafe { &*ip };
    let class = class_v4(ip.proto);
    let ihl = ((ip.vihl & 0x0f) as usize) * 4;
    let ip_len = u16::from_be_bytes(ip.tot_len) as usize;
    if ip.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN || ip_len < ihl || l3 + ip_len > frame_len(ctx) {
        return Parsed::Other(class);
    }
    let frags = u16::from_be_bytes(ip.frags);
    let frag = if frags & 0x1fff != 0 {
        Frag::Later
    } else if frags & 0x2000 != 0 {
        Frag::First
    } else {
        Frag::No
    };
    let mut key = FlowKey {
        proto: ip.proto,
        family: FAMILY_V4,
        ..FlowKey::default()
    };
    key.src[..4].copy_from_slice(&ip.src_addr);
    key.dst[..4].copy_from_slice(&ip.dst_addr);
    let mut pkt = Packet {
        l3,
        l4: l3 + ihl,
        ip_len,
        frame_len: frame_len(ctx),
        key,
        tos: ip.tos,
        frag,
        tcp_flags: 0,
        l4_ok: false,
    };
    parse_l4(ctx, &mut pkt);
    Parsed::Ip(pkt, class)
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, l3: usize) -> Parsed {
    let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, l3) else {
        return Parsed::Other(TrafficClass::Runt);
    };
    // SAFETY: bounds checked by `ptr_at`.
    let ip = unsafe { &*ip };
    let payload = u16::from_be_bytes(ip.payload_len) as usize;
    let ip_len = Ipv6Hdr::LEN + payload;
    // Payload length 0 is a jumbogram (RFC 2675) or garbage: neither is ours.
    if ip.vcf[0] >> 4 != 6 || payload == 0 || l3 + ip_len > frame_len(ctx) {
        return Parsed::Other(class_v6(ip.next_hdr));
    }
    let mut next = ip.next_hdr;
    let mut l4 = l3 + Ipv6Hdr::LEN;
    let mut frag = Frag::No;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            PROTO_HOPOPTS | PROTO_ROUTING | PROTO_DSTOPTS => {
                let Some(h) = ptr_at::<[u8; 2]>(ctx, l4) else {
                    return Parsed::Other(TrafficClass::Ipv6Other);
                };
                // SAFETY: bounds checked by `ptr_at`.
                let h = unsafe { *h };
                next = h[0];
                l4 += (h[1] as usize + 1) * 8;
            }
            PROTO_FRAGMENT => {
                // RFC 8200 allows one fragment header; a second one is not ours to judge
                // (the kernel drops it), and must never reset the state the first set
                // (found by the mutation fuzzer).
                if frag != Frag::No {
                    return Parsed::Other(TrafficClass::Ipv6Other);
                }
                let Some(h) = ptr_at::<[u8; 8]>(ctx, l4) else {
                    return Parsed::Other(TrafficClass::Ipv6Other);
                };
                // SAFETY: bounds checked by `ptr_at`.
                let h = unsafe { *h };
                next = h[0];
                let off_flags = u16::from_be_bytes([h[2], h[3]]);
                l4 += 8;
                if off_flags & 0xfff8 != 0 {
                    // A later fragment: what follows is payload, never headers.
                    frag = Frag::Later;
                    break;
                }
                if off_flags & 1 != 0 {
                    frag = Frag::First;
                }
            }
            _ => break,
        }
    }
    let class = class_v6(next);
    if matches!(
        next,
        PROTO_HOPOPTS | PROTO_ROUTING | PROTO_DSTOPTS | PROTO_FRAGMENT
    ) || l4 > l3 + ip_len
    {
        return Parsed::Other(class);
    }
    let tos = (ip.vcf[0] << 4) | (ip.vcf[1] >> 4);
    let key = FlowKey {
        src: ip.src_addr,
        dst: ip.dst_addr,
        proto: next,
        family: FAMILY_V6,
        ..FlowKey::default()
    };
    let mut pkt = Packet {
        l3,
        l4,
        ip_len,
        frame_len: frame_len(ctx),
        key,
        tos,
        frag,
        tcp_flags: 0,
        l4_ok: false,
    };
    parse_l4(ctx, &mut pkt);
    Parsed::Ip(pkt, class)
}

/// Reads ports and TCP flags and validates the L4 header against the IP length.
/// Never reads L4 of a later fragment.
#[inline(always)]
fn parse_l4(ctx: &XdpContext, pkt: &mut Packet) {
    if pkt.frag == Frag::Later {
        return;
    }
    let ip_end = pkt.l3 + pkt.ip_len;
    match pkt.key.proto {
        PROTO_TCP => {
            let Some(ports) = ptr_at::<[u8; 4]>(ctx, pkt.l4) else {
                return;
            };
            // SAFETY: bounds checked by `ptr_at`.
            let ports = unsafe { *ports };
            pkt.key.sport = u16::from_ne_bytes([ports[0], ports[1]]);
            pkt.key.dport = u16::from_ne_bytes([ports[2], ports[3]]);
            let Some(tcp) = ptr_at::<[u8; 20]>(ctx, pkt.l4) else {
                return;
            };
            // SAFETY: bounds checked by `ptr_at`.
            let tcp = unsafe { &*tcp };
            let doff = ((tcp[12] >> 4) as usize) * 4;
            pkt.tcp_flags = tcp[13];
            pkt.l4_ok = doff >= 20 && pkt.l4 + doff <= ip_end;
        }
        PROTO_UDP => {
            let Some(udp) = ptr_at::<UdpHdr>(ctx, pkt.l4) else {
                return;
            };
            // SAFETY: bounds checked by `ptr_at`.
            let udp = unsafe { &*udp };
            pkt.key.sport = u16::from_ne_bytes(udp.src);
            pkt.key.dport = u16::from_ne_bytes(udp.dst);
            let len = u16::from_be_bytes(udp.len) as usize;
            // A first fragment's UDP length covers the whole datagram, not this fragment.
            pkt.l4_ok = pkt.l4 + UdpHdr::LEN <= ip_end
                && (pkt.frag == Frag::First || (len >= UdpHdr::LEN && pkt.l4 + len <= ip_end));
        }
        _ => {
            pkt.l4_ok = pkt.l4 <= ip_end;
        }
    }
}

/// The Ethernet header and up to two VLAN tags (`l3` is 14, 18 or 22 bytes).
#[inline(always)]
pub fn read_l2(ctx: &XdpContext, l3: usize) -> Option<[u8; 22]> {
    let mut l2 = [0u8; 22];
    let eth = ptr_at::<[u8; 14]>(ctx, 0)?;
    // SAFETY: bounds checked by `ptr_at`.
    l2[..14].copy_from_slice(unsafe { &*eth });
    if l3 >= 18 {
        let tag = ptr_at::<[u8; 4]>(ctx, 14)?;
        // SAFETY: bounds checked by `ptr_at`.
        l2[14..18].copy_from_slice(unsafe { &*tag });
    }
    if l3 >= 22 {
        let tag = ptr_at::<[u8; 4]>(ctx, 18)?;
        // SAFETY: bounds checked by `ptr_at`.
        l2[18..22].copy_from_slice(unsafe { &*tag });
    }
    Some(l2)
}

/// Writes `l3` bytes of `l2` at the start of the frame (constant-size writes per case,
/// which the verifier can check).
#[inline(always)]
pub fn write_l2(ctx: &XdpContext, l3: usize, l2: &[u8; 22]) -> Option<()> {
    match l3 {
        14 => {
            let p = ptr_at_mut::<[u8; 14]>(ctx, 0)?;
            // SAFETY: bounds checked by `ptr_at_mut`.
            unsafe { (*p).copy_from_slice(&l2[..14]) }
        }
        18 => {
            let p = ptr_at_mut::<[u8; 18]>(ctx, 0)?;
            // SAFETY: bounds checked by `ptr_at_mut`.
            unsafe { (*p).copy_from_slice(&l2[..18]) }
        }
        _ => {
            let p = ptr_at_mut::<[u8; 22]>(ctx, 0)?;
            // SAFETY: bounds checked by `ptr_at_mut`.
            unsafe { *p = *l2 }
        }
    }
    Some(())
}
