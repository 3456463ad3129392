//! `build-and-load`: build, then run the agent on an interface in the foreground.
//!
//! xtask execs the agent rather than waiting on it: Ctrl-C and SIGTERM then reach the
//! agent itself (which detaches cleanly on either), and its exit status is ours, with no
//! signal handling in xtask. (`cargo run` execs xtask the same way, and sudo relays
//! signals to its child.)

use std::process::Command;

use anyhow::Result;

use crate::{
    build::{self, Profile},
    process, setup,
};

pub struct Options {
    pub iface: String,
    pub config: Option<std::path::PathBuf>,
    pub generic: bool,
    pub pin: bool,
    pub profile: Profile,
}

/// Returns only on failure.
pub fn run(options: Options) -> Result<()> {
    let toolchain = setup::ensure(setup::Verbosity::Summary)?;
    let artifacts = build::all(&toolchain, options.profile)?;
    let mut agent = Command::new(&artifacts.agent);
    agent.args(["run", "--iface", &options.iface]);
    if let Some(config) = &options.config {
        agent.arg("--config").arg(config);
    }
    if options.generic {
        eprintln!(
            "WARNING: --generic attaches in generic (skb) XDP mode: it is SLOW and meant for \
             testing only. Use native mode (the default) for real traffic."
        );
        agent.args(["--xdp-mode", "generic"]);
    }
    // Without --pin, stopping build-and-load leaves nothing behind (a development
    // loop); with it, the agent pins its state and a later run adopts it.
    if !options.pin {
        agent.arg("--ephemeral");
    }
    println!("build-and-load: {}", process::display(&agent));
    Err(process::exec(&mut agent))
}
