//! The live event stream and the per-call SIP messages (issue 14, sipd's side) against a
//! real `sipd run` in the relay namespace with a sipp call held up: the admin made by
//! `sipd init` logs in with `sbcctl` (a TOTP code computed from the printed secret) inside the
//! relay namespace, where the API listens on 127.0.0.1; `sbcctl --json events` follows the
//! stream while the carrier's sipp calls through sipd to the vendor's sipp and holds the call.
//!
//! The call's media figures in `GET /api/calls` (issue 14's Calls screen) grow as RTP flows
//! through the XDP relay, with a recent last-seen time each way, and count the RTP the caller
//! skips as lost. A banned address's packets, dropped by XDP, count in its ban's `hits`.
//!
//! The stream shows the call start (the call as `GET /api/calls` lists it), counters every
//! second with the call active, a ban made through the API (`ban_added`), and the call's end
//! with who hung up (`caller`, as the CDR says). `sbcctl --json calls messages` shows the
//! call's ladder on both legs: the caller's INVITE, our 100 and 200 to it, its ACK, our
//! INVITE to the vendor and its 200.

mod sbc;

use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sbc::*;
use serde_json::Value;
use tests::netns::NsChild;
use tests::{require_privileged, require_sipp};

const ADMIN_PW: &str = "Correct-Horse-Battery-9";
/// Sequence numbers the caller's RTP skips after the lossless exchange.
const SKIPPED: u64 = 5;
/// Datagrams the banned address sends to sipd's SIP port.
const BANNED_SENDS: u64 = 12;
const API: &str = "https://127.0.0.1:8443";

fn sbcctl_bin() -> std::path::PathBuf {
    tests::bins::cargo_bin("tui", "sbcctl")
}

