//! The lifecycle's rules, one test per rule, on a one-VIP configuration.

use super::*;

const A: &str = "198.18.11.2";
const B: &str = "198.18.12.2";
const C: &str = "198.18.13.2";

/// One VIP on group "g" with targets `addrs` and the group settings `extra`.
fn cfg(addrs: &[&str], extra: &str) -> Config {
    let mut text = String::from(
        "[[vip]]\nname = \"web\"\naddress = \"198.18.200.1\"\nport = 80\nprotocol = \"tcp\"\ntarget_group = \"g\"\n\n[[target_group]]\nname = \"g\"\n",
    );
    text.push_str(extra);
    text.push('\n');
    for a in addrs {
        text.push_str(&format!(
            "[[target_group.target]]\naddress = \"{a}\"\nweight = 2\n"
        ));
    }
    crate::config::parse(&text).expect("valid test configuration")
}

fn key(a: &str) -> TargetKey {
    TargetKey::new("g", a.parse().expect("address"))
}

fn serve(plan: &Plan, a: &str) -> TargetServing {
    plan.serving
        .target("g", a.parse().expect("address"))
        .expect("served")
        .serving
}

fn state(l: &Lifecycle, a: &str, now: u64) -> TargetState {
    l.view(&key(a), now, &l.failing_open(&cfg(&[], "")))
        .expect("known")
        .state
}

fn healthy(l: &mut Lifecycle, addrs: &[&str], now: u64) {
    for a in addrs {
        l.on_health(&key(a), Health::Healthy, None, "", now);
    }
}

#[test]
fn new_targets_are_initial_and_the_group_fails_open_until_one_is_healthy() {
    let c = cfg(&[A, B], "");
    let mut l = Lifecycle::new();
    l.sync(&c, 0);
    let p = l.plan(&c, 0);
    assert_eq!(p.failing_open, BTreeSet::from(["g".to_owned()]));
    assert_eq!(
        serve(&p, A).ring_weight,
        2000,
        "fail open: configured weight"
    );
    let v = l.view(&key(A), 0, &p.failing_open).expect("view");
    assert_eq!((v.state, v.fail_open), (TargetState::Initial, true));
    assert_eq!(v.reason.as_deref(), Some(reason::INITIAL));

    healthy(&mut l, &[A], 10);
    let p = l.plan(&c, 10);
    assert!(p.failing_open.is_empty());
    assert_eq!(serve(&p, A).ring_weight, 2000);
    assert_eq!(serve(&p, B).ring_weight, 0, "initial: no new flows");
    assert!(serve(&p, B).keeps_flows);
}

#[test]
fn without_fail_open_an_all_unhealthy_group_serves_nothing() {
    let c = cfg(&[A, B], "fail_open = false");
    let mut l = Lifecycle::new();
    l.sync(&c, 0);
    let p = l.plan(&c, 0);
    assert!(p.failing_open.is_empty());
    assert_eq!(serve(&p, A).ring_weight + serve(&p, B).ring_weight, 0);
}

#[test]
fn unhealthy_targets_leave_the_ring_and_their_flows_follow_the_policy() {
    // NLB's default: connection termination on, no draining interval.
    let c = cfg(&[A, B], "");
    let mut l = Lifecycle::new();
    l.sync(&c, 0);
    healthy(&mut l, &[A, B], 0);
    assert!(l.on_health(
        &key(A),
        Health::Unhealthy,
        Some("Target.Timeout"),
        "timed out",
        100
    ));
    let p = l.plan(&c, 100);
    assert_eq!(
        serve(&p, A),
        TargetServing {
            ring_weight: 0,
            keeps_flows: false
        }
    );
    let v = l.view(&key(A), 100, &p.failing_open).expect("view");
    assert_eq!(v.state, TargetState::Unhealthy);
    assert_eq!(v.reason.as_deref(), Some("Target.Timeout"));
    assert_eq!(v.detail, "timed out");

    // Termination off with a draining interval keeps the flows for a while:
    // unhealthy.draining.
    let c = cfg(
        &[A, B],
        "unhealthy_connection_termination = false\nunhealthy_draining_interval_secs = 30",
    );
    l.sync(&c, 100);
    let p = l.plan(&c, 100 + 29_000);
    assert_eq!(
        serve(&p, A),
        TargetServing {
            ring_weight: 0,
            keeps_flows: true
        }
    );
    assert_eq!(state(&l, A, 100 + 29_000), TargetState::UnhealthyDraining);
    let p = l.plan(&c, 100 + 30_000);
    assert!(!serve(&p, A).keeps_flows);

    // Termination off: the flows stay for as long as they last.
    let c = cfg(&[A, B], "unhealthy_connection_termination = false");
    l.sync(&c, 100);
    let p = l.plan(&c, 10_000_000);
    assert_eq!(
        serve(&p, A),
        TargetServing {
            ring_weight: 0,
            keeps_flows: true
        }
    );
    assert_eq!(state(&l, A, 10_000_000), TargetState::Unhealthy);
}

