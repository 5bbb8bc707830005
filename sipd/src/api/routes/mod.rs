//! Endpoints by resource; `router` puts them together.

pub mod accounts;
pub mod audit;
pub mod bans;
pub mod calls;
pub mod cdrs;
pub mod cluster;
pub mod connections;
pub mod crud;
pub mod events;
pub mod firewall;
pub mod refusals;
pub mod rules;
pub mod session;
pub mod staff;
pub mod status;
pub mod tariffs;

use axum::Router;
use axum::routing::{get, post, put};
use serde::Serialize;
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::{ApiState, Caller, State, blocking};
use crate::store::{Change, Connection, Id, Micros, Tariff, Tx, TxResult};

/// Every endpoint of the API by path and method (the fallbacks and layers are added by
/// [`crate::api`]).
pub fn router() -> Router<State> {
    Router::new()
        .route("/api/login", post(session::login))
        .route("/api/logout", post(session::logout))
        .route("/api/logout/all", post(session::logout_all))
        .route("/api/me", get(session::me))
        .route("/api/me/password", post(session::change_password))
        .route("/api/me/totp", post(session::begin_totp))
        .route("/api/me/totp/confirm", post(session::confirm_totp))
        .route("/api/accounts", get(accounts::list).post(accounts::create))
        .route(
            "/api/accounts/{id}",
            get(accounts::get_one)
                .put(accounts::update)
                .delete(accounts::delete),
        )
        .route("/api/accounts/{id}/topup", post(accounts::topup))
        .route(
            "/api/accounts/{id}/rules",
            get(rules::list).post(rules::create),
        )
        .route(
            "/api/rules/{id}",
            get(rules::get_one).put(rules::update).delete(rules::delete),
        )
        .route(
            "/api/tariffs",
            get(crud::list::<Tariff>).post(crud::create::<Tariff>),
        )
        .route(
            "/api/tariffs/{id}",
            get(crud::get_one::<Tariff>)
                .put(crud::update::<Tariff>)
                .delete(crud::delete::<Tariff>),
        )
        .route(
            "/api/connections",
            get(crud::list::<Connection>).post(crud::create::<Connection>),
        )
        .route(
            "/api/connections/{id}",
            get(crud::get_one::<Connection>)
                .put(crud::update::<Connection>)
                .delete(crud::delete::<Connection>),
        )
        .route("/api/firewall", get(firewall::show))
        .route(
            "/api/firewall/allow",
            post(firewall::allow_add).delete(firewall::allow_remove),
        )
        .route("/api/firewall/deny", post(firewall::deny_add))
        .route(
            "/api/firewall/deny/{id}",
            axum::routing::delete(firewall::deny_remove),
        )
        .route("/api/bans", get(bans::list).post(bans::add))
        .route("/api/bans/never", get(bans::never))
        .route("/api/bans/{addr}", axum::routing::delete(bans::remove))
        .route("/api/calls", get(calls::list))
        .route("/api/calls/{id}", axum::routing::delete(calls::hangup))
        .route("/api/calls/{id}/messages", get(calls::messages))
        .route("/api/cluster", get(cluster::view))
        .route("/api/cluster/calls", get(cluster::calls))
        .route(
            "/api/cluster/calls/{node}/{id}",
            axum::routing::delete(cluster::hangup),
        )
        .route("/api/events", get(events::stream))
        .route("/api/cdrs", get(cdrs::list))
        .route("/api/refusals", get(refusals::list))
        .route("/api/cdrs.csv", get(cdrs::csv))
        .route("/api/status", get(status::status))
        .route("/api/alerts", get(status::alerts))
        .route("/api/alerts/{id}/ack", post(status::ack_alert))
        .route("/metrics", get(status::metrics))
        .route("/api/staff", get(staff::list).post(staff::create))
        .route(
            "/api/staff/{id}",
            get(staff::get_one).put(staff::update).delete(staff::delete),
        )
        .route("/api/staff/{id}/revoke", post(staff::revoke))
        .route("/api/staff/{id}/password", post(staff::set_password))
        .route("/api/staff/{id}/totp/reset", post(staff::reset_totp))
        .route("/api/audit", get(audit::list))
        .route("/api/cert/reload", put(status::reload_cert))
}

