//! The daemon over HTTPS: one worker thread makes the requests in order, another keeps the
//! event stream open and reopens it after a failure, so the UI thread never waits on the
//! network. A successful login is saved where `sbcctl` keeps its session.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::DataSource;
use crate::api::{self, Client, Method, Options};
use crate::console::action::{CdrQuery, Failure, Link, Reply, Request, StaffCreated, Update};
use crate::console::model::{LoginOk, StreamEvent};
use crate::events::{Backoff, SseParser};
use crate::token;

/// The first and the longest wait between two tries to reopen the event stream.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// See [`FIRST_BACKOFF`].
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a daemon without an event stream (404) is polled before the stream is tried
/// again (it may have been upgraded meanwhile).
const NO_STREAM_RETRY: Duration = Duration::from_secs(30);

/// The HTTPS data source.
pub struct HttpSource {
    requests: Sender<Request>,
    updates: Receiver<Update>,
}

impl HttpSource {
    /// Starts the two threads. `token`: a saved session for this URL, if any; `token_dir`:
    /// where a new login is saved (`sbcctl`'s directory), `None` to keep it in memory only.
    pub fn start(opts: Options, token: Option<String>, token_dir: Option<PathBuf>) -> HttpSource {
        let (req_tx, req_rx) = mpsc::channel::<Request>();
        let (up_tx, up_rx) = mpsc::channel::<Update>();
        let shared = Arc::new(Mutex::new(token));
        {
            let (opts, shared, up) = (opts.clone(), shared.clone(), up_tx.clone());
            thread::Builder::new()
                .name("sbc-tui-api".into())
                .spawn(move || worker(opts, shared, token_dir, req_rx, up))
                .expect("spawn the API thread");
        }
        thread::Builder::new()
            .name("sbc-tui-events".into())
            .spawn(move || stream(opts, shared, up_tx))
            .expect("spawn the event thread");
        HttpSource {
            requests: req_tx,
            updates: up_rx,
        }
    }
}

impl DataSource for HttpSource {
    fn send(&mut self, req: Request) {
        // The worker only stops when this source is dropped.
        let _ = self.requests.send(req);
    }

    fn poll(&mut self) -> Vec<Update> {
        self.updates.try_iter().collect()
    }
}

fn failure(e: api::Error) -> Failure {
    let status = match &e {
        api::Error::Api(a) => Some(a.status),
        _ => None,
    };
    Failure {
        status,
        message: e.to_string(),
    }
}

fn client(opts: &Options, token: &Mutex<Option<String>>) -> Result<Client, Failure> {
    let t = token.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Client::new(opts, t).map_err(failure)
}

/// Now, for the windows asked of the API (the UI's own time is the injected clock).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn typed<T: DeserializeOwned>(v: Value) -> Result<T, Failure> {
    serde_json::from_value(v).map_err(|e| Failure {
        status: None,
        message: format!("the daemon's reply does not fit: {e}"),
    })
}

fn worker(
    opts: Options,
    token: Arc<Mutex<Option<String>>>,
    token_dir: Option<PathBuf>,
    requests: Receiver<Request>,
    updates: Sender<Update>,
) {
    for req in requests {
        let r = client(&opts, &token).and_then(|c| perform(&c, &req));
        if let (Request::Login { username, .. }, Ok(Reply::LoggedIn(ok))) = (&req, &r) {
            *token.lock().unwrap_or_else(|p| p.into_inner()) = Some(ok.token.clone());
            if let Some(dir) = &token_dir {
                let saved = token::Saved {
                    url: opts.url.clone(),
                    token: ok.token.clone(),
                    username: Some(username.clone()),
                    expires_ms: Some(ok.expires_ms),
                    ca: opts.ca.clone(),
                    insecure: opts.insecure,
                };
                if let Err(e) = token::save(dir, &saved) {
                    let _ = updates.send(Update::Reply(
                        Request::Status,
                        Err(Failure {
                            status: None,
                            message: format!("logged in, but the session was not saved: {e}"),
                        }),
                    ));
                }
            }
        }
        if updates.send(Update::Reply(req, r)).is_err() {
            return;
        }
    }
}

