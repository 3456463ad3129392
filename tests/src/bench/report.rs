//! `target/bench/report.md` and its SVG charts, rendered from results.json.
//!
//! The report reads only results.json, so it can be regenerated from a results file
//! merged from several `--only` runs. Every comparison is a ratio between figures
//! measured in the same section run (each section measures its own baseline), because
//! these machines are shared and absolute figures drift between runs. Missing figures
//! (a section that failed or was not run) show as "–" and never as zero.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde_json::{Map, Value};

/// Data-plane paths in report order, with what each one exercises.
const PATHS: &[(&str, &str)] = &[
    ("noop", "no-op XDP program (baseline)"),
    ("non_vip_pass", "TCP v4 to a non-VIP address: pass"),
    ("tcp4_established", "TCP v4, flow-table hit, DR"),
    ("tcp4_new_flow", "TCP v4 SYN: Maglev pick + flow insert, DR"),
    ("tcp6_established", "TCP v6, flow-table hit, DR"),
    ("udp4_tunnel", "UDP v4, flow-table hit, IPIP encapsulation"),
    ("icmp_too_big", "too big for the tunnel: ICMP reply"),
];

/// End-to-end systems in report order.
const E2E: &[(&str, &str)] = &[
    ("xdp_forward_ceiling", "XDP forward only (ceiling)"),
    ("lb_dr", "lb, direct routing"),
    ("lb_tunnel", "lb, IPIP tunnel"),
    ("nft_dnat", "nftables DNAT + conntrack"),
];

/// HTTP systems in report order.
const HTTP: &[(&str, &str)] = &[
    ("direct", "direct to a backend"),
    ("lb", "lb (DR)"),
    ("nft_dnat", "nftables DNAT"),
    ("haproxy", "HAProxy (mode tcp)"),
];

/// Writes report.md and the charts into `dir`; returns the report's path.
pub fn write(dir: &Path, results: &Map<String, Value>) -> anyhow::Result<PathBuf> {
    let r = Results(results);
    let charts = [
        ("dataplane_ns.svg", dataplane_chart(&r)),
        ("e2e_mpps.svg", e2e_chart(&r)),
        ("http.svg", http_chart(&r)),
    ];
    for (name, svg) in &charts {
        std::fs::write(dir.join(name), svg).with_context(|| format!("writing {name}"))?;
    }
    let path = dir.join("report.md");
    std::fs::write(&path, markdown(&r)).context("writing report.md")?;
    Ok(path)
}

/// The goals of issue 7 and how this run did, for the terminal.
pub fn summary(results: &Map<String, Value>) -> String {
    let r = Results(results);
    let mut out = String::from("goals (met / not met / not measured):\n");
    for g in goals(&r) {
        let _ = writeln!(out, "  {:<4} {:<44} {}", g.verdict(), g.goal, g.measured);
    }
    out
}

/// Read access to results.json by dotted key.
struct Results<'a>(&'a Map<String, Value>);

impl Results<'_> {
    fn num(&self, key: &str) -> Option<f64> {
        let mut parts = key.split('.');
        let mut v = self.0.get(parts.next()?)?;
        for p in parts {
            v = v.get(p)?;
        }
        v.as_f64().filter(|x| x.is_finite())
    }

    fn text(&self, key: &str) -> Option<String> {
        let mut parts = key.split('.');
        let mut v = self.0.get(parts.next()?)?;
        for p in parts {
            v = v.get(p)?;
        }
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    fn ratio(&self, a: &str, b: &str) -> Option<f64> {
        match (self.num(a), self.num(b)) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        }
    }
}

fn fmt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.decimals$}"))
}

fn fmt_ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.2}×"))
}

fn fmt_pct(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{:.0}%", v * 100.0))
}

/// One goal of the issue.
struct Goal {
    goal: &'static str,
    measured: String,
    met: Option<bool>,
}

impl Goal {
    fn verdict(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "NOT",
            None => "–",
        }
    }
}

