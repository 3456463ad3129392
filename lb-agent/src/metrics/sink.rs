//! Delivering EMF lines: to stdout, appended to a file, over TCP or as UDP datagrams.
//!
//! The agent never waits for a sink: [`EmfSink::send`] puts a line on a bounded queue
//! and returns; a writer task drains it. A line that finds the queue full, or that cannot
//! be written (the file cannot be opened, the TCP peer is down), is dropped and counted
//! ([`EmfSink::dropped`]). A broken TCP connection is re-established on a later line,
//! with a back-off between attempts, so a dead endpoint costs one failed connect now and
//! then, not one per line. Stdout and files are written from a thread of their own
//! (blocking writes must not occupy the runtime); sockets from a tokio task.

use std::{
    fs::File,
    io::Write as _,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncWrite, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    sync::mpsc,
    time::Instant,
};

use crate::config::EmfOutput;

/// The CloudWatch agent's EMF endpoint when `AWS_EMF_AGENT_ENDPOINT` is not set.
pub const DEFAULT_AGENT_ENDPOINT: &str = "tcp://127.0.0.1:25888";
/// The environment variable the CloudWatch EMF libraries read the endpoint from.
pub const AGENT_ENDPOINT_ENV: &str = "AWS_EMF_AGENT_ENDPOINT";
/// Lines waiting to be written: a few minutes of documents at one period a second.
pub const QUEUE_LINES: usize = 4096;
/// A connect or write that takes longer than this fails.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Back-off between connection attempts after a failure, doubling up to the maximum.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Why an EMF destination cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot start the EMF writer thread: {0}")]
    Spawn(std::io::Error),
    #[error(
        "{AGENT_ENDPOINT_ENV}={value:?} is not a CloudWatch agent endpoint: write \
         tcp://host:port or udp://host:port ({why})"
    )]
    AgentEndpoint { value: String, why: String },
}

/// Where EMF lines go, resolved from [`EmfOutput`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
    /// `host:port`.
    Tcp(String),
    /// `host:port`.
    Udp(String),
}

impl Destination {
    /// The destination of `output` (`None` for `off`); `agent_endpoint` is the value of
    /// `AWS_EMF_AGENT_ENDPOINT` for [`EmfOutput::Agent`] (`None`: unset, the default
    /// endpoint).
    pub fn resolve(
        output: &EmfOutput,
        agent_endpoint: Option<&str>,
    ) -> Result<Option<Self>, SinkError> {
        Ok(Some(match output {
            EmfOutput::Off => return Ok(None),
            EmfOutput::Stdout => Self::Stdout,
            EmfOutput::File(path) => Self::File(path.clone()),
            EmfOutput::Tcp(addr) => Self::Tcp(addr.clone()),
            EmfOutput::Udp(addr) => Self::Udp(addr.clone()),
            EmfOutput::Agent => {
                let value = agent_endpoint.unwrap_or(DEFAULT_AGENT_ENDPOINT);
                let bad = |why: String| SinkError::AgentEndpoint {
                    value: value.to_owned(),
                    why,
                };
                if let Some(addr) = value.strip_prefix("tcp://") {
                    Self::Tcp(crate::config::host_port(addr).map_err(bad)?)
                } else if let Some(addr) = value.strip_prefix("udp://") {
                    Self::Udp(crate::config::host_port(addr).map_err(bad)?)
                } else {
                    return Err(bad("unknown scheme".to_owned()));
                }
            }
        }))
    }

    /// [`Destination::resolve`] with the agent endpoint from the environment.
    pub fn from_env(output: &EmfOutput) -> Result<Option<Self>, SinkError> {
        let env = std::env::var(AGENT_ENDPOINT_ENV).ok();
        Self::resolve(output, env.as_deref().filter(|v| !v.is_empty()))
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stdout => f.write_str("stdout"),
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Tcp(addr) => write!(f, "tcp://{addr}"),
            Self::Udp(addr) => write!(f, "udp://{addr}"),
        }
    }
}

/// A running EMF writer. Dropping it stops the writer once the queue is drained.
#[derive(Debug)]
pub struct EmfSink {
    tx: mpsc::Sender<String>,
    dropped: Arc<AtomicU64>,
}

