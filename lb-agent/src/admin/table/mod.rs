//! Human-readable rendering of command results for `lb-agent ctl`.
//!
//! Each renderer takes the result as the agent sent it, reads it into its protocol type
//! ([`crate::admin::protocol`]'s result types) and lays out the typed value. Reading is
//! tolerant as the protocol asks: unknown fields are ignored, missing ones default (and
//! show as `-` where absence can be told). A result that cannot be read as its type (an
//! agent of another version, a bug) is shown as sent, field by field ([`done`]), so a
//! renamed field shows under its new name rather than as a blank column.
//!
//! Here: the layout (columns, `key  value` lines, cells); the renderers by what they
//! show, in the files below.

mod changes;
mod counters;
mod flow;
mod sent;
mod status;
mod targets;
#[cfg(test)]
mod tests;

use std::fmt::{Display, Write as _};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

pub use changes::{apply, down, drain, edit, withdraw};
pub use counters::{metrics, stats, top};
pub use flow::flow;
pub use sent::{field_names, Sent};
pub use status::{config, status};
pub use targets::{backend_list, vip_list, vip_show};

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

/// A JSON scalar as a cell: strings bare, null/missing as `-`, others as JSON.
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) if s.is_empty() => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.into(),
        Some(other) => other.to_string(),
    }
}

/// A text cell: `-` when empty.
fn text(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

/// An optional cell: `-` when absent.
fn maybe<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
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

/// Any result as sent: `key  value` lines (a `message` first), or `ok` when there is
/// nothing to show. What a result that cannot be read as its type falls back to.
pub fn done(result: &Value) -> String {
    match result {
        Value::Object(o) if o.is_empty() => "ok\n".into(),
        Value::Object(o) => key_values(o, &["message"]),
        Value::Null => "ok\n".into(),
        other => format!("{}\n", cell(Some(other))),
    }
}

/// Reads `result` as a `T` and renders it with `render`; [`done`] when it is not a `T`.
fn shown<T: DeserializeOwned>(result: &Value, render: impl FnOnce(&T) -> String) -> String {
    match T::deserialize(result) {
        Ok(value) => render(&value),
        Err(_) => done(result),
    }
}
