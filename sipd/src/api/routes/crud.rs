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
use crate::mgmt::Action;
use crate::store::{AuditKind, Change, Id, Store, StoreError, Tx, TxResult};

pub trait Resource: Clone + Send + Sync + Sized + 'static {
    /// `tariff`, `connection`: in messages and audit targets (`tariff:<name>`).
    const KIND: &'static str;
    /// What the API accepts: the whole record for create, the merged record for update.
    type In: DeserializeOwned + Send + 'static;
    /// What the API shows.
    type View: Serialize + Send + 'static;

    fn view(&self) -> Self::View;
    fn name(&self) -> &str;
    /// Validates input into a record with id `id` (0 for a new one).
    fn build(input: Self::In, id: Id) -> ApiResult<Self>;
    fn with_id(self, id: Id) -> Self;

    fn list(store: &Store) -> Vec<Result<Self, StoreError>>;
    fn load(store: &Store, id: Id) -> Result<Option<Self>, StoreError>;
    fn get(tx: &Tx<'_>, id: Id) -> TxResult<Option<Self>>;
    fn put(tx: &Tx<'_>, r: &Self) -> TxResult<Id>;
    fn remove(tx: &Tx<'_>, id: Id) -> TxResult<Self>;
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

pub async fn list<R: Resource>(
    c: Caller,
    Extract(st): Extract<State>,
) -> ApiResult<Json<Vec<R::View>>> {
    c.permit(Action::View)?;
    blocking(&st, |s| {
        Ok(Json(
            R::list(s.store()).iter().flatten().map(R::view).collect(),
        ))
    })
    .await
}

pub async fn get_one<R: Resource>(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<Json<R::View>> {
    c.permit(Action::View)?;
    let id = path_id(&id)?;
    blocking(&st, move |s| Ok(Json(load::<R>(s, id)?.view()))).await
}

pub async fn create<R: Resource>(
    c: Caller,
    Extract(st): Extract<State>,
    JsonBody(body): JsonBody<R::In>,
) -> ApiResult<(StatusCode, Json<R::View>)> {
    c.permit(Action::Provision)?;
    let v = change(
        &st,
        &c,
        Then::Reload,
        move |_| R::build(body, 0),
        |tx, r: &R| {
            let r = r.clone().with_id(R::put(tx, r)?);
            let c = Change::new(AuditKind::Create, target::<R>(r.name()), r.view());
            Ok(Ok(c.after(&r.view())))
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

pub async fn update<R: Resource>(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<Value>,
) -> ApiResult<Json<R::View>> {
    c.permit(Action::Provision)?;
    let id = path_id(&id)?;
    let v = change(
        &st,
        &c,
        Then::Reload,
        move |s| {
            let old = load::<R>(s, id)?;
            let input: R::In = patched(json(&old.view()).unwrap_or_default(), patch, &[])?;
            R::build(input, id)
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

pub async fn delete<R: Resource>(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    c.permit(Action::Provision)?;
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
