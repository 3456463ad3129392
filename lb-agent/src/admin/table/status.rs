//! `ctl status` and `ctl config`: the agent's state and its running configuration.

use serde_json::Value;

use super::{field_names, key_values, shown, Sent};
use crate::admin::protocol::{AnnounceInfo, AttachmentInfo, ConfigInfo, StatusInfo};

/// `status`: key/value lines in [`StatusInfo`]'s order; the program on one line, as
/// `bpftool prog` names it (`lb_xdp id 123 tag 0123456789abcdef`), target states and
/// failing-open groups in words.
pub fn status(result: &Value) -> String {
    shown(result, |sent: &Sent<StatusInfo>| {
        let s = &sent.value;
        let mut fields = sent.shown(s);
        for (name, words) in worded(s) {
            if let (Some(field), Some(words)) = (fields.get_mut(name), words) {
                *field = Value::String(words);
            }
        }
        key_values(&fields, field_names::<StatusInfo>())
    })
}

/// The [`StatusInfo`] fields that read better in words than as JSON: field name, words.
pub(super) fn worded(s: &StatusInfo) -> [(&'static str, Option<String>); 5] {
    let targets: Vec<String> = s
        .targets
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    [
        ("program", s.program.as_ref().map(ToString::to_string)),
        ("attachment", Some(attachment_words(&s.attachment))),
        ("targets", Some(targets.join(", "))),
        (
            "failing_open",
            Some(if s.failing_open.is_empty() {
                "none".to_owned()
            } else {
                format!(
                    "{} (no healthy target: every target serves)",
                    s.failing_open.join(", ")
                )
            }),
        ),
        ("announce", Some(announce_words(&s.announce))),
    ]
}

/// `attachment`: where the program runs (or why not), where it is pinned, and a pin
/// failure in capitals: a restart would lose the data plane.
fn attachment_words(a: &AttachmentInfo) -> String {
    let mut out = if a.state == "attached" {
        format!("attached to ifindex {}, link id {}", a.ifindex, a.link_id)
    } else {
        format!(
            "{} since {}: {}; every VIP withdrawn",
            a.state.to_uppercase(),
            a.since_ms.unwrap_or_default(),
            a.reason.as_deref().unwrap_or("?")
        )
    };
    if a.reattached > 0 {
        let times = if a.reattached == 1 { "time" } else { "times" };
        out.push_str(&format!(", re-attached {} {times}", a.reattached));
    }
    match &a.pin_dir {
        Some(dir) => out.push_str(&format!(", pinned at {dir}")),
        None => out.push_str(", not pinned (ephemeral)"),
    }
    if let Some(e) = &a.pin_error {
        out.push_str(&format!(
            "\n  PINS FAILING, a restart would lose the data plane: {e}"
        ));
    }
    out
}

/// `announce`: the table, the operator's withdrawal, then one line per VIP address.
fn announce_words(a: &AnnounceInfo) -> String {
    let mut out = format!("table {}", a.table);
    if let Some(why) = &a.withdrawn_reason {
        out.push_str(&format!(", every VIP withdrawn: {why}"));
    }
    if let Some(e) = &a.error {
        out.push_str(&format!(", FAILING: {e}"));
    }
    for r in &a.routes {
        let address = r.address.map_or_else(|| "?".to_owned(), |a| a.to_string());
        let metric = r
            .metric
            .map_or_else(String::new, |m| format!(" metric {m}"));
        out.push_str(&format!(
            "\n  {address} {}{metric} ({}): {}",
            r.state,
            r.vips.join(", "),
            r.reason
        ));
    }
    out
}

/// `config_show`: the TOML itself, after a comment line saying where it came from.
pub fn config(result: &Value) -> String {
    shown(result, |c: &ConfigInfo| {
        let origin = match (&c.source, c.edited) {
            (Some(p), false) => format!("# running configuration: {p}, unchanged\n"),
            (Some(p), true) => format!("# running configuration: {p} with runtime edits\n"),
            (None, _) => "# running configuration: runtime edits only (no file)\n".to_owned(),
        };
        format!("{origin}{}", c.toml)
    })
}
