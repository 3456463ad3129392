//! `cargo xtask demo`: lb balancing real HTTP traffic, driven the way an operator would.
//!
//! ```text
//!   client [c0] ── [l0] lb [l1] ── [b0] be0 198.18.11.2
//!                          [l2] ── [b1] be1 198.18.12.2
//!                          [l3] ── [b2] be2 198.18.13.2
//! ```
//! The load balancer runs the real `lb-agent run --config examples/lb.toml` (native XDP on
//! l0); each backend holds the VIPs on `lo`, serves HTTP on port 80 and answers UDP on
//! port 53, and runs `lb-agent decap` on its interface (the XDP receive path redirected
//! frames need; it would also strip tunnels). The client sends real HTTP requests and UDP
//! queries to the VIP and the demo prints where they went. Tears everything down unless
//! `--keep`; exits non-zero if any request failed.
//!
//! Health checks, draining and the admin socket join this demo as they land.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    process::{ExitCode, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _};
use lb_tests::{
    lbnet::disable_tx_checksum_offload,
    netns::{require_root, ChildGuard, Ns, Topology},
};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 1);
const LB: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
const BACKENDS: usize = 3;
const HTTP_REQUESTS: usize = 300;
const UDP_QUERIES: usize = 300;

fn backend(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 11 + i as u8, 2)
}
fn gateway(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 11 + i as u8, 1)
}

fn main() -> ExitCode {
    let keep = std::env::args().any(|a| a == "--keep");
    match demo(keep) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb demo FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn agent_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("LB_AGENT_BIN") {
        return Ok(p.into());
    }
    let me = std::env::current_exe().context("locating the demo binary")?;
    let sibling = me.with_file_name("lb-agent");
    ensure!(
        sibling.exists(),
        "no lb-agent next to {}; run the demo through `cargo xtask demo`, or set LB_AGENT_BIN",
        me.display()
    );
    Ok(sibling)
}

fn config_file() -> PathBuf {
    std::env::var_os("LB_DEMO_CONFIG").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/lb.toml")),
        PathBuf::from,
    )
}

fn step(what: &str) {
    println!("==> {what}");
}

/// Stop flag and threads of the backends' servers.
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            // A panicked server thread has already reported itself; nothing to add.
            let _ = t.join();
        }
    }
}

