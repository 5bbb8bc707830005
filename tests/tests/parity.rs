//! Data-plane parity: the same firewall checks (bans, static deny, service ACL, SIP guard) run
//! against the XDP program and the userspace tables, in process, with identical configuration,
//! and must give identical verdicts and identical stat deltas.
//!
//! The XDP side sees real UDP packets sent from the caller namespace to sockets bound in the
//! relay namespace, and its verdict is read back from the kernel's stats; the userspace side is
//! `DataPlane::firewall_check` with the same (source, port, payload) sequence, which is what
//! `sipd` and the userspace relay call on every packet. Both planes run on the real monotonic
//! clock, so time-based rules (ban expiry, GCRA buckets) are compared packet by packet, each
//! plane seeing a packet within milliseconds of the other.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    sync::{Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

use relay_user::{
    BanReason, Cidr, DataPlane, GuardSettings, Mode, Proto, Service, ServiceId, SourceSessions,
    Stat,
    loader::{self, LoaderConfig, RequestedMode},
    object::ebpf_object,
};
use tests::{
    netns::{Topology, TopologyOptions},
    require_privileged,
};

/// Every verdict a UDP packet sent by this test can get. Noise on the link (neighbour
/// discovery, MLD) lands in other counters (`received`, `pass_not_ip`, `pass_not_udp_tcp`),
/// which is why those are not compared.
const VERDICTS: [Stat; 9] = [
    Stat::DropBanned,
    Stat::DropDenied,
    Stat::DropServiceAcl,
    Stat::DropSipPacketRate,
    Stat::DropSipInviteRate,
    Stat::DropSipSessionCap,
    Stat::PassSip,
    Stat::PassService,
    Stat::PassOther,
];

const SIP_PORT: u16 = 5060;
/// A restricted (ACL'd) UDP service.
const ACL_PORT: u16 = 5080;
/// No service: what media to a relay port looks like to the firewall.
const MEDIA_PORT: u16 = 40_000;
const PORTS: [u16; 3] = [SIP_PORT, ACL_PORT, MEDIA_PORT];

const INVITE: &[u8] = b"INVITE sip:bob@example.net SIP/2.0\r\n\r\n";
const OPTIONS: &[u8] = b"OPTIONS sip:relay SIP/2.0\r\n\r\n";
const RTP: &[u8] = b"\x80\x00\x00\x01rtp-payload";

/// One scenario at a time: they share the machine's cores and GCRA timing wants quiet.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// One packet of a scenario: from the caller's v4 or v6 address to `port`.
#[derive(Clone, Copy)]
struct Pkt {
    v6: bool,
    port: u16,
    payload: &'static [u8],
}

fn v4(port: u16, payload: &'static [u8]) -> Pkt {
    Pkt {
        v6: false,
        port,
        payload,
    }
}

fn v6(port: u16, payload: &'static [u8]) -> Pkt {
    Pkt {
        v6: true,
        port,
        payload,
    }
}

/// The two data planes side by side, plus the sockets that feed the XDP one.
struct Parity {
    xdp: DataPlane,
    user: DataPlane,
    /// In the caller namespace.
    tx_v4: UdpSocket,
    tx_v6: UdpSocket,
    /// Bound in the relay namespace on every target port, so passed packets are delivered
    /// rather than answered with ICMP (whose neighbour lookups would add noise).
    _sinks: Vec<UdpSocket>,
    caller_v4: Ipv4Addr,
    caller_v6: Ipv6Addr,
    relay_v4: Ipv4Addr,
    relay_v6: Ipv6Addr,
    instance: String,
    ifaces: Vec<String>,
    // Last: the namespaces (and veths) go after the program is detached.
    _topo: Topology,
}

impl Drop for Parity {
    fn drop(&mut self) {
        if let Err(e) = loader::detach(&self.instance, &self.ifaces) {
            eprintln!("cleanup of {}: {e}", self.instance);
        }
    }
}

