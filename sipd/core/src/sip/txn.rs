//! Transactions (RFC 3261 §17, with RFC 6026's Accepted state), sans-IO.
//!
//! The layer absorbs what the call core must never see twice: retransmitted requests get the
//! last response again, retransmitted final responses get their ACK again, and requests we sent
//! over UDP are retransmitted until answered. The core sees each new request once, each
//! provisional and the first final response of a client transaction, every 2xx to an INVITE
//! (the core re-ACKs those: they are outside the transaction), and timeouts.
//!
//! Time is passed in; timers are returned by [`TxnLayer::next_timeout`] and fired by
//! [`TxnLayer::on_timeout`], so tests run on a fake clock.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rsip::Method;

use super::msg::{Msg, host_port};
use super::peer::{Peer, Proto, Transmit};

/// RTT estimate (RFC 3261 §17.1.1.1): the first retransmission interval over UDP.
pub const T1: Duration = Duration::from_millis(500);
/// Longest retransmission interval of non-INVITE requests and INVITE responses.
pub const T2: Duration = Duration::from_secs(4);
/// Longest a message stays in the network: how long a completed transaction lingers over UDP.
pub const T4: Duration = Duration::from_secs(5);
/// Timers B, F, H, J, L: 64·T1.
pub const TIMEOUT: Duration = Duration::from_secs(32);
/// Longest an INVITE may go from one provisional to the next without a final answer.
pub const TIMER_C: Duration = Duration::from_secs(181);

/// A server transaction's identity: the top Via's branch and sent-by, and the method (ACK
/// and CANCEL map onto the INVITE's, with a separate method for CANCEL's own transaction).
/// Pre-RFC 3261 peers without a magic-cookie branch are matched on Call-ID, CSeq number,
/// From tag and sent-by instead (§17.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey {
    /// Branch and sent-by, or the pre-RFC 3261 fields (see above).
    pub id: String,
    /// The request's method (`ACK` and `CANCEL` as explained above).
    pub method: String,
}

impl ServerKey {
    /// The key of `req`; `None` when it has no Via or is not a request.
    pub fn of(req: &Msg) -> Option<ServerKey> {
        let via = req.top_via()?;
        let method = req.method()?.to_string();
        let sent_by = format!("{}:{}", via.host, via.port.unwrap_or(5060));
        let id = match via.rfc3261_branch() {
            Some(b) => format!("{b}|{sent_by}"),
            None => format!(
                "{}|{}|{}|{}",
                req.call_id(),
                req.cseq().0,
                req.from().tag.unwrap_or_default(),
                sent_by
            ),
        };
        Some(ServerKey { id, method })
    }

