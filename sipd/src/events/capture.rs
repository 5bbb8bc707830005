//! The SIP messages of each live call and of the calls that ended last, for the console's
//! ladder (`GET /api/calls/{id}/messages`). The shell files a message where it receives or
//! sends it, under the call the core says its Call-ID belongs to ([`Core::call_of`]); the
//! core itself keeps nothing.
//!
//! Bounded three ways (`[call_messages]`): messages per call (past that, the oldest but the
//! initial INVITE give way), ended calls kept (the one that ended first goes), and bytes in
//! all (ended calls go first, oldest first; a message that still does not fit is not kept).
//! Every message not kept is counted.
//!
//! [`Core::call_of`]: sipd_core::b2bua::Core::call_of

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sipd_core::b2bua::{CallKey, Side};
use sipd_core::sip::{Peer, Proto};

/// `[call_messages]`: how much of each call's signalling sipd keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// Messages kept per call; past that, the oldest but the first give way.
    pub per_call: usize,
    /// Ended calls whose messages are kept (the one that ended first goes first).
    pub ended_calls: usize,
    /// Bytes of messages kept in all, live and ended calls together.
    pub max_bytes: usize,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            per_call: 200,
            ended_calls: 500,
            max_bytes: 32 * 1024 * 1024,
        }
    }
}

impl CaptureConfig {
    /// Problems with these bounds, for `sipd check-config`.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(2..=10_000).contains(&self.per_call) {
            out.push(format!("per_call {} is outside 2..=10000", self.per_call));
        }
        if self.ended_calls > 1_000_000 {
            out.push(format!("ended_calls {} is over 1000000", self.ended_calls));
        }
        if !(65_536..=(4usize << 30)).contains(&self.max_bytes) {
            out.push(format!(
                "max_bytes {} is outside 65536..=4294967296",
                self.max_bytes
            ));
        }
        out
    }
}

/// Which way a message went, from sipd's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    /// Received by sipd.
    In,
    /// Sent by sipd.
    Out,
}

/// Which of the call's two dialogs a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Leg {
    /// The carrier's (caller's) side.
    Caller,
    /// The upstream vendor's side.
    Vendor,
}

/// One SIP message of a call, as `GET /api/calls/{id}/messages` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// Unix ms it was received or handed to the transport.
    pub at_ms: u64,
    /// Received or sent by sipd.
    pub dir: Dir,
    /// The caller's dialog or the vendor's.
    pub leg: Leg,
    /// Who sent it (`ip:port`).
    pub from: SocketAddr,
    /// Where it went (`ip:port`).
    pub to: SocketAddr,
    /// `udp` or `tcp`.
    pub transport: &'static str,
    /// The request or status line (`INVITE sip:... SIP/2.0`, `SIP/2.0 200 OK`).
    pub first_line: String,
    /// The whole message (invalid UTF-8 replaced).
    pub raw: String,
}

impl Message {
    /// Bytes it holds, for the budget.
    fn size(&self) -> usize {
        self.raw.len() + self.first_line.len() + 64
    }
}

/// A call's messages, as the API returns them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallMessages {
    /// The API's call id (as in `GET /api/calls`).
    pub id: CallKey,
    /// The caller's SIP Call-ID.
    pub call_id: String,
    /// Oldest first.
    pub messages: Vec<Message>,
    /// Messages of this call not kept (the per-call bound).
    pub dropped: u64,
    /// Whether the call has ended.
    pub ended: bool,
}

struct Entry {
    call_id: String,
    messages: VecDeque<Message>,
    bytes: usize,
    dropped: u64,
    ended: bool,
}

#[derive(Default)]
struct Inner {
    calls: HashMap<CallKey, Entry>,
    /// Ended calls, the one that ended first in front.
    ended: VecDeque<CallKey>,
    bytes: usize,
    /// The newest call ever filed: the core's keys only grow, so a key at or below it that
    /// is not held was dropped already and is not started again by a straggler.
    newest: CallKey,
}

/// The buffer; shared by the event loop (which files) and the API (which reads).
pub struct Capture {
    cfg: CaptureConfig,
    inner: Mutex<Inner>,
    /// Messages not kept, all causes together (`/metrics`).
    dropped: AtomicU64,
}

/// The Call-ID of a SIP message (`Call-ID` or its compact form `i`), from its header section.
pub fn call_id_of(data: &[u8]) -> Option<&str> {
    // Every message in and out passes here (twice on the way out): find the line by its
    // bytes and only read the Call-ID line as text, rather than every line of the head.
    let head = header_section(data);
    head.split(|b| *b == b'\n').skip(1).find_map(|line| {
        let colon = line.iter().position(|b| *b == b':')?;
        let name = std::str::from_utf8(&line[..colon]).ok()?.trim();
        if !(name.eq_ignore_ascii_case("call-id") || name.eq_ignore_ascii_case("i")) {
            return None;
        }
        // A line that is not UTF-8 as a whole is no Call-ID.
        let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
        let value = line[colon + 1..].trim();
        (!value.is_empty()).then_some(value)
    })
}

