//! Whole calls through the core on a fake clock: a carrier at 10.0.0.1, vendors at
//! 10.0.1.1/10.0.1.2, us at 10.0.0.2, media anchored on 192.0.2.10 (in-memory relay).

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use super::fake_media::FakeMedia;
use super::*;
use crate::auth::digest::{Algorithm, Credential, DigestAuthorization};
use crate::auth::digest::{DigestPolicy, NonceKey, expected_response};
use crate::records::{Account, AuthRule, Pattern, SipAuth, Transport};
use crate::sip::Proto;
use rsip::Method;

const US: &str = "10.0.0.2:5060";
const CARRIER: &str = "10.0.0.1:5060";
const VENDOR1: &str = "10.0.1.1:5060";
const VENDOR2: &str = "10.0.1.2:5060";

struct World {
    core: Core<FakeMedia>,
    now: Instant,
    wall: SystemTime,
    sent: Vec<(SocketAddr, Msg)>,
    cdrs: Vec<CdrDraft>,
    effects: Vec<Effect>,
    raw: Vec<String>,
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn account(id: Id, name: &str) -> Account {
    Account {
        id,
        name: name.into(),
        enabled: true,
        sip: None,
        cps_limit: None,
        max_sessions: None,
        balance: Micros(0),
        tariff_id: None,
        max_call_secs: None,
    }
}

fn rule(id: Id, account_id: Id, remote: Option<&str>, ip_only: bool) -> AuthRule {
    AuthRule {
        id,
        account_id,
        name: format!("r{id}"),
        remote: remote.map(|r| r.parse().unwrap()),
        cli: None,
        cld: None,
        ip_only,
        tls_client_name: None,
    }
}

fn connection(id: Id, addr: &str, priority: u32) -> Connection {
    let a = sa(addr);
    Connection {
        id,
        name: format!("vendor{id}"),
        enabled: true,
        host: a.ip().to_string(),
        port: a.port(),
        transport: Transport::Udp,
        cld_prefixes: vec![],
        max_channels: None,
        cps_limit: None,
        priority,
        tls_name: None,
    }
}

impl World {
    fn new(
        accounts: Vec<Account>,
        rules: Vec<AuthRule>,
        conns: Vec<Connection>,
        tariffs: Vec<Tariff>,
    ) -> World {
        let algorithms = vec![Algorithm::Sha256, Algorithm::Md5];
        World::with_algorithms(accounts, rules, conns, tariffs, algorithms)
    }

    /// With `[auth] algorithms` = `algorithms`.
    fn with_algorithms(
        accounts: Vec<Account>,
        rules: Vec<AuthRule>,
        conns: Vec<Connection>,
        tariffs: Vec<Tariff>,
        algorithms: Vec<Algorithm>,
    ) -> World {
        let cfg = CoreConfig {
            locals: vec![Local {
                proto: Proto::Udp,
                bind: sa(US),
                advertised: sa(US),
            }],
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
            agent: "test-sbc".into(),
            max_refusal_rows: 64,
        };
        let policy = DigestPolicy {
            realm: "sbc".into(),
            algorithms,
            nonce_lifetime: Duration::from_secs(300),
            allow_md5_without_qop: false,
            max_tracked_nonces: 1024,
        };
        let wall = SystemTime::now();
        let verifier = DigestVerifier::new(
            policy,
            NonceKey::new([7; 32]),
            wall - Duration::from_secs(1),
        );
        let core = Core::new(
            cfg,
            RuleSet::new(accounts, rules).unwrap(),
            Router::new(conns),
            tariffs,
            verifier,
            FakeMedia::new("192.0.2.10".parse().unwrap()),
        );
        World {
            core,
            now: Instant::now(),
            wall,
            sent: Vec::new(),
            cdrs: Vec::new(),
            effects: Vec::new(),
            raw: Vec::new(),
        }
    }

    fn collect(&mut self) {
        for e in self.core.drain_effects() {
            match &e {
                Effect::Send(s) => match Msg::parse(&s.data, 65535) {
                    Ok(m) => self.sent.push((s.peer.remote, m)),
                    // Only a 400 echoing the peer's broken header may fail to parse.
                    Err(_) => self.raw.push(String::from_utf8_lossy(&s.data).into_owned()),
                },
                Effect::Cdr { cdr, .. } => self.cdrs.push(cdr.clone()),
                _ => {}
            }
            self.effects.push(e);
        }
    }

    fn from(&mut self, who: &str, text: &str) {
        let peer = Peer {
            proto: Proto::Udp,
            remote: sa(who),
            local: sa(US),
            conn: None,
        };
        let text = fix_length(text);
        // Time moves between messages (nonces are dated; one from "now" is not yet valid).
        self.now += Duration::from_millis(1);
        self.wall += Duration::from_millis(1);
        self.core
            .on_message(self.now, self.wall, peer, text.as_bytes());
        self.collect();
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            let step = Duration::from_millis(100).min(end - self.now);
            self.now += step;
            self.wall += step;
            self.core.tick(self.now, self.wall);
        }
        self.collect();
    }

    /// Messages sent to `who` since the last take.
    fn take(&mut self, who: &str) -> Vec<Msg> {
        let who = sa(who);
        let (mine, rest): (Vec<_>, Vec<_>) = self.sent.drain(..).partition(|(to, _)| *to == who);
        self.sent = rest;
        mine.into_iter().map(|(_, m)| m).collect()
    }

    fn codes(&mut self, who: &str) -> Vec<u16> {
        self.take(who).iter().filter_map(Msg::code).collect()
    }
}

/// The call was hung up toward the carrier and the vendor.
fn assert_byes_both_ways(w: &mut World) {
    for who in [CARRIER, VENDOR1] {
        assert!(
            w.take(who).iter().any(|m| m.method() == Some(&Method::Bye)),
            "no BYE to {who}"
        );
    }
}

/// Sets Content-Length to the body actually written in the test text.
fn fix_length(text: &str) -> String {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let head: Vec<&str> = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("content-length"))
        .collect();
    format!(
        "{}\r\nContent-Length: {}\r\n\r\n{body}",
        head.join("\r\n"),
        body.len()
    )
}

