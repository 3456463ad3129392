//! Per-CPU counters. Layouts and indices come from `lb_common::stats`.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use lb_common::{Counter, TrafficClass, Verdict};

// Names must equal `lb_common::maps::*` (the macro needs a literal); the agent checks
// every name in `lb_common::maps::ALL` exists when it loads the object.
#[map(name = "LB_VERDICT_V1")]
static VERDICTS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Verdict::COUNT, 0);

#[map(name = "LB_TRAFFIC_V1")]
static TRAFFIC: PerCpuArray<Counter> = PerCpuArray::with_max_entries(TrafficClass::COUNT, 0);

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
