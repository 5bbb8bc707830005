//! Refusals before authentication (R list): one row per (source, reason) with first and last
//! seen and a count, instead of a CDR per refused request. The table is bounded
//! (`[guard] refusal_rows`); `/metrics` has the totals by reason.

use axum::Json;
use axum::extract::State as Extract;

use crate::api::error::ApiResult;
use crate::api::{Caller, State};
use sipd_core::records::RefusalRow;

/// `GET /api/refusals` (View): the refusal table, asked of the call core.
pub async fn list(_: Caller, Extract(st): Extract<State>) -> ApiResult<Json<Vec<RefusalRow>>> {
    Ok(Json(st.control.refusals().await?))
}
