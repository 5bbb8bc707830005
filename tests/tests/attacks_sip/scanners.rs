//! Scanners and the records and packets a stranger can draw from sipd.
//!
//! 1. Debian's sipvicious from the attacker's host: `svmap`, `svwar` with INVITE, OPTIONS and
//!    REGISTER, `svcrack` on REGISTER. Each is banned in the kernel (XDP) within 1 s of its
//!    first packet (from the kernel timestamp of that packet on the attacker's interface,
//!    read by a packet socket opened before the tool starts, to the moment a poll of the
//!    kernel's ban map sees the ban), the ban carries its reason, and a
//!    carrier's calls from another address complete meanwhile. sipd's `Server` header names
//!    no product or version.
//! 2. 1,000 refused INVITEs from one source, with the ban threshold and rate limits raised so
//!    every one reaches sipd: the attacker receives at most as many packets as it sent (no
//!    100 Trying before a refusal, no retransmitted refusal).
//! 3. 1,000 INVITEs with `Authorization: Digest x` from one source: banned as a brute-forcer,
//!    and the records written stay bounded (no CDR; one row in the refusal table).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};

use std::time::{Duration, Instant, SystemTime};

use super::sbc::*;
use relay_user::BanReason;
use tests::sip::RawSip;
use tests::{require_privileged, require_sipp};

/// Metrics without a token, read by curl in the relay namespace.
fn settings(guard: &str) -> Settings {
    Settings {
        // `[management]` is the last table the harness writes, so a `[guard]` table can
        // follow it here.
        management: format!("metrics_public = true\n\n[guard]\n{guard}"),
        ..Settings::default()
    }
}

/// Adds host `.{last}` of the carrier's /24 to the carrier's namespace (the attacker's
/// host sits beside the carrier).
fn attacker_ip(net: &Net, last: u8) -> Ipv4Addr {
    let c = net.topo.caller_if.ipv4.octets();
    let ip = Ipv4Addr::new(c[0], c[1], c[2], last);
    net.topo
        .caller
        .ip([
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            &net.topo.caller_if.dev,
        ])
        .expect("attacker address");
    ip
}

/// The kernel's ban map of this instance, as an operator tool reads it.
pub(crate) struct Bans {
    _ebpf: aya::Ebpf,
    maps: relay_user::maps::XdpMaps,
}

impl Bans {
    pub(crate) fn open(sbc: &Sbc) -> Bans {
        let mut ebpf =
            relay_user::loader::load_pinned(relay_user::object::ebpf_object(), &sbc.instance)
                .expect("open the instance's pinned maps");
        let maps = relay_user::maps::XdpMaps::from_ebpf(&mut ebpf).expect("maps");
        Bans { _ebpf: ebpf, maps }
    }

    /// The reason `ip` is banned for, if it is (and the ban has not expired).
    pub(crate) fn reason(&self, ip: IpAddr) -> Option<Option<BanReason>> {
        self.maps
            .ban_list()
            .expect("ban list")
            .into_iter()
            .find(|b| b.prefix.contains(ip) && !b.expired)
            .map(|b| b.reason())
    }

    /// Polls until `ip` is banned; when it was first seen banned.
    pub(crate) fn wait(
        &self,
        ip: IpAddr,
        within: Duration,
    ) -> Option<(SystemTime, Option<BanReason>)> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Some(r) = self.reason(ip) {
                return Some((SystemTime::now(), r));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }
}

/// A packet socket on the carrier's interface, open before a tool starts (so no packet is
/// missed), that finds the first UDP packet from a source to sipd's SIP port and the kernel's
/// timestamp of it (when it left the attacker's host).
struct FirstPacket(std::os::fd::OwnedFd);

