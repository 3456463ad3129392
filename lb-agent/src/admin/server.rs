//! The admin socket server: accepts connections, checks who is calling, reads bounded
//! request lines, and answers each one through a [`Handler`].
//!
//! Access: the socket file is mode 0600 (root only), or 0660 with the configured admin
//! group as its group. Independently of the file mode, every connection's peer
//! credentials (`SO_PEERCRED`) are checked: uid 0, or a process whose primary or
//! supplementary groups include the admin group. Anyone else gets a `forbidden` reply
//! and the connection is closed.

use std::{
    future::Future,
    io,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use nix::unistd::Gid;
use serde_json::Value;
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{
        unix::{OwnedReadHalf, OwnedWriteHalf},
        UnixListener, UnixStream,
    },
    sync::{watch, Semaphore},
    task::JoinSet,
};
use tracing::{debug, info, warn};

use super::protocol::{parse_request, Command, ErrorBody, ErrorCode, Response, MAX_LINE};

/// Connections served at once; one more gets an `internal` error reply and is closed.
pub const MAX_CONNECTIONS: usize = 256;

/// How long shutdown waits for connections to finish the request they are handling.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How long, and how much input, a connection closed after an error reply is drained.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// Who is on the other end of a connection (from `SO_PEERCRED`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups of the peer process (from `/proc/<pid>/status`), when known.
    pub groups: Vec<u32>,
}

/// Executes commands. The agent implements this (its state behind a read-write lock:
/// read-only commands share it, changes take it alone); calls run on a blocking thread,
/// one per request, possibly several at once.
pub trait Handler: Send + Sync {
    fn handle(&self, cmd: Command, peer: &Peer) -> Result<Value, ErrorBody>;
}

/// Whether `peer` may use the admin socket: root, or a member (primary or supplementary)
/// of the admin `group` when one is configured.
pub fn authorize(peer: &Peer, group: Option<Gid>) -> Result<(), ErrorBody> {
    if peer.uid == 0 {
        return Ok(());
    }
    if let Some(g) = group {
        let g = g.as_raw();
        if peer.gid == g || peer.groups.contains(&g) {
            return Ok(());
        }
        return Err(ErrorBody::new(
            ErrorCode::Forbidden,
            format!(
                "uid {} is neither root nor in the admin group (gid {g})",
                peer.uid
            ),
        ));
    }
    Err(ErrorBody::new(
        ErrorCode::Forbidden,
        format!(
            "uid {} is not root (no admin group is configured)",
            peer.uid
        ),
    ))
}

/// Creates the socket at `path`: makes its directory if missing, replaces a stale socket
/// (one nothing answers on), refuses to replace anything else, and sets the mode (0600,
/// or 0660 and group `group`).
pub fn bind(path: &Path, group: Option<Gid>) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{}: another agent is listening there", path.display()),
                ));
            }
            debug!(path = %path.display(), "removing stale admin socket");
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: exists and is not a socket", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    // Connections are also checked by peer credentials, so the short window before the
    // chmod gives nobody access.
    let mode = if let Some(g) = group {
        std::os::unix::fs::chown(path, None, Some(g.as_raw()))?;
        0o660
    } else {
        0o600
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Serves the admin socket at `path` until `shutdown` completes, then removes the socket
/// file. Connections get up to two seconds to finish the request in hand.
pub async fn serve(
    path: &Path,
    group: Option<Gid>,
    handler: Arc<dyn Handler>,
    shutdown: impl Future,
) -> io::Result<()> {
    let listener = bind(path, group)?;
    info!(path = %path.display(), group = ?group.map(|g| g.as_raw()), "admin socket listening");
    let result = serve_listener(listener, group, handler, shutdown).await;
    let _ = std::fs::remove_file(path);
    result
}

/// [`serve`] on a listener made by [`bind`] (for callers that must know the socket
/// exists before serving starts). Does not remove the socket file.
pub async fn serve_listener(
    listener: UnixListener,
    group: Option<Gid>,
    handler: Arc<dyn Handler>,
    shutdown: impl Future,
) -> io::Result<()> {
    serve_limited(listener, group, handler, shutdown, MAX_CONNECTIONS).await
}

pub(crate) async fn serve_limited(
    listener: UnixListener,
    group: Option<Gid>,
    handler: Arc<dyn Handler>,
    shutdown: impl Future,
    max_connections: usize,
) -> io::Result<()> {
    let (closing_tx, closing_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        warn!("admin socket accept: {e}");
                        // Out of descriptors and the like: do not spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let permit = slots.clone().try_acquire_owned().ok();
                let handler = handler.clone();
                let closing = closing_rx.clone();
                tasks.spawn(async move {
                    let Some(_permit) = permit else {
                        let mut stream = stream;
                        let body = ErrorBody::new(
                            ErrorCode::Internal,
                            format!("too many admin connections (limit {max_connections})"),
                        );
                        let _ = stream.write_all(Response::err(0, body).to_line().as_bytes()).await;
                        let (read, write) = stream.into_split();
                        linger_close(read, write).await;
                        return;
                    };
                    if let Err(e) = connection(stream, group, handler, closing).await {
                        debug!("admin connection: {e}");
                    }
                });
                // Reap finished connections so the set does not grow without bound.
                while tasks.try_join_next().is_some() {}
            }
        }
    }
    let _ = closing_tx.send(true);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    Ok(())
}

