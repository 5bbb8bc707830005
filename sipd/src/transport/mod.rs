//! SIP transports: UDP sockets, TCP and TLS listeners and connections, stream framing.
//!
//! Everything arrives on one event channel ([`Event`]) and leaves through
//! [`Transports::send`], which never blocks: the call core runs its state machines without
//! awaiting sockets, and a send that cannot happen comes back as [`Event::SendFailed`] so a
//! transaction can fail over at once instead of waiting for its timer.
//!
//! Userspace data-plane firewall: the [`Filter`] sees every UDP datagram and every accepted
//! TCP connection before anything is parsed.

mod guard;
mod pktinfo;
mod tcp;
mod tls;
mod udp;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use thiserror::Error;
use tokio::net::{TcpListener, UdpSocket};
use tokio::runtime::Handle;
use tokio::sync::{Notify, mpsc};
use tokio::task::AbortHandle;

use crate::config::SipConfig;

pub use guard::{SessionLookup, TcpGuard};
pub use tls::{TlsNames, TlsSettings};

// One vocabulary from the socket to the call core: the core's peer and transport types.
pub use sipd_core::sip::framing::{FrameError, Framer, KeepAlives};
pub use sipd_core::sip::{ConnId, Peer, Proto, Transmit};

/// Events waiting for the core. Large enough to absorb a burst while the core is busy;
/// beyond it UDP drops (the peer retransmits) rather than letting the socket queue grow.
const EVENT_QUEUE: usize = 8192;
/// Messages queued on one TCP connection before sends to it fail.
const CONN_QUEUE: usize = 1024;
/// SO_RCVBUF/SO_SNDBUF asked for: a signalling burst (a carrier re-sending after an outage)
/// must not overflow the default ~200 KiB while the core catches up. The kernel caps it at
/// net.core.rmem_max/wmem_max.
const SOCKET_BUFFER: usize = 4 << 20;

/// The bounds every transport keeps: message size, TCP connection counts and timeouts (from
/// `[sip]` in sbc.toml) and the descriptor ceiling (from the open-file limit). Fixed at bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Larger messages are reported as [`FrameError::TooLarge`].
    pub max_message_bytes: usize,
    /// Accepted (inbound) TCP connections open at once; more are refused. Connections we
    /// open ourselves do not count, so a flood of inbound connections cannot stop calls
    /// from reaching vendors.
    pub max_connections: usize,
    /// Accepted TCP connections open at once from one IP address.
    pub max_per_source: usize,
    /// An accepted connection must deliver its first complete message within this.
    pub first_message_timeout: Duration,
    /// A TCP connection with no complete message either way for this long is closed: bytes
    /// that do not finish a message (a slow drip, keep-alive CRLFs) do not reset it.
    pub idle_timeout: Duration,
    /// An outbound TCP connect not established within this fails the send
    /// ([`Event::SendFailed`]).
    pub connect_timeout: Duration,
    /// Accepted connections whose descriptor number is at or above this are refused: the
    /// kernel hands out the lowest free number, so such a descriptor means fewer than the
    /// reserve are left below the open-file limit (see [`crate::server::fds`]).
    pub fd_ceiling: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: SipConfig::default().max_message_bytes,
            max_connections: 4096,
            max_per_source: 64,
            first_message_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(3),
            fd_ceiling: None,
        }
    }
}

impl From<&SipConfig> for Limits {
    fn from(sip: &SipConfig) -> Self {
        Limits {
            max_message_bytes: sip.max_message_bytes,
            max_connections: sip.tcp_max_connections,
            max_per_source: sip.tcp_max_per_source,
            first_message_timeout: Duration::from_secs(sip.tcp_first_message_secs),
            idle_timeout: Duration::from_secs(sip.tcp_idle_secs),
            ..Limits::default()
        }
    }
}

/// Who may talk to us: called per UDP datagram and per accepted TCP connection with
/// (remote, local, proto); false = dropped and counted in `filtered`.
pub type Filter = Arc<dyn Fn(SocketAddr, SocketAddr, Proto) -> bool + Send + Sync>;

