//! Every service on the host behind its allow list, and no interface without a firewall,
//! against a real `sipd run`: from the attacker's host on the carrier's network (outside every
//! allow list) and from the carrier (inside them),
//!
//! 1. per service kind: SIP over UDP (an INVITE), SIP over TCP, the management API, SSH (a
//!    tiny TCP listener the test starts in the relay namespace, as sshd would be) and a
//!    service of the operator's own (`[[firewall.services]]`): the attacker's SYN or INVITE
//!    gets nothing, the carrier's connects or is answered;
//! 2. coverage: sipd's SIP on `0.0.0.0` with `[dataplane] interfaces` naming only the
//!    carrier-facing veth: an INVITE from outside the allow list arriving on the other
//!    interface is still dropped, and `/metrics` says which plane covers each address;
//! 3. an interface added after sipd started (no XDP on it): over it, sources outside the SIP
//!    allow list, on the deny list or banned by the IDS get nothing over UDP or TCP (a TCP
//!    connection is closed before anything is read), on both data planes.

mod sbc;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use sbc::*;
use tests::netns::Netns;
use tests::require_privileged;
use tests::sip::{self as raw, RawSip};

/// The SSH port the test's listener takes (sipd's default ssh service is 22; a test port
/// keeps clear of a real sshd).
const SSH_PORT: u16 = 2222;
/// The operator's own service.
const DB_PORT: u16 = 5432;
const MGMT_PORT: u16 = 8443;
/// The carrier's raw SIP socket (not sipp's port).
const RAW_SIP_PORT: u16 = SIP_PORT + 2;
/// How long "nothing" is watched for: a permitted handshake or answer takes milliseconds.
const SILENCE: Duration = Duration::from_secs(3);

/// Whether a TCP handshake from `from` (an address of `ns`) to `to` completes within
/// `within`. A listener with a backlog completes it without `accept`, so only a firewall
/// (or nothing listening) makes this false.
fn tcp_connects(ns: &Netns, from: Ipv4Addr, to: SocketAddr, within: Duration) -> bool {
    let IpAddr::V4(dst) = to.ip() else {
        panic!("IPv4 only")
    };
    ns.enter(|| {
        let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: plain socket calls on a descriptor this closure owns and closes.
        unsafe {
            let fd = libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            );
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let src = sin(from, 0);
            let rc = libc::bind(fd, (&raw const src).cast(), len);
            assert_eq!(rc, 0, "bind {from}: {}", std::io::Error::last_os_error());
            let dst = sin(dst, to.port());
            libc::connect(fd, (&raw const dst).cast(), len);
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            };
            let ready = libc::poll(&mut p, 1, within.as_millis() as libc::c_int);
            let mut err: libc::c_int = -1;
            let mut elen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            if ready == 1 {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    (&raw mut err).cast(),
                    &mut elen,
                );
            }
            libc::close(fd);
            ready == 1 && err == 0
        }
    })
}

/// A TCP listener in the relay namespace on every address (as sshd or a database would be).
fn listener_in(ns: &Netns, port: u16) -> TcpListener {
    ns.enter(|| TcpListener::bind(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port)))
        .unwrap_or_else(|e| panic!("listener on {port}: {e}"))
}

fn carrier_ip(net: &Net) -> Ipv4Addr {
    net.topo.caller_if.ipv4
}

/// The attacker's address (added by [`Net::attacker`]).
fn attacker_ip(net: &Net) -> Ipv4Addr {
    let c = carrier_ip(net).octets();
    Ipv4Addr::new(c[0], c[1], c[2], 66)
}

/// The value of a `/metrics` series, or None if absent.
fn metric_opt(sbc: &Sbc, key: &str) -> Option<u64> {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", sbc.relay_ns))
        .args(["--", "curl", "-sk", "--max-time", "5"])
        .arg(format!("https://127.0.0.1:{MGMT_PORT}/metrics"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse::<f64>().ok().map(|f| f as u64))?
    })
}

/// An INVITE from `sock` to `to`: whether anything answered within `window`.
fn invite_answered(sock: &RawSip, to: SocketAddr, call: &str, window: Duration) -> bool {
    let msg = raw::invite(sock.local(), to, CLI, CLD, call, RTP_PORT);
    sock.send(msg.as_bytes()).expect("send INVITE");
    !sock.collect(window).is_empty()
}

