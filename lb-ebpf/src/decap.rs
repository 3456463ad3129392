//! `lb_decap`: decapsulation for backends whose kernel cannot (no ipip / fou modules).
//!
//! Strips the outer IPv4/IPv6 header (IPIP, IP6IP6, 4in6, 6in4) or outer IP + UDP (GUE
//! variant 1, on the configured port) from packets addressed to one of this host's
//! tunnel addresses, and passes the inner packet to the kernel. Everything else passes
//! untouched, so the program can sit on a backend's only interface.

use aya_ebpf::{
    helpers::bpf_xdp_adjust_head,
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
    programs::XdpContext,
};
use lb_common::{
    decap::{DecapConfig, DecapEvent, DecapKey},
    ip::{PROTO_IPIP, PROTO_IPV6, PROTO_UDP},
    service::{FAMILY_V4, FAMILY_V6},
    Counter,
};
use network_types::{
    ip::{Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
};

use crate::{
    maps::abi_map,
    parse::{l3_start, ptr_at, read_l2, write_l2, ETH_P_IP, ETH_P_IPV6},
};

abi_map! {
    #[map(name = "LB_DECAP_ADR_V1")]
    static DECAP_ADDRS: HashMap<DecapKey, u32> = HashMap::with_max_entries(256, 0);
}

abi_map! {
    #[map(name = "LB_DECAP_CFG_V1")]
    static DECAP_CONFIG: Array<DecapConfig> = Array::with_max_entries(1, 0);
}

abi_map! {
    #[map(name = "LB_DECAP_ST_V1")]
    static DECAP_STATS: PerCpuArray<Counter> =
        PerCpuArray::with_max_entries(DecapEvent::COUNT, 0);
}

#[inline(always)]
pub fn count(event: DecapEvent, bytes: u64) {
    if let Some(c) = DECAP_STATS.get_ptr_mut(event as u32) {
        // SAFETY: a per-CPU slot, written only by this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// How many outer bytes to strip and the inner Ethernet type, or why not.
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "a key passed by value is copied onto the 512-byte BPF stack"
)]
pub fn try_decap(ctx: &XdpContext) -> DecapEvent {
    let Some((l3, ether_type)) = l3_start(ctx) else {
        return DecapEvent::NotForUs;
    };
    let mut key = DecapKey::default();
    let (outer, proto) = match ether_type {
        ETH_P_IP => {
            let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, l3) else {
                return DecapEvent::NotForUs;
            };
            // SAFETY: bounds checked by `ptr_at`.
            let ip = unsafe { &*ip };
            key.family = FAMILY_V4;
            key.addr[..4].copy_from_slice(&ip.dst_addr);
            // Fragmented outer packets are left to the kernel (lb never sends them).
            if ip.vihl >> 4 != 4 || u16::from_be_bytes(ip.frags) & 0x3fff != 0 {
                return DecapEvent::NotForUs;
            }
            (((ip.vihl & 0x0f) as usize) * 4, ip.proto)
        }
        ETH_P_IPV6 => {
            let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, l3) else {
                return DecapEvent::NotForUs;
            };
            // SAFETY: bounds checked by `ptr_at`.
            let ip = unsafe { &*ip };
            key.family = FAMILY_V6;
            key.addr = ip.dst_addr;
            (Ipv6Hdr::LEN, ip.next_hdr)
        }
        _ => return DecapEvent::NotForUs,
    };
    if proto != PROTO_IPIP && proto != PROTO_IPV6 && proto != PROTO_UDP {
        return DecapEvent::NotForUs;
    }
    // SAFETY: the value is only tested for presence.
    if unsafe { DECAP_ADDRS.get(&key) }.is_none() {
        return DecapEvent::NotForUs;
    }
    if outer < Ipv4Hdr::LEN {
        return DecapEvent::Malformed;
    }
    let mut strip = outer;
    let mut inner_v6 = proto == PROTO_IPV6;
    if proto == PROTO_UDP {
        let gue_port = DECAP_CONFIG.get(0).map_or(0, |c| c.gue_port);
        let Some(udp) = ptr_at::<UdpHdr>(ctx, l3 + outer) else {
            return DecapEvent::NotForUs;
        };
        // SAFETY: bounds checked by `ptr_at`.
        if gue_port == 0 || u16::from_ne_bytes(unsafe { (*udp).dst }) != gue_port {
            return DecapEvent::NotForUs;
        }
        strip += UdpHdr::LEN;
        // GUE variant 1: the payload's version nibble says which IP it is. (Read
        // through a whole minimal header: single-byte bounds checks compile into a
        // form the verifier does not accept.)
        let Some(v) = ptr_at::<[u8; 20]>(ctx, l3 + strip) else {
            return DecapEvent::Malformed;
        };
        // SAFETY: bounds checked by `ptr_at`.
        match unsafe { (*v)[0] } >> 4 {
            4 => inner_v6 = false,
            6 => inner_v6 = true,
            _ => return DecapEvent::Malformed,
        }
    }
    // The inner header must be there in full.
    let inner_ok = if inner_v6 {
        ptr_at::<Ipv6Hdr>(ctx, l3 + strip).is_some()
    } else {
        ptr_at::<Ipv4Hdr>(ctx, l3 + strip).is_some()
    };
    if !inner_ok || strip > 68 {
        return DecapEvent::Malformed;
    }
    // Save the L2 header, drop the outer headers, write the L2 header back in front of
    // the inner packet with the inner Ethernet type.
    let Some(mut l2) = read_l2(ctx, l3) else {
        return DecapEvent::Malformed;
    };
    let et = if inner_v6 { ETH_P_IPV6 } else { ETH_P_IP }.to_ne_bytes();
    l2[l3 - 2] = et[0];
    l2[l3 - 1] = et[1];
    // SAFETY: `ctx.ctx` is the program's context; `strip` bytes lie inside the frame
    // (checked above). Every packet pointer is re-derived afterwards.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, strip as i32) } != 0 {
        return DecapEvent::Malformed;
    }
    if write_l2(ctx, l3, &l2).is_none() {
        return DecapEvent::Malformed;
    }
    DecapEvent::Decapsulated
}