fn goals(r: &Results<'_>) -> Vec<Goal> {
    let at_most = |v: Option<f64>, limit: f64| v.map(|v| v <= limit);
    let at_least = |v: Option<f64>, limit: f64| v.map(|v| v >= limit);
    let est = r.num("dataplane_ns.tcp4_established");
    let new = r.num("dataplane_ns.tcp4_new_flow");
    let vs_nft = r.ratio("e2e_mpps.lb_dr", "e2e_mpps.nft_dnat");
    let vs_ceiling = r.ratio("e2e_mpps.lb_dr", "e2e_mpps.xdp_forward_ceiling");
    let http = r.ratio("http.lb.rps", "http.direct.rps");
    let build = r.num("maglev.build_ms_n1000");
    let apply = r.num("control.apply_1000_ms");
    let hc = r.num("control.healthcheck_10k_cpu_pct");
    vec![
        Goal {
            goal: "TCP v4 established ≤ 50 ns/packet",
            measured: format!("{} ns", fmt(est, 1)),
            met: at_most(est, 50.0),
        },
        Goal {
            goal: "TCP v4 new flow ≤ 100 ns/packet",
            measured: format!("{} ns", fmt(new, 1)),
            met: at_most(new, 100.0),
        },
        Goal {
            goal: "end-to-end rate ≥ 3× nftables (lb dr)",
            measured: fmt_ratio(vs_nft),
            met: at_least(vs_nft, 3.0),
        },
        Goal {
            goal: "end-to-end rate ≥ 80% of the XDP ceiling",
            measured: fmt_pct(vs_ceiling),
            met: at_least(vs_ceiling, 0.8),
        },
        Goal {
            goal: "requests/s through lb ≥ 95% of direct",
            measured: fmt_pct(http),
            met: at_least(http, 0.95),
        },
        Goal {
            goal: "Maglev build, N=1000, M=65537 ≤ 3 ms",
            measured: format!("{} ms", fmt(build, 2)),
            met: at_most(build, 3.0),
        },
        Goal {
            goal: "1,000-backend apply live ≤ 100 ms",
            measured: format!("{} ms", fmt(apply, 1)),
            met: at_most(apply, 100.0),
        },
        Goal {
            goal: "10,000 health checks/s < 15% of one core",
            measured: format!("{}% of one core", fmt(hc, 1)),
            met: hc.map(|v| v < 15.0),
        },
    ]
}

