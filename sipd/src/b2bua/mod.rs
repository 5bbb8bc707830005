//! The call core: a back-to-back user agent, sans-IO.
//!
//! The carrier's dialog (leg A, we are its UAS) and the vendor's (leg B, we are its UAC) are
//! separate: peers see only our addresses, Call-IDs and tags (topology hiding), and every
//! per-call decision happens here, in the design's order: firewall (done by the shell before
//! bytes arrive) → authentication (rules, digest) → admission → routing → media anchoring →
//! dialog → CDR.
//!
//! Input is bytes with where they came from and the time; output is [`Effect`]s (messages to
//! send, CDRs to store, kernel session counts, bans). Nothing here blocks or does I/O, so the
//! tests drive whole calls on a fake clock.

pub mod call;
pub mod ids;
pub mod media;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rsip::Method;
use tracing::{debug, info, warn};

use crate::auth::digest::{Credential, DigestAuthorization, DigestError, DigestVerifier};
use crate::policy::admission::{Admission, Cut};
use crate::policy::routing::{CapFull, Router};
use crate::policy::rules::{Classification, RuleSet};
use crate::sip::msg::{NameAddr, host, host_port};
use crate::sip::parse::clip;
use crate::sip::txn::{
    Peer, Proto, RequestVerdict, ResponseVerdict, Send, ServerKey, TxnLayer, TxnTimeout,
    new_branch, random_hex, via_for,
};
use crate::sip::{Msg, Start};
use crate::store::{CdrDraft, Connection, Id, Micros, Tariff, Transport};
use relay_user::BanReason;

use call::{Attempt, Leg, Relayed};
pub use call::{Call, CallKey, Phase};
use ids::Ids;
pub use media::{Media, MediaError, MemoryMedia, RelayMedia, Side};

/// One of our SIP addresses: bound here, written as `advertised` in Via and Contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    pub proto: Proto,
    pub bind: SocketAddr,
    pub advertised: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub locals: Vec<Local>,
    pub topology_hiding: bool,
    pub max_message_bytes: usize,
    pub media_timeout: Duration,
    pub strict_source: bool,
    /// An upstream that sends no provisional within this is failed over.
    pub failover_after: Duration,
    pub ids: ids::IdsConfig,
    /// Server/User-Agent we announce.
    pub agent: String,
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Send(Send),
    /// Store the CDR and, for a billed call, debit the account.
    Cdr {
        cdr: CdrDraft,
        debit: Option<(Id, Micros)>,
    },
    /// A call from `ip` started (`up`) or ended: the kernel's per-source session count.
    SourceSession {
        ip: IpAddr,
        up: bool,
    },
    Ban {
        ip: IpAddr,
        duration: Duration,
        reason: BanReason,
    },
}

/// A live call, for the management API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CallInfo {
    pub id: CallKey,
    /// The caller's Call-ID.
    pub call_id: String,
    pub account_id: Id,
    pub cli: String,
    pub cld: String,
    pub source: SocketAddr,
    pub connection_id: Option<Id>,
    pub answered: bool,
    pub started_ms: u64,
    pub answered_ms: Option<u64>,
}

/// Counters for logs, `/metrics` and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CoreStats {
    pub requests: u64,
    pub responses: u64,
    pub malformed: u64,
    pub malformed_answered: u64,
    pub invites: u64,
    pub answered: u64,
    pub failed: u64,
    pub challenges: u64,
    pub auth_failures: u64,
    pub stray: u64,
    /// Final responses sent to callers, by code.
    pub finals: std::collections::BTreeMap<u16, u64>,
}

#[derive(Debug, Clone)]
enum Token {
    Invite(CallKey),
    Relayed(Box<Relayed>),
    /// BYE or CANCEL we originated; its answer needs nothing.
    Fire,
}

/// Why a call ended, as CDRs and logs say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    CallerHangup,
    CalleeHangup,
    MaxDuration,
    Balance,
    MediaTimeout,
    NoAck,
    Shutdown,
    /// Hung up from the management API.
    Operator,
}

impl EndReason {
    pub fn text(self) -> &'static str {
        match self {
            EndReason::CallerHangup => "caller hung up",
            EndReason::CalleeHangup => "callee hung up",
            EndReason::MaxDuration => "max duration",
            EndReason::Balance => "balance exhausted",
            EndReason::MediaTimeout => "media timeout",
            EndReason::NoAck => "no ACK",
            EndReason::Shutdown => "shutdown",
            EndReason::Operator => "hung up by operator",
        }
    }
}

/// How often the core wants `tick` even without transaction timers (admission cut-offs and
/// media timeouts are checked then).
const TICK: Duration = Duration::from_millis(250);
/// Ended calls stay this long to absorb retransmissions and late responses.
const LINGER: Duration = Duration::from_secs(32);

pub struct Core<M: Media> {
    cfg: CoreConfig,
    txn: TxnLayer,
    rules: RuleSet,
    admission: Admission,
    router: Router,
    tariffs: HashMap<Id, Tariff>,
    /// Balance as last known: the store's at start, minus what calls since cost.
    balances: HashMap<Id, Micros>,
    verifier: DigestVerifier,
    media: M,
    calls: HashMap<CallKey, Call>,
    /// Leg A dialogs and initial INVITEs: (Call-ID, caller's From tag).
    by_a: HashMap<(String, String), CallKey>,
    by_a_txn: HashMap<ServerKey, CallKey>,
    /// Leg B by our Call-ID.
    by_b: HashMap<String, CallKey>,
    tokens: HashMap<u64, Token>,
    next_key: u64,
    next_token: u64,
    effects: Vec<Effect>,
    stats: CoreStats,
    ids: Ids,
    next_tick: Option<Instant>,
    draining: bool,
}

