//! The queue and the one task that sends HEP copies: the event loop hands a message over
//! with [`Hep::received`] or [`Hep::sent`] and never waits; everything that can be slow
//! (resolving the collector, encoding, the socket) happens in the task.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use sipd_core::sip::{Peer, Proto};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::HepConfig;
use super::encode::{Packet, Transport, encode};
use crate::events::capture::call_id_of;
use crate::transport::Outbound;

/// After a send fails (the collector's host answered ICMP unreachable, no route), copies are
/// dropped without trying for this long: a dead collector costs one syscall a second, not one
/// per message.
const DOWN_FOR: Duration = Duration::from_secs(1);
/// How often a collector name that did not resolve is tried again.
const RESOLVE_RETRY: Duration = Duration::from_secs(5);
/// At most one warning per this long about an unreachable or unresolved collector.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// One SIP message as it crossed our sockets, waiting to be sent as HEP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// The transport it travelled over.
    pub proto: Proto,
    /// Who sent it.
    pub src: SocketAddr,
    /// Whom it was for.
    pub dst: SocketAddr,
    /// When it was received or handed to the transports.
    pub time: SystemTime,
    /// The message, byte for byte.
    pub payload: Bytes,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    queue_full: AtomicU64,
    send_error: AtomicU64,
    collector_down: AtomicU64,
    unresolved: AtomicU64,
    too_large: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// HEP copies since start: sent, and dropped by reason (`/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HepCounts {
    /// Packets handed to the kernel for the collector.
    pub sent: u64,
    /// Dropped because the queue to the sender task was full.
    pub queue_full: u64,
    /// Dropped because the send failed (ICMP unreachable from the collector, no route).
    pub send_error: u64,
    /// Dropped without trying, in the second after a failed send.
    pub collector_down: u64,
    /// Dropped because the collector's name did not resolve (yet).
    pub unresolved: u64,
    /// Dropped because the message does not fit in a HEP packet (65535 bytes).
    pub too_large: u64,
}

impl HepCounts {
    /// The drops as (reason, count), in the order `/metrics` lists them.
    pub fn dropped(&self) -> [(&'static str, u64); 5] {
        [
            ("queue_full", self.queue_full),
            ("send_error", self.send_error),
            ("collector_down", self.collector_down),
            ("unresolved", self.unresolved),
            ("too_large", self.too_large),
        ]
    }
}

/// The event loop's end of HEP capture: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Hep {
    tx: mpsc::Sender<Captured>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Hep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hep")
            .field("counts", &self.counts())
            .finish()
    }
}

impl Hep {
    /// Starts the sender task when `[capture] hep` is set (inside a tokio runtime); `None`
    /// when capture is off.
    pub fn start(cfg: &HepConfig) -> Option<Hep> {
        let target = cfg.hep.clone()?;
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let counters = Arc::new(Counters::default());
        let task = Task {
            rx,
            counters: counters.clone(),
            target,
            capture_id: cfg.capture_id,
            key: cfg.password.clone().map(String::into_bytes),
        };
        tracing::info!(collector = %task.target, capture_id = cfg.capture_id, "HEP capture on");
        tokio::spawn(task.run());
        Some(Hep { tx, counters })
    }

