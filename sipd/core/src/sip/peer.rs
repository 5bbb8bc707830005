//! Who a message comes from or goes to, in the one vocabulary the sockets, the transactions
//! and the call core share.

use std::fmt;
use std::net::SocketAddr;

use serde::Serialize;

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// Datagrams; requests we send are retransmitted.
    Udp,
    /// A stream connection; no retransmissions.
    Tcp,
    /// A TCP connection carrying TLS (RFC 3261 §26.2): a stream like TCP, encrypted.
    Tls,
}

impl Proto {
    /// Reliable transports need no retransmissions (RFC 3261 §17.1.1.2).
    pub fn is_reliable(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Tls)
    }

    /// The transport token of a Via header (`SIP/2.0/UDP`).
    pub fn via_token(self) -> &'static str {
        match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
            Proto::Tls => "TLS",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
            Proto::Tls => "tls",
        })
    }
}

/// Identifies one TCP or TLS connection for its lifetime; never reused within a process.
pub type ConnId = u64;

/// Where a message came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The transport it came or goes over.
    pub proto: Proto,
    /// Their address: the packet's source, and where answers go (symmetric, NAT-safe).
    pub remote: SocketAddr,
    /// Our address it arrived on (UDP: the socket to answer from; TCP: the connection's).
    pub local: SocketAddr,
    /// TCP connection it arrived on, if any.
    pub conn: Option<ConnId>,
}

impl Peer {
    /// Whether a request from `other` may come from the same sender as one from `self`:
    /// the same connection, the same address and port, or, on a reliable transport, the same
    /// host (a TCP client that reconnected has a new source port; on UDP another port is
    /// another phone, behind the same NAT perhaps).
    pub fn same_sender(&self, other: &Peer) -> bool {
        if other.conn.is_some() && other.conn == self.conn {
            return true;
        }
        if other.remote == self.remote {
            return true;
        }
        other.proto.is_reliable()
            && self.proto.is_reliable()
            && other.remote.ip().to_canonical() == self.remote.ip().to_canonical()
    }
}

/// Something to put on the wire; `token` identifies the client transaction (0 for none) so a
/// transport failure can be reported against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub peer: Peer,
    /// The whole message, as bytes.
    pub data: Vec<u8>,
    /// The client transaction it belongs to; 0 for none.
    pub token: u64,
}
