//! The `lb_decap` program's ABI: which outer destinations it decapsulates for, the GUE
//! port, and its counters.

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

/// What `lb_decap` did with a frame; indices of its per-CPU counter array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecapEvent {
    /// Outer headers stripped; the inner packet passed to the kernel.
    Decapsulated = 0,
    /// Not a tunnel packet for this host: passed untouched.
    NotForUs = 1,
    /// A tunnel packet for this host whose headers are inconsistent: dropped.
    Malformed = 2,
}

impl DecapEvent {
    pub const COUNT: u32 = 3;
    pub const ALL: [DecapEvent; Self::COUNT as usize] =
        [Self::Decapsulated, Self::NotForUs, Self::Malformed];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Decapsulated => "decapsulated",
            Self::NotForUs => "not_for_us",
            Self::Malformed => "malformed",
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), byte arrays and integers, explicit padding, size asserted.
unsafe impl aya::Pod for DecapKey {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for DecapConfig {}
