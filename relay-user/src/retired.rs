//! Maps an older build pinned that this one replaced ([`RETIRED`]). An upgrade must neither
//! fail on them nor lose what they hold: before the load, what can be read of them is taken
//! and their pins removed; after the load, it goes into the maps that replaced them.
//!
//! Four so far. The hash of legs (`RELAY_LEGS`), replaced by the array `LEGS` indexed by
//! port: each leg moves to its port's slot, so calls keep flowing across the upgrade. The
//! hash of single-address bans (`BANS`), replaced by the prefix tries
//! `BANS_V4`/`BANS_V6` (each of its bans becomes a host prefix, /32 or /128, with the same
//! expiry and reason); and the per-CPU leg counters without RTP loss state (`RELAY_COUNTERS`),
//! replaced by `LEG_COUNTERS` (each CPU's counts carried over, loss counting starting afresh:
//! a live call keeps its packet counts and, above all, its last-seen time, which the media
//! timeout reads); and that per-CPU hash of leg counters (`LEG_COUNTERS`), replaced by the
//! per-CPU array `LEG_STATS` indexed by port (each CPU's counters move to its port's slot).

use std::{fs, net::IpAddr, path::Path};

use aya::{
    Ebpf,
    maps::{
        Array, HashMap, LpmTrie, Map, MapData, MapInfo, PerCpuArray, PerCpuHashMap, PerCpuValues,
        lpm_trie::Key,
    },
};
use relay_common::{
    Addr,
    fw::{BanEntry, BanV4, BanV6},
    maps::{
        self as names, RETIRED, RETIRED_BANS, RETIRED_LEG_COUNTERS, RETIRED_RELAY_COUNTERS,
        RETIRED_RELAY_LEGS,
    },
    relay::{LEG_PRESENT, Leg, LegCounters, LegKey},
};
use tracing::{info, warn};

use crate::Cidr;

/// What was read from retired pins, to be written into the new maps.
#[derive(Debug, Default)]
pub(crate) struct Carried {
    bans: Vec<(Cidr, BanEntry)>,
    /// Per leg port, each CPU's counters.
    counters: Vec<(u16, Vec<LegCounters>)>,
    legs: Vec<Leg>,
}

/// Reads and unpins every retired map under `dir`. A pin that cannot be read is still removed
/// (with a warning): keeping it would not let anyone read it either.
pub(crate) fn take(dir: &Path) -> Carried {
    let mut out = Carried::default();
    for l in RETIRED {
        let path = dir.join(l.name);
        if !path.exists() {
            continue;
        }
        if l.name == RETIRED_BANS {
            match read_bans(&path, l.key_size, l.value_size) {
                Ok(b) => out.bans = b,
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "retired ban map unreadable; its bans are lost from the kernel (sipd applies its stored ones again)")
                }
            }
        }
        if l.name == RETIRED_RELAY_COUNTERS {
            match read_counters(&path, l.key_size, l.value_size) {
                Ok(c) => out.counters.extend(c),
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "retired leg counters unreadable; live calls' counts start again from zero")
                }
            }
        }
        if l.name == RETIRED_LEG_COUNTERS {
            match read_leg_counters(&path, l.key_size, l.value_size) {
                Ok(c) => out.counters.extend(c),
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "retired leg counters unreadable; live calls' counts start again from zero")
                }
            }
        }
        if l.name == RETIRED_RELAY_LEGS {
            match read_legs(&path, l.key_size, l.value_size) {
                Ok(legs) => out.legs = legs,
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "retired leg hash unreadable; the kernel relays no call until sipd programs its legs again")
                }
            }
        }
        match fs::remove_file(&path) {
            Ok(()) => info!(path = %path.display(), "retired map unpinned"),
            Err(e) => warn!(path = %path.display(), error = %e, "retired map pin not removed"),
        }
    }
    out
}

/// The pinned map at `path`, if its key and value have the sizes stated.
fn open_sized(path: &Path, key: u32, value: u32) -> Result<MapData, String> {
    let info = MapInfo::from_pin(path).map_err(|e| e.to_string())?;
    if (info.key_size(), info.value_size()) != (key, value) {
        return Err(format!(
            "key/value size {:?}, expected {:?}",
            (info.key_size(), info.value_size()),
            (key, value)
        ));
    }
    MapData::from_pin(path).map_err(|e| e.to_string())
}

type OldCounters = Vec<(u16, Vec<LegCounters>)>;

/// The counters without RTP loss state: four u64 per CPU, the head of `LegCounters`.
fn read_counters(path: &Path, key: u32, value: u32) -> Result<OldCounters, String> {
    let data = open_sized(path, key, value)?;
    let map: PerCpuHashMap<MapData, LegKey, [u64; 4]> =
        PerCpuHashMap::try_from(Map::PerCpuHashMap(data)).map_err(|e| e.to_string())?;
    let grown = |&[packets, bytes, last_seen_ns, strict_drops]: &[u64; 4]| LegCounters {
        packets,
        bytes,
        last_seen_ns,
        strict_drops,
        ..LegCounters::default()
    };
    Ok(map
        .iter()
        .filter_map(Result::ok)
        .map(|(k, v)| (k.port, v.iter().map(grown).collect()))
        .collect())
}

