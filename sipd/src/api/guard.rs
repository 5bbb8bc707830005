//! The one place a request is authorized: before any handler runs, its route's [`Access`]
//! (from the route table) is checked against the caller, with the account the request
//! touches looked up when the caller is a customer. Handlers receive the checked [`Caller`]
//! (with what it may see of lists) and decide nothing about permissions themselves.

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State as Extract};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ApiResult};
use super::routes::{self, Access};
use super::{Caller, State, blocking};
use crate::mgmt::{AccountFrom, Action, Scope, Target};

/// The middleware on every route (`route_layer`): refuses the request, or hands the checked
/// [`Caller`] to the handler through the request's extensions.
pub(crate) async fn guard(Extract(st): Extract<State>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    match admit(&st, &mut parts).await {
        Ok(caller) => {
            if let Some(c) = caller {
                parts.extensions.insert(c);
            }
            next.run(Request::from_parts(parts, body)).await
        }
        Err(e) => e.into_response(),
    }
}

/// The caller, checked; `None` for a public endpoint.
async fn admit(st: &State, parts: &mut Parts) -> ApiResult<Option<Caller>> {
    let access = parts
        .extensions
        .get::<MatchedPath>()
        .and_then(|p| routes::access(parts.method.as_str(), p.as_str()));
    // Fail closed: a route without a stated access is a bug, never an open door.
    let Some(access) = access else {
        tracing::error!(request = %parts.uri.path(), "route not in the route table");
        return Err(ApiError::internal("endpoint without a stated access"));
    };
    let (action, scope) = match access {
        Access::Public => return Ok(None),
        Access::Metrics if st.cfg.management.metrics_public => return Ok(None),
        Access::Metrics => (Action::View, Scope::System),
        Access::Needs(a, s) => (a, s),
    };
    let mut c = Caller::authenticate(parts, st).await?;
    let target = match c.authz.staff.customer_of() {
        // Staff are decided on the role alone: no lookup.
        None => unresolved(scope),
        Some(_) => resolve(st, scope, parts).await?,
    };
    c.visible = c.permit_in(action, target)?;
    Ok(Some(c))
}

fn unresolved(scope: Scope) -> Target {
    match scope {
        Scope::System => Target::System,
        Scope::Own => Target::Own,
        Scope::Account(_) => Target::Account(None),
        Scope::PerAccount => Target::PerAccount,
    }
}

/// The account the request touches, looked up as the route states.
async fn resolve(st: &State, scope: Scope, parts: &mut Parts) -> ApiResult<Target> {
    let Scope::Account(from) = scope else {
        return Ok(unresolved(scope));
    };
    let id = RawPathParams::from_request_parts(parts, st)
        .await
        .ok()
        .and_then(|p| {
            p.iter()
                .find(|(k, _)| *k == "id")
                .and_then(|(_, v)| v.parse::<u64>().ok())
        });
    let Some(id) = id else {
        return Ok(Target::Account(None));
    };
    let account = match from {
        AccountFrom::PathAccount => Some(id),
        AccountFrom::PathRule => {
            blocking(st, move |s| {
                Ok(s.store().rule_by_id(id)?.map(|r| r.account_id))
            })
            .await?
        }
        AccountFrom::PathCall => st
            .control
            .calls()
            .await?
            .into_iter()
            .find(|k| k.id == id)
            .map(|k| k.account_id),
    };
    Ok(Target::Account(account))
}