fn demo(keep: bool) -> anyhow::Result<()> {
    require_root()?;
    let agent_bin = agent_binary()?;
    let agent = agent_bin.to_str().context("agent path is not UTF-8")?;
    let config = config_file();
    ensure!(config.exists(), "no configuration at {}", config.display());

    step(
        "building the topology: client ── lb ── be0, be1, be2 (the addresses of examples/lb.toml)",
    );
    let mut topo = Topology::new("lb-demo")?;
    let client = topo.add_ns("client")?;
    let lb = topo.add_ns("lb")?;
    topo.veth(&client, "c0", &lb, "l0")?;
    client.addr("c0", &format!("{CLIENT}/24"))?;
    lb.addr("l0", &format!("{LB}/24"))?;
    // A local veth hands over partial checksums that XDP forwarding cannot carry; real
    // clients on a wire send complete ones (see docs/dataplane.md).
    disable_tx_checksum_offload(&client, "c0")?;
    client.route(&["198.18.200.0/24", "via", &LB.to_string()])?;
    lb.sysctl("net.ipv4.conf.all.forwarding", "1")?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut servers = Servers {
        stop: stop.clone(),
        threads: Vec::new(),
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
        servers.threads.extend(start_servers(&ns, i, stop.clone())?);
        let mut cmd = ns.command(
            agent,
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
        wait_for_line(&log, "decapsulating", Duration::from_secs(10))?;
        decaps.push(d);
        backends.push(ns);
    }
    println!(
        "    backends: HTTP on {VIP}:80 and UDP on {VIP}:53 (on lo), lb-agent decap on b0..b2"
    );

    step(&format!(
        "starting lb-agent run --iface l0 --config {}",
        config.display()
    ));
    let config_str = config.to_str().context("config path is not UTF-8")?;
    let mut cmd = lb.command(
        agent,
        &[
            "run",
            "--iface",
            "l0",
            "--config",
            config_str,
            "--stats-interval",
            "1",
        ],
    );
    cmd.stderr(Stdio::piped())
        .stdout(Stdio::null())
        .env("RUST_LOG", "info");
    let mut agent_proc = ChildGuard::new(cmd.spawn().context("starting lb-agent")?, "lb-agent");
    let log = follow_log(&mut agent_proc)?;
    let startup = wait_for_line(&log, "XDP program attached", Duration::from_secs(15))?;
    for line in startup.iter().filter(|l| {
        l.contains("ring installed")
            || l.contains("configuration applied")
            || l.contains("egress interfaces")
    }) {
        println!("    {}", strip_timestamp(line));
    }
    // The agent prompted neighbour resolution for every target; give the replies a moment.
    std::thread::sleep(Duration::from_millis(300));

    step(&format!(
        "client → http://{VIP}/ : {HTTP_REQUESTS} requests, a new connection each"
    ));
    let (http, http_failed) = client.enter(|| http_requests(HTTP_REQUESTS))?;
    print_shares(&http, HTTP_REQUESTS);
    println!("    {http_failed} failed");

    step(&format!(
        "client → udp {VIP}:53 : {UDP_QUERIES} queries from fixed source ports"
    ));
    let (udp, udp_failed) = client.enter(|| udp_queries(UDP_QUERIES))?;
    print_shares(&udp, UDP_QUERIES);
    println!("    {udp_failed} failed");

    std::thread::sleep(Duration::from_millis(1200));
    step("what the data plane counted (lb-agent log)");
    if let Some(line) = drain(&log)
        .into_iter()
        .rev()
        .find(|l| l.contains("packet counters"))
    {
        println!("    {}", strip_timestamp(&line));
    }

    if keep {
        println!(
            "\n--keep: left running (namespaces {p}-client, {p}-lb, {p}-be0..2; lb-agent pid {pid}).\n\
             Try:      ip netns exec {p}-client curl -s http://{VIP}/\n\
             Reload:   kill -HUP {pid}   (after editing {cfg})\n\
             Clean up: run the demo again (it removes leftovers first), or kill {pid} and\n\
             \x20         ip -all netns delete",
            p = topo.prefix(),
            pid = agent_proc.pid(),
            cfg = config.display(),
        );
        std::mem::forget(agent_proc);
        std::mem::forget(decaps);
        std::mem::forget(servers);
        std::mem::forget(topo);
        return Ok(());
    }

    step("stopping lb-agent (SIGTERM): it detaches and leaves nothing behind");
    let status = agent_proc.stop()?;
    ensure!(status.success(), "lb-agent exited with {status}");
    let link = lb.run("ip", &["-d", "link", "show", "l0"])?;
    if String::from_utf8_lossy(&link.stdout).contains("prog/xdp") {
        bail!("l0 still has an XDP program after lb-agent stopped");
    }
    drop(decaps);
    drop(servers);
    drop(topo);
    let failed = http_failed + udp_failed;
    ensure!(failed == 0, "{failed} requests failed");
    println!(
        "\nlb demo: all {} requests succeeded",
        HTTP_REQUESTS + UDP_QUERIES
    );
    Ok(())
}

/// HTTP (one response per connection, body = the backend's name) and UDP (reply = the
/// backend's name) servers on the VIP, in `ns`, until `stop`.
fn start_servers(ns: &Ns, i: usize, stop: Arc<AtomicBool>) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let name = format!("be{i}");
    let (tcp, udp) = ns.enter(|| -> std::io::Result<(TcpListener, UdpSocket)> {
        let tcp = TcpListener::bind(SocketAddr::new(VIP.into(), 80))?;
        tcp.set_nonblocking(true)?;
        let udp = UdpSocket::bind(SocketAddr::new(VIP.into(), 53))?;
        udp.set_read_timeout(Some(Duration::from_millis(100)))?;
        Ok((tcp, udp))
    })??;
    let (http_name, http_stop) = (name.clone(), stop.clone());
    let http = std::thread::spawn(move || {
        while !http_stop.load(Ordering::Relaxed) {
            match tcp.accept() {
                Ok((conn, _)) => serve_http(conn, &http_name),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    let udp_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((_, from)) = udp.recv_from(&mut buf) {
                // A lost reply shows up as a failed query on the client.
                let _ = udp.send_to(name.as_bytes(), from);
            }
        }
    });
    Ok(vec![http, udp_thread])
}

fn serve_http(mut conn: TcpStream, name: &str) {
    let served = (|| -> std::io::Result<()> {
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut line = String::new();
        // Read the request head (up to the blank line).
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
        }
        let body = format!("{name}\n");
        write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    })();
    if let Err(e) = served {
        eprintln!("    {name}: HTTP request failed: {e}");
    }
}

