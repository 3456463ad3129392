//! The rules between items (`validate/cross/`): unique names and keys, a VIP against its
//! target group, health-check traffic ports, unused groups, data-plane limits.

use super::{group, group_g, ok, problem, problems, vip, vip_and_group};
use crate::config::{parse_with, validate::Limits, ConfigError};

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
