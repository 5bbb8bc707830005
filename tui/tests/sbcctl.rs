//! sbcctl against a fake management API: a plain-HTTP server on 127.0.0.1:0 in a thread,
//! answering canned JSON and recording each request. sbcctl runs in-process (`tui::ctl::run`)
//! with its environment, streams and terminal given as arguments; the hidden `--allow-http`
//! flag lets it talk plain HTTP to the fake.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tui::ctl::{Env, Io, Prompt, run};

#[derive(Debug, Clone)]
struct Req {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("request body is JSON")
    }
}

struct Resp {
    status: u16,
    body: String,
    content_type: &'static str,
    extra: Vec<(&'static str, String)>,
}

fn reply(status: u16, body: Value) -> Resp {
    Resp {
        status,
        body: if body.is_null() {
            String::new()
        } else {
            body.to_string()
        },
        content_type: "application/json",
        extra: Vec::new(),
    }
}

fn error(status: u16, code: &str, message: &str) -> Resp {
    reply(status, json!({"error": code, "message": message}))
}

type Handler = dyn Fn(&Req) -> Resp + Send + Sync;

struct Fake {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Req>>>,
}

impl Fake {
    fn start(handler: impl Fn(&Req) -> Resp + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let l2 = log.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or_default().to_owned();
                let target = parts.next().unwrap_or_default().to_owned();
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap();
                    headers.push((k.trim().to_owned(), v.trim().to_owned()));
                }
                let len = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.parse().unwrap())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                let req = Req {
                    method,
                    target,
                    headers,
                    body: String::from_utf8(body).unwrap(),
                };
                let resp = handler(&req);
                l2.lock().unwrap().push(req);
                let mut head = format!(
                    "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    resp.status,
                    resp.body.len()
                );
                if !resp.body.is_empty() {
                    head += &format!("Content-Type: {}\r\n", resp.content_type);
                }
                for (k, v) in &resp.extra {
                    head += &format!("{k}: {v}\r\n");
                }
                head += "\r\n";
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(resp.body.as_bytes());
            }
        });
        Fake { addr, log }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }

    fn last(&self) -> Req {
        self.requests().pop().expect("a request")
    }
}

/// Canned answers to the terminal's questions.
#[derive(Default)]
struct Answers(Vec<String>, Vec<String>);

impl Prompt for Answers {
    fn line(&mut self, label: &str) -> std::io::Result<String> {
        self.1.push(label.to_owned());
        if self.0.is_empty() {
            return Err(std::io::Error::other("no terminal"));
        }
        Ok(self.0.remove(0))
    }
    fn secret(&mut self, label: &str) -> std::io::Result<String> {
        self.line(label)
    }
}

struct Out {
    code: i32,
    out: String,
    err: String,
    asked: Vec<String>,
}

/// Runs `sbcctl --allow-http ARGS` with `env`, `stdin` and the terminal `answers`.
fn sbcctl(env: &Env, args: &[&str], stdin: &str, answers: &[&str]) -> Out {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut input = stdin.as_bytes();
    let mut prompt = Answers(answers.iter().map(|s| s.to_string()).collect(), vec![]);
    let argv = ["sbcctl", "--allow-http"].iter().chain(args);
    let code = run(
        argv,
        env,
        &mut Io {
            out: &mut out,
            err: &mut err,
            stdin: &mut input,
            prompt: &mut prompt,
        },
    );
    Out {
        code,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
        asked: prompt.1,
    }
}

fn env_with(dir: &Path, url: Option<String>, token: Option<&str>) -> Env {
    Env {
        url,
        token: token.map(str::to_owned),
        ca: None,
        config_dir: Some(dir.join("sbcctl")),
    }
}

fn accounts() -> Value {
    json!([
        {"id": 1, "name": "acme", "enabled": true, "tariff": "std", "balance": "10.00",
         "cps_limit": 5, "max_sessions": 10, "max_call_secs": 3600,
         "sip": {"username": "acme", "auth": "password"}},
        {"id": 2, "name": "beta", "enabled": false, "tariff": null, "balance": "0.50",
         "cps_limit": 1, "max_sessions": 2, "max_call_secs": 60, "sip": null}
    ])
}

