//! Checking a parsed file and turning it into a [`Config`].
//!
//! Each item is checked on its own first (a draft keeps whatever parsed), then the items
//! are checked against each other using the parts that did parse, so one bad value does
//! not hide unrelated problems. Every problem reads `<item>: field "<field>": <why>`,
//! where the item is `agent`, `vip "<name>"`, `target_group "<name>"` or
//! `target_group "<name>": target <address>` (`#<n>`, counted from 1 in file order, when
//! there is no name or address to show).

use std::{
    collections::{hash_map::Entry, BTreeSet, HashMap},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    ops::RangeInclusive,
    path::PathBuf,
    time::Duration,
};

use super::{
    raw, AgentCheck, AgentSettings, Config, EmfOutput, Fragments, HashFields, HealthCheck,
    HealthCheckProtocol, HttpCheck, Ipv4Prefix, Ipv6Prefix, MetricsSettings, Mode, Protocol,
    StatusMatcher, Target, TargetGroup, Vip,
};
use crate::maglev;

/// How much the data plane holds.
pub(super) struct Limits {
    pub max_vips: usize,
    /// Targets across all groups: each (group, address) is one data-plane backend.
    pub max_targets: usize,
}

impl Limits {
    pub const DATA_PLANE: Self = Self {
        max_vips: lb_common::service::MAX_VIPS as usize,
        max_targets: lb_common::service::MAX_BACKENDS as usize,
    };
}

const NAME_MAX: usize = 64;
/// About 100 bytes an entry, preallocated: 2^26 is several GiB already.
const FLOW_TABLE_ENTRIES: RangeInclusive<i64> = 1024..=(1 << 26);
const UDP_IDLE_TIMEOUT_SECS: RangeInclusive<i64> = 1..=3600;
const PORT: RangeInclusive<i64> = 0..=65535;
const NONZERO_PORT: RangeInclusive<i64> = 1..=65535;
const WEIGHT: RangeInclusive<i64> = 0..=65535;
const DEFAULT_WEIGHT: u16 = 1;
/// NLB: deregistration delay 0–3600 s, default 300.
const DEREGISTRATION_DELAY_SECS: RangeInclusive<i64> = 0..=3600;
const DEFAULT_DEREGISTRATION_DELAY_SECS: u64 = 300;
/// 0 (off) or this range, as for ALB target groups.
const SLOW_START_SECS: RangeInclusive<i64> = 30..=900;
/// NLB: 5–300 s, default 30. Below 5 is accepted for lab and edge setups that must react
/// faster than NLB can.
const HC_INTERVAL_SECS: RangeInclusive<i64> = 1..=300;
const DEFAULT_HC_INTERVAL_SECS: u64 = 30;
/// NLB: 2–120 s. 1 is accepted so that a 1 s interval has a timeout that fits in it.
const HC_TIMEOUT_SECS: RangeInclusive<i64> = 1..=120;
/// NLB: 10 s for TCP, 6 s for HTTP and HTTPS (lowered to the interval if that is shorter).
const DEFAULT_HC_TIMEOUT_TCP_SECS: u64 = 10;
const DEFAULT_HC_TIMEOUT_HTTP_SECS: u64 = 6;
/// NLB: 2–10 for both; defaults 5 healthy, 2 unhealthy.
const HC_THRESHOLD: RangeInclusive<i64> = 2..=10;
const DEFAULT_HEALTHY_THRESHOLD: u8 = 5;
const DEFAULT_UNHEALTHY_THRESHOLD: u8 = 2;
const DEFAULT_HC_PATH: &str = "/";
const HC_PATH_MAX: usize = 1024;
const DEFAULT_HC_MATCHER: &str = "200-399";
/// A body check is a substring search of the first part of the response, not a parser.
const HC_BODY_MAX: usize = 256;
/// argv of an exec check: the program and up to 31 arguments.
const HC_COMMAND_MAX: usize = 32;
/// Agent check timeout default: HAProxy's agent-check answers in a line, so a short
/// timeout keeps a hung agent from holding a stale weight (lowered to the interval).
const DEFAULT_AGENT_TIMEOUT_SECS: u64 = 2;
/// NLB: target_health_state.unhealthy.draining_interval_seconds, 0–360000 s, default 0.
const UNHEALTHY_DRAINING_INTERVAL_SECS: RangeInclusive<i64> = 0..=360_000;

/// Checks `file` as a whole: the configuration, or every problem found.
pub(super) fn validate(file: &raw::File, limits: &Limits) -> Result<Config, Vec<String>> {
    let mut r = Report::default();
    let agent = agent(&mut r, &file.agent);
    let metrics = metrics(&mut r, &file.metrics);
    let vips: Vec<VipDraft<'_>> = file
        .vip
        .iter()
        .enumerate()
        .map(|(i, v)| vip(&mut r, i, v))
        .collect();
    let mut groups: Vec<GroupDraft<'_>> = file
        .target_group
        .iter()
        .enumerate()
        .map(|(i, g)| group(&mut r, i, g))
        .collect();
    cross_check(&mut r, &vips, &mut groups, limits);

    if !r.problems.is_empty() {
        return Err(r.problems);
    }
    let vips: Option<Vec<Vip>> = vips.into_iter().map(VipDraft::finish).collect();
    let groups: Option<Vec<TargetGroup>> = groups.into_iter().map(GroupDraft::finish).collect();
    match (vips, groups) {
        (Some(vips), Some(target_groups)) => Ok(Config {
            agent,
            metrics,
            vips,
            target_groups,
            warnings: r.warnings,
        }),
        // Every value left unset was reported above; this is a bug in this module.
        _ => Err(vec![
            "internal error: a value was rejected without a reason".to_owned(),
        ]),
    }
}

