//! Calls across a restart: saving a call's record when it changes ([`Core::save`]), and
//! taking back an earlier run's records at start ([`Core::adopt`]).
//!
//! An answered call whose media the relay took back goes on as if nothing happened: the
//! dialogs answer in-dialog requests from either side, admission cuts it on time (balance,
//! duration) from its real answer time, and its CDR covers the whole call. One whose media did
//! not survive is hung up both ways and billed up to when it was last known up. A call that
//! was still being set up is ended: the caller gets 503 (built from its saved INVITE, as the
//! transaction died with the process), the attempt upstream is cancelled, and a late 2xx from
//! the vendor is ACKed and hung up.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rsip::Method;
use tracing::{info, warn};

use super::call::{Attempt, Call, CallKey, Phase};
use super::dialog::dialog_request;
use super::saved::{SavedCall, SavedPhase};
use super::{Core, Effect, EndReason, Media};
use crate::records::unix_ms;
use crate::sip::txn::ServerKey;
use crate::sip::{Msg, Transmit};

/// CSeq numbers skipped on each leg of an adopted call: requests sent after its record was
/// last written must not be numbered again.
pub(super) const CSEQ_GAP: u32 = 16;

/// What [`Core::adopt`] did with an earlier run's records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Adopted {
    /// Answered calls that go on (their new keys).
    pub resumed: Vec<CallKey>,
    /// Answered calls hung up because their media did not survive (media ids).
    pub not_resumed: Vec<String>,
    /// Calls that were being set up, ended with 503 (media ids).
    pub ended_in_setup: Vec<String>,
    /// Records that could not be used at all, with why (media ids); their records are
    /// dropped by a CDR-less removal the shell does.
    pub unusable: Vec<(String, String)>,
}

impl<M: Media> Core<M> {
    /// Persists call `key`'s record now (see [`Effect::SaveCall`] for `hold`).
    pub(super) fn save(&mut self, key: CallKey, hold: bool) {
        let Some(call) = self.table.get_mut(key) else {
            return;
        };
        if call.phase == Phase::Ended {
            return;
        }
        call.saved = true;
        let (tariff, max_secs) = self.admission.terms(key).unwrap_or_default();
        let media = self.media.saved(&call.media_id);
        call.cseq_saved = [
            call.a.local_cseq,
            call.b.as_ref().map_or(0, |b| b.local_cseq),
        ];
        let rec = SavedCall::of(call, tariff, max_secs, media);
        self.effects.push(Effect::SaveCall {
            call: Box::new(rec),
            hold,
        });
    }

    /// Takes back the calls an earlier run saved (see the module docs). Call once at start,
    /// before any message, after the media relay recovered its sessions.
    pub fn adopt(&mut self, now: Instant, wall: SystemTime, saved: Vec<SavedCall>) -> Adopted {
        let mut out = Adopted::default();
        for rec in saved {
            let id = rec.media_id.clone();
            match self.adopt_one(now, wall, &rec) {
                Ok(Outcome::Resumed(k)) => out.resumed.push(k),
                Ok(Outcome::NotResumed) => out.not_resumed.push(id),
                Ok(Outcome::EndedInSetup) => out.ended_in_setup.push(id),
                Err(why) => {
                    warn!(media_id = %id, %why, "saved call not adopted: billed from its record");
                    self.settle_unusable(wall, &rec);
                    out.unusable.push((id, why));
                }
            }
        }
        if !out.resumed.is_empty() || !out.not_resumed.is_empty() {
            self.arm_tick(now);
        }
        info!(
            resumed = out.resumed.len(),
            not_resumed = out.not_resumed.len(),
            ended_in_setup = out.ended_in_setup.len(),
            unusable = out.unusable.len(),
            "calls of the previous run taken back"
        );
        out
    }

