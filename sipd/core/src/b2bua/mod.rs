//! The call core: a back-to-back user agent, sans-IO.
//!
//! The carrier's dialog (leg A, we are its UAS) and the vendor's (leg B, we are its UAC) are
//! separate: peers see only our addresses, Call-IDs and tags (topology hiding), and every
//! per-call decision happens here, in the design's order: firewall (done by the shell before
//! bytes arrive) → authentication ([`gate`]) → admission → routing ([`outgoing`]) → media
//! anchoring → dialog (`dialog.rs`) → endings and CDRs (`ending.rs`).
//!
//! Input is bytes with where they came from and the time, and the answers to the name
//! look-ups the core asked for; output is [`Effect`]s (messages to send, CDRs to store, kernel
//! session counts, bans, names to resolve). Nothing here blocks or does I/O, so the tests
//! drive whole calls on a fake clock.
//!
//! The parts with state of their own ([`gate::AuthGate`], [`outgoing::Outgoing`],
//! [`table::CallTable`], [`Admission`], the media) are owned by [`Core`] and answer it with
//! values; only the core turns those into effects, so no part calls back into another.

mod adopt;
pub mod call;
mod dialog;
mod ending;
pub mod gate;
pub mod ids;
mod incoming;
pub mod locals;
pub mod media;
pub mod names;
pub mod outgoing;
pub mod saved;
pub mod table;
mod upstream;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use tracing::debug;

use crate::auth::digest::DigestVerifier;
use crate::policy::admission::{Admission, Cut};
use crate::policy::routing::Router;
use crate::policy::rules::RuleSet;
use crate::records::{
    CdrDraft, Connection, Id, Micros, RefusalChanges, RefusalRow, RefusalTable, Tariff, unix_ms,
};
use crate::sip::malformed::{self, Malformed};
use crate::sip::txn::{TxnLayer, TxnTimeout};
use crate::sip::{Msg, Peer, Transmit};

pub use adopt::Adopted;
use call::Relayed;
pub use call::{Call, CallKey, Phase};
use gate::AuthGate;
pub use ids::Offence;
pub use locals::Local;
use locals::{Locals, contact};
pub use media::{Adoption, Media, MediaError, Side};
use outgoing::{Outgoing, Presentation};
pub use saved::{SavedCall, SavedLeg, SavedPhase};
use table::CallTable;

/// The methods we take, in Allow headers.
pub(crate) const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO";

