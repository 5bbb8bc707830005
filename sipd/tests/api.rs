//! The management API against a real `sipd run` on loopback (userspace data plane, unique
//! ports and instance name, temporary data directory, pepper outside it): login with and
//! without TOTP, replay, back-off, allowed hosts, expired and revoked tokens, roles, one
//! audit entry per change, validation errors naming the field, TLS versions (checked with
//! `openssl s_client`), security headers, `/metrics` as Prometheus text, alerts, firewall,
//! bans, the connection allow list and the certificate reload.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sipd::config::Config;

#[path = "api/ban_details.rs"]
mod ban_details;
#[path = "api/customers.rs"]
mod customers;
#[path = "api/events.rs"]
mod events;
use sipd::mgmt::{Actor, LoginAttempt, NewStaff, StaffAuth};
use sipd::store::{Role, Store};

const ADMIN_PW: &str = "Correct-Horse-Battery-9";
const USER_PW: &str = "Plaid-Otter-Lantern-42";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Sipd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    base: String,
    port: u16,
    agent: ureq::Agent,
}

impl Drop for Sipd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Resp {
    status: u16,
    headers: BTreeMap<String, String>,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
    fn field(&self) -> String {
        self.json()["field"].as_str().unwrap_or_default().to_owned()
    }
}

