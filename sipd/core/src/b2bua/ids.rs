//! The SIP side of the IDS: sources that fail digest authentication again and again, probe
//! us with requests of any method, spray in-dialog requests at dialogs that are not theirs,
//! flood, or announce a scanner's User-Agent earn a kernel ban that doubles for each repeat
//! offence.
//!
//! What it remembers is one entry per source in a table of stated capacity
//! ([`IdsConfig::max_sources`]): a spoofing flood cannot grow it. When it is full, the source
//! seen longest ago is forgotten (counted in [`IdsStats::evicted`]); an active attacker is
//! always among the most recently seen, so eviction costs it nothing.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// What a source did to earn its ban (the shell maps it to the data plane's ban reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Offence {
    /// A known scanner's User-Agent.
    Scanner,
    /// Failed digest responses (or unparsable `Authorization`), again and again.
    BruteForce,
    /// Calls matching no rule, REGISTERs and out-of-dialog requests from a source no rule
    /// names, again and again.
    Enumeration,
    /// The kernel guard kept rate-limiting it.
    Flood,
    /// In-dialog requests (BYE, INFO, …) and CANCELs naming dialogs or transactions that do
    /// not exist or are someone else's, again and again: looking for a live call to end.
    DialogProbe,
}

/// The IDS thresholds and ban lengths, from `[ids]` in `sbc.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdsConfig {
    /// Failures within `window` that earn a ban; 0 turns brute-force bans off.
    pub failures_before_ban: u32,
    /// How far back failures and flood reports are counted.
    pub window: Duration,
    /// The first ban's length; each later offence of the same source within a day doubles it.
    pub ban: Duration,
    /// The longest a doubled ban gets.
    pub ban_max: Duration,
    /// Ban sources whose User-Agent is a known scanner's.
    pub ban_scanners: bool,
    /// Kernel guard reports (packet or INVITE rate exceeded; sampled at most once a second per
    /// source) within `window` that earn a ban; 0 leaves floods to the kernel's rate limits.
    pub floods_before_ban: u32,
    /// Most sources tracked at once (failures, floods and past offences together).
    pub max_sources: usize,
    /// In-dialog requests and CANCELs within `window` naming no dialog or transaction of
    /// the sender's that earn a ban; 0: refused and counted, never banned for. Kept apart
    /// from `failures_before_ban` so that a peer's few stray BYEs (a call we already forgot)
    /// never add up with anything else.
    pub dialog_probes_before_ban: u32,
}

impl IdsConfig {
    /// The default capacity of the per-source table: about 1 KiB each at most, so 16 MiB.
    pub const DEFAULT_MAX_SOURCES: usize = 16_384;
}

/// User-Agent substrings of SIP scanners (SIPVicious, sipsak floods, …), lowercase.
const SCANNERS: &[&str] = &[
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipsak",
    "vaxsipuseragent",
    "pplsip",
    "iwar",
    "sundayddr",
];

/// How long a source's past bans are remembered for doubling the next one.
const OFFENCE_MEMORY: Duration = Duration::from_secs(86_400);

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdsStats {
    /// Sources tracked now.
    pub sources: usize,
    /// Sources forgotten because the table was full.
    pub evicted: u64,
}

#[derive(Debug)]
struct Track {
    failures: VecDeque<Instant>,
    floods: VecDeque<Instant>,
    probes: VecDeque<Instant>,
    /// Bans handed out, and when the last was.
    offences: u32,
    /// The first offence counted toward the first ban this entry remembers: what the ban
    /// list shows as first seen (the ban itself comes only at the threshold).
    first_offence: Option<Instant>,
    last_offence: Option<Instant>,
    last_seen: Instant,
}

impl Track {
    fn new(now: Instant) -> Track {
        Track {
            failures: VecDeque::new(),
            floods: VecDeque::new(),
            probes: VecDeque::new(),
            offences: 0,
            first_offence: None,
            last_offence: None,
            last_seen: now,
        }
    }

    /// Whether anything in it still matters at `now`.
    fn live(&self, now: Instant, window: Duration) -> bool {
        let recent =
            |q: &VecDeque<Instant>| q.back().is_some_and(|t| now.duration_since(*t) <= window);
        recent(&self.failures)
            || recent(&self.floods)
            || recent(&self.probes)
            || self
                .last_offence
                .is_some_and(|t| now.duration_since(t) < OFFENCE_MEMORY)
    }
}

/// The intrusion detection counters per source: failed passwords, probes and kernel flood
/// reports, and past offences (for doubling bans), in a table of `max_sources`.
#[derive(Debug)]
pub struct Ids {
    cfg: IdsConfig,
    sources: HashMap<IpAddr, Track>,
    evicted: u64,
}