/// One message or malformed input off the wire: who sent it (and on which of our sockets or
/// connections) and the bytes. For UDP `peer.local` is the bound address (so `0.0.0.0:5060`
/// on a wildcard socket); for TCP the connection's own local address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// Who sent it, on which transport, socket and (TCP) connection.
    pub peer: Peer,
    /// The bytes: one whole message, or what was read of a malformed one.
    pub data: Bytes,
    /// The DNS names (SAN) of the client certificate the TLS connection it came on
    /// presented, verified against `[sip] tls_client_roots`; empty: none, or not TLS.
    pub tls_client_names: Arc<[String]>,
    /// Where it arrived, for the firewall to know whether XDP saw it.
    pub arrival: Arrival,
}

/// Where a message arrived: the local address it was sent to and, when known, the interface.
/// On a wildcard UDP socket both come from the kernel per datagram (`IP_PKTINFO`,
/// `IPV6_RECVPKTINFO`); on a socket bound to one address it is that address; for TCP the
/// connection's local address, interface unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Our address the message was sent to.
    pub local: IpAddr,
    /// The interface it came in on (`None`: unknown).
    pub ifindex: Option<u32>,
}

/// What the transports tell the event loop, in arrival order, on the one event channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Exactly one SIP message: a UDP datagram, or one framed TCP message with its body.
    Message(Inbound),
    /// A framing-level problem. `data` holds what was read (at most `max_message_bytes`) so
    /// the core can try to answer 400/513. A TCP connection stops reading and is closed
    /// right after the next message written to it (the answer), or after a short linger.
    Malformed {
        /// Who sent it and what was read.
        inbound: Inbound,
        /// What is wrong with the framing (too large, bad Content-Length, ...).
        error: FrameError,
    },
    /// A send that could not happen (TCP connect refused or timed out, write failed, no
    /// socket for the address family, …). `token` is the one given in [`Outbound`].
    SendFailed {
        /// Where the message was going.
        remote: SocketAddr,
        /// Over which transport.
        proto: Proto,
        /// The caller's token from [`Outbound::token`].
        token: u64,
        /// Why, for the log.
        error: String,
    },
    /// A TCP connection ended (either side, idle, error, or after Malformed).
    Closed {
        /// The connection that ended; its id is not reused.
        conn: ConnId,
        /// Its peer.
        remote: SocketAddr,
    },
    /// `source` went over the per-source INVITE rate over TCP (reported at most once a
    /// second per source): the IDS counts it as the kernel guard's UDP flood events.
    Flooded {
        /// The offending address.
        source: std::net::IpAddr,
    },
}

/// A message to send, handed to [`Transports::send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// UDP or TCP.
    pub proto: Proto,
    /// Where to.
    pub remote: SocketAddr,
    /// UDP: send from the socket bound to this address (None, or no such socket: the first
    /// socket of the remote's family). TCP: a new connection binds this IP (port ignored).
    pub local: Option<SocketAddr>,
    /// TCP: use this connection if still open; else any open connection to `remote`; else a
    /// new one.
    pub conn: Option<ConnId>,
    /// Echoed in [`Event::SendFailed`].
    pub token: u64,
    /// One whole SIP message.
    pub data: Bytes,
}

impl From<Transmit> for Outbound {
    /// What the core asks to send: answered from the socket or connection it came in on.
    fn from(t: Transmit) -> Outbound {
        Outbound {
            proto: t.peer.proto,
            remote: t.peer.remote,
            local: Some(t.peer.local),
            conn: t.peer.conn,
            token: t.token,
            data: t.data.into(),
        }
    }
}

