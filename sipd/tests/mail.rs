//! Email one-time codes end to end: a real `sipd run` mails codes through SMTP to Debian's
//! aiosmtpd (python3-aiosmtpd, `cargo xtask setup`) started by the test on loopback, writing
//! each message into a Maildir the test reads the code from. A code logs in once; a reused
//! one is refused; an expired one is refused (the library on an injected clock, through the
//! same sink); a dead SMTP server gives a clear login error within the deadline and an alert.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use sipd::config::Config;
use sipd::mgmt::{Actor, LoginAttempt, LoginError, NewStaff, StaffAuth};
use sipd::store::{Role, Store};

const PW: &str = "Plaid-Otter-Lantern-42";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (by its own PID) when dropped.
struct Proc(Option<Child>);

impl Proc {
    fn stop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Debian's python has aiosmtpd; a python of pyenv's in PATH may not.
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// aiosmtpd on 127.0.0.1:`port`, delivering into the Maildir `dir`; waits until it accepts.
fn smtp_sink(port: u16, dir: &Path) -> Proc {
    let child = Command::new(python())
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m aiosmtpd (apt-get install python3-aiosmtpd, or cargo xtask setup)");
    let mut p = Proc(Some(child));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Some(st) = p.0.as_mut().unwrap().try_wait().unwrap() {
            panic!("aiosmtpd exited ({st}): is python3-aiosmtpd installed?");
        }
        assert!(Instant::now() < end, "aiosmtpd did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
    p
}

/// The mails delivered so far (Maildir `new/`), oldest first.
fn mails(dir: &Path) -> Vec<String> {
    let mut v: Vec<(SystemTime, String)> = std::fs::read_dir(dir.join("new"))
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    (
                        e.metadata().and_then(|m| m.modified()).unwrap(),
                        std::fs::read_to_string(e.path()).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.into_iter().map(|(_, m)| m).collect()
}

/// Waits (generously) for mail number `n` (1-based) and returns the code in it.
fn code_of_mail(dir: &Path, n: usize) -> (String, String) {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let m: Vec<String> = mails(dir)
            .into_iter()
            .filter(|m| m.contains("sign-in code") || m.contains("code 123456"))
            .collect();
        if m.len() >= n {
            let mail = m[n - 1].clone();
            let code = mail
                .split_whitespace()
                .find(|w| w.len() == 6 && w.bytes().all(|b| b.is_ascii_digit()))
                .unwrap_or_else(|| panic!("no code in the mail:\n{mail}"))
                .to_owned();
            return (code, mail);
        }
        assert!(Instant::now() < end, "mail {n} never arrived");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write_config(dir: &Path, mgmt: u16, smtp: u16) -> PathBuf {
    let sip = free_port();
    let media = 24_000 + (std::process::id() % 400) as u16 * 20;
    let toml = format!(
        r#"data_dir = "{data}"
[sip]
udp = ["127.0.0.1:{sip}"]
[media]
port_min = {media}
port_max = {max}
[dataplane]
mode = "userspace"
instance = "mail{pid}"
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
[smtp]
host = "127.0.0.1"
port = {smtp}
security = "plain"
from = "sbc@example.net"
timeout_secs = 3
alert_to = ["noc@example.net"]
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

fn config(path: &Path) -> Config {
    let mut c = Config::parse(&std::fs::read_to_string(path).unwrap(), path).unwrap();
    c.resolve_against(path.parent().unwrap());
    c
}

fn add_ops(auth: &StaffAuth, store: &Store) {
    auth.create_staff(
        store,
        &Actor::system(),
        &NewStaff {
            username: "ops".into(),
            role: Role::Operator,
            password: PW.into(),
            allowed_hosts: vec![],
            must_change_password: false,
            email: Some("Ops@Example.NET".into()),
            email_codes: true,
        },
        SystemTime::now(),
    )
    .unwrap();
}

struct Api {
    base: String,
    agent: ureq::Agent,
}

impl Api {
    fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value, Duration) {
        let t = Instant::now();
        let mut b = self.agent.post(format!("{}{path}", self.base));
        if let Some(tk) = token {
            b = b.header("Authorization", format!("Bearer {tk}"));
        }
        let mut r = b.send_json(body).unwrap();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        let v = serde_json::from_str(&text).unwrap_or(Value::Null);
        (r.status().as_u16(), v, t.elapsed())
    }

    fn get(&self, path: &str, token: &str) -> Value {
        let mut r = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .unwrap();
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
    }

    /// Logs in, waiting out the 1 s back-off of an earlier failure.
    fn login(&self, code: Option<&str>) -> (u16, Value, Duration) {
        let mut body = json!({"username": "ops", "password": PW});
        if let Some(c) = code {
            body["email_code"] = json!(c);
        }
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.post("/api/login", None, body.clone());
            if r.0 != 429 || r.1["error"] != "locked_out" || Instant::now() > end {
                return r;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn email_codes_through_a_real_smtp_server() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let smtp_port = free_port();
    let mut sink = smtp_sink(smtp_port, &maildir);
    let mgmt = free_port();
    let path = write_config(dir.path(), mgmt, smtp_port);
    let cfg = config(&path);
    {
        let store = Store::open(&cfg.store_dir()).unwrap();
        let auth = StaffAuth::from_config(&cfg, store.has_staff().unwrap()).unwrap();
        add_ops(&auth, &store);
    }

    let log = std::fs::File::create(dir.path().join("sipd.log")).unwrap();
    let mut sipd = Proc(Some(
        Command::new(env!("CARGO_BIN_EXE_sipd"))
            .arg("-c")
            .arg(&path)
            .arg("run")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    ));
    let sipd_log = || std::fs::read_to_string(dir.path().join("sipd.log")).unwrap_or_default();
    let end = Instant::now() + Duration::from_secs(30);
    while !sipd_log().contains("sipd ready") {
        assert!(
            sipd.0.as_mut().unwrap().try_wait().unwrap().is_none(),
            "sipd exited:\n{}",
            sipd_log()
        );
        assert!(Instant::now() < end, "sipd not ready:\n{}", sipd_log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let api = Api {
        base: format!("https://127.0.0.1:{mgmt}"),
        agent: ureq::Agent::config_builder()
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .disable_verification(true)
                    .build(),
            )
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into(),
    };

    // The password alone mails a code, to the address with its domain lowercased.
    let (st, v, _) = api.login(None);
    assert_eq!(
        (st, v["error"].as_str()),
        (401, Some("email_code_sent")),
        "{v}"
    );
    let (code, mail) = code_of_mail(&maildir, 1);
    assert!(mail.contains("Ops@example.net"), "{mail}");
    assert!(mail.contains("From: sbc@example.net"), "{mail}");

    // The code logs in once.
    let (st, v, _) = api.login(Some(&code));
    assert_eq!(st, 200, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    assert_eq!(v["setup_only"], false, "{v}");
    let me = api.get("/api/me", &token);
    assert_eq!(me["email"], "Ops@example.net");
    assert_eq!(me["email_codes"], true);

    // Alerts by mail: the self-signed certificate's, raised at start, to `alert_to`.
    let end = Instant::now() + Duration::from_secs(30);
    while !mails(&maildir)
        .iter()
        .any(|m| m.contains("To: noc@example.net") && m.contains("self_signed_certificate"))
    {
        assert!(
            Instant::now() < end,
            "no alert mail: {:#?}",
            mails(&maildir)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Reused: refused.
    let (st, v, _) = api.login(Some(&code));
    assert_eq!(
        (st, v["error"].as_str()),
        (401, Some("email_code_invalid")),
        "{v}"
    );

    // A dead SMTP server: a clear error within the deadline (3 s), and an alert.
    sink.stop();
    let (st, v, took) = api.login(None);
    assert_eq!(
        (st, v["error"].as_str()),
        (503, Some("email_unavailable")),
        "{v}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let alerts = api.get("/api/alerts", &token);
    assert!(
        alerts
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["code"] == "smtp_failed"),
        "{alerts:#}"
    );
    // A listener that accepts and never speaks: the deadline, not a hang.
    let mute = TcpListener::bind(format!("127.0.0.1:{smtp_port}")).unwrap();
    let (st, v, took) = api.login(None);
    assert_eq!(
        (st, v["error"].as_str()),
        (503, Some("email_unavailable")),
        "{v}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    drop(mute);
    sipd.stop();

    // Expiry, on the library's injected clock, through a fresh sink: a code 5 minutes and
    // a second old is refused.
    let maildir2 = dir.path().join("maildir2");
    let _sink2 = smtp_sink(smtp_port, &maildir2);
    let store = Store::open(&cfg.store_dir()).unwrap();
    let auth = StaffAuth::from_config(&cfg, true).unwrap();
    let now = SystemTime::now();
    let attempt = |code: Option<&str>, at: SystemTime| {
        auth.login(
            &store,
            at,
            &LoginAttempt {
                username: "ops",
                password: PW,
                totp_code: None,
                email_code: code,
                source: "127.0.0.1".parse().unwrap(),
            },
        )
    };
    assert_eq!(attempt(None, now).unwrap_err(), LoginError::EmailCodeSent);
    let (code, _) = code_of_mail(&maildir2, 1);
    assert_eq!(
        attempt(Some(&code), now + Duration::from_secs(301)).unwrap_err(),
        LoginError::EmailCodeExpired
    );
}

/// STARTTLS to aiosmtpd with a certificate of a private CA named in `[smtp] tls_roots`: the
/// mail goes through; without the CA the certificate is refused (it is really checked).
#[test]
fn starttls_checks_the_server_certificate() {
    use sipd::mail::{SmtpConfig, SmtpMailer, SmtpSecurity};
    use sipd::mgmt::Mailer as _;
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (crt, key) = (dir.path().join("smtp.crt"), dir.path().join("smtp.key"));
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    let port = free_port();
    let maildir = dir.path().join("maildir");
    let child = Command::new(python())
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--tlscert")
        .arg(&crt)
        .arg("--tlskey")
        .arg(&key)
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(&maildir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m aiosmtpd");
    let _sink = Proc(Some(child));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < end, "aiosmtpd did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    let cfg = |roots: Option<PathBuf>| SmtpConfig {
        host: Some("localhost".into()),
        port: Some(port),
        security: SmtpSecurity::Starttls,
        from: Some("sbc@example.net".into()),
        tls_roots: roots,
        timeout_secs: 10,
        ..SmtpConfig::default()
    };
    let public_only = SmtpMailer::from_config(&cfg(None)).unwrap().unwrap();
    let e = public_only
        .send("ann@example.net", "s", "no code 1")
        .unwrap_err();
    assert!(matches!(e, sipd::mgmt::MailError::Smtp(_)), "{e}");
    let with_ca = SmtpMailer::from_config(&cfg(Some(crt))).unwrap().unwrap();
    with_ca
        .send("ann@example.net", "s", "code 123456")
        .unwrap_or_else(|e| panic!("STARTTLS send: {e}"));
    let (code, _) = code_of_mail(&maildir, 1);
    assert_eq!(code, "123456");
}
