//! Server tests over a real socket, with a fake handler.

use std::{
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::UnixStream,
    sync::oneshot,
};

use super::{
    protocol::{Command, ErrorBody, ErrorCode, Request, Response, MAX_LINE, PROTOCOL_VERSION},
    server::{self, authorize, Handler, Peer},
};

/// A fresh directory under /tmp, removed on drop.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = PathBuf::from(format!(
            "/tmp/lb-admin-test-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Answers every command with its own name and arguments; records what it was asked.
#[derive(Default)]
pub(crate) struct FakeHandler {
    pub(crate) seen: Mutex<Vec<(Command, Peer)>>,
}

impl Handler for FakeHandler {
    fn handle(&self, cmd: Command, peer: &Peer) -> Result<Value, ErrorBody> {
        self.seen
            .lock()
            .expect("lock")
            .push((cmd.clone(), peer.clone()));
        match &cmd {
            Command::VipShow { name } if name == "missing" => Err(ErrorBody::new(
                ErrorCode::NotFound,
                format!("no VIP {name:?}"),
            )),
            Command::VipShow { name } if name == "panic" => panic!("handler bug"),
            Command::VipShow { name } if name == "slow" => {
                std::thread::sleep(Duration::from_millis(300));
                Ok(json!({"slow": true}))
            }
            Command::VipAdd { .. } => Err(ErrorBody::new(
                ErrorCode::Unsupported,
                "vip add is not supported yet",
            )),
            Command::Apply { path, .. } if path.ends_with("bad.toml") => Err(ErrorBody::new(
                ErrorCode::InvalidConfig,
                "line 1: expected a table",
            )),
            Command::Stats => {
                std::thread::sleep(Duration::from_millis(1));
                Ok(json!({"echo": cmd, "uid": peer.uid}))
            }
            _ => Ok(json!({"echo": cmd, "uid": peer.uid})),
        }
    }
}

pub(crate) struct Running {
    _dir: TempDir,
    pub(crate) path: PathBuf,
    pub(crate) handler: Arc<FakeHandler>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    pub(crate) async fn start() -> Self {
        Self::start_with_group(None).await
    }

    pub(crate) async fn start_with_group(group: Option<nix::unistd::Gid>) -> Self {
        let dir = TempDir::new();
        let path = dir.0.join("admin.sock");
        let handler = Arc::new(FakeHandler::default());
        let listener = server::bind(&path, group).expect("bind");
        let (stop, rx) = oneshot::channel::<()>();
        let h: Arc<dyn Handler> = handler.clone();
        let task = tokio::spawn(async move {
            server::serve_listener(listener, group, h, async move {
                let _ = rx.await;
            })
            .await
        });
        Running {
            _dir: dir,
            path,
            handler,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub(crate) async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("join").expect("serve");
        }
    }
}

struct Conn {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl Conn {
    async fn open(path: &Path) -> Self {
        let s = UnixStream::connect(path).await.expect("connect");
        let (r, w) = s.into_split();
        Conn {
            reader: BufReader::new(r),
            writer: w,
        }
    }

    async fn send_raw(&mut self, line: &[u8]) {
        self.writer.write_all(line).await.expect("write");
    }

    async fn recv(&mut self) -> Option<Response> {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), self.reader.read_line(&mut line))
            .await
            .expect("response in time")
            .expect("read");
        if n == 0 {
            return None;
        }
        assert!(line.ends_with('\n'));
        Some(serde_json::from_str(&line).expect("response is JSON"))
    }

    async fn call(&mut self, id: u64, cmd: Command) -> Response {
        let req = Request {
            id,
            v: PROTOCOL_VERSION,
            cmd,
        };
        let mut line = serde_json::to_string(&req).expect("json");
        line.push('\n');
        self.send_raw(line.as_bytes()).await;
        self.recv().await.expect("a response")
    }

    async fn call_raw(&mut self, line: &str) -> Response {
        self.send_raw(line.as_bytes()).await;
        self.send_raw(b"\n").await;
        self.recv().await.expect("a response")
    }
}

fn err_code(r: &Response) -> ErrorCode {
    assert!(!r.ok, "{r:?}");
    assert!(r.result.is_none());
    r.error.as_ref().expect("error body").code
}

