//! End-to-end packet rate through a veth topology (issue 7, item 2): how many packets per
//! second four systems deliver on the same path, measured in one run, plus the generator
//! alone.
//!
//! ```text
//!   <p>-gen                  <p>-lb                                  <p>-sink{0,1,2}
//!   g0 198.18.20.2/24 ── l0 198.18.20.1/24  (system under test)
//!   (lb_bench_tx,            l{1+i} 198.18.2{1+i}.1/24 ── veth ── s{i} 198.18.2{1+i}.2/24
//!    live test runs)                                              (lb_bench_sink: count, drop)
//! ```
//!
//! The systems, each measured alone on `l0` (one at a time, in [`System::ALL`]'s order):
//! - `generator`: `lb_bench_sink` on `l0` itself: what the generator pushes through the
//!   first veth hop when nothing forwards. Reported as `generator_mpps`; the forwarding
//!   ceiling below it shows the generator is not what limits the others;
//! - `xdp_forward_ceiling`: `lb_bench_fwd`, which redirects every frame unchanged to
//!   one of the three sinks (by UDP source port) through a device map: the most any XDP
//!   forwarder can do on this path, with the same fan-out as a load balancer's;
//! - `nft_dnat`: what kube-proxy does: an nftables DNAT of the VIP to
//!   `numgen random mod 3` over the sinks in a nat prerouting chain, so conntrack binds
//!   each flow to its backend on its first packet and NATs the rest (the rule's counter
//!   counts only those first packets: the smoke test checks it stays near the number of
//!   flows). `l0` carries `lb_noop` (XDP_PASS) only because a veth drops frames that
//!   arrive by `XDP_TX` unless it has an XDP program; the packets then take the kernel's
//!   normal path (skb, conntrack, NAT, forwarding). The conntrack table is flushed when
//!   the system stops, so every round starts with no flow known, as the first does;
//! - `lb_dr`, `lb_tunnel`: the real `lb-agent run --ephemeral` in the lb namespace with
//!   one UDP VIP ([`VIP`]:[`VIP_PORT`]) whose three targets are the sinks, mode `dr` or
//!   `tunnel` (IPIP).
//!
//! Generator: `lb_bench_tx` run by `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`
//! and `g0` as the ingress device, so its `XDP_TX` really transmits on `g0` (into `l0`'s
//! XDP), [`LIVE_BATCH`] frames per flush (NAPI's budget, so every hop sees the bursts a
//! NIC driver would give it). Each frame is 64 bytes of IPv4/UDP, UDP checksum 0; the
//! program gives consecutive frames [`SRC_PORTS`] × [`SRC_ADDRS`] = [`FLOWS`] different
//! source (address, port) pairs and counts what it sent in its own map.
//!
//! One generator thread per CPU, each pinned to its CPU, and every veth has one queue
//! per thread. A veth hands a frame to the peer's queue `cpu % queues` and that queue's
//! NAPI runs on the same CPU, in the softirq that follows each batch, so every CPU
//! carries its own copy of the whole chain (generator → `l0` → sink) and nothing waits
//! at a ring between CPUs. Each CPU sends its own share of the flows (as a NIC's
//! receive-side scaling keeps a flow on one CPU), so no flow-table or conntrack entry is
//! written from two CPUs. Why this generator: live frames cost no copy and no system
//! call per packet (AF_XDP and AF_PACKET do), and on the 2-CPU VM this was written on,
//! with others' load around, one thread reached a third of what two did (ceiling 1.4 to
//! 1.6 Mpps against 4 to 5), and putting the system under test on a CPU of its own
//! (threaded NAPI on `l0`, the generator on the other) was slower than either (wake-ups
//! and drops at the full ring). The cost of this design: the generator's own work is
//! part of every figure, so `generator_mpps` (the generator alone, into `l0`) is
//! reported beside them; it is well above the ceiling, so the generator is not what
//! limits a system.
//!
//! Counting: `lb_bench_sink` on each sink's veth classifies every frame (plain UDP to the
//! VIP, IPIP to the sink carrying UDP to the VIP, UDP NATed to the sink, other), counts
//! it and drops it at XDP, so the figure is the path through the system under test, not
//! a receiving stack, and only frames of the kind the system must produce count as
//! delivered (see [`System::expects`]). Delivered Mpps = those frames in a fixed window
//! (after a warm-up) / the window's measured length. Since every CPU runs the whole
//! chain, a figure is the machine's rate for the full path with all its CPUs, the
//! generator's share included: compare figures with each other and with the ceiling.
//! The systems are measured in turn for [`Settings::rounds`] rounds and each figure is
//! its median, so a burst of other load on the machine moves one round, not the result.
//! Each window also records how much of it the generator threads had their CPUs
//! (`/proc/self/task/<tid>/schedstat`), which gives the figures at full CPU
//! ([`FullCpu`], `at_full_cpu` in results.json): the steadier comparison on a machine
//! shared with other work.
//!
//! Everything stops by itself: the generator stops when the window closes or at a hard
//! deadline, each system is torn down before the next, and [`Topology`] deletes every
//! namespace (with the agent process, the nft table and the veths) on drop or panic.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::Receiver,
        Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};
use aya::{
    maps::{Array, DevMap, MapData, PerCpuArray},
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
    Ebpf,
};
use etherparse::PacketBuilder;
use lb_agent::dataplane::decap::load_without_lb_maps;
use lb_common::programs;
use nix::{
    sched::{sched_getaffinity, sched_setaffinity, CpuSet},
    unistd::{gettid, Pid},
};
use serde::Serialize;

