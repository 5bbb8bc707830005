//! Accounts (R list/get, O create/update/delete/top-up).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{json, patched, path_id};
use crate::api::error::{ApiError, ApiResult, JsonBody};
use crate::api::{Caller, State, blocking};
use crate::mgmt::Action;
use crate::store::{Account, AuditKind, Id, Micros, SipAuth, Store, Tx, TxResult, abort_tx};
use sipd_core::auth::digest::Credential;

#[derive(Debug, Clone, Serialize)]
pub struct SipView {
    pub username: String,
    /// `password` or `ha1`; the secret itself is never shown.
    pub auth: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct AccountView {
    pub id: Id,
    pub name: String,
    pub enabled: bool,
    pub tariff: Option<String>,
    pub balance: String,
    pub cps_limit: Option<u32>,
    pub max_sessions: Option<u32>,
    pub max_call_secs: Option<u32>,
    pub sip: Option<SipView>,
}

pub fn view(a: &Account, tariffs: &BTreeMap<Id, String>) -> AccountView {
    AccountView {
        id: a.id,
        name: a.name.clone(),
        enabled: a.enabled,
        tariff: a.tariff_id.and_then(|t| tariffs.get(&t).cloned()),
        balance: a.balance.to_string(),
        cps_limit: a.cps_limit,
        max_sessions: a.max_sessions,
        max_call_secs: a.max_call_secs,
        sip: a.sip.as_ref().map(|s| SipView {
            username: s.username.clone(),
            auth: match s.credential {
                Credential::Password { .. } => "password",
                Credential::Ha1 { .. } => "ha1",
            },
        }),
    }
}

fn tariff_names(store: &Store) -> BTreeMap<Id, String> {
    store
        .tariffs()
        .into_iter()
        .flatten()
        .map(|t| (t.id, t.name))
        .collect()
}

fn view_in_tx(tx: &Tx<'_>, a: &Account) -> TxResult<AccountView> {
    let mut names = BTreeMap::new();
    if let Some(t) = a.tariff_id
        && let Some(t) = tx.tariff(t)?
    {
        names.insert(t.id, t.name);
    }
    Ok(view(a, &names))
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipIn {
    pub username: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub ha1_md5: Option<String>,
    #[serde(default)]
    pub ha1_sha256: Option<String>,
    /// Realm the HA1 values were computed for (default: `[auth] realm`).
    #[serde(default)]
    pub realm: Option<String>,
    /// What GET shows; ignored on input.
    #[serde(default)]
    pub auth: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountIn {
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub tariff: Option<String>,
    /// Opening balance; create only (top-ups change it afterwards).
    #[serde(default)]
    pub balance: Option<String>,
    #[serde(default)]
    pub cps_limit: Option<u32>,
    #[serde(default)]
    pub max_sessions: Option<u32>,
    #[serde(default)]
    pub max_call_secs: Option<u32>,
    #[serde(default)]
    pub sip: Option<SipIn>,
}

pub(crate) fn check_name(field: &str, name: &str) -> ApiResult<()> {
    if name.trim().is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            "must be 1-64 characters without control characters",
        ));
    }
    Ok(())
}

pub(crate) fn check_nonzero(field: &str, v: Option<u32>) -> ApiResult<()> {
    if v == Some(0) {
        return Err(ApiError::invalid(
            field,
            format!(
                "{field} 0 would refuse everything: leave it out (unlimited) or disable instead"
            ),
        ));
    }
    Ok(())
}

