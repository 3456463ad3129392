//! `cargo xtask demo`: lb on a namespace topology, driven the way an operator would.
//!
//! Builds `client ── veth ── lb`, starts the real `lb-agent` on the load balancer's
//! interface in native XDP mode, sends real traffic from the client (ping, a TCP
//! exchange, a UDP burst), and prints what the agent counted. Tears everything down at
//! the end unless `--keep` is given. Exits non-zero if any request failed.
//!
//! The load-balancing part (VIPs, backends, Maglev) joins this demo as it lands.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    process::{ExitCode, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{bail, ensure, Context as _};
use lb_tests::netns::{require_root, ChildGuard, Topology};

const LB4: &str = "198.18.1.1";
const CLIENT4: &str = "198.18.1.2";

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

fn demo(keep: bool) -> anyhow::Result<()> {
    require_root()?;
    let agent_bin = agent_binary()?;

    step("building the topology: client [c0] ── veth ── [l0] lb");
    let mut topo = Topology::new("lb-demo")?;
    let client = topo.add_ns("client")?;
    let lb = topo.add_ns("lb")?;
    topo.veth(&client, "c0", &lb, "l0")?;
    client.addr("c0", &format!("{CLIENT4}/24"))?;
    lb.addr("l0", &format!("{LB4}/24"))?;

    step("starting lb-agent on l0 (native XDP)");
    let mut cmd = lb.command(
        agent_bin.to_str().context("agent path is not UTF-8")?,
        &["run", "--iface", "l0", "--stats-interval", "1"],
    );
    cmd.stderr(Stdio::piped())
        .stdout(Stdio::null())
        .env("RUST_LOG", "info");
    let mut agent = ChildGuard::new(cmd.spawn().context("starting lb-agent")?, "lb-agent");
    let log = follow_log(&mut agent)?;
    wait_for_line(&log, "XDP program attached", Duration::from_secs(10))?;
    let link = lb.run("ip", &["-d", "link", "show", "l0"])?;
    let attached = String::from_utf8_lossy(&link.stdout)
        .lines()
        .find(|l| l.contains("prog/xdp"))
        .map(str::trim)
        .map(str::to_owned)
        .context("lb-agent reported success but l0 has no XDP program")?;
    println!("    l0: {attached}");

    step("client → lb: ping");
    client
        .run("ping", &["-c", "3", "-i", "0.2", "-W", "2", LB4])
        .context("ping through the XDP program")?;
    println!("    3/3 replies");

    step("client → lb: TCP request to a service on the host");
    let addr: SocketAddr = format!("{LB4}:8080").parse()?;
    let listener = lb.enter(|| TcpListener::bind(addr))??;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut c, _) = listener.accept()?;
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf)?;
        c.write_all(b"pong")
    });
    let reply = client.enter(|| -> std::io::Result<[u8; 4]> {
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        c.set_read_timeout(Some(Duration::from_secs(3)))?;
        c.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf)?;
        Ok(buf)
    })??;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("TCP server thread panicked"))??;
    ensure!(&reply == b"pong", "unexpected TCP reply {reply:?}");
    println!("    reply \"pong\"");

    step("client → lb: 1000 UDP datagrams");
    let udp: SocketAddr = format!("{LB4}:9000").parse()?;
    let rx = lb.enter(|| -> std::io::Result<UdpSocket> {
        let s = UdpSocket::bind(udp)?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        Ok(s)
    })??;
    let receiver = std::thread::spawn(move || {
        let mut n = 0u32;
        let mut buf = [0u8; 1500];
        while n < 1000 && rx.recv(&mut buf).is_ok() {
            n += 1;
        }
        n
    });
    client.enter(|| -> std::io::Result<()> {
        let tx = UdpSocket::bind("0.0.0.0:0")?;
        for i in 0..1000u32 {
            tx.send_to(&[0u8; 64], udp)?;
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(())
    })??;
    let received = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("UDP receiver thread panicked"))?;
    println!("    {received}/1000 received by the host");
    ensure!(received == 1000, "{} UDP datagrams lost", 1000 - received);

    // Let the agent log one more summary, then show it.
    std::thread::sleep(Duration::from_millis(1200));
    let counters = drain(&log)
        .into_iter()
        .rev()
        .find(|l| l.contains("packet counters"))
        .context("lb-agent logged no counters")?;
    step("what the data plane counted (lb-agent log)");
    println!("    {}", counters.trim());

    if keep {
        println!(
            "\n--keep: left running. Namespaces {p}-client and {p}-lb; lb-agent pid {pid}.\n\
             Try: ip netns exec {p}-client ping {LB4}\n\
             Clean up: kill {pid}; ip netns del {p}-client; ip netns del {p}-lb\n\
             (or run the demo again: it removes leftovers first)",
            p = topo.prefix(),
            pid = agent.pid(),
        );
        std::mem::forget(agent);
        std::mem::forget(topo);
        return Ok(());
    }

    step("stopping lb-agent (SIGTERM): it detaches and leaves nothing behind");
    let status = agent.stop()?;
    ensure!(status.success(), "lb-agent exited with {status}");
    let link = lb.run("ip", &["-d", "link", "show", "l0"])?;
    if String::from_utf8_lossy(&link.stdout).contains("prog/xdp") {
        bail!("l0 still has an XDP program after lb-agent stopped");
    }
    drop(topo);
    println!("\nlb demo: all requests succeeded");
    Ok(())
}

fn step(what: &str) {
    println!("==> {what}");
}

/// Forwards the agent's log lines to a channel from a reader thread.
fn follow_log(agent: &mut ChildGuard) -> anyhow::Result<mpsc::Receiver<String>> {
    let stderr = agent
        .take_stderr()
        .context("lb-agent stderr was not piped")?;
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

fn wait_for_line(
    log: &mpsc::Receiver<String>,
    needle: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match log.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return Ok(()),
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    bail!(
        "lb-agent did not log {needle:?}; its log:\n{}",
        seen.join("\n")
    )
}

fn drain(log: &mpsc::Receiver<String>) -> Vec<String> {
    log.try_iter().collect()
}
