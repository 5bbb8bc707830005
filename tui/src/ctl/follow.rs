//! `sbcctl events`: follows the event stream, one line per event (`--json`: one
//! `{"event","data"}` object per line), and reconnects with back-off when the stream ends
//! or sipd cannot be reached, saying so on standard error. A refused session (401, 403)
//! ends it: retrying would not help.

use std::time::Duration;

use serde_json::{Value, json};

use super::Ctx;
use crate::api::Error;
use crate::events::{self, Backoff, SseEvent};

/// First wait before reconnecting, and the longest.
const FIRST_WAIT: Duration = Duration::from_millis(500);
const MAX_WAIT: Duration = Duration::from_secs(30);

impl Ctx<'_, '_> {
    pub(super) fn events(&mut self, count: Option<u64>) -> Result<(), Error> {
        let (opts, token) = self.session()?;
        let mut backoff = Backoff::new(FIRST_WAIT, MAX_WAIT);
        let mut seen = 0u64;
        let mut lost_since: Option<String> = None;
        loop {
            let why = match events::open(&opts, &token) {
                Ok(stream) => {
                    if lost_since.take().is_some() {
                        let _ = writeln!(self.io.err, "sbcctl: reconnected to {}", opts.url);
                    }
                    let mut why = "the server closed the stream".to_owned();
                    for e in stream {
                        match e {
                            Ok(e) => {
                                backoff.reset();
                                self.print_event(&e);
                                seen += 1;
                                if count.is_some_and(|n| seen >= n) {
                                    return Ok(());
                                }
                            }
                            Err(e) => {
                                why = e;
                                break;
                            }
                        }
                    }
                    why
                }
                Err(e) if events::is_final(&e) => return Err(e),
                Err(e) => e.to_string(),
            };
            let wait = backoff.next_wait();
            let _ = writeln!(
                self.io.err,
                "sbcctl: event stream from {} lost ({why}); reconnecting in {:.1} s",
                opts.url,
                wait.as_secs_f64()
            );
            lost_since = Some(why);
            std::thread::sleep(wait);
        }
    }

    fn print_event(&mut self, e: &SseEvent) {
        let line = if self.g.json {
            json!({ "event": e.kind, "data": e.data }).to_string()
        } else {
            readable(e)
        };
        let _ = writeln!(self.io.out, "{line}");
        let _ = self.io.out.flush();
    }
}

/// `HH:MM:SS` (UTC) of a Unix time in ms.
pub(super) fn clock(ms: u64) -> String {
    let s = (ms / 1000) % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One event as a line for people: time, kind, what it says.
pub(super) fn readable(e: &SseEvent) -> String {
    let d = &e.data;
    let s = |k: &str| match &d[k] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    };
    let f = |k: &str| d[k].as_f64().unwrap_or(0.0);
    let at = d["at_ms"]
        .as_u64()
        .or_else(|| d["ts_ms"].as_u64())
        .unwrap_or_else(now_ms);
    let what = match e.kind.as_str() {
        "counters" => {
            let drops: Vec<String> = d["drops_per_sec"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, v)| v.as_f64().unwrap_or(0.0) > 0.0)
                .map(|(k, v)| format!("{k}={:.1}", v.as_f64().unwrap_or(0.0)))
                .collect();
            format!(
                "calls {}/{} invites/s {:.1} sip/s {:.1} relayed/s kernel {:.0} user {:.0} drops/s {}",
                s("calls_active"),
                s("calls_capacity"),
                f("invites_per_sec"),
                f("sip_packets_per_sec"),
                f("relayed_kernel_pps"),
                f("relayed_user_pps"),
                if drops.is_empty() {
                    "0".into()
                } else {
                    drops.join(" ")
                }
            )
        }
        "call_started" => format!(
            "#{} {} -> {} from {} (account {})",
            s("id"),
            s("cli"),
            s("cld"),
            s("source"),
            s("account_id")
        ),
        "call_ended" => format!("#{} {} (by {})", s("id"), s("cause"), s("hung_up_by")),
        "ban_added" => format!(
            "{} {} by {} until {}",
            s("prefix"),
            s("reason"),
            s("by"),
            d["expires_ms"]
                .as_u64()
                .map_or_else(|| "permanent".into(), clock)
        ),
        "ban_removed" => s("addr"),
        "alert_raised" => format!("{} {}: {}", s("severity"), s("code"), s("message")),
        "alert_cleared" => s("id"),
        "audit" => format!(
            "{} {} {} {}",
            s("actor"),
            s("kind"),
            s("target"),
            s("result")
        ),
        "lagged" => format!("this client fell behind: {} events lost", s("missed")),
        _ => d.to_string(),
    };
    format!("{} {:<13} {what}", clock(at), e.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_for_people() {
        let e = SseEvent {
            kind: "call_ended".into(),
            data: json!({"id": 7, "cause": "hung up by operator", "hung_up_by": "staff:alice"}),
        };
        assert!(readable(&e).ends_with("call_ended    #7 hung up by operator (by staff:alice)"));
        let e = SseEvent {
            kind: "counters".into(),
            data: json!({"at_ms": 3_723_000, "calls_active": 2, "calls_capacity": 100,
                "invites_per_sec": 0.5, "sip_packets_per_sec": 3.0, "relayed_kernel_pps": 100.0,
                "relayed_user_pps": 0.0, "drops_per_sec": {"ban": 2.0, "acl": 0.0}}),
        };
        assert_eq!(
            readable(&e),
            "01:02:03 counters      calls 2/100 invites/s 0.5 sip/s 3.0 relayed/s kernel 100 user 0 drops/s ban=2.0"
        );
    }
}
