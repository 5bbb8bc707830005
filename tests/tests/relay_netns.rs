//! Relay scenarios on real hosts: caller, relay and callee namespaces over veth pairs, `relayd`
//! running in the relay namespace and driven over the ng protocol as Kamailio or sipd would,
//! RTP checked byte-exact at the far end. Each scenario runs once per data plane.
//!
//! The scenarios share the machine's two cores, so they run one at a time (a lock), and every
//! load is bounded: G.711 streams at 50 pps per direction for a couple of seconds.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    path::PathBuf,
    process::Stdio,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use relay_user::ng::{client::NgClient, message::OfferAnswer, sdp::Sdp};
use tests::{
    netns::{NsChild, Topology, TopologyOptions},
    require_privileged,
    rtp::{self, Flow, RecvConfig, SendConfig},
};

const NG_PORT: u16 = 2223;
const CALLER_PORT: u16 = 20_000;
const CALLEE_PORT: u16 = 20_000;

/// One scenario at a time: they measure loss, and two cores shared by several relays would turn
/// scheduling noise into failures.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plane {
    XdpNative,
    XdpSkb,
    Userspace,
}

impl Plane {
    fn flag(self) -> &'static str {
        match self {
            Plane::XdpNative => "xdp-native",
            Plane::XdpSkb => "xdp-skb",
            Plane::Userspace => "userspace",
        }
    }
    fn is_xdp(self) -> bool {
        self != Plane::Userspace
    }
}

/// relayd as built by this workspace, built once per test process (never a stale binary).
fn relayd_bin() -> PathBuf {
    tests::bins::cargo_bin("relay-user", "relayd")
}

/// A running relay on a fresh topology. Dropping it stops relayd and removes its pins.
struct Relay {
    topo: Topology,
    plane: Plane,
    v6: bool,
    instance: String,
    child: Option<NsChild>,
    ng: NgClient,
    log: PathBuf,
    extra: Vec<String>,
    calls: usize,
    /// `sbc_xdp_pass` on the caller's and callee's veth ends (native mode only); detached on drop.
    _peer_pass: Option<aya::Ebpf>,
}

impl Relay {
    fn start(plane: Plane, v6: bool, extra: &[&str]) -> anyhow::Result<Relay> {
        // GRO on the veths: a native XDP redirect into a veth whose peer has no XDP program is
        // only delivered when the peer has NAPI (GRO) on.
        let topo = Topology::three(TopologyOptions {
            gro: Some(true),
            forwarding: true,
            ..Default::default()
        })?;
        let instance = format!("sbct{}r{}", std::process::id(), topo.id());
        let log = std::env::temp_dir().join(format!("{instance}-relayd.log"));
        let ng_addr = SocketAddr::from(([127, 0, 0, 1], NG_PORT));
        let ng = topo.relay.enter(|| NgClient::new(ng_addr))?;
        let mut r = Relay {
            topo,
            plane,
            v6,
            instance,
            child: None,
            ng,
            log,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            calls: 0,
            _peer_pass: None,
        };
        r.spawn()?;
        if plane == Plane::XdpNative {
            r._peer_pass = Some(tests::xdp::attach_peer_pass(&r.topo, &r.instance)?);
        }
        Ok(r)
    }

    /// The relay address media is anchored on: the relay's caller-side address, reachable from
    /// both sides.
    fn relay_ip(&self) -> IpAddr {
        self.topo.relay_caller_if.ip(self.v6)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = self.topo.relay.command(relayd_bin());
        cmd.args([
            "--dataplane",
            self.plane.flag(),
            "--interface",
            &self.topo.relay_caller_if.dev,
            "--interface",
            &self.topo.relay_callee_if.dev,
            "--address",
            &self.relay_ip().to_string(),
            "--ports",
            "30000-30999",
            "--instance",
            &self.instance,
            "--ng-listen",
            &SocketAddr::from(([127, 0, 0, 1], NG_PORT)).to_string(),
        ])
        .args(&self.extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf);
        let mut child = NsChild::spawn(&mut cmd)?;
        if let Err(e) = self.ng.wait_ready(Duration::from_secs(15)) {
            let status = child.try_wait()?;
            bail!(
                "relayd ({}) not answering ng: {e}; exit {status:?}; log:\n{}",
                self.plane.flag(),
                self.log_text()
            );
        }
        self.child = Some(child);
        Ok(())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM relayd and start it again on the same instance (pins).
    fn restart(&mut self) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        if let Some(mut c) = self.child.take() {
            let st = c.stop(Duration::from_secs(5))?;
            assert!(st.success(), "relayd did not exit cleanly: {st:?}");
        }
        self.spawn()?;
        Ok(t0.elapsed())
    }

