//! SIP over TLS peers for scenarios (Debian's sipp has no TLS): a test CA that issues
//! certificates, and a blocking rustls stream carrying raw SIP (the messages of `raw.rs`),
//! as a client (a carrier calling in) or as a server (a vendor answering).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned,
};

use super::Msg;
use crate::netns::Netns;

/// A certificate authority of the test's own; its root is what sipd is told to trust.
pub struct TestCa {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A certificate and its key, in PEM.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// The certificate (the leaf alone; the root is the CA's).
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

impl TestCa {
    /// A fresh CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// The root certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A server certificate for `names` (DNS names or IP addresses), signed by this CA.
    pub fn issue(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names.clone()).expect("leaf params");
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes the root to `dir/<stem>.pem`; returns the path.
    pub fn write(&self, dir: &Path, stem: &str) -> PathBuf {
        let p = dir.join(format!("{stem}.pem"));
        std::fs::write(&p, &self.pem).expect("write CA");
        p
    }
}

impl Leaf {
    /// Writes `dir/<stem>.crt` and `dir/<stem>.key`; returns both paths.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let c = dir.join(format!("{stem}.crt"));
        let k = dir.join(format!("{stem}.key"));
        std::fs::write(&c, &self.cert_pem).expect("write certificate");
        std::fs::write(&k, &self.key_pem).expect("write key");
        (c, k)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client that trusts only `ca_pem`'s certificates.
pub fn client_config(ca_pem: &str) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("CA PEM")).expect("CA root");
    }
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// [`client_config`] that presents `leaf` as its client certificate (mutual TLS).
pub fn client_config_with_cert(ca_pem: &str, leaf: &Leaf) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("CA PEM")).expect("CA root");
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("leaf PEM");
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key PEM");
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .expect("client certificate"),
    )
}

/// A server presenting `leaf`.
pub fn server_config(leaf: &Leaf) -> Arc<ServerConfig> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("leaf PEM");
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key PEM");
    Arc::new(
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate"),
    )
}

/// A blocking byte stream (the rustls stream over its socket).
trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

/// One SIP over TLS connection, blocking, with a framing buffer: a carrier's to sipd or a
/// vendor's from it.
pub struct TlsSip {
    stream: Box<dyn ReadWrite>,
    /// The socket under it, for read timeouts.
    sock: TcpStream,
    buf: Vec<u8>,
}

/// Runs the handshake to its end on a blocking socket (bounded by the socket's timeouts).
fn handshake<D>(conn: &mut rustls::ConnectionCommon<D>, sock: &mut TcpStream) -> io::Result<()> {
    while conn.is_handshaking() {
        conn.complete_io(sock)?;
    }
    Ok(())
}

fn timeouts(sock: &TcpStream) -> io::Result<()> {
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    sock.set_write_timeout(Some(Duration::from_secs(5)))
}

/// Connects from inside `ns` to `to`, verifying sipd's certificate for `name`; the
/// handshake is done when this returns.
pub fn connect_in(
    ns: &Netns,
    to: SocketAddr,
    name: &str,
    cfg: Arc<ClientConfig>,
) -> io::Result<TlsSip> {
    let mut sock = ns.enter(|| TcpStream::connect_timeout(&to, Duration::from_secs(5)))?;
    timeouts(&sock)?;
    let server = ServerName::try_from(name.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut conn = ClientConnection::new(cfg, server).map_err(io::Error::other)?;
    handshake(&mut conn, &mut sock)?;
    let under = sock.try_clone()?;
    Ok(TlsSip::new(Box::new(StreamOwned::new(conn, sock)), under))
}

/// Accepts one connection on `listener` (waiting at most `wait`) and runs its handshake.
pub fn accept(
    listener: &TcpListener,
    cfg: Arc<ServerConfig>,
    wait: Duration,
) -> io::Result<TlsSip> {
    listener.set_nonblocking(true)?;
    let end = Instant::now() + wait;
    let mut sock = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    };
    sock.set_nonblocking(false)?;
    timeouts(&sock)?;
    let mut conn = ServerConnection::new(cfg).map_err(io::Error::other)?;
    handshake(&mut conn, &mut sock)?;
    let under = sock.try_clone()?;
    Ok(TlsSip::new(Box::new(StreamOwned::new(conn, sock)), under))
}

impl TlsSip {
    fn new(stream: Box<dyn ReadWrite>, sock: TcpStream) -> TlsSip {
        TlsSip {
            stream,
            sock,
            buf: Vec::new(),
        }
    }

