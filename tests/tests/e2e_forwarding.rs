//! End to end: real TCP and UDP clients and servers in namespaces, the production XDP
//! program (native mode) on the load balancer, `dr` and `tunnel` VIPs over IPv4 and IPv6.
//!
//! ```text
//!   client ── [l0] lb [l1,l2,l3] ── be0, be1, be2   (see lb_tests::lbnet)
//! ```
//!
//! For each of the four VIPs (dr/tunnel × IPv4/IPv6; TCP port 80 and UDP port 53 each):
//! - 1,000 TCP connections from fixed source ports (connect, one request, answer, close)
//!   all succeed, each on the backend the ring predicts for its 5-tuple;
//! - 3,000 UDP flows from fixed source ports with equal weights, then 3,000 other flows
//!   after the rings were rebuilt with weights 1:2:3 (as the agent does: Maglev build,
//!   `install_ring`): each flow lands where the ring predicts, and each backend's share is
//!   within 5 points of its weight share;
//! - a long-lived TCP connection (a request every 100 ms, at least 30 over at least 3 s)
//!   and a UDP flow (a datagram every 100 ms) keep their backend for their whole life,
//!   while the other phases open thousands of flows and the rings change weights under
//!   them. Their source ports are picked so that the weighted ring would send them
//!   elsewhere: only the flow table keeps them where they are. Until they end, new TCP
//!   connections keep being opened, and each lands where the *new* ring says;
//! - the data plane counted no drop of any reason, no `XDP_DROP` and no `XDP_ABORTED`, and
//!   sent every forwarded packet by `XDP_REDIRECT`; its per-backend new-flow counters equal
//!   the flows the clients saw on each backend; for tunnel VIPs every backend's `lb_decap`
//!   decapsulated packets, for `dr` VIPs none.
//!
//! Source ports are fixed (below the ephemeral range, distinct per phase and VIP), and
//! the hash seed is the default, so the shares are the same on every run. All four VIPs
//! share one topology and run one after the other; every check is collected and the test
//! fails at the end listing all of them. The client's veth has transmit checksum offload
//! off, as a client behind a real wire would (see `lbnet::disable_tx_checksum_offload`).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _};
use lb_agent::maglev;
use lb_common::{
    decap::DecapEvent,
    service::{mode, PROTO_TCP, PROTO_UDP},
    DropReason, Event, Verdict,
};
use lb_tests::lbnet::{
    self, ask_tcp, ask_udp, build_ring, check, client_addr, flow_key, predict, shares,
    tcp_connect_from, udp_flow, udp_flows, LbNet, VipSpec, BACKENDS, TCP_PORT, UDP_PORT,
};

const EQUAL: [u32; BACKENDS] = [1, 1, 1];
const WEIGHTED: [u32; BACKENDS] = [1, 2, 3];
/// A backend's share may differ from its weight share by this much.
const TOLERANCE: f64 = 0.05;

const TCP_CONNECTIONS: u16 = 1000;
const UDP_FLOWS: u16 = 3000;
/// Source ports. TCP: per VIP from `TCP_BASE + index × TCP_STRIDE`: the connections,
/// the candidates for the long-lived connection, the connections after the weight
/// change. UDP: the same ranges for every VIP (the VIP differs, so the 5-tuples do).
/// All below the ephemeral range (32768), and no two phases share one.
const TCP_BASE: u16 = 10000;
const TCP_STRIDE: u16 = 2000;
const UDP_EQUAL_BASE: u16 = 20000;
const UDP_WEIGHTED_BASE: u16 = 24000;
const STICKY_BASE: u16 = 28000;
const CANDIDATES: u16 = 200;
/// TCP connections opened after the weight change, for as long as the long-lived flows
/// run (they follow the candidates in the VIP's TCP range), and the pause between them.
const CHURN_MAX: u16 = 600;
const CHURN_PAUSE: Duration = Duration::from_millis(5);

