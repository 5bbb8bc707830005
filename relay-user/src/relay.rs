//! The userspace relay: one UDP socket per relay port, a few worker threads on epoll, batched
//! `recvmmsg`/`sendmmsg`. It is the whole data path in userspace mode and the slow path in XDP
//! mode (packets the kernel passes up land on these same sockets). Latching, strict source and
//! counters follow the kernel's rules exactly, so a call behaves the same on either path.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::{AsFd, AsRawFd},
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
};

use relay_common::{
    Addr,
    relay::{LEG_LATCHED, LEG_PEER_KNOWN, Leg, LegCounters},
    rtp::rtp_seq_of,
    stats::Stat,
};
use tracing::{debug, trace, warn};

use crate::{
    clock::monotonic_ns,
    dataplane::{DataPlane, Mode},
    sys::{Epoll, RecvBatch, send_batch},
};

/// Packets per `recvmmsg`.
const BATCH: usize = 32;
/// Batches per socket per wakeup before giving other sockets a turn.
const ROUNDS: usize = 8;
/// How often workers look at the stop flag when idle.
const TICK_MS: i32 = 100;

/// What to do with one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send from the partner's relay port to its peer.
    Forward { via: u16, to: SocketAddr },
    /// Strict source: not from the latched (or signalled) peer.
    DropStrict,
    /// The partner leg is missing or its peer unknown: nowhere to send yet.
    NoDestination,
}

fn peer_of(leg: &Leg) -> SocketAddr {
    SocketAddr::new(IpAddr::from(leg.peer_addr), leg.peer_port)
}

/// The kernel's per-packet rules ([`Leg::may_learn_from`], [`Leg::refuses`]). A latching leg
/// learns its peer once, from the first packet of an address it trusts (the SDP's or the SIP
/// source's, any port: NAT) inside the window signalling opened; strict source then drops
/// anyone else, and before that anyone untrusted. A leg that does not latch but knows its peer
/// from SDP is strict against that address. Returns the action and whether this packet
/// latched.
pub(crate) fn decide(
    leg: &mut Leg,
    partner: Option<&Leg>,
    src: SocketAddr,
    now_ns: u64,
) -> (Action, bool) {
    // `Addr` spells IPv4 as v4-mapped, so `a.b.c.d` and `::ffff:a.b.c.d` are one source.
    let from = Addr::from(src.ip());
    let mut latched_now = false;
    if leg.may_learn_from(&from, now_ns) {
        leg.peer_addr = from;
        leg.peer_port = src.port();
        leg.flags |= LEG_LATCHED | LEG_PEER_KNOWN;
        latched_now = true;
    } else if leg.refuses(&from, src.port()) {
        return (Action::DropStrict, false);
    }
    let action = match partner {
        Some(p) if p.has(LEG_PEER_KNOWN) && p.peer_port != 0 => Action::Forward {
            via: p.local_port,
            to: peer_of(p),
        },
        _ => Action::NoDestination,
    };
    (action, latched_now)
}

struct Inner {
    dp: Arc<DataPlane>,
    sockets: RwLock<HashMap<u16, Arc<UdpSocket>>>,
    /// The host's addresses, read at start: a socket bound to the unspecified address
    /// receives on each of them (see `own_socket`).
    host: Vec<IpAddr>,
    epolls: Vec<Epoll>,
    stop: AtomicBool,
}

/// The userspace relay engine. Dropping it stops the workers and closes every socket.
pub struct UserRelay {
    inner: Arc<Inner>,
    workers: Vec<JoinHandle<()>>,
}