    /// Offer + answer one call; returns (where the caller sends, where the callee sends) and
    /// the call-id.
    fn call(
        &mut self,
        caller: SocketAddr,
        callee: SocketAddr,
        strict: bool,
    ) -> anyhow::Result<(Dst, String)> {
        self.calls += 1;
        let id = format!("call-{}-{}", self.instance, self.calls);
        let mut offer = OfferAnswer::new(&id, "from-tag", &sdp(caller, self.calls));
        offer.flags.strict_source = strict;
        offer.replace.origin = true;
        let to_callee = self.ng.offer(&offer)?;
        let mut answer = OfferAnswer::new(&id, "from-tag", &sdp(callee, self.calls));
        answer.to_tag = Some("to-tag".into());
        answer.flags.strict_source = strict;
        let to_caller = self.ng.answer(&answer)?;
        let (a_ip, a_port) = media_of(&to_caller)?;
        let (b_ip, b_port) = media_of(&to_callee)?;
        assert_eq!(a_ip, self.relay_ip(), "caller is sent to the relay");
        assert_eq!(b_ip, self.relay_ip(), "callee is sent to the relay");
        Ok((
            (SocketAddr::new(a_ip, a_port), SocketAddr::new(b_ip, b_port)),
            id,
        ))
    }

    /// One call per stream of `peers`, each side signalling its real socket address.
    fn call_each(&mut self, peers: &Peers, strict: bool) -> (Vec<Dst>, Vec<String>) {
        (0..peers.callers.len())
            .map(|i| {
                let caller = peers.callers[i].local_addr().expect("caller addr");
                let callee = peers.callees[i].local_addr().expect("callee addr");
                self.call(caller, callee, strict).expect("call")
            })
            .unzip()
    }

    /// `relayd --status --json` for this instance.
    fn status(&self) -> anyhow::Result<serde_json::Value> {
        let out = self.topo.relay.run(
            &relayd_bin().to_string_lossy(),
            ["--status", "--json", "--instance", &self.instance],
        )?;
        serde_json::from_str(&out).context("status JSON")
    }

    /// The pinned instance's per-reason counters.
    fn stats(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let v = self.status()?;
        let stats = v
            .get("stats")
            .and_then(|s| s.as_object())
            .context("status has no stats (instance not pinned?)")?;
        Ok(stats
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
            .collect())
    }

    /// Opens the instance's pinned maps, as an operator tool or sipd would.
    fn maps(&self) -> anyhow::Result<(aya::Ebpf, relay_user::maps::XdpMaps)> {
        let mut ebpf =
            relay_user::loader::load_pinned(relay_user::object::ebpf_object(), &self.instance)?;
        let maps = relay_user::maps::XdpMaps::from_ebpf(&mut ebpf)?;
        Ok((ebpf, maps))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.stop(Duration::from_secs(5));
        }
        let ifs = [
            self.topo.relay_caller_if.dev.clone(),
            self.topo.relay_callee_if.dev.clone(),
        ];
        let mut args = vec![
            "--cleanup".to_string(),
            "--instance".into(),
            self.instance.clone(),
        ];
        for i in ifs {
            args.push("--interface".into());
            args.push(i);
        }
        let _ = self.topo.relay.exec(
            &relayd_bin().to_string_lossy(),
            args.iter().map(String::as_str),
        );
        let _ = std::fs::remove_file(&self.log);
    }
}

fn sdp(at: SocketAddr, sess: usize) -> String {
    let fam = if at.is_ipv4() { "IP4" } else { "IP6" };
    let ip = at.ip();
    let port = at.port();
    format!(
        "v=0\r\no=- {sess} 1 IN {fam} {ip}\r\ns=test\r\nc=IN {fam} {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=ptime:20\r\na=sendrecv\r\n"
    )
}

