//! Snapshot tests of every console screen (insta, ratatui's TestBackend) at 80×24 and
//! 120×40 from fixed data, with their empty, error and disconnected states; key handling
//! through the app; a resize to 20×5.

use std::collections::BTreeMap;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use tui::console::App;
use tui::console::action::{
    CdrQuery, Failure, Link, Reply, Request, ScreenId, StaffCreated, Update,
};
use tui::console::clock::FixedClock;
use tui::console::model::*;
use tui::console::source::fake::FakeSource;

/// 2025-12-06 08:00:00 UTC.
const NOW: u64 = 1_765_008_000_000;

fn status() -> Status {
    Status {
        started_ms: NOW - 86_400_000,
        uptime_secs: 86_400,
        active_calls: 5,
        dataplane: "xdp-native".into(),
        dataplane_reason: "driver mode on eth0".into(),
        bans: 4,
        cdr_queue: WriterStats {
            depth: 3,
            capacity: 4096,
            written: 18_234,
            blocked: 0,
            dropped: 0,
        },
        coverage: vec![
            Covered {
                service: "sip".into(),
                address: "192.0.2.10".into(),
                plane: "xdp".into(),
                uncovered: vec![],
            },
            Covered {
                service: "management".into(),
                address: "192.0.2.10".into(),
                plane: "userspace".into(),
                uncovered: vec![],
            },
            Covered {
                service: "ssh".into(),
                address: "10.0.0.5".into(),
                plane: "none".into(),
                uncovered: vec!["eth1".into()],
            },
        ],
    }
}

fn counters(i: u64) -> Counters {
    let wave = |p: u64, a: f64| ((i * 7 + p) % 23) as f64 * a;
    let mut drops = BTreeMap::new();
    drops.insert("ban".into(), wave(1, 3.0));
    drops.insert("invite_rate".into(), wave(5, 0.5));
    drops.insert("malformed".into(), 0.0);
    drops.insert("packet_rate".into(), wave(9, 10.0));
    Counters {
        at_ms: NOW - 120_000 + i * 1000,
        calls_active: 5,
        calls_capacity: 1000,
        invites_per_sec: wave(0, 0.5),
        sip_packets_per_sec: 40.0 + wave(3, 4.0),
        relayed_kernel_pps: 250.0 + wave(7, 10.0),
        relayed_user_pps: wave(11, 1.0),
        drops_per_sec: drops,
    }
}

/// `lost`: the caller's direction; the vendor's loses a third of it (the daemon reports
/// `lost` and `expected` per direction).
fn media(out: u64, back: u64, lost: Option<u64>, last_ms: u64) -> CallMedia {
    let dir = |packets: u64, lost: Option<u64>| MediaDirection {
        packets,
        bytes: packets * 172,
        lost,
        expected: lost.map(|l| packets + l),
        last_seen_ms: Some(last_ms),
        plane: Some("kernel".into()),
    };
    CallMedia {
        caller_to_vendor: dir(out, lost),
        vendor_to_caller: dir(back, lost.map(|l| l / 3)),
        plane: Some("kernel".into()),
    }
}

fn calls() -> Vec<Call> {
    (1..=5u64)
        .map(|i| Call {
            id: 100 + i,
            call_id: format!("a84b4c76e66710-{i}@192.0.2.{i}"),
            account_id: 1 + i % 2,
            cli: format!("4420794600{i:02}"),
            cld: format!("3314422{i:04}"),
            source: format!("198.51.100.{i}:5060"),
            connection_id: (i != 3).then_some(7),
            answered: i != 3,
            started_ms: NOW - i * 61_000,
            answered_ms: (i != 3).then_some(NOW - i * 61_000 + 4_000),
            // 1: media flowing (with loss reported); 2: media stopped 12 s ago (marked);
            // 3 (ringing) and 5: no media anchored.
            media: match i {
                1 => Some(media(2_950, 2_941, Some(9), NOW - 20)),
                2 => Some(media(6_000, 5_990, None, NOW - 12_000)),
                4 => Some(media(11_000, 10_990, None, NOW - 400)),
                _ => None,
            },
        })
        .collect()
}

fn msg(at: u64, dir: &str, leg: &str, first: &str, sdp: bool) -> Message {
    let (from, to) = match (leg, dir) {
        ("caller", "in") => ("198.51.100.1:5060", "192.0.2.10:5060"),
        ("caller", _) => ("192.0.2.10:5060", "198.51.100.1:5060"),
        (_, "in") => ("203.0.113.9:5060", "192.0.2.10:5060"),
        _ => ("192.0.2.10:5060", "203.0.113.9:5060"),
    };
    let mut raw = format!(
        "{first}\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK776asdhds\r\nCall-ID: a84b4c76e66710-1@192.0.2.1\r\nCSeq: 1 INVITE\r\n"
    );
    if sdp {
        raw.push_str("Content-Type: application/sdp\r\n\r\nv=0\r\nc=IN IP4 192.0.2.10\r\nm=audio 40000 RTP/AVP 0 8\r\n");
    } else {
        raw.push_str("Content-Length: 0\r\n");
    }
    Message {
        at_ms: NOW - 60_000 + at,
        dir: dir.into(),
        leg: leg.into(),
        from: from.into(),
        to: to.into(),
        transport: "udp".into(),
        first_line: first.into(),
        raw,
    }
}

