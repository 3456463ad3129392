//! Forwarding fixtures: the production program, configured through the agent's own
//! `Dataplane` code with rings from the agent's Maglev builder, run with
//! `BPF_PROG_TEST_RUN` as if each frame arrived on fx0 of the scenario namespace (so the
//! kernel FIB answers next-hop lookups). Each case asserts the verdict and the exact
//! output bytes, built independently here; the suite ends by checking every counter
//! against the table the cases imply.
//!
//! Cases run in order: later ones rely on flow-table state made by earlier ones.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{
    ip::{PROTO_DSTOPTS, PROTO_HOPOPTS},
    service::{FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP},
    Counter, DropReason, Event, FlowKey, ServiceCounter, Verdict,
};
use lb_tests::{
    fixture::{self, Fixture, Output},
    packet::{self, edit, CLIENT4, CLIENT6},
    scenario::{addrs::*, Scenario, Vip},
};

const RST: u8 = 0x04;
const PSH_ACK: u8 = 0x18;

/// A fixture plus what it must do to the counters.
struct Case {
    f: Fixture,
    drop: Option<DropReason>,
    events: Vec<Event>,
    /// (VIP id, backend id if forwarded, counted as a new flow, counted as a reset).
    service: Option<(u32, Option<u32>, bool, bool)>,
}

fn key4(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, proto: u8) -> FlowKey {
    let mut k = FlowKey {
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto,
        family: FAMILY_V4,
        ..FlowKey::default()
    };
    k.src[..4].copy_from_slice(&src.octets());
    k.dst[..4].copy_from_slice(&dst.octets());
    k
}

fn key6(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, proto: u8) -> FlowKey {
    FlowKey {
        src: src.octets(),
        dst: dst.octets(),
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto,
        family: FAMILY_V6,
        _pad: [0; 2],
    }
}

struct Builder<'a> {
    s: &'a Scenario,
    cases: Vec<Case>,
}

impl Builder<'_> {
    fn egress_mac(&self, via_fx2: bool) -> [u8; 6] {
        if via_fx2 {
            self.s.fx2_mac
        } else {
            self.s.fx0_mac
        }
    }

    /// A packet DR-forwarded to the backend the ring picks for `key`.
    fn dr(
        &mut self,
        name: &str,
        vip: &str,
        key: FlowKey,
        input: Vec<u8>,
        events: &[Event],
        new_flow: bool,
    ) {
        let v = self.s.vip(vip);
        let be = self
            .s
            .expected_backend(v, &key)
            .expect("ring has backends")
            .clone();
        let mut out = input.clone();
        out[..6].copy_from_slice(&be.mac.expect("backend has a MAC"));
        out[6..12].copy_from_slice(&self.egress_mac(be.via_fx2));
        let reset = key.proto == PROTO_TCP && input_tcp_flags(&input) & RST != 0;
        self.cases.push(Case {
            f: Fixture {
                name: name.into(),
                input,
                verdict: if be.via_fx2 {
                    Verdict::Redirect
                } else {
                    Verdict::Tx
                },
                output: Output::Bytes(out),
            },
            drop: None,
            events: events.to_vec(),
            service: Some((v.meta.vip_id, Some(be.id), new_flow, reset)),
        });
    }

    /// A packet tunnelled (IPIP family or GUE) to the backend the ring picks for `key`.
    /// `l2` is the Ethernet + VLAN length of `input`.
    fn tunnel(
        &mut self,
        name: &str,
        vip: &str,
        key: FlowKey,
        input: Vec<u8>,
        l2: usize,
        events: &[Event],
    ) {
        let v = self.s.vip(vip);
        let out = encapsulated(self.s, v, &key, &input, l2);
        let be = self
            .s
            .expected_backend(v, &key)
            .expect("ring has backends")
            .clone();
        self.cases.push(Case {
            f: Fixture {
                name: name.into(),
                input,
                verdict: Verdict::Tx,
                output: Output::Bytes(out),
            },
            drop: None,
            events: events.to_vec(),
            service: Some((
                v.meta.vip_id,
                Some(be.id),
                events.contains(&Event::FlowNew),
                false,
            )),
        });
    }

    /// A packet too big for the path: answered with an ICMP error sent back (XDP_TX).
    fn too_big(&mut self, name: &str, vip: &str, input: Vec<u8>, mtu: u32, events: &[Event]) {
        let id = self.s.vip(vip).meta.vip_id;
        let out = too_big_reply(&input, mtu);
        self.cases.push(Case {
            f: Fixture {
                name: name.into(),
                input,
                verdict: Verdict::Tx,
                output: Output::Bytes(out),
            },
            drop: None,
            events: events.to_vec(),
            service: Some((id, None, false, false)),
        });
    }

    fn drop(
        &mut self,
        name: &str,
        vip: &str,
        input: Vec<u8>,
        reason: DropReason,
        events: &[Event],
    ) {
        let id = self.s.vip(vip).meta.vip_id;
        self.cases.push(Case {
            f: Fixture {
                name: name.into(),
                input,
                verdict: Verdict::Drop,
                output: Output::Unchanged,
            },
            drop: Some(reason),
            events: events.to_vec(),
            service: Some((id, None, false, false)),
        });
    }

    fn pass(&mut self, name: &str, input: Vec<u8>, events: &[Event]) {
        self.cases.push(Case {
            f: Fixture::pass(name, input),
            drop: None,
            events: events.to_vec(),
            service: None,
        });
    }
}

fn input_tcp_flags(f: &[u8]) -> u8 {
    // Only used for untagged IPv4/IPv6 TCP fixtures without options/extensions.
    // 0 for anything that is not TCP (an ICMP error quoting TCP is not a reset).
    match u16::from_be_bytes([f[12], f[13]]) {
        0x0800 if f[14 + 9] == PROTO_TCP => f[14 + ((f[14] & 0x0f) as usize) * 4 + 13],
        0x86dd if f[14 + 6] == PROTO_TCP => f[14 + 40 + 13],
        _ => 0,
    }
}