impl FirstPacket {
    fn watch(net: &Net, _src: Ipv4Addr) -> FirstPacket {
        use std::os::fd::FromRawFd;
        let dev = std::ffi::CString::new(net.topo.caller_if.dev.clone()).expect("dev");
        let fd = net.topo.caller.enter(|| {
            // ETH_P_ALL: only "all" taps see packets leaving the host.
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket calls on a descriptor we own; the structs are zeroed and
            // filled as packet(7) says.
            unsafe {
                let fd = libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                    i32::from(proto),
                );
                assert!(
                    fd >= 0,
                    "packet socket: {}",
                    std::io::Error::last_os_error()
                );
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = proto;
                sll.sll_ifindex = libc::if_nametoindex(dev.as_ptr()) as i32;
                let r = libc::bind(
                    fd,
                    (&raw const sll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
                // Each packet with the time the tap saw it (SCM_TIMESTAMP).
                let on: libc::c_int = 1;
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_TIMESTAMP,
                    (&raw const on).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                );
                let rcvbuf: libc::c_int = 8 << 20;
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&raw const rcvbuf).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                );
                let tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 100_000,
                };
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&raw const tv).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                );
                fd
            }
        });
        // SAFETY: a descriptor just opened and owned by nobody else.
        FirstPacket(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
    }
}

/// Keeps the kernel's packet timestamping on for the whole test: it is turned on for the
/// first socket that asks and off after the last closes, lazily (a work item), so a packet
/// socket opened alone may get its first packets unstamped (stamped when read instead).
fn keep_timestamps() -> UdpSocket {
    use std::os::fd::AsRawFd;
    let s = UdpSocket::bind("127.0.0.1:0").expect("loopback socket");
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own with an int option.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMP,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    assert_eq!(r, 0, "SO_TIMESTAMP: {}", std::io::Error::last_os_error());
    s
}

impl FirstPacket {
    /// The kernel time of the first IPv4 UDP packet from `src` to sipd's SIP port.
    fn time(self, src: Ipv4Addr) -> SystemTime {
        use std::os::fd::AsRawFd;
        let fd = self.0.as_raw_fd();
        let mut buf = [0u8; 2048];
        let mut control = [0u64; 16];
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: a zeroed msghdr pointing at buffers we own, of the lengths given.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control) as _;
            // SAFETY: as above.
            let n = unsafe { libc::recvmsg(fd, &raw mut msg, 0) };
            let Ok(n) = usize::try_from(n) else { continue };
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            let ours = n >= ihl + 4
                && buf[0] >> 4 == 4
                && buf[9] == 17
                && buf[12..16] == src.octets()
                && u16::from_be_bytes([buf[ihl + 2], buf[ihl + 3]]) == SIP_PORT;
            if !ours {
                continue;
            }
            // SAFETY: walking the control messages the kernel wrote into `control`.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMP
                    {
                        let tv: libc::timeval = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                        return SystemTime::UNIX_EPOCH
                            + Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
                    }
                    c = libc::CMSG_NXTHDR(&raw const msg, c);
                }
            }
            panic!("a packet without its timestamp");
        }
        panic!("no packet from {src} to port {SIP_PORT} was seen");
    }
}

/// One sipvicious run: the tool and its arguments (the target last).
struct Scan {
    what: &'static str,
    tool: &'static str,
    args: Vec<String>,
    reason: BanReason,
}

fn scans(target: IpAddr) -> Vec<Scan> {
    let t = format!("udp://{target}:{SIP_PORT}");
    let svwar = |what, method: &str| Scan {
        what,
        tool: "svwar",
        args: vec![
            "-m".into(),
            method.into(),
            "-e".into(),
            "100-999".into(),
            t.clone(),
        ],
        reason: BanReason::Scanner,
    };
    vec![
        Scan {
            what: "svmap (OPTIONS)",
            tool: "svmap",
            args: vec!["-p".into(), SIP_PORT.to_string(), target.to_string()],
            reason: BanReason::Scanner,
        },
        svwar("svwar -m INVITE", "INVITE"),
        svwar("svwar -m OPTIONS", "OPTIONS"),
        svwar("svwar -m REGISTER", "REGISTER"),
        Scan {
            what: "svcrack (REGISTER)",
            tool: "svcrack",
            args: vec![
                "-u".into(),
                "100".into(),
                "-r".into(),
                "1000-9999".into(),
                t,
            ],
            reason: BanReason::Scanner,
        },
    ]
}

