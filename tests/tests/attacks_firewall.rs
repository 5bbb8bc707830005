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
//!    interface is still dropped, and `/metrics` says which plane covers each address.

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