/// Problems and warnings found so far, and helpers that check one value and report it.
#[derive(Default)]
struct Report {
    problems: Vec<String>,
    warnings: Vec<String>,
}

impl Report {
    fn problem(&mut self, item: &str, field: &str, why: impl fmt::Display) {
        self.problems
            .push(format!("{item}: field \"{field}\": {why}"));
    }

    fn warn(&mut self, item: &str, field: &str, why: impl fmt::Display) {
        self.warnings
            .push(format!("{item}: field \"{field}\": {why}"));
    }

    fn missing(&mut self, item: &str, field: &str) {
        self.problem(item, field, "missing (required)");
    }

    /// The value of a check, or `None` after reporting why it failed.
    fn ok<T>(&mut self, item: &str, field: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|why| self.problem(item, field, why)).ok()
    }

    fn required<'a>(&mut self, item: &str, field: &str, value: Option<&'a str>) -> Option<&'a str> {
        if value.is_none() {
            self.missing(item, field);
        }
        value
    }

    /// An integer in `range`, or `default` when absent.
    fn int<T: TryFrom<i64>>(
        &mut self,
        item: &str,
        field: &str,
        value: Option<i64>,
        range: RangeInclusive<i64>,
        default: T,
    ) -> Option<T> {
        match value {
            None => Some(default),
            Some(v) => self.in_range(item, field, v, range),
        }
    }

    fn required_int<T: TryFrom<i64>>(
        &mut self,
        item: &str,
        field: &str,
        value: Option<i64>,
        range: RangeInclusive<i64>,
    ) -> Option<T> {
        match value {
            None => {
                self.missing(item, field);
                None
            }
            Some(v) => self.in_range(item, field, v, range),
        }
    }

    fn in_range<T: TryFrom<i64>>(
        &mut self,
        item: &str,
        field: &str,
        value: i64,
        range: RangeInclusive<i64>,
    ) -> Option<T> {
        match T::try_from(value) {
            Ok(v) if range.contains(&value) => Some(v),
            _ => {
                self.problem(item, field, out_of_range(value, &range));
                None
            }
        }
    }

    /// One of the names in `choices`, or `default` when absent (`None`: required).
    fn choice<T: Copy>(
        &mut self,
        item: &str,
        field: &str,
        value: Option<&str>,
        choices: &[(&str, T)],
        default: Option<T>,
    ) -> Option<T> {
        let Some(text) = value else {
            if default.is_none() {
                self.missing(item, field);
            }
            return default;
        };
        if let Some(&(_, v)) = choices.iter().find(|(name, _)| *name == text) {
            return Some(v);
        }
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        self.problem(
            item,
            field,
            format!("{text:?} is not one of {}", names.join(", ")),
        );
        None
    }
}

fn out_of_range(value: i64, range: &RangeInclusive<i64>) -> String {
    format!(
        "{value} is out of range: must be between {} and {}",
        range.start(),
        range.end()
    )
}

/// How an item is named in messages: by name, else by position.
fn label(kind: &str, index: usize, name: Option<&str>) -> String {
    match name {
        Some(n) if !n.is_empty() => format!("{kind} {n:?}"),
        _ => format!("{kind} #{}", index + 1),
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{name:?} contains {c:?}; names use only letters, digits, '.', '_' and '-'"
        ));
    }
    if name.len() > NAME_MAX {
        return Err(format!(
            "is {} characters long; at most {NAME_MAX} are allowed",
            name.len()
        ));
    }
    Ok(())
}

/// A unicast address: one a client may connect to, or a target may be reached at.
fn unicast(text: &str) -> Result<IpAddr, String> {
    let addr: IpAddr = text.parse().map_err(|_| {
        if text.contains('/') {
            format!("{text:?} is a prefix; give a single address")
        } else {
            format!("{text:?} is not an IPv4 or IPv6 address")
        }
    })?;
    let why = match addr {
        a if a.is_unspecified() => "is the unspecified address",
        a if a.is_multicast() => "is a multicast address",
        a if a.is_loopback() => "is a loopback address, which never crosses the network",
        IpAddr::V4(a) if a.is_broadcast() => "is the broadcast address",
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => {
            "is an IPv4-mapped IPv6 address, which never appears on the wire; write the IPv4 \
             address"
        }
        _ => return Ok(addr),
    };
    Err(format!("{addr} {why}; it must be a unicast address"))
}

fn prefix(text: &str) -> Result<(IpAddr, u8), String> {
    let Some((addr, len)) = text.split_once('/') else {
        return Err(format!(
            "{text:?} is not a prefix: write address/length, such as \"198.18.255.0/24\""
        ));
    };
    let addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address"))?;
    let len = len
        .parse()
        .map_err(|_| format!("{len:?} is not a prefix length"))?;
    Ok((addr, len))
}

fn prefix_length(len: u8, range: RangeInclusive<u8>) -> Result<(), String> {
    if range.contains(&len) {
        Ok(())
    } else {
        Err(format!(
            "prefix length {len} is out of range: must be between {} and {}",
            range.start(),
            range.end()
        ))
    }
}

