//! Shared bans. Redis holds the hash `<prefix>:bans` (prefix → the newest [`BanRecord`] of
//! it, tombstones included) and the channel of the same name, on which every change is
//! published. A change made here is written with a conditional script (only if newer than
//! what the hash holds) that publishes it in the same step; a change of another node arrives
//! on the channel and is applied here (kernel map, table, store) without being published
//! again. The journal is this node's newest record of each prefix, made here or applied
//! here: at every (re)connection the node compares it with the hash, sends up what is newer
//! here (bans and unbans made while Redis was away) and applies what is newer there.
//! Changes made here while the node is not Up (Redis away, or a resync running) are marked
//! unsent and go right after the resync. While Up, a bounded slice of the hash is pruned
//! every tick (expired bans, old tombstones), and the journal with it once a whole pass is
//! done.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use fred::interfaces::{EventInterface, HashesInterface, LuaInterface, PubsubInterface};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{debug, warn};

use super::heard::{Heard, heard};
use super::{COMMAND_TIMEOUT, Cluster, Status};
use crate::firewall::{BanRecord, Firewall};
use crate::mgmt::unix_ms;

/// Tombstones older than this leave the hash at a resync (a node away longer resyncs its
/// own old bans up again: the unban is then forgotten).
pub(super) const TOMBSTONE_MS: u64 = 7 * 24 * 3_600_000;

/// Writes `ARGV[2]` (a record) at field `ARGV[1]` of `KEYS[1]` and publishes it on `KEYS[2]`,
/// unless the hash holds a record of that prefix at least as new (`ARGV[3]` version,
/// `ARGV[4]` origin). 1 if written.
const WRITE_IF_NEWER: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local ok, c = pcall(cjson.decode, cur)
  if ok and type(c) == 'table' and c.version then
    local v = tonumber(ARGV[3])
    if c.version > v or (c.version == v and c.origin >= ARGV[4]) then return 0 end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', KEYS[2], ARGV[2])
return 1
";

/// Deletes field `ARGV[1]` of `KEYS[1]` if its record is still version `ARGV[2]`.
const DELETE_IF_SAME: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
local ok, c = pcall(cjson.decode, cur)
if ok and type(c) == 'table' and c.version == tonumber(ARGV[2]) then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
";

/// The journal and the firewall it applies to.
pub(super) struct SharedBans {
    fw: Arc<Firewall>,
    journal: Mutex<HashMap<String, BanRecord>>,
    /// Prefixes changed here whose newest record may not be in Redis yet.
    unsent: Mutex<HashSet<String>>,
    /// Where the pruning's pass over the hash is (`HSCAN` cursor).
    pub(super) cursor: Mutex<String>,
}