fn messages() -> CallMessages {
    CallMessages {
        id: 101,
        call_id: "a84b4c76e66710@pc33.example.com".into(),
        messages: vec![
            msg(
                0,
                "in",
                "caller",
                "INVITE sip:33144220001@192.0.2.10 SIP/2.0",
                true,
            ),
            msg(2, "out", "caller", "SIP/2.0 100 Trying", false),
            msg(
                5,
                "out",
                "vendor",
                "INVITE sip:33144220001@203.0.113.9 SIP/2.0",
                true,
            ),
            msg(31, "in", "vendor", "SIP/2.0 100 Trying", false),
            msg(1_820, "in", "vendor", "SIP/2.0 180 Ringing", false),
            msg(1_822, "out", "caller", "SIP/2.0 180 Ringing", false),
            msg(4_010, "in", "vendor", "SIP/2.0 200 OK", true),
            msg(4_012, "out", "caller", "SIP/2.0 200 OK", true),
            msg(
                4_090,
                "in",
                "caller",
                "ACK sip:33144220001@192.0.2.10 SIP/2.0",
                false,
            ),
            msg(
                4_092,
                "out",
                "vendor",
                "ACK sip:33144220001@203.0.113.9 SIP/2.0",
                false,
            ),
        ],
        ..CallMessages::default()
    }
}

fn bans() -> Vec<Ban> {
    vec![
        Ban {
            prefix: "198.51.100.66/32".into(),
            reason: "scanner".into(),
            by: "ids".into(),
            expires_ms: Some(NOW + 3_540_000),
            remaining_secs: Some(3540),
            rule: "scanner".into(),
            evidence: Some(serde_json::json!({
                "offence": "scanner", "count": 1, "window_secs": 0,
                "evidence": "1 request with a scanner's User-Agent"
            })),
            hits: 412,
            first_seen_ms: NOW - 60_000,
            last_seen_ms: NOW - 5_000,
            ..Ban::default()
        },
        Ban {
            prefix: "203.0.113.0/24".into(),
            reason: "brute-force".into(),
            by: "ids".into(),
            expires_ms: Some(NOW + 600_000),
            remaining_secs: Some(600),
            rule: "range:brute-force".into(),
            evidence: Some(serde_json::json!({
                "offence": "brute-force",
                "evidence": "5 banned prefixes inside 203.0.113.0/24 within 600s"
            })),
            first_seen_ms: NOW - 300_000,
            last_seen_ms: NOW - 300_000,
            ..Ban::default()
        },
        Ban {
            prefix: "192.0.2.200/32".into(),
            reason: "manual".into(),
            by: "staff".into(),
            expires_ms: None,
            note: Some("fraud ticket 4411".into()),
            persistent: true,
            rule: "staff:alice".into(),
            first_seen_ms: NOW - 7_200_000,
            last_seen_ms: NOW - 7_200_000,
            ..Ban::default()
        },
        Ban {
            prefix: "2001:db8:1:2::/64".into(),
            reason: "flood".into(),
            by: "ids".into(),
            expires_ms: Some(NOW + 86_400_000),
            remaining_secs: Some(86_400),
            rule: "flood".into(),
            evidence: Some(serde_json::json!({
                "offence": "flood", "count": 3, "window_secs": 600,
                "evidence": "3 kernel rate-limit reports"
            })),
            hits: 7,
            first_seen_ms: NOW - 86_000_000,
            last_seen_ms: NOW - 20_000,
            ..Ban::default()
        },
    ]
}

fn never_bans() -> Vec<NeverBan> {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        NeverBan {
            prefix: "203.0.113.5/32".into(),
            source: "ip_only_rule".into(),
            name: "3/trunk".into(),
            spared: v(&[
                "brute-force",
                "enumeration",
                "dialog-probe",
                "flood",
                "range",
            ]),
            still_banned_for: v(&["scanner"]),
        },
        NeverBan {
            prefix: "sip.vendor.example".into(),
            source: "upstream".into(),
            name: "vendor-a".into(),
            spared: v(&["dialog-probe", "flood", "range"]),
            still_banned_for: v(&["scanner", "brute-force", "enumeration"]),
        },
    ]
}

fn alerts() -> Vec<Alert> {
    vec![
        Alert {
            id: "ssh_open_to_all".into(),
            code: "ssh_open_to_all".into(),
            severity: "warning".into(),
            message: "ssh allows 0.0.0.0/0".into(),
            ..Alert::default()
        },
        Alert {
            id: "ban_table_full".into(),
            code: "ban_table_full".into(),
            severity: "critical".into(),
            message: "the ban table was full in the last hour".into(),
            acked_by: Some("bob".into()),
            acked_ms: Some(NOW - 120_000),
        },
    ]
}

fn audit() -> Vec<AuditEntry> {
    let e = |id: u64,
             actor: Option<&str>,
             kind: &str,
             target: &str,
             result: &str,
             reason: Option<&str>| AuditEntry {
        id,
        ts_ms: NOW - (10 - id) * 95_000,
        actor: actor.map(Into::into),
        source: Some("10.0.0.7".into()),
        kind: kind.into(),
        target: Some(target.into()),
        result: result.into(),
        reason: reason.map(Into::into),
    };
    vec![
        e(1, Some("alice"), "login", "staff:alice", "success", None),
        e(
            2,
            Some("mallory"),
            "login",
            "staff:mallory",
            "failure",
            Some("bad password"),
        ),
        e(
            3,
            Some("alice"),
            "create",
            "ban:192.0.2.200/32",
            "success",
            Some("fraud ticket 4411"),
        ),
        e(
            4,
            Some("alice"),
            "delete",
            "call:99",
            "success",
            Some("hung up by staff"),
        ),
        e(
            5,
            None,
            "update",
            "certificate:/var/lib/sipd/mgmt-tls.crt",
            "success",
            None,
        ),
    ]
}

