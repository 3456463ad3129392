//! `ctl flow`: which backend a flow goes to, in one line.

use serde_json::Value;

use super::shown;
use crate::admin::protocol::FlowAnswer;

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
    shown(result, |answer: &FlowAnswer| {
        let Some(backend) = answer.backend else {
            let why = match &answer.vip {
                None => "no VIP matches (the data plane passes it unchanged)".to_owned(),
                Some(vip) => format!("VIP {vip} has no backend for it"),
            };
            return format!("{tuple}: {why}\n");
        };
        let mut details = Vec::new();
        if let Some(vip) = &answer.vip {
            details.push(format!("vip {vip}"));
        }
        if let Some(g) = &answer.group {
            details.push(format!("group {g}"));
        }
        if let Some(id) = answer.backend_id {
            details.push(format!("id {id}"));
        }
        details.push(match answer.source.as_str() {
            "flow_table" => "flow table".to_owned(),
            "ring" => match answer.ring_slot {
                Some(slot) => format!("ring slot {slot}"),
                None => "ring".to_owned(),
            },
            "" => "source unknown".to_owned(),
            other => other.to_owned(),
        });
        format!("{tuple}: backend {backend} ({})\n", details.join(", "))
    })
}