impl<M: Media> Core<M> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: CoreConfig,
        rules: RuleSet,
        router: Router,
        tariffs: Vec<Tariff>,
        verifier: DigestVerifier,
        media: M,
    ) -> Core<M> {
        let balances = rules.accounts().map(|a| (a.id, a.balance)).collect();
        Core {
            txn: TxnLayer::new(Some(cfg.failover_after)),
            ids: Ids::new(cfg.ids.clone()),
            cfg,
            rules,
            admission: Admission::new(),
            router,
            tariffs: tariffs.into_iter().map(|t| (t.id, t)).collect(),
            balances,
            verifier,
            media,
            calls: HashMap::new(),
            by_a: HashMap::new(),
            by_a_txn: HashMap::new(),
            by_b: HashMap::new(),
            tokens: HashMap::new(),
            next_key: 1,
            next_token: 1,
            effects: Vec::new(),
            stats: CoreStats::default(),
            next_tick: None,
            draining: false,
        }
    }

    pub fn stats(&self) -> &CoreStats {
        &self.stats
    }

    pub fn media(&mut self) -> &mut M {
        &mut self.media
    }

    /// Calls not yet ended.
    pub fn active_calls(&self) -> usize {
        self.calls
            .values()
            .filter(|c| c.phase != Phase::Ended)
            .count()
    }

    pub fn calls(&self) -> impl Iterator<Item = &Call> {
        self.calls.values().filter(|c| c.phase != Phase::Ended)
    }

    /// Live calls as the management API lists them.
    pub fn call_infos(&self) -> Vec<CallInfo> {
        let mut v: Vec<CallInfo> = self
            .calls()
            .map(|c| CallInfo {
                id: c.key,
                account_id: c.account,
                cli: c.cli.clone(),
                cld: c.cld.clone(),
                source: c.source,
                connection_id: c.connection,
                answered: c.phase == Phase::Answered,
                started_ms: unix_ms(c.started),
                answered_ms: c.answered.map(unix_ms),
                call_id: c.a.call_id.clone(),
            })
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// Ends call `id` on both sides (BYE, or CANCEL before answer); false if there is none.
    pub fn hangup(&mut self, now: Instant, wall: SystemTime, id: CallKey) -> bool {
        if !self.calls.get(&id).is_some_and(|c| c.phase != Phase::Ended) {
            return false;
        }
        self.end_call(now, wall, id, EndReason::Operator);
        true
    }

    /// Takes new accounts, rules, connections and tariffs (after a change through the
    /// management API). Calls in progress keep what they were admitted and routed with;
    /// balances the core tracks stay (the store's may lag behind unwritten debits), new
    /// accounts start from the store's.
    pub fn reload(&mut self, rules: RuleSet, connections: Vec<Connection>, tariffs: Vec<Tariff>) {
        for a in rules.accounts() {
            self.balances.entry(a.id).or_insert(a.balance);
        }
        self.rules = rules;
        self.router.reload(connections);
        self.tariffs = tariffs.into_iter().map(|t| (t.id, t)).collect();
    }

    /// An operator credited (or debited) an account's balance in the store.
    pub fn credit(&mut self, account: Id, delta: Micros) {
        let b = self.balances.entry(account).or_insert(Micros(0));
        b.0 = b.0.saturating_add(delta.0);
        let nb = *b;
        self.admission.set_balance(account, nb);
    }

    /// Effects produced so far, in order; the shell carries them out.
    pub fn drain_effects(&mut self) -> Vec<Effect> {
        for s in self.txn.drain() {
            self.effects.push(Effect::Send(s));
        }
        std::mem::take(&mut self.effects)
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        match (self.txn.next_timeout(), self.next_tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn token(&mut self, t: Token) -> u64 {
        let n = self.next_token;
        self.next_token += 1;
        self.tokens.insert(n, t);
        n
    }

    fn local_for(&self, proto: Proto, dest: IpAddr) -> Option<Local> {
        self.cfg
            .locals
            .iter()
            .find(|l| l.proto == proto && l.bind.is_ipv4() == dest.is_ipv4())
            .copied()
    }

    fn local_of(&self, peer: &Peer) -> Local {
        self.cfg
            .locals
            .iter()
            .find(|l| l.proto == peer.proto && l.bind == peer.local)
            .copied()
            .or_else(|| self.local_for(peer.proto, peer.remote.ip()))
            .unwrap_or(Local {
                proto: peer.proto,
                bind: peer.local,
                advertised: peer.local,
            })
    }

    fn contact(&self, local: &Local) -> String {
        match local.proto {
            Proto::Udp => format!("<sip:sbc@{}>", host_port(local.advertised)),
            Proto::Tcp => format!("<sip:sbc@{};transport=tcp>", host_port(local.advertised)),
        }
    }

    fn warning(&self, text: &str) -> String {
        format!(
            "399 {} \"{}\"",
            host(
                self.cfg
                    .locals
                    .first()
                    .map_or(IpAddr::from([127, 0, 0, 1]), |l| l.advertised.ip(),)
            ),
            text.replace('"', "'")
        )
    }

    // ---------------------------------------------------------------- input

    /// One message from the wire.
    pub fn on_message(&mut self, now: Instant, wall: SystemTime, peer: Peer, data: &[u8]) {
        self.arm_tick(now);
        let msg = match Msg::parse(data, self.cfg.max_message_bytes) {
            Ok(m) => m,
            Err(e) => {
                self.stats.malformed += 1;
                debug!(%e, from = %peer.remote, "malformed SIP message");
                self.answer_malformed(peer, data, &e.to_string());
                return;
            }
        };
        if msg.is_request() {
            self.stats.requests += 1;
            self.on_request(now, wall, peer, msg);
        } else {
            self.stats.responses += 1;
            self.on_response(now, wall, msg);
        }
    }

    /// A framing problem the transport found (oversized datagram, stream without
    /// Content-Length): answer if the head is readable enough.
    pub fn on_malformed(&mut self, peer: Peer, data: &[u8], problem: &str) {
        self.stats.malformed += 1;
        self.answer_malformed(peer, data, problem);
    }

    /// 400 (513 for size) built from the raw header lines when the mandatory ones are there;
    /// otherwise the message is dropped (no response can be routed, RFC 3261 §8.2).
    fn answer_malformed(&mut self, peer: Peer, data: &[u8], problem: &str) {
        let text = String::from_utf8_lossy(&data[..data.len().min(self.cfg.max_message_bytes)]);
        if text.starts_with("SIP/") || text.trim_start().starts_with("ACK ") {
            return; // responses and ACKs are never answered
        }
        let head = text.split("\r\n\r\n").next().unwrap_or_default();
        let mut lines = head.split("\r\n");
        if !lines.next().is_some_and(|l| l.ends_with("SIP/2.0")) {
            return;
        }
        let mut keep: Vec<(String, String)> = Vec::new();
        for l in lines {
            let Some((n, v)) = l.split_once(':') else {
                continue;
            };
            let n = n.trim();
            let full = match n.to_ascii_lowercase().as_str() {
                "via" | "v" => "Via",
                "from" | "f" => "From",
                "to" | "t" => "To",
                "call-id" | "i" => "Call-ID",
                "cseq" => "CSeq",
                _ => continue,
            };
            keep.push((full.to_owned(), v.trim().to_owned()));
        }
        for need in ["Via", "From", "To", "Call-ID", "CSeq"] {
            if !keep.iter().any(|(n, _)| n == need) {
                return;
            }
        }
        let code = if problem.contains("over the limit") || problem.contains("too large") {
            513
        } else {
            400
        };
        let mut r = Msg {
            start: Start::Response {
                code,
                reason: String::new(),
            },
            headers: keep,
            body: Vec::new(),
        };
        r.push("Warning", self.warning(&clip(problem)));
        self.stats.malformed_answered += 1;
        self.effects.push(Effect::Send(Send {
            peer,
            data: r.to_bytes(),
            token: 0,
        }));
    }

    /// The transport could not deliver a request of a client transaction (TCP refused).
    pub fn on_send_failed(&mut self, now: Instant, wall: SystemTime, token: u64) {
        if let Some(Token::Invite(key)) = self.tokens.get(&token).cloned() {
            if let Some(b) = self
                .calls
                .get(&key)
                .and_then(|c| c.attempt.as_ref())
                .filter(|a| a.token == token)
                .map(|a| a.branch.clone())
            {
                self.txn.abandon(&b);
            }
            self.tokens.remove(&token);
            self.upstream_failed(now, wall, key, None, "upstream unreachable");
        }
    }

    fn arm_tick(&mut self, now: Instant) {
        if self.next_tick.is_none() {
            self.next_tick = Some(now + TICK);
        }
    }

    /// Timers: transactions, balance and duration cut-offs, media timeouts, cleanup.
    pub fn tick(&mut self, now: Instant, wall: SystemTime) {
        for t in self.txn.on_timeout(now) {
            match t {
                TxnTimeout::Client { token, .. } => match self.tokens.remove(&token) {
                    Some(Token::Invite(key)) => {
                        self.upstream_failed(now, wall, key, None, "upstream timeout")
                    }
                    Some(Token::Relayed(r)) => {
                        let resp = r.request.response(408, None);
                        self.txn.respond(now, &r.txn, &resp);
                    }
                    _ => {}
                },
                TxnTimeout::NoAck(key) => {
                    if let Some(k) = self.by_a_txn.get(&key).copied()
                        && self.calls.get(&k).is_some_and(|c| !c.a_acked)
                    {
                        self.end_call(now, wall, k, EndReason::NoAck);
                    }
                }
            }
        }
        if self.next_tick.is_some_and(|t| t <= now) {
            self.next_tick =
                (!self.calls.is_empty() || !self.tokens.is_empty()).then_some(now + TICK);
            for (key, cut) in self.admission.due(now, TICK) {
                let reason = match cut {
                    Cut::Balance => EndReason::Balance,
                    Cut::MaxDuration => EndReason::MaxDuration,
                };
                self.end_call(now, wall, key, reason);
            }
            for media_id in self.media.timed_out(self.cfg.media_timeout) {
                let key = self
                    .calls
                    .values()
                    .find(|c| c.media_id == media_id && c.phase != Phase::Ended)
                    .map(|c| c.key);
                if let Some(key) = key {
                    self.end_call(now, wall, key, EndReason::MediaTimeout);
                }
            }
            let gone: Vec<CallKey> = self
                .calls
                .values()
                .filter(|c| c.ended_at.is_some_and(|t| now.duration_since(t) >= LINGER))
                .map(|c| c.key)
                .collect();
            for key in gone {
                self.forget(key);
            }
            self.ids.expire(now);
        }
    }

    /// The kernel guard dropped SIP from `ip` for flooding (packet or INVITE rate).
    pub fn on_flood(&mut self, now: Instant, ip: IpAddr) {
        if let Some(d) = self.ids.flood(now, ip) {
            warn!(%ip, ban = ?d, "source keeps flooding: banning it");
            self.effects.push(Effect::Ban {
                ip,
                duration: d,
                reason: BanReason::Flood,
            });
        }
    }

    /// Ends every call (BYE or CANCEL both ways) and stops taking new ones.
    pub fn shutdown(&mut self, now: Instant, wall: SystemTime) {
        self.draining = true;
        let keys: Vec<CallKey> = self.calls().map(|c| c.key).collect();
        for k in keys {
            self.end_call(now, wall, k, EndReason::Shutdown);
        }
    }

    // ---------------------------------------------------------------- requests

    fn on_request(&mut self, now: Instant, wall: SystemTime, peer: Peer, req: Msg) {
        let method = req.method().cloned().unwrap_or(Method::Options);
        match self.txn.on_request(now, &req, peer) {
            RequestVerdict::Absorbed => {}
            RequestVerdict::Ack => self.on_ack(now, req),
            RequestVerdict::Cancel(inv) => self.on_cancel(now, wall, inv),
            RequestVerdict::New(key) => {
                if req.max_forwards() == Some(0) && method != Method::Ack {
                    let r = req.response(483, None);
                    self.txn.respond(now, &key, &r);
                    return;
                }
                let to_tag = req.to().tag;
                if to_tag.is_some() {
                    self.in_dialog(now, wall, peer, req, key);
                } else if method == Method::Invite {
                    self.new_call(now, wall, peer, req, key);
                } else {
                    let code = match method {
                        Method::Options => 200,
                        Method::Bye | Method::Update | Method::Info | Method::PRack => 481,
                        _ => 405,
                    };
                    let mut r = req.response(code, Some(&random_hex(6)));
                    if code == 200 || code == 405 {
                        r.push("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO");
                    }
                    self.txn.respond(now, &key, &r);
                }
            }
        }
    }

    fn refuse(&mut self, now: Instant, key: &ServerKey, req: &Msg, code: u16, warning: &str) {
        let mut r = req.response(code, Some(&random_hex(6)));
        r.push("Server", self.cfg.agent.clone());
        if !warning.is_empty() {
            r.push("Warning", self.warning(warning));
        }
        if code == 503 {
            r.push("Retry-After", "1");
        }
        *self.stats.finals.entry(code).or_default() += 1;
        self.txn.respond(now, key, &r);
    }

    /// A CDR for a call refused before it existed.
    fn cdr_refused(
        &mut self,
        wall: SystemTime,
        req: &Msg,
        peer: &Peer,
        account: Option<Id>,
        code: u16,
        reason: &str,
    ) {
        self.stats.failed += 1;
        let ms = unix_ms(wall);
        self.effects.push(Effect::Cdr {
            cdr: CdrDraft {
                call_id: req.call_id().to_owned(),
                start_ms: ms,
                answer_ms: None,
                end_ms: ms,
                caller: req.from().user().to_owned(),
                callee: cld_of(req),
                source: Some(peer.remote),
                account_id: account,
                connection_id: None,
                result_code: code,
                reason: reason.to_owned(),
                duration_secs: 0,
                cost: Micros(0),
            },
            debit: None,
        });
    }

    fn new_call(&mut self, now: Instant, wall: SystemTime, peer: Peer, req: Msg, key: ServerKey) {
        self.stats.invites += 1;
        self.txn.respond(now, &key, &req.response(100, None));
        if self.draining {
            self.refuse(now, &key, &req, 503, "shutting down");
            return;
        }
        if let Some(d) = self
            .ids
            .scanner(now, peer.remote.ip(), req.get("User-Agent"))
        {
            self.effects.push(Effect::Ban {
                ip: peer.remote.ip(),
                duration: d,
                reason: BanReason::Scanner,
            });
            // Scanners get nothing useful back: a 403 without a Warning.
            self.refuse(now, &key, &req, 403, "");
            return;
        }
        let src = peer.remote.ip();
        let cli = req.from().user().to_owned();
        let cld = cld_of(&req);

        // Authentication.
        let account_id = match self.rules.classify(src, &cli, &cld) {
            Classification::IpAuthenticated { account, .. } => account,
            other => {
                let auth = req
                    .get("Authorization")
                    .or_else(|| req.get("Proxy-Authorization"));
                match (other, auth) {
                    (_, Some(h)) => match self.check_digest(now, wall, &req, h, src, &cli, &cld) {
                        Ok(id) => id,
                        Err(Denied::Challenge { stale }) => {
                            self.challenge(now, wall, &key, &req, stale, None);
                            return;
                        }
                        Err(Denied::Refuse(code, why)) => {
                            self.refuse(now, &key, &req, code, why);
                            self.cdr_refused(wall, &req, &peer, None, code, why);
                            return;
                        }
                    },
                    (Classification::Challenge, None) => {
                        self.challenge(now, wall, &key, &req, false, None);
                        return;
                    }
                    _ => {
                        let why = "no matching auth rule";
                        self.refuse(now, &key, &req, 403, why);
                        self.cdr_refused(wall, &req, &peer, None, 403, why);
                        // A stranger trying number after number is enumerating or probing
                        // for an open route: it counts like a failed password.
                        if let Some(d) = self.ids.auth_failed(now, src) {
                            warn!(%src, ban = ?d, "repeated calls matching no rule: banning the source");
                            self.effects.push(Effect::Ban {
                                ip: src,
                                duration: d,
                                reason: BanReason::Enumeration,
                            });
                        }
                        return;
                    }
                }
            }
        };

        // Admission.
        let Some(mut account) = self.rules.account(account_id).cloned() else {
            self.refuse(now, &key, &req, 403, "no matching auth rule");
            return;
        };
        if let Some(b) = self.balances.get(&account.id) {
            account.balance = *b;
        }
        let tariff = account
            .tariff_id
            .and_then(|t| self.tariffs.get(&t))
            .cloned();
        let call_key = self.next_key;
        self.next_key += 1;
        if let Err(refusal) = self
            .admission
            .admit(now, call_key, &account, tariff.as_ref())
        {
            let (code, why) = (refusal.status(), refusal.warning());
            debug!(account = %account.name, %why, "call refused");
            self.refuse(now, &key, &req, code, why);
            self.cdr_refused(wall, &req, &peer, Some(account.id), code, why);
            return;
        }
        // Routing: the candidate list; the first attempt below takes capacity.
        let candidates = self.router.candidates(&cld);
        if candidates.is_empty() {
            self.admission.end(now, call_key);
            self.refuse(now, &key, &req, 404, "no route");
            self.cdr_refused(wall, &req, &peer, Some(account.id), 404, "no route");
            return;
        }

        let a_local = self.local_of(&peer);
        let a_tag = random_hex(8);
        let a = Leg {
            call_id: req.call_id().to_owned(),
            local: format!("{};tag={a_tag}", req.get("To").unwrap_or_default()),
            local_tag: a_tag,
            remote: req.get("From").unwrap_or_default().to_owned(),
            remote_tag: req.from().tag,
            target: req
                .get("Contact")
                .map(|c| NameAddr::parse(c).uri)
                .unwrap_or_else(|| req.from().uri),
            route: req.list("Record-Route"),
            peer,
            local_cseq: 0,
            advertised: a_local.advertised,
        };
        let media_id = format!("sbc-{call_key}-{}", random_hex(4));
        let mut call = Call {
            key: call_key,
            phase: Phase::Trying,
            a,
            a_invite: req.clone(),
            a_txn: key.clone(),
            b: None,
            attempt: None,
            candidates,
            connection: None,
            last_connection: None,
            b_offer: None,
            account: account.id,
            cli,
            cld,
            source: peer.remote,
            source_proto: peer.proto,
            started: wall,
            started_at: now,
            answered: None,
            media_id,
            delayed_offer: !req.has_sdp(),
            b_ack: None,
            a_acked: false,
            last_failure: None,
            recorded: false,
            ended_at: None,
        };
        // Media: anchor the caller's offer once, whichever vendor answers.
        let b_sdp = if call.delayed_offer {
            None
        } else {
            let sdp = String::from_utf8_lossy(&req.body).into_owned();
            match self
                .media
                .offer(&call.media_id, Side::A, &sdp, self.cfg.strict_source)
            {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(error = %e, "cannot anchor the caller's media");
                    self.admission.end(now, call_key);
                    let code = if e.is_sdp_fault() { 488 } else { 503 };
                    self.refuse(now, &key, &req, code, "media anchoring failed");
                    self.cdr_refused(
                        wall,
                        &req,
                        &peer,
                        Some(account.id),
                        code,
                        "media anchoring failed",
                    );
                    return;
                }
            }
        };
        call.b_offer = b_sdp.clone();
        self.effects
            .push(Effect::SourceSession { ip: src, up: true });
        self.by_a.insert(
            (
                call.a.call_id.clone(),
                call.a.remote_tag.clone().unwrap_or_default(),
            ),
            call_key,
        );
        self.by_a_txn.insert(key, call_key);
        self.arm_tick(now);
        let started = self.try_next_upstream(now, &mut call, b_sdp);
        self.calls.insert(call_key, call);
        if let Err((code, why)) = started {
            self.fail_call(now, wall, call_key, code, why);
        }
    }

    fn challenge(
        &mut self,
        now: Instant,
        wall: SystemTime,
        key: &ServerKey,
        req: &Msg,
        stale: bool,
        credential: Option<&Credential>,
    ) {
        self.stats.challenges += 1;
        let challenges = match self.verifier.challenges(stale, credential, wall) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot issue a nonce");
                self.refuse(now, key, req, 500, "cannot issue a nonce");
                return;
            }
        };
        let mut r = req.response(401, Some(&random_hex(6)));
        for c in challenges {
            r.push("WWW-Authenticate", c.to_string());
        }
        self.txn.respond(now, key, &r);
    }

    #[allow(clippy::too_many_arguments)]
    fn check_digest(
        &mut self,
        now: Instant,
        wall: SystemTime,
        req: &Msg,
        header: &str,
        src: IpAddr,
        cli: &str,
        cld: &str,
    ) -> Result<Id, Denied> {
        let auth: DigestAuthorization = match header.parse() {
            Ok(a) => a,
            Err(e) => {
                debug!(error = %e, "unparsable Authorization");
                return Err(Denied::Refuse(400, "bad Authorization header"));
            }
        };
        let account = self.rules.by_sip_user(&auth.username).cloned();
        let result = match account
            .as_ref()
            .and_then(|a| a.sip.as_ref().map(|s| (a, s)))
        {
            Some((_, sip)) => self.verifier.verify(
                &auth,
                req.method()
                    .map_or("INVITE".into(), |m| m.to_string())
                    .as_str(),
                &sip.credential,
                wall,
            ),
            None => Err(DigestError::WrongResponse),
        };
        match result {
            Ok(_) => {
                let account = account.ok_or(Denied::Refuse(403, "bad credentials"))?;
                match self.rules.digest_allowed(account.id, src, cli, cld) {
                    Ok(_) => Ok(account.id),
                    Err(_) => Err(Denied::Refuse(403, "no matching auth rule")),
                }
            }
            Err(e) if e.wants_stale() => Err(Denied::Challenge { stale: true }),
            Err(e) => {
                self.stats.auth_failures += 1;
                debug!(user = %clip(&auth.username), error = %e, %src, "digest refused");
                if let Some(d) = self.ids.auth_failed(now, src) {
                    warn!(%src, ban = ?d, "repeated digest failures: banning the source");
                    self.effects.push(Effect::Ban {
                        ip: src,
                        duration: d,
                        reason: BanReason::BruteForce,
                    });
                }
                if e.is_bad_credentials() || matches!(e, DigestError::WrongResponse) {
                    Err(Denied::Refuse(403, "bad credentials"))
                } else {
                    Err(Denied::Challenge { stale: false })
                }
            }
        }
    }

    /// Starts an attempt on the next candidate connection with free capacity. `Err` with the
    /// final answer when none is left.
    fn try_next_upstream(
        &mut self,
        now: Instant,
        call: &mut Call,
        sdp: Option<String>,
    ) -> Result<(), (u16, &'static str)> {
        let mut capped = false;
        while !call.candidates.is_empty() {
            let id = call.candidates.remove(0);
            let Some(conn) = self.router.connection(id).cloned() else {
                continue;
            };
            let Some(proto) = (match conn.transport {
                Transport::Udp => Some(Proto::Udp),
                Transport::Tcp => Some(Proto::Tcp),
                Transport::Tls => None,
            }) else {
                warn!(connection = %conn.name, "TLS upstreams are not supported yet; skipped");
                continue;
            };
            let Some(dest) = resolve(&conn) else {
                warn!(connection = %conn.name, host = %conn.host, "cannot resolve upstream");
                continue;
            };
            let Some(local) = self.local_for(proto, dest.ip()) else {
                warn!(connection = %conn.name, proto = proto.via_name(), "no local SIP address for this upstream's transport and family");
                continue;
            };
            match self.router.try_take(id, now) {
                Ok(()) => {}
                Err(CapFull::Channels) | Err(CapFull::Cps) => {
                    capped = true;
                    continue;
                }
            }
            call.connection = Some(id);
            call.last_connection = Some(id);
            self.send_b_invite(now, call, &conn, dest, local, sdp.clone());
            return Ok(());
        }
        if capped {
            Err((503, "upstream capacity"))
        } else if let Some(code) = call.last_failure {
            Err((if code == 408 { 503 } else { code }, "upstream failed"))
        } else if call.attempt.is_none() && call.b.is_none() {
            Err((503, "no usable upstream"))
        } else {
            Err((503, "upstream failed"))
        }
    }

    fn send_b_invite(
        &mut self,
        now: Instant,
        call: &mut Call,
        conn: &Connection,
        dest: SocketAddr,
        local: Local,
        sdp: Option<String>,
    ) {
        let uri_text = format!(
            "sip:{}@{}{}",
            call.cld,
            host_port(dest),
            if local.proto == Proto::Tcp {
                ";transport=tcp"
            } else {
                ""
            }
        );
        let uri = rsip::Uri::try_from(uri_text.as_str()).unwrap_or_default();
        let tag = random_hex(8);
        let call_id = format!("{}@{}", random_hex(12), host(local.advertised.ip()));
        let caller = call.a_invite.from();
        let (from, to) = if self.cfg.topology_hiding {
            (
                format!(
                    "<sip:{}@{}>;tag={tag}",
                    call.cli,
                    host(local.advertised.ip())
                ),
                format!("<sip:{}@{}>", call.cld, host_port(dest)),
            )
        } else {
            let display = caller
                .display
                .as_ref()
                .map(|d| format!("\"{d}\" "))
                .unwrap_or_default();
            (
                format!("{display}<{}>;tag={tag}", caller.uri),
                format!("<sip:{}@{}>", call.cld, host_port(dest)),
            )
        };
        let branch = new_branch();
        let mut inv = Msg::request(Method::Invite, uri);
        inv.push("Via", via_for(local.proto, local.advertised, &branch));
        let mf = call
            .a_invite
            .max_forwards()
            .unwrap_or(70)
            .saturating_sub(1)
            .max(1);
        inv.push("Max-Forwards", mf.to_string());
        inv.push("From", from.clone());
        inv.push("To", to.clone());
        inv.push("Call-ID", call_id.clone());
        inv.push("CSeq", "1 INVITE");
        inv.push("Contact", self.contact(&local));
        inv.push("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO");
        if self.cfg.topology_hiding {
            inv.push("User-Agent", self.cfg.agent.clone());
        } else {
            for h in [
                "User-Agent",
                "P-Asserted-Identity",
                "Remote-Party-ID",
                "Privacy",
            ] {
                for v in call
                    .a_invite
                    .get_all(h)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
                {
                    inv.push(h, v);
                }
            }
        }
        if let Some(s) = sdp {
            inv.push("Content-Type", "application/sdp");
            inv.body = s.into_bytes();
        }
        let peer = Peer {
            proto: local.proto,
            remote: dest,
            local: local.bind,
            conn: None,
        };
        if let Some(old) = call.b.take() {
            self.by_b.remove(&old.call_id);
        }
        call.b = Some(Leg {
            call_id: call_id.clone(),
            local: from,
            local_tag: tag,
            remote: to,
            remote_tag: None,
            target: uri_text,
            route: Vec::new(),
            peer,
            local_cseq: 1,
            advertised: local.advertised,
        });
        self.by_b.insert(call_id, call.key);
        let token = self.token(Token::Invite(call.key));
        debug!(call = call.key, connection = %conn.name, %dest, "INVITE upstream");
        self.txn.send_request(now, &inv, peer, token);
        call.attempt = Some(Attempt {
            connection: conn.id,
            branch,
            token,
            invite: inv,
            provisional: false,
        });
    }

    fn on_cancel(&mut self, now: Instant, wall: SystemTime, inv: ServerKey) {
        let Some(key) = self.by_a_txn.get(&inv).copied() else {
            return;
        };
        let Some(mut call) = self.calls.remove(&key) else {
            return;
        };
        if call.phase == Phase::Trying {
            let resp = call.a_invite.response(487, Some(&call.a.local_tag));
            self.txn.respond(now, &inv, &resp);
            *self.stats.finals.entry(487).or_default() += 1;
            self.cancel_attempt(now, &mut call);
            self.calls.insert(key, call);
            self.finish(now, wall, key, 487, "cancelled");
        } else {
            self.calls.insert(key, call);
        }
    }

    /// CANCELs the attempt in flight (RFC 3261 §9.1: only after a provisional; before one,
    /// the attempt is abandoned and a late 2xx is ACKed and BYEd).
    fn cancel_attempt(&mut self, _now: Instant, call: &mut Call) {
        let Some(att) = call.attempt.as_ref() else {
            return;
        };
        let Some(b) = call.b.as_ref() else {
            return;
        };
        let inv = &att.invite;
        let mut cancel = Msg::request(Method::Cancel, inv.uri().cloned().unwrap_or_default());
        for (n, v) in &inv.headers {
            let n_l = n.to_ascii_lowercase();
            if matches!(
                n_l.as_str(),
                "via" | "from" | "to" | "call-id" | "route" | "max-forwards"
            ) {
                cancel.push(n, v.clone());
            }
        }
        cancel.push("CSeq", format!("{} CANCEL", inv.cseq().0));
        // The CANCEL shares the INVITE's branch; send it outside the transaction table so it
        // is not mistaken for the INVITE's, retransmitted by hand is not needed for TCP and
        // a lost CANCEL over UDP ends in the INVITE's timeout anyway.
        self.effects.push(Effect::Send(Send {
            peer: b.peer,
            data: cancel.to_bytes(),
            token: 0,
        }));
    }

    fn on_ack(&mut self, now: Instant, ack: Msg) {
        let from_tag = ack.from().tag.unwrap_or_default();
        let key = self
            .by_a
            .get(&(ack.call_id().to_owned(), from_tag))
            .copied()
            .map(|k| (k, true))
            .or_else(|| self.by_b.get(ack.call_id()).map(|k| (*k, false)));
        let Some((key, from_a)) = key else {
            self.stats.stray += 1;
            return;
        };
        let Some(mut call) = self.calls.remove(&key) else {
            return;
        };
        if from_a {
            if !call.a_acked {
                call.a_acked = true;
                self.txn.acked(&call.a_txn);
            }
            // Delayed offer: the caller's answer is in its ACK; the vendor's ACK carries it.
            if call.delayed_offer && call.b_ack.is_none() && call.phase == Phase::Answered {
                let sdp = String::from_utf8_lossy(&ack.body).into_owned();
                let body = if ack.has_sdp() {
                    self.media
                        .answer(&call.media_id, Side::A, &sdp, self.cfg.strict_source)
                        .ok()
                } else {
                    None
                };
                self.ack_b(now, &mut call, body);
            }
            // ACKs of re-INVITEs relayed A→B were answered by us toward B already.
        }
        self.calls.insert(key, call);
    }

    /// ACK for the vendor's 2xx (a new transaction-less request, RFC 3261 §13.2.2.4).
    fn ack_b(&mut self, _now: Instant, call: &mut Call, sdp: Option<String>) {
        let Some(b) = call.b.as_ref() else {
            return;
        };
        let cseq = call.attempt.as_ref().map_or(1, |a| a.invite.cseq().0);
        let mut ack = dialog_request(b, Method::Ack, cseq, &self.cfg.agent);
        if let Some(s) = sdp {
            ack.push("Content-Type", "application/sdp");
            ack.body = s.into_bytes();
        }
        self.effects.push(Effect::Send(Send {
            peer: b.peer,
            data: ack.to_bytes(),
            token: 0,
        }));
        call.b_ack = Some(ack);
    }

    fn in_dialog(&mut self, now: Instant, wall: SystemTime, peer: Peer, req: Msg, key: ServerKey) {
        let from_tag = req.from().tag.unwrap_or_default();
        let found = self
            .by_a
            .get(&(req.call_id().to_owned(), from_tag))
            .map(|k| (*k, true))
            .or_else(|| self.by_b.get(req.call_id()).map(|k| (*k, false)));
        let Some((call_key, from_a)) = found else {
            let r = req.response(481, None);
            self.txn.respond(now, &key, &r);
            return;
        };
        let method = req.method().cloned().unwrap_or(Method::Options);
        let Some(mut call) = self.calls.remove(&call_key) else {
            let r = req.response(481, None);
            self.txn.respond(now, &key, &r);
            return;
        };
        // Latch the peer's transport details for requests we send later (TCP connection).
        let leg = if from_a {
            Some(&mut call.a)
        } else {
            call.b.as_mut()
        };
        if let Some(l) = leg {
            l.peer.conn = peer.conn.or(l.peer.conn);
        }
        let answered = call.phase == Phase::Answered;
        self.calls.insert(call_key, call);
        if !answered {
            // Requests inside an early or ended dialog: BYE before answer ends it; the rest
            // are refused (we do not relay early-dialog requests such as PRACK/UPDATE).
            if method == Method::Bye {
                let r = req.response(200, None);
                self.txn.respond(now, &key, &r);
                if self
                    .calls
                    .get(&call_key)
                    .is_some_and(|c| c.phase == Phase::Trying)
                {
                    let mut call = self.calls.remove(&call_key).expect("present");
                    self.cancel_attempt(now, &mut call);
                    let resp = call.a_invite.response(487, Some(&call.a.local_tag));
                    let a_txn = call.a_txn.clone();
                    self.calls.insert(call_key, call);
                    self.txn.respond(now, &a_txn, &resp);
                    self.finish(now, wall, call_key, 487, "caller hung up before answer");
                }
            } else {
                let r = req.response(if method == Method::PRack { 481 } else { 491 }, None);
                self.txn.respond(now, &key, &r);
            }
            return;
        }
        if method == Method::Bye {
            let r = req.response(200, None);
            self.txn.respond(now, &key, &r);
            let reason = if from_a {
                EndReason::CallerHangup
            } else {
                EndReason::CalleeHangup
            };
            self.end_call_from(now, wall, call_key, reason, Some(from_a));
            return;
        }
        self.relay_request(now, call_key, from_a, req, key);
    }

    /// Relays an in-dialog request (re-INVITE, UPDATE, INFO, OPTIONS, …) to the other leg.
    fn relay_request(
        &mut self,
        now: Instant,
        call_key: CallKey,
        from_a: bool,
        req: Msg,
        key: ServerKey,
    ) {
        let Some(mut call) = self.calls.remove(&call_key) else {
            return;
        };
        let method = req.method().cloned().unwrap_or(Method::Options);
        let side = if from_a { Side::A } else { Side::B };
        let body = if req.has_sdp() && matches!(method, Method::Invite | Method::Update) {
            let sdp = String::from_utf8_lossy(&req.body).into_owned();
            match self
                .media
                .offer(&call.media_id, side, &sdp, self.cfg.strict_source)
            {
                Ok(s) => Some(("application/sdp".to_owned(), s.into_bytes())),
                Err(e) => {
                    warn!(error = %e, "re-offer refused by the relay");
                    self.calls.insert(call_key, call);
                    let r = req.response(488, None);
                    self.txn.respond(now, &key, &r);
                    return;
                }
            }
        } else if !req.body.is_empty() {
            Some((
                req.get("Content-Type")
                    .unwrap_or("application/octet-stream")
                    .to_owned(),
                req.body.clone(),
            ))
        } else {
            None
        };
        let agent = self.cfg.agent.clone();
        let other = if from_a {
            call.b.as_mut()
        } else {
            Some(&mut call.a)
        };
        let Some(other) = other else {
            self.calls.insert(call_key, call);
            let r = req.response(481, None);
            self.txn.respond(now, &key, &r);
            return;
        };
        let cseq = other.next_cseq();
        let mut out = dialog_request(other, method, cseq, &agent);
        if let Some((ct, b)) = body {
            out.push("Content-Type", ct);
            out.body = b;
        }
        for h in [
            "Event",
            "Subscription-State",
            "Info-Package",
            "Session-Expires",
            "Min-SE",
        ] {
            if let Some(v) = req.get(h) {
                out.push(h, v.to_owned());
            }
        }
        let peer = other.peer;
        self.calls.insert(call_key, call);
        let token = self.token(Token::Relayed(Box::new(Relayed {
            call: call_key,
            from_a,
            txn: key,
            request: req,
        })));
        self.txn.send_request(now, &out, peer, token);
    }

    // ---------------------------------------------------------------- responses

    fn on_response(&mut self, now: Instant, wall: SystemTime, resp: Msg) {
        let ResponseVerdict::Deliver { token, .. } = self.txn.on_response(now, &resp) else {
            return;
        };
        let code = resp.code().unwrap_or(500);
        match self.tokens.get(&token).cloned() {
            Some(Token::Invite(key)) => {
                if code >= 200 {
                    self.tokens.remove(&token);
                }
                self.on_invite_response(now, wall, key, token, resp)
            }
            Some(Token::Relayed(r)) => {
                if code >= 200 {
                    self.tokens.remove(&token);
                }
                self.on_relayed_response(now, *r, resp);
            }
            Some(Token::Fire) => {
                if code >= 200 {
                    self.tokens.remove(&token);
                }
            }
            None => {
                // A 2xx for an INVITE whose token is gone: a retransmission of the answer we
                // took (re-ACK it), or an answer after we gave up on the attempt (ACK and
                // hang it up, or the vendor bills a call nobody hears).
                if (200..300).contains(&code)
                    && resp.cseq().1 == "INVITE"
                    && let Some(k) = self.by_b.get(resp.call_id()).copied()
                    && let Some(c) = self.calls.remove(&k)
                {
                    match (c.b_ack.as_ref(), c.b.as_ref()) {
                        (Some(ack), Some(b)) => {
                            let data = ack.to_bytes();
                            let peer = b.peer;
                            self.effects.push(Effect::Send(Send {
                                peer,
                                data,
                                token: 0,
                            }));
                        }
                        _ if c.phase == Phase::Ended => self.ack_and_bye_stray(now, &c, &resp),
                        _ => {}
                    }
                    self.calls.insert(k, c);
                }
            }
        }
    }

    fn on_invite_response(
        &mut self,
        now: Instant,
        wall: SystemTime,
        key: CallKey,
        token: u64,
        resp: Msg,
    ) {
        let code = resp.code().unwrap_or(500);
        let Some(mut call) = self.calls.remove(&key) else {
            return;
        };
        let current = call.attempt.as_ref().is_some_and(|a| a.token == token);
        // A 2xx for an attempt we gave up on (cancelled, failed over, or the call ended):
        // complete it and hang it up at once.
        if (200..300).contains(&code) && (!current || call.phase != Phase::Trying) {
            if call.phase == Phase::Answered && current {
                // Retransmission of the 2xx we already took: re-ACK.
                if let (Some(ack), Some(b)) = (call.b_ack.as_ref(), call.b.as_ref()) {
                    let (peer, data) = (b.peer, ack.to_bytes());
                    self.effects.push(Effect::Send(Send {
                        peer,
                        data,
                        token: 0,
                    }));
                }
            } else {
                self.ack_and_bye_stray(now, &call, &resp);
            }
            self.calls.insert(key, call);
            return;
        }
        if !current || call.phase != Phase::Trying {
            self.calls.insert(key, call);
            return;
        }
        if code < 200 {
            if let Some(a) = call.attempt.as_mut() {
                a.provisional = true;
            }
            if code > 100 {
                let mut r = call.a_invite.response(code, Some(&call.a.local_tag));
                r.push("Contact", self.contact(&self.local_of(&call.a.peer)));
                if resp.has_sdp() {
                    if let Some(b) = call.b.as_mut() {
                        b.remote_tag = resp.to().tag;
                    }
                    let sdp = String::from_utf8_lossy(&resp.body).into_owned();
                    if let Ok(s) =
                        self.media
                            .answer(&call.media_id, Side::B, &sdp, self.cfg.strict_source)
                    {
                        r.push("Content-Type", "application/sdp");
                        r.body = s.into_bytes();
                    }
                }
                self.txn.respond(now, &call.a_txn, &r);
            }
            self.calls.insert(key, call);
            return;
        }
        if code < 300 {
            self.answered(now, wall, call, resp);
            return;
        }
        // Failure: 5xx and 408 fail over to the next connection; others go to the caller.
        if let Some(id) = call.connection.take() {
            self.router.release(id);
        }
        call.attempt = None;
        call.last_failure = Some(code);
        if (500..600).contains(&code) || code == 408 {
            let sdp = call.attempt_sdp();
            match self.try_next_upstream(now, &mut call, sdp) {
                Ok(()) => {
                    self.calls.insert(key, call);
                }
                Err((c, why)) => {
                    self.calls.insert(key, call);
                    self.fail_call(now, wall, key, c, why);
                }
            }
            return;
        }
        self.calls.insert(key, call);
        let why = format!("upstream answered {code}");
        self.fail_call_owned(now, wall, key, code, why);
    }

    fn upstream_failed(
        &mut self,
        now: Instant,
        wall: SystemTime,
        key: CallKey,
        code: Option<u16>,
        why: &'static str,
    ) {
        let Some(mut call) = self.calls.remove(&key) else {
            return;
        };
        if call.phase != Phase::Trying {
            self.calls.insert(key, call);
            return;
        }
        info!(call = key, why, "upstream attempt failed");
        if let Some(id) = call.connection.take() {
            self.router.release(id);
        }
        if let Some(a) = call.attempt.take() {
            self.tokens.remove(&a.token);
        }
        call.last_failure = Some(code.unwrap_or(408));
        let sdp = call.attempt_sdp();
        let res = self.try_next_upstream(now, &mut call, sdp);
        self.calls.insert(key, call);
        if let Err((c, w)) = res {
            self.fail_call(now, wall, key, c, w);
        }
    }

    fn ack_and_bye_stray(&mut self, now: Instant, call: &Call, resp: &Msg) {
        let Some(b) = call.b.as_ref() else {
            return;
        };
        let mut leg = b.clone();
        leg.remote_tag = resp.to().tag;
        leg.remote = resp.get("To").unwrap_or_default().to_owned();
        if let Some(c) = resp.get("Contact") {
            leg.target = NameAddr::parse(c).uri;
        }
        leg.route = resp.list("Record-Route").into_iter().rev().collect();
        let ack = dialog_request(&leg, Method::Ack, resp.cseq().0, &self.cfg.agent);
        self.effects.push(Effect::Send(Send {
            peer: leg.peer,
            data: ack.to_bytes(),
            token: 0,
        }));
        let cseq = leg.next_cseq();
        let bye = dialog_request(&leg, Method::Bye, cseq, &self.cfg.agent);
        let token = self.token(Token::Fire);
        self.txn.send_request(now, &bye, leg.peer, token);
    }

    fn answered(&mut self, now: Instant, wall: SystemTime, mut call: Call, resp: Msg) {
        let key = call.key;
        self.stats.answered += 1;
        if let Some(b) = call.b.as_mut() {
            b.remote_tag = resp.to().tag;
            b.remote = resp.get("To").unwrap_or_default().to_owned();
            if let Some(c) = resp.get("Contact") {
                b.target = NameAddr::parse(c).uri;
            }
            b.route = resp.list("Record-Route").into_iter().rev().collect();
        }
        let sdp = String::from_utf8_lossy(&resp.body).into_owned();
        let a_body = if !resp.has_sdp() {
            None
        } else if call.delayed_offer {
            self.media
                .offer(&call.media_id, Side::B, &sdp, self.cfg.strict_source)
                .ok()
        } else {
            match self
                .media
                .answer(&call.media_id, Side::B, &sdp, self.cfg.strict_source)
            {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(call = key, error = %e, "relay refused the answer; media may not flow");
                    None
                }
            }
        };
        call.phase = Phase::Answered;
        call.answered = Some(wall);
        self.admission.answered(now, key);
        let mut r = call.a_invite.response(200, Some(&call.a.local_tag));
        r.push("Contact", self.contact(&self.local_of(&call.a.peer)));
        r.push("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO");
        if let Some(s) = a_body {
            r.push("Content-Type", "application/sdp");
            r.body = s.into_bytes();
        }
        if !self.cfg.topology_hiding
            && let Some(s) = resp.get("Server")
        {
            r.push("Server", s.to_owned());
        } else {
            r.push("Server", self.cfg.agent.clone());
        }
        *self.stats.finals.entry(200).or_default() += 1;
        self.txn.respond(now, &call.a_txn, &r);
        if !call.delayed_offer {
            self.ack_b(now, &mut call, None);
        }
        debug!(call = key, cli = %call.cli, cld = %call.cld, "call answered");
        self.calls.insert(key, call);
    }

    fn on_relayed_response(&mut self, now: Instant, r: Relayed, resp: Msg) {
        let code = resp.code().unwrap_or(500);
        let Some(call) = self.calls.remove(&r.call) else {
            return;
        };
        let method = r.request.method().cloned().unwrap_or(Method::Options);
        let tag = if r.from_a {
            call.a.local_tag.clone()
        } else {
            call.b
                .as_ref()
                .map(|b| b.local_tag.clone())
                .unwrap_or_default()
        };
        let mut out = r.request.response(code, Some(&tag));
        if (200..300).contains(&code) && matches!(method, Method::Invite | Method::Update) {
            let local = if r.from_a {
                self.local_of(&call.a.peer)
            } else {
                call.b
                    .as_ref()
                    .map(|b| self.local_of(&b.peer))
                    .unwrap_or(self.local_of(&call.a.peer))
            };
            out.push("Contact", self.contact(&local));
            if resp.has_sdp() {
                let side = if r.from_a { Side::B } else { Side::A };
                let sdp = String::from_utf8_lossy(&resp.body).into_owned();
                if let Ok(s) = self
                    .media
                    .answer(&call.media_id, side, &sdp, self.cfg.strict_source)
                {
                    out.push("Content-Type", "application/sdp");
                    out.body = s.into_bytes();
                }
            }
            if method == Method::Invite {
                // ACK the re-INVITE on the answering leg now; the originator's ACK is absorbed.
                let leg = if r.from_a {
                    call.b.as_ref()
                } else {
                    Some(&call.a)
                };
                if let Some(leg) = leg {
                    let mut leg = leg.clone();
                    if let Some(c) = resp.get("Contact") {
                        leg.target = NameAddr::parse(c).uri;
                    }
                    let ack = dialog_request(&leg, Method::Ack, resp.cseq().0, &self.cfg.agent);
                    self.effects.push(Effect::Send(Send {
                        peer: leg.peer,
                        data: ack.to_bytes(),
                        token: 0,
                    }));
                }
            }
        } else if !resp.body.is_empty() && code >= 200 {
            if let Some(ct) = resp.get("Content-Type") {
                out.push("Content-Type", ct.to_owned());
            }
            out.body = resp.body.clone();
        }
        self.calls.insert(r.call, call);
        self.txn.respond(now, &r.txn, &out);
        if method == Method::Invite && (200..300).contains(&code) {
            self.txn.acked(&r.txn);
        }
    }

    // ---------------------------------------------------------------- endings

    fn fail_call(
        &mut self,
        now: Instant,
        wall: SystemTime,
        key: CallKey,
        code: u16,
        why: &'static str,
    ) {
        self.fail_call_owned(now, wall, key, code, why.to_owned());
    }

    /// The call ends before answer with `code` to the caller.
    fn fail_call_owned(
        &mut self,
        now: Instant,
        wall: SystemTime,
        key: CallKey,
        code: u16,
        why: String,
    ) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        let mut r = call.a_invite.response(code, Some(&call.a.local_tag));
        r.push("Warning", self.warning(&why));
        r.push("Server", self.cfg.agent.clone());
        if code == 503 {
            r.push("Retry-After", "1");
        }
        let txn = call.a_txn.clone();
        *self.stats.finals.entry(code).or_default() += 1;
        self.txn.respond(now, &txn, &r);
        debug!(call = key, code, %why, "call failed");
        self.finish(now, wall, key, code, &why);
    }

    /// Ends a call from our side: BYE both legs when answered, CANCEL + 487/503 before.
    pub fn end_call(&mut self, now: Instant, wall: SystemTime, key: CallKey, reason: EndReason) {
        self.end_call_from(now, wall, key, reason, None);
    }

    /// `from_a`: the leg that sent a BYE (it is not sent one back).
    fn end_call_from(
        &mut self,
        now: Instant,
        wall: SystemTime,
        key: CallKey,
        reason: EndReason,
        from_a: Option<bool>,
    ) {
        let Some(mut call) = self.calls.remove(&key) else {
            return;
        };
        match call.phase {
            Phase::Ended => {
                self.calls.insert(key, call);
            }
            Phase::Trying => {
                self.cancel_attempt(now, &mut call);
                self.calls.insert(key, call);
                let code = if reason == EndReason::Shutdown {
                    503
                } else {
                    487
                };
                self.fail_call(now, wall, key, code, reason.text());
            }
            Phase::Answered => {
                let agent = self.cfg.agent.clone();
                if from_a != Some(true) {
                    let cseq = call.a.next_cseq();
                    let mut bye = dialog_request(&call.a, Method::Bye, cseq, &agent);
                    bye.push(
                        "Reason",
                        format!("SIP;cause=200;text=\"{}\"", reason.text()),
                    );
                    let token = self.token(Token::Fire);
                    self.txn.send_request(now, &bye, call.a.peer, token);
                }
                if from_a != Some(false)
                    && let Some(b) = call.b.as_mut()
                {
                    let cseq = b.next_cseq();
                    let mut bye = dialog_request(b, Method::Bye, cseq, &agent);
                    bye.push(
                        "Reason",
                        format!("SIP;cause=200;text=\"{}\"", reason.text()),
                    );
                    let peer = b.peer;
                    let token = self.token(Token::Fire);
                    self.txn.send_request(now, &bye, peer, token);
                }
                debug!(call = key, reason = reason.text(), "call ended");
                self.calls.insert(key, call);
                self.finish(now, wall, key, 200, reason.text());
            }
        }
    }

    /// Writes the CDR, settles billing, frees capacity and media; the call lingers to absorb
    /// retransmissions.
    fn finish(&mut self, now: Instant, wall: SystemTime, key: CallKey, code: u16, why: &str) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if call.recorded {
            return;
        }
        call.recorded = true;
        call.phase = Phase::Ended;
        call.ended_at = Some(now);
        if let Some(id) = call.connection.take() {
            self.router.release(id);
        }
        let ended = self.admission.end(now, key);
        let (duration, cost) = ended
            .as_ref()
            .map_or((0, Micros(0)), |e| (e.duration_secs, e.cost));
        let debit = (cost.0 > 0).then_some((call.account, cost));
        if let Some((id, c)) = debit {
            let b = self.balances.entry(id).or_insert(Micros(0));
            b.0 = b.0.saturating_sub(c.0);
            let nb = *b;
            self.admission.set_balance(id, nb);
        }
        if code != 200 {
            self.stats.failed += 1;
        }
        self.media.delete(&call.media_id);
        self.effects.push(Effect::SourceSession {
            ip: call.source.ip(),
            up: false,
        });
        let cdr = CdrDraft {
            call_id: call.a.call_id.clone(),
            start_ms: unix_ms(call.started),
            answer_ms: call.answered.map(unix_ms),
            end_ms: unix_ms(wall),
            caller: call.cli.clone(),
            callee: call.cld.clone(),
            source: Some(call.source),
            account_id: Some(call.account),
            connection_id: call.last_connection,
            result_code: code,
            reason: why.to_owned(),
            duration_secs: duration,
            cost,
        };
        self.effects.push(Effect::Cdr { cdr, debit });
    }

    fn forget(&mut self, key: CallKey) {
        if let Some(call) = self.calls.remove(&key) {
            self.by_a.remove(&(
                call.a.call_id.clone(),
                call.a.remote_tag.clone().unwrap_or_default(),
            ));
            self.by_a_txn.remove(&call.a_txn);
            if let Some(b) = call.b {
                self.by_b.remove(&b.call_id);
            }
            self.tokens.retain(|_, t| match t {
                Token::Invite(k) => *k != key,
                Token::Relayed(r) => r.call != key,
                Token::Fire => true,
            });
        }
    }
}

