//! Privileged: RTP frames through the real XDP program with `BPF_PROG_TEST_RUN`, on relay legs
//! whose both ends are 127.0.0.1 (the route lookup answers "local", so the program rewrites
//! and passes the frame; nothing leaves the test). Skips without root (fails under CI=true).
//!
//! The ignored `relay_ns_per_packet` is the relay hot path's cost, measured by the kernel:
//! `cargo test -p relay-user --test xdp_rtp -- --ignored --nocapture relay_ns_per_packet`.

mod common;
use common::{Instance, privileged};

use aya::{Ebpf, programs::Xdp};
use relay_common::{
    maps as names,
    relay::{LEG_ACTIVE, LEG_PEER_KNOWN, Leg},
    rtp::LOSS_CASES,
    stats::Stat,
};
use relay_user::{
    BanReason, Cidr, loader,
    maps::XdpMaps,
    object::ebpf_object,
    test_run::{XDP_DROP, XDP_PASS, XdpRun},
};

const LO: [u8; 4] = [127, 0, 0, 1];
/// `lo`: the route lookup of 127.0.0.1 answers "local" there.
const LO_IFINDEX: u32 = 1;

/// The loaded program and its typed maps.
struct Env {
    ebpf: Ebpf,
    maps: XdpMaps,
    _inst: Instance,
}

impl Env {
    fn new(tag: &str) -> Env {
        // The relay's route lookup must see forwarding on, whatever the host's setting.
        common::own_netns_with_forwarding();
        let inst = Instance::new(tag);
        let mut ebpf = loader::load_pinned(ebpf_object(), &inst.0).expect("load object");
        let prog: &mut Xdp = ebpf
            .program_mut(names::PROGRAM)
            .expect("program")
            .try_into()
            .expect("XDP program");
        prog.load().expect("verifier");
        let maps = XdpMaps::from_ebpf(&mut ebpf).expect("typed maps");
        Env {
            ebpf,
            maps,
            _inst: inst,
        }
    }

    /// A call between two peers on 127.0.0.1: RTP from `peer_a` arrives on `port`, leaves
    /// from `port + 2` to `peer_b`.
    fn call(&mut self, port: u16, peer_a: u16, peer_b: u16) {
        for (p, partner, peer) in [(port, port + 2, peer_a), (port + 2, port, peer_b)] {
            let leg = Leg {
                local_addr: relay_common::Addr::from_v4(LO),
                peer_addr: relay_common::Addr::from_v4(LO),
                local_port: p,
                peer_port: peer,
                partner_port: partner,
                session_id: 1,
                flags: LEG_ACTIVE | LEG_PEER_KNOWN,
                ..Leg::default()
            };
            self.maps.leg_put(&leg).unwrap();
            self.maps.leg_counters_reset(p).unwrap();
        }
    }

    /// Runs `frame` once; returns the action and the kernel's time for the run (ns).
    fn run(&self, frame: &[u8]) -> (u32, u64) {
        let r = XdpRun::new(frame)
            .ingress(LO_IFINDEX)
            .run_named(&self.ebpf, names::PROGRAM)
            .expect("BPF_PROG_TEST_RUN");
        (r.action, r.per_run.as_nanos() as u64)
    }

    fn stat(&self, s: Stat) -> u64 {
        self.maps.stats_raw().unwrap()[s as usize]
    }
}

/// Ethernet + IPv4 + UDP (no UDP checksum) from 127.0.0.1:`sport` to 127.0.0.1:`dport`.
fn udp4(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    udp4_from(LO, sport, dport, payload)
}

/// [`udp4`] from `src`.
fn udp4_from(src: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&LO);
    let mut sum: u32 = ip
        .chunks_exact(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// An RTP packet (version 2, PT 0) with sequence number `seq` and 160 bytes of audio.
fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(&[0xd5; 160]);
    p
}

/// Every case of the shared loss table, each on a call of its own, packet by packet through
/// the program: expected and lost as RFC 3550 counts them, on the leg the RTP arrived on.
#[test]
fn the_kernel_counts_rtp_loss() {
    if !privileged("the_kernel_counts_rtp_loss") {
        return;
    }
    let mut env = Env::new("loss");
    for (i, case) in LOSS_CASES.iter().enumerate() {
        let port = 36000 + 4 * i as u16;
        env.call(port, 9000, 9002);
        for seq in case.seqs {
            let (action, _) = env.run(&udp4(9000, port, &rtp(*seq)));
            assert_eq!(action, XDP_PASS, "{}: relayed to 127.0.0.1", case.what);
        }
        let c = env.maps.leg_counters(port).unwrap();
        assert_eq!(c.packets, case.seqs.len() as u64, "{}", case.what);
        assert_eq!(
            (c.rtp_expected(), c.rtp_lost()),
            (case.expected, case.lost),
            "{}",
            case.what
        );
        let other = env.maps.leg_counters(port + 2).unwrap();
        assert_eq!(other.rtp_expected(), 0, "the partner leg received nothing");
    }
    assert_eq!(
        env.stat(Stat::RelayLocal),
        LOSS_CASES.iter().map(|c| c.seqs.len() as u64).sum::<u64>()
    );
}

