//! Benchmark section `maglev`: the agent's Maglev builder (`lb_agent::maglev`) on its own,
//! with the data plane's default table size M = 65537 and equal weights.
//!
//! - **Build time** (`build_ms_n100`, `build_ms_n1000`): wall time of one
//!   [`maglev::build`] call for N backends, the median of several builds (this binary is
//!   built with `--release`, as the agent is). Only the builder: the data-plane write of
//!   a ring is part of `control.apply_1000_ms`.
//! - **Disruption** (`<change>_moved_pct_n<N>`, `<change>_min_pct_n<N>`): the percentage
//!   of the table's slots whose backend changes when the backend set changes, next to the
//!   theoretical minimum any table must move ([`maglev::min_moved_fraction`]: the removed
//!   backends' share for a removal, the newcomer's share for an addition). The difference
//!   is Maglev's collateral movement (also given as `<change>_collateral_pct_n<N>`).
//!   Changes: `remove1` (one backend removed), `add1` (one backend added), `remove10pct`
//!   (a tenth of the backends removed at once). Each figure is the mean over several
//!   trials (different backends removed or added, spread over the set); `detail` has the
//!   spread.
//!
//! Backends are keyed as the agent keys them (the target address as text, e.g.
//! `198.18.64.1`), with the agent's default hash seed, so the tables are the ones the
//! agent would install for such a target group. Nothing here touches the kernel.

use std::{net::Ipv4Addr, time::Instant};

use anyhow::Context as _;
use lb_agent::maglev::{self, Backend, Table, DEFAULT_SIZE};
use serde_json::{json, Map, Value};

use super::{median, Progress};

/// The agent's default `hash_seed` (examples/lb.toml).
const SEED: u32 = 0x6c62_0001;

/// Backend `i` as the agent would key target 198.18.64.0/18 + i (addresses from the
/// benchmarking range; never used on a wire here).
fn backend(i: u32) -> Backend {
    let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 64, 0)) + i);
    Backend::for_target(i, addr, 1)
}

fn backends(ids: impl IntoIterator<Item = u32>) -> Vec<Backend> {
    ids.into_iter().map(backend).collect()
}

fn build(set: &[Backend]) -> anyhow::Result<Table> {
    maglev::build(set, DEFAULT_SIZE, SEED)
        .with_context(|| format!("building a table of {} backends", set.len()))
}

/// Median, min and max wall time of `runs` builds, in ms.
fn build_time(n: u32, runs: usize) -> anyhow::Result<(f64, f64, f64)> {
    let set = backends(0..n);
    // One untimed build first: page faults of the first allocation are not the builder.
    build(&set)?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let t = build(&set)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(t.size() == DEFAULT_SIZE, "table of {} slots", t.size());
    }
    let (lo, hi) = times.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &t| {
        (lo.min(t), hi.max(t))
    });
    Ok((median(times), lo, hi))
}

/// One kind of change, measured over several trials.
struct Change {
    moved: Vec<f64>,
    min: Vec<f64>,
    collateral: Vec<f64>,
}

impl Change {
    fn new() -> Self {
        Self {
            moved: Vec::new(),
            min: Vec::new(),
            collateral: Vec::new(),
        }
    }

    /// Records the change from `before` (built as `old`) to `after`.
    fn trial(&mut self, before: &[Backend], old: &Table, after: &[Backend]) -> anyhow::Result<()> {
        let new = build(after)?;
        let d = maglev::disruption(old, &new);
        let min = maglev::min_moved_fraction(
            before.iter().map(|b| (b.key.clone(), b.weight)),
            after.iter().map(|b| (b.key.clone(), b.weight)),
        );
        self.moved.push(100.0 * d.moved_fraction());
        self.min.push(100.0 * min);
        // Moved beyond the theoretical minimum (forced ≈ min, within one slot per backend).
        self.collateral
            .push(100.0 * d.moved_fraction() - 100.0 * min);
        Ok(())
    }

    fn insert(&self, out: &mut Map<String, Value>, detail: &mut Map<String, Value>, key: &str) {
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let round = |x: f64| (x * 1e4).round() / 1e4;
        let spread = |v: &[f64]| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            json!([round(lo), round(hi)])
        };
        let (prefix, n) = key.split_once('_').unwrap_or((key, ""));
        out.insert(
            format!("{prefix}_moved_pct_{n}"),
            json!(round(mean(&self.moved))),
        );
        out.insert(
            format!("{prefix}_min_pct_{n}"),
            json!(round(mean(&self.min))),
        );
        out.insert(
            format!("{prefix}_collateral_pct_{n}"),
            json!(round(mean(&self.collateral))),
        );
        detail.insert(
            key.to_owned(),
            json!({
                "trials": self.moved.len(),
                "moved_pct_range": spread(&self.moved),
                "collateral_pct_range": spread(&self.collateral),
            }),
        );
    }
}