fn start_services(net: &Net, plane: Plane) -> Sbc {
    let carrier = carrier_ip(net);
    let set = Settings {
        management: format!("metrics_public = true\nlisten = \"0.0.0.0:{MGMT_PORT}\"\n"),
        firewall: format!(
            "sip_allow = [\"{carrier}/32\"]\n\
             management_allow = [\"127.0.0.0/8\", \"{carrier}/32\"]\n\n\
             [[firewall.services]]\nname = \"ssh\"\nprotocol = \"tcp\"\nports = [{SSH_PORT}]\n\
             allow = [\"{carrier}/32\"]\n\n\
             [[firewall.services]]\nname = \"postgres\"\nprotocol = \"tcp\"\nports = [{DB_PORT}]\n\
             allow = [\"{carrier}/32\"]\n"
        ),
        ..Settings::default()
    };
    Sbc::start_with(net, plane, &Prov::default(), &set)
}

/// Each kind of service: the attacker gets nothing, the carrier gets in.
fn every_service(plane: Plane) {
    require_privileged!();
    let _g = serial();
    let net = Net::new();
    let sbc = start_services(&net, plane);
    let (_ssh, _db) = (
        listener_in(&net.topo.relay, SSH_PORT),
        listener_in(&net.topo.relay, DB_PORT),
    );
    let attacker_sock = net.attacker();
    let (attacker, carrier) = (attacker_ip(&net), carrier_ip(&net));
    let relay = sbc.addr;

    // SIP over UDP.
    let a = RawSip::bind_in(
        &net.topo.caller,
        SocketAddr::new(attacker.into(), RAW_SIP_PORT),
        sbc.sip(),
    )
    .expect("attacker SIP socket");
    drop(attacker_sock);
    let c = RawSip::bind_in(
        &net.topo.caller,
        SocketAddr::new(carrier.into(), RAW_SIP_PORT),
        sbc.sip(),
    )
    .expect("carrier SIP socket");
    let mut report = Vec::new();
    report.push((
        "sip/udp attacker",
        invite_answered(&a, sbc.sip(), "fw-attack", SILENCE),
        false,
    ));
    report.push((
        "sip/udp carrier",
        invite_answered(&c, sbc.sip(), "fw-carrier", Duration::from_secs(10)),
        true,
    ));
    // TCP services: the handshake itself, which only XDP can refuse (in userspace sipd
    // checks SIP per message and management before the TLS handshake; SSH and the database
    // are not sipd's, so nothing else guards them, as status says).
    let tcp = if plane == Plane::Xdp {
        vec![
            ("management", MGMT_PORT),
            ("sip/tcp", SIP_PORT),
            ("ssh", SSH_PORT),
            ("postgres", DB_PORT),
        ]
    } else {
        Vec::new()
    };
    for (what, port) in tcp {
        let to = SocketAddr::new(relay, port);
        let c_ok = tcp_connects(&net.topo.caller, carrier, to, Duration::from_secs(10));
        let a_ok = tcp_connects(&net.topo.caller, attacker, to, SILENCE);
        report.push((what, c_ok, true));
        report.push((what, a_ok, false));
    }
    let wrong: Vec<_> = report.iter().filter(|(_, got, want)| got != want).collect();
    assert!(
        wrong.is_empty(),
        "{plane:?}: (what, reached, should have) {wrong:?} of {report:?}\n{}",
        sbc.log_text()
    );
    if plane == Plane::Userspace {
        // Nothing but XDP can guard a service sipd does not serve: said, not hidden.
        for svc in ["ssh", "postgres"] {
            let key = format!(
                "sbc_firewall_coverage{{service=\"{svc}\",address=\"0.0.0.0\",plane=\"none\"}}"
            );
            assert_eq!(metric_opt(&sbc, &key), Some(1), "{key}");
        }
        assert!(
            sbc.log_text().contains("NOT FIREWALLED"),
            "{}",
            sbc.log_text()
        );
    }
}

#[test]
fn every_service_admits_only_its_allow_list_xdp() {
    every_service(Plane::Xdp);
}

#[test]
fn every_service_admits_only_its_allow_list_userspace() {
    every_service(Plane::Userspace);
}

