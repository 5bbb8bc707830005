//! Firewall evasion against a real `sipd run`, with SIP restricted to the carrier's addresses
//! (`[firewall] sip_allow`): from the attacker's host on the carrier's network,
//!
//! 1. an INVITE bigger than the MTU, so it leaves as IPv4 fragments: no response, while the
//!    same INVITE from the carrier gets one (fragmented SIP is legitimate);
//! 2. an INVITE over IPv6 behind a destination-options header, and
//! 3. an INVITE over IPv6 as fragments: no response either, while the carrier's own IPv6
//!    packets of both kinds are answered;
//! 4. a flood of INVITEs behind CRLFs, which went past the per-source INVITE limit, and
//! 5. a burst of TCP SYNs to the SIP port: both limited per source.
//!
//! sipd listens on IPv4 and IPv6 (`Settings::dual_stack`). On the XDP data plane the verdict
//! counters show where each attack stopped (the service ACL, as an operator reads it in
//! `/metrics`); on the userspace data plane the stack reassembles and strips before `sipd`'s
//! own firewall judges the datagram, so the answer (none) is what shows.

mod sbc;

use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use sbc::*;
use tests::require_privileged;
use tests::sip::{self as raw, RawSip};
use tests::tcp;

/// The carrier's raw SIP socket (not sipp's port).
const RAW_SIP_PORT: u16 = SIP_PORT + 2;
/// Bytes of the big INVITE: two fragments and a bit on a 1500-byte link.
const BIG: usize = 3200;
/// How long "no response" is watched for: sipd answers a permitted INVITE within
/// milliseconds, and retransmits nothing to a source it never heard.
const SILENCE: Duration = Duration::from_secs(3);

fn start(net: &Net, plane: Plane) -> Sbc {
    let set = Settings {
        dual_stack: true,
        management: "metrics_public = true\n".into(),
        firewall: format!(
            "sip_allow = [\"{}/32\", \"{}/128\"]\n",
            net.topo.caller_if.ipv4, net.topo.caller_if.ipv6
        ),
        ..Settings::default()
    };
    Sbc::start_with(net, plane, &Prov::default(), &set)
}

/// An INVITE padded past the link's MTU with a header any SIP parser skips.
fn big_invite(local: SocketAddr, remote: SocketAddr, call_id: &str) -> String {
    let msg = raw::invite(local, remote, CLI, CLD, call_id, RTP_PORT);
    let pad = format!("X-Pad: {}\r\n", "p".repeat(BIG - msg.len()));
    msg.replacen(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\n{pad}"),
        1,
    )
}