/// A fake that knows one token, asks for TOTP, and serves accounts.
fn api() -> Fake {
    Fake::start(|r| {
        let path = r.target.split('?').next().unwrap();
        if path == "/api/login" {
            let b = r.json();
            if b["password"] != "s3cret pass" {
                return error(401, "bad_credentials", "wrong username or password");
            }
            return match b.get("totp").and_then(Value::as_str) {
                None => error(401, "totp_required", "a TOTP code is required"),
                Some("123456") => reply(
                    200,
                    json!({"token": "tok-1", "expires_ms": 1_700_000_000_000u64,
                           "role": "admin", "setup_only": false, "must": []}),
                ),
                Some(_) => error(401, "totp_invalid", "wrong TOTP code"),
            };
        }
        if r.header("authorization") != Some("Bearer tok-1") {
            return error(401, "token_invalid", "invalid session token");
        }
        match (r.method.as_str(), path) {
            ("GET", "/api/accounts") => reply(200, accounts()),
            ("GET", "/api/accounts/1") => reply(200, accounts()[0].clone()),
            ("GET", p) if p.starts_with("/api/accounts/") => {
                error(404, "not_found", "no such account")
            }
            ("POST", "/api/accounts") => {
                let mut b = r.json();
                if b["name"] == "acme" {
                    return reply(
                        409,
                        json!({"error": "conflict", "message": "name taken", "field": "name"}),
                    );
                }
                b["id"] = 7.into();
                reply(201, b)
            }
            ("POST", "/api/accounts/1/topup") => {
                let mut a = accounts()[0].clone();
                a["balance"] = "15.00".into();
                reply(200, a)
            }
            ("DELETE", "/api/accounts/2") => reply(204, Value::Null),
            ("POST", "/api/logout") => reply(204, Value::Null),
            ("GET", "/api/cdrs") => reply(
                200,
                json!([{"id": 41, "call_id": "c1", "start_ms": 1_700_000_000_000u64,
                        "answer_ms": 1_700_000_001_000u64, "end_ms": 1_700_000_031_000u64,
                        "caller": "441234567", "callee": "3312345678", "source": "192.0.2.1:5060",
                        "account_id": 1, "connection_id": 3, "result_code": 200,
                        "reason": "caller hung up", "duration_secs": 30, "cost": "0.006000"}]),
            ),
            ("GET", "/api/cdrs.csv") => Resp {
                status: 200,
                body: "id,caller\n41,441234567\n".into(),
                content_type: "text/csv",
                extra: vec![],
            },
            ("GET", "/api/status") => Resp {
                extra: vec![],
                ..error(503, "unavailable", "core not answering")
            },
            ("GET", "/api/alerts") => reply(200, json!([])),
            ("GET", "/api/firewall") => reply(
                200,
                json!({"services": [
                    {"service": "sip", "port": 5060, "proto": "udp+tcp", "restricted": true,
                     "allow": ["192.0.2.0/24", "198.51.100.7/32"]},
                    {"service": "management", "port": 8443, "proto": "tcp", "restricted": false,
                     "allow": []}],
                 "deny": [{"cidr": "203.0.113.0/24", "id": 4, "origin": "api"}],
                 "allow_entries": [
                    {"service": "sip", "cidr": "192.0.2.0/24", "origin": "config"},
                    {"service": "sip", "cidr": "198.51.100.7/32", "origin": "api"}]}),
            ),
            // As sipd answers (API.md): 201 with the entry.
            ("POST", "/api/firewall/allow") => reply(
                201,
                json!({"service": "sip", "cidr": "192.0.2.77/32", "origin": "api"}),
            ),
            // Firewall changes need admin; the fake's caller is an operator.
            ("POST", "/api/firewall/deny") => error(403, "forbidden", "operator may not System"),
            ("GET", "/api/bans") => reply(
                200,
                json!([
                    {"prefix": "192.0.2.0/24", "reason": "manual", "by": "staff",
                     "expires_ms": null, "remaining_secs": null,
                     "expired": false, "note": "fraud", "persistent": true},
                    {"prefix": "198.51.100.3/32", "reason": "flood", "by": "ids",
                     "expires_ms": 1, "remaining_secs": 42,
                     "expired": false, "note": null, "persistent": false}]),
            ),
            ("POST", "/api/staff") => reply(
                201,
                json!({"staff": {"id": 7, "username": "ops", "role": "operator",
                                 "enabled": true, "totp": "none", "allowed_hosts": [],
                                 "password_changed_ms": 0, "must_change_password": false,
                                 "created_ms": 0},
                       "strength": {"score": 3, "guesses_log10": 10.5,
                                    "warning": null, "suggestions": ["add a word"]}}),
            ),
            ("POST", "/api/bans") => Resp {
                extra: vec![("Retry-After", "30".into())],
                ..error(429, "locked_out", "slow down")
            },
            _ => error(404, "not_found", "no route"),
        }
    })
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn login_asks_totp_saves_token_then_commands_use_it() {
    let fake = api();
    let tmp = tempfile::tempdir().unwrap();
    let env = env_with(tmp.path(), Some(fake.url()), None);

    let o = sbcctl(
        &env,
        &["login", "--user", "ops", "--password-stdin"],
        "s3cret pass\n",
        &["123456"],
    );
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(o.asked, ["TOTP code: "]);
    assert!(o.out.contains("logged in to http://127.0.0.1"), "{}", o.out);
    assert!(o.out.contains("as ops (admin)"), "{}", o.out);
    let logins: Vec<Value> = fake.requests().iter().map(Req::json).collect();
    assert_eq!(
        logins[0],
        json!({"username": "ops", "password": "s3cret pass"})
    );
    assert_eq!(logins[1]["totp"], "123456");

    let dir = tmp.path().join("sbcctl");
    let file = dir.join("token");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&file), 0o600);
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved["token"], "tok-1");
    assert_eq!(saved["url"], fake.url());

    // Later commands find URL and token in the file (no SBC_URL now).
    let env = env_with(tmp.path(), None, None);
    let o = sbcctl(&env, &["accounts", "list"], "", &[]);
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(fake.last().header("authorization"), Some("Bearer tok-1"));
    assert_eq!(
        o.out,
        "ID  NAME  ENABLED  TARIFF  BALANCE  CPS  SESSIONS  MAX SECS  SIP USER\n\
         1   acme  yes      std     10.00    5    10        3600      acme\n\
         2   beta  no       -       0.50     1    2         60        -\n"
    );

    let o = sbcctl(&env, &["--json", "accounts", "list"], "", &[]);
    assert_eq!(o.code, 0);
    assert_eq!(serde_json::from_str::<Value>(&o.out).unwrap(), accounts());

    // By name: looked up in the list.
    let o = sbcctl(&env, &["accounts", "get", "acme"], "", &[]);
    assert_eq!(o.code, 0, "{}", o.err);
    assert!(o.out.contains("sip.username:"), "{}", o.out);
    assert!(o.out.contains("balance:        10.00"), "{}", o.out);
    let o = sbcctl(&env, &["accounts", "get", "nobody"], "", &[]);
    assert_eq!(o.code, 3, "{}", o.err);

    // Logout forgets the saved session.
    let o = sbcctl(&env, &["logout"], "", &[]);
    assert_eq!(o.code, 0, "{}", o.err);
    assert!(!file.exists());
    let o = sbcctl(&env, &["accounts", "list"], "", &[]);
    assert_eq!(o.code, 2);
    assert!(o.err.contains("not logged in"), "{}", o.err);
}

