//! Which backend: VIP match, then the flow table, then the VIP's Maglev ring.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use lb_common::{
    flow::{FLOW_CLOSING, TCP_REFRESH_NS},
    service::{backend_flags, mode, vip_flags, FAMILY_FRAG_KEY, PROTO_TCP, PROTO_UDP},
    Backend, DropReason, Event, FlowKey, FlowValue, LbConfig, VipKey, VipMeta, NO_BACKEND,
};

use crate::{
    maps::{BACKENDS, FLOOD, FLOWS, RINGS, VIPS},
    parse::{Frag, Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    stats::count_event,
};

/// The VIP a packet is addressed to: exact port first, then the VIP's port-0 ("every
/// port") entry. A later fragment has no ports and uses the fragment entry.
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "a key passed by value is copied onto the 512-byte BPF stack"
)]
pub fn vip_for(pkt: &Packet) -> Option<VipMeta> {
    let mut key = VipKey {
        addr: pkt.key.dst,
        port: pkt.key.dport,
        proto: pkt.key.proto,
        family: pkt.key.family,
    };
    if pkt.frag == Frag::Later {
        key.port = 0;
        key.family |= FAMILY_FRAG_KEY;
        // SAFETY: the value is copied out before any other map operation.
        return unsafe { VIPS.get(&key) }.copied();
    }
    // SAFETY: as above.
    if let Some(meta) = unsafe { VIPS.get(&key) } {
        return Some(*meta);
    }
    key.port = 0;
    // SAFETY: as above.
    unsafe { VIPS.get(&key) }.copied()
}

/// The coarse clock (CLOCK_MONOTONIC_COARSE, a tick of 1-10 ms) is all the idle timeouts,
/// the TCP activity stamp, the flood window and the next-hop cache need, at a fraction of
/// the precise clock's cost. The agent reads the stamps against CLOCK_MONOTONIC.
#[inline(always)]
fn coarse_now() -> u64 {
    // SAFETY: a helper without arguments or side effects.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The backend chosen for a packet.
pub struct Choice {
    pub backend_id: u32,
    pub backend: Backend,
    /// The flow hash (also feeds tunnel outer headers, so a backend's NIC spreads flows).
    pub hash: u32,
    /// A flow the flow table did not know (counted as a new flow).
    pub new_flow: bool,
    /// The coarse monotonic clock when the choice was made (read once per packet; the
    /// next-hop cache uses it too).
    pub now: u64,
}

#[inline(always)]
fn backend(id: u32) -> Result<Backend, DropReason> {
    if id == NO_BACKEND {
        return Err(DropReason::NoBackend);
    }
    match BACKENDS.get(id) {
        Some(b) if b.flags & backend_flags::IN_USE != 0 => Ok(*b),
        _ => Err(DropReason::BadBackend),
    }
}

/// The ring's pick for `hash`.
#[inline(always)]
pub fn ring_pick(vip: &VipMeta, hash: u32) -> Result<u32, DropReason> {
    if vip.ring_size == 0 {
        return Err(DropReason::NoBackend);
    }
    let slot = hash % vip.ring_size;
    match RINGS.get_value(vip.vip_id, &slot) {
        Some(id) => Ok(*id),
        None => Err(DropReason::NoBackend),
    }
}

/// Flow table, then ring. TCP SYN always re-hashes (a reused tuple is a new connection);
/// RST never creates an entry; UDP entries idle past the configured time are ignored;
/// above the per-CPU new-flow rate, new flows are forwarded by hash without an entry.
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "a key passed by value is copied onto the 512-byte BPF stack"
)]
pub fn choose(
    pkt: &Packet,
    vip: &VipMeta,
    cfg: &LbConfig,
    bytes: u64,
) -> Result<Choice, DropReason> {
    let flow_hash = || lb_common::hash::flow_hash(&pkt.key, vip.flags, cfg.hash_seed);
    let now = coarse_now();

    // Fragment routing hashes (source, destination, protocol) only, for every packet of
    // the VIP; a flow table keyed on ports cannot serve it, so it is bypassed.
    if vip.flags & vip_flags::FRAG_ROUTE != 0 {
        if pkt.frag != Frag::No {
            count_event(Event::FragmentRouted, bytes);
        }
        let hash = flow_hash();
        let id = ring_pick(vip, hash)?;
        return Ok(Choice {
            backend_id: id,
            backend: backend(id)?,
            hash,
            new_flow: false,
            now,
        });
    }

    let tcp = pkt.key.proto == PROTO_TCP;
    let syn = tcp && pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;

    if let Some(entry) = FLOWS.get_ptr_mut(&pkt.key) {
        // SAFETY: the pointer is valid for this program run; a concurrent update of the
        // same entry on another CPU can at worst give a torn `last_seen_ns`, which only
        // affects expiry by one packet.
        let entry = unsafe { &mut *entry };
        let idle = now.wrapping_sub(entry.last_seen_ns & !FLOW_CLOSING);
        let expired = pkt.key.proto == PROTO_UDP && idle > cfg.udp_idle_ns;
        if syn {
            count_event(Event::SynRehash, bytes);
        } else if entry.vip_id != vip.vip_id || expired {
            count_event(Event::FlowStale, bytes);
        } else if let Ok(b) = backend(entry.backend_id) {
            if pkt.key.proto == PROTO_UDP {
                entry.last_seen_ns = now;
            } else {
                // TCP: the agent's active-flow estimate needs the time to the second and
                // whether the client is closing; writing it on every packet would bounce
                // the entry's cache line between CPUs for nothing.
                let closing = if pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
                    FLOW_CLOSING
                } else {
                    entry.last_seen_ns & FLOW_CLOSING
                };
                if idle > TCP_REFRESH_NS || closing != entry.last_seen_ns & FLOW_CLOSING {
                    entry.last_seen_ns = now | closing;
                }
            }
            count_event(Event::FlowHit, bytes);
            // Only tunnels use the hash (outer source, flow label, GUE port): direct
            // routing of an established flow skips computing it.
            let hash = if vip.mode == mode::DR { 0 } else { flow_hash() };
            return Ok(Choice {
                backend_id: entry.backend_id,
                backend: b,
                hash,
                new_flow: false,
                now,
            });
        } else {
            // The backend was removed since: re-hash onto the current ring.
            count_event(Event::FlowStale, bytes);
        }
    }

    let hash = flow_hash();
    let id = ring_pick(vip, hash)?;
    let b = backend(id)?;
    if tcp && pkt.tcp_flags & TCP_RST != 0 {
        count_event(Event::RstNoEntry, bytes);
    } else if throttled(cfg, now) {
        count_event(Event::FlowThrottled, bytes);
    } else {
        let value = FlowValue {
            backend_id: id,
            vip_id: vip.vip_id,
            last_seen_ns: now,
        };
        // An LRU insert only fails on allocation trouble; the packet is still forwarded
        // by hash, which is what the flow table would have said anyway.
        if FLOWS.insert(&pkt.key, &value, 0).is_ok() {
            count_event(Event::FlowNew, bytes);
        }
    }
    Ok(Choice {
        backend_id: id,
        backend: b,
        hash,
        new_flow: true,
        now,
    })
}