#[test]
fn deregistration_drains_for_the_delay_then_the_target_goes() {
    let both = cfg(&[A, B], "deregistration_delay_secs = 60");
    let only_b = cfg(&[B], "deregistration_delay_secs = 60");
    let mut l = Lifecycle::new();
    l.sync(&both, 0);
    healthy(&mut l, &[A, B], 0);
    l.sync(&only_b, 1_000);
    let p = l.plan(&only_b, 1_000);
    // Still in the data plane (flows keep their backend), weight 0.
    let g = p.serving.group("g");
    assert!(g
        .iter()
        .any(|t| t.address == key(A).address && t.deregistering && t.serving.ring_weight == 0));
    assert_eq!(
        serve(&p, A),
        TargetServing {
            ring_weight: 0,
            keeps_flows: true
        }
    );
    let v = l.view(&key(A), 31_000, &p.failing_open).expect("view");
    assert_eq!(v.state, TargetState::Draining);
    assert_eq!(v.reason.as_deref(), Some(reason::DEREGISTERING));
    assert_eq!(v.remaining_ms, Some(30_000));
    // Draining targets cannot be drained again or undrained.
    assert_eq!(
        l.drain(&key(A), 2_000),
        Err(LifecycleError::Deregistering(key(A)))
    );
    assert!(l.expire(60_999).is_empty());
    assert_eq!(l.expire(61_000), vec![key(A)]);
    assert!(l.get(&key(A)).is_none());
    let p = l.plan(&only_b, 61_000);
    assert_eq!(p.serving.group("g").len(), 1);
}

#[test]
fn re_registering_a_draining_target_cancels_the_drain() {
    let both = cfg(&[A, B], "");
    let mut l = Lifecycle::new();
    l.sync(&both, 0);
    healthy(&mut l, &[A, B], 0);
    l.sync(&cfg(&[B], ""), 1_000);
    assert_eq!(state(&l, A, 2_000), TargetState::Draining);
    l.sync(&both, 3_000);
    assert_eq!(state(&l, A, 3_000), TargetState::Healthy, "health was kept");
    assert_eq!(serve(&l.plan(&both, 3_000), A).ring_weight, 2000);
}

#[test]
fn a_zero_delay_removes_at_once() {
    let mut l = Lifecycle::new();
    l.sync(&cfg(&[A, B], "deregistration_delay_secs = 0"), 0);
    l.sync(&cfg(&[B], "deregistration_delay_secs = 0"), 5);
    assert_eq!(l.expire(5), vec![key(A)]);
}

