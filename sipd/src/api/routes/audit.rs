//! The audit log (A): filtered, oldest first, read only.

use axum::Json;
use axum::extract::State as Extract;

use crate::api::error::{ApiError, ApiResult, Query};
use crate::api::{Caller, State, blocking};
use crate::store::{AuditEntry, AuditFilter, AuditKind};

/// `GET /api/audit` (ViewAudit): entries oldest first, filtered by `after` (entry id, for paging),
/// `user`, `kind`, `from_ms`/`to_ms` (Unix ms) and `limit` (1..=100000, default 1000); unreadable
/// entries are logged and skipped.
pub async fn list(
    _: Caller,
    Extract(st): Extract<State>,
    q: Query,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    q.only(&["after", "user", "kind", "from_ms", "to_ms", "limit"])?;
    let limit = q.get::<usize>("limit")?.unwrap_or(1000);
    if !(1..=100_000).contains(&limit) {
        return Err(ApiError::invalid("limit", "1..=100000"));
    }
    let f = AuditFilter {
        after_id: q.get("after")?.unwrap_or(0),
        actor: q.get("user")?,
        kind: q.get::<AuditKind>("kind")?,
        from_ms: q.get("from_ms")?,
        until_ms: q.get("to_ms")?,
        limit,
    };
    blocking(&st, move |s| {
        Ok(Json(
            s.store()
                .audit(&f)
                .into_iter()
                .filter_map(|r| {
                    r.map_err(|e| tracing::warn!(error = %e, "skipping an unreadable audit entry"))
                        .ok()
                })
                .collect(),
        ))
    })
    .await
}
