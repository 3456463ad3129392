//! Root: who has it, and getting it for the subcommands that need it.
//!
//! Loading XDP programs, creating network namespaces and mounting bpffs need root, so
//! `test`, `demo` and `build-and-load` re-run themselves under `sudo -E` rather than
//! making everyone remember to. `-E` keeps RUSTUP_HOME/CARGO_HOME, so root uses the same
//! toolchains; PATH and the BPF toolchain directory are passed explicitly because sudo
//! resets PATH and root's HOME would point setup at a different cache.

use std::{process::Command, sync::OnceLock};

use anyhow::{bail, Context as _, Result};

use crate::{process, toolchain};

/// Set in the re-executed process, so a sudo that does not make us root cannot loop.
const REEXEC_MARKER: &str = "LB_XTASK_SUDO";

/// Whether we run as uid 0 (from `id -u`: xtask does not link libc for one call).
pub fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        // If `id` cannot answer, assume not root: the sudo paths then fail with a clear error.
        process::probe(Command::new("id").arg("-u")).is_some_and(|uid| uid.trim() == "0")
    })
}

/// A command that runs `program` as root: directly when we are root, else through sudo.
pub fn root_command(program: &str) -> Result<Command> {
    if is_root() {
        return Ok(Command::new(program));
    }
    if process::which("sudo").is_none() {
        bail!("`{program}` needs root, and sudo is not installed: run this as root");
    }
    let mut cmd = Command::new("sudo");
    cmd.arg(program);
    Ok(cmd)
}

/// Returns if we are root; otherwise replaces this process with itself under `sudo -E`,
/// with the same arguments.
pub fn ensure_root(why: &str) -> Result<()> {
    if is_root() {
        return Ok(());
    }
    if std::env::var_os(REEXEC_MARKER).is_some() {
        bail!("still not root after re-running under sudo; run this as root");
    }
    if process::which("sudo").is_none() {
        bail!("{why} needs root, and sudo is not installed: run this as root");
    }
    let exe = std::env::current_exe().context("could not find the running xtask binary")?;
    let toolchain_dir = toolchain::dir()?;
    eprintln!("xtask: {why} needs root; re-running under sudo");
    let mut path_var = std::ffi::OsString::from("PATH=");
    path_var.push(std::env::var_os("PATH").unwrap_or_default());
    let mut dir_var = std::ffi::OsString::from(format!("{}=", toolchain::DIR_VAR));
    dir_var.push(&toolchain_dir);
    let mut cmd = Command::new("sudo");
    cmd.args(["-E", "env"])
        .arg(path_var)
        .arg(dir_var)
        .arg(format!("{REEXEC_MARKER}=1"))
        .arg(exe)
        .args(std::env::args_os().skip(1));
    Err(process::exec(&mut cmd))
}