/// Relayed but not counted for loss: RTCP (on the RTP port too, RFC 5761), short payloads,
/// other versions.
#[test]
fn only_rtp_counts_for_loss() {
    if !privileged("only_rtp_counts_for_loss") {
        return;
    }
    let mut env = Env::new("notrtp");
    env.call(36500, 9000, 9002);
    let mut rtcp_sr = vec![0x80, 200, 0, 6];
    rtcp_sr.extend_from_slice(&[0; 24]);
    let mut v1 = rtp(7);
    v1[0] = 0x40;
    for payload in [rtcp_sr, v1, rtp(8)[..11].to_vec(), b"hello".to_vec()] {
        assert_eq!(env.run(&udp4(9000, 36500, &payload)).0, XDP_PASS);
    }
    let c = env.maps.leg_counters(36500).unwrap();
    assert_eq!((c.packets, c.rtp_received(), c.rtp_expected()), (4, 0, 0));
    // The first RTP packet after them starts the count.
    env.run(&udp4(9000, 36500, &rtp(1000)));
    env.run(&udp4(9000, 36500, &rtp(1002)));
    let c = env.maps.leg_counters(36500).unwrap();
    assert_eq!((c.rtp_expected(), c.rtp_lost()), (3, 1));
}

/// The kernel counts each ban's drops where userspace lists it: a host ban and a range ban,
/// each hit by its own sources, the listing's hits and last-hit time per ban.
#[test]
fn the_kernel_counts_each_bans_hits() {
    if !privileged("the_kernel_counts_each_bans_hits") {
        return;
    }
    let mut env = Env::new("banhits");
    let host: Cidr = "198.51.100.7/32".parse().unwrap();
    let range: Cidr = "203.0.113.0/24".parse().unwrap();
    env.maps.ban_add(host, None, BanReason::Manual).unwrap();
    env.maps.ban_add(range, None, BanReason::Scanner).unwrap();
    let before = relay_user::clock::monotonic_ns();
    for _ in 0..3 {
        let (a, _) = env.run(&udp4_from([198, 51, 100, 7], 5060, 5060, b"OPTIONS"));
        assert_eq!(a, XDP_DROP);
    }
    for last in [1u8, 2, 200, 255, 9] {
        let (a, _) = env.run(&udp4_from([203, 0, 113, last], 5060, 5060, b"OPTIONS"));
        assert_eq!(a, XDP_DROP);
    }
    // Not banned: no hits anywhere.
    env.run(&udp4_from([198, 51, 100, 8], 5060, 5060, b"OPTIONS"));
    let list = env.maps.ban_list().unwrap();
    let of = |c: Cidr| list.iter().find(|b| b.prefix == c).unwrap().clone();
    let (h, r) = (of(host), of(range));
    assert_eq!((h.hits, r.hits), (3, 5));
    assert!(
        h.last_hit_ns + relay_common::KERNEL_CLOCK_LAG_NS >= before
            && r.last_hit_ns >= h.last_hit_ns
    );
    assert_eq!(env.maps.ban_get(range).unwrap().unwrap().hits, 5);
    assert_eq!(env.stat(Stat::DropBanned), 8);
    // A rewritten ban (a longer one) keeps its count; a removed one takes it along.
    env.maps
        .ban_add(
            host,
            Some(std::time::Duration::from_secs(600)),
            BanReason::Flood,
        )
        .unwrap();
    assert_eq!(env.maps.ban_get(host).unwrap().unwrap().hits, 3);
    assert!(env.maps.ban_remove(host).unwrap());
    env.maps.ban_add(host, None, BanReason::Manual).unwrap();
    assert_eq!(env.maps.ban_get(host).unwrap().unwrap().hits, 0);
}

/// What one relayed RTP packet costs the XDP program, in ns as the kernel times a single run
/// (`repeat` = 1, so every run sees a fresh frame with the next sequence number; the time
/// includes the kernel's two clock reads around the run, the same before and after a change).
/// Medians of `ROUNDS` rounds of `RUNS` packets.
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn relay_ns_per_packet() {
    if !privileged("relay_ns_per_packet") {
        return;
    }
    const ROUNDS: usize = 5;
    const RUNS: u16 = 20_000;
    let mut env = Env::new("bench");
    env.call(35100, 9000, 9002);
    let mut rounds = Vec::new();
    for r in 0..ROUNDS {
        let mut times: Vec<u64> = (0..RUNS)
            .map(|i| {
                let seq = (r as u16).wrapping_mul(RUNS).wrapping_add(i);
                let (action, ns) = env.run(&udp4(9000, 35100, &rtp(seq)));
                assert_eq!(action, XDP_PASS);
                ns
            })
            .collect();
        times.sort_unstable();
        let mean = times.iter().sum::<u64>() as f64 / times.len() as f64;
        rounds.push((times[times.len() / 2], mean));
    }
    assert_eq!(
        env.stat(Stat::RelayLocal),
        ROUNDS as u64 * u64::from(RUNS),
        "every run relayed"
    );
    let mut medians: Vec<u64> = rounds.iter().map(|r| r.0).collect();
    medians.sort_unstable();
    let means: Vec<String> = rounds.iter().map(|r| format!("{:.1}", r.1)).collect();
    println!(
        "relay_ns_per_packet: median of round medians {} ns; round means {} ns",
        medians[ROUNDS / 2],
        means.join(", ")
    );
}
