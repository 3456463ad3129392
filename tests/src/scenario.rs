//! A configured data plane in a namespace whose FIB can answer for it: the setting for
//! the forwarding fixtures and the mutation fuzzer.
//!
//! ```text
//!   namespace <prefix>-lb                         namespace <prefix>-peer
//!   fx0 198.18.2.1/24 2001:2:0:2::1/64  ── veth ──  fxp0
//!   fx2 198.18.3.1/24 2001:2:0:3::1/64  ── veth ──  fxp2
//! ```
//! Backends are static neighbour entries on fx0 (and one on fx2, reached by
//! `XDP_REDIRECT`). The production program is attached to fx0 (which also registers the
//! receive queue that `BPF_PROG_TEST_RUN` with an ingress ifindex needs). Everything is
//! configured through the agent's `Dataplane` methods, and rings are built by the
//! agent's Maglev builder.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Context as _;
use lb_agent::{
    dataplane::{AttachMode, Dataplane},
    maglev,
};
use lb_common::{
    service::{addr16, backend_flags, mode, vip_flags, PROTO_TCP, PROTO_UDP},
    Backend, FlowKey, LbConfig, VipKey, VipMeta,
};

use crate::{
    netns::{Ns, Topology},
    production_dataplane,
};

/// Ring size for fixtures: prime, and > 100 × the largest backend set here.
pub const RING: u32 = 1021;

/// One backend of the scenario.
#[derive(Clone, Debug)]
pub struct Be {
    pub id: u32,
    pub addr: IpAddr,
    /// The MAC its neighbour entry holds (None: no neighbour entry on purpose).
    pub mac: Option<[u8; 6]>,
    /// Egress interface: false = fx0 (XDP_TX), true = fx2 (XDP_REDIRECT).
    pub via_fx2: bool,
}

/// One VIP of the scenario.
#[derive(Clone, Debug)]
pub struct Vip {
    pub name: &'static str,
    pub key: VipKey,
    pub meta: VipMeta,
    /// Backend ids in this VIP's ring (empty: no backends).
    pub backends: Vec<u32>,
    pub table: maglev::Table,
}

pub struct Scenario {
    pub topo: Topology,
    pub lb: Ns,
    pub dp: Dataplane,
    pub fx0: u32,
    pub fx2: u32,
    pub fx0_mac: [u8; 6],
    pub fx2_mac: [u8; 6],
    pub cfg: LbConfig,
    pub backends: Vec<Be>,
    pub vips: Vec<Vip>,
}

fn key(addr: IpAddr, port: u16, proto: u8) -> VipKey {
    let (addr, family) = addr16(addr);
    VipKey {
        addr,
        port: port.to_be(),
        proto,
        family,
    }
}

/// Addresses and ports of the scenario's VIPs, for building fixtures.
pub mod addrs {
    use super::*;
    pub const DR4: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 18, 100, 1), 80);
    pub const TUN4: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 18, 100, 2), 53);
    pub const DR6: (Ipv6Addr, u16) = (Ipv6Addr::new(0x2001, 2, 0, 0x100, 0, 0, 0, 1), 443);
    pub const TUN6: (Ipv6Addr, u16) = (Ipv6Addr::new(0x2001, 2, 0, 0x100, 0, 0, 0, 2), 53);
    /// Port 0: every TCP port; tunnelled 4in6.
    pub const ANY4: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 3);
    pub const GUE4: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 18, 100, 4), 9000);
    pub const GUE_PORT: u16 = 6080;
    pub const EMPTY4: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 18, 100, 5), 80);
    pub const FRAG4: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 18, 100, 6), 5000);
    pub const REDIR4: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 18, 100, 7), 80);
    pub const NONEIGH4: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 18, 100, 8), 80);
    pub const STICKY4: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 18, 100, 9), 80);
    pub const TUN6IN4: (Ipv6Addr, u16) = (Ipv6Addr::new(0x2001, 2, 0, 0x100, 0, 0, 0, 3), 80);
}

