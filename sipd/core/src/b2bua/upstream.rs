//! The outgoing leg as it runs: attempts started from [`Outgoing`]'s plans (after the names
//! they need are resolved), the vendor's answers (provisional, answer, failure and failover),
//! and answers for attempts we gave up on.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use rsip::Method;
use tracing::{debug, info, warn};

use super::call::{Attempt, Call, CallKey, Phase};
use super::dialog::dialog_request;
use super::outgoing::Next;
use super::{ALLOW, Core, Effect, Media, MediaError, Side, Token};
use crate::sip::txn::ResponseVerdict;
use crate::sip::{Msg, NameAddr, Peer, Transmit};

impl<M: Media> Core<M> {
    /// The shell's answer to [`Effect::Resolve`]: `addrs` (none: the name does not resolve),
    /// good for `ttl`. Calls that waited for it go on.
    pub fn on_resolved(
        &mut self,
        now: Instant,
        wall: SystemTime,
        host: &str,
        addrs: Vec<IpAddr>,
        ttl: Duration,
    ) {
        for key in self.outgoing.resolved(now, host, addrs, ttl) {
            self.try_next_upstream(now, wall, key);
        }
    }

    /// Starts an attempt on the next candidate with free capacity, waits for a name, or
    /// fails the call when none is left.
    pub(super) fn try_next_upstream(&mut self, now: Instant, wall: SystemTime, key: CallKey) {
        let Some(mut call) = self.table.take(key) else {
            return;
        };
        if call.phase != Phase::Trying || call.attempt.is_some() {
            // Ended (or answered elsewhere) while it waited for a name.
            self.table.put(call);
            return;
        }
        let next = self.outgoing.next(now, &self.locals, &mut call);
        for host in self.outgoing.questions() {
            self.effects.push(Effect::Resolve { host });
        }
        match next {
            Next::Invite(mut plan) => {
                // An offer anchored for the caller's family goes to a vendor of the other
                // one: anchored again with the relay's address of the vendor's family.
                let toward = plan.leg.peer.remote.ip();
                self.media.receiver(&call.media_id, Side::A, toward);
                let offered_v4 = call.b_offer.as_deref().and_then(super::media::sdp_is_ipv4);
                if offered_v4.is_some_and(|v4| v4 != toward.is_ipv4()) {
                    let sdp = String::from_utf8_lossy(&call.a_invite.body).into_owned();
                    match self.media.offer(
                        &call.media_id,
                        Side::A,
                        call.sip_source(Side::A),
                        &sdp,
                        self.cfg.strict_source,
                    ) {
                        Ok(s) => {
                            plan.invite.body = s.clone().into_bytes();
                            call.b_offer = Some(s);
                        }
                        Err(e) => {
                            warn!(error = %e, "cannot anchor the caller's media toward the other address family")
                        }
                    }
                }
                let token = self.token(Token::Invite(key));
                debug!(call = key, connection = %plan.connection_name, dest = %plan.leg.peer.remote, "INVITE upstream");
                self.txn
                    .send_request(now, &plan.invite, plan.leg.peer, token);
                call.connection = Some(plan.connection);
                call.last_connection = Some(plan.connection);
                call.b = Some(plan.leg);
                call.attempt = Some(Attempt {
                    connection: plan.connection,
                    branch: plan.branch,
                    token,
                    invite: plan.invite,
                    provisional: false,
                });
                self.table.put(call);
                // From here a crash would leave the vendor ringing: a record lets the next run
                // cancel it and answer the caller.
                self.save(key, false);
            }
            Next::Wait { host } => {
                debug!(call = key, %host, "waiting for the upstream's addresses");
                self.table.put(call);
            }
            Next::Exhausted(code, why) => {
                self.table.put(call);
                self.fail_call(now, wall, key, code, why);
            }
        }
    }