/// The call core's settings, from `sbc.toml`.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Our SIP addresses; the first names us in Warning headers.
    pub locals: Vec<Local>,
    /// Hide the caller's identity headers upstream: From rewritten to our address, our
    /// User-Agent instead of the caller's (and P-Asserted-Identity, Remote-Party-ID, Privacy).
    pub topology_hiding: bool,
    /// Largest SIP message taken, in bytes; a larger one gets 513.
    pub max_message_bytes: usize,
    /// A call whose media stopped this long is ended (`media timeout`).
    pub media_timeout: Duration,
    /// Once the relay learns a media peer, drop packets from any other source (RTP bleed).
    pub strict_source: bool,
    /// An upstream that sends no provisional within this is failed over.
    pub failover_after: Duration,
    /// Thresholds and bans of the IDS.
    pub ids: ids::IdsConfig,
    /// Server/User-Agent we announce (generic by default: no product or version).
    pub agent: String,
    /// Rows of the refusal table ((source, reason) pairs counted before authentication).
    pub max_refusal_rows: usize,
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A message to put on the wire.
    Send(Transmit),
    /// Store the CDR and, for a billed call, debit the account, in one atomic write that
    /// also removes the call's saved record. For an answered call the write must be durable
    /// before the messages that follow it in the same batch go out (the BYE's 200).
    Cdr {
        /// The record to store.
        cdr: CdrDraft,
        /// The account and amount to take off its balance; `None` for a call that cost nothing.
        debit: Option<(Id, Micros)>,
        /// The key ([`SavedCall::media_id`]) of the call's saved record, if it has one.
        saved: Option<String>,
    },
    /// Persist (replace) a call's record so a later run can adopt it. With `hold`, the write
    /// must be durable before the messages that follow it in the same batch go out (the 2xx
    /// to the caller: a caller never hears an answer a crash could forget); without, it may
    /// even be dropped by a writer that cannot keep up (a call in setup).
    SaveCall {
        /// The record.
        call: Box<SavedCall>,
        /// Hold this batch's messages until it is durable.
        hold: bool,
    },
    /// A call from `ip` started (`up`) or ended: the kernel's per-source session count.
    SourceSession {
        /// The caller's address.
        ip: IpAddr,
        /// `true` when a call started, `false` when it ended.
        up: bool,
    },
    /// Ban `ip` in the kernel for `duration`, for `offence`.
    Ban {
        /// The source to ban.
        ip: IpAddr,
        /// How long.
        duration: Duration,
        /// Why (the shell maps it to the data plane's ban reason).
        offence: Offence,
        /// The source's first offence as the IDS recorded it (the ban list's first seen).
        first_offence: Instant,
    },
    /// Look up `host`'s addresses and answer with [`Core::on_resolved`]; calls wait for it.
    Resolve {
        /// A connection's host name.
        host: String,
    },
    /// A call was admitted and is being set up (for the management API's event stream).
    CallStarted(CallInfo),
    /// A call ended (its CDR follows in an [`Effect::Cdr`]).
    CallEnded {
        /// The core's key for the call (the API's call id).
        id: CallKey,
        /// Why, as the CDR's `reason` says it.
        cause: String,
        /// Who ended it, as the CDR's `hung_up_by` says it.
        hung_up_by: String,
    },
}

/// `hung_up_by` of a call sipd itself ended or refused (limits, timeouts, failures, shutdown).
pub const HUNG_UP_BY_SBC: &str = "sbc";

/// The management API's view of a call.
pub(crate) fn call_info(c: &Call) -> CallInfo {
    CallInfo {
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
    }
}

/// A live call, for the management API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CallInfo {
    /// The core's key for the call (the API's call id).
    pub id: CallKey,
    /// The caller's Call-ID.
    pub call_id: String,
    /// The account the call was admitted for.
    pub account_id: Id,
    /// Calling number.
    pub cli: String,
    /// Called number.
    pub cld: String,
    /// Where the caller's SIP comes from.
    pub source: std::net::SocketAddr,
    /// The upstream connection holding a channel for the call; `None` while none does.
    pub connection_id: Option<Id>,
    /// Whether it was answered.
    pub answered: bool,
    /// Unix ms the INVITE arrived.
    pub started_ms: u64,
    /// Unix ms it was answered; `None` before.
    pub answered_ms: Option<u64>,
}

/// Counters for logs, `/metrics` and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CoreStats {
    /// Parsed requests received (retransmissions included).
    pub requests: u64,
    /// Parsed responses received (retransmissions included).
    pub responses: u64,
    /// Messages that could not be framed or parsed.
    pub malformed: u64,
    /// Of those, the ones answered (400 or 513); the rest were dropped.
    pub malformed_answered: u64,
    /// New INVITEs (not retransmissions or re-INVITEs), before any check.
    pub invites: u64,
    /// Calls answered.
    pub answered: u64,
    /// Attempts whose CDR has a failure code: refused after authentication, or failed upstream.
    pub failed: u64,
    /// Digest challenges sent (401).
    pub challenges: u64,
    /// Digest responses refused (from the gate's counters).
    pub auth_failures: u64,
    /// ACKs that matched no call.
    pub stray: u64,
    /// In-dialog requests and CANCELs refused (403; ACKs dropped) because they came from
    /// neither of the dialog's peers (for a CANCEL: not from the INVITE's sender): a third
    /// party who learnt the Call-ID and tags.
    pub in_dialog_refused: u64,
    /// Final responses sent to callers, by code.
    pub finals: std::collections::BTreeMap<u16, u64>,
    /// Refusals before authentication, by reason (counted, not recorded one by one).
    pub refusals: std::collections::BTreeMap<&'static str, u64>,
    /// Rows in the refusal table now, and rows dropped because it was full.
    pub refusal_rows: usize,
    /// See `refusal_rows`.
    pub refusal_rows_evicted: u64,
    /// Sources the IDS tracks now, and sources forgotten because its table was full.
    pub ids_sources: usize,
    /// See `ids_sources`.
    pub ids_evicted: u64,
}