const _: () = assert!(TCP_CONNECTIONS + CANDIDATES + CHURN_MAX <= TCP_STRIDE);
const _: () = assert!(TCP_BASE as u32 + 4 * TCP_STRIDE as u32 <= UDP_EQUAL_BASE as u32);
const _: () = assert!(UDP_EQUAL_BASE + UDP_FLOWS <= UDP_WEIGHTED_BASE);
const _: () = assert!(UDP_WEIGHTED_BASE + UDP_FLOWS <= STICKY_BASE);
const _: () = assert!(STICKY_BASE as u32 + CANDIDATES as u32 <= 32768);

/// Every connect, read and UDP answer.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// UDP flows in flight at once, and how long one waits before its single retry.
const UDP_BATCH: usize = 50;
const UDP_TIMEOUT: Duration = Duration::from_secs(1);
/// Upper bound of every traffic phase: flows not started by then fail. A TCP phase also
/// stops trying after this many failed connections (each may take `OP_TIMEOUT`).
const PHASE_LIMIT: Duration = Duration::from_secs(10);
const MAX_TCP_FAILURES: usize = 20;
/// The long-lived flows: a request every interval, at least this many over at least
/// this long, and never longer than the bound.
const LONG_INTERVAL: Duration = Duration::from_millis(100);
const LONG_MIN_REQUESTS: usize = 30;
const LONG_MIN_TIME: Duration = Duration::from_secs(3);
const LONG_MAX_TIME: Duration = Duration::from_secs(60);

/// One VIP address with its TCP and UDP entries.
#[derive(Clone, Copy, Debug)]
struct Combo {
    name: &'static str,
    index: u16,
    mode: u8,
    vip: IpAddr,
}

const COMBOS: [Combo; 4] = [
    Combo {
        name: "dr/v4",
        index: 0,
        mode: mode::DR,
        vip: IpAddr::V4(Ipv4Addr::new(198, 18, 200, 1)),
    },
    Combo {
        name: "tunnel/v4",
        index: 1,
        mode: mode::TUNNEL,
        vip: IpAddr::V4(Ipv4Addr::new(198, 18, 200, 2)),
    },
    Combo {
        name: "dr/v6",
        index: 2,
        mode: mode::DR,
        vip: IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0x200, 0, 0, 0, 1)),
    },
    Combo {
        name: "tunnel/v6",
        index: 3,
        mode: mode::TUNNEL,
        vip: IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0x200, 0, 0, 0, 2)),
    },
];

impl Combo {
    fn tcp(&self) -> VipSpec {
        VipSpec {
            id: 2 * self.index as u32,
            addr: self.vip,
            port: TCP_PORT,
            proto: PROTO_TCP,
            mode: self.mode,
        }
    }
    fn udp(&self) -> VipSpec {
        VipSpec {
            id: 2 * self.index as u32 + 1,
            addr: self.vip,
            port: UDP_PORT,
            proto: PROTO_UDP,
            mode: self.mode,
        }
    }
    fn tcp_ports(&self) -> std::ops::Range<u16> {
        let base = TCP_BASE + self.index * TCP_STRIDE;
        base..base + TCP_CONNECTIONS
    }
    fn long_candidates(&self) -> std::ops::Range<u16> {
        let base = TCP_BASE + self.index * TCP_STRIDE + TCP_CONNECTIONS;
        base..base + CANDIDATES
    }
    fn churn_ports(&self) -> std::ops::Range<u16> {
        let base = TCP_BASE + self.index * TCP_STRIDE + TCP_CONNECTIONS + CANDIDATES;
        base..base + CHURN_MAX
    }
}

