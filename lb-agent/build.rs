//! Embeds the eBPF object into the agent so one binary is all an operator deploys.
//!
//! `cargo xtask build` compiles the object with the BPF toolchain first and points
//! `LB_EBPF_OBJECT` at it. A plain `cargo build` (an editor, `cargo clippy`) still works:
//! it embeds the object from its default location if present, and otherwise builds an
//! agent that refuses to start without `--bpf-object`, saying how to build one.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(lb_embedded_object)");
    println!("cargo:rerun-if-env-changed=LB_EBPF_OBJECT");

    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let object = env::var_os("LB_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target/bpf/bpfel-unknown-none/release/lb"));
    // A missing path makes cargo rerun this script on every build, so the object is
    // picked up as soon as it exists.
    println!("cargo:rerun-if-changed={}", object.display());

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("lb.bpf.o");
    match fs::read(&object) {
        Ok(bytes) => {
            fs::write(&out, bytes).expect("write embedded object to OUT_DIR");
            println!("cargo:rustc-cfg=lb_embedded_object");
        }
        Err(_) => {
            if env::var_os("LB_EBPF_OBJECT").is_some() {
                panic!("LB_EBPF_OBJECT={} cannot be read", object.display());
            }
            println!(
                "cargo:warning=no eBPF object at {}: this lb-agent needs --bpf-object (run `cargo xtask build`)",
                object.display()
            );
        }
    }
}
