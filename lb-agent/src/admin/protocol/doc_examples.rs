//! docs/admin-protocol.md against the code: every ```json block of the document must be
//! valid JSON; every request in it must parse as the request it shows; every result must
//! have exactly the shape the agent sends for that command: deserialized into the
//! command's result type and serialized again, it must come back with the same keys at
//! every level (a field the document leaves out, or one the agent does not send, fails).
//! So the document cannot drift from the replies again without this test failing.

use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use super::{
    parse_request, ApplyResult, BackendInfo, ConfigInfo, DatumResult, DownResult, DrainResult,
    EmfResult, ErrorBody, FlowAnswer, PromResult, StatsInfo, StatusInfo, TopInfo, VipInfo,
    WithdrawResult,
};

const DOC: &str = include_str!("../../../../docs/admin-protocol.md");

/// Every ```json block: (line number of the block, its text).
fn json_blocks() -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in DOC.lines().enumerate() {
        match (&mut current, line.trim_start()) {
            (None, "```json") => current = Some((i + 2, String::new())),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some((_, text)), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// The keys of `a` and `b` agree at every level (arrays element by element).
fn same_shape(path: &str, a: &Value, b: &Value, problems: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for k in a.keys().filter(|k| !b.contains_key(*k)) {
                problems.push(format!("{path}.{k}: in the document, not in the reply"));
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                problems.push(format!("{path}.{k}: in the reply, not in the document"));
            }
            for (k, v) in a {
                if let Some(w) = b.get(k) {
                    same_shape(&format!("{path}.{k}"), v, w, problems);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                same_shape(&format!("{path}[{i}]"), v, w, problems);
            }
        }
        _ => {}
    }
}

/// `doc` read as `T` and written again, compared with `doc`.
fn round_trip<T: Serialize + DeserializeOwned>(doc: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// The shape the agent sends for `cmd` (with `request`'s arguments) and `result`.
fn reply_shape(request: &Value, result: &Value) -> Result<Value, String> {
    let cmd = request["cmd"].as_str().unwrap_or_default();
    match cmd {
        "status" => round_trip::<StatusInfo>(result),
        "vip_list" => round_trip::<Vec<VipInfo>>(result),
        "vip_show" => round_trip::<VipInfo>(result),
        "backend_list" => round_trip::<Vec<BackendInfo>>(result),
        "vip_add" | "vip_remove" | "backend_add" | "backend_remove" | "backend_set_weight"
        | "apply" => round_trip::<ApplyResult>(result),
        "backend_drain" | "backend_undrain" => round_trip::<DrainResult>(result),
        "flow" => round_trip::<FlowAnswer>(result),
        "stats" => round_trip::<StatsInfo>(result),
        "config_show" => round_trip::<ConfigInfo>(result),
        "top" => round_trip::<TopInfo>(result),
        "withdraw" | "announce" => round_trip::<WithdrawResult>(result),
        "down" => round_trip::<DownResult>(result),
        "metrics" => match request["format"].as_str() {
            Some("emf") => round_trip::<EmfResult>(result),
            Some("datum") => round_trip::<DatumResult>(result),
            Some("prom") => round_trip::<PromResult>(result),
            // `json`: the period as docs/metrics.md describes it.
            _ => Ok(result.clone()),
        },
        other => Err(format!("no result type known for {other:?}")),
    }
}

#[test]
fn every_example_in_the_protocol_document_is_what_the_agent_sends() {
    let mut problems = Vec::new();
    let blocks = json_blocks();
    assert!(
        blocks.len() >= 20,
        "found only {} json blocks",
        blocks.len()
    );
    let mut requests_seen = 0;
    for (line, text) in &blocks {
        let values: Result<Vec<Value>, _> = serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .collect();
        let values = match values {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("block at line {line}: not JSON: {e}"));
                continue;
            }
        };
        let mut request: Option<Value> = None;
        for v in values {
            if v.get("cmd").is_some() {
                if let Err((_, e)) = parse_request(v.to_string().as_bytes()) {
                    problems.push(format!("block at line {line}: request {v}: {}", e.message));
                }
                requests_seen += 1;
                request = Some(v);
                continue;
            }
            let Some(ok) = v.get("ok").and_then(Value::as_bool) else {
                problems.push(format!(
                    "block at line {line}: neither request nor response: {v}"
                ));
                continue;
            };
            if !ok {
                let shape = round_trip::<ErrorBody>(&v["error"]);
                match shape {
                    Ok(s) => same_shape(
                        &format!("line {line}: error"),
                        &v["error"],
                        &s,
                        &mut problems,
                    ),
                    Err(e) => problems.push(format!("block at line {line}: error body: {e}")),
                }
                continue;
            }
            // A response on its own (the framing section) shows the envelope only.
            let Some(req) = &request else {
                continue;
            };
            match reply_shape(req, &v["result"]) {
                Ok(shape) => same_shape(
                    &format!("line {line}: {}", req["cmd"]),
                    &v["result"],
                    &shape,
                    &mut problems,
                ),
                Err(e) => problems.push(format!("block at line {line}: {}: {e}", req["cmd"])),
            }
        }
    }
    assert!(
        problems.is_empty(),
        "docs/admin-protocol.md disagrees with the code:\n{}",
        problems.join("\n")
    );
    assert!(
        requests_seen >= 20,
        "only {requests_seen} requests in the document"
    );
}
