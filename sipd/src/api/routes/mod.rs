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
pub mod templates;

use axum::Router;
use axum::routing::MethodRouter;
use serde::Serialize;
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::{ApiState, Caller, State, blocking};
use crate::mgmt::{AccountFrom, Action, Scope};
use crate::store::{Change, Connection, Id, Micros, Tariff, Tx, TxResult};

/// How an endpoint is reached: what [`crate::api::guard`] checks before its handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed (logging in).
    Public,
    /// `/metrics`: anyone when `[management] metrics_public`, otherwise `View` on the system.
    Metrics,
    /// A token whose user may do the action where the endpoint's data belongs.
    Needs(Action, Scope),
}

/// One endpoint of the route table.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// `GET`, `POST`, `PUT` or `DELETE`.
    pub method: &'static str,
    /// The path pattern as the router has it (`/api/accounts/{id}`).
    pub path: &'static str,
    /// Who may call it, and on which account's data.
    pub access: Access,
}

/// Builds [`router`] and [`ROUTES`] from one list, so an endpoint cannot exist without its
/// access stated (and [`crate::api::guard`] refuses any request whose route it cannot find).
macro_rules! route_table {
    ($( $path:literal { $( $method:ident $handler:expr => $access:expr; )+ } )+) => {
        /// Every endpoint of the API by path and method (the fallbacks and layers are added
        /// by [`crate::api`]).
        pub fn router() -> Router<State> {
            Router::new()
                $( .route($path, MethodRouter::new() $( .$method($handler) )+ ) )+
        }

        /// Every endpoint with its access: the same list [`router`] is built from.
        pub const ROUTES: &[Route] = &[
            $( $( Route { method: method_name(stringify!($method)), path: $path, access: $access }, )+ )+
        ];
    };
}

const fn method_name(m: &str) -> &'static str {
    match m.as_bytes() {
        b"get" => "GET",
        b"post" => "POST",
        b"put" => "PUT",
        b"delete" => "DELETE",
        _ => panic!("a method the route table does not know"),
    }
}

/// The access of the endpoint `method path` (`path` as the router matched it).
pub fn access(method: &str, path: &str) -> Option<Access> {
    // axum answers HEAD with the GET handler: same access (otherwise every HEAD is a 500).
    let method = if method.eq_ignore_ascii_case("HEAD") {
        "GET"
    } else {
        method
    };
    ROUTES
        .iter()
        .find(|r| r.path == path && r.method.eq_ignore_ascii_case(method))
        .map(|r| r.access)
}

use Access::{Metrics, Needs, Public};
use Action::{
    ManageStaff, Operate, OwnPassword, OwnSession, OwnTotp, Provision, System, View, ViewAudit,
    ViewStaff,
};
use Scope::{Account as Acct, Own, PerAccount, System as Sys};

/// Staff only: `a` on the whole system.
const fn sys(a: Action) -> Access {
    Needs(a, Sys)
}
/// The caller's own login.
const fn own(a: Action) -> Access {
    Needs(a, Own)
}
const BY_ACCOUNT: Scope = Acct(AccountFrom::PathAccount);
const BY_RULE: Scope = Acct(AccountFrom::PathRule);
const BY_CALL: Scope = Acct(AccountFrom::PathCall);

