//! `demo`: build, then run lb-tests' `lb-demo` binary, which sets up namespaces and shows
//! the load balancer at work. Runs as root; `cargo run` is exec'd so Ctrl-C reaches the
//! demo and lets it clean up.

use anyhow::Result;

use crate::{
    build::{self, Profile},
    cargo, process, setup,
};

/// Returns only on failure.
pub fn run(keep: bool) -> Result<()> {
    let toolchain = setup::ensure(setup::Verbosity::Summary)?;
    let artifacts = build::all(&toolchain, Profile::Release)?;
    let mut cmd = cargo::host(&build::workspace_root()?, Some(&artifacts.object));
    cmd.args([
        "run",
        "--release",
        "-p",
        "lb-tests",
        "--bin",
        "lb-demo",
        "--",
    ]);
    if keep {
        cmd.arg("--keep");
    }
    Err(process::exec(&mut cmd))
}
