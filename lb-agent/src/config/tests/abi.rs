//! From a validated VIP to the data plane's ABI: VIP-map keys, flags, mode bytes, the
//! fragment entries.

use std::net::Ipv6Addr;

use lb_common::{
    service::{mode, vip_flags, FAMILY_FRAG_KEY, FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP},
    VipKey, VipMeta,
};

use super::{group_g, ok, vip, vip_and_group};

#[test]
fn vip_key_layout_and_byte_order() {
    let c = ok(&(vip(&[("name", "\"a\""), ("port", "8080")])
        + &vip(&[
            ("name", "\"b\""),
            ("address", "\"2001:2:0:200::1\""),
            ("port", "53"),
            ("protocol", "\"udp\""),
            ("mode", "\"tunnel\""),
        ])
        + &group_g("[target_group.health_check]\nport = 80")));
    let a = c.vips[0].key();
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&[198, 18, 200, 1]);
    assert_eq!(
        a,
        VipKey {
            addr,
            port: 8080u16.to_be(),
            proto: PROTO_TCP,
            family: FAMILY_V4,
        }
    );
    // Network byte order in memory: 8080 = 0x1f90.
    assert_eq!(a.port.to_ne_bytes(), [0x1f, 0x90]);

    let b = c.vips[1].key();
    assert_eq!(
        b,
        VipKey {
            addr: Ipv6Addr::new(0x2001, 2, 0, 0x200, 0, 0, 0, 1).octets(),
            port: 53u16.to_be(),
            proto: PROTO_UDP,
            family: FAMILY_V6,
        }
    );
    assert_eq!(b.port.to_ne_bytes(), [0, 53]);
    assert_eq!(
        c.vips[1].fragment_key(),
        VipKey {
            port: 0,
            family: FAMILY_V6 | FAMILY_FRAG_KEY,
            ..b
        }
    );
}

#[test]
fn flags_for_each_hash_and_fragments_choice() {
    let cases = [
        ("five-tuple", "drop", 0),
        ("source-ip", "drop", vip_flags::HASH_SRC_ONLY),
        ("source-ip-dest-port", "drop", vip_flags::HASH_SRC_DPORT),
        ("five-tuple", "route", vip_flags::FRAG_ROUTE),
    ];
    for (hash, fragments, flags) in cases {
        let c = ok(&vip_and_group(&[
            ("hash", &format!("\"{hash}\"")),
            ("fragments", &format!("\"{fragments}\"")),
        ]));
        assert_eq!(c.vips[0].flags(), flags, "{hash} {fragments}");
        assert_eq!(c.vips[0].hash.as_str(), hash);
        assert_eq!(c.vips[0].fragments.as_str(), fragments);
    }
}

#[test]
fn mode_bytes_and_meta() {
    let cases = [
        ("\"dr\"", mode::DR, 0),
        ("\"tunnel\"", mode::TUNNEL, 0),
        ("\"gue\"\ngue_port = 6080", mode::GUE, 6080u16.to_be()),
    ];
    for (m, byte, gue_port) in cases {
        let c = ok(&vip_and_group(&[("mode", m), ("hash", "\"source-ip\"")]));
        let v = &c.vips[0];
        assert_eq!(v.mode_byte(), byte);
        assert_eq!(
            v.meta(7, 65537),
            VipMeta {
                vip_id: 7,
                flags: vip_flags::HASH_SRC_ONLY,
                mode: byte,
                _pad: 0,
                gue_port,
                ring_size: 65537,
            }
        );
    }
}

#[test]
fn fragment_entries_name_the_deciding_vip() {
    let c = ok(&(vip(&[("name", "\"a\"")])
        + &vip(&[
            ("name", "\"b\""),
            ("port", "81"),
            ("fragments", "\"route\""),
        ])
        + &vip(&[("name", "\"c\""), ("protocol", "\"udp\"")])
        + &vip(&[
            ("name", "\"d\""),
            ("address", "\"198.18.200.2\""),
            ("port", "0"),
        ])
        + &group_g("[target_group.health_check]\nport = 80")));
    let entries: Vec<(VipKey, &str)> = c
        .fragment_entries()
        .into_iter()
        .map(|(k, i)| (k, c.vips[i].name.as_str()))
        .collect();
    let key = |name: &str| c.vip(name).expect("vip").fragment_key();
    assert_eq!(entries, [(key("a"), "b"), (key("c"), "c"), (key("d"), "d")]);
    assert_eq!(key("a"), key("b"));
}