use super::median;
use crate::{
    agentnet::{agent_binary, follow_log, wait_for_line},
    netns::{mac_text, require_root, ChildGuard, Ns, Topology},
};

/// Names the benchmark object: lb-ebpf built with its `bench` feature, the production
/// data plane plus `lb_bench_*` (lb-ebpf/src/bench_fwd.rs). `cargo xtask bench` and
/// `cargo xtask test` build it into target/bpf-bench and set this.
pub const BENCH_OBJECT_VAR: &str = "LB_BENCH_OBJECT";

/// The VIP every system serves (lb's VIP, nftables' DNAT match).
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 1);
pub const VIP_PORT: u16 = 53;
/// Sinks (the three backends).
pub const SINKS: usize = 3;
/// Distinct source ports and source addresses of the generated flows.
pub const SRC_PORTS: u32 = 256;
pub const SRC_ADDRS: u32 = 16;
/// Distinct UDP flows the generator cycles through.
pub const FLOWS: u32 = SRC_PORTS * SRC_ADDRS;
/// The first generated flow: 198.18.20.100:20000; the others count up from it.
const SRC_BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 100);
const SPORT_BASE: u16 = 20000;
const GEN: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 2);
const LB_GEN_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 1);
/// Frames per `BPF_PROG_TEST_RUN` call: tens of ms each, so the generator notices a stop
/// quickly.
const CALL_REPEAT: u32 = 1 << 16;
/// Frames the kernel runs and sends per flush in live-frame mode (its default is 64,
/// its maximum `TEST_XDP_MAX_BATCH` = 256).
const LIVE_BATCH: u32 = 64;
/// At most this many generator threads (and so veth queues), however many CPUs.
const MAX_THREADS: usize = 16;
/// Ring size of the benchmark VIP: prime, > 100 × the targets.
const RING_SIZE: u32 = 16381;
/// How long the agent may take to attach.
const AGENT_START: Duration = Duration::from_secs(20);
/// How long past its window the generator may run before it gives up on its own.
const DEADLINE_SLACK: Duration = Duration::from_secs(5);

const PROG_TX: &str = "lb_bench_tx";
const PROG_FWD: &str = "lb_bench_fwd";
const PROG_SINK: &str = "lb_bench_sink";
const MAP_TX_FRAME: &str = "LBB_TX_FRAME";
const MAP_TX_CFG: &str = "LBB_TX_CFG";
const MAP_TX_COUNT: &str = "LBB_TX_CNT";
const MAP_SINK_COUNT: &str = "LBB_SINK_CNT";
const MAP_SINK_CFG: &str = "LBB_SINK_CFG";
const MAP_FWD_PORT: &str = "LBB_FWD_PORT";

/// How a frame reached a sink: the index of its counter in `LBB_SINK_CNT`. Mirrors the
/// `KIND_*` constants of lb-ebpf/src/bench_fwd.rs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u32)]
pub enum SinkKind {
    /// ARP, IPv6 neighbour discovery, anything not below.
    Other = 0,
    /// IPv4 UDP to the VIP and its port (direct routing, plain forwarding).
    Vip = 1,
    /// IPv4-in-IPv4 to the sink carrying UDP to the VIP (tunnel mode).
    Ipip = 2,
    /// IPv4 UDP to the sink's own address and the VIP's port (destination NAT).
    Nat = 3,
}

impl SinkKind {
    const COUNT: usize = 4;
}

/// Sink `i`'s address (on `s<i>`).
pub fn sink_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 21 + i as u8, 2)
}

fn gateway(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 21 + i as u8, 1)
}

/// The result of one [`run`], in Mpps (millions of packets per second delivered to the
/// sinks), each the median of its `rounds`; `generator_mpps` is the generator alone
/// (into `l0`, dropped there), `threads` how many generator threads (one per CPU) ran,
/// `seconds` the length of each window. `detail` (every round of every system, with its
/// counts) goes to results.json's `details.e2e`.
#[derive(Clone, Debug, Serialize)]
pub struct E2eRates {
    pub lb_dr: f64,
    pub lb_tunnel: f64,
    pub nft_dnat: f64,
    pub xdp_forward_ceiling: f64,
    pub generator_mpps: f64,
    pub threads: usize,
    pub flows: u32,
    pub seconds: f64,
    pub rounds: usize,
    /// Mean share of the windows the generator threads were runnable but waiting for a
    /// CPU (see [`SystemRun::generator_waiting`]): well above zero means other load on
    /// the machine held the figures down.
    pub cpu_waiting: f64,
    /// The same figures at full CPU: see [`FullCpu`].
    pub at_full_cpu: FullCpu,
    pub detail: Vec<SystemRun>,
}

/// Each system's delivered Mpps divided by the share of the window its generator threads
/// were on their CPUs (median over the rounds): the rate had nothing else wanted those
/// CPUs. The whole chain runs in the generator threads' context (the softirqs that
/// follow each batch run on the thread and, without `CONFIG_IRQ_TIME_ACCOUNTING`, are
/// charged to it), so this is packets per CPU-second of the path × CPUs: on a machine
/// shared with other work it is far steadier than the wall-clock figures (rounds whose
/// CPU share differed by half agreed within a few per cent here), at the price of that
/// assumption; `generator_on_cpu + generator_waiting` close to 1 in the detail shows it
/// held.
#[derive(Clone, Debug, Serialize)]
pub struct FullCpu {
    pub lb_dr: f64,
    pub lb_tunnel: f64,
    pub nft_dnat: f64,
    pub xdp_forward_ceiling: f64,
    pub generator_mpps: f64,
}