/// The frame the program must produce when tunnelling `input` for `key` on `vip`.
fn encapsulated(s: &Scenario, v: &Vip, key: &FlowKey, input: &[u8], l2: usize) -> Vec<u8> {
    let be = s.expected_backend(v, key).expect("ring has backends");
    let hash = lb_common::hash::flow_hash(key, v.meta.flags, s.cfg.hash_seed);
    let inner = &input[l2..];
    let inner_v4 = inner[0] >> 4 == 4;
    let tos = if inner_v4 {
        inner[1]
    } else {
        (inner[0] << 4) | (inner[1] >> 4)
    };
    let gue = v.meta.mode == lb_common::service::mode::GUE;
    let proto = if gue {
        17
    } else if inner_v4 {
        4
    } else {
        41
    };
    let mut payload = Vec::new();
    if gue {
        let sport = 0xc000u16 | (hash & 0x3fff) as u16;
        payload.extend_from_slice(&sport.to_be_bytes());
        payload.extend_from_slice(&GUE_PORT.to_be_bytes());
        payload.extend_from_slice(&((inner.len() + 8) as u16).to_be_bytes());
        payload.extend_from_slice(&[0, 0]);
    }
    payload.extend_from_slice(inner);

    let mut out = Vec::new();
    out.extend_from_slice(&be.mac.expect("backend has a MAC"));
    out.extend_from_slice(&s.fx0_mac);
    out.extend_from_slice(&input[12..l2 - 2]); // VLAN tags, if any
    match be.addr {
        IpAddr::V4(dst) => {
            out.extend_from_slice(&0x0800u16.to_be_bytes());
            let c = s.cfg.tunnel_src4;
            let src = [c[0], c[1], c[2], hash as u8]; // a /24 source prefix
            let mut ip = etherparse::Ipv4Header::new(
                payload.len() as u16,
                64,
                etherparse::IpNumber(proto),
                src,
                dst.octets(),
            )
            .expect("valid outer header");
            ip.dont_fragment = true;
            ip.dscp = etherparse::Ipv4Dscp::try_new(tos >> 2).expect("6 bits");
            ip.ecn = etherparse::Ipv4Ecn::try_new(tos & 3).expect("2 bits");
            ip.header_checksum = ip.calc_header_checksum();
            out.extend_from_slice(&ip.to_bytes());
        }
        IpAddr::V6(dst) => {
            out.extend_from_slice(&0x86ddu16.to_be_bytes());
            let mut src = s.cfg.tunnel_src6;
            src[12..16].copy_from_slice(&hash.to_be_bytes());
            let flow = hash & 0xfffff;
            let first = (6u32 << 28) | ((tos as u32) << 20) | flow;
            out.extend_from_slice(&first.to_be_bytes());
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            out.push(proto);
            out.push(64);
            out.extend_from_slice(&src);
            out.extend_from_slice(&dst.octets());
        }
    }
    out.extend_from_slice(&payload);
    out
}

/// The ICMP error lb must send back for an untagged `input` too big for the path:
/// MACs and addresses swapped, the first 64 bytes of the IP packet quoted.
fn too_big_reply(input: &[u8], mtu: u32) -> Vec<u8> {
    let quote = &input[14..14 + 64];
    let (dst_mac, src_mac) = (&input[6..12], &input[..6]);
    let eth = etherparse::PacketBuilder::ethernet2(
        src_mac.try_into().expect("6"),
        dst_mac.try_into().expect("6"),
    );
    let mut out = Vec::new();
    if u16::from_be_bytes([input[12], input[13]]) == 0x0800 {
        let src: [u8; 4] = input[30..34].try_into().expect("4");
        let dst: [u8; 4] = input[26..30].try_into().expect("4");
        let m = (mtu as u16).to_be_bytes();
        eth.ipv4(src, dst, 64)
            .icmpv4_raw(3, 4, [0, 0, m[0], m[1]])
            .write(&mut out, quote)
            .expect("serializes");
        // lb's ICMP errors do not set DF (as the kernel's do not).
        out = edit::ipv4_fragment(&out, false, 0);
    } else {
        let src: [u8; 16] = input[38..54].try_into().expect("16");
        let dst: [u8; 16] = input[22..38].try_into().expect("16");
        eth.ipv6(src, dst, 64)
            .icmpv6_raw(2, 0, mtu.to_be_bytes())
            .write(&mut out, quote)
            .expect("serializes");
    }
    out
}