enum Denied {
    Challenge { stale: bool },
    Refuse(u16, &'static str),
}

impl Call {
    /// The SDP sent to upstreams (the anchored offer), re-used on failover.
    fn attempt_sdp(&self) -> Option<String> {
        self.b_offer.clone()
    }
}

/// A request inside `leg`'s dialog from us (RFC 3261 §12.2.1.1).
fn dialog_request(leg: &Leg, method: Method, cseq: u32, agent: &str) -> Msg {
    let uri = rsip::Uri::try_from(leg.target.as_str())
        .or_else(|_| rsip::Uri::try_from(format!("sip:{}", host_port(leg.peer.remote)).as_str()))
        .unwrap_or_default();
    let mut m = Msg::request(method, uri);
    m.push(
        "Via",
        via_for(leg.peer.proto, leg.advertised, &new_branch()),
    );
    m.push("Max-Forwards", "70");
    for r in &leg.route {
        m.push("Route", r.clone());
    }
    m.push("From", leg.local.clone());
    let to = match (&leg.remote_tag, NameAddr::parse(&leg.remote).tag) {
        (Some(t), None) => format!("{};tag={t}", leg.remote),
        _ => leg.remote.clone(),
    };
    m.push("To", to);
    m.push("Call-ID", leg.call_id.clone());
    m.push("CSeq", format!("{cseq} {method}"));
    if matches!(method, Method::Invite | Method::Update) {
        let contact = match leg.peer.proto {
            Proto::Udp => format!("<sip:sbc@{}>", host_port(leg.advertised)),
            Proto::Tcp => format!("<sip:sbc@{};transport=tcp>", host_port(leg.advertised)),
        };
        m.push("Contact", contact);
    }
    m.push("User-Agent", agent.to_owned());
    m
}

/// The called number: the Request-URI's user part, else the To's.
fn cld_of(req: &Msg) -> String {
    match req.uri().and_then(|u| u.auth.as_ref()) {
        Some(a) if !a.user.is_empty() => a.user.clone(),
        _ => req.to().user().to_owned(),
    }
}

fn resolve(conn: &Connection) -> Option<SocketAddr> {
    if let Ok(ip) = conn.host.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, conn.port));
    }
    (conn.host.as_str(), conn.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
