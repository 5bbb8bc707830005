//! Retention: CDRs and audit entries older than `[retention] days` are purged by a
//! background task, once at start and then hourly, so the store does not grow for ever.
//! `sipd cdrs export` takes CDRs out before they go. Nothing within retention is purged
//! (see [`Store::purge_cdrs_before`] and [`Store::purge_audit_before`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use crate::store::{Store, StoreError};

/// How often the purge runs.
const EVERY: Duration = Duration::from_secs(3600);

/// What one purge removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Purged {
    /// CDRs removed.
    pub cdrs: usize,
    /// Audit entries removed (the chain's anchor moves past them).
    pub audit: usize,
}

/// Purges what is older than `days` days at `now` (the clock is passed in: tests date
/// records in the past instead of waiting). `days == 0` keeps everything.
pub fn purge(store: &Store, now: SystemTime, days: u32) -> Result<Purged, StoreError> {
    if days == 0 {
        return Ok(Purged::default());
    }
    let keep = Duration::from_secs(u64::from(days) * 86_400);
    let cutoff = now.checked_sub(keep).unwrap_or(SystemTime::UNIX_EPOCH);
    let cutoff_ms = sipd_core::records::unix_ms(cutoff);
    Ok(Purged {
        cdrs: store.purge_cdrs_before(cutoff_ms)?,
        audit: store.purge_audit_before(cutoff_ms)?,
    })
}

/// The hourly task; ends with the runtime.
pub fn spawn(store: Arc<Store>, days: u32) {
    if days == 0 {
        info!("retention off: CDRs and the audit log are kept for ever");
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tick.tick().await;
            let s = store.clone();
            match tokio::task::spawn_blocking(move || purge(&s, SystemTime::now(), days)).await {
                Ok(Ok(p)) if p != Purged::default() => {
                    info!(
                        cdrs = p.cdrs,
                        audit = p.audit,
                        days,
                        "purged records past retention"
                    )
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn!(error = %e, "retention purge failed; will retry"),
                Err(e) => warn!(error = %e, "retention purge task failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditDraft, AuditKind, AuditResult, CdrDraft, Micros};

    const DAY_MS: u64 = 86_400_000;

    fn cdr(call_id: &str, end_ms: u64) -> CdrDraft {
        CdrDraft {
            call_id: call_id.into(),
            start_ms: end_ms - 1000,
            answer_ms: None,
            end_ms,
            caller: "a".into(),
            callee: "b".into(),
            source: None,
            account_id: None,
            connection_id: None,
            result_code: 200,
            reason: String::new(),
            duration_secs: 1,
            cost: Micros(0),
            hung_up_by: None,
        }
    }

    /// Records dated 500, 401, 399 and 1 day(s) ago under a 400-day retention: the two past
    /// it go, the rest stay; a newest record past retention still stays (ids never go back).
    #[test]
    fn purges_only_what_is_past_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let now_ms = sipd_core::records::unix_ms(now);
        for (name, age) in [("d500", 500), ("d401", 401), ("d399", 399), ("d1", 1)] {
            store.append_cdr(cdr(name, now_ms - age * DAY_MS)).unwrap();
            let a = AuditDraft {
                ts_ms: now_ms - age * DAY_MS,
                actor: None,
                source: None,
                kind: AuditKind::Create,
                target: Some(format!("test:{name}")),
                result: AuditResult::Success,
                reason: None,
                before: None,
                after: None,
            };
            store.append_audit(&a).unwrap();
        }
        let p = purge(&store, now, 400).unwrap();
        assert_eq!(p, Purged { cdrs: 2, audit: 2 });
        let left: Vec<String> = store
            .cdrs(0, 10)
            .into_iter()
            .map(|c| c.unwrap().call.call_id)
            .collect();
        assert_eq!(left, ["d399", "d1"]);
        assert_eq!(store.audit(&Default::default()).len(), 2);
        assert!(
            store.verify_audit().unwrap().ok(),
            "the chain verifies from its anchor"
        );
        // Again: nothing more.
        assert_eq!(purge(&store, now, 400).unwrap(), Purged::default());
        // Years later, the newest CDR stays; the next one gets the next id.
        let later = now + Duration::from_secs(3000 * 86_400);
        let p = purge(&store, later, 400).unwrap();
        assert_eq!(p, Purged { cdrs: 1, audit: 2 });
        assert!(
            store.verify_audit().unwrap().ok(),
            "an emptied log still verifies"
        );
        let next = store.append_cdr(cdr("new", now_ms)).unwrap();
        assert_eq!(next.id, 5);
        assert_eq!(purge(&store, now, 0).unwrap(), Purged::default());
    }
}
