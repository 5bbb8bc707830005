//! Attacks on the management API (HTTPS) of a real `sipd run` in the relay namespace, from
//! the carrier's host (the API listens on all addresses and admits everyone here, as a badly
//! placed appliance would).
//!
//! 1. 512 parallel wrong logins: no more passwords are checked against a hash than the
//!    back-off allows (the rest get 429 before any Argon2 work), and sipd's memory stays
//!    bounded (its RSS sampled from /proc during the attack).
//! 2. Slowloris: a request whose headers never end, a byte a second, is closed at the header
//!    deadline.
//! 3. 40 idle connections from one source: no more than the per-source cap are served, and
//!    the API still answers another source.

mod sbc;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use sbc::*;
use tests::require_privileged;

const API_PORT: u16 = 8443;
/// Per-source cap in these tests (`[management.connections] max_per_source`).
const PER_SOURCE: usize = 16;

/// The self-signed certificate is the point of nothing here: accept any.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn client_config() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    Arc::new(cfg)
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A TLS connection to the API with the handshake done; call on a thread inside the
/// carrier's namespace.
fn tls_connect(cfg: &Arc<ClientConfig>, to: SocketAddr) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect_timeout(&to, Duration::from_secs(10))?;
    tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
    let name = ServerName::try_from("localhost").expect("name");
    let conn = ClientConnection::new(cfg.clone(), name).map_err(std::io::Error::other)?;
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// What became of one login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// 401: the password was checked (against a hash, or the dummy one).
    Checked,
    /// 429: refused by the back-off before any password work.
    LockedOut,
    Other(u16),
    /// No HTTP answer (connection refused or closed: a cap).
    NoAnswer,
}

fn login(cfg: &Arc<ClientConfig>, to: SocketAddr, user: &str, password: &str) -> Outcome {
    let Ok(mut tls) = tls_connect(cfg, to) else {
        return Outcome::NoAnswer;
    };
    let body = format!("{{\"username\":\"{user}\",\"password\":\"{password}\"}}");
    let req = format!(
        "POST /api/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if tls.write_all(req.as_bytes()).is_err() {
        return Outcome::NoAnswer;
    }
    let mut head = Vec::new();
    let mut b = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") {
        match tls.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&b[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    match text.split(' ').nth(1).and_then(|c| c.parse::<u16>().ok()) {
        Some(401) => Outcome::Checked,
        Some(429) => Outcome::LockedOut,
        Some(c) => Outcome::Other(c),
        None => Outcome::NoAnswer,
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn start(net: &Net, connections: &str) -> Sbc {
    Sbc::start_with(
        net,
        Plane::Userspace,
        &Prov::default(),
        &Settings {
            management: format!(
                "listen = \"0.0.0.0:{API_PORT}\"\nmetrics_public = true\n\
                 [management.connections]\n{connections}\n"
            ),
            firewall: "management_allow = [\"0.0.0.0/0\"]\n".into(),
            ..Settings::default()
        },
    )
}

fn api(sbc: &Sbc) -> SocketAddr {
    SocketAddr::new(sbc.addr, API_PORT)
}

#[test]
fn parallel_wrong_logins_cannot_escape_the_back_off() {
    require_privileged!();
    let _s = serial();
    let net = Net::new();
    // Every attempt reaches the login handler: the caps are not what is tested here.
    let sbc = start(&net, "max_connections = 1024\nmax_per_source = 1024\n");
    let pid = sbc.pid().expect("pid");
    let cfg = client_config();
    let to = api(&sbc);
    let rss_before = rss_kib(pid);
    let peak = std::sync::atomic::AtomicU64::new(rss_before);
    let done = std::sync::atomic::AtomicBool::new(false);
    let t0 = Instant::now();
    let barrier = std::sync::Barrier::new(512);
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let hs: Vec<_> = (0..512)
            .map(|i| {
                let (cfg, barrier, net) = (&cfg, &barrier, &net);
                s.spawn(move || {
                    net.topo.caller.join_current_thread().expect("setns");
                    barrier.wait();
                    login(cfg, to, "admin", &format!("guess-{i}"))
                })
            })
            .collect();
        let r = hs
            .into_iter()
            .map(|h| h.join().expect("login thread"))
            .collect();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    });
    let elapsed = t0.elapsed();
    let count = |o: Outcome| outcomes.iter().filter(|&&x| x == o).count();
    let (checked, locked, lost) = (
        count(Outcome::Checked),
        count(Outcome::LockedOut),
        count(Outcome::NoAnswer),
    );
    let rss_after = rss_kib(pid);
    let peak = peak.into_inner();
    eprintln!(
        "512 parallel logins in {elapsed:?}: {checked} checked against a hash, {locked} refused by the back-off, {lost} without an answer, others {:?}; RSS {rss_before} kB before, peak {peak} kB, {rss_after} kB after",
        outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Other(_)))
            .collect::<Vec<_>>()
    );
    // The back-off after n failures is 1, 2, 4, ... s: within `elapsed` at most
    // log2(elapsed) + 2 attempts can have been let through, whatever the parallelism.
    let allowed = 2 + (elapsed.as_secs_f64() + 1.0).log2().ceil() as usize;
    assert!(
        checked <= allowed,
        "{checked} passwords checked (back-off allows {allowed})"
    );
    assert_eq!(checked + locked, 512, "{outcomes:?}");
    // Argon2 at 19 MiB a computation: 512 at once would be 9.7 GiB.
    assert!(
        peak.saturating_sub(rss_before) < 512 * 1024,
        "RSS grew by {} kB",
        peak - rss_before
    );
}

