//! The userspace backend: the same tables as the XDP maps, in process memory, and the firewall
//! pipeline the kernel runs, for `sipd` to call on every packet when XDP is not available.
//! Capacities match the maps so a configuration that works in one mode works in the other.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    time::Duration,
};

use relay_common::{
    Addr,
    fw::{BanEntry, BanReason, SVC_RESTRICTED, SVC_SIP, ServiceEntry, ServiceKey},
    guard::{GuardConfig, GuardEvent, GuardEventKind, GuardState, SessionCount},
    maps as names,
    relay::Leg,
    stats::Stat,
};

use crate::{
    Cidr,
    cidr::normalize,
    error::DataPlaneError,
    maps::{ban_entry, ban_info, service_entry, service_from},
    types::{BanInfo, DenyRule, GuardSettings, Proto, Service, SourceSessions, SvcId, Verdict},
};

type R<T> = Result<T, DataPlaneError>;

/// The in-memory firewall tables of the userspace data plane: the same rules, capacities and
/// verdicts as the XDP maps, for when no XDP program runs (and for tests).
#[derive(Default)]
pub struct UserTables {
    bans: Bans,
    deny: BTreeMap<Cidr, u32>,
    services: HashMap<ServiceKey, ServiceEntry>,
    allow: BTreeMap<u32, BTreeSet<Cidr>>,
    guard: GuardConfig,
    guard_state: HashMap<Addr, GuardState>,
    sessions: HashMap<Addr, SessionCount>,
    legs: BTreeMap<u16, Leg>,
}

/// The banned prefixes, looked up as the kernel's tries do: the longest prefix holding the
/// source decides. Only the prefix lengths in use are tried, so a lookup costs one probe per
/// distinct length, not one per possible length.
#[derive(Default)]
struct Bans {
    map: BTreeMap<Cidr, BanEntry>,
    /// Entries per prefix length: `[0]` IPv4, `[1]` IPv6.
    lens: [BTreeMap<u8, u32>; 2],
}

impl Bans {
    fn fam(v4: bool) -> usize {
        usize::from(!v4)
    }

    fn family_len(&self, v4: bool) -> usize {
        self.lens[Self::fam(v4)].values().map(|n| *n as usize).sum()
    }

    fn insert(&mut self, c: Cidr, e: BanEntry) {
        if self.map.insert(c, e).is_none() {
            *self.lens[Self::fam(c.is_v4())]
                .entry(c.prefix_len())
                .or_default() += 1;
        }
    }

    fn remove(&mut self, c: Cidr) -> bool {
        if self.map.remove(&c).is_none() {
            return false;
        }
        let lens = &mut self.lens[Self::fam(c.is_v4())];
        if let Some(n) = lens.get_mut(&c.prefix_len()) {
            *n -= 1;
            if *n == 0 {
                lens.remove(&c.prefix_len());
            }
        }
        true
    }

    /// Whether a live ban holds `src`. The kernel looks through at most `BAN_LOOKUPS`
    /// expired bans; here all are looked at, which differs only until the next purge.
    fn active(&self, src: IpAddr, now: u64) -> bool {
        let lens = &self.lens[Self::fam(src.is_ipv4())];
        lens.keys()
            .rev()
            .filter_map(|len| Cidr::new(src, *len).ok())
            .filter_map(|c| self.map.get(&c))
            .any(|e| e.is_active(now))
    }
}

fn check_room(len: usize, max: u32, exists: bool, name: &'static str) -> R<()> {
    if !exists && len >= max as usize {
        return Err(DataPlaneError::Full(name));
    }
    Ok(())
}

impl UserTables {
    /// Empty tables, the guard off.
    pub fn new() -> Self {
        Self::default()
    }

    // ---- bans ----

