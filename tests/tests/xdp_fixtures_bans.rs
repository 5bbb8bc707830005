//! Fixtures for the XDP program's bans, run through BPF_PROG_TEST_RUN on the real object:
//! bans are prefixes in LPM tries (`BANS_V4`, `BANS_V6`), the longest banned prefix holding
//! the source decides, and an expired ban neither blocks nor hides a live one around it.
//!
//! Kept apart from `xdp_fixtures.rs` (the whole pipeline's table); the maps are programmed
//! through relay-user's typed API, as sipd programs them.

use std::net::IpAddr;
use std::time::Duration;

use aya::programs::Xdp;
use relay_common::{maps as names, stats::Stat};
use relay_user::{
    BanReason, Cidr, loader,
    maps::XdpMaps,
    object::ebpf_object,
    test_run::{XDP_DROP, XDP_PASS, XdpRun},
};

/// `lo`: BPF_PROG_TEST_RUN wants a real device for the ingress index.
const LO: u32 = 1;
const HOUR: Option<Duration> = Some(Duration::from_secs(3600));

/// Ethernet + IP + UDP to port 9 (no service there: a pass is `pass_other`).
fn frame(src: IpAddr, proto: u8) -> Vec<u8> {
    let payload = b"banned?";
    let mut l4 = Vec::new();
    if proto == 17 {
        l4.extend(40_000u16.to_be_bytes());
        l4.extend(9u16.to_be_bytes());
        l4.extend(((8 + payload.len()) as u16).to_be_bytes());
        l4.extend([0, 0]);
    } else {
        // ICMP echo: bans hold whatever the layer 4.
        l4.extend([8, 0, 0, 0, 0, 1, 0, 1]);
    }
    l4.extend(payload);
    let mut out = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    match src {
        IpAddr::V4(s) => {
            out.extend(0x0800u16.to_be_bytes());
            let mut h = vec![0x45, 0, 0, 0, 0x12, 0x34, 0, 0, 64, proto, 0, 0];
            h[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            h.extend(s.octets());
            h.extend([10, 0, 0, 1]);
            let c = relay_common::csum::checksum(0, &h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            out.extend(h);
        }
        IpAddr::V6(s) => {
            out.extend(0x86ddu16.to_be_bytes());
            out.extend([0x60, 0, 0, 0]);
            out.extend((l4.len() as u16).to_be_bytes());
            out.extend([if proto == 17 { 17 } else { 58 }, 64]);
            out.extend(s.octets());
            out.extend("fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        }
    }
    out.extend(l4);
    out
}

struct Env {
    ebpf: aya::Ebpf,
    maps: XdpMaps,
    instance: String,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = loader::detach(&self.instance, &[]);
    }
}

impl Env {
    fn new(tag: &str) -> Env {
        let obj = ebpf_object();
        assert!(!obj.is_empty(), "XDP object missing (AYA_BUILD_SKIP?)");
        let instance = format!("sbct-fxbans-{}-{tag}", std::process::id());
        let _ = loader::detach(&instance, &[]);
        let mut ebpf = loader::load_pinned(obj, &instance).expect("load object");
        let prog: &mut Xdp = ebpf
            .program_mut(names::PROGRAM)
            .unwrap()
            .try_into()
            .unwrap();
        prog.load().expect("verifier accepts the program");
        let maps = XdpMaps::from_ebpf(&mut ebpf).expect("maps");
        Env {
            ebpf,
            maps,
            instance,
        }
    }

    fn run(&self, frame: &[u8]) -> u32 {
        XdpRun::new(frame)
            .ingress(LO)
            .run_named(&self.ebpf, names::PROGRAM)
            .expect("BPF_PROG_TEST_RUN")
            .action
    }

    fn banned(&self) -> u64 {
        self.maps.stats_raw().unwrap()[Stat::DropBanned as usize]
    }

    /// Runs one packet from `src`; checks the verdict and that `drop_banned` moved with it.
    fn expect(&self, what: &str, src: &str, proto: u8, dropped: bool, failures: &mut Vec<String>) {
        let before = self.banned();
        let action = self.run(&frame(src.parse().unwrap(), proto));
        let counted = self.banned() - before;
        let want = if dropped { XDP_DROP } else { XDP_PASS };
        if action != want || counted != u64::from(dropped) {
            failures.push(format!(
                "{what} ({src}): action {action}, drop_banned +{counted}; expected action {want}, +{}",
                u64::from(dropped)
            ));
        }
    }
}

fn net(s: &str) -> Cidr {
    s.parse().unwrap()
}

#[test]
fn prefix_bans_drop_every_address_inside_and_none_outside() {
    tests::require_privileged!();
    let mut env = Env::new("prefix");
    env.maps
        .ban_add(net("203.0.113.0/24"), HOUR, BanReason::Flood)
        .unwrap();
    env.maps
        .ban_add(net("2001:db8:bad:1::/64"), None, BanReason::Scanner)
        .unwrap();
    let mut f = Vec::new();
    for src in [
        "203.0.113.0",
        "203.0.113.1",
        "203.0.113.128",
        "203.0.113.255",
    ] {
        env.expect("inside the /24", src, 17, true, &mut f);
    }
    env.expect("inside the /24, ICMP", "203.0.113.77", 1, true, &mut f);
    env.expect("just below the /24", "203.0.112.255", 17, false, &mut f);
    env.expect("just above the /24", "203.0.114.0", 17, false, &mut f);
    for src in [
        "2001:db8:bad:1::",
        "2001:db8:bad:1:ffff:ffff:ffff:ffff",
        "2001:db8:bad:1:1234::9",
    ] {
        env.expect("inside the /64", src, 17, true, &mut f);
    }
    env.expect("the next /64", "2001:db8:bad:2::1", 17, false, &mut f);
    env.expect(
        "inside the /64, ICMPv6",
        "2001:db8:bad:1::7",
        58,
        true,
        &mut f,
    );
    // Lifted: the whole range passes again.
    assert!(env.maps.ban_remove(net("203.0.113.0/24")).unwrap());
    env.expect("after the unban", "203.0.113.1", 17, false, &mut f);
    assert!(f.is_empty(), "{} failed:\n{}", f.len(), f.join("\n"));
}

#[test]
fn expired_bans_pass_and_the_longest_live_prefix_decides() {
    tests::require_privileged!();
    let mut env = Env::new("expiry");
    let m = &mut env.maps;
    let expired = Some(Duration::ZERO);
    // An expired host ban alone: passes (until it is purged it is only a record).
    m.ban_add(net("198.51.100.9"), expired, BanReason::Flood)
        .unwrap();
    // An expired host ban inside a live range: the range still holds it.
    m.ban_add(net("192.0.2.0/24"), HOUR, BanReason::Flood)
        .unwrap();
    m.ban_add(net("192.0.2.7"), expired, BanReason::Scanner)
        .unwrap();
    // A live host ban inside an expired range: the host stays banned, its neighbours pass.
    m.ban_add(net("100.64.0.0/16"), expired, BanReason::Flood)
        .unwrap();
    m.ban_add(net("100.64.3.4"), None, BanReason::Manual)
        .unwrap();
    // IPv6: an expired /64 inside a live /48.
    m.ban_add(net("2001:db8:a::/48"), HOUR, BanReason::Flood)
        .unwrap();
    m.ban_add(net("2001:db8:a:1::/64"), expired, BanReason::Flood)
        .unwrap();
    // The kernel's clock may still be up to a tick before the moment they ran out.
    std::thread::sleep(Duration::from_nanos(2 * relay_common::KERNEL_CLOCK_LAG_NS));
    let mut f = Vec::new();
    env.expect("expired host ban", "198.51.100.9", 17, false, &mut f);
    env.expect("expired host in a live /24", "192.0.2.7", 17, true, &mut f);
    env.expect("its neighbour in the /24", "192.0.2.8", 17, true, &mut f);
    env.expect(
        "live host in an expired /16",
        "100.64.3.4",
        17,
        true,
        &mut f,
    );
    env.expect("its neighbour in the /16", "100.64.3.5", 17, false, &mut f);
    env.expect(
        "expired /64 in a live /48",
        "2001:db8:a:1::9",
        17,
        true,
        &mut f,
    );
    env.expect("outside the /48", "2001:db8:b::9", 17, false, &mut f);
    // Purged, the expired ones are gone and nothing else changed.
    assert_eq!(env.maps.ban_purge_expired().unwrap(), 4);
    env.expect("after the purge, in the /24", "192.0.2.7", 17, true, &mut f);
    env.expect("after the purge, the host", "100.64.3.4", 17, true, &mut f);
    assert!(f.is_empty(), "{} failed:\n{}", f.len(), f.join("\n"));
}
