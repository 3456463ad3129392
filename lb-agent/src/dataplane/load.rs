//! Loading the eBPF object: fresh ([`Dataplane::load_with`]) or adopting the maps a
//! previous agent pinned ([`Dataplane::load_pinned`]). Every map is checked against
//! lb-common's table of map specs ([`lb_common::maps::SPECS`]) before anything reads or
//! writes it: the pinned maps before they are adopted, the object's maps once loaded.

use std::path::PathBuf;

use aya::{
    maps::{Map, MapData, MapError, MapInfo},
    Ebpf, EbpfLoader,
};
use lb_common::maps::{self, MapSpec};
use tracing::warn;

use super::{ensure_bpffs, xdp_program, Dataplane, DataplaneError, PinLayout};

/// Options fixed when the object is loaded.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Flow-table capacity (entries; memory is preallocated, about 100 bytes each).
    pub flow_entries: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            flow_entries: lb_common::flow::DEFAULT_FLOW_ENTRIES,
        }
    }
}

impl Dataplane {
    /// Loads `object` into the kernel with default options and checks that its maps have
    /// the layout this agent was built for. Nothing is attached yet.
    pub fn load(object: &[u8]) -> Result<Self, DataplaneError> {
        Self::load_with(object, &LoadOptions::default())
    }

    /// [`Dataplane::load`] with explicit options. Writes the default runtime config, so
    /// the program is usable (with no VIPs) as soon as it is attached.
    pub fn load_with(object: &[u8], options: &LoadOptions) -> Result<Self, DataplaneError> {
        let ebpf = EbpfLoader::new()
            .map_max_entries(maps::FLOWS, options.flow_entries)
            .load(object)?;
        let mut dp = Self::checked(ebpf)?;
        dp.set_config(&lb_common::LbConfig::default())?;
        Ok(dp)
    }

