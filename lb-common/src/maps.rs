//! Names and shapes of the maps in the eBPF object: the one table both the agent's load
//! checks read ([`SPECS`]), next to the name constants lb-ebpf ties its `#[map]` literals
//! to (the macro takes only a literal; lb-ebpf asserts at compile time that each literal
//! equals the constant here, with [`name_eq`]).
//!
//! Kernel map names are limited to 15 bytes, so every name here fits (checked below).

use core::mem::size_of;

use crate::{
    service::{MAX_BACKENDS, MAX_VIPS},
    Backend, Counter, DropReason, Event, FloodWindow, FlowKey, FlowValue, LbConfig, ServiceCounter,
    TrafficClass, Verdict, VipKey, VipMeta,
};

/// Per-CPU array of [`crate::Counter`] indexed by [`crate::Verdict`].
pub const VERDICTS: &str = "LB_VERDICT_V1";
/// Per-CPU array of [`crate::Counter`] indexed by [`crate::TrafficClass`].
pub const TRAFFIC: &str = "LB_TRAFFIC_V1";
/// Per-CPU array of [`crate::Counter`] indexed by [`crate::DropReason`].
pub const DROPS: &str = "LB_DROP_V1";
/// Per-CPU array of [`crate::Counter`] indexed by [`crate::Event`].
pub const EVENTS: &str = "LB_EVENT_V1";
/// Hash [`crate::VipKey`] → [`crate::VipMeta`].
pub const VIPS: &str = "LB_VIP_V1";
/// Array of maps indexed by VIP id; inner: array of backend ids (the Maglev ring).
pub const RINGS: &str = "LB_RING_V1";
/// Array of [`crate::Backend`] indexed by backend id.
pub const BACKENDS: &str = "LB_BACKEND_V1";
/// LRU hash [`crate::FlowKey`] → [`crate::FlowValue`].
pub const FLOWS: &str = "LB_FLOW_V1";
/// One-entry array holding [`crate::LbConfig`].
pub const CONFIG: &str = "LB_CONFIG_V1";
/// Per-CPU array of [`crate::ServiceCounter`] indexed by VIP id.
pub const VIP_STATS: &str = "LB_VIP_STATS_V1";
/// Per-CPU array of [`crate::ServiceCounter`] indexed by backend id.
pub const BACKEND_STATS: &str = "LB_BE_STATS_V1";
/// Per-CPU one-entry array of [`crate::FloodWindow`].
pub const FLOOD: &str = "LB_FLOOD_V1";
/// Device map (hash, keyed by ifindex) of interfaces packets may be redirected to.
pub const TX_PORTS: &str = "LB_TX_PORTS_V1";
/// How many interfaces [`TX_PORTS`] holds.
pub const MAX_TX_PORTS: u32 = 64;

/// Hash [`crate::decap::DecapKey`] → `u32` (unused): outer destinations `lb_decap`
/// decapsulates for.
pub const DECAP_ADDRS: &str = "LB_DECAP_ADR_V1";
/// One-entry array holding [`crate::decap::DecapConfig`].
pub const DECAP_CONFIG: &str = "LB_DECAP_CFG_V1";
/// Per-CPU array of [`crate::Counter`] indexed by [`crate::decap::DecapEvent`].
pub const DECAP_STATS: &str = "LB_DECAP_ST_V1";

/// The maps of `lb_decap` (checked by name only: `lb_decap` is a test aid, loaded from the
/// object it was built with).
pub const DECAP_ALL: &[&str] = &[DECAP_ADDRS, DECAP_CONFIG, DECAP_STATS];

/// A map's type; the discriminants are the kernel's `enum bpf_map_type`, so a loaded map's
/// reported type compares directly.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    Hash = 1,
    Array = 2,
    PerCpuArray = 6,
    LruHash = 9,
    ArrayOfMaps = 12,
    DevMapHash = 25,
}

/// The shape this ABI gives one map: what the agent checks in the object it loads and in
/// the maps a previous agent pinned, before it reads or writes any of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSpec {
    pub name: &'static str,
    pub kind: MapKind,
    pub key_size: u32,
    /// `None`: not checked, because the layout is the kernel's (a device map's value is
    /// `struct bpf_devmap_val`, whose size depends on the kernel).
    pub value_size: Option<u32>,
    /// `None`: any, because the agent sizes the map at load time (the flow table).
    pub max_entries: Option<u32>,
}

/// The size of `T` as the kernel reports map key and value sizes.
const fn bytes<T>() -> u32 {
    size_of::<T>() as u32
}

