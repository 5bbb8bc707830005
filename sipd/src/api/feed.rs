//! The once-a-second part of the event stream, run by the API while anyone listens:
//! `counters` (rates from the status `/metrics` serves), `alert_raised`/`alert_cleared` (the
//! alerts `GET /api/alerts` lists, compared with the last second's) and `audit` (entries
//! appended since the last second, whoever appended them). Calls and bans are announced by
//! the event loop and the firewall as they happen.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tracing::debug;

use super::alerts::{Alert, alerts};
use super::{State, blocking};
use crate::events::Audience;
use crate::events::rates::Rates;
use crate::mgmt::unix_ms;
use crate::store::{AuditFilter, Id};

/// Audit entries announced per second at most; more wait for the next second.
const AUDIT_PER_TICK: usize = 1000;

/// What the feed remembers between seconds (forgotten while nobody listens).
#[derive(Default)]
struct Seen {
    rates: Rates,
    alerts: Option<BTreeMap<String, Alert>>,
    audit_after: Option<Id>,
}

/// Runs until `stop`.
pub(super) async fn run(st: State, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = Seen::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let hub = &st.control.events;
        if hub.subscribers() == 0 {
            seen = Seen::default();
            continue;
        }
        match st.control.status().await {
            Ok(s) => {
                let now = SystemTime::now();
                if let Some(c) = seen.rates.next(Instant::now(), unix_ms(now), &s) {
                    hub.publish("counters", Audience::View, &c);
                }
            }
            Err(e) => debug!(error = %e, "event stream: no status this second"),
        }
        let after = seen.audit_after;
        let r = blocking(&st, move |s| {
            let now: BTreeMap<String, Alert> =
                alerts(s).into_iter().map(|a| (a.id.clone(), a)).collect();
            let after = after.unwrap_or_else(|| s.store().last_audit_id());
            let entries = s.store().audit(&AuditFilter {
                after_id: after,
                actor: None,
                kind: None,
                from_ms: None,
                until_ms: None,
                limit: AUDIT_PER_TICK,
            });
            Ok((now, after, entries))
        })
        .await;
        let Ok((now, mut after, entries)) = r else {
            continue;
        };
        if let Some(before) = &seen.alerts {
            for (id, a) in &now {
                if before.get(id).is_none() {
                    hub.publish("alert_raised", Audience::View, a);
                }
            }
            for id in before.keys().filter(|id| !now.contains_key(*id)) {
                hub.publish(
                    "alert_cleared",
                    Audience::View,
                    &serde_json::json!({ "id": id }),
                );
            }
        }
        seen.alerts = Some(now);
        for e in entries.into_iter().flatten() {
            after = after.max(e.id);
            hub.publish("audit", Audience::Audit, &e);
        }
        seen.audit_after = Some(after);
    }
}
