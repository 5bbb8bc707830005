//! `sipd backup`, `sipd restore` and `sipd store check` against real processes: a backup
//! taken from a running `sipd run` (userspace data plane on loopback) while the management
//! API tops an account up as fast as it can, restored into a fresh data directory, served
//! again by a new `sipd run`; and `store check` on a store with planted damage.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use sipd::config::Config;
use sipd::mgmt::{Actor, LoginAttempt, NewStaff, StaffAuth};
use sipd::store::{Account, AuditFilter, AuditKind, Micros, Role, Store};

const OPER_PW: &str = "Plaid-Otter-Lantern-42";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(dir: &Path, data: &Path, pepper: &Path, mgmt: u16) -> PathBuf {
    let sip = free_port();
    let media = 24_000 + (std::process::id() % 300) as u16 * 20;
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
instance = "bkt{pid}"
[management]
listen = "127.0.0.1:{mgmt}"
pepper_file = "{pepper}"
[management.argon2]
memory_kib = 8192
iterations = 1
[firewall]
management_allow = ["127.0.0.1/32"]
"#,
        data = data.display(),
        max = media + 19,
        pid = std::process::id(),
        pepper = pepper.display(),
    );
    let path = dir.join(format!("sbc-{mgmt}.toml"));
    std::fs::write(&path, toml).unwrap();
    path
}

