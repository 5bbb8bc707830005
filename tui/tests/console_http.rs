//! The HTTPS data source against a small local server (plain HTTP, the hidden test-only
//! mode): requests off the UI thread, the event stream, a daemon restart (the stream drops
//! and comes back by itself), and a login saved where `sbcctl` keeps its session.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tui::api::Options;
use tui::console::action::{Link, Reply, Request, Update};
use tui::console::model::StreamEvent;
use tui::console::source::DataSource;
use tui::console::source::http::HttpSource;

/// Reads one request: (request line, headers, body).
fn read_request(s: &mut TcpStream) -> Option<(String, Vec<String>, String)> {
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    let mut len = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end().to_owned();
        if h.is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        headers.push(h);
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((
        line.trim_end().to_owned(),
        headers,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

fn reply(s: &mut TcpStream, status: &str, body: &str) {
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A fake daemon: `/api/login`, `/api/calls`, and `/api/events` that sends `events_per_conn`
/// counters then closes (a restart, as the client sees it).
fn serve(listener: TcpListener, streams: Arc<AtomicUsize>) {
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { return };
        let streams = streams.clone();
        thread::spawn(move || {
            let Some((line, headers, body)) = read_request(&mut s) else {
                return;
            };
            let authed = headers
                .iter()
                .any(|h| h.eq_ignore_ascii_case("authorization: Bearer tok-1"));
            if line.starts_with("POST /api/login") {
                assert!(body.contains("\"totp\":\"123456\""), "{body}");
                reply(
                    &mut s,
                    "200 OK",
                    r#"{"token":"tok-1","expires_ms":1,"role":"operator","setup_only":false,"must":[]}"#,
                );
            } else if !authed {
                reply(
                    &mut s,
                    "401 Unauthorized",
                    r#"{"error":"unauthenticated","message":"log in"}"#,
                );
            } else if line.starts_with("GET /api/calls") {
                reply(
                    &mut s,
                    "200 OK",
                    r#"[{"id":7,"call_id":"x","account_id":1,"cli":"1","cld":"2","source":"192.0.2.1:5060","connection_id":null,"answered":false,"started_ms":5,"answered_ms":null}]"#,
                );
            } else if line.starts_with("GET /api/events") {
                let n = streams.fetch_add(1, Ordering::SeqCst);
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
                );
                let _ = write!(
                    s,
                    ": hello\n\nevent: counters\ndata: {{\"at_ms\":{n},\"calls_active\":1,\"calls_capacity\":10,\"drops_per_sec\":{{\"ban\":2.5}}}}\n\n"
                );
                let _ = s.flush();
                thread::sleep(Duration::from_millis(200));
                // Dropping the socket ends the stream: the daemon went away.
            } else {
                reply(
                    &mut s,
                    "404 Not Found",
                    r#"{"error":"not_found","message":"no"}"#,
                );
            }
        });
    }
}

fn wait_for(
    src: &mut HttpSource,
    got: &mut Vec<Update>,
    what: &str,
    ok: impl Fn(&[Update]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok(got) {
        assert!(Instant::now() < deadline, "no {what} within 30 s: {got:?}");
        got.extend(src.poll());
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn login_requests_events_and_reconnect() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let streams = Arc::new(AtomicUsize::new(0));
    let s2 = streams.clone();
    thread::spawn(move || serve(listener, s2));
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        url: url.clone(),
        allow_http: true,
        timeout: Duration::from_secs(10),
        ..Options::default()
    };
    let mut src = HttpSource::start(opts, None, Some(dir.path().to_owned()));
    let mut got = Vec::new();

    src.send(Request::Calls);
    wait_for(&mut src, &mut got, "401", |u| {
        u.iter()
            .any(|u| matches!(u, Update::Reply(Request::Calls, Err(f)) if f.needs_login()))
    });
    src.send(Request::Login {
        username: "ops".into(),
        password: "pw".into(),
        totp: Some("123456".into()),
    });
    wait_for(&mut src, &mut got, "login", |u| {
        u.iter()
            .any(|u| matches!(u, Update::Reply(_, Ok(Reply::LoggedIn(ok))) if ok.token == "tok-1"))
    });
    let saved = tui::token::load(dir.path())
        .unwrap()
        .expect("the session is saved for sbcctl too");
    assert_eq!(
        (saved.url.as_str(), saved.token.as_str()),
        (url.as_str(), "tok-1")
    );

    src.send(Request::Calls);
    wait_for(&mut src, &mut got, "calls", |u| {
        u.iter().any(|u| matches!(u, Update::Reply(Request::Calls, Ok(Reply::Calls(c))) if c.len() == 1 && c[0].id == 7))
    });
    // The stream opens, delivers, drops (a restart) and opens again by itself.
    wait_for(&mut src, &mut got, "two stream connections", |u| {
        let counters = u
            .iter()
            .filter(|u| matches!(u, Update::Event(StreamEvent::Counters(_))))
            .count();
        let downs = u
            .iter()
            .filter(|u| matches!(u, Update::Link(Link::Disconnected(_))))
            .count();
        counters >= 2
            && downs >= 1
            && u.iter()
                .filter(|u| **u == Update::Link(Link::Connected))
                .count()
                >= 2
    });
    assert!(got.iter().any(|u| matches!(u, Update::Event(StreamEvent::Counters(c)) if c.drops_per_sec.get("ban") == Some(&2.5))));
}

/// A daemon from before the event stream: `/api/events` is a 404, everything else answers.
#[test]
fn a_daemon_without_events_is_polled() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            thread::spawn(move || {
                let Some((line, _, _)) = read_request(&mut s) else {
                    return;
                };
                if line.starts_with("GET /api/events") {
                    reply(&mut s, "404 Not Found", r#"{"error":"not_found"}"#);
                } else {
                    reply(&mut s, "200 OK", "[]");
                }
            });
        }
    });
    let opts = Options {
        url,
        allow_http: true,
        timeout: Duration::from_secs(10),
        ..Options::default()
    };
    let mut src = HttpSource::start(opts, Some("tok".into()), None);
    let mut got = Vec::new();
    wait_for(&mut src, &mut got, "polling", |u| {
        u.contains(&Update::Link(Link::Polling))
    });
    assert!(
        !got.iter()
            .any(|u| matches!(u, Update::Link(Link::Disconnected(_)))),
        "a daemon that answers is not called disconnected: {got:?}"
    );
}
