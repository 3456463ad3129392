//! A namespace topology driven by the real binaries, for the demo and the agent's
//! end-to-end tests (where `lbnet` drives the data plane in-process instead).
//!
//! ```text
//!   client [c0] ── [l0] lb [l1] ── [b0] be0 198.18.11.2
//!                          [l2] ── [b1] be1 198.18.12.2
//!                          [l3] ── [b2] be2 198.18.13.2
//! ```
//! The addresses are those of `examples/lb.toml`. Each backend holds [`VIP`] on `lo` and
//! serves HTTP on port 80 of every address (one response per connection; the VIP for
//! clients, its own address for health checks; [`AgentNet::set_http`] makes it fail in
//! the ways health checks must notice), a line protocol on port 8080
//! (each line answered with the backend's name, connection kept open) and UDP on port 53,
//! and runs `lb-agent decap` on its interface. The agent runs as
//! `nsenter --net=… lb-agent run --iface l0 …`: in the host's mount namespace, so the
//! state it pins survives it, as on a real host.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicBool, AtomicU8, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _};

use crate::{
    lbnet::disable_tx_checksum_offload,
    netns::{require_root, ChildGuard, Ns, Topology},
};

pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 1);
pub const LB: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 1);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
pub const BACKENDS: usize = 3;
/// The line-protocol port (long-lived connections).
pub const LINE_PORT: u16 = 8080;

pub fn backend(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 11 + i as u8, 2)
}

fn gateway(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 11 + i as u8, 1)
}

/// The backend index a reply names (`be<i>`).
pub fn backend_index(name: &str) -> Option<usize> {
    name.trim()
        .strip_prefix("be")?
        .parse()
        .ok()
        .filter(|i| *i < BACKENDS)
}

/// The `lb-agent` binary: `LB_AGENT_BIN`, else next to the running executable or one
/// directory up (test binaries live in `target/<profile>/deps`).
pub fn agent_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("LB_AGENT_BIN") {
        return Ok(p.into());
    }
    let me = std::env::current_exe().context("locating the running binary")?;
    let dir = me.parent().context("binary has no directory")?;
    for candidate in [dir.join("lb-agent"), dir.join("../lb-agent")] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!(
        "no lb-agent binary near {}; build it (`cargo build -p lb-agent`, which `cargo xtask test` does) or set LB_AGENT_BIN",
        me.display()
    )
}

/// The repository's example configuration (the demo's).
pub fn example_config() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/lb.toml"))
}

struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Each backend's HTTP behaviour ([`HttpMode`] as u8).
    http: Vec<Arc<AtomicU8>>,
}

/// How a backend's HTTP server on port 80 behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum HttpMode {
    /// 200 with the backend's name.
    Up = 0,
    /// The listener is closed: connections are refused (the server was killed).
    Refuse = 1,
    /// Connections are accepted and never answered (a hung server).
    Hang = 2,
    /// Every request is answered 500.
    Error = 3,
}

impl HttpMode {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Refuse,
            2 => Self::Hang,
            3 => Self::Error,
            _ => Self::Up,
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            // A panicked server thread already reported itself.
            let _ = t.join();
        }
    }
}

/// A running agent and its log.
pub struct Agent {
    pub process: ChildGuard,
    pub log: mpsc::Receiver<String>,
    /// Log lines up to the one saying the data plane is live.
    pub startup: Vec<String>,
}

pub struct AgentNet {
    // Held for their Drop. Field order is drop order: agent processes and servers go
    // before the namespaces.
    _decaps: Vec<ChildGuard>,
    _servers: Servers,
    pub backends: Vec<Ns>,
    pub client: Ns,
    pub lb: Ns,
    pub topo: Topology,
    pub agent_bin: PathBuf,
}

