//! `ctl stats`, `ctl metrics` and `ctl top`: counters, metric periods and rates.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{key_values, maybe, shown, table, text};
use crate::admin::protocol::{
    CounterSection, EmfResult, MetricsFormat, PromResult, StatsInfo, TopInfo,
};

/// `stats`: every section of `{packets, bytes}` counters as a NAME PACKETS BYTES table;
/// anything else as key/value lines.
pub fn stats(result: &Value) -> String {
    shown(result, |s: &StatsInfo| {
        let mut sections: Vec<(String, &CounterSection)> = vec![
            ("VERDICTS".to_owned(), &s.verdicts),
            ("TRAFFIC".to_owned(), &s.traffic),
            ("DROPS".to_owned(), &s.drops),
            ("EVENTS".to_owned(), &s.events),
        ];
        // Further fields: more counter sections become tables too.
        let more: BTreeMap<&String, CounterSection> = s
            .more
            .iter()
            .filter_map(|(k, v)| Some((k, CounterSection::deserialize(v).ok()?)))
            .filter(|(_, section)| !section.is_empty())
            .collect();
        sections.extend(more.iter().map(|(k, section)| (k.to_uppercase(), section)));
        let mut out = String::new();
        for (title, section) in sections.into_iter().filter(|(_, s)| !s.is_empty()) {
            if !out.is_empty() {
                out.push('\n');
            }
            let rows: Vec<Vec<String>> = section
                .iter()
                .map(|(name, c)| vec![name.clone(), c.packets.to_string(), c.bytes.to_string()])
                .collect();
            out.push_str(&table(&[&title, "PACKETS", "BYTES"], &rows));
        }
        let plain: Map<String, Value> = s
            .more
            .iter()
            .filter(|(k, _)| !more.contains_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !plain.is_empty() {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&key_values(&plain, &[]));
        }
        out
    })
}

/// `metrics`: EMF lines and Prometheus text as they are; datum requests and JSON
/// pretty-printed, as sent.
pub fn metrics(format: MetricsFormat, result: &Value) -> String {
    match format {
        MetricsFormat::Emf => shown(result, |r: &EmfResult| {
            r.lines.iter().map(|line| format!("{line}\n")).collect()
        }),
        MetricsFormat::Prom => shown(result, |r: &PromResult| r.text.clone()),
        MetricsFormat::Datum | MetricsFormat::Json => {
            let mut s = serde_json::to_string_pretty(result).unwrap_or_default();
            s.push('\n');
            s
        }
    }
}

/// A rate for people: 1234567 → "1.23M".
fn si(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{:.2}G", x / 1e9),
        x if x >= 1e6 => format!("{:.2}M", x / 1e6),
        x if x >= 1e4 => format!("{:.1}k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

/// `top`: per VIP, then per target, rates over the last second.
pub fn top(result: &Value) -> String {
    shown(result, |t: &TopInfo| {
        let mut out = format!(
            "lb top: rates over the last {:.1} s, active flows from the flow table\n\n",
            t.interval_secs
        );
        let vips: Vec<Vec<String>> = t
            .vips
            .iter()
            .map(|v| {
                vec![
                    text(&v.name),
                    text(&v.proto),
                    si(v.packets_per_sec),
                    si(v.bytes_per_sec * 8.0),
                    si(v.new_flows_per_sec),
                    v.active_flows.to_string(),
                    text(&v.healthy),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "VIP",
                "PROTO",
                "PKT/S",
                "BIT/S",
                "NEWFLOW/S",
                "ACTIVE",
                "HEALTHY",
            ],
            &vips,
        ));
        out.push('\n');
        let targets: Vec<Vec<String>> = t
            .targets
            .iter()
            .map(|t| {
                vec![
                    text(&t.group),
                    maybe(t.address),
                    text(&t.state),
                    si(t.packets_per_sec),
                    si(t.bytes_per_sec * 8.0),
                    si(t.new_flows_per_sec),
                    t.active_flows.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "GROUP",
                "TARGET",
                "STATE",
                "PKT/S",
                "BIT/S",
                "NEWFLOW/S",
                "ACTIVE",
            ],
            &targets,
        ));
        out
    })
}
