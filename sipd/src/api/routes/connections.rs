//! Upstream connections (R list/get, O create/update/delete).

use axum::Json;
use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::accounts::{check_name, check_nonzero};
use super::{json, merge, path_id};
use crate::api::error::{ApiError, ApiResult, JsonBody, parse_json};
use crate::api::{ApiState, Caller, State, blocking};
use crate::mgmt::Action;
use crate::provision::{destination, parse_destination};
use crate::store::{AuditKind, Connection, Id, StoreError, Transport, abort_tx};

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionView {
    pub id: Id,
    pub name: String,
    pub enabled: bool,
    pub destination: String,
    pub transport: Transport,
    pub cld_prefixes: Vec<String>,
    pub max_channels: Option<u32>,
    pub cps_limit: Option<u32>,
    pub priority: u32,
}

pub fn view(c: &Connection) -> ConnectionView {
    ConnectionView {
        id: c.id,
        name: c.name.clone(),
        enabled: c.enabled,
        destination: destination(c),
        transport: c.transport,
        cld_prefixes: c.cld_prefixes.clone(),
        max_channels: c.max_channels,
        cps_limit: c.cps_limit,
        priority: c.priority,
    }
}

fn yes() -> bool {
    true
}
fn udp() -> Transport {
    Transport::Udp
}
fn default_priority() -> u32 {
    100
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionIn {
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub destination: String,
    #[serde(default = "udp")]
    pub transport: Transport,
    #[serde(default)]
    pub cld_prefixes: Vec<String>,
    #[serde(default)]
    pub max_channels: Option<u32>,
    #[serde(default)]
    pub cps_limit: Option<u32>,
    #[serde(default = "default_priority")]
    pub priority: u32,
}

fn build(i: ConnectionIn, id: Id) -> ApiResult<Connection> {
    check_name("name", &i.name)?;
    let (host, port) =
        parse_destination(&i.destination).map_err(|e| ApiError::invalid("destination", e))?;
    if port == 0 {
        return Err(ApiError::invalid("destination", "port 0"));
    }
    for (n, p) in i.cld_prefixes.iter().enumerate() {
        if p.is_empty()
            || p.len() > 32
            || !p.chars().all(|c| c.is_ascii_digit() || "+*#".contains(c))
        {
            return Err(ApiError::invalid(
                format!("cld_prefixes[{n}]"),
                format!("{p:?} must be 1-32 of 0-9 + * #"),
            ));
        }
    }
    check_nonzero("max_channels", i.max_channels)?;
    check_nonzero("cps_limit", i.cps_limit)?;
    let c = Connection {
        id,
        name: i.name,
        enabled: i.enabled,
        host,
        port,
        transport: i.transport,
        cld_prefixes: i.cld_prefixes,
        max_channels: i.max_channels,
        cps_limit: i.cps_limit,
        priority: i.priority,
    };
    c.validate().map_err(|e| match e {
        StoreError::Invalid { reason, .. } => ApiError::invalid("destination", reason),
        e => e.into(),
    })?;
    Ok(c)
}

fn load(s: &ApiState, id: Id) -> ApiResult<Connection> {
    s.store()
        .connection(id)?
        .ok_or_else(|| ApiError::not_found(format!("connection #{id} not found")))
}

pub async fn list(c: Caller, Extract(st): Extract<State>) -> ApiResult<Json<Vec<ConnectionView>>> {
    c.permit(Action::View)?;
    blocking(&st, |s| {
        Ok(Json(
            s.store().connections().iter().flatten().map(view).collect(),
        ))
    })
    .await
}

pub async fn get_one(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<Json<ConnectionView>> {
    c.permit(Action::View)?;
    let id = path_id(&id)?;
    blocking(&st, move |s| Ok(Json(view(&load(s, id)?)))).await
}

pub async fn create(
    c: Caller,
    Extract(st): Extract<State>,
    JsonBody(body): JsonBody<ConnectionIn>,
) -> ApiResult<(StatusCode, Json<ConnectionView>)> {
    c.permit(Action::Provision)?;
    let v = blocking(&st, move |s| {
        let conn = build(body, 0)?;
        Ok(s.store().write(|tx| {
            let id = tx.put_connection(&conn)?;
            let v = view(&Connection { id, ..conn.clone() });
            tx.append_audit(&c.audit(
                AuditKind::Create,
                format!("connection:{}", v.name),
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
) -> ApiResult<Json<ConnectionView>> {
    c.permit(Action::Provision)?;
    let id = path_id(&id)?;
    let v = blocking(&st, move |s| {
        let old = load(s, id)?;
        let merged = merge(json(&view(&old)).unwrap_or_default(), patch, &[])?;
        let input: ConnectionIn = parse_json(&serde_json::to_vec(&merged).unwrap_or_default())?;
        let conn = build(input, id)?;
        Ok(s.store().write(|tx| {
            let Some(before) = tx.connection(id)? else {
                return abort_tx(StoreError::NotFound {
                    kind: "connection",
                    what: format!("#{id}"),
                });
            };
            tx.put_connection(&conn)?;
            let after = view(&conn);
            tx.append_audit(&c.audit(
                AuditKind::Update,
                format!("connection:{}", before.name),
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
        load(s, id)?;
        s.store().write(|tx| {
            let old = tx.delete_connection(id)?;
            tx.append_audit(&c.audit(
                AuditKind::Delete,
                format!("connection:{}", old.name),
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
