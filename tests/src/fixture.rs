//! Packet fixtures run through the production XDP program with `BPF_PROG_TEST_RUN`.
//!
//! A fixture is data: a name, input bytes, the verdict and output bytes it must produce.
//! The runner loads the same object and goes through the same `Dataplane` code the agent
//! uses, and reports every mismatch with decoded headers and a hex diff, so a failure
//! says what went wrong without rerunning anything by hand.

use lb_agent::dataplane::Dataplane;
use lb_common::Verdict;

use crate::packet::describe;

/// What the program must leave in the buffer.
#[derive(Clone, Debug)]
pub enum Output {
    /// The input, byte for byte (every `XDP_PASS` and `XDP_DROP`).
    Unchanged,
    /// Exactly these bytes (rewritten or encapsulated packets).
    Bytes(Vec<u8>),
}

#[derive(Clone, Debug)]
pub struct Fixture {
    pub name: String,
    pub input: Vec<u8>,
    pub verdict: Verdict,
    pub output: Output,
}

impl Fixture {
    /// A fixture the program must pass to the kernel untouched.
    pub fn pass(name: impl Into<String>, input: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            input,
            verdict: Verdict::Pass,
            output: Output::Unchanged,
        }
    }
}

/// Room for the program to grow a frame (encapsulation) in test runs.
pub const HEADROOM: usize = 256;

/// Runs every fixture once and returns a readable report per failure (empty: all passed).
pub fn run_all(dp: &Dataplane, fixtures: &[Fixture]) -> Vec<String> {
    run_all_on(dp, fixtures, None)
}

/// [`run_all`] as if every frame arrived on interface `ingress_ifindex` of the calling
/// thread's network namespace (for fixtures whose forwarding needs the FIB).
pub fn run_all_on(
    dp: &Dataplane,
    fixtures: &[Fixture],
    ingress_ifindex: Option<u32>,
) -> Vec<String> {
    fixtures
        .iter()
        .filter_map(|f| check(dp, f, ingress_ifindex).err())
        .collect()
}

fn check(dp: &Dataplane, f: &Fixture, ingress_ifindex: Option<u32>) -> Result<(), String> {
    let got = dp
        .test_run(&f.input, 1, HEADROOM, ingress_ifindex)
        .map_err(|e| format!("[{}] test run failed: {e}", f.name))?;
    let verdict = Verdict::from_u32(got.return_value);
    let expected = match &f.output {
        Output::Unchanged => &f.input,
        Output::Bytes(b) => b,
    };
    if verdict == Some(f.verdict) && got.output == *expected {
        return Ok(());
    }
    let mut report = format!("[{}]", f.name);
    if verdict != Some(f.verdict) {
        report.push_str(&format!(
            "\n  verdict: expected {}, got {}",
            f.verdict.name(),
            verdict.map_or_else(
                || format!("unknown {}", got.return_value),
                |v| v.name().into()
            )
        ));
    }
    if got.output != *expected {
        report.push_str(&bytes_diff(expected, &got.output));
    }
    Err(report)
}

/// Decoded headers of both frames, then a hex window around the first differing byte.
pub fn bytes_diff(expected: &[u8], actual: &[u8]) -> String {
    let first = expected
        .iter()
        .zip(actual)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(actual.len()));
    let lo = first.saturating_sub(8) & !7;
    let window = |b: &[u8]| -> String {
        b.iter()
            .enumerate()
            .skip(lo)
            .take(32)
            .map(|(i, x)| {
                if i == first {
                    format!("[{x:02x}]")
                } else {
                    format!("{x:02x}")
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "\n  output differs first at byte {first} (expected {} bytes, got {})\
         \n  expected: {}\n  actual:   {}\
         \n  expected @{lo}: {}\n  actual   @{lo}: {}",
        expected.len(),
        actual.len(),
        describe(expected).replace('\n', "\n    "),
        describe(actual).replace('\n', "\n    "),
        window(expected),
        window(actual),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_points_at_first_difference() {
        let a = vec![0u8; 40];
        let mut b = a.clone();
        b[21] = 0xab;
        let d = bytes_diff(&a, &b);
        assert!(d.contains("first at byte 21"), "{d}");
        assert!(d.contains("[ab]"), "{d}");
        assert!(d.contains("[00]"), "{d}");
    }

    #[test]
    fn diff_reports_length_change() {
        let d = bytes_diff(&[1, 2, 3], &[1, 2, 3, 4]);
        assert!(d.contains("first at byte 3"), "{d}");
        assert!(d.contains("expected 3 bytes, got 4"), "{d}");
    }
}