fn media_of(body: &str) -> anyhow::Result<(IpAddr, u16)> {
    let s = Sdp::parse(body).context("relay returned unparsable SDP")?;
    let m = s.media.first().context("no m= line")?;
    Ok((m.addr, m.port))
}

/// Relay addresses of one call: (where the caller sends, where the callee sends).
type Dst = (SocketAddr, SocketAddr);

/// Caller and callee sockets, one per stream, inside their namespaces.
struct Peers {
    callers: Vec<UdpSocket>,
    callees: Vec<UdpSocket>,
}

impl Peers {
    fn bind(r: &Relay, streams: usize) -> anyhow::Result<Peers> {
        let mut callers = Vec::new();
        let mut callees = Vec::new();
        for i in 0..streams as u16 {
            callers.push(rtp::bind_in(
                &r.topo.caller,
                SocketAddr::new(r.topo.caller_if.ip(r.v6), CALLER_PORT + 2 * i),
            )?);
            callees.push(rtp::bind_in(
                &r.topo.callee,
                SocketAddr::new(r.topo.callee_if.ip(r.v6), CALLEE_PORT + 2 * i),
            )?);
        }
        Ok(Peers { callers, callees })
    }
}

struct Directional {
    sent: rtp::SendReport,
    got: rtp::RecvReport,
}

/// Sends `packets` G.711 packets each way on every stream at once and collects both ends.
/// Stream ids: caller→callee `i`, callee→caller `1000 + i`.
fn exchange(peers: &Peers, to_relay: &[Dst], packets: u64) -> (Vec<Directional>, Vec<Directional>) {
    let rc = {
        let mut rc = RecvConfig::new(Duration::from_millis(packets * 20 + 3000));
        rc.idle = Some(Duration::from_millis(800));
        rc
    };
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (i, (a_dst, b_dst)) in to_relay.iter().enumerate() {
            let caller = &peers.callers[i];
            let callee = &peers.callees[i];
            let rc = &rc;
            let ca = SendConfig::g711(
                vec![Flow {
                    stream: i as u32,
                    dest: *a_dst,
                }],
                packets,
            );
            let cb = SendConfig::g711(
                vec![Flow {
                    stream: 1000 + i as u32,
                    dest: *b_dst,
                }],
                packets,
            );
            handles.push((
                s.spawn(move || rtp::send_and_receive(caller, &ca, rc)),
                s.spawn(move || rtp::send_and_receive(callee, &cb, rc)),
            ));
        }
        let mut fwd = Vec::new();
        let mut back = Vec::new();
        for (ha, hb) in handles {
            let (sent_a, got_a) = ha.join().expect("caller thread").expect("caller I/O");
            let (sent_b, got_b) = hb.join().expect("callee thread").expect("callee I/O");
            fwd.push(Directional {
                sent: sent_a,
                got: got_b,
            });
            back.push(Directional {
                sent: sent_b,
                got: got_a,
            });
        }
        (fwd, back)
    })
}

fn assert_lossless(what: &str, d: &[Directional]) {
    for (i, x) in d.iter().enumerate() {
        assert_eq!(x.got.corrupt, 0, "{what} stream {i}: corrupted packets");
        assert_eq!(x.got.lost(&x.sent), 0, "{what} stream {i}: lost packets");
        assert_eq!(x.got.duplicates(), 0, "{what} stream {i}: duplicates");
        assert_eq!(
            x.got.unique(),
            x.sent.total(),
            "{what} stream {i}: every packet arrives once"
        );
    }
}

