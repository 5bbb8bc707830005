//! A blocking ng client for tests, benchmarks and tools. Speaks to our `relayd` and to
//! rtpengine alike (it only uses the common protocol).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::bencode::Value;
use super::message::{self, Delete, MessageError, OfferAnswer, Request, Response};

/// Why a request got no usable reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed (bind, send, receive).
    #[error("ng socket: {0}")]
    Io(#[from] std::io::Error),
    /// No reply with our cookie within `tries` sends of `timeout` each.
    #[error("no reply from {server} after {tries} tries")]
    Timeout {
        /// The server.
        server: SocketAddr,
        /// Sends made.
        tries: u32,
    },
    /// A reply that is no valid ng reply.
    #[error("bad reply: {0}")]
    BadReply(#[from] MessageError),
    /// The server answered `result: error`.
    #[error("{command} failed: {reason}")]
    Failed {
        /// The command sent.
        command: &'static str,
        /// The server's `error-reason`.
        reason: String,
    },
}

/// One socket to one ng server. Requests are sequential (`&self` methods use an internal
/// socket; replies with other cookies — late answers to timed-out requests — are skipped).
#[derive(Debug)]
pub struct NgClient {
    socket: UdpSocket,
    server: SocketAddr,
    next: AtomicU64,
    /// Wait per try.
    pub timeout: Duration,
    /// Sends of the same datagram (same cookie) before giving up.
    pub tries: u32,
}

impl NgClient {
    /// A client of `server` on a fresh ephemeral socket of its family: 1 s per try, 3 tries.
    pub fn new(server: SocketAddr) -> std::io::Result<NgClient> {
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let socket = UdpSocket::bind(bind)?;
        socket.connect(server)?;
        Ok(NgClient {
            socket,
            server,
            next: AtomicU64::new(1),
            timeout: Duration::from_millis(1000),
            tries: 3,
        })
    }

    /// Sends a raw dictionary and returns the raw reply.
    pub fn request_value(&self, v: &Value) -> Result<Value, ClientError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let cookie = format!("{}_{n}", std::process::id());
        let dgram = message::format_datagram(cookie.as_bytes(), v);
        let mut buf = vec![0u8; 65_536];
        for _ in 0..self.tries.max(1) {
            self.socket.send(&dgram)?;
            let deadline = Instant::now() + self.timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                self.socket.set_read_timeout(Some(left))?;
                let len = match self.socket.recv(&mut buf) {
                    Ok(len) => len,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                // Nobody listening yet: the server may still be starting.
                                | std::io::ErrorKind::ConnectionRefused
                        ) =>
                    {
                        if e.kind() == std::io::ErrorKind::ConnectionRefused {
                            std::thread::sleep(left.min(Duration::from_millis(50)));
                        }
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                match message::parse_datagram(&buf[..len]) {
                    Ok((c, v)) if c == cookie.as_bytes() => return Ok(v),
                    Ok(_) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Err(ClientError::Timeout {
            server: self.server,
            tries: self.tries,
        })
    }

    /// Sends a request; an `error` result is returned as a [`Response`], not an `Err`.
    pub fn request(&self, req: &Request) -> Result<Response, ClientError> {
        Ok(Response::from_value(self.request_value(&req.to_value())?)?)
    }

    /// Like [`NgClient::request`], but an `error` result becomes [`ClientError::Failed`].
    pub fn request_ok(&self, req: &Request) -> Result<Response, ClientError> {
        let r = self.request(req)?;
        if r.is_ok() {
            Ok(r)
        } else {
            Err(ClientError::Failed {
                command: req.command(),
                reason: r
                    .error_reason()
                    .unwrap_or(r.result().unwrap_or("?"))
                    .to_string(),
            })
        }
    }

    /// Sends `ping`; fails unless the server answers `pong`.
    pub fn ping(&self) -> Result<(), ClientError> {
        self.request_ok(&Request::Ping).map(drop)
    }

    /// Waits until the server answers a ping, for at most `within`.
    pub fn wait_ready(&self, within: Duration) -> Result<(), ClientError> {
        let deadline = Instant::now() + within;
        loop {
            match self.ping() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Returns the rewritten SDP.
    pub fn offer(&self, oa: &OfferAnswer) -> Result<String, ClientError> {
        self.sdp_of(&Request::Offer(oa.clone()))
    }

    /// Returns the rewritten SDP. `oa.to_tag` must be set.
    pub fn answer(&self, oa: &OfferAnswer) -> Result<String, ClientError> {
        self.sdp_of(&Request::Answer(oa.clone()))
    }

    fn sdp_of(&self, req: &Request) -> Result<String, ClientError> {
        let r = self.request_ok(req)?;
        r.sdp()
            .map(str::to_string)
            .ok_or(ClientError::BadReply(MessageError::Missing("sdp")))
    }

    /// Deletes the call (only `from_tag`'s branch, where the server has several).
    pub fn delete(&self, call_id: &str, from_tag: Option<&str>) -> Result<Response, ClientError> {
        self.request_ok(&Request::Delete(Delete {
            call_id: call_id.into(),
            from_tag: from_tag.map(str::to_string),
            to_tag: None,
            delete_delay: None,
        }))
    }

    /// The server's `query` reply for the call.
    pub fn query(&self, call_id: &str) -> Result<Response, ClientError> {
        self.request_ok(&Request::Query {
            call_id: call_id.into(),
        })
    }

    /// The Call-IDs the server holds.
    pub fn list(&self) -> Result<Vec<String>, ClientError> {
        let r = self.request_ok(&Request::List { limit: None })?;
        Ok(r.get("calls")
            .and_then(Value::as_list)
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect())
    }
}
