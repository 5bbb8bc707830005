//! The cluster: several appliances sharing one Redis (`[cluster]`). Each node keeps its own
//! sled store as its local copy and starts and runs without Redis; Redis carries what the
//! nodes share (bans, see [`bans`]) and each node's heartbeat (`<prefix>:node:<node>`, set
//! with a TTL every `heartbeat_ms`, and the node in the set `<prefix>:nodes`), which the
//! shared limits use to reclaim a dead node's counts.
//!
//! The client is `fred`: it reconnects by itself (and a subscriber client re-subscribes by
//! itself after a reconnect). The node is Down (alert `cluster_down`) from anything that may
//! have lost a change: a heartbeat not answered, a reconnection of either client (pub/sub
//! messages sent meanwhile are gone), a full pub/sub buffer, a new Redis epoch (Redis lost its
//! data), a failed write. A resync task of its own (`cluster/sync.rs`) then reconciles everything
//! in both directions once Redis answers, and only then is the node Up again; the heartbeat
//! runs in its own task, so a long resync never delays it.

pub mod bans;
pub mod cdrs;
mod config;
mod heard;
mod heartbeat;
pub mod prov;
mod prune;
pub mod rpc;
mod sync;
#[cfg(test)]
mod sync_tests;

pub use config::{ClusterConfig, split_host_port, valid_name};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fred::clients::{Client, SubscriberClient};
use fred::interfaces::ClientLike;
use fred::types::Builder;
use fred::types::config::{Config as RedisConfig, ReconnectPolicy, ServerConfig};
use serde::Serialize;
use tokio::sync::watch;
use tracing::info;

use crate::firewall::Firewall;

/// Whether this node is connected to the cluster's Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Redis does not answer (or has not yet): what is already applied stays, changes made
    /// here are kept to be sent at the next resync.
    Down,
    /// Connected and resynced.
    Up,
}

/// Why the cluster could not be set up (a configuration fred refuses).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The client could not be built from `[cluster]`.
    #[error("[cluster]: {0}")]
    Client(#[from] fred::error::Error),
}

/// What the cluster did since start, for `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterCounters {
    /// 1 while connected and resynced.
    pub up: bool,
    /// Complete resyncs done (the first connection and every reconnection).
    pub resyncs: u64,
    /// Times Redis stopped answering.
    pub disconnects: u64,
    /// Ban changes made here and written to Redis.
    pub bans_published: u64,
    /// Ban changes of other nodes applied here.
    pub bans_applied: u64,
    /// Writes to Redis that failed (kept for the next resync).
    pub write_failures: u64,
    /// CDRs added to the stream `<prefix>:cdrs`.
    pub cdrs_streamed: u64,
    /// CDRs dropped before reaching the stream (more waiting than `cdr_stream_max`).
    pub cdrs_dropped: u64,
    /// Reconnections of the Redis clients (each one starts a resync).
    pub reconnects: u64,
    /// Times the pub/sub buffer overflowed (messages lost: each one starts a resync).
    pub pubsub_overflows: u64,
    /// Times Redis's epoch changed (it lost its data: a full resync both ways).
    pub epoch_changes: u64,
    /// Expired bans and old tombstones removed from Redis while connected.
    pub bans_pruned: u64,
    /// Another live node uses this node's name: this node refuses to join (see the log).
    pub name_conflict: bool,
    /// 1 while the shared limits and balances reach Redis; 0 while this node falls back
    /// to its share of each limit and its last-known balances.
    pub limits_shared: bool,
    /// Debits (and top-ups) waiting in the outbox for the shared balance.
    pub debits_queued: u64,
}

#[derive(Debug, Default)]
struct Counts {
    resyncs: AtomicU64,
    disconnects: AtomicU64,
    bans_published: AtomicU64,
    bans_applied: AtomicU64,
    write_failures: AtomicU64,
    cdrs_streamed: AtomicU64,
    cdrs_dropped: AtomicU64,
    reconnects: AtomicU64,
    pubsub_overflows: AtomicU64,
    epoch_changes: AtomicU64,
    bans_pruned: AtomicU64,
}

/// Messages the subscriber buffers before the listeners read them (fred's default is 32: a
/// burst of bans from the other nodes overflowed it, and every overflow costs a resync). A
/// message is a ban record of a few hundred bytes: a full buffer holds about a megabyte.
/// Only the subscriber client gets it (each of its event channels has slots this many).
pub const PUBSUB_BUFFER: usize = 4096;