fn peer_of(stream: &UnixStream) -> io::Result<Peer> {
    let cred = stream.peer_cred()?;
    let pid = cred.pid().unwrap_or(0);
    Ok(Peer {
        pid,
        uid: cred.uid(),
        gid: cred.gid(),
        groups: if pid > 0 {
            supplementary_groups(pid)
        } else {
            Vec::new()
        },
    })
}

/// The `Groups:` line of `/proc/<pid>/status` (empty when unreadable).
fn supplementary_groups(pid: i32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/status"))) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

async fn connection(
    stream: UnixStream,
    group: Option<Gid>,
    handler: Arc<dyn Handler>,
    mut closing: watch::Receiver<bool>,
) -> io::Result<()> {
    let peer = peer_of(&stream)?;
    let (read, mut write) = stream.into_split();
    if let Err(body) = authorize(&peer, group) {
        warn!(
            uid = peer.uid,
            pid = peer.pid,
            gid = peer.gid,
            "admin connection refused: {body}"
        );
        write
            .write_all(Response::err(0, body).to_line().as_bytes())
            .await?;
        linger_close(read, write).await;
        return Ok(());
    }
    debug!(uid = peer.uid, pid = peer.pid, "admin connection");
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    loop {
        let line = tokio::select! {
            line = read_line(&mut reader, &mut buf, MAX_LINE) => line?,
            _ = closing.wait_for(|c| *c) => return Ok(()),
        };
        let line = match line {
            Line::Eof => return Ok(()),
            Line::TooLong => {
                let body = ErrorBody::new(
                    ErrorCode::TooLong,
                    format!("request line longer than {MAX_LINE} bytes; closing the connection"),
                );
                warn!(uid = peer.uid, pid = peer.pid, "admin request too long");
                write
                    .write_all(Response::err(0, body).to_line().as_bytes())
                    .await?;
                linger_close(reader.into_inner(), write).await;
                return Ok(());
            }
            Line::Full(l) => l,
        };
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            continue;
        }
        let response = match parse_request(trimmed) {
            Err((id, body)) => {
                debug!(uid = peer.uid, pid = peer.pid, "bad admin request: {body}");
                Response::err(id, body)
            }
            Ok(req) => {
                let id = req.id;
                dispatch(&handler, req.cmd, &peer)
                    .await
                    .map_or_else(|e| Response::err(id, e), |v| Response::ok(id, v))
            }
        };
        write.write_all(response.to_line().as_bytes()).await?;
    }
}

/// Closes a connection after a final error reply so that the client can read it:
/// closing with unread input would make the kernel reset the connection, and the client
/// could lose the reply. Shuts down the writing side, then discards input until the
/// client closes, for at most [`LINGER`] and [`LINGER_BYTES`].
async fn linger_close(mut read: OwnedReadHalf, mut write: OwnedWriteHalf) {
    let _ = write.shutdown().await;
    let _ = tokio::time::timeout(LINGER, async {
        let mut scratch = vec![0u8; 16 * 1024];
        let mut total = 0usize;
        while total < LINGER_BYTES {
            match read.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

async fn dispatch(
    handler: &Arc<dyn Handler>,
    cmd: Command,
    peer: &Peer,
) -> Result<Value, ErrorBody> {
    let mutating = cmd.is_mutating();
    let name = cmd.name();
    if mutating {
        info!(
            uid = peer.uid,
            gid = peer.gid,
            pid = peer.pid,
            command = name,
            args = %serde_json::to_string(&cmd).unwrap_or_default(),
            "admin command"
        );
    }
    let handler = handler.clone();
    let p = peer.clone();
    let result = tokio::task::spawn_blocking(move || handler.handle(cmd, &p))
        .await
        .unwrap_or_else(|e| {
            Err(ErrorBody::new(
                ErrorCode::Internal,
                format!("the command failed: {e}"),
            ))
        });
    if mutating {
        match &result {
            Ok(_) => info!(
                uid = peer.uid,
                pid = peer.pid,
                command = name,
                "admin command done"
            ),
            Err(e) => warn!(
                uid = peer.uid,
                pid = peer.pid,
                command = name,
                "admin command failed: {e}"
            ),
        }
    }
    result
}

/// One step of [`read_line`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    Full(Vec<u8>),
    Eof,
    TooLong,
}

/// Reads one `\n`-terminated line of at most `max` bytes (newline excluded), never
/// buffering more than `max` bytes plus one read. Cancel-safe: a partial line stays in
/// `buf` for the next call. A last line without a newline counts as a line.
pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(if buf.is_empty() {
                Line::Eof
            } else {
                Line::Full(std::mem::take(buf))
            });
        }
        if let Some(i) = avail.iter().position(|&b| b == b'\n') {
            if buf.len() + i > max {
                buf.clear();
                return Ok(Line::TooLong);
            }
            buf.extend_from_slice(&avail[..i]);
            r.consume(i + 1);
            return Ok(Line::Full(std::mem::take(buf)));
        }
        let n = avail.len();
        if buf.len() + n > max {
            buf.clear();
            return Ok(Line::TooLong);
        }
        buf.extend_from_slice(avail);
        r.consume(n);
    }
}
