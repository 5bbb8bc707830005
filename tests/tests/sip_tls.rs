//! SIP over TLS through a real `sipd` in network namespaces (Debian's sipp has no TLS: the
//! peers are the rustls ones of `tests::sip::tls`, carrying the raw messages of
//! `tests::sip`). A test CA issues sipd's certificate and the vendor's; sipd trusts only that
//! CA for upstreams (`[sip] tls_roots`).
//!
//! - `call_in_and_out_over_tls_with_relayed_media`: a carrier calls in over TLS, sipd calls the
//!   vendor out over TLS (verifying its certificate), media relayed by the kernel both ways,
//!   BYE answered.
//! - `vendor_with_a_wrong_certificate_is_refused`: a vendor certificate from another CA, then
//!   one from the right CA for another name: sipd refuses the handshake, the caller gets a
//!   5xx, each refusal counted and logged.
//! - `per_source_connection_cap_applies_to_tls`: the TCP per-source cap counts TLS
//!   connections.
//! - `handshake_that_never_completes_is_closed_at_the_deadline`: a connection that never
//!   starts its handshake is closed at `tls_handshake_secs`, counted.
//! - `tls_connection_without_tls_configured_refuses_to_start`: provisioning a TLS upstream
//!   without `[sip] tls` stops sipd at start, instead of skipping it at call time.
//! - `rule_naming_a_client_certificate_admits_only_that_certificate`: the carrier's auth rule
//!   names `tls_client_name`; with client certificates optional (`tls_client_required =
//!   false`), a call without one or with one for another name gets a 403 (counted as
//!   `tls_client_cert`), with the named one it goes through.
//! - `rule_naming_a_client_certificate_without_client_roots_refuses_to_start`.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tests::require_privileged;
use tests::sip::tls::{self, Leaf, TestCa};
use tests::sip::{self as raw, MediaCheck, Msg};

mod sbc;
use sbc::{Net, PACKETS, Plane, Prov, Sbc, Settings, serial};

const TLS_PORT: u16 = 5061;
const WAIT: Duration = Duration::from_secs(15);

fn event(sbc: &Sbc, name: &str) -> u64 {
    sbc.metric(&format!("sipd_transport_events_total{{event=\"{name}\"}}"))
}

