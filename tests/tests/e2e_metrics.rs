//! CloudWatch-shaped metrics from the real agent, against counted traffic: the EMF
//! documents it writes (one-second periods) add up exactly to the packets, bytes and
//! flows sent; host counts follow a backend stopping and starting; Prometheus counters
//! never go down across an agent restart.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _};
use lb_agent::admin::{
    client::call,
    protocol::{Command, MetricsFormat},
};
use lb_tests::agentnet::{example_config, udp_query, AgentNet, HttpMode};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(10);
/// UDP queries sent to the `dns` VIP, each from its own source port (a new flow).
const QUERIES: u64 = 200;
/// Each query's frame as the load balancer receives it: Ethernet 14 + IPv4 20 + UDP 8 +
/// "query" 5.
const QUERY_FRAME: u64 = 47;

/// One metric value of an EMF document: name, dimensions (name → value), value.
type Point = (String, BTreeMap<String, String>, f64);

/// Every (metric, dimension set) value in the EMF lines written so far.
fn emf_points(path: &Path) -> anyhow::Result<Vec<Point>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut points = Vec::new();
    for line in text.lines() {
        let doc: Value = serde_json::from_str(line).with_context(|| format!("EMF line {line}"))?;
        let directives = doc["_aws"]["CloudWatchMetrics"]
            .as_array()
            .with_context(|| format!("no CloudWatchMetrics in {line}"))?;
        for d in directives {
            for set in d["Dimensions"].as_array().into_iter().flatten() {
                let dims: BTreeMap<String, String> = set
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|n| (n.to_owned(), doc[n].as_str().unwrap_or("?").to_owned()))
                    .collect();
                for m in d["Metrics"].as_array().into_iter().flatten() {
                    let name = m["Name"].as_str().unwrap_or_default().to_owned();
                    if let Some(v) = doc[&name].as_f64() {
                        points.push((name, dims.clone(), v));
                    }
                }
            }
        }
    }
    Ok(points)
}

fn dims(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The sum of `metric` over every period, for exactly these dimensions.
fn total(points: &[Point], metric: &str, d: &BTreeMap<String, String>) -> f64 {
    points
        .iter()
        .filter(|(n, pd, _)| n == metric && pd == d)
        .map(|(_, _, v)| v)
        .sum()
}

/// The latest value of `metric` for these dimensions.
fn latest(points: &[Point], metric: &str, d: &BTreeMap<String, String>) -> Option<f64> {
    points
        .iter()
        .rev()
        .find(|(n, pd, _)| n == metric && pd == d)
        .map(|(_, _, v)| *v)
}

/// Prometheus counters as name{labels} → value, from `ctl metrics --format prom`.
fn prom(socket: &Path) -> anyhow::Result<BTreeMap<String, f64>> {
    let r = call(
        socket,
        Command::Metrics {
            format: MetricsFormat::Prom,
        },
        TIMEOUT,
    )?;
    let text = r["text"].as_str().context("prom text")?;
    let mut types = BTreeMap::new();
    for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut w = l.split_whitespace().skip(2);
        if let (Some(n), Some(t)) = (w.next(), w.next()) {
            types.insert(n.to_owned(), t.to_owned());
        }
    }
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            let family = name.strip_suffix("_total").unwrap_or(name);
            let counter = [name, family]
                .iter()
                .any(|n| types.get(*n).map(String::as_str) == Some("counter"));
            counter.then(|| Some((series.to_owned(), value.parse().ok()?)))?
        })
        .collect())
}

