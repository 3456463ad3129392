//! The one ABI both sides of the kernel boundary share.
//!
//! Everything the XDP programs and the agent both read is defined here and only here:
//! map names, `#[repr(C)]` map keys and values, and the enums whose discriminants index
//! counter arrays. Layout rules (see shared/STYLE.md):
//! - explicit `_pad` fields, never implicit padding (a padded hash key misses lookups);
//! - `u8`/`u32` flags rather than `bool` or Rust enums inside map values;
//! - a compile-time size assertion next to every map type.
//!
//! Bump [`ABI_VERSION`] on any incompatible change; pinned maps carry the version in
//! their names so an agent never adopts a map whose layout it does not understand.
#![no_std]

pub mod config;
pub mod decap;
pub mod flow;
pub mod hash;
pub mod ip;
pub mod service;
pub mod stats;

pub use config::LbConfig;
pub use flow::{FlowKey, FlowValue};
pub use service::{Backend, VipKey, VipMeta, NO_BACKEND};
pub use stats::{Counter, DropReason, Event, FloodWindow, ServiceCounter, TrafficClass, Verdict};

/// Version of this ABI, carried in every pinned map name (`…_V1`).
pub const ABI_VERSION: u32 = 1;

/// Names of the XDP programs in the eBPF object.
pub mod programs {
    /// The load balancer's entry point, attached to the ingress interface.
    pub const LB_XDP: &str = "lb_xdp";
    /// Decapsulation for backends whose kernel cannot (no ipip/fou modules).
    pub const LB_DECAP: &str = "lb_decap";
    /// Returns `XDP_PASS` and does nothing else: the baseline of per-packet benchmarks.
    pub const LB_NOOP: &str = "lb_noop";
}

/// Names of the maps in the eBPF object. Kernel map names are limited to 15 characters,
/// so every name here fits (checked below). The eBPF side repeats each name as a literal
/// in its `#[map]` attribute (the macro needs one); the agent checks every name here
/// exists in the object it loads.
pub mod maps {
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

    /// Every map the agent owns, for pinning and adoption checks.
    pub const ALL: &[&str] = &[
        VERDICTS,
        TRAFFIC,
        DROPS,
        EVENTS,
        VIPS,
        RINGS,
        BACKENDS,
        FLOWS,
        CONFIG,
        VIP_STATS,
        BACKEND_STATS,
        FLOOD,
        TX_PORTS,
    ];

    /// Hash [`crate::decap::DecapKey`] → `u32` (unused): outer destinations `lb_decap`
    /// decapsulates for.
    pub const DECAP_ADDRS: &str = "LB_DECAP_ADR_V1";
    /// One-entry array holding [`crate::decap::DecapConfig`].
    pub const DECAP_CONFIG: &str = "LB_DECAP_CFG_V1";
    /// Per-CPU array of [`crate::Counter`] indexed by [`crate::decap::DecapEvent`].
    pub const DECAP_STATS: &str = "LB_DECAP_ST_V1";

    /// The maps of `lb_decap`.
    pub const DECAP_ALL: &[&str] = &[DECAP_ADDRS, DECAP_CONFIG, DECAP_STATS];

    const fn names_fit(names: &[&str]) {
        let mut i = 0;
        while i < names.len() {
            assert!(
                names[i].len() <= 15,
                "kernel map names are at most 15 bytes"
            );
            i += 1;
        }
    }
    const _: () = names_fit(ALL);
    const _: () = names_fit(DECAP_ALL);
}
