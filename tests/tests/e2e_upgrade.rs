//! Upgrade under load: the running data plane is replaced by a *different* eBPF object
//! while 20 long-lived TCP connections exchange a request every 0.3 s and a new
//! connection arrives every 0.1 s; then the embedded object comes back (a downgrade).
//!
//! The other object is lb-ebpf's `upgrade-variant` build: the same behaviour and ABI,
//! other instructions, as a new release would have. Each swap is a SIGTERM of the agent
//! and a new `lb-agent run` that adopts the pinned maps and link, its `bpf_link_update`
//! replacing the program atomically. After each swap: the program's id and tag changed
//! (and the kernel runs the new id), the XDP link is the same one, no request failed, no
//! long-lived connection broke or moved, the flow table is the same map and still holds
//! every long-lived flow, and no counter went down.
//!
//! `cargo xtask test` builds the variant and names it in LB_TEST_UPGRADE_OBJECT. Without
//! it this test fails: passing without having upgraded anything would prove nothing.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _};
use lb_agent::{
    admin::{
        client::call,
        protocol::{Command, FlowAnswer, Proto, StatusInfo},
    },
    dataplane::ProgramInfo,
};
use lb_tests::{
    agentnet::{
        backend, example_config, http_get, Agent, AgentNet, LineConn, CLIENT, LINE_PORT, VIP,
    },
    netns::StopOnDrop,
};
use nix::{sys::signal::Signal, unistd::Pid};
use serde_json::Value;

const LONG_LIVED: usize = 20;
const UPGRADE_OBJECT_VAR: &str = "LB_TEST_UPGRADE_OBJECT";
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The workload's shared state.
#[derive(Default)]
struct Load {
    stop: AtomicBool,
    failures: Mutex<Vec<String>>,
    requests: AtomicU64,
    new_conns: AtomicU64,
    /// Each long-lived connection's client port and the backend that answered it first.
    flows: Mutex<Vec<(u16, usize)>>,
    /// Set when l0 was seen without an XDP program.
    detached: Mutex<Vec<String>>,
}

impl Load {
    fn fail(&self, what: String) {
        if let Ok(mut f) = self.failures.lock() {
            f.push(what);
        }
    }

    /// One long-lived connection: asks every 0.3 s until stopped; whether it survived on
    /// the backend it started with.
    fn long_lived(&self, k: usize) -> bool {
        let mut conn = match LineConn::open().and_then(|c| Ok((c.local_port()?, c))) {
            Ok((port, c)) => (port, c),
            Err(e) => {
                self.fail(format!("long-lived {k}: open: {e:#}"));
                return false;
            }
        };
        let mut first = None;
        while !self.stop.load(Ordering::Relaxed) {
            match conn.1.ask() {
                Ok(b) if first.is_none() => {
                    first = Some(b);
                    if let Ok(mut flows) = self.flows.lock() {
                        flows.push((conn.0, b));
                    }
                }
                Ok(b) if first == Some(b) => {}
                Ok(b) => {
                    self.fail(format!("long-lived {k} moved from be{first:?} to be{b}"));
                    return false;
                }
                Err(e) => {
                    self.fail(format!("long-lived {k}: {e:#}"));
                    return false;
                }
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(300));
        }
        first.is_some()
    }

