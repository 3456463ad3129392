//! ICMP errors about VIP flows.
//!
//! A router on the client's path answers a backend's reply (source = the VIP) with an
//! ICMP error addressed to the VIP: destination unreachable (including IPv4
//! fragmentation-needed) or ICMPv6 destination unreachable / packet too big. The error
//! quotes the reply's headers; reversing that quoted tuple gives the client's flow, and
//! the error goes to the backend serving it (which needs it for path-MTU discovery).
//! The inner IPv6 header is expected to be followed directly by TCP/UDP (as replies from
//! backends are); anything else quoted is left to the kernel.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    service::{FAMILY_V4, PROTO_TCP, PROTO_UDP},
    FlowKey,
};
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};

use crate::parse::{ptr_at, Frag, Packet, IPPROTO_ICMP, IPPROTO_ICMPV6};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PKT_TOOBIG: u8 = 2;

/// The client flow an ICMP error is about, as the flow table keys it (source = client,
/// destination = VIP), or `None` if the packet is not such an error.
#[inline(always)]
pub fn quoted_flow(ctx: &XdpContext, pkt: &Packet) -> Option<FlowKey> {
    if pkt.frag != Frag::No {
        return None;
    }
    let icmp = ptr_at::<[u8; 8]>(ctx, pkt.l4)?;
    // SAFETY: bounds checked by `ptr_at`.
    let icmp_type = unsafe { (*icmp)[0] };
    let inner = pkt.l4 + 8;
    let mut key = FlowKey {
        family: pkt.key.family,
        ..FlowKey::default()
    };
    let l4 = if pkt.key.family == FAMILY_V4 {
        if pkt.key.proto != IPPROTO_ICMP || icmp_type != ICMP_DEST_UNREACH {
            return None;
        }
        let ip = ptr_at::<Ipv4Hdr>(ctx, inner)?;
        // SAFETY: bounds checked by `ptr_at`.
        let ip = unsafe { &*ip };
        let ihl = ((ip.vihl & 0x0f) as usize) * 4;
        // A quoted later fragment carries no ports.
        if ip.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN || u16::from_be_bytes(ip.frags) & 0x1fff != 0 {
            return None;
        }
        key.proto = ip.proto;
        key.src[..4].copy_from_slice(&ip.dst_addr);
        key.dst[..4].copy_from_slice(&ip.src_addr);
        inner + ihl
    } else {
        if pkt.key.proto != IPPROTO_ICMPV6
            || (icmp_type != ICMPV6_DEST_UNREACH && icmp_type != ICMPV6_PKT_TOOBIG)
        {
            return None;
        }
        let ip = ptr_at::<Ipv6Hdr>(ctx, inner)?;
        // SAFETY: bounds checked by `ptr_at`.
        let ip = unsafe { &*ip };
        if ip.vcf[0] >> 4 != 6 {
            return None;
        }
        key.proto = ip.next_hdr;
        key.src = ip.dst_addr;
        key.dst = ip.src_addr;
        inner + Ipv6Hdr::LEN
    };
    if key.proto != PROTO_TCP && key.proto != PROTO_UDP {
        return None;
    }
    // The error must be addressed to the address it quotes as the source (the VIP).
    if key.dst != pkt.key.dst {
        return None;
    }
    let ports = ptr_at::<[u8; 4]>(ctx, l4)?;
    // SAFETY: bounds checked by `ptr_at`.
    let ports = unsafe { *ports };
    key.sport = u16::from_ne_bytes([ports[2], ports[3]]);
    key.dport = u16::from_ne_bytes([ports[0], ports[1]]);
    Some(key)
}