/// A system under test on `l0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum System {
    Generator,
    XdpForward,
    NftDnat,
    LbDr,
    LbTunnel,
}

impl System {
    pub const ALL: [System; 5] = [
        System::Generator,
        System::XdpForward,
        System::NftDnat,
        System::LbDr,
        System::LbTunnel,
    ];

    pub fn name(self) -> &'static str {
        match self {
            System::Generator => "generator",
            System::XdpForward => "xdp_forward_ceiling",
            System::NftDnat => "nft_dnat",
            System::LbDr => "lb_dr",
            System::LbTunnel => "lb_tunnel",
        }
    }

    /// The kind of frame this system must deliver; only these count.
    pub fn expects(self) -> SinkKind {
        match self {
            System::Generator | System::XdpForward | System::LbDr => SinkKind::Vip,
            System::NftDnat => SinkKind::Nat,
            System::LbTunnel => SinkKind::Ipip,
        }
    }

    /// Whether the system spreads flows over every sink (`generator` reaches none).
    pub fn spreads(self) -> bool {
        self != System::Generator
    }
}

/// What one system did in its window.
#[derive(Clone, Debug, Serialize)]
pub struct SystemRun {
    pub system: System,
    /// Which round (from 0).
    pub round: usize,
    /// Frames of the expected kind counted in the window, in total and per sink (for
    /// `generator`, counted on `l0`; `per_sink` is then all zero).
    pub delivered: u64,
    pub per_sink: [u64; SINKS],
    /// Frames at the sinks of another IPv4 kind than expected (should be none), and of
    /// no known kind (ARP, neighbour discovery: a few are normal).
    pub unexpected: u64,
    pub other: u64,
    /// Frames the generator sent in the window.
    pub generated: u64,
    /// nft only: packets its DNAT rule saw since it was loaded. NAT rules see only a
    /// flow's first packet (conntrack handles the rest), so this stays near [`FLOWS`].
    pub nat_new_flows: Option<u64>,
    /// The window's measured length.
    pub seconds: f64,
    pub delivered_mpps: f64,
    pub generated_mpps: f64,
    /// Share of the window the generator threads (and the softirq work that runs in
    /// their context: the whole chain) were on their CPUs, and share they were runnable
    /// but waiting for a CPU. Waiting means other load on the machine took CPU time
    /// from the chain: the round's figure is low for that reason, not the system's.
    pub generator_on_cpu: f64,
    pub generator_waiting: f64,
}

/// How long to run each system, and under which namespace prefix.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespace prefix (see [`Topology::new`]): unique per concurrent user.
    pub prefix: String,
    /// Traffic before the window opens (flow tables, conntrack, caches fill).
    pub warmup: Duration,
    /// The measuring window.
    pub window: Duration,
    /// Generator threads (and veth queues); `None`: one per CPU this process may use.
    pub threads: Option<usize>,
    /// Times every system is measured, in turn (all systems once, then again): each
    /// figure is the median of its rounds, so a burst of load from something else on
    /// the machine moves one round of one system, not the result.
    pub rounds: usize,
}

impl Settings {
    /// One round of 2.5 s per system: about 16 s in all.
    pub fn quick() -> Self {
        Self {
            prefix: "lbb-e2e".into(),
            warmup: Duration::from_millis(500),
            window: Duration::from_millis(2000),
            threads: None,
            rounds: 1,
        }
    }

    /// Three rounds of 4 s per system: about 70 s in all.
    pub fn full() -> Self {
        Self {
            prefix: "lbb-e2e".into(),
            warmup: Duration::from_secs(1),
            window: Duration::from_secs(3),
            threads: None,
            rounds: 3,
        }
    }
}

/// Measures every system: see [`Settings::quick`] and [`Settings::full`]. `progress`
/// gets one line per step.
pub fn run(quick: bool, progress: &dyn Fn(&str)) -> Result<E2eRates> {
    let settings = if quick {
        Settings::quick()
    } else {
        Settings::full()
    };
    let threads = generator_cpus(settings.threads)?.len();
    let runs = run_systems(&settings, &System::ALL, progress)?;
    let median_of = |s: System, figure: fn(&SystemRun) -> f64| {
        median(runs.iter().filter(|r| r.system == s).map(figure).collect())
    };
    let rate = |s: System| median_of(s, |r| r.delivered_mpps);
    let full = |s: System| median_of(s, |r| r.delivered_mpps / r.generator_on_cpu.max(1e-3));
    Ok(E2eRates {
        lb_dr: rate(System::LbDr),
        lb_tunnel: rate(System::LbTunnel),
        nft_dnat: rate(System::NftDnat),
        xdp_forward_ceiling: rate(System::XdpForward),
        generator_mpps: rate(System::Generator),
        threads,
        flows: FLOWS,
        seconds: settings.window.as_secs_f64(),
        rounds: settings.rounds,
        cpu_waiting: runs.iter().map(|r| r.generator_waiting).sum::<f64>()
            / runs.len().max(1) as f64,
        at_full_cpu: FullCpu {
            lb_dr: full(System::LbDr),
            lb_tunnel: full(System::LbTunnel),
            nft_dnat: full(System::NftDnat),
            xdp_forward_ceiling: full(System::XdpForward),
            generator_mpps: full(System::Generator),
        },
        detail: runs,
    })
}