/// Checks the input field by field and builds the account (tariff by name, resolved in the
/// transaction). `old` supplies the credential when `sip` names the same user without a
/// new secret.
fn build(
    st: &crate::api::ApiState,
    i: AccountIn,
    old: Option<&Account>,
) -> ApiResult<(Account, Option<String>)> {
    check_name("name", &i.name)?;
    check_nonzero("cps_limit", i.cps_limit)?;
    check_nonzero("max_sessions", i.max_sessions)?;
    check_nonzero("max_call_secs", i.max_call_secs)?;
    let balance = match (&i.balance, old) {
        (Some(b), None) => b
            .parse::<Micros>()
            .map_err(|e| ApiError::invalid("balance", e.to_string()))?,
        (None, None) => Micros(0),
        (_, Some(o)) => o.balance,
    };
    let sip = match i.sip {
        None => None,
        Some(s) => {
            let u = &s.username;
            if u.is_empty()
                || u.len() > 128
                || u.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(ApiError::invalid(
                    "sip.username",
                    "must be 1-128 printable characters without spaces",
                ));
            }
            let has_ha1 = s.ha1_md5.is_some() || s.ha1_sha256.is_some();
            let credential = match (s.password, has_ha1) {
                (Some(_), true) => {
                    return Err(ApiError::invalid(
                        "sip.password",
                        "give either password or HA1 values, not both",
                    ));
                }
                (Some(p), false) => {
                    if s.realm.is_some() {
                        return Err(ApiError::invalid(
                            "sip.realm",
                            "realm only goes with ha1_md5/ha1_sha256",
                        ));
                    }
                    if p.is_empty() {
                        return Err(ApiError::invalid("sip.password", "must not be empty"));
                    }
                    Credential::Password { password: p }
                }
                (None, true) => {
                    for (f, v) in [
                        ("sip.ha1_md5", &s.ha1_md5),
                        ("sip.ha1_sha256", &s.ha1_sha256),
                    ] {
                        let want = if f.ends_with("md5") { 32 } else { 64 };
                        if let Some(v) = v
                            && (v.len() != want || !v.bytes().all(|b| b.is_ascii_hexdigit()))
                        {
                            return Err(ApiError::invalid(f, format!("must be {want} hex digits")));
                        }
                    }
                    Credential::Ha1 {
                        realm: s.realm.unwrap_or_else(|| st.cfg.auth.realm.clone()),
                        md5: s.ha1_md5.map(|h| h.to_ascii_lowercase()),
                        sha256: s.ha1_sha256.map(|h| h.to_ascii_lowercase()),
                    }
                }
                (None, false) => match old.and_then(|o| o.sip.as_ref()) {
                    Some(cur) if &cur.username == u => cur.credential.clone(),
                    _ => {
                        return Err(ApiError::invalid(
                            "sip.password",
                            "needs password, or ha1_md5 and/or ha1_sha256",
                        ));
                    }
                },
            };
            credential
                .validate()
                .map_err(|e| ApiError::invalid("sip", e.to_string()))?;
            Some(SipAuth {
                username: s.username,
                credential,
            })
        }
    };
    let a = Account {
        id: old.map_or(0, |o| o.id),
        name: i.name,
        enabled: i.enabled,
        sip,
        cps_limit: i.cps_limit,
        max_sessions: i.max_sessions,
        balance,
        tariff_id: old.and_then(|o| o.tariff_id),
        max_call_secs: i.max_call_secs,
    };
    a.validate().map_err(ApiError::from)?;
    Ok((a, i.tariff))
}

/// The tariff id for a name, or the 400 to answer.
fn resolve_tariff(tx: &Tx<'_>, name: &Option<String>) -> TxResult<Result<Option<Id>, ApiError>> {
    match name {
        None => Ok(Ok(None)),
        Some(n) => Ok(match tx.tariff_by_name(n)? {
            Some(t) => Ok(Some(t.id)),
            None => Err(ApiError::invalid(
                "tariff",
                format!("no tariff named {n:?}"),
            )),
        }),
    }
}

fn load(st: &crate::api::ApiState, id: Id) -> ApiResult<Account> {
    st.store()
        .account(id)?
        .ok_or_else(|| ApiError::not_found(format!("account #{id} not found")))
}

pub async fn list(c: Caller, Extract(st): Extract<State>) -> ApiResult<Json<Vec<AccountView>>> {
    c.permit(Action::View)?;
    blocking(&st, |s| {
        let names = tariff_names(s.store());
        let mut out = Vec::new();
        for a in s.store().accounts() {
            match a {
                Ok(a) => out.push(view(&a, &names)),
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable account"),
            }
        }
        Ok(Json(out))
    })
    .await
}

