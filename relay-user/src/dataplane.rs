//! One API, two implementations: the XDP maps or the same tables in process memory. Callers
//! (`sipd`, the ng protocol, `relayd`) never know which, except through [`DataPlane::mode`],
//! which they must show to operators.
//!
//! In XDP mode the firewall tables (bans, deny, services and allow lists, guard limits,
//! per-source sessions) are also kept in process memory, written by the same call that writes
//! the maps and under the same lock (one writer, two targets), so they never diverge: traffic
//! XDP cannot see (an interface without the program, loopback under native XDP) is checked
//! against them by [`DataPlane::userspace_check`].

use std::{
    any::Any,
    collections::{BTreeMap, HashMap},
    fmt,
    net::{IpAddr, SocketAddr},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use relay_common::{
    Addr,
    fw::BanReason,
    relay::{LEG_LATCHED, LEG_PEER_KNOWN, Leg, LegCounters},
    stats::{STATS_LEN, Stat},
};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::{
    Cidr,
    clock::monotonic_ns,
    error::DataPlaneError,
    events::GuardEvents,
    maps::{XdpMaps, stats_by_name},
    tables::UserTables,
    types::{
        BanInfo, DenyRule, GuardEventInfo, GuardSettings, Proto, Service, SourceSessions, SvcId,
        Verdict,
    },
};

type R<T> = Result<T, DataPlaneError>;

/// Which data plane forwards packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// XDP in the driver: the fast path.
    XdpNative,
    /// Generic XDP (after the skb is built): kernel forwarding, slower.
    XdpSkb,
    /// No XDP: userspace sockets forward and `sipd` filters.
    Userspace,
}

impl Mode {
    /// Whether an XDP program filters and forwards (native or generic).
    pub fn is_xdp(self) -> bool {
        !matches!(self, Mode::Userspace)
    }
    /// The mode's name in configuration, logs and the API (`xdp-native`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Mode::XdpNative => "xdp-native",
            Mode::XdpSkb => "xdp-skb",
            Mode::Userspace => "userspace",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Capacity of the guard event channel; beyond it events are counted as lost, like a full ring.
const EVENT_QUEUE: usize = 4096;

enum Backend {
    // Boxed: large, and the data plane lives once per process.
    Xdp(Box<Mutex<XdpMaps>>),
    /// No kernel maps: [`DataPlane::tables`] is the only copy.
    User,
}

/// One leg's counters per plane: what XDP relayed and what the userspace relay did (its slow
/// path in XDP mode, all of it in userspace mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlaneCounters {
    /// Counted by the XDP program (zero in userspace mode).
    pub kernel: LegCounters,
    /// Counted by the userspace relay.
    pub user: LegCounters,
}

