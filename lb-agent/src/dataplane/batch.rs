//! The `BPF_MAP_*_BATCH` commands, which aya does not wrap (array and hash maps have
//! supported them since Linux 5.6):
//! - `BPF_MAP_UPDATE_BATCH` for array maps: a 65,537-slot Maglev ring written one `bpf()`
//!   call per slot costs about 80 ms; in one batched call the kernel's own loop does it
//!   in a few;
//! - `BPF_MAP_LOOKUP_BATCH` for hash maps: walking a flow table of a million entries
//!   with aya's iterator is two system calls per entry (next key, then value), seconds of
//!   CPU; in batches it is one call per few thousand.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

/// From `enum bpf_cmd` (uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// Entries asked for per lookup batch; doubled when a hash bucket holds more (ENOSPC).
const LOOKUP_CHUNK: u32 = 4096;

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

/// Runs the batch command `cmd` with `attr`; the kernel writes back `attr.count` (and
/// the out token).
///
/// # Safety
/// Every pointer in `attr` must be valid for what `cmd` reads or writes through it, for
/// `attr.count` entries of the map's key and value sizes.
unsafe fn bpf_batch(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: `attr` is a fully initialised `bpf_attr` batch member (the caller vouches for
    // its pointers); the kernel reads at most `size_of::<BatchAttr>()` bytes of it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
    // SAFETY: the key and value pointers cover `count` u32 each and outlive the call.
    unsafe { bpf_batch(BPF_MAP_UPDATE_BATCH, &mut attr) }?;
    if attr.count != count {
        return Err(io::Error::other(format!(
            "the kernel wrote {} of {count} slots",
            attr.count
        )));
    }
    Ok(())
}

/// Calls `f` with every entry of the hash map `fd`, whose keys are `K` and values `V`
/// (`key_size` and `value_size` of the map must be their sizes; the caller checks the
/// layout when it adopts the map). Entries added or removed during the walk may or may
/// not be seen, as with any walk of a live map.
pub fn for_each_hash_entry<K: Copy, V: Copy>(
    fd: BorrowedFd<'_>,
    mut f: impl FnMut(&K, &V),
) -> io::Result<()> {
    let (key_size, value_size) = (std::mem::size_of::<K>(), std::mem::size_of::<V>());
    let mut chunk = LOOKUP_CHUNK;
    let mut keys = vec![0u8; chunk as usize * key_size];
    let mut values = vec![0u8; chunk as usize * value_size];
    // The hash map's batch token is a bucket index.
    let mut in_batch = 0u32;
    let mut out_batch = 0u32;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &in_batch as *const u32 as u64
            },
            out_batch: &mut out_batch as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the key and value buffers hold `chunk` entries of the map's key and
        // value sizes, the tokens are u32 as hash maps use, and all of them outlive the
        // call.
        let done = match unsafe { bpf_batch(BPF_MAP_LOOKUP_BATCH, &mut attr) } {
            Ok(()) => false,
            Err(error) => match error.raw_os_error() {
                // A bucket holds more entries than asked for: ask for more, from the
                // same place.
                Some(libc::ENOSPC) if attr.count == 0 && chunk < (1 << 20) => {
                    chunk *= 2;
                    keys.resize(chunk as usize * key_size, 0);
                    values.resize(chunk as usize * value_size, 0);
                    continue;
                }
                // The walk reached the end (with this last, partial batch).
                Some(libc::ENOENT) => true,
                _ => return Err(error),
            },
        };
        for i in 0..attr.count.min(chunk) as usize {
            // SAFETY: the kernel wrote `attr.count` whole entries; `K` and `V` are plain
            // `Copy` data of exactly the map's key and value sizes, read unaligned.
            let (k, v) = unsafe {
                (
                    std::ptr::read_unaligned(keys.as_ptr().add(i * key_size).cast::<K>()),
                    std::ptr::read_unaligned(values.as_ptr().add(i * value_size).cast::<V>()),
                )
            };
            f(&k, &v);
        }
        if done {
            return Ok(());
        }
        in_batch = out_batch;
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd as _;

    use aya::maps::{Array, IterableMap as _, MapData};

    use super::*;

    /// Needs root (or CAP_BPF): creating a map fails otherwise, and the test says so.
    #[test]
    #[cfg_attr(
        not(feature = "privileged-tests"),
        ignore = "needs root: `cargo xtask test` runs it"
    )]
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

    /// Needs root, as above.
    #[test]
    #[cfg_attr(
        not(feature = "privileged-tests"),
        ignore = "needs root: `cargo xtask test` runs it"
    )]
    fn a_batched_walk_sees_every_hash_entry_once() {
        use std::collections::HashMap as StdMap;

        use aya::maps::HashMap;

        for n in [0u32, 1, 4095, 4096, 4097, 20_000] {
            let mut map = HashMap::<MapData, [u32; 10], [u64; 2]>::create(32_768, 0)
                .expect("creating a BPF hash map (this test needs root or CAP_BPF)");
            let mut want = StdMap::new();
            for i in 0..n {
                let key = [i, i ^ 0x5555, 7, 0, 0, 0, 0, 0, 0, i.rotate_left(7)];
                let value = [u64::from(i) * 3, u64::from(i) << 32];
                map.insert(key, value, 0).expect("insert");
                want.insert(key, value);
            }
            let mut seen = StdMap::new();
            for_each_hash_entry::<[u32; 10], [u64; 2]>(map.map().fd().as_fd(), |k, v| {
                assert!(seen.insert(*k, *v).is_none(), "key seen twice: {k:?}");
            })
            .expect("a batched walk");
            assert_eq!(seen, want, "{n} entries");
        }
    }
}
