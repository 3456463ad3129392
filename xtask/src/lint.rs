//! `lint`: rustfmt and clippy over every crate, the eBPF one included.
//!
//! The host crates are linted with LB_EBPF_OBJECT set, because lb-agent's build script
//! needs an object to embed even for `cargo clippy`.
//!
//! lb-ebpf is linted on the host toolchain: aya-ebpf type-checks for x86_64 and clippy
//! never links, so no BPF toolchain is needed. One catch: the host's precompiled `core`
//! is built with panic=unwind, which a `no_std` binary rejects ("unwinding panics are not
//! supported without std"), so `-C panic=abort` is passed to that crate only (arguments
//! after `--` reach just the selected package). A real BPF-target clippy is not possible
//! here: Debian's rustc-web ships no clippy-driver, and rustup nightly's clippy cannot
//! read Debian's prebuilt BPF `core` (different compiler) and has no rust-src to build
//! its own. Code behind `cfg(target_arch = "bpf")` is therefore not linted.

use std::path::Path;

use anyhow::{bail, Result};

use crate::{build, cargo, process};

/// Each check: its name, and the cargo arguments that run it.
const CHECKS: [(&str, &[&str]); 5] = [
    ("rustfmt", &["fmt", "--all", "--check"]),
    (
        // Named, not the default members: those leave out lb-tests.
        "clippy (host crates)",
        &[
            "clippy",
            "--workspace",
            "--exclude",
            "lb-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    ),
    (
        "clippy (lb-ebpf, host type-check)",
        &[
            "clippy",
            "-p",
            "lb-ebpf",
            "--",
            "-C",
            "panic=abort",
            "-D",
            "warnings",
        ],
    ),
    (
        // The second object the upgrade test swaps in (see lb-ebpf's Cargo.toml).
        "clippy (lb-ebpf upgrade variant, host type-check)",
        &[
            "clippy",
            "-p",
            "lb-ebpf",
            "--features",
            "upgrade-variant",
            "--",
            "-C",
            "panic=abort",
            "-D",
            "warnings",
        ],
    ),
    (
        // The benchmark-only programs (lb-ebpf/src/bench_fwd.rs, see its Cargo.toml).
        "clippy (lb-ebpf bench programs, host type-check)",
        &[
            "clippy",
            "-p",
            "lb-ebpf",
            "--features",
            "bench",
            "--",
            "-C",
            "panic=abort",
            "-D",
            "warnings",
        ],
    ),
];

/// Runs every check, then fails if any failed (so one run shows all problems).
pub fn run(object: &Path) -> Result<()> {
    let root = build::workspace_root()?;
    let mut failed = Vec::new();
    for (name, args) in CHECKS {
        println!("lint: {name}");
        let mut cmd = cargo::host(&root, Some(object));
        cmd.args(args);
        // process::run has already printed the failing command.
        if process::run(&mut cmd).is_err() {
            eprintln!("lint: {name} failed");
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!("lint failed: {}", failed.join(", "));
    }
    Ok(())
}
