//! TCP and TLS: listeners, outbound connects, and the per-connection tasks.
//!
//! Each connection has a reader (framing, idle timeout) and a separate writer task fed by a
//! queue, so a peer that stops reading cannot stop us from reading it (and vice versa), and
//! `send` only has to enqueue. Connections we open are registered like accepted ones, so
//! requests and responses to the same peer reuse them and what the peer sends back on them
//! is delivered.
//!
//! SIP over TLS is this with a TLS layer in between (`tls.rs` does the handshakes): the
//! connection tasks run over any byte stream, so the limits (per-source and total caps, fd
//! reserve, first-message deadline, idle timeout, per-source INVITE guard) are the same code
//! for both.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use super::guard::Verdict;
use super::{
    Arrival, ConnId, Counters, Event, FrameError, Framer, Inbound, NewConn, Outbound, Peer, Proto,
    Queued, Refused, Shared,
};

/// Bytes asked of the kernel per read.
const READ_CHUNK: usize = 16 * 1024;
/// A write that cannot finish this long means the peer stopped reading: give up on it
/// rather than let its queue hold memory for the idle timeout.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a framing error, how long the connection stays open for the core's 400/513.
const MALFORMED_LINGER: Duration = Duration::from_secs(2);
/// Cap on pongs written for one read, so a burst of pings cannot fill the queue.
const MAX_PONGS: usize = 16;

/// Refusals are logged at warn at most this often (each is counted in /metrics anyway).
const REFUSAL_WARN_EVERY: Duration = Duration::from_secs(60);

/// Accepts on `listener`: plain TCP when `tls` is None, else each connection's TLS
/// handshake runs first (after the connection caps, before the first-message deadline).
pub(super) async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    local: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let proto = if tls.is_some() {
        Proto::Tls
    } else {
        Proto::Tcp
    };
    let mut last_warn: Option<Instant> = None;
    let mut warn_due = move || {
        let due = last_warn.is_none_or(|t| t.elapsed() >= REFUSAL_WARN_EVERY);
        if due {
            last_warn = Some(Instant::now());
        }
        due
    };
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(r) => r,
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: back off instead of spinning until something closes.
                Counters::inc(&shared.counters.tcp_accept_errors);
                tracing::warn!(%local, %proto, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // The kernel gives the lowest free number: this one that high means the descriptors
        // media and the API need are nearly gone. Dropping the stream closes it.
        let fd = u64::try_from(stream.as_raw_fd()).unwrap_or(u64::MAX);
        if shared.limits.fd_ceiling.is_some_and(|c| fd >= c) {
            Counters::inc(&shared.counters.tcp_refused_fd_reserve);
            if warn_due() {
                tracing::warn!(%remote, %local, %proto, fd,
                    "SIP TCP/TLS connections refused: they would use the descriptors kept for media and the API (sip.fd_reserve); see sipd_transport_events_total");
            } else {
                tracing::debug!(%remote, %local, fd, "tcp connection refused: descriptor reserve");
            }
            continue;
        }
        let conn_local = stream.local_addr().unwrap_or(local);
        if !shared.allowed(remote, conn_local, proto) {
            continue;
        }
        let conn = match shared.register_inbound(remote, proto) {
            Ok(c) => c,
            Err(why) => {
                let (counter, limit) = match why {
                    Refused::Total => (&shared.counters.tcp_refused, "tcp_max_connections"),
                    Refused::PerSource => (
                        &shared.counters.tcp_refused_per_source,
                        "tcp_max_per_source",
                    ),
                };
                Counters::inc(counter);
                if warn_due() {
                    tracing::warn!(%remote, %local, %proto, limit,
                        "SIP TCP/TLS connections refused at a limit; see sipd_transport_events_total");
                } else {
                    tracing::debug!(%remote, %local, limit, "tcp connection refused");
                }
                continue;
            }
        };
        Counters::inc(&shared.counters.tcp_accepted);
        tracing::debug!(%remote, local = %conn_local, conn = conn.id, %proto, "accepted");
        let Some(local) = prepare(&shared, &conn, &stream, remote) else {
            continue;
        };
        let ends = Ends {
            local,
            remote,
            proto,
            client_names: Arc::from([]),
        };
        match &tls {
            None => {
                tokio::spawn(run_conn(shared.clone(), conn, stream, ends, true));
            }
            Some(acceptor) => {
                let task = super::tls::accept(shared.clone(), acceptor.clone(), conn, stream, ends);
                tokio::spawn(task);
            }
        }
    }
}

