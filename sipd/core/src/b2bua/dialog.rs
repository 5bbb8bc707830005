//! Inside an established dialog: the caller's ACK (and a delayed offer's answer in it),
//! requests relayed from one leg to the other (re-INVITE, UPDATE, INFO, OPTIONS, …) with
//! their SDP re-anchored, their answers relayed back, and BYE.

use std::time::{Instant, SystemTime};

use rsip::Method;
use tracing::{debug, warn};

use super::call::{Call, CallKey, Leg, Phase, Relayed};
use super::locals::contact;
use super::{Core, Effect, EndReason, Media, Side, Token};
use crate::records::RefusalReason;
use crate::sip::msg::host_port;
use crate::sip::txn::{ServerKey, new_branch, via_for};
use crate::sip::uri::parse_uri;
use crate::sip::{Msg, NameAddr, Peer, Transmit};
use std::net::SocketAddr;

impl<M: Media> Core<M> {
    pub(super) fn on_ack(&mut self, now: Instant, peer: Peer, ack: Msg) {
        let from_tag = ack.from().tag.unwrap_or_default();
        let key = self.table.dialog_of(ack.call_id(), &from_tag);
        let Some((key, from_a)) = key else {
            self.stats.stray += 1;
            return;
        };
        let Some(mut call) = self.table.take(key) else {
            return;
        };
        // A stranger's ACK would carry its own answer in a delayed-offer call (or stop our
        // 2xx retransmissions): dropped, and counted like the other in-dialog refusals.
        let leg = if from_a {
            Some(&call.a)
        } else {
            call.b.as_ref()
        };
        if !leg.is_some_and(|l| is_own_peer(l, from_a, &peer)) {
            self.stats.in_dialog_refused += 1;
            self.table.put(call);
            return;
        }
        let mut first_ack = false;
        if from_a {
            if !call.a_acked {
                call.a_acked = true;
                first_ack = call.phase == Phase::Answered;
                self.txn.acked(&call.a_txn);
            }
            // Delayed offer: the caller's answer is in its ACK; the vendor's ACK carries it.
            if call.delayed_offer && call.b_ack.is_none() && call.phase == Phase::Answered {
                let sdp = String::from_utf8_lossy(&ack.body).into_owned();
                let body = if ack.has_sdp() {
                    self.media
                        .answer(
                            &call.media_id,
                            Side::A,
                            call.sip_source(Side::A),
                            &sdp,
                            self.cfg.strict_source,
                        )
                        .ok()
                } else {
                    None
                };
                self.ack_b(now, &mut call, body);
                let key = call.key;
                self.table.put(call);
                // The caller's answer completed the media: saved as it is now.
                self.save(key, true);
                return;
            }
            // ACKs of re-INVITEs relayed A→B were answered by us toward B already.
        }
        let key = call.key;
        self.table.put(call);
        if first_ack {
            // The next run must not send our 2xx again (not held: the ACK needs no answer).
            self.save(key, false);
        }
    }

    /// ACK for the vendor's 2xx (a new transaction-less request, RFC 3261 §13.2.2.4).
    pub(super) fn ack_b(&mut self, _now: Instant, call: &mut Call, sdp: Option<String>) {
        let Some(b) = call.b.as_ref() else {
            return;
        };
        let cseq = call.attempt.as_ref().map_or(1, |a| a.invite.cseq().0);
        let mut ack = dialog_request(b, Method::Ack, cseq, &self.cfg.agent);
        if let Some(s) = sdp {
            ack.push("Content-Type", "application/sdp");
            ack.body = s.into_bytes();
        }
        self.effects.push(Effect::Send(Transmit {
            peer: b.peer,
            data: ack.to_bytes(),
            token: 0,
        }));
        call.b_ack = Some(ack);
    }