impl Sipd {
    /// `sipd run` until "sipd ready" (log appended to sipd.log).
    fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("sipd.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sipd"))
            .arg("-c")
            .arg(self.dir.path().join("sbc.toml"))
            .arg("run")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(20);
        let before = self.log().matches("sipd ready").count();
        while self.log().matches("sipd ready").count() == before {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("sipd exited ({st}):\n{}", self.log());
            }
            assert!(Instant::now() < end, "not ready:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and a clean exit within 10 s.
    fn stop(&mut self) {
        let pid = self.child.as_ref().map(|c| c.id()).unwrap();
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                assert!(st.success(), "sipd exit {st}:\n{}", self.log());
                self.child = None;
                return;
            }
            assert!(Instant::now() < end, "sipd did not stop:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sipd.log")).unwrap_or_default()
    }

    fn req(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        let url = format!("{}{path}", self.base);
        let auth = token.map(|t| format!("Bearer {t}"));
        let r = match (method, body) {
            ("GET", _) => {
                let mut b = self.agent.get(&url);
                if let Some(a) = &auth {
                    b = b.header("Authorization", a);
                }
                b.call()
            }
            ("DELETE", None) => {
                let mut b = self.agent.delete(&url);
                if let Some(a) = &auth {
                    b = b.header("Authorization", a);
                }
                b.call()
            }
            ("DELETE", Some(v)) => {
                let mut b = self.agent.delete(&url).force_send_body();
                if let Some(a) = &auth {
                    b = b.header("Authorization", a);
                }
                b.send_json(&v)
            }
            (m, v) => {
                let mut b = match m {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    _ => unreachable!(),
                };
                if let Some(a) = &auth {
                    b = b.header("Authorization", a);
                }
                b.send_json(v.unwrap_or(json!({})))
            }
        };
        let mut r = r.unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()));
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        Resp {
            status: r.status().as_u16(),
            headers,
            text: r.body_mut().read_to_string().unwrap_or_default(),
        }
    }

    fn ok(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
        let r = self.req(method, path, Some(token), body);
        assert!(
            (200..300).contains(&r.status),
            "{method} {path}: {} {}",
            r.status,
            r.text
        );
        if r.text.is_empty() {
            Value::Null
        } else {
            r.json()
        }
    }

    fn login(&self, user: &str, pw: &str, totp: Option<&str>) -> Resp {
        let mut b = json!({"username": user, "password": pw});
        if let Some(c) = totp {
            b["totp"] = json!(c);
        }
        self.req("POST", "/api/login", None, Some(b))
    }

    fn last_audit_id(&self, admin: &str) -> u64 {
        let v = self.ok("GET", "/api/audit?limit=100000", admin, None);
        v.as_array()
            .unwrap()
            .last()
            .map_or(0, |e| e["id"].as_u64().unwrap())
    }

    /// The entries after `after`; asserts there is exactly one, of `kind` on `target`.
    fn one_audit(&self, admin: &str, after: u64, kind: &str, target: &str) -> Value {
        let v = self.ok("GET", &format!("/api/audit?after={after}"), admin, None);
        let v = v.as_array().unwrap();
        assert_eq!(v.len(), 1, "exactly one audit entry expected: {v:#?}");
        assert_eq!(v[0]["kind"], kind, "{:#}", v[0]);
        assert_eq!(v[0]["target"], target, "{:#}", v[0]);
        assert_eq!(v[0]["actor"], "admin", "{:#}", v[0]);
        assert_eq!(v[0]["result"], "success", "{:#}", v[0]);
        v[0].clone()
    }

    /// Logs `user` in with `USER_PW` and no TOTP code; returns the session token.
    fn session(&self, user: &str) -> String {
        self.login(user, USER_PW, None).json()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A staff member created by `admin`; returns the new id.
    fn create_staff(&self, admin: &str, name: &str, role: &str, hosts: Value) -> u64 {
        let v = self.ok(
            "POST",
            "/api/staff",
            admin,
            Some(json!({"username": name, "role": role, "password": USER_PW,
                        "allowed_hosts": hosts, "must_change_password": false})),
        );
        v["staff"]["id"].as_u64().unwrap()
    }

    /// The codes of the alerts the API reports now.
    fn alert_codes(&self, admin: &str) -> Vec<String> {
        self.ok("GET", "/api/alerts", admin, None)
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["code"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The management certificate that `sipd run` made (self-signed) in its data directory.
    fn cert_path(&self) -> PathBuf {
        self.dir.path().join("data/mgmt-tls.crt")
    }
}

fn b32_decode(s: &str) -> Vec<u8> {
    let mut bits = 0u64;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').chars() {
        let v = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
            .find(c.to_ascii_uppercase())
            .unwrap() as u64;
        bits = (bits << 5) | v;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn write_config(dir: &Path, mgmt: u16) -> PathBuf {
    let sip = free_port();
    // Two daemons of this file run at once: the management port tells them apart.
    let media = 20_000 + ((std::process::id() + u32::from(mgmt)) % 400) as u16 * 20;
    let toml = format!(
        r#"data_dir = "{data}"
[sip]
udp = ["127.0.0.1:{sip}"]
tcp = ["127.0.0.1:{sip}"]
[media]
port_min = {media}
port_max = {max}
[dataplane]
mode = "userspace"
instance = "apit{pid}m{mgmt}"
[management]
listen = "127.0.0.1:{mgmt}"
pepper_file = "{pepper}"
[management.argon2]
memory_kib = 8192
iterations = 1
[management.backoff]
first_secs = 1
max_secs = 1
[firewall]
management_allow = ["127.0.0.1/32"]
[management.connections]
max_event_streams = 2
[bans]
capacity = 4
"#,
        data = dir.join("data").display(),
        max = media + 19,
        pid = std::process::id(),
        pepper = dir.join("pepper").display(),
    );
    let path = dir.join("sbc.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// `sipd init`, an expired session made with the library's injectable clock, then `sipd run`.
/// Returns the server, the admin's TOTP secret and the expired token.
fn start() -> (Sipd, Vec<u8>, String) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port);
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{ADMIN_PW}\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sipd"))
        .arg("-c")
        .arg(&config)
        .args(["init", "--username", "admin", "--password-file"])
        .arg(&pw)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = text
        .split("enter the secret ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("secret in the init output");
    let secret = b32_decode(secret);

    // A session that expired an hour ago: logged in "three hours ago" by the library.
    let cfg = Config::parse(&std::fs::read_to_string(&config).unwrap(), &config).unwrap();
    let expired = {
        let store = Store::open(&cfg.store_dir()).unwrap();
        let auth = StaffAuth::from_config(&cfg, store.has_staff().unwrap()).unwrap();
        let then = SystemTime::now() - Duration::from_secs(3 * 3600);
        auth.create_staff(
            &store,
            &Actor::system(),
            &NewStaff {
                username: "old".into(),
                role: Role::ReadOnly,
                password: USER_PW.into(),
                allowed_hosts: vec![],
                must_change_password: false,
                email: None,
                email_codes: false,
            },
            then,
        )
        .unwrap();
        auth.login(
            &store,
            then,
            &LoginAttempt {
                username: "old",
                password: USER_PW,
                totp_code: None,
                email_code: None,
                source: "127.0.0.1".parse().unwrap(),
            },
        )
        .unwrap()
        .token
    };

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .disable_verification(true)
                .build(),
        )
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let mut s = Sipd {
        child: None,
        dir,
        base: format!("https://127.0.0.1:{port}"),
        port,
        agent,
    };
    s.run();
    (s, secret, expired)
}

/// A strict reader of the Prometheus text format 0.0.4: every line is a comment, a HELP, a
/// TYPE (once per family, before its samples) or a sample `name{l="v",…} value`.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    fn name_ok(n: &str) -> bool {
        let mut c = n.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
    }
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    assert!(text.ends_with('\n'), "must end with a newline");
    for (i, line) in text.lines().enumerate() {
        let at = format!("line {}: {line:?}", i + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut p = rest.splitn(3, ' ');
            match p.next() {
                Some("HELP") => {
                    assert!(name_ok(p.next().unwrap_or("")), "{at}");
                }
                Some("TYPE") => {
                    let n = p.next().unwrap_or("");
                    let t = p.next().unwrap_or("");
                    assert!(name_ok(n), "{at}");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{at}"
                    );
                    assert!(
                        types.insert(n.into(), t.into()).is_none(),
                        "TYPE twice: {at}"
                    );
                }
                _ => {}
            }
            continue;
        }
        assert!(!line.starts_with('#'), "{at}");
        let (series, value) = match line.find('{') {
            Some(b) => {
                let close = line
                    .rfind('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {at}"));
                let name = &line[..b];
                let labels = &line[b + 1..close];
                // label="value" pairs, values with \\ \" \n escapes only.
                let mut chars = labels.chars().peekable();
                while chars.peek().is_some() {
                    let lname: String = chars.by_ref().take_while(|&c| c != '=').collect();
                    assert!(name_ok(&lname), "label name {lname:?}: {at}");
                    assert_eq!(chars.next(), Some('"'), "{at}");
                    loop {
                        match chars.next() {
                            Some('\\') => assert!(
                                matches!(chars.next(), Some('\\' | '"' | 'n')),
                                "bad escape: {at}"
                            ),
                            Some('"') => break,
                            Some('\n') | None => panic!("unterminated value: {at}"),
                            Some(_) => {}
                        }
                    }
                    match chars.next() {
                        Some(',') | None => {}
                        Some(c) => panic!("unexpected {c:?}: {at}"),
                    }
                }
                assert!(name_ok(name), "{at}");
                assert!(types.contains_key(name), "sample before its TYPE: {at}");
                (line[..=close].to_owned(), line[close + 1..].trim())
            }
            None => {
                let (n, v) = line.split_once(' ').unwrap_or_else(|| panic!("{at}"));
                assert!(name_ok(n), "{at}");
                assert!(types.contains_key(n), "sample before its TYPE: {at}");
                (n.to_owned(), v.trim())
            }
        };
        let mut parts = value.split(' ');
        let v = parts.next().unwrap();
        let v: f64 = match v {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("value: {at}")),
        };
        if let Some(ts) = parts.next() {
            ts.parse::<i64>()
                .unwrap_or_else(|_| panic!("timestamp: {at}"));
        }
        assert!(parts.next().is_none(), "{at}");
        assert!(out.insert(series, v).is_none(), "duplicate series: {at}");
    }
    out
}