fn perform(c: &Client, req: &Request) -> Result<Reply, Failure> {
    let get = |path: &str| c.get(path).map_err(failure);
    Ok(match req {
        Request::Login {
            username,
            password,
            totp,
        } => {
            let mut body = json!({"username": username, "password": password});
            if let Some(t) = totp.as_ref().filter(|t| !t.is_empty()) {
                body["totp"] = t.clone().into();
            }
            let v = c
                .json(Method::Post, "/api/login", &[], Some(&body))
                .map_err(failure)?;
            Reply::LoggedIn(typed::<LoginOk>(v)?)
        }
        Request::Me => Reply::Me(typed(get("/api/me")?)?),
        Request::Status => Reply::Status(typed(get("/api/status")?)?),
        Request::Calls => Reply::Calls(typed(get("/api/calls")?)?),
        Request::Messages(id) => {
            Reply::Messages(typed(get(&format!("/api/calls/{id}/messages"))?)?)
        }
        Request::Hangup(id) => {
            c.call(Method::Delete, &format!("/api/calls/{id}"), &[], None)
                .map_err(failure)?;
            Reply::Done
        }
        Request::Bans => Reply::Bans(typed(get("/api/bans")?)?),
        Request::Ban {
            addr,
            duration_secs,
            reason,
        } => {
            let body = json!({"addr": addr, "duration_secs": duration_secs, "reason": reason});
            c.call(Method::Post, "/api/bans", &[], Some(&body))
                .map_err(failure)?;
            Reply::Done
        }
        Request::Unban(addr) => {
            let path = format!("/api/bans/{}", api::encode(addr));
            c.call(Method::Delete, &path, &[], None).map_err(failure)?;
            Reply::Done
        }
        Request::NeverBans => Reply::NeverBans(typed(get("/api/bans/never")?)?),
        Request::Alerts => Reply::Alerts(typed(get("/api/alerts")?)?),
        Request::AckAlert(id) => {
            let path = format!("/api/alerts/{}/ack", api::encode(id));
            c.call(Method::Post, &path, &[], None).map_err(failure)?;
            Reply::Done
        }
        Request::Firewall => Reply::Firewall(typed(get("/api/firewall")?)?),
        Request::AllowAdd { service, cidr } | Request::AllowRemove { service, cidr } => {
            let m = if matches!(req, Request::AllowAdd { .. }) {
                Method::Post
            } else {
                Method::Delete
            };
            let body = json!({"service": service, "cidr": cidr});
            c.call(m, "/api/firewall/allow", &[], Some(&body))
                .map_err(failure)?;
            Reply::Done
        }
        Request::DenyAdd(cidr) => {
            let body = json!({"cidr": cidr});
            c.call(Method::Post, "/api/firewall/deny", &[], Some(&body))
                .map_err(failure)?;
            Reply::Done
        }
        Request::DenyRemove(id) => {
            c.call(
                Method::Delete,
                &format!("/api/firewall/deny/{id}"),
                &[],
                None,
            )
            .map_err(failure)?;
            Reply::Done
        }
        Request::Accounts => Reply::Accounts(
            typed(get("/api/accounts")?)?,
            typed(get("/api/connections")?)?,
        ),
        Request::Cdrs(f) => {
            let v = c
                .json(Method::Get, "/api/cdrs", &cdr_query(f, unix_ms()), None)
                .map_err(failure)?;
            Reply::Cdrs(typed(v)?)
        }
        Request::Staff => Reply::Staff(typed(get("/api/staff")?)?),
        Request::StaffCreate {
            username,
            role,
            password,
            allowed_hosts,
        } => {
            let made = password.is_none().then(random_password);
            let pw = password
                .clone()
                .or_else(|| made.clone())
                .unwrap_or_default();
            let body = json!({"username": username, "role": role, "password": pw,
                              "allowed_hosts": allowed_hosts, "must_change_password": true});
            let v = c
                .json(Method::Post, "/api/staff", &[], Some(&body))
                .map_err(failure)?;
            Reply::StaffCreated(StaffCreated {
                username: username.clone(),
                role: role.clone(),
                password: made,
                strength: strength_line(v.get("strength")),
            })
        }
        Request::StaffUpdate {
            id, role, enabled, ..
        } => {
            let mut body = json!({});
            if let Some(r) = role {
                body["role"] = r.clone().into();
            }
            if let Some(e) = enabled {
                body["enabled"] = (*e).into();
            }
            c.call(Method::Put, &format!("/api/staff/{id}"), &[], Some(&body))
                .map_err(failure)?;
            Reply::Done
        }
        Request::StaffRevoke { id, .. } => {
            c.call(Method::Post, &format!("/api/staff/{id}/revoke"), &[], None)
                .map_err(failure)?;
            Reply::Done
        }
        Request::StaffTotpReset { id, .. } => {
            let path = format!("/api/staff/{id}/totp/reset");
            c.call(Method::Post, &path, &[], None).map_err(failure)?;
            Reply::Done
        }
        Request::Audit { after } => {
            // The API lists oldest first: the first load asks for the last day (newest
            // kept), later ones for what came after the newest entry seen.
            let q = if *after == 0 {
                let day_ago = unix_ms().saturating_sub(86_400_000);
                [
                    ("from_ms", day_ago.to_string()),
                    ("limit", crate::console::data::AUDIT_KEEP.to_string()),
                ]
            } else {
                [("after", after.to_string()), ("limit", "1000".to_string())]
            };
            let v = c
                .json(Method::Get, "/api/audit", &q, None)
                .map_err(failure)?;
            Reply::Audit(typed(v)?)
        }
    })
}

