//! The ng UDP server.
//!
//! Only listed sources are served ([`access`](super::access): loopback by default); anyone
//! else's datagrams are dropped unanswered and counted. Retransmissions are answered from the
//! [`ReplyCache`], keyed by source and cookie and bounded in bytes.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::UdpSocket;

use super::access::{AllowList, Gate};
pub use super::cache::{CACHE_TTL, CacheStats, DEFAULT_CACHE_BYTES, ReplyCache};
use super::engine::Engine;
use super::message::{self, Request, Response};
use crate::cidr::Cidr;
use crate::media::{Interface, MediaBackend};

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The ng socket could not be bound.
    #[error("bind ng socket {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What bind said.
        source: std::io::Error,
    },
    /// The socket failed while serving.
    #[error("ng socket: {0}")]
    Io(#[from] std::io::Error),
}

/// How the server treats its clients.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Who is answered; everyone else is dropped and counted.
    pub allow: AllowList,
    /// The reply cache's bound in bytes.
    pub cache_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            allow: AllowList::loopback(),
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// The server's counters, as `relayd --status` shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NgStats {
    /// The bound address; `None` before binding.
    pub listen: Option<SocketAddr>,
    /// The allowed prefixes.
    pub allow: Vec<Cidr>,
    /// Datagrams from allowed sources (requests and retransmissions).
    pub requests: u64,
    /// Datagrams from unlisted sources, dropped without a reply.
    pub denied: u64,
    /// The most recent unlisted source.
    pub last_denied: Option<IpAddr>,
    /// The reply cache's counters.
    pub cache: CacheStats,
}

/// A live view of a running server's [`NgStats`]; cheap to clone and read from another task.
#[derive(Clone, Debug, Default)]
pub struct NgStatsHandle(Arc<Mutex<NgStats>>);

impl NgStatsHandle {
    /// The counters now.
    pub fn snapshot(&self) -> NgStats {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, gate: &Gate, requests: u64, cache: &ReplyCache) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.requests = requests;
        s.denied = gate.denied();
        s.last_denied = gate.last_denied();
        s.cache = cache.stats();
    }
}

/// How often the engine's time-driven work runs ([`Engine::housekeep`]).
const HOUSEKEEPING_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Handles one datagram: the reply to send, if any. Datagrams without a usable cookie are
/// dropped (there is nothing to address a reply to); the rest always get a reply.
/// The sender's access was checked before; `from` keys the reply cache, so a reply is only
/// ever replayed to the source it was made for.
pub fn handle_datagram<B: MediaBackend>(
    engine: &Mutex<Engine<B>>,
    cache: &mut ReplyCache,
    from: SocketAddr,
    buf: &[u8],
    now: Instant,
) -> Option<Vec<u8>> {
    let sp = buf.iter().position(|&b| b == b' ')?;
    let cookie = &buf[..sp];
    if let Some(reply) = cache.get(from, cookie, now) {
        tracing::debug!(cookie = %String::from_utf8_lossy(cookie), "ng retransmission, cached reply");
        return Some(reply.to_vec());
    }
    let (cookie, value) = match message::parse_datagram(buf) {
        Ok(x) => x,
        Err(message::MessageError::BadCookie | message::MessageError::NoCookie) => return None,
        Err(e) => {
            return Some(message::format_datagram(
                cookie,
                &Response::error(format!("Failed to decode message: {e}")).0,
            ));
        }
    };
    let resp = match Request::from_value(&value) {
        Ok(req) => {
            let mut eng = engine.lock().unwrap_or_else(|e| e.into_inner());
            eng.handle(&req)
        }
        Err(e) => Response::error(e),
    };
    let mut out = message::format_datagram(cookie, &resp.0);
    if out.len() > 65_507 {
        out = message::format_datagram(cookie, &Response::error("Reply too large for UDP").0);
    }
    cache.put(from, cookie, out.clone(), now);
    Some(out)
}

/// A bound ng server; [`Server::run`] serves until shutdown.
pub struct Server<B: MediaBackend> {
    socket: UdpSocket,
    engine: Arc<Mutex<Engine<B>>>,
    config: ServerConfig,
    stats: NgStatsHandle,
}

impl<B: MediaBackend> Server<B> {
    /// Binds with the default [`ServerConfig`]: loopback clients only, a 4 MiB reply cache.
    pub async fn bind(
        listen: SocketAddr,
        engine: Arc<Mutex<Engine<B>>>,
    ) -> Result<Server<B>, ServeError> {
        Server::bind_with(listen, engine, ServerConfig::default()).await
    }

