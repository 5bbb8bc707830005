//! ACME against Debian's `pebble` (an ACME test CA) started here on loopback: a certificate
//! is obtained for the management API and SIP over TLS, renewed when pebble's short
//! validity runs out, kept (with the alert raised) while the CA does not answer, renewed
//! again (alert cleared) when it does; RSA-2048 and ECDSA P-256 keys by configuration; the
//! OCSP response of a responder named in the certificate stapled in the handshake.
//!
//! pebble has a TLS certificate made here with openssl. In the ECDSA test it validates
//! HTTP-01 for real: the names resolve to 127.0.0.1 through pebble-challtestsrv's DNS and
//! pebble fetches the tokens from sipd's responder. In the RSA test every challenge passes
//! (PEBBLE_VA_ALWAYS_VALID=1) and `ocspResponderURL` points at a responder that answers
//! with `openssl ocsp`, signing with pebble's intermediate key. Skipped (with a message) when pebble is not installed
//! (`cargo xtask setup` installs it).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (by its PID) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too; SIGCONT first all the same, so a failed
        // assertion during the outage never leaves a frozen pebble behind.
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGCONT) };
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(self.0.id() as i32, sig) }, 0);
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?}:\n{text}");
    text
}

/// Waits (polling, generous deadline) for `f` to return Some.
fn wait_for<T>(
    what: &str,
    secs: u64,
    mut f: impl FnMut() -> Option<T>,
    log: impl Fn() -> String,
) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "{what}: not within {secs}s\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// An OCSP responder on `l` (loopback): each POSTed request is answered by
/// `openssl ocsp -reqin`, signing with pebble's intermediate (status `unknown`: the index is
/// empty, and any signed answer is what a server staples). Runs until the test process ends.
fn ocsp_responder(l: TcpListener, d: PathBuf) {
    use std::io::{BufRead, BufReader, Read, Write};
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len.min(65_536)];
            if r.read_exact(&mut body).is_err() {
                continue;
            }
            std::fs::write(d.join("req.der"), &body).unwrap();
            let p = |n: &str| d.join(n).display().to_string();
            let ok = Command::new("openssl")
                .args(["ocsp", "-index", &p("index.txt"), "-reqin", &p("req.der")])
                .args(["-respout", &p("resp.der"), "-rsigner", &p("int.pem")])
                .args(["-rkey", &p("int.key"), "-CA", &p("int.pem"), "-ndays", "1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            let resp = if ok {
                std::fs::read(d.join("resp.der")).unwrap_or_default()
            } else {
                Vec::new()
            };
            let head = format!(
                "HTTP/1.1 {}\r\ncontent-type: application/ocsp-response\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                if ok { "200 OK" } else { "500 Error" },
                resp.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&resp);
        }
    });
}

/// pebble with its own CA (for its HTTPS) and an OCSP responder signing with pebble's
/// intermediate.
struct Pebble {
    proc: Proc,
    /// pebble-challtestsrv, the DNS pebble asks when it validates for real.
    _dns: Option<Proc>,
    /// The port pebble's VA fetches HTTP-01 tokens from (sipd's responder listens there).
    http01: u16,
    /// The port pebble's VA connects to for TLS-ALPN-01 (sipd's API listens there then).
    tls_alpn: u16,
    dir: PathBuf,
    directory: String,
}

