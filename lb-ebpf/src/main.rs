//! lb's XDP data plane: the `lb_xdp` entry point.
//!
//! The entry point is thin: `try_lb` decides a verdict, and the single exit below counts
//! it exactly once. The pipeline: parse → match a VIP → pick a backend (flow table, then
//! the VIP's Maglev ring) → forward (direct routing or tunnel). Every frame that is not
//! for a VIP leaves with `XDP_PASS` and its bytes untouched, so the host keeps working
//! (ARP, ND, SSH, …).
#![no_std]
#![cfg_attr(not(test), no_main)]

/// Benchmark-only programs (the `bench` feature; never in the production object).
#[cfg(feature = "bench")]
mod bench_fwd;
mod csum;
mod decap;
mod forward;
mod icmp;
mod maps;
mod parse;
mod select;
mod stats;

use aya_ebpf::{macros::xdp, programs::XdpContext};
use lb_common::{
    service::{mode, vip_flags, FAMILY_V4, PROTO_TCP},
    DropReason, Event, Verdict,
};

use crate::{
    forward::Out,
    parse::{Frag, Parsed, TCP_RST},
};

#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    #[cfg(feature = "upgrade-variant")]
    upgrade_variant_marker();
    let bytes = frame_len(&ctx);
    let verdict = try_lb(&ctx, bytes);
    stats::count_verdict(verdict, bytes);
    verdict as u32
}

/// Only in the `upgrade-variant` build (`cargo xtask test` builds it): gives `lb_xdp`
/// different instructions, and so a different kernel tag, with the same behaviour and
/// ABI. The upgrade test (tests/tests/e2e_upgrade.rs) swaps the running program for that
/// object and back under load, as a real new release would be swapped in; an identical
/// object would not show that the program was really replaced.
#[cfg(feature = "upgrade-variant")]
#[inline(always)]
fn upgrade_variant_marker() {
    let marker: u64 = u64::from_be_bytes(*b"lbupgrad");
    // SAFETY: `marker` is a live, aligned local. The volatile read only keeps the compiler
    // from removing it: a store and a load on the stack, nothing touches the packet.
    unsafe { core::ptr::read_volatile(&marker) };
}

/// Decapsulation for backends (see `decap`): a separate entry point in the same object.
#[xdp]
pub fn lb_decap(ctx: XdpContext) -> u32 {
    let bytes = frame_len(&ctx);
    let event = decap::try_decap(&ctx);
    decap::count(event, bytes);
    match event {
        lb_common::decap::DecapEvent::Malformed => Verdict::Drop as u32,
        _ => Verdict::Pass as u32,
    }
}

/// Does nothing: the baseline that per-packet benchmarks subtract (the cost of
/// `BPF_PROG_TEST_RUN` itself). Never attached by the agent.
#[xdp]
pub fn lb_noop(_ctx: XdpContext) -> u32 {
    Verdict::Pass as u32
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
    let Some(cfg) = maps::CONFIG.get(0) else {
        return Verdict::Pass;
    };
    // Both paths end in the one `send` below: forwarding code inlined once keeps the
    // entry point within the 512-byte BPF stack.
    let (vip, choice, icmp_error) = match icmp::quoted_flow(ctx, &pkt)
        .and_then(|flow| select::vip_for_key(&flow).map(|vip| (flow, vip)))
    {
        // An ICMP error quoting a VIP flow: to that flow's backend, learning nothing.
        Some((flow, vip)) => (vip, select::existing(&flow, &vip, cfg), true),
        None => {
            let Some(vip) = select::vip_for(&pkt) else {
                stats::count_event(Event::PassNotVip, bytes);
                return Verdict::Pass;
            };
            if pkt.key.family == FAMILY_V4 && !parse::ipv4_checksum_ok(ctx, &pkt) {
                return drop(DropReason::Malformed, vip.vip_id, bytes);
            }
            // Fragments reach a backend only on VIPs configured to route them; a later
            // fragment has no L4 header to validate, a first one must carry a sound one.
            let frag_route = vip.flags & vip_flags::FRAG_ROUTE != 0;
            match pkt.frag {
                Frag::No if !pkt.l4_ok => return drop(DropReason::Malformed, vip.vip_id, bytes),
                Frag::First | Frag::Later if !frag_route => {
                    return drop(DropReason::Fragment, vip.vip_id, bytes)
                }
                Frag::First if !pkt.l4_ok => return drop(DropReason::Malformed, vip.vip_id, bytes),
                _ => {}
            }
            (vip, select::choose(&pkt, &vip, cfg, bytes), false)
        }
    };
    let choice = match choice {
        Ok(c) => c,
        Err(reason) => return drop(reason, vip.vip_id, bytes),
    };
    let verdict = send(ctx, &pkt, &vip, &choice, cfg, bytes);
    if icmp_error && (verdict == Verdict::Tx || verdict == Verdict::Redirect) {
        stats::count_event(Event::IcmpErrorRouted, bytes);
    }
    verdict
}

/// Forwards to the chosen backend by the VIP's method and counts the outcome.
#[inline(always)]
fn send(
    ctx: &XdpContext,
    pkt: &parse::Packet,
    vip: &lb_common::VipMeta,
    choice: &select::Choice,
    cfg: &lb_common::LbConfig,
    bytes: u64,
) -> Verdict {
    let out = match vip.mode {
        mode::DR => forward::direct(ctx, pkt, choice),
        _ => forward::tunnel(ctx, pkt, vip, choice, cfg),
    };
    match out {
        Out::Sent(v) => {
            let reset = pkt.key.proto == PROTO_TCP && pkt.tcp_flags & TCP_RST != 0;
            stats::count_service(vip.vip_id, choice.backend_id, bytes, choice.new_flow, reset);
            stats::count_event(Event::Forwarded, bytes);
            v
        }
        Out::Drop(reason) => drop(reason, vip.vip_id, bytes),
        Out::Pass => Verdict::Pass,
        Out::Replied => {
            stats::count_event(Event::IcmpTooBigSent, bytes);
            stats::count_vip(vip.vip_id, bytes);
            Verdict::Tx
        }
    }
}

/// Counts a dropped VIP packet (by reason, and against its VIP).
#[inline(always)]
fn drop(reason: DropReason, vip_id: u32, bytes: u64) -> Verdict {
    stats::count_drop(reason, bytes);
    stats::count_vip(vip_id, bytes);
    Verdict::Drop
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