fn read_leg_counters(path: &Path, key: u32, value: u32) -> Result<OldCounters, String> {
    let data = open_sized(path, key, value)?;
    let map: PerCpuHashMap<MapData, LegKey, LegCounters> =
        PerCpuHashMap::try_from(Map::PerCpuHashMap(data)).map_err(|e| e.to_string())?;
    Ok(map
        .iter()
        .filter_map(Result::ok)
        .map(|(k, v)| (k.port, v.iter().copied().collect()))
        .collect())
}

fn read_legs(path: &Path, key: u32, value: u32) -> Result<Vec<Leg>, String> {
    let data = open_sized(path, key, value)?;
    let map: HashMap<MapData, LegKey, Leg> =
        HashMap::try_from(Map::HashMap(data)).map_err(|e| e.to_string())?;
    Ok(map.iter().filter_map(Result::ok).map(|(_, l)| l).collect())
}

fn read_bans(path: &Path, key: u32, value: u32) -> Result<Vec<(Cidr, BanEntry)>, String> {
    let data = open_sized(path, key, value)?;
    let map: HashMap<MapData, Addr, BanEntry> =
        HashMap::try_from(Map::HashMap(data)).map_err(|e| e.to_string())?;
    Ok(map
        .iter()
        .filter_map(Result::ok)
        .map(|(a, e)| (Cidr::host(IpAddr::from(a)), e))
        .collect())
}

/// Writes what [`take`] carried into the freshly loaded maps.
pub(crate) fn restore(ebpf: &mut Ebpf, carried: Carried) {
    restore_counters(ebpf, carried.counters);
    restore_bans(ebpf, carried.bans);
    restore_legs(ebpf, carried.legs);
}

fn restore_legs(ebpf: &mut Ebpf, legs: Vec<Leg>) {
    if legs.is_empty() {
        return;
    }
    let Some(map) = ebpf.map_mut(names::RELAY_LEGS) else {
        return;
    };
    let mut map: Array<_, Leg> = match Array::try_from(map) {
        Ok(m) => m,
        Err(e) => {
            warn!(error = %e, "legs not carried over");
            return;
        }
    };
    let (mut moved, mut failed) = (0usize, 0usize);
    for mut leg in legs {
        leg.flags |= LEG_PRESENT;
        match map.set(u32::from(leg.local_port), leg, 0) {
            Ok(()) => moved += 1,
            Err(err) => {
                failed += 1;
                warn!(port = leg.local_port, error = %err, "leg not carried over");
            }
        }
    }
    info!(moved, failed, "legs of the retired hash carried into LEGS");
}

fn restore_counters(ebpf: &mut Ebpf, old: OldCounters) {
    if old.is_empty() {
        return;
    }
    let Some(map) = ebpf.map_mut(names::RELAY_COUNTERS) else {
        return;
    };
    let mut map: PerCpuArray<_, LegCounters> = match PerCpuArray::try_from(map) {
        Ok(m) => m,
        Err(e) => {
            warn!(error = %e, "leg counters not carried over");
            return;
        }
    };
    let (mut moved, mut failed) = (0usize, 0usize);
    for (port, cpus) in old {
        let r = PerCpuValues::try_from(cpus)
            .map_err(|e| e.to_string())
            .and_then(|v| map.set(u32::from(port), v, 0).map_err(|e| e.to_string()));
        match r {
            Ok(()) => moved += 1,
            Err(err) => {
                failed += 1;
                warn!(port, error = %err, "leg counters not carried over");
            }
        }
    }
    info!(
        moved,
        failed, "leg counters of the retired map carried into LEG_STATS"
    );
}

fn restore_bans(ebpf: &mut Ebpf, bans: Vec<(Cidr, BanEntry)>) {
    if bans.is_empty() {
        return;
    }
    let (mut moved, mut failed) = (0usize, 0usize);
    for (cidr, mut e) in bans {
        e.prefix_len = u32::from(cidr.prefix_len());
        let len = e.prefix_len;
        let r = match cidr.addr() {
            IpAddr::V4(a) => ebpf
                .map_mut(names::BANS_V4)
                .ok_or("BANS_V4 missing".to_string())
                .and_then(|m| LpmTrie::<_, BanV4, BanEntry>::try_from(m).map_err(|e| e.to_string()))
                .and_then(|mut t| {
                    t.insert(&Key::new(len, a.octets()), e, 0)
                        .map_err(|e| e.to_string())
                }),
            IpAddr::V6(a) => ebpf
                .map_mut(names::BANS_V6)
                .ok_or("BANS_V6 missing".to_string())
                .and_then(|m| LpmTrie::<_, BanV6, BanEntry>::try_from(m).map_err(|e| e.to_string()))
                .and_then(|mut t| {
                    t.insert(&Key::new(len, a.octets()), e, 0)
                        .map_err(|e| e.to_string())
                }),
        };
        match r {
            Ok(()) => moved += 1,
            Err(err) => {
                failed += 1;
                warn!(prefix = %cidr, error = %err, "ban from the retired map not carried over");
            }
        }
    }
    info!(
        moved,
        failed, "bans of the retired address map carried into the prefix tries"
    );
}
