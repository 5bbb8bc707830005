//! A new INVITE from a carrier, through the pipeline in the design's order: the
//! authentication gate, admission (account limits and balance), routing (are there
//! candidates), media anchoring of the caller's offer, then the first upstream attempt.
//! Refusals are answered here, with a CDR where the design records one.

use std::time::{Instant, SystemTime};

use rsip::Method;
use tracing::{debug, warn};

use super::call::{Call, CallKey, Leg, Phase};
use super::gate::{Knock, ProbeVerdict, Verdict};
use super::{ALLOW, Core, Effect, HUNG_UP_BY_SBC, Media, Side, call_info, unix_ms};
use crate::records::{CdrDraft, Id, Micros, RefusalReason, Tariff};
use crate::sip::txn::{RequestVerdict, ServerKey, random_hex};
use crate::sip::{Msg, NameAddr, Peer, Transmit};

impl<M: Media> Core<M> {
    /// `tls_client_names`: see [`Core::on_verified_message`](super::Core::on_verified_message).
    pub(super) fn on_request(
        &mut self,
        now: Instant,
        wall: SystemTime,
        peer: Peer,
        tls_client_names: &[String],
        req: Msg,
    ) {
        let method = req.method().cloned().unwrap_or(Method::Options);
        match self.txn.on_request(now, &req, peer) {
            RequestVerdict::Absorbed => {}
            RequestVerdict::Ack => self.on_ack(now, peer, req),
            RequestVerdict::Cancel(inv) => self.on_cancel(now, wall, inv),
            RequestVerdict::ForeignCancel => self.foreign_cancel(now, wall, peer, &req),
            RequestVerdict::UnknownCancel => {
                self.dialog_probe(now, wall, &peer, RefusalReason::UnknownDialog, 481);
            }
            RequestVerdict::New(key) => {
                if req.max_forwards() == Some(0) && method != Method::Ack {
                    let r = req.response(483, None);
                    self.txn.respond(now, &key, &r);
                    return;
                }
                if let Some(r) = refuse_unsupported(&req) {
                    self.txn.respond(now, &key, &r);
                    return;
                }
                let to_tag = req.to().tag;
                if to_tag.is_some() {
                    self.in_dialog(now, wall, peer, req, key);
                } else if method == Method::Invite {
                    self.new_call(now, wall, peer, tls_client_names, req, key);
                } else {
                    if self.probe(now, wall, &peer, &req, &key) {
                        return;
                    }
                    let code = match method {
                        Method::Options => 200,
                        Method::Bye | Method::Update | Method::Info | Method::PRack => 481,
                        _ => 405,
                    };
                    let mut r = req.response(code, Some(&random_hex(6)));
                    if code == 200 || code == 405 {
                        r.push("Allow", ALLOW);
                    }
                    self.txn.respond(now, &key, &r);
                }
            }
        }
    }

    /// A CANCEL of someone else's pending INVITE: 403, sent once and outside any transaction
    /// (see [`RequestVerdict::ForeignCancel`]), counted like the other in-dialog refusals; the
    /// call goes on.
    fn foreign_cancel(&mut self, now: Instant, wall: SystemTime, peer: Peer, req: &Msg) {
        self.stats.in_dialog_refused += 1;
        debug!(src = %peer.remote, "CANCEL from a stranger refused");
        let r = req.response(403, None);
        self.effects.push(Effect::Send(Transmit {
            peer,
            data: r.to_bytes(),
            token: 0,
        }));
        self.dialog_probe(now, wall, &peer, RefusalReason::InDialogStranger, 403);
    }

    /// A request that named a dialog or transaction that is not the sender's (`reason`,
    /// answered `code`): counted in the refusal table and toward the IDS's dialog-probe ban,
    /// unless the sender is a peer we know (a carrier an `ip_only` rule names, or an
    /// upstream), whose stray BYE for a call we already forgot is no probe.
    pub(super) fn dialog_probe(
        &mut self,
        now: Instant,
        wall: SystemTime,
        peer: &Peer,
        reason: RefusalReason,
        code: u16,
    ) {
        let ip = peer.remote.ip();
        if self.gate.trusted(ip) || self.outgoing.is_upstream(ip) {
            return;
        }
        self.refusals.record(unix_ms(wall), ip, reason, code);
        if let Some(b) = self.gate.dialog_probe(now, ip) {
            self.ban(b);
        }
    }