/// What the call core learns after a change to provisioned records.
pub(crate) enum Then {
    /// Read the records again (accounts, rules, tariffs, connections).
    Reload,
    /// Add to an account's balance in the core (a top-up), without a reload.
    Credit(Id, Micros),
}

/// Performs one change to provisioned records: `prepare` reads and validates (on the
/// blocking pool); `write` makes the change in one store transaction, which also holds
/// exactly one audit entry by the caller with the before and after `write` describes (or
/// refuses with `Ok(Err(e))` before writing anything); then the call core is told.
pub(crate) async fn change<P, R>(
    st: &State,
    c: &Caller,
    then: Then,
    prepare: impl FnOnce(&ApiState) -> ApiResult<P> + Send + 'static,
    write: impl Fn(&Tx<'_>, &P) -> TxResult<Result<Change<R>, ApiError>> + Send + 'static,
) -> ApiResult<R>
where
    P: Send + 'static,
    R: Send + 'static,
{
    let actor = c.actor();
    let out = blocking(st, move |s| {
        let p = prepare(s)?;
        s.store().change(&actor, |tx| write(tx, &p))?
    })
    .await?;
    match then {
        Then::Reload => {
            st.control.reload().await?;
            if let Some(c) = &st.control.cluster {
                c.provisioning_changed();
            }
        }
        Then::Credit(id, delta) => st.control.credit(id, delta).await?,
    }
    Ok(out)
}

/// The record `id` in a transaction, or the transaction ends with "not found".
pub(crate) fn present<T>(kind: &'static str, id: Id, r: TxResult<Option<T>>) -> TxResult<T> {
    match r? {
        Some(t) => Ok(t),
        None => crate::store::abort_tx(crate::store::StoreError::NotFound {
            kind,
            what: format!("#{id}"),
        }),
    }
}

pub(crate) fn json<T: Serialize>(t: &T) -> Option<Value> {
    serde_json::to_value(t).ok()
}

/// `PUT` semantics: the body's fields replace the current record's, fields left out keep
/// their value, `null` clears an optional one. Read-only fields (`id`, and the listed
/// `fixed` ones) may be sent back unchanged but not changed.
pub fn merge(current: Value, patch: Value, fixed: &[&str]) -> ApiResult<Value> {
    let Value::Object(mut cur) = current else {
        return Err(ApiError::internal("record is not an object"));
    };
    let Value::Object(patch) = patch else {
        return Err(ApiError::invalid("body", "expected a JSON object"));
    };
    for (k, v) in patch {
        if k == "id" || fixed.contains(&k.as_str()) {
            if cur.get(&k) != Some(&v) {
                return Err(ApiError::invalid(
                    k.clone(),
                    format!("{k} cannot be changed here"),
                ));
            }
            continue;
        }
        cur.insert(k, v);
    }
    cur.remove("id");
    for f in fixed {
        cur.remove(*f);
    }
    Ok(Value::Object(cur))
}

/// The input of a `PUT`: `patch` merged into `current` (see [`merge`]) and read as the type
/// create accepts, so an update is validated exactly like a create.
pub(crate) fn patched<T: serde::de::DeserializeOwned>(
    current: Value,
    patch: Value,
    fixed: &[&str],
) -> ApiResult<T> {
    let merged = merge(current, patch, fixed)?;
    super::error::parse_json(&serde_json::to_vec(&merged).unwrap_or_default())
}

/// The id in a path, as a 404 when it is not a number (no such record).
pub(crate) fn path_id(s: &str) -> ApiResult<u64> {
    s.parse()
        .map_err(|_| ApiError::not_found(format!("{s:?} is not an id")))
}