impl AgentNet {
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        require_root()?;
        let agent_bin = agent_binary()?;
        let agent = agent_bin
            .to_str()
            .context("agent path is not UTF-8")?
            .to_owned();
        let mut topo = Topology::new(prefix)?;
        let client = topo.add_ns("client")?;
        let lb = topo.add_ns("lb")?;
        topo.veth(&client, "c0", &lb, "l0")?;
        configure_ingress(&client, &lb)?;
        lb.sysctl("net.ipv4.conf.all.forwarding", "1")?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut servers = Servers {
            stop: stop.clone(),
            threads: Vec::new(),
            http: Vec::new(),
        };
        let mut decaps = Vec::new();
        let mut backends = Vec::new();
        for i in 0..BACKENDS {
            let ns = topo.add_ns(&format!("be{i}"))?;
            let (lif, bif) = (format!("l{}", i + 1), format!("b{i}"));
            topo.veth(&lb, &lif, &ns, &bif)?;
            lb.addr(&lif, &format!("{}/24", gateway(i)))?;
            ns.addr(&bif, &format!("{}/24", backend(i)))?;
            ns.addr("lo", &format!("{VIP}/32"))?;
            ns.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
            ns.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
            ns.route(&["default", "via", &gateway(i).to_string()])?;
            let mode = Arc::new(AtomicU8::new(HttpMode::Up as u8));
            servers
                .threads
                .extend(start_servers(&ns, i, stop.clone(), mode.clone())?);
            servers.http.push(mode);
            let mut cmd = ns.command(
                &agent,
                &[
                    "decap",
                    "--iface",
                    &bif,
                    "--address",
                    &backend(i).to_string(),
                ],
            );
            cmd.stdout(Stdio::null())
                .stderr(Stdio::piped())
                .env("RUST_LOG", "info");
            let mut d = ChildGuard::new(
                cmd.spawn().context("starting lb-agent decap")?,
                format!("lb-agent decap on be{i}"),
            );
            let log = follow_log(&mut d)?;
            wait_for_line(&log, &["decapsulating"], Duration::from_secs(10))?;
            decaps.push(d);
            backends.push(ns);
        }
        Ok(Self {
            _decaps: decaps,
            _servers: servers,
            backends,
            client,
            lb,
            topo,
            agent_bin,
        })
    }

    /// The client's link to lb (c0 – l0) deleted before, made again as [`AgentNet::new`]
    /// made it: the pair, its addresses, the client's VIP route.
    pub fn recreate_ingress(&self) -> anyhow::Result<()> {
        self.client.ip(&[
            "link",
            "add",
            "c0",
            "type",
            "veth",
            "peer",
            "name",
            "l0",
            "netns",
            &self.lb.name,
        ])?;
        self.client.ip(&["link", "set", "c0", "up"])?;
        self.lb.ip(&["link", "set", "l0", "up"])?;
        configure_ingress(&self.client, &self.lb)
    }

    /// Starts `lb-agent run --iface l0 --config <config> <extra…>` in the lb namespace
    /// and waits until it says the data plane is live (attached, or adopted).
    pub fn start_agent(&self, config: &Path, extra: &[&str]) -> anyhow::Result<Agent> {
        self.start_agent_in(None, config, extra)
    }

    /// [`AgentNet::start_agent`] in the mount namespace `mount_ns` (a `/proc/<pid>/ns/mnt`)
    /// when given, else the host's.
    pub fn start_agent_in(
        &self,
        mount_ns: Option<&Path>,
        config: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Agent> {
        let agent = self.agent_bin.to_str().context("agent path is not UTF-8")?;
        let config = config.to_str().context("config path is not UTF-8")?;
        let mut args = vec!["run", "--iface", "l0", "--config", config];
        args.extend_from_slice(extra);
        let mut cmd = match mount_ns {
            None => self.lb.command_net_only(agent, &args),
            // nsenter opens every namespace before it enters any: the network one's path
            // is the host's.
            Some(mnt) => {
                let mut cmd = std::process::Command::new("nsenter");
                cmd.arg(format!("--mount={}", mnt.display()))
                    .arg(format!("--net={}", self.lb.path().display()))
                    .arg(agent)
                    .args(&args)
                    .stdin(Stdio::null());
                cmd
            }
        };
        cmd.stderr(Stdio::piped())
            .stdout(Stdio::null())
            .env("RUST_LOG", "info");
        let mut process = ChildGuard::new(cmd.spawn().context("starting lb-agent")?, "lb-agent");
        let log = follow_log(&mut process)?;
        let startup = wait_for_line(
            &log,
            &["XDP program attached", "adopted the running data plane"],
            Duration::from_secs(20),
        )?;
        Ok(Agent {
            process,
            log,
            startup,
        })
    }

    /// `lb-agent down --iface l0 --grace-secs 0`: withdraws the VIP routes, then detaches
    /// and unpins what the agent left running (no grace period: no router here).
    pub fn down(&self) -> anyhow::Result<()> {
        let agent = self.agent_bin.to_str().context("agent path is not UTF-8")?;
        let out = self
            .lb
            .command_net_only(agent, &["down", "--iface", "l0", "--grace-secs", "0"])
            .output()
            .context("running lb-agent down")?;
        ensure!(
            out.status.success(),
            "lb-agent down failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Whether l0 has an XDP program attached.
    pub fn attached(&self) -> anyhow::Result<bool> {
        let link = self.lb.run("ip", &["-d", "link", "show", "l0"])?;
        Ok(String::from_utf8_lossy(&link.stdout).contains("prog/xdp"))
    }

    /// Makes backend `i`'s HTTP server on port 80 behave as `mode` from now on.
    pub fn set_http(&self, i: usize, mode: HttpMode) {
        if let Some(m) = self._servers.http.get(i) {
            m.store(mode as u8, Ordering::Relaxed);
        }
    }

    /// The id of the XDP program the kernel runs on l0 (`prog/xdp id N` in `ip -d link`).
    pub fn xdp_program_id(&self) -> anyhow::Result<Option<u32>> {
        let link = self.lb.run("ip", &["-d", "link", "show", "l0"])?;
        let text = String::from_utf8_lossy(&link.stdout);
        let Some(rest) = text.split("prog/xdp id ").nth(1) else {
            return Ok(None);
        };
        let id = rest.split_whitespace().next().unwrap_or_default();
        Ok(Some(id.parse().with_context(|| {
            format!("unexpected `ip -d link` output: {text}")
        })?))
    }

    /// Where the agent pins l0's state: `lb-agent run` in the lb namespace scopes it by
    /// the namespace's name.
    pub fn pin_dir(&self) -> PathBuf {
        Path::new(lb_agent::dataplane::PIN_ROOT)
            .join(format!("netns-{}-lb", self.topo.prefix()))
            .join("l0")
    }

    /// The pinned XDP link on l0: its kernel id (the same id means the attachment was
    /// never torn down) and the id of the program it runs.
    pub fn xdp_link(&self) -> anyhow::Result<(u32, u32)> {
        let path = self.pin_dir().join("link");
        let pinned = aya::programs::links::PinnedLink::from_pin(&path)
            .with_context(|| format!("opening the pinned link {}", path.display()))?;
        // Only this handle closes on drop; the pin, and so the attachment, stays.
        let info = aya::programs::links::FdLink::from(pinned)
            .info()
            .with_context(|| format!("reading the link info of {}", path.display()))?;
        Ok((info.id(), info.program_id()))
    }

    /// The kernel id of every map pinned for l0, by name.
    pub fn pinned_map_ids(&self) -> anyhow::Result<Vec<(&'static str, u32)>> {
        lb_common::maps::SPECS
            .iter()
            .map(|s| Ok((s.name, self.pinned_map_id(s.name)?)))
            .collect()
    }

    /// The kernel id of the map `name` pinned for l0 (the same id means the same map,
    /// entries and all).
    pub fn pinned_map_id(&self, name: &str) -> anyhow::Result<u32> {
        let path = self.pin_dir().join("maps").join(name);
        let info = aya::maps::MapInfo::from_pin(&path)
            .with_context(|| format!("reading the pinned map {}", path.display()))?;
        Ok(info.id())
    }
}

impl Drop for AgentNet {
    fn drop(&mut self) {
        // Whatever an agent left pinned for l0 goes with the topology.
        if let Ok(agent) = self.agent_bin.clone().into_os_string().into_string() {
            let _ = self
                .lb
                .command_net_only(&agent, &["down", "--iface", "l0", "--grace-secs", "0"])
                .output();
        }
    }
}

/// The client end of the ingress link (c0, made up) and lb's (l0): addresses, the
/// client's VIP route, checksum offload off.
fn configure_ingress(client: &Ns, lb: &Ns) -> anyhow::Result<()> {
    client.addr("c0", &format!("{CLIENT}/24"))?;
    lb.addr("l0", &format!("{LB}/24"))?;
    // A local veth hands over partial checksums that XDP forwarding cannot carry;
    // real clients on a wire send complete ones (docs/dataplane.md).
    disable_tx_checksum_offload(client, "c0")?;
    client.route(&["198.18.200.0/24", "via", &LB.to_string()])
}

/// HTTP on :80, the line protocol on :8080 and UDP on :53, all on the VIP, in `ns`.
fn start_servers(
    ns: &Ns,
    i: usize,
    stop: Arc<AtomicBool>,
    http_mode: Arc<AtomicU8>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let name = format!("be{i}");
    let (line, udp) = ns.enter(|| -> std::io::Result<(TcpListener, UdpSocket)> {
        let line = TcpListener::bind(SocketAddr::new(VIP.into(), LINE_PORT))?;
        line.set_nonblocking(true)?;
        // Replies must come from the VIP (direct server return), so bound to it.
        let udp = UdpSocket::bind(SocketAddr::new(VIP.into(), 53))?;
        udp.set_read_timeout(Some(Duration::from_millis(100)))?;
        Ok((line, udp))
    })??;
    let http = bind_http(ns)?;
    let mut threads = Vec::new();
    let (n, st, ns2) = (name.clone(), stop.clone(), ns.clone());
    threads.push(std::thread::spawn(move || {
        http_loop(http, &ns2, &st, &http_mode, &n)
    }));
    let (n, st) = (name.clone(), stop.clone());
    threads.push(std::thread::spawn(move || {
        let mut conns = Vec::new();
        accept_loop(&line, &st, |c| {
            let (n, st) = (n.clone(), st.clone());
            conns.push(std::thread::spawn(move || serve_lines(c, &n, &st)));
        });
        for c in conns {
            let _ = c.join();
        }
    }));
    threads.push(std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((_, from)) = udp.recv_from(&mut buf) {
                // A lost reply shows up as a failed query on the client.
                let _ = udp.send_to(name.as_bytes(), from);
            }
        }
    }));
    Ok(threads)
}

