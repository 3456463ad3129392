//! Fault matrix, the ingress link: taken down and up, and deleted and recreated (the
//! XDP link goes with the interface; the agent must notice and attach again), each
//! under client load through the VIP.

use std::time::Duration;

use anyhow::ensure;
use lb_tests::faults::{time_to_serve, under_load, FaultNet};

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
