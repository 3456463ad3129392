//! lb's control plane as a library: the binary (`main.rs`) is a thin CLI over it, and the
//! integration tests drive the same code the agent runs.

pub mod admin;
pub mod agent;
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