fn markdown(r: &Results<'_>) -> String {
    let mut md = String::new();
    let machine = format!(
        "{} CPUs ({}), kernel {}",
        fmt(r.num("machine.cpus"), 0),
        r.text("machine.cpu_model")
            .unwrap_or_else(|| "unknown CPU".into()),
        r.text("machine.kernel").unwrap_or_else(|| "unknown".into()),
    );
    let _ = writeln!(md, "# lb benchmark report\n");
    let _ = writeln!(
        md,
        "Machine: {machine}. Generated by `cargo xtask bench` from `results.json`; each \
         comparison is a ratio between figures measured in the same section run."
    );
    let _ = writeln!(
        md,
        "\n| section | mode | seconds | when (unix) |\n|---|---|---|---|"
    );
    for (name, _) in super::SECTIONS {
        let run = |k: &str| r.text(&format!("runs.{name}.{k}"));
        let mode = match run("quick").as_deref() {
            Some("true") => "quick",
            Some("false") => "full",
            _ => "not run",
        };
        let _ = writeln!(
            md,
            "| {name} | {mode} | {} | {} |",
            run("seconds").unwrap_or_else(|| "–".into()),
            r.num(&format!("runs.{name}.unix_time"))
                .map_or_else(|| "–".into(), |t| utc(t as u64))
        );
    }

    let _ = writeln!(md, "\n## Goals\n\n| goal | measured | |\n|---|---|---|");
    for g in goals(r) {
        let _ = writeln!(md, "| {} | {} | {} |", g.goal, g.measured, g.verdict());
    }

    let _ = writeln!(
        md,
        "\n## Per-packet cost (`BPF_PROG_TEST_RUN`)\n\n![ns per packet](dataplane_ns.svg)\n\n\
         | path | ns/packet | × no-op | method |\n|---|---|---|---|"
    );
    for (key, what) in PATHS {
        let hot_ratio = r.num(&format!("details.dataplane.{key}.ratio_to_noop_hot"));
        let single_ratio = r.num(&format!("details.dataplane.{key}.ratio_to_noop_repeat1"));
        let _ = writeln!(
            md,
            "| {what} (`{key}`) | {} | {} | {} |",
            fmt(r.num(&format!("dataplane_ns.{key}")), 1),
            fmt_ratio(hot_ratio.or(single_ratio)),
            r.text(&format!("details.dataplane.{key}.method"))
                .unwrap_or_else(|| "–".into()),
        );
    }
    if let Some(m) = r.text("dataplane_ns.method") {
        let _ = writeln!(md, "\n{m}.");
    }

    let _ = writeln!(
        md,
        "\n## End-to-end packet rate (veth, native XDP)\n\n![Mpps by system](e2e_mpps.svg)\n\n\
         | system | Mpps | × nftables | of ceiling | Mpps at full CPU |\n|---|---|---|---|---|"
    );
    for (key, what) in E2E {
        let k = format!("e2e_mpps.{key}");
        let _ = writeln!(
            md,
            "| {what} (`{key}`) | {} | {} | {} | {} |",
            fmt(r.num(&k), 3),
            fmt_ratio(r.ratio(&k, "e2e_mpps.nft_dnat")),
            fmt_pct(r.ratio(&k, "e2e_mpps.xdp_forward_ceiling")),
            fmt(r.num(&format!("e2e_mpps.at_full_cpu.{key}")), 3),
        );
    }
    if let Some(w) = r.num("e2e_mpps.cpu_waiting") {
        let _ = writeln!(
            md,
            "\nThe generator threads (which also run every receiver's XDP and stack on their \
             CPU) waited for a CPU {:.1}% of the window; \"at full CPU\" divides each rate by \
             the share they had. The goals use the delivered rates.",
            w * 100.0
        );
    }
    if let Some(g) = r.num("e2e_mpps.generator_mpps") {
        let _ = writeln!(
            md,
            "\nGenerator: {g:.3} Mpps offered at best; {} UDP flows.",
            fmt(r.num("e2e_mpps.flows"), 0)
        );
    }

    let _ = writeln!(
        md,
        "\n## HTTP through each system (`wrk`)\n\n![requests/s and p99 by system](http.svg)\n\n\
         | system | requests/s | × direct | p50 ms | p99 ms |\n|---|---|---|---|---|"
    );
    for (key, what) in HTTP {
        let k = |f: &str| format!("http.{key}.{f}");
        let _ = writeln!(
            md,
            "| {what} (`{key}`) | {} | {} | {} | {} |",
            fmt(r.num(&k("rps")), 0),
            fmt_pct(r.ratio(&k("rps"), "http.direct.rps")),
            fmt(r.num(&k("p50_ms")), 3),
            fmt(r.num(&k("p99_ms")), 3),
        );
    }
    if let Some(s) = r.text("details.http.wrk") {
        let _ = writeln!(md, "\nwrk: {s}.");
    }

    let _ = writeln!(
        md,
        "\n## Maglev (M = 65537)\n\n| figure | N = 100 | N = 1000 |\n|---|---|---|"
    );
    let _ = writeln!(
        md,
        "| build ms | {} | {} |",
        fmt(r.num("maglev.build_ms_n100"), 2),
        fmt(r.num("maglev.build_ms_n1000"), 2)
    );
    for (what, moved, min) in [
        ("remove one backend", "remove1_moved_pct", "remove1_min_pct"),
        ("add one backend", "add1_moved_pct", "add1_min_pct"),
        ("remove 10%", "remove10pct_moved_pct", "remove10pct_min_pct"),
    ] {
        let cell = |n: &str| {
            format!(
                "{}% moved (minimum {}%)",
                fmt(r.num(&format!("maglev.{moved}_{n}")), 2),
                fmt(r.num(&format!("maglev.{min}_{n}")), 2)
            )
        };
        let _ = writeln!(md, "| {what} | {} | {} |", cell("n100"), cell("n1000"));
    }

    let _ = writeln!(
        md,
        "\n## Control plane and memory\n\n| figure | value |\n|---|---|\n\
         | `ctl apply` of a 1,000-backend change until live in the data plane | {} ms |\n\
         | agent CPU, 10,000 TCP health checks every second | {}% of one core |\n\
         | agent RSS with 100 VIPs | {} MB |\n\
         | agent RSS with 1 VIP | {} MB |\n\
         | BPF map memory per flow-table entry | {} bytes |\n\
         | BPF map memory per VIP | {} bytes |",
        fmt(r.num("control.apply_1000_ms"), 1),
        fmt(r.num("control.healthcheck_10k_cpu_pct"), 1),
        fmt(r.num("memory.agent_rss_mb_100_vips"), 1),
        fmt(r.num("memory.agent_rss_mb_1_vip"), 1),
        fmt(r.num("memory.bpf_bytes_per_flow"), 0),
        fmt(r.num("memory.bpf_bytes_per_vip"), 0),
    );
    let _ = writeln!(
        md,
        "\n## Fleet: a hard host failure (3 hosts, BIRD 2, BFD, ECMP)\n\n| figure | value |\n|---|---|\n\
         | long-lived connections (a request every 100 ms each) | {} |\n\
         | longest pause, quiet baseline | {} ms |\n\
         | longest pause from the failure on (`fleet.failover_gap_ms`) | {} ms |\n\
         | connections that survived (`fleet.survived_pct`) | {}% |\n\
         | failure to the router's route without the host | {} ms |\n\
         | connections moved to other hosts / broken | {} / {} |\n\
         | host back to the router using it again | {} ms |\n\
         | connections moved back / broken | {} / {} |",
        fmt(r.num("fleet.connections"), 0),
        fmt(r.num("fleet.baseline_gap_ms"), 0),
        fmt(r.num("fleet.failover_gap_ms"), 0),
        fmt(r.num("fleet.survived_pct"), 1),
        fmt(r.num("fleet.detection_ms"), 0),
        fmt(r.num("fleet.moved"), 0),
        fmt(r.num("fleet.broken"), 0),
        fmt(r.num("fleet.return_ms"), 0),
        fmt(r.num("fleet.moved_back"), 0),
        fmt(r.num("fleet.moved_back_broken"), 0),
    );
    md
}

