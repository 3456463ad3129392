//! The only module in the agent that touches aya: it loads the eBPF object, attaches and
//! detaches the XDP program, pins what must outlive the agent, and reads counters.
//! Everything else in the agent (and the tests) talks to the data plane through the typed
//! methods here.
//!
//! - `mod.rs`: loading (with ABI checks), attaching, pinning, `down`;
//! - [`tables`]: writing VIPs, backends, Maglev rings, runtime config, TX ports;
//! - [`counters`]: reading the per-CPU counters;
//! - [`test_run`]: `BPF_PROG_TEST_RUN` for fixtures and benchmarks;
//! - [`decap`]: the backend-side `lb_decap` program.

mod batch;
pub mod counters;
pub mod decap;
pub mod tables;
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
    #[error(
        "pinned map `{name}` at {path} has {found}, this agent expects {expected}: \
         a different lb version pinned it; `lb-agent down` removes it (and every flow)"
    )]
    PinnedLayout {
        name: &'static str,
        path: PathBuf,
        found: String,
        expected: String,
    },
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

/// The loaded `lb_xdp` program as the kernel knows it (what `bpftool prog show` prints).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ProgramInfo {
    /// Kernel program id: new at every load, so it tells two runs apart.
    pub id: u32,
    /// The kernel's tag, 16 hex digits: a hash of the instructions, so it stays the same
    /// when the same object is loaded again and changes with a different build.
    pub tag: String,
    /// The program's name (at most 15 bytes, as the kernel keeps it).
    pub name: String,
}

