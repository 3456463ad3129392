//! Headers for the phases of a long subcommand, so a log shows where it failed; under CI
//! (CI=true) each phase also reports how long it took.

use std::time::Instant;

use anyhow::Result;

pub fn run<T>(name: &str, body: impl FnOnce() -> Result<T>) -> Result<T> {
    println!("==> {name}");
    let start = Instant::now();
    let result = body();
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        let outcome = if result.is_ok() { "done" } else { "failed" };
        println!(
            "==> {name}: {outcome} in {:.1}s",
            start.elapsed().as_secs_f64()
        );
    }
    result
}
