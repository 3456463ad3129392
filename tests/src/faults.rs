//! The fault matrix's common ground: the single-host topology ([`AgentNet`]) with the
//! real agent running the example configuration plus a line-protocol VIP, a steady
//! client load through the VIP while a fault happens, and the figures every fault test
//! prints (`FAULT <name>: …`) and asserts on.
//!
//! The load is two parts, both from the client namespace: [`LONG_LIVED`] connections
//! to the line port, each asking every [`ASK_EVERY`] and checking the same backend
//! answers every time (a connection that moved or broke is a lost connection), and a
//! new HTTP connection every [`NEW_EVERY`] (a failed one is a failed request).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _};
use lb_agent::admin::{client::call, protocol::Command};
use serde_json::Value;

use crate::{
    agentnet::{example_config, http_get_from, Agent, AgentNet, LINE_PORT, VIP},
    workload::{LongLived, LongLivedReport, ProbeReport, Prober},
};

/// The example configuration's target group, which the load's VIPs use.
pub const GROUP: &str = "web-servers";
/// Long-lived connections in a [`Load`].
pub const LONG_LIVED: usize = 20;
/// How often each long-lived connection asks.
pub const ASK_EVERY: Duration = Duration::from_millis(200);
/// How often a [`Load`] opens a new connection.
pub const NEW_EVERY: Duration = Duration::from_millis(25);

/// The agent under test in its topology, with its configuration file and admin socket.
pub struct FaultNet {
    // Field order is drop order: the agent before its topology.
    pub agent: Option<Agent>,
    pub net: AgentNet,
    pub config: PathBuf,
    pub socket: PathBuf,
    /// The mount namespace the agent runs in (`/proc/<pid>/ns/mnt`); the host's if `None`.
    pub mount_ns: Option<PathBuf>,
}

impl FaultNet {
    /// The topology with `prefix`, the example configuration plus a `lines` VIP on
    /// [`LINE_PORT`] plus `extra` TOML written to a file, and the agent started on it
    /// (`--stats-interval 0`, then `extra_args`); returns once every target is healthy
    /// and every VIP announced.
    pub fn start(prefix: &str, extra: &str, extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_with(prefix, &(config_text()? + extra), extra_args)
    }

    /// [`FaultNet::start`] with the whole configuration `text` (see [`config_text`]).
    pub fn start_with(prefix: &str, text: &str, extra_args: &[&str]) -> anyhow::Result<Self> {
        let mut me = Self::prepare(prefix, text)?;
        me.start_agent(extra_args)?;
        me.wait_steady(Duration::from_secs(15))?;
        Ok(me)
    }

    /// The topology and the configuration file (the whole `text`, see [`config_text`]),
    /// without the agent. Set `mount_ns`, then [`FaultNet::start_agent`] and
    /// [`FaultNet::wait_steady`].
    pub fn prepare(prefix: &str, text: &str) -> anyhow::Result<Self> {
        let net = AgentNet::new(prefix)?;
        let config = std::env::temp_dir().join(format!("{prefix}-{}.toml", std::process::id()));
        std::fs::write(&config, text).context("writing the test configuration")?;
        let socket = PathBuf::from(format!("/run/lb/netns-{}-lb/admin.sock", net.topo.prefix()));
        Ok(Self {
            agent: None,
            net,
            config,
            socket,
            mount_ns: None,
        })
    }

    /// Starts the agent (again) on the same configuration.
    pub fn start_agent(&mut self, extra_args: &[&str]) -> anyhow::Result<()> {
        let mut args = vec!["--stats-interval", "0"];
        args.extend_from_slice(extra_args);
        self.agent = Some(self.net.start_agent_in(
            self.mount_ns.as_deref(),
            &self.config,
            &args,
        )?);
        Ok(())
    }

    /// The agent's state file.
    pub fn state_file(&self) -> PathBuf {
        PathBuf::from(format!(
            "/run/lb/netns-{}-lb/l0/state.json",
            self.net.topo.prefix()
        ))
    }

