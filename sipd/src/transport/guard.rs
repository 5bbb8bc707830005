//! The kernel SIP guard's per-source INVITE rate and session cap, for SIP over TCP.
//!
//! XDP judges UDP datagrams: one datagram is one message, so "starts with INVITE" finds every
//! INVITE. Over TCP a segment may hold thirty INVITEs or half of one, so the kernel only
//! rate-limits packets there; this applies the same INVITE limits to each framed TCP message,
//! before the core sees it (no transaction, no CDR, no answer). Same algorithm and parameters
//! as the kernel ([`relay_common::ratelimit::Gcra`], [`relay_common::guard::is_invite`]), and
//! the same session counts (the data plane's per-source map that sipd keeps), so a source
//! gets the same allowance whichever transport it uses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use relay_common::guard::TRUSTED;
use relay_common::ratelimit::Gcra;

/// Sources whose INVITE bucket is remembered at once. A bucket that has refilled is the same
/// as none, so those go first; past that, an arbitrary one.
const MAX_SOURCES: usize = 65_536;

/// (active sessions, own limit) of a source as the data plane's session map has them; the
/// limit is 0 for "the default cap" and [`TRUSTED`] for a source the guard exempts.
pub type SessionLookup = Arc<dyn Fn(IpAddr) -> Option<(u32, u32)> + Send + Sync>;

/// A rate-limited source is reported to the IDS at most this often, as the kernel guard
/// samples its UDP drops (`[guard]` event interval): a flood must not flood the IDS too.
const REPORT_INTERVAL_NS: u64 = 1_000_000_000;

/// What the guard decided about one INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Over the INVITE rate. `report`: the first drop from this source in the report
    /// interval, to be told to the IDS (a flood earns a ban as it does over UDP).
    RateLimited {
        report: bool,
    },
    SessionCap,
}

/// One source's INVITE bucket and when its flood was last reported.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Theoretical arrival time of the next conforming INVITE, ns since the guard's epoch.
    tat: u64,
    /// When a drop was last reported to the IDS (0: never).
    reported: u64,
}

/// Per-source INVITE limits over TCP (see the module docs).
pub struct TcpGuard {
    invites: Gcra,
    max_sessions: u32,
    sessions: SessionLookup,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    epoch: Instant,
}

impl TcpGuard {
    /// `invites_per_sec` with bursts of `invite_burst` (0: no rate limit), at most
    /// `max_sessions` calls in progress per source (0: no cap) unless the source has its own
    /// limit in `sessions`.
    pub fn new(
        invites_per_sec: u32,
        invite_burst: u32,
        max_sessions: u32,
        sessions: SessionLookup,
    ) -> TcpGuard {
        TcpGuard {
            invites: Gcra::per_second(invites_per_sec, invite_burst),
            max_sessions,
            sessions,
            buckets: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        }
    }

    /// Judges one INVITE from `ip` at `now`. Like the kernel, an INVITE refused at the session
    /// cap does not use up the source's calls-per-second allowance.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Verdict {
        let (active, own_limit) = (self.sessions)(ip).unwrap_or((0, 0));
        if own_limit == TRUSTED {
            return Verdict::Pass;
        }
        let now_ns =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.get(&ip).copied().unwrap_or_default();
        let Some(next) = self.invites.check(bucket.tat, now_ns) else {
            let report = bucket.reported == 0
                || now_ns.saturating_sub(bucket.reported) >= REPORT_INTERVAL_NS;
            if report {
                Self::keep(
                    &mut buckets,
                    ip,
                    now_ns,
                    Bucket {
                        reported: now_ns,
                        ..bucket
                    },
                );
            }
            return Verdict::RateLimited { report };
        };
        let limit = if own_limit != 0 {
            own_limit
        } else {
            self.max_sessions
        };
        if limit != 0 && active >= limit {
            return Verdict::SessionCap;
        }
        if self.invites.is_enabled() {
            Self::keep(
                &mut buckets,
                ip,
                now_ns,
                Bucket {
                    tat: next,
                    ..bucket
                },
            );
        }
        Verdict::Pass
    }

    /// Stores `ip`'s bucket, within [`MAX_SOURCES`]: a bucket that has refilled (and whose
    /// report is old) is the same as none, so those go first; past that, an arbitrary one.
    fn keep(buckets: &mut HashMap<IpAddr, Bucket>, ip: IpAddr, now_ns: u64, b: Bucket) {
        if buckets.len() >= MAX_SOURCES && !buckets.contains_key(&ip) {
            buckets.retain(|_, b| {
                b.tat > now_ns || now_ns.saturating_sub(b.reported) < REPORT_INTERVAL_NS
            });
            if buckets.len() >= MAX_SOURCES
                && let Some(k) = buckets.keys().next().copied()
            {
                buckets.remove(&k);
            }
        }
        buckets.insert(ip, b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn guard(active: u32, limit: u32) -> TcpGuard {
        TcpGuard::new(10, 3, 5, Arc::new(move |_| Some((active, limit))))
    }

    #[test]
    fn burst_then_rate_per_source() {
        let g = guard(0, 0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(g.check(a, t0), Verdict::Pass);
        }
        assert_eq!(g.check(a, t0), Verdict::RateLimited { report: true });
        assert_eq!(
            g.check(b, t0),
            Verdict::Pass,
            "another source has its own bucket"
        );
        assert_eq!(g.check(a, t0 + Duration::from_millis(100)), Verdict::Pass);
        assert_eq!(
            g.check(a, t0 + Duration::from_millis(100)),
            Verdict::RateLimited { report: false },
            "one report per source per interval"
        );
        assert_eq!(g.check(a, t0 + Duration::from_secs(1)), Verdict::Pass);
        for _ in 0..2 {
            g.check(a, t0 + Duration::from_secs(1));
        }
        assert_eq!(
            g.check(a, t0 + Duration::from_secs(1)),
            Verdict::RateLimited { report: true },
            "reported again after the interval"
        );
    }

    #[test]
    fn session_cap_default_own_and_trusted() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(guard(5, 0).check(ip, t0), Verdict::SessionCap);
        assert_eq!(guard(4, 0).check(ip, t0), Verdict::Pass);
        assert_eq!(guard(5, 6).check(ip, t0), Verdict::Pass, "own limit");
        let trusted = guard(1000, TRUSTED);
        for _ in 0..100 {
            assert_eq!(trusted.check(ip, t0), Verdict::Pass);
        }
        // Refused at the cap: the rate allowance is not spent.
        let g = guard(5, 0);
        for _ in 0..10 {
            assert_eq!(g.check(ip, t0), Verdict::SessionCap);
        }
    }
}
