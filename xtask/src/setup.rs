//! `setup`: make this machine able to build and test lb, and say what it found.
//!
//! Every other subcommand runs the same checks first (quietly), so nobody has to know
//! setup exists. Each step detects first and acts only when something is missing, so
//! running it again costs a few process spawns.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{bail, Context as _, Result};

use crate::{
    apt::Apt,
    privilege, process,
    toolchain::{self, Compiler},
};

/// What the build needs from setup.
pub struct Toolchain {
    pub compiler: Compiler,
    /// Holds `bpf-linker`; goes first on PATH for the BPF build.
    pub linker_bin: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// A line for every step (`cargo xtask setup`).
    Steps,
    /// Only steps that act, then one summary line (every other subcommand).
    Summary,
}

const BPFFS: &str = "/sys/fs/bpf";
/// Commands the namespace tests run, and the Debian package of each.
const TEST_TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ping", "iputils-ping"),
    ("tcpdump", "tcpdump"),
    // The agent end-to-end tests start lb-agent with `nsenter --net`.
    ("nsenter", "util-linux"),
    // The admin tests run a non-root client: setpriv drops privileges, and the client is
    // the system python (not a per-user shim, which uid 65534 cannot run).
    ("setpriv", "util-linux"),
    ("/usr/bin/python3", "python3-minimal"),
    // The benchmark smoke test builds the nftables DNAT load balancer it compares against.
    ("nft", "nftables"),
    // The fleet tests run BIRD 2 (one daemon per namespace, never the packaged service)
    // on the router and on every lb host.
    ("bird", "bird2"),
    ("birdc", "bird2"),
];
/// What only `cargo xtask bench` runs: the HTTP load generator and the userspace proxy
/// it compares against (HAProxy is never started as a service; the bench runs its own).
/// nginx serves the HTTP benchmark's backends (many workers, keep-alive: the server is not
/// the bottleneck).
const BENCH_TOOLS: &[(&str, &str)] = &[
    ("wrk", "wrk"),
    ("haproxy", "haproxy"),
    ("nginx", "nginx-light"),
];
/// Python modules (for the system python) that the metrics tests validate output with:
/// the Prometheus text parser. (The EMF schema check is the `jsonschema` crate.)
const TEST_PYTHON_PACKAGES: &[&str] = &["python3-prometheus-client"];

pub fn ensure(verbosity: Verbosity) -> Result<Toolchain> {
    let report = Report { verbosity };
    let mut apt = Apt::default();
    let compiler = ensure_compiler(&report, &mut apt)?;
    let (linker_bin, linker) = ensure_linker(&report, &mut apt)?;
    ensure_test_tools(&report, &mut apt)?;
    let bpffs = ensure_bpffs(&report)?;
    if verbosity == Verbosity::Summary {
        println!(
            "setup: ok ({}; {linker}; test tools; {bpffs})",
            compiler.describe()
        );
    }
    Ok(Toolchain {
        compiler,
        linker_bin,
    })
}

struct Report {
    verbosity: Verbosity,
}

impl Report {
    /// A step that found what it needs.
    fn ok(&self, step: &str, detail: &str) {
        if self.verbosity == Verbosity::Steps {
            println!("setup: {step}: {detail} … ok");
        }
    }

    /// A step that is about to change the machine (always shown).
    fn act(&self, step: &str, detail: &str, doing: &str) {
        println!("setup: {step}: {detail} … {doing}");
    }

    /// The end of a step that acted (always shown).
    fn done(&self, step: &str, detail: &str) {
        println!("setup: {step}: {detail} … ok");
    }

    /// A step that could not run here; not fatal for every subcommand.
    fn skipped(&self, step: &str, detail: &str, why: &str) {
        println!("setup: {step}: {detail} … skipped ({why})");
    }
}

fn ensure_compiler(report: &Report, apt: &mut Apt) -> Result<Compiler> {
    const STEP: &str = "bpf compiler";
    let debian = toolchain::detect_debian();
    let nightly = match &debian {
        Ok(_) => None,
        Err(_) => Some(toolchain::detect_rustup_nightly()),
    };
    match (debian, nightly) {
        (Ok(compiler), _) | (Err(_), Some(Ok(compiler))) => {
            report.ok(STEP, &compiler.describe());
            Ok(compiler)
        }
        (Err(debian_why), nightly) => {
            let nightly_why = match nightly {
                Some(Err(why)) => why,
                _ => String::from("not checked"),
            };
            let detail = format!(
                "debian rustc-web ({})",
                toolchain::DEBIAN_PACKAGES.join(" ")
            );
            report.act(STEP, &detail, "installing");
            apt.install(toolchain::DEBIAN_PACKAGES)
                .context("could not install the Debian BPF compiler")?;
            match toolchain::detect_debian() {
                Ok(compiler) => {
                    report.done(STEP, &compiler.describe());
                    Ok(compiler)
                }
                Err(why) => bail!(
                    "no usable BPF compiler. debian: {debian_why}; after installing it: {why}. \
                     rustup-nightly: {nightly_why}"
                ),
            }
        }
    }
}

