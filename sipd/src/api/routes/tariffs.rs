//! Tariffs (R list/get, O create/update/delete).

use axum::Json;
use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::accounts::check_name;
use super::{json, merge, path_id};
use crate::api::error::{ApiError, ApiResult, JsonBody, parse_json};
use crate::api::{ApiState, Caller, State, blocking};
use crate::mgmt::Action;
use crate::store::{AuditKind, Id, Micros, StoreError, Tariff, abort_tx};

#[derive(Debug, Clone, Serialize)]
pub struct TariffView {
    pub id: Id,
    pub name: String,
    pub rate_per_minute: String,
    pub expected_call_secs: u32,
    pub initial_increment_secs: u32,
    pub increment_secs: u32,
}

pub fn view(t: &Tariff) -> TariffView {
    TariffView {
        id: t.id,
        name: t.name.clone(),
        rate_per_minute: t.rate_per_minute.to_string(),
        expected_call_secs: t.expected_call_secs,
        initial_increment_secs: t.initial_increment_secs,
        increment_secs: t.increment_secs,
    }
}

fn default_expected() -> u32 {
    120
}
fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffIn {
    pub name: String,
    pub rate_per_minute: String,
    #[serde(default = "default_expected")]
    pub expected_call_secs: u32,
    #[serde(default = "one")]
    pub initial_increment_secs: u32,
    #[serde(default = "one")]
    pub increment_secs: u32,
}

fn build(i: TariffIn, id: Id) -> ApiResult<Tariff> {
    check_name("name", &i.name)?;
    let rate: Micros = i
        .rate_per_minute
        .parse()
        .map_err(|e: crate::store::BadAmount| {
            ApiError::invalid("rate_per_minute", e.to_string())
        })?;
    if rate.0 < 0 {
        return Err(ApiError::invalid("rate_per_minute", "must not be negative"));
    }
    for (f, v) in [
        ("expected_call_secs", i.expected_call_secs),
        ("initial_increment_secs", i.initial_increment_secs),
        ("increment_secs", i.increment_secs),
    ] {
        if v == 0 {
            return Err(ApiError::invalid(f, "must be at least 1 second"));
        }
    }
    let t = Tariff {
        id,
        name: i.name,
        rate_per_minute: rate,
        expected_call_secs: i.expected_call_secs,
        initial_increment_secs: i.initial_increment_secs,
        increment_secs: i.increment_secs,
    };
    t.validate()?;
    Ok(t)
}

fn load(s: &ApiState, id: Id) -> ApiResult<Tariff> {
    s.store()
        .tariff(id)?
        .ok_or_else(|| ApiError::not_found(format!("tariff #{id} not found")))
}

pub async fn list(c: Caller, Extract(st): Extract<State>) -> ApiResult<Json<Vec<TariffView>>> {
    c.permit(Action::View)?;
    blocking(&st, |s| {
        Ok(Json(
            s.store().tariffs().iter().flatten().map(view).collect(),
        ))
    })
    .await
}

pub async fn get_one(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<Json<TariffView>> {
    c.permit(Action::View)?;
    let id = path_id(&id)?;
    blocking(&st, move |s| Ok(Json(view(&load(s, id)?)))).await
}

pub async fn create(
    c: Caller,
    Extract(st): Extract<State>,
    JsonBody(body): JsonBody<TariffIn>,
) -> ApiResult<(StatusCode, Json<TariffView>)> {
    c.permit(Action::Provision)?;
    let v = blocking(&st, move |s| {
        let t = build(body, 0)?;
        Ok(s.store().write(|tx| {
            let id = tx.put_tariff(&t)?;
            let v = view(&Tariff { id, ..t.clone() });
            tx.append_audit(&c.audit(
                AuditKind::Create,
                format!("tariff:{}", v.name),
                None,
                None,
                json(&v),
            ))?;
            Ok(v)
        })?)
    })
    .await?;
    st.control.reload().await?;
    Ok((StatusCode::CREATED, Json(v)))
}

pub async fn update(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<Value>,
) -> ApiResult<Json<TariffView>> {
    c.permit(Action::Provision)?;
    let id = path_id(&id)?;
    let v = blocking(&st, move |s| {
        let old = load(s, id)?;
        let merged = merge(json(&view(&old)).unwrap_or_default(), patch, &[])?;
        let input: TariffIn = parse_json(&serde_json::to_vec(&merged).unwrap_or_default())?;
        let t = build(input, id)?;
        Ok(s.store().write(|tx| {
            let Some(before) = tx.tariff(id)? else {
                return abort_tx(StoreError::NotFound {
                    kind: "tariff",
                    what: format!("#{id}"),
                });
            };
            tx.put_tariff(&t)?;
            let after = view(&t);
            tx.append_audit(&c.audit(
                AuditKind::Update,
                format!("tariff:{}", before.name),
                None,
                json(&view(&before)),
                json(&after),
            ))?;
            Ok(after)
        })?)
    })
    .await?;
    st.control.reload().await?;
    Ok(Json(v))
}

pub async fn delete(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    c.permit(Action::Provision)?;
    let id = path_id(&id)?;
    blocking(&st, move |s| {
        let t = load(s, id)?;
        let users: Vec<String> = s
            .store()
            .accounts()
            .into_iter()
            .flatten()
            .filter(|a| a.tariff_id == Some(id))
            .map(|a| a.name)
            .collect();
        if !users.is_empty() {
            return Err(ApiError::conflict(format!(
                "tariff {:?} is used by account(s) {}",
                t.name,
                users.join(", ")
            )));
        }
        s.store().write(|tx| {
            let old = tx.delete_tariff(id)?;
            tx.append_audit(&c.audit(
                AuditKind::Delete,
                format!("tariff:{}", old.name),
                None,
                json(&view(&old)),
                None,
            ))?;
            Ok(())
        })?;
        Ok(())
    })
    .await?;
    st.control.reload().await?;
    Ok(StatusCode::NO_CONTENT)
}