const SDP_A: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
const SDP_B: &str = "v=0\r\no=- 2 2 IN IP4 10.0.1.1\r\ns=-\r\nc=IN IP4 10.0.1.1\r\nt=0 0\r\nm=audio 22000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

fn invite(call_id: &str, branch: &str, extra: &str, sdp: bool) -> String {
    format!(
        "INVITE sip:4420555@10.0.0.2 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.0.1:5060;branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: \"Carrier\" <sip:1555000@10.0.0.1>;tag=ftag-{call_id}\r\n\
         To: <sip:4420555@10.0.0.2>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:1555000@10.0.0.1:5060>\r\n\
         {extra}\
         Content-Type: application/sdp\r\n\r\n{}",
        if sdp { SDP_A } else { "" }
    )
}

/// A response from a vendor to the request `req` we sent it.
fn reply(req: &Msg, code: u16, to_tag: &str, sdp: Option<&str>) -> String {
    let mut r = req.response(code, Some(to_tag));
    if (200..300).contains(&code) || code == 180 {
        r.push("Contact", "<sip:vendor@10.0.1.1:5060>");
    }
    if let Some(s) = sdp {
        r.push("Content-Type", "application/sdp");
        r.body = s.as_bytes().to_vec();
    }
    String::from_utf8(r.to_bytes()).unwrap()
}

fn ip_world() -> World {
    World::new(
        vec![account(1, "carrier")],
        vec![rule(1, 1, Some("10.0.0.0/24"), true)],
        vec![connection(1, VENDOR1, 1), connection(2, VENDOR2, 2)],
        vec![],
    )
}

/// INVITE from the carrier up to the upstream INVITE; returns that INVITE.
fn start_call(w: &mut World, call_id: &str) -> Msg {
    w.from(
        CARRIER,
        &invite(call_id, &format!("z9hG4bK-{call_id}"), "", true),
    );
    assert_eq!(w.codes(CARRIER), vec![100]);
    let mut up: Vec<Msg> = w
        .take(VENDOR1)
        .into_iter()
        .filter(|m| m.method() == Some(&Method::Invite))
        .collect();
    assert_eq!(up.len(), 1, "one INVITE upstream");
    up.remove(0)
}

fn answer(w: &mut World, inv: &Msg) {
    w.from(VENDOR1, &reply(inv, 180, "vtag", None));
    assert_eq!(w.codes(CARRIER), vec![180]);
    w.from(VENDOR1, &reply(inv, 200, "vtag", Some(SDP_B)));
}

#[test]
fn ip_authenticated_call_with_anchored_media_and_hidden_topology() {
    let mut w = ip_world();
    let inv = start_call(&mut w, "call-1");
    let text = String::from_utf8(inv.to_bytes()).unwrap();
    assert!(
        !text.contains("10.0.0.1"),
        "carrier address leaked upstream:\n{text}"
    );
    assert!(!text.contains("call-1"), "carrier Call-ID leaked upstream");
    assert!(
        text.contains("c=IN IP4 192.0.2.10"),
        "offer not anchored:\n{text}"
    );
    assert_eq!(inv.get("Max-Forwards"), Some("69"));

    answer(&mut w, &inv);
    let to_a = w.take(CARRIER);
    assert_eq!(to_a.len(), 1);
    let ok = &to_a[0];
    assert_eq!(ok.code(), Some(200));
    let ok_text = String::from_utf8(ok.to_bytes()).unwrap();
    assert!(
        ok_text.contains("c=IN IP4 192.0.2.10"),
        "answer not anchored:\n{ok_text}"
    );
    assert!(
        !ok_text.contains("10.0.1.1"),
        "vendor address leaked to the carrier"
    );
    let acks = w.take(VENDOR1);
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].method(), Some(&Method::Ack));
    assert_eq!(w.core.active_calls(), 1);

    // Caller ACKs, talks 61 s, hangs up.
    let a_tag = ok.to().tag.unwrap();
    w.from(CARRIER, &format!(
        "ACK sip:sbc@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-ack1\r\nMax-Forwards: 70\r\nFrom: <sip:1555000@10.0.0.1>;tag=ftag-call-1\r\nTo: <sip:4420555@10.0.0.2>;tag={a_tag}\r\nCall-ID: call-1\r\nCSeq: 1 ACK\r\n\r\n"
    ));
    w.advance(Duration::from_secs(61));
    assert!(
        w.take(CARRIER).is_empty(),
        "no 2xx retransmission after the ACK"
    );
    w.from(CARRIER, &format!(
        "BYE sip:sbc@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-bye1\r\nMax-Forwards: 70\r\nFrom: <sip:1555000@10.0.0.1>;tag=ftag-call-1\r\nTo: <sip:4420555@10.0.0.2>;tag={a_tag}\r\nCall-ID: call-1\r\nCSeq: 2 BYE\r\n\r\n"
    ));
    assert_eq!(w.codes(CARRIER), vec![200]);
    let bye = w.take(VENDOR1);
    assert_eq!(bye.len(), 1);
    assert_eq!(bye[0].method(), Some(&Method::Bye));
    assert_eq!(bye[0].to().tag.as_deref(), Some("vtag"));
    assert_eq!(bye[0].call_id(), inv.call_id());
    assert_eq!(w.core.active_calls(), 0);
    assert_eq!(w.core.media().calls(), 0, "relay session removed");
    let cdr = &w.cdrs[0];
    assert_eq!(cdr.result_code, 200);
    assert!(
        (61..=62).contains(&cdr.duration_secs),
        "{}",
        cdr.duration_secs
    );
    assert_eq!(cdr.connection_id, Some(1));
    assert_eq!(cdr.account_id, Some(1));
    assert_eq!(
        (cdr.caller.as_str(), cdr.callee.as_str()),
        ("1555000", "4420555")
    );
    assert!(w.effects.contains(&Effect::SourceSession {
        ip: "10.0.0.1".parse().unwrap(),
        up: true
    }));
    assert!(w.effects.contains(&Effect::SourceSession {
        ip: "10.0.0.1".parse().unwrap(),
        up: false
    }));
}

