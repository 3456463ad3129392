//! Sending a VIP packet to its backend: the next hop from the kernel FIB, then either a
//! MAC rewrite (LVS direct routing) or an outer header (LVS tunnelling: IPIP, IP6IP6,
//! 4in6, 6in4, or GUE over UDP), then `XDP_TX` out of the ingress interface or
//! `XDP_REDIRECT` through the device map to another one.

use aya_ebpf::{
    bindings::bpf_fib_lookup as FibParams,
    helpers::{bpf_fib_lookup, bpf_xdp_adjust_head},
    programs::XdpContext,
};
use lb_common::{
    ip::{PROTO_IPIP, PROTO_IPV6, PROTO_UDP},
    service::{mode, FAMILY_V4, FAMILY_V6},
    DropReason, Event, LbConfig, Verdict, VipMeta,
};
use network_types::eth::EthHdr;

use crate::{
    csum, icmp,
    maps::{FIB_SCRATCH, NEXT_HOPS, TX_PORTS},
    parse::{ptr_at, ptr_at_mut, Packet, ETH_P_IP, ETH_P_IPV6},
    select::Choice,
    stats::count_event,
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const FIB_SUCCESS: i64 = 0;
const FIB_NO_NEIGH: i64 = 7;
const FIB_FRAG_NEEDED: i64 = 8;

const OUTER_TTL: u8 = 64;

/// How long a FIB answer is reused for a backend. A FIB lookup costs more than the rest
/// of an established flow's path; one every 100 ms per backend and CPU is free, and a
/// route, MTU or neighbour change reaches the fast path within this time. Failures
/// (no route, no neighbour yet) are never cached.
const NEXT_HOP_TTL_NS: u64 = 100_000_000;

/// What forwarding decided.
pub enum Out {
    Sent(Verdict),
    Drop(DropReason),
    /// No neighbour entry for the next hop: the kernel gets the packet and resolves one.
    Pass,
    /// Answered instead of forwarded (ICMP too-big back to the client, `XDP_TX`).
    Replied,
}

/// `next_hop`'s failures: an `Out` to return, or the path MTU when the packet (as it
/// would be sent) does not fit.
enum HopError {
    Out(Out),
    TooBig(u32),
}

struct NextHop {
    ifindex: u32,
    smac: [u8; 6],
    dmac: [u8; 6],
}

/// The next hop towards the chosen backend at `dst`, for `tot_len` bytes of IP: from the
/// per-CPU cache while it is fresh at `choice.now` (see [`NEXT_HOP_TTL_NS`]), else from
/// the FIB.
#[inline(always)]
fn next_hop(
    ctx: &XdpContext,
    choice: &Choice,
    family: u8,
    dst: &[u8; 16],
    tot_len: usize,
    pkt: &Packet,
) -> Result<NextHop, HopError> {
    let (slot, now) = (choice.backend_id, choice.now);
    let ingress = ctx.ingress_ifindex() as u32;
    let cached = NEXT_HOPS.get_ptr_mut(slot);
    if let Some(c) = cached {
        // SAFETY: this CPU's slot of a per-CPU map, written only by this CPU.
        let c = unsafe { &*c };
        if now < c.expires_ns && c.family == family && c.ingress == ingress && c.addr == *dst {
            if tot_len as u32 > c.mtu {
                return Err(HopError::TooBig(c.mtu));
            }
            return Ok(NextHop {
                ifindex: c.ifindex,
                smac: c.smac,
                dmac: c.dmac,
            });
        }
    }
    let (nh, mtu) = fib_lookup(ctx, family, dst, tot_len, pkt)?;
    if let Some(c) = cached {
        // SAFETY: as above.
        let c = unsafe { &mut *c };
        c.expires_ns = now + NEXT_HOP_TTL_NS;
        c.addr = *dst;
        c.ingress = ingress;
        c.ifindex = nh.ifindex;
        c.mtu = mtu;
        c.smac = nh.smac;
        c.dmac = nh.dmac;
        c.family = family;
    }
    Ok(nh)
}

/// Route lookup towards `dst` as if `tot_len` bytes of IP were sent there; on success
/// also the route's MTU.
#[inline(always)]
fn fib_lookup(
    ctx: &XdpContext,
    family: u8,
    dst: &[u8; 16],
    tot_len: usize,
    pkt: &Packet,
) -> Result<(NextHop, u32), HopError> {
    let Some(p) = FIB_SCRATCH.get_ptr_mut(0) else {
        return Err(HopError::Out(Out::Drop(DropReason::FibFailed)));
    };
    // SAFETY: a per-CPU scratch slot, used by this program run only; every field the
    // helper reads is written below (the rest is zeroed).
    let p = unsafe { &mut *p };
    // SAFETY: all-zero is a valid value of this plain C struct.
    *p = unsafe { core::mem::zeroed() };
    p.l4_protocol = pkt.key.proto;
    p.sport = pkt.key.sport;
    p.dport = pkt.key.dport;
    p.__bindgen_anon_1.tot_len = tot_len as u16;
    p.ifindex = ctx.ingress_ifindex() as u32;
    if family == FAMILY_V4 {
        p.family = AF_INET;
        p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes([dst[0], dst[1], dst[2], dst[3]]);
    } else {
        p.family = AF_INET6;
        p.__bindgen_anon_4.ipv6_dst = [
            u32::from_ne_bytes([dst[0], dst[1], dst[2], dst[3]]),
            u32::from_ne_bytes([dst[4], dst[5], dst[6], dst[7]]),
            u32::from_ne_bytes([dst[8], dst[9], dst[10], dst[11]]),
            u32::from_ne_bytes([dst[12], dst[13], dst[14], dst[15]]),
        ];
    }
    // SAFETY: `ctx.ctx` is the program's context; `p` is a valid, sized parameter block.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx as *mut _,
            p,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    match rc {
        FIB_SUCCESS => Ok((
            NextHop {
                ifindex: p.ifindex,
                smac: p.smac,
                dmac: p.dmac,
            },
            // SAFETY: on success the kernel wrote the route's MTU into this union member.
            unsafe { p.__bindgen_anon_1.mtu_result } as u32,
        )),
        FIB_NO_NEIGH => {
            count_event(Event::FibNoNeighbour, 0);
            Err(HopError::Out(Out::Pass))
        }
        // SAFETY: on FRAG_NEEDED the kernel wrote the MTU into this union member.
        FIB_FRAG_NEEDED => Err(HopError::TooBig(
            unsafe { p.__bindgen_anon_1.mtu_result } as u32
        )),
        _ => Err(HopError::Out(Out::Drop(DropReason::FibFailed))),
    }
}

/// A next hop that could not be used. Too big for the path: the client is told the MTU
/// its packets may have (path MTU minus `overhead` of encapsulation) by an ICMP error
/// sent back out of the ingress interface.
#[inline(always)]
fn hop_failed(ctx: &XdpContext, pkt: &Packet, e: HopError, overhead: u32) -> Out {
    match e {
        HopError::Out(out) => out,
        HopError::TooBig(mtu) => match icmp::too_big(ctx, pkt, mtu.saturating_sub(overhead)) {
            Ok(()) => Out::Replied,
            Err(reason) => Out::Drop(reason),
        },
    }
}

/// Writes the next hop's MACs and sends the frame on its way.
#[inline(always)]
fn transmit(ctx: &XdpContext, nh: &NextHop) -> Out {
    let Some(eth) = ptr_at_mut::<EthHdr>(ctx, 0) else {
        return Out::Drop(DropReason::Malformed);
    };
    // SAFETY: bounds checked by `ptr_at_mut`.
    unsafe {
        (*eth).dst_addr = nh.dmac;
        (*eth).src_addr = nh.smac;
    }
    if nh.ifindex == ctx.ingress_ifindex() as u32 {
        return Out::Sent(Verdict::Tx);
    }
    if TX_PORTS.get(nh.ifindex).is_none() {
        return Out::Drop(DropReason::NoTxPort);
    }
    match TX_PORTS.redirect(nh.ifindex, 0) {
        Ok(_) => Out::Sent(Verdict::Redirect),
        Err(_) => Out::Drop(DropReason::NoTxPort),
    }
}

/// LVS direct routing: only the MACs change; the backend holds the VIP.
#[inline(always)]
pub fn direct(ctx: &XdpContext, pkt: &Packet, choice: &Choice) -> Out {
    if choice.backend.family != pkt.key.family {
        return Out::Drop(DropReason::BadBackend);
    }
    match next_hop(
        ctx,
        choice,
        pkt.key.family,
        &choice.backend.addr,
        pkt.ip_len,
        pkt,
    ) {
        Ok(nh) => transmit(ctx, &nh),
        Err(e) => hop_failed(ctx, pkt, e, 0),
    }
}

/// LVS tunnelling: an outer IP header (and for GUE a UDP header) to the backend, whose
/// family picks IPv4 or IPv6 outside; the inner packet is untouched.
#[inline(always)]
pub fn tunnel(
    ctx: &XdpContext,
    pkt: &Packet,
    vip: &VipMeta,
    choice: &Choice,
    cfg: &LbConfig,
) -> Out {
    let outer_v6 = choice.backend.family == FAMILY_V6;
    let gue = vip.mode == mode::GUE;
    let ip_hdr = if outer_v6 { 40 } else { 20 };
    let extra = ip_hdr + if gue { 8 } else { 0 };
    let outer_len = pkt.ip_len + extra;
    if outer_len > 0xffff {
        return Out::Drop(DropReason::Mtu);
    }
    let nh = match next_hop(
        ctx,
        choice,
        choice.backend.family,
        &choice.backend.addr,
        outer_len,
        pkt,
    ) {
        Ok(nh) => nh,
        Err(e) => return hop_failed(ctx, pkt, e, extra as u32),
    };
    let l3 = pkt.l3;
    // SAFETY: `ctx.ctx` is the program's context. Growing the head invalidates every
    // packet pointer; all later accesses re-check bounds through `ptr_at`.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(extra as i32)) } != 0 {
        return Out::Drop(DropReason::AdjustFailed);
    }
    if move_l2(ctx, extra, l3).is_none() {
        return Out::Drop(DropReason::AdjustFailed);
    }
    let inner = if pkt.key.family == FAMILY_V4 {
        PROTO_IPIP
    } else {
        PROTO_IPV6
    };
    let proto = if gue { PROTO_UDP } else { inner };
    let written = if outer_v6 {
        write_ipv6(ctx, l3, pkt, choice, cfg, proto, outer_len)
    } else {
        write_ipv4(ctx, l3, pkt, choice, cfg, proto, outer_len)
    };
    if written.is_none() {
        return Out::Drop(DropReason::AdjustFailed);
    }
    if gue {
        let Some(udp) = ptr_at_mut::<[u8; 8]>(ctx, l3 + ip_hdr) else {
            return Out::Drop(DropReason::AdjustFailed);
        };
        // Source port from the flow hash, in the ephemeral range, so the backend's NIC
        // spreads flows across receive queues.
        let sport = (0xc000 | (choice.hash & 0x3fff)) as u16;
        let len = (pkt.ip_len + 8) as u16;
        let d = vip.gue_port.to_ne_bytes();
        let s = sport.to_be_bytes();
        let l = len.to_be_bytes();
        // UDP checksum 0: allowed for IPv4, and for IPv6 tunnels by RFC 6935/6936
        // (the decapsulating endpoint must accept it; lb_decap does).
        // SAFETY: bounds checked by `ptr_at_mut`.
        unsafe { *udp = [s[0], s[1], d[0], d[1], l[0], l[1], 0, 0] };
    }
    transmit(ctx, &nh)
}