/// Sets a fresh connection up; its local address, or None (unregistered) when the socket
/// is already unusable (e.g. reset right after accept).
pub(super) fn prepare(
    shared: &Shared,
    conn: &NewConn,
    stream: &TcpStream,
    remote: SocketAddr,
) -> Option<SocketAddr> {
    // SIP messages are written whole; Nagle would only delay them.
    let _ = stream.set_nodelay(true);
    match stream.local_addr() {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::debug!(%remote, error = %e, "connection lost before start");
            shared.unregister(conn.id);
            None
        }
    }
}

/// A connection's two ends and transport.
#[derive(Debug, Clone)]
pub(super) struct Ends {
    pub(super) local: SocketAddr,
    pub(super) remote: SocketAddr,
    pub(super) proto: Proto,
    /// The DNS names of the peer's verified TLS client certificate (set once the handshake
    /// is done; empty for TCP, outbound connections and callers without one).
    pub(super) client_names: Arc<[String]>,
}

/// Queues `out` on a live connection (the one named, else the newest to `remote`), or
/// registers a new outbound connection and queues on it before it is even connected, so
/// sends made while it connects share it and fail together if it cannot be made.
pub(super) fn send(shared: &Arc<Shared>, out: Outbound) {
    let remote = out.remote;
    let proto = out.proto;
    let token = out.token;
    let mut q = Queued {
        data: out.data,
        token: Some(token),
    };
    let mut tried_ids = Vec::new();
    loop {
        let (id, tx) = {
            let mut t = shared.table();
            let live = out
                .conn
                .into_iter()
                .chain(
                    t.by_remote
                        .get(&remote)
                        .into_iter()
                        .flatten()
                        .rev()
                        .copied(),
                )
                .filter(|id| !tried_ids.contains(id))
                .find_map(|id| {
                    t.by_id
                        .get(&id)
                        .filter(|h| h.proto == proto)
                        .map(|h| (id, h.tx.clone()))
                });
            match live {
                Some(found) => found,
                None => {
                    // Outbound connections are never refused (see Limits::max_connections).
                    let Some(conn) = shared.register_locked(&mut t, remote, proto, false) else {
                        return;
                    };
                    drop(t);
                    // Queued before the connect task exists, so a connect failing at once
                    // still finds it and reports it; the fresh queue has room.
                    if conn.tx.try_send(q).is_err() {
                        tracing::error!(%remote, "new tcp connection queue refused a message");
                    }
                    let task = connect_and_run(shared.clone(), conn, remote, proto, out.local);
                    shared.runtime.spawn(task);
                    return;
                }
            }
        };
        match tx.try_send(q) {
            Ok(()) => return,
            Err(TrySendError::Full(_)) => {
                let error = format!("{proto} connection {id} to {remote}: send queue full");
                shared.send_failed(remote, proto, token, error);
                return;
            }
            // Closing between lookup and send: try the next, or connect anew.
            Err(TrySendError::Closed(back)) => {
                q = back;
                tried_ids.push(id);
            }
        }
    }
}