/// Polls the counter `name` until it is `want` (up to 10 s); its last value.
fn event_reaches(sbc: &Sbc, name: &str, want: u64) -> u64 {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let v = event(sbc, name);
        if v == want || Instant::now() >= end {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A directory for the test's certificates, removed on drop.
struct Certs(PathBuf);

impl Certs {
    fn new(tag: &str) -> Certs {
        let d = std::env::temp_dir().join(format!("sbct{}-tls-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("cert dir");
        Certs(d)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn relay_ip(net: &Net) -> IpAddr {
    net.topo.relay_caller_if.ip(false)
}

fn vendor_ip(net: &Net) -> IpAddr {
    net.topo.callee_if.ip(false)
}

/// sipd with SIP over TLS on the relay's carrier-facing address (a certificate of `ca`'s for
/// it), trusting only `ca` for upstreams, and a vendor connection over TLS.
fn start(net: &Net, plane: Plane, ca: &TestCa, certs: &Certs, sip_extra: &str) -> Sbc {
    start_prov(net, plane, ca, certs, sip_extra, &tls_vendor_prov(net))
}

/// [`start`] with the provisioning file `prov`.
fn start_prov(
    net: &Net,
    plane: Plane,
    ca: &TestCa,
    certs: &Certs,
    sip_extra: &str,
    prov: &str,
) -> Sbc {
    let relay = relay_ip(net).to_string();
    let (cert, key) = ca.issue(&[&relay]).write(&certs.0, "sipd");
    let roots = ca.write(&certs.0, "ca");
    let set = Settings {
        sip: format!(
            "tls = [\"{relay}:{TLS_PORT}\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
             tls_roots = \"{}\"\n{sip_extra}",
            cert.display(),
            key.display(),
            roots.display()
        ),
        management: "metrics_public = true\n".into(),
        ..Settings::default()
    };
    Sbc::start_provisioned(net, plane, prov, &set)
}

/// The default provisioning with its vendor reached over TLS on [`TLS_PORT`].
fn tls_vendor_prov(net: &Net) -> String {
    let prov = Prov {
        vendors: vec![(TLS_PORT, 20, 10)],
        ..Prov::default()
    };
    prov.toml(net)
        .replace("transport = \"udp\"", "transport = \"tls\"")
}

/// What the vendor saw of one call.
struct VendorSaw {
    invite: String,
    bye: bool,
}

/// A vendor answering one call over TLS with `leaf` at `vendor_ip:5061`: 100, 200 with an
/// SDP naming its RTP socket, then a 200 to the BYE. The INVITE's SDP offer goes to
/// `offer`. Err: the handshake (or the wait for a connection) failed.
fn vendor(
    net: &Net,
    leaf: &Leaf,
    offer: mpsc::Sender<SocketAddr>,
) -> std::thread::JoinHandle<Result<VendorSaw, String>> {
    let at = SocketAddr::new(vendor_ip(net), TLS_PORT);
    let listener = net
        .topo
        .callee
        .enter(|| TcpListener::bind(at))
        .expect("vendor listener");
    let cfg = tls::server_config(leaf);
    let rtp = net.vendor_rtp_addr();
    std::thread::spawn(move || {
        let mut c = tls::accept(&listener, cfg, WAIT).map_err(|e| e.to_string())?;
        let mut seen = Vec::new();
        let invite = c
            .wait_for("INVITE ", "1 INVITE", WAIT, &mut seen)
            .ok_or("no INVITE")?;
        let m = Msg {
            received: true,
            text: invite.clone(),
        };
        if let Some(a) = raw::sdp_media(m.body()) {
            let _ = offer.send(a);
        }
        c.send(&tls::response(&invite, "100 Trying", "v1", at, ""))
            .map_err(|e| e.to_string())?;
        let sdp = raw::audio_sdp(rtp);
        c.send(&tls::response(&invite, "200 OK", "v1", at, &sdp))
            .map_err(|e| e.to_string())?;
        let mut bye = false;
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            let Some(msg) = c.recv(Duration::from_secs(1)) else {
                continue;
            };
            if msg.starts_with("BYE ") {
                c.send(&tls::response(&msg, "200 OK", "v1", at, ""))
                    .map_err(|e| e.to_string())?;
                bye = true;
                break;
            }
        }
        Ok(VendorSaw { invite, bye })
    })
}

/// The carrier's TLS connection to sipd, verifying its certificate against `ca`.
fn carrier(net: &Net, ca: &TestCa) -> tls::TlsSip {
    let relay = relay_ip(net);
    tls::connect_in(
        &net.topo.caller,
        SocketAddr::new(relay, TLS_PORT),
        &relay.to_string(),
        tls::client_config(ca.pem()),
    )
    .expect("carrier's TLS connection to sipd")
}

fn invite(net: &Net, c: &tls::TlsSip, call_id: &str) -> String {
    let local = SocketAddr::new(net.topo.caller_if.ip(false), c.local().port());
    tls::over_tls(&raw::invite(
        local,
        SocketAddr::new(relay_ip(net), TLS_PORT),
        sbc::CLI,
        sbc::CLD,
        call_id,
        net.carrier_rtp_addr().port(),
    ))
}

#[test]
fn call_in_and_out_over_tls_with_relayed_media() {
    require_privileged!();
    let _s = serial();
    let net = Net::new();
    let certs = Certs::new("call");
    let ca = TestCa::new("sbc test CA");
    let sbc = start(&net, Plane::Xdp, &ca, &certs, "");
    let (offer_tx, offer_rx) = mpsc::channel();
    let v = vendor(&net, &ca.issue(&[&vendor_ip(&net).to_string()]), offer_tx);

    let mut c = carrier(&net, &ca);
    let local = SocketAddr::new(net.topo.caller_if.ip(false), c.local().port());
    let relay = SocketAddr::new(relay_ip(&net), TLS_PORT);
    c.send(&invite(&net, &c, "tls-call-1"))
        .expect("send INVITE");
    let mut seen = Vec::new();
    let ok = c
        .wait_for("SIP/2.0 200", "1 INVITE", WAIT, &mut seen)
        .unwrap_or_else(|| {
            panic!(
                "no 200 to the INVITE over TLS; got {seen:#?}\n{}",
                sbc.log_text()
            )
        });
    let okm = Msg {
        received: true,
        text: ok.clone(),
    };
    assert!(
        okm.header("Contact")
            .is_some_and(|c| c.contains("transport=tls")),
        "sipd's Contact toward a TLS caller says transport=tls: {ok}"
    );
    let at_carrier = raw::sdp_media(okm.body()).expect("SDP answer");
    let at_vendor = offer_rx.recv_timeout(WAIT).expect("vendor got an offer");
    c.send(&tls::over_tls(&raw::in_dialog(
        "ACK",
        1,
        local,
        relay,
        "tls-call-1",
        &ok,
    )))
    .expect("send ACK");

    let media = MediaCheck::run(
        &net.carrier_rtp,
        &net.vendor_rtp,
        at_carrier,
        at_vendor,
        PACKETS,
        1,
    );
    media.assert_lossless();

    c.send(&tls::over_tls(&raw::in_dialog(
        "BYE",
        2,
        local,
        relay,
        "tls-call-1",
        &ok,
    )))
    .expect("send BYE");
    let bye_ok = c.wait_for("SIP/2.0 200", "2 BYE", WAIT, &mut seen);
    assert!(bye_ok.is_some(), "BYE answered; got {seen:#?}");
    let saw = v.join().expect("vendor thread").expect("vendor call");
    assert!(saw.bye, "the vendor got the BYE over TLS");
    let inv = Msg {
        received: true,
        text: saw.invite.clone(),
    };
    assert!(
        inv.header("Via")
            .is_some_and(|v| v.starts_with("SIP/2.0/TLS ")),
        "upstream INVITE's Via says TLS: {}",
        saw.invite
    );
    assert!(
        inv.first_line()
            .to_ascii_lowercase()
            .contains("transport=tls")
            && inv
                .header("Contact")
                .is_some_and(|c| c.contains("transport=tls")),
        "upstream INVITE's Request-URI and Contact say transport=tls: {}",
        saw.invite
    );
    assert!(event(&sbc, "tls_handshakes") >= 1);
    assert!(event(&sbc, "tls_connected") >= 1);
    assert_eq!(event(&sbc, "tls_upstream_refused"), 0);
}

#[test]
fn vendor_with_a_wrong_certificate_is_refused() {
    require_privileged!();
    let _s = serial();
    let net = Net::new();
    let certs = Certs::new("wrong");
    let ca = TestCa::new("sbc test CA");
    let sbc = start(&net, Plane::Userspace, &ca, &certs, "");
    let vendor_name = vendor_ip(&net).to_string();
    let other_ca = TestCa::new("somebody else's CA");
    for (n, (what, leaf)) in [
        ("another CA", other_ca.issue(&[&vendor_name])),
        ("another name", ca.issue(&["192.0.2.99", "vendor.invalid"])),
    ]
    .into_iter()
    .enumerate()
    {
        let (offer_tx, _offer_rx) = mpsc::channel();
        let v = vendor(&net, &leaf, offer_tx);
        let mut c = carrier(&net, &ca);
        let call_id = format!("tls-wrong-{n}");
        c.send(&invite(&net, &c, &call_id)).expect("send INVITE");
        let mut seen = Vec::new();
        let fin = c.wait_for("SIP/2.0 5", "1 INVITE", WAIT, &mut seen);
        assert!(
            fin.is_some(),
            "{what}: the caller gets a 5xx; got {seen:#?}\n{}",
            sbc.log_text()
        );
        assert!(
            v.join().expect("vendor thread").is_err(),
            "{what}: the vendor's handshake failed (sipd refused its certificate)"
        );
        assert_eq!(
            event(&sbc, "tls_upstream_refused"),
            n as u64 + 1,
            "{what}: counted"
        );
    }
    assert!(
        sbc.log_text()
            .contains("SIP over TLS to an upstream refused"),
        "logged"
    );
    assert_eq!(event(&sbc, "tls_connected"), 0);
}

#[test]
fn per_source_connection_cap_applies_to_tls() {
    require_privileged!();
    let _s = serial();
    let net = Net::new();
    let certs = Certs::new("cap");
    let ca = TestCa::new("sbc test CA");
    let sbc = start(
        &net,
        Plane::Userspace,
        &ca,
        &certs,
        "tcp_max_per_source = 3\n",
    );
    let held: Vec<tls::TlsSip> = (0..3).map(|_| carrier(&net, &ca)).collect();
    let relay = relay_ip(&net);
    let fourth = tls::connect_in(
        &net.topo.caller,
        SocketAddr::new(relay, TLS_PORT),
        &relay.to_string(),
        tls::client_config(ca.pem()),
    );
    assert!(
        fourth.is_err(),
        "a fourth TLS connection from the same source is refused"
    );
    assert!(event(&sbc, "tcp_refused_per_source") >= 1);
    assert_eq!(event_reaches(&sbc, "tls_handshakes", 3), 3);
    drop(held);
}

#[test]
fn handshake_that_never_completes_is_closed_at_the_deadline() {
    require_privileged!();
    let _s = serial();
    let net = Net::new();
    let certs = Certs::new("hs");
    let ca = TestCa::new("sbc test CA");
    let sbc = start(
        &net,
        Plane::Userspace,
        &ca,
        &certs,
        "tls_handshake_secs = 2\n",
    );
    let to = SocketAddr::new(relay_ip(&net), TLS_PORT);
    let mut s = net
        .topo
        .caller
        .enter(|| TcpStream::connect_timeout(&to, Duration::from_secs(5)))
        .expect("TCP connect");
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    // Generous: the deadline is 2 s, the first-message deadline (10 s) is not what closes it.
    let end = Instant::now() + Duration::from_secs(30);
    let mut closed = false;
    let mut b = [0u8; 64];
    while Instant::now() < end {
        match std::io::Read::read(&mut s, &mut b) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "sipd closed the silent connection");
    assert_eq!(event(&sbc, "tls_handshake_timeouts"), 1);
    assert_eq!(event(&sbc, "tcp_closed_first_message"), 0);
}

/// Stops `sbc`, takes from its sbc.toml the `[sip]` lines `dropped` says, and shows that
/// the same provisioning is then refused everywhere: `sipd import` fails without writing,
/// and `sipd run` exits at start (instead of running and failing at call time), both
/// saying `message`.
fn refused_without(net: &Net, sbc: &mut Sbc, prov: &str, dropped: &[&str], message: &str) {
    sbc.stop();
    let toml = std::fs::read_to_string(&sbc.config).expect("read sbc.toml");
    let kept: Vec<&str> = toml
        .lines()
        .filter(|l| !dropped.iter().any(|d| l.starts_with(&format!("{d} "))))
        .collect();
    std::fs::write(&sbc.config, kept.join("\n") + "\n").expect("write sbc.toml");
    let prov_file = sbc.dir.join("prov-again.toml");
    std::fs::write(&prov_file, prov).expect("write prov");
    let out = sbc.cli(&["import", &prov_file.to_string_lossy()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "import refused: {err}");
    assert!(err.contains(message), "import says why: {err}");

    // The store still holds the records (imported while the setting was there).
    let mut run = net
        .topo
        .relay
        .command(sbc::sipd_bin())
        .arg("-c")
        .arg(&sbc.config)
        .arg("run")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sipd run");
    let end = Instant::now() + Duration::from_secs(30);
    let exited = loop {
        match run.try_wait().expect("wait sipd") {
            Some(st) => break Some(st),
            None if Instant::now() < end => std::thread::sleep(Duration::from_millis(100)),
            None => break None,
        }
    };
    if exited.is_none() {
        // Ours, by its own handle: sipd started when it should have refused.
        let _ = run.kill();
    }
    let out = run.wait_with_output().expect("sipd output");
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(
        exited.is_some_and(|st| !st.success()),
        "sipd refuses to start: {text}"
    );
    assert!(text.contains(message), "start says why: {text}");
}

#[test]
fn tls_connection_without_tls_configured_refuses_to_start() {
    require_privileged!();
    let _s = serial();
    let net = Net::new();
    let certs = Certs::new("notls");
    let ca = TestCa::new("sbc test CA");
    let mut sbc = start(&net, Plane::Userspace, &ca, &certs, "");
    refused_without(
        &net,
        &mut sbc,
        &tls_vendor_prov(&net),
        &["tls", "tls_cert", "tls_key", "tls_roots"],
        "uses transport tls but SIP over TLS is not configured",
    );
}

/// The carrier's rule, named "office", asking for a client certificate for `name`.
fn prov_with_client_name(net: &Net, name: &str) -> String {
    let prov = tls_vendor_prov(net);
    assert!(prov.contains("name = \"office\""));
    format!("{prov}tls_client_name = \"{name}\"\n")
}

#[test]
fn rule_naming_a_client_certificate_admits_only_that_certificate() {
    require_privileged!();
    let _s = serial();
    let net = Net::new();
    let certs = Certs::new("client");
    let ca = TestCa::new("sbc test CA");
    // `start` writes the CA to ca.pem before sipd starts: it is the client roots too.
    let extra = format!(
        "tls_client_roots = \"{}\"\ntls_client_required = false\n",
        certs.0.join("ca.pem").display()
    );
    let prov = prov_with_client_name(&net, "carrier.example");
    let sbc = start_prov(&net, Plane::Userspace, &ca, &certs, &extra, &prov);
    let relay = relay_ip(&net);
    let to = SocketAddr::new(relay, TLS_PORT);
    let connect = |cfg| {
        tls::connect_in(&net.topo.caller, to, &relay.to_string(), cfg)
            .expect("carrier's TLS connection to sipd (client certificates are optional)")
    };
    let refused = [
        ("no certificate", tls::client_config(ca.pem())),
        (
            "a certificate for another name",
            tls::client_config_with_cert(ca.pem(), &ca.issue(&["evil.example"])),
        ),
    ];
    for (n, (what, cfg)) in refused.into_iter().enumerate() {
        let mut c = connect(cfg);
        c.send(&invite(&net, &c, &format!("tls-client-{n}")))
            .expect("send INVITE");
        let mut seen = Vec::new();
        let fin = c.wait_for("SIP/2.0 ", "1 INVITE", WAIT, &mut seen);
        assert!(
            fin.as_deref().is_some_and(|f| f.starts_with("SIP/2.0 403")),
            "{what}: 403; got {fin:?} {seen:#?}\n{}",
            sbc.log_text()
        );
    }
    assert_eq!(
        sbc.metric("sipd_refusals_total{reason=\"tls_client_cert\"}"),
        2,
        "counted as tls_client_cert"
    );

    let (offer_tx, _offer_rx) = mpsc::channel();
    let v = vendor(&net, &ca.issue(&[&vendor_ip(&net).to_string()]), offer_tx);
    let leaf = ca.issue(&["carrier.example"]);
    let mut c = connect(tls::client_config_with_cert(ca.pem(), &leaf));
    let local = SocketAddr::new(net.topo.caller_if.ip(false), c.local().port());
    c.send(&invite(&net, &c, "tls-client-ok"))
        .expect("send INVITE");
    let mut seen = Vec::new();
    let ok = c
        .wait_for("SIP/2.0 200", "1 INVITE", WAIT, &mut seen)
        .unwrap_or_else(|| {
            panic!(
                "the named certificate is admitted; got {seen:#?}\n{}",
                sbc.log_text()
            )
        });
    for (n, m) in ["ACK", "BYE"].into_iter().enumerate() {
        let cseq = if n == 0 { 1 } else { 2 };
        c.send(&tls::over_tls(&raw::in_dialog(
            m,
            cseq,
            local,
            to,
            "tls-client-ok",
            &ok,
        )))
        .expect("send ACK/BYE");
    }
    assert!(
        c.wait_for("SIP/2.0 200", "2 BYE", WAIT, &mut seen)
            .is_some(),
        "BYE answered; got {seen:#?}"
    );
    assert!(v.join().expect("vendor thread").expect("vendor call").bye);
    assert_eq!(
        sbc.metric("sipd_refusals_total{reason=\"tls_client_cert\"}"),
        2
    );
}

#[test]
fn rule_naming_a_client_certificate_without_client_roots_refuses_to_start() {
    require_privileged!();
    let _s = serial();
    let net = Net::new();
    let certs = Certs::new("noroots");
    let ca = TestCa::new("sbc test CA");
    let extra = format!(
        "tls_client_roots = \"{}\"\n",
        certs.0.join("ca.pem").display()
    );
    let prov = prov_with_client_name(&net, "carrier.example");
    let mut sbc = start_prov(&net, Plane::Userspace, &ca, &certs, &extra, &prov);
    refused_without(
        &net,
        &mut sbc,
        &prov,
        &["tls_client_roots"],
        "[sip] tls_client_roots is not set",
    );
}