impl Pebble {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }

    /// `validate`: pebble really fetches the HTTP-01 tokens from sipd's responder, the names
    /// resolving to 127.0.0.1 through pebble-challtestsrv's DNS; otherwise every challenge
    /// passes (PEBBLE_VA_ALWAYS_VALID).
    fn start(dir: &Path, validity_secs: u64, with_ocsp: bool, validate: bool) -> Option<Pebble> {
        if Command::new("pebble").arg("-version").output().is_err() {
            eprintln!("pebble is not installed (cargo xtask setup): skipped");
            return None;
        }
        let d = dir.join("pebble");
        std::fs::create_dir_all(&d).unwrap();
        let p = |n: &str| d.join(n).display().to_string();
        run(Command::new("openssl").args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=test ACME CA",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.pem"),
        ]));
        run(Command::new("openssl").args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &p("tls.key"),
            "-out",
            &p("tls.csr"),
        ]));
        std::fs::write(
            d.join("ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(Command::new("openssl").args([
            "x509",
            "-req",
            "-in",
            &p("tls.csr"),
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &p("ext"),
            "-out",
            &p("tls.pem"),
        ]));
        let (port, mgmt, http01, tls_alpn) = (free_port(), free_port(), free_port(), free_port());
        let mut ocsp_listener = Some(TcpListener::bind("127.0.0.1:0").unwrap());
        let ocsp = ocsp_listener.as_ref().unwrap().local_addr().unwrap().port();
        let cfg = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": p("tls.pem"),
            "privateKey": p("tls.key"),
            "httpPort": http01,
            "tlsPort": tls_alpn,
            "ocspResponderURL": if with_ocsp { format!("http://127.0.0.1:{ocsp}") } else { String::new() },
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity_secs,
        }});
        std::fs::write(d.join("pebble.json"), cfg.to_string()).unwrap();
        let log = std::fs::File::create(d.join("pebble.log")).unwrap();
        let mut dns = None;
        let mut pebble = Command::new("pebble");
        pebble.arg("-config").arg(d.join("pebble.json"));
        if validate {
            let port = free_port();
            let dlog = std::fs::File::create(d.join("dns.log")).unwrap();
            dns = Some(Proc(
                Command::new("pebble-challtestsrv")
                    .args(["-dns01", &format!("127.0.0.1:{port}")])
                    .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                    .args(["-management", &format!("127.0.0.1:{}", free_port())])
                    .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                    .stdin(Stdio::null())
                    .stdout(dlog.try_clone().unwrap())
                    .stderr(dlog)
                    .spawn()
                    .unwrap(),
            ));
            pebble.args(["-dnsserver", &format!("127.0.0.1:{port}")]);
        } else {
            pebble.env("PEBBLE_VA_ALWAYS_VALID", "1");
        }
        let proc = Proc(
            pebble
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let pb = Pebble {
            proc,
            _dns: dns,
            http01,
            tls_alpn,
            dir: d.clone(),
            directory: format!("https://127.0.0.1:{port}/dir"),
        };
        let get = |path: &str| {
            let out = Command::new("curl")
                .args(["-sf", "--cacert", &p("ca.pem")])
                .arg(format!("https://127.0.0.1:{mgmt}{path}"))
                .output()
                .ok()?;
            (out.status.success() && !out.stdout.is_empty()).then_some(out.stdout)
        };
        let int = wait_for("pebble up", 60, || get("/intermediates/0"), || pb.log());
        if with_ocsp {
            let key = get("/intermediate-keys/0").expect("pebble's intermediate key");
            std::fs::write(d.join("int.pem"), int).unwrap();
            std::fs::write(d.join("int.key"), key).unwrap();
            std::fs::write(d.join("index.txt"), "").unwrap();
            ocsp_responder(ocsp_listener.take().unwrap(), d.clone());
        }
        Some(pb)
    }
}

struct Sipd {
    child: Proc,
    dir: PathBuf,
    mgmt: u16,
    sip_tls: u16,
}