/// What to add to a bind error refused for lack of privilege: the capability that allows it
/// (a non-root sipd, as the systemd unit runs it, binds ports below 1024 only with it).
pub fn bind_hint(addr: SocketAddr, error: &io::Error) -> &'static str {
    if error.kind() == io::ErrorKind::PermissionDenied && addr.port() < 1024 {
        " (a port below 1024 needs CAP_NET_BIND_SERVICE: grant it, e.g. systemd's \
         AmbientCapabilities=, or run as root)"
    } else {
        ""
    }
}

/// Why the transports could not start; sipd refuses to run without its SIP sockets.
#[derive(Debug, Error)]
pub enum TransportError {
    /// A configured SIP address could not be bound (in use, not local, no permission).
    #[error("bind {proto} {addr}: {error}{}", bind_hint(*addr, error))]
    Bind {
        /// UDP or TCP.
        proto: Proto,
        /// The address from the configuration.
        addr: SocketAddr,
        /// What the kernel said.
        error: io::Error,
    },
}

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Counters since bind (a snapshot; each field is read atomically on its own).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        pub struct TransportStats {
            $($(#[$doc])* pub $name: u64,)*
            /// TCP connections open now (both directions).
            pub tcp_open: u64,
        }

        #[derive(Default)]
        struct Counters {
            $($name: AtomicU64,)*
        }

        impl Counters {
            fn snapshot(&self, tcp_open: u64) -> TransportStats {
                TransportStats {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                    tcp_open,
                }
            }
        }
    };
}

counters! {
    /// Datagrams delivered (messages and Malformed), keep-alives and filtered ones excluded.
    udp_rx,
    /// Datagrams handed to the kernel.
    udp_tx,
    /// Framed TCP messages delivered.
    tcp_rx,
    /// Messages written on TCP connections (keep-alive pongs excluded).
    tcp_tx,
    /// Inbound TCP connections accepted (past the limits and the filter).
    tcp_accepted,
    /// Outbound TCP connections established (TLS ones included, before their handshake).
    tcp_connected,
    /// Inbound TLS handshakes completed.
    tls_handshakes,
    /// Inbound connections closed for not finishing the TLS handshake in time.
    tls_handshake_timeouts,
    /// Inbound TLS handshakes that failed (not TLS, no common version or suite, a client
    /// certificate refused).
    tls_handshake_failures,
    /// Outbound TLS handshakes completed (the upstream's certificate verified).
    tls_connected,
    /// Outbound TLS connections given up: the upstream's certificate did not verify (unknown
    /// CA, wrong name, expired) or the handshake failed or took too long.
    tls_upstream_refused,
    /// Inbound TCP connections refused at `max_connections`.
    tcp_refused,
    /// Inbound TCP connections refused at `max_per_source`.
    tcp_refused_per_source,
    /// Inbound TCP connections refused because they would eat into the descriptor reserve.
    tcp_refused_fd_reserve,
    /// accept() failures (EMFILE, ENFILE, ENOBUFS, ...).
    tcp_accept_errors,
    /// Connections closed for sending no complete first message in time.
    tcp_closed_first_message,
    /// Connections closed after `idle_timeout` without a complete message.
    tcp_closed_idle,
    /// INVITEs over TCP dropped by the per-source calls-per-second limit.
    tcp_invites_rate_limited,
    /// INVITEs over TCP dropped at the per-source session cap.
    tcp_invites_session_cap,
    /// Datagrams and connections the filter refused.
    filtered,
    /// Messages over `max_message_bytes`, either transport.
    oversized,
    /// TCP framing errors other than size: missing or bad Content-Length.
    malformed_frames,
    /// Sends that failed or were dropped (UDP socket buffer full included).
    send_errors,
    /// RFC 5626 CRLF keep-alives seen (UDP datagrams of only CRLFs, TCP pings and pongs).
    keepalives,
    /// Events dropped because the core's queue was full (UDP only; TCP waits).
    events_dropped,
}

