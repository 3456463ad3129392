//! Announcing VIPs to the network: which VIP addresses this host wants routed to it, and
//! the kernel routes a routing daemon (BIRD, FRR) turns into BGP announcements.
//!
//! lb speaks no routing protocol. For every VIP address it wants announced it keeps one
//! host route (`blackhole <vip>/32` or `/128`, protocol [`RTPROT_LB`]) in a routing table
//! of its own (`[announce] table`, default 100, which no `ip rule` uses, so the routes
//! never forward anything); deleting the route withdraws the VIP. The routing daemon
//! learns that table and exports it (examples/bird-host.conf, docs/fleet.md). Routes are
//! kernel state like the pinned data plane: an agent that stops or crashes withdraws
//! nothing, and the next one reconciles the table with what it wants ([`kernel`]).
//!
//! The route's metric carries this host's *route tag* ([`route_tag`]: the low 30 bits of
//! the fleet fingerprint, see `install::fingerprint`), so the daemon can attach it to the
//! announcement (a BGP large community) and the upstream router shows which tables the
//! hosts behind each path run. Bit 30 ([`STANDBY_BIT`]) marks a *standby* route.
//!
//! What each VIP wants ([`decide`]), in order:
//! - `never`: withdrawn.
//! - the operator withdrew the host (`ctl withdraw`, or `down` before detaching), or the
//!   XDP program is not attached: withdrawn.
//! - `always`: announced.
//! - `healthy`: announced while its target group has at least `min_healthy` healthy
//!   targets; below that, **standby**: still announced, but marked so that the routing
//!   daemon makes it less preferred (the example prepends the AS path), so the router
//!   uses it only while no host announces the VIP normally. That is fail-open across
//!   hosts: a host whose checks fail moves its traffic to the hosts whose checks pass,
//!   and when every host sees the targets unhealthy, every host keeps its standby route
//!   and the VIP stays reachable (each host then fails open in its data plane, as an AWS
//!   NLB does when all targets are unhealthy), rather than the whole fleet withdrawing
//!   it because of a health check that may be wrong. With `[announce] standby = false`
//!   (for a daemon that cannot de-prefer a route) the route is withdrawn instead.
//!
//! A VIP that was standby or withdrawn is announced normally again only once its group's
//! healthy targets have not changed for one health-check interval (*settling*). Targets
//! recover one by one, a second or so apart: a host announcing at the first would hold a
//! ring of that one target while the other hosts' rings have them all, and the flows the
//! router moves onto it would change target. Going the other way (announced to standby
//! or withdrawn) is immediate.
//!
//! A route is per address while VIPs are per (address, port, protocol): an address is
//! announced when any of its VIPs is, standby when the best any of them wants is standby.

pub mod kernel;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, fmt, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::config::AnnouncePolicy;

/// The route protocol (`rtm_protocol`) of lb's routes: `proto 108` in `ip route`,
/// `krt_source = 108` in BIRD. Only routes of this protocol in the announce table are
/// ever changed or deleted by lb.
pub const RTPROT_LB: u8 = 108;
/// Set in the metric of a standby route.
pub const STANDBY_BIT: u32 = 1 << 30;
const TAG_MASK: u32 = STANDBY_BIT - 1;

/// The route tag of a fleet fingerprint: its low 30 bits, never 0 (IPv6 turns metric 0
/// into 1024). It stays below 2^30 so that tag plus [`STANDBY_BIT`] is a positive 32-bit
/// signed integer, which is what BIRD's filters compute with.
pub fn route_tag(fingerprint: u64) -> u32 {
    match (fingerprint as u32) & TAG_MASK {
        0 => 1,
        tag => tag,
    }
}

/// What a VIP, or an address, has in the announce table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteState {
    /// No route.
    Withdrawn,
    /// A route the router uses only when no host announces the address normally.
    Standby,
    /// A route.
    Announced,
}

impl RouteState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Withdrawn => "withdrawn",
            Self::Standby => "standby",
            Self::Announced => "announced",
        }
    }
}

