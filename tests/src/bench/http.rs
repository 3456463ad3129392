//! Benchmark section `http` (issue 7): requests/s and latency of real HTTP servers
//! measured with `wrk`, direct and through three load balancers, in one run.
//!
//! ```text
//!   client 198.18.10.2 (wrk)
//!     │
//!   lb 198.18.10.1: lb's XDP on l0, or the nft DNAT, or HAProxy on :8000
//!     ├── be0 198.18.11.2: nginx :8000 (2 workers), nginx :8001 (6 workers, for `direct`)
//!     ├── be1 198.18.12.2: nginx :8000 (2 workers)
//!     └── be2 198.18.13.2: nginx :8000 (2 workers)
//!   every backend holds the VIP 198.18.200.1 on lo and routes back through lb
//! ```
//! The topology is `agentnet`'s (the demo's): client, lb and three backends, each backend
//! running `lb-agent decap` (its XDP program is what a veth needs to receive frames lb
//! redirects) and agentnet's small test servers on other ports. Every backend also runs
//! nginx from a configuration of ours ([`servers::nginx_config`]): HTTP/1.1 keep-alive,
//! a 4-byte body from memory, no access log, listening on every address (the VIP for
//! lb's direct routing, the backend's own address for the others).
//!
//! The systems, all loaded by the same `wrk -t2 -c64 --latency` from the client namespace
//! ([`wrk::Load`]), one at a time:
//! - `direct`: to one backend's own address (be0:8001), routed by the lb namespace's
//!   kernel as a plain router: the same path as the others minus any balancing. One
//!   backend, as the issue says, but served by an nginx with six workers, as many as the
//!   three backends' nginx on :8000 have together. Every namespace shares the same two
//!   CPUs, so this keeps the server side equal for every system: six workers on two
//!   CPUs. (With two workers, `direct` came out slower than every balanced system, its
//!   p50 about twice theirs: the lone server was the bottleneck, which would make any
//!   balancer look better than no balancer.)
//! - `lb`: `lb-agent run --ephemeral` on l0 with one TCP VIP, [`VIP`]:8000, mode `dr`
//!   ([`servers::agent_config`]). The backends answer the client directly through the
//!   lb namespace's kernel (direct server return).
//! - `nft_dnat`: no agent; an nftables DNAT of the VIP to `numgen random mod 3` over the
//!   backends with conntrack, as kube-proxy's nftables mode does ([`servers::nft_rules`]).
//!   Replies come back through the same conntrack (the backends route via lb), which
//!   turns their source back into the VIP.
//! - `haproxy`: no agent, no nftables; HAProxy 2.6 in `mode tcp`, two threads, round
//!   robin, listening on the lb namespace's own address 198.18.10.1:8000: it terminates
//!   the client's connection and opens its own to a backend.
//!
//! The lb namespace has no route to the VIP, so a request to it is answered only if lb's
//! XDP program or the DNAT rule forwarded it: a served request proves the system under
//! test carried it. Before each measurement a few probe requests on new connections must
//! each get a 200 naming a backend; each backend's nginx request counter (`stub_status`)
//! is read before and after the measured run and reported as the backend share; a
//! balancing system that leaves a backend without a request fails the section (with 64
//! connections that only happens when a target is missing). lb-agent's own CPU time
//! during the run is recorded too (its control plane should be idle).
//!
//! Procedure: each round runs every system in turn (each round starting one system
//! later): a 1 s warm-up `wrk`, then the measured one (3 s quick, 5 s full). Quick is one round; full is three rounds and each
//! figure is the median over the rounds, so load from other programs on the machine
//! falls on every system alike. Figures: `rps` (wrk's Requests/sec), `p50_ms`, `p99_ms`
//! (wrk's latency distribution: time from sending a request to its response, on
//! keep-alive connections). `detail.rps_vs_direct_median_of_rounds` is the ratio taken
//! within each round, then the median: the steadier figure when other programs load the
//! machine. A system that served no request, or failed more than 1% of them (socket
//! errors, timeouts, non-2xx responses, which wrk would count as served), fails the
//! section; any error is reported in `detail`.
//!
//! Caveats for reading the figures:
//! - One 2-core VM runs wrk, the load balancer and the servers: every figure is what the
//!   whole chain does on those cores, so a balancer's cost shows as lost requests/s for
//!   all. Compare systems of the same run, not runs of different machines.
//! - Connections are kept alive (nginx's 1000 requests per connection, then wrk opens a
//!   new one), so this measures per-packet forwarding mostly, not connection setup.
//! - lb forwards requests in XDP but the responses take the lb namespace's kernel
//!   forwarding path, as they do for `direct` and `nft_dnat`; HAProxy carries both ways
//!   through its own sockets.
//!
//! nginx and HAProxy run from the Debian packages (`cargo xtask bench` installs them) but
//! with our configuration files only, inside the namespaces: a system nginx or HAProxy
//! that a package may have started on the host is neither used nor touched, and cannot
//! collide with ours (other network namespace).
//!
//! Everything started here is stopped on return, error or panic: nginx and HAProxy by
//! their guards, the ephemeral agent detaches when stopped, the nftables table is deleted,
//! and `Topology` removes the namespaces (killing whatever is left in them).

