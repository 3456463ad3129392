//! The announce table on one host, read with `ip route` as a routing daemon reads it:
//! the agent's routes appear once the program is attached, carry the route tag `ctl
//! status` shows, go standby below `announce_min_healthy`, survive SIGKILL and a restart
//! untouched (watched with `ip monitor`), lose only the VIPs a restart no longer has,
//! follow `ctl withdraw` / `ctl announce` while forwarding goes on, and `ctl down`
//! withdraws before it detaches, after the grace period. (The fleet tests run the same
//! routes through real BIRD daemons.)

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _};
use lb_agent::admin::{client::call, protocol::Command};
use lb_tests::{
    agentnet::{example_config, http_get, AgentNet, VIP},
    netns::{wait_until, ChildGuard},
};
use nix::{sys::signal::Signal, unistd::Pid};
use serde_json::Value;

/// A VIP address only the first configuration has.
const EXTRA: &str = "198.18.200.9";
const STANDBY_BIT: u64 = 1 << 30;

/// lb's routes in table 100 of the lb namespace: (address, metric).
fn routes(net: &AgentNet) -> anyhow::Result<Vec<(String, u64)>> {
    let out = net
        .lb
        .run("ip", &["route", "show", "table", "100", "proto", "108"])?;
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "blackhole 198.18.200.1 metric 12345"
        let words: Vec<&str> = line.split_whitespace().collect();
        ensure!(
            words.first() == Some(&"blackhole"),
            "unexpected route {line:?}"
        );
        let metric = words
            .iter()
            .position(|w| *w == "metric")
            .and_then(|i| words.get(i + 1))
            .and_then(|m| m.parse().ok())
            .with_context(|| format!("no metric in {line:?}"))?;
        found.push((words[1].to_owned(), metric));
    }
    Ok(found)
}

fn status(socket: &Path) -> anyhow::Result<Value> {
    Ok(call(socket, Command::Status, Duration::from_secs(5))?)
}

fn wait_routes(
    net: &AgentNet,
    what: &str,
    mut ok: impl FnMut(&[(String, u64)]) -> bool,
) -> anyhow::Result<Vec<(String, u64)>> {
    let mut last = Vec::new();
    let reached = wait_until(Duration::from_secs(10), || {
        last = routes(net).unwrap_or_default();
        ok(&last)
    });
    ensure!(reached, "{what}: table 100 holds {last:?}");
    Ok(last)
}