impl fmt::Display for RouteState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The host-wide conditions of every announcement.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostState {
    /// The XDP program is attached (this host can forward).
    pub attached: bool,
    /// Why the operator withdrew every VIP (`ctl withdraw`, `down`), if they did.
    pub withdrawn: Option<String>,
}

/// One VIP's inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipInput {
    pub name: String,
    pub address: IpAddr,
    pub policy: AnnouncePolicy,
    pub min_healthy: u32,
    /// Targets of its group that are healthy now, and all of its group's targets.
    pub healthy: u32,
    pub targets: u32,
    /// Below `min_healthy`: a standby route (true) or none.
    pub standby: bool,
    /// The group's healthy targets changed less than this long ago, and the VIP was not
    /// announced normally before: it is not yet (see the module docs).
    pub settling: Option<std::time::Duration>,
}

/// What one VIP wants, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipDecision {
    pub name: String,
    pub address: IpAddr,
    pub policy: AnnouncePolicy,
    pub state: RouteState,
    pub reason: String,
}

/// What one address wants: the best of its VIPs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressDecision {
    pub state: RouteState,
    /// The names of the VIPs on the address, in configuration order.
    pub vips: Vec<String>,
    /// The reason of the VIP that decided the state.
    pub reason: String,
}

/// Every VIP's and every address's decision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decisions {
    pub vips: Vec<VipDecision>,
    pub addresses: BTreeMap<IpAddr, AddressDecision>,
}

impl Decisions {
    /// The routes these decisions want: each address announced or standby, with its
    /// metric (`tag`, plus [`STANDBY_BIT`] for standby).
    pub fn routes(&self, tag: u32) -> BTreeMap<IpAddr, u32> {
        self.addresses
            .iter()
            .filter_map(|(address, d)| match d.state {
                RouteState::Withdrawn => None,
                RouteState::Standby => Some((*address, tag | STANDBY_BIT)),
                RouteState::Announced => Some((*address, tag)),
            })
            .collect()
    }

    /// The decision of the VIP called `name`.
    pub fn vip(&self, name: &str) -> Option<&VipDecision> {
        self.vips.iter().find(|v| v.name == name)
    }
}

/// What every VIP of `vips` (in configuration order) and every address wants.
pub fn decide(host: &HostState, vips: &[VipInput]) -> Decisions {
    let mut out = Decisions::default();
    for vip in vips {
        let (state, reason) = decide_vip(host, vip);
        let entry = out
            .addresses
            .entry(vip.address)
            .or_insert_with(|| AddressDecision {
                state,
                vips: Vec::new(),
                reason: reason.clone(),
            });
        entry.vips.push(vip.name.clone());
        if state > entry.state {
            entry.state = state;
            entry.reason = reason.clone();
        }
        out.vips.push(VipDecision {
            name: vip.name.clone(),
            address: vip.address,
            policy: vip.policy,
            state,
            reason,
        });
    }
    out
}

fn decide_vip(host: &HostState, vip: &VipInput) -> (RouteState, String) {
    if vip.policy == AnnouncePolicy::Never {
        return (RouteState::Withdrawn, "policy never".to_owned());
    }
    if let Some(why) = &host.withdrawn {
        return (RouteState::Withdrawn, why.clone());
    }
    if !host.attached {
        return (
            RouteState::Withdrawn,
            "the XDP program is not attached".to_owned(),
        );
    }
    let health = format!(
        "{} of {} targets healthy, {} needed",
        vip.healthy, vip.targets, vip.min_healthy
    );
    let below = if vip.standby {
        RouteState::Standby
    } else {
        RouteState::Withdrawn
    };
    match vip.policy {
        AnnouncePolicy::Always => (RouteState::Announced, format!("policy always ({health})")),
        _ if vip.healthy >= vip.min_healthy => match vip.settling {
            None => (RouteState::Announced, health),
            Some(hold) => (
                below,
                format!(
                    "{health}, settling: announced once its targets' health has not changed for {} s",
                    hold.as_secs()
                ),
            ),
        },
        _ if !vip.standby => (below, format!("{health} (standby = false)")),
        _ => (
            below,
            format!("{health}: standby, used only while no host announces it normally"),
        ),
    }
}
