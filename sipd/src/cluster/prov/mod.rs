//! Provisioning shared record by record. Tariffs, connections and accounts (with their auth
//! rules) are each one record, keyed cluster-wide by kind and name, versioned, with
//! tombstones for deletes (see [`record`]). Redis holds the hash `<prefix>:prov:records`
//! (key → the newest record); a node writes its changes there with a script that keeps a
//! record only if newer than the hash's and publishes what it kept, as one batch, on the
//! channel `<prefix>:prov`. Every node applies a record only if newer than its journal's
//! of the key, so two nodes changing different accounts at once both keep their change, an
//! older change sent late loses, and a deleted or renamed record does not come back.
//!
//! A change made through the API (or `sipd import` while stopped) is found by comparing
//! the store with the journal (a "capture"), which also makes renames a tombstone of the
//! old name with the new record, in one batch. The journal is durable: a change not yet in
//! Redis (Redis away, or a crash) is in it and goes up at the next resync, which compares
//! the whole journal with the hash both ways. Captures, applies and resyncs run one at a
//! time; an apply first captures, so this node's unsent edits get their version first.
//!
//! Records a node held before it first shared (its journal was empty) get version 0: they
//! fill the hash where it has nothing of that key and reach nodes that have none (a node
//! started empty), but never replace another node's copy: nodes provisioned apart keep
//! theirs until a change is made to it.
//!
//! After an apply the call core reloads its records; one made before the core is served
//! (the first resync of a node that starts empty) reloads it as soon as it is.
//!
//! Balances are not shared here: an account's balance is only the opening balance of a node
//! that does not have it yet. Staff, the audit log and firewall rules stay per node.

mod apply;
pub mod record;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fred::interfaces::{EventInterface, HashesInterface, LuaInterface};
use tokio::sync::{Mutex, Notify};
use tracing::{debug, info, warn};

use super::heard::{Heard, heard};
use super::{COMMAND_TIMEOUT, Cluster};
use crate::config::Config;
use crate::mgmt::unix_ms;
use crate::store::Store;
pub use record::{Body, JOURNAL_TREE, Journal, ProvRecord};