fn cases(s: &Scenario) -> Vec<Case> {
    use Event as E;
    let mut b = Builder {
        s,
        cases: Vec::new(),
    };
    let (dr4, dr4p) = DR4;

    // --- Direct routing, IPv4 TCP: SYN, established, RST, SYN reuse -----------------
    let syn = packet::tcp4_syn(CLIENT4, 40000, dr4, dr4p);
    let k = key4(CLIENT4, 40000, dr4, dr4p, PROTO_TCP);
    b.dr(
        "dr4 syn",
        "dr4",
        k,
        syn.clone(),
        &[E::FlowNew, E::Forwarded],
        true,
    );
    let est = edit::tcp_flags(&syn, 34, PSH_ACK);
    b.dr(
        "dr4 established",
        "dr4",
        k,
        est.clone(),
        &[E::FlowHit, E::Forwarded],
        false,
    );
    b.dr(
        "dr4 syn reusing a tuple re-hashes",
        "dr4",
        k,
        syn.clone(),
        &[E::SynRehash, E::FlowNew, E::Forwarded],
        true,
    );
    for sport in 40100..40120u16 {
        let p = packet::tcp4_syn(CLIENT4, sport, dr4, dr4p);
        let k = key4(CLIENT4, sport, dr4, dr4p, PROTO_TCP);
        b.dr(
            &format!("dr4 syn sport {sport}"),
            "dr4",
            k,
            p,
            &[E::FlowNew, E::Forwarded],
            true,
        );
    }
    let rst = edit::tcp_flags(&packet::tcp4_syn(CLIENT4, 40500, dr4, dr4p), 34, RST);
    let krst = key4(CLIENT4, 40500, dr4, dr4p, PROTO_TCP);
    b.dr(
        "dr4 rst for an unknown flow: forwarded, no entry",
        "dr4",
        krst,
        rst.clone(),
        &[E::RstNoEntry, E::Forwarded],
        true,
    );
    b.dr(
        "dr4 rst again: still no entry",
        "dr4",
        krst,
        rst,
        &[E::RstNoEntry, E::Forwarded],
        true,
    );
    let fin = edit::tcp_flags(&packet::tcp4_syn(CLIENT4, 40501, dr4, dr4p), 34, 0x11);
    b.dr(
        "dr4 fin for an unknown flow",
        "dr4",
        key4(CLIENT4, 40501, dr4, dr4p, PROTO_TCP),
        fin,
        &[E::FlowNew, E::Forwarded],
        true,
    );
    let ttl1 = edit::ipv4_ttl_tos(&packet::tcp4_syn(CLIENT4, 40600, dr4, dr4p), 1, 0);
    b.dr(
        "dr4 ttl 1 (DR is an L2 hop: TTL untouched)",
        "dr4",
        key4(CLIENT4, 40600, dr4, dr4p, PROTO_TCP),
        ttl1,
        &[E::FlowNew, E::Forwarded],
        true,
    );
    let dscp = edit::ipv4_ttl_tos(&packet::tcp4_syn(CLIENT4, 40601, dr4, dr4p), 64, 0xb8);
    b.dr(
        "dr4 dscp EF preserved",
        "dr4",
        key4(CLIENT4, 40601, dr4, dr4p, PROTO_TCP),
        dscp,
        &[E::FlowNew, E::Forwarded],
        true,
    );
    // IPv4 options: the ports live after the options, never at a fixed offset. The
    // option bytes here look like ports 1/1 to a parser that ignored IHL.
    let opts = edit::ipv4_options(
        &packet::tcp4_syn(CLIENT4, 40700, dr4, dr4p),
        &[0x00, 0x01, 0x00, 0x01],
    );
    b.dr(
        "dr4 ipv4 options (IHL 6)",
        "dr4",
        key4(CLIENT4, 40700, dr4, dr4p, PROTO_TCP),
        opts,
        &[E::FlowNew, E::Forwarded],
        true,
    );
    let src_is_vip = packet::tcp4_syn(dr4, 40800, dr4, dr4p);
    b.dr(
        "dr4 source address = the VIP",
        "dr4",
        key4(dr4, 40800, dr4, dr4p, PROTO_TCP),
        src_is_vip,
        &[E::FlowNew, E::Forwarded],
        true,
    );
    // Established (PSH+ACK) through the tag: the flow entry made by the first SYN hits.
    let vlan = edit::tcp_flags(
        &tcpify_tagged(packet::udp4_vlan(100, CLIENT4, dr4, dr4p), 4),
        18 + 20,
        PSH_ACK,
    );
    b.dr(
        "dr4 802.1Q tagged (tag kept)",
        "dr4",
        key4(CLIENT4, 40000, dr4, dr4p, PROTO_TCP),
        vlan,
        &[E::FlowHit, E::Forwarded],
        false,
    );

    // --- Source-IP stickiness: every port of a client goes to one backend ---------------
    let (st, stp) = STICKY4;
    for sport in [1000u16, 2000, 3000] {
        let p = packet::tcp4_syn(CLIENT4, sport, st, stp);
        b.dr(
            &format!("sticky4 sport {sport}"),
            "sticky4",
            key4(CLIENT4, sport, st, stp, PROTO_TCP),
            p,
            &[E::FlowNew, E::Forwarded],
            true,
        );
    }

    // --- Direct routing, IPv6 TCP, with and without extension headers --------------------
    let (dr6, dr6p) = DR6;
    let k6 = key6(CLIENT6, 41000, dr6, dr6p, PROTO_TCP);
    b.dr(
        "dr6 syn",
        "dr6",
        k6,
        packet::tcp6_syn(CLIENT6, 41000, dr6, dr6p),
        &[E::FlowNew, E::Forwarded],
        true,
    );
    let ext = edit::ipv6_ext(
        &packet::tcp6_syn(CLIENT6, 41001, dr6, dr6p),
        &[
            (PROTO_HOPOPTS, vec![1, 4, 0, 0, 0, 0]),
            (PROTO_DSTOPTS, vec![1, 4, 0, 0, 0, 0]),
        ],
    );
    b.dr(
        "dr6 hop-by-hop + destination options",
        "dr6",
        key6(CLIENT6, 41001, dr6, dr6p, PROTO_TCP),
        ext,
        &[E::FlowNew, E::Forwarded],
        true,
    );
    let routing = edit::ipv6_ext(
        &packet::tcp6_syn(CLIENT6, 41002, dr6, dr6p),
        &[(43, vec![0, 0, 0, 0, 0, 0])],
    );
    b.dr(
        "dr6 routing header (0 segments left)",
        "dr6",
        key6(CLIENT6, 41002, dr6, dr6p, PROTO_TCP),
        routing,
        &[E::FlowNew, E::Forwarded],
        true,
    );

    // --- Tunnels: IPIP, IP6IP6, 4in6, 6in4, GUE -----------------------------------------
    let (t4, t4p) = TUN4;
    let u = packet::udp4(CLIENT4, 42000, t4, t4p, b"dns query");
    let ku = key4(CLIENT4, 42000, t4, t4p, PROTO_UDP);
    b.tunnel(
        "tun4 udp ipip",
        "tun4",
        ku,
        u.clone(),
        14,
        &[E::FlowNew, E::Forwarded],
    );
    b.tunnel(
        "tun4 udp ipip again (flow hit)",
        "tun4",
        ku,
        u,
        14,
        &[E::FlowHit, E::Forwarded],
    );
    let tos = edit::ipv4_ttl_tos(&packet::udp4(CLIENT4, 42001, t4, t4p, b"x"), 64, 0x2e);
    b.tunnel(
        "tun4 tos copied to the outer header",
        "tun4",
        key4(CLIENT4, 42001, t4, t4p, PROTO_UDP),
        tos,
        14,
        &[E::FlowNew, E::Forwarded],
    );
    let vlan_t = packet::udp4_vlan(7, CLIENT4, t4, t4p);
    b.tunnel(
        "tun4 802.1Q tagged (tag kept outside)",
        "tun4",
        key4(CLIENT4, 40000, t4, t4p, PROTO_UDP),
        vlan_t,
        18,
        &[E::FlowNew, E::Forwarded],
    );
    let (t6, t6p) = TUN6;
    let u6 = edit::ipv6_tclass(&packet::udp6(CLIENT6, 42100, t6, t6p, b"dns6"), 0xb8);
    b.tunnel(
        "tun6 udp ip6ip6 (traffic class copied)",
        "tun6",
        key6(CLIENT6, 42100, t6, t6p, PROTO_UDP),
        u6,
        14,
        &[E::FlowNew, E::Forwarded],
    );
    for port in [22u16, 8443, 65535] {
        let p = packet::tcp4_syn(CLIENT4, 42200, ANY4, port);
        b.tunnel(
            &format!("any4 port {port}: 4in6"),
            "any4",
            key4(CLIENT4, 42200, ANY4, port, PROTO_TCP),
            p,
            14,
            &[E::FlowNew, E::Forwarded],
        );
    }
    let (t64, t64p) = TUN6IN4;
    b.tunnel(
        "tun6in4 tcp6 in ipv4",
        "tun6in4",
        key6(CLIENT6, 42300, t64, t64p, PROTO_TCP),
        packet::tcp6_syn(CLIENT6, 42300, t64, t64p),
        14,
        &[E::FlowNew, E::Forwarded],
    );
    let (g4, g4p) = GUE4;
    for sport in [43000u16, 43001] {
        let p = packet::udp4(CLIENT4, sport, g4, g4p, b"gue payload");
        b.tunnel(
            &format!("gue4 sport {sport}"),
            "gue4",
            key4(CLIENT4, sport, g4, g4p, PROTO_UDP),
            p,
            14,
            &[E::FlowNew, E::Forwarded],
        );
    }

    // --- XDP_REDIRECT to another interface; no neighbour yet -----------------------------
    let (r4, r4p) = REDIR4;
    b.dr(
        "redir4 egress fx2 → XDP_REDIRECT",
        "redir4",
        key4(CLIENT4, 44000, r4, r4p, PROTO_TCP),
        packet::tcp4_syn(CLIENT4, 44000, r4, r4p),
        &[E::FlowNew, E::Forwarded],
        true,
    );
    let (n4, n4p) = NONEIGH4;
    b.pass(
        "noneigh4: no neighbour → pass to the kernel",
        packet::tcp4_syn(CLIENT4, 44100, n4, n4p),
        &[E::FlowNew, E::FibNoNeighbour],
    );

    // --- Fragments ---------------------------------------------------------------------
    let big = packet::udp4(CLIENT4, 45000, dr4, dr4p, &[7u8; 64]);
    let first = edit::ipv4_fragment(&tcpify(big.clone()), true, 0);
    b.drop(
        "dr4 first fragment (VIP does not route fragments)",
        "dr4",
        first,
        DropReason::Fragment,
        &[],
    );
    let later = edit::ipv4_fragment(&big, false, 100);
    let mut later_tcp = later.clone();
    later_tcp[14 + 9] = PROTO_TCP;
    let later_tcp = edit::ipv4_ttl_tos(&later_tcp, 64, 0); // recompute checksum
    b.drop(
        "dr4 later fragment (matched on address and protocol)",
        "dr4",
        later_tcp,
        DropReason::Fragment,
        &[],
    );
    let (f4, f4p) = FRAG4;
    let whole = packet::udp4(CLIENT4, 45100, f4, f4p, &[9u8; 64]);
    let k3 = key4(CLIENT4, 45100, f4, f4p, PROTO_UDP);
    b.dr(
        "frag4 unfragmented datagram",
        "frag4",
        k3,
        whole.clone(),
        &[E::Forwarded],
        false,
    );
    b.dr(
        "frag4 first fragment: same backend",
        "frag4",
        k3,
        edit::ipv4_fragment(&whole, true, 0),
        &[E::FragmentRouted, E::Forwarded],
        false,
    );
    let mut later = edit::ipv4_fragment(&whole, false, 9);
    for x in &mut later[34..42] {
        *x = 0xee; // no UDP header in a later fragment: these bytes are payload
    }
    b.dr(
        "frag4 later fragment: same backend",
        "frag4",
        k3,
        later,
        &[E::FragmentRouted, E::Forwarded],
        false,
    );
    let frag6 = edit::ipv6_ext(
        &packet::tcp6_syn(CLIENT6, 45200, dr6, dr6p),
        &[(44, vec![0, 1, 0, 0, 0, 1])],
    );
    b.drop(
        "dr6 first fragment (fragment header)",
        "dr6",
        frag6,
        DropReason::Fragment,
        &[],
    );

    // --- ICMP errors quoting a VIP flow go to that flow's backend ----------------------
    let router4 = Ipv4Addr::new(198, 18, 50, 1);
    let router6 = Ipv6Addr::new(0x2001, 2, 0, 0x50, 0, 0, 0, 1);
    // The backend's reply (VIP → client) that a router answered.
    let reply4 = packet::tcp4_syn(dr4, dr4p, CLIENT4, 40000)[14..].to_vec();
    let frag_needed = packet::icmp4_error(router4, dr4, 3, 4, [0, 0, 0x05, 0x78], &reply4);
    b.dr(
        "icmp4 frag-needed quoting a dr4 flow",
        "dr4",
        k,
        frag_needed,
        &[E::IcmpErrorRouted, E::Forwarded],
        false,
    );
    let reply6 = packet::tcp6_syn(dr6, dr6p, CLIENT6, 41000)[14..].to_vec();
    let too_big = packet::icmp6_error(router6, dr6, 2, 0, 1280u32.to_be_bytes(), &reply6);
    b.dr(
        "icmp6 packet-too-big quoting a dr6 flow",
        "dr6",
        k6,
        too_big,
        &[E::IcmpErrorRouted, E::Forwarded],
        false,
    );
    let unreach6 = packet::icmp6_error(router6, dr6, 1, 4, [0; 4], &reply6);
    b.dr(
        "icmp6 port unreachable quoting a dr6 flow",
        "dr6",
        k6,
        unreach6,
        &[E::IcmpErrorRouted, E::Forwarded],
        false,
    );
    let reply_udp = packet::udp4(t4, t4p, CLIENT4, 42000, b"answer")[14..].to_vec();
    let unreach = packet::icmp4_error(router4, t4, 3, 3, [0; 4], &reply_udp);
    b.tunnel(
        "icmp4 port unreachable quoting a tun4 flow: tunnelled",
        "tun4",
        ku,
        unreach,
        14,
        &[E::IcmpErrorRouted, E::Forwarded],
    );
    let other = packet::tcp4_syn(Ipv4Addr::new(198, 18, 2, 1), 22, CLIENT4, 50000)[14..].to_vec();
    b.pass(
        "icmp4 error quoting a non-VIP flow",
        packet::icmp4_error(router4, Ipv4Addr::new(198, 18, 2, 1), 3, 4, [0; 4], &other),
        &[E::PassNotVip],
    );
    b.pass(
        "icmp4 error quoting 4 bytes only",
        packet::icmp4_error(router4, dr4, 3, 4, [0; 4], &reply4[..4]),
        &[E::PassNotVip],
    );
    b.pass(
        "icmp4 error to another address than the one quoted",
        packet::icmp4_error(router4, Ipv4Addr::new(198, 18, 2, 1), 3, 4, [0; 4], &reply4),
        &[E::PassNotVip],
    );
    // Regression found by the mutation fuzzer: an ICMP error whose quote lies in the
    // Ethernet padding after a short IP packet is not about any flow.
    let padded = edit::ipv4_tot_len(
        &packet::icmp4_error(router4, dr4, 3, 4, [0; 4], &reply4),
        24,
    );
    b.pass(
        "icmp4 error whose quote is only Ethernet padding",
        padded,
        &[E::PassNotVip],
    );
    b.pass(
        "icmp4 time exceeded (not routed)",
        packet::icmp4_error(router4, dr4, 11, 0, [0; 4], &reply4),
        &[E::PassNotVip],
    );

    // --- Too big for the path: ICMP back to the client, never a silent drop ------------
    let big4 = packet::udp4(CLIENT4, 48000, t4, t4p, &[0x42; 1490 - 28]);
    b.too_big(
        "tun4 1490-byte packet + 20 outer > MTU 1500: frag-needed 1480",
        "tun4",
        big4.clone(),
        1480,
        &[E::FlowNew, E::IcmpTooBigSent],
    );
    let big6 = packet::udp6(CLIENT6, 48001, t6, t6p, &[0x42; 1470 - 48]);
    b.too_big(
        "tun6 1470-byte packet + 40 outer > MTU 1500: packet-too-big 1460",
        "tun6",
        big6,
        1460,
        &[E::FlowNew, E::IcmpTooBigSent],
    );
    let jumbo = edit::ipv4_tot_len(
        &tcpify(packet::udp4(CLIENT4, 48002, dr4, dr4p, &[0x42; 2000 - 28])),
        2000 + 20 - 8,
    );
    b.too_big(
        "dr4 2012-byte frame > egress MTU 1500: frag-needed 1500",
        "dr4",
        jumbo,
        1500,
        &[E::FlowNew, E::IcmpTooBigSent],
    );
    let no_df = edit::ipv4_fragment(
        &packet::udp4(CLIENT4, 48003, t4, t4p, &[0x42; 1490 - 28]),
        false,
        0,
    );
    b.drop(
        "tun4 too big without DF: dropped (lb never fragments)",
        "tun4",
        no_df,
        DropReason::Mtu,
        &[E::FlowNew],
    );

    // --- Drops for VIP traffic -----------------------------------------------------------
    let (e4, e4p) = EMPTY4;
    b.drop(
        "empty4: VIP without backends",
        "empty4",
        packet::tcp4_syn(CLIENT4, 46000, e4, e4p),
        DropReason::NoBackend,
        &[],
    );
    let syn2 = packet::tcp4_syn(CLIENT4, 46100, dr4, dr4p);
    b.drop(
        "dr4 tcp data offset 4",
        "dr4",
        edit::tcp_doff(&syn2, 34, 4),
        DropReason::Malformed,
        &[],
    );
    b.drop(
        "dr4 tcp data offset past the end",
        "dr4",
        edit::tcp_doff(&syn2, 34, 15),
        DropReason::Malformed,
        &[],
    );
    let short = edit::ipv4_tot_len(&syn2[..14 + 20 + 12], 20 + 12);
    b.drop(
        "dr4 tcp header cut after 12 bytes",
        "dr4",
        short,
        DropReason::Malformed,
        &[],
    );
    let udp_bad = packet::udp4(CLIENT4, 46200, t4, t4p, b"abc");
    let mut udp_len = udp_bad.clone();
    udp_len[14 + 20 + 4] = 0;
    udp_len[14 + 20 + 5] = 200;
    b.drop(
        "tun4 udp length past the end",
        "tun4",
        udp_len,
        DropReason::Malformed,
        &[],
    );
    // RFC 1812 §5.2.2: a router discards an IPv4 header whose checksum is wrong; lb drops
    // it before the unverified header can key a flow (docs/dataplane.md, Policies).
    let mut bad_sum = packet::tcp4_syn(CLIENT4, 46300, dr4, dr4p);
    bad_sum[14 + 10] ^= 0x5a;
    b.drop(
        "dr4 ipv4 header checksum wrong",
        "dr4",
        bad_sum,
        DropReason::Malformed,
        &[],
    );
    let mut bad_sum_udp = packet::udp4(CLIENT4, 46301, t4, t4p, b"abc");
    bad_sum_udp[14 + 11] ^= 0x01;
    b.drop(
        "tun4 udp ipv4 header checksum off by one bit",
        "tun4",
        bad_sum_udp,
        DropReason::Malformed,
        &[],
    );

    // --- Not for a VIP: passed untouched ---------------------------------------------------
    b.pass(
        "VIP address, other port",
        packet::tcp4_syn(CLIENT4, 47000, dr4, 81),
        &[E::PassNotVip],
    );
    b.pass(
        "VIP address and port, other protocol",
        packet::udp4(CLIENT4, 47001, dr4, dr4p, b"u"),
        &[E::PassNotVip],
    );
    b.pass(
        "icmp echo to a VIP (the host answers)",
        packet::icmp4_echo(CLIENT4, dr4),
        &[E::PassNotVip],
    );
    b.pass("gre to a VIP address", ipv4_gre_to(dr4), &[E::PassNotVip]);
    b.pass(
        "non-VIP tcp",
        packet::tcp4_syn(CLIENT4, 47002, Ipv4Addr::new(198, 18, 2, 1), 22),
        &[E::PassNotVip],
    );
    b.pass(
        "non-VIP udp6",
        packet::udp6(
            CLIENT6,
            47003,
            Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 1),
            53,
            b"q",
        ),
        &[E::PassNotVip],
    );
    b.pass("arp for a VIP", packet::arp_request(dr4), &[]);
    b.pass(
        "ipv4 IHL 4 to a VIP (kernel validates)",
        edit::ipv4_vihl(&syn2, 0x44),
        &[],
    );
    b.pass(
        "ipv4 IHL 15 past the end",
        edit::ipv4_vihl(&syn2, 0x4f),
        &[],
    );
    b.pass(
        "ipv4 total length past the frame",
        edit::ipv4_tot_len(&syn2, 1400),
        &[],
    );
    b.pass(
        "ipv4 total length shorter than the header",
        edit::ipv4_tot_len(&syn2, 12),
        &[],
    );
    b.pass(
        "version 6 under ethertype IPv4",
        edit::ipv4_vihl(&syn2, 0x65),
        &[],
    );
    let five = edit::ipv6_ext(
        &packet::tcp6_syn(CLIENT6, 47100, dr6, dr6p),
        &[
            (PROTO_HOPOPTS, vec![1, 4, 0, 0, 0, 0]),
            (PROTO_DSTOPTS, vec![1, 4, 0, 0, 0, 0]),
            (PROTO_DSTOPTS, vec![1, 4, 0, 0, 0, 0]),
            (PROTO_DSTOPTS, vec![1, 4, 0, 0, 0, 0]),
            (PROTO_DSTOPTS, vec![1, 4, 0, 0, 0, 0]),
        ],
    );
    b.pass("ipv6 with 5 extension headers (limit 4)", five, &[]);
    // A later-fragment header followed by an atomic one must not turn payload into ports.
    let two_frags = edit::ipv6_ext(
        &packet::tcp6_syn(CLIENT6, 47101, dr6, dr6p),
        &[
            (44, vec![0, 0x03, 0x20, 0, 0, 0, 1]),
            (44, vec![0, 0, 0, 0, 0, 2]),
        ],
    );
    b.pass("ipv6 with two fragment headers", two_frags, &[]);
    for len in [14usize, 20, 33, 34, 40, 47, 53] {
        b.pass(
            &format!("dr4 syn truncated to {len}"),
            syn2[..len].to_vec(),
            &[],
        );
    }
    let qinq = edit::tcp_flags(
        &tcpify_tagged(packet::udp4_qinq(10, 20, CLIENT4, dr4, dr4p), 8),
        22 + 20,
        PSH_ACK,
    );
    b.dr(
        "dr4 QinQ tagged (both tags kept)",
        "dr4",
        key4(CLIENT4, 40000, dr4, dr4p, PROTO_TCP),
        qinq,
        &[E::FlowHit, E::Forwarded],
        false,
    );
    b.cases
}