#[test]
fn retransmitted_invite_makes_one_call() {
    let mut w = ip_world();
    let text = invite("call-r", "z9hG4bK-r", "", true);
    w.from(CARRIER, &text);
    w.from(CARRIER, &text);
    w.from(CARRIER, &text);
    assert_eq!(w.codes(CARRIER), vec![100, 100, 100]);
    assert_eq!(w.take(VENDOR1).len(), 1);
    assert_eq!(w.core.active_calls(), 1);
}

#[test]
fn no_matching_rule_is_403_counted_in_the_refusal_table() {
    let mut w = World::new(
        vec![account(1, "carrier")],
        vec![rule(1, 1, Some("10.9.9.0/24"), true)],
        vec![connection(1, VENDOR1, 1)],
        vec![],
    );
    w.from(CARRIER, &invite("call-x", "z9hG4bK-x", "", true));
    let msgs = w.take(CARRIER);
    assert_eq!(
        msgs.iter().filter_map(Msg::code).collect::<Vec<_>>(),
        vec![403]
    );
    assert!(
        msgs[0]
            .get("Warning")
            .unwrap()
            .contains("no matching auth rule")
    );
    assert!(w.take(VENDOR1).is_empty());
    // Not authenticated: a row per (source, reason), not a CDR.
    assert!(w.cdrs.is_empty());
    let rows = w.core.refusals();
    assert_eq!((rows[0].code, rows[0].count), (403, 1));
    // Probing on: the third refusal within the window bans the source.
    for i in 0..2 {
        w.from(
            CARRIER,
            &invite(&format!("call-y{i}"), &format!("z9hG4bK-y{i}"), "", true),
        );
    }
    assert!(w.effects.iter().any(|e| matches!(
        e,
        Effect::Ban {
            offence: Offence::Enumeration,
            ..
        }
    )));
}

fn digest_world() -> World {
    digest_world_with(&[Algorithm::Sha256, Algorithm::Md5], None)
}

/// A carrier account with a password and its own algorithm list `own`, under `[auth]
/// algorithms` = `configured`.
fn digest_world_with(configured: &[Algorithm], own: Option<Vec<Algorithm>>) -> World {
    let mut a = account(1, "carrier");
    a.sip = Some(SipAuth {
        username: "carrier".into(),
        credential: Credential::Password {
            password: "s3cret".into(),
        },
        algorithms: own,
        password_template: None,
    });
    let mut r = rule(1, 1, None, false);
    r.cld = Some(Pattern::Prefix("44".into()));
    let conns = vec![connection(1, VENDOR1, 1)];
    World::with_algorithms(vec![a], vec![r], conns, vec![], configured.to_vec())
}

fn authorization(challenge: &str, password: &str, uri: &str) -> String {
    authorization_with(Algorithm::Sha256, challenge, password, uri)
}