/// The backend an existing flow uses, without learning anything: the flow table's entry
/// if it is current, else the ring. Used for ICMP errors that quote a VIP flow, which
/// must reach that flow's backend but never create or refresh an entry.
#[inline(always)]
pub fn existing(key: &FlowKey, vip: &VipMeta, cfg: &LbConfig) -> Result<Choice, DropReason> {
    let hash = lb_common::hash::flow_hash(key, vip.flags, cfg.hash_seed);
    let now = coarse_now();
    if vip.flags & vip_flags::FRAG_ROUTE == 0 {
        // SAFETY: the value is copied out before any other map operation.
        if let Some(entry) = unsafe { FLOWS.get(key) } {
            if entry.vip_id == vip.vip_id {
                if let Ok(b) = backend(entry.backend_id) {
                    return Ok(Choice {
                        backend_id: entry.backend_id,
                        backend: b,
                        hash,
                        new_flow: false,
                        now,
                    });
                }
            }
        }
    }
    let id = ring_pick(vip, hash)?;
    Ok(Choice {
        backend_id: id,
        backend: backend(id)?,
        hash,
        new_flow: false,
        now,
    })
}

/// The VIP for a flow key (destination = the VIP), exact port then port 0.
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "a key passed by value is copied onto the 512-byte BPF stack"
)]
pub fn vip_for_key(flow: &FlowKey) -> Option<VipMeta> {
    let mut key = VipKey {
        addr: flow.dst,
        port: flow.dport,
        proto: flow.proto,
        family: flow.family,
    };
    // SAFETY: the value is copied out before any other map operation.
    if let Some(meta) = unsafe { VIPS.get(&key) } {
        return Some(*meta);
    }
    key.port = 0;
    // SAFETY: as above.
    unsafe { VIPS.get(&key) }.copied()
}

/// Flood guard: at most `max_new_flows_per_cpu` flow-table inserts per second per CPU.
#[inline(always)]
fn throttled(cfg: &LbConfig, now: u64) -> bool {
    if cfg.max_new_flows_per_cpu == 0 {
        return false;
    }
    let Some(w) = FLOOD.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU slot, written only by this CPU.
    let w = unsafe { &mut *w };
    if now.wrapping_sub(w.window_start_ns) >= 1_000_000_000 {
        w.window_start_ns = now;
        w.new_flows = 0;
    }
    if w.new_flows >= cfg.max_new_flows_per_cpu as u64 {
        return true;
    }
    w.new_flows += 1;
    false
}
