//! `lb_decap` fixtures, as a round trip: frames the production `lb_xdp` actually
//! encapsulated (IPIP, IP6IP6, 4in6, 6in4, GUE, VLAN-tagged) go through `lb_decap`,
//! which must give back the client's original frame (with the tunnel frame's MACs);
//! frames that are not tunnel packets for this host must pass untouched, and broken
//! tunnel packets for this host must be dropped and counted.

use std::net::Ipv4Addr;

use lb_agent::dataplane::decap::DecapPlane;
use lb_common::{decap::DecapEvent, Verdict};
use lb_tests::{
    fixture::bytes_diff,
    netns::require_root,
    packet::{self, edit, CLIENT4, CLIENT6},
    scenario::{addrs::*, Scenario},
};

fn decap_plane(s: &Scenario) -> anyhow::Result<DecapPlane> {
    require_root()?;
    let object = lb_agent::object::load_bytes(None)?;
    let mut d = DecapPlane::load(&object)?;
    for b in &s.backends {
        d.add_address(b.addr)?;
    }
    d.set_gue_port(GUE_PORT)?;
    Ok(d)
}

#[test]
fn decap_reverses_every_tunnel_lb_makes() -> anyhow::Result<()> {
    let s = Scenario::new("lbt-decap")?;
    let d = decap_plane(&s)?;
    let (t4, t4p) = TUN4;
    let (t6, t6p) = TUN6;
    let (g4, g4p) = GUE4;
    let (t64, t64p) = TUN6IN4;
    let originals = vec![
        ("ipip", packet::udp4(CLIENT4, 50000, t4, t4p, b"inner v4")),
        ("ip6ip6", packet::udp6(CLIENT6, 50001, t6, t6p, b"inner v6")),
        ("4in6", packet::tcp4_syn(CLIENT4, 50002, ANY4, 8080)),
        ("6in4", packet::tcp6_syn(CLIENT6, 50003, t64, t64p)),
        (
            "gue v4",
            packet::udp4(CLIENT4, 50004, g4, g4p, b"gue inner"),
        ),
        (
            "ipip behind an 802.1Q tag",
            packet::udp4_vlan(42, CLIENT4, t4, t4p),
        ),
    ];
    let before = d.counters()?;
    let mut failures = Vec::new();
    for (name, original) in &originals {
        let encap =
            s.lb.enter(|| s.dp.test_run(original, 1, 256, Some(s.fx0)))??;
        if Verdict::from_u32(encap.return_value) != Some(Verdict::Tx)
            || encap.output.len() <= original.len()
        {
            failures.push(format!(
                "[{name}] lb_xdp did not encapsulate (verdict {})",
                encap.return_value
            ));
            continue;
        }
        let out = d.test_run(&encap.output, 1)?;
        let mut want = original.clone();
        want[..12].copy_from_slice(&encap.output[..12]);
        if Verdict::from_u32(out.return_value) != Some(Verdict::Pass) || out.output != want {
            failures.push(format!(
                "[{name}] verdict {}{}",
                out.return_value,
                bytes_diff(&want, &out.output)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "round trips failed:\n{}",
        failures.join("\n")
    );
    let c = d.counters()?;
    assert_eq!(
        c[DecapEvent::Decapsulated as usize].packets
            - before[DecapEvent::Decapsulated as usize].packets,
        originals.len() as u64
    );
    eprintln!("{} tunnel round trips passed", originals.len());
    Ok(())
}

#[test]
fn decap_passes_what_is_not_for_it_and_drops_broken_tunnels() -> anyhow::Result<()> {
    let s = Scenario::new("lbt-decap2")?;
    let d = decap_plane(&s)?;
    let be4 = Ipv4Addr::new(198, 18, 2, 11);
    let (t4, t4p) = TUN4;
    let inner = packet::udp4(CLIENT4, 50100, t4, t4p, b"x");
    let ipip_to = |dst: Ipv4Addr, payload: &[u8]| {
        let mut f = packet::ipv4_proto(4, payload);
        f[30..34].copy_from_slice(&dst.octets());
        edit::ipv4_ttl_tos(&f, 64, 0)
    };
    let gue_to =
        |dst: Ipv4Addr, port: u16, payload: &[u8]| packet::udp4(CLIENT4, 49152, dst, port, payload);

    let passes = vec![
        ("tcp to a backend", packet::tcp4_syn(CLIENT4, 1, be4, 80)),
        (
            "ipip to an address not configured",
            ipip_to(Ipv4Addr::new(198, 18, 2, 200), &inner[14..]),
        ),
        (
            "udp to a backend on another port",
            gue_to(be4, 6081, &inner[14..]),
        ),
        ("arp", packet::arp_request(be4)),
        (
            "ipip outer first fragment",
            edit::ipv4_fragment(&ipip_to(be4, &inner[14..]), true, 0),
        ),
        (
            "icmp6 to a backend",
            packet::icmp6_echo(CLIENT6, "2001:2:0:2::11".parse()?),
        ),
    ];
    let drops = vec![
        (
            "ipip with a truncated inner header",
            ipip_to(be4, &inner[14..24]),
        ),
        (
            "gue whose payload is not IP",
            gue_to(be4, GUE_PORT, &[0x12; 40]),
        ),
        ("gue with an empty payload", gue_to(be4, GUE_PORT, &[])),
    ];
    let before = d.counters()?;
    let mut failures = Vec::new();
    for (name, f) in &passes {
        let out = d.test_run(f, 1)?;
        if Verdict::from_u32(out.return_value) != Some(Verdict::Pass) || out.output != *f {
            failures.push(format!(
                "[{name}] expected an untouched pass, got verdict {}",
                out.return_value
            ));
        }
    }
    for (name, f) in &drops {
        let out = d.test_run(f, 1)?;
        if Verdict::from_u32(out.return_value) != Some(Verdict::Drop) || out.output != *f {
            failures.push(format!(
                "[{name}] expected an untouched drop, got verdict {}",
                out.return_value
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let after = d.counters()?;
    let delta = |e: DecapEvent| after[e as usize].packets - before[e as usize].packets;
    assert_eq!(delta(DecapEvent::NotForUs), passes.len() as u64);
    assert_eq!(delta(DecapEvent::Malformed), drops.len() as u64);
    assert_eq!(delta(DecapEvent::Decapsulated), 0);
    Ok(())
}