/// An answer to `challenge` computed with `alg` (whatever the challenge offered).
fn authorization_with(alg: Algorithm, challenge: &str, password: &str, uri: &str) -> String {
    let nonce = challenge
        .split("nonce=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap();
    let cred = Credential::Password {
        password: password.into(),
    };
    let ha1 = cred.ha1(alg.hash(), "carrier", "sbc").unwrap();
    let zeros = "0".repeat(alg.hash().hex_len());
    let header = format!(
        "Digest username=\"carrier\", realm=\"sbc\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{zeros}\", algorithm={alg}, qop=auth, nc=00000001, cnonce=\"c0ffee\""
    );
    let mut auth: DigestAuthorization = header.parse().unwrap();
    auth.response = expected_response(&ha1, "INVITE", &auth).unwrap();
    header.replace(&zeros, &auth.response)
}

fn offered(m: &Msg) -> Vec<String> {
    m.get_all("WWW-Authenticate")
        .map(|c| {
            c.split("algorithm=")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap()
                .trim()
                .to_owned()
        })
        .collect()
}

#[test]
fn challenges_go_out_in_the_configured_order() {
    use Algorithm::{Md5, Sha256};
    for configured in [vec![Md5], vec![Md5, Sha256], vec![Sha256, Md5]] {
        let mut w = digest_world_with(&configured, None);
        w.from(CARRIER, &invite("call-o", "z9hG4bK-o1", "", true));
        let msgs = w.take(CARRIER);
        assert_eq!(msgs[0].code(), Some(401));
        let want: Vec<String> = configured.iter().map(|a| a.to_string()).collect();
        assert_eq!(offered(&msgs[0]), want);
    }
}

#[test]
fn an_account_that_requires_sha256_refuses_an_md5_answer_with_a_new_401() {
    use Algorithm::{Md5, Sha256};
    // The default configuration (MD5 only); the account requires SHA-256.
    let mut w = digest_world_with(&[Md5], Some(vec![Sha256]));
    w.from(CARRIER, &invite("call-s", "z9hG4bK-s1", "", true));
    let msgs = w.take(CARRIER);
    assert_eq!(msgs[0].code(), Some(401));
    // Nobody is named yet: the configured challenge.
    assert_eq!(offered(&msgs[0]), ["MD5"]);
    let md5 = msgs[0].get("WWW-Authenticate").unwrap().to_owned();

    // The right password, answered with MD5: challenged again, SHA-256 only, no call.
    let answer = authorization_with(Md5, &md5, "s3cret", "sip:4420555@10.0.0.2");
    let headers = format!("Authorization: {answer}\r\n");
    w.from(CARRIER, &invite("call-s", "z9hG4bK-s2", &headers, true));
    let msgs = w.take(CARRIER);
    assert_eq!(
        msgs.iter().filter_map(Msg::code).collect::<Vec<_>>(),
        vec![401]
    );
    assert_eq!(offered(&msgs[0]), ["SHA-256"]);
    assert!(w.take(VENDOR1).is_empty());
    let sha = msgs[0].get("WWW-Authenticate").unwrap().to_owned();

    // Answered with SHA-256: the call goes upstream.
    let answer = authorization_with(Sha256, &sha, "s3cret", "sip:4420555@10.0.0.2");
    let headers = format!("Authorization: {answer}\r\n");
    w.from(CARRIER, &invite("call-s", "z9hG4bK-s3", &headers, true));
    assert_eq!(w.codes(CARRIER), vec![100]);
    assert_eq!(w.take(VENDOR1).len(), 1);
}

#[test]
fn an_account_may_allow_md5_where_the_configuration_does_not() {
    use Algorithm::{Md5, Sha256};
    let mut w = digest_world_with(&[Sha256], Some(vec![Md5]));
    w.from(CARRIER, &invite("call-m", "z9hG4bK-m1", "", true));
    let first = w.take(CARRIER)[0]
        .get("WWW-Authenticate")
        .unwrap()
        .to_owned();
    let answer = authorization_with(Md5, &first, "s3cret", "sip:4420555@10.0.0.2");
    let headers = format!("Authorization: {answer}\r\n");
    w.from(CARRIER, &invite("call-m", "z9hG4bK-m2", &headers, true));
    assert_eq!(w.codes(CARRIER), vec![100]);
    assert_eq!(w.take(VENDOR1).len(), 1);
}

#[test]
fn digest_challenge_then_call_and_wrong_password_refused() {
    let mut w = digest_world();
    w.from(CARRIER, &invite("call-d", "z9hG4bK-d1", "", true));
    let msgs = w.take(CARRIER);
    assert_eq!(msgs[0].code(), Some(401));
    let challenges: Vec<&str> = msgs[0].get_all("WWW-Authenticate").collect();
    assert!(challenges[0].contains("SHA-256"), "{challenges:?}");
    let sha = challenges[0].to_owned();

    // Wrong password: 403, no upstream INVITE.
    let bad = authorization(&sha, "wrong", "sip:4420555@10.0.0.2");
    w.from(
        CARRIER,
        &invite(
            "call-d",
            "z9hG4bK-d2",
            &format!("Authorization: {bad}\r\n"),
            true,
        ),
    );
    let msgs = w.take(CARRIER);
    assert_eq!(
        msgs.iter().filter_map(Msg::code).collect::<Vec<_>>(),
        vec![403]
    );
    assert!(msgs[0].get("Warning").unwrap().contains("bad credentials"));
    assert!(w.take(VENDOR1).is_empty());

    // Right password on a fresh challenge: the call goes upstream.
    w.from(CARRIER, &invite("call-e", "z9hG4bK-e1", "", true));
    let sha = w.take(CARRIER)[0]
        .get("WWW-Authenticate")
        .unwrap()
        .to_owned();
    let good = authorization(&sha, "s3cret", "sip:4420555@10.0.0.2");
    w.from(
        CARRIER,
        &invite(
            "call-e",
            "z9hG4bK-e2",
            &format!("Authorization: {good}\r\n"),
            true,
        ),
    );
    assert_eq!(w.codes(CARRIER), vec![100]);
    assert_eq!(w.take(VENDOR1).len(), 1);

    // The same response replayed (same nonce and nc) does not get in: a fresh challenge.
    w.from(
        CARRIER,
        &invite(
            "call-f",
            "z9hG4bK-f1",
            &format!("Authorization: {good}\r\n"),
            true,
        ),
    );
    assert_eq!(w.codes(CARRIER), vec![401]);
    assert!(w.take(VENDOR1).is_empty());
}

#[test]
fn repeated_digest_failures_ban_the_source() {
    let mut w = digest_world();
    for i in 0..3 {
        w.from(
            CARRIER,
            &invite(&format!("c{i}"), &format!("z9hG4bK-b{i}"), "", true),
        );
        let sha = w.take(CARRIER)[0]
            .get("WWW-Authenticate")
            .unwrap()
            .to_owned();
        let bad = authorization(&sha, "guess", "sip:4420555@10.0.0.2");
        w.from(
            CARRIER,
            &invite(
                &format!("c{i}"),
                &format!("z9hG4bK-bb{i}"),
                &format!("Authorization: {bad}\r\n"),
                true,
            ),
        );
        assert_eq!(w.codes(CARRIER), vec![403]);
    }
    assert!(w.effects.iter().any(|e| matches!(
        e,
        Effect::Ban {
            offence: Offence::BruteForce,
            ..
        }
    )));
}

#[test]
fn failover_on_503_and_on_silence() {
    let mut w = World::new(
        vec![account(1, "carrier")],
        vec![rule(1, 1, Some("10.0.0.0/24"), true)],
        vec![connection(1, VENDOR1, 1), connection(2, VENDOR2, 2)],
        vec![],
    );
    let inv = start_call(&mut w, "call-fo");
    w.from(VENDOR1, &reply(&inv, 503, "v1", None));
    let to_v1 = w.take(VENDOR1);
    assert_eq!(to_v1[0].method(), Some(&Method::Ack), "non-2xx is ACKed");
    let inv2 = w.take(VENDOR2);
    assert_eq!(inv2.len(), 1, "failed over to vendor 2");
    assert!(
        w.codes(CARRIER).is_empty(),
        "the caller sees nothing of the failover"
    );
    w.from(VENDOR2, &reply(&inv2[0], 200, "v2", Some(SDP_B)));
    assert_eq!(w.codes(CARRIER), vec![200]);

    // Silence: vendor 1 never answers; after failover_after the call moves on.
    let inv = start_call(&mut w, "call-silent");
    w.advance(Duration::from_millis(1600));
    assert_eq!(
        w.take(VENDOR1).len(),
        2,
        "UDP retransmissions at T1 and 3·T1"
    );
    w.advance(Duration::from_secs(2));
    let v2 = w.take(VENDOR2);
    assert!(
        v2.iter()
            .any(|m| m.method() == Some(&Method::Invite) && m.call_id() != inv.call_id())
    );
    let _ = inv;
}

#[test]
fn all_upstreams_failing_gives_503_with_warning() {
    let mut w = World::new(
        vec![account(1, "carrier")],
        vec![rule(1, 1, Some("10.0.0.0/24"), true)],
        vec![connection(1, VENDOR1, 1)],
        vec![],
    );
    let inv = start_call(&mut w, "call-503");
    w.from(VENDOR1, &reply(&inv, 500, "v1", None));
    let msgs = w.take(CARRIER);
    assert_eq!(msgs[0].code(), Some(500));
    assert!(msgs[0].get("Warning").unwrap().contains("upstream failed"));
    assert_eq!(w.cdrs[0].result_code, 500);
    // A busy vendor is passed through, not failed over.
    let inv = start_call(&mut w, "call-486");
    w.from(VENDOR1, &reply(&inv, 486, "v1", None));
    assert_eq!(w.codes(CARRIER), vec![486]);
}

#[test]
fn cancel_before_answer() {
    let mut w = ip_world();
    let inv = start_call(&mut w, "call-c");
    w.from(VENDOR1, &reply(&inv, 180, "vtag", None));
    w.take(CARRIER);
    w.from(CARRIER,
        "CANCEL sip:4420555@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-call-c;rport\r\nMax-Forwards: 70\r\nFrom: \"Carrier\" <sip:1555000@10.0.0.1>;tag=ftag-call-c\r\nTo: <sip:4420555@10.0.0.2>\r\nCall-ID: call-c\r\nCSeq: 1 CANCEL\r\n\r\n");
    let mut codes = w.codes(CARRIER);
    codes.sort();
    assert_eq!(codes, vec![200, 487]);
    let up = w.take(VENDOR1);
    assert_eq!(up[0].method(), Some(&Method::Cancel));
    assert_eq!(
        up[0].top_via().unwrap().branch,
        inv.top_via().unwrap().branch
    );
    assert_eq!(w.cdrs[0].result_code, 487);
    // The vendor's 487 is ACKed, not relayed again.
    w.from(VENDOR1, &reply(&inv, 487, "vtag", None));
    assert_eq!(w.take(VENDOR1)[0].method(), Some(&Method::Ack));
    assert!(w.codes(CARRIER).is_empty());
}

#[test]
fn max_duration_ends_the_call_both_ways() {
    let mut a = account(1, "carrier");
    a.max_call_secs = Some(5);
    let mut w = World::new(
        vec![a],
        vec![rule(1, 1, Some("10.0.0.0/24"), true)],
        vec![connection(1, VENDOR1, 1)],
        vec![],
    );
    let inv = start_call(&mut w, "call-m");
    answer(&mut w, &inv);
    w.take(CARRIER);
    w.take(VENDOR1);
    w.advance(Duration::from_secs(6));
    let a_byes: Vec<_> = w
        .take(CARRIER)
        .into_iter()
        .filter(|m| m.method() == Some(&Method::Bye))
        .collect();
    let b_byes: Vec<_> = w
        .take(VENDOR1)
        .into_iter()
        .filter(|m| m.method() == Some(&Method::Bye))
        .collect();
    assert!(!a_byes.is_empty() && !b_byes.is_empty());
    assert_eq!(a_byes[0].call_id(), "call-m");
    assert_eq!(
        a_byes[0].get("To").unwrap(),
        "\"Carrier\" <sip:1555000@10.0.0.1>;tag=ftag-call-m"
    );
    let cdr = &w.cdrs[0];
    assert_eq!(cdr.reason, "max duration");
    assert!(
        (4..=5).contains(&cdr.duration_secs),
        "{}",
        cdr.duration_secs
    );
}

#[test]
fn balance_exhausted_is_402_and_a_call_is_cut_before_the_balance_goes_negative() {
    let tariff = Tariff {
        id: 1,
        name: "t".into(),
        rate_per_minute: Micros(600_000), // 0.60 per minute = 0.01 per second
        expected_call_secs: 5,
        initial_increment_secs: 1,
        increment_secs: 1,
    };
    let mut broke = account(1, "broke");
    broke.tariff_id = Some(1);
    let mut rich = account(2, "ten-seconds");
    rich.tariff_id = Some(1);
    rich.balance = Micros(100_000); // 0.10 = 10 s
    let mut w = World::new(
        vec![broke, rich],
        vec![
            rule(1, 1, Some("10.0.0.1/32"), true),
            rule(2, 2, Some("10.0.0.0/24"), true),
        ],
        vec![connection(1, VENDOR1, 1)],
        vec![tariff],
    );
    w.from(CARRIER, &invite("call-broke", "z9hG4bK-broke", "", true));
    let msgs = w.take(CARRIER);
    assert_eq!(msgs[1].code(), Some(402));
    assert!(
        msgs[1]
            .get("Warning")
            .unwrap()
            .contains("insufficient balance")
    );

    let peer = Peer {
        proto: Proto::Udp,
        remote: sa("10.0.0.7:5060"),
        local: sa(US),
        conn: None,
    };
    let text = fix_length(&invite("call-rich", "z9hG4bK-rich", "", true));
    w.core.on_message(w.now, w.wall, peer, text.as_bytes());
    w.collect();
    let inv = w.take(VENDOR1).remove(0);
    w.from(VENDOR1, &reply(&inv, 200, "vtag", Some(SDP_B)));
    w.advance(Duration::from_secs(12));
    assert!(
        w.take(VENDOR1)
            .iter()
            .any(|m| m.method() == Some(&Method::Bye))
    );
    let cdr = w.cdrs.last().unwrap();
    assert_eq!(cdr.reason, "balance exhausted");
    assert!(
        cdr.cost.0 <= 100_000,
        "cost {} over the balance",
        cdr.cost.0
    );
    assert!(
        cdr.duration_secs >= 9,
        "cut too early: {} s",
        cdr.duration_secs
    );
}

#[test]
fn media_timeout_ends_the_call() {
    let mut w = ip_world();
    let inv = start_call(&mut w, "call-mt");
    answer(&mut w, &inv);
    w.take(CARRIER);
    w.take(VENDOR1);
    let media_id = w.core.calls().next().unwrap().media_id.clone();
    w.core.media().expire(media_id);
    w.advance(Duration::from_secs(1));
    assert_byes_both_ways(&mut w);
    assert_eq!(w.cdrs[0].reason, "media timeout");
}

#[test]
fn reinvite_from_the_caller_is_relayed_and_re_anchored() {
    let mut w = ip_world();
    let inv = start_call(&mut w, "call-re");
    answer(&mut w, &inv);
    let a_tag = w.take(CARRIER)[0].to().tag.unwrap();
    w.take(VENDOR1);
    let re = format!(
        "INVITE sip:sbc@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-re2\r\nMax-Forwards: 70\r\nFrom: <sip:1555000@10.0.0.1>;tag=ftag-call-re\r\nTo: <sip:4420555@10.0.0.2>;tag={a_tag}\r\nCall-ID: call-re\r\nCSeq: 2 INVITE\r\nContact: <sip:1555000@10.0.0.1>\r\nContent-Type: application/sdp\r\n\r\n{}",
        SDP_A.replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:0 PCMU/8000\r\na=sendonly")
    );
    w.from(CARRIER, &re);
    let up = w.take(VENDOR1);
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].method(), Some(&Method::Invite));
    assert_eq!(up[0].cseq(), (2, "INVITE"));
    assert_eq!(up[0].to().tag.as_deref(), Some("vtag"));
    let body = String::from_utf8_lossy(&up[0].body).into_owned();
    assert!(
        body.contains("192.0.2.10") && body.contains("sendonly"),
        "{body}"
    );
    w.from(VENDOR1, &reply(&up[0], 200, "vtag", Some(SDP_B)));
    let to_a = w.take(CARRIER);
    assert_eq!(to_a[0].code(), Some(200));
    assert_eq!(to_a[0].cseq(), (2, "INVITE"));
    assert!(
        w.take(VENDOR1)
            .iter()
            .any(|m| m.method() == Some(&Method::Ack))
    );
}

