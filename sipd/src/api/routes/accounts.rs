//! Accounts (R list/get, O create/update/delete/top-up).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Then, change, json, patched, path_id, present};
use crate::api::error::{ApiError, ApiResult, JsonBody};
use crate::api::{ApiState, Caller, State, blocking};
use crate::store::{Account, AuditKind, Change, Id, Micros, Store, Tx, TxResult};
use sipd_core::auth::digest::{Algorithm, Credential};
use sipd_core::records::AccountSpec;

/// An account's SIP identity as the API shows it: the username and how it authenticates, never the
/// secret.
#[derive(Debug, Clone, Serialize)]
pub struct SipView {
    /// The digest username (unique across accounts).
    pub username: String,
    /// `password` or `ha1`; the secret itself is never shown.
    pub auth: &'static str,
    /// The account's own digest algorithms, when it has them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<Algorithm>>,
    /// The password policy template new passwords of this account meet, when not the
    /// default (kept through an update that does not name it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_template: Option<String>,
}

/// An account as the API shows and accepts it back in a `PUT`: the tariff by name and the balance
/// as a decimal string.
#[derive(Debug, Clone, Serialize)]
pub struct AccountView {
    /// The store's id, fixed at creation.
    pub id: Id,
    /// The account's unique name (audit entries name it `account:<name>`).
    pub name: String,
    /// A disabled account's calls are refused at admission; its records are kept.
    pub enabled: bool,
    /// The tariff's name; `None`: calls are free.
    pub tariff: Option<String>,
    /// Credit left, decimal (`12.50`); read-only in a `PUT`: changed only by a top-up or by calls.
    pub balance: String,
    /// New calls per second; `None` is unlimited.
    pub cps_limit: Option<u32>,
    /// Calls in progress at once; `None` is unlimited.
    pub max_sessions: Option<u32>,
    /// Hard cap on any one call, in seconds; `None`: only the balance caps it.
    pub max_call_secs: Option<u32>,
    /// Digest credentials; `None` for an account authenticated by IP alone (a carrier).
    pub sip: Option<SipView>,
}

/// The account as the API shows it, its tariff named from `tariffs` (id → name).
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
            algorithms: s.algorithms.clone(),
            password_template: s.password_template.clone(),
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

/// The account `spec` builds (replacing `current` on an update); rules are not taken here.
fn build(s: &ApiState, spec: &AccountSpec, current: Option<&Account>) -> ApiResult<Account> {
    if !spec.rules.is_empty() {
        return Err(ApiError::invalid(
            "rule",
            "rules are added through /api/accounts/{id}/rules",
        ));
    }
    Ok(spec.build(&s.cfg.sip_secrets(), current, s.store())?)
}

fn target(name: &str) -> String {
    format!("account:{name}")
}

fn load(st: &crate::api::ApiState, id: Id) -> ApiResult<Account> {
    st.store()
        .account(id)?
        .ok_or_else(|| ApiError::not_found(format!("account #{id} not found")))
}

/// `GET /api/accounts` (View; a customer sees its own only): every readable account; an unreadable one is logged and skipped.
pub async fn list(c: Caller, Extract(st): Extract<State>) -> ApiResult<Json<Vec<AccountView>>> {
    let visible = c.visible;
    blocking(&st, move |s| {
        let names = tariff_names(s.store());
        let mut out = Vec::new();
        for a in s.store().accounts() {
            match a {
                Ok(a) if visible.shows(Some(a.id)) => out.push(view(&a, &names)),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable account"),
            }
        }
        Ok(Json(out))
    })
    .await
}

