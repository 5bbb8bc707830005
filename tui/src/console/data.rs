//! What the console knows of the daemon, kept by the app and read by every screen.

use std::collections::VecDeque;

use super::action::Link;
use super::model::{
    Account, Alert, AuditEntry, Ban, Call, CallEnded, CallMessages, Cdr, Connection, Counters,
    FirewallView, NeverBan, StaffMember, Status, StreamEvent,
};

/// How many `counters` samples are kept: ten minutes at one a second.
pub const HISTORY: usize = 600;
/// How many audit entries are kept.
pub const AUDIT_KEEP: usize = 5_000;

/// A list or record as last loaded, with the error of the last try.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded<T> {
    /// The value (kept when a later refresh fails, so the screen stays readable).
    pub value: T,
    /// Whether any reply has arrived.
    pub loaded: bool,
    /// The last failure, cleared by the next success.
    pub error: Option<String>,
}

impl<T> Loaded<T> {
    /// A successful reply.
    pub fn set(&mut self, v: T) {
        self.value = v;
        self.loaded = true;
        self.error = None;
    }
}

/// Everything the screens draw from.
#[derive(Debug, Clone, Default)]
pub struct Data {
    /// The link to the daemon.
    pub link: Option<Link>,
    /// `GET /api/status`.
    pub status: Loaded<Option<Status>>,
    /// `counters` events, oldest first.
    pub counters: VecDeque<Counters>,
    /// Live calls.
    pub calls: Loaded<Vec<Call>>,
    /// Calls that ended lately, newest last (for the notice line).
    pub ended: VecDeque<CallEnded>,
    /// The ladder's messages, for the call it was asked for.
    pub messages: Loaded<Option<CallMessages>>,
    /// Bans.
    pub bans: Loaded<Vec<Ban>>,
    /// Open alerts.
    pub alerts: Loaded<Vec<Alert>>,
    /// The sources the IDS spares (`GET /api/bans/never`).
    pub never: Loaded<Vec<NeverBan>>,
    /// The audit log, oldest first.
    pub audit: Loaded<Vec<AuditEntry>>,
    /// The firewall.
    pub firewall: Loaded<Option<FirewallView>>,
    /// Accounts and connections.
    pub accounts: Loaded<(Vec<Account>, Vec<Connection>)>,
    /// The latest CDRs, newest first.
    pub cdrs: Loaded<Vec<Cdr>>,
    /// Staff.
    pub staff: Loaded<Vec<StaffMember>>,
    /// Events the server dropped for us since start.
    pub lagged: u64,
    /// The role of the logged-in user.
    pub role: Option<String>,
}

impl Data {
    /// The latest counters.
    pub fn last_counters(&self) -> Option<&Counters> {
        self.counters.back()
    }

    /// Applies one stream event.
    pub fn apply(&mut self, ev: StreamEvent) {
        match ev {
            StreamEvent::Counters(c) => {
                if self.counters.len() == HISTORY {
                    self.counters.pop_front();
                }
                self.counters.push_back(c);
            }
            StreamEvent::CallStarted(c) => {
                self.calls.value.retain(|k| k.id != c.id);
                self.calls.value.push(c);
            }
            StreamEvent::CallEnded(e) => {
                self.calls.value.retain(|k| k.id != e.id);
                if self.ended.len() == 50 {
                    self.ended.pop_front();
                }
                self.ended.push_back(e);
            }
            StreamEvent::BanAdded(b) => {
                self.bans.value.retain(|k| k.prefix != b.prefix);
                self.bans.value.push(b);
            }
            StreamEvent::BanRemoved(p) => self.bans.value.retain(|k| k.prefix != p),
            StreamEvent::AlertRaised(a) => {
                self.alerts.value.retain(|k| k.key() != a.key());
                self.alerts.value.push(a);
            }
            StreamEvent::AlertCleared(id) => {
                self.alerts.value.retain(|k| k.key() != id);
            }
            StreamEvent::Audit(e) => {
                if self.audit.value.last().is_none_or(|l| l.id < e.id) {
                    self.audit.value.push(e);
                    let over = self.audit.value.len().saturating_sub(AUDIT_KEEP);
                    self.audit.value.drain(..over);
                }
            }
            StreamEvent::Lagged(n) => self.lagged += n,
        }
    }

