//! Agent restarts never stop forwarding: three restarts (SIGTERM, SIGKILL, SIGTERM) of
//! the real `lb-agent` while 20 long-lived TCP connections exchange a request every
//! 0.5 s and a new connection arrives every 0.2 s. No request may fail, no connection may
//! change backend, and the agent's ids and ring fingerprints must be identical after
//! every restart. Then `lb-agent down` detaches everything.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _};
use lb_tests::{
    agentnet::{example_config, http_get, AgentNet, LineConn, VIP},
    netns::StopOnDrop,
};
use nix::{sys::signal::Signal, unistd::Pid};

const LONG_LIVED: usize = 20;

fn fingerprints(lines: &[String]) -> Vec<String> {
    let mut f: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("ring installed"))
        .filter_map(|l| {
            let vip = l.split("vip=").nth(1)?.split_whitespace().next()?;
            let fp = l.split("fingerprint=").nth(1)?.split_whitespace().next()?;
            Some(format!("{vip} {fp}"))
        })
        .collect();
    f.sort();
    f
}

/// What an operator sees of the configuration through the admin socket: VIPs with ids and
/// ring fingerprints, backends with weights, ids and states (not live flow counts).
fn dump(socket: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    use lb_agent::admin::{client::call, protocol::Command};
    let deadline = Instant::now() + Duration::from_secs(10);
    let vips = loop {
        match call(socket, Command::VipList, Duration::from_secs(5)) {
            Ok(v) => break v,
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let mut backends = call(
        socket,
        Command::BackendList { group: None },
        Duration::from_secs(5),
    )?;
    for b in backends.as_array_mut().into_iter().flatten() {
        if let Some(o) = b.as_object_mut() {
            o.remove("flows");
        }
    }
    Ok(serde_json::json!({ "vips": vips, "backends": backends }))
}

/// The id allocation in a state file (VIPs, backends, the next free id), without the
/// lifecycle's timestamps.
fn ids(state: &str) -> anyhow::Result<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(state)?;
    Ok(serde_json::json!({
        "vips": v["vips"],
        "backends": v["backends"],
        "next_backend": v["next_backend"],
        "freed_backends": v["freed_backends"],
    }))
}

#[test]
fn restarts_under_load_lose_nothing() -> anyhow::Result<()> {
    let net = AgentNet::new("lbt-restart")?;
    // The example plus a VIP for the long-lived line protocol on :8080.
    let config = std::env::temp_dir().join(format!("lbt-restart-{}.toml", std::process::id()));
    let mut text = std::fs::read_to_string(example_config()).context("reading the example")?;
    text.push_str(&format!(
        "\n[[vip]]\nname = \"lines\"\naddress = \"{VIP}\"\nport = 8080\nprotocol = \"tcp\"\nmode = \"dr\"\ntarget_group = \"web-servers\"\n"
    ));
    std::fs::write(&config, text).context("writing the test configuration")?;

    let first = net.start_agent(&config, &["--stats-interval", "0"])?;
    let expected = fingerprints(&first.startup);
    ensure!(
        expected.len() == 3,
        "expected 3 rings installed, saw {expected:?}"
    );
    let state_path = format!("/run/lb/netns-{}-lb/l0/state.json", net.topo.prefix());
    let state_before =
        std::fs::read_to_string(&state_path).with_context(|| format!("reading {state_path}"))?;
    let socket =
        std::path::PathBuf::from(format!("/run/lb/netns-{}-lb/admin.sock", net.topo.prefix()));
    // Wait for the first health verdicts, so the dump is the steady state: every target
    // healthy and in every ring, and every VIP announced (past settling, one check
    // interval after the last verdict). (The two lists are two requests: a verdict
    // landing between them shows a healthy target that the VIP list, read just before,
    // did not count yet.)
    let steady = |d: &serde_json::Value| {
        let backends = d["backends"].as_array();
        backends.is_some_and(|l| l.iter().all(|b| b["state"] == "healthy"))
            && d["vips"].as_array().is_some_and(|vips| {
                vips.iter().all(|v| {
                    v["backends"].as_u64() == backends.map(|l| l.len() as u64)
                        && v["announce"]["state"] == "announced"
                })
            })
    };
    let mut dump_before = dump(&socket)?;
    let settle = Instant::now() + Duration::from_secs(10);
    while !steady(&dump_before) {
        ensure!(
            Instant::now() < settle,
            "targets never all healthy: {dump_before}"
        );
        std::thread::sleep(Duration::from_millis(100));
        dump_before = dump(&socket)?;
    }
    std::thread::sleep(Duration::from_millis(300));

    let stop = AtomicBool::new(false);
    let failures = Mutex::new(Vec::<String>::new());
    let requests = AtomicU64::new(0);
    let new_conns = AtomicU64::new(0);
    let mut agent = Some(first);
    let mut restarts = Vec::new();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let workload = scope.spawn(|| {
            net.client.enter(|| {
                std::thread::scope(|inner| {
                    let mut handles = Vec::new();
                    for k in 0..LONG_LIVED {
                        let (stop, failures, requests) = (&stop, &failures, &requests);
                        handles.push(inner.spawn(move || -> Option<usize> {
                            let mut conn = match LineConn::open() {
                                Ok(c) => c,
                                Err(e) => {
                                    failures
                                        .lock()
                                        .ok()?
                                        .push(format!("long-lived {k}: open: {e:#}"));
                                    return None;
                                }
                            };
                            let mut backend = None;
                            while !stop.load(Ordering::Relaxed) {
                                match conn.ask() {
                                    Ok(b) if backend.is_none() || backend == Some(b) => {
                                        backend = Some(b)
                                    }
                                    Ok(b) => failures
                                        .lock()
                                        .ok()?
                                        .push(format!("long-lived {k} moved to be{b}")),
                                    Err(e) => {
                                        failures
                                            .lock()
                                            .ok()?
                                            .push(format!("long-lived {k}: {e:#}"));
                                        return None;
                                    }
                                }
                                requests.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(500));
                            }
                            backend
                        }));
                    }
                    while !stop.load(Ordering::Relaxed) {
                        if let Err(e) = http_get() {
                            if let Ok(mut f) = failures.lock() {
                                f.push(format!("new connection: {e:#}"));
                            }
                        }
                        new_conns.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    handles
                        .into_iter()
                        .filter_map(|h| h.join().ok().flatten())
                        .count()
                })
            })
        });

        // Ends the workload however the restarts end: the scope would otherwise wait for
        // it forever after a failed check.
        let stopper = StopOnDrop(&stop);
        std::thread::sleep(Duration::from_millis(1500));
        for signal in [Signal::SIGTERM, Signal::SIGKILL, Signal::SIGTERM] {
            let mut old = agent.take().context("an agent is running")?;
            nix::sys::signal::kill(Pid::from_raw(old.process.pid() as i32), signal)?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while old.process.try_wait()?.is_none() {
                ensure!(
                    Instant::now() < deadline,
                    "lb-agent did not exit on {signal}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            ensure!(
                net.attached()?,
                "the program was detached when the agent stopped ({signal})"
            );
            // Traffic flows with no agent at all for a moment.
            std::thread::sleep(Duration::from_millis(700));
            let next = net.start_agent(&config, &["--stats-interval", "0"])?;
            ensure!(
                next.startup
                    .iter()
                    .any(|l| l.contains("adopted the running data plane")),
                "the new agent did not adopt the pinned data plane:\n{}",
                next.startup.join("\n")
            );
            let got = fingerprints(&next.startup);
            ensure!(
                got == expected,
                "ring fingerprints changed after {signal}: {got:?} vs {expected:?}"
            );
            let now = dump(&socket)?;
            ensure!(
                now == dump_before,
                "the operator's view changed after {signal}:\n{now}\nvs\n{dump_before}"
            );
            restarts.push(signal);
            agent = Some(next);
            std::thread::sleep(Duration::from_millis(1500));
        }
        drop(stopper);
        let kept = workload
            .join()
            .map_err(|_| anyhow::anyhow!("workload panicked"))??;
        ensure!(
            kept == LONG_LIVED,
            "{kept} of {LONG_LIVED} long-lived connections survived"
        );
        Ok(())
    })?;

    let failures = failures
        .into_inner()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    let (asked, conns) = (
        requests.load(Ordering::Relaxed),
        new_conns.load(Ordering::Relaxed),
    );
    eprintln!(
        "restarts {restarts:?}: {asked} requests on {LONG_LIVED} long-lived connections, {conns} new connections, {} failures",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        asked >= (LONG_LIVED * 20) as u64,
        "only {asked} long-lived requests"
    );
    assert!(conns >= 40, "only {conns} new connections");
    let state_after = std::fs::read_to_string(&state_path)?;
    assert_eq!(
        ids(&state_before)?,
        ids(&state_after)?,
        "VIP and backend ids changed across restarts"
    );

    // Stop the last agent (the data plane stays), then `down` removes it all.
    if let Some(last) = agent.take() {
        let status = last.process.stop()?;
        ensure!(status.success(), "lb-agent exited with {status}");
    }
    ensure!(net.attached()?, "stopping the agent detached the program");
    net.down()?;
    ensure!(!net.attached()?, "lb-agent down left the program attached");
    std::fs::remove_file(&config).context("removing the test configuration")?;
    Ok(())
}
