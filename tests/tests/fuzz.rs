//! Mutation fuzzer over the forwarding fixtures: valid packets to every VIP of the
//! scenario (and traffic that is not for a VIP) are mutated at random (bit flips,
//! interesting bytes, truncation, extension, header-field surgery at the known offsets,
//! VLAN tags, splices between seeds) and each one is run once through the production
//! program, as if it arrived on fx0. Every run must end in one of DROP, PASS, TX or
//! REDIRECT (never ABORTED); PASS and DROP must leave the frame byte for byte; TX and
//! REDIRECT are allowed only for a packet that an independent parser here says is a VIP
//! packet (or an ICMP error quoting a VIP flow), and the output must be exactly that
//! packet, MAC-rewritten (direct routing) or encapsulated (tunnel, GUE), for the backend
//! the VIP's ring picks, leaving through the right interface.
//!
//! `LB_FUZZ_SEED` (decimal or 0x-hex) and `LB_FUZZ_COUNT` override the fixed PRNG seed and
//! the number of packets (default 100,000).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use etherparse::PacketBuilder;
use lb_common::{
    ip::{
        PROTO_DSTOPTS, PROTO_FRAGMENT, PROTO_HOPOPTS, PROTO_ICMP, PROTO_ICMPV6, PROTO_IPIP,
        PROTO_IPV6, PROTO_NONE, PROTO_ROUTING,
    },
    service::{mode, vip_flags, FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP},
    Counter, FlowKey, Verdict, VipKey,
};
use lb_tests::{
    fixture::{self, HEADROOM},
    netns::Ns,
    packet::{self, edit, Writable as _, CLIENT4, CLIENT6, CLIENT_MAC, LB_MAC},
    scenario::{Be, Scenario, Vip},
};

const DEFAULT_SEED: u64 = 0x6c62_f022_5eed_0001;
const DEFAULT_COUNT: u64 = 100_000;
/// Kinds of failure reported with a full example (all are counted).
const MAX_REPORTS: usize = 10;
/// `BPF_PROG_TEST_RUN` of XDP needs at least an Ethernet header.
const MIN_FRAME: usize = 14;
/// Mutated frames are kept below this (the veth MTU plus headers).
const MAX_FRAME: usize = 1514;

const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_PSH_ACK: u8 = 0x18;
const TCP_ACK: u8 = 0x10;

/// A router that sends ICMP errors about VIP flows.
const ROUTER4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 254);
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 0xfe);

// --- A small deterministic PRNG (splitmix64) ---------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn u16(&mut self) -> u16 {
        self.next() as u16
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    /// One of `xs`, or (as often as each of them) a random byte.
    fn pick_u8(&mut self, xs: &[u8]) -> u8 {
        match self.below(xs.len() + 1) {
            i if i < xs.len() => xs[i],
            _ => self.byte(),
        }
    }

    /// One of `xs`, or (as often as each of them) a random 16-bit value.
    fn pick_u16(&mut self, xs: &[u16]) -> u16 {
        match self.below(xs.len() + 1) {
            i if i < xs.len() => xs[i],
            _ => self.u16(),
        }
    }
}

fn env_u64(name: &str) -> anyhow::Result<Option<u64>> {
    let Ok(v) = std::env::var(name) else {
        return Ok(None);
    };
    let v = v.trim().replace('_', "");
    let n = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    }
    .with_context(|| format!("{name}={v} is not a number"))?;
    Ok(Some(n))
}

// --- Seed frames ---------------------------------------------------------------------------

struct Seed {
    name: String,
    frame: Vec<u8>,
}

fn v4_of(a: IpAddr) -> Ipv4Addr {
    match a {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => panic!("{a} is not IPv4"),
    }
}

fn v6_of(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V6(a) => a,
        IpAddr::V4(_) => panic!("{a} is not IPv6"),
    }
}

/// Untagged Ethernet + IP + TCP (20-byte header, `flags`) or UDP, from the client.
fn l4_frame(
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    proto: u8,
    tcp_flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC);
    let ip = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed address families {src} → {dst}"),
    };
    if proto == PROTO_TCP {
        let mut f = ip.tcp(sport, dport, 1, 64240).build(payload);
        let l4 = if src.is_ipv4() { 34 } else { 54 };
        f[l4 + 13] = tcp_flags;
        f
    } else {
        ip.udp(sport, dport).build(payload)
    }
}

/// Inserts VLAN tags (TPID, VID) after the MAC addresses of an untagged frame.
fn tagged(f: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
    let mut out = f[..12].to_vec();
    for (tpid, vid) in tags {
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&vid.to_be_bytes());
    }
    out.extend_from_slice(&f[12..]);
    out
}

/// An ICMP error (ICMPv4 `icmp_type`/`code`, or ICMPv6 `icmp_type`/`code`) sent by a
/// router to the VIP address, quoting a packet the VIP sent to the client: the quoted IP
/// header plus the first 8 bytes of its TCP or UDP header.
fn icmp_error(
    vip: IpAddr,
    vip_port: u16,
    client_port: u16,
    proto: u8,
    icmp_type: u8,
    code: u8,
) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&vip_port.to_be_bytes());
    l4.extend_from_slice(&client_port.to_be_bytes());
    l4.extend_from_slice(&[0x00, 0x00, 0x05, 0x8c]); // TCP sequence / UDP length + checksum
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC);
    match vip {
        IpAddr::V4(v) => {
            let mut ip = etherparse::Ipv4Header::new(
                1400,
                60,
                etherparse::IpNumber(proto),
                v.octets(),
                CLIENT4.octets(),
            )
            .expect("valid quoted header");
            ip.dont_fragment = true;
            ip.header_checksum = ip.calc_header_checksum();
            let mut quote = ip.to_bytes().to_vec();
            quote.extend_from_slice(&l4);
            eth.ipv4(ROUTER4.octets(), v.octets(), 64)
                .icmpv4_raw(icmp_type, code, [0, 0, 0x05, 0x78])
                .build(&quote)
        }
        IpAddr::V6(v) => {
            let mut quote = vec![0x60, 0, 0, 0];
            quote.extend_from_slice(&1400u16.to_be_bytes());
            quote.push(proto);
            quote.push(60);
            quote.extend_from_slice(&v.octets());
            quote.extend_from_slice(&CLIENT6.octets());
            quote.extend_from_slice(&l4);
            eth.ipv6(ROUTER6.octets(), v.octets(), 64)
                .icmpv6_raw(icmp_type, code, 1280u32.to_be_bytes())
                .build(&quote)
        }
    }
}

fn vip_addr(v: &Vip) -> IpAddr {
    let a = v.key.addr;
    if v.key.family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(a))
    }
}

