//! lb's XDP data plane: the `lb_xdp` entry point.
//!
//! The entry point is thin: `try_lb` decides a verdict, and the single exit below counts
//! it exactly once. Every frame that is not for the load balancer leaves with
//! `XDP_PASS` and its bytes untouched, so the host keeps working (ARP, ND, SSH, …).
#![no_std]
#![cfg_attr(not(test), no_main)]

mod parse;
mod stats;

use aya_ebpf::{macros::xdp, programs::XdpContext};
use lb_common::Verdict;

#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    let verdict = try_lb(&ctx);
    stats::count_verdict(verdict, frame_len(&ctx));
    verdict as u32
}

#[inline(always)]
fn try_lb(ctx: &XdpContext) -> Verdict {
    let class = parse::classify(ctx);
    stats::count_traffic(class, frame_len(ctx));
    Verdict::Pass
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
