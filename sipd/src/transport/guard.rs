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

/// What the guard decided about one INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    RateLimited,
    SessionCap,
}

/// Per-source INVITE limits over TCP (see the module docs).
pub struct TcpGuard {
    invites: Gcra,
    max_sessions: u32,
    sessions: SessionLookup,
    /// Theoretical arrival time of each source's next conforming INVITE, ns since `epoch`.
    tats: Mutex<HashMap<IpAddr, u64>>,
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
            tats: Mutex::new(HashMap::new()),
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
        let mut tats = self.tats.lock().unwrap_or_else(|p| p.into_inner());
        let tat = tats.get(&ip).copied().unwrap_or(0);
        let Some(next) = self.invites.check(tat, now_ns) else {
            return Verdict::RateLimited;
        };
        let limit = if own_limit != 0 {
            own_limit
        } else {
            self.max_sessions
        };
        if limit != 0 && active >= limit {
            return Verdict::SessionCap;
        }
        if tats.len() >= MAX_SOURCES && !tats.contains_key(&ip) {
            tats.retain(|_, t| *t > now_ns);
            if tats.len() >= MAX_SOURCES
                && let Some(k) = tats.keys().next().copied()
            {
                tats.remove(&k);
            }
        }
        if self.invites.is_enabled() {
            tats.insert(ip, next);
        }
        Verdict::Pass
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
        assert_eq!(g.check(a, t0), Verdict::RateLimited);
        assert_eq!(
            g.check(b, t0),
            Verdict::Pass,
            "another source has its own bucket"
        );
        assert_eq!(g.check(a, t0 + Duration::from_millis(100)), Verdict::Pass);
        assert_eq!(
            g.check(a, t0 + Duration::from_millis(100)),
            Verdict::RateLimited
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
