//! Benchmark-only programs for the end-to-end packet-rate run (tests/src/bench/e2e_rate.rs):
//! a generator, a forwarding ceiling and a classifying, counting sink. Only in the object
//! built with the `bench` feature (target/bpf-bench); never attached by the agent.
//!
//! Their maps are benchmark scratch, not the data plane's ABI: plain integers and bytes
//! only (no struct shared with user space), named `LBB_*` so they cannot clash with
//! `lb_common`'s `LB_*_V1` names, and never pinned. The sink's kind indices
//! (`KIND_*`) are mirrored by `SinkKind` in e2e_rate.rs.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_get_smp_processor_id,
    macros::{map, xdp},
    maps::{Array, DevMap, PerCpuArray},
    programs::XdpContext,
};
use lb_common::ip::{PROTO_IPIP, PROTO_UDP};

use crate::parse::{ptr_at, ptr_at_mut};

/// Bytes of the generator's frame: Ethernet + IPv4 + UDP + 22 bytes of payload.
const FRAME_LEN: usize = 64;
/// Offsets in that frame: the IPv4 header checksum, the last byte of the source
/// address and the UDP source port.
const IP_CSUM: usize = 14 + 10;
const SRC_LAST: usize = 14 + 15;
const UDP_SPORT: usize = 14 + 20;

/// The generator's template frame (8 × u64 = [`FRAME_LEN`] bytes), written by user space.
#[map(name = "LBB_TX_FRAME")]
static TX_FRAME: Array<[u64; 8]> = Array::with_max_entries(1, 0);

/// Generator flow spread: [0] distinct source ports, [1] distinct source addresses,
/// [2] generator threads (one per CPU; each CPU sends its own share of the addresses).
#[map(name = "LBB_TX_CFG")]
static TX_CFG: Array<u32> = Array::with_max_entries(3, 0);

/// Frames the generator has sent (one program run each).
#[map(name = "LBB_TX_CNT")]
static TX_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Frames the sink has received, by kind (`KIND_*`).
#[map(name = "LBB_SINK_CNT")]
static SINK_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(KINDS, 0);

/// What the sink classifies by: [0] the VIP, [1] the VIP's port, [2] the sink's own
/// address (IPv4 addresses as `u32::from(Ipv4Addr)`, ports as numbers).
#[map(name = "LBB_SINK_CFG")]
static SINK_CFG: Array<u32> = Array::with_max_entries(3, 0);

/// Sink kinds: how a frame reached the sink, so the benchmark counts only what the
/// system under test should deliver (and sees it if the system did something else).
/// Anything else: ARP, IPv6 neighbour discovery, a frame the sink does not expect.
const KIND_OTHER: u32 = 0;
/// IPv4 UDP to the VIP and its port, as the generator sent it: direct routing (only the
/// MAC addresses change) and the plain forwarder.
const KIND_VIP: u32 = 1;
/// IPv4-in-IPv4 (protocol 4) to the sink's own address carrying IPv4 UDP to the VIP and
/// its port: tunnel mode, counted before any decapsulation.
const KIND_IPIP: u32 = 2;
/// IPv4 UDP to the sink's own address and the VIP's port: destination NAT.
const KIND_NAT: u32 = 3;
const KINDS: u32 = 4;

const ETH_LEN: usize = 14;
const IP4_LEN: usize = 20;
/// Bytes the sink reads of a plain frame (up to the UDP destination port) and of an IPIP
/// frame (up to the inner UDP destination port).
const PLAIN_LEN: usize = ETH_LEN + IP4_LEN + 4;
const IPIP_LEN: usize = ETH_LEN + 2 * IP4_LEN + 4;

/// The interfaces `lb_bench_fwd` spreads frames over: the benchmark's three sinks.
#[map(name = "LBB_FWD_PORT")]
static FWD_PORT: DevMap = DevMap::with_max_entries(FWD_PORTS, 0);
const FWD_PORTS: u32 = 3;