/// After `bpf_xdp_adjust_head(-extra)`, moves the Ethernet header and any VLAN tags
/// (`l3` bytes, 14/18/22) from `extra` to the new start, and sets the Ethernet type that
/// precedes the outer IP header.
#[inline(always)]
fn move_l2(ctx: &XdpContext, extra: usize, l3: usize) -> Option<()> {
    let from = ptr_at::<[u8; 14]>(ctx, extra)?;
    let to = ptr_at_mut::<[u8; 14]>(ctx, 0)?;
    // SAFETY: both bounds checked; `extra` ≥ 20 > 14, so the ranges do not overlap.
    unsafe { *to = *from };
    let mut off = 14;
    for _ in 0..2 {
        if off >= l3 {
            break;
        }
        let from = ptr_at::<[u8; 4]>(ctx, extra + off)?;
        let to = ptr_at_mut::<[u8; 4]>(ctx, off)?;
        // SAFETY: bounds checked; no overlap as above.
        unsafe { *to = *from };
        off += 4;
    }
    Some(())
}

/// Sets the Ethernet type just before the IP header at `l3`.
#[inline(always)]
fn set_ether_type(ctx: &XdpContext, l3: usize, ether_type: u16) -> Option<()> {
    let t = ptr_at_mut::<u16>(ctx, l3 - 2)?;
    // SAFETY: bounds checked by `ptr_at_mut`.
    unsafe { *t = ether_type };
    Some(())
}