/// Valid packets to one VIP: both TCP states (or UDP), tags, IP options / IPv6 extension
/// headers, fragments, and ICMP errors about the VIP's flows.
fn vip_seeds(v: &Vip, seeds: &mut Vec<Seed>) {
    let dst = vip_addr(v);
    let v4 = dst.is_ipv4();
    let client: IpAddr = if v4 { CLIENT4.into() } else { CLIENT6.into() };
    let proto = v.key.proto;
    let tcp = proto == PROTO_TCP;
    let vport = u16::from_be(v.key.port);
    let ports: Vec<u16> = if vport == 0 {
        vec![22, 8443]
    } else {
        vec![vport]
    };
    let mut add = |name: String, frame: Vec<u8>| {
        seeds.push(Seed {
            name: format!("{} {name}", v.name),
            frame,
        })
    };
    for port in ports {
        let mut sport = 30000u16;
        let mut next_sport = || {
            sport += 1;
            sport
        };
        let first = l4_frame(client, next_sport(), dst, port, proto, TCP_SYN, &[]);
        add(format!("port {port} syn/datagram"), first);
        let data = l4_frame(client, next_sport(), dst, port, proto, TCP_PSH_ACK, b"data");
        add(format!("port {port} data"), data.clone());
        if tcp {
            let ack = l4_frame(client, next_sport(), dst, port, proto, TCP_ACK, &[]);
            add(format!("port {port} ack"), ack);
            let rst = l4_frame(client, next_sport(), dst, port, proto, TCP_RST, &[]);
            add(format!("port {port} rst"), rst);
            // TCP options: data offset 8.
            let mut opts = l4_frame(client, next_sport(), dst, port, proto, TCP_SYN, &[1; 12]);
            let l4 = if v4 { 34 } else { 54 };
            opts[l4 + 12] = 0x80;
            add(format!("port {port} tcp options"), opts);
        } else {
            let empty = l4_frame(client, next_sport(), dst, port, proto, 0, &[]);
            add(format!("port {port} empty datagram"), empty);
        }
        let vlan = l4_frame(client, next_sport(), dst, port, proto, TCP_SYN, b"vlan");
        add(
            format!("port {port} 802.1Q"),
            tagged(&vlan, &[(0x8100, 100)]),
        );
        let qinq = l4_frame(client, next_sport(), dst, port, proto, TCP_PSH_ACK, b"qinq");
        add(
            format!("port {port} QinQ"),
            tagged(&qinq, &[(0x88a8, 10), (0x8100, 20)]),
        );
        let big = l4_frame(
            client,
            next_sport(),
            dst,
            port,
            proto,
            TCP_PSH_ACK,
            &[7; 64],
        );
        if v4 {
            let o = edit::ipv4_options(&data, &[1, 1, 1, 0]);
            add(format!("port {port} ipv4 options (IHL 6)"), o);
            let o = edit::ipv4_options(&big, &[1; 40]);
            add(format!("port {port} ipv4 options (IHL 15)"), o);
            let first = edit::ipv4_fragment(&big, true, 0);
            add(format!("port {port} first fragment"), first.clone());
            add(
                format!("port {port} first fragment 802.1Q"),
                tagged(&first, &[(0x8100, 7)]),
            );
            let later = edit::ipv4_fragment(&big, false, 100);
            add(format!("port {port} later fragment"), later.clone());
            add(
                format!("port {port} later fragment QinQ"),
                tagged(&later, &[(0x88a8, 1), (0x8100, 2)]),
            );
            let last_mf = edit::ipv4_fragment(&big, true, 9);
            add(format!("port {port} middle fragment"), last_mf);
        } else {
            let hop = vec![1, 4, 0, 0, 0, 0];
            let e = edit::ipv6_ext(
                &data,
                &[(PROTO_HOPOPTS, hop.clone()), (PROTO_DSTOPTS, hop.clone())],
            );
            add(format!("port {port} hop-by-hop + dstopts"), e);
            let e = edit::ipv6_ext(&big, &[(PROTO_ROUTING, vec![0, 0, 0, 0, 0, 0])]);
            add(format!("port {port} routing header"), e.clone());
            add(
                format!("port {port} routing header 802.1Q"),
                tagged(&e, &[(0x8100, 3)]),
            );
            let e = edit::ipv6_ext(&big, &[(PROTO_FRAGMENT, vec![0, 1, 0, 0, 0, 1])]);
            add(format!("port {port} first fragment"), e);
            let e = edit::ipv6_ext(
                &big,
                &[
                    (PROTO_HOPOPTS, hop.clone()),
                    (PROTO_FRAGMENT, vec![0x03, 0x20, 0, 0, 0, 1]),
                ],
            );
            add(format!("port {port} later fragment"), e);
            let e = edit::ipv6_ext(&big, &[(PROTO_FRAGMENT, vec![0, 0, 0, 0, 0, 2])]);
            add(format!("port {port} atomic fragment"), e);
            // Two fragment headers: still a later fragment, whatever the second one says.
            let e = edit::ipv6_ext(
                &data,
                &[
                    (PROTO_FRAGMENT, vec![0x03, 0x20, 0, 0, 0, 3]),
                    (PROTO_FRAGMENT, vec![0, 0, 0, 0, 0, 4]),
                ],
            );
            add(
                format!("port {port} later fragment + atomic fragment header"),
                e,
            );
            let four = edit::ipv6_ext(
                &data,
                &[
                    (PROTO_HOPOPTS, hop.clone()),
                    (PROTO_ROUTING, vec![0, 0, 0, 0, 0, 0]),
                    (PROTO_DSTOPTS, hop.clone()),
                    (PROTO_DSTOPTS, hop.clone()),
                ],
            );
            add(format!("port {port} 4 extension headers"), four);
            let five = edit::ipv6_ext(
                &data,
                &[
                    (PROTO_HOPOPTS, hop.clone()),
                    (PROTO_DSTOPTS, hop.clone()),
                    (PROTO_DSTOPTS, hop.clone()),
                    (PROTO_DSTOPTS, hop.clone()),
                    (PROTO_DSTOPTS, hop),
                ],
            );
            add(format!("port {port} 5 extension headers"), five);
        }
        // ICMP errors about a flow of this VIP (VIP → client as the client's router saw it).
        let (t, c) = if v4 { (3, 4) } else { (2, 0) };
        let e = icmp_error(dst, port, 40000, proto, t, c);
        add(format!("port {port} icmp frag-needed / packet-too-big"), e);
        let (t, c) = if v4 { (11, 0) } else { (1, 4) };
        let e = icmp_error(dst, port, 40001, proto, t, c);
        add(
            format!("port {port} icmp time-exceeded / unreachable 802.1Q"),
            tagged(&e, &[(0x8100, 5)]),
        );
        let e = icmp_error(dst, port.wrapping_add(1), 40002, proto, t, c);
        add(format!("port {port} icmp error about another port"), e);
    }
}