#[test]
fn dr_and_tunnel_balance_real_tcp_and_udp_over_ipv4_and_ipv6() -> anyhow::Result<()> {
    let started = Instant::now();
    let vips: Vec<IpAddr> = COMBOS.iter().map(|c| c.vip).collect();
    let mut net = LbNet::new("lbt-e2e", &vips)?;
    for c in &COMBOS {
        net.add_vip(c.tcp(), &EQUAL)?;
        net.add_vip(c.udp(), &EQUAL)?;
    }
    println!(
        "setup (5 namespaces, lb_xdp + 3 × lb_decap, servers, 8 VIPs): {:.2?}",
        started.elapsed()
    );
    let before = net.dp.counters()?;

    let mut failures = Vec::new();
    for c in &COMBOS {
        let t = Instant::now();
        match run_combo(&mut net, c) {
            Ok(f) => failures.extend(f.into_iter().map(|f| format!("{}: {f}", c.name))),
            Err(e) => failures.push(format!("{}: {e:#}", c.name)),
        }
        println!("[{}] done in {:.2?}", c.name, t.elapsed());
    }

    let total = net.settled_counters()?.since(&before);
    println!(
        "whole run: forwarded {} packets, redirect {}, tx {}, pass {}, drop {}, aborted {}",
        total.event(Event::Forwarded).packets,
        total.verdict(Verdict::Redirect).packets,
        total.verdict(Verdict::Tx).packets,
        total.verdict(Verdict::Pass).packets,
        total.verdict(Verdict::Drop).packets,
        total.verdict(Verdict::Aborted).packets,
    );
    println!(
        "the backends' TCP servers accepted {} connections",
        net.tcp_accepted()
    );
    check_no_drops("whole run", &total, &mut failures);
    let server_errors = net.stop_servers();
    check(&mut failures, server_errors.is_empty(), || {
        format!("server errors: {server_errors:?}")
    });
    println!("total: {:.2?}", started.elapsed());
    ensure!(
        failures.is_empty(),
        "{} check(s) failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    Ok(())
}

/// The first port of `candidates` whose flow the equal ring and the weighted ring send
/// to different backends.
fn moving_port(
    client: IpAddr,
    candidates: std::ops::Range<u16>,
    vip: SocketAddr,
    proto: u8,
    equal: &maglev::Table,
    weighted: &maglev::Table,
    seed: u32,
) -> anyhow::Result<(SocketAddr, usize, usize)> {
    candidates
        .map(|p| SocketAddr::new(client, p))
        .find_map(|src| {
            let key = flow_key(src, vip, proto);
            match (predict(equal, &key, seed), predict(weighted, &key, seed)) {
                (Some(a), Some(b)) if a != b => Some((src, a, b)),
                _ => None,
            }
        })
        .context("no candidate source port moves when the weights change")
}

/// Per flow (or per request of a long-lived flow): the host that answered, or what
/// went wrong.
type Answers = Vec<Result<usize, String>>;

fn run_combo(net: &mut LbNet, c: &Combo) -> anyhow::Result<Vec<String>> {
    let mut failures = Vec::new();
    let seed = net.cfg.hash_seed;
    let (tcp, udp) = (c.tcp(), c.udp());
    let client = client_addr(c.vip);
    let v6 = c.vip.is_ipv6();
    let equal = build_ring(v6, &EQUAL, seed)?;
    let weighted = build_ring(v6, &WEIGHTED, seed)?;
    ensure!(
        net.ring(tcp.id) == Some(&equal) && net.ring(udp.id) == Some(&equal),
        "VIP {} does not start on the equal-weight ring",
        c.vip
    );
    let (long_src, long_eq, long_w) = moving_port(
        client,
        c.long_candidates(),
        tcp.socket_addr(),
        PROTO_TCP,
        &equal,
        &weighted,
        seed,
    )?;
    let (sticky_src, sticky_eq, sticky_w) = moving_port(
        client,
        STICKY_BASE..STICKY_BASE + CANDIDATES,
        udp.socket_addr(),
        PROTO_UDP,
        &equal,
        &weighted,
        seed,
    )?;

    let counters_before = net.dp.counters()?;
    let backend_before: Vec<_> = (0..BACKENDS)
        .map(|i| net.dp.backend_counters(lbnet::backend_id(v6, i)))
        .collect::<Result<_, _>>()?;
    let decap_before = net.decap_counters()?;

    // The long-lived flows start under the equal ring; their first answers are in before
    // anything else happens.
    let (tcp_dst, udp_dst) = (tcp.socket_addr(), udp.socket_addr());
    let (mut long_conn, long_first, sticky, sticky_first) = net
        .client
        .enter(|| -> std::io::Result<_> {
            let mut conn = tcp_connect_from(long_src, tcp_dst, OP_TIMEOUT)?;
            let first = ask_tcp(&mut conn)?;
            let sock = udp_flow(sticky_src, udp_dst)?;
            let sticky_first = ask_udp(&sock, OP_TIMEOUT)?;
            Ok((conn, first, sock, sticky_first))
        })?
        .context("starting the long-lived TCP connection and UDP flow")?;
    let long_started = Instant::now();

    let done = AtomicBool::new(false);
    let (phases, long, sticky_answers) = std::thread::scope(|s| {
        let long = s.spawn(|| keep_asking(long_first, || ask_tcp(&mut long_conn), &done));
        let sticky = s.spawn(|| keep_asking(sticky_first, || ask_udp(&sticky, OP_TIMEOUT), &done));
        let phases = run_phases(net, c, client, long_started);
        // Always, also after a failed phase: the threads stop only when told.
        done.store(true, Ordering::SeqCst);
        let join = |h: std::thread::ScopedJoinHandle<'_, Answers>| {
            h.join()
                .unwrap_or_else(|_| vec![Err("the thread panicked".to_owned())])
        };
        (phases, join(long), join(sticky))
    });
    drop(long_conn);
    let phases = phases?;

    // (1) Every TCP connection succeeded, on the predicted backend.
    let mismatches = evaluate(
        "tcp",
        &phases.tcp,
        &phases.tcp_predicted,
        None,
        &mut failures,
    );
    println!(
        "[{}] {TCP_CONNECTIONS} TCP connections in {:.2?}: {} failed, {mismatches} not on the \
         predicted backend; shares {}",
        c.name,
        phases.tcp_time,
        phases.tcp.iter().filter(|a| a.is_err()).count(),
        fmt_shares(&shares(&phases.tcp)),
    );

    // (2) UDP shares, equal then weighted.
    let want_equal = weight_shares(&EQUAL);
    let want_weighted = weight_shares(&WEIGHTED);
    for (label, flows, predicted, want, time) in [
        (
            "udp 1:1:1",
            &phases.udp_equal,
            &phases.udp_equal_predicted,
            want_equal,
            phases.udp_equal_time,
        ),
        (
            "udp 1:2:3",
            &phases.udp_weighted,
            &phases.udp_weighted_predicted,
            want_weighted,
            phases.udp_weighted_time,
        ),
    ] {
        let mismatches = evaluate(label, &flows.answers, predicted, Some(want), &mut failures);
        println!(
            "[{}] {label}: {UDP_FLOWS} flows in {time:.2?} ({} retried, {} failed, \
             {mismatches} not on the predicted backend): shares {} (weight shares {})",
            c.name,
            flows.retried,
            flows.answers.iter().filter(|a| a.is_err()).count(),
            fmt_shares(&shares(&flows.answers)),
            fmt_shares(&want),
        );
    }

    // New connections after the weight change follow the new ring.
    let mismatches = evaluate(
        "tcp after the weight change",
        &phases.churn,
        &phases.churn_predicted,
        None,
        &mut failures,
    );
    check(&mut failures, !phases.churn.is_empty(), || {
        "no TCP connection was opened after the weight change".to_owned()
    });
    println!(
        "[{}] {} TCP connections after the weight change, alongside the long-lived flows: \
         {} failed, {mismatches} not on the new ring's backend; shares {}",
        c.name,
        phases.churn.len(),
        phases.churn.iter().filter(|a| a.is_err()).count(),
        fmt_shares(&shares(&phases.churn)),
    );

    // (3) and (4): the long-lived flows kept their backend through the weight change.
    for (label, answers, eq, w) in [
        ("long-lived TCP connection", &long, long_eq, long_w),
        ("UDP flow", &sticky_answers, sticky_eq, sticky_w),
    ] {
        let ok: Vec<usize> = answers.iter().flatten().copied().collect();
        let errors: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
        check(&mut failures, errors.is_empty(), || {
            format!("{label}: failed after {} answers: {errors:?}", ok.len())
        });
        check(&mut failures, ok.len() >= LONG_MIN_REQUESTS, || {
            format!("{label}: only {} answers", ok.len())
        });
        let same = lbnet::all_same(&ok);
        check(&mut failures, same == Some(eq), || {
            format!("{label}: expected be{eq} throughout, got {ok:?}")
        });
        println!(
            "[{}] {label}: {} answers, all from {} (ring: be{eq} before the weight change, \
             be{w} after)",
            c.name,
            ok.len(),
            same.map_or_else(|| format!("{ok:?}"), |i| format!("be{i}")),
        );
    }

    // Counters of this VIP's traffic.
    let delta = net.settled_counters()?.since(&counters_before);
    let forwarded = delta.event(Event::Forwarded).packets;
    let redirect = delta.verdict(Verdict::Redirect).packets;
    println!(
        "[{}] counters: forwarded {forwarded}, redirect {redirect}, tx {}, pass {}, \
         flow_new {}, flow_hit {}, syn_rehash {}, flow_stale {}, fib_no_neighbour {}",
        c.name,
        delta.verdict(Verdict::Tx).packets,
        delta.verdict(Verdict::Pass).packets,
        delta.event(Event::FlowNew).packets,
        delta.event(Event::FlowHit).packets,
        delta.event(Event::SynRehash).packets,
        delta.event(Event::FlowStale).packets,
        delta.event(Event::FibNoNeighbour).packets,
    );
    check_no_drops("counters", &delta, &mut failures);
    check(
        &mut failures,
        forwarded > 0 && redirect == forwarded,
        || format!("forwarded {forwarded} packets but redirected {redirect}"),
    );
    // Per-backend new-flow counters agree with what the clients saw: one new flow per
    // answered flow (a SYN retransmitted after the load balancer is re-hashed and
    // counted again, so up to `syn_rehash` more).
    let mut seen = [0u64; BACKENDS];
    let all = [
        &phases.tcp,
        &phases.churn,
        &phases.udp_equal.answers,
        &phases.udp_weighted.answers,
    ];
    for &i in all.into_iter().flatten().flatten() {
        seen[i] += 1;
    }
    seen[long_eq] += 1;
    seen[sticky_eq] += 1;
    let rehashed = delta.event(Event::SynRehash).packets;
    let mut new_flows = [0u64; BACKENDS];
    for (i, b) in backend_before.iter().enumerate() {
        let now = net.dp.backend_counters(lbnet::backend_id(v6, i))?;
        new_flows[i] = now.new_flows - b.new_flows;
    }
    check(
        &mut failures,
        (0..BACKENDS).all(|i| new_flows[i] >= seen[i] && new_flows[i] <= seen[i] + rehashed),
        || format!("per-backend new flows {new_flows:?}, but the clients saw {seen:?}"),
    );
    println!(
        "[{}] new flows per backend: data plane {new_flows:?}, seen by the clients {seen:?}",
        c.name
    );

    // lb_decap: tunnel VIPs are decapsulated on every backend, dr VIPs never.
    let decap = net.decap_counters()?;
    let mut decapsulated = Vec::new();
    for (i, (now, was)) in decap.iter().zip(&decap_before).enumerate() {
        let d = |e: DecapEvent| now[e as usize].packets - was[e as usize].packets;
        decapsulated.push(d(DecapEvent::Decapsulated));
        check(&mut failures, d(DecapEvent::Malformed) == 0, || {
            format!(
                "be{i}: lb_decap dropped {} malformed",
                d(DecapEvent::Malformed)
            )
        });
    }
    println!(
        "[{}] lb_decap decapsulated per backend: {decapsulated:?}",
        c.name
    );
    if c.mode == mode::TUNNEL {
        check(&mut failures, decapsulated.iter().all(|&n| n > 0), || {
            format!("a backend decapsulated nothing: {decapsulated:?}")
        });
    } else {
        check(&mut failures, decapsulated.iter().all(|&n| n == 0), || {
            format!("dr traffic was decapsulated: {decapsulated:?}")
        });
    }
    Ok(failures)
}

