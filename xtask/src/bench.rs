//! `bench`: build, then run lb-tests' `lb-bench` binary (per-packet cost of the production
//! program through `BPF_PROG_TEST_RUN`, against a no-op baseline measured in the same
//! run). Results go to `target/bench/`. A benchmark, not a test: it asserts no speed.

use anyhow::Result;

use crate::{
    build::{self, Profile},
    cargo, process, setup,
};

/// Returns only on failure.
pub fn run(quick: bool) -> Result<()> {
    let toolchain = setup::ensure(setup::Verbosity::Summary)?;
    let artifacts = build::all(&toolchain, Profile::Release)?;
    let mut cmd = cargo::host(&build::workspace_root()?, Some(&artifacts.object));
    cmd.args([
        "run",
        "--release",
        "-p",
        "lb-tests",
        "--bin",
        "lb-bench",
        "--",
    ]);
    if quick {
        cmd.arg("--quick");
    }
    Err(process::exec(&mut cmd))
}