/// Trial `t` of `trials` picks evenly spread indices, so removals are not all of one
/// region of the key space.
fn spread_index(t: usize, trials: usize, n: u32) -> u32 {
    ((t as u64 * u64::from(n)) / trials.max(1) as u64) as u32
}

/// Disruption figures for N equal backends.
fn disruption(
    n: u32,
    trials: usize,
    out: &mut Map<String, Value>,
    detail: &mut Map<String, Value>,
) -> anyhow::Result<()> {
    let before = backends(0..n);
    let old = build(&before)?;

    let mut remove1 = Change::new();
    for t in 0..trials {
        let gone = spread_index(t, trials, n);
        let after: Vec<Backend> = before.iter().filter(|b| b.id != gone).cloned().collect();
        remove1.trial(&before, &old, &after)?;
    }
    remove1.insert(out, detail, &format!("remove1_n{n}"));

    let mut add1 = Change::new();
    for t in 0..trials {
        let mut after = before.clone();
        // Newcomers from the same address range, never one already present.
        after.push(backend(n + t as u32));
        add1.trial(&before, &old, &after)?;
    }
    add1.insert(out, detail, &format!("add1_n{n}"));

    let mut remove10 = Change::new();
    let tenth = (n / 10).max(1) as usize;
    for t in 0..trials {
        // A different pseudo-random tenth each trial (a fixed xorshift, so runs repeat).
        let mut ids: Vec<u32> = (0..n).collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ t as u64;
        for i in (1..ids.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ids.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let gone: std::collections::HashSet<u32> = ids[..tenth].iter().copied().collect();
        let after: Vec<Backend> = before
            .iter()
            .filter(|b| !gone.contains(&b.id))
            .cloned()
            .collect();
        remove10.trial(&before, &old, &after)?;
    }
    remove10.insert(out, detail, &format!("remove10pct_n{n}"));
    Ok(())
}

/// Measures this section; see the module docs. Under 1 s quick, about 1 s full.
pub fn run(quick: bool, progress: Progress<'_>) -> anyhow::Result<Value> {
    let (runs, trials_100, trials_1000) = if quick { (9, 10, 4) } else { (31, 40, 10) };
    let mut out = Map::new();
    let mut detail = Map::new();
    for n in [100, 1000] {
        let (ms, lo, hi) = build_time(n, runs)?;
        progress(&format!(
            "build N={n} M={DEFAULT_SIZE}: median {ms:.3} ms of {runs} ({lo:.3}..{hi:.3})"
        ));
        out.insert(format!("build_ms_n{n}"), json!((ms * 1e4).round() / 1e4));
        detail.insert(
            format!("build_n{n}"),
            json!({"runs": runs, "min_ms": lo, "max_ms": hi}),
        );
    }
    for (n, trials) in [(100, trials_100), (1000, trials_1000)] {
        disruption(n, trials, &mut out, &mut detail)?;
        progress(&format!(
            "N={n}: remove 1 moves {}% (min {}%), add 1 moves {}% (min {}%), remove 10% moves {}% (min {}%)",
            out[&format!("remove1_moved_pct_n{n}")],
            out[&format!("remove1_min_pct_n{n}")],
            out[&format!("add1_moved_pct_n{n}")],
            out[&format!("add1_min_pct_n{n}")],
            out[&format!("remove10pct_moved_pct_n{n}")],
            out[&format!("remove10pct_min_pct_n{n}")],
        ));
    }
    detail.insert(
        "method".into(),
        json!(format!(
            "lb_agent::maglev::build, M = {DEFAULT_SIZE}, equal weights, keys = target addresses \
             as text, seed {SEED:#x}; build time = median wall time (release build); \
             disruption = mean over trials of slots whose backend changed, min = \
             min_moved_fraction (share that must move)"
        )),
    );
    detail.insert("ring_size".into(), json!(DEFAULT_SIZE));
    out.insert("detail".into(), Value::Object(detail));
    Ok(Value::Object(out))
}