/// `GET /api/cdrs`'s query for the CDR screen's filters at `now_ms`.
pub fn cdr_query(f: &CdrQuery, now_ms: u64) -> Vec<(&'static str, String)> {
    let mut q = vec![(
        "limit",
        crate::console::screens::cdrs::CDR_LIMIT.to_string(),
    )];
    let from = f.from_ms.or_else(|| {
        f.window_secs
            .map(|w| now_ms.saturating_sub(w.saturating_mul(1000)))
    });
    let params = [
        ("account", f.account.map(|a| a.to_string())),
        ("result", f.result.clone()),
        ("from_ms", from.map(|v| v.to_string())),
        ("to_ms", f.to_ms.map(|v| v.to_string())),
    ];
    q.extend(params.into_iter().filter_map(|(k, v)| Some((k, v?))));
    q
}

/// A first password for a new staff user: 24 characters from the kernel's random source
/// (about 137 bits), in groups of four, without look-alike characters.
fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 24];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        // Without randomness there is no password to make: the API refuses an empty one,
        // and the admin sees why.
        return String::new();
    }
    let chars: Vec<char> = bytes
        .iter()
        // 256 is not a multiple of 56: a slight bias, a negligible loss of entropy.
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// The server's strength estimate as one line: `3/4` and its warning, if any.
fn strength_line(s: Option<&Value>) -> String {
    let Some(s) = s else {
        return String::new();
    };
    let score = s.get("score").and_then(Value::as_u64).unwrap_or(0);
    match s
        .get("warning")
        .and_then(Value::as_str)
        .filter(|w| !w.is_empty())
    {
        Some(w) => format!("{score}/4 ({w})"),
        None => format!("{score}/4"),
    }
}

/// Keeps `/api/events` open: on any failure says so and tries again, waiting a little
/// longer each time up to [`MAX_BACKOFF`].
fn stream(opts: Options, token: Arc<Mutex<Option<String>>>, updates: Sender<Update>) {
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    let mut last = Link::Idle;
    let say = |l: Link, last: &mut Link| -> bool {
        if *last == l {
            return true;
        }
        *last = l.clone();
        updates.send(Update::Link(l)).is_ok()
    };
    loop {
        let has_token = token.lock().map(|t| t.is_some()).unwrap_or(false);
        if !has_token {
            thread::sleep(Duration::from_millis(200));
            continue;
        }
        let opened =
            client(&opts, &token).and_then(|c| c.open_stream("/api/events").map_err(failure));
        let reader = match opened {
            Ok(r) => r,
            // No stream on this daemon (404), or none for this role (403: a customer user):
            // the screens poll instead.
            Err(f) if matches!(f.status, Some(403 | 404)) => {
                if !say(Link::Polling, &mut last) {
                    return;
                }
                thread::sleep(NO_STREAM_RETRY);
                continue;
            }
            Err(f) => {
                if !say(Link::Disconnected(f.message), &mut last) {
                    return;
                }
                thread::sleep(backoff.next_wait());
                continue;
            }
        };
        backoff.reset();
        if !say(Link::Connected, &mut last) {
            return;
        }
        let mut parser = SseParser::default();
        let mut why = "the daemon closed the event stream".to_owned();
        for line in BufReader::new(reader).lines() {
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    why = format!("event stream: {e}");
                    break;
                }
            };
            if let Some((kind, data)) = parser.raw_line(&line)
                && let Some(ev) = StreamEvent::parse(&kind, &data)
                && updates.send(Update::Event(ev)).is_err()
            {
                return;
            }
        }
        if !say(Link::Disconnected(why), &mut last) {
            return;
        }
        thread::sleep(backoff.next_wait());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdr_filters_become_the_apis_query() {
        let q = |k: &'static str, v: &str| (k, v.to_owned());
        assert_eq!(
            cdr_query(&CdrQuery::default(), 10_000_000),
            [q("limit", "10000"), q("from_ms", "6400000")],
            "the last hour"
        );
        let f = CdrQuery {
            account: Some(3),
            result: Some("answered".into()),
            window_secs: Some(86_400),
            from_ms: Some(1000),
            to_ms: Some(2000),
        };
        assert_eq!(
            cdr_query(&f, 10_000_000),
            [
                q("limit", "10000"),
                q("account", "3"),
                q("result", "answered"),
                q("from_ms", "1000"),
                q("to_ms", "2000"),
            ],
            "a from time wins over the window"
        );
        let all = CdrQuery {
            window_secs: None,
            ..CdrQuery::default()
        };
        assert_eq!(cdr_query(&all, 5), [q("limit", "10000")]);
    }

    #[test]
    fn made_up_passwords_are_long_and_differ() {
        let (a, b) = (random_password(), random_password());
        assert_ne!(a, b);
        assert_eq!(a.len(), 29, "{a}");
        let groups: Vec<&str> = a.split('-').collect();
        assert_eq!(groups.len(), 6, "{a}");
        assert!(groups.iter().all(|g| {
            g.len() == 4
                && g.chars()
                    .all(|c| c.is_ascii_alphanumeric() && !"0O1lI".contains(c))
        }));
    }
}
