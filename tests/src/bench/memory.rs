//! Benchmark section `memory`: what a running `lb-agent` costs in memory, in its own
//! process and in the kernel's BPF maps. Uses the `control` section's [`Host`] (two
//! namespaces, a responder for every target address, cleanup on drop) twice, and runs
//! one agent in each, both started fresh (`--reset`):
//!
//! 1. **1 VIP** (baseline, prefix `lbb-mem1`): one TCP VIP, one target group of 4 targets;
//! 2. **100 VIPs** (prefix `lbb-mem100`): 100 TCP VIPs, each with its own target group of
//!    4 targets (400).
//!
//! The 100-VIP agent needs most of this section's time to start (it fills 100 rings of
//! 65,537 slots, one map update per slot: about 10 s here), so the baseline is measured
//! meanwhile; neither figure depends on the other agent's CPU use. Both use the default
//! ring size (65,537) and flow table (1,048,576 entries). Health checks are disabled
//! (every target healthy at once, reason `Target.HealthCheckDisabled`): with checks on,
//! each batch of targets turning healthy re-installs every ring again, so the 100-VIP
//! agent needs another 10-17 s (its admin socket unanswered meanwhile) before it is
//! settled, which a quick run cannot afford.
//! A full run (not `--quick`) also starts the 100 VIPs with TCP checks every 1 s in a
//! third host (`lbb-memhc`, in parallel) and reports its settled RSS as
//! `agent_rss_mb_100_vips_health_checked`. Figures:
//!
//! - `agent_rss_mb_1_vip`, `agent_rss_mb_100_vips`: `VmRSS` of the agent process
//!   (/proc/<pid>/status) in MiB, once every target is healthy and one more second has
//!   passed: the median of samples taken every 250 ms over 2 s (5 s full). Kernel memory
//!   (the BPF maps) is not in RSS.
//! - BPF map memory, as the kernel accounts it: the `memlock:` line of
//!   /proc/self/fdinfo/<fd> for each map the agent pinned (under its pin directory) and
//!   for each VIP's ring, an inner map reached through the pinned `LB_RING_V1` outer
//!   array (not pinned itself). That is the kernel's `map_mem_usage`: for a preallocated
//!   hash, every element of `max_entries` plus the buckets; for a per-CPU map, values
//!   times the possible CPUs.
//!   - `bpf_bytes_total` (100 VIPs) and `bpf_bytes_total_1_vip`: the sum over those maps;
//!   - `bpf_bytes_per_flow`: the flow table's memlock / its max_entries. The table
//!     (`LB_FLOW_V1`) is one LRU hash shared by all CPUs (`BPF_F_NO_COMMON_LRU` only
//!     gives each CPU its own LRU list), so an entry is *not* multiplied by the CPUs;
//!     `detail` has the map type and flags as the kernel reports them;
//!   - `bpf_bytes_per_vip`: (total with 100 VIPs − total with 1) / 99, i.e. what each
//!     further VIP adds. The VIP hash (2,048 entries), the outer ring array and the
//!     per-VIP counters (1,024 each) are preallocated whatever the configuration, so
//!     this is essentially the VIP's ring (`bpf_ring_bytes`: one ring's memlock; an
//!     array map stores each value in a slot rounded up to 8 bytes, so a ring of 65,537
//!     `u32`s costs 65,537 × 8 bytes plus the map header).
//!     `bpf_bytes_reserved_per_vip_slot` is what those preallocated maps cost per entry
//!     (each map's memlock / its max_entries, summed). Targets (backend slots,
//!     per-backend counters) are preallocated likewise, for 65,536 backends.
//!
//! Caveat: RSS depends on what the allocator keeps of freed memory; both runs start fresh
//! and install their configuration once, so they compare like with like. With health
//! checks on, the rings are rebuilt as targets turn healthy and RSS settles higher (64 MiB
//! against 36 MiB in one run here), presumably old and new tables coexisting while the
//! allocator keeps the peak.

use std::{
    net::Ipv4Addr,
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _};
use aya::maps::MapData;
use serde_json::{json, Map as JsonMap, Value};

