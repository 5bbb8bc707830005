//! SIP over IPv6 through a real `sipd`: an IPv6 carrier calling an IPv6 vendor (same family:
//! XDP relays), and calls between families both ways (bridged by the userspace relay), with
//! media checked byte for byte each way. sipd listens on the relay's IPv4 and IPv6 addresses
//! (`Settings::dual_stack`: relay on `::`, one advertised address per family). The peers are
//! raw UDP (`tests::sip::raw`): an INVITE with SDP from the carrier, a 200 with SDP from the
//! vendor. And every torture message of RFC 4475 and RFC 5118 sent to the running sipd, with
//! the class of answer each gets.

mod sbc;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use sbc::*;
use tests::require_privileged;
use tests::rtp;
use tests::sip::{self, MediaCheck, Msg, RawSip};

const CARRIER_SIP_PORT: u16 = 5062;
const MEDIA_PORT: u16 = 20_002;

/// Provisioning: the carrier authenticated by its address of `carrier_v6`'s family, one
/// vendor at its address of `vendor_v6`'s family.
fn prov(net: &Net, carrier_v6: bool, vendor_v6: bool) -> String {
    let carrier = net.topo.caller_if.ip(carrier_v6);
    let vendor = SocketAddr::new(net.topo.callee_if.ip(vendor_v6), SIP_PORT);
    let bits = if carrier_v6 { 128 } else { 32 };
    format!(
        "[[tariff]]\nname = \"std\"\nrate_per_minute = \"0.60\"\nexpected_call_secs = 60\n\
         initial_increment_secs = 1\nincrement_secs = 1\n\n\
         [[connection]]\nname = \"vendor\"\ndestination = \"{vendor}\"\ntransport = \"udp\"\n\
         cld_prefixes = [\"33\"]\nmax_channels = 10\ncps_limit = 10\npriority = 10\n\n\
         [[account]]\nname = \"carrier\"\ntariff = \"std\"\nbalance = \"100.00\"\n\
         cps_limit = 10\nmax_sessions = 10\nmax_call_secs = 3600\n\n\
         [[account.rule]]\nname = \"office\"\nremote = \"{carrier}/{bits}\"\n\
         cli = {{ prefix = \"44\" }}\ncld = {{ prefix = \"33\" }}\nip_only = true\n"
    )
}

