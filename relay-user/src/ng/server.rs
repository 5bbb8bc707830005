//! The ng UDP server.
//!
//! Retransmissions: a client that gets no reply sends the same datagram again, same cookie.
//! Like rtpengine we answer a repeated cookie from a cache with the reply already sent, so an
//! offer is never applied twice. Entries live [`CACHE_TTL`]; the cache is bounded.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::engine::Engine;
use super::message::{self, Request, Response};
use crate::media::{Interface, MediaBackend};

/// How long a reply is replayed for its cookie. Kamailio retries within a few seconds.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// Most cached replies; the oldest go first beyond it.
pub const CACHE_MAX: usize = 65_536;

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("bind ng socket {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("ng socket: {0}")]
    Io(#[from] std::io::Error),
}

/// Replies by cookie, oldest first for expiry.
#[derive(Default)]
pub struct ReplyCache {
    map: HashMap<Vec<u8>, Vec<u8>>,
    order: VecDeque<(Instant, Vec<u8>)>,
}

impl ReplyCache {
    pub fn get(&mut self, cookie: &[u8], now: Instant) -> Option<&[u8]> {
        self.expire(now);
        self.map.get(cookie).map(Vec::as_slice)
    }

    pub fn put(&mut self, cookie: &[u8], reply: Vec<u8>, now: Instant) {
        self.expire(now);
        while self.map.len() >= CACHE_MAX {
            match self.order.pop_front() {
                Some((_, c)) => {
                    self.map.remove(&c);
                }
                None => break,
            }
        }
        if self.map.insert(cookie.to_vec(), reply).is_none() {
            self.order.push_back((now, cookie.to_vec()));
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((t, _)) = self.order.front() {
            if now.duration_since(*t) < CACHE_TTL {
                break;
            }
            let (_, c) = self.order.pop_front().expect("front exists");
            self.map.remove(&c);
        }
    }
}

/// Handles one datagram: the reply to send, if any. Datagrams without a usable cookie are
/// dropped (there is nothing to address a reply to); the rest always get a reply.
pub fn handle_datagram<B: MediaBackend>(
    engine: &Mutex<Engine<B>>,
    cache: &mut ReplyCache,
    buf: &[u8],
    now: Instant,
) -> Option<Vec<u8>> {
    let sp = buf.iter().position(|&b| b == b' ')?;
    let cookie = &buf[..sp];
    if let Some(reply) = cache.get(cookie, now) {
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
    cache.put(cookie, out.clone(), now);
    Some(out)
}

/// A bound ng server; [`Server::run`] serves until shutdown.
pub struct Server<B: MediaBackend> {
    socket: UdpSocket,
    engine: Arc<Mutex<Engine<B>>>,
}

impl<B: MediaBackend> Server<B> {
    pub async fn bind(
        listen: SocketAddr,
        engine: Arc<Mutex<Engine<B>>>,
    ) -> Result<Server<B>, ServeError> {
        let socket = UdpSocket::bind(listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: listen,
                source,
            })?;
        Ok(Server { socket, engine })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        tracing::info!(listen = %self.local_addr()?, "ng control protocol listening");
        let mut cache = ReplyCache::default();
        let mut buf = vec![0u8; 65_536];
        tokio::pin!(shutdown);
        loop {
            let (n, from) = tokio::select! {
                _ = &mut shutdown => break,
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    // ICMP errors from earlier replies surface here on Linux; not fatal.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                    Err(e) => return Err(e.into()),
                },
            };
            if let Some(reply) =
                handle_datagram(&self.engine, &mut cache, &buf[..n], Instant::now())
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

    fn engine() -> Mutex<Engine<MemoryBackend>> {
        Mutex::new(Engine::new(
            Arc::new(MemoryBackend::new(30000, 30010)),
            vec![Interface::new("x", &["127.0.0.1".parse().unwrap()])],
        ))
    }

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

    #[test]
    fn same_cookie_same_reply_once_applied() {
        let e = engine();
        let mut cache = ReplyCache::default();
        let t = Instant::now();
        let req = Request::Offer(OfferAnswer::new("c", "f", SDP)).to_value();
        let dgram = message::format_datagram(b"k1", &req);
        let r1 = handle_datagram(&e, &mut cache, &dgram, t).unwrap();
        let r2 = handle_datagram(&e, &mut cache, &dgram, t + Duration::from_secs(1)).unwrap();
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
            handle_datagram(&e, &mut cache, &message::format_datagram(b"k2", &req), t).unwrap();
        assert!(r3.starts_with(b"k2 "));
        assert_eq!(cache.len(), 2);
        assert!(cache.get(b"k1", t + CACHE_TTL).is_none());
    }

    #[test]
    fn garbage_gets_error_or_silence() {
        let e = engine();
        let mut cache = ReplyCache::default();
        let t = Instant::now();
        assert!(handle_datagram(&e, &mut cache, b"nospace", t).is_none());
        let r = handle_datagram(&e, &mut cache, b"c1 d7:command", t).unwrap();
        assert!(
            r.starts_with(b"c1 d6:result5:error12:error-reason"),
            "{}",
            String::from_utf8_lossy(&r)
        );
        let r = handle_datagram(&e, &mut cache, b"c2 d7:command3:fooe", t).unwrap();
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
        let err = client.delete("c", None).unwrap_err();
        assert!(err.to_string().contains("Unknown call-id"), "{err}");
        tx.send(()).unwrap();
        handle.join().unwrap().unwrap();
    }
}
