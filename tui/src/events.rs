//! The management API's event stream (`GET /api/events`, server-sent events) from the
//! client's side: opening it ([`open`]), reading it ([`SseParser`], [`Events`]) and the
//! back-off between reconnections ([`Backoff`]). Shared by `sbcctl events` and `sbc-tui`.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use serde_json::Value;
use ureq::tls::{RootCerts, TlsConfig};

use crate::api::{Error, Options, api_error, check_url, load_ca};

/// One event of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// `counters`, `call_started`, `call_ended`, `ban_added`, `ban_removed`,
    /// `alert_raised`, `alert_cleared`, `audit`, or `lagged` (this client fell behind and
    /// lost `data.missed` events).
    pub kind: String,
    /// The event's JSON (`null` if the server sent something else).
    pub data: Value,
}

/// Reads `text/event-stream` line by line (the subset sipd sends: `event:`, `data:`,
/// comments; `id:` and `retry:` are ignored).
#[derive(Debug, Default)]
pub struct SseParser {
    kind: Option<String>,
    data: Vec<String>,
}

impl SseParser {
    /// Takes one line (without its line end); an event is complete at a blank line.
    pub fn line(&mut self, line: &str) -> Option<SseEvent> {
        self.raw_line(line).map(|(kind, text)| SseEvent {
            kind,
            data: serde_json::from_str(&text).unwrap_or(Value::Null),
        })
    }

    /// [`SseParser::line`] with the event's data as the text it came as: `(kind, data)`; an
    /// event without `event:` is a `message`, as the standard says.
    pub fn raw_line(&mut self, line: &str) -> Option<(String, String)> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            let kind = self.kind.take();
            let data = std::mem::take(&mut self.data);
            if kind.is_none() && data.is_empty() {
                return None;
            }
            return Some((kind.unwrap_or_else(|| "message".into()), data.join("\n")));
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.kind = Some(value.to_owned()),
            "data" => self.data.push(value.to_owned()),
            _ => {}
        }
        None
    }
}

/// An open stream: an iterator of events, ending (`None`) when the connection does, or
/// with an `Err` when reading it failed.
pub struct Events {
    reader: BufReader<Box<dyn Read + Send>>,
    parser: SseParser,
    line: String,
}

impl Iterator for Events {
    type Item = Result<SseEvent, String>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.line.clear();
            match self.reader.read_line(&mut self.line) {
                Ok(0) => return None,
                Ok(_) => {
                    let l = self.line.trim_end_matches('\n');
                    if let Some(e) = self.parser.line(l) {
                        return Some(Ok(e));
                    }
                }
                Err(e) => return Some(Err(e.to_string())),
            }
        }
    }
}

/// Opens the stream with `token`. Connecting and the answer's headers are bounded by
/// `opts.timeout`; the stream itself is not (sipd sends a keep-alive every 15 s).
pub fn open(opts: &Options, token: &str) -> Result<Events, Error> {
    let base = check_url(&opts.url, opts.allow_http)?;
    let mut tls = TlsConfig::builder();
    if opts.insecure {
        tls = tls.disable_verification(true);
    } else if let Some(ca) = &opts.ca {
        tls = tls.root_certs(RootCerts::new_with_certs(&load_ca(ca)?));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .https_only(!opts.allow_http)
        .max_redirects(0)
        .timeout_connect(Some(opts.timeout))
        .timeout_recv_response(Some(opts.timeout))
        .user_agent(concat!("sbcctl/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent();
    let url = format!("{base}/api/events");
    let mut res = agent
        .get(&url)
        .header("Accept", "text/event-stream")
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .map_err(|e| Error::Transport(format!("{base}: {e}")))?;
    let status = res.status().as_u16();
    if !(200..300).contains(&status) {
        let retry = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = res
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_vec()
            .unwrap_or_default();
        return Err(Error::Api(api_error(status, &body, retry)));
    }
    let reader: Box<dyn Read + Send> = Box::new(res.into_body().into_reader());
    Ok(Events {
        reader: BufReader::new(reader),
        parser: SseParser::default(),
        line: String::new(),
    })
}

/// Whether an error means the stream will never open with this session (so a follower
/// stops instead of retrying): the token is bad or the role may not read events.
pub fn is_final(e: &Error) -> bool {
    match e {
        Error::Api(a) => matches!(a.status, 400 | 401 | 403 | 404),
        Error::Usage(_) | Error::NotLoggedIn(_) | Error::Local(_) => true,
        Error::Transport(_) | Error::NotFound(_) => false,
    }
}

/// Waits between reconnections: doubling from `first` up to `max`, back to `first` once a
/// connection delivered an event.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Waits starting at `first`, never longer than `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The wait before the next attempt (and doubles the one after).
    pub fn next_wait(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// A connection worked: start again from the first wait.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_comments_and_multi_line_data() {
        let mut p = SseParser::default();
        let mut got = Vec::new();
        for l in [
            ": connected",
            "",
            "event: ban_added",
            "data: {\"prefix\":\"192.0.2.1/32\"}",
            "",
            ": keep-alive",
            "",
            "event: x",
            "data: [1,",
            "data: 2]\r",
            "",
        ] {
            got.extend(p.line(l));
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].kind, "ban_added");
        assert_eq!(got[0].data["prefix"], "192.0.2.1/32");
        assert_eq!(got[1].data, serde_json::json!([1, 2]));
        // Data without `event:` is a `message`; its text is kept as sent.
        assert_eq!(
            [p.raw_line("data: x"), p.raw_line("")],
            [None, Some(("message".into(), "x".into()))]
        );
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(2));
        let w: Vec<u128> = (0..4).map(|_| b.next_wait().as_millis()).collect();
        assert_eq!(w, [500, 1000, 2000, 2000]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(500));
    }
}
