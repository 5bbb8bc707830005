//! `[cluster]`: the Redis the nodes share and this node's name. Absent: no cluster, and
//! nothing of sipd's behaviour changes.

use serde::{Deserialize, Serialize};

/// `[cluster]` in `sbc.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The shared Redis, `redis://[:password@]host:port[/db]` (`rediss://` is refused: this
    /// build has no TLS for Redis). With `sentinels`, only its password and database are used.
    pub redis: String,
    /// Redis Sentinel addresses (`host:port`); set with `sentinel_service`, the node asks
    /// them for the current master and follows a failover.
    pub sentinels: Vec<String>,
    /// The master name the sentinels monitor (`sentinel monitor <name> ...`).
    pub sentinel_service: Option<String>,
    /// This node's name in the cluster (`[A-Za-z0-9_-]{1,32}`); default: the host name.
    pub node: Option<String>,
    /// Every key sipd writes starts with `<key_prefix>:`.
    pub key_prefix: String,
    /// How often the node says it is alive (`<prefix>:node:<node>`), in ms.
    pub heartbeat_ms: u64,
    /// How long that key outlives the last heartbeat, in ms: past it, the node counts as dead
    /// for the other nodes (its shared counts are reclaimed).
    pub node_ttl_ms: u64,
    /// Entries the CDR stream `<prefix>:cdrs` keeps, about (`XADD MAXLEN ~`).
    pub cdr_stream_max: u64,
    /// How often the event loop hands its use of the shared limits and balances to the
    /// background task that keeps its leases and reservations (Redis round trips only for
    /// a lease that needs a top-up or give-back), in ms.
    pub limits_sync_ms: u64,
    /// Slots (and CPS) leased beyond the calls up, in percent of the limit (at least 1).
    pub lease_headroom_pct: u32,
    /// How often a node holding idle slots, rate or money shows them to Redis, which gives
    /// them to a node waiting for them, in ms: the longest such a wait lasts.
    pub lease_recheck_ms: u64,
    /// Deadline of a shared-limits command, in ms: past it the node falls back to its share
    /// (alert `cluster_limits_fallback`).
    pub limits_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis: "redis://127.0.0.1:6379/0".into(),
            sentinels: Vec::new(),
            sentinel_service: None,
            node: None,
            key_prefix: "sbc".into(),
            heartbeat_ms: 1000,
            node_ttl_ms: 3000,
            cdr_stream_max: 100_000,
            limits_sync_ms: 100,
            lease_headroom_pct: 10,
            lease_recheck_ms: 500,
            limits_timeout_ms: 500,
        }
    }
}

