//! The calls' media: where each leg must send, learnt from the sipp scenarios' `MEDIA` log
//! lines, RTP sent both ways while a call is held, and what arrived, checked byte for byte.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ::tests::rtp::{self, G711_PAYLOAD, RecvConfig, RecvReport};

/// Packet interval per stream (G.711, 20 ms).
const TICK: Duration = Duration::from_millis(20);
/// A call's media stops this long before its BYE is due, so no packet races the delete.
const BEFORE_BYE: Duration = Duration::from_millis(1500);

/// What the media of a run did.
#[derive(Debug, Default)]
pub(crate) struct MediaResult {
    /// Calls whose two legs were learnt and got media.
    pub(crate) calls: u64,
    /// Packets sent, both directions.
    pub(crate) sent: u64,
    /// Sends that failed.
    pub(crate) send_errors: u64,
    /// Distinct intact packets received at both ends.
    pub(crate) relayed: u64,
    /// Sent but never received.
    pub(crate) lost: u64,
    /// Received but not intact.
    pub(crate) corrupt: u64,
    /// Times the sender fell a tick or more behind.
    pub(crate) late_ticks: u64,
}

/// The `MEDIA <call-id> <ip> <port>` lines of a sipp `<log>` file read so far.
struct LogTail {
    path: PathBuf,
    offset: usize,
}

impl LogTail {
    fn new(path: &Path) -> LogTail {
        LogTail {
            path: path.to_path_buf(),
            offset: 0,
        }
    }

    /// New complete lines since the last call, parsed. Reads from where the last call
    /// stopped: a soak's log grows by a line per call for an hour.
    fn poll(&mut self) -> Vec<(String, SocketAddr)> {
        use std::io::{Read as _, Seek as _, SeekFrom};
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        // A file that shrank (it never should) is read again from its start.
        if f.metadata().is_ok_and(|m| m.len() < self.offset as u64) {
            self.offset = 0;
        }
        let mut text = Vec::new();
        if f.seek(SeekFrom::Start(self.offset as u64)).is_err() || f.read_to_end(&mut text).is_err()
        {
            return Vec::new();
        }
        let Some(end) = text.iter().rposition(|&b| b == b'\n').map(|i| i + 1) else {
            return Vec::new();
        };
        let new = String::from_utf8_lossy(&text[..end]).into_owned();
        self.offset += end;
        new.lines().filter_map(parse_media_line).collect()
    }
}

fn parse_media_line(l: &str) -> Option<(String, SocketAddr)> {
    let mut w = l.split_whitespace();
    if w.next()? != "MEDIA" {
        return None;
    }
    let call = w.next()?.to_string();
    let ip: IpAddr = w.next()?.parse().ok()?;
    let port: u16 = w.next()?.parse().ok()?;
    Some((call, SocketAddr::new(ip, port)))
}

/// How the caller's and the callee's legs of a call are told apart in the sipp logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Legs {
    /// Both legs have the call's Call-ID (a proxy: Kamailio): a call's media starts once
    /// both are known.
    SameCallId,
    /// Each leg has a Call-ID of its own (a B2BUA: sipd): each leg's stream starts once that
    /// leg is known, on its own.
    OnTheirOwn,
}

/// One call's streams: the caller's (to the relay's caller-side port) and the callee's; a
/// leg on its own ([`Legs::OnTheirOwn`]) has one of them.
struct Call {
    to_caller_side: Option<SocketAddr>,
    to_callee_side: Option<SocketAddr>,
    stream: u32,
    seq: u64,
    until: Instant,
}

impl Call {
    fn leg(a: Option<SocketAddr>, b: Option<SocketAddr>, stream: u32, window: Duration) -> Call {
        Call {
            to_caller_side: a,
            to_callee_side: b,
            stream,
            seq: 0,
            until: Instant::now() + window,
        }
    }
}

/// Runs the media until `done` is set and every call's streams ended (or `bound` passed):
/// learns calls from the UAC's and UAS's log files (`logs`), sends on `caller` and `callee` (each
/// call's media for `hold − 1.5 s` from when both legs are known), and receives on clones of
/// them until 3 s after the last packet.
pub(crate) fn run(
    caller: &UdpSocket,
    callee: &UdpSocket,
    logs: (&Path, &Path),
    legs: Legs,
    hold: Duration,
    bound: Duration,
    done: &AtomicBool,
) -> anyhow::Result<MediaResult> {
    let mut rc = RecvConfig::new(bound);
    rc.idle = Some(Duration::from_secs(3));
    let (rx_a, rx_b) = (caller.try_clone()?, callee.try_clone()?);
    let window = hold
        .saturating_sub(BEFORE_BYE)
        .max(Duration::from_millis(500));
    std::thread::scope(|s| {
        let at_caller = s.spawn(|| rtp::receive(&rx_a, &rc));
        let at_callee = s.spawn(|| rtp::receive(&rx_b, &rc));
        let sent = send_loop(caller, callee, logs, legs, window, bound, done);
        let at_caller = at_caller.join().expect("receiver thread")?;
        let at_callee = at_callee.join().expect("receiver thread")?;
        Ok(tally(sent, &at_caller, &at_callee))
    })
}

/// What the sender did: per stream, packets sent; and its counters.
struct Sent {
    per_stream: BTreeMap<u32, u64>,
    calls: u64,
    errors: u64,
    late_ticks: u64,
}

