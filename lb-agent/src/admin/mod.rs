//! The admin interface: a Unix socket speaking newline-delimited JSON
//! ([`protocol`], documented in `docs/admin-protocol.md`), its server ([`server`]), a
//! blocking client ([`client`]) and the `lb-agent ctl` command line over it ([`ctl`],
//! rendering with [`table`]).
//!
//! The agent wires it up by implementing [`server::Handler`] and running
//! [`server::serve`]; `main.rs` adds a `Ctl(CtlArgs)` subcommand that calls
//! [`ctl::run_ctl`].

pub mod client;
pub mod ctl;
pub mod protocol;
pub mod server;
pub mod table;

pub use client::{call, ClientError};
pub use ctl::{run_ctl, CtlArgs};
pub use protocol::{Command, ErrorBody, ErrorCode, MAX_LINE, PROTOCOL_VERSION};
pub use server::{authorize, serve, Handler, Peer};

#[cfg(test)]
mod tests;