fn openssl(port: u16, args: &[&str]) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    // Send nothing and close: s_client then ends after the handshake.
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Whether a TCP connection from `local` is served (kept open for a TLS hello) rather than
/// closed at once by the source check.
fn connection_served(local: &str, port: u16) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{local}:0").parse::<SocketAddr>().unwrap())
            .unwrap();
        sock.connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap()
    });
    use std::io::Read;
    let mut s = s.into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        // Still open, waiting for our hello (or it spoke first).
        Ok(n) if n > 0 => true,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            true
        }
        // Closed or reset by the source check.
        _ => false,
    }
}

/// The running daemon and the sessions that the steps after the logins share.
struct Ctx {
    s: Sipd,
    admin: String,
    viewer: String,
    oper: String,
}

/// One daemon for the whole run: each step leaves the state (staff, sessions, records,
/// audit log, back-off) that the next ones build on, so the order matters.
#[test]
fn management_api_end_to_end() {
    let t0 = Instant::now();
    let (s, secret, expired) = start();
    unauthenticated_requests_get_json_errors_and_security_headers(&s);
    expired_token_is_refused(&s, &expired);
    let admin = admin_enrols_totp_and_a_replayed_code_is_refused(&s, &secret);
    first_alerts(&s, &admin);
    staff_are_created_and_audited(&s, &admin);
    allowed_hosts_refuse_before_the_password(&s);
    let viewer = s.session("viewer");
    let oper = s.session("oper");
    let mut c = Ctx {
        s,
        admin,
        viewer,
        oper,
    };
    roles_limit_what_each_may_do(&c);
    let account = tariff_and_account_are_created_and_audited(&c);
    account_update_and_topup_are_audited(&c, account);
    rules_are_created_updated_and_audited(&c, account);
    connections_are_created_deleted_and_audited(&c);
    validation_errors_name_the_field_and_write_nothing(&c, account);
    calls_cdrs_and_status(&c);
    let stream = events::event_stream_and_call_messages(&c);
    metrics_are_prometheus_text(&c);
    bans_are_stored_listed_removed_and_audited(&c);
    ban_details::a_staff_ban_says_who_made_it(&c);
    ban_details::never_banned_sources_are_listed(&c);
    ban_details::an_alert_is_acknowledged_and_audited(&c);
    a_full_ban_table_replaces_the_ban_expiring_soonest(&c);
    firewall_deny_entries_are_audited(&c);
    management_allow_list_guards_connections(&c);
    tls_versions_and_suites(&c);
    certificate_reload_keeps_the_old_pair_on_error(&c);
    logout_and_revoke_all(&c);
    a_failed_login_backs_off(&c);
    // Restarts sipd: the stream opened before ends with the first run.
    firewall_entries_and_bans_survive_a_restart(&mut c);
    ban_details::the_acknowledgement_survives_a_restart(&c);
    events::the_stream_ended_with_sipd(&c.s, stream);
    c.s.stop();
    eprintln!("management API test took {:?}", t0.elapsed());
}

/// Customer users of one account, on a daemon of their own (see `api/customers.rs`).
#[test]
fn customer_users_reach_only_their_account() {
    let (s, secret, _) = start();
    let admin = admin_enrols_totp_and_a_replayed_code_is_refused(&s, &secret);
    customers::customers_reach_only_their_account(&s, &admin);
    let mut s = s;
    s.stop();
}

/// Unauthenticated: security headers, JSON errors.
fn unauthenticated_requests_get_json_errors_and_security_headers(s: &Sipd) {
    let r = s.req("GET", "/api/accounts", None, None);
    assert_eq!(r.status, 401);
    assert_eq!(r.error(), "token_invalid");
    for (h, v) in [
        (
            "strict-transport-security",
            "max-age=63072000; includeSubDomains",
        ),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
        ("content-security-policy", "default-src 'none'"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(r.headers.get(h).map(String::as_str), Some(v), "{h}");
    }
    assert_eq!(s.req("GET", "/nothing", None, None).status, 404);
    assert_eq!(s.req("GET", "/metrics", None, None).status, 401);
}

/// A token made by the library three hours ago has expired.
fn expired_token_is_refused(s: &Sipd, expired: &str) {
    let r = s.req("GET", "/api/me", Some(expired), None);
    assert_eq!(
        (r.status, r.error().as_str()),
        (401, "token_expired"),
        "{}",
        r.text
    );
}

/// The admin without TOTP yet gets a setup-only session; login with TOTP confirms the
/// enrolment, and the same code again is a replay. Returns the admin's token.
fn admin_enrols_totp_and_a_replayed_code_is_refused(s: &Sipd, secret: &[u8]) -> String {
    let r = s.login("admin", ADMIN_PW, None);
    assert_eq!(r.status, 200, "{}", r.text);
    let setup = r.json();
    assert_eq!(setup["setup_only"], true);
    assert_eq!(setup["must"], json!(["enrol_totp"]));
    let setup_token = setup["token"].as_str().unwrap().to_owned();
    let r = s.req("GET", "/api/accounts", Some(&setup_token), None);
    assert_eq!((r.status, r.error().as_str()), (403, "setup_only"));
    assert_eq!(
        s.ok("GET", "/api/me", &setup_token, None)["totp_enrolled"],
        false
    );

    let code = sipd::mgmt::totp::code_at(secret, now_secs(), 6).unwrap();
    let r = s.login("admin", ADMIN_PW, Some(&code));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["setup_only"], false);
    let admin = r.json()["token"].as_str().unwrap().to_owned();
    let r = s.login("admin", ADMIN_PW, Some(&code));
    assert_eq!(
        (r.status, r.error().as_str()),
        (401, "totp_replayed"),
        "{}",
        r.text
    );
    std::thread::sleep(Duration::from_millis(1100)); // the replay locked us out for 1 s
    let r = s.login("admin", ADMIN_PW, None);
    assert_eq!(
        (r.status, r.error().as_str()),
        (401, "totp_required"),
        "{}",
        r.text
    );
    assert_eq!(s.ok("GET", "/api/me", &admin, None)["role"], "admin");
    admin
}

