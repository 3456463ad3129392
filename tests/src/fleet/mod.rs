//! A fleet of lb hosts behind one ECMP router, announced over BGP by real BIRD 2 daemons,
//! for the fleet tests (`tests/tests/fleet.rs`), the fleet demo and the bench's `fleet`
//! section.
//!
//! ```text
//!   client ── router (BIRD, ECMP) ── lan (bridge br0) ── h0, h1, h2 (lb-agent + BIRD each)
//!                                                    └── be0, be1, be2 (backends)
//! ```
//! One arm: the router, the hosts and the backends share one L2 segment, a bridge in the
//! `lan` namespace with one veth per node. Each host runs the real `lb-agent run --iface
//! lan0` with the same configuration ([`agent_config`]) and BIRD with
//! `examples/bird-host.conf`; the router runs BIRD with `examples/bird-router.conf` and
//! installs one multipath route per VIP, hashed on layer 4. The backends hold the VIPs on
//! `lo`, answer HTTP on :80 and the line protocol on :8080 ([`servers`]), decapsulate the
//! tunnel VIP with `lb-agent decap`, and reply through the router (direct server return).
//!
//! Addresses (198.18.0.0/15 and 2001:2::/48 only):
//! - client–router link 198.18.1.0/24, 2001:2:0:1::/64 (client .2, router .1);
//! - LAN 198.18.0.0/24, 2001:2::/64: router .1, hosts .10–.12, backends .20–.22;
//! - VIPs [`VIP4`] and [`VIP6`] (direct routing), [`VIP_TUNNEL`] (IPIP tunnel).
//!
//! Everything is owned: dropping the [`Fleet`] stops the agents and BIRDs, removes what
//! the agents pinned, and deletes the namespaces (also while a failed test unwinds).

pub mod bird;
pub mod failover;
pub mod servers;
/// The fleet's clients are the shared ones ([`crate::workload`]); `backend_index`
/// accepts agentnet's backend count, and the fleet has as many.
pub use crate::workload;
const _: () = assert!(BACKENDS == crate::agentnet::BACKENDS);

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _};
use nix::sys::signal::Signal;

pub use self::bird::RouterPath;
use self::{
    bird::Bird,
    servers::Servers,
    workload::{http_get, LongLived, Prober},
};
use crate::{
    agentnet::{agent_binary, follow_log, wait_for_line, Agent},
    lbnet::disable_tx_checksum_offload,
    netns::{require_root, wait_until, ChildGuard, Ns, Topology},
};

pub use self::servers::{HTTP_PORT, LINE_PORT};

/// lb hosts in the fleet.
pub const HOSTS: usize = 3;
/// Backends behind them.
pub const BACKENDS: usize = 3;
/// The backends' weights in every target group.
pub const WEIGHTS: [u16; BACKENDS] = [1, 1, 2];
/// The lb hosts' AS (one for all, so the router treats their paths as equals).
pub const LB_AS: u32 = 65001;
/// The router's AS.
pub const ROUTER_AS: u32 = 65000;
/// The kernel table the agents keep their announced routes in.
pub const ROUTE_TABLE: u32 = 100;
/// The hash seed of [`agent_config`] by default.
pub const SEED: u32 = 0x6c62_0001;
/// Every node's interface on the LAN.
pub const LAN_IF: &str = "lan0";

/// Direct-routing IPv4 VIP, every TCP port (target group `web4`).
pub const VIP4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// Direct-routing IPv6 VIP, every TCP port (target group `web6`).
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0xf, 0, 0, 0, 1);
/// Tunnel-mode (IPIP) IPv4 VIP, every TCP port (target group `tun4`, health-checked on
/// the line port, so a test can fail its checks alone).
pub const VIP_TUNNEL: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
/// Every VIP address.
pub const VIPS: [IpAddr; 3] = [IpAddr::V4(VIP4), IpAddr::V6(VIP6), IpAddr::V4(VIP_TUNNEL)];

pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 2);
const ROUTER_UP4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const ROUTER_UP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 1);
pub const ROUTER_LAN4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const ROUTER_LAN6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
/// The router's interfaces: towards the client, and on the LAN.
const ROUTER_UP_IF: &str = "r0";
const ROUTER_LAN_IF: &str = "r1";

/// Host `i`'s address on the LAN.
pub fn host4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + i as u8)
}

pub fn host6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x10 + i as u16)
}

/// Backend `i`'s address on the LAN.
pub fn backend4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 20 + i as u8)
}

pub fn backend6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x20 + i as u16)
}

/// The host whose LAN address is `addr`.
pub fn host_of(addr: IpAddr) -> Option<usize> {
    (0..HOSTS).find(|&i| addr == IpAddr::V4(host4(i)) || addr == IpAddr::V6(host6(i)))
}

/// The client's address of `vip`'s family.
pub fn client_addr(vip: IpAddr) -> IpAddr {
    match vip {
        IpAddr::V4(_) => CLIENT4.into(),
        IpAddr::V6(_) => CLIENT6.into(),
    }
}