    pub(super) fn on_response(&mut self, now: Instant, wall: SystemTime, from: Peer, resp: Msg) {
        let token = match self.txn.on_response(now, &resp) {
            ResponseVerdict::Deliver { token, .. } => token,
            // No transaction: tokens start at 1, so 0 takes the "token gone" path below (a
            // 2xx for a call a previous run set up is ACKed, and BYEd if the call ended).
            ResponseVerdict::Stray => 0,
            ResponseVerdict::Absorbed => return,
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
                    && let Some(k) = self.table.by_b(resp.call_id())
                    // With no transaction (an answer to an earlier run's attempt) only the
                    // vendor's own address is believed: a forged 2xx must not make us send.
                    && (token != 0
                        || self.table.get(k).and_then(|c| c.b.as_ref()).is_some_and(|b| {
                            b.peer.remote.ip().to_canonical() == from.remote.ip().to_canonical()
                        }))
                    && let Some(c) = self.table.take(k)
                {
                    match (c.b_ack.as_ref(), c.b.as_ref()) {
                        (Some(ack), Some(b)) => {
                            let data = ack.to_bytes();
                            let peer = b.peer;
                            self.effects.push(Effect::Send(Transmit {
                                peer,
                                data,
                                token: 0,
                            }));
                        }
                        _ if c.phase == Phase::Ended => self.ack_and_bye_stray(now, &c, &resp),
                        _ => {}
                    }
                    self.table.put(c);
                }
            }
        }
    }

    pub(super) fn on_invite_response(
        &mut self,
        now: Instant,
        wall: SystemTime,
        key: CallKey,
        token: u64,
        resp: Msg,
    ) {
        let code = resp.code().unwrap_or(500);
        let Some(mut call) = self.table.take(key) else {
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
                    self.effects.push(Effect::Send(Transmit {
                        peer,
                        data,
                        token: 0,
                    }));
                }
            } else {
                self.ack_and_bye_stray(now, &call, &resp);
            }
            self.table.put(call);
            return;
        }
        if !current || call.phase != Phase::Trying {
            self.table.put(call);
            return;
        }
        if code < 200 {
            if let Some(a) = call.attempt.as_mut() {
                a.provisional = true;
            }
            if code > 100 {
                let mut r = call.a_invite.response(code, Some(&call.a.local_tag));
                r.push("Contact", self.contact_for(&call.a.peer));
                if resp.has_sdp() {
                    if let Some(b) = call.b.as_mut() {
                        b.remote_tag = resp.to().tag;
                    }
                    let sdp = String::from_utf8_lossy(&resp.body).into_owned();
                    if let Ok(s) = self.media.answer(
                        &call.media_id,
                        Side::B,
                        call.sip_source(Side::B),
                        &sdp,
                        self.cfg.strict_source,
                    ) {
                        r.push("Content-Type", "application/sdp");
                        r.body = s.into_bytes();
                    }
                }
                self.txn.respond(now, &call.a_txn, &r);
            }
            self.table.put(call);
            return;
        }
        if code < 300 {
            self.answered(now, wall, call, resp);
            return;
        }
        // Failure: 5xx and 408 fail over to the next connection; others go to the caller.
        if let Some(id) = call.connection.take() {
            self.outgoing.release(id);
        }
        call.attempt = None;
        call.last_failure = Some(code);
        if (500..600).contains(&code) || code == 408 {
            self.table.put(call);
            self.try_next_upstream(now, wall, key);
            return;
        }
        call.ended_by = Some("callee".into());
        self.table.put(call);
        let why = format!("upstream answered {code}");
        self.fail_call_owned(now, wall, key, code, why);
    }

    pub(super) fn upstream_failed(
        &mut self,
        now: Instant,
        wall: SystemTime,
        key: CallKey,
        code: Option<u16>,
        why: &'static str,
    ) {
        let Some(mut call) = self.table.take(key) else {
            return;
        };
        if call.phase != Phase::Trying {
            self.table.put(call);
            return;
        }
        info!(call = key, why, "upstream attempt failed");
        if let Some(id) = call.connection.take() {
            self.outgoing.release(id);
        }
        if let Some(a) = call.attempt.take() {
            self.tokens.remove(&a.token);
        }
        call.last_failure = Some(code.unwrap_or(408));
        self.table.put(call);
        self.try_next_upstream(now, wall, key);
    }

    pub(super) fn ack_and_bye_stray(&mut self, now: Instant, call: &Call, resp: &Msg) {
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
        self.effects.push(Effect::Send(Transmit {
            peer: leg.peer,
            data: ack.to_bytes(),
            token: 0,
        }));
        let cseq = leg.next_cseq();
        let bye = dialog_request(&leg, Method::Bye, cseq, &self.cfg.agent);
        let token = self.token(Token::Fire);
        self.txn.send_request(now, &bye, leg.peer, token);
    }

    pub(super) fn answered(&mut self, now: Instant, wall: SystemTime, mut call: Call, resp: Msg) {
        let key = call.key;
        if let Some(b) = call.b.as_mut() {
            b.remote_tag = resp.to().tag;
            b.remote = resp.get("To").unwrap_or_default().to_owned();
            if let Some(c) = resp.get("Contact") {
                b.target = NameAddr::parse(c).uri;
            }
            b.route = resp.list("Record-Route").into_iter().rev().collect();
        }
        let sdp = String::from_utf8_lossy(&resp.body).into_owned();
        let anchored = if !resp.has_sdp() {
            Ok(None)
        } else if call.delayed_offer {
            let from = call.sip_source(Side::B);
            let strict = self.cfg.strict_source;
            self.media
                .offer(&call.media_id, Side::B, from, &sdp, strict)
                .map(Some)
        } else {
            let from = call.sip_source(Side::B);
            let strict = self.cfg.strict_source;
            self.media
                .answer(&call.media_id, Side::B, from, &sdp, strict)
                .map(Some)
        };
        let a_body = match anchored {
            Ok(body) => body,
            Err(e @ MediaError::Sdp(_)) => {
                // The vendor's SDP would make the relay loop or reflect media: that answer is
                // never relayed. The vendor's call is completed and hung up at once, and the
                // caller is refused as for a refused offer.
                warn!(call = key, error = %e, "vendor's SDP refused; hanging it up");
                self.ack_and_bye_stray(now, &call, &resp);
                self.table.put(call);
                self.fail_call_owned(now, wall, key, e.code(), e.warning());
                return;
            }
            Err(e) => {
                warn!(call = key, error = %e, "relay refused the answer; media may not flow");
                None
            }
        };
        self.stats.answered += 1;
        call.phase = Phase::Answered;
        call.answered = Some(wall);
        self.admission.answered(now, key);
        let mut r = call.a_invite.response(200, Some(&call.a.local_tag));
        r.push("Contact", self.contact_for(&call.a.peer));
        r.push("Allow", ALLOW);
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
        call.a_answer = Some(String::from_utf8_lossy(&r.to_bytes()).into_owned());
        self.txn.respond(now, &call.a_txn, &r);
        if !call.delayed_offer {
            self.ack_b(now, &mut call, None);
        }
        debug!(call = key, cli = %call.cli, cld = %call.cld, "call answered");
        self.table.put(call);
        // Durable before the 2xx leaves (the shell holds this batch's messages for it).
        self.save(key, true);
    }
}
