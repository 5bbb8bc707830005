//! The call core (B2BUA) on a fake clock, fed messages from a carrier, two vendors, a digest
//! caller and a stranger, over UDP and TCP, with time moving between them.
//!
//! The input is a script of steps separated by `\n%%\n` (so the seed corpus can be written as
//! text). Each step's first byte chooses what happens:
//! - `m`/`M` + peer digit + bytes: a message from that peer (`M` sets Content-Length to the
//!   body first, so mutations of the body keep the message parseable);
//! - `r` + peer digit + three-digit code [+ `s` for an SDP body]: that peer answers the last
//!   request the core sent it;
//! - `t` + decimal milliseconds: the clocks move and the core ticks;
//! - `h` + digit: the management API hangs up that live call;
//! - `f` + peer digit: the kernel reports a flood from that peer;
//! - `x`: the transport fails the last transmission;
//! - `z`: shutdown.
//!
//! Anything else is a raw message from the stranger.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use sipd_core::auth::digest::{Algorithm, Credential, DigestPolicy, DigestVerifier, NonceKey};
use sipd_core::b2bua::fake_media::FakeMedia;
use sipd_core::b2bua::{Core, CoreConfig, Effect, Local, ids};
use sipd_core::policy::routing::Router;
use sipd_core::policy::rules::RuleSet;
use sipd_core::records::{Account, AuthRule, Connection, Micros, Pattern, SipAuth, Transport};
use sipd_core::sip::{Msg, Peer, Proto};

const US: &str = "10.0.0.2:5060";
/// Carrier (IP-authenticated), vendor 1, vendor 2, digest caller, stranger, carrier over TCP.
const PEERS: [&str; 6] = [
    "10.0.0.1:5060",
    "10.0.1.1:5060",
    "10.0.1.2:5060",
    "10.0.3.1:5060",
    "203.0.113.9:5060",
    "10.0.0.1:40000",
];
const SDP: &str = "v=0\r\no=- 2 2 IN IP4 10.0.1.1\r\ns=-\r\nc=IN IP4 10.0.1.1\r\nt=0 0\r\nm=audio 22000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("constant address")
}

fn peer(i: usize) -> Peer {
    let i = i % PEERS.len();
    let tcp = i == 5;
    Peer {
        proto: if tcp { Proto::Tcp } else { Proto::Udp },
        remote: sa(PEERS[i]),
        local: sa(US),
        conn: tcp.then_some(1),
    }
}

fn account(id: u64, name: &str) -> Account {
    Account {
        id,
        name: name.into(),
        enabled: true,
        sip: None,
        cps_limit: Some(50),
        max_sessions: Some(20),
        balance: Micros(0),
        tariff_id: None,
        max_call_secs: Some(3600),
    }
}

fn rule(id: u64, account_id: u64, remote: Option<&str>, ip_only: bool) -> AuthRule {
    AuthRule {
        id,
        account_id,
        name: format!("r{id}"),
        remote: remote.map(|r| r.parse().expect("constant net")),
        cli: None,
        cld: None,
        ip_only,
        tls_client_name: None,
    }
}

fn connection(id: u64, addr: &str, priority: u32) -> Connection {
    let a = sa(addr);
    Connection {
        id,
        name: format!("vendor{id}"),
        enabled: true,
        host: a.ip().to_string(),
        port: a.port(),
        transport: Transport::Udp,
        cld_prefixes: vec![],
        max_channels: Some(10),
        cps_limit: None,
        priority,
        tls_name: None,
    }
}

fn core(wall: SystemTime) -> Core<FakeMedia> {
    let cfg = CoreConfig {
        locals: vec![
            Local {
                proto: Proto::Udp,
                bind: sa(US),
                advertised: sa(US),
            },
            Local {
                proto: Proto::Tcp,
                bind: sa(US),
                advertised: sa(US),
            },
        ],
        topology_hiding: true,
        max_message_bytes: 16 * 1024,
        media_timeout: Duration::from_secs(30),
        strict_source: false,
        failover_after: Duration::from_secs(3),
        ids: ids::IdsConfig {
            failures_before_ban: 3,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(60),
            ban_max: Duration::from_secs(600),
            ban_scanners: true,
            floods_before_ban: 3,
            max_sources: 1024,
            dialog_probes_before_ban: 10,
        },
        max_refusal_rows: 64,
        agent: "fuzz-sbc".into(),
    };
    let mut digest = account(2, "digest");
    digest.sip = Some(SipAuth {
        username: "digest".into(),
        credential: Credential::Password {
            password: "s3cret".into(),
        },
        algorithms: None,
        password_template: None,
    });
    let mut r = rule(2, 2, None, false);
    r.cld = Some(Pattern::Prefix("44".into()));
    let rules = RuleSet::new(
        vec![account(1, "carrier"), digest],
        vec![rule(1, 1, Some("10.0.0.0/24"), true), r],
    )
    .expect("constant rules");
    let policy = DigestPolicy {
        realm: "sbc".into(),
        algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
        nonce_lifetime: Duration::from_secs(300),
        allow_md5_without_qop: false,
        max_tracked_nonces: 64,
    };
    let verifier = DigestVerifier::new(policy, NonceKey::new([7; 32]), wall);
    Core::new(
        cfg,
        rules,
        Router::new(vec![connection(1, PEERS[1], 1), connection(2, PEERS[2], 2)]),
        vec![],
        verifier,
        FakeMedia::new("192.0.2.10".parse().expect("constant address")),
    )
}

