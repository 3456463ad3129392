//! lb's XDP data plane: the `lb_xdp` entry point.
//!
//! The entry point is thin: `try_lb` decides a verdict, and the single exit below counts
//! it exactly once. The pipeline: parse → match a VIP → pick a backend (flow table, then
//! the VIP's Maglev ring) → forward (direct routing or tunnel). Every frame that is not
//! for a VIP leaves with `XDP_PASS` and its bytes untouched, so the host keeps working
//! (ARP, ND, SSH, …).
#![no_std]
#![cfg_attr(not(test), no_main)]

mod csum;
mod forward;
mod maps;
mod parse;
mod select;
mod stats;

use aya_ebpf::{macros::xdp, programs::XdpContext};
use lb_common::{
    service::{mode, vip_flags, PROTO_TCP},
    DropReason, Event, Verdict,
};

use crate::{
    forward::Out,
    parse::{Frag, Parsed, TCP_RST},
};

#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    let bytes = frame_len(&ctx);
    let verdict = try_lb(&ctx, bytes);
    stats::count_verdict(verdict, bytes);
    verdict as u32
}

#[inline(always)]
fn try_lb(ctx: &XdpContext, bytes: u64) -> Verdict {
    let pkt = match parse::parse(ctx) {
        Parsed::Other(class) => {
            stats::count_traffic(class, bytes);
            return Verdict::Pass;
        }
        Parsed::Ip(pkt, class) => {
            stats::count_traffic(class, bytes);
            pkt
        }
    };
    let Some(vip) = select::vip_for(&pkt) else {
        stats::count_event(Event::PassNotVip, bytes);
        return Verdict::Pass;
    };
    let drop = |reason: DropReason| {
        stats::count_drop(reason, bytes);
        stats::count_vip(vip.vip_id, bytes);
        Verdict::Drop
    };
    // Fragments reach a backend only on VIPs configured to route them; a later fragment
    // has no L4 header to validate, a first one must carry a sound one.
    let frag_route = vip.flags & vip_flags::FRAG_ROUTE != 0;
    match pkt.frag {
        Frag::No if !pkt.l4_ok => return drop(DropReason::Malformed),
        Frag::First | Frag::Later if !frag_route => return drop(DropReason::Fragment),
        Frag::First if !pkt.l4_ok => return drop(DropReason::Malformed),
        _ => {}
    }
    let Some(cfg) = maps::CONFIG.get(0) else {
        return drop(DropReason::NoBackend);
    };
    let choice = match select::choose(&pkt, &vip, cfg, bytes) {
        Ok(c) => c,
        Err(reason) => return drop(reason),
    };
    let out = match vip.mode {
        mode::DR => forward::direct(ctx, &pkt, &choice),
        _ => forward::tunnel(ctx, &pkt, &vip, &choice, cfg),
    };
    match out {
        Out::Sent(v) => {
            let reset = pkt.key.proto == PROTO_TCP && pkt.tcp_flags & TCP_RST != 0;
            stats::count_service(vip.vip_id, choice.backend_id, bytes, choice.new_flow, reset);
            stats::count_event(Event::Forwarded, bytes);
            v
        }
        Out::Drop(reason) => drop(reason),
        Out::Pass => Verdict::Pass,
    }
}

#[inline(always)]
fn frame_len(ctx: &XdpContext) -> u64 {
    (ctx.data_end() - ctx.data()) as u64
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any path that could reach here; this only satisfies no_std.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
