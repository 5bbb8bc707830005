//! Reading what the subscriber hears: one place decides what a lost message, another
//! channel's message or an unreadable one means, for bans and provisioning alike.

use std::sync::atomic::Ordering;

use fred::types::Message;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast::error::RecvError;
use tracing::warn;

use super::{Cluster, Status};

/// One received pub/sub message, read for a listener of one channel.
pub(super) enum Heard<T> {
    /// A record published on the channel.
    Record(T),
    /// Nothing for this listener: another channel, not text, or unreadable (warned).
    Skip,
    /// The subscriber client is gone: the listener ends.
    Gone,
}

/// Reads `m` as a JSON `T` published on `channel` (`what` names it in the log). Messages the
/// buffer lost are counted and set the node Down: the next heartbeat's resync fetches what
/// they carried, so nothing stays missed.
pub(super) fn heard<T: DeserializeOwned>(
    c: &Cluster,
    m: Result<Message, RecvError>,
    channel: &str,
    what: &str,
) -> Heard<T> {
    let m = match m {
        Ok(m) => m,
        Err(RecvError::Lagged(n)) => {
            c.counts.pubsub_overflows.fetch_add(1, Ordering::Relaxed);
            warn!(
                missed = n,
                "cluster: pub/sub buffer overflowed, messages lost; resyncing"
            );
            c.set_status(Status::Down);
            return Heard::Skip;
        }
        Err(RecvError::Closed) => return Heard::Gone,
    };
    if *m.channel != *channel {
        return Heard::Skip;
    }
    let Some(text) = m.value.as_str() else {
        return Heard::Skip;
    };
    match serde_json::from_str(&text) {
        Ok(r) => Heard::Record(r),
        Err(e) => {
            warn!(error = %e, "cluster: unreadable {what} ignored");
            Heard::Skip
        }
    }
}
