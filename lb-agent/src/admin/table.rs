//! Human-readable rendering of command results, from their JSON.
//!
//! Rendering is tolerant: fields it does not know are ignored (or shown generically),
//! fields that are missing show as `-`, so an older CLI can talk to a newer agent.

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// Lays out rows under headers, columns separated by two spaces, the last column not
/// padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                l.push_str(cell);
                l.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().take(headers.len()).map(String::as_str).collect());
    }
    out
}

/// A scalar as a cell: strings bare, null/missing as `-`, others as JSON.
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) if s.is_empty() => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.into(),
        Some(other) => other.to_string(),
    }
}

/// `key: value` lines, `first` keys first in that order, then the rest sorted; nested
/// objects indented.
pub fn key_values(obj: &Map<String, Value>, first: &[&str]) -> String {
    let mut keys: Vec<&str> = first
        .iter()
        .copied()
        .filter(|k| obj.contains_key(*k))
        .collect();
    let mut rest: Vec<&str> = obj
        .keys()
        .map(String::as_str)
        .filter(|k| !first.contains(k))
        .collect();
    rest.sort_unstable();
    keys.extend(rest);
    let width = keys.iter().map(|k| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for k in keys {
        match &obj[k] {
            Value::Object(inner) if !inner.is_empty() => {
                let _ = writeln!(out, "{k}:");
                for l in key_values(inner, &[]).lines() {
                    let _ = writeln!(out, "  {l}");
                }
            }
            Value::Array(items) if items.iter().any(|i| i.is_object()) => {
                let _ = writeln!(out, "{k}: {} entries", items.len());
            }
            Value::Array(items) => {
                let list: Vec<String> = items.iter().map(|i| cell(Some(i))).collect();
                let _ = writeln!(out, "{k:width$}  {}", list.join(", "));
            }
            v => {
                let _ = writeln!(out, "{k:width$}  {}", cell(Some(v)));
            }
        }
    }
    out
}

/// The list under `key` (`{"vips": [...]}`), or the result itself when it is a list.
fn list<'a>(result: &'a Value, key: &str) -> &'a [Value] {
    match result {
        Value::Array(items) => items,
        Value::Object(o) => o
            .get(key)
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice),
        _ => &[],
    }
}

fn generic(result: &Value) -> String {
    match result {
        Value::Object(o) if o.is_empty() => "ok\n".into(),
        Value::Object(o) => key_values(o, &["message"]),
        Value::Null => "ok\n".into(),
        other => format!("{}\n", cell(Some(other))),
    }
}

/// `status`: key/value lines; the program on one line, as `bpftool prog` names it
/// (`lb_xdp id 123 tag 0123456789abcdef`).
pub fn status(result: &Value) -> String {
    match result {
        Value::Object(o) => {
            let mut o = o.clone();
            let program = o.get("program").filter(|p| p.is_object()).map(|p| {
                format!(
                    "{} id {} tag {}",
                    cell(p.get("name")),
                    cell(p.get("id")),
                    cell(p.get("tag"))
                )
            });
            if let Some(program) = program {
                o.insert("program".into(), Value::String(program));
            }
            if let Some(Value::Object(t)) = o.get("targets") {
                let text = t
                    .iter()
                    .map(|(state, n)| format!("{} {state}", cell(Some(n))))
                    .collect::<Vec<_>>()
                    .join(", ");
                o.insert("targets".into(), Value::String(text));
            }
            if let Some(Value::Array(groups)) = o.get("failing_open") {
                let text = groups
                    .iter()
                    .map(|g| cell(Some(g)))
                    .collect::<Vec<_>>()
                    .join(", ");
                o.insert(
                    "failing_open".into(),
                    Value::String(format!("{text} (no healthy target: every target serves)")),
                );
            }
            status_lines(&o)
        }
        other => generic(other),
    }
}

