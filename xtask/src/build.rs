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
