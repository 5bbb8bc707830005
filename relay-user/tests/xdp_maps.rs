//! Privileged: loads the real XDP object, pins its maps under a per-test instance, and drives
//! the typed map API and the loader. Skips without root (fails under CI=true instead).

mod common;
use common::{Instance, privileged};

use std::{net::IpAddr, process::Command, time::Duration};

use relay_common::{
    Addr,
    relay::{LEG_ACTIVE, LEG_LATCH, LEG_PEER_KNOWN, Leg, LegCounters},
};
use relay_user::{
    BanReason, Cidr, DataPlane, GuardSettings, Mode, Proto, Service, ServiceId, SourceSessions,
    loader::{self, LoaderConfig, RequestedMode},
    maps::XdpMaps,
    object::ebpf_object,
};

/// A veth pair so attach tests never touch `lo`; deleting one end deletes both.
struct Veth(String);

impl Veth {
    fn new(tag: &str) -> Self {
        let name = format!("rut{}{tag}", std::process::id() % 100_000);
        let peer = format!("{name}p");
        let _ = Command::new("ip").args(["link", "del", &name]).status();
        let ok = Command::new("ip")
            .args(["link", "add", &name, "type", "veth", "peer", "name", &peer])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip link add {name} type veth");
        for n in [&name, &peer] {
            let _ = Command::new("ip").args(["link", "set", n, "up"]).status();
        }
        Veth(name)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

#[test]
fn map_api_round_trips() {
    if !privileged("map_api_round_trips") {
        return;
    }
    let inst = Instance::new("maps");
    let mut ebpf = loader::load_pinned(ebpf_object(), &inst.0).expect("load object");
    let mut m = XdpMaps::from_ebpf(&mut ebpf).expect("typed maps");
    bans_round_trip(&mut m);
    static_deny_round_trips(&mut m);
    services_and_allow_lists_round_trip(&mut m);
    guard_and_source_sessions_round_trip(&mut m);
    legs_and_counters_round_trip(&mut m);
    stats_and_tx_ports_round_trip(&mut m);
}

/// Bans: timed, permanent, expired; hosts and ranges.
fn bans_round_trip(m: &mut XdpMaps) {
    m.ban_add(
        cidr("192.0.2.1"),
        Some(Duration::from_secs(60)),
        BanReason::Flood,
    )
    .unwrap();
    m.ban_add(cidr("2001:db8::1"), None, BanReason::Manual)
        .unwrap();
    m.ban_add(cidr("192.0.2.2"), Some(Duration::ZERO), BanReason::Scanner)
        .unwrap();
    m.ban_add(cidr("198.51.100.0/24"), None, BanReason::Flood)
        .unwrap();
    m.ban_add(cidr("2001:db8:7::/64"), None, BanReason::Scanner)
        .unwrap();
    let b = m.ban_get(cidr("192.0.2.1")).unwrap().unwrap();
    assert_eq!(b.reason(), Some(BanReason::Flood));
    assert!(b.remaining.unwrap() <= Duration::from_secs(60) && !b.expired);
    assert_eq!(
        m.ban_get(cidr("2001:db8::1")).unwrap().unwrap().remaining,
        None
    );
    // Exactly the prefix: an address inside a range is not a ban of its own.
    assert!(m.ban_get(cidr("198.51.100.9")).unwrap().is_none());
    let list = m.ban_list().unwrap();
    assert_eq!(list.len(), 5);
    assert!(list.iter().any(|b| b.prefix == cidr("2001:db8:7::/64")));
    assert_eq!(m.ban_purge_expired().unwrap(), 1);
    assert!(m.ban_remove(cidr("192.0.2.1")).unwrap());
    assert!(!m.ban_remove(cidr("192.0.2.1")).unwrap());
    assert!(m.ban_remove(cidr("198.51.100.0/24")).unwrap());
    assert!(m.ban_remove(cidr("2001:db8:7::/64")).unwrap());
    assert_eq!(m.ban_list().unwrap().len(), 1);
}

/// The stated capacity holds in the kernel: `BANS_MAX` prefixes per family fit, one more is
/// a typed `Full` (which sipd answers by replacing the ban expiring soonest).
#[test]
fn ban_tries_hold_their_stated_capacity() {
    if !privileged("ban_tries_hold_their_stated_capacity") {
        return;
    }
    let inst = Instance::new("bancap");
    let mut ebpf = loader::load_pinned(ebpf_object(), &inst.0).expect("load object");
    let mut m = XdpMaps::from_ebpf(&mut ebpf).expect("typed maps");
    let max = relay_common::maps::BANS_MAX;
    let t = std::time::Instant::now();
    for i in 0..max {
        let a = std::net::Ipv4Addr::from(0x0a00_0000 + i);
        m.ban_add(
            Cidr::host(a.into()),
            Some(Duration::from_secs(600)),
            BanReason::Flood,
        )
        .unwrap_or_else(|e| panic!("ban {i} of {max}: {e}"));
    }
    let filled = t.elapsed();
    let over = m.ban_add(cidr("192.0.2.1"), None, BanReason::Manual);
    assert!(
        matches!(over, Err(relay_user::DataPlaneError::Full(n)) if n == "BANS_V4"),
        "{over:?}"
    );
    // The other family has its own room.
    m.ban_add(cidr("2001:db8::1"), None, BanReason::Manual)
        .unwrap();
    eprintln!("filled BANS_V4 ({max} prefixes) in {filled:?}");
}

/// An upgrade from the build whose bans were a hash of addresses (`BANS`): its pin is read,
/// every ban becomes a host prefix with its expiry, and the pin goes.
#[test]
fn bans_of_the_retired_hash_survive_an_upgrade() {
    if !privileged("bans_of_the_retired_hash_survive_an_upgrade") {
        return;
    }
    let inst = Instance::new("banmig");
    let old = retired_map(&inst, relay_common::maps::RETIRED_BANS, "hash", 16, 16);
    let path = old.to_str().unwrap();
    // Key: relay_common::Addr (16 bytes, IPv4 as v4-mapped); value: expiry 0 (permanent),
    // reason 2 (scanner), padding.
    let v4 = relay_common::Addr::from(ip("203.0.113.9"));
    let v6 = relay_common::Addr::from(ip("2001:db8::66"));
    let mut value = [0u8; 16];
    value[8] = 2;
    for a in [v4, v6] {
        bpftool_update(path, &a.bytes, &value);
    }
    let mut ebpf = loader::load_pinned(ebpf_object(), &inst.0).expect("upgrade load");
    assert!(!old.exists(), "the retired pin is removed");
    let m = XdpMaps::from_ebpf(&mut ebpf).expect("typed maps");
    let list = m.ban_list().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    for p in ["203.0.113.9/32", "2001:db8::66/128"] {
        let b = m.ban_get(cidr(p)).unwrap().unwrap_or_else(|| panic!("{p}"));
        assert_eq!((b.reason(), b.remaining), (Some(BanReason::Scanner), None));
    }
}

/// An upgrade from the build whose leg counters had no RTP loss state (`RELAY_COUNTERS`, four
/// u64 per CPU): each CPU's counts go into `LEG_COUNTERS`, and the pin goes. A live call keeps
/// its last-seen time (the media timeout reads it) and its counts.
#[test]
fn leg_counters_of_the_retired_map_survive_an_upgrade() {
    if !privileged("leg_counters_of_the_retired_map_survive_an_upgrade") {
        return;
    }
    let inst = Instance::new("ctrmig");
    let old = retired_map(
        &inst,
        relay_common::maps::RETIRED_RELAY_COUNTERS,
        "percpu_hash",
        4,
        32,
    );
    let path = old.to_str().unwrap().to_owned();
    // Key: LegKey { port: 30000 (little-endian), pad }; value on every CPU: 7 packets, 700
    // bytes, last seen at 123456, 1 strict drop.
    let mut value = Vec::new();
    for v in [7u64, 700, 123_456, 1] {
        value.extend(v.to_le_bytes());
    }
    bpftool_update(&path, &[0x30, 0x75, 0, 0], &value);
    let mut ebpf = loader::load_pinned(ebpf_object(), &inst.0).expect("upgrade load");
    assert!(!old.exists(), "the retired pin is removed");
    let m = XdpMaps::from_ebpf(&mut ebpf).expect("typed maps");
    let c = m.leg_counters(30000).unwrap();
    let cpus = c.packets / 7;
    assert!(cpus >= 1 && c.packets == 7 * cpus, "{c:?}");
    assert_eq!(
        (c.bytes, c.last_seen_ns, c.strict_drops, c.rtp_expected()),
        (700 * cpus, 123_456, cpus, 0)
    );
}

/// An upgrade from the build whose leg counters were a per-CPU hash (`LEG_COUNTERS`, keyed by
/// port): each CPU's counters move into the port's slot of the per-CPU array `LEG_STATS`, RTP
/// loss state included, and the pin goes.
#[test]
fn leg_counters_of_the_retired_hash_survive_an_upgrade() {
    if !privileged("leg_counters_of_the_retired_hash_survive_an_upgrade") {
        return;
    }
    let inst = Instance::new("lcmig");
    let old = retired_map(
        &inst,
        relay_common::maps::RETIRED_LEG_COUNTERS,
        "percpu_hash",
        4,
        std::mem::size_of::<LegCounters>(),
    );
    let path = old.to_str().unwrap().to_owned();
    // Key: LegKey { port: 30002 (little-endian), pad }; on every CPU: 5 packets, 500 bytes,
    // last seen at 654321, no strict drop, 5 RTP packets received, sequence 10 to 14.
    let mut value = Vec::new();
    for v in [5u64, 500, 654_321, 0] {
        value.extend(v.to_le_bytes());
    }
    for v in [5u32, 14, 10, relay_common::rtp::RTP_NO_BAD] {
        value.extend(v.to_le_bytes());
    }
    bpftool_update(&path, &[0x32, 0x75, 0, 0], &value);
    let mut ebpf = loader::load_pinned(ebpf_object(), &inst.0).expect("upgrade load");
    assert!(!old.exists(), "the retired pin is removed");
    let m = XdpMaps::from_ebpf(&mut ebpf).expect("typed maps");
    let c = m.leg_counters(30002).unwrap();
    let cpus = c.packets / 5;
    assert!(cpus >= 1 && c.packets == 5 * cpus, "{c:?}");
    assert_eq!((c.bytes, c.last_seen_ns), (500 * cpus, 654_321));
    assert_eq!(c.rtp_expected(), 5, "{c:?}");
    assert_eq!(m.leg_counters(30000).unwrap(), LegCounters::default());
}

/// `SERVICES` written by a build without `SVC_PORTS` (or changed by one since): the load
/// sets the bit of every port it holds, so the program does not skip a service's ACL.
#[test]
fn service_ports_are_rebuilt_from_services_at_load() {
    if !privileged("service_ports_are_rebuilt_from_services_at_load") {
        return;
    }
    let inst = Instance::new("svcbits");
    let dir = loader::pin_dir(&inst.0).unwrap();
    drop(loader::load_pinned(ebpf_object(), &inst.0).expect("first load"));
    // As an older build would: an entry in SERVICES (port 5080 UDP, service 6, restricted),
    // with no bit for it.
    let services = dir.join(relay_common::maps::SERVICES);
    let mut value = Vec::new();
    for v in [6u32, relay_common::fw::SVC_RESTRICTED] {
        value.extend(v.to_le_bytes());
    }
    bpftool_update(services.to_str().unwrap(), &[0xd8, 0x13, 17, 0], &value);
    let mut ebpf = loader::load_pinned(ebpf_object(), &inst.0).expect("second load");
    let (word, bit) = relay_common::fw::svc_port_bit(5080);
    let pinned = dir.join(relay_common::maps::SVC_PORTS);
    let word_now = || {
        let data = aya::maps::MapData::from_pin(&pinned).unwrap();
        let ports: aya::maps::Array<_, u64> =
            aya::maps::Array::try_from(aya::maps::Map::Array(data)).unwrap();
        ports.get(&word, 0).unwrap()
    };
    assert_eq!(word_now(), bit);
    // The typed API clears it with the port's last service.
    let mut m = XdpMaps::from_ebpf(&mut ebpf).expect("typed maps");
    assert!(m.service_remove(5080, Proto::Udp).unwrap());
    assert_eq!(word_now(), 0);
}

/// An upgrade from the build whose legs were a hash (`RELAY_LEGS`, keyed by port): each leg
/// moves into its port's slot of the array `LEGS`, so the calls the kernel relays keep
/// flowing across the upgrade, and the pin goes.
#[test]
fn legs_of_the_retired_hash_survive_an_upgrade() {
    if !privileged("legs_of_the_retired_hash_survive_an_upgrade") {
        return;
    }
    let inst = Instance::new("legmig");
    let leg = Leg {
        local_addr: Addr::from_v4([10, 0, 0, 1]),
        peer_addr: Addr::from_v4([10, 0, 0, 2]),
        session_id: 77,
        local_port: 30000,
        peer_port: 4000,
        partner_port: 30002,
        flags: LEG_ACTIVE | LEG_PEER_KNOWN,
        learn_until_ns: 5,
        ..Leg::default()
    };
    let old = retired_map(
        &inst,
        relay_common::maps::RETIRED_RELAY_LEGS,
        "hash",
        4,
        std::mem::size_of::<Leg>(),
    );
    let path = old.to_str().unwrap().to_owned();
    // SAFETY: `Leg` is `#[repr(C)]` plain data without implicit padding.
    let bytes = unsafe {
        std::slice::from_raw_parts((&raw const leg).cast::<u8>(), std::mem::size_of::<Leg>())
    };
    bpftool_update(&path, &30000u32.to_le_bytes(), bytes);
    let mut ebpf = loader::load_pinned(ebpf_object(), &inst.0).expect("upgrade load");
    assert!(!old.exists(), "the retired pin is removed");
    let m = XdpMaps::from_ebpf(&mut ebpf).expect("typed maps");
    assert_eq!(m.leg_get(30000).unwrap(), Some(leg));
    assert_eq!(m.leg_get(30002).unwrap(), None);
    assert_eq!(m.leg_list().unwrap(), vec![leg]);
}

/// `bpftool map update pinned PATH key ... value ...`, the bytes in decimal.
/// Pins, in `inst`'s pin directory, the map `name` as an older build left it: a map of `kind`
/// with `key`- and `value`-byte entries (65,536 of them) named as its pin. Its path.
fn retired_map(
    inst: &Instance,
    name: &str,
    kind: &str,
    key: usize,
    value: usize,
) -> std::path::PathBuf {
    let dir = loader::pin_dir(&inst.0).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let pin = dir.join(name);
    let (key, value) = (key.to_string(), value.to_string());
    bpftool_ok(&[
        "map",
        "create",
        pin.to_str().unwrap(),
        "type",
        kind,
        "key",
        &key,
        "value",
        &value,
        "entries",
        "65536",
        "name",
        name,
    ]);
    pin
}

fn bpftool_update(path: &str, key: &[u8], value: &[u8]) {
    let dec = |b: &[u8]| b.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let (k, v) = (dec(key), dec(value));
    let mut args = vec!["map", "update", "pinned", path, "key"];
    args.extend(k.iter().map(String::as_str));
    args.push("value");
    args.extend(v.iter().map(String::as_str));
    bpftool_ok(&args);
}

fn bpftool_ok(args: &[&str]) {
    let out = Command::new("bpftool")
        .args(args)
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Static deny, both families.
fn static_deny_round_trips(m: &mut XdpMaps) {
    m.deny_add(cidr("198.51.100.0/24"), 7).unwrap();
    m.deny_add(cidr("2001:db8:bad::/48"), 8).unwrap();
    let d = m.deny_list().unwrap();
    assert_eq!(d.len(), 2);
    assert!(
        d.iter()
            .any(|r| r.cidr == cidr("198.51.100.0/24") && r.rule_id == 7)
    );
    assert!(m.deny_remove(cidr("2001:db8:bad::/48")).unwrap());
    assert!(!m.deny_remove(cidr("2001:db8:bad::/48")).unwrap());
}

/// Services and allow lists.
fn services_and_allow_lists_round_trip(m: &mut XdpMaps) {
    let ssh = Service {
        port: 22,
        proto: Proto::Tcp,
        id: ServiceId::Ssh,
        restricted: true,
        sip: false,
    };
    let sip = Service {
        port: 5060,
        proto: Proto::Udp,
        id: ServiceId::Sip,
        restricted: false,
        sip: true,
    };
    m.service_set(ssh).unwrap();
    m.service_set(sip).unwrap();
    assert_eq!(m.service_list().unwrap(), vec![ssh, sip]);
    m.allow_add(ServiceId::Ssh, cidr("10.0.0.0/8")).unwrap();
    m.allow_add(ServiceId::Ssh, cidr("2001:db8::/32")).unwrap();
    m.allow_add(ServiceId::Sip, cidr("10.1.0.0/16")).unwrap();
    assert_eq!(
        m.allow_list(ServiceId::Ssh).unwrap(),
        vec![cidr("10.0.0.0/8"), cidr("2001:db8::/32")]
    );
    assert!(m.allow_remove(ServiceId::Ssh, cidr("10.0.0.0/8")).unwrap());
    assert_eq!(
        m.allow_list(ServiceId::Sip).unwrap(),
        vec![cidr("10.1.0.0/16")]
    );
    assert!(m.service_remove(22, Proto::Tcp).unwrap());
}

/// Guard config and per-source sessions.
fn guard_and_source_sessions_round_trip(m: &mut XdpMaps) {
    let g = GuardSettings {
        packet_rate: 100,
        packet_burst: 200,
        invite_rate: 5,
        invite_burst: 10,
        max_sessions: 30,
        syn_rate: 40,
        syn_burst: 80,
        event_interval: Duration::from_millis(250),
    };
    m.guard_set(&g).unwrap();
    assert_eq!(m.guard_get().unwrap(), g);
    let s = SourceSessions {
        active: 3,
        limit: 9,
    };
    m.sessions_set(ip("203.0.113.1"), s).unwrap();
    assert_eq!(m.sessions_get(ip("203.0.113.1")).unwrap(), s);
    m.sessions_set(ip("203.0.113.1"), SourceSessions::default())
        .unwrap();
    assert_eq!(
        m.sessions_get(ip("203.0.113.1")).unwrap(),
        SourceSessions::default()
    );
}

/// Legs and their per-CPU counters.
fn legs_and_counters_round_trip(m: &mut XdpMaps) {
    let leg = Leg {
        local_addr: ip("127.0.0.1").into(),
        session_id: 42,
        local_port: 30000,
        partner_port: 30002,
        flags: LEG_LATCH,
        ..Leg::default()
    };
    m.leg_put(&leg).unwrap();
    m.leg_counters_reset(30000).unwrap();
    assert_eq!(m.leg_get(30000).unwrap(), Some(leg));
    assert_eq!(m.leg_counters(30000).unwrap(), LegCounters::default());
    assert_eq!(m.leg_list().unwrap(), vec![leg]);
    assert!(m.leg_remove(30000).unwrap());
    assert_eq!(m.leg_get(30000).unwrap(), None);
}

/// Stats and TX ports.
fn stats_and_tx_ports_round_trip(m: &mut XdpMaps) {
    let raw = m.stats_raw().unwrap();
    assert_eq!(raw.len(), relay_common::stats::STATS_LEN as usize);
    m.tx_port_add(1).unwrap();
    assert_eq!(m.tx_port_list().unwrap(), vec![1]);
}

#[test]
fn pinned_maps_survive_a_reload() {
    if !privileged("pinned_maps_survive_a_reload") {
        return;
    }
    let inst = Instance::new("persist");
    {
        let mut ebpf = loader::load_pinned(ebpf_object(), &inst.0).unwrap();
        let mut m = XdpMaps::from_ebpf(&mut ebpf).unwrap();
        m.ban_add(cidr("192.0.2.9"), None, BanReason::BruteForce)
            .unwrap();
    }
    let mut ebpf = loader::load_pinned(ebpf_object(), &inst.0).unwrap();
    let m = XdpMaps::from_ebpf(&mut ebpf).unwrap();
    let b = m
        .ban_get(cidr("192.0.2.9"))
        .unwrap()
        .expect("ban kept in the pinned map");
    assert_eq!(b.reason(), Some(BanReason::BruteForce));
}

#[test]
fn dataplane_api_over_xdp_maps() {
    if !privileged("dataplane_api_over_xdp_maps") {
        return;
    }
    let inst = Instance::new("dp");
    let mut ebpf = loader::load_pinned(ebpf_object(), &inst.0).unwrap();
    let maps = XdpMaps::from_ebpf(&mut ebpf).unwrap();
    let dp = DataPlane::xdp(Mode::XdpSkb, "test", maps, None);
    let a = ip("198.51.100.7");
    dp.sessions_increment(a).unwrap();
    assert_eq!(dp.sessions_increment(a).unwrap().active, 2);
    assert_eq!(dp.sessions_decrement(a).unwrap().active, 1);
    // The kernel filters in XDP mode: the userspace check is a pass-through.
    dp.ban_add(Cidr::host(a), None, BanReason::Manual).unwrap();
    assert!(dp.firewall_check(a, 5060, Proto::Udp, b"INVITE ").is_pass());
    let stats = dp.stats().unwrap();
    assert!(stats.contains_key("received") && stats.contains_key("relay_tx"));
    assert!(dp.guard_events().is_some());
}

/// In XDP mode every firewall write goes to the maps and to the userspace copy, so what XDP
/// does not see is judged by the same state: a ban, its removal, a deny rule, a restricted
/// service and its allow list, the guard's limits, a trusted source.
#[test]
fn the_userspace_copy_follows_every_firewall_write_over_xdp() {
    if !privileged("the_userspace_copy_follows_every_firewall_write_over_xdp") {
        return;
    }
    let inst = Instance::new("copy");
    let mut ebpf = loader::load_pinned(ebpf_object(), &inst.0).unwrap();
    let maps = XdpMaps::from_ebpf(&mut ebpf).unwrap();
    let dp = DataPlane::xdp(Mode::XdpSkb, "test", maps, None);
    let check = |src: &str, port: u16| dp.userspace_check(ip(src), port, Proto::Udp, b"INVITE ");
    let banned = ip("198.51.100.7");
    dp.ban_add(Cidr::host(banned), None, BanReason::Manual)
        .unwrap();
    assert_eq!(
        check("198.51.100.7", 5060),
        relay_user::Verdict::Drop(relay_user::Stat::DropBanned)
    );
    assert!(dp.ban_remove(Cidr::host(banned)).unwrap());
    assert!(check("198.51.100.7", 5060).is_pass(), "unbanned in both");
    dp.deny_add(cidr("203.0.113.0/24"), 1).unwrap();
    assert!(!check("203.0.113.9", 5060).is_pass());
    dp.service_set(Service {
        port: 5060,
        proto: Proto::Udp,
        id: ServiceId::Sip,
        restricted: true,
        sip: true,
    })
    .unwrap();
    dp.allow_add(ServiceId::Sip, cidr("192.0.2.0/24")).unwrap();
    assert!(!check("198.51.100.8", 5060).is_pass(), "outside the list");
    assert!(check("192.0.2.1", 5060).is_pass());
    dp.guard_set(&GuardSettings {
        invite_rate: 1,
        invite_burst: 1,
        ..GuardSettings::default()
    })
    .unwrap();
    let limited = (0..3)
        .filter(|_| !check("192.0.2.1", 5060).is_pass())
        .count();
    assert!(
        limited >= 2,
        "the guard's limits too: {limited} of 3 INVITEs limited"
    );
    dp.sessions_set_limit(ip("192.0.2.2"), relay_user::TRUSTED_SOURCE)
        .unwrap();
    for _ in 0..5 {
        assert!(check("192.0.2.2", 5060).is_pass(), "a trusted source");
    }
    // The kernel's own answers are unchanged: it filters what XDP sees.
    assert!(
        dp.firewall_check(ip("203.0.113.9"), 5060, Proto::Udp, b"x")
            .is_pass()
    );
    assert!(dp.stats().unwrap()["drop_denied"] >= 1);
}

/// In XDP mode the userspace relay judges the media it receives only when sipd says its
/// address is reached where XDP is not: then a banned source's packet is dropped and counted
/// (here on loopback, where the program is not attached, so the kernel never saw it).
#[test]
fn the_relay_judges_media_xdp_did_not_see_only_when_told() {
    if !privileged("the_relay_judges_media_xdp_did_not_see_only_when_told") {
        return;
    }
    let inst = Instance::new("unseen");
    let mut ebpf = loader::load_pinned(ebpf_object(), &inst.0).unwrap();
    let maps = XdpMaps::from_ebpf(&mut ebpf).unwrap();
    let dp = std::sync::Arc::new(DataPlane::xdp(Mode::XdpSkb, "test", maps, None));
    let relay = relay_user::relay::UserRelay::start(dp.clone(), 1).unwrap();
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let port = std::net::UdpSocket::bind((lo, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    relay.open_port(lo, port).unwrap();
    dp.ban_add(Cidr::host(lo), None, BanReason::Manual).unwrap();
    let tx = std::net::UdpSocket::bind((lo, 0)).unwrap();
    let banned = || dp.stats().unwrap()["drop_banned"];
    // Not told: the kernel is taken to have judged it; nothing counted.
    for _ in 0..5 {
        tx.send_to(b"rtp", (lo, port)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(banned(), 0, "judged twice though XDP was said to see it");
    dp.set_relay_unseen(true);
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while banned() == 0 {
        assert!(
            std::time::Instant::now() < end,
            "a banned source's media XDP did not see was never dropped"
        );
        tx.send_to(b"rtp", (lo, port)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn attach_replace_and_detach_on_a_veth() {
    if !privileged("attach_replace_and_detach_on_a_veth") {
        return;
    }
    let inst = Instance::new("attach");
    let dummy = Veth::new("a");
    let dir = loader::pin_dir(&inst.0).unwrap();
    let cfg = LoaderConfig {
        enable_forwarding: false,
        instance: inst.0.clone(),
        interfaces: vec![dummy.0.clone()],
        mode: RequestedMode::XdpSkb,
        relay_addresses: vec![ip("192.0.2.1")],
    };
    let dp = loader::start(&cfg, ebpf_object()).expect("skb attach");
    assert_eq!(dp.mode(), Mode::XdpSkb);
    let link = dir.join(format!("link_skb_{}", dummy.0));
    assert!(link.exists(), "link pinned");
    assert_eq!(dp.tx_port_list().unwrap().len(), 1);
    dp.ban_add(cidr("192.0.2.44"), None, BanReason::Manual)
        .unwrap();
    drop(dp);
    assert!(link.exists(), "link survives the daemon");

    // Restart: the program in the pinned link is replaced, state is still there.
    let dp = loader::start(&cfg, ebpf_object()).expect("replace");
    assert_eq!(dp.mode(), Mode::XdpSkb);
    assert!(dp.ban_get(cidr("192.0.2.44")).unwrap().is_some());
    drop(dp);

    // Auto keeps the pinned link's mode rather than re-attaching (no forwarding gap).
    let auto = LoaderConfig {
        enable_forwarding: false,
        mode: RequestedMode::Auto,
        ..cfg.clone()
    };
    let dp = loader::start(&auto, ebpf_object()).unwrap();
    assert_eq!(dp.mode(), Mode::XdpSkb, "{}", dp.reason());
    drop(dp);

    // Forcing native moves the link to driver mode (veth has native XDP).
    let native = LoaderConfig {
        enable_forwarding: false,
        mode: RequestedMode::XdpNative,
        ..cfg.clone()
    };
    let dp = loader::start(&native, ebpf_object()).expect("native attach on veth");
    assert_eq!(dp.mode(), Mode::XdpNative);
    assert!(dir.join(format!("link_native_{}", dummy.0)).exists());
    assert!(!link.exists());
    drop(dp);

    let c = loader::detach(&inst.0, &cfg.interfaces).unwrap();
    assert!(c.dir_removed);
    assert!(!dir.exists());
}

#[test]
fn missing_interface_is_a_clear_error_and_auto_falls_back() {
    if !privileged("missing_interface_is_a_clear_error_and_auto_falls_back") {
        return;
    }
    let inst = Instance::new("noif");
    let cfg = LoaderConfig {
        enable_forwarding: false,
        instance: inst.0.clone(),
        interfaces: vec!["no-such-if0".into()],
        mode: RequestedMode::XdpSkb,
        relay_addresses: vec![ip("192.0.2.1")],
    };
    let e = loader::start(&cfg, ebpf_object()).unwrap_err();
    assert!(e.to_string().contains("no-such-if0"), "{e}");
    let auto = LoaderConfig {
        enable_forwarding: false,
        mode: RequestedMode::Auto,
        ..cfg
    };
    let dp = loader::start(&auto, ebpf_object()).unwrap();
    assert_eq!(dp.mode(), Mode::Userspace);
    assert!(dp.reason().contains("no-such-if0"), "{}", dp.reason());
}