#[inline(always)]
fn write_ipv4(
    ctx: &XdpContext,
    l3: usize,
    pkt: &Packet,
    choice: &Choice,
    cfg: &LbConfig,
    proto: u8,
    outer_len: usize,
) -> Option<()> {
    set_ether_type(ctx, l3, ETH_P_IP)?;
    let prefix = cfg.tunnel_src4_prefix.min(32) as u32;
    let host_mask = if prefix == 32 { 0 } else { u32::MAX >> prefix };
    let base = u32::from_be_bytes(cfg.tunnel_src4);
    let src = ((base & !host_mask) | (choice.hash & host_mask)).to_be_bytes();
    let len = (outer_len as u16).to_be_bytes();
    let b = &choice.backend.addr;
    let h = ptr_at_mut::<[u8; 20]>(ctx, l3)?;
    // SAFETY: bounds checked by `ptr_at_mut`. Written in place: a header built on the
    // stack first would cost 20 of the program's 512 stack bytes.
    let h = unsafe { &mut *h };
    *h = [
        0x45, pkt.tos, len[0], len[1], 0, 0, 0x40, 0, OUTER_TTL, proto, 0, 0, src[0], src[1],
        src[2], src[3], b[0], b[1], b[2], b[3],
    ];
    let c = csum::ipv4_header(h).to_be_bytes();
    h[10] = c[0];
    h[11] = c[1];
    Some(())
}

