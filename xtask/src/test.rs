//! `test`: everything CI runs, in the order that fails fastest: build the eBPF object
//! (and the upgrade test's variant of it, and the benchmark object the bench smoke test
//! loads), lint, then the unit and integration tests (as
//! root: they load XDP programs and create network namespaces). Ends with one
//! `tests: N passed, M failed` line totalling every test binary, so a reader (or CI) sees
//! the whole suite's result in one place.

use std::{
    ffi::OsString,
    io::{BufRead as _, BufReader, Write as _},
    path::PathBuf,
    process::Stdio,
};

use anyhow::{bail, Context as _, Result};

use crate::{build, cargo, lint, phase, process, setup, setup::Toolchain};

/// Names the upgrade variant's object to the tests (tests/tests/e2e_upgrade.rs).
const UPGRADE_OBJECT_VAR: &str = "LB_TEST_UPGRADE_OBJECT";

/// What `cargo test` runs unless the caller picks packages: every crate but lb-ebpf (it
/// only builds for BPF). Not the default members, which leave out lb-tests so that a
/// plain `cargo test` creates no network namespaces.
const ALL_HOST_PACKAGES: [&str; 3] = ["--workspace", "--exclude", "lb-ebpf"];

/// With every package: lb-agent's unit tests that need root run too (a plain `cargo test`
/// lists them as ignored).
const PRIVILEGED_TESTS: [&str; 2] = ["--features", "lb-agent/privileged-tests"];

pub fn run(no_lint: bool, cargo_args: &[OsString]) -> Result<()> {
    let toolchain = phase::run("setup", || setup::ensure(setup::Verbosity::Summary))?;
    let (object, upgrade, bench) = phase::run("build", || {
        Ok((
            build::ebpf_object(&toolchain)?,
            upgrade_object(&toolchain)?,
            build::bench_object(&toolchain)?,
        ))
    })?;
    if !no_lint {
        phase::run("lint", || lint::run(&object))?;
    }
    phase::run("unit and integration tests", || {
        let root = build::workspace_root()?;
        // The end-to-end tests run the real lb-agent binary; `cargo test` does not build
        // another package's binaries, so build it (same profile) first.
        let mut agent = cargo::host(&root, Some(&object));
        agent.args(["build", "-p", "lb-agent", "--bins"]);
        process::run(&mut agent).context("building lb-agent for the end-to-end tests")?;
        let mut cmd = cargo::host(&root, Some(&object));
        cmd.arg("test");
        if !selects_packages(cargo_args) {
            cmd.args(ALL_HOST_PACKAGES).args(PRIVILEGED_TESTS);
        }
        cmd.args(cargo_args)
            .env(UPGRADE_OBJECT_VAR, &upgrade)
            .env(build::BENCH_OBJECT_VAR, &bench);
        run_and_total(&mut cmd)
    })
}

/// Builds lb-ebpf with the `upgrade-variant` feature: the same data plane with different
/// instructions, which the upgrade test swaps in under load as a new release would be.
fn upgrade_object(toolchain: &Toolchain) -> Result<PathBuf> {
    build::feature_object(
        toolchain,
        "bpf-upgrade",
        &["upgrade-variant"],
        "upgrade-variant (for the upgrade test)",
    )
}

/// Whether cargo's own arguments (those before a `--`) already choose packages. Ours must
/// then stay out: cargo silently lets `--workspace` override `-p`, so adding it would run
/// the whole suite instead of the package the caller named.
fn selects_packages(cargo_args: &[OsString]) -> bool {
    cargo_args
        .iter()
        .take_while(|arg| arg.as_os_str() != "--")
        .filter_map(|arg| arg.to_str())
        .any(|arg| {
            matches!(arg, "-p" | "--package" | "--workspace" | "--all")
                || arg.starts_with("--package=")
                // `-plb-tests`: cargo's short option with its value attached.
                || (arg.starts_with("-p") && !arg.starts_with("--"))
        })
}

/// Runs `cargo test`, echoing its output as it comes, and totals its `test result:` lines.
fn run_and_total(cmd: &mut std::process::Command) -> Result<()> {
    cmd.stdout(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", process::display(cmd)))?;
    let stdout = child
        .stdout
        .take()
        .context("cargo test stdout was not piped")?;
    let mut total = Totals::default();
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        total.add(&line);
        writeln!(out, "{line}").context("writing to stdout")?;
    }
    let status = child.wait().context("waiting for cargo test")?;
    writeln!(
        out,
        "\ntests: {} passed, {} failed, {} skipped",
        total.passed, total.failed, total.ignored
    )
    .context("writing to stdout")?;
    if !status.success() {
        bail!("tests failed ({status})");
    }
    if total.passed == 0 {
        bail!("cargo test ran no test");
    }
    Ok(())
}

#[derive(Default, Debug, PartialEq)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    /// Adds one `test result: ok. 3 passed; 0 failed; 1 ignored; …` line; ignores others.
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cargo_options_before_the_separator_choose_packages() {
        let picks =
            |args: &[&str]| selects_packages(&args.iter().map(OsString::from).collect::<Vec<_>>());
        assert!(!picks(&[]));
        assert!(!picks(&["--release", "--", "--nocapture"]));
        assert!(!picks(&["--", "-p"]));
        assert!(picks(&["-p", "lb-tests", "--", "--nocapture"]));
        assert!(picks(&["-plb-tests"]));
        assert!(picks(&["--package", "lb-agent"]));
        assert!(picks(&["--package=lb-agent"]));
        assert!(picks(&["--workspace"]));
    }

    #[test]
    fn totals_sum_cargo_result_lines() {
        let mut t = Totals::default();
        t.add("test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.1s");
        t.add("test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out");
        t.add("running 3 tests");
        t.add("test foo ... ok");
        assert_eq!(
            t,
            Totals {
                passed: 4,
                failed: 2,
                ignored: 1
            }
        );
    }
}