/// Builds the topology once and measures `systems` in order, one at a time, for
/// `settings.rounds` rounds; returns every round of every system.
pub fn run_systems(
    settings: &Settings,
    systems: &[System],
    progress: &dyn Fn(&str),
) -> Result<Vec<SystemRun>> {
    require_root()?;
    let cpus = generator_cpus(settings.threads)?;
    progress(&format!(
        "building the topology ({}-*), {FLOWS} UDP flows of 64-byte frames, \
         {} generator thread(s) on CPUs {cpus:?}",
        settings.prefix,
        cpus.len()
    ));
    let net = Net::new(&settings.prefix, cpus)?;
    let mut out = Vec::new();
    for (round, &system) in (0..settings.rounds.max(1))
        .flat_map(|round| systems.iter().map(move |system| (round, system)))
    {
        progress(&format!(
            "{} (round {}): {:.1} s warm-up, {:.1} s window",
            system.name(),
            round + 1,
            settings.warmup.as_secs_f64(),
            settings.window.as_secs_f64()
        ));
        let mut run = net
            .measure(system, settings)
            .with_context(|| format!("measuring {} (round {})", system.name(), round + 1))?;
        run.round = round;
        progress(&format!(
            "{}: {:.3} Mpps delivered (per sink {:?}, {} unexpected, {} other{}), \
             generator {:.3} Mpps, on CPU {:.0}% (≈ {:.3} Mpps at full CPU), waiting for a \
             CPU {:.0}%",
            system.name(),
            run.delivered_mpps,
            run.per_sink,
            run.unexpected,
            run.other,
            run.nat_new_flows
                .map_or(String::new(), |n| format!(", {n} new NAT flows")),
            run.generated_mpps,
            run.generator_on_cpu * 100.0,
            run.delivered_mpps / run.generator_on_cpu.max(1e-3),
            run.generator_waiting * 100.0
        ));
        out.push(run);
    }
    Ok(out)
}

/// The CPUs this process may run on, one generator thread each: the first `limit` of
/// them (default and at most [`MAX_THREADS`]).
fn generator_cpus(limit: Option<usize>) -> Result<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0)).context("sched_getaffinity")?;
    let cpus: Vec<usize> = (0..CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .take(limit.unwrap_or(MAX_THREADS).min(MAX_THREADS))
        .collect();
    ensure!(!cpus.is_empty(), "this process may run on no CPU");
    Ok(cpus)
}

/// The topology with the generator and the sinks loaded; systems come and go on `l0`.
/// Field order is drop order: XDP programs before the namespaces they are attached in.
struct Net {
    generator: Generator,
    sinks: Vec<Sink>,
    object: Vec<u8>,
    agent_bin: PathBuf,
    cpus: Vec<usize>,
    gen: Ns,
    lb: Ns,
    topo: Topology,
}

impl Net {
    fn new(prefix: &str, cpus: Vec<usize>) -> Result<Self> {
        let agent_bin = agent_binary()?;
        let object = bench_object()?;
        let queues = cpus.len();
        let mut topo = Topology::new(prefix)?;
        let gen = topo.add_ns("gen")?;
        let lb = topo.add_ns("lb")?;
        veth(&gen, "g0", &lb, "l0", queues)?;
        gen.addr("g0", &format!("{GEN}/24"))?;
        lb.addr("l0", &format!("{LB_GEN_SIDE}/24"))?;
        lb.sysctl("net.ipv4.conf.all.forwarding", "1")?;
        let mut sinks = Vec::new();
        for i in 0..SINKS {
            let ns = topo.add_ns(&format!("sink{i}"))?;
            let (lif, sif) = (format!("l{}", i + 1), format!("s{i}"));
            veth(&lb, &lif, &ns, &sif, queues)?;
            lb.addr(&lif, &format!("{}/24", gateway(i)))?;
            ns.addr(&sif, &format!("{}/24", sink_addr(i)))?;
            // The sink drops everything at XDP, ARP included: its address is resolved
            // statically, as a router's would be after its first answer.
            let mac = mac_text(ns.mac(&sif)?);
            lb.ip(&[
                "neigh",
                "replace",
                &sink_addr(i).to_string(),
                "lladdr",
                &mac,
                "dev",
                &lif,
                "nud",
                "permanent",
            ])?;
            sinks.push(Sink::attach(&object, &ns, &sif, sink_addr(i))?);
        }
        let frame = template_frame(gen.mac("g0")?, lb.mac("l0")?);
        let generator = Generator::new(&object, &gen, "g0", &frame, queues)?;
        Ok(Self {
            generator,
            sinks,
            object,
            agent_bin,
            cpus,
            gen,
            lb,
            topo,
        })
    }

    /// Puts `system` on `l0`, runs the generator through warm-up and window, and takes
    /// `system` down again.
    fn measure(&self, system: System, settings: &Settings) -> Result<SystemRun> {
        let running = self.start(system)?;
        self.lb.ensure_native_xdp("l0")?;
        let stop = AtomicBool::new(false);
        let tids = Mutex::new(Vec::new());
        let deadline = Instant::now() + settings.warmup + settings.window + DEADLINE_SLACK;
        let (window, generated) = std::thread::scope(|s| {
            let threads: Vec<_> = self
                .cpus
                .iter()
                .map(|&cpu| {
                    let (stop, tids) = (&stop, &tids);
                    s.spawn(move || self.generator.run(&self.gen, cpu, tids, stop, deadline))
                })
                .collect();
            // Stop the generators however the window ends.
            let window = self.window(system, &running, settings, &tids);
            stop.store(true, Ordering::SeqCst);
            let generated: Result<Vec<()>> = threads
                .into_iter()
                .map(|t| {
                    t.join()
                        .map_err(|_| anyhow::anyhow!("a generator thread panicked"))
                        .and_then(|r| r)
                })
                .collect();
            (window, generated)
        });
        generated.context("generator")?;
        let mut run = window?;
        if let Running::Nft { lb, .. } = &running {
            run.nat_new_flows = Some(nft_rule_packets(lb)?);
        }
        Ok(run)
    }