/// An outer-source prefix must consist of addresses a packet may come from.
fn source_prefix(addr: IpAddr, text: &str) -> Result<(), String> {
    if addr.is_multicast() || addr.is_loopback() || addr.is_unspecified() {
        return Err(format!(
            "{text:?} is not a unicast prefix; tunnelled packets need unicast source addresses"
        ));
    }
    Ok(())
}

fn v4_prefix(text: &str) -> Result<Ipv4Prefix, String> {
    let (addr, len) = prefix(text)?;
    let IpAddr::V4(addr) = addr else {
        return Err(format!(
            "{text:?} is an IPv6 prefix; this field takes an IPv4 one"
        ));
    };
    prefix_length(len, 8..=32)?;
    source_prefix(addr.into(), text)?;
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    let bits = u32::from(addr);
    if bits & !mask != 0 {
        return Err(format!(
            "{text:?} has host bits set (the flow hash fills them); write {}/{len}",
            Ipv4Addr::from(bits & mask)
        ));
    }
    Ok(Ipv4Prefix { addr, len })
}

fn v6_prefix(text: &str) -> Result<Ipv6Prefix, String> {
    let (addr, len) = prefix(text)?;
    let IpAddr::V6(addr) = addr else {
        return Err(format!(
            "{text:?} is an IPv4 prefix; this field takes an IPv6 one"
        ));
    };
    prefix_length(len, 16..=128)?;
    source_prefix(addr.into(), text)?;
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    let bits = u128::from(addr);
    if bits & !mask != 0 {
        return Err(format!(
            "{text:?} has host bits set (the flow hash fills them); write {}/{len}",
            Ipv6Addr::from(bits & mask)
        ));
    }
    Ok(Ipv6Prefix { addr, len })
}

fn agent(r: &mut Report, raw: &raw::Agent) -> AgentSettings {
    let item = "agent";
    let d = AgentSettings::default();
    let hash_seed = r.int(
        item,
        "hash_seed",
        raw.hash_seed,
        0..=i64::from(u32::MAX),
        d.hash_seed,
    );
    let flow_table_entries = r.int(
        item,
        "flow_table_entries",
        raw.flow_table_entries,
        FLOW_TABLE_ENTRIES,
        d.flow_table_entries,
    );
    let udp_idle_timeout = r
        .int(
            item,
            "udp_idle_timeout_secs",
            raw.udp_idle_timeout_secs,
            UDP_IDLE_TIMEOUT_SECS,
            d.udp_idle_timeout.as_secs(),
        )
        .map(Duration::from_secs);
    let max_new_flows_per_cpu = r.int(
        item,
        "max_new_flows_per_cpu",
        raw.max_new_flows_per_cpu,
        0..=i64::from(u32::MAX),
        d.max_new_flows_per_cpu,
    );
    let tunnel_source_v4 = match raw.tunnel_source_v4.as_deref() {
        None => None,
        Some(text) => r.ok(item, "tunnel_source_v4", v4_prefix(text)),
    };
    let tunnel_source_v6 = match raw.tunnel_source_v6.as_deref() {
        None => None,
        Some(text) => r.ok(item, "tunnel_source_v6", v6_prefix(text)),
    };
    // A value that failed was reported: the configuration is rejected, so the default
    // standing in for it is never used.
    AgentSettings {
        hash_seed: hash_seed.unwrap_or(d.hash_seed),
        flow_table_entries: flow_table_entries.unwrap_or(d.flow_table_entries),
        udp_idle_timeout: udp_idle_timeout.unwrap_or(d.udp_idle_timeout),
        max_new_flows_per_cpu: max_new_flows_per_cpu.unwrap_or(d.max_new_flows_per_cpu),
        tunnel_source_v4: tunnel_source_v4.unwrap_or(d.tunnel_source_v4),
        tunnel_source_v6: tunnel_source_v6.unwrap_or(d.tunnel_source_v6),
    }
}

/// CloudWatch: a namespace is 1 to 255 characters of these.
const NAMESPACE_MAX: usize = 255;
/// CloudWatch: a dimension value is 1 to 1024 characters; an availability zone name is
/// far shorter, so a long value is a mistake.
const AVAILABILITY_ZONE_MAX: usize = 255;
/// CloudWatch's two storage resolutions.
const METRICS_PERIOD_SECS: [i64; 2] = [1, 60];

fn metrics(r: &mut Report, raw: &raw::Metrics) -> MetricsSettings {
    let item = "metrics";
    let d = MetricsSettings::default();
    let namespace = match raw.namespace.as_deref() {
        None => None,
        Some(text) => r.ok(item, "namespace", check_namespace(text)),
    };
    let availability_zone = match raw.availability_zone.as_deref() {
        None => None,
        Some(text) => r.ok(item, "availability_zone", check_zone(text)),
    };
    let period = match raw.period_secs {
        None => d.period,
        Some(secs) if METRICS_PERIOD_SECS.contains(&secs) => {
            Duration::from_secs(secs.unsigned_abs())
        }
        Some(secs) => {
            r.problem(
                item,
                "period_secs",
                format!(
                    "{secs} is not a CloudWatch storage resolution: use 60 (standard) or 1 \
                     (high resolution)"
                ),
            );
            d.period
        }
    };
    let emf = match raw.emf.as_deref() {
        None => None,
        Some(text) => r.ok(item, "emf", emf_output(text)),
    };
    let prometheus_listen = match raw.prometheus_listen.as_deref() {
        None => None,
        Some(text) => r.ok(item, "prometheus_listen", listen_address(text)),
    };
    if let Some(addr) = prometheus_listen {
        if !addr.ip().is_loopback() {
            r.warn(
                item,
                "prometheus_listen",
                format!(
                    "{addr} is not a loopback address: anyone who can reach it can read \
                     the metrics (names of VIPs, target groups and targets)"
                ),
            );
        }
    }
    MetricsSettings {
        namespace: namespace.unwrap_or(d.namespace),
        availability_zone,
        period,
        emf: emf.unwrap_or(d.emf),
        prometheus_listen,
    }
}

