//! Where one interface's persisted state lives under bpffs (`<PIN_ROOT>/<scope>/`: the
//! XDP link and every map), and `down`, which removes it.

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::programs::links::PinnedLink;
use tracing::info;

use super::DataplaneError;

/// Root of everything lb pins: `<BPFFS>/lb/<interface>/…`.
pub const PIN_ROOT: &str = "/sys/fs/bpf/lb";

/// Paths under bpffs that hold one interface's persisted state.
#[derive(Clone, Debug)]
pub struct PinLayout {
    dir: PathBuf,
}

impl PinLayout {
    pub fn for_interface(iface: &str) -> Self {
        Self {
            dir: Path::new(PIN_ROOT).join(scope(iface)),
        }
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn link(&self) -> PathBuf {
        self.dir.join("link")
    }
    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join("maps").join(name)
    }
}

/// Removes an interface's persisted state: unpinning the link detaches the program once
/// no process holds it, and unpinning the maps frees them.
pub fn down(iface: &str) -> Result<bool, DataplaneError> {
    let layout = PinLayout::for_interface(iface);
    if !layout.dir().exists() {
        return Ok(false);
    }
    let link_path = layout.link();
    if link_path.exists() {
        let pinned = open_pinned_link(&link_path)?;
        // Unpinning returns the owning fd; dropping it releases the last reference and
        // so detaches the program from the interface.
        drop(pinned.unpin().map_err(|source| DataplaneError::Fs {
            what: "unpinning",
            path: link_path.clone(),
            source,
        })?);
    }
    std::fs::remove_dir_all(layout.dir()).map_err(|source| DataplaneError::Fs {
        what: "removing",
        path: layout.dir().to_owned(),
        source,
    })?;
    // Remove the empty parents too (netns-<name>/, then PIN_ROOT) once no interface uses
    // them; other interfaces' state stays.
    if let Some(parent) = layout.dir().parent().filter(|p| *p != Path::new(PIN_ROOT)) {
        remove_if_empty(parent)?;
    }
    remove_if_empty(Path::new(PIN_ROOT))?;
    info!(
        iface,
        "persisted data plane removed: program detached, maps unpinned"
    );
    Ok(true)
}

/// The name of an interface's state under lb's pin and run directories: the interface
/// name, under `netns-<name>/` when the agent runs in a named network namespace
/// (`/run/netns/<name>`), so that interfaces of the same name in different namespaces
/// never share state.
pub fn scope(iface: &str) -> PathBuf {
    use std::os::unix::fs::MetadataExt as _;
    let own = std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).ok();
    let named = std::fs::read_dir("/run/netns").ok().and_then(|dir| {
        dir.flatten().find_map(|e| {
            let ino = std::fs::metadata(e.path()).map(|m| m.ino()).ok();
            (ino.is_some() && ino == own).then(|| e.file_name().to_string_lossy().into_owned())
        })
    });
    match named {
        Some(ns) => Path::new(&format!("netns-{ns}")).join(iface),
        None => PathBuf::from(iface),
    }
}

/// Removes directory `dir` if it is empty; one that still holds something stays.
fn remove_if_empty(dir: &Path) -> Result<(), DataplaneError> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(()),
        Err(source) => Err(DataplaneError::Fs {
            what: "removing",
            path: dir.to_owned(),
            source,
        }),
    }
}

/// The link pinned at `path`.
pub(super) fn open_pinned_link(path: &Path) -> Result<PinnedLink, DataplaneError> {
    PinnedLink::from_pin(path).map_err(|e| DataplaneError::Fs {
        what: "opening pinned link",
        path: path.to_owned(),
        source: io::Error::other(e.to_string()),
    })
}