/// The header section of a message: up to its first CRLFCRLF, or all of it.
fn header_section(data: &[u8]) -> &[u8] {
    let mut from = 0;
    while let Some(i) = data[from..].iter().position(|b| *b == b'\r') {
        let at = from + i;
        if data[at..].starts_with(b"\r\n\r\n") {
            return &data[..at];
        }
        from = at + 1;
    }
    data
}

/// The first line of a message, without its line end.
fn first_line(data: &[u8]) -> String {
    let end = data
        .iter()
        .position(|b| *b == b'\n')
        .unwrap_or(data.len())
        .min(1024);
    String::from_utf8_lossy(&data[..end])
        .trim_end_matches('\r')
        .to_owned()
}

impl Capture {
    /// An empty buffer bounded by `cfg`.
    pub fn new(cfg: CaptureConfig) -> Capture {
        Capture {
            cfg,
            inner: Mutex::new(Inner::default()),
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Messages not kept since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Files `data`, received (`In`) from or sent (`Out`) to `peer`, under call `key` on
    /// `side` (`A`: the caller's leg). `call_id` is the caller's Call-ID, named in the answer.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        key: CallKey,
        call_id: &str,
        side: Side,
        dir: Dir,
        peer: &Peer,
        data: &[u8],
        at_ms: u64,
    ) {
        let (from, to) = match dir {
            Dir::In => (peer.remote, peer.local),
            Dir::Out => (peer.local, peer.remote),
        };
        let m = Message {
            at_ms,
            dir,
            leg: match side {
                Side::A => Leg::Caller,
                Side::B => Leg::Vendor,
            },
            from,
            to,
            transport: match peer.proto {
                Proto::Udp => "udp",
                Proto::Tcp => "tcp",
                Proto::Tls => "tls",
            },
            first_line: first_line(data),
            raw: String::from_utf8_lossy(data).into_owned(),
        };
        let size = m.size();
        let mut g = self.lock();
        let inner = &mut *g;
        if !inner.calls.contains_key(&key) {
            if key <= inner.newest {
                return;
            }
            inner.newest = key;
            inner.calls.insert(
                key,
                Entry {
                    call_id: call_id.to_owned(),
                    messages: VecDeque::new(),
                    bytes: 0,
                    dropped: 0,
                    ended: false,
                },
            );
        }
        while inner.bytes + size > self.cfg.max_bytes {
            let Some(old) = inner.ended.pop_front() else {
                break;
            };
            if old != key {
                Self::evict(inner, old);
            } else {
                inner.ended.push_back(old);
                break;
            }
        }
        let Some(e) = inner.calls.get_mut(&key) else {
            return;
        };
        if e.messages.len() >= self.cfg.per_call.max(2) {
            // The initial INVITE stays: it says what the call was.
            if let Some(gone) = e.messages.remove(1) {
                e.bytes -= gone.size();
                inner.bytes -= gone.size();
            }
            e.dropped += 1;
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        if inner.bytes + size > self.cfg.max_bytes {
            e.dropped += 1;
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        e.bytes += size;
        inner.bytes += size;
        e.messages.push_back(m);
    }

    fn evict(inner: &mut Inner, key: CallKey) {
        if let Some(e) = inner.calls.remove(&key) {
            inner.bytes -= e.bytes;
        }
    }

    /// Call `key` ended: its messages stay among the last `ended_calls` ended calls'.
    pub fn ended(&self, key: CallKey) {
        let mut g = self.lock();
        let inner = &mut *g;
        let Some(e) = inner.calls.get_mut(&key) else {
            return;
        };
        if e.ended {
            return;
        }
        e.ended = true;
        inner.ended.push_back(key);
        while inner.ended.len() > self.cfg.ended_calls {
            if let Some(old) = inner.ended.pop_front() {
                Self::evict(inner, old);
            }
        }
    }

    /// The messages of call `key`, oldest first; `None` if none are kept.
    pub fn messages(&self, key: CallKey) -> Option<CallMessages> {
        let g = self.lock();
        let e = g.calls.get(&key)?;
        Some(CallMessages {
            id: key,
            call_id: e.call_id.clone(),
            messages: e.messages.iter().cloned().collect(),
            dropped: e.dropped,
            ended: e.ended,
        })
    }

    /// (calls held, bytes held).
    pub fn fill(&self) -> (usize, usize) {
        let g = self.lock();
        (g.calls.len(), g.bytes)
    }

    /// What the buffer holds now, for `/metrics`.
    pub fn held(&self) -> Held {
        let g = self.lock();
        Held {
            live_calls: g.calls.len().saturating_sub(g.ended.len()),
            ended_calls: g.ended.len(),
            bytes: g.bytes,
        }
    }
}

/// What [`Capture`] holds: live calls' messages go when the call ends (into the ended ones,
/// bounded by `ended_calls`); all of it within `max_bytes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Calls not ended whose messages are kept.
    pub live_calls: usize,
    /// Ended calls whose messages are kept (at most `ended_calls`).
    pub ended_calls: usize,
    /// Bytes of messages kept, live and ended calls together.
    pub bytes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Peer {
        Peer {
            proto: Proto::Udp,
            remote: "192.0.2.1:5060".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            conn: None,
        }
    }

    fn msg(first: &str, n: usize) -> Vec<u8> {
        format!(
            "{first}\r\nCall-ID: c{n}\r\nContent-Length: 0\r\n\r\n{}",
            "x".repeat(n)
        )
        .into_bytes()
    }

    #[test]
    fn the_call_id_is_found_in_either_form_and_not_in_the_body() {
        assert_eq!(
            call_id_of(b"INVITE x SIP/2.0\r\nCall-ID:  abc \r\n\r\n"),
            Some("abc")
        );
        assert_eq!(call_id_of(b"SIP/2.0 200 OK\r\ni: q@h\r\n\r\n"), Some("q@h"));
        assert_eq!(
            call_id_of(b"BYE x SIP/2.0\r\nVia: a\r\n\r\nCall-ID: body"),
            None
        );
    }

    #[test]
    fn per_call_ended_and_byte_bounds_hold() {
        let c = Capture::new(CaptureConfig {
            per_call: 3,
            ended_calls: 1,
            max_bytes: 2_000,
        });
        let p = peer();
        for i in 0..5 {
            let line = format!("M{i} sip:x SIP/2.0");
            c.record(1, "c1", Side::A, Dir::In, &p, &msg(&line, 10), i);
        }
        let m = c.messages(1).unwrap();
        let lines: Vec<&str> = m.messages.iter().map(|m| m.first_line.as_str()).collect();
        assert_eq!(
            lines,
            ["M0 sip:x SIP/2.0", "M3 sip:x SIP/2.0", "M4 sip:x SIP/2.0"]
        );
        assert_eq!(m.dropped, 2);
        assert_eq!(m.messages[0].from.to_string(), "192.0.2.1:5060");

        c.ended(1);
        c.record(
            2,
            "c2",
            Side::B,
            Dir::Out,
            &p,
            &msg("INVITE sip:v SIP/2.0", 10),
            9,
        );
        c.ended(2);
        assert!(c.messages(1).is_none(), "only one ended call is kept");
        let m2 = c.messages(2).unwrap();
        assert!(m2.ended);
        assert_eq!(m2.messages[0].leg, Leg::Vendor);
        assert_eq!(m2.messages[0].to.to_string(), "192.0.2.1:5060");

        // A straggler of a dropped call does not bring it back.
        c.record(
            1,
            "c1",
            Side::A,
            Dir::In,
            &p,
            &msg("BYE sip:x SIP/2.0", 1),
            10,
        );
        assert!(c.messages(1).is_none());

        // Bytes: a live call's big message pushes the ended call out, then does not fit.
        c.record(
            3,
            "c3",
            Side::A,
            Dir::In,
            &p,
            &msg("INVITE sip:y SIP/2.0", 1_750),
            11,
        );
        assert!(c.messages(2).is_none(), "ended calls give way first");
        c.record(
            3,
            "c3",
            Side::A,
            Dir::In,
            &p,
            &msg("ACK sip:y SIP/2.0", 1_500),
            12,
        );
        let m3 = c.messages(3).unwrap();
        assert_eq!((m3.messages.len(), m3.dropped), (1, 1));
        assert!(c.fill().1 <= 2_000);
    }

    #[test]
    fn held_splits_live_and_ended_calls() {
        let c = Capture::new(CaptureConfig::default());
        let p = peer();
        for key in 1..=3 {
            let id = format!("c{key}");
            c.record(
                key,
                &id,
                Side::A,
                Dir::In,
                &p,
                &msg("INVITE sip:y SIP/2.0", 100),
                key,
            );
        }
        c.ended(2);
        let h = c.held();
        assert_eq!((h.live_calls, h.ended_calls), (2, 1));
        assert_eq!(h.bytes, c.fill().1);
        c.ended(1);
        c.ended(3);
        assert_eq!(c.held().live_calls, 0);
    }
}