impl UserRelay {
    /// Starts `workers` threads (at least one).
    pub fn start(dp: Arc<DataPlane>, workers: usize) -> io::Result<Self> {
        let n = workers.max(1);
        let epolls = (0..n)
            .map(|_| Epoll::new())
            .collect::<io::Result<Vec<_>>>()?;
        let host = crate::host::addresses().unwrap_or_else(|e| {
            warn!(error = %e, "cannot list the host's addresses; loops through them are only caught on loopback");
            Vec::new()
        });
        let inner = Arc::new(Inner {
            dp,
            sockets: RwLock::new(HashMap::new()),
            host,
            epolls,
            stop: AtomicBool::new(false),
        });
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let inner = inner.clone();
            let h = thread::Builder::new()
                .name(format!("relay-{i}"))
                .spawn(move || worker(inner, i))?;
            handles.push(h);
        }
        Ok(UserRelay {
            inner,
            workers: handles,
        })
    }

    /// Binds `addr:port` and starts relaying what arrives there.
    pub fn open_port(&self, addr: IpAddr, port: u16) -> io::Result<()> {
        let sock = UdpSocket::bind(SocketAddr::new(addr, port))?;
        sock.set_nonblocking(true)?;
        let sock = Arc::new(sock);
        {
            let mut map = self
                .inner
                .sockets
                .write()
                .unwrap_or_else(|p| p.into_inner());
            if map.contains_key(&port) {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("relay port {port} already open"),
                ));
            }
            map.insert(port, sock.clone());
        }
        let ep = &self.inner.epolls[port as usize % self.inner.epolls.len()];
        if let Err(e) = ep.add(sock.as_raw_fd(), port as u64) {
            self.inner
                .sockets
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&port);
            return Err(e);
        }
        Ok(())
    }

    /// Stops relaying on `port` and closes its socket. Unknown ports are ignored.
    pub fn close_port(&self, port: u16) {
        let sock = self
            .inner
            .sockets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&port);
        if let Some(sock) = sock {
            let ep = &self.inner.epolls[port as usize % self.inner.epolls.len()];
            if let Err(e) = ep.delete(sock.as_raw_fd()) {
                debug!(port, error = %e, "epoll delete");
            }
        }
    }

    /// Whether the relay has a socket bound on `port`.
    pub fn is_open(&self, port: u16) -> bool {
        self.inner
            .sockets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&port)
    }

    /// Sockets the relay holds open.
    pub fn open_ports(&self) -> usize {
        self.inner
            .sockets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// The data plane it forwards through and counts in.
    pub fn dataplane(&self) -> &Arc<DataPlane> {
        &self.inner.dp
    }
}

impl Drop for UserRelay {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

fn socket(inner: &Inner, port: u16) -> Option<Arc<UdpSocket>> {
    inner
        .sockets
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&port)
        .cloned()
}

fn worker(inner: Arc<Inner>, idx: usize) {
    let mut batch = RecvBatch::new(BATCH);
    let mut tokens = Vec::with_capacity(64);
    let mut pass = Vec::with_capacity(BATCH);
    while !inner.stop.load(Ordering::Relaxed) {
        if let Err(e) = inner.epolls[idx].wait(&mut tokens, 64, TICK_MS) {
            warn!(worker = idx, error = %e, "epoll_wait failed; relay worker stops");
            return;
        }
        for &t in &tokens {
            let port = t as u16;
            // Closed meanwhile: its events are stale.
            let Some(sock) = socket(&inner, port) else {
                continue;
            };
            for _ in 0..ROUNDS {
                let n = match batch.recv(sock.as_fd()) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        debug!(port, error = %e, "recvmmsg");
                        break;
                    }
                };
                relay_batch(&inner, port, &batch, n, &mut pass);
                if n < BATCH {
                    break;
                }
            }
        }
    }
}

/// Whether `to` is one of the relay's own sockets. The call table refuses SDP that points at
/// the relay, but should a leg's peer still be the relay (a latch on a spoofed source, a bug),
/// forwarding there would go round forever: defence in depth. A socket bound to the
/// unspecified address receives on every local address: loopback and the host's addresses
/// as read at start.
fn own_socket(inner: &Inner, to: SocketAddr) -> bool {
    let Some(sock) = socket(inner, to.port()) else {
        return false;
    };
    let Ok(local) = sock.local_addr() else {
        // Cannot tell: a dropped packet is cheaper than a loop.
        return true;
    };
    let (ours, to) = (
        crate::cidr::normalize(local.ip()),
        crate::cidr::normalize(to.ip()),
    );
    ours == to
        || (ours.is_unspecified()
            && (to.is_loopback() || to.is_unspecified() || inner.host.contains(&to)))
}

