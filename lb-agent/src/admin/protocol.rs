//! The admin protocol, version 1: newline-delimited JSON over a Unix socket.
//!
//! Every request is one line (at most [`MAX_LINE`] bytes, newline excluded) holding one
//! JSON object; every request gets exactly one response line, in order, on the same
//! connection. A connection may carry any number of requests.
//!
//! Request: `{"id": 7, "v": 1, "cmd": "vip_show", "name": "web"}`
//! - `id`: any unsigned 64-bit integer chosen by the client, echoed in the response;
//! - `v`: the protocol version, [`PROTOCOL_VERSION`];
//! - `cmd`: the command name (snake case, see [`Command`]); its arguments are further
//!   fields of the same object.
//!
//! Response: `{"id": 7, "ok": true, "result": {...}}` or
//! `{"id": 7, "ok": false, "error": {"code": "not_found", "message": "no VIP \"web\""}}`.
//!
//! A request that cannot be parsed, names an unknown command, has the wrong version or
//! is too long gets an error response and changes nothing. After `too_long` (and after
//! `forbidden`) the server closes the connection; after any other error the connection
//! stays usable. When the id of a bad request cannot be read, the response carries id 0.
//!
//! Error codes ([`ErrorCode`]): `bad_request`, `unknown_command`, `version`, `too_long`,
//! `forbidden`, `not_found`, `conflict`, `invalid_config`, `unsupported`, `internal`.
//!
//! The full description with examples is `docs/admin-protocol.md`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version this build speaks (requests carry it as `v`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest request line the server accepts, in bytes, without the newline.
pub const MAX_LINE: usize = 64 * 1024;

/// Longest response line the client accepts (listings of many VIPs can be long).
pub const MAX_RESPONSE_LINE: usize = 16 * 1024 * 1024;

/// One request line (parse with [`parse_request`], which tells the error cases apart).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Request {
    pub id: u64,
    pub v: u32,
    #[serde(flatten)]
    pub cmd: Command,
}

/// Layer-4 protocol of a flow (`flow` command).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => lb_common::ip::PROTO_TCP,
            Proto::Udp => lb_common::ip::PROTO_UDP,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl std::str::FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" | "6" => Ok(Proto::Tcp),
            "udp" | "17" => Ok(Proto::Udp),
            _ => Err(format!("unknown protocol {s:?} (expected tcp or udp)")),
        }
    }
}

/// Every command, with its arguments. Serialized as `"cmd": "<snake_case name>"` plus
/// the fields of the variant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Agent state: interface, program, config, VIP and backend counts.
    Status,
    /// Every VIP.
    VipList,
    /// One VIP with its target group's backends.
    VipShow { name: String },
    /// Add a VIP (fields as in the configuration file).
    VipAdd {
        name: String,
        address: IpAddr,
        port: u16,
        proto: Proto,
        target_group: String,
        /// `dr`, `tunnel` or `gue`; the configuration's default when omitted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<String>,
        /// Required with mode `gue`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gue_port: Option<u16>,
        /// `five-tuple`, `source-ip` or `source-ip-dest-port`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hash: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ring_size: Option<u32>,
    },
    /// Remove a VIP.
    VipRemove { name: String },
    /// Backends of one target group, or of all of them.
    BackendList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
    },
    /// Add a backend to a target group.
    BackendAdd {
        group: String,
        address: IpAddr,
        weight: u16,
    },
    /// Remove a backend from a target group.
    BackendRemove { group: String, address: IpAddr },
    /// Change a backend's weight (0 = no new flows, existing flows continue).
    BackendSetWeight {
        group: String,
        address: IpAddr,
        weight: u16,
    },
    /// Stop sending new flows to a backend; existing flows continue.
    BackendDrain { group: String, address: IpAddr },
    /// Undo `backend_drain`.
    BackendUndrain { group: String, address: IpAddr },
    /// Which backend this flow goes to, from the data plane's ring and flow table.
    Flow {
        proto: Proto,
        src: IpAddr,
        sport: u16,
        dst: IpAddr,
        dport: u16,
    },
    /// Load a configuration file (a path the agent can read) and apply it, or with
    /// `dry_run` only report what would change.
    Apply {
        path: String,
        #[serde(default)]
        dry_run: bool,
    },
    /// Data-plane counters.
    Stats,
    /// The running configuration as TOML (the file plus runtime edits).
    ConfigShow,
    /// The last completed metrics period in a format: `emf`, `datum`, `json`, or `prom`
    /// (the Prometheus page, current counters).
    Metrics { format: MetricsFormat },
    /// Per-VIP and per-target rates over the last second, active flows and health (what
    /// `ctl top` shows).
    Top,
    /// Stop the agent (detaching the data plane unless it was started with --persist).
    Down,
}

