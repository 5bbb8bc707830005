//! Fixture tests for the XDP program, run through BPF_PROG_TEST_RUN.
//!
//! Katran-style: a table of {description, input frame, expected action, expected output frame,
//! expected STATS reason}, run in order against one loaded program whose maps each fixture's
//! setup hook prepares. Expected rewritten frames are built from scratch with full checksums,
//! so a byte-exact match also proves the kernel's incremental checksum updates.
//!
//! Each test loads its own copy of the object with its maps pinned in a private directory under
//! /sys/fs/bpf and runs inside a private network namespace holding two dummy interfaces, their
//! addresses and permanent neighbour entries, so `bpf_fib_lookup` resolves next hops exactly.

use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, LpmTrie, MapData, PerCpuArray, PerCpuHashMap, RingBuf, lpm_trie::Key,
        xdp::DevMapHash,
    },
    programs::{TestRun, TestRunOptions, Xdp},
};
use relay_common::{
    Addr, csum,
    fw::{
        BanEntry, PROTO_TCP, PROTO_UDP, SVC_RESTRICTED, SVC_SIP, ServiceEntry, ServiceKey,
        SvcAllowV4, SvcAllowV6, svc_allow_prefix,
    },
    guard::{GuardConfig, GuardEvent, GuardEventKind, GuardState, SessionCount},
    maps as names,
    ratelimit::Gcra,
    relay::{
        LEG_ACTIVE, LEG_LATCH, LEG_LATCHED, LEG_PEER_KNOWN, LEG_STRICT_SOURCE, Leg, LegCounters,
        LegKey,
    },
    stats::Stat,
};
use tests::netns::Netns;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

// ---------------------------------------------------------------------------------------------
// Frame builder
// ---------------------------------------------------------------------------------------------