struct Phases {
    tcp: Answers,
    tcp_predicted: Vec<Option<usize>>,
    tcp_time: Duration,
    udp_equal: lbnet::UdpFlows,
    udp_equal_predicted: Vec<Option<usize>>,
    udp_equal_time: Duration,
    udp_weighted: lbnet::UdpFlows,
    udp_weighted_predicted: Vec<Option<usize>>,
    udp_weighted_time: Duration,
    churn: Answers,
    churn_predicted: Vec<Option<usize>>,
}

/// The bulk traffic of one VIP: TCP connections and equal-weight UDP flows, the weight
/// change of both rings, weighted UDP flows, then new TCP connections until the
/// long-lived flows (started at `long_started`) have run their minimum time.
fn run_phases(
    net: &mut LbNet,
    c: &Combo,
    client: IpAddr,
    long_started: Instant,
) -> anyhow::Result<Phases> {
    let (tcp, udp) = (c.tcp(), c.udp());
    let (tcp_dst, udp_dst) = (tcp.socket_addr(), udp.socket_addr());

    let ports: Vec<u16> = c.tcp_ports().collect();
    let predicted_for = |net: &LbNet, id: u32, ports: &[u16], dst: SocketAddr, proto: u8| {
        ports
            .iter()
            .map(|&p| net.expected(id, &flow_key(SocketAddr::new(client, p), dst, proto)))
            .collect::<Vec<_>>()
    };
    let tcp_predicted = predicted_for(net, tcp.id, &ports, tcp_dst, PROTO_TCP);
    let t = Instant::now();
    let tcp_answers = net.client.enter(|| {
        let deadline = Instant::now() + PHASE_LIMIT;
        let mut failed = 0;
        ports
            .iter()
            .map(|&p| {
                if Instant::now() >= deadline {
                    return Err("phase deadline passed".to_owned());
                }
                if failed >= MAX_TCP_FAILURES {
                    return Err(format!("not tried after {failed} failures"));
                }
                let answer = one_request(SocketAddr::new(client, p), tcp_dst);
                failed += usize::from(answer.is_err());
                answer
            })
            .collect::<Answers>()
    })?;
    let tcp_time = t.elapsed();

    let equal_ports: Vec<u16> = (UDP_EQUAL_BASE..UDP_EQUAL_BASE + UDP_FLOWS).collect();
    let udp_equal_predicted = predicted_for(net, udp.id, &equal_ports, udp_dst, PROTO_UDP);
    let t = Instant::now();
    let udp_equal = net.client.enter(|| {
        udp_flows(
            client,
            &equal_ports,
            udp_dst,
            UDP_BATCH,
            UDP_TIMEOUT,
            Instant::now() + PHASE_LIMIT,
        )
    })?;
    let udp_equal_time = t.elapsed();

    // What the agent does when weights change: rebuild, swap the rings in.
    net.set_weights(tcp.id, &WEIGHTED)?;
    net.set_weights(udp.id, &WEIGHTED)?;

    let weighted_ports: Vec<u16> = (UDP_WEIGHTED_BASE..UDP_WEIGHTED_BASE + UDP_FLOWS).collect();
    let udp_weighted_predicted = predicted_for(net, udp.id, &weighted_ports, udp_dst, PROTO_UDP);
    let t = Instant::now();
    let udp_weighted = net.client.enter(|| {
        udp_flows(
            client,
            &weighted_ports,
            udp_dst,
            UDP_BATCH,
            UDP_TIMEOUT,
            Instant::now() + PHASE_LIMIT,
        )
    })?;
    let udp_weighted_time = t.elapsed();

    let until = long_started + LONG_MIN_TIME;
    let churn = net.client.enter(|| {
        let mut out = Answers::new();
        for p in c.churn_ports() {
            if Instant::now() >= until {
                break;
            }
            out.push(one_request(SocketAddr::new(client, p), tcp_dst));
            std::thread::sleep(CHURN_PAUSE);
        }
        out
    })?;
    let churn_ports: Vec<u16> = c.churn_ports().take(churn.len()).collect();
    let churn_predicted = predicted_for(net, tcp.id, &churn_ports, tcp_dst, PROTO_TCP);

    Ok(Phases {
        tcp: tcp_answers,
        tcp_predicted,
        tcp_time,
        udp_equal,
        udp_equal_predicted,
        udp_equal_time,
        udp_weighted,
        udp_weighted_predicted,
        udp_weighted_time,
        churn,
        churn_predicted,
    })
}