    /// The newest audit id known (to ask only for later ones).
    pub fn last_audit_id(&self) -> u64 {
        self.audit.value.last().map_or(0, |e| e.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_keep_the_lists_current() {
        let mut d = Data::default();
        let call = |id| Call {
            id,
            ..Call::default()
        };
        d.apply(StreamEvent::CallStarted(call(1)));
        d.apply(StreamEvent::CallStarted(call(2)));
        d.apply(StreamEvent::CallStarted(call(1)));
        assert_eq!(d.calls.value.len(), 2, "a repeated start replaces");
        d.apply(StreamEvent::CallEnded(CallEnded {
            id: 1,
            ..CallEnded::default()
        }));
        assert_eq!(d.calls.value.iter().map(|c| c.id).collect::<Vec<_>>(), [2]);
        assert_eq!(d.ended.back().map(|e| e.id), Some(1));
        d.apply(StreamEvent::BanAdded(Ban {
            prefix: "192.0.2.1/32".into(),
            ..Ban::default()
        }));
        d.apply(StreamEvent::BanRemoved("192.0.2.1/32".into()));
        assert!(d.bans.value.is_empty());
        d.apply(StreamEvent::AlertRaised(Alert {
            code: "x".into(),
            ..Alert::default()
        }));
        d.apply(StreamEvent::AlertCleared("x".into()));
        assert!(d.alerts.value.is_empty());
        for id in [3, 5, 4] {
            d.apply(StreamEvent::Audit(AuditEntry {
                id,
                ..AuditEntry::default()
            }));
        }
        assert_eq!(
            d.last_audit_id(),
            5,
            "an older entry is not appended after a newer"
        );
        for i in 0..(HISTORY as u64 + 5) {
            d.apply(StreamEvent::Counters(Counters {
                at_ms: i,
                ..Counters::default()
            }));
        }
        assert_eq!(d.counters.len(), HISTORY);
        assert_eq!(d.last_counters().map(|c| c.at_ms), Some(HISTORY as u64 + 4));
        d.apply(StreamEvent::Lagged(7));
        assert_eq!(d.lagged, 7);
    }

    #[test]
    fn events_parse_from_the_wire() {
        let e = StreamEvent::parse(
            "call_ended",
            r#"{"id":4,"cause":"bye","hung_up_by":"staff"}"#,
        );
        assert_eq!(
            e,
            Some(StreamEvent::CallEnded(CallEnded {
                id: 4,
                cause: "bye".into(),
                hung_up_by: "staff".into()
            }))
        );
        assert_eq!(
            StreamEvent::parse("ban_removed", r#"{"addr":"192.0.2.0/24"}"#),
            Some(StreamEvent::BanRemoved("192.0.2.0/24".into()))
        );
        assert_eq!(
            StreamEvent::parse("alert_cleared", r#"{"id":"ban_table_full"}"#),
            Some(StreamEvent::AlertCleared("ban_table_full".into()))
        );
        assert_eq!(
            StreamEvent::parse("lagged", r#"{"missed":12}"#),
            Some(StreamEvent::Lagged(12))
        );
        assert_eq!(StreamEvent::parse("future_kind", "{}"), None);
        assert_eq!(StreamEvent::parse("counters", "not json"), None);
        let Some(StreamEvent::Counters(c)) = StreamEvent::parse(
            "counters",
            r#"{"at_ms":1,"calls_active":2,"calls_capacity":3,"invites_per_sec":1.5,"sip_packets_per_sec":2,"relayed_kernel_pps":3,"relayed_user_pps":4,"drops_per_sec":{"ban":0.5}}"#,
        ) else {
            panic!("counters")
        };
        assert_eq!(
            (c.calls_capacity, c.invites_per_sec, c.drops_per_sec["ban"]),
            (3, 1.5, 0.5)
        );
    }
}
