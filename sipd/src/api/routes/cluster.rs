//! The cluster's live calls (`[cluster]`): every node's calls (R) and hanging up another
//! node's (O), asked of the other nodes over Redis (see [`crate::cluster::rpc`]).

use axum::Json;
use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;

use super::path_id;
use crate::api::error::{ApiError, ApiResult};
use crate::api::{Caller, State};
use crate::cluster::rpc::{Ask, RpcError};
use crate::cluster::{Cluster, Status};

/// One node's calls, or why they could not be had.
#[derive(Debug, Serialize)]
pub struct NodeCalls {
    /// The node's name.
    pub node: String,
    /// Its calls in progress, as its `GET /api/calls` lists them; `null` with `error`.
    pub calls: Option<Value>,
    /// Why the node gave no list (not connected, no answer in time).
    pub error: Option<String>,
}

/// The cluster as this node sees it (`GET /api/cluster`).
#[derive(Debug, Serialize)]
pub struct ClusterView {
    /// This node's name.
    pub node: String,
    /// `up` or `down`.
    pub status: Status,
    /// The nodes whose heartbeat is current (empty while this node is down).
    pub nodes: Vec<String>,
}

fn cluster(st: &State) -> ApiResult<std::sync::Arc<Cluster>> {
    st.control.cluster.clone().ok_or_else(|| {
        ApiError::not_found("this node is not part of a cluster ([cluster] is not set)")
    })
}

fn unavailable(e: RpcError) -> ApiError {
    let code = match e {
        RpcError::Timeout(..) => StatusCode::GATEWAY_TIMEOUT,
        RpcError::Failed(..) => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError::new(code, "cluster", e.to_string())
}

/// `GET /api/cluster` (View): this node, its status and the nodes alive.
pub async fn view(_c: Caller, Extract(st): Extract<State>) -> ApiResult<Json<ClusterView>> {
    let cl = cluster(&st)?;
    let nodes = cl.nodes().await.unwrap_or_default();
    Ok(Json(ClusterView {
        node: cl.node().to_owned(),
        status: *cl.status().borrow(),
        nodes,
    }))
}

/// `GET /api/cluster/calls` (View): every live node's calls, each with the node's name; a
/// node that does not answer within a few seconds is listed with its error.
pub async fn calls(_c: Caller, Extract(st): Extract<State>) -> ApiResult<Json<Vec<NodeCalls>>> {
    let cl = cluster(&st)?;
    let mine = serde_json::to_value(st.control.live_calls().await?).ok();
    let mut out = vec![NodeCalls {
        node: cl.node().to_owned(),
        calls: mine,
        error: None,
    }];
    let others: Vec<String> = match cl.nodes().await {
        Ok(n) => n.into_iter().filter(|n| n != cl.node()).collect(),
        Err(e) => {
            out[0].error = Some(format!("other nodes not listed: {e}"));
            return Ok(Json(out));
        }
    };
    let asks = others.iter().map(|n| cl.ask(n, Ask::Calls));
    let answers = futures_util::future::join_all(asks).await;
    for (node, a) in others.into_iter().zip(answers) {
        out.push(match a {
            Ok(v) => NodeCalls {
                node,
                calls: Some(v),
                error: None,
            },
            Err(e) => NodeCalls {
                node,
                calls: None,
                error: Some(e.to_string()),
            },
        });
    }
    Ok(Json(out))
}

/// `DELETE /api/cluster/calls/{node}/{id}` (Operate): hangs up call `id` of `node` (this one
/// or another); 503 when the node is not connected, 504 when it did not answer in time, 404
/// when it has no such call.
pub async fn hangup(
    c: Caller,
    Extract(st): Extract<State>,
    Path((node, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let cl = cluster(&st)?;
    let id = path_id(&id)?;
    let by = c.username().to_owned();
    if node == cl.node() {
        if !st.control.hangup(id, &by).await? {
            return Err(ApiError::not_found(format!("no live call #{id}")));
        }
        return Ok(StatusCode::NO_CONTENT);
    }
    cl.ask(&node, Ask::Hangup { id, by })
        .await
        .map_err(unavailable)?;
    Ok(StatusCode::NO_CONTENT)
}