#[test]
fn slowloris_headers_are_closed_at_the_deadline() {
    require_privileged!();
    let _s = serial();
    let net = Net::new();
    let sbc = start(&net, "header_secs = 3\n");
    let cfg = client_config();
    let to = api(&sbc);
    let mut tls = net
        .topo
        .caller
        .enter(|| tls_connect(&cfg, to))
        .expect("TLS connection");
    tls.sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let head = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
    let t0 = Instant::now();
    let mut closed = None;
    'drip: for b in head.iter().cycle() {
        if t0.elapsed() > Duration::from_secs(40) {
            break;
        }
        if tls.write_all(std::slice::from_ref(b)).is_err() {
            closed = Some(t0.elapsed());
            break;
        }
        let step = Instant::now();
        while step.elapsed() < Duration::from_secs(1) {
            let mut buf = [0u8; 512];
            match tls.read(&mut buf) {
                Ok(0) => {
                    closed = Some(t0.elapsed());
                    break 'drip;
                }
                Ok(_) => {} // a 408, then the close
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => {
                    closed = Some(t0.elapsed());
                    break 'drip;
                }
            }
        }
    }
    eprintln!("slowloris closed after {closed:?}");
    let took = closed.expect("headers a byte a second held the connection for 40 s");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[test]
fn connections_per_source_are_capped() {
    require_privileged!();
    let _s = serial();
    let net = Net::new();
    let sbc = start(&net, &format!("max_per_source = {PER_SOURCE}\n"));
    let cfg = client_config();
    let to = api(&sbc);
    // 40 handshaken, idle connections from the carrier's host.
    let held: Vec<Tls> = net.topo.caller.enter(|| {
        (0..40)
            .filter_map(|_| {
                let mut t = tls_connect(&cfg, to).ok()?;
                // A refused one is closed before or right after the handshake.
                t.sock
                    .set_read_timeout(Some(Duration::from_millis(300)))
                    .ok()?;
                let mut b = [0u8; 16];
                match t.read(&mut b) {
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        Some(t)
                    }
                    _ => None,
                }
            })
            .collect()
    });
    eprintln!("{} of 40 connections from one source held", held.len());
    assert!(held.len() <= PER_SOURCE, "{} held", held.len());
    assert!(held.len() >= PER_SOURCE / 2, "{} held", held.len());
    // Another source is served meanwhile.
    assert!(sbc.metric("sipd_transport_tcp_open") < 1000);
    drop(held);
}