/// Array maps are indexed by a `u32`.
const U32: u32 = bytes::<u32>();

/// Every map the agent owns (pins, adopts and checks), in the order it checks them.
pub const SPECS: &[MapSpec] = &[
    MapSpec {
        name: VERDICTS,
        kind: MapKind::PerCpuArray,
        key_size: U32,
        value_size: Some(bytes::<Counter>()),
        max_entries: Some(Verdict::COUNT),
    },
    MapSpec {
        name: TRAFFIC,
        kind: MapKind::PerCpuArray,
        key_size: U32,
        value_size: Some(bytes::<Counter>()),
        max_entries: Some(TrafficClass::COUNT),
    },
    MapSpec {
        name: DROPS,
        kind: MapKind::PerCpuArray,
        key_size: U32,
        value_size: Some(bytes::<Counter>()),
        max_entries: Some(DropReason::COUNT),
    },
    MapSpec {
        name: EVENTS,
        kind: MapKind::PerCpuArray,
        key_size: U32,
        value_size: Some(bytes::<Counter>()),
        max_entries: Some(Event::COUNT),
    },
    // Twice MAX_VIPS: each VIP address and protocol also has a fragment entry.
    MapSpec {
        name: VIPS,
        kind: MapKind::Hash,
        key_size: bytes::<VipKey>(),
        value_size: Some(bytes::<VipMeta>()),
        max_entries: Some(MAX_VIPS * 2),
    },
    // Values are inner maps, which user space names by a u32 fd.
    MapSpec {
        name: RINGS,
        kind: MapKind::ArrayOfMaps,
        key_size: U32,
        value_size: Some(U32),
        max_entries: Some(MAX_VIPS),
    },
    MapSpec {
        name: BACKENDS,
        kind: MapKind::Array,
        key_size: U32,
        value_size: Some(bytes::<Backend>()),
        max_entries: Some(MAX_BACKENDS),
    },
    MapSpec {
        name: FLOWS,
        kind: MapKind::LruHash,
        key_size: bytes::<FlowKey>(),
        value_size: Some(bytes::<FlowValue>()),
        max_entries: None,
    },
    MapSpec {
        name: CONFIG,
        kind: MapKind::Array,
        key_size: U32,
        value_size: Some(bytes::<LbConfig>()),
        max_entries: Some(1),
    },
    MapSpec {
        name: VIP_STATS,
        kind: MapKind::PerCpuArray,
        key_size: U32,
        value_size: Some(bytes::<ServiceCounter>()),
        max_entries: Some(MAX_VIPS),
    },
    MapSpec {
        name: BACKEND_STATS,
        kind: MapKind::PerCpuArray,
        key_size: U32,
        value_size: Some(bytes::<ServiceCounter>()),
        max_entries: Some(MAX_BACKENDS),
    },
    MapSpec {
        name: FLOOD,
        kind: MapKind::PerCpuArray,
        key_size: U32,
        value_size: Some(bytes::<FloodWindow>()),
        max_entries: Some(1),
    },
    MapSpec {
        name: TX_PORTS,
        kind: MapKind::DevMapHash,
        key_size: U32,
        value_size: None,
        max_entries: Some(MAX_TX_PORTS),
    },
];

/// Whether two map names are the same, usable in `const` (where `==` on `&str` is not):
/// lb-ebpf asserts `name_eq(<its #[map] literal>, <the constant here>)`.
pub const fn name_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Checks at compile time that every name fits the kernel's limit and no two maps share a
/// name (a second spec for one name would be checked against the same map).
const fn names_fit_and_differ(names: &[&str]) {
    let mut i = 0;
    while i < names.len() {
        assert!(
            names[i].len() <= 15,
            "kernel map names are at most 15 bytes"
        );
        let mut j = i + 1;
        while j < names.len() {
            assert!(!name_eq(names[i], names[j]), "two maps share a name");
            j += 1;
        }
        i += 1;
    }
}

const fn spec_names() -> [&'static str; SPECS.len()] {
    let mut names = [""; SPECS.len()];
    let mut i = 0;
    while i < SPECS.len() {
        names[i] = SPECS[i].name;
        i += 1;
    }
    names
}

const _: () = names_fit_and_differ(&spec_names());
const _: () = names_fit_and_differ(DECAP_ALL);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_eq_compares_bytes() {
        assert!(name_eq(VIPS, "LB_VIP_V1"));
        assert!(!name_eq(VIPS, "LB_VIP_V2"));
        assert!(!name_eq(VIPS, "LB_VIP_V"));
        assert!(!name_eq("", VIPS));
    }
}
