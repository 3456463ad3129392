//! What `lb-agent run` takes: one struct that is both the command line (clap) and what
//! the agent's start-up reads.

use std::path::PathBuf;

use clap::ValueEnum;

use crate::dataplane::AttachMode;

/// Options of `lb-agent run`.
#[derive(clap::Args, Clone, Debug)]
pub struct RunOptions {
    /// Interface to attach to (the load balancer's ingress).
    #[arg(long)]
    pub iface: String,
    /// XDP attach mode. Native runs in the driver; generic is slow and for testing.
    #[arg(long, value_enum, default_value_t = Mode::Native)]
    pub xdp_mode: Mode,
    /// Pin nothing; detach when the agent stops (for trying things out).
    #[arg(long)]
    pub ephemeral: bool,
    /// Start from scratch: detach and unpin whatever a previous agent left on this
    /// interface (its flow table, counters and runtime edits) before loading. Flows
    /// in progress re-hash; use it when the pinned state is not wanted any more.
    #[arg(long, conflicts_with = "ephemeral")]
    pub reset: bool,
    /// When the previous agent's saved state (`/run/lb/<iface>/state.json`) is unreadable,
    /// set it aside and rebuild the VIP and backend ids from the pinned tables instead of
    /// refusing to start: established flows keep their backends; runtime edits, drains,
    /// target health and a `ctl withdraw` that only the file held are lost. Without an
    /// unreadable file it changes nothing.
    #[arg(long, conflicts_with_all = ["ephemeral", "reset"])]
    pub recover_state: bool,
    /// Load this eBPF object instead of the one embedded at build time.
    #[arg(long)]
    pub bpf_object: Option<PathBuf>,
    /// Seconds between counter summaries in the log (0 turns them off).
    #[arg(long, default_value_t = 10)]
    pub stats_interval: u64,
    /// Configuration file (VIPs, target groups; see examples/lb.toml). Applied at
    /// start; SIGHUP re-reads it, and an invalid file leaves the running one in place.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Admin socket for `lb-agent ctl` [default: /run/lb/admin.sock, or
    /// /run/lb/netns-<name>/admin.sock in a named network namespace].
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,
    /// Let this group use the admin socket too (mode 0660 instead of 0600).
    #[arg(long, value_name = "GROUP")]
    pub admin_group: Option<String>,
}

/// XDP attach mode on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Native,
    Generic,
}

impl From<Mode> for AttachMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Native => AttachMode::Native,
            Mode::Generic => AttachMode::Generic,
        }
    }
}
