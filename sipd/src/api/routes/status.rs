//! Status, alerts, `/metrics`, and the certificate reload trigger.

use axum::Json;
use axum::extract::{Path, State as Extract};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::alerts::{Alert, alerts as list_alerts};
use crate::api::error::{ApiError, ApiResult};
use crate::api::metrics::{Extra, render};
use crate::api::{Caller, State, blocking};
use crate::control::Status;
use crate::store::{AlertAck, AuditKind};

/// `GET /api/status` (View): the daemon's [`Status`].
pub async fn status(_: Caller, Extract(st): Extract<State>) -> ApiResult<Json<Status>> {
    Ok(Json(st.control.status().await?))
}

/// `GET /api/alerts` (View): the current security findings (see [`crate::api::alerts`]).
pub async fn alerts(_: Caller, Extract(st): Extract<State>) -> ApiResult<Json<Vec<Alert>>> {
    blocking(&st, |s| Ok(Json(list_alerts(s)))).await
}

/// `POST /api/alerts/{id}/ack` (Operate): marks a current alert acknowledged by the caller,
/// stored with its audit entry in one transaction (kept across restarts and while the alert
/// clears and comes back); 404 when no current alert has that id.
pub async fn ack_alert(
    c: Caller,
    Extract(st): Extract<State>,
    Path(id): Path<String>,
) -> ApiResult<Json<Alert>> {
    blocking(&st, move |s| {
        let by = c.actor();
        let now = crate::mgmt::unix_ms(std::time::SystemTime::now());
        let mut a = list_alerts(s)
            .into_iter()
            .find(|a| a.id == id)
            .ok_or_else(|| ApiError::not_found(format!("no current alert {id:?}")))?;
        a.acked_by = Some(by.username.clone());
        a.acked_ms = Some(now);
        let ack = AlertAck {
            id: id.clone(),
            by: by.username.clone(),
            at_ms: now,
        };
        let entry = by.audit(
            AuditKind::Update,
            format!("alert:{id}"),
            Some("acknowledged".to_owned()),
            None,
            serde_json::to_value(&a).ok(),
        );
        s.store().write(|tx| {
            tx.put_alert_ack(&ack)?;
            tx.append_audit(&entry)
        })?;
        if let Err(e) = s.store().trim_alert_acks() {
            tracing::warn!(error = %e, "old acknowledgements not trimmed");
        }
        Ok(Json(a))
    })
    .await
}

/// `GET /metrics` (View, or anyone when `metrics_public`): the Prometheus text page.
pub async fn metrics(Extract(st): Extract<State>) -> ApiResult<Response> {
    let status = st.control.status().await?;
    let extra = blocking(&st, |s| {
        Ok(Extra {
            self_signed: s.tls.self_signed.load(std::sync::atomic::Ordering::Relaxed),
            cert_reloads: s.tls.reloads.load(std::sync::atomic::Ordering::Relaxed),
            manual_bans: s.store().manual_bans().len(),
            bans: s.firewall().ban_counters(),
            ban_fill: s.firewall().ban_fill(),
            call_messages_dropped: s.control.capture.dropped(),
            call_messages: s.control.capture.held(),
            hep: s
                .control
                .hep
                .as_ref()
                .map(|h| h.counts())
                .unwrap_or_default(),
            acme: s.control.acme.as_ref().map(|a| {
                use std::sync::atomic::Ordering::Relaxed;
                crate::api::metrics::AcmeFacts {
                    expiry_secs: a.expiry_secs(),
                    renewals_ok: a.renewals_ok.load(Relaxed),
                    renewals_failed: a.renewals_failed.load(Relaxed),
                    failing: a.failing.load(Relaxed),
                }
            }),
            cluster: s.control.cluster.as_ref().map(|c| c.counters()),
        })
    })
    .await?;
    let mut r = render(&status, &extra).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(r)
}

/// Re-reads the certificate files now (they are also checked every few seconds).
pub async fn reload_cert(c: Caller, Extract(st): Extract<State>) -> ApiResult<StatusCode> {
    blocking(&st, move |s| {
        let r = s.tls.reload();
        let mut entry = c.actor().audit(
            AuditKind::Update,
            format!("certificate:{}", s.tls.cert_path.display()),
            r.as_ref().err().map(|e| format!("{e:#}")),
            None,
            None,
        );
        if r.is_err() {
            entry.result = crate::store::AuditResult::Failure;
        }
        s.store().append_audit(&entry)?;
        r.map_err(|e| ApiError::invalid("certificate", format!("{e:#}; the old one stays")))?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
