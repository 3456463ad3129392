//! `cargo xtask demo`: lb balancing real HTTP traffic, driven the way an operator would.
//!
//! Builds `lb_tests::agentnet`'s topology (client, load balancer, three backends serving
//! HTTP and UDP on the VIP, `lb-agent decap` on each), runs the real
//! `lb-agent run --config examples/lb.toml` on the load balancer, sends HTTP requests
//! and UDP queries through the VIP and prints where they went; then restarts the agent
//! and kills one backend's web server while requests keep flowing (the health checks take
//! it out, and back in when it returns), then restarts the agent while requests keep
//! flowing (the data plane never stops) and finally removes it with `lb-agent down`.
//! Tears everything down unless `--keep`; exits non-zero if any request failed.

use std::{
    process::ExitCode,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::Duration,
};

use anyhow::{ensure, Context as _};
use lb_agent::admin::{client::call, protocol::Command};
use lb_tests::agentnet::{
    backend, example_config, http_get, udp_query, AgentNet, HttpMode, BACKENDS, VIP,
};

const HTTP_REQUESTS: usize = 300;
const UDP_QUERIES: usize = 300;

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

fn step(what: &str) {
    println!("==> {what}");
}

fn strip_timestamp(line: &str) -> &str {
    // tracing's format: "<timestamp>  INFO <target>: <message>".
    line.split_once("  ")
        .map_or(line, |(_, rest)| rest.trim_start())
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

/// Polls `backend list` until every backend's state is as `want` says; returns the time
/// it took and the last list.
fn wait_states(
    socket: &str,
    limit: Duration,
    want: impl Fn(usize, &str) -> bool,
) -> anyhow::Result<(Duration, serde_json::Value)> {
    let start = std::time::Instant::now();
    loop {
        // The socket opens just after the data plane is attached.
        let list = match call(
            std::path::Path::new(socket),
            Command::BackendList { group: None },
            Duration::from_secs(5),
        ) {
            Ok(list) => list,
            Err(e) if start.elapsed() < limit => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let ok = (0..BACKENDS).all(|i| {
            list.as_array()
                .and_then(|l| l.iter().find(|b| b["address"] == backend(i).to_string()))
                .and_then(|b| b["state"].as_str())
                .is_some_and(|s| want(i, s))
        });
        if ok {
            return Ok((start.elapsed(), list));
        }
        ensure!(
            start.elapsed() < limit,
            "backends not as expected within {limit:?}: {list}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `n` HTTP requests on new connections: per-backend counts and failures.
fn requests(net: &AgentNet, n: usize) -> anyhow::Result<([usize; BACKENDS], usize)> {
    net.client.enter(|| {
        let mut counts = [0; BACKENDS];
        let mut failed = 0;
        for _ in 0..n {
            match http_get() {
                Ok(i) => counts[i] += 1,
                Err(e) => {
                    failed += 1;
                    eprintln!("    request failed: {e:#}");
                }
            }
        }
        (counts, failed)
    })
}

/// Runs `lb-agent ctl --socket <socket> <args>` and prints its output, indented.
fn ctl(net: &AgentNet, socket: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new(&net.agent_bin)
        .args(["ctl", "--socket", socket])
        .args(args)
        .output()
        .context("running lb-agent ctl")?;
    ensure!(
        out.status.success(),
        "lb-agent ctl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("    {line}");
    }
    Ok(())
}

fn demo(keep: bool) -> anyhow::Result<()> {
    let config = std::env::var_os("LB_DEMO_CONFIG").map_or_else(example_config, Into::into);
    ensure!(config.exists(), "no configuration at {}", config.display());

    step(
        "building the topology: client ── lb ── be0, be1, be2 (the addresses of examples/lb.toml)",
    );
    let net = AgentNet::new("lb-demo")?;
    println!(
        "    backends: HTTP on {VIP}:80 and UDP on {VIP}:53 (on lo), `lb-agent decap` on b0..b2"
    );

    step(&format!(
        "lb-agent run --iface l0 --config {}",
        config.display()
    ));
    let socket = format!("/run/lb/{}/admin.sock", net.topo.prefix());
    let agent = net.start_agent(
        &config,
        &["--stats-interval", "1", "--admin-socket", &socket],
    )?;
    for line in agent.startup.iter().filter(|l| {
        [
            "ring installed",
            "configuration applied",
            "egress interfaces",
            "attached",
        ]
        .iter()
        .any(|k| l.contains(k))
    }) {
        println!("    {}", strip_timestamp(line));
    }
    // Until the first health checks pass, every target is `initial` and the group fails
    // open (all serve); wait for the verdicts so the shares below are the steady state.
    let (took, _) = wait_states(&socket, Duration::from_secs(15), |_, s| s == "healthy")?;
    println!(
        "    health checks: all {BACKENDS} targets healthy after {:.1} s",
        took.as_secs_f64()
    );
    for args in [&["status"][..], &["vip", "list"]] {
        step(&format!("lb-agent ctl {}", args.join(" ")));
        ctl(&net, &socket, args)?;
    }

    step(&format!(
        "client → http://{VIP}/ : {HTTP_REQUESTS} requests, a new connection each"
    ));
    let (http, http_failed) = requests(&net, HTTP_REQUESTS)?;
    print_shares(&http, HTTP_REQUESTS);
    println!("    {http_failed} failed");

    step(&format!(
        "client → udp {VIP}:53 : {UDP_QUERIES} queries from fixed source ports"
    ));
    let (udp, udp_failed) = net.client.enter(|| {
        let mut counts = [0; BACKENDS];
        let mut failed = 0;
        for k in 0..UDP_QUERIES {
            match udp_query(20000 + k as u16) {
                Ok(i) => counts[i] += 1,
                Err(_) => failed += 1,
            }
        }
        (counts, failed)
    })?;
    print_shares(&udp, UDP_QUERIES);
    println!("    {udp_failed} failed");

    step("lb-agent ctl backend list (live flows per backend from the flow table)");
    ctl(&net, &socket, &["backend", "list"])?;
    step(&format!(
        "lb-agent ctl flow tcp {} 40000 {VIP} 80 (which backend would this flow get?)",
        lb_tests::agentnet::CLIENT
    ));
    ctl(
        &net,
        &socket,
        &[
            "flow",
            "tcp",
            &lb_tests::agentnet::CLIENT.to_string(),
            "40000",
            &VIP.to_string(),
            "80",
        ],
    )?;

    std::thread::sleep(Duration::from_millis(1200));
    step("what the data plane counted (lb-agent log)");
    if let Some(line) = agent
        .log
        .try_iter()
        .filter(|l| l.contains("packet counters"))
        .last()
    {
        println!("    {}", strip_timestamp(&line));
    }

    step("be1's web server dies: the health checks take it out of service");
    net.set_http(1, HttpMode::Refuse);
    let (took, _) = wait_states(&socket, Duration::from_secs(15), |i, s| {
        if i == 1 {
            s == "unhealthy"
        } else {
            s == "healthy"
        }
    })?;
    println!(
        "    be1 unhealthy after {:.1} s (unhealthy_threshold × interval_secs)",
        took.as_secs_f64()
    );
    ctl(&net, &socket, &["backend", "list"])?;
    step(&format!(
        "client → http://{VIP}/ : {HTTP_REQUESTS} requests with be1 down"
    ));
    let (down, down_failed) = requests(&net, HTTP_REQUESTS)?;
    print_shares(&down, HTTP_REQUESTS);
    println!("    {down_failed} failed");
    ensure!(down[1] == 0, "{} requests reached the dead be1", down[1]);

    step("be1's web server is back: healthy again after healthy_threshold checks");
    net.set_http(1, HttpMode::Up);
    let (took, _) = wait_states(&socket, Duration::from_secs(15), |_, s| s == "healthy")?;
    println!("    be1 healthy after {:.1} s", took.as_secs_f64());
    let (back, back_failed) = requests(&net, HTTP_REQUESTS)?;
    print_shares(&back, HTTP_REQUESTS);
    println!("    {back_failed} failed");

    if keep {
        println!(
            "\n--keep: left running (namespaces {p}-client, {p}-lb, {p}-be0..2; lb-agent pid {pid}).\n\
             Try:      ip netns exec {p}-client curl -s http://{VIP}/\n\
             Reload:   kill -HUP {pid}   (after editing {cfg})\n\
             Clean up: run the demo again (it removes leftovers first)",
            p = net.topo.prefix(),
            pid = agent.process.pid(),
            cfg = config.display(),
        );
        std::mem::forget(agent);
        std::mem::forget(net);
        return Ok(());
    }

    step("restarting lb-agent (SIGTERM, then a new one) while the client keeps requesting");
    let stop = AtomicBool::new(false);
    let (served, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let restarted = std::thread::scope(|s| -> anyhow::Result<Vec<String>> {
        let load = s.spawn(|| {
            net.client.enter(|| {
                while !stop.load(Ordering::Relaxed) {
                    match http_get() {
                        Ok(_) => served.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        });
        let status = agent.process.stop()?;
        ensure!(status.success(), "lb-agent exited with {status}");
        println!(
            "    agent stopped; l0 still has the program: {}",
            net.attached()?
        );
        std::thread::sleep(Duration::from_millis(800));
        let next = net.start_agent(
            &config,
            &["--stats-interval", "0", "--admin-socket", &socket],
        )?;
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        load.join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))?
            .context("client namespace")?;
        let lines = next
            .startup
            .iter()
            .filter(|l| l.contains("continuing") || l.contains("adopted"))
            .map(|l| strip_timestamp(l).to_owned())
            .collect();
        next.process.stop()?;
        Ok(lines)
    })?;
    for line in &restarted {
        println!("    {line}");
    }
    let (served, restart_failed) = (served.into_inner(), failed.into_inner());
    println!("    {served} requests during the restart, {restart_failed} failed");

    step("lb-agent down --iface l0: detach and unpin");
    net.down()?;
    ensure!(
        !net.attached()?,
        "l0 still has an XDP program after lb-agent down"
    );
    println!("    l0 has no XDP program");
    drop(net);
    let failed = http_failed + udp_failed + down_failed + back_failed + restart_failed;
    ensure!(failed == 0, "{failed} requests failed");
    println!(
        "\nlb demo: all {} requests succeeded",
        3 * HTTP_REQUESTS + UDP_QUERIES + served
    );
    Ok(())
}
