//! Requests to other nodes over Redis pub/sub: each node listens on `<prefix>:rpc:<node>`;
//! a request names the node to answer to, and the answer comes back on that node's channel.
//! Used for the cluster's live calls (list every node's, hang up another node's). A node
//! that is gone gives a clear error at once (nobody listens on its channel) or after
//! [`ANSWER_WITHIN`]: never a hang.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use fred::interfaces::{EventInterface, KeysInterface, PubsubInterface, SetsInterface};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::{COMMAND_TIMEOUT, Cluster};
use crate::control::Control;

/// How long a node waits for another's answer.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// What one node asks another.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Ask {
    /// Its calls in progress (as `GET /api/calls` lists them).
    Calls,
    /// Hang up its call `id` for staff member `by`.
    Hangup {
        /// The call's id on that node.
        id: u64,
        /// Who the CDR and the audit name.
        by: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    id: u64,
    from: String,
    ask: Ask,
}

#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    id: u64,
    result: Result<Value, String>,
}

/// Why another node gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// This node is not connected to Redis.
    #[error("this node is not connected to the cluster's Redis")]
    Down,
    /// No node of that name listens (not running, or not connected to Redis).
    #[error("node {0} is not connected to the cluster")]
    Gone(String),
    /// The node did not answer in time.
    #[error("node {0} did not answer within {1:?}")]
    Timeout(String, Duration),
    /// The node answered with an error.
    #[error("node {0}: {1}")]
    Failed(String, String),
    /// Redis refused the request.
    #[error("Redis: {0}")]
    Redis(String),
}

/// Requests waiting for their answer, and the daemon that answers them here.
#[derive(Default)]
pub(super) struct Rpc {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>,
    control: OnceLock<Control>,
}

impl Rpc {
    fn waiting(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Result<Value, String>>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// This node's request channel.
pub(super) fn channel(c: &Cluster, node: &str) -> String {
    c.key(&format!("rpc:{node}"))
}

impl Cluster {
    /// Answers other nodes' requests with `control` from now on.
    pub fn serve(self: &Arc<Self>, control: Control) {
        let _ = self.rpc.control.set(control);
        self.core_served();
    }

    /// The daemon's control handle, once [`Cluster::serve`] gave it.
    pub(super) fn rpc_control(&self) -> Option<&Control> {
        self.rpc.control.get()
    }

    /// The nodes alive now (their heartbeat key has not expired), this one included, sorted.
    pub async fn nodes(&self) -> Result<Vec<String>, RpcError> {
        let r = tokio::time::timeout(COMMAND_TIMEOUT, async {
            let all: Vec<String> = self.client.smembers(self.key("nodes")).await?;
            let mut alive = Vec::new();
            for n in all {
                let k = self.key(&format!("node:{n}"));
                let e: i64 = self.client.exists(k).await?;
                if e > 0 {
                    alive.push(n);
                }
            }
            Ok::<_, fred::error::Error>(alive)
        })
        .await;
        let mut v = match r {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(RpcError::Redis(e.to_string())),
            Err(_) => return Err(RpcError::Down),
        };
        if !v.contains(&self.node) {
            v.push(self.node.clone());
        }
        v.sort();
        Ok(v)
    }

    /// Asks `node` and waits for its answer (at most [`ANSWER_WITHIN`]).
    pub async fn ask(&self, node: &str, ask: Ask) -> Result<Value, RpcError> {
        if !self.is_up() {
            return Err(RpcError::Down);
        }
        let id = self.rpc.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.rpc.waiting().insert(id, tx);
        let req = Request {
            id,
            from: self.node.clone(),
            ask,
        };
        let body = serde_json::to_string(&req).unwrap_or_default();
        let sent = tokio::time::timeout(
            COMMAND_TIMEOUT,
            self.client.publish::<i64, _, _>(channel(self, node), body),
        )
        .await;
        let listeners = match sent {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                self.rpc.waiting().remove(&id);
                return Err(RpcError::Redis(e.to_string()));
            }
            Err(_) => {
                self.rpc.waiting().remove(&id);
                return Err(RpcError::Down);
            }
        };
        if listeners == 0 {
            self.rpc.waiting().remove(&id);
            return Err(RpcError::Gone(node.to_owned()));
        }
        let r = tokio::time::timeout(ANSWER_WITHIN, rx).await;
        self.rpc.waiting().remove(&id);
        match r {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(RpcError::Failed(node.to_owned(), e)),
            _ => Err(RpcError::Timeout(node.to_owned(), ANSWER_WITHIN)),
        }
    }
}

/// What this node answers to `ask`.
async fn answer(control: Option<&Control>, ask: Ask) -> Result<Value, String> {
    let Some(control) = control else {
        return Err("not ready".into());
    };
    match ask {
        Ask::Calls => {
            let calls = control.live_calls().await.map_err(|e| e.to_string())?;
            serde_json::to_value(calls).map_err(|e| e.to_string())
        }
        Ask::Hangup { id, by } => {
            let call = control
                .calls()
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .find(|k| k.id == id);
            if !control.hangup(id, &by).await.map_err(|e| e.to_string())? {
                return Err(format!("no live call #{id}"));
            }
            let store = control.store.clone();
            let node_by = by.clone();
            let _ = tokio::task::spawn_blocking(move || {
                store.audit_system(
                    &crate::store::System("cluster"),
                    crate::store::AuditKind::Delete,
                    format!("call:{id}"),
                    crate::store::AuditResult::Success,
                    Some(format!("hung up by {node_by} through another node")),
                    call.and_then(|c| serde_json::to_value(c).ok()),
                )
            })
            .await;
            Ok(Value::Null)
        }
    }
}

/// Listens on this node's channel: answers requests, and hands answers to their waiters.
pub(super) fn spawn(c: Arc<Cluster>) {
    let mut messages = c.subscriber.message_rx();
    tokio::spawn(async move {
        let mine = channel(&c, &c.node);
        loop {
            let m = match messages.recv().await {
                Ok(m) => m,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            };
            if *m.channel != *mine {
                continue;
            }
            let Some(text) = m.value.as_str() else {
                continue;
            };
            if let Ok(reply) = serde_json::from_str::<Reply>(&text) {
                if let Some(tx) = c.rpc.waiting().remove(&reply.id) {
                    let _ = tx.send(reply.result);
                }
                continue;
            }
            let req: Request = match serde_json::from_str(&text) {
                Ok(r) => r,
                Err(e) => {
                    warn!(error = %e, "cluster: unreadable request ignored");
                    continue;
                }
            };
            debug!(from = %req.from, ask = ?req.ask, "cluster: request");
            let c2 = c.clone();
            tokio::spawn(async move {
                let result = answer(c2.rpc.control.get(), req.ask).await;
                let body = serde_json::to_string(&Reply { id: req.id, result }).unwrap_or_default();
                let _ = tokio::time::timeout(
                    COMMAND_TIMEOUT,
                    c2.client
                        .publish::<i64, _, _>(channel(&c2, &req.from), body),
                )
                .await;
            });
        }
    });
}
