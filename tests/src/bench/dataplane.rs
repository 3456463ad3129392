//! Per-packet cost of the production XDP program (results.json `dataplane_ns`).
//!
//! Runs `BPF_PROG_TEST_RUN` on the production object, configured by the agent's own code
//! in the scenario namespace (so FIB lookups are real), and reports ns/packet per path
//! as medians, next to a no-op program measured the same way in the same run:
//! - hot loop: `repeat` = 1,000,000 per call, median of several calls. Valid only for
//!   paths that do the same work when re-run on their own output (the kernel re-runs the
//!   program on the buffer it already rewrote): pass, DR rewrites, SYN (which re-hashes
//!   and re-inserts every time);
//! - repeat-1: many single runs, median of the kernel's per-run time. Valid for every
//!   path, including encapsulation and ICMP replies; it carries a fixed overhead (about
//!   35 ns here), so compare it only with the no-op measured the same way.
//!
//! The headline figure per path (`dataplane_ns.<path>`) is the hot-loop median where that
//! method is valid; for the encapsulating and ICMP paths it is the repeat-1 median minus
//! the no-op's repeat-1 overhead (no-op repeat-1 − no-op hot), and
//! `dataplane_detail.<path>.method` says which.

use std::{net::Ipv4Addr, time::Instant};

use serde_json::{json, Map, Value};

use super::{median, Progress};
use crate::{
    packet::{self, edit, CLIENT4, CLIENT6},
    scenario::{addrs::*, Scenario},
};

const HOT_REPEAT: u32 = 1_000_000;

struct Path {
    key: &'static str,
    what: &'static str,
    frame: Vec<u8>,
    /// Whether re-running on the program's own output repeats the same work.
    hot: bool,
    noop: bool,
}

/// Measures every path; about 25 s full, 5 s quick.
pub fn run(quick: bool, progress: Progress<'_>) -> anyhow::Result<Value> {
    let (hot_calls, single_calls) = if quick { (3, 5_000) } else { (7, 50_000) };
    let mut s = Scenario::new("lbt-bench")?;
    let (dr4, dr4p) = DR4;
    let (dr6, dr6p) = DR6;
    let (t4, t4p) = TUN4;
    let syn4 = packet::tcp4_syn(CLIENT4, 40000, dr4, dr4p);
    let est4 = edit::tcp_flags(&syn4, 34, 0x18);
    let syn6 = packet::tcp6_syn(CLIENT6, 40000, dr6, dr6p);
    let est6 = edit::tcp_flags(&syn6, 54, 0x18);
    let paths = vec![
        Path {
            key: "noop",
            what: "no-op XDP program (baseline)",
            frame: est4.clone(),
            hot: true,
            noop: true,
        },
        Path {
            key: "non_vip_pass",
            what: "TCP v4 to a non-VIP address: pass",
            frame: packet::tcp4_syn(CLIENT4, 40000, Ipv4Addr::new(198, 18, 2, 1), 22),
            hot: true,
            noop: false,
        },
        Path {
            key: "tcp4_established",
            what: "TCP v4 ACK, flow-table hit, DR",
            frame: est4,
            hot: true,
            noop: false,
        },
        Path {
            key: "tcp4_new_flow",
            what: "TCP v4 SYN: Maglev pick + flow insert, DR",
            frame: syn4.clone(),
            hot: true,
            noop: false,
        },
        Path {
            key: "tcp6_established",
            what: "TCP v6 ACK, flow-table hit, DR",
            frame: est6,
            hot: true,
            noop: false,
        },
        Path {
            key: "udp4_tunnel",
            what: "UDP v4, flow-table hit, IPIP encapsulation",
            frame: packet::udp4(CLIENT4, 40001, t4, t4p, &[0u8; 64]),
            hot: false,
            noop: false,
        },
        Path {
            key: "icmp_too_big",
            what: "UDP v4 too big for the tunnel: ICMP frag-needed reply",
            frame: packet::udp4(CLIENT4, 40002, t4, t4p, &[0u8; 1490 - 28]),
            hot: false,
            noop: false,
        },
    ];
    // Warm the flow table so the "established" paths hit.
    s.lb.enter(|| -> anyhow::Result<()> {
        for f in [&syn4, &syn6, &paths[5].frame] {
            s.dp.test_run(f, 1, 256, Some(s.fx0))?;
        }
        Ok(())
    })??;

    let mut rows = Vec::new();
    for p in &paths {
        let started = Instant::now();
        let (hot, single) = s.lb.enter(|| -> anyhow::Result<(Option<f64>, f64)> {
            let mut run = |repeat: u32| -> anyhow::Result<f64> {
                let out = if p.noop {
                    s.dp.test_run_noop(&p.frame, repeat)?
                } else {
                    s.dp.test_run(&p.frame, repeat, 256, Some(s.fx0))?
                };
                Ok(out.duration.as_nanos() as f64)
            };
            let hot = if p.hot {
                let mut v = Vec::new();
                for _ in 0..hot_calls {
                    v.push(run(HOT_REPEAT)?);
                }
                Some(median(v))
            } else {
                None
            };
            let mut v = Vec::with_capacity(single_calls);
            for _ in 0..single_calls {
                v.push(run(1)?);
            }
            Ok((hot, median(v)))
        })??;
        progress(&format!(
            "{:<18} hot {:>8}  repeat-1 {:>7.0} ns   {}   ({:.1}s)",
            p.key,
            hot.map_or("-".to_string(), |h| format!("{h:.1} ns")),
            single,
            p.what,
            started.elapsed().as_secs_f64()
        ));
        rows.push((p.key, p.what, hot, single));
    }
    let noop_hot = rows[0].2.unwrap_or(0.0);
    let noop_single = rows[0].3;
    let overhead = (noop_single - noop_hot).max(0.0);
    let mut section = Map::new();
    let mut detail = Map::new();
    for (key, what, hot, single) in &rows {
        let (figure, method) = match hot {
            Some(h) => (*h, "hot loop"),
            None => (
                single - overhead,
                "repeat-1 minus the no-op's repeat-1 overhead",
            ),
        };
        section.insert((*key).into(), json!(round1(figure)));
        detail.insert(
            (*key).into(),
            json!({
                "what": what,
                "method": method,
                "hot_ns": hot.map(round1),
                "repeat1_ns": round1(*single),
                "ratio_to_noop_repeat1": round2(single / noop_single.max(0.1)),
                "ratio_to_noop_hot": hot.map(|h| round2(h / noop_hot.max(0.1))),
            }),
        );
    }
    section.insert("detail".into(), Value::Object(detail));
    section.insert(
        "method".into(),
        json!(format!(
            "BPF_PROG_TEST_RUN; hot = median of {hot_calls} calls x {HOT_REPEAT} repeats; \
             repeat-1 = median of {single_calls} single runs"
        )),
    );
    Ok(Value::Object(section))
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
