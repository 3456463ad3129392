//! Fault matrix, hostile health-check targets: HTTP targets that trickle their response
//! a byte at a time, send an endless body, or reset mid-response, and exec checks that
//! hang, fork children and exit, print megabytes, or print forever — all checked every
//! second while client load runs through the VIP on the example's healthy targets.
//!
//! Each hostile target must get the verdict an operator expects (with NLB's reason), and
//! the agent must stay itself: its memory and descriptors bounded, its admin socket
//! answering, no process left behind, and nothing lost on the healthy VIPs.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _};
use lb_agent::admin::protocol::Command;
use lb_tests::{
    faults::{footprint, footprint_text, under_load, FaultNet},
    netns::Ns,
};
use serde_json::Value;

/// The hostile HTTP targets, on be0's link (they answer on port 9000 there).
const TRICKLE: Ipv4Addr = Ipv4Addr::new(198, 18, 11, 11);
const ENDLESS_BODY: Ipv4Addr = Ipv4Addr::new(198, 18, 11, 12);
const RESET: Ipv4Addr = Ipv4Addr::new(198, 18, 11, 13);
/// Exec targets: nothing listens there; the script's behaviour follows the address.
const HANG: Ipv4Addr = Ipv4Addr::new(198, 18, 11, 21);
const FORKS: Ipv4Addr = Ipv4Addr::new(198, 18, 11, 22);
const MEGABYTES: Ipv4Addr = Ipv4Addr::new(198, 18, 11, 23);
const ENDLESS_OUTPUT: Ipv4Addr = Ipv4Addr::new(198, 18, 11, 24);
const HOSTILE_PORT: u16 = 9000;

/// The exec check's program. `sleep` durations are unusual so the test can count exactly
/// the processes its checks started.
const SCRIPT: &str = r#"case "$LB_TARGET_ADDRESS" in
198.18.11.21) exec sleep 3611 ;;
198.18.11.22) for i in 1 2 3 4 5 6 7 8; do sleep 3622 >/dev/null 2>&1 & done; sleep 3622 & exit 0 ;;
198.18.11.23) head -c 4194304 /dev/zero | tr '\0' x; echo; echo weight=50 ;;
198.18.11.24) exec yes ;;
esac"#;

fn extra_config() -> String {
    let targets = |addresses: &[Ipv4Addr]| -> String {
        (addresses.iter())
            .map(|a| format!("[[target_group.target]]\naddress = \"{a}\"\n"))
            .collect()
    };
    let http_targets = targets(&[TRICKLE, ENDLESS_BODY, RESET]);
    let exec_targets = targets(&[HANG, FORKS, MEGABYTES, ENDLESS_OUTPUT]);
    let command = serde_json::to_string(&["/bin/sh", "-c", SCRIPT]).unwrap_or_default();
    format!(
        r#"
[[vip]]
name = "hostile-http"
address = "198.18.200.2"
port = 9000
protocol = "tcp"
mode = "dr"
target_group = "hostile-http"

[[vip]]
name = "hostile-exec"
address = "198.18.200.2"
port = 9001
protocol = "tcp"
mode = "dr"
target_group = "hostile-exec"

[[target_group]]
name = "hostile-http"
{http_targets}
[target_group.health_check]
protocol = "http"
port = {HOSTILE_PORT}
body = "x"
interval_secs = 1
timeout_secs = 1
healthy_threshold = 2
unhealthy_threshold = 2

[[target_group]]
name = "hostile-exec"
{exec_targets}
[target_group.health_check]
protocol = "exec"
command = {command}
interval_secs = 1
timeout_secs = 1
healthy_threshold = 2
unhealthy_threshold = 2
"#
    )
}

/// The hostile HTTP servers in be0's namespace; they stop when dropped.
struct Hostile {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// The most body bytes the endless server got into one connection.
    endless_most: Arc<AtomicU64>,
    endless_conns: Arc<AtomicU64>,
}