impl SharedBans {
    /// Starts from the bans the firewall holds now.
    pub(super) fn new(fw: Arc<Firewall>) -> SharedBans {
        let journal = fw
            .shared_snapshot()
            .into_iter()
            .map(|r| (r.prefix.clone(), r))
            .collect();
        SharedBans {
            fw,
            journal: Mutex::new(journal),
            unsent: Mutex::new(HashSet::new()),
            cursor: Mutex::new("0".into()),
        }
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, HashMap<String, BanRecord>> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unsent(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.unsent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `r` was written: no longer unsent, unless a newer change of its prefix came since.
    fn sent(&self, r: &BanRecord) {
        let current = self
            .journal()
            .get(&r.prefix)
            .is_none_or(|j| j.version == r.version && j.origin == r.origin);
        if current {
            self.unsent().remove(&r.prefix);
        }
    }

    /// Forgets expired bans and old tombstones (their hash fields are pruned too).
    pub(super) fn prune_journal(&self, now: u64) -> usize {
        let mut j = self.journal();
        let before = j.len();
        j.retain(|_, r| !super::prune::prunable(r, now));
        before - j.len()
    }

    /// Records a change made here: its version is raised above every version seen of the
    /// prefix, so it wins over what it changes even when clocks differ.
    fn record_local(&self, mut r: BanRecord, node: &str) -> BanRecord {
        r.origin = node.to_owned();
        let mut j = self.journal();
        if let Some(old) = j.get(&r.prefix)
            && old.version >= r.version
        {
            r.version = old.version + 1;
        }
        j.insert(r.prefix.clone(), r.clone());
        // Marked before the publisher looks at the status: either it sees Up and writes it,
        // or the resync that sets Up finds it here afterwards.
        self.unsent().insert(r.prefix.clone());
        r
    }

    /// Takes `r` into the journal if it is newer than what the journal holds.
    fn take_if_newer(&self, r: &BanRecord) -> bool {
        let mut j = self.journal();
        match j.get(&r.prefix) {
            Some(old) if !r.newer_than(old) => false,
            _ => {
                j.insert(r.prefix.clone(), r.clone());
                true
            }
        }
    }
}

pub(super) fn hash(c: &Cluster) -> String {
    c.key("bans")
}

/// Writes `r` if newer than the hash's record, publishing it. Whether it was written.
async fn write(c: &Cluster, r: &BanRecord) -> Result<bool, String> {
    let json = serde_json::to_string(r).map_err(|e| e.to_string())?;
    let keys = vec![hash(c), hash(c)];
    let args = vec![
        r.prefix.clone(),
        json,
        r.version.to_string(),
        r.origin.clone(),
    ];
    let fut = c.client.eval::<i64, _, _, _>(WRITE_IF_NEWER, keys, args);
    match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
        Ok(Ok(n)) => Ok(n == 1),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {COMMAND_TIMEOUT:?}")),
    }
}

/// Applies records of other nodes, off the runtime's workers (map syscalls, store writes).
async fn apply(c: &Arc<Cluster>, records: Vec<BanRecord>) {
    if records.is_empty() {
        return;
    }
    let fw = c.bans.fw.clone();
    let n = records.len() as u64;
    let r = tokio::task::spawn_blocking(move || {
        for r in &records {
            if let Err(e) = fw.apply_shared(r) {
                warn!(prefix = %r.prefix, origin = %r.origin, error = %e, "shared ban not applied");
            }
        }
    })
    .await;
    if r.is_ok() {
        c.counts.bans_applied.fetch_add(n, Ordering::Relaxed);
    }
}

/// The publisher (changes made here) and the listener (changes of the other nodes).
pub(super) fn spawn(c: Arc<Cluster>, mut changes: UnboundedReceiver<BanRecord>) {
    let pc = c.clone();
    tokio::spawn(async move {
        while let Some(r) = changes.recv().await {
            let r = pc.bans.record_local(r, &pc.node);
            if !pc.is_up() {
                // In the journal: the next resync sends it.
                continue;
            }
            match write(&pc, &r).await {
                Ok(_) => {
                    pc.bans.sent(&r);
                    pc.counts.bans_published.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    pc.counts.write_failures.fetch_add(1, Ordering::Relaxed);
                    warn!(prefix = %r.prefix, error = %e, "cluster: ban change not written; it goes at the next resync");
                    // Not Up until a resync has sent it.
                    pc.set_status(Status::Down);
                }
            }
        }
    });
    let mut messages = c.subscriber.message_rx();
    tokio::spawn(async move {
        let channel = hash(&c);
        loop {
            let first = messages.recv().await;
            // What else is already waiting goes in the same batch: one trip to the blocking
            // pool per burst, not per ban, so the buffer drains as fast as it fills.
            let mut batch = vec![first];
            while batch.len() < 256 {
                match messages.try_recv() {
                    Ok(m) => batch.push(Ok(m)),
                    Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                        batch.push(Err(tokio::sync::broadcast::error::RecvError::Lagged(n)))
                    }
                    Err(_) => break,
                }
            }
            let mut records = Vec::new();
            for m in batch {
                let r: BanRecord = match heard(&c, m, &channel, "ban record") {
                    Heard::Record(r) => r,
                    Heard::Skip => continue,
                    Heard::Gone => return,
                };
                if r.origin == c.node || !c.bans.take_if_newer(&r) {
                    continue;
                }
                debug!(prefix = %r.prefix, origin = %r.origin, removed = r.removed, "cluster: ban change of another node");
                records.push(r);
            }
            apply(&c, records).await;
        }
    });
}

