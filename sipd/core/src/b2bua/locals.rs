//! Our own SIP addresses: which one faces a peer, and how we name ourselves to it (Via,
//! Contact, Warning).

use std::net::{IpAddr, SocketAddr};

use crate::sip::malformed::warning_value;
use crate::sip::msg::host_port;
use crate::sip::{Peer, Proto};

/// One of our SIP addresses: bound here, written as `advertised` in Via and Contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// The transport of the socket.
    pub proto: Proto,
    /// The socket's bound address.
    pub bind: SocketAddr,
    /// The address peers are told (Via, Contact); differs from `bind` behind a NAT.
    pub advertised: SocketAddr,
}

/// Our SIP addresses, in configuration order (the first names us in Warning headers).
#[derive(Debug, Clone, Default)]
pub struct Locals(Vec<Local>);

impl Locals {
    /// The addresses, in order.
    pub fn new(list: Vec<Local>) -> Locals {
        Locals(list)
    }

    /// The address to reach `dest` over `proto` from: the first of the same family.
    pub fn toward(&self, proto: Proto, dest: IpAddr) -> Option<Local> {
        self.0
            .iter()
            .find(|l| l.proto == proto && l.bind.is_ipv4() == dest.is_ipv4())
            .copied()
    }

    /// The address `peer` talks to (the one its message arrived on).
    pub fn of(&self, peer: &Peer) -> Local {
        self.0
            .iter()
            .find(|l| l.proto == peer.proto && l.bind == peer.local)
            .copied()
            .or_else(|| self.toward(peer.proto, peer.remote.ip()))
            .unwrap_or(Local {
                proto: peer.proto,
                bind: peer.local,
                advertised: peer.local,
            })
    }

    /// A `Warning: 399` value naming our first advertised address.
    pub fn warning(&self, text: &str) -> String {
        warning_value(self.agent_host(), text)
    }

    /// The first advertised address (127.0.0.1 with none), which names us in Warning headers.
    pub fn agent_host(&self) -> IpAddr {
        self.0
            .first()
            .map_or(IpAddr::from([127, 0, 0, 1]), |l| l.advertised.ip())
    }
}

/// Our Contact on a leg that uses `proto` and names us as `advertised`.
pub fn contact(proto: Proto, advertised: SocketAddr) -> String {
    match proto {
        Proto::Udp => format!("<sip:sbc@{}>", host_port(advertised)),
        Proto::Tcp => format!("<sip:sbc@{};transport=tcp>", host_port(advertised)),
        // `transport=tls` rather than a sips: URI: the leg is TLS to the next hop only, which
        // is all a B2BUA can promise (RFC 5630 §3.1.3 keeps sips: for end-to-end).
        Proto::Tls => format!("<sip:sbc@{};transport=tls>", host_port(advertised)),
    }
}