    /// Bans `prefix` for `duration` (`None`: permanently) from CLOCK_MONOTONIC `now`; replaces a
    /// ban of the same prefix. [`DataPlaneError::Full`] at `BANS_MAX` per family.
    pub fn ban_add(
        &mut self,
        prefix: Cidr,
        duration: Option<Duration>,
        reason: BanReason,
        now: u64,
    ) -> R<()> {
        let name = if prefix.is_v4() {
            names::BANS_V4
        } else {
            names::BANS_V6
        };
        check_room(
            self.bans.family_len(prefix.is_v4()),
            relay_common::maps::BANS_MAX,
            self.bans.map.contains_key(&prefix),
            name,
        )?;
        self.bans
            .insert(prefix, ban_entry(prefix, duration, reason, now));
        Ok(())
    }

    /// Removes the ban of exactly this prefix; `false` when there was none.
    pub fn ban_remove(&mut self, prefix: Cidr) -> bool {
        self.bans.remove(prefix)
    }

    /// The ban of exactly this prefix, as listed at `now`.
    pub fn ban_get(&self, prefix: Cidr, now: u64) -> Option<BanInfo> {
        self.bans.map.get(&prefix).map(|e| ban_info(prefix, e, now))
    }

    /// Every ban, as listed at `now` (expired ones not yet purged included).
    pub fn ban_list(&self, now: u64) -> Vec<BanInfo> {
        self.bans
            .map
            .iter()
            .map(|(c, e)| ban_info(*c, e, now))
            .collect()
    }

    /// Removes the bans expired at `now`; returns how many.
    pub fn ban_purge_expired(&mut self, now: u64) -> usize {
        let expired: Vec<Cidr> = self
            .bans
            .map
            .iter()
            .filter(|(_, e)| !e.is_active(now))
            .map(|(c, _)| *c)
            .collect();
        for c in &expired {
            self.bans.remove(*c);
        }
        expired.len()
    }

    // ---- static deny ----

    /// Adds (or re-ids) a deny rule; [`DataPlaneError::Full`] at `DENY_MAX` per family.
    pub fn deny_add(&mut self, cidr: Cidr, rule_id: u32) -> R<()> {
        let fam = self
            .deny
            .keys()
            .filter(|c| c.is_v4() == cidr.is_v4())
            .count();
        let name = if cidr.is_v4() {
            names::DENY_V4
        } else {
            names::DENY_V6
        };
        check_room(
            fam,
            relay_common::maps::DENY_MAX,
            self.deny.contains_key(&cidr),
            name,
        )?;
        self.deny.insert(cidr, rule_id);
        Ok(())
    }

    /// Removes the deny rule of exactly this prefix; `false` when there was none.
    pub fn deny_remove(&mut self, cidr: Cidr) -> bool {
        self.deny.remove(&cidr).is_some()
    }

    /// Every deny rule.
    pub fn deny_list(&self) -> Vec<DenyRule> {
        self.deny
            .iter()
            .map(|(c, id)| DenyRule {
                cidr: *c,
                rule_id: *id,
            })
            .collect()
    }

    // ---- services ----

    /// Adds or replaces the service on its port and protocol; [`DataPlaneError::Full`] at
    /// `SERVICES_MAX`.
    pub fn service_set(&mut self, s: Service) -> R<()> {
        let (k, v) = service_entry(&s);
        self.service_set_raw(k, v)
    }

    /// A service entry as the kernel keeps it (an operator-defined service's id included).
    pub fn service_set_raw(&mut self, k: ServiceKey, v: ServiceEntry) -> R<()> {
        check_room(
            self.services.len(),
            relay_common::maps::SERVICES_MAX,
            self.services.contains_key(&k),
            names::SERVICES,
        )?;
        self.services.insert(k, v);
        Ok(())
    }

    /// Removes the service on `port`/`proto`; `false` when there was none.
    pub fn service_remove(&mut self, port: u16, proto: Proto) -> bool {
        self.services
            .remove(&ServiceKey::new(port, proto.number()))
            .is_some()
    }

    /// Every service.
    pub fn service_list(&self) -> Vec<Service> {
        let mut v: Vec<Service> = self
            .services
            .iter()
            .filter_map(|(k, e)| service_from(k, e))
            .collect();
        v.sort_by_key(|s| (s.port, s.proto));
        v
    }