/// Every SIP message arriving on `sock` within `window`.
fn responses(sock: &UdpSocket, window: Duration) -> Vec<String> {
    let end = Instant::now() + window;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while Instant::now() < end {
        let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    out
}

/// Polls the data-plane counter `reason` until it has grown by at least `by` from `from`;
/// returns how far it grew (so a failure shows what did happen).
fn grows(sbc: &Sbc, reason: &str, from: u64, by: u64) -> u64 {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let now = sbc.dataplane_metric(reason) - from;
        if now >= by || Instant::now() > end {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 1. The fragmented INVITE over IPv4.
fn fragmented_invite(plane: Plane) {
    require_privileged!();
    let _g = serial();
    let net = Net::new();
    let sbc = start(&net, plane);
    let attacker = net.attacker();
    let before = (plane == Plane::Xdp).then(|| {
        (
            sbc.dataplane_metric("drop_service_acl"),
            sbc.dataplane_metric("pass_fragment"),
        )
    });

    let from = attacker.local_addr().expect("addr");
    attacker
        .send_to(
            big_invite(from, sbc.sip(), "frag-attack").as_bytes(),
            sbc.sip(),
        )
        .expect("send the attacker's INVITE");
    let got = responses(&attacker, SILENCE);

    // The same INVITE from the carrier: proves it is fragmented SIP sipd does answer.
    let local = SocketAddr::new(net.topo.caller_if.ip(false), RAW_SIP_PORT);
    let carrier = RawSip::bind_in(&net.topo.caller, local, sbc.sip()).expect("carrier socket");
    carrier
        .send(big_invite(local, sbc.sip(), "frag-carrier").as_bytes())
        .expect("send the carrier's INVITE");
    let mut seen = Vec::new();
    let answered = carrier.wait_for("SIP/2.0 ", "1 INVITE", Duration::from_secs(10), &mut seen);

    assert!(
        got.is_empty(),
        "{plane:?}: the attacker's fragmented INVITE was answered: {:?}",
        got.iter()
            .map(|m| m.lines().next().unwrap_or_default())
            .collect::<Vec<_>>()
    );
    assert!(
        answered.is_some(),
        "{plane:?}: the carrier's fragmented INVITE got no response (seen {seen:?})\n{}",
        sbc.log_text()
    );
    if let Some((acl, passed)) = before {
        // The first fragment met the ACL; its followers were dropped with it, and only the
        // carrier's followed a pass.
        assert!(grows(&sbc, "drop_service_acl", acl, 1) >= 1);
        assert!(grows(&sbc, "drop_fragment", 0, 1) >= 1);
        assert!(grows(&sbc, "pass_fragment", passed, 1) >= 1);
    }
}

#[test]
fn fragmented_invite_from_outside_the_allow_list_xdp() {
    fragmented_invite(Plane::Xdp);
}

#[test]
fn fragmented_invite_from_outside_the_allow_list_userspace() {
    fragmented_invite(Plane::Userspace);
}

/// A UDP socket on `ip` in the carrier's namespace (`ip` added to its interface first if it
/// is not the carrier's own).
fn v6_socket(net: &Net, ip: Ipv6Addr) -> UdpSocket {
    if ip != net.topo.caller_if.ipv6 {
        net.topo
            .caller
            .ip([
                "-6",
                "addr",
                "add",
                &format!("{ip}/64"),
                "dev",
                &net.topo.caller_if.dev,
                "nodad",
            ])
            .expect("attacker's IPv6 address");
    }
    tests::rtp::bind_in(&net.topo.caller, SocketAddr::new(IpAddr::V6(ip), 40_000))
        .expect("IPv6 socket")
}

/// Every datagram from `sock` carries a destination-options header (one PadN option): the
/// sticky IPV6_DSTOPTS option of RFC 3542.
fn with_dstopts(sock: &UdpSocket) {
    let hdr: [u8; 8] = [0, 0, 1, 4, 0, 0, 0, 0];
    // SAFETY: a valid socket fd and a pointer to `hdr.len()` readable bytes.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_DSTOPTS,
            hdr.as_ptr().cast(),
            hdr.len() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "IPV6_DSTOPTS: {}", std::io::Error::last_os_error());
}

/// Whether `sock` got any SIP message within [`SILENCE`].
fn answered(sock: &UdpSocket) -> bool {
    !responses(sock, SILENCE).is_empty()
}

/// 2 and 3: the attacker's IPv6 INVITEs get no answer, the carrier's do; on XDP the counters
/// also show the service ACL stopped them (and the later fragments followed the first).
fn ipv6_extension_headers_and_fragments(plane: Plane) {
    let net = Net::new();
    let sbc = start(&net, plane);
    let xdp = plane != Plane::Userspace;
    let to = SocketAddr::new(IpAddr::V6(net.topo.relay_caller_if.ipv6), SIP_PORT);
    let mut attacker_ip = net.topo.caller_if.ipv6.segments();
    attacker_ip[7] = 0x66;
    let attacker = v6_socket(&net, attacker_ip.into());
    let carrier = v6_socket(&net, net.topo.caller_if.ipv6);
    let m = |r: &str| if xdp { sbc.dataplane_metric(r) } else { 0 };

    // 2. Destination options in front of UDP.
    let small = |from: &UdpSocket, call_id: &str| {
        raw::invite(from.local_addr().unwrap(), to, CLI, CLD, call_id, RTP_PORT)
    };
    with_dstopts(&attacker);
    let acl = m("drop_service_acl");
    attacker
        .send_to(small(&attacker, "v6-dst-a").as_bytes(), to)
        .expect("send");
    assert!(
        !answered(&attacker),
        "destination options: the attacker was answered"
    );
    with_dstopts(&carrier);
    let sip = m("pass_sip");
    carrier
        .send_to(small(&carrier, "v6-dst-c").as_bytes(), to)
        .expect("send");
    assert!(
        answered(&carrier),
        "destination options: the carrier got no answer"
    );
    if xdp {
        let counted = (
            grows(&sbc, "drop_service_acl", acl, 1),
            grows(&sbc, "pass_sip", sip, 1),
        );
        assert_eq!(
            counted,
            (1, 1),
            "destination options: (attacker dropped by the ACL, carrier passed the guard)"
        );
    }

    // 3. Fragments (the destination options stay: a chain of two extension headers).
    let big = big_invite(attacker.local_addr().unwrap(), to, "v6-frag-a");
    let (acl, follow) = (m("drop_service_acl"), m("drop_fragment"));
    attacker.send_to(big.as_bytes(), to).expect("send");
    assert!(
        !answered(&attacker),
        "IPv6 fragments: the attacker was answered"
    );
    let big = big_invite(carrier.local_addr().unwrap(), to, "v6-frag-c");
    let (sip, pass) = (m("pass_sip"), m("pass_fragment"));
    carrier.send_to(big.as_bytes(), to).expect("send");
    assert!(
        answered(&carrier),
        "IPv6 fragments: the carrier got no answer"
    );
    if xdp {
        let counted = (
            (
                grows(&sbc, "drop_service_acl", acl, 1),
                grows(&sbc, "drop_fragment", follow, 2),
            ),
            (
                grows(&sbc, "pass_sip", sip, 1),
                grows(&sbc, "pass_fragment", pass, 2),
            ),
        );
        assert_eq!(
            counted,
            ((1, 2), (1, 2)),
            "IPv6 fragments: (attacker's first and later fragments dropped), (carrier's passed)"
        );
    }
}

#[test]
fn ipv6_extension_headers_and_fragments_xdp() {
    require_privileged!();
    let _g = serial();
    ipv6_extension_headers_and_fragments(Plane::Xdp);
}

#[test]
fn ipv6_extension_headers_and_fragments_userspace() {
    require_privileged!();
    let _g = serial();
    ipv6_extension_headers_and_fragments(Plane::Userspace);
}

/// INVITEs the flood sends at once, as in the report that found the bypass.
const FLOOD: usize = 400;

/// 4. An INVITE flood from one source, each INVITE behind CRLFs (which SIP parsers skip):
///    limited per source like a plain INVITE flood. Before the INVITE detector learned to
///    skip CRLFs, 400 of 400 reached sipd (against about 119 of 400 without the prefix).
///    SIP is open to all here (no `sip_allow`): only the per-source INVITE rate stands.
fn crlf_invite_flood(plane: Plane) {
    let net = Net::new();
    let set = Settings {
        management: "metrics_public = true\n".into(),
        ..Settings::default()
    };
    let sbc = Sbc::start_with(&net, plane, &Prov::default(), &set);
    let attacker = net.attacker();
    let from = attacker.local_addr().expect("addr");
    // Any of the kernel's per-source verdicts may take a packet of the burst: the INVITE
    // rate, the packet rate when the burst outruns it, or, once the IDS has turned those
    // drops into a flood ban (how soon depends on the machine's load), the ban.
    let limited = (plane == Plane::Xdp).then(|| kernel_limited(&sbc));
    for i in 0..FLOOD {
        let invite = raw::invite(from, sbc.sip(), CLI, CLD, &format!("crlf-{i}"), RTP_PORT);
        attacker
            .send_to(format!("\r\n\r\n{invite}").as_bytes(), sbc.sip())
            .expect("send");
    }
    // Each INVITE that reached sipd draws one answer (a refusal is sent once).
    let reached = responses(&attacker, SILENCE)
        .iter()
        .filter(|m| m.contains(" INVITE\r\n"))
        .count();
    // The default bucket: a burst of 40 and 20/s; the flood takes well under a second.
    assert!(
        (1..=80).contains(&reached),
        "{plane:?}: {reached} of {FLOOD} CRLF-prefixed INVITEs reached sipd (the burst should)"
    );
    eprintln!("{plane:?}: {reached} of {FLOOD} CRLF-prefixed INVITEs reached sipd");
    if let Some(before) = limited {
        let want = (FLOOD - 80) as u64;
        let end = Instant::now() + Duration::from_secs(10);
        let mut dropped = kernel_limited(&sbc) - before;
        while dropped < want && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(100));
            dropped = kernel_limited(&sbc) - before;
        }
        assert!(
            dropped >= want,
            "the kernel's per-source limits dropped only {dropped}"
        );
    }
}

