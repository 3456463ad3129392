//! Fault matrix, the control plane under storms: 100 SIGHUP reloads in 10 s alternating
//! valid and invalid files, 1,000 runtime edits in a burst from concurrent clients, and
//! a configuration with 10,000 targets applied and reverted. All under client load
//! through the VIP; the agent must stay responsive, lose nothing and end in exactly the
//! state the last accepted change says.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _};
use lb_agent::{
    admin::{client::call, protocol::Command},
    config::{Config, Draft},
};
use lb_tests::{
    agentnet::backend,
    faults::{fds, footprint, footprint_text, rss_kib, under_load, FaultNet},
};
use nix::{
    sys::{
        resource::{getrlimit, setrlimit, Resource},
        signal::Signal,
    },
    unistd::Pid,
};
use serde_json::Value;

/// The tests of this file one at a time: each runs load and storms on a 2-core VM.
static SERIAL: Mutex<()> = Mutex::new(());

fn agent_pid(f: &FaultNet) -> anyhow::Result<u32> {
    Ok(f.agent.as_ref().context("no agent running")?.process.pid())
}

fn validated(text: &str) -> anyhow::Result<Config> {
    Ok(Draft::parse(text).and_then(|d| d.validate())?)
}

/// The running configuration (`ctl config`), validated.
fn running(f: &FaultNet) -> anyhow::Result<Config> {
    let shown = f.ctl(Command::ConfigShow)?;
    validated(shown["toml"].as_str().context("config toml")?)
}

/// Writes `text` to `path` as a whole (a temporary file renamed over it): the agent
/// never reads half a file.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Asks `cmd` every 50 ms from its own thread until stopped, checking each reply with
/// `check`; the slowest reply.
struct Responsiveness {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Duration, usize, Vec<String>)>,
}

impl Responsiveness {
    fn start(socket: &Path, cmd: Command, check: fn(&Value) -> Result<(), String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (socket, flag) = (socket.to_owned(), stop.clone());
        let thread = std::thread::spawn(move || {
            let (mut slowest, mut replies, mut errors) = (Duration::ZERO, 0, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                match call(&socket, cmd.clone(), Duration::from_secs(10)) {
                    Ok(v) => {
                        replies += 1;
                        if let Err(e) = check(&v) {
                            errors.push(e);
                        }
                    }
                    Err(e) => errors.push(e.to_string()),
                }
                slowest = slowest.max(t.elapsed());
                std::thread::sleep(Duration::from_millis(50));
            }
            (slowest, replies, errors)
        });
        Self { stop, thread }
    }