impl Counters {
    fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a connection's writer task is asked to write.
#[derive(Debug)]
struct Queued {
    data: Bytes,
    /// None for our own keep-alive pongs: nobody to tell when they fail.
    token: Option<u64>,
}

struct ConnHandle {
    remote: SocketAddr,
    /// TCP or TLS: a send goes only on a connection of its own transport.
    proto: Proto,
    tx: mpsc::Sender<Queued>,
    /// Tells the writer to flush what is queued and close.
    stop: Arc<Notify>,
    inbound: bool,
}

/// A freshly registered connection, for the task that will run it.
struct NewConn {
    id: ConnId,
    tx: mpsc::Sender<Queued>,
    rx: mpsc::Receiver<Queued>,
    stop: Arc<Notify>,
}

#[derive(Default)]
struct ConnTable {
    by_id: HashMap<ConnId, ConnHandle>,
    /// Newest last, so a send by address uses the most recent connection.
    by_remote: HashMap<SocketAddr, Vec<ConnId>>,
    inbound: usize,
    /// Inbound connections open per IP address (for `max_per_source`).
    inbound_by_ip: HashMap<IpAddr, usize>,
}

/// Why an inbound connection was not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    Total,
    PerSource,
}

/// State shared by the handle and every task.
struct Shared {
    limits: Limits,
    filter: Option<Filter>,
    events: mpsc::Sender<Event>,
    counters: Counters,
    conns: Mutex<ConnTable>,
    next_conn: AtomicU64,
    /// `send` may be called from outside the runtime (a blocking thread); it spawns here.
    runtime: Handle,
    /// Origin of the millisecond activity stamps of idle timeouts.
    epoch: Instant,
    /// Per-source INVITE rate and session cap over TCP (set once the firewall is up).
    guard: std::sync::OnceLock<TcpGuard>,
    /// The firewall's check of each accepted TCP connection (set once the firewall is up).
    conn_filter: std::sync::OnceLock<Filter>,
    /// SIP over TLS, when configured.
    tls: Option<TlsSettings>,
}

impl Shared {
    fn allowed(&self, remote: SocketAddr, local: SocketAddr, proto: Proto) -> bool {
        let ok = self.filter.as_ref().is_none_or(|f| f(remote, local, proto))
            && (!proto.is_reliable()
                || self
                    .conn_filter
                    .get()
                    .is_none_or(|f| f(remote, local, proto)));
        if !ok {
            Counters::inc(&self.counters.filtered);
        }
        ok
    }

    /// For socket loops that must not stall: drops (counted) when the core is behind.
    /// False when the core has gone away.
    fn emit_now(&self, ev: Event) -> bool {
        match self.events.try_send(ev) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(ev)) => {
                Counters::inc(&self.counters.events_dropped);
                // Debug, not warn: under a flood this would be one line per datagram; the
                // counter is what an operator watches.
                tracing::debug!(?ev, "transport event queue full, dropped");
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// For connection tasks: waiting only stalls that one peer, and TCP gives no
    /// retransmission to recover a dropped message.
    async fn emit(&self, ev: Event) -> bool {
        self.events.send(ev).await.is_ok()
    }

    fn send_failed(&self, remote: SocketAddr, proto: Proto, token: u64, error: String) {
        Counters::inc(&self.counters.send_errors);
        tracing::debug!(%remote, %proto, token, %error, "send failed");
        self.emit_now(Event::SendFailed {
            remote,
            proto,
            token,
            error,
        });
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn table(&self) -> MutexGuard<'_, ConnTable> {
        // A panic elsewhere while holding the lock leaves the table consistent enough
        // (every update is a single insert/remove), so keep serving.
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an accepted connection, unless it would exceed `max_connections` or
    /// `max_per_source` (TCP and TLS count together).
    fn register_inbound(&self, remote: SocketAddr, proto: Proto) -> Result<NewConn, Refused> {
        let mut t = self.table();
        if t.inbound >= self.limits.max_connections {
            return Err(Refused::Total);
        }
        if t.inbound_by_ip.get(&remote.ip()).copied().unwrap_or(0) >= self.limits.max_per_source {
            return Err(Refused::PerSource);
        }
        self.register_locked(&mut t, remote, proto, true)
            .ok_or(Refused::Total)
    }

    /// Adds a connection; None when an inbound one would exceed `max_connections`.
    fn register_locked(
        &self,
        t: &mut ConnTable,
        remote: SocketAddr,
        proto: Proto,
        inbound: bool,
    ) -> Option<NewConn> {
        if inbound && t.inbound >= self.limits.max_connections {
            return None;
        }
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(CONN_QUEUE);
        let stop = Arc::new(Notify::new());
        t.by_id.insert(
            id,
            ConnHandle {
                remote,
                proto,
                tx: tx.clone(),
                stop: stop.clone(),
                inbound,
            },
        );
        t.by_remote.entry(remote).or_default().push(id);
        if inbound {
            t.inbound += 1;
            *t.inbound_by_ip.entry(remote.ip()).or_default() += 1;
        }
        Some(NewConn { id, tx, rx, stop })
    }

    fn unregister(&self, id: ConnId) {
        let mut t = self.table();
        let Some(h) = t.by_id.remove(&id) else {
            return;
        };
        if h.inbound {
            t.inbound -= 1;
            let ip = h.remote.ip();
            if let Some(n) = t.inbound_by_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    t.inbound_by_ip.remove(&ip);
                }
            }
        }
        if let Some(ids) = t.by_remote.get_mut(&h.remote) {
            ids.retain(|&i| i != id);
            if ids.is_empty() {
                t.by_remote.remove(&h.remote);
            }
        }
    }
}