/// All packets of a batch arrived on one port, so one firewall lock and one leg lookup serve
/// them all.
fn relay_batch(inner: &Inner, port: u16, batch: &RecvBatch, n: usize, pass: &mut Vec<bool>) {
    let dp = &inner.dp;
    if dp.mode() == Mode::Userspace {
        dp.count(Stat::Received, n as u64);
    }
    // The kernel's order: the firewall judges the source before any relay state is looked at,
    // so a banned host's media is dropped (and counted) whether or not its leg exists.
    dp.relay_firewall(
        port,
        (0..n).filter_map(|i| batch.get(i).map(|(p, src)| (src.ip(), p))),
        pass,
    );
    if !pass.contains(&true) {
        return;
    }
    let (mut leg, partner) = match dp.relay_lookup(port) {
        Ok(Some(v)) => v,
        Ok(None) => {
            trace!(port, n, "no leg on relay port; dropped");
            return;
        }
        Err(e) => {
            warn!(port, error = %e, "relay leg lookup failed");
            return;
        }
    };
    let now = monotonic_ns();
    let mut delta = LegCounters::default();
    // Sequence numbers of the RTP relayed, counted for loss under the counters' lock.
    let mut seqs: Vec<u16> = Vec::with_capacity(n);
    let mut latched = None;
    let mut sends: Vec<(&[u8], SocketAddr)> = Vec::with_capacity(n);
    let mut via = None;
    // Whether the batch's destination is one of our own sockets; asked once, at the first
    // forward: every packet of a batch goes to the same partner peer.
    let mut looping = None;
    let mut verdicts = pass.iter();
    for i in 0..n {
        let Some((payload, src)) = batch.get(i) else {
            continue;
        };
        // `pass` has one entry per packet `batch.get` returned, in order.
        if verdicts.next() != Some(&true) {
            continue;
        }
        delta.last_seen_ns = now;
        let (action, l) = decide(&mut leg, partner.as_ref(), src, now);
        if l {
            latched = Some(src);
        }
        match action {
            Action::Forward { to, .. } if *looping.get_or_insert_with(|| own_socket(inner, to)) => {
                dp.count(Stat::DropRelayLoop, 1);
                trace!(port, %to, "destination is a relay socket; dropped");
            }
            Action::Forward { via: v, to } => {
                via = Some(v);
                sends.push((payload, to));
                delta.packets += 1;
                delta.bytes += payload.len() as u64;
                seqs.extend(rtp_seq_of(payload));
            }
            Action::DropStrict => {
                delta.strict_drops += 1;
                dp.count(Stat::DropStrictSource, 1);
            }
            Action::NoDestination => {
                trace!(port, "partner peer unknown; dropped");
            }
        }
    }
    if let Some(src) = latched {
        debug!(port, peer = %src, session = leg.session_id, "latched");
        if let Err(e) = dp.relay_latch(port, leg.session_id, src) {
            warn!(port, error = %e, "could not record latch");
        }
    }
    if let Some(via) = via {
        match socket(inner, via) {
            Some(out) => match send_batch(out.as_fd(), &sends) {
                Ok(sent) => dp.count(Stat::RelayTx, sent as u64),
                Err(e) => debug!(port, via, error = %e, "sendmmsg"),
            },
            None => debug!(port, via, "partner relay port not open; dropped"),
        }
    }
    dp.relay_account(port, &delta, &seqs);
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_common::relay::{LEG_LATCH, LEG_STRICT_SOURCE, LEG_TRUST_KNOWN};
    use std::time::{Duration, Instant};

    /// Signalling opened the learning window until t = 1000 ns.
    const OPEN: u64 = 500;
    const CLOSED: u64 = 2000;

    fn leg(port: u16, partner: u16, flags: u32, peer: Option<&str>) -> Leg {
        let mut l = Leg {
            local_port: port,
            partner_port: partner,
            session_id: 1,
            flags,
            learn_until_ns: 1000,
            ..Leg::default()
        };
        if let Some(p) = peer {
            let p: SocketAddr = p.parse().unwrap();
            l.peer_addr = Addr::from(p.ip());
            l.peer_port = p.port();
            l.flags |= LEG_PEER_KNOWN;
        }
        l
    }

    /// `leg` whose side's SIP came from `sip`.
    fn trusting(mut l: Leg, sip: &str) -> Leg {
        l.trust_addr = Addr::from(sip.parse::<IpAddr>().unwrap());
        l.flags |= LEG_TRUST_KNOWN;
        l
    }

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn learns_only_from_the_sip_source_or_the_sdp_address_then_strict() {
        let mut a = trusting(
            leg(
                30000,
                30002,
                LEG_LATCH | LEG_STRICT_SOURCE,
                Some("10.0.0.1:4000"),
            ),
            "192.0.2.1",
        );
        let b = leg(30002, 30000, 0, Some("10.0.0.2:5000"));
        // A port spray before the peer speaks: dropped, and nothing learnt.
        let (act, latched) = decide(&mut a, Some(&b), at("192.0.2.9:6000"), OPEN);
        assert_eq!((act, latched), (Action::DropStrict, false));
        assert!(!a.has(LEG_LATCHED));
        // The NATed peer, from its SIP source address on another port: learnt.
        let nat = at("192.0.2.1:6000");
        let (act, latched) = decide(&mut a, Some(&b), nat, OPEN);
        assert!(latched, "the SIP source's first packet latches");
        assert_eq!(
            act,
            Action::Forward {
                via: 30002,
                to: at("10.0.0.2:5000")
            }
        );
        assert_eq!(peer_of(&a), nat);
        for stranger in ["192.0.2.9:6000", "192.0.2.1:6001", "10.0.0.1:4000"] {
            let (act, latched) = decide(&mut a, Some(&b), at(stranger), OPEN);
            assert_eq!((act, latched), (Action::DropStrict, false), "{stranger}");
        }
        assert!(matches!(
            decide(&mut a, Some(&b), nat, OPEN).0,
            Action::Forward { .. }
        ));
        // The v4-mapped spelling of the latched peer is the latched peer.
        assert!(matches!(
            decide(&mut a, Some(&b), at("[::ffff:192.0.2.1]:6000"), OPEN).0,
            Action::Forward { .. }
        ));
    }

    #[test]
    fn learns_from_the_sdp_address_on_any_port() {
        let mut a = leg(
            30000,
            30002,
            LEG_LATCH | LEG_STRICT_SOURCE,
            Some("10.0.0.1:4000"),
        );
        let b = leg(30002, 30000, 0, Some("10.0.0.2:5000"));
        let (_, latched) = decide(&mut a, Some(&b), at("10.0.0.1:4444"), OPEN);
        assert!(latched);
        assert_eq!(peer_of(&a), at("10.0.0.1:4444"));
    }

    #[test]
    fn no_learning_outside_the_window() {
        let mut a = leg(
            30000,
            30002,
            LEG_LATCH | LEG_STRICT_SOURCE,
            Some("10.0.0.1:4000"),
        );
        let b = leg(30002, 30000, 0, Some("10.0.0.2:5000"));
        let (act, latched) = decide(&mut a, Some(&b), at("10.0.0.1:4444"), CLOSED);
        assert!(!latched, "window closed");
        assert!(
            matches!(act, Action::Forward { .. }),
            "the trusted address still gets through"
        );
        assert_eq!(
            decide(&mut a, Some(&b), at("10.0.0.9:4000"), CLOSED).0,
            Action::DropStrict
        );
    }

    #[test]
    fn non_strict_forwards_anyone_but_learns_only_the_trusted() {
        let mut a = leg(30000, 30002, LEG_LATCH, Some("192.0.2.1:1"));
        let b = leg(30002, 30000, 0, Some("10.0.0.2:5000"));
        let (act, l) = decide(&mut a, Some(&b), at("192.0.2.2:2"), OPEN);
        assert!(matches!(act, Action::Forward { .. }));
        assert!(!l, "an unrelated address is never learnt");
        let (_, l) = decide(&mut a, Some(&b), at("192.0.2.1:7"), OPEN);
        assert!(l);
        let (act, l) = decide(&mut a, Some(&b), at("192.0.2.2:2"), OPEN);
        assert!(matches!(act, Action::Forward { .. }));
        assert!(!l);
        assert_eq!(peer_of(&a), at("192.0.2.1:7"));
    }

    #[test]
    fn a_leg_with_nothing_to_trust_learns_nothing() {
        // The answerer's leg while the call rings: no SDP from it yet.
        let mut a = leg(30000, 30002, LEG_LATCH | LEG_STRICT_SOURCE, None);
        let b = leg(30002, 30000, 0, Some("10.0.0.2:5000"));
        let (act, l) = decide(&mut a, Some(&b), at("192.0.2.9:1"), OPEN);
        assert_eq!((act, l), (Action::DropStrict, false));
        a.flags &= !LEG_STRICT_SOURCE;
        let (_, l) = decide(&mut a, Some(&b), at("192.0.2.9:1"), OPEN);
        assert!(!l);
    }

    #[test]
    fn strict_without_latch_uses_signalled_peer() {
        let mut a = leg(30000, 30002, LEG_STRICT_SOURCE, Some("10.0.0.1:4000"));
        let b = leg(30002, 30000, 0, Some("10.0.0.2:5000"));
        assert_eq!(
            decide(&mut a, Some(&b), at("10.0.0.9:4000"), OPEN).0,
            Action::DropStrict
        );
        assert!(matches!(
            decide(&mut a, Some(&b), at("10.0.0.1:4000"), OPEN).0,
            Action::Forward { .. }
        ));
    }

    #[test]
    fn no_destination_until_partner_known() {
        let mut a = leg(30000, 30002, LEG_LATCH, Some("192.0.2.1:9"));
        let b = leg(30002, 30000, LEG_LATCH, None);
        let (act, l) = decide(&mut a, Some(&b), at("192.0.2.1:1"), OPEN);
        assert_eq!(act, Action::NoDestination);
        assert!(
            l,
            "latching happens even when the packet cannot go anywhere yet"
        );
        assert_eq!(
            decide(&mut a, None, at("192.0.2.1:1"), OPEN).0,
            Action::NoDestination
        );
    }

    fn recv_within(s: &UdpSocket, ms: u64) -> Option<(Vec<u8>, SocketAddr)> {
        s.set_read_timeout(Some(Duration::from_millis(ms))).unwrap();
        let mut b = [0u8; 2048];
        s.recv_from(&mut b).ok().map(|(n, a)| (b[..n].to_vec(), a))
    }

    /// A port free on `local` now: bound and released (ephemeral, so another test's choice
    /// is unlikely to collide).
    fn free_port(local: IpAddr) -> u16 {
        UdpSocket::bind(SocketAddr::new(local, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Two loopback "phones" talk through the relay; family is v4 or v6.
    fn relay_end_to_end(local: IpAddr) {
        let dp = Arc::new(DataPlane::userspace("test"));
        let relay = UserRelay::start(dp.clone(), 2).unwrap();
        // Ephemeral ports: pick free ones by binding and releasing.
        let free = || free_port(local);
        let (pa, pb) = (free(), free());
        relay.open_port(local, pa).unwrap();
        relay.open_port(local, pb).unwrap();
        let alice = UdpSocket::bind(SocketAddr::new(local, 0)).unwrap();
        let bob = UdpSocket::bind(SocketAddr::new(local, 0)).unwrap();
        let mallory = UdpSocket::bind(SocketAddr::new(local, 0)).unwrap();
        // Alice's SDP names her address with another port (NAT).
        let alice_sdp = SocketAddr::new(local, 9);
        let mut la = leg(
            pa,
            pb,
            LEG_LATCH | LEG_STRICT_SOURCE,
            Some(&alice_sdp.to_string()),
        );
        la.learn_until_ns = u64::MAX;
        la.local_addr = local.into();
        let mut lb = leg(
            pb,
            pa,
            LEG_LATCH | LEG_STRICT_SOURCE,
            Some(&bob.local_addr().unwrap().to_string()),
        );
        lb.local_addr = local.into();
        dp.leg_put(&la).unwrap();
        dp.leg_put(&lb).unwrap();

        // Alice's first packet latches her port; Bob's peer is known from "SDP".
        alice.send_to(b"rtp-1", SocketAddr::new(local, pa)).unwrap();
        let (p, from) = recv_within(&bob, 2000).expect("bob gets alice's packet");
        assert_eq!(p, b"rtp-1");
        assert_eq!(
            from,
            SocketAddr::new(local, pb),
            "sent from the partner leg's port"
        );
        // Bob answers; it reaches Alice's latched address from Alice's relay port.
        bob.send_to(b"rtp-2", SocketAddr::new(local, pb)).unwrap();
        let (p, from) = recv_within(&alice, 2000).expect("alice gets bob's packet");
        assert_eq!(p, b"rtp-2");
        assert_eq!(from, SocketAddr::new(local, pa));
        // Mallory injects on Alice's port: strict source drops it.
        mallory
            .send_to(b"bleed", SocketAddr::new(local, pa))
            .unwrap();
        assert!(
            recv_within(&bob, 200).is_none(),
            "strict source drops foreign packets"
        );

        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let c = dp.leg_counters(pa).unwrap();
            if c.strict_drops == 1 || Instant::now() > deadline {
                assert_eq!(c.packets, 1);
                assert_eq!(c.bytes, 5);
                assert_eq!(c.strict_drops, 1);
                assert!(c.last_seen_ns > 0);
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        assert!(dp.leg_get(pa).unwrap().unwrap().has(LEG_LATCHED));
        let s = dp.stats().unwrap();
        assert_eq!(s["relay_tx"], 2);
        assert_eq!(s["drop_strict_source"], 1);
        relay.close_port(pa);
        assert!(!relay.is_open(pa));
    }

    /// Counters are bumped by the worker after the send; wait for them instead of sleeping.
    fn wait_stat(dp: &DataPlane, name: &str, want: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let got = dp.stats().unwrap()[name];
            if got >= want || Instant::now() > deadline {
                return got;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// In userspace mode the relay applies the kernel's source checks to media: a banned or
    /// denied source gets nothing relayed, counted under the kernel's stats.
    #[test]
    fn userspace_relay_enforces_the_firewall() {
        use crate::{Cidr, Proto, Service, ServiceId};
        use relay_common::fw::BanReason;

        // Distinct loopback sources, so the firewall can tell the phones apart.
        let relay_ip: IpAddr = "127.0.0.1".parse().unwrap();
        let (alice_ip, bob_ip): (IpAddr, IpAddr) =
            ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        let dp = Arc::new(DataPlane::userspace("test"));
        let relay = UserRelay::start(dp.clone(), 1).unwrap();
        let free = || free_port(relay_ip);
        let (pa, pb) = (free(), free());
        relay.open_port(relay_ip, pa).unwrap();
        relay.open_port(relay_ip, pb).unwrap();
        let alice = UdpSocket::bind(SocketAddr::new(alice_ip, 0)).unwrap();
        let bob = UdpSocket::bind(SocketAddr::new(bob_ip, 0)).unwrap();
        let mut la = leg(pa, pb, 0, Some(&alice.local_addr().unwrap().to_string()));
        la.local_addr = relay_ip.into();
        let mut lb = leg(pb, pa, 0, Some(&bob.local_addr().unwrap().to_string()));
        lb.local_addr = relay_ip.into();
        dp.leg_put(&la).unwrap();
        dp.leg_put(&lb).unwrap();
        let to_a = SocketAddr::new(relay_ip, pa);
        let to_b = SocketAddr::new(relay_ip, pb);

        dp.ban_add(crate::Cidr::host(alice_ip), None, BanReason::Manual)
            .unwrap();
        for _ in 0..3 {
            alice.send_to(b"banned", to_a).unwrap();
        }
        assert_eq!(wait_stat(&dp, "drop_banned", 3), 3);
        assert!(recv_within(&bob, 200).is_none(), "banned media relayed");
        // Bob is not banned: his media still reaches Alice (bans are on the source only).
        bob.send_to(b"from-bob", to_b).unwrap();
        assert_eq!(
            recv_within(&alice, 2000).expect("bob relayed").0,
            b"from-bob"
        );

        assert!(dp.ban_remove(crate::Cidr::host(alice_ip)).unwrap());
        alice.send_to(b"unbanned", to_a).unwrap();
        assert_eq!(
            recv_within(&bob, 2000).expect("relayed after unban").0,
            b"unbanned"
        );

        dp.deny_add(Cidr::new(alice_ip, 32).unwrap(), 1).unwrap();
        alice.send_to(b"denied", to_a).unwrap();
        assert_eq!(wait_stat(&dp, "drop_denied", 1), 1);
        assert!(recv_within(&bob, 200).is_none(), "denied media relayed");
        assert!(dp.deny_remove(Cidr::new(alice_ip, 32).unwrap()).unwrap());

        // A relay port that is also a restricted service admits only its allow list.
        dp.service_set(Service {
            port: pa,
            proto: Proto::Udp,
            id: ServiceId::Other,
            restricted: true,
            sip: false,
        })
        .unwrap();
        alice.send_to(b"not-allowed", to_a).unwrap();
        assert_eq!(wait_stat(&dp, "drop_service_acl", 1), 1);
        assert!(
            recv_within(&bob, 200).is_none(),
            "ACL-refused media relayed"
        );
        dp.allow_add(ServiceId::Other, Cidr::new(alice_ip, 32).unwrap())
            .unwrap();
        alice.send_to(b"allowed", to_a).unwrap();
        assert_eq!(
            recv_within(&bob, 2000).expect("allowed source").0,
            b"allowed"
        );

        // Counted after the send returns, so possibly after Bob already has the packet.
        assert_eq!(wait_stat(&dp, "relay_tx", 3), 3);
        let s = dp.stats().unwrap();
        assert_eq!(s["received"], 8);
        assert_eq!(
            (s["drop_banned"], s["drop_denied"], s["drop_service_acl"]),
            (3, 1, 1)
        );
        assert_eq!(
            dp.leg_counters(pa).unwrap().packets,
            2,
            "drops are not leg traffic"
        );
    }

    /// A leg whose partner's peer is the relay's own port: the packet would come back to the
    /// relay for ever. Dropped and counted instead, on the first round.
    #[test]
    fn never_forwards_to_its_own_socket() {
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let dp = Arc::new(DataPlane::userspace("test"));
        let relay = UserRelay::start(dp.clone(), 1).unwrap();
        let free = || free_port(local);
        let (pa, pb) = (free(), free());
        relay.open_port(local, pa).unwrap();
        relay.open_port(local, pb).unwrap();
        let bob = UdpSocket::bind(SocketAddr::new(local, 0)).unwrap();
        // A's peer "is" the relay's port B: whatever B receives goes to A's peer, B again.
        let mut la = leg(pa, pb, 0, Some(&format!("{local}:{pb}")));
        la.local_addr = local.into();
        let mut lb = leg(pb, pa, LEG_LATCH, None);
        lb.local_addr = local.into();
        dp.leg_put(&la).unwrap();
        dp.leg_put(&lb).unwrap();
        bob.send_to(b"rtp", SocketAddr::new(local, pb)).unwrap();
        assert_eq!(wait_stat(&dp, "drop_relay_loop", 1), 1);
        thread::sleep(Duration::from_millis(100));
        let s = dp.stats().unwrap();
        assert_eq!(s["relay_tx"], 0, "nothing sent to the relay itself");
        assert_eq!(s["drop_relay_loop"], 1, "one packet, one drop: no loop");
        // A peer elsewhere on the same port number is not the relay.
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(!own_socket(&relay.inner, SocketAddr::new(other, pb)));
        assert!(own_socket(&relay.inner, SocketAddr::new(local, pa)));
        assert!(own_socket(
            &relay.inner,
            SocketAddr::new("::ffff:127.0.0.1".parse().unwrap(), pa)
        ));
    }

    /// Bound to 0.0.0.0, a relay socket is reached on every address of the host.
    #[test]
    fn a_socket_bound_to_any_address_is_reached_on_the_hosts_addresses() {
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let dp = Arc::new(DataPlane::userspace("test"));
        let relay = UserRelay::start(dp, 1).unwrap();
        let port = UdpSocket::bind(SocketAddr::new(any, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        relay.open_port(any, port).unwrap();
        for host in crate::host::addresses().unwrap() {
            let host = crate::cidr::normalize(host);
            assert!(
                own_socket(&relay.inner, SocketAddr::new(host, port)),
                "{host}"
            );
        }
        let elsewhere: IpAddr = "192.0.2.200".parse().unwrap();
        assert!(!own_socket(&relay.inner, SocketAddr::new(elsewhere, port)));
    }

    #[test]
    fn relays_over_ipv4_loopback() {
        relay_end_to_end("127.0.0.1".parse().unwrap());
    }

    #[test]
    fn relays_over_ipv6_loopback() {
        if UdpSocket::bind("[::1]:0").is_err() {
            eprintln!("skipping: no IPv6 loopback");
            return;
        }
        relay_end_to_end("::1".parse().unwrap());
    }

    /// The shared loss table through the userspace relay: each case on a call of its own,
    /// packet by packet (each awaited at the far end, so the relay sees them in the table's
    /// order), then the leg's expected and lost as RFC 3550 counts them.
    #[test]
    fn the_userspace_relay_counts_rtp_loss() {
        use relay_common::rtp::LOSS_CASES;
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let dp = Arc::new(DataPlane::userspace("test"));
        let relay = UserRelay::start(dp.clone(), 2).unwrap();
        let alice = UdpSocket::bind(SocketAddr::new(local, 0)).unwrap();
        let bob = UdpSocket::bind(SocketAddr::new(local, 0)).unwrap();
        for case in LOSS_CASES {
            let (pa, pb) = (free_port(local), free_port(local));
            relay.open_port(local, pa).unwrap();
            relay.open_port(local, pb).unwrap();
            let peer = |s: &UdpSocket| s.local_addr().unwrap().to_string();
            let mut la = leg(pa, pb, 0, Some(&peer(&alice)));
            let mut lb = leg(pb, pa, 0, Some(&peer(&bob)));
            la.local_addr = local.into();
            lb.local_addr = local.into();
            dp.leg_put(&la).unwrap();
            dp.leg_put(&lb).unwrap();
            for seq in case.seqs {
                let mut p = vec![0x80, 0];
                p.extend_from_slice(&seq.to_be_bytes());
                p.extend_from_slice(&[0; 8 + 160]);
                alice.send_to(&p, SocketAddr::new(local, pa)).unwrap();
                let (got, _) = recv_within(&bob, 2000).expect("relayed");
                assert_eq!(got, p, "{}", case.what);
            }
            // Counted after the send: wait for the last packet's count.
            let deadline = Instant::now() + Duration::from_secs(2);
            let c = loop {
                let c = dp.leg_counters(pa).unwrap();
                if c.packets == case.seqs.len() as u64 || Instant::now() > deadline {
                    break c;
                }
                thread::sleep(Duration::from_millis(5));
            };
            assert_eq!(c.packets, case.seqs.len() as u64, "{}", case.what);
            assert_eq!(
                (c.rtp_expected(), c.rtp_lost()),
                (case.expected, case.lost),
                "{}",
                case.what
            );
            relay.close_port(pa);
            relay.close_port(pb);
        }
    }
}