    /// Binds `listen` to serve `engine` with `config`.
    pub async fn bind_with(
        listen: SocketAddr,
        engine: Arc<Mutex<Engine<B>>>,
        config: ServerConfig,
    ) -> Result<Server<B>, ServeError> {
        let socket = UdpSocket::bind(listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: listen,
                source,
            })?;
        let stats = NgStatsHandle::default();
        {
            let mut s = stats.0.lock().unwrap_or_else(|p| p.into_inner());
            s.listen = socket.local_addr().ok();
            s.allow = config.allow.prefixes().to_vec();
            s.cache.max_bytes = config.cache_bytes;
        }
        Ok(Server {
            socket,
            engine,
            config,
            stats,
        })
    }

    /// The server's counters, live while it runs.
    pub fn stats(&self) -> NgStatsHandle {
        self.stats.clone()
    }

    /// The bound address (the port chosen, for `:0`).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Serves requests until `shutdown` resolves; fails only when the socket does.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let allowed: Vec<String> = self
            .config
            .allow
            .prefixes()
            .iter()
            .map(ToString::to_string)
            .collect();
        tracing::info!(
            listen = %self.local_addr()?,
            allow = %allowed.join(","),
            cache_bytes = self.config.cache_bytes,
            "ng control protocol listening"
        );
        let mut gate = Gate::new(self.config.allow.clone());
        let mut cache = ReplyCache::new(self.config.cache_bytes);
        let mut requests = 0u64;
        let mut buf = vec![0u8; 65_536];
        // Delayed deletes must happen on time even when no request comes.
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING_EVERY);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let (n, from) = tokio::select! {
                _ = &mut shutdown => break,
                _ = housekeeping.tick() => {
                    self.engine.lock().unwrap_or_else(|e| e.into_inner()).housekeep();
                    continue;
                }
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    // ICMP errors from earlier replies surface here on Linux; not fatal.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                    Err(e) => return Err(e.into()),
                },
            };
            let now = Instant::now();
            // Checked before anything is parsed: an unlisted source costs one prefix match.
            if !gate.admit(from, now) {
                self.stats.update(&gate, requests, &cache);
                continue;
            }
            requests += 1;
            let reply = handle_datagram(&self.engine, &mut cache, from, &buf[..n], now);
            self.stats.update(&gate, requests, &cache);
            if let Some(reply) = reply
                && let Err(e) = self.socket.send_to(&reply, from).await
            {
                tracing::warn!(%from, error = %e, "ng reply not sent");
            }
        }
        tracing::info!("ng control protocol stopped");
        Ok(())
    }
}