#[test]
fn login_failures_and_no_terminal() {
    let fake = api();
    let tmp = tempfile::tempdir().unwrap();
    let env = env_with(tmp.path(), Some(fake.url()), None);
    let o = sbcctl(
        &env,
        &["login", "-u", "ops", "--password-stdin"],
        "wrong\n",
        &[],
    );
    assert_eq!(o.code, 2);
    assert!(o.err.contains("wrong username or password"), "{}", o.err);

    // TOTP required and no terminal to ask on: says to pass --totp.
    let o = sbcctl(
        &env,
        &["login", "-u", "ops", "--password-stdin"],
        "s3cret pass\n",
        &[],
    );
    assert_eq!(o.code, 2);
    assert!(o.err.contains("--totp"), "{}", o.err);

    let o = sbcctl(
        &env,
        &[
            "--json",
            "login",
            "-u",
            "ops",
            "--password-stdin",
            "--totp",
            "000000",
        ],
        "s3cret pass\n",
        &[],
    );
    assert_eq!(o.code, 2);
    let e: Value = serde_json::from_str(o.err.trim()).unwrap();
    assert_eq!(e["error"], "totp_invalid");
    assert_eq!(e["status"], 401);
    assert!(!tmp.path().join("sbcctl/token").exists());

    // --print-token --no-save: the token alone, nothing written.
    let o = sbcctl(
        &env,
        &[
            "login",
            "-u",
            "ops",
            "--password-stdin",
            "--totp",
            "123456",
            "--print-token",
            "--no-save",
        ],
        "s3cret pass\n",
        &[],
    );
    assert_eq!((o.code, o.out.as_str()), (0, "tok-1\n"), "{}", o.err);
    assert!(!tmp.path().join("sbcctl/token").exists());
}

