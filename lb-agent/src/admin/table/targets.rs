//! `ctl vip list`, `ctl vip show` and `ctl backend list`: VIPs and the targets behind
//! them.

use serde_json::Value;

use super::{field_names, key_values, maybe, shown, table, text, Sent};
use crate::admin::protocol::{BackendInfo, BackendList, VipInfo, VipList};

/// `vip list`: NAME ADDRESS PORT PROTO MODE BACKENDS FINGERPRINT.
pub fn vip_list(result: &Value) -> String {
    shown(result, |list: &VipList| {
        let rows: Vec<Vec<String>> = list
            .vips()
            .iter()
            .map(|v| {
                vec![
                    text(&v.name),
                    maybe(v.address),
                    port(v.port),
                    text(&v.proto),
                    text(&v.mode),
                    maybe(v.backends),
                    text(&v.fingerprint),
                    text(&v.announce.state),
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
                "ANNOUNCE",
            ],
            &rows,
        )
    })
}

/// A VIP's port: 0 is every port.
fn port(port: u16) -> String {
    if port == 0 {
        "*".to_owned()
    } else {
        port.to_string()
    }
}

/// `vip show`: the VIP's fields, then its backends.
pub fn vip_show(result: &Value) -> String {
    shown(result, |sent: &Sent<VipInfo>| {
        let mut vip = sent.value.clone();
        let backends = std::mem::take(&mut vip.backend_list);
        let mut out = key_values(&sent.shown(&vip), field_names::<VipInfo>());
        if !backends.is_empty() {
            out.push('\n');
            out.push_str(&backend_table(&backends));
        }
        out
    })
}

/// `backend list`: GROUP ADDRESS WEIGHT NOW STATE FLOWS WHY.
pub fn backend_list(result: &Value) -> String {
    shown(result, |list: &BackendList| backend_table(list.backends()))
}

fn backend_table(backends: &[BackendInfo]) -> String {
    let rows: Vec<Vec<String>> = backends
        .iter()
        .map(|b| {
            vec![
                text(&b.group),
                maybe(b.address),
                b.weight.to_string(),
                effective(b.effective_weight),
                state(b),
                maybe(b.flows),
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
fn effective(weight: f64) -> String {
    if weight.fract() == 0.0 {
        format!("{weight:.0}")
    } else {
        format!("{weight:.2}")
    }
}

/// The state, marked when the target serves only because its group fails open.
fn state(b: &BackendInfo) -> String {
    let s = text(&b.state);
    if b.fail_open {
        format!("{s} (fail-open)")
    } else {
        s
    }
}

/// Reason code, time left and the last check's words.
fn why(b: &BackendInfo) -> String {
    let mut parts = Vec::new();
    if let Some(r) = &b.reason {
        parts.push(r.clone());
    }
    if let Some(secs) = b.remaining_secs {
        parts.push(format!("{secs}s left"));
    }
    if !b.detail.is_empty() {
        parts.push(b.detail.clone());
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join("; ")
    }
}
