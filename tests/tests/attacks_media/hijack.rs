//! Media hijack (RTP bleed) and injection.
//!
//! While a call rings, an attacker on the carrier's network sends one packet to every even
//! relay port, hoping a leg learns it as its peer; then both parties talk. The attacker must
//! receive nothing and the call's media must arrive intact. After the answer the attacker
//! injects into both of the call's relay ports: nothing reaches either party, and the drops
//! are counted.
//!
//! What stays allowed: a carrier behind NAT, whose SDP names a private address, is learnt
//! from the address its SIP came from, and its call talks both ways.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tests::rtp;
use tests::sip::MediaCheck;
use tests::{require_privileged, require_sipp};

use crate::sbc::{Net, PORT_MAX, PORT_MIN, Plane, Prov, SIP_PORT, Sbc, Settings};

use crate::sbc::PACKETS;

/// sipd as shipped (no `[media] strict_source` setting: the default is under test), with
/// `/metrics` open so the drops can be read as an operator reads them.
fn start(net: &Net, plane: Plane) -> Sbc {
    let set = Settings {
        management: "metrics_public = true\n".into(),
        ..Settings::default()
    };
    Sbc::start_with(net, plane, &Prov::default(), &set)
}
/// Packets the attacker injects into each of the call's two relay ports after the answer.
const INJECTED: u64 = 20;

/// Counts what arrives on `socket` until the returned flag is set; the count is the thread's
/// result.
fn listen(socket: &UdpSocket) -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = socket.try_clone().expect("clone socket");
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let flag = stop.clone();
    let h = std::thread::spawn(move || {
        let got = AtomicU64::new(0);
        let mut buf = [0u8; 2048];
        while !flag.load(Ordering::Relaxed) {
            if s.recv_from(&mut buf).is_ok() {
                got.fetch_add(1, Ordering::Relaxed);
            }
        }
        got.into_inner()
    });
    (stop, h)
}

/// Packets arriving on `socket` within `window`.
fn drain_count(socket: &UdpSocket, window: Duration) -> u64 {
    let s = socket.try_clone().expect("clone socket");
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let end = Instant::now() + window;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while Instant::now() < end {
        if s.recv_from(&mut buf).is_ok() {
            n += 1;
        }
    }
    n
}

/// What the attack achieved, gathered before any assertion so a failing run reports it all.
#[derive(Debug)]
struct Outcome {
    /// Media packets the attacker received while the call talked.
    stolen: u64,
    /// Carrier→vendor and vendor→carrier: sent, received intact.
    forward: (u64, u64),
    back: (u64, u64),
    /// Injected packets that reached the carrier, the vendor.
    injected_at_carrier: u64,
    injected_at_vendor: u64,
    /// Growth of the strict-source drop counter in `/metrics` during the injection.
    strict_drops: u64,
    /// The same, read from the kernel's pinned map (XDP only).
    kernel_strict_drops: Option<u64>,
}

