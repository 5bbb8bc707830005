//! The one gateway to the pinned BPF maps. Nothing else in the workspace touches a raw map:
//! every key and value is built here from std types, so a layout mistake has one place to live.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{
        Array, DevMapHash, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, PerCpuHashMap,
        PerCpuValues, RingBuf, lpm_trie::Key,
    },
};
use relay_common::{
    Addr,
    fw::{
        BanEntry, BanHitKey, BanHits, BanReason, BanV4, BanV6, DenyV4, DenyV6, SVC_PORT_WORDS,
        SVC_RESTRICTED, SVC_SIP, ServiceEntry, ServiceId, ServiceKey, SvcAllowV4, SvcAllowV6,
        svc_allow_prefix, svc_port_bit,
    },
    guard::{GuardConfig, GuardState, SessionCount},
    maps as names,
    relay::{LEG_PRESENT, Leg, LegCounters},
    stats::STATS_LEN,
};

use crate::{
    Cidr,
    clock::{duration_ns, monotonic_ns},
    error::DataPlaneError,
    types::{BanInfo, DenyRule, GuardSettings, Proto, Service, SourceSessions, SvcId},
};

type R<T> = Result<T, DataPlaneError>;

/// Every map of the XDP program, typed.
pub struct XdpMaps {
    bans_v4: LpmTrie<MapData, BanV4, BanEntry>,
    bans_v6: LpmTrie<MapData, BanV6, BanEntry>,
    deny_v4: LpmTrie<MapData, DenyV4, u32>,
    deny_v6: LpmTrie<MapData, DenyV6, u32>,
    services: HashMap<MapData, ServiceKey, ServiceEntry>,
    svc_ports: Array<MapData, u64>,
    allow_v4: LpmTrie<MapData, SvcAllowV4, u32>,
    allow_v6: LpmTrie<MapData, SvcAllowV6, u32>,
    guard_config: Array<MapData, GuardConfig>,
    guard_state: HashMap<MapData, Addr, GuardState>,
    sessions: HashMap<MapData, Addr, SessionCount>,
    guard_events: Option<RingBuf<MapData>>,
    legs: Array<MapData, Leg>,
    counters: PerCpuArray<MapData, LegCounters>,
    /// The ports with a leg in `LEGS`: read from it once when the maps are taken, then kept
    /// with every `leg_put`/`leg_remove`, so a listing of all legs' counters reads only theirs
    /// rather than 65,536 slots on each CPU.
    leg_ports: BTreeSet<u16>,
    tx_ports: DevMapHash<MapData>,
    stats: PerCpuArray<MapData, u64>,
    ban_hits: PerCpuHashMap<MapData, BanHitKey, BanHits>,
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> R<Map> {
    ebpf.take_map(name).ok_or(DataPlaneError::MissingMap(name))
}

macro_rules! typed {
    ($ebpf:expr, $name:expr) => {
        take($ebpf, $name)?
            .try_into()
            .map_err(DataPlaneError::map($name))?
    };
}

/// Sets or clears port `port`'s bit in `SVC_PORTS` (one writer: this process; the kernel only
/// reads it).
fn set_port_bit(map: &mut Array<MapData, u64>, port: u16, on: bool) -> R<()> {
    let (word, bit) = svc_port_bit(port);
    let old = map
        .get(&word, 0)
        .map_err(DataPlaneError::map(names::SVC_PORTS))?;
    let new = if on { old | bit } else { old & !bit };
    if new != old {
        map.set(word, new, 0).map_err(ins(names::SVC_PORTS))?;
    }
    Ok(())
}

/// Makes `SVC_PORTS` say exactly which ports `SERVICES` holds: at load, before the program is
/// attached, since the pinned hash may come from a build without the bitmap (or one an older
/// build changed since), and a missing bit would let a packet past its service's ACL.
pub(crate) fn sync_service_ports(ebpf: &mut Ebpf) -> R<()> {
    let mut want = vec![0u64; SVC_PORT_WORDS as usize];
    {
        let map = ebpf
            .map(names::SERVICES)
            .ok_or(DataPlaneError::MissingMap(names::SERVICES))?;
        let services: HashMap<&MapData, ServiceKey, ServiceEntry> =
            HashMap::try_from(map).map_err(DataPlaneError::map(names::SERVICES))?;
        for k in services.keys() {
            let k = k.map_err(DataPlaneError::map(names::SERVICES))?;
            let (word, bit) = svc_port_bit(k.port);
            if let Some(w) = want.get_mut(word as usize) {
                *w |= bit;
            }
        }
    }
    let map = ebpf
        .map_mut(names::SVC_PORTS)
        .ok_or(DataPlaneError::MissingMap(names::SVC_PORTS))?;
    let mut ports: Array<&mut MapData, u64> =
        Array::try_from(map).map_err(DataPlaneError::map(names::SVC_PORTS))?;
    for (i, &w) in (0u32..).zip(want.iter()) {
        let have = ports
            .get(&i, 0)
            .map_err(DataPlaneError::map(names::SVC_PORTS))?;
        if have != w {
            ports.set(i, w, 0).map_err(ins(names::SVC_PORTS))?;
        }
    }
    Ok(())
}

/// The leg a `RELAY_LEGS` slot holds, without the kernel's marker of a used slot.
fn from_slot(mut slot: Leg) -> Option<Leg> {
    if slot.flags & LEG_PRESENT == 0 {
        return None;
    }
    slot.flags &= !LEG_PRESENT;
    Some(slot)
}

/// ENOENT from a delete, or aya's not-found: "nothing there" rather than a failure.
fn not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// E2BIG (a hash) or ENOSPC (an LPM trie): the map is at capacity.
fn full(e: &MapError) -> bool {
    matches!(e, MapError::SyscallError(s)
        if matches!(s.io_error.raw_os_error(), Some(libc::E2BIG | libc::ENOSPC)))
}

fn ins(map: &'static str) -> impl FnOnce(MapError) -> DataPlaneError {
    move |e| {
        if full(&e) {
            DataPlaneError::Full(map)
        } else {
            DataPlaneError::Map { map, source: e }
        }
    }
}

/// Maps a lookup result to `Option`, keeping real failures.
fn opt<T>(r: Result<T, MapError>, map: &'static str) -> R<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(DataPlaneError::Map { map, source: e }),
    }
}