/// Frames that are not for any VIP.
fn other_seeds(s: &Scenario, seeds: &mut Vec<Seed>) {
    let dr4 = vip_addr(s.vip("dr4"));
    let dr6 = vip_addr(s.vip("dr6"));
    let mut add = |name: &str, frame: Vec<u8>| {
        seeds.push(Seed {
            name: name.into(),
            frame,
        })
    };
    add("arp for a VIP", packet::arp_request(v4_of(dr4)));
    add("lldp", packet::raw_l2(0x88cc, &[0; 46]));
    add(
        "icmp echo to a VIP",
        packet::icmp4_echo(CLIENT4, v4_of(dr4)),
    );
    add(
        "icmp6 echo to a VIP",
        packet::icmp6_echo(CLIENT6, v6_of(dr6)),
    );
    add(
        "tcp to a VIP address, other port",
        l4_frame(CLIENT4.into(), 47000, dr4, 81, PROTO_TCP, TCP_SYN, &[]),
    );
    add(
        "udp to a TCP VIP",
        l4_frame(CLIENT4.into(), 47001, dr4, 80, PROTO_UDP, 0, b"u"),
    );
    add(
        "tcp6 to a VIP address, other port",
        l4_frame(CLIENT6.into(), 47002, dr6, 444, PROTO_TCP, TCP_SYN, &[]),
    );
    let mut gre = packet::ipv4_proto(47, &[0; 8]);
    gre[30..34].copy_from_slice(&v4_of(dr4).octets());
    add("gre to a VIP address", edit::ipv4_ttl_tos(&gre, 64, 0));
    add(
        "non-VIP tcp",
        l4_frame(
            CLIENT4.into(),
            47003,
            Ipv4Addr::new(198, 18, 2, 1).into(),
            22,
            PROTO_TCP,
            TCP_SYN,
            &[],
        ),
    );
    add(
        "non-VIP udp6",
        l4_frame(
            CLIENT6.into(),
            47004,
            Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 1).into(),
            53,
            PROTO_UDP,
            0,
            b"q",
        ),
    );
    add(
        "non-VIP udp 802.1Q",
        tagged(
            &l4_frame(
                CLIENT4.into(),
                47005,
                Ipv4Addr::new(198, 18, 2, 1).into(),
                53,
                PROTO_UDP,
                0,
                b"q",
            ),
            &[(0x8100, 9)],
        ),
    );
}

fn corpus(s: &Scenario) -> Vec<Seed> {
    let mut seeds = Vec::new();
    for v in &s.vips {
        vip_seeds(v, &mut seeds);
    }
    other_seeds(s, &mut seeds);
    seeds
}

// --- Mutations -----------------------------------------------------------------------------

const INTERESTING: [u8; 13] = [
    0, 0xff, 0x7f, 0x80, 0x40, 0x45, 0x46, 0x4f, 0x60, 0x06, 0x11, 0x2c, 0x3a,
];

/// Where the headers of a (possibly mangled) frame seem to be, read without validation.
struct Layout {
    l3: usize,
    ether_type: u16,
    /// Offset of the L4 header and its protocol, when the L3 header can be walked.
    l4: Option<(usize, u8)>,
}

fn be16(f: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?]))
}

fn lax_layout(f: &[u8]) -> Layout {
    let mut l3 = 14;
    let mut ether_type = be16(f, 12).unwrap_or(0);
    for _ in 0..2 {
        if ether_type != 0x8100 && ether_type != 0x88a8 {
            break;
        }
        let Some(t) = be16(f, l3 + 2) else { break };
        ether_type = t;
        l3 += 4;
    }
    let l4 = match ether_type {
        0x0800 => f
            .get(l3)
            .zip(f.get(l3 + 9))
            .map(|(vihl, p)| (l3 + ((vihl & 0x0f) as usize) * 4, *p)),
        0x86dd => f.get(l3 + 6).map(|&first| {
            let mut next = first;
            let mut at = l3 + 40;
            for _ in 0..4 {
                match next {
                    PROTO_HOPOPTS | PROTO_ROUTING | PROTO_DSTOPTS => {
                        match (f.get(at), f.get(at + 1)) {
                            (Some(&n), Some(&len)) => {
                                next = n;
                                at += (len as usize + 1) * 8;
                            }
                            _ => break,
                        }
                    }
                    PROTO_FRAGMENT => match f.get(at) {
                        Some(&n) => {
                            next = n;
                            at += 8;
                        }
                        None => break,
                    },
                    _ => break,
                }
            }
            (at, next)
        }),
        _ => None,
    };
    Layout { l3, ether_type, l4 }
}

