//! `cargo xtask demo --fleet`: three lb hosts behind an ECMP router, announced over BGP.
//!
//! Builds `lb_tests::fleet`'s topology: a client, a router running BIRD 2
//! (examples/bird-router.conf) that installs one multipath route per VIP, three lb hosts
//! each running the real `lb-agent` and BIRD 2 (examples/bird-host.conf), and three
//! backends. Then it shows the router's three paths with the route tag each host
//! announces, 600 HTTP requests spread over the hosts and the backends, one host's
//! uplink pulled while 300 long-lived connections and new requests keep going (none may
//! fail), the host coming back, and another host taken out gracefully (`ctl withdraw`,
//! then `ctl down`). Tears everything down at the end (with `--keep`, after Enter is
//! pressed); exits non-zero if any request failed.

use std::{net::IpAddr, process::ExitCode, time::Duration};

use anyhow::ensure;
use lb_tests::fleet::{host_of, Fleet, HOSTS, VIP4, VIP6, VIPS};

const REQUESTS: usize = 600;
const LONG_LIVED: usize = 300;
const EVERY: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    let keep = std::env::args().any(|a| a == "--keep");
    match demo(keep) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb fleet demo FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn step(what: &str) {
    println!("\n==> {what}");
}

fn pcts(v: &[f64]) -> String {
    v.iter()
        .map(|p| format!("{p:.0}%"))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn demo(keep: bool) -> anyhow::Result<()> {
    step("building the fleet: client, router (BIRD 2, ECMP), 3 lb hosts (lb-agent + BIRD 2), 3 backends");
    let mut fleet = Fleet::new("lbfleet")?;
    let mut failed = 0;

    step("the router's paths: one per lb host, each carrying its host's route tag");
    for vip in VIPS {
        println!("  {vip}:");
        for p in fleet.router_paths(vip)? {
            let host = host_of(p.next_hop).map_or_else(|| "?".into(), |h| format!("h{h}"));
            println!(
                "    via {} ({host}), AS path {:?}, route tag {}",
                p.next_hop,
                p.as_path,
                p.route_tag().map_or_else(|| "-".into(), |t| t.to_string())
            );
        }
    }
    for i in 0..HOSTS {
        let (fp, tag) = fleet.fingerprint(i)?;
        println!("  h{i}: lb-agent ctl status: fingerprint {fp}, route tag {tag}");
    }

    for vip in [IpAddr::V4(VIP4), IpAddr::V6(VIP6)] {
        step(&format!(
            "{REQUESTS} HTTP requests to {vip}, each on a new connection"
        ));
        let s = fleet.spread(vip, REQUESTS)?;
        println!(
            "  {} answered, {} failed, in {:.1} s",
            REQUESTS - s.failed.len(),
            s.failed.len(),
            s.elapsed.as_secs_f64()
        );
        println!("  lb hosts h0 / h1 / h2:     {}", pcts(&s.host_pct()));
        println!(
            "  backends be0 / be1 / be2:  {} (weights {})",
            pcts(&s.backend_pct()),
            pcts(&lb_tests::fleet::Spread::weight_pct())
        );
        failed += s.failed.len();
    }

    step(&format!(
        "{LONG_LIVED} long-lived connections to {VIP4}, each asking its backend every {} ms",
        EVERY.as_millis()
    ));
    let v4 = IpAddr::V4(VIP4);
    let workload = fleet.long_lived(v4, LONG_LIVED, EVERY)?;
    let probe = fleet.prober(v4, Duration::from_millis(50));
    std::thread::sleep(Duration::from_secs(1));

    step("pulling h0's uplink (a hard failure: BFD tells the router)");
    let failure = fleet.hard_failure(0, &workload, Duration::from_secs(3))?;
    let c = &failure.connections;
    println!(
        "  the router dropped h0 after {} ms; {} connections moved to h1 and h2, {} broke; longest pause {} ms",
        failure.detection.as_millis(),
        failure.moved,
        c.broken.len(),
        c.longest_gap.as_millis()
    );
    println!(
        "  router paths for {VIP4} now: {:?}",
        fleet.router_hosts(v4)?
    );

    step("plugging h0 back in");
    let back = fleet.host_return(0, &[&workload], Duration::from_secs(3))?;
    println!(
        "  the router uses h0 again after {} ms (it announces again once its targets have been healthy for a check interval); {} connections moved back onto it, {} broke",
        back.convergence.as_millis(),
        back.moved,
        back.moved_broken
    );

    step("taking h1 out gracefully: lb-agent ctl withdraw (the router moves its flows to h0 and h2 while h1 keeps forwarding), then ctl down");
    let withdrawn = fleet.ctl(1, &["withdraw"])?;
    println!("  {}", withdrawn.trim().replace('\n', "\n  "));
    fleet.wait_router_hosts(v4, &[0, 2], Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_secs(1));
    println!("  router paths for {VIP4}: {:?}", fleet.router_hosts(v4)?);
    // Nothing is announced any more, so `down` needs no grace period and detaches at once.
    let down = fleet.ctl(1, &["down"])?;
    println!("  {}", down.trim().replace('\n', "\n  "));
    let status = fleet.wait_agent_exit(1, Duration::from_secs(10))?;
    println!(
        "  h1's agent exited ({status}); XDP attached on h1: {}",
        fleet.xdp_attached(1)?
    );

    let probes = probe.stop();
    let total = workload.stop();
    println!(
        "\n==> summary: long-lived connections {} of {} intact ({} requests); new connections during all this: {} of {} failed",
        total.intact,
        total.connections,
        total.replies,
        probes.failed.len(),
        probes.attempts
    );
    failed += total.broken.len() + probes.failed.len();
    if keep {
        println!(
            "\n--keep: the fleet is up (namespaces {p}-*). Try, in another terminal:\n  \
             birdc -s {dir}/router.ctl show route all\n  \
             ip -n {p}-router route show {VIP4}\n  \
             lb-agent ctl --socket {sock} status\n\
             Press Enter to tear it down.",
            p = fleet.topo.prefix(),
            dir = fleet.dir().display(),
            sock = fleet.admin_socket(0)?.display(),
        );
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
    }
    step("tearing down");
    drop(fleet);
    ensure!(failed == 0, "{failed} requests or connections failed");
    println!("lb fleet demo: ok, no request failed");
    Ok(())
}