/// How long one Redis command may take before it counts as failed: a node never waits on
/// Redis longer than this.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// This node's membership of the cluster: the Redis clients, the status and what is shared.
pub struct Cluster {
    cfg: ClusterConfig,
    node: String,
    client: Client,
    subscriber: SubscriberClient,
    status: watch::Sender<Status>,
    counts: Counts,
    bans: bans::SharedBans,
    rpc: rpc::Rpc,
    prov: prov::SharedProv,
    store: Arc<crate::store::Store>,
    /// This process's id in the heartbeat key (`<instance> <ms>`): tells this node from
    /// another process using the same name.
    instance: String,
    sync: sync::SyncState,
    limits: Arc<crate::shared_limits::SharedLimits>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .field("status", &*self.status.borrow())
            .finish()
    }
}

/// fred's configuration for `[cluster]`: the URL's password and database, the sentinels when
/// set, and never failing on the first connection (a node starts without Redis).
fn redis_config(cfg: &ClusterConfig) -> Result<RedisConfig, ClusterError> {
    let mut rc = RedisConfig::from_url(&cfg.redis)?;
    if let Some(service) = &cfg.sentinel_service {
        let hosts: Vec<(String, u16)> = cfg
            .sentinels
            .iter()
            .filter_map(|s| split_host_port(s))
            .collect();
        rc.server = ServerConfig::new_sentinel(hosts, service.clone());
    }
    rc.fail_fast = false;
    Ok(rc)
}

fn builder(cfg: &ClusterConfig) -> Result<Builder, ClusterError> {
    let mut b = Builder::from_config(redis_config(cfg)?);
    // Unlimited attempts, 100 ms growing to 2 s: back soon after Redis is.
    b.set_policy(ReconnectPolicy::new_exponential(0, 100, 2000, 2));
    b.with_connection_config(|c| {
        c.connection_timeout = COMMAND_TIMEOUT;
        c.internal_command_timeout = COMMAND_TIMEOUT;
        c.max_command_attempts = 1;
    });
    b.with_performance_config(|p| {
        p.default_command_timeout = COMMAND_TIMEOUT;
    });
    Ok(b)
}

impl Cluster {
    /// Builds the clients and starts connecting, the heartbeat and the shared bans in the
    /// background: returns at once, whether Redis answers or not. Needs a Tokio runtime.
    /// `config` is the node's whole configuration (`[cluster]` must be set): records of
    /// other nodes are checked against it as `sipd import` checks a file.
    pub fn start(
        config: &crate::config::Config,
        store: Arc<crate::store::Store>,
        firewall: Arc<Firewall>,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let cfg = config.cluster.clone().unwrap_or_default();
        let cfg = &cfg;
        let mut b = builder(cfg)?;
        let client = b.build()?;
        // Only the subscriber receives messages: only its buffers are large.
        b.with_performance_config(|p| p.broadcast_channel_capacity = PUBSUB_BUFFER);
        let subscriber = b.build_subscriber_client()?;
        let node = cfg.node_name();
        let (status, _) = watch::channel(Status::Down);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        // Turns the store's debit outbox on: from now on every settle queues its debit.
        let limits = Arc::new(crate::shared_limits::SharedLimits::for_store(
            client.clone(),
            node.clone(),
            cfg.key_prefix.clone(),
            cfg.limits_settings(),
            &store,
        ));
        let cluster = Arc::new(Cluster {
            cfg: cfg.clone(),
            node: node.clone(),
            client,
            subscriber,
            status,
            counts: Counts::default(),
            bans: bans::SharedBans::new(firewall.clone()),
            rpc: rpc::Rpc::default(),
            prov: prov::SharedProv::new(config.clone(), store.clone()),
            store,
            instance: random_hex(),
            sync: sync::SyncState::default(),
            limits: limits.clone(),
        });
        cluster.client.connect();
        cluster.subscriber.connect();
        // Re-subscribes after every reconnect.
        cluster.subscriber.manage_subscriptions();
        firewall.share_with(tx);
        bans::spawn(cluster.clone(), rx);
        rpc::spawn(cluster.clone());
        prov::spawn(cluster.clone());
        heartbeat::spawn(cluster.clone());
        sync::spawn(cluster.clone());
        // Reclaims dead nodes' leases, counts the live nodes, sends queued debits.
        limits.spawn_maintenance(Duration::from_millis(cfg.heartbeat_ms));
        info!(node = %node, redis = %redacted(&cfg.redis), sentinels = ?cfg.sentinels, "cluster: connecting to Redis in the background");
        Ok(cluster)
    }

    /// This node's leases of the cluster's limits and reservations of its balances.
    pub fn limits(&self) -> &Arc<crate::shared_limits::SharedLimits> {
        &self.limits
    }

