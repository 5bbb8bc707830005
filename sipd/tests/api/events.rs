//! `GET /api/events` and `GET /api/calls/{id}/messages` against the running daemon: the
//! stream's framing and content type, counters every second, ban and alert events for every
//! role, audit events only for admins, the cap on streams, and the end of the stream when
//! sipd stops.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Ctx, Sipd};

/// An open event stream, read by a thread: `(kind, data)` per event, `("eof", null)` at
/// its end.
pub struct Stream {
    pub rx: mpsc::Receiver<(String, Value)>,
}

/// `GET /api/events` with `token`: the status, the content type and, for a 200, the stream.
pub fn open(s: &Sipd, token: Option<&str>) -> (u16, String, Option<Stream>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .disable_verification(true)
                .build(),
        )
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut b = agent.get(format!("{}/api/events", s.base));
    if let Some(t) = token {
        b = b.header("Authorization", format!("Bearer {t}"));
    }
    let r = b.call().unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if status != 200 {
        return (status, ct, None);
    }
    let (tx, rx) = mpsc::channel();
    let reader = r.into_body().into_reader();
    std::thread::spawn(move || {
        let mut kind = String::new();
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if let Some(k) = line.strip_prefix("event: ") {
                kind = k.to_owned();
            } else if let Some(d) = line.strip_prefix("data: ") {
                let v: Value = serde_json::from_str(d).expect("data is one line of JSON");
                if tx.send((std::mem::take(&mut kind), v)).is_err() {
                    return;
                }
            } else {
                assert!(
                    line.is_empty() || line.starts_with(':'),
                    "not SSE: {line:?}"
                );
            }
        }
        let _ = tx.send(("eof".into(), Value::Null));
    });
    (status, ct, Some(Stream { rx }))
}

impl Stream {
    /// The first event of `kind` whose data satisfies `pred`, within `secs`; the events
    /// passed over are returned too.
    pub fn wait(
        &self,
        kind: &str,
        secs: u64,
        pred: impl Fn(&Value) -> bool,
    ) -> (Value, Vec<(String, Value)>) {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut passed = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((k, v)) if k == kind && pred(&v) => return (v, passed),
                Ok(e) => {
                    assert_ne!(e.0, "eof", "stream ended waiting for {kind}: {passed:?}");
                    passed.push(e);
                }
                Err(_) => panic!("no {kind} event within {secs} s; saw {passed:?}"),
            }
        }
    }

    /// Every event already received.
    pub fn drain(&self) -> Vec<(String, Value)> {
        self.rx.try_iter().collect()
    }
}

/// Streams for the admin and the viewer; counters tick; a ban shows to both, its audit
/// entry only to the admin; an alert is raised and cleared; the per-call messages route.
/// Returns the admin's stream, kept open until sipd stops.
pub fn event_stream_and_call_messages(c: &Ctx) -> Stream {
    let Ctx {
        s,
        admin,
        viewer,
        oper,
    } = c;
    let (st, _, _) = open(s, None);
    assert_eq!(st, 401, "the stream needs a token");
    let (st, ct, a) = open(s, Some(admin));
    assert_eq!((st, ct.as_str()), (200, "text/event-stream"));
    let a = a.unwrap();
    let (_, _, v) = open(s, Some(viewer));
    let v = v.unwrap();
    // The test's config allows two streams.
    let (st, _, _) = open(s, Some(oper));
    assert_eq!(st, 503, "a third stream is over max_event_streams");

    let (counters, _) = a.wait("counters", 10, |_| true);
    for k in [
        "at_ms",
        "calls_active",
        "calls_capacity",
        "invites_per_sec",
        "sip_packets_per_sec",
        "relayed_kernel_pps",
        "relayed_user_pps",
        "drops_per_sec",
    ] {
        assert!(!counters[k].is_null(), "counters lack {k}: {counters:#}");
    }
    assert!(
        counters["calls_capacity"].as_u64().unwrap() > 0,
        "{counters:#}"
    );
    assert!(counters["drops_per_sec"]["ban"].is_number(), "{counters:#}");
    let (next, _) = a.wait("counters", 5, |_| true);
    assert!(
        next["at_ms"].as_u64() > counters["at_ms"].as_u64(),
        "they tick"
    );

    s.ok(
        "POST",
        "/api/bans",
        oper,
        Some(json!({"addr": "198.51.100.77", "duration_secs": 600})),
    );
    let want = |b: &Value| b["prefix"] == "198.51.100.77/32";
    let (ban, _) = a.wait("ban_added", 10, want);
    assert_eq!(
        (ban["by"].as_str(), ban["reason"].as_str()),
        (Some("staff"), Some("manual"))
    );
    let listed = s.ok("GET", "/api/bans", viewer, None);
    let as_listed = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|b| want(b))
        .unwrap()
        .clone();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(&ban),
        keys(&as_listed),
        "a ban event is a ban as listed"
    );
    let (_, _) = v.wait("ban_added", 10, want);
    let (audit, _) = a.wait("audit", 10, |e| e["target"] == "ban:198.51.100.77/32");
    assert_eq!(audit["actor"], "oper");

    assert_eq!(
        s.req("DELETE", "/api/bans/198.51.100.77", Some(oper), None)
            .status,
        204
    );
    a.wait("ban_removed", 10, |b| {
        b == &json!({"addr": "198.51.100.77/32"})
    });
    let (_, passed) = v.wait("ban_removed", 10, |b| b["addr"] == "198.51.100.77/32");
    let seen: Vec<String> = passed.iter().map(|e| e.0.clone()).collect();
    assert!(
        !seen.iter().any(|k| k == "audit"),
        "a viewer gets no audit events: {seen:?}"
    );

    // An admin without TOTP is an alert while it lasts.
    let id = s.create_staff(admin, "adm2", "admin", json!([]));
    let (alert, _) = a.wait("alert_raised", 10, |x| x["code"] == "admin_without_totp");
    assert_eq!(alert["id"], "admin_without_totp:adm2");
    s.ok("DELETE", &format!("/api/staff/{id}"), admin, None);
    a.wait("alert_cleared", 10, |x| {
        x["id"] == "admin_without_totp:adm2"
    });
    assert!(
        !v.drain().iter().any(|e| e.0 == "audit"),
        "still no audit events for the viewer"
    );
    drop(v);

    let r = s.req("GET", "/api/calls/42/messages", Some(viewer), None);
    assert_eq!(
        (r.status, r.error().as_str()),
        (404, "not_found"),
        "{}",
        r.text
    );
    assert_eq!(
        s.req("GET", "/api/calls/x/messages", Some(viewer), None)
            .status,
        404
    );
    assert_eq!(
        s.req("GET", "/api/calls/42/messages", None, None).status,
        401
    );
    a
}

/// After `sipd` stopped: the stream ended (it did not hold the shutdown up).
pub fn the_stream_ended_with_sipd(s: &Sipd, a: Stream) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match a
            .rx
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            Ok((k, _)) if k == "eof" => break,
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(e) => panic!("the stream did not end with sipd: {e}"),
        }
    }
    assert!(
        !s.log().contains("connections still open at shutdown"),
        "{}",
        s.log()
    );
}
