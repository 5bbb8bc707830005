//! Security alerts the API lists (`GET /api/alerts`): configurations an auditor would flag.
//!
//! - `permissive_firewall`: a restricted service (management, the operator's services, or
//!   SIP, SSH, SIP over TLS once they have an allow list) allows every address (`0.0.0.0/0`
//!   or `::/0`): Sippy's permissive-firewall warning.
//! - `firewall_coverage`: an address XDP does not cover: `info` when sipd's userspace
//!   firewall checks it instead; for a host service nothing checks (SSH), `critical` when it
//!   has an allow list (or is the operator's own), `warning` when it is open anyway.
//! - `admin_without_totp`: an enabled admin has no confirmed TOTP factor.
//! - `self_signed_certificate`: the API still uses the certificate it made itself.
//! - `certificate_reload_failed`: the certificate files changed but did not load; the old
//!   certificate is still served.
//! - `acme_renewal_failed`: the last ACME attempt failed; the old certificate is still
//!   served and the attempt is retried (cleared by the next success).
//! - `smtp_failed`: the last email code could not be sent, within the last
//!   hour: users whose second factor is email cannot log in.
//! - `ban_table_full`: the ban table was full within the last hour (bans gave way or were
//!   refused), or is full now.
//! - `cluster_down`: `[cluster]` is set and its Redis does not answer (or the node has not
//!   resynced yet): bans applied stay, changes made here wait for the resync.
//! - `cluster_limits_fallback`: the shared limits and balances did not reach Redis: this
//!   node admits within its share of each limit and its last-known balances, debits are
//!   queued (cleared by the first maintenance tick that reaches Redis again).

use serde::Serialize;

use super::ApiState;
use crate::store::Role;
use relay_user::ServiceId;

/// One finding of [`alerts`], as `GET /api/alerts` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// Stable while the condition lasts (`code` and what it is about, e.g.
    /// `permissive_firewall:management`): the event stream's `alert_raised` and
    /// `alert_cleared` name alerts by it.
    pub id: String,
    /// Stable machine name of the finding (`permissive_firewall`, `firewall_coverage`,
    /// `admin_without_totp`, `self_signed_certificate`, `certificate_reload_failed`,
    /// `acme_renewal_failed`, `ban_table_full`, `cluster_down`, `cluster_limits_fallback`,
    /// `smtp_failed`).
    pub code: &'static str,
    /// `critical`, `warning` or `info`.
    pub severity: &'static str,
    /// What is wrong and what to do about it, for a person.
    pub message: String,
    /// The staff member who acknowledged it (`POST /api/alerts/{id}/ack`); `null`: not yet.
    pub acked_by: Option<String>,
    /// Unix ms of the acknowledgement; `null`: not acknowledged.
    pub acked_ms: Option<u64>,
}

/// Fills in the stored acknowledgements of `current` (`POST /api/alerts/{id}/ack`). An
/// acknowledgement is kept in the store: across restarts of sipd, and while its alert clears
/// and comes back (a flapping alert needs no second acknowledgement); a new one replaces it.
pub fn apply_acks(store: &crate::store::Store, current: &mut [Alert]) {
    let acks: std::collections::BTreeMap<String, crate::store::AlertAck> = store
        .alert_acks()
        .into_iter()
        .filter_map(|r| {
            r.inspect_err(|e| tracing::warn!(error = %e, "skipping an unreadable acknowledgement"))
                .ok()
        })
        .map(|a| (a.id.clone(), a))
        .collect();
    for a in current {
        if let Some(k) = acks.get(&a.id) {
            a.acked_by = Some(k.by.clone());
            a.acked_ms = Some(k.at_ms);
        }
    }
}

/// An alert's id: its code, and what it is about when one code can be raised for several.
fn alert_id(code: &str, about: Option<&str>) -> String {
    match about {
        Some(a) => format!("{code}:{a}"),
        None => code.to_owned(),
    }
}

/// How long a full ban table stays an alert after the last time it was full.
const BAN_ALERT_MS: u64 = 3_600_000;

/// The current findings, computed afresh from the data plane, firewall, staff and certificate on
/// each call (reads the store: call it off the async workers).
pub fn alerts(s: &ApiState) -> Vec<Alert> {
    let mut out = findings(s);
    apply_acks(s.store(), &mut out);
    out
}

