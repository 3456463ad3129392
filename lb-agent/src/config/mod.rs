//! The agent's configuration file: VIPs, target groups and agent-wide settings, in TOML.
//!
//! [`parse`] and [`load`] turn a file into a [`Config`] that has been checked as a whole:
//! typed values (addresses, enums, durations), every default filled in, and every
//! cross-reference resolved. Checking is all or nothing: a file with any problem yields
//! [`ConfigError::Invalid`] listing *all* of its problems (each naming the VIP or target
//! group, the field and the reason), and no `Config`, so a running agent keeps the
//! configuration it has. Conditions that are legal but probably unintended (a ring too
//! small for its targets, a VIP without targets) are [`Config::warnings`] for the agent to
//! log.
//!
//! Problems read `<item>: field "<field>": <why>`, e.g.
//! `vip "web": field "gue_port": missing: required when mode = "gue" (…)` or
//! `target_group "web-servers": target 198.18.11.2: field "weight": 70000 is out of range:
//! must be between 0 and 65535`. Unknown keys and wrong types are TOML-level errors
//! ([`ConfigError::Syntax`]) with the line and column.
//!
//! The vocabulary follows the AWS Network Load Balancer where one exists (target groups,
//! targets, health checks, deregistration delay, slow start, fail open), with NLB's
//! ranges and defaults. [`EXAMPLE`] (`examples/lb.toml`) documents every field.
//!
//! A [`Draft`] is the file as written, before checking: runtime edits (`lb-agent ctl vip
//! add`, `backend set-weight`, …) change a draft, validate it exactly as a file is
//! validated, and write it back as TOML ([`Draft::to_toml`]).
//!
//! Targets have no port: in every forwarding mode lb delivers the packet with its
//! destination port unchanged (DR rewrites only MAC addresses; tunnels wrap the packet
//! as it is), so a target serves a VIP on the VIP's port.
//!
//! Where things are: this file holds the checked types ([`Config`] and one type per
//! table) and the entry points. `raw` is the file as TOML spells it; `draft` the file
//! before checking, and the runtime edits made to it; `validate/` the checks, one file
//! per TOML table (`agent`, `metrics`, `vip`, `group`, `health`, `agent_check`, with
//! `address` for the addresses and prefixes they hold) and `validate/cross/` for the
//! rules between items, one function each; `error` is [`ConfigError`] and how it reads.
//! The tests, in `tests/`, follow the same parts.

mod draft;
mod error;
mod raw;
#[cfg(test)]
mod tests;
mod validate;

pub use draft::{Draft, EditError};
use error::line_column;
pub use error::ConfigError;
pub(crate) use validate::host_port;

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use lb_common::{
    service::{addr16, mode, vip_flags, PROTO_TCP, PROTO_UDP},
    LbConfig, VipKey, VipMeta,
};

/// The commented example configuration shipped in the repository (`examples/lb.toml`),
/// which the demo runs.
pub const EXAMPLE: &str = include_str!("../../../examples/lb.toml");

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub agent: AgentSettings,
    /// The `[metrics]` table.
    pub metrics: MetricsSettings,
    /// The `[announce]` table.
    pub announce: AnnounceSettings,
    /// In file order.
    pub vips: Vec<Vip>,
    /// In file order. Every VIP's `target_group` names one of these.
    pub target_groups: Vec<TargetGroup>,
    /// Legal but probably unintended settings, one line each, for the agent to log.
    pub warnings: Vec<String>,
}

impl Config {
    /// The VIP called `name`.
    pub fn vip(&self, name: &str) -> Option<&Vip> {
        self.vips.iter().find(|v| v.name == name)
    }

    /// The target group called `name`.
    pub fn target_group(&self, name: &str) -> Option<&TargetGroup> {
        self.target_groups.iter().find(|g| g.name == name)
    }

    /// When this host announces `vip`'s address: its own `announce` and
    /// `announce_min_healthy`, else the `[announce]` table's.
    pub fn announce_rule(&self, vip: &Vip) -> (AnnouncePolicy, u32) {
        (
            vip.announce.unwrap_or(self.announce.policy),
            vip.announce_min_healthy
                .unwrap_or(self.announce.min_healthy),
        )
    }

    /// The target group that serves `vip` (always present for a VIP of this config).
    pub fn group_of(&self, vip: &Vip) -> Option<&TargetGroup> {
        self.target_group(&vip.target_group)
    }