async fn connect_and_run(
    shared: Arc<Shared>,
    conn: NewConn,
    remote: SocketAddr,
    proto: Proto,
    local: Option<SocketAddr>,
) {
    let timeout = shared.limits.connect_timeout;
    let stream = match tokio::time::timeout(timeout, connect(remote, local)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            return fail_connect(
                &shared,
                conn,
                remote,
                proto,
                format!("connect {proto} {remote}: {e}"),
            );
        }
        Err(_) => {
            let error = format!("connect {proto} {remote}: timed out after {timeout:?}");
            return fail_connect(&shared, conn, remote, proto, error);
        }
    };
    Counters::inc(&shared.counters.tcp_connected);
    tracing::debug!(%remote, conn = conn.id, %proto, "tcp connected");
    let Some(local) = prepare(&shared, &conn, &stream, remote) else {
        return fail_connect(
            &shared,
            conn,
            remote,
            proto,
            format!("connect {proto} {remote}: lost at once"),
        );
    };
    let ends = Ends {
        local,
        remote,
        proto,
        client_names: Arc::from([]),
    };
    if proto == Proto::Tls {
        super::tls::connect(shared, conn, stream, ends).await;
    } else {
        run_conn(shared, conn, stream, ends, false).await;
    }
}

/// An outbound connection that never started: every send queued on it fails with `error`.
pub(super) fn fail_connect(
    shared: &Shared,
    mut conn: NewConn,
    remote: SocketAddr,
    proto: Proto,
    error: String,
) {
    tracing::debug!(%error, conn = conn.id, "connect failed");
    shared.unregister(conn.id);
    conn.rx.close();
    while let Ok(q) = conn.rx.try_recv() {
        if let Some(token) = q.token {
            shared.send_failed(remote, proto, token, error.clone());
        }
    }
}

async fn connect(remote: SocketAddr, local: Option<SocketAddr>) -> io::Result<TcpStream> {
    let socket = if remote.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Multihomed hosts: leave from the address the peer knows us by.
    if let Some(l) = local.filter(|l| l.is_ipv4() == remote.is_ipv4() && !l.ip().is_unspecified()) {
        socket.bind(SocketAddr::new(l.ip(), 0))?;
    }
    socket.connect(remote).await
}

/// What the reader stopped for.
enum Flow {
    Continue,
    Malformed,
    CoreGone,
}

/// Per-connection state shared by its reader and writer.
struct Conn {
    shared: Arc<Shared>,
    id: ConnId,
    local: SocketAddr,
    remote: SocketAddr,
    proto: Proto,
    /// See [`Ends::client_names`].
    client_names: Arc<[String]>,
    /// Millisecond stamp (since `Shared::epoch`) of the last complete message either way.
    last_activity: AtomicU64,
    /// Set after a framing error: the writer closes after the next message (the answer).
    closing: AtomicBool,
}

impl Conn {
    fn touch(&self) {
        self.last_activity
            .store(self.shared.now_ms(), Ordering::Relaxed);
    }

    fn fail(&self, q: &Queued, error: &str) {
        if let Some(token) = q.token {
            self.shared
                .send_failed(self.remote, self.proto, token, error.to_string());
        }
    }
}