/// The vendor's 200 (with SDP naming `media`) to `invite`.
fn ok_for(invite: &Msg, local: SocketAddr, media: SocketAddr) -> String {
    let sdp = sip::audio_sdp(media);
    let mut head = String::from("SIP/2.0 200 OK\r\n");
    for v in invite.headers("Via") {
        head += &format!("Via: {v}\r\n");
    }
    for h in ["From", "Call-ID", "CSeq"] {
        head += &format!("{h}: {}\r\n", invite.header(h).unwrap_or_default());
    }
    head += &format!(
        "To: {};tag=vendor1\r\n",
        invite.header("To").unwrap_or_default()
    );
    // SocketAddr prints an IPv6 one bracketed, as a SIP URI wants it.
    let contact = format!("<sip:vendor@{local}>");
    format!(
        "{head}Contact: {contact}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// One call from the carrier's address of one family to the vendor's of another (or the
/// same), through sipd; returns what each side was told to send media to, after checking the
/// media both ways, and how many packets the XDP program relayed.
fn call(
    net: &Net,
    plane: Plane,
    carrier_v6: bool,
    vendor_v6: bool,
) -> (SocketAddr, SocketAddr, u64) {
    let set = Settings {
        dual_stack: true,
        ..Settings::default()
    };
    let mut sbc = Sbc::start_provisioned(net, plane, &prov(net, carrier_v6, vendor_v6), &set);
    let sbc_sip = SocketAddr::new(net.topo.relay_caller_if.ip(carrier_v6), SIP_PORT);
    let carrier_ip = net.topo.caller_if.ip(carrier_v6);
    let vendor_ip = net.topo.callee_if.ip(vendor_v6);
    let carrier = RawSip::bind_in(
        &net.topo.caller,
        SocketAddr::new(carrier_ip, CARRIER_SIP_PORT),
        sbc_sip,
    )
    .expect("carrier SIP socket");
    let vendor_local = SocketAddr::new(vendor_ip, SIP_PORT);
    let vendor = net
        .topo
        .callee
        .enter(|| UdpSocket::bind(vendor_local))
        .expect("vendor SIP socket");
    let carrier_rtp = rtp::bind_in(&net.topo.caller, SocketAddr::new(carrier_ip, MEDIA_PORT))
        .expect("carrier rtp");
    let vendor_rtp =
        rtp::bind_in(&net.topo.callee, SocketAddr::new(vendor_ip, MEDIA_PORT)).expect("vendor rtp");

    let call_id = format!("v6-{carrier_v6}-{vendor_v6}");
    let invite = sip::invite(
        carrier.local(),
        sbc_sip,
        "441234567",
        "3312345678",
        &call_id,
        MEDIA_PORT,
    );
    carrier.send(invite.as_bytes()).expect("send INVITE");

    // The vendor gets sipd's INVITE and answers it.
    let mut buf = vec![0u8; 65_536];
    vendor
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (n, from) = vendor
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("no INVITE at the vendor ({e}):\n{}", sbc.log_text()));
    let inv = Msg {
        received: true,
        text: String::from_utf8_lossy(&buf[..n]).into_owned(),
    };
    assert!(inv.first_line().starts_with("INVITE "), "{}", inv.text);
    assert_eq!(
        from.is_ipv6(),
        vendor_v6,
        "INVITE from our address of the vendor's family"
    );
    let at_vendor = sip::sdp_media(inv.body()).expect("SDP offer at the vendor");
    let ok = ok_for(&inv, vendor_local, SocketAddr::new(vendor_ip, MEDIA_PORT));
    vendor.send_to(ok.as_bytes(), from).expect("send 200");

    let mut seen = Vec::new();
    let ok = carrier
        .wait_for(
            "SIP/2.0 200",
            "1 INVITE",
            Duration::from_secs(10),
            &mut seen,
        )
        .unwrap_or_else(|| panic!("no 200 at the carrier: {seen:?}\n{}", sbc.log_text()));
    let ack = sip::in_dialog("ACK", 1, carrier.local(), sbc_sip, &call_id, &ok);
    carrier.send(ack.as_bytes()).expect("send ACK");
    let at_carrier = sip::sdp_media(
        Msg {
            received: true,
            text: ok.clone(),
        }
        .body(),
    )
    .expect("SDP answer at the carrier");
    assert_eq!(
        at_carrier.is_ipv6(),
        carrier_v6,
        "answer in the carrier's family:\n{ok}"
    );
    assert_eq!(
        at_vendor.is_ipv6(),
        vendor_v6,
        "offer in the vendor's family:\n{}",
        inv.text
    );

    let check = MediaCheck::run(&carrier_rtp, &vendor_rtp, at_carrier, at_vendor, PACKETS, 1);
    check.assert_lossless();
    let st = sbc.kernel_stats();
    let kernel = st["relay_redirect"] + st["relay_tx"];
    eprintln!(
        "carrier IPv6 {carrier_v6}, vendor IPv6 {vendor_v6}: kernel relayed {kernel} of {}",
        2 * PACKETS
    );
    sbc.stop();
    (at_carrier, at_vendor, kernel)
}

fn addr_family(a: IpAddr) -> &'static str {
    if a.is_ipv6() { "IPv6" } else { "IPv4" }
}

#[test]
fn ipv6_carrier_to_ipv6_vendor_in_the_kernel() {
    require_privileged!();
    let _s = serial();
    let net = Net::new();
    let (c, v, kernel) = call(&net, Plane::Xdp, true, true);
    assert_eq!((addr_family(c.ip()), addr_family(v.ip())), ("IPv6", "IPv6"));
    // The first packet each way may take the slow path while the neighbour is resolved.
    assert!(kernel + 4 >= 2 * PACKETS, "kernel relayed {kernel}");
}

