//! RTP traffic for scenarios and benchmarks: paced senders and checking receivers.
//!
//! Packets look like G.711 by default: a 12-byte RTP header (v2, PT 0, SSRC = stream id,
//! timestamp advancing 160 per packet) and 160 payload bytes. The payload carries the stream id,
//! a 64-bit sequence number and a pattern derived from both, so the receiver re-derives every
//! byte and counts corruption, loss, duplicates and reordering per stream. Everything is bounded:
//! a sender stops after its packet count or its duration, a receiver at its deadline.
//!
//! Sockets are plain `std::net::UdpSocket`s; bind them inside a namespace with
//! [`crate::netns::Netns::enter`] (or [`bind_in`]) and use them from any thread afterwards.
//! One socket can carry many streams (one per call), so one socket per side is enough even
//! with symmetric latching: the relay learns the same source address for each leg.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// RTP fixed header.
pub const RTP_HEADER: usize = 12;
/// G.711 at 20 ms: 160 samples of 8 bits.
pub const G711_PAYLOAD: usize = 160;
/// One stream's packet rate at 20 ms ptime.
pub const G711_PPS: u32 = 50;
/// Our marker in the payload: stream id (4) + sequence (8).
const TAG: usize = 12;
/// Highest sequence number the receiver tracks per stream (a bitmap of 2 MiB per stream).
pub const MAX_TRACKED_SEQ: u64 = 1 << 24;

/// The pattern byte at payload offset `i` of packet `seq` of `stream`; cheap, and different
/// for neighbouring packets and streams, so a swapped or stale buffer is caught.
fn pattern(stream: u32, seq: u64, i: usize) -> u8 {
    let x = (seq as u32)
        .wrapping_mul(0x9e37_79b1)
        .wrapping_add(stream.wrapping_mul(0x85eb_ca6b))
        .wrapping_add(i as u32);
    (x ^ (x >> 13) ^ (x >> 24)) as u8
}

/// Writes packet `seq` of `stream` with `payload_len` payload bytes into `buf` (cleared first).
/// `payload_len` below 12 is raised to 12 (the marker must fit).
pub fn build_packet(stream: u32, seq: u64, payload_len: usize, buf: &mut Vec<u8>) {
    let payload_len = payload_len.max(TAG);
    buf.clear();
    buf.reserve(RTP_HEADER + payload_len);
    buf.push(0x80); // V=2, no padding/extension/CSRC
    buf.push(0); // M=0, PT=0 (PCMU)
    buf.extend_from_slice(&(seq as u16).to_be_bytes());
    buf.extend_from_slice(&((seq as u32).wrapping_mul(160)).to_be_bytes());
    buf.extend_from_slice(&stream.to_be_bytes());
    buf.extend_from_slice(&stream.to_be_bytes());
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.extend((TAG..payload_len).map(|i| pattern(stream, seq, i)));
}

/// Why a received datagram is not one of ours, intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Corrupt {
    /// Shorter than the header and our marker; the length received.
    TooShort(usize),
    /// Not RTP v2 with payload type 0 as [`build_packet`] writes it.
    BadHeader,
    /// Header and marker disagree (stream or sequence).
    Mismatch,
    /// Payload byte differs at this offset.
    Payload(usize),
}

/// Checks a datagram byte for byte; returns (stream, seq, payload length).
pub fn verify_packet(buf: &[u8]) -> Result<(u32, u64, usize), Corrupt> {
    if buf.len() < RTP_HEADER + TAG {
        return Err(Corrupt::TooShort(buf.len()));
    }
    if buf[0] != 0x80 || buf[1] != 0 {
        return Err(Corrupt::BadHeader);
    }
    let ssrc = u32::from_be_bytes(buf[8..12].try_into().expect("4 bytes"));
    let p = &buf[RTP_HEADER..];
    let stream = u32::from_be_bytes(p[0..4].try_into().expect("4 bytes"));
    let seq = u64::from_be_bytes(p[4..12].try_into().expect("8 bytes"));
    let hseq = u16::from_be_bytes([buf[2], buf[3]]);
    let ts = u32::from_be_bytes(buf[4..8].try_into().expect("4 bytes"));
    if ssrc != stream || hseq != seq as u16 || ts != (seq as u32).wrapping_mul(160) {
        return Err(Corrupt::Mismatch);
    }
    for (i, &b) in p.iter().enumerate().skip(TAG) {
        if b != pattern(stream, seq, i) {
            return Err(Corrupt::Payload(RTP_HEADER + i));
        }
    }
    Ok((stream, seq, p.len()))
}