/// Runs a connection over `stream` (a TCP stream, or TLS over one after its handshake) until
/// either side ends it. `inbound`: accepted (it must send a complete message within
/// `first_message_timeout`).
pub(super) async fn run_conn<S>(
    shared: Arc<Shared>,
    conn: NewConn,
    stream: S,
    ends: Ends,
    inbound: bool,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let Ends {
        local,
        remote,
        proto,
        client_names,
    } = ends;
    let NewConn { id, tx, rx, stop } = conn;
    let c = Arc::new(Conn {
        last_activity: AtomicU64::new(shared.now_ms()),
        shared,
        id,
        local,
        remote,
        proto,
        client_names,
        closing: AtomicBool::new(false),
    });
    let (mut rh, wh) = tokio::io::split(stream);
    let mut writer: JoinHandle<()> = tokio::spawn(write_loop(c.clone(), wh, rx, stop.clone()));
    let mut writer_done = false;

    let mut framer = Framer::new(c.shared.limits.max_message_bytes);
    let mut buf = vec![0u8; READ_CHUNK];
    let idle = c.shared.limits.idle_timeout;
    // Only an accepted connection must prove itself: on ours we speak first.
    let first_deadline = inbound.then(|| Instant::now() + c.shared.limits.first_message_timeout);
    let mut got_message = false;
    let reason = loop {
        let last = Duration::from_millis(c.last_activity.load(Ordering::Relaxed));
        let mut deadline = c.shared.epoch + last + idle;
        if let Some(first) = first_deadline.filter(|_| !got_message) {
            deadline = deadline.min(first);
        }
        tokio::select! {
            // Cancel-safe: nothing is consumed unless the read completes.
            r = rh.read(&mut buf) => match r {
                Ok(0) => break "closed by peer",
                Ok(n) => {
                    framer.push(&buf[..n]);
                    let (flow, messages) = deliver(&c, &mut framer, &tx).await;
                    got_message |= messages > 0;
                    match flow {
                        Flow::Continue => {}
                        Flow::Malformed => break "malformed message",
                        Flow::CoreGone => break "event receiver gone",
                    }
                }
                Err(e) => {
                    tracing::debug!(%remote, conn = id, %proto, error = %e, "read error");
                    break "read error";
                }
            },
            _ = &mut writer => {
                writer_done = true;
                break "write side ended";
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                if !got_message && first_deadline.is_some_and(|f| Instant::now() >= f) {
                    Counters::inc(&c.shared.counters.tcp_closed_first_message);
                    break "no complete first message in time";
                }
                let since = c.shared.now_ms().saturating_sub(c.last_activity.load(Ordering::Relaxed));
                if u128::from(since) >= idle.as_millis() {
                    Counters::inc(&c.shared.counters.tcp_closed_idle);
                    break "idle timeout";
                }
            }
        }
    };
    drop(rh);
    drop(tx);
    if c.closing.load(Ordering::Relaxed) && !writer_done {
        tokio::select! {
            _ = &mut writer => writer_done = true,
            () = tokio::time::sleep(MALFORMED_LINGER) => {}
        }
    }
    c.shared.unregister(id);
    stop.notify_one();
    if !writer_done {
        let _ = writer.await;
    }
    tracing::debug!(%remote, conn = id, %proto, reason, "connection closed");
    c.shared.emit(Event::Closed { conn: id, remote }).await;
}

