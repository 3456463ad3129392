//! The installer against an in-memory data plane that checks the order of writes.

use super::*;
use crate::{config, lifecycle::TargetServing};
use std::collections::HashMap;

/// The data plane as maps in memory, recording the order of writes.
#[derive(Default)]
struct Fake {
    config: Option<LbConfig>,
    backends: HashMap<u32, Backend>,
    vips: HashMap<VipKey, VipMeta>,
    rings: HashMap<u32, Vec<u32>>,
    log: Vec<String>,
}

impl DataplaneOps for Fake {
    fn set_config(&mut self, cfg: &LbConfig) -> Result<(), DataplaneError> {
        self.config = Some(*cfg);
        self.log.push("config".into());
        Ok(())
    }
    fn set_backend(&mut self, id: u32, b: &Backend) -> Result<(), DataplaneError> {
        // A slot is never cleared while a ring still points at it.
        if b.flags & backend_flags::IN_USE == 0 {
            for (vip, ring) in &self.rings {
                assert!(
                    !ring.contains(&id),
                    "backend {id} cleared while the ring of VIP {vip} points at it"
                );
            }
        }
        self.backends.insert(id, *b);
        self.log.push(format!("backend {id}"));
        Ok(())
    }
    fn set_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<(), DataplaneError> {
        self.vips.insert(*key, *meta);
        self.log
            .push(format!("vip {} size {}", meta.vip_id, meta.ring_size));
        Ok(())
    }
    fn remove_vip(&mut self, key: &VipKey) -> Result<(), DataplaneError> {
        self.vips.remove(key);
        self.log.push("remove vip".into());
        Ok(())
    }
    fn install_ring(&mut self, vip_id: u32, slots: &[u32]) -> Result<(), DataplaneError> {
        // Every slot must name a backend that is already in use.
        for s in slots {
            if *s != maglev::NO_BACKEND {
                let in_use = self
                    .backends
                    .get(s)
                    .is_some_and(|b| b.flags & backend_flags::IN_USE != 0);
                assert!(
                    in_use,
                    "ring of VIP {vip_id} points at backend {s} before it exists"
                );
            }
        }
        self.rings.insert(vip_id, slots.to_vec());
        self.log.push(format!("ring {vip_id} size {}", slots.len()));
        Ok(())
    }
}

fn cfg(text: &str) -> Config {
    config::parse(text).unwrap_or_else(|e| panic!("test config invalid: {e}"))
}

/// Every target of `text` served at its configured weight.
fn configured(text: &str) -> Serving {
    Serving::as_configured(&cfg(text))
}

const TWO_VIPS: &str = r#"
        [[vip]]
        name = "web"
        address = "198.18.200.1"
        port = 80
        protocol = "tcp"
        mode = "dr"
        ring_size = 1021
        target_group = "web"

        [[vip]]
        name = "dns"
        address = "198.18.200.1"
        port = 53
        protocol = "udp"
        mode = "dr"
        ring_size = 1021
        target_group = "web"

        [[target_group]]
        name = "web"
        [target_group.health_check]
        port = 80
        [[target_group.target]]
        address = "198.18.11.2"
        [[target_group.target]]
        address = "198.18.12.2"
        [[target_group.target]]
        address = "198.18.13.2"
    "#;

#[test]
fn serving_decisions_scale_weights_and_clear_slots_after_the_rings() {
    let mut s = Services::new();
    let mut dp = Fake::default();
    s.apply(&cfg(TWO_VIPS), &configured(TWO_VIPS), &mut dp)
        .expect("apply");
    let plain = s.fingerprints();
    // A common factor on every weight changes no ring.
    let a: IpAddr = "198.18.11.2".parse().expect("ip");
    let mut serving = configured(TWO_VIPS);
    for t in ["198.18.11.2", "198.18.12.2", "198.18.13.2"] {
        assert!(serving.set(
            "web",
            t.parse().expect("ip"),
            TargetServing {
                ring_weight: 7,
                keeps_flows: true,
            },
        ));
    }
    let report = s.apply(&cfg(TWO_VIPS), &serving, &mut dp).expect("apply");
    assert_eq!(report.changed.len(), 0);
    assert_eq!(s.fingerprints(), plain);
    // One target stops keeping its flows: out of every ring, its slot cleared (after
    // the rings, which the fake checks), its id kept.
    let id = s.backend_id("web", a).expect("id");
    assert!(serving.set(
        "web",
        a,
        TargetServing {
            ring_weight: 7,
            keeps_flows: false,
        },
    ));
    s.apply(&cfg(TWO_VIPS), &serving, &mut dp).expect("apply");
    assert!(dp.rings.values().all(|r| !r.contains(&id)));
    assert_eq!(dp.backends[&id].flags & backend_flags::IN_USE, 0);
    assert_eq!(s.backend_id("web", a), Some(id));
    // And back: the slot is in use before any ring points at it again.
    s.apply(&cfg(TWO_VIPS), &configured(TWO_VIPS), &mut dp)
        .expect("apply");
    assert!(dp.rings.values().all(|r| r.contains(&id)));
    assert_eq!(s.fingerprints(), plain);
}