fn firewall() -> FirewallView {
    FirewallView {
        services: vec![
            ServiceView {
                service: "sip".into(),
                port: 5060,
                proto: "udp".into(),
                restricted: false,
                allow: vec![],
            },
            ServiceView {
                service: "management".into(),
                port: 8443,
                proto: "tcp".into(),
                restricted: true,
                allow: vec!["10.0.0.0/8".into()],
            },
            ServiceView {
                service: "ssh".into(),
                port: 22,
                proto: "tcp".into(),
                restricted: true,
                allow: vec!["10.0.0.0/8".into(), "0.0.0.0/0".into()],
            },
        ],
        deny: vec![
            DenyEntry {
                cidr: "203.0.113.0/24".into(),
                id: Some(3),
                origin: "api".into(),
            },
            DenyEntry {
                cidr: "198.18.0.0/15".into(),
                id: None,
                origin: "config".into(),
            },
        ],
        allow_entries: vec![
            AllowEntry {
                service: "management".into(),
                cidr: "10.0.0.0/8".into(),
                origin: "config".into(),
            },
            AllowEntry {
                service: "ssh".into(),
                cidr: "10.0.0.0/8".into(),
                origin: "config".into(),
            },
            AllowEntry {
                service: "ssh".into(),
                cidr: "0.0.0.0/0".into(),
                origin: "api".into(),
            },
        ],
    }
}

fn accounts() -> (Vec<Account>, Vec<Connection>) {
    (
        vec![
            Account {
                id: 1,
                name: "acme".into(),
                enabled: true,
                tariff: Some("uk-retail".into()),
                balance: "120.50".into(),
                cps_limit: Some(10),
                max_sessions: Some(100),
            },
            Account {
                id: 2,
                name: "globex".into(),
                enabled: true,
                tariff: None,
                balance: "-3.20".into(),
                cps_limit: None,
                max_sessions: Some(3),
            },
            Account {
                id: 3,
                name: "initech".into(),
                enabled: false,
                tariff: Some("wholesale".into()),
                balance: "0.00".into(),
                cps_limit: Some(1),
                max_sessions: None,
            },
        ],
        vec![
            Connection {
                id: 7,
                name: "vendor-a".into(),
                enabled: true,
                destination: "203.0.113.9:5060".into(),
                max_channels: Some(30),
                cps_limit: Some(5),
            },
            Connection {
                id: 8,
                name: "vendor-b".into(),
                enabled: true,
                destination: "198.51.100.200:5060".into(),
                max_channels: None,
                cps_limit: None,
            },
        ],
    )
}

fn cdrs() -> Vec<Cdr> {
    (1..=6u64)
        .map(|i| Cdr {
            id: 500 + i,
            call_id: format!("c{i}"),
            start_ms: NOW - (7 - i) * 300_000,
            answer_ms: (i % 3 != 0).then_some(NOW - (7 - i) * 300_000 + 3000),
            end_ms: NOW - (7 - i) * 300_000 + 90_000,
            caller: format!("4420794600{i:02}"),
            callee: format!("3314422{i:04}"),
            source: Some(format!("198.51.100.{i}:5060")),
            account_id: Some(1 + i % 2),
            connection_id: Some(7),
            result_code: if i % 3 == 0 { 486 } else { 200 },
            reason: if i % 3 == 0 {
                "busy".into()
            } else {
                "caller hung up".into()
            },
            duration_secs: if i % 3 == 0 { 0 } else { 87 },
            cost: if i % 3 == 0 {
                "0.00".into()
            } else {
                "0.03".into()
            },
        })
        .collect()
}

fn staff() -> Vec<StaffMember> {
    vec![
        StaffMember {
            id: 1,
            username: "alice".into(),
            role: "admin".into(),
            enabled: true,
            totp: "enrolled".into(),
            allowed_hosts: vec!["10.0.0.0/8".into()],
            must_change_password: false,
        },
        StaffMember {
            id: 2,
            username: "bob".into(),
            role: "operator".into(),
            enabled: true,
            totp: "pending".into(),
            allowed_hosts: vec![],
            must_change_password: true,
        },
        StaffMember {
            id: 3,
            username: "carol".into(),
            role: "read-only".into(),
            enabled: false,
            totp: "none".into(),
            allowed_hosts: vec![],
            must_change_password: false,
        },
    ]
}

/// Answers every request from the fixtures.
fn full(req: &Request) -> Result<Reply, Failure> {
    Ok(match req {
        Request::Login { .. } => Reply::LoggedIn(LoginOk {
            token: "t".into(),
            expires_ms: NOW + 3_600_000,
            role: "operator".into(),
            setup_only: false,
        }),
        Request::Me => Reply::Me(Me {
            username: "alice".into(),
            role: "admin".into(),
        }),
        Request::Status => Reply::Status(status()),
        Request::Calls => Reply::Calls(calls()),
        Request::Messages(101) => Reply::Messages(messages()),
        Request::Messages(id) => Reply::Messages(CallMessages {
            id: *id,
            ..CallMessages::default()
        }),
        Request::Bans => Reply::Bans(bans()),
        Request::NeverBans => Reply::NeverBans(never_bans()),
        Request::Alerts => Reply::Alerts(alerts()),
        Request::Audit { .. } => Reply::Audit(audit()),
        Request::Firewall => Reply::Firewall(firewall()),
        Request::Accounts => {
            let (a, c) = accounts();
            Reply::Accounts(a, c)
        }
        // The daemon's filters, roughly: account and result.
        Request::Cdrs(q) => Reply::Cdrs(
            cdrs()
                .into_iter()
                .filter(|c| q.account.is_none_or(|a| c.account_id == Some(a)))
                .filter(|c| match q.result.as_deref() {
                    Some("answered") => c.answer_ms.is_some(),
                    Some("failed") => c.answer_ms.is_none(),
                    _ => true,
                })
                .collect(),
        ),
        Request::Staff => Reply::Staff(staff()),
        Request::StaffCreate { username, role, .. } => Reply::StaffCreated(StaffCreated {
            username: username.clone(),
            role: role.clone(),
            password: Some("Kq7m-x2Pa-9dLe-Vt4r-Hn8s-Zc3w".into()),
            strength: "4/4".into(),
        }),
        Request::StaffUpdate { .. }
        | Request::StaffRevoke { .. }
        | Request::StaffTotpReset { .. }
        | Request::Hangup(_)
        | Request::Ban { .. }
        | Request::Unban(_)
        | Request::AckAlert(_)
        | Request::AllowAdd { .. }
        | Request::AllowRemove { .. }
        | Request::DenyAdd(_)
        | Request::DenyRemove(_) => Reply::Done,
    })
}