/// Coverage: SIP on every address, XDP configured on the carrier-facing veth only, and an
/// INVITE from outside the allow list on the vendor-facing veth.
fn uncovered_interface(plane: Plane) {
    require_privileged!();
    let _g = serial();
    let net = Net::new();
    let carrier = carrier_ip(&net);
    let set = Settings {
        management: "metrics_public = true\n".into(),
        firewall: format!("sip_allow = [\"{carrier}/32\"]\n"),
        sip: format!(
            "advertised_address = \"{}\"\n",
            net.topo.relay_caller_if.ip(false)
        ),
        sip_listen: Some(Ipv4Addr::UNSPECIFIED.into()),
        interfaces: Some(vec![net.topo.relay_caller_if.dev.clone()]),
        ..Settings::default()
    };
    let sbc = Sbc::start_with(&net, plane, &Prov::default(), &set);
    let vendor_side = SocketAddr::new(net.topo.relay_callee_if.ip(false), SIP_PORT);
    let stranger = RawSip::bind_in(
        &net.topo.callee,
        SocketAddr::new(net.topo.callee_if.ip(false), RAW_SIP_PORT),
        vendor_side,
    )
    .expect("vendor-side socket");
    let answered = invite_answered(&stranger, vendor_side, "fw-side", SILENCE);
    // The carrier, inside the list, is still answered (on its own interface).
    let c = RawSip::bind_in(
        &net.topo.caller,
        SocketAddr::new(carrier.into(), RAW_SIP_PORT),
        sbc.sip(),
    )
    .expect("carrier SIP socket");
    let carrier_ok = invite_answered(&c, sbc.sip(), "fw-side-carrier", Duration::from_secs(10));
    assert!(
        !answered,
        "{plane:?}: an INVITE from outside the allow list on {} was answered\n{}",
        net.topo.relay_callee_if.dev,
        sbc.log_text()
    );
    assert!(
        carrier_ok,
        "{plane:?}: the carrier was not answered\n{}",
        sbc.log_text()
    );
    if plane == Plane::Xdp {
        // Covered because sipd attached XDP there itself, not by luck.
        let log = sbc.log_text();
        let line = log
            .lines()
            .find(|l| l.contains("XDP also goes on"))
            .unwrap_or_else(|| panic!("no auto-attach logged:\n{log}"));
        assert!(line.contains(&net.topo.relay_callee_if.dev), "{line}");
    }
    let want = if plane == Plane::Xdp {
        "xdp"
    } else {
        "userspace"
    };
    let key =
        format!("sbc_firewall_coverage{{service=\"sip\",address=\"0.0.0.0\",plane=\"{want}\"}}");
    let end = Instant::now() + Duration::from_secs(10);
    let mut got = metric_opt(&sbc, &key);
    while got != Some(1) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
        got = metric_opt(&sbc, &key);
    }
    assert_eq!(got, Some(1), "{key}\n{}", sbc.log_text());
}

#[test]
fn traffic_on_an_interface_not_configured_is_still_firewalled_xdp() {
    uncovered_interface(Plane::Xdp);
}

#[test]
fn traffic_on_an_interface_not_configured_is_still_firewalled_userspace() {
    uncovered_interface(Plane::Userspace);
}

/// From the attacker's host over a link made after sipd started: `fwx1` in the carrier's
/// namespace, `fwx0` (10.X.9.1, no XDP: it did not exist when sipd attached) in the relay's.
const NEW_LINK: u8 = 9;

/// An address on the link added after start (`last` on 10.X.9.0/24).
fn new_link_ip(net: &Net, last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, net.topo.id(), NEW_LINK, last)
}

/// The link a carrier's engineer adds while sipd runs (a new VLAN, a second uplink): a veth
/// pair between the carrier's and the relay's namespaces, with the attacker's addresses on
/// its far end.
fn add_link_after_start(net: &Net, hosts: &[u8]) {
    let relay = &net.topo.relay;
    relay
        .ip([
            "link",
            "add",
            "fwx0",
            "type",
            "veth",
            "peer",
            "name",
            "fwx1",
            "netns",
            net.topo.caller.name(),
        ])
        .expect("veth for the new link");
    relay
        .ip([
            "addr",
            "add",
            &format!("{}/24", new_link_ip(net, 1)),
            "dev",
            "fwx0",
        ])
        .expect("relay address on the new link");
    relay.ip(["link", "set", "fwx0", "up"]).expect("fwx0 up");
    let caller = &net.topo.caller;
    for last in hosts {
        caller
            .ip([
                "addr",
                "add",
                &format!("{}/24", new_link_ip(net, *last)),
                "dev",
                "fwx1",
            ])
            .expect("attacker address on the new link");
    }
    caller.ip(["link", "set", "fwx1", "up"]).expect("fwx1 up");
}

