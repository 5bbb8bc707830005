//! Fixture tests for the XDP program, run through BPF_PROG_TEST_RUN.
//!
//! Katran-style: a table of {description, input frame, expected action, expected output frame,
//! expected STATS reason}, run in order against one loaded program whose maps each fixture's
//! setup hook prepares. Expected rewritten frames are built from scratch with full checksums,
//! so a byte-exact match also proves the kernel's incremental checksum updates.
//!
//! Each test loads its own copy of the object with its maps pinned in a private directory under
//! /sys/fs/bpf and runs inside a private network namespace holding two veth interfaces, their
//! addresses and permanent neighbour entries, so `bpf_fib_lookup` resolves next hops exactly.

use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, LpmTrie, MapData, PerCpuArray, RingBuf, lpm_trie::Key, xdp::DevMapHash,
    },
    programs::Xdp,
};
use relay_common::{
    Addr, csum,
    frag::{FRAG_DROP, FRAG_VERDICT_TTL_NS, FragKey, FragVerdict, MAX_EXT_HEADERS},
    fw::{
        BanEntry, PROTO_TCP, PROTO_UDP, SVC_RESTRICTED, SVC_SIP, ServiceEntry, ServiceKey,
        SvcAllowV4, SvcAllowV6, svc_allow_prefix, svc_port_bit,
    },
    guard::{GuardConfig, GuardEvent, GuardEventKind, GuardState, MAX_LEADING_CRLF, SessionCount},
    maps as names,
    ratelimit::Gcra,
    relay::{
        LEG_ACTIVE, LEG_LATCH, LEG_LATCHED, LEG_PEER_KNOWN, LEG_PRESENT, LEG_STRICT_SOURCE,
        LEG_TRUST_KNOWN, Leg, LegCounters,
    },
    stats::Stat,
};
use relay_user::test_run::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX, XdpRun};
use tests::netns::Netns;

#[path = "xdp_fixtures/bypass.rs"]
mod bypass;
#[path = "xdp_fixtures/routes.rs"]
mod routes;

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