/// One bar per entry of `rows`, its value at the results key `key(row key)`.
fn bars(
    r: &Results<'_>,
    rows: &[(&str, &str)],
    key: impl Fn(&str) -> String,
) -> Vec<(String, Option<f64>)> {
    rows.iter()
        .map(|(row, _)| ((*row).to_owned(), r.num(&key(row))))
        .collect()
}

fn dataplane_chart(r: &Results<'_>) -> String {
    svg(&[Panel {
        title: "ns per packet by path (lower is better)",
        unit: "ns",
        bars: bars(r, PATHS, |k| format!("dataplane_ns.{k}")),
    }])
}

fn e2e_chart(r: &Results<'_>) -> String {
    svg(&[Panel {
        title: "packet rate by system, Mpps (higher is better)",
        unit: "Mpps",
        bars: bars(r, E2E, |k| format!("e2e_mpps.{k}")),
    }])
}

fn http_chart(r: &Results<'_>) -> String {
    svg(&[
        Panel {
            title: "requests/s by system (higher is better)",
            unit: "req/s",
            bars: bars(r, HTTP, |k| format!("http.{k}.rps")),
        },
        Panel {
            title: "p99 latency by system, ms (lower is better)",
            unit: "ms",
            bars: bars(r, HTTP, |k| format!("http.{k}.p99_ms")),
        },
    ])
}

/// One horizontal bar chart; a missing value draws no bar and says so.
struct Panel {
    title: &'static str,
    unit: &'static str,
    bars: Vec<(String, Option<f64>)>,
}

const WIDTH: f64 = 640.0;
const LABEL_W: f64 = 170.0;
const BAR_H: f64 = 22.0;
const GAP: f64 = 8.0;
const TITLE_H: f64 = 30.0;
const VALUE_W: f64 = 110.0;