/// The findings alone, without their acknowledgements.
pub fn findings(s: &ApiState) -> Vec<Alert> {
    let mut out = Vec::new();
    let dp = s.dp();
    let fw = s.firewall();
    let names = fw.service_names();
    let guarded = names
        .iter()
        .filter(|n| !matches!(n.as_str(), "rtp" | "other"))
        .filter_map(|n| fw.service(n));
    for svc in guarded {
        let allow = dp.allow_list(svc.id).unwrap_or_default();
        let open: Vec<String> = allow
            .iter()
            .filter(|c| c.prefix_len() == 0)
            .map(ToString::to_string)
            .collect();
        if !open.is_empty() {
            out.push(Alert {
                id: alert_id("permissive_firewall", Some(&svc.name)),
                code: "permissive_firewall",
                severity: if svc.is(ServiceId::Management) {
                    "critical"
                } else {
                    "warning"
                },
                message: format!(
                    "the {} service allows every address ({}): restrict it to the networks that need it",
                    svc.name,
                    open.join(", ")
                ),
                acked_by: None,
                acked_ms: None,
            });
        }
    }
    for st in s.store().staff_list().into_iter().flatten() {
        if st.role == Role::Admin && st.enabled && !st.totp_enrolled() {
            out.push(Alert {
                id: alert_id("admin_without_totp", Some(&st.username)),
                code: "admin_without_totp",
                severity: "critical",
                message: format!(
                    "admin {:?} has no confirmed TOTP factor (they only get a setup session until they enrol)",
                    st.username
                ),
                acked_by: None,
                acked_ms: None,
            });
        }
    }
    if let Some((at, what)) = s.auth.email.last_failure().filter(|(at, _)| {
        crate::mgmt::unix_ms(std::time::SystemTime::now()).saturating_sub(*at) < BAN_ALERT_MS
    }) {
        out.push(Alert {
            id: alert_id("smtp_failed", None),
            code: "smtp_failed",
            severity: "critical",
            message: format!(
                "mail could not be sent ({what}) at {at} ms: users whose second factor is email cannot log in; check [smtp]"
            ),
            acked_by: None,
            acked_ms: None,
        });
    }
    let c = s.firewall().ban_counters();
    let (held, capacity) = s.firewall().ban_fill();
    let now = crate::mgmt::unix_ms(std::time::SystemTime::now());
    if let Some((at, what)) = c
        .last_full
        .as_ref()
        .filter(|(at, _)| now.saturating_sub(*at) < BAN_ALERT_MS)
    {
        out.push(Alert {
            id: alert_id("ban_table_full", None),
            code: "ban_table_full",
            severity: "critical",
            message: format!(
                "the ban table was full {}s ago ({held} bans held, {capacity} per family): {} replaced, {} refused; last: {what}",
                now.saturating_sub(*at) / 1000,
                c.replaced,
                c.refused
            ),
            acked_by: None,
            acked_ms: None,
        });
    }
    for e in fw.coverage() {
        let ifaces = e.uncovered.join(", ");
        let (severity, message) = match e.plane {
            crate::firewall::coverage::Plane::Xdp => continue,
            crate::firewall::coverage::Plane::Userspace => (
                "info",
                format!(
                    "{} on {} is firewalled by sipd in userspace, not by XDP (interfaces without XDP: {ifaces})",
                    e.service, e.address
                ),
            ),
            crate::firewall::coverage::Plane::None => (
                // Critical where the operator believes it restricted (an allow list, or one
                // of their own services); a warning for one open by configuration.
                if fw.service(&e.service).is_some_and(|n| {
                    n.known.is_none() || !dp.allow_list(n.id).unwrap_or_default().is_empty()
                }) {
                    "critical"
                } else {
                    "warning"
                },
                format!(
                    "{} on {} is NOT firewalled: XDP is not on {ifaces} and sipd does not check this traffic itself, so its allow list is not enforced there",
                    e.service, e.address
                ),
            ),
        };
        out.push(Alert {
            id: alert_id(
                "firewall_coverage",
                Some(&format!("{}@{}", e.service, e.address)),
            ),
            code: "firewall_coverage",
            severity,
            message,
            acked_by: None,
            acked_ms: None,
        });
    }
    if let Some(c) = &s.control.cluster
        && !c.is_up()
    {
        out.push(Alert {
            id: alert_id("cluster_down", None),
            code: "cluster_down",
            severity: "critical",
            message: match c.name_conflict() {
                Some(other) => format!(
                    "node name {} is used by another live node (its heartbeat: {other}): this node refuses to join the cluster; give it a unique [cluster] node and restart",
                    c.node()
                ),
                None => format!(
                    "node {} is not connected to the cluster's Redis ({}): bans applied stay, changes made here are sent when it answers again",
                    c.node(),
                    c.config().sentinel_service.as_deref().map_or_else(|| "see [cluster] redis".to_owned(), |s| format!("sentinel service {s}"))
                ),
            },
            acked_by: None,
            acked_ms: None,
        });
    }
    if let Some(c) = &s.control.cluster
        && let crate::shared_limits::Health::Away {
            since,
            queued_debits,
        } = c.limits().health()
    {
        out.push(Alert {
            id: alert_id("cluster_limits_fallback", None),
            code: "cluster_limits_fallback",
            severity: "critical",
            message: format!(
                "node {} cannot reach the shared limits and balances for {} s: it admits within its share of each limit and its last-known balances; {queued_debits} debits wait to be applied",
                c.node(),
                since.elapsed().as_secs()
            ),
            acked_by: None,
            acked_ms: None,
        });
    }
    if s.tls.self_signed.load(std::sync::atomic::Ordering::Relaxed) {
        out.push(Alert {
            id: alert_id("self_signed_certificate", None),
            code: "self_signed_certificate",
            severity: "warning",
            message: format!(
                "the management API uses its self-signed certificate {}: set [management] tls_cert and tls_key",
                s.tls.cert_path.display()
            ),
            acked_by: None,
            acked_ms: None,
        });
    }
    if s.tls
        .reload_failed
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        out.push(Alert {
            id: alert_id("certificate_reload_failed", None),
            code: "certificate_reload_failed",
            severity: "warning",
            message: "the last certificate change could not be loaded; the previous certificate is still served"
                .into(),
            acked_by: None,
            acked_ms: None,
        });
    }
    if let Some(a) = &s.control.acme
        && let Some(message) = a.alert()
    {
        // Critical once the served certificate has less than a week left (or none is).
        let urgent = a.expiry_secs().is_none_or(|left| left < 7 * 86_400);
        out.push(Alert {
            id: alert_id("acme_renewal_failed", None),
            code: "acme_renewal_failed",
            severity: if urgent { "critical" } else { "warning" },
            message,
            acked_by: None,
            acked_ms: None,
        });
    }
    out
}
