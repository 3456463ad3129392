//! The `[[vip]]` tables: each VIP's own fields, before it is checked against the others
//! and against its target group ([`super::cross`]).

use std::{net::IpAddr, ops::RangeInclusive};

use super::{address::unicast, label, name, raw, Report, NONZERO_PORT};
use crate::{
    config::{AnnouncePolicy, Fragments, HashFields, Mode, Protocol, Vip},
    maglev,
};

/// 0 is every port of the address.
const PORT: RangeInclusive<i64> = 0..=65535;

/// A VIP as far as it parsed.
pub(super) struct VipDraft<'a> {
    pub label: String,
    pub index: usize,
    pub name: Option<&'a str>,
    pub address: Option<IpAddr>,
    pub port: Option<u16>,
    pub protocol: Option<Protocol>,
    pub mode: Option<Mode>,
    pub hash: Option<HashFields>,
    pub ring_size: Option<u32>,
    pub fragments: Option<Fragments>,
    pub target_group: Option<&'a str>,
    pub announce: Option<Option<AnnouncePolicy>>,
    pub announce_min_healthy: Option<Option<u32>>,
}

impl VipDraft<'_> {
    pub fn finish(self) -> Option<Vip> {
        Some(Vip {
            name: self.name?.to_owned(),
            address: self.address?,
            port: self.port?,
            protocol: self.protocol?,
            mode: self.mode?,
            hash: self.hash?,
            ring_size: self.ring_size?,
            fragments: self.fragments?,
            target_group: self.target_group?.to_owned(),
            announce: self.announce?,
            announce_min_healthy: self.announce_min_healthy?,
        })
    }
}

pub(super) fn vip<'a>(r: &mut Report, index: usize, raw: &'a raw::Vip) -> VipDraft<'a> {
    let label = label("vip", index, raw.name.as_deref());
    let item = label.as_str();

    let name = name(r, item, raw.name.as_deref());
    let address = r
        .required(item, "address", raw.address.as_deref())
        .and_then(|text| r.ok(item, "address", unicast(text)));
    let port = r.required_int(item, "port", raw.port, PORT);
    let protocol = r.choice(
        item,
        "protocol",
        raw.protocol.as_deref(),
        &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp)],
        None,
    );
    let mode = mode(r, item, raw);
    let hash = r.choice(
        item,
        "hash",
        raw.hash.as_deref(),
        &[
            ("five-tuple", HashFields::FiveTuple),
            ("source-ip", HashFields::SourceIp),
            ("source-ip-dest-port", HashFields::SourceIpDestPort),
        ],
        Some(HashFields::FiveTuple),
    );
    let fragments = r.choice(
        item,
        "fragments",
        raw.fragments.as_deref(),
        &[("drop", Fragments::Drop), ("route", Fragments::Route)],
        Some(Fragments::Drop),
    );
    if let (Some(Fragments::Route), Some(hash)) = (fragments, hash) {
        fragment_routing_fits_hash(r, item, hash);
    }
    let ring_size = ring_size(r, item, raw.ring_size);
    let target_group = r.required(item, "target_group", raw.target_group.as_deref());
    let announce = match raw.announce.as_deref() {
        None => Some(None),
        text => super::announce::policy(r, item, "announce", text).map(Some),
    };
    let announce_min_healthy = match raw.announce_min_healthy {
        None => Some(None),
        Some(v) => r
            .in_range(
                item,
                "announce_min_healthy",
                v,
                super::announce::MIN_HEALTHY,
            )
            .map(Some),
    };

    VipDraft {
        label,
        index,
        name,
        address,
        port,
        protocol,
        mode,
        hash,
        ring_size,
        fragments,
        target_group,
        announce,
        announce_min_healthy,
    }
}

/// `mode`, with `gue_port` for GUE (and only for GUE).
fn mode(r: &mut Report, item: &str, raw: &raw::Vip) -> Option<Mode> {
    let mode = r.choice(
        item,
        "mode",
        raw.mode.as_deref(),
        &[
            ("dr", Mode::Dr),
            ("tunnel", Mode::Tunnel),
            ("gue", Mode::Gue { port: 0 }),
        ],
        Some(Mode::Dr),
    );
    match mode {
        Some(Mode::Gue { .. }) => match raw.gue_port {
            None => {
                r.problem(
                    item,
                    "gue_port",
                    "missing: required when mode = \"gue\" (the UDP port the targets \
                     decapsulate on)",
                );
                None
            }
            Some(p) => r
                .in_range(item, "gue_port", p, NONZERO_PORT)
                .map(|port| Mode::Gue { port }),
        },
        Some(m) => {
            if raw.gue_port.is_some() {
                r.problem(
                    item,
                    "gue_port",
                    format!("only for mode = \"gue\", not mode = \"{m}\""),
                );
            }
            Some(m)
        }
        None => None,
    }
}

/// Routed fragments are hashed on (source, destination, protocol) whatever `hash` says.
fn fragment_routing_fits_hash(r: &mut Report, item: &str, hash: HashFields) {
    if hash != HashFields::FiveTuple {
        r.problem(
            item,
            "fragments",
            format!(
                "\"route\" places every packet of the VIP by (source, destination, \
                 protocol), which overrides hash = \"{hash}\"; set hash = \"five-tuple\" or \
                 leave hash out"
            ),
        );
    }
}

/// One of the Maglev ring sizes; the default when absent.
fn ring_size(r: &mut Report, item: &str, value: Option<i64>) -> Option<u32> {
    let Some(n) = value else {
        return Some(maglev::DEFAULT_SIZE);
    };
    let size = maglev::SIZES.iter().copied().find(|&s| i64::from(s) == n);
    if size.is_none() {
        let sizes: Vec<String> = maglev::SIZES.iter().map(u32::to_string).collect();
        r.problem(
            item,
            "ring_size",
            format!(
                "{n} is not a supported size: use one of {}",
                sizes.join(", ")
            ),
        );
    }
    size
}