/// Hands every complete message in `framer` to the core (INVITEs past the per-source guard
/// only) and answers keep-alive pings. Also returns how many complete messages there were.
async fn deliver(c: &Conn, framer: &mut Framer, tx: &mpsc::Sender<Queued>) -> (Flow, usize) {
    let counters = &c.shared.counters;
    let inbound = |data| Inbound {
        peer: Peer {
            proto: c.proto,
            local: c.local,
            remote: c.remote,
            conn: Some(c.id),
        },
        data,
        tls_client_names: c.client_names.clone(),
        // The connection's own local address; the interface is not known for TCP.
        arrival: Arrival {
            local: c.local.ip(),
            ifindex: None,
        },
    };
    let mut flow = Flow::Continue;
    let mut messages = 0;
    while let Some(r) = framer.next_message() {
        let ev = match r {
            Ok(data) => {
                messages += 1;
                c.touch();
                if let Some(g) = c.shared.guard.get()
                    && relay_common::guard::is_invite(&data)
                {
                    let (counter, report) = match g.check(c.remote.ip(), Instant::now()) {
                        Verdict::Pass => (None, false),
                        Verdict::RateLimited { report } => {
                            (Some(&counters.tcp_invites_rate_limited), report)
                        }
                        Verdict::SessionCap => (Some(&counters.tcp_invites_session_cap), false),
                    };
                    if let Some(counter) = counter {
                        // Dropped as the kernel drops a UDP INVITE: no answer, no transaction.
                        Counters::inc(counter);
                        if report {
                            let ev = Event::Flooded {
                                source: c.remote.ip(),
                            };
                            if !c.shared.emit(ev).await {
                                return (Flow::CoreGone, messages);
                            }
                        }
                        continue;
                    }
                }
                Counters::inc(&counters.tcp_rx);
                Event::Message(inbound(data))
            }
            Err(error) => {
                Counters::inc(if error == FrameError::TooLarge {
                    &counters.oversized
                } else {
                    &counters.malformed_frames
                });
                tracing::debug!(remote = %c.remote, conn = c.id, %error, "tcp framing error");
                // Before the event, so the core's answer is seen as the last write.
                c.closing.store(true, Ordering::Relaxed);
                flow = Flow::Malformed;
                Event::Malformed {
                    inbound: inbound(framer.take_remainder()),
                    error,
                }
            }
        };
        if !c.shared.emit(ev).await {
            return (Flow::CoreGone, messages);
        }
    }
    let ka = framer.take_keepalives();
    let seen = ka.pings + ka.pongs;
    if seen > 0 {
        counters
            .keepalives
            .fetch_add(seen as u64, Ordering::Relaxed);
    }
    if ka.pings > 0 && !matches!(flow, Flow::Malformed) {
        // RFC 5626 §4.4.1: one CRLF answers one double-CRLF ping. A full queue means the
        // peer is not reading anyway, so losing the pong costs nothing.
        let pong = Bytes::from(b"\r\n".repeat(ka.pings.min(MAX_PONGS)));
        let _ = tx.try_send(Queued {
            data: pong,
            token: None,
        });
    }
    (flow, messages)
}

async fn write_loop<W: AsyncWrite + Unpin>(
    c: Arc<Conn>,
    mut wh: W,
    mut rx: mpsc::Receiver<Queued>,
    stop: Arc<Notify>,
) {
    let mut broken: Option<String> = None;
    loop {
        tokio::select! {
            biased;
            q = rx.recv() => {
                let Some(q) = q else { break };
                if let Err(e) = write(&c, &mut wh, &q).await {
                    c.fail(&q, &e);
                    broken = Some(e);
                    break;
                }
                if c.closing.load(Ordering::Relaxed) && q.token.is_some() {
                    break;
                }
            }
            () = stop.notified() => break,
        }
    }
    // Whatever was queued before the close still goes out (a BYE on shutdown, the answer
    // to a malformed message), unless the connection is already broken.
    rx.close();
    while let Ok(q) = rx.try_recv() {
        if broken.is_none()
            && let Err(e) = write(&c, &mut wh, &q).await
        {
            broken = Some(e);
        }
        if let Some(e) = &broken {
            c.fail(&q, e);
        }
    }
    // FIN (after TLS's close_notify) once everything is written; a peer that stopped
    // reading does not hold the task.
    if broken.is_none() {
        let _ = tokio::time::timeout(WRITE_TIMEOUT, wh.shutdown()).await;
    }
}

async fn write_all<W: AsyncWrite + Unpin>(wh: &mut W, data: &[u8]) -> io::Result<()> {
    wh.write_all(data).await?;
    // TLS buffers records until flushed.
    wh.flush().await
}

async fn write<W: AsyncWrite + Unpin>(c: &Conn, wh: &mut W, q: &Queued) -> Result<(), String> {
    match tokio::time::timeout(WRITE_TIMEOUT, write_all(wh, &q.data)).await {
        Ok(Ok(())) => {
            // Our own pongs are not traffic that keeps a connection open.
            if q.token.is_some() {
                Counters::inc(&c.shared.counters.tcp_tx);
                c.touch();
            }
            Ok(())
        }
        Ok(Err(e)) => Err(format!("write {} {}: {e}", c.proto, c.remote)),
        Err(_) => Err(format!(
            "write {} {}: peer not reading for {WRITE_TIMEOUT:?}",
            c.proto, c.remote
        )),
    }
}
