//! `ctl apply` and the answers to changes (runtime edits, drains, `down`).

use std::fmt::Write as _;

use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use super::{done, maybe, shown, table, text, Sent};
use crate::admin::protocol::{ApplyResult, DownResult, DrainResult, WithdrawResult};

/// `apply`: per VIP, slots moved (forced, collateral) and live flows touched.
pub fn apply(result: &Value) -> String {
    shown(result, |r: &ApplyResult| {
        let rows: Vec<Vec<String>> = r
            .vips
            .iter()
            .map(|v| {
                let size = v.ring_size;
                let pct = |n: u32| {
                    if size == 0 {
                        n.to_string()
                    } else {
                        format!("{n} ({:.1}%)", 100.0 * f64::from(n) / f64::from(size))
                    }
                };
                vec![
                    text(&v.name),
                    text(&v.change),
                    v.ring_size.to_string(),
                    pct(v.moved),
                    pct(v.forced),
                    pct(v.collateral),
                    maybe(v.flows_touched),
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
            r.backends_added, r.backends_removed
        );
        for w in &r.warnings {
            let _ = writeln!(out, "warning: {}", text(w));
        }
        out.push_str(if r.dry_run {
            "dry run: nothing was changed\n"
        } else {
            "applied\n"
        });
        out
    })
}

/// A runtime edit (`vip add`, `backend set-weight`, …): the report's fields.
pub fn edit(result: &Value) -> String {
    shown(result, listed::<ApplyResult>)
}

/// `backend drain` / `undrain`: whether it changed, and the backend now.
pub fn drain(result: &Value) -> String {
    shown(result, listed::<DrainResult>)
}

/// `down`: the interface whose data plane goes.
pub fn down(result: &Value) -> String {
    shown(result, listed::<DownResult>)
}

/// `withdraw` / `announce`: whether it changed, and the addresses it concerned.
pub fn withdraw(result: &Value) -> String {
    shown(result, listed::<WithdrawResult>)
}

/// The fields of a change's answer as `key  value` lines, sorted by name.
fn listed<T: Serialize + DeserializeOwned>(sent: &Sent<T>) -> String {
    done(&Value::Object(sent.shown(&sent.value)))
}