type Mac = [u8; 6];

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ip {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Ip {
    fn addr(self) -> Addr {
        match self {
            Ip::V4(o) => Addr::from_v4(o),
            Ip::V6(b) => Addr::from_v6(b),
        }
    }
    fn bytes(self) -> Vec<u8> {
        match self {
            Ip::V4(o) => o.to_vec(),
            Ip::V6(b) => b.to_vec(),
        }
    }
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

/// Layer 4 of a built frame.
#[derive(Clone, Debug)]
enum L4 {
    Udp {
        sport: u16,
        dport: u16,
        payload: Vec<u8>,
        /// Send a zero checksum (IPv4 "no checksum").
        no_csum: bool,
    },
    Tcp {
        sport: u16,
        dport: u16,
        payload: Vec<u8>,
    },
    /// Any other protocol number with raw payload.
    Raw { proto: u8, payload: Vec<u8> },
}

/// A frame to build. Defaults: no VLAN, TTL 64, valid lengths and checksums.
#[derive(Clone, Debug)]
struct Frame {
    dst_mac: Mac,
    src_mac: Mac,
    vlan: Option<u16>,
    src: Ip,
    dst: Ip,
    ttl: u8,
    l4: L4,
    /// IPv4 options bytes (multiple of 4).
    ip_options: Vec<u8>,
    /// IPv4 flags+fragment offset word.
    frag: u16,
    /// IPv6: insert an extension header of this type before L4 (fragment = 44, hop-by-hop = 0).
    v6_ext: Option<u8>,
}

impl Frame {
    fn udp(src: Ip, sport: u16, dst: Ip, dport: u16, payload: &[u8]) -> Frame {
        Frame {
            dst_mac: RELAY_MAC,
            src_mac: PEER_MAC,
            vlan: None,
            src,
            dst,
            ttl: 64,
            l4: L4::Udp {
                sport,
                dport,
                payload: payload.to_vec(),
                no_csum: false,
            },
            ip_options: vec![],
            frag: 0,
            v6_ext: None,
        }
    }

    fn tcp(src: Ip, sport: u16, dst: Ip, dport: u16, payload: &[u8]) -> Frame {
        let mut f = Frame::udp(src, sport, dst, dport, &[]);
        f.l4 = L4::Tcp {
            sport,
            dport,
            payload: payload.to_vec(),
        };
        f
    }

    fn raw(src: Ip, dst: Ip, proto: u8, payload: &[u8]) -> Frame {
        let mut f = Frame::udp(src, 1, dst, 1, &[]);
        f.l4 = L4::Raw {
            proto,
            payload: payload.to_vec(),
        };
        f
    }

    fn vlan(mut self, id: u16) -> Frame {
        self.vlan = Some(id);
        self
    }

    fn ttl(mut self, ttl: u8) -> Frame {
        self.ttl = ttl;
        self
    }

    fn macs(mut self, src: Mac, dst: Mac) -> Frame {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    fn no_csum(mut self) -> Frame {
        if let L4::Udp { no_csum, .. } = &mut self.l4 {
            *no_csum = true;
        }
        self
    }

    /// The transport segment with its checksum computed over the pseudo-header.
    fn l4_bytes(&self, proto_out: &mut u8) -> Vec<u8> {
        let (proto, mut seg, csum_at) = match &self.l4 {
            L4::Udp {
                sport,
                dport,
                payload,
                ..
            } => {
                let len = (8 + payload.len()) as u16;
                let mut s = Vec::new();
                s.extend(sport.to_be_bytes());
                s.extend(dport.to_be_bytes());
                s.extend(len.to_be_bytes());
                s.extend([0, 0]);
                s.extend(payload);
                (17u8, s, Some(6))
            }
            L4::Tcp {
                sport,
                dport,
                payload,
            } => {
                let mut s = Vec::new();
                s.extend(sport.to_be_bytes());
                s.extend(dport.to_be_bytes());
                s.extend([0, 0, 0, 1, 0, 0, 0, 0]); // seq, ack
                s.extend([0x50, 0x18]); // doff 5, PSH|ACK
                s.extend([0xff, 0xff, 0, 0, 0, 0]); // window, check, urg
                s.extend(payload);
                (6u8, s, Some(16))
            }
            L4::Raw { proto, payload } => (*proto, payload.clone(), None),
        };
        *proto_out = proto;
        let no_csum = matches!(self.l4, L4::Udp { no_csum: true, .. });
        if let Some(at) = csum_at
            && !no_csum
        {
            let sum = csum::pseudo_header_sum(
                &self.src.bytes(),
                &self.dst.bytes(),
                proto,
                seg.len() as u32,
            );
            let mut c = csum::checksum(sum, &seg);
            if proto == 17 && c == 0 {
                c = 0xffff;
            }
            seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        seg
    }

    fn build(&self) -> Vec<u8> {
        let mut proto = 0;
        let seg = self.l4_bytes(&mut proto);
        let mut out = Vec::new();
        out.extend(self.dst_mac);
        out.extend(self.src_mac);
        if let Some(id) = self.vlan {
            out.extend(ETH_P_8021Q.to_be_bytes());
            out.extend(id.to_be_bytes());
        }
        match (self.src, self.dst) {
            (Ip::V4(s), Ip::V4(d)) => {
                out.extend(ETH_P_IP.to_be_bytes());
                let ihl = 20 + self.ip_options.len();
                let mut h = vec![0x40 | (ihl / 4) as u8, 0xb8];
                h.extend(((ihl + seg.len()) as u16).to_be_bytes());
                h.extend([0x12, 0x34]);
                h.extend(self.frag.to_be_bytes());
                h.extend([self.ttl, proto, 0, 0]);
                h.extend(s);
                h.extend(d);
                h.extend(&self.ip_options);
                let c = csum::checksum(0, &h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                out.extend(h);
                out.extend(seg);
            }
            (Ip::V6(s), Ip::V6(d)) => {
                out.extend(ETH_P_IPV6.to_be_bytes());
                let ext_len = if self.v6_ext.is_some() { 8 } else { 0 };
                out.extend([0x60, 0x00, 0x00, 0x00]);
                out.extend(((ext_len + seg.len()) as u16).to_be_bytes());
                out.push(self.v6_ext.unwrap_or(proto));
                out.push(self.ttl);
                out.extend(s);
                out.extend(d);
                if let Some(ext) = self.v6_ext {
                    // Fragment header (offset 0, M=1) or an 8-byte options header (PadN).
                    if ext == 44 {
                        out.extend([proto, 0, 0x00, 0x01, 0, 0, 0, 1]);
                    } else {
                        out.extend([proto, 0, 1, 4, 0, 0, 0, 0]);
                    }
                }
                out.extend(seg);
            }
            _ => panic!("mixed families"),
        }
        out
    }
}

/// An ARP request frame (not IP).
fn arp(vlan: Option<u16>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend([0xff; 6]);
    out.extend(PEER_MAC);
    if let Some(id) = vlan {
        out.extend(ETH_P_8021Q.to_be_bytes());
        out.extend(id.to_be_bytes());
    }
    out.extend(ETH_P_ARP.to_be_bytes());
    out.extend([0, 1, 8, 0, 6, 4, 0, 1]);
    out.extend(PEER_MAC);
    out.extend([10, 0, 0, 2]);
    out.extend([0; 6]);
    out.extend([10, 0, 0, 1]);
    out
}

/// Verifies the IPv4 header checksum and the UDP checksum of a frame from scratch.
fn assert_checksums_valid(frame: &[u8], what: &str) {
    let mut l3 = 14;
    if u16::from_be_bytes([frame[12], frame[13]]) == ETH_P_8021Q {
        l3 += 4;
    }
    let ethertype = u16::from_be_bytes([frame[l3 - 2], frame[l3 - 1]]);
    let (src, dst, l4) = match ethertype {
        ETH_P_IP => {
            let ihl = (frame[l3] & 0x0f) as usize * 4;
            assert_eq!(
                csum::checksum(0, &frame[l3..l3 + ihl]),
                0,
                "{what}: IPv4 header checksum"
            );
            let tot = u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]) as usize;
            (
                &frame[l3 + 12..l3 + 16],
                &frame[l3 + 16..l3 + 20],
                &frame[l3 + ihl..l3 + tot],
            )
        }
        ETH_P_IPV6 => {
            let plen = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]) as usize;
            (
                &frame[l3 + 8..l3 + 24],
                &frame[l3 + 24..l3 + 40],
                &frame[l3 + 40..l3 + 40 + plen],
            )
        }
        other => panic!("{what}: not IP ({other:#x})"),
    };
    let udp_check = u16::from_be_bytes([l4[6], l4[7]]);
    if ethertype == ETH_P_IP && udp_check == 0 {
        return; // "no checksum"
    }
    assert_ne!(udp_check, 0, "{what}: zero UDP checksum over IPv6");
    let sum = csum::pseudo_header_sum(src, dst, 17, l4.len() as u32);
    assert_eq!(
        csum::checksum(sum, l4),
        0,
        "{what}: UDP checksum does not verify"
    );
}

// ---------------------------------------------------------------------------------------------
// The namespace: addresses, neighbours, routes
// ---------------------------------------------------------------------------------------------

/// The relay's interface towards peers (ingress for most fixtures).
const IF0: u32 = 10;
/// A second interface, the egress of redirect fixtures.
const IF1: u32 = 11;
const LO: u32 = 1;

const RELAY_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const RELAY1_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x01, 0x01];
const PEER_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
const PEER_B_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x03];
const FAR_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x01, 0x02];