fn status_lines(o: &Map<String, Value>) -> String {
    key_values(
        o,
        &[
            "version",
            "protocol",
            "pid",
            "uptime_secs",
            "iface",
            "xdp_mode",
            "program",
            "config",
            "config_edited",
            "vips",
            "backends",
            "targets",
            "failing_open",
        ],
    )
}

fn port(v: Option<&Value>) -> String {
    match v.and_then(Value::as_u64) {
        Some(0) => "*".into(),
        Some(p) => p.to_string(),
        None => "-".into(),
    }
}

/// `vip list`: NAME ADDRESS PORT PROTO MODE BACKENDS FINGERPRINT.
pub fn vip_list(result: &Value) -> String {
    let rows: Vec<Vec<String>> = list(result, "vips")
        .iter()
        .map(|v| {
            vec![
                cell(v.get("name")),
                cell(v.get("address")),
                port(v.get("port")),
                cell(v.get("proto")),
                cell(v.get("mode")),
                cell(v.get("backends")),
                cell(v.get("fingerprint")),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "ADDRESS",
            "PORT",
            "PROTO",
            "MODE",
            "BACKENDS",
            "FINGERPRINT",
        ],
        &rows,
    )
}

/// `vip show`: the VIP's fields, then its backends.
pub fn vip_show(result: &Value) -> String {
    let Value::Object(o) = result else {
        return generic(result);
    };
    let mut fields = o.clone();
    let backends = fields
        .remove("backend_list")
        .or_else(|| match fields.get("backends") {
            Some(Value::Array(_)) => fields.remove("backends"),
            _ => None,
        });
    let mut out = key_values(
        &fields,
        &[
            "name",
            "address",
            "port",
            "proto",
            "mode",
            "target_group",
            "vip_id",
            "ring_size",
            "backends",
            "fingerprint",
        ],
    );
    if let Some(b) = backends {
        out.push('\n');
        out.push_str(&backend_list(&b));
    }
    out
}

/// `backend list`: GROUP ADDRESS WEIGHT STATE FLOWS.
pub fn backend_list(result: &Value) -> String {
    let rows: Vec<Vec<String>> = list(result, "backends")
        .iter()
        .map(|b| {
            vec![
                cell(b.get("group")),
                cell(b.get("address")),
                cell(b.get("weight")),
                effective(b),
                state(b),
                cell(b.get("flows")),
                why(b),
            ]
        })
        .collect();
    table(
        &["GROUP", "ADDRESS", "WEIGHT", "NOW", "STATE", "FLOWS", "WHY"],
        &rows,
    )
}

/// The weight new flows see now, as a number without needless decimals.
fn effective(b: &Value) -> String {
    match b.get("effective_weight").and_then(Value::as_f64) {
        Some(w) if w.fract() == 0.0 => format!("{w:.0}"),
        Some(w) => format!("{w:.2}"),
        None => "-".to_owned(),
    }
}

/// The state, marked when the target serves only because its group fails open.
fn state(b: &Value) -> String {
    let s = cell(b.get("state"));
    if b.get("fail_open").and_then(Value::as_bool) == Some(true) {
        format!("{s} (fail-open)")
    } else {
        s
    }
}

/// Reason code, time left and the last check's words.
fn why(b: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(r) = b.get("reason").and_then(Value::as_str) {
        parts.push(r.to_owned());
    }
    if let Some(secs) = b.get("remaining_secs").and_then(Value::as_u64) {
        parts.push(format!("{secs}s left"));
    }
    if let Some(d) = b
        .get("detail")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
    {
        parts.push(d.to_owned());
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join("; ")
    }
}

/// `config_show`: the TOML itself, after a comment line saying where it came from.
pub fn config(result: &Value) -> String {
    let source = result.get("source").and_then(Value::as_str);
    let edited = result.get("edited").and_then(Value::as_bool) == Some(true);
    let origin = match (source, edited) {
        (Some(p), false) => format!("# running configuration: {p}, unchanged\n"),
        (Some(p), true) => format!("# running configuration: {p} with runtime edits\n"),
        (None, _) => "# running configuration: runtime edits only (no file)\n".to_owned(),
    };
    let toml = result.get("toml").and_then(Value::as_str).unwrap_or("");
    format!("{origin}{toml}")
}

fn endpoint(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// `flow`: one line, `tcp 198.18.10.2:40000 → 198.18.200.1:80: backend 10.0.0.1 (…)`.
pub fn flow(proto: &str, src: &str, sport: u16, dst: &str, dport: u16, result: &Value) -> String {
    let tuple = format!(
        "{proto} {} → {}",
        endpoint(src, sport),
        endpoint(dst, dport)
    );
    let source = result.get("source").and_then(Value::as_str).unwrap_or("");
    let Some(backend) = result.get("backend").filter(|b| !b.is_null()) else {
        let why = match (result.get("vip").and_then(Value::as_str), source) {
            (None, _) => "no VIP matches (the data plane passes it unchanged)".to_owned(),
            (Some(vip), _) => format!("VIP {vip} has no backend for it"),
        };
        return format!("{tuple}: {why}\n");
    };
    let mut details = Vec::new();
    if let Some(vip) = result.get("vip").and_then(Value::as_str) {
        details.push(format!("vip {vip}"));
    }
    if let Some(g) = result.get("group").and_then(Value::as_str) {
        details.push(format!("group {g}"));
    }
    if let Some(id) = result.get("backend_id").and_then(Value::as_u64) {
        details.push(format!("id {id}"));
    }
    details.push(match source {
        "flow_table" => "flow table".to_owned(),
        "ring" => match result.get("ring_slot").and_then(Value::as_u64) {
            Some(slot) => format!("ring slot {slot}"),
            None => "ring".to_owned(),
        },
        "" => "source unknown".to_owned(),
        other => other.to_owned(),
    });
    format!(
        "{tuple}: backend {} ({})\n",
        cell(Some(backend)),
        details.join(", ")
    )
}

fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// `apply`: per VIP, slots moved (forced, collateral) and live flows touched.
pub fn apply(result: &Value) -> String {
    let dry_run = result
        .get("dry_run")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let rows: Vec<Vec<String>> = list(result, "vips")
        .iter()
        .map(|v| {
            let size = num(v, "ring_size");
            let pct = |n: u64| {
                if size == 0 {
                    n.to_string()
                } else {
                    format!("{n} ({:.1}%)", 100.0 * n as f64 / size as f64)
                }
            };
            vec![
                cell(v.get("name")),
                cell(v.get("change")),
                cell(v.get("ring_size")),
                pct(num(v, "moved")),
                pct(num(v, "forced")),
                pct(num(v, "collateral")),
                cell(v.get("flows_touched")),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "VIP",
            "CHANGE",
            "SLOTS",
            "MOVED",
            "FORCED",
            "COLLATERAL",
            "FLOWS TOUCHED",
        ],
        &rows,
    );
    let _ = writeln!(
        out,
        "\nbackends: {} added, {} removed",
        num(result, "backends_added"),
        num(result, "backends_removed")
    );
    for w in list(result, "warnings") {
        let _ = writeln!(out, "warning: {}", cell(Some(w)));
    }
    out.push_str(if dry_run {
        "dry run: nothing was changed\n"
    } else {
        "applied\n"
    });
    out
}

/// `stats`: every section of `{packets, bytes}` counters as a NAME PACKETS BYTES table;
/// anything else as key/value lines.
pub fn stats(result: &Value) -> String {
    let Value::Object(o) = result else {
        return generic(result);
    };
    let order = ["verdicts", "traffic", "drops", "events"];
    let mut keys: Vec<&str> = order
        .iter()
        .copied()
        .filter(|k| o.contains_key(*k))
        .collect();
    let mut rest: Vec<&str> = o
        .keys()
        .map(String::as_str)
        .filter(|k| !order.contains(k))
        .collect();
    rest.sort_unstable();
    keys.extend(rest);
    let mut out = String::new();
    let mut plain = Map::new();
    for k in keys {
        let section = &o[k];
        let counters: Option<Vec<Vec<String>>> = section.as_object().and_then(|m| {
            m.iter()
                .map(|(name, c)| {
                    c.get("packets")
                        .map(|p| vec![name.clone(), cell(Some(p)), cell(c.get("bytes"))])
                })
                .collect()
        });
        match counters {
            Some(rows) if !rows.is_empty() => {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(&table(&[&k.to_uppercase(), "PACKETS", "BYTES"], &rows));
            }
            _ => {
                plain.insert(k.to_owned(), section.clone());
            }
        }
    }
    if !plain.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&key_values(&plain, &[]));
    }
    out
}

/// Mutations and `down`: the agent's message, or `ok`.
pub fn done(result: &Value) -> String {
    generic(result)
}

/// `metrics`: EMF lines and Prometheus text as they are; datum requests and JSON
/// pretty-printed.
pub fn metrics(format: crate::admin::protocol::MetricsFormat, result: &Value) -> String {
    use crate::admin::protocol::MetricsFormat;
    match format {
        MetricsFormat::Emf => {
            let mut out = String::new();
            for line in result
                .get("lines")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                out.push_str(line.as_str().unwrap_or_default());
                out.push('\n');
            }
            out
        }
        MetricsFormat::Prom => result
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        MetricsFormat::Datum | MetricsFormat::Json => {
            let mut s = serde_json::to_string_pretty(result).unwrap_or_default();
            s.push('\n');
            s
        }
    }
}

