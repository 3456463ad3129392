//! Drafts: writing back as TOML, and runtime edits (each refused edit changes nothing).

use std::net::IpAddr;

use super::{example_with_tunnel_block, group, ok, vip, TempFile};
use crate::admin::protocol::{Proto, VipSpec};
use crate::config::{load_draft, Config, ConfigError, Draft, EditError, Protocol, Target, EXAMPLE};

fn draft(text: &str) -> Draft {
    Draft::parse(text).unwrap_or_else(|e| panic!("not parsed: {e}\n--- text ---\n{text}"))
}

fn valid(d: &Draft) -> Config {
    d.validate()
        .unwrap_or_else(|e| panic!("invalid: {e}\n--- draft ---\n{}", d.to_toml()))
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("address")
}

/// Writing `d` out and parsing it back gives the same draft and the same configuration.
fn assert_round_trip(d: &Draft) {
    let text = d.to_toml();
    assert!(text.starts_with("# Written by lb-agent"), "{text}");
    let back = Draft::parse(&text).unwrap_or_else(|e| panic!("{e}\n--- text ---\n{text}"));
    assert_eq!(&back, d, "{text}");
    assert_eq!(
        back.validate().map_err(|e| e.problems()),
        d.validate().map_err(|e| e.problems()),
        "{text}"
    );
}

/// Runs `edit` on a copy of `d` and checks that it failed and left the copy unchanged.
fn refused(d: &Draft, edit: impl FnOnce(&mut Draft) -> Result<Config, EditError>) -> EditError {
    let mut copy = d.clone();
    let e = match edit(&mut copy) {
        Ok(_) => panic!("edit accepted:\n{}", copy.to_toml()),
        Err(e) => e,
    };
    assert_eq!(&copy, d, "a refused edit changed the draft: {e}");
    e
}

fn not_found(e: EditError) -> String {
    match e {
        EditError::NotFound(why) => why,
        other => panic!("expected NotFound, got {other:?}"),
    }
}

fn exists(e: EditError) -> String {
    match e {
        EditError::Exists(why) => why,
        other => panic!("expected Exists, got {other:?}"),
    }
}