    /// The slowest reply, how many came, and the errors.
    fn stop(self) -> (Duration, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// The slowest admin reply allowed during a storm (debug build, a shared 2-core VM).
const RESPONSIVE: Duration = Duration::from_secs(3);

#[test]
fn sighup_storm_of_valid_and_invalid_files() -> anyhow::Result<()> {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let f = FaultNet::start("lbt-fb3", "", &[])?;
    let base = std::fs::read_to_string(&f.config)?;
    let be2 = format!("address = \"{}\"\nweight = 1", backend(2));
    ensure!(base.contains(&be2), "the example's be2 entry changed");
    // Valid: be2's weight, a different one each time. Invalid, in turn: a TOML syntax
    // error, and a VIP naming a target group that does not exist.
    let valid = |k: usize| {
        base.replace(
            &be2,
            &format!("address = \"{}\"\nweight = {}", backend(2), 2 + k % 4),
        )
    };
    let invalid = |k: usize| {
        if k.is_multiple_of(2) {
            base.replace(&be2, &format!("address = \"{}\"\nweight = = 3", backend(2)))
        } else {
            base.replace(
                "target_group = \"web-servers\"\n",
                "target_group = \"no-such-group\"\n",
            )
        }
    };
    let pid = Pid::from_raw(agent_pid(&f)? as i32);
    f.drain_log();
    const RELOADS: usize = 100;
    let mut last_valid = base.clone();
    let (report, (took, admin)) = under_load(
        &f.net,
        "100 SIGHUP reloads in 10 s, valid and invalid in turn",
        Duration::from_millis(300),
        Duration::from_secs(1),
        || {
            // The running configuration, read all along, is always a valid one.
            let probe = Responsiveness::start(&f.socket, Command::ConfigShow, |v| {
                let text = v["toml"].as_str().ok_or("no toml")?;
                validated(text).map(drop).map_err(|e| e.to_string())
            });
            let began = Instant::now();
            // Invalid first, valid last: the last signal follows the last valid file,
            // and a reload always follows the last signal.
            for i in 0..RELOADS {
                let text = if i % 2 == 1 {
                    last_valid = valid(i / 2);
                    last_valid.clone()
                } else {
                    invalid(i / 2)
                };
                write_atomically(&f.config, &text)?;
                nix::sys::signal::kill(pid, Signal::SIGHUP)?;
                // Evenly over 10 s.
                let next = began + Duration::from_millis(100 * (i as u64 + 1));
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            let took = began.elapsed();
            Ok((took, probe.stop()))
        },
    )?;
    report.assert_nothing_lost()?;
    // Let the last reload finish, then count from the log.
    std::thread::sleep(Duration::from_secs(2));
    let log = f.drain_log();
    if std::env::var_os("LB_DEBUG_LOG").is_some() {
        for l in log.iter().take(40) {
            println!("LOG {l}");
        }
    }
    let count = |needle: &str| log.iter().filter(|l| l.contains(needle)).count();
    let (reloads, applied, rejected) = (
        count("SIGHUP: reloading"),
        count("configuration applied"),
        count("configuration rejected, the running one stays in place"),
    );
    let (slowest, replies, errors) = admin;
    println!(
        "FAULT sighup storm: {RELOADS} SIGHUPs in {} ms; the agent reloaded {reloads} times: {applied} applied, {rejected} rejected; admin: {replies} status replies, slowest {} ms, {} errors",
        took.as_millis(),
        slowest.as_millis(),
        errors.len()
    );
    for needle in ["expected", "no-such-group"] {
        if let Some(l) = log
            .iter()
            .find(|l| l.contains("rejected") && l.contains(needle))
        {
            println!("  {l}");
        }
    }
    ensure!(
        errors.is_empty(),
        "admin errors during the storm: {errors:?}"
    );
    ensure!(
        slowest < RESPONSIVE,
        "the agent answered in {slowest:?} during the storm"
    );
    // Each reload ends applied or rejected before the next begins, and a rejected one
    // installs nothing.
    let mut open: Option<bool> = None;
    for l in &log {
        if l.contains("SIGHUP: reloading") {
            ensure!(
                open.is_none(),
                "a reload began before the previous one ended"
            );
            open = Some(false);
        } else if l.contains("ring installed") {
            ensure!(open.is_some(), "a ring installed outside a reload");
            open = Some(true);
        } else if l.contains("configuration applied") {
            ensure!(open.is_some(), "applied outside a reload");
            open = None;
        } else if l.contains("configuration rejected") {
            ensure!(open == Some(false), "a rejected reload installed rings");
            open = None;
        }
    }
    // Signals that arrive while a reload runs are merged into one (POSIX signals do not
    // queue), so the agent reloads at most once per signal, and at least once after the
    // last: every file it read was judged on its own.
    ensure!(
        applied + rejected == reloads
            && (2..=RELOADS).contains(&reloads)
            && applied > 0
            && rejected > 0,
        "{reloads} reloads: {applied} applied and {rejected} rejected"
    );
    ensure!(
        running(&f)? == validated(&last_valid)?,
        "the running configuration is not the last valid file"
    );
    Ok(())
}

/// `edits` set-weight edits from `CLIENTS` concurrent admin clients, client `c` on
/// `targets[c % targets.len()]`, each client's last edit setting `last[c %
/// targets.len()]` (two clients on one target end alike, so whichever finishes last
/// leaves it): how long they took, and every failure or warning.
fn edit_burst(
    socket: &Path,
    targets: &[Ipv4Addr],
    last: &[u16],
    edits: usize,
) -> (Duration, Vec<String>) {
    const CLIENTS: usize = 4;
    let began = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let socket = socket.to_owned();
            let (target, last) = (targets[c % targets.len()], last[c % targets.len()]);
            let n = edits / CLIENTS;
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                for j in 0..n {
                    let weight = if j + 1 == n { last } else { 1 + (j % 4) as u16 };
                    let cmd = Command::BackendSetWeight {
                        group: "web-servers".into(),
                        address: target.into(),
                        weight,
                    };
                    match call(&socket, cmd, Duration::from_secs(20)) {
                        Ok(v) if v["warnings"].as_array().is_some_and(|w| w.is_empty()) => {}
                        Ok(v) => failures.push(format!("warnings: {v}")),
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                failures
            })
        })
        .collect();
    let failures = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap_or_else(|_| vec!["client panicked".into()]))
        .collect();
    (began.elapsed(), failures)
}

