//! ICMP errors about VIP flows.
//!
//! A router on the client's path answers a backend's reply (source = the VIP) with an
//! ICMP error addressed to the VIP: destination unreachable (including IPv4
//! fragmentation-needed) or ICMPv6 destination unreachable / packet too big. The error
//! quotes the reply's headers; reversing that quoted tuple gives the client's flow, and
//! the error goes to the backend serving it (which needs it for path-MTU discovery).
//! The inner IPv6 header is expected to be followed directly by TCP/UDP (as replies from
//! backends are); anything else quoted is left to the kernel.

use aya_ebpf::{
    helpers::{bpf_csum_diff, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{
    ip::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP},
    service::FAMILY_V4,
    DropReason, FlowKey,
};
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};

use crate::{
    csum,
    parse::{ptr_at, ptr_at_mut, read_l2, write_l2, Frag, Packet},
};

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
    // Everything read below must lie inside the IP packet, not just the frame: Ethernet
    // padding after a short packet is not part of it (found by the mutation fuzzer).
    let ip_end = pkt.l3 + pkt.ip_len;
    let inner = pkt.l4 + 8;
    if inner > ip_end {
        return None;
    }
    let icmp = ptr_at::<[u8; 8]>(ctx, pkt.l4)?;
    // SAFETY: bounds checked by `ptr_at`.
    let icmp_type = unsafe { (*icmp)[0] };
    let mut key = FlowKey {
        family: pkt.key.family,
        ..FlowKey::default()
    };
    let l4 = if pkt.key.family == FAMILY_V4 {
        if pkt.key.proto != PROTO_ICMP || icmp_type != ICMP_DEST_UNREACH {
            return None;
        }
        if inner + Ipv4Hdr::LEN > ip_end {
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
        if pkt.key.proto != PROTO_ICMPV6
            || (icmp_type != ICMPV6_DEST_UNREACH && icmp_type != ICMPV6_PKT_TOOBIG)
        {
            return None;
        }
        if inner + Ipv6Hdr::LEN > ip_end {
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
    // The error must be addressed to the address it quotes as the source (the VIP), and
    // quote at least the ports.
    if key.dst != pkt.key.dst || l4 + 4 > ip_end {
        return None;
    }
    let ports = ptr_at::<[u8; 4]>(ctx, l4)?;
    // SAFETY: bounds checked by `ptr_at`.
    let ports = unsafe { *ports };
    key.sport = u16::from_ne_bytes([ports[2], ports[3]]);
    key.dport = u16::from_ne_bytes([ports[0], ports[1]]);
    Some(key)
}

/// Bytes of the offending packet quoted in a generated error: its IP header and the start
/// of L4, enough for the sender to find the socket (RFC 792 needs header + 8 bytes; the
/// 64 here also covers IPv6 + TCP/UDP ports, and keeps the checksum a fixed-size sum).
pub const QUOTE: usize = 64;
const ICMP_FRAG_NEEDED: u8 = 4;

/// Answers a packet too big for the path to its backend with ICMP fragmentation-needed
/// (IPv4, only when DF is set: lb never fragments) or ICMPv6 packet-too-big, reporting
/// `mtu` (what the inner packet may be), and sends it back out of the ingress interface.
/// The frame is rewritten in place: addresses and MACs swapped, the original packet cut
/// to its first [`QUOTE`] bytes behind the new headers.
#[inline(always)]
pub fn too_big(ctx: &XdpContext, pkt: &Packet, mtu: u32) -> Result<(), DropReason> {
    let v4 = pkt.key.family == FAMILY_V4;
    let l3 = pkt.l3;
    if pkt.ip_len < QUOTE {
        return Err(DropReason::Mtu);
    }
    if v4 {
        let frags = ptr_at::<[u8; 8]>(ctx, l3).ok_or(DropReason::Mtu)?;
        // SAFETY: bounds checked by `ptr_at`; byte 6 holds the DF bit.
        if unsafe { (*frags)[6] } & 0x40 == 0 {
            return Err(DropReason::Mtu);
        }
    }
    let mut l2 = read_l2(ctx, l3).ok_or(DropReason::Mtu)?;
    // Back to where it came from: swap the MACs.
    for i in 0..6 {
        l2.swap(i, i + 6);
    }
    let hdr: i32 = if v4 { 20 + 8 } else { 40 + 8 };
    // SAFETY: `ctx.ctx` is the program's context; all pointers are re-derived afterwards.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -hdr) } != 0 {
        return Err(DropReason::AdjustFailed);
    }
    // The frame is now `hdr + frame_len` long; keep the new headers and the quote.
    let delta = (l3 + QUOTE) as i32 - pkt.frame_len as i32;
    // SAFETY: as above; shrinking to `l3 + hdr + QUOTE` bytes, which exist (checked above).
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return Err(DropReason::AdjustFailed);
    }
    write_l2(ctx, l3, &l2).ok_or(DropReason::AdjustFailed)?;
    let (src, dst) = (pkt.key.dst, pkt.key.src);
    let icmp_len = (8 + QUOTE) as u16;
    if v4 {
        let ip = ptr_at_mut::<[u8; 20]>(ctx, l3).ok_or(DropReason::AdjustFailed)?;
        // SAFETY: bounds checked by `ptr_at_mut`.
        let ip = unsafe { &mut *ip };
        let tot = (20 + icmp_len).to_be_bytes();
        *ip = [
            0x45, 0, tot[0], tot[1], 0, 0, 0, 0, 64, PROTO_ICMP, 0, 0, src[0], src[1], src[2],
            src[3], dst[0], dst[1], dst[2], dst[3],
        ];
        let c = csum::ipv4_header(ip).to_be_bytes();
        ip[10] = c[0];
        ip[11] = c[1];
        let m = (mtu.min(0xffff) as u16).to_be_bytes();
        let icmp = ptr_at_mut::<[u8; 8]>(ctx, l3 + 20).ok_or(DropReason::AdjustFailed)?;
        // SAFETY: bounds checked by `ptr_at_mut`.
        unsafe { *icmp = [ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, 0, 0, 0, 0, m[0], m[1]] };
        let sum = csum_icmp(ctx, l3 + 20, 0)?;
        let c = sum.to_ne_bytes();
        // SAFETY: bounds checked above (same 8 bytes); the frame has not moved since.
        unsafe {
            (*icmp)[2] = c[0];
            (*icmp)[3] = c[1];
        }
    } else {
        let ip = ptr_at_mut::<[u8; 40]>(ctx, l3).ok_or(DropReason::AdjustFailed)?;
        // SAFETY: bounds checked by `ptr_at_mut`.
        let ip = unsafe { &mut *ip };
        let plen = icmp_len.to_be_bytes();
        ip[..8].copy_from_slice(&[0x60, 0, 0, 0, plen[0], plen[1], PROTO_ICMPV6, 64]);
        ip[8..24].copy_from_slice(&src);
        ip[24..40].copy_from_slice(&dst);
        let m = mtu.to_be_bytes();
        let icmp = ptr_at_mut::<[u8; 8]>(ctx, l3 + 40).ok_or(DropReason::AdjustFailed)?;
        // SAFETY: bounds checked by `ptr_at_mut`.
        unsafe { *icmp = [ICMPV6_PKT_TOOBIG, 0, 0, 0, m[0], m[1], m[2], m[3]] };
        // The ICMPv6 checksum covers a pseudo-header: addresses, length, next header.
        let mut pseudo = 0u32;
        let mut i = 0;
        while i < 16 {
            pseudo += u16::from_ne_bytes([src[i], src[i + 1]]) as u32;
            pseudo += u16::from_ne_bytes([dst[i], dst[i + 1]]) as u32;
            i += 2;
        }
        pseudo += u16::from_ne_bytes(icmp_len.to_be_bytes()) as u32;
        pseudo += u16::from_ne_bytes([0, PROTO_ICMPV6]) as u32;
        let sum = csum_icmp(ctx, l3 + 40, pseudo)?;
        let c = sum.to_ne_bytes();
        // SAFETY: bounds checked above (same 8 bytes); the frame has not moved since.
        unsafe {
            (*icmp)[2] = c[0];
            (*icmp)[3] = c[1];
        }
    }
    Ok(())
}

/// The Internet checksum of the ICMP message at `off` (8-byte header + quote), seeded
/// with `seed` (a pseudo-header sum), in memory byte order.
#[inline(always)]
fn csum_icmp(ctx: &XdpContext, off: usize, seed: u32) -> Result<u16, DropReason> {
    let msg = ptr_at_mut::<[u8; 8 + QUOTE]>(ctx, off).ok_or(DropReason::AdjustFailed)?;
    // SAFETY: the helper reads exactly the bounds-checked `8 + QUOTE` bytes.
    let sum = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            msg as *mut u32,
            (8 + QUOTE) as u32,
            seed,
        )
    };
    if sum < 0 {
        return Err(DropReason::AdjustFailed);
    }
    Ok(!csum::fold(sum as u32))
}