fn check_namespace(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > NAMESPACE_MAX {
        return Err(format!(
            "is {} characters long; CloudWatch namespaces have 1 to {NAMESPACE_MAX}",
            text.len()
        ));
    }
    if text.starts_with("AWS/") {
        return Err(format!(
            "{text:?} starts with \"AWS/\", which CloudWatch reserves for AWS services; \
             use a custom namespace such as \"lb\""
        ));
    }
    if let Some(c) = text.chars().find(|c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | '#' | ':' | ' '))
    }) {
        return Err(format!(
            "{text:?} contains {c:?}; CloudWatch namespaces use only letters, digits, \
             spaces and . - _ / # :"
        ));
    }
    Ok(text.to_owned())
}

fn check_zone(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > AVAILABILITY_ZONE_MAX {
        return Err(format!(
            "is {} characters long; give 1 to {AVAILABILITY_ZONE_MAX}, such as \"eu-west-1a\"",
            text.len()
        ));
    }
    if let Some(c) = text.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "{text:?} contains {c:?}; an availability zone is printable ASCII without spaces"
        ));
    }
    Ok(text.to_owned())
}

fn emf_output(text: &str) -> Result<EmfOutput, String> {
    const CHOICES: &str =
        "\"off\", \"stdout\", \"file:/path\", \"agent\", \"tcp://host:port\" or \"udp://host:port\"";
    match text {
        "off" => return Ok(EmfOutput::Off),
        "stdout" => return Ok(EmfOutput::Stdout),
        "agent" => return Ok(EmfOutput::Agent),
        _ => {}
    }
    if let Some(path) = text.strip_prefix("file:") {
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Err(format!(
                "{text:?}: the file must be an absolute path, such as \"file:/var/log/lb/metrics.log\""
            ));
        }
        return Ok(EmfOutput::File(path));
    }
    if let Some(addr) = text.strip_prefix("tcp://") {
        return host_port(addr).map(EmfOutput::Tcp);
    }
    if let Some(addr) = text.strip_prefix("udp://") {
        return host_port(addr).map(EmfOutput::Udp);
    }
    Err(format!("{text:?} is not one of {CHOICES}"))
}

/// `host:port` (an IPv6 address in brackets) with a nonzero port; the host is resolved
/// when the sink connects.
pub(crate) fn host_port(text: &str) -> Result<String, String> {
    let bad =
        || format!("{text:?} is not host:port (such as \"127.0.0.1:25888\" or \"[::1]:25888\")");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(format!("{text:?}: port 0 is not a destination"));
    }
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let ok = match bare {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        }
    };
    if !ok {
        return Err(bad());
    }
    Ok(text.to_owned())
}

fn listen_address(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text.parse().map_err(|_| {
        format!("{text:?} is not address:port (such as \"127.0.0.1:9469\" or \"[::1]:9469\")")
    })?;
    if addr.port() == 0 {
        return Err(format!("{text:?}: give a port (1 to 65535)"));
    }
    Ok(addr)
}

/// A VIP as far as it parsed.
struct VipDraft<'a> {
    label: String,
    index: usize,
    name: Option<&'a str>,
    address: Option<IpAddr>,
    port: Option<u16>,
    protocol: Option<Protocol>,
    mode: Option<Mode>,
    hash: Option<HashFields>,
    ring_size: Option<u32>,
    fragments: Option<Fragments>,
    target_group: Option<&'a str>,
}

impl VipDraft<'_> {
    fn finish(self) -> Option<Vip> {
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
        })
    }
}

fn vip<'a>(r: &mut Report, index: usize, raw: &'a raw::Vip) -> VipDraft<'a> {
    let label = label("vip", index, raw.name.as_deref());
    let item = label.as_str();

    let name = r.required(item, "name", raw.name.as_deref());
    if let Some(name) = name {
        r.ok(item, "name", check_name(name));
    }
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
    let mode = match mode {
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
    };

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
    if let (Some(Fragments::Route), Some(h)) = (fragments, hash) {
        if h != HashFields::FiveTuple {
            r.problem(
                item,
                "fragments",
                format!(
                    "\"route\" places every packet of the VIP by (source, destination, \
                     protocol), which overrides hash = \"{h}\"; set hash = \"five-tuple\" or \
                     leave hash out"
                ),
            );
        }
    }

    let ring_size = match raw.ring_size {
        None => Some(maglev::DEFAULT_SIZE),
        Some(n) => {
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
    };
    let target_group = r.required(item, "target_group", raw.target_group.as_deref());

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
    }
}

/// The explicitly configured health-check port.
#[derive(Clone, Copy)]
enum CheckPort {
    /// Not configured: NLB's "traffic-port", the port of the group's VIPs.
    Traffic,
    Port(u16),
    /// Configured but wrong (already reported).
    Invalid,
}