impl std::fmt::Display for ProgramInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} id {} tag {}", self.name, self.id, self.tag)
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

    /// Loads `object` with every map pinned under `layout`: maps a previous agent pinned
    /// are reused as they are (flow table, counters, VIPs, rings), after checking that
    /// each has the layout this agent expects; missing ones are created and pinned. The
    /// flow table keeps its pinned capacity (a different `options.flow_entries` is
    /// reported and ignored: resizing would drop every flow).
    pub fn load_pinned(
        object: &[u8],
        options: &LoadOptions,
        layout: &PinLayout,
    ) -> Result<(Self, bool), DataplaneError> {
        ensure_bpffs()?;
        let maps_dir = layout.dir().join("maps");
        std::fs::create_dir_all(&maps_dir).map_err(|source| DataplaneError::Fs {
            what: "creating",
            path: maps_dir.clone(),
            source,
        })?;
        let mut flow_entries = options.flow_entries;
        let mut adopted = false;
        for &name in maps::ALL {
            let path = layout.map(name);
            if !path.exists() {
                continue;
            }
            adopted = true;
            let info = aya::maps::MapInfo::from_pin(&path)
                .map_err(|source| DataplaneError::Map { name, source })?;
            let (key, value, entries) = expected_layout(name);
            let actual = (info.key_size(), info.value_size(), info.max_entries());
            let fits = actual.0 == key
                && value.is_none_or(|v| v == actual.1)
                && entries.is_none_or(|e| e == actual.2);
            if !fits {
                return Err(DataplaneError::PinnedLayout {
                    name,
                    path,
                    found: format!("key {} value {} entries {}", actual.0, actual.1, actual.2),
                    expected: format!("key {key} value {value:?} entries {entries:?}"),
                });
            }
            if name == maps::FLOWS && actual.2 != flow_entries {
                warn!(
                    pinned = actual.2,
                    configured = flow_entries,
                    "keeping the pinned flow table's size; `lb-agent down` and a restart resize it (and drop every flow)"
                );
                flow_entries = actual.2;
            }
        }
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(maps::FLOWS, flow_entries);
        let paths: Vec<(&'static str, PathBuf)> =
            maps::ALL.iter().map(|&n| (n, layout.map(n))).collect();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(object)?;
        check_maps(&ebpf)?;
        xdp_program(&mut ebpf)?
            .load()
            .map_err(|source| DataplaneError::Program {
                action: "loading the XDP program (verifier)",
                source,
            })?;
        let mut dp = Self {
            ebpf,
            attachment: None,
        };
        if !adopted {
            dp.set_config(&lb_common::LbConfig::default())?;
        }
        Ok((dp, adopted))
    }

    /// Attaches to `iface` through a link pinned under `layout`, so that the program keeps
    /// running when this agent exits or is killed. If a previous agent's link is pinned
    /// there, this program replaces the running one in it atomically (`bpf_link_update`):
    /// no packet goes unprocessed. Returns whether an existing link was adopted.
    pub fn attach_pinned(
        &mut self,
        iface: &str,
        mode: AttachMode,
        layout: &PinLayout,
    ) -> Result<bool, DataplaneError> {
        let link_path = layout.link();
        if link_path.exists() {
            let pinned = PinnedLink::from_pin(&link_path).map_err(|e| DataplaneError::Fs {
                what: "opening pinned link",
                path: link_path.clone(),
                source: io::Error::other(e.to_string()),
            })?;
            let pinned = FdLink::from(pinned);
            // Which program this replaces, for the log line; the link itself stays.
            let replaced = pinned.info().map(|i| i.program_id()).ok();
            let id = match self.hold_pinned_link(
                pinned,
                &link_path,
                "replacing the program in the pinned link",
            ) {
                Ok(id) => Some(id),
                // The link outlived its interface (deleted, or its namespace went away):
                // nothing is attached any more, so attach afresh below.
                Err(e) if has_errno(&e, nix::errno::Errno::ENOLINK) => {
                    warn!(iface, link = %link_path.display(), "the pinned XDP link was severed from its interface; attaching afresh");
                    std::fs::remove_file(&link_path).map_err(|source| DataplaneError::Fs {
                        what: "removing the severed link's pin",
                        path: link_path.clone(),
                        source,
                    })?;
                    None
                }
                Err(e) => return Err(e),
            };
            if let Some(id) = id {
                info!(iface, link = %link_path.display(), replaced_program_id = replaced, program = %self.describe_program(), "adopted the running data plane: program replaced atomically");
                self.attachment = Some(Attachment {
                    iface: iface.to_owned(),
                    link: id,
                });
                return Ok(true);
            }
        }
        let ifindex = nix::net::if_::if_nametoindex(iface)
            .map_err(|_| DataplaneError::NoSuchInterface(iface.to_owned()))?;
        if mode == AttachMode::Generic {
            warn!(
                iface,
                "attaching in GENERIC (skb) XDP mode: slow, for testing only"
            );
        }
        let prog = xdp_program(&mut self.ebpf)?;
        let id = prog
            .attach_to_if_index(ifindex, mode.xdp_mode())
            .map_err(|source| DataplaneError::Program {
                action: "attaching the XDP program",
                source,
            })?;
        let link = prog
            .take_link(id)
            .map_err(|source| DataplaneError::Program {
                action: "taking the XDP link",
                source,
            })?;
        let fd_link = FdLink::try_from(link).map_err(|e| DataplaneError::Fs {
            what:
                "the XDP attachment is a netlink attachment (kernel without bpf_link?); cannot pin",
            path: link_path.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        let pinned = fd_link
            .pin(&link_path)
            .map_err(|source| DataplaneError::Pin {
                path: link_path.clone(),
                source,
            })?;
        // Keep a handle to the link so a later `attach_pinned` in this process (an
        // upgrade) can find it; the pin alone keeps it attached after exit.
        let id =
            self.hold_pinned_link(FdLink::from(pinned), &link_path, "holding the pinned link")?;
        info!(iface, ifindex, ?mode, link = %link_path.display(), program = %self.describe_program(), "XDP program attached and pinned: it keeps running after the agent exits");
        self.attachment = Some(Attachment {
            iface: iface.to_owned(),
            link: id,
        });
        Ok(false)
    }

    /// Makes `pinned` this program's link: `bpf_link_update` swaps this program in
    /// atomically (a no-op swap when it is already the link's program).
    fn hold_pinned_link(
        &mut self,
        pinned: FdLink,
        path: &Path,
        action: &'static str,
    ) -> Result<aya::programs::xdp::XdpLinkId, DataplaneError> {
        let link =
            aya::programs::xdp::XdpLink::try_from(pinned).map_err(|e| DataplaneError::Fs {
                what: "the pinned link is not an XDP link",
                path: path.to_owned(),
                source: io::Error::other(e.to_string()),
            })?;
        xdp_program(&mut self.ebpf)?
            .attach_to_link(link)
            .map_err(|source| DataplaneError::Program { action, source })
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

    /// The loaded `lb_xdp` program's kernel id, tag and name (once attached, the program
    /// running on the interface).
    pub fn program_info(&self) -> Result<ProgramInfo, DataplaneError> {
        let info = self
            .ebpf
            .program(programs::LB_XDP)
            .ok_or(DataplaneError::MissingProgram(programs::LB_XDP))?
            .info()
            .map_err(|source| DataplaneError::Program {
                action: "reading the XDP program's kernel info",
                source,
            })?;
        Ok(ProgramInfo {
            id: info.id(),
            // The kernel's 8 tag bytes, as `bpftool` and `ip link` print them.
            tag: format!("{:016x}", info.tag()),
            name: info.name_as_str().unwrap_or_default().to_owned(),
        })
    }

    /// [`Dataplane::program_info`] for a log line, or why it is unknown.
    fn describe_program(&self) -> String {
        self.program_info()
            .map_or_else(|e| format!("unknown ({e})"), |p| p.to_string())
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
        warn!(
            path = BPFFS,
            "mounted bpffs: pins outlive the agent only if this mount is in the host's mount \
             namespace (under `ip netns exec` it is private and vanishes at exit; use \
             `nsenter --net=/run/netns/<name>` there)"
        );
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

/// Key size, value size (None: not checked) and entry count (None: any) each map must have.
fn expected_layout(name: &str) -> (u32, Option<u32>, Option<u32>) {
    use core::mem::size_of;
    use lb_common::{
        service::{MAX_BACKENDS, MAX_VIPS},
        Backend, DropReason, Event, FloodWindow, FlowKey, FlowValue, LbConfig, ServiceCounter,
        VipKey, VipMeta,
    };
    let s = |n: usize| Some(n as u32);
    match name {
        maps::VERDICTS => (4, s(size_of::<Counter>()), Some(Verdict::COUNT)),
        maps::TRAFFIC => (4, s(size_of::<Counter>()), Some(TrafficClass::COUNT)),
        maps::DROPS => (4, s(size_of::<Counter>()), Some(DropReason::COUNT)),
        maps::EVENTS => (4, s(size_of::<Counter>()), Some(Event::COUNT)),
        maps::VIPS => (
            size_of::<VipKey>() as u32,
            s(size_of::<VipMeta>()),
            Some(MAX_VIPS * 2),
        ),
        maps::RINGS => (4, s(4), Some(MAX_VIPS)),
        maps::BACKENDS => (4, s(size_of::<Backend>()), Some(MAX_BACKENDS)),
        maps::FLOWS => (size_of::<FlowKey>() as u32, s(size_of::<FlowValue>()), None),
        maps::CONFIG => (4, s(size_of::<LbConfig>()), Some(1)),
        maps::VIP_STATS => (4, s(size_of::<ServiceCounter>()), Some(MAX_VIPS)),
        maps::BACKEND_STATS => (4, s(size_of::<ServiceCounter>()), Some(MAX_BACKENDS)),
        maps::FLOOD => (4, s(size_of::<FloodWindow>()), Some(1)),
        // A device map's value layout is the kernel's (struct bpf_devmap_val).
        _ => (4, None, None),
    }
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

/// Whether `e` was caused, somewhere down its chain, by the system error `errno`.
fn has_errno(e: &(dyn std::error::Error + 'static), errno: nix::errno::Errno) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if io.raw_os_error() == Some(errno as i32) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_is_found_down_the_chain() {
        let e = DataplaneError::Fs {
            what: "x",
            path: "/x".into(),
            source: io::Error::from_raw_os_error(nix::errno::Errno::ENOLINK as i32),
        };
        assert!(has_errno(&e, nix::errno::Errno::ENOLINK));
        assert!(!has_errno(&e, nix::errno::Errno::ENOENT));
    }
}
