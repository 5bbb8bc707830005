//! Attacks on the ban table, against a real `sipd run` in the relay namespace, on both data
//! planes (generic XDP, userspace). Offenders are SIP scanners (an INVITE with a scanner's
//! User-Agent: a 403 and an IDS ban), sent from addresses the test adds to the attacker's
//! hosts (spoofed sources inside its own namespaces).
//!
//! (a) Filling the ban table: with `[bans] capacity = 4`, a fifth offender's ban replaces the
//!     one expiring soonest (the first): counted (`sbc_bans_replaced_total`) and logged as BAN
//!     TABLE FULL (the `ban_table_full` alert is checked through the API in
//!     `sipd/tests/api.rs`). At the real capacity (65,536 per family; XDP): sipd starts on
//!     pinned tries already full and the next offender replaces the soonest.
//! (b) Five offenders of one /24 get the whole /24 banned: a sixth address of it, which never
//!     offended, gets nothing back. A /24 holding a trusted peer (the carrier) is not banned
//!     whole: its offenders are, one by one.
//! (c) A ban of a source arriving on the relay's second interface (the vendor's link) drops
//!     it there too.
//! (d) An expired ban is purged by sipd itself (no `relayd` runs): gone from its table and
//!     from the data plane.

mod sbc;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use sbc::*;
use tests::netns::Netns;
use tests::require_privileged;
use tests::sip::RawSip;

/// Where offenders send from (a port nothing else on the attacker's hosts uses).
const ATTACK_PORT: u16 = 41_000;

fn settings(extra: &str) -> Settings {
    Settings {
        management: format!("metrics_public = true\n\n{extra}"),
        ..Settings::default()
    }
}

/// An address `last` on the /24 of `dev` in `ns` (added to the interface), bound for SIP.
fn host(ns: &Netns, dev: &str, base: Ipv4Addr, last: u8, sbc: &Sbc) -> RawSip {
    let o = base.octets();
    let ip = Ipv4Addr::new(o[0], o[1], o[2], last);
    ns.ip(["addr", "add", &format!("{ip}/24"), "dev", dev])
        .expect("add an attacker address");
    RawSip::bind_in(ns, SocketAddr::new(ip.into(), ATTACK_PORT), sbc.sip()).expect("bind")
}

fn invite(from: &RawSip, ua: &str, n: u32) -> String {
    let (l, r) = (from.local(), from.to);
    let tag = format!("b{}x{n}", l.ip().to_string().replace('.', ""));
    format!(
        "INVITE sip:{CLD}@{r} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK-{tag}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{CLI}@{ip}>;tag={tag}\r\nTo: <sip:{CLD}@{r}>\r\n\
         Call-ID: {tag}@{ip}\r\nCSeq: 1 INVITE\r\nContact: <sip:{CLI}@{l}>\r\n\
         User-Agent: {ua}\r\nContent-Length: 0\r\n\r\n",
        ip = l.ip()
    )
}

/// The answer to one INVITE within `wait`: the final response's status line, else the last
/// provisional one, or `None` when nothing came back. Matched by Call-ID: sipd keeps
/// retransmitting its 403 to an earlier INVITE (we never ACK), and that is no answer to this.
fn answer(from: &RawSip, ua: &str, n: u32, wait: Duration) -> Option<String> {
    let msg = invite(from, ua, n);
    let call_id = msg
        .lines()
        .find_map(|l| l.strip_prefix("Call-ID: "))
        .unwrap_or_default()
        .to_string();
    from.send(msg.as_bytes()).expect("send");
    let end = Instant::now() + wait;
    let mut last = None;
    let mut buf = vec![0u8; 65_536];
    while Instant::now() < end {
        let _ = from.sock.set_read_timeout(Some(Duration::from_millis(50)));
        let Ok((len, _)) = from.sock.recv_from(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..len]);
        if !text
            .lines()
            .any(|l| l.strip_prefix("Call-ID: ") == Some(&call_id))
        {
            continue;
        }
        let line = text.lines().next().unwrap_or_default().to_string();
        let provisional = line.split(' ').nth(1).is_some_and(|c| c.starts_with('1'));
        last = Some(line);
        if !provisional {
            break;
        }
    }
    last
}