fn del(r: Result<(), MapError>, map: &'static str) -> R<bool> {
    opt(r, map).map(|o| o.is_some())
}

fn v4_bytes(c: &Cidr) -> Option<[u8; 4]> {
    match c.addr() {
        IpAddr::V4(a) => Some(a.octets()),
        IpAddr::V6(_) => None,
    }
}

fn v6_bytes(c: &Cidr) -> [u8; 16] {
    match c.addr() {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

pub(crate) fn ban_entry(
    prefix: Cidr,
    duration: Option<Duration>,
    reason: BanReason,
    now: u64,
) -> BanEntry {
    BanEntry {
        // A computed 0 would read as permanent; 1 ns later is indistinguishable otherwise.
        expires_ns: duration.map_or(BanEntry::PERMANENT, |d| {
            now.saturating_add(duration_ns(d)).max(1)
        }),
        reason: reason as u32,
        prefix_len: u32::from(prefix.prefix_len()),
    }
}

pub(crate) fn ban_info(prefix: Cidr, e: &BanEntry, now: u64) -> BanInfo {
    BanInfo {
        prefix,
        reason_code: e.reason,
        remaining: (e.expires_ns != BanEntry::PERMANENT)
            .then(|| Duration::from_nanos(e.expires_ns.saturating_sub(now))),
        expired: !e.is_active(now),
        hits: 0,
        last_hit_ns: 0,
    }
}

/// The `BAN_HITS` key of the ban of `prefix`.
fn ban_hit_key(prefix: &Cidr) -> BanHitKey {
    BanHitKey::of(&Addr::from(prefix.addr()), u32::from(prefix.prefix_len()))
}

/// One ban's hits summed over CPUs, the latest `last_ns`.
fn sum_hits<'a>(per_cpu: impl IntoIterator<Item = &'a BanHits>) -> BanHits {
    per_cpu
        .into_iter()
        .fold(BanHits::default(), |a, h| BanHits {
            hits: a.hits + h.hits,
            last_ns: a.last_ns.max(h.last_ns),
        })
}

fn with_hits(mut b: BanInfo, h: Option<&BanHits>) -> BanInfo {
    if let Some(h) = h {
        b.hits = h.hits;
        b.last_hit_ns = h.last_ns;
    }
    b
}

pub(crate) fn service_from(key: &ServiceKey, e: &ServiceEntry) -> Option<Service> {
    Some(Service {
        port: key.port,
        proto: Proto::from_number(key.proto)?,
        id: ServiceId::from_u32(e.service)?,
        restricted: e.flags & SVC_RESTRICTED != 0,
        sip: e.flags & SVC_SIP != 0,
    })
}

pub(crate) fn service_entry(s: &Service) -> (ServiceKey, ServiceEntry) {
    let mut flags = 0;
    if s.restricted {
        flags |= SVC_RESTRICTED;
    }
    if s.sip {
        flags |= SVC_SIP;
    }
    (
        ServiceKey::new(s.port, s.proto.number()),
        ServiceEntry {
            service: s.id as u32,
            flags,
        },
    )
}

impl XdpMaps {
    /// Takes every map out of a loaded (not necessarily attached) object.
    pub fn from_ebpf(ebpf: &mut Ebpf) -> R<Self> {
        let mut maps = XdpMaps {
            bans_v4: typed!(ebpf, names::BANS_V4),
            bans_v6: typed!(ebpf, names::BANS_V6),
            deny_v4: typed!(ebpf, names::DENY_V4),
            deny_v6: typed!(ebpf, names::DENY_V6),
            services: typed!(ebpf, names::SERVICES),
            svc_ports: typed!(ebpf, names::SVC_PORTS),
            allow_v4: typed!(ebpf, names::SVC_ALLOW_V4),
            allow_v6: typed!(ebpf, names::SVC_ALLOW_V6),
            guard_config: typed!(ebpf, names::GUARD_CONFIG),
            guard_state: typed!(ebpf, names::GUARD_STATE),
            sessions: typed!(ebpf, names::SESSIONS),
            guard_events: Some(typed!(ebpf, names::GUARD_EVENTS)),
            legs: typed!(ebpf, names::RELAY_LEGS),
            counters: typed!(ebpf, names::RELAY_COUNTERS),
            leg_ports: BTreeSet::new(),
            tx_ports: take(ebpf, names::TX_PORTS)?
                .try_into()
                .map_err(DataPlaneError::map(names::TX_PORTS))?,
            stats: typed!(ebpf, names::STATS),
            ban_hits: typed!(ebpf, names::BAN_HITS),
        };
        maps.leg_ports = maps.leg_list()?.iter().map(|l| l.local_port).collect();
        Ok(maps)
    }

    /// The ring buffer, for the one event reader. `None` once taken.
    pub fn take_guard_events(&mut self) -> Option<RingBuf<MapData>> {
        self.guard_events.take()
    }

    // ---- bans ----

    /// Bans `prefix` for `duration` (`None`: until removed). Replaces an existing ban of the
    /// same prefix. A full trie is [`DataPlaneError::Full`]: choosing what to give up is the
    /// caller's (sipd replaces the ban expiring soonest).
    pub fn ban_add(
        &mut self,
        prefix: Cidr,
        duration: Option<Duration>,
        reason: BanReason,
    ) -> R<()> {
        let e = ban_entry(prefix, duration, reason, monotonic_ns());
        self.ban_put(prefix, e)
    }

    /// Writes a ban entry as it is but for its prefix length (the loader's migration keeps
    /// the old expiry).
    pub(crate) fn ban_put(&mut self, prefix: Cidr, mut e: BanEntry) -> R<()> {
        let len = prefix.prefix_len() as u32;
        e.prefix_len = len;
        match v4_bytes(&prefix) {
            Some(b) => self
                .bans_v4
                .insert(&Key::new(len, b), e, 0)
                .map_err(ins(names::BANS_V4)),
            None => self
                .bans_v6
                .insert(&Key::new(len, v6_bytes(&prefix)), e, 0)
                .map_err(ins(names::BANS_V6)),
        }
    }

    /// Whether a ban of exactly this prefix was there to remove. Its kernel hit count goes
    /// with it (a later ban of the prefix starts from zero).
    pub fn ban_remove(&mut self, prefix: Cidr) -> R<bool> {
        let len = prefix.prefix_len() as u32;
        del(self.ban_hits.remove(&ban_hit_key(&prefix)), names::BAN_HITS)?;
        match v4_bytes(&prefix) {
            Some(b) => del(self.bans_v4.remove(&Key::new(len, b)), names::BANS_V4),
            None => del(
                self.bans_v6.remove(&Key::new(len, v6_bytes(&prefix))),
                names::BANS_V6,
            ),
        }
    }

    /// The ban of exactly this prefix (not a wider one holding it).
    pub fn ban_get(&self, prefix: Cidr) -> R<Option<BanInfo>> {
        let len = prefix.prefix_len() as u32;
        let e = match v4_bytes(&prefix) {
            Some(b) => opt(self.bans_v4.get(&Key::new(len, b), 0), names::BANS_V4)?,
            None => opt(
                self.bans_v6.get(&Key::new(len, v6_bytes(&prefix)), 0),
                names::BANS_V6,
            )?,
        };
        // A trie lookup is a longest-prefix match: a range holding this prefix answers too.
        // Only the entry of exactly this length is its ban.
        let Some(e) = e.filter(|e| e.prefix_len == len) else {
            return Ok(None);
        };
        let hits = opt(self.ban_hits.get(&ban_hit_key(&prefix), 0), names::BAN_HITS)?
            .map(|v| sum_hits(v.iter()));
        Ok(Some(with_hits(
            ban_info(prefix, &e, monotonic_ns()),
            hits.as_ref(),
        )))
    }

    /// What the kernel dropped for each ban that dropped anything, summed over CPUs: one walk
    /// of `BAN_HITS`.
    fn ban_hits_all(&self) -> std::collections::HashMap<BanHitKey, BanHits> {
        self.ban_hits
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k, sum_hits(v.iter())))
            .collect()
    }

    /// Every ban in both tries, expired ones not yet purged included, with what the kernel
    /// dropped for it.
    pub fn ban_list(&self) -> R<Vec<BanInfo>> {
        let now = monotonic_ns();
        let hits = self.ban_hits_all();
        let info =
            |c: Cidr, e: &BanEntry| with_hits(ban_info(c, e, now), hits.get(&ban_hit_key(&c)));
        let mut out = Vec::new();
        // An entry deleted while we iterate is not an error for a listing.
        for r in self.bans_v4.iter() {
            match r {
                Ok((k, e)) => {
                    if let Ok(c) = Cidr::new(IpAddr::from(k.data()), k.prefix_len() as u8) {
                        out.push(info(c, &e));
                    }
                }
                Err(e) if not_found(&e) => continue,
                Err(e) => return Err(DataPlaneError::map(names::BANS_V4)(e)),
            }
        }
        for r in self.bans_v6.iter() {
            match r {
                Ok((k, e)) => {
                    if let Ok(c) = Cidr::new(IpAddr::from(k.data()), k.prefix_len() as u8) {
                        out.push(info(c, &e));
                    }
                }
                Err(e) if not_found(&e) => continue,
                Err(e) => return Err(DataPlaneError::map(names::BANS_V6)(e)),
            }
        }
        Ok(out)
    }

    /// Deletes expired bans (the data plane already ignores them); returns how many.
    pub fn ban_purge_expired(&mut self) -> R<usize> {
        let mut n = 0;
        for b in self.ban_list()? {
            if b.expired && self.ban_remove(b.prefix)? {
                n += 1;
            }
        }
        Ok(n)
    }

    // ---- static deny ----

    /// Adds (or re-ids) a deny rule in `DENY_V4`/`DENY_V6`.
    pub fn deny_add(&mut self, cidr: Cidr, rule_id: u32) -> R<()> {
        let len = cidr.prefix_len() as u32;
        match v4_bytes(&cidr) {
            Some(b) => self
                .deny_v4
                .insert(&Key::new(len, b), rule_id, 0)
                .map_err(ins(names::DENY_V4)),
            None => self
                .deny_v6
                .insert(&Key::new(len, v6_bytes(&cidr)), rule_id, 0)
                .map_err(ins(names::DENY_V6)),
        }
    }

    /// Removes the deny rule of exactly this prefix; `false` when there was none.
    pub fn deny_remove(&mut self, cidr: Cidr) -> R<bool> {
        let len = cidr.prefix_len() as u32;
        match v4_bytes(&cidr) {
            Some(b) => del(self.deny_v4.remove(&Key::new(len, b)), names::DENY_V4),
            None => del(
                self.deny_v6.remove(&Key::new(len, v6_bytes(&cidr))),
                names::DENY_V6,
            ),
        }
    }

    /// Every deny rule in both tries.
    pub fn deny_list(&self) -> R<Vec<DenyRule>> {
        let mut out = Vec::new();
        for r in self.deny_v4.iter() {
            let (k, id) = r.map_err(DataPlaneError::map(names::DENY_V4))?;
            if let Ok(cidr) = Cidr::new(IpAddr::from(k.data()), k.prefix_len() as u8) {
                out.push(DenyRule { cidr, rule_id: id });
            }
        }
        for r in self.deny_v6.iter() {
            let (k, id) = r.map_err(DataPlaneError::map(names::DENY_V6))?;
            if let Ok(cidr) = Cidr::new(IpAddr::from(k.data()), k.prefix_len() as u8) {
                out.push(DenyRule { cidr, rule_id: id });
            }
        }
        out.sort_by_key(|r| r.cidr);
        Ok(out)
    }

    // ---- services ----

    /// Adds or replaces the service on its port and protocol in `SERVICES`.
    pub fn service_set(&mut self, s: Service) -> R<()> {
        let (k, v) = service_entry(&s);
        self.service_set_raw(k, v)
    }

    /// A service entry as the kernel keeps it (an operator-defined service's id included).
    pub fn service_set_raw(&mut self, k: ServiceKey, v: ServiceEntry) -> R<()> {
        // The port's bit first: between the two writes the program looks the port up in the
        // hash and still finds nothing, as before; the other order would skip a new service.
        set_port_bit(&mut self.svc_ports, k.port, true)?;
        self.services.insert(k, v, 0).map_err(ins(names::SERVICES))
    }

    /// Removes the service on `port`/`proto`; `false` when there was none.
    pub fn service_remove(&mut self, port: u16, proto: Proto) -> R<bool> {
        let removed = del(
            self.services.remove(&ServiceKey::new(port, proto.number())),
            names::SERVICES,
        )?;
        // The bit goes after the entry, and only with the port's last protocol.
        let other = if proto == Proto::Udp {
            Proto::Tcp
        } else {
            Proto::Udp
        };
        if opt(
            self.services.get(&ServiceKey::new(port, other.number()), 0),
            names::SERVICES,
        )?
        .is_none()
        {
            set_port_bit(&mut self.svc_ports, port, false)?;
        }
        Ok(removed)
    }

    /// Every service in `SERVICES`.
    pub fn service_list(&self) -> R<Vec<Service>> {
        let mut out: Vec<Service> = self
            .services
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, v)| service_from(&k, &v))
            .collect();
        out.sort_by_key(|s| (s.port, s.proto));
        Ok(out)
    }

    /// Adds `cidr` to `service`'s allow list (`SVC_ALLOW_V4`/`SVC_ALLOW_V6`).
    pub fn allow_add(&mut self, service: impl Into<SvcId>, cidr: Cidr) -> R<()> {
        let service = service.into().0;
        let len = svc_allow_prefix(cidr.prefix_len() as u32);
        match v4_bytes(&cidr) {
            Some(b) => self
                .allow_v4
                .insert(&Key::new(len, SvcAllowV4::new(service, b)), 1, 0)
                .map_err(ins(names::SVC_ALLOW_V4)),
            None => self
                .allow_v6
                .insert(
                    &Key::new(len, SvcAllowV6::new(service, v6_bytes(&cidr))),
                    1,
                    0,
                )
                .map_err(ins(names::SVC_ALLOW_V6)),
        }
    }

    /// Removes exactly this prefix from `service`'s allow list; `false` when it was not there.
    pub fn allow_remove(&mut self, service: impl Into<SvcId>, cidr: Cidr) -> R<bool> {
        let service = service.into().0;
        let len = svc_allow_prefix(cidr.prefix_len() as u32);
        match v4_bytes(&cidr) {
            Some(b) => del(
                self.allow_v4
                    .remove(&Key::new(len, SvcAllowV4::new(service, b))),
                names::SVC_ALLOW_V4,
            ),
            None => del(
                self.allow_v6
                    .remove(&Key::new(len, SvcAllowV6::new(service, v6_bytes(&cidr)))),
                names::SVC_ALLOW_V6,
            ),
        }
    }

    /// `service`'s allow list.
    pub fn allow_list(&self, service: impl Into<SvcId>) -> R<Vec<Cidr>> {
        let service = service.into().0;
        let want = (service).to_be_bytes();
        let mut out = Vec::new();
        for r in self.allow_v4.iter() {
            let (k, _) = r.map_err(DataPlaneError::map(names::SVC_ALLOW_V4))?;
            let d = k.data();
            if d.service_be == want {
                let len = k.prefix_len().saturating_sub(32) as u8;
                if let Ok(c) = Cidr::new(IpAddr::from(d.addr), len) {
                    out.push(c);
                }
            }
        }
        for r in self.allow_v6.iter() {
            let (k, _) = r.map_err(DataPlaneError::map(names::SVC_ALLOW_V6))?;
            let d = k.data();
            if d.service_be == want {
                let len = k.prefix_len().saturating_sub(32) as u8;
                if let Ok(c) = Cidr::new(IpAddr::from(d.addr), len) {
                    out.push(c);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    // ---- SIP guard ----

    /// Writes the SIP guard's limits into `GUARD_CONFIG`.
    pub fn guard_set(&mut self, s: &GuardSettings) -> R<()> {
        let c = s.to_config()?;
        self.guard_config
            .set(0, c, 0)
            .map_err(DataPlaneError::map(names::GUARD_CONFIG))
    }

    /// The SIP guard's limits from `GUARD_CONFIG`.
    pub fn guard_get(&self) -> R<GuardSettings> {
        let c = self
            .guard_config
            .get(&0, 0)
            .map_err(DataPlaneError::map(names::GUARD_CONFIG))?;
        Ok(GuardSettings::from_config(&c))
    }

    /// Forgets a source's rate-limit state (e.g. after an operator unbans it).
    pub fn guard_state_reset(&mut self, addr: IpAddr) -> R<bool> {
        del(
            self.guard_state.remove(&Addr::from(addr)),
            names::GUARD_STATE,
        )
    }

    /// The source's `SESSIONS` entry (zeros when it has none).
    pub fn sessions_get(&self, addr: IpAddr) -> R<SourceSessions> {
        Ok(
            opt(self.sessions.get(&Addr::from(addr), 0), names::SESSIONS)?
                .map(|c| SourceSessions {
                    active: c.active,
                    limit: c.limit,
                })
                .unwrap_or_default(),
        )
    }

    /// Writes a source's entry; an all-zero entry is deleted (it means "defaults").
    pub fn sessions_set(&mut self, addr: IpAddr, s: SourceSessions) -> R<()> {
        let a = Addr::from(addr);
        if s == SourceSessions::default() {
            del(self.sessions.remove(&a), names::SESSIONS)?;
            return Ok(());
        }
        let v = SessionCount {
            active: s.active,
            limit: s.limit,
        };
        self.sessions.insert(a, v, 0).map_err(ins(names::SESSIONS))
    }

    // ---- relay legs ----

    /// Writes a leg into `RELAY_LEGS` at its `local_port` (its counters are left alone).
    pub fn leg_put(&mut self, leg: &Leg) -> R<()> {
        let mut slot = *leg;
        slot.flags |= LEG_PRESENT;
        self.legs
            .set(u32::from(leg.local_port), slot, 0)
            .map_err(ins(names::RELAY_LEGS))?;
        self.leg_ports.insert(leg.local_port);
        Ok(())
    }

    /// The leg on relay port `port`, if any.
    pub fn leg_get(&self, port: u16) -> R<Option<Leg>> {
        let slot = self
            .legs
            .get(&u32::from(port), 0)
            .map_err(|source| DataPlaneError::Map {
                map: names::RELAY_LEGS,
                source,
            })?;
        Ok(from_slot(slot))
    }

    /// Removes the leg on `port` and its counters; `false` when there was no leg.
    pub fn leg_remove(&mut self, port: u16) -> R<bool> {
        // Counters first: a leg re-created on this port must not inherit them.
        self.leg_counters_reset(port)?;
        self.leg_ports.remove(&port);
        if self.leg_get(port)?.is_none() {
            return Ok(false);
        }
        self.legs
            .set(u32::from(port), Leg::default(), 0)
            .map_err(ins(names::RELAY_LEGS))?;
        Ok(true)
    }

    /// Every leg, by port. Reads every slot of the array (65,536 reads): for start-up and
    /// status, not for a packet's or a call's path.
    pub fn leg_list(&self) -> R<Vec<Leg>> {
        let mut out = Vec::new();
        for r in self.legs.iter() {
            let slot = r.map_err(|source| DataPlaneError::Map {
                map: names::RELAY_LEGS,
                source,
            })?;
            out.extend(from_slot(slot));
        }
        Ok(out)
    }

    /// Zeroes a leg's counters on every CPU (a fresh leg on a reused port).
    pub fn leg_counters_reset(&mut self, port: u16) -> R<()> {
        let n = aya::util::nr_cpus().map_err(|(_, e)| DataPlaneError::Io(e))?;
        let zeros = PerCpuValues::try_from(vec![LegCounters::default(); n])?;
        self.counters
            .set(u32::from(port), zeros, 0)
            .map_err(ins(names::RELAY_COUNTERS))
    }

    /// Sum over CPUs; `last_seen_ns` is the latest of any CPU.
    pub fn leg_counters(&self, port: u16) -> R<LegCounters> {
        let mut sum = LegCounters::default();
        let v = self
            .counters
            .get(&u32::from(port), 0)
            .map_err(DataPlaneError::map(names::RELAY_COUNTERS))?;
        for c in v.iter() {
            sum.merge(c);
        }
        Ok(sum)
    }

    /// Every leg's counters (summed over CPUs as [`leg_counters`](Self::leg_counters)
    /// does), read for the ports that hold a leg only: one lookup per leg, not one per slot of
    /// the array.
    pub fn leg_counters_all(&self) -> std::collections::HashMap<u16, LegCounters> {
        self.leg_ports
            .iter()
            .filter_map(|&port| Some((port, self.leg_counters(port).ok()?)))
            .collect()
    }

    // ---- stats / tx ports ----

    /// Kernel verdict counters summed over CPUs, indexed by `Stat as usize`.
    pub fn stats_raw(&self) -> R<[u64; STATS_LEN as usize]> {
        let mut out = [0u64; STATS_LEN as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            let v = self
                .stats
                .get(&(i as u32), 0)
                .map_err(DataPlaneError::map(names::STATS))?;
            *slot = v.iter().copied().fold(0u64, u64::wrapping_add);
        }
        Ok(out)
    }

    /// Lets the program redirect to `ifindex` (devmap keyed by ifindex).
    pub fn tx_port_add(&mut self, ifindex: u32) -> R<()> {
        self.tx_ports
            .insert(ifindex, ifindex, None, 0)
            .map_err(|source| DataPlaneError::Xdp {
                map: names::TX_PORTS,
                source,
            })
    }

    /// Stops redirects to `ifindex`; `false` when it was not allowed.
    pub fn tx_port_remove(&mut self, ifindex: u32) -> R<bool> {
        del(self.tx_ports.remove(ifindex), names::TX_PORTS)
    }

    /// The interfaces the program may redirect to.
    pub fn tx_port_list(&self) -> R<Vec<u32>> {
        Ok(self.tx_ports.keys().filter_map(Result::ok).collect())
    }
}

/// Names every stat, for a `name → value` view.
pub fn stats_by_name(raw: &[u64]) -> BTreeMap<&'static str, u64> {
    relay_common::stats::Stat::ALL
        .iter()
        .map(|s| (s.name(), raw.get(*s as usize).copied().unwrap_or(0)))
        .collect()
}
