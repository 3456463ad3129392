//! Fault matrix, the agent's state file (`/run/lb/<scope>/state.json`: the VIP and
//! backend ids the pinned flow table refers to, target health, drains, runtime edits):
//! unreadable at start (truncated, garbage, invalid JSON, JSON of the wrong shape), from
//! an older agent, and the disk full while it is written. All under client load through
//! the VIP; the pinned data plane forwards throughout, so nothing may be lost.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command as Process, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _};
use lb_agent::admin::protocol::Command;
use lb_tests::{
    agentnet::backend,
    faults::{exists, under_load_mut, FaultNet},
    netns::ChildGuard,
};
use nix::{sys::signal::Signal, unistd::Pid};
use serde_json::Value;

/// The tests of this file one at a time: each runs load and restarts on a 2-core VM.
static SERIAL: Mutex<()> = Mutex::new(());

/// The ids a state file holds (what the flow table refers to), in id order.
fn ids(state: &Value) -> Value {
    let sorted = |key: &str| {
        let mut v: Vec<Value> = state[key].as_array().cloned().unwrap_or_default();
        v.sort_by_key(|e| e["id"].as_u64());
        Value::Array(v)
    };
    serde_json::json!({"vips": sorted("vips"), "backends": sorted("backends")})
}

fn read_state(f: &FaultNet) -> anyhow::Result<Value> {
    let path = f.state_file();
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Each VIP's ring fingerprint, by name.
fn fingerprints(f: &FaultNet) -> anyhow::Result<Vec<(String, String)>> {
    let vips = f.ctl(Command::VipList)?;
    let mut out: Vec<(String, String)> = vips
        .as_array()
        .context("vip list")?
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or_default().to_owned(),
                v["fingerprint"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Stops the running agent with SIGTERM (the data plane stays pinned and forwarding).
fn stop_agent(f: &mut FaultNet) -> anyhow::Result<()> {
    let agent = f.agent.take().context("no agent running")?;
    let status = agent.process.stop()?;
    ensure!(
        status.success(),
        "the agent exited with {status} on SIGTERM"
    );
    Ok(())
}

/// Starts `lb-agent run` on the test's configuration, expecting it to refuse: its exit
/// code, its error line and how long it took.
fn start_refused(f: &FaultNet) -> anyhow::Result<(i32, String, Duration)> {
    let bin = f.net.agent_bin.to_str().context("agent path")?;
    let config = f.config.to_str().context("config path")?;
    let args = [
        "run",
        "--iface",
        "l0",
        "--config",
        config,
        "--stats-interval",
        "0",
    ];
    let mut cmd = f.net.lb.command_net_only(bin, &args);
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    let began = Instant::now();
    let mut child = ChildGuard::new(cmd.spawn()?, "lb-agent (expected to refuse)");
    let stderr = child.take_stderr().context("stderr")?;
    let reader = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if began.elapsed() > Duration::from_secs(20) {
            bail!("the agent did not refuse within 20 s (it started on an unreadable state file?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = began.elapsed();
    let lines = reader.join().unwrap_or_default();
    let error = lines
        .iter()
        .find(|l| l.contains("ERROR"))
        .cloned()
        .with_context(|| format!("no error line; it printed:\n{}", lines.join("\n")))?;
    Ok((status.code().unwrap_or(-1), error, took))
}

/// The test's configuration with its targets listed in the other order: a fresh
/// numbering of this file would give be2 the id be0 has and the other way round, and
/// the VIPs keep theirs, so the flow table's entries would send be0's connections to
/// be2 (ring slots are placed by target address, so a VIP whose id changed would re-hash
/// its flows onto the same targets: only backend ids moved under an unchanged VIP id
/// show). Only ids kept or rebuilt right keep the flows.
fn reorder(config: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config)?;
    let swapped = text
        .replace("\naddress = \"198.18.11.2\"", "\naddress = \"X\"")
        .replace("\naddress = \"198.18.13.2\"", "\naddress = \"198.18.11.2\"")
        .replace("\naddress = \"X\"", "\naddress = \"198.18.13.2\"");
    ensure!(swapped != text, "no targets to reorder");
    std::fs::write(config, swapped)?;
    Ok(())
}

/// Bytes made from the current state file.
type Damaged = Box<dyn Fn(&[u8]) -> Vec<u8>>;

/// What to do to the state file while the agent is stopped.
enum Damage {
    Bytes(&'static str, Damaged),
    /// An older agent's layout, made from the current file: it must load as it is.
    Older(&'static str, fn(&mut Value)),
}

/// After a refusal: how the operator gets the agent going again.
#[derive(Clone, Copy, Debug, PartialEq)]
enum WayOut {
    /// `--recover-state`: the file set aside, ids rebuilt from the pins.
    RecoverFlag,
    /// The file removed by hand: ids rebuilt from the pins too.
    Remove,
    /// A good copy put back.
    Restore,
}

#[test]
fn unreadable_or_older_state_file_at_start() -> anyhow::Result<()> {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut f = FaultNet::start("lbt-fb1", "", &[])?;
    reorder(&f.config)?;
    let pid = Pid::from_raw(f.agent.as_ref().context("agent")?.process.pid() as i32);
    nix::sys::signal::kill(pid, Signal::SIGHUP)?;
    f.wait_log("configuration applied", Duration::from_secs(10))?;
    let good = std::fs::read(f.state_file())?;
    let original: Value = serde_json::from_slice(&good)?;
    let want_ids = ids(&original);
    let want_rings = fingerprints(&f)?;
    // The test is only worth its name if a fresh numbering would differ: be0 was
    // numbered first, the reordered file lists it last.
    let be0_id = want_ids["backends"]
        .as_array()
        .and_then(|v| v.iter().find(|b| b["address"] == "198.18.11.2"))
        .map(|b| b["id"].clone());
    ensure!(
        be0_id == Some(Value::from(0)),
        "be0 has id {be0_id:?}: the reordered file would not number it differently"
    );
    println!("ids: {want_ids}");

    let cases: Vec<(Damage, WayOut)> = vec![
        (
            Damage::Bytes("truncated to half", Box::new(|b| b[..b.len() / 2].to_vec())),
            WayOut::RecoverFlag,
        ),
        (
            Damage::Bytes("truncated to 0 bytes", Box::new(|_| Vec::new())),
            WayOut::RecoverFlag,
        ),
        (
            Damage::Bytes(
                "garbage (binary)",
                Box::new(|b| b.iter().map(|x| x.wrapping_mul(151) ^ 0xa5).collect()),
            ),
            WayOut::Remove,
        ),
        (
            Damage::Bytes(
                "invalid JSON",
                Box::new(|_| b"{\"vips\": [}, \"backends\": ".to_vec()),
            ),
            WayOut::Restore,
        ),
        (
            Damage::Bytes(
                "valid JSON of the wrong shape",
                Box::new(|_| {
                    br#"{"vips": "web", "backends": {"be0": 1}, "next_backend": -1}"#.to_vec()
                }),
            ),
            WayOut::RecoverFlag,
        ),
        (
            // The first release's layout (commit 8254e78): the id allocation only.
            Damage::Older("ids only (the first layout)", |v| {
                if let Some(o) = v.as_object_mut() {
                    o.retain(|k, _| {
                        ["vips", "backends", "next_backend", "freed_backends"].contains(&k.as_str())
                    });
                }
            }),
            WayOut::Restore,
        ),
        (
            // Before the announce work (3bcf836) and group policies: every field marked
            // `#[serde(default)]` since the lifecycle came is gone but the lifecycle's
            // targets.
            Damage::Older("before withdraw and lifecycle policies", |v| {
                if let Some(o) = v.as_object_mut() {
                    o.remove("withdrawn");
                    if let Some(l) = o.get_mut("lifecycle").and_then(Value::as_object_mut) {
                        l.remove("policies");
                    }
                }
            }),
            WayOut::Restore,
        ),
    ];

    for (damage, way_out) in cases {
        stop_agent(&mut f)?;
        let current = std::fs::read(f.state_file())?;
        let path = f.state_file();
        let (name, written, older) = match &damage {
            Damage::Bytes(name, make) => (*name, make(&current), false),
            Damage::Older(name, strip) => {
                let mut v: Value = serde_json::from_slice(&current)?;
                strip(&mut v);
                (*name, serde_json::to_vec_pretty(&v)?, true)
            }
        };
        std::fs::write(&path, &written)?;
        let fault = format!("state.json {name} at start");
        let (report, ()) = under_load_mut(
            &mut f,
            &fault,
            Duration::from_millis(300),
            Duration::from_secs(1),
            |f| {
                if !older {
                    let (code, error, took) = start_refused(f)?;
                    println!(
                        "  refused in {} ms, exit code {code}: {error}",
                        took.as_millis()
                    );
                    ensure!(code != 0, "exit code 0 on a refusal");
                    ensure!(
                        error.contains(&path.display().to_string())
                            && error.contains("--recover-state")
                            && error.contains("keeps forwarding"),
                        "the refusal does not name the file and the way out: {error}"
                    );
                    ensure!(
                        std::fs::read(&path)? == written,
                        "the refusing agent changed the state file"
                    );
                    // The agent is down, the pinned data plane forwards on its own.
                    std::thread::sleep(Duration::from_secs(1));
                    ensure!(
                        f.net.attached()?,
                        "XDP program gone while the agent refused"
                    );
                    match way_out {
                        WayOut::RecoverFlag => f.start_agent(&["--recover-state"])?,
                        WayOut::Remove => {
                            std::fs::remove_file(&path)?;
                            f.start_agent(&[])?
                        }
                        WayOut::Restore => {
                            std::fs::write(&path, &current)?;
                            f.start_agent(&[])?
                        }
                    }
                    println!("  way out: {way_out:?}");
                } else {
                    f.start_agent(&[])?;
                    println!("  loaded as it is");
                }
                Ok(())
            },
        )?;
        report.assert_nothing_lost()?;
        if way_out == WayOut::RecoverFlag {
            let aside = path.with_extension("json.unreadable");
            ensure!(
                std::fs::read(&aside)? == written,
                "the unreadable file was not kept as {}",
                aside.display()
            );
            let rebuilt = f.log_lines("rebuilt them from the pinned tables");
            ensure!(!rebuilt.is_empty(), "no log line says the ids were rebuilt");
        }
        // Same ids, same rings: the flow table still means what it meant.
        let now = read_state(&f)?;
        ensure!(
            ids(&now) == want_ids,
            "{name}: ids changed:\n{}\nwas\n{want_ids}",
            ids(&now)
        );
        ensure!(
            fingerprints(&f)? == want_rings,
            "{name}: rings changed: {:?} (was {want_rings:?})",
            fingerprints(&f)?
        );
    }
    Ok(())
}

/// A small tmpfs mounted over a directory, unmounted (lazily, whatever still holds it)
/// when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let out = Process::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()?;
        ensure!(
            out.status.success(),
            "mounting a tmpfs on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Self(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Process::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Fills the file system of `path` with it until no byte more fits; returns its size.
fn fill(path: &Path) -> anyhow::Result<u64> {
    let mut file = std::fs::File::create(path)?;
    let block = [0x5au8; 1024];
    let mut written = 0u64;
    loop {
        match file.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e.into()),
        }
        ensure!(written < 1 << 30, "the file system never filled up");
    }
    // Page-sized remainders: single bytes until nothing fits.
    while let Ok(1) = file.write(&block[..1]) {
        written += 1;
    }
    Ok(written)
}

/// The weight the running configuration TOML gives `address`.
fn weight_in(toml_text: &str, address: &str) -> Option<u16> {
    let cfg = lb_agent::config::Draft::parse(toml_text)
        .and_then(|d| d.validate())
        .ok()?;
    cfg.target_groups
        .iter()
        .flat_map(|g| &g.targets)
        .find(|t| t.address.to_string() == address)
        .map(|t| t.weight)
}

#[test]
fn disk_full_while_the_state_is_written() -> anyhow::Result<()> {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = "lbt-fb2";
    // state.json (about 25 KB: ids, health, the running configuration and the file's
    // text) and its temporary copy fit; the admin socket lives here too.
    let run_dir = PathBuf::from(format!("/run/lb/netns-{prefix}-lb"));
    let _tmpfs = Tmpfs::mount(&run_dir, "128k")?;
    let mut f = FaultNet::start(prefix, "", &[])?;
    let state = f.state_file();
    let tmp = state.with_extension("json.tmp");
    let target = backend(2);
    let before = std::fs::read(&state)?;
    let before_weight = weight_in(
        read_state(&f)?["running_config"]
            .as_str()
            .unwrap_or_default(),
        &target.to_string(),
    );
    ensure!(before_weight == Some(1), "weight before: {before_weight:?}");
    let filler = run_dir.join("filler");
    let want_ids = ids(&read_state(&f)?);

    let (report, (reply, error_log)) = under_load_mut(
        &mut f,
        "disk full while state.json is written",
        Duration::from_millis(300),
        Duration::from_secs(1),
        |f| {
            let filled = fill(&filler)?;
            println!(
                "  filled the {} file system with {filled} bytes",
                run_dir.display()
            );
            let reply = f.ctl(Command::BackendSetWeight {
                group: "web-servers".into(),
                address: target.into(),
                weight: 2,
            })?;
            let (error_log, _) = f.wait_log("not persisted", Duration::from_secs(5))?;
            // The old state is intact and parseable; no temporary file is left.
            ensure!(
                std::fs::read(&state)? == before,
                "state.json changed on a full disk"
            );
            ensure!(!exists(&tmp), "{} left behind", tmp.display());
            // Still full for a few retries.
            std::thread::sleep(Duration::from_millis(2500));
            ensure!(
                std::fs::read(&state)? == before,
                "state.json changed on a full disk"
            );
            ensure!(!exists(&tmp), "{} left behind by a retry", tmp.display());
            std::fs::remove_file(&filler)?;
            let freed = Instant::now();
            let (saved_log, _) = f.wait_log("saved again", Duration::from_secs(5))?;
            println!(
                "  space freed: saved {} ms later: {saved_log}",
                freed.elapsed().as_millis()
            );
            Ok((reply, error_log))
        },
    )?;
    report.assert_nothing_lost()?;
    let warnings: Vec<String> = reply["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_str().map(str::to_owned))
        .collect();
    println!("  reply warnings: {warnings:?}");
    println!("  log: {error_log}");
    ensure!(
        warnings.iter().any(|w| w.contains("not yet persisted")),
        "the edit's reply does not say the state is not persisted: {reply}"
    );
    let after = read_state(&f)?;
    let after_weight = weight_in(
        after["running_config"].as_str().unwrap_or_default(),
        &target.to_string(),
    );
    ensure!(
        after_weight == Some(2),
        "state.json after freeing space: weight {after_weight:?}"
    );

    // A restart comes up with the edit and the same ids.
    let (report, ()) = under_load_mut(
        &mut f,
        "restart after the disk was full",
        Duration::from_millis(300),
        Duration::from_secs(1),
        |f| {
            stop_agent(f)?;
            f.start_agent(&[])?;
            Ok(())
        },
    )?;
    report.assert_nothing_lost()?;
    let running = f.ctl(Command::ConfigShow)?;
    let weight = weight_in(
        running["toml"].as_str().unwrap_or_default(),
        &target.to_string(),
    );
    ensure!(
        weight == Some(2),
        "the restarted agent runs weight {weight:?}"
    );
    ensure!(
        ids(&read_state(&f)?) == want_ids,
        "ids changed over the restart"
    );
    Ok(())
}