fn put(f: &mut [u8], at: usize, bytes: &[u8]) -> bool {
    match f.get_mut(at..at + bytes.len()) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

/// A random offset, three times out of four inside the first 96 bytes (the headers).
fn offset(rng: &mut Rng, len: usize) -> usize {
    if rng.percent(75) {
        rng.below(len.min(96))
    } else {
        rng.below(len)
    }
}

/// A 16-bit length near `actual`, or an extreme one.
fn length_value(rng: &mut Rng, actual: usize) -> u16 {
    match rng.below(6) {
        0 => 0,
        1 => 0xffff,
        2 => rng.u16(),
        3 => actual as u16,
        _ => (actual as i64 + rng.range(0, 16) as i64 - 8).clamp(0, 0xffff) as u16,
    }
}

/// One targeted change of a header field at its known offset. Returns a description, or
/// None when the frame does not reach that field.
fn targeted(rng: &mut Rng, f: &mut [u8], vips: &[VipKey]) -> Option<String> {
    let lay = lax_layout(f);
    let len = f.len();
    let l3 = lay.l3;
    let ip_end_guess = len.saturating_sub(l3);
    match rng.below(5) {
        // Ethernet type (or the type after a VLAN tag).
        0 => {
            let t = rng.pick_u16(&[0x0800u16, 0x86dd, 0x8100, 0x88a8, 0x0806, 0x88cc]);
            let at = if rng.percent(70) { l3 - 2 } else { 12 };
            put(f, at, &t.to_be_bytes()).then(|| format!("ether type @{at} = {t:#06x}"))
        }
        // L3 fields.
        1 | 2 if lay.ether_type == 0x0800 => match rng.below(7) {
            0 => {
                let v = rng.pick_u8(&[0x45u8, 0x46, 0x4f, 0x44, 0x40, 0x65, 0x55, 0x47]);
                put(f, l3, &[v]).then(|| format!("ipv4 version/IHL = {v:#04x}"))
            }
            1 => {
                let v = length_value(rng, ip_end_guess);
                put(f, l3 + 2, &v.to_be_bytes()).then(|| format!("ipv4 total length = {v}"))
            }
            2 => {
                let v = rng.pick_u16(&[0x2000u16, 0, 0x4000, 0x000c, 0x200c, 0x1fff]);
                put(f, l3 + 6, &v.to_be_bytes()).then(|| format!("ipv4 frag field = {v:#06x}"))
            }
            3 => {
                let v = rng.pick_u8(&[
                    PROTO_TCP,
                    PROTO_UDP,
                    PROTO_ICMP,
                    PROTO_ICMPV6,
                    47, // GRE: a protocol lb does not handle
                    PROTO_IPIP,
                    PROTO_IPV6,
                ]);
                put(f, l3 + 9, &[v]).then(|| format!("ipv4 protocol = {v}"))
            }
            4 | 5 => {
                let mut a = rng.next().to_be_bytes()[..4].to_vec();
                let v4s: Vec<&VipKey> = vips.iter().filter(|k| k.family == FAMILY_V4).collect();
                if rng.percent(80) {
                    a = v4s[rng.below(v4s.len())].addr[..4].to_vec();
                }
                let at = if rng.percent(80) { l3 + 16 } else { l3 + 12 };
                put(f, at, &a).then(|| format!("ipv4 address @{at} = {a:?}"))
            }
            _ => {
                let v = rng.byte();
                put(f, l3 + 1, &[v]).then(|| format!("ipv4 tos = {v:#04x}"))
            }
        },
        1 | 2 if lay.ether_type == 0x86dd => match rng.below(7) {
            0 => {
                let v = rng.pick_u8(&[0x60u8, 0x6f, 0x40, 0x00, 0x45]);
                put(f, l3, &[v]).then(|| format!("ipv6 version/class = {v:#04x}"))
            }
            1 => {
                let v = length_value(rng, ip_end_guess.saturating_sub(40));
                put(f, l3 + 4, &v.to_be_bytes()).then(|| format!("ipv6 payload length = {v}"))
            }
            2 => {
                let v = rng.pick_u8(&[
                    PROTO_HOPOPTS,
                    PROTO_ROUTING,
                    PROTO_FRAGMENT,
                    PROTO_DSTOPTS,
                    PROTO_TCP,
                    PROTO_UDP,
                    PROTO_ICMPV6,
                    PROTO_NONE,
                ]);
                put(f, l3 + 6, &[v]).then(|| format!("ipv6 next header = {v}"))
            }
            3 | 4 => {
                let mut a = [0u8; 16];
                a[..8].copy_from_slice(&rng.next().to_be_bytes());
                a[8..].copy_from_slice(&rng.next().to_be_bytes());
                let v6s: Vec<&VipKey> = vips.iter().filter(|k| k.family == FAMILY_V6).collect();
                if rng.percent(80) {
                    a = v6s[rng.below(v6s.len())].addr;
                }
                let at = if rng.percent(80) { l3 + 24 } else { l3 + 8 };
                put(f, at, &a).then(|| format!("ipv6 address @{at} = {a:02x?}"))
            }
            5 => {
                let v = rng.pick_u8(&[
                    PROTO_HOPOPTS,
                    PROTO_ROUTING,
                    PROTO_FRAGMENT,
                    PROTO_DSTOPTS,
                    PROTO_TCP,
                    PROTO_UDP,
                    PROTO_ICMPV6,
                ]);
                put(f, l3 + 40, &[v]).then(|| format!("ipv6 ext next header = {v}"))
            }
            _ => {
                let at = l3 + 40 + rng.range(1, 3);
                let v = rng.pick_u8(&[0u8, 1, 2, 0xff, 0x80, 0x20]);
                put(f, at, &[v]).then(|| format!("ipv6 ext byte @{at} = {v:#04x}"))
            }
        },
        // L4 fields.
        3 | 4 => {
            let (l4, proto) = lay.l4?;
            match proto {
                PROTO_TCP | PROTO_UDP if rng.percent(35) => {
                    let port = rng.pick_u16(&[80u16, 53, 443, 9000, 5000, 0, 81]);
                    let at = if rng.percent(80) { l4 + 2 } else { l4 };
                    put(f, at, &port.to_be_bytes()).then(|| format!("port @{at} = {port}"))
                }
                PROTO_TCP if rng.percent(50) => {
                    let v = rng.pick_u8(&[0x50u8, 0x40, 0x00, 0xf0, 0x60, 0x80]);
                    put(f, l4 + 12, &[v]).then(|| format!("tcp data offset byte = {v:#04x}"))
                }
                PROTO_TCP => {
                    let v = rng.pick(&[TCP_SYN, TCP_ACK, 0x12, TCP_RST, 0x14, 0x01, 0x18, 0xff, 0]);
                    put(f, l4 + 13, &[v]).then(|| format!("tcp flags = {v:#04x}"))
                }
                PROTO_UDP => {
                    let v = length_value(rng, len.saturating_sub(l4));
                    put(f, l4 + 4, &v.to_be_bytes()).then(|| format!("udp length = {v}"))
                }
                PROTO_ICMP | PROTO_ICMPV6 => match rng.below(4) {
                    0 => {
                        let v = rng.pick_u8(&[3u8, 11, 12, 0, 8, 1, 2, 4, 5, 128, 135]);
                        put(f, l4, &[v]).then(|| format!("icmp type = {v}"))
                    }
                    1 => {
                        // Quoted IP header: version/IHL, protocol.
                        let (at, v) = if rng.percent(50) {
                            (l4 + 8, rng.pick_u8(&[0x45u8, 0x46, 0x4f, 0x44, 0x60]))
                        } else if proto == PROTO_ICMP {
                            (
                                l4 + 8 + 9,
                                rng.pick_u8(&[PROTO_TCP, PROTO_UDP, PROTO_ICMP, 0]),
                            )
                        } else {
                            (
                                l4 + 8 + 6,
                                rng.pick_u8(&[
                                    PROTO_TCP,
                                    PROTO_UDP,
                                    PROTO_ICMPV6,
                                    PROTO_HOPOPTS,
                                    PROTO_FRAGMENT,
                                ]),
                            )
                        };
                        put(f, at, &[v]).then(|| format!("quoted header byte @{at} = {v:#04x}"))
                    }
                    2 => {
                        // Quoted ports (after a 20- or 40-byte quoted IP header).
                        let quoted_ip = if proto == PROTO_ICMP { 20 } else { 40 };
                        let at = l4 + 8 + quoted_ip + rng.pick(&[0, 2]);
                        let port = rng.pick_u16(&[80u16, 53, 443, 9000, 5000, 0, 81]);
                        put(f, at, &port.to_be_bytes())
                            .then(|| format!("quoted port @{at} = {port}"))
                    }
                    _ => {
                        // Quoted source address: another VIP, or the client.
                        let (at, a) = if proto == PROTO_ICMP {
                            let v4s: Vec<&VipKey> =
                                vips.iter().filter(|k| k.family == FAMILY_V4).collect();
                            (l4 + 8 + 12, v4s[rng.below(v4s.len())].addr[..4].to_vec())
                        } else {
                            let v6s: Vec<&VipKey> =
                                vips.iter().filter(|k| k.family == FAMILY_V6).collect();
                            (l4 + 8 + 8, v6s[rng.below(v6s.len())].addr.to_vec())
                        };
                        put(f, at, &a).then(|| format!("quoted source @{at} = {a:02x?}"))
                    }
                },
                _ => None,
            }
        }
        _ => None,
    }
}

/// Applies 1–4 random mutations to a copy of seed `si`.
fn mutate(rng: &mut Rng, seeds: &[Seed], si: usize, vips: &[VipKey]) -> (Vec<u8>, Vec<String>) {
    let mut f = seeds[si].frame.clone();
    let mut what = Vec::new();
    let n = rng.range(1, 4);
    while what.len() < n {
        let len = f.len();
        let done = match rng.below(20) {
            0..=2 => {
                let bits = rng.range(1, 4);
                let mut flipped = Vec::new();
                for _ in 0..bits {
                    let at = offset(rng, len);
                    let bit = rng.below(8);
                    f[at] ^= 1 << bit;
                    flipped.push(format!("{at}.{bit}"));
                }
                Some(format!("flip bits {}", flipped.join(",")))
            }
            3 | 4 => {
                let at = offset(rng, len);
                f[at] = rng.byte();
                Some(format!("byte {at} = {:#04x}", f[at]))
            }
            5 | 6 => {
                let at = offset(rng, len);
                f[at] = rng.pick(&INTERESTING);
                Some(format!("byte {at} = {:#04x}", f[at]))
            }
            7 if len > MIN_FRAME => {
                let to = rng.range(MIN_FRAME, len - 1);
                f.truncate(to);
                Some(format!("truncate to {to}"))
            }
            8 if len < MAX_FRAME => {
                let add = rng.range(1, 64).min(MAX_FRAME - len);
                let zeros = rng.percent(50);
                for _ in 0..add {
                    let b = if zeros { 0 } else { rng.byte() };
                    f.push(b);
                }
                Some(format!(
                    "extend by {add} {}",
                    if zeros { "zeros" } else { "random bytes" }
                ))
            }
            9..=14 => targeted(rng, &mut f, vips),
            15 => {
                // Splice: this frame's L2 with another seed's L3 and above.
                let o = &seeds[rng.below(seeds.len())];
                let (a, b) = (lax_layout(&f), lax_layout(&o.frame));
                if a.l3 <= len && b.l3 <= o.frame.len() {
                    let mut g = f[..a.l3].to_vec();
                    g.extend_from_slice(&o.frame[b.l3..]);
                    g.truncate(MAX_FRAME);
                    f = g;
                    Some(format!("L3+ from seed [{}]", o.name))
                } else {
                    None
                }
            }
            16 => {
                // Splice: another seed's IP header over this frame's.
                let o = &seeds[rng.below(seeds.len())];
                let (a, b) = (lax_layout(&f), lax_layout(&o.frame));
                match (a.l4, b.l4) {
                    (Some((al4, _)), Some((bl4, _)))
                        if al4 <= len && bl4 <= o.frame.len() && b.l3 <= bl4 =>
                    {
                        let mut g = f[..a.l3.min(len)].to_vec();
                        g.extend_from_slice(&o.frame[b.l3..bl4]);
                        g.extend_from_slice(&f[al4.max(a.l3)..]);
                        g.truncate(MAX_FRAME);
                        if g.len() >= MIN_FRAME {
                            f = g;
                            Some(format!("IP header from seed [{}]", o.name))
                        } else {
                            None
                        }
                    }
                    _ => None,
                }
            }
            17 => {
                // Splice: another seed's first k bytes over this frame's.
                let o = &seeds[rng.below(seeds.len())];
                let k = rng.range(MIN_FRAME, o.frame.len().min(len));
                f[..k].copy_from_slice(&o.frame[..k]);
                Some(format!("first {k} bytes from seed [{}]", o.name))
            }
            18 => {
                // Add or remove a VLAN tag.
                let lay = lax_layout(&f);
                if lay.l3 > 14 && rng.percent(50) {
                    f.drain(12..16);
                    Some("remove the outer VLAN tag".into())
                } else if len + 4 <= MAX_FRAME {
                    let tpid = rng.pick(&[0x8100u16, 0x88a8, 0x8100]);
                    let tci = rng.u16() & 0x0fff;
                    let mut tag = tpid.to_be_bytes().to_vec();
                    tag.extend_from_slice(&tci.to_be_bytes());
                    f.splice(12..12, tag);
                    Some(format!("push VLAN tag {tpid:#06x}/{tci}"))
                } else {
                    None
                }
            }
            _ => {
                // Insert or delete a few bytes inside the headers.
                let k = rng.range(1, 8);
                let at = rng.range(12, len.min(96));
                if rng.percent(50) && at + k <= len && len - k >= MIN_FRAME {
                    f.drain(at..at + k);
                    Some(format!("delete {k} bytes at {at}"))
                } else if len + k <= MAX_FRAME {
                    let bytes: Vec<u8> = (0..k).map(|_| rng.byte()).collect();
                    f.splice(at..at, bytes);
                    Some(format!("insert {k} bytes at {at}"))
                } else {
                    None
                }
            }
        };
        if let Some(d) = done {
            what.push(d);
        }
    }
    debug_assert!(f.len() >= MIN_FRAME);
    (f, what)
}

// --- The oracle: what the program may transmit -----------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Frag {
    No,
    First,
    Later,
}

