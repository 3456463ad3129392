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

pub mod stats;

pub use stats::{Counter, TrafficClass, Verdict};

/// Version of this ABI, carried in every pinned map name (`…_V1`).
pub const ABI_VERSION: u32 = 1;

/// Names of the XDP programs in the eBPF object.
pub mod programs {
    /// The load balancer's entry point, attached to the ingress interface.
    pub const LB_XDP: &str = "lb_xdp";
}

/// Names of the maps in the eBPF object. Kernel map names are limited to 15 characters,
/// so every name here fits (checked below).
pub mod maps {
    /// Per-CPU array of [`crate::Counter`] indexed by [`crate::Verdict`].
    pub const VERDICTS: &str = "LB_VERDICT_V1";
    /// Per-CPU array of [`crate::Counter`] indexed by [`crate::TrafficClass`].
    pub const TRAFFIC: &str = "LB_TRAFFIC_V1";

    /// Every map the agent owns, for pinning and adoption checks.
    pub const ALL: &[&str] = &[VERDICTS, TRAFFIC];

    const _: () = {
        let mut i = 0;
        while i < ALL.len() {
            assert!(ALL[i].len() <= 15, "kernel map names are at most 15 bytes");
            i += 1;
        }
    };
}