impl Hostile {
    fn start(ns: &Ns) -> anyhow::Result<Self> {
        for a in [TRICKLE, ENDLESS_BODY, RESET] {
            ns.addr("b0", &format!("{a}/24"))?;
        }
        let bind = |a: Ipv4Addr| -> anyhow::Result<TcpListener> {
            let l = ns.enter(|| TcpListener::bind(SocketAddr::new(a.into(), HOSTILE_PORT)))??;
            l.set_nonblocking(true)?;
            Ok(l)
        };
        let stop = Arc::new(AtomicBool::new(false));
        let endless_most = Arc::new(AtomicU64::new(0));
        let endless_conns = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        let serve = |l: TcpListener, f: fn(TcpStream, &AtomicBool, &AtomicU64, &AtomicU64)| {
            let (stop, most, conns) = (stop.clone(), endless_most.clone(), endless_conns.clone());
            std::thread::spawn(move || {
                let mut handlers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((c, _)) => {
                            let (stop, most, conns) = (stop.clone(), most.clone(), conns.clone());
                            handlers.push(std::thread::spawn(move || f(c, &stop, &most, &conns)));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                    handlers.retain(|h: &JoinHandle<()>| !h.is_finished());
                }
                for h in handlers {
                    let _ = h.join();
                }
            })
        };
        threads.push(serve(bind(TRICKLE)?, trickle));
        threads.push(serve(bind(ENDLESS_BODY)?, endless_body));
        threads.push(serve(bind(RESET)?, reset_mid_response));
        Ok(Self {
            stop,
            threads,
            endless_most,
            endless_conns,
        })
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Reads the request head (bounded), so the response follows a real request.
fn read_request(c: &mut TcpStream) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
}

/// A valid response, one byte every 100 ms, for at most 30 s.
fn trickle(mut c: TcpStream, stop: &AtomicBool, _: &AtomicU64, _: &AtomicU64) {
    read_request(&mut c);
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
    let deadline = Instant::now() + Duration::from_secs(30);
    for b in response.iter().cycle() {
        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            return;
        }
        if c.write_all(&[*b]).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 200 with a 1 GiB body (its first byte matches the check's `body`), written as fast
/// as the client takes it, until it closes; records how much it took.
fn endless_body(mut c: TcpStream, stop: &AtomicBool, most: &AtomicU64, conns: &AtomicU64) {
    read_request(&mut c);
    conns.fetch_add(1, Ordering::Relaxed);
    let _ = c.set_write_timeout(Some(Duration::from_secs(5)));
    if c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
        .is_err()
    {
        return;
    }
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) && sent < (1 << 30) {
        match c.write(&chunk) {
            Ok(n) => sent += n as u64,
            Err(_) => break,
        }
        most.fetch_max(sent, Ordering::Relaxed);
    }
}

/// Half a response head, then a reset.
fn reset_mid_response(mut c: TcpStream, _: &AtomicBool, _: &AtomicU64, _: &AtomicU64) {
    read_request(&mut c);
    let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Le");
    let _ = c.flush();
    std::thread::sleep(Duration::from_millis(20));
    // A zero linger makes the close a reset.
    let _ = nix::sys::socket::setsockopt(
        &c,
        nix::sys::socket::sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    );
}

/// Processes whose command line is `sleep <secs>`.
fn count_sleeps(secs: &str) -> usize {
    let want = format!("sleep\0{secs}\0");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want.as_bytes()))
        .count()
}

fn target(list: &Value, address: Ipv4Addr) -> anyhow::Result<&Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .find(|b| b["address"] == address.to_string())
        .with_context(|| format!("{address} is not in the backend list: {list}"))
}