#[test]
fn env_token_and_url_override_and_token_stays_with_its_url() {
    let fake = api();
    let other = api();
    let tmp = tempfile::tempdir().unwrap();
    let env = env_with(tmp.path(), Some(fake.url()), Some("tok-1"));
    let o = sbcctl(&env, &["alerts"], "", &[]);
    assert_eq!((o.code, o.out.as_str()), (0, "no alerts\n"), "{}", o.err);

    // A session saved for one URL is not sent to another.
    let env = env_with(tmp.path(), Some(fake.url()), None);
    sbcctl(
        &env,
        &["login", "-u", "ops", "--password-stdin", "--totp", "123456"],
        "s3cret pass\n",
        &[],
    );
    let o = sbcctl(&env, &["--url", &other.url(), "alerts"], "", &[]);
    assert_eq!(o.code, 2);
    assert!(o.err.contains("the saved session is for"), "{}", o.err);
    assert!(other.requests().is_empty());
}

#[test]
fn exit_codes_follow_the_api() {
    let fake = api();
    let tmp = tempfile::tempdir().unwrap();
    let env = env_with(tmp.path(), Some(fake.url()), Some("tok-1"));

    // 409 → 1, with the field.
    let o = sbcctl(&env, &["accounts", "create", "--name", "acme"], "", &[]);
    assert_eq!(o.code, 1);
    assert!(
        o.err.contains("name taken (409 conflict) [field: name]"),
        "{}",
        o.err
    );
    // 404 → 3
    assert_eq!(sbcctl(&env, &["accounts", "get", "9"], "", &[]).code, 3);
    // 503 → 4
    let o = sbcctl(&env, &["--json", "status"], "", &[]);
    assert_eq!(o.code, 4);
    assert_eq!(
        serde_json::from_str::<Value>(o.err.trim()).unwrap()["exit"],
        4
    );
    // 429 → 5, Retry-After shown.
    let o = sbcctl(&env, &["bans", "add", "192.0.2.9"], "", &[]);
    assert_eq!(o.code, 5);
    assert!(o.err.contains("retry after 30 s"), "{}", o.err);
    // 401 → 2, with a hint.
    let env_bad = env_with(tmp.path(), Some(fake.url()), Some("stale"));
    let o = sbcctl(&env_bad, &["accounts", "list"], "", &[]);
    assert_eq!(o.code, 2);
    assert!(o.err.contains("sbcctl login"), "{}", o.err);
    // Nobody listening → 4.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let env_down = env_with(tmp.path(), Some(format!("http://{closed}")), Some("tok-1"));
    assert_eq!(sbcctl(&env_down, &["accounts", "list"], "", &[]).code, 4);
    // Usage errors → 1, before any request.
    let before = fake.requests().len();
    assert_eq!(
        sbcctl(&env, &["accounts", "topup", "1", "5,00"], "", &[]).code,
        1
    );
    assert_eq!(
        sbcctl(&env, &["firewall", "deny", "10.0.0.1/8"], "", &[]).code,
        1
    );
    assert_eq!(
        sbcctl(&env, &["cdrs", "list", "--from", "yesterday"], "", &[]).code,
        1
    );
    assert_eq!(sbcctl(&env, &["accounts", "frob"], "", &[]).code, 1);
    assert_eq!(sbcctl(&env, &["accounts", "update", "1"], "", &[]).code, 1);
    assert_eq!(fake.requests().len(), before);
    // https is required without the hidden flag.
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = run(
        ["sbcctl", "alerts"],
        &env,
        &mut Io {
            out: &mut out,
            err: &mut err,
            stdin: &mut &b""[..],
            prompt: &mut Answers::default(),
        },
    );
    assert_eq!(code, 1);
    assert!(String::from_utf8(err).unwrap().contains("HTTPS only"));
}

