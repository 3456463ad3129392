//! The only module in the agent that touches aya: it loads the eBPF object, attaches and
//! detaches the XDP program, pins what must outlive the agent, and reads counters.
//! Everything else in the agent (and the tests) talks to the data plane through the typed
//! methods here.
//!
//! - `mod.rs`: the [`Dataplane`] type and its error;
//! - `load`: loading fresh or adopting pinned maps, each map checked against lb-common's
//!   table of map specs first;
//! - `attach`: attaching (through a pinned link that outlives the agent), detaching, the
//!   running program's identity, and whether the link still runs on the interface;
//! - `pins`: where an interface's state is pinned, and `down`, which removes it;
//! - `pin_check`: putting back pins removed or replaced under a running agent (and
//!   bpffs, when it was unmounted);
//! - `bpf_obj`: the `bpf()` object commands aya does not offer (a link's own descriptor,
//!   pinning it, what a pin holds);
//! - `host`: host settings the data plane needs (bpffs mounted, forwarding enabled);
//! - [`tables`]: writing VIPs, backends, Maglev rings, runtime config, TX ports, and
//!   reading the flow table;
//! - [`counters`]: reading the per-CPU counters;
//! - [`test_run`]: `BPF_PROG_TEST_RUN` for fixtures and benchmarks;
//! - [`decap`]: the backend-side `lb_decap` program.

mod attach;
mod batch;
pub mod bpf_obj;
pub mod counters;
pub mod decap;
mod host;
mod load;
mod pin_check;
mod pins;
pub mod tables;
pub mod test_run;

pub use attach::{AttachMode, AttachedLink, LinkState, ProgramInfo};
pub use counters::Counters;
pub use host::{enable_forwarding, ensure_bpffs, BPFFS};
pub use load::LoadOptions;
pub use pin_check::{Found, PinCheck, Repaired};
pub use pins::{down, scope, PinLayout, PIN_ROOT};
pub use test_run::TestRunOutcome;

use std::{io, path::PathBuf};

use aya::{programs::Xdp, Ebpf};
use lb_common::programs;

/// Why a data plane operation failed.
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

/// A loaded data plane: the eBPF object's maps and the XDP program, attached or not.
pub struct Dataplane {
    ebpf: Ebpf,
    attachment: Option<attach::Attachment>,
    /// Where the maps (and the link, once attached) are pinned; `None` when ephemeral.
    pins: Option<PinLayout>,
}

/// The `lb_xdp` program in `ebpf`, to load, attach or detach.
fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, DataplaneError> {
    ebpf.program_mut(programs::LB_XDP)
        .ok_or(DataplaneError::MissingProgram(programs::LB_XDP))?
        .try_into()
        .map_err(|source| DataplaneError::Program {
            action: "finding the XDP program",
            source,
        })
}