/// A target group as far as it parsed.
struct GroupDraft<'a> {
    label: String,
    index: usize,
    name: Option<&'a str>,
    targets: Vec<TargetDraft>,
    /// Every field but `port`, which depends on the VIPs.
    health_check: Option<HealthCheck>,
    check_port: CheckPort,
    deregistration_delay: Option<Duration>,
    slow_start: Option<Duration>,
    fail_open: bool,
    unhealthy_connection_termination: bool,
    unhealthy_draining_interval: Option<Duration>,
    /// `None` if it failed; `Some(None)` if there is none.
    agent_check: Option<Option<AgentCheck>>,
}

struct TargetDraft {
    label: String,
    address: Option<IpAddr>,
    weight: Option<u16>,
}

impl GroupDraft<'_> {
    fn finish(self) -> Option<TargetGroup> {
        let targets: Option<Vec<Target>> = self
            .targets
            .into_iter()
            .map(|t| {
                Some(Target {
                    address: t.address?,
                    weight: t.weight?,
                })
            })
            .collect();
        Some(TargetGroup {
            name: self.name?.to_owned(),
            targets: targets?,
            health_check: self.health_check?,
            deregistration_delay: self.deregistration_delay?,
            slow_start: self.slow_start?,
            fail_open: self.fail_open,
            unhealthy_connection_termination: self.unhealthy_connection_termination,
            unhealthy_draining_interval: self.unhealthy_draining_interval?,
            agent_check: self.agent_check?,
        })
    }
}

fn group<'a>(r: &mut Report, index: usize, raw: &'a raw::TargetGroup) -> GroupDraft<'a> {
    let label = label("target_group", index, raw.name.as_deref());
    let item = label.as_str();

    let name = r.required(item, "name", raw.name.as_deref());
    if let Some(name) = name {
        r.ok(item, "name", check_name(name));
    }
    let deregistration_delay = r
        .int(
            item,
            "deregistration_delay_secs",
            raw.deregistration_delay_secs,
            DEREGISTRATION_DELAY_SECS,
            DEFAULT_DEREGISTRATION_DELAY_SECS,
        )
        .map(Duration::from_secs);
    let slow_start = match raw.slow_start_secs {
        None | Some(0) => Some(Duration::ZERO),
        Some(s) => match u64::try_from(s) {
            Ok(secs) if SLOW_START_SECS.contains(&s) => Some(Duration::from_secs(secs)),
            _ => {
                r.problem(
                    item,
                    "slow_start_secs",
                    format!(
                        "{s} is out of range: must be 0 (off) or between {} and {}",
                        SLOW_START_SECS.start(),
                        SLOW_START_SECS.end()
                    ),
                );
                None
            }
        },
    };

    let mut targets = Vec::with_capacity(raw.target.len());
    let mut seen: HashMap<IpAddr, usize> = HashMap::new();
    for (i, t) in raw.target.iter().enumerate() {
        let tlabel = match t.address.as_deref() {
            Some(a) => format!("{label}: target {a}"),
            None => format!("{label}: target #{}", i + 1),
        };
        let address = r
            .required(&tlabel, "address", t.address.as_deref())
            .and_then(|text| r.ok(&tlabel, "address", unicast(text)));
        if let Some(addr) = address {
            if let Some(first) = seen.insert(addr, i) {
                r.problem(
                    &tlabel,
                    "address",
                    format!(
                        "{addr} is listed twice in the group (targets #{} and #{}); each \
                         address may appear once per group",
                        first + 1,
                        i + 1
                    ),
                );
            }
        }
        let weight = r.int(&tlabel, "weight", t.weight, WEIGHT, DEFAULT_WEIGHT);
        targets.push(TargetDraft {
            label: tlabel,
            address,
            weight,
        });
    }

    let unhealthy_connection_termination = raw.unhealthy_connection_termination.unwrap_or(true);
    let unhealthy_draining_interval = match raw.unhealthy_draining_interval_secs {
        None => Some(Duration::ZERO),
        Some(s) => r
            .in_range::<u64>(
                item,
                "unhealthy_draining_interval_secs",
                s,
                UNHEALTHY_DRAINING_INTERVAL_SECS,
            )
            .and_then(|secs| {
                if secs > 0 && unhealthy_connection_termination {
                    r.problem(
                        item,
                        "unhealthy_draining_interval_secs",
                        format!(
                            "{secs} needs unhealthy_connection_termination = false (as in an \
                             AWS NLB: with termination on, an unhealthy target's flows move at \
                             once; with it off, they stay for this interval)"
                        ),
                    );
                    None
                } else {
                    Some(Duration::from_secs(secs))
                }
            }),
    };

    let (health_check, check_port) = health_check(r, item, &raw.health_check);
    let agent_check = match &raw.agent_check {
        None => Some(None),
        Some(a) => {
            // The health check's interval, when it is valid (else it was reported).
            let default_interval = match raw.health_check.interval_secs {
                None => Some(DEFAULT_HC_INTERVAL_SECS),
                Some(i) if HC_INTERVAL_SECS.contains(&i) => u64::try_from(i).ok(),
                Some(_) => None,
            };
            agent_check(r, item, a, default_interval).map(Some)
        }
    };
    GroupDraft {
        label,
        index,
        name,
        targets,
        health_check,
        check_port,
        deregistration_delay,
        slow_start,
        fail_open: raw.fail_open.unwrap_or(true),
        unhealthy_connection_termination,
        unhealthy_draining_interval,
        agent_check,
    }
}