#[test]
fn operator_drain_then_unused_until_undrained() {
    let c = cfg(&[A, B], "deregistration_delay_secs = 10");
    let mut l = Lifecycle::new();
    l.sync(&c, 0);
    healthy(&mut l, &[A, B], 0);
    assert_eq!(l.drain(&key(A), 100), Ok(true));
    assert_eq!(l.drain(&key(A), 200), Ok(false), "already drained");
    let p = l.plan(&c, 5_000);
    assert_eq!(
        serve(&p, A),
        TargetServing {
            ring_weight: 0,
            keeps_flows: true
        }
    );
    assert_eq!(state(&l, A, 5_000), TargetState::Draining);
    let p = l.plan(&c, 10_100);
    assert_eq!(
        serve(&p, A),
        TargetServing {
            ring_weight: 0,
            keeps_flows: false
        }
    );
    let v = l.view(&key(A), 10_100, &p.failing_open).expect("view");
    assert_eq!(v.state, TargetState::Unused);
    assert_eq!(v.reason.as_deref(), Some(reason::DRAINED));
    assert!(
        l.expire(1_000_000).is_empty(),
        "a drained target stays registered"
    );
    assert_eq!(l.undrain(&key(A)), Ok(true));
    assert_eq!(serve(&l.plan(&c, 10_200), A).ring_weight, 2000);
    assert_eq!(
        l.drain(&TargetKey::new("g", "10.9.9.9".parse().expect("ip")), 0),
        Err(LifecycleError::NotFound(TargetKey::new(
            "g",
            "10.9.9.9".parse().expect("ip")
        )))
    );
}

#[test]
fn a_drain_reads_unused_only_once_the_data_plane_dropped_its_flows() {
    let c = cfg(&[A, B], "deregistration_delay_secs = 10");
    let mut l = Lifecycle::new();
    l.sync(&c, 0);
    healthy(&mut l, &[A, B], 0);
    assert_eq!(l.drain(&key(A), 0), Ok(true));
    let p = l.plan(&c, 10_000);
    let v = l.view(&key(A), 10_000, &p.failing_open).expect("view");
    assert_eq!(v.state, TargetState::Unused);
    // The installed data plane still keeps A's flows (the next apply is due): draining,
    // 0 s left.
    let shown = v.clone().as_installed(Some(true));
    assert_eq!(shown.state, TargetState::Draining);
    assert_eq!(shown.remaining_ms, Some(0));
    assert!(shown.keeps_flows);
    // Once applied, it is unused.
    assert_eq!(
        v.clone().as_installed(Some(false)).state,
        TargetState::Unused
    );
    // A target still served reads as the lifecycle says.
    let b = l.view(&key(B), 10_000, &p.failing_open).expect("view");
    assert_eq!(b.clone().as_installed(Some(true)), b);
}

#[test]
fn a_drained_group_does_not_fail_open_onto_its_drained_targets() {
    let c = cfg(&[A], "");
    let mut l = Lifecycle::new();
    l.sync(&c, 0);
    l.drain(&key(A), 0).expect("drain");
    let p = l.plan(&c, 0);
    assert!(p.failing_open.is_empty());
    assert_eq!(serve(&p, A).ring_weight, 0);
}

#[test]
fn enabling_slow_start_does_not_ramp_targets_already_healthy() {
    let without = cfg(&[A, B], "slow_start_secs = 0");
    let with = cfg(&[A, B], "slow_start_secs = 30");
    let mut l = Lifecycle::new();
    l.sync(&without, 0);
    healthy(&mut l, &[A], 1_000);
    // Slow start enabled 4 s after A became healthy, while B is still initial.
    l.sync(&with, 5_000);
    assert_eq!(serve(&l.plan(&with, 5_000), A).ring_weight, 2000);
    assert_eq!(
        l.view(&key(A), 5_000, &BTreeSet::new())
            .expect("known")
            .remaining_ms,
        None
    );
    // B becomes healthy after: it ramps.
    healthy(&mut l, &[B], 6_000);
    assert_eq!(serve(&l.plan(&with, 6_000), B).ring_weight, 100);
    // Applying the same file again changes nothing.
    l.sync(&with, 7_000);
    assert_eq!(serve(&l.plan(&with, 7_000), B).ring_weight, 100);
}