#[test]
fn first_apply_installs_everything_in_a_safe_order() {
    let mut s = Services::new();
    let mut dp = Fake::default();
    let report = s
        .apply(&cfg(TWO_VIPS), &configured(TWO_VIPS), &mut dp)
        .expect("apply");
    assert_eq!(report.changed.len(), 2);
    assert_eq!(report.backends_added, 3);
    assert_eq!(dp.backends.len(), 3);
    assert_eq!(dp.rings.len(), 2);
    // Two VIP entries and one fragment entry per (address, protocol): tcp and udp.
    assert_eq!(dp.vips.len(), 4);
    let first_ring = dp
        .log
        .iter()
        .position(|l| l.starts_with("ring"))
        .expect("a ring");
    let last_backend = dp
        .log
        .iter()
        .rposition(|l| l.starts_with("backend"))
        .expect("backends");
    assert!(
        last_backend < first_ring,
        "rings before backends: {:?}",
        dp.log
    );
    // Both VIPs share the target group, so they share backend ids.
    assert_eq!(
        s.vip("web").map(|v| v.1.clone()),
        s.vip("dns").map(|v| v.1.clone())
    );
}

#[test]
fn reapplying_the_same_config_changes_nothing() {
    let mut s = Services::new();
    let mut dp = Fake::default();
    s.apply(&cfg(TWO_VIPS), &configured(TWO_VIPS), &mut dp)
        .expect("apply");
    dp.log.clear();
    let report = s
        .apply(&cfg(TWO_VIPS), &configured(TWO_VIPS), &mut dp)
        .expect("apply");
    assert!(report.changed.is_empty(), "{report:?}");
    assert_eq!(report.unchanged.len(), 2);
    assert!(
        !dp.log.iter().any(|l| l.starts_with("ring")),
        "rings rewritten: {:?}",
        dp.log
    );
}

#[test]
fn removing_a_target_reports_disruption_and_clears_its_slot() {
    let mut s = Services::new();
    let mut dp = Fake::default();
    s.apply(&cfg(TWO_VIPS), &configured(TWO_VIPS), &mut dp)
        .expect("apply");
    let gone = s
        .backend_id("web", "198.18.13.2".parse().expect("ip"))
        .expect("id");
    let without = TWO_VIPS.replace(
        "[[target_group.target]]\n        address = \"198.18.13.2\"",
        "",
    );
    let dry = s
        .dry_run(&cfg(&without), &configured(&without))
        .expect("dry run");
    let report = s
        .apply(&cfg(&without), &configured(&without), &mut dp)
        .expect("apply");
    assert_eq!(dry, report, "dry run and apply must agree");
    assert_eq!(report.backends_removed, 1);
    let web = report
        .changed
        .iter()
        .find(|c| c.name == "web")
        .expect("web changed");
    let d = web
        .disruption
        .as_ref()
        .expect("disruption of an existing VIP");
    assert!(d.forced > 0 && d.moved >= d.forced, "{d:?}");
    assert_eq!(
        dp.backends[&gone],
        Backend::default(),
        "removed backend's slot not cleared"
    );
    assert!(!dp.rings.values().any(|r| r.contains(&gone)));
    // Ids of the survivors are unchanged.
    assert_eq!(
        s.backend_id("web", "198.18.11.2".parse().expect("ip")),
        Some(0)
    );
}

