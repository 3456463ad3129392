//! Every map of the data plane. Names and value layouts come from `lb_common`; each name
//! is repeated here as a literal because the `#[map]` attribute takes nothing else, and
//! [`abi_map!`] checks at compile time that the literal is lb-common's constant.

use aya_ebpf::{
    btf_maps::{Array as BtfArray, ArrayOfMaps},
    macros::{btf_map, map},
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray},
};
use lb_common::{
    flow::{BPF_F_NO_COMMON_LRU, DEFAULT_FLOW_ENTRIES},
    maps::MAX_TX_PORTS,
    service::{BPF_F_INNER_MAP, DEFAULT_RING_SIZE, MAX_BACKENDS, MAX_VIPS},
    Backend, Counter, DropReason, Event, FloodWindow, FlowKey, FlowValue, LbConfig, ServiceCounter,
    TrafficClass, Verdict, VipKey, VipMeta,
};

/// A map of the ABI: a `static` named like its `lb_common::maps` constant, whose
/// `#[map(name = "…")]` (or `#[btf_map(…)]`) literal is asserted, at compile time, to equal
/// that constant. A typo then fails the build instead of the agent's load.
macro_rules! abi_map {
    ($(#[doc = $doc:literal])* #[map(name = $name:literal)] $($item:tt)*) => {
        abi_map!(@check $name, $($item)*);
        $(#[doc = $doc])*
        #[map(name = $name)]
        $($item)*
    };
    ($(#[doc = $doc:literal])* #[btf_map(name = $name:literal)] $($item:tt)*) => {
        abi_map!(@check $name, $($item)*);
        $(#[doc = $doc])*
        #[btf_map(name = $name)]
        $($item)*
    };
    (@check $name:literal, $vis:vis static $id:ident $($rest:tt)*) => {
        const _: () = assert!(
            lb_common::maps::name_eq($name, lb_common::maps::$id),
            concat!(
                "map ", stringify!($id), " is named ", $name,
                ", not lb_common::maps::", stringify!($id)
            ),
        );
    };
}
pub(crate) use abi_map;

abi_map! {
    #[map(name = "LB_VERDICT_V1")]
    pub static VERDICTS: PerCpuArray<Counter> =
        PerCpuArray::with_max_entries(Verdict::COUNT, 0);
}

abi_map! {
    #[map(name = "LB_TRAFFIC_V1")]
    pub static TRAFFIC: PerCpuArray<Counter> =
        PerCpuArray::with_max_entries(TrafficClass::COUNT, 0);
}

abi_map! {
    #[map(name = "LB_DROP_V1")]
    pub static DROPS: PerCpuArray<Counter> =
        PerCpuArray::with_max_entries(DropReason::COUNT, 0);
}

abi_map! {
    #[map(name = "LB_EVENT_V1")]
    pub static EVENTS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Event::COUNT, 0);
}

abi_map! {
    /// Twice `MAX_VIPS`: each VIP address/protocol also has a fragment entry (see `select`).
    #[map(name = "LB_VIP_V1")]
    pub static VIPS: HashMap<VipKey, VipMeta> = HashMap::with_max_entries(MAX_VIPS * 2, 0);
}

abi_map! {
    /// The Maglev rings: one inner array of backend ids per VIP id. The agent builds a new
    /// inner map completely and then swaps it in with one update of the outer slot, so a
    /// packet sees either the whole old ring or the whole new one.
    #[btf_map(name = "LB_RING_V1")]
    pub static RINGS: ArrayOfMaps<
        BtfArray<u32, { DEFAULT_RING_SIZE as usize }, { BPF_F_INNER_MAP as usize }>,
        { MAX_VIPS as usize },
    > = ArrayOfMaps::new();
}

abi_map! {
    #[map(name = "LB_BACKEND_V1")]
    pub static BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);
}

abi_map! {
    /// The agent sets the real capacity at load time.
    #[map(name = "LB_FLOW_V1")]
    pub static FLOWS: LruHashMap<FlowKey, FlowValue> =
        LruHashMap::with_max_entries(DEFAULT_FLOW_ENTRIES, BPF_F_NO_COMMON_LRU);
}

abi_map! {
    #[map(name = "LB_CONFIG_V1")]
    pub static CONFIG: Array<LbConfig> = Array::with_max_entries(1, 0);
}

abi_map! {
    #[map(name = "LB_VIP_STATS_V1")]
    pub static VIP_STATS: PerCpuArray<ServiceCounter> =
        PerCpuArray::with_max_entries(MAX_VIPS, 0);
}

abi_map! {
    #[map(name = "LB_BE_STATS_V1")]
    pub static BACKEND_STATS: PerCpuArray<ServiceCounter> =
        PerCpuArray::with_max_entries(MAX_BACKENDS, 0);
}

abi_map! {
    #[map(name = "LB_FLOOD_V1")]
    pub static FLOOD: PerCpuArray<FloodWindow> = PerCpuArray::with_max_entries(1, 0);
}

/// Scratch space for `bpf_fib_lookup`'s 64-byte parameter block, which would otherwise
/// take an eighth of the 512-byte BPF stack. Per CPU, so never shared mid-use; not part
/// of the ABI (nothing outside the program reads it, nothing pins it).
#[map(name = "LB_SCRATCH_FIB")]
pub static FIB_SCRATCH: PerCpuArray<aya_ebpf::bindings::bpf_fib_lookup> =
    PerCpuArray::with_max_entries(1, 0);

/// Next hops the FIB gave recently, per backend slot and CPU (see `forward::next_hop`).
/// Like the scratch slot, not part of the ABI: never pinned, empty after every load.
#[map(name = "LB_CACHE_NEXTHOP")]
pub static NEXT_HOPS: PerCpuArray<CachedHop> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// One cached FIB answer: valid for `addr` of `family` arriving on `ingress`, until
/// `expires_ns` (coarse monotonic clock).
#[repr(C)]
pub struct CachedHop {
    pub expires_ns: u64,
    pub addr: [u8; 16],
    pub ingress: u32,
    pub ifindex: u32,
    /// The route's MTU (the FIB reports it on success since Linux 5.12).
    pub mtu: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub family: u8,
    pub _pad: [u8; 7],
}

abi_map! {
    #[map(name = "LB_TX_PORTS_V1")]
    pub static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(MAX_TX_PORTS, 0);
}
