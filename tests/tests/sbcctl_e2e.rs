//! `sbcctl` end to end (issue 4): a real `sipd run` on loopback (userspace data plane, its
//! management API on 127.0.0.1 with the self-signed certificate passed by `SBC_CA`), provisioned
//! only through the `sbcctl` binary, with Debian's `sipp` as the carrier (UAC) and the vendor
//! (UAS), also on loopback.
//!
//! The admin made by `sipd init` logs in with a TOTP code computed from the secret `init`
//! printed and creates an operator, who provisions a tariff, a connection to the UAS, an
//! account with SIP digest credentials and two auth rules (digest for CLI 44…, IP-only for
//! CLI 55…), and tops it up. A digest-authenticated call goes through; `sbcctl --json cdrs
//! list` finds exactly its CDR (200, the account, caller, callee, a cost), the account's
//! balance went down by that cost, and the audit log has every provisioning change. Then a
//! held call is listed with `sbcctl calls list`, hung up with `sbcctl calls hangup`, the UAC
//! gets the BYE and the CDR says "hung up by operator" and who (`hung_up_by`: `staff:ops`). Last, a logged-out token is refused
//! with `token_invalid` and sipd stops cleanly on SIGTERM.
//!
//! No namespaces and no XDP: no privileges needed. Fixed loopback ports (SIP 25060, API 28443,
//! UAS 25070, UACs 25080/25081, media 25100-25139) used nowhere else in the repository. Every
//! process is stopped by PID when its guard drops; the temporary directory is removed (kept
//! with `SBCT_KEEP=1`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tests::sip::{self, Trace};
use tests::totp::{init_admin, now_secs, totp};
use tests::{require_sipp, tail};

const SIP: &str = "127.0.0.1:25060";
const MGMT: &str = "127.0.0.1:28443";
const UAS: &str = "127.0.0.1:25070";
const UAC: &str = "127.0.0.1:25080";
const UAC_HOLD: &str = "127.0.0.1:25081";
const MEDIA_MIN: u16 = 25_100;
const MEDIA_MAX: u16 = 25_139;

const ADMIN_PW: &str = "Correct-Horse-Battery-9";
const OPS_PW: &str = "Plaid-Otter-Lantern-42";
const CUST_PW: &str = "Mossy-Kettle-Harbour-73";
const SIP_USER: &str = "e2e-acme";
const SIP_PW: &str = "Sip-Secret-e2e-7";
const CLI: &str = "441234567";
const CLI_HOLD: &str = "551234567";
const CLD: &str = "3312345678";

/// `sipd` and `sbcctl` as built by this workspace, built once per test process (never a
/// stale binary), in the target directory this test binary lives in.
fn binaries() -> (PathBuf, PathBuf) {
    let [sipd, sbcctl]: [PathBuf; 2] =
        tests::bins::cargo_bins(&[("sipd", "sipd"), ("tui", "sbcctl")])
            .try_into()
            .expect("two binaries");
    (sipd, sbcctl)
}

/// A child process killed (SIGTERM, then SIGKILL) by PID when dropped.
struct Proc {
    name: &'static str,
    child: Option<Child>,
}

impl Proc {
    fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// SIGTERM, and its exit status within `grace` (then SIGKILL).
    fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        if let Ok(Some(st)) = c.try_wait() {
            return Some(st);
        }
        // SAFETY: kill(2) on our own, not yet reaped, child.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop in {grace:?}: killed", self.name);
        let _ = c.kill();
        c.wait().ok()
    }

    /// Its exit within `timeout` (killed after it).
    fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(st) = self.try_wait() {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop(Duration::from_secs(1));
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

/// The run's temporary directory, removed on drop unless `SBCT_KEEP=1`.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let p =
            std::env::temp_dir().join(format!("sbct-sbcctl-e2e-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("SBCT_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            eprintln!("kept {}", self.0.display());
        }
    }
}

/// One `sbcctl` run.
#[derive(Debug)]
struct Out {
    code: i32,
    out: String,
    err: String,
}

