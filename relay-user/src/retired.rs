//! Maps an older build pinned that this one replaced ([`RETIRED`]). An upgrade must neither
//! fail on them nor lose what they hold: before the load, what can be read of them is taken
//! and their pins removed; after the load, it goes into the maps that replaced them.
//!
//! Today one: the hash of single-address bans (`BANS`), replaced by the prefix tries
//! `BANS_V4`/`BANS_V6`. Each of its bans becomes a host prefix (/32, or /128) with the same
//! expiry and reason.

use std::{fs, net::IpAddr, path::Path};

use aya::{
    Ebpf,
    maps::{HashMap, LpmTrie, Map, MapData, MapInfo, lpm_trie::Key},
};
use relay_common::{
    Addr,
    fw::{BanEntry, BanV4, BanV6},
    maps::{self as names, RETIRED, RETIRED_BANS},
};
use tracing::{info, warn};

use crate::Cidr;

/// What was read from retired pins, to be written into the new maps.
#[derive(Debug, Default)]
pub(crate) struct Carried {
    bans: Vec<(Cidr, BanEntry)>,
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
        match fs::remove_file(&path) {
            Ok(()) => info!(path = %path.display(), "retired map unpinned"),
            Err(e) => warn!(path = %path.display(), error = %e, "retired map pin not removed"),
        }
    }
    out
}

fn read_bans(path: &Path, key: u32, value: u32) -> Result<Vec<(Cidr, BanEntry)>, String> {
    let info = MapInfo::from_pin(path).map_err(|e| e.to_string())?;
    if (info.key_size(), info.value_size()) != (key, value) {
        return Err(format!(
            "key/value size {:?}, expected {:?}",
            (info.key_size(), info.value_size()),
            (key, value)
        ));
    }
    let data = MapData::from_pin(path).map_err(|e| e.to_string())?;
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
    if carried.bans.is_empty() {
        return;
    }
    let (mut moved, mut failed) = (0usize, 0usize);
    for (cidr, mut e) in carried.bans {
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