    /// The IDS's look at an out-of-dialog request other than INVITE; true when it was
    /// refused here (answered once, counted in the refusal table).
    fn probe(
        &mut self,
        now: Instant,
        wall: SystemTime,
        peer: &Peer,
        req: &Msg,
        key: &ServerKey,
    ) -> bool {
        let method = req.method().map_or_else(String::new, |m| m.to_string());
        let from = req.from();
        let knock = Knock {
            src: peer.remote.ip(),
            cli: from.user(),
            cld: "",
            method: &method,
            // The probe never checks a digest answer: nothing here is billed.
            request_uri: "",
            user_agent: req.get("User-Agent"),
            authorization: req
                .get("Authorization")
                .or_else(|| req.get("Proxy-Authorization")),
            // REGISTER and pings are no calls: a rule's certificate applies to calls.
            tls_client_names: &[],
        };
        let (verdict, ban) = self.gate.probe(now, &knock);
        if let Some(b) = ban {
            self.ban(b);
        }
        match verdict {
            ProbeVerdict::Answer => false,
            ProbeVerdict::Refuse { code, reason } => {
                self.refuse_unauthenticated(now, key, req, code, "");
                self.refusals
                    .record(unix_ms(wall), peer.remote.ip(), reason, code);
                true
            }
        }
    }

    /// A final refusal to a caller that has not authenticated: sent once, never
    /// retransmitted (see [`TxnLayer::respond_once`](crate::sip::txn::TxnLayer::respond_once)).
    pub(super) fn refuse_unauthenticated(
        &mut self,
        now: Instant,
        key: &ServerKey,
        req: &Msg,
        code: u16,
        warning: &str,
    ) {
        let r = self.refusal(req, code, warning);
        self.txn.respond_once(now, key, &r);
    }

    pub(super) fn refuse(
        &mut self,
        now: Instant,
        key: &ServerKey,
        req: &Msg,
        code: u16,
        warning: &str,
    ) {
        let r = self.refusal(req, code, warning);
        self.txn.respond(now, key, &r);
    }

    fn refusal(&mut self, req: &Msg, code: u16, warning: &str) -> Msg {
        let mut r = req.response(code, Some(&random_hex(6)));
        r.push("Server", self.cfg.agent.clone());
        if !warning.is_empty() {
            r.push("Warning", self.locals.warning(warning));
        }
        if code == 503 {
            r.push("Retry-After", "1");
        }
        if code == 405 {
            r.push("Allow", ALLOW);
        }
        *self.stats.finals.entry(code).or_default() += 1;
        r
    }