    /// Adds `cidr` to `service`'s allow list; [`DataPlaneError::Full`] at `SVC_ALLOW_MAX` per
    /// family.
    pub fn allow_add(&mut self, service: impl Into<SvcId>, cidr: Cidr) -> R<()> {
        let service = service.into().0;
        let total: usize = self
            .allow
            .values()
            .flatten()
            .filter(|c| c.is_v4() == cidr.is_v4())
            .count();
        let exists = self.allow.get(&service).is_some_and(|s| s.contains(&cidr));
        let name = if cidr.is_v4() {
            names::SVC_ALLOW_V4
        } else {
            names::SVC_ALLOW_V6
        };
        check_room(total, relay_common::maps::SVC_ALLOW_MAX, exists, name)?;
        self.allow.entry(service).or_default().insert(cidr);
        Ok(())
    }

    /// Removes exactly this prefix from `service`'s allow list; `false` when it was not there.
    pub fn allow_remove(&mut self, service: impl Into<SvcId>, cidr: Cidr) -> bool {
        let service = service.into().0;
        self.allow
            .get_mut(&service)
            .is_some_and(|s| s.remove(&cidr))
    }

    /// `service`'s allow list.
    pub fn allow_list(&self, service: impl Into<SvcId>) -> Vec<Cidr> {
        let service = service.into().0;
        self.allow
            .get(&service)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    // ---- guard ----

    /// Sets the SIP guard's limits; fails as [`GuardSettings::to_config`] does.
    pub fn guard_set(&mut self, s: &GuardSettings) -> R<()> {
        self.guard = s.to_config()?;
        Ok(())
    }

    /// The SIP guard's limits in force.
    pub fn guard_get(&self) -> GuardSettings {
        GuardSettings::from_config(&self.guard)
    }

    /// Forgets a source's rate-limit state; `false` when it had none.
    pub fn guard_state_reset(&mut self, addr: IpAddr) -> bool {
        self.guard_state.remove(&Addr::from(addr)).is_some()
    }

    /// The source's session count and cap (zeros when it has no entry).
    pub fn sessions_get(&self, addr: IpAddr) -> SourceSessions {
        self.sessions
            .get(&Addr::from(addr))
            .map(|c| SourceSessions {
                active: c.active,
                limit: c.limit,
            })
            .unwrap_or_default()
    }

    /// Writes the source's session count and cap (all zeros removes the entry);
    /// [`DataPlaneError::Full`] at `SESSIONS_MAX` sources.
    pub fn sessions_set(&mut self, addr: IpAddr, s: SourceSessions) -> R<()> {
        let a = Addr::from(addr);
        if s == SourceSessions::default() {
            self.sessions.remove(&a);
            return Ok(());
        }
        check_room(
            self.sessions.len(),
            relay_common::maps::SESSIONS_MAX,
            self.sessions.contains_key(&a),
            names::SESSIONS,
        )?;
        self.sessions.insert(
            a,
            SessionCount {
                active: s.active,
                limit: s.limit,
            },
        );
        Ok(())
    }

    // ---- legs ----

    /// Writes a leg under its `local_port`.
    pub fn leg_put(&mut self, leg: &Leg) {
        self.legs.insert(leg.local_port, *leg);
    }

    /// The leg on relay port `port`, if any.
    pub fn leg_get(&self, port: u16) -> Option<Leg> {
        self.legs.get(&port).copied()
    }

    /// Removes the leg on `port`; `false` when there was none.
    pub fn leg_remove(&mut self, port: u16) -> bool {
        self.legs.remove(&port).is_some()
    }

    /// Every leg, by port.
    pub fn leg_list(&self) -> Vec<Leg> {
        self.legs.values().copied().collect()
    }

    // ---- the pipeline ----

    /// The kernel's verdict pipeline for one packet from `src` to our `dst_port`: bans, static
    /// deny, service ACL, SIP guard. Returns the verdict and, for a sampled guard drop, the event
    /// the kernel would have put in the ring buffer.
    pub fn firewall_check(
        &mut self,
        src: IpAddr,
        dst_port: u16,
        proto: Proto,
        payload: &[u8],
        now: u64,
    ) -> (Verdict, Option<GuardEvent>) {
        let src = normalize(src);
        let a = Addr::from(src);
        if self.bans.active(src, now) {
            return (Verdict::Drop(Stat::DropBanned), None);
        }
        if self.deny.keys().any(|c| c.contains(src)) {
            return (Verdict::Drop(Stat::DropDenied), None);
        }
        let Some(svc) = self
            .services
            .get(&ServiceKey::new(dst_port, proto.number()))
            .copied()
        else {
            return (Verdict::Pass(Stat::PassOther), None);
        };
        if svc.flags & SVC_RESTRICTED != 0 {
            let allowed = self
                .allow
                .get(&svc.service)
                .is_some_and(|set| set.iter().any(|c| c.contains(src)));
            if !allowed {
                return (Verdict::Drop(Stat::DropServiceAcl), None);
            }
        }
        if svc.flags & SVC_SIP == 0 {
            return (Verdict::Pass(Stat::PassService), None);
        }
        // The kernel's INVITE checks only apply to UDP: over TCP a segment boundary is not a
        // message boundary, so "payload starts with INVITE" means nothing there.
        let invite = proto == Proto::Udp && relay_common::guard::is_invite(payload);
        match self.sip_guard(a, invite, now) {
            Ok(()) => (Verdict::Pass(Stat::PassSip), None),
            Err((stat, kind)) => (
                Verdict::Drop(stat),
                self.sample_event(a, dst_port, kind, now),
            ),
        }
    }

    fn sip_guard(&mut self, a: Addr, invite: bool, now: u64) -> Result<(), (Stat, GuardEventKind)> {
        let cfg = self.guard;
        if self
            .sessions
            .get(&a)
            .is_some_and(|c| c.limit == relay_common::guard::TRUSTED)
        {
            return Ok(());
        }
        self.make_room_for_state(now);
        let st = self.guard_state.entry(a).or_default();
        match cfg.packets.check(st.packets_tat_ns, now) {
            Some(t) => st.packets_tat_ns = t,
            None => return Err((Stat::DropSipPacketRate, GuardEventKind::PacketRate)),
        }
        if !invite {
            return Ok(());
        }
        match cfg.invites.check(st.invites_tat_ns, now) {
            Some(t) => st.invites_tat_ns = t,
            None => return Err((Stat::DropSipInviteRate, GuardEventKind::InviteRate)),
        }
        let count = self.sessions.get(&a).copied().unwrap_or_default();
        let limit = if count.limit != 0 {
            count.limit
        } else {
            cfg.max_sessions
        };
        if limit != 0 && count.active >= limit {
            return Err((Stat::DropSipSessionCap, GuardEventKind::SessionCap));
        }
        Ok(())
    }

    /// The kernel's state map is an LRU. Here, when full, drop the entries whose buckets are
    /// already refilled: they behave exactly like a fresh entry, so nothing observable is lost.
    fn make_room_for_state(&mut self, now: u64) {
        if self.guard_state.len() < relay_common::maps::GUARD_STATE_MAX as usize {
            return;
        }
        self.guard_state
            .retain(|_, s| s.packets_tat_ns > now || s.invites_tat_ns > now);
        if self.guard_state.len() >= relay_common::maps::GUARD_STATE_MAX as usize {
            // Everyone is mid-burst: forgetting is still better than unbounded memory.
            self.guard_state.clear();
        }
    }

    /// One event per source per `event_interval_ns`; the drops in between are counted and
    /// reported in the next event.
    fn sample_event(
        &mut self,
        a: Addr,
        port: u16,
        kind: GuardEventKind,
        now: u64,
    ) -> Option<GuardEvent> {
        let interval = self.guard.event_interval_ns as u64;
        let st = self.guard_state.entry(a).or_default();
        let due = interval == 0
            || st.last_event_ns == 0
            || now.saturating_sub(st.last_event_ns) >= interval;
        if !due {
            st.suppressed += 1;
            return None;
        }
        let ev = GuardEvent {
            source: a,
            ts_ns: now,
            kind: kind as u32,
            port,
            _pad: 0,
            suppressed: st.suppressed,
        };
        st.last_event_ns = now;
        st.suppressed = 0;
        Some(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_common::fw::ServiceId;

    const S: u64 = 1_000_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn sip_table(g: GuardSettings) -> UserTables {
        let mut t = UserTables::new();
        t.service_set(Service {
            port: 5060,
            proto: Proto::Udp,
            id: ServiceId::Sip,
            restricted: false,
            sip: true,
        })
        .unwrap();
        t.guard_set(&g).unwrap();
        t
    }

    #[test]
    fn ban_expires_and_purges() {
        let mut t = UserTables::new();
        let now = 100 * S;
        t.ban_add(
            net("192.0.2.1"),
            Some(Duration::from_secs(10)),
            BanReason::Flood,
            now,
        )
        .unwrap();
        t.ban_add(net("2001:db8::1"), None, BanReason::Manual, now)
            .unwrap();
        let v = |t: &mut UserTables, src, now| t.firewall_check(ip(src), 9, Proto::Udp, b"", now).0;
        assert_eq!(v(&mut t, "192.0.2.1", now), Verdict::Drop(Stat::DropBanned));
        // v4-mapped spelling of the same source is the same source.
        assert_eq!(
            v(&mut t, "::ffff:192.0.2.1", now),
            Verdict::Drop(Stat::DropBanned)
        );
        assert_eq!(
            v(&mut t, "2001:db8::1", now + 1000 * S),
            Verdict::Drop(Stat::DropBanned)
        );
        assert_eq!(
            v(&mut t, "192.0.2.1", now + 10 * S),
            Verdict::Pass(Stat::PassOther)
        );
        let info = t.ban_get(net("192.0.2.1"), now + 4 * S).unwrap();
        assert_eq!(info.remaining, Some(Duration::from_secs(6)));
        assert_eq!(info.reason(), Some(BanReason::Flood));
        assert_eq!(t.ban_get(net("2001:db8::1"), now).unwrap().remaining, None);
        assert_eq!(t.ban_purge_expired(now + 11 * S), 1);
        assert_eq!(t.ban_list(now).len(), 1);
        assert!(t.ban_remove(net("2001:db8::1")));
        assert!(!t.ban_remove(net("2001:db8::1")));
    }

    #[test]
    fn prefix_bans_hold_every_address_inside_and_none_outside() {
        let mut t = UserTables::new();
        let now = 100 * S;
        let v = |t: &mut UserTables, src, now| t.firewall_check(ip(src), 9, Proto::Udp, b"", now).0;
        let hour = Some(Duration::from_secs(3600));
        t.ban_add(net("198.51.100.0/24"), hour, BanReason::Flood, now)
            .unwrap();
        t.ban_add(net("2001:db8:1:2::/64"), hour, BanReason::Scanner, now)
            .unwrap();
        for src in ["198.51.100.0", "198.51.100.77", "198.51.100.255"] {
            assert_eq!(
                v(&mut t, src, now),
                Verdict::Drop(Stat::DropBanned),
                "{src}"
            );
        }
        assert_eq!(
            v(&mut t, "198.51.101.1", now),
            Verdict::Pass(Stat::PassOther)
        );
        assert_eq!(
            v(&mut t, "2001:db8:1:2:ffff::9", now),
            Verdict::Drop(Stat::DropBanned)
        );
        assert_eq!(
            v(&mut t, "2001:db8:1:3::9", now),
            Verdict::Pass(Stat::PassOther)
        );
        // An expired host ban inside a live range does not open a hole in it.
        t.ban_add(
            net("198.51.100.7"),
            Some(Duration::from_secs(1)),
            BanReason::Flood,
            now,
        )
        .unwrap();
        assert_eq!(
            v(&mut t, "198.51.100.7", now + 5 * S),
            Verdict::Drop(Stat::DropBanned)
        );
        assert_eq!(t.ban_list(now).len(), 3);
        assert!(t.ban_remove(net("198.51.100.0/24")));
        assert_eq!(
            v(&mut t, "198.51.100.77", now),
            Verdict::Pass(Stat::PassOther)
        );
    }

    #[test]
    fn deny_and_acl() {
        let mut t = UserTables::new();
        t.deny_add("198.51.100.0/24".parse().unwrap(), 7).unwrap();
        t.deny_add("2001:db8:bad::/48".parse().unwrap(), 8).unwrap();
        t.service_set(Service {
            port: 22,
            proto: Proto::Tcp,
            id: ServiceId::Ssh,
            restricted: true,
            sip: false,
        })
        .unwrap();
        t.allow_add(ServiceId::Ssh, "10.0.0.0/8".parse().unwrap())
            .unwrap();
        let mut v = |src: &str, port, proto| t.firewall_check(ip(src), port, proto, b"", 0).0;
        assert_eq!(
            v("198.51.100.9", 1, Proto::Udp),
            Verdict::Drop(Stat::DropDenied)
        );
        assert_eq!(
            v("2001:db8:bad::1", 1, Proto::Udp),
            Verdict::Drop(Stat::DropDenied)
        );
        assert_eq!(
            v("10.1.1.1", 22, Proto::Tcp),
            Verdict::Pass(Stat::PassService)
        );
        assert_eq!(
            v("11.1.1.1", 22, Proto::Tcp),
            Verdict::Drop(Stat::DropServiceAcl)
        );
        // Same port, other protocol: no service.
        assert_eq!(
            v("11.1.1.1", 22, Proto::Udp),
            Verdict::Pass(Stat::PassOther)
        );
        assert_eq!(t.allow_list(ServiceId::Ssh).len(), 1);
        assert_eq!(t.deny_list().len(), 2);
        assert!(t.deny_remove("198.51.100.0/24".parse().unwrap()));
    }

    #[test]
    fn sip_packet_rate_gcra() {
        let mut t = sip_table(GuardSettings {
            packet_rate: 10,
            packet_burst: 3,
            event_interval: Duration::ZERO,
            ..GuardSettings::default()
        });
        let now = 50 * S;
        for _ in 0..3 {
            assert_eq!(
                t.firewall_check(ip("192.0.2.5"), 5060, Proto::Udp, b"OPTIONS x", now)
                    .0,
                Verdict::Pass(Stat::PassSip)
            );
        }
        let (v, ev) = t.firewall_check(ip("192.0.2.5"), 5060, Proto::Udp, b"OPTIONS x", now);
        assert_eq!(v, Verdict::Drop(Stat::DropSipPacketRate));
        let ev = ev.expect("interval 0 reports every drop");
        assert_eq!(ev.kind, GuardEventKind::PacketRate as u32);
        assert_eq!(ev.port, 5060);
        // Another source has its own bucket.
        assert!(
            t.firewall_check(ip("192.0.2.6"), 5060, Proto::Udp, b"x", now)
                .0
                .is_pass()
        );
        // One interval later exactly one more.
        let later = now + S / 10;
        assert!(
            t.firewall_check(ip("192.0.2.5"), 5060, Proto::Udp, b"x", later)
                .0
                .is_pass()
        );
        assert!(
            !t.firewall_check(ip("192.0.2.5"), 5060, Proto::Udp, b"x", later)
                .0
                .is_pass()
        );
    }

    #[test]
    fn trusted_sources_skip_the_sip_guard() {
        let mut t = sip_table(GuardSettings {
            packet_rate: 1,
            packet_burst: 1,
            invite_rate: 1,
            invite_burst: 1,
            max_sessions: 1,
            event_interval: Duration::from_secs(1),
            ..GuardSettings::default()
        });
        let src = ip("198.51.100.7");
        t.sessions_set(
            src,
            SourceSessions {
                active: 5,
                limit: relay_common::guard::TRUSTED,
            },
        )
        .unwrap();
        for _ in 0..10 {
            assert!(
                t.firewall_check(src, 5060, Proto::Udp, b"INVITE sip:a@b SIP/2.0", 10 * S)
                    .0
                    .is_pass()
            );
        }
    }

    #[test]
    fn a_crlf_prefix_does_not_hide_an_invite() {
        let mut t = sip_table(GuardSettings {
            invite_rate: 1,
            invite_burst: 1,
            event_interval: Duration::from_secs(1),
            ..GuardSettings::default()
        });
        let src = ip("203.0.113.5");
        // SIP parsers skip the prefix (RFC 3261 §7.5); the guard must see the INVITE too, as the
        // kernel does.
        let prefixed =
            b"\r\n\r\nINVITE sip:alice@example.net SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n";
        assert!(
            t.firewall_check(src, 5060, Proto::Udp, prefixed, 10 * S)
                .0
                .is_pass()
        );
        assert_eq!(
            t.firewall_check(src, 5060, Proto::Udp, prefixed, 10 * S).0,
            Verdict::Drop(Stat::DropSipInviteRate)
        );
    }

    #[test]
    fn invite_cps_and_session_cap() {
        let mut t = sip_table(GuardSettings {
            invite_rate: 1,
            invite_burst: 2,
            max_sessions: 2,
            event_interval: Duration::from_secs(1),
            ..GuardSettings::default()
        });
        let src = ip("203.0.113.4");
        let now = 10 * S;
        let inv = |t: &mut UserTables, now| {
            t.firewall_check(src, 5060, Proto::Udp, b"INVITE sip:a@b SIP/2.0", now)
        };
        assert!(inv(&mut t, now).0.is_pass());
        assert!(inv(&mut t, now).0.is_pass());
        let (v, ev) = inv(&mut t, now);
        assert_eq!(v, Verdict::Drop(Stat::DropSipInviteRate));
        assert!(ev.is_some(), "first drop of a source is reported");
        let (_, ev) = inv(&mut t, now);
        assert!(
            ev.is_none(),
            "sampled: second drop within the interval is suppressed"
        );
        // Nor is an "INVITE" over TCP, as in the kernel: only its packet rate counts.
        t.service_set(Service {
            port: 5060,
            proto: Proto::Tcp,
            id: ServiceId::Sip,
            restricted: false,
            sip: true,
        })
        .unwrap();
        assert_eq!(
            t.firewall_check(src, 5060, Proto::Tcp, b"INVITE sip:a@b SIP/2.0", now)
                .0,
            Verdict::Pass(Stat::PassSip)
        );
        // Non-INVITEs are not subject to CPS.
        assert!(
            t.firewall_check(src, 5060, Proto::Udp, b"BYE sip:x SIP/2.0", now)
                .0
                .is_pass()
        );
        // Session cap: sipd says 2 active; default cap 2.
        t.sessions_set(
            src,
            SourceSessions {
                active: 2,
                limit: 0,
            },
        )
        .unwrap();
        let (v, ev) = inv(&mut t, now + 5 * S);
        assert_eq!(v, Verdict::Drop(Stat::DropSipSessionCap));
        let ev = ev.expect("interval elapsed");
        assert_eq!(ev.kind, GuardEventKind::SessionCap as u32);
        assert_eq!(ev.suppressed, 1);
        // A per-source limit overrides the default.
        t.sessions_set(
            src,
            SourceSessions {
                active: 2,
                limit: 5,
            },
        )
        .unwrap();
        assert!(inv(&mut t, now + 10 * S).0.is_pass());
        t.sessions_set(src, SourceSessions::default()).unwrap();
        assert_eq!(t.sessions_get(src), SourceSessions::default());
    }

    #[test]
    fn capacity_is_enforced() {
        let mut t = UserTables::new();
        for i in 0..relay_common::maps::SERVICES_MAX {
            t.service_set(Service {
                port: i as u16,
                proto: Proto::Udp,
                id: ServiceId::Other,
                restricted: false,
                sip: false,
            })
            .unwrap();
        }
        let extra = Service {
            port: 60000,
            proto: Proto::Udp,
            id: ServiceId::Other,
            restricted: false,
            sip: false,
        };
        assert!(matches!(t.service_set(extra), Err(DataPlaneError::Full(_))));
        // Overwriting an existing key is fine when full.
        t.service_set(Service { port: 1, ..extra }).unwrap();
    }
}