    /// The INVITE transaction an ACK (for a non-2xx) or a CANCEL belongs to.
    pub fn invite(&self) -> ServerKey {
        ServerKey {
            id: self.id.clone(),
            method: "INVITE".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SState {
    /// Request seen, no final response yet.
    Proceeding,
    /// INVITE answered with a non-2xx: retransmit it (UDP) until ACK.
    Completed,
    /// INVITE answered 2xx: absorb retransmissions of the INVITE, resend the 2xx until the
    /// core says the ACK came (RFC 6026 §7.1).
    Accepted,
    /// ACK for a non-2xx received: absorb ACK retransmissions for T4.
    Confirmed,
    /// Non-INVITE answered: absorb retransmissions.
    Done,
}

#[derive(Debug)]
struct ServerTxn {
    peer: Peer,
    /// For INVITEs: the key in `TxnLayer::invites`.
    dialog: Option<(String, u32, String)>,
    state: SState,
    last: Option<Vec<u8>>,
    retransmit_every: Duration,
    next_retransmit: Option<Instant>,
    expires: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CState {
    /// Sent, nothing heard (UDP: retransmitting).
    Trying,
    /// A provisional arrived: no more retransmissions (INVITE), slower ones (non-INVITE).
    Proceeding,
    /// Final response received; absorbing its retransmissions.
    Completed,
}

#[derive(Debug)]
struct ClientTxn {
    peer: Peer,
    is_invite: bool,
    request: Vec<u8>,
    /// For the ACK of a non-2xx (same branch, §17.1.1.3).
    ack_base: Option<Msg>,
    ack: Option<Vec<u8>>,
    state: CState,
    token: u64,
    interval: Duration,
    next_retransmit: Option<Instant>,
    /// Timer B/F while unanswered, D/K once completed.
    expires: Instant,
    /// Give up on an INVITE that got no provisional within this (failover).
    no_answer_by: Option<Instant>,
}

/// What the core must do with an incoming request.
#[derive(Debug, PartialEq, Eq)]
pub enum RequestVerdict {
    /// A new request: the core answers it through [`TxnLayer::respond`] with this key.
    New(ServerKey),
    /// CANCEL for the INVITE with this key, from the INVITE's own sender; the layer has
    /// answered the CANCEL 200 already.
    Cancel(ServerKey),
    /// CANCEL naming no INVITE transaction still waiting for its answer; the layer has
    /// answered it 481 (RFC 3261 §9.2).
    UnknownCancel,
    /// CANCEL naming a pending INVITE (its branch and sent-by are no secret: they are in the
    /// INVITE) but from someone other than the INVITE's sender ([`Peer::same_sender`]). Not
    /// answered and no transaction kept for it (so the caller's own CANCEL of the same
    /// branch is not taken for its retransmission): the core refuses it.
    ForeignCancel,
    /// An ACK not absorbed here: the ACK for a 2xx (end-to-end, belongs to the dialog).
    Ack,
    /// A retransmission or an ACK for a non-2xx: handled here.
    Absorbed,
}

/// What the core must do with an incoming response.
#[derive(Debug, PartialEq, Eq)]
pub enum ResponseVerdict {
    /// For the core: provisional, first final, or any 2xx to an INVITE. `token` is what the
    /// core passed to [`TxnLayer::send_request`].
    Deliver {
        /// The token of the request's client transaction.
        token: u64,
        /// Whether the request was an INVITE.
        invite: bool,
    },
    /// A retransmission, or an answer to our CANCEL: nothing to do.
    Absorbed,
    /// No client transaction has its branch (RFC 3261 §18.1.2 drops it): an answer to a
    /// request of an earlier run, which the core may still owe an ACK and BYE.
    Stray,
}

/// Timer outcomes the core must act on.
#[derive(Debug, PartialEq, Eq)]
pub enum TxnTimeout {
    /// A client transaction got no final response (Timer B/F) or, for an INVITE, no
    /// provisional within the failover time.
    Client {
        /// The token the core passed to [`TxnLayer::send_request`].
        token: u64,
        /// Whether the request was an INVITE.
        invite: bool,
    },
    /// A 2xx we sent was never ACKed (RFC 3261 §13.3.1.4): the dialog should be torn down.
    NoAck(ServerKey),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum TimerRef {
    Server(String, String),
    Client(String),
}

/// The transaction layer of one `sipd`: server and client transactions, their timers and the
/// messages they (re)send. Sans-IO: time comes in, [`Transmit`]s come out of [`TxnLayer::drain`].
#[derive(Default)]
pub struct TxnLayer {
    server: HashMap<ServerKey, ServerTxn>,
    /// INVITE server transactions by (Call-ID, CSeq number, From tag): an ACK for a non-2xx
    /// that carries a branch of its own (sipp's default scenarios do; RFC 3261 says it must
    /// reuse the INVITE's) still finds its transaction instead of leaving the final response
    /// retransmitting for 32 s.
    invites: HashMap<(String, u32, String), ServerKey>,
    client: HashMap<String, ClientTxn>,
    timers: BTreeSet<(Instant, TimerRef)>,
    out: Vec<Transmit>,
    /// How long an INVITE may go without a provisional before it is failed over.
    pub invite_no_answer: Option<Duration>,
}

impl std::fmt::Debug for TxnLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnLayer")
            .field("server", &self.server.len())
            .field("client", &self.client.len())
            .finish()
    }
}

impl TxnLayer {
    /// An empty layer; `invite_no_answer` fails over an INVITE that gets no provisional in time.
    pub fn new(invite_no_answer: Option<Duration>) -> Self {
        TxnLayer {
            invite_no_answer,
            ..Default::default()
        }
    }

    /// Messages to send, in order.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Transmit> {
        self.out.drain(..)
    }

    /// Server and client transactions held, in that order.
    pub fn counts(&self) -> (usize, usize) {
        (self.server.len(), self.client.len())
    }

    fn arm(&mut self, at: Instant, r: TimerRef) {
        self.timers.insert((at, r));
    }

    /// Matches a request from `peer` against the server transactions: a retransmission gets the
    /// last response again and an ACK completes its INVITE (both absorbed); anything else is
    /// new for the core, or a CANCEL or 2xx ACK it must act on.
    pub fn on_request(&mut self, now: Instant, req: &Msg, peer: Peer) -> RequestVerdict {
        let Some(key) = ServerKey::of(req) else {
            return RequestVerdict::Absorbed;
        };
        let method = req.method().cloned();
        if method == Some(Method::Ack) {
            let mut inv = key.invite();
            if !self.server.contains_key(&inv)
                && let Some(k) = self.invites.get(&dialog_id(req))
            {
                inv = k.clone();
            }
            if let Some(t) = self.server.get_mut(&inv) {
                match t.state {
                    SState::Completed => {
                        t.state = SState::Confirmed;
                        t.next_retransmit = None;
                        t.expires = now
                            + if peer.proto.is_reliable() {
                                Duration::ZERO
                            } else {
                                T4
                            };
                        let at = t.expires;
                        self.arm(at, TimerRef::Server(inv.id, inv.method));
                        return RequestVerdict::Absorbed;
                    }
                    SState::Confirmed => return RequestVerdict::Absorbed,
                    _ => {}
                }
            }
            return RequestVerdict::Ack;
        }
        if let Some(t) = self.server.get(&key) {
            // A retransmission: the last response again, if there is one.
            if let Some(last) = &t.last {
                self.out.push(Transmit {
                    peer: t.peer,
                    data: last.clone(),
                    token: 0,
                });
            }
            return RequestVerdict::Absorbed;
        }
        if method == Some(Method::Cancel)
            && self
                .server
                .get(&key.invite())
                .is_some_and(|t| t.state == SState::Proceeding && !t.peer.same_sender(&peer))
        {
            return RequestVerdict::ForeignCancel;
        }
        let dialog = (method == Some(Method::Invite)).then(|| dialog_id(req));
        if let Some(d) = &dialog {
            self.invites.insert(d.clone(), key.clone());
        }
        self.server.insert(
            key.clone(),
            ServerTxn {
                peer,
                dialog,
                state: SState::Proceeding,
                last: None,
                retransmit_every: T1,
                next_retransmit: None,
                // Reaped if the core never answers (it always should).
                expires: now + Duration::from_secs(300),
            },
        );
        self.arm(
            now + Duration::from_secs(300),
            TimerRef::Server(key.id.clone(), key.method.clone()),
        );
        if method == Some(Method::Cancel) {
            let inv = key.invite();
            let known = self
                .server
                .get(&inv)
                .is_some_and(|t| t.state == SState::Proceeding);
            let code = if known { 200 } else { 481 };
            let resp = req.response(code, Some("sbc-cancel"));
            self.respond(now, &key, &resp);
            return if known {
                RequestVerdict::Cancel(inv)
            } else {
                RequestVerdict::UnknownCancel
            };
        }
        RequestVerdict::New(key)
    }

    /// Whether the server transaction `key` still awaits its final response.
    pub fn is_pending(&self, key: &ServerKey) -> bool {
        self.server
            .get(key)
            .is_some_and(|t| t.state == SState::Proceeding)
    }

    /// Sends a response in server transaction `key`. Responses after the final are dropped
    /// (the core may race a CANCEL against an answer; the first wins).
    pub fn respond(&mut self, now: Instant, key: &ServerKey, resp: &Msg) -> bool {
        self.respond_with(now, key, resp, true)
    }

    /// [`respond`](Self::respond) for a final answer to a peer that has not authenticated:
    /// sent once, never retransmitted by Timer G, so a spoofed or scanning source never gets
    /// more packets from us than it sent (no amplifier). The transaction still absorbs the
    /// ACK and answers a retransmitted request with the same response (one for one): a real
    /// caller whose copy was lost retransmits its INVITE and gets it again (§17.1.1.2).
    pub fn respond_once(&mut self, now: Instant, key: &ServerKey, resp: &Msg) -> bool {
        self.respond_with(now, key, resp, false)
    }

    fn respond_with(
        &mut self,
        now: Instant,
        key: &ServerKey,
        resp: &Msg,
        retransmit: bool,
    ) -> bool {
        let Some(t) = self.server.get_mut(key) else {
            return false;
        };
        if t.state != SState::Proceeding {
            return false;
        }
        let code = resp.code().unwrap_or(500);
        let data = resp.to_bytes();
        self.out.push(Transmit {
            peer: t.peer,
            data: data.clone(),
            token: 0,
        });
        t.last = Some(data);
        if code < 200 {
            return true;
        }
        let reliable = t.peer.proto.is_reliable();
        let invite = key.method == "INVITE";
        t.state = match (invite, code < 300) {
            (true, true) => SState::Accepted,
            (true, false) => SState::Completed,
            (false, _) => SState::Done,
        };
        t.expires = now
            + match t.state {
                SState::Done if reliable => Duration::ZERO,
                _ => TIMEOUT,
            };
        // 2xx is retransmitted over TCP too? No: only over unreliable transports (§13.3.1.4).
        t.next_retransmit = (invite && !reliable && retransmit).then(|| now + T1);
        t.retransmit_every = T1;
        let (exp, next) = (t.expires, t.next_retransmit);
        self.arm(exp, TimerRef::Server(key.id.clone(), key.method.clone()));
        if let Some(n) = next {
            self.arm(n, TimerRef::Server(key.id.clone(), key.method.clone()));
        }
        true
    }

    /// Takes back an INVITE server transaction of an earlier run that answered `resp`,
    /// without sending anything now: a retransmission of the INVITE (its caller never got
    /// the answer) gets `resp` again. With `unacked`, the 2xx is also retransmitted (UDP)
    /// until the core reports the ACK ([`acked`](Self::acked)), and a missing ACK ends in
    /// [`TxnTimeout::NoAck`] as for any 2xx.
    pub fn restore_answered(
        &mut self,
        now: Instant,
        req: &Msg,
        peer: Peer,
        resp: &Msg,
        unacked: bool,
    ) {
        let RequestVerdict::New(key) = self.on_request(now, req, peer) else {
            return;
        };
        if let Some(t) = self.server.get_mut(&key) {
            t.last = Some(resp.to_bytes());
            t.state = SState::Accepted;
            t.expires = now + TIMEOUT;
            t.next_retransmit = (unacked && !t.peer.proto.is_reliable()).then_some(now + T1);
            t.retransmit_every = T1;
            let (exp, next) = (t.expires, t.next_retransmit);
            self.arm(exp, TimerRef::Server(key.id.clone(), key.method.clone()));
            if let Some(n) = next {
                self.arm(n, TimerRef::Server(key.id, key.method));
            }
        }
    }

    /// The ACK for a 2xx arrived (matched by the core's dialog): stop resending the 2xx.
    pub fn acked(&mut self, key: &ServerKey) {
        if let Some(t) = self.server.get_mut(key)
            && t.state == SState::Accepted
        {
            t.next_retransmit = None;
        }
    }

    /// Sends a request in a new client transaction; its top Via's branch identifies it.
    /// `token` comes back with its responses and timeouts.
    pub fn send_request(&mut self, now: Instant, req: &Msg, peer: Peer, token: u64) {
        let Some(branch) = req.top_via().and_then(|v| v.branch) else {
            return;
        };
        let is_invite = req.method() == Some(&Method::Invite);
        let data = req.to_bytes();
        self.out.push(Transmit {
            peer,
            data: data.clone(),
            token,
        });
        if req.method() == Some(&Method::Ack) {
            return; // ACK has no transaction
        }
        let reliable = peer.proto.is_reliable();
        let no_answer_by = if is_invite {
            self.invite_no_answer.map(|d| now + d)
        } else {
            None
        };
        let t = ClientTxn {
            peer,
            is_invite,
            request: data,
            ack_base: is_invite.then(|| req.clone()),
            ack: None,
            state: CState::Trying,
            token,
            interval: T1,
            next_retransmit: (!reliable).then(|| now + T1),
            expires: now + TIMEOUT,
            no_answer_by,
        };
        for at in [t.next_retransmit, Some(t.expires), t.no_answer_by]
            .into_iter()
            .flatten()
        {
            self.arm(at, TimerRef::Client(branch.clone()));
        }
        self.client.insert(branch, t);
    }

    /// Matches a response to its client transaction by the top Via's branch: the ACK for a
    /// non-2xx final is sent here, retransmissions and strays are absorbed.
    pub fn on_response(&mut self, now: Instant, resp: &Msg) -> ResponseVerdict {
        let Some(branch) = resp.top_via().and_then(|v| v.branch) else {
            return ResponseVerdict::Absorbed;
        };
        let code = resp.code().unwrap_or(0);
        let Some(t) = self.client.get_mut(&branch) else {
            return ResponseVerdict::Stray;
        };
        if resp.cseq().1 == "CANCEL" && t.is_invite {
            return ResponseVerdict::Absorbed; // answers to our CANCEL share the branch
        }
        let invite = t.is_invite;
        match t.state {
            CState::Trying | CState::Proceeding => {
                if code < 200 {
                    t.state = CState::Proceeding;
                    t.no_answer_by = None;
                    if invite {
                        t.next_retransmit = None;
                        // Timer B stops in Proceeding (§17.1.1.2): a phone may ring for
                        // minutes. Timer C (§16.6, > 3 min), re-armed by each provisional,
                        // bounds an upstream that rings forever.
                        t.expires = now + TIMER_C;
                    } else if t.next_retransmit.is_some() {
                        t.interval = T2;
                    }
                    let (token, exp) = (t.token, t.expires);
                    if invite {
                        self.arm(exp, TimerRef::Client(branch));
                    }
                    return ResponseVerdict::Deliver { token, invite };
                }
                t.state = CState::Completed;
                t.next_retransmit = None;
                t.no_answer_by = None;
                let reliable = t.peer.proto.is_reliable();
                if invite && code >= 300 {
                    let ack = t.ack_base.as_ref().map(|inv| ack_for(inv, resp).to_bytes());
                    if let Some(a) = &ack {
                        self.out.push(Transmit {
                            peer: t.peer,
                            data: a.clone(),
                            token: 0,
                        });
                    }
                    t.ack = ack;
                }
                t.expires = now
                    + if reliable && !(invite && code < 300) {
                        Duration::ZERO
                    } else if invite && code < 300 {
                        TIMEOUT // Timer M: catch 2xx retransmits for re-ACK
                    } else {
                        T4
                    };
                let exp = t.expires;
                let token = t.token;
                self.arm(exp, TimerRef::Client(branch));
                ResponseVerdict::Deliver { token, invite }
            }
            CState::Completed => {
                if invite && code >= 300 {
                    if let Some(a) = &t.ack {
                        self.out.push(Transmit {
                            peer: t.peer,
                            data: a.clone(),
                            token: 0,
                        });
                    }
                    ResponseVerdict::Absorbed
                } else if invite && (200..300).contains(&code) {
                    // 2xx retransmission (or a 2xx from another fork): the core re-ACKs.
                    ResponseVerdict::Deliver {
                        token: t.token,
                        invite,
                    }
                } else {
                    ResponseVerdict::Absorbed
                }
            }
        }
    }

    /// Whether the client transaction of `token` with `branch` got a provisional (a CANCEL
    /// may be sent, §9.1).
    pub fn client_state(&self, branch: &str) -> Option<bool> {
        self.client
            .get(branch)
            .map(|t| t.state == CState::Proceeding)
    }

    /// Forgets a client transaction (the core gave up on it, e.g. after a transport error).
    pub fn abandon(&mut self, branch: &str) {
        self.client.remove(branch);
    }

    /// When [`TxnLayer::on_timeout`] should next be called; `None` with no timer armed.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Fires every timer due at `now`: retransmits, expires finished transactions, and returns
    /// the failures the core must act on.
    pub fn on_timeout(&mut self, now: Instant) -> Vec<TxnTimeout> {
        let mut fired = Vec::new();
        while let Some((at, _)) = self.timers.first() {
            if *at > now {
                break;
            }
            let Some((_, r)) = self.timers.pop_first() else {
                break;
            };
            match r {
                TimerRef::Server(id, method) => {
                    let key = ServerKey { id, method };
                    self.server_timer(now, key, &mut fired);
                }
                TimerRef::Client(branch) => self.client_timer(now, branch, &mut fired),
            }
        }
        fired
    }

    fn server_timer(&mut self, now: Instant, key: ServerKey, fired: &mut Vec<TxnTimeout>) {
        let Some(t) = self.server.get_mut(&key) else {
            return;
        };
        if now >= t.expires {
            let state = t.state;
            let acked = t.next_retransmit.is_none();
            if let Some(d) = self.server.remove(&key).and_then(|t| t.dialog) {
                self.invites.remove(&d);
            }
            if state == SState::Accepted && !acked {
                fired.push(TxnTimeout::NoAck(key));
            }
            return;
        }
        if let Some(n) = t.next_retransmit
            && n <= now
            && matches!(t.state, SState::Completed | SState::Accepted)
        {
            if let Some(last) = &t.last {
                self.out.push(Transmit {
                    peer: t.peer,
                    data: last.clone(),
                    token: 0,
                });
            }
            t.retransmit_every = (t.retransmit_every * 2).min(T2);
            let next = now + t.retransmit_every;
            t.next_retransmit = Some(next);
            self.arm(next, TimerRef::Server(key.id.clone(), key.method.clone()));
        }
    }

    fn client_timer(&mut self, now: Instant, branch: String, fired: &mut Vec<TxnTimeout>) {
        let Some(t) = self.client.get_mut(&branch) else {
            return;
        };
        let unanswered = matches!(t.state, CState::Trying | CState::Proceeding);
        if now >= t.expires || (unanswered && t.no_answer_by.is_some_and(|d| now >= d)) {
            let (token, invite) = (t.token, t.is_invite);
            self.client.remove(&branch);
            if unanswered {
                fired.push(TxnTimeout::Client { token, invite });
            }
            return;
        }
        if let Some(n) = t.next_retransmit
            && n <= now
            && unanswered
        {
            self.out.push(Transmit {
                peer: t.peer,
                data: t.request.clone(),
                token: t.token,
            });
            t.interval = if t.is_invite {
                t.interval * 2
            } else {
                (t.interval * 2).min(T2)
            };
            let next = now + t.interval;
            t.next_retransmit = Some(next);
            self.arm(next, TimerRef::Client(branch));
        }
    }
}

fn dialog_id(req: &Msg) -> (String, u32, String) {
    (
        req.call_id().to_owned(),
        req.cseq().0,
        req.from().tag.unwrap_or_default(),
    )
}

/// The ACK for a non-2xx final response to `invite` (RFC 3261 §17.1.1.3): same Request-URI,
/// top Via, Call-ID, From, Route and CSeq number; To from the response.
pub fn ack_for(invite: &Msg, resp: &Msg) -> Msg {
    let mut ack = Msg::request(
        Method::Ack,
        invite
            .uri()
            .cloned()
            .unwrap_or_else(|| rsip::Uri::try_from("sip:invalid").unwrap_or_default()),
    );
    if let Some(v) = invite.list("Via").first() {
        ack.push("Via", v.clone());
    }
    for (n, v) in &invite.headers {
        if n.eq_ignore_ascii_case("From")
            || n.eq_ignore_ascii_case("Call-ID")
            || n.eq_ignore_ascii_case("Route")
            || n.eq_ignore_ascii_case("Max-Forwards")
        {
            ack.push(n, v.clone());
        }
    }
    ack.push("To", resp.get("To").unwrap_or_default().to_owned());
    ack.push("CSeq", format!("{} ACK", invite.cseq().0));
    ack
}

/// A fresh branch (magic cookie + 16 random bytes of hex).
pub fn new_branch() -> String {
    format!("z9hG4bK{}", random_hex(12))
}

/// `bytes` random bytes as lowercase hex (tags, branches, ids); a process-unique counter
/// stands in if the OS has no randomness.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The kernel's CSPRNG only fails without an entropy source; a counter-based fallback keeps
    // us unique within the process, which is all a branch or tag needs.
    if crate::random::fill(&mut buf).is_err() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(1);
        let n = N.fetch_add(1, Ordering::Relaxed).to_be_bytes();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = n[i % 8];
        }
    }
    crate::random::hex(&buf)
}

