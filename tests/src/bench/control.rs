//! Benchmark section `control`: the agent's control plane, measured on a real `lb-agent`
//! process (the release binary next to `lb-bench`) attached to a veth in a namespace.
//!
//! ```text
//!   lbb-ctl-lb: lb-agent on l0 198.18.60.1/24 ── p0 198.18.60.2/24 :lbb-ctl-peer
//!               route 198.18.64.0/18 via .60.2       local 198.18.64.0/18 dev lo
//!                                                    + a TCP responder on 0.0.0.0:80
//! ```
//! Every target is an address of 198.18.64.0/18, which the peer namespace holds entirely
//! (a `local` route on its loopback), so one listener answers all of them and the
//! agent's neighbour warm-up and health checks really cross the veth (and the XDP
//! program on l0, which passes them).
//!
//! - `apply_1000_ms`: one VIP (M = 65537) whose target group alternates between two
//!   disjoint sets of 1,000 targets (A = 198.18.64.1.., B = 198.18.72.1..), health checks
//!   disabled (`enabled = false`: every target counts as healthy at once, so the ring
//!   changes in the apply itself, with nothing waiting on probes) and a deregistration
//!   delay of 0 (the old set leaves at once, no draining). Each sample is the wall time
//!   from spawning `lb-agent ctl apply FILE` until the VIP's ring in the data plane (the
//!   inner map the pinned `LB_RING_V1` outer array points at) holds the table
//!   `lb_agent::maglev::build` computes for the new set. The outer slot is polled every
//!   millisecond for a new inner map; a new one is then read whole (65,537 lookups, after
//!   the time is taken) and compared slot by slot, up to the renaming of backend ids (the
//!   agent numbers targets itself); afterwards the ids are checked against `ctl backend
//!   list`. The figure includes the CLI process start, the agent reading and validating
//!   the file, building the ring, its 1,000 neighbour warm-up datagrams and the map
//!   writes. Median of the samples (every apply is a full 1,000 → 1,000 change).
//!   `apply_1000_dry_run_ms` is the same change with `--dry-run` (CLI round trip: read,
//!   validate, build, count moved slots and touched flows; no writes), so the difference
//!   is what the data-plane write costs (the agent fills a new inner map one slot update
//!   at a time: 65,537 `bpf(BPF_MAP_UPDATE_ELEM)` calls per ring).
//! - `healthcheck_10k_cpu_pct`: the same agent applies 10,000 targets TCP-checked every
//!   1 s (timeout 1 s, healthy after 2 passes). Once `ctl status` counts them all healthy
//!   and one more interval has passed, the agent process's utime + stime
//!   (/proc/<pid>/stat, all its threads) over a 5 s window (10 s full) as % of one core;
//!   `_user_pct` and `_sys_pct` split it. The responder is a thread of this benchmark
//!   process (its CPU is not the agent's). Caveat: the kernel runs most of the TCP work
//!   of both ends of a handshake (the peer's SYN-ACK included, in softirq after the
//!   veth transmit) in the context of the connecting thread, so the figure includes
//!   kernel work a real target would do on its own host.
//!
//! `Host` (the two namespaces, the agent, the responder and their cleanup) is shared with
//! the `memory` section. Everything is removed on drop, on error or panic too: the agent is
//! asked to `ctl down` (detach, unpin, remove its state), a `lb-agent down --iface l0`
//! and removal of the namespace-scoped pin and run directories follow as a fallback, then
//! the namespaces go.

use std::{
    collections::HashMap,
    io::Read as _,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _};
use aya::maps::{Array, ArrayOfMaps, Map, MapData};
use lb_agent::maglev;
use serde_json::{json, Value};

use super::{median, Progress};
use crate::{
    agentnet::{agent_binary, follow_log, wait_for_line},
    netns::{require_root, ChildGuard, Ns, Topology},
};

/// The agent's hash seed in every configuration here (its default).
pub(super) const SEED: u32 = 0x6c62_0001;
/// Ring size of every VIP here (the default).
pub(super) const RING: u32 = maglev::DEFAULT_SIZE;
/// The prefix the peer namespace holds on its loopback: every target is in it.
const TARGET_BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 64, 0);
/// The port health checks probe (the VIPs' port) and the responder listens on.
pub(super) const CHECK_PORT: u16 = 80;

