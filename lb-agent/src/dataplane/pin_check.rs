//! Keeping the pins true under a running agent. The pins are what outlives it: a link
//! whose pin is gone is held by the agent's descriptor alone, so it detaches when the
//! agent exits, and maps whose pins are gone start empty at the next start (every flow
//! lost). So the agent checks, every second, that bpffs is mounted at [`BPFFS`] (and
//! mounts it again if not: a new, empty bpffs), and that its link and every map are
//! pinned at their paths under the interface's directory, each path holding this
//! agent's own object (same kind, same kernel id). A missing pin is pinned again from the
//! descriptor the agent holds; a path holding another object is cleared and pinned with
//! the agent's own: that directory is lb's (`/sys/fs/bpf/lb/<iface>/`, see the README).

use std::{
    io,
    os::fd::{AsFd as _, BorrowedFd},
    path::{Path, PathBuf},
};

use lb_common::maps;

use super::{
    bpf_obj::{self, Object},
    ensure_bpffs, load, Dataplane, DataplaneError, BPFFS,
};

/// What a pin path held instead of this agent's object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing.
    Missing,
    /// Another object (described).
    Other(String),
}

/// A pin put right.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repaired {
    pub path: PathBuf,
    pub found: Found,
}

/// What a check did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinCheck {
    /// bpffs was not mounted at [`BPFFS`]; it is again.
    pub remounted: bool,
    pub repaired: Vec<Repaired>,
}

impl Dataplane {
    /// Where this data plane is pinned; `None` when ephemeral.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pins.as_ref().map(super::PinLayout::dir)
    }

    /// Checks every pin of a pinned data plane and puts right what is not (see the
    /// module). Nothing to do for an ephemeral one.
    pub fn restore_pins(&self) -> Result<PinCheck, DataplaneError> {
        let Some(layout) = self.pins.clone() else {
            return Ok(PinCheck::default());
        };
        let mut check = PinCheck::default();
        if !is_bpffs(Path::new(BPFFS)) {
            ensure_bpffs()?;
            check.remounted = true;
        }
        if let Some((path, link_id, handle)) = self.held_link_pin() {
            let ours = |o: &Object| matches!(o, Object::Link { id, .. } if *id == link_id);
            if let Some(found) = wrong(&path, ours)? {
                put(&path, handle)?;
                check.repaired.push(Repaired { path, found });
            }
        }
        for spec in maps::SPECS {
            let name = spec.name;
            let map = self
                .ebpf
                .map(name)
                .ok_or(DataplaneError::MissingMap(name))?;
            let data = load::map_data(map);
            let map_id = data
                .info()
                .map_err(|source| DataplaneError::Map { name, source })?
                .id();
            let path = layout.map(name);
            let ours = |o: &Object| *o == Object::Map { id: map_id };
            if let Some(found) = wrong(&path, ours)? {
                put(&path, data.fd().as_fd())?;
                check.repaired.push(Repaired { path, found });
            }
        }
        Ok(check)
    }
}

/// Whether `dir` is the root of a bpffs mount (or anywhere on one).
fn is_bpffs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}

/// What `path` holds when it is not an object `ours` accepts.
fn wrong(path: &Path, ours: impl Fn(&Object) -> bool) -> Result<Option<Found>, DataplaneError> {
    match path.symlink_metadata() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(Found::Missing)),
        Err(source) => {
            return Err(DataplaneError::Fs {
                what: "looking at the pin",
                path: path.to_owned(),
                source,
            })
        }
        Ok(m) if !m.file_type().is_file() => {
            return Ok(Some(Found::Other(format!("a {:?}", m.file_type()))))
        }
        Ok(_) => {}
    }
    let held = bpf_obj::open_pinned(path).and_then(|fd| bpf_obj::describe(fd.as_fd()));
    Ok(match held {
        Ok(o) if ours(&o) => None,
        Ok(o) => Some(Found::Other(o.to_string())),
        Err(e) => Some(Found::Other(format!(
            "an object that cannot be opened ({e})"
        ))),
    })
}

/// Pins `fd` at `path`, after removing whatever is there (and making its directory).
fn put(path: &Path, fd: BorrowedFd<'_>) -> Result<(), DataplaneError> {
    let fs = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| DataplaneError::Fs { what, path, source }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fs("creating", dir))?;
    }
    match path.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).map_err(fs("removing", path))?,
        Ok(_) => std::fs::remove_file(path).map_err(fs("removing", path))?,
        Err(_) => {}
    }
    bpf_obj::pin(fd, path).map_err(fs("pinning at", path))
}
