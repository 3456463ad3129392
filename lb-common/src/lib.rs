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
pub mod maps;
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