    /// Sleeps through the warm-up, then counts over the window. `tids` are the generator
    /// threads (they add themselves when they start), whose scheduler counters show how
    /// much of the window they had their CPUs.
    fn window(
        &self,
        system: System,
        running: &Running,
        settings: &Settings,
        tids: &Mutex<Vec<i32>>,
    ) -> Result<SystemRun> {
        std::thread::sleep(settings.warmup);
        let tids = tids
            .lock()
            .map_err(|_| anyhow::anyhow!("a generator thread panicked"))?
            .clone();
        let sched = || -> Result<(u64, u64)> {
            tids.iter().try_fold((0, 0), |(run, wait), &tid| {
                let (r, w) = schedstat(tid)?;
                Ok((run + r, wait + w))
            })
        };
        let (t0, c0, g0, s0) = (
            Instant::now(),
            self.counts(system, running)?,
            self.generator.sent()?,
            sched()?,
        );
        std::thread::sleep(settings.window);
        let (t1, c1, g1, s1) = (
            Instant::now(),
            self.counts(system, running)?,
            self.generator.sent()?,
            sched()?,
        );
        let seconds = (t1 - t0).as_secs_f64();
        let share = |after: u64, before: u64| {
            after.saturating_sub(before) as f64 / 1e9 / (seconds * tids.len().max(1) as f64)
        };
        let mut per_sink = [0u64; SINKS];
        let (mut unexpected, mut other) = (0, 0);
        for (i, (before, after)) in c0.sinks.iter().zip(&c1.sinks).enumerate() {
            let diff = |kind: usize| after[kind].saturating_sub(before[kind]);
            for kind in 0..SinkKind::COUNT {
                if kind == system.expects() as usize {
                    per_sink[i] = diff(kind);
                } else if kind == SinkKind::Other as usize {
                    other += diff(kind);
                } else {
                    unexpected += diff(kind);
                }
            }
        }
        let delivered = match (c0.l0, c1.l0) {
            (Some(before), Some(after)) => after.saturating_sub(before),
            _ => per_sink.iter().sum(),
        };
        let generated = g1.saturating_sub(g0);
        let mpps = |n: u64| n as f64 / seconds.max(1e-9) / 1e6;
        Ok(SystemRun {
            system,
            round: 0,
            delivered,
            per_sink,
            unexpected,
            other,
            generated,
            nat_new_flows: None,
            seconds,
            delivered_mpps: mpps(delivered),
            generated_mpps: mpps(generated),
            generator_on_cpu: share(s1.0, s0.0),
            generator_waiting: share(s1.1, s0.1),
        })
    }

    /// Every sink's counters, and for `generator` the expected kind counted on `l0`.
    fn counts(&self, system: System, running: &Running) -> Result<Counts> {
        let sinks = self.sinks.iter().map(Sink::counts).collect::<Result<_>>()?;
        let l0 = match running {
            Running::L0Sink(sink) => Some(sink.counts()?[system.expects() as usize]),
            _ => None,
        };
        Ok(Counts { sinks, l0 })
    }

    /// Starts `system` on `l0`; it stops when the returned value is dropped.
    fn start(&self, system: System) -> Result<Running> {
        match system {
            System::Generator => Ok(Running::L0Sink(Sink::attach(
                &self.object,
                &self.lb,
                "l0",
                LB_GEN_SIDE,
            )?)),
            System::XdpForward => {
                let mut ebpf = load_object(&self.object)?;
                let ports = (0..SINKS)
                    .map(|i| self.lb.ifindex(&format!("l{}", i + 1)))
                    .collect::<Result<Vec<_>>>()?;
                self.lb.enter(|| -> Result<()> {
                    // A device map resolves the ifindex in the caller's namespace.
                    let mut map = DevMap::try_from(
                        ebpf.map_mut(MAP_FWD_PORT).context("no LBB_FWD_PORT map")?,
                    )?;
                    for (slot, &ifindex) in ports.iter().enumerate() {
                        map.set(u32::try_from(slot)?, ifindex, None, 0)?;
                    }
                    attach(&mut ebpf, PROG_FWD, "l0")
                })??;
                Ok(Running::Xdp { _prog: ebpf })
            }
            System::NftDnat => {
                let mut ebpf = load_object(&self.object)?;
                self.lb
                    .enter(|| attach(&mut ebpf, programs::LB_NOOP, "l0"))??;
                let path = std::env::temp_dir().join(format!("{}-dnat.nft", self.topo.prefix()));
                std::fs::write(&path, nft_rules()).context("writing the nft rules")?;
                let loaded = self.lb.run(
                    "nft",
                    &["-f", path.to_str().context("temp path not UTF-8")?],
                );
                if let Err(e) = std::fs::remove_file(&path) {
                    eprintln!("e2e: removing {}: {e}", path.display());
                }
                loaded
                    .context("loading the nft DNAT rules (is the nftables package installed?)")?;
                Ok(Running::Nft {
                    lb: self.lb.clone(),
                    _noop: ebpf,
                })
            }
            System::LbDr | System::LbTunnel => {
                let mode = if system == System::LbDr {
                    "dr"
                } else {
                    "tunnel"
                };
                let path = std::env::temp_dir().join(format!("{}-{mode}.toml", self.topo.prefix()));
                std::fs::write(&path, agent_config(mode)).context("writing the agent config")?;
                let started = self.start_agent(&path);
                if let Err(e) = std::fs::remove_file(&path) {
                    eprintln!("e2e: removing {}: {e}", path.display());
                }
                let (agent, log) = started?;
                Ok(Running::Agent {
                    _agent: agent,
                    _log: log,
                })
            }
        }
    }

