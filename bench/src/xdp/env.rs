//! The bench's world: a private network namespace where `bpf_fib_lookup` answers "forward out
//! of the device the frame came in on" for the peers, the real object loaded with its maps
//! pinned under an instance of its own, and relay calls whose rewrite maps each frame onto
//! itself (so `repeat` runs the same path every time).

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context as _;
use aya::programs::Xdp;
use relay_common::{
    Addr,
    relay::{LEG_ACTIVE, LEG_PEER_KNOWN, Leg},
};
use relay_user::{
    BanReason, Cidr, GuardSettings, Proto, Service, ServiceId, loader, maps::XdpMaps,
    object::ebpf_object,
};
use tests::netns::Netns;

/// The relay's address on `x0`, each family.
pub const RELAY4: [u8; 4] = [198, 51, 100, 1];
pub const RELAY6: &str = "2001:db8::1";
/// A peer behind `x0` with a permanent neighbour entry: where relayed frames go.
pub const PEER4: [u8; 4] = [198, 51, 100, 20];
pub const PEER6: &str = "2001:db8::20";
/// On `x0`'s subnet, no neighbour entry: the route lookup fails at the neighbour.
pub const UNRESOLVED4: [u8; 4] = [198, 51, 100, 21];
pub const UNRESOLVED6: &str = "2001:db8::21";
/// A caller, and a banned source.
pub const CALLER4: [u8; 4] = [198, 51, 100, 30];
pub const CALLER6: &str = "2001:db8::30";
pub const BANNED4: [u8; 4] = [203, 0, 113, 9];
pub const BANNED6: &str = "2001:db8:bad::9";
pub const SIP: u16 = 5060;
/// The RTP source port of the caller.
pub const CALLER_PORT: u16 = 4000;
/// First leg port of each family's calls (calls take two consecutive ports).
pub const V4_BASE: u16 = 10_000;
pub const V6_BASE: u16 = 36_000;
/// Most legs per family (the ports between the bases).
pub const MAX_LEGS: u32 = 26_000;
/// The call whose partner's peer has no neighbour entry, each family.
pub const NO_NEIGH_PORT: [u16; 2] = [62_000, 62_002];

/// Address of a family (`v6`): parsing our own constants cannot fail.
pub fn ip(v6: bool, v4: [u8; 4], v6_addr: &str) -> IpAddr {
    if v6 {
        IpAddr::V6(v6_addr.parse().expect("a valid IPv6 constant"))
    } else {
        IpAddr::V4(v4.into())
    }
}

/// The namespace and the loaded object; pins and namespace go on drop.
pub struct Env {
    pub ns: Netns,
    pub ebpf: aya::Ebpf,
    pub maps: XdpMaps,
    instance: String,
    /// `x0`, where every frame arrives.
    pub ingress: u32,
    /// Legs per family installed so far.
    pub legs: u32,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = loader::detach(&self.instance, &[]);
    }
}