/// Whether `s` is a valid node name or key prefix: `[A-Za-z0-9_-]{1,32}`.
pub fn valid_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl ClusterConfig {
    /// This node's name: `node`, or the host name (cut to what a name may hold).
    pub fn node_name(&self) -> String {
        if let Some(n) = &self.node {
            return n.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let clean: String = host
            .trim()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .take(32)
            .collect();
        if clean.is_empty() {
            "node".into()
        } else {
            clean
        }
    }

    /// What serde cannot check, as (dotted key, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match fred::types::config::Config::from_url(&self.redis) {
            Err(e) => out.push((
                "cluster.redis",
                format!("{:?} is not a Redis URL: {e}", self.redis),
            )),
            Ok(_) if !self.redis.starts_with("redis://") => out.push((
                "cluster.redis",
                "must start with redis:// (TLS to Redis is not built in)".into(),
            )),
            Ok(_) => {}
        }
        for s in &self.sentinels {
            if split_host_port(s).is_none() {
                out.push((
                    "cluster.sentinels",
                    format!("{s:?} is not host:port (a port of 1 to 65535)"),
                ));
            }
        }
        match (&self.sentinel_service, self.sentinels.is_empty()) {
            (Some(_), true) => out.push((
                "cluster.sentinel_service",
                "set without cluster.sentinels: there is no sentinel to ask".into(),
            )),
            (None, false) => out.push((
                "cluster.sentinels",
                "set without cluster.sentinel_service (the master name the sentinels monitor)"
                    .into(),
            )),
            (Some(n), false) if n.is_empty() => {
                out.push(("cluster.sentinel_service", "must not be empty".into()))
            }
            _ => {}
        }
        if let Some(n) = &self.node
            && !valid_name(n)
        {
            out.push((
                "cluster.node",
                format!("{n:?}: 1 to 32 of A-Z, a-z, 0-9, '_' and '-'"),
            ));
        }
        if !valid_name(&self.key_prefix) {
            out.push((
                "cluster.key_prefix",
                format!(
                    "{:?}: 1 to 32 of A-Z, a-z, 0-9, '_' and '-'",
                    self.key_prefix
                ),
            ));
        }
        if !(100..=60_000).contains(&self.heartbeat_ms) {
            out.push((
                "cluster.heartbeat_ms",
                format!("{} is outside 100..=60000", self.heartbeat_ms),
            ));
        }
        if self.node_ttl_ms < self.heartbeat_ms.saturating_mul(2) || self.node_ttl_ms > 600_000 {
            out.push((
                "cluster.node_ttl_ms",
                format!(
                    "{} must be at least twice heartbeat_ms ({}) and at most 600000: a node must not look dead between two heartbeats",
                    self.node_ttl_ms, self.heartbeat_ms
                ),
            ));
        }
        if !(100..=100_000_000).contains(&self.cdr_stream_max) {
            out.push((
                "cluster.cdr_stream_max",
                format!("{} is outside 100..=100000000", self.cdr_stream_max),
            ));
        }
        for (key, v, range) in [
            ("cluster.limits_sync_ms", self.limits_sync_ms, 10..=5_000),
            (
                "cluster.lease_headroom_pct",
                u64::from(self.lease_headroom_pct),
                1..=100,
            ),
            (
                "cluster.lease_recheck_ms",
                self.lease_recheck_ms,
                50..=60_000,
            ),
            (
                "cluster.limits_timeout_ms",
                self.limits_timeout_ms,
                50..=2_000,
            ),
        ] {
            if !range.contains(&v) {
                out.push((
                    key,
                    format!("{v} is outside {}..={}", range.start(), range.end()),
                ));
            }
        }
        out
    }

    /// The shared limits' settings from this table.
    pub fn limits_settings(&self) -> crate::shared_limits::Settings {
        crate::shared_limits::Settings {
            timeout: std::time::Duration::from_millis(self.limits_timeout_ms),
            lease_headroom_pct: self.lease_headroom_pct,
            recheck: std::time::Duration::from_millis(self.lease_recheck_ms),
            ..crate::shared_limits::Settings::default()
        }
    }
}

/// `host:port` (`[v6]:port`) split, with a non-zero port.
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().ok()?;
    (!host.is_empty() && port != 0).then(|| (host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(ClusterConfig::default().problems().is_empty());
        let c = ClusterConfig {
            redis: "http://x".into(),
            sentinels: vec!["nohost".into()],
            node: Some("bad name!".into()),
            key_prefix: String::new(),
            heartbeat_ms: 1000,
            node_ttl_ms: 1500,
            limits_sync_ms: 0,
            lease_headroom_pct: 0,
            ..ClusterConfig::default()
        };
        let keys: Vec<&str> = c.problems().iter().map(|p| p.0).collect();
        for k in [
            "cluster.redis",
            "cluster.sentinels",
            "cluster.node",
            "cluster.key_prefix",
            "cluster.node_ttl_ms",
            "cluster.limits_sync_ms",
            "cluster.lease_headroom_pct",
        ] {
            assert!(keys.contains(&k), "{k} not flagged: {keys:?}");
        }
        assert!(valid_name("node-1_A"));
        assert!(!valid_name(&"x".repeat(33)));
    }
}