/// What a client transaction's answer is for.
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
    /// The caller sent BYE.
    CallerHangup,
    /// The callee sent BYE.
    CalleeHangup,
    /// The account's `max_call_secs` was reached.
    MaxDuration,
    /// The balance could not pay the next billing block.
    Balance,
    /// The relay saw no media for the configured media timeout.
    MediaTimeout,
    /// The caller never ACKed our 2xx.
    NoAck,
    /// `sipd` is stopping ([`Core::shutdown`]).
    Shutdown,
    /// A call of an earlier run whose media did not survive the restart: billed up to when it
    /// was last known to be up.
    NotResumed,
    /// Hung up from the management API.
    Operator,
}

impl EndReason {
    /// The text CDRs and logs give the reason.
    pub fn text(self) -> &'static str {
        match self {
            EndReason::CallerHangup => "caller hung up",
            EndReason::CalleeHangup => "callee hung up",
            EndReason::MaxDuration => "max duration",
            EndReason::Balance => "balance exhausted",
            EndReason::MediaTimeout => "media timeout",
            EndReason::NoAck => "no ACK",
            EndReason::Shutdown => "shutdown",
            EndReason::NotResumed => "not resumed after restart",
            EndReason::Operator => "hung up by operator",
        }
    }
}

/// How often the core wants `tick` even without transaction timers (admission cut-offs and
/// media timeouts are checked then).
const TICK: Duration = Duration::from_millis(250);
/// Ended calls stay this long to absorb retransmissions and late responses.
const LINGER: Duration = Duration::from_secs(32);
/// How long a name that did not resolve is not asked for again.
const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// The call core (see the module docs). Generic over the media relay so tests use a fake.
pub struct Core<M: Media> {
    cfg: CoreConfig,
    locals: Locals,
    txn: TxnLayer,
    gate: AuthGate,
    admission: Admission,
    outgoing: Outgoing,
    tariffs: HashMap<Id, Tariff>,
    /// Balance as last known: the store's at start, minus what calls since cost.
    balances: HashMap<Id, Micros>,
    media: M,
    table: CallTable,
    tokens: HashMap<u64, Token>,
    next_token: u64,
    effects: Vec<Effect>,
    stats: CoreStats,
    next_tick: Option<Instant>,
    draining: bool,
    refusals: RefusalTable,
}

impl<M: Media> Core<M> {
    /// A core with these settings, rules and accounts, connections, tariffs, digest verifier and
    /// media relay; balances start from the accounts' stored ones.
    pub fn new(
        cfg: CoreConfig,
        rules: RuleSet,
        router: Router,
        tariffs: Vec<Tariff>,
        verifier: DigestVerifier,
        media: M,
    ) -> Core<M> {
        let balances = rules.accounts().map(|a| (a.id, a.balance)).collect();
        let presentation = Presentation {
            topology_hiding: cfg.topology_hiding,
            agent: cfg.agent.clone(),
        };
        let cfg_rows = cfg.max_refusal_rows;
        Core {
            txn: TxnLayer::new(Some(cfg.failover_after)),
            gate: AuthGate::new(rules, verifier, cfg.ids.clone()),
            locals: Locals::new(cfg.locals.clone()),
            outgoing: Outgoing::new(router, presentation),
            cfg,
            admission: Admission::new(),
            tariffs: tariffs.into_iter().map(|t| (t.id, t)).collect(),
            balances,
            media,
            table: CallTable::default(),
            tokens: HashMap::new(),
            next_token: 1,
            effects: Vec::new(),
            stats: CoreStats::default(),
            next_tick: None,
            draining: false,
            refusals: RefusalTable::new(cfg_rows),
        }
    }