    fn adopt_one(
        &mut self,
        now: Instant,
        wall: SystemTime,
        rec: &SavedCall,
    ) -> Result<Outcome, String> {
        let a_invite = Msg::parse(rec.a_invite.as_bytes(), usize::MAX)
            .map_err(|e| format!("saved INVITE: {e}"))?;
        let a_txn = ServerKey::of(&a_invite).ok_or("saved INVITE has no Via")?;
        let b_invite = match &rec.b_invite {
            Some(raw) => Some(
                Msg::parse(raw.as_bytes(), usize::MAX)
                    .map_err(|e| format!("saved upstream INVITE: {e}"))?,
            ),
            None => None,
        };
        let key = self.table.next_key();
        let answered = rec.phase == SavedPhase::Answered;
        let started = at_ms(rec.started_ms);
        let answered_wall = rec.answered_ms.map(at_ms);
        let attempt = match (&b_invite, rec.connection) {
            (Some(inv), Some(connection)) => Some(Attempt {
                connection,
                branch: inv.top_via().and_then(|v| v.branch).unwrap_or_default(),
                // No transaction of this run: answers to it are strays (ACKed, or BYEd).
                token: 0,
                invite: inv.clone(),
                provisional: true,
            }),
            _ => None,
        };
        let gap = if answered { CSEQ_GAP } else { 0 };
        // A TCP or TLS connection died with the process: requests we send go to the address
        // the peer's Contact names (its listening one), until it connects again.
        let leg = |l: &super::saved::SavedLeg| {
            let mut leg = l.leg(gap);
            if leg.peer.proto.is_reliable()
                && let Some(a) = super::dialog::contact_addr_of(&leg.target)
            {
                leg.peer.remote = a;
            }
            leg
        };
        let mut call = Call {
            key,
            phase: if answered {
                Phase::Answered
            } else {
                Phase::Trying
            },
            a: leg(&rec.a),
            a_invite,
            a_txn,
            b: rec.b.as_ref().map(leg),
            attempt,
            candidates: Vec::new(),
            connection: rec.connection,
            last_connection: rec.connection,
            b_offer: None,
            account: rec.account,
            cli: rec.cli.clone(),
            cld: rec.cld.clone(),
            source: rec.source,
            source_proto: rec.source_proto,
            started,
            started_at: instant_at(now, wall, started),
            answered: answered_wall,
            media_id: rec.media_id.clone(),
            delayed_offer: rec.delayed_offer,
            b_ack: None,
            a_acked: !answered || rec.a_acked,
            last_failure: None,
            recorded: false,
            ended_at: None,
            ended_by: None,
            a_answer: rec.a_answer.clone(),
            cseq_saved: [0, 0],
            saved: true,
            settle_at: None,
        };
        // The vendor may still retransmit its 2xx if our ACK was lost in the crash. A delayed
        // offer's ACK waits for the caller's (with its answer), as in the run that saved it.
        if answered
            && rec.b_acked
            && let (Some(b), Some(inv)) = (call.b.as_ref(), b_invite.as_ref())
        {
            call.b_ack = Some(dialog_request(
                b,
                Method::Ack,
                inv.cseq().0,
                &self.cfg.agent,
            ));
        }
        if let Some(c) = rec.connection {
            // The channel the call held in the earlier run is held again (never refused).
            self.outgoing.hold(c);
        }
        let answered_at = answered_wall.map(|w| instant_at(now, wall, w));
        self.admission.adopt(
            key,
            rec.account,
            rec.tariff.clone(),
            rec.max_secs,
            answered_at.filter(|_| answered),
        );
        if let Some(b) = self.balances.get(&rec.account) {
            self.admission.set_balance(rec.account, *b);
        }
        let media = match rec.media.as_deref() {
            Some(m) => self.media.adopt(&rec.media_id, m),
            None => Err(super::MediaError::Relay("no media record".into())),
        };
        // A retransmitted INVITE (the caller missed the 2xx in the crash) gets it again, and
        // a 2xx the caller had not ACKed is sent again until it is (or the call times out).
        if answered
            && let Some(ok) = rec
                .a_answer
                .as_deref()
                .and_then(|t| Msg::parse(t.as_bytes(), usize::MAX).ok())
        {
            self.txn
                .restore_answered(now, &call.a_invite, call.a.peer, &ok, !rec.a_acked);
        }
        self.table.insert_new(call);
        if !answered {
            self.end_in_setup(now, wall, key);
            return Ok(Outcome::EndedInSetup);
        }
        // Billed up to when the call was last known up: the last media the relay saw when it
        // has stopped for longer than the media timeout, else the previous run's checkpoint.
        let stale =
            |t: u64| unix_ms(wall).saturating_sub(t) > self.cfg.media_timeout.as_millis() as u64;
        let end_ms = match media {
            Ok(a) if a.last_media_ms.is_some_and(stale) => a.last_media_ms.unwrap_or_default(),
            // A session made again knows no media: if the process was down longer than the
            // media timeout, nobody can tell the call went on, so it is not resumed.
            Ok(a) if a.rebuilt && rec.alive_ms.is_some_and(stale) => {
                rec.alive_ms.unwrap_or_default()
            }
            Ok(_) => {
                info!(call = key, media_id = %rec.media_id, cli = %rec.cli, cld = %rec.cld, "call of the previous run resumed");
                return Ok(Outcome::Resumed(key));
            }
            Err(e) => {
                warn!(call = key, media_id = %rec.media_id, error = %e, "media of a previous run's call did not survive: hanging it up");
                rec.alive_ms.unwrap_or(unix_ms(wall))
            }
        };
        let end_wall = at_ms(end_ms.min(unix_ms(wall)).max(rec.answered_ms.unwrap_or(0)));
        if let Some(c) = self.table.get_mut(key) {
            c.settle_at = Some((instant_at(now, wall, end_wall), end_wall));
        }
        self.end_call(now, wall, key, EndReason::NotResumed);
        Ok(Outcome::NotResumed)
    }

