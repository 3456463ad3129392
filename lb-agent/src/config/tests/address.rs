//! Addresses (`validate/address.rs`): a VIP's and a target's address must be unicast.

use super::{group, problem, vip, vip_and_group};

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