/// Serves the ng protocol on `listen` for `backend` until `shutdown` resolves.
/// `interfaces` are the relay addresses SDP may advertise (the first is the default).
pub async fn serve<B: MediaBackend>(
    listen: SocketAddr,
    backend: Arc<B>,
    interfaces: Vec<Interface>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let engine = Arc::new(Mutex::new(Engine::new(backend, interfaces)));
    Server::bind(listen, engine).await?.run(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::super::client::NgClient;
    use super::super::message::OfferAnswer;
    use super::*;
    use crate::media::MemoryBackend;
    use std::time::Duration;

    fn engine() -> Mutex<Engine<MemoryBackend>> {
        Mutex::new(Engine::new(
            Arc::new(MemoryBackend::new(30000, 30010)),
            vec![Interface::new("x", &["127.0.0.1".parse().unwrap()])],
        ))
    }

    /// The client address the unit tests' datagrams come from.
    const K: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5000);

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

    #[test]
    fn same_cookie_same_reply_once_applied() {
        let e = engine();
        let mut cache = ReplyCache::default();
        let t = Instant::now();
        let req = Request::Offer(OfferAnswer::new("c", "f", SDP)).to_value();
        let dgram = message::format_datagram(b"k1", &req);
        let r1 = handle_datagram(&e, &mut cache, K, &dgram, t).unwrap();
        let r2 = handle_datagram(&e, &mut cache, K, &dgram, t + Duration::from_secs(1)).unwrap();
        assert_eq!(r1, r2);
        assert_eq!(
            e.lock()
                .unwrap()
                .backend()
                .session(1)
                .unwrap()
                .streams
                .len(),
            1
        );
        // A new cookie is a new request; after the TTL the old cookie is too.
        let r3 =
            handle_datagram(&e, &mut cache, K, &message::format_datagram(b"k2", &req), t).unwrap();
        assert!(r3.starts_with(b"k2 "));
        assert_eq!(cache.len(), 2);
        assert!(cache.get(K, b"k1", t + CACHE_TTL).is_none());
    }

    /// Cookies are the client's choice, so two clients reuse each other's. A reply cached for
    /// one must never reach the other: it would leak the call's SDP and relay ports, and the
    /// other's request would silently not be applied.
    #[test]
    fn cached_reply_is_not_replayed_to_another_source() {
        let e = engine();
        let mut cache = ReplyCache::default();
        let t = Instant::now();
        let offer = Request::Offer(OfferAnswer::new("c", "f", SDP)).to_value();
        let r1 = handle_datagram(
            &e,
            &mut cache,
            K,
            &message::format_datagram(b"7", &offer),
            t,
        )
        .unwrap();
        assert!(String::from_utf8_lossy(&r1).contains("m=audio 30"));
        let other = SocketAddr::from(([127, 0, 0, 2], 5000));
        let ping = message::format_datagram(b"7", &Request::Ping.to_value());
        let r2 = handle_datagram(&e, &mut cache, other, &ping, t).unwrap();
        assert_eq!(r2, b"7 d6:result4:ponge".to_vec());
        // Each source's retransmission still gets its own reply.
        let again = handle_datagram(&e, &mut cache, K, &ping, t).unwrap();
        assert_eq!(again, r1);
        assert_eq!(cache.stats().hits, 1);
    }

    /// A server whose allow list leaves out loopback does not answer a loopback client, and
    /// counts the datagrams it dropped.
    #[test]
    fn unlisted_client_gets_silence_counted() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = ServerConfig {
            allow: AllowList::new(vec!["192.0.2.0/24".parse().unwrap()]),
            cache_bytes: 1 << 20,
        };
        let server = rt
            .block_on(Server::bind_with(
                "127.0.0.1:0".parse().unwrap(),
                Arc::new(engine()),
                config,
            ))
            .unwrap();
        let addr = server.local_addr().unwrap();
        let stats = server.stats();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = std::thread::spawn(move || {
            rt.block_on(server.run(async {
                let _ = rx.await;
            }))
        });
        let mut client = NgClient::new(addr).unwrap();
        client.timeout = Duration::from_millis(200);
        client.tries = 3;
        let err = client.ping().unwrap_err();
        assert!(
            matches!(err, super::super::client::ClientError::Timeout { .. }),
            "{err}"
        );
        tx.send(()).unwrap();
        handle.join().unwrap().unwrap();
        let s = stats.snapshot();
        assert_eq!((s.requests, s.denied), (0, 3), "{s:?}");
        assert_eq!(s.last_denied, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(s.cache.max_bytes, 1 << 20);
    }

    #[test]
    fn garbage_gets_error_or_silence() {
        let e = engine();
        let mut cache = ReplyCache::default();
        let t = Instant::now();
        assert!(handle_datagram(&e, &mut cache, K, b"nospace", t).is_none());
        let r = handle_datagram(&e, &mut cache, K, b"c1 d7:command", t).unwrap();
        assert!(
            r.starts_with(b"c1 d6:result5:error12:error-reason"),
            "{}",
            String::from_utf8_lossy(&r)
        );
        let r = handle_datagram(&e, &mut cache, K, b"c2 d7:command3:fooe", t).unwrap();
        assert!(String::from_utf8_lossy(&r).contains("unknown command"));
    }

    #[test]
    fn udp_round_trip_with_client() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let engine = Arc::new(engine());
        let server = rt
            .block_on(Server::bind("127.0.0.1:0".parse().unwrap(), engine))
            .unwrap();
        let addr = server.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = std::thread::spawn(move || {
            rt.block_on(server.run(async {
                let _ = rx.await;
            }))
        });
        let client = NgClient::new(addr).unwrap();
        client.ping().unwrap();
        let sdp = client.offer(&OfferAnswer::new("c", "f", SDP)).unwrap();
        assert!(sdp.contains("m=audio 30002 "), "{sdp}");
        let mut ans = OfferAnswer::new("c", "f", &SDP.replace("4000", "5000"));
        ans.to_tag = Some("t".into());
        let sdp = client.answer(&ans).unwrap();
        assert!(sdp.contains("m=audio 30000 "), "{sdp}");
        assert_eq!(client.list().unwrap(), vec!["c".to_string()]);
        assert!(client.query("c").unwrap().get("tags").is_some());
        client.delete("c", None).unwrap();
        // As rtpengine: deleting a call no longer held is `ok` with a warning.
        let again = client.delete("c", None).unwrap();
        assert!(again.get("warning").is_some(), "{again:?}");
        tx.send(()).unwrap();
        handle.join().unwrap().unwrap();
    }

    /// A delayed delete happens on time with no further request to prompt it.
    #[test]
    fn delayed_delete_runs_without_requests() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let engine = Arc::new(engine());
        let server = rt
            .block_on(Server::bind("127.0.0.1:0".parse().unwrap(), engine.clone()))
            .unwrap();
        let addr = server.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = std::thread::spawn(move || {
            rt.block_on(server.run(async {
                let _ = rx.await;
            }))
        });
        let client = NgClient::new(addr).unwrap();
        client.offer(&OfferAnswer::new("c", "f", SDP)).unwrap();
        client
            .request_ok(&super::super::message::Request::Delete(
                super::super::message::Delete {
                    call_id: "c".into(),
                    from_tag: None,
                    to_tag: None,
                    delete_delay: Some(1),
                },
            ))
            .unwrap();
        let calls = || engine.lock().unwrap().call_count();
        assert_eq!(calls(), 1, "kept during the delay");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while calls() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(calls(), 0, "removed when due, with no request since");
        tx.send(()).unwrap();
        handle.join().unwrap().unwrap();
    }
}
