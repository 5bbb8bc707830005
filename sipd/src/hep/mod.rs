//! HEP capture: a copy of every SIP message sipd receives and sends, as HEPv3 over UDP to a
//! collector (Homer, sngrep), as Kamailio's `siptrace` and rtpengine's `--homer` send theirs.
//!
//! Off unless `[capture] hep` is set. The event loop only queues (never waits): a bounded
//! queue feeds one sender task; a full queue, an unreachable collector or a name that does
//! not resolve drop the copy, counted by reason (`sipd_hep_dropped_total`). Calls never wait
//! for capture.
//!
//! What is captured: messages the firewall admitted (so a flood is not multiplied towards
//! the collector) and every message the core sends, at the one place in the event loop every
//! transport's messages pass through.

pub mod encode;
mod sender;

use serde::{Deserialize, Serialize};

pub use sender::{Captured, Hep, HepCounts};

/// `[capture]`: where HEP copies go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HepConfig {
    /// The collector, `host:port` (`[v6]:port` for an IPv6 literal); `None`: capture off.
    /// A name is resolved when sipd starts, and again every few seconds while it fails.
    pub hep: Option<String>,
    /// The capture agent id the collector files our packets under.
    pub capture_id: u32,
    /// Sent as HEP's authentication key chunk when set (heplify-server's `HEPv3 auth key`).
    pub password: Option<String>,
    /// Copies waiting for the sender task at most; past that they are dropped (`queue_full`).
    pub queue: usize,
}

impl Default for HepConfig {
    fn default() -> Self {
        HepConfig {
            hep: None,
            capture_id: 1,
            password: None,
            queue: 4096,
        }
    }
}

/// Why a `host:port` is not one.
fn split_host_port(s: &str) -> Result<(&str, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not host:port (e.g. \"10.0.0.5:9060\")"))?;
    let host = match host.strip_prefix('[') {
        Some(h) => h
            .strip_suffix(']')
            .ok_or_else(|| format!("{s:?}: an IPv6 address is written [addr]:port"))?,
        None if host.contains(':') => {
            return Err(format!("{s:?}: an IPv6 address is written [addr]:port"));
        }
        None => host,
    };
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err(format!("{s:?}: no host before the port"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?}: {port:?} is not a port number"))?;
    if port == 0 {
        return Err(format!("{s:?}: port 0 cannot be sent to"));
    }
    Ok((host, port))
}

impl HepConfig {
    /// Problems as (key, message), for the configuration's checks.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match &self.hep {
            Some(h) => {
                if let Err(e) = split_host_port(h) {
                    out.push(("capture.hep", e));
                }
            }
            None if self.password.is_some() => out.push((
                "capture.password",
                "set without capture.hep: there is no collector to send it to".into(),
            )),
            None => {}
        }
        if let Some(p) = &self.password
            && (p.is_empty() || p.len() > 1024)
        {
            out.push(("capture.password", "must be 1 to 1024 bytes".into()));
        }
        if !(16..=1_000_000).contains(&self.queue) {
            out.push((
                "capture.queue",
                format!("{} is outside 16..=1000000", self.queue),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(hep: &str) -> Vec<(&'static str, String)> {
        HepConfig {
            hep: Some(hep.into()),
            ..HepConfig::default()
        }
        .problems()
    }

    #[test]
    fn off_by_default_and_valid() {
        assert_eq!(HepConfig::default().hep, None);
        assert!(HepConfig::default().problems().is_empty());
    }

    #[test]
    fn host_port_forms() {
        for ok in ["127.0.0.1:9060", "homer.example:9060", "[::1]:9060"] {
            assert!(with(ok).is_empty(), "{ok}: {:?}", with(ok));
        }
        for bad in [
            "127.0.0.1",
            "::1:9060",
            ":9060",
            "h:0",
            "h:x",
            "[::1:9060",
            "h:70000",
        ] {
            let p = with(bad);
            assert_eq!(p.len(), 1, "{bad}: {p:?}");
            assert_eq!(p[0].0, "capture.hep");
        }
    }

    #[test]
    fn password_needs_a_collector_and_queue_is_bounded() {
        let c = HepConfig {
            password: Some("pw".into()),
            queue: 1,
            ..HepConfig::default()
        };
        let keys: Vec<_> = c.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["capture.password", "capture.queue"]);
    }
}
