//! Bans: the IDS's (an offender as its prefix, a range once enough of it offended), the
//! operators' (stored, see [`super::changes`]), all in sipd's bounded [`Book`], copied into the
//! data plane, and purged by sipd when they expire (whether or not `relayd` runs).

use std::sync::MutexGuard;
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use serde::Serialize;
use tracing::{error, info, warn};

use relay_user::{BanInfo, BanReason, Cidr};

use super::Firewall;
use super::book::{Ban, BanMeta, Book, By, Inserted};
use super::policy::Promoter;
use crate::events::Audience;
use crate::mgmt::unix_ms;

/// The table and what decides ranges, behind one lock.
#[derive(Debug)]
pub(super) struct BanState {
    pub(super) book: Book,
    promoter: Promoter,
    counters: BanCounters,
    /// Purges run, for spacing the data plane's full sweeps.
    purges: u64,
}

/// The data plane is swept for expired bans sipd has no record of once in this many purges
/// (its own expired bans leave at every purge, by key).
const STRAY_SWEEP_EVERY: u64 = 60;

impl BanState {
    pub(super) fn new(cfg: &super::policy::BansConfig) -> BanState {
        BanState {
            book: Book::new(cfg.capacity as usize),
            promoter: Promoter::new(cfg),
            counters: BanCounters::default(),
            purges: 0,
        }
    }
}

/// What happened to bans since start, for `/metrics` and the alerts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BanCounters {
    /// Bans that gave way to a newer one in a full table (the soonest-expiring).
    pub replaced: u64,
    /// New bans not added because every ban in the full table outlasts them.
    pub refused: u64,
    /// Ranges banned because enough of their addresses offended.
    pub promoted: u64,
    /// Expired bans sipd purged from its table and the data plane.
    pub purged: u64,
    /// Unix ms and a description of the last time the table was full.
    pub last_full: Option<(u64, String)>,
}

/// A ban as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct BanView {
    /// The banned prefix (`192.0.2.7/32`, `2001:db8:1:2::/64`, `198.51.100.0/24`).
    pub prefix: String,
    /// Why: `manual`, `flood`, `scanner`, `brute-force`, `enumeration`.
    pub reason: &'static str,
    /// `ids` or `staff`.
    pub by: By,
    /// Unix ms; `null`: permanent.
    pub expires_ms: Option<u64>,
    /// `null`: permanent.
    pub remaining_secs: Option<u64>,
    /// Whether the ban had ended when the list was made (it is purged at the next sweep).
    pub expired: bool,
    /// The operator's note.
    pub note: Option<String>,
    /// Stored, so applied again after a restart (operators' bans).
    pub persistent: bool,
    /// What the IDS saw (`offence`, `count`, `window_secs`, `evidence`, …, as its `ban` audit
    /// entry records it); `null` for operators' bans and bans adopted after a restart.
    pub evidence: Option<serde_json::Value>,
    /// Packets dropped for this ban: by sipd's userspace firewall since the ban was made, plus
    /// what the XDP program dropped since the ban went into the kernel (counted per ban there;
    /// `drop_banned` in `/metrics` is the total of all bans).
    pub hits: u64,
    /// Unix ms of the offender's first offence as the IDS recorded it (the first counted
    /// toward its first ban; kept across repeat offences); for operators' bans and ranges,
    /// when the ban was made.
    pub first_seen_ms: u64,
    /// Unix ms of the last offence or the last packet sipd or the kernel dropped for this ban.
    pub last_seen_ms: u64,
    /// The IDS rule that earned it (`scanner`, `brute-force`, `enumeration`, `flood`,
    /// `dialog-probe`; `range:<rule>` for a promoted range), or `staff:<username>`.
    pub rule: String,
}

/// The name of a ban reason as the API's ban listings spell it (`brute-force`, …).
pub fn reason_name(r: BanReason) -> &'static str {
    match r {
        BanReason::Manual => "manual",
        BanReason::Flood => "flood",
        BanReason::Scanner => "scanner",
        BanReason::BruteForce => "brute-force",
        BanReason::Enumeration => "enumeration",
    }
}

/// What the kernel dropped for one ban: packets, and the Unix ms of the last.
#[derive(Debug, Clone, Copy, Default)]
struct KernelHits {
    hits: u64,
    last_ms: u64,
}

