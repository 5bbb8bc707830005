//! SIP over IPv6 with real peers: Debian's `sipp` as the carrier (UAC, caller namespace) and the
//! vendor (UAS, callee namespace) speaking IPv6 to a dual-stack `sipd run` in the relay
//! namespace (`Settings::dual_stack`: SIP on the relay's IPv4 and IPv6 addresses, the relay
//! on `::` advertising one address per family), on both data planes.
//!
//! - an IP-authenticated and a digest-authenticated call from an IPv6 carrier to an IPv6
//!   vendor: media byte for byte both ways (packets and bytes counted at each end), relayed in
//!   the kernel on the XDP plane (its relay counters say so);
//! - an IPv6 carrier calling an IPv4 vendor: the media bridged between the families (userspace
//!   relay);
//! - a call over TCP over IPv6 end to end (carrier → sipd → vendor, `sipp -t t1`);
//! - a ban of an IPv6 /64: a scanner from one address of a /64 gets the /64 banned (listed
//!   as such in the API), a second address of that /64 is then dropped by the data plane, and
//!   the carrier keeps calling.
//!
//! Media is Rust RTP sockets next to the sipps (`tests::rtp`), as in `sip_netns`.

mod sbc;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use sbc::*;
use tests::rtp;
use tests::sip::{MediaCheck, RawSip, Sipp, SippOutcome};
use tests::{require_privileged, require_sipp};

/// The peers' RTP port (their own sockets, of the family each side signals in).
const MEDIA_PORT: u16 = 20_004;
const PASSWORD: &str = "Kq9!Vt4m-Plover-82";
/// One G.711 packet as `tests::rtp` builds it: 12 bytes of header, 160 of payload.
const PACKET_BYTES: u64 = 172;

/// How a call is placed.
#[derive(Clone, Copy, Debug)]
struct Call {
    plane: Plane,
    vendor_v6: bool,
    digest: bool,
    tcp: bool,
}

/// Provisioning: the carrier authenticated by its IPv6 address (and a digest password when
/// asked), one vendor at its address of `call.vendor_v6`'s family.
fn prov(net: &Net, call: Call) -> String {
    let carrier = net.topo.caller_if.ip(true);
    let vendor = SocketAddr::new(net.topo.callee_if.ip(call.vendor_v6), SIP_PORT);
    let transport = if call.tcp { "tcp" } else { "udp" };
    let sip = if call.digest {
        format!("sip = {{ username = \"carrier-a\", password = \"{PASSWORD}\" }}\n")
    } else {
        String::new()
    };
    format!(
        "[[tariff]]\nname = \"std\"\nrate_per_minute = \"0.60\"\nexpected_call_secs = 60\n\
         initial_increment_secs = 1\nincrement_secs = 1\n\n\
         [[connection]]\nname = \"vendor\"\ndestination = \"{vendor}\"\n\
         transport = \"{transport}\"\ncld_prefixes = [\"33\"]\nmax_channels = 10\n\
         cps_limit = 10\npriority = 10\n\n\
         [[account]]\nname = \"carrier-a\"\ntariff = \"std\"\nbalance = \"100.00\"\n\
         cps_limit = 10\nmax_sessions = 10\nmax_call_secs = 3600\n{sip}\n\
         [[account.rule]]\nname = \"office\"\nremote = \"{carrier}/128\"\n\
         cli = {{ prefix = \"44\" }}\ncld = {{ prefix = \"33\" }}\nip_only = {}\n",
        !call.digest
    )
}

fn settings() -> Settings {
    Settings {
        dual_stack: true,
        management: "metrics_public = true\n".into(),
        ..Settings::default()
    }
}

/// sipd's SIP address for IPv6 peers.
fn sbc_sip_v6(net: &Net) -> SocketAddr {
    SocketAddr::new(net.topo.relay_caller_if.ip(true), SIP_PORT)
}

/// What one call did, for the assertions a test adds.
struct Placed {
    uac: SippOutcome,
    /// Where the carrier and the vendor were told to send media.
    at_carrier: SocketAddr,
    at_vendor: SocketAddr,
    check: MediaCheck,
    /// Packets the XDP program relayed itself (0 on the userspace plane).
    kernel: u64,
}

