//! `cargo xtask bench [--quick] [--only SECTION,...]`: the benchmark suite (issue 7).
//!
//! Runs each section of `lb_tests::bench` in turn (each measures its own baseline in the
//! same run, so figures are read as ratios), then writes `target/bench/results.json`
//! and `target/bench/report.md` with SVG charts beside it. With `--only`, the named
//! sections replace theirs in an existing results.json and the others are kept, each
//! stamped with when it ran. A benchmark, not a test: nothing here asserts a speed, and
//! a section that fails is reported and leaves the others standing.

use std::{path::PathBuf, time::Instant};

use anyhow::Context as _;
use lb_tests::bench::{self, report, SECTIONS};
use serde_json::{json, Map, Value};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .map(|i| {
            args.get(i + 1)
                .map(|s| s.split(',').map(str::to_owned).collect())
                .context("--only needs a comma-separated list of sections")
        })
        .transpose()?;
    let selected: Vec<(&str, &str)> = match &only {
        None => SECTIONS.to_vec(),
        Some(names) => {
            for n in names {
                if !SECTIONS.iter().any(|(s, _)| s == n) {
                    anyhow::bail!("no benchmark section `{n}`; sections: {}", bench::names());
                }
            }
            SECTIONS
                .iter()
                .copied()
                .filter(|(s, _)| names.iter().any(|n| n == s))
                .collect()
        }
    };

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).context("creating target/bench")?;
    let results_path = dir.join("results.json");
    // Keep the sections not run this time (only with --only).
    let mut results: Map<String, Value> = if only.is_some() {
        std::fs::read_to_string(&results_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    } else {
        Map::new()
    };
    results.insert(
        "machine".into(),
        json!({"cpus": num_cpus(), "kernel": kernel(), "cpu_model": cpu_model()}),
    );

    println!(
        "lb bench ({}): {} on {} CPUs ({}), kernel {}",
        if quick { "quick" } else { "full" },
        selected
            .iter()
            .map(|(s, _)| *s)
            .collect::<Vec<_>>()
            .join(", "),
        num_cpus(),
        cpu_model(),
        kernel()
    );
    let suite = Instant::now();
    let mut failed = Vec::new();
    for (name, key) in &selected {
        let started = Instant::now();
        println!("==> {name}");
        let progress = |line: &str| println!("  {name}: {line}");
        match bench::run_section(name, quick, &progress) {
            Ok(Value::Object(mut section)) => {
                let detail = section.remove("detail");
                results.insert((*key).into(), Value::Object(section));
                let details = results
                    .entry("details")
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .context("results.json: `details` is not an object")?;
                match detail {
                    Some(d) => details.insert((*name).into(), d),
                    None => details.remove(*name),
                };
                stamp(&mut results, name, quick, started.elapsed().as_secs_f64())?;
                println!(
                    "==> {name}: done in {:.1}s",
                    started.elapsed().as_secs_f64()
                );
            }
            Ok(other) => {
                failed.push(format!("{name}: returned {other} instead of an object"));
            }
            Err(e) => {
                println!("==> {name}: FAILED: {e:#}");
                failed.push(format!("{name}: {e:#}"));
            }
        }
    }

    let text = serde_json::to_string_pretty(&Value::Object(results.clone()))?;
    std::fs::write(&results_path, text + "\n").context("writing results.json")?;
    let report_path = report::write(&dir, &results)?;
    println!(
        "lb bench: wrote {} and {} in {:.0}s",
        results_path.display(),
        report_path.display(),
        suite.elapsed().as_secs_f64()
    );
    println!("{}", report::summary(&results));
    if !failed.is_empty() {
        anyhow::bail!(
            "{} section(s) failed:\n  {}",
            failed.len(),
            failed.join("\n  ")
        );
    }
    Ok(())
}

/// Records when and how a section ran, so a results.json merged from `--only` runs says
/// which figures came from which run.
fn stamp(
    results: &mut Map<String, Value>,
    name: &str,
    quick: bool,
    seconds: f64,
) -> anyhow::Result<()> {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    results
        .entry("runs")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .context("results.json: `runs` is not an object")?
        .insert(
            name.into(),
            json!({"unix_time": unix, "quick": quick, "seconds": (seconds * 10.0).round() / 10.0}),
        );
    Ok(())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(0, usize::from)
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
