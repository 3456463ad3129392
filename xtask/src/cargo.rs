//! The two cargos xtask drives, and the environment each one gets.
//!
//! `cargo xtask` is `cargo run`, which leaves variables behind that describe the xtask
//! package and the rustup toolchain that ran it. A nested cargo must not inherit them:
//! - the host cargo (rustup's, for lb-agent, tests, lint) keeps the toolchain choice
//!   (RUSTUP_TOOLCHAIN), so it builds with the same toolchain as the caller, but loses
//!   the xtask package's own variables;
//! - the BPF cargo (Debian's /usr/bin/cargo, or rustup nightly) loses those too, plus
//!   everything that would steer it back to the stable toolchain or change its flags:
//!   RUSTUP_TOOLCHAIN, CARGO, RUSTC_WRAPPER, CARGO_ENCODED_RUSTFLAGS (which silently
//!   overrides RUSTFLAGS, dropping `--btf`), and LD_LIBRARY_PATH entries pointing into
//!   rustup's toolchain.
//!
//! RUSTC, RUSTC_BOOTSTRAP, RUSTFLAGS and CARGO_TARGET_DIR for the BPF build are set on
//! that one command only, never in xtask's own environment, so they cannot leak into the
//! host builds.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{
    setup::Toolchain,
    toolchain::{self, Compiler},
};

/// The variable lb-agent's build script reads to embed the eBPF object.
pub const OBJECT_VAR: &str = "LB_EBPF_OBJECT";
/// BTF in the object: aya needs it to relocate map definitions and for readable dumps.
const BPF_RUSTFLAGS: &str = "-C debuginfo=2 -C link-arg=--btf";

/// `cargo` (rustup's, from PATH) in `root`, with `LB_EBPF_OBJECT` pointing at `object`.
pub fn host(root: &Path, object: Option<&Path>) -> Command {
    let mut cmd = Command::new("cargo");
    remove_outer_vars(&mut cmd);
    cmd.current_dir(root).env_remove(OBJECT_VAR);
    if let Some(object) = object {
        cmd.env(OBJECT_VAR, object);
    }
    cmd
}

/// `cargo build -p lb-ebpf --release --target bpfel-unknown-none` with the BPF compiler,
/// into `target_dir` (its own directory: a different rustc would otherwise invalidate the
/// host build's fingerprints on every switch).
pub fn bpf_build(root: &Path, toolchain: &Toolchain, target_dir: &Path) -> Command {
    bpf_build_with_features(root, toolchain, target_dir, &[])
}

/// [`bpf_build`] with lb-ebpf `features` enabled (`upgrade-variant`: the upgrade test's
/// second object). Give every feature set its own `target_dir`: the object's path does not
/// depend on the features, so builds sharing a directory would overwrite each other's
/// object (and the agent would embed whichever came last).
pub fn bpf_build_with_features(
    root: &Path,
    toolchain: &Toolchain,
    target_dir: &Path,
    features: &[&str],
) -> Command {
    let (mut cmd, rustc, extra_path): (Command, PathBuf, Option<&str>) = match &toolchain.compiler {
        Compiler::Debian { .. } => (
            Command::new(toolchain::DEBIAN_CARGO),
            PathBuf::from(toolchain::DEBIAN_RUSTC),
            Some("/usr/bin"),
        ),
        Compiler::RustupNightly { rustc, .. } => {
            let mut cmd = Command::new("rustup");
            cmd.args(["run", "nightly", "cargo"]);
            (cmd, rustc.clone(), None)
        }
    };
    remove_outer_vars(&mut cmd);
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTUP_TOOLCHAIN_SOURCE",
        "RUST_RECURSION_COUNT",
        "CARGO",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTDOC",
        "CARGO_BUILD_RUSTC",
        "CARGO_BUILD_RUSTC_WRAPPER",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
        OBJECT_VAR,
    ] {
        cmd.env_remove(var);
    }
    match library_path_without_rustup() {
        Some(paths) => cmd.env("LD_LIBRARY_PATH", paths),
        None => cmd.env_remove("LD_LIBRARY_PATH"),
    };
    cmd.current_dir(root)
        .env("PATH", bpf_path(&toolchain.linker_bin, extra_path))
        .env("RUSTC", rustc)
        // aya-ebpf uses #![feature(asm_experimental_arch)]; rustc-web is a stable compiler.
        .env("RUSTC_BOOTSTRAP", "1")
        .env("RUSTFLAGS", BPF_RUSTFLAGS)
        .env("CARGO_TARGET_DIR", target_dir)
        .arg("build");
    if matches!(toolchain.compiler, Compiler::RustupNightly { .. }) {
        cmd.args(["-Z", "build-std=core"]);
    }
    cmd.args([
        "-p",
        "lb-ebpf",
        "--release",
        "--target",
        toolchain::BPF_TARGET,
    ]);
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    cmd
}

/// Removes what `cargo run` set for the running xtask about the xtask package itself.
pub fn remove_outer_vars(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let injected = key.starts_with("CARGO_PKG_")
            || matches!(
                key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_ENCODED_RUSTFLAGS"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "CARGO_MAKEFLAGS"
            );
        if injected {
            cmd.env_remove(key);
        }
    }
}

/// bpf-linker's directory first (rustc runs `bpf-linker` from PATH), then the compiler's
/// directory, then the caller's PATH.
fn bpf_path(linker_bin: &Path, compiler_dir: Option<&str>) -> OsString {
    let mut dirs = vec![linker_bin.to_path_buf()];
    dirs.extend(compiler_dir.map(PathBuf::from));
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    // Only fails for a directory containing ':', which PATH could not hold anyway.
    std::env::join_paths(&dirs).unwrap_or_else(|_| linker_bin.as_os_str().to_owned())
}

/// LD_LIBRARY_PATH minus what `cargo run` added for the rustup toolchain and our target
/// directory; `None` when nothing is left.
fn library_path_without_rustup() -> Option<OsString> {
    let current = std::env::var_os("LD_LIBRARY_PATH")?;
    let rustup_home = std::env::var_os("RUSTUP_HOME").map(PathBuf::from);
    let target = crate::build::workspace_root()
        .ok()
        .map(|root| root.join("target"));
    let kept: Vec<PathBuf> = std::env::split_paths(&current)
        .filter(|dir| {
            !rustup_home
                .as_ref()
                .is_some_and(|home| dir.starts_with(home))
                && !target
                    .as_ref()
                    .is_some_and(|target| dir.starts_with(target))
                && !dir.to_string_lossy().contains("/.rustup/toolchains/")
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    std::env::join_paths(kept).ok()
}
