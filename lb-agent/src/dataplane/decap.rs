//! The backend side: `lb_decap`, for backends whose kernel cannot decapsulate lb's
//! tunnels (no ipip / fou modules, as on this project's test machines).
//!
//! It loads the same eBPF object as the load balancer but only the `lb_decap` program;
//! the load balancer's large maps are created at their smallest, since nothing uses them.

use std::net::IpAddr;

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::Xdp,
    Ebpf, EbpfLoader,
};
use lb_common::{
    decap::{DecapConfig, DecapEvent, DecapKey},
    maps, programs,
    service::{FAMILY_V4, FAMILY_V6},
    Counter,
};
use tracing::info;

use super::{test_run::run_xdp, AttachMode, DataplaneError, TestRunOutcome};

/// Loads `object` for programs other than `lb_xdp` (`lb_decap`, the benchmark's): the
/// load balancer's maps are in the object too, so they are made as small as the kernel
/// allows (an LRU map wants at least one entry per CPU).
pub fn load_without_lb_maps(object: &[u8]) -> Result<Ebpf, aya::EbpfError> {
    let mut loader = EbpfLoader::new();
    for name in [
        maps::VIPS,
        maps::RINGS,
        maps::BACKENDS,
        maps::VIP_STATS,
        maps::BACKEND_STATS,
    ] {
        loader.map_max_entries(name, 1);
    }
    loader.map_max_entries(maps::FLOWS, 1024);
    loader.load(object)
}

/// A loaded `lb_decap`, attached or not.
pub struct DecapPlane {
    ebpf: Ebpf,
    link: Option<aya::programs::xdp::XdpLinkId>,
}

impl DecapPlane {
    pub fn load(object: &[u8]) -> Result<Self, DataplaneError> {
        let mut ebpf = load_without_lb_maps(object)?;
        for &name in maps::DECAP_ALL {
            ebpf.map(name).ok_or(DataplaneError::MissingMap(name))?;
        }
        program(&mut ebpf)?
            .load()
            .map_err(|source| DataplaneError::Program {
                action: "loading lb_decap (verifier)",
                source,
            })?;
        Ok(Self { ebpf, link: None })
    }

    /// Decapsulates tunnel packets whose outer destination is `addr`.
    pub fn add_address(&mut self, addr: IpAddr) -> Result<(), DataplaneError> {
        let mut key = DecapKey::default();
        match addr {
            IpAddr::V4(a) => {
                key.family = FAMILY_V4;
                key.addr[..4].copy_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                key.family = FAMILY_V6;
                key.addr = a.octets();
            }
        }
        let name = maps::DECAP_ADDRS;
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(DataplaneError::MissingMap(name))?;
        let mut m = HashMap::<_, DecapKey, u32>::try_from(map)
            .map_err(|source| DataplaneError::Map { name, source })?;
        m.insert(key, 1, 0)
            .map_err(|source| DataplaneError::Map { name, source })
    }

    /// Accepts GUE on UDP port `port` (0 turns GUE off).
    pub fn set_gue_port(&mut self, port: u16) -> Result<(), DataplaneError> {
        let name = maps::DECAP_CONFIG;
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(DataplaneError::MissingMap(name))?;
        let mut m = Array::<_, DecapConfig>::try_from(map)
            .map_err(|source| DataplaneError::Map { name, source })?;
        let cfg = DecapConfig {
            gue_port: port.to_be(),
            _pad: [0; 2],
        };
        m.set(0, cfg, 0)
            .map_err(|source| DataplaneError::Map { name, source })
    }

    /// Attaches to `iface` in the calling thread's network namespace.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<(), DataplaneError> {
        let ifindex = nix::net::if_::if_nametoindex(iface)
            .map_err(|_| DataplaneError::NoSuchInterface(iface.to_owned()))?;
        let link = program(&mut self.ebpf)?
            .attach_to_if_index(ifindex, mode.xdp_mode())
            .map_err(|source| DataplaneError::Program {
                action: "attaching lb_decap",
                source,
            })?;
        info!(iface, ifindex, ?mode, "lb_decap attached");
        self.link = Some(link);
        Ok(())
    }

    /// Counters summed over CPUs, indexed by [`DecapEvent`].
    pub fn counters(&self) -> Result<[Counter; DecapEvent::COUNT as usize], DataplaneError> {
        let name = maps::DECAP_STATS;
        let map = self
            .ebpf
            .map(name)
            .ok_or(DataplaneError::MissingMap(name))?;
        let m = PerCpuArray::<&MapData, Counter>::try_from(map)
            .map_err(|source| DataplaneError::Map { name, source })?;
        let mut out = [Counter::default(); DecapEvent::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            let v = m
                .get(&(i as u32), 0)
                .map_err(|source| DataplaneError::Map { name, source })?;
            *slot = Counter::sum(v.iter());
        }
        Ok(out)
    }

    /// Runs `lb_decap` with `BPF_PROG_TEST_RUN` (see `Dataplane::test_run`).
    pub fn test_run(&self, input: &[u8], repeat: u32) -> Result<TestRunOutcome, DataplaneError> {
        run_xdp(&self.ebpf, programs::LB_DECAP, input, repeat, 0, None)
    }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, DataplaneError> {
    ebpf.program_mut(programs::LB_DECAP)
        .ok_or(DataplaneError::MissingProgram(programs::LB_DECAP))?
        .try_into()
        .map_err(|source| DataplaneError::Program {
            action: "finding lb_decap",
            source,
        })
}