/// Turns a builder UDP/IPv4 frame (untagged) into the same addresses with TCP SYN.
fn tcpify(f: Vec<u8>) -> Vec<u8> {
    let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
    let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
    let sport = u16::from_be_bytes([f[34], f[35]]);
    let dport = u16::from_be_bytes([f[36], f[37]]);
    let mut p = packet::tcp4_syn(src, sport, dst, dport);
    p.extend_from_slice(&f[42..]);
    let tot = p.len() - 14;
    edit::ipv4_tot_len(&p, tot)
}

/// A tagged UDP frame (`tags` bytes of VLAN tags: 4 or 8) rebuilt as the same tagged
/// TCP SYN (same tags, addresses and ports).
fn tcpify_tagged(f: Vec<u8>, tags: usize) -> Vec<u8> {
    let mut untagged = f[..12].to_vec();
    untagged.extend_from_slice(&f[12 + tags..]);
    let t = tcpify(untagged);
    let mut out = t[..12].to_vec();
    out.extend_from_slice(&f[12..12 + tags]);
    out.extend_from_slice(&t[12..]);
    out
}

fn ipv4_gre_to(dst: Ipv4Addr) -> Vec<u8> {
    let mut f = packet::ipv4_proto(47, &[0; 8]);
    f[30..34].copy_from_slice(&dst.octets());
    edit::ipv4_ttl_tos(&f, 64, 0)
}