/// The self-signed certificate is reported; no admin is without TOTP yet and the
/// firewall is not permissive.
fn first_alerts(s: &Sipd, admin: &str) {
    let a = s.alert_codes(admin);
    assert!(a.contains(&"self_signed_certificate".into()), "{a:?}");
    assert!(!a.contains(&"admin_without_totp".into()), "{a:?}");
    assert!(!a.contains(&"permissive_firewall".into()), "{a:?}");
}

/// Staff: each change one audit entry (without the password or its hash); a second admin
/// without TOTP raises the alert; the users the later steps log in as; a weak password
/// is refused naming the field.
fn staff_are_created_and_audited(s: &Sipd, admin: &str) {
    let mark = s.last_audit_id(admin);
    let r = s.ok(
        "POST",
        "/api/staff",
        admin,
        Some(json!({"username": "admin2", "role": "admin", "password": USER_PW})),
    );
    assert_eq!(r["staff"]["role"], "admin");
    let e = s.one_audit(admin, mark, "create", "staff:admin2");
    assert!(e["after"].is_object() && e["before"].is_null());
    assert!(!e.to_string().contains(USER_PW) && !e.to_string().contains("argon2"));
    let a = s.alert_codes(admin);
    assert!(a.contains(&"admin_without_totp".into()), "{a:?}");

    s.create_staff(admin, "viewer", "read-only", json!([]));
    s.create_staff(admin, "oper", "operator", json!([]));
    s.create_staff(admin, "remote", "operator", json!(["10.0.0.0/8"]));
    let r = s.req(
        "POST",
        "/api/staff",
        Some(admin),
        Some(json!({"username": "weak", "role": "operator", "password": "short"})),
    );
    assert_eq!(
        (r.status, r.field().as_str()),
        (400, "password"),
        "{}",
        r.text
    );
}

/// Allowed hosts: refused before the password is even looked at, with the answer an unknown
/// user gets (an outsider learns nothing of the account).
fn allowed_hosts_refuse_before_the_password(s: &Sipd) {
    let r = s.login("remote", USER_PW, None);
    assert_eq!(
        (r.status, r.error().as_str()),
        (401, "bad_credentials"),
        "{}",
        r.text
    );
    std::thread::sleep(Duration::from_millis(1100));
}

/// Roles: read-only reads, operators provision but see no staff, firewall changes are
/// admin-only.
fn roles_limit_what_each_may_do(c: &Ctx) {
    let Ctx {
        s,
        viewer,
        oper,
        admin,
        ..
    } = c;
    let mark = s.last_audit_id(admin);
    assert_eq!(s.ok("GET", "/api/accounts", viewer, None), json!([]));
    let r = s.req(
        "POST",
        "/api/tariffs",
        Some(viewer),
        Some(json!({"name": "x", "rate_per_minute": "0.01"})),
    );
    assert_eq!(
        (r.status, r.error().as_str()),
        (403, "forbidden"),
        "{}",
        r.text
    );
    assert_eq!(s.req("GET", "/api/audit", Some(viewer), None).status, 403);
    assert_eq!(s.req("GET", "/api/staff", Some(oper), None).status, 403);
    let r = s.req(
        "POST",
        "/api/firewall/deny",
        Some(oper),
        Some(json!({"cidr": "192.0.2.0/24"})),
    );
    assert_eq!(r.status, 403, "firewall changes are admin-only: {}", r.text);

    // Each refusal is audited: who, from where, what they asked, and why not.
    let v = s.ok("GET", &format!("/api/audit?after={mark}"), admin, None);
    let denials: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "deny")
        .map(|e| {
            assert_eq!(e["result"], "failure", "{e:#}");
            assert!(e["source"].is_string(), "{e:#}");
            assert!(e["reason"].as_str().unwrap().contains("may not"), "{e:#}");
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        denials,
        [
            ("viewer", "POST /api/tariffs"),
            ("viewer", "GET /api/audit"),
            ("oper", "GET /api/staff"),
            ("oper", "POST /api/firewall/deny"),
        ]
        .map(|(a, t)| (a.to_owned(), t.to_owned())),
        "{v:#}"
    );
}