    /// One admin request; the reply's value, or the error reply as an error.
    pub fn ctl(&self, command: Command) -> anyhow::Result<Value> {
        Ok(call(&self.socket, command, Duration::from_secs(10))?)
    }

    /// Waits until every target of the example's group is healthy and in the rings of
    /// its VIPs, and those VIPs announced.
    pub fn wait_steady(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.steady();
            match &seen {
                Ok(true) => return Ok(()),
                _ if Instant::now() > deadline => {
                    anyhow::bail!("the agent never reached its steady state: {seen:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn steady(&self) -> anyhow::Result<bool> {
        let backends = self.ctl(Command::BackendList { group: None })?;
        let vips = self.ctl(Command::VipList)?;
        // The example's group and VIPs; a test's extra groups may be meant to fail.
        let backends: Vec<&Value> = (backends.as_array().context("backend list")?.iter())
            .filter(|b| b["group"] == GROUP)
            .collect();
        let all_healthy = backends.iter().all(|b| b["state"] == "healthy");
        let vips = vips.as_array().context("vip list")?;
        Ok(all_healthy
            && (vips.iter().filter(|v| v["target_group"] == GROUP)).all(|v| {
                v["backends"].as_u64() == Some(backends.len() as u64)
                    && v["announce"]["state"] == "announced"
            }))
    }

    /// Every log line the agent printed since the last read (its log is a channel).
    pub fn drain_log(&self) -> Vec<String> {
        self.agent
            .as_ref()
            .map(|a| a.log.try_iter().collect())
            .unwrap_or_default()
    }

    /// The agent's log lines so far that contain `needle`: its start-up lines and what it
    /// printed since the last read.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        let Some(agent) = &self.agent else {
            return Vec::new();
        };
        let mut seen: Vec<String> = agent.startup.clone();
        seen.extend(self.drain_log());
        seen.into_iter().filter(|l| l.contains(needle)).collect()
    }

    /// Waits up to `timeout` for a log line containing `needle`; returns it and when it
    /// was seen. Lines read while waiting are consumed.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<(String, Instant)> {
        let agent = self.agent.as_ref().context("no agent running")?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match agent.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok((line, Instant::now())),
                Ok(_) => {}
                Err(_) => anyhow::bail!("the agent never logged {needle:?} within {timeout:?}"),
            }
        }
    }
}

/// The example configuration plus the `lines` VIP on [`LINE_PORT`].
pub fn config_text() -> anyhow::Result<String> {
    let mut text = std::fs::read_to_string(example_config()).context("reading the example")?;
    text.push_str(&format!(
        "\n[[vip]]\nname = \"lines\"\naddress = \"{VIP}\"\nport = {LINE_PORT}\nprotocol = \"tcp\"\nmode = \"dr\"\ntarget_group = \"{GROUP}\"\n"
    ));
    Ok(text)
}

impl Drop for FaultNet {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Client load through the VIP while a fault happens.
pub struct Load {
    long: LongLived,
    prober: Prober,
}

impl Load {
    /// Opens the long-lived connections and starts the new-connection prober.
    pub fn start(net: &AgentNet) -> anyhow::Result<Self> {
        let long = LongLived::start(
            &net.client,
            SocketAddr::new(VIP.into(), LINE_PORT),
            LONG_LIVED,
            ASK_EVERY,
        )?;
        let prober = Prober::start(&net.client, SocketAddr::new(VIP.into(), 80), NEW_EVERY);
        Ok(Self { long, prober })
    }

    /// Each long-lived connection's (client port, first backend).
    pub fn flows(&self) -> Vec<(u16, usize)> {
        self.long.flows()
    }