#[test]
fn thousand_runtime_edits_in_a_burst() -> anyhow::Result<()> {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Three extra targets nothing answers: they stay `initial` (no ring slots), so
    // changing their weight re-plans, validates, saves and answers like any edit but
    // swaps no ring. Every edit of a serving target's weight swaps the rings of the
    // three VIPs of its group, each swap waiting for an RCU grace period in the kernel
    // (map-in-map update): that part is measured on its own, with fewer edits.
    let extra: Vec<Ipv4Addr> = (1..=3).map(|i| Ipv4Addr::new(198, 19, 0, i)).collect();
    let f = FaultNet::start("lbt-fb4", "", &[])?;
    for a in &extra {
        f.ctl(Command::BackendAdd {
            group: "web-servers".into(),
            address: (*a).into(),
            weight: 1,
        })?;
    }
    let pid = agent_pid(&f)?;
    const EDITS: usize = 1000;
    const RING_EDITS: usize = 60;
    const LAST_EXTRA: [u16; 3] = [2, 3, 4];
    const LAST_SERVING: [u16; 3] = [3, 1, 2];
    let serving: Vec<Ipv4Addr> = (0..3).map(backend).collect();
    let ids_before = state_ids(&f)?;
    let rss_before = rss_kib(pid)?;
    let (report, (plain, with_rings)) = under_load(
        &f.net,
        "1,000 + 60 runtime edits in bursts (4 clients)",
        Duration::from_millis(300),
        Duration::from_secs(1),
        || {
            let plain = edit_burst(&f.socket, &extra, &LAST_EXTRA, EDITS);
            let with_rings = edit_burst(&f.socket, &serving, &LAST_SERVING, RING_EDITS);
            Ok((plain, with_rings))
        },
    )?;
    let rss_after = rss_kib(pid)?;
    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "FAULT runtime edits: {EDITS} edits (no ring moves) in {} ms ({:.0} edits/s), {} failed; {RING_EDITS} edits moving ring slots in {} ms ({:.1} edits/s), {} failed; agent RSS {rss_before} KiB before, {rss_after} KiB after",
        plain.0.as_millis(),
        rate(EDITS, plain.0),
        plain.1.len(),
        with_rings.0.as_millis(),
        rate(RING_EDITS, with_rings.0),
        with_rings.1.len(),
    );
    report.assert_nothing_lost()?;
    let failures: Vec<&String> = plain.1.iter().chain(&with_rings.1).collect();
    ensure!(
        failures.is_empty(),
        "edits failed: {:?}",
        &failures[..failures.len().min(5)]
    );
    // What the last edits say, in the running configuration, the backend list and the
    // state file alike.
    let want: Vec<(Ipv4Addr, u16)> = extra
        .iter()
        .copied()
        .zip(LAST_EXTRA)
        .chain(serving.iter().copied().zip(LAST_SERVING))
        .collect();
    let weights = |cfg: &Config| -> Vec<(Ipv4Addr, u16)> {
        want.iter()
            .map(|(a, _)| {
                let w = cfg
                    .target_groups
                    .iter()
                    .flat_map(|g| &g.targets)
                    .find(|t| t.address == IpAddr::from(*a))
                    .map_or(0, |t| t.weight);
                (*a, w)
            })
            .collect()
    };
    ensure!(
        weights(&running(&f)?) == want,
        "running weights {:?}",
        weights(&running(&f)?)
    );
    let list = f.ctl(Command::BackendList { group: None })?;
    for (a, w) in &want {
        let shown = list
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["address"] == a.to_string())
            .map(|b| b["weight"].clone());
        ensure!(
            shown == Some(Value::from(*w)),
            "backend list: {a} weight {shown:?}"
        );
    }
    let state: Value = serde_json::from_str(&std::fs::read_to_string(f.state_file())?)?;
    let saved = validated(state["running_config"].as_str().context("running_config")?)?;
    ensure!(
        weights(&saved) == want,
        "state file weights {:?}",
        weights(&saved)
    );
    ensure!(
        state["edited"] == Value::Bool(true),
        "the state file does not say edited"
    );
    ensure!(state_ids(&f)? == ids_before, "ids changed");
    Ok(())
}

/// The VIP and backend ids in the state file.
fn state_ids(f: &FaultNet) -> anyhow::Result<Value> {
    let state: Value = serde_json::from_str(&std::fs::read_to_string(f.state_file())?)?;
    Ok(serde_json::json!({"vips": state["vips"], "backends": state["backends"]}))
}

/// The VIP list without what changes by itself (flows, announce reasons).
fn vip_view(f: &FaultNet) -> anyhow::Result<Vec<(String, Value, Value, Value)>> {
    let vips = f.ctl(Command::VipList)?;
    Ok(vips
        .as_array()
        .context("vip list")?
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or_default().to_owned(),
                v["vip_id"].clone(),
                v["backends"].clone(),
                v["fingerprint"].clone(),
            )
        })
        .collect())
}