/// Formats of `metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MetricsFormat {
    /// CloudWatch Embedded Metric Format documents, one per line.
    Emf,
    /// PutMetricData requests (`MetricDatum` JSON).
    Datum,
    /// The period's values as plain JSON.
    Json,
    /// Prometheus text exposition of the current counters.
    Prom,
}

/// Every command name, as it appears in `cmd`.
pub const COMMAND_NAMES: &[&str] = &[
    "status",
    "vip_list",
    "vip_show",
    "vip_add",
    "vip_remove",
    "backend_list",
    "backend_add",
    "backend_remove",
    "backend_set_weight",
    "backend_drain",
    "backend_undrain",
    "flow",
    "apply",
    "stats",
    "config_show",
    "metrics",
    "top",
    "down",
];

impl Command {
    /// The command's name as it appears in `cmd`.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Status => "status",
            Command::VipList => "vip_list",
            Command::VipShow { .. } => "vip_show",
            Command::VipAdd { .. } => "vip_add",
            Command::VipRemove { .. } => "vip_remove",
            Command::BackendList { .. } => "backend_list",
            Command::BackendAdd { .. } => "backend_add",
            Command::BackendRemove { .. } => "backend_remove",
            Command::BackendSetWeight { .. } => "backend_set_weight",
            Command::BackendDrain { .. } => "backend_drain",
            Command::BackendUndrain { .. } => "backend_undrain",
            Command::Flow { .. } => "flow",
            Command::Apply { .. } => "apply",
            Command::Stats => "stats",
            Command::ConfigShow => "config_show",
            Command::Metrics { .. } => "metrics",
            Command::Top => "top",
            Command::Down => "down",
        }
    }

    /// Whether the command changes anything (these are logged with the peer).
    pub fn is_mutating(&self) -> bool {
        match self {
            Command::Status
            | Command::VipList
            | Command::VipShow { .. }
            | Command::BackendList { .. }
            | Command::Flow { .. }
            | Command::Stats
            | Command::ConfigShow
            | Command::Metrics { .. }
            | Command::Top => false,
            Command::Apply { dry_run, .. } => !dry_run,
            Command::VipAdd { .. }
            | Command::VipRemove { .. }
            | Command::BackendAdd { .. }
            | Command::BackendRemove { .. }
            | Command::BackendSetWeight { .. }
            | Command::BackendDrain { .. }
            | Command::BackendUndrain { .. }
            | Command::Down => true,
        }
    }
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, missing or mistyped fields.
    BadRequest,
    /// `cmd` names no command this agent knows.
    UnknownCommand,
    /// `v` is not [`PROTOCOL_VERSION`].
    Version,
    /// The line exceeded [`MAX_LINE`]; the connection is closed.
    TooLong,
    /// The peer is neither root nor in the admin group; the connection is closed.
    Forbidden,
    /// The named VIP, target group or backend does not exist.
    NotFound,
    /// The change contradicts the current state: the VIP or backend already exists, or
    /// the backend is being deregistered.
    Conflict,
    /// The configuration (file or resulting change) does not validate.
    InvalidConfig,
    /// The agent does not (yet) support this command.
    Unsupported,
    /// Anything else: a data-plane error, an I/O error.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::Version => "version",
            ErrorCode::TooLong => "too_long",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::InvalidConfig => "invalid_config",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `error` member of a failed response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorBody {}