    /// A new HTTP connection every 0.1 s until stopped.
    fn new_connections(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            if let Err(e) = http_get() {
                self.fail(format!("new connection: {e:#}"));
            }
            self.new_conns.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Everything compared across one swap.
struct Snapshot {
    program: ProgramInfo,
    link_id: u32,
    flows_map_id: u32,
    counters: BTreeMap<String, u64>,
}

fn snapshot(net: &AgentNet, socket: &Path) -> anyhow::Result<Snapshot> {
    let status: StatusInfo = serde_json::from_value(call(socket, Command::Status, ADMIN_TIMEOUT)?)
        .context("decoding the status")?;
    let program = status
        .program
        .context("`status` did not report the running program")?;
    ensure!(
        program.name == "lb_xdp" && program.tag.len() == 16,
        "unexpected program in status: {program:?}"
    );
    let (link_id, link_program) = net.xdp_link()?;
    ensure!(
        link_program == program.id,
        "the pinned link runs program {link_program}, status says {program}"
    );
    let running = net.xdp_program_id()?;
    ensure!(
        running == Some(program.id),
        "l0 runs program {running:?}, status says {program}"
    );
    let mut counters = BTreeMap::new();
    flatten(
        "",
        &call(socket, Command::Stats, ADMIN_TIMEOUT)?,
        &mut counters,
    );
    ensure!(!counters.is_empty(), "`stats` returned no counters");
    Ok(Snapshot {
        program,
        link_id,
        flows_map_id: net.pinned_map_id(lb_common::maps::FLOWS)?,
        counters,
    })
}

/// Every number in `v`, keyed by its path (`verdicts.tx.packets`).
fn flatten(path: &str, v: &Value, out: &mut BTreeMap<String, u64>) {
    match v {
        Value::Object(o) => {
            for (k, inner) in o {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                flatten(&p, inner, out);
            }
        }
        Value::Number(n) => {
            if let Some(n) = n.as_u64() {
                out.insert(path.to_owned(), n);
            }
        }
        _ => {}
    }
}

/// `ctl flow` for every long-lived connection: answered from the flow table, with the
/// backend the connection talks to.
fn check_flows(socket: &Path, flows: &[(u16, usize)]) -> anyhow::Result<()> {
    for &(sport, be) in flows {
        let answer: FlowAnswer = serde_json::from_value(call(
            socket,
            Command::Flow {
                proto: Proto::Tcp,
                src: IpAddr::V4(CLIENT),
                sport,
                dst: IpAddr::V4(VIP),
                dport: LINE_PORT,
            },
            ADMIN_TIMEOUT,
        )?)?;
        ensure!(
            answer.source == "flow table" && answer.backend == Some(IpAddr::V4(backend(be))),
            "long-lived flow from port {sport} (on be{be}): {answer:?}"
        );
    }
    Ok(())
}

/// What one swap must keep and change.
fn check_swap(before: &Snapshot, after: &Snapshot, what: &str) -> anyhow::Result<()> {
    ensure!(
        after.program.id != before.program.id,
        "{what}: the program id did not change ({})",
        after.program
    );
    ensure!(
        after.program.tag != before.program.tag,
        "{what}: the program tag did not change ({}): the same instructions were loaded",
        after.program
    );
    ensure!(
        after.link_id == before.link_id,
        "{what}: the XDP link changed ({} → {}): the program was detached and reattached",
        before.link_id,
        after.link_id
    );
    ensure!(
        after.flows_map_id == before.flows_map_id,
        "{what}: the flow table is a new map ({} → {})",
        before.flows_map_id,
        after.flows_map_id
    );
    let decreased: Vec<String> = before
        .counters
        .iter()
        .filter_map(|(k, old)| match after.counters.get(k) {
            Some(new) if new >= old => None,
            new => Some(format!("{k}: {old} → {new:?}")),
        })
        .collect();
    ensure!(
        decreased.is_empty(),
        "{what}: counters went down (not kept):\n{}",
        decreased.join("\n")
    );
    let total = |s: &Snapshot| -> u64 {
        s.counters
            .iter()
            .filter(|(k, _)| k.starts_with("verdicts.") && k.ends_with(".packets"))
            .map(|(_, v)| v)
            .sum()
    };
    ensure!(
        total(after) > total(before),
        "{what}: the new program counted no packet"
    );
    Ok(())
}

/// Removes the test's files even when it fails.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for path in &self.0 {
            // Best effort: a file the test already removed is fine.
            let _ = std::fs::remove_dir_all(path).or_else(|_| std::fs::remove_file(path));
        }
    }
}

