//! Reading the data plane's per-CPU counters, summed over CPUs.

use aya::maps::{MapData, PerCpuArray};
use lb_common::{maps, Counter, DropReason, Event, ServiceCounter, TrafficClass, Verdict};

use super::{Dataplane, DataplaneError};

/// Global counters summed over every CPU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Indexed by [`Verdict`].
    pub verdicts: [Counter; Verdict::COUNT as usize],
    /// Indexed by [`TrafficClass`].
    pub traffic: [Counter; TrafficClass::COUNT as usize],
    /// Indexed by [`DropReason`].
    pub drops: [Counter; DropReason::COUNT as usize],
    /// Indexed by [`Event`].
    pub events: [Counter; Event::COUNT as usize],
}

impl Counters {
    pub fn verdict(&self, v: Verdict) -> Counter {
        self.verdicts[v as usize]
    }
    pub fn traffic(&self, c: TrafficClass) -> Counter {
        self.traffic[c as usize]
    }
    pub fn drop(&self, r: DropReason) -> Counter {
        self.drops[r as usize]
    }
    pub fn event(&self, e: Event) -> Counter {
        self.events[e as usize]
    }
    /// `self - earlier`, slot by slot (counters only grow while the maps live).
    pub fn since(&self, earlier: &Counters) -> Counters {
        fn sub<const N: usize>(a: &[Counter; N], b: &[Counter; N]) -> [Counter; N] {
            core::array::from_fn(|i| Counter {
                packets: a[i].packets.wrapping_sub(b[i].packets),
                bytes: a[i].bytes.wrapping_sub(b[i].bytes),
            })
        }
        Counters {
            verdicts: sub(&self.verdicts, &earlier.verdicts),
            traffic: sub(&self.traffic, &earlier.traffic),
            drops: sub(&self.drops, &earlier.drops),
            events: sub(&self.events, &earlier.events),
        }
    }
}

impl Dataplane {
    /// Global counters summed over every CPU.
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        let mut out = Counters::default();
        self.read_counters(maps::VERDICTS, &mut out.verdicts)?;
        self.read_counters(maps::TRAFFIC, &mut out.traffic)?;
        self.read_counters(maps::DROPS, &mut out.drops)?;
        self.read_counters(maps::EVENTS, &mut out.events)?;
        Ok(out)
    }

    /// A VIP's counters summed over every CPU.
    pub fn vip_counters(&self, vip_id: u32) -> Result<ServiceCounter, DataplaneError> {
        self.service_counter(maps::VIP_STATS, vip_id)
    }

    /// A backend's counters summed over every CPU.
    pub fn backend_counters(&self, backend_id: u32) -> Result<ServiceCounter, DataplaneError> {
        self.service_counter(maps::BACKEND_STATS, backend_id)
    }

    fn service_counter(
        &self,
        name: &'static str,
        index: u32,
    ) -> Result<ServiceCounter, DataplaneError> {
        let map = self
            .ebpf
            .map(name)
            .ok_or(DataplaneError::MissingMap(name))?;
        let map = PerCpuArray::<&MapData, ServiceCounter>::try_from(map)
            .map_err(|source| DataplaneError::Map { name, source })?;
        let values = map
            .get(&index, 0)
            .map_err(|source| DataplaneError::Map { name, source })?;
        Ok(ServiceCounter::sum(values.iter()))
    }

    fn read_counters(&self, name: &'static str, out: &mut [Counter]) -> Result<(), DataplaneError> {
        let map = self
            .ebpf
            .map(name)
            .ok_or(DataplaneError::MissingMap(name))?;
        let map = PerCpuArray::<&MapData, Counter>::try_from(map)
            .map_err(|source| DataplaneError::Map { name, source })?;
        for (i, slot) in out.iter_mut().enumerate() {
            let values = map
                .get(&(i as u32), 0)
                .map_err(|source| DataplaneError::Map { name, source })?;
            *slot = Counter::sum(values.iter());
        }
        Ok(())
    }
}