/// `sbcctl --insecure --url API ARGS` in the relay namespace, as `token`.
fn sbcctl(net: &Net, token: Option<&str>, args: &[&str], stdin: &str) -> Output {
    use std::io::Write as _;
    let mut cmd = net.topo.relay.command(sbcctl_bin());
    cmd.args(["--insecure", "--url", API])
        .args(args)
        .env_remove("SBC_TOKEN")
        .env(
            "XDG_CONFIG_HOME",
            std::env::temp_dir().join("events-netns-none"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.env("SBC_TOKEN", t);
    }
    let mut child = cmd.spawn().expect("spawn sbcctl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("sbcctl output")
}

fn json_of(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "sbcctl failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

/// `sbcctl --json events` running in the relay namespace, its lines read by a thread.
struct Follower {
    child: NsChild,
    rx: mpsc::Receiver<Value>,
}

impl Follower {
    fn start(net: &Net, token: &str) -> Follower {
        let mut cmd = net.topo.relay.command(sbcctl_bin());
        cmd.args(["--insecure", "--url", API, "--json", "events"])
            .env("SBC_TOKEN", token)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = NsChild::spawn(&mut cmd).expect("spawn sbcctl events");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        Follower { child, rx }
    }

    /// The first event of `kind` whose data satisfies `pred`, within `secs`.
    fn wait(&self, kind: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut seen = Vec::new();
        loop {
            match self
                .rx
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(e) if e["event"] == kind && pred(&e["data"]) => return e["data"].clone(),
                Ok(e) => seen.push(e["event"].as_str().unwrap_or_default().to_owned()),
                Err(_) => panic!("no {kind} event within {secs} s; saw {seen:?}"),
            }
        }
    }
}

#[test]
fn events_and_call_messages_follow_a_held_call() {
    require_privileged!();
    require_sipp!();
    let _serial = serial();
    // Built before the TOTP code is taken: a cold build on a busy machine outlasts its step.
    let _ = sbcctl_bin();
    let net = Net::new();
    let mut sbc = Sbc::start_with(
        &net,
        Plane::Xdp,
        &Prov::default(),
        &Settings {
            admin_password: Some(ADMIN_PW),
            ..Settings::default()
        },
    );
    let code = totp_now(sbc.admin_totp.as_deref().expect("admin made"));
    let login = sbcctl(
        &net,
        None,
        &[
            "login",
            "-u",
            "admin",
            "--password-stdin",
            "--totp",
            &code,
            "--print-token",
            "--no-save",
        ],
        &format!("{ADMIN_PW}\n"),
    );
    assert!(
        login.status.success(),
        "login: {}",
        String::from_utf8_lossy(&login.stderr)
    );
    let token = String::from_utf8_lossy(&login.stdout).trim().to_owned();
    let events = Follower::start(&net, &token);
    // Counters tick before any call (the stream is open and authorised).
    events.wait("counters", 15, |c| c["calls_active"] == 0);

    let mut uas = net.uas("uas.xml", SIP_PORT, 1, Duration::from_millis(200));
    let mut uac = net
        .uac("uac.xml", sbc.sip(), Duration::from_secs(6))
        .spawn(&net.topo.caller)
        .expect("uac");
    let started = events.wait("call_started", 15, |c| {
        c["cli"].as_str().is_some_and(|s| s.contains(CLI))
    });
    let id = started["id"].as_u64().expect("call id");
    let listed = json_of(&sbcctl(
        &net,
        Some(&token),
        &["--json", "calls", "list"],
        "",
    ));
    let as_listed = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("call {id} not listed: {listed:#}"));
    // A listed call may carry `media` (none has flowed when the call starts).
    let keys = |v: &Value| {
        let mut k = v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        k.retain(|k| k != "media");
        k
    };
    assert_eq!(
        keys(&started),
        keys(as_listed),
        "call_started is a call as listed"
    );

    // The call's media figures grow as RTP flows both ways through the XDP relay, and the
    // last packet each way was seen just now.
    let media_of = |calls: &Value| {
        calls
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["media"].clone())
            .unwrap_or(Value::Null)
    };
    let packets = |m: &Value, dir: &str| m[dir]["packets"].as_u64().unwrap_or(0);
    let before = media_of(&listed);
    let m = net.media(&mut uac, &mut uas, "MEDIA");
    m.check.assert_lossless();
    // Then the caller's stream goes on with a gap: sequence numbers PACKETS..PACKETS+4 never
    // sent, five after them. The relay counts them lost (RFC 3550), the other way nothing.
    let mut buf = Vec::new();
    for seq in PACKETS + SKIPPED..PACKETS + SKIPPED + 5 {
        tests::rtp::build_packet(1, seq, tests::rtp::G711_PAYLOAD, &mut buf);
        net.carrier_rtp
            .send_to(&buf, m.at_carrier)
            .expect("send rtp");
    }
    let lost = |m: &Value, dir: &str| m[dir]["lost"].as_u64();
    let end = Instant::now() + Duration::from_secs(10);
    let media = loop {
        let calls = json_of(&sbcctl(
            &net,
            Some(&token),
            &["--json", "calls", "list"],
            "",
        ));
        let media = media_of(&calls);
        let grown = ["caller_to_vendor", "vendor_to_caller"]
            .iter()
            .all(|d| packets(&media, d) >= PACKETS && packets(&media, d) > packets(&before, d));
        if grown && packets(&media, "caller_to_vendor") >= PACKETS + 5 {
            break media;
        }
        assert!(
            Instant::now() < end,
            "media counters did not grow past {PACKETS} each way (and 5 more toward the \
             vendor): before {before:#}, now {media:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for dir in ["caller_to_vendor", "vendor_to_caller"] {
        let d = &media[dir];
        assert!(
            d["bytes"].as_u64().unwrap_or(0) >= PACKETS * 12,
            "{media:#}"
        );
        let seen = d["last_seen_ms"].as_u64().unwrap_or(0);
        assert!(
            seen <= now_ms + 1_000 && now_ms - seen.min(now_ms) < 15_000,
            "last_seen_ms {seen} not recent (now {now_ms}): {media:#}"
        );
        // The first packet each way may take the slow path while the neighbour resolves.
        assert!(
            matches!(d["plane"].as_str(), Some("kernel" | "mixed")),
            "relayed by XDP: {media:#}"
        );
    }
    assert_eq!(
        (
            media["caller_to_vendor"]["expected"].as_u64(),
            lost(&media, "caller_to_vendor")
        ),
        (Some(PACKETS + SKIPPED + 5), Some(SKIPPED)),
        "the skipped sequence numbers are lost: {media:#}"
    );
    assert_eq!(
        (
            media["vendor_to_caller"]["expected"].as_u64(),
            lost(&media, "vendor_to_caller")
        ),
        (Some(PACKETS), Some(0)),
        "{media:#}"
    );
    events.wait("counters", 10, |c| c["calls_active"] == 1);

    // The ladder, once the caller has ACKed the 200.
    let end = Instant::now() + Duration::from_secs(10);
    let ladder = loop {
        let m = json_of(&sbcctl(
            &net,
            Some(&token),
            &["--json", "calls", "messages", &id.to_string()],
            "",
        ));
        let has_ack = m["messages"].as_array().unwrap().iter().any(|x| {
            x["first_line"].as_str().unwrap_or("").starts_with("ACK ") && x["leg"] == "caller"
        });
        if has_ack {
            break m;
        }
        assert!(Instant::now() < end, "no ACK in the ladder: {m:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let lines: Vec<(String, String, String)> = ladder["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            for k in ["at_ms", "from", "to", "transport", "raw"] {
                assert!(!m[k].is_null(), "{k} missing: {m:#}");
            }
            (
                m["leg"].as_str().unwrap().to_owned(),
                m["dir"].as_str().unwrap().to_owned(),
                m["first_line"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let has = |leg: &str, dir: &str, start: &str| {
        lines
            .iter()
            .any(|(l, d, f)| l == leg && d == dir && f.starts_with(start))
    };
    for (leg, dir, start) in [
        ("caller", "in", "INVITE "),
        ("caller", "out", "SIP/2.0 100"),
        ("caller", "out", "SIP/2.0 200"),
        ("caller", "in", "ACK "),
        ("vendor", "out", "INVITE "),
        ("vendor", "in", "SIP/2.0 200"),
        ("vendor", "out", "ACK "),
    ] {
        assert!(has(leg, dir, start), "no {leg} {dir} {start}…: {lines:#?}");
    }
    assert_eq!(lines[0].2.split(' ').next(), Some("INVITE"), "{lines:#?}");
    assert_eq!(ladder["call_id"], started["call_id"]);

    // A ban through the API is announced, and what XDP drops for it counts on it: `hits` and
    // `last_seen_ms` in the listing (before the kernel counted per ban, `hits` stayed 0).
    let attacker = net.attacker();
    let banned = attacker.local_addr().unwrap().ip().to_string();
    json_of(&sbcctl(
        &net,
        Some(&token),
        &["--json", "bans", "add", &banned, "--duration", "600"],
        "",
    ));
    let prefix = format!("{banned}/32");
    let ban = events.wait("ban_added", 10, |b| b["prefix"] == prefix.as_str());
    assert_eq!(ban["by"], "staff");
    let sent_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for i in 0..BANNED_SENDS {
        attacker
            .send_to(format!("OPTIONS {i}").as_bytes(), sbc.sip())
            .expect("send from the banned address");
    }
    let end = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let bans = json_of(&sbcctl(&net, Some(&token), &["--json", "bans", "list"], ""));
        let b = bans
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["prefix"] == prefix.as_str())
            .cloned()
            .unwrap_or(Value::Null);
        if b["hits"].as_u64().unwrap_or(0) >= BANNED_SENDS {
            break b;
        }
        assert!(
            Instant::now() < end,
            "the kernel's drops for {prefix} are not in its hits: {b:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(listed["hits"].as_u64(), Some(BANNED_SENDS), "{listed:#}");
    // The last drop's time, not the ban's (clocks converted to the ms; the kernel stamps it
    // with the coarse clock, up to a tick (10 ms at HZ=100) behind).
    assert!(
        listed["last_seen_ms"].as_u64().unwrap_or(0) + 15 >= sent_ms,
        "last_seen_ms before the packets were sent ({sent_ms}): {listed:#}"
    );

    // The caller hangs up after its hold: the end says who.
    let ended = events.wait("call_ended", 20, |e| e["id"] == id);
    assert_eq!(ended["hung_up_by"], "caller", "{ended:#}");
    assert_eq!(ended["cause"], "caller hung up", "{ended:#}");
    let (uac, uas) = (uac.finish(), uas.finish());
    uac.assert_ok();
    uas.assert_ok();
    let after = json_of(&sbcctl(
        &net,
        Some(&token),
        &["--json", "calls", "messages", &id.to_string()],
        "",
    ));
    assert_eq!(after["ended"], true, "an ended call's messages are kept");
    assert!(
        after["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["first_line"].as_str().unwrap_or("").starts_with("BYE ")),
        "{after:#}"
    );

    let mut events = events;
    let _ = events.child.stop(Duration::from_secs(5));
    let cdrs = sbc.cdrs();
    let cdr = cdrs
        .iter()
        .find(|c| c["call_id"] == started["call_id"])
        .expect("the call's CDR");
    assert_eq!(cdr["hung_up_by"], "caller", "{cdr:#}");
}