/// `GET /api/accounts/{id}` (View).
pub async fn get_one(
    _: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<Json<AccountView>> {
    let id = path_id(&id)?;
    blocking(&st, move |s| {
        let a = load(s, id)?;
        Ok(Json(view(&a, &tariff_names(s.store()))))
    })
    .await
}

/// `POST /api/accounts` (Provision): validates the spec like the store does, stores it with one
/// audit entry, reloads the core; 201 with the view. Rules go through `/api/accounts/{id}/rules`.
pub async fn create(
    c: Caller,
    Extract(st): Extract<State>,
    JsonBody(body): JsonBody<AccountSpec>,
) -> ApiResult<(StatusCode, Json<AccountView>)> {
    let v = change(
        &st,
        &c,
        Then::Reload,
        move |s| build(s, &body, None),
        |tx, a: &Account| {
            let id = tx.put_account(a)?;
            let v = view_in_tx(tx, &Account { id, ..a.clone() })?;
            Ok(Ok(Change::new(
                AuditKind::Create,
                target(&v.name),
                v.clone(),
            )
            .after(&v)))
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// `PUT /api/accounts/{id}` (Provision): the body is merged into the current view (see
/// [`super::merge`]) and validated like a create; the balance cannot be changed here and keeps the
/// value it has at the write.
pub async fn update(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<Value>,
) -> ApiResult<Json<AccountView>> {
    let id = path_id(&id)?;
    let v = change(
        &st,
        &c,
        Then::Reload,
        move |s| {
            let old = load(s, id)?;
            let cur = json(&view(&old, &tariff_names(s.store()))).unwrap_or_default();
            let input: AccountSpec = patched(cur, patch, &["balance"])?;
            build(s, &input, Some(&old))
        },
        move |tx, a: &Account| {
            let now = present("account", id, tx.account(id))?;
            let before = view_in_tx(tx, &now)?;
            // The balance as it is now: calls may have been debited since it was read.
            let a = Account {
                balance: now.balance,
                ..a.clone()
            };
            tx.put_account(&a)?;
            let after = view_in_tx(tx, &a)?;
            let c = Change::new(AuditKind::Update, target(&before.name), after.clone());
            Ok(Ok(c.before(&before).after(&after)))
        },
    )
    .await?;
    Ok(Json(v))
}

/// `DELETE /api/accounts/{id}` (Provision): removes the account with its auth rules (named in the
/// audit entry), then reloads the core; 204.
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
            load(s, id)?;
            let rules = s.store().rules_of(id).into_iter().flatten();
            Ok(rules.map(|r| r.name).collect::<Vec<String>>())
        },
        move |tx, rules| {
            let old = tx.delete_account(id, rules)?;
            let before = view_in_tx(tx, &old)?;
            let reason =
                (!rules.is_empty()).then(|| format!("with its rules: {}", rules.join(", ")));
            let c = Change::new(AuditKind::Delete, target(&old.name), ());
            Ok(Ok(c.before(&before).reason(reason)))
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The body of a top-up.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopupIn {
    /// The amount to add, decimal (`10`, `2.50`, negative for a correction); zero is refused.
    pub amount: String,
    /// Why, for the audit entry: at most 200 characters, no control characters.
    #[serde(default)]
    pub note: Option<String>,
}

/// `POST /api/accounts/{id}/topup` (Provision): adds to the stored balance in one audited
/// transaction and credits the running core without a reload; refuses an overflow.
pub async fn topup(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<TopupIn>,
) -> ApiResult<Json<AccountView>> {
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
    let reason = match &body.note {
        Some(n) => format!("top-up {delta}: {n}"),
        None => format!("top-up {delta}"),
    };
    let v = change(
        &st,
        &c,
        Then::Credit(id, delta),
        move |s| load(s, id).map(drop),
        move |tx, ()| {
            let a = present("account", id, tx.account(id))?;
            let Some(b) = a.balance.0.checked_add(delta.0) else {
                return Ok(Err(ApiError::invalid("amount", "balance would overflow")));
            };
            let before = view_in_tx(tx, &a)?;
            let a = Account {
                balance: Micros(b),
                ..a
            };
            tx.put_account(&a)?;
            let after = view_in_tx(tx, &a)?;
            let c = Change::new(AuditKind::Update, target(&a.name), after.clone());
            Ok(Ok(c
                .before(&before)
                .after(&after)
                .reason(Some(reason.clone()))))
        },
    )
    .await?;
    Ok(Json(v))
}

/// One top-up of an account as its history shows it (who made it is staff's business and is
/// in the audit log, not here).
#[derive(Debug, Clone, Serialize)]
pub struct TopupView {
    /// When, Unix ms.
    pub at_ms: u64,
    /// The amount added, decimal (negative for a correction).
    pub amount: String,
    /// The note given with it, if any.
    pub note: Option<String>,
    /// The balance right after it, decimal.
    pub balance_after: Option<String>,
}

/// The top-up of an audit entry, if it is one of account `id` named `name`. The id too: a
/// name can be reused by a later account, whose customers must not see the earlier one's.
fn topup_of(e: &crate::store::AuditEntry, id: Id, name: &str) -> Option<TopupView> {
    let d = &e.entry;
    if d.kind != AuditKind::Update
        || d.result != crate::store::AuditResult::Success
        || d.target.as_deref() != Some(target(name).as_str())
        || d.after.as_ref().and_then(|a| a["id"].as_u64()) != Some(id)
    {
        return None;
    }
    let rest = d.reason.as_deref()?.strip_prefix("top-up ")?;
    let (amount, note) = match rest.split_once(": ") {
        Some((a, n)) => (a, Some(n.to_owned())),
        None => (rest, None),
    };
    Some(TopupView {
        at_ms: d.ts_ms,
        amount: amount.to_owned(),
        note,
        balance_after: d
            .after
            .as_ref()
            .and_then(|a| a["balance"].as_str())
            .map(str::to_owned),
    })
}

/// `GET /api/accounts/{id}/topups` (View; a customer its own account's): the account's
/// top-ups oldest first, from the audit log (entries made under the account's current name).
pub async fn topups(
    _: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<TopupView>>> {
    let id = path_id(&id)?;
    blocking(&st, move |s| {
        let a = load(s, id)?;
        let all = s.store().audit(&crate::store::AuditFilter {
            after_id: 0,
            actor: None,
            kind: Some(AuditKind::Update),
            from_ms: None,
            until_ms: None,
            limit: 0,
        });
        Ok(Json(
            all.iter()
                .flatten()
                .filter_map(|e| topup_of(e, id, &a.name))
                .collect(),
        ))
    })
    .await
}