    /// A CDR for a call refused before it existed.
    pub(super) fn cdr_refused(
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
            saved: None,
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
                hung_up_by: Some(HUNG_UP_BY_SBC.to_owned()),
            },
            debit: None,
        });
    }

    pub(super) fn new_call(
        &mut self,
        now: Instant,
        wall: SystemTime,
        peer: Peer,
        tls_client_names: &[String],
        req: Msg,
        key: ServerKey,
    ) {
        self.stats.invites += 1;
        // No 100 Trying before a cheap refusal: a caller that has not authenticated gets one
        // answer per INVITE, never two (no amplifier).
        if self.draining {
            self.refuse_unauthenticated(now, &key, &req, 503, "shutting down");
            return;
        }
        let Some(account_id) = self.authenticate(now, wall, &peer, tls_client_names, &req, &key)
        else {
            return;
        };
        self.txn.respond(now, &key, &req.response(100, None));
        let Some((account, call_key)) = self.admit(now, wall, &peer, &req, &key, account_id) else {
            return;
        };
        // Routing: the candidate list; the first attempt takes capacity.
        let candidates = self.outgoing.candidates(&cld_of(&req));
        if candidates.is_empty() {
            self.admission.end(now, call_key);
            self.refuse(now, &key, &req, 404, "no route");
            self.cdr_refused(wall, &req, &peer, Some(account), 404, "no route");
            return;
        }
        let mut call = self.new_call_record(now, wall, peer, req, key, call_key, account);
        call.candidates = candidates;
        // The vendor's SDP goes to the caller: the relay faces it in the caller's family.
        self.media
            .receiver(&call.media_id, Side::B, call.source.ip());
        // Media: anchor the caller's offer once, whichever vendor answers (again if that
        // vendor is of the other address family).
        if !call.delayed_offer {
            let sdp = String::from_utf8_lossy(&call.a_invite.body).into_owned();
            match self.media.offer(
                &call.media_id,
                Side::A,
                call.sip_source(Side::A),
                &sdp,
                self.cfg.strict_source,
            ) {
                Ok(s) => call.b_offer = Some(s),
                Err(e) => {
                    warn!(error = %e, "cannot anchor the caller's media");
                    self.admission.end(now, call_key);
                    let code = e.code();
                    let why = "media anchoring failed";
                    self.refuse(now, &call.a_txn, &call.a_invite, code, &e.warning());
                    self.cdr_refused(wall, &call.a_invite, &call.a.peer, Some(account), code, why);
                    return;
                }
            }
        }
        self.effects.push(Effect::SourceSession {
            ip: call.source.ip(),
            up: true,
        });
        self.arm_tick(now);
        self.effects.push(Effect::CallStarted(call_info(&call)));
        self.table.insert_new(call);
        self.try_next_upstream(now, wall, call_key);
    }

    /// The gate's verdict, answered; the account when the call may go on.
    pub(super) fn authenticate(
        &mut self,
        now: Instant,
        wall: SystemTime,
        peer: &Peer,
        tls_client_names: &[String],
        req: &Msg,
        key: &ServerKey,
    ) -> Option<Id> {
        let cld = cld_of(req);
        let method = req.method().map_or("INVITE".into(), |m| m.to_string());
        let from = req.from();
        let request_uri = req.uri().map(ToString::to_string).unwrap_or_default();
        let knock = Knock {
            src: peer.remote.ip(),
            cli: from.user(),
            cld: &cld,
            method: &method,
            request_uri: &request_uri,
            user_agent: req.get("User-Agent"),
            authorization: req
                .get("Authorization")
                .or_else(|| req.get("Proxy-Authorization")),
            tls_client_names,
        };
        let (verdict, ban) = self.gate.check(now, wall, &knock);
        if let Some(b) = ban {
            self.ban(b);
        }
        match verdict {
            Verdict::Admit(id) => Some(id),
            Verdict::Challenge { stale, account } => {
                self.challenge(now, wall, key, req, stale, account);
                None
            }
            Verdict::Refuse {
                code,
                why,
                refusal: Some(reason),
            } => {
                self.refuse_unauthenticated(now, key, req, code, why);
                self.refusals
                    .record(unix_ms(wall), peer.remote.ip(), reason, code);
                None
            }
            Verdict::Refuse {
                code,
                why,
                refusal: None,
            } => {
                self.refuse(now, key, req, code, why);
                self.cdr_refused(wall, req, peer, None, code, why);
                None
            }
        }
    }

    /// Admission: the account's limits and balance. A key for the call when admitted.
    pub(super) fn admit(
        &mut self,
        now: Instant,
        wall: SystemTime,
        peer: &Peer,
        req: &Msg,
        key: &ServerKey,
        account_id: Id,
    ) -> Option<(Id, CallKey)> {
        let Some(mut account) = self.gate.account(account_id).cloned() else {
            self.refuse(now, key, req, 403, "no matching auth rule");
            return None;
        };
        if let Some(b) = self.balances.get(&account.id) {
            account.balance = *b;
        }
        let tariff: Option<Tariff> = account
            .tariff_id
            .and_then(|t| self.tariffs.get(&t))
            .cloned();
        let call_key = self.table.next_key();
        if let Err(refusal) = self
            .admission
            .admit(now, call_key, &account, tariff.as_ref())
        {
            let (code, why) = (refusal.status(), refusal.warning());
            debug!(account = %account.name, %why, "call refused");
            self.refuse(now, key, req, code, why);
            self.cdr_refused(wall, req, peer, Some(account.id), code, why);
            return None;
        }
        Some((account.id, call_key))
    }

    /// The call as it starts: leg A's dialog from the caller's INVITE, no attempt yet.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new_call_record(
        &self,
        now: Instant,
        wall: SystemTime,
        peer: Peer,
        req: Msg,
        key: ServerKey,
        call_key: CallKey,
        account: Id,
    ) -> Call {
        let a_local = self.locals.of(&peer);
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
        Call {
            key: call_key,
            phase: Phase::Trying,
            a,
            cli: req.from().user().to_owned(),
            cld: cld_of(&req),
            delayed_offer: !req.has_sdp(),
            a_invite: req,
            a_txn: key,
            b: None,
            attempt: None,
            candidates: Vec::new(),
            connection: None,
            last_connection: None,
            b_offer: None,
            account,
            source: peer.remote,
            source_proto: peer.proto,
            started: wall,
            started_at: now,
            answered: None,
            media_id: format!("sbc-{call_key}-{}", random_hex(4)),
            b_ack: None,
            a_acked: false,
            last_failure: None,
            recorded: false,
            ended_at: None,
            ended_by: None,
            a_answer: None,
            cseq_saved: [0, 0],
            saved: false,
            settle_at: None,
        }
    }

    pub(super) fn challenge(
        &mut self,
        now: Instant,
        wall: SystemTime,
        key: &ServerKey,
        req: &Msg,
        stale: bool,
        account: Option<Id>,
    ) {
        self.stats.challenges += 1;
        let challenges = match self.gate.challenges(stale, account, wall) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot issue a nonce");
                self.refuse(now, key, req, 500, "cannot issue a nonce");
                return;
            }
        };
        let mut r = req.response(401, Some(&random_hex(6)));
        for c in challenges {
            r.push("WWW-Authenticate", c);
        }
        // Not authenticated yet: once (a caller that lost it retransmits its INVITE).
        self.txn.respond_once(now, key, &r);
    }
}

