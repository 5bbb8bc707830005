//! UDP receive loop: one task per socket; one datagram is one message (RFC 3261 §18.3 does
//! not allow several per datagram).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;

use super::{Arrival, Counters, Event, FrameError, Inbound, Peer, Proto, Shared, pktinfo};

/// Largest UDP payload there is; anything shorter would silently truncate datagrams and
/// we would never know they were oversized.
const RECV_BUFFER: usize = 65_535;

/// `pktinfo`: the socket is a wildcard one with packet info enabled, so each datagram says
/// which of our addresses and interfaces it arrived on; else it arrived on `local`'s address.
pub(super) async fn recv_loop(
    shared: Arc<Shared>,
    socket: UdpSocket,
    local: SocketAddr,
    pktinfo: bool,
) {
    let mut buf = vec![0u8; RECV_BUFFER];
    let c = &shared.counters;
    let bound = Arrival {
        local: local.ip(),
        ifindex: None,
    };
    loop {
        let got = if pktinfo {
            pktinfo::recv(&socket, &mut buf)
                .await
                .map(|(n, remote, a)| (n, remote, a.unwrap_or(bound)))
        } else {
            socket
                .recv_from(&mut buf)
                .await
                .map(|(n, remote)| (n, remote, bound))
        };
        let (n, remote, arrival) = match got {
            Ok(r) => r,
            Err(e) => {
                // Per-datagram errors (e.g. an ICMP error queued on the socket) must not
                // end the listener; the pause keeps a persistent error from spinning a core.
                tracing::debug!(%local, error = %e, "udp receive error");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if !shared.allowed(remote, local, Proto::Udp) {
            continue;
        }
        let data = &buf[..n];
        // Empty datagrams and bare CRLFs are NAT keep-alives; nothing to answer on UDP
        // (RFC 5626 uses STUN there).
        if data.iter().all(|&b| b == b'\r' || b == b'\n') {
            Counters::inc(&c.keepalives);
            continue;
        }
        Counters::inc(&c.udp_rx);
        let max = shared.limits.max_message_bytes;
        let inbound = |len: usize| Inbound {
            peer: Peer {
                proto: Proto::Udp,
                local,
                remote,
                conn: None,
            },
            data: Bytes::copy_from_slice(&data[..len]),
            tls_client_names: Arc::from([]),
            arrival,
        };
        let ev = if n > max {
            Counters::inc(&c.oversized);
            tracing::debug!(%remote, len = n, max, "oversized udp datagram");
            Event::Malformed {
                inbound: inbound(max),
                error: FrameError::TooLarge,
            }
        } else {
            Event::Message(inbound(n))
        };
        if !shared.emit_now(ev) {
            tracing::debug!(%local, "event receiver gone, udp loop ends");
            return;
        }
    }
}