/// 10,000 targets in 198.19.0.0/16: routed to be0, which does not forward, so every
/// health check's SYN goes unanswered until its timeout.
fn big_config(base: &str, targets: usize) -> String {
    let mut text = base.to_owned();
    text.push_str(
        "\n[[vip]]\nname = \"big\"\naddress = \"198.18.200.2\"\nport = 80\nprotocol = \"tcp\"\nmode = \"dr\"\ntarget_group = \"big\"\n\n[[target_group]]\nname = \"big\"\n[target_group.health_check]\nprotocol = \"tcp\"\nport = 80\ninterval_secs = 2\ntimeout_secs = 2\n",
    );
    for i in 0..targets {
        let a = Ipv4Addr::new(198, 19, (i / 250) as u8, (i % 250 + 1) as u8);
        text.push_str(&format!("[[target_group.target]]\naddress = \"{a}\"\n"));
    }
    text
}

#[test]
fn ten_thousand_targets_applied_and_reverted() -> anyhow::Result<()> {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The agent starts with systemd's default for services: a soft limit of 1,024
    // descriptors (the hard one as it is). It inherits the limit from this process.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, 1024.min(hard), hard)?;
    let started = FaultNet::start("lbt-fb5", "", &[]);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard)?;
    let f = started?;
    let pid = agent_pid(&f)?;
    let budget = f.log_lines("file descriptor budget");
    println!(
        "  {}",
        budget.first().map_or("no budget logged", |l| l.as_str())
    );
    f.net.lb.ip(&[
        "route",
        "add",
        "198.19.0.0/16",
        "via",
        &backend(0).to_string(),
    ])?;
    let base = std::fs::read_to_string(&f.config)?;
    let big = f.config.with_extension("big.toml");
    std::fs::write(&big, big_config(&base, 10_000))?;
    let ids_before = state_ids(&f)?;
    let vips_before = vip_view(&f)?;
    let before = footprint(pid)?;
    let apply = |path: &Path| -> anyhow::Result<(Duration, Value)> {
        let t = Instant::now();
        let reply = call(
            &f.socket,
            Command::Apply {
                path: path.display().to_string(),
                dry_run: false,
            },
            Duration::from_secs(120),
        )?;
        Ok((t.elapsed(), reply))
    };
    let (report, (applied, reverted, during, admin, applied_reply_unsaved)) = under_load(
        &f.net,
        "10,000 targets applied and reverted",
        Duration::from_millis(300),
        Duration::from_secs(1),
        || {
            let probe = Responsiveness::start(&f.socket, Command::Status, |_| Ok(()));
            let (applied, reply) = apply(&big)?;
            let unsaved = reply["warnings"].to_string().contains("not yet persisted");
            println!(
                "  apply: {} ms, backends_added {}, warnings {}",
                applied.as_millis(),
                reply["backends_added"],
                reply["warnings"]
            );
            // The checks of 10,000 unreachable targets run for a few intervals.
            let (mut max_rss, mut max_fds) = (0, 0);
            let watch = Instant::now();
            while watch.elapsed() < Duration::from_secs(6) {
                max_rss = max_rss.max(rss_kib(pid)?);
                max_fds = max_fds.max(fds(pid)?);
                std::thread::sleep(Duration::from_millis(200));
            }
            let shown = vip_view(&f)?;
            let big_vip = shown.iter().find(|v| v.0 == "big").cloned();
            println!("  big VIP: {big_vip:?}");
            let (reverted, _) = apply(&f.config)?;
            Ok((applied, reverted, (max_rss, max_fds), probe.stop(), unsaved))
        },
    )?;
    std::thread::sleep(Duration::from_secs(3));
    let after = footprint(pid)?;
    let (slowest, replies, errors) = admin;
    println!(
        "FAULT 10,000 targets: apply {} ms, revert {} ms; {}; admin: {replies} status replies, slowest {} ms, {} errors",
        applied.as_millis(),
        reverted.as_millis(),
        footprint_text(before, during, after),
        slowest.as_millis(),
        errors.len()
    );
    report.assert_nothing_lost()?;
    ensure!(
        errors.is_empty(),
        "admin errors: {:?}",
        &errors[..errors.len().min(5)]
    );
    ensure!(slowest < RESPONSIVE, "status took {slowest:?}");
    ensure!(
        !applied_reply_unsaved,
        "the apply's state was not persisted (descriptors exhausted?)"
    );
    ensure!(state_ids(&f)? == ids_before, "ids differ after the revert");
    ensure!(
        vip_view(&f)? == vips_before,
        "VIPs or rings differ after the revert"
    );
    ensure!(
        running(&f)? == validated(&base)?,
        "the running configuration is not the original"
    );
    std::fs::remove_file(&big)?;
    Ok(())
}