/// `[target_group.agent_check]`; `default_interval` is the health check's (`None` if
/// that was invalid).
fn agent_check(
    r: &mut Report,
    item: &str,
    raw: &raw::AgentCheck,
    default_interval: Option<u64>,
) -> Option<AgentCheck> {
    let port = r.required_int(item, "agent_check.port", raw.port, NONZERO_PORT);
    let interval: Option<u64> = match raw.interval_secs {
        None => default_interval,
        Some(i) => r.in_range(item, "agent_check.interval_secs", i, HC_INTERVAL_SECS),
    };
    let timeout = timeout(
        r,
        item,
        "agent_check.timeout_secs",
        raw.timeout_secs,
        DEFAULT_AGENT_TIMEOUT_SECS,
        interval,
    );
    Some(AgentCheck {
        port: port?,
        interval: Duration::from_secs(interval?),
        timeout: Duration::from_secs(timeout?),
    })
}

/// A check's timeout: in [`HC_TIMEOUT_SECS`] and at most `interval`; when absent,
/// `default` lowered to `interval`.
fn timeout(
    r: &mut Report,
    item: &str,
    field: &str,
    value: Option<i64>,
    default: u64,
    interval: Option<u64>,
) -> Option<u64> {
    match value {
        None => Some(interval.map_or(default, |i| i.min(default))),
        Some(t) => match (r.in_range::<u64>(item, field, t, HC_TIMEOUT_SECS), interval) {
            (Some(t), Some(i)) if t > i => {
                r.problem(
                    item,
                    field,
                    format!(
                        "{t} is longer than interval_secs ({i}): a check must end before the \
                         next one starts"
                    ),
                );
                None
            }
            (t, _) => t,
        },
    }
}

fn check_body(body: &str) -> Result<String, String> {
    if body.is_empty() {
        return Err("must not be empty (leave it out to accept any body)".to_owned());
    }
    if body.len() > HC_BODY_MAX {
        return Err(format!(
            "is {} bytes long; at most {HC_BODY_MAX} are allowed",
            body.len()
        ));
    }
    Ok(body.to_owned())
}

/// The argv of an exec check. The program is run directly (no shell, no `PATH` search),
/// so it must be an absolute path.
fn check_command(argv: &[String]) -> Result<Vec<String>, String> {
    let Some(program) = argv.first() else {
        return Err(
            "is empty; give the program to run (an absolute path) and its arguments".to_owned(),
        );
    };
    if argv.len() > HC_COMMAND_MAX {
        return Err(format!(
            "has {} elements; at most {HC_COMMAND_MAX} are allowed (the program and {} \
             arguments)",
            argv.len(),
            HC_COMMAND_MAX - 1
        ));
    }
    if !program.starts_with('/') {
        return Err(format!(
            "{program:?} is not an absolute path; the program (the first element) must be \
             given as one, since no PATH is searched"
        ));
    }
    if let Some(i) = argv.iter().position(|a| a.contains('\0')) {
        return Err(format!(
            "element #{} contains a NUL character, which cannot be passed to a program",
            i + 1
        ));
    }
    Ok(argv.to_vec())
}

fn check_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} does not start with '/'"));
    }
    if path.len() > HC_PATH_MAX {
        return Err(format!(
            "is {} characters long; at most {HC_PATH_MAX} are allowed",
            path.len()
        ));
    }
    if let Some(c) = path.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "{path:?} contains {c:?}; a path is visible ASCII (percent-encode anything else)"
        ));
    }
    Ok(path.to_owned())
}