impl Sipd {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sipd.log")).unwrap_or_default()
    }

    /// `challenge` `tls-alpn-01` puts the API on the port pebble validates it on.
    fn start(dir: &Path, pebble: &Pebble, key_type: &str, challenge: &str) -> Sipd {
        let alpn = challenge == "tls-alpn-01";
        let mgmt = if alpn { pebble.tls_alpn } else { free_port() };
        let (sip, sip_tls) = (free_port(), free_port());
        let media = 21_000
            + (std::process::id() % 200) as u16 * 30
            + match (key_type, alpn) {
                ("rsa-2048", _) => 0,
                (_, false) => 10,
                (_, true) => 20,
            };
        let toml = format!(
            r#"data_dir = "{data}"
[sip]
udp = ["127.0.0.1:{sip}"]
tcp = []
tls = ["127.0.0.1:{sip_tls}"]
[media]
port_min = {media}
port_max = {max}
[dataplane]
mode = "userspace"
instance = "acme{pid}{k}{c}"
[management]
listen = "127.0.0.1:{mgmt}"
pepper_file = "{pepper}"
metrics_public = true
[firewall]
management_allow = ["127.0.0.1/32"]
[acme]
directory = "{directory}"
email = "noc@example.com"
domains = ["sbc.example.test", "sip.example.test"]
key_type = "{key_type}"
challenge = "{challenge}"
ca_bundle = "{ca}"
http01_listen = "127.0.0.1:{http01}"
retry_secs = 1
retry_max_secs = 4
timeout_secs = 8
ocsp_timeout_secs = 5
"#,
            data = dir.join("data").display(),
            max = media + 9,
            pid = std::process::id(),
            k = &key_type[..1],
            c = &challenge[..1],
            pepper = dir.join("pepper").display(),
            directory = pebble.directory,
            ca = pebble.dir.join("ca.pem").display(),
            http01 = pebble.http01,
        );
        std::fs::write(dir.join("sbc.toml"), toml).unwrap();
        let log = std::fs::File::create(dir.join("sipd.log")).unwrap();
        let child = Proc(
            Command::new(env!("CARGO_BIN_EXE_sipd"))
                .arg("-c")
                .arg(dir.join("sbc.toml"))
                .arg("run")
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let s = Sipd {
            child,
            dir: dir.to_path_buf(),
            mgmt,
            sip_tls,
        };
        wait_for(
            "sipd ready",
            60,
            || s.log().contains("sipd ready").then_some(()),
            || s.log(),
        );
        s
    }

    /// A metric's value on the public /metrics page (None: not on it).
    fn metric(&self, name: &str) -> Option<i64> {
        let out = Command::new("curl")
            .args(["-sk", "--max-time", "10"])
            .arg(format!("https://127.0.0.1:{}/metrics", self.mgmt))
            .output()
            .ok()?;
        let page = String::from_utf8_lossy(&out.stdout).into_owned();
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

/// The certificate `port` serves: (serial, `openssl x509 -text`, the stapled OCSP status
/// line if any).
fn served(port: u16) -> Option<(String, String, Option<String>)> {
    let mut c = Command::new("openssl")
        .args([
            "s_client",
            "-status",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    drop(c.stdin.take());
    let out = c.wait_with_output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // The server's own certificate (the OCSP part before it may print the responder's).
    let server = &text[text.find("Server certificate")?..];
    let pem_start = server.find("-----BEGIN CERTIFICATE-----")?;
    let pem_end = server.find("-----END CERTIFICATE-----")? + "-----END CERTIFICATE-----".len();
    let pem = &server[pem_start..pem_end];
    let mut x = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-text"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    use std::io::Write;
    x.stdin.take()?.write_all(pem.as_bytes()).ok()?;
    let info = String::from_utf8_lossy(&x.wait_with_output().ok()?.stdout).into_owned();
    let serial = info.lines().next()?.strip_prefix("serial=")?.to_owned();
    let ocsp = text
        .lines()
        .find(|l| l.contains("OCSP Response Status:"))
        .map(|l| l.trim().to_owned());
    Some((serial, info, ocsp))
}

/// A pebble certificate on `port` other than `not` (its serial, text, OCSP line).
fn pebble_cert(port: u16, not: Option<&str>) -> Option<(String, String, Option<String>)> {
    served(port).filter(|(serial, info, _)| {
        info.contains("Pebble Intermediate") && Some(serial.as_str()) != not
    })
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn rsa_certificate_is_issued_stapled_renewed_and_kept_through_a_ca_outage() {
    let dir = tempfile::tempdir().unwrap();
    // 24 s validity: renewed when 8 s are left (a third, the default).
    let Some(pebble) = Pebble::start(dir.path(), 24, true, false) else {
        return;
    };
    let s = Sipd::start(dir.path(), &pebble, "rsa-2048", "http-01");
    let log = || format!("{}\n--- pebble:\n{}", s.log(), pebble.log());

    // Issued and served by both the API and SIP over TLS, with an RSA key.
    let (first, info, _) = wait_for(
        "first certificate on the API",
        90,
        || pebble_cert(s.mgmt, None),
        log,
    );
    assert!(
        info.contains("rsaEncryption") && info.contains("2048 bit"),
        "{info}"
    );
    assert!(
        info.contains("DNS:sbc.example.test") && info.contains("DNS:sip.example.test"),
        "{info}"
    );
    wait_for(
        "the same certificate on SIP over TLS",
        30,
        || pebble_cert(s.sip_tls, None).filter(|c| c.1.contains("rsaEncryption")),
        log,
    );
    wait_for(
        "issue counted",
        30,
        || (s.metric("sipd_acme_renewals_total{result=\"ok\"}")? >= 1).then_some(()),
        log,
    );
    let left = s.metric("sipd_acme_cert_expiry_seconds").unwrap();
    assert!((-5..=25).contains(&left), "expiry {left}");

    // Stored privately: the account key and the certificate's key.
    let state = dir.path().join("data/acme");
    assert_eq!(mode(&state.join("key.pem")), 0o600);
    let account = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("account-"))
        .expect("account file");
    assert_eq!(mode(&account.path()), 0o600);

    // The OCSP responder pebble names in the certificate: its answer stapled.
    let (_, _, ocsp) = wait_for(
        "a stapled OCSP response",
        60,
        || served(s.mgmt).filter(|c| c.2.is_some()),
        log,
    );
    assert!(ocsp.unwrap().contains("successful"), "{}", log());

    // Renewed before it runs out: a new certificate on the API.
    wait_for("renewal", 90, || pebble_cert(s.mgmt, Some(&first)), log);
    wait_for(
        "renewal counted",
        30,
        || (s.metric("sipd_acme_renewals_total{result=\"ok\"}")? >= 2).then_some(()),
        log,
    );

    // The CA stops answering: renewal fails, the old certificate stays, the alert is up.
    pebble.proc.signal(libc::SIGSTOP);
    wait_for(
        "the renewal-failed alert",
        120,
        || (s.metric("sipd_acme_renewal_failing") == Some(1)).then_some(()),
        log,
    );
    assert!(
        s.metric("sipd_acme_renewals_total{result=\"failed\"}")
            .unwrap()
            >= 1
    );
    let kept = pebble_cert(s.mgmt, None).expect("still served");
    assert!(s.log().contains("ACME renewal failed"), "{}", s.log());
    // The last certificate issued before the stop (the stored one) is what is served.
    let stored = run(Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(state.join("cert.pem")));
    assert_eq!(stored.trim().strip_prefix("serial="), Some(kept.0.as_str()));
    assert_eq!(served(s.mgmt).unwrap().0, kept.0);

    // The CA answers again: renewed, alert cleared.
    pebble.proc.signal(libc::SIGCONT);
    wait_for(
        "the alert cleared",
        120,
        || (s.metric("sipd_acme_renewal_failing") == Some(0)).then_some(()),
        log,
    );
    wait_for(
        "a certificate after the outage",
        60,
        || pebble_cert(s.mgmt, Some(&kept.0)),
        log,
    );
    drop(s.child);
}

#[test]
fn http01_validated_ecdsa_p256_by_default_and_a_restart_reuses_the_stored_certificate() {
    let dir = tempfile::tempdir().unwrap();
    // A long validity: issued once, not renewed during the test. The HTTP-01 challenges
    // are validated for real: pebble fetches them from sipd's responder.
    let Some(pebble) = Pebble::start(dir.path(), 30 * 86_400, false, true) else {
        return;
    };
    let s = Sipd::start(dir.path(), &pebble, "ecdsa-p256", "http-01");
    let log = || format!("{}\n--- pebble:\n{}", s.log(), pebble.log());
    let (serial, info, ocsp) = wait_for("certificate", 90, || pebble_cert(s.sip_tls, None), log);
    assert!(
        info.contains("id-ecPublicKey") && info.contains("prime256v1"),
        "{info}"
    );
    // pebble validated for real: it fetched the tokens from sipd's responder.
    assert!(s.log().contains("ACME http-01 token served"), "{}", log());
    // pebble named no OCSP responder here: nothing stapled.
    assert!(ocsp.is_none(), "{ocsp:?}");
    drop(s.child);

    // Restarted: the stored certificate is served at once, and not renewed (not due).
    let s = Sipd::start(dir.path(), &pebble, "ecdsa-p256", "http-01");
    let again = pebble_cert(s.mgmt, None).expect("stored certificate served at start");
    assert_eq!(again.0, serial);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        s.metric("sipd_acme_renewals_total{result=\"ok\"}"),
        Some(0),
        "{}",
        s.log()
    );
    drop(s.child);
}

#[test]
fn tls_alpn01_is_validated_on_the_api_port() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pebble) = Pebble::start(dir.path(), 30 * 86_400, false, true) else {
        return;
    };
    let s = Sipd::start(dir.path(), &pebble, "ecdsa-p256", "tls-alpn-01");
    let log = || format!("{}\n--- pebble:\n{}", s.log(), pebble.log());
    // pebble connected to the API's port with ALPN acme-tls/1 and got the challenge
    // certificate: the order was validated and the certificate issued.
    let (_, info, _) = wait_for("certificate", 90, || pebble_cert(s.mgmt, None), log);
    assert!(info.contains("DNS:sbc.example.test"), "{info}");
    assert!(!s.log().contains("ACME http-01 token served"), "{}", log());
    // Without a challenge pending, acme-tls/1 gets no certificate at all.
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-alpn",
            "acme-tls/1",
            "-servername",
            "sbc.example.test",
        ])
        .args(["-connect", &format!("127.0.0.1:{}", s.mgmt)])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("BEGIN CERTIFICATE"), "{text}");
    drop(s.child);
}