/// The final answer's status line (else the last provisional one) to a scanner's or a plain
/// INVITE from `sock`, or None when nothing answered within `window`.
fn invite_status(
    sock: &RawSip,
    to: SocketAddr,
    call: &str,
    ua: &str,
    window: Duration,
) -> Option<String> {
    let msg = raw::invite(sock.local(), to, CLI, CLD, call, RTP_PORT).replacen(
        "User-Agent: raw-carrier",
        &format!("User-Agent: {ua}"),
        1,
    );
    sock.send(msg.as_bytes()).expect("send INVITE");
    let answers = sock.collect(window);
    let lines: Vec<String> = answers
        .iter()
        .filter(|a| a.contains(call))
        .filter_map(|a| a.lines().next().map(str::to_string))
        .collect();
    lines
        .iter()
        .find(|l| !l.split(' ').nth(1).is_some_and(|c| c.starts_with('1')))
        .or(lines.last())
        .cloned()
}

/// An INVITE over SIP-over-TCP from `from` in `ns` to `to`: what came back within `window`
/// and whether sipd closed the connection (None: the connection was never made).
fn tcp_invite(
    ns: &Netns,
    from: Ipv4Addr,
    to: SocketAddr,
    call: &str,
    window: Duration,
) -> Option<(String, bool)> {
    use std::io::{ErrorKind, Read, Write};
    ns.enter(|| {
        let fd = tests::tcp::connect_start(from.into(), to).expect("TCP connect");
        if !tests::tcp::connected_within(&fd, 5_000) {
            return None;
        }
        let mut s = std::net::TcpStream::from(fd);
        s.set_nonblocking(false).expect("blocking");
        let local = s.local_addr().expect("local address");
        let msg = raw::invite(local, to, CLI, CLD, call, RTP_PORT).replacen(
            "SIP/2.0/UDP",
            "SIP/2.0/TCP",
            1,
        );
        // A write to a connection sipd has already closed may fail: that is an answer too.
        let _ = s.write_all(msg.as_bytes());
        let end = Instant::now() + window;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let closed = loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            s.set_read_timeout(Some(left)).expect("read timeout");
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break false;
                }
                Err(_) => break true,
            }
        };
        Some((String::from_utf8_lossy(&got).into_owned(), closed))
    })
}