#[test]
fn removed_vip_entries_go_and_ids_stay_stable() {
    let mut s = Services::new();
    let mut dp = Fake::default();
    s.apply(&cfg(TWO_VIPS), &configured(TWO_VIPS), &mut dp)
        .expect("apply");
    let web_id = s.vip("web").map(|v| v.0);
    let only_web = TWO_VIPS;
    let start = only_web
        .find("        [[vip]]\n        name = \"dns\"")
        .expect("dns block");
    let end = only_web.find("        [[target_group]]").expect("groups");
    let only_web = format!("{}{}", &only_web[..start], &only_web[end..]);
    let report = s
        .apply(&cfg(&only_web), &configured(&only_web), &mut dp)
        .expect("apply");
    assert_eq!(report.removed, vec!["dns".to_string()]);
    assert_eq!(s.vip("web").map(|v| v.0), web_id);
    // web's tcp entry and its tcp fragment entry remain; dns's udp entries are gone.
    assert_eq!(dp.vips.len(), 2, "{:?}", dp.log);
}

#[test]
fn a_restored_agent_keeps_every_id_and_installs_identical_rings() {
    let mut first = Services::new();
    let mut dp = Fake::default();
    first
        .apply(&cfg(TWO_VIPS), &configured(TWO_VIPS), &mut dp)
        .expect("apply");
    let rings = dp.rings.clone();
    let vips = dp.vips.clone();
    let saved = first.state();
    let json = serde_json::to_string(&saved).expect("serialize");
    let restored: ServicesState = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(restored, saved);
    let mut second = Services::restore(&restored);
    second
        .apply(&cfg(TWO_VIPS), &configured(TWO_VIPS), &mut dp)
        .expect("apply");
    assert_eq!(dp.rings, rings, "rings changed across a restart");
    assert_eq!(dp.vips, vips, "VIP entries changed across a restart");
    assert_eq!(second.state(), saved);
    // A VIP removed while the agent was down is removed on the restored agent's apply.
    let start = TWO_VIPS
        .find("        [[vip]]\n        name = \"dns\"")
        .expect("dns block");
    let end = TWO_VIPS.find("        [[target_group]]").expect("groups");
    let only_web = format!("{}{}", &TWO_VIPS[..start], &TWO_VIPS[end..]);
    let mut third = Services::restore(&saved);
    let report = third
        .apply(&cfg(&only_web), &configured(&only_web), &mut dp)
        .expect("apply");
    assert_eq!(report.removed, vec!["dns".to_string()]);
    assert_eq!(dp.vips.len(), 2);
}

#[test]
fn freed_backend_ids_are_not_reused_at_once() {
    let mut s = Services::new();
    let mut dp = Fake::default();
    s.apply(&cfg(TWO_VIPS), &configured(TWO_VIPS), &mut dp)
        .expect("apply");
    let swapped = TWO_VIPS.replace("198.18.13.2", "198.18.14.2");
    s.apply(&cfg(&swapped), &configured(&swapped), &mut dp)
        .expect("apply");
    assert_eq!(
        s.backend_id("web", "198.18.14.2".parse().expect("ip")),
        Some(3)
    );
}

#[test]
fn fleet_fingerprint_names_targets_not_ids() {
    let seed = cfg(TWO_VIPS).agent.hash_seed;
    // Host A installs the file as is.
    let mut a = Services::new();
    a.apply(&cfg(TWO_VIPS), &configured(TWO_VIPS), &mut Fake::default())
        .expect("apply");
    // Host B got there by another path: an extra target first (taking id 0), removed
    // again, so every target of the file has another id than on A.
    let extra = TWO_VIPS.replace(
        "[[target_group.target]]\n        address = \"198.18.11.2\"",
        "[[target_group.target]]\n        address = \"198.18.19.2\"\n        \
         [[target_group.target]]\n        address = \"198.18.11.2\"",
    );
    let mut b = Services::new();
    let mut dp = Fake::default();
    b.apply(&cfg(&extra), &configured(&extra), &mut dp)
        .expect("apply");
    b.apply(&cfg(TWO_VIPS), &configured(TWO_VIPS), &mut dp)
        .expect("apply");
    let target: IpAddr = "198.18.11.2".parse().expect("ip");
    assert_ne!(a.backend_id("web", target), b.backend_id("web", target));
    assert_eq!(a.fleet_fingerprint(seed), b.fleet_fingerprint(seed));
    // Another seed, or another ring, is another fingerprint.
    assert_ne!(a.fleet_fingerprint(seed), a.fleet_fingerprint(seed ^ 1));
    let fewer = TWO_VIPS.replace(
        "[[target_group.target]]\n        address = \"198.18.13.2\"",
        "",
    );
    b.apply(&cfg(&fewer), &configured(&fewer), &mut dp)
        .expect("apply");
    assert_ne!(a.fleet_fingerprint(seed), b.fleet_fingerprint(seed));
}