#[test]
fn malformed_messages_get_400_or_silence_never_a_panic() {
    let mut w = ip_world();
    // Routable but broken: 400 with a Warning.
    w.from(CARRIER, "INVITE sip:1@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKm1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:1@b>\r\nCall-ID: m1\r\nCSeq: x INVITE\r\n\r\n");
    assert!(w.take(CARRIER).is_empty());
    assert_eq!(w.raw.len(), 1);
    assert!(
        w.raw[0].starts_with("SIP/2.0 400 Bad Request\r\n"),
        "{}",
        w.raw[0]
    );
    assert!(w.raw[0].contains("Warning: 399") && w.raw[0].contains("CSeq"));
    // Garbage: nothing back.
    for junk in [
        "",
        "\u{0}\u{1}\u{2}",
        "HELLO\r\n\r\n",
        "INVITE\r\n\r\n",
        "SIP/2.0 200 OK\r\n\r\n",
    ] {
        let peer = Peer {
            proto: Proto::Udp,
            remote: sa(CARRIER),
            local: sa(US),
            conn: None,
        };
        w.core.on_message(w.now, w.wall, peer, junk.as_bytes());
    }
    w.collect();
    assert!(w.take(CARRIER).is_empty());
    assert_eq!(w.core.stats().malformed, 6);
}