use super::{
    control::{agent_toml, group_toml, target, vip_toml, Host, Rings},
    median, Progress,
};

/// `VmRSS` of process `pid` in KiB.
pub(super) fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

/// One map as the kernel describes it in fdinfo.
#[derive(Clone, Debug)]
struct MapMem {
    name: String,
    map_type: u64,
    max_entries: u64,
    key_size: u64,
    value_size: u64,
    flags: u64,
    memlock: u64,
}

impl MapMem {
    /// Reads /proc/self/fdinfo of `map`'s fd.
    fn of(name: &str, map: &MapData) -> anyhow::Result<Self> {
        let fd = map.fd().as_fd().as_raw_fd();
        let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
            .with_context(|| format!("reading fdinfo of map {name}"))?;
        let field = |key: &str| -> anyhow::Result<u64> {
            let v = text
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .with_context(|| format!("no `{key}` in fdinfo of map {name}"))?
                .trim();
            // map_flags is hexadecimal (0x…), the others decimal.
            Ok(match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16)?,
                None => v.parse()?,
            })
        };
        Ok(Self {
            name: name.to_owned(),
            map_type: field("map_type")?,
            max_entries: field("max_entries")?,
            key_size: field("key_size")?,
            value_size: field("value_size")?,
            flags: field("map_flags")?,
            memlock: field("memlock")?,
        })
    }

    fn json(&self) -> Value {
        json!({
            "map_type": self.map_type,
            "max_entries": self.max_entries,
            "key_size": self.key_size,
            "value_size": self.value_size,
            "map_flags": format!("{:#x}", self.flags),
            "memlock": self.memlock,
        })
    }
}

/// The pinned maps of the agent whose pins are under `pin_dir`, and every ring the
/// outer ring array points at.
struct Accounting {
    pinned: Vec<MapMem>,
    rings: Vec<MapMem>,
}

impl Accounting {
    fn read(pin_dir: &Path) -> anyhow::Result<Self> {
        let mut pinned = Vec::new();
        for name in lb_common::maps::SPECS.iter().map(|spec| spec.name) {
            let path = pin_dir.join("maps").join(name);
            let map =
                MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
            pinned.push(MapMem::of(name, &map)?);
        }
        let outer = Rings::open(pin_dir)?;
        let mut rings = Vec::new();
        for vip_id in 0..lb_common::service::MAX_VIPS {
            if let Some(ring) = outer.ring(vip_id)? {
                rings.push(MapMem::of(&format!("ring of VIP id {vip_id}"), &ring)?);
            }
        }
        Ok(Self { pinned, rings })
    }

    fn total(&self) -> u64 {
        self.pinned
            .iter()
            .chain(&self.rings)
            .map(|m| m.memlock)
            .sum()
    }

    fn map(&self, name: &str) -> anyhow::Result<&MapMem> {
        self.pinned
            .iter()
            .find(|m| m.name == name)
            .with_context(|| format!("no map {name}"))
    }
}

/// One agent run: its RSS (median of samples, in KiB, and the samples) and its maps.
struct Run {
    /// Seconds from starting the agent until its admin socket answered.
    start_s: f64,
    rss_kb: f64,
    samples_kb: Vec<u64>,
    healthy: u64,
    maps: Accounting,
}

/// A configuration of `vips` VIPs, each with its own group of 4 health-checked targets.
fn config(vips: u32, checked: bool) -> String {
    // Health checks off unless `checked`: see the module docs.
    let check = if checked {
        "protocol = \"tcp\"\ninterval_secs = 1\ntimeout_secs = 1\n\
         healthy_threshold = 2\nunhealthy_threshold = 2"
    } else {
        "enabled = false"
    };
    let mut text = agent_toml();
    for v in 0..vips {
        let address = Ipv4Addr::new(198, 18, 200, 1 + v as u8);
        text += &vip_toml(&format!("v{v}"), address, &format!("g{v}"));
    }
    for v in 0..vips {
        let targets: Vec<Ipv4Addr> = (0..4).map(|i| target(4 * v, i)).collect();
        text += &group_toml(&format!("g{v}"), &targets, check);
    }
    text
}