#[test]
fn bodies_queries_and_outputs() {
    let fake = api();
    let tmp = tempfile::tempdir().unwrap();
    let env = env_with(tmp.path(), Some(fake.url()), Some("tok-1"));

    let o = sbcctl(
        &env,
        &[
            "accounts",
            "create",
            "--name",
            "gamma",
            "--tariff",
            "std",
            "--balance",
            "20.00",
            "--cps-limit",
            "3",
            "--sip-username",
            "gam",
            "--sip-password-stdin",
            "--data",
            r#"{"max_call_secs": 99, "name": "overridden"}"#,
        ],
        "digest-pw\n",
        &[],
    );
    assert_eq!(o.code, 0, "{}", o.err);
    assert!(o.out.starts_with("created account 7\n"), "{}", o.out);
    let req = fake.last();
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(
        req.json(),
        json!({"name": "gamma", "tariff": "std", "balance": "20.00", "cps_limit": 3,
               "max_call_secs": 99, "sip": {"username": "gam", "password": "digest-pw"}})
    );

    let o = sbcctl(
        &env,
        &["accounts", "topup", "acme", "5.00", "--note", "pay"],
        "",
        &[],
    );
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(o.out, "account 1: added 5.00; balance 15.00\n");
    assert_eq!(fake.last().json(), json!({"amount": "5.00", "note": "pay"}));

    // 204: a message for people, nothing for --json.
    let o = sbcctl(&env, &["accounts", "delete", "2"], "", &[]);
    assert_eq!((o.code, o.out.as_str()), (0, "deleted account 2\n"));
    assert_eq!(fake.last().method, "DELETE");
    let o = sbcctl(&env, &["--json", "accounts", "delete", "2"], "", &[]);
    assert_eq!((o.code, o.out.as_str()), (0, ""));

    let o = sbcctl(
        &env,
        &[
            "cdrs",
            "list",
            "--account",
            "1",
            "--from",
            "2023-11-14",
            "--limit",
            "1",
            "--result",
            "200",
        ],
        "",
        &[],
    );
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(
        fake.last().target,
        "/api/cdrs?limit=1&account=1&from_ms=1699920000000&result=200"
    );
    assert_eq!(
        o.out,
        "ID  START (UTC)          CALLER     CALLEE      ACCOUNT  CONNECTION  RESULT  REASON          SECS  COST\n\
         41  2023-11-14 22:13:20  441234567  3312345678  1        3           200     caller hung up  30    0.006000\n"
    );
    assert_eq!(o.err, "more may follow: --after 41\n");

    let o = sbcctl(&env, &["cdrs", "list", "--csv", "--after", "40"], "", &[]);
    assert_eq!((o.code, o.out.as_str()), (0, "id,caller\n41,441234567\n"));
    assert_eq!(fake.last().target, "/api/cdrs.csv?after=40");
}