/// One answered call from the IPv6 carrier through sipd, media checked both ways.
fn place(net: &Net, sbc: &Sbc, call: Call) -> Placed {
    let transport = if call.tcp { "t1" } else { "u1" };
    let carrier_ip = net.topo.caller_if.ip(true);
    let vendor_ip = net.topo.callee_if.ip(call.vendor_v6);
    let carrier_rtp = rtp::bind_in(&net.topo.caller, SocketAddr::new(carrier_ip, MEDIA_PORT))
        .expect("carrier rtp");
    let vendor_rtp =
        rtp::bind_in(&net.topo.callee, SocketAddr::new(vendor_ip, MEDIA_PORT)).expect("vendor rtp");

    let mut s = Sipp::new("uas.xml", SocketAddr::new(vendor_ip, SIP_PORT));
    s.pause = Duration::from_millis(100);
    s.transport = transport;
    s.var("rtp_port", &MEDIA_PORT.to_string());
    let mut uas = s.spawn(&net.topo.callee).expect("spawn uas");
    uas.wait_bound(&net.topo.callee).expect("uas bound");

    let mut c = Sipp::uac(
        "uac.xml",
        SocketAddr::new(carrier_ip, SIP_PORT),
        sbc_sip_v6(net),
        CLI,
        CLD,
        MEDIA_PORT,
    );
    c.pause = Duration::from_millis(2500);
    c.transport = transport;
    if call.digest {
        c.auth = Some(("carrier-a".into(), PASSWORD.into()));
    }
    let mut uac = c.spawn(&net.topo.caller).expect("spawn uac");
    let kernel_before = kernel_relayed(sbc);
    let at_carrier = uac
        .wait_media("MEDIA", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("carrier got no SDP answer: {e}\n{}", sbc.log_text()));
    let at_vendor = uas
        .wait_media("MEDIA", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("vendor got no SDP offer: {e}\n{}", sbc.log_text()));
    let check = MediaCheck::run(&carrier_rtp, &vendor_rtp, at_carrier, at_vendor, PACKETS, 1);
    let kernel = kernel_relayed(sbc) - kernel_before;
    let (uac, uas) = (uac.finish(), uas.finish());
    assert!(uac.ok(), "carrier sipp failed:\n{uac}\n{}", sbc.log_text());
    assert!(uas.ok(), "vendor sipp failed:\n{uas}\n{}", sbc.log_text());
    let finals = uac.trace.final_counts("INVITE");
    assert_eq!(finals.get(&200), Some(&1), "{uac}");
    if call.digest {
        assert_eq!(finals.get(&401), Some(&1), "challenged first: {uac}");
    }
    // Topology hiding holds over IPv6 too: the vendor never sees the carrier's address.
    let inv = &uas.trace.requests_received("INVITE")[0];
    assert!(
        !inv.text.contains(&carrier_ip.to_string()),
        "carrier address leaked to the vendor:\n{}",
        inv.text
    );
    Placed {
        uac,
        at_carrier,
        at_vendor,
        check,
        kernel,
    }
}

/// Packets the XDP program relayed so far (0 on the userspace plane: no kernel maps).
fn kernel_relayed(sbc: &Sbc) -> u64 {
    if sbc.plane != Plane::Xdp {
        return 0;
    }
    let st = sbc.kernel_stats();
    st["relay_redirect"] + st["relay_tx"]
}

/// Every packet arrived once, intact, both ways, and the bytes each end received are the
/// bytes the other sent.
#[track_caller]
fn assert_byte_exact(p: &Placed) {
    p.check.assert_lossless();
    for (what, (sent, got)) in [
        ("carrier→vendor", &p.check.forward),
        ("vendor→carrier", &p.check.back),
    ] {
        let bytes: u64 = got.streams.values().map(|s| s.bytes).sum();
        assert_eq!(sent.total(), PACKETS, "{what}: sent");
        assert_eq!(got.unique(), PACKETS, "{what}: received");
        assert_eq!(bytes, PACKETS * PACKET_BYTES, "{what}: bytes received");
    }
}