fn config(dir: &Path, name: &str, extra_vip: bool, min_healthy: u32) -> anyhow::Result<PathBuf> {
    let mut text = std::fs::read_to_string(example_config()).context("reading the example")?;
    text = text.replace("min_healthy = 1", &format!("min_healthy = {min_healthy}"));
    if extra_vip {
        text.push_str(&format!(
            "\n[[vip]]\nname = \"extra\"\naddress = \"{EXTRA}\"\nport = 80\nprotocol = \"tcp\"\ntarget_group = \"web-servers\"\n"
        ));
    }
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

#[test]
fn the_announce_table_follows_the_agent() -> anyhow::Result<()> {
    let net = AgentNet::new("lbt-announce")?;
    let dir = std::env::temp_dir().join(format!("lbt-announce-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let socket = PathBuf::from(format!("/run/lb/netns-{}-lb/admin.sock", net.topo.prefix()));
    let vip = VIP.to_string();

    // 4 healthy targets needed of 3: both addresses stand by.
    let first = config(&dir, "first.toml", true, 4)?;
    let agent = net.start_agent(&first, &["--stats-interval", "0"])?;
    let standby = wait_routes(&net, "standby routes", |r| {
        r.len() == 2 && r.iter().all(|(_, m)| m & STANDBY_BIT != 0)
    })?;
    let s = status(&socket)?;
    let tag = s["route_tag"].as_u64().context("route_tag")?;
    println!(
        "standby: {standby:?}, route tag {tag}, fingerprint {}",
        s["fingerprint"]
    );
    ensure!(standby.iter().all(|(_, m)| *m == tag | STANDBY_BIT));
    ensure!(s["fingerprint"].as_str().is_some_and(|f| f.len() == 16));
    let first_route = &s["announce"]["routes"][0];
    ensure!(
        first_route["state"] == "standby"
            && first_route["reason"]
                .as_str()
                .is_some_and(|r| r.contains("3 needed") || r.contains("4 needed")),
        "status: {s}"
    );

    // The same file with min_healthy 1: announced once the targets are healthy, with
    // the tag of the rings they are in.
    let normal = config(&dir, "normal.toml", true, 1)?;
    call(
        &socket,
        Command::Apply {
            path: normal.display().to_string(),
            dry_run: false,
        },
        Duration::from_secs(10),
    )?;
    let announced = wait_routes(&net, "announced routes", |r| {
        r.len() == 2 && r.iter().all(|(_, m)| m & STANDBY_BIT == 0)
    })?;
    let settled = wait_until(Duration::from_secs(10), || {
        status(&socket).is_ok_and(|s| {
            s["targets"]["healthy"] == 3
                && routes(&net)
                    .is_ok_and(|r| r.iter().all(|(_, m)| Some(*m) == s["route_tag"].as_u64()))
        })
    });
    ensure!(
        settled,
        "routes never carried the status' route tag: {announced:?}"
    );
    let prom = call(
        &socket,
        Command::Metrics {
            format: lb_agent::admin::protocol::MetricsFormat::Prom,
        },
        Duration::from_secs(5),
    )?;
    let page = prom["text"].as_str().unwrap_or_default().to_owned();
    ensure!(
        page.contains("lb_fleet_info{fingerprint=\"")
            && page.contains("lb_vip_announce_state{load_balancer=\"web\"} 2"),
        "prometheus page: {page}"
    );
    let before = routes(&net)?;
    println!("announced: {before:?}");

    // SIGKILL, then a restart with the extra VIP gone, watched route by route.
    let mut monitor = ChildGuard::new(
        net.lb
            .command("ip", &["monitor", "route"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("ip monitor")?,
        "ip monitor route",
    );
    let monitor_out = monitor.take_stdout().context("monitor stdout")?;
    std::thread::sleep(Duration::from_millis(200));
    nix::sys::signal::kill(Pid::from_raw(agent.process.pid() as i32), Signal::SIGKILL)?;
    drop(agent);
    std::thread::sleep(Duration::from_millis(500));
    ensure!(routes(&net)? == before, "SIGKILL changed the routes");
    let second = config(&dir, "second.toml", false, 1)?;
    let agent = net.start_agent(&second, &["--stats-interval", "0"])?;
    let after = wait_routes(&net, "the extra VIP's route removed", |r| {
        r.iter().all(|(a, _)| a != EXTRA) && r.iter().any(|(a, _)| *a == vip)
    })?;
    std::thread::sleep(Duration::from_millis(500));
    drop(monitor);
    let events: Vec<String> = BufReader::new(monitor_out)
        .lines()
        .map_while(Result::ok)
        .collect();
    println!("route events across the restart: {events:?}");
    // The VIP's route may change metric (the removed VIP changes the fingerprint), but
    // the new one is added before the old one goes: it always has one.
    let mut present: Vec<String> = before
        .iter()
        .filter(|(a, _)| *a == vip)
        .map(|(_, m)| m.to_string())
        .collect();
    for e in &events {
        if !e.contains(&format!(" {vip} ")) {
            continue;
        }
        let metric = e.split("metric ").nth(1).unwrap_or("").trim().to_owned();
        if e.starts_with("Deleted") {
            present.retain(|m| *m != metric);
            ensure!(
                !present.is_empty(),
                "the VIP's route was withdrawn during the restart: {events:?}"
            );
        } else {
            present.push(metric);
        }
    }
    ensure!(
        events
            .iter()
            .any(|e| e.starts_with("Deleted") && e.contains(EXTRA)),
        "the removed VIP's route did not go: {events:?}"
    );
    println!("after the restart: {after:?}");

    // Withdraw: the route goes, forwarding goes on; announce brings it back.
    let w = call(&socket, Command::Withdraw, Duration::from_secs(5))?;
    ensure!(
        w["changed"] == true && w["addresses"][0] == vip.as_str(),
        "{w}"
    );
    wait_routes(&net, "withdrawn", |r| r.is_empty())?;
    net.client.enter(|| -> anyhow::Result<()> {
        for _ in 0..20 {
            http_get().context("a request through the VIP of a withdrawn host")?;
        }
        Ok(())
    })??;
    ensure!(
        status(&socket)?["announce"]["withdrawn_by_operator"] == true,
        "status does not say withdrawn"
    );
    call(&socket, Command::Announce, Duration::from_secs(5))?;
    wait_routes(&net, "announced again", |r| r.len() == 1)?;

    // Down with a grace period: withdrawn at once, detached a second later.
    let asked = Instant::now();
    let d = call(
        &socket,
        Command::Down {
            grace_secs: Some(1),
        },
        Duration::from_secs(5),
    )?;
    ensure!(
        d["grace_secs"] == 1 && d["withdrawn"][0] == vip.as_str(),
        "{d}"
    );
    wait_routes(&net, "withdrawn by down", |r| r.is_empty())?;
    let withdrawn_after = asked.elapsed();
    ensure!(net.attached()?, "detached before the grace period ended");
    net.client
        .enter(http_get)?
        .context("a request during the grace period")?;
    ensure!(
        wait_until(Duration::from_secs(5), || !net.attached().unwrap_or(true)),
        "still attached after the grace period"
    );
    let detached_after = asked.elapsed();
    println!(
        "down: withdrawn after {} ms, detached after {} ms",
        withdrawn_after.as_millis(),
        detached_after.as_millis()
    );
    ensure!(detached_after >= Duration::from_millis(900));
    drop(agent);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