/// Writes the configuration of `vips` VIPs and starts an agent on it, without waiting.
/// Returns when it did.
fn spawn(host: &mut Host, vips: u32, checked: bool) -> anyhow::Result<Instant> {
    let path = host.write_config(&format!("memory-{vips}.toml"), &config(vips, checked))?;
    host.spawn_agent(&path)?;
    Ok(Instant::now())
}

/// Measures the agent [`spawn`] started on `host`, then stops it.
fn measure(
    host: &mut Host,
    vips: u32,
    spawned: Instant,
    sample_for: Duration,
    progress: Progress<'_>,
) -> anyhow::Result<Run> {
    let pid = host.wait_agent()?;
    // When this was called after the agent came up, an upper bound.
    let start_s = spawned.elapsed().as_secs_f64();
    progress(&format!(
        "{vips} VIP(s): agent answering {start_s:.1} s after it was started"
    ));
    let targets = u64::from(4 * vips);
    // Checked targets turning healthy make the agent re-install every ring (see the
    // module docs): allow for it.
    let deadline = Instant::now() + Duration::from_secs(40);
    let healthy = |host: &Host| -> anyhow::Result<u64> {
        Ok(host.ctl(&["status"])?["targets"]["healthy"]
            .as_u64()
            .unwrap_or(0))
    };
    let waited = Instant::now();
    let mut n = healthy(host)?;
    while n < targets && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        host.drain_log();
        n = healthy(host)?;
    }
    progress(&format!(
        "{vips} VIP(s): {n}/{targets} targets healthy after {:.1} s more",
        waited.elapsed().as_secs_f64()
    ));
    std::thread::sleep(Duration::from_secs(1));
    let mut samples = Vec::new();
    let end = Instant::now() + sample_for;
    while Instant::now() < end {
        samples.push(rss_kb(pid)?);
        std::thread::sleep(Duration::from_millis(250));
    }
    host.drain_log();
    let maps = Accounting::read(&host.pin_dir())?;
    ensure!(
        maps.rings.len() == vips as usize,
        "{} rings installed for {vips} VIPs",
        maps.rings.len()
    );
    let rss = median(samples.iter().map(|&kb| kb as f64).collect());
    progress(&format!(
        "{vips} VIP(s), {n}/{targets} targets healthy: agent RSS {:.1} MiB, BPF maps {:.1} MiB",
        rss / 1024.0,
        maps.total() as f64 / (1 << 20) as f64
    ));
    host.stop_agent()?;
    Ok(Run {
        start_s,
        rss_kb: rss,
        samples_kb: samples,
        healthy: n,
        maps,
    })
}

