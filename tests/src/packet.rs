//! Test packets: a thin layer over etherparse's builder with this project's test
//! addresses, plus a decoder that turns a frame into readable header lines for diffs.

use etherparse::{LaxPacketHeaders, PacketBuilder, PacketBuilderStep};
use std::net::{Ipv4Addr, Ipv6Addr};

/// MACs used in fixtures: locally administered, so never a real vendor's.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
pub const LB_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];

/// Test addresses: only RFC 2544 (198.18.0.0/15) and RFC 5180 (2001:2::/48) ranges.
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
pub const LB4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x10);
pub const LB6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);

fn eth() -> PacketBuilderStep<etherparse::Ethernet2Header> {
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
}

fn finish<T>(b: PacketBuilderStep<T>, payload: &[u8]) -> Vec<u8>
where
    PacketBuilderStep<T>: Writable,
{
    b.build(payload)
}

/// The last step of every builder chain, so helpers can finish any of them.
pub trait Writable {
    fn build(self, payload: &[u8]) -> Vec<u8>;
}

macro_rules! writable {
    ($($t:ty),*) => {$(
        impl Writable for PacketBuilderStep<$t> {
            fn build(self, payload: &[u8]) -> Vec<u8> {
                let mut out = Vec::with_capacity(self.size(payload.len()));
                // Writing into a Vec cannot fail for I/O reasons; a builder error here is
                // a bug in the fixture (e.g. a payload too large for the header), so
                // the fixture itself should fail loudly.
                self.write(&mut out, payload).expect("fixture packet must serialize");
                out
            }
        }
    )*};
}
writable!(
    etherparse::UdpHeader,
    etherparse::TcpHeader,
    etherparse::Icmpv4Header,
    etherparse::Icmpv6Header
);

/// Ethernet + IPv4 + UDP.
pub fn udp4(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    finish(
        eth().ipv4(src.octets(), dst.octets(), 64).udp(sport, dport),
        payload,
    )
}

/// Ethernet + IPv6 + UDP.
pub fn udp6(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    finish(
        eth().ipv6(src.octets(), dst.octets(), 64).udp(sport, dport),
        payload,
    )
}

/// Ethernet + IPv4 + TCP with the SYN flag.
pub fn tcp4_syn(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    finish(
        eth()
            .ipv4(src.octets(), dst.octets(), 64)
            .tcp(sport, dport, 1, 64240)
            .syn(),
        &[],
    )
}