    /// Queues a copy, or counts it dropped when the queue is full.
    pub fn capture(&self, c: Captured) {
        match self.tx.try_send(c) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => inc(&self.counters.queue_full),
            // The task only ends when every handle is gone; nothing to count.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// A message received from `peer` on our address `local` (the arrival's, which on a
    /// wildcard socket is the one it was sent to).
    pub fn received(&self, peer: &Peer, local: IpAddr, data: &Bytes, time: SystemTime) {
        self.capture(Captured {
            proto: peer.proto,
            src: peer.remote,
            dst: SocketAddr::new(local, peer.local.port()),
            time,
            payload: data.clone(),
        });
    }

    /// A message handed to the transports. Its source is the local address the core chose
    /// (unspecified when it has none: the kernel picks the address after we capture).
    pub fn sent(&self, out: &Outbound, time: SystemTime) {
        let unspecified = |remote: SocketAddr| {
            let ip = if remote.is_ipv4() {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            };
            SocketAddr::new(ip, 0)
        };
        self.capture(Captured {
            proto: out.proto,
            src: out.local.unwrap_or_else(|| unspecified(out.remote)),
            dst: out.remote,
            time,
            payload: out.data.clone(),
        });
    }

    /// The counters now.
    pub fn counts(&self) -> HepCounts {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HepCounts {
            sent: get(&c.sent),
            queue_full: get(&c.queue_full),
            send_error: get(&c.send_error),
            collector_down: get(&c.collector_down),
            unresolved: get(&c.unresolved),
            too_large: get(&c.too_large),
        }
    }
}

/// HEP's IP protocol for a SIP transport; anything stream-based (TLS included) is TCP.
fn transport_of(proto: Proto) -> Transport {
    match proto {
        Proto::Udp => Transport::Udp,
        _ => Transport::Tcp,
    }
}

struct Task {
    rx: mpsc::Receiver<Captured>,
    counters: Arc<Counters>,
    target: String,
    capture_id: u32,
    key: Option<Vec<u8>>,
}

/// A UDP socket connected to the collector: the kernel then reports its ICMP unreachable
/// as an error on a later send, which is how a dead collector is noticed.
async fn connect(target: &str) -> io::Result<UdpSocket> {
    let addr = tokio::net::lookup_host(target)
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
    let any: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(any).await?;
    sock.connect(addr).await?;
    Ok(sock)
}

impl Task {
    async fn run(mut self) {
        let mut sock: Option<UdpSocket> = None;
        let mut resolve_at = Instant::now();
        let mut down_until: Option<Instant> = None;
        let mut warned: Option<Instant> = None;
        let mut buf = Vec::with_capacity(4096);
        let c = self.counters.clone();
        while let Some(m) = self.rx.recv().await {
            let now = Instant::now();
            let mut warn = |what: &str, e: &dyn std::fmt::Display| {
                if warned.is_none_or(|t| now.duration_since(t) >= WARN_EVERY) {
                    warned = Some(now);
                    tracing::warn!(collector = %self.target, error = %e, "HEP capture: {what}; copies are dropped and counted in sipd_hep_dropped_total");
                }
            };
            if sock.is_none() && now >= resolve_at {
                match connect(&self.target).await {
                    Ok(s) => sock = Some(s),
                    Err(e) => {
                        resolve_at = now + RESOLVE_RETRY;
                        warn("collector not resolved", &e);
                    }
                }
            }
            let Some(s) = &sock else {
                inc(&c.unresolved);
                continue;
            };
            if down_until.is_some_and(|t| now < t) {
                inc(&c.collector_down);
                continue;
            }
            let time = m.time.duration_since(UNIX_EPOCH).unwrap_or_default();
            let packet = Packet {
                transport: transport_of(m.proto),
                src: m.src,
                dst: m.dst,
                time,
                capture_id: self.capture_id,
                auth_key: self.key.as_deref(),
                correlation_id: call_id_of(&m.payload).map(str::as_bytes),
                payload: &m.payload,
            };
            if encode(&packet, &mut buf).is_err() {
                inc(&c.too_large);
                continue;
            }
            match s.send(&buf).await {
                Ok(_) => {
                    inc(&c.sent);
                    down_until = None;
                }
                Err(e) => {
                    inc(&c.send_error);
                    down_until = Some(now + DOWN_FOR);
                    warn("collector unreachable", &e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(hep: &str, queue: usize) -> HepConfig {
        HepConfig {
            hep: Some(hep.into()),
            queue,
            ..HepConfig::default()
        }
    }

    fn msg(to: SocketAddr) -> Captured {
        Captured {
            proto: Proto::Udp,
            src: "127.0.0.1:5060".parse().unwrap(),
            dst: to,
            time: SystemTime::now(),
            payload: Bytes::from_static(b"OPTIONS sip:x SIP/2.0\r\nCall-ID: c1\r\n\r\n"),
        }
    }

    async fn until(hep: &Hep, ok: impl Fn(&HepCounts) -> bool) -> HepCounts {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let n = hep.counts();
            if ok(&n) || Instant::now() > end {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn off_without_a_collector() {
        assert!(Hep::start(&HepConfig::default()).is_none());
    }

    #[tokio::test]
    async fn sends_to_a_live_collector() {
        let collector = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let at = collector.local_addr().unwrap();
        let hep = Hep::start(&cfg(&at.to_string(), 64)).unwrap();
        hep.capture(msg(at));
        let mut buf = [0u8; 2048];
        let n = tokio::time::timeout(Duration::from_secs(20), collector.recv(&mut buf))
            .await
            .expect("a HEP packet")
            .unwrap();
        assert_eq!(&buf[..4], b"HEP3");
        assert!(buf[..n].ends_with(b"c1"), "Call-ID as correlation id last");
        assert_eq!(until(&hep, |c| c.sent == 1).await.sent, 1);
    }

    #[tokio::test]
    async fn a_dead_collector_drops_and_counts() {
        // Bound then closed: nothing listens there now, the kernel answers unreachable.
        let at = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let hep = Hep::start(&cfg(&at.to_string(), 64)).unwrap();
        for _ in 0..50 {
            hep.capture(msg(at));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let n = until(&hep, |c| {
            c.send_error >= 1 && c.sent + c.send_error + c.collector_down == 50
        })
        .await;
        assert!(n.send_error >= 1, "{n:?}");
        assert_eq!(
            n.sent + n.send_error + n.collector_down + n.queue_full,
            50,
            "{n:?}"
        );
    }

    #[test]
    fn a_full_queue_drops_without_waiting() {
        // No runtime turning: the task never drains, the queue fills at its bound.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let hep = rt.block_on(async { Hep::start(&cfg("127.0.0.1:9", 16)).unwrap() });
        let to = "127.0.0.1:9".parse().unwrap();
        for _ in 0..100 {
            hep.capture(msg(to));
        }
        assert_eq!(hep.counts().queue_full, 84);
    }
}