/// SIGTERM, and wait until the agent exited.
fn stop_agent(agent: &mut Agent) -> anyhow::Result<()> {
    nix::sys::signal::kill(Pid::from_raw(agent.process.pid() as i32), Signal::SIGTERM)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.process.try_wait()?.is_none() {
        ensure!(
            Instant::now() < deadline,
            "lb-agent did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[test]
fn upgrade_and_downgrade_under_load_lose_nothing() -> anyhow::Result<()> {
    let Some(variant) = std::env::var_os(UPGRADE_OBJECT_VAR).map(PathBuf::from) else {
        bail!(
            "{UPGRADE_OBJECT_VAR} is not set: this test needs the upgrade-variant eBPF object; \
             run it through `cargo xtask test` (e.g. `cargo xtask test -- --test e2e_upgrade`), \
             which builds it"
        );
    };
    ensure!(
        variant.is_file(),
        "{UPGRADE_OBJECT_VAR}={} is not a file; `cargo xtask test` builds it",
        variant.display()
    );
    let variant = variant
        .to_str()
        .context("object path is not UTF-8")?
        .to_owned();

    let net = AgentNet::new("lbt-upgrade")?;
    let pid = std::process::id();
    let config = std::env::temp_dir().join(format!("lbt-upgrade-{pid}.toml"));
    let socket_dir = PathBuf::from(format!("/run/lb/test-upgrade-{pid}"));
    let _cleanup = Cleanup(vec![config.clone(), socket_dir.clone()]);
    let socket = socket_dir.join("admin.sock");
    let sock = socket
        .to_str()
        .context("socket path is not UTF-8")?
        .to_owned();
    // The example plus a VIP for the long-lived line protocol on :8080.
    let mut text = std::fs::read_to_string(example_config()).context("reading the example")?;
    text.push_str(&format!(
        "\n[[vip]]\nname = \"lines\"\naddress = \"{VIP}\"\nport = {LINE_PORT}\nprotocol = \"tcp\"\nmode = \"dr\"\ntarget_group = \"web-servers\"\n"
    ));
    std::fs::write(&config, text).context("writing the test configuration")?;
    let base_args = ["--stats-interval", "0", "--admin-socket", sock.as_str()];

    let mut agent = net.start_agent(&config, &base_args)?;
    std::thread::sleep(Duration::from_millis(300));

    let load = Load::default();
    let mut swaps = Vec::new();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let workload = scope.spawn(|| {
            net.client.enter(|| {
                std::thread::scope(|inner| {
                    let handles: Vec<_> = (0..LONG_LIVED)
                        .map(|k| {
                            let load = &load;
                            inner.spawn(move || load.long_lived(k))
                        })
                        .collect();
                    load.new_connections();
                    handles
                        .into_iter()
                        .map(|h| h.join().unwrap_or(false))
                        .filter(|kept| *kept)
                        .count()
                })
            })
        });
        // Watches l0 for the whole run: the program must never be missing.
        let watcher = scope.spawn(|| {
            while !load.stop.load(Ordering::Relaxed) {
                match net.attached() {
                    Ok(true) => {}
                    seen => {
                        if let Ok(mut d) = load.detached.lock() {
                            d.push(format!("{seen:?}"));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        // Ends the workload however the swaps end (an error or a panic included): the
        // scope would otherwise wait for it forever.
        let stopper = StopOnDrop(&load.stop);
        let swapped = swap_twice(
            &net, &load, &mut agent, &config, &base_args, &variant, &socket,
        );
        drop(stopper);
        watcher
            .join()
            .map_err(|_| anyhow::anyhow!("watcher panicked"))?;
        let kept = workload
            .join()
            .map_err(|_| anyhow::anyhow!("workload panicked"))??;
        swaps = swapped?;
        ensure!(
            kept == LONG_LIVED,
            "{kept} of {LONG_LIVED} long-lived connections survived"
        );
        Ok(())
    })?;

    let failures = load
        .failures
        .into_inner()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    let detached = load
        .detached
        .into_inner()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    let (asked, conns) = (
        load.requests.load(Ordering::Relaxed),
        load.new_conns.load(Ordering::Relaxed),
    );
    eprintln!(
        "swaps {swaps:?}: {asked} requests on {LONG_LIVED} long-lived connections, {conns} new connections, {} failures",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(detached.is_empty(), "l0 was seen without XDP: {detached:?}");
    assert!(
        asked >= (LONG_LIVED * 15) as u64,
        "only {asked} long-lived requests"
    );
    assert!(conns >= 40, "only {conns} new connections");

    // Stop the last agent (the data plane stays), then `down` removes it all.
    let status = agent.process.stop()?;
    ensure!(status.success(), "lb-agent exited with {status}");
    ensure!(net.attached()?, "stopping the agent detached the program");
    net.down()?;
    ensure!(!net.attached()?, "lb-agent down left the program attached");
    Ok(())
}

/// Under the running load: the upgrade to `variant`, then the downgrade to the embedded
/// object, each checked; returns each swap's new program.
fn swap_twice(
    net: &AgentNet,
    load: &Load,
    agent: &mut Agent,
    config: &Path,
    base_args: &[&str],
    variant: &str,
    socket: &Path,
) -> anyhow::Result<Vec<(&'static str, ProgramInfo)>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while load.flows.lock().map_or(0, |f| f.len()) < LONG_LIVED {
        ensure!(
            Instant::now() < deadline,
            "the long-lived connections did not all answer: {:?}",
            load.failures.lock().map(|f| f.clone())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1000));
    let flows = load
        .flows
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    check_flows(socket, &flows).context("before any swap")?;
    let mut before = snapshot(net, socket)?;
    let embedded_tag = before.program.tag.clone();
    let mut swaps = Vec::new();
    for (what, object) in [("upgrade", Some(variant)), ("downgrade", None)] {
        stop_agent(agent)?;
        ensure!(
            net.attached()?,
            "{what}: the program was detached when the agent stopped"
        );
        let mut args = base_args.to_vec();
        if let Some(object) = object {
            args.extend(["--bpf-object", object]);
        }
        *agent = net.start_agent(config, &args)?;
        ensure!(
            agent
                .startup
                .iter()
                .any(|l| l.contains("adopted the running data plane")),
            "{what}: the new agent did not adopt the pinned data plane:\n{}",
            agent.startup.join("\n")
        );
        std::thread::sleep(Duration::from_millis(1500));
        let after = snapshot(net, socket)?;
        check_swap(&before, &after, what)?;
        check_flows(socket, &flows).with_context(|| format!("after the {what}"))?;
        eprintln!("{what}: {} → {}", before.program, after.program);
        swaps.push((what, after.program.clone()));
        before = after;
    }
    // Back on the embedded object: its instructions, and so its tag, are the first ones.
    ensure!(
        before.program.tag == embedded_tag,
        "the downgrade loaded {}, not the embedded object (tag {embedded_tag})",
        before.program
    );

    // The status table shows the program too (`lb-agent ctl status`).
    let agent_bin = net.agent_bin.to_str().context("agent path is not UTF-8")?;
    let sock = socket.to_str().context("socket path is not UTF-8")?;
    let out = std::process::Command::new(agent_bin)
        .args(["ctl", "--socket", sock, "status"])
        .output()
        .context("running lb-agent ctl status")?;
    let table = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && table.contains(&format!("lb_xdp id {}", before.program.id)),
        "`lb-agent ctl status` does not show the program:\n{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(swaps)
}