impl Fake {
    /// What `Dataplane::installed_tables` would read back from this data plane.
    fn tables(&self) -> crate::dataplane::tables::InstalledTables {
        crate::dataplane::tables::InstalledTables {
            vips: self.vips.iter().map(|(k, m)| (*k, *m)).collect(),
            backends: self
                .backends
                .iter()
                .filter(|(_, b)| b.family != 0)
                .map(|(id, b)| (*id, *b))
                .collect(),
            rings: self.rings.iter().map(|(v, r)| (*v, r.clone())).collect(),
        }
    }
}

/// TWO_VIPS with its VIPs and targets listed in the opposite order: the same services,
/// which a fresh allocation would number differently.
fn reversed() -> String {
    let (web, rest) = TWO_VIPS.split_at(
        TWO_VIPS
            .find("[[vip]]\n        name = \"dns\"")
            .expect("dns"),
    );
    let (dns, group) = rest.split_at(rest.find("[[target_group]]").expect("group"));
    let group = group
        .replace("198.18.11.2", "X")
        .replace("198.18.13.2", "198.18.11.2")
        .replace('X', "198.18.13.2");
    format!("{dns}{web}{group}")
}

#[test]
fn ids_rebuilt_from_the_tables_are_the_ids_installed() {
    // Numbered in the file's order (web 0, dns 1; .11 → 0, .12 → 1, .13 → 2), then the
    // file lists the targets the other way round: ids stay.
    let mut s = Services::new();
    let mut dp = Fake::default();
    s.apply(&cfg(TWO_VIPS), &configured(TWO_VIPS), &mut dp)
        .expect("apply");
    let swapped = reversed();
    let swapped_cfg = cfg(&swapped);
    s.apply(&swapped_cfg, &configured(&swapped), &mut dp)
        .expect("apply");
    let recovered = recover(&dp.tables(), &swapped_cfg);
    let mut want = s.state();
    let mut got = recovered.state.clone();
    for st in [&mut want, &mut got] {
        st.vips.sort_by_key(|v| v.id);
        st.backends.sort_by_key(|b| b.id);
    }
    assert_eq!(got, want);
    assert!(recovered.unknown_vips.is_empty() && recovered.orphan_backends.is_empty());
    // A fresh allocation would have swapped .11 and .13: the rebuilt one reinstalls
    // the same rings.
    let mut again = Services::restore(&recovered.state);
    let mut dp2 = Fake::default();
    again
        .apply(&swapped_cfg, &configured(&swapped), &mut dp2)
        .expect("apply");
    assert_eq!(again.fingerprints(), s.fingerprints());
    assert_eq!(dp2.rings, dp.rings);
}

#[test]
fn ids_the_configuration_does_not_name_are_kept_out_of_reach() {
    let mut s = Services::new();
    let mut dp = Fake::default();
    s.apply(&cfg(TWO_VIPS), &configured(TWO_VIPS), &mut dp)
        .expect("apply");
    // The file now lacks the dns VIP and target .12 (say, both were runtime edits).
    let smaller = TWO_VIPS.replace(
        "\n        [[target_group.target]]\n        address = \"198.18.12.2\"",
        "",
    );
    let smaller = smaller.replace("port = 53", "port = 54");
    let small_cfg = cfg(&smaller);
    let recovered = recover(&dp.tables(), &small_cfg);
    assert_eq!(recovered.unknown_vips.len(), 1, "{recovered:?}");
    assert_eq!(
        recovered.orphan_backends,
        vec!["backend id 1 (198.18.12.2)".to_owned()]
    );
    assert_eq!(recovered.state.next_backend, 3);
    assert!(recovered.state.freed_backends.is_empty());
    // The first apply removes the unknown VIP and never hands out the orphan's id.
    let mut again = Services::restore(&recovered.state);
    let report = again
        .apply(&small_cfg, &configured(&smaller), &mut dp)
        .expect("apply");
    assert_eq!(report.removed.len(), 1);
    assert!(dp.backends[&1].flags & backend_flags::IN_USE != 0);
}
