//! A `[[vip]]` table on its own (`validate/vip.rs`): mode and GUE port, enum choices,
//! fragments, ring size.

use super::{ok, problem, vip_and_group};
use crate::config::Mode;

#[test]
fn gue_port_is_required_for_gue_and_rejected_otherwise() {
    assert_eq!(
        problem(&vip_and_group(&[("mode", "\"gue\"")])),
        "vip \"v\": field \"gue_port\": missing: required when mode = \"gue\" (the UDP port \
         the targets decapsulate on)"
    );
    assert_eq!(
        problem(&vip_and_group(&[("mode", "\"gue\""), ("gue_port", "0")])),
        "vip \"v\": field \"gue_port\": 0 is out of range: must be between 1 and 65535"
    );
    assert_eq!(
        problem(&vip_and_group(&[("gue_port", "6080")])),
        "vip \"v\": field \"gue_port\": only for mode = \"gue\", not mode = \"dr\""
    );
    assert_eq!(
        problem(&vip_and_group(&[
            ("mode", "\"tunnel\""),
            ("gue_port", "6080")
        ])),
        "vip \"v\": field \"gue_port\": only for mode = \"gue\", not mode = \"tunnel\""
    );
    let c = ok(&vip_and_group(&[("mode", "\"gue\""), ("gue_port", "6080")]));
    assert_eq!(c.vips[0].mode, Mode::Gue { port: 6080 });
}

#[test]
fn enum_fields_name_their_choices() {
    let cases = [
        (
            "protocol",
            "\"TCP\"",
            "\"TCP\" is not one of \"tcp\", \"udp\"",
        ),
        (
            "hash",
            "\"source-ip-port\"",
            "\"source-ip-port\" is not one of \"five-tuple\", \"source-ip\", \
             \"source-ip-dest-port\"",
        ),
        (
            "fragments",
            "\"reassemble\"",
            "\"reassemble\" is not one of \"drop\", \"route\"",
        ),
    ];
    for (field, value, why) in cases {
        assert_eq!(
            problem(&vip_and_group(&[(field, value)])),
            format!("vip \"v\": field \"{field}\": {why}")
        );
    }
}

#[test]
fn fragment_routing_requires_five_tuple_hash() {
    for hash in ["source-ip", "source-ip-dest-port"] {
        assert_eq!(
            problem(&vip_and_group(&[
                ("fragments", "\"route\""),
                ("hash", &format!("\"{hash}\""))
            ])),
            format!(
                "vip \"v\": field \"fragments\": \"route\" places every packet of the VIP by \
                 (source, destination, protocol), which overrides hash = \"{hash}\"; set hash = \
                 \"five-tuple\" or leave hash out"
            )
        );
    }
    ok(&vip_and_group(&[
        ("fragments", "\"route\""),
        ("hash", "\"five-tuple\""),
    ]));
    ok(&vip_and_group(&[("fragments", "\"route\"")]));
}

#[test]
fn ring_size_must_be_a_supported_prime() {
    assert_eq!(
        problem(&vip_and_group(&[("ring_size", "65536")])),
        "vip \"v\": field \"ring_size\": 65536 is not a supported size: use one of 251, 509, \
         1021, 2039, 4093, 8191, 16381, 32749, 65521, 65537, 131071"
    );
    for &size in crate::maglev::SIZES {
        let c = ok(&vip_and_group(&[("ring_size", &size.to_string())]));
        assert_eq!(c.vips[0].ring_size, size);
    }
}
