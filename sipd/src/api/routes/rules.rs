//! Auth rules of an account (R list/get, O create/update/delete).

use axum::Json;
use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;
use serde_json::Value;

use super::{Then, change, json, patched, path_id, present};
use crate::api::error::{ApiError, ApiResult, JsonBody};
use crate::api::{ApiState, Caller, State, blocking};
use crate::store::{Account, AuditKind, AuthRule, Change, Id};
use sipd_core::records::RuleSpec;

fn target(account: &str, rule: &str) -> String {
    format!("rule:{account}/{rule}")
}

fn taken(account: &str, rule: &str) -> ApiError {
    ApiError::conflict(format!("account {account:?} already has a rule {rule:?}"))
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

/// `GET /api/accounts/{id}/rules` (View): the account's auth rules; 404 if no such account.
pub async fn list(
    _: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<AuthRule>>> {
    let id = path_id(&id)?;
    blocking(&st, move |s| {
        account(s, id)?;
        Ok(Json(s.store().rules_of(id).into_iter().flatten().collect()))
    })
    .await
}

/// `GET /api/rules/{id}` (View).
pub async fn get_one(
    _: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<Json<AuthRule>> {
    let id = path_id(&id)?;
    blocking(&st, move |s| Ok(Json(rule(s, id)?))).await
}

/// `POST /api/accounts/{id}/rules` (Provision): adds an auth rule to the account (names are unique
/// within it: 409), audited, then the core reloads; 201.
pub async fn create(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RuleSpec>,
) -> ApiResult<(StatusCode, Json<AuthRule>)> {
    let account_id = path_id(&id)?;
    let r = change(
        &st,
        &c,
        Then::Reload,
        move |s| {
            let acc = account(s, account_id)?;
            let r = body.build(0, (&acc).into())?;
            crate::config::check_rule(&s.cfg, &r)?;
            Ok((acc, r))
        },
        |tx, (acc, r): &(Account, AuthRule)| {
            if tx.rule(acc.id, &r.name)?.is_some() {
                return Ok(Err(taken(&acc.name, &r.name)));
            }
            let stored = AuthRule {
                id: tx.put_rule(r)?,
                ..r.clone()
            };
            let c = Change::new(
                AuditKind::Create,
                target(&acc.name, &r.name),
                stored.clone(),
            );
            Ok(Ok(c.after(&stored)))
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(r)))
}

/// `PUT /api/rules/{id}` (Provision): the body merged into the current rule (see [`super::merge`]),
/// validated like a create; the owning account cannot change; a rename keeps names unique.
pub async fn update(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<Value>,
) -> ApiResult<Json<AuthRule>> {
    let id = path_id(&id)?;
    let r = change(
        &st,
        &c,
        Then::Reload,
        move |s| {
            let old = rule(s, id)?;
            let acc = account(s, old.account_id)?;
            let input: RuleSpec = patched(json(&old).unwrap_or_default(), patch, &["account_id"])?;
            let new = input.build(id, (&acc).into())?;
            crate::config::check_rule(&s.cfg, &new)?;
            Ok((old, acc, new))
        },
        move |tx, (old, acc, new): &(AuthRule, Account, AuthRule)| {
            let before = present("rule", id, tx.rule(old.account_id, &old.name))?;
            if new.name != before.name {
                if tx.rule(acc.id, &new.name)?.is_some() {
                    return Ok(Err(taken(&acc.name, &new.name)));
                }
                tx.delete_rule(acc.id, &before.name)?;
            }
            tx.put_rule(new)?;
            let c = Change::new(
                AuditKind::Update,
                target(&acc.name, &before.name),
                new.clone(),
            );
            Ok(Ok(c.before(&before).after(new)))
        },
    )
    .await?;
    Ok(Json(r))
}

/// `DELETE /api/rules/{id}` (Provision): removes the rule, audited, then the core reloads; 204.
pub async fn delete(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = path_id(&id)?;
    change(
        &st,
        &c,
        Then::Reload,
        move |s| {
            let old = rule(s, id)?;
            let acc_name = s
                .store()
                .account(old.account_id)?
                .map_or_else(|| format!("#{}", old.account_id), |a| a.name);
            Ok((old, acc_name))
        },
        move |tx, (old, acc_name): &(AuthRule, String)| {
            let before = present("rule", id, tx.delete_rule(old.account_id, &old.name))?;
            let c = Change::new(AuditKind::Delete, target(acc_name, &before.name), ());
            Ok(Ok(c.before(&before)))
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
