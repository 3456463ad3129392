//! `BPF_PROG_TEST_RUN` fixtures against the production object: every frame is classified
//! into the right traffic counter and passed to the kernel byte-for-byte unchanged, and
//! the counters equal the expected table at the end.

use lb_common::{Counter, TrafficClass, Verdict};
use lb_tests::{
    fixture::{self, Fixture},
    packet::{self, CLIENT4, CLIENT6, LB4, LB6},
    production_dataplane,
};

/// (fixture, the traffic class it must be counted under).
fn table() -> Vec<(Fixture, TrafficClass)> {
    use TrafficClass as C;
    let mut t = vec![
        (
            Fixture::pass("arp who-has", packet::arp_request(LB4)),
            C::Arp,
        ),
        (
            Fixture::pass("lldp", packet::raw_l2(0x88cc, &[0; 46])),
            C::OtherL2,
        ),
        (
            Fixture::pass("unknown ethertype", packet::raw_l2(0x1234, &[0xaa; 46])),
            C::OtherL2,
        ),
        (
            Fixture::pass("udp4", packet::udp4(CLIENT4, 40000, LB4, 53, b"query")),
            C::Ipv4Udp,
        ),
        (
            Fixture::pass("tcp4 syn", packet::tcp4_syn(CLIENT4, 40000, LB4, 80)),
            C::Ipv4Tcp,
        ),
        (
            Fixture::pass("icmp4 echo", packet::icmp4_echo(CLIENT4, LB4)),
            C::Ipv4Icmp,
        ),
        (
            Fixture::pass("ipv4 gre", packet::ipv4_proto(47, &[0; 8])),
            C::Ipv4Other,
        ),
        (
            Fixture::pass("ipv4 esp", packet::ipv4_proto(50, &[0; 16])),
            C::Ipv4Other,
        ),
        (
            Fixture::pass("udp6", packet::udp6(CLIENT6, 40000, LB6, 53, b"query")),
            C::Ipv6Udp,
        ),
        (
            Fixture::pass("tcp6 syn", packet::tcp6_syn(CLIENT6, 40000, LB6, 443)),
            C::Ipv6Tcp,
        ),
        (
            Fixture::pass("icmp6 echo", packet::icmp6_echo(CLIENT6, LB6)),
            C::Ipv6Icmp,
        ),
        (
            Fixture::pass("vlan udp4", packet::udp4_vlan(100, CLIENT4, LB4, 53)),
            C::Ipv4Udp,
        ),
        (
            Fixture::pass("qinq udp4", packet::udp4_qinq(10, 20, CLIENT4, LB4, 53)),
            C::Ipv4Udp,
        ),
    ];
    // Broadcast and multicast destinations are classified like any other frame.
    let mut bcast = packet::udp4(CLIENT4, 68, LB4, 67, b"bootp");
    bcast[..6].copy_from_slice(&[0xff; 6]);
    t.push((Fixture::pass("broadcast udp4", bcast), C::Ipv4Udp));
    let mut mcast = packet::udp6(CLIENT6, 5353, LB6, 5353, b"mdns");
    mcast[..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 0xfb]);
    t.push((Fixture::pass("multicast udp6", mcast), C::Ipv6Udp));

    // Truncated at every length from a bare Ethernet header up: a frame too short for
    // the header that classifies it is a runt, and still passes untouched.
    let udp4 = packet::udp4(CLIENT4, 40000, LB4, 53, b"query");
    for len in 14..udp4.len() {
        let class = if len < 14 + 20 { C::Runt } else { C::Ipv4Udp };
        t.push((
            Fixture::pass(format!("udp4 truncated to {len}"), udp4[..len].to_vec()),
            class,
        ));
    }
    let udp6 = packet::udp6(CLIENT6, 40000, LB6, 53, b"query");
    for len in [14, 20, 53] {
        t.push((
            Fixture::pass(format!("udp6 truncated to {len}"), udp6[..len].to_vec()),
            C::Runt,
        ));
    }
    let vlan = packet::udp4_vlan(100, CLIENT4, LB4, 53);
    for len in [14, 16, 17, 18, 30] {
        t.push((
            Fixture::pass(format!("vlan truncated to {len}"), vlan[..len].to_vec()),
            C::Runt,
        ));
    }
    t
}

#[test]
fn every_frame_passes_unchanged_and_is_counted() -> anyhow::Result<()> {
    let dp = production_dataplane()?;
    let before = dp.counters()?;
    let table = table();
    let fixtures: Vec<Fixture> = table.iter().map(|(f, _)| f.clone()).collect();

    let failures = fixture::run_all(&dp, &fixtures);
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n")
    );

    // The counters must equal the table exactly: one packet and its length per fixture.
    let got = dp.counters()?.since(&before);
    let mut want_traffic = [Counter::default(); TrafficClass::COUNT as usize];
    for (f, class) in &table {
        want_traffic[*class as usize].packets += 1;
        want_traffic[*class as usize].bytes += f.input.len() as u64;
    }
    let total = Counter::sum(&want_traffic);
    for class in TrafficClass::ALL {
        assert_eq!(
            got.traffic(class),
            want_traffic[class as usize],
            "traffic counter {}",
            class.name()
        );
    }
    for v in Verdict::ALL {
        let want = if v == Verdict::Pass {
            total
        } else {
            Counter::default()
        };
        assert_eq!(got.verdict(v), want, "verdict counter {}", v.name());
    }
    eprintln!(
        "{} fixtures passed; {} packets counted",
        fixtures.len(),
        total.packets
    );
    Ok(())
}