    /// Starts the agent on `l0` with `config`; returns it once its program is attached,
    /// with the receiver of its log (kept open so the agent's stderr never breaks).
    fn start_agent(&self, config: &Path) -> Result<(ChildGuard, Receiver<String>)> {
        let agent = self.agent_bin.to_str().context("agent path is not UTF-8")?;
        let config = config.to_str().context("config path is not UTF-8")?;
        let mut cmd = self.lb.command_net_only(
            agent,
            &[
                "run",
                "--iface",
                "l0",
                "--ephemeral",
                "--stats-interval",
                "0",
                "--config",
                config,
            ],
        );
        cmd.stderr(Stdio::piped())
            .stdout(Stdio::null())
            .env("RUST_LOG", "info");
        let mut process = ChildGuard::new(cmd.spawn().context("starting lb-agent")?, "lb-agent");
        let log = follow_log(&mut process)?;
        wait_for_line(&log, &["XDP program attached"], AGENT_START)?;
        Ok((process, log))
    }
}

/// Counters read at one instant: every sink's per-kind counts, and `l0`'s own sink's
/// count of the expected kind when the generator is measured alone.
struct Counts {
    sinks: Vec<[u64; SinkKind::COUNT]>,
    l0: Option<u64>,
}

/// A system running on `l0`, stopped on drop.
enum Running {
    /// The generator alone: a counting sink on `l0`.
    L0Sink(Sink),
    /// A program of ours (detached when its `Ebpf` drops).
    Xdp { _prog: Ebpf },
    /// nftables rules and the pass-through program under them.
    Nft { lb: Ns, _noop: Ebpf },
    /// `lb-agent run --ephemeral`: detaches when it exits.
    Agent {
        _agent: ChildGuard,
        _log: Receiver<String>,
    },
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Running::Nft { lb, .. } = self {
            // No panic in drop; the namespace's deletion removes the table anyway.
            if let Err(e) = lb.run("nft", &["delete", "table", "ip", NFT_TABLE]) {
                eprintln!("e2e: removing the nft table: {e:#}");
            }
            // The NAT bindings outlive the table (30 s for unreplied UDP): flushed, the
            // next round starts from an empty conntrack table, as the first did.
            if let Err(e) = lb.enter(flush_conntrack).and_then(|r| r) {
                eprintln!("e2e: flushing conntrack: {e:#}");
            }
        }
    }
}

/// Empties the calling thread's network namespace's IPv4 conntrack table, as
/// `conntrack -F` does (that tool is not installed here): a ctnetlink delete request
/// with no attributes.
fn flush_conntrack() -> Result<()> {
    use nix::sys::socket::{
        recv, send, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
    };
    use std::os::fd::AsRawFd as _;
    const NFNL_SUBSYS_CTNETLINK: u16 = 1;
    const IPCTNL_MSG_CT_DELETE: u16 = 2;
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .context("opening a netfilter netlink socket")?;
    // struct nlmsghdr (16 bytes) + struct nfgenmsg (4 bytes), native byte order but
    // for nfgenmsg.res_id (big-endian, 0 here).
    let mut msg = Vec::with_capacity(20);
    msg.extend_from_slice(&20u32.to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE).to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence number
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    msg.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]); // family, version, res_id
    send(fd.as_raw_fd(), &msg, MsgFlags::empty()).context("sending the conntrack flush")?;
    // The answer is an NLMSG_ERROR carrying 0 (done) or a negative errno; ENOENT means
    // the table was empty already.
    let mut buf = [0u8; 256];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).context("reading the answer")?;
    ensure!(n >= 20, "short netlink answer ({n} bytes)");
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    ensure!(
        kind == libc::NLMSG_ERROR as u16,
        "unexpected netlink answer type {kind}"
    );
    let errno = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
    ensure!(
        errno == 0 || errno == -libc::ENOENT,
        "conntrack flush failed: {}",
        std::io::Error::from_raw_os_error(-errno)
    );
    Ok(())
}