/// A namespace with `if0` (index 10) and `if1` (index 11), veths, forwarding on, and
/// permanent neighbours for the peers, so route lookups are deterministic.
fn make_netns() -> Netns {
    let ns = Netns::unique("x").expect("create netns");
    for (dev, idx, mac) in [("if0", IF0, RELAY_MAC), ("if1", IF1, RELAY1_MAC)] {
        // A veth pair with both ends here (no dummy driver needed); the far end only provides
        // carrier.
        ns.ip([
            "link",
            "add",
            dev,
            "index",
            &idx.to_string(),
            "address",
            &mac_str(mac),
            "type",
            "veth",
            "peer",
            "name",
            &format!("{dev}p"),
            "index",
            &(idx + 10).to_string(),
        ])
        .unwrap();
        ns.ip(["link", "set", &format!("{dev}p"), "up"]).unwrap();
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
    /// Removes the pins when the test is done with them; `None` leaves them to another `Env`.
    pins: Option<PinDir>,
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
        Env {
            ebpf,
            pins: Some(pins),
        }
    }

    fn map(&mut self, name: &str) -> &mut aya::maps::Map {
        self.ebpf
            .map_mut(name)
            .unwrap_or_else(|| panic!("map {name} missing"))
    }

    fn hash<K: aya::Pod, V: aya::Pod>(&mut self, name: &str) -> HashMap<&mut MapData, K, V> {
        HashMap::try_from(self.map(name)).unwrap()
    }

    /// A host ban (the prefix fixtures are in `xdp_fixtures_bans.rs`).
    fn ban(&mut self, ip: Ip, expires_ns: u64) {
        let e = |prefix_len| BanEntry {
            expires_ns,
            reason: 1,
            prefix_len,
        };
        match ip {
            Ip::V4(a) => {
                let mut m: LpmTrie<_, [u8; 4], BanEntry> =
                    LpmTrie::try_from(self.map(names::BANS_V4)).unwrap();
                m.insert(&Key::new(32, a), e(32), 0).unwrap();
            }
            Ip::V6(a) => {
                let mut m: LpmTrie<_, [u8; 16], BanEntry> =
                    LpmTrie::try_from(self.map(names::BANS_V6)).unwrap();
                m.insert(&Key::new(128, a), e(128), 0).unwrap();
            }
        }
    }

    /// Lifts a host ban made by [`Env::ban`], so later fixtures see the source again.
    fn unban(&mut self, ip: Ip) {
        match ip {
            Ip::V4(a) => {
                let mut m: LpmTrie<_, [u8; 4], BanEntry> =
                    LpmTrie::try_from(self.map(names::BANS_V4)).unwrap();
                m.remove(&Key::new(32, a)).unwrap();
            }
            Ip::V6(a) => {
                let mut m: LpmTrie<_, [u8; 16], BanEntry> =
                    LpmTrie::try_from(self.map(names::BANS_V6)).unwrap();
                m.remove(&Key::new(128, a)).unwrap();
            }
        }
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
        // The port's bit first, as relay-user writes them: without it the program never
        // looks in `SERVICES`.
        let (word, bit) = svc_port_bit(port);
        let mut ports: Array<_, u64> = Array::try_from(self.map(names::SVC_PORTS)).unwrap();
        let old = ports.get(&word, 0).unwrap();
        ports.set(word, old | bit, 0).unwrap();
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

    fn frag_verdict(&mut self, key: FragKey) -> Option<FragVerdict> {
        self.hash::<FragKey, FragVerdict>(names::FRAG_VERDICTS)
            .get(&key, 0)
            .ok()
    }

    fn set_frag_verdict(&mut self, key: FragKey, v: FragVerdict) {
        self.hash::<FragKey, FragVerdict>(names::FRAG_VERDICTS)
            .insert(key, v, 0)
            .unwrap();
    }

    fn sessions(&mut self, ip: Ip, active: u32, limit: u32) {
        self.hash::<Addr, SessionCount>(names::SESSIONS)
            .insert(ip.addr(), SessionCount { active, limit }, 0)
            .unwrap();
    }

    fn legs(&mut self) -> aya::maps::Array<&mut MapData, Leg> {
        aya::maps::Array::try_from(self.map(names::RELAY_LEGS)).unwrap()
    }

    /// Writes a leg into its port's slot, marked as one (as relay-user does).
    fn leg(&mut self, mut leg: Leg) {
        leg.flags |= LEG_PRESENT;
        self.legs().set(u32::from(leg.local_port), leg, 0).unwrap();
    }

    /// The leg in `port`'s slot, without the slot's marker.
    fn get_leg(&mut self, port: u16) -> Leg {
        let mut leg = self.legs().get(&u32::from(port), 0).unwrap();
        assert!(leg.flags & LEG_PRESENT != 0, "no leg on {port}");
        leg.flags &= !LEG_PRESENT;
        leg
    }

    fn counters(&mut self, port: u16) -> LegCounters {
        let m: PerCpuArray<_, LegCounters> =
            PerCpuArray::try_from(self.map(names::RELAY_COUNTERS)).unwrap();
        let mut total = LegCounters::default();
        for c in m.get(&u32::from(port), 0).unwrap().iter() {
            total.merge(c);
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
        let r = XdpRun::new(frame)
            .ingress(ifindex)
            .repeat(repeat)
            .run_named(&self.ebpf, names::PROGRAM)
            .unwrap_or_else(|e| panic!("{e}"));
        (r.action, r.frame)
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
        names::BANS_V4,
        names::BANS_V6,
        names::DENY_V4,
        names::DENY_V6,
        names::SERVICES,
        names::SVC_PORTS,
        names::SVC_ALLOW_V4,
        names::SVC_ALLOW_V6,
        names::GUARD_CONFIG,
        names::GUARD_STATE,
        names::SESSIONS,
        names::GUARD_EVENTS,
        names::RELAY_LEGS,
        names::RELAY_COUNTERS,
        names::ROUTES,
        names::TX_PORTS,
        names::STATS,
        names::FRAG_VERDICTS,
    ] {
        assert!(
            env.pins.as_ref().unwrap().path.join(name).exists(),
            "{name} not pinned"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The fixture table
// ---------------------------------------------------------------------------------------------

/// What the frame must look like after the program.
enum Out {
    /// Untouched (every pass and drop).
    Same,
    /// Exactly these bytes; also checked to carry valid checksums.
    Frame(Vec<u8>),
}

type Hook = Box<dyn Fn(&mut Env)>;

struct Fixture {
    name: &'static str,
    input: Vec<u8>,
    ifindex: u32,
    repeat: u32,
    action: u32,
    output: Out,
    stat: Stat,
    setup: Option<Hook>,
    after: Option<Hook>,
}

fn fx(name: &'static str, input: Vec<u8>, action: u32, stat: Stat) -> Fixture {
    Fixture {
        name,
        input,
        ifindex: IF0,
        repeat: 1,
        action,
        output: Out::Same,
        stat,
        setup: None,
        after: None,
    }
}

impl Fixture {
    fn output(mut self, frame: Vec<u8>) -> Self {
        self.output = Out::Frame(frame);
        self
    }
    fn on(mut self, ifindex: u32) -> Self {
        self.ifindex = ifindex;
        self
    }
    fn repeat(mut self, n: u32) -> Self {
        self.repeat = n;
        self
    }
    fn setup(mut self, f: impl Fn(&mut Env) + 'static) -> Self {
        self.setup = Some(Box::new(f));
        self
    }
    fn after(mut self, f: impl Fn(&mut Env) + 'static) -> Self {
        self.after = Some(Box::new(f));
        self
    }
}

fn action_name(a: u32) -> &'static str {
    match a {
        0 => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        XDP_REDIRECT => "XDP_REDIRECT",
        _ => "?",
    }
}

fn run_fixtures(env: &mut Env, fixtures: Vec<Fixture>) {
    let mut failures = Vec::new();
    for f in &fixtures {
        if let Some(setup) = &f.setup {
            setup(env);
        }
        let before = env.stats();
        let (action, out) = env.run(&f.input, f.ifindex, f.repeat);
        let after = env.stats();
        let mut problems = Vec::new();
        if action != f.action {
            problems.push(format!(
                "action {} != expected {}",
                action_name(action),
                action_name(f.action)
            ));
        }
        match &f.output {
            Out::Same if out != f.input => problems.push(format!(
                "frame modified:\n   got {}\n  sent {}",
                hex(&out),
                hex(&f.input)
            )),
            Out::Frame(want) => {
                if &out != want {
                    problems.push(format!(
                        "output frame:\n   got {}\n  want {}",
                        hex(&out),
                        hex(want)
                    ));
                }
                assert_checksums_valid(&out, f.name);
            }
            Out::Same => {}
        }
        // Exactly one reason per packet: the expected one, plus `received`.
        for (i, s) in Stat::ALL.iter().enumerate() {
            let delta = after[i] - before[i];
            let want = if *s == Stat::Received || *s == f.stat {
                u64::from(f.repeat)
            } else {
                0
            };
            if delta != want {
                problems.push(format!(
                    "stat {} moved by {delta}, expected {want}",
                    s.name()
                ));
            }
        }
        if problems.is_empty()
            && let Some(check) = &f.after
        {
            check(env);
        }
        if !problems.is_empty() {
            failures.push(format!("{}:\n  {}", f.name, problems.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n")
    );
    eprintln!("{} fixtures passed", fixtures.len());
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// Services.
const SIP: u16 = 5060;
const SSH: u16 = 22;
const MGMT: u16 = 8443;
const OTHER_SVC: u16 = 2222;

fn base_guard() -> GuardConfig {
    GuardConfig {
        packets: Gcra::per_second(100_000, 1000),
        invites: Gcra::per_second(1000, 100),
        syns: Gcra::per_second(1000, 100),
        max_sessions: 0,
        event_interval_ns: 1_000_000_000,
    }
}

fn leg(port: u16, local: Ip, peer: Ip, peer_port: u16, partner: u16, flags: u32) -> Leg {
    Leg {
        local_addr: local.addr(),
        peer_addr: if flags & LEG_PEER_KNOWN != 0 {
            peer.addr()
        } else {
            Addr::UNSPECIFIED
        },
        session_id: u64::from(port),
        local_port: port,
        peer_port: if flags & LEG_PEER_KNOWN != 0 {
            peer_port
        } else {
            0
        },
        partner_port: partner,
        _pad: 0,
        flags,
        _pad2: 0,
        trust_addr: Addr::UNSPECIFIED,
        // The learning window stays open for every fixture but the one that closes it.
        learn_until_ns: u64::MAX,
    }
}

/// A host with no business in any call (a port sprayer).
const STRANGER4: [u8; 4] = [10, 0, 0, 66];
/// The public address a NATed peer's SIP came from (not the SDP's).
const SIP_SOURCE4: [u8; 4] = [10, 0, 0, 77];

const KNOWN: u32 = LEG_ACTIVE | LEG_PEER_KNOWN;

/// The map contents every fixture starts from; fixtures add to it in their setup hooks.
fn configure(env: &mut Env) {
    env.service(SIP, PROTO_UDP, 1, SVC_SIP);
    env.service(SIP, PROTO_TCP, 1, SVC_SIP);
    env.service(SSH, PROTO_TCP, 4, SVC_RESTRICTED);
    env.allow_v4(4, [192, 0, 2, 0], 24);
    env.allow_v6(4, v6("2001:db8:1::"), 48);
    env.service(MGMT, PROTO_TCP, 3, 0);
    env.service(OTHER_SVC, PROTO_UDP, 6, SVC_RESTRICTED);
    env.allow_v4(6, [198, 51, 100, 0], 24);
    env.deny_v4([10, 66, 0, 0], 16);
    env.deny_v6(v6("2001:db8:dead::"), 48);
    env.guard_config(base_guard());

    let (r, a, b) = (Ip::V4(RELAY4), Ip::V4(PEER_A4), Ip::V4(PEER_B4));
    // A plain call: RTP 30000<->30002, RTCP 30001<->30003.
    env.leg(leg(30000, r, a, 4000, 30002, KNOWN));
    env.leg(leg(30002, r, b, 5000, 30000, KNOWN));
    env.leg(leg(30001, r, a, 4001, 30003, KNOWN));
    env.leg(leg(30003, r, b, 5001, 30001, KNOWN));
    // IPv6.
    let (r6, a6, b6) = (Ip::V6(relay6()), Ip::V6(peer_a6()), Ip::V6(peer_b6()));
    env.leg(leg(31000, r6, a6, 4000, 31002, KNOWN));
    env.leg(leg(31002, r6, b6, 5000, 31000, KNOWN));
    // Egress on the other interface.
    env.leg(leg(32000, r, a, 4000, 32002, KNOWN));
    env.leg(leg(
        32002,
        Ip::V4(RELAY1_4),
        Ip::V4(FAR4),
        6000,
        32000,
        KNOWN,
    ));
    env.leg(leg(32100, r6, a6, 4000, 32102, KNOWN));
    env.leg(leg(
        32102,
        Ip::V6(v6("fd01::1")),
        Ip::V6(v6("fd01::2")),
        6000,
        32100,
        KNOWN,
    ));
    // A peer with no neighbour entry.
    env.leg(leg(33000, r, a, 4000, 33002, KNOWN));
    env.leg(leg(33002, r, Ip::V4(NO_NEIGH4), 5000, 33000, KNOWN));
    // Both peers on this host.
    env.leg(leg(34000, r, a, 4000, 34002, KNOWN));
    env.leg(leg(34002, Ip::V4(RELAY1_4), r, 7000, 34000, KNOWN));
    let lo = Ip::V4([127, 0, 0, 1]);
    env.leg(leg(35000, lo, lo, 9000, 35002, KNOWN));
    env.leg(leg(35002, lo, lo, 9002, 35000, KNOWN));
    // Latching with strict source; latching without. The SDP says a:4000; a NAT may change
    // the port.
    let strict_latch = KNOWN | LEG_LATCH | LEG_STRICT_SOURCE;
    env.leg(leg(36000, r, a, 4000, 36002, strict_latch));
    env.leg(leg(36002, r, b, 5000, 36000, KNOWN));
    env.leg(leg(37000, r, a, 4000, 37002, KNOWN | LEG_LATCH));
    env.leg(leg(37002, r, b, 5000, 37000, KNOWN));
    // Latching from the SIP source address (NAT: the SDP names a private address).
    let mut nat = leg(36100, r, a, 4000, 36102, strict_latch | LEG_TRUST_KNOWN);
    nat.trust_addr = Addr::from_v4(SIP_SOURCE4);
    env.leg(nat);
    env.leg(leg(36102, r, b, 5000, 36100, KNOWN));
    // The learning window has closed.
    let mut late = leg(36200, r, a, 4000, 36202, strict_latch);
    late.learn_until_ns = 1;
    env.leg(late);
    env.leg(leg(36202, r, b, 5000, 36200, KNOWN));
    // Strict source against the address from SDP (no latching).
    env.leg(leg(38000, r, a, 4000, 38002, KNOWN | LEG_STRICT_SOURCE));
    env.leg(leg(38002, r, b, 5000, 38000, KNOWN));
    // Legs the kernel must leave to userspace.
    env.leg(leg(39000, r, a, 4000, 39002, LEG_PEER_KNOWN)); // not active
    env.leg(leg(39002, r, b, 5000, 39000, KNOWN));
    env.leg(leg(39100, r, a, 4000, 39102, KNOWN));
    env.leg(leg(39102, r, b, 5000, 39100, LEG_ACTIVE)); // partner's peer unknown
    env.leg(leg(39200, r, a, 4000, 39202, KNOWN));
    env.leg(leg(39202, r6, b6, 5000, 39200, KNOWN)); // v4 in, v6 out
    env.leg(leg(39300, r, a, 4000, 39999, KNOWN)); // partner missing
}

const RTP: &[u8] = b"\x80\x00\x00\x01\x00\x00\x00\xa0\x12\x34\x56\x78rtp-payload!";

fn udp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Frame {
    Frame::udp(Ip::V4(src), sport, Ip::V4(dst), dport, payload)
}

fn udp6(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16, payload: &[u8]) -> Frame {
    Frame::udp(Ip::V6(src), sport, Ip::V6(dst), dport, payload)
}

fn sip(method: &str) -> Vec<u8> {
    format!("{method} sip:alice@example.net SIP/2.0\r\nVia: SIP/2.0/UDP host\r\n\r\n").into_bytes()
}

fn with(mut frame: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
    frame[at..at + bytes.len()].copy_from_slice(bytes);
    frame
}

/// What leaves the relay for B: from the partner leg's port to B's port, TTL - 1, B's MAC.
fn to_b(sport: u16, dport: u16) -> Frame {
    udp4(RELAY4, sport, PEER_B4, dport, RTP)
        .ttl(63)
        .macs(RELAY_MAC, PEER_B_MAC)
}

/// The table, in order: the fixtures share one program and its maps, so each sees what the
/// ones before it left.
fn fixtures() -> Vec<Fixture> {
    let now = now_ns();
    [
        parsing_fixtures(),
        parsing_ipv6_and_other_protocols(),
        ban_and_deny_fixtures(now),
        service_acl_fixtures(),
        sip_packet_rate_fixtures(),
        sip_invite_and_session_fixtures(),
        sip_trusted_and_tcp_fixtures(),
        relay_forwarding_fixtures(),
        relay_egress_fixtures(),
        latching_fixtures(),
        relay_to_userspace_fixtures(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// 1. Parsing: Ethernet, VLAN, IPv4, UDP and TCP headers, malformed or cut short.
fn parsing_fixtures() -> Vec<Fixture> {
    use Stat::*;
    let (relay, a) = (RELAY4, PEER_A4);
    let plain = udp4(a, 4000, relay, 30000, RTP);
    vec![
        fx("ARP is not IP", arp(None), XDP_PASS, PassNotIp),
        fx("VLAN-tagged ARP", arp(Some(100)), XDP_PASS, PassNotIp),
        fx(
            "two VLAN tags are parsed: garbage behind them is malformed",
            with(arp(Some(100)), 16, &ETH_P_8021Q.to_be_bytes()),
            XDP_DROP,
            DropMalformed,
        ),
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header, so the shortest runt
        // a fixture can send is the bare header.
        fx(
            "runt: Ethernet header alone, IPv4 ethertype",
            plain.build()[..14].to_vec(),
            XDP_DROP,
            DropMalformed,
        ),
        fx(
            "runt: Ethernet header alone, IPv6 ethertype",
            udp6(peer_a6(), 4000, relay6(), 31000, RTP).build()[..14].to_vec(),
            XDP_DROP,
            DropMalformed,
        ),
        fx(
            "VLAN tag cut short",
            plain.clone().vlan(7).build()[..16].to_vec(),
            XDP_DROP,
            DropMalformed,
        ),
        fx(
            "IPv4 header cut short",
            plain.build()[..14 + 12].to_vec(),
            XDP_DROP,
            DropMalformed,
        ),
        fx(
            "IPv4 IHL 4",
            with(plain.build(), 14, &[0x44]),
            XDP_DROP,
            DropMalformed,
        ),
        fx(
            "IPv4 version 6 in an IPv4 frame",
            with(plain.build(), 14, &[0x65]),
            XDP_DROP,
            DropMalformed,
        ),
        fx(
            "IPv4 total length beyond the frame",
            with(
                plain.build(),
                16,
                &(20 + 8 + RTP.len() as u16 + 1).to_be_bytes(),
            ),
            XDP_DROP,
            DropMalformed,
        ),
        fx(
            "IPv4 total length shorter than IHL",
            with(plain.build(), 16, &19u16.to_be_bytes()),
            XDP_DROP,
            DropMalformed,
        ),
        fx(
            "UDP length beyond the IP payload",
            with(
                plain.build(),
                34 + 4,
                &(8 + RTP.len() as u16 + 1).to_be_bytes(),
            ),
            XDP_DROP,
            DropMalformed,
        ),
        fx(
            "UDP length below the header",
            with(plain.build(), 34 + 4, &7u16.to_be_bytes()),
            XDP_DROP,
            DropMalformed,
        ),
        fx(
            "UDP header truncated by the IP length",
            Frame::raw(Ip::V4(a), Ip::V4(relay), 17, &[0x0f, 0xa0, 0x75, 0x30]).build(),
            XDP_DROP,
            DropMalformed,
        ),
        fx(
            "TCP data offset 4",
            with(
                Frame::tcp(Ip::V4(a), 1234, Ip::V4(relay), MGMT, b"x").build(),
                34 + 12,
                &[0x40],
            ),
            XDP_DROP,
            DropMalformed,
        ),
    ]
}

/// 1. Parsing, continued: IPv6, padding, IPv4 options, ICMP.
fn parsing_ipv6_and_other_protocols() -> Vec<Fixture> {
    use Stat::*;
    let (relay, a) = (RELAY4, PEER_A4);
    let plain = udp4(a, 4000, relay, 30000, RTP);
    vec![
        fx(
            "IPv6 payload length beyond the frame",
            with(
                udp6(peer_a6(), 4000, relay6(), 31000, RTP).build(),
                14 + 4,
                &(8 + RTP.len() as u16 + 1).to_be_bytes(),
            ),
            XDP_DROP,
            DropMalformed,
        ),
        fx(
            "IPv6 header cut short",
            udp6(peer_a6(), 4000, relay6(), 31000, RTP).build()[..14 + 39].to_vec(),
            XDP_DROP,
            DropMalformed,
        ),
        fx(
            "Ethernet padding after the IP packet is fine",
            {
                let mut f = udp4(a, 1234, relay, 9999, b"x").build();
                f.extend([0; 12]);
                f
            },
            XDP_PASS,
            PassOther,
        ),
        fx(
            "IPv4 options shift the UDP header",
            {
                let mut f = udp4(a, 1234, relay, 9999, b"x");
                f.ip_options = vec![1, 1, 1, 0]; // NOP NOP NOP EOL
                f.build()
            },
            XDP_PASS,
            PassOther,
        ),
        fx(
            "ICMP is not UDP/TCP",
            Frame::raw(Ip::V4(a), Ip::V4(relay), 1, &[8, 0, 0xf7, 0xff, 0, 0, 0, 0]).build(),
            XDP_PASS,
            PassNotUdpTcp,
        ),
        fx(
            "ICMPv6 is not UDP/TCP",
            Frame::raw(Ip::V6(peer_a6()), Ip::V6(relay6()), 58, &[128, 0, 0, 0]).build(),
            XDP_PASS,
            PassNotUdpTcp,
        ),
        fx(
            "IPv6 hop-by-hop header to a relay port: walked, left to the stack",
            {
                let mut f = udp6(peer_a6(), 4000, relay6(), 31000, RTP);
                f.v6_ext = Some(0);
                f.build()
            },
            XDP_PASS,
            PassOther,
        ),
        fx(
            "IPv4 first fragment (MF) to a relay port: judged, left to the stack",
            {
                let mut f = plain.clone();
                f.frag = 0x2000;
                f.build()
            },
            XDP_PASS,
            PassOther,
        ),
        fx(
            "IPv4 later fragment of that datagram follows its pass",
            {
                let mut f = plain.clone();
                f.frag = 0x0010;
                f.build()
            },
            XDP_PASS,
            PassFragment,
        ),
        fx(
            "IPv6 first fragment to a relay port: judged, left to the stack",
            {
                let mut f = udp6(peer_a6(), 4000, relay6(), 31000, RTP);
                f.v6_ext = Some(44);
                f.build()
            },
            XDP_PASS,
            PassOther,
        ),
    ]
}

/// 2. Bans and 3. static deny.
fn ban_and_deny_fixtures(now: u64) -> Vec<Fixture> {
    use Stat::*;
    let relay = RELAY4;
    vec![
        fx(
            "live ban drops, even SIP",
            udp4([203, 0, 113, 7], 5060, relay, SIP, &sip("OPTIONS")).build(),
            XDP_DROP,
            DropBanned,
        )
        .setup(move |e| e.ban(Ip::V4([203, 0, 113, 7]), now + HOUR)),
        fx(
            "live ban drops VLAN-tagged frames",
            udp4([203, 0, 113, 7], 5060, relay, 9999, b"x")
                .vlan(42)
                .build(),
            XDP_DROP,
            DropBanned,
        ),
        fx(
            "live ban drops fragments too",
            {
                let mut f = udp4([203, 0, 113, 7], 5060, relay, 9999, b"x");
                f.frag = 0x0010;
                f.build()
            },
            XDP_DROP,
            DropBanned,
        ),
        fx(
            "expired ban is ignored",
            udp4([203, 0, 113, 8], 5060, relay, 9999, b"x").build(),
            XDP_PASS,
            PassOther,
        )
        .setup(|e| e.ban(Ip::V4([203, 0, 113, 8]), 1)),
        fx(
            "the same ban once it has run out",
            udp4([203, 0, 113, 7], 5060, relay, 9999, b"x").build(),
            XDP_PASS,
            PassOther,
        )
        // A second ago: the kernel judges expiry by the coarse clock, up to a tick behind.
        .setup(|e| e.ban(Ip::V4([203, 0, 113, 7]), now_ns() - 1_000_000_000)),
        fx(
            "permanent IPv6 ban",
            udp6(v6("2001:db8:bad::1"), 5060, relay6(), SIP, &sip("OPTIONS")).build(),
            XDP_DROP,
            DropBanned,
        )
        .setup(|e| e.ban(Ip::V6(v6("2001:db8:bad::1")), BanEntry::PERMANENT)),
        // --- 3. static deny ---------------------------------------------------------------
        fx(
            "IPv4 source in a denied /16",
            udp4([10, 66, 3, 4], 5060, relay, SIP, &sip("OPTIONS")).build(),
            XDP_DROP,
            DropDenied,
        ),
        fx(
            "IPv4 source next to the denied /16",
            udp4([10, 67, 0, 1], 1234, relay, 9999, b"x").build(),
            XDP_PASS,
            PassOther,
        ),
        fx(
            "IPv6 source in a denied /48",
            Frame::tcp(
                Ip::V6(v6("2001:db8:dead:1::9")),
                1234,
                Ip::V6(relay6()),
                MGMT,
                b"x",
            )
            .build(),
            XDP_DROP,
            DropDenied,
        ),
    ]
}

/// 4. The service ACL.
fn service_acl_fixtures() -> Vec<Fixture> {
    use Stat::*;
    let relay = RELAY4;
    vec![
        fx(
            "restricted SSH from outside its allow list",
            Frame::tcp(Ip::V4([198, 18, 0, 1]), 40000, Ip::V4(relay), SSH, b"").build(),
            XDP_DROP,
            DropServiceAcl,
        ),
        fx(
            "restricted SSH from its allow list",
            Frame::tcp(Ip::V4([192, 0, 2, 99]), 40000, Ip::V4(relay), SSH, b"").build(),
            XDP_PASS,
            PassService,
        ),
        fx(
            "another service's allow list does not open SSH",
            Frame::tcp(Ip::V4([198, 51, 100, 5]), 40000, Ip::V4(relay), SSH, b"").build(),
            XDP_DROP,
            DropServiceAcl,
        ),
        fx(
            "restricted UDP service from its allow list",
            udp4([198, 51, 100, 5], 40000, relay, OTHER_SVC, b"x").build(),
            XDP_PASS,
            PassService,
        ),
        fx(
            "restricted SSH over IPv6 from its allow list",
            Frame::tcp(
                Ip::V6(v6("2001:db8:1:2::3")),
                40000,
                Ip::V6(relay6()),
                SSH,
                b"",
            )
            .build(),
            XDP_PASS,
            PassService,
        ),
        fx(
            "restricted SSH over IPv6 from elsewhere",
            Frame::tcp(
                Ip::V6(v6("2001:db8:2::3")),
                40000,
                Ip::V6(relay6()),
                SSH,
                b"",
            )
            .build(),
            XDP_DROP,
            DropServiceAcl,
        ),
        fx(
            "unrestricted management API",
            Frame::tcp(
                Ip::V4([198, 18, 0, 1]),
                40000,
                Ip::V4(relay),
                MGMT,
                b"GET /",
            )
            .build(),
            XDP_PASS,
            PassService,
        ),
        fx(
            "UDP to the TCP-only management port is no service",
            udp4([198, 18, 0, 1], 40000, relay, MGMT, b"x").build(),
            XDP_PASS,
            PassOther,
        ),
    ]
}

/// 5. SIP guard: the per-source packet rate.
fn sip_packet_rate_fixtures() -> Vec<Fixture> {
    use Stat::*;
    let relay = RELAY4;
    vec![
        fx(
            "SIP OPTIONS passes the guard",
            udp4([192, 0, 2, 10], 5060, relay, SIP, &sip("OPTIONS")).build(),
            XDP_PASS,
            PassSip,
        ),
        fx(
            "SIP over VLAN",
            udp4([192, 0, 2, 10], 5060, relay, SIP, &sip("OPTIONS"))
                .vlan(3)
                .build(),
            XDP_PASS,
            PassSip,
        ),
        fx(
            "SIP over IPv6",
            udp6(v6("2001:db8:1::5"), 5060, relay6(), SIP, &sip("INVITE")).build(),
            XDP_PASS,
            PassSip,
        ),
        fx(
            "packet bucket empty (TAT an hour ahead)",
            udp4([192, 0, 2, 20], 5060, relay, SIP, &sip("REGISTER")).build(),
            XDP_DROP,
            DropSipPacketRate,
        )
        .setup(move |e| {
            e.set_guard_state(
                Ip::V4([192, 0, 2, 20]),
                GuardState {
                    packets_tat_ns: now_ns() + HOUR,
                    ..Default::default()
                },
            )
        }),
        fx(
            "packet bucket refilled (TAT in the past)",
            udp4([192, 0, 2, 20], 5060, relay, SIP, &sip("REGISTER")).build(),
            XDP_PASS,
            PassSip,
        )
        .setup(|e| {
            let mut st = e.guard_state(Ip::V4([192, 0, 2, 20])).unwrap();
            st.packets_tat_ns = 0;
            e.set_guard_state(Ip::V4([192, 0, 2, 20]), st);
        }),
        fx(
            "burst of 5 at 1/s with burst 5: all pass",
            udp4([192, 0, 2, 21], 5060, relay, SIP, &sip("REGISTER")).build(),
            XDP_PASS,
            PassSip,
        )
        .repeat(5)
        .setup(|e| {
            e.guard_config(GuardConfig {
                packets: Gcra::per_second(1, 5),
                ..base_guard()
            })
        }),
        fx(
            "6th packet of the burst is over",
            udp4([192, 0, 2, 21], 5060, relay, SIP, &sip("REGISTER")).build(),
            XDP_DROP,
            DropSipPacketRate,
        ),
        fx(
            "one interval later exactly one more passes",
            udp4([192, 0, 2, 21], 5060, relay, SIP, &sip("REGISTER")).build(),
            XDP_PASS,
            PassSip,
        )
        .setup(|e| {
            // Winds the bucket's clock back one interval instead of sleeping a second.
            let mut st = e.guard_state(Ip::V4([192, 0, 2, 21])).unwrap();
            st.packets_tat_ns -= 1_000_000_000;
            e.set_guard_state(Ip::V4([192, 0, 2, 21]), st);
        })
        .after(|e| {
            let (action, _) = e.run(
                &udp4([192, 0, 2, 21], 5060, RELAY4, SIP, &sip("REGISTER")).build(),
                IF0,
                1,
            );
            assert_eq!(action, XDP_DROP, "bucket empty again");
            e.guard_config(base_guard());
        }),
    ]
}

/// 5. SIP guard, continued: INVITE calls per second and the session cap.
fn sip_invite_and_session_fixtures() -> Vec<Fixture> {
    use Stat::*;
    let relay = RELAY4;
    vec![
        fx(
            "2 INVITEs within the burst of 2",
            udp4([192, 0, 2, 30], 5060, relay, SIP, &sip("INVITE")).build(),
            XDP_PASS,
            PassSip,
        )
        .repeat(2)
        .setup(|e| {
            e.guard_config(GuardConfig {
                invites: Gcra::per_second(1, 2),
                ..base_guard()
            })
        }),
        fx(
            "3rd INVITE is over the calls-per-second limit",
            udp4([192, 0, 2, 30], 5060, relay, SIP, &sip("INVITE")).build(),
            XDP_DROP,
            DropSipInviteRate,
        ),
        fx(
            "other requests from that source still pass",
            udp4([192, 0, 2, 30], 5060, relay, SIP, &sip("BYE")).build(),
            XDP_PASS,
            PassSip,
        ),
        fx(
            "CRLF before an INVITE does not hide it from the calls-per-second limit",
            udp4(
                [192, 0, 2, 30],
                5060,
                relay,
                SIP,
                &[b"\r\n\r\n".as_slice(), &sip("INVITE")].concat(),
            )
            .build(),
            XDP_DROP,
            DropSipInviteRate,
        ),
        fx(
            "nor does the longest CR/LF run a SIP parser here accepts",
            udp4(
                [192, 0, 2, 30],
                5060,
                relay,
                SIP,
                &[vec![b'\n'; MAX_LEADING_CRLF], sip("INVITE")].concat(),
            )
            .build(),
            XDP_DROP,
            DropSipInviteRate,
        ),
        fx(
            "'INVITEX' is not an INVITE",
            udp4(
                [192, 0, 2, 30],
                5060,
                relay,
                SIP,
                b"INVITEX sip:x SIP/2.0\r\n",
            )
            .build(),
            XDP_PASS,
            PassSip,
        )
        .after(|e| e.guard_config(base_guard())),
        fx(
            "INVITE at the default session cap",
            udp4([192, 0, 2, 40], 5060, relay, SIP, &sip("INVITE")).build(),
            XDP_DROP,
            DropSipSessionCap,
        )
        .setup(|e| {
            e.guard_config(GuardConfig {
                max_sessions: 2,
                ..base_guard()
            });
            e.sessions(Ip::V4([192, 0, 2, 40]), 2, 0);
        }),
        fx(
            "ACK from a source at its cap passes",
            udp4([192, 0, 2, 40], 5060, relay, SIP, &sip("ACK")).build(),
            XDP_PASS,
            PassSip,
        ),
        fx(
            "INVITE below the default cap",
            udp4([192, 0, 2, 41], 5060, relay, SIP, &sip("INVITE")).build(),
            XDP_PASS,
            PassSip,
        )
        .setup(|e| e.sessions(Ip::V4([192, 0, 2, 41]), 1, 0)),
        fx(
            "a source's own higher limit overrides the default",
            udp4([192, 0, 2, 42], 5060, relay, SIP, &sip("INVITE")).build(),
            XDP_PASS,
            PassSip,
        )
        .setup(|e| e.sessions(Ip::V4([192, 0, 2, 42]), 2, 5)),
        fx(
            "a source's own lower limit applies with no default",
            udp6(v6("2001:db8:1::43"), 5060, relay6(), SIP, &sip("INVITE")).build(),
            XDP_DROP,
            DropSipSessionCap,
        )
        .setup(|e| {
            e.guard_config(base_guard());
            e.sessions(Ip::V6(v6("2001:db8:1::43")), 1, 1);
        }),
    ]
}

/// 5. SIP guard, continued: trusted sources, SIP over TCP.
fn sip_trusted_and_tcp_fixtures() -> Vec<Fixture> {
    use Stat::*;
    let relay = RELAY4;
    vec![
        fx(
            "a trusted source (upstream, IP-auth carrier) skips the guard: over its rate",
            udp4([192, 0, 2, 44], 5060, relay, SIP, &sip("INVITE")).build(),
            XDP_PASS,
            PassSip,
        )
        .setup(|e| {
            e.guard_config(GuardConfig {
                max_sessions: 1,
                ..base_guard()
            });
            e.sessions(Ip::V4([192, 0, 2, 44]), 7, relay_common::guard::TRUSTED);
            e.set_guard_state(
                Ip::V4([192, 0, 2, 44]),
                GuardState {
                    packets_tat_ns: now_ns() + HOUR,
                    invites_tat_ns: now_ns() + HOUR,
                    ..Default::default()
                },
            );
        })
        .after(|e| e.guard_config(base_guard())),
        fx(
            "SIP over TCP: packet rate only, no INVITE/session check",
            Frame::tcp(
                Ip::V4([192, 0, 2, 50]),
                40000,
                Ip::V4(relay),
                SIP,
                &sip("INVITE"),
            )
            .build(),
            XDP_PASS,
            PassSip,
        )
        .setup(|e| e.sessions(Ip::V4([192, 0, 2, 50]), 9, 1)),
        fx(
            "SIP over TCP over its packet rate",
            Frame::tcp(Ip::V4([192, 0, 2, 51]), 40000, Ip::V4(relay), SIP, b"").build(),
            XDP_DROP,
            DropSipPacketRate,
        )
        .setup(|e| {
            e.set_guard_state(
                Ip::V4([192, 0, 2, 51]),
                GuardState {
                    packets_tat_ns: now_ns() + HOUR,
                    ..Default::default()
                },
            )
        }),
    ]
}

/// 6. Media relay: forwarding both ways, RTCP, checksums, IPv6.
fn relay_forwarding_fixtures() -> Vec<Fixture> {
    use Stat::*;
    let (relay, a, b) = (RELAY4, PEER_A4, PEER_B4);
    let plain = udp4(a, 4000, relay, 30000, RTP);
    vec![
        fx(
            "A -> relay -> B: XDP_TX, rewritten",
            plain.build(),
            XDP_TX,
            RelayTx,
        )
        .output(to_b(30002, 5000).build())
        .after(|e| {
            let c = e.counters(30000);
            assert_eq!((c.packets, c.bytes), (1, RTP.len() as u64), "{c:?}");
            assert!(c.last_seen_ns > 0 && c.last_seen_ns <= now_ns());
            assert_eq!(e.counters(30002).packets, 0, "counted on the receiving leg");
        }),
        fx(
            "B -> relay -> A: the reverse direction",
            udp4(b, 5000, relay, 30002, RTP).build(),
            XDP_TX,
            RelayTx,
        )
        .output(
            udp4(relay, 30000, a, 4000, RTP)
                .ttl(63)
                .macs(RELAY_MAC, PEER_MAC)
                .build(),
        ),
        fx(
            "RTCP leg (port + 1) relays like any other",
            udp4(a, 4001, relay, 30001, b"\x81\xc8\x00\x06rtcp-sr-bytes...").build(),
            XDP_TX,
            RelayTx,
        )
        .output(
            udp4(relay, 30003, b, 5001, b"\x81\xc8\x00\x06rtcp-sr-bytes...")
                .ttl(63)
                .macs(RELAY_MAC, PEER_B_MAC)
                .build(),
        ),
        fx(
            "zero (absent) IPv4 UDP checksum stays zero",
            plain.clone().no_csum().build(),
            XDP_TX,
            RelayTx,
        )
        .output(to_b(30002, 5000).no_csum().build()),
        fx(
            "odd-length payload",
            udp4(a, 4000, relay, 30000, b"odd").build(),
            XDP_TX,
            RelayTx,
        )
        .output(
            udp4(relay, 30002, b, 5000, b"odd")
                .ttl(63)
                .macs(RELAY_MAC, PEER_B_MAC)
                .build(),
        ),
        fx(
            "IPv6 A -> relay -> B: XDP_TX, UDP checksum still valid",
            udp6(peer_a6(), 4000, relay6(), 31000, RTP).build(),
            XDP_TX,
            RelayTx,
        )
        .output(
            udp6(relay6(), 31002, peer_b6(), 5000, RTP)
                .ttl(63)
                .macs(RELAY_MAC, PEER_B_MAC)
                .build(),
        ),
    ]
}

/// 6. Media relay, continued: egress interface, next hop, local peers.
fn relay_egress_fixtures() -> Vec<Fixture> {
    use Stat::*;
    let (relay, a) = (RELAY4, PEER_A4);
    vec![
        fx(
            "egress interface not in TX_PORTS: userspace, untouched",
            udp4(a, 4000, relay, 32000, RTP).build(),
            XDP_PASS,
            RelayToUserspace,
        ),
        fx(
            "egress on the other interface: XDP_REDIRECT",
            udp4(a, 4000, relay, 32000, RTP).build(),
            XDP_REDIRECT,
            RelayRedirect,
        )
        .setup(|e| e.tx_port(IF1))
        .output(
            udp4(RELAY1_4, 32002, FAR4, 6000, RTP)
                .ttl(63)
                .macs(RELAY1_MAC, FAR_MAC)
                .build(),
        ),
        fx(
            "IPv6 egress on the other interface: XDP_REDIRECT",
            udp6(peer_a6(), 4000, relay6(), 32100, RTP).build(),
            XDP_REDIRECT,
            RelayRedirect,
        )
        .output(
            udp6(v6("fd01::1"), 32102, v6("fd01::2"), 6000, RTP)
                .ttl(63)
                .macs(RELAY1_MAC, FAR_MAC)
                .build(),
        ),
        fx(
            "next hop without a neighbour entry: userspace, untouched",
            udp4(a, 4000, relay, 33000, RTP).build(),
            XDP_PASS,
            RelayToUserspace,
        ),
        fx(
            "peer on this host: rewritten and passed to the stack",
            udp4(a, 4000, relay, 34000, RTP).build(),
            XDP_PASS,
            RelayLocal,
        )
        // Addressed to us already: MACs unchanged.
        .output(udp4(RELAY1_4, 34002, relay, 7000, RTP).ttl(63).build()),
        fx(
            "both peers on lo",
            udp4([127, 0, 0, 1], 9000, [127, 0, 0, 1], 35000, RTP)
                .macs([0; 6], [0; 6])
                .build(),
            XDP_PASS,
            RelayLocal,
        )
        .on(LO)
        .output(
            udp4([127, 0, 0, 1], 35002, [127, 0, 0, 1], 9002, RTP)
                .ttl(63)
                .macs([0; 6], [0; 6])
                .build(),
        ),
    ]
}

/// 6. Media relay, continued: latching and strict source.
fn latching_fixtures() -> Vec<Fixture> {
    use Stat::*;
    let (relay, a, b) = (RELAY4, PEER_A4, PEER_B4);
    vec![
        fx(
            "before latching: a stranger's packet is dropped and not learnt (port spray)",
            udp4(STRANGER4, 40000, relay, 36000, RTP).build(),
            XDP_DROP,
            DropStrictSource,
        )
        .after(|e| {
            let l = e.get_leg(36000);
            assert!(l.flags & LEG_LATCHED == 0, "{l:?}");
            assert_eq!((l.peer_addr, l.peer_port), (Addr::from_v4(PEER_A4), 4000));
        }),
        fx(
            "first packet latches the NATed source",
            udp4(a, 40000, relay, 36000, RTP).build(),
            XDP_TX,
            RelayTx,
        )
        .output(to_b(36002, 5000).build())
        .after(|e| {
            let l = e.get_leg(36000);
            assert_eq!(l.peer_addr, Addr::from_v4(PEER_A4));
            assert_eq!(l.peer_port, 40000);
            assert_eq!(
                l.flags,
                LEG_ACTIVE | LEG_LATCH | LEG_STRICT_SOURCE | LEG_LATCHED | LEG_PEER_KNOWN
            );
        }),
        fx(
            "strict source: same host, other port",
            udp4(a, 40001, relay, 36000, RTP).build(),
            XDP_DROP,
            DropStrictSource,
        )
        .after(|e| {
            let c = e.counters(36000);
            // The stranger's packet before latching, and this one.
            assert_eq!((c.packets, c.strict_drops), (1, 2), "{c:?}");
            assert_eq!(e.get_leg(36000).peer_port, 40000, "no re-latch");
        }),
        fx(
            "strict source: other host (RTP bleed)",
            udp4(b, 40000, relay, 36000, RTP).build(),
            XDP_DROP,
            DropStrictSource,
        ),
        fx(
            "latched peer keeps flowing",
            udp4(a, 40000, relay, 36000, RTP).build(),
            XDP_TX,
            RelayTx,
        )
        .output(to_b(36002, 5000).build()),
        fx(
            "reverse direction goes to the latched address",
            udp4(b, 5000, relay, 36002, RTP).build(),
            XDP_TX,
            RelayTx,
        )
        .output(
            udp4(relay, 36000, a, 40000, RTP)
                .ttl(63)
                .macs(RELAY_MAC, PEER_MAC)
                .build(),
        ),
        fx(
            "not strict, before latching: a stranger is relayed but not learnt",
            udp4(STRANGER4, 42000, relay, 37000, RTP).build(),
            XDP_TX,
            RelayTx,
        )
        .output(to_b(37002, 5000).build())
        .after(|e| {
            let l = e.get_leg(37000);
            assert!(l.flags & LEG_LATCHED == 0, "{l:?}");
            assert_eq!(l.peer_port, 4000);
        }),
        fx(
            "latching without strict source",
            udp4(a, 41000, relay, 37000, RTP).build(),
            XDP_TX,
            RelayTx,
        )
        .output(to_b(37002, 5000).build()),
        fx(
            "not strict: another source is relayed, and does not re-latch",
            udp4(b, 42000, relay, 37000, RTP).build(),
            XDP_TX,
            RelayTx,
        )
        .output(to_b(37002, 5000).build())
        .after(|e| assert_eq!(e.get_leg(37000).peer_port, 41000)),
        fx(
            "the SIP source address is learnt, on any port",
            udp4(SIP_SOURCE4, 5555, relay, 36100, RTP).build(),
            XDP_TX,
            RelayTx,
        )
        .output(to_b(36102, 5000).build())
        .after(|e| {
            let l = e.get_leg(36100);
            assert_eq!(
                (l.peer_addr, l.peer_port),
                (Addr::from_v4(SIP_SOURCE4), 5555)
            );
            assert!(l.flags & LEG_LATCHED != 0);
        }),
        fx(
            "after learning the SIP source, the SDP address is a stranger",
            udp4(a, 4000, relay, 36100, RTP).build(),
            XDP_DROP,
            DropStrictSource,
        ),
        fx(
            "window closed: the SDP address is relayed but not learnt",
            udp4(a, 40000, relay, 36200, RTP).build(),
            XDP_TX,
            RelayTx,
        )
        .output(to_b(36202, 5000).build())
        .after(|e| {
            let l = e.get_leg(36200);
            assert!(l.flags & LEG_LATCHED == 0, "{l:?}");
            assert_eq!(l.peer_port, 4000);
        }),
        fx(
            "window closed: a stranger is dropped",
            udp4(STRANGER4, 40000, relay, 36200, RTP).build(),
            XDP_DROP,
            DropStrictSource,
        ),
        fx(
            "strict source against the SDP address: wrong port",
            udp4(a, 4999, relay, 38000, RTP).build(),
            XDP_DROP,
            DropStrictSource,
        ),
        fx(
            "strict source against the SDP address: right source",
            udp4(a, 4000, relay, 38000, RTP).build(),
            XDP_TX,
            RelayTx,
        )
        .output(to_b(38002, 5000).build()),
    ]
}

/// 6. Media relay, continued: what goes to userspace, and the counters.
fn relay_to_userspace_fixtures() -> Vec<Fixture> {
    use Stat::*;
    let (relay, a, b) = (RELAY4, PEER_A4, PEER_B4);
    let plain = udp4(a, 4000, relay, 30000, RTP);
    vec![
        fx(
            "inactive leg: userspace",
            udp4(a, 4000, relay, 39000, RTP).build(),
            XDP_PASS,
            RelayToUserspace,
        ),
        fx(
            "relay port on another local address: userspace",
            udp4(a, 4000, [10, 0, 0, 50], 30000, RTP).build(),
            XDP_PASS,
            RelayToUserspace,
        ),
        fx(
            "partner's peer not known yet: userspace",
            udp4(a, 4000, relay, 39100, RTP).build(),
            XDP_PASS,
            RelayToUserspace,
        ),
        fx(
            "IPv4 in, IPv6 out: userspace bridges families",
            udp4(a, 4000, relay, 39200, RTP).build(),
            XDP_PASS,
            RelayToUserspace,
        ),
        fx(
            "partner leg missing: userspace",
            udp4(a, 4000, relay, 39300, RTP).build(),
            XDP_PASS,
            RelayToUserspace,
        ),
        fx(
            "TTL 1 would expire: userspace re-originates it",
            plain.clone().ttl(1).build(),
            XDP_PASS,
            RelayToUserspace,
        ),
        fx(
            "a relay port that is also a restricted service: its ACL first (the port's bit)",
            plain.build(),
            XDP_DROP,
            DropServiceAcl,
        )
        .setup(|e| e.service(30000, PROTO_UDP, 6, SVC_RESTRICTED))
        .after(|e| {
            // Gone again, bit and entry, for the fixtures after this one.
            e.hash::<ServiceKey, ServiceEntry>(names::SERVICES)
                .remove(&ServiceKey::new(30000, PROTO_UDP))
                .unwrap();
            let (word, bit) = svc_port_bit(30000);
            let mut ports: Array<_, u64> = Array::try_from(e.map(names::SVC_PORTS)).unwrap();
            let old = ports.get(&word, 0).unwrap();
            ports.set(word, old & !bit, 0).unwrap();
        }),
        fx(
            "VLAN-tagged media: userspace",
            plain.clone().vlan(5).build(),
            XDP_PASS,
            RelayToUserspace,
        )
        .after(|e| assert!(e.counters(30000).last_seen_ns > 0)),
        fx(
            "a strict-source drop does not refresh last_seen (no keep-alive by spraying)",
            udp4(b, 40000, relay, 38000, RTP).build(),
            XDP_DROP,
            DropStrictSource,
        )
        .setup(|e| {
            let mut a: PerCpuArray<_, LegCounters> =
                PerCpuArray::try_from(e.map(names::RELAY_COUNTERS)).unwrap();
            let cpus = aya::util::nr_cpus().unwrap();
            let zeros = aya::maps::PerCpuValues::try_from(vec![LegCounters::default(); cpus]);
            a.set(38000, zeros.unwrap(), 0).unwrap();
        })
        .after(|e| assert_eq!(e.counters(38000).last_seen_ns, 0)),
        fx(
            "UDP to no relay port and no service",
            udp4(a, 4000, relay, 29999, RTP).build(),
            XDP_PASS,
            PassOther,
        ),
        fx(
            "relay fixtures leave the first leg's counters consistent",
            plain.build(),
            XDP_TX,
            RelayTx,
        )
        .output(to_b(30002, 5000).build())
        .after(|e| {
            // Forwarded on 30000 so far: the first fixture, the zero-checksum one, the 3-byte
            // one and this; passes to userspace (TTL 1, VLAN) are not counted as forwarded.
            let c = e.counters(30000);
            assert_eq!((c.packets, c.bytes), (4, 3 * RTP.len() as u64 + 3), "{c:?}");
        }),
    ]
}

#[test]
fn fixture_table() {
    tests::require_privileged!();
    let ns = make_netns();
    ns.enter(|| {
        let mut env = Env::new("table");
        configure(&mut env);
        run_fixtures(&mut env, fixtures());
    });
}

#[test]
fn guard_events_are_sampled_per_source() {
    tests::require_privileged!();
    let ns = make_netns();
    ns.enter(|| {
        let mut env = Env::new("events");
        configure(&mut env);
        let src = Ip::V4([192, 0, 2, 60]);
        let flood = udp4([192, 0, 2, 60], 5060, RELAY4, SIP, &sip("REGISTER")).build();
        let throttled = |e: &mut Env| {
            let mut st = e.guard_state(src).unwrap_or_default();
            st.packets_tat_ns = now_ns() + HOUR;
            e.set_guard_state(src, st);
        };
        throttled(&mut env);

        // The first drop is reported at once.
        assert_eq!(env.run(&flood, IF0, 1).0, XDP_DROP);
        let ev = env.events();
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0].source, src.addr());
        assert_eq!(ev[0].kind, GuardEventKind::PacketRate as u32);
        assert_eq!((ev[0].port, ev[0].suppressed), (SIP, 0));

        // Within the interval: counted, not reported.
        assert_eq!(env.run(&flood, IF0, 5).0, XDP_DROP);
        assert!(env.events().is_empty());
        assert_eq!(env.guard_state(src).unwrap().suppressed, 5);

        // Once the interval has passed, the next event carries the suppressed count.
        let mut st = env.guard_state(src).unwrap();
        st.last_event_ns = now_ns() - 2_000_000_000;
        env.set_guard_state(src, st);
        assert_eq!(env.run(&flood, IF0, 1).0, XDP_DROP);
        let ev = env.events();
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0].suppressed, 5);
        assert_eq!(env.guard_state(src).unwrap().suppressed, 0);

        // Another source has its own budget; INVITE and session-cap drops say which limit hit.
        env.guard_config(GuardConfig {
            invites: Gcra::per_second(1, 1),
            max_sessions: 1,
            ..base_guard()
        });
        let inv = |last: u8| udp4([192, 0, 2, last], 5060, RELAY4, SIP, &sip("INVITE")).build();
        env.sessions(Ip::V4([192, 0, 2, 61]), 1, 0);
        assert_eq!(env.run(&inv(61), IF0, 1).0, XDP_DROP);
        assert_eq!(env.run(&inv(62), IF0, 2).0, XDP_DROP);
        let kinds: Vec<_> = env.events().iter().map(|e| (e.source, e.kind)).collect();
        assert_eq!(
            kinds,
            [
                (
                    Addr::from_v4([192, 0, 2, 61]),
                    GuardEventKind::SessionCap as u32
                ),
                (
                    Addr::from_v4([192, 0, 2, 62]),
                    GuardEventKind::InviteRate as u32
                )
            ]
        );

        // Interval 0 reports every drop, until the ring is full: then the loss is counted in
        // `event_lost` and in the source's `suppressed`, and nothing else changes.
        env.guard_config(GuardConfig {
            event_interval_ns: 0,
            ..base_guard()
        });
        throttled(&mut env);
        let lost_before = env.stat(Stat::EventLost);
        // Half as many again as the ring holds.
        let n = names::GUARD_EVENTS_CAPACITY * 3 / 2;
        assert_eq!(env.run(&flood, IF0, n).0, XDP_DROP);
        let lost = env.stat(Stat::EventLost) - lost_before;
        let got = env.events().len() as u64;
        assert!(lost > 0, "ring never filled ({got} events)");
        assert_eq!(
            got,
            u64::from(names::GUARD_EVENTS_CAPACITY),
            "what relay-common computes"
        );
        assert_eq!(got + lost, u64::from(n));
        assert_eq!(env.guard_state(src).unwrap().suppressed, lost);
    });
}

/// The object's maps are what relay-common's `LAYOUT` (computed from the key and value types)
/// says, capacities included: the loader checks pins against it and userspace sizes by it.
#[test]
fn every_map_has_the_layout_relay_common_states() {
    tests::require_privileged!();
    let pins = PinDir::new("layout");
    let _env = Env {
        ebpf: load(&pins),
        pins: None,
    };
    let mut pinned: Vec<_> = std::fs::read_dir(&pins.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pinned.sort();
    let mut stated: Vec<_> = names::LAYOUT.iter().map(|l| l.name.to_string()).collect();
    stated.sort();
    assert_eq!(
        pinned, stated,
        "the object pins exactly the maps LAYOUT lists"
    );
    for l in names::LAYOUT {
        let info = aya::maps::MapInfo::from_pin(pins.path.join(l.name)).unwrap();
        let found = (info.key_size(), info.value_size(), info.max_entries());
        let value = if l.value_size == 0 {
            found.1
        } else {
            l.value_size
        };
        assert_eq!(found, (l.key_size, value, l.max_entries), "{}", l.name);
    }
}

#[test]
fn pinned_maps_survive_a_reload() {
    tests::require_privileged!();
    let pins = PinDir::new("reload");
    let l = leg(
        30000,
        Ip::V4(RELAY4),
        Ip::V4(PEER_A4),
        4000,
        30002,
        KNOWN | LEG_STRICT_SOURCE,
    );
    {
        // The first daemon: fills the maps, exits; the pins (owned by `pins`) stay.
        let mut env = Env {
            ebpf: load(&pins),
            pins: None,
        };
        env.leg(l);
        env.ban(Ip::V4([203, 0, 113, 9]), BanEntry::PERMANENT);
    }
    let mut env = Env {
        ebpf: load(&pins),
        pins: Some(pins),
    };
    assert_eq!(env.get_leg(30000), l, "relay leg survives");
    let bans: LpmTrie<_, [u8; 4], BanEntry> = LpmTrie::try_from(env.map(names::BANS_V4)).unwrap();
    assert!(
        bans.get(&Key::new(32, [203, 0, 113, 9]), 0).is_ok(),
        "ban survives"
    );
}
