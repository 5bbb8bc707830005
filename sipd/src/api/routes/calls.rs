//! Live calls (R list and SIP messages, O hang up).

use axum::Json;
use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;

use super::path_id;
use crate::api::error::{ApiError, ApiResult};
use crate::api::{Caller, State, blocking};
use crate::call_media::LiveCall;
use crate::events::capture::CallMessages;
use crate::store::AuditKind;

/// `GET /api/calls` (View; a customer's narrowed to its account): the calls in progress,
/// asked of the call core, each with its media figures from the relay (see
/// [`crate::call_media`]).
pub async fn list(c: Caller, Extract(st): Extract<State>) -> ApiResult<Json<Vec<LiveCall>>> {
    let mut calls = st.control.live_calls().await?;
    calls.retain(|k| c.visible.shows(Some(k.call.account_id)));
    Ok(Json(calls))
}

/// `GET /api/calls/{id}/messages`: the SIP messages of a live or recently ended call, both
/// legs, oldest first (what sipd keeps: see `[call_messages]`).
pub async fn messages(
    _: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<Json<CallMessages>> {
    let id = path_id(&id)?;
    st.control
        .capture
        .messages(id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no messages kept for call #{id}")))
}

/// `DELETE /api/calls/{id}` (Operate; a customer only its own account's calls, 404 for
/// others): ends the call on both sides and audits who did it; 404 if no such live call.
pub async fn hangup(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = path_id(&id)?;
    let call = st.control.calls().await?.into_iter().find(|k| k.id == id);
    let by = crate::mgmt::audit_name(&c.authz.staff);
    if !st.control.hangup(id, &by).await? {
        return Err(ApiError::not_found(format!("no live call #{id}")));
    }
    // No store record changes: the entry is the record of who ended the call.
    blocking(&st, move |s| {
        s.store().append_audit(
            &c.actor().audit(
                AuditKind::Delete,
                format!("call:{id}"),
                Some(
                    if c.visible.account().is_some() {
                        "hung up by a customer user"
                    } else {
                        "hung up by staff"
                    }
                    .into(),
                ),
                call.as_ref().and_then(super::json),
                None,
            ),
        )?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
