//! Running `wrk` and reading its report: requests/s, the latency percentiles of
//! `--latency`, and every error count it prints.

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use serde::Serialize;

use crate::netns::Ns;

/// The load `wrk` applies; the same for every system.
#[derive(Clone, Debug, Serialize)]
pub struct Load {
    /// wrk threads (`-t`): one per CPU of this machine's client side.
    pub threads: u32,
    /// Open connections, shared by the threads (`-c`), each kept alive by HTTP/1.1.
    pub connections: u32,
    /// Seconds per measured run (`-d`).
    pub seconds: u32,
    /// A request unanswered after this long counts as a timeout (`--timeout`).
    pub timeout_secs: u32,
}

impl Load {
    /// The argument list after `wrk`.
    pub fn args(&self, seconds: u32, url: &str) -> Vec<String> {
        vec![
            format!("-t{}", self.threads),
            format!("-c{}", self.connections),
            format!("-d{seconds}s"),
            format!("--timeout={}s", self.timeout_secs),
            "--latency".into(),
            url.into(),
        ]
    }
}

/// What one wrk run reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub rps: f64,
    pub p50_ms: f64,
    pub p75_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    /// Responses received in the run (`N requests in …`) and the run's measured length.
    pub requests: u64,
    pub seconds: f64,
    /// `Socket errors:` counts (zero when wrk printed no such line).
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub timeouts: u64,
    /// `Non-2xx or 3xx responses:`.
    pub non_2xx: u64,
}

impl Report {
    /// Everything that went wrong, in one number.
    pub fn errors(&self) -> u64 {
        self.connect_errors + self.read_errors + self.write_errors + self.timeouts + self.non_2xx
    }
}

/// Runs `wrk` in `ns` against `url` for `seconds` and parses its report. A hard limit
/// (coreutils `timeout`, SIGKILL a little after) bounds it even if wrk never returns.
pub fn run(ns: &Ns, load: &Load, seconds: u32, url: &str) -> Result<Report> {
    let limit = Duration::from_secs(u64::from(seconds + load.timeout_secs) + 10);
    let mut args = vec![
        "-k".to_owned(),
        "2".to_owned(),
        format!("{}", limit.as_secs()),
        "wrk".to_owned(),
    ];
    args.extend(load.args(seconds, url));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ns.run_unchecked("timeout", &args)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "wrk {url} failed ({}): {}{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&stdout).with_context(|| format!("reading wrk's report for {url}:\n{stdout}"))
}

/// Parses wrk 4's report (the `--latency` form).
pub fn parse(text: &str) -> Result<Report> {
    let mut r = Report::default();
    let (mut rps, mut p50, mut p99, mut total) = (false, false, false, false);
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => {
                r.rps = v.parse().context("Requests/sec")?;
                rps = true;
            }
            [pct, v] if pct.ends_with('%') => {
                let ms = duration_ms(v)?;
                match *pct {
                    "50%" => (r.p50_ms, p50) = (ms, true),
                    "75%" => r.p75_ms = ms,
                    "90%" => r.p90_ms = ms,
                    "99%" => (r.p99_ms, p99) = (ms, true),
                    _ => {}
                }
            }
            [n, "requests", "in", secs, ..] => {
                r.requests = n.parse().context("request count")?;
                r.seconds = duration_ms(secs.trim_end_matches(','))? / 1e3;
                total = true;
            }
            ["Socket", "errors:", rest @ ..] => {
                // "connect 0, read 0, write 0, timeout 0"
                for pair in rest.join(" ").split(',') {
                    let mut kv = pair.split_whitespace();
                    let (Some(k), Some(v)) = (kv.next(), kv.next()) else {
                        continue;
                    };
                    let v: u64 = v.parse().with_context(|| format!("socket errors {k}"))?;
                    match k {
                        "connect" => r.connect_errors = v,
                        "read" => r.read_errors = v,
                        "write" => r.write_errors = v,
                        "timeout" => r.timeouts = v,
                        _ => {}
                    }
                }
            }
            ["Non-2xx", "or", "3xx", "responses:", v] => {
                r.non_2xx = v.parse().context("non-2xx count")?;
            }
            _ => {}
        }
    }
    ensure!(
        rps && p50 && p99 && total,
        "no Requests/sec, 50%/99% latency or request count line"
    );
    Ok(r)
}

/// A wrk duration (`812.00us`, `1.23ms`, `2.01s`, `1.50m`) in milliseconds.
fn duration_ms(v: &str) -> Result<f64> {
    let split = v
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in {v:?}"))?;
    let (num, unit) = v.split_at(split);
    let num: f64 = num
        .parse()
        .with_context(|| format!("bad number in {v:?}"))?;
    let scale = match unit {
        "us" => 1e-3,
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        _ => anyhow::bail!("unknown unit in {v:?}"),
    };
    // To the nanosecond: wrk prints at most that, and the unit scaling adds float noise.
    Ok((num * scale * 1e6).round() / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 3s test @ http://198.18.11.2:8000/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms    2.00ms  30.00ms   90.00%
    Req/Sec    20.00k     1.00k   25.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    1.50ms
     90%    2.00ms
     99%    1.02s
  120000 requests in 3.00s, 15.00MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 5
Requests/sec:  40000.50
Transfer/sec:      5.00MB
";

    #[test]
    fn parses_a_full_report() -> Result<()> {
        let r = parse(REPORT)?;
        assert_eq!(r.rps, 40000.5);
        assert_eq!(r.p50_ms, 0.812);
        assert_eq!(r.p75_ms, 1.5);
        assert_eq!(r.p90_ms, 2.0);
        assert_eq!(r.p99_ms, 1020.0);
        assert_eq!((r.requests, r.seconds), (120_000, 3.0));
        assert_eq!(
            (r.connect_errors, r.read_errors, r.write_errors, r.timeouts),
            (1, 2, 3, 4)
        );
        assert_eq!(r.non_2xx, 5);
        assert_eq!(r.errors(), 15);
        Ok(())
    }

    #[test]
    fn a_clean_run_has_no_error_lines() -> Result<()> {
        let text: String = REPORT
            .lines()
            .filter(|l| !l.contains("errors") && !l.contains("Non-2xx"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(parse(&text)?.errors(), 0);
        Ok(())
    }

    #[test]
    fn a_truncated_report_is_an_error() {
        assert!(parse("Running 3s test @ http://x/\n").is_err());
    }

    #[test]
    fn units() -> Result<()> {
        assert_eq!(duration_ms("2.00s")?, 2000.0);
        assert_eq!(duration_ms("1.50m")?, 90_000.0);
        assert!(duration_ms("3.0").is_err());
        Ok(())
    }
}
