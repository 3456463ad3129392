//! The BPF build toolchain: a rustc that can target `bpfel-unknown-none`, and bpf-linker.
//!
//! Two compilers are known to work (see shared/TOOLCHAIN.md):
//! - "debian": Debian's rustc-web (1.96, LLVM 22) with the prebuilt `core` for the BPF
//!   target from libstd-rust-web-dev-bpf. Comes from apt, so xtask can install it.
//! - "rustup-nightly": the aya upstream route, nightly plus rust-src and
//!   `-Z build-std=core`. Used when already present; xtask never installs it because
//!   rust-src is not something a package registry provides.
//!
//! Both must use LLVM 22, the LLVM bpf-linker is built against: the linker reads the
//! compiler's bitcode, which an older LLVM can't produce for it and a newer one might not
//! be readable by it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{anyhow, Context as _, Result};

use crate::{cargo, process};

pub const BPF_TARGET: &str = "bpfel-unknown-none";
/// Overrides where bpf-linker is installed.
pub const DIR_VAR: &str = "LB_TOOLCHAIN_DIR";
/// The Debian compiler, called by absolute path: rustup's proxies come first on PATH.
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
pub const DEBIAN_CARGO: &str = "/usr/bin/cargo";
/// What installs the "debian" route.
pub const DEBIAN_PACKAGES: &[&str] = &["rustc-web", "cargo-web", "libstd-rust-web-dev-bpf"];
/// What building bpf-linker against the system LLVM needs.
pub const LINKER_BUILD_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];
pub const LINKER_VERSION: &str = "0.13.0";
const LLVM_MAJOR: u32 = 22;
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// A rustc that can build lb-ebpf.
#[derive(Clone, Debug)]
pub enum Compiler {
    Debian { release: String },
    RustupNightly { rustc: PathBuf, release: String },
}

impl Compiler {
    /// For the `setup:` lines, e.g. "debian rustc-web 1.96 (LLVM 22)".
    pub fn describe(&self) -> String {
        match self {
            Self::Debian { release } => {
                let short: Vec<&str> = release.split('.').take(2).collect();
                format!("debian rustc-web {} (LLVM {LLVM_MAJOR})", short.join("."))
            }
            Self::RustupNightly { release, .. } => {
                format!("rustup nightly {release} (LLVM {LLVM_MAJOR})")
            }
        }
    }
}

/// The "debian" route, or why it is not usable.
pub fn detect_debian() -> Result<Compiler, String> {
    for tool in [DEBIAN_RUSTC, DEBIAN_CARGO] {
        if !Path::new(tool).exists() {
            return Err(format!("{tool} not found"));
        }
    }
    let version = process::probe(Command::new(DEBIAN_RUSTC).arg("-vV"))
        .ok_or_else(|| format!("`{DEBIAN_RUSTC} -vV` failed"))?;
    let release = check_version(&version, DEBIAN_RUSTC)?;
    let libdir = process::probe(Command::new(DEBIAN_RUSTC).args([
        "--print",
        "target-libdir",
        "--target",
        BPF_TARGET,
    ]))
    .ok_or_else(|| format!("{DEBIAN_RUSTC} does not know the {BPF_TARGET} target"))?;
    let libdir = PathBuf::from(libdir.trim());
    if !has_prebuilt_core(&libdir) {
        return Err(format!(
            "no prebuilt core for {BPF_TARGET} in {} (libstd-rust-web-dev-bpf)",
            libdir.display()
        ));
    }
    Ok(Compiler::Debian { release })
}

