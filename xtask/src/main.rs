//! `cargo xtask`: lb's developer tasks, so that building and testing an eBPF project
//! needs nothing but `cargo xtask <task>` on a fresh Debian machine.
//!
//! Every task first runs setup's checks (installing what is missing), then does its job.
//! `test`, `demo` and `build-and-load` need root and re-run themselves under sudo.

mod apt;
mod build;
mod cargo;
mod demo;
mod lint;
mod load;
mod phase;
mod privilege;
mod process;
mod setup;
mod test;
mod toolchain;

use std::{ffi::OsString, process::ExitCode};

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::build::Profile;

/// lb's developer tasks.
#[derive(Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install and check the BPF toolchain, bpf-linker, test tools and bpffs.
    Setup,
    /// Build the eBPF object, then lb-agent with it embedded.
    Build {
        /// Build lb-agent with the dev profile (the eBPF object is always release).
        #[arg(long)]
        debug: bool,
    },
    /// Build, then run lb-agent on an interface until Ctrl-C (as root).
    BuildAndLoad {
        /// Interface to attach the data plane to.
        #[arg(long)]
        iface: String,
        /// Agent configuration file (see examples/lb.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
        /// Attach in generic (skb) mode: slow, for testing only.
        #[arg(long)]
        generic: bool,
        /// Leave the program attached and its maps pinned after the agent exits.
        #[arg(long)]
        pin: bool,
        /// Build lb-agent with the dev profile.
        #[arg(long)]
        debug: bool,
    },
    /// rustfmt and clippy (warnings are errors) over all crates.
    Lint,
    /// Build, lint, and run the unit and integration tests (as root).
    Test {
        /// Skip the lint phase.
        #[arg(long)]
        no_lint: bool,
        /// Passed on to `cargo test`, e.g. `-- -p lb-tests -- --nocapture`.
        #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
        cargo_args: Vec<OsString>,
    },
    /// Build, then run the namespace demo (as root).
    Demo {
        /// Leave the demo's namespaces in place afterwards.
        #[arg(long)]
        keep: bool,
        /// The fleet demo instead: a BGP router with ECMP in front of three lb hosts
        /// (lb-agent and BIRD 2 each), one of which fails under traffic.
        #[arg(long)]
        fleet: bool,
    },
    /// Build, then run the benchmark suite (as root): results.json, report.md and charts
    /// in target/bench/.
    Bench {
        /// Fewer repetitions and shorter windows (under 3 minutes): a quick look, not
        /// figures to quote.
        #[arg(long)]
        quick: bool,
        /// Run only these sections (comma-separated: dataplane, maglev, control, memory,
        /// e2e, http, fleet); the others keep their figures in target/bench/results.json.
        #[arg(long, value_name = "SECTIONS")]
        only: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<()> {
    if std::env::var_os(cargo::OBJECT_VAR).is_some() {
        eprintln!(
            "xtask: warning: ignoring {} from the environment; xtask always builds the \
             object from source",
            cargo::OBJECT_VAR
        );
    }
    let profile = |debug: bool| {
        if debug {
            Profile::Debug
        } else {
            Profile::Release
        }
    };
    match task {
        Task::Setup => setup::ensure(setup::Verbosity::Steps).map(drop),
        Task::Build { debug } => {
            let toolchain = setup::ensure(setup::Verbosity::Summary)?;
            build::all(&toolchain, profile(debug)).map(drop)
        }
        Task::BuildAndLoad {
            iface,
            config,
            generic,
            pin,
            debug,
        } => {
            privilege::ensure_root("build-and-load")?;
            load::run(load::Options {
                iface,
                config,
                generic,
                pin,
                profile: profile(debug),
            })
        }
        Task::Lint => {
            let toolchain = setup::ensure(setup::Verbosity::Summary)?;
            let object = build::ebpf_object(&toolchain)?;
            lint::run(&object)
        }
        Task::Test {
            no_lint,
            cargo_args,
        } => {
            privilege::ensure_root("test")?;
            test::run(no_lint, &cargo_args)
        }
        Task::Demo { keep, fleet } => {
            privilege::ensure_root("demo")?;
            let bin = if fleet { "lb-demo-fleet" } else { "lb-demo" };
            demo::run_tests_binary(bin, if keep { &["--keep"] } else { &[] }, false)
        }
        Task::Bench { quick, only } => {
            privilege::ensure_root("bench")?;
            setup::ensure_bench_tools()?;
            let mut args = Vec::new();
            if quick {
                args.push("--quick");
            }
            if let Some(only) = &only {
                args.extend(["--only", only.as_str()]);
            }
            demo::run_tests_binary("lb-bench", &args, true)
        }
    }
}