    /// Its counters now, the gate's, the refusal table's and the IDS's included.
    pub fn stats(&self) -> CoreStats {
        let ids = self.gate.ids_stats();
        CoreStats {
            auth_failures: self.gate.stats().auth_failures,
            refusals: self
                .refusals
                .totals()
                .into_iter()
                .map(|(r, n)| (r.as_str(), n))
                .collect(),
            refusal_rows: self.refusals.len(),
            refusal_rows_evicted: self.refusals.evicted(),
            ids_sources: ids.sources,
            ids_evicted: ids.evicted,
            ..self.stats.clone()
        }
    }

    /// Refusals before authentication by (source, reason), most recent first.
    pub fn refusals(&self) -> Vec<RefusalRow> {
        self.refusals.rows()
    }

    /// What changed in the refusal table since the last call, for the shell to write to the
    /// store in one batch (see [`RefusalTable::take_changes`]).
    pub fn refusal_changes(&mut self) -> RefusalChanges {
        self.refusals.take_changes()
    }

    /// The refusal table as the store kept it from the last run; call before any message.
    pub fn restore_refusals(&mut self, rows: Vec<RefusalRow>) {
        self.refusals.restore(rows);
    }

    /// The media relay, for the shell (stats, timeouts).
    pub fn media(&mut self) -> &mut M {
        &mut self.media
    }

    /// Calls not yet ended.
    pub fn active_calls(&self) -> usize {
        self.table.live().count()
    }

    /// Calls not yet ended.
    pub fn calls(&self) -> impl Iterator<Item = &Call> {
        self.table.live()
    }