/// Answers with empty lists and a bare status.
fn empty(req: &Request) -> Result<Reply, Failure> {
    Ok(match req {
        Request::Status => Reply::Status(Status {
            dataplane: "userspace".into(),
            dataplane_reason: "no XDP support on lo".into(),
            ..Status::default()
        }),
        Request::Calls => Reply::Calls(vec![]),
        Request::Bans => Reply::Bans(vec![]),
        Request::NeverBans => Reply::NeverBans(vec![]),
        Request::Alerts => Reply::Alerts(vec![]),
        Request::Audit { .. } => Reply::Audit(vec![]),
        Request::Firewall => Reply::Firewall(FirewallView::default()),
        Request::Accounts => Reply::Accounts(vec![], vec![]),
        Request::Cdrs(_) => Reply::Cdrs(vec![]),
        Request::Staff => Reply::Staff(vec![]),
        other => return full(other),
    })
}

type TestApp = App<FakeSource, FixedClock>;

fn app(answer: fn(&Request) -> Result<Reply, Failure>, link: Link) -> TestApp {
    let mut src = FakeSource::new(answer);
    src.push(Update::Link(link));
    if std::ptr::fn_addr_eq(answer, full as fn(&Request) -> Result<Reply, Failure>) {
        for i in 0..120 {
            src.push(Update::Event(StreamEvent::Counters(counters(i))));
        }
    }
    let mut a = App::new(
        src,
        FixedClock::new(NOW),
        "https://192.0.2.10:8443",
        true,
        None,
    );
    a.tick();
    a
}

fn failing_app() -> TestApp {
    let mut src = FakeSource::failing("https://192.0.2.10:8443: Connection refused (os error 111)");
    src.push(Update::Link(Link::Disconnected(
        "Connection refused (os error 111)".into(),
    )));
    let mut a = App::new(
        src,
        FixedClock::new(NOW),
        "https://192.0.2.10:8443",
        true,
        None,
    );
    a.tick();
    a
}

fn key(a: &mut TestApp, c: KeyCode) {
    a.handle_key(KeyEvent::new(c, KeyModifiers::NONE));
    a.tick();
}

fn keys(a: &mut TestApp, s: &str) {
    for c in s.chars() {
        key(a, KeyCode::Char(c));
    }
}

/// Draws without reading the screen back (the TestBackend cannot print a 0-wide buffer).
fn draw_only(a: &mut TestApp, w: u16, h: u16) {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| a.draw(f)).unwrap();
}

fn render(a: &mut TestApp, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| a.draw(f)).unwrap();
    t.backend().to_string()
}

/// Snapshots the app at both sizes.
macro_rules! shots {
    ($name:literal, $app:expr) => {{
        let mut a = $app;
        insta::assert_snapshot!(concat!($name, "_80x24"), render(&mut a, 80, 24));
        insta::assert_snapshot!(concat!($name, "_120x40"), render(&mut a, 120, 40));
    }};
}

/// [`shots!`] of an app the test goes on with.
macro_rules! shots_mut {
    ($name:literal, $app:expr) => {{
        let a: &mut TestApp = $app;
        insta::assert_snapshot!(concat!($name, "_80x24"), render(a, 80, 24));
        insta::assert_snapshot!(concat!($name, "_120x40"), render(a, 120, 40));
    }};
}

fn on(mut a: TestApp, screen: char) -> TestApp {
    keys(&mut a, &screen.to_string());
    a
}

#[test]
fn dashboard() {
    shots!("dashboard", app(full, Link::Connected));
    shots!("dashboard_empty", app(empty, Link::Connected));
    shots!("dashboard_disconnected", failing_app());
}

#[test]
fn calls_screen() {
    shots!("calls", on(app(full, Link::Connected), '2'));
    shots!("calls_empty", on(app(empty, Link::Connected), '2'));
    shots!("calls_error", on(failing_app(), '2'));
    let mut a = on(app(full, Link::Connected), '2');
    keys(&mut a, "/44207946000[12]");
    shots!("calls_filter_typing", a);
    let mut a = on(app(full, Link::Connected), '2');
    keys(&mut a, "jK");
    shots!("calls_confirm_hangup", a);
}