const RELAY4: [u8; 4] = [10, 0, 0, 1];
const PEER_A4: [u8; 4] = [10, 0, 0, 2];
const PEER_B4: [u8; 4] = [10, 0, 0, 3];
/// On IF0's subnet but with no neighbour entry.
const NO_NEIGH4: [u8; 4] = [10, 0, 0, 99];
const RELAY1_4: [u8; 4] = [10, 1, 0, 1];
const FAR4: [u8; 4] = [10, 1, 0, 2];

fn relay6() -> [u8; 16] {
    v6("fd00::1")
}
fn peer_a6() -> [u8; 16] {
    v6("fd00::2")
}
fn peer_b6() -> [u8; 16] {
    v6("fd00::3")
}

fn mac_str(m: Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A namespace with `if0` (index 10) and `if1` (index 11), both dummies, forwarding on, and
/// permanent neighbours for the peers, so route lookups are deterministic.
fn make_netns() -> Netns {
    let ns = Netns::unique("x").expect("create netns");
    for (dev, idx, mac) in [("if0", IF0, RELAY_MAC), ("if1", IF1, RELAY1_MAC)] {
        ns.ip([
            "link",
            "add",
            dev,
            "index",
            &idx.to_string(),
            "address",
            &mac_str(mac),
            "type",
            "dummy",
        ])
        .unwrap();
    }
    ns.ip(["link", "set", "lo", "up"]).unwrap();
    ns.ip(["addr", "add", "10.0.0.1/24", "dev", "if0"]).unwrap();
    ns.ip(["addr", "add", "10.1.0.1/24", "dev", "if1"]).unwrap();
    ns.ip(["-6", "addr", "add", "fd00::1/64", "dev", "if0", "nodad"])
        .unwrap();
    ns.ip(["-6", "addr", "add", "fd01::1/64", "dev", "if1", "nodad"])
        .unwrap();
    for dev in ["if0", "if1"] {
        ns.ip(["link", "set", dev, "up"]).unwrap();
    }
    for (addr, mac, dev) in [
        ("10.0.0.2", PEER_MAC, "if0"),
        ("10.0.0.3", PEER_B_MAC, "if0"),
        ("10.1.0.2", FAR_MAC, "if1"),
        ("fd00::2", PEER_MAC, "if0"),
        ("fd00::3", PEER_B_MAC, "if0"),
        ("fd01::2", FAR_MAC, "if1"),
    ] {
        ns.ip([
            "neigh",
            "add",
            addr,
            "lladdr",
            &mac_str(mac),
            "dev",
            dev,
            "nud",
            "permanent",
        ])
        .unwrap();
    }
    // After the devices exist: setting these propagates to every existing device.
    ns.sysctl("net/ipv4/ip_forward", "1").unwrap();
    ns.sysctl("net/ipv6/conf/all/forwarding", "1").unwrap();
    ns
}

// ---------------------------------------------------------------------------------------------
// The loaded program and its maps
// ---------------------------------------------------------------------------------------------

/// A private directory on a bpffs for one test's pinned maps; removed (and unmounted, if this
/// test mounted it) on drop.
///
/// Under /sys/fs/bpf when that is a bpffs. On a host where nothing mounted it, the test mounts
/// its own bpffs instance on a temporary directory rather than changing /sys/fs/bpf for
/// everyone else.
struct PinDir {
    path: PathBuf,
    mounted: Option<PathBuf>,
}

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

fn is_bpffs(path: &Path) -> bool {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: zeroed statfs is a valid out-buffer; `c` is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0) && st.f_type as i64 == BPF_FS_MAGIC
}