/// Every backend (what [`agent_config`] normally lists).
pub const ALL_BACKENDS: [usize; BACKENDS] = [0, 1, 2];

/// The agents' configuration (the same file on every host): hash seed `seed`, the
/// backends `backends` (indexes) in every target group, the announce defaults.
///
/// One setting is the fleet's, not the agent's default (docs/fleet.md recommends it):
/// `unhealthy_connection_termination = false` with `unhealthy_draining_interval_secs =
/// 5`, so an unhealthy target's established flows end 5 s after it turned unhealthy
/// rather than at once. A target failing its checks from one host only still serves the
/// others; with termination at once (NLB's default), that host re-hashes (resets) the
/// target's established flows the moment it sees it unhealthy, before its announcement
/// turns standby and the router moves those flows to hosts that still send them to the
/// target (check 6 saw 11 of its 100 connections break that way). Five seconds covers the
/// other targets' checks failing too and BGP moving the flows.
pub fn agent_config(seed: u32, backends: &[usize]) -> String {
    let mut text = format!(
        "# The fleet's lb-agent configuration: the same on every host.\n\
         [agent]\nhash_seed = {seed:#x}\nflow_table_entries = 65536\n\n\
         [announce]\ntable = {ROUTE_TABLE}\npolicy = \"healthy\"\ndown_grace_secs = 2\n\n"
    );
    let vips = [
        ("web4", IpAddr::V4(VIP4), "dr"),
        ("web6", IpAddr::V6(VIP6), "dr"),
        ("tun4", IpAddr::V4(VIP_TUNNEL), "tunnel"),
    ];
    for (name, address, mode) in vips {
        text.push_str(&format!(
            "[[vip]]\nname = \"{name}\"\naddress = \"{address}\"\nport = 0\nprotocol = \"tcp\"\n\
             mode = \"{mode}\"\ntarget_group = \"{name}\"\n\n"
        ));
    }
    for (name, v6, check_port) in [
        ("web4", false, HTTP_PORT),
        ("web6", true, HTTP_PORT),
        ("tun4", false, LINE_PORT),
    ] {
        // A removed backend drains for longer than any test runs.
        text.push_str(&format!(
            "[[target_group]]\nname = \"{name}\"\nderegistration_delay_secs = 120\n\
             unhealthy_connection_termination = false\nunhealthy_draining_interval_secs = 5\n\n"
        ));
        for &i in backends {
            let weight = WEIGHTS.get(i).copied().unwrap_or(1);
            let address: IpAddr = if v6 {
                backend6(i).into()
            } else {
                backend4(i).into()
            };
            text.push_str(&format!(
                "[[target_group.target]]\naddress = \"{address}\"\nweight = {weight}\n\n"
            ));
        }
        text.push_str(&format!(
            "[target_group.health_check]\nprotocol = \"tcp\"\nport = {check_port}\n\
             interval_secs = 1\ntimeout_secs = 1\nhealthy_threshold = 2\nunhealthy_threshold = 2\n\n"
        ));
    }
    text
}

/// One lb host: its namespace, agent and BIRD.
pub struct Host {
    pub ns: Ns,
    pub agent: Option<Agent>,
    pub bird: Option<Bird>,
    /// Its agent's configuration file.
    pub config: PathBuf,
}

/// A directory under /tmp for the fleet's files, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            eprintln!("fleet: removing {}: {e}", self.0.display());
        }
    }
}

/// The fleet topology, running. See the module documentation.
pub struct Fleet {
    // Field order is drop order: processes before the namespaces they run in.
    pub hosts: Vec<Host>,
    pub router_bird: Option<Bird>,
    _decaps: Vec<ChildGuard>,
    _servers: Vec<Servers>,
    pub client: Ns,
    pub router: Ns,
    pub lan: Ns,
    pub backends: Vec<Ns>,
    pub topo: Topology,
    dir: TempDir,
    agent_bin: PathBuf,
}

impl Fleet {
    /// Builds the whole fleet under namespace prefix `prefix` and returns once every
    /// host's targets are healthy and the router holds [`HOSTS`] paths for every VIP.
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        require_root()?;
        bird::require_bird()?;
        let agent_bin = agent_binary()?;
        let dir = PathBuf::from(format!("/tmp/{prefix}-fleet"));
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .with_context(|| format!("removing the leftover {}", dir.display()))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = TempDir(dir);
        let mut topo = Topology::new(prefix)?;
        let lan = topo.add_ns("lan")?;
        lan.ip(&["link", "add", "br0", "type", "bridge"])?;
        lan.ip(&["link", "set", "br0", "up"])?;
        let (client, router) = add_client_and_router(&mut topo, &lan)?;
        let agent = path_str(&agent_bin)?.to_owned();
        let mut servers = Vec::new();
        let mut decaps = Vec::new();
        let mut backends = Vec::new();
        for i in 0..BACKENDS {
            let (ns, served, decap) = add_backend(&mut topo, &lan, i, &agent)?;
            servers.push(served);
            decaps.push(decap);
            backends.push(ns);
        }
        let mut hosts = Vec::new();
        for i in 0..HOSTS {
            let (host, port_xdp) = add_host(&mut topo, &lan, i, &agent, &dir.0)?;
            decaps.push(port_xdp);
            hosts.push(host);
        }

