//! IP protocol numbers (IANA "Assigned Internet Protocol Numbers"), as they appear in
//! IPv4's protocol field, IPv6's next-header field and the `proto` of map keys. Defined
//! here once for the data plane, the agent and the tests.

pub const PROTO_ICMP: u8 = 1;
/// IPv4 in IP: the outer protocol of an IPIP or 4in6 tunnel.
pub const PROTO_IPIP: u8 = 4;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
/// IPv6 in IP: the outer protocol of an IP6IP6 or 6in4 tunnel.
pub const PROTO_IPV6: u8 = 41;
pub const PROTO_ICMPV6: u8 = 58;

/// IPv6 extension headers (RFC 8200 §4) the data plane walks past to reach the transport
/// header: hop-by-hop options, routing, fragment, destination options.
pub const PROTO_HOPOPTS: u8 = 0;
pub const PROTO_ROUTING: u8 = 43;
pub const PROTO_FRAGMENT: u8 = 44;
pub const PROTO_DSTOPTS: u8 = 60;
/// IPv6 "no next header": nothing follows.
pub const PROTO_NONE: u8 = 59;
