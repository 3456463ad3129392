use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::Duration,
};

use lb_common::{
    service::{mode, vip_flags, FAMILY_FRAG_KEY, FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP},
    LbConfig, VipKey, VipMeta,
};

mod draft;
mod metrics;

use super::{
    load, parse, parse_with, validate::Limits, Config, ConfigError, Fragments, HashFields,
    HealthCheckProtocol, Mode, Protocol, StatusMatcher, Target, EXAMPLE,
};

fn ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|e| panic!("rejected: {e}\n--- text ---\n{text}"))
}

fn problems(text: &str) -> Vec<String> {
    match parse(text) {
        Err(ConfigError::Invalid { problems, path }) => {
            assert_eq!(path, None);
            problems
        }
        Err(e) => panic!("expected validation problems, got: {e}\n--- text ---\n{text}"),
        Ok(_) => panic!("accepted an invalid configuration:\n{text}"),
    }
}

/// The one problem `text` has.
fn problem(text: &str) -> String {
    let p = problems(text);
    assert_eq!(p.len(), 1, "expected one problem, got {p:#?}");
    p.into_iter().next().unwrap_or_default()
}

/// A `[[vip]]` table with the required fields filled in (VIP "v", 198.18.200.1:80 tcp, to
/// group "g"), each replaced or added by `fields` (TOML key, TOML value); an empty value
/// leaves the key out.
fn vip(fields: &[(&str, &str)]) -> String {
    let mut all: Vec<(String, String)> = [
        ("name", "\"v\""),
        ("address", "\"198.18.200.1\""),
        ("port", "80"),
        ("protocol", "\"tcp\""),
        ("target_group", "\"g\""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in fields {
        match all.iter_mut().find(|(name, _)| name == k) {
            Some(entry) => entry.1 = v.to_string(),
            None => all.push((k.to_string(), v.to_string())),
        }
    }
    let mut text = "[[vip]]\n".to_owned();
    for (k, v) in all.iter().filter(|(_, v)| !v.is_empty()) {
        text.push_str(&format!("{k} = {v}\n"));
    }
    text
}

/// A `[[target_group]]` called `name` with `keys` (TOML lines) and targets at `addresses`.
fn group(name: &str, keys: &str, addresses: &[&str]) -> String {
    let mut text = format!("[[target_group]]\nname = \"{name}\"\n{keys}\n");
    for a in addresses {
        text.push_str(&format!("[[target_group.target]]\naddress = \"{a}\"\n"));
    }
    text
}

/// Group "g" with one IPv4 target and `keys`.
fn group_g(keys: &str) -> String {
    group("g", keys, &["198.18.11.2"])
}

/// VIP "v" (with `fields` changed) and group "g".
fn vip_and_group(fields: &[(&str, &str)]) -> String {
    vip(fields) + &group_g("")
}

// ---------------------------------------------------------------------------------------
// The shipped example
// ---------------------------------------------------------------------------------------

#[test]
fn example_parses_cleanly() {
    let c = ok(EXAMPLE);
    assert_eq!(c.warnings, Vec::<String>::new());
    assert_eq!(c.agent.lb_config(), LbConfig::default());
    assert_eq!(
        c.agent.flow_table_entries,
        lb_common::flow::DEFAULT_FLOW_ENTRIES
    );

    let vip = Ipv4Addr::new(198, 18, 200, 1).into();
    let web = c.vip("web").expect("vip web");
    assert_eq!(
        (web.address, web.port, web.protocol, web.mode),
        (vip, 80, Protocol::Tcp, Mode::Dr)
    );
    assert_eq!(
        (web.hash, web.ring_size, web.fragments),
        (HashFields::FiveTuple, 65537, Fragments::Drop)
    );
    let dns = c.vip("dns").expect("vip dns");
    assert_eq!(
        (dns.address, dns.port, dns.protocol, dns.mode),
        (vip, 53, Protocol::Udp, Mode::Dr)
    );
    assert_eq!(c.vips.len(), 2);

    assert_eq!(c.target_groups.len(), 1);
    let g = c.group_of(web).expect("group of web");
    assert_eq!(c.group_of(dns), Some(g));
    assert_eq!(g.name, "web-servers");
    let addrs: Vec<Target> = ["198.18.11.2", "198.18.12.2", "198.18.13.2"]
        .iter()
        .map(|a| Target {
            address: a.parse().expect("address"),
            weight: 1,
        })
        .collect();
    assert_eq!(g.targets, addrs);
    assert!(g.fail_open);
    assert_eq!(g.slow_start, Duration::ZERO);
    assert_eq!(g.deregistration_delay, Duration::from_secs(30));
    assert!(g.unhealthy_connection_termination);
    assert_eq!(g.unhealthy_draining_interval, Duration::ZERO);
    assert_eq!(g.agent_check, None);
    let hc = &g.health_check;
    assert!(hc.enabled);
    assert_eq!(hc.protocol, HealthCheckProtocol::Tcp);
    assert_eq!(hc.port, Some(80));
    assert_eq!(hc.http, None);
    assert_eq!(hc.command, None);
    assert_eq!(
        (hc.interval, hc.timeout),
        (Duration::from_secs(2), Duration::from_secs(2))
    );
    assert_eq!((hc.healthy_threshold, hc.unhealthy_threshold), (2, 2));
}

/// The example's commented-out tunnel block, uncommented as its instructions say.
fn example_with_tunnel_block() -> String {
    let mut inside = false;
    let mut out = String::new();
    for line in EXAMPLE.lines() {
        if line.starts_with("# --- begin") {
            inside = true;
        } else if line.starts_with("# --- end") {
            inside = false;
        } else if inside {
            let line = line.strip_prefix('#').unwrap_or(line);
            let line = if line.starts_with('#') {
                line
            } else {
                line.strip_prefix(' ').unwrap_or(line)
            };
            out.push_str(line);
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn example_tunnel_block_parses_when_uncommented() {
    let text = example_with_tunnel_block();
    assert_ne!(text, EXAMPLE);
    let c = ok(&text);
    assert_eq!(c.warnings, Vec::<String>::new());
    let web6 = c.vip("web6").expect("vip web6");
    assert_eq!(web6.mode, Mode::Tunnel);
    assert_eq!(web6.hash, HashFields::SourceIp);
    assert_eq!(web6.ring_size, 16381);
    let g = c.group_of(web6).expect("group of web6");
    assert_eq!(g.targets.len(), 3);
    assert_eq!(g.targets[2].weight, 2);
    assert!(g.targets[2].address.is_ipv4(), "a 6in4 target");
    let http = g.health_check.http.as_ref().expect("http check");
    assert_eq!(http.path, "/healthz");
    assert_eq!(http.matcher.to_string(), "200-299");
    assert_eq!(g.health_check.port, Some(80));
    assert_eq!(g.health_check.timeout, Duration::from_secs(6));
}

// ---------------------------------------------------------------------------------------
// Defaults
// ---------------------------------------------------------------------------------------

#[test]
fn defaults_are_filled() {
    let c = ok(&vip_and_group(&[]));
    assert_eq!(c.warnings, Vec::<String>::new());
    assert_eq!(c.agent, super::AgentSettings::default());
    assert_eq!(c.agent.lb_config(), LbConfig::default());
    assert_eq!(c.agent.udp_idle_timeout, Duration::from_secs(30));
    assert_eq!(c.agent.max_new_flows_per_cpu, 125_000);
    assert_eq!(c.agent.tunnel_source_v4.to_string(), "198.18.255.0/24");
    assert_eq!(c.agent.tunnel_source_v6.to_string(), "2001:2:0:ffff::/64");

    let v = &c.vips[0];
    assert_eq!(v.mode, Mode::Dr);
    assert_eq!(v.hash, HashFields::FiveTuple);
    assert_eq!(v.ring_size, crate::maglev::DEFAULT_SIZE);
    assert_eq!(v.fragments, Fragments::Drop);

    let g = &c.target_groups[0];
    assert_eq!(g.targets[0].weight, 1);
    assert_eq!(g.deregistration_delay, Duration::from_secs(300));
    assert_eq!(g.slow_start, Duration::ZERO);
    assert!(g.fail_open);
    assert!(g.unhealthy_connection_termination);
    assert_eq!(g.unhealthy_draining_interval, Duration::ZERO);
    assert_eq!(g.agent_check, None);
    let hc = &g.health_check;
    assert!(hc.enabled);
    assert_eq!(hc.protocol, HealthCheckProtocol::Tcp);
    assert_eq!(hc.port, Some(80), "traffic port");
    assert_eq!(hc.http, None);
    assert_eq!(hc.command, None);
    assert_eq!(hc.interval, Duration::from_secs(30));
    assert_eq!(hc.timeout, Duration::from_secs(10));
    assert_eq!((hc.healthy_threshold, hc.unhealthy_threshold), (5, 2));
}

#[test]
fn http_and_https_health_check_defaults() {
    for (name, protocol) in [
        ("http", HealthCheckProtocol::Http),
        ("https", HealthCheckProtocol::Https),
    ] {
        let c = ok(&(vip(&[])
            + &group_g(&format!(
                "[target_group.health_check]\nprotocol = \"{name}\""
            ))));
        let hc = &c.target_groups[0].health_check;
        assert_eq!(hc.protocol, protocol);
        assert_eq!(hc.timeout, Duration::from_secs(6), "{name}");
        assert_eq!(hc.interval, Duration::from_secs(30));
        let http = hc.http.as_ref().expect("http settings");
        assert_eq!(http.body_contains, None);
        assert_eq!(http.path, "/");
        assert_eq!(http.matcher.to_string(), "200-399");
        assert!(http.matcher.matches(200) && http.matcher.matches(399));
        assert!(!http.matcher.matches(400));
    }
}

#[test]
fn default_timeout_is_lowered_to_a_shorter_interval() {
    let c = ok(&(vip(&[]) + &group_g("[target_group.health_check]\ninterval_secs = 5")));
    assert_eq!(
        c.target_groups[0].health_check.timeout,
        Duration::from_secs(5)
    );
    let c = ok(&(vip(&[])
        + &group_g("[target_group.health_check]\nprotocol = \"http\"\ninterval_secs = 3")));
    assert_eq!(
        c.target_groups[0].health_check.timeout,
        Duration::from_secs(3)
    );
}

#[test]
fn empty_file_is_valid_with_a_warning() {
    let c = ok("");
    assert!(c.vips.is_empty() && c.target_groups.is_empty());
    assert_eq!(
        c.warnings,
        [
            "no VIPs are defined: the load balancer forwards nothing (every packet passes to the \
          kernel)"
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Syntax and unknown keys
// ---------------------------------------------------------------------------------------

fn syntax(text: &str) -> (Option<usize>, Option<usize>, String) {
    match parse(text) {
        Err(ConfigError::Syntax {
            path,
            line,
            column,
            message,
        }) => {
            assert_eq!(path, None);
            (line, column, message)
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn unknown_field_is_rejected_with_line_and_column() {
    let text = vip(&[("colour", "\"red\"")]) + &group_g("");
    let line = text
        .lines()
        .position(|l| l.starts_with("colour"))
        .expect("line")
        + 1;
    let (l, c, message) = syntax(&text);
    assert_eq!((l, c), (Some(line), Some(1)));
    assert!(
        message.contains("unknown field `colour`"),
        "message: {message}"
    );
    let shown = parse(&text).expect_err("rejected").to_string();
    assert!(
        shown.starts_with(&format!(
            "configuration: line {line}, column 1: unknown field"
        )),
        "{shown}"
    );
}

#[test]
fn unknown_fields_in_every_table_are_rejected() {
    let cases = [
        ("[agent]\nhash_sead = 1\n".to_owned(), "hash_sead"),
        // Targets have no port: lb never rewrites the destination port.
        (
            vip(&[])
                + &group_g("")
                + "  [[target_group.target]]\n  address = \"198.18.12.2\"\n  port = 8080\n",
            "port",
        ),
        (
            vip(&[]) + &group_g("[target_group.health_check]\n    intervall_secs = 5"),
            "intervall_secs",
        ),
        (vip(&[]) + &group_g("") + "[vips]\n", "vips"),
    ];
    for (text, key) in cases {
        let (l, c, message) = syntax(&text);
        assert!(
            message.contains(&format!("unknown field `{key}`")),
            "{message}\n{text}"
        );
        // The last line naming the key (an earlier table may have a valid one).
        let lines: Vec<&str> = text.lines().collect();
        let line = lines
            .iter()
            .rposition(|l| l.trim_start().starts_with(key) || l.starts_with(&format!("[{key}]")))
            .expect("line");
        assert_eq!(l, Some(line + 1), "{message}\n{text}");
        let column = lines[line].find(key).expect("key") + 1;
        assert_eq!(c, Some(column), "{message}\n{text}");
    }
}

#[test]
fn wrong_type_and_bad_toml_are_syntax_errors() {
    let (l, _, message) = syntax(&vip(&[("port", "\"80\"")]));
    assert_eq!(l, Some(4));
    assert!(message.contains("invalid type"), "{message}");
    let (l, c, message) = syntax("[[vip]]\nname = \"v\nport = 1\n");
    assert_eq!(l, Some(2), "{message}");
    assert!(c.is_some(), "{message}");
}

// ---------------------------------------------------------------------------------------
// Every problem is collected
// ---------------------------------------------------------------------------------------

#[test]
fn all_problems_are_reported() {
    let text =
        vip(&[("port", "70000"), ("mode", "\"nat\"")]) + &group_g("deregistration_delay_secs = -1");
    assert_eq!(
        problems(&text),
        [
            "vip \"v\": field \"port\": 70000 is out of range: must be between 0 and 65535",
            "vip \"v\": field \"mode\": \"nat\" is not one of \"dr\", \"tunnel\", \"gue\"",
            "target_group \"g\": field \"deregistration_delay_secs\": -1 is out of range: must \
             be between 0 and 3600",
        ]
    );
    let shown = parse(&text).expect_err("rejected").to_string();
    assert!(
        shown.starts_with("configuration is invalid (3 problems):\n  - vip \"v\": field \"port\""),
        "{shown}"
    );
    assert_eq!(shown.lines().count(), 4);
}

#[test]
fn missing_required_fields() {
    assert_eq!(
        problems("[[vip]]\nname = \"v\"\n"),
        [
            "vip \"v\": field \"address\": missing (required)",
            "vip \"v\": field \"port\": missing (required)",
            "vip \"v\": field \"protocol\": missing (required)",
            "vip \"v\": field \"target_group\": missing (required)",
        ]
    );
    assert_eq!(
        problems(
            &(vip(&[]) + &group_g("") + "[[vip]]\n[[target_group]]\n[[target_group.target]]\n")
        ),
        [
            "vip #2: field \"name\": missing (required)",
            "vip #2: field \"address\": missing (required)",
            "vip #2: field \"port\": missing (required)",
            "vip #2: field \"protocol\": missing (required)",
            "vip #2: field \"target_group\": missing (required)",
            "target_group #2: field \"name\": missing (required)",
            "target_group #2: target #1: field \"address\": missing (required)",
        ]
    );
}

// ---------------------------------------------------------------------------------------
// One test per rule
// ---------------------------------------------------------------------------------------

#[test]
fn names_are_checked() {
    assert_eq!(
        problem(&vip_and_group(&[("name", "\"web server\"")])),
        "vip \"web server\": field \"name\": \"web server\" contains ' '; names use only \
         letters, digits, '.', '_' and '-'"
    );
    let long = "x".repeat(65);
    assert_eq!(
        problem(&vip_and_group(&[("name", &format!("\"{long}\""))])),
        format!("vip \"{long}\": field \"name\": is 65 characters long; at most 64 are allowed")
    );
    assert_eq!(
        problem(&vip_and_group(&[("name", "\"\"")])),
        "vip #1: field \"name\": must not be empty"
    );
    ok(&vip_and_group(&[(
        "name",
        &format!("\"{}\"", "a".repeat(64)),
    )]));
    ok(&vip_and_group(&[("name", "\"Web-1.prod_v2\"")]));
    assert_eq!(
        problem(&(vip(&[("target_group", "\"g/1\"")]) + &group("g/1", "", &["198.18.11.2"]))),
        "target_group \"g/1\": field \"name\": \"g/1\" contains '/'; names use only letters, \
         digits, '.', '_' and '-'"
    );
}

#[test]
fn vip_names_are_unique() {
    let text = vip(&[])
        + &vip(&[("port", "81")])
        + &vip(&[("port", "82")])
        + &group_g("[target_group.health_check]\nport = 80");
    assert_eq!(
        problems(&text),
        [
            "vip \"v\" (#2): field \"name\": vip #1 has the same name; names must be unique",
            "vip \"v\" (#3): field \"name\": vip #1 has the same name; names must be unique",
        ]
    );
}

#[test]
fn target_group_names_are_unique() {
    let text = vip(&[]) + &group_g("") + &group("g", "", &["198.18.12.2"]);
    assert_eq!(
        problem(&text),
        "target_group \"g\" (#2): field \"name\": target_group #1 has the same name; names \
         must be unique"
    );
}

#[test]
fn address_port_protocol_are_unique() {
    let text = vip(&[("name", "\"a\"")]) + &vip(&[("name", "\"b\"")]) + &group_g("");
    assert_eq!(
        problem(&text),
        "vip \"b\": field \"port\": vip \"a\" already serves 198.18.200.1 port 80 tcp; each \
         address, port and protocol belongs to one VIP"
    );
    // The same address written differently is the same address.
    let text = vip(&[("name", "\"a\""), ("address", "\"2001:2:0:200::1\"")])
        + &vip(&[("name", "\"b\""), ("address", "\"2001:2:0:200:0:0:0:1\"")])
        + &group("g", "", &["2001:2:0:11::2"]);
    assert_eq!(
        problem(&text),
        "vip \"b\": field \"port\": vip \"a\" already serves 2001:2:0:200::1 port 80 tcp; each \
         address, port and protocol belongs to one VIP"
    );
    // Another protocol, another port, or port 0 (every port) next to port 80: all fine.
    let c = ok(&(vip(&[("name", "\"a\"")])
        + &vip(&[("name", "\"b\""), ("protocol", "\"udp\"")])
        + &vip(&[("name", "\"c\""), ("port", "0")])
        + &vip(&[("name", "\"d\""), ("port", "81")])
        + &group_g("[target_group.health_check]\nport = 80")));
    assert_eq!(c.vips.len(), 4);
}

#[test]
fn target_group_must_exist() {
    assert_eq!(
        problem(&vip_and_group(&[("target_group", "\"web\"")])),
        "vip \"v\": field \"target_group\": no target_group is named \"web\" (defined: \"g\")"
    );
    assert_eq!(
        problems(&vip(&[])),
        ["vip \"v\": field \"target_group\": no target_group is named \"g\" (there are none)"]
    );
}

#[test]
fn dr_needs_targets_of_the_vip_family() {
    let text = vip(&[])
        + &group(
            "g",
            "",
            &["198.18.11.2", "2001:2:0:11::2", "2001:2:0:12::2"],
        );
    assert_eq!(
        problem(&text),
        "vip \"v\": field \"mode\": \"dr\" only reaches targets of the VIP's address family \
         (IPv4), but target_group \"g\" has 2001:2:0:11::2, 2001:2:0:12::2; use mode = \
         \"tunnel\" or \"gue\" to mix families"
    );
    let text = vip(&[("address", "\"2001:2:0:200::1\"")]) + &group_g("");
    assert_eq!(
        problem(&text),
        "vip \"v\": field \"mode\": \"dr\" only reaches targets of the VIP's address family \
         (IPv6), but target_group \"g\" has 198.18.11.2; use mode = \"tunnel\" or \"gue\" to \
         mix families"
    );
    // Tunnels may mix: 4in6 and 6in4.
    for m in ["\"tunnel\"", "\"gue\"\ngue_port = 6080"] {
        let text = vip(&[("mode", m)]) + &group("g", "", &["198.18.11.2", "2001:2:0:11::2"]);
        ok(&text);
    }
}

#[test]
fn gue_port_is_required_for_gue_and_rejected_otherwise() {
    assert_eq!(
        problem(&vip_and_group(&[("mode", "\"gue\"")])),
        "vip \"v\": field \"gue_port\": missing: required when mode = \"gue\" (the UDP port \
         the targets decapsulate on)"
    );
    assert_eq!(
        problem(&vip_and_group(&[("mode", "\"gue\""), ("gue_port", "0")])),
        "vip \"v\": field \"gue_port\": 0 is out of range: must be between 1 and 65535"
    );
    assert_eq!(
        problem(&vip_and_group(&[("gue_port", "6080")])),
        "vip \"v\": field \"gue_port\": only for mode = \"gue\", not mode = \"dr\""
    );
    assert_eq!(
        problem(&vip_and_group(&[
            ("mode", "\"tunnel\""),
            ("gue_port", "6080")
        ])),
        "vip \"v\": field \"gue_port\": only for mode = \"gue\", not mode = \"tunnel\""
    );
    let c = ok(&vip_and_group(&[("mode", "\"gue\""), ("gue_port", "6080")]));
    assert_eq!(c.vips[0].mode, Mode::Gue { port: 6080 });
}

#[test]
fn enum_fields_name_their_choices() {
    let cases = [
        (
            "protocol",
            "\"TCP\"",
            "\"TCP\" is not one of \"tcp\", \"udp\"",
        ),
        (
            "hash",
            "\"source-ip-port\"",
            "\"source-ip-port\" is not one of \"five-tuple\", \"source-ip\", \
             \"source-ip-dest-port\"",
        ),
        (
            "fragments",
            "\"reassemble\"",
            "\"reassemble\" is not one of \"drop\", \"route\"",
        ),
    ];
    for (field, value, why) in cases {
        assert_eq!(
            problem(&vip_and_group(&[(field, value)])),
            format!("vip \"v\": field \"{field}\": {why}")
        );
    }
}

#[test]
fn fragment_routing_requires_five_tuple_hash() {
    for hash in ["source-ip", "source-ip-dest-port"] {
        assert_eq!(
            problem(&vip_and_group(&[
                ("fragments", "\"route\""),
                ("hash", &format!("\"{hash}\""))
            ])),
            format!(
                "vip \"v\": field \"fragments\": \"route\" places every packet of the VIP by \
                 (source, destination, protocol), which overrides hash = \"{hash}\"; set hash = \
                 \"five-tuple\" or leave hash out"
            )
        );
    }
    ok(&vip_and_group(&[
        ("fragments", "\"route\""),
        ("hash", "\"five-tuple\""),
    ]));
    ok(&vip_and_group(&[("fragments", "\"route\"")]));
}

#[test]
fn one_fragment_routing_vip_per_address_and_protocol() {
    let text = vip(&[("name", "\"a\""), ("fragments", "\"route\"")])
        + &vip(&[
            ("name", "\"b\""),
            ("port", "81"),
            ("fragments", "\"route\""),
        ])
        + &group_g("[target_group.health_check]\nport = 80");
    assert_eq!(
        problem(&text),
        "vip \"b\": field \"fragments\": vip \"a\" already routes tcp fragments to \
         198.18.200.1; later fragments carry no port, so at most one VIP per address and \
         protocol may set fragments = \"route\""
    );
    // Another protocol, or a VIP that drops fragments, may share the address.
    ok(&(vip(&[("name", "\"a\""), ("fragments", "\"route\"")])
        + &vip(&[
            ("name", "\"b\""),
            ("protocol", "\"udp\""),
            ("fragments", "\"route\""),
        ])
        + &vip(&[("name", "\"c\""), ("port", "81")])
        + &group_g("[target_group.health_check]\nport = 80")));
}

#[test]
fn ring_size_must_be_a_supported_prime() {
    assert_eq!(
        problem(&vip_and_group(&[("ring_size", "65536")])),
        "vip \"v\": field \"ring_size\": 65536 is not a supported size: use one of 251, 509, \
         1021, 2039, 4093, 8191, 16381, 32749, 65521, 65537, 131071"
    );
    for &size in crate::maglev::SIZES {
        let c = ok(&vip_and_group(&[("ring_size", &size.to_string())]));
        assert_eq!(c.vips[0].ring_size, size);
    }
}

#[test]
fn small_ring_warns_and_too_small_ring_is_rejected() {
    let addrs: Vec<String> = (0..3).map(|i| format!("198.18.11.{}", i + 2)).collect();
    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let c = ok(&(vip(&[("ring_size", "251")]) + &group("g", "", &addrs)));
    assert_eq!(
        c.warnings,
        [format!(
            "vip \"v\": field \"ring_size\": {} (target_group \"g\" has 3 targets)",
            crate::maglev::warn_small(251, 3).expect("a warning")
        )]
    );

    let addrs: Vec<String> = (0..252)
        .map(|i| format!("2001:2:0:11::{:x}", i + 2))
        .collect();
    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let text =
        vip(&[("address", "\"2001:2:0:200::1\""), ("ring_size", "251")]) + &group("g", "", &addrs);
    assert_eq!(
        problem(&text),
        "vip \"v\": field \"ring_size\": 251 slots cannot hold the 252 targets of \
         target_group \"g\"; use a larger size"
    );
}

#[test]
fn target_addresses_are_unique_within_a_group() {
    let text = vip(&[]) + &group("g", "", &["198.18.11.2", "198.18.12.2", "198.18.11.2"]);
    assert_eq!(
        problem(&text),
        "target_group \"g\": target 198.18.11.2: field \"address\": 198.18.11.2 is listed twice \
         in the group (targets #1 and #3); each address may appear once per group"
    );
    // The same address in two groups is two targets.
    ok(&(vip(&[("name", "\"a\"")])
        + &vip(&[("name", "\"b\""), ("port", "81"), ("target_group", "\"h\"")])
        + &group_g("")
        + &group("h", "", &["198.18.11.2"])));
}

#[test]
fn addresses_must_be_unicast() {
    let cases = [
        (
            "224.0.0.1",
            "224.0.0.1 is a multicast address; it must be a unicast address",
        ),
        (
            "ff02::1",
            "ff02::1 is a multicast address; it must be a unicast address",
        ),
        (
            "0.0.0.0",
            "0.0.0.0 is the unspecified address; it must be a unicast address",
        ),
        (
            "::",
            ":: is the unspecified address; it must be a unicast address",
        ),
        (
            "255.255.255.255",
            "255.255.255.255 is the broadcast address; it must be a unicast address",
        ),
        (
            "127.0.0.1",
            "127.0.0.1 is a loopback address, which never crosses the network; it must be a \
             unicast address",
        ),
        (
            "::ffff:198.18.200.1",
            "::ffff:198.18.200.1 is an IPv4-mapped IPv6 address, which never appears on the \
             wire; write the IPv4 address; it must be a unicast address",
        ),
        (
            "198.18.200",
            "\"198.18.200\" is not an IPv4 or IPv6 address",
        ),
        (
            "198.18.200.0/24",
            "\"198.18.200.0/24\" is a prefix; give a single address",
        ),
        (
            " 198.18.200.1",
            "\" 198.18.200.1\" is not an IPv4 or IPv6 address",
        ),
    ];
    for (addr, why) in cases {
        assert_eq!(
            problem(&vip_and_group(&[("address", &format!("\"{addr}\""))])),
            format!("vip \"v\": field \"address\": {why}"),
        );
        assert_eq!(
            problem(&(vip(&[]) + &group("g", "", &["198.18.11.2", addr]))),
            format!("target_group \"g\": target {addr}: field \"address\": {why}"),
        );
    }
}

#[test]
fn a_target_cannot_be_a_vip() {
    let text = vip(&[]) + &group("g", "", &["198.18.11.2", "198.18.200.1"]);
    assert_eq!(
        problem(&text),
        "target_group \"g\": target 198.18.200.1: field \"address\": 198.18.200.1 is the address \
         of vip \"v\"; a target cannot be a VIP (its packets would loop back to the load \
         balancer)"
    );
}

#[test]
fn weights_are_checked() {
    let text = vip(&[]) + &group_g("") + "weight = 70000\n";
    assert_eq!(
        problem(&text),
        "target_group \"g\": target 198.18.11.2: field \"weight\": 70000 is out of range: must \
         be between 0 and 65535"
    );
    let c = ok(&(vip(&[]) + &group("g", "", &["198.18.11.2", "198.18.12.2"]) + "weight = 65535\n"));
    assert_eq!(
        c.target_groups[0]
            .targets
            .iter()
            .map(|t| t.weight)
            .collect::<Vec<_>>(),
        [1, 65535]
    );
}

#[test]
fn too_many_vips() {
    let mut text = group_g("[target_group.health_check]\nport = 80");
    for i in 0..=lb_common::service::MAX_VIPS {
        text.push_str(&vip(&[
            ("name", &format!("\"v{i}\"")),
            ("port", &(i + 1).to_string()),
        ]));
    }
    assert_eq!(
        problem(&text),
        "too many VIPs: 1025 are defined, the data plane holds at most 1024"
    );
}

#[test]
fn too_many_targets() {
    let limits = Limits {
        max_vips: 10,
        max_targets: 3,
    };
    let text = vip(&[])
        + &group_g("")
        + &group("h", "", &["198.18.11.2", "198.18.12.2"])
        + &group("i", "", &["198.18.13.2"]);
    match parse_with(&text, None, &limits) {
        Err(ConfigError::Invalid { problems, .. }) => assert_eq!(
            problems,
            ["too many targets: 4 across all target groups, the data plane holds at most 3"]
        ),
        other => panic!("{other:?}"),
    }
    let text = vip(&[]) + &group_g("") + &group("h", "", &["198.18.11.2", "198.18.12.2"]);
    assert!(parse_with(&text, None, &limits).is_ok());
}

#[test]
fn agent_settings_are_checked() {
    let cases = [
        (
            "hash_seed = -1",
            "hash_seed",
            "-1 is out of range: must be between 0 and 4294967295",
        ),
        (
            "hash_seed = 0x100000000",
            "hash_seed",
            "4294967296 is out of range: must be between 0 and 4294967295",
        ),
        (
            "flow_table_entries = 100",
            "flow_table_entries",
            "100 is out of range: must be between 1024 and 67108864",
        ),
        (
            "udp_idle_timeout_secs = 0",
            "udp_idle_timeout_secs",
            "0 is out of range: must be between 1 and 3600",
        ),
        (
            "max_new_flows_per_cpu = -5",
            "max_new_flows_per_cpu",
            "-5 is out of range: must be between 0 and 4294967295",
        ),
        (
            "tunnel_source_v4 = \"198.18.255.0/7\"",
            "tunnel_source_v4",
            "prefix length 7 is out of range: must be between 8 and 32",
        ),
        (
            "tunnel_source_v4 = \"198.18.255.1/24\"",
            "tunnel_source_v4",
            "\"198.18.255.1/24\" has host bits set (the flow hash fills them); write \
             198.18.255.0/24",
        ),
        (
            "tunnel_source_v4 = \"198.18.255.1\"",
            "tunnel_source_v4",
            "\"198.18.255.1\" is not a prefix: write address/length, such as \
             \"198.18.255.0/24\"",
        ),
        (
            "tunnel_source_v4 = \"2001:2:0:ffff::/64\"",
            "tunnel_source_v4",
            "\"2001:2:0:ffff::/64\" is an IPv6 prefix; this field takes an IPv4 one",
        ),
        (
            "tunnel_source_v4 = \"224.1.0.0/16\"",
            "tunnel_source_v4",
            "\"224.1.0.0/16\" is not a unicast prefix; tunnelled packets need unicast source \
             addresses",
        ),
        (
            "tunnel_source_v6 = \"2001:2:0:ffff::/15\"",
            "tunnel_source_v6",
            "prefix length 15 is out of range: must be between 16 and 128",
        ),
        (
            "tunnel_source_v6 = \"2001:2:0:ffff::1/64\"",
            "tunnel_source_v6",
            "\"2001:2:0:ffff::1/64\" has host bits set (the flow hash fills them); write \
             2001:2:0:ffff::/64",
        ),
        (
            "tunnel_source_v6 = \"198.18.255.0/24\"",
            "tunnel_source_v6",
            "\"198.18.255.0/24\" is an IPv4 prefix; this field takes an IPv6 one",
        ),
        (
            "tunnel_source_v6 = \"2001:2:0:ffff::/x\"",
            "tunnel_source_v6",
            "\"x\" is not a prefix length",
        ),
    ];
    for (line, field, why) in cases {
        assert_eq!(
            problem(&format!("[agent]\n{line}\n{}", vip_and_group(&[]))),
            format!("agent: field \"{field}\": {why}")
        );
    }
}

#[test]
fn agent_settings_reach_the_data_plane_config() {
    let c = ok(&format!(
        "[agent]\nhash_seed = 0xdeadbeef\nflow_table_entries = 4096\nudp_idle_timeout_secs = \
         120\nmax_new_flows_per_cpu = 0\ntunnel_source_v4 = \"198.19.0.0/16\"\ntunnel_source_v6 \
         = \"2001:2:0:fffe:8000::/65\"\n{}",
        vip_and_group(&[])
    ));
    assert_eq!(c.agent.flow_table_entries, 4096);
    let lb = c.agent.lb_config();
    assert_eq!(
        lb,
        LbConfig {
            hash_seed: 0xdead_beef,
            max_new_flows_per_cpu: 0,
            udp_idle_ns: 120_000_000_000,
            tunnel_src4: [198, 19, 0, 0],
            tunnel_src4_prefix: 16,
            tunnel_src6_prefix: 65,
            _pad: [0; 2],
            tunnel_src6: [0x20, 0x01, 0, 2, 0, 0, 0xff, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0],
        }
    );
    // A /32 (every tunnel from one address) and a /128 are allowed.
    ok(&format!(
        "[agent]\ntunnel_source_v4 = \"198.19.0.1/32\"\ntunnel_source_v6 = \
         \"2001:2::1/128\"\n{}",
        vip_and_group(&[])
    ));
}

#[test]
fn lifecycle_settings_are_checked() {
    let cases = [
        (
            "deregistration_delay_secs = 3601",
            "deregistration_delay_secs",
            "3601 is out of range: must be between 0 and 3600",
        ),
        (
            "slow_start_secs = 29",
            "slow_start_secs",
            "29 is out of range: must be 0 (off) or between 30 and 900",
        ),
        (
            "slow_start_secs = 901",
            "slow_start_secs",
            "901 is out of range: must be 0 (off) or between 30 and 900",
        ),
    ];
    for (line, field, why) in cases {
        assert_eq!(
            problem(&(vip(&[]) + &group_g(line))),
            format!("target_group \"g\": field \"{field}\": {why}")
        );
    }
    let c = ok(&(vip(&[])
        + &group_g("deregistration_delay_secs = 0\nslow_start_secs = 30\nfail_open = false")));
    let g = &c.target_groups[0];
    assert_eq!(g.deregistration_delay, Duration::ZERO);
    assert_eq!(g.slow_start, Duration::from_secs(30));
    assert!(!g.fail_open);
}

#[test]
fn health_check_settings_are_checked() {
    let cases = [
        (
            "protocol = \"icmp\"",
            "protocol",
            "\"icmp\" is not one of \"tcp\", \"http\", \"https\", \"exec\"",
        ),
        (
            "port = 0",
            "port",
            "0 is out of range: must be between 1 and 65535",
        ),
        (
            "interval_secs = 0",
            "interval_secs",
            "0 is out of range: must be between 1 and 300",
        ),
        (
            "interval_secs = 301",
            "interval_secs",
            "301 is out of range: must be between 1 and 300",
        ),
        (
            "timeout_secs = 121",
            "timeout_secs",
            "121 is out of range: must be between 1 and 120",
        ),
        (
            "interval_secs = 5\ntimeout_secs = 6",
            "timeout_secs",
            "6 is longer than interval_secs (5): a check must end before the next one starts",
        ),
        (
            "healthy_threshold = 1",
            "healthy_threshold",
            "1 is out of range: must be between 2 and 10",
        ),
        (
            "unhealthy_threshold = 11",
            "unhealthy_threshold",
            "11 is out of range: must be between 2 and 10",
        ),
        (
            "path = \"/health\"",
            "path",
            "only for protocol = \"http\" or \"https\", not \"tcp\"",
        ),
        (
            "matcher = \"200\"",
            "matcher",
            "only for protocol = \"http\" or \"https\", not \"tcp\"",
        ),
        (
            "protocol = \"http\"\npath = \"health\"",
            "path",
            "\"health\" does not start with '/'",
        ),
        (
            "protocol = \"http\"\npath = \"/a b\"",
            "path",
            "\"/a b\" contains ' '; a path is visible ASCII (percent-encode anything else)",
        ),
        (
            "protocol = \"https\"\nmatcher = \"200-600\"",
            "matcher",
            "status code 600 is out of range: must be between 200 and 599",
        ),
        (
            "protocol = \"http\"\nmatcher = \"199\"",
            "matcher",
            "status code 199 is out of range: must be between 200 and 599",
        ),
        (
            "protocol = \"http\"\nmatcher = \"2xx\"",
            "matcher",
            "\"2xx\" is not a status code; write codes, ranges and comma lists such as \"200\", \
             \"200-299\" or \"200,202\"",
        ),
        (
            "protocol = \"http\"\nmatcher = \"300-200\"",
            "matcher",
            "\"300-200\" is an empty range (write the smaller code first)",
        ),
        (
            "protocol = \"http\"\nmatcher = \"200,\"",
            "matcher",
            "\"\" is not a status code; write codes, ranges and comma lists such as \"200\", \
             \"200-299\" or \"200,202\"",
        ),
    ];
    for (lines, field, why) in cases {
        assert_eq!(
            problem(&(vip(&[]) + &group_g(&format!("[target_group.health_check]\n{lines}")))),
            format!("target_group \"g\": field \"health_check.{field}\": {why}"),
            "{lines}"
        );
    }
    // Below NLB's minimums (interval 5, timeout 2) is allowed; timeout = interval too.
    let c =
        ok(&(vip(&[])
            + &group_g("[target_group.health_check]\ninterval_secs = 1\ntimeout_secs = 1")));
    let hc = &c.target_groups[0].health_check;
    assert_eq!(
        (hc.interval, hc.timeout),
        (Duration::from_secs(1), Duration::from_secs(1))
    );
}

/// The problems of VIP "v" and group "g" with a `[target_group.health_check]` of `lines`.
fn health_check_problems(lines: &str) -> Vec<String> {
    problems(&(vip(&[]) + &group_g(&format!("[target_group.health_check]\n{lines}"))))
}

fn health_check_of(lines: &str) -> super::HealthCheck {
    let c = ok(&(vip(&[]) + &group_g(&format!("[target_group.health_check]\n{lines}"))));
    c.target_groups[0].health_check.clone()
}

#[test]
fn exec_health_check() {
    let hc =
        health_check_of("protocol = \"exec\"\ncommand = [\"/usr/bin/check\", \"-q\", \"web\"]");
    assert_eq!(hc.protocol, HealthCheckProtocol::Exec);
    assert_eq!(hc.protocol.to_string(), "exec");
    assert_eq!(
        hc.command.as_deref(),
        Some(
            &[
                "/usr/bin/check".to_owned(),
                "-q".to_owned(),
                "web".to_owned()
            ][..]
        )
    );
    assert_eq!(hc.http, None);
    assert_eq!(hc.port, Some(80), "the traffic port, passed to the program");
    assert_eq!(hc.timeout, Duration::from_secs(10), "tcp's default");
    let argv: Vec<String> = (0..32).map(|i| format!("\"/a{i}\"")).collect();
    let hc = health_check_of(&format!(
        "protocol = \"exec\"\ncommand = [{}]\nport = 8080\ninterval_secs = 3",
        argv.join(", ")
    ));
    assert_eq!(hc.command.map(|c| c.len()), Some(32));
    assert_eq!((hc.port, hc.timeout), (Some(8080), Duration::from_secs(3)));

    let field =
        |f: &str, why: &str| format!("target_group \"g\": field \"health_check.{f}\": {why}");
    let too_long: Vec<String> = (0..33).map(|_| "\"/bin/true\"".to_owned()).collect();
    let cases = [
        (
            "protocol = \"exec\"".to_owned(),
            field(
                "command",
                "missing: required when protocol = \"exec\" (the program to run and its \
                 arguments)",
            ),
        ),
        (
            "protocol = \"exec\"\ncommand = []".to_owned(),
            field(
                "command",
                "is empty; give the program to run (an absolute path) and its arguments",
            ),
        ),
        (
            format!("protocol = \"exec\"\ncommand = [{}]", too_long.join(", ")),
            field(
                "command",
                "has 33 elements; at most 32 are allowed (the program and 31 arguments)",
            ),
        ),
        (
            "protocol = \"exec\"\ncommand = [\"check\", \"/x\"]".to_owned(),
            field(
                "command",
                "\"check\" is not an absolute path; the program (the first element) must be \
                 given as one, since no PATH is searched",
            ),
        ),
        (
            "protocol = \"exec\"\ncommand = [\"/bin/check\", \"a\\u0000b\"]".to_owned(),
            field(
                "command",
                "element #2 contains a NUL character, which cannot be passed to a program",
            ),
        ),
        (
            "command = [\"/bin/true\"]".to_owned(),
            field("command", "only for protocol = \"exec\", not \"tcp\""),
        ),
        (
            "protocol = \"http\"\ncommand = [\"/bin/true\"]".to_owned(),
            field("command", "only for protocol = \"exec\", not \"http\""),
        ),
        (
            "protocol = \"exec\"\ncommand = [\"/bin/true\"]\npath = \"/\"".to_owned(),
            field(
                "path",
                "only for protocol = \"http\" or \"https\", not \"exec\"",
            ),
        ),
        (
            "protocol = \"exec\"\ncommand = [\"/bin/true\"]\nmatcher = \"200\"".to_owned(),
            field(
                "matcher",
                "only for protocol = \"http\" or \"https\", not \"exec\"",
            ),
        ),
    ];
    for (lines, want) in cases {
        assert_eq!(health_check_problems(&lines), [want], "{lines}");
    }
    // Checked even with checks disabled, as the HTTP settings are.
    assert_eq!(
        health_check_problems("enabled = false\nprotocol = \"exec\"").len(),
        1
    );
    // A command that is not a list of strings is a TOML-level error.
    let (_, _, message) = syntax(
        &(vip(&[])
            + &group_g(
                "[target_group.health_check]\nprotocol = \"exec\"\ncommand = \"/bin/true\"",
            )),
    );
    assert!(message.contains("invalid type"), "{message}");
}

#[test]
fn http_body_check() {
    let hc = health_check_of("protocol = \"https\"\nbody = \"ready\"");
    let http = hc.http.expect("http settings");
    assert_eq!(http.body_contains.as_deref(), Some("ready"));
    let max = "x".repeat(256);
    let hc = health_check_of(&format!("protocol = \"http\"\nbody = \"{max}\""));
    assert_eq!(
        hc.http.and_then(|h| h.body_contains).map(|b| b.len()),
        Some(256)
    );

    let field = |why: &str| format!("target_group \"g\": field \"health_check.body\": {why}");
    let cases = [
        (
            "protocol = \"http\"\nbody = \"\"".to_owned(),
            field("must not be empty (leave it out to accept any body)"),
        ),
        (
            format!("protocol = \"http\"\nbody = \"{}\"", "é".repeat(129)),
            field("is 258 bytes long; at most 256 are allowed"),
        ),
        (
            "body = \"OK\"".to_owned(),
            field("only for protocol = \"http\" or \"https\", not \"tcp\""),
        ),
        (
            "protocol = \"exec\"\ncommand = [\"/bin/true\"]\nbody = \"OK\"".to_owned(),
            field("only for protocol = \"http\" or \"https\", not \"exec\""),
        ),
    ];
    for (lines, want) in cases {
        assert_eq!(health_check_problems(&lines), [want], "{lines}");
    }
}

#[test]
fn agent_check_defaults_follow_the_health_check() {
    let agent = |keys: &str| {
        let c = ok(&(vip(&[]) + &group_g(keys)));
        c.target_groups[0].agent_check.expect("agent check")
    };
    let a = agent("[target_group.agent_check]\nport = 5555");
    assert_eq!(a.port, 5555);
    assert_eq!(a.interval, Duration::from_secs(30), "health check default");
    assert_eq!(a.timeout, Duration::from_secs(2));
    let a = agent(
        "[target_group.health_check]\ninterval_secs = 7\n[target_group.agent_check]\nport = 1",
    );
    assert_eq!(
        (a.interval, a.timeout),
        (Duration::from_secs(7), Duration::from_secs(2))
    );
    let a = agent(
        "[target_group.health_check]\ninterval_secs = 1\ntimeout_secs = 1\n\
         [target_group.agent_check]\nport = 65535",
    );
    assert_eq!(
        (a.interval, a.timeout),
        (Duration::from_secs(1), Duration::from_secs(1))
    );
    let a =
        agent("[target_group.agent_check]\nport = 5555\ninterval_secs = 300\ntimeout_secs = 120");
    assert_eq!(
        (a.interval, a.timeout),
        (Duration::from_secs(300), Duration::from_secs(120))
    );
    let a = agent("[target_group.agent_check]\nport = 5555\ninterval_secs = 5\ntimeout_secs = 5");
    assert_eq!(
        (a.interval, a.timeout),
        (Duration::from_secs(5), Duration::from_secs(5))
    );
}

#[test]
fn agent_check_settings_are_checked() {
    let cases = [
        ("", "port", "missing (required)"),
        (
            "port = 0",
            "port",
            "0 is out of range: must be between 1 and 65535",
        ),
        (
            "port = 65536",
            "port",
            "65536 is out of range: must be between 1 and 65535",
        ),
        (
            "port = 1\ninterval_secs = 0",
            "interval_secs",
            "0 is out of range: must be between 1 and 300",
        ),
        (
            "port = 1\ninterval_secs = 301",
            "interval_secs",
            "301 is out of range: must be between 1 and 300",
        ),
        (
            "port = 1\ntimeout_secs = 0",
            "timeout_secs",
            "0 is out of range: must be between 1 and 120",
        ),
        (
            "port = 1\ntimeout_secs = 121",
            "timeout_secs",
            "121 is out of range: must be between 1 and 120",
        ),
        (
            "port = 1\ninterval_secs = 3\ntimeout_secs = 4",
            "timeout_secs",
            "4 is longer than interval_secs (3): a check must end before the next one starts",
        ),
    ];
    for (lines, field, why) in cases {
        assert_eq!(
            problems(&(vip(&[]) + &group_g(&format!("[target_group.agent_check]\n{lines}")))),
            [format!(
                "target_group \"g\": field \"agent_check.{field}\": {why}"
            )],
            "{lines}"
        );
    }
    // The default interval is the health check's: a longer timeout does not fit it.
    assert_eq!(
        problems(
            &(vip(&[])
                + &group_g(
                    "[target_group.health_check]\ninterval_secs = 3\n\
                 [target_group.agent_check]\nport = 1\ntimeout_secs = 10"
                ))
        ),
        [
            "target_group \"g\": field \"agent_check.timeout_secs\": 10 is longer than \
          interval_secs (3): a check must end before the next one starts"
        ]
    );
    // An invalid health-check interval is reported once, not again for the agent check.
    assert_eq!(
        problems(
            &(vip(&[])
                + &group_g(
                    "[target_group.health_check]\ninterval_secs = 0\n\
                 [target_group.agent_check]\nport = 1"
                ))
        ),
        [
            "target_group \"g\": field \"health_check.interval_secs\": 0 is out of range: must be \
          between 1 and 300"
        ]
    );
    let (_, _, message) =
        syntax(&(vip(&[]) + &group_g("[target_group.agent_check]\nport = 1\nweight = 50")));
    assert!(message.contains("unknown field `weight`"), "{message}");
}

#[test]
fn unhealthy_connection_handling() {
    let group_of = |keys: &str| ok(&(vip(&[]) + &group_g(keys))).target_groups[0].clone();
    let g = group_of(
        "unhealthy_connection_termination = false\nunhealthy_draining_interval_secs = 360000",
    );
    assert!(!g.unhealthy_connection_termination);
    assert_eq!(g.unhealthy_draining_interval, Duration::from_secs(360_000));
    let g =
        group_of("unhealthy_connection_termination = true\nunhealthy_draining_interval_secs = 0");
    assert!(g.unhealthy_connection_termination);
    assert_eq!(g.unhealthy_draining_interval, Duration::ZERO);
    let g = group_of("unhealthy_connection_termination = false");
    assert!(!g.unhealthy_connection_termination);
    assert_eq!(g.unhealthy_draining_interval, Duration::ZERO);

    let field = |why: &str| {
        format!("target_group \"g\": field \"unhealthy_draining_interval_secs\": {why}")
    };
    let cases = [
        (
            "unhealthy_draining_interval_secs = 360001",
            field("360001 is out of range: must be between 0 and 360000"),
        ),
        (
            "unhealthy_draining_interval_secs = -1",
            field("-1 is out of range: must be between 0 and 360000"),
        ),
        (
            "unhealthy_draining_interval_secs = 30",
            field(
                "30 needs unhealthy_connection_termination = false (as in an AWS NLB: with \
                 termination on, an unhealthy target's flows move at once; with it off, they \
                 stay for this interval)",
            ),
        ),
    ];
    for (keys, want) in cases {
        assert_eq!(problems(&(vip(&[]) + &group_g(keys))), [want], "{keys}");
    }
    let (_, _, message) = syntax(&(vip(&[]) + &group_g("unhealthy_connection_termination = 1")));
    assert!(message.contains("invalid type"), "{message}");
}

#[test]
fn status_matcher() {
    let m = StatusMatcher::parse("200-299, 302,404").expect("matcher");
    assert_eq!(m.to_string(), "200-299,302,404");
    for (code, yes) in [
        (200, true),
        (299, true),
        (300, false),
        (302, true),
        (404, true),
        (500, false),
    ] {
        assert_eq!(m.matches(code), yes, "{code}");
    }
    assert_eq!(
        StatusMatcher::parse("200-599")
            .expect("matcher")
            .to_string(),
        "200-599"
    );
}

#[test]
fn health_check_port_defaults_to_the_one_traffic_port() {
    // Two VIPs on different ports: the port must be given.
    let text = vip(&[("name", "\"web\"")])
        + &vip(&[("name", "\"dns\""), ("port", "53"), ("protocol", "\"udp\"")])
        + &group_g("");
    assert_eq!(
        problem(&text),
        "target_group \"g\": field \"health_check.port\": missing: required because the group \
         serves VIPs on several ports (vip \"web\" port 80, vip \"dns\" port 53); say which one \
         to check"
    );
    // A port-0 VIP has no traffic port.
    assert_eq!(
        problem(&vip_and_group(&[("port", "0")])),
        "target_group \"g\": field \"health_check.port\": missing: required because vip \"v\" \
         forwards every port (port = 0), so there is no single traffic port to check"
    );
    // Two VIPs on one port (TCP and UDP): that port.
    let c = ok(&(vip(&[("name", "\"a\"")])
        + &vip(&[("name", "\"b\""), ("protocol", "\"udp\"")])
        + &group_g("")));
    assert_eq!(c.target_groups[0].health_check.port, Some(80));
    // Disabled checks need no port.
    let c = ok(&(vip(&[("port", "0")]) + &group_g("[target_group.health_check]\nenabled = false")));
    assert!(!c.target_groups[0].health_check.enabled);
    assert_eq!(c.target_groups[0].health_check.port, None);
    // An explicit port wins.
    let c = ok(&(vip(&[("port", "0")]) + &group_g("[target_group.health_check]\nport = 8080")));
    assert_eq!(c.target_groups[0].health_check.port, Some(8080));
}

#[test]
fn warnings_for_groups_without_traffic() {
    let c = ok(&(vip(&[]) + &group("g", "", &[])));
    assert_eq!(
        c.warnings,
        [
            "vip \"v\": field \"target_group\": target_group \"g\" has no targets: the VIP drops \
          every packet (counted as no_backend)"
        ]
    );
    let c = ok(&(vip(&[]) + &group("g", "", &["198.18.11.2", "198.18.12.2"]) + "weight = 0\n"));
    assert_eq!(
        c.warnings,
        Vec::<String>::new(),
        "one target still has weight"
    );
    let c = ok(&(vip(&[]) + &group_g("") + "weight = 0\n"));
    assert_eq!(
        c.warnings,
        [
            "vip \"v\": field \"target_group\": every target of target_group \"g\" has weight 0: \
          the VIP drops every new flow (counted as no_backend)"
        ]
    );
    let c = ok(&(vip_and_group(&[]) + &group("spare", "", &["198.18.12.2"])));
    assert_eq!(
        c.warnings,
        [
            "target_group \"spare\": no VIP uses this target group; its targets receive no \
          traffic"
        ]
    );
    assert_eq!(c.target_groups[1].health_check.port, None);
}

// ---------------------------------------------------------------------------------------
// ABI conversions
// ---------------------------------------------------------------------------------------

#[test]
fn vip_key_layout_and_byte_order() {
    let c = ok(&(vip(&[("name", "\"a\""), ("port", "8080")])
        + &vip(&[
            ("name", "\"b\""),
            ("address", "\"2001:2:0:200::1\""),
            ("port", "53"),
            ("protocol", "\"udp\""),
            ("mode", "\"tunnel\""),
        ])
        + &group_g("[target_group.health_check]\nport = 80")));
    let a = c.vips[0].key();
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&[198, 18, 200, 1]);
    assert_eq!(
        a,
        VipKey {
            addr,
            port: 8080u16.to_be(),
            proto: PROTO_TCP,
            family: FAMILY_V4,
        }
    );
    // Network byte order in memory: 8080 = 0x1f90.
    assert_eq!(a.port.to_ne_bytes(), [0x1f, 0x90]);

    let b = c.vips[1].key();
    assert_eq!(
        b,
        VipKey {
            addr: Ipv6Addr::new(0x2001, 2, 0, 0x200, 0, 0, 0, 1).octets(),
            port: 53u16.to_be(),
            proto: PROTO_UDP,
            family: FAMILY_V6,
        }
    );
    assert_eq!(b.port.to_ne_bytes(), [0, 53]);
    assert_eq!(
        c.vips[1].fragment_key(),
        VipKey {
            port: 0,
            family: FAMILY_V6 | FAMILY_FRAG_KEY,
            ..b
        }
    );
}

#[test]
fn flags_for_each_hash_and_fragments_choice() {
    let cases = [
        ("five-tuple", "drop", 0),
        ("source-ip", "drop", vip_flags::HASH_SRC_ONLY),
        ("source-ip-dest-port", "drop", vip_flags::HASH_SRC_DPORT),
        ("five-tuple", "route", vip_flags::FRAG_ROUTE),
    ];
    for (hash, fragments, flags) in cases {
        let c = ok(&vip_and_group(&[
            ("hash", &format!("\"{hash}\"")),
            ("fragments", &format!("\"{fragments}\"")),
        ]));
        assert_eq!(c.vips[0].flags(), flags, "{hash} {fragments}");
        assert_eq!(c.vips[0].hash.as_str(), hash);
        assert_eq!(c.vips[0].fragments.as_str(), fragments);
    }
}

#[test]
fn mode_bytes_and_meta() {
    let cases = [
        ("\"dr\"", mode::DR, 0),
        ("\"tunnel\"", mode::TUNNEL, 0),
        ("\"gue\"\ngue_port = 6080", mode::GUE, 6080u16.to_be()),
    ];
    for (m, byte, gue_port) in cases {
        let c = ok(&vip_and_group(&[("mode", m), ("hash", "\"source-ip\"")]));
        let v = &c.vips[0];
        assert_eq!(v.mode_byte(), byte);
        assert_eq!(
            v.meta(7, 65537),
            VipMeta {
                vip_id: 7,
                flags: vip_flags::HASH_SRC_ONLY,
                mode: byte,
                _pad: 0,
                gue_port,
                ring_size: 65537,
            }
        );
    }
}

#[test]
fn fragment_entries_name_the_deciding_vip() {
    let c = ok(&(vip(&[("name", "\"a\"")])
        + &vip(&[
            ("name", "\"b\""),
            ("port", "81"),
            ("fragments", "\"route\""),
        ])
        + &vip(&[("name", "\"c\""), ("protocol", "\"udp\"")])
        + &vip(&[
            ("name", "\"d\""),
            ("address", "\"198.18.200.2\""),
            ("port", "0"),
        ])
        + &group_g("[target_group.health_check]\nport = 80")));
    let entries: Vec<(VipKey, &str)> = c
        .fragment_entries()
        .into_iter()
        .map(|(k, i)| (k, c.vips[i].name.as_str()))
        .collect();
    let key = |name: &str| c.vip(name).expect("vip").fragment_key();
    assert_eq!(entries, [(key("a"), "b"), (key("c"), "c"), (key("d"), "d")]);
    assert_eq!(key("a"), key("b"));
}

// ---------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------

/// A file in the system temporary directory, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("lb-config-test-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).expect("write temp file");
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn load_names_the_file_in_errors() {
    let missing = Path::new("/nonexistent/lb.toml");
    let e = load(missing).expect_err("no such file");
    assert!(matches!(e, ConfigError::Read { ref path, .. } if path == missing));
    assert!(
        e.to_string()
            .starts_with("cannot read the configuration file /nonexistent/lb.toml: "),
        "{e}"
    );

    let f = TempFile::new("syntax", "[agent]\nseed = 1\n");
    let e = load(&f.0).expect_err("unknown field");
    assert!(
        e.to_string().starts_with(&format!(
            "configuration file {}: line 2, column 1: unknown field `seed`",
            f.0.display()
        )),
        "{e}"
    );

    let f = TempFile::new("invalid", &vip_and_group(&[("port", "-1")]));
    let e = load(&f.0).expect_err("invalid");
    assert_eq!(
        e.to_string(),
        format!(
            "configuration file {} is invalid (1 problem):\n  - vip \"v\": field \"port\": -1 is \
             out of range: must be between 0 and 65535",
            f.0.display()
        )
    );
    assert_eq!(
        e.problems(),
        ["vip \"v\": field \"port\": -1 is out of range: must be between 0 and 65535"]
    );

    let f = TempFile::new("example", EXAMPLE);
    assert_eq!(load(&f.0).expect("example loads"), ok(EXAMPLE));
}

#[test]
fn typed_values_print_as_written() {
    let c = ok(EXAMPLE);
    let web = &c.vips[0];
    assert_eq!(
        format!(
            "{} {} {} {}",
            web.protocol, web.mode, web.hash, web.fragments
        ),
        "tcp dr five-tuple drop"
    );
    assert_eq!(c.target_groups[0].health_check.protocol.to_string(), "tcp");
    assert_eq!(
        IpAddr::from(c.agent.tunnel_source_v4.addr),
        IpAddr::V4(Ipv4Addr::new(198, 18, 255, 0))
    );
}