        let mut fleet = Self {
            hosts,
            router_bird: None,
            _decaps: decaps,
            _servers: servers,
            client,
            router,
            lan,
            backends,
            topo,
            dir,
            agent_bin,
        };
        fleet.start_router_bird()?;
        for i in 0..HOSTS {
            fleet.start_agent(i)?;
            fleet.start_bird(i)?;
        }
        for i in 0..HOSTS {
            fleet.wait_healthy(i, Duration::from_secs(15))?;
        }
        for vip in VIPS {
            fleet.wait_router_hosts(vip, &[0, 1, 2], Duration::from_secs(15))?;
            // Every path normal (no standby left over from the hosts' start).
            let normal = wait_until(Duration::from_secs(10), || {
                fleet
                    .router_paths(vip)
                    .is_ok_and(|p| p.len() == HOSTS && p.iter().all(|p| !p.standby()))
            });
            ensure!(
                normal,
                "{vip}: the router's paths are not all normal: {:#?}",
                fleet.router_paths(vip)?
            );
        }
        Ok(fleet)
    }

    /// Where the fleet keeps its files (configurations, BIRD sockets and logs).
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    fn host(&self, i: usize) -> anyhow::Result<&Host> {
        self.hosts.get(i).with_context(|| format!("no host {i}"))
    }

    fn host_mut(&mut self, i: usize) -> anyhow::Result<&mut Host> {
        self.hosts
            .get_mut(i)
            .with_context(|| format!("no host {i}"))
    }

    /// Host `i`'s admin socket (the default of an agent in its namespace).
    pub fn admin_socket(&self, i: usize) -> anyhow::Result<PathBuf> {
        Ok(PathBuf::from(format!(
            "/run/lb/netns-{}/admin.sock",
            self.host(i)?.ns.name
        )))
    }

    fn start_router_bird(&mut self) -> anyhow::Result<()> {
        let config = bird::render(
            &bird::router_example(),
            &[
                ("ROUTER_ID", ROUTER_LAN4.to_string()),
                ("LOCAL_AS", ROUTER_AS.to_string()),
                ("LB_AS", LB_AS.to_string()),
                ("LB_HOSTS", "198.18.0.0/24".to_owned()),
                ("VIPS4", "[ 198.19.0.0/16{32,32} ]".to_owned()),
                ("VIPS6", "[ 2001:2:0:f::/64{128,128} ]".to_owned()),
            ],
        )?;
        self.router_bird = Some(Bird::start(&self.router, self.dir(), "router", &config)?);
        Ok(())
    }

    /// Starts BIRD on host `i` with the example host configuration.
    pub fn start_bird(&mut self, i: usize) -> anyhow::Result<()> {
        let config = bird::render(
            &bird::host_example(),
            &[
                ("ROUTER_ID", host4(i).to_string()),
                ("LOCAL_AS", LB_AS.to_string()),
                ("ROUTER_ADDR", ROUTER_LAN4.to_string()),
                ("ROUTER_AS", ROUTER_AS.to_string()),
                ("LB_TABLE", ROUTE_TABLE.to_string()),
            ],
        )?;
        let bird = Bird::start(&self.host(i)?.ns, &self.dir.0, &format!("h{i}"), &config)?;
        self.host_mut(i)?.bird = Some(bird);
        Ok(())
    }

    /// SIGKILLs host `i`'s BIRD, as in a crash.
    pub fn kill_bird(&mut self, i: usize) -> anyhow::Result<()> {
        let bird = self
            .host_mut(i)?
            .bird
            .take()
            .with_context(|| format!("no BIRD runs on h{i}"))?;
        bird.kill()
    }

    /// `birdc` on the router.
    pub fn router_birdc(&self, args: &[&str]) -> anyhow::Result<String> {
        self.router_bird
            .as_ref()
            .context("the router's BIRD is not running")?
            .birdc(args)
    }

    /// `birdc` on host `i`.
    pub fn host_birdc(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        self.host(i)?
            .bird
            .as_ref()
            .with_context(|| format!("no BIRD runs on h{i}"))?
            .birdc(args)
    }

    /// Starts `lb-agent run --iface lan0 --config <its file>` on host `i` (in the host's
    /// mount namespace, so its pins outlive it) and waits until the data plane is live.
    pub fn start_agent(&mut self, i: usize) -> anyhow::Result<()> {
        let host = self.host(i)?;
        let agent = path_str(&self.agent_bin)?;
        let config = path_str(&host.config)?;
        let mut cmd = host.ns.command_net_only(
            agent,
            &[
                "run",
                "--iface",
                LAN_IF,
                "--config",
                config,
                "--stats-interval",
                "0",
            ],
        );
        cmd.stderr(Stdio::piped())
            .stdout(Stdio::null())
            .env("RUST_LOG", "info");
        let mut process = ChildGuard::new(
            cmd.spawn().context("starting lb-agent")?,
            format!("lb-agent on h{i}"),
        );
        let log = follow_log(&mut process)?;
        let startup = wait_for_line(
            &log,
            &["XDP program attached", "adopted the running data plane"],
            Duration::from_secs(20),
        )
        .with_context(|| format!("lb-agent on h{i}"))?;
        self.host_mut(i)?.agent = Some(Agent {
            process,
            log,
            startup,
        });
        Ok(())
    }

    /// Sends `signal` to host `i`'s agent and waits for it to exit.
    pub fn stop_agent(&mut self, i: usize, signal: Signal) -> anyhow::Result<()> {
        let mut agent = self
            .host_mut(i)?
            .agent
            .take()
            .with_context(|| format!("no agent runs on h{i}"))?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(agent.process.pid())?);
        nix::sys::signal::kill(pid, signal)?;
        ensure!(
            wait_until(Duration::from_secs(15), || matches!(
                agent.process.try_wait(),
                Ok(Some(_))
            )),
            "lb-agent on h{i} did not exit on {signal}"
        );
        Ok(())
    }

    /// Waits for host `i`'s agent to exit by itself (after `ctl down`); its exit status.
    pub fn wait_agent_exit(
        &mut self,
        i: usize,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let mut agent = self
            .host_mut(i)?
            .agent
            .take()
            .with_context(|| format!("no agent runs on h{i}"))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = agent.process.try_wait()? {
                return Ok(status);
            }
            ensure!(
                Instant::now() < deadline,
                "lb-agent on h{i} still runs after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log lines host `i`'s agent printed since the last call (or its start).
    pub fn agent_log(&self, i: usize) -> anyhow::Result<Vec<String>> {
        let agent = self
            .host(i)?
            .agent
            .as_ref()
            .with_context(|| format!("no agent runs on h{i}"))?;
        Ok(agent.log.try_iter().collect())
    }

    /// `lb-agent <args>` in host `i`'s network namespace (e.g. `down --iface lan0`).
    pub fn agent_command(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        let agent = path_str(&self.agent_bin)?;
        let out = self
            .host(i)?
            .ns
            .command_net_only(agent, args)
            .output()
            .context("running lb-agent")?;
        ensure!(
            out.status.success(),
            "lb-agent {args:?} on h{i} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `lb-agent ctl --socket <host i's> <args>`: its output.
    pub fn ctl(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        let socket = self.admin_socket(i)?;
        let mut full = vec!["ctl", "--socket", path_str(&socket)?];
        full.extend_from_slice(args);
        let out = Command::new(&self.agent_bin)
            .args(&full)
            .stdin(Stdio::null())
            .output()
            .context("running lb-agent ctl")?;
        ensure!(
            out.status.success(),
            "lb-agent ctl {args:?} on h{i} failed: {} {}",
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `lb-agent ctl --json <args>` on host `i`, parsed.
    pub fn ctl_json(&self, i: usize, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let text = self.ctl(i, &full)?;
        serde_json::from_str(&text).with_context(|| format!("ctl {args:?} printed {text:?}"))
    }

    /// Whether every target of every group is healthy on host `i`, and every VIP
    /// announced normally (past settling, see lb-agent's `announce` module).
    pub fn healthy(&self, i: usize) -> anyhow::Result<bool> {
        let status = self.ctl_json(i, &["status"])?;
        let targets = status["targets"]
            .as_object()
            .context("status has no targets")?;
        let total: u64 = targets.values().filter_map(|v| v.as_u64()).sum();
        let announced = status["announce"]["routes"]
            .as_array()
            .is_some_and(|r| !r.is_empty() && r.iter().all(|r| r["state"] == "announced"));
        Ok(
            total > 0
                && targets.get("healthy").and_then(|v| v.as_u64()) == Some(total)
                && announced,
        )
    }

    /// Waits until [`Fleet::healthy`] on host `i`.
    pub fn wait_healthy(&self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        if wait_until(timeout, || matches!(self.healthy(i), Ok(true))) {
            return Ok(());
        }
        bail!(
            "h{i}'s targets are not all healthy and announced after {timeout:?}: {}",
            self.ctl(i, &["backend", "list"])?
        )
    }

    /// `ctl status` of host `i`.
    pub fn status(&self, i: usize) -> anyhow::Result<serde_json::Value> {
        self.ctl_json(i, &["status"])
    }

    /// Host `i`'s fleet fingerprint and route tag, from `ctl status`.
    pub fn fingerprint(&self, i: usize) -> anyhow::Result<(String, u32)> {
        let status = self.status(i)?;
        let fingerprint = status["fingerprint"]
            .as_str()
            .with_context(|| format!("no fingerprint in h{i}'s status: {status}"))?;
        let tag = status["route_tag"]
            .as_u64()
            .and_then(|t| u32::try_from(t).ok())
            .with_context(|| format!("no route_tag in h{i}'s status: {status}"))?;
        Ok((fingerprint.to_owned(), tag))
    }

    /// What host `i`'s status says of `address` (`announced`, `standby`, `withdrawn`).
    pub fn announce_state(&self, i: usize, address: IpAddr) -> anyhow::Result<String> {
        let status = self.status(i)?;
        let routes = status["announce"]["routes"]
            .as_array()
            .with_context(|| format!("no announce routes in h{i}'s status: {status}"))?;
        let route = routes
            .iter()
            .find(|r| r["address"].as_str() == Some(address.to_string().as_str()))
            .with_context(|| format!("{address} is not in h{i}'s announce routes: {status}"))?;
        Ok(route["state"].as_str().unwrap_or_default().to_owned())
    }

    /// lb's routes in host `i`'s announce table, as a routing daemon reads them:
    /// (address, metric), IPv4 then IPv6.
    pub fn table_routes(&self, i: usize) -> anyhow::Result<Vec<(IpAddr, u32)>> {
        let ns = &self.host(i)?.ns;
        let table = ROUTE_TABLE.to_string();
        let mut routes = Vec::new();
        for family in ["-4", "-6"] {
            let out = ns.ip(&[family, "route", "show", "table", &table, "proto", "108"])?;
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                // "blackhole 198.19.0.1 metric 12345"
                let words: Vec<&str> = line.split_whitespace().collect();
                let parsed = (|| {
                    let address: IpAddr = words.get(1)?.parse().ok()?;
                    let at = words.iter().position(|w| *w == "metric")?;
                    let metric: u32 = words.get(at + 1)?.parse().ok()?;
                    Some((address, metric))
                })();
                routes.push(parsed.with_context(|| format!("unexpected route {line:?}"))?);
            }
        }
        Ok(routes)
    }

    /// Watches the router's kernel routes (`ip monitor route`) from now on.
    pub fn monitor_router_routes(&self) -> anyhow::Result<RouteMonitor> {
        RouteMonitor::start(&self.router)
    }

    /// The number of new flows host `i`'s data plane has placed (the `flow_new` event).
    pub fn new_flows(&self, i: usize) -> anyhow::Result<u64> {
        let stats = self.ctl_json(i, &["stats"])?;
        stats["events"]["flow_new"]["packets"]
            .as_u64()
            .with_context(|| format!("no flow_new counter in {stats}"))
    }

    /// The paths the router's BIRD holds for `vip` (empty when none).
    pub fn router_paths(&self, vip: IpAddr) -> anyhow::Result<Vec<RouterPath>> {
        let len = if vip.is_ipv4() { 32 } else { 128 };
        let text = self.router_birdc(&["show", "route", "all", &format!("{vip}/{len}")])?;
        bird::parse_routes(&text).with_context(|| format!("parsing:\n{text}"))
    }

    /// The hosts the router's kernel forwards `vip` to (its ECMP next hops), sorted.
    pub fn router_hosts(&self, vip: IpAddr) -> anyhow::Result<Vec<usize>> {
        let len = if vip.is_ipv4() { 32 } else { 128 };
        let family = if vip.is_ipv4() { "-4" } else { "-6" };
        let out = self
            .router
            .ip(&[family, "route", "show", "exact", &format!("{vip}/{len}")])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut hosts = Vec::new();
        let mut words = text.split_whitespace();
        while let Some(w) = words.next() {
            if w == "via" {
                let hop = words.next().unwrap_or_default();
                let addr: IpAddr = hop
                    .parse()
                    .with_context(|| format!("unexpected next hop {hop:?} in {text:?}"))?;
                hosts.push(host_of(addr).with_context(|| format!("{addr} is not a host"))?);
            }
        }
        hosts.sort_unstable();
        Ok(hosts)
    }

    /// Waits until the router forwards `vip` to exactly `hosts`; how long that took.
    pub fn wait_router_hosts(
        &self,
        vip: IpAddr,
        hosts: &[usize],
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        if wait_until(
            timeout,
            || matches!(self.router_hosts(vip), Ok(h) if h == hosts),
        ) {
            return Ok(start.elapsed());
        }
        bail!(
            "the router forwards {vip} to hosts {:?}, not {hosts:?}, after {timeout:?}; its BGP paths:\n{:#?}",
            self.router_hosts(vip)?,
            self.router_paths(vip)?
        )
    }

    /// The host the router's ECMP hash picks for each TCP flow (client address of
    /// `vip`'s family, source port, `vip`, destination port), asked of the router's
    /// kernel with `ip route get … iif r0` (the same hash as forwarding); `None` where it
    /// has no route.
    pub fn ecmp_hosts(
        &self,
        vip: IpAddr,
        dport: u16,
        sports: &[u16],
    ) -> anyhow::Result<Vec<Option<usize>>> {
        let client = client_addr(vip);
        let script: String = sports
            .iter()
            .map(|s| {
                format!(
                    "route get {vip} from {client} iif {ROUTER_UP_IF} ipproto tcp sport {s} dport {dport}\n"
                )
            })
            .collect();
        let path = self.dir().join("ecmp.batch");
        fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
        // -force: a flow without a route answers an error line and the rest go on.
        let out = Command::new("ip")
            .args(["-n", &self.router.name, "-force", "-batch"])
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .context("running ip route get")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let answers: Vec<Option<usize>> = text
            .lines()
            .filter(|l| l.starts_with(&vip.to_string()))
            .map(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == "via");
                words.next().and_then(|a| a.parse().ok()).and_then(host_of)
            })
            .collect();
        ensure!(
            answers.len() == sports.len(),
            "ip route get answered {} of {} flows: {text} {}",
            answers.len(),
            sports.len(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(answers)
    }

    /// Takes host `i`'s uplink (its port on the LAN bridge) down or up: a cable pulled
    /// or plugged back.
    pub fn set_uplink(&self, i: usize, up: bool) -> anyhow::Result<()> {
        self.lan.ip(&[
            "link",
            "set",
            "dev",
            &format!("h{i}"),
            if up { "up" } else { "down" },
        ])?;
        Ok(())
    }

    /// Makes host `i`'s own TCP connections to `port` fail (reset) or work again: its
    /// health checks of that port fail on this host only, while forwarded traffic (which
    /// XDP sends, not the host's stack) is untouched.
    pub fn block_port_from_host(&self, i: usize, port: u16, block: bool) -> anyhow::Result<()> {
        let ns = &self.host(i)?.ns;
        if block {
            ns.run("nft", &["add", "table", "inet", "fleet"])?;
            ns.run(
                "nft",
                &["add chain inet fleet out { type filter hook output priority 0; }"],
            )?;
            ns.run(
                "nft",
                &[&format!(
                    "add rule inet fleet out tcp dport {port} reject with tcp reset"
                )],
            )?;
        } else {
            ns.run("nft", &["delete", "table", "inet", "fleet"])?;
        }
        Ok(())
    }

    /// `n` HTTP requests on new connections to `vip` (port 80), one after another: how
    /// they spread over the hosts (from each agent's new-flow counter) and the backends.
    pub fn spread(&self, vip: IpAddr, n: usize) -> anyhow::Result<Spread> {
        let before: Vec<u64> = (0..HOSTS)
            .map(|i| self.new_flows(i))
            .collect::<Result<_, _>>()?;
        let to = SocketAddr::new(vip, HTTP_PORT);
        let start = Instant::now();
        let (backends, failed) = self.client.enter(|| {
            let mut backends = [0u64; BACKENDS];
            let mut failed = Vec::new();
            for _ in 0..n {
                match http_get(to, Duration::from_secs(3)) {
                    Ok(b) => backends[b] += 1,
                    Err(e) => failed.push(format!("{e:#}")),
                }
            }
            (backends, failed)
        })?;
        let elapsed = start.elapsed();
        let mut hosts = [0u64; HOSTS];
        for (i, h) in hosts.iter_mut().enumerate() {
            *h = self.new_flows(i)? - before[i];
        }
        Ok(Spread {
            requests: n,
            hosts,
            backends,
            failed,
            elapsed,
        })
    }

    /// `n` long-lived line-protocol connections to `vip` (port 8080), a request every
    /// `interval` each.
    pub fn long_lived(
        &self,
        vip: IpAddr,
        n: usize,
        interval: Duration,
    ) -> anyhow::Result<LongLived> {
        LongLived::start(&self.client, SocketAddr::new(vip, LINE_PORT), n, interval)
    }

    /// A new HTTP connection to `vip` every `every`, until stopped.
    pub fn prober(&self, vip: IpAddr, every: Duration) -> Prober {
        Prober::start(&self.client, SocketAddr::new(vip, HTTP_PORT), every)
    }

    /// Whether host `i`'s LAN interface has an XDP program attached.
    pub fn xdp_attached(&self, i: usize) -> anyhow::Result<bool> {
        let link = self.host(i)?.ns.ip(&["-d", "link", "show", LAN_IF])?;
        Ok(String::from_utf8_lossy(&link.stdout).contains("prog/xdp"))
    }

    /// Writes `text` as host `i`'s agent configuration (it takes effect at the next
    /// start, SIGHUP or `ctl apply`).
    pub fn write_config(&self, i: usize, text: &str) -> anyhow::Result<()> {
        let path = &self.host(i)?.config;
        fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Host `i`'s configuration file.
    pub fn config_path(&self, i: usize) -> anyhow::Result<&Path> {
        Ok(&self.host(i)?.config)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Agents first (their guards), then whatever they left pinned for lan0, before
        // the namespaces go.
        for h in &mut self.hosts {
            h.agent = None;
        }
        if let Ok(agent) = path_str(&self.agent_bin) {
            for h in &self.hosts {
                let _ =
                    h.ns.command_net_only(agent, &["down", "--iface", LAN_IF, "--grace-secs", "0"])
                        .output();
            }
        }
    }
}

/// `ip monitor route` in a namespace: every route change it prints, collected.
pub struct RouteMonitor {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _process: ChildGuard,
}

impl RouteMonitor {
    /// Starts the monitor and returns once it is seen to report (a route added and
    /// deleted for the purpose shows up).
    fn start(ns: &Ns) -> anyhow::Result<Self> {
        use std::io::BufRead as _;
        let mut process = ns.spawn("ip", &["monitor", "route"])?;
        let stdout = process.take_stdout().context("stdout is piped")?;
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(mut l) = sink.lock() else { break };
                l.push(line);
            }
        });
        const PROBE: &str = "198.18.254.0/24";
        let seen = |lines: &std::sync::Mutex<Vec<String>>| {
            lines
                .lock()
                .is_ok_and(|l| l.iter().any(|x| x.contains("198.18.254.0")))
        };
        let ready = wait_until(Duration::from_secs(5), || {
            if ns.ip(&["route", "add", "blackhole", PROBE]).is_ok() {
                let _ = ns.ip(&["route", "del", "blackhole", PROBE]);
            }
            seen(&lines)
        });
        ensure!(ready, "ip monitor route in {} reported nothing", ns.name);
        if let Ok(mut l) = lines.lock() {
            l.clear();
        }
        Ok(Self {
            lines,
            _process: process,
        })
    }

    /// Every line printed since the start (or the last [`RouteMonitor::take`]).
    pub fn take(&self) -> Vec<String> {
        self.lines
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default()
    }
}

/// How new connections spread (see [`Fleet::spread`]).
#[derive(Clone, Debug)]
pub struct Spread {
    pub requests: usize,
    /// New flows each host placed.
    pub hosts: [u64; HOSTS],
    /// Requests each backend answered.
    pub backends: [u64; BACKENDS],
    pub failed: Vec<String>,
    pub elapsed: Duration,
}

impl Spread {
    /// Each host's share of the new flows, in percent.
    pub fn host_pct(&self) -> [f64; HOSTS] {
        pct(&self.hosts)
    }

    /// Each backend's share of the answered requests, in percent.
    pub fn backend_pct(&self) -> [f64; BACKENDS] {
        pct(&self.backends)
    }

    /// Each backend's share by weight, in percent.
    pub fn weight_pct() -> [f64; BACKENDS] {
        pct(&WEIGHTS.map(u64::from))
    }
}

fn pct<const N: usize>(counts: &[u64; N]) -> [f64; N] {
    let total: u64 = counts.iter().sum();
    counts.map(|c| {
        if total == 0 {
            0.0
        } else {
            100.0 * c as f64 / total as f64
        }
    })
}

/// The client and the router, linked (198.18.1.0/24, 2001:2:0:1::/64), the router also
/// on the LAN and set up to forward with layer-4 ECMP.
fn add_client_and_router(topo: &mut Topology, lan: &Ns) -> anyhow::Result<(Ns, Ns)> {
    let client = topo.add_ns("client")?;
    let router = topo.add_ns("router")?;
    topo.veth(&client, "c0", &router, ROUTER_UP_IF)?;
    client.addr("c0", &format!("{CLIENT4}/24"))?;
    client.addr("c0", &format!("{CLIENT6}/64"))?;
    router.addr(ROUTER_UP_IF, &format!("{ROUTER_UP4}/24"))?;
    router.addr(ROUTER_UP_IF, &format!("{ROUTER_UP6}/64"))?;
    client.route(&["default", "via", &ROUTER_UP4.to_string()])?;
    client.route(&["default", "via", &ROUTER_UP6.to_string()])?;
    // A local veth hands over partial checksums that XDP forwarding cannot carry (see
    // agentnet); a client on a wire sends complete ones.
    disable_tx_checksum_offload(&client, "c0")?;

    topo.veth(&router, ROUTER_LAN_IF, lan, "r")?;
    lan.ip(&["link", "set", "r", "master", "br0"])?;
    router.addr(ROUTER_LAN_IF, &format!("{ROUTER_LAN4}/24"))?;
    router.addr(ROUTER_LAN_IF, &format!("{ROUTER_LAN6}/64"))?;
    for (key, value) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv6.conf.all.forwarding", "1"),
        // ECMP on layer 4 (otherwise every flow of the one client address takes the same
        // host): policy 3, the fields below, where a real router would use policy 1.
        // Policy 1 takes a packet's L4 hash when it already has one (kernel
        // fib_multipath_hash, "short-circuit if we already have L4 hash present"): on a
        // NIC that is the RSS hash of the 4-tuple, but a veth hands over the client
        // socket's own random hash, which TCP changes after every retransmission
        // timeout. Flows would then jump between hosts at random and `ip route get`
        // could not say where a flow goes. Policy 3 always hashes the headers.
        ("net.ipv4.fib_multipath_hash_policy", "3"),
        ("net.ipv6.fib_multipath_hash_policy", "3"),
        // Source and destination address, protocol, source and destination port.
        ("net.ipv4.fib_multipath_hash_fields", "0x37"),
        ("net.ipv6.fib_multipath_hash_fields", "0x37"),
    ] {
        router.sysctl(key, value)?;
    }
    Ok((client, router))
}

/// Backend `be<i>` on the LAN: the VIPs on `lo`, replies through the router, its servers
/// and `lb-agent decap`.
fn add_backend(
    topo: &mut Topology,
    lan: &Ns,
    i: usize,
    agent: &str,
) -> anyhow::Result<(Ns, Servers, ChildGuard)> {
    let ns = topo.add_ns(&format!("be{i}"))?;
    join_lan(topo, lan, &ns, &format!("b{i}"))?;
    ns.addr(LAN_IF, &format!("{}/24", backend4(i)))?;
    ns.addr(LAN_IF, &format!("{}/64", backend6(i)))?;
    // The VIPs are on lo: the backend must not answer ARP for them, nor use them as the
    // source of its own ARP requests (LVS-DR practice).
    ns.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
    ns.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
    for vip in VIPS {
        let len = if vip.is_ipv4() { 32 } else { 128 };
        ns.addr("lo", &format!("{vip}/{len}"))?;
    }
    // Replies go to the client through the router, not back through lb.
    ns.route(&["default", "via", &ROUTER_LAN4.to_string()])?;
    ns.route(&["default", "via", &ROUTER_LAN6.to_string()])?;
    let servers = Servers::start(&ns, i)?;
    let decap = start_decap(&ns, agent, LAN_IF, backend4(i).into())?;
    Ok((ns, servers, decap))
}

/// lb host `h<i>` on the LAN, with its agent's configuration written to `dir` (the agent
/// and BIRD start later); also the XDP program its bridge port needs.
fn add_host(
    topo: &mut Topology,
    lan: &Ns,
    i: usize,
    agent: &str,
    dir: &Path,
) -> anyhow::Result<(Host, ChildGuard)> {
    let ns = topo.add_ns(&format!("h{i}"))?;
    let port = format!("h{i}");
    join_lan(topo, lan, &ns, &port)?;
    // Without it, taking the link down removes the IPv6 address, and BIRD's IPv6 next
    // hop becomes `::` after the link comes back.
    ns.sysctl("net.ipv6.conf.all.keep_addr_on_down", "1")?;
    ns.addr(LAN_IF, &format!("{}/24", host4(i)))?;
    ns.addr(LAN_IF, &format!("{}/64", host6(i)))?;
    // lb's XDP_TX sends frames back into lan0, to its peer (a bridge port). veth delivers
    // them only if that peer has an XDP program: GRO alone does not do for XDP_TX
    // (kernel veth_xdp_flush schedules the peer's NAPI only when the peer runs a
    // program). lb_decap passes everything not tunnelled to its address, and no tunnel
    // is addressed to an lb host.
    let port_xdp = start_decap(lan, agent, &port, host4(i).into())?;
    // lb's program does not look at the destination MAC: a frame the bridge floods to
    // every port (an unknown destination, e.g. right after a host's port went down)
    // would be forwarded by every host that sees it. A real switch port facing an lb
    // host would be set up the same way.
    lan.ip(&[
        "link",
        "set",
        "dev",
        &port,
        "type",
        "bridge_slave",
        "flood",
        "off",
    ])?;
    let config = dir.join(format!("h{i}.toml"));
    fs::write(&config, agent_config(SEED, &ALL_BACKENDS))
        .with_context(|| format!("writing {}", config.display()))?;
    let host = Host {
        ns,
        agent: None,
        bird: None,
        config,
    };
    Ok((host, port_xdp))
}

/// Connects `ns` to the LAN bridge: `lan0` in `ns`, `port` in the lan namespace.
fn join_lan(topo: &mut Topology, lan: &Ns, ns: &Ns, port: &str) -> anyhow::Result<()> {
    topo.veth(ns, LAN_IF, lan, port)?;
    lan.ip(&["link", "set", port, "master", "br0"])?;
    Ok(())
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("path {} is not UTF-8", p.display()))
}

/// `lb-agent decap --iface <ifname> --address <address>` in `ns`, running once it says so.
fn start_decap(ns: &Ns, agent: &str, ifname: &str, address: IpAddr) -> anyhow::Result<ChildGuard> {
    let mut cmd = ns.command(
        agent,
        &[
            "decap",
            "--iface",
            ifname,
            "--address",
            &address.to_string(),
        ],
    );
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "info");
    let mut d = ChildGuard::new(
        cmd.spawn().context("starting lb-agent decap")?,
        format!("lb-agent decap on {ifname} in {}", ns.name),
    );
    let log = follow_log(&mut d)?;
    wait_for_line(&log, &["decapsulating"], Duration::from_secs(10))
        .with_context(|| format!("lb-agent decap on {ifname} in {}", ns.name))?;
    Ok(d)
}
