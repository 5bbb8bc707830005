//! Who may use the ng port.
//!
//! The ng protocol has no authentication: a datagram from anyone who can reach the port can
//! open relay ports, read calls and delete them. So the server answers only the sources the
//! operator listed, loopback by default, like rtpengine deployments that bind ng to 127.0.0.1.
//! Anyone else gets silence, not an error reply: a reply would confirm the port exists and turn
//! the relay into a reflector for spoofed sources. Every refused datagram is counted, and the
//! log gets one line per [`DENY_LOG_EVERY`] at most, never one per packet (an attacker would
//! otherwise fill the disk).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::cidr::{self, Cidr};

/// At most one log line about refused sources per this long.
pub const DENY_LOG_EVERY: Duration = Duration::from_secs(10);

/// The sources allowed to use the ng port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowList(Vec<Cidr>);

impl AllowList {
    /// `127.0.0.0/8` and `::1`: the host itself, the default.
    pub fn loopback() -> AllowList {
        // `Cidr::new` only refuses a prefix longer than the family; /8 is not.
        let v4 = Cidr::new(IpAddr::from([127, 0, 0, 0]), 8).ok();
        let v6 = Cidr::host(std::net::Ipv6Addr::LOCALHOST.into());
        AllowList(v4.into_iter().chain([v6]).collect())
    }

    /// Exactly these prefixes. An empty list allows nobody.
    pub fn new(prefixes: Vec<Cidr>) -> AllowList {
        AllowList(prefixes)
    }

    /// Whether `ip` may use the port. A v4-mapped IPv6 source (an IPv4 client of a dual-stack
    /// socket) is matched as the IPv4 address it is.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The allowed prefixes.
    pub fn prefixes(&self) -> &[Cidr] {
        &self.0
    }
}

impl Default for AllowList {
    fn default() -> Self {
        AllowList::loopback()
    }
}

/// The allow list with its counters and the sampled log of refusals.
#[derive(Debug)]
pub struct Gate {
    allow: AllowList,
    /// Datagrams refused, ever.
    denied: u64,
    /// The most recent refused source.
    last_denied: Option<IpAddr>,
    /// When the last log line about refusals went out, and the count it reported.
    logged: Option<(Instant, u64)>,
}

impl Gate {
    /// A gate over `allow`, nothing refused yet.
    pub fn new(allow: AllowList) -> Gate {
        Gate {
            allow,
            denied: 0,
            last_denied: None,
            logged: None,
        }
    }

    /// Whether to serve a datagram from `from`. A refusal is counted and maybe logged.
    pub fn admit(&mut self, from: SocketAddr, now: Instant) -> bool {
        if self.allow.allows(from.ip()) {
            return true;
        }
        self.denied += 1;
        let ip = cidr::normalize(from.ip());
        self.last_denied = Some(ip);
        let due = self
            .logged
            .is_none_or(|(t, _)| now.saturating_duration_since(t) >= DENY_LOG_EVERY);
        if due {
            let since = self.denied - self.logged.map_or(0, |(_, n)| n);
            tracing::warn!(
                from = %ip,
                since_last_report = since,
                total = self.denied,
                "ng requests from unlisted sources dropped (not answered); see --ng-allow"
            );
            self.logged = Some((now, self.denied));
        }
        false
    }

    /// Datagrams refused since start.
    pub fn denied(&self) -> u64 {
        self.denied
    }

    /// The most recent refused source (v4-mapped as IPv4).
    pub fn last_denied(&self) -> Option<IpAddr> {
        self.last_denied
    }

    /// The allow list in force.
    pub fn allow(&self) -> &AllowList {
        &self.allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_is_loopback_only_in_both_families() {
        let a = AllowList::default();
        assert!(a.allows("127.0.0.1".parse().unwrap()));
        assert!(a.allows("127.9.9.9".parse().unwrap()));
        assert!(a.allows("::1".parse().unwrap()));
        // An IPv4 client of a socket bound to [::].
        assert!(a.allows("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!a.allows("10.0.0.1".parse().unwrap()));
        assert!(!a.allows("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!a.allows("fd00::1".parse().unwrap()));
        assert!(!AllowList::new(vec![]).allows("127.0.0.1".parse().unwrap()));
        assert_eq!(a.prefixes().len(), 2);
    }

    #[test]
    fn refusals_are_counted_and_logged_sampled() {
        let mut g = Gate::new(AllowList::new(vec!["192.0.2.0/24".parse().unwrap()]));
        let t = Instant::now();
        assert!(g.admit(sa("192.0.2.7:5060"), t));
        for i in 0..1000u32 {
            assert!(!g.admit(
                sa("[::ffff:198.51.100.1]:9"),
                t + Duration::from_millis(i.into())
            ));
        }
        assert_eq!(g.denied(), 1000);
        assert_eq!(g.last_denied(), Some("198.51.100.1".parse().unwrap()));
        // One line at the first refusal; the next is due only DENY_LOG_EVERY later.
        assert_eq!(g.logged, Some((t, 1)));
        assert!(!g.admit(sa("198.51.100.1:9"), t + DENY_LOG_EVERY));
        assert_eq!(g.logged, Some((t + DENY_LOG_EVERY, 1001)));
    }
}