impl Scenario {
    /// Builds the namespaces, loads and attaches the production program, and configures
    /// every VIP. `prefix` must be unique per test (tests run in parallel).
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let mut topo = Topology::new(prefix)?;
        let lb = topo.add_ns("lb")?;
        let peer = topo.add_ns("peer")?;
        topo.veth(&lb, "fx0", &peer, "fxp0")?;
        topo.veth(&lb, "fx2", &peer, "fxp2")?;
        lb.addr("fx0", "198.18.2.1/24")?;
        lb.addr("fx0", "2001:2:0:2::1/64")?;
        lb.addr("fx2", "198.18.3.1/24")?;
        lb.addr("fx2", "2001:2:0:3::1/64")?;
        // bpf_fib_lookup answers only for interfaces that forward.
        lb.sysctl("net.ipv4.conf.all.forwarding", "1")?;
        lb.sysctl("net.ipv6.conf.all.forwarding", "1")?;

        let mut backends = Vec::new();
        let mut id = 0;
        for i in 0..3u8 {
            backends.push(Be {
                id,
                addr: IpAddr::V4(Ipv4Addr::new(198, 18, 2, 11 + i)),
                mac: Some([0x02, 0, 0, 0, 0x04, 0x11 + i]),
                via_fx2: false,
            });
            id += 1;
        }
        for i in 0..3u8 {
            backends.push(Be {
                id,
                addr: IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 0x11 + i as u16)),
                mac: Some([0x02, 0, 0, 0, 0x06, 0x11 + i]),
                via_fx2: false,
            });
            id += 1;
        }
        backends.push(Be {
            id,
            addr: IpAddr::V4(Ipv4Addr::new(198, 18, 3, 11)),
            mac: Some([0x02, 0, 0, 0, 0x03, 0x11]),
            via_fx2: true,
        });
        id += 1;
        backends.push(Be {
            id,
            addr: IpAddr::V4(Ipv4Addr::new(198, 18, 2, 99)),
            mac: None,
            via_fx2: false,
        });
        for b in &backends {
            let Some(mac) = b.mac else { continue };
            let mac = crate::netns::mac_text(mac);
            let dev = if b.via_fx2 { "fx2" } else { "fx0" };
            lb.ip(&[
                "neigh",
                "replace",
                &b.addr.to_string(),
                "lladdr",
                &mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ])?;
        }

        let mut dp = production_dataplane()?;
        lb.enter(|| dp.attach("fx0", AttachMode::Native))??;
        let fx0 = lb.ifindex("fx0")?;
        let fx2 = lb.ifindex("fx2")?;
        // Device-map entries name an ifindex in the caller's network namespace.
        lb.enter(|| dp.add_tx_port(fx2))??;
        let cfg = dp.config()?;

        let v4s = vec![0, 1, 2];
        let v6s = vec![3, 4, 5];
        use addrs::*;
        let vip = |name, key, mode_, flags, gue_port: u16, backends: Vec<u32>| {
            (name, key, mode_, flags, gue_port, backends)
        };
        let specs = vec![
            vip(
                "dr4",
                key(DR4.0.into(), DR4.1, PROTO_TCP),
                mode::DR,
                0,
                0,
                v4s.clone(),
            ),
            vip(
                "tun4",
                key(TUN4.0.into(), TUN4.1, PROTO_UDP),
                mode::TUNNEL,
                0,
                0,
                v4s.clone(),
            ),
            vip(
                "dr6",
                key(DR6.0.into(), DR6.1, PROTO_TCP),
                mode::DR,
                0,
                0,
                v6s.clone(),
            ),
            vip(
                "tun6",
                key(TUN6.0.into(), TUN6.1, PROTO_UDP),
                mode::TUNNEL,
                0,
                0,
                v6s.clone(),
            ),
            vip(
                "any4",
                key(ANY4.into(), 0, PROTO_TCP),
                mode::TUNNEL,
                0,
                0,
                v6s.clone(),
            ),
            vip(
                "gue4",
                key(GUE4.0.into(), GUE4.1, PROTO_UDP),
                mode::GUE,
                0,
                GUE_PORT,
                v4s.clone(),
            ),
            vip(
                "empty4",
                key(EMPTY4.0.into(), EMPTY4.1, PROTO_TCP),
                mode::DR,
                0,
                0,
                vec![],
            ),
            vip(
                "frag4",
                key(FRAG4.0.into(), FRAG4.1, PROTO_UDP),
                mode::DR,
                vip_flags::FRAG_ROUTE,
                0,
                v4s.clone(),
            ),
            vip(
                "redir4",
                key(REDIR4.0.into(), REDIR4.1, PROTO_TCP),
                mode::DR,
                0,
                0,
                vec![6],
            ),
            vip(
                "noneigh4",
                key(NONEIGH4.0.into(), NONEIGH4.1, PROTO_TCP),
                mode::DR,
                0,
                0,
                vec![7],
            ),
            vip(
                "sticky4",
                key(STICKY4.0.into(), STICKY4.1, PROTO_TCP),
                mode::DR,
                vip_flags::HASH_SRC_ONLY,
                0,
                v4s.clone(),
            ),
            vip(
                "tun6in4",
                key(TUN6IN4.0.into(), TUN6IN4.1, PROTO_TCP),
                mode::TUNNEL,
                0,
                0,
                v4s.clone(),
            ),
        ];

        for b in &backends {
            let (addr, family) = addr16(b.addr);
            dp.set_backend(
                b.id,
                &Backend {
                    addr,
                    family,
                    flags: backend_flags::IN_USE,
                    _pad: [0; 2],
                },
            )?;
        }

        let mut vips = Vec::new();
        for (vip_id, (name, key, mode_, flags, gue_port, ids)) in specs.into_iter().enumerate() {
            let members: Vec<maglev::Backend> = ids
                .iter()
                .map(|&id| maglev::Backend::for_target(id, backends[id as usize].addr, 1))
                .collect();
            let table = maglev::build(&members, RING, cfg.hash_seed).context("building a ring")?;
            dp.install_ring(vip_id as u32, table.slots())?;
            let meta = VipMeta {
                vip_id: vip_id as u32,
                flags,
                mode: mode_,
                _pad: 0,
                gue_port: gue_port.to_be(),
                ring_size: RING,
            };
            dp.set_vip(&key, &meta)?;
            // The fragment entry of this address and protocol (see FAMILY_FRAG_KEY).
            dp.set_vip(&key.fragment_key(), &meta)?;
            vips.push(Vip {
                name,
                key,
                meta,
                backends: ids,
                table,
            });
        }

        Ok(Self {
            fx0_mac: lb.mac("fx0")?,
            fx2_mac: lb.mac("fx2")?,
            topo,
            lb,
            dp,
            fx0,
            fx2,
            cfg,
            backends,
            vips,
        })
    }

    pub fn vip(&self, name: &str) -> &Vip {
        self.vips
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no VIP named {name} in the scenario"))
    }

    /// The backend the control plane says `key` goes to on `vip` (ring only; the flow
    /// table agrees for any flow it learned from this ring).
    pub fn expected_backend(&self, vip: &Vip, key: &FlowKey) -> Option<&Be> {
        let hash = lb_common::hash::flow_hash(key, vip.meta.flags, self.cfg.hash_seed);
        let id = vip.table.slots()[(hash % vip.table.size()) as usize];
        self.backends.iter().find(|b| b.id == id)
    }

    /// Rebuilds and installs VIP `name`'s ring with these (backend id, weight) pairs, as
    /// the agent does on a weight change; weight 0 quiesces a backend.
    pub fn set_weights(&mut self, name: &str, weights: &[(u32, u32)]) -> anyhow::Result<()> {
        let members: Vec<maglev::Backend> = weights
            .iter()
            .map(|&(id, w)| maglev::Backend::for_target(id, self.backends[id as usize].addr, w))
            .collect();
        let table = maglev::build(&members, RING, self.cfg.hash_seed).context("building a ring")?;
        let i = self
            .vips
            .iter()
            .position(|v| v.name == name)
            .with_context(|| format!("no VIP named {name}"))?;
        self.dp
            .install_ring(self.vips[i].meta.vip_id, table.slots())?;
        self.vips[i].table = table;
        Ok(())
    }

    /// Changes the runtime config (flood guard, UDP idle time, …).
    pub fn set_config(&mut self, cfg: LbConfig) -> anyhow::Result<()> {
        self.dp.set_config(&cfg)?;
        self.cfg = cfg;
        Ok(())
    }
}
