//! Auth rules of an account (R list/get, O create/update/delete).

use axum::Json;
use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use super::accounts::check_name;
use super::{json, patched, path_id};
use crate::api::error::{ApiError, ApiResult, JsonBody};
use crate::api::{ApiState, Caller, State, blocking};
use crate::mgmt::Action;
use crate::store::{Account, AuditKind, AuthRule, Id, Pattern, StoreError, abort_tx};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleIn {
    pub name: String,
    #[serde(default)]
    pub remote: Option<IpNet>,
    #[serde(default)]
    pub cli: Option<Pattern>,
    #[serde(default)]
    pub cld: Option<Pattern>,
    #[serde(default)]
    pub ip_only: bool,
}

fn build(i: RuleIn, account: &Account, id: Id) -> ApiResult<AuthRule> {
    check_name("name", &i.name)?;
    for (f, p) in [("cli", &i.cli), ("cld", &i.cld)] {
        if let Some(p) = p {
            p.compile()
                .map_err(|e| ApiError::invalid(f, e.to_string()))?;
        }
    }
    if i.ip_only {
        match i.remote {
            None => {
                return Err(ApiError::invalid(
                    "remote",
                    "ip_only needs a remote address or network",
                ));
            }
            Some(n) if n.prefix_len() == 0 => {
                return Err(ApiError::invalid(
                    "remote",
                    format!("ip_only with {n} would let the whole Internet in"),
                ));
            }
            _ => {}
        }
    } else if account.sip.is_none() {
        return Err(ApiError::invalid(
            "ip_only",
            format!(
                "account {:?} has no SIP credentials, so the rule needs ip_only = true",
                account.name
            ),
        ));
    }
    let r = AuthRule {
        id,
        account_id: account.id,
        name: i.name,
        remote: i.remote.map(|n| n.trunc()),
        cli: i.cli,
        cld: i.cld,
        ip_only: i.ip_only,
    };
    r.validate()?;
    Ok(r)
}

fn account(s: &ApiState, id: Id) -> ApiResult<Account> {
    s.store()
        .account(id)?
        .ok_or_else(|| ApiError::not_found(format!("account #{id} not found")))
}

fn rule(s: &ApiState, id: Id) -> ApiResult<AuthRule> {
    s.store()
        .rule_by_id(id)?
        .ok_or_else(|| ApiError::not_found(format!("rule #{id} not found")))
}

pub async fn list(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<AuthRule>>> {
    c.permit(Action::View)?;
    let id = path_id(&id)?;
    blocking(&st, move |s| {
        account(s, id)?;
        Ok(Json(s.store().rules_of(id).into_iter().flatten().collect()))
    })
    .await
}

pub async fn get_one(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<Json<AuthRule>> {
    c.permit(Action::View)?;
    let id = path_id(&id)?;
    blocking(&st, move |s| Ok(Json(rule(s, id)?))).await
}

pub async fn create(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RuleIn>,
) -> ApiResult<(StatusCode, Json<AuthRule>)> {
    c.permit(Action::Provision)?;
    let account_id = path_id(&id)?;
    let r = blocking(&st, move |s| {
        let acc = account(s, account_id)?;
        let r = build(body, &acc, 0)?;
        let r = s.store().write(|tx| {
            if tx.rule(account_id, &r.name)?.is_some() {
                return Ok(Err(ApiError::conflict(format!(
                    "account {:?} already has a rule {:?}",
                    acc.name, r.name
                ))));
            }
            let id = tx.put_rule(&r)?;
            let stored = AuthRule { id, ..r.clone() };
            tx.append_audit(&c.audit(
                AuditKind::Create,
                format!("rule:{}/{}", acc.name, r.name),
                None,
                None,
                json(&stored),
            ))?;
            Ok(Ok(stored))
        })??;
        Ok(r)
    })
    .await?;
    st.control.reload().await?;
    Ok((StatusCode::CREATED, Json(r)))
}

pub async fn update(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<Value>,
) -> ApiResult<Json<AuthRule>> {
    c.permit(Action::Provision)?;
    let id = path_id(&id)?;
    let r = blocking(&st, move |s| {
        let old = rule(s, id)?;
        let acc = account(s, old.account_id)?;
        let input: RuleIn = patched(json(&old).unwrap_or_default(), patch, &["account_id"])?;
        let new = build(input, &acc, id)?;
        let r = s.store().write(|tx| {
            let Some(before) = tx.rule(old.account_id, &old.name)? else {
                return abort_tx(StoreError::NotFound {
                    kind: "rule",
                    what: format!("#{id}"),
                });
            };
            if new.name != before.name {
                if tx.rule(acc.id, &new.name)?.is_some() {
                    return Ok(Err(ApiError::conflict(format!(
                        "account {:?} already has a rule {:?}",
                        acc.name, new.name
                    ))));
                }
                tx.delete_rule(acc.id, &before.name)?;
            }
            tx.put_rule(&new)?;
            tx.append_audit(&c.audit(
                AuditKind::Update,
                format!("rule:{}/{}", acc.name, before.name),
                None,
                json(&before),
                json(&new),
            ))?;
            Ok(Ok(new.clone()))
        })??;
        Ok(r)
    })
    .await?;
    st.control.reload().await?;
    Ok(Json(r))
}

pub async fn delete(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    c.permit(Action::Provision)?;
    let id = path_id(&id)?;
    blocking(&st, move |s| {
        let old = rule(s, id)?;
        let acc_name = s
            .store()
            .account(old.account_id)?
            .map_or_else(|| format!("#{}", old.account_id), |a| a.name);
        s.store().write(|tx| {
            let Some(before) = tx.delete_rule(old.account_id, &old.name)? else {
                return abort_tx(StoreError::NotFound {
                    kind: "rule",
                    what: format!("#{id}"),
                });
            };
            tx.append_audit(&c.audit(
                AuditKind::Delete,
                format!("rule:{acc_name}/{}", before.name),
                None,
                json(&before),
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
