//! docs/admin-protocol.md against a running agent: every request the document shows is
//! sent, in the document's order, to the real `lb-agent run` (with the document's names
//! and addresses mapped onto the example configuration's), and every reply must have
//! the shape the document shows for it:
//! - the same kind of value (object, array, scalar) wherever both have one (`null`
//!   stands for an absent optional value and matches anything);
//! - no key the document does not show (an undocumented field fails);
//! - every key the document shows, outside arrays (array elements are targets and routes
//!   in whatever states the document picked; their keys are checked one way only, above).
//!
//! The counter sections of `stats` are dictionaries (every counter the data plane has;
//! the document shows a few): there the document's keys must be sent, not the reverse.
//!
//! The agent crate's `doc_examples` test checks the same document against the reply
//! types; this one checks that the agent really sends those types, in those places.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::PathBuf,
    time::Duration,
};

use anyhow::{ensure, Context as _};
use lb_tests::{
    agentnet::backend,
    faults::{config_text, FaultNet},
};
use serde_json::{Map, Value};

const DOC: &str = include_str!("../../docs/admin-protocol.md");

/// Every request of the document with the reply it shows, if it shows one, in document
/// order.
fn examples() -> anyhow::Result<Vec<(Value, Option<Value>)>> {
    let mut pairs = Vec::new();
    let mut block: Option<String> = None;
    for line in DOC.lines() {
        match (&mut block, line.trim_start()) {
            (None, "```json") => block = Some(String::new()),
            (Some(text), "```") => {
                let values: Vec<Value> = serde_json::Deserializer::from_str(text)
                    .into_iter::<Value>()
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("a json block is not JSON: {text}"))?;
                let mut request: Option<Value> = None;
                for v in values {
                    if v.get("cmd").is_some() {
                        pairs.extend(request.replace(v).map(|r| (r, None)));
                    } else if let Some(r) = request.take() {
                        pairs.push((r, Some(v)));
                    }
                }
                pairs.extend(request.map(|r| (r, None)));
                block = None;
            }
            (Some(text), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    Ok(pairs)
}

/// The document's request with its names and addresses mapped onto the test's agent.
fn localize(request: &Value, config: &str) -> Value {
    let mut r = request.clone();
    if let Some(o) = r.as_object_mut() {
        for (k, v) in o.iter_mut() {
            let Some(s) = v.as_str() else { continue };
            let mapped = match (k.as_str(), s) {
                ("group" | "target_group", _) => "web-servers".to_owned(),
                ("address", "10.0.0.7") => backend(0).to_string(),
                // A target to add and remove: nothing answers there.
                ("address", "10.0.0.9") => "198.18.14.2".to_owned(),
                ("path", _) => config.to_owned(),
                _ => continue,
            };
            *v = Value::String(mapped);
        }
    }
    r
}

/// All array elements of `values` merged into one value: objects by key (recursively),
/// arrays concatenated, the first scalar kept.
fn merge(values: &[Value]) -> Value {
    let objects: Vec<&Map<String, Value>> = values.iter().filter_map(Value::as_object).collect();
    if !objects.is_empty() {
        let mut keys: Vec<&String> = objects.iter().flat_map(|o| o.keys()).collect();
        keys.sort();
        keys.dedup();
        let merged = keys
            .into_iter()
            .map(|k| {
                let vs: Vec<Value> = objects.iter().filter_map(|o| o.get(k).cloned()).collect();
                (k.clone(), merge(&vs))
            })
            .collect();
        return Value::Object(merged);
    }
    let arrays: Vec<Value> = values
        .iter()
        .filter_map(Value::as_array)
        .flatten()
        .cloned()
        .collect();
    if values.iter().any(Value::is_array) {
        return Value::Array(vec![merge(&arrays)]);
    }
    values
        .iter()
        .find(|v| !v.is_null())
        .cloned()
        .unwrap_or(Value::Null)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "an object",
        Value::Array(_) => "an array",
        Value::Null => "null",
        _ => "a scalar",
    }
}

/// Compares the live reply `live` with the document's `doc` at `path` (see the module
/// comment for the rules).
fn compare(path: &str, doc: &Value, live: &Value, in_array: bool, problems: &mut Vec<String>) {
    if doc.is_null() || live.is_null() {
        return;
    }
    if kind(doc) != kind(live) {
        problems.push(format!(
            "{path}: the document shows {}, the agent sends {}",
            kind(doc),
            kind(live)
        ));
        return;
    }
    match (doc, live) {
        (Value::Object(d), Value::Object(l)) => {
            let dictionary = DICTIONARIES.contains(&path);
            for k in (l.keys().filter(|k| !d.contains_key(*k))).filter(|_| !dictionary) {
                problems.push(format!(
                    "{path}.{k}: sent by the agent, not in the document"
                ));
            }
            if !in_array {
                for k in d.keys().filter(|k| !l.contains_key(*k)) {
                    problems.push(format!(
                        "{path}.{k}: in the document, not sent by the agent"
                    ));
                }
            }
            for (k, v) in d {
                if let Some(w) = l.get(k) {
                    compare(&format!("{path}.{k}"), v, w, in_array, problems);
                }
            }
        }
        (Value::Array(d), Value::Array(l)) if !d.is_empty() && !l.is_empty() => {
            compare(&format!("{path}[]"), &merge(d), &merge(l), true, problems);
        }
        _ => {}
    }
}

/// Objects whose keys are data (see the module comment).
const DICTIONARIES: [&str; 4] = [
    "stats.result.verdicts",
    "stats.result.traffic",
    "stats.result.drops",
    "stats.result.events",
];

/// Sends one request line and reads the reply line.
fn ask(socket: &PathBuf, request: &Value) -> anyhow::Result<Value> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    writeln!(s, "{request}")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    serde_json::from_str(&line).with_context(|| format!("reply to {request}: {line:?}"))
}