/// `Via: SIP/2.0/UDP host:port;branch=…;rport` for a request we send from `local`.
pub fn via_for(proto: Proto, advertised: SocketAddr, branch: &str) -> String {
    format!(
        "SIP/2.0/{} {};branch={branch};rport",
        proto.via_token(),
        host_port(advertised)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(proto: Proto) -> Peer {
        Peer {
            proto,
            remote: "10.0.0.1:5060".parse().unwrap(),
            local: "10.0.0.2:5060".parse().unwrap(),
            conn: None,
        }
    }

    fn invite() -> Msg {
        Msg::parse(
            b"INVITE sip:1@b SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa1\r\nFrom: <sip:a@b>;tag=f\r\nTo: <sip:1@b>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n\r\n",
            65535,
        )
        .unwrap()
    }

    #[test]
    fn server_invite_retransmission_gets_last_response_and_non2xx_waits_for_ack() {
        let mut l = TxnLayer::new(None);
        let t0 = Instant::now();
        let inv = invite();
        let RequestVerdict::New(key) = l.on_request(t0, &inv, peer(Proto::Udp)) else {
            panic!()
        };
        assert!(l.respond(t0, &key, &inv.response(100, None)));
        l.drain();
        assert_eq!(
            l.on_request(t0, &inv, peer(Proto::Udp)),
            RequestVerdict::Absorbed
        );
        let again: Vec<_> = l.drain().collect();
        assert_eq!(again.len(), 1);
        assert!(String::from_utf8_lossy(&again[0].data).starts_with("SIP/2.0 100"));
        assert!(l.respond(t0, &key, &inv.response(486, Some("x"))));
        l.drain();
        // Timer G retransmits the 486 until the ACK.
        l.on_timeout(t0 + T1);
        assert_eq!(l.drain().count(), 1);
        let ack = ack_for(&inv, &inv.response(486, Some("x")));
        assert_eq!(
            l.on_request(t0, &ack, peer(Proto::Udp)),
            RequestVerdict::Absorbed
        );
        l.on_timeout(t0 + T1 * 3);
        assert_eq!(l.drain().count(), 0);
        l.on_timeout(t0 + TIMEOUT * 10);
        assert_eq!(l.counts(), (0, 0));
    }

    /// Toward a peer that has not authenticated: the refusal goes once, a retransmitted
    /// INVITE gets it once more (one for one), and the ACK still closes the transaction.
    #[test]
    fn a_refusal_sent_once_is_never_retransmitted() {
        let mut l = TxnLayer::new(None);
        let t0 = Instant::now();
        let inv = invite();
        let RequestVerdict::New(key) = l.on_request(t0, &inv, peer(Proto::Udp)) else {
            panic!()
        };
        assert!(l.respond_once(t0, &key, &inv.response(403, Some("x"))));
        assert_eq!(l.drain().count(), 1);
        // Timer G would have fired 6 times by now (T1, 2·T1, 4·T1, then every T2).
        for i in 1..60 {
            l.on_timeout(t0 + T1 * i);
        }
        assert_eq!(
            l.drain().count(),
            0,
            "Timer G fired toward an unauthenticated peer"
        );
        assert_eq!(
            l.on_request(t0 + T1, &inv, peer(Proto::Udp)),
            RequestVerdict::Absorbed
        );
        assert_eq!(l.drain().count(), 1);
        let ack = ack_for(&inv, &inv.response(403, Some("x")));
        assert_eq!(
            l.on_request(t0 + T1, &ack, peer(Proto::Udp)),
            RequestVerdict::Absorbed
        );
        l.on_timeout(t0 + TIMEOUT * 10);
        assert_eq!(l.counts(), (0, 0));
    }

    #[test]
    fn client_invite_retransmits_then_times_out() {
        let mut l = TxnLayer::new(Some(Duration::from_secs(3)));
        let t0 = Instant::now();
        l.send_request(t0, &invite(), peer(Proto::Udp), 7);
        assert_eq!(l.drain().count(), 1);
        assert!(l.on_timeout(t0 + T1).is_empty());
        assert_eq!(l.drain().count(), 1);
        assert!(l.on_timeout(t0 + T1 * 3).is_empty());
        assert_eq!(l.drain().count(), 1);
        let fired = l.on_timeout(t0 + Duration::from_secs(3));
        assert_eq!(
            fired,
            vec![TxnTimeout::Client {
                token: 7,
                invite: true
            }]
        );
    }

    #[test]
    fn a_ringing_invite_does_not_time_out_at_timer_b() {
        let mut l = TxnLayer::new(Some(Duration::from_secs(3)));
        let t0 = Instant::now();
        let inv = invite();
        l.send_request(t0, &inv, peer(Proto::Udp), 5);
        l.on_response(t0, &inv.response(180, Some("t")));
        assert!(l.on_timeout(t0 + Duration::from_secs(120)).is_empty());
        assert_eq!(
            l.on_timeout(t0 + TIMER_C),
            vec![TxnTimeout::Client {
                token: 5,
                invite: true
            }]
        );
    }

    #[test]
    fn client_invite_non2xx_is_acked_once_per_retransmission_and_delivered_once() {
        let mut l = TxnLayer::new(None);
        let t0 = Instant::now();
        let inv = invite();
        l.send_request(t0, &inv, peer(Proto::Udp), 9);
        l.drain();
        let busy = inv.response(486, Some("t"));
        assert_eq!(
            l.on_response(t0, &busy),
            ResponseVerdict::Deliver {
                token: 9,
                invite: true
            }
        );
        let acks: Vec<_> = l.drain().collect();
        assert_eq!(acks.len(), 1);
        assert!(String::from_utf8_lossy(&acks[0].data).starts_with("ACK sip:1@b"));
        assert_eq!(l.on_response(t0, &busy), ResponseVerdict::Absorbed);
        assert_eq!(l.drain().count(), 1);
        // No retransmissions after the answer.
        l.on_timeout(t0 + T1 * 8);
        assert_eq!(l.drain().count(), 0);
    }

    #[test]
    fn cancel_answers_200_and_points_at_the_invite() {
        let mut l = TxnLayer::new(None);
        let t0 = Instant::now();
        let inv = invite();
        let RequestVerdict::New(key) = l.on_request(t0, &inv, peer(Proto::Udp)) else {
            panic!()
        };
        let mut cancel = inv.clone();
        cancel.start = super::super::Start::Request {
            method: Method::Cancel,
            uri: inv.uri().cloned().unwrap(),
        };
        cancel.set("CSeq", "1 CANCEL");
        assert_eq!(
            l.on_request(t0, &cancel, peer(Proto::Udp)),
            RequestVerdict::Cancel(key)
        );
        let sent: Vec<_> = l.drain().collect();
        assert!(String::from_utf8_lossy(&sent[0].data).starts_with("SIP/2.0 200"));
    }

    /// A CANCEL with the INVITE's branch and sent-by from another address is not the
    /// caller's: not answered here and no transaction kept, so the caller's own CANCEL of the
    /// same branch afterwards still cancels. One naming no INVITE gets its 481.
    #[test]
    fn cancel_from_another_sender_is_left_to_the_core() {
        let mut l = TxnLayer::new(None);
        let t0 = Instant::now();
        let inv = invite();
        let RequestVerdict::New(key) = l.on_request(t0, &inv, peer(Proto::Udp)) else {
            panic!()
        };
        let mut cancel = inv.clone();
        cancel.start = super::super::Start::Request {
            method: Method::Cancel,
            uri: inv.uri().cloned().unwrap(),
        };
        cancel.set("CSeq", "1 CANCEL");
        let stranger = Peer {
            remote: "10.0.0.66:5060".parse().unwrap(),
            ..peer(Proto::Udp)
        };
        for _ in 0..2 {
            assert_eq!(
                l.on_request(t0, &cancel, stranger),
                RequestVerdict::ForeignCancel
            );
        }
        assert_eq!(l.drain().count(), 0);
        // Same host, another port: another phone on UDP; the same host on TCP may have
        // reconnected.
        let other_port = Peer {
            remote: "10.0.0.1:5070".parse().unwrap(),
            ..peer(Proto::Udp)
        };
        assert!(!peer(Proto::Udp).same_sender(&other_port));
        let tcp = |port| Peer {
            remote: SocketAddr::new("10.0.0.1".parse().unwrap(), port),
            ..peer(Proto::Tcp)
        };
        assert!(tcp(5060).same_sender(&tcp(40_000)));
        assert_eq!(
            l.on_request(t0, &cancel, peer(Proto::Udp)),
            RequestVerdict::Cancel(key)
        );
        let sent: Vec<_> = l.drain().collect();
        assert!(String::from_utf8_lossy(&sent[0].data).starts_with("SIP/2.0 200"));
        let mut unknown = cancel.clone();
        unknown.set("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKnone");
        assert_eq!(
            l.on_request(t0, &unknown, peer(Proto::Udp)),
            RequestVerdict::UnknownCancel
        );
        let sent: Vec<_> = l.drain().collect();
        assert!(String::from_utf8_lossy(&sent[0].data).starts_with("SIP/2.0 481"));
    }
}
