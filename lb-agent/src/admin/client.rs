//! A blocking client for the admin socket: one request, one response.

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use serde_json::Value;

use super::protocol::{
    Command, ErrorBody, ErrorCode, Request, Response, MAX_RESPONSE_LINE, PROTOCOL_VERSION,
};

/// Why a call failed, worded for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("lb-agent is not running (no socket at {})", .0.display())]
    NotRunning(PathBuf),
    #[error("lb-agent is not running (nothing listens on {})", .0.display())]
    Refused(PathBuf),
    #[error(
        "permission denied on {}: needs root (or membership of the admin group)",
        .0.display()
    )]
    PermissionDenied(PathBuf),
    #[error("no answer from lb-agent within {0:?}")]
    Timeout(Duration),
    #[error("talking to lb-agent: {0}")]
    Io(#[from] io::Error),
    #[error("unexpected answer from lb-agent: {0}")]
    Protocol(String),
    /// The agent answered with an error.
    #[error("{0}")]
    Server(ErrorBody),
}

impl ClientError {
    /// The agent's error code, when the agent answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server(b) => Some(b.code),
            _ => None,
        }
    }
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Sends `cmd` to the agent listening at `path` and returns its result, waiting at most
/// `timeout` for each of connecting, writing and reading.
pub fn call(path: &Path, cmd: Command, timeout: Duration) -> Result<Value, ClientError> {
    let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ClientError::NotRunning(path.to_owned()),
        io::ErrorKind::ConnectionRefused => ClientError::Refused(path.to_owned()),
        io::ErrorKind::PermissionDenied => ClientError::PermissionDenied(path.to_owned()),
        _ => ClientError::Io(e),
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let timed_out = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout(timeout),
        _ => ClientError::Io(e),
    };
    let id = next_id();
    let req = Request {
        id,
        v: PROTOCOL_VERSION,
        cmd,
    };
    let mut line = serde_json::to_vec(&req).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push(b'\n');
    let mut writer = &stream;
    // The agent may refuse (and close) before reading the request: then its reply is
    // still waiting to be read, so a write error is not the end.
    let write_result = writer.write_all(&line).and_then(|()| writer.flush());
    let mut reader = BufReader::new((&stream).take(MAX_RESPONSE_LINE as u64 + 1));
    let mut buf = Vec::new();
    let read_result = reader.read_until(b'\n', &mut buf);
    if buf.is_empty() {
        if let Err(e) = write_result {
            return Err(timed_out(e));
        }
        read_result.map_err(timed_out)?;
        return Err(ClientError::Protocol(
            "the agent closed the connection without answering".into(),
        ));
    }
    if !buf.ends_with(b"\n") {
        read_result.map_err(timed_out)?;
        return Err(ClientError::Protocol(if buf.len() > MAX_RESPONSE_LINE {
            format!("response longer than {MAX_RESPONSE_LINE} bytes")
        } else {
            "truncated response".into()
        }));
    }
    let resp: Response = serde_json::from_slice(&buf)
        .map_err(|e| ClientError::Protocol(format!("response is not valid: {e}")))?;
    if !resp.ok {
        let body = resp.error.unwrap_or_else(|| {
            ErrorBody::new(ErrorCode::Internal, "error response without an error body")
        });
        if body.code == ErrorCode::Forbidden {
            return Err(ClientError::PermissionDenied(path.to_owned()));
        }
        return Err(ClientError::Server(body));
    }
    if resp.id != id {
        return Err(ClientError::Protocol(format!(
            "response id {} does not match request id {id}",
            resp.id
        )));
    }
    Ok(resp.result.unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::{Running, TempDir};

    const T: Duration = Duration::from_secs(10);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        not(feature = "privileged-tests"),
        ignore = "needs root: `cargo xtask test` runs it"
    )]
    async fn call_round_trips_and_maps_errors() {
        let srv = Running::start().await;
        let path = srv.path.clone();
        tokio::task::spawn_blocking(move || {
            let v = call(&path, Command::Status, T).expect("status");
            assert_eq!(v["echo"]["cmd"], "status");
            let e = call(
                &path,
                Command::VipShow {
                    name: "missing".into(),
                },
                T,
            )
            .expect_err("not found");
            assert_eq!(e.code(), Some(ErrorCode::NotFound));
            assert!(e.to_string().contains("not_found"), "{e}");
        })
        .await
        .expect("join");
        srv.stop().await;
    }

    #[test]
    fn missing_socket_says_not_running() {
        let dir = TempDir::new();
        let path = dir.0.join("admin.sock");
        let e = call(&path, Command::Status, T).expect_err("no socket");
        assert!(matches!(e, ClientError::NotRunning(_)));
        assert!(
            e.to_string()
                .starts_with("lb-agent is not running (no socket at"),
            "{e}"
        );
    }

    #[test]
    fn stale_socket_says_not_running() {
        let dir = TempDir::new();
        let path = dir.0.join("admin.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        let e = call(&path, Command::Status, T).expect_err("nothing listens");
        assert!(matches!(e, ClientError::Refused(_)), "{e:?}");
        assert!(e.to_string().contains("not running"), "{e}");
    }

    #[test]
    fn silent_agent_times_out() {
        let dir = TempDir::new();
        let path = dir.0.join("admin.sock");
        let _l = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let e = call(&path, Command::Status, Duration::from_millis(200)).expect_err("timeout");
        assert!(matches!(e, ClientError::Timeout(_)), "{e:?}");
    }

    #[test]
    fn permission_wording() {
        let e = ClientError::PermissionDenied("/run/lb/admin.sock".into());
        assert_eq!(
            e.to_string(),
            "permission denied on /run/lb/admin.sock: needs root (or membership of the admin group)"
        );
    }
}