fn wait_until(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while !done()? {
        ensure!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

#[test]
fn emitted_metrics_match_the_traffic_sent() -> anyhow::Result<()> {
    let net = AgentNet::new("lbt-metrics")?;
    let dir = PathBuf::from(format!("/run/lb/test-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let emf = dir.join("emf.log");
    let socket = dir.join("admin.sock");
    let config = dir.join("lb.toml");
    // The example's [metrics] table, with one-second periods written to a file.
    let example = std::fs::read_to_string(example_config())?;
    let ours = format!(
        "[metrics]\nnamespace = \"lb-test\"\navailability_zone = \"lab-1a\"\nperiod_secs = 1\nemf = \"file:{}\"\n",
        emf.display()
    );
    let start = example
        .find("\n[metrics]\n")
        .context("no [metrics] in the example")?
        + 1;
    let end = start
        + example[start..]
            .find("\n[")
            .context("[metrics] is the last table")?
        + 1;
    let text = format!("{}{ours}{}", &example[..start], &example[end..]);
    std::fs::write(&config, text)?;
    let sock = socket.display().to_string();
    let args = ["--stats-interval", "0", "--admin-socket", sock.as_str()];
    let agent = net.start_agent(&config, &args)?;
    let lb = dims(&[("LoadBalancer", "dns")]);
    let tg = dims(&[("LoadBalancer", "web"), ("TargetGroup", "web-servers")]);

    // Healthy first (the example checks TCP port 80 every 2 s).
    wait_until("HealthyHostCount 3", Duration::from_secs(15), || {
        Ok(latest(&emf_points(&emf)?, "HealthyHostCount", &tg) == Some(3.0))
    })?;

    // Known traffic: QUERIES new UDP flows of one packet each.
    let reached: BTreeSet<usize> = net.client.enter(|| -> anyhow::Result<BTreeSet<usize>> {
        (40_000..40_000 + QUERIES as u16).map(udp_query).collect()
    })??;
    ensure!(reached.len() == 3, "queries reached only {reached:?}");
    std::thread::sleep(Duration::from_millis(2500));
    let points = emf_points(&emf)?;
    for (metric, want) in [
        ("ProcessedPackets", QUERIES),
        ("ProcessedBytes", QUERIES * QUERY_FRAME),
        ("ProcessedBytes_UDP", QUERIES * QUERY_FRAME),
        ("NewFlowCount", QUERIES),
        ("NewFlowCount_UDP", QUERIES),
    ] {
        let got = total(&points, metric, &lb);
        ensure!(got == want as f64, "{metric} for dns: {got}, sent {want}");
        let zoned = total(
            &points,
            metric,
            &dims(&[("LoadBalancer", "dns"), ("AvailabilityZone", "lab-1a")]),
        );
        ensure!(
            zoned == want as f64,
            "{metric} for dns in lab-1a: {zoned}, sent {want}"
        );
    }
    ensure!(
        total(&points, "NewFlowCount_TCP", &lb) == 0.0,
        "TCP flows on a UDP VIP"
    );

    // ctl metrics and ctl top answer from the same samples.
    for format in [
        MetricsFormat::Emf,
        MetricsFormat::Datum,
        MetricsFormat::Json,
    ] {
        let r = call(&socket, Command::Metrics { format }, TIMEOUT)?;
        ensure!(
            r.as_object().is_some_and(|o| !o.is_empty()),
            "metrics {format:?}: {r}"
        );
    }
    let top = call(&socket, Command::Top, TIMEOUT)?;
    let dns = top["vips"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "dns"))
        .with_context(|| format!("no dns in top: {top}"))?;
    ensure!(dns["healthy"] == "3/3" && dns["proto"] == "udp", "{dns}");
    ensure!(top["targets"].as_array().map(Vec::len) == Some(3), "{top}");

    // A backend stops: the host counts follow, and back.
    net.set_http(1, HttpMode::Refuse);
    wait_until("UnHealthyHostCount 1", Duration::from_secs(15), || {
        let p = emf_points(&emf)?;
        Ok(latest(&p, "UnHealthyHostCount", &tg) == Some(1.0)
            && latest(&p, "HealthyHostCount", &tg) == Some(2.0))
    })?;
    net.set_http(1, HttpMode::Up);
    wait_until("HealthyHostCount 3 again", Duration::from_secs(15), || {
        let p = emf_points(&emf)?;
        Ok(latest(&p, "UnHealthyHostCount", &tg) == Some(0.0)
            && latest(&p, "HealthyHostCount", &tg) == Some(3.0))
    })?;

    // Counters never go down across a restart (they are pinned).
    let before = prom(&socket)?;
    ensure!(!before.is_empty(), "no Prometheus counters");
    let status = agent.process.stop()?;
    ensure!(status.success(), "lb-agent exited with {status}");
    let agent = net.start_agent(&config, &args)?;
    let mut after = BTreeMap::new();
    wait_until("Prometheus counters after the restart", TIMEOUT, || {
        after = prom(&socket).unwrap_or_default();
        Ok(!after.is_empty())
    })?;
    for (series, v) in &before {
        let a = after.get(series).copied().unwrap_or(0.0);
        ensure!(a >= *v, "{series} went down across the restart: {v} → {a}");
    }
    // And the first periods after the restart count nothing that was not sent.
    let lines_before = std::fs::read_to_string(&emf)?.lines().count();
    std::thread::sleep(Duration::from_millis(2500));
    let all = emf_points(&emf)?;
    let text = std::fs::read_to_string(&emf)?;
    let new: Vec<&str> = text.lines().skip(lines_before).collect();
    ensure!(!new.is_empty(), "no EMF after the restart");
    let tmp = dir.join("after.log");
    std::fs::write(&tmp, new.join("\n"))?;
    let since = emf_points(&tmp)?;
    ensure!(
        total(&since, "ProcessedPackets", &lb) == 0.0,
        "the restart re-counted old packets: {}",
        total(&since, "ProcessedPackets", &lb)
    );
    ensure!(all.len() > since.len(), "EMF file truncated");
    let status = agent.process.stop()?;
    ensure!(status.success(), "lb-agent exited with {status}");
    net.down()?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