#[test]
fn forwarding_fixtures_and_counter_table() -> anyhow::Result<()> {
    let s = Scenario::new("lbt-fwd")?;
    let cases = cases(&s);
    let fixtures: Vec<Fixture> = cases.iter().map(|c| c.f.clone()).collect();
    let before = s.dp.counters()?;
    let failures =
        s.lb.enter(|| fixture::run_all_on(&s.dp, &fixtures, Some(s.fx0)))?;
    if !failures.is_empty() {
        let c = s.dp.counters()?.since(&before);
        let nonzero: Vec<String> = Event::ALL
            .iter()
            .map(|e| (e.name(), c.event(*e).packets))
            .chain(
                DropReason::ALL
                    .iter()
                    .map(|r| (r.name(), c.drop(*r).packets)),
            )
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{name}={n}"))
            .collect();
        panic!(
            "{} of {} forwarding fixtures failed:\n{}\ncounters after the run: {}",
            failures.len(),
            fixtures.len(),
            failures.join("\n"),
            nonzero.join(" ")
        );
    }

    // RST never creates a flow entry.
    let (dr4, dr4p) = DR4;
    assert_eq!(
        s.dp.flow(&key4(CLIENT4, 40500, dr4, dr4p, PROTO_TCP))?,
        None,
        "RST made a flow entry"
    );
    let entry =
        s.dp.flow(&key4(CLIENT4, 40000, dr4, dr4p, PROTO_TCP))?
            .expect("SYN made a flow entry");
    assert_eq!(entry.vip_id, s.vip("dr4").meta.vip_id);

    // Every counter equals the table the cases imply.
    let got = s.dp.counters()?.since(&before);
    for v in Verdict::ALL {
        let want: Counter = sum(cases
            .iter()
            .filter(|c| c.f.verdict == v)
            .map(|c| &c.f.input));
        assert_eq!(got.verdict(v), want, "verdict counter {}", v.name());
    }
    for r in DropReason::ALL {
        let want = sum(cases
            .iter()
            .filter(|c| c.drop == Some(r))
            .map(|c| &c.f.input));
        assert_eq!(got.drop(r), want, "drop counter {}", r.name());
    }
    for e in Event::ALL {
        let want = cases
            .iter()
            .map(|c| c.events.iter().filter(|x| **x == e).count() as u64)
            .sum::<u64>();
        assert_eq!(got.event(e).packets, want, "event counter {}", e.name());
    }
    for vip in &s.vips {
        let mut want = ServiceCounter::default();
        for c in cases
            .iter()
            .filter(|c| c.service.is_some_and(|s| s.0 == vip.meta.vip_id))
        {
            let (_, _, new_flow, reset) = c.service.expect("filtered on Some");
            want.packets += 1;
            want.bytes += c.f.input.len() as u64;
            want.new_flows += new_flow as u64;
            want.resets += reset as u64;
        }
        assert_eq!(
            s.dp.vip_counters(vip.meta.vip_id)?,
            want,
            "VIP counters of {}",
            vip.name
        );
    }
    for be in &s.backends {
        let mut want = ServiceCounter::default();
        for c in cases
            .iter()
            .filter(|c| c.service.is_some_and(|s| s.1 == Some(be.id)))
        {
            let (_, _, new_flow, _) = c.service.expect("filtered on Some");
            want.packets += 1;
            want.bytes += c.f.input.len() as u64;
            want.new_flows += new_flow as u64;
        }
        assert_eq!(
            s.dp.backend_counters(be.id)?,
            want,
            "backend counters of {}",
            be.addr
        );
    }
    eprintln!(
        "{} forwarding fixtures passed; counter table matched",
        fixtures.len()
    );
    Ok(())
}