fn invalid(e: EditError) -> Vec<String> {
    match e {
        EditError::Invalid(ConfigError::Invalid {
            path: None,
            problems,
        }) => problems,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// VIP "web6" on 2001:2::100 port 443, tunnelled to `group`.
fn new_vip(name: &str, group: &str) -> VipSpec {
    VipSpec {
        name: name.to_owned(),
        address: ip("2001:2::100"),
        port: 443,
        proto: Proto::Tcp,
        target_group: group.to_owned(),
        mode: Some("tunnel".to_owned()),
        gue_port: None,
        hash: Some("source-ip".to_owned()),
        ring_size: Some(251),
        announce: None,
        announce_min_healthy: None,
    }
}

/// The example plus a second group "six" with an IPv6 and an IPv4 target, unused.
fn two_groups() -> Draft {
    draft(&format!(
        "{EXAMPLE}\n{}",
        group("six", "", &["2001:2:0:11::2", "198.18.14.2"])
    ))
}

// ---------------------------------------------------------------------------------------
// Parsing and writing back
// ---------------------------------------------------------------------------------------

#[test]
fn example_round_trips_through_to_toml() {
    let d = draft(EXAMPLE);
    assert_eq!(valid(&d), ok(EXAMPLE));
    assert_round_trip(&d);
    let text = d.to_toml();
    assert_eq!(valid(&draft(&text)), ok(EXAMPLE));
    // Keys absent from the file stay absent, so their defaults keep applying.
    assert!(
        !text.contains("gue_port") && !text.contains("agent_check"),
        "{text}"
    );

    let tunnel = example_with_tunnel_block();
    assert_round_trip(&draft(&tunnel));
    assert_eq!(valid(&draft(&draft(&tunnel).to_toml())), ok(&tunnel));
}

#[test]
fn every_key_round_trips() {
    let text = format!(
        "[agent]\nhash_seed = 7\nflow_table_entries = 4096\nudp_idle_timeout_secs = 60\n\
         max_new_flows_per_cpu = 0\ntunnel_source_v4 = \"198.18.254.0/24\"\n\
         tunnel_source_v6 = \"2001:2:0:fffe::/64\"\n\
         {}{}{}",
        vip(&[
            ("mode", "\"gue\""),
            ("gue_port", "6080"),
            ("ring_size", "509"),
            ("fragments", "\"route\""),
        ]),
        group(
            "g",
            "deregistration_delay_secs = 0\nslow_start_secs = 30\nfail_open = false\n\
             unhealthy_connection_termination = false\nunhealthy_draining_interval_secs = 90",
            &["198.18.11.2", "2001:2:0:11::2"],
        ),
        "[target_group.health_check]\nenabled = true\nprotocol = \"https\"\nport = 8443\n\
         path = \"/ready?x=\\\"1\\\"\"\nmatcher = \"200,204\"\nbody = \"ok \\\"yes\\\"\\n\"\n\
         interval_secs = 10\ntimeout_secs = 5\nhealthy_threshold = 3\nunhealthy_threshold = 4\n\
         [target_group.agent_check]\nport = 5555\ninterval_secs = 4\ntimeout_secs = 1\n",
    );
    let d = draft(&text);
    let c = valid(&d);
    assert_eq!(
        c.target_groups[0]
            .health_check
            .http
            .as_ref()
            .and_then(|h| h.body_contains.as_deref()),
        Some("ok \"yes\"\n")
    );
    assert_round_trip(&d);

    let exec = vip(&[])
        + &group("g", "", &["198.18.11.2"])
        + "[target_group.health_check]\nprotocol = \"exec\"\n\
           command = [\"/usr/lib/lb/check\", \"--name=web servers\", \"'q'\"]\n";
    assert_round_trip(&draft(&exec));
}

#[test]
fn the_metrics_table_round_trips() {
    let text = format!(
        "[metrics]\nnamespace = \"lb/edge #1\"\navailability_zone = \"eu-west-1a\"\n\
         period_secs = 1\nemf = \"file:/var/log/lb/emf.log\"\n\
         prometheus_listen = \"[::1]:9469\"\n{}{}",
        vip(&[]),
        group("g", "", &["198.18.11.2"]),
    );
    let d = draft(&text);
    let c = valid(&d);
    assert_eq!(c.metrics.namespace, "lb/edge #1");
    assert_round_trip(&d);
    let written = d.to_toml();
    assert!(written.contains("[metrics]"), "{written}");
    // Runtime edits keep the table.
    let mut edited = d.clone();
    edited
        .add_target("g", ip("198.18.12.2"), None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(valid(&edited).metrics, c.metrics);
    assert_round_trip(&edited);
    // An absent table stays absent.
    let plain = draft(&(vip(&[]) + &group("g", "", &["198.18.11.2"])));
    assert!(!plain.to_toml().contains("metrics"), "{}", plain.to_toml());
    // An invalid one is kept as written.
    let bad = draft(&format!(
        "[metrics]\nnamespace = \"AWS/NetworkELB\"\n{}",
        vip(&[])
    ));
    assert!(bad.validate().is_err());
    assert_round_trip(&bad);
}

#[test]
fn invalid_and_empty_drafts_round_trip_too() {
    // A draft is the file as written, problems included.
    let d = draft(&(vip(&[("port", "70000")]) + "[[target_group]]\n[target_group.agent_check]\n"));
    assert!(d.validate().is_err());
    assert_round_trip(&d);
    let empty = Draft::default();
    assert_round_trip(&empty);
    assert_eq!(valid(&empty), ok(""));
}

#[test]
fn parse_reports_syntax_only() {
    // Values are not checked until validate.
    let d = draft(&vip(&[("port", "70000")]));
    assert!(matches!(
        d.validate(),
        Err(ConfigError::Invalid { path: None, .. })
    ));
    match Draft::parse("[[vip]]\nname = \"v\"\ncolour = 1\n") {
        Err(ConfigError::Syntax {
            path: None,
            line: Some(3),
            column: Some(1),
            message,
        }) => assert!(message.contains("unknown field `colour`"), "{message}"),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn load_and_load_draft_name_the_file() {
    let f = TempFile::new("draft-example", EXAMPLE);
    let d = Draft::load(&f.0).expect("example loads");
    assert_eq!(d, draft(EXAMPLE));
    let (d2, c) = load_draft(&f.0).expect("example loads");
    assert_eq!((d2, c), (d, ok(EXAMPLE)));

    let f = TempFile::new("draft-syntax", "[agent]\nseed = 1\n");
    let e = Draft::load(&f.0).expect_err("unknown key");
    assert!(
        e.to_string().starts_with(&format!(
            "configuration file {}: line 2, column 1:",
            f.0.display()
        )),
        "{e}"
    );
    let f = TempFile::new("draft-invalid", &vip(&[("port", "-1")]));
    assert!(Draft::load(&f.0).is_ok(), "only the syntax is checked");
    match load_draft(&f.0) {
        Err(ConfigError::Invalid { path, .. }) => assert_eq!(path.as_deref(), Some(&*f.0)),
        other => panic!("expected Invalid naming the file, got {other:?}"),
    }
    let missing = std::path::Path::new("/nonexistent/lb.toml");
    assert!(matches!(
        Draft::load(missing),
        Err(ConfigError::Read { .. })
    ));
    assert!(matches!(load_draft(missing), Err(ConfigError::Read { .. })));
}

// ---------------------------------------------------------------------------------------
// VIPs
// ---------------------------------------------------------------------------------------

#[test]
fn add_vip() {
    let mut d = two_groups();
    let c = d.add_vip(new_vip("web6", "six")).expect("added");
    assert_eq!(c, valid(&d), "the returned configuration is the draft's");
    let v = c.vip("web6").expect("vip web6");
    assert_eq!(
        (v.address, v.port, v.protocol),
        (ip("2001:2::100"), 443, Protocol::Tcp)
    );
    assert_eq!(
        (v.mode.as_str(), v.hash.as_str(), v.ring_size),
        ("tunnel", "source-ip", 251)
    );
    assert_eq!(c.vips.len(), 3);
    assert_round_trip(&d);
    assert_eq!(valid(&draft(&d.to_toml())), c);

    // Defaults for everything optional.
    let mut d = draft(EXAMPLE);
    let c = d
        .add_vip(VipSpec {
            name: "ssh".to_owned(),
            address: ip("198.18.200.2"),
            port: 22,
            proto: Proto::Tcp,
            target_group: "web-servers".to_owned(),
            mode: None,
            gue_port: None,
            hash: None,
            ring_size: None,
            announce: None,
            announce_min_healthy: None,
        })
        .expect("added");
    let v = c.vip("ssh").expect("vip ssh");
    assert_eq!(
        (v.mode.as_str(), v.ring_size, v.fragments.as_str()),
        ("dr", crate::maglev::DEFAULT_SIZE, "drop")
    );
}

#[test]
fn add_vip_refusals_change_nothing() {
    let d = two_groups();
    assert_eq!(
        exists(refused(&d, |d| d.add_vip(new_vip("web", "six")))),
        "a VIP named \"web\" already exists"
    );
    assert_eq!(
        not_found(refused(&d, |d| d.add_vip(new_vip("web6", "nope")))),
        "no target group named \"nope\""
    );
    // A DR VIP whose group has targets of the other family.
    let mut dr = new_vip("web4", "six");
    dr.address = ip("198.18.200.9");
    dr.mode = None;
    assert_eq!(
        invalid(refused(&d, |d| d.add_vip(dr))),
        ["vip \"web4\": field \"mode\": \"dr\" only reaches targets of the VIP's address family \
          (IPv4), but target_group \"six\" has 2001:2:0:11::2; use mode = \"tunnel\" or \"gue\" \
          to mix families"]
    );
    // Every problem, as for a file.
    let mut bad = new_vip("bad", "six");
    bad.mode = Some("gue".to_owned());
    bad.ring_size = Some(1000);
    assert_eq!(
        invalid(refused(&d, |d| d.add_vip(bad))),
        [
            "vip \"bad\": field \"gue_port\": missing: required when mode = \"gue\" (the UDP \
             port the targets decapsulate on)",
            "vip \"bad\": field \"ring_size\": 1000 is not a supported size: use one of 251, \
             509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 65537, 131071",
        ]
    );
    let mut clash = new_vip("web-again", "web-servers");
    clash.address = ip("198.18.200.1");
    clash.port = 80;
    clash.mode = None;
    clash.hash = None;
    let p = invalid(refused(&d, |d| d.add_vip(clash)));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("vip \"web-again\": field \"port\": vip \"web\" already serves"));
}

#[test]
fn remove_vip() {
    let mut d = draft(EXAMPLE);
    let c = d.remove_vip("dns").expect("removed");
    assert_eq!(c.vips.len(), 1);
    assert!(c.vip("dns").is_none());
    assert_eq!(c, valid(&d));
    assert_round_trip(&d);
    assert_eq!(
        not_found(refused(&d, |d| d.remove_vip("dns"))),
        "no VIP named \"dns\""
    );
    // The last VIP may go: legal, with warnings.
    let c = d.remove_vip("web").expect("removed");
    assert!(c.vips.is_empty());
    assert!(!c.warnings.is_empty());
}

// ---------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------

#[test]
fn add_target() {
    let mut d = draft(EXAMPLE);
    let c = d
        .add_target("web-servers", ip("198.18.14.2"), None)
        .expect("added");
    let g = c.target_group("web-servers").expect("group");
    assert_eq!(
        g.targets.last(),
        Some(&Target {
            address: ip("198.18.14.2"),
            weight: 1
        }),
        "default weight"
    );
    assert_eq!(c, valid(&d));
    let c = d
        .add_target("web-servers", ip("198.18.15.2"), Some(0))
        .expect("added");
    assert_eq!(c.target_groups[0].targets.len(), 5);
    assert_eq!(c.target_groups[0].targets[4].weight, 0);
    assert_round_trip(&d);
    assert_eq!(valid(&draft(&d.to_toml())), c);
}

#[test]
fn add_target_refusals_change_nothing() {
    let d = two_groups();
    assert_eq!(
        exists(refused(&d, |d| d.add_target(
            "web-servers",
            ip("198.18.12.2"),
            Some(3)
        ))),
        "target 198.18.12.2 is already in target group \"web-servers\""
    );
    // Compared as addresses, not as text.
    assert_eq!(
        exists(refused(&d, |d| d.add_target(
            "six",
            ip("2001:2:0:11:0::2"),
            None
        ))),
        "target 2001:2:0:11::2 is already in target group \"six\""
    );
    assert_eq!(
        not_found(refused(&d, |d| d.add_target(
            "nope",
            ip("198.18.14.2"),
            None
        ))),
        "no target group named \"nope\""
    );
    assert_eq!(
        invalid(refused(&d, |d| d.add_target(
            "six",
            ip("198.18.200.1"),
            None
        ))),
        [
            "target_group \"six\": target 198.18.200.1: field \"address\": 198.18.200.1 is the \
          address of vip \"web\"; a target cannot be a VIP (its packets would loop back to the \
          load balancer)"
        ]
    );
    // The example's VIPs are DR over IPv4: an IPv6 target cannot be reached.
    let p = invalid(refused(&d, |d| {
        d.add_target("web-servers", ip("2001:2:0:13::2"), None)
    }));
    assert_eq!(p.len(), 2, "both VIPs: {p:?}");
    assert!(
        p[0].starts_with("vip \"web\": field \"mode\": \"dr\" only reaches"),
        "{p:?}"
    );
    assert!(p[1].starts_with("vip \"dns\": field \"mode\""), "{p:?}");
    let p = invalid(refused(&d, |d| d.add_target("six", ip("224.0.0.1"), None)));
    assert_eq!(
        p,
        [
            "target_group \"six\": target 224.0.0.1: field \"address\": 224.0.0.1 is a multicast \
          address; it must be a unicast address"
        ]
    );
}

#[test]
fn remove_target_and_set_weight() {
    let mut d = two_groups();
    let c = d
        .set_weight("web-servers", ip("198.18.12.2"), 65535)
        .expect("set");
    assert_eq!(c.target_groups[0].targets[1].weight, 65535);
    assert_eq!(c, valid(&d));
    // Addresses as written in another spelling.
    let c = d
        .set_weight("six", ip("2001:2:0:11:0:0:0:2"), 0)
        .expect("set");
    assert_eq!(c.target_group("six").expect("six").targets[0].weight, 0);
    let c = d
        .remove_target("six", ip("2001:2:0:0011::2"))
        .expect("removed");
    assert_eq!(
        c.target_group("six").expect("six").targets,
        [Target {
            address: ip("198.18.14.2"),
            weight: 1
        }]
    );
    let c = d
        .remove_target("web-servers", ip("198.18.11.2"))
        .expect("removed");
    assert_eq!(c.target_groups[0].targets.len(), 2);
    assert_round_trip(&d);
    assert_eq!(valid(&draft(&d.to_toml())), c);

    for (address, group) in [("198.18.11.2", "web-servers"), ("198.18.11.2", "six")] {
        let want = format!("target {address} is not in target group \"{group}\"");
        assert_eq!(
            not_found(refused(&d, |d| d.remove_target(group, ip(address)))),
            want
        );
        assert_eq!(
            not_found(refused(&d, |d| d.set_weight(group, ip(address), 2))),
            want
        );
    }
    assert_eq!(
        not_found(refused(&d, |d| d.remove_target("nope", ip("198.18.12.2")))),
        "no target group named \"nope\""
    );
    assert_eq!(
        not_found(refused(&d, |d| d.set_weight("nope", ip("198.18.12.2"), 1))),
        "no target group named \"nope\""
    );
}

#[test]
fn edits_of_an_invalid_draft_are_refused() {
    // Whatever was wrong before the edit is reported with it, and nothing changes.
    let d = draft(&(vip(&[("port", "70000")]) + &group("g", "", &["198.18.11.2"])));
    let p = invalid(refused(&d, |d| d.set_weight("g", ip("198.18.11.2"), 5)));
    assert_eq!(
        p,
        ["vip \"v\": field \"port\": 70000 is out of range: must be between 0 and 65535"]
    );
}

#[test]
fn edit_errors_read_as_their_reason() {
    let d = draft(EXAMPLE);
    let e = refused(&d, |d| d.remove_vip("nope"));
    assert_eq!(e.to_string(), "no VIP named \"nope\"");
    let e = refused(&d, |d| {
        d.add_target("web-servers", ip("198.18.200.1"), None)
    });
    assert!(
        e.to_string().starts_with(
            "configuration is invalid (1 problem):\n  - target_group \"web-servers\": target \
             198.18.200.1: field \"address\""
        ),
        "{e}"
    );
}