    /// The fragment entries of the VIP map (see `lb_common::service::FAMILY_FRAG_KEY`):
    /// one per (address, protocol) that has VIPs, with the index in [`Config::vips`] of the
    /// VIP that decides what happens to later fragments: the one with
    /// `fragments = "route"` if there is one (validation allows at most one), else the
    /// first in file order (whose flags then say drop). In file order of that VIP.
    pub fn fragment_entries(&self) -> Vec<(VipKey, usize)> {
        let mut entries: Vec<(VipKey, usize)> = Vec::new();
        for (i, vip) in self.vips.iter().enumerate() {
            let key = vip.fragment_key();
            match entries.iter_mut().find(|(k, _)| *k == key) {
                Some(entry) => {
                    if vip.fragments == Fragments::Route {
                        entry.1 = i;
                    }
                }
                None => entries.push((key, i)),
            }
        }
        entries
    }
}

/// The `[agent]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSettings {
    /// Flow-hash seed; the same on every lb host behind one ECMP group.
    pub hash_seed: u32,
    /// Flow-table capacity, fixed when the data plane is loaded.
    pub flow_table_entries: u32,
    /// UDP flow entries idle this long are ignored (the next packet is hashed afresh).
    pub udp_idle_timeout: Duration,
    /// Flood guard: new flow entries per second per CPU; 0 = no limit.
    pub max_new_flows_per_cpu: u32,
    /// Outer IPv4 source prefix of tunnelled packets (host bits from the flow hash).
    pub tunnel_source_v4: Ipv4Prefix,
    /// Outer IPv6 source prefix of tunnelled packets (host bits from the flow hash).
    pub tunnel_source_v6: Ipv6Prefix,
}

impl Default for AgentSettings {
    /// The data plane's own defaults ([`LbConfig::default`]).
    fn default() -> Self {
        let lb = LbConfig::default();
        Self {
            hash_seed: lb.hash_seed,
            flow_table_entries: lb_common::flow::DEFAULT_FLOW_ENTRIES,
            udp_idle_timeout: Duration::from_nanos(lb.udp_idle_ns),
            max_new_flows_per_cpu: lb.max_new_flows_per_cpu,
            tunnel_source_v4: Ipv4Prefix {
                addr: Ipv4Addr::from(lb.tunnel_src4),
                len: lb.tunnel_src4_prefix,
            },
            tunnel_source_v6: Ipv6Prefix {
                addr: Ipv6Addr::from(lb.tunnel_src6),
                len: lb.tunnel_src6_prefix,
            },
        }
    }
}

impl AgentSettings {
    /// The data plane's runtime configuration (the `LB_CONFIG_V1` entry).
    pub fn lb_config(&self) -> LbConfig {
        LbConfig {
            hash_seed: self.hash_seed,
            max_new_flows_per_cpu: self.max_new_flows_per_cpu,
            udp_idle_ns: u64::try_from(self.udp_idle_timeout.as_nanos()).unwrap_or(u64::MAX),
            tunnel_src4: self.tunnel_source_v4.addr.octets(),
            tunnel_src4_prefix: self.tunnel_source_v4.len,
            tunnel_src6_prefix: self.tunnel_source_v6.len,
            _pad: [0; 2],
            tunnel_src6: self.tunnel_source_v6.addr.octets(),
        }
    }
}

/// The `[metrics]` table: what the agent publishes about its traffic, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsSettings {
    /// CloudWatch namespace: 1 to 255 characters, never starting with `AWS/` (reserved
    /// for AWS services).
    pub namespace: String,
    /// Value of the `AvailabilityZone` dimension; `None` leaves out the dimension sets
    /// that have it.
    pub availability_zone: Option<String>,
    /// Aggregation period: 60 s (standard resolution) or 1 s (high resolution,
    /// `StorageResolution` 1).
    pub period: Duration,
    /// Where Embedded Metric Format documents go.
    pub emf: EmfOutput,
    /// Address of the Prometheus `/metrics` endpoint; `None` = not served.
    pub prometheus_listen: Option<SocketAddr>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            namespace: "lb".to_owned(),
            availability_zone: None,
            period: Duration::from_secs(60),
            emf: EmfOutput::Off,
            prometheus_listen: None,
        }
    }
}

impl MetricsSettings {
    /// Whether the period is high resolution (CloudWatch `StorageResolution` 1).
    pub fn high_resolution(&self) -> bool {
        self.period < Duration::from_secs(60)
    }
}