/// One response line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub id: u64,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Response {
    pub fn ok(id: u64, result: Value) -> Self {
        Self {
            id,
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    pub fn err(id: u64, error: ErrorBody) -> Self {
        Self {
            id,
            ok: false,
            result: None,
            error: Some(error),
        }
    }

    /// The response as one line, newline included.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|e| {
            format!(
                r#"{{"id":{},"ok":false,"error":{{"code":"internal","message":"encoding the response: {}"}}}}"#,
                self.id,
                e.to_string().replace(['"', '\\'], "'")
            )
        });
        s.push('\n');
        s
    }
}

/// Parses one request line (without its newline), telling apart the error cases. On
/// error, returns the id when it could be read (else 0) with the error.
pub fn parse_request(line: &[u8]) -> Result<Request, (u64, ErrorBody)> {
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        (
            0,
            ErrorBody::new(ErrorCode::BadRequest, format!("not JSON: {e}")),
        )
    })?;
    let Value::Object(mut obj) = value else {
        return Err((
            0,
            ErrorBody::new(ErrorCode::BadRequest, "a request is a JSON object"),
        ));
    };
    let id = match obj.remove("id") {
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or(0),
        Some(_) => {
            return Err((
                0,
                ErrorBody::new(ErrorCode::BadRequest, "\"id\" must be an unsigned integer"),
            ))
        }
        None => return Err((0, ErrorBody::new(ErrorCode::BadRequest, "missing \"id\""))),
    };
    let bad = |msg: String| (id, ErrorBody::new(ErrorCode::BadRequest, msg));
    let v = match obj.remove("v") {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| bad("\"v\" must be an unsigned integer".into()))?,
        Some(_) => return Err(bad("\"v\" must be an unsigned integer".into())),
        None => {
            return Err(bad(format!(
                "missing \"v\" (protocol version, {PROTOCOL_VERSION})"
            )))
        }
    };
    if v != u64::from(PROTOCOL_VERSION) {
        return Err((
            id,
            ErrorBody::new(
                ErrorCode::Version,
                format!(
                    "protocol version {v} is not supported; this agent speaks {PROTOCOL_VERSION}"
                ),
            ),
        ));
    }
    match obj.get("cmd") {
        Some(Value::String(name)) if COMMAND_NAMES.contains(&name.as_str()) => {}
        Some(Value::String(name)) => {
            return Err((
                id,
                ErrorBody::new(
                    ErrorCode::UnknownCommand,
                    format!(
                        "unknown command {name:?}; known: {}",
                        COMMAND_NAMES.join(", ")
                    ),
                ),
            ))
        }
        Some(_) => return Err(bad("\"cmd\" must be a string".into())),
        None => return Err(bad("missing \"cmd\"".into())),
    }
    let cmd: Command = serde_json::from_value(Value::Object(obj.clone()))
        .map_err(|e| bad(format!("bad arguments: {e}")))?;
    // Serde ignores unknown fields of argument-less commands: catch them (and any other)
    // by comparing with what the command serializes to. Absent optional fields may be
    // sent as null.
    if let Ok(Value::Object(known)) = serde_json::to_value(&cmd) {
        if let Some(extra) = obj
            .iter()
            .find(|(k, v)| !known.contains_key(k.as_str()) && !v.is_null())
        {
            return Err(bad(format!(
                "unknown field {:?} for command {:?}",
                extra.0,
                cmd.name()
            )));
        }
    }
    Ok(Request {
        id,
        v: PROTOCOL_VERSION,
        cmd,
    })
}

// ---- Result shapes -------------------------------------------------------------------
//
// What the agent answers for each command. The CLI renders these, tolerantly: unknown
// fields are ignored and missing ones default, so either side can grow fields within
// protocol version 1.

/// `status` result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusInfo {
    pub version: String,
    pub protocol: u32,
    pub pid: u32,
    pub uptime_secs: u64,
    pub iface: Option<String>,
    pub xdp_mode: Option<String>,
    pub config: Option<String>,
    pub vips: usize,
    pub backends: usize,
    /// The running `lb_xdp` program: `{"id": 123, "tag": "<16 hex digits>", "name":
    /// "lb_xdp"}`. The id changes at every start, the tag only with a different object
    /// (an upgrade). Absent when the agent cannot read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<crate::dataplane::ProgramInfo>,
    /// Runtime edits changed the running configuration since it was read from `config`.
    #[serde(default)]
    pub config_edited: bool,
    /// How many targets are in each NLB state (`healthy`, `unhealthy`, `draining`, …).
    #[serde(default)]
    pub targets: std::collections::BTreeMap<String, usize>,
    /// Target groups with no healthy target whose traffic goes to every target anyway
    /// (fail open).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failing_open: Vec<String>,
}

