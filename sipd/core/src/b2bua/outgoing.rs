//! The outgoing leg: which upstream a call tries next (routing caps, names, our address for
//! it) and the INVITE we send there (topology hiding). Failover asks again with the
//! candidates left. The core sends what this plans; nothing here calls back into it.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rsip::Method;
use tracing::warn;

use super::call::{Call, CallKey, Leg};
use super::locals::{Local, Locals, contact};
use super::names::{Lookup, Names};

/// A look-up the shell has not answered in this long counts as failed, so no call waits for
/// ever on a resolver that lost the question.
pub const PATIENCE: Duration = Duration::from_secs(10);
use crate::policy::routing::{CapFull, Router};
use crate::records::{Connection, Id, Transport};
use crate::sip::msg::{host, host_port};
use crate::sip::txn::{new_branch, random_hex, via_for};
use crate::sip::{Msg, Peer, Proto};

/// What the call does next.
#[derive(Debug)]
pub enum Next {
    /// Send this INVITE: the connection's channel is taken.
    Invite(Box<Plan>),
    /// The next candidate's host must be resolved first: the call waits for the answer.
    Wait {
        /// The host name to resolve.
        host: String,
    },
    /// Nothing left to try: answer the caller this.
    Exhausted(u16, &'static str),
}

/// An INVITE to send upstream, with its new leg B.
#[derive(Debug)]
pub struct Plan {
    /// The connection it goes to (its channel is taken).
    pub connection: Id,
    /// Its name, for logs.
    pub connection_name: String,
    /// The INVITE, without SDP (the core adds the anchored offer).
    pub invite: Msg,
    /// Leg B as the INVITE starts it.
    pub leg: Leg,
    /// The INVITE's Via branch.
    pub branch: String,
}

/// How we present ourselves upstream.
#[derive(Debug, Clone)]
pub struct Presentation {
    /// See [`CoreConfig::topology_hiding`](super::CoreConfig::topology_hiding).
    pub topology_hiding: bool,
    /// Our User-Agent, sent instead of the caller's with topology hiding.
    pub agent: String,
}

/// Routing and upstream INVITEs: picks the next connection for a call, resolves its host
/// through the shell, takes its channel and builds the INVITE.
pub struct Outgoing {
    router: Router,
    names: Names,
    /// Calls waiting for a host's addresses, and since when the first waits.
    waiting: HashMap<String, (Instant, HashSet<CallKey>)>,
    /// Names to ask the shell for.
    questions: Vec<String>,
    presentation: Presentation,
}

impl Outgoing {
    /// With `router`'s connections, no names known yet.
    pub fn new(router: Router, presentation: Presentation) -> Outgoing {
        Outgoing {
            router,
            names: Names::default(),
            waiting: HashMap::new(),
            questions: Vec::new(),
            presentation,
        }
    }

    /// The connections and their usage.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// New connections; names are asked for again (an operator may have repointed one).
    pub fn reload(&mut self, connections: Vec<Connection>) {
        self.router.reload(connections);
        self.names.clear();
    }

    /// Names the core must ask the shell for since the last call.
    pub fn questions(&mut self) -> Vec<String> {
        std::mem::take(&mut self.questions)
    }

    /// Whether `ip` is one of our upstreams' addresses (a literal host, or what its name
    /// resolved to): a vendor we send calls to, never a stranger.
    pub fn is_upstream(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.router
            .connections()
            .any(|c| match c.host.parse::<IpAddr>() {
                Ok(a) => a.to_canonical() == ip,
                Err(_) => self.names.has_addr(&c.host, ip),
            })
    }

    /// Connections that route `cld`, best first.
    pub fn candidates(&self, cld: &str) -> Vec<Id> {
        self.router.candidates(cld)
    }

    /// This node's share of a connection's cluster caps (see [`Router::set_share`]).
    pub fn set_share(&mut self, id: Id, share: Option<crate::policy::Share>) {
        self.router.set_share(id, share);
    }

    /// A call of an earlier run holds a channel of `id` again (never refused).
    pub fn hold(&mut self, id: Id) {
        self.router.hold(id);
    }

    /// Gives a channel of connection `id` back.
    pub fn release(&mut self, id: Id) {
        self.router.release(id);
    }

    /// The shell's answer for `host`; returns the calls that waited for it.
    pub fn resolved(
        &mut self,
        now: Instant,
        host: &str,
        addrs: Vec<IpAddr>,
        ttl: Duration,
    ) -> Vec<CallKey> {
        self.names.answer(now, host, addrs, ttl);
        let mut calls: Vec<CallKey> = self
            .waiting
            .remove(host)
            .map(|(_, c)| c.into_iter().collect())
            .unwrap_or_default();
        // Oldest first, as they arrived.
        calls.sort_unstable();
        calls
    }