/// Adds `now` to `q`, drops what fell out of `window`; when `threshold` is reached, the
/// oldest offence counted (the queue is then emptied: the ban starts a new count). The queue
/// never holds more than `threshold` entries.
fn count(
    q: &mut VecDeque<Instant>,
    now: Instant,
    window: Duration,
    threshold: u32,
) -> Option<Instant> {
    q.push_back(now);
    while q.front().is_some_and(|t| now.duration_since(*t) > window) {
        q.pop_front();
    }
    if q.len() >= threshold as usize {
        let first = q.front().copied();
        q.clear();
        return first;
    }
    None
}

impl Ids {
    /// An empty table under `cfg`.
    pub fn new(cfg: IdsConfig) -> Ids {
        Ids {
            cfg,
            sources: HashMap::new(),
            evicted: 0,
        }
    }

    /// Its counters now.
    pub fn stats(&self) -> IdsStats {
        IdsStats {
            sources: self.sources.len(),
            evicted: self.evicted,
        }
    }

    /// The entry of `ip`, making room when the table is full: expired entries go first, then
    /// the one seen longest ago.
    fn track(&mut self, now: Instant, ip: IpAddr) -> &mut Track {
        if !self.sources.contains_key(&ip) && self.sources.len() >= self.cfg.max_sources.max(1) {
            self.expire(now);
            if self.sources.len() >= self.cfg.max_sources.max(1)
                && let Some(oldest) = self
                    .sources
                    .iter()
                    .min_by_key(|(_, t)| t.last_seen)
                    .map(|(ip, _)| *ip)
            {
                self.sources.remove(&oldest);
                self.evicted += 1;
            }
        }
        let t = self.sources.entry(ip).or_insert_with(|| Track::new(now));
        t.last_seen = now;
        t
    }

    /// The ban `ip` earned now; `first`: the oldest offence that counted toward it.
    fn ban_for(&mut self, now: Instant, ip: IpAddr, first: Instant) -> Duration {
        let (ban, max) = (self.cfg.ban, self.cfg.ban_max);
        let t = self.track(now, ip);
        let d = ban.saturating_mul(1u32 << t.offences.min(16)).min(max);
        t.offences += 1;
        t.last_offence = Some(now);
        t.first_offence = Some(t.first_offence.map_or(first, |f| f.min(first)));
        d
    }

    /// When `ip` first offended, as far as this table remembers (its entry lives while it
    /// keeps offending, and a day after its last ban): the first offence counted toward
    /// its first ban. `None` for a source never banned or forgotten.
    pub fn first_offence(&self, ip: IpAddr) -> Option<Instant> {
        self.sources.get(&ip)?.first_offence
    }

    /// Records a failed digest (or a probe); `Some(ban)` when the source crossed the
    /// threshold.
    pub fn auth_failed(&mut self, now: Instant, ip: IpAddr) -> Option<Duration> {
        let (n, w) = (self.cfg.failures_before_ban, self.cfg.window);
        if n == 0 {
            return None;
        }
        let first = count(&mut self.track(now, ip).failures, now, w, n)?;
        Some(self.ban_for(now, ip, first))
    }

    /// Records a flood report from the kernel guard; `Some(ban)` when the source keeps
    /// flooding.
    pub fn flood(&mut self, now: Instant, ip: IpAddr) -> Option<Duration> {
        let (n, w) = (self.cfg.floods_before_ban, self.cfg.window);
        if n == 0 {
            return None;
        }
        let first = count(&mut self.track(now, ip).floods, now, w, n)?;
        Some(self.ban_for(now, ip, first))
    }

    /// Records an in-dialog request or CANCEL that named no dialog or transaction of the
    /// sender's; `Some(ban)` when the source keeps doing it.
    pub fn dialog_probe(&mut self, now: Instant, ip: IpAddr) -> Option<Duration> {
        let (n, w) = (self.cfg.dialog_probes_before_ban, self.cfg.window);
        if n == 0 {
            return None;
        }
        let first = count(&mut self.track(now, ip).probes, now, w, n)?;
        Some(self.ban_for(now, ip, first))
    }

    /// `Some(ban)` when `user_agent` is a scanner's.
    pub fn scanner(
        &mut self,
        now: Instant,
        ip: IpAddr,
        user_agent: Option<&str>,
    ) -> Option<Duration> {
        (self.cfg.ban_scanners && is_scanner(user_agent?)).then(|| self.ban_for(now, ip, now))
    }

    /// Forgets counts older than their windows and offences older than a day.
    pub fn expire(&mut self, now: Instant) {
        let w = self.cfg.window;
        self.sources.retain(|_, t| t.live(now, w));
    }
}