/// Ethernet + IPv6 + TCP with the SYN flag.
pub fn tcp6_syn(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Vec<u8> {
    finish(
        eth()
            .ipv6(src.octets(), dst.octets(), 64)
            .tcp(sport, dport, 1, 64240)
            .syn(),
        &[],
    )
}

/// Ethernet + IPv4 + ICMP echo request.
pub fn icmp4_echo(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    finish(
        eth()
            .ipv4(src.octets(), dst.octets(), 64)
            .icmpv4_echo_request(1, 1),
        b"ping",
    )
}

/// Ethernet + IPv6 + ICMPv6 echo request.
pub fn icmp6_echo(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    finish(
        eth()
            .ipv6(src.octets(), dst.octets(), 64)
            .icmpv6_echo_request(1, 1),
        b"ping",
    )
}

/// Ethernet + single 802.1Q tag + IPv4 + UDP.
pub fn udp4_vlan(vid: u16, src: Ipv4Addr, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    #[expect(clippy::expect_used, reason = "vid is a test constant below 4096")]
    let vid = etherparse::VlanId::try_new(vid).expect("valid VLAN id");
    finish(
        eth()
            .single_vlan(vid)
            .ipv4(src.octets(), dst.octets(), 64)
            .udp(40000, dport),
        b"vlan",
    )
}

/// Ethernet + 802.1ad outer + 802.1Q inner tag + IPv4 + UDP.
pub fn udp4_qinq(outer: u16, inner: u16, src: Ipv4Addr, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    #[expect(clippy::expect_used, reason = "vids are test constants below 4096")]
    let (o, i) = (
        etherparse::VlanId::try_new(outer).expect("valid VLAN id"),
        etherparse::VlanId::try_new(inner).expect("valid VLAN id"),
    );
    finish(
        eth()
            .double_vlan(o, i)
            .ipv4(src.octets(), dst.octets(), 64)
            .udp(40000, dport),
        b"qinq",
    )
}

/// An ARP who-has request for `target` from the client.
pub fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]); // Ethernet/IPv4, request
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&CLIENT4.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// A frame with an arbitrary Ethernet type and payload (LLDP, unknown types, …).
pub fn raw_l2(ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&LB_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 packet whose IP protocol is `proto`, with `payload` as its body.
pub fn ipv4_proto(proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut ip = etherparse::Ipv4Header::new(
        payload.len() as u16,
        64,
        etherparse::IpNumber(proto),
        CLIENT4.octets(),
        LB4.octets(),
    )
    .unwrap_or_default();
    ip.header_checksum = ip.calc_header_checksum();
    let mut f = raw_l2(0x0800, &ip.to_bytes());
    f.extend_from_slice(payload);
    f
}

/// One line per decoded header, for fixture diffs. Truncated and malformed frames decode
/// as far as they go, with the reason parsing stopped.
pub fn describe(frame: &[u8]) -> String {
    let mut out = format!("{} bytes", frame.len());
    match LaxPacketHeaders::from_ethernet(frame) {
        Err(e) => out.push_str(&format!("\n  undecodable: {e}")),
        Ok(h) => {
            if let Some(l) = &h.link {
                out.push_str(&format!("\n  link: {l:?}"));
            }
            if let Some(v) = &h.vlan {
                out.push_str(&format!("\n  vlan: {v:?}"));
            }
            if let Some(n) = &h.net {
                out.push_str(&format!("\n  net: {n:?}"));
            }
            if let Some(t) = &h.transport {
                out.push_str(&format!("\n  transport: {t:?}"));
            }
            if let Some((e, layer)) = &h.stop_err {
                out.push_str(&format!("\n  stopped at {layer:?}: {e}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_produce_the_expected_lengths() {
        assert_eq!(udp4(CLIENT4, 1, LB4, 2, b"abcd").len(), 14 + 20 + 8 + 4);
        assert_eq!(udp6(CLIENT6, 1, LB6, 2, b"").len(), 14 + 40 + 8);
        assert_eq!(tcp4_syn(CLIENT4, 1, LB4, 2).len(), 14 + 20 + 20);
        assert_eq!(udp4_vlan(7, CLIENT4, LB4, 53).len(), 14 + 4 + 20 + 8 + 4);
        assert_eq!(udp4_qinq(7, 8, CLIENT4, LB4, 53).len(), 14 + 8 + 20 + 8 + 4);
        assert_eq!(arp_request(LB4).len(), 42);
        assert_eq!(ipv4_proto(47, &[0; 4]).len(), 14 + 20 + 4);
    }

    #[test]
    fn describe_decodes_and_reports_truncation() {
        let f = udp4(CLIENT4, 1000, LB4, 53, b"x");
        let d = describe(&f);
        assert!(d.contains("Udp"), "{d}");
        let d = describe(&f[..20]);
        assert!(d.contains("stopped"), "{d}");
    }
}

/// Byte surgery on built frames, for the hostile cases a builder will not make.
/// Offsets assume an untagged Ethernet header (14 bytes).
pub mod edit {
    use lb_common::ip::PROTO_FRAGMENT;

    const L3: usize = 14;

    fn ipv4_checksum(f: &mut [u8]) {
        let ihl = ((f[L3] & 0x0f) as usize) * 4;
        f[L3 + 10] = 0;
        f[L3 + 11] = 0;
        let mut sum = 0u32;
        for i in (0..ihl).step_by(2) {
            sum += u16::from_be_bytes([f[L3 + i], f[L3 + i + 1]]) as u32;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let c = (!(sum as u16)).to_be_bytes();
        f[L3 + 10] = c[0];
        f[L3 + 11] = c[1];
    }

    fn set_tot_len(f: &mut [u8], len: usize) {
        let b = (len as u16).to_be_bytes();
        f[L3 + 2] = b[0];
        f[L3 + 3] = b[1];
    }

    /// Inserts IPv4 options (a multiple of 4 bytes) after the 20-byte header.
    pub fn ipv4_options(f: &[u8], options: &[u8]) -> Vec<u8> {
        assert!(options.len().is_multiple_of(4) && options.len() <= 40);
        let mut out = f[..L3 + 20].to_vec();
        out.extend_from_slice(options);
        out.extend_from_slice(&f[L3 + 20..]);
        out[L3] = 0x40 | (5 + options.len() / 4) as u8;
        let tot = u16::from_be_bytes([f[L3 + 2], f[L3 + 3]]) as usize + options.len();
        set_tot_len(&mut out, tot);
        ipv4_checksum(&mut out);
        out
    }

    /// Sets the IPv4 version/IHL byte (checksum updated).
    pub fn ipv4_vihl(f: &[u8], vihl: u8) -> Vec<u8> {
        let mut out = f.to_vec();
        out[L3] = vihl;
        out[L3 + 10] = 0;
        out[L3 + 11] = 0;
        out
    }

    /// Sets the IPv4 total length (checksum updated).
    pub fn ipv4_tot_len(f: &[u8], len: usize) -> Vec<u8> {
        let mut out = f.to_vec();
        set_tot_len(&mut out, len);
        ipv4_checksum(&mut out);
        out
    }

    /// Marks an IPv4 packet as a fragment: `more` sets MF, `offset` in 8-byte units.
    pub fn ipv4_fragment(f: &[u8], more: bool, offset: u16) -> Vec<u8> {
        let mut out = f.to_vec();
        let v = (offset & 0x1fff) | if more { 0x2000 } else { 0 };
        let b = v.to_be_bytes();
        out[L3 + 6] = b[0];
        out[L3 + 7] = b[1];
        ipv4_checksum(&mut out);
        out
    }

    /// Sets the IPv4 TTL and TOS (checksum updated).
    pub fn ipv4_ttl_tos(f: &[u8], ttl: u8, tos: u8) -> Vec<u8> {
        let mut out = f.to_vec();
        out[L3 + 8] = ttl;
        out[L3 + 1] = tos;
        ipv4_checksum(&mut out);
        out
    }

    /// Sets the TCP flags byte of a TCP packet whose L4 header starts at `l4`.
    pub fn tcp_flags(f: &[u8], l4: usize, flags: u8) -> Vec<u8> {
        let mut out = f.to_vec();
        out[l4 + 13] = flags;
        out
    }

    /// Sets the TCP data offset (in 32-bit words) of a TCP header at `l4`.
    pub fn tcp_doff(f: &[u8], l4: usize, doff: u8) -> Vec<u8> {
        let mut out = f.to_vec();
        out[l4 + 12] = (doff << 4) | (out[l4 + 12] & 0x0f);
        out
    }

    /// Inserts IPv6 extension headers after the fixed header. `headers` are
    /// (type, body) pairs; each body is padded to a multiple of 8 bytes with the
    /// next-header and length bytes in front. Fragment headers are 8 bytes whose
    /// body is the 6 bytes after next-header/reserved.
    pub fn ipv6_ext(f: &[u8], headers: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let l4_proto = f[L3 + 6];
        let mut chain = Vec::new();
        for (i, (_, body)) in headers.iter().enumerate() {
            let next = headers.get(i + 1).map_or(l4_proto, |h| h.0);
            let mut h = vec![next, 0];
            h.extend_from_slice(body);
            while h.len() % 8 != 0 {
                h.push(0);
            }
            if headers[i].0 != PROTO_FRAGMENT {
                h[1] = (h.len() / 8 - 1) as u8;
            }
            chain.extend_from_slice(&h);
        }
        let mut out = f[..L3 + 40].to_vec();
        out[L3 + 6] = headers.first().map_or(l4_proto, |h| h.0);
        let payload = u16::from_be_bytes([f[L3 + 4], f[L3 + 5]]) as usize + chain.len();
        let b = (payload as u16).to_be_bytes();
        out[L3 + 4] = b[0];
        out[L3 + 5] = b[1];
        out.extend_from_slice(&chain);
        out.extend_from_slice(&f[L3 + 40..]);
        out
    }

    /// Sets the IPv6 traffic class.
    pub fn ipv6_tclass(f: &[u8], tc: u8) -> Vec<u8> {
        let mut out = f.to_vec();
        out[L3] = 0x60 | (tc >> 4);
        out[L3 + 1] = (tc << 4) | (out[L3 + 1] & 0x0f);
        out
    }
}

/// An ICMPv4 error from `router` to `to`, quoting `quoted` (an IP packet without
/// Ethernet; the first 28 bytes are quoted, as RFC 792 requires at least).
pub fn icmp4_error(
    router: Ipv4Addr,
    to: Ipv4Addr,
    icmp_type: u8,
    code: u8,
    rest: [u8; 4],
    quoted: &[u8],
) -> Vec<u8> {
    let q = &quoted[..quoted.len().min(28)];
    finish(
        eth()
            .ipv4(router.octets(), to.octets(), 64)
            .icmpv4_raw(icmp_type, code, rest),
        q,
    )
}

/// An ICMPv6 error from `router` to `to`, quoting up to 48 bytes of `quoted`.
pub fn icmp6_error(
    router: Ipv6Addr,
    to: Ipv6Addr,
    icmp_type: u8,
    code: u8,
    rest: [u8; 4],
    quoted: &[u8],
) -> Vec<u8> {
    let q = &quoted[..quoted.len().min(48)];
    finish(
        eth()
            .ipv6(router.octets(), to.octets(), 64)
            .icmpv6_raw(icmp_type, code, rest),
        q,
    )
}