/// The data plane: firewall tables, relay legs, counters. Cheap to share (`Arc<DataPlane>`).
pub struct DataPlane {
    mode: Mode,
    reason: String,
    backend: Backend,
    /// The userspace firewall tables: the only ones in userspace mode; in XDP mode the copy of
    /// the maps' firewall state, for traffic XDP does not see (legs stay in the maps there).
    /// Lock order: the maps, then these.
    tables: Box<Mutex<UserTables>>,
    /// XDP mode: the relay's address is reached through an interface without XDP, so the
    /// userspace relay checks the packets it receives against [`DataPlane::tables`].
    relay_unseen: AtomicBool,
    /// What the userspace relay counted per leg (all of it in userspace mode, the slow path in
    /// XDP mode); merged with the kernel's on read.
    user_counters: Mutex<HashMap<u16, LegCounters>>,
    /// Userspace verdicts and relay counts, added to the kernel's in [`DataPlane::stats`].
    user_stats: [AtomicU64; STATS_LEN as usize],
    events_tx: mpsc::Sender<GuardEventInfo>,
    events_rx: Mutex<Option<mpsc::Receiver<GuardEventInfo>>>,
    /// Keeps the loaded object and its links alive as long as the data plane.
    _keepalive: Option<Box<dyn Any + Send + Sync>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a table lock leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DataPlane {
    /// The in-memory data plane. `reason` says why (operator's choice, or why XDP failed).
    pub fn userspace(reason: impl Into<String>) -> Self {
        Self::build(Mode::Userspace, reason.into(), Backend::User, None)
    }

    /// The XDP data plane over `maps`. `keepalive` holds whatever must live as long as the
    /// program stays managed by this process (the `Ebpf` object, links).
    pub fn xdp(
        mode: Mode,
        reason: impl Into<String>,
        mut maps: XdpMaps,
        keepalive: Option<Box<dyn Any + Send + Sync>>,
    ) -> Self {
        let ring = maps.take_guard_events();
        let dp = Self::build(
            mode,
            reason.into(),
            Backend::Xdp(Box::new(Mutex::new(maps))),
            keepalive,
        );
        if let Some(ring) = ring {
            crate::events::spawn_ring_reader(ring, dp.events_tx.clone());
        }
        dp
    }

    fn build(
        mode: Mode,
        reason: String,
        backend: Backend,
        keepalive: Option<Box<dyn Any + Send + Sync>>,
    ) -> Self {
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        DataPlane {
            mode,
            reason,
            backend,
            tables: Box::new(Mutex::new(UserTables::new())),
            relay_unseen: AtomicBool::new(false),
            user_counters: Mutex::new(HashMap::new()),
            user_stats: std::array::from_fn(|_| AtomicU64::new(0)),
            events_tx,
            events_rx: Mutex::new(Some(events_rx)),
            _keepalive: keepalive,
        }
    }

    /// The active mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Why this mode is active, in words for the operator.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The guard event stream (sampled SIP guard drops). There is one consumer: the first
    /// call gets it, later calls get `None`.
    pub fn guard_events(&self) -> Option<GuardEvents> {
        lock(&self.events_rx).take().map(GuardEvents::new)
    }

    pub(crate) fn count(&self, stat: Stat, n: u64) {
        if let Some(c) = self.user_stats.get(stat as usize) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    // ---- firewall ----

    /// The kernel's firewall pipeline for one packet, for `sipd`'s receive path. In XDP modes
    /// the kernel has already filtered the packet, so this passes without counting; for a
    /// packet XDP did not see, use [`DataPlane::userspace_check`].
    pub fn firewall_check(
        &self,
        src: IpAddr,
        dst_port: u16,
        proto: Proto,
        payload: &[u8],
    ) -> Verdict {
        if self.mode.is_xdp() {
            return Verdict::Pass(Stat::PassOther);
        }
        self.userspace_check(src, dst_port, proto, payload)
    }

    /// The kernel's firewall pipeline for one packet, run in userspace whatever the mode:
    /// against the only tables in userspace mode, against the copy of the maps in XDP mode
    /// (for a packet that arrived where XDP is not attached). Counted under the same stats
    /// as the kernel's verdicts; a sampled guard drop goes to [`DataPlane::guard_events`].
    pub fn userspace_check(
        &self,
        src: IpAddr,
        dst_port: u16,
        proto: Proto,
        payload: &[u8],
    ) -> Verdict {
        let (v, ev) =
            lock(&self.tables).firewall_check(src, dst_port, proto, payload, monotonic_ns());
        self.count(Stat::Received, 1);
        self.count(v.stat(), 1);
        self.emit_guard_event(ev);
        v
    }

    /// XDP mode: whether the relay's address is reached through an interface without XDP
    /// (sipd works it out from the interfaces and says it again when they change). Then the
    /// userspace relay checks what it receives against the copy of the firewall tables; a
    /// packet XDP passed passes that check too (same tables), so only the cost is added.
    pub fn set_relay_unseen(&self, unseen: bool) {
        self.relay_unseen.store(unseen, Ordering::Relaxed);
    }

    /// One writer, two targets: in XDP mode the change goes to the kernel map and, only once
    /// the kernel took it, to the userspace copy under the same lock, so a reader of either
    /// never sees one without the other for long and they never diverge. The kernel's answer
    /// is the caller's; the copy refusing what the kernel took (it has the same capacities,
    /// so it should not) is logged.
    fn write<T>(
        &self,
        what: &'static str,
        kernel: impl FnOnce(&mut XdpMaps) -> R<T>,
        user: impl FnOnce(&mut UserTables) -> R<T>,
    ) -> R<T> {
        match &self.backend {
            Backend::Xdp(m) => {
                let mut m = lock(m);
                let out = kernel(&mut m)?;
                if let Err(e) = user(&mut lock(&self.tables)) {
                    tracing::error!(what, error = %e, "the userspace copy of the firewall refused what the kernel took");
                }
                Ok(out)
            }
            Backend::User => user(&mut lock(&self.tables)),
        }
    }

    fn emit_guard_event(&self, ev: Option<relay_common::guard::GuardEvent>) {
        if let Some(ev) = ev
            && self.events_tx.try_send(ev.into()).is_err()
        {
            self.count(Stat::EventLost, 1);
        }
    }

    /// The firewall for a batch of UDP packets that arrived on relay port `port`, so media is
    /// filtered like the kernel filters it: a banned or denied source (or one outside a
    /// restricted service's ACL, should a relay port be one) gets nothing relayed. One table
    /// lock for the whole batch. Sets `pass[i]` for each packet; drops are counted under the
    /// kernel's stats, passes are not (the relay counts what it does with them).
    ///
    /// In XDP modes every packet reaching a relay socket was passed up by the kernel, which has
    /// already judged and counted it: all pass, nothing is counted twice; unless the relay's
    /// address is also reached where XDP is not ([`DataPlane::set_relay_unseen`]): then the
    /// copy of the tables judges (drops only happen to packets XDP never saw, as XDP would
    /// have dropped the others before the socket).
    pub(crate) fn relay_firewall<'a>(
        &self,
        port: u16,
        packets: impl Iterator<Item = (IpAddr, &'a [u8])>,
        pass: &mut Vec<bool>,
    ) {
        pass.clear();
        if self.mode.is_xdp() && !self.relay_unseen.load(Ordering::Relaxed) {
            pass.extend(packets.map(|_| true));
            return;
        }
        let now = monotonic_ns();
        let mut events = Vec::new();
        {
            let mut t = lock(&self.tables);
            for (src, payload) in packets {
                let (v, ev) = t.firewall_check(src, port, Proto::Udp, payload, now);
                if let Verdict::Drop(stat) = v {
                    self.count(stat, 1);
                }
                events.extend(ev);
                pass.push(v.is_pass());
            }
        }
        // Sent after the lock is gone: the channel never waits, but a consumer might be
        // contending for the tables.
        for ev in events {
            self.emit_guard_event(Some(ev));
        }
    }

    /// Bans `prefix` (one host as /32 or /128, or a range); see [`XdpMaps::ban_add`].
    pub fn ban_add(&self, prefix: Cidr, duration: Option<Duration>, reason: BanReason) -> R<()> {
        self.write(
            "ban",
            |m| m.ban_add(prefix, duration, reason),
            |t| t.ban_add(prefix, duration, reason, monotonic_ns()),
        )
    }

    /// Whether a ban of exactly this prefix was there to remove.
    pub fn ban_remove(&self, prefix: Cidr) -> R<bool> {
        self.write(
            "unban",
            |m| m.ban_remove(prefix),
            |t| Ok(t.ban_remove(prefix)),
        )
    }

    /// The ban of exactly this prefix.
    pub fn ban_get(&self, prefix: Cidr) -> R<Option<BanInfo>> {
        match &self.backend {
            Backend::Xdp(m) => lock(m).ban_get(prefix),
            Backend::User => Ok(lock(&self.tables).ban_get(prefix, monotonic_ns())),
        }
    }

    /// Every ban, sorted by prefix; expired ones not yet purged included (marked).
    pub fn ban_list(&self) -> R<Vec<BanInfo>> {
        let mut v = match &self.backend {
            Backend::Xdp(m) => lock(m).ban_list()?,
            Backend::User => lock(&self.tables).ban_list(monotonic_ns()),
        };
        v.sort_by_key(|b| b.prefix);
        Ok(v)
    }

    /// Removes every expired ban; returns how many.
    pub fn ban_purge_expired(&self) -> R<usize> {
        self.write(
            "ban purge",
            |m| m.ban_purge_expired(),
            |t| Ok(t.ban_purge_expired(monotonic_ns())),
        )
    }

    /// Adds (or re-ids) a static deny rule; fails when the table is full (`DENY_MAX` per family).
    pub fn deny_add(&self, cidr: Cidr, rule_id: u32) -> R<()> {
        self.write(
            "deny",
            |m| m.deny_add(cidr, rule_id),
            |t| t.deny_add(cidr, rule_id),
        )
    }

    /// Removes the deny rule of exactly this prefix; `false` when there was none.
    pub fn deny_remove(&self, cidr: Cidr) -> R<bool> {
        self.write(
            "deny removal",
            |m| m.deny_remove(cidr),
            |t| Ok(t.deny_remove(cidr)),
        )
    }

    /// Every deny rule.
    pub fn deny_list(&self) -> R<Vec<DenyRule>> {
        match &self.backend {
            Backend::Xdp(m) => lock(m).deny_list(),
            Backend::User => Ok(lock(&self.tables).deny_list()),
        }
    }

    /// Adds or replaces the service on `s.port`/`s.proto`; fails when `SERVICES_MAX` are set.
    pub fn service_set(&self, s: Service) -> R<()> {
        self.write("service", |m| m.service_set(s), |t| t.service_set(s))
    }

    /// Removes the service on `port`/`proto`; `false` when there was none.
    pub fn service_remove(&self, port: u16, proto: Proto) -> R<bool> {
        self.write(
            "service removal",
            |m| m.service_remove(port, proto),
            |t| Ok(t.service_remove(port, proto)),
        )
    }

    /// An operator-defined service (`id` from [`crate::CUSTOM_SERVICE_BASE`]) on `port`:
    /// restricted to its allow list. [`DataPlane::service_list`] does not show it.
    pub fn custom_service_set(&self, port: u16, proto: Proto, id: SvcId) -> R<()> {
        let key = relay_common::fw::ServiceKey::new(port, proto.number());
        let entry = relay_common::fw::ServiceEntry {
            service: id.0,
            flags: relay_common::fw::SVC_RESTRICTED,
        };
        self.write(
            "service",
            |m| m.service_set_raw(key, entry),
            |t| t.service_set_raw(key, entry),
        )
    }

    /// Every service.
    pub fn service_list(&self) -> R<Vec<Service>> {
        match &self.backend {
            Backend::Xdp(m) => lock(m).service_list(),
            Backend::User => Ok(lock(&self.tables).service_list()),
        }
    }

    /// Lets `cidr` reach `service` (when the service is restricted); fails when the allow lists
    /// are full (`SVC_ALLOW_MAX` per family).
    pub fn allow_add(&self, service: impl Into<SvcId>, cidr: Cidr) -> R<()> {
        let service = service.into();
        self.write(
            "allow",
            |m| m.allow_add(service, cidr),
            |t| t.allow_add(service, cidr),
        )
    }

    /// Removes exactly this prefix from `service`'s allow list; `false` when it was not there.
    pub fn allow_remove(&self, service: impl Into<SvcId>, cidr: Cidr) -> R<bool> {
        let service = service.into();
        self.write(
            "allow removal",
            |m| m.allow_remove(service, cidr),
            |t| Ok(t.allow_remove(service, cidr)),
        )
    }

    /// `service`'s allow list.
    pub fn allow_list(&self, service: impl Into<SvcId>) -> R<Vec<Cidr>> {
        match &self.backend {
            Backend::Xdp(m) => lock(m).allow_list(service.into()),
            Backend::User => Ok(lock(&self.tables).allow_list(service.into())),
        }
    }

    /// Sets the SIP guard's limits; the next packet is judged by them.
    pub fn guard_set(&self, s: &GuardSettings) -> R<()> {
        self.write("guard limits", |m| m.guard_set(s), |t| t.guard_set(s))
    }

    /// The SIP guard's limits in force.
    pub fn guard_get(&self) -> R<GuardSettings> {
        match &self.backend {
            Backend::Xdp(m) => lock(m).guard_get(),
            Backend::User => Ok(lock(&self.tables).guard_get()),
        }
    }

    /// Forgets a source's rate-limit buckets.
    pub fn guard_state_reset(&self, addr: IpAddr) -> R<bool> {
        self.write(
            "guard reset",
            |m| m.guard_state_reset(addr),
            |t| Ok(t.guard_state_reset(addr)),
        )
    }

    // ---- per-source sessions (maintained by sipd) ----

    /// The source's session count and cap (zeros when it has no entry).
    pub fn sessions_get(&self, addr: IpAddr) -> R<SourceSessions> {
        match &self.backend {
            Backend::Xdp(m) => lock(m).sessions_get(addr),
            Backend::User => Ok(lock(&self.tables).sessions_get(addr)),
        }
    }

    /// Writes the source's session count and cap.
    pub fn sessions_set(&self, addr: IpAddr, s: SourceSessions) -> R<()> {
        self.write(
            "sessions",
            |m| m.sessions_set(addr, s),
            |t| t.sessions_set(addr, s),
        )
    }

    /// Read-modify-write under the table lock, so two sipd tasks cannot lose an update.
    fn sessions_update(
        &self,
        addr: IpAddr,
        f: impl FnOnce(&mut SourceSessions),
    ) -> R<SourceSessions> {
        match &self.backend {
            Backend::Xdp(m) => {
                let mut m = lock(m);
                let mut s = m.sessions_get(addr)?;
                f(&mut s);
                m.sessions_set(addr, s)?;
                // The copy takes the kernel's count, not its own: one truth.
                if let Err(e) = lock(&self.tables).sessions_set(addr, s) {
                    tracing::error!(error = %e, "the userspace copy of the firewall refused a session count");
                }
                Ok(s)
            }
            Backend::User => {
                let mut t = lock(&self.tables);
                let mut s = t.sessions_get(addr);
                f(&mut s);
                t.sessions_set(addr, s)?;
                Ok(s)
            }
        }
    }

    /// A call from `addr` started; returns the new count.
    pub fn sessions_increment(&self, addr: IpAddr) -> R<SourceSessions> {
        self.sessions_update(addr, |s| s.active = s.active.saturating_add(1))
    }

    /// A call from `addr` ended; never goes below zero.
    pub fn sessions_decrement(&self, addr: IpAddr) -> R<SourceSessions> {
        self.sessions_update(addr, |s| s.active = s.active.saturating_sub(1))
    }

    /// Sets a source's own cap (0 = the guard default), keeping its active count.
    pub fn sessions_set_limit(&self, addr: IpAddr, limit: u32) -> R<SourceSessions> {
        self.sessions_update(addr, |s| s.limit = limit)
    }

    // ---- relay legs ----

    /// Writes a leg. A leg new to its port (or to its session) starts with zero counters.
    pub fn leg_put(&self, leg: &Leg) -> R<()> {
        let fresh = self
            .leg_get(leg.local_port)?
            .is_none_or(|old| old.session_id != leg.session_id);
        if fresh {
            lock(&self.user_counters).remove(&leg.local_port);
        }
        match &self.backend {
            Backend::Xdp(m) => {
                let mut m = lock(m);
                if fresh {
                    m.leg_counters_reset(leg.local_port)?;
                }
                m.leg_put(leg)
            }
            Backend::User => {
                lock(&self.tables).leg_put(leg);
                Ok(())
            }
        }
    }

    /// The leg on relay port `port`, if any.
    pub fn leg_get(&self, port: u16) -> R<Option<Leg>> {
        match &self.backend {
            Backend::Xdp(m) => lock(m).leg_get(port),
            Backend::User => Ok(lock(&self.tables).leg_get(port)),
        }
    }

    /// Removes the leg on `port` and its counters; `false` when there was none.
    pub fn leg_remove(&self, port: u16) -> R<bool> {
        lock(&self.user_counters).remove(&port);
        match &self.backend {
            Backend::Xdp(m) => lock(m).leg_remove(port),
            Backend::User => Ok(lock(&self.tables).leg_remove(port)),
        }
    }

    /// Every leg, by port.
    pub fn leg_list(&self) -> R<Vec<Leg>> {
        match &self.backend {
            Backend::Xdp(m) => lock(m).leg_list(),
            Backend::User => Ok(lock(&self.tables).leg_list()),
        }
    }

    /// What arrived on a leg: kernel (summed over CPUs) plus userspace relay.
    pub fn leg_counters(&self, port: u16) -> R<LegCounters> {
        let mut c = match &self.backend {
            Backend::Xdp(m) => lock(m).leg_counters(port)?,
            Backend::User => LegCounters::default(),
        };
        if let Some(u) = lock(&self.user_counters).get(&port) {
            c.merge(u);
        }
        Ok(c)
    }

    /// Every leg's counters, the kernel's and the userspace relay's apart (which plane carried
    /// a call's media): one walk of the kernel map and one of the userspace table, so a listing
    /// of all calls costs the same few syscalls however many calls there are.
    pub fn leg_counters_by_plane(&self) -> R<HashMap<u16, PlaneCounters>> {
        let mut out: HashMap<u16, PlaneCounters> = match &self.backend {
            Backend::Xdp(m) => lock(m)
                .leg_counters_all()
                .into_iter()
                .map(|(port, kernel)| {
                    let p = PlaneCounters {
                        kernel,
                        ..PlaneCounters::default()
                    };
                    (port, p)
                })
                .collect(),
            Backend::User => HashMap::new(),
        };
        for (port, u) in lock(&self.user_counters).iter() {
            out.entry(*port).or_default().user = *u;
        }
        Ok(out)
    }

    /// The leg a packet arrived on and its partner, for the userspace relay.
    pub(crate) fn relay_lookup(&self, port: u16) -> R<Option<(Leg, Option<Leg>)>> {
        let get = |p| self.leg_get(p);
        let Some(leg) = get(port)? else {
            return Ok(None);
        };
        let partner = get(leg.partner_port)?;
        Ok(Some((leg, partner)))
    }

    /// Records a latch learned by the userspace relay, unless someone (the kernel, or a
    /// concurrent update) changed the leg meanwhile.
    pub(crate) fn relay_latch(&self, port: u16, session_id: u64, peer: SocketAddr) -> R<()> {
        let apply = |leg: &mut Leg| {
            if leg.session_id != session_id || leg.has(LEG_LATCHED) {
                return false;
            }
            leg.peer_addr = Addr::from(peer.ip());
            leg.peer_port = peer.port();
            leg.flags |= LEG_LATCHED | LEG_PEER_KNOWN;
            true
        };
        match &self.backend {
            Backend::Xdp(m) => {
                let mut m = lock(m);
                if let Some(mut leg) = m.leg_get(port)?
                    && apply(&mut leg)
                {
                    m.leg_put(&leg)?;
                }
            }
            Backend::User => {
                let mut t = lock(&self.tables);
                if let Some(mut leg) = t.leg_get(port)
                    && apply(&mut leg)
                {
                    t.leg_put(&leg);
                }
            }
        }
        Ok(())
    }

    /// Adds a batch's counts to a leg's, and its RTP sequence numbers (in arrival order) to
    /// the leg's loss state: one state per leg here, under this lock, so unlike the kernel's
    /// per-CPU ones it sees every packet the userspace relay relayed.
    pub(crate) fn relay_account(&self, port: u16, delta: &LegCounters, seqs: &[u16]) {
        let mut all = lock(&self.user_counters);
        let c = all.entry(port).or_default();
        c.merge(delta);
        for s in seqs {
            c.rtp_seen(*s);
        }
    }

    // ---- stats / tx ----

    /// Verdict and relay counters by stat name: the kernel's summed over CPUs plus userspace's.
    pub fn stats(&self) -> R<BTreeMap<&'static str, u64>> {
        let mut raw = match &self.backend {
            Backend::Xdp(m) => lock(m).stats_raw()?,
            Backend::User => [0u64; STATS_LEN as usize],
        };
        for (r, u) in raw.iter_mut().zip(self.user_stats.iter()) {
            *r = r.wrapping_add(u.load(Ordering::Relaxed));
        }
        Ok(stats_by_name(&raw))
    }

    /// Media packets the userspace relay forwarded (its share of `relay_tx` in
    /// [`stats`](Self::stats); the rest of the `relay_*` counts is the kernel's).
    pub fn user_relayed(&self) -> u64 {
        self.user_stats[Stat::RelayTx as usize].load(Ordering::Relaxed)
    }

    /// Lets the XDP program redirect out of `ifindex`. A no-op in userspace mode.
    pub fn tx_port_add(&self, ifindex: u32) -> R<()> {
        match &self.backend {
            Backend::Xdp(m) => lock(m).tx_port_add(ifindex),
            Backend::User => Ok(()),
        }
    }

    /// The interfaces (ifindex) the XDP program may redirect to; empty in userspace mode.
    pub fn tx_port_list(&self) -> R<Vec<u32>> {
        match &self.backend {
            Backend::Xdp(m) => lock(m).tx_port_list(),
            Backend::User => Ok(Vec::new()),
        }
    }
}

impl fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataPlane")
            .field("mode", &self.mode)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_common::relay::LEG_LATCH;