/// Whether a User-Agent (or Server) value is a known scanner's.
pub fn is_scanner(user_agent: &str) -> bool {
    let ua = user_agent.to_ascii_lowercase();
    SCANNERS.iter().any(|s| ua.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> IdsConfig {
        IdsConfig {
            failures_before_ban: 3,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(300),
            ban_max: Duration::from_secs(1000),
            ban_scanners: true,
            floods_before_ban: 2,
            max_sources: 1024,
            dialog_probes_before_ban: 5,
        }
    }

    #[test]
    fn bans_double_up_to_the_cap() {
        let mut ids = Ids::new(cfg());
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let t = Instant::now();
        assert!(ids.flood(t, "192.0.2.8".parse().unwrap()).is_none());
        assert_eq!(
            ids.flood(t, "192.0.2.8".parse().unwrap()),
            Some(Duration::from_secs(300))
        );
        let mut bans = Vec::new();
        for i in 0..9 {
            if let Some(d) = ids.auth_failed(t + Duration::from_secs(i), ip) {
                bans.push(d.as_secs());
            }
        }
        assert_eq!(bans, vec![300, 600, 1000]);
        assert!(ids.scanner(t, ip, Some("friendly-scanner 1.0")).is_some());
        assert!(ids.scanner(t, ip, Some("iWar")).is_some());
        assert!(ids.scanner(t, ip, Some("Linphone")).is_none());
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let mut ids = Ids::new(IdsConfig {
            failures_before_ban: 2,
            window: Duration::from_secs(10),
            ban: Duration::from_secs(1),
            ban_max: Duration::from_secs(1),
            ban_scanners: false,
            floods_before_ban: 0,
            max_sources: 16,
            dialog_probes_before_ban: 0,
        });
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let t = Instant::now();
        assert!(ids.auth_failed(t, ip).is_none());
        assert!(ids.auth_failed(t + Duration::from_secs(20), ip).is_none());
        assert!(ids.auth_failed(t + Duration::from_secs(21), ip).is_some());
    }

    /// Dialog probes have a count of their own: a few never ban, the threshold does, and
    /// they do not add up with failed passwords.
    #[test]
    fn dialog_probes_count_apart() {
        let mut ids = Ids::new(cfg());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let t = Instant::now();
        assert!(ids.auth_failed(t, ip).is_none());
        assert!(ids.auth_failed(t, ip).is_none());
        for _ in 0..4 {
            assert!(ids.dialog_probe(t, ip).is_none());
        }
        assert_eq!(ids.dialog_probe(t, ip), Some(Duration::from_secs(300)));
        let mut off = Ids::new(IdsConfig {
            dialog_probes_before_ban: 0,
            ..cfg()
        });
        assert!((0..100).all(|_| off.dialog_probe(t, ip).is_none()));
    }

    /// The first offence is the oldest one that counted toward the first ban, and a
    /// repeat ban keeps it.
    #[test]
    fn the_first_offence_is_kept_for_the_ban() {
        let mut ids = Ids::new(cfg());
        let ip: IpAddr = "192.0.2.5".parse().unwrap();
        let t = Instant::now();
        let s = Duration::from_secs;
        assert!(ids.auth_failed(t, ip).is_none());
        // Out of the 60 s window by the time the threshold is reached: it did not count.
        assert!(ids.auth_failed(t + s(100), ip).is_none());
        assert!(ids.auth_failed(t + s(110), ip).is_none());
        assert_eq!(ids.first_offence(ip), None, "not banned yet");
        assert!(ids.auth_failed(t + s(120), ip).is_some());
        assert_eq!(ids.first_offence(ip), Some(t + s(100)));
        for i in 0..3 {
            ids.auth_failed(t + s(200 + i), ip);
        }
        assert_eq!(
            ids.first_offence(ip),
            Some(t + s(100)),
            "kept by a repeat ban"
        );
        let scanner: IpAddr = "192.0.2.6".parse().unwrap();
        assert!(ids.scanner(t + s(5), scanner, Some("sipvicious")).is_some());
        assert_eq!(ids.first_offence(scanner), Some(t + s(5)));
    }

    /// A table full of spoofed sources: it stays at its capacity, the source seen longest ago
    /// goes (counted), and the attacker that keeps going is still banned on time.
    #[test]
    fn the_table_is_bounded_and_full_evicts_the_stalest() {
        let mut ids = Ids::new(IdsConfig {
            max_sources: 100,
            ..cfg()
        });
        let t = Instant::now();
        let attacker: IpAddr = "198.51.100.1".parse().unwrap();
        assert!(ids.auth_failed(t, attacker).is_none());
        for i in 0..1000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            ids.auth_failed(t + Duration::from_millis(u64::from(i)), ip);
            assert!(ids.stats().sources <= 100);
            if i == 500 {
                // The attacker is active again: it is among the freshest.
                assert!(
                    ids.auth_failed(t + Duration::from_millis(500), attacker)
                        .is_none()
                );
            }
        }
        assert_eq!(ids.stats().sources, 100);
        // 1,000 sources and the attacker twice (it went stale and came back) through 100 places.
        assert_eq!(ids.stats().evicted, 1002 - 100);
        // Its count was lost with its entry (it went stale): it starts again, and is banned
        // at the threshold like anyone.
        let later = t + Duration::from_secs(2);
        assert!(ids.auth_failed(later, attacker).is_none());
        assert!(ids.auth_failed(later, attacker).is_none());
        assert!(ids.auth_failed(later, attacker).is_some());
        assert!(ids.stats().sources <= 100);
    }
}