/// A scanner's INVITE: refused (403) and banned.
#[track_caller]
fn offend(from: &RawSip, n: u32) {
    let r = answer(from, "friendly-scanner", n, Duration::from_secs(5));
    assert!(
        r.as_deref().is_some_and(|l| l.contains(" 403 ")),
        "{}: scanner INVITE answered {r:?}",
        from.local()
    );
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

/// Prefixes in the instance's pinned ban maps, as `bpftool` dumps them (XDP only).
fn kernel_ban_entries(sbc: &Sbc) -> usize {
    let mut n = 0;
    for map in ["BANS_V4", "BANS_V6", "BANS"] {
        let path = format!("/sys/fs/bpf/{}/{map}", sbc.instance);
        if !std::path::Path::new(&path).exists() {
            continue;
        }
        let out = std::process::Command::new("bpftool")
            .args(["-j", "map", "dump", "pinned", &path])
            .output()
            .expect("bpftool");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        n += v.as_array().map_or(0, Vec::len);
    }
    n
}

fn attacker_base(net: &Net) -> Ipv4Addr {
    net.topo.caller_if.ipv4
}

/// (a) Five offenders against a table of four.
fn fill_the_ban_table(plane: Plane) {
    let net = Net::new();
    let sbc = Sbc::start_with(
        &net,
        plane,
        &Prov::default(),
        &settings("[bans]\ncapacity = 4\npromote_after = 0\n"),
    );
    let (ns, dev) = (&net.topo.caller, net.topo.caller_if.dev.as_str());
    let hosts: Vec<RawSip> = (0..5)
        .map(|i| host(ns, dev, attacker_base(&net), 100 + i, &sbc))
        .collect();
    for (i, h) in hosts.iter().take(4).enumerate() {
        offend(h, i as u32);
    }
    assert!(
        eventually(5, || sbc.metric("sbc_bans") == 4),
        "four bans in the data plane"
    );
    assert_eq!(sbc.metric("sbc_bans_replaced_total"), 0);
    // The fifth: the first ban (expiring soonest) gives way.
    offend(&hosts[4], 4);
    assert!(
        eventually(5, || sbc.metric("sbc_bans_replaced_total") == 1),
        "one ban replaced"
    );
    assert_eq!(sbc.metric("sbc_bans"), 4, "the table stays at its capacity");
    assert_eq!(sbc.metric("sbc_bans_table"), 4);
    assert!(
        sbc.log_text().contains("BAN TABLE FULL"),
        "the full table is logged:\n{}",
        sbc.log_text()
    );
    if plane == Plane::Xdp {
        assert_eq!(kernel_ban_entries(&sbc), 4, "the kernel's trie holds four");
    }
    // The fifth is banned; the first is not any more (it gets its 403 again).
    assert_eq!(
        answer(&hosts[4], "probe", 10, Duration::from_secs(2)),
        None,
        "the newest offender is banned"
    );
    assert!(
        answer(&hosts[0], "friendly-scanner", 11, Duration::from_secs(5)).is_some(),
        "the replaced ban no longer drops"
    );
}

#[test]
fn filling_the_ban_table_replaces_the_soonest_xdp() {
    require_privileged!();
    let _s = serial();
    fill_the_ban_table(Plane::Xdp);
}

#[test]
fn filling_the_ban_table_replaces_the_soonest_userspace() {
    require_privileged!();
    let _s = serial();
    fill_the_ban_table(Plane::Userspace);
}

/// (a) at the real capacity (XDP): the instance's pinned tries already hold `BANS_MAX`
/// (65,536) IPv4 bans of the IDS when sipd starts (a previous run's); sipd adopts them all,
/// and the next offender's ban replaces the one expiring soonest.
#[test]
fn filling_the_real_ban_table_replaces_the_soonest_xdp() {
    require_privileged!();
    let _s = serial();
    let net = Net::new();
    let instance = format!("sbct{}s{}", std::process::id(), net.topo.id());
    let max = relay_user::BANS_MAX;
    {
        let mut ebpf =
            relay_user::loader::load_pinned(relay_user::object::ebpf_object(), &instance)
                .expect("pin the instance's maps");
        let mut maps = relay_user::maps::XdpMaps::from_ebpf(&mut ebpf).expect("maps");
        for i in 0..max {
            // 100.64.0.0/10 and up: nowhere near the test's own addresses; the first ends
            // soonest.
            let ip = Ipv4Addr::from(0x6440_0000 + i);
            let d = Duration::from_secs(600) + Duration::from_millis(u64::from(i));
            maps.ban_add(
                relay_user::Cidr::host(ip.into()),
                Some(d),
                relay_user::BanReason::Scanner,
            )
            .expect("prefill");
        }
    }
    let sbc = Sbc::start_with(
        &net,
        Plane::Xdp,
        &Prov::default(),
        &settings("[guard]\nban_secs = 3600\nban_max_secs = 3600\n"),
    );
    assert_eq!(sbc.metric("sbc_bans_table"), u64::from(max));
    assert_eq!(sbc.metric("sbc_bans_capacity"), u64::from(max));
    let h = host(
        &net.topo.caller,
        &net.topo.caller_if.dev,
        attacker_base(&net),
        100,
        &sbc,
    );
    offend(&h, 0);
    assert!(
        eventually(10, || sbc.metric("sbc_bans_replaced_total") == 1),
        "one ban replaced"
    );
    assert_eq!(
        kernel_ban_entries(&sbc),
        max as usize,
        "the trie stays full, not over"
    );
    assert_eq!(
        answer(&h, "probe", 1, Duration::from_secs(2)),
        None,
        "banned"
    );
    assert!(sbc.log_text().contains("BAN TABLE FULL"));
}

/// (b) Offenders of one /24 (the default `promote_after` is 5): the /24 is banned. The
/// attacker's range is 10.X.9.0/24 on the carrier's host (routed by the relay); the carrier's
/// own /24 holds a trusted peer (the carrier, an IP-authenticated single host), so its
/// offenders stay banned one by one and its other addresses are still answered.
fn offenders_get_their_range_banned(plane: Plane) {
    let net = Net::new();
    let sbc = Sbc::start_with(&net, plane, &Prov::default(), &settings(""));
    let (ns, dev) = (&net.topo.caller, net.topo.caller_if.dev.as_str());
    let c = attacker_base(&net).octets();
    let range = Ipv4Addr::new(c[0], c[1], 9, 0);
    net.topo
        .relay
        .ip([
            "route",
            "add",
            &format!("{range}/24"),
            "via",
            &net.topo.caller_if.ipv4.to_string(),
        ])
        .expect("route to the attacker's range");
    let bystander = host(ns, dev, range, 200, &sbc);
    // Before: the range's other addresses get answers.
    assert!(answer(&bystander, "probe", 0, Duration::from_secs(5)).is_some());
    for i in 0..5u8 {
        offend(&host(ns, dev, range, 100 + i, &sbc), u32::from(i));
    }
    let dropped = sbc.dataplane_metric("drop_banned");
    // An address of the /24 that never offended: nothing.
    assert!(
        eventually(5, || answer(
            &bystander,
            "probe",
            1,
            Duration::from_millis(800)
        )
        .is_none()),
        "{}: a never-offending address of the offenders' /24 is still answered",
        bystander.local()
    );
    assert!(
        sbc.dataplane_metric("drop_banned") > dropped,
        "counted as banned"
    );
    assert_eq!(sbc.metric("sbc_bans_promoted_total"), 1);
    // The five host bans are inside the range, which holds them: one entry.
    assert_eq!(sbc.metric("sbc_bans"), 1);

    // The carrier's /24: five offenders, banned each, but not the range.
    let base = attacker_base(&net);
    for i in 0..5u8 {
        offend(&host(ns, dev, base, 100 + i, &sbc), 10 + u32::from(i));
    }
    assert_eq!(sbc.metric("sbc_bans"), 6);
    assert_eq!(sbc.metric("sbc_bans_promoted_total"), 1);
    let neighbour = host(ns, dev, base, 200, &sbc);
    assert!(
        answer(&neighbour, "probe", 0, Duration::from_secs(5)).is_some(),
        "the carrier's range is not banned"
    );
}

#[test]
fn offenders_of_one_24_get_it_banned_xdp() {
    require_privileged!();
    let _s = serial();
    offenders_get_their_range_banned(Plane::Xdp);
}

#[test]
fn offenders_of_one_24_get_it_banned_userspace() {
    require_privileged!();
    let _s = serial();
    offenders_get_their_range_banned(Plane::Userspace);
}

/// (c) An offender on the vendor's side: its traffic arrives on the relay's second
/// interface, and is dropped there once banned.
fn ban_on_the_second_interface(plane: Plane) {
    let net = Net::new();
    let sbc = Sbc::start_with(&net, plane, &Prov::default(), &settings(""));
    let (ns, dev) = (&net.topo.callee, net.topo.callee_if.dev.as_str());
    let h = host(ns, dev, net.topo.callee_if.ipv4, 66, &sbc);
    offend(&h, 0);
    let dropped = sbc.dataplane_metric("drop_banned");
    assert_eq!(
        answer(&h, "probe", 1, Duration::from_secs(2)),
        None,
        "banned, from the second link"
    );
    assert!(
        eventually(5, || sbc.dataplane_metric("drop_banned") > dropped),
        "dropped as banned"
    );
    if plane == Plane::Xdp {
        // In the kernel, on the vendor-side interface: sipd never saw it.
        assert!(sbc.kernel_stats()["drop_banned"] > 0);
    }
}

#[test]
fn a_ban_holds_on_the_second_interface_xdp() {
    require_privileged!();
    let _s = serial();
    ban_on_the_second_interface(Plane::Xdp);
}

#[test]
fn a_ban_holds_on_the_second_interface_userspace() {
    require_privileged!();
    let _s = serial();
    ban_on_the_second_interface(Plane::Userspace);
}

/// (d) A 2-second ban, and no relayd: sipd purges it from its table and the data plane.
fn expired_bans_are_purged(plane: Plane) {
    let net = Net::new();
    let sbc = Sbc::start_with(
        &net,
        plane,
        &Prov::default(),
        &settings("[guard]\nban_secs = 2\nban_max_secs = 2\n"),
    );
    let a = net.attacker();
    let h = RawSip::bind_in(
        &net.topo.caller,
        SocketAddr::new(a.local_addr().unwrap().ip(), ATTACK_PORT),
        sbc.sip(),
    )
    .expect("bind");
    offend(&h, 0);
    assert!(eventually(5, || sbc.metric("sbc_bans") == 1), "banned");
    if plane == Plane::Xdp {
        assert_eq!(kernel_ban_entries(&sbc), 1);
    }
    // Expired after 2 s; purged within a purge interval (1 s) after that.
    assert!(
        eventually(15, || sbc.metric("sbc_bans") == 0),
        "the expired ban is still in the data plane"
    );
    assert_eq!(sbc.metric("sbc_bans_table"), 0, "and in sipd's table");
    assert!(sbc.metric("sbc_bans_purged_total") >= 1);
    if plane == Plane::Xdp {
        assert_eq!(kernel_ban_entries(&sbc), 0, "the kernel's trie is empty");
    }
    assert!(answer(&h, "probe", 1, Duration::from_secs(5)).is_some());
}

#[test]
fn expired_bans_are_purged_by_sipd_xdp() {
    require_privileged!();
    let _s = serial();
    expired_bans_are_purged(Plane::Xdp);
}

#[test]
fn expired_bans_are_purged_by_sipd_userspace() {
    require_privileged!();
    let _s = serial();
    expired_bans_are_purged(Plane::Userspace);
}