impl KernelHits {
    /// From the data plane's listing (`last_hit_ns` on its monotonic clock); `None` when the
    /// kernel dropped nothing for it (always so in userspace mode).
    fn of(b: &BanInfo, now: Clocks) -> Option<KernelHits> {
        (b.hits > 0).then(|| KernelHits {
            hits: b.hits,
            last_ms: now
                .wall_ms
                .saturating_sub(now.mono_ns.saturating_sub(b.last_hit_ns) / 1_000_000),
        })
    }
}

pub(super) fn view(b: &Ban, now_ms: u64) -> BanView {
    view_with(b, now_ms, None)
}

/// [`view`] with what the kernel dropped for the ban added in.
fn view_with(b: &Ban, now_ms: u64, kernel: Option<&KernelHits>) -> BanView {
    let k = kernel.copied().unwrap_or_default();
    BanView {
        prefix: b.prefix.to_string(),
        reason: reason_name(b.reason),
        by: b.by,
        expires_ms: b.until_ms,
        remaining_secs: b.until_ms.map(|u| u.saturating_sub(now_ms).div_ceil(1000)),
        expired: b.expired(now_ms),
        note: b.note.clone(),
        persistent: b.by == By::Staff,
        evidence: b.meta.evidence.clone(),
        hits: b.meta.hits + k.hits,
        first_seen_ms: b.meta.first_seen_ms,
        last_seen_ms: b.meta.last_seen_ms.max(k.last_ms),
        rule: b.meta.rule.clone(),
    }
}

pub(super) fn net(c: Cidr) -> IpNet {
    IpNet::new(c.addr(), c.prefix_len()).unwrap_or_else(|_| IpNet::from(c.addr()))
}

fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// The data plane's monotonic clock and the wall clock, read together.
#[derive(Debug, Clone, Copy)]
struct Clocks {
    mono_ns: u64,
    wall_ms: u64,
}

impl Clocks {
    fn now() -> Clocks {
        Clocks {
            mono_ns: relay_user::clock::monotonic_ns(),
            wall_ms: now_ms(),
        }
    }
}