/// A TCP connection from `src`: one request, its answer, close.
fn one_request(src: SocketAddr, dst: SocketAddr) -> Result<usize, String> {
    tcp_connect_from(src, dst, OP_TIMEOUT)
        .and_then(|mut conn| ask_tcp(&mut conn))
        .map_err(|e| format!("from {src}: {e}"))
}

/// Asks `ask` every [`LONG_INTERVAL`] (after the `first` answer) until at least
/// [`LONG_MIN_REQUESTS`] answers over [`LONG_MIN_TIME`] are in and `done` is set, or the
/// first error, or [`LONG_MAX_TIME`].
fn keep_asking(
    first: usize,
    mut ask: impl FnMut() -> std::io::Result<usize>,
    done: &AtomicBool,
) -> Answers {
    let start = Instant::now();
    let mut out = vec![Ok(first)];
    loop {
        let enough = out.len() >= LONG_MIN_REQUESTS && start.elapsed() >= LONG_MIN_TIME;
        if (enough && done.load(Ordering::SeqCst)) || start.elapsed() >= LONG_MAX_TIME {
            return out;
        }
        std::thread::sleep(LONG_INTERVAL);
        match ask() {
            Ok(i) => out.push(Ok(i)),
            Err(e) => {
                out.push(Err(e.to_string()));
                return out;
            }
        }
    }
}

