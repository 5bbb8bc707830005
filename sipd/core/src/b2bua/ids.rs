//! The SIP side of the IDS: sources that fail digest authentication again and again, and
//! known scanners, earn a kernel ban that doubles for each repeat offence.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// What a source did to earn its ban (the shell maps it to the data plane's ban reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Offence {
    /// A known scanner's User-Agent.
    Scanner,
    /// Failed digest responses, again and again.
    BruteForce,
    /// Calls matching no rule, again and again.
    Enumeration,
    /// The kernel guard kept rate-limiting it.
    Flood,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdsConfig {
    /// Failures within `window` that earn a ban; 0 turns brute-force bans off.
    pub failures_before_ban: u32,
    pub window: Duration,
    pub ban: Duration,
    pub ban_max: Duration,
    /// Ban sources whose User-Agent is a known scanner's.
    pub ban_scanners: bool,
    /// Kernel guard reports (packet or INVITE rate exceeded; sampled at most once a second per
    /// source) within `window` that earn a ban; 0 leaves floods to the kernel's rate limits.
    pub floods_before_ban: u32,
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
    "iWar",
    "sundayddr",
];

#[derive(Debug)]
pub struct Ids {
    cfg: IdsConfig,
    failures: HashMap<IpAddr, VecDeque<Instant>>,
    floods: HashMap<IpAddr, VecDeque<Instant>>,
    /// Bans handed out per source, for doubling; forgotten after a day without offence.
    offences: HashMap<IpAddr, (u32, Instant)>,
}

impl Ids {
    pub fn new(cfg: IdsConfig) -> Ids {
        Ids {
            cfg,
            failures: HashMap::new(),
            floods: HashMap::new(),
            offences: HashMap::new(),
        }
    }

    fn ban_for(&mut self, now: Instant, ip: IpAddr) -> Duration {
        let e = self.offences.entry(ip).or_insert((0, now));
        let d = self
            .cfg
            .ban
            .saturating_mul(1u32 << e.0.min(16))
            .min(self.cfg.ban_max);
        e.0 += 1;
        e.1 = now;
        d
    }

    /// Records a failed digest; `Some(ban)` when the source crossed the threshold.
    pub fn auth_failed(&mut self, now: Instant, ip: IpAddr) -> Option<Duration> {
        if self.cfg.failures_before_ban == 0 {
            return None;
        }
        let q = self.failures.entry(ip).or_default();
        q.push_back(now);
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.cfg.window)
        {
            q.pop_front();
        }
        if q.len() >= self.cfg.failures_before_ban as usize {
            self.failures.remove(&ip);
            return Some(self.ban_for(now, ip));
        }
        None
    }

    /// Records a flood report from the kernel guard; `Some(ban)` when the source keeps
    /// flooding.
    pub fn flood(&mut self, now: Instant, ip: IpAddr) -> Option<Duration> {
        if self.cfg.floods_before_ban == 0 {
            return None;
        }
        let q = self.floods.entry(ip).or_default();
        q.push_back(now);
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.cfg.window)
        {
            q.pop_front();
        }
        if q.len() >= self.cfg.floods_before_ban as usize {
            self.floods.remove(&ip);
            return Some(self.ban_for(now, ip));
        }
        None
    }

    /// `Some(ban)` when `user_agent` is a scanner's.
    pub fn scanner(
        &mut self,
        now: Instant,
        ip: IpAddr,
        user_agent: Option<&str>,
    ) -> Option<Duration> {
        let ua = user_agent?.to_ascii_lowercase();
        (self.cfg.ban_scanners
            && SCANNERS
                .iter()
                .any(|s| ua.contains(&s.to_ascii_lowercase())))
        .then(|| self.ban_for(now, ip))
    }

    pub fn expire(&mut self, now: Instant) {
        let w = self.cfg.window;
        self.failures
            .retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) <= w));
        self.floods
            .retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) <= w));
        self.offences
            .retain(|_, (_, t)| now.duration_since(*t) < Duration::from_secs(86_400));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_double_up_to_the_cap() {
        let mut ids = Ids::new(IdsConfig {
            failures_before_ban: 3,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(300),
            ban_max: Duration::from_secs(1000),
            ban_scanners: true,
            floods_before_ban: 2,
        });
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
        });
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let t = Instant::now();
        assert!(ids.auth_failed(t, ip).is_none());
        assert!(ids.auth_failed(t + Duration::from_secs(20), ip).is_none());
        assert!(ids.auth_failed(t + Duration::from_secs(21), ip).is_some());
    }
}