/// A sound IP header (the rules under which a packet can be attributed to a VIP).
#[derive(Clone, Copy, Debug)]
struct Ip {
    l3: usize,
    /// IPv4 total length / IPv6 40 + payload length.
    ip_len: usize,
    family: u8,
    src: [u8; 16],
    dst: [u8; 16],
    /// The L4 protocol (after IPv6 extension headers).
    proto: u8,
    l4: usize,
    frag: Frag,
    tos: u8,
}

/// Why a frame may not be forwarded (for failure reports).
type NotVip = String;

/// The L3 offset and Ethernet type, behind at most two VLAN tags (802.1Q or 802.1ad).
fn l2(f: &[u8]) -> Result<(usize, u16), NotVip> {
    let cut = || "the frame ends inside the VLAN tags".to_string();
    let mut l3 = 14;
    let mut ether_type = be16(f, 12).ok_or_else(cut)?;
    for _ in 0..2 {
        if ether_type != 0x8100 && ether_type != 0x88a8 {
            break;
        }
        ether_type = be16(f, l3 + 2).ok_or_else(cut)?;
        l3 += 4;
    }
    Ok((l3, ether_type))
}

fn parse_ip(f: &[u8]) -> Result<Ip, NotVip> {
    let (l3, ether_type) = l2(f)?;
    match ether_type {
        0x0800 => parse_ipv4(f, l3),
        0x86dd => parse_ipv6(f, l3),
        t => Err(format!("Ethernet type {t:#06x} (after the tags) is not IP")),
    }
}

fn parse_ipv4(f: &[u8], l3: usize) -> Result<Ip, NotVip> {
    let h = f
        .get(l3..l3 + 20)
        .ok_or("the frame ends inside the IPv4 header")?;
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    let ip_len = u16::from_be_bytes([h[2], h[3]]) as usize;
    if h[0] >> 4 != 4 || ihl < 20 {
        return Err(format!("IPv4 version/IHL byte {:#04x}", h[0]));
    }
    if ip_len < ihl || l3 + ip_len > f.len() {
        return Err(format!(
            "IPv4 total length {ip_len} (IHL {ihl}, {} bytes after L2)",
            f.len() - l3
        ));
    }
    let frags = u16::from_be_bytes([h[6], h[7]]);
    let frag = if frags & 0x1fff != 0 {
        Frag::Later
    } else if frags & 0x2000 != 0 {
        Frag::First
    } else {
        Frag::No
    };
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src[..4].copy_from_slice(&h[12..16]);
    dst[..4].copy_from_slice(&h[16..20]);
    Ok(Ip {
        l3,
        ip_len,
        family: FAMILY_V4,
        src,
        dst,
        proto: h[9],
        l4: l3 + ihl,
        frag,
        tos: h[1],
    })
}

/// IPv6 extension headers are walked inside the packet (payload length), at most 4 of
/// them; a fragment header with an offset makes a later fragment wherever it is.
fn parse_ipv6(f: &[u8], l3: usize) -> Result<Ip, NotVip> {
    let h = f
        .get(l3..l3 + 40)
        .ok_or("the frame ends inside the IPv6 header")?;
    let payload = u16::from_be_bytes([h[4], h[5]]) as usize;
    let ip_len = 40 + payload;
    if h[0] >> 4 != 6 {
        return Err(format!("IPv6 version byte {:#04x}", h[0]));
    }
    if payload == 0 || l3 + ip_len > f.len() {
        return Err(format!(
            "IPv6 payload length {payload} ({} bytes after L2)",
            f.len() - l3
        ));
    }
    let (proto, l4, frag) = ipv6_chain(&f[..l3 + ip_len], h[6], l3 + 40)?;
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    dst.copy_from_slice(&h[24..40]);
    Ok(Ip {
        l3,
        ip_len,
        family: FAMILY_V6,
        src,
        dst,
        proto,
        l4,
        frag,
        tos: (h[0] << 4) | (h[1] >> 4),
    })
}