    #[test]
    fn userspace_counts_like_the_kernel() {
        let dp = DataPlane::userspace("test");
        assert_eq!(dp.mode(), Mode::Userspace);
        dp.ban_add("192.0.2.1".parse().unwrap(), None, BanReason::Scanner)
            .unwrap();
        let v = dp.firewall_check("192.0.2.1".parse().unwrap(), 5060, Proto::Udp, b"INVITE ");
        assert_eq!(v, Verdict::Drop(Stat::DropBanned));
        dp.firewall_check("192.0.2.2".parse().unwrap(), 5060, Proto::Udp, b"x");
        let s = dp.stats().unwrap();
        assert_eq!(s["received"], 2);
        assert_eq!(s["drop_banned"], 1);
        assert_eq!(s["pass_other"], 1);
        assert_eq!(dp.ban_list().unwrap().len(), 1);
    }

    #[test]
    fn userspace_check_is_the_pipeline_in_userspace_mode() {
        let dp = DataPlane::userspace("test");
        let src: IpAddr = "192.0.2.1".parse().unwrap();
        dp.deny_add("192.0.2.0/24".parse().unwrap(), 1).unwrap();
        assert_eq!(
            dp.userspace_check(src, 5060, Proto::Udp, b"INVITE "),
            Verdict::Drop(Stat::DropDenied)
        );
        assert_eq!(
            dp.firewall_check(src, 5060, Proto::Udp, b"INVITE "),
            Verdict::Drop(Stat::DropDenied)
        );
        assert_eq!(dp.stats().unwrap()["drop_denied"], 2);
        assert!(dp.deny_remove("192.0.2.0/24".parse().unwrap()).unwrap());
        assert!(dp.userspace_check(src, 5060, Proto::Udp, b"x").is_pass());
    }