fn call_v6_to_v6(plane: Plane, digest: bool) {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    let call = Call {
        plane,
        vendor_v6: true,
        digest,
        tcp: false,
    };
    let mut sbc = Sbc::start_provisioned(&net, plane, &prov(&net, call), &settings());
    let p = place(&net, &sbc, call);
    let relay_v6 = net.topo.relay_caller_if.ip(true);
    assert_eq!(p.at_carrier.ip(), relay_v6, "carrier told the relay's IPv6");
    assert!(p.at_vendor.is_ipv6(), "vendor told an IPv6 relay address");
    assert_byte_exact(&p);
    if plane == Plane::Xdp {
        // The first packet each way may take the slow path while the neighbour is resolved.
        assert!(
            p.kernel + 4 >= 2 * PACKETS,
            "the kernel relayed {} of {}",
            p.kernel,
            2 * PACKETS
        );
    }
    let cdrs = sbc.cdrs();
    assert_eq!(cdrs.len(), 1, "{cdrs:#?}");
    assert_eq!(cdrs[0]["result_code"], 200, "{:#}", cdrs[0]);
    drop(p.uac);
}

#[test]
fn sipp_ipv6_ip_auth_call_xdp() {
    call_v6_to_v6(Plane::Xdp, false);
}

#[test]
fn sipp_ipv6_ip_auth_call_userspace() {
    call_v6_to_v6(Plane::Userspace, false);
}

#[test]
fn sipp_ipv6_digest_call_xdp() {
    call_v6_to_v6(Plane::Xdp, true);
}

#[test]
fn sipp_ipv6_digest_call_userspace() {
    call_v6_to_v6(Plane::Userspace, true);
}

fn call_v6_to_v4(plane: Plane) {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    let call = Call {
        plane,
        vendor_v6: false,
        digest: false,
        tcp: false,
    };
    let mut sbc = Sbc::start_provisioned(&net, plane, &prov(&net, call), &settings());
    let p = place(&net, &sbc, call);
    assert!(p.at_carrier.is_ipv6(), "carrier told an IPv6 relay address");
    assert!(p.at_vendor.is_ipv4(), "vendor told an IPv4 relay address");
    assert_byte_exact(&p);
    // Bridged between the families by the userspace relay: not the kernel's.
    assert!(p.kernel <= 4, "kernel relayed {} cross-family", p.kernel);
    assert_eq!(sbc.cdrs().len(), 1);
}

#[test]
fn sipp_ipv6_carrier_to_ipv4_vendor_bridged_xdp() {
    call_v6_to_v4(Plane::Xdp);
}

#[test]
fn sipp_ipv6_carrier_to_ipv4_vendor_bridged_userspace() {
    call_v6_to_v4(Plane::Userspace);
}