#[test]
fn ladder() {
    let mut a = on(app(full, Link::Connected), '2');
    keys(&mut a, "G");
    key(&mut a, KeyCode::Enter);
    assert!(a.source().sent.contains(&Request::Messages(101)));
    keys(&mut a, "jjjjjj");
    shots!("ladder", a);
    let mut a = on(app(full, Link::Connected), '2');
    keys(&mut a, "g");
    key(&mut a, KeyCode::Enter);
    shots!("ladder_empty", a);
    // `q` backs out of the ladder as in sngrep; on the list it quits.
    let mut a = on(app(full, Link::Connected), '2');
    key(&mut a, KeyCode::Enter);
    assert!(a.calls.ladder.is_some());
    keys(&mut a, "q");
    assert!(a.calls.ladder.is_none() && !a.should_quit());
    keys(&mut a, "q");
    assert!(a.should_quit());
}

#[test]
fn bans_screen() {
    shots!("bans", on(app(full, Link::Connected), '3'));
    shots!("bans_empty", on(app(empty, Link::Connected), '3'));
    shots!("bans_error", on(failing_app(), '3'));
    let mut a = on(app(full, Link::Connected), '3');
    keys(&mut a, "b192.0.2.7/24");
    key(&mut a, KeyCode::Enter);
    keys(&mut a, "2h");
    key(&mut a, KeyCode::Enter);
    key(&mut a, KeyCode::Enter);
    shots!("bans_form_error", a);
    // `n`: the sources the IDS spares, asked for when shown; `n` again: back to the bans.
    let mut a = on(app(full, Link::Connected), '3');
    keys(&mut a, "n");
    assert!(a.source().sent.contains(&Request::NeverBans));
    keys(&mut a, "u");
    assert!(
        a.confirm.is_none(),
        "nothing to unban in the never-ban list"
    );
    shots!("bans_never", a);
    let mut a = on(app(full, Link::Connected), '3');
    keys(&mut a, "nn");
    shots!("bans", a);
    shots!("bans_never_empty", {
        let mut a = on(app(empty, Link::Connected), '3');
        keys(&mut a, "n");
        a
    });
}

#[test]
fn audit_screen() {
    shots!("audit", on(app(full, Link::Connected), '7'));
    shots!("audit_empty", on(app(empty, Link::Connected), '7'));
    shots!("audit_error", on(failing_app(), '7'));
}

#[test]
fn alerts_screen() {
    let mut a = on(app(full, Link::Connected), '8');
    keys(&mut a, "ja");
    // Acknowledged on the daemon, which the list is then read again from.
    let sent = &a.source().sent;
    let i = sent
        .iter()
        .position(|r| *r == Request::AckAlert("ssh_open_to_all".into()))
        .expect("the ack is sent");
    assert!(sent[i + 1..].contains(&Request::Alerts), "{sent:?}");
    shots!("alerts", a);
    shots!("alerts_empty", on(app(empty, Link::Connected), '8'));
}

#[test]
fn firewall_screen() {
    shots!("firewall", on(app(full, Link::Connected), '4'));
    shots!("firewall_empty", on(app(empty, Link::Connected), '4'));
    shots!("firewall_error", on(failing_app(), '4'));
    let mut a = on(app(full, Link::Connected), '4');
    keys(&mut a, "jjjx");
    shots!("firewall_remove_diff", a);
    let mut a = on(app(full, Link::Connected), '4');
    // The selected row's service is filled in; the prefix has the keys.
    keys(&mut a, "a192.0.2.0/24");
    key(&mut a, KeyCode::Enter);
    assert!(
        a.confirm
            .as_ref()
            .is_some_and(|(p, _)| p.contains("+ allow sip 192.0.2.0/24")),
        "{:?}",
        a.confirm
    );
    keys(&mut a, "y");
    assert!(a.source().sent.contains(&Request::AllowAdd {
        service: "sip".into(),
        cidr: "192.0.2.0/24".into()
    }));
}

#[test]
fn accounts_cdrs_staff_screens() {
    shots!("accounts", on(app(full, Link::Connected), '5'));
    shots!("accounts_empty", on(app(empty, Link::Connected), '5'));
    shots!("cdrs", on(app(full, Link::Connected), '6'));
    shots!("cdrs_empty", on(app(empty, Link::Connected), '6'));
    shots!("cdrs_error", on(failing_app(), '6'));
    shots!("staff", on(app(full, Link::Connected), '9'));
    shots!("staff_empty", on(app(empty, Link::Connected), '9'));
}

/// CDR filters: `t` and `o` ask the daemon again at once; `F` opens the form, whose
/// filters go to the daemon as query parameters and show in the title.
#[test]
fn cdr_filters() {
    let mut a = on(app(full, Link::Connected), '6');
    assert!(
        a.source()
            .sent
            .contains(&Request::Cdrs(CdrQuery::default()))
    );
    keys(&mut a, "to");
    let want = CdrQuery {
        window_secs: Some(86_400),
        result: Some("answered".into()),
        ..CdrQuery::default()
    };
    assert_eq!(a.source().sent.last(), Some(&Request::Cdrs(want)));
    let mut a = on(app(full, Link::Connected), '6');
    // The accounts are known once screen 5 was open: a name is looked up.
    keys(&mut a, "56F");
    keys(&mut a, "acme");
    key(&mut a, KeyCode::Tab);
    keys(&mut a, "failed");
    key(&mut a, KeyCode::Tab);
    for _ in 0..2 {
        key(&mut a, KeyCode::Backspace);
    }
    keys(&mut a, "7d");
    key(&mut a, KeyCode::Tab);
    shots!("cdrs_filter_form", a);
    let mut a = on(app(full, Link::Connected), '6');
    keys(&mut a, "56F");
    keys(&mut a, "acme");
    key(&mut a, KeyCode::Tab);
    keys(&mut a, "failed");
    key(&mut a, KeyCode::Tab);
    key(&mut a, KeyCode::Tab);
    key(&mut a, KeyCode::Enter);
    let want = CdrQuery {
        account: Some(1),
        result: Some("failed".into()),
        ..CdrQuery::default()
    };
    assert_eq!(a.source().sent.last(), Some(&Request::Cdrs(want)));
    shots!("cdrs_filtered", a);
    let mut a = on(app(full, Link::Connected), '6');
    keys(&mut a, "F");
    key(&mut a, KeyCode::Tab);
    keys(&mut a, "busy");
    key(&mut a, KeyCode::Tab);
    key(&mut a, KeyCode::Tab);
    key(&mut a, KeyCode::Enter);
    shots!("cdrs_filter_error", a);
    let mut a = on(app(full, Link::Connected), '6');
    keys(&mut a, "?");
    shots!("help_cdrs", a);
}