/// Provisioning, one audit entry per change: a tariff by the admin, an account (whose SIP
/// password is never shown) by the operator. Returns the account's id.
fn tariff_and_account_are_created_and_audited(c: &Ctx) -> u64 {
    let Ctx { s, admin, oper, .. } = c;
    let mark = s.last_audit_id(admin);
    let t = s.ok(
        "POST",
        "/api/tariffs",
        admin,
        Some(json!({"name": "std", "rate_per_minute": "0.012", "initial_increment_secs": 60, "increment_secs": 6})),
    );
    assert_eq!(t["rate_per_minute"], "0.012");
    s.one_audit(admin, mark, "create", "tariff:std");

    let mark = s.last_audit_id(admin);
    let acc = s.ok(
        "POST",
        "/api/accounts",
        oper,
        Some(
            json!({"name": "carrier-a", "tariff": "std", "balance": "10",
                    "sip": {"username": "carrier-a", "password": "Kq9!Vt4m-Plover-82"}}),
        ),
    );
    assert_eq!(acc["balance"], "10.00");
    assert_eq!(
        acc["sip"],
        json!({"username": "carrier-a", "auth": "ha1"}),
        "the password was hashed on arrival"
    );
    assert!(!acc.to_string().contains("Kq9!Vt4m"));
    let id = acc["id"].as_u64().unwrap();
    let v = s.ok("GET", &format!("/api/audit?after={mark}"), admin, None);
    assert_eq!(v.as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(v[0]["actor"], "oper");
    assert_eq!(v[0]["target"], "account:carrier-a");
    assert!(!v.to_string().contains("Kq9!Vt4m"));
    id
}

/// A partial update keeps the rest (and the credential); a top-up; each audited with
/// before and after.
fn account_update_and_topup_are_audited(c: &Ctx, id: u64) {
    let Ctx { s, admin, .. } = c;
    let mark = s.last_audit_id(admin);
    let acc = s.ok(
        "PUT",
        &format!("/api/accounts/{id}"),
        admin,
        Some(json!({"cps_limit": 5})),
    );
    assert_eq!(acc["cps_limit"], 5);
    assert_eq!(acc["balance"], "10.00");
    assert_eq!(acc["sip"]["auth"], "ha1", "credential kept");
    let e = s.one_audit(admin, mark, "update", "account:carrier-a");
    assert_eq!(e["before"]["cps_limit"], Value::Null);
    assert_eq!(e["after"]["cps_limit"], 5);

    let mark = s.last_audit_id(admin);
    let acc = s.ok(
        "POST",
        &format!("/api/accounts/{id}/topup"),
        admin,
        Some(json!({"amount": "5.50", "note": "wire transfer"})),
    );
    assert_eq!(acc["balance"], "15.50");
    let e = s.one_audit(admin, mark, "update", "account:carrier-a");
    assert_eq!(
        (
            e["before"]["balance"].clone(),
            e["after"]["balance"].clone()
        ),
        (json!("10.00"), json!("15.50"))
    );
}

/// An authentication rule: created, renamed with a partial update that keeps the rest,
/// listed under its account; each change audited.
fn rules_are_created_updated_and_audited(c: &Ctx, account: u64) {
    let Ctx {
        s, admin, viewer, ..
    } = c;
    let mark = s.last_audit_id(admin);
    let rule = s.ok(
        "POST",
        &format!("/api/accounts/{account}/rules"),
        admin,
        Some(json!({"name": "office", "remote": "203.0.113.0/24", "cli": {"prefix": "44"}})),
    );
    s.one_audit(admin, mark, "create", "rule:carrier-a/office");
    let rid = rule["id"].as_u64().unwrap();
    let mark = s.last_audit_id(admin);
    let rule = s.ok(
        "PUT",
        &format!("/api/rules/{rid}"),
        admin,
        Some(json!({"name": "office2", "cld": {"regex": "^00[1-9]"}})),
    );
    assert_eq!(
        (rule["id"].as_u64(), rule["name"].as_str()),
        (Some(rid), Some("office2"))
    );
    assert_eq!(rule["cli"], json!({"prefix": "44"}));
    s.one_audit(admin, mark, "update", "rule:carrier-a/office");
    assert_eq!(
        s.ok(
            "GET",
            &format!("/api/accounts/{account}/rules"),
            viewer,
            None
        )
        .as_array()
        .unwrap()
        .len(),
        1
    );
}

/// A connection: created and deleted, each audited. Deleting tariff 1 is refused (409 or
/// 404).
fn connections_are_created_deleted_and_audited(c: &Ctx) {
    let Ctx { s, admin, .. } = c;
    let mark = s.last_audit_id(admin);
    let conn = s.ok(
        "POST",
        "/api/connections",
        admin,
        Some(
            json!({"name": "vendor-a", "destination": "198.51.100.7:5070", "cld_prefixes": ["44"]}),
        ),
    );
    assert_eq!(conn["destination"], "198.51.100.7:5070");
    s.one_audit(admin, mark, "create", "connection:vendor-a");
    let cid = conn["id"].as_u64().unwrap();
    let mark = s.last_audit_id(admin);
    assert_eq!(
        s.req(
            "DELETE",
            &format!("/api/connections/{cid}"),
            Some(admin),
            None
        )
        .status,
        204
    );
    s.one_audit(admin, mark, "delete", "connection:vendor-a");
    let r = s.req("DELETE", "/api/tariffs/1", Some(admin), None);
    assert!(r.status == 409 || r.status == 404, "{}", r.text);
}

/// A request the API must refuse with 400 naming a field: (method, path, body, field).
type Invalid = (&'static str, String, Option<Value>, &'static str);

/// The validation cases, in the order they are sent.
fn invalid_requests(account: u64) -> Vec<Invalid> {
    let post = |path: &str, body, field| ("POST", path.to_owned(), Some(body), field);
    let get = |path: &str, field| ("GET", path.to_owned(), None, field);
    vec![
        post(
            "/api/accounts",
            json!({"name": "x", "cps_limit": 0}),
            "cps_limit",
        ),
        post(
            "/api/accounts",
            json!({"name": "x", "sip": {"username": "a b", "password": "p"}}),
            "sip.username",
        ),
        post(
            "/api/accounts",
            json!({"name": "x", "sip": {"username": "ab"}}),
            "sip.password",
        ),
        post(
            "/api/accounts",
            json!({"name": "x", "tariff": "nope"}),
            "tariff",
        ),
        post(
            "/api/accounts",
            json!({"name": "x", "balance": "12.3.4"}),
            "balance",
        ),
        post("/api/accounts", json!({"name": "x", "bogus": 1}), "bogus"),
        post("/api/accounts", json!({"enabled": true}), "name"),
        post(
            "/api/accounts",
            json!({"name": "x", "max_sessions": "ten"}),
            "max_sessions",
        ),
        post("/api/tariffs", json!({"name": "t"}), "rate_per_minute"),
        post(
            "/api/tariffs",
            json!({"name": "t", "rate_per_minute": "cheap"}),
            "rate_per_minute",
        ),
        post(
            "/api/tariffs",
            json!({"name": "t", "rate_per_minute": "1", "increment_secs": 0}),
            "increment_secs",
        ),
        post(
            "/api/connections",
            json!({"name": "c", "destination": "a:b:c"}),
            "destination",
        ),
        post(
            "/api/connections",
            json!({"name": "c", "destination": "h:5060", "cld_prefixes": ["4x"]}),
            "cld_prefixes[0]",
        ),
        // This sipd has no [sip] tls: a TLS upstream could never be called.
        post(
            "/api/connections",
            json!({"name": "c", "destination": "h:5061", "transport": "tls"}),
            "transport",
        ),
        post(
            "/api/connections",
            json!({"name": "c", "destination": "h:5061", "tls_name": "not a name"}),
            "tls_name",
        ),
        post("/api/bans", json!({"addr": "not-an-ip"}), "addr"),
        post("/api/bans", json!({"addr": "192.0.2.7/24"}), "addr"),
        post(
            "/api/bans",
            json!({"addr": "192.0.2.1", "duration_secs": 0}),
            "duration_secs",
        ),
        post("/api/firewall/deny", json!({"cidr": "300.1.1.1/8"}), "cidr"),
        post(
            "/api/firewall/allow",
            json!({"service": "telnet", "cidr": "10.0.0.0/8"}),
            "service",
        ),
        post(
            &format!("/api/accounts/{account}/topup"),
            json!({"amount": "lots"}),
            "amount",
        ),
        post(
            &format!("/api/accounts/{account}/rules"),
            json!({"name": "r", "ip_only": true}),
            "remote",
        ),
        post(
            &format!("/api/accounts/{account}/rules"),
            json!({"name": "r", "remote": "192.0.2.1/32", "ip_only": true, "tls_client_name": "*.carrier.example"}),
            "tls_client_name",
        ),
        // This sipd has no [sip] tls nor tls_client_roots: no call could match the rule.
        post(
            &format!("/api/accounts/{account}/rules"),
            json!({"name": "r", "remote": "192.0.2.1/32", "ip_only": true, "tls_client_name": "carrier.example"}),
            "tls_client_name",
        ),
        get("/api/cdrs?limit=0", "limit"),
        get("/api/cdrs?acount=1", "acount"),
    ]
}

/// Validation: 400 naming the field, a duplicate name is a conflict, and nothing is
/// written (no audit entry).
fn validation_errors_name_the_field_and_write_nothing(c: &Ctx, account: u64) {
    let Ctx { s, admin, .. } = c;
    let mark = s.last_audit_id(admin);
    for (method, path, body, field) in invalid_requests(account) {
        let r = s.req(method, &path, Some(admin), body.clone());
        let at = format!("{method} {path} {}", body.unwrap_or_default());
        assert_eq!(r.status, 400, "{at}: {}", r.text);
        assert_eq!(r.field(), field, "{at}: {}", r.text);
    }
    let r = s.req(
        "POST",
        "/api/tariffs",
        Some(admin),
        Some(json!({"name": "std", "rate_per_minute": "1"})),
    );
    assert_eq!(
        (r.status, r.error().as_str()),
        (409, "conflict"),
        "{}",
        r.text
    );
    assert_eq!(
        s.last_audit_id(admin),
        mark,
        "refused changes leave no audit entry"
    );
}

/// Calls, CDRs (JSON and CSV), status.
fn calls_cdrs_and_status(c: &Ctx) {
    let Ctx {
        s, viewer, oper, ..
    } = c;
    assert_eq!(s.ok("GET", "/api/calls", viewer, None), json!([]));
    assert_eq!(
        s.req("DELETE", "/api/calls/42", Some(oper), None).status,
        404
    );
    assert_eq!(
        s.req("DELETE", "/api/calls/42", Some(viewer), None).status,
        403
    );
    assert_eq!(
        s.ok("GET", "/api/cdrs?result=answered", viewer, None),
        json!([])
    );
    let r = s.req("GET", "/api/cdrs.csv", Some(viewer), None);
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"].starts_with("text/csv"));
    assert!(r.text.starts_with("id,call_id,start_ms,"), "{}", r.text);
    let st = s.ok("GET", "/api/status", viewer, None);
    assert_eq!(st["dataplane"], "userspace");
    assert_eq!(st["active_calls"], 0);
}

/// `/metrics`: strict Prometheus text with the data-plane mode and the main families.
fn metrics_are_prometheus_text(c: &Ctx) {
    let Ctx { s, viewer, .. } = c;
    let r = s.req("GET", "/metrics", Some(viewer), None);
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"].starts_with("text/plain; version=0.0.4"));
    let m = parse_prometheus(&r.text);
    assert_eq!(
        m.get("sbc_dataplane_mode{mode=\"userspace\"}"),
        Some(&1.0),
        "{}",
        r.text
    );
    assert_eq!(m.get("sbc_dataplane_mode{mode=\"xdp-native\"}"), Some(&0.0));
    for k in [
        "sipd_invites_total",
        "sipd_calls_active",
        "sipd_calls_answered_total",
        "sipd_calls_failed_total",
        "sbc_bans",
        "sipd_transport_tcp_open",
        "sipd_mgmt_tls_self_signed",
        "sipd_refusals_total{reason=\"bad_authorization\"}",
        "sipd_refusal_rows",
        "sipd_ids_sources",
        "sipd_cdr_queue_depth",
        "sipd_cdr_queue_dropped_total",
    ] {
        assert!(m.contains_key(k), "{k} missing:\n{}", r.text);
    }
    // The refusal table, for a read-only role: nothing refused yet.
    let r = s.req("GET", "/api/refusals", Some(viewer), None);
    assert_eq!((r.status, r.text.trim()), (200, "[]"));
    assert!(
        m.keys()
            .any(|k| k.starts_with("sbc_dataplane_packets_total{reason=\"drop_banned\"}"))
    );
    assert!(
        m.keys()
            .any(|k| k.starts_with("sipd_transport_events_total{event="))
    );
}

/// Bans: stored, listed, removed, audited; operators may.
fn bans_are_stored_listed_removed_and_audited(c: &Ctx) {
    let Ctx {
        s,
        admin,
        viewer,
        oper,
    } = c;
    let mark = s.last_audit_id(admin);
    let b = s.ok(
        "POST",
        "/api/bans",
        oper,
        Some(json!({"addr": "198.51.100.9", "duration_secs": 600, "reason": "scanner by hand"})),
    );
    assert_eq!(
        (b["reason"].as_str(), b["persistent"].as_bool()),
        (Some("manual"), Some(true))
    );
    let list = s.ok("GET", "/api/bans", viewer, None);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|b| b["prefix"] == "198.51.100.9/32"
                && b["by"] == "staff"
                && b["note"] == "scanner by hand"
                && b["remaining_secs"].as_u64().is_some_and(|r| r > 590))
    );
    assert_eq!(
        s.req("DELETE", "/api/bans/198.51.100.9", Some(oper), None)
            .status,
        204
    );
    assert_eq!(
        s.req("DELETE", "/api/bans/198.51.100.9", Some(oper), None)
            .status,
        404
    );
    let v = s.ok("GET", &format!("/api/audit?after={mark}"), admin, None);
    let kinds: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("create".into(), "ban:198.51.100.9/32".into()),
            ("delete".into(), "ban:198.51.100.9/32".into())
        ]
    );
    // Any prefix: a range, listed and lifted by its CIDR (URL-encoded in the path).
    let r = s.ok(
        "POST",
        "/api/bans",
        oper,
        Some(json!({"addr": "203.0.113.0/24", "duration_secs": 60})),
    );
    assert_eq!(r["prefix"], "203.0.113.0/24");
    let list = s.ok("GET", "/api/bans", viewer, None);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|b| b["prefix"] == "203.0.113.0/24"),
        "{list:#}"
    );
    assert_eq!(
        s.req("DELETE", "/api/bans/203.0.113.0%2F24", Some(oper), None)
            .status,
        204
    );
}