impl Parity {
    fn new() -> anyhow::Result<Parity> {
        let topo = Topology::three(TopologyOptions {
            gro: Some(true),
            ..Default::default()
        })?;
        let instance = format!("parity-{}-{}", std::process::id(), topo.id());
        let ifaces = vec![
            topo.relay_caller_if.dev.clone(),
            topo.relay_callee_if.dev.clone(),
        ];
        let _ = loader::detach(&instance, &ifaces);
        // Static neighbours both ways: a banned or denied caller's neighbour advertisements
        // would be dropped by the very rules under test, stalling its packets in the stack
        // and adding drops the userspace side never sees.
        for (ns, dev, peer) in [
            (&topo.caller, &topo.caller_if, &topo.relay_caller_if),
            (&topo.relay, &topo.relay_caller_if, &topo.caller_if),
        ] {
            for ip in [peer.ipv4.to_string(), peer.ipv6.to_string()] {
                ns.ip([
                    "neigh",
                    "replace",
                    &ip,
                    "lladdr",
                    &peer.mac_string(),
                    "dev",
                    &dev.dev,
                    "nud",
                    "permanent",
                ])?;
            }
        }
        let cfg = LoaderConfig {
            enable_forwarding: false,
            instance: instance.clone(),
            interfaces: ifaces.clone(),
            mode: RequestedMode::XdpSkb,
            relay_addresses: vec![
                topo.relay_caller_if.ipv4.into(),
                topo.relay_caller_if.ipv6.into(),
            ],
        };
        let (xdp, sinks) = topo.relay.enter(|| -> anyhow::Result<_> {
            let dp = loader::start(&cfg, ebpf_object())?;
            let sinks = PORTS
                .iter()
                .map(|&p| UdpSocket::bind(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), p)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((dp, sinks))
        })?;
        assert_eq!(xdp.mode(), Mode::XdpSkb);
        let (tx_v4, tx_v6) = topo.caller.enter(|| -> anyhow::Result<_> {
            Ok((
                UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?,
                UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))?,
            ))
        })?;
        Ok(Parity {
            xdp,
            user: DataPlane::userspace("parity test"),
            tx_v4,
            tx_v6,
            _sinks: sinks,
            caller_v4: topo.caller_if.ipv4,
            caller_v6: topo.caller_if.ipv6,
            relay_v4: topo.relay_caller_if.ipv4,
            relay_v6: topo.relay_caller_if.ipv6,
            instance,
            ifaces,
            _topo: topo,
        })
    }

    fn src(&self, v6: bool) -> IpAddr {
        if v6 {
            self.caller_v6.into()
        } else {
            self.caller_v4.into()
        }
    }

    /// Applies the same configuration to both planes.
    fn both(&self, f: impl Fn(&DataPlane) -> Result<(), relay_user::DataPlaneError>) {
        f(&self.xdp).expect("configure xdp");
        f(&self.user).expect("configure userspace");
    }

    /// Back to an empty firewall and fresh guard state on both planes.
    fn reset(&self) {
        let (a, b) = (self.src(false), self.src(true));
        self.both(|dp| {
            for ban in dp.ban_list()? {
                dp.ban_remove(ban.prefix)?;
            }
            for rule in dp.deny_list()? {
                dp.deny_remove(rule.cidr)?;
            }
            for svc in dp.service_list()? {
                for cidr in dp.allow_list(svc.id)? {
                    dp.allow_remove(svc.id, cidr)?;
                }
                dp.service_remove(svc.port, svc.proto)?;
            }
            dp.guard_set(&GuardSettings::default())?;
            for src in [a, b] {
                dp.guard_state_reset(src)?;
                dp.sessions_set(src, SourceSessions::default())?;
            }
            Ok(())
        });
    }

    fn verdict_stats(dp: &DataPlane) -> BTreeMap<&'static str, u64> {
        let all = dp.stats().expect("stats");
        VERDICTS.iter().map(|s| (s.name(), all[s.name()])).collect()
    }

    /// Sends one packet through the kernel and returns the verdict it counted.
    fn xdp_verdict(&self, p: Pkt) -> Stat {
        let before = Self::verdict_stats(&self.xdp);
        let (sock, dst): (&UdpSocket, IpAddr) = if p.v6 {
            (&self.tx_v6, self.relay_v6.into())
        } else {
            (&self.tx_v4, self.relay_v4.into())
        };
        sock.send_to(p.payload, SocketAddr::new(dst, p.port))
            .expect("send from caller");
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let after = Self::verdict_stats(&self.xdp);
            let changed: Vec<Stat> = VERDICTS
                .iter()
                .copied()
                .filter(|s| after[s.name()] != before[s.name()])
                .collect();
            match changed.as_slice() {
                [one] if after[one.name()] == before[one.name()] + 1 => return *one,
                [] if Instant::now() < deadline => thread::sleep(Duration::from_millis(1)),
                [] => panic!("XDP never judged a packet to port {}", p.port),
                _ => panic!("one packet, several verdicts: {before:?} -> {after:?}"),
            }
        }
    }

    fn user_verdict(&self, p: Pkt) -> Stat {
        self.user
            .firewall_check(self.src(p.v6), p.port, Proto::Udp, p.payload)
            .stat()
    }

    /// Runs `pkts` through both planes, packet by packet, and checks each verdict against the
    /// expectation and the two planes' stat deltas against each other.
    fn run(&self, scenario: &str, pkts: &[Pkt], expect: &[Stat]) {
        assert_eq!(pkts.len(), expect.len(), "{scenario}: test table");
        let (x0, u0) = (
            Self::verdict_stats(&self.xdp),
            Self::verdict_stats(&self.user),
        );
        for (i, (&p, &want)) in pkts.iter().zip(expect).enumerate() {
            let x = self.xdp_verdict(p);
            let u = self.user_verdict(p);
            assert_eq!(
                (x.name(), u.name()),
                (want.name(), want.name()),
                "{scenario}: packet {i} (v6={}, port {}): (xdp, userspace) verdicts",
                p.v6,
                p.port
            );
        }
        let delta = |a: &BTreeMap<&'static str, u64>, b: &BTreeMap<&'static str, u64>| {
            a.iter()
                .map(|(k, v)| (*k, b[k] - v))
                .filter(|(_, d)| *d != 0)
                .collect::<BTreeMap<_, _>>()
        };
        let (x1, u1) = (
            Self::verdict_stats(&self.xdp),
            Self::verdict_stats(&self.user),
        );
        let (dx, du) = (delta(&x0, &x1), delta(&u0, &u1));
        assert_eq!(dx, du, "{scenario}: stat deltas (xdp, userspace)");
        eprintln!("{scenario}: {dx:?}");
    }
}

