//! Bounds-checked packet access and header classification.

use aya_ebpf::programs::XdpContext;
use core::mem;
use lb_common::TrafficClass;
use network_types::{eth::EthHdr, ip::Ipv4Hdr, ip::Ipv6Hdr, vlan::VlanHdr};

// Raw wire values (network byte order as read into a u16 on little-endian BPF).
const ETH_P_IP: u16 = 0x0800u16.to_be();
const ETH_P_IPV6: u16 = 0x86DDu16.to_be();
const ETH_P_ARP: u16 = 0x0806u16.to_be();
const ETH_P_8021Q: u16 = 0x8100u16.to_be();
const ETH_P_8021AD: u16 = 0x88A8u16.to_be();

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

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

/// Where the L3 header starts and which Ethernet type it carries, after skipping up to
/// two VLAN tags (802.1Q, or 802.1ad outer + 802.1Q inner).
#[inline(always)]
fn l3_start(ctx: &XdpContext) -> Option<(usize, u16)> {
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

/// Classifies a frame for the ingress traffic counters.
#[inline(always)]
pub fn classify(ctx: &XdpContext) -> TrafficClass {
    let Some((l3, ether_type)) = l3_start(ctx) else {
        return TrafficClass::Runt;
    };
    match ether_type {
        ETH_P_IP => {
            let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, l3) else {
                return TrafficClass::Runt;
            };
            // SAFETY: bounds checked by `ptr_at`.
            match unsafe { (*ip).proto } {
                IPPROTO_TCP => TrafficClass::Ipv4Tcp,
                IPPROTO_UDP => TrafficClass::Ipv4Udp,
                IPPROTO_ICMP => TrafficClass::Ipv4Icmp,
                _ => TrafficClass::Ipv4Other,
            }
        }
        ETH_P_IPV6 => {
            let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, l3) else {
                return TrafficClass::Runt;
            };
            // SAFETY: bounds checked by `ptr_at`.
            match unsafe { (*ip).next_hdr } {
                IPPROTO_TCP => TrafficClass::Ipv6Tcp,
                IPPROTO_UDP => TrafficClass::Ipv6Udp,
                IPPROTO_ICMPV6 => TrafficClass::Ipv6Icmp,
                _ => TrafficClass::Ipv6Other,
            }
        }
        ETH_P_ARP => TrafficClass::Arp,
        _ => TrafficClass::OtherL2,
    }
}