/// `[bans] capacity = 4`: a fifth IPv4 ban replaces the one expiring soonest, counted on
/// `/metrics` and raised as an alert; IPv6 has its own room.
fn a_full_ban_table_replaces_the_ban_expiring_soonest(c: &Ctx) {
    let Ctx { s, admin, oper, .. } = c;
    let add = |prefix: &str, secs: u64| {
        s.ok(
            "POST",
            "/api/bans",
            oper,
            Some(json!({"addr": prefix, "duration_secs": secs})),
        )
    };
    for (i, p) in ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.0/30"]
        .iter()
        .enumerate()
    {
        // The second one ends first.
        add(p, if i == 1 { 100 } else { 1000 + i as u64 });
    }
    add("2001:db8::/64", 50);
    let metrics = |key: &str| {
        let r = s.req("GET", "/metrics", Some(oper), None);
        parse_prometheus(&r.text).get(key).copied()
    };
    assert_eq!(metrics("sbc_bans_replaced_total"), Some(0.0));
    assert!(!s.alert_codes(admin).contains(&"ban_table_full".into()));
    add("198.51.100.0/24", 2000);
    let list = s.ok("GET", "/api/bans", oper, None);
    let prefixes: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(prefixes.len(), 5, "{list:#}");
    assert!(!prefixes.contains(&"192.0.2.2/32"), "{prefixes:?}");
    assert!(prefixes.contains(&"198.51.100.0/24"), "{prefixes:?}");
    assert!(prefixes.contains(&"2001:db8::/64"), "{prefixes:?}");
    assert_eq!(metrics("sbc_bans_replaced_total"), Some(1.0));
    assert_eq!(metrics("sbc_bans_capacity"), Some(4.0));
    assert!(s.alert_codes(admin).contains(&"ban_table_full".into()));
    for p in prefixes {
        let path = format!("/api/bans/{}", p.replace('/', "%2F"));
        assert_eq!(s.req("DELETE", &path, Some(oper), None).status, 204, "{p}");
    }
}