struct UdpEndpoint {
    local: SocketAddr,
    /// A dup of the receive loop's socket, sent on directly: tokio's `try_send_to` reports
    /// WouldBlock until its reactor has seen the socket writable, which would drop sends
    /// made right after bind or while the reactor is busy. The fd is non-blocking, so this
    /// only ever returns WouldBlock when the kernel buffer really is full.
    sender: std::net::UdpSocket,
}

struct Inner {
    shared: Arc<Shared>,
    udp: Vec<UdpEndpoint>,
    tcp: Vec<SocketAddr>,
    tls: Vec<SocketAddr>,
    tasks: Vec<AbortHandle>,
}

/// Cheap, cloneable handle to the bound transports.
#[derive(Clone)]
pub struct Transports {
    inner: Arc<Inner>,
}

impl fmt::Debug for Transports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transports")
            .field("udp", &self.udp_addrs())
            .field("tcp", &self.tcp_addrs())
            .field("tls", &self.tls_addrs())
            .finish_non_exhaustive()
    }
}

impl Transports {
    /// Binds every address (port 0 picks a free one) and starts the receive tasks. Must be
    /// called inside a tokio runtime. Nothing is started unless everything binds.
    pub async fn bind(
        udp: &[SocketAddr],
        tcp: &[SocketAddr],
        limits: Limits,
        filter: Option<Filter>,
    ) -> Result<(Transports, mpsc::Receiver<Event>), TransportError> {
        Self::bind_with_tls(udp, tcp, &[], None, limits, filter).await
    }