#[test]
fn account_limits_refuse_with_distinct_codes() {
    let mut a = account(1, "carrier");
    a.max_sessions = Some(1);
    let mut w = World::new(
        vec![a],
        vec![rule(1, 1, Some("10.0.0.0/24"), true)],
        vec![connection(1, VENDOR1, 1)],
        vec![],
    );
    start_call(&mut w, "call-l1");
    w.from(CARRIER, &invite("call-l2", "z9hG4bK-l2", "", true));
    let msgs = w.take(CARRIER);
    assert_eq!(msgs[1].code(), Some(486));
    assert!(
        msgs[1]
            .get("Warning")
            .unwrap()
            .contains("account session limit")
    );
}

#[test]
fn operator_hangup_and_reload() {
    let mut w = ip_world();
    let inv = start_call(&mut w, "call-op");
    answer(&mut w, &inv);
    w.take(CARRIER);
    w.take(VENDOR1);
    let calls = w.core.call_infos();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].answered);
    assert_eq!(calls[0].call_id, "call-op");
    let id = calls[0].id;
    assert!(
        w.effects
            .iter()
            .any(|e| matches!(e, Effect::CallStarted(c) if c.id == id && c.call_id == "call-op")),
        "the call's start is announced"
    );
    assert_eq!(
        w.core
            .call_of("call-op")
            .map(|(k, s, c)| (k, s == Side::A, c)),
        Some((id, true, "call-op")),
        "the caller's Call-ID files messages under the call, on leg A"
    );
    let (now, wall) = (w.now, w.wall);
    assert!(w.core.hangup(now, wall, id, "alice"));
    assert!(!w.core.hangup(now, wall, id, "alice"), "only once");
    w.collect();
    assert_byes_both_ways(&mut w);
    assert_eq!(w.cdrs[0].reason, "hung up by operator");
    assert_eq!(w.cdrs[0].hung_up_by.as_deref(), Some("staff:alice"));
    assert!(
        w.effects.iter().any(|e| matches!(
            e,
            Effect::CallEnded { id: k, cause, hung_up_by }
                if *k == id && cause == "hung up by operator" && hung_up_by == "staff:alice"
        )),
        "the call's end is announced with who ended it"
    );

    // Reload without the connection: new calls have no route.
    w.core.reload(
        RuleSet::new(
            vec![account(1, "carrier")],
            vec![rule(1, 1, Some("10.0.0.0/24"), true)],
        )
        .unwrap(),
        vec![],
        vec![],
    );
    w.from(CARRIER, &invite("call-nr", "z9hG4bK-nr", "", true));
    assert_eq!(w.codes(CARRIER), vec![100, 404]);
}

