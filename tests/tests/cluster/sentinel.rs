//! Redis Sentinel beside the test's Redis: a sentinel (`redis-server --sentinel`) and a
//! replica in Redis's namespace, the sentinel monitoring the master at Redis's end of node 1's
//! link (every node reaches it, see [`super::start_with`]). Stopped by PID with the harness.

use std::time::Duration;

use tests::netns::NsChild;

use super::{REDIS_PORT, Redis};

/// The sentinel's port.
pub const SENTINEL_PORT: u16 = 26379;
/// The replica's port.
pub const REPLICA_PORT: u16 = 6380;
/// The master name the sentinel monitors.
pub const SERVICE: &str = "sbct-master";

/// A sentinel and a replica.
pub struct Sentinel {
    sentinel: Option<NsChild>,
    replica: Option<NsChild>,
    /// Redis's end of node 1's link: the master's address and the sentinel's.
    pub host: String,
}

impl Sentinel {
    /// A replica of Redis on [`REPLICA_PORT`] and a sentinel (quorum 1, the master down after
    /// 1 s) at `host` (Redis's end of node 1's link), both answering.
    pub fn start(redis: &Redis, host: &str) -> Sentinel {
        let replica = redis.server(
            REPLICA_PORT,
            "replica",
            &["--replicaof", host, &REDIS_PORT.to_string()],
        );
        // A sentinel rewrites its configuration file: one of its own in the data dir.
        let conf = redis.dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "sentinel monitor {SERVICE} {host} {REDIS_PORT} 1\n\
                 sentinel down-after-milliseconds {SERVICE} 1000\n\
                 sentinel failover-timeout {SERVICE} 5000\n\
                 sentinel parallel-syncs {SERVICE} 1\n"
            ),
        )
        .expect("sentinel.conf");
        let conf = conf.to_string_lossy().into_owned();
        let sentinel = redis.server(SENTINEL_PORT, "sentinel", &[&conf, "--sentinel"]);
        Sentinel {
            sentinel: Some(sentinel),
            replica: Some(replica),
            host: host.to_owned(),
        }
    }

    /// The master the sentinel names now, `host:port`.
    pub fn master(&self, redis: &Redis) -> String {
        let out = redis.cli_at(
            SENTINEL_PORT,
            &["SENTINEL", "get-master-addr-by-name", SERVICE],
        );
        out.split_whitespace().collect::<Vec<_>>().join(":")
    }

    /// Whether the replica has caught up with the master's link (`master_link_status:up`).
    pub fn replica_synced(&self, redis: &Redis) -> bool {
        redis
            .cli_at(REPLICA_PORT, &["INFO", "replication"])
            .contains("master_link_status:up")
    }

    /// Stops both (SIGTERM by PID).
    pub fn stop(&mut self) {
        for c in [self.sentinel.take(), self.replica.take()]
            .into_iter()
            .flatten()
        {
            let mut c = c;
            let _ = c.stop(Duration::from_secs(5));
        }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.stop();
    }
}
