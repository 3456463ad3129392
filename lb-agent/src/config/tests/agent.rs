//! The `[agent]` table (`validate/agent.rs`).

use lb_common::LbConfig;

use super::{ok, problem, vip_and_group};

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
