//! Fault matrix, a SYN flood: spoofed SYNs from 65,536 sources at the VIP, about 300,000
//! sent from both CPUs within a few seconds, fill a small flow table (4,096 entries)
//! while established connections go on and new ones arrive. Three floods: with the flood
//! guard (`max_new_flows_per_cpu`) on a table with room, without the guard on the table
//! the first left full, and with the guard again on a full table.
//!
//! What is measured: the load's failed requests and lost connections (none allowed), and
//! which flow-table entries survive: those of 20 connections that keep talking, and of
//! 20 that stay silent during the flood. A connection whose entry was evicted still
//! reaches its backend while the rings stay as they are (the ring gives the same backend
//! again; the idle connections check that after each flood); an evicted entry costs the
//! connection only if the ring changes before it ends.
//!
//! What it showed (docs/dataplane.md): the kernel's LRU keeps the entries of connections
//! in use in every case, guard or not; the guard bounds the inserts (and their cost) but
//! is not what keeps entries: idle connections' entries were evicted by the guarded
//! flood on a table with room and kept by both floods on a full one.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _};
use lb_agent::admin::protocol::{Command, Proto};
use lb_tests::{
    agentnet::{LineConn, CLIENT, LINE_PORT, VIP},
    faults::{config_text, FaultNet, Load},
    netns::Ns,
};
use serde_json::Value;

/// The flow table's capacity in this test (the smallest the agent accepts is 1,024).
const TABLE: u32 = 4096;
/// The flood guard's limit in the guarded phase.
const GUARD: u32 = 1000;
/// SYNs per flooding thread (one per CPU), at most; each thread stops after [`FLOOD_FOR`].
const FLOOD_PER_THREAD: u32 = 150_000;
const FLOOD_FOR: Duration = Duration::from_secs(6);

fn config(guard: u32) -> anyhow::Result<String> {
    let text = config_text()?;
    let text = text
        .replace(
            "flow_table_entries = 1048576",
            &format!("flow_table_entries = {TABLE}"),
        )
        .replace(
            "max_new_flows_per_cpu = 125000",
            &format!("max_new_flows_per_cpu = {guard}"),
        );
    ensure!(
        text.contains(&format!("flow_table_entries = {TABLE}"))
            && text.contains(&format!("max_new_flows_per_cpu = {guard}")),
        "the example's [agent] settings changed; update this test"
    );
    Ok(text)
}

/// What one flooding phase did.
#[derive(Debug)]
struct FloodFigures {
    sent: u64,
    elapsed: Duration,
    flow_new: u64,
    throttled: u64,
    /// Flow-table entries counted per backend right after the flood.
    entries_after: u64,
    /// Long-lived connections whose entry was still in the table after the flood.
    entries_kept: usize,
    connections: usize,
    /// Idle connections (silent during the flood) whose entry was still there.
    idle_kept: usize,
    idle: usize,
}

/// Connections opened before the flood that send nothing during it.
const IDLE: usize = 20;

/// Sends spoofed SYNs to the VIP on c0 from a thread pinned to each CPU, until each sent
/// [`FLOOD_PER_THREAD`] or [`FLOOD_FOR`] passed. Returns the frames sent.
fn flood(client: &Ns, src_mac: [u8; 6], dst_mac: [u8; 6], ifindex: u32) -> anyhow::Result<u64> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads: Vec<_> = (0..cpus)
        .map(|cpu| {
            let client = client.clone();
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let mut set = nix::sched::CpuSet::new();
                set.set(cpu)?;
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
                client.enter(|| send_syns(cpu as u32, src_mac, dst_mac, ifindex))?
            })
        })
        .collect();
    let mut sent = 0;
    for t in threads {
        sent += t
            .join()
            .map_err(|_| anyhow::anyhow!("a flooding thread panicked"))??;
    }
    Ok(sent)
}