/// Returns the directory holding bpf-linker and its version line.
fn ensure_linker(report: &Report, apt: &mut Apt) -> Result<(PathBuf, String)> {
    const STEP: &str = "bpf-linker";
    let dir = toolchain::dir()?;
    let bin = toolchain::bin_dir(&dir);
    if let Some(version) = toolchain::linker_version(&dir) {
        report.ok(STEP, &format!("{version} in {}", bin.display()));
        return Ok((bin, version));
    }
    let missing = apt.missing(toolchain::LINKER_BUILD_PACKAGES);
    if !missing.is_empty() {
        let detail = format!("LLVM 22 development files ({})", missing.join(" "));
        report.act(STEP, &detail, "installing");
        apt.install(&missing)
            .context("could not install what bpf-linker builds against")?;
    }
    let detail = format!(
        "bpf-linker {} into {} (about a minute)",
        toolchain::LINKER_VERSION,
        bin.display()
    );
    report.act(STEP, &detail, "installing");
    toolchain::install_linker(&dir)?;
    let version = toolchain::linker_version(&dir)
        .with_context(|| format!("bpf-linker in {} does not run", bin.display()))?;
    report.done(STEP, &format!("{version} in {}", bin.display()));
    Ok((bin, version))
}

fn ensure_test_tools(report: &Report, apt: &mut Apt) -> Result<()> {
    const STEP: &str = "test tools";
    let names: Vec<&str> = TEST_TOOLS
        .iter()
        .map(|(command, _)| *command)
        .chain(TEST_PYTHON_PACKAGES.iter().copied())
        .collect();
    let detail = names.join(", ");
    let mut missing = missing_packages(TEST_TOOLS);
    missing.extend(apt.missing(TEST_PYTHON_PACKAGES));
    if missing.is_empty() {
        report.ok(STEP, &detail);
        return Ok(());
    }
    report.act(STEP, &detail, &format!("installing {}", missing.join(" ")));
    apt.install(&missing)
        .context("could not install the test tools")?;
    ensure_present(TEST_TOOLS)?;
    if let Some(package) = apt.missing(TEST_PYTHON_PACKAGES).first() {
        bail!("{package} is still not installed after installing it");
    }
    report.done(STEP, &detail);
    Ok(())
}

/// Installs the benchmark-only tools; called by `cargo xtask bench`, not by every command.
pub fn ensure_bench_tools() -> Result<()> {
    let missing = missing_packages(BENCH_TOOLS);
    if missing.is_empty() {
        return Ok(());
    }
    println!("setup: bench tools: installing {}", missing.join(" "));
    Apt::default()
        .install(&missing)
        .context("could not install the benchmark tools")?;
    ensure_present(BENCH_TOOLS)
}

/// The packages of the `(command, package)` pairs whose command is not on PATH.
fn missing_packages<'a>(tools: &[(&str, &'a str)]) -> Vec<&'a str> {
    tools
        .iter()
        .filter(|(command, _)| process::which(command).is_none())
        .map(|(_, package)| *package)
        .collect()
}

/// Fails naming the first command still missing after its package was installed.
fn ensure_present(tools: &[(&str, &str)]) -> Result<()> {
    if let Some((command, package)) = tools
        .iter()
        .find(|(command, _)| process::which(command).is_none())
    {
        bail!("`{command}` is still missing after installing {package}");
    }
    Ok(())
}

/// Mounts bpffs (pinning needs it and this kernel does not mount it at boot). Returns a
/// word for the summary line.
fn ensure_bpffs(report: &Report) -> Result<&'static str> {
    const STEP: &str = "bpffs";
    if bpffs_mounted()? {
        report.ok(STEP, BPFFS);
        return Ok("bpffs");
    }
    if !privilege::is_root() {
        report.skipped(STEP, BPFFS, "not mounted; mounting needs root");
        return Ok("bpffs not mounted");
    }
    report.act(STEP, BPFFS, "mounting");
    fs::create_dir_all(BPFFS).with_context(|| format!("could not create {BPFFS}"))?;
    process::output(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))
        .context("could not mount bpffs")?;
    report.done(STEP, BPFFS);
    Ok("bpffs")
}

fn bpffs_mounted() -> Result<bool> {
    let mounts = fs::read_to_string("/proc/mounts").context("could not read /proc/mounts")?;
    Ok(mounts.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some(BPFFS) && fields.next() == Some("bpf")
    }))
}