fn sipvicious_available() -> bool {
    Command::new("svwar")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[test]
fn sipvicious_of_every_method_is_banned_in_the_kernel_within_a_second() {
    require_privileged!();
    require_sipp!();
    assert!(
        sipvicious_available(),
        "sipvicious (svmap, svwar, svcrack) is missing: cargo xtask setup"
    );
    let _s = serial();
    let net = Net::new();
    let prov = Prov {
        cps_limit: 50,
        ..Prov::default()
    };
    let _stamps = keep_timestamps();
    let sbc = Sbc::start_with(&net, Plane::Xdp, &prov, &settings(""));
    let bans = Bans::open(&sbc);

    // A carrier's calls from its own address, all through the scans.
    let calls = 6;
    let uas = net.uas("uas.xml", SIP_PORT, calls, Duration::from_millis(100));
    let mut uac = net.uac("uac.xml", sbc.sip(), Duration::from_millis(500));
    uac.calls = calls;
    uac.rate = Some((1, Duration::from_secs(2)));
    uac.deadline = Duration::from_secs(90);
    let uac = uac.spawn(&net.topo.caller).expect("carrier uac");

    let mut report = Vec::new();
    for (i, scan) in scans(sbc.addr).into_iter().enumerate() {
        let ip = attacker_ip(&net, 70 + i as u8);
        // Debian's svwar ignores `-b` and binds the wildcard address: the route to sipd picks
        // the attacker's address as the source (sipp binds the carrier's own explicitly).
        net.topo
            .caller
            .ip([
                "route",
                "replace",
                &format!("{}/32", sbc.addr),
                "dev",
                &net.topo.caller_if.dev,
                "src",
                &ip.to_string(),
            ])
            .expect("route via the attacker's address");
        let first = FirstPacket::watch(&net, ip);
        let mut cmd = net.topo.caller.command(scan.tool);
        cmd.args(["-b", &ip.to_string(), "-x", &ip.to_string(), "-P", "5070"])
            .args(&scan.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut tool = tests::netns::NsChild::spawn(&mut cmd).expect("spawn sipvicious");
        eprintln!("{}: from {ip}", scan.what);
        let banned = bans.wait(IpAddr::V4(ip), Duration::from_secs(15));
        let _ = tool.stop(Duration::from_secs(2));
        let Some((at, reason)) = banned else {
            panic!("{}: {ip} never banned\n{}", scan.what, sbc.log_text());
        };
        let sent = first.time(ip);
        let took = at
            .duration_since(sent)
            .unwrap_or_else(|e| panic!("{}: banned before its first packet? {e:?}", scan.what));
        report.push(format!(
            "{}: banned {:?} after its first packet",
            scan.what, took
        ));
        assert_eq!(reason, Some(scan.reason), "{}: ban reason", scan.what);
        assert!(
            took <= Duration::from_secs(1),
            "{}: banned {took:?} after its first packet",
            scan.what
        );
    }
    eprintln!("{}", report.join("\n"));
    net.topo
        .caller
        .ip(["route", "del", &format!("{}/32", sbc.addr)])
        .expect("route back");

    // The Server header an unauthenticated peer sees: generic.
    let stranger = attacker_ip(&net, 90);
    let raw = RawSip::bind_in(
        &net.topo.caller,
        SocketAddr::new(stranger.into(), 5090),
        sbc.sip(),
    )
    .expect("stranger socket");
    let inv = tests::sip::invite(raw.local(), sbc.sip(), CLI, CLD, "stranger-1", RTP_PORT);
    raw.send(inv.as_bytes()).expect("send");
    let mut seen = Vec::new();
    let resp = raw
        .wait_for("SIP/2.0 403", "1 INVITE", Duration::from_secs(5), &mut seen)
        .unwrap_or_else(|| panic!("no 403 to a stranger: {seen:?}"));
    let server = resp
        .lines()
        .find_map(|l| l.strip_prefix("Server: "))
        .unwrap_or_default()
        .trim();
    assert_eq!(server, "SBC", "Server header:\n{resp}");
    assert!(!resp.to_ascii_lowercase().contains("xdp-sbc"), "{resp}");

    let (uac, uas) = (uac.finish(), uas.finish());
    uac.assert_ok();
    uas.assert_ok();
    assert_eq!(
        uac.trace.final_counts("INVITE").get(&200).copied(),
        Some(calls as usize),
        "every carrier call answered: {:?}",
        uac.trace.final_counts("INVITE")
    );
}

/// Sends `n` INVITEs from `sock` (one every 2 ms), each with `extra` headers; returns how
/// many packets came back until `settle` after the last.
fn invite_flood(sock: &UdpSocket, to: SocketAddr, n: u32, extra: &str, settle: Duration) -> u64 {
    let local = sock.local_addr().expect("addr");
    let counter = sock.try_clone().expect("clone");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let rx = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let _ = counter.set_read_timeout(Some(Duration::from_millis(100)));
        let mut got = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            if counter.recv_from(&mut buf).is_ok() {
                got += 1;
            }
        }
        got
    });
    for i in 0..n {
        let call_id = format!("flood-{}-{i}", std::process::id());
        let branch = format!("z9hG4bK-flood-{i}");
        let msg = format!(
            "INVITE sip:{CLD}@{to} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{CLI}@{local}>;tag=f{i}\r\n\
             To: <sip:{CLD}@{to}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:{CLI}@{local}>\r\n\
             {extra}Content-Length: 0\r\n\r\n"
        );
        sock.send_to(msg.as_bytes(), to).expect("send");
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(settle);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    rx.join().expect("receiver")
}