/// One stream: its id and where its packets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// The stream id: the SSRC and the payload's marker.
    pub stream: u32,
    /// Where the stream's packets are sent (the relay's port for the leg).
    pub dest: SocketAddr,
}

/// A bounded, paced sender over one socket, round-robin over its flows.
#[derive(Debug, Clone)]
pub struct SendConfig {
    /// The streams, sent round-robin.
    pub flows: Vec<Flow>,
    /// Packets per second over all flows.
    pub rate_pps: u32,
    /// Stop after this many packets per flow...
    pub packets_per_flow: u64,
    /// ...or after this long, whichever comes first.
    pub max_duration: Duration,
    /// Payload bytes per packet (at least 12, the marker).
    pub payload_len: usize,
}

impl SendConfig {
    /// G.711 calls: 50 pps per flow, 160-byte payload.
    pub fn g711(flows: Vec<Flow>, packets_per_flow: u64) -> SendConfig {
        let rate_pps = G711_PPS * flows.len().max(1) as u32;
        SendConfig {
            flows,
            rate_pps,
            packets_per_flow,
            max_duration: Duration::from_secs(60),
            payload_len: G711_PAYLOAD,
        }
    }

    /// Same packets at `rate_pps` in total, stopping after `duration` (benchmarks).
    pub fn at_rate(flows: Vec<Flow>, rate_pps: u32, duration: Duration) -> SendConfig {
        let per_flow = (u64::from(rate_pps) * duration.as_millis() as u64 / 1000)
            .div_ceil(flows.len().max(1) as u64);
        SendConfig {
            flows,
            rate_pps,
            packets_per_flow: per_flow.max(1),
            max_duration: duration + Duration::from_millis(500),
            payload_len: G711_PAYLOAD,
        }
    }
}

/// What a sender did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Packets handed to the kernel, per stream.
    pub sent: BTreeMap<u32, u64>,
    /// Sends that failed (e.g. ENOBUFS, ICMP unreachable reported on the socket).
    pub errors: u64,
    /// How long the sender ran.
    pub elapsed: Duration,
}

impl SendReport {
    /// Packets sent, all streams together.
    pub fn total(&self) -> u64 {
        self.sent.values().sum()
    }

    /// Achieved packets per second.
    pub fn pps(&self) -> f64 {
        self.total() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Sends until every flow has sent its packets or the time is up. Pacing: packet n is due at
/// `start + n / rate`; the sender sleeps while more than a millisecond ahead and otherwise
/// catches up in a burst, so the average rate holds even with a coarse scheduler.
pub fn send(socket: &UdpSocket, cfg: &SendConfig) -> SendReport {
    let mut report = SendReport::default();
    if cfg.flows.is_empty() || cfg.rate_pps == 0 {
        return report;
    }
    let start = Instant::now();
    let deadline = start + cfg.max_duration;
    let total = cfg.packets_per_flow.saturating_mul(cfg.flows.len() as u64);
    let interval_ns = 1e9 / f64::from(cfg.rate_pps);
    let mut buf = Vec::with_capacity(RTP_HEADER + cfg.payload_len.max(TAG));
    let mut n: u64 = 0;
    while n < total {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let due = start + Duration::from_nanos((n as f64 * interval_ns) as u64);
        if due > now + Duration::from_millis(1) {
            std::thread::sleep(due - now);
            continue;
        }
        if due > now {
            std::hint::spin_loop();
            continue;
        }
        let flow = &cfg.flows[(n % cfg.flows.len() as u64) as usize];
        let seq = n / cfg.flows.len() as u64;
        build_packet(flow.stream, seq, cfg.payload_len, &mut buf);
        match socket.send_to(&buf, flow.dest) {
            Ok(_) => *report.sent.entry(flow.stream).or_default() += 1,
            Err(_) => report.errors += 1,
        }
        n += 1;
    }
    report.elapsed = start.elapsed();
    report
}

/// When a receiver stops.
#[derive(Debug, Clone, Copy)]
pub struct RecvConfig {
    /// Hard limit on the whole receive.
    pub deadline: Duration,
    /// Once something arrived, stop after this long without packets.
    pub idle: Option<Duration>,
    /// Stop once this many distinct packets (all streams) arrived.
    pub expect: Option<u64>,
}

impl RecvConfig {
    /// Stops only at `deadline` (no idle or count condition).
    pub fn new(deadline: Duration) -> RecvConfig {
        RecvConfig {
            deadline,
            idle: None,
            expect: None,
        }
    }
}

/// Per-stream receive accounting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Intact packets, duplicates included.
    pub received: u64,
    /// Distinct sequence numbers.
    pub unique: u64,
    /// Intact packets whose sequence number had already arrived.
    pub duplicates: u64,
    /// Arrived after a higher sequence number of the same stream.
    pub reordered: u64,
    /// Datagram bytes (header and payload) of the intact packets, duplicates included.
    pub bytes: u64,
    /// The highest sequence number seen, `None` before the first packet.
    pub highest_seq: Option<u64>,
    /// Sources seen (a relay must send each stream from one address).
    pub sources: Vec<SocketAddr>,
    seen: Vec<u64>,
}

impl StreamStats {
    /// Lost packets if `sent` were sent.
    pub fn lost(&self, sent: u64) -> u64 {
        sent.saturating_sub(self.unique)
    }

