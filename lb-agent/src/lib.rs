//! lb's control plane as a library: the binary (`main.rs`) only dispatches its command
//! line here, and the integration tests drive the same code the agent runs.
//!
//! The path of a change, top to bottom: [`config`] validates a file or a runtime edit;
//! [`agent`] runs the daemon and owns the running state; [`lifecycle`] decides per target
//! (health from [`health`], drains, deregistrations, slow start) what is served, as a
//! `Serving`; [`install`] turns that into ids, [`maglev`] rings and ordered writes;
//! [`dataplane`] is the only code that touches aya. [`admin`] is the socket and `ctl`,
//! [`metrics`] the CloudWatch-shaped outputs, [`target`] the key they all share.

pub mod admin;
pub mod agent;
pub mod announce;
pub mod cli;
pub mod config;
pub mod dataplane;
pub mod decap;
pub mod health;
pub mod install;
pub mod lifecycle;
pub mod maglev;
pub mod metrics;
pub mod object;
pub mod target;