/// Content-Length set to the body that follows the header end.
fn fix_length(data: &[u8]) -> Vec<u8> {
    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
        return data.to_vec();
    };
    let (head, body) = (&data[..end], &data[end + 4..]);
    let mut out = Vec::with_capacity(data.len() + 24);
    for line in head.split(|&b| b == b'\n') {
        let l = line.strip_suffix(b"\r").unwrap_or(line);
        if l.len() >= 15 && l[..15].eq_ignore_ascii_case(b"content-length:") {
            continue;
        }
        out.extend_from_slice(l);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

fn digit(b: Option<&u8>) -> usize {
    b.map_or(0, |b| usize::from(b.wrapping_sub(b'0')))
}

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut core = core(wall - Duration::from_secs(1));
    // The last request the core sent to each peer, and the last transmission's token.
    let mut last_req: [Option<Msg>; PEERS.len()] = Default::default();
    let mut last_token = 0u64;
    // What the store would hold for the next run: the last save of each call still up.
    let mut saved: Vec<sipd_core::b2bua::SavedCall> = Vec::new();
    let steps = data.split(|&b| b == 0xff).flat_map(|s| {
        // `\n%%\n` separates steps in text seeds; 0xff lets the fuzzer splice binary ones.
        let mut v = Vec::new();
        let mut rest = s;
        while let Some(i) = rest.windows(4).position(|w| w == b"\n%%\n") {
            v.push(&rest[..i]);
            rest = &rest[i + 4..];
        }
        v.push(rest);
        v
    });
    for step in steps.take(64) {
        now += Duration::from_millis(1);
        wall += Duration::from_millis(1);
        match step.first() {
            Some(b'm') | Some(b'M') => {
                let p = digit(step.get(1));
                let body = step.get(2..).unwrap_or_default();
                let msg = if step[0] == b'M' {
                    fix_length(body)
                } else {
                    body.to_vec()
                };
                core.on_message(now, wall, peer(p), &msg);
            }
            Some(b'r') => {
                let p = digit(step.get(1)) % PEERS.len();
                let code = std::str::from_utf8(step.get(2..5).unwrap_or_default())
                    .ok()
                    .and_then(|s| s.parse::<u16>().ok())
                    .filter(|c| (100..700).contains(c))
                    .unwrap_or(200);
                if let Some(req) = &last_req[p] {
                    let mut r = req.response(code, Some("fuzztag"));
                    if (180..300).contains(&code) {
                        r.push("Contact", "<sip:vendor@10.0.1.1:5060>");
                    }
                    if step.get(5) == Some(&b's') {
                        r.push("Content-Type", "application/sdp");
                        r.body = SDP.as_bytes().to_vec();
                    }
                    core.on_message(now, wall, peer(p), &r.to_bytes());
                }
            }
            Some(b't') => {
                let ms: u64 = std::str::from_utf8(&step[1..])
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(100)
                    .min(4_000_000);
                let end = now + Duration::from_millis(ms);
                while now < end {
                    let d = Duration::from_millis(500).min(end - now);
                    now += d;
                    wall += d;
                    core.tick(now, wall);
                }
            }
            Some(b'h') => {
                let i = digit(step.get(1));
                let ids: Vec<_> = core.call_infos().into_iter().map(|c| c.id).collect();
                if let Some(id) = ids.get(i % ids.len().max(1)) {
                    core.hangup(now, wall, *id, "fuzz");
                }
            }
            Some(b'f') => core.on_flood(now, peer(digit(step.get(1))).remote.ip()),
            Some(b'x') => core.on_send_failed(now, wall, last_token),
            Some(b'z') => core.shutdown(now, wall),
            // A crash: the next run adopts what was saved ('c': with a torn INVITE in one).
            Some(b'k') => {
                let mut records = std::mem::take(&mut saved);
                if step.get(1) == Some(&b'c')
                    && let Some(r) = records.first_mut()
                {
                    let half = r.a_invite.len() / 2;
                    r.a_invite.truncate(r.a_invite.floor_char_boundary(half));
                }
                core = self::core(wall - Duration::from_secs(1));
                let _ = core.adopt(now, wall, records);
            }
            _ => core.on_message(now, wall, peer(4), step),
        }
        for e in core.drain_effects() {
            match &e {
                Effect::SaveCall { call: c, .. } => {
                    saved.retain(|x| x.media_id != c.media_id);
                    saved.push((**c).clone());
                }
                Effect::Cdr {
                    saved: Some(id), ..
                } => saved.retain(|x| &x.media_id != id),
                _ => {}
            }
            if let Effect::Send(t) = e {
                if t.token != 0 {
                    last_token = t.token;
                }
                // What we send must always be readable SIP, and never oversized.
                if let Ok(m) = Msg::parse(&t.data, 65_535)
                    && m.code().is_none()
                    && let Some(i) = PEERS.iter().position(|a| sa(a) == t.peer.remote)
                {
                    last_req[i] = Some(m);
                }
            }
        }
        // Every answer leaves the core's state consistent enough to list.
        let _ = core.stats();
        let _ = core.next_timeout();
    }
});