fn sipd(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sipd"))
        .arg("-c")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A `sipd run`, killed on drop.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn start(config: &Path, log: &Path) -> Running {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sipd"))
            .arg("-c")
            .arg(config)
            .arg("run")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        let mut r = Running {
            child,
            log: log.to_path_buf(),
        };
        let end = Instant::now() + Duration::from_secs(60);
        while !r.log().contains("sipd ready") {
            if let Some(st) = r.child.try_wait().unwrap() {
                panic!("sipd exited ({st}):\n{}", r.log());
            }
            assert!(Instant::now() < end, "not ready:\n{}", r.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and a clean exit.
    fn stop(mut self) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "sipd exit {st}:\n{}", self.log());
                return;
            }
            assert!(Instant::now() < end, "sipd did not stop:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .disable_verification(true)
                .build(),
        )
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Waits until no handle of this process holds the store's file lock any more: sled lets
/// go of it from a background thread after the last handle is dropped, and the next
/// `sipd` process gives up after a second.
fn wait_unlocked(data: &Path) {
    use std::os::fd::AsRawFd;
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let f = std::fs::File::open(data.join("store/db")).unwrap();
        // SAFETY: flock on a file we own; closing it releases the lock.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return;
        }
        assert!(Instant::now() < end, "store still locked");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An account to top up and an operator's session token, made with the library before
/// sipd runs (operators log in without TOTP).
fn provision(config: &Path) -> (u64, String) {
    let cfg = Config::parse(&std::fs::read_to_string(config).unwrap(), config).unwrap();
    let store = Store::open_private(&cfg.data_dir, &cfg.auth.realm).unwrap();
    let a = store
        .put_account(&Account {
            id: 0,
            name: "busy".into(),
            enabled: true,
            sip: None,
            cps_limit: None,
            max_sessions: None,
            balance: Micros(5_000_000),
            tariff_id: None,
            max_call_secs: None,
        })
        .unwrap();
    let auth = StaffAuth::from_config(&cfg, store.has_staff().unwrap()).unwrap();
    let now = SystemTime::now();
    auth.create_staff(
        &store,
        &Actor::system(),
        &NewStaff {
            username: "oper".into(),
            role: Role::Operator,
            password: OPER_PW.into(),
            allowed_hosts: vec![],
            must_change_password: false,
            email: None,
            email_codes: false,
        },
        now,
    )
    .unwrap();
    let token = auth
        .login(
            &store,
            now,
            &LoginAttempt {
                username: "oper",
                password: OPER_PW,
                totp_code: None,
                email_code: None,
                source: "127.0.0.1".parse().unwrap(),
            },
        )
        .unwrap()
        .token;
    (a.id, token)
}

/// The balance and the number of top-up audit entries of account `id` in a stopped store.
fn balance_and_topups(data: &Path, id: u64) -> (i64, i64) {
    let s = Store::open(&data.join("store")).unwrap();
    let bal = s.account(id).unwrap().unwrap().balance.0;
    let topups = s
        .audit(&AuditFilter {
            kind: Some(AuditKind::Update),
            ..AuditFilter::default()
        })
        .into_iter()
        .filter(|e| e.as_ref().unwrap().entry.target.as_deref() == Some("account:busy"))
        .count() as i64;
    assert!(
        s.verify_audit().unwrap().ok(),
        "audit chain of {}",
        data.display()
    );
    (bal, topups)
}

/// Online backup while records change, restore into a fresh data directory, served again.
#[test]
fn online_backup_restores_into_a_fresh_data_dir_and_serves() {
    let d = tempfile::tempdir().unwrap();
    let pepper = d.path().join("pepper");
    let mgmt = free_port();
    let data = d.path().join("data");
    let config = write_config(d.path(), &data, &pepper, mgmt);
    let (id, token) = provision(&config);
    wait_unlocked(&data);
    let sipd_run = Running::start(&config, &d.path().join("sipd.log"));
    assert!(sipd_run.log().contains("admin socket listening"));

    // Top-ups as fast as the API takes them, while backups are taken.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let base = format!("https://127.0.0.1:{mgmt}");
    let writer = {
        let (stop, done, token, base) = (stop.clone(), done.clone(), token.clone(), base.clone());
        std::thread::spawn(move || {
            let agent = agent();
            while !stop.load(Ordering::Relaxed) {
                let r = agent
                    .post(format!("{base}/api/accounts/{id}/topup"))
                    .header("Authorization", format!("Bearer {token}"))
                    .send_json(json!({"amount": "1"}))
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let wait_for = |n: u64| {
        let end = Instant::now() + Duration::from_secs(60);
        while done.load(Ordering::Relaxed) < n {
            assert!(
                Instant::now() < end,
                "top-ups stalled at {}",
                done.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(5);
    let bk = d.path().join("backup");
    let o = sipd(&config, &["backup", bk.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("backed up by the running sipd"),
        "{}",
        text(&o)
    );
    let manifest: Value = serde_json::from_slice(&o.stdout).unwrap();
    let at_backup = done.load(Ordering::Relaxed);
    wait_for(at_backup + 5);
    // A second one into the same directory is refused; a store check or restore while sipd
    // runs is refused and says why.
    let o = sipd(&config, &["backup", bk.to_str().unwrap()]);
    assert!(
        !o.status.success() && text(&o).contains("not an empty directory"),
        "{}",
        text(&o)
    );
    let o = sipd(&config, &["store", "check"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("sipd is running"), "{}", text(&o));
    let o = sipd(&config, &["restore", bk.to_str().unwrap()]);
    assert!(
        !o.status.success() && text(&o).contains("sipd is running"),
        "{}",
        text(&o)
    );
    another_user_is_refused(d.path(), &config, &data, &sipd_run);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    sipd_run.stop();

    // The live store went on after the copy; the copy is one point in time of it.
    let (live_bal, live_topups) = balance_and_topups(&data, id);
    assert_eq!(live_bal, 5_000_000 + live_topups * 1_000_000);
    assert_eq!(live_topups as u64, done.load(Ordering::Relaxed));

    // Restore into a fresh data directory (same pepper: staff passwords stay valid).
    let data2 = d.path().join("data2");
    let mgmt2 = free_port();
    let config2 = write_config(d.path(), &data2, &pepper, mgmt2);
    let o = sipd(&config2, &["restore", bk.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("there was no store in place"),
        "{}",
        text(&o)
    );
    let o = sipd(&config2, &["store", "check"]);
    assert!(o.status.success(), "{}", text(&o));
    let (bal, topups) = balance_and_topups(&data2, id);
    wait_unlocked(&data2);
    assert_eq!(bal, 5_000_000 + topups * 1_000_000, "one point in time");
    assert!(
        topups >= 5 && topups as u64 <= at_backup + 1,
        "{topups} top-ups in the copy, {at_backup} when it returned"
    );
    assert!(topups < live_topups, "writes went on after the copy");
    assert_eq!(manifest["trees"]["accounts"], 1, "{manifest:#}");

    // Served again: the restored session token works and shows the restored balance.
    let sipd2 = Running::start(&config2, &d.path().join("sipd2.log"));
    let mut r = agent()
        .get(format!("https://127.0.0.1:{mgmt2}/api/accounts/{id}"))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(v["balance"], Micros(bal).to_string(), "{v:#}");
    sipd2.stop();
    eprintln!(
        "backup: {topups} of {live_topups} top-ups in the copy; writes paused {} ms",
        manifest["writes_paused_ms"]
    );
}

/// A local user other than sipd's who reaches the admin socket (here by loosening the
/// directory and socket modes on purpose) is refused by its peer credentials. Needs root to
/// act as another user; skipped otherwise.
fn another_user_is_refused(top: &Path, config: &Path, data: &Path, run: &Running) {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED another_user_is_refused: needs root to act as another user");
        return;
    }
    let mode =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    let open = tempfile::tempdir().unwrap();
    mode(open.path(), 0o777);
    let cfg = open.path().join("sbc.toml");
    std::fs::copy(config, &cfg).unwrap();
    mode(&cfg, 0o644);
    let sock = data.join("admin.sock");
    mode(top, 0o711);
    mode(data, 0o711);
    mode(&sock, 0o666);
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_sipd"))
        .arg("-c")
        .arg(&cfg)
        .arg("backup")
        .arg(open.path().join("stolen"))
        .output()
        .unwrap();
    mode(&sock, 0o600);
    mode(data, 0o700);
    mode(top, 0o700);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("only sipd's own user or root"),
        "{}",
        text(&o)
    );
    assert!(!open.path().join("stolen").exists());
    assert!(
        run.log().contains("peer of another user refused"),
        "{}",
        run.log()
    );
}

/// `store check` names planted damage (exit 1), `--repair` quarantines it (exit 0), and a
/// second check is clean; a torn last CDR did not stop the next CDR from being written.
#[test]
fn store_check_reports_and_repairs_planted_damage() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let config = write_config(d.path(), &data, &d.path().join("pepper"), free_port());
    let (id, _) = provision(&config);
    wait_unlocked(&data);
    {
        // sled lets go of its lock from a background thread after the last handle drops.
        let end = Instant::now() + Duration::from_secs(30);
        let db = loop {
            match sled::open(data.join("store")) {
                Ok(db) => break db,
                Err(e) => assert!(Instant::now() < end, "{e}"),
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // A torn account and a torn last CDR: the first half of a record.
        db.open_tree("accounts")
            .unwrap()
            .insert(id.to_be_bytes(), &br#"{"v":1,"d":{"id":1,"na"#[..])
            .unwrap();
        db.open_tree("cdrs")
            .unwrap()
            .insert(
                1u64.to_be_bytes(),
                &br#"{"v":1,"d":{"id":1,"call":{"call_"#[..],
            )
            .unwrap();
        db.flush().unwrap();
    }
    wait_unlocked(&data);
    let o = sipd(&config, &["store", "check"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    for want in [
        "PROBLEM  accounts 1",
        "PROBLEM  cdrs 1",
        "PROBLEM  accounts_by_name busy",
    ] {
        assert!(t.contains(want), "{want}: {t}");
    }
    let o = sipd(&config, &["store", "check", "--repair"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("REPAIRED cdrs 1"), "{}", text(&o));
    let o = sipd(&config, &["store", "check", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["left"].as_u64(), v["quarantined"].as_u64()),
        (Some(0), Some(2)),
        "{v:#}"
    );
}
