//! The agent, the daemon that `lb-agent run` starts: it loads (or adopts) the data plane,
//! applies the configuration, and then keeps the data plane matching what the
//! configuration, the health checks, the operator and the passing of time say.
//!
//! - [`options`]: what `lb-agent run` takes.
//! - [`start`]: start-up and adoption (the configuration to start with, the pinned data
//!   plane and the previous agent's saved state), and what stopping leaves behind.
//! - [`event_loop`]: signals, the one-second lifecycle tick, health events and the admin
//!   socket, until a signal or `ctl down`.
//! - [`running`]: the running state ([`AgentState`]) and every way it changes.
//! - [`handler`]: the admin socket's [`Handler`](crate::admin::server::Handler): each
//!   `ctl` command as a read or a change; [`views`]: the read-only replies.
//! - [`health_wiring`], [`metrics_wiring`], [`announcing`]: between the running state and
//!   the health checker, the metrics and the announce table; [`state_file`]: what
//!   survives a restart; [`fd_limit`]: the file descriptors health probes may use.
//! - [`attachment`]: the watchdog over the XDP attachment (the interface deleted and
//!   back) and the pins (removed, replaced, bpffs unmounted).
//!
//! One read-write lock guards the running state. Changes (SIGHUP reloads, health events,
//! the lifecycle tick, mutating `ctl` commands) take it exclusively, so no two changes
//! interleave; read-only `ctl` commands share it, so they run side by side but wait for a
//! change in progress (which holds it only while it computes and writes, milliseconds).

mod announcing;
mod attachment;
pub mod event_loop;
mod fd_limit;
mod handler;
mod health_wiring;
mod metrics_wiring;
pub mod options;
mod running;
pub mod start;
mod state_file;
mod veth_check;
mod views;

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::Notify;

pub use health_wiring::check_specs;
pub use metrics_wiring::MetricsState;
pub use options::RunOptions;
pub use running::{with_path, AgentState, ChangeError, Source};
pub use start::{down, run};
pub use state_file::{SavedAgent, SavedSource, StateFile};

use crate::admin::protocol::ErrorBody;

/// The agent as its event loop and the admin socket share it.
pub struct Agent {
    state: RwLock<AgentState>,
    /// Notified by `ctl down` after it replied: the agent removes its data plane and exits.
    pub down: Arc<Notify>,
}

impl Agent {
    pub fn new(state: AgentState) -> Self {
        Self {
            state: RwLock::new(state),
            down: Arc::new(Notify::new()),
        }
    }

    /// The running state, shared with other readers.
    pub fn read(&self) -> Result<RwLockReadGuard<'_, AgentState>, ErrorBody> {
        self.state.read().map_err(|_| poisoned())
    }

    /// The running state, exclusively: for changes.
    pub fn write(&self) -> Result<RwLockWriteGuard<'_, AgentState>, ErrorBody> {
        self.state.write().map_err(|_| poisoned())
    }
}

fn poisoned() -> ErrorBody {
    views::internal("agent state poisoned by an earlier panic")
}