/// Target `i` (from 0) of the block starting `offset` addresses into 198.18.64.0/18.
pub(super) fn target(offset: u32, i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(TARGET_BASE) + offset + 1 + i)
}

/// A TCP listener on 0.0.0.0:[`CHECK_PORT`] in a namespace, accepting and closing every
/// connection on its own thread until dropped.
struct Responder {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Responder {
    fn start(ns: &Ns) -> anyhow::Result<Self> {
        let listener = ns.enter(|| {
            TcpListener::bind(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), CHECK_PORT))
        })??;
        // 10,000 handshakes a second: a long accept queue so none is refused while this
        // thread sleeps (listen(2) again on a listening socket only changes the backlog).
        // SAFETY: listen(2) on a socket this function owns; no memory is passed.
        let rc = unsafe { libc::listen(listener.as_raw_fd(), 4096) };
        ensure!(rc == 0, "listen: {}", std::io::Error::last_os_error());
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (st, count) = (stop.clone(), accepted.clone());
        let thread = std::thread::Builder::new()
            .name("lbb-responder".into())
            .spawn(move || {
                while !st.load(Ordering::Relaxed) {
                    match listener.accept() {
                        // The checker resets the connection; closing our end is all.
                        Ok(_) => {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
            })
            .context("starting the responder thread")?;
        Ok(Self {
            stop,
            accepted,
            thread: Some(thread),
        })
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // A panicked responder already printed its message.
            let _ = t.join();
        }
    }
}

/// A running `lb-agent run` and its log.
struct RunningAgent {
    process: ChildGuard,
    log: mpsc::Receiver<String>,
}

/// Two namespaces joined by a veth, a TCP responder for every target address, a scratch
/// directory for configuration files and (once started) an agent on l0; see the module
/// docs. Field order is drop order after [`Drop::drop`]: agent, responder, namespaces.
pub(super) struct Host {
    agent: Option<RunningAgent>,
    responder: Responder,
    scratch: PathBuf,
    bin: PathBuf,
    lb: Ns,
    // Held for its Drop: deletes the namespaces.
    _topo: Topology,
}

impl Host {
    /// Builds the topology under namespace prefix `prefix` (unique per section).
    pub(super) fn new(prefix: &str) -> anyhow::Result<Self> {
        require_root()?;
        let bin = agent_binary()?;
        let mut topo = Topology::new(prefix)?;
        let lb = topo.add_ns("lb")?;
        let peer = topo.add_ns("peer")?;
        topo.veth(&lb, "l0", &peer, "p0")?;
        lb.addr("l0", "198.18.60.1/24")?;
        peer.addr("p0", "198.18.60.2/24")?;
        peer.ip(&["route", "add", "local", "198.18.64.0/18", "dev", "lo"])?;
        lb.route(&["198.18.64.0/18", "via", "198.18.60.2"])?;
        let responder = Responder::start(&peer)?;
        let scratch = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let host = Self {
            agent: None,
            responder,
            scratch,
            bin,
            lb,
            _topo: topo,
        };
        // Whatever a killed earlier run left pinned for this namespace's l0 goes now
        // (`run --reset` would too; this also covers a run that never got that far).
        host.cleanup_pins();
        Ok(host)
    }

    fn bin(&self) -> anyhow::Result<&str> {
        self.bin.to_str().context("lb-agent path is not UTF-8")
    }

    /// Where the agent pins l0's state (it scopes it by the namespace's name).
    pub(super) fn pin_dir(&self) -> PathBuf {
        self.scope_dir(lb_agent::dataplane::PIN_ROOT).join("l0")
    }

    fn scope_dir(&self, root: &str) -> PathBuf {
        Path::new(root).join(format!("netns-{}", self.lb.name))
    }

    /// The agent's default admin socket in the lb namespace.
    fn socket(&self) -> PathBuf {
        self.scope_dir("/run/lb").join("admin.sock")
    }