impl EmfSink {
    /// Starts the writer for `destination`: a thread for stdout and files, a task on
    /// the current tokio runtime for sockets.
    pub fn start(destination: Destination) -> Result<Self, SinkError> {
        let (tx, rx) = mpsc::channel(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            destination,
            dropped: Arc::clone(&dropped),
            failing: false,
            retry_at: None,
            backoff: RETRY_MIN,
        };
        match writer.destination {
            Destination::Stdout | Destination::File(_) => {
                std::thread::Builder::new()
                    .name("lb-metrics-emf".to_owned())
                    .spawn(move || writer.run_blocking(rx))
                    .map_err(SinkError::Spawn)?;
            }
            Destination::Tcp(_) | Destination::Udp(_) => {
                tokio::spawn(writer.run(rx));
            }
        }
        Ok(Self { tx, dropped })
    }

    /// Queues one document (without its line terminator); false when it was dropped
    /// because the queue is full.
    pub fn send(&self, line: String) -> bool {
        match self.tx.try_send(line) {
            Ok(()) => true,
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Queues every line of a period.
    pub fn send_all(&self, lines: impl IntoIterator<Item = String>) {
        for line in lines {
            self.send(line);
        }
    }

    /// Lines dropped so far: queue full, or not deliverable.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

struct Writer {
    destination: Destination,
    dropped: Arc<AtomicU64>,
    /// Whether the last attempt failed (to log changes, not every line).
    failing: bool,
    retry_at: Option<Instant>,
    backoff: Duration,
}

enum Conn {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

impl Writer {
    /// Stdout and files: blocking writes on the writer's own thread.
    fn run_blocking(mut self, mut rx: mpsc::Receiver<String>) {
        let mut file: Option<File> = None;
        while let Some(mut line) = rx.blocking_recv() {
            line.push('\n');
            let result = match &self.destination {
                Destination::File(path) => {
                    if file.is_none() {
                        match File::options().create(true).append(true).open(path) {
                            Ok(f) => file = Some(f),
                            Err(e) => self.failed(&e.to_string()),
                        }
                    }
                    match file.as_mut() {
                        Some(f) => f.write_all(line.as_bytes()),
                        None => Err(std::io::ErrorKind::NotFound.into()),
                    }
                }
                _ => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(line.as_bytes()).and_then(|()| out.flush())
                }
            };
            match result {
                Ok(()) => self.recovered(),
                Err(e) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    self.failed(&e.to_string());
                    // Reopened for the next line (the file may have been rotated away).
                    file = None;
                }
            }
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<String>) {
        let mut conn: Option<Conn> = None;
        while let Some(mut line) = rx.recv().await {
            line.push('\n');
            if conn.is_none() {
                conn = self.open().await;
            }
            let Some(c) = conn.as_mut() else {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if let Err(e) = write(c, line.as_bytes()).await {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                self.failed(&e.to_string());
                conn = None;
            } else {
                self.recovered();
            }
        }
    }

    /// Opens the destination, unless a recent failure says to wait.
    async fn open(&mut self) -> Option<Conn> {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return None;
        }
        let result = match &self.destination {
            Destination::Stdout | Destination::File(_) => return None,
            Destination::Tcp(addr) => {
                match tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr.as_str())).await {
                    Ok(r) => r.map(Conn::Tcp),
                    Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
                }
            }
            Destination::Udp(addr) => udp(addr).await.map(Conn::Udp),
        };
        match result {
            Ok(conn) => {
                self.retry_at = None;
                self.backoff = RETRY_MIN;
                Some(conn)
            }
            Err(e) => {
                self.failed(&e.to_string());
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(RETRY_MAX);
                None
            }
        }
    }

    fn recovered(&mut self) {
        if self.failing {
            self.failing = false;
            tracing::info!(destination = %self.destination, "metrics: EMF output works again");
        }
    }

    fn failed(&mut self, why: &str) {
        if !self.failing {
            self.failing = true;
            tracing::warn!(
                destination = %self.destination,
                error = why,
                "metrics: cannot write EMF documents; dropping them (counted) until it works"
            );
        }
    }
}

async fn udp(addr: &str) -> std::io::Result<UdpSocket> {
    let target = tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{addr} has no address")))?;
    let local = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(target).await?;
    Ok(socket)
}

async fn write(conn: &mut Conn, bytes: &[u8]) -> std::io::Result<()> {
    async fn all<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
        w.write_all(bytes).await?;
        w.flush().await
    }
    let io = async {
        match conn {
            Conn::Tcp(stream) => all(stream, bytes).await,
            // One document per datagram, as the CloudWatch agent reads them.
            Conn::Udp(socket) => socket.send(bytes).await.map(|_| ()),
        }
    };
    match tokio::time::timeout(IO_TIMEOUT, io).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}