/// Walks IPv6 extension headers starting at `at` inside `p`: (L4 protocol, L4 offset,
/// fragment state); an error when the chain leaves `p` or is longer than 4.
fn ipv6_chain(p: &[u8], first: u8, mut at: usize) -> Result<(u8, usize, Frag), NotVip> {
    let cut = || "an IPv6 extension header runs past the packet".to_string();
    let mut next = first;
    let mut frag = Frag::No;
    for _ in 0..4 {
        match next {
            PROTO_HOPOPTS | PROTO_ROUTING | PROTO_DSTOPTS => {
                let e = p.get(at..at + 2).ok_or_else(cut)?;
                next = e[0];
                at += (e[1] as usize + 1) * 8;
            }
            PROTO_FRAGMENT => {
                let e = p.get(at..at + 8).ok_or_else(cut)?;
                next = e[0];
                let off_flags = u16::from_be_bytes([e[2], e[3]]);
                let this = if off_flags & 0xfff8 != 0 {
                    Frag::Later
                } else if off_flags & 1 != 0 {
                    Frag::First
                } else {
                    Frag::No
                };
                frag = frag.max(this);
                at += 8;
            }
            _ => break,
        }
    }
    if matches!(next, 0 | 43 | 44 | 60) {
        return Err("more than 4 IPv6 extension headers".into());
    }
    if at > p.len() {
        return Err(cut());
    }
    Ok((next, at, frag))
}

fn vip_lookup(s: &Scenario, key: VipKey) -> Option<&Vip> {
    s.vips
        .iter()
        .find(|v| v.key == key)
        .or_else(|| s.vips.iter().find(|v| v.key == VipKey { port: 0, ..key }))
}

fn show_addr(a: &[u8; 16], family: u8) -> String {
    if family == FAMILY_V4 {
        Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string()
    } else {
        Ipv6Addr::from(*a).to_string()
    }
}

/// What the program may forward: the packet's IP header, the VIP, and the flow key the
/// backend is chosen by.
struct Want<'a> {
    ip: Ip,
    vip: &'a Vip,
    key: FlowKey,
    what: &'static str,
}

fn forwardable<'a>(s: &'a Scenario, f: &[u8]) -> Result<Want<'a>, NotVip> {
    let ip = parse_ip(f)?;
    match (ip.proto, ip.family) {
        (PROTO_TCP | PROTO_UDP, _) => vip_packet(s, f, ip),
        (PROTO_ICMP, FAMILY_V4) | (PROTO_ICMPV6, FAMILY_V6) => icmp_error_about_vip(s, f, ip),
        (p, _) => Err(format!("IP protocol {p}")),
    }
}

/// A TCP or UDP packet for a VIP whose L4 header is sound; fragments only on VIPs that
/// route them, a later fragment matched on (address, protocol) alone.
fn vip_packet<'a>(s: &'a Scenario, f: &[u8], ip: Ip) -> Result<Want<'a>, NotVip> {
    let mut key = FlowKey {
        src: ip.src,
        dst: ip.dst,
        proto: ip.proto,
        family: ip.family,
        ..FlowKey::default()
    };
    let frag_route = |v: &Vip| v.meta.flags & vip_flags::FRAG_ROUTE != 0;
    let dst = show_addr(&ip.dst, ip.family);
    if ip.frag == Frag::Later {
        // The fragment entry of (address, protocol): the last VIP configured for it.
        let vip = s
            .vips
            .iter()
            .rev()
            .find(|v| v.key.addr == ip.dst && v.key.proto == ip.proto && v.key.family == ip.family)
            .ok_or_else(|| format!("a later fragment to {dst} proto {}: no VIP", ip.proto))?;
        if !frag_route(vip) {
            return Err(format!(
                "a later fragment for {}, which drops fragments",
                vip.name
            ));
        }
        return Ok(Want {
            ip,
            vip,
            key,
            what: "later fragment",
        });
    }
    let l4 = &f[ip.l4.min(ip.l3 + ip.ip_len)..ip.l3 + ip.ip_len];
    let sound = match ip.proto {
        PROTO_TCP => {
            let doff = l4.get(12).map_or(0, |b| ((b >> 4) as usize) * 4);
            l4.len() >= 20 && doff >= 20 && doff <= l4.len()
        }
        _ => {
            let len = be16(l4, 4).map_or(0, |l| l as usize);
            l4.len() >= 8 && (ip.frag == Frag::First || (len >= 8 && len <= l4.len()))
        }
    };
    if !sound {
        return Err(format!(
            "a malformed {} header ({} bytes of L4 in the IP packet)",
            if ip.proto == PROTO_TCP { "TCP" } else { "UDP" },
            l4.len()
        ));
    }
    key.sport = u16::from_ne_bytes([l4[0], l4[1]]);
    key.dport = u16::from_ne_bytes([l4[2], l4[3]]);
    let port = u16::from_be(key.dport);
    let vip = vip_lookup(
        s,
        VipKey {
            addr: ip.dst,
            port: key.dport,
            proto: ip.proto,
            family: ip.family,
        },
    )
    .ok_or_else(|| format!("no VIP {dst} port {port} proto {}", ip.proto))?;
    if ip.frag == Frag::First && !frag_route(vip) {
        return Err(format!(
            "a first fragment for {}, which drops fragments",
            vip.name
        ));
    }
    Ok(Want {
        ip,
        vip,
        key,
        what: if ip.frag == Frag::First {
            "first fragment"
        } else {
            "VIP packet"
        },
    })
}