route_table! {
    "/api/login" { post session::login => Public; }
    "/api/logout" { post session::logout => own(OwnSession); }
    "/api/logout/all" { post session::logout_all => own(OwnSession); }
    "/api/me" { get session::me => own(OwnSession); }
    "/api/me/password" { post session::change_password => own(OwnPassword); }
    "/api/me/totp" { post session::begin_totp => own(OwnTotp); }
    "/api/me/totp/confirm" { post session::confirm_totp => own(OwnTotp); }
    // Re-hashes with the password given: the email seasons the hash.
    "/api/me/email" { put session::set_email => own(OwnPassword); }
    "/api/accounts" {
        get accounts::list => Needs(View, PerAccount);
        post accounts::create => sys(Provision);
    }
    "/api/accounts/{id}" {
        get accounts::get_one => Needs(View, BY_ACCOUNT);
        put accounts::update => Needs(Provision, BY_ACCOUNT);
        delete accounts::delete => Needs(Provision, BY_ACCOUNT);
    }
    "/api/accounts/{id}/topup" { post accounts::topup => Needs(Provision, BY_ACCOUNT); }
    "/api/accounts/{id}/topups" { get accounts::topups => Needs(View, BY_ACCOUNT); }
    "/api/accounts/{id}/login-template" {
        get templates::get_one => sys(ViewStaff);
        put templates::put => sys(ManageStaff);
        delete templates::delete => sys(ManageStaff);
    }
    "/api/accounts/{id}/rules" {
        get rules::list => Needs(View, BY_ACCOUNT);
        post rules::create => Needs(Provision, BY_ACCOUNT);
    }
    "/api/rules/{id}" {
        get rules::get_one => Needs(View, BY_RULE);
        put rules::update => Needs(Provision, BY_RULE);
        delete rules::delete => Needs(Provision, BY_RULE);
    }
    "/api/tariffs" {
        get crud::list::<Tariff> => sys(View);
        post crud::create::<Tariff> => sys(Provision);
    }
    "/api/tariffs/{id}" {
        get crud::get_one::<Tariff> => sys(View);
        put crud::update::<Tariff> => sys(Provision);
        delete crud::delete::<Tariff> => sys(Provision);
    }
    "/api/connections" {
        get crud::list::<Connection> => sys(View);
        post crud::create::<Connection> => sys(Provision);
    }
    "/api/connections/{id}" {
        get crud::get_one::<Connection> => sys(View);
        put crud::update::<Connection> => sys(Provision);
        delete crud::delete::<Connection> => sys(Provision);
    }
    "/api/firewall" { get firewall::show => sys(View); }
    "/api/firewall/allow" {
        post firewall::allow_add => sys(System);
        delete firewall::allow_remove => sys(System);
    }
    "/api/firewall/deny" { post firewall::deny_add => sys(System); }
    "/api/firewall/deny/{id}" { delete firewall::deny_remove => sys(System); }
    "/api/bans" {
        get bans::list => sys(View);
        post bans::add => sys(Operate);
    }
    "/api/bans/never" { get bans::never => sys(View); }
    "/api/bans/{addr}" { delete bans::remove => sys(Operate); }
    "/api/calls" { get calls::list => Needs(View, PerAccount); }
    "/api/calls/{id}" { delete calls::hangup => Needs(Operate, BY_CALL); }
    // The SIP messages show the vendor's side of the call (its addresses): staff only.
    "/api/calls/{id}/messages" { get calls::messages => sys(View); }
    // Customers get no live stream: it carries bans, alerts and counters of the whole
    // system, and polling `/api/calls` gives them their own calls.
    "/api/events" { get events::stream => sys(View); }
    // Every node's calls: staff only (a customer polls `/api/calls` on its node).
    "/api/cluster" { get cluster::view => sys(View); }
    "/api/cluster/calls" { get cluster::calls => sys(View); }
    "/api/cluster/calls/{node}/{id}" { delete cluster::hangup => sys(Operate); }
    "/api/cdrs" { get cdrs::list => Needs(View, PerAccount); }
    "/api/refusals" { get refusals::list => sys(View); }
    "/api/cdrs.csv" { get cdrs::csv => Needs(View, PerAccount); }
    "/api/status" { get status::status => sys(View); }
    "/api/alerts" { get status::alerts => sys(View); }
    "/api/alerts/{id}/ack" { post status::ack_alert => sys(Operate); }
    "/metrics" { get status::metrics => Metrics; }
    "/api/staff" {
        get staff::list => sys(ViewStaff);
        post staff::create => sys(ManageStaff);
    }
    "/api/staff/{id}" {
        get staff::get_one => sys(ViewStaff);
        put staff::update => sys(ManageStaff);
        delete staff::delete => sys(ManageStaff);
    }
    "/api/staff/{id}/revoke" { post staff::revoke => sys(ManageStaff); }
    "/api/staff/{id}/password" { post staff::set_password => sys(ManageStaff); }
    "/api/staff/{id}/totp/reset" { post staff::reset_totp => sys(ManageStaff); }
    "/api/audit" { get audit::list => sys(ViewAudit); }
    "/api/cert/reload" { put status::reload_cert => sys(System); }
}

/// What the call core learns after a change to provisioned records.
pub(crate) enum Then {
    /// Read the records again (accounts, rules, tariffs, connections).
    Reload,
    /// Add to an account's balance in the core (a top-up), without a reload.
    Credit(Id, Micros),
    /// Nothing the core holds changed (a login template).
    Nothing,
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
        Then::Credit(id, delta) => {
            if let Some(c) = &st.control.cluster {
                c.top_up(&st.control.store, id, delta).await;
            }
            st.control.credit(id, delta).await?
        }
        Then::Nothing => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each endpoint once in the table; an account-scoped one has the `{id}` the guard reads
    /// its account from; only logging in is public.
    #[test]
    fn the_route_table_states_each_endpoint_once() {
        let mut seen = std::collections::BTreeSet::new();
        for r in ROUTES {
            assert!(
                seen.insert((r.method, r.path)),
                "{} {} twice",
                r.method,
                r.path
            );
            match r.access {
                Access::Needs(_, Scope::Account(_)) => {
                    assert!(r.path.contains("{id}"), "{} {}", r.method, r.path)
                }
                Access::Public => assert_eq!(r.path, "/api/login"),
                _ => {}
            }
        }
        assert_eq!(
            access("get", "/api/accounts/{id}"),
            Some(Needs(View, BY_ACCOUNT))
        );
        assert_eq!(access("PATCH", "/api/accounts/{id}"), None);
    }
}
