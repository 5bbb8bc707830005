//! `GET /api/events` (R): the live event stream, as server-sent events
//! (`event: <kind>\ndata: <one-line JSON>\n\n`). See [`crate::events`] for what is sent and
//! how a slow reader is treated.
//!
//! - Who: any role that may `View`; `audit` events only to those who may read the audit log.
//!   The token is checked again at every keep-alive: a stream ends once its session expires
//!   or is revoked.
//! - Bounded: at most `[management.connections] max_event_streams` streams at once (503
//!   past that); each holds one of the API's connections.
//! - A `: keep-alive` comment every 15 s (or half the idle timeout, if shorter), so the
//!   API's idle timeout never ends a quiet stream; a client that stops reading is closed by
//!   that same timeout. Streams end when sipd stops.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::State as Extract;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, broadcast, watch};

use crate::api::error::{ApiError, ApiResult};
use crate::api::{Caller, State, bearer_of};
use crate::events::{Audience, Event};
use crate::mgmt::Action;

/// The longest quiet time between two writes on a stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One open stream.
struct Stream {
    st: State,
    rx: broadcast::Receiver<Arc<Event>>,
    keep_alive: tokio::time::Interval,
    stop: watch::Receiver<bool>,
    /// Whether `audit` events are for this caller.
    audit: bool,
    token: String,
    ip: IpAddr,
    /// The stream's place under `max_event_streams`, given back when it ends.
    _permit: OwnedSemaphorePermit,
}

/// One event on the wire.
pub fn frame(kind: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

impl Stream {
    /// The next bytes to send, or `None` when the stream is over.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if *self.stop.borrow() {
                return None;
            }
            tokio::select! {
                r = self.rx.recv() => match r {
                    Ok(e) => {
                        if e.audience == Audience::Audit && !self.audit {
                            continue;
                        }
                        return Some(frame(e.kind, &e.data));
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        return Some(frame("lagged", &format!("{{\"missed\":{n}}}")));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.keep_alive.tick() => {
                    if !self.still_authorized().await {
                        return None;
                    }
                    return Some(Bytes::from_static(b": keep-alive\n\n"));
                }
                r = self.stop.changed() => {
                    if r.is_err() {
                        return None;
                    }
                }
            }
        }
    }

    /// The stream's token is still good (not expired, revoked, or its user disabled).
    async fn still_authorized(&self) -> bool {
        let (token, ip) = (self.token.clone(), self.ip);
        crate::api::blocking(&self.st, move |s| {
            s.auth
                .authorize(s.store(), &token, ip, SystemTime::now())
                .map_err(ApiError::from)
        })
        .await
        .is_ok_and(|a| a.permit(Action::View).is_ok())
    }
}

/// `GET /api/events`: opens a stream for a caller who may `View` (503 past
/// `max_event_streams`).
pub async fn stream(
    c: Caller,
    Extract(st): Extract<State>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let Ok(permit) = st.streams.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!(
                "{} event streams are open already (max_event_streams)",
                st.cfg.management.connections.max_event_streams
            ),
        ));
    };
    let every = KEEP_ALIVE.min(Duration::from_secs(
        (st.cfg.management.connections.idle_secs / 2).max(1),
    ));
    let mut keep_alive = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let s = Stream {
        rx: st.control.events.subscribe(),
        keep_alive,
        stop: st.stop.clone(),
        audit: c.authz.permit(Action::ViewAudit).is_ok(),
        token: bearer_of(&headers).unwrap_or_default(),
        ip: c.ip,
        st: st.clone(),
        _permit: permit,
    };
    let first = futures_util::stream::once(async {
        Ok::<_, Infallible>(Bytes::from_static(b": connected\n\n"))
    });
    let rest = futures_util::stream::unfold(s, |mut s| async move {
        s.next().await.map(|b| (Ok::<_, Infallible>(b), s))
    });
    let mut r = Body::from_stream(futures_util::StreamExt::chain(first, rest)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(r)
}
