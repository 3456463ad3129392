//! Rules about what two items may not share: a name, an (address, port, protocol), a
//! fragment route, or an address that is both a VIP and a target.

use std::{
    collections::{hash_map::Entry, HashMap},
    hash::Hash,
    net::IpAddr,
};

use super::{Report, Scope, VipDraft};
use crate::config::{Fragments, Protocol};

/// Gives `key` to `holder` unless an earlier item holds it already; returns that one.
fn earlier_holder<K: Eq + Hash, V: Copy>(held: &mut HashMap<K, V>, key: K, holder: V) -> Option<V> {
    match held.entry(key) {
        Entry::Occupied(first) => Some(*first.get()),
        Entry::Vacant(slot) => {
            slot.insert(holder);
            None
        }
    }
}

/// Names are unique among the items of one `kind` (given as label, index, name).
fn names_unique<'n>(
    r: &mut Report,
    kind: &str,
    items: impl Iterator<Item = (&'n str, usize, Option<&'n str>)>,
) {
    let mut held: HashMap<&str, usize> = HashMap::new();
    for (label, index, name) in items {
        let Some(name) = name else { continue };
        if let Some(first) = earlier_holder(&mut held, name, index) {
            r.problem(
                &format!("{label} (#{})", index + 1),
                "name",
                format!(
                    "{kind} #{} has the same name; names must be unique",
                    first + 1
                ),
            );
        }
    }
}

pub(super) fn target_group_names_unique(r: &mut Report, s: &Scope<'_, '_>) {
    let items = s.groups.iter().map(|g| (g.label.as_str(), g.index, g.name));
    names_unique(r, "target_group", items);
}

pub(super) fn vip_names_unique(r: &mut Report, s: &Scope<'_, '_>) {
    let items = s.vips.iter().map(|v| (v.label.as_str(), v.index, v.name));
    names_unique(r, "vip", items);
}

/// The keys at most one VIP may hold, checked VIP by VIP so that each VIP's problems
/// stay together: the first VIP to hold a key keeps it, later ones are reported.
pub(super) fn vip_keys_unique(r: &mut Report, s: &Scope<'_, '_>) {
    let mut services = HashMap::new();
    let mut fragment_routes = HashMap::new();
    for v in s.vips {
        one_vip_per_address_port_protocol(r, v, &mut services);
        one_fragment_route_per_address_and_protocol(r, v, &mut fragment_routes);
    }
}

/// Each (address, port, protocol) is one VIP.
fn one_vip_per_address_port_protocol<'s>(
    r: &mut Report,
    v: &'s VipDraft<'_>,
    held: &mut HashMap<(IpAddr, u16, Protocol), &'s str>,
) {
    let (Some(addr), Some(port), Some(proto)) = (v.address, v.port, v.protocol) else {
        return;
    };
    if let Some(first) = earlier_holder(held, (addr, port, proto), &v.label) {
        r.problem(
            &v.label,
            "port",
            format!(
                "{first} already serves {addr} port {port} {proto}; each address, port and \
                 protocol belongs to one VIP"
            ),
        );
    }
}

/// At most one fragment-routing VIP per (address, protocol), since later fragments carry
/// no port to tell VIPs apart.
fn one_fragment_route_per_address_and_protocol<'s>(
    r: &mut Report,
    v: &'s VipDraft<'_>,
    held: &mut HashMap<(IpAddr, Protocol), &'s str>,
) {
    let (Some(addr), Some(proto), Some(Fragments::Route)) = (v.address, v.protocol, v.fragments)
    else {
        return;
    };
    if let Some(first) = earlier_holder(held, (addr, proto), &v.label) {
        r.problem(
            &v.label,
            "fragments",
            format!(
                "{first} already routes {proto} fragments to {addr}; later fragments carry no \
                 port, so at most one VIP per address and protocol may set fragments = \
                 \"route\""
            ),
        );
    }
}

/// A target that is a VIP would send packets back to the load balancer.
pub(super) fn targets_are_not_vips(r: &mut Report, s: &Scope<'_, '_>) {
    let mut vip_addresses: HashMap<IpAddr, &str> = HashMap::new();
    for v in s.vips {
        if let Some(addr) = v.address {
            vip_addresses.entry(addr).or_insert(&v.label);
        }
    }
    for t in s.groups.iter().flat_map(|g| &g.targets) {
        let Some(addr) = t.address else { continue };
        if let Some(vip) = vip_addresses.get(&addr) {
            r.problem(
                &t.label,
                "address",
                format!(
                    "{addr} is the address of {vip}; a target cannot be a VIP (its packets \
                     would loop back to the load balancer)"
                ),
            );
        }
    }
}
