//! SIP over TCP as an attacker uses it (userspace data plane: nothing here is XDP's job).
//!
//! 1. 1,100 idle TCP connections from one address, with sipd's open-file limit at 1,024:
//!    capped per source (the rest closed at once), and meanwhile a carrier's call completes
//!    and the management API answers.
//!    And 20 addresses holding 60 each (1,200 in all, above the open-file limit): the last
//!    `fd_reserve` descriptors stay free, so the call and the API still work.
//! 2. A slow drip, a byte a second: closed at the first-message deadline; and after one
//!    complete message, at the idle timeout (a byte is not traffic).
//! 3. 30 INVITEs in one TCP segment, repeated: limited per source like UDP INVITEs are in the
//!    kernel (count what reaches the call core).

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::sbc::*;
use tests::sip as raw;
use tests::{require_privileged, require_sipp};

fn event(sbc: &Sbc, name: &str) -> u64 {
    sbc.metric(&format!("sipd_transport_events_total{{event=\"{name}\"}}"))
}

/// The attacker's address (`Net::attacker` adds it to the carrier's interface).
fn attacker_ip(net: &Net) -> IpAddr {
    let c = net.topo.caller_if.ipv4.octets();
    IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], 66))
}

/// Lets this test process hold a few thousand sockets.
fn raise_own_nofile() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain struct in, plain struct out.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &raw const l);
    }
}

/// A non-blocking TCP connection from `from` (port chosen by the kernel) to `to`, made on a
/// thread inside the carrier's namespace; None if it cannot be made within 500 ms (a full
/// listen backlog).
fn connect_from(from: IpAddr, to: SocketAddr) -> Option<TcpStream> {
    let fd = tests::tcp::connect_start(from, to).ok()?;
    tests::tcp::connected_within(&fd, 500).then(|| TcpStream::from(fd))
}

/// Whether the server has closed `s` (EOF or reset); `s` is non-blocking.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

fn settings(sip: &str) -> Settings {
    Settings {
        sip: sip.into(),
        management: "metrics_public = true\n".into(),
        ..Settings::default()
    }
}

#[test]
fn idle_connections_from_one_source_are_capped_and_calls_go_on() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    raise_own_nofile();
    let net = Net::new();
    let _ = net.attacker();
    let from = attacker_ip(&net);
    let sbc = Sbc::start_with(
        &net,
        Plane::Userspace,
        &Prov::default(),
        &Settings {
            nofile: Some(1024),
            ..settings("")
        },
    );
    let started = Instant::now();
    let mut conns: Vec<TcpStream> = net.topo.caller.enter(|| {
        (0..1100)
            .filter_map(|_| connect_from(from, sbc.sip()))
            .collect()
    });
    let made = conns.len();
    eprintln!(
        "attacker: {made} of 1100 connections made in {:?}",
        started.elapsed()
    );
    // The ones over the cap are closed at once; wait until that is seen.
    let end = Instant::now() + Duration::from_secs(30);
    let mut open;
    loop {
        conns.retain_mut(|c| !closed_by_server(c));
        open = conns.len();
        if open <= 64 || Instant::now() > end {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("still open after 30 s at most: {open} of {made}");

    // A carrier's call, with media, while the attacker holds its share.
    carrier_call_completes(&net, &sbc);
    let log = sbc.log_text();
    assert!(
        !log.contains("port range"),
        "media blamed the port range:\n{log}"
    );
    assert!(open <= 64, "{open} idle connections held from one source");
    // The management API still answers (metric() fails loudly otherwise).
    let refused = event(&sbc, "tcp_refused_per_source");
    let reserve = event(&sbc, "tcp_refused_fd_reserve");
    // The userspace guard's per-source rate turns part of the burst away before the cap
    // is even asked, and on a slow machine the first 64 can reach their first-message
    // deadline while the rest still wait in the listen backlog.
    let filtered = event(&sbc, "filtered");
    let deadline = event(&sbc, "tcp_closed_first_message") + event(&sbc, "tcp_closed_idle");
    eprintln!(
        "refused per source: {refused}; refused for the fd reserve: {reserve}; \
         filtered: {filtered}; closed at a deadline: {deadline}; sipd tcp_open: {}",
        sbc.metric("sipd_transport_tcp_open")
    );
    assert!(
        refused + reserve + filtered + deadline >= (made - open) as u64,
        "sipd accounts for every connection it closed"
    );
    assert!(sbc.metric("sipd_transport_tcp_open") <= 64 + 2);
    drop(conns);
}

/// A carrier's call with media through `sbc`; panics unless it completes.
fn carrier_call_completes(net: &Net, sbc: &Sbc) {
    let mut uas = net.uas("uas.xml", SIP_PORT, 1, Duration::from_millis(100));
    let mut uac = net
        .uac("uac.xml", sbc.sip(), Duration::from_millis(1500))
        .spawn(&net.topo.caller)
        .expect("uac");
    let media = uac
        .wait_media("MEDIA", Duration::from_secs(10))
        .and_then(|_| uas.wait_media("MEDIA", Duration::from_secs(10)));
    let (uac, uas) = (uac.finish(), uas.finish());
    eprintln!(
        "carrier call: {:?}, media anchored: {}",
        uac.trace.final_counts("INVITE"),
        media.is_ok()
    );
    uac.assert_ok();
    uas.assert_ok();
}

#[test]
fn connections_from_many_sources_leave_the_descriptor_reserve() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    raise_own_nofile();
    let net = Net::new();
    let c = net.topo.caller_if.ipv4.octets();
    let sources: Vec<IpAddr> = (100..120u8)
        .map(|d| IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], d)))
        .collect();
    for ip in &sources {
        net.topo
            .caller
            .ip([
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                &net.topo.caller_if.dev,
            ])
            .expect("attacker address");
    }
    let sbc = Sbc::start_with(
        &net,
        Plane::Userspace,
        &Prov::default(),
        &Settings {
            nofile: Some(1024),
            ..settings("")
        },
    );
    let mut conns: Vec<TcpStream> = net.topo.caller.enter(|| {
        sources
            .iter()
            .flat_map(|&ip| (0..60).map(move |_| ip))
            .filter_map(|ip| connect_from(ip, sbc.sip()))
            .collect()
    });
    let made = conns.len();
    std::thread::sleep(Duration::from_secs(2));
    conns.retain_mut(|c| !closed_by_server(c));
    let reserve = event(&sbc, "tcp_refused_fd_reserve");
    eprintln!(
        "1200 connections from 20 sources: {made} made, {} still open, {reserve} refused for the descriptor reserve",
        conns.len()
    );
    assert!(reserve > 0, "the reserve was never needed: {made} made");
    assert!(conns.len() <= 1024 - 256, "{} open", conns.len());
    carrier_call_completes(&net, &sbc);
    assert!(!sbc.log_text().contains("port range"), "{}", sbc.log_text());
    // The management API still answers.
    assert!(sbc.metric("sipd_transport_tcp_open") <= 1024 - 256);
    drop(conns);
}

