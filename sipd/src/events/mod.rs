//! What sipd tells its live clients (`GET /api/events`, `sbcctl events`, `sbc-tui`): one
//! broadcast channel that the event loop (calls), the firewall (bans) and the API's
//! once-a-second feed (counters, alerts, audit) publish to, and every open stream reads.
//!
//! - Bounded: the channel holds [`BUFFER`] events; a subscriber that falls further behind
//!   loses the oldest and is told how many (`lagged`), and a publisher never waits for
//!   anyone. With no subscriber, publishing costs one atomic load (nothing is rendered).
//! - Each event is rendered to its JSON once, whoever reads it; [`Audience`] says which
//!   roles may see it (the same [`Action`] its API route asks for).
//!
//! [`capture`] keeps the SIP messages of live and recently ended calls for the ladder.

pub mod capture;
pub mod rates;

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::mgmt::Action;

/// Events the channel holds for its slowest subscriber before that one starts losing them.
pub const BUFFER: usize = 1024;

/// Who may see an event: what its API route asks of a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Anyone who may read calls, bans, alerts and counters (every role).
    View,
    /// Those who may read the audit log (admins).
    Audit,
}

impl Audience {
    /// The action a caller needs to be sent an event for this audience.
    pub fn action(self) -> Action {
        match self {
            Audience::View => Action::View,
            Audience::Audit => Action::ViewAudit,
        }
    }
}

/// One event as it goes on the wire: `event: <kind>` and `data: <json>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `counters`, `call_started`, `call_ended`, `ban_added`, `ban_removed`,
    /// `alert_raised`, `alert_cleared`, `audit`.
    pub kind: &'static str,
    /// The data, as one line of JSON.
    pub data: String,
    /// Who may see it.
    pub audience: Audience,
}

/// The publishing end, cheap to clone; [`Hub::subscribe`] opens a stream.
#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            tx: broadcast::channel(BUFFER).0,
        }
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("subscribers", &self.subscribers())
            .finish()
    }
}

impl Hub {
    /// Whether anyone listens (producers skip their work when nobody does).
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Sends `data` as a `kind` event to every subscriber; rendered only when there is one.
    /// Never blocks.
    pub fn publish<T: Serialize + ?Sized>(&self, kind: &'static str, audience: Audience, data: &T) {
        if self.subscribers() == 0 {
            return;
        }
        match serde_json::to_string(data) {
            Ok(data) => {
                let _ = self.tx.send(Arc::new(Event {
                    kind,
                    data,
                    audience,
                }));
            }
            Err(e) => tracing::warn!(kind, error = %e, "event not rendered"),
        }
    }

    /// A new stream of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slow_subscriber_loses_the_oldest_and_is_told_how_many() {
        let hub = Hub::default();
        hub.publish("audit", Audience::Audit, &1);
        let mut rx = hub.subscribe();
        for i in 0..BUFFER + 5 {
            hub.publish("counters", Audience::View, &serde_json::json!({ "n": i }));
        }
        match rx.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 5),
            other => panic!("expected a lag, got {other:?}"),
        }
        let e = rx.recv().await.unwrap();
        assert_eq!((e.kind, e.data.as_str()), ("counters", "{\"n\":5}"));
    }
}