    /// Writes `text` to `name` in the scratch directory; returns its absolute path.
    pub(super) fn write_config(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        let path = self.scratch.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Starts `lb-agent run --iface l0 --config <config> --reset` in the lb namespace
    /// (`nsenter --net`, so pins land in the host's bpffs) and waits for its admin socket.
    /// Returns the agent's pid.
    pub(super) fn start_agent(&mut self, config: &Path) -> anyhow::Result<u32> {
        self.spawn_agent(config)?;
        self.wait_agent()
    }

    /// The first half of [`Host::start_agent`]: starts the agent, does not wait for it.
    pub(super) fn spawn_agent(&mut self, config: &Path) -> anyhow::Result<()> {
        ensure!(self.agent.is_none(), "an agent is already running");
        let config = config.to_str().context("config path is not UTF-8")?;
        let mut cmd = self.lb.command_net_only(
            self.bin()?,
            &["run", "--iface", "l0", "--config", config, "--reset"],
        );
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "info");
        let mut process = ChildGuard::new(cmd.spawn().context("starting lb-agent")?, "lb-agent");
        let log = follow_log(&mut process)?;
        self.agent = Some(RunningAgent { process, log });
        Ok(())
    }

    /// The second half of [`Host::start_agent`]: waits (60 s at most) until the agent
    /// spawned answers on its admin socket; its pid.
    pub(super) fn wait_agent(&mut self) -> anyhow::Result<u32> {
        let agent = self.agent.as_ref().context("no agent started")?;
        wait_for_line(&agent.log, &["admin socket ready"], Duration::from_secs(60))
            .context("lb-agent did not come up")?;
        let pid = agent.process.pid();
        // nsenter execs the agent in place: the child is the agent itself.
        let status = self.ctl(&["status"])?;
        let reported = status["pid"].as_u64().unwrap_or_default();
        ensure!(
            reported == u64::from(pid),
            "ctl status reports pid {reported}, the process started is {pid}"
        );
        Ok(pid)
    }

    /// A `lb-agent ctl --json --socket <ours> <args>` command.
    fn ctl_command(&self, args: &[&str]) -> anyhow::Result<Command> {
        let mut cmd = Command::new(self.bin()?);
        cmd.arg("ctl")
            .arg("--socket")
            .arg(self.socket())
            .arg("--json")
            .args(args)
            .stdin(Stdio::null());
        Ok(cmd)
    }

    /// Runs `lb-agent ctl --json <args>`; its JSON result.
    pub(super) fn ctl(&self, args: &[&str]) -> anyhow::Result<Value> {
        let out = self
            .ctl_command(args)?
            .output()
            .with_context(|| format!("running lb-agent ctl {args:?}"))?;
        self.ctl_result(args, &out.stdout, out.status.success(), &out.stderr)
    }

    fn ctl_result(
        &self,
        args: &[&str],
        stdout: &[u8],
        ok: bool,
        stderr: &[u8],
    ) -> anyhow::Result<Value> {
        if !ok {
            bail!(
                "lb-agent ctl {args:?} failed: {} {}\nagent log (last lines):\n{}",
                String::from_utf8_lossy(stdout).trim(),
                String::from_utf8_lossy(stderr).trim(),
                self.log_tail(20)
            );
        }
        serde_json::from_slice(stdout)
            .with_context(|| format!("lb-agent ctl {args:?} printed no JSON"))
    }

    /// The agent's last `n` log lines received so far (consumes them).
    fn log_tail(&self, n: usize) -> String {
        let Some(agent) = &self.agent else {
            return String::new();
        };
        let lines: Vec<String> = agent.log.try_iter().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Drops the log lines received so far (they would otherwise pile up in memory).
    pub(super) fn drain_log(&self) {
        if let Some(agent) = &self.agent {
            agent.log.try_iter().for_each(drop);
        }
    }

    /// The running agent's pid.
    pub(super) fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(|a| a.process.pid())
    }