/// Checks a phase's flows: none failed, each on its predicted backend, and (if `want` is
/// given) every share within [`TOLERANCE`] of `want`. Returns the number of flows on
/// another backend than predicted.
fn evaluate(
    label: &str,
    answers: &[Result<usize, String>],
    predicted: &[Option<usize>],
    want: Option<[f64; BACKENDS]>,
    failures: &mut Vec<String>,
) -> usize {
    let errors: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    check(failures, errors.is_empty(), || {
        format!(
            "{label}: {} of {} flows failed, e.g. {:?}",
            errors.len(),
            answers.len(),
            &errors[..errors.len().min(5)]
        )
    });
    let wrong: Vec<(usize, usize, Option<usize>)> = answers
        .iter()
        .zip(predicted)
        .enumerate()
        .filter_map(|(n, (a, p))| match a {
            Ok(got) if Some(*got) != *p => Some((n, *got, *p)),
            _ => None,
        })
        .collect();
    check(failures, wrong.is_empty(), || {
        format!(
            "{label}: {} flows not on the ring's backend, e.g. (flow, got, predicted) {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        )
    });
    if let Some(want) = want {
        let got = shares(answers);
        let ok = got
            .iter()
            .zip(&want)
            .all(|(g, w)| (g - w).abs() <= TOLERANCE);
        check(failures, ok, || {
            format!(
                "{label}: shares {} are not within {:.0} points of {}",
                fmt_shares(&got),
                TOLERANCE * 100.0,
                fmt_shares(&want)
            )
        });
    }
    wrong.len()
}

fn check_no_drops(label: &str, c: &lb_agent::dataplane::Counters, failures: &mut Vec<String>) {
    for r in DropReason::ALL {
        let n = c.drop(r).packets;
        check(failures, n == 0, || {
            format!("{label}: {n} packets dropped as {}", r.name())
        });
    }
    for v in [Verdict::Aborted, Verdict::Drop] {
        let n = c.verdict(v).packets;
        check(failures, n == 0, || {
            format!("{label}: {n} {} verdicts", v.name())
        });
    }
}

fn weight_shares(weights: &[u32; BACKENDS]) -> [f64; BACKENDS] {
    let total: u32 = weights.iter().sum();
    weights.map(|w| w as f64 / total as f64)
}

fn fmt_shares(s: &[f64; BACKENDS]) -> String {
    let parts: Vec<String> = s
        .iter()
        .enumerate()
        .map(|(i, x)| format!("be{i} {:.1}%", x * 100.0))
        .collect();
    parts.join(" / ")
}