#[test]
fn firewall_verdicts_match_across_data_planes() {
    require_privileged!();
    let _serial = serial();
    let p = Parity::new().expect("topology and XDP data plane");
    let sip = Service {
        port: SIP_PORT,
        proto: Proto::Udp,
        id: ServiceId::Sip,
        restricted: false,
        sip: true,
    };
    bans(&p, sip);
    static_deny(&p);
    restricted_service(&p);
    sip_rate_limits(&p, sip);
    session_cap(&p, sip);
    p.reset();
}

/// Nothing configured passes; a ban drops everything from its source until it runs out.
fn bans(p: &Parity, sip: Service) {
    let (src4, src6) = (p.src(false), p.src(true));
    // Baseline: nothing configured, everything passes as "other".
    p.reset();
    p.run(
        "baseline",
        &[v4(MEDIA_PORT, RTP), v6(SIP_PORT, OPTIONS)],
        &[Stat::PassOther, Stat::PassOther],
    );

    // A banned source gets nothing through, media and SIP alike; the other family's address
    // is another source.
    p.reset();
    p.both(|dp| dp.service_set(sip));
    p.both(|dp| dp.ban_add(Cidr::host(src4), None, BanReason::Scanner));
    p.run(
        "banned source",
        &[
            v4(MEDIA_PORT, RTP),
            v4(SIP_PORT, INVITE),
            v4(ACL_PORT, RTP),
            v6(SIP_PORT, OPTIONS),
        ],
        &[
            Stat::DropBanned,
            Stat::DropBanned,
            Stat::DropBanned,
            Stat::PassSip,
        ],
    );

    // A ban that has run out no longer blocks, even before it is purged.
    p.reset();
    p.both(|dp| {
        dp.ban_add(
            Cidr::host(src6),
            Some(Duration::from_millis(400)),
            BanReason::Flood,
        )
    });
    p.run(
        "ban before expiry",
        &[v6(MEDIA_PORT, RTP)],
        &[Stat::DropBanned],
    );
    thread::sleep(Duration::from_millis(600));
    p.run(
        "expired ban",
        &[v6(MEDIA_PORT, RTP), v4(MEDIA_PORT, RTP)],
        &[Stat::PassOther, Stat::PassOther],
    );
    assert!(p.xdp.ban_list().unwrap()[0].expired);
    assert!(p.user.ban_list().unwrap()[0].expired);
}