#[tokio::test]
#[cfg_attr(
    not(feature = "privileged-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
async fn every_command_round_trips() {
    let srv = Running::start().await;
    let mut c = Conn::open(&srv.path).await;
    for (i, cmd) in crate::admin::protocol::tests::sample_commands()
        .into_iter()
        .enumerate()
    {
        let id = 100 + i as u64;
        let r = c.call(id, cmd.clone()).await;
        assert_eq!(r.id, id);
        if matches!(cmd, Command::VipAdd { .. }) {
            assert_eq!(err_code(&r), ErrorCode::Unsupported);
            continue;
        }
        assert!(r.ok, "{r:?}");
        let echoed = &r.result.expect("result")["echo"];
        assert_eq!(echoed, &serde_json::to_value(&cmd).expect("json"));
    }
    let seen = srv.handler.seen.lock().expect("lock").len();
    assert_eq!(seen, crate::admin::protocol::tests::sample_commands().len());
    // The peer is this process.
    let peer = srv.handler.seen.lock().expect("lock")[0].1.clone();
    assert_eq!(peer.pid as u32, std::process::id());
    assert_eq!(peer.uid, nix::unistd::getuid().as_raw());
    srv.stop().await;
}

#[tokio::test]
#[cfg_attr(
    not(feature = "privileged-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
async fn handler_errors_are_replies() {
    let srv = Running::start().await;
    let mut c = Conn::open(&srv.path).await;
    let r = c
        .call(
            1,
            Command::VipShow {
                name: "missing".into(),
            },
        )
        .await;
    assert_eq!(err_code(&r), ErrorCode::NotFound);
    assert_eq!(r.id, 1);
    let r = c
        .call(
            2,
            Command::Apply {
                path: "/x/bad.toml".into(),
                dry_run: false,
            },
        )
        .await;
    assert_eq!(err_code(&r), ErrorCode::InvalidConfig);
    let r = c.call(3, Command::Status).await;
    assert!(r.ok);
    srv.stop().await;
}

#[tokio::test]
#[cfg_attr(
    not(feature = "privileged-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
async fn garbage_gets_bad_request_and_the_connection_survives() {
    let srv = Running::start().await;
    let mut c = Conn::open(&srv.path).await;
    for (line, id) in [
        ("this is not json", 0),
        ("{\"id\":5,", 0),
        ("[]", 0),
        ("null", 0),
        ("{\"id\":\"five\",\"v\":1,\"cmd\":\"status\"}", 0),
        ("{\"id\":6,\"v\":1,\"cmd\":\"vip_show\"}", 6),
        ("{\"id\":7,\"v\":1,\"cmd\":\"vip_show\",\"name\":3}", 7),
        ("{\"id\":8,\"v\":1,\"cmd\":\"status\",\"extra\":1}", 8),
        ("{\"id\":9,\"v\":1}", 9),
        ("\u{0}\u{1}\u{ff}binary", 0),
    ] {
        let r = c.call_raw(line).await;
        assert_eq!(err_code(&r), ErrorCode::BadRequest, "{line}");
        assert_eq!(r.id, id, "{line}");
    }
    // Invalid UTF-8.
    c.send_raw(b"\xff\xfe{\"id\":1}\n").await;
    let r = c.recv().await.expect("response");
    assert_eq!(err_code(&r), ErrorCode::BadRequest);
    // Empty lines are skipped, and the connection still works.
    c.send_raw(b"\n\r\n  \n").await;
    let r = c.call(77, Command::Status).await;
    assert!(r.ok && r.id == 77, "{r:?}");
    // Nothing reached the handler but the last request.
    assert_eq!(srv.handler.seen.lock().expect("lock").len(), 1);
    srv.stop().await;
}

#[tokio::test]
#[cfg_attr(
    not(feature = "privileged-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
async fn unknown_command_and_wrong_version() {
    let srv = Running::start().await;
    let mut c = Conn::open(&srv.path).await;
    let r = c.call_raw(r#"{"id":11,"v":1,"cmd":"reboot"}"#).await;
    assert_eq!(err_code(&r), ErrorCode::UnknownCommand);
    assert_eq!(r.id, 11);
    let r = c.call_raw(r#"{"id":12,"v":2,"cmd":"status"}"#).await;
    assert_eq!(err_code(&r), ErrorCode::Version);
    assert_eq!(r.id, 12);
    let r = c.call_raw(r#"{"id":13,"v":0,"cmd":"down"}"#).await;
    assert_eq!(err_code(&r), ErrorCode::Version);
    assert!(srv.handler.seen.lock().expect("lock").is_empty());
    let r = c.call(14, Command::Stats).await;
    assert!(r.ok);
    srv.stop().await;
}

#[tokio::test]
#[cfg_attr(
    not(feature = "privileged-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
async fn oversized_line_is_refused_and_closes() {
    let srv = Running::start().await;
    let mut c = Conn::open(&srv.path).await;
    // 100 KiB without a newline: the server answers before the line ends.
    let big = vec![b'a'; 100 * 1024];
    // Writing may fail once the server has closed: that is fine.
    let _ = c.writer.write_all(&big).await;
    let r = c.recv().await.expect("a too_long response");
    assert_eq!(err_code(&r), ErrorCode::TooLong);
    assert_eq!(r.id, 0);
    assert!(c.recv().await.is_none(), "connection closed");

    // Exactly MAX_LINE is still accepted (as garbage here), MAX_LINE + 1 is not.
    let mut c = Conn::open(&srv.path).await;
    let mut line = vec![b' '; MAX_LINE];
    line.push(b'x');
    line.push(b'\n');
    c.send_raw(&line[1..]).await;
    let r = c.recv().await.expect("response");
    assert_eq!(err_code(&r), ErrorCode::BadRequest);
    c.send_raw(&line).await;
    let r = c.recv().await.expect("response");
    assert_eq!(err_code(&r), ErrorCode::TooLong);
    assert!(c.recv().await.is_none(), "connection closed");

    // A valid request padded to 100 KiB with spaces is refused too.
    let mut c = Conn::open(&srv.path).await;
    let mut line = String::from(r#"{"id":1,"v":1,"cmd":"status"}"#);
    line.push_str(&" ".repeat(100 * 1024));
    line.push('\n');
    let _ = c.writer.write_all(line.as_bytes()).await;
    let r = c.recv().await.expect("response");
    assert_eq!(err_code(&r), ErrorCode::TooLong);
    assert!(srv.handler.seen.lock().expect("lock").is_empty());

    // The server still serves others.
    let mut c = Conn::open(&srv.path).await;
    assert!(c.call(1, Command::Status).await.ok);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(feature = "privileged-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
async fn many_concurrent_clients() {
    let srv = Running::start().await;
    let mut tasks = Vec::new();
    for client in 0..50u64 {
        let path = srv.path.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(&path).await;
            // Pipelined: send all 20, then read all 20 in order.
            let mut out = String::new();
            for i in 0..20u64 {
                let req = Request {
                    id: client * 1000 + i,
                    v: PROTOCOL_VERSION,
                    cmd: if i % 2 == 0 {
                        Command::Stats
                    } else {
                        Command::VipShow {
                            name: format!("vip-{client}-{i}"),
                        }
                    },
                };
                out.push_str(&serde_json::to_string(&req).expect("json"));
                out.push('\n');
            }
            c.send_raw(out.as_bytes()).await;
            for i in 0..20u64 {
                let r = c.recv().await.expect("response");
                assert!(r.ok, "{r:?}");
                assert_eq!(r.id, client * 1000 + i);
                if i % 2 == 1 {
                    assert_eq!(
                        r.result.expect("result")["echo"]["name"],
                        json!(format!("vip-{client}-{i}"))
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    assert_eq!(srv.handler.seen.lock().expect("lock").len(), 50 * 20);
    srv.stop().await;
}

#[tokio::test]
#[cfg_attr(
    not(feature = "privileged-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
async fn socket_mode_and_stale_socket() {
    let dir = TempDir::new();
    let path = dir.0.join("run/lb/admin.sock");
    {
        let _l = server::bind(&path, None).expect("bind");
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // A second agent must not steal a live socket.
        let e = server::bind(&path, None).expect_err("in use");
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    }
    // The listener is gone, the file remains: stale, replaced.
    assert!(path.exists());
    let _l = server::bind(&path, None).expect("rebind over a stale socket");
    drop(_l);
    // Not a socket: left alone.
    let file = dir.0.join("plain");
    std::fs::write(&file, b"data").expect("write");
    let e = server::bind(&file, None).expect_err("not a socket");
    assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(&file).expect("read"), b"data");

    // With a group: 0660 and that group.
    let gpath = dir.0.join("g.sock");
    let gid = nix::unistd::Gid::from_raw(65534);
    assert!(
        nix::unistd::getuid().is_root(),
        "setting the socket's group needs root: run the tests through `cargo xtask test`"
    );
    {
        let _l = server::bind(&gpath, Some(gid)).expect("bind");
        let meta = std::fs::symlink_metadata(&gpath).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 65534);
    }
}

#[tokio::test]
#[cfg_attr(
    not(feature = "privileged-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
async fn serve_removes_its_socket_on_shutdown() {
    let dir = TempDir::new();
    let path = dir.0.join("admin.sock");
    let (tx, rx) = oneshot::channel::<()>();
    let p = path.clone();
    let task = tokio::spawn(async move {
        server::serve(&p, None, Arc::new(FakeHandler::default()), async move {
            let _ = rx.await;
        })
        .await
    });
    for _ in 0..200 {
        if UnixStream::connect(&path).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut c = Conn::open(&path).await;
    assert!(c.call(1, Command::Down { grace_secs: None }).await.ok);
    tx.send(()).expect("stop");
    task.await.expect("join").expect("serve");
    assert!(!path.exists());
    // The idle connection was closed.
    let mut rest = Vec::new();
    let n = c.reader.read_to_end(&mut rest).await.expect("read");
    assert_eq!(n, 0);
}

#[test]
fn authorize_rules() {
    let root = Peer {
        pid: 1,
        uid: 0,
        gid: 0,
        groups: vec![],
    };
    let user = Peer {
        pid: 2,
        uid: 1000,
        gid: 1000,
        groups: vec![27, 100],
    };
    let gid = |g| Some(nix::unistd::Gid::from_raw(g));
    assert!(authorize(&root, None).is_ok());
    assert!(authorize(&root, gid(5)).is_ok());
    assert_eq!(
        authorize(&user, None).expect_err("refused").code,
        ErrorCode::Forbidden
    );
    assert_eq!(
        authorize(&user, gid(5)).expect_err("refused").code,
        ErrorCode::Forbidden
    );
    assert!(authorize(&user, gid(1000)).is_ok(), "primary group");
    assert!(authorize(&user, gid(100)).is_ok(), "supplementary group");
}

/// A client running as nobody (via `setpriv`) is refused: by the file mode (0600), and
/// by the peer-credential check when the file mode would let it in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "privileged-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
async fn non_root_client_is_refused() {
    require_drop_privileges();
    let srv = Running::start().await;
    let run = |path: PathBuf| run_as_nobody(NOBODY_CLIENT, path);
    // The file mode keeps nobody out.
    assert_eq!(run(srv.path.clone()).await, "EACCES");
    // Open the file up: the credential check still refuses, and closes.
    std::fs::set_permissions(&srv.path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = run(srv.path.clone()).await;
    let r: Response = serde_json::from_str(&out).expect(&out);
    assert_eq!(err_code(&r), ErrorCode::Forbidden);
    assert!(
        srv.handler.seen.lock().expect("lock").is_empty(),
        "nothing ran"
    );
    srv.stop().await;
}

/// Connects to the socket in argv[1], sends `down`, prints the answer (or EACCES).
const NOBODY_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("EACCES"); sys.exit(0)
try:
    s.sendall(b'{"id":1,"v":1,"cmd":"down"}\n')
except BrokenPipeError:
    pass
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk: break
    data += chunk
    if data.endswith(b"\n") and b'"forbidden"' not in data: break
print(data.decode().strip())
"#;

/// Runs [`NOBODY_CLIENT`] as uid/gid 65534 without supplementary groups.
async fn run_as_nobody(script: &str, path: PathBuf) -> String {
    let out = tokio::process::Command::new("/usr/bin/setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            script,
        ])
        .arg(&path)
        .output()
        .await
        .expect("run setpriv");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The non-root client tests need root (to drop privileges) and setpriv + the system
/// python; `cargo xtask test` provides all three. Without them the tests fail with the
/// reason: a privileged test never passes silently.
fn require_drop_privileges() {
    assert!(
        nix::unistd::getuid().is_root(),
        "this test needs root to drop privileges: run it through `cargo xtask test`"
    );
    assert!(
        Path::new("/usr/bin/python3").exists() && Path::new("/usr/bin/setpriv").exists(),
        "this test needs /usr/bin/setpriv and /usr/bin/python3 (`cargo xtask setup` installs them)"
    );
}

/// With an admin group, a member that is not root gets in (file mode 0660 + group, and
/// the credential check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "privileged-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
async fn admin_group_member_is_allowed() {
    require_drop_privileges();
    let srv = Running::start_with_group(Some(nix::unistd::Gid::from_raw(65534))).await;
    let out = run_as_nobody(NOBODY_CLIENT, srv.path.clone()).await;
    let r: Response = serde_json::from_str(&out).expect(&out);
    assert!(r.ok, "{r:?}");
    assert_eq!(r.id, 1);
    let seen = srv.handler.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, Command::Down { grace_secs: None });
    assert_eq!((seen[0].1.uid, seen[0].1.gid), (65534, 65534));
    srv.stop().await;
}

#[tokio::test]
#[cfg_attr(
    not(feature = "privileged-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
async fn handler_panic_is_an_internal_error() {
    let srv = Running::start().await;
    let mut c = Conn::open(&srv.path).await;
    let r = c
        .call(
            5,
            Command::VipShow {
                name: "panic".into(),
            },
        )
        .await;
    assert_eq!(err_code(&r), ErrorCode::Internal);
    assert_eq!(r.id, 5);
    assert!(c.call(6, Command::Status).await.ok);
    srv.stop().await;
}

#[tokio::test]
#[cfg_attr(
    not(feature = "privileged-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
async fn shutdown_finishes_the_request_in_hand() {
    let srv = Running::start().await;
    let mut c = Conn::open(&srv.path).await;
    let req = Request {
        id: 9,
        v: PROTOCOL_VERSION,
        cmd: Command::VipShow {
            name: "slow".into(),
        },
    };
    let mut line = serde_json::to_string(&req).expect("json");
    line.push('\n');
    c.send_raw(line.as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stopping = tokio::spawn(srv.stop());
    let r = c.recv().await.expect("the answer arrives");
    assert!(r.ok && r.id == 9, "{r:?}");
    assert!(c.recv().await.is_none(), "then the connection closes");
    stopping.await.expect("stopped");
}

#[tokio::test]
#[cfg_attr(
    not(feature = "privileged-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
async fn connections_beyond_the_limit_are_refused() {
    let dir = TempDir::new();
    let path = dir.0.join("admin.sock");
    let listener = server::bind(&path, None).expect("bind");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server::serve_limited(
        listener,
        None,
        Arc::new(FakeHandler::default()),
        async move {
            let _ = rx.await;
        },
        2,
    ));
    let mut a = Conn::open(&path).await;
    let mut b = Conn::open(&path).await;
    assert!(a.call(1, Command::Status).await.ok);
    assert!(b.call(2, Command::Status).await.ok);
    let mut c = Conn::open(&path).await;
    let r = c.recv().await.expect("refusal");
    assert_eq!(err_code(&r), ErrorCode::Internal);
    assert!(r.error.expect("body").message.contains("too many"));
    assert!(c.recv().await.is_none());
    // Once one leaves, a newcomer is served.
    drop(a);
    let mut served = false;
    for _ in 0..100 {
        let mut d = Conn::open(&path).await;
        let r = d.call(3, Command::Status).await;
        if r.ok {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(served);
    assert!(b.call(4, Command::Status).await.ok);
    tx.send(()).expect("stop");
    task.await.expect("join").expect("serve");
}