#[test]
fn ipv6_carrier_to_ipv4_vendor_bridged() {
    require_privileged!();
    let _s = serial();
    let net = Net::new();
    let (c, v, _) = call(&net, Plane::Xdp, true, false);
    assert_eq!((addr_family(c.ip()), addr_family(v.ip())), ("IPv6", "IPv4"));
}

#[test]
fn ipv4_carrier_to_ipv6_vendor_bridged() {
    require_privileged!();
    let _s = serial();
    let net = Net::new();
    let (c, v, _) = call(&net, Plane::Xdp, false, true);
    assert_eq!((addr_family(c.ip()), addr_family(v.ip())), ("IPv4", "IPv6"));
}

/// What a running sipd answered to one message within a short window: the first status it
/// sent back (a 100 means the request was taken and is being routed), or nothing.
/// The value of the first header named `long` or its compact form `short`, if any.
fn header<'a>(msg: &'a str, long: &str, short: &str) -> Option<&'a str> {
    msg.split("\r\n")
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            let name = name.trim();
            (name.eq_ignore_ascii_case(long) || name.eq_ignore_ascii_case(short))
                .then(|| value.trim())
        })
}

/// What ties an answer to its request: the top Via's branch (a server transaction's key, so a
/// request that reuses an earlier one's branch is answered as that one), else the Call-ID.
/// Folded header lines (a torture message's speciality) are unfolded first.
fn answer_key(msg: &str) -> Option<String> {
    let msg = msg.replace("\r\n ", " ").replace("\r\n\t", " ");
    let via = header(&msg, "via", "v");
    via.and_then(|v| v.split(';').find_map(|p| p.trim().strip_prefix("branch=")))
        .or_else(|| header(&msg, "call-id", "i"))
        .map(str::to_owned)
}

/// The status of the first answer to `msg` (an answer to an earlier message that arrives
/// late is not this one's), within 1.5 s on a loaded machine.
fn first_answer(carrier: &RawSip, msg: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(msg);
    let key = answer_key(&text);
    carrier.send(msg).expect("send");
    let end = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < end {
        let found = carrier
            .collect(Duration::from_millis(100))
            .iter()
            .filter(|r| key.is_none() || answer_key(r) == key)
            .find_map(|r| r.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok());
        if found.is_some() {
            return found;
        }
    }
    None
}

#[test]
fn torture_messages_get_their_answers_from_a_running_sipd() {
    use sipd_core::sip::torture::{Expect, RFC4475, RFC5118};
    require_privileged!();
    let _s = serial();
    let net = Net::new();
    let set = Settings {
        dual_stack: true,
        ..Settings::default()
    };
    let mut sbc = Sbc::start_provisioned(&net, Plane::Userspace, &prov(&net, false, false), &set);
    let carrier = RawSip::bind_in(
        &net.topo.caller,
        // Port 5060: the torture messages' Vias name no port or 5060, and an answer goes to
        // the Via's port at the address the request came from (RFC 3261 §18.2.2).
        SocketAddr::new(net.topo.caller_if.ip(false), 5060),
        sbc.sip(),
    )
    .expect("carrier SIP socket");
    let mut table = Vec::new();
    let mut wrong = 0;
    for (rfc, list) in [("4475", RFC4475), ("5118", RFC5118)] {
        for t in list {
            let got = first_answer(&carrier, t.bytes);
            let ok = match (t.expect, got) {
                (Expect::Valid, Some(c)) => c != 400 && c != 505 && c != 513,
                (Expect::Status(want), Some(c)) => want == c,
                (Expect::Bad, None | Some(400)) => true,
                (Expect::Lenient, Some(_)) => true,
                (Expect::Silent, None) => true,
                _ => false,
            };
            wrong += usize::from(!ok);
            table.push(format!(
                "{} RFC {rfc} §{:<9} {:<30} expect {:<12} got {:?}",
                if ok { "  " } else { "XX" },
                t.section,
                t.name,
                format!("{:?}", t.expect),
                got
            ));
        }
    }
    eprintln!("{}", table.join("\n"));
    assert!(sbc.alive(), "sipd died:\n{}", sbc.log_text());
    assert_eq!(wrong, 0, "\n{}\n{}", table.join("\n"), sbc.log_text());
    sbc.stop();
}
