//! HEP capture: `sipd run` with `[capture] hep` pointed at a UDP socket of the test's in the
//! relay namespace (a collector), a sipp call through it, and every SIP message of both legs,
//! in and out, checked against what sipp itself traced: once each, as HEPv3 with the right
//! addresses, ports, protocol, ids, key and Call-ID, and the payload byte for byte. Then the
//! collector dead: the call still completes and the drops are counted.

mod sbc;

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sbc::*;
use tests::hep::{Hep, decode};
use tests::{require_privileged, require_sipp, rtp};

const CAPTURE_ID: u32 = 2001;
const KEY: &str = "hep-s3cret";

/// One message from a sipp `-trace_msg` file, with its exact bytes.
#[derive(Debug)]
struct Traced {
    sent: bool,
    bytes: Vec<u8>,
}

/// Reads the trace's blocks: a dashed stamp line, `UDP message sent (N bytes):` or
/// `UDP message received [N] bytes :`, a blank line, then exactly N bytes of message.
fn read_trace(raw: &[u8]) -> Vec<Traced> {
    let sep = b"----------------------------------------------- ";
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = find(&raw[at..], sep) {
        let block = at + i;
        at = block + sep.len();
        let mut lines = raw[at..].splitn(3, |b| *b == b'\n');
        let (Some(stamp), Some(kind)) = (lines.next(), lines.next()) else {
            break;
        };
        let kind = String::from_utf8_lossy(kind);
        let sent = kind.contains("message sent");
        if !sent && !kind.contains("message received") {
            continue;
        }
        let n: usize = kind
            .split(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no byte count in {kind:?}"));
        // stamp line, kind line, then the blank line.
        let start = at + stamp.len() + 1 + kind.len() + 1 + 1;
        out.push(Traced {
            sent,
            bytes: raw[start..start + n].to_vec(),
        });
        at = start + n;
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn call_id(msg: &[u8]) -> String {
    String::from_utf8_lossy(msg)
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim().eq_ignore_ascii_case("call-id") || k.trim() == "i")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default()
}

fn first_line(msg: &[u8]) -> String {
    String::from_utf8_lossy(msg)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// (source, destination, payload) as the collector should see them.
type Seen = (SocketAddr, SocketAddr, Vec<u8>);

/// What sipd received and sent on one leg, from the peer's trace: what the peer sent sipd
/// received (peer → sipd), what it received sipd sent (sipd → peer).
fn expected(trace: &[Traced], peer: SocketAddr, sipd: SocketAddr) -> Vec<Seen> {
    trace
        .iter()
        .map(|m| {
            let (s, d) = if m.sent { (peer, sipd) } else { (sipd, peer) };
            (s, d, m.bytes.clone())
        })
        .collect()
}

fn show(v: &[Seen]) -> String {
    v.iter()
        .map(|(s, d, p)| format!("  {s} -> {d}: {}\n", first_line(p)))
        .collect()
}

/// A collector: a UDP socket in the relay namespace on loopback.
fn collector(net: &Net) -> UdpSocket {
    let s = rtp::bind_in(&net.topo.relay, "127.0.0.1:0".parse().unwrap()).expect("collector");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

fn capture_settings(collector: SocketAddr) -> Settings {
    Settings {
        management: "metrics_public = true\n".into(),
        // The harness's last table is [firewall]; a table after it is the test's own.
        firewall: format!(
            "\n[capture]\nhep = \"{collector}\"\ncapture_id = {CAPTURE_ID}\npassword = \"{KEY}\"\n"
        ),
        ..Settings::default()
    }
}

#[test]
fn sbc_hep_capture_every_message_of_a_call_once() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    let col = collector(&net);
    let started = SystemTime::now();
    let sbc = Sbc::start_with(
        &net,
        Plane::Userspace,
        &Prov::default(),
        &capture_settings(col.local_addr().unwrap()),
    );
    let uas = net.uas("uas.xml", SIP_PORT, 1, Duration::from_millis(100));
    let uac = net
        .uac("uac.xml", sbc.sip(), Duration::from_millis(1000))
        .spawn(&net.topo.caller)
        .expect("uac");
    let (uac, uas) = (uac.finish(), uas.finish());
    uac.assert_ok();
    uas.assert_ok();
    assert_eq!(
        uac.trace.final_counts("INVITE").get(&200),
        Some(&1),
        "{uac}"
    );

    let mut want = expected(&read_trace(&uac.trace_bytes), net.carrier_sip(), sbc.sip());
    want.extend(expected(
        &read_trace(&uas.trace_bytes),
        net.vendor_sip(SIP_PORT),
        sbc.sip(),
    ));
    let call_ids: BTreeSet<String> = want.iter().map(|(_, _, p)| call_id(p)).collect();
    assert_eq!(call_ids.len(), 2, "one Call-ID per leg: {call_ids:?}");
    for m in ["INVITE", "ACK", "BYE", "SIP/2.0 200"] {
        assert!(
            want.iter()
                .filter(|(_, _, p)| first_line(p).starts_with(m))
                .count()
                >= 2,
            "{m} on both legs in the traces:\n{}",
            show(&want)
        );
    }

    // Everything the collector got for the call's Call-IDs, until all expected arrived
    // (generous deadline), then a short quiet spell to catch duplicates.
    let mut got: Vec<(Hep, Vec<u8>)> = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut quiet_since: Option<Instant> = None;
    loop {
        match col.recv(&mut buf) {
            Ok(n) => {
                let raw = buf[..n].to_vec();
                let h = decode(&raw).unwrap_or_else(|e| panic!("not HEPv3 ({e}): {raw:02x?}"));
                if call_ids.contains(&call_id(&h.payload)) {
                    got.push((h, raw));
                    quiet_since = None;
                }
            }
            Err(_) => {
                let now = Instant::now();
                if got.len() >= want.len() {
                    let q = *quiet_since.get_or_insert(now);
                    if now - q >= Duration::from_millis(500) {
                        break;
                    }
                }
                if now > deadline {
                    break;
                }
            }
        }
    }

    let ended = SystemTime::now();
    for (h, raw) in &got {
        let what = first_line(&h.payload);
        assert_eq!(h.ip_proto, 17, "UDP: {what}");
        assert_eq!(h.proto_type, 1, "SIP: {what}");
        assert_eq!(h.capture_id, CAPTURE_ID, "{what}");
        assert_eq!(h.auth_key.as_deref(), Some(KEY.as_bytes()), "{what}");
        assert_eq!(
            h.correlation_id.as_deref(),
            Some(call_id(&h.payload).as_bytes()),
            "correlation id is the Call-ID: {what}"
        );
        let t = UNIX_EPOCH + Duration::new(h.time_sec.into(), h.time_usec * 1000);
        assert!(
            t + Duration::from_secs(1) >= started && t <= ended + Duration::from_secs(1),
            "timestamp within the test: {what}"
        );
        assert!(h.time_usec < 1_000_000, "{what}");
        assert_eq!(usize::from(u16::from_be_bytes([raw[4], raw[5]])), raw.len());
    }
    let mut have: Vec<Seen> = got
        .into_iter()
        .map(|(h, _)| (h.src, h.dst, h.payload))
        .collect();
    have.sort();
    want.sort();
    assert!(
        have == want,
        "the collector got (for the call's Call-IDs):\n{}\nsipp traced:\n{}",
        show(&have),
        show(&want)
    );
    let counted = sbc.metric("sipd_hep_sent_total");
    assert!(
        counted >= want.len() as u64,
        "sent {counted} < {}",
        want.len()
    );
    let dropped: u64 = [
        "queue_full",
        "send_error",
        "collector_down",
        "unresolved",
        "too_large",
    ]
    .iter()
    .map(|r| sbc.metric(&format!("sipd_hep_dropped_total{{reason=\"{r}\"}}")))
    .sum();
    assert_eq!(dropped, 0, "nothing dropped with a live collector");
}

fn dropped(sbc: &Sbc) -> u64 {
    ["send_error", "collector_down"]
        .iter()
        .map(|r| sbc.metric(&format!("sipd_hep_dropped_total{{reason=\"{r}\"}}")))
        .sum()
}

#[test]
fn sbc_hep_dead_collector_never_stops_a_call() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    // A port nothing listens on: the kernel answers the copies with ICMP port unreachable.
    let closed = collector(&net).local_addr().unwrap();
    let sbc = Sbc::start_with(
        &net,
        Plane::Userspace,
        &Prov::default(),
        &capture_settings(closed),
    );
    for _ in 0..2 {
        let uas = net.uas("uas.xml", SIP_PORT, 1, Duration::from_millis(100));
        let uac = net
            .uac("uac.xml", sbc.sip(), Duration::from_millis(500))
            .spawn(&net.topo.caller)
            .expect("uac");
        let (uac, uas) = (uac.finish(), uas.finish());
        uac.assert_ok();
        uas.assert_ok();
        assert_eq!(
            uac.trace.final_counts("INVITE").get(&200),
            Some(&1),
            "{uac}"
        );
    }
    // Counted by the sender task as it goes: poll with a generous deadline.
    let end = Instant::now() + Duration::from_secs(20);
    let mut n = dropped(&sbc);
    while n == 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        n = dropped(&sbc);
    }
    assert!(n > 0, "copies to a dead collector are dropped and counted");
    assert!(
        sbc.metric("sipd_hep_dropped_total{reason=\"send_error\"}") > 0,
        "the unreachable collector was noticed"
    );
    assert!(
        sbc.log_text()
            .contains("HEP capture: collector unreachable"),
        "sipd says so:\n{}",
        sbc.log_text()
    );
}

/// Debian's sngrep, as an operator would run it, as the collector: `sngrep -L` (its HEP
/// listener), writing what it receives to a pcap; the call's INVITE must be in it.
#[test]
fn sbc_hep_to_sngrep() {
    require_privileged!();
    require_sipp!();
    if std::process::Command::new("sngrep")
        .arg("-V")
        .output()
        .is_err()
    {
        assert!(
            !tests::in_ci(),
            "sngrep is not installed (cargo xtask setup)"
        );
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"SKIPPED sbc_hep_to_sngrep: sngrep not installed\n",
        );
        return;
    }
    let _s = serial();
    let net = Net::new();
    let port = collector(&net).local_addr().unwrap().port();
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let sbc = Sbc::start_with(
        &net,
        Plane::Userspace,
        &Prov::default(),
        &capture_settings(listen),
    );
    let pcap = sbc.dir.join("sngrep.pcap");
    // With -L sngrep opens no capture device (it refuses a BPF filter for that reason): what
    // is in its pcap came through the HEP listener.
    let mut cmd = net.topo.relay.command("sngrep");
    cmd.args(["-N", "-q", "-F", "-L"])
        .arg(format!("udp:{listen}"))
        .arg("-O")
        .arg(&pcap)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut sngrep = tests::netns::NsChild::spawn(&mut cmd).expect("sngrep");
    let end = Instant::now() + Duration::from_secs(20);
    while !tests::sip::udp_bound(&net.topo.relay, listen) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let uas = net.uas("uas.xml", SIP_PORT, 1, Duration::from_millis(100));
    let uac = net
        .uac("uac.xml", sbc.sip(), Duration::from_millis(500))
        .spawn(&net.topo.caller)
        .expect("uac");
    let (uac, uas) = (uac.finish(), uas.finish());
    uac.assert_ok();
    uas.assert_ok();
    let cid = uac
        .trace
        .sent()
        .next()
        .and_then(|m| m.header("Call-ID"))
        .unwrap_or("")
        .to_string();
    assert!(!cid.is_empty());
    // sngrep may buffer its pcap until it stops: look a few seconds, then stop it either way.
    let end = Instant::now() + Duration::from_secs(5);
    let mut seen = false;
    while !seen && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
        let raw = std::fs::read(&pcap).unwrap_or_default();
        seen = find(&raw, format!("Call-ID: {cid}").as_bytes()).is_some()
            && find(&raw, b"INVITE sip:").is_some();
    }
    let _ = sngrep.stop(Duration::from_secs(2));
    let raw = std::fs::read(&pcap).unwrap_or_default();
    assert!(
        find(&raw, format!("Call-ID: {cid}").as_bytes()).is_some(),
        "sngrep wrote {} bytes to {}, without the call's Call-ID {cid}",
        raw.len(),
        pcap.display()
    );
}