/// A veth pair with `queues` queues each way (`Topology::veth` makes single-queue
/// pairs): one per generator thread, so each CPU has its own queue on every hop. Both
/// namespaces belong to the caller's [`Topology`], whose drop deletes the pair with them.
fn veth(a: &Ns, a_if: &str, b: &Ns, b_if: &str, queues: usize) -> Result<()> {
    let q = queues.to_string();
    a.ip(&[
        "link",
        "add",
        a_if,
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
        "netns",
        &b.name,
    ])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

const NFT_TABLE: &str = "lbb_e2e";

/// kube-proxy's nftables shape for a UDP service with three endpoints: DNAT in prerouting
/// to a random endpoint, chosen once per connection (conntrack keeps the binding). The
/// counter shows how many packets reached the rule, that is how many flows conntrack
/// did not know yet.
fn nft_rules() -> String {
    let targets: Vec<String> = (0..SINKS)
        .map(|i| format!("{i} : {}", sink_addr(i)))
        .collect();
    format!(
        "table ip {NFT_TABLE} {{\n  chain pre {{\n    type nat hook prerouting priority dstnat; policy accept;\n    ip daddr {VIP} udp dport {VIP_PORT} counter dnat to numgen random mod {SINKS} map {{ {} }}\n  }}\n}}\n",
        targets.join(", ")
    )
}

/// The packets the DNAT rule's counter has seen.
fn nft_rule_packets(lb: &Ns) -> Result<u64> {
    let out = lb.run("nft", &["list", "table", "ip", NFT_TABLE])?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_counter_packets(&text)
        .with_context(|| format!("no counter in the nft DNAT rule:\n{text}"))
}

/// The number after the first `counter packets` in `nft list` output.
fn parse_counter_packets(text: &str) -> Option<u64> {
    let (_, rest) = text.split_once("counter packets ")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The agent's configuration: one UDP VIP on the sinks, no health checks (the sinks
/// answer nothing).
fn agent_config(mode: &str) -> String {
    let mut s = format!(
        "[agent]\nflow_table_entries = 65536\n\n[[vip]]\nname = \"bench\"\naddress = \"{VIP}\"\nport = {VIP_PORT}\nprotocol = \"udp\"\nmode = \"{mode}\"\nring_size = {RING_SIZE}\ntarget_group = \"sinks\"\n\n[[target_group]]\nname = \"sinks\"\n"
    );
    for i in 0..SINKS {
        s.push_str(&format!(
            "\n[[target_group.target]]\naddress = \"{}\"\n",
            sink_addr(i)
        ));
    }
    s.push_str("\n[target_group.health_check]\nenabled = false\n");
    s
}

/// The generator's template: 64 bytes, g0 → l0, SRC_BASE:SPORT_BASE → VIP:VIP_PORT,
/// UDP checksum 0 (none), so the generator can vary the flow without touching it.
fn template_frame(src_mac: [u8; 6], dst_mac: [u8; 6]) -> [u8; 64] {
    let payload = [0u8; 64 - 14 - 20 - 8];
    let builder = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(SRC_BASE.octets(), VIP.octets(), 64)
        .udp(SPORT_BASE, VIP_PORT);
    let mut bytes = Vec::with_capacity(64);
    // Writing into a Vec cannot fail, and the sizes are fixed.
    let written = builder.write(&mut bytes, &payload);
    let mut frame = [0u8; 64];
    if written.is_ok() && bytes.len() == 64 {
        frame.copy_from_slice(&bytes);
    }
    frame[14 + 20 + 6] = 0;
    frame[14 + 20 + 7] = 0;
    frame
}

/// The benchmark object's bytes, from [`BENCH_OBJECT_VAR`].
fn bench_object() -> Result<Vec<u8>> {
    let path = std::env::var_os(BENCH_OBJECT_VAR).with_context(|| {
        format!(
            "{BENCH_OBJECT_VAR} is not set: it names the benchmark eBPF object (lb-ebpf \
             built with the `bench` feature); run through `cargo xtask bench` or `cargo \
             xtask test`, which build it into target/bpf-bench and set it"
        )
    })?;
    std::fs::read(&path).with_context(|| {
        format!(
            "reading the benchmark eBPF object {} ({BENCH_OBJECT_VAR})",
            Path::new(&path).display()
        )
    })
}

/// Loads the benchmark object with the load balancer's big maps at their smallest (only
/// the `lb_bench_*` programs and `lb_noop` are used from it).
fn load_object(object: &[u8]) -> Result<Ebpf> {
    load_without_lb_maps(object)
        .with_context(|| format!("loading the benchmark eBPF object ({BENCH_OBJECT_VAR})"))
}

fn xdp_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .with_context(|| {
            format!("no program {name} in the object (was it built with the `bench` feature?)")
        })?
        .try_into()?;
    if prog.fd().is_err() {
        prog.load()
            .with_context(|| format!("loading {name} (verifier)"))?;
    }
    Ok(prog)
}

/// Loads and attaches program `name` to `ifname` in native mode; call it on a thread in
/// the interface's namespace.
fn attach(ebpf: &mut Ebpf, name: &str, ifname: &str) -> Result<()> {
    xdp_program(ebpf, name)?
        .attach(ifname, XdpMode::Driver)
        .with_context(|| format!("attaching {name} to {ifname}"))?;
    Ok(())
}

/// `lb_bench_sink` on one interface, classifying by the VIP and `own` address.
struct Sink {
    ebpf: Ebpf,
}

impl Sink {
    fn attach(object: &[u8], ns: &Ns, ifname: &str, own: Ipv4Addr) -> Result<Self> {
        let mut ebpf = load_object(object)?;
        let mut cfg =
            Array::<_, u32>::try_from(ebpf.map_mut(MAP_SINK_CFG).context("no LBB_SINK_CFG map")?)?;
        cfg.set(0, u32::from(VIP), 0)?;
        cfg.set(1, u32::from(VIP_PORT), 0)?;
        cfg.set(2, u32::from(own), 0)?;
        ns.enter(|| attach(&mut ebpf, PROG_SINK, ifname))??;
        ns.ensure_native_xdp(ifname)?;
        Ok(Self { ebpf })
    }

    /// Frames counted so far, by [`SinkKind`].
    fn counts(&self) -> Result<[u64; SinkKind::COUNT]> {
        let map = self
            .ebpf
            .map(MAP_SINK_COUNT)
            .context("no LBB_SINK_CNT map")?;
        let counts = PerCpuArray::<&MapData, u64>::try_from(map)?;
        let mut out = [0u64; SinkKind::COUNT];
        for (kind, slot) in out.iter_mut().enumerate() {
            *slot = counts.get(&(kind as u32), 0)?.iter().sum();
        }
        Ok(out)
    }
}

/// `lb_bench_tx`, loaded and configured, run from the generator's namespace.
struct Generator {
    ebpf: Ebpf,
    ifindex: u32,
    frame: [u8; 64],
}

impl Generator {
    fn new(object: &[u8], ns: &Ns, ifname: &str, frame: &[u8; 64], threads: usize) -> Result<Self> {
        let mut ebpf = load_object(object)?;
        xdp_program(&mut ebpf, PROG_TX)?;
        let mut words = [0u64; 8];
        for (w, chunk) in words.iter_mut().zip(frame.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            // The program copies these words to the packet as they lie in memory.
            *w = u64::from_ne_bytes(b);
        }
        let mut tpl = Array::<_, [u64; 8]>::try_from(
            ebpf.map_mut(MAP_TX_FRAME).context("no LBB_TX_FRAME map")?,
        )?;
        tpl.set(0, words, 0)?;
        ensure!(
            u32::from(SRC_BASE.octets()[3]) + SRC_ADDRS <= 255,
            "source addresses would wrap"
        );
        let mut cfg =
            Array::<_, u32>::try_from(ebpf.map_mut(MAP_TX_CFG).context("no LBB_TX_CFG map")?)?;
        cfg.set(0, SRC_PORTS, 0)?;
        cfg.set(1, SRC_ADDRS, 0)?;
        // Each CPU sends its own share of the source addresses (see lb_bench_tx).
        cfg.set(2, u32::try_from(threads)?, 0)?;
        Ok(Self {
            ebpf,
            ifindex: ns.ifindex(ifname)?,
            frame: *frame,
        })
    }

    /// Frames sent so far (all CPUs).
    fn sent(&self) -> Result<u64> {
        let map = self.ebpf.map(MAP_TX_COUNT).context("no LBB_TX_CNT map")?;
        let counts = PerCpuArray::<&MapData, u64>::try_from(map)?;
        Ok(counts.get(&0, 0)?.iter().sum())
    }

    /// Sends from `cpu` (the thread is pinned there, so the frames take that CPU's veth
    /// queues) until `stop` is set or `deadline` passes. Adds its thread id to `tids`.
    fn run(
        &self,
        ns: &Ns,
        cpu: usize,
        tids: &Mutex<Vec<i32>>,
        stop: &AtomicBool,
        deadline: Instant,
    ) -> Result<()> {
        let prog: &Xdp = self
            .ebpf
            .program(PROG_TX)
            .context("no lb_bench_tx")?
            .try_into()?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex. Live frames go out of the ingress device on XDP_TX.
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(self.frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&self.ifindex.to_ne_bytes());
        ns.enter(|| -> Result<()> {
            let mut set = CpuSet::new();
            set.set(cpu)?;
            // Pid 0: the calling thread.
            sched_setaffinity(Pid::from_raw(0), &set)
                .with_context(|| format!("pinning a generator thread to CPU {cpu}"))?;
            tids.lock()
                .map_err(|_| anyhow::anyhow!("a generator thread panicked"))?
                .push(gettid().as_raw());
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                prog.test_run(TestRunOptions {
                    data_in: Some(&self.frame),
                    ctx_in: Some(&ctx),
                    repeat: CALL_REPEAT,
                    attrs: TestRunAttrs::new().xdp_live_frames(LIVE_BATCH),
                    ..Default::default()
                })
                .context("BPF_PROG_TEST_RUN (live frames)")?;
            }
            Ok(())
        })?
    }
}

