//! HAProxy's agent check: the target runs a small agent on another port that answers one
//! line saying what share of its weight it wants and whether it wants new flows. It lets a
//! busy target shed load without failing its health check.
//!
//! The line (at most [`AGENT_LINE_MAX`] bytes, up to a newline or the end of the
//! connection) holds words separated by commas or spaces; `#` starts a comment:
//! - `NN%`: that percentage of the configured weight. HAProxy accepts up to 256 %; lb
//!   clamps to 100 so that a target can lower its share but never raise it above what the
//!   operator configured.
//! - `up`, `ready`: ends an earlier `drain` or `down` from the agent (no effect on health).
//! - `drain`: no new flows (weight 0), established flows stay.
//! - `down`, `fail`, `stopped`, `maint`: the agent says the target is down.
//!
//! An agent that cannot be reached, or answers nothing this grammar knows, changes
//! nothing (as HAProxy): the health check decides alone. Its failure is still reported.

use std::{fmt, io, net::SocketAddr, time::Duration};

use tokio::{io::AsyncReadExt, net::TcpStream};

use super::{human, AgentCheckSpec, TargetKey};

/// An agent's answer is read up to this many bytes.
pub const AGENT_LINE_MAX: usize = 256;

/// What the agent last asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AgentStatus {
    /// No objection (`up`, `ready`, or nothing said yet).
    #[default]
    Ready,
    /// No new flows (`drain`).
    Drain,
    /// The target says it is down (`down`, `fail`, `stopped`, `maint`).
    Down,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Drain => "drain",
            Self::Down => "down",
        }
    }
}

impl fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one line said; `None` fields were not mentioned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentReply {
    pub weight_pct: Option<u8>,
    pub status: Option<AgentStatus>,
}

impl AgentReply {
    /// The line said nothing this grammar knows.
    pub fn is_empty(&self) -> bool {
        self.weight_pct.is_none() && self.status.is_none()
    }
}

/// Reads an agent's line. Unknown words are skipped; of several, the last of each kind wins.
pub fn parse_agent_line(line: &str) -> AgentReply {
    let line = line.split('#').next().unwrap_or_default();
    let mut reply = AgentReply::default();
    for word in line
        .split([',', ' ', '\t', '\r', '\n'])
        .filter(|w| !w.is_empty())
    {
        let word = word.to_ascii_lowercase();
        if let Some(number) = word.strip_suffix('%') {
            if let Ok(pct) = number.parse::<u32>() {
                reply.weight_pct = Some(pct.min(100) as u8);
            }
            continue;
        }
        reply.status = match word.as_str() {
            "up" | "ready" => Some(AgentStatus::Ready),
            "drain" => Some(AgentStatus::Drain),
            "down" | "fail" | "stopped" | "maint" => Some(AgentStatus::Down),
            _ => reply.status,
        };
    }
    reply
}

/// Why an agent could not be asked. None of these changes the target's health or weight
/// (as HAProxy); they are reported.
#[derive(Debug, thiserror::Error)]
pub enum AgentCheckError {
    #[error("agent port {port}: {source}")]
    Connect { port: u16, source: io::Error },
    #[error("agent port {port}: reading the answer: {source}")]
    Read { port: u16, source: io::Error },
    #[error("agent port {port} timed out after {}", human(*.timeout))]
    Timeout { port: u16, timeout: Duration },
    /// The answer held no word this grammar knows.
    #[error("agent answered {0:?}")]
    Unrecognised(String),
}

/// Asks the agent of `key` once.
pub async fn agent_probe(
    key: &TargetKey,
    spec: &AgentCheckSpec,
) -> Result<AgentReply, AgentCheckError> {
    let port = spec.port;
    let addr = SocketAddr::new(key.address, port);
    let ask = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| AgentCheckError::Connect { port, source })?;
        if let Err(error) = stream.set_zero_linger() {
            tracing::debug!(%addr, %error, "cannot set SO_LINGER on an agent-check socket");
        }
        let mut line = Vec::with_capacity(AGENT_LINE_MAX);
        let mut limited = stream.take(AGENT_LINE_MAX as u64);
        let mut chunk = [0u8; AGENT_LINE_MAX];
        while !line.contains(&b'\n') {
            match limited.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => line.extend_from_slice(&chunk[..n]),
                Err(source) => return Err(AgentCheckError::Read { port, source }),
            }
        }
        let text = String::from_utf8_lossy(&line);
        let first = text.lines().next().unwrap_or_default();
        let reply = parse_agent_line(first);
        if reply.is_empty() {
            return Err(AgentCheckError::Unrecognised(first.trim().to_owned()));
        }
        Ok(reply)
    };
    match tokio::time::timeout(spec.timeout, ask).await {
        Ok(result) => result,
        Err(_elapsed) => Err(AgentCheckError::Timeout {
            port,
            timeout: spec.timeout,
        }),
    }
}