fn attack(plane: Plane) -> (Outcome, MediaCheck, Sbc, Net) {
    let net = Net::new();
    let attacker = net.attacker();
    let sbc = start(&net, plane);
    let mut uas = net.uas("uas.xml", SIP_PORT, 1, Duration::from_secs(2));
    let mut uac = net
        .uac("uac.xml", sbc.sip(), Duration::from_secs(6))
        .spawn(&net.topo.caller)
        .expect("spawn uac");
    // The vendor has the offer: the call rings for two seconds.
    let at_vendor = uas
        .wait_media("MEDIA", Duration::from_secs(10))
        .expect("vendor got an SDP offer");
    for port in (PORT_MIN..=PORT_MAX).step_by(2) {
        let _ = attacker.send_to(b"spray", SocketAddr::new(sbc.addr, port));
    }
    let at_carrier = uac
        .wait_media("MEDIA", Duration::from_secs(10))
        .expect("carrier got an SDP answer");

    let (stop, thief) = listen(&attacker);
    let check = MediaCheck::run(
        &net.carrier_rtp,
        &net.vendor_rtp,
        at_carrier,
        at_vendor,
        PACKETS,
        1,
    );
    stop.store(true, Ordering::Relaxed);
    let stolen = thief.join().expect("attacker listener");

    // Injection after the answer, into the port each party sends to.
    let before = (plane == Plane::Xdp).then(|| sbc.kernel_stats()["drop_strict_source"]);
    let metric_before = sbc.dataplane_metric("drop_strict_source");
    let mut buf = Vec::new();
    for seq in 0..INJECTED {
        rtp::build_packet(99, seq, 160, &mut buf);
        for to in [at_carrier, at_vendor] {
            let _ = attacker.send_to(&buf, to);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (injected_at_carrier, injected_at_vendor) = std::thread::scope(|s| {
        let c = s.spawn(|| drain_count(&net.carrier_rtp, Duration::from_millis(700)));
        let v = drain_count(&net.vendor_rtp, Duration::from_millis(700));
        (c.join().expect("carrier drain"), v)
    });
    let kernel_strict_drops =
        before.map(|b| sbc.kernel_stats()["drop_strict_source"].saturating_sub(b));
    let strict_drops = sbc
        .dataplane_metric("drop_strict_source")
        .saturating_sub(metric_before);
    let outcome = Outcome {
        stolen,
        forward: (check.forward.0.total(), check.forward.1.unique()),
        back: (check.back.0.total(), check.back.1.unique()),
        injected_at_carrier,
        injected_at_vendor,
        strict_drops,
        kernel_strict_drops,
    };
    let _ = (uac.finish(), uas.finish());
    (outcome, check, sbc, net)
}

fn spray_and_inject(plane: Plane) {
    require_privileged!();
    require_sipp!();
    let _s = crate::serial();
    let (o, check, sbc, _net) = attack(plane);
    eprintln!("{plane:?}: {o:?}");
    let ctx = || format!("{plane:?}: {o:?}\n{}", tests::tail(&sbc.log_text(), 4000));
    assert_eq!(o.stolen, 0, "the attacker received media: {}", ctx());
    assert_eq!(o.forward, (PACKETS, PACKETS), "{}", ctx());
    assert_eq!(o.back, (PACKETS, PACKETS), "{}", ctx());
    check.assert_lossless();
    let (at_vendor_from, at_carrier_from) = check.sources();
    assert!(
        at_vendor_from
            .iter()
            .chain(&at_carrier_from)
            .all(|a| a.ip() == sbc.addr),
        "media came from the relay only: {at_vendor_from:?} {at_carrier_from:?}"
    );
    assert_eq!(
        (o.injected_at_carrier, o.injected_at_vendor),
        (0, 0),
        "injected packets reached a party: {}",
        ctx()
    );
    assert!(
        o.strict_drops >= 2 * INJECTED,
        "/metrics counted {} strict-source drops of {}: {}",
        o.strict_drops,
        2 * INJECTED,
        ctx()
    );
    if let Some(d) = o.kernel_strict_drops {
        assert!(
            d >= 2 * INJECTED,
            "the kernel counted {d} strict-source drops of {}: {}",
            2 * INJECTED,
            ctx()
        );
    }
}

#[test]
fn port_spray_while_ringing_and_injection_xdp() {
    spray_and_inject(Plane::Xdp);
}

#[test]
fn port_spray_while_ringing_and_injection_userspace() {
    spray_and_inject(Plane::Userspace);
}

/// A carrier behind NAT: its SDP names 192.168.77.10, its SIP and RTP come from its real
/// address. The relay learns it from its SIP source, so media flows both ways, intact.
fn nat_caller(plane: Plane) {
    require_privileged!();
    require_sipp!();
    let _s = crate::serial();
    let net = Net::new();
    let sbc = start(&net, plane);
    let mut uas = net.uas("uas.xml", SIP_PORT, 1, Duration::from_millis(200));
    let mut uac = net
        .uac_nat(sbc.sip(), Duration::from_secs(5), "192.168.77.10")
        .spawn(&net.topo.caller)
        .expect("spawn uac");
    let at_vendor = uas
        .wait_media("MEDIA", Duration::from_secs(10))
        .expect("vendor got an SDP offer");
    let at_carrier = uac
        .wait_media("MEDIA", Duration::from_secs(10))
        .expect("carrier got an SDP answer");
    // The carrier speaks first, so the relay knows where it is before the vendor's media
    // comes back (until then it would go to the private address, as with any relay).
    net.carrier_rtp
        .send_to(b"hello", at_carrier)
        .expect("carrier's first packet");
    let primed = drain_count(&net.vendor_rtp, Duration::from_millis(500));
    let check = MediaCheck::run(
        &net.carrier_rtp,
        &net.vendor_rtp,
        at_carrier,
        at_vendor,
        PACKETS,
        1,
    );
    let _ = (uac.finish(), uas.finish());
    let ctx = || tests::tail(&sbc.log_text(), 4000).to_string();
    assert_eq!(primed, 1, "the NATed carrier's first packet: {}", ctx());
    check.assert_lossless();
}

#[test]
fn nat_caller_is_learnt_from_its_sip_source_xdp() {
    nat_caller(Plane::Xdp);
}

#[test]
fn nat_caller_is_learnt_from_its_sip_source_userspace() {
    nat_caller(Plane::Userspace);
}