/// Port 80 on every address of the backend: the VIP for clients, its own address for
/// the load balancer's health checks.
fn bind_http(ns: &Ns) -> anyhow::Result<TcpListener> {
    let l = ns.enter(|| TcpListener::bind(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 80)))??;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves HTTP as the backend's [`HttpMode`] says, closing and re-opening the listener
/// for [`HttpMode::Refuse`].
fn http_loop(first: TcpListener, ns: &Ns, stop: &AtomicBool, mode: &AtomicU8, name: &str) {
    let mut listener = Some(first);
    let mut hung = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let m = HttpMode::from_u8(mode.load(Ordering::Relaxed));
        if m == HttpMode::Refuse {
            listener = None;
            hung.clear();
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        if m != HttpMode::Hang {
            hung.clear();
        }
        let Some(l) = listener.as_ref() else {
            match bind_http(ns) {
                Ok(l) => listener = Some(l),
                Err(e) => {
                    eprintln!("{name}: re-opening port 80: {e:#}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            continue;
        };
        match l.accept() {
            Ok((conn, _)) => match m {
                // Held open, never answered, until the mode changes.
                HttpMode::Hang => hung.push(conn),
                HttpMode::Error => serve_http(conn, name, "500 Internal Server Error"),
                _ => serve_http(conn, name, "200 OK"),
            },
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Accepts on the non-blocking `l` until `stop`, handing each connection to `serve`.
pub(crate) fn accept_loop(l: &TcpListener, stop: &AtomicBool, mut serve: impl FnMut(TcpStream)) {
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((conn, _)) => serve(conn),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// One HTTP response with `status` and the body `name`, after reading the request.
/// Shared with the fleet's backends.
pub(crate) fn serve_http(mut conn: TcpStream, name: &str, status: &str) {
    let served = (|| -> std::io::Result<()> {
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
        }
        let body = format!("{name}\n");
        write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    })();
    match served {
        // TCP health checks connect and reset without a request.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => eprintln!("{name}: HTTP request failed: {e}"),
        Ok(()) => {}
    }
}

/// The line protocol on one connection: every whole line is answered with `name`, until
/// the client closes or `stop` is set. Shared with the fleet's backends.
pub(crate) fn serve_lines(conn: TcpStream, name: &str, stop: &AtomicBool) {
    let served = (|| -> std::io::Result<()> {
        conn.set_nonblocking(false)?;
        // Wakes up to look at the stop flag.
        conn.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut writer = conn.try_clone()?;
        let mut reader = BufReader::new(conn);
        let mut line = String::new();
        while !stop.load(Ordering::Relaxed) {
            match reader.read_line(&mut line) {
                Ok(0) => return Ok(()),
                // A whole line: answer it. (A partial one stays in `line` until the rest
                // arrives after a timeout.)
                Ok(_) if line.ends_with('\n') => {
                    line.clear();
                    writeln!(writer, "{name}")?;
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })();
    match served {
        // Health checks on the line port connect and close; a client a test gave up on
        // resets. Neither is the server's failure.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => eprintln!("{name}: line connection failed: {e}"),
        Ok(()) => {}
    }
}

/// One HTTP GET to the VIP on a new connection: the backend that answered.
pub fn http_get() -> anyhow::Result<usize> {
    http_get_from(SocketAddr::new(VIP.into(), 80), Duration::from_secs(2))
}

/// One HTTP GET on a new connection to `to` (from inside the client's namespace),
/// `timeout` bounding the connect and the reply: the backend that answered.
pub fn http_get_from(to: SocketAddr, timeout: Duration) -> anyhow::Result<usize> {
    let mut c = TcpStream::connect_timeout(&to, timeout)?;
    c.set_read_timeout(Some(timeout))?;
    write!(
        c,
        "GET / HTTP/1.1\r\nHost: {}\r\nUser-Agent: lb\r\nConnection: close\r\n\r\n",
        to.ip()
    )?;
    let mut response = String::new();
    c.read_to_string(&mut response)?;
    ensure!(
        response.starts_with("HTTP/1.1 200 "),
        "unexpected response {response:?}"
    );
    let body = response.rsplit("\r\n\r\n").next().unwrap_or_default();
    backend_index(body).with_context(|| format!("unexpected body {body:?}"))
}

/// One UDP query to the VIP from `sport`: the backend that answered.
pub fn udp_query(sport: u16) -> anyhow::Result<usize> {
    let s = UdpSocket::bind(SocketAddr::new(CLIENT.into(), sport))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.send_to(b"query", SocketAddr::new(VIP.into(), 53))?;
    let mut buf = [0u8; 64];
    let (len, from) = s.recv_from(&mut buf)?;
    ensure!(
        from.ip() == IpAddr::V4(VIP),
        "reply from {from}, not the VIP"
    );
    let body = std::str::from_utf8(&buf[..len])?;
    backend_index(body).with_context(|| format!("unexpected reply {body:?}"))
}

/// A long-lived line-protocol connection to the VIP.
pub struct LineConn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl LineConn {
    /// To the VIP's line port.
    pub fn open() -> anyhow::Result<Self> {
        Self::connect(
            SocketAddr::new(VIP.into(), LINE_PORT),
            Duration::from_secs(2),
        )
    }

    /// To `to` (from inside the client's namespace); `timeout` bounds the connect and
    /// every later request.
    pub fn connect(to: SocketAddr, timeout: Duration) -> anyhow::Result<Self> {
        let c = TcpStream::connect_timeout(&to, timeout)?;
        c.set_read_timeout(Some(timeout))?;
        c.set_nodelay(true)?;
        Ok(Self {
            writer: c.try_clone()?,
            reader: BufReader::new(c),
        })
    }

    /// Sets how long a request may wait for its answer.
    pub fn set_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        self.reader.get_ref().set_read_timeout(Some(timeout))
    }

    /// The client's source port: with the client's address, the VIP and the port, the
    /// flow's 4-tuple (for `ctl flow`).
    pub fn local_port(&self) -> anyhow::Result<u16> {
        Ok(self.writer.local_addr()?.port())
    }

    /// One request: the backend that answered.
    pub fn ask(&mut self) -> anyhow::Result<usize> {
        writeln!(self.writer, "ping")?;
        let mut line = String::new();
        ensure!(self.reader.read_line(&mut line)? > 0, "connection closed");
        backend_index(&line).with_context(|| format!("unexpected reply {line:?}"))
    }
}

/// Forwards a child's stderr lines to a channel from a reader thread.
pub fn follow_log(child: &mut ChildGuard) -> anyhow::Result<mpsc::Receiver<String>> {
    let stderr = child.take_stderr().context("stderr was not piped")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// Waits for a log line containing any of `needles`; returns every line up to it.
pub fn wait_for_line(
    log: &mpsc::Receiver<String>,
    needles: &[&str],
    timeout: Duration,
) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match log.recv_timeout(left) {
            Ok(line) => {
                let done = needles.iter().any(|n| line.contains(n));
                seen.push(line);
                if done {
                    return Ok(seen);
                }
            }
            Err(_) => break,
        }
    }
    bail!("did not see {needles:?} in the log:\n{}", seen.join("\n"))
}