    /// Loads `object` with every map pinned under `layout`: maps a previous agent pinned
    /// are reused as they are (flow table, counters, VIPs, rings), after checking that
    /// each has the layout this agent expects; missing ones are created and pinned. The
    /// flow table keeps its pinned capacity (a different `options.flow_entries` is
    /// reported and ignored: resizing would drop every flow).
    pub fn load_pinned(
        object: &[u8],
        options: &LoadOptions,
        layout: &PinLayout,
    ) -> Result<(Self, bool), DataplaneError> {
        ensure_bpffs()?;
        let maps_dir = layout.dir().join("maps");
        std::fs::create_dir_all(&maps_dir).map_err(|source| DataplaneError::Fs {
            what: "creating",
            path: maps_dir.clone(),
            source,
        })?;
        let pinned = check_pinned(layout, options.flow_entries)?;
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(maps::FLOWS, pinned.flow_entries);
        let paths: Vec<(&'static str, PathBuf)> = maps::SPECS
            .iter()
            .map(|spec| (spec.name, layout.map(spec.name)))
            .collect();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut dp = Self::checked(loader.load(object)?)?;
        if !pinned.adopted {
            dp.set_config(&lb_common::LbConfig::default())?;
        }
        dp.pins = Some(layout.clone());
        Ok((dp, pinned.adopted))
    }

    /// Checks a freshly loaded object's maps, then loads its XDP program (the verifier).
    fn checked(mut ebpf: Ebpf) -> Result<Self, DataplaneError> {
        check_maps(&ebpf)?;
        xdp_program(&mut ebpf)?
            .load()
            .map_err(|source| DataplaneError::Program {
                action: "loading the XDP program (verifier)",
                source,
            })?;
        Ok(Self {
            ebpf,
            attachment: None,
            pins: None,
        })
    }
}

/// What a previous agent left pinned.
struct Pinned {
    /// Whether any map was pinned (then they are adopted, and the runtime config with them).
    adopted: bool,
    /// The flow table's capacity to load with: the pinned table's, if there is one.
    flow_entries: u32,
}

/// Checks every pinned map under `layout` against its spec: key size, and the value size
/// and entry count where the spec fixes them. A mismatch means a different lb version
/// pinned it; nothing is adopted then.
fn check_pinned(layout: &PinLayout, flow_entries: u32) -> Result<Pinned, DataplaneError> {
    let mut pinned = Pinned {
        adopted: false,
        flow_entries,
    };
    for spec in maps::SPECS {
        let name = spec.name;
        let path = layout.map(name);
        if !path.exists() {
            continue;
        }
        pinned.adopted = true;
        let info =
            MapInfo::from_pin(&path).map_err(|source| DataplaneError::Map { name, source })?;
        check_pinned_map(spec, &info, path)?;
        if name == maps::FLOWS && info.max_entries() != flow_entries {
            warn!(
                pinned = info.max_entries(),
                configured = flow_entries,
                "keeping the pinned flow table's size; `lb-agent down` and a restart resize it (and drop every flow)"
            );
            pinned.flow_entries = info.max_entries();
        }
    }
    Ok(pinned)
}

/// One pinned map against its spec (its type is not compared: the versioned name says it).
fn check_pinned_map(spec: &MapSpec, info: &MapInfo, path: PathBuf) -> Result<(), DataplaneError> {
    let (key, value, entries) = (spec.key_size, spec.value_size, spec.max_entries);
    let actual = (info.key_size(), info.value_size(), info.max_entries());
    let fits = actual.0 == key
        && value.is_none_or(|v| v == actual.1)
        && entries.is_none_or(|e| e == actual.2);
    if fits {
        return Ok(());
    }
    Err(DataplaneError::PinnedLayout {
        name: spec.name,
        path,
        found: format!("key {} value {} entries {}", actual.0, actual.1, actual.2),
        expected: format!("key {key} value {value:?} entries {entries:?}"),
    })
}

/// Every map the ABI names must exist, with the type, key and value sizes and entry counts
/// its spec gives. A mismatch means object and agent disagree on the ABI; loading stops
/// before anything is attached.
fn check_maps(ebpf: &Ebpf) -> Result<(), DataplaneError> {
    for spec in maps::SPECS {
        ebpf.map(spec.name)
            .ok_or(DataplaneError::MissingMap(spec.name))?;
    }
    for spec in maps::SPECS {
        let name = spec.name;
        let map = ebpf.map(name).ok_or(DataplaneError::MissingMap(name))?;
        let info = map_data(map)
            .info()
            .map_err(|source| DataplaneError::Map { name, source })?;
        check_loaded_map(spec, &info).map_err(|source| DataplaneError::Map { name, source })?;
        if let Some(expected) = spec.max_entries.filter(|&e| e != info.max_entries()) {
            return Err(DataplaneError::MapShape {
                name,
                expected,
                actual: info.max_entries(),
            });
        }
    }
    Ok(())
}

/// A loaded map's type, key and value size against its spec, reported as aya reports a
/// typed map of the wrong shape.
fn check_loaded_map(spec: &MapSpec, info: &MapInfo) -> Result<(), MapError> {
    let map_type = info.map_type()? as u32;
    if map_type != spec.kind as u32 {
        return Err(MapError::InvalidMapType { map_type });
    }
    if info.key_size() != spec.key_size {
        return Err(MapError::InvalidKeySize {
            size: spec.key_size as usize,
            expected: info.key_size() as usize,
        });
    }
    if let Some(size) = spec.value_size.filter(|&v| v != info.value_size()) {
        return Err(MapError::InvalidValueSize {
            size: size as usize,
            expected: info.value_size() as usize,
        });
    }
    Ok(())
}

/// The kernel map behind any [`Map`] (aya offers no accessor; every variant holds one).
pub(super) fn map_data(map: &Map) -> &MapData {
    match map {
        Map::Array(m)
        | Map::ArrayOfMaps(m)
        | Map::BloomFilter(m)
        | Map::CgroupArray(m)
        | Map::CgroupStorage(m)
        | Map::CgrpStorage(m)
        | Map::CpuMap(m)
        | Map::DevMap(m)
        | Map::DevMapHash(m)
        | Map::HashMap(m)
        | Map::HashOfMaps(m)
        | Map::InodeStorage(m)
        | Map::LpmTrie(m)
        | Map::LruHashMap(m)
        | Map::PerCpuArray(m)
        | Map::PerCpuCgroupStorage(m)
        | Map::PerCpuHashMap(m)
        | Map::PerCpuLruHashMap(m)
        | Map::PerfEventArray(m)
        | Map::ProgramArray(m)
        | Map::Queue(m)
        | Map::ReusePortSockArray(m)
        | Map::RingBuf(m)
        | Map::SockHash(m)
        | Map::SockMap(m)
        | Map::SkStorage(m)
        | Map::Stack(m)
        | Map::StackTraceMap(m)
        | Map::Unsupported(m)
        | Map::XskMap(m) => m,
    }
}
