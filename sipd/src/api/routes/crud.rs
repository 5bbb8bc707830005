//! List, get, create, update (merge) and delete for a store record that stands alone (no
//! parent in the path): one implementation of the role checks, with every change made through
//! `change` (transaction, one audit entry, core reload) and each resource
//! saying only how it is stored, shown and validated.

use axum::Json;
use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Then, change, json, patched, path_id, present};
use crate::api::error::{ApiError, ApiResult, JsonBody};
use crate::api::{ApiState, Caller, State, blocking};
use crate::store::{AuditKind, Change, Id, Store, StoreError, Tx, TxResult};

/// A store record served by the generic handlers of this module (tariffs, connections): how it is
/// named, shown, validated and kept, so each resource writes no handler of its own.
pub trait Resource: Clone + Send + Sync + Sized + 'static {
    /// `tariff`, `connection`: in messages and audit targets (`tariff:<name>`).
    const KIND: &'static str;
    /// What the API accepts: the whole record for create, the merged record for update.
    type In: DeserializeOwned + Send + 'static;
    /// What the API shows.
    type View: Serialize + Send + 'static;

    /// The record as the API shows it.
    fn view(&self) -> Self::View;
    /// The record's unique name, for audit targets (`<KIND>:<name>`).
    fn name(&self) -> &str;
    /// Validates input into a record with id `id` (0 for a new one).
    fn build(input: Self::In, id: Id) -> ApiResult<Self>;
    /// The record with the id the store gave it on insert.
    fn with_id(self, id: Id) -> Self;

    /// Every stored record, each read on its own (one unreadable does not hide the rest).
    fn list(store: &Store) -> Vec<Result<Self, StoreError>>;
    /// The record `id` outside a transaction; `None` if there is none.
    fn load(store: &Store, id: Id) -> Result<Option<Self>, StoreError>;
    /// The record `id` inside a change's transaction.
    fn get(tx: &Tx<'_>, id: Id) -> TxResult<Option<Self>>;
    /// Inserts (id 0: the store assigns one) or replaces the record; returns its id.
    fn put(tx: &Tx<'_>, r: &Self) -> TxResult<Id>;
    /// Deletes the record `id` and returns it; aborts the transaction if there is none.
    fn remove(tx: &Tx<'_>, id: Id) -> TxResult<Self>;
    /// Refuses a record this sipd's configuration cannot serve (400), so it is refused when
    /// saved rather than failing at call time.
    fn check_config(_cfg: &crate::config::Config, _r: &Self) -> ApiResult<()> {
        Ok(())
    }
    /// Refuses a delete that would leave others pointing at nothing (409).
    fn check_delete(_store: &Store, _r: &Self) -> ApiResult<()> {
        Ok(())
    }
}

fn load<R: Resource>(s: &ApiState, id: Id) -> ApiResult<R> {
    R::load(s.store(), id)?
        .ok_or_else(|| ApiError::not_found(format!("{} #{id} not found", R::KIND)))
}

fn target<R: Resource>(name: &str) -> String {
    format!("{}:{name}", R::KIND)
}

/// `GET /api/<resources>` (View): every readable record (unreadable ones are left out).
pub async fn list<R: Resource>(
    _: Caller,
    Extract(st): Extract<State>,
) -> ApiResult<Json<Vec<R::View>>> {
    blocking(&st, |s| {
        Ok(Json(
            R::list(s.store()).iter().flatten().map(R::view).collect(),
        ))
    })
    .await
}

/// `GET /api/<resources>/{id}` (View).
pub async fn get_one<R: Resource>(
    _: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<Json<R::View>> {
    let id = path_id(&id)?;
    blocking(&st, move |s| Ok(Json(load::<R>(s, id)?.view()))).await
}

/// `POST /api/<resources>` (Provision): validates with [`Resource::build`], stores with one audit
/// entry, reloads the core; 201 with the view.
pub async fn create<R: Resource>(
    c: Caller,
    Extract(st): Extract<State>,
    JsonBody(body): JsonBody<R::In>,
) -> ApiResult<(StatusCode, Json<R::View>)> {
    let v = change(
        &st,
        &c,
        Then::Reload,
        move |s| {
            let r = R::build(body, 0)?;
            R::check_config(&s.cfg, &r)?;
            Ok(r)
        },
        |tx, r: &R| {
            let r = r.clone().with_id(R::put(tx, r)?);
            let c = Change::new(AuditKind::Create, target::<R>(r.name()), r.view());
            Ok(Ok(c.after(&r.view())))
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// `PUT /api/<resources>/{id}` (Provision): the body merged into the current view (see
/// [`super::merge`]), validated like a create.
pub async fn update<R: Resource>(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<Value>,
) -> ApiResult<Json<R::View>> {
    let id = path_id(&id)?;
    let v = change(
        &st,
        &c,
        Then::Reload,
        move |s| {
            let old = load::<R>(s, id)?;
            let input: R::In = patched(json(&old.view()).unwrap_or_default(), patch, &[])?;
            let r = R::build(input, id)?;
            R::check_config(&s.cfg, &r)?;
            Ok(r)
        },
        move |tx, r: &R| {
            let before = present(R::KIND, id, R::get(tx, id))?;
            R::put(tx, r)?;
            let c = Change::new(AuditKind::Update, target::<R>(before.name()), r.view());
            Ok(Ok(c.before(&before.view()).after(&r.view())))
        },
    )
    .await?;
    Ok(Json(v))
}

/// `DELETE /api/<resources>/{id}` (Provision): after [`Resource::check_delete`]; 204.
pub async fn delete<R: Resource>(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = path_id(&id)?;
    change(
        &st,
        &c,
        Then::Reload,
        move |s| R::check_delete(s.store(), &load::<R>(s, id)?),
        move |tx, ()| {
            let old = R::remove(tx, id)?;
            let c = Change::new(AuditKind::Delete, target::<R>(old.name()), ());
            Ok(Ok(c.before(&old.view())))
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
