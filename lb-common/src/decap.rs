//! The `lb_decap` program's ABI: which outer destinations it decapsulates for, the GUE
//! port, and its counters.

use crate::stats::counter_enum;

/// Key of the decap address map: an outer destination address this host accepts
/// tunnelled packets for. IPv4 in `addr[0..4]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DecapKey {
    pub addr: [u8; 16],
    pub family: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<DecapKey>() == 20);

/// The single entry of the decap config map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecapConfig {
    /// UDP destination port of GUE packets, network byte order; 0 = GUE off.
    pub gue_port: u16,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<DecapConfig>() == 4);

counter_enum! {
    /// What `lb_decap` did with a frame; indices of its per-CPU counter array.
    pub enum DecapEvent {
        /// Outer headers stripped; the inner packet passed to the kernel.
        Decapsulated = 0 => "decapsulated",
        /// Not a tunnel packet for this host: passed untouched.
        NotForUs = 1 => "not_for_us",
        /// A tunnel packet for this host whose headers are inconsistent: dropped.
        Malformed = 2 => "malformed",
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), byte arrays and integers, explicit padding, size asserted.
unsafe impl aya::Pod for DecapKey {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for DecapConfig {}
