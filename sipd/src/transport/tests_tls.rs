//! SIP over TLS on loopback: one transport's TLS listener, others connecting to it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

use super::*;

const WAIT: Duration = Duration::from_secs(5);

fn any() -> SocketAddr {
    SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0)
}

async fn next(rx: &mut Receiver<Event>) -> Event {
    timeout(WAIT, rx.recv())
        .await
        .expect("no event in time")
        .expect("event channel closed")
}

/// TLS settings with sipd's self-signed certificate (for 127.0.0.1 and localhost) as both
/// our certificate and the only root, verifying upstreams as `name`.
fn settings(dir: &std::path::Path, name: &'static str, handshake: Duration) -> TlsSettings {
    let st =
        crate::tls::TlsState::load(crate::tls::SIP, None, None, dir, Ipv4Addr::LOCALHOST.into())
            .unwrap();
    let server = crate::tls::server_config(st.resolver.clone()).unwrap();
    let roots = crate::tls::roots(Some(&st.cert_path)).unwrap();
    let client = crate::tls::client_config(roots).unwrap();
    TlsSettings {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        handshake_timeout: handshake,
        names: Arc::new(move |_| Some(name.to_owned())),
    }
}

fn msg(body: &str) -> String {
    format!(
        "MESSAGE sip:b@127.0.0.1 SIP/2.0\r\nCall-ID: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn out(remote: SocketAddr, token: u64, data: &str) -> Outbound {
    Outbound {
        proto: Proto::Tls,
        remote,
        local: None,
        conn: None,
        token,
        data: bytes::Bytes::copy_from_slice(data.as_bytes()),
    }
}

#[tokio::test]
async fn tls_in_and_out_and_a_wrong_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tls = settings(dir.path(), "localhost", WAIT);
    let (server, mut srx) =
        Transports::bind_with_tls(&[], &[], &[any()], Some(tls), Limits::default(), None)
            .await
            .unwrap();
    let at = server.tls_addrs()[0];

    // A client verifying the name the certificate carries: delivered as TLS, answered on
    // the same connection.
    let (client, mut crx) = Transports::bind_with_tls(
        &[],
        &[],
        &[],
        Some(settings(dir.path(), "localhost", WAIT)),
        Limits::default(),
        None,
    )
    .await
    .unwrap();
    client.send(out(at, 1, &msg("hello")));
    let Event::Message(m) = next(&mut srx).await else {
        panic!("expected a message")
    };
    assert_eq!(m.peer.proto, Proto::Tls);
    assert_eq!(&m.data[..], msg("hello").as_bytes());
    server.send(Outbound::from(Transmit {
        peer: m.peer,
        data: msg("back").into_bytes(),
        token: 2,
    }));
    let Event::Message(back) = next(&mut crx).await else {
        panic!("expected the answer")
    };
    assert_eq!(&back.data[..], msg("back").as_bytes());
    assert_eq!(back.peer.proto, Proto::Tls);
    assert_eq!(server.stats().tls_handshakes, 1);
    assert_eq!(client.stats().tls_connected, 1);

    // A client that expects another name refuses the certificate: the send fails.
    let (wrong, mut wrx) = Transports::bind_with_tls(
        &[],
        &[],
        &[],
        Some(settings(dir.path(), "vendor.example", WAIT)),
        Limits::default(),
        None,
    )
    .await
    .unwrap();
    wrong.send(out(at, 7, &msg("x")));
    match next(&mut wrx).await {
        Event::SendFailed { token, proto, .. } => assert_eq!((token, proto), (7, Proto::Tls)),
        other => panic!("{other:?}"),
    }
    assert_eq!(wrong.stats().tls_upstream_refused, 1);
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_handshake_deadline_within_the_caps() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_per_source: 1,
        ..Limits::default()
    };
    let tls = settings(dir.path(), "localhost", Duration::from_millis(300));
    let (t, _rx) = Transports::bind_with_tls(&[], &[], &[any()], Some(tls), limits, None)
        .await
        .unwrap();
    let at = t.tls_addrs()[0];
    let silent = TcpStream::connect(at).await.unwrap();
    // The silent one holds the source's only slot: a second is refused at accept.
    let second = TcpStream::connect(at).await.unwrap();
    let closed = |s: TcpStream| async move {
        let mut s = s;
        let mut b = [0u8; 16];
        matches!(
            timeout(WAIT, tokio::io::AsyncReadExt::read(&mut s, &mut b)).await,
            Ok(Ok(0) | Err(_))
        )
    };
    assert!(
        closed(second).await,
        "second connection from the source refused"
    );
    assert!(
        closed(silent).await,
        "silent connection closed at the deadline"
    );
    let s = t.stats();
    assert_eq!(
        (
            s.tcp_refused_per_source,
            s.tls_handshake_timeouts,
            s.tls_handshakes
        ),
        (1, 1, 0)
    );
}

#[tokio::test]
async fn client_certificates_when_required() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let dir = tempfile::tempdir().unwrap();
    let st = crate::tls::TlsState::load(
        crate::tls::SIP,
        None,
        None,
        dir.path(),
        Ipv4Addr::LOCALHOST.into(),
    )
    .unwrap();
    // Callers must present a certificate chained to sipd's own (the test's only CA).
    let client_roots = crate::tls::roots(Some(&st.cert_path)).unwrap();
    let server =
        crate::tls::server_config_verifying(st.resolver.clone(), Some(client_roots), true).unwrap();
    let tls = TlsSettings {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        ..settings(dir.path(), "localhost", WAIT)
    };
    let (t, mut rx) =
        Transports::bind_with_tls(&[], &[], &[any()], Some(tls), Limits::default(), None)
            .await
            .unwrap();
    let at = t.tls_addrs()[0];

    // Without a certificate: the handshake fails on sipd's side, nothing is delivered.
    let (anon, _arx) = Transports::bind_with_tls(
        &[],
        &[],
        &[],
        Some(settings(dir.path(), "localhost", WAIT)),
        Limits::default(),
        None,
    )
    .await
    .unwrap();
    anon.send(out(at, 1, &msg("anonymous")));
    let end = std::time::Instant::now() + WAIT;
    while t.stats().tls_handshake_failures == 0 && std::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(t.stats().tls_handshake_failures, 1);
    assert!(
        timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "nothing delivered from a caller without a certificate"
    );

    // With one: delivered.
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&st.cert_path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&st.key_path).unwrap();
    let roots = crate::tls::roots(Some(&st.cert_path)).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(crate::tls::provider()))
        .with_protocol_versions(crate::tls::VERSIONS)
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let (signed, _srx) = Transports::bind_with_tls(
        &[],
        &[],
        &[],
        Some(TlsSettings {
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            ..settings(dir.path(), "localhost", WAIT)
        }),
        Limits::default(),
        None,
    )
    .await
    .unwrap();
    signed.send(out(at, 2, &msg("signed")));
    let Event::Message(m) = next(&mut rx).await else {
        panic!("expected the message")
    };
    assert_eq!(&m.data[..], msg("signed").as_bytes());
    assert_eq!(t.stats().tls_handshakes, 1);
}