/// Generator, run by `BPF_PROG_TEST_RUN` in live-frame mode: rewrites the whole frame
/// from the template (the frame's page is recycled after the receivers, which may have
/// rewritten or encapsulated it, let it go), gives it the next flow and sends it back
/// out of the interface it "arrived" on.
#[xdp]
pub fn lb_bench_tx(ctx: XdpContext) -> u32 {
    let (Some(frame), Some(tpl), Some(count)) = (
        ptr_at_mut::<[u64; 8]>(&ctx, 0),
        TX_FRAME.get(0),
        TX_COUNT.get_ptr_mut(0),
    ) else {
        return xdp_action::XDP_ABORTED;
    };
    let ports = TX_CFG.get(0).map_or(1, |&p| p.max(1));
    let addrs = TX_CFG.get(1).map_or(1, |&a| a.max(1));
    let threads = TX_CFG.get(2).map_or(1, |&t| t.max(1));
    // SAFETY: a helper without arguments or side effects.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    // SAFETY: `count` is this CPU's slot of a per-CPU map, written only by this CPU.
    let n = unsafe {
        *count += 1;
        *count
    } as u32;
    let port_step = n % ports;
    // Each CPU takes the addresses congruent to its number modulo `threads`, as a NIC's
    // receive-side scaling would keep each flow on one CPU: no flow-table or conntrack
    // entry is then written by two CPUs at once (exactly so when `threads` divides
    // `addrs`; otherwise a few addresses are shared).
    let addr_step = ((n / ports) * threads + cpu % threads) % addrs;
    // SAFETY: `frame` covers FRAME_LEN bytes inside the packet (checked by `ptr_at_mut`);
    // every offset written below is smaller than FRAME_LEN.
    unsafe {
        *frame = *tpl;
        let bytes = frame.cast::<u8>();
        let sport = u16::from_be_bytes([*bytes.add(UDP_SPORT), *bytes.add(UDP_SPORT + 1)])
            .wrapping_add(port_step as u16)
            .to_be_bytes();
        *bytes.add(UDP_SPORT) = sport[0];
        *bytes.add(UDP_SPORT + 1) = sport[1];
        // User space keeps the template's last address byte + `addrs` within 255, so
        // the byte does not carry and the checksum changes by `addr_step` (RFC 1624).
        // The UDP checksum is 0 (none), so neither change touches it.
        *bytes.add(SRC_LAST) = (*bytes.add(SRC_LAST)).wrapping_add(addr_step as u8);
        let csum = u16::from_be_bytes([*bytes.add(IP_CSUM), *bytes.add(IP_CSUM + 1)]);
        let sum = u32::from(!csum) + addr_step;
        let sum = (sum & 0xffff) + (sum >> 16);
        let csum = (!(sum as u16)).to_be_bytes();
        *bytes.add(IP_CSUM) = csum[0];
        *bytes.add(IP_CSUM + 1) = csum[1];
    }
    xdp_action::XDP_TX
}

/// The forwarding ceiling: every frame, untouched, to one of the [`FWD_PORTS`] devices,
/// picked by its UDP source port, so the frames take the same fan-out to the three
/// sinks as a load balancer's (and a flow always the same one). Frames too short to
/// carry a port go to slot 0.
#[xdp]
pub fn lb_bench_fwd(ctx: XdpContext) -> u32 {
    let slot = ptr_at::<[u8; 2]>(&ctx, UDP_SPORT).map_or(0, |sport| {
        // SAFETY: `ptr_at` checked that the two bytes lie inside the packet.
        u32::from(u16::from_be_bytes(unsafe { *sport })) % FWD_PORTS
    });
    FWD_PORT
        .redirect(slot, 0)
        .unwrap_or(xdp_action::XDP_ABORTED)
}

/// Counting sink: counts every frame by kind and drops it, so the benchmark measures the
/// path up to here and not the receiving host's stack.
#[xdp]
pub fn lb_bench_sink(ctx: XdpContext) -> u32 {
    if let Some(count) = SINK_COUNT.get_ptr_mut(sink_kind(&ctx)) {
        // SAFETY: this CPU's slot of a per-CPU map, written only by this CPU.
        unsafe { *count += 1 };
    }
    xdp_action::XDP_DROP
}

/// Which `KIND_*` a frame is. Reads fixed offsets: every frame of interest has a
/// 20-byte IPv4 header (version 4, IHL 5: the generator's, and lb's outer header).
#[inline(always)]
fn sink_kind(ctx: &XdpContext) -> u32 {
    let Some(frame) = ptr_at::<[u8; PLAIN_LEN]>(ctx, 0) else {
        return KIND_OTHER;
    };
    // SAFETY: `ptr_at` checked that PLAIN_LEN bytes lie inside the packet.
    let h = unsafe { &*frame };
    let cfg = |i: u32| SINK_CFG.get(i).copied().unwrap_or(0);
    let (vip, port, own) = (cfg(0), cfg(1), cfg(2));
    if h[12] != 0x08 || h[13] != 0x00 || h[ETH_LEN] != 0x45 {
        return KIND_OTHER;
    }
    let proto = h[ETH_LEN + 9];
    let dst = u32::from_be_bytes([h[30], h[31], h[32], h[33]]);
    let dport = u32::from(u16::from_be_bytes([h[36], h[37]]));
    if proto == PROTO_UDP && dport == port {
        if dst == vip {
            return KIND_VIP;
        }
        if dst == own {
            return KIND_NAT;
        }
        return KIND_OTHER;
    }
    if proto != PROTO_IPIP || dst != own {
        return KIND_OTHER;
    }
    let Some(frame) = ptr_at::<[u8; IPIP_LEN]>(ctx, 0) else {
        return KIND_OTHER;
    };
    // SAFETY: `ptr_at` checked that IPIP_LEN bytes lie inside the packet.
    let h = unsafe { &*frame };
    let inner = ETH_LEN + IP4_LEN;
    let inner_dst =
        u32::from_be_bytes([h[inner + 16], h[inner + 17], h[inner + 18], h[inner + 19]]);
    let inner_dport = u32::from(u16::from_be_bytes([h[inner + 22], h[inner + 23]]));
    if h[inner] == 0x45 && h[inner + 9] == PROTO_UDP && inner_dst == vip && inner_dport == port {
        KIND_IPIP
    } else {
        KIND_OTHER
    }
}

const _: () = assert!(core::mem::size_of::<[u64; 8]>() == FRAME_LEN);