/// An unfragmented ICMP error addressed to a VIP address, quoting a TCP/UDP packet that
/// VIP sent (quoted source = the VIP address and port): it belongs to the client → VIP
/// flow, and may go to that flow's backend. Everything read lies inside the IP packet
/// (its total / payload length), as for any other VIP packet.
fn icmp_error_about_vip<'a>(s: &'a Scenario, f: &[u8], ip: Ip) -> Result<Want<'a>, NotVip> {
    if ip.frag != Frag::No {
        return Err("a fragmented ICMP packet".into());
    }
    let icmp = &f[ip.l4..ip.l3 + ip.ip_len];
    let cut = |what: &str| {
        format!(
            "an PROTO_ICMP packet whose IP length ends before its {what} ({} bytes of PROTO_ICMP \
             inside IP length {}; {} more bytes in the frame)",
            icmp.len(),
            ip.ip_len,
            f.len() - ip.l3 - ip.ip_len
        )
    };
    let t = *icmp.first().ok_or_else(|| cut("header"))?;
    let error = match ip.family {
        FAMILY_V4 => matches!(t, 3 | 4 | 5 | 11 | 12),
        _ => matches!(t, 1..=4),
    };
    if !error {
        return Err(format!("ICMP type {t} (not an error)"));
    }
    let quote = icmp.get(8..).ok_or_else(|| cut("header"))?;
    let mut qsrc = [0u8; 16];
    let mut qdst = [0u8; 16];
    let (proto, l4) = if ip.family == FAMILY_V4 {
        let h = quote.get(..20).ok_or_else(|| cut("quoted IPv4 header"))?;
        let ihl = ((h[0] & 0x0f) as usize) * 4;
        if h[0] >> 4 != 4 || ihl < 20 {
            return Err(format!("quoted IPv4 version/IHL byte {:#04x}", h[0]));
        }
        qsrc[..4].copy_from_slice(&h[12..16]);
        qdst[..4].copy_from_slice(&h[16..20]);
        (h[9], ihl)
    } else {
        let h = quote.get(..40).ok_or_else(|| cut("quoted IPv6 header"))?;
        if h[0] >> 4 != 6 {
            return Err(format!("quoted IPv6 version byte {:#04x}", h[0]));
        }
        qsrc.copy_from_slice(&h[8..24]);
        qdst.copy_from_slice(&h[24..40]);
        let (proto, l4, _) = ipv6_chain(quote, h[6], 40)?;
        (proto, l4)
    };
    if !matches!(proto, PROTO_TCP | PROTO_UDP) {
        return Err(format!("an ICMP error quoting IP protocol {proto}"));
    }
    if qsrc != ip.dst {
        return Err(format!(
            "an ICMP error to {} quoting a packet from {}",
            show_addr(&ip.dst, ip.family),
            show_addr(&qsrc, ip.family)
        ));
    }
    let ports = quote.get(l4..l4 + 4).ok_or_else(|| cut("quoted ports"))?;
    let key = FlowKey {
        src: qdst,
        dst: qsrc,
        sport: u16::from_ne_bytes([ports[2], ports[3]]),
        dport: u16::from_ne_bytes([ports[0], ports[1]]),
        proto,
        family: ip.family,
        _pad: [0; 2],
    };
    let vip = vip_lookup(
        s,
        VipKey {
            addr: qsrc,
            port: key.dport,
            proto,
            family: ip.family,
        },
    )
    .ok_or_else(|| {
        format!(
            "an ICMP error about {} port {} proto {proto}: no such VIP",
            show_addr(&qsrc, ip.family),
            u16::from_be(key.dport)
        )
    })?;
    Ok(Want {
        ip,
        vip,
        key,
        what: "ICMP error about a VIP flow",
    })
}

/// The exact frame the program must transmit for `w` to backend `be`.
fn expected_output(s: &Scenario, w: &Want<'_>, input: &[u8], be: &Be) -> Result<Vec<u8>, String> {
    let mac = be
        .mac
        .ok_or_else(|| format!("backend {} has no neighbour entry", be.addr))?;
    let smac = if be.via_fx2 { s.fx2_mac } else { s.fx0_mac };
    let l3 = w.ip.l3;
    if w.vip.meta.mode == mode::DR {
        if be.addr.is_ipv4() != (w.ip.family == FAMILY_V4) {
            return Err(format!("DR to backend {} of the other family", be.addr));
        }
        let mut out = input.to_vec();
        out[..6].copy_from_slice(&mac);
        out[6..12].copy_from_slice(&smac);
        return Ok(out);
    }
    let hash = lb_common::hash::flow_hash(&w.key, w.vip.meta.flags, s.cfg.hash_seed);
    let gue = w.vip.meta.mode == mode::GUE;
    let proto = if gue {
        17
    } else if w.ip.family == FAMILY_V4 {
        4
    } else {
        41
    };
    let mut payload = Vec::new();
    if gue {
        let sport = 0xc000u16 | (hash & 0x3fff) as u16;
        payload.extend_from_slice(&sport.to_be_bytes());
        payload.extend_from_slice(&w.vip.meta.gue_port.to_ne_bytes());
        payload.extend_from_slice(&((w.ip.ip_len + 8) as u16).to_be_bytes());
        payload.extend_from_slice(&[0, 0]);
    }
    // The outer length covers the inner IP packet; Ethernet padding after it rides along.
    let outer_payload = payload.len() + w.ip.ip_len;
    let tos = w.ip.tos;
    let mut out = mac.to_vec();
    out.extend_from_slice(&smac);
    out.extend_from_slice(&input[12..l3 - 2]); // VLAN tags, if any
    match be.addr {
        IpAddr::V4(dst) => {
            out.extend_from_slice(&0x0800u16.to_be_bytes());
            let prefix = u32::from(s.cfg.tunnel_src4_prefix.min(32));
            let host_mask = u32::MAX.checked_shr(prefix).unwrap_or(0);
            let base = u32::from_be_bytes(s.cfg.tunnel_src4);
            let src = ((base & !host_mask) | (hash & host_mask)).to_be_bytes();
            let mut ip = etherparse::Ipv4Header::new(
                outer_payload as u16,
                64,
                etherparse::IpNumber(proto),
                src,
                dst.octets(),
            )
            .map_err(|e| format!("outer IPv4 header: {e}"))?;
            ip.dont_fragment = true;
            ip.dscp = etherparse::Ipv4Dscp::try_new(tos >> 2).map_err(|e| e.to_string())?;
            ip.ecn = etherparse::Ipv4Ecn::try_new(tos & 3).map_err(|e| e.to_string())?;
            ip.header_checksum = ip.calc_header_checksum();
            out.extend_from_slice(&ip.to_bytes());
        }
        IpAddr::V6(dst) => {
            out.extend_from_slice(&0x86ddu16.to_be_bytes());
            let mut src = s.cfg.tunnel_src6;
            if s.cfg.tunnel_src6_prefix <= 96 {
                src[12..16].copy_from_slice(&hash.to_be_bytes());
            }
            let first = (6u32 << 28) | (u32::from(tos) << 20) | (hash & 0xfffff);
            out.extend_from_slice(&first.to_be_bytes());
            out.extend_from_slice(&(outer_payload as u16).to_be_bytes());
            out.push(proto);
            out.push(64);
            out.extend_from_slice(&src);
            out.extend_from_slice(&dst.octets());
        }
    }
    out.extend_from_slice(&payload);
    out.extend_from_slice(&input[l3..]);
    Ok(out)
}

/// Checks one run: Ok((VIP name, what was forwarded)) for a correct forward, Ok(None) for
/// a correct PASS/DROP, Err(report) otherwise.
fn check<'a>(
    s: &'a Scenario,
    input: &[u8],
    return_value: u32,
    output: &[u8],
) -> Result<Option<(&'a str, &'static str)>, String> {
    let verdict = Verdict::from_u32(return_value)
        .ok_or_else(|| format!("unknown return value {return_value}"))?;
    match verdict {
        Verdict::Aborted => Err("XDP_ABORTED".into()),
        Verdict::Pass | Verdict::Drop => {
            if output == input {
                Ok(None)
            } else {
                Err(format!(
                    "{} changed the frame{}",
                    verdict.name(),
                    fixture::bytes_diff(input, output)
                ))
            }
        }
        Verdict::Tx | Verdict::Redirect => {
            let w = forwardable(s, input).map_err(|why| {
                format!(
                    "{} of a frame that is not a forwardable VIP packet: {why}\n  output: {}",
                    verdict.name(),
                    packet::describe(output).replace('\n', "\n    ")
                )
            })?;
            let be = s.expected_backend(w.vip, &w.key).ok_or_else(|| {
                format!(
                    "{} of a {} for {}, whose ring has no backend",
                    verdict.name(),
                    w.what,
                    w.vip.name
                )
            })?;
            let want_verdict = if be.via_fx2 {
                Verdict::Redirect
            } else {
                Verdict::Tx
            };
            let expected = expected_output(s, &w, input, be).map_err(|e| {
                format!("{} of a {} for {}: {e}", verdict.name(), w.what, w.vip.name)
            })?;
            if verdict == want_verdict && output == expected {
                return Ok(Some((w.vip.name, w.what)));
            }
            Err(format!(
                "{} of a {} for {} (backend {} → expected {}){}",
                verdict.name(),
                w.what,
                w.vip.name,
                be.addr,
                want_verdict.name(),
                fixture::bytes_diff(&expected, output)
            ))
        }
    }
}