    fn record(&mut self, seq: u64, len: usize, from: SocketAddr) {
        self.received += 1;
        self.bytes += len as u64;
        if !self.sources.contains(&from) && self.sources.len() < 8 {
            self.sources.push(from);
        }
        let (w, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if w >= self.seen.len() {
            self.seen.resize(w + 1, 0);
        }
        if self.seen[w] & bit != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[w] |= bit;
        self.unique += 1;
        match self.highest_seq {
            Some(h) if seq < h => self.reordered += 1,
            _ => self.highest_seq = Some(seq),
        }
    }
}

/// What a receiver saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecvReport {
    /// Per stream id, the streams seen.
    pub streams: BTreeMap<u32, StreamStats>,
    /// Datagrams that failed [`verify_packet`] (or had a sequence beyond [`MAX_TRACKED_SEQ`]).
    pub corrupt: u64,
    /// What was wrong with the first corrupt datagram, for the failure message.
    pub first_corruption: Option<Corrupt>,
    /// From the first to the last packet received.
    pub span: Duration,
    /// How long the receiver ran.
    pub elapsed: Duration,
}

impl RecvReport {
    /// Distinct packets received, all streams together.
    pub fn unique(&self) -> u64 {
        self.streams.values().map(|s| s.unique).sum()
    }

    /// Duplicate packets received, all streams together.
    pub fn duplicates(&self) -> u64 {
        self.streams.values().map(|s| s.duplicates).sum()
    }

    /// Packets that arrived after a higher sequence number of their stream, all streams together.
    pub fn reordered(&self) -> u64 {
        self.streams.values().map(|s| s.reordered).sum()
    }

    /// Lost packets against a sender's report (streams never seen count in full).
    pub fn lost(&self, sent: &SendReport) -> u64 {
        sent.sent
            .iter()
            .map(|(id, &n)| self.streams.get(id).map_or(n, |s| s.lost(n)))
            .sum()
    }