/// A world whose only vendor is known by name; the core must ask the shell for it.
fn named_vendor_world() -> World {
    let mut named = connection(1, VENDOR1, 1);
    named.host = "vendor.example".into();
    World::new(
        vec![account(1, "carrier")],
        vec![rule(1, 1, Some("10.0.0.0/24"), true)],
        vec![named],
        vec![],
    )
}

fn resolves(w: &World) -> Vec<String> {
    w.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Resolve { host } => Some(host.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_call_waits_for_a_resolver_that_answers_late_then_completes() {
    let mut w = named_vendor_world();
    w.from(CARRIER, &invite("late-1", "z9hG4bK-late-1", "", true));
    assert_eq!(w.codes(CARRIER), vec![100]);
    assert_eq!(resolves(&w), vec!["vendor.example".to_owned()]);
    assert!(
        w.take(VENDOR1).is_empty(),
        "nothing upstream before the answer"
    );
    // A second call for the same name does not ask again; both wait.
    w.from(CARRIER, &invite("late-2", "z9hG4bK-late-2", "", true));
    assert_eq!(w.codes(CARRIER), vec![100]);
    assert_eq!(resolves(&w).len(), 1, "one question per name");

    // The resolver takes two seconds; signalling goes on meanwhile.
    w.advance(Duration::from_secs(2));
    assert!(w.take(CARRIER).is_empty());
    let (now, wall) = (w.now, w.wall);
    w.core.on_resolved(
        now,
        wall,
        "vendor.example",
        vec![sa(VENDOR1).ip()],
        Duration::from_secs(60),
    );
    w.collect();
    let invites: Vec<Msg> = w
        .take(VENDOR1)
        .into_iter()
        .filter(|m| m.method() == Some(&Method::Invite))
        .collect();
    assert_eq!(invites.len(), 2, "both waiting calls went upstream");
    answer(&mut w, &invites[0]);
    assert_eq!(w.codes(CARRIER), vec![200]);
    assert_eq!(w.core.active_calls(), 2);

    // The answer is kept for its TTL: a third call goes upstream at once.
    w.from(CARRIER, &invite("late-3", "z9hG4bK-late-3", "", true));
    assert!(
        w.take(VENDOR1)
            .iter()
            .any(|m| m.method() == Some(&Method::Invite))
    );
    assert_eq!(resolves(&w).len(), 1);
}

#[test]
fn a_name_that_does_not_resolve_fails_the_call_over_to_503() {
    let mut w = named_vendor_world();
    w.from(CARRIER, &invite("nx-1", "z9hG4bK-nx-1", "", true));
    assert_eq!(w.codes(CARRIER), vec![100]);
    let (now, wall) = (w.now, w.wall);
    w.core
        .on_resolved(now, wall, "vendor.example", vec![], Duration::from_secs(5));
    w.collect();
    assert_eq!(w.codes(CARRIER), vec![503]);
    assert_eq!(w.cdrs.len(), 1);
    assert_eq!(w.cdrs[0].reason, "no usable upstream");
}

#[test]
fn a_resolver_that_never_answers_fails_the_call_after_its_patience() {
    let mut w = named_vendor_world();
    w.from(CARRIER, &invite("lost-1", "z9hG4bK-lost-1", "", true));
    assert_eq!(w.codes(CARRIER), vec![100]);
    w.advance(outgoing::PATIENCE + Duration::from_secs(1));
    let mut codes = w.codes(CARRIER);
    codes.dedup(); // the 503 is retransmitted until the caller ACKs it
    assert_eq!(codes, vec![503]);
    assert_eq!(w.cdrs.len(), 1);
}

#[test]
fn a_call_cancelled_while_it_waits_for_a_name_is_not_sent_upstream_when_the_answer_comes() {
    let mut w = named_vendor_world();
    w.from(CARRIER, &invite("wait-c", "z9hG4bK-wait-c", "", true));
    assert_eq!(w.codes(CARRIER), vec![100]);
    w.from(CARRIER,
        "CANCEL sip:4420555@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-wait-c;rport\r\nMax-Forwards: 70\r\nFrom: \"Carrier\" <sip:1555000@10.0.0.1>;tag=ftag-wait-c\r\nTo: <sip:4420555@10.0.0.2>\r\nCall-ID: wait-c\r\nCSeq: 1 CANCEL\r\n\r\n");
    let mut codes = w.codes(CARRIER);
    codes.sort();
    assert_eq!(codes, vec![200, 487]);
    assert_eq!(w.cdrs.len(), 1);
    assert_eq!(w.cdrs[0].result_code, 487);
    let (now, wall) = (w.now, w.wall);
    w.core.on_resolved(
        now,
        wall,
        "vendor.example",
        vec![sa(VENDOR1).ip()],
        Duration::from_secs(60),
    );
    w.collect();
    assert!(w.take(VENDOR1).is_empty(), "a cancelled call goes nowhere");
    assert_eq!(w.core.active_calls(), 0);
}

#[test]
fn an_expired_name_is_used_while_it_is_asked_for_again() {
    let mut w = named_vendor_world();
    w.from(CARRIER, &invite("st-1", "z9hG4bK-st-1", "", true));
    let (now, wall) = (w.now, w.wall);
    w.core.on_resolved(
        now,
        wall,
        "vendor.example",
        vec![sa(VENDOR1).ip()],
        Duration::from_secs(2),
    );
    w.collect();
    w.advance(Duration::from_secs(3));
    w.effects.clear();
    w.take(VENDOR1);
    // The answer expired: the next call goes upstream at once and the name is asked again.
    w.from(CARRIER, &invite("st-2", "z9hG4bK-st-2", "", true));
    assert!(
        w.take(VENDOR1)
            .iter()
            .any(|m| m.method() == Some(&Method::Invite) && m.body.len() > 10)
    );
    assert_eq!(resolves(&w), vec!["vendor.example".to_owned()]);
}

#[test]
fn a_vendor_answer_whose_sdp_the_relay_refuses_is_hung_up_and_the_caller_refused() {
    let mut w = ip_world();
    let inv = start_call(&mut w, "refl-1");
    let reflecting = SDP_B.replace("c=IN IP4 10.0.1.1", "c=IN IP4 224.0.0.1");
    w.from(VENDOR1, &reply(&inv, 200, "vtag", Some(&reflecting)));
    let to_a = w.take(CARRIER);
    let refusal = to_a
        .iter()
        .find(|m| m.code().is_some_and(|c| c >= 200))
        .expect("a final answer to the caller");
    assert_eq!(refusal.code(), Some(488));
    assert!(
        refusal
            .get("Warning")
            .is_some_and(|w| w.contains("SDP refused")),
        "{refusal:?}"
    );
    assert!(
        refusal.body.is_empty(),
        "no SDP of the vendor's goes to the caller"
    );
    let to_v = w.take(VENDOR1);
    assert!(
        to_v.iter().any(|m| m.method() == Some(&Method::Ack)),
        "the 200 is ACKed"
    );
    assert!(
        to_v.iter().any(|m| m.method() == Some(&Method::Bye)),
        "and hung up"
    );
    assert_eq!(w.cdrs.len(), 1);
    assert_eq!(w.cdrs[0].result_code, 488);
    assert_eq!(w.core.active_calls(), 0);
    assert_eq!(w.core.stats().answered, 0);
}

/// A third party who learnt the Call-ID and both tags (10.0.0.66, on the carrier's network)
/// sends a BYE and a media-moving re-INVITE: both 403, counted, nothing reaches the vendor,
/// the call goes on; the caller's own BYE still ends it, and the vendor's from another port
/// of its host would too.
#[test]
fn in_dialog_requests_from_a_third_party_are_refused() {
    const STRANGER: &str = "10.0.0.66:5060";
    let mut w = ip_world();
    let inv = start_call(&mut w, "call-sniffed");
    answer(&mut w, &inv);
    let a_tag = w.take(CARRIER)[0].to().tag.unwrap();
    w.take(VENDOR1);
    let dialog = |method: &str, cseq: u32, via: &str| {
        format!(
            "{method} sip:sbc@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK-{method}{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:1555000@10.0.0.1>;tag=ftag-call-sniffed\r\nTo: <sip:4420555@10.0.0.2>;tag={a_tag}\r\nCall-ID: call-sniffed\r\nCSeq: {cseq} {method}\r\nContact: <sip:x@{via}>\r\n"
        )
    };
    w.from(STRANGER, &format!("{}\r\n", dialog("BYE", 5, STRANGER)));
    assert_eq!(w.codes(STRANGER), vec![403]);
    let reinvite = format!(
        "{}Content-Type: application/sdp\r\n\r\n{}",
        dialog("INVITE", 6, STRANGER),
        SDP_A.replace("10.0.0.1", "10.0.0.66")
    );
    w.from(STRANGER, &reinvite);
    assert_eq!(w.codes(STRANGER), vec![403]);
    w.from(STRANGER, &format!("{}\r\n", dialog("UPDATE", 7, STRANGER)));
    w.from(STRANGER, &format!("{}\r\n", dialog("INFO", 8, STRANGER)));
    assert_eq!(w.codes(STRANGER), vec![403, 403]);
    // The caller's port matters on UDP: another phone behind its NAT is another peer.
    w.from(
        "10.0.0.1:5099",
        &format!("{}\r\n", dialog("BYE", 9, "10.0.0.1:5099")),
    );
    assert_eq!(w.codes("10.0.0.1:5099"), vec![403]);
    assert!(w.take(VENDOR1).is_empty(), "nothing relayed to the vendor");
    assert_eq!(w.core.active_calls(), 1, "the call goes on");
    assert!(w.cdrs.is_empty(), "no CDR: the call has not ended");
    assert_eq!(w.core.stats().in_dialog_refused, 5);

    w.from(CARRIER, &format!("{}\r\n", dialog("BYE", 10, CARRIER)));
    assert_eq!(w.codes(CARRIER), vec![200]);
    assert_eq!(w.core.active_calls(), 0);
    assert_eq!(w.cdrs.len(), 1);
}

#[test]
fn contact_addresses_and_the_vendors_other_ports() {
    assert_eq!(
        super::dialog::contact_addr_for_tests("sip:u@10.0.0.5:5070;transport=udp"),
        Some(sa("10.0.0.5:5070"))
    );
    assert_eq!(
        super::dialog::contact_addr_for_tests("sip:10.0.0.5"),
        Some(sa("10.0.0.5:5060"))
    );
    assert_eq!(
        super::dialog::contact_addr_for_tests("sip:u@[2001:db8::1]:5062"),
        Some("[2001:db8::1]:5062".parse().unwrap())
    );
    assert_eq!(
        super::dialog::contact_addr_for_tests("sip:u@host.example"),
        None
    );

    let mut w = ip_world();
    let inv = start_call(&mut w, "call-vendor-bye");
    answer(&mut w, &inv);
    w.take(CARRIER);
    w.take(VENDOR1);
    let b_from = inv.from();
    let bye = format!(
        "BYE sip:sbc@10.0.0.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.1.1:5080;branch=z9hG4bK-vb\r\nMax-Forwards: 70\r\nFrom: <sip:4420555@10.0.1.1>;tag=vtag\r\nTo: <{}>;tag={}\r\nCall-ID: {}\r\nCSeq: 1 BYE\r\n\r\n",
        b_from.uri,
        b_from.tag.unwrap_or_default(),
        inv.call_id()
    );
    w.from("10.0.1.1:5080", &bye);
    assert_eq!(w.codes("10.0.1.1:5080"), vec![200]);
    assert_eq!(w.core.active_calls(), 0);
}
#[path = "tests_adopt.rs"]
mod adopt;
#[path = "tests_ids.rs"]
mod ids_and_amplification;
#[path = "tests_ipv6.rs"]
mod ipv6;
#[path = "tests_tls_rule.rs"]
mod tls_client_rule;
#[path = "tests_torture.rs"]
mod torture;
