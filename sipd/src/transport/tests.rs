//! Socket tests on loopback. Framing edge cases are unit-tested in `framing.rs`.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

use super::*;

const WAIT: Duration = Duration::from_secs(5);

fn any() -> SocketAddr {
    SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0)
}

fn sip(body: &str) -> String {
    format!(
        "MESSAGE sip:b@127.0.0.1 SIP/2.0\r\nCall-ID: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

async fn next(rx: &mut Receiver<Event>) -> Event {
    timeout(WAIT, rx.recv())
        .await
        .expect("no event in time")
        .expect("event channel closed")
}

async fn nothing(rx: &mut Receiver<Event>) {
    if let Ok(ev) = timeout(Duration::from_millis(200), rx.recv()).await {
        panic!("unexpected event {ev:?}");
    }
}

fn message(ev: Event) -> Inbound {
    match ev {
        Event::Message(m) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn bind(udp: bool, tcp: bool, limits: Limits) -> (Transports, Receiver<Event>) {
    let u: &[SocketAddr] = if udp { &[any()] } else { &[] };
    let t: &[SocketAddr] = if tcp { &[any()] } else { &[] };
    Transports::bind(u, t, limits, None).await.unwrap()
}

fn out(proto: Proto, remote: SocketAddr, token: u64, data: &str) -> Outbound {
    Outbound {
        proto,
        remote,
        local: None,
        conn: None,
        token,
        data: Bytes::copy_from_slice(data.as_bytes()),
    }
}

// Test-side stream helpers: tokio's io-util feature (AsyncReadExt) is not enabled.

async fn write_all(s: &TcpStream, mut data: &[u8]) {
    while !data.is_empty() {
        s.writable().await.unwrap();
        match s.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("write: {e}"),
        }
    }
}

/// Reads until `want` bytes arrived or EOF; returns what was read and whether EOF was seen.
async fn read_n(s: &TcpStream, want: usize) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let fut = async {
        while got.len() < want {
            s.readable().await.unwrap();
            match s.try_read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // A reset is an end too.
                Err(_) => return true,
            }
        }
        false
    };
    let eof = timeout(WAIT, fut).await.expect("read timed out");
    (got, eof)
}

async fn read_eof(s: &TcpStream) -> Vec<u8> {
    let (got, eof) = read_n(s, usize::MAX).await;
    assert!(eof);
    got
}

#[tokio::test]
async fn udp_round_trip() {
    let (t, mut rx) = bind(true, false, Limits::default()).await;
    let local = t.udp_addrs()[0];
    assert_ne!(local.port(), 0);
    let peer = UdpSocket::bind(any()).await.unwrap();
    let m = sip("hi");
    peer.send_to(m.as_bytes(), local).await.unwrap();
    let got = message(next(&mut rx).await);
    assert_eq!(got.peer.proto, Proto::Udp);
    assert_eq!(got.peer.local, local);
    assert_eq!(got.peer.remote, peer.local_addr().unwrap());
    assert_eq!(got.peer.conn, None);
    assert_eq!(got.data, m.as_bytes());

    t.send(Outbound {
        local: Some(local),
        ..out(Proto::Udp, got.peer.remote, 1, "SIP/2.0 200 OK\r\n\r\n")
    });
    let mut buf = [0u8; 100];
    let (n, from) = timeout(WAIT, peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"SIP/2.0 200 OK\r\n\r\n");
    assert_eq!(from, local);
    let s = t.stats();
    assert_eq!((s.udp_rx, s.udp_tx, s.send_errors), (1, 1, 0));
}

#[tokio::test]
async fn udp_keepalives_ignored() {
    let (t, mut rx) = bind(true, false, Limits::default()).await;
    let local = t.udp_addrs()[0];
    let peer = UdpSocket::bind(any()).await.unwrap();
    for ka in [&b"\r\n\r\n"[..], b"", b"\r\n"] {
        peer.send_to(ka, local).await.unwrap();
    }
    peer.send_to(sip("").as_bytes(), local).await.unwrap();
    assert_eq!(message(next(&mut rx).await).data, sip("").as_bytes());
    let s = t.stats();
    assert_eq!((s.keepalives, s.udp_rx), (3, 1));
    // Nothing is answered on UDP.
    let mut buf = [0u8; 16];
    assert!(
        timeout(Duration::from_millis(100), peer.recv_from(&mut buf))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn udp_oversize_is_malformed_and_truncated() {
    let limits = Limits {
        max_message_bytes: 100,
        ..Limits::default()
    };
    let (t, mut rx) = bind(true, false, limits).await;
    let peer = UdpSocket::bind(any()).await.unwrap();
    let big = sip(&"x".repeat(200));
    peer.send_to(big.as_bytes(), t.udp_addrs()[0])
        .await
        .unwrap();
    match next(&mut rx).await {
        Event::Malformed { inbound, error } => {
            assert_eq!(error, FrameError::TooLarge);
            assert_eq!(inbound.data, big.as_bytes()[..100]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(t.stats().oversized, 1);
}

#[tokio::test]
async fn udp_send_without_socket_of_family_fails() {
    let (t, mut rx) = bind(true, false, Limits::default()).await;
    t.send(out(Proto::Udp, "[::1]:5060".parse().unwrap(), 9, "x"));
    match next(&mut rx).await {
        Event::SendFailed { token, proto, .. } => assert_eq!((token, proto), (9, Proto::Udp)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn tcp_two_messages_in_one_write() {
    let (t, mut rx) = bind(false, true, Limits::default()).await;
    let c = TcpStream::connect(t.tcp_addrs()[0]).await.unwrap();
    let (a, b) = (sip("one"), sip("two"));
    write_all(&c, format!("{a}{b}").as_bytes()).await;
    let (m1, m2) = (message(next(&mut rx).await), message(next(&mut rx).await));
    assert_eq!((&m1.data[..], &m2.data[..]), (a.as_bytes(), b.as_bytes()));
    assert_eq!(m1.peer.proto, Proto::Tcp);
    assert_eq!(m1.peer.remote, c.local_addr().unwrap());
    assert_eq!(m1.peer.local, t.tcp_addrs()[0]);
    assert!(m1.peer.conn.is_some());
    assert_eq!(m1.peer.conn, m2.peer.conn);
    let s = t.stats();
    assert_eq!((s.tcp_accepted, s.tcp_rx, s.tcp_open), (1, 2, 1));
}

#[tokio::test]
async fn tcp_message_in_three_writes_and_reply_on_conn() {
    let (t, mut rx) = bind(false, true, Limits::default()).await;
    let c = TcpStream::connect(t.tcp_addrs()[0]).await.unwrap();
    let m = sip("v=0\r\n");
    let bytes = m.as_bytes();
    for part in [&bytes[..10], &bytes[10..m.len() - 3], &bytes[m.len() - 3..]] {
        write_all(&c, part).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let got = message(next(&mut rx).await);
    assert_eq!(got.data, bytes);
    t.send(Outbound {
        conn: got.peer.conn,
        ..out(
            Proto::Tcp,
            got.peer.remote,
            1,
            "SIP/2.0 200 OK\r\nl: 0\r\n\r\n",
        )
    });
    let (reply, _) = read_n(&c, 24).await;
    assert_eq!(reply, b"SIP/2.0 200 OK\r\nl: 0\r\n\r\n");
    assert_eq!(t.stats().tcp_tx, 1);
}

#[tokio::test]
async fn tcp_missing_content_length_is_malformed_then_closed() {
    let (t, mut rx) = bind(false, true, Limits::default()).await;
    let c = TcpStream::connect(t.tcp_addrs()[0]).await.unwrap();
    write_all(&c, b"OPTIONS sip:x SIP/2.0\r\nCall-ID: 1\r\n\r\n").await;
    let (inbound, error) = match next(&mut rx).await {
        Event::Malformed { inbound, error } => (inbound, error),
        other => panic!("{other:?}"),
    };
    assert_eq!(error, FrameError::NoContentLength);
    assert!(inbound.data.starts_with(b"OPTIONS sip:x"));
    // The core's 400 still goes out, then the connection closes.
    let answer = "SIP/2.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    t.send(Outbound {
        conn: inbound.peer.conn,
        ..out(Proto::Tcp, inbound.peer.remote, 1, answer)
    });
    assert_eq!(read_eof(&c).await, answer.as_bytes());
    match next(&mut rx).await {
        Event::Closed { conn, remote } => {
            assert_eq!(Some(conn), inbound.peer.conn);
            assert_eq!(remote, inbound.peer.remote);
        }
        other => panic!("{other:?}"),
    }
    let s = t.stats();
    assert_eq!((s.malformed_frames, s.tcp_open), (1, 0));
}

#[tokio::test]
async fn tcp_malformed_without_answer_closes_after_linger() {
    let limits = Limits {
        max_message_bytes: 64,
        ..Limits::default()
    };
    let (t, mut rx) = bind(false, true, limits).await;
    let c = TcpStream::connect(t.tcp_addrs()[0]).await.unwrap();
    write_all(&c, &[b'A'; 100]).await;
    match next(&mut rx).await {
        Event::Malformed { inbound, error } => {
            assert_eq!(error, FrameError::TooLarge);
            assert_eq!(inbound.data.len(), 64);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(next(&mut rx).await, Event::Closed { .. }));
    assert!(read_eof(&c).await.is_empty());
    assert_eq!(t.stats().oversized, 1);
}

#[tokio::test]
async fn tcp_ping_gets_pong() {
    let (t, mut rx) = bind(false, true, Limits::default()).await;
    let c = TcpStream::connect(t.tcp_addrs()[0]).await.unwrap();
    write_all(&c, b"\r\n\r\n").await;
    let (pong, _) = read_n(&c, 2).await;
    assert_eq!(pong, b"\r\n");
    nothing(&mut rx).await;
    let s = t.stats();
    assert_eq!((s.keepalives, s.tcp_rx, s.tcp_tx), (1, 0, 0));
}

#[tokio::test]
async fn tcp_outbound_connect_and_reuse() {
    let (t, mut rx) = bind(false, true, Limits::default()).await;
    let peer = TcpListener::bind(any()).await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let invite = sip("offer");
    t.send(out(Proto::Tcp, peer_addr, 1, &invite));
    let (s, _) = timeout(WAIT, peer.accept()).await.unwrap().unwrap();
    let (got, _) = read_n(&s, invite.len()).await;
    assert_eq!(got, invite.as_bytes());

    // The peer answers on the same connection: delivered with the connection's id.
    let ok = sip("answer");
    write_all(&s, ok.as_bytes()).await;
    let m = message(next(&mut rx).await);
    assert_eq!(m.data, ok.as_bytes());
    assert_eq!(m.peer.remote, peer_addr);
    assert_eq!(m.peer.local, s.peer_addr().unwrap());
    let conn = m.peer.conn.expect("tcp message has a conn");

    // Both by id and by address, the existing connection is used, not a new one.
    let ack = sip("ack");
    t.send(Outbound {
        conn: Some(conn),
        ..out(Proto::Tcp, peer_addr, 2, &ack)
    });
    let bye = sip("bye");
    t.send(out(Proto::Tcp, peer_addr, 3, &bye));
    let (got, _) = read_n(&s, ack.len() + bye.len()).await;
    assert_eq!(got, format!("{ack}{bye}").as_bytes());
    assert!(
        timeout(Duration::from_millis(100), peer.accept())
            .await
            .is_err()
    );
    let st = t.stats();
    assert_eq!((st.tcp_connected, st.tcp_accepted, st.tcp_tx), (1, 0, 3));

    // The peer closing is reported.
    drop(s);
    assert_eq!(
        next(&mut rx).await,
        Event::Closed {
            conn,
            remote: peer_addr
        }
    );
}

#[tokio::test]
async fn tcp_connect_refused_fails_every_queued_send() {
    let (t, mut rx) = bind(false, false, Limits::default()).await;
    let closed = TcpListener::bind(any())
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    t.send(out(Proto::Tcp, closed, 41, "x"));
    t.send(out(Proto::Tcp, closed, 42, "y"));
    let mut tokens = Vec::new();
    for _ in 0..2 {
        match next(&mut rx).await {
            Event::SendFailed {
                remote,
                proto,
                token,
                error,
            } => {
                assert_eq!((remote, proto), (closed, Proto::Tcp));
                assert!(error.contains(&closed.to_string()), "{error}");
                tokens.push(token);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(tokens, [41, 42]);
    let s = t.stats();
    assert_eq!((s.send_errors, s.tcp_open), (2, 0));
}

#[tokio::test]
async fn filter_refuses_udp_and_tcp() {
    let filter: Filter = Arc::new(|_remote, _local, _proto| false);
    let (t, mut rx) = Transports::bind(&[any()], &[any()], Limits::default(), Some(filter))
        .await
        .unwrap();
    let peer = UdpSocket::bind(any()).await.unwrap();
    peer.send_to(sip("").as_bytes(), t.udp_addrs()[0])
        .await
        .unwrap();
    let c = TcpStream::connect(t.tcp_addrs()[0]).await.unwrap();
    write_all(&c, sip("").as_bytes()).await;
    assert!(read_eof(&c).await.is_empty());
    nothing(&mut rx).await;
    let s = t.stats();
    assert_eq!(
        (s.filtered, s.udp_rx, s.tcp_accepted, s.tcp_open),
        (2, 0, 0, 0)
    );
}

#[tokio::test]
async fn filter_sees_addresses_and_protocol() {
    let filter: Filter = Arc::new(|remote, local, proto| {
        proto == Proto::Udp && remote.ip() == local.ip() && local.port() != 0
    });
    let (t, mut rx) = Transports::bind(&[any()], &[any()], Limits::default(), Some(filter))
        .await
        .unwrap();
    let peer = UdpSocket::bind(any()).await.unwrap();
    peer.send_to(sip("").as_bytes(), t.udp_addrs()[0])
        .await
        .unwrap();
    message(next(&mut rx).await);
    let c = TcpStream::connect(t.tcp_addrs()[0]).await.unwrap();
    assert!(read_eof(&c).await.is_empty());
    assert_eq!(t.stats().filtered, 1);
}

/// The firewall's per-connection check, set after bind, closes a refused TCP connection
/// before anything is read and leaves UDP alone.
#[tokio::test]
async fn a_tcp_filter_set_later_closes_refused_connections() {
    let (t, mut rx) = Transports::bind(&[any()], &[any()], Limits::default(), None)
        .await
        .unwrap();
    let seen: Arc<std::sync::Mutex<Vec<(SocketAddr, SocketAddr, Proto)>>> = Arc::default();
    let s = seen.clone();
    t.set_tcp_filter(Arc::new(move |remote, local, proto| {
        s.lock().unwrap().push((remote, local, proto));
        false
    }));
    let c = TcpStream::connect(t.tcp_addrs()[0]).await.unwrap();
    write_all(&c, sip("").as_bytes()).await;
    assert!(read_eof(&c).await.is_empty());
    let peer = UdpSocket::bind(any()).await.unwrap();
    peer.send_to(sip("").as_bytes(), t.udp_addrs()[0])
        .await
        .unwrap();
    message(next(&mut rx).await);
    let s = t.stats();
    assert_eq!((s.filtered, s.tcp_accepted, s.udp_rx), (1, 0, 1));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, c.local_addr().unwrap());
    assert_eq!(seen[0].1, t.tcp_addrs()[0]);
    assert_eq!(seen[0].2, Proto::Tcp);
}

#[tokio::test]
async fn tcp_max_connections_refuses_more() {
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let (t, mut rx) = bind(false, true, limits).await;
    let addr = t.tcp_addrs()[0];
    let first = TcpStream::connect(addr).await.unwrap();
    write_all(&first, sip("").as_bytes()).await;
    message(next(&mut rx).await);
    let second = TcpStream::connect(addr).await.unwrap();
    assert!(read_eof(&second).await.is_empty());
    let s = t.stats();
    assert_eq!((s.tcp_accepted, s.tcp_refused, s.tcp_open), (1, 1, 1));
    // A slot frees when a connection ends.
    drop(first);
    assert!(matches!(next(&mut rx).await, Event::Closed { .. }));
    let third = TcpStream::connect(addr).await.unwrap();
    write_all(&third, sip("").as_bytes()).await;
    message(next(&mut rx).await);
}

#[tokio::test]
async fn tcp_max_per_source_refuses_more_from_that_address() {
    let limits = Limits {
        max_per_source: 2,
        ..Limits::default()
    };
    let (t, mut rx) = bind(false, true, limits).await;
    let addr = t.tcp_addrs()[0];
    let mut held = Vec::new();
    for _ in 0..2 {
        let c = TcpStream::connect(addr).await.unwrap();
        write_all(&c, sip("").as_bytes()).await;
        message(next(&mut rx).await);
        held.push(c);
    }
    let third = TcpStream::connect(addr).await.unwrap();
    assert!(read_eof(&third).await.is_empty());
    let s = t.stats();
    assert_eq!(
        (s.tcp_accepted, s.tcp_refused_per_source, s.tcp_open),
        (2, 1, 2)
    );
}

#[tokio::test]
async fn tcp_first_message_deadline_and_a_drip_does_not_reset_idle() {
    let limits = Limits {
        first_message_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(600),
        ..Limits::default()
    };
    let (t, mut rx) = bind(false, true, limits).await;
    let addr = t.tcp_addrs()[0];
    // Never a complete message: closed at the first-message deadline, drip or not.
    let silent = TcpStream::connect(addr).await.unwrap();
    write_all(&silent, b"OPT").await;
    assert!(matches!(next(&mut rx).await, Event::Closed { .. }));
    assert!(read_eof(&silent).await.is_empty());
    assert_eq!(t.stats().tcp_closed_first_message, 1);
    // One message, then a byte every 100 ms: closed at the idle timeout all the same.
    let c = TcpStream::connect(addr).await.unwrap();
    write_all(&c, sip("").as_bytes()).await;
    message(next(&mut rx).await);
    let started = std::time::Instant::now();
    let drip = async {
        for b in b"OPTIONS sip:x SIP/2.0\r\nX: yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy" {
            if c.try_write(std::slice::from_ref(b)).is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        ev = next(&mut rx) => assert!(matches!(ev, Event::Closed { .. }), "{ev:?}"),
        () = drip => unreachable!(),
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_eq!(t.stats().tcp_closed_idle, 1);
}

#[tokio::test]
async fn tcp_idle_timeout_closes() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let (t, mut rx) = bind(false, true, limits).await;
    let c = TcpStream::connect(t.tcp_addrs()[0]).await.unwrap();
    write_all(&c, sip("").as_bytes()).await;
    let conn = message(next(&mut rx).await).peer.conn.unwrap();
    let started = std::time::Instant::now();
    match next(&mut rx).await {
        Event::Closed { conn: closed, .. } => assert_eq!(closed, conn),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(read_eof(&c).await.is_empty());
}

#[tokio::test]
async fn shutdown_flushes_and_closes() {
    let (t, mut rx) = bind(false, true, Limits::default()).await;
    let c = TcpStream::connect(t.tcp_addrs()[0]).await.unwrap();
    write_all(&c, sip("").as_bytes()).await;
    let m = message(next(&mut rx).await);
    let bye = sip("bye");
    t.send(Outbound {
        conn: m.peer.conn,
        ..out(Proto::Tcp, m.peer.remote, 1, &bye)
    });
    t.shutdown();
    assert_eq!(read_eof(&c).await, bye.as_bytes());
    assert!(matches!(next(&mut rx).await, Event::Closed { .. }));
}

#[tokio::test]
async fn bind_error_names_the_address() {
    let taken = UdpSocket::bind(any()).await.unwrap();
    let addr = taken.local_addr().unwrap();
    let err = Transports::bind(&[addr], &[], Limits::default(), None)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with(&format!("bind udp {addr}: ")), "{text}");
}

#[test]
fn a_refused_low_port_names_the_capability() {
    let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
    let low: std::net::SocketAddr = "127.0.0.1:506".parse().unwrap();
    let high: std::net::SocketAddr = "127.0.0.1:5060".parse().unwrap();
    assert!(bind_hint(low, &denied).contains("CAP_NET_BIND_SERVICE"));
    assert_eq!(bind_hint(high, &denied), "");
    let in_use = std::io::Error::from(std::io::ErrorKind::AddrInUse);
    assert_eq!(bind_hint(low, &in_use), "");
}

#[tokio::test]
async fn udp_sends_from_the_named_socket() {
    let (t, mut rx) = Transports::bind(&[any(), any()], &[], Limits::default(), None)
        .await
        .unwrap();
    let [first, second] = t.udp_addrs()[..] else {
        panic!("two sockets")
    };
    let peer = UdpSocket::bind(any()).await.unwrap();
    let to = peer.local_addr().unwrap();
    let mut buf = [0u8; 16];
    for (local, want) in [(Some(second), second), (None, first)] {
        t.send(Outbound {
            local,
            ..out(Proto::Udp, to, 1, "x")
        });
        let (_, from) = timeout(WAIT, peer.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(from, want);
    }
    nothing(&mut rx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_works_from_outside_the_runtime() {
    let (t, mut rx) = bind(false, false, Limits::default()).await;
    let closed = TcpListener::bind(any())
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    // A plain thread has no runtime context: the connect must still be spawned.
    std::thread::spawn(move || t.send(out(Proto::Tcp, closed, 5, "x")))
        .join()
        .unwrap();
    match next(&mut rx).await {
        Event::SendFailed { token, .. } => assert_eq!(token, 5),
        other => panic!("{other:?}"),
    }
}

/// INVITEs over the per-source rate are dropped before the core, and the source is reported
/// to the IDS once per interval (as the kernel guard's sampled UDP events are), not per drop.
#[tokio::test]
async fn tcp_invite_flood_is_dropped_and_reported_once() {
    let (t, mut rx) = bind(false, true, Limits::default()).await;
    t.set_tcp_guard(TcpGuard::new(1, 1, 0, Arc::new(|_| None)));
    let c = TcpStream::connect(t.tcp_addrs()[0]).await.unwrap();
    let invite = "INVITE sip:b@127.0.0.1 SIP/2.0\r\nCall-ID: f\r\nContent-Length: 0\r\n\r\n";
    write_all(&c, invite.repeat(5).as_bytes()).await;
    assert!(matches!(next(&mut rx).await, Event::Message(_)));
    match next(&mut rx).await {
        Event::Flooded { source } => assert_eq!(source, c.local_addr().unwrap().ip()),
        other => panic!("expected a flood report, got {other:?}"),
    }
    nothing(&mut rx).await;
    assert_eq!(t.stats().tcp_invites_rate_limited, 4);
}

#[tokio::test]
async fn ipv4_and_ipv6_listen_on_one_port_and_keep_their_families() {
    // A free port for both families (the probe socket is closed before the bind).
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let v4: SocketAddr = SocketAddr::new("0.0.0.0".parse().unwrap(), port);
    let v6: SocketAddr = SocketAddr::new("::".parse().unwrap(), port);
    let (t, mut rx) = Transports::bind(&[v4, v6], &[v4, v6], Limits::default(), None)
        .await
        .expect("[::] and 0.0.0.0 bind together");
    for (peer_ip, local) in [("127.0.0.1", v4), ("::1", v6)] {
        let peer = UdpSocket::bind(SocketAddr::new(peer_ip.parse().unwrap(), 0))
            .await
            .unwrap();
        let to = SocketAddr::new(peer_ip.parse().unwrap(), port);
        peer.send_to(sip("").as_bytes(), to).await.unwrap();
        let got = message(next_open(&mut rx).await);
        assert_eq!(
            got.peer.remote,
            peer.local_addr().unwrap(),
            "no v4-mapped source"
        );
        assert_eq!(got.peer.local, local);
        let tcp = TcpStream::connect(to).await.unwrap();
        write_all(&tcp, sip("").as_bytes()).await;
        let got = message(next_open(&mut rx).await);
        assert_eq!(got.peer.proto, Proto::Tcp);
        assert_eq!(got.peer.remote, tcp.local_addr().unwrap());
    }
    drop(t);
}

/// The next event that is not a connection closing (an earlier test step's).
async fn next_open(rx: &mut Receiver<Event>) -> Event {
    loop {
        match next(rx).await {
            Event::Closed { .. } => {}
            ev => return ev,
        }
    }
}

/// A wildcard socket says, per datagram, which of our addresses and interfaces it arrived on;
/// a socket bound to one address says that address.
#[tokio::test]
async fn a_wildcard_socket_tells_where_each_datagram_arrived() {
    let wildcard = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0);
    let (t, mut rx) = Transports::bind(&[wildcard, any()], &[], Limits::default(), None)
        .await
        .unwrap();
    let addrs = t.udp_addrs();
    let c = UdpSocket::bind(any()).await.unwrap();
    for (to, want_if) in [(addrs[0].port(), true), (addrs[1].port(), false)] {
        c.send_to(sip("x").as_bytes(), (Ipv4Addr::LOCALHOST, to))
            .await
            .unwrap();
        let m = message(next(&mut rx).await);
        assert_eq!(m.arrival.local, IpAddr::from(Ipv4Addr::LOCALHOST));
        // Loopback's index; the kernel says it only where asked (the wildcard socket).
        assert_eq!(m.arrival.ifindex.is_some(), want_if, "{m:?}");
        assert_eq!(m.peer.local.port(), to);
    }
    // IPv6: IPV6_RECVPKTINFO on a `[::]` socket.
    let wildcard6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0);
    let (t6, mut rx6) = Transports::bind(&[wildcard6], &[], Limits::default(), None)
        .await
        .unwrap();
    let c6 = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).await.unwrap();
    c6.send_to(
        sip("x").as_bytes(),
        (Ipv6Addr::LOCALHOST, t6.udp_addrs()[0].port()),
    )
    .await
    .unwrap();
    let m = message(next(&mut rx6).await);
    assert_eq!(m.arrival.local, IpAddr::from(Ipv6Addr::LOCALHOST));
    assert!(m.arrival.ifindex.is_some(), "{m:?}");
}

/// What IP_PKTINFO costs on the receive path: recvmsg with packet info against recvfrom, on
/// loopback, batches of 64 datagrams (more could overflow a default receive buffer). Run by
/// hand (measured on the 2-core dev VM in release: +170..230 ns per datagram, on 870..1140):
/// `cargo test -p sipd --release --lib pktinfo_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a test"]
fn pktinfo_cost() {
    use std::os::fd::AsRawFd;
    use std::time::Instant;
    const BATCH: usize = 64;
    const ROUNDS: usize = 1600;
    let run = |info: bool| -> f64 {
        let rx = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        rx.set_nonblocking(true).unwrap();
        if info {
            pktinfo::enable(&rx, false).unwrap();
        }
        let to = (Ipv4Addr::LOCALHOST, rx.local_addr().unwrap().port());
        let tx = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let msg = sip("cost");
        let mut buf = vec![0u8; 65_535];
        let mut spent = Duration::ZERO;
        for _ in 0..ROUNDS {
            for _ in 0..BATCH {
                tx.send_to(msg.as_bytes(), to).unwrap();
            }
            let t = Instant::now();
            for _ in 0..BATCH {
                if info {
                    let (_, _, a) = pktinfo::recv_now(rx.as_raw_fd(), &mut buf).unwrap();
                    assert!(a.is_some());
                } else {
                    rx.recv_from(&mut buf).unwrap();
                }
            }
            spent += t.elapsed();
        }
        spent.as_nanos() as f64 / (BATCH * ROUNDS) as f64
    };
    let (plain, info) = (run(false), run(true));
    let (plain2, info2) = (run(false), run(true));
    println!(
        "recvfrom {:.0} ns/datagram, recvmsg + IP_PKTINFO {:.0} ns/datagram",
        plain.min(plain2),
        info.min(info2)
    );
}
