//! The audit entry of each ban the IDS hands out: actor `sipd:ids`, target `ip:<source>`, and
//! the evidence (offence, source, how many offences in what window, ban length).
//!
//! Bans are earned from outside, so their entries are bounded: at most [`PER_MINUTE`] a
//! minute; beyond that they are counted, and the next entry after the minute says how many
//! were not written one by one (the bans themselves still apply and are listed by the API).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sipd_core::b2bua::Offence;

use crate::config::GuardConfig;
use crate::store::{AuditKind, AuditResult, Store, System};

/// Ban entries written per minute at most.
pub const PER_MINUTE: u32 = 60;

pub struct BanAudit {
    store: Arc<Store>,
    failures_before_ban: u32,
    floods_before_ban: u32,
    probes_before_ban: u32,
    window_secs: u64,
    minute: Instant,
    written: u32,
    suppressed: u32,
}

/// The kebab-case name the ban list and the audit log use for `o`.
pub fn offence_name(o: Offence) -> &'static str {
    match o {
        Offence::Scanner => "scanner",
        Offence::BruteForce => "brute-force",
        Offence::Enumeration => "enumeration",
        Offence::Flood => "flood",
        Offence::DialogProbe => "dialog-probe",
    }
}

impl BanAudit {
    pub fn new(store: Arc<Store>, g: &GuardConfig) -> BanAudit {
        BanAudit {
            store,
            failures_before_ban: g.auth_failures_before_ban,
            floods_before_ban: g.flood_reports_before_ban,
            probes_before_ban: g.dialog_probes_before_ban,
            window_secs: g.auth_failure_window_secs,
            minute: Instant::now(),
            written: 0,
            suppressed: 0,
        }
    }

    /// The evidence for a ban: the IDS bans on the offence that crosses its threshold, so the
    /// count is that threshold (one for a scanner's User-Agent).
    pub fn evidence(&self, ip: IpAddr, duration: Duration, o: Offence) -> serde_json::Value {
        let (count, what) = match o {
            Offence::Scanner => (1, "request with a scanner's User-Agent"),
            Offence::BruteForce => (self.failures_before_ban, "failed digest responses"),
            Offence::Enumeration => (self.failures_before_ban, "requests matching no auth rule"),
            Offence::Flood => (self.floods_before_ban, "kernel rate-limit reports"),
            Offence::DialogProbe => (
                self.probes_before_ban,
                "in-dialog requests or CANCELs naming no dialog of the sender's",
            ),
        };
        json!({
            "offence": offence_name(o),
            "source": ip,
            "count": count,
            "window_secs": if o == Offence::Scanner { 0 } else { self.window_secs },
            "evidence": format!("{count} {what}"),
            "ban_secs": duration.as_secs(),
        })
    }

    /// Audits one ban, within the per-minute budget: appended at once, flushed off the event
    /// loop.
    pub fn record(&mut self, now: Instant, ip: IpAddr, duration: Duration, o: Offence) {
        if now.duration_since(self.minute) >= Duration::from_secs(60) {
            self.minute = now;
            self.written = 0;
        }
        if self.written >= PER_MINUTE {
            self.suppressed += 1;
            return;
        }
        self.written += 1;
        let mut evidence = self.evidence(ip, duration, o);
        let suppressed = std::mem::take(&mut self.suppressed);
        if suppressed > 0 {
            evidence["bans_not_audited_before"] = json!(suppressed);
        }
        let r = self.store.audit_system(
            &System("ids"),
            AuditKind::Ban,
            format!("ip:{ip}"),
            AuditResult::Success,
            Some(offence_name(o).to_owned()),
            Some(evidence),
        );
        if let Err(e) = r {
            tracing::error!(%ip, error = %e, "audit entry for a ban not written");
            return;
        }
        flush_soon(&self.store);
    }
}

/// Flushes the store off the event loop (inline when there is no runtime).
pub fn flush_soon(store: &Arc<Store>) {
    let store = store.clone();
    let flush = move || {
        if let Err(e) = store.flush_audit() {
            tracing::error!(error = %e, "audit log not flushed");
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) => drop(h.spawn_blocking(flush)),
        Err(_) => flush(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_beyond_the_budget_are_counted_then_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mut a = BanAudit::new(store.clone(), &GuardConfig::default());
        let t0 = Instant::now();
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        for _ in 0..PER_MINUTE + 5 {
            a.record(t0, ip, Duration::from_secs(60), Offence::BruteForce);
        }
        a.record(
            t0 + Duration::from_secs(61),
            ip,
            Duration::from_secs(120),
            Offence::Scanner,
        );
        let all = store.audit(&crate::store::AuditFilter::default());
        assert_eq!(all.len(), PER_MINUTE as usize + 1);
        let first = all[0].as_ref().unwrap();
        assert_eq!(first.entry.kind, AuditKind::Ban);
        assert_eq!(first.entry.actor.as_deref(), Some("sipd:ids"));
        assert_eq!(first.entry.target.as_deref(), Some("ip:203.0.113.9"));
        let ev = first.entry.after.as_ref().unwrap();
        assert_eq!(ev["offence"], "brute-force");
        assert_eq!(ev["count"], GuardConfig::default().auth_failures_before_ban);
        let last = all.last().unwrap().as_ref().unwrap();
        assert_eq!(
            last.entry.after.as_ref().unwrap()["bans_not_audited_before"],
            5
        );
        assert_eq!(last.entry.after.as_ref().unwrap()["count"], 1);
        assert!(store.verify_audit().unwrap().ok());
    }
}