/// Audit filters (user, action, text) in follow mode: new entries from the stream are
/// filtered too.
#[test]
fn audit_filters() {
    let mut a = on(app(full, Link::Connected), '7');
    keys(&mut a, "F");
    keys(&mut a, "alice");
    key(&mut a, KeyCode::Tab);
    keys(&mut a, "delete");
    shots_mut!("audit_filter_form", &mut a);
    key(&mut a, KeyCode::Tab);
    key(&mut a, KeyCode::Enter);
    a.source()
        .push(Update::Event(StreamEvent::Audit(AuditEntry {
            id: 9,
            ts_ms: NOW - 1000,
            actor: Some("alice".into()),
            kind: "delete".into(),
            target: Some("call:120".into()),
            result: "success".into(),
            ..AuditEntry::default()
        })));
    a.source()
        .push(Update::Event(StreamEvent::Audit(AuditEntry {
            id: 10,
            ts_ms: NOW - 500,
            actor: Some("bob".into()),
            kind: "delete".into(),
            target: Some("call:121".into()),
            result: "success".into(),
            ..AuditEntry::default()
        })));
    a.tick();
    shots!("audit_filtered_following", a);
}

/// Staff changes for admins: a new user (the first password the console made, shown once),
/// a role, disable, revoke and TOTP reset, each asked first.
#[test]
fn staff_changes() {
    let mut a = on(app(full, Link::Connected), '9');
    keys(&mut a, "n");
    keys(&mut a, "dave");
    key(&mut a, KeyCode::Tab);
    for _ in 0.."operator".len() {
        key(&mut a, KeyCode::Backspace);
    }
    keys(&mut a, "admin");
    shots_mut!("staff_new_form", &mut a);
    key(&mut a, KeyCode::Tab);
    key(&mut a, KeyCode::Tab);
    keys(&mut a, "10.0.0.0/8");
    key(&mut a, KeyCode::Enter);
    shots_mut!("staff_new_confirm", &mut a);
    keys(&mut a, "y");
    assert!(a.source().sent.contains(&Request::StaffCreate {
        username: "dave".into(),
        role: "admin".into(),
        password: None,
        allowed_hosts: vec!["10.0.0.0/8".into()],
    }));
    assert_eq!(a.source().sent.last(), Some(&Request::Staff));
    shots_mut!("staff_created", &mut a);
    keys(&mut a, "x");
    assert!(a.info.is_none(), "any key closes it");
    // The second user: TOTP reset asks first, `n` cancels, `y` sends.
    keys(&mut a, "jT");
    shots_mut!("staff_confirm_totp_reset", &mut a);
    keys(&mut a, "n");
    keys(&mut a, "Ty");
    let sent = &a.source().sent;
    assert!(
        sent.iter()
            .any(|r| matches!(r, Request::StaffTotpReset { .. })),
        "{sent:?}"
    );
    keys(&mut a, "Dy");
    assert!(a.source().sent.iter().any(|r| matches!(
        r,
        Request::StaffUpdate {
            enabled: Some(_),
            ..
        }
    )));
    keys(&mut a, "Vy");
    assert!(
        a.source()
            .sent
            .iter()
            .any(|r| matches!(r, Request::StaffRevoke { .. }))
    );
    keys(&mut a, "?");
    shots!("help_staff", a);
}

/// An operator sees the staff keys greyed and is told so.
#[test]
fn an_operator_cannot_change_staff() {
    let mut src = FakeSource::new(|r| match r {
        Request::Me => Ok(Reply::Me(Me {
            username: "bob".into(),
            role: "operator".into(),
        })),
        other => full(other),
    });
    src.push(Update::Link(Link::Connected));
    let mut a = App::new(src, FixedClock::new(NOW), "https://h", true, None);
    a.tick();
    keys(&mut a, "9n");
    assert_eq!(
        a.notice.as_deref(),
        Some("new: not allowed for your role (operator)")
    );
    keys(&mut a, "T");
    assert!(a.confirm.is_none());
}

#[test]
fn an_operator_cannot_change_the_firewall() {
    let mut src = FakeSource::new(|r| match r {
        Request::Me => Ok(Reply::Me(Me {
            username: "bob".into(),
            role: "operator".into(),
        })),
        other => full(other),
    });
    src.push(Update::Link(Link::Connected));
    let mut a = App::new(src, FixedClock::new(NOW), "https://h", true, None);
    a.tick();
    keys(&mut a, "4a");
    assert!(
        a.notice
            .as_deref()
            .is_some_and(|n| n.contains("not allowed")),
        "{:?}",
        a.notice
    );
    insta::assert_snapshot!("firewall_operator_80x24", render(&mut a, 80, 24));
    insta::assert_snapshot!("firewall_operator_120x40", render(&mut a, 120, 40));
}