/// A failure's kind, for grouping: its first line up to any parenthesis, numbers elided.
fn failure_kind(report: &str) -> String {
    let first = report.lines().next().unwrap_or_default();
    let head = first.split(" (").next().unwrap_or_default();
    let mut kind = String::new();
    for c in head.chars() {
        if !c.is_ascii_digit() {
            kind.push(c);
        } else if !kind.ends_with('#') {
            kind.push('#');
        }
    }
    kind
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Totals {
    per_verdict: [Counter; Verdict::COUNT as usize],
    forwarded_per_vip: Vec<(String, u64)>,
    forwarded_per_kind: Vec<(&'static str, u64)>,
    failures: u64,
    /// (kind of failure, how many, the first example in full), in order of discovery.
    reports: Vec<(String, u64, String)>,
    unmutated: u64,
}

#[test]
fn mutated_packets_never_abort_or_misforward() -> anyhow::Result<()> {
    let seed = env_u64("LB_FUZZ_SEED")?.unwrap_or(DEFAULT_SEED);
    let count = env_u64("LB_FUZZ_COUNT")?.unwrap_or(DEFAULT_COUNT);
    eprintln!("fuzz: seed {seed:#018x} (LB_FUZZ_SEED), {count} packets (LB_FUZZ_COUNT)");

    let s = Scenario::new("lbt-fuzz")?;
    let seeds = corpus(&s);
    let vip_keys: Vec<VipKey> = s.vips.iter().map(|v| v.key).collect();
    eprintln!("fuzz: {} seed frames", seeds.len());

    // The program on fx0 also sees what the peer sends (IPv6 router solicitations, MLD
    // reports): silence the peer so that the counters hold the fuzzer's runs alone.
    let peer = Ns {
        name: format!("{}-peer", s.topo.prefix()),
    };
    for dev in ["fxp0", "fxp2"] {
        peer.sysctl(&format!("net.ipv6.conf.{dev}.disable_ipv6"), "1")?;
    }
    std::thread::sleep(Duration::from_millis(100));

    let before = s.dp.counters()?;
    let started = Instant::now();
    let totals = s.lb.enter(|| -> anyhow::Result<Totals> {
        let mut rng = Rng(seed);
        let mut t = Totals {
            per_verdict: [Counter::default(); Verdict::COUNT as usize],
            forwarded_per_vip: s.vips.iter().map(|v| (v.name.to_string(), 0)).collect(),
            forwarded_per_kind: Vec::new(),
            failures: 0,
            reports: Vec::new(),
            unmutated: 0,
        };
        for i in 0..count {
            let si = rng.below(seeds.len());
            let (frame, what) = if rng.percent(5) {
                t.unmutated += 1;
                (seeds[si].frame.clone(), vec!["unmutated".to_string()])
            } else {
                mutate(&mut rng, &seeds, si, &vip_keys)
            };
            let got = s
                .dp
                .test_run(&frame, 1, HEADROOM, Some(s.fx0))
                .with_context(|| format!("test run of packet {i} ({} bytes)", frame.len()))?;
            if let Some(c) = t.per_verdict.get_mut(got.return_value as usize) {
                c.packets += 1;
                c.bytes += frame.len() as u64;
            }
            match check(&s, &frame, got.return_value, &got.output) {
                Ok(Some((vip, kind))) => {
                    if let Some(e) = t.forwarded_per_vip.iter_mut().find(|e| e.0 == vip) {
                        e.1 += 1;
                    }
                    match t.forwarded_per_kind.iter_mut().find(|e| e.0 == kind) {
                        Some(e) => e.1 += 1,
                        None => t.forwarded_per_kind.push((kind, 1)),
                    }
                }
                Ok(None) => {}
                Err(report) => {
                    t.failures += 1;
                    let kind = failure_kind(&report);
                    match t.reports.iter_mut().find(|r| r.0 == kind) {
                        Some(r) => r.1 += 1,
                        None => t.reports.push((
                            kind,
                            1,
                            format!(
                                "packet {i}: seed [{}], mutations: {}\n  {report}\n  input: {}\n  input hex: {}",
                                seeds[si].name,
                                what.join("; "),
                                packet::describe(&frame).replace('\n', "\n    "),
                                hex(&frame),
                            ),
                        )),
                    }
                }
            }
        }
        Ok(t)
    })??;
    let elapsed = started.elapsed();

    let v = |x: Verdict| totals.per_verdict[x as usize].packets;
    eprintln!(
        "fuzz: {count} packets (seed {seed:#018x}, {} unmutated): pass {} drop {} tx {} \
         redirect {} aborted {}, {} failures, {:.0} packets/s ({:.2?})",
        totals.unmutated,
        v(Verdict::Pass),
        v(Verdict::Drop),
        v(Verdict::Tx),
        v(Verdict::Redirect),
        v(Verdict::Aborted),
        totals.failures,
        count as f64 / elapsed.as_secs_f64(),
        elapsed,
    );
    eprintln!(
        "fuzz: forwarded per VIP: {}",
        totals
            .forwarded_per_vip
            .iter()
            .map(|(n, c)| format!("{n}={c}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    eprintln!(
        "fuzz: forwarded (and checked byte for byte) per kind: {}",
        totals
            .forwarded_per_kind
            .iter()
            .map(|(n, c)| format!("{n}={c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // The program counts every run exactly once, under its verdict.
    let got = s.dp.counters()?.since(&before);
    let mut problems: Vec<String> = Verdict::ALL
        .iter()
        .filter(|&&x| got.verdict(x) != totals.per_verdict[x as usize])
        .map(|&x| {
            format!(
                "verdict counter {}: the program counted {:?}, the fuzzer saw {:?}",
                x.name(),
                got.verdict(x),
                totals.per_verdict[x as usize]
            )
        })
        .collect();
    let tally: u64 = totals.per_verdict.iter().map(|c| c.packets).sum();
    if tally != count {
        problems.push(format!("{} runs returned an unknown value", count - tally));
    }
    if totals.failures > 0 {
        let kinds: Vec<String> = totals
            .reports
            .iter()
            .map(|(kind, n, _)| format!("  {n} × {kind}"))
            .collect();
        let examples: Vec<&str> = totals
            .reports
            .iter()
            .take(MAX_REPORTS)
            .map(|r| r.2.as_str())
            .collect();
        problems.push(format!(
            "{} of {count} mutated packets failed (seed {seed:#018x}), {} kinds of failure:\n{}\n\n\
             the first packet of each kind (at most {MAX_REPORTS}):\n\n{}",
            totals.failures,
            totals.reports.len(),
            kinds.join("\n"),
            examples.join("\n\n")
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    Ok(())
}