/// One entry of `vip_list` (`{"vips": [...]}`), and `vip_show`'s result (with backends).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VipInfo {
    pub name: String,
    pub address: Option<IpAddr>,
    pub port: u16,
    pub proto: String,
    pub mode: String,
    pub target_group: String,
    pub vip_id: u32,
    pub backends: usize,
    pub ring_size: u32,
    /// Ring fingerprint, as 16 hex digits.
    pub fingerprint: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backend_list: Vec<BackendInfo>,
}

/// One entry of `backend_list` (`{"backends": [...]}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackendInfo {
    pub group: String,
    pub address: Option<IpAddr>,
    /// The configured weight.
    pub weight: u16,
    /// NLB's target state: `initial`, `healthy`, `unhealthy`, `unhealthy.draining`,
    /// `draining`, `unused`.
    pub state: String,
    /// NLB's reason code (`Target.Timeout`, `Target.DeregistrationInProgress`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The last health check's result in words.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// The weight new flows see now: configured weight × slow-start ramp × the target's
    /// own reported percentage; 0 when it takes no new flows.
    pub effective_weight: f64,
    /// Seconds left of a drain, an unhealthy draining interval or a slow-start ramp.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_secs: Option<u64>,
    /// It takes flows only because its whole group is unhealthy (fail open).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fail_open: bool,
    pub backend_id: Option<u32>,
    /// Flow-table entries pointing at this backend, when known.
    pub flows: Option<u64>,
    /// Ring slots this backend owns, summed over VIPs, when known.
    pub slots: Option<u64>,
}

/// `config_show` result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfigInfo {
    /// The running configuration as TOML.
    pub toml: String,
    /// The file it was read from, if any.
    pub source: Option<String>,
    /// Whether runtime edits (`vip_add`, `backend_set_weight`, …) changed it since.
    pub edited: bool,
}

/// `flow` result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FlowAnswer {
    pub vip: Option<String>,
    pub backend: Option<IpAddr>,
    pub backend_id: Option<u32>,
    pub group: Option<String>,
    /// `flow_table` (an established entry) or `ring` (where a new flow would go), or
    /// `none` (no VIP matches / VIP without backends).
    pub source: String,
    pub ring_slot: Option<u32>,
}

/// Per-VIP part of an `apply` result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VipApply {
    pub name: String,
    /// `added`, `changed`, `unchanged`, `removed`.
    pub change: String,
    pub ring_size: u32,
    pub moved: u32,
    /// Slots that had to move (removed or re-weighted backends).
    pub forced: u32,
    /// Slots moved only because of how Maglev fills the ring.
    pub collateral: u32,
    /// Live flow-table entries whose new ring slot points elsewhere, when known.
    pub flows_touched: Option<u64>,
    pub backends: usize,
    pub fingerprint: String,
}

/// `apply` result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApplyResult {
    pub dry_run: bool,
    pub vips: Vec<VipApply>,
    pub backends_added: usize,
    pub backends_removed: usize,
    pub warnings: Vec<String>,
}

