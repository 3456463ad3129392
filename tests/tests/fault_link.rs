//! Fault matrix, the ingress link: taken down and up, and deleted and recreated (the
//! XDP link goes with the interface; the agent must notice and attach again), each
//! under client load through the VIP.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::ensure;
use lb_agent::admin::protocol::Command;
use lb_tests::{
    agentnet::VIP,
    faults::{time_to_serve, under_load, FaultNet, NEW_EVERY},
    workload::http_get,
};

/// The ingress link down for two seconds, then up: the XDP program stays attached, the
/// long-lived connections ride it out on TCP retransmits, and new connections fail only
/// while the link is down.
#[test]
fn ingress_link_down_and_up() -> anyhow::Result<()> {
    let f = FaultNet::start("lbt-flink", "", &[])?;
    let (report, recovered) = under_load(
        &f.net,
        "ingress link down 2 s, up",
        Duration::from_secs(1),
        Duration::from_secs(3),
        || {
            f.net.lb.ip(&["link", "set", "l0", "down"])?;
            std::thread::sleep(Duration::from_secs(2));
            f.net.lb.ip(&["link", "set", "l0", "up"])?;
            ensure!(
                f.net.attached()?,
                "XDP program gone after the link came back"
            );
            time_to_serve(&f.net, Duration::from_secs(10))
        },
    )?;
    println!(
        "  a new connection answered {} ms after the link came up; long-lived connections waited at most {} ms (TCP retransmits)",
        recovered.as_millis(),
        report.long.longest_gap.as_millis()
    );
    ensure!(
        report.lost() == 0,
        "long-lived connections lost: {:?}",
        report.long.broken
    );
    Ok(())
}

/// The ingress interface deleted (its veth peer, the client's c0, goes with it) and,
/// two seconds later, made again as the topology made it. The XDP link goes with the
/// interface; the agent must notice within a second or two, withdraw its VIPs, attach
/// afresh once l0 is back (a new link pinned at the same path, the same maps) and
/// announce again. The figures: the time from the deletion to the agent noticing, from
/// the recreation to the re-attach line and to the first new connection that succeeds.
///
/// What is lost: new connections fail while there is no c0 (the client has no route to
/// the VIP) and until the program runs on the new l0; that is bounded below. The
/// long-lived connections keep their flow-table entries (the same pinned map), so none
/// may move to another backend; they ride out the gap on TCP retransmits when the gap
/// is shorter than their 10 s request timeout, which the figures report.
#[test]
fn ingress_deleted_and_recreated() -> anyhow::Result<()> {
    let f = FaultNet::start("lbt-fa1", "", &[])?;
    let maps_before = f.net.pinned_map_ids()?;
    let (link_before, program_before) = f.net.xdp_link()?;
    let (report, t) = under_load(
        &f.net,
        "ingress deleted 2 s, recreated",
        Duration::from_secs(1),
        Duration::from_secs(4),
        || {
            let deleted = Instant::now();
            f.net.lb.ip(&["link", "del", "l0"])?;
            let (line, noticed) =
                f.wait_log("no longer runs on the interface", Duration::from_secs(5))?;
            ensure!(line.contains("WARN"), "not a warning: {line}");
            let detached = f.ctl(Command::Status)?;
            ensure!(
                detached["attachment"]["state"] == "detached",
                "status while l0 is gone: {}",
                detached["attachment"]
            );
            ensure!(
                detached["announce"]["routes"]
                    .as_array()
                    .is_some_and(|r| r.iter().all(|r| r["state"] == "withdrawn")),
                "VIPs still announced while l0 is gone: {}",
                detached["announce"]
            );
            std::thread::sleep(Duration::from_secs(2).saturating_sub(deleted.elapsed()));
            let recreated = Instant::now();
            f.net.recreate_ingress()?;
            let (line, reattached) =
                f.wait_log("XDP program re-attached", Duration::from_secs(10))?;
            println!("agent: {line}");
            let first_ok = first_success(&f, Duration::from_secs(10))?;
            Ok(Times {
                noticed: noticed - deleted,
                reattach: reattached - recreated,
                first_ok: first_ok - recreated,
                outage: first_ok - deleted,
            })
        },
    )?;
    let moved: Vec<&String> = report
        .long
        .broken
        .iter()
        .filter(|b| b.contains("moved"))
        .collect();
    println!(
        "FAULT ingress deleted 2 s, recreated: deletion noticed after {} ms; re-attached {} ms after the recreation, first new connection {} ms after it (outage {} ms); long-lived {} broken, {} moved: {:?}",
        t.noticed.as_millis(),
        t.reattach.as_millis(),
        t.first_ok.as_millis(),
        t.outage.as_millis(),
        report.lost(),
        moved.len(),
        report.long.broken
    );
    ensure!(
        t.noticed < Duration::from_secs(3),
        "noticed only after {:?}",
        t.noticed
    );
    ensure!(
        t.reattach < Duration::from_secs(5),
        "re-attached only after {:?}",
        t.reattach
    );
    ensure!(moved.is_empty(), "connections moved: {moved:?}");
    // New connections fail during the outage only: at most one per probe interval of it
    // (each failure takes at least that long), plus one in flight at either end.
    let bound = (t.outage.as_secs_f64() / NEW_EVERY.as_secs_f64()).ceil() as usize + 2;
    ensure!(
        report.failed() <= bound,
        "{} new connections failed, more than the outage explains ({bound})",
        report.failed()
    );
    ensure!(
        f.net.pinned_map_ids()? == maps_before,
        "the maps changed: the flow table was not kept"
    );
    let (link_after, program_after) = f.net.xdp_link()?;
    ensure!(
        link_after != link_before && program_after == program_before,
        "expected a new link (was {link_before}, now {link_after}) running the same program (was {program_before}, now {program_after})"
    );
    let status = f.ctl(Command::Status)?;
    ensure!(
        status["attachment"]["state"] == "attached"
            && status["attachment"]["reattached"] == 1
            && status["attachment"]["link_id"] == link_after,
        "status after re-attaching: {}",
        status["attachment"]
    );
    f.wait_steady(Duration::from_secs(10))?;
    Ok(())
}

/// What [`ingress_deleted_and_recreated`] measured.
struct Times {
    noticed: Duration,
    reattach: Duration,
    first_ok: Duration,
    outage: Duration,
}

/// When the first of new connections, tried every 20 ms from the client, succeeds.
fn first_success(f: &FaultNet, within: Duration) -> anyhow::Result<Instant> {
    let to = SocketAddr::new(VIP.into(), 80);
    let deadline = Instant::now() + within;
    f.net.client.enter(|| loop {
        if http_get(to, Duration::from_millis(500)).is_ok() {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            anyhow::bail!("no new connection succeeded within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    })?
}