fn static_deny(p: &Parity) {
    let (src4, src6) = (p.src(false), p.src(true));
    // Static deny, by CIDR, per family.
    p.reset();
    let net4 = Cidr::new(src4, 24).unwrap();
    p.both(|dp| dp.deny_add(net4, 10));
    p.run(
        "denied v4 CIDR",
        &[v4(MEDIA_PORT, RTP), v6(MEDIA_PORT, RTP)],
        &[Stat::DropDenied, Stat::PassOther],
    );
    let net6 = Cidr::new(src6, 64).unwrap();
    p.both(|dp| dp.deny_add(net6, 11));
    p.both(|dp| dp.deny_remove(net4).map(drop));
    p.run(
        "denied v6 CIDR",
        &[v6(SIP_PORT, OPTIONS), v4(MEDIA_PORT, RTP)],
        &[Stat::DropDenied, Stat::PassOther],
    );
}

fn restricted_service(p: &Parity) {
    let (src4, src6) = (p.src(false), p.src(true));
    // A restricted service admits only its allow list; other ports are untouched.
    p.reset();
    p.both(|dp| {
        dp.service_set(Service {
            port: ACL_PORT,
            proto: Proto::Udp,
            id: ServiceId::Management,
            restricted: true,
            sip: false,
        })
    });
    p.both(|dp| dp.allow_add(ServiceId::Management, Cidr::new(src4, 32).unwrap()));
    p.run(
        "restricted service",
        &[v4(ACL_PORT, RTP), v6(ACL_PORT, RTP), v6(MEDIA_PORT, RTP)],
        &[Stat::PassService, Stat::DropServiceAcl, Stat::PassOther],
    );
    let net6 = Cidr::new(src6, 64).unwrap();
    p.both(|dp| dp.allow_add(ServiceId::Management, net6));
    p.run(
        "restricted service, v6 allowed",
        &[v6(ACL_PORT, RTP)],
        &[Stat::PassService],
    );
}

/// The SIP guard's packet rate and INVITE calls per second.
fn sip_rate_limits(p: &Parity, sip: Service) {
    // SIP packet rate: a burst of 5 at 1/s, so 8 back-to-back packets leave 3 over.
    p.reset();
    p.both(|dp| dp.service_set(sip));
    p.both(|dp| {
        dp.guard_set(&GuardSettings {
            packet_rate: 1,
            packet_burst: 5,
            ..GuardSettings::default()
        })
    });
    let mut expect = vec![Stat::PassSip; 5];
    expect.extend([Stat::DropSipPacketRate; 3]);
    p.run(
        "SIP packet-rate burst",
        &[v4(SIP_PORT, OPTIONS); 8],
        &expect,
    );
    // Media to a non-SIP port is not rate limited.
    p.run(
        "packet rate is SIP only",
        &[v4(MEDIA_PORT, RTP)],
        &[Stat::PassOther],
    );

    // INVITE CPS: 2 per burst, non-INVITEs unaffected.
    p.reset();
    p.both(|dp| dp.service_set(sip));
    p.both(|dp| {
        dp.guard_set(&GuardSettings {
            packet_rate: 1000,
            packet_burst: 1000,
            invite_rate: 1,
            invite_burst: 2,
            ..GuardSettings::default()
        })
    });
    p.run(
        "INVITE CPS",
        &[
            v6(SIP_PORT, INVITE),
            v6(SIP_PORT, INVITE),
            v6(SIP_PORT, INVITE),
            v6(SIP_PORT, OPTIONS),
            v6(SIP_PORT, INVITE),
        ],
        &[
            Stat::PassSip,
            Stat::PassSip,
            Stat::DropSipInviteRate,
            Stat::PassSip,
            Stat::DropSipInviteRate,
        ],
    );
}

fn session_cap(p: &Parity, sip: Service) {
    let src4 = p.src(false);
    // Session cap: the guard default, then a source's own limit overriding it.
    p.reset();
    p.both(|dp| dp.service_set(sip));
    p.both(|dp| {
        dp.guard_set(&GuardSettings {
            packet_rate: 1000,
            packet_burst: 1000,
            invite_rate: 1000,
            invite_burst: 1000,
            max_sessions: 2,
            ..GuardSettings::default()
        })
    });
    p.both(|dp| {
        dp.sessions_set(
            src4,
            SourceSessions {
                active: 2,
                limit: 0,
            },
        )
    });
    p.run(
        "session cap",
        &[
            v4(SIP_PORT, INVITE),
            v4(SIP_PORT, OPTIONS),
            v6(SIP_PORT, INVITE),
        ],
        &[Stat::DropSipSessionCap, Stat::PassSip, Stat::PassSip],
    );
    p.both(|dp| dp.sessions_set_limit(src4, 3).map(drop));
    p.run(
        "session cap, own limit",
        &[v4(SIP_PORT, INVITE)],
        &[Stat::PassSip],
    );
}