#[test]
fn firewall() {
    let fake = api();
    let tmp = tempfile::tempdir().unwrap();
    let env = env_with(tmp.path(), Some(fake.url()), Some("tok-1"));
    let o = sbcctl(&env, &["firewall", "list"], "", &[]);
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(
        o.out,
        "SERVICE     PORT  PROTO    RESTRICTED  ALLOW\n\
         sip         5060  udp+tcp  yes         192.0.2.0/24,198.51.100.7/32\n\
         management  8443  tcp      no          -\n\
         \n\
         ALLOW ENTRY  CIDR             ORIGIN\n\
         sip          192.0.2.0/24     config\n\
         sip          198.51.100.7/32  api\n\
         \n\
         DENY ID  CIDR            ORIGIN\n\
         4        203.0.113.0/24  api\n"
    );
    // A bare address is sent as a /32.
    let o = sbcctl(&env, &["firewall", "allow", "sip", "192.0.2.77"], "", &[]);
    assert_eq!(
        (o.code, o.out.as_str()),
        (
            0,
            "sip: allowed 192.0.2.77/32\n\
             cidr:     192.0.2.77/32\n\
             origin:   api\n\
             service:  sip\n"
        ),
        "{}",
        o.err
    );
    assert_eq!(
        fake.last().json(),
        json!({"service": "sip", "cidr": "192.0.2.77/32"})
    );
    // Changes need admin: the refusal says so.
    let o = sbcctl(&env, &["firewall", "deny", "198.51.100.0/24"], "", &[]);
    assert_eq!(o.code, 2, "{}", o.err);
    assert!(
        o.err.contains("firewall changes need the admin role"),
        "{}",
        o.err
    );
}

#[test]
fn bans_show_permanent_and_stored() {
    let fake = api();
    let tmp = tempfile::tempdir().unwrap();
    let env = env_with(tmp.path(), Some(fake.url()), Some("tok-1"));
    let o = sbcctl(&env, &["bans", "list"], "", &[]);
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(
        o.out,
        "PREFIX           REASON  BY     REMAINING SECS  EXPIRED  STORED  NOTE\n\
         192.0.2.0/24     manual  staff  permanent       no       yes     fraud\n\
         198.51.100.3/32  flood   ids    42              no       no      -\n"
    );
}

#[test]
fn staff_add_reads_staff_and_strength() {
    let fake = api();
    let tmp = tempfile::tempdir().unwrap();
    let env = env_with(tmp.path(), Some(fake.url()), Some("tok-1"));
    let o = sbcctl(
        &env,
        &[
            "staff",
            "add",
            "ops",
            "--role",
            "operator",
            "--password-stdin",
            "--must-change-password=false",
        ],
        "Plaid-Otter-Lantern-42\n",
        &[],
    );
    assert_eq!(o.code, 0, "{}", o.err);
    assert!(o.out.starts_with("created staff user 7\n"), "{}", o.out);
    assert!(o.out.contains("username:              ops\n"), "{}", o.out);
    assert!(
        o.out.contains("strength: 3/4\nsuggestion: add a word\n"),
        "{}",
        o.out
    );
    assert_eq!(
        fake.last().json(),
        json!({"username": "ops", "role": "operator", "password": "Plaid-Otter-Lantern-42",
               "allowed_hosts": [], "must_change_password": false})
    );
}

#[test]
fn completions_need_no_server() {
    let o = sbcctl(&Env::default(), &["completions", "bash"], "", &[]);
    assert_eq!(o.code, 0);
    assert!(o.out.contains("sbcctl"));
    assert!(o.out.contains("accounts"));
}