/// Writes one byte a second on `s` until the server closes it or `max` passes; how long that
/// took, or None if it never closed.
fn drip_until_closed(s: &mut TcpStream, bytes: &[u8], max: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    for b in bytes.iter().cycle() {
        if t0.elapsed() > max {
            return None;
        }
        if s.write_all(std::slice::from_ref(b)).is_err() || closed_by_server(s) {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    None
}

#[test]
fn slow_drip_is_closed_at_the_deadlines() {
    require_privileged!();
    let _s = serial();
    let net = Net::new();
    let _ = net.attacker();
    let from = attacker_ip(&net);
    let sbc = Sbc::start_with(
        &net,
        Plane::Userspace,
        &Prov::default(),
        &settings("tcp_first_message_secs = 3\ntcp_idle_secs = 5\n"),
    );
    let drip =
        b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK-drip\r\nX-Slow: ";
    // Never a complete message: closed at the first-message deadline.
    let mut a = net
        .topo
        .caller
        .enter(|| connect_from(from, sbc.sip()))
        .expect("connect");
    let took = drip_until_closed(&mut a, drip, Duration::from_secs(40));
    eprintln!("drip before any message: closed after {took:?}");
    let took = took.expect("a byte a second held the connection for 40 s");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(event(&sbc, "tcp_closed_first_message") >= 1);

    // One complete message, then a drip: closed at the idle timeout.
    let mut b = net
        .topo
        .caller
        .enter(|| connect_from(from, sbc.sip()))
        .expect("connect");
    let local = b.local_addr().expect("addr");
    let options = format!(
        "OPTIONS sip:{dst} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK-opt1\r\n\
         From: <sip:probe@{local}>;tag=p1\r\nTo: <sip:{dst}>\r\nCall-ID: drip-1\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        dst = sbc.sip()
    );
    b.write_all(options.as_bytes()).expect("send OPTIONS");
    let took = drip_until_closed(&mut b, drip, Duration::from_secs(40));
    eprintln!("drip after one message: closed after {took:?}");
    let took = took.expect("a byte a second held the connection for 40 s");
    assert!(took < Duration::from_secs(25), "{took:?}");
    assert!(event(&sbc, "tcp_closed_idle") >= 1);
}

#[test]
fn invites_batched_in_tcp_segments_are_limited_like_udp() {
    require_privileged!();
    let _s = serial();
    let net = Net::new();
    let _ = net.attacker();
    let from = attacker_ip(&net);
    let sbc = Sbc::start_with(&net, Plane::Userspace, &Prov::default(), &settings(""));
    let mut s = net
        .topo
        .caller
        .enter(|| connect_from(from, sbc.sip()))
        .expect("connect");
    s.set_nonblocking(false).expect("blocking");
    let local = s.local_addr().expect("addr");
    let rx0 = event(&sbc, "tcp_rx");
    let rounds = 10;
    let t0 = Instant::now();
    for r in 0..rounds {
        let mut segment = String::new();
        for i in 0..30 {
            let call_id = format!("batch-{r}-{i}");
            segment += &raw::invite(local, sbc.sip(), CLI, CLD, &call_id, RTP_PORT)
                .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
        }
        s.write_all(segment.as_bytes())
            .expect("send a segment of 30 INVITEs");
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = t0.elapsed();
    let sent = rounds * 30;
    // Everything read and judged: the count stops moving.
    let mut last = u64::MAX;
    let end = Instant::now() + Duration::from_secs(20);
    let reached = loop {
        std::thread::sleep(Duration::from_millis(700));
        let now = event(&sbc, "tcp_rx") - rx0;
        if now == last || Instant::now() > end {
            break now;
        }
        last = now;
    };
    eprintln!("{sent} INVITEs in {rounds} segments over {elapsed:?}: {reached} reached the core");
    let limited = event(&sbc, "tcp_invites_rate_limited") + event(&sbc, "tcp_invites_session_cap");
    // The guard's defaults: 20 INVITEs a second, bursts of 40.
    let allowed = 40 + (20.0 * elapsed.as_secs_f64()).ceil() as u64;
    eprintln!("{limited} dropped by the guard (allowed {allowed})");
    assert!(reached <= allowed + 2, "{reached} INVITEs reached the core");
    assert!(
        reached + limited >= sent as u64 - 5,
        "{reached} + {limited}"
    );
}