fn until(now_ms: u64, d: Duration) -> u64 {
    now_ms.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Firewall {
    pub(super) fn ban_state(&self) -> MutexGuard<'_, BanState> {
        self.bans.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A ban the IDS decided on, with what it saw (`evidence`) and when the offender first
    /// offended (`first_offence_ms`, Unix ms: the ban's first seen): the offender's prefix,
    /// and its range when this offender made enough of them. An operator's ban of the same prefix is
    /// left as it is.
    pub fn ban(
        &self,
        ip: std::net::IpAddr,
        duration: Duration,
        offence: super::Offence,
        evidence: Option<serde_json::Value>,
        first_offence_ms: u64,
    ) {
        let prefix = self.bans_cfg.offender(ip);
        let reason = super::ban_reason(offence);
        let now = now_ms();
        let mut end = until(now, duration);
        let rule = crate::server::offence_name(offence);
        let mut meta = BanMeta {
            rule: rule.to_owned(),
            evidence,
            first_seen_ms: first_offence_ms.min(now),
            last_seen_ms: now,
            hits: 0,
        };
        let range = {
            let mut st = self.ban_state();
            match st.book.get(&prefix) {
                Some(b) if b.by == By::Staff => return,
                // A repeat offence never shortens a ban, nor forgets what it stopped.
                Some(b) => {
                    end = end.max(b.until_ms.unwrap_or(u64::MAX));
                    meta.first_seen_ms = b.meta.first_seen_ms.min(meta.first_seen_ms);
                    meta.hits = b.meta.hits;
                }
                None => {}
            }
            st.promoter.offend(prefix, Instant::now())
        };
        warn!(%ip, %prefix, ?duration, ?offence, "banning source");
        self.insert(Ban {
            prefix,
            reason,
            by: By::Ids,
            until_ms: Some(end),
            note: None,
            meta,
        });
        if let Some(range) = range {
            self.ban_range(range, end, reason, rule, prefix);
        }
    }

    /// Enough offenders inside `range`: the range is banned, and the IDS's bans inside it
    /// that end no later go (the range holds them; their room is free again).
    fn ban_range(&self, range: Cidr, end: u64, reason: BanReason, rule: &str, last: Cidr) {
        let trusted = self.trusted.read().unwrap_or_else(|p| p.into_inner());
        if let Some(peer) = trusted.iter().find(|ip| range.contains(**ip)) {
            warn!(%range, %peer, "enough of this range offended, but it holds a trusted peer: its offenders stay banned one by one");
            return;
        }
        drop(trusted);
        warn!(%range, "banning a whole range: enough of its addresses offended");
        let now = now_ms();
        let first = self
            .ban_state()
            .book
            .get(&range)
            .map_or(now, |b| b.meta.first_seen_ms);
        if !self.insert(Ban {
            prefix: range,
            reason,
            by: By::Ids,
            until_ms: Some(end),
            note: None,
            meta: BanMeta {
                rule: format!("range:{rule}"),
                evidence: Some(serde_json::json!({
                    "offence": rule,
                    "promoted_after": last.to_string(),
                    "evidence": format!(
                        "{} banned prefixes inside {range} within {}s",
                        self.bans_cfg.promote_after, self.bans_cfg.promote_window_secs
                    ),
                })),
                first_seen_ms: first,
                last_seen_ms: now,
                hits: 0,
            },
        }) {
            return;
        }
        let covered: Vec<Ban> = {
            let mut st = self.ban_state();
            st.counters.promoted += 1;
            let inside: Vec<Cidr> = st
                .book
                .covered_by(&range, Some(end))
                .into_iter()
                .filter(|c| st.book.get(c).is_some_and(|b| b.by == By::Ids))
                .collect();
            inside.iter().filter_map(|c| st.book.remove(c)).collect()
        };
        for b in covered {
            self.dp_remove(b.prefix);
        }
    }

    /// Into the book and the data plane, making room as the book says, and to the cluster's
    /// other nodes. Whether it went in.
    pub(super) fn insert(&self, ban: Ban) -> bool {
        let shared = ban.clone();
        let ok = self.insert_quiet(ban);
        if ok {
            self.share_added(&shared);
        }
        ok
    }

    /// [`Firewall::insert`] without telling the cluster (a ban another node made).
    pub(super) fn insert_quiet(&self, ban: Ban) -> bool {
        let prefix = ban.prefix;
        let r = self.ban_state().book.insert(ban.clone());
        match r {
            Inserted::Fits => {}
            Inserted::Replaced(old) => self.gave_way(old, &ban),
            Inserted::Refused => {
                let mut st = self.ban_state();
                st.counters.refused += 1;
                let what = format!(
                    "{prefix} not banned: the table is full ({} per family) of bans that outlast it",
                    st.book.capacity()
                );
                error!(%prefix, capacity = st.book.capacity(), "BAN TABLE FULL: ban not added, every ban there outlasts it");
                st.counters.last_full = Some((now_ms(), what));
                return false;
            }
        }
        self.dp_apply(&ban);
        self.events
            .publish("ban_added", Audience::View, &view(&ban, now_ms()));
        true
    }

    fn gave_way(&self, old: Ban, new: &Ban) {
        {
            let mut st = self.ban_state();
            st.counters.replaced += 1;
            let what = format!(
                "{} gave way to {} (the table holds {} per family)",
                old.prefix,
                new.prefix,
                st.book.capacity()
            );
            st.counters.last_full = Some((now_ms(), what));
            error!(replaced = %old.prefix, by = %new.prefix, capacity = st.book.capacity(), "BAN TABLE FULL: the ban expiring soonest gave way");
        }
        self.dp_remove(old.prefix);
        if old.by == By::Staff {
            self.unstore(&[old.prefix]);
        }
    }

    pub(super) fn dp_apply(&self, b: &Ban) {
        let now = now_ms();
        let left = b
            .until_ms
            .map(|u| Duration::from_millis(u.saturating_sub(now).max(1)));
        if let Err(e) = self.dp.ban_add(b.prefix, left, b.reason) {
            error!(prefix = %b.prefix, error = %e, "ban not applied to the data plane");
        }
    }

    pub(super) fn dp_remove(&self, prefix: Cidr) {
        if let Err(e) = self.dp.ban_remove(prefix) {
            error!(%prefix, error = %e, "ban not removed from the data plane");
        }
        self.announce_removed(prefix);
    }

    /// `ban_removed`: the prefix is no longer banned (lifted, expired or given way).
    pub(super) fn announce_removed(&self, prefix: Cidr) {
        self.events.publish(
            "ban_removed",
            Audience::View,
            &serde_json::json!({ "addr": prefix.to_string() }),
        );
    }

    /// Operators' bans leave the store once they have expired or gave way (no one changed
    /// them: no audit entry).
    fn unstore(&self, prefixes: &[Cidr]) {
        let r = self.store.write(|tx| {
            for p in prefixes {
                tx.remove_manual_ban(&net(*p))?;
            }
            Ok(())
        });
        if let Err(e) = r {
            warn!(error = %e, "expired bans not removed from the store");
        }
    }

    /// Expired bans out of the book, the data plane and the store. Run periodically by sipd
    /// itself, so nothing depends on `relayd` sweeping the kernel's tries.
    pub fn purge_expired(&self) -> usize {
        let expired = self.ban_state().book.take_expired(now_ms());
        for b in &expired {
            self.dp_remove(b.prefix);
        }
        let stored: Vec<Cidr> = expired
            .iter()
            .filter(|b| b.by == By::Staff)
            .map(|b| b.prefix)
            .collect();
        if !stored.is_empty() {
            self.unstore(&stored);
        }
        // Whatever else the data plane holds that has run out (it ignores such entries): a
        // walk of the whole trie, so only every STRAY_SWEEP_EVERY-th purge.
        let sweep = {
            let mut st = self.ban_state();
            st.purges += 1;
            st.purges % STRAY_SWEEP_EVERY == 1
        };
        let strays = if sweep {
            self.dp.ban_purge_expired().unwrap_or(0)
        } else {
            0
        };
        let n = expired.len() + strays;
        if n > 0 {
            self.ban_state().counters.purged += n as u64;
            info!(purged = n, "expired bans purged");
        }
        n
    }

    /// Every ban, by prefix, with the kernel's hits (one walk of its ban maps, before the
    /// book's lock is taken).
    pub fn ban_views(&self) -> Vec<BanView> {
        let clocks = Clocks::now();
        let kernel: std::collections::HashMap<Cidr, KernelHits> = self
            .dp
            .ban_list()
            .inspect_err(|e| warn!(error = %e, "kernel ban hits unreadable"))
            .unwrap_or_default()
            .iter()
            .filter_map(|b| Some((b.prefix, KernelHits::of(b, clocks)?)))
            .collect();
        self.ban_state()
            .book
            .iter()
            .map(|b| view_with(b, clocks.wall_ms, kernel.get(&b.prefix)))
            .collect()
    }

    /// The ban of exactly `prefix`, with the kernel's hits.
    pub fn ban_view(&self, prefix: Cidr) -> Option<BanView> {
        let clocks = Clocks::now();
        let kernel = self
            .dp
            .ban_get(prefix)
            .ok()
            .flatten()
            .and_then(|b| KernelHits::of(&b, clocks));
        self.ban_state()
            .book
            .get(&prefix)
            .map(|b| view_with(b, clocks.wall_ms, kernel.as_ref()))
    }

    /// What happened to bans since start (replaced, refused, promoted, purged, last full).
    pub fn ban_counters(&self) -> BanCounters {
        self.ban_state().counters.clone()
    }

    /// Bans held now and the capacity per family.
    pub fn ban_fill(&self) -> (usize, usize) {
        let st = self.ban_state();
        (st.book.len(), st.book.capacity())
    }

    /// At start: the store's bans (moved to prefix keys first, if an older build wrote them),
    /// then what the data plane kept (the IDS's bans survive a restart in pinned maps), all
    /// into the book and from there into the data plane; what the book has no room for or
    /// has expired leaves the data plane.
    pub(super) fn load_bans(&self) {
        match self.store.migrate_ban_keys() {
            Ok(0) => {}
            Ok(n) => info!(
                bans = n,
                "stored address bans moved to their host prefixes (/32, /128)"
            ),
            Err(e) => error!(error = %e, "stored bans not migrated to prefixes"),
        }
        let now = now_ms();
        let mut expired = Vec::new();
        let mut n = 0;
        for m in self.store.manual_bans().into_iter().flatten() {
            let prefix = Cidr::from(m.prefix);
            let b = Ban {
                prefix,
                reason: BanReason::Manual,
                by: By::Staff,
                until_ms: m.until_ms,
                note: m.reason,
                meta: BanMeta {
                    rule: staff_rule(m.by.as_deref()),
                    evidence: None,
                    first_seen_ms: m.created_ms,
                    last_seen_ms: m.created_ms,
                    hits: 0,
                },
            };
            if b.expired(now) {
                expired.push(prefix);
            } else if self.insert_quiet(b) {
                n += 1;
            }
        }
        if !expired.is_empty() {
            self.unstore(&expired);
        }
        let kept = self.dp.ban_list().unwrap_or_default();
        for info in &kept {
            if self.ban_state().book.get(&info.prefix).is_some() {
                continue;
            }
            let adopted = adopt(info, now).is_some_and(|b| self.insert_quiet(b));
            if adopted {
                n += 1;
            } else {
                self.dp_remove(info.prefix);
            }
        }
        if n > 0 {
            info!(bans = n, "bans from the store and the data plane applied");
        }
    }
}

/// A ban the data plane kept that sipd has no record of (the IDS's, across a restart).
fn adopt(info: &BanInfo, now: u64) -> Option<Ban> {
    if info.expired {
        return None;
    }
    let reason = info.reason().unwrap_or(BanReason::Flood);
    Some(Ban {
        prefix: info.prefix,
        reason,
        by: if reason == BanReason::Manual {
            By::Staff
        } else {
            By::Ids
        },
        until_ms: info.remaining.map(|d| until(now, d)),
        note: None,
        // What the IDS saw did not survive the restart.
        meta: BanMeta {
            rule: if reason == BanReason::Manual {
                staff_rule(None)
            } else {
                reason_name(reason).to_owned()
            },
            evidence: None,
            first_seen_ms: now,
            last_seen_ms: now,
            hits: 0,
        },
    })
}

/// The `rule` of an operator's ban: `staff:<username>`, `staff` when the store does not say
/// who (bans stored before it did).
pub(super) fn staff_rule(username: Option<&str>) -> String {
    match username {
        Some(u) => format!("staff:{u}"),
        None => "staff".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use relay_user::DataPlane;
    use sipd_core::b2bua::Offence;

    use super::now_ms;
    use crate::config::Config;
    use crate::firewall::{BansConfig, Firewall};
    use crate::store::Store;

    /// On the userspace plane, each dropped connection from a banned source counts on its
    /// ban; first seen is the offender's first offence, and a repeat offence keeps it and
    /// the count.
    #[test]
    fn an_ids_ban_keeps_its_evidence_and_counts_its_hits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let dp = Arc::new(DataPlane::userspace("test"));
        let fw = Firewall::new(
            &Config::default().firewall,
            &BansConfig::default(),
            store,
            dp,
        );
        let ip = "198.51.100.66".parse().unwrap();
        let seen = serde_json::json!({"offence": "scanner", "count": 1});
        // The IDS saw the first offence a minute and a half before it banned.
        let first = now_ms() - 90_000;
        fw.ban(
            ip,
            Duration::from_secs(600),
            Offence::Scanner,
            Some(seen.clone()),
            first,
        );
        let peer: SocketAddr = "198.51.100.66:5099".parse().unwrap();
        let local: SocketAddr = "192.0.2.10:5060".parse().unwrap();
        assert!(!fw.admits_connection(peer, local));
        assert!(!fw.admits_connection(peer, local));
        let v = fw.ban_views();
        assert_eq!(v.len(), 1);
        assert_eq!(
            (v[0].rule.as_str(), v[0].evidence.as_ref(), v[0].hits),
            ("scanner", Some(&seen), 2)
        );
        assert_eq!(v[0].first_seen_ms, first, "the first offence, not the ban");
        assert!(v[0].last_seen_ms >= first + 90_000);
        // A repeat ban whose count started later keeps the first offence.
        fw.ban(
            ip,
            Duration::from_secs(600),
            Offence::BruteForce,
            None,
            now_ms(),
        );
        let v = fw.ban_views();
        assert_eq!(
            (v[0].rule.as_str(), v[0].hits, v[0].first_seen_ms),
            ("brute-force", 2, first)
        );
    }
}