    /// Stops the load and returns its figures under `name`; prints them.
    pub fn finish(self, name: &str) -> FaultReport {
        let probes = self.prober.stop();
        let long = self.long.stop();
        let report = FaultReport {
            name: name.to_owned(),
            probes,
            long,
        };
        println!("{report}");
        report
    }
}

/// What a fault cost the clients.
#[derive(Debug)]
pub struct FaultReport {
    pub name: String,
    pub probes: ProbeReport,
    pub long: LongLivedReport,
}

impl FaultReport {
    /// New connections that failed.
    pub fn failed(&self) -> usize {
        self.probes.failed.len()
    }

    /// Long-lived connections that broke or moved to another backend.
    pub fn lost(&self) -> usize {
        self.long.broken.len()
    }

    /// Asserts nothing was lost: every new connection answered, every long-lived one
    /// intact on its backend.
    pub fn assert_nothing_lost(&self) -> anyhow::Result<()> {
        ensure!(
            self.failed() == 0 && self.lost() == 0,
            "{}: lost traffic: failed requests {:?}; broken connections {:?}",
            self.name,
            self.probes.failed,
            self.long.broken
        );
        ensure!(
            self.probes.attempts > 0 && self.long.replies > 0,
            "{}: the load never ran",
            self.name
        );
        Ok(())
    }
}

impl std::fmt::Display for FaultReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FAULT {}: new connections {} failed of {}; long-lived {} lost of {} ({} replies, longest gap {} ms)",
            self.name,
            self.failed(),
            self.probes.attempts,
            self.lost(),
            self.long.connections,
            self.long.replies,
            self.long.longest_gap.as_millis(),
        )
    }
}

/// Runs `f` (a fault) under a [`Load`] on `net`, with `before` and `after` of quiet
/// load around it, and returns the load's figures and `f`'s result.
pub fn under_load<T>(
    net: &AgentNet,
    name: &str,
    before: Duration,
    after: Duration,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(FaultReport, T)> {
    let load = Load::start(net)?;
    std::thread::sleep(before);
    let result = f();
    if result.is_ok() {
        std::thread::sleep(after);
    }
    let report = load.finish(name);
    Ok((report, result?))
}

/// How long from now until a new connection through the VIP is answered (each attempt
/// bounded by 250 ms), at most `timeout`: the recovery time after a fault ends.
pub fn time_to_serve(net: &AgentNet, timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let to = SocketAddr::new(VIP.into(), 80);
    net.client.enter(|| loop {
        let attempt = Instant::now();
        match http_get_from(to, Duration::from_millis(250)) {
            Ok(_) => return Ok(started.elapsed()),
            Err(e) if started.elapsed() > timeout => {
                anyhow::bail!("no new connection answered within {timeout:?}: {e:#}")
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(50).saturating_sub(attempt.elapsed()))
            }
        }
    })?
}

/// [`under_load`] for a fault that needs the [`FaultNet`] itself (restarting the agent).
pub fn under_load_mut<T>(
    f: &mut FaultNet,
    name: &str,
    before: Duration,
    after: Duration,
    fault: impl FnOnce(&mut FaultNet) -> anyhow::Result<T>,
) -> anyhow::Result<(FaultReport, T)> {
    let load = Load::start(&f.net)?;
    std::thread::sleep(before);
    let result = fault(f);
    if result.is_ok() {
        std::thread::sleep(after);
    }
    let report = load.finish(name);
    Ok((report, result?))
}

/// A process's resident set size in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

/// A process's open file descriptors.
pub fn fds(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// A process's (RSS in KiB, open descriptors).
pub fn footprint(pid: u32) -> anyhow::Result<(u64, usize)> {
    Ok((rss_kib(pid)?, fds(pid)?))
}

/// Three [`footprint`]s in words: before a fault, the peak during it, after it.
pub fn footprint_text(before: (u64, usize), peak: (u64, usize), after: (u64, usize)) -> String {
    format!(
        "RSS {} / {} / {} KiB and fds {} / {} / {} before / during (max) / after",
        before.0, peak.0, after.0, before.1, peak.1, after.1
    )
}

/// Whether `path` exists (a pin, a file).
pub fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}
