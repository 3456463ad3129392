use std::{collections::BTreeMap, net::IpAddr};

use super::{
    decide,
    kernel::{self, Route},
    route_tag, HostState, RouteState, VipInput, STANDBY_BIT,
};
use crate::config::AnnouncePolicy;

fn vip(name: &str, address: &str, policy: AnnouncePolicy, healthy: u32) -> VipInput {
    VipInput {
        name: name.to_owned(),
        address: address.parse().expect("address"),
        policy,
        min_healthy: 2,
        healthy,
        targets: 3,
        standby: true,
        settling: None,
    }
}

fn up() -> HostState {
    HostState {
        attached: true,
        withdrawn: None,
    }
}

#[test]
fn healthy_policy_announces_at_min_healthy_and_stands_by_below() {
    let d = decide(
        &up(),
        &[
            vip("a", "198.19.0.1", AnnouncePolicy::Healthy, 2),
            vip("b", "198.19.0.2", AnnouncePolicy::Healthy, 1),
        ],
    );
    let a = d.vip("a").expect("a");
    assert_eq!(a.state, RouteState::Announced);
    assert_eq!(a.reason, "2 of 3 targets healthy, 2 needed");
    let b = d.vip("b").expect("b");
    assert_eq!(b.state, RouteState::Standby);
    assert!(b
        .reason
        .starts_with("1 of 3 targets healthy, 2 needed: standby"));
    let routes = d.routes(0x1234);
    let a_addr: IpAddr = "198.19.0.1".parse().expect("address");
    let b_addr: IpAddr = "198.19.0.2".parse().expect("address");
    assert_eq!(routes.get(&a_addr), Some(&0x1234));
    assert_eq!(routes.get(&b_addr), Some(&(0x1234 | STANDBY_BIT)));
}

#[test]
fn without_standby_below_min_healthy_withdraws() {
    let mut v = vip("b", "198.19.0.2", AnnouncePolicy::Healthy, 1);
    v.standby = false;
    let d = decide(&up(), &[v]);
    let b = d.vip("b").expect("b");
    assert_eq!(b.state, RouteState::Withdrawn);
    assert_eq!(
        b.reason,
        "1 of 3 targets healthy, 2 needed (standby = false)"
    );
    assert!(d.routes(7).is_empty());
}

#[test]
fn a_settling_vip_stays_standby() {
    let mut v = vip("a", "198.19.0.1", AnnouncePolicy::Healthy, 3);
    v.settling = Some(std::time::Duration::from_secs(5));
    let d = decide(&up(), std::slice::from_ref(&v));
    let a = d.vip("a").expect("a");
    assert_eq!(a.state, RouteState::Standby);
    assert_eq!(
        a.reason,
        "3 of 3 targets healthy, 2 needed, settling: announced once its targets' health has not \
         changed for 5 s"
    );
    v.standby = false;
    assert_eq!(
        decide(&up(), &[v]).vip("a").expect("a").state,
        RouteState::Withdrawn
    );
}

#[test]
fn always_and_never_ignore_health() {
    let d = decide(
        &up(),
        &[
            vip("a", "198.19.0.1", AnnouncePolicy::Always, 0),
            vip("n", "198.19.0.2", AnnouncePolicy::Never, 3),
        ],
    );
    assert_eq!(d.vip("a").expect("a").state, RouteState::Announced);
    assert_eq!(d.vip("n").expect("n").state, RouteState::Withdrawn);
    assert_eq!(d.vip("n").expect("n").reason, "policy never");
    assert_eq!(d.routes(7).len(), 1);
}

#[test]
fn detached_or_operator_withdrawn_host_withdraws_everything() {
    let vips = [vip("a", "198.19.0.1", AnnouncePolicy::Always, 3)];
    let detached = decide(&HostState::default(), &vips);
    assert_eq!(detached.vip("a").expect("a").state, RouteState::Withdrawn);
    assert_eq!(
        detached.vip("a").expect("a").reason,
        "the XDP program is not attached"
    );
    let withdrawn = decide(
        &HostState {
            attached: true,
            withdrawn: Some("withdrawn by the operator".into()),
        },
        &vips,
    );
    assert_eq!(withdrawn.vip("a").expect("a").state, RouteState::Withdrawn);
    assert!(withdrawn.routes(7).is_empty());
}