    /// [`Transports::bind`] plus SIP over TLS: listeners on `tls_listen` and outbound TLS
    /// connections, both with `tls` (without it, `tls_listen` must be empty and TLS sends
    /// fail).
    pub async fn bind_with_tls(
        udp: &[SocketAddr],
        tcp: &[SocketAddr],
        tls_listen: &[SocketAddr],
        tls: Option<TlsSettings>,
        limits: Limits,
        filter: Option<Filter>,
    ) -> Result<(Transports, mpsc::Receiver<Event>), TransportError> {
        let mut udp_socks = Vec::with_capacity(udp.len());
        for &addr in udp {
            let bind_err = |error| TransportError::Bind {
                proto: Proto::Udp,
                addr,
                error,
            };
            let std_socket = bind_udp(addr).map_err(bind_err)?;
            std_socket.set_nonblocking(true).map_err(bind_err)?;
            set_buffers(&std_socket, addr, Proto::Udp);
            let local = std_socket.local_addr().map_err(bind_err)?;
            // A wildcard socket receives on every address: ask which one, per datagram.
            let pktinfo = local.ip().is_unspecified()
                && match pktinfo::enable(&std_socket, local.is_ipv6()) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(%local, error = %e, "no packet info on a wildcard SIP socket: the firewall judges its datagrams by the bound address");
                        false
                    }
                };
            let sender = std_socket.try_clone().map_err(bind_err)?;
            let socket = UdpSocket::from_std(std_socket).map_err(bind_err)?;
            udp_socks.push((UdpEndpoint { local, sender }, socket, pktinfo));
        }
        let mut listeners = Vec::with_capacity(tcp.len() + tls_listen.len());
        let streams = tcp
            .iter()
            .map(|a| (*a, Proto::Tcp))
            .chain(tls_listen.iter().map(|a| (*a, Proto::Tls)));
        for (addr, proto) in streams {
            let bind_err = |error| TransportError::Bind { proto, addr, error };
            let listener = bind_tcp(addr)
                .and_then(TcpListener::from_std)
                .map_err(bind_err)?;
            set_buffers(&listener, addr, proto);
            let local = listener.local_addr().map_err(bind_err)?;
            listeners.push((local, proto, listener));
        }

        let (events, rx) = mpsc::channel(EVENT_QUEUE);
        let shared = Arc::new(Shared {
            limits,
            filter,
            events,
            counters: Counters::default(),
            conns: Mutex::new(ConnTable::default()),
            next_conn: AtomicU64::new(1),
            runtime: Handle::current(),
            epoch: Instant::now(),
            guard: std::sync::OnceLock::new(),
            conn_filter: std::sync::OnceLock::new(),
            tls,
        });
        let mut tasks = Vec::new();
        let mut udp_eps = Vec::with_capacity(udp_socks.len());
        for (ep, socket, pktinfo) in udp_socks {
            tracing::info!(local = %ep.local, "SIP listening on udp");
            let task = udp::recv_loop(shared.clone(), socket, ep.local, pktinfo);
            tasks.push(tokio::spawn(task).abort_handle());
            udp_eps.push(ep);
        }
        let mut tcp_addrs = Vec::with_capacity(listeners.len());
        let mut tls_addrs = Vec::new();
        for (local, proto, listener) in listeners {
            tracing::info!(%local, "SIP listening on {proto}");
            let acceptor = if proto == Proto::Tls {
                tls_addrs.push(local);
                let Some(t) = &shared.tls else {
                    // A listener without a certificate could only refuse every handshake.
                    tracing::error!(%local, "SIP over TLS listen address without TLS settings; not listening");
                    continue;
                };
                Some(t.acceptor.clone())
            } else {
                tcp_addrs.push(local);
                None
            };
            let task = tcp::accept_loop(shared.clone(), listener, local, acceptor);
            tasks.push(tokio::spawn(task).abort_handle());
        }
        let inner = Inner {
            shared,
            udp: udp_eps,
            tcp: tcp_addrs,
            tls: tls_addrs,
            tasks,
        };
        Ok((
            Transports {
                inner: Arc::new(inner),
            },
            rx,
        ))
    }

    /// Never blocks. UDP is sent at once (a full socket buffer drops the datagram, counted:
    /// the transaction layer retransmits); TCP and TLS are queued on a connection, opened if
    /// needed. Failures come back as [`Event::SendFailed`].
    pub fn send(&self, out: Outbound) {
        match out.proto {
            Proto::Udp => self.send_udp(out),
            Proto::Tcp | Proto::Tls => tcp::send(&self.inner.shared, out),
        }
    }

    fn send_udp(&self, out: Outbound) {
        let shared = &self.inner.shared;
        let Some(ep) = self.udp_endpoint(out.local, out.remote) else {
            let error = format!("no udp socket for {}", family(out.remote));
            shared.send_failed(out.remote, Proto::Udp, out.token, error);
            return;
        };
        match ep.sender.send_to(&out.data, out.remote) {
            Ok(_) => Counters::inc(&shared.counters.udp_tx),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                Counters::inc(&shared.counters.send_errors);
                tracing::debug!(remote = %out.remote, "udp send buffer full, datagram dropped");
            }
            Err(e) => {
                let error = format!("udp {} -> {}: {e}", ep.local, out.remote);
                shared.send_failed(out.remote, Proto::Udp, out.token, error);
            }
        }
    }

    fn udp_endpoint(&self, local: Option<SocketAddr>, remote: SocketAddr) -> Option<&UdpEndpoint> {
        let eps = &self.inner.udp;
        local
            .and_then(|l| eps.iter().find(|ep| ep.local == l))
            .or_else(|| eps.iter().find(|ep| ep.local.is_ipv4() == remote.is_ipv4()))
    }

    /// UDP addresses actually bound (port 0 resolved), in the order given to `bind`.
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.inner.udp.iter().map(|ep| ep.local).collect()
    }

    /// Applies the per-source INVITE rate and session cap to SIP over TCP, as the kernel
    /// guard does for UDP. Set once; later calls are ignored.
    pub fn set_tcp_guard(&self, guard: TcpGuard) {
        let _ = self.inner.shared.guard.set(guard);
    }

    /// Checks every TCP connection accepted from now on with `filter` (remote, local): one it
    /// refuses is closed before anything is read, counted in `filtered`. Set once; later
    /// calls are ignored.
    pub fn set_tcp_filter(&self, filter: Filter) {
        let _ = self.inner.shared.conn_filter.set(filter);
    }

    /// TCP listening addresses actually bound (port 0 resolved), in the order given to `bind`.
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.inner.tcp.clone()
    }

    /// TLS listening addresses actually bound (port 0 resolved), in the order given.
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.inner.tls.clone()
    }

    /// The counters now, with the TCP connections open (for `/metrics` and the status).
    pub fn stats(&self) -> TransportStats {
        let shared = &self.inner.shared;
        let open = shared.table().by_id.len() as u64;
        shared.counters.snapshot(open)
    }

    /// Stops receiving (sockets and listeners) and closes every TCP connection after
    /// writing what is already queued (BYEs sent on the way out), each reported by
    /// [`Event::Closed`]. UDP sends keep working until the last handle is dropped.
    pub fn shutdown(&self) {
        for t in &self.inner.tasks {
            t.abort();
        }
        for h in self.inner.shared.table().by_id.values() {
            h.stop.notify_one();
        }
    }
}