mod servers;
mod wrk;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Instant,
};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::{json, Value};

use super::{median, Progress};
use crate::{
    agentnet::{backend, Agent, AgentNet, BACKENDS, LB},
    netns::{wait_until, ChildGuard},
};
use servers::{Nginx, RunDir, PORT};

/// The VIP that lb and nftables serve (agentnet's: the backends hold it on `lo` and the
/// client routes it through the lb namespace).
pub const VIP: Ipv4Addr = crate::agentnet::VIP;
/// Namespace prefix of this section (see `Topology::new`).
const PREFIX: &str = "lbb-http";
/// Probe requests before each measurement.
const PROBES: usize = 6;
const WARMUP_SECS: u32 = 1;

/// Backend `i`'s nginx for the balanced systems.
fn pool_nginx(i: usize) -> Nginx {
    Nginx {
        backend: i,
        port: PORT,
        workers: servers::NGINX_WORKERS,
    }
}

/// The nginx that `direct` loads: in be0, with the workers of all three pool instances,
/// so that every system has the same server processes on the same CPUs.
fn direct_nginx() -> Nginx {
    Nginx {
        backend: 0,
        port: servers::DIRECT_PORT,
        workers: servers::NGINX_WORKERS * BACKENDS as u32,
    }
}

/// A system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Direct,
    Lb,
    NftDnat,
    Haproxy,
}

impl System {
    pub const ALL: [System; 4] = [System::Direct, System::Lb, System::NftDnat, System::Haproxy];

    /// The key in results.json.
    pub fn name(self) -> &'static str {
        match self {
            System::Direct => "direct",
            System::Lb => "lb",
            System::NftDnat => "nft_dnat",
            System::Haproxy => "haproxy",
        }
    }

    /// Where wrk sends its requests.
    pub fn target(self) -> SocketAddr {
        let ip: IpAddr = match self {
            System::Direct => return direct_nginx().addr(),
            System::Lb | System::NftDnat => VIP.into(),
            System::Haproxy => LB.into(),
        };
        SocketAddr::new(ip, PORT)
    }

    /// The nginx instances that serve it.
    fn servers(self) -> Vec<Nginx> {
        match self {
            System::Direct => vec![direct_nginx()],
            _ => (0..BACKENDS).map(pool_nginx).collect(),
        }
    }

    fn url(self) -> String {
        format!("http://{}/", self.target())
    }
}

/// Rounds and run lengths.
#[derive(Clone, Debug)]
struct Settings {
    rounds: usize,
    load: wrk::Load,
}

impl Settings {
    /// One round of 4 × (1 + 3) s.
    fn quick() -> Self {
        Self {
            rounds: 1,
            load: Self::load(3),
        }
    }

    /// Three rounds of 4 × (1 + 5) s.
    fn full() -> Self {
        Self {
            rounds: 3,
            load: Self::load(5),
        }
    }

    fn load(seconds: u32) -> wrk::Load {
        wrk::Load {
            threads: 2,
            connections: 64,
            seconds,
            timeout_secs: 2,
        }
    }
}

/// One measured run of one system.
struct Run {
    system: System,
    report: wrk::Report,
    /// Requests each backend's nginx served during the measured run.
    per_backend: [u64; BACKENDS],
    /// CPU time lb-agent's process used during the measured run (`lb` only): the
    /// control plane should be idle while the data plane forwards.
    agent_cpu_seconds: Option<f64>,
}

/// Everything this section starts. Field order is drop order: the servers go before the
/// namespaces they run in, the files last.
struct Bench {
    haproxy: Option<ChildGuard>,
    nginx: Vec<ChildGuard>,
    net: AgentNet,
    dir: RunDir,
}