/// Several bidirectional G.711 streams, relayed and checked byte-exact, and the data plane that
/// was asked for is the one that forwarded them.
fn streams_byte_exact(plane: Plane, v6: bool) {
    require_privileged!();
    let _s = serial();
    let mut r = Relay::start(plane, v6, &[]).expect("relay up");
    const STREAMS: usize = 3;
    const PACKETS: u64 = 100; // 2 s at 50 pps
    let peers = Peers::bind(&r, STREAMS).expect("peers");
    let (dsts, _) = r.call_each(&peers, false);
    let (fwd, back) = exchange(&peers, &dsts, PACKETS);
    if plane.is_xdp() {
        eprintln!("stats after traffic: {:?}", r.stats());
    }
    assert_lossless("caller→callee", &fwd);
    assert_lossless("callee→caller", &back);

    let log = r.log_text();
    assert!(
        log.contains(plane.flag()) || log.contains(&plane.flag().replace('-', " ")),
        "relayd says which data plane is active; log:\n{log}"
    );
    // ... and so does its status, for scripts, in every mode.
    let status = r.status().expect("status");
    assert_eq!(status["dataplane"]["mode"], plane.flag(), "{status}");
    assert_eq!(status["dataplane"]["running"], true, "{status}");
    assert!(
        status["dataplane"]["reason"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{status}"
    );
    if plane.is_xdp() {
        let st = r.stats().expect("stats");
        let kernel = st["relay_redirect"] + st["relay_tx"];
        let total = 2 * STREAMS as u64 * PACKETS;
        // The first packet of each direction may take the slow path while the neighbour
        // entry is resolved; everything after is the kernel's.
        assert!(
            kernel + 2 * STREAMS as u64 * 2 >= total,
            "kernel forwarded {kernel} of {total}: {st:?}\nlog:\n{log}"
        );
        assert_eq!(st["drop_malformed"], 0, "{st:?}");
    }
}

#[test]
fn streams_byte_exact_xdp_native_v4() {
    streams_byte_exact(Plane::XdpNative, false);
}

#[test]
fn streams_byte_exact_xdp_native_v6() {
    streams_byte_exact(Plane::XdpNative, true);
}

#[test]
fn streams_byte_exact_xdp_skb_v4() {
    streams_byte_exact(Plane::XdpSkb, false);
}

#[test]
fn streams_byte_exact_userspace_v4() {
    streams_byte_exact(Plane::Userspace, false);
}

#[test]
fn streams_byte_exact_userspace_v6() {
    streams_byte_exact(Plane::Userspace, true);
}

/// The caller sits behind a NAT: its SDP names one port, its packets come from another. The
/// relay latches onto the real source and the callee's media reaches the caller there.
fn latching_behind_nat(plane: Plane) {
    require_privileged!();
    let _s = serial();
    let mut r = Relay::start(plane, false, &[]).expect("relay up");
    let peers = Peers::bind(&r, 1).expect("peers");
    let real = peers.callers[0].local_addr().unwrap();
    // What the caller's SIP said: the NAT's inside port, which nobody listens on.
    let advertised = SocketAddr::new(real.ip(), real.port() + 1000);
    let callee = peers.callees[0].local_addr().unwrap();
    let (dst, _) = r.call(advertised, callee, false).expect("call");
    let dsts = [dst];
    // The caller speaks first (as a NATed phone must for latching to work).
    let mut first = Vec::new();
    rtp::build_packet(9999, 0, rtp::G711_PAYLOAD, &mut first);
    peers.callers[0].send_to(&first, dsts[0].0).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut buf = [0u8; 2048];
    peers.callees[0]
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let (n, _) = peers.callees[0]
        .recv_from(&mut buf)
        .expect("first packet relayed");
    assert_eq!(&buf[..n], &first[..]);

    let (fwd, back) = exchange(&peers, &dsts, 50);
    assert_lossless("caller→callee", &fwd);
    assert_lossless("callee→caller (to the latched port)", &back);
}

#[test]
fn latching_behind_nat_xdp_native() {
    latching_behind_nat(Plane::XdpNative);
}

#[test]
fn latching_behind_nat_userspace() {
    latching_behind_nat(Plane::Userspace);
}

/// With strict source, once the caller is latched a third party sending to the caller's relay
/// port (RTP bleed / injection) reaches nobody, and the drop is counted.
fn strict_source_rejects_third_party(plane: Plane) {
    require_privileged!();
    let _s = serial();
    let mut r = Relay::start(plane, false, &[]).expect("relay up");
    let peers = Peers::bind(&r, 1).expect("peers");
    let (dsts, ids) = r.call_each(&peers, true);
    let call_id = &ids[0];
    let caller = peers.callers[0].local_addr().unwrap();
    let (fwd, back) = exchange(&peers, &dsts, 25);
    assert_lossless("caller→callee", &fwd);
    assert_lossless("callee→caller", &back);

    // An attacker on the caller's network, from another port.
    let attacker = rtp::bind_in(
        &r.topo.caller,
        SocketAddr::new(caller.ip(), caller.port() + 500),
    )
    .expect("attacker socket");
    let mut pkt = Vec::new();
    for seq in 0..20 {
        rtp::build_packet(6666, seq, rtp::G711_PAYLOAD, &mut pkt);
        attacker.send_to(&pkt, dsts[0].0).unwrap();
    }
    let mut rc = RecvConfig::new(Duration::from_millis(700));
    rc.idle = Some(Duration::from_millis(500));
    let got = rtp::receive(&peers.callees[0], &rc).expect("recv");
    assert_eq!(
        got.unique(),
        0,
        "third-party packets must not reach the callee: {got:?}"
    );
    if plane.is_xdp() {
        let st = r.stats().expect("stats");
        assert!(st["drop_strict_source"] >= 20, "{st:?}");
    } else {
        // rtpengine's layout: tags → from-tag → medias[0] → streams[0] (RTP, the caller-side
        // relay port the attacker hit) → stats → errors (packets not relayed).
        let q = r.ng.query(call_id).expect("query");
        let errors = q
            .get("tags")
            .and_then(|t| t.get("from-tag"))
            .and_then(|t| t.get("medias"))
            .and_then(|m| m.as_list())
            .and_then(|m| m.first())
            .and_then(|m| m.get("streams"))
            .and_then(|s| s.as_list())
            .and_then(|s| s.first())
            .and_then(|s| s.get("stats"))
            .and_then(|s| s.get("errors"))
            .and_then(|e| e.as_int());
        assert!(
            errors.is_some_and(|e| e >= 20),
            "query reports the strict-source drops on the caller's RTP stream: errors {errors:?} in {q:?}"
        );
    }
}

#[test]
fn strict_source_rejects_third_party_xdp_native() {
    strict_source_rejects_third_party(Plane::XdpNative);
}

#[test]
fn strict_source_rejects_third_party_userspace() {
    strict_source_rejects_third_party(Plane::Userspace);
}

/// A ban and a static deny, written to the pinned maps by another process (as sipd's IDS
/// does), drop media in the kernel and are counted; removing the ban lets media through again.
#[test]
fn ban_and_deny_drop_media_counted_xdp() {
    require_privileged!();
    let _s = serial();
    let mut r = Relay::start(Plane::XdpNative, false, &[]).expect("relay up");
    let peers = Peers::bind(&r, 1).expect("peers");
    let (dsts, _) = r.call_each(&peers, false);
    let caller = peers.callers[0].local_addr().unwrap();
    let (fwd, _) = exchange(&peers, &dsts, 10);
    assert_lossless("before the ban", &fwd);

    let (_obj, mut maps) = r.maps().expect("pinned maps");
    maps.ban_add(
        relay_user::Cidr::host(caller.ip()),
        Some(Duration::from_secs(60)),
        relay_user::BanReason::Flood,
    )
    .expect("ban");
    let before = r.stats().expect("stats")["drop_banned"];
    let (fwd, _) = exchange(&peers, &dsts, 10);
    assert_eq!(fwd[0].got.unique(), 0, "banned caller's media is dropped");
    let after = r.stats().expect("stats")["drop_banned"];
    assert!(
        after - before >= 10,
        "ban drops counted: {before} -> {after}"
    );

    maps.ban_remove(relay_user::Cidr::host(caller.ip()))
        .expect("unban");
    let cidr: relay_user::Cidr = format!("{}/24", caller.ip()).parse().expect("cidr");
    maps.deny_add(cidr, 7).expect("deny");
    let before = r.stats().expect("stats")["drop_denied"];
    let (fwd, _) = exchange(&peers, &dsts, 10);
    assert_eq!(fwd[0].got.unique(), 0, "denied network's media is dropped");
    let after = r.stats().expect("stats")["drop_denied"];
    assert!(
        after - before >= 10,
        "deny drops counted: {before} -> {after}"
    );

    maps.deny_remove(cidr).expect("undeny");
    let (fwd, _) = exchange(&peers, &dsts, 10);
    assert_lossless("after lifting the ban and the deny", &fwd);
}

/// A restricted service only admits its allow list: packets to it from elsewhere are dropped
/// and counted before they reach any socket.
#[test]
fn service_acl_drops_counted_xdp() {
    require_privileged!();
    let _s = serial();
    let r = Relay::start(Plane::XdpNative, false, &[]).expect("relay up");
    let (_obj, mut maps) = r.maps().expect("pinned maps");
    let port = 5080;
    maps.service_set(relay_user::Service {
        port,
        proto: relay_user::Proto::Udp,
        id: relay_user::ServiceId::Management,
        restricted: true,
        sip: false,
    })
    .expect("service");
    // Only the callee's network may reach it.
    let allowed: relay_user::Cidr = format!("{}/32", r.topo.callee_if.ip(false))
        .parse()
        .unwrap();
    maps.allow_add(relay_user::ServiceId::Management, allowed)
        .expect("allow");
    let server = rtp::bind_in(&r.topo.relay, SocketAddr::new(r.relay_ip(), port)).unwrap();
    server
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let from_caller = rtp::bind_in(
        &r.topo.caller,
        SocketAddr::new(r.topo.caller_if.ip(false), 0),
    )
    .unwrap();
    let from_callee = rtp::bind_in(
        &r.topo.callee,
        SocketAddr::new(r.topo.callee_if.ip(false), 0),
    )
    .unwrap();
    let before = r.stats().unwrap()["drop_service_acl"];
    for _ in 0..5 {
        from_caller
            .send_to(b"not allowed", SocketAddr::new(r.relay_ip(), port))
            .unwrap();
    }
    from_callee
        .send_to(b"allowed", SocketAddr::new(r.relay_ip(), port))
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = server.recv_from(&mut buf).expect("allowed packet arrives");
    assert_eq!(&buf[..n], b"allowed");
    assert_eq!(from.ip(), r.topo.callee_if.ip(false));
    assert!(
        server.recv_from(&mut buf).is_err(),
        "nothing from the caller"
    );
    let after = r.stats().unwrap()["drop_service_acl"];
    assert_eq!(after - before, 5, "each refused packet counted");
}

/// A call whose media stops is removed after the media timeout, in both data planes.
fn media_timeout_fires(plane: Plane) {
    require_privileged!();
    let _s = serial();
    let mut r = Relay::start(plane, false, &["--media-timeout", "2s"]).expect("relay up");
    let peers = Peers::bind(&r, 1).expect("peers");
    let (dsts, ids) = r.call_each(&peers, false);
    let call_id = &ids[0];
    let (fwd, _) = exchange(&peers, &dsts, 25);
    assert_lossless("while talking", &fwd);
    assert!(
        r.ng.list().unwrap().contains(call_id),
        "call listed while media flows"
    );
    let deadline = Instant::now() + Duration::from_secs(8);
    while r.ng.list().unwrap().contains(call_id) {
        assert!(
            Instant::now() < deadline,
            "call still there 8 s after its media stopped (timeout 2 s); log:\n{}",
            r.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        r.log_text().contains("media timeout"),
        "the timeout is logged:\n{}",
        r.log_text()
    );
    // Its ports are released: media to them is no longer relayed.
    let (fwd, _) = exchange(&peers, &dsts, 5);
    assert_eq!(fwd[0].got.unique(), 0, "no relaying after teardown");
}

#[test]
fn media_timeout_fires_xdp_native() {
    media_timeout_fires(Plane::XdpNative);
}

#[test]
fn media_timeout_fires_userspace() {
    media_timeout_fires(Plane::Userspace);
}

/// relayd restarts mid-call: the XDP link and maps are pinned, so the kernel keeps forwarding
/// while no daemon runs, and the new daemon adopts the live session.
#[test]
fn restart_mid_stream_keeps_media_xdp() {
    require_privileged!();
    let _s = serial();
    let mut r = Relay::start(Plane::XdpNative, false, &[]).expect("relay up");
    const STREAMS: usize = 2;
    const PACKETS: u64 = 250; // 5 s at 50 pps
    let peers = Peers::bind(&r, STREAMS).expect("peers");
    let (dsts, ids) = r.call_each(&peers, false);
    let (fwd, back, restart_took) = std::thread::scope(|s| {
        let traffic = s.spawn(|| exchange(&peers, &dsts, PACKETS));
        std::thread::sleep(Duration::from_millis(1500));
        let took = r.restart().expect("restart");
        let (f, b) = traffic.join().expect("traffic");
        (f, b, took)
    });
    // The kernel forwards throughout, so nothing is lost; allow only the packets that could be
    // in flight in a socket queue at the moment of the switch (none are, on the XDP path).
    const MAX_LOSS_PER_DIRECTION: u64 = 1;
    for (what, d) in [("caller→callee", &fwd), ("callee→caller", &back)] {
        for (i, x) in d.iter().enumerate() {
            let lost = x.got.lost(&x.sent);
            eprintln!(
                "restart ({restart_took:?}): {what} stream {i}: sent {}, got {}, lost {lost}",
                x.sent.total(),
                x.got.unique()
            );
            assert_eq!(x.got.corrupt, 0);
            assert!(
                lost <= MAX_LOSS_PER_DIRECTION,
                "{what} stream {i} lost {lost} packets across a restart that took {restart_took:?}"
            );
        }
    }
    // The restarted daemon knows the calls: it can report and delete them.
    let listed = r.ng.list().expect("list");
    for id in &ids {
        assert!(
            listed.contains(id),
            "restarted relayd adopted {id}: {listed:?}\n{}",
            r.log_text()
        );
    }
    r.ng.delete(&ids[0], None).expect("delete adopted call");
}

/// The appliance's default: XDP on `lo`, relay and peers on 127.0.0.1. relayd turns on the
/// (harmless) IPv4 forwarding of `lo` that the kernel's route lookup needs, so the kernel
/// relays the media and hands it to the local peer itself.
#[test]
fn loopback_default_is_relayed_in_the_kernel() {
    require_privileged!();
    let _s = serial();
    let topo = Topology::three(TopologyOptions::default()).expect("topology");
    let instance = format!("sbct{}lo{}", std::process::id(), topo.id());
    let ng_addr = SocketAddr::from(([127, 0, 0, 1], NG_PORT));
    let mut cmd = topo.relay.command(relayd_bin());
    cmd.args([
        "--interface",
        "lo",
        "--address",
        "127.0.0.1",
        "--ports",
        "30000-30099",
        "--instance",
        &instance,
        "--ng-listen",
        &ng_addr.to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut child = NsChild::spawn(&mut cmd).expect("relayd");
    let cleanup = |child: &mut NsChild| {
        let _ = child.stop(Duration::from_secs(5));
        let _ = topo.relay.exec(
            &relayd_bin().to_string_lossy(),
            ["--cleanup", "--instance", &instance, "--interface", "lo"],
        );
    };
    let ng = topo.relay.enter(|| NgClient::new(ng_addr)).expect("ng");
    if let Err(e) = ng.wait_ready(Duration::from_secs(15)) {
        cleanup(&mut child);
        panic!("relayd not answering: {e}");
    }
    let lo = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let a = rtp::bind_in(&topo.relay, lo(20_000)).expect("peer a");
    let b = rtp::bind_in(&topo.relay, lo(20_002)).expect("peer b");
    let mut offer = OfferAnswer::new("lo-call", "from-tag", &sdp(lo(20_000), 1));
    offer.replace.origin = true;
    let to_b = ng.offer(&offer).expect("offer");
    let mut answer = OfferAnswer::new("lo-call", "from-tag", &sdp(lo(20_002), 1));
    answer.to_tag = Some("to-tag".into());
    let to_a = ng.answer(&answer).expect("answer");
    let dsts = [(
        lo(media_of(&to_a).expect("sdp").1),
        lo(media_of(&to_b).expect("sdp").1),
    )];
    let peers = Peers {
        callers: vec![a],
        callees: vec![b],
    };
    let (fwd, back) = exchange(&peers, &dsts, 50);
    let out = topo.relay.run(
        &relayd_bin().to_string_lossy(),
        ["--status", "--json", "--instance", &instance],
    );
    cleanup(&mut child);
    assert_lossless("a→b", &fwd);
    assert_lossless("b→a", &back);
    let v: serde_json::Value = serde_json::from_str(&out.expect("status")).expect("json");
    let local = v["stats"]["relay_local"].as_u64().unwrap_or(0);
    let slow = v["stats"]["relay_to_userspace"].as_u64().unwrap_or(0);
    assert!(
        local >= 100 && slow == 0,
        "kernel relayed {local} of 100 on lo, {slow} took the userspace path: {v}"
    );
}