/// Firewall: the management service as configured; a deny entry added and removed, each
/// audited; denying our own address is refused.
fn firewall_deny_entries_are_audited(c: &Ctx) {
    let Ctx {
        s, admin, viewer, ..
    } = c;
    let fw = s.ok("GET", "/api/firewall", viewer, None);
    let mgmt = fw["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["service"] == "management")
        .unwrap_or_else(|| panic!("{fw:#}"))
        .clone();
    assert_eq!(mgmt["port"], s.port);
    assert_eq!(mgmt["restricted"], true);
    assert_eq!(mgmt["allow"], json!(["127.0.0.1/32"]));
    let mark = s.last_audit_id(admin);
    let d = s.ok(
        "POST",
        "/api/firewall/deny",
        admin,
        Some(json!({"cidr": "192.0.2.0/24"})),
    );
    s.one_audit(admin, mark, "create", "firewall:deny:192.0.2.0/24");
    let r = s.req(
        "POST",
        "/api/firewall/deny",
        Some(admin),
        Some(json!({"cidr": "127.0.0.0/8"})),
    );
    assert_eq!(r.status, 409, "own address: {}", r.text);
    let mark = s.last_audit_id(admin);
    assert_eq!(
        s.req(
            "DELETE",
            &format!("/api/firewall/deny/{}", d["id"]),
            Some(admin),
            None
        )
        .status,
        204
    );
    s.one_audit(admin, mark, "delete", "firewall:deny:192.0.2.0/24");
}

/// The management allow list decides which sources get a connection; widening it raises
/// the permissive-firewall alert; only entries added through the API can be removed.
fn management_allow_list_guards_connections(c: &Ctx) {
    let Ctx { s, admin, .. } = c;
    assert!(connection_served("127.0.0.1", s.port));
    assert!(
        !connection_served("127.0.0.2", s.port),
        "127.0.0.2 is outside management_allow"
    );
    let mark = s.last_audit_id(admin);
    s.ok(
        "POST",
        "/api/firewall/allow",
        admin,
        Some(json!({"service": "management", "cidr": "0.0.0.0/0"})),
    );
    s.one_audit(admin, mark, "create", "firewall:allow:management:0.0.0.0/0");
    assert!(connection_served("127.0.0.2", s.port), "allowed now");
    let a = s.alert_codes(admin);
    assert!(a.contains(&"permissive_firewall".into()), "{a:?}");
    let r = s.req(
        "DELETE",
        "/api/firewall/allow",
        Some(admin),
        Some(json!({"service": "management", "cidr": "127.0.0.1/32"})),
    );
    assert_eq!(
        r.status, 409,
        "config entries are not removed here: {}",
        r.text
    );
    assert_eq!(
        s.req(
            "DELETE",
            "/api/firewall/allow",
            Some(admin),
            Some(json!({"service": "management", "cidr": "0.0.0.0/0"}))
        )
        .status,
        204
    );
    assert!(!connection_served("127.0.0.2", s.port));
}

/// TLS: 1.1 refused, 1.3 and 1.2 (ECDHE) accepted, no static-RSA suite, the self-signed
/// certificate names 127.0.0.1.
fn tls_versions_and_suites(c: &Ctx) {
    let s = &c.s;
    let (ok, out) = openssl(s.port, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    assert!(
        !ok && !out.contains("Cipher is ECDHE"),
        "TLS 1.1 accepted:\n{out}"
    );
    let (ok, out) = openssl(s.port, &["-tls1_3"]);
    assert!(ok && out.contains("TLSv1.3"), "TLS 1.3 refused:\n{out}");
    let (ok, out) = openssl(s.port, &["-tls1_2"]);
    assert!(ok && out.contains("ECDHE"), "TLS 1.2 ECDHE refused:\n{out}");
    let (ok, out) = openssl(s.port, &["-tls1_2", "-cipher", "AES256-GCM-SHA384"]);
    assert!(!ok, "static RSA key exchange accepted:\n{out}");
    let cert = s.cert_path();
    let (ok, out) = openssl(
        s.port,
        &[
            "-tls1_3",
            "-CAfile",
            cert.to_str().unwrap(),
            "-verify_return_error",
            "-verify_ip",
            "127.0.0.1",
        ],
    );
    assert!(ok && out.contains("Verify return code: 0 (ok)"), "{out}");
}

/// Certificate reload: a broken file is refused and the old pair kept; admin-only.
fn certificate_reload_keeps_the_old_pair_on_error(c: &Ctx) {
    let Ctx { s, admin, oper, .. } = c;
    let cert = s.cert_path();
    let good = std::fs::read(&cert).unwrap();
    std::fs::File::create(&cert)
        .unwrap()
        .write_all(b"-----BEGIN CERTIFICATE-----\nbroken\n")
        .unwrap();
    let r = s.req("PUT", "/api/cert/reload", Some(admin), None);
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(
        s.ok("GET", "/api/me", admin, None)["username"],
        "admin",
        "still served"
    );
    std::fs::write(&cert, &good).unwrap();
    assert_eq!(
        s.req("PUT", "/api/cert/reload", Some(admin), None).status,
        204
    );
    assert_eq!(
        s.req("PUT", "/api/cert/reload", Some(oper), None).status,
        403
    );
}

/// Logout ends one session; logout/all revokes the viewer's others too.
fn logout_and_revoke_all(c: &Ctx) {
    let Ctx { s, viewer, .. } = c;
    let second = s.session("viewer");
    assert_eq!(
        s.req("POST", "/api/logout", Some(&second), None).status,
        204
    );
    let r = s.req("GET", "/api/me", Some(&second), None);
    assert_eq!((r.status, r.error().as_str()), (401, "token_invalid"));
    assert_eq!(
        s.req("POST", "/api/logout/all", Some(viewer), None).status,
        204
    );
    let r = s.req("GET", "/api/me", Some(viewer), None);
    assert_eq!(r.status, 401, "revoked: {}", r.text);
    assert!(["token_invalid", "token_revoked"].contains(&r.error().as_str()));
}

/// Back-off: a failure locks the user (and source) out; 429 with Retry-After.
fn a_failed_login_backs_off(c: &Ctx) {
    let s = &c.s;
    let r = s.login("viewer", "wrong-password-1", None);
    assert_eq!((r.status, r.error().as_str()), (401, "bad_credentials"));
    let r = s.login("viewer", USER_PW, None);
    assert_eq!(
        (r.status, r.error().as_str()),
        (429, "locked_out"),
        "{}",
        r.text
    );
    assert!(r.headers.contains_key("retry-after"));
}

/// Stored firewall entries and bans come back after a restart.
fn firewall_entries_and_bans_survive_a_restart(c: &mut Ctx) {
    let admin = c.admin.as_str();
    c.s.ok(
        "POST",
        "/api/bans",
        admin,
        Some(json!({"addr": "198.51.100.77", "reason": "kept"})),
    );
    c.s.ok(
        "POST",
        "/api/firewall/deny",
        admin,
        Some(json!({"cidr": "192.0.2.128/25"})),
    );
    c.s.ok(
        "POST",
        "/api/firewall/allow",
        admin,
        Some(json!({"service": "sip", "cidr": "203.0.113.0/24"})),
    );
    c.s.stop();
    c.s.run();
    let s = &c.s;
    // The restart forgot the back-off (it is in memory).
    let oper = s.session("oper");
    let bans = s.ok("GET", "/api/bans", &oper, None);
    assert!(
        bans.as_array()
            .unwrap()
            .iter()
            .any(|b| b["prefix"] == "198.51.100.77/32"
                && b["remaining_secs"].is_null()
                && b["persistent"] == true
                && b["rule"] == "staff:admin"),
        "{bans:#}"
    );
    let fw = s.ok("GET", "/api/firewall", &oper, None);
    assert!(
        fw["deny"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["cidr"] == "192.0.2.128/25"),
        "{fw:#}"
    );
    let sip: Vec<&Value> = fw["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["service"] == "sip")
        .collect();
    assert_eq!(sip.len(), 2, "{fw:#}");
    for x in sip {
        assert_eq!(x["restricted"], true, "an allow list restricts SIP: {fw:#}");
        assert_eq!(x["allow"], json!(["203.0.113.0/24"]));
    }
}
