//! Embeds the eBPF object into the agent so one binary is all an operator deploys.
//!
//! `cargo xtask build` compiles the object with the BPF toolchain first and points
//! `LB_EBPF_OBJECT` at it, which is embedded as is. A plain `cargo build` (an editor,
//! `cargo clippy`, `cargo test`) embeds the object from its default location if present,
//! and otherwise (a fresh clone) builds an agent that refuses to start without
//! `--bpf-object`, saying how to build one.
//!
//! A plain build never embeds a stale object: when a file the object was compiled from is
//! newer than the object, or gone, the build fails naming that file and the fix, `cargo
//! xtask build`. Those files are the ones cargo listed in the object's dep-info (`lb.d`
//! beside it: lb-ebpf's and lb-common's sources that went into it), and "newer" is
//! cargo's own rebuild rule, so the fix always clears the refusal: a file the object does
//! not use (lb-ebpf's bench-only programs, lb-common's user-side code) never trips it,
//! and one it does makes `cargo xtask build` rebuild the object. Edits to Cargo.toml or
//! Cargo.lock are not seen: cargo judges those by content, which this script cannot
//! without building the object. `cargo check` and `cargo clippy` get the same refusal
//! (a build script cannot tell them from a build). Setting `LB_EBPF_OBJECT` skips the
//! check: xtask does so for the object it has just built, and so can anyone embedding an
//! older object on purpose.
use std::{
    env, fs,
    path::{Path, PathBuf},
};

/// Where `cargo xtask build` leaves the object, from the workspace root.
const DEFAULT_OBJECT: &str = "target/bpf/bpfel-unknown-none/release/lb";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(lb_embedded_object)");
    println!("cargo:rerun-if-env-changed=LB_EBPF_OBJECT");

    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .expect("lb-agent sits in the workspace root");
    let named = env::var_os("LB_EBPF_OBJECT").map(PathBuf::from);
    let object = named.clone().unwrap_or_else(|| root.join(DEFAULT_OBJECT));
    // A missing path makes cargo rerun this script on every build, so the object is
    // picked up as soon as it exists.
    println!("cargo:rerun-if-changed={}", object.display());

    let bytes = match fs::read(&object) {
        Ok(bytes) => bytes,
        Err(_) if named.is_some() => {
            panic!("LB_EBPF_OBJECT={} cannot be read", object.display())
        }
        Err(_) => {
            println!(
                "cargo:warning=no eBPF object at {}: this lb-agent needs --bpf-object (run `cargo xtask build`)",
                object.display()
            );
            return;
        }
    };
    if named.is_none() {
        if let Err(stale) = check_fresh(root, &object) {
            println!("cargo::error={stale}");
            return;
        }
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("lb.bpf.o");
    fs::write(&out, bytes).expect("write embedded object to OUT_DIR");
    println!("cargo:rustc-cfg=lb_embedded_object");
}

/// Whether `object` is at least as new as every file its dep-info lists (see the opening
/// comment); otherwise the message to fail with. Asks cargo to rerun this script when
/// any of those files changes.
fn check_fresh(root: &Path, object: &Path) -> Result<(), String> {
    let shown = |path: &Path| {
        path.strip_prefix(root)
            .unwrap_or(path)
            .display()
            .to_string()
    };
    let fix = "run `cargo xtask build`, which rebuilds the object and then the agent with it";
    let dep_info = object.with_extension("d");
    println!("cargo:rerun-if-changed={}", dep_info.display());
    let unknown = |what: &Path, e: std::io::Error| {
        format!(
            "cannot tell whether the eBPF object {} is up to date: {} ({e}); {fix}",
            shown(object),
            shown(what)
        )
    };
    let text = fs::read_to_string(&dep_info).map_err(|e| unknown(&dep_info, e))?;
    let built = fs::metadata(object)
        .and_then(|m| m.modified())
        .map_err(|e| unknown(object, e))?;
    // A relative path (cargo's `dep-info-basedir`) is taken from the workspace root.
    let sources: Vec<PathBuf> = dep_info_sources(&text)
        .into_iter()
        .map(|source| root.join(source))
        .collect();
    for source in &sources {
        println!("cargo:rerun-if-changed={}", source.display());
    }
    for source in &sources {
        let why = match fs::metadata(source).and_then(|m| m.modified()) {
            Ok(modified) if modified <= built => continue,
            Ok(_) => "changed after it was built",
            Err(_) => "is gone",
        };
        return Err(format!(
            "the eBPF object {} is stale: its source {} {why}; {fix}",
            shown(object),
            shown(source)
        ));
    }
    Ok(())
}

/// The files a make-style dep-info file lists (`target: dep dep …`, a space inside a
/// path escaped as `\ `).
fn dep_info_sources(text: &str) -> Vec<PathBuf> {
    let mut sources = Vec::new();
    for line in text.lines() {
        let Some((_, deps)) = line.split_once(": ") else {
            continue;
        };
        let mut path = String::new();
        let mut chars = deps.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => path.extend(chars.next()),
                ' ' if !path.is_empty() => sources.push(PathBuf::from(std::mem::take(&mut path))),
                ' ' => {}
                c => path.push(c),
            }
        }
        if !path.is_empty() {
            sources.push(PathBuf::from(path));
        }
    }
    sources
}
