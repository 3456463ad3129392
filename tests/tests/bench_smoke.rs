//! Smoke test of the end-to-end rate benchmark's harness (`lb_tests::bench::e2e_rate`):
//! every system runs for about half a second and must deliver packets of the kind it
//! should (plain UDP to the VIP for DR and the forwarder, IPIP for tunnel mode, UDP
//! NATed to the backend for nftables) and nothing of another kind; lb and nftables must
//! spread them over all three backends; nftables' DNAT rule must see only about one
//! packet per flow (conntrack NATs the rest). No speed is asserted: this checks that the
//! benchmark measures what it claims to, not how fast this machine is.
//!
//! Needs root and the benchmark object (`LB_BENCH_OBJECT`, set by `cargo xtask test`).

use std::time::Duration;

use lb_tests::bench::e2e_rate::{run_systems, Settings, System, FLOWS, SINKS};

#[test]
fn every_system_delivers_and_lb_reaches_every_backend() -> anyhow::Result<()> {
    let settings = Settings {
        prefix: "lbt-e2esmoke".into(),
        warmup: Duration::from_millis(300),
        window: Duration::from_millis(500),
        threads: None,
        rounds: 1,
    };
    let runs = run_systems(&settings, &System::ALL, &|line| eprintln!("{line}"))?;
    let mut failures = Vec::new();
    for run in &runs {
        let name = run.system.name();
        if run.generated == 0 {
            failures.push(format!("{name}: the generator sent nothing"));
        }
        if run.delivered == 0 {
            failures.push(format!(
                "{name}: no {:?} packet was counted ({} generated)",
                run.system.expects(),
                run.generated
            ));
        }
        if run.unexpected > 0 {
            failures.push(format!(
                "{name}: {} packets of another kind than {:?} reached the sinks",
                run.unexpected,
                run.system.expects()
            ));
        }
        if run.system.spreads() && run.per_sink.contains(&0) {
            failures.push(format!(
                "{name}: not every one of the {SINKS} backends got packets: {:?}",
                run.per_sink
            ));
        }
        match (run.system, run.nat_new_flows) {
            (System::NftDnat, None) => failures.push(format!("{name}: no DNAT rule counter")),
            // Conntrack binds each flow once; concurrent first packets on two CPUs may
            // each reach the rule, so allow some slack, but far fewer than delivered.
            (System::NftDnat, Some(n)) if n == 0 || n > 2 * u64::from(FLOWS) => {
                failures.push(format!(
                    "{name}: the DNAT rule saw {n} packets for {FLOWS} flows: conntrack \
                     is not keeping the bindings"
                ))
            }
            _ => {}
        }
    }
    assert_eq!(runs.len(), System::ALL.len() * settings.rounds);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}
