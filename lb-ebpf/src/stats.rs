//! Per-CPU counters. Layouts and indices come from `lb_common::stats`.

use aya_ebpf::maps::PerCpuArray;
use lb_common::{Counter, DropReason, Event, TrafficClass, Verdict};

use crate::maps::{BACKEND_STATS, DROPS, EVENTS, TRAFFIC, VERDICTS, VIP_STATS};

#[inline(always)]
fn add(map: &PerCpuArray<Counter>, index: u32, bytes: u64) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot is only written by this CPU, and XDP does not preempt itself.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

#[inline(always)]
pub fn count_verdict(verdict: Verdict, bytes: u64) {
    add(&VERDICTS, verdict as u32, bytes);
}

#[inline(always)]
pub fn count_traffic(class: TrafficClass, bytes: u64) {
    add(&TRAFFIC, class as u32, bytes);
}

#[inline(always)]
pub fn count_drop(reason: DropReason, bytes: u64) {
    add(&DROPS, reason as u32, bytes);
}

#[inline(always)]
pub fn count_event(event: Event, bytes: u64) {
    add(&EVENTS, event as u32, bytes);
}

/// Counts a packet for its VIP and backend; `new_flow` and `reset` add to those columns.
#[inline(always)]
pub fn count_service(vip_id: u32, backend_id: u32, bytes: u64, new_flow: bool, reset: bool) {
    let n = new_flow as u64;
    if let Some(c) = VIP_STATS.get_ptr_mut(vip_id) {
        // SAFETY: per-CPU slot, see `add`.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
            (*c).new_flows += n;
            (*c).resets += reset as u64;
        }
    }
    if let Some(c) = BACKEND_STATS.get_ptr_mut(backend_id) {
        // SAFETY: per-CPU slot, see `add`.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
            (*c).new_flows += n;
        }
    }
}

/// Counts a packet for its VIP only (dropped before a backend was chosen).
#[inline(always)]
pub fn count_vip(vip_id: u32, bytes: u64) {
    if let Some(c) = VIP_STATS.get_ptr_mut(vip_id) {
        // SAFETY: per-CPU slot, see `add`.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}