impl Env {
    pub fn new() -> anyhow::Result<Env> {
        let ns = netns()?;
        let ingress = ns.ifindex("x0")?;
        let object = ebpf_object();
        anyhow::ensure!(!object.is_empty(), "XDP object missing (AYA_BUILD_SKIP?)");
        let instance = format!("sbc-bench-xdp-{}", std::process::id());
        let _ = loader::detach(&instance, &[]);
        let mut ebpf = loader::load_pinned(object, &instance)?;
        for name in [relay_common::maps::PROGRAM, "sbc_xdp_pass", "sbc_xdp_swap"] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("{name} in the object"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("the verifier refused {name}"))?;
        }
        let mut maps = XdpMaps::from_ebpf(&mut ebpf)?;
        sip_service(&mut maps, false)?;
        for banned in [ip(false, BANNED4, BANNED6), ip(true, BANNED4, BANNED6)] {
            maps.ban_add(Cidr::host(banned), None, BanReason::Manual)?;
        }
        let mut env = Env {
            ns,
            ebpf,
            maps,
            instance,
            ingress,
            legs: 0,
        };
        env.guard(false)?;
        for (v6, port) in [(false, NO_NEIGH_PORT[0]), (true, NO_NEIGH_PORT[1])] {
            env.call(v6, port, ip(v6, UNRESOLVED4, UNRESOLVED6))?;
        }
        env.grow(2)?;
        Ok(env)
    }

    /// See [`sip_service`].
    pub fn guard(&mut self, tight: bool) -> anyhow::Result<()> {
        sip_service(&mut self.maps, tight)
    }

    /// Adds calls until each family has `legs` legs (two a call).
    pub fn grow(&mut self, legs: u32) -> anyhow::Result<()> {
        let legs = legs.clamp(2, MAX_LEGS) & !1;
        while self.legs < legs {
            let port = self.legs as u16;
            self.call(false, V4_BASE + port, ip(false, PEER4, PEER6))?;
            self.call(true, V6_BASE + port, ip(true, PEER4, PEER6))?;
            self.legs += 2;
        }
        Ok(())
    }

    /// A call on `port` (leg A, addressed as the peer) and `port + 1` (leg B, on the relay's
    /// address, whose peer is `far`): with `far` the peer, RTP to the peer's `port` is relayed
    /// from the relay's `port + 1` back to the peer's `port`, the very frame again but for MACs
    /// and TTL.
    fn call(&mut self, v6: bool, port: u16, far: IpAddr) -> anyhow::Result<()> {
        let relay = Addr::from(ip(v6, RELAY4, RELAY6));
        let caller = Addr::from(ip(v6, CALLER4, CALLER6));
        let peer = Addr::from(ip(v6, PEER4, PEER6));
        for (local, local_port, peer_addr, peer_port, partner) in [
            (peer, port, caller, CALLER_PORT, port + 1),
            (relay, port + 1, Addr::from(far), port, port),
        ] {
            self.maps.leg_put(&Leg {
                local_addr: local,
                peer_addr,
                local_port,
                peer_port,
                partner_port: partner,
                session_id: u64::from(port),
                flags: LEG_ACTIVE | LEG_PEER_KNOWN,
                ..Leg::default()
            })?;
        }
        Ok(())
    }
}

/// SIP on UDP 5060 behind the guard, at limits no run reaches (`tight` false: every packet
/// takes the guard's whole path and passes) or at one packet a second (`tight`: all but a
/// source's first drop).
pub fn sip_service(maps: &mut XdpMaps, tight: bool) -> anyhow::Result<()> {
    maps.service_set(Service {
        port: SIP,
        proto: Proto::Udp,
        id: ServiceId::Sip,
        restricted: false,
        sip: true,
    })?;
    let (rate, burst) = if tight {
        (1, 1)
    } else {
        (100_000_000, 100_000_000)
    };
    maps.guard_set(&GuardSettings {
        packet_rate: rate,
        packet_burst: burst,
        invite_rate: 100_000_000,
        invite_burst: 100_000_000,
        max_sessions: 0,
        syn_rate: 0,
        syn_burst: 0,
        event_interval: Duration::from_secs(1),
    })?;
    Ok(())
}

/// `x0` (with its veth peer `x0p` for carrier), the relay's addresses, the peer's permanent
/// neighbour entries, forwarding on.
fn netns() -> anyhow::Result<Netns> {
    let ns = Netns::unique("bx")?;
    ns.ip([
        "link",
        "add",
        "x0",
        "address",
        "02:00:00:00:00:01",
        "type",
        "veth",
        "peer",
        "name",
        "x0p",
    ])?;
    ns.ip(["addr", "add", "198.51.100.1/24", "dev", "x0"])?;
    ns.ip(["-6", "addr", "add", "2001:db8::1/64", "dev", "x0", "nodad"])?;
    for dev in ["lo", "x0p", "x0"] {
        ns.ip(["link", "set", dev, "up"])?;
    }
    for peer in ["198.51.100.20", PEER6] {
        let args = [
            "neigh",
            "add",
            peer,
            "lladdr",
            "02:00:00:00:00:20",
            "dev",
            "x0",
        ];
        ns.ip(args.into_iter().chain(["nud", "permanent"]))?;
    }
    // After the device exists: these propagate to every existing device.
    ns.sysctl("net/ipv4/ip_forward", "1")?;
    ns.sysctl("net/ipv6/conf/all/forwarding", "1")?;
    Ok(ns)
}
