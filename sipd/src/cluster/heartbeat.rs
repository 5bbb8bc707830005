//! The heartbeat, in a task of its own (a resync never delays it, or the other nodes would
//! reclaim this node's counts): every `heartbeat_ms` one script sets `<prefix>:node:<node>`
//! to `<instance> <ms>` with a TTL of `node_ttl_ms`, adds the node to `<prefix>:nodes` and
//! reads Redis's epoch (`<prefix>:epoch`, set at first use to a random value). Its answer is
//! the node's view of Redis:
//!
//! - not answered: Down (the resync task resyncs once it answers again);
//! - an epoch other than the one of the last resync: Redis lost its data (a restart without
//!   persistence, a failover to an empty replica), so Down and a full resync both ways;
//! - the key held by another process: either this node's previous process (crashed: its key
//!   expires within `node_ttl_ms`, then this one takes it) or another live node with the same
//!   name (its key changes while held): this node then refuses to join, loudly, and leaves
//!   the other's state alone.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fred::interfaces::{EventInterface, LuaInterface};
use tracing::{error, info, warn};

use super::{COMMAND_TIMEOUT, Cluster, Status};
use crate::mgmt::unix_ms;

/// KEYS: node key, nodes set, epoch key. ARGV: instance, now ms, TTL ms, node name, a new
/// epoch. `{1, epoch}` when the key is ours (or free, or left by a hand-over) and was set;
/// `{0, value}` when another process holds it.
const BEAT: &str = r"
local cur = redis.call('GET', KEYS[1])
local mine = ARGV[1] .. ' '
if cur and string.sub(cur, 1, #mine) ~= mine and string.sub(cur, -5) ~= ' left' then
  return {0, cur}
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('SET', KEYS[3], ARGV[5], 'NX')
return {1, redis.call('GET', KEYS[3])}
";

/// Marks the key as left (keeping its TTL) if it is still this process's.
const LEFT: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
  redis.call('SET', KEYS[1], cur .. ' left', 'KEEPTTL')
  return 1
end
return 0
";

/// What one heartbeat found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Beat {
    /// Set; Redis's epoch.
    Alive(String),
    /// Another process holds the key; its value.
    Held(String),
}

fn node_key(c: &Cluster) -> String {
    c.key(&format!("node:{}", c.node))
}

/// One heartbeat.
pub(super) async fn beat(c: &Cluster) -> Result<Beat, String> {
    let ttl = c.cfg.node_ttl_ms.to_string();
    let now = unix_ms(std::time::SystemTime::now()).to_string();
    let keys = vec![node_key(c), c.key("nodes"), c.key("epoch")];
    let args = vec![
        c.instance.clone(),
        now,
        ttl,
        c.node.clone(),
        super::random_hex(),
    ];
    let fut = c.client.eval::<(i64, String), _, _, _>(BEAT, keys, args);
    match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
        Ok(Ok((1, epoch))) => Ok(Beat::Alive(epoch)),
        Ok(Ok((_, holder))) => Ok(Beat::Held(holder)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {COMMAND_TIMEOUT:?}")),
    }
}

/// At a hand-over: the next process of this node may take the key at once.
pub(super) async fn mark_left(c: &Cluster) {
    c.sync.left.store(true, Ordering::Relaxed);
    let fut = c
        .client
        .eval::<i64, _, _, _>(LEFT, vec![node_key(c)], vec![c.instance.clone()]);
    let _ = tokio::time::timeout(COMMAND_TIMEOUT, fut).await;
}

/// Runs the heartbeat, and the watch on both clients' reconnections, for as long as the
/// process (the heartbeat stops if another live node has this node's name).
pub(super) fn spawn(c: Arc<Cluster>) {
    for mut rx in [c.client.reconnect_rx(), c.subscriber.reconnect_rx()] {
        let c = c.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Counted when it broke a synced state: the first connection, or one
                        // while a resync is due anyway, changes nothing.
                        if c.is_up() {
                            c.counts.reconnects.fetch_add(1, Ordering::Relaxed);
                            info!(
                                "cluster: reconnected to Redis; resyncing (messages may have been lost)"
                            );
                        }
                        c.set_status(Status::Down);
                    }
                    Err(_) => return,
                }
            }
        });
    }
    tokio::spawn(async move {
        let every = Duration::from_millis(c.cfg.heartbeat_ms);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut said_down = false;
        // The other process's value when the key was first found held.
        let mut held: Option<String> = None;
        loop {
            tick.tick().await;
            if c.sync.left.load(Ordering::Relaxed) {
                // Handed over: the key stays marked as left for the next process.
                return;
            }
            match beat(&c).await {
                Ok(Beat::Alive(epoch)) => {
                    held = None;
                    c.limits.fence(false);
                    said_down = false;
                    c.sync.reachable.store(true, Ordering::Relaxed);
                    if c.sync.epoch_changed(&epoch) {
                        c.counts.epoch_changes.fetch_add(1, Ordering::Relaxed);
                        warn!(epoch = %epoch, "cluster: Redis's epoch changed (it lost its data); full resync");
                        c.set_status(Status::Down);
                    }
                    c.sync.seen(epoch);
                    if !c.is_up() {
                        c.sync.wake.notify_one();
                    }
                }
                Ok(Beat::Held(value)) => {
                    // Nothing is written while another process holds the name. Shared
                    // limits go on meanwhile: the holder is most likely this node's own
                    // previous run (crashed), whose leases are this node's; they are fenced
                    // once another live node is known to hold the name.
                    c.sync.reachable.store(false, Ordering::Relaxed);
                    c.set_status(Status::Down);
                    match &held {
                        Some(first) if *first != value => {
                            error!(node = %c.node, other = %value, "cluster: another live node uses this node's name; this node refuses to join the cluster (set a unique [cluster] node and restart)");
                            c.sync.set_conflict(value);
                            // Leases and reservations are keyed by the name: the other's.
                            c.limits.fence(true);
                            return;
                        }
                        Some(_) => {}
                        None => {
                            info!(node = %c.node, other = %value, "cluster: this node's heartbeat key is held by another process; waiting for it to expire (a previous run) or to change (another node with this name)");
                            held = Some(value);
                        }
                    }
                }
                Err(e) => {
                    c.sync.reachable.store(false, Ordering::Relaxed);
                    if c.is_up() {
                        c.counts.disconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    c.set_status(Status::Down);
                    if !said_down {
                        warn!(error = %e, "cluster: Redis does not answer; bans applied stay, changes made here wait for it");
                        said_down = true;
                    }
                }
            }
        }
    });
}