#[test]
fn an_address_takes_the_best_state_of_its_vips() {
    let d = decide(
        &up(),
        &[
            vip("web", "198.19.0.1", AnnouncePolicy::Healthy, 0),
            vip("dns", "198.19.0.1", AnnouncePolicy::Healthy, 3),
            vip("off", "198.19.0.1", AnnouncePolicy::Never, 3),
        ],
    );
    let addr: IpAddr = "198.19.0.1".parse().expect("address");
    let a = &d.addresses[&addr];
    assert_eq!(a.state, RouteState::Announced);
    assert_eq!(a.vips, ["web", "dns", "off"]);
    assert_eq!(a.reason, "3 of 3 targets healthy, 2 needed");
}

#[test]
fn route_tag_is_the_low_30_bits_and_never_zero() {
    assert_eq!(route_tag(0xdead_beef_7fff_ffff), 0x3fff_ffff);
    assert_eq!(route_tag(0x1234_5678_4000_0000), 1);
    assert_eq!(route_tag(0x0000_0000_0000_0abc), 0xabc);
    // Tag plus the standby bit stays a positive i32 (BIRD's integer type).
    assert!(i32::try_from(route_tag(u64::MAX) | STANDBY_BIT).is_ok());
}

/// Adds, re-metrics and deletes routes in a fresh network namespace (the thread's own, so
/// nothing of the host's routing is touched) and reads them back.
#[test]
#[cfg_attr(
    not(feature = "privileged-tests"),
    ignore = "needs root (a network namespace); run by `cargo xtask test`"
)]
fn sync_reconciles_only_lbs_routes_in_its_table() {
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let h = kernel::connect().expect("netlink");
            // No table 100 yet: nothing of ours.
            assert!(kernel::list(&h, 100).await.expect("list").is_empty());
            let v4: IpAddr = "198.19.0.1".parse().expect("address");
            let v6: IpAddr = "2001:2:0:f::1".parse().expect("address");
            // Someone else's route in the same table stays.
            let other = std::process::Command::new("ip")
                .args(["route", "add", "blackhole", "198.19.9.9/32", "table", "100"])
                .status()
                .expect("ip route add");
            assert!(other.success());
            let want = BTreeMap::from([(v4, 5), (v6, 5)]);
            let c = kernel::sync(&h, 100, &want).await.expect("sync");
            assert_eq!(c.added.len(), 2);
            assert!(c.deleted.is_empty());
            let listed = kernel::list(&h, 100).await.expect("list");
            assert_eq!(
                listed,
                [
                    Route {
                        address: v4,
                        metric: 5
                    },
                    Route {
                        address: v6,
                        metric: 5
                    }
                ]
            );
            // Unchanged: nothing to do.
            assert!(kernel::sync(&h, 100, &want).await.expect("sync").is_empty());
            // A new metric: added, then the old one deleted.
            let want = BTreeMap::from([(v4, 5 | STANDBY_BIT)]);
            let c = kernel::sync(&h, 100, &want).await.expect("sync");
            assert_eq!(
                c.added,
                [Route {
                    address: v4,
                    metric: 5 | STANDBY_BIT
                }]
            );
            assert_eq!(c.deleted.len(), 2);
            // Deleting a route already gone is fine.
            kernel::delete(
                &h,
                100,
                Route {
                    address: v6,
                    metric: 5,
                },
            )
            .await
            .expect("delete of a missing route");
            let c = kernel::sync(&h, 100, &BTreeMap::new()).await.expect("sync");
            assert_eq!(c.deleted.len(), 1);
            assert!(kernel::list(&h, 100).await.expect("list").is_empty());
            let left = std::process::Command::new("ip")
                .args(["route", "show", "table", "100"])
                .output()
                .expect("ip route show");
            assert!(String::from_utf8_lossy(&left.stdout).contains("198.19.9.9"));
            // A table id above 255 travels as an attribute.
            let want = BTreeMap::from([(v6, 9)]);
            kernel::sync(&h, 4000, &want).await.expect("sync 4000");
            assert_eq!(
                kernel::list(&h, 4000).await.expect("list 4000"),
                [Route {
                    address: v6,
                    metric: 9
                }]
            );
            assert!(kernel::list(&h, 100).await.expect("list").is_empty());
        });
    })
    .join()
    .expect("test thread");
}