/// `n` HTTP GETs to the VIP, each on a new connection; counts answers per backend.
fn http_requests(n: usize) -> ([usize; BACKENDS], usize) {
    let mut counts = [0; BACKENDS];
    let mut failed = 0;
    for _ in 0..n {
        match http_get() {
            Ok(i) => counts[i] += 1,
            Err(e) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("    request failed: {e:#}");
                }
            }
        }
    }
    (counts, failed)
}

fn http_get() -> anyhow::Result<usize> {
    let mut c =
        TcpStream::connect_timeout(&SocketAddr::new(VIP.into(), 80), Duration::from_secs(2))?;
    c.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        c,
        "GET / HTTP/1.1\r\nHost: {VIP}\r\nUser-Agent: lb-demo\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    c.read_to_string(&mut response)?;
    ensure!(
        response.starts_with("HTTP/1.1 200 "),
        "unexpected response {response:?}"
    );
    let body = response
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .trim();
    backend_index(body).with_context(|| format!("unexpected body {body:?}"))
}

/// `n` UDP queries, each from its own fixed source port; counts answers per backend.
fn udp_queries(n: usize) -> ([usize; BACKENDS], usize) {
    let mut counts = [0; BACKENDS];
    let mut failed = 0;
    for k in 0..n {
        let asked = (|| -> anyhow::Result<usize> {
            let s = UdpSocket::bind(SocketAddr::new(CLIENT.into(), 20000 + k as u16))?;
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
        })();
        match asked {
            Ok(i) => counts[i] += 1,
            Err(_) => failed += 1,
        }
    }
    (counts, failed)
}

fn backend_index(name: &str) -> Option<usize> {
    name.strip_prefix("be")?
        .parse()
        .ok()
        .filter(|i| *i < BACKENDS)
}

fn print_shares(counts: &[usize; BACKENDS], total: usize) {
    for (i, c) in counts.iter().enumerate() {
        let pct = 100.0 * *c as f64 / total.max(1) as f64;
        println!(
            "    be{i} ({}): {c:>4}  {pct:5.1}%  {}",
            backend(i),
            "#".repeat((pct / 2.0) as usize)
        );
    }
}

fn strip_timestamp(line: &str) -> &str {
    // tracing's compact format: "<timestamp>  INFO <target>: <message>".
    line.split_once("  ")
        .map_or(line, |(_, rest)| rest.trim_start())
}

/// Forwards a child's log lines to a channel from a reader thread.
fn follow_log(child: &mut ChildGuard) -> anyhow::Result<mpsc::Receiver<String>> {
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

/// Waits for a log line containing `needle`; returns every line seen up to it.
fn wait_for_line(
    log: &mpsc::Receiver<String>,
    needle: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match log.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains(needle);
                seen.push(line);
                if done {
                    return Ok(seen);
                }
            }
            Err(_) => break,
        }
    }
    bail!("did not see {needle:?} in the log:\n{}", seen.join("\n"))
}

fn drain(log: &mpsc::Receiver<String>) -> Vec<String> {
    log.try_iter().collect()
}