    /// Live calls as the management API lists them.
    pub fn call_infos(&self) -> Vec<CallInfo> {
        let mut v: Vec<CallInfo> = self.calls().map(call_info).collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// Ends call `id` on both sides (BYE, or CANCEL before answer) for staff member `by`,
    /// whom the CDR names (`hung_up_by: "staff:<by>"`); false if there is no such call.
    pub fn hangup(&mut self, now: Instant, wall: SystemTime, id: CallKey, by: &str) -> bool {
        match self.table.get_mut(id) {
            Some(c) if c.phase != Phase::Ended => c.ended_by = Some(format!("staff:{by}")),
            _ => return false,
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
        self.gate.reload(rules);
        self.outgoing.reload(connections);
        self.tariffs = tariffs.into_iter().map(|t| (t.id, t)).collect();
    }

    /// This node's share of an account's cluster limits, from the shell's leases (`None`:
    /// the account's own limits only). See [`Admission::set_share`].
    pub fn set_account_share(&mut self, account: Id, share: Option<crate::policy::Share>) {
        self.admission.set_share(account, share);
    }

    /// This node's share of an upstream connection's cluster caps (`None`: its own caps).
    pub fn set_connection_share(&mut self, connection: Id, share: Option<crate::policy::Share>) {
        self.outgoing.set_share(connection, share);
    }

    /// An account's calls in progress here and the CPS tokens it has taken so far.
    pub fn account_usage(&self, account: Id) -> (u32, u64) {
        self.admission.usage(account)
    }

    /// A connection's channels in use here and the CPS tokens it has taken so far.
    pub fn connection_usage(&self, connection: Id) -> (u32, u64) {
        let r = self.outgoing.router();
        (r.in_use(connection), r.taken(connection))
    }

    /// What the account's calls in progress hold of its balance now (see
    /// [`Admission::held`]).
    pub fn account_held(&self, account: Id, now: Instant) -> Micros {
        self.admission.held(account, now)
    }

    /// The balance this node may spend for `account`: its reservation of a cluster's shared
    /// balance, which replaces the store's balance for admission and cut-offs until the
    /// next call (the debits of ended calls still come off it here at once).
    pub fn set_balance(&mut self, account: Id, balance: Micros) {
        self.balances.insert(account, balance);
        self.admission.set_balance(account, balance);
    }

    /// An operator credited (or debited) an account's balance in the store.
    pub fn credit(&mut self, account: Id, delta: Micros) {
        let b = self.balances.entry(account).or_insert(Micros(0));
        b.0 = b.0.saturating_add(delta.0);
        let nb = *b;
        self.admission.set_balance(account, nb);
    }

    /// The call a SIP message with this Call-ID belongs to (ended calls still lingering
    /// included), whether on the caller's leg (`A`) or the vendor's (`B`), and the caller's
    /// Call-ID: how the shell files the messages it sends and receives under a call.
    pub fn call_of(&self, call_id: &str) -> Option<(CallKey, Side, &str)> {
        let (key, side) = self.table.by_call_id(call_id)?;
        let call = self.table.get(key)?;
        Some((key, side, call.a.call_id.as_str()))
    }

    /// Effects produced so far, in order; the shell carries them out.
    pub fn drain_effects(&mut self) -> Vec<Effect> {
        for s in self.txn.drain() {
            self.effects.push(Effect::Send(s));
        }
        std::mem::take(&mut self.effects)
    }

    /// When `tick` should next be called: the earliest transaction timer or the periodic tick.
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

    /// Our Contact toward `peer`.
    fn contact_for(&self, peer: &Peer) -> String {
        let l = self.locals.of(peer);
        contact(l.proto, l.advertised)
    }

    // ---------------------------------------------------------------- input

    /// One message from the wire, over a transport that verified no client certificate.
    pub fn on_message(&mut self, now: Instant, wall: SystemTime, peer: Peer, data: &[u8]) {
        self.on_verified_message(now, wall, peer, &[], data);
    }

    /// One message from the wire; `tls_client_names` are the DNS names (SAN) of the client
    /// certificate the TLS connection it came on presented and the shell verified against
    /// `[sip] tls_client_roots` (empty: none, or not TLS). Auth rules with a
    /// `tls_client_name` admit a call only when that name is among them.
    pub fn on_verified_message(
        &mut self,
        now: Instant,
        wall: SystemTime,
        peer: Peer,
        tls_client_names: &[String],
        data: &[u8],
    ) {
        self.arm_tick(now);
        let mut msg = match Msg::parse(data, self.cfg.max_message_bytes) {
            Ok(m) => m,
            Err(e) => {
                debug!(%e, from = %peer.remote, "malformed SIP message");
                self.on_malformed(peer, data, Malformed::Parse(e));
                return;
            }
        };
        if msg.is_request() {
            self.stats.requests += 1;
            // Before anything answers it: every response copies the noted Via.
            crate::sip::received::stamp_received(&mut msg, peer.remote);
            self.on_request(now, wall, peer, tls_client_names, msg);
        } else {
            self.stats.responses += 1;
            self.on_response(now, wall, peer, msg);
        }
    }

    /// A message that could not be framed (the transport found it) or parsed: a 400 or 513
    /// when its head is readable enough, else a counted drop.
    pub fn on_malformed(&mut self, peer: Peer, data: &[u8], problem: Malformed) {
        self.stats.malformed += 1;
        let answer = malformed::answer(
            data,
            self.cfg.max_message_bytes,
            &problem,
            self.locals.agent_host(),
        );
        if let Some(r) = answer {
            self.stats.malformed_answered += 1;
            self.effects.push(Effect::Send(Transmit {
                peer,
                data: r.to_bytes(),
                token: 0,
            }));
        }
    }

    /// The transport could not deliver a request of a client transaction (TCP refused).
    pub fn on_send_failed(&mut self, now: Instant, wall: SystemTime, token: u64) {
        if let Some(Token::Invite(key)) = self.tokens.get(&token).cloned() {
            if let Some(b) = self
                .table
                .get(key)
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

    /// Timers: transactions, balance and duration cut-offs, media timeouts, names the shell
    /// did not answer, cleanup.
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
                    if let Some(k) = self.table.by_a_txn(&key)
                        && self.table.get(k).is_some_and(|c| !c.a_acked)
                    {
                        self.end_call(now, wall, k, EndReason::NoAck);
                    }
                }
            }
        }
        if self.next_tick.is_some_and(|t| t <= now) {
            self.next_tick =
                (!self.table.is_empty() || !self.tokens.is_empty()).then_some(now + TICK);
            for (key, cut) in self.admission.due(now, TICK) {
                let reason = match cut {
                    Cut::Balance => EndReason::Balance,
                    Cut::MaxDuration => EndReason::MaxDuration,
                };
                self.end_call(now, wall, key, reason);
            }
            for media_id in self.media.timed_out(self.cfg.media_timeout) {
                let key = self
                    .table
                    .live()
                    .find(|c| c.media_id == media_id)
                    .map(|c| c.key);
                if let Some(key) = key {
                    self.end_call(now, wall, key, EndReason::MediaTimeout);
                }
            }
            for host in self.outgoing.overdue(now) {
                tracing::warn!(%host, "no answer from the resolver: trying the next upstream");
                self.on_resolved(now, wall, &host, Vec::new(), NEGATIVE_TTL);
            }
            for key in self.table.lingered(now, LINGER) {
                self.forget(key);
            }
            self.gate.expire(now);
        }
    }