impl Out {
    #[track_caller]
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "sbcctl failed: {self:?}");
        &self.out
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// sipd (API on `MGMT`) and where its files are.
struct Sbc {
    sbcctl: PathBuf,
    dir: PathBuf,
    sipd: Proc,
}

impl Sbc {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sipd.log")).unwrap_or_default()
    }

    /// `sbcctl ARGS` as the staff user whose session lives in config dir `who`, with `stdin`.
    fn ctl(&self, who: &str, args: &[&str], stdin: &str, envs: &[(&str, &str)]) -> Out {
        let cfg = self.dir.join(format!("cfg-{who}"));
        let mut cmd = Command::new(&self.sbcctl);
        cmd.args(args)
            .env("XDG_CONFIG_HOME", &cfg)
            .env("HOME", &cfg)
            .env("SBC_URL", format!("https://{MGMT}"))
            .env("SBC_CA", self.dir.join("data").join("mgmt-tls.crt"))
            .env_remove("SBC_TOKEN")
            .envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn sbcctl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        // sbcctl's own --timeout (30 s) bounds every request.
        let o = child.wait_with_output().expect("sbcctl output");
        Out {
            code: o.status.code().unwrap_or(-1),
            out: String::from_utf8_lossy(&o.stdout).into_owned(),
            err: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// `sbcctl --json ARGS`, successful, parsed.
    #[track_caller]
    fn json(&self, who: &str, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        self.ctl(who, &a, "", &[]).json()
    }

    /// Polls `sbcctl --json ARGS` until `done` holds (at most `timeout`).
    #[track_caller]
    fn json_until(
        &self,
        who: &str,
        args: &[&str],
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let end = Instant::now() + timeout;
        loop {
            let v = self.json(who, args);
            if done(&v) {
                return v;
            }
            assert!(
                Instant::now() < end,
                "sbcctl {args:?}: not there after {timeout:?}: {v:#}\n{}",
                tail(&self.log(), 4000)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Writes sbc.toml, runs `sipd init` (returns the admin's TOTP secret) and `sipd run` until
/// it is ready.
fn start(dir: &Path, sipd: &Path, sbcctl: &Path) -> (Sbc, Vec<u8>) {
    let config = dir.join("sbc.toml");
    let toml = format!(
        r#"data_dir = "{data}"
[sip]
udp = ["{SIP}"]
tcp = ["{SIP}"]
[media]
address = "127.0.0.1"
port_min = {MEDIA_MIN}
port_max = {MEDIA_MAX}
[dataplane]
mode = "userspace"
instance = "sbcctle2e{pid}"
[management]
listen = "{MGMT}"
pepper_file = "{pepper}"
[management.argon2]
memory_kib = 8192
iterations = 1
[firewall]
management_allow = ["127.0.0.1/32"]
"#,
        data = dir.join("data").display(),
        pid = std::process::id(),
        pepper = dir.join("pepper").display(),
    );
    std::fs::write(&config, toml).unwrap();
    let secret = init_admin(sipd, &config, dir, ADMIN_PW);

    let log = std::fs::File::create(dir.join("sipd.log")).unwrap();
    let child = Command::new(sipd)
        .arg("-c")
        .arg(&config)
        .arg("run")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn sipd run");
    let mut sbc = Sbc {
        sbcctl: sbcctl.to_path_buf(),
        dir: dir.to_path_buf(),
        sipd: Proc {
            name: "sipd",
            child: Some(child),
        },
    };
    let end = Instant::now() + Duration::from_secs(20);
    while !sbc.log().contains("sipd ready") {
        if let Some(st) = sbc.sipd.try_wait() {
            panic!("sipd exited ({st}):\n{}", sbc.log());
        }
        assert!(Instant::now() < end, "sipd not ready:\n{}", sbc.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The API is started next to SIP; wait until it takes connections.
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(MGMT).is_err() {
        assert!(Instant::now() < end, "API not listening:\n{}", sbc.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    (sbc, secret)
}

/// A sipp on loopback: `scenario` bound at `local`, with `args` (its files in `dir`).
fn sipp(dir: &Path, name: &'static str, scenario: &str, local: &str, args: &[&str]) -> Proc {
    let local: SocketAddr = local.parse().unwrap();
    let file = |what: &str| dir.join(format!("{name}_{what}"));
    let mut cmd = Command::new("sipp");
    sip::base_args(&mut cmd, scenario, "u1", local, file);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(file("stderr.log")).unwrap());
    Proc {
        name,
        child: Some(cmd.spawn().expect("spawn sipp")),
    }
}

/// What a sipp wrote: its message trace, `<log>` lines, errors and stderr.
fn sipp_files(dir: &Path, name: &str) -> (Trace, String, String) {
    let read =
        |w: &str| std::fs::read_to_string(dir.join(format!("{name}_{w}"))).unwrap_or_default();
    let trace = Trace::parse(&read("messages.log"));
    let logs = read("logs.log");
    let rest = format!(
        "--- errors:\n{}\n--- stderr:\n{}",
        tail(&read("errors.log"), 3000),
        tail(&read("stderr.log"), 2000)
    );
    (trace, logs, rest)
}

/// A decimal money string ("0.03", "10", "-1.5") in micro-units.
fn micros(s: &str) -> i64 {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    assert!(frac.len() <= 6, "{s}");
    let v = int.parse::<i64>().unwrap() * 1_000_000 + format!("{frac:0<6}").parse::<i64>().unwrap();
    if neg { -v } else { v }
}

fn id_of(v: &Value) -> u64 {
    v["id"].as_u64().unwrap_or_else(|| panic!("no id: {v:#}"))
}

#[test]
fn sbcctl_provisions_a_call_and_finds_its_cdr() {
    require_sipp!();
    let started = Instant::now();
    for a in [SIP, MGMT] {
        assert!(
            std::net::TcpListener::bind(a).is_ok(),
            "{a} is in use: another sipd (an earlier run of this test?)"
        );
    }
    let (sipd_bin, sbcctl_bin) = binaries();
    let tmp = TempDir::new();
    let dir = tmp.0.clone();
    let (mut sbc, secret) = start(&dir, &sipd_bin, &sbcctl_bin);

    admin_adds_an_operator(&sbc, &secret);
    operator_logs_in(&sbc);
    let prov = operator_provisions(&sbc);
    tables_show_the_real_values(&sbc, prov.account_id);
    let uas = digest_call_and_its_cdr(&sbc, &dir, &prov);
    let call_id = held_call_hung_up_by_operator(&sbc, &dir, &prov);
    drop(uas);
    audit_has_every_change(&sbc, call_id);
    customers_hang_up_only_their_calls(&sbc, &dir, &prov);
    logged_out_token_is_invalid(&sbc, &dir);

    // ---- sipd stops cleanly ---------------------------------------------------------------
    let st = sbc.sipd.stop(Duration::from_secs(10));
    assert!(
        st.is_some_and(|s| s.success()),
        "sipd exit {st:?}:\n{}",
        tail(&sbc.log(), 4000)
    );
    // How long it took is reported, not asserted: timing belongs in benchmarks, and the
    // clock here also counts the first build of sipd and sbcctl.
    eprintln!("sbcctl end to end: {:.1?}", started.elapsed());
}

/// The admin logs in with a TOTP code and adds an operator.
fn admin_adds_an_operator(sbc: &Sbc, secret: &[u8]) {
    let code = totp(secret, now_secs());
    let login = sbc.ctl(
        "admin",
        &[
            "--json",
            "login",
            "-u",
            "admin",
            "--password-stdin",
            "--totp",
            &code,
        ],
        &format!("{ADMIN_PW}\n"),
        &[],
    );
    let v = login.json();
    assert_eq!(
        (v["role"].as_str(), v["setup_only"].as_bool()),
        (Some("admin"), Some(false)),
        "{v:#}"
    );
    let me = sbc.json("admin", &["me"]);
    assert_eq!(me["username"], "admin");
    assert_eq!(me["totp_enrolled"], true, "{me:#}");
    assert_eq!(me["source"], "127.0.0.1", "{me:#}");

    let v = sbc
        .ctl(
            "admin",
            &[
                "--json",
                "staff",
                "add",
                "ops",
                "--role",
                "operator",
                "--password-stdin",
                "--must-change-password=false",
            ],
            &format!("{OPS_PW}\n"),
            &[],
        )
        .json();
    assert_eq!(v["staff"]["username"], "ops", "{v:#}");
    assert_eq!(v["staff"]["role"], "operator", "{v:#}");
    assert!(v["strength"]["score"].as_u64().is_some(), "{v:#}");
}

/// What the operator provisioned.
struct Provisioned {
    account_id: u64,
    conn: Value,
}

/// The operator logs in; firewall changes are the admin's, refused.
fn operator_logs_in(sbc: &Sbc) {
    let v = sbc
        .ctl(
            "ops",
            &["--json", "login", "-u", "ops", "--password-stdin"],
            &format!("{OPS_PW}\n"),
            &[],
        )
        .json();
    assert_eq!(
        (v["role"].as_str(), v["setup_only"].as_bool()),
        (Some("operator"), Some(false)),
        "{v:#}"
    );
    // Firewall changes are the admin's: refused, exit 2, and sbcctl says why.
    let o = sbc.ctl("ops", &["firewall", "deny", "192.0.2.0/24"], "", &[]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.err.contains("need the admin role"), "{o:?}");
}

/// The operator provisions a tariff, a connection to the UAS, an account with digest
/// credentials, two rules (digest for CLI 44…, IP-only for CLI 55…), and tops it up.
fn operator_provisions(sbc: &Sbc) -> Provisioned {
    let tariff = sbc.json(
        "ops",
        &[
            "tariffs",
            "create",
            "--name",
            "e2e-std",
            "--rate",
            "0.60",
            "--initial-increment-secs",
            "1",
            "--increment-secs",
            "1",
        ],
    );
    assert_eq!(tariff["rate_per_minute"], "0.60", "{tariff:#}");
    let conn = sbc.json(
        "ops",
        &[
            "connections",
            "create",
            "--name",
            "e2e-vendor",
            "--destination",
            UAS,
            "--cld-prefix",
            "33",
        ],
    );
    assert_eq!(conn["destination"], UAS, "{conn:#}");
    assert_eq!(conn["cld_prefixes"], json!(["33"]), "{conn:#}");
    let acct = sbc
        .ctl(
            "ops",
            &[
                "--json",
                "accounts",
                "create",
                "--name",
                "e2e-acme",
                "--tariff",
                "e2e-std",
                "--sip-username",
                SIP_USER,
                "--sip-password-stdin",
            ],
            &format!("{SIP_PW}\n"),
            &[],
        )
        .json();
    let account_id = id_of(&acct);
    assert_eq!(
        acct["sip"],
        json!({"username": SIP_USER, "auth": "ha1"}),
        "a password is stored as HA1 values, never in plain text"
    );
    assert_eq!(micros(acct["balance"].as_str().unwrap()), 0, "{acct:#}");
    let digest_rule = sbc.json(
        "ops",
        &[
            "rules",
            "add",
            "e2e-acme",
            "--name",
            "office",
            "--remote",
            "127.0.0.0/8",
            "--cli-prefix",
            "44",
        ],
    );
    assert_eq!(digest_rule["account_id"], account_id, "{digest_rule:#}");
    assert_eq!(digest_rule["ip_only"], false, "{digest_rule:#}");
    let ip_rule = sbc.json(
        "ops",
        &[
            "rules",
            "add",
            "e2e-acme",
            "--name",
            "hold",
            "--remote",
            "127.0.0.1",
            "--cli-prefix",
            "55",
            "--ip-only",
        ],
    );
    assert_eq!(ip_rule["remote"], "127.0.0.1/32", "{ip_rule:#}");
    let topped = sbc.json(
        "ops",
        &["accounts", "topup", "e2e-acme", "10.00", "--note", "e2e"],
    );
    assert_eq!(micros(topped["balance"].as_str().unwrap()), 10_000_000);
    Provisioned { account_id, conn }
}

/// Tables for people (`accounts list`, `rules list`) show the real values.
fn tables_show_the_real_values(sbc: &Sbc, account_id: u64) {
    let table = sbc.ctl("ops", &["accounts", "list"], "", &[]);
    let row = table
        .ok()
        .lines()
        .find(|l| l.contains("e2e-acme"))
        .unwrap_or_else(|| panic!("{table:?}"))
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(
        row,
        [
            &account_id.to_string(),
            "e2e-acme",
            "yes",
            "e2e-std",
            "10.00",
            "-",
            "-",
            "-",
            SIP_USER
        ],
        "{table:?}"
    );
    let rules = sbc.ctl("ops", &["rules", "list", "e2e-acme"], "", &[]);
    assert!(
        rules.ok().contains("127.0.0.0/8") && rules.out.contains("prefix 44"),
        "{rules:?}"
    );
}

/// A call with digest auth goes through; its CDR is found with sbcctl, the balance went down
/// by its cost. Returns the UAS, which takes the held call next.
fn digest_call_and_its_cdr(sbc: &Sbc, dir: &Path, prov: &Provisioned) -> Proc {
    let Provisioned { account_id, conn } = prov;
    let account_id = *account_id;
    let mut uas = sipp(
        dir,
        "uas",
        "uas.xml",
        UAS,
        &[
            "-m", "2", "-d", "100", "-timeout", "40s", "-set", "rtp_port", "25072",
        ],
    );
    let end = Instant::now() + Duration::from_secs(5);
    while !sip::udp_bound_here(UAS.parse().unwrap()) {
        assert!(uas.try_wait().is_none(), "{:?}", sipp_files(dir, "uas").2);
        assert!(Instant::now() < end, "the UAS did not bind {UAS}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut uac = sipp(
        dir,
        "uac",
        "uac.xml",
        UAC,
        &[
            "-m",
            "1",
            "-d",
            "1500",
            "-timeout",
            "15s",
            "-s",
            CLD,
            "-au",
            SIP_USER,
            "-ap",
            SIP_PW,
            // The digest uri must be the Request-URI (RFC 3261 §22.4); sipp's default is not.
            "-auth_uri",
            &format!("{CLD}@{SIP}"),
            "-set",
            "cli",
            CLI,
            "-set",
            "rtp_port",
            "25082",
            SIP,
        ],
    );
    let st = uac.wait(Duration::from_secs(17));
    let (trace, logs, rest) = sipp_files(dir, "uac");
    assert!(
        st.is_some_and(|s| s.success()),
        "UAC {st:?}\n{trace}\n{logs}\n{rest}\n{}",
        tail(&sbc.log(), 4000)
    );
    let finals = trace.final_counts("INVITE");
    assert_eq!(
        finals,
        BTreeMap::from([(401, 1), (200, 1)]),
        "challenged, then answered:\n{trace}"
    );

    // Its CDR, found with sbcctl --json.
    let q = ["cdrs", "list", "--account", &account_id.to_string()];
    let cdrs = sbc.json_until("ops", &q, Duration::from_secs(5), |v| {
        v.as_array().is_some_and(|a| !a.is_empty())
    });
    let cdrs = cdrs.as_array().unwrap();
    assert_eq!(cdrs.len(), 1, "exactly one CDR: {cdrs:#?}");
    let cdr = &cdrs[0];
    assert_eq!(cdr["result_code"], 200, "{cdr:#}");
    assert_eq!(cdr["account_id"], account_id, "{cdr:#}");
    assert_eq!(cdr["connection_id"], id_of(conn), "{cdr:#}");
    assert_eq!(
        (cdr["caller"].as_str(), cdr["callee"].as_str()),
        (Some(CLI), Some(CLD))
    );
    assert_eq!(cdr["reason"], "caller hung up", "{cdr:#}");
    assert_eq!(cdr["hung_up_by"], "caller", "{cdr:#}");
    assert_eq!(cdr["source"], UAC, "{cdr:#}");
    let secs = cdr["duration_secs"].as_u64().unwrap();
    assert!((1..=4).contains(&secs), "{cdr:#}");
    let cost = micros(cdr["cost"].as_str().expect("cost is a decimal string"));
    // 0.60 per minute, per-second billing: 0.01 a second.
    assert_eq!(cost, secs as i64 * 10_000, "{cdr:#}");
    // The answered filter finds it too; the failed one does not.
    let answered = sbc.json("ops", &["cdrs", "list", "--result", "answered"]);
    assert_eq!(answered.as_array().map(Vec::len), Some(1), "{answered:#}");
    let failed = sbc.json("ops", &["cdrs", "list", "--result", "failed"]);
    assert_eq!(failed, json!([]));

    // The balance went down by the cost.
    let acct = sbc.json("ops", &["accounts", "get", "e2e-acme"]);
    assert_eq!(
        micros(acct["balance"].as_str().unwrap()),
        10_000_000 - cost,
        "{acct:#} after {cdr:#}"
    );
    uas
}

/// A held call is listed with `sbcctl calls list` and hung up with `sbcctl calls hangup`: the
/// UAC gets the BYE, the CDR says "hung up by operator". Returns the call's id.
fn held_call_hung_up_by_operator(sbc: &Sbc, dir: &Path, prov: &Provisioned) -> u64 {
    let Provisioned { account_id, conn } = prov;
    let account_id = *account_id;
    let q = ["cdrs", "list", "--account", &account_id.to_string()];
    let mut held = sipp(
        dir,
        "uac_hold",
        "uac_recv_bye.xml",
        UAC_HOLD,
        &[
            "-m", "1", "-timeout", "20s", "-s", CLD, "-set", "cli", CLI_HOLD, "-set", "rtp_port",
            "25084", SIP,
        ],
    );
    let calls = sbc.json_until("ops", &["calls", "list"], Duration::from_secs(8), |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|c| c["answered"] == true))
    });
    let calls = calls.as_array().unwrap();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let call = &calls[0];
    assert_eq!(call["account_id"], account_id, "{call:#}");
    assert_eq!(
        (call["cli"].as_str(), call["cld"].as_str()),
        (Some(CLI_HOLD), Some(CLD))
    );
    assert_eq!(call["source"], UAC_HOLD, "{call:#}");
    assert_eq!(call["connection_id"], id_of(conn), "{call:#}");
    let call_id = id_of(call);
    let table = sbc.ctl("ops", &["calls", "list"], "", &[]);
    let row = table
        .ok()
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("{table:?}"))
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(
        row[..8],
        [
            call_id.to_string().as_str(),
            call["call_id"].as_str().unwrap(),
            &account_id.to_string(),
            CLI_HOLD,
            CLD,
            UAC_HOLD,
            &id_of(conn).to_string(),
            "yes"
        ],
        "{table:?}"
    );
    let o = sbc.ctl("ops", &["calls", "hangup", &call_id.to_string()], "", &[]);
    assert_eq!(o.ok(), format!("hung up call {call_id}\n"));
    let st = held.wait(Duration::from_secs(10));
    let (trace, logs, rest) = sipp_files(dir, "uac_hold");
    assert!(
        st.is_some_and(|s| s.success()),
        "held UAC {st:?}\n{trace}\n{logs}\n{rest}"
    );
    assert!(
        logs.lines().any(|l| l.starts_with("BYE ")),
        "the UAC got the BYE:\n{logs}\n{trace}"
    );
    let cdrs = sbc.json_until("ops", &q, Duration::from_secs(5), |v| {
        v.as_array().is_some_and(|a| a.len() == 2)
    });
    let cdr2 = &cdrs[1];
    assert_eq!(cdr2["reason"], "hung up by operator", "{cdr2:#}");
    assert_eq!(
        cdr2["hung_up_by"], "staff:ops",
        "the CDR names who hung up: {cdr2:#}"
    );
    assert_eq!(cdr2["result_code"], 200, "{cdr2:#}");
    assert_eq!(cdr2["caller"], CLI_HOLD, "{cdr2:#}");
    // The hang-up is gone from the live list; a second one is a 404 (exit 3).
    assert_eq!(sbc.json("ops", &["calls", "list"]), json!([]));
    let o = sbc.ctl("ops", &["calls", "hangup", &call_id.to_string()], "", &[]);
    assert_eq!(o.code, 3, "{o:?}");
    call_id
}

/// The audit log has every change, by whom, and nothing else.
fn audit_has_every_change(sbc: &Sbc, call_id: u64) {
    let audit = sbc.json("admin", &["audit"]);
    let entries: Vec<(String, String, String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] != "login")
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_owned();
            (s("actor"), s("kind"), s("target"), s("reason"))
        })
        .collect();
    let want = [
        ("admin", "create", "staff:ops".to_owned()),
        // The role denial is audited (who tried what), though it changed nothing.
        ("ops", "deny", "POST /api/firewall/deny".to_owned()),
        ("ops", "create", "tariff:e2e-std".to_owned()),
        ("ops", "create", "connection:e2e-vendor".to_owned()),
        ("ops", "create", "account:e2e-acme".to_owned()),
        ("ops", "create", "rule:e2e-acme/office".to_owned()),
        ("ops", "create", "rule:e2e-acme/hold".to_owned()),
        ("ops", "update", "account:e2e-acme".to_owned()),
        ("ops", "delete", format!("call:{call_id}")),
    ];
    for (actor, kind, target) in &want {
        let n = entries
            .iter()
            .filter(|e| {
                (e.0.as_str(), e.1.as_str(), e.2.as_str()) == (*actor, *kind, target.as_str())
            })
            .count();
        assert_eq!(n, 1, "one {kind} of {target} by {actor}: {entries:#?}");
    }
    assert!(
        entries
            .iter()
            .any(|e| e.2 == "account:e2e-acme" && e.3 == "top-up 10.00: e2e"),
        "{entries:#?}"
    );
    // Nothing else was written (the refused firewall change left only its denial).
    assert_eq!(
        entries.iter().filter(|e| e.1 != "init").count(),
        want.len(),
        "{entries:#?}"
    );
    let filtered = sbc.json("admin", &["audit", "--user", "ops", "--kind", "update"]);
    assert_eq!(filtered.as_array().map(Vec::len), Some(1), "{filtered:#}");
}

/// Customer users (issue 18) through sbcctl: the admin makes one for the account and one for
/// another; each sees only its account; B's hang-up of A's held call is "not found" (exit 3)
/// and leaves it up; A's own hang-up ends it, and the CDR names the customer.
fn customers_hang_up_only_their_calls(sbc: &Sbc, dir: &Path, prov: &Provisioned) {
    let acc = prov.account_id;
    let other = sbc.json("admin", &["accounts", "create", "--name", "e2e-other"]);
    for (user, account) in [
        ("cust-a", acc.to_string()),
        ("cust-b", id_of(&other).to_string()),
    ] {
        let v = sbc
            .ctl(
                "admin",
                &[
                    "--json",
                    "staff",
                    "add",
                    user,
                    "--role",
                    "customer",
                    "--account",
                    &account,
                    "--password-stdin",
                    "--must-change-password=false",
                ],
                &format!("{CUST_PW}\n"),
                &[],
            )
            .json();
        assert_eq!(v["staff"]["role"], "customer", "{v:#}");
        assert!(v["strength"]["score"].as_u64().is_some(), "{v:#}");
        let v = sbc
            .ctl(
                user,
                &["--json", "login", "-u", user, "--password-stdin"],
                &format!("{CUST_PW}\n"),
                &[],
            )
            .json();
        assert_eq!(v["role"], "customer", "{v:#}");
    }
    for args in [
        &["firewall", "list"][..],
        &["staff", "list"],
        &["audit"],
        &["bans", "list"],
    ] {
        let o = sbc.ctl("cust-a", args, "", &[]);
        assert_eq!(o.code, 2, "{args:?} is refused to a customer: {o:?}");
    }
    let mine = sbc.json("cust-a", &["accounts", "list"]);
    let ids: Vec<u64> = mine.as_array().unwrap().iter().map(id_of).collect();
    assert_eq!(ids, [acc], "{mine:#}");
    let cdrs = sbc.json("cust-a", &["cdrs", "list"]);
    assert!(
        cdrs.as_array()
            .unwrap()
            .iter()
            .all(|c| c["account_id"] == acc),
        "{cdrs:#}"
    );
    assert_eq!(cdrs.as_array().unwrap().len(), 2, "{cdrs:#}");
    assert_eq!(sbc.json("cust-b", &["cdrs", "list"]), json!([]));

    // The first UAS took its two calls and is gone: a vendor for this one.
    let mut uas = sipp(
        dir,
        "uas_cust",
        "uas.xml",
        UAS,
        &[
            "-m", "1", "-d", "100", "-timeout", "40s", "-set", "rtp_port", "25072",
        ],
    );
    let end = Instant::now() + Duration::from_secs(5);
    while !sip::udp_bound_here(UAS.parse().unwrap()) {
        assert!(
            uas.try_wait().is_none(),
            "{:?}",
            sipp_files(dir, "uas_cust").2
        );
        assert!(Instant::now() < end, "the UAS did not bind {UAS}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut held = sipp(
        dir,
        "uac_hold_cust",
        "uac_recv_bye.xml",
        UAC_HOLD,
        &[
            "-m", "1", "-timeout", "20s", "-s", CLD, "-set", "cli", CLI_HOLD, "-set", "rtp_port",
            "25084", SIP,
        ],
    );
    let calls = sbc.json_until("cust-a", &["calls", "list"], Duration::from_secs(8), |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|c| c["answered"] == true))
    });
    let call_id = id_of(&calls[0]).to_string();
    assert_eq!(sbc.json("cust-b", &["calls", "list"]), json!([]));
    let o = sbc.ctl("cust-b", &["calls", "hangup", &call_id], "", &[]);
    assert_eq!(o.code, 3, "another account's call is not found: {o:?}");
    let up = sbc.json("cust-a", &["calls", "list"]);
    assert_eq!(up.as_array().map(Vec::len), Some(1), "still up: {up:#}");
    let o = sbc.ctl("cust-a", &["calls", "hangup", &call_id], "", &[]);
    assert_eq!(o.ok(), format!("hung up call {call_id}\n"));
    let st = held.wait(Duration::from_secs(10));
    let (trace, logs, rest) = sipp_files(dir, "uac_hold_cust");
    assert!(
        st.is_some_and(|s| s.success()),
        "held UAC {st:?}\n{trace}\n{logs}\n{rest}"
    );
    let cdrs = sbc.json_until("cust-a", &["cdrs", "list"], Duration::from_secs(5), |v| {
        v.as_array().is_some_and(|a| a.len() == 3)
    });
    assert_eq!(
        cdrs[2]["hung_up_by"],
        format!("staff:cust-a (account #{acc})"),
        "{cdrs:#}"
    );
}

/// A logged-out token is `token_invalid`; `logout` removes the saved token.
fn logged_out_token_is_invalid(sbc: &Sbc, dir: &Path) {
    let tok = sbc
        .ctl(
            "tok",
            &[
                "login",
                "-u",
                "ops",
                "--password-stdin",
                "--print-token",
                "--no-save",
            ],
            &format!("{OPS_PW}\n"),
            &[],
        )
        .ok()
        .trim()
        .to_owned();
    let with_tok = [("SBC_TOKEN", tok.as_str())];
    assert_eq!(sbc.ctl("tok", &["me"], "", &with_tok).code, 0);
    assert_eq!(
        sbc.ctl("tok", &["logout"], "", &with_tok).ok(),
        "logged out\n"
    );
    let o = sbc.ctl("tok", &["--json", "me"], "", &with_tok);
    assert_eq!(o.code, 2, "{o:?}");
    let e: Value = serde_json::from_str(o.err.trim()).unwrap_or_else(|_| panic!("{o:?}"));
    assert_eq!(
        (e["error"].as_str(), e["status"].as_u64()),
        (Some("token_invalid"), Some(401))
    );
    let o = sbc.ctl("ops", &["logout"], "", &[]);
    assert_eq!(o.ok(), "logged out\n");
    assert!(!dir.join("cfg-ops/sbcctl/token").exists());
}