/// Everything about a group's health check except the port (see [`CheckPort`]).
fn health_check(
    r: &mut Report,
    item: &str,
    raw: &raw::HealthCheck,
) -> (Option<HealthCheck>, CheckPort) {
    let check_port = match raw.port {
        None => CheckPort::Traffic,
        Some(p) => match r.in_range(item, "health_check.port", p, NONZERO_PORT) {
            Some(port) => CheckPort::Port(port),
            None => CheckPort::Invalid,
        },
    };
    let protocol = r.choice(
        item,
        "health_check.protocol",
        raw.protocol.as_deref(),
        &[
            ("tcp", HealthCheckProtocol::Tcp),
            ("http", HealthCheckProtocol::Http),
            ("https", HealthCheckProtocol::Https),
            ("exec", HealthCheckProtocol::Exec),
        ],
        Some(HealthCheckProtocol::Tcp),
    );
    let http = match protocol {
        Some(HealthCheckProtocol::Http | HealthCheckProtocol::Https) => {
            let path = r.ok(
                item,
                "health_check.path",
                check_path(raw.path.as_deref().unwrap_or(DEFAULT_HC_PATH)),
            );
            let matcher = r.ok(
                item,
                "health_check.matcher",
                StatusMatcher::parse(raw.matcher.as_deref().unwrap_or(DEFAULT_HC_MATCHER)),
            );
            let body_contains = match raw.body.as_deref() {
                None => Some(None),
                Some(body) => r.ok(item, "health_check.body", check_body(body)).map(Some),
            };
            match (path, matcher, body_contains) {
                (Some(path), Some(matcher), Some(body_contains)) => Some(Some(HttpCheck {
                    path,
                    matcher,
                    body_contains,
                })),
                _ => None,
            }
        }
        Some(p) => {
            for (field, set) in [
                ("health_check.path", raw.path.is_some()),
                ("health_check.matcher", raw.matcher.is_some()),
                ("health_check.body", raw.body.is_some()),
            ] {
                if set {
                    r.problem(
                        item,
                        field,
                        format!("only for protocol = \"http\" or \"https\", not \"{p}\""),
                    );
                }
            }
            Some(None)
        }
        None => None,
    };
    let command = match protocol {
        Some(HealthCheckProtocol::Exec) => match raw.command.as_deref() {
            None => {
                r.problem(
                    item,
                    "health_check.command",
                    "missing: required when protocol = \"exec\" (the program to run and its \
                     arguments)",
                );
                None
            }
            Some(argv) => r
                .ok(item, "health_check.command", check_command(argv))
                .map(Some),
        },
        Some(p) => {
            if raw.command.is_some() {
                r.problem(
                    item,
                    "health_check.command",
                    format!("only for protocol = \"exec\", not \"{p}\""),
                );
            }
            Some(None)
        }
        None => None,
    };
    let interval: Option<u64> = r.int(
        item,
        "health_check.interval_secs",
        raw.interval_secs,
        HC_INTERVAL_SECS,
        DEFAULT_HC_INTERVAL_SECS,
    );
    let default_timeout = match protocol {
        Some(HealthCheckProtocol::Http | HealthCheckProtocol::Https) => {
            DEFAULT_HC_TIMEOUT_HTTP_SECS
        }
        Some(HealthCheckProtocol::Tcp | HealthCheckProtocol::Exec) | None => {
            DEFAULT_HC_TIMEOUT_TCP_SECS
        }
    };
    let timeout = timeout(
        r,
        item,
        "health_check.timeout_secs",
        raw.timeout_secs,
        default_timeout,
        interval,
    );
    let healthy_threshold = r.int(
        item,
        "health_check.healthy_threshold",
        raw.healthy_threshold,
        HC_THRESHOLD,
        DEFAULT_HEALTHY_THRESHOLD,
    );
    let unhealthy_threshold = r.int(
        item,
        "health_check.unhealthy_threshold",
        raw.unhealthy_threshold,
        HC_THRESHOLD,
        DEFAULT_UNHEALTHY_THRESHOLD,
    );
    let (
        Some(protocol),
        Some(http),
        Some(command),
        Some(interval),
        Some(timeout),
        Some(healthy_threshold),
        Some(unhealthy_threshold),
    ) = (
        protocol,
        http,
        command,
        interval,
        timeout,
        healthy_threshold,
        unhealthy_threshold,
    )
    else {
        return (None, check_port);
    };
    let check = HealthCheck {
        enabled: raw.enabled.unwrap_or(true),
        protocol,
        port: None,
        http,
        command,
        interval: Duration::from_secs(interval),
        timeout: Duration::from_secs(timeout),
        healthy_threshold,
        unhealthy_threshold,
    };
    (Some(check), check_port)
}