/// What [`Bench::activate`] set up for one system; undone by [`Bench::deactivate`] (or,
/// on an error path, by drop: the agent's guard stops it, the namespace's deletion takes
/// the nftables table).
enum Active {
    Nothing,
    Agent(Agent),
    Nft,
}

/// Measures this section; see the module docs.
pub fn run(quick: bool, progress: Progress<'_>) -> Result<Value> {
    let settings = if quick {
        Settings::quick()
    } else {
        Settings::full()
    };
    let started = Instant::now();
    let mut bench = Bench::new(progress)?;
    let mut runs = Vec::new();
    for round in 1..=settings.rounds {
        // Each round starts one system later, so none is always measured first or
        // right after the same neighbour.
        let mut order = System::ALL;
        order.rotate_left((round - 1) % System::ALL.len());
        for system in order {
            let run = bench
                .measure(system, &settings.load)
                .with_context(|| format!("{} (round {round})", system.name()))?;
            let r = &run.report;
            progress(&format!(
                "round {round}/{}: {:<8} {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms  backends {:?}{}",
                settings.rounds,
                system.name(),
                r.rps,
                r.p50_ms,
                r.p99_ms,
                run.per_backend,
                run.agent_cpu_seconds
                    .map(|c| format!("  agent CPU {c:.2} s"))
                    .unwrap_or_default()
                    + &if r.errors() > 0 {
                        format!("  ERRORS {}", r.errors())
                    } else {
                        String::new()
                    }
            ));
            runs.push(run);
        }
    }
    bench.stop_haproxy();
    let result = summarize(&settings, &runs, started.elapsed().as_secs_f64())?;
    drop(bench);
    progress("topology removed");
    Ok(result)
}

impl Bench {
    fn new(progress: Progress<'_>) -> Result<Self> {
        for tool in ["wrk", "nginx", "haproxy", "nft", "timeout"] {
            ensure!(
                which(tool),
                "`{tool}` is not installed (`cargo xtask bench` installs wrk, nginx-light and haproxy; nft comes with nftables, timeout with coreutils)"
            );
        }
        let dir = RunDir::new(PREFIX)?;
        let net = AgentNet::new(PREFIX).context("building the namespace topology")?;
        // `direct` reaches be0 by its own address through the lb namespace.
        net.client
            .route(&[&format!("{}/32", backend(0)), "via", &LB.to_string()])?;
        let mut bench = Self {
            haproxy: None,
            nginx: Vec::new(),
            net,
            dir,
        };
        let instances = (0..BACKENDS).map(pool_nginx).chain([direct_nginx()]);
        for n in instances {
            let nginx_dir = bench
                .dir
                .0
                .join(format!("nginx-be{}-{}", n.backend, n.port));
            bench.nginx.push(
                servers::start_nginx(
                    &n,
                    &bench.net.backends[n.backend],
                    &bench.net.lb,
                    &nginx_dir,
                )
                .with_context(|| format!("nginx in be{} on :{}", n.backend, n.port))?,
            );
        }
        let haproxy = servers::start_haproxy(&bench.net.lb, System::Haproxy.target(), &bench.dir)
            .context("starting HAProxy")?;
        bench.haproxy = Some(haproxy);
        progress(&format!(
            "topology {PREFIX}-*: client, lb, {BACKENDS} backends with nginx ({} workers each) on :{PORT}, direct's nginx ({} workers) on {}; haproxy on {}",
            servers::NGINX_WORKERS,
            direct_nginx().workers,
            System::Direct.target(),
            System::Haproxy.target()
        ));
        Ok(bench)
    }