    #[test]
    fn guard_events_flow_to_the_stream() {
        let dp = DataPlane::userspace("test");
        dp.service_set(Service {
            port: 5060,
            proto: Proto::Udp,
            id: relay_common::fw::ServiceId::Sip,
            restricted: false,
            sip: true,
        })
        .unwrap();
        dp.guard_set(&GuardSettings {
            packet_rate: 1,
            packet_burst: 1,
            event_interval: Duration::ZERO,
            ..GuardSettings::default()
        })
        .unwrap();
        let mut ev = dp.guard_events().expect("first taker");
        assert!(dp.guard_events().is_none());
        let src: IpAddr = "198.51.100.3".parse().unwrap();
        assert!(dp.firewall_check(src, 5060, Proto::Udp, b"x").is_pass());
        assert!(!dp.firewall_check(src, 5060, Proto::Udp, b"x").is_pass());
        let e = ev.try_recv().expect("one event");
        assert_eq!(e.source, src);
        assert_eq!(e.port, 5060);
    }

    #[test]
    fn session_counts_saturate() {
        let dp = DataPlane::userspace("test");
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(dp.sessions_decrement(a).unwrap().active, 0);
        dp.sessions_increment(a).unwrap();
        assert_eq!(dp.sessions_increment(a).unwrap().active, 2);
        assert_eq!(
            dp.sessions_set_limit(a, 4).unwrap(),
            SourceSessions {
                active: 2,
                limit: 4
            }
        );
        dp.sessions_decrement(a).unwrap();
        assert_eq!(dp.sessions_get(a).unwrap().active, 1);
    }