    /// Our end of the connection.
    pub fn local(&self) -> SocketAddr {
        self.sock.local_addr().expect("connected socket")
    }

    /// Sends one message.
    pub fn send(&mut self, msg: &str) -> io::Result<()> {
        self.stream.write_all(msg.as_bytes())?;
        self.stream.flush()
    }

    /// The next whole message (by Content-Length), waiting at most `wait`; None when none
    /// came or the connection closed.
    pub fn recv(&mut self, wait: Duration) -> Option<String> {
        let end = Instant::now() + wait;
        loop {
            if let Some(m) = self.take_message() {
                return Some(m);
            }
            let now = Instant::now();
            if now >= end {
                return None;
            }
            let _ = self
                .sock
                .set_read_timeout(Some((end - now).min(Duration::from_millis(200))));
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return self.take_message(),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return None,
            }
        }
    }

    /// Whether the peer has closed the connection (EOF or reset) within `wait`.
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        let end = Instant::now() + wait;
        while Instant::now() < end {
            let _ = self.sock.set_read_timeout(Some(Duration::from_millis(200)));
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return true,
            }
        }
        false
    }

    /// Waits for a message whose first line starts with `prefix` and whose CSeq is `cseq`
    /// (e.g. "1 INVITE"); the others are collected into `seen`.
    pub fn wait_for(
        &mut self,
        prefix: &str,
        cseq: &str,
        wait: Duration,
        seen: &mut Vec<String>,
    ) -> Option<String> {
        let end = Instant::now() + wait;
        while Instant::now() < end {
            let Some(text) = self.recv(end.saturating_duration_since(Instant::now())) else {
                continue;
            };
            seen.push(text.clone());
            let m = Msg {
                received: true,
                text: text.clone(),
            };
            if m.first_line().starts_with(prefix) && m.header("CSeq").is_some_and(|c| c == cseq) {
                return Some(text);
            }
        }
        None
    }

    fn take_message(&mut self) -> Option<String> {
        // Keep-alive CRLFs between messages.
        while self.buf.starts_with(b"\r\n") {
            self.buf.drain(..2);
        }
        let head_end = self.buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let len = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                let k = k.trim();
                (k.eq_ignore_ascii_case("content-length") || k == "l")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        if self.buf.len() < head_end + len {
            return None;
        }
        let msg: Vec<u8> = self.buf.drain(..head_end + len).collect();
        Some(String::from_utf8_lossy(&msg).into_owned())
    }
}

/// `msg` (built by `raw.rs` for UDP) as sent over TLS: its Via says TLS and its Contact
/// `transport=tls`.
pub fn over_tls(msg: &str) -> String {
    let (head, body) = msg.split_once("\r\n\r\n").unwrap_or((msg, ""));
    let head = head
        .lines()
        .map(|l| {
            if let Some(v) = l.strip_prefix("Via: SIP/2.0/UDP ") {
                format!("Via: SIP/2.0/TLS {v}")
            } else if l.starts_with("Contact:") && l.ends_with('>') {
                format!("{};transport=tls>", l.trim_end_matches('>'))
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n");
    format!("{head}\r\n\r\n{body}")
}

/// A vendor's answer to `req` (status line `status`, e.g. "200 OK"), with our `tag` on the
/// To, `contact` as Contact and `sdp` as the body (empty: none).
pub fn response(req: &str, status: &str, tag: &str, contact: SocketAddr, sdp: &str) -> String {
    let m = Msg {
        received: true,
        text: req.to_owned(),
    };
    let mut out = format!("SIP/2.0 {status}\r\n");
    for v in m.headers("Via") {
        out += &format!("Via: {v}\r\n");
    }
    let to = m.header("To").unwrap_or_default();
    let to = if to.contains(";tag=") || status.starts_with("100") {
        to.to_owned()
    } else {
        format!("{to};tag={tag}")
    };
    for (h, v) in [
        ("From", m.header("From").unwrap_or_default()),
        ("To", to.as_str()),
        ("Call-ID", m.header("Call-ID").unwrap_or_default()),
        ("CSeq", m.header("CSeq").unwrap_or_default()),
    ] {
        out += &format!("{h}: {v}\r\n");
    }
    out += &format!("Contact: <sip:vendor@{contact};transport=tls>\r\n");
    if sdp.is_empty() {
        out += "Content-Length: 0\r\n\r\n";
    } else {
        out += &format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
    }
    out
}