fn family(addr: SocketAddr) -> &'static str {
    if addr.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// Best effort: a smaller buffer only costs drops under bursts, so failing is not fatal.
fn set_buffers(sock: &impl std::os::fd::AsRawFd, addr: SocketAddr, proto: Proto) {
    let fd = sock.as_raw_fd();
    let size = libc::c_int::try_from(SOCKET_BUFFER).unwrap_or(libc::c_int::MAX);
    for (opt, name) in [
        (libc::SO_RCVBUF, "SO_RCVBUF"),
        (libc::SO_SNDBUF, "SO_SNDBUF"),
    ] {
        // SAFETY: `fd` is an open socket owned by `sock` for the duration of the call, and
        // the option value is a c_int of the length passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                std::ptr::from_ref(&size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            tracing::warn!(%proto, %addr, option = name, error = %e, "cannot set socket buffer");
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_tls;

/// An IPv6 socket sees only IPv6 (IPV6_V6ONLY): `[::]:5060` and `0.0.0.0:5060` can then be
/// listened on together, and an IPv4 peer is always an IPv4 address, never `::ffff:a.b.c.d`.
fn socket_for(addr: SocketAddr, ty: socket2::Type) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), ty, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = socket_for(addr, socket2::Type::DGRAM)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket_for(addr, socket2::Type::STREAM)?;
    // As std and tokio do: a restart need not wait out TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}