    #[test]
    fn latch_only_once_and_only_same_session() {
        let dp = DataPlane::userspace("test");
        let leg = Leg {
            local_port: 30000,
            partner_port: 30002,
            session_id: 9,
            flags: LEG_LATCH,
            ..Leg::default()
        };
        dp.leg_put(&leg).unwrap();
        dp.relay_latch(30000, 8, "10.0.0.1:5000".parse().unwrap())
            .unwrap();
        assert!(!dp.leg_get(30000).unwrap().unwrap().has(LEG_LATCHED));
        dp.relay_latch(30000, 9, "10.0.0.1:5000".parse().unwrap())
            .unwrap();
        dp.relay_latch(30000, 9, "10.0.0.2:6000".parse().unwrap())
            .unwrap();
        let l = dp.leg_get(30000).unwrap().unwrap();
        assert!(l.has(LEG_LATCHED) && l.has(LEG_PEER_KNOWN));
        assert_eq!(l.peer_port, 5000);
        dp.relay_account(
            30000,
            &LegCounters {
                packets: 2,
                bytes: 20,
                last_seen_ns: 5,
                ..LegCounters::default()
            },
            &[7, 9],
        );
        let c = dp.leg_counters(30000).unwrap();
        assert_eq!((c.packets, c.rtp_expected(), c.rtp_lost()), (2, 3, 1));
        dp.leg_remove(30000).unwrap();
        assert_eq!(dp.leg_counters(30000).unwrap(), LegCounters::default());
    }
}