#[test]
fn hostile_health_check_targets() -> anyhow::Result<()> {
    let f = FaultNet::start("lbt-fhealth", &extra_config(), &[])?;
    let hostile = Hostile::start(&f.net.backends[0])?;
    let pid = f.agent.as_ref().context("agent")?.process.pid();
    let before = footprint(pid)?;

    let (report, (verdicts, slowest_reply, during, sleeps)) = under_load(
        &f.net,
        "hostile health-check targets, 12 s of checks every second",
        Duration::from_millis(500),
        Duration::ZERO,
        || {
            let started = Instant::now();
            let mut slowest = Duration::ZERO;
            let mut during = before;
            let mut sleeps = Vec::new();
            let mut list = Value::Null;
            while started.elapsed() < Duration::from_secs(12) {
                let asked = Instant::now();
                list = f.ctl(Command::BackendList { group: None })?;
                slowest = slowest.max(asked.elapsed());
                let now = footprint(pid)?;
                during = (during.0.max(now.0), during.1.max(now.1));
                sleeps.push((count_sleeps("3611"), count_sleeps("3622")));
                std::thread::sleep(Duration::from_millis(500));
            }
            Ok((list, slowest, during, sleeps))
        },
    )?;
    let endless_most = (
        hostile.endless_most.load(Ordering::Relaxed),
        hostile.endless_conns.load(Ordering::Relaxed),
    );
    drop(hostile);
    let after = footprint(pid)?;

    let show = |a: Ipv4Addr| -> anyhow::Result<String> {
        let t = target(&verdicts, a)?;
        Ok(format!(
            "{a}: {} {} ({}), weight {}",
            t["state"].as_str().unwrap_or("?"),
            t["reason"].as_str().unwrap_or("-"),
            t["detail"].as_str().unwrap_or("-"),
            t["effective_weight"]
        ))
    };
    for a in [
        TRICKLE,
        ENDLESS_BODY,
        RESET,
        HANG,
        FORKS,
        MEGABYTES,
        ENDLESS_OUTPUT,
    ] {
        println!("  {}", show(a)?);
    }
    println!(
        "  endless body: {} connections, at most {} KiB sent into one; agent {}; slowest admin reply {} ms; leftover sleeps (hang, forks) per sample {:?}",
        endless_most.1,
        endless_most.0 / 1024,
        footprint_text(before, during, after),
        slowest_reply.as_millis(),
        sleeps
    );

    let expect = |a: Ipv4Addr, state: &str, reason: Option<&str>| -> anyhow::Result<()> {
        let t = target(&verdicts, a)?;
        ensure!(
            t["state"] == state && reason.is_none_or(|r| t["reason"] == r),
            "{a}: expected {state} {reason:?}, got {t}"
        );
        Ok(())
    };
    // A response that never completes within the timeout is a timeout.
    expect(TRICKLE, "unhealthy", Some("Target.Timeout"))?;
    // 200 with the text at the start of the body: healthy, whatever follows.
    expect(ENDLESS_BODY, "healthy", None)?;
    expect(RESET, "unhealthy", Some("Target.FailedHealthChecks"))?;
    let reset = target(&verdicts, RESET)?;
    ensure!(
        reset["detail"]
            .as_str()
            .is_some_and(|d| d.contains("reset")),
        "the detail does not say the target reset the connection: {reset}"
    );
    expect(HANG, "unhealthy", Some("Target.Timeout"))?;
    // Exit 0 is healthy, even when the program leaves children (they are killed).
    expect(FORKS, "healthy", None)?;
    // Megabytes of output are read; the weight line after them counts.
    expect(MEGABYTES, "healthy", None)?;
    let mb = target(&verdicts, MEGABYTES)?;
    ensure!(
        mb["effective_weight"].as_f64() == Some(0.5),
        "the weight line after 4 MiB of output was lost: {mb}"
    );
    expect(ENDLESS_OUTPUT, "unhealthy", Some("Target.Timeout"))?;

    // The agent reads at most 64 KiB of a body; what the server got into one connection
    // beyond that is socket buffers (a few MiB on a veth at most).
    ensure!(
        endless_most.0 < 8 << 20,
        "the endless body was read: {} bytes into one connection",
        endless_most.0
    );
    // Leftover children: the hanging check's sleep lives only while a check runs (at
    // most one at a time), the forking check's children not at all beyond a check in
    // progress (9 at most, for milliseconds).
    ensure!(
        sleeps.iter().all(|(hang, forks)| *hang <= 1 && *forks <= 9),
        "exec checks left processes behind: {sleeps:?}"
    );
    ensure!(
        count_sleeps("3622") + count_sleeps("3611") <= 10,
        "leftover processes"
    );
    ensure!(
        slowest_reply < Duration::from_secs(1),
        "the admin socket stalled for {slowest_reply:?}"
    );
    ensure!(
        during.0 < before.0 + 64 * 1024 && during.1 < before.1 + 256,
        "the agent grew: RSS {} → {} KiB, fds {} → {}",
        before.0,
        during.0,
        before.1,
        during.1
    );
    report.assert_nothing_lost()?;
    Ok(())
}