    pub(super) fn in_dialog(
        &mut self,
        now: Instant,
        wall: SystemTime,
        peer: Peer,
        req: Msg,
        key: ServerKey,
    ) {
        let from_tag = req.from().tag.unwrap_or_default();
        let found = self.table.dialog_of(req.call_id(), &from_tag);
        let Some(mut call) = found.and_then(|(k, _)| self.table.take(k)) else {
            // A dialog we never had or already forgot: a peer's late BYE, or a scanner
            // guessing at live calls.
            let r = req.response(481, None);
            self.txn.respond(now, &key, &r);
            self.dialog_probe(now, wall, &peer, RefusalReason::UnknownDialog, 481);
            return;
        };
        let (call_key, from_a) = (call.key, found.is_some_and(|(_, a)| a));
        let method = req.method().cloned().unwrap_or(Method::Options);
        // Call-ID and tags are no secret (anyone on the path sees them): only the dialog's
        // own peer may end the call or move its media, else a sniffer hangs up or steals it.
        let leg = if from_a {
            Some(&mut call.a)
        } else {
            call.b.as_mut()
        };
        let own = leg
            .as_deref()
            .is_some_and(|l| is_own_peer(l, from_a, &peer));
        if !own {
            self.table.put(call);
            self.stats.in_dialog_refused += 1;
            debug!(src = %peer.remote, %method, from_a, "in-dialog request from a stranger refused");
            let r = req.response(403, None);
            self.txn.respond(now, &key, &r);
            self.dialog_probe(now, wall, &peer, RefusalReason::InDialogStranger, 403);
            return;
        }
        // Latch the peer's transport details for requests we send later (TCP connection).
        if let Some(l) = leg {
            l.peer.conn = peer.conn.or(l.peer.conn);
        }
        let answered = call.phase == Phase::Answered;
        self.table.put(call);
        if !answered {
            // Requests inside an early or ended dialog: BYE before answer ends it; the rest
            // are refused (we do not relay early-dialog requests such as PRACK/UPDATE).
            if method == Method::Bye {
                let r = req.response(200, None);
                self.txn.respond(now, &key, &r);
                if let Some(mut call) = self.table.take(call_key) {
                    if call.phase != Phase::Trying {
                        self.table.put(call);
                        return;
                    }
                    self.cancel_attempt(now, &mut call);
                    let resp = call.a_invite.response(487, Some(&call.a.local_tag));
                    let a_txn = call.a_txn.clone();
                    call.ended_by = Some("caller".into());
                    self.table.put(call);
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
    pub(super) fn relay_request(
        &mut self,
        now: Instant,
        call_key: CallKey,
        from_a: bool,
        req: Msg,
        key: ServerKey,
    ) {
        let Some(mut call) = self.table.take(call_key) else {
            return;
        };
        let method = req.method().cloned().unwrap_or(Method::Options);
        let side = if from_a { Side::A } else { Side::B };
        let body = if req.has_sdp() && matches!(method, Method::Invite | Method::Update) {
            let sdp = String::from_utf8_lossy(&req.body).into_owned();
            match self.media.offer(
                &call.media_id,
                side,
                call.sip_source(side),
                &sdp,
                self.cfg.strict_source,
            ) {
                Ok(s) => Some(("application/sdp".to_owned(), s.into_bytes())),
                Err(e) => {
                    warn!(error = %e, "re-offer refused by the relay");
                    self.table.put(call);
                    // 488 whatever the cause: the dialog goes on with the media it has
                    // (RFC 3261 §14.2), and the Warning says why.
                    let mut r = req.response(488, None);
                    r.push("Warning", self.locals.warning(&e.warning()));
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
            self.table.put(call);
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
        self.table.put(call);
        // The adoption skips CSEQ_GAP numbers per leg: saved again (not held) once half of
        // them are used, so an in-dialog request costs no write of its own.
        if self.table.get(call_key).is_some_and(|c| {
            c.a.local_cseq.wrapping_sub(c.cseq_saved[0]) >= super::adopt::CSEQ_GAP / 2
                || c.b.as_ref().is_some_and(|b| {
                    b.local_cseq.wrapping_sub(c.cseq_saved[1]) >= super::adopt::CSEQ_GAP / 2
                })
        }) {
            self.save(call_key, false);
        }
        let token = self.token(Token::Relayed(Box::new(Relayed {
            call: call_key,
            from_a,
            txn: key,
            request: req,
        })));
        self.txn.send_request(now, &out, peer, token);
    }

    pub(super) fn on_relayed_response(&mut self, now: Instant, r: Relayed, resp: Msg) {
        let code = resp.code().unwrap_or(500);
        let Some(call) = self.table.take(r.call) else {
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
                self.locals.of(&call.a.peer)
            } else {
                call.b
                    .as_ref()
                    .map(|b| self.locals.of(&b.peer))
                    .unwrap_or(self.locals.of(&call.a.peer))
            };
            out.push("Contact", contact(local.proto, local.advertised));
            if resp.has_sdp() {
                let side = if r.from_a { Side::B } else { Side::A };
                let sdp = String::from_utf8_lossy(&resp.body).into_owned();
                if let Ok(s) = self.media.answer(
                    &call.media_id,
                    side,
                    call.sip_source(side),
                    &sdp,
                    self.cfg.strict_source,
                ) {
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
                    self.effects.push(Effect::Send(Transmit {
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
        self.table.put(call);
        if (200..300).contains(&code) && matches!(method, Method::Invite | Method::Update) {
            // The media may have moved: the next run must adopt it as it is now.
            self.save(r.call, true);
        }
        self.txn.respond(now, &r.txn, &out);
        if method == Method::Invite && (200..300).contains(&code) {
            self.txn.acked(&r.txn);
        }
    }
}

/// A request inside `leg`'s dialog from us (RFC 3261 §12.2.1.1).
pub(super) fn dialog_request(leg: &Leg, method: Method, cseq: u32, agent: &str) -> Msg {
    // Our reader, not rsip's: a target may be an IPv6 reference.
    let uri = parse_uri(&leg.target)
        .or_else(|_| parse_uri(&format!("sip:{}", host_port(leg.peer.remote))))
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
        m.push("Contact", contact(leg.peer.proto, leg.advertised));
    }
    m.push("User-Agent", agent.to_owned());
    m
}

/// Whether a request that names `leg`'s dialog comes from that leg's peer: its connection,
/// the address the dialog came from (the caller's source, NAT included; the vendor we
/// sent to) or the address its Contact names. On TCP a peer may open a new connection (a new
/// source port), so its address's IP is enough there; on UDP the caller's port must match
/// too (another phone behind the same NAT is another peer). A vendor is a configured host
/// whose proxies often answer from another port: its IP is enough.
fn is_own_peer(leg: &Leg, from_a: bool, peer: &Peer) -> bool {
    if peer.conn.is_some() && peer.conn == leg.peer.conn {
        return true;
    }
    let signalled = contact_addr(&leg.target);
    if peer.remote == leg.peer.remote || Some(peer.remote) == signalled {
        return true;
    }
    let same_host = peer.remote.ip() == leg.peer.remote.ip()
        || signalled.is_some_and(|a| a.ip() == peer.remote.ip());
    same_host && (!from_a || peer.proto.is_reliable())
}

/// The address a Contact URI names, when it names an IP address (port 5060 when absent).
fn contact_addr(target: &str) -> Option<SocketAddr> {
    let rest = target
        .strip_prefix("sip:")
        .or_else(|| target.strip_prefix("sips:"))?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = rest.split([';', '?', '>']).next()?;
    if let Ok(a) = hostport.parse::<SocketAddr>() {
        return Some(a);
    }
    let host = hostport.trim_start_matches('[').trim_end_matches(']');
    host.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 5060))
}

/// The address a Contact URI names (see `contact_addr`).
pub(super) fn contact_addr_of(target: &str) -> Option<SocketAddr> {
    contact_addr(target)
}

#[cfg(test)]
pub(super) fn contact_addr_for_tests(target: &str) -> Option<SocketAddr> {
    contact_addr(target)
}
