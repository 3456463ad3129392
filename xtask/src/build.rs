//! `build`: the eBPF object first, then the agent that embeds it.
//!
//! The order matters: lb-agent's build script embeds the file named by LB_EBPF_OBJECT,
//! so the agent can only be built after the object, and always from the object this run
//! just built (a value preset in the environment is ignored).

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::{cargo, process, setup::Toolchain, toolchain};

/// What `build` produces.
pub struct Artifacts {
    pub object: PathBuf,
    pub agent: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

/// The workspace root: xtask's parent directory.
pub fn workspace_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("xtask's manifest directory has no parent"))
}

/// Builds the object and the agent; returns both paths.
pub fn all(toolchain: &Toolchain, profile: Profile) -> Result<Artifacts> {
    let object = ebpf_object(toolchain)?;
    let agent = agent(&object, profile)?;
    Ok(Artifacts { object, agent })
}

/// Builds lb-ebpf for the BPF target (always the release profile: the verifier needs the
/// optimiser) and returns the object's absolute path.
pub fn ebpf_object(toolchain: &Toolchain) -> Result<PathBuf> {
    let root = workspace_root()?;
    let target_dir = root.join("target").join("bpf");
    println!("build: ebpf object with {}", toolchain.compiler.describe());
    process::run(&mut cargo::bpf_build(&root, toolchain, &target_dir))
        .context("could not build the eBPF object (lb-ebpf)")?;
    let object = target_dir
        .join(toolchain::BPF_TARGET)
        .join("release")
        .join("lb");
    let size = fs::metadata(&object)
        .with_context(|| format!("the BPF build did not produce {}", object.display()))?
        .len();
    println!("build: ebpf object → {} ({size} bytes)", object.display());
    Ok(object)
}

/// Names the benchmark object (lb-ebpf with the `bench` feature) to lb-tests: the
/// end-to-end rate benchmark (tests/src/bench/e2e_rate.rs) and its smoke test load their
/// generator, forwarding-ceiling and sink programs from it.
pub const BENCH_OBJECT_VAR: &str = "LB_BENCH_OBJECT";

/// Builds lb-ebpf with the `bench` feature into target/bpf-bench: the production data
/// plane plus the benchmark-only programs of `lb-ebpf/src/bench_fwd.rs`. The agent never
/// embeds it (see lb-ebpf's Cargo.toml).
pub fn bench_object(toolchain: &Toolchain) -> Result<PathBuf> {
    feature_object(toolchain, "bpf-bench", &["bench"], "bench")
}

/// Builds lb-ebpf with `features` into `target/<dir>` (its own directory: see
/// `cargo::bpf_build_with_features`) and returns the object's path. `what` names the
/// object in messages. From a cold cache each directory adds the eBPF dependencies once
/// (about 26 s on a 2-CPU test VM), after a change to lb-ebpf the crate itself (about
/// 9 s), and otherwise only cargo's up-to-date check.
pub fn feature_object(
    toolchain: &Toolchain,
    dir: &str,
    features: &[&str],
    what: &str,
) -> Result<PathBuf> {
    let root = workspace_root()?;
    let target_dir = root.join("target").join(dir);
    println!(
        "build: {what} ebpf object (features: {})",
        features.join(",")
    );
    let mut cmd = cargo::bpf_build_with_features(&root, toolchain, &target_dir, features);
    process::run(&mut cmd).with_context(|| format!("could not build the {what} eBPF object"))?;
    let object = target_dir
        .join(toolchain::BPF_TARGET)
        .join("release")
        .join("lb");
    fs::metadata(&object)
        .with_context(|| format!("the BPF build did not produce {}", object.display()))?;
    println!("build: {what} ebpf object → {}", object.display());
    Ok(object)
}

/// Builds lb-agent with `object` embedded and returns the binary's path (from cargo's
/// own report, so a user's CARGO_TARGET_DIR is honoured).
pub fn agent(object: &Path, profile: Profile) -> Result<PathBuf> {
    let root = workspace_root()?;
    let mut cmd = cargo::host(&root, Some(object));
    cmd.args([
        "build",
        "-p",
        "lb-agent",
        "--bin",
        "lb-agent",
        "--message-format=json-render-diagnostics",
    ]);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    let messages = process::stdout_only(&mut cmd).context("could not build lb-agent")?;
    let agent = agent_executable(&messages)?;
    println!("build: lb-agent → {}", agent.display());
    Ok(agent)
}

/// Finds the lb-agent executable in cargo's JSON messages.
fn agent_executable(messages: &str) -> Result<PathBuf> {
    for line in messages.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_agent = message["reason"] == "compiler-artifact"
            && message["target"]["name"] == "lb-agent"
            && message["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|kind| kind == "bin"));
        if let (true, Some(executable)) = (is_agent, message["executable"].as_str()) {
            return Ok(PathBuf::from(executable));
        }
    }
    bail!("cargo built lb-agent but did not report its executable")
}