#[inline(always)]
fn write_ipv6(
    ctx: &XdpContext,
    l3: usize,
    pkt: &Packet,
    choice: &Choice,
    cfg: &LbConfig,
    proto: u8,
    outer_len: usize,
) -> Option<()> {
    set_ether_type(ctx, l3, ETH_P_IPV6)?;
    let hash = choice.hash;
    let payload = ((outer_len - 40) as u16).to_be_bytes();
    // Source: the configured prefix with the flow hash in the low 32 bits (prefixes up
    // to /96); the flow label carries the hash too, for ECMP and RSS on the way.
    let mut src = cfg.tunnel_src6;
    if cfg.tunnel_src6_prefix <= 96 {
        let hb = hash.to_be_bytes();
        src[12] = hb[0];
        src[13] = hb[1];
        src[14] = hb[2];
        src[15] = hb[3];
    }
    let h = ptr_at_mut::<[u8; 40]>(ctx, l3)?;
    // SAFETY: bounds checked by `ptr_at_mut`; written in place (see `write_ipv4`).
    let h = unsafe { &mut *h };
    h[0] = 0x60 | (pkt.tos >> 4);
    h[1] = (pkt.tos << 4) | ((hash >> 16) & 0x0f) as u8;
    h[2] = (hash >> 8) as u8;
    h[3] = hash as u8;
    h[4] = payload[0];
    h[5] = payload[1];
    h[6] = proto;
    h[7] = OUTER_TTL;
    h[8..24].copy_from_slice(&src);
    h[24..40].copy_from_slice(&choice.backend.addr);
    Some(())
}