    /// Packets the receiver saw per second, from first to last.
    pub fn pps(&self) -> f64 {
        let n = self.streams.values().map(|s| s.received).sum::<u64>();
        n as f64 / self.span.as_secs_f64().max(1e-9)
    }
}

/// Receives until the deadline (or the idle / expect condition) and checks every packet.
pub fn receive(socket: &UdpSocket, cfg: &RecvConfig) -> io::Result<RecvReport> {
    let mut report = RecvReport::default();
    let start = Instant::now();
    let deadline = start + cfg.deadline;
    let mut buf = vec![0u8; 2048];
    let mut first: Option<Instant> = None;
    let mut last = start;
    loop {
        let now = Instant::now();
        let mut until = deadline;
        if let (Some(idle), Some(_)) = (cfg.idle, first) {
            until = until.min(last + idle);
        }
        if now >= until || cfg.expect.is_some_and(|e| report.unique() >= e) {
            break;
        }
        // Short slices so the stop conditions are checked even when nothing arrives.
        let wait = (until - now).min(Duration::from_millis(50));
        socket.set_read_timeout(Some(wait.max(Duration::from_micros(100))))?;
        let (len, from) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::ConnectionRefused
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        let t = Instant::now();
        first.get_or_insert(t);
        last = t;
        match verify_packet(&buf[..len]) {
            Ok((_, seq, _)) if seq >= MAX_TRACKED_SEQ => report.corrupt += 1,
            Ok((stream, seq, _)) => report
                .streams
                .entry(stream)
                .or_default()
                .record(seq, len, from),
            Err(c) => {
                report.corrupt += 1;
                report.first_corruption.get_or_insert(c);
            }
        }
    }
    report.span = first.map_or(Duration::ZERO, |f| last - f);
    report.elapsed = start.elapsed();
    Ok(report)
}

/// Sends on a clone of `socket` (in a thread) while receiving on it: one endpoint of a
/// symmetric RTP call. Returns what was sent and what was received.
pub fn send_and_receive(
    socket: &UdpSocket,
    send_cfg: &SendConfig,
    recv_cfg: &RecvConfig,
) -> io::Result<(SendReport, RecvReport)> {
    let tx = socket.try_clone()?;
    let send_cfg = send_cfg.clone();
    let sender = std::thread::spawn(move || send(&tx, &send_cfg));
    let received = receive(socket, recv_cfg);
    let sent = sender.join().expect("rtp sender thread panicked");
    Ok((sent, received?))
}

/// Binds a UDP socket inside a namespace; it stays there wherever it is used.
pub fn bind_in(ns: &crate::netns::Netns, addr: SocketAddr) -> io::Result<UdpSocket> {
    ns.enter(|| bind(addr))
}

/// Binds a UDP socket with large kernel buffers, so bursts at benchmark rates are not lost in
/// the test's own socket (which would be blamed on the relay).
pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(addr)?;
    set_buffers(&s, 8 << 20);
    Ok(s)
}

