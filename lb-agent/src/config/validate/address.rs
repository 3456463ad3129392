//! Addresses as the tables write them: a unicast IP address (a VIP's or a target's), and
//! the tunnel source prefixes of the `[agent]` table.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::RangeInclusive,
};

use crate::config::{Ipv4Prefix, Ipv6Prefix};

/// A unicast address: one a client may connect to, or a target may be reached at.
pub(super) fn unicast(text: &str) -> Result<IpAddr, String> {
    let addr: IpAddr = text.parse().map_err(|_| {
        if text.contains('/') {
            format!("{text:?} is a prefix; give a single address")
        } else {
            format!("{text:?} is not an IPv4 or IPv6 address")
        }
    })?;
    let why = match addr {
        a if a.is_unspecified() => "is the unspecified address",
        a if a.is_multicast() => "is a multicast address",
        a if a.is_loopback() => "is a loopback address, which never crosses the network",
        IpAddr::V4(a) if a.is_broadcast() => "is the broadcast address",
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => {
            "is an IPv4-mapped IPv6 address, which never appears on the wire; write the IPv4 \
             address"
        }
        _ => return Ok(addr),
    };
    Err(format!("{addr} {why}; it must be a unicast address"))
}

/// An outer IPv4 source prefix of tunnelled packets.
pub(super) fn v4_prefix(text: &str) -> Result<Ipv4Prefix, String> {
    let (addr, len) = prefix(text)?;
    let IpAddr::V4(addr) = addr else {
        return Err(format!(
            "{text:?} is an IPv6 prefix; this field takes an IPv4 one"
        ));
    };
    prefix_length(len, 8..=32)?;
    source_prefix(addr.into(), text)?;
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    let bits = u32::from(addr);
    if bits & !mask != 0 {
        return Err(host_bits_set(text, Ipv4Addr::from(bits & mask), len));
    }
    Ok(Ipv4Prefix { addr, len })
}

/// An outer IPv6 source prefix of tunnelled packets.
pub(super) fn v6_prefix(text: &str) -> Result<Ipv6Prefix, String> {
    let (addr, len) = prefix(text)?;
    let IpAddr::V6(addr) = addr else {
        return Err(format!(
            "{text:?} is an IPv4 prefix; this field takes an IPv6 one"
        ));
    };
    prefix_length(len, 16..=128)?;
    source_prefix(addr.into(), text)?;
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    let bits = u128::from(addr);
    if bits & !mask != 0 {
        return Err(host_bits_set(text, Ipv6Addr::from(bits & mask), len));
    }
    Ok(Ipv6Prefix { addr, len })
}

fn prefix(text: &str) -> Result<(IpAddr, u8), String> {
    let Some((addr, len)) = text.split_once('/') else {
        return Err(format!(
            "{text:?} is not a prefix: write address/length, such as \"198.18.255.0/24\""
        ));
    };
    let addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address"))?;
    let len = len
        .parse()
        .map_err(|_| format!("{len:?} is not a prefix length"))?;
    Ok((addr, len))
}

fn prefix_length(len: u8, range: RangeInclusive<u8>) -> Result<(), String> {
    if range.contains(&len) {
        Ok(())
    } else {
        Err(format!(
            "prefix length {len} is out of range: must be between {} and {}",
            range.start(),
            range.end()
        ))
    }
}

/// An outer-source prefix must consist of addresses a packet may come from.
fn source_prefix(addr: IpAddr, text: &str) -> Result<(), String> {
    if addr.is_multicast() || addr.is_loopback() || addr.is_unspecified() {
        return Err(format!(
            "{text:?} is not a unicast prefix; tunnelled packets need unicast source addresses"
        ));
    }
    Ok(())
}

/// The flow hash fills the host bits, so a prefix must leave them zero.
fn host_bits_set(text: &str, network: impl std::fmt::Display, len: u8) -> String {
    format!("{text:?} has host bits set (the flow hash fills them); write {network}/{len}")
}