    /// A record the core cannot take back (its INVITE does not parse): billed from its own
    /// fields up to the checkpoint, its CDR removing it, so the call is never free. Its peers
    /// cannot be sent a BYE without the dialog; they end it by their own timers.
    fn settle_unusable(&mut self, wall: SystemTime, rec: &SavedCall) {
        let end_ms = rec
            .alive_ms
            .unwrap_or(unix_ms(wall))
            .max(rec.answered_ms.unwrap_or(0));
        let secs = rec
            .answered_ms
            .map_or(0, |a| end_ms.saturating_sub(a).div_ceil(1000));
        let cost = match &rec.tariff {
            Some(t) if rec.answered_ms.is_some() => t.cost(t.billed_secs(secs)),
            _ => crate::records::Micros(0),
        };
        self.effects.push(Effect::Cdr {
            cdr: crate::records::CdrDraft {
                call_id: rec.a.call_id.clone(),
                start_ms: rec.started_ms,
                answer_ms: rec.answered_ms,
                end_ms,
                caller: rec.cli.clone(),
                callee: rec.cld.clone(),
                source: Some(rec.source),
                account_id: Some(rec.account),
                connection_id: rec.connection,
                result_code: if rec.answered_ms.is_some() { 200 } else { 500 },
                reason: "record unusable after restart".into(),
                duration_secs: secs,
                cost,
                hung_up_by: Some(super::HUNG_UP_BY_SBC.to_owned()),
            },
            debit: (cost.0 > 0).then_some((rec.account, cost)),
            saved: Some(rec.media_id.clone()),
        });
    }

    /// A call of an earlier run that was being set up: 503 to the caller (no transaction
    /// holds its INVITE any more, so the answer is sent as is), CANCEL upstream, CDR.
    fn end_in_setup(&mut self, now: Instant, wall: SystemTime, key: CallKey) {
        let Some(mut call) = self.table.take(key) else {
            return;
        };
        self.cancel_attempt(now, &mut call);
        let why = "sipd restarted during call setup";
        let mut r = call.a_invite.response(503, Some(&call.a.local_tag));
        r.push("Warning", self.locals.warning(why));
        r.push("Retry-After", "1");
        // The INVITE's transaction again, so the 503 is retransmitted until ACKed and a
        // retransmitted INVITE gets it rather than starting a second call.
        let peer = call.a.peer;
        if let crate::sip::txn::RequestVerdict::New(k) =
            self.txn.on_request(now, &call.a_invite, peer)
        {
            self.txn.respond(now, &k, &r);
        } else {
            self.effects.push(Effect::Send(Transmit {
                peer,
                data: r.to_bytes(),
                token: 0,
            }));
        }
        *self.stats.finals.entry(503).or_default() += 1;
        self.table.put(call);
        self.finish(now, wall, key, 503, why);
    }
}

enum Outcome {
    Resumed(CallKey),
    NotResumed,
    EndedInSetup,
}

fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The monotonic instant of wall time `then`, knowing `now` is `wall` (clamped to the past
/// the monotonic clock can express).
fn instant_at(now: Instant, wall: SystemTime, then: SystemTime) -> Instant {
    let ago = wall.duration_since(then).unwrap_or_default();
    now.checked_sub(ago).unwrap_or(now)
}