impl ApplyResult {
    /// The result for an apply (or dry run) the agent computed with
    /// [`crate::services::Services`]; `flows_touched` is left unknown for the caller to
    /// fill in from the flow table.
    pub fn from_report(report: &crate::services::ApplyReport, dry_run: bool) -> Self {
        let mut vips: Vec<VipApply> = report
            .changed
            .iter()
            .map(|c| {
                let (moved, forced, collateral, size) = c
                    .disruption
                    .map_or((0, 0, 0, 0), |d| (d.moved, d.forced, d.collateral, d.size));
                VipApply {
                    name: c.name.clone(),
                    change: if c.disruption.is_some() {
                        "changed"
                    } else {
                        "added"
                    }
                    .into(),
                    ring_size: size,
                    moved,
                    forced,
                    collateral,
                    flows_touched: None,
                    backends: c.backends,
                    fingerprint: format!("{:016x}", c.fingerprint),
                }
            })
            .collect();
        for (names, change) in [
            (&report.unchanged, "unchanged"),
            (&report.removed, "removed"),
        ] {
            vips.extend(names.iter().map(|n| VipApply {
                name: n.clone(),
                change: change.into(),
                flows_touched: (change == "unchanged").then_some(0),
                ..VipApply::default()
            }));
        }
        vips.sort_by(|a, b| a.name.cmp(&b.name));
        ApplyResult {
            dry_run,
            vips,
            backends_added: report.backends_added,
            backends_removed: report.backends_removed,
            warnings: Vec::new(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Request, (u64, ErrorBody)> {
        parse_request(s.as_bytes())
    }

    #[test]
    fn every_command_round_trips() {
        for cmd in sample_commands() {
            let req = Request {
                id: 42,
                v: PROTOCOL_VERSION,
                cmd: cmd.clone(),
            };
            let line = serde_json::to_string(&req).expect("serialize");
            let back = parse(&line).expect("parse");
            assert_eq!(back, req, "{line}");
            assert!(
                line.contains(&format!("\"cmd\":\"{}\"", cmd.name())),
                "{line}"
            );
        }
        assert_eq!(sample_commands().len(), COMMAND_NAMES.len());
    }

    #[test]
    fn wire_format() {
        let r = parse(r#"{"id":7,"v":1,"cmd":"vip_show","name":"web"}"#).expect("ok");
        assert_eq!(r.id, 7);
        assert_eq!(r.cmd, Command::VipShow { name: "web".into() });
        let r = parse(
            r#"{"id":1,"v":1,"cmd":"flow","proto":"tcp","src":"198.18.10.2","sport":40000,"dst":"198.18.200.1","dport":80}"#,
        )
        .expect("ok");
        assert!(matches!(
            r.cmd,
            Command::Flow {
                proto: Proto::Tcp,
                sport: 40000,
                ..
            }
        ));
        let r = parse(r#"{"id":1,"v":1,"cmd":"apply","path":"/etc/lb.toml"}"#).expect("ok");
        assert_eq!(
            r.cmd,
            Command::Apply {
                path: "/etc/lb.toml".into(),
                dry_run: false
            }
        );
    }

    #[test]
    fn error_cases() {
        let code = |s: &str| parse(s).expect_err(s);
        assert_eq!(code("garbage").1.code, ErrorCode::BadRequest);
        assert_eq!(code("garbage").0, 0);
        assert_eq!(code("[1,2]").1.code, ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"v":1,"cmd":"status"}"#).1.code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"id":-1,"v":1,"cmd":"status"}"#).1.code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"id":3,"cmd":"status"}"#),
            (3, code(r#"{"id":3,"cmd":"status"}"#).1)
        );
        assert_eq!(
            code(r#"{"id":3,"cmd":"status"}"#).1.code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"id":3,"v":2,"cmd":"status"}"#).1.code,
            ErrorCode::Version
        );
        assert_eq!(
            code(r#"{"id":3,"v":1,"cmd":"reboot"}"#).1.code,
            ErrorCode::UnknownCommand
        );
        assert_eq!(code(r#"{"id":3,"v":1,"cmd":"reboot"}"#).0, 3);
        assert_eq!(code(r#"{"id":3,"v":1}"#).1.code, ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"id":3,"v":1,"cmd":5}"#).1.code,
            ErrorCode::BadRequest
        );
        // Missing and mistyped arguments, unknown fields.
        assert_eq!(
            code(r#"{"id":3,"v":1,"cmd":"vip_show"}"#).1.code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"id":3,"v":1,"cmd":"backend_set_weight","group":"g","address":"10.0.0.1","weight":70000}"#).1.code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"id":3,"v":1,"cmd":"backend_drain","group":"g","address":"not-an-ip"}"#)
                .1
                .code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(r#"{"id":3,"v":1,"cmd":"status","force":true}"#).1.code,
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn response_lines() {
        let ok = Response::ok(5, serde_json::json!({"a": 1})).to_line();
        assert_eq!(ok, "{\"id\":5,\"ok\":true,\"result\":{\"a\":1}}\n");
        let err = Response::err(6, ErrorBody::new(ErrorCode::NotFound, "no VIP \"x\"")).to_line();
        assert_eq!(
            err,
            "{\"id\":6,\"ok\":false,\"error\":{\"code\":\"not_found\",\"message\":\"no VIP \\\"x\\\"\"}}\n"
        );
        let back: Response = serde_json::from_str(err.trim_end()).expect("parse");
        assert_eq!(back.error.expect("error").code, ErrorCode::NotFound);
    }

    #[test]
    fn mutating_commands() {
        for cmd in sample_commands() {
            let expected = matches!(
                cmd.name(),
                "vip_add"
                    | "vip_remove"
                    | "backend_add"
                    | "backend_remove"
                    | "backend_set_weight"
                    | "backend_drain"
                    | "backend_undrain"
                    | "down"
            ) || matches!(cmd, Command::Apply { dry_run: false, .. });
            assert_eq!(cmd.is_mutating(), expected, "{}", cmd.name());
        }
        assert!(!Command::Apply {
            path: "x".into(),
            dry_run: true
        }
        .is_mutating());
    }

    #[test]
    fn apply_result_from_report() {
        use crate::{
            maglev::Disruption,
            services::{ApplyReport, VipChange},
        };
        let report = ApplyReport {
            changed: vec![
                VipChange {
                    name: "web".into(),
                    vip_id: 0,
                    disruption: Some(Disruption {
                        moved: 12,
                        forced: 10,
                        collateral: 2,
                        size: 100,
                    }),
                    fingerprint: 0xab,
                    backends: 2,
                },
                VipChange {
                    name: "new".into(),
                    vip_id: 1,
                    disruption: None,
                    fingerprint: 1,
                    backends: 1,
                },
            ],
            unchanged: vec!["same".into()],
            removed: vec!["gone".into()],
            backends_added: 1,
            backends_removed: 0,
        };
        let r = ApplyResult::from_report(&report, true);
        let names: Vec<(&str, &str)> = r
            .vips
            .iter()
            .map(|v| (v.name.as_str(), v.change.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("gone", "removed"),
                ("new", "added"),
                ("same", "unchanged"),
                ("web", "changed")
            ]
        );
        let web = &r.vips[3];
        assert_eq!(
            (web.moved, web.forced, web.collateral, web.ring_size),
            (12, 10, 2, 100)
        );
        assert_eq!(web.fingerprint, "00000000000000ab");
        // What the CLI renders.
        let t = crate::admin::table::apply(&serde_json::to_value(&r).expect("json"));
        assert!(t.contains("web   changed    100    12 (12.0%)"), "{t}");
    }

    /// One of each command (used by the server tests too).
    pub(crate) fn sample_commands() -> Vec<Command> {
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        vec![
            Command::Status,
            Command::VipList,
            Command::VipShow { name: "web".into() },
            Command::VipAdd {
                name: "web".into(),
                address: "198.18.200.1".parse().expect("ip"),
                port: 80,
                proto: Proto::Tcp,
                target_group: "g".into(),
                mode: Some("tunnel".into()),
                gue_port: None,
                hash: Some("source-ip".into()),
                ring_size: Some(65537),
            },
            Command::VipRemove { name: "web".into() },
            Command::BackendList { group: None },
            Command::BackendAdd {
                group: "g".into(),
                address: a,
                weight: 100,
            },
            Command::BackendRemove {
                group: "g".into(),
                address: a,
            },
            Command::BackendSetWeight {
                group: "g".into(),
                address: a,
                weight: 0,
            },
            Command::BackendDrain {
                group: "g".into(),
                address: a,
            },
            Command::BackendUndrain {
                group: "g".into(),
                address: "2001:db8::1".parse().expect("ip"),
            },
            Command::Flow {
                proto: Proto::Udp,
                src: "198.18.10.2".parse().expect("ip"),
                sport: 40000,
                dst: "198.18.200.1".parse().expect("ip"),
                dport: 53,
            },
            Command::Apply {
                path: "/etc/lb/lb.toml".into(),
                dry_run: true,
            },
            Command::Stats,
            Command::ConfigShow,
            Command::Metrics {
                format: MetricsFormat::Emf,
            },
            Command::Top,
            Command::Down,
        ]
    }
}