    /// Adds a top-up of account `id` (just written to the store) to the cluster's shared
    /// balance, once: queued durably and sent now, or on reconnect when Redis is away.
    pub async fn top_up(
        &self,
        store: &crate::store::Store,
        id: sipd_core::records::Id,
        delta: sipd_core::records::Micros,
    ) {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let name = match store.account(id) {
            Ok(Some(a)) => a.name,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(account = id, error = %e, "top-up not shared: account unreadable");
                return;
            }
        };
        // Unique on this node (the mark is per node): the wall clock in ms and a counter.
        let topup = format!(
            "{}-{}",
            crate::mgmt::unix_ms(std::time::SystemTime::now()),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        match self.limits.top_up(&name, delta, &topup).await {
            Ok(d) => {
                info!(account = %name, %delta, outcome = ?d, "top-up sent to the shared balance")
            }
            Err(e) => {
                tracing::error!(account = %name, %delta, error = %e, "top-up not queued for the shared balance")
            }
        }
    }

    /// The Redis client (connected or reconnecting) the shared state goes through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// `[cluster]` as configured.
    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// `<key_prefix>:<suffix>`: every key and channel sipd uses.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.cfg.key_prefix)
    }

    /// Follows the status: Up once connected and resynced, Down while Redis does not answer.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// Whether connected and resynced now.
    pub fn is_up(&self) -> bool {
        *self.status.borrow() == Status::Up
    }

    /// What the cluster did since start.
    pub fn counters(&self) -> ClusterCounters {
        let c = &self.counts;
        ClusterCounters {
            up: self.is_up(),
            resyncs: c.resyncs.load(Ordering::Relaxed),
            disconnects: c.disconnects.load(Ordering::Relaxed),
            bans_published: c.bans_published.load(Ordering::Relaxed),
            bans_applied: c.bans_applied.load(Ordering::Relaxed),
            write_failures: c.write_failures.load(Ordering::Relaxed),
            cdrs_streamed: c.cdrs_streamed.load(Ordering::Relaxed),
            cdrs_dropped: c.cdrs_dropped.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            pubsub_overflows: c.pubsub_overflows.load(Ordering::Relaxed),
            epoch_changes: c.epoch_changes.load(Ordering::Relaxed),
            bans_pruned: c.bans_pruned.load(Ordering::Relaxed),
            name_conflict: self.name_conflict().is_some(),
            limits_shared: self.limits.health() == crate::shared_limits::Health::Up,
            debits_queued: self.limits.queued_debits() as u64,
        }
    }

    /// The heartbeat value of the other live process using this node's name, when one does:
    /// this node then refuses to join the cluster until restarted with another name.
    pub fn name_conflict(&self) -> Option<String> {
        self.sync.conflict()
    }

    /// Down starts a resync (see [`sync`]): anything that may have lost a change says so
    /// here. Up is only set by the resync task ([`sync::SyncState::finish`]).
    fn set_status(&self, s: Status) {
        if s == Status::Down {
            self.sync.want(&self.status);
            return;
        }
        self.status.send_if_modified(|cur| {
            let changed = *cur != s;
            *cur = s;
            changed
        });
    }

    /// Disconnects from Redis; with `forget`, the heartbeat key goes at once (the node's
    /// shared counts are reclaimed now, not after `node_ttl_ms`).
    /// Without `forget` (a hand-over), the key is marked as left, so the next process of
    /// this node takes it over at once instead of waiting for it to expire.
    pub async fn leave(&self, forget: bool) {
        let key = self.key(&format!("node:{}", self.node));
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, async {
            if !forget {
                heartbeat::mark_left(self).await;
                return;
            }
            use fred::interfaces::{KeysInterface, SetsInterface};
            let _: Result<i64, _> = self.client.del(&key).await;
            let _: Result<i64, _> = self.client.srem(self.key("nodes"), &self.node).await;
        })
        .await;
        let _ = self.client.quit().await;
        let _ = self.subscriber.quit().await;
    }
}

/// 16 random bytes in hex: an instance id or an epoch.
fn random_hex() -> String {
    let mut b = [0u8; 16];
    // Without randomness the time stands in: unique enough to tell two processes apart.
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b = t.to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The URL without its password, for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redacted("redis://:s3cret@10.0.0.5:6379/0"),
            "redis://***@10.0.0.5:6379/0"
        );
        assert_eq!(redacted("redis://10.0.0.5:6379"), "redis://10.0.0.5:6379");
    }

    #[test]
    fn sentinels_replace_the_server() {
        let cfg = ClusterConfig {
            redis: "redis://:pw@ignored:6379/2".into(),
            sentinels: vec!["10.0.0.1:26379".into(), "10.0.0.2:26379".into()],
            sentinel_service: Some("sbc".into()),
            ..ClusterConfig::default()
        };
        let rc = redis_config(&cfg).unwrap();
        assert!(rc.server.is_sentinel());
        assert_eq!(rc.password.as_deref(), Some("pw"));
        assert_eq!(rc.database, Some(2));
        assert!(!rc.fail_fast);
    }
}
