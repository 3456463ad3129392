//! The shipped example, the defaults a minimal file gets, and typed values printing as the
//! file spells them.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use lb_common::LbConfig;

use super::{example_with_tunnel_block, ok, vip_and_group};
use crate::config::{
    AgentSettings, Fragments, HashFields, HealthCheckProtocol, Mode, Protocol, Target, EXAMPLE,
};

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

#[test]
fn defaults_are_filled() {
    let c = ok(&vip_and_group(&[]));
    assert_eq!(c.warnings, Vec::<String>::new());
    assert_eq!(c.agent, AgentSettings::default());
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
