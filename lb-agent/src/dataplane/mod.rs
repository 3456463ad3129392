//! The only module in the agent that touches aya: it loads the eBPF object, attaches and
//! detaches the XDP program, pins what must outlive the agent, and reads counters.
//! Everything else in the agent (and the tests) talks to the data plane through the typed
//! methods here.
//!
//! - `mod.rs`: loading (with ABI checks), attaching, pinning, `down`;
//! - [`services`]: writing VIPs, backends, Maglev rings, runtime config, TX ports;
//! - [`counters`]: reading the per-CPU counters;
//! - [`test_run`]: `BPF_PROG_TEST_RUN` for fixtures and benchmarks;
//! - [`decap`]: the backend-side `lb_decap` program.

pub mod counters;
pub mod decap;
pub mod services;
pub mod test_run;

pub use counters::Counters;
pub use test_run::TestRunOutcome;

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::{
    maps::PerCpuArray,
    programs::{
        links::{FdLink, PinnedLink},
        Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use lb_common::{maps, programs, Counter, TrafficClass, Verdict};
use tracing::{info, warn};

/// Where bpffs is expected; mounted by [`ensure_bpffs`] when it is not.
pub const BPFFS: &str = "/sys/fs/bpf";
/// Root of everything lb pins: `<BPFFS>/lb/<interface>/…`.
pub const PIN_ROOT: &str = "/sys/fs/bpf/lb";

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("loading the eBPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("the eBPF object has no map `{0}`: it was built from a different lb-common")]
    MissingMap(&'static str),
    #[error("map `{name}` has {actual} entries, this agent expects {expected}: object and agent disagree on the ABI")]
    MapShape {
        name: &'static str,
        expected: u32,
        actual: u32,
    },
    #[error("the eBPF object has no XDP program `{0}`")]
    MissingProgram(&'static str),
    #[error("{action} failed: {source}")]
    Program {
        action: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("reading map `{name}` failed: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("interface `{0}` does not exist")]
    NoSuchInterface(String),
    #[error("{what} {value} is out of range (at most {max})")]
    OutOfRange {
        what: &'static str,
        value: u32,
        max: u32,
    },
    #[error("allowing redirects to interface {ifindex} failed: {reason}")]
    TxPort { ifindex: u32, reason: String },
    #[error("the program is not attached")]
    NotAttached,
    #[error("pinning {path} failed: {source}")]
    Pin {
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("{what} {path}: {source}")]
    Fs {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "pinned lb state for `{iface}` already exists at {path} (a persisted earlier run); \
         remove it with `lb-agent down --iface {iface}` before starting a new agent on it"
    )]
    AlreadyPinned { iface: String, path: PathBuf },
    #[error("mounting bpffs at {BPFFS} failed: {0}")]
    MountBpffs(nix::Error),
}

/// How the program is attached to the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Driver (native) XDP: the program runs in the NIC driver's receive path.
    Native,
    /// Generic (skb) XDP: runs after the kernel built an skb. Slow; for testing only.
    Generic,
}

impl AttachMode {
    pub(crate) fn xdp_mode(self) -> XdpMode {
        match self {
            Self::Native => XdpMode::Driver,
            Self::Generic => XdpMode::Skb,
        }
    }
}

/// Paths under bpffs that hold one interface's persisted state.
#[derive(Clone, Debug)]
pub struct PinLayout {
    dir: PathBuf,
}

impl PinLayout {
    pub fn for_interface(iface: &str) -> Self {
        Self {
            dir: Path::new(PIN_ROOT).join(iface),
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

/// Options fixed when the object is loaded.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Flow-table capacity (entries; memory is preallocated, about 100 bytes each).
    pub flow_entries: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            flow_entries: lb_common::flow::DEFAULT_FLOW_ENTRIES,
        }
    }
}

struct Attachment {
    iface: String,
    link: aya::programs::xdp::XdpLinkId,
}

/// A loaded data plane: the eBPF object's maps and the XDP program, attached or not.
pub struct Dataplane {
    ebpf: Ebpf,
    attachment: Option<Attachment>,
}

impl Dataplane {
    /// Loads `object` into the kernel with default options and checks that its maps have
    /// the layout this agent was built for. Nothing is attached yet.
    pub fn load(object: &[u8]) -> Result<Self, DataplaneError> {
        Self::load_with(object, &LoadOptions::default())
    }

    /// [`Dataplane::load`] with explicit options. Writes the default runtime config, so
    /// the program is usable (with no VIPs) as soon as it is attached.
    pub fn load_with(object: &[u8], options: &LoadOptions) -> Result<Self, DataplaneError> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(maps::FLOWS, options.flow_entries)
            .load(object)?;
        check_maps(&ebpf)?;
        let prog = xdp_program(&mut ebpf)?;
        prog.load().map_err(|source| DataplaneError::Program {
            action: "loading the XDP program (verifier)",
            source,
        })?;
        let mut dp = Self {
            ebpf,
            attachment: None,
        };
        dp.set_config(&lb_common::LbConfig::default())?;
        Ok(dp)
    }

    /// Attaches the program to `iface`. Refuses if persisted state for that interface
    /// exists, so two agents never fight over one interface.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<(), DataplaneError> {
        let layout = PinLayout::for_interface(iface);
        if layout.dir().exists() {
            return Err(DataplaneError::AlreadyPinned {
                iface: iface.to_owned(),
                path: layout.dir().to_owned(),
            });
        }
        let ifindex = nix::net::if_::if_nametoindex(iface)
            .map_err(|_| DataplaneError::NoSuchInterface(iface.to_owned()))?;
        if mode == AttachMode::Generic {
            warn!(
                iface,
                "attaching in GENERIC (skb) XDP mode: slow, for testing only"
            );
        }
        let link = xdp_program(&mut self.ebpf)?
            .attach_to_if_index(ifindex, mode.xdp_mode())
            .map_err(|source| DataplaneError::Program {
                action: "attaching the XDP program",
                source,
            })?;
        info!(iface, ifindex, ?mode, "XDP program attached");
        self.attachment = Some(Attachment {
            iface: iface.to_owned(),
            link,
        });
        Ok(())
    }

    /// Detaches the program (the attachment also ends when the `Dataplane` is dropped).
    pub fn detach(&mut self) -> Result<(), DataplaneError> {
        let att = self.attachment.take().ok_or(DataplaneError::NotAttached)?;
        xdp_program(&mut self.ebpf)?
            .detach(att.link)
            .map_err(|source| DataplaneError::Program {
                action: "detaching the XDP program",
                source,
            })?;
        info!(iface = att.iface, "XDP program detached");
        Ok(())
    }

    /// Pins the maps and the XDP link under [`PIN_ROOT`]`/<iface>` so that the program keeps
    /// running, and its counters keep counting, after this agent exits.
    /// `lb-agent down --iface <iface>` removes it all.
    pub fn persist(&mut self) -> Result<PinLayout, DataplaneError> {
        let att = self.attachment.take().ok_or(DataplaneError::NotAttached)?;
        let layout = PinLayout::for_interface(&att.iface);
        ensure_bpffs()?;
        let maps_dir = layout.dir().join("maps");
        std::fs::create_dir_all(&maps_dir).map_err(|source| DataplaneError::Fs {
            what: "creating",
            path: maps_dir.clone(),
            source,
        })?;
        for &name in maps::ALL {
            let map = self
                .ebpf
                .map(name)
                .ok_or(DataplaneError::MissingMap(name))?;
            let path = layout.map(name);
            map.pin(&path)
                .map_err(|source| DataplaneError::Pin { path, source })?;
        }
        let link = xdp_program(&mut self.ebpf)?
            .take_link(att.link)
            .map_err(|source| DataplaneError::Program {
                action: "taking the XDP link",
                source,
            })?;
        let fd_link = FdLink::try_from(link).map_err(|e| DataplaneError::Fs {
            what:
                "the XDP attachment is a netlink attachment (kernel without bpf_link?); cannot pin",
            path: layout.link(),
            source: io::Error::other(e.to_string()),
        })?;
        let path = layout.link();
        fd_link
            .pin(&path)
            .map_err(|source| DataplaneError::Pin { path, source })?;
        info!(iface = att.iface, dir = %layout.dir().display(), "data plane pinned; it keeps running after the agent exits");
        Ok(layout)
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
        let pinned = PinnedLink::from_pin(&link_path).map_err(|e| DataplaneError::Fs {
            what: "opening pinned link",
            path: link_path.clone(),
            source: io::Error::other(e.to_string()),
        })?;
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
    // Remove PIN_ROOT too once no interface uses it; other interfaces' state stays.
    match std::fs::remove_dir(PIN_ROOT) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {}
        Err(source) => {
            return Err(DataplaneError::Fs {
                what: "removing",
                path: PIN_ROOT.into(),
                source,
            })
        }
    }
    info!(
        iface,
        "persisted data plane removed: program detached, maps unpinned"
    );
    Ok(true)
}

/// Enables IPv4 and IPv6 forwarding on `iface`: `bpf_fib_lookup` answers only for
/// interfaces that forward, so without it every VIP packet would count as `fib_failed`.
/// Logs each value it changes.
pub fn enable_forwarding(iface: &str) -> Result<(), DataplaneError> {
    for family in ["ipv4", "ipv6"] {
        let path = PathBuf::from(format!("/proc/sys/net/{family}/conf/{iface}/forwarding"));
        let current = std::fs::read_to_string(&path).map_err(|source| DataplaneError::Fs {
            what: "reading",
            path: path.clone(),
            source,
        })?;
        if current.trim() != "1" {
            std::fs::write(&path, "1").map_err(|source| DataplaneError::Fs {
                what: "writing",
                path: path.clone(),
                source,
            })?;
            info!(
                iface,
                family, "enabled forwarding (bpf_fib_lookup needs it)"
            );
        }
    }
    Ok(())
}

/// Mounts bpffs at [`BPFFS`] unless it already is (it is not mounted at boot on every
/// distribution).
pub fn ensure_bpffs() -> Result<(), DataplaneError> {
    let mounts = std::fs::read_to_string("/proc/mounts").map_err(|source| DataplaneError::Fs {
        what: "reading",
        path: "/proc/mounts".into(),
        source,
    })?;
    let mounted = mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        f.next();
        f.next() == Some(BPFFS) && f.next() == Some("bpf")
    });
    if !mounted {
        nix::mount::mount(
            Some("bpf"),
            BPFFS,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(DataplaneError::MountBpffs)?;
        info!(path = BPFFS, "mounted bpffs");
    }
    Ok(())
}

fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, DataplaneError> {
    ebpf.program_mut(programs::LB_XDP)
        .ok_or(DataplaneError::MissingProgram(programs::LB_XDP))?
        .try_into()
        .map_err(|source| DataplaneError::Program {
            action: "finding the XDP program",
            source,
        })
}

/// Every map the ABI names must exist, with the key and value sizes and (for arrays) the
/// entry counts this agent was built for. A mismatch means object and agent disagree on
/// the ABI; loading stops before anything is attached.
fn check_maps(ebpf: &Ebpf) -> Result<(), DataplaneError> {
    use aya::maps::{Array, HashMap};
    use lb_common::{
        service::{MAX_BACKENDS, MAX_VIPS},
        Backend, DropReason, Event, FloodWindow, FlowKey, FlowValue, LbConfig, ServiceCounter,
        VipKey, VipMeta,
    };
    for &name in maps::ALL {
        ebpf.map(name).ok_or(DataplaneError::MissingMap(name))?;
    }
    let map = |name: &'static str| ebpf.map(name).ok_or(DataplaneError::MissingMap(name));
    let shape =
        |name: &'static str, source: aya::maps::MapError| DataplaneError::Map { name, source };
    let len = |name: &'static str, expected: u32, actual: u32| {
        if expected == actual {
            Ok(())
        } else {
            Err(DataplaneError::MapShape {
                name,
                expected,
                actual,
            })
        }
    };
    for (name, expected) in [
        (maps::VERDICTS, Verdict::COUNT),
        (maps::TRAFFIC, TrafficClass::COUNT),
        (maps::DROPS, DropReason::COUNT),
        (maps::EVENTS, Event::COUNT),
    ] {
        let m = PerCpuArray::<_, Counter>::try_from(map(name)?).map_err(|e| shape(name, e))?;
        len(name, expected, m.len())?;
    }
    for (name, expected) in [
        (maps::VIP_STATS, MAX_VIPS),
        (maps::BACKEND_STATS, MAX_BACKENDS),
    ] {
        let m =
            PerCpuArray::<_, ServiceCounter>::try_from(map(name)?).map_err(|e| shape(name, e))?;
        len(name, expected, m.len())?;
    }
    let m = PerCpuArray::<_, FloodWindow>::try_from(map(maps::FLOOD)?)
        .map_err(|e| shape(maps::FLOOD, e))?;
    len(maps::FLOOD, 1, m.len())?;
    let m = Array::<_, Backend>::try_from(map(maps::BACKENDS)?)
        .map_err(|e| shape(maps::BACKENDS, e))?;
    len(maps::BACKENDS, MAX_BACKENDS, m.len())?;
    let m =
        Array::<_, LbConfig>::try_from(map(maps::CONFIG)?).map_err(|e| shape(maps::CONFIG, e))?;
    len(maps::CONFIG, 1, m.len())?;
    HashMap::<_, VipKey, VipMeta>::try_from(map(maps::VIPS)?).map_err(|e| shape(maps::VIPS, e))?;
    HashMap::<_, FlowKey, FlowValue>::try_from(map(maps::FLOWS)?)
        .map_err(|e| shape(maps::FLOWS, e))?;
    let m = aya::maps::ArrayOfMaps::<_, aya::maps::MapData>::try_from(map(maps::RINGS)?)
        .map_err(|e| shape(maps::RINGS, e))?;
    len(maps::RINGS, MAX_VIPS, m.len())?;
    Ok(())
}