fn sum<'a>(frames: impl Iterator<Item = &'a Vec<u8>>) -> Counter {
    frames.fold(Counter::default(), |a, f| Counter {
        packets: a.packets + 1,
        bytes: a.bytes + f.len() as u64,
    })
}

/// Pins the calling thread to CPU 0, so every test run lands in the same per-CPU state.
fn pin_to_cpu0() -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(0)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
    Ok(())
}

#[test]
fn flood_guard_and_udp_idle_expiry() -> anyhow::Result<()> {
    use Event as E;
    let mut s = Scenario::new("lbt-fwd2")?;
    let (dr4, dr4p) = DR4;
    let (t4, t4p) = TUN4;

    // Flood guard: at most 5 new entries per second per CPU; the rest are forwarded by
    // hash alone (to the same backend the ring gives) and never enter the table.
    let mut cfg = s.cfg;
    cfg.max_new_flows_per_cpu = 5;
    cfg.udp_idle_ns = 1;
    s.set_config(cfg)?;
    let mut b = Builder {
        s: &s,
        cases: Vec::new(),
    };
    for sport in 30000..30010u16 {
        let k = key4(CLIENT4, sport, dr4, dr4p, PROTO_TCP);
        let events: &[Event] = if sport < 30005 {
            &[E::FlowNew, E::Forwarded]
        } else {
            &[E::FlowThrottled, E::Forwarded]
        };
        b.dr(
            &format!("syn {sport} under a 5/s flood guard"),
            "dr4",
            k,
            packet::tcp4_syn(CLIENT4, sport, dr4, dr4p),
            events,
            true,
        );
    }
    // UDP idle time 1 ns: the second datagram finds a stale entry and re-hashes.
    let u = packet::udp4(CLIENT4, 31000, t4, t4p, b"q");
    let ku = key4(CLIENT4, 31000, t4, t4p, PROTO_UDP);
    b.tunnel(
        "udp first datagram",
        "tun4",
        ku,
        u.clone(),
        14,
        &[E::FlowThrottled, E::Forwarded],
    );
    let cases = b.cases;
    let fixtures: Vec<Fixture> = cases.iter().map(|c| c.f.clone()).collect();
    let before = s.dp.counters()?;
    let failures = s.lb.enter(|| -> anyhow::Result<Vec<String>> {
        pin_to_cpu0()?;
        Ok(fixture::run_all_on(&s.dp, &fixtures, Some(s.fx0)))
    })??;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let got = s.dp.counters()?.since(&before);
    assert_eq!(
        got.event(E::FlowNew).packets,
        5,
        "entries made under the limit"
    );
    assert_eq!(
        got.event(E::FlowThrottled).packets,
        6,
        "new flows above the limit"
    );
    for sport in 30005..30010u16 {
        assert_eq!(
            s.dp.flow(&key4(CLIENT4, sport, dr4, dr4p, PROTO_TCP))?,
            None,
            "a throttled flow entered the table"
        );
    }

    // Lift the guard: UDP entries now expire after 1 ns, so a repeat re-hashes.
    cfg.max_new_flows_per_cpu = 0;
    s.set_config(cfg)?;
    let mut b = Builder {
        s: &s,
        cases: Vec::new(),
    };
    b.tunnel(
        "udp again: entry made",
        "tun4",
        ku,
        u.clone(),
        14,
        &[E::FlowNew, E::Forwarded],
    );
    b.tunnel(
        "udp after the idle time: stale, re-hashed",
        "tun4",
        ku,
        u,
        14,
        &[E::FlowStale, E::FlowNew, E::Forwarded],
    );
    let fixtures: Vec<Fixture> = b.cases.iter().map(|c| c.f.clone()).collect();
    let before = s.dp.counters()?;
    // The data plane stamps flows with the coarse monotonic clock (a tick of up to
    // 10 ms): the repeat must come at least a tick later to be past the 1 ns idle time.
    let failures = s.lb.enter(|| {
        let mut failures = fixture::run_all_on(&s.dp, &fixtures[..1], Some(s.fx0));
        std::thread::sleep(std::time::Duration::from_millis(25));
        failures.extend(fixture::run_all_on(&s.dp, &fixtures[1..], Some(s.fx0)));
        failures
    })?;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let got = s.dp.counters()?.since(&before);
    assert_eq!(got.event(E::FlowStale).packets, 1);
    assert_eq!(got.event(E::FlowNew).packets, 2);
    assert_eq!(got.event(E::FlowHit).packets, 0);
    Ok(())
}