/// The `[announce]` table: how this host tells its routing daemon which VIPs to announce
/// (see `crate::announce`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceSettings {
    /// The kernel routing table the agent keeps one host route per announced VIP
    /// address in, for BIRD or FRR to export.
    pub table: u32,
    /// Every VIP's policy unless the VIP sets its own.
    pub policy: AnnouncePolicy,
    /// Healthy targets a VIP's group needs for `healthy` to announce it normally.
    pub min_healthy: u32,
    /// Below `min_healthy`, keep a standby route (fail open across hosts) rather than
    /// withdraw: for routing daemons that can de-prefer it (BIRD with the example filter).
    pub standby: bool,
    /// Routes carry the route tag as their metric (true), or metric 1 (for a routing
    /// daemon that mishandles a second route to the same address, FRR's import-table).
    pub route_tag: bool,
    /// `down`: how long the host stays attached, forwarding, after withdrawing.
    pub down_grace: Duration,
}

impl Default for AnnounceSettings {
    fn default() -> Self {
        Self {
            table: 100,
            policy: AnnouncePolicy::Healthy,
            min_healthy: 1,
            standby: true,
            route_tag: true,
            down_grace: Duration::from_secs(5),
        }
    }
}

/// When a host announces a VIP (its program attached and the operator not withdrawing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnnouncePolicy {
    /// Normally while the VIP's group has at least `min_healthy` healthy targets; below
    /// that as a standby route, which the router uses only when no host announces the
    /// VIP normally (fail open across hosts), or not at all without `standby`.
    Healthy,
    /// Normally, whatever the targets' health.
    Always,
    /// Never: another mechanism routes the VIP here.
    Never,
}

impl AnnouncePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Always => "always",
            Self::Never => "never",
        }
    }
}

impl fmt::Display for AnnouncePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the agent writes CloudWatch Embedded Metric Format documents (one per line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmfOutput {
    /// Not written (`"off"`).
    Off,
    /// The agent's standard output (`"stdout"`), e.g. for a log shipper.
    Stdout,
    /// Appended to this file (`"file:/path"`, an absolute path).
    File(PathBuf),
    /// The CloudWatch agent's EMF endpoint (`"agent"`): `AWS_EMF_AGENT_ENDPOINT` when set
    /// (`tcp://host:port` or `udp://host:port`), else `tcp://127.0.0.1:25888`; read when
    /// the sink starts.
    Agent,
    /// A TCP connection to this `host:port` (`"tcp://host:port"`).
    Tcp(String),
    /// UDP datagrams, one document each, to this `host:port` (`"udp://host:port"`).
    Udp(String),
}

impl fmt::Display for EmfOutput {
    /// As the file spells it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::Stdout => f.write_str("stdout"),
            Self::File(path) => write!(f, "file:{}", path.display()),
            Self::Agent => f.write_str("agent"),
            Self::Tcp(addr) => write!(f, "tcp://{addr}"),
            Self::Udp(addr) => write!(f, "udp://{addr}"),
        }
    }
}

/// An IPv4 prefix with zero host bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Prefix {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// An IPv6 prefix with zero host bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Prefix {
    pub addr: Ipv6Addr,
    pub len: u8,
}

impl fmt::Display for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// One `[[vip]]`: what clients connect to, and how its packets reach its target group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vip {
    pub name: String,
    pub address: IpAddr,
    /// 0 = every port of the address (used when no VIP has the packet's exact port).
    pub port: u16,
    pub protocol: Protocol,
    pub mode: Mode,
    pub hash: HashFields,
    /// Maglev table size, one of `maglev::SIZES`.
    pub ring_size: u32,
    pub fragments: Fragments,
    /// Name of the serving target group ([`Config::group_of`]).
    pub target_group: String,
    /// The VIP's own announcement policy (`None`: the `[announce]` table's); see
    /// [`Config::announce_rule`].
    pub announce: Option<AnnouncePolicy>,
    pub announce_min_healthy: Option<u32>,
}

impl Vip {
    /// The VIP-map key: IPv4 in `addr[0..4]`, the port in network byte order.
    pub fn key(&self) -> VipKey {
        let (addr, family) = addr16(self.address);
        VipKey {
            addr,
            port: self.port.to_be(),
            proto: self.protocol.number(),
            family,
        }
    }

    /// The key of the fragment entry for this VIP's address and protocol.
    pub fn fragment_key(&self) -> VipKey {
        self.key().fragment_key()
    }

