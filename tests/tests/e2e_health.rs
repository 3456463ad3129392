//! The backend lifecycle with the real agent, real servers and real traffic: health
//! checks that notice a killed, hung or failing server within their thresholds and
//! re-admit it; fail open when every target fails; draining that keeps established
//! connections for the whole deregistration delay while no new one arrives; slow start.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _};
use lb_agent::admin::{
    client::call,
    protocol::{Command, ErrorCode},
};
use lb_tests::agentnet::{
    backend, example_config, http_get, udp_query, AgentNet, HttpMode, LineConn, LINE_PORT, VIP,
};
use serde_json::Value;

const GROUP: &str = "web-servers";
const TIMEOUT: Duration = Duration::from_secs(10);

/// The example with HTTP health checks every second (thresholds 2 and 2), the line
/// protocol as a VIP, and `extra` group settings; written next to the test's socket.
struct Setup {
    config: PathBuf,
    socket: PathBuf,
}

impl Setup {
    fn new(name: &str, group_settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        let dir = PathBuf::from(format!("/run/lb/test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut text = std::fs::read_to_string(example_config())?;
        for (key, value) in group_settings {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{key} =")))
                .with_context(|| format!("no {key} in the example"))?
                .to_owned();
            text = text.replace(&line, &format!("{key} = {value}"));
        }
        // In the health-check table: HTTP every second.
        let mut in_check = false;
        let mut switched = 0;
        let lines: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with('[') {
                    in_check = l == "[target_group.health_check]";
                }
                let set = |key: &str, value: &str| format!("{key} = {value}");
                match l.split(" =").next() {
                    Some("protocol") if in_check => {
                        switched += 1;
                        set("protocol", "\"http\"")
                    }
                    Some("interval_secs") if in_check => set("interval_secs", "1"),
                    Some("timeout_secs") if in_check => set("timeout_secs", "1"),
                    _ => l.to_owned(),
                }
            })
            .collect();
        ensure!(
            switched == 1,
            "health check protocol found {switched} times"
        );
        text = lines.join("\n");
        text.push_str(&format!(
            "\n[[vip]]\nname = \"lines\"\naddress = \"{VIP}\"\nport = {LINE_PORT}\nprotocol = \"tcp\"\ntarget_group = \"{GROUP}\"\n"
        ));
        let config = dir.join("lb.toml");
        std::fs::write(&config, text)?;
        Ok(Self {
            config,
            socket: dir.join("admin.sock"),
        })
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--stats-interval".into(),
            "0".into(),
            "--admin-socket".into(),
            self.socket.display().to_string(),
        ]
    }

    fn ctl(&self, cmd: Command) -> anyhow::Result<Value> {
        let what = format!("{cmd:?}");
        call(&self.socket, cmd, TIMEOUT).with_context(|| what)
    }

    fn backends(&self) -> anyhow::Result<Vec<Value>> {
        let v = self.ctl(Command::BackendList {
            group: Some(GROUP.into()),
        })?;
        v.as_array().cloned().context("backend list")
    }

    fn backend(&self, i: usize) -> anyhow::Result<Value> {
        let a = backend(i).to_string();
        self.backends()?
            .into_iter()
            .find(|b| b["address"] == a)
            .with_context(|| format!("{a} not listed"))
    }

    /// Waits until the agent answers, then until `done` holds for the backend list;
    /// returns how long the condition took.
    fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            if let Ok(list) = self.backends() {
                if done(&list) {
                    return Ok(start.elapsed());
                }
                ensure!(
                    start.elapsed() < limit,
                    "{what}: not within {limit:?}: {}",
                    Value::Array(list)
                );
            } else {
                ensure!(start.elapsed() < limit, "{what}: the agent does not answer");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(dir) = self.config.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn state_of(list: &[Value], i: usize) -> String {
    let a = backend(i).to_string();
    list.iter()
        .find(|b| b["address"] == a)
        .and_then(|b| b["state"].as_str())
        .unwrap_or("missing")
        .to_owned()
}

fn all_healthy(list: &[Value]) -> bool {
    (0..3).all(|i| state_of(list, i) == "healthy")
}

/// Backends reached by new HTTP connections; every request must succeed.
fn http_spread(net: &AgentNet, n: usize) -> anyhow::Result<BTreeSet<usize>> {
    net.client.enter(|| -> anyhow::Result<BTreeSet<usize>> {
        let mut seen = BTreeSet::new();
        for k in 0..n {
            seen.insert(http_get().with_context(|| format!("request {k} of {n}"))?);
        }
        Ok(seen)
    })?
}

#[test]
fn failed_servers_leave_and_return_within_their_thresholds() -> anyhow::Result<()> {
    let net = AgentNet::new("lbt-hc")?;
    let setup = Setup::new("hc", &[])?;
    let args = setup.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _agent = net.start_agent(&setup.config, &args)?;
    setup.wait_for("all healthy", Duration::from_secs(10), all_healthy)?;
    ensure!(
        http_spread(&net, 60)? == BTreeSet::from([0, 1, 2]),
        "not every backend serves"
    );

    // Kill be1's web server: unhealthy within unhealthy_threshold × interval + 1 s.
    net.set_http(1, HttpMode::Refuse);
    let took = setup.wait_for("be1 unhealthy", Duration::from_secs(6), |l| {
        state_of(l, 1) == "unhealthy"
    })?;
    eprintln!("killed server noticed in {took:?}");
    ensure!(
        took <= Duration::from_secs(3),
        "killed server noticed only after {took:?}"
    );
    let b1 = setup.backend(1)?;
    ensure!(b1["reason"] == "Target.FailedHealthChecks", "{b1}");
    // No new connection fails from then on.
    ensure!(
        http_spread(&net, 300)? == BTreeSet::from([0, 2]),
        "traffic still reaches be1"
    );

    // Back up: re-admitted after healthy_threshold × interval (not on the first success).
    net.set_http(1, HttpMode::Up);
    let took = setup.wait_for("be1 healthy again", Duration::from_secs(6), |l| {
        state_of(l, 1) == "healthy"
    })?;
    eprintln!("restarted server re-admitted in {took:?}");
    ensure!(
        took >= Duration::from_millis(900) && took <= Duration::from_secs(3),
        "re-admitted after {took:?}, expected about 2 intervals"
    );
    ensure!(
        http_spread(&net, 60)? == BTreeSet::from([0, 1, 2]),
        "be1 did not come back"
    );

    // A hung server times out, a failing one mismatches.
    net.set_http(0, HttpMode::Hang);
    net.set_http(2, HttpMode::Error);
    setup.wait_for("be0 and be2 unhealthy", Duration::from_secs(6), |l| {
        state_of(l, 0) == "unhealthy" && state_of(l, 2) == "unhealthy"
    })?;
    let (b0, b2) = (setup.backend(0)?, setup.backend(2)?);
    ensure!(b0["reason"] == "Target.Timeout", "{b0}");
    ensure!(b2["reason"] == "Target.ResponseCodeMismatch", "{b2}");
    ensure!(b2["detail"].as_str().unwrap_or("").contains("500"), "{b2}");
    let status = setup.ctl(Command::Status)?;
    ensure!(
        status["failing_open"].as_array().is_none_or(Vec::is_empty),
        "{status}"
    );
    ensure!(status["targets"]["unhealthy"] == 2, "{status}");

    // Every target unhealthy: the group fails open (as NLB does), says so, and traffic
    // goes to all of them.
    net.set_http(1, HttpMode::Refuse);
    setup.wait_for("all unhealthy, failing open", Duration::from_secs(6), |l| {
        (0..3).all(|i| state_of(l, i) == "unhealthy") && l.iter().all(|b| b["fail_open"] == true)
    })?;
    let status = setup.ctl(Command::Status)?;
    ensure!(
        status["failing_open"] == serde_json::json!([GROUP]),
        "{status}"
    );
    let reached: BTreeSet<usize> = net.client.enter(|| -> anyhow::Result<BTreeSet<usize>> {
        (30_000..30_060).map(udp_query).collect()
    })??;
    ensure!(
        reached == BTreeSet::from([0, 1, 2]),
        "fail open reached only {reached:?}"
    );

    for i in 0..3 {
        net.set_http(i, HttpMode::Up);
    }
    setup.wait_for("all healthy again", Duration::from_secs(8), all_healthy)?;
    let status = setup.ctl(Command::Status)?;
    ensure!(
        status["failing_open"].as_array().is_none_or(Vec::is_empty),
        "{status}"
    );
    net.down()?;
    Ok(())
}

#[test]
fn drained_and_deregistered_targets_keep_their_connections_for_the_delay() -> anyhow::Result<()> {
    const DELAY: Duration = Duration::from_secs(8);
    let net = AgentNet::new("lbt-drain")?;
    let setup = Setup::new("drain", &[("deregistration_delay_secs", "8")])?;
    let args = setup.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _agent = net.start_agent(&setup.config, &args)?;
    setup.wait_for("all healthy", Duration::from_secs(10), all_healthy)?;

    // Ten long-lived connections on be0.
    let mut on_be0 = Vec::new();
    net.client.enter(|| -> anyhow::Result<()> {
        for _ in 0..200 {
            let mut c = LineConn::open()?;
            if c.ask()? == 0 {
                on_be0.push(c);
                if on_be0.len() == 10 {
                    break;
                }
            }
        }
        Ok(())
    })??;
    ensure!(
        on_be0.len() == 10,
        "only {} connections landed on be0",
        on_be0.len()
    );

    // Timed from before the request: the delay starts when the agent records the drain.
    let drained_at = Instant::now();
    let r = setup.ctl(Command::BackendDrain {
        group: GROUP.into(),
        address: IpAddr::V4(backend(0)),
    })?;
    ensure!(r["backend"]["state"] == "draining", "{r}");
    let b0 = setup.backend(0)?;
    ensure!(
        b0["flows"].as_u64() >= Some(10),
        "live flows not shown: {b0}"
    );

    // 1,000 new connections, 100 between rounds of requests on the existing ones: none
    // reaches be0, and every existing connection keeps answering from be0 for the
    // whole delay.
    let mut spread = BTreeSet::new();
    let (mut asked, mut new_conns) = (0, 0);
    while drained_at.elapsed() + Duration::from_millis(700) < DELAY {
        for (k, c) in on_be0.iter_mut().enumerate() {
            let got = net.client.enter(|| c.ask())?.with_context(|| {
                format!(
                    "connection {k} failed {:?} into the drain",
                    drained_at.elapsed()
                )
            })?;
            ensure!(got == 0, "connection {k} moved to be{got} during the drain");
            asked += 1;
        }
        if new_conns < 1000 {
            spread.extend(http_spread(&net, 100)?);
            new_conns += 100;
        } else {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    ensure!(
        new_conns == 1000,
        "only {new_conns} new connections within the delay"
    );
    ensure!(
        !spread.contains(&0),
        "a new connection reached the draining be0: {spread:?}"
    );
    ensure!(
        asked >= 100,
        "only {asked} requests on the draining connections"
    );
    eprintln!(
        "{asked} requests on 10 draining connections, all answered by be0; {new_conns} new connections avoided it"
    );

    // Then it is unused: no flows at all, until undrained.
    let took = setup.wait_for("be0 unused", DELAY, |l| state_of(l, 0) == "unused")?;
    ensure!(
        drained_at.elapsed() >= DELAY - Duration::from_millis(100)
            && drained_at.elapsed() <= DELAY + Duration::from_millis(1500),
        "unused after {:?} (waited {took:?})",
        drained_at.elapsed()
    );
    ensure!(
        setup.backend(0)?["reason"] == "Lb.Drained",
        "{}",
        setup.backend(0)?
    );
    setup.ctl(Command::BackendUndrain {
        group: GROUP.into(),
        address: IpAddr::V4(backend(0)),
    })?;
    ensure!(
        state_of(&setup.backends()?, 0) == "healthy",
        "undrain did not restore be0"
    );

    // Deregistration (as auto scaling does): draining for the delay, then gone.
    let removed_at = Instant::now();
    setup.ctl(Command::BackendRemove {
        group: GROUP.into(),
        address: IpAddr::V4(backend(2)),
    })?;
    ensure!(
        state_of(&setup.backends()?, 2) == "draining",
        "not draining"
    );
    let err = call(
        &setup.socket,
        Command::BackendUndrain {
            group: GROUP.into(),
            address: IpAddr::V4(backend(2)),
        },
        TIMEOUT,
    )
    .expect_err("undrain of a deregistering target");
    ensure!(err.code() == Some(ErrorCode::Conflict), "{err}");
    setup.wait_for("be2 gone", DELAY + Duration::from_secs(3), |l| {
        state_of(l, 2) == "missing"
    })?;
    ensure!(
        removed_at.elapsed() >= DELAY,
        "be2 removed after {:?}",
        removed_at.elapsed()
    );
    net.down()?;
    Ok(())
}

#[test]
fn slow_start_ramps_a_recovered_targets_share() -> anyhow::Result<()> {
    let net = AgentNet::new("lbt-slow")?;
    let setup = Setup::new("slow", &[("slow_start_secs", "30")])?;
    let args = setup.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // be0 starts down; the others come up first (and ramp themselves).
    net.set_http(0, HttpMode::Refuse);
    let _agent = net.start_agent(&setup.config, &args)?;
    setup.wait_for("be1 and be2 healthy", Duration::from_secs(10), |l| {
        state_of(l, 0) == "unhealthy" && state_of(l, 1) == "healthy" && state_of(l, 2) == "healthy"
    })?;

    net.set_http(0, HttpMode::Up);
    setup.wait_for("be0 healthy", Duration::from_secs(6), |l| {
        state_of(l, 0) == "healthy"
    })?;
    let start = Instant::now();
    let mut samples = Vec::new();
    while start.elapsed() < Duration::from_secs(33) {
        // Weights and ring read under the agent's one lock each; a step between the two
        // reads shows as different weights, and the sample is taken again.
        let weights = |setup: &Setup| -> anyhow::Result<Vec<f64>> {
            (0..3)
                .map(|i| {
                    setup.backend(i)?["effective_weight"]
                        .as_f64()
                        .context("weight")
                })
                .collect()
        };
        let before = weights(&setup)?;
        let vip = setup.ctl(Command::VipShow { name: "web".into() })?;
        if weights(&setup)? != before {
            continue;
        }
        let slots: Vec<f64> = (0..3)
            .map(|i| {
                vip["backend_list"]
                    .as_array()
                    .and_then(|l| l.iter().find(|b| b["address"] == backend(i).to_string()))
                    .and_then(|b| b["slots"].as_f64())
                    .unwrap_or(0.0)
            })
            .collect();
        let total: f64 = slots.iter().sum();
        samples.push((
            start.elapsed(),
            before,
            slots.iter().map(|s| s / total).collect::<Vec<_>>(),
        ));
        std::thread::sleep(Duration::from_millis(1500));
    }
    for (t, w, share) in &samples {
        eprintln!(
            "{:>5.1}s  weights {w:.2?}  ring shares {share:.3?}",
            t.as_secs_f64()
        );
    }
    // be0's weight follows its ramp: 1/20 steps, the first at once, full after 30 s,
    // never down (allowing for the one-second reconcile); every ring share is the
    // weights' share.
    ensure!(
        samples[0].1[0] <= 0.15,
        "ramp started at {:?}",
        samples[0].1
    );
    for pair in samples.windows(2) {
        ensure!(
            pair[1].1[0] >= pair[0].1[0],
            "weight went down: {samples:?}"
        );
    }
    for (t, w, share) in &samples {
        let secs = t.as_secs_f64();
        let step = |s: f64| ((s.max(0.0) * 20.0 / 30.0).floor() + 1.0).min(20.0) / 20.0;
        ensure!(
            w[0] >= step(secs - 1.5) - 1e-9 && w[0] <= step(secs + 1.5) + 1e-9,
            "at {t:?} be0's weight {} is off the ramp",
            w[0]
        );
        let sum: f64 = w.iter().sum();
        for i in 0..3 {
            ensure!(
                (share[i] - w[i] / sum).abs() < 0.01,
                "at {t:?} be{i} holds {} of the ring, weights {w:?} give {}",
                share[i],
                w[i] / sum
            );
        }
    }
    ensure!(
        samples[samples.len() - 1].1[0] == 1.0,
        "ramp did not finish: {samples:?}"
    );
    net.down()?;
    Ok(())
}