/// What XDP cannot see is checked in userspace: SIP on every address, XDP on every interface
/// at start; then a link is added. Over it, from outside the SIP allow list, from the deny
/// list, and from a scanner the IDS bans: nothing answered, each drop counted under its
/// reason; a source on the allow list is still answered; coverage says `userspace` for SIP
/// (and `none` for SSH, which sipd does not serve).
fn interface_added_after_start(plane: Plane) {
    require_privileged!();
    let _g = serial();
    let net = Net::new();
    let carrier = carrier_ip(&net);
    let (stranger, denied, scanner, friend) = (66, 67, 68, 69);
    let set = Settings {
        management: "metrics_public = true\n".into(),
        firewall: format!(
            "sip_allow = [\"{carrier}/32\", \"{}/32\", \"{}/32\"]\ndeny = [\"{}/32\"]\n",
            new_link_ip(&net, scanner),
            new_link_ip(&net, friend),
            new_link_ip(&net, denied),
        ),
        sip: format!(
            "advertised_address = \"{}\"\n",
            net.topo.relay_caller_if.ip(false)
        ),
        sip_listen: Some(Ipv4Addr::UNSPECIFIED.into()),
        ..Settings::default()
    };
    let sbc = Sbc::start_with(&net, plane, &Prov::default(), &set);
    add_link_after_start(&net, &[stranger, denied, scanner, friend]);
    let to = SocketAddr::new(new_link_ip(&net, 1).into(), SIP_PORT);
    let sock = |last: u8| {
        RawSip::bind_in(
            &net.topo.caller,
            SocketAddr::new(new_link_ip(&net, last).into(), RAW_SIP_PORT),
            to,
        )
        .expect("socket on the new link")
    };

    // The link works: a source on the allow list is answered over it (polled: the link
    // comes up in its own time).
    let f = sock(friend);
    let end = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    while !invite_answered(&f, to, &format!("fwx-friend-{n}"), Duration::from_secs(2)) {
        assert!(
            Instant::now() < end,
            "{plane:?}: the allowed source was never answered over the new link\n{}",
            sbc.log_text()
        );
        n += 1;
    }
    // Coverage worked out again: SIP on every address is now partly userspace's.
    let key = "sbc_firewall_coverage{service=\"sip\",address=\"0.0.0.0\",plane=\"userspace\"}";
    let end = Instant::now() + Duration::from_secs(15);
    let mut got = metric_opt(&sbc, key);
    while got != Some(1) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(300));
        got = metric_opt(&sbc, key);
    }
    let ssh = metric_opt(
        &sbc,
        "sbc_firewall_coverage{service=\"ssh\",address=\"0.0.0.0\",plane=\"none\"}",
    );

    let before = |r: &str| sbc.dataplane_metric(r);
    let (acl0, deny0, ban0) = (
        before("drop_service_acl"),
        before("drop_denied"),
        before("drop_banned"),
    );
    let stranger_answer = invite_status(&sock(stranger), to, "fwx-stranger", "x", SILENCE);
    let denied_answer = invite_status(&sock(denied), to, "fwx-denied", "x", SILENCE);
    // Over TCP the stranger's connection is closed before anything is read.
    let stranger_tcp = tcp_invite(
        &net.topo.caller,
        new_link_ip(&net, stranger),
        to,
        "fwx-tcp",
        SILENCE,
    );
    let s = sock(scanner);
    let scan = invite_status(
        &s,
        to,
        "fwx-scan",
        "friendly-scanner",
        Duration::from_secs(5),
    );
    // The IDS's ban reaches the data plane (kernel maps and their userspace copy) at once;
    // the scanner's next INVITE, polled until the ban is in, gets nothing.
    let end = Instant::now() + Duration::from_secs(10);
    let mut after_ban = Some(String::new());
    let mut k = 0;
    while after_ban.is_some() && Instant::now() < end {
        after_ban = invite_status(
            &s,
            to,
            &format!("fwx-banned-{k}"),
            "x",
            Duration::from_secs(2),
        );
        k += 1;
    }
    let after_ban_again = invite_status(&s, to, "fwx-banned-last", "x", SILENCE);
    let banned_tcp = tcp_invite(
        &net.topo.caller,
        new_link_ip(&net, scanner),
        to,
        "fwx-banned-tcp",
        SILENCE,
    );
    let (acl, deny, ban) = (
        before("drop_service_acl") - acl0,
        before("drop_denied") - deny0,
        before("drop_banned") - ban0,
    );
    let report = format!(
        "{plane:?}: coverage(sip userspace) {got:?}, ssh none {ssh:?}; stranger {stranger_answer:?} \
         (acl drops +{acl}), denied {denied_answer:?} (+{deny}), scanner {scan:?} then \
         {after_ban_again:?} (ban drops +{ban}); over TCP (reply, closed by sipd): stranger \
         {stranger_tcp:?}, banned {banned_tcp:?}"
    );
    eprintln!("{report}");
    assert_eq!(got, Some(1), "{report}\n{}", sbc.log_text());
    assert_eq!(ssh, Some(1), "{report}");
    assert!(stranger_answer.is_none() && acl >= 1, "{report}");
    assert!(denied_answer.is_none() && deny >= 1, "{report}");
    assert!(
        scan.as_deref().is_some_and(|l| l.contains(" 403 ")),
        "{report}"
    );
    assert!(after_ban_again.is_none() && ban >= 1, "{report}");
    for tcp in [&stranger_tcp, &banned_tcp] {
        assert!(
            tcp.as_ref()
                .is_none_or(|(reply, closed)| reply.is_empty() && *closed),
            "{report}"
        );
    }
    assert!(
        invite_answered(&f, to, "fwx-friend-last", Duration::from_secs(10)),
        "{report}: the allowed source is still answered"
    );
}

#[test]
fn an_interface_added_after_start_is_firewalled_xdp() {
    interface_added_after_start(Plane::Xdp);
}

#[test]
fn an_interface_added_after_start_is_firewalled_userspace() {
    interface_added_after_start(Plane::Userspace);
}
