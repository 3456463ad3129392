//! Rendering tests: each renderer from the JSON an agent sends.

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
         "announce": {"policy": "healthy", "state": "standby", "reason": "r"},
         "some_future_field": {"x": 1}},
        {"name": "dns", "address": "2001:db8::53", "port": 0, "proto": "udp"}
    ]});
    let t = vip_list(&r);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(
        lines[0],
        "NAME  ADDRESS       PORT  PROTO  MODE    BACKENDS  FINGERPRINT       ANNOUNCE"
    );
    assert_eq!(
        lines[1],
        "web   198.18.200.1  80    tcp    tunnel  3         00ff00ff00ff00ff  standby"
    );
    assert_eq!(
        lines[2],
        "dns   2001:db8::53  *     udp    -       -         -                 -"
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
    let mut r = serde_json::to_value(crate::admin::protocol::StatsInfo::from(&c)).expect("json");
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

#[test]
fn field_names_in_declaration_order() {
    use crate::admin::protocol::{StatusInfo, VipInfo};
    assert_eq!(
        field_names::<StatusInfo>(),
        [
            "version",
            "protocol",
            "pid",
            "uptime_secs",
            "iface",
            "xdp_mode",
            "program",
            "attachment",
            "config",
            "config_edited",
            "vips",
            "backends",
            "targets",
            "failing_open",
            "fingerprint",
            "route_tag",
            "announce"
        ]
    );
    assert_eq!(field_names::<VipInfo>()[..3], ["name", "address", "port"]);
    assert!(field_names::<String>().is_empty());
}

#[test]
fn status_words_name_status_fields() {
    let s = crate::admin::protocol::StatusInfo::default();
    for (name, _) in status::worded(&s) {
        assert!(
            field_names::<crate::admin::protocol::StatusInfo>().contains(&name),
            "{name}"
        );
    }
}

#[test]
fn unreadable_results_show_as_sent() {
    // A field of the wrong type: the whole result as the agent sent it, not blanks.
    let r = json!({"interval_secs": "soon", "vips": 3});
    assert_eq!(top(&r), "interval_secs  soon\nvips           3\n");
    let r = json!({"version": "0.1.0", "vips": "two"});
    assert_eq!(status(&r), "version  0.1.0\nvips     two\n");
    assert_eq!(backend_list(&json!(7)), "7\n");
}

#[test]
fn changes_list_their_fields() {
    let r = json!({"changed": true, "backend": {"group": "g", "address": "10.0.0.1",
        "weight": 1, "state": "draining", "effective_weight": 0.0, "backend_id": 4,
        "flows": 2, "slots": null, "future": "x"}});
    assert_eq!(
        drain(&r),
        "backend:\n  address           10.0.0.1\n  backend_id        4\n  effective_weight  0.0\n  \
         flows             2\n  future            x\n  group             g\n  slots             -\n  \
         state             draining\n  weight            1\nchanged  yes\n"
    );
    assert_eq!(down(&json!({"down": "eth0"})), "down  eth0\n");
    assert_eq!(down(&json!({})), "ok\n");
    let t = edit(
        &json!({"dry_run": false, "vips": [{"name": "web"}], "backends_added": 1,
        "backends_removed": 0, "warnings": ["w"]}),
    );
    assert_eq!(
        t,
        "backends_added    1\nbackends_removed  0\ndry_run           no\nvips: 1 entries\nwarnings          w\n"
    );
}

#[test]
fn stats_shows_further_counter_sections() {
    let r = json!({"verdicts": {"pass": {"packets": 1, "bytes": 2}},
        "zones": {"a": {"packets": 3, "bytes": 4}}, "note": "x"});
    assert_eq!(
        stats(&r),
        "VERDICTS  PACKETS  BYTES\npass      1        2\n\nZONES  PACKETS  BYTES\na      3        4\n\nnote  x\n"
    );
}

#[test]
fn status_lists_announcements_in_words() {
    let r = json!({"announce": {"table": 100, "withdrawn_by_operator": true,
        "withdrawn_reason": "withdrawn by the operator (ctl withdraw)",
        "routes": [{"address": "198.19.0.1", "state": "withdrawn", "metric": null,
                    "vips": ["web", "dns"], "reason": "withdrawn by the operator (ctl withdraw)"},
                   {"address": "198.19.0.2", "state": "standby", "metric": 1073741829,
                    "vips": ["api"], "reason": "0 of 2 targets healthy, 1 needed: standby"}]}});
    assert_eq!(
        status(&r),
        "announce  table 100, every VIP withdrawn: withdrawn by the operator (ctl withdraw)\n  \
         198.19.0.1 withdrawn (web, dns): withdrawn by the operator (ctl withdraw)\n  \
         198.19.0.2 standby metric 1073741829 (api): 0 of 2 targets healthy, 1 needed: standby\n"
    );
}

#[test]
fn status_says_when_no_group_fails_open() {
    assert_eq!(status(&json!({"failing_open": []})), "failing_open  none\n");
    assert_eq!(
        status(&json!({"failing_open": ["web"]})),
        "failing_open  web (no healthy target: every target serves)\n"
    );
}

#[test]
fn status_says_where_the_program_runs_and_what_a_restart_would_lose() {
    let r = json!({"attachment": {"state": "attached", "ifindex": 3, "link_id": 31,
        "reattached": 1, "pin_dir": "/sys/fs/bpf/lb/eth0"}});
    assert_eq!(
        status(&r),
        "attachment  attached to ifindex 3, link id 31, re-attached 1 time, pinned at /sys/fs/bpf/lb/eth0\n"
    );
    let r = json!({"attachment": {"state": "detached", "ifindex": 0, "link_id": 0,
        "reattached": 0, "reason": "interface eth0 is gone: its XDP link was severed",
        "since_ms": 1764777600123_u64, "pin_dir": "/sys/fs/bpf/lb/eth0",
        "pin_error": "mounting bpffs at /sys/fs/bpf failed: EPERM"}});
    assert_eq!(
        status(&r),
        "attachment  DETACHED since 1764777600123: interface eth0 is gone: its XDP link was severed; every VIP withdrawn, pinned at /sys/fs/bpf/lb/eth0\n  \
         PINS FAILING, a restart would lose the data plane: mounting bpffs at /sys/fs/bpf failed: EPERM\n"
    );
}