/// A rate for people: 1234567 → "1.23M".
fn si(v: Option<&Value>) -> String {
    let Some(x) = v.and_then(Value::as_f64) else {
        return "-".to_owned();
    };
    match x {
        x if x >= 1e9 => format!("{:.2}G", x / 1e9),
        x if x >= 1e6 => format!("{:.2}M", x / 1e6),
        x if x >= 1e4 => format!("{:.1}k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

/// `top`: per VIP, then per target, rates over the last second.
pub fn top(result: &Value) -> String {
    let secs = result
        .get("interval_secs")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let mut out =
        format!("lb top: rates over the last {secs:.1} s, active flows from the flow table\n\n");
    let vips: Vec<Vec<String>> = list(result, "vips")
        .iter()
        .map(|v| {
            vec![
                cell(v.get("name")),
                cell(v.get("proto")),
                si(v.get("packets_per_sec")),
                si(v.get("bytes_per_sec")
                    .and_then(Value::as_f64)
                    .map(|b| b * 8.0)
                    .map(Value::from)
                    .as_ref()),
                si(v.get("new_flows_per_sec")),
                cell(v.get("active_flows")),
                cell(v.get("healthy")),
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
    let targets: Vec<Vec<String>> = list(result, "targets")
        .iter()
        .map(|t| {
            vec![
                cell(t.get("group")),
                cell(t.get("address")),
                cell(t.get("state")),
                si(t.get("packets_per_sec")),
                si(t.get("bytes_per_sec")
                    .and_then(Value::as_f64)
                    .map(|b| b * 8.0)
                    .map(Value::from)
                    .as_ref()),
                si(t.get("new_flows_per_sec")),
                cell(t.get("active_flows")),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_aligns() {
        let t = table(
            &["A", "LONGER", "C"],
            &[
                vec!["xxxx".into(), "y".into(), "z".into()],
                vec!["1".into(), "2".into(), "".into()],
            ],
        );
        assert_eq!(t, "A     LONGER  C\nxxxx  y       z\n1     2\n");
    }

    #[test]
    fn vip_list_columns_and_tolerance() {
        let r = json!({"vips": [
            {"name": "web", "address": "198.18.200.1", "port": 80, "proto": "tcp",
             "mode": "tunnel", "backends": 3, "fingerprint": "00ff00ff00ff00ff",
             "some_future_field": {"x": 1}},
            {"name": "dns", "address": "2001:db8::53", "port": 0, "proto": "udp"}
        ]});
        let t = vip_list(&r);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "NAME  ADDRESS       PORT  PROTO  MODE    BACKENDS  FINGERPRINT"
        );
        assert_eq!(
            lines[1],
            "web   198.18.200.1  80    tcp    tunnel  3         00ff00ff00ff00ff"
        );
        assert_eq!(
            lines[2],
            "dns   2001:db8::53  *     udp    -       -         -"
        );
        // A bare list works too, and garbage renders as an empty table.
        assert_eq!(vip_list(&r["vips"]), t);
        assert_eq!(vip_list(&json!("what")).lines().count(), 1);
    }

    #[test]
    fn backend_list_columns() {
        let r = json!({"backends": [
            {"group": "web", "address": "10.0.0.1", "weight": 1, "effective_weight": 1.0,
             "state": "healthy", "flows": 12},
            {"group": "web", "address": "10.0.0.2", "weight": 4, "effective_weight": 0.6,
             "state": "healthy", "remaining_secs": 27},
            {"group": "web", "address": "10.0.0.3", "weight": 1, "effective_weight": 0.0,
             "state": "draining", "reason": "Target.DeregistrationInProgress",
             "remaining_secs": 12, "flows": 3},
            {"group": "web", "address": "10.0.0.4", "weight": 1, "effective_weight": 1.0,
             "state": "unhealthy", "fail_open": true, "reason": "Target.Timeout",
             "detail": "timed out after 2s"}
        ]});
        assert_eq!(
            backend_list(&r),
            "GROUP  ADDRESS   WEIGHT  NOW   STATE                  FLOWS  WHY\n\
             web    10.0.0.1  1       1     healthy                12     -\n\
             web    10.0.0.2  4       0.60  healthy                -      27s left\n\
             web    10.0.0.3  1       0     draining               3      Target.DeregistrationInProgress; 12s left\n\
             web    10.0.0.4  1       1     unhealthy (fail-open)  -      Target.Timeout; timed out after 2s\n"
        );
    }

    #[test]
    fn top_shows_rates_per_vip_and_target() {
        let r = json!({"interval_secs": 1.0,
            "vips": [{"name": "web", "proto": "tcp", "packets_per_sec": 1234567.0,
                      "bytes_per_sec": 125000.0, "new_flows_per_sec": 12.0,
                      "active_flows": 40, "healthy": "3/3"}],
            "targets": [{"group": "g", "address": "10.0.0.1", "state": "healthy",
                         "packets_per_sec": 10.0, "bytes_per_sec": 1000.0,
                         "new_flows_per_sec": 0.0, "active_flows": 4}]});
        let t = top(&r);
        assert!(t.contains("web  tcp    1.23M  1.00M  12"), "{t}");
        assert!(
            t.contains("g      10.0.0.1  healthy  10     8000   0          4"),
            "{t}"
        );
    }

    #[test]
    fn config_shows_its_origin() {
        let r = json!({"toml": "[agent]\n", "source": "/etc/lb/lb.toml", "edited": true});
        assert_eq!(
            config(&r),
            "# running configuration: /etc/lb/lb.toml with runtime edits\n[agent]\n"
        );
    }

    #[test]
    fn vip_show_lists_fields_and_backends() {
        let r = json!({"name": "web", "port": 80, "backends": 1,
            "backend_list": [{"group": "g", "address": "10.0.0.1", "weight": 1, "state": "active"}]});
        let t = vip_show(&r);
        assert!(
            t.starts_with("name      web\nport      80\nbackends  1\n"),
            "{t}"
        );
        assert!(t.contains("GROUP  ADDRESS"), "{t}");
    }

    #[test]
    fn flow_lines() {
        let r = json!({"vip": "web", "backend": "10.0.0.7", "backend_id": 4, "group": "g",
                       "source": "flow_table"});
        assert_eq!(
            flow("tcp", "198.18.10.2", 40000, "198.18.200.1", 80, &r),
            "tcp 198.18.10.2:40000 → 198.18.200.1:80: backend 10.0.0.7 (vip web, group g, id 4, flow table)\n"
        );
        let r = json!({"vip": "web", "backend": "2001:db8::7", "source": "ring", "ring_slot": 17});
        assert_eq!(
            flow("udp", "2001:db8::1", 5353, "2001:db8::100", 53, &r),
            "udp [2001:db8::1]:5353 → [2001:db8::100]:53: backend 2001:db8::7 (vip web, ring slot 17)\n"
        );
        let r = json!({"source": "none"});
        assert!(flow("tcp", "1.1.1.1", 1, "2.2.2.2", 2, &r).contains("no VIP matches"));
        let r = json!({"vip": "web", "source": "none"});
        assert!(flow("tcp", "1.1.1.1", 1, "2.2.2.2", 2, &r).contains("VIP web has no backend"));
    }

    #[test]
    fn apply_table() {
        let r = json!({"dry_run": true, "vips": [
            {"name": "web", "change": "changed", "ring_size": 1000, "moved": 120, "forced": 100,
             "collateral": 20, "flows_touched": 7},
            {"name": "new", "change": "added", "ring_size": 1000}
        ], "backends_added": 1, "backends_removed": 2, "warnings": ["w1"]});
        let t = apply(&r);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "VIP  CHANGE   SLOTS  MOVED        FORCED       COLLATERAL  FLOWS TOUCHED"
        );
        assert_eq!(
            lines[1],
            "web  changed  1000   120 (12.0%)  100 (10.0%)  20 (2.0%)   7"
        );
        assert!(t.contains("backends: 1 added, 2 removed"));
        assert!(t.contains("warning: w1"));
        assert!(t.ends_with("dry run: nothing was changed\n"));
        assert!(apply(&json!({})).ends_with("applied\n"));
    }

    #[test]
    fn stats_sections() {
        let mut c = crate::dataplane::Counters::default();
        c.verdicts[lb_common::Verdict::Pass as usize] = lb_common::Counter {
            packets: 5,
            bytes: 300,
        };
        let mut r =
            serde_json::to_value(crate::admin::protocol::StatsInfo::from(&c)).expect("json");
        r["uptime_secs"] = json!(9);
        let t = stats(&r);
        assert!(t.starts_with("VERDICTS  PACKETS  BYTES\n"), "{t}");
        assert!(t.contains("\npass      5        300\n"), "{t}");
        assert!(t.contains("\nTRAFFIC "), "{t}");
        assert!(t.contains("\nDROPS "), "{t}");
        assert!(t.contains("\nEVENTS "), "{t}");
        assert!(t.ends_with("uptime_secs  9\n"), "{t}");
    }

    #[test]
    fn status_and_done() {
        let r = json!({"vips": 2, "version": "0.1.0", "zzz": null, "iface": "eth0"});
        assert_eq!(
            status(&r),
            "version  0.1.0\niface    eth0\nvips     2\nzzz      -\n"
        );
        let r = json!({
            "iface": "eth0",
            "program": {"id": 123, "tag": "0123456789abcdef", "name": "lb_xdp"},
        });
        assert_eq!(
            status(&r),
            "iface    eth0\nprogram  lb_xdp id 123 tag 0123456789abcdef\n"
        );
        assert_eq!(done(&Value::Null), "ok\n");
        assert_eq!(done(&json!({})), "ok\n");
        assert_eq!(done(&json!({"message": "drained"})), "message  drained\n");
    }
}