    /// `lb_common::service::vip_flags` bits for `VipMeta::flags`.
    pub fn flags(&self) -> u32 {
        let hash = match self.hash {
            HashFields::FiveTuple => 0,
            HashFields::SourceIp => vip_flags::HASH_SRC_ONLY,
            HashFields::SourceIpDestPort => vip_flags::HASH_SRC_DPORT,
        };
        let fragments = match self.fragments {
            Fragments::Drop => 0,
            Fragments::Route => vip_flags::FRAG_ROUTE,
        };
        hash | fragments
    }

    /// `lb_common::service::mode` value for `VipMeta::mode`.
    pub fn mode_byte(&self) -> u8 {
        match self.mode {
            Mode::Dr => mode::DR,
            Mode::Tunnel => mode::TUNNEL,
            Mode::Gue { .. } => mode::GUE,
        }
    }

    /// The VIP-map value for this VIP as `vip_id`, with a ring of `ring_size` slots
    /// installed (0 before any ring is; see `Dataplane::install_ring` for the order of
    /// updates when the size changes).
    pub fn meta(&self, vip_id: u32, ring_size: u32) -> VipMeta {
        let gue_port = match self.mode {
            Mode::Gue { port } => port.to_be(),
            Mode::Dr | Mode::Tunnel => 0,
        };
        VipMeta {
            vip_id,
            flags: self.flags(),
            mode: self.mode_byte(),
            _pad: 0,
            gue_port,
            ring_size,
        }
    }
}

/// Writes the name an enum value has in the file.
macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(Protocol, Mode, HashFields, Fragments, HealthCheckProtocol);

/// A VIP's transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => PROTO_TCP,
            Self::Udp => PROTO_UDP,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// How a VIP's packets reach its targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Direct routing: MAC rewrite only; targets of the VIP's family, on a directly
    /// reachable network, holding the VIP.
    Dr,
    /// IP-in-IP (IPIP, IP6IP6, 4in6, 6in4 by the two families).
    Tunnel,
    /// IP-in-UDP (GUE variant 1) to this destination port on the target.
    Gue { port: u16 },
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dr => "dr",
            Self::Tunnel => "tunnel",
            Self::Gue { .. } => "gue",
        }
    }
}

/// Which fields of a packet pick the target of a new flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashFields {
    /// Source and destination address and port, and protocol.
    FiveTuple,
    /// The source address only (source-IP stickiness).
    SourceIp,
    /// The source address and the destination port.
    SourceIpDestPort,
}

impl HashFields {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FiveTuple => "five-tuple",
            Self::SourceIp => "source-ip",
            Self::SourceIpDestPort => "source-ip-dest-port",
        }
    }
}

/// What happens to IP fragments addressed to a VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragments {
    /// Dropped (counted as `fragment`).
    Drop,
    /// Forwarded: the whole VIP is hashed on (source, destination, protocol).
    Route,
}

impl Fragments {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Drop => "drop",
            Self::Route => "route",
        }
    }
}

/// One `[[target_group]]`: a named pool of targets with its health-check and lifecycle
/// settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetGroup {
    pub name: String,
    /// In file order; addresses are unique within the group.
    pub targets: Vec<Target>,
    pub health_check: HealthCheck,
    /// How long a deregistered target keeps its established flows.
    pub deregistration_delay: Duration,
    /// Ramp-up time of a newly healthy target's share; zero = off.
    pub slow_start: Duration,
    /// With every target unhealthy, route to all of them rather than to none.
    pub fail_open: bool,
    /// What happens to the established flows of a target that becomes unhealthy (it gets
    /// no new flows either way). True: after [`TargetGroup::unhealthy_draining_interval`]
    /// they are moved to healthy targets (re-hashed); false: they stay on it.
    pub unhealthy_connection_termination: bool,
    /// How long an unhealthy target keeps its established flows before they are moved
    /// (NLB state `unhealthy.draining`); zero = at once. Always zero when
    /// `unhealthy_connection_termination` is false.
    pub unhealthy_draining_interval: Duration,
    /// The agent check (as HAProxy's `agent-check`), if configured: the target reports
    /// the percentage of its weight it wants.
    pub agent_check: Option<AgentCheck>,
}

/// Where and how often a target group's targets are asked for their weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentCheck {
    pub port: u16,
    pub interval: Duration,
    /// At most `interval`.
    pub timeout: Duration,
}

