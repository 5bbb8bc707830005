//! Where a call goes: upstream connections (vendors) chosen by called-number prefix, each
//! with its own channel and CPS caps.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::gcra::CpsBucket;
use super::share::{self, Share};
use crate::records::{Connection, Id};

/// Which of a connection's caps refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CapFull {
    /// It has `max_channels` calls in progress (or is unknown).
    #[error("connection channel limit")]
    Channels,
    /// Its calls-per-second limit is spent.
    #[error("connection CPS limit")]
    Cps,
}

#[derive(Debug)]
struct Upstream {
    conn: Connection,
    in_use: u32,
    cps: CpsBucket,
    /// This node's share of the connection's cluster caps (`None`: standalone).
    share: Option<Share>,
    /// CPS tokens taken so far, for the shell's lease sizing.
    taken: u64,
}

/// The connections and their live usage.
#[derive(Debug, Default)]
pub struct Router {
    conns: BTreeMap<Id, Upstream>,
}

impl Router {
    /// A router over `connections`, none of their channels in use.
    pub fn new(connections: Vec<Connection>) -> Router {
        let mut r = Router::default();
        r.reload(connections);
        r
    }

    /// Every connection, enabled or not.
    pub fn connections(&self) -> impl Iterator<Item = &Connection> {
        self.conns.values().map(|u| &u.conn)
    }

    /// Replaces the connections after a provisioning change, keeping the channel counts and
    /// CPS state of those that remain: calls in progress still hold their channels.
    pub fn reload(&mut self, connections: Vec<Connection>) {
        let mut old = std::mem::take(&mut self.conns);
        for conn in connections {
            let (in_use, cps, share, taken) = old
                .remove(&conn.id)
                .map_or((0, CpsBucket::default(), None, 0), |u| {
                    (u.in_use, u.cps, u.share, u.taken)
                });
            self.conns.insert(
                conn.id,
                Upstream {
                    conn,
                    in_use,
                    cps,
                    share,
                    taken,
                },
            );
        }
        for (id, u) in old.into_iter().filter(|(_, u)| u.in_use > 0) {
            // Calls through a deleted connection still release their channel later; keep
            // it, disabled, so `release` and `in_use` stay right and nothing new goes there.
            tracing::debug!(
                id,
                in_use = u.in_use,
                "keeping removed connection until its calls end"
            );
            let mut conn = u.conn;
            conn.enabled = false;
            self.conns.insert(id, Upstream { conn, ..u });
        }
    }

    /// Enabled connections that route `cld`, best first: longest matching prefix (a
    /// connection without prefixes is a default route, prefix length 0), then lower
    /// priority, then lower id. Prefixes match the number as given (`44` does not match
    /// `+44…`).
    pub fn candidates(&self, cld: &str) -> Vec<Id> {
        let mut found: Vec<(Reverse<usize>, u32, Id)> = self
            .conns
            .values()
            .filter(|u| u.conn.enabled)
            .filter_map(|u| {
                let len = if u.conn.cld_prefixes.is_empty() {
                    0
                } else {
                    u.conn
                        .cld_prefixes
                        .iter()
                        .filter(|p| cld.starts_with(p.as_str()))
                        .map(String::len)
                        .max()?
                };
                Some((Reverse(len), u.conn.priority, u.conn.id))
            })
            .collect();
        found.sort_unstable();
        found.into_iter().map(|(_, _, id)| id).collect()
    }

    /// The connection with this id (also a removed one whose calls still hold channels).
    pub fn connection(&self, id: Id) -> Option<&Connection> {
        self.conns.get(&id).map(|u| &u.conn)
    }

    /// Takes one channel and one CPS token for a call attempt. The channel cap is checked
    /// first so a full connection does not also burn CPS tokens; a CPS refusal takes no
    /// channel. An unknown id is refused as `Channels` (nothing can be taken there).
    pub fn try_take(&mut self, id: Id, now: Instant) -> Result<(), CapFull> {
        let Some(u) = self.conns.get_mut(&id) else {
            tracing::warn!(id, "try_take on an unknown connection");
            return Err(CapFull::Channels);
        };
        let sh = u.share.unwrap_or_default();
        if share::cap(u.conn.max_channels, sh.sessions).is_some_and(|max| u.in_use >= max) {
            return Err(CapFull::Channels);
        }
        if !share::take_cps(&mut u.cps, now, share::cap(u.conn.cps_limit, sh.cps)) {
            return Err(CapFull::Cps);
        }
        u.taken += 1;
        u.in_use += 1;
        Ok(())
    }