fn send_loop(
    caller: &UdpSocket,
    callee: &UdpSocket,
    (uac_log, uas_log): (&Path, &Path),
    legs: Legs,
    window: Duration,
    bound: Duration,
    done: &AtomicBool,
) -> Sent {
    let start = Instant::now();
    let (mut uac, mut uas) = (LogTail::new(uac_log), LogTail::new(uas_log));
    // Legs seen on one side only so far: (caller's destination, callee's destination).
    let mut half: HashMap<String, (Option<SocketAddr>, Option<SocketAddr>)> = HashMap::new();
    let mut active: Vec<Call> = Vec::new();
    let mut out = Sent {
        per_stream: BTreeMap::new(),
        calls: 0,
        errors: 0,
        late_ticks: 0,
    };
    let mut buf = Vec::with_capacity(256);
    let mut next = Instant::now();
    let mut tick: u64 = 0;
    let mut callee_legs: u32 = 0;
    loop {
        // Learn new legs every 100 ms (the log files are small, read incrementally).
        if tick.is_multiple_of(5) {
            let (new_a, new_b) = (uac.poll(), uas.poll());
            if legs == Legs::OnTheirOwn {
                // Stream numbers stay even for the caller's legs, odd for the callee's.
                for &(_, dest) in &new_a {
                    active.push(Call::leg(Some(dest), None, (out.calls as u32) * 2, window));
                    out.calls += 1;
                }
                for &(_, dest) in &new_b {
                    active.push(Call::leg(None, Some(dest), callee_legs * 2 + 1, window));
                    callee_legs += 1;
                }
            }
            for (id, dest) in new_a.into_iter().filter(|_| legs == Legs::SameCallId) {
                half.entry(id).or_default().0 = Some(dest);
            }
            for (id, dest) in new_b.into_iter().filter(|_| legs == Legs::SameCallId) {
                half.entry(id).or_default().1 = Some(dest);
            }
            let ready: Vec<String> = half
                .iter()
                .filter(|(_, (a, b))| a.is_some() && b.is_some())
                .map(|(k, _)| k.clone())
                .collect();
            for id in ready {
                if let Some((Some(a), Some(b))) = half.remove(&id) {
                    active.push(Call::leg(Some(a), Some(b), (out.calls as u32) * 2, window));
                    out.calls += 1;
                }
            }
        }
        let now = Instant::now();
        active.retain(|c| c.until > now);
        if (done.load(Ordering::Relaxed) && active.is_empty()) || start.elapsed() > bound {
            break;
        }
        for c in &mut active {
            for (sock, dest, stream) in [
                (caller, c.to_caller_side, c.stream),
                (callee, c.to_callee_side, c.stream | 1),
            ] {
                let Some(dest) = dest else { continue };
                rtp::build_packet(stream, c.seq, G711_PAYLOAD, &mut buf);
                match sock.send_to(&buf, dest) {
                    Ok(_) => *out.per_stream.entry(stream).or_default() += 1,
                    Err(_) => out.errors += 1,
                }
            }
            c.seq += 1;
        }
        tick += 1;
        next += TICK;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            out.late_ticks += 1;
            // Behind: do not burst to catch up, keep the 20 ms spacing from here.
            next = now;
        }
    }
    out
}

fn tally(sent: Sent, at_caller: &RecvReport, at_callee: &RecvReport) -> MediaResult {
    let mut r = MediaResult {
        calls: sent.calls,
        send_errors: sent.errors,
        late_ticks: sent.late_ticks,
        corrupt: at_caller.corrupt + at_callee.corrupt,
        relayed: at_caller.unique() + at_callee.unique(),
        ..Default::default()
    };
    for (&stream, &n) in &sent.per_stream {
        r.sent += n;
        // Even streams are the caller's, received by the callee; odd ones the other way.
        let rx = if stream.is_multiple_of(2) {
            at_callee
        } else {
            at_caller
        };
        r.lost += rx.streams.get(&stream).map_or(n, |s| s.lost(n));
    }
    r
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn media_lines() {
        assert_eq!(
            parse_media_line("MEDIA 1-2@10.0.0.1 10.9.0.1 30002"),
            Some(("1-2@10.0.0.1".into(), "10.9.0.1:30002".parse().unwrap()))
        );
        assert_eq!(parse_media_line("REINVITE x 10.9.0.1 30002"), None);
        assert_eq!(parse_media_line("MEDIA x notanip 1"), None);
    }

    #[test]
    fn log_tail_reads_complete_lines_once() {
        let p = std::env::temp_dir().join(format!("sbc-kambench-tail-{}", std::process::id()));
        std::fs::write(&p, "MEDIA a 10.0.0.1 1000\nMEDIA b 10.0.0.1 10").unwrap();
        let mut t = LogTail::new(&p);
        assert_eq!(t.poll().len(), 1);
        assert!(t.poll().is_empty());
        std::fs::write(&p, "MEDIA a 10.0.0.1 1000\nMEDIA b 10.0.0.1 1002\n").unwrap();
        assert_eq!(
            t.poll(),
            vec![("b".into(), "10.0.0.1:1002".parse().unwrap())]
        );
        std::fs::remove_file(&p).unwrap();
    }
}