#[test]
fn login_and_help() {
    let mut a = App::new(
        FakeSource::new(full),
        FixedClock::new(NOW),
        "https://192.0.2.10:8443",
        false,
        Some("alice"),
    );
    keys(&mut a, "secret");
    key(&mut a, KeyCode::Tab);
    keys(&mut a, "123456");
    shots!("login", a);
    let mut a = app(full, Link::Connected);
    keys(&mut a, "2?");
    shots!("help_calls", a);
}

#[test]
fn login_sends_password_and_totp_then_loads_the_dashboard() {
    let mut a = App::new(
        FakeSource::new(full),
        FixedClock::new(NOW),
        "https://h",
        false,
        None,
    );
    keys(&mut a, "alice");
    key(&mut a, KeyCode::Tab);
    keys(&mut a, "pw");
    key(&mut a, KeyCode::Tab);
    keys(&mut a, "654321");
    key(&mut a, KeyCode::Enter);
    assert!(a.login.is_none(), "logged in");
    let sent = &a.source().sent;
    assert_eq!(
        sent[0],
        Request::Login {
            username: "alice".into(),
            password: "pw".into(),
            totp: Some("654321".into())
        }
    );
    assert!(sent.contains(&Request::Status), "{sent:?}");
    assert_eq!(a.data.role.as_deref(), Some("operator"));
}

#[test]
fn a_401_brings_the_login_back() {
    let mut a = App::new(
        FakeSource::new(|_| {
            Err(Failure {
                status: Some(401),
                message: "not authenticated".into(),
            })
        }),
        FixedClock::new(NOW),
        "https://h",
        true,
        None,
    );
    a.tick();
    assert!(a.login.is_some());
}

#[test]
fn keys_through_the_app() {
    let mut a = app(full, Link::Connected);
    key(&mut a, KeyCode::Tab);
    assert_eq!(a.screen, ScreenId::Calls);
    key(&mut a, KeyCode::BackTab);
    assert_eq!(a.screen, ScreenId::Dashboard);
    keys(&mut a, "3");
    assert_eq!(a.screen, ScreenId::Bans);
    // Unban asks first; anything but y cancels, y sends.
    keys(&mut a, "u");
    assert!(a.confirm.is_some());
    keys(&mut a, "n");
    assert!(a.confirm.is_none());
    assert!(
        !a.source()
            .sent
            .iter()
            .any(|r| matches!(r, Request::Unban(_)))
    );
    keys(&mut a, "uy");
    assert!(
        a.source()
            .sent
            .iter()
            .any(|r| matches!(r, Request::Unban(_)))
    );
    assert!(
        a.notice.as_deref().is_some_and(|n| n.ends_with("unbanned")),
        "{:?}",
        a.notice
    );
    // Hang-up from the calls screen, with sngrep's F7 as the filter key.
    keys(&mut a, "2");
    key(&mut a, KeyCode::F(7));
    keys(&mut a, "q");
    assert!(!a.should_quit(), "q is typed into the filter");
    key(&mut a, KeyCode::Esc);
    keys(&mut a, "Ky");
    assert!(
        a.source()
            .sent
            .iter()
            .any(|r| matches!(r, Request::Hangup(_)))
    );
    // Pause holds events until thawed.
    keys(&mut a, "p");
    a.source()
        .push(Update::Event(StreamEvent::CallEnded(CallEnded {
            id: 101,
            cause: "bye".into(),
            hung_up_by: "caller".into(),
        })));
    a.tick();
    assert!(a.data.calls.value.iter().any(|c| c.id == 101));
    keys(&mut a, "p");
    assert!(!a.data.calls.value.iter().any(|c| c.id == 101));
    key(&mut a, KeyCode::F(1));
    assert!(a.help);
    keys(&mut a, "x");
    assert!(!a.help);
    keys(&mut a, "q");
    assert!(a.should_quit());
}

#[test]
fn a_read_only_user_sees_greyed_keys_and_cannot_hang_up() {
    let mut src = FakeSource::new(|r| match r {
        Request::Me => Ok(Reply::Me(Me {
            username: "ro".into(),
            role: "read-only".into(),
        })),
        other => full(other),
    });
    src.push(Update::Link(Link::Connected));
    let mut a = App::new(src, FixedClock::new(NOW), "https://h", true, None);
    a.tick();
    keys(&mut a, "2K");
    assert!(a.confirm.is_none());
    assert_eq!(
        a.notice.as_deref(),
        Some("hang up: not allowed for your role (read-only)")
    );
    shots!("calls_read_only", a);
}

#[test]
fn reconnect_reloads() {
    let mut a = app(full, Link::Connected);
    a.source()
        .push(Update::Link(Link::Disconnected("reset".into())));
    a.tick();
    let before = a.source().sent.len();
    a.source().push(Update::Link(Link::Connected));
    a.tick();
    assert!(
        a.source().sent.len() > before,
        "a reconnect asks for everything again"
    );
}

#[test]
fn tiny_terminals_do_not_panic() {
    let mut a = on(app(full, Link::Connected), '2');
    key(&mut a, KeyCode::Enter);
    for (w, h) in [(20, 5), (1, 1), (0, 0), (30, 8), (31, 9), (45, 12)] {
        for s in ['1', '2', '3', '4', '5', '6', '7', '8', '9'] {
            keys(&mut a, &s.to_string());
            draw_only(&mut a, w, h);
            keys(&mut a, "?");
            draw_only(&mut a, w, h);
            keys(&mut a, "?");
        }
    }
    insta::assert_snapshot!("tiny_20x5", render(&mut a, 20, 5));
}

