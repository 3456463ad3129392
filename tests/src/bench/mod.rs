//! `cargo xtask bench` (issue 7): one module per section of `target/bench/results.json`.
//! Each section's `run(quick, progress)` builds what it needs, measures its own baseline
//! in the same run, tears everything down and returns its figures as a JSON object whose
//! fields are the section's keys in results.json (extra fields are details). Nothing
//! here asserts a speed: `tests/tests/bench_smoke.rs` only checks that a harness works.

pub mod control;
pub mod dataplane;
pub mod e2e_rate;
pub mod fleet;
pub mod http;
pub mod maglev;
pub mod memory;
pub mod report;

/// How a section reports progress: one line per step, shown as it goes.
pub type Progress<'a> = &'a dyn Fn(&str);

/// The sections in the order `cargo xtask bench` runs them, with the results.json key
/// each one fills.
pub const SECTIONS: &[(&str, &str)] = &[
    ("dataplane", "dataplane_ns"),
    ("maglev", "maglev"),
    ("control", "control"),
    ("memory", "memory"),
    ("e2e", "e2e_mpps"),
    ("http", "http"),
    ("fleet", "fleet"),
];

/// The section names, comma-separated (for messages).
pub fn names() -> String {
    SECTIONS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs one section by name.
pub fn run_section(
    name: &str,
    quick: bool,
    progress: Progress<'_>,
) -> anyhow::Result<serde_json::Value> {
    match name {
        "dataplane" => dataplane::run(quick, progress),
        "maglev" => maglev::run(quick, progress),
        "control" => control::run(quick, progress),
        "memory" => memory::run(quick, progress),
        "e2e" => {
            let rates = e2e_rate::run(quick, progress)?;
            Ok(serde_json::to_value(rates)?)
        }
        "http" => http::run(quick, progress),
        "fleet" => fleet::run(quick, progress),
        other => anyhow::bail!("no benchmark section `{other}`; sections: {}", names()),
    }
}

/// Sorts a sample and returns its median (NaN-safe: NaNs sort last).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
