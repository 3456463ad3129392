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
//! The full description with examples is `docs/admin-protocol.md`. Here: the framing
//! (versions, limits, request and response lines, error codes); the commands and their
//! arguments in [`command`], the results in [`results`].

mod command;
#[cfg(test)]
mod doc_examples;
mod results;
#[cfg(test)]
pub(crate) mod tests;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use command::{Command, MetricsFormat, Proto, VipSpec, COMMAND_NAMES};
pub use results::{
    AnnounceInfo, ApplyResult, AttachmentInfo, BackendInfo, BackendList, ConfigInfo, CounterInfo,
    CounterSection, DatumResult, DownResult, DrainResult, EmfResult, FlowAnswer, PromResult,
    RouteInfo, StatsInfo, StatusInfo, TopInfo, TopTarget, TopVip, VipAnnounce, VipApply, VipInfo,
    VipList, WithdrawResult,
};

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