/// After a resync: sends the changes made here while it ran (or that failed to go).
pub(super) async fn flush_unsent(c: &Arc<Cluster>) {
    let prefixes: Vec<String> = c.bans.unsent().iter().cloned().collect();
    for p in prefixes {
        let Some(r) = c.bans.journal().get(&p).cloned() else {
            c.bans.unsent().remove(&p);
            continue;
        };
        match write(c, &r).await {
            Ok(_) => {
                c.bans.sent(&r);
                c.counts.bans_published.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                c.counts.write_failures.fetch_add(1, Ordering::Relaxed);
                warn!(prefix = %r.prefix, error = %e, "cluster: ban change not written; it goes at the next resync");
                c.set_status(Status::Down);
                return;
            }
        }
    }
}

/// What a resync did.
#[derive(Debug, Default)]
pub struct Resynced {
    /// Records sent up (newer here).
    pub sent: usize,
    /// Records applied here (newer there).
    pub applied: usize,
    /// Records removed from the hash (expired bans, old tombstones).
    pub pruned: usize,
}

/// The complete resync, both ways; run when Redis answers again (and at the first
/// connection). Subscribes first, so nothing published meanwhile is missed.
pub(super) async fn resync(c: &Arc<Cluster>) -> Result<Resynced, String> {
    let t = |e: fred::error::Error| e.to_string();
    // Every channel the node listens on (bans, provisioning, requests to it): subscribed
    // before anything is read, so nothing published meanwhile is missed.
    let channels = vec![hash(c), c.key("prov"), super::rpc::channel(c, &c.node)];
    // What changes from here on is sent after this resync (it may miss the snapshot below).
    c.bans.unsent().clear();
    tokio::time::timeout(COMMAND_TIMEOUT, c.subscriber.subscribe(channels))
        .await
        .map_err(|_| "subscribe: no answer".to_string())?
        .map_err(t)?;
    let all: HashMap<String, String> =
        tokio::time::timeout(COMMAND_TIMEOUT, c.client.hgetall(hash(c)))
            .await
            .map_err(|_| "HGETALL: no answer".to_string())?
            .map_err(t)?;
    let now = unix_ms(std::time::SystemTime::now());
    let mut remote = HashMap::new();
    let mut prune = Vec::new();
    for (field, v) in all {
        match serde_json::from_str::<BanRecord>(&v) {
            Ok(r) if super::prune::prunable(&r, now) => prune.push((field, r.version)),
            Ok(r) => {
                remote.insert(field, r);
            }
            Err(e) => warn!(field = %field, error = %e, "cluster: unreadable ban record in Redis"),
        }
    }
    let local: Vec<BanRecord> = c.bans.journal().values().cloned().collect();
    let mut out = Resynced::default();
    for l in &local {
        let newer_here = remote.get(&l.prefix).is_none_or(|r| l.newer_than(r));
        if newer_here && !l.expired(now) {
            let mut l = l.clone();
            if l.origin.is_empty() {
                l.origin = c.node.clone();
            }
            write(c, &l).await?;
            out.sent += 1;
        }
    }
    let mut incoming = Vec::new();
    for r in remote.into_values() {
        if c.bans.take_if_newer(&r) {
            incoming.push(r);
        }
    }
    out.applied = incoming.len();
    apply(c, incoming).await;
    for (field, version) in prune {
        let fut = c.client.eval::<i64, _, _, _>(
            DELETE_IF_SAME,
            vec![hash(c)],
            vec![field, version.to_string()],
        );
        if let Ok(Ok(1)) = tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
            out.pruned += 1;
        }
    }
    Ok(out)
}