#[test]
fn weight_zero_stops_new_flows_but_existing_ones_continue() -> anyhow::Result<()> {
    use Event as E;
    let mut s = Scenario::new("lbt-fwd3")?;
    let (dr4, dr4p) = DR4;
    // Find a client port whose flow the ring sends to backend 0, and one to another.
    let on = |s: &Scenario, sport: u16| {
        s.expected_backend(s.vip("dr4"), &key4(CLIENT4, sport, dr4, dr4p, PROTO_TCP))
            .map(|b| b.id)
    };
    let to0 = (20000..21000u16)
        .find(|p| on(&s, *p) == Some(0))
        .expect("some port maps to backend 0");
    let new0 = (21000..22000u16)
        .find(|p| on(&s, *p) == Some(0))
        .expect("another port maps to backend 0");

    // The flow to backend 0 is established (SYN makes the entry).
    let syn = packet::tcp4_syn(CLIENT4, to0, dr4, dr4p);
    let k = key4(CLIENT4, to0, dr4, dr4p, PROTO_TCP);
    let mut b = Builder {
        s: &s,
        cases: Vec::new(),
    };
    b.dr(
        "syn to backend 0",
        "dr4",
        k,
        syn.clone(),
        &[E::FlowNew, E::Forwarded],
        true,
    );
    let expected_first = b.cases.remove(0).f;
    let failures = s
        .lb
        .enter(|| fixture::run_all_on(&s.dp, std::slice::from_ref(&expected_first), Some(s.fx0)))?;
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Quiesce backend 0 (weight 0): the ring no longer holds it.
    s.set_weights("dr4", &[(0, 0), (1, 1), (2, 1)])?;
    assert!(
        !s.vip("dr4").table.slots().contains(&0),
        "weight 0 left backend 0 in the ring"
    );
    let before = s.dp.counters()?;
    // The established flow keeps its backend: the ACK must be identical to before.
    let ack = edit::tcp_flags(&syn, 34, PSH_ACK);
    let mut ack_out = ack.clone();
    ack_out[..12].copy_from_slice(&expected_output(&expected_first)[..12]);
    let existing = Fixture {
        name: "established flow to the quiesced backend continues".into(),
        input: ack,
        verdict: Verdict::Tx,
        output: Output::Bytes(ack_out),
    };
    // A new flow that used to map to backend 0 now goes to the new ring's choice.
    let mut b = Builder {
        s: &s,
        cases: Vec::new(),
    };
    let k_new = key4(CLIENT4, new0, dr4, dr4p, PROTO_TCP);
    b.dr(
        "new flow avoids the quiesced backend",
        "dr4",
        k_new,
        packet::tcp4_syn(CLIENT4, new0, dr4, dr4p),
        &[E::FlowNew, E::Forwarded],
        true,
    );
    let new_flow = b.cases.remove(0).f;
    let failures =
        s.lb.enter(|| fixture::run_all_on(&s.dp, &[existing, new_flow], Some(s.fx0)))?;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_ne!(on(&s, new0), Some(0));
    let got = s.dp.counters()?.since(&before);
    assert_eq!(got.event(E::FlowHit).packets, 1);
    assert_eq!(got.event(E::FlowNew).packets, 1);
    Ok(())
}

