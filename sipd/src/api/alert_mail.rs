//! Alerts by mail (`[smtp] alert_to`): every 30 s the alerts `GET /api/alerts` lists are
//! compared with the last check's; each one raised since (and not acknowledged) is mailed to
//! every address, once. The first check mails what is already raised and unacknowledged, so
//! a restart re-sends those (acknowledge an alert to stop that). A mail that fails is logged
//! and not retried (the alert is still listed by the API and the console).

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

use super::alerts::alerts;
use super::{State, blocking};

/// How often the alerts are checked for mail.
const EVERY: Duration = Duration::from_secs(30);

/// Runs until `stop`; returns at once when `alert_to` is empty.
pub(super) async fn run(st: State, mut stop: watch::Receiver<bool>) {
    if st.cfg.smtp.alert_to.is_empty() || st.cfg.smtp.host.is_none() {
        return;
    }
    // The first check a moment after start, so a restart's alerts are not all missed.
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(2), EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut mailed: BTreeSet<String> = BTreeSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let before = mailed.clone();
        let r = blocking(&st, move |s| {
            let now = alerts(s);
            let ids: BTreeSet<String> = now.iter().map(|a| a.id.clone()).collect();
            for a in now
                .iter()
                .filter(|a| !before.contains(&a.id) && a.acked_by.is_none())
            {
                let subject = format!("SBC alert ({}): {}", a.severity, a.code);
                let body = format!(
                    "{}\n\nAlert {} ({}), raised on the SBC. Acknowledge it with `sbcctl alerts` \
                     or POST /api/alerts/{}/ack.\n",
                    a.message, a.id, a.severity, a.id
                );
                for to in &s.cfg.smtp.alert_to {
                    if let Err(e) = s.auth.email.mailer().send(to, &subject, &body) {
                        warn!(error = %e, alert = %a.id, to = %to, "cannot mail an alert");
                    }
                }
            }
            Ok(ids)
        })
        .await;
        if let Ok(ids) = r {
            // Cleared alerts leave the set, so they are mailed again if they come back.
            mailed = ids;
        }
    }
}