    /// Names calls have waited for longer than [`PATIENCE`].
    pub fn overdue(&self, now: Instant) -> Vec<String> {
        self.waiting
            .iter()
            .filter(|(_, (since, _))| now.duration_since(*since) >= PATIENCE)
            .map(|(h, _)| h.clone())
            .collect()
    }

    /// Plans the next attempt of `call` on its remaining candidates, taking the chosen
    /// connection's capacity.
    pub fn next(&mut self, now: Instant, locals: &Locals, call: &mut Call) -> Next {
        let mut capped = false;
        while !call.candidates.is_empty() {
            let id = call.candidates[0];
            let Some(conn) = self.router.connection(id).cloned() else {
                call.candidates.remove(0);
                continue;
            };
            let proto = match conn.transport {
                Transport::Udp => Proto::Udp,
                Transport::Tcp => Proto::Tcp,
                Transport::Tls => Proto::Tls,
            };
            let addrs = match self.names.lookup(now, &conn.host) {
                Lookup::Addrs { addrs, ask } => {
                    if ask {
                        self.questions.push(conn.host.clone());
                    }
                    addrs
                }
                Lookup::Wait { ask } => {
                    if ask {
                        self.questions.push(conn.host.clone());
                    }
                    self.waiting
                        .entry(conn.host.clone())
                        .or_insert_with(|| (now, HashSet::new()))
                        .1
                        .insert(call.key);
                    return Next::Wait {
                        host: conn.host.clone(),
                    };
                }
            };
            call.candidates.remove(0);
            if addrs.is_empty() {
                warn!(connection = %conn.name, host = %conn.host, "cannot resolve upstream");
                continue;
            }
            let Some((dest, local)) = addrs.iter().find_map(|ip| {
                locals
                    .toward(proto, *ip)
                    .map(|l| (SocketAddr::new(*ip, conn.port), l))
            }) else {
                warn!(connection = %conn.name, %proto, "no local SIP address for this upstream's transport and family");
                continue;
            };
            match self.router.try_take(id, now) {
                Ok(()) => {}
                Err(CapFull::Channels | CapFull::Cps) => {
                    capped = true;
                    continue;
                }
            }
            return Next::Invite(Box::new(self.plan(call, &conn, dest, local)));
        }
        if capped {
            Next::Exhausted(503, "upstream capacity")
        } else if let Some(code) = call.last_failure {
            Next::Exhausted(if code == 408 { 503 } else { code }, "upstream failed")
        } else if call.attempt.is_none() && call.b.is_none() {
            Next::Exhausted(503, "no usable upstream")
        } else {
            Next::Exhausted(503, "upstream failed")
        }
    }

    /// The INVITE to `dest` for `call` and the dialog it starts.
    fn plan(&self, call: &Call, conn: &Connection, dest: SocketAddr, local: Local) -> Plan {
        let p = &self.presentation;
        let uri_text = format!(
            "sip:{}@{}{}",
            call.cld,
            host_port(dest),
            match local.proto {
                Proto::Udp => "",
                Proto::Tcp => ";transport=tcp",
                Proto::Tls => ";transport=tls",
            }
        );
        let uri = crate::sip::uri::parse_uri(&uri_text).unwrap_or_default();
        let tag = random_hex(8);
        let call_id = format!("{}@{}", random_hex(12), host(local.advertised.ip()));
        let to = format!("<sip:{}@{}>", call.cld, host_port(dest));
        let from = if p.topology_hiding {
            format!(
                "<sip:{}@{}>;tag={tag}",
                call.cli,
                host(local.advertised.ip())
            )
        } else {
            let caller = call.a_invite.from();
            let display = caller
                .display
                .as_ref()
                .map(|d| format!("\"{d}\" "))
                .unwrap_or_default();
            format!("{display}<{}>;tag={tag}", caller.uri)
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
        inv.push("Contact", contact(local.proto, local.advertised));
        inv.push("Allow", super::ALLOW);
        if p.topology_hiding {
            inv.push("User-Agent", p.agent.clone());
        } else {
            // Without topology hiding the caller's identity headers go through as they came.
            for h in [
                "User-Agent",
                "P-Asserted-Identity",
                "Remote-Party-ID",
                "Privacy",
            ] {
                for v in call.a_invite.get_all(h) {
                    inv.push(h, v.to_owned());
                }
            }
        }
        if let Some(s) = &call.b_offer {
            inv.push("Content-Type", "application/sdp");
            inv.body = s.clone().into_bytes();
        }
        let peer = Peer {
            proto: local.proto,
            remote: dest,
            local: local.bind,
            conn: None,
        };
        let leg = Leg {
            call_id,
            local: from,
            local_tag: tag,
            remote: to,
            remote_tag: None,
            target: uri_text,
            route: Vec::new(),
            peer,
            local_cseq: 1,
            advertised: local.advertised,
        };
        Plan {
            connection: conn.id,
            connection_name: conn.name.clone(),
            invite: inv,
            leg,
            branch,
        }
    }
}