    /// Takes a channel whatever the cap: a call of an earlier run that already holds it.
    pub fn hold(&mut self, id: Id) {
        if let Some(u) = self.conns.get_mut(&id) {
            u.in_use = u.in_use.saturating_add(1);
        }
    }

    /// Gives a channel back. Saturating: a double release cannot open a phantom channel.
    pub fn release(&mut self, id: Id) {
        if let Some(u) = self.conns.get_mut(&id) {
            u.in_use = u.in_use.saturating_sub(1);
        }
    }

    /// This node's share of the connection's cluster caps, or `None` for its own caps only.
    /// An unknown id is ignored (the next `reload` brings it, without a share).
    pub fn set_share(&mut self, id: Id, share: Option<Share>) {
        if let Some(u) = self.conns.get_mut(&id) {
            u.share = share;
        }
    }

    /// CPS tokens the connection has taken so far (a counter that only grows).
    pub fn taken(&self, id: Id) -> u64 {
        self.conns.get(&id).map_or(0, |u| u.taken)
    }

    /// Channels of the connection taken by calls in progress (0 for an unknown id).
    pub fn in_use(&self, id: Id) -> u32 {
        self.conns.get(&id).map_or(0, |u| u.in_use)
    }

    /// How long until the connection's CPS cap lets a call through again (zero if it would
    /// now, or if it has no CPS cap).
    pub fn cps_wait(&self, id: Id, now: Instant) -> Duration {
        let Some(u) = self.conns.get(&id) else {
            return Duration::ZERO;
        };
        match share::cap(u.conn.cps_limit, u.share.and_then(|s| s.cps)) {
            Some(0) => Duration::from_secs(1),
            Some(r) => u.cps.wait(now, r),
            None => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Transport;

    fn conn(id: Id, prefixes: &[&str], priority: u32) -> Connection {
        Connection {
            id,
            name: format!("c{id}"),
            enabled: true,
            host: "198.51.100.7".into(),
            port: 5060,
            transport: Transport::Udp,
            cld_prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            max_channels: None,
            cps_limit: None,
            priority,
            tls_name: None,
        }
    }

    fn router() -> Router {
        let mut off = conn(7, &["4420"], 0);
        off.enabled = false;
        Router::new(vec![
            conn(1, &[], 10),         // default route
            conn(2, &["44"], 20),     // UK
            conn(3, &["44", "1"], 5), // UK + US, cheaper priority
            conn(4, &["4420"], 50),   // London, most specific
            conn(5, &["44"], 5),      // same prefix and priority as 3: id decides
            conn(6, &["+44"], 1),
            off,
        ])
    }

    #[test]
    fn candidates_table() {
        let r = router();
        let cases: &[(&str, &[Id])] = &[
            ("442071234567", &[4, 3, 5, 2, 1]),
            ("441611234567", &[3, 5, 2, 1]),
            ("12125551234", &[3, 1]),
            ("33123456789", &[1]),
            ("+442071234567", &[6, 1]),
            ("", &[1]),
            ("4", &[1]),
        ];
        for (cld, want) in cases {
            assert_eq!(r.candidates(cld), *want, "{cld}");
        }
    }

    #[test]
    fn no_default_route_means_no_candidates() {
        let r = Router::new(vec![conn(1, &["44"], 0)]);
        assert!(r.candidates("33").is_empty());
        assert!(Router::new(vec![]).candidates("44").is_empty());
    }

    #[test]
    fn share_caps_channels_and_cps() {
        let mut c = conn(1, &[], 0);
        c.max_channels = Some(10);
        let mut r = Router::new(vec![c.clone()]);
        let t = Instant::now();
        r.set_share(
            1,
            Some(Share {
                sessions: Some(1),
                cps: None,
            }),
        );
        assert_eq!(r.try_take(1, t), Ok(()));
        assert_eq!(r.try_take(1, t), Err(CapFull::Channels));
        // A reload keeps the share; a share of 0 CPS refuses with no channel taken.
        r.reload(vec![c]);
        r.set_share(
            1,
            Some(Share {
                sessions: Some(5),
                cps: Some(0),
            }),
        );
        assert_eq!(r.try_take(1, t), Err(CapFull::Cps));
        assert_eq!(r.cps_wait(1, t), Duration::from_secs(1));
        assert_eq!((r.in_use(1), r.taken(1)), (1, 1));
        r.set_share(1, None);
        assert_eq!(r.try_take(1, t), Ok(()));
        assert_eq!(r.taken(1), 2);
    }

    #[test]
    fn channel_cap() {
        let mut c = conn(1, &[], 0);
        c.max_channels = Some(2);
        let mut r = Router::new(vec![c]);
        let t = Instant::now();
        assert_eq!(r.try_take(1, t), Ok(()));
        assert_eq!(r.try_take(1, t), Ok(()));
        assert_eq!(r.try_take(1, t), Err(CapFull::Channels));
        assert_eq!(r.in_use(1), 2);
        r.release(1);
        assert_eq!(r.in_use(1), 1);
        assert_eq!(r.try_take(1, t), Ok(()));
        for _ in 0..5 {
            r.release(1);
        }
        assert_eq!(r.in_use(1), 0, "release saturates");
    }

    #[test]
    fn cps_cap_takes_no_channel() {
        let mut c = conn(1, &[], 0);
        c.cps_limit = Some(2);
        c.max_channels = Some(10);
        let mut r = Router::new(vec![c]);
        let t = Instant::now();
        assert_eq!(r.try_take(1, t), Ok(()));
        assert_eq!(r.try_take(1, t), Ok(()));
        assert_eq!(r.try_take(1, t), Err(CapFull::Cps));
        assert_eq!(r.in_use(1), 2);
        assert_eq!(r.cps_wait(1, t), Duration::from_millis(500));
        assert_eq!(
            r.try_take(1, t + Duration::from_millis(499)),
            Err(CapFull::Cps)
        );
        assert_eq!(r.try_take(1, t + Duration::from_millis(500)), Ok(()));
        assert_eq!(r.in_use(1), 3);
    }

    #[test]
    fn full_channels_do_not_burn_cps_tokens() {
        let mut c = conn(1, &[], 0);
        c.cps_limit = Some(1);
        c.max_channels = Some(1);
        let mut r = Router::new(vec![c]);
        let t = Instant::now();
        assert_eq!(r.try_take(1, t), Ok(()));
        let t1 = t + Duration::from_secs(1);
        for _ in 0..10 {
            assert_eq!(r.try_take(1, t1), Err(CapFull::Channels));
        }
        r.release(1);
        assert_eq!(r.try_take(1, t1), Ok(()), "the token is still there");
    }

    #[test]
    fn unknown_connection() {
        let mut r = Router::new(vec![]);
        assert_eq!(r.try_take(9, Instant::now()), Err(CapFull::Channels));
        r.release(9);
        assert_eq!(r.in_use(9), 0);
        assert!(r.connection(9).is_none());
    }

    #[test]
    fn reload_keeps_usage() {
        let mut r = Router::new(vec![conn(1, &[], 0), conn(2, &["44"], 0)]);
        let t = Instant::now();
        r.try_take(1, t).unwrap();
        r.try_take(2, t).unwrap();
        let mut changed = conn(1, &["33"], 3);
        changed.max_channels = Some(1);
        r.reload(vec![changed]);
        assert_eq!(r.in_use(1), 1);
        assert_eq!(r.try_take(1, t), Err(CapFull::Channels), "new cap applies");
        // Connection 2 was deleted but still carries a call: kept, disabled, until released.
        assert_eq!(r.in_use(2), 1);
        assert!(r.candidates("44").is_empty());
        r.release(2);
        r.reload(vec![conn(1, &["33"], 3)]);
        assert!(r.connection(2).is_none());
    }
}