/// Keeps each record (ARGV in fours: key, version, origin, JSON) if newer than the hash's
/// (`KEYS[1]`; a version 0 only where the hash has none, see [`ProvRecord::newer_than`]), then publishes the kept ones as one JSON array on `KEYS[2]`. How many kept.
const WRITE_IF_NEWER: &str = r"
local kept = {}
for i = 1, #ARGV, 4 do
  local key, v, origin, rec = ARGV[i], tonumber(ARGV[i+1]), ARGV[i+2], ARGV[i+3]
  local newer = true
  local cur = redis.call('HGET', KEYS[1], key)
  if cur then
    local ok, c = pcall(cjson.decode, cur)
    if ok and type(c) == 'table' and c.version then
      if v == 0 or c.version > v or (c.version == v and c.origin >= origin) then
        newer = false
      end
    end
  end
  if newer then
    redis.call('HSET', KEYS[1], key, rec)
    kept[#kept + 1] = rec
  end
end
if #kept > 0 then
  redis.call('PUBLISH', KEYS[2], '[' .. table.concat(kept, ',') .. ']')
end
return #kept
";

/// What this node shares of its provisioning.
pub(super) struct SharedProv {
    cfg: Config,
    store: Arc<Store>,
    journal: Arc<Journal>,
    /// Captures, applies and resyncs, one at a time.
    busy: Mutex<()>,
    /// The API changed something: capture and send.
    changed: Notify,
    /// Records were applied that the core has not reloaded yet (no core yet).
    reload_owed: AtomicBool,
}

impl SharedProv {
    pub(super) fn new(cfg: Config, store: Arc<Store>) -> SharedProv {
        SharedProv {
            cfg,
            journal: Arc::new(Journal::of(&store)),
            store,
            busy: Mutex::new(()),
            changed: Notify::new(),
            reload_owed: AtomicBool::new(false),
        }
    }
}

fn hash(c: &Cluster) -> String {
    c.key("prov:records")
}

/// The channel changes are published on.
pub(super) fn channel(c: &Cluster) -> String {
    c.key("prov")
}

impl Cluster {
    /// After a change to accounts, rules, tariffs or connections through this node's API:
    /// the changed records go to the other nodes (in the background; at the next resync if
    /// Redis is away).
    pub fn provisioning_changed(self: &Arc<Self>) {
        self.prov.changed.notify_one();
    }

    /// The core can be reloaded now: an apply made before it could be reloads it.
    pub(super) fn core_served(self: &Arc<Self>) {
        if self.prov.reload_owed.swap(false, Ordering::AcqRel) {
            let c = self.clone();
            tokio::spawn(async move { reload(&c).await });
        }
    }
}

async fn reload(c: &Arc<Cluster>) {
    c.prov.reload_owed.store(true, Ordering::Release);
    let Some(control) = c.rpc_control() else {
        // `core_served` reloads it.
        return;
    };
    if c.prov.reload_owed.swap(false, Ordering::AcqRel)
        && let Err(e) = control.reload().await
    {
        warn!(error = %e, "cluster: applied provisioning not reloaded into the core");
    }
}

/// The store's changes since the journal last saw it (see [`Journal::capture`]).
async fn capture(c: &Arc<Cluster>) -> Result<Vec<ProvRecord>, String> {
    let (store, journal, node) = (c.prov.store.clone(), c.prov.journal.clone(), c.node.clone());
    tokio::task::spawn_blocking(move || {
        journal.capture(&store, &node, unix_ms(std::time::SystemTime::now()))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

/// Writes `records` to the hash where newer, publishing them. How many were kept.
async fn send(c: &Cluster, records: &[ProvRecord]) -> Result<usize, String> {
    if records.is_empty() {
        return Ok(0);
    }
    let mut args = Vec::with_capacity(records.len() * 4);
    for r in records {
        args.push(r.key.clone());
        args.push(r.version.to_string());
        args.push(r.origin.clone());
        args.push(serde_json::to_string(r).map_err(|e| e.to_string())?);
    }
    let fut = c
        .client
        .eval::<i64, _, _, _>(WRITE_IF_NEWER, vec![hash(c), channel(c)], args);
    match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
        Ok(Ok(n)) => Ok(usize::try_from(n).unwrap_or(0)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {COMMAND_TIMEOUT:?}")),
    }
}

/// Captures this node's changes and sends them if Redis answers (they wait in the journal
/// otherwise).
async fn capture_and_send(c: &Arc<Cluster>) {
    let records = match capture(c).await {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "cluster: provisioning changes not captured");
            return;
        }
    };
    if records.is_empty() || !c.is_up() {
        return;
    }
    if let Err(e) = send(c, &records).await {
        warn!(error = %e, "cluster: provisioning not written; it goes at the next resync");
        c.counts.write_failures.fetch_add(1, Ordering::Relaxed);
        c.set_status(super::Status::Down);
    }
}

/// Applies the records of `incoming` newer than the journal's; whether any was.
async fn apply(c: &Arc<Cluster>, incoming: Vec<ProvRecord>) -> Result<bool, String> {
    let (store, journal, cfg) = (
        c.prov.store.clone(),
        c.prov.journal.clone(),
        c.prov.cfg.clone(),
    );
    let now = unix_ms(std::time::SystemTime::now());
    let applied = tokio::task::spawn_blocking(move || {
        let mut newer = Vec::new();
        for r in incoming {
            if let Some(why) = r.refused(now) {
                warn!(key = %r.key, origin = %r.origin, version = r.version, why, "cluster: provisioning record refused");
                continue;
            }
            if journal.get(&r.key)?.is_none_or(|j| r.newer_than(&j)) {
                newer.push(r);
            }
        }
        if newer.is_empty() {
            return Ok(None);
        }
        let origins: std::collections::BTreeSet<&str> =
            newer.iter().map(|r| r.origin.as_str()).collect();
        let origin = origins.into_iter().collect::<Vec<_>>().join(",");
        apply::apply(&store, &cfg, &journal, &newer, &origin).map(Some)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let Some(applied) = applied else {
        return Ok(false);
    };
    info!(put = ?applied.put, deleted = ?applied.deleted, refused = ?applied.refused, displaced = ?applied.displaced, "cluster: provisioning of other nodes applied");
    if applied.changed() {
        reload(c).await;
    }
    Ok(applied.changed())
}

/// The worker (this node's changes) and the listener (the other nodes').
pub(super) fn spawn(c: Arc<Cluster>) {
    let w = c.clone();
    tokio::spawn(async move {
        loop {
            w.prov.changed.notified().await;
            let _one = w.prov.busy.lock().await;
            capture_and_send(&w).await;
        }
    });
    let mut messages = c.subscriber.message_rx();
    tokio::spawn(async move {
        let channel = channel(&c);
        loop {
            let batch: Vec<ProvRecord> =
                match heard(&c, messages.recv().await, &channel, "provisioning") {
                    Heard::Record(b) => b,
                    Heard::Skip => continue,
                    Heard::Gone => return,
                };
            let batch: Vec<ProvRecord> = batch.into_iter().filter(|r| r.origin != c.node).collect();
            if batch.is_empty() {
                continue;
            }
            debug!(
                records = batch.len(),
                "cluster: provisioning of another node"
            );
            let _one = c.prov.busy.lock().await;
            // This node's own edits first, so they are versioned before the comparison.
            capture_and_send(&c).await;
            if let Err(e) = apply(&c, batch).await {
                warn!(error = %e, "cluster: provisioning of another node not applied");
            }
        }
    });
}

/// At a resync: this node's changes since the journal saw the store are captured; every
/// record newer here than in the hash goes up, every one newer there is applied.
pub(super) async fn resync(c: &Arc<Cluster>) -> Result<(), String> {
    let _one = c.prov.busy.lock().await;
    capture(c).await?;
    let all: std::collections::HashMap<String, String> =
        tokio::time::timeout(COMMAND_TIMEOUT, c.client.hgetall(hash(c)))
            .await
            .map_err(|_| "HGETALL: no answer".to_string())?
            .map_err(|e| e.to_string())?;
    let mut remote = std::collections::HashMap::new();
    for (key, v) in all {
        match serde_json::from_str::<ProvRecord>(&v) {
            Ok(r) => {
                remote.insert(key, r);
            }
            Err(e) => {
                warn!(key = %key, error = %e, "cluster: unreadable provisioning record in Redis")
            }
        }
    }
    let journal = c.prov.journal.clone();
    let local = tokio::task::spawn_blocking(move || journal.all())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let up: Vec<ProvRecord> = local
        .values()
        .filter(|l| remote.get(&l.key).is_none_or(|r| l.newer_than(r)))
        .cloned()
        .collect();
    // Bounded script runs: a few hundred records each.
    for chunk in up.chunks(256) {
        send(c, chunk).await?;
    }
    let down: Vec<ProvRecord> = remote
        .into_values()
        .filter(|r| local.get(&r.key).is_none_or(|l| r.newer_than(l)))
        .collect();
    let (sent, got) = (up.len(), down.len());
    if got > 0 {
        apply(c, down).await?;
    }
    if sent + got > 0 {
        info!(sent, applied = got, "cluster: provisioning resynced");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