/// TCP over IPv6 from the carrier to sipd and from sipd to the vendor.
#[test]
fn sipp_ipv6_tcp_call_end_to_end() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    let call = Call {
        plane: Plane::Xdp,
        vendor_v6: true,
        digest: true,
        tcp: true,
    };
    let mut sbc = Sbc::start_provisioned(&net, call.plane, &prov(&net, call), &settings());
    let p = place(&net, &sbc, call);
    assert_byte_exact(&p);
    assert!(
        p.uac.trace.sent().all(|m| m.text.contains("SIP/2.0/TCP")),
        "the carrier spoke TCP:\n{}",
        p.uac
    );
    assert_eq!(sbc.cdrs().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// A ban of an IPv6 /64.

/// Two addresses of one /64 next to the carrier's (`fd00:c8:X:1::/64` routed through the
/// carrier's link), and a UDP socket at each towards sipd's IPv6 SIP address.
fn attacker_pair(net: &Net) -> (RawSip, RawSip) {
    let carrier = match net.topo.caller_if.ip(true) {
        IpAddr::V6(a) => a,
        IpAddr::V4(_) => unreachable!("an IPv6 address"),
    };
    let s = carrier.segments();
    let net64 = Ipv6Addr::new(s[0], s[1], s[2], 0xbad, 0, 0, 0, 0);
    let (ns, dev) = (&net.topo.caller, net.topo.caller_if.dev.as_str());
    net.topo
        .relay
        .ip([
            "-6",
            "route",
            "add",
            &format!("{net64}/64"),
            "via",
            &carrier.to_string(),
        ])
        .expect("route to the attacker's /64");
    let bind = |last: u16| {
        let ip = Ipv6Addr::new(s[0], s[1], s[2], 0xbad, 0, 0, 0, last);
        ns.ip(["addr", "add", &format!("{ip}/128"), "dev", dev, "nodad"])
            .expect("attacker address");
        RawSip::bind_in(ns, SocketAddr::new(ip.into(), 41_000), sbc_sip_v6(net)).expect("bind")
    };
    (bind(1), bind(2))
}

/// An INVITE from `from` with User-Agent `ua`; its answer's status within `wait`, if any.
fn answer(from: &RawSip, ua: &str, n: u32, wait: Duration) -> Option<u16> {
    let (l, r) = (from.local(), from.to);
    let tag = format!("v6ban{n}x{}", l.port());
    let msg = format!(
        "INVITE sip:{CLD}@{r} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK-{tag}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{CLI}@{l}>;tag={tag}\r\nTo: <sip:{CLD}@{r}>\r\n\
         Call-ID: {tag}\r\nCSeq: 1 INVITE\r\nContact: <sip:{CLI}@{l}>\r\n\
         User-Agent: {ua}\r\nContent-Length: 0\r\n\r\n"
    );
    from.send(msg.as_bytes()).expect("send");
    let end = Instant::now() + wait;
    let mut buf = vec![0u8; 65_536];
    while Instant::now() < end {
        let _ = from.sock.set_read_timeout(Some(Duration::from_millis(50)));
        let Ok((len, _)) = from.sock.recv_from(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..len]);
        if !text.contains(&format!("Call-ID: {tag}")) {
            continue;
        }
        let code = text.get(8..11).and_then(|c| c.parse().ok());
        if code.is_some_and(|c: u16| c >= 200) {
            return code;
        }
    }
    None
}

/// Polls `f` until it holds or `secs` pass.
fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    f()
}

fn ban_of_a_64(plane: Plane) {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let net = Net::new();
    let call = Call {
        plane,
        vendor_v6: true,
        digest: false,
        tcp: false,
    };
    let set = Settings {
        admin_password: Some("Tq7#harbour-Lantern-55"),
        ..settings()
    };
    let mut sbc = Sbc::start_provisioned(&net, plane, &prov(&net, call), &set);
    let (first, second) = attacker_pair(&net);
    // Before: the second address is answered (403: no account of its).
    assert_eq!(
        answer(&second, "probe", 0, Duration::from_secs(5)),
        Some(403),
        "the second address is answered before the ban"
    );
    let dropped = sbc.dataplane_metric("drop_banned");
    assert_eq!(
        answer(&first, "friendly-scanner", 1, Duration::from_secs(5)),
        Some(403),
        "the scanner is refused"
    );
    assert!(
        eventually(5, || answer(
            &second,
            "probe",
            2,
            Duration::from_millis(800)
        )
        .is_none()),
        "{}: an address of the scanner's /64 that never offended is still answered",
        second.local()
    );
    assert!(
        sbc.dataplane_metric("drop_banned") > dropped,
        "dropped as banned by the data plane"
    );
    assert_eq!(sbc.metric("sbc_bans"), 1, "one ban: the /64");
    let listed = sbc.api_get("/api/bans");
    let s = match first.local().ip() {
        IpAddr::V6(a) => a.segments(),
        IpAddr::V4(_) => unreachable!(),
    };
    let want = format!("{}/64", Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0));
    assert!(
        listed.to_string().contains(&format!("\"{want}\"")),
        "the ban is listed as {want}: {listed:#}"
    );
    // The carrier keeps calling over IPv6.
    let p = place(&net, &sbc, call);
    assert_byte_exact(&p);
    sbc.stop();
}

#[test]
fn ipv6_ban_covers_the_64_xdp() {
    ban_of_a_64(Plane::Xdp);
}

#[test]
fn ipv6_ban_covers_the_64_userspace() {
    ban_of_a_64(Plane::Userspace);
}
