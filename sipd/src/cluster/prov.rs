//! Provisioning shared: after a change to accounts, auth rules, tariffs or connections made
//! through a node's API, the node exports its records (as `sipd export` does) and writes
//! them, versioned, to `<prefix>:prov` (only if newer than what is there), publishing them
//! on the channel of the same name. Every other node imports them as `sipd import` does,
//! with the same validation, and reloads its call core; each keeps its sled store as its
//! local copy and starts without Redis. At a resync the newer side wins: a change made here
//! while Redis was away goes up, a newer one comes down.
//!
//! Balances are not last-writer-wins: an import keeps the balance of an account that
//! exists (only a new account takes the exported one), so money is never overwritten by
//! another node's copy. Staff and the audit log stay per node.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use fred::interfaces::{EventInterface, KeysInterface, LuaInterface};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{COMMAND_TIMEOUT, Cluster};
use crate::config::Config;
use crate::mgmt::unix_ms;
use crate::provision::ProvisionFile;
use crate::store::Store;

/// One node's whole provisioning, versioned like a ban (Unix ms of the change, above every
/// version the node had seen; `origin` breaks ties).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProvRecord {
    /// Orders snapshots; the higher wins.
    pub version: u64,
    /// The node whose API made the change.
    pub origin: String,
    /// Tariffs, connections, accounts with their rules (SIP credentials as HA1 only).
    pub file: ProvisionFile,
}

const SET_IF_NEWER: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, c = pcall(cjson.decode, cur)
  if ok and type(c) == 'table' and c.version then
    local v = tonumber(ARGV[2])
    if c.version > v or (c.version == v and c.origin >= ARGV[3]) then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
";

/// What this node knows of the shared provisioning.
pub(super) struct SharedProv {
    cfg: Config,
    store: Arc<Store>,
    /// The newest snapshot taken or made here: (version, origin).
    last: Mutex<(u64, String)>,
    /// A change made here is not in Redis yet.
    pending: AtomicBool,
}

impl SharedProv {
    pub(super) fn new(cfg: Config, store: Arc<Store>) -> SharedProv {
        SharedProv {
            cfg,
            store,
            last: Mutex::new((0, String::new())),
            pending: AtomicBool::new(false),
        }
    }

    fn last(&self) -> std::sync::MutexGuard<'_, (u64, String)> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn newer(&self, r: &ProvRecord) -> bool {
        let l = self.last();
        (r.version, &r.origin) > (l.0, &l.1)
    }
}

fn key(c: &Cluster) -> String {
    c.key("prov")
}

impl Cluster {
    /// After a change to accounts, rules, tariffs or connections through this node's API:
    /// its records go to the other nodes (in the background; at the next resync if Redis is
    /// away).
    pub fn provisioning_changed(self: &Arc<Self>) {
        let c = self.clone();
        {
            let mut l = c.prov.last();
            let v = unix_ms(std::time::SystemTime::now()).max(l.0 + 1);
            *l = (v, c.node.clone());
        }
        c.prov.pending.store(true, Ordering::Relaxed);
        tokio::spawn(async move {
            if c.is_up()
                && let Err(e) = send(&c).await
            {
                warn!(error = %e, "cluster: provisioning not written; it goes at the next resync");
                c.counts.write_failures.fetch_add(1, Ordering::Relaxed);
                c.set_status(super::Status::Down);
            }
        });
    }
}

/// Writes this node's records as the newest snapshot (if still newest).
async fn send(c: &Arc<Cluster>) -> Result<(), String> {
    let store = c.prov.store.clone();
    let file = tokio::task::spawn_blocking(move || crate::provision::export(&store))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let (version, origin) = c.prov.last().clone();
    let rec = ProvRecord {
        version,
        origin,
        file,
    };
    let json = serde_json::to_string(&rec).map_err(|e| e.to_string())?;
    let fut = c.client.eval::<i64, _, _, _>(
        SET_IF_NEWER,
        vec![key(c)],
        vec![json, rec.version.to_string(), rec.origin.clone()],
    );
    match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
        Ok(Ok(_)) => {
            c.prov.pending.store(false, Ordering::Relaxed);
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {COMMAND_TIMEOUT:?}")),
    }
}

/// Imports another node's snapshot with `sipd import`'s checks, then reloads the core.
async fn apply(c: &Arc<Cluster>, rec: ProvRecord) {
    if !c.prov.newer(&rec) {
        return;
    }
    let store = c.prov.store.clone();
    let cfg = c.prov.cfg.clone();
    let origin = rec.origin.clone();
    let file = rec.file.clone();
    let r = tokio::task::spawn_blocking(move || {
        let plan = crate::provision::plan(&file, "", &store, &cfg.sip_secrets(), &cfg)?;
        crate::provision::apply(
            &plan,
            &store,
            std::path::Path::new(&format!("cluster:{origin}")),
        )
    })
    .await;
    match r {
        Ok(Ok(summary)) => {
            *c.prov.last() = (rec.version, rec.origin.clone());
            info!(origin = %rec.origin, %summary, "cluster: provisioning of another node imported");
            if let Some(control) = c.rpc_control()
                && let Err(e) = control.reload().await
            {
                warn!(error = %e, "cluster: imported provisioning not reloaded into the core");
            }
        }
        Ok(Err(e)) => {
            warn!(origin = %rec.origin, error = %e, "cluster: provisioning of another node refused here")
        }
        Err(e) => warn!(error = %e, "cluster: provisioning import did not run"),
    }
}

/// Listens for other nodes' snapshots.
pub(super) fn spawn(c: Arc<Cluster>) {
    let mut messages = c.subscriber.message_rx();
    tokio::spawn(async move {
        let channel = key(&c);
        loop {
            let m = match messages.recv().await {
                Ok(m) => m,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    c.set_status(super::Status::Down);
                    continue;
                }
                Err(_) => return,
            };
            if *m.channel != *channel {
                continue;
            }
            let Some(text) = m.value.as_str() else {
                continue;
            };
            match serde_json::from_str::<ProvRecord>(&text) {
                Ok(r) if r.origin != c.node => apply(&c, r).await,
                Ok(_) => {}
                Err(e) => warn!(error = %e, "cluster: unreadable provisioning ignored"),
            }
        }
    });
}

/// At a resync: the newer of Redis's snapshot and this node's change wins.
pub(super) async fn resync(c: &Arc<Cluster>) -> Result<(), String> {
    let cur: Option<String> = tokio::time::timeout(COMMAND_TIMEOUT, c.client.get(key(c)))
        .await
        .map_err(|_| "GET: no answer".to_string())?
        .map_err(|e| e.to_string())?;
    let remote = cur.and_then(|s| serde_json::from_str::<ProvRecord>(&s).ok());
    match remote {
        Some(r) if c.prov.newer(&r) => {
            apply(c, r).await;
            Ok(())
        }
        _ if c.prov.pending.load(Ordering::Relaxed) => send(c).await,
        _ => Ok(()),
    }
}