/// The called number: the Request-URI's user part, else the To's.
pub(crate) fn cld_of(req: &Msg) -> String {
    match req.uri().and_then(|u| u.auth.as_ref()) {
        Some(a) if !a.user.is_empty() => a.user.clone(),
        _ => req.to().user().to_owned(),
    }
}

/// A request we cannot take as a UAS whatever its caller: a `Require` naming an extension
/// we do not support (420 with `Unsupported`, RFC 3261 §8.2.2.3; ACK and CANCEL are exempt),
/// or an INVITE, UPDATE or re-INVITE body that is not SDP (415 with `Accept`, §8.2.3).
/// Proxy-Require is for proxies; as a UAS we do not act on it.
fn refuse_unsupported(req: &Msg) -> Option<Msg> {
    let method = req.method()?;
    if *method == Method::Ack || *method == Method::Cancel {
        return None;
    }
    let unsupported: Vec<String> = req
        .list("Require")
        .into_iter()
        .filter(|o| !o.is_empty())
        .collect();
    if !unsupported.is_empty() {
        let mut r = req.response(420, Some(&random_hex(6)));
        r.push("Unsupported", unsupported.join(", "));
        return Some(r);
    }
    let offers_body = matches!(method, Method::Invite | Method::Update);
    let sdp = req
        .get("Content-Type")
        .and_then(|c| c.split(';').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/sdp"));
    if offers_body && !req.body.is_empty() && !sdp {
        let mut r = req.response(415, Some(&random_hex(6)));
        r.push("Accept", "application/sdp");
        return Some(r);
    }
    None
}
