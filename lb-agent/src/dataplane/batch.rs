//! `BPF_MAP_UPDATE_BATCH` for array maps, which aya does not wrap: a 65,537-slot Maglev
//! ring written one `bpf()` call per slot costs about 80 ms; in one batched call the
//! kernel's own loop does it in a few. Array maps have supported batches since Linux 5.6.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

/// `BPF_MAP_UPDATE_BATCH` from `enum bpf_cmd` (uapi/linux/bpf.h).
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// The `batch` member of `union bpf_attr` for the `BPF_MAP_*_BATCH` commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    /// In: elements given; out: elements the kernel processed.
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Sets slots `0..values.len()` of the `u32` array map `fd` in one system call. On
/// error, slots before the failing one may already be written (the callers write maps
/// that are not yet visible to the data plane).
pub fn set_u32_array(fd: BorrowedFd<'_>, values: &[u32]) -> io::Result<()> {
    let count = u32::try_from(values.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many slots"))?;
    if count == 0 {
        return Ok(());
    }
    let keys: Vec<u32> = (0..count).collect();
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count,
        map_fd: fd.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: `attr` is a valid, fully initialised `bpf_attr` batch member whose key and
    // value pointers cover `count` u32 each and outlive the call; the kernel reads no
    // further than `size_of::<BatchAttr>()` bytes of it and writes back only `count`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if attr.count != count {
        return Err(io::Error::other(format!(
            "the kernel wrote {} of {count} slots",
            attr.count
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd as _;

    use aya::maps::{Array, IterableMap as _, MapData};

    use super::*;

    /// Needs root (or CAP_BPF): creating a map fails otherwise, and the test says so.
    #[test]
    fn a_batch_writes_every_slot_of_a_ring_sized_array() {
        let size = 65_537u32;
        let mut map = Array::<MapData, u32>::create(size, 0)
            .expect("creating a BPF array map (this test needs root or CAP_BPF)");
        let values: Vec<u32> = (0..size).map(|i| i.wrapping_mul(2_654_435_761)).collect();
        set_u32_array(map.map().fd().as_fd(), &values).expect("a batched update");
        for (i, want) in values.iter().enumerate() {
            assert_eq!(map.get(&(i as u32), 0).expect("slot"), *want, "slot {i}");
        }
        // A second batch replaces the first in full.
        let sevens = vec![7u32; size as usize];
        set_u32_array(map.map().fd().as_fd(), &sevens).expect("a second batch");
        assert!((0..size).all(|i| map.get(&i, 0).ok() == Some(7)));
        // Too many slots for the map: an error, not a silent partial write.
        let too_many = vec![1u32; size as usize + 1];
        assert!(set_u32_array(map.map().fd().as_fd(), &too_many).is_err());
        map.set(0, 3, 0).expect("the map is still usable");
    }
}