    /// Sets `system` up, checks that it answers, warms it up, measures it, takes it down.
    fn measure(&self, system: System, load: &wrk::Load) -> Result<Run> {
        let active = self.activate(system)?;
        let measured = (|| -> Result<Run> {
            let url = system.url();
            let probed = servers::probe(&self.net.client, system.target(), PROBES)
                .context("probe requests")?;
            if system == System::Direct {
                ensure!(
                    probed[0] == PROBES as u64,
                    "direct probes were answered by {probed:?}, not by be0 alone"
                );
            }
            wrk::run(&self.net.client, load, WARMUP_SECS, &url).context("warm-up")?;
            let counted = system.servers();
            let agent_pid = match &active {
                Active::Agent(a) => Some(a.process.pid()),
                _ => None,
            };
            let agent_cpu_before = agent_pid.map(cpu_seconds).transpose()?;
            let before = servers::served(&self.net.lb, &counted)?;
            let report = wrk::run(&self.net.client, load, load.seconds, &url)?;
            let after = servers::served(&self.net.lb, &counted)?;
            let agent_cpu_seconds = match (agent_pid, agent_cpu_before) {
                (Some(pid), Some(b)) => Some(round(cpu_seconds(pid)? - b, 3)),
                _ => None,
            };
            // Each reading of a counter counts itself once.
            let per_backend: [u64; BACKENDS] = std::array::from_fn(|i| {
                let readings = counted.iter().filter(|n| n.backend == i).count() as u64;
                after[i].saturating_sub(before[i]).saturating_sub(readings)
            });
            if report.requests == 0 || per_backend.iter().sum::<u64>() == 0 {
                bail!(
                    "{} served no request: wrk counted {} responses ({} socket errors, {} non-2xx), the backends {per_backend:?}",
                    system.name(),
                    report.requests,
                    report.connect_errors + report.read_errors + report.write_errors + report.timeouts,
                    report.non_2xx
                );
            }
            // wrk counts a non-2xx response as a request served: beyond a trace, the
            // figure would be wrong, not just low.
            ensure!(
                report.errors() * 100 <= report.requests,
                "{} failed {} of {} requests ({} connect, {} read, {} write errors, {} timeouts, {} non-2xx)",
                system.name(),
                report.errors(),
                report.requests,
                report.connect_errors,
                report.read_errors,
                report.write_errors,
                report.timeouts,
                report.non_2xx
            );
            // Dozens of connections, each placed at random or in turn: a backend left
            // out means a target is missing from the system's configuration.
            if system != System::Direct {
                if let Some(idle) = per_backend.iter().position(|&n| n == 0) {
                    bail!(
                        "{} sent no request to be{idle} ({}): served per backend {per_backend:?}",
                        system.name(),
                        backend(idle)
                    );
                }
            }
            Ok(Run {
                system,
                report,
                per_backend,
                agent_cpu_seconds,
            })
        })();
        let deactivated = self.deactivate(active);
        let run = measured?;
        deactivated?;
        Ok(run)
    }

    fn activate(&self, system: System) -> Result<Active> {
        match system {
            System::Direct | System::Haproxy => Ok(Active::Nothing),
            System::Lb => {
                let config = self.dir.write("lb.toml", &servers::agent_config(VIP))?;
                let agent = self
                    .net
                    .start_agent(&config, &["--ephemeral", "--stats-interval", "0"])
                    .context("starting lb-agent")?;
                Ok(Active::Agent(agent))
            }
            System::NftDnat => {
                let rules = self.dir.write("dnat.nft", &servers::nft_rules(VIP))?;
                let rules = rules.to_str().context("rules path is not UTF-8")?;
                self.net
                    .lb
                    .run("nft", &["-f", rules])
                    .context("loading the nftables DNAT rules")?;
                Ok(Active::Nft)
            }
        }
    }

    fn deactivate(&self, active: Active) -> Result<()> {
        match active {
            Active::Nothing => Ok(()),
            Active::Agent(agent) => {
                agent.process.stop().context("stopping lb-agent")?;
                // --ephemeral: the program goes with the agent. Should it not, remove it,
                // or the next system would be measured behind it.
                if !wait_until(std::time::Duration::from_secs(3), || {
                    matches!(self.net.attached(), Ok(false))
                }) {
                    self.net.down()?;
                    ensure!(!self.net.attached()?, "lb's XDP program is still on l0");
                }
                Ok(())
            }
            Active::Nft => {
                self.net
                    .lb
                    .run("nft", &["delete", "table", "ip", servers::NFT_TABLE])
                    .context("removing the nftables table")?;
                Ok(())
            }
        }
    }

    fn stop_haproxy(&mut self) {
        if let Some(h) = self.haproxy.take() {
            if let Err(e) = h.stop() {
                eprintln!("http bench: {e:#}");
            }
        }
    }
}

