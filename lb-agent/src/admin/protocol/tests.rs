//! The protocol's tests: request parsing, wire format, result shapes.

use std::net::IpAddr;

use super::*;

fn parse(s: &str) -> Result<Request, (u64, ErrorBody)> {
    parse_request(s.as_bytes())
}

#[test]
fn every_command_round_trips() {
    for cmd in sample_commands() {
        let req = Request {
            id: 42,
            v: PROTOCOL_VERSION,
            cmd: cmd.clone(),
        };
        let line = serde_json::to_string(&req).expect("serialize");
        let back = parse(&line).expect("parse");
        assert_eq!(back, req, "{line}");
        assert!(
            line.contains(&format!("\"cmd\":\"{}\"", cmd.name())),
            "{line}"
        );
    }
    assert_eq!(sample_commands().len(), COMMAND_NAMES.len());
    // `down` without a grace period (the configured one applies).
    let down = parse(r#"{"id":1,"v":1,"cmd":"down"}"#).expect("parse");
    assert_eq!(down.cmd, Command::Down { grace_secs: None });
}

#[test]
fn wire_format() {
    let r = parse(r#"{"id":7,"v":1,"cmd":"vip_show","name":"web"}"#).expect("ok");
    assert_eq!(r.id, 7);
    assert_eq!(r.cmd, Command::VipShow { name: "web".into() });
    let r = parse(
        r#"{"id":1,"v":1,"cmd":"flow","proto":"tcp","src":"198.18.10.2","sport":40000,"dst":"198.18.200.1","dport":80}"#,
    )
    .expect("ok");
    assert!(matches!(
        r.cmd,
        Command::Flow {
            proto: Proto::Tcp,
            sport: 40000,
            ..
        }
    ));
    let r = parse(r#"{"id":1,"v":1,"cmd":"apply","path":"/etc/lb.toml"}"#).expect("ok");
    assert_eq!(
        r.cmd,
        Command::Apply {
            path: "/etc/lb.toml".into(),
            dry_run: false
        }
    );
}

/// The `vip_add` request, byte for byte (its arguments are one struct shared with the
/// CLI and the configuration draft; the wire must not notice).
#[test]
fn vip_add_wire_bytes() {
    let vip_add = sample_commands()
        .into_iter()
        .find(|c| c.name() == "vip_add")
        .expect("vip_add");
    let req = Request {
        id: 4,
        v: PROTOCOL_VERSION,
        cmd: vip_add,
    };
    let line = serde_json::to_string(&req).expect("serialize");
    assert_eq!(
        line,
        r#"{"id":4,"v":1,"cmd":"vip_add","name":"web","address":"198.18.200.1","port":80,"proto":"tcp","target_group":"g","mode":"tunnel","hash":"source-ip","ring_size":65537}"#
    );
    assert_eq!(parse(&line).expect("parse"), req);
    let minimal = r#"{"id":5,"v":1,"cmd":"vip_add","name":"x","address":"1.2.3.4","port":1,"proto":"udp","target_group":"g","mode":null}"#;
    let r = parse(minimal).expect("parse");
    assert_eq!(
        serde_json::to_string(&r).expect("serialize"),
        minimal.replace(r#","mode":null"#, "")
    );
    let unknown = r#"{"id":6,"v":1,"cmd":"vip_add","name":"x","address":"1.2.3.4","port":1,"proto":"udp","target_group":"g","fragments":"route"}"#;
    assert_eq!(
        parse(unknown).expect_err("unknown").1.code,
        ErrorCode::BadRequest
    );
}

#[test]
fn error_cases() {
    let code = |s: &str| parse(s).expect_err(s);
    assert_eq!(code("garbage").1.code, ErrorCode::BadRequest);
    assert_eq!(code("garbage").0, 0);
    assert_eq!(code("[1,2]").1.code, ErrorCode::BadRequest);
    assert_eq!(
        code(r#"{"v":1,"cmd":"status"}"#).1.code,
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(r#"{"id":-1,"v":1,"cmd":"status"}"#).1.code,
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(r#"{"id":3,"cmd":"status"}"#),
        (3, code(r#"{"id":3,"cmd":"status"}"#).1)
    );
    assert_eq!(
        code(r#"{"id":3,"cmd":"status"}"#).1.code,
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(r#"{"id":3,"v":2,"cmd":"status"}"#).1.code,
        ErrorCode::Version
    );
    assert_eq!(
        code(r#"{"id":3,"v":1,"cmd":"reboot"}"#).1.code,
        ErrorCode::UnknownCommand
    );
    assert_eq!(code(r#"{"id":3,"v":1,"cmd":"reboot"}"#).0, 3);
    assert_eq!(code(r#"{"id":3,"v":1}"#).1.code, ErrorCode::BadRequest);
    assert_eq!(
        code(r#"{"id":3,"v":1,"cmd":5}"#).1.code,
        ErrorCode::BadRequest
    );
    // Missing and mistyped arguments, unknown fields.
    assert_eq!(
        code(r#"{"id":3,"v":1,"cmd":"vip_show"}"#).1.code,
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(r#"{"id":3,"v":1,"cmd":"backend_set_weight","group":"g","address":"10.0.0.1","weight":70000}"#).1.code,
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(r#"{"id":3,"v":1,"cmd":"backend_drain","group":"g","address":"not-an-ip"}"#)
            .1
            .code,
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(r#"{"id":3,"v":1,"cmd":"status","force":true}"#).1.code,
        ErrorCode::BadRequest
    );
}

#[test]
fn response_lines() {
    let ok = Response::ok(5, serde_json::json!({"a": 1})).to_line();
    assert_eq!(ok, "{\"id\":5,\"ok\":true,\"result\":{\"a\":1}}\n");
    let err = Response::err(6, ErrorBody::new(ErrorCode::NotFound, "no VIP \"x\"")).to_line();
    assert_eq!(
        err,
        "{\"id\":6,\"ok\":false,\"error\":{\"code\":\"not_found\",\"message\":\"no VIP \\\"x\\\"\"}}\n"
    );
    let back: Response = serde_json::from_str(err.trim_end()).expect("parse");
    assert_eq!(back.error.expect("error").code, ErrorCode::NotFound);
}

#[test]
fn mutating_commands() {
    for cmd in sample_commands() {
        let expected = matches!(
            cmd.name(),
            "vip_add"
                | "vip_remove"
                | "backend_add"
                | "backend_remove"
                | "backend_set_weight"
                | "backend_drain"
                | "backend_undrain"
                | "withdraw"
                | "announce"
                | "down"
        ) || matches!(cmd, Command::Apply { dry_run: false, .. });
        assert_eq!(cmd.is_mutating(), expected, "{}", cmd.name());
    }
    assert!(!Command::Apply {
        path: "x".into(),
        dry_run: true
    }
    .is_mutating());
}

#[test]
fn apply_result_from_report() {
    use crate::{
        install::{ApplyReport, VipChange},
        maglev::Disruption,
    };
    let report = ApplyReport {
        changed: vec![
            VipChange {
                name: "web".into(),
                vip_id: 0,
                disruption: Some(Disruption {
                    moved: 12,
                    forced: 10,
                    collateral: 2,
                    size: 100,
                }),
                fingerprint: 0xab,
                backends: 2,
                ring_size: 100,
            },
            VipChange {
                name: "new".into(),
                vip_id: 1,
                disruption: None,
                fingerprint: 1,
                backends: 1,
                ring_size: 251,
            },
        ],
        unchanged: vec![VipChange {
            name: "same".into(),
            vip_id: 2,
            disruption: None,
            fingerprint: 0xcd,
            backends: 3,
            ring_size: 509,
        }],
        removed: vec!["gone".into()],
        backends_added: 1,
        backends_removed: 0,
    };
    let r = ApplyResult::from_report(&report, true);
    let names: Vec<(&str, &str)> = r
        .vips
        .iter()
        .map(|v| (v.name.as_str(), v.change.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("gone", "removed"),
            ("new", "added"),
            ("same", "unchanged"),
            ("web", "changed")
        ]
    );
    let web = &r.vips[3];
    assert_eq!(
        (web.moved, web.forced, web.collateral, web.ring_size),
        (12, 10, 2, 100)
    );
    assert_eq!(web.fingerprint, "00000000000000ab");
    // Added and unchanged VIPs show their real ring, backends and fingerprint.
    let new = &r.vips[1];
    assert_eq!((new.ring_size, new.backends), (251, 1));
    let same = &r.vips[2];
    assert_eq!(
        (same.ring_size, same.backends, same.fingerprint.as_str()),
        (509, 3, "00000000000000cd")
    );
    // What the CLI renders.
    let t = crate::admin::table::apply(&serde_json::to_value(&r).expect("json"));
    assert!(t.contains("web   changed    100    12 (12.0%)"), "{t}");
}

/// One of each command (used by the server tests too).
pub(crate) fn sample_commands() -> Vec<Command> {
    let a: IpAddr = "10.0.0.1".parse().expect("ip");
    vec![
        Command::Status,
        Command::VipList,
        Command::VipShow { name: "web".into() },
        Command::VipAdd(VipSpec {
            name: "web".into(),
            address: "198.18.200.1".parse().expect("ip"),
            port: 80,
            proto: Proto::Tcp,
            target_group: "g".into(),
            mode: Some("tunnel".into()),
            gue_port: None,
            hash: Some("source-ip".into()),
            ring_size: Some(65537),
            announce: None,
            announce_min_healthy: None,
        }),
        Command::VipRemove { name: "web".into() },
        Command::BackendList { group: None },
        Command::BackendAdd {
            group: "g".into(),
            address: a,
            weight: 100,
        },
        Command::BackendRemove {
            group: "g".into(),
            address: a,
        },
        Command::BackendSetWeight {
            group: "g".into(),
            address: a,
            weight: 0,
        },
        Command::BackendDrain {
            group: "g".into(),
            address: a,
        },
        Command::BackendUndrain {
            group: "g".into(),
            address: "2001:db8::1".parse().expect("ip"),
        },
        Command::Flow {
            proto: Proto::Udp,
            src: "198.18.10.2".parse().expect("ip"),
            sport: 40000,
            dst: "198.18.200.1".parse().expect("ip"),
            dport: 53,
        },
        Command::Apply {
            path: "/etc/lb/lb.toml".into(),
            dry_run: true,
        },
        Command::Stats,
        Command::ConfigShow,
        Command::Metrics {
            format: MetricsFormat::Emf,
        },
        Command::Top,
        Command::Withdraw,
        Command::Announce,
        Command::Down {
            grace_secs: Some(0),
        },
    ]
}

#[test]
fn status_always_carries_failing_open() {
    let v = serde_json::to_value(StatusInfo::default()).expect("json");
    assert_eq!(v["failing_open"], serde_json::json!([]));
}