fn family(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// Checks between items, on whatever parsed.
fn cross_check(
    r: &mut Report,
    vips: &[VipDraft<'_>],
    groups: &mut [GroupDraft<'_>],
    limits: &Limits,
) {
    // Names are unique.
    let mut group_index: HashMap<&str, usize> = HashMap::new();
    for g in groups.iter() {
        let Some(name) = g.name else { continue };
        if let Some(&first) = group_index.get(name) {
            r.problem(
                &format!("{} (#{})", g.label, g.index + 1),
                "name",
                format!(
                    "target_group #{} has the same name; names must be unique",
                    first + 1
                ),
            );
        } else {
            group_index.insert(name, g.index);
        }
    }
    let mut vip_index: HashMap<&str, usize> = HashMap::new();
    for v in vips {
        let Some(name) = v.name else { continue };
        if let Some(&first) = vip_index.get(name) {
            r.problem(
                &format!("{} (#{})", v.label, v.index + 1),
                "name",
                format!("vip #{} has the same name; names must be unique", first + 1),
            );
        } else {
            vip_index.insert(name, v.index);
        }
    }

    // Each (address, port, protocol) is one VIP; at most one fragment-routing VIP per
    // (address, protocol), since later fragments carry no port to tell VIPs apart.
    let mut services: HashMap<(IpAddr, u16, Protocol), &str> = HashMap::new();
    let mut frag_routes: HashMap<(IpAddr, Protocol), &str> = HashMap::new();
    for v in vips {
        let (Some(addr), Some(proto)) = (v.address, v.protocol) else {
            continue;
        };
        if let Some(port) = v.port {
            match services.entry((addr, port, proto)) {
                Entry::Occupied(first) => r.problem(
                    &v.label,
                    "port",
                    format!(
                        "{} already serves {addr} port {port} {proto}; each address, port and \
                         protocol belongs to one VIP",
                        first.get()
                    ),
                ),
                Entry::Vacant(slot) => {
                    slot.insert(&v.label);
                }
            }
        }
        if v.fragments == Some(Fragments::Route) {
            match frag_routes.entry((addr, proto)) {
                Entry::Occupied(first) => r.problem(
                    &v.label,
                    "fragments",
                    format!(
                        "{} already routes {proto} fragments to {addr}; later fragments carry \
                         no port, so at most one VIP per address and protocol may set \
                         fragments = \"route\"",
                        first.get()
                    ),
                ),
                Entry::Vacant(slot) => {
                    slot.insert(&v.label);
                }
            }
        }
    }

    // A target that is a VIP would send packets back to the load balancer.
    let mut vip_addresses: HashMap<IpAddr, &str> = HashMap::new();
    for v in vips {
        if let Some(addr) = v.address {
            vip_addresses.entry(addr).or_insert(&v.label);
        }
    }
    for g in groups.iter() {
        for t in &g.targets {
            let Some(addr) = t.address else { continue };
            if let Some(vip) = vip_addresses.get(&addr) {
                r.problem(
                    &t.label,
                    "address",
                    format!(
                        "{addr} is the address of {vip}; a target cannot be a VIP (its packets \
                         would loop back to the load balancer)"
                    ),
                );
            }
        }
    }

    // Each VIP against its group.
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); groups.len()];
    for (vi, v) in vips.iter().enumerate() {
        let Some(group_name) = v.target_group else {
            continue;
        };
        let Some(&gi) = group_index.get(group_name) else {
            let known: Vec<String> = group_index
                .keys()
                .copied()
                .collect::<BTreeSet<_>>()
                .iter()
                .map(|n| format!("{n:?}"))
                .collect();
            let known = if known.is_empty() {
                "there are none".to_owned()
            } else {
                format!("defined: {}", known.join(", "))
            };
            r.problem(
                &v.label,
                "target_group",
                format!("no target_group is named {group_name:?} ({known})"),
            );
            continue;
        };
        users[gi].push(vi);
        vip_against_group(r, v, &groups[gi]);
    }

    for (gi, g) in groups.iter_mut().enumerate() {
        let used_by: Vec<&VipDraft<'_>> = users[gi].iter().map(|&vi| &vips[vi]).collect();
        // A group whose name is a duplicate is reported above; no VIP can reach it.
        let duplicate = g.name.and_then(|n| group_index.get(n)) != Some(&g.index);
        if used_by.is_empty() && g.name.is_some() && !duplicate {
            r.warnings.push(format!(
                "{}: no VIP uses this target group; its targets receive no traffic",
                g.label
            ));
        }
        resolve_check_port(r, g, &used_by);
    }

    if vips.len() > limits.max_vips {
        r.problems.push(format!(
            "too many VIPs: {} are defined, the data plane holds at most {}",
            vips.len(),
            limits.max_vips
        ));
    }
    let targets: usize = groups.iter().map(|g| g.targets.len()).sum();
    if targets > limits.max_targets {
        r.problems.push(format!(
            "too many targets: {targets} across all target groups, the data plane holds at \
             most {}",
            limits.max_targets
        ));
    }
    if vips.is_empty() {
        r.warnings.push(
            "no VIPs are defined: the load balancer forwards nothing (every packet passes to \
             the kernel)"
                .to_owned(),
        );
    }
}

fn vip_against_group(r: &mut Report, v: &VipDraft<'_>, g: &GroupDraft<'_>) {
    let item = v.label.as_str();
    let group = &g.label;

    if let (Some(Mode::Dr), Some(vip_addr)) = (v.mode, v.address) {
        let foreign: Vec<String> = g
            .targets
            .iter()
            .filter_map(|t| t.address)
            .filter(|a| a.is_ipv4() != vip_addr.is_ipv4())
            .map(|a| a.to_string())
            .collect();
        if !foreign.is_empty() {
            r.problem(
                item,
                "mode",
                format!(
                    "\"dr\" only reaches targets of the VIP's address family ({}), but {group} \
                     has {}; use mode = \"tunnel\" or \"gue\" to mix families",
                    family(vip_addr),
                    foreign.join(", ")
                ),
            );
        }
    }

    let n = g.targets.len();
    if let Some(size) = v.ring_size {
        if n > size as usize {
            r.problem(
                item,
                "ring_size",
                format!("{size} slots cannot hold the {n} targets of {group}; use a larger size"),
            );
        } else if let Some(why) = maglev::warn_small(size, n) {
            r.warn(
                item,
                "ring_size",
                format!("{why} ({group} has {n} targets)"),
            );
        }
    }
    if n == 0 {
        r.warn(
            item,
            "target_group",
            format!("{group} has no targets: the VIP drops every packet (counted as no_backend)"),
        );
    } else if g.targets.iter().all(|t| t.weight == Some(0)) {
        r.warn(
            item,
            "target_group",
            format!(
                "every target of {group} has weight 0: the VIP drops every new flow (counted \
                 as no_backend)"
            ),
        );
    }
}

/// Fills in the health-check port: the configured one, else the one port all of the
/// group's VIPs use (NLB's "traffic-port").
fn resolve_check_port(r: &mut Report, g: &mut GroupDraft<'_>, used_by: &[&VipDraft<'_>]) {
    let Some(check) = g.health_check.as_mut() else {
        return;
    };
    check.port = match g.check_port {
        CheckPort::Port(p) => Some(p),
        CheckPort::Invalid => None,
        CheckPort::Traffic if !check.enabled => None,
        CheckPort::Traffic => {
            let ports: BTreeSet<u16> = used_by.iter().filter_map(|v| v.port).collect();
            if let Some(all_ports) = used_by.iter().find(|v| v.port == Some(0)) {
                r.problem(
                    &g.label,
                    "health_check.port",
                    format!(
                        "missing: required because {} forwards every port (port = 0), so there \
                         is no single traffic port to check",
                        all_ports.label
                    ),
                );
                None
            } else if ports.len() > 1 {
                let list: Vec<String> = used_by
                    .iter()
                    .filter_map(|v| v.port.map(|p| format!("{} port {p}", v.label)))
                    .collect();
                r.problem(
                    &g.label,
                    "health_check.port",
                    format!(
                        "missing: required because the group serves VIPs on several ports \
                         ({}); say which one to check",
                        list.join(", ")
                    ),
                );
                None
            } else {
                ports.first().copied()
            }
        }
    };
}