/// Drops by the kernel's per-source SIP verdicts (INVITE rate, packet rate, ban).
fn kernel_limited(sbc: &Sbc) -> u64 {
    [
        "drop_sip_invite_rate",
        "drop_sip_packet_rate",
        "drop_banned",
    ]
    .iter()
    .map(|r| sbc.dataplane_metric(r))
    .sum()
}

#[test]
fn crlf_prefixed_invite_flood_is_limited_xdp() {
    require_privileged!();
    let _g = serial();
    crlf_invite_flood(Plane::Xdp);
}

#[test]
fn crlf_prefixed_invite_flood_is_limited_userspace() {
    require_privileged!();
    let _g = serial();
    crlf_invite_flood(Plane::Userspace);
}

/// New TCP connections the SYN flood opens at once: past the default burst (100).
const SYNS: usize = 300;

/// 5. A burst of new TCP connections to the SIP port from one source: the kernel drops the
///    SYNs past the per-source rate (`[guard] tcp_syns_per_sec`, `tcp_syn_burst`), while the
///    carrier still connects. XDP only: on the userspace plane the kernel's own SYN cookies
///    and sipd's per-source connection cap (`attacks_sip::tcp`) stand in its place.
#[test]
fn tcp_syn_burst_from_one_source_is_limited_xdp() {
    require_privileged!();
    let _g = serial();
    let net = Net::new();
    let set = Settings {
        management: "metrics_public = true\n".into(),
        ..Settings::default()
    };
    let sbc = Sbc::start_with(&net, Plane::Xdp, &Prov::default(), &set);
    let attacker = net.attacker().local_addr().expect("addr").ip();
    let before = sbc.dataplane_metric("drop_tcp_syn_rate");
    let fds = net.topo.caller.enter(|| {
        (0..SYNS)
            .map(|_| tcp::connect_start(attacker, sbc.sip()).expect("connect"))
            .collect::<Vec<_>>()
    });
    let dropped = grows(&sbc, "drop_tcp_syn_rate", before, (SYNS - 100) as u64);
    drop(fds);
    assert!(
        dropped >= (SYNS - 100) as u64,
        "only {dropped} of {SYNS} SYNs were dropped by the per-source SYN rate"
    );
    let carrier = net.topo.caller_if.ip(false);
    let ok = net.topo.caller.enter(|| {
        let fd = tcp::connect_start(carrier, sbc.sip()).expect("connect");
        tcp::connected_within(&fd, 5_000)
    });
    assert!(ok, "the carrier could not connect meanwhile");
}