fn refused_invites_draw_no_more_than_they_send(plane: Plane) {
    let _s = serial();
    let net = Net::new();
    // Every INVITE reaches sipd and none is banned: what is measured is the answer itself.
    let guard = "sip_packets_per_sec = 5000\nsip_packet_burst = 5000\n\
                 invites_per_sec = 5000\ninvite_burst = 5000\n\
                 auth_failures_before_ban = 100000\n";
    let sbc = Sbc::start_with(&net, plane, &Prov::default(), &settings(guard));
    let sock = net.attacker();
    let sent = 1000;
    // 4 s after the last: Timer G would have resent a refusal 3 times by then.
    let got = invite_flood(&sock, sbc.sip(), sent, "", Duration::from_secs(4));
    eprintln!("{plane:?}: {sent} refused INVITEs sent, {got} packets back");
    assert!(got > 0, "sipd answered nothing");
    assert!(
        got <= u64::from(sent),
        "amplifier: {got} packets back for {sent} INVITEs"
    );
    assert_eq!(
        sbc.metric("sipd_refusals_total{reason=\"no_matching_rule\"}"),
        u64::from(sent)
    );
}

#[test]
fn refused_invites_draw_no_more_packets_than_they_send_xdp() {
    require_privileged!();
    refused_invites_draw_no_more_than_they_send(Plane::Xdp);
}

#[test]
fn refused_invites_draw_no_more_packets_than_they_send_userspace() {
    require_privileged!();
    refused_invites_draw_no_more_than_they_send(Plane::Userspace);
}

#[test]
fn bad_authorization_flood_is_banned_and_writes_bounded_records() {
    require_privileged!();
    let _s = serial();
    let net = Net::new();
    let mut sbc = Sbc::start_with(&net, Plane::Xdp, &Prov::default(), &settings(""));
    let bans = Bans::open(&sbc);
    let sock = net.attacker();
    let ip = sock.local_addr().expect("addr").ip();
    let sent = 1000;
    let got = invite_flood(
        &sock,
        sbc.sip(),
        sent,
        "Authorization: Digest x\r\n",
        Duration::from_secs(2),
    );
    let ban = bans.wait(ip, Duration::from_secs(10));
    eprintln!("{sent} INVITEs with Authorization: Digest x: {got} packets back, ban {ban:?}");
    if ban.is_none() {
        eprintln!("not banned; CDRs written: {}", sbc.cdrs().len());
    }
    assert_eq!(
        ban.map(|b| b.1),
        Some(Some(BanReason::BruteForce)),
        "not banned as a brute-forcer"
    );
    let refused = sbc.metric("sipd_refusals_total{reason=\"bad_authorization\"}");
    let rows = sbc.metric("sipd_refusal_rows");
    let cdrs = sbc.cdrs().len() as u64;
    eprintln!("{refused} refusals counted in {rows} row(s), {cdrs} CDRs");
    assert!(got <= u64::from(sent), "{got} packets back for {sent}");
    assert!(
        cdrs + rows <= 2,
        "records written: {cdrs} CDRs and {rows} refusal rows"
    );
}