/// A thread's scheduler counters (`/proc/self/task/<tid>/schedstat`): nanoseconds on a
/// CPU and nanoseconds runnable but waiting for one.
fn schedstat(tid: i32) -> Result<(u64, u64)> {
    let path = format!("/proc/self/task/{tid}/schedstat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_schedstat(&text).with_context(|| format!("unexpected {path}: {text:?}"))
}

fn parse_schedstat(text: &str) -> Option<(u64, u64)> {
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(run)), Some(Ok(wait))) => Some((run, wait)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_is_a_valid_udp_frame_without_checksum() {
        let frame = template_frame([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let parsed = etherparse::SlicedPacket::from_ethernet(&frame);
        assert!(parsed.is_ok(), "{parsed:?}");
        assert_eq!(&frame[26..30], &SRC_BASE.octets());
        assert_eq!(&frame[30..34], &VIP.octets());
        assert_eq!(&frame[40..42], &[0, 0]);
        assert!(nft_rules().contains("numgen random mod 3"));
        assert!(agent_config("tunnel").contains("mode = \"tunnel\""));
    }

    #[test]
    fn reads_the_nft_rule_counter() {
        let listing = "table ip lbb_e2e {\n\tchain pre {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tip daddr 198.18.200.1 udp dport 53 counter packets 4101 bytes 188646 dnat to numgen random mod 3 map { 0 : 198.18.21.2 }\n\t}\n}\n";
        assert_eq!(parse_counter_packets(listing), Some(4101));
        assert_eq!(parse_counter_packets("table ip x {}"), None);
    }

    #[test]
    fn reads_schedstat() {
        assert_eq!(
            parse_schedstat("3032000123 10013676 41\n"),
            Some((3_032_000_123, 10_013_676))
        );
        assert_eq!(parse_schedstat(""), None);
    }
}