#[test]
fn the_binary_exits_with_documented_codes() {
    let bin = env!("CARGO_BIN_EXE_sbcctl");
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(bin)
            .args(args)
            .env_remove("SBC_URL")
            .env_remove("SBC_TOKEN")
            .env("XDG_CONFIG_HOME", tmp.path())
            .output()
            .unwrap()
    };
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("4  server or connection failure"));
    assert_eq!(run(&[]).status.code(), Some(1));
    assert_eq!(run(&["frobnicate"]).status.code(), Some(1));
    let o = run(&["accounts", "list"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not logged in to https://127.0.0.1:8443"));
}

/// Real TLS: `openssl s_server -WWW` serving `api/alerts` from a temporary directory with a
/// self-signed certificate like sipd's. Unverified: refused (4, with the --ca hint); `--ca`:
/// trusted; `--insecure`: accepted. Skipped when openssl is not installed.
#[test]
fn tls_with_ca_file_and_insecure() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let openssl = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(d)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
    };
    let made = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-subj",
        "/CN=sipd",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
    ]);
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED tls_with_ca_file_and_insecure: openssl not available");
        return;
    }
    std::fs::create_dir(d.join("api")).unwrap();
    std::fs::write(d.join("api/alerts"), "[]").unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new("openssl")
        .args([
            "s_server", "-quiet", "-WWW", "-cert", "cert.pem", "-key", "key.pem",
        ])
        .args(["-accept", &format!("127.0.0.1:{port}")])
        .current_dir(d)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < end, "s_server did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let url = format!("https://127.0.0.1:{port}");
    let env = env_with(d, Some(url), Some("tok"));
    let ca = d.join("cert.pem");
    let plain = |args: &[&str]| {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = run(
            std::iter::once("sbcctl").chain(args.iter().copied()),
            &env,
            &mut Io {
                out: &mut out,
                err: &mut err,
                stdin: &mut &b""[..],
                prompt: &mut Answers::default(),
            },
        );
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    };
    let unverified = plain(&["alerts"]);
    let trusted = plain(&["--ca", ca.to_str().unwrap(), "alerts"]);
    let insecure = plain(&["--insecure", "alerts"]);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(unverified.0, 4, "{unverified:?}");
    assert!(unverified.2.contains("--ca"), "{unverified:?}");
    assert_eq!(
        (trusted.0, trusted.1.as_str()),
        (0, "no alerts\n"),
        "{trusted:?}"
    );
    assert_eq!(
        (insecure.0, insecure.1.as_str()),
        (0, "no alerts\n"),
        "{insecure:?}"
    );
}

/// `sbcctl events`: events as JSON lines or lines for people; when the stream ends (sipd
/// restarting) it says so on stderr, waits and reconnects; a refused token ends it.
#[test]
fn events_follow_the_stream_and_reconnect() {
    let served = Arc::new(Mutex::new(0u32));
    let s2 = served.clone();
    let fake = Fake::start(move |r| {
        if r.header("authorization") != Some("Bearer tok-1") {
            return error(401, "token_invalid", "invalid session token");
        }
        assert_eq!(r.target, "/api/events");
        let mut n = s2.lock().unwrap();
        *n += 1;
        let body = format!(
            ": connected\n\nevent: ban_added\ndata: {{\"prefix\":\"192.0.2.{n}/32\",\"reason\":\"manual\",\"by\":\"staff\",\"expires_ms\":null}}\n\n: keep-alive\n\nevent: call_ended\ndata: {{\"id\":{n},\"cause\":\"caller hung up\",\"hung_up_by\":\"caller\"}}\n\n"
        );
        Resp {
            status: 200,
            body,
            content_type: "text/event-stream",
            extra: Vec::new(),
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let env = env_with(tmp.path(), Some(fake.url()), Some("tok-1"));
    let o = sbcctl(&env, &["--json", "events", "--count", "3"], "", &[]);
    assert_eq!(o.code, 0, "{}", o.err);
    let lines: Vec<Value> = o
        .out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            json!({"event": "ban_added", "data": {"prefix": "192.0.2.1/32", "reason": "manual", "by": "staff", "expires_ms": null}}),
            json!({"event": "call_ended", "data": {"id": 1, "cause": "caller hung up", "hung_up_by": "caller"}}),
            json!({"event": "ban_added", "data": {"prefix": "192.0.2.2/32", "reason": "manual", "by": "staff", "expires_ms": null}}),
        ]
    );
    assert!(o.err.contains("event stream from"), "{}", o.err);
    assert!(o.err.contains("reconnecting in"), "{}", o.err);
    assert!(o.err.contains("reconnected to"), "{}", o.err);

    let o = sbcctl(&env, &["events", "--count", "2"], "", &[]);
    assert_eq!(o.code, 0, "{}", o.err);
    assert!(
        o.out
            .contains("ban_added     192.0.2.3/32 manual by staff until permanent"),
        "{}",
        o.out
    );
    assert!(
        o.out
            .contains("call_ended    #3 caller hung up (by caller)"),
        "{}",
        o.out
    );

    let env = env_with(tmp.path(), Some(fake.url()), Some("stale"));
    let o = sbcctl(&env, &["events"], "", &[]);
    assert_eq!(o.code, 2, "a refused token is not retried: {}", o.err);
}