/// Keeps the agent's last word: a reply updates what it mentions, nothing else. Returns
/// whether the status changed.
pub(super) fn apply(status: &mut AgentStatus, weight: &mut Option<u8>, reply: &AgentReply) -> bool {
    if reply.weight_pct.is_some() {
        *weight = reply.weight_pct;
    }
    match reply.status {
        Some(new) if new != *status => {
            *status = new;
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use tokio::{io::AsyncWriteExt, net::TcpListener};

    use super::*;

    #[test]
    fn lines() {
        let reply = |pct, status| AgentReply {
            weight_pct: pct,
            status,
        };
        assert_eq!(parse_agent_line("75%\n"), reply(Some(75), None));
        assert_eq!(
            parse_agent_line("drain"),
            reply(None, Some(AgentStatus::Drain))
        );
        assert_eq!(
            parse_agent_line("down # disk full"),
            reply(None, Some(AgentStatus::Down))
        );
        assert_eq!(
            parse_agent_line("up, 50%"),
            reply(Some(50), Some(AgentStatus::Ready))
        );
        assert_eq!(
            parse_agent_line("MAINT"),
            reply(None, Some(AgentStatus::Down))
        );
        assert_eq!(parse_agent_line("200%"), reply(Some(100), None));
        assert!(parse_agent_line("hello world").is_empty());
        assert!(parse_agent_line("x%").is_empty());
    }

    #[test]
    fn a_reply_changes_only_what_it_mentions() {
        let mut status = AgentStatus::Drain;
        let mut weight = Some(50);
        let only_weight = parse_agent_line("75%");
        assert!(!apply(&mut status, &mut weight, &only_weight));
        assert_eq!((status, weight), (AgentStatus::Drain, Some(75)));
        let up = parse_agent_line("up");
        assert!(apply(&mut status, &mut weight, &up));
        assert_eq!((status, weight), (AgentStatus::Ready, Some(75)));
    }

    /// An agent that answers `line` to every connection.
    async fn agent(line: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                stream.write_all(line.as_bytes()).await.expect("write");
            }
        });
        port
    }

    fn spec(port: u16) -> AgentCheckSpec {
        AgentCheckSpec {
            port,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
        }
    }

    fn local() -> TargetKey {
        TargetKey::new("web", "127.0.0.1".parse().expect("an address"))
    }

    #[tokio::test]
    async fn asks_the_agent() {
        for (line, expected) in [
            (
                "75%\n",
                AgentReply {
                    weight_pct: Some(75),
                    status: None,
                },
            ),
            (
                "drain\n",
                AgentReply {
                    weight_pct: None,
                    status: Some(AgentStatus::Drain),
                },
            ),
            (
                "down\n",
                AgentReply {
                    weight_pct: None,
                    status: Some(AgentStatus::Down),
                },
            ),
            (
                "up",
                AgentReply {
                    weight_pct: None,
                    status: Some(AgentStatus::Ready),
                },
            ),
        ] {
            let port = agent(line).await;
            let reply = agent_probe(&local(), &spec(port)).await.expect(line);
            assert_eq!(reply, expected, "{line}");
        }
    }

    #[tokio::test]
    async fn garbage_and_silence_are_reported_not_obeyed() {
        let port = agent("HTTP/1.1 400 Bad Request\r\n").await;
        let error = agent_probe(&local(), &spec(port))
            .await
            .expect_err("garbage");
        assert_eq!(
            error.to_string(),
            "agent answered \"HTTP/1.1 400 Bad Request\""
        );
        let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = closed.local_addr().expect("address").port();
        drop(closed);
        let error = agent_probe(&local(), &spec(port))
            .await
            .expect_err("unreachable");
        assert!(matches!(error, AgentCheckError::Connect { .. }), "{error}");
        assert!(error.to_string().contains("refused"), "{error}");
    }
}