fn expected_output(f: &Fixture) -> Vec<u8> {
    match &f.output {
        Output::Bytes(b) => b.clone(),
        Output::Unchanged => f.input.clone(),
    }
}

/// TCP entries record when the flow was last active (to the second) and whether the
/// client has closed it: the agent's live-flow estimate for draining targets and
/// `ActiveFlowCount` reads both.
#[test]
fn tcp_entries_record_activity_and_client_close() -> anyhow::Result<()> {
    use Event as E;
    const FIN_ACK: u8 = 0x11;
    let s = Scenario::new("lbt-fwd4")?;
    let (dr4, dr4p) = DR4;
    let sport = 23456;
    let k = key4(CLIENT4, sport, dr4, dr4p, PROTO_TCP);
    let syn = packet::tcp4_syn(CLIENT4, sport, dr4, dr4p);
    let mut b = Builder {
        s: &s,
        cases: Vec::new(),
    };
    b.dr(
        "syn",
        "dr4",
        k,
        syn.clone(),
        &[E::FlowNew, E::Forwarded],
        true,
    );
    let first = b.cases.remove(0).f;
    let mac = expected_output(&first)[..12].to_vec();
    let same_backend = |name: &str, flags: u8| {
        let input = edit::tcp_flags(&syn, 34, flags);
        let mut output = input.clone();
        output[..12].copy_from_slice(&mac);
        Fixture {
            name: name.into(),
            input,
            verdict: Verdict::Tx,
            output: Output::Bytes(output),
        }
    };
    let run = |f: Fixture| -> anyhow::Result<()> {
        let failures =
            s.lb.enter(|| fixture::run_all_on(&s.dp, std::slice::from_ref(&f), Some(s.fx0)))?;
        anyhow::ensure!(failures.is_empty(), "{}", failures.join("\n"));
        Ok(())
    };
    run(first.clone())?;
    let made = s.dp.flow(&k)?.expect("the SYN made an entry");
    assert!(!made.closing() && made.last_seen() > 0);

    // Within a second: the entry is not rewritten.
    run(same_backend("ack right after", PSH_ACK))?;
    assert_eq!(
        s.dp.flow(&k)?,
        Some(made),
        "entry rewritten within a second"
    );

    // More than a second later: the time moves on.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    run(same_backend("ack a second later", PSH_ACK))?;
    let later = s.dp.flow(&k)?.expect("entry");
    assert!(!later.closing());
    assert!(later.last_seen() >= made.last_seen() + 1_000_000_000);
    assert_eq!(later.backend_id, made.backend_id);

    // The client's FIN marks it closing at once; later packets keep the mark and still
    // reach the same backend.
    run(same_backend("fin", FIN_ACK))?;
    let fin = s.dp.flow(&k)?.expect("entry");
    assert!(fin.closing(), "FIN did not mark the entry");
    run(same_backend("last ack", PSH_ACK))?;
    assert!(s.dp.flow(&k)?.expect("entry").closing());

    // A new connection on the same tuple starts a fresh entry.
    run(first)?;
    assert!(!s.dp.flow(&k)?.expect("entry").closing());
    Ok(())
}
