//! The API's connections: who may hold one, and for how long.
//!
//! - At most `max_connections` at once from everyone and `max_per_source` from one address,
//!   counted from accept to close (not only during the handshake): a source over its share
//!   is closed at once, before any TLS work.
//! - The TLS handshake must finish within `handshake_secs`, the headers of each request
//!   within `header_secs` (hyper's header timeout: a slowloris that sends a byte a second
//!   is closed all the same), and a connection with no byte either way for `idle_secs` is
//!   closed.
//!
//! Connections are served by hyper directly rather than `axum::serve`, which sets no header
//! deadline.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, warn};

use super::{PeerAddr, State};

/// `[management.connections]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnLimits {
    /// Connections open at once, from everyone.
    pub max_connections: usize,
    /// Connections open at once from one address.
    pub max_per_source: usize,
    /// The TLS handshake must be over within this.
    pub handshake_secs: u64,
    /// Each request's headers must have arrived within this.
    pub header_secs: u64,
    /// A connection with no traffic either way for this long is closed.
    pub idle_secs: u64,
    /// Event streams (`GET /api/events`) open at once; each holds one of the connections.
    pub max_event_streams: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 256,
            max_per_source: 32,
            handshake_secs: 10,
            header_secs: 10,
            idle_secs: 60,
            max_event_streams: 32,
        }
    }
}

impl ConnLimits {
    /// Problems with these limits, for `sipd check-config`.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(1..=65_536).contains(&self.max_connections) {
            out.push(format!(
                "max_connections {} is outside 1..=65536",
                self.max_connections
            ));
        }
        if self.max_per_source == 0 || self.max_per_source > self.max_connections {
            out.push(format!(
                "max_per_source {} must be between 1 and max_connections",
                self.max_per_source
            ));
        }
        if self.max_event_streams == 0 || self.max_event_streams > self.max_connections {
            out.push(format!(
                "max_event_streams {} must be between 1 and max_connections",
                self.max_event_streams
            ));
        }
        for (name, v) in [
            ("handshake_secs", self.handshake_secs),
            ("header_secs", self.header_secs),
            ("idle_secs", self.idle_secs),
        ] {
            if !(1..=3600).contains(&v) {
                out.push(format!("{name} {v} is outside 1..=3600"));
            }
        }
        out
    }
}

/// Connections open per source address.
#[derive(Default)]
struct Sources(Mutex<HashMap<IpAddr, usize>>);

/// One connection's place in [`Sources`], given back on drop.
struct SourceSlot {
    sources: Arc<Sources>,
    ip: IpAddr,
}

impl Sources {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<SourceSlot> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            sources: self.clone(),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut m = self.sources.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// A served connection: the TLS stream, its idle timer and its two slots (held until the
/// stream is dropped, i.e. the connection closed).
struct Guarded {
    io: TlsStream<TcpStream>,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    _slot: OwnedSemaphorePermit,
    _source: SourceSlot,
}

impl Guarded {
    fn touch(&mut self) {
        self.timer.as_mut().reset(Instant::now() + self.idle);
    }

    /// Ready (an error) once the connection has been idle for too long.
    fn expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "management API connection idle",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.expired(cx).map(Err),
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.touch();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // A client that stops reading our answer holds the connection no longer than one
            // that stops sending.
            Poll::Pending => self.expired(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The router with the client's address added to every request, as axum's `ConnectInfo`.
#[derive(Clone)]
struct WithPeer {
    app: Router,
    peer: SocketAddr,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for WithPeer {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = axum::routing::future::RouteFuture<Infallible>;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut()
            .insert(ConnectInfo(PeerAddr(self.peer)));
        tower_service::Service::call(&mut self.app.clone(), req)
    }
}

/// Accepts until `stop`; each admitted connection is handshaken and served on its own task.
pub(super) async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    st: State,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    let lim = st.cfg.management.connections;
    let slots = Arc::new(Semaphore::new(lim.max_connections));
    let sources = Arc::new(Sources::default());
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "management API: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        // Answers are small and written in pieces (TLS records, headers then body): with
        // Nagle on, the second piece waits for the client's delayed ACK, about 40 ms a request.
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().unwrap_or(peer);
        if !st.firewall().management_admits(peer, local) {
            debug!(%peer, "management API: source not in management_allow, or banned or denied; closed");
            continue;
        }
        let Some(source) = sources.take(peer.ip(), lim.max_per_source) else {
            debug!(%peer, "management API: too many connections from this source; closed");
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "management API: too many connections; closed");
            continue;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let handshake = Duration::from_secs(lim.handshake_secs);
            let tls = match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "management API: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "management API: TLS handshake timed out");
                    return;
                }
            };
            if tls.get_ref().1.alpn_protocol() == Some(crate::tls::ACME_TLS_ALPN) {
                // A TLS-ALPN-01 validation: the handshake was all of it (RFC 8737).
                debug!(%peer, "management API: ACME tls-alpn-01 validation handshake");
                return;
            }
            let idle = Duration::from_secs(lim.idle_secs);
            let io = Guarded {
                io: tls,
                idle,
                timer: Box::pin(tokio::time::sleep(idle)),
                _slot: slot,
                _source: source,
            };
            serve(io, WithPeer { app, peer }, lim, stop).await;
        });
    }
}

async fn serve(io: Guarded, svc: WithPeer, lim: ConnLimits, mut stop: watch::Receiver<bool>) {
    let peer = svc.peer;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(lim.header_secs))
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(%peer, error = %e, "management API: connection ended");
                }
                return;
            }
            _ = stop.changed(), if !stopping => {
                // Finish the request in progress, then close.
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