    /// The kernel guard dropped SIP from `ip` for flooding (packet or INVITE rate).
    pub fn on_flood(&mut self, now: Instant, ip: IpAddr) {
        if let Some(b) = self.gate.flood(now, ip) {
            self.ban(b);
        }
    }

    fn ban(&mut self, b: gate::Ban) {
        self.effects.push(Effect::Ban {
            ip: b.ip,
            duration: b.duration,
            offence: b.offence,
            first_offence: b.first_offence,
        });
    }

    /// Hands the calls over to the next run (an upgrade): stops taking new calls (503),
    /// saves every answered call again (so the next run numbers its requests after the last
    /// sent) and leaves them up. Returns how many calls are still being set up: the shell
    /// waits for them to be answered or to fail, up to its drain time, before it exits; the
    /// next run ends those still left.
    pub fn hand_over(&mut self) -> usize {
        self.draining = true;
        let keys: Vec<CallKey> = self
            .calls()
            .filter(|c| c.phase == Phase::Answered)
            .map(|c| c.key)
            .collect();
        for k in keys {
            self.save(k, false);
        }
        self.unsettled()
    }

    /// Calls a hand-over should let finish first: still being set up, answered but not yet
    /// ACKed by the caller, or with an in-dialog request relayed and not answered yet.
    pub fn unsettled(&self) -> usize {
        let relayed: std::collections::HashSet<CallKey> = self
            .tokens
            .values()
            .filter_map(|t| match t {
                Token::Relayed(r) => Some(r.call),
                _ => None,
            })
            .collect();
        self.calls()
            .filter(|c| c.phase == Phase::Trying || !c.a_acked || relayed.contains(&c.key))
            .count()
    }

    /// Ends every call (BYE or CANCEL both ways) and stops taking new ones.
    pub fn shutdown(&mut self, now: Instant, wall: SystemTime) {
        self.draining = true;
        let keys: Vec<CallKey> = self.calls().map(|c| c.key).collect();
        for k in keys {
            self.end_call(now, wall, k, EndReason::Shutdown);
        }
    }
}

/// An in-memory relay for tests and the fuzz targets (feature `fuzzing`).
#[cfg(any(test, feature = "fuzzing"))]
pub mod fake_media;
#[cfg(test)]
mod tests;
