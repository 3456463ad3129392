//! `demo` and `bench`: build, then run one of lb-tests' binaries (`lb-demo`, which sets
//! up namespaces and shows the load balancer at work; `lb-bench`, which measures it).
//! Runs as root; `cargo run` is exec'd so Ctrl-C reaches the binary and lets it clean up.

use anyhow::Result;

use crate::{
    build::{self, Profile},
    cargo, process, setup,
};

/// Builds everything, then replaces this process with `cargo run --release -p lb-tests
/// --bin <bin> -- <args>`. Returns only on failure. With `bench_object` it also builds the
/// benchmark object (lb-ebpf with the `bench` feature) and names it in LB_BENCH_OBJECT.
pub fn run_tests_binary(bin: &str, args: &[&str], bench_object: bool) -> Result<()> {
    let toolchain = setup::ensure(setup::Verbosity::Summary)?;
    let artifacts = build::all(&toolchain, Profile::Release)?;
    let mut cmd = cargo::host(&build::workspace_root()?, Some(&artifacts.object));
    cmd.env_remove(build::BENCH_OBJECT_VAR);
    if bench_object {
        cmd.env(build::BENCH_OBJECT_VAR, build::bench_object(&toolchain)?);
    }
    cmd.args(["run", "--release", "-p", "lb-tests", "--bin", bin, "--"]);
    cmd.args(args);
    Err(process::exec(&mut cmd))
}