/// SO_RCVBUF/SO_SNDBUF, forced past rmem_max/wmem_max where CAP_NET_ADMIN allows; best effort.
pub fn set_buffers(s: &UdpSocket, bytes: i32) {
    let fd = s.as_raw_fd();
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        let set = |opt| {
            // SAFETY: valid socket fd and a pointer to an int of the stated size.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&bytes as *const i32).cast(),
                    std::mem::size_of::<i32>() as libc::socklen_t,
                )
            }
        };
        if set(force) != 0 {
            set(plain);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(v6: bool) -> (UdpSocket, UdpSocket) {
        let any: SocketAddr = if v6 { "[::1]:0" } else { "127.0.0.1:0" }.parse().unwrap();
        (bind(any).unwrap(), bind(any).unwrap())
    }

    #[test]
    fn packets_verify_and_corruption_is_caught() {
        let mut buf = Vec::new();
        build_packet(7, 123_456, G711_PAYLOAD, &mut buf);
        assert_eq!(buf.len(), RTP_HEADER + G711_PAYLOAD);
        assert_eq!(verify_packet(&buf), Ok((7, 123_456, G711_PAYLOAD)));
        let mut bad = buf.clone();
        bad[100] ^= 1;
        assert_eq!(verify_packet(&bad), Err(Corrupt::Payload(100)));
        let mut bad = buf.clone();
        bad[3] ^= 1;
        assert_eq!(verify_packet(&bad), Err(Corrupt::Mismatch));
        assert_eq!(verify_packet(&buf[..20]), Err(Corrupt::TooShort(20)));
        let mut bad = buf.clone();
        bad[0] = 0x90;
        assert_eq!(verify_packet(&bad), Err(Corrupt::BadHeader));
        // Neighbouring packets differ in the payload pattern.
        let mut other = Vec::new();
        build_packet(7, 123_457, G711_PAYLOAD, &mut other);
        assert_ne!(buf[RTP_HEADER + TAG..], other[RTP_HEADER + TAG..]);
    }

    #[test]
    fn g711_rate_both_families() {
        for v6 in [false, true] {
            let (a, b) = pair(v6);
            let dest = b.local_addr().unwrap();
            let flows = vec![Flow { stream: 1, dest }, Flow { stream: 2, dest }];
            // 10 packets per flow at 2 x 50 pps: about 0.2 s.
            let cfg = SendConfig::g711(flows, 10);
            let t = std::thread::spawn(move || send(&a, &cfg));
            let mut rc = RecvConfig::new(Duration::from_secs(3));
            rc.expect = Some(20);
            let got = receive(&b, &rc).unwrap();
            let sent = t.join().unwrap();
            assert_eq!(sent.total(), 20);
            assert!(
                sent.elapsed >= Duration::from_millis(170) && sent.elapsed < Duration::from_secs(1),
                "{:?}",
                sent.elapsed
            );
            assert_eq!(got.lost(&sent), 0, "{got:?}");
            assert_eq!((got.corrupt, got.duplicates(), got.reordered()), (0, 0, 0));
            assert_eq!(got.streams[&2].bytes, 10 * 172);
            assert_eq!(got.streams[&1].sources, vec![sent_from(&got, 1)]);
        }
    }

    fn sent_from(r: &RecvReport, s: u32) -> SocketAddr {
        r.streams[&s].sources[0]
    }

    #[test]
    fn loss_duplicates_reordering_and_garbage() {
        let (a, b) = pair(false);
        let dest = b.local_addr().unwrap();
        let mut buf = Vec::new();
        // Sequence 0, 1, 3, 2, 3 (dup), 5; 4 lost; plus one garbage datagram.
        for seq in [0, 1, 3, 2, 3, 5] {
            build_packet(9, seq, G711_PAYLOAD, &mut buf);
            a.send_to(&buf, dest).unwrap();
        }
        a.send_to(b"not rtp", dest).unwrap();
        let mut rc = RecvConfig::new(Duration::from_secs(2));
        rc.idle = Some(Duration::from_millis(200));
        let got = receive(&b, &rc).unwrap();
        let s = &got.streams[&9];
        assert_eq!(
            (s.received, s.unique, s.duplicates, s.reordered),
            (6, 5, 1, 1)
        );
        assert_eq!(s.highest_seq, Some(5));
        assert_eq!(s.lost(6), 1);
        assert_eq!(got.corrupt, 1);
        assert_eq!(got.first_corruption, Some(Corrupt::TooShort(7)));
        assert!(
            got.elapsed < Duration::from_secs(1),
            "idle stop: {:?}",
            got.elapsed
        );
    }

    #[test]
    fn bounded_by_time_and_deadline() {
        let (a, b) = pair(true);
        let dest = b.local_addr().unwrap();
        let mut cfg = SendConfig::at_rate(
            vec![Flow { stream: 3, dest }],
            20_000,
            Duration::from_millis(300),
        );
        cfg.packets_per_flow = u64::MAX;
        cfg.max_duration = Duration::from_millis(300);
        let t0 = Instant::now();
        let (sent, got) =
            send_and_receive(&a, &cfg, &RecvConfig::new(Duration::from_millis(100))).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(2));
        assert!(
            sent.elapsed < Duration::from_millis(400),
            "{:?}",
            sent.elapsed
        );
        assert!(sent.pps() > 10_000.0, "pacing far too slow: {}", sent.pps());
        // Nothing comes back to the sender's own socket; the receiver stops at its deadline.
        assert_eq!(got.unique(), 0);
        assert!(got.elapsed < Duration::from_millis(300));
        let mut rc = RecvConfig::new(Duration::from_secs(2));
        rc.idle = Some(Duration::from_millis(100));
        let at_b = receive(&b, &rc).unwrap();
        assert_eq!(at_b.lost(&sent), 0);
    }

    #[test]
    fn across_namespaces_both_families() {
        crate::require_privileged!();
        let topo = crate::netns::Topology::three(Default::default()).unwrap();
        for v6 in [false, true] {
            let caller = bind_in(&topo.caller, SocketAddr::new(topo.caller_if.ip(v6), 0)).unwrap();
            let callee = bind_in(&topo.callee, SocketAddr::new(topo.callee_if.ip(v6), 0)).unwrap();
            let to_callee = Flow {
                stream: 1,
                dest: callee.local_addr().unwrap(),
            };
            let to_caller = Flow {
                stream: 2,
                dest: caller.local_addr().unwrap(),
            };
            let mut rc = RecvConfig::new(Duration::from_secs(3));
            rc.expect = Some(25);
            let t = std::thread::spawn(move || {
                send_and_receive(&callee, &SendConfig::g711(vec![to_caller], 25), &rc).unwrap()
            });
            let (sent_a, got_a) =
                send_and_receive(&caller, &SendConfig::g711(vec![to_callee], 25), &rc).unwrap();
            let (sent_b, got_b) = t.join().unwrap();
            assert_eq!(got_b.lost(&sent_a), 0, "{got_b:?}");
            assert_eq!(got_a.lost(&sent_b), 0, "{got_a:?}");
            assert_eq!(got_a.corrupt + got_b.corrupt, 0);
        }
    }
}
