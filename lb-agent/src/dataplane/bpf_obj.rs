//! The `bpf(2)` object commands aya does not offer for what the watchdogs need: a link's
//! own file descriptor (aya keeps its link fds private), pinning it again, opening what a
//! pin path holds, and telling which kernel object (link, map or program, and its id; for
//! an XDP link, its interface) a descriptor refers to.
//!
//! What an object is comes from `/proc/self/fdinfo/<fd>`, where the kernel prints
//! `link_id`, `map_id` or `prog_id` (and `ifindex` for an XDP link, 0 once its
//! interface is gone): one text format for every kind, where `BPF_OBJ_GET_INFO_BY_FD`
//! would need a layout per kind and ids of different kinds may be equal.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

/// From `enum bpf_cmd` (uapi/linux/bpf.h).
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;

/// The `BPF_OBJ_PIN` / `BPF_OBJ_GET` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// The `BPF_*_GET_FD_BY_ID` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct GetIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// A kernel BPF object as its descriptor's fdinfo shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Object {
    /// A link; `ifindex` for an XDP link (0 once its interface is gone).
    Link {
        id: u32,
        ifindex: Option<u32>,
    },
    Map {
        id: u32,
    },
    Program {
        id: u32,
    },
    /// A descriptor whose fdinfo names none of these.
    Unknown,
}

impl std::fmt::Display for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Link { id, .. } => write!(f, "link id {id}"),
            Self::Map { id } => write!(f, "map id {id}"),
            Self::Program { id } => write!(f, "program id {id}"),
            Self::Unknown => write!(f, "an unknown object"),
        }
    }
}

/// Runs `cmd` with `attr`; returns the kernel's non-negative answer.
///
/// # Safety
/// `attr` must be the `bpf_attr` member `cmd` reads, every pointer in it valid for the
/// call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a fully initialised `bpf_attr` member (the caller vouches for its
    // pointers); the kernel reads at most `size_of::<T>()` bytes of it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// An owned descriptor from a `bpf()` call that returned one.
fn owned(rc: libc::c_long) -> io::Result<OwnedFd> {
    let fd = i32::try_from(rc).map_err(|_| io::Error::other("bpf() returned no descriptor"))?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the object pinned at `path` (any kind).
pub fn open_pinned(path: &Path) -> io::Result<OwnedFd> {
    let name = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: name.as_ptr() as u64,
        ..ObjAttr::default()
    };
    // SAFETY: `pathname` points at a NUL-terminated string that outlives the call.
    owned(unsafe { bpf(BPF_OBJ_GET, &mut attr) }?)
}

/// Pins the object `fd` at `path` (which must not exist; its directory must, on bpffs).
pub fn pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let name = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: name.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        ..ObjAttr::default()
    };
    // SAFETY: `pathname` points at a NUL-terminated string that outlives the call.
    unsafe { bpf(BPF_OBJ_PIN, &mut attr) }.map(drop)
}

/// A new descriptor of the link with kernel id `id`.
pub fn link_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetIdAttr {
        id,
        ..GetIdAttr::default()
    };
    // SAFETY: the attribute holds no pointers.
    owned(unsafe { bpf(BPF_LINK_GET_FD_BY_ID, &mut attr) }?)
}

/// What `fd` refers to.
pub fn describe(fd: BorrowedFd<'_>) -> io::Result<Object> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    Ok(parse_fdinfo(&text))
}

/// The object an fdinfo text describes: a link's fdinfo names its program too, so
/// `link_id` decides first.
fn parse_fdinfo(text: &str) -> Object {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().parse::<u32>().ok())?
        })
    };
    if let Some(id) = field("link_id") {
        Object::Link {
            id,
            ifindex: field("ifindex"),
        }
    } else if let Some(id) = field("map_id") {
        Object::Map { id }
    } else if let Some(id) = field("prog_id") {
        Object::Program { id }
    } else {
        Object::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_of_each_kind() {
        let link = "pos:\t0\nflags:\t02000000\nmnt_id:\t15\nino:\t1057\nlink_type:\txdp\nlink_id:\t31\nprog_tag:\t8cf2388c136abddf\nprog_id:\t2984\nifindex:\t0\n";
        assert_eq!(
            parse_fdinfo(link),
            Object::Link {
                id: 31,
                ifindex: Some(0)
            }
        );
        let map = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nmap_type:\t1\nkey_size:\t4\nvalue_size:\t4\nmax_entries:\t1\nmap_flags:\t0x0\nmap_extra:\t0x0\nmemlock:\t4096\nmap_id:\t77\nfrozen:\t0\n";
        assert_eq!(parse_fdinfo(map), Object::Map { id: 77 });
        let prog = "prog_type:\t6\nprog_jited:\t1\nprog_tag:\t8cf2388c136abddf\nmemlock:\t4096\nprog_id:\t2984\n";
        assert_eq!(parse_fdinfo(prog), Object::Program { id: 2984 });
        assert_eq!(parse_fdinfo("pos:\t0\n"), Object::Unknown);
    }
}