fn svg(panels: &[Panel]) -> String {
    let panel_h = |p: &Panel| TITLE_H + p.bars.len() as f64 * (BAR_H + GAP) + GAP;
    let height: f64 = panels.iter().map(panel_h).sum();
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let mut y0 = 0.0;
    for p in panels {
        let max = p
            .bars
            .iter()
            .filter_map(|(_, v)| *v)
            .fold(0.0_f64, f64::max);
        let span = WIDTH - LABEL_W - VALUE_W;
        let _ = writeln!(
            s,
            "<text x=\"8\" y=\"{}\" font-weight=\"bold\">{}</text>",
            y0 + 20.0,
            escape(p.title)
        );
        for (i, (label, value)) in p.bars.iter().enumerate() {
            let y = y0 + TITLE_H + i as f64 * (BAR_H + GAP);
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
                LABEL_W - 8.0,
                y + BAR_H * 0.7,
                escape(label)
            );
            match value {
                Some(v) => {
                    let w = if max > 0.0 { v / max * span } else { 0.0 }.max(1.0);
                    let _ = writeln!(
                        s,
                        "<rect x=\"{LABEL_W}\" y=\"{y}\" width=\"{w:.1}\" height=\"{BAR_H}\" \
                         fill=\"{}\"/>\n<text x=\"{:.1}\" y=\"{}\">{} {}</text>",
                        if label.starts_with("lb") {
                            "#d9480f"
                        } else {
                            "#4c6ef5"
                        },
                        LABEL_W + w + 6.0,
                        y + BAR_H * 0.7,
                        human(*v),
                        p.unit
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        "<text x=\"{}\" y=\"{}\" fill=\"#868e96\">not measured</text>",
                        LABEL_W + 6.0,
                        y + BAR_H * 0.7
                    );
                }
            }
        }
        y0 += panel_h(p);
    }
    s.push_str("</svg>\n");
    s
}

/// `YYYY-MM-DD HH:MM` (UTC) for a Unix time.
fn utc(unix: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix);
    lb_agent::metrics::time::iso8601(at)[..16].replacen('T', " ", 1)
}

/// A value with sensible precision for a chart label.
fn human(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn missing_figures_show_as_dashes_and_goals_as_not_measured() {
        let results = json!({"machine": {"cpus": 2, "kernel": "6.18"}});
        let map = results.as_object().expect("an object");
        let md = markdown(&Results(map));
        assert!(md.contains("(`tcp4_established`) | – |"), "{md}");
        assert!(md.contains("| dataplane | not run |"), "{md}");
        let s = summary(map);
        assert!(
            s.lines().skip(1).all(|l| l.trim_start().starts_with('–')),
            "{s}"
        );
    }

    #[test]
    fn unix_times_read_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00");
        assert_eq!(utc(1_795_994_336), "2026-11-29 23:18");
    }

    #[test]
    fn goals_compare_ratios_from_the_same_run() {
        let results = json!({
            "dataplane_ns": {"tcp4_established": 40.0, "tcp4_new_flow": 120.0},
            "e2e_mpps": {"lb_dr": 3.0, "nft_dnat": 0.5, "xdp_forward_ceiling": 4.0},
            "http": {"direct": {"rps": 100.0}, "lb": {"rps": 96.0}},
        });
        let r = Results(results.as_object().expect("an object"));
        let g = goals(&r);
        let verdict = |goal: &str| {
            g.iter()
                .find(|x| x.goal.starts_with(goal))
                .expect("a goal")
                .met
        };
        assert_eq!(verdict("TCP v4 established"), Some(true));
        assert_eq!(verdict("TCP v4 new flow"), Some(false));
        assert_eq!(verdict("end-to-end rate ≥ 3×"), Some(true));
        assert_eq!(verdict("end-to-end rate ≥ 80%"), Some(false));
        assert_eq!(verdict("requests/s"), Some(true));
        assert_eq!(verdict("Maglev"), None);
    }

    #[test]
    fn charts_are_well_formed_svg_with_a_bar_per_figure() {
        let results = json!({"e2e_mpps": {"lb_dr": 2.5, "nft_dnat": 0.4}});
        let svg = e2e_chart(&Results(results.as_object().expect("an object")));
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 1 + 2, "background + two bars");
        assert_eq!(svg.matches("not measured").count(), 2);
    }
}