#[test]
fn slow_start_ramps_in_steps_and_restarts_after_a_regression() {
    let c = cfg(&[A, B], "slow_start_secs = 100");
    let mut l = Lifecycle::new();
    l.sync(&c, 0);
    healthy(&mut l, &[B], 0);
    healthy(&mut l, &[A], 1_000);
    let w = |l: &Lifecycle, t: u64| serve(&l.plan(&c, t), A).ring_weight;
    assert_eq!(w(&l, 1_000), 100, "first step at once: 1/20 of 2000");
    assert_eq!(w(&l, 1_000 + 4_999), 100);
    assert_eq!(w(&l, 1_000 + 5_000), 200);
    assert_eq!(w(&l, 1_000 + 50_000), 1100);
    assert_eq!(w(&l, 1_000 + 99_999), 2000);
    assert_eq!(w(&l, 1_000 + 100_000), 2000);
    // Only RAMP_STEPS distinct weights over the ramp.
    let distinct: BTreeSet<u32> = (0..1000).map(|i| w(&l, 1_000 + i * 100)).collect();
    assert_eq!(distinct.len() as u64, RAMP_STEPS);
    // A regression ends the ramp; the next recovery starts from the bottom.
    l.on_health(&key(A), Health::Unhealthy, None, "", 60_000);
    assert_eq!(w(&l, 60_000), 0);
    l.on_health(&key(A), Health::Healthy, None, "", 70_000);
    assert_eq!(w(&l, 70_000), 100);
    // A target healthy from a restored state (no ramp origin) is at full weight.
    let mut l = Lifecycle::new();
    l.sync(&cfg(&[A, B], ""), 0);
    healthy(&mut l, &[A, B], 0);
    assert_eq!(serve(&l.plan(&cfg(&[A, B], ""), 0), A).ring_weight, 2000);
}

#[test]
fn targets_report_their_own_weight() {
    let c = cfg(&[A, B, C], "");
    let mut l = Lifecycle::new();
    l.sync(&c, 0);
    healthy(&mut l, &[A, B, C], 0);
    assert!(l.on_report(
        &key(A),
        SelfReport {
            weight_pct: Some(25),
            ..SelfReport::default()
        }
    ));
    assert!(!l.on_report(
        &key(A),
        SelfReport {
            weight_pct: Some(25),
            ..SelfReport::default()
        }
    ));
    l.on_report(
        &key(B),
        SelfReport {
            drain: true,
            ..SelfReport::default()
        },
    );
    l.on_report(
        &key(C),
        SelfReport {
            down: true,
            ..SelfReport::default()
        },
    );
    let p = l.plan(&c, 0);
    assert_eq!(serve(&p, A).ring_weight, 500);
    assert_eq!(serve(&p, B).ring_weight, 0);
    assert_eq!(state(&l, B, 0), TargetState::Healthy);
    assert_eq!(serve(&p, C).ring_weight, 0);
    assert_eq!(state(&l, C, 0), TargetState::Unhealthy);
}

#[test]
fn disabled_checks_make_targets_healthy() {
    let c = cfg(&[A], "[target_group.health_check]\nenabled = false");
    let mut l = Lifecycle::new();
    l.sync(&c, 0);
    let p = l.plan(&c, 0);
    assert!(p.failing_open.is_empty());
    assert_eq!(serve(&p, A).ring_weight, 2000);
    let v = l.view(&key(A), 0, &p.failing_open).expect("view");
    assert_eq!(v.state, TargetState::Healthy);
    assert_eq!(v.reason.as_deref(), Some(reason::CHECK_DISABLED));
    // Results of checks that no longer run are ignored.
    assert!(!l.on_health(&key(A), Health::Unhealthy, None, "", 1));
}

#[test]
fn state_survives_a_restart() {
    let c = cfg(&[A, B], "deregistration_delay_secs = 60");
    let mut l = Lifecycle::new();
    l.sync(&c, 0);
    healthy(&mut l, &[A, B], 0);
    l.on_health(&key(B), Health::Unhealthy, Some("Target.Timeout"), "t", 5);
    l.sync(&cfg(&[B], "deregistration_delay_secs = 60"), 10);
    let saved = serde_json::to_string(&l.state()).expect("json");
    let mut back = Lifecycle::restore(&serde_json::from_str(&saved).expect("json"));
    assert_eq!(back.state(), l.state());
    assert_eq!(state(&back, A, 20), TargetState::Draining);
    assert_eq!(back.expire(60_010 - 1).len(), 0);
}

#[test]
fn removing_a_group_forgets_its_targets() {
    let mut l = Lifecycle::new();
    l.sync(&cfg(&[A], ""), 0);
    l.sync(&crate::config::parse("").expect("empty"), 1);
    assert_eq!(l.targets().count(), 0);
}
