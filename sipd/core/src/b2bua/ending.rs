//! How calls end: CANCEL before answer, failures answered to the caller, hang-ups from
//! either side or from us (BYE both ways), and the record of it all: CDR, debit, freed
//! capacity and media. An ended call lingers to absorb retransmissions, then is forgotten.

use std::time::{Instant, SystemTime};

use rsip::Method;
use tracing::debug;

use super::call::{Call, CallKey, Phase};
use super::dialog::dialog_request;
use super::{Core, Effect, EndReason, HUNG_UP_BY_SBC, Media, Token, unix_ms};
use crate::records::{CdrDraft, Micros};
use crate::sip::txn::ServerKey;
use crate::sip::{Msg, Transmit};

impl<M: Media> Core<M> {
    pub(super) fn on_cancel(&mut self, now: Instant, wall: SystemTime, inv: ServerKey) {
        let Some(key) = self.table.by_a_txn(&inv) else {
            return;
        };
        let Some(mut call) = self.table.take(key) else {
            return;
        };
        if call.phase == Phase::Trying {
            let resp = call.a_invite.response(487, Some(&call.a.local_tag));
            self.txn.respond(now, &inv, &resp);
            *self.stats.finals.entry(487).or_default() += 1;
            self.cancel_attempt(now, &mut call);
            call.ended_by = Some("caller".into());
            self.table.put(call);
            self.finish(now, wall, key, 487, "cancelled");
        } else {
            self.table.put(call);
        }
    }

    /// CANCELs the attempt in flight (RFC 3261 §9.1: only after a provisional; before one,
    /// the attempt is abandoned and a late 2xx is ACKed and BYEd).
    pub(super) fn cancel_attempt(&mut self, _now: Instant, call: &mut Call) {
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
        self.effects.push(Effect::Send(Transmit {
            peer: b.peer,
            data: cancel.to_bytes(),
            token: 0,
        }));
    }

    // ---------------------------------------------------------------- endings

    pub(super) fn fail_call(
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
    pub(super) fn fail_call_owned(
        &mut self,
        now: Instant,
        wall: SystemTime,
        key: CallKey,
        code: u16,
        why: String,
    ) {
        let Some(call) = self.table.get(key) else {
            return;
        };
        let mut r = call.a_invite.response(code, Some(&call.a.local_tag));
        r.push("Warning", self.locals.warning(&why));
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
    pub(super) fn end_call_from(
        &mut self,
        now: Instant,
        wall: SystemTime,
        key: CallKey,
        reason: EndReason,
        from_a: Option<bool>,
    ) {
        let Some(mut call) = self.table.take(key) else {
            return;
        };
        match reason {
            EndReason::CallerHangup => call.ended_by = Some("caller".into()),
            EndReason::CalleeHangup => call.ended_by = Some("callee".into()),
            // Operator: `hangup` named the staff member; the rest are sipd's own.
            _ => {}
        }
        match call.phase {
            Phase::Ended => {
                self.table.put(call);
            }
            Phase::Trying => {
                self.cancel_attempt(now, &mut call);
                self.table.put(call);
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
                self.table.put(call);
                self.finish(now, wall, key, 200, reason.text());
            }
        }
    }

    /// Writes the CDR, settles billing, frees capacity and media; the call lingers to absorb
    /// retransmissions.
    pub(super) fn finish(
        &mut self,
        now: Instant,
        wall: SystemTime,
        key: CallKey,
        code: u16,
        why: &str,
    ) {
        let Some(call) = self.table.get_mut(key) else {
            return;
        };
        if call.recorded {
            return;
        }
        call.recorded = true;
        call.phase = Phase::Ended;
        call.ended_at = Some(now);
        // A call of an earlier run that could not go on ends when it was last known up.
        let (end, end_wall) = call.settle_at.unwrap_or((now, wall));
        if let Some(id) = call.connection.take() {
            self.outgoing.release(id);
        }
        let ended = self.admission.end(end, key);
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
            end_ms: unix_ms(end_wall),
            caller: call.cli.clone(),
            callee: call.cld.clone(),
            source: Some(call.source),
            account_id: Some(call.account),
            connection_id: call.last_connection,
            result_code: code,
            reason: why.to_owned(),
            duration_secs: duration,
            cost,
            hung_up_by: Some(
                call.ended_by
                    .clone()
                    .unwrap_or_else(|| HUNG_UP_BY_SBC.to_owned()),
            ),
        };
        self.effects.push(Effect::CallEnded {
            id: key,
            cause: why.to_owned(),
            hung_up_by: cdr.hung_up_by.clone().unwrap_or_default(),
        });
        let saved = call.saved.then(|| call.media_id.clone());
        self.effects.push(Effect::Cdr { cdr, debit, saved });
    }

    pub(super) fn forget(&mut self, key: CallKey) {
        if self.table.forget(key).is_some() {
            self.tokens.retain(|_, t| match t {
                Token::Invite(k) => *k != key,
                Token::Relayed(r) => r.call != key,
                Token::Fire => true,
            });
        }
    }
}