#[test]
fn live_replies_have_the_documented_shape() -> anyhow::Result<()> {
    // One-second metrics periods, so that `metrics` has a completed one to show.
    let text = config_text()?.replace("period_secs = 60", "period_secs = 1");
    ensure!(
        text.contains("period_secs = 1"),
        "the example's [metrics] changed"
    );
    let f = FaultNet::start_with("lbt-protodoc", &text, &[])?;
    std::thread::sleep(Duration::from_millis(2500));
    let config = f.config.display().to_string();
    let pairs = examples()?;
    ensure!(pairs.len() >= 20, "found only {} requests", pairs.len());
    let mut problems = Vec::new();
    let mut checked = Vec::new();
    for (request, doc_reply) in &pairs {
        let cmd = request["cmd"].as_str().unwrap_or_default();
        let live_request = localize(request, &config);
        let live = ask(&f.socket, &live_request)?;
        let Some(doc_reply) = doc_reply else {
            // No reply shown: the request must succeed.
            if live["ok"] != true {
                problems.push(format!("{cmd}: {live_request} failed: {live}"));
            }
            checked.push(format!("{cmd} (succeeds)"));
            continue;
        };
        if live["ok"] != doc_reply["ok"] {
            problems.push(format!(
                "{cmd}: the document shows ok={}, the agent answered {live}",
                doc_reply["ok"]
            ));
            continue;
        }
        let before = problems.len();
        compare(cmd, doc_reply, &live, false, &mut problems);
        checked.push(format!(
            "{cmd} {}",
            if problems.len() == before {
                "ok"
            } else {
                "DIFFERS"
            }
        ));
    }
    println!("checked against the running agent: {}", checked.join(", "));
    ensure!(
        problems.is_empty(),
        "docs/admin-protocol.md disagrees with the agent's replies:\n{}",
        problems.join("\n")
    );
    Ok(())
}