impl PinDir {
    fn new(tag: &str) -> PinDir {
        let name = format!("sbct-fixtures-{}-{tag}", std::process::id());
        let sys = Path::new("/sys/fs/bpf");
        let (base, mounted) = if is_bpffs(sys) {
            (sys.to_path_buf(), None)
        } else {
            let mnt = std::env::temp_dir().join(format!("{name}-bpffs"));
            std::fs::create_dir_all(&mnt).unwrap();
            let target = std::ffi::CString::new(mnt.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: valid NUL-terminated strings; a fresh bpffs instance on our own directory.
            let rc = unsafe {
                libc::mount(
                    c"bpf".as_ptr(),
                    target.as_ptr(),
                    c"bpf".as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            assert_eq!(rc, 0, "mount bpffs: {}", std::io::Error::last_os_error());
            (mnt.clone(), Some(mnt))
        };
        let path = base.join(&name);
        let _ = remove_pins(&path);
        std::fs::create_dir_all(&path).expect("create pin dir on bpffs");
        PinDir { path, mounted }
    }
}

fn remove_pins(path: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(path)? {
        std::fs::remove_file(e?.path())?;
    }
    std::fs::remove_dir(path)
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = remove_pins(&self.path) {
            eprintln!("cannot remove {}: {e}", self.path.display());
        }
        if let Some(mnt) = &self.mounted {
            let target = std::ffi::CString::new(mnt.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: unmounts the bpffs this guard mounted.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            let _ = std::fs::remove_dir(mnt);
        }
    }
}

struct Env {
    ebpf: Ebpf,
    // Declared after `ebpf` so the maps close before their pins are removed (order is cosmetic:
    // unlinking a pin never affects open fds).
    _pins: PinDir,
}

fn load(pins: &PinDir) -> Ebpf {
    let obj = relay_user::object::ebpf_object();
    assert!(
        !obj.is_empty(),
        "XDP object missing (built with AYA_BUILD_SKIP?)"
    );
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(&pins.path)
        .load(obj)
        .expect("load object");
    for name in [names::PROGRAM, "sbc_xdp_pass"] {
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("program {name} missing"))
            .try_into()
            .expect("XDP program");
        if let Err(e) = prog.load() {
            panic!("verifier rejected {name}: {e:#?}");
        }
    }
    ebpf
}

impl Env {
    fn new(tag: &str) -> Env {
        let pins = PinDir::new(tag);
        let ebpf = load(&pins);
        Env { ebpf, _pins: pins }
    }

    fn map(&mut self, name: &str) -> &mut aya::maps::Map {
        self.ebpf
            .map_mut(name)
            .unwrap_or_else(|| panic!("map {name} missing"))
    }

    fn hash<K: aya::Pod, V: aya::Pod>(&mut self, name: &str) -> HashMap<&mut MapData, K, V> {
        HashMap::try_from(self.map(name)).unwrap()
    }

    fn ban(&mut self, ip: Ip, expires_ns: u64) {
        self.hash::<Addr, BanEntry>(names::BANS)
            .insert(
                ip.addr(),
                BanEntry {
                    expires_ns,
                    reason: 1,
                    _pad: 0,
                },
                0,
            )
            .unwrap();
    }

    fn deny_v4(&mut self, net: [u8; 4], len: u32) {
        let mut m: LpmTrie<_, [u8; 4], u32> = LpmTrie::try_from(self.map(names::DENY_V4)).unwrap();
        m.insert(&Key::new(len, net), 7, 0).unwrap();
    }

    fn deny_v6(&mut self, net: [u8; 16], len: u32) {
        let mut m: LpmTrie<_, [u8; 16], u32> = LpmTrie::try_from(self.map(names::DENY_V6)).unwrap();
        m.insert(&Key::new(len, net), 8, 0).unwrap();
    }

    fn service(&mut self, port: u16, proto: u8, service: u32, flags: u32) {
        self.hash::<ServiceKey, ServiceEntry>(names::SERVICES)
            .insert(
                ServiceKey::new(port, proto),
                ServiceEntry { service, flags },
                0,
            )
            .unwrap();
    }

    fn allow_v4(&mut self, service: u32, net: [u8; 4], len: u32) {
        let mut m: LpmTrie<_, SvcAllowV4, u32> =
            LpmTrie::try_from(self.map(names::SVC_ALLOW_V4)).unwrap();
        m.insert(
            &Key::new(svc_allow_prefix(len), SvcAllowV4::new(service, net)),
            1,
            0,
        )
        .unwrap();
    }

    fn allow_v6(&mut self, service: u32, net: [u8; 16], len: u32) {
        let mut m: LpmTrie<_, SvcAllowV6, u32> =
            LpmTrie::try_from(self.map(names::SVC_ALLOW_V6)).unwrap();
        m.insert(
            &Key::new(svc_allow_prefix(len), SvcAllowV6::new(service, net)),
            1,
            0,
        )
        .unwrap();
    }

    fn guard_config(&mut self, cfg: GuardConfig) {
        let mut m: Array<_, GuardConfig> = Array::try_from(self.map(names::GUARD_CONFIG)).unwrap();
        m.set(0, cfg, 0).unwrap();
    }

    fn guard_state(&mut self, ip: Ip) -> Option<GuardState> {
        self.hash::<Addr, GuardState>(names::GUARD_STATE)
            .get(&ip.addr(), 0)
            .ok()
    }

    fn set_guard_state(&mut self, ip: Ip, st: GuardState) {
        self.hash::<Addr, GuardState>(names::GUARD_STATE)
            .insert(ip.addr(), st, 0)
            .unwrap();
    }

    fn sessions(&mut self, ip: Ip, active: u32, limit: u32) {
        self.hash::<Addr, SessionCount>(names::SESSIONS)
            .insert(ip.addr(), SessionCount { active, limit }, 0)
            .unwrap();
    }

    fn leg(&mut self, leg: Leg) {
        self.hash::<LegKey, Leg>(names::RELAY_LEGS)
            .insert(LegKey::new(leg.local_port), leg, 0)
            .unwrap();
    }

    fn get_leg(&mut self, port: u16) -> Leg {
        self.hash::<LegKey, Leg>(names::RELAY_LEGS)
            .get(&LegKey::new(port), 0)
            .unwrap()
    }

    fn counters(&mut self, port: u16) -> LegCounters {
        let m: PerCpuHashMap<_, LegKey, LegCounters> =
            PerCpuHashMap::try_from(self.map(names::RELAY_COUNTERS)).unwrap();
        let mut total = LegCounters::default();
        if let Ok(v) = m.get(&LegKey::new(port), 0) {
            for c in v.iter() {
                total.merge(c);
            }
        }
        total
    }

    fn tx_port(&mut self, ifindex: u32) {
        let mut m = DevMapHash::try_from(self.map(names::TX_PORTS)).unwrap();
        m.insert(ifindex, ifindex, None, 0).unwrap();
    }

    fn stat(&mut self, stat: Stat) -> u64 {
        let m: PerCpuArray<_, u64> = PerCpuArray::try_from(self.map(names::STATS)).unwrap();
        m.get(&(stat as u32), 0).unwrap().iter().sum()
    }

    fn stats(&mut self) -> Vec<u64> {
        Stat::ALL.iter().map(|s| self.stat(*s)).collect()
    }

    fn events(&mut self) -> Vec<GuardEvent> {
        let mut rb = RingBuf::try_from(self.map(names::GUARD_EVENTS)).unwrap();
        let mut out = Vec::new();
        while let Some(item) = rb.next() {
            assert_eq!(item.len(), std::mem::size_of::<GuardEvent>());
            // SAFETY: the record is exactly one GuardEvent (checked above), written by the
            // program; read_unaligned makes no alignment assumption about the ring.
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<GuardEvent>()) });
        }
        out
    }

    /// Runs the program once (or `repeat` times) on `frame` arriving on `ifindex`; returns the
    /// action and the output frame.
    fn run(&mut self, frame: &[u8], ifindex: u32, repeat: u32) -> (u32, Vec<u8>) {
        let prog: &Xdp = self
            .ebpf
            .program(names::PROGRAM)
            .unwrap()
            .try_into()
            .unwrap();
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex. The kernel insists data_end equals the frame length.
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let mut out = vec![0u8; frame.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        opts.ctx_in = Some(&ctx);
        opts.repeat = repeat;
        let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }
}

/// CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`.
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

const HOUR: u64 = 3_600_000_000_000;

#[test]
fn program_loads_and_maps_are_pinned() {
    tests::require_privileged!();
    let env = Env::new("load");
    for name in [
        names::BANS,
        names::DENY_V4,
        names::DENY_V6,
        names::SERVICES,
        names::SVC_ALLOW_V4,
        names::SVC_ALLOW_V6,
        names::GUARD_CONFIG,
        names::GUARD_STATE,
        names::SESSIONS,
        names::GUARD_EVENTS,
        names::RELAY_LEGS,
        names::RELAY_COUNTERS,
        names::TX_PORTS,
        names::STATS,
    ] {
        assert!(env._pins.path.join(name).exists(), "{name} not pinned");
    }
}