    /// `ctl down` (the agent detaches, unpins, removes its state and exits), waited for.
    pub(super) fn stop_agent(&mut self) -> anyhow::Result<()> {
        let Some(mut agent) = self.agent.take() else {
            return Ok(());
        };
        let asked = self.ctl_command(&["down", "--grace-secs", "0"])?.output();
        let exited = crate::netns::wait_until(Duration::from_secs(10), || {
            matches!(agent.process.try_wait(), Ok(Some(_)))
        });
        // The guard's drop stops it if `down` did not.
        drop(agent);
        self.cleanup_pins();
        let out = asked.context("running lb-agent ctl down")?;
        ensure!(
            out.status.success() && exited,
            "lb-agent ctl down: {} (agent exited: {exited})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }

    /// `lb-agent down --iface l0` in the lb namespace, then removal of whatever is left in
    /// this namespace's pin and run directories (only ours: scoped by the namespace name).
    fn cleanup_pins(&self) {
        if let Ok(bin) = self.bin() {
            let _ = self
                .lb
                .command_net_only(bin, &["down", "--iface", "l0", "--grace-secs", "0"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        for root in [lb_agent::dataplane::PIN_ROOT, "/run/lb"] {
            let dir = self.scope_dir(root);
            if dir.exists() {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    eprintln!("bench: removing {}: {e}", dir.display());
                }
            }
        }
    }

    /// Connections the responder has accepted so far.
    pub(super) fn accepted(&self) -> u64 {
        self.responder.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Never panics: this also runs while an error or a panic unwinds.
        if let Err(e) = self.stop_agent() {
            eprintln!("bench: stopping the agent: {e:#}");
        }
        self.cleanup_pins();
        let _ = std::fs::remove_dir_all(&self.scratch);
        // Then the fields: the responder thread stops, the namespaces are deleted.
    }
}

/// `/proc/<pid>/stat` utime and stime, in seconds.
pub(super) fn cpu_seconds(pid: u32) -> anyhow::Result<(f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces:
    // state is field 3, utime 14, stime 15 (proc(5)).
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc/<pid>/stat")?
            .parse::<u64>()? as f64)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((tick(11)? / hz, tick(12)? / hz))
}

/// One `[[target_group]]` table with `targets`, health checks as `check` says.
pub(super) fn group_toml(name: &str, targets: &[Ipv4Addr], check: &str) -> String {
    let mut s = format!("[[target_group]]\nname = \"{name}\"\nderegistration_delay_secs = 0\n\n");
    for t in targets {
        s.push_str(&format!("[[target_group.target]]\naddress = \"{t}\"\n"));
    }
    s.push_str(&format!("\n[target_group.health_check]\n{check}\n"));
    s
}

/// `[agent]` with the seed the expected tables are built with.
pub(super) fn agent_toml() -> String {
    format!("[agent]\nhash_seed = {SEED:#x}\n\n")
}

/// One TCP VIP on port [`CHECK_PORT`] (direct routing) serving `group`.
pub(super) fn vip_toml(name: &str, address: Ipv4Addr, group: &str) -> String {
    format!(
        "[[vip]]\nname = \"{name}\"\naddress = \"{address}\"\nport = {CHECK_PORT}\nprotocol = \"tcp\"\n\
         mode = \"dr\"\nring_size = {RING}\ntarget_group = \"{group}\"\n\n"
    )
}

/// The table the agent must install for `targets` (equal weights), labelled 0..n.
fn expected_table(targets: &[Ipv4Addr]) -> anyhow::Result<maglev::Table> {
    let backends: Vec<maglev::Backend> = (0u32..)
        .zip(targets)
        .map(|(i, &t)| maglev::Backend::for_target(i, t, 1))
        .collect();
    Ok(maglev::build(&backends, RING, SEED)?)
}

/// The pinned outer ring array (`LB_RING_V1`) of an agent.
pub(super) struct Rings(ArrayOfMaps<MapData, MapData>);

impl Rings {
    pub(super) fn open(pin_dir: &Path) -> anyhow::Result<Self> {
        let path = pin_dir.join("maps").join(lb_common::maps::RINGS);
        let data =
            MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        let map = Map::from_map_data(data)?;
        Ok(Self(ArrayOfMaps::try_from(map)?))
    }

    /// The inner map (ring) installed for `vip_id`, if any.
    pub(super) fn ring(&self, vip_id: u32) -> anyhow::Result<Option<MapData>> {
        match self.0.get(&vip_id, 0) {
            Ok(m) => Ok(Some(m)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e).context("looking up a ring"),
        }
    }
}

/// The kernel id of a map (a new id = a new ring was swapped in).
fn map_id(m: &MapData) -> anyhow::Result<u32> {
    Ok(m.info()?.id())
}

/// Every slot of a ring.
fn read_slots(ring: MapData) -> anyhow::Result<Vec<u32>> {
    let array = Array::<MapData, u32>::try_from(Map::from_map_data(ring)?)?;
    (0..array.len())
        .map(|i| array.get(&i, 0).context("reading a ring slot"))
        .collect()
}

/// If `actual` is `expected` with every label `e` renamed to one id `f(e)` (a bijection),
/// that renaming.
fn renaming(actual: &[u32], expected: &[u32]) -> Option<HashMap<u32, u32>> {
    if actual.len() != expected.len() {
        return None;
    }
    let mut forward = HashMap::new();
    let mut backward = HashMap::new();
    for (&a, &e) in actual.iter().zip(expected) {
        if *forward.entry(e).or_insert(a) != a || *backward.entry(a).or_insert(e) != e {
            return None;
        }
    }
    Some(forward)
}

/// The entries of a `ctl --json … list` answer: the CLI prints the list itself; the
/// protocol's result object (`{"<key>": [...]}`) is accepted too.
fn listing<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.as_array()
        .or_else(|| v[key].as_array())
        .map_or(&[], Vec::as_slice)
}

/// Checks `renaming` (expected label = index into `targets` → data-plane backend id)
/// against the agent's own backend list.
fn check_ids(
    host: &Host,
    targets: &[Ipv4Addr],
    renaming: &HashMap<u32, u32>,
) -> anyhow::Result<()> {
    let list = host.ctl(&["backend", "list"])?;
    let ids: HashMap<String, u64> = listing(&list, "backends")
        .iter()
        .filter_map(|b| Some((b["address"].as_str()?.to_owned(), b["backend_id"].as_u64()?)))
        .collect();
    for (label, id) in renaming {
        let address = targets[*label as usize].to_string();
        ensure!(
            ids.get(&address) == Some(&u64::from(*id)),
            "ring slot label {label} ({address}) is backend {id} in the data plane, \
             but ctl backend list says {:?}",
            ids.get(&address)
        );
    }
    Ok(())
}

/// One timed apply: ms from spawning `ctl apply` to the expected ring being live.
fn timed_apply(
    host: &Host,
    rings: &Rings,
    vip_id: u32,
    path: &Path,
    targets: &[Ipv4Addr],
    expected: &maglev::Table,
) -> anyhow::Result<(f64, f64)> {
    let before = rings
        .ring(vip_id)?
        .map(|m| map_id(&m))
        .transpose()?
        .unwrap_or(0);
    let path_str = path.to_str().context("config path is not UTF-8")?;
    let args = ["apply", path_str];
    let mut cmd = host.ctl_command(&args)?;
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = ChildGuard::new(cmd.spawn().context("running ctl apply")?, "ctl apply");
    let (stdout, stderr) = (child.take_stdout(), child.take_stderr());
    // The CLI is waited for on a thread of its own, so its return is timed exactly while
    // this thread polls the data plane. Scoped: an error below still waits for it (the
    // CLI gives up after its own 30 s timeout at most), and its guard then reaps it.
    let (live, renamed, cli) = std::thread::scope(|scope| -> anyhow::Result<_> {
        let waiter = scope.spawn(move || -> anyhow::Result<_> {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            // EOF once the CLI has exited.
            if let Some(mut s) = stdout {
                s.read_to_end(&mut out)?;
            }
            let returned = start.elapsed();
            if let Some(mut s) = stderr {
                s.read_to_end(&mut err)?;
            }
            let mut status = None;
            let exited = crate::netns::wait_until(Duration::from_secs(5), || {
                status = child.try_wait().ok().flatten();
                status.is_some()
            });
            ensure!(exited, "ctl apply closed its output but did not exit");
            Ok((returned, status.is_some_and(|s| s.success()), out, err))
        });
        let deadline = start + Duration::from_secs(30);
        let mut seen = before;
        let (live, renamed) = loop {
            ensure!(
                Instant::now() < deadline,
                "the new ring was not live 30 s after ctl apply\n{}",
                host.log_tail(20)
            );
            if let Some(ring) = rings.ring(vip_id)? {
                let id = map_id(&ring)?;
                if id != seen {
                    let at = start.elapsed();
                    seen = id;
                    // Read after taking the time: the ring was live from the swap on.
                    if let Some(r) = renaming(&read_slots(ring)?, expected.slots()) {
                        break (at, r);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let (cli, ok, out, err) = waiter
            .join()
            .map_err(|_| anyhow::anyhow!("the ctl apply waiter panicked"))??;
        host.ctl_result(&args, &out, ok, &err)?;
        Ok((live, renamed, cli))
    })?;
    check_ids(host, targets, &renamed)?;
    host.drain_log();
    Ok((live.as_secs_f64() * 1e3, cli.as_secs_f64() * 1e3))
}

/// `apply_1000_ms` and its details; the agent keeps running.
fn apply_1000(host: &mut Host, quick: bool, progress: Progress<'_>) -> anyhow::Result<Value> {
    const N: u32 = 1000;
    let applies = if quick { 6 } else { 16 };
    let sets: [Vec<Ipv4Addr>; 2] = [
        (0..N).map(|i| target(0, i)).collect(),
        (0..N).map(|i| target(8 * 256, i)).collect(),
    ];
    let vip = Ipv4Addr::new(198, 18, 200, 1);
    let mut paths = Vec::new();
    let mut tables = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        let text = agent_toml()
            + &vip_toml("bench", vip, "pool")
            + &group_toml("pool", set, "enabled = false");
        paths.push(host.write_config(&format!("apply-{i}.toml"), &text)?);
        tables.push(expected_table(set)?);
    }
    host.start_agent(&paths[0])?;
    let vips = host.ctl(&["vip", "list"])?;
    let vip_id = listing(&vips, "vips")[0]["vip_id"]
        .as_u64()
        .with_context(|| format!("vip list without vip_id: {vips}"))? as u32;
    let rings = Rings::open(&host.pin_dir())?;
    // The starting ring must already be set A's (the same check as every sample).
    let start_ring = rings.ring(vip_id)?.context("no ring installed at start")?;
    let r = renaming(&read_slots(start_ring)?, tables[0].slots())
        .context("the ring at start is not set A's table")?;
    check_ids(host, &sets[0], &r)?;

    let mut live = Vec::new();
    let mut cli = Vec::new();
    for k in 0..applies {
        let which = (k + 1) % 2;
        let (ms, cli_ms) = timed_apply(
            host,
            &rings,
            vip_id,
            &paths[which],
            &sets[which],
            &tables[which],
        )?;
        progress(&format!(
            "apply {}/{applies}: 1000 targets -> 1000 others live in the data plane in {ms:.1} ms (ctl returned after {cli_ms:.1} ms)",
            k + 1
        ));
        live.push(ms);
        cli.push(cli_ms);
    }
    // The same change as a dry run (read, validate, build the ring, count moved slots and
    // touched flows; no map writes, no neighbour warm-up): how much of the apply is the
    // data-plane write.
    let other = paths[(applies % 2) ^ 1]
        .to_str()
        .context("config path is not UTF-8")?;
    let mut dry = Vec::new();
    for _ in 0..(if quick { 3 } else { 7 }) {
        let t = Instant::now();
        let report = host.ctl(&["apply", other, "--dry-run"])?;
        dry.push(t.elapsed().as_secs_f64() * 1e3);
        ensure!(
            report["dry_run"].as_bool() == Some(true),
            "not a dry run: {report}"
        );
    }
    let round = |x: f64| (x * 100.0).round() / 100.0;
    progress(&format!(
        "the same change as a dry run (CLI round trip): median {:.1} ms",
        median(dry.clone())
    ));
    Ok(json!({
        "apply_1000_ms": round(median(live.clone())),
        "apply_1000_dry_run_ms": round(median(dry.clone())),
        "detail": {
            "dry_run_ms": dry.iter().map(|&x| round(x)).collect::<Vec<_>>(),
            "samples_ms": live.iter().map(|&x| round(x)).collect::<Vec<_>>(),
            "cli_return_ms": cli.iter().map(|&x| round(x)).collect::<Vec<_>>(),
            "change": "one VIP's target group alternates between two disjoint sets of 1000 targets (every apply replaces all 1000); health checks disabled, deregistration delay 0",
            "ring_size": RING,
            "method": "spawn `lb-agent ctl apply` → poll the pinned LB_RING_V1 outer slot every 1 ms for a new inner map whose 65537 slots equal lb_agent::maglev::build of the new set (up to backend-id renaming, then checked against ctl backend list); median",
        }
    }))
}

/// `healthcheck_10k_cpu_pct` and its details; the agent keeps running.
fn healthcheck_10k(host: &mut Host, quick: bool, progress: Progress<'_>) -> anyhow::Result<Value> {
    const N: u32 = 10_000;
    let window = Duration::from_secs(if quick { 5 } else { 10 });
    let pid = host.agent_pid().context("no agent running")?;
    let targets: Vec<Ipv4Addr> = (0..N).map(|i| target(0, i)).collect();
    let check = "protocol = \"tcp\"\ninterval_secs = 1\ntimeout_secs = 1\n\
                 healthy_threshold = 2\nunhealthy_threshold = 2";
    let text = agent_toml()
        + &vip_toml("bench", Ipv4Addr::new(198, 18, 200, 1), "pool")
        + &group_toml("pool", &targets, check);
    let path = host.write_config("healthcheck-10k.toml", &text)?;
    let started = Instant::now();
    host.ctl(&["apply", path.to_str().context("path is not UTF-8")?])?;
    host.drain_log();

    // Every target healthy (two passes each), bounded.
    let deadline = Instant::now() + Duration::from_secs(30);
    let healthy = |host: &Host| -> anyhow::Result<(u64, Value)> {
        let status = host.ctl(&["status"])?;
        let targets = status["targets"].clone();
        Ok((targets["healthy"].as_u64().unwrap_or(0), targets))
    };
    let (mut n, mut states) = healthy(host)?;
    while n < u64::from(N) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        host.drain_log();
        (n, states) = healthy(host)?;
    }
    progress(&format!(
        "{n} of {N} targets healthy {:.1} s after the apply ({states})",
        started.elapsed().as_secs_f64()
    ));
    // One more interval to settle, then the window.
    std::thread::sleep(Duration::from_secs(1));
    let (u0, s0) = cpu_seconds(pid)?;
    let accepted0 = host.accepted();
    let t0 = Instant::now();
    std::thread::sleep(window);
    let (u1, s1) = cpu_seconds(pid)?;
    let accepted1 = host.accepted();
    let wall = t0.elapsed().as_secs_f64();
    host.drain_log();
    let (n_after, states_after) = healthy(host)?;
    let rss_kb = super::memory::rss_kb(pid)?;
    let pct = |cpu: f64| ((cpu / wall * 100.0) * 100.0).round() / 100.0;
    let probes = (accepted1 - accepted0) as f64 / wall;
    progress(&format!(
        "agent CPU over {wall:.1} s: {}% of one core ({}% user, {}% system); responder saw {probes:.0} connections/s; {n_after} healthy after",
        pct(u1 - u0 + s1 - s0),
        pct(u1 - u0),
        pct(s1 - s0)
    ));
    Ok(json!({
        "healthcheck_10k_cpu_pct": pct(u1 - u0 + s1 - s0),
        "healthcheck_10k_user_pct": pct(u1 - u0),
        "healthcheck_10k_sys_pct": pct(s1 - s0),
        "healthcheck_10k_healthy": n_after,
        "detail": {
            "window_s": (wall * 100.0).round() / 100.0,
            "targets": N,
            "healthy_before_window": n,
            "states_after_window": states_after,
            "responder_connections_per_s": probes.round(),
            "agent_rss_mb": (rss_kb as f64 / 1024.0 * 10.0).round() / 10.0,
            "method": "lb-agent with 10000 targets (198.18.64.0/18, all local to a peer namespace reached over a veth; one listener answers all), TCP checks every 1 s; utime+stime of the agent process (/proc/<pid>/stat) over the window after every target was healthy plus one interval, / wall time",
            "caveat": "the kernel runs most TCP work of both ends of each handshake (the peer's SYN-ACK too, in softirq after the veth transmit) in the connecting agent thread, so this includes work a real target would do on its own host",
        }
    }))
}

/// Measures this section; see the module docs. About 12 s quick, 20 s full.
pub fn run(quick: bool, progress: Progress<'_>) -> anyhow::Result<Value> {
    let mut host = Host::new("lbb-ctl")?;
    progress("namespaces up; starting lb-agent with 1000 targets");
    let mut apply = apply_1000(&mut host, quick, progress)?;
    let mut hc = healthcheck_10k(&mut host, quick, progress)?;
    host.stop_agent()?;
    drop(host);
    let mut out = serde_json::Map::new();
    let mut detail = serde_json::Map::new();
    for (name, section) in [("apply_1000", &mut apply), ("healthcheck_10k", &mut hc)] {
        let obj = section
            .as_object_mut()
            .context("section is not an object")?;
        if let Some(d) = obj.remove("detail") {
            detail.insert(name.into(), d);
        }
        out.extend(obj.clone());
    }
    out.insert("detail".into(), Value::Object(detail));
    Ok(Value::Object(out))
}