pub async fn get_one(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<Json<AccountView>> {
    c.permit(Action::View)?;
    let id = path_id(&id)?;
    blocking(&st, move |s| {
        let a = load(s, id)?;
        Ok(Json(view(&a, &tariff_names(s.store()))))
    })
    .await
}

pub async fn create(
    c: Caller,
    Extract(st): Extract<State>,
    JsonBody(body): JsonBody<AccountIn>,
) -> ApiResult<(StatusCode, Json<AccountView>)> {
    c.permit(Action::Provision)?;
    let v = blocking(&st, move |s| {
        let (a, tariff) = build(s, body, None)?;
        let v = s.store().write(|tx| {
            let tariff_id = match resolve_tariff(tx, &tariff)? {
                Ok(t) => t,
                Err(e) => return Ok(Err(e)),
            };
            let a = Account {
                tariff_id,
                ..a.clone()
            };
            let id = tx.put_account(&a)?;
            let v = view_in_tx(tx, &Account { id, ..a })?;
            tx.append_audit(&c.audit(
                AuditKind::Create,
                format!("account:{}", v.name),
                None,
                None,
                json(&v),
            ))?;
            Ok(Ok(v))
        })??;
        Ok(v)
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
) -> ApiResult<Json<AccountView>> {
    c.permit(Action::Provision)?;
    let id = path_id(&id)?;
    let v = blocking(&st, move |s| {
        let old = load(s, id)?;
        let cur = view(&old, &tariff_names(s.store()));
        let mut cur_json = json(&cur).unwrap_or_default();
        if let Some(sip) = cur_json.get_mut("sip").and_then(Value::as_object_mut) {
            sip.remove("auth");
        }
        let input: AccountIn = patched(cur_json, patch, &["balance"])?;
        let (a, tariff) = build(s, input, Some(&old))?;
        let v = s.store().write(|tx| {
            let tariff_id = match resolve_tariff(tx, &tariff)? {
                Ok(t) => t,
                Err(e) => return Ok(Err(e)),
            };
            let Some(now) = tx.account(id)? else {
                return abort_tx(crate::store::StoreError::NotFound {
                    kind: "account",
                    what: format!("#{id}"),
                });
            };
            let before = view_in_tx(tx, &now)?;
            // The balance as it is now: calls may have been debited since it was read.
            let a = Account {
                tariff_id,
                balance: now.balance,
                ..a.clone()
            };
            tx.put_account(&a)?;
            let after = view_in_tx(tx, &a)?;
            tx.append_audit(&c.audit(
                AuditKind::Update,
                format!("account:{}", before.name),
                None,
                json(&before),
                json(&after),
            ))?;
            Ok(Ok(after))
        })??;
        Ok(v)
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
        let rules: Vec<String> = s
            .store()
            .rules_of(id)
            .into_iter()
            .flatten()
            .map(|r| r.name)
            .collect();
        s.store().write(|tx| {
            let old = tx.delete_account(id, &rules)?;
            let before = view_in_tx(tx, &old)?;
            tx.append_audit(&c.audit(
                AuditKind::Delete,
                format!("account:{}", old.name),
                (!rules.is_empty()).then(|| format!("with its rules: {}", rules.join(", "))),
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopupIn {
    pub amount: String,
    #[serde(default)]
    pub note: Option<String>,
}

pub async fn topup(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<TopupIn>,
) -> ApiResult<Json<AccountView>> {
    c.permit(Action::Provision)?;
    let id = path_id(&id)?;
    let delta: Micros = body
        .amount
        .parse()
        .map_err(|e: crate::store::BadAmount| ApiError::invalid("amount", e.to_string()))?;
    if delta.0 == 0 {
        return Err(ApiError::invalid("amount", "must not be zero"));
    }
    if let Some(n) = &body.note
        && (n.len() > 200 || n.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(
            "note",
            "at most 200 characters without control characters",
        ));
    }
    let v = blocking(&st, move |s| {
        load(s, id)?;
        let v = s.store().write(|tx| {
            let Some(a) = tx.account(id)? else {
                return abort_tx(crate::store::StoreError::NotFound {
                    kind: "account",
                    what: format!("#{id}"),
                });
            };
            let Some(b) = a.balance.0.checked_add(delta.0) else {
                return Ok(Err(ApiError::invalid("amount", "balance would overflow")));
            };
            let before = view_in_tx(tx, &a)?;
            let after_acc = Account {
                balance: Micros(b),
                ..a.clone()
            };
            tx.put_account(&after_acc)?;
            let after = view_in_tx(tx, &after_acc)?;
            let reason = match &body.note {
                Some(n) => format!("top-up {delta}: {n}"),
                None => format!("top-up {delta}"),
            };
            tx.append_audit(&c.audit(
                AuditKind::Update,
                format!("account:{}", a.name),
                Some(reason),
                json(&before),
                json(&after),
            ))?;
            Ok(Ok(after))
        })??;
        Ok(v)
    })
    .await?;
    st.control.credit(id, delta).await?;
    Ok(Json(v))
}