/// How long the app takes to draw each screen with 1,000 live calls (from the fake source;
/// the daemon's answer time comes on top). A measurement, not a check:
/// `cargo test -p tui --release --test console -- --ignored --nocapture draw_times`.
#[test]
#[ignore]
fn draw_times_with_1000_calls() {
    let many = |r: &Request| match r {
        Request::Calls => Ok(Reply::Calls(
            (0..1000u64)
                .map(|i| Call {
                    id: i,
                    cli: format!("44{i:08}"),
                    cld: format!("33{i:08}"),
                    started_ms: NOW - i * 1000,
                    answered: i % 4 != 0,
                    ..Call::default()
                })
                .collect(),
        )),
        other => full(other),
    };
    let mut src = FakeSource::new(many);
    for i in 0..600 {
        src.push(Update::Event(StreamEvent::Counters(counters(i))));
    }
    let mut a = App::new(src, FixedClock::new(NOW), "https://h", true, None);
    a.tick();
    let mut t = Terminal::new(TestBackend::new(200, 60)).unwrap();
    for s in ['1', '2', '3', '4', '5', '6', '7', '8', '9'] {
        keys(&mut a, &s.to_string());
        let start = std::time::Instant::now();
        let n = 50;
        for _ in 0..n {
            t.draw(|f| a.draw(f)).unwrap();
        }
        println!(
            "screen {s} ({:?}): {:?} per frame at 200x60",
            a.screen,
            start.elapsed() / n
        );
    }
    keys(&mut a, "2/^44000009");
    let start = std::time::Instant::now();
    t.draw(|f| a.draw(f)).unwrap();
    println!("calls filtered by regex: {:?} per frame", start.elapsed());
}

/// A daemon that takes the requests and answers none of them (hung, or very slow).
#[derive(Default)]
struct Silent {
    sent: Vec<Request>,
}

impl tui::console::source::DataSource for Silent {
    fn send(&mut self, req: Request) {
        self.sent.push(req);
    }

    fn poll(&mut self) -> Vec<Update> {
        Vec::new()
    }
}

#[test]
fn a_slow_daemon_gets_one_of_each_read_at_a_time() {
    let clock = std::sync::Arc::new(FixedClock::new(NOW));
    let mut a = App::new(Silent::default(), clock.clone(), "https://h", true, None);
    let press = |a: &mut App<Silent, _>, c| {
        a.handle_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
        a.tick();
    };
    press(&mut a, '2');
    for _ in 0..50 {
        clock.advance(1_000);
        a.tick();
        press(&mut a, 'r');
    }
    let count =
        |a: &mut App<Silent, _>, r: &Request| a.source().sent.iter().filter(|s| *s == r).count();
    assert_eq!(count(&mut a, &Request::Status), 1, "{:?}", a.source().sent);
    assert_eq!(count(&mut a, &Request::Calls), 1);
    // Writes are never held back, and a read unanswered for a minute is asked again.
    a.act(tui::console::action::Action::Send(Request::Hangup(7)));
    a.act(tui::console::action::Action::Send(Request::Hangup(7)));
    assert_eq!(count(&mut a, &Request::Hangup(7)), 2);
    clock.advance(15_000);
    a.tick();
    assert_eq!(count(&mut a, &Request::Status), 2);
}

#[test]
fn without_an_event_stream_the_console_polls() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let down = Arc::new(AtomicBool::new(false));
    let d = down.clone();
    let mut src = FakeSource::new(move |r| {
        if d.load(Ordering::Relaxed) {
            Err(Failure {
                status: None,
                message: "Connection refused (os error 111)".into(),
            })
        } else {
            full(r)
        }
    });
    src.push(Update::Link(Link::Polling));
    let clock = Arc::new(FixedClock::new(NOW));
    let mut a = App::new(src, clock.clone(), "https://192.0.2.10:8443", true, None);
    a.tick();
    a.handle_key(KeyEvent::new(KeyCode::Char('2'), KeyModifiers::NONE));
    a.tick();
    let calls = |a: &mut App<FakeSource, Arc<FixedClock>>| {
        a.source()
            .sent
            .iter()
            .filter(|r| **r == Request::Calls)
            .count()
    };
    let before = calls(&mut a);
    clock.advance(3_000);
    a.tick();
    assert_eq!(calls(&mut a), before + 1, "the screen in front is polled");
    let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
    t.draw(|f| a.draw(f)).unwrap();
    let top: String = (0..80)
        .map(|x| t.backend().buffer()[(x, 0)].symbol().to_owned())
        .collect();
    assert!(top.contains("◐ polling"), "{top}");
    // The daemon goes away: only a failed poll can tell; it comes back: polling again.
    down.store(true, Ordering::Relaxed);
    clock.advance(5_000);
    a.tick();
    a.tick();
    assert!(
        matches!(a.data.link, Some(Link::Disconnected(_))),
        "{:?}",
        a.data.link
    );
    down.store(false, Ordering::Relaxed);
    clock.advance(5_000);
    a.tick();
    a.tick();
    assert_eq!(a.data.link, Some(Link::Polling));
}

#[test]
fn a_long_pause_stays_bounded_and_reloads_on_thaw() {
    let mut a = app(full, Link::Connected);
    keys(&mut a, "p");
    assert!(a.paused);
    for i in 0..25_000 {
        a.source()
            .push(Update::Event(StreamEvent::Counters(counters(i))));
    }
    a.tick();
    let before = a.source().sent.len();
    keys(&mut a, "p");
    assert!(!a.paused);
    assert!(a.source().sent.len() > before, "the thaw asks again");
    assert_eq!(
        a.notice.as_deref(),
        Some("paused a long time: everything asked again")
    );
    assert!(a.data.counters.len() <= tui::console::data::HISTORY);
}