/// Measures this section; see the module docs. About 15 s quick, 30 s full.
pub fn run(quick: bool, progress: Progress<'_>) -> anyhow::Result<Value> {
    let sample_for = Duration::from_secs(if quick { 2 } else { 5 });
    // Two hosts, so that the 1-VIP baseline is measured while the 100-VIP agent is still
    // starting (it fills 100 rings of 65,537 slots first, which takes most of this
    // section's time). Neither figure depends on the other agent's CPU use.
    let mut big = Host::new("lbb-mem100")?;
    let mut small = Host::new("lbb-mem1")?;
    let big_spawned = spawn(&mut big, 100, false)?;
    // Full runs only: the same 100 VIPs with health checks on, in a third host.
    let mut checked = if quick {
        None
    } else {
        let mut host = Host::new("lbb-memhc")?;
        let spawned = spawn(&mut host, 100, true)?;
        Some((host, spawned))
    };
    let small_spawned = spawn(&mut small, 1, false)?;
    let one = measure(&mut small, 1, small_spawned, sample_for, progress)?;
    drop(small);
    let hundred = measure(&mut big, 100, big_spawned, sample_for, progress)?;
    drop(big);
    let hundred_checked = match checked.as_mut() {
        Some((host, spawned)) => {
            progress("100 VIPs with health checks on:");
            Some(measure(host, 100, *spawned, sample_for, progress)?)
        }
        None => None,
    };
    drop(checked);

    let flows = hundred.maps.map(lb_common::maps::FLOWS)?;
    let per_flow = flows.memlock as f64 / flows.max_entries.max(1) as f64;
    let per_vip = (hundred.maps.total() as f64 - one.maps.total() as f64) / 99.0;
    let ring = hundred.maps.rings.first().context("no ring")?;
    let reserved_per_vip: f64 = [
        lb_common::maps::VIPS,
        lb_common::maps::RINGS,
        lb_common::maps::VIP_STATS,
    ]
    .iter()
    .map(|name| {
        let m = hundred.maps.map(name)?;
        Ok(m.memlock as f64 / m.max_entries.max(1) as f64)
    })
    .sum::<anyhow::Result<f64>>()?;
    let round2 = |x: f64| (x * 100.0).round() / 100.0;
    let mib = |kb: f64| (kb / 1024.0 * 100.0).round() / 100.0;
    let maps_json = |a: &Accounting| -> Value {
        let mut m: JsonMap<String, Value> = a
            .pinned
            .iter()
            .map(|x| (x.name.clone(), x.json()))
            .collect();
        m.insert(
            "rings".into(),
            json!({
                "count": a.rings.len(),
                "memlock_total": a.rings.iter().map(|r| r.memlock).sum::<u64>(),
                "each": a.rings.first().map(MapMem::json),
            }),
        );
        Value::Object(m)
    };
    progress(&format!(
        "{per_flow:.1} bytes per flow-table entry, {per_vip:.0} bytes per further VIP, {:.1} MiB of BPF maps in all",
        hundred.maps.total() as f64 / (1 << 20) as f64
    ));
    let mut out = json!({
        "agent_rss_mb_100_vips": mib(hundred.rss_kb),
        "agent_rss_mb_1_vip": mib(one.rss_kb),
        "bpf_bytes_per_flow": (per_flow * 10.0).round() / 10.0,
        "bpf_bytes_per_vip": per_vip.round(),
        "bpf_bytes_total": hundred.maps.total(),
        "bpf_bytes_total_1_vip": one.maps.total(),
        "bpf_ring_bytes": ring.memlock,
        "bpf_bytes_reserved_per_vip_slot": reserved_per_vip.round(),
        "detail": {
            "rss_samples_kb_1_vip": one.samples_kb,
            "rss_samples_kb_100_vips": hundred.samples_kb,
            "healthy_targets": {"1_vip": one.healthy, "100_vips": hundred.healthy},
            "agent_start_s": {"1_vip": round2(one.start_s), "100_vips": round2(hundred.start_s)},
            "flow_table": {
                "max_entries": flows.max_entries,
                "memlock": flows.memlock,
                "map_type": flows.map_type,
                "map_flags": format!("{:#x}", flows.flags),
                // BPF_MAP_TYPE_PERCPU_HASH, _PERCPU_ARRAY, _LRU_PERCPU_HASH.
                "per_cpu": matches!(flows.map_type, 5 | 6 | 10),
                "note": "BPF_MAP_TYPE_LRU_HASH (9) is one table shared by all CPUs; BPF_F_NO_COMMON_LRU (0x2) gives each CPU its own LRU list, not its own entries",
            },
            "maps_100_vips": maps_json(&hundred.maps),
            "maps_1_vip": maps_json(&one.maps),
            "method": "agent RSS = VmRSS (/proc/<pid>/status) median over the sampling window, MiB; BPF bytes = `memlock` of /proc/self/fdinfo/<fd> for each pinned map and each VIP's ring (inner map of LB_RING_V1); per flow = flow map memlock / max_entries; per VIP = (total at 100 VIPs - total at 1 VIP) / 99",
        }
    });
    if let Some(r) = &hundred_checked {
        out["agent_rss_mb_100_vips_health_checked"] = json!(mib(r.rss_kb));
        out["detail"]["health_checked_100_vips"] = json!({
            "rss_samples_kb": r.samples_kb,
            "healthy": r.healthy,
            "agent_start_s": round2(r.start_s),
        });
    }
    Ok(out)
}