fn send_syns(seed: u32, src_mac: [u8; 6], dst_mac: [u8; 6], ifindex: u32) -> anyhow::Result<u64> {
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    ensure!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is a new descriptor nothing else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: addr is a valid sockaddr_ll of the size given.
    let bound = unsafe {
        libc::bind(
            raw,
            std::ptr::from_ref(&addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    ensure!(bound == 0, "bind: {}", std::io::Error::last_os_error());
    let deadline = Instant::now() + FLOOD_FOR;
    let mut frame = Vec::with_capacity(64);
    let mut sent = 0u64;
    for i in 0..FLOOD_PER_THREAD {
        if i % 1024 == 0 && Instant::now() > deadline {
            break;
        }
        // 65,536 sources in 198.19.0.0/16, split between the threads; a port each.
        let n = i.wrapping_mul(2).wrapping_add(seed);
        let src = Ipv4Addr::new(198, 19, (n >> 8) as u8, n as u8);
        let sport = 1024 + (n >> 16) as u16 * 7 + (n % 50_000) as u16;
        frame.clear();
        etherparse::PacketBuilder::ethernet2(src_mac, dst_mac)
            .ipv4(src.octets(), VIP.octets(), 64)
            .tcp(sport, 80, n, 64_240)
            .syn()
            .write(&mut frame, &[])?;
        // SAFETY: frame is a valid buffer of its length.
        let r = unsafe { libc::send(raw, frame.as_ptr().cast(), frame.len(), 0) };
        if r > 0 {
            sent += 1;
        } else {
            // A full transmit queue: let it drain.
            std::thread::yield_now();
        }
    }
    Ok(sent)
}

fn event(stats: &Value, name: &str) -> u64 {
    stats["events"][name]["packets"].as_u64().unwrap_or(0)
}

/// Floods under load and returns the figures; `name` labels the load's report.
fn phase(f: &FaultNet, name: &str) -> anyhow::Result<FloodFigures> {
    let (src_mac, dst_mac) = (f.net.client.mac("c0")?, f.net.lb.mac("l0")?);
    let ifindex = f.net.client.ifindex("c0")?;
    let mut idle = f
        .net
        .client
        .enter(|| -> anyhow::Result<Vec<(LineConn, usize, u16)>> {
            (0..IDLE)
                .map(|_| {
                    let mut c = LineConn::open()?;
                    let backend = c.ask()?;
                    let sport = c.local_port()?;
                    Ok((c, backend, sport))
                })
                .collect()
        })??;
    let load = Load::start(&f.net)?;
    std::thread::sleep(Duration::from_millis(500));
    let flows = load.flows();
    let stats_before = f.ctl(Command::Stats)?;
    let started = Instant::now();
    let sent = flood(&f.net.client, src_mac, dst_mac, ifindex);
    let elapsed = started.elapsed();
    // What the table holds right after the flood, before entries age or the load ends.
    let stats_after = f.ctl(Command::Stats)?;
    let in_table = |sport: u16| {
        f.ctl(Command::Flow {
            proto: Proto::Tcp,
            src: IpAddr::V4(CLIENT),
            sport,
            dst: IpAddr::V4(VIP),
            dport: LINE_PORT,
        })
        .is_ok_and(|a| a["source"] == "flow table")
    };
    let kept = flows.iter().filter(|(sport, _)| in_table(*sport)).count();
    let idle_kept = idle.iter().filter(|(_, _, sport)| in_table(*sport)).count();
    // Evicted or not, an idle connection still reaches its backend (the rings did not
    // change): the entry is what would keep it there if they did.
    for (c, backend, sport) in &mut idle {
        let now = c
            .ask()
            .with_context(|| format!("idle connection {sport} after the flood"))?;
        ensure!(
            now == *backend,
            "idle connection {sport} moved from be{backend} to be{now}"
        );
    }
    let backends = f.ctl(Command::BackendList { group: None })?;
    let entries_after = backends
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["flows"].as_u64())
        .sum();
    std::thread::sleep(Duration::from_secs(1));
    let report = load.finish(name);
    let figures = FloodFigures {
        sent: sent?,
        elapsed,
        flow_new: event(&stats_after, "flow_new") - event(&stats_before, "flow_new"),
        throttled: event(&stats_after, "flow_throttled") - event(&stats_before, "flow_throttled"),
        entries_after,
        entries_kept: kept,
        connections: flows.len(),
        idle_kept,
        idle: idle.len(),
    };
    println!(
        "  {} SYNs in {} ms ({:.0} kpps): {} entries made, {} throttled; table {} of {TABLE} after; entries kept: active connections {} of {}, idle {} of {}",
        figures.sent,
        figures.elapsed.as_millis(),
        figures.sent as f64 / figures.elapsed.as_secs_f64() / 1000.0,
        figures.flow_new,
        figures.throttled,
        figures.entries_after,
        figures.entries_kept,
        figures.connections,
        figures.idle_kept,
        figures.idle
    );
    report.assert_nothing_lost()?;
    Ok(figures)
}

#[test]
fn syn_flood_fills_the_flow_table() -> anyhow::Result<()> {
    let f = FaultNet::start_with("lbt-fflood", &config(GUARD)?, &[])?;
    let guarded = phase(
        &f,
        &format!("SYN flood, flood guard {GUARD}/s per CPU, table {TABLE}"),
    )?;
    ensure!(
        guarded.throttled > 0,
        "the flood never reached the guard: {guarded:?}"
    );
    ensure!(
        guarded.sent > u64::from(TABLE) * 4,
        "the flood was too small to fill the table: {guarded:?}"
    );

    // The same flood with the guard off, then on again, each on the table the last
    // flood left full.
    let unguarded = reapply_and_flood(
        &f,
        0,
        &format!("SYN flood, no flood guard, table {TABLE} full"),
    )?;
    ensure!(
        unguarded.throttled == 0,
        "the guard was still on: {unguarded:?}"
    );
    let again = reapply_and_flood(
        &f,
        GUARD,
        &format!("SYN flood, flood guard {GUARD}/s per CPU, table {TABLE} full"),
    )?;
    println!(
        "  entries kept (active, idle, of {} each): guard on an empty table {}, {}; no guard on a full table {}, {}; guard on a full table {}, {}",
        guarded.connections,
        guarded.entries_kept, guarded.idle_kept,
        unguarded.entries_kept, unguarded.idle_kept,
        again.entries_kept, again.idle_kept,
    );
    // The kernel's LRU keeps entries that are being used, whatever the flood: the
    // established connections that keep talking keep their entries in every phase.
    for p in [&guarded, &unguarded, &again] {
        ensure!(
            p.entries_kept == p.connections,
            "the flood evicted entries of active connections: {p:?}"
        );
    }
    Ok(())
}

/// Applies the test's configuration with flood guard `guard`, then floods.
fn reapply_and_flood(f: &FaultNet, guard: u32, name: &str) -> anyhow::Result<FloodFigures> {
    let path = std::env::temp_dir().join(format!("lbt-fflood-{guard}-{}.toml", std::process::id()));
    std::fs::write(&path, config(guard)?)?;
    let applied = f.ctl(Command::Apply {
        path: path.display().to_string(),
        dry_run: false,
    });
    let _ = std::fs::remove_file(&path);
    applied.with_context(|| format!("applying max_new_flows_per_cpu = {guard}"))?;
    phase(f, name)
}