/// The section's JSON: per system the medians over rounds, and the details.
fn summarize(settings: &Settings, runs: &[Run], seconds: f64) -> Result<Value> {
    let mut out = serde_json::Map::new();
    let mut detail_systems = serde_json::Map::new();
    for system in System::ALL {
        let mine: Vec<&Run> = runs.iter().filter(|r| r.system == system).collect();
        ensure!(!mine.is_empty(), "{} was not measured", system.name());
        let pick = |f: fn(&wrk::Report) -> f64| median(mine.iter().map(|r| f(&r.report)).collect());
        out.insert(
            system.name().into(),
            json!({
                "rps": round(pick(|r| r.rps), 1),
                "p50_ms": round(pick(|r| r.p50_ms), 3),
                "p99_ms": round(pick(|r| r.p99_ms), 3),
            }),
        );
        let served: [u64; BACKENDS] =
            std::array::from_fn(|i| mine.iter().map(|r| r.per_backend[i]).sum());
        let total = served.iter().sum::<u64>().max(1) as f64;
        detail_systems.insert(
            system.name().into(),
            json!({
                "url": system.url(),
                "runs": mine.iter().map(|r| &r.report).collect::<Vec<_>>(),
                "backend_requests": served,
                "backend_share": served.map(|n| round(n as f64 / total, 3)),
                "errors": mine.iter().map(|r| r.report.errors()).sum::<u64>(),
                "agent_cpu_seconds": mine.iter().filter_map(|r| r.agent_cpu_seconds).collect::<Vec<_>>(),
            }),
        );
    }
    let rps = |s: &str| out[s]["rps"].as_f64().unwrap_or(f64::NAN);
    let ratio = |s: &str| round(rps(s) / rps("direct"), 3);
    // The same ratio within each round: load from other programs that comes and goes
    // between rounds cancels out of these.
    let per_round = |system: System| -> Vec<f64> {
        (0..settings.rounds)
            .map(|k| {
                let of = |s: System| {
                    runs.iter()
                        .filter(|r| r.system == s)
                        .nth(k)
                        .map_or(f64::NAN, |r| r.report.rps)
                };
                round(of(system) / of(System::Direct), 3)
            })
            .collect()
    };
    let detail = json!({
        // report.md quotes this line.
        "wrk": format!(
            "`wrk -t{} -c{} -d{}s --timeout={}s --latency` from the client namespace, HTTP/1.1 keep-alive, each run after a {WARMUP_SECS} s warm-up; {}",
            settings.load.threads,
            settings.load.connections,
            settings.load.seconds,
            settings.load.timeout_secs,
            if settings.rounds == 1 {
                "one round".to_owned()
            } else {
                format!("{} interleaved rounds, each figure the median", settings.rounds)
            }
        ),
        "wrk_settings": {
            "threads": settings.load.threads,
            "connections": settings.load.connections,
            "seconds": settings.load.seconds,
            "warmup_seconds": WARMUP_SECS,
            "timeout_seconds": settings.load.timeout_secs,
            "rounds": settings.rounds,
            "aggregate": "median over rounds, per figure",
            "keep_alive": true,
        },
        "server": format!(
            "nginx, {} workers per backend, keepalive_requests 1000, 4-byte body from `return 200`",
            servers::NGINX_WORKERS
        ),
        "direct_baseline": format!(
            "one backend's own address ({}) through the lb namespace as a plain router, served by one nginx with {} workers: as many as the balanced systems' {BACKENDS} backends have together on the same CPUs",
            System::Direct.target(),
            direct_nginx().workers
        ),
        "lb": "lb-agent --ephemeral, one TCP VIP, mode dr, health checks off",
        "nft_rules": servers::nft_rules(VIP),
        "haproxy": format!("mode tcp, roundrobin, {} threads, on {}", servers::HAPROXY_THREADS, System::Haproxy.target()),
        "rps_vs_direct": {
            "lb": ratio("lb"),
            "nft_dnat": ratio("nft_dnat"),
            "haproxy": ratio("haproxy"),
        },
        "rps_vs_direct_median_of_rounds": {
            "lb": median(per_round(System::Lb)),
            "nft_dnat": median(per_round(System::NftDnat)),
            "haproxy": median(per_round(System::Haproxy)),
        },
        "rps_vs_direct_per_round": {
            "lb": per_round(System::Lb),
            "nft_dnat": per_round(System::NftDnat),
            "haproxy": per_round(System::Haproxy),
        },
        "systems": detail_systems,
        "section_seconds": round(seconds, 1),
    });
    out.insert("detail".into(), detail);
    Ok(Value::Object(out))
}

fn round(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

/// User + system CPU time of process `pid` so far, in seconds (`/proc/<pid>/stat`).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The fields after the command name, which is in parentheses and may hold spaces:
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i)
            .with_context(|| format!("short /proc/{pid}/stat: {stat}"))?
            .parse::<f64>()?)
    };
    // SAFETY: sysconf has no preconditions; it only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ensure!(hz > 0, "sysconf(_SC_CLK_TCK) failed");
    Ok((ticks(11)? + ticks(12)?) / hz as f64)
}

/// Whether `tool` is an executable on PATH.
fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
}