/// The "rustup-nightly" route, or why it is not usable.
pub fn detect_rustup_nightly() -> Result<Compiler, String> {
    if process::which("rustup").is_none() {
        return Err("rustup not found".into());
    }
    let version = process::probe(rustup().args(["run", "nightly", "rustc", "-vV"]))
        .ok_or("no rustup nightly toolchain")?;
    let release = check_version(&version, "nightly rustc")?;
    let components = process::probe(rustup().args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    if !components
        .lines()
        .any(|line| line.trim().starts_with("rust-src"))
    {
        return Err("nightly has no rust-src component".into());
    }
    let rustc = process::probe(rustup().args(["which", "--toolchain", "nightly", "rustc"]))
        .ok_or("`rustup which --toolchain nightly rustc` failed")?;
    Ok(Compiler::RustupNightly {
        rustc: PathBuf::from(rustc.trim()),
        release,
    })
}

/// rustup, without the toolchain choice `cargo run` left in our environment.
fn rustup() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.env_remove("RUSTUP_TOOLCHAIN");
    cmd
}

/// The release from `rustc -vV` output if its LLVM is the one bpf-linker uses.
fn check_version(version: &str, who: &str) -> Result<String, String> {
    let field = |name: &str| {
        version
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
    };
    let llvm = field("LLVM version:").ok_or_else(|| format!("{who} reports no LLVM version"))?;
    let major = llvm.split('.').next().and_then(|m| m.parse::<u32>().ok());
    if major != Some(LLVM_MAJOR) {
        return Err(format!("{who} uses LLVM {llvm}, not {LLVM_MAJOR}"));
    }
    Ok(field("release:").unwrap_or("unknown").to_string())
}

fn has_prebuilt_core(libdir: &Path) -> bool {
    fs::read_dir(libdir).is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libcore-") && name.ends_with(".rlib")
        })
    })
}

/// Where bpf-linker lives: $LB_TOOLCHAIN_DIR, else ${XDG_CACHE_HOME:-$HOME/.cache}/lb-toolchain.
pub fn dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(DIR_VAR).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let cache = match std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        Some(cache) => PathBuf::from(cache),
        None => PathBuf::from(
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .ok_or_else(|| anyhow!("neither {DIR_VAR}, XDG_CACHE_HOME nor HOME is set"))?,
        )
        .join(".cache"),
    };
    Ok(cache.join("lb-toolchain"))
}

/// The directory to put first on PATH so rustc finds `bpf-linker`.
pub fn bin_dir(dir: &Path) -> PathBuf {
    dir.join("bin")
}

/// `bpf-linker --version` of the installed linker, if it runs.
pub fn linker_version(dir: &Path) -> Option<String> {
    let linker = bin_dir(dir).join("bpf-linker");
    if !linker.is_file() {
        return None;
    }
    process::probe(Command::new(linker).arg("--version")).map(|v| v.trim().to_string())
}

/// Builds bpf-linker against the system LLVM 22 into `dir`. The install goes to a scratch
/// root first and only the finished binary is renamed into place, so an interrupted
/// install never leaves something that looks installed.
pub fn install_linker(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    remove_stale_installs(dir)?;
    let scratch = dir.join(format!(".install-{}", std::process::id()));
    let mut cmd = Command::new("cargo");
    cargo::remove_outer_vars(&mut cmd);
    cmd.args(["install", "bpf-linker", "--version", LINKER_VERSION])
        .args(["--no-default-features", "--features", "llvm-22", "--root"])
        .arg(&scratch)
        // Without these, llvm-sys looks in /usr and fails with "unable to find library -lLLVM".
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX);
    process::run(&mut cmd).context("could not build bpf-linker")?;

    let built = bin_dir(&scratch).join("bpf-linker");
    let target = bin_dir(dir);
    fs::create_dir_all(&target)
        .with_context(|| format!("could not create {}", target.display()))?;
    fs::rename(&built, target.join("bpf-linker")).with_context(|| {
        format!(
            "could not move {} into {}",
            built.display(),
            target.display()
        )
    })?;
    fs::remove_dir_all(&scratch).with_context(|| format!("could not remove {}", scratch.display()))
}

/// Scratch roots of installs that were interrupted.
fn remove_stale_installs(dir: &Path) -> Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("could not read {}", dir.display()))?;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(".install-") {
            let path = entry.path();
            fs::remove_dir_all(&path)
                .with_context(|| format!("could not remove {}", path.display()))?;
        }
    }
    Ok(())
}