/// One backend server of a target group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub address: IpAddr,
    /// Relative share of new flows; 0 = quiesce (no new flows, established ones continue).
    pub weight: u16,
}

/// Active health-check settings of a target group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// When false, every target counts as healthy.
    pub enabled: bool,
    pub protocol: HealthCheckProtocol,
    /// The port to check: the one configured, else the port of the VIPs the group serves.
    /// `None` only when checks are disabled, or no VIP uses the group (and no port was
    /// configured).
    pub port: Option<u16>,
    /// Present exactly when `protocol` is HTTP or HTTPS.
    pub http: Option<HttpCheck>,
    /// Present exactly when `protocol` is exec: the program (an absolute path) and its
    /// arguments, 1 to 32 elements, run without a shell; the target's address and `port`
    /// are passed in its environment as `LB_TARGET_ADDRESS` and `LB_TARGET_PORT`.
    pub command: Option<Vec<String>>,
    pub interval: Duration,
    /// At most `interval`.
    pub timeout: Duration,
    /// Consecutive successes that make a target healthy.
    pub healthy_threshold: u8,
    /// Consecutive failures that make a target unhealthy.
    pub unhealthy_threshold: u8,
}

/// How a target is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthCheckProtocol {
    /// A TCP connection is accepted.
    Tcp,
    /// An HTTP GET of the path answers with a matching status code.
    Http,
    /// As HTTP, over TLS.
    Https,
    /// A program (`HealthCheck::command`) exits with status 0.
    Exec,
}

impl HealthCheckProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Http => "http",
            Self::Https => "https",
            Self::Exec => "exec",
        }
    }
}

/// The HTTP(S) part of a health check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCheck {
    /// Request path, starting with `/`.
    pub path: String,
    /// Status codes that count as healthy.
    pub matcher: StatusMatcher,
    /// A substring the response body must also contain, when set (at most 256 bytes).
    pub body_contains: Option<String>,
}

/// A set of HTTP status codes, written as NLB writes them: `200`, `200-299`, `200,202`,
/// or a comma list mixing both; codes 200 to 599.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusMatcher {
    /// Inclusive ranges, as written.
    ranges: Vec<(u16, u16)>,
}

impl StatusMatcher {
    /// NLB's range of allowed codes.
    pub const CODES: std::ops::RangeInclusive<u16> = 200..=599;

    /// Parses a matcher; the error says what is wrong, for a configuration message.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            let (lo, hi) = match part.split_once('-') {
                Some((lo, hi)) => (Self::code(lo.trim())?, Self::code(hi.trim())?),
                None => {
                    let code = Self::code(part)?;
                    (code, code)
                }
            };
            if lo > hi {
                return Err(format!(
                    "\"{part}\" is an empty range (write the smaller code first)"
                ));
            }
            ranges.push((lo, hi));
        }
        Ok(Self { ranges })
    }

    fn code(text: &str) -> Result<u16, String> {
        let code: u16 = text.parse().map_err(|_| {
            format!(
                "\"{text}\" is not a status code; write codes, ranges and comma lists such as \
                 \"200\", \"200-299\" or \"200,202\""
            )
        })?;
        if !Self::CODES.contains(&code) {
            return Err(format!(
                "status code {code} is out of range: must be between {} and {}",
                Self::CODES.start(),
                Self::CODES.end()
            ));
        }
        Ok(code)
    }

    /// Whether a response with `status` counts as healthy.
    pub fn matches(&self, status: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

impl fmt::Display for StatusMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

/// Parses and validates a configuration.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    Draft::parse(text)?.validate()
}

/// Reads, parses and validates the configuration file at `path`; errors name the file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_draft(path).map(|(_, config)| config)
}

/// Reads the configuration file at `path` as a [`Draft`] (to edit at runtime) and
/// validates it; errors name the file.
pub fn load_draft(path: &Path) -> Result<(Draft, Config), ConfigError> {
    let draft = Draft::load(path)?;
    let config = draft.validate_as(Some(path), &validate::Limits::DATA_PLANE)?;
    Ok((draft, config))
}

/// [`parse`] with the data plane's limits replaced (tests).
#[cfg(test)]
fn parse_with(
    text: &str,
    path: Option<&Path>,
    limits: &validate::Limits,
) -> Result<Config, ConfigError> {
    Draft::parse_as(text, path)?.validate_as(path, limits)
}
