//! `relayd` behind an unmodified Kamailio: Debian's Kamailio 5.6 with its `rtpengine` module
//! pointed at `relayd` (configuration `tests/fixtures/kamailio/relayd.cfg`, the one the README
//! shows), sipp as caller and callee in their own namespaces, `relayd` on XDP in the relay
//! namespace beside Kamailio. Media is exchanged between Rust sockets at both ends and checked
//! byte-exact; the kernel counters show XDP forwarded it; relayd's call list shows what the
//! module created and deleted.
//!
//! One scenario at a time (a lock): two cores shared with other builds.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use relay_user::ng::client::NgClient;
use tests::{
    netns::{NsChild, Topology, TopologyOptions},
    require_privileged, require_sipp,
    rtp::{self, Flow, RecvConfig, SendConfig},
    sip::{MediaCheck, Sipp, SippRun},
};

const SIP_PORT: u16 = 5060;
const RTP_PORT: u16 = 20_000;
/// 50 pps G.711 for a second each way, per media check.
const PACKETS: u64 = 50;
const NG_FIRST: u16 = 2223;
const NG_SECOND: u16 = 2224;

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn relayd_bin() -> PathBuf {
    tests::bins::cargo_bin("relay-user", "relayd")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/kamailio")
        .join(name)
}

fn kamailio_available() -> bool {
    Command::new("kamailio")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Skips (or fails under CI) without Debian's kamailio.
macro_rules! require_kamailio {
    () => {
        if !kamailio_available() {
            assert!(
                !tests::in_ci(),
                "kamailio is not installed (cargo xtask setup)"
            );
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("SKIPPED {}: kamailio not installed\n", module_path!()).as_bytes(),
            );
            return;
        }
    };
}

/// One relayd in the relay namespace.
struct Relayd {
    instance: String,
    ng: NgClient,
    child: Option<NsChild>,
    log: PathBuf,
    xdp: bool,
}

impl Relayd {
    /// `plane`: `xdp-native` (on both relay veths) or `userspace`.
    fn start(
        topo: &Topology,
        n: u8,
        ng_port: u16,
        plane: &str,
        ports: &str,
        extra: &[&str],
    ) -> anyhow::Result<Relayd> {
        let instance = format!("sbct{}k{}n{n}", std::process::id(), topo.id());
        let log = std::env::temp_dir().join(format!("{instance}-relayd.log"));
        let ng_addr = SocketAddr::from(([127, 0, 0, 1], ng_port));
        let ng = topo.relay.enter(|| NgClient::new(ng_addr))?;
        let logf = std::fs::File::create(&log)?;
        let mut cmd = topo.relay.command(relayd_bin());
        cmd.args(tests::kamailio::relayd_args(
            topo, plane, ports, &instance, ng_addr,
        ))
        .args([
            "--state-dir",
            &std::env::temp_dir().join(&instance).to_string_lossy(),
        ])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf);
        let mut child = NsChild::spawn(&mut cmd)?;
        if let Err(e) = ng.wait_ready(Duration::from_secs(15)) {
            let st = child.try_wait()?;
            bail!(
                "relayd {instance} not answering ng: {e}; exit {st:?}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Ok(Relayd {
            instance,
            ng,
            child: Some(child),
            log,
            xdp: plane != "userspace",
        })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The pinned instance's per-reason XDP counters.
    fn stats(&self, topo: &Topology) -> anyhow::Result<serde_json::Value> {
        let out = topo.relay.run(
            &relayd_bin().to_string_lossy(),
            ["--status", "--json", "--instance", &self.instance],
        )?;
        let v: serde_json::Value = serde_json::from_str(&out).context("status JSON")?;
        Ok(v["stats"].clone())
    }

    /// Waits until relayd holds no call (the module deleted them); fails with the list.
    fn wait_no_calls(&self, within: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + within;
        loop {
            let calls = self.ng.list()?;
            if calls.is_empty() {
                return Ok(());
            }
            if Instant::now() > end {
                bail!("relayd {} still holds {calls:?}", self.instance);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self, topo: &Topology) {
        if let Some(mut c) = self.child.take() {
            let _ = c.stop(Duration::from_secs(5));
        }
        if self.xdp {
            let _ = topo.relay.exec(
                &relayd_bin().to_string_lossy(),
                [
                    "--cleanup",
                    "--instance",
                    &self.instance,
                    "--interface",
                    &topo.relay_caller_if.dev,
                    "--interface",
                    &topo.relay_callee_if.dev,
                ],
            );
        }
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(&self.instance));
    }
}

/// Kamailio, relayd(s), the two RTP sockets, on a fresh topology.
struct Stack {
    topo: Topology,
    relays: Vec<Relayd>,
    kamailio: Option<NsChild>,
    kam_log: PathBuf,
    kam_cfg: PathBuf,
    caller_rtp: std::net::UdpSocket,
    callee_rtp: std::net::UdpSocket,
    _peer_pass: Option<aya::Ebpf>,
    recorder: Option<parity::Recorder>,
}

/// How the stack is set up (default: one XDP relayd, `trust-address`, nothing recorded).
#[derive(Clone, Copy, Default)]
struct Setup {
    /// `-A WITH_SIP_SOURCE`: the `SIP-source-address` variant of the configuration.
    sip_source: bool,
    /// Two relays: first a userspace one that cannot take a call, weighted so the module
    /// always asks it first, then the XDP one.
    failover: Option<Full>,
    /// `-A WITH_DELETE_DELAY`: BYE deletes with `delete-delay=10`.
    delete_delay: bool,
    /// Kamailio talks to relayd through a [`parity::Recorder`] that keeps its requests.
    record: bool,
}

/// Why the first relay of the failover set cannot take a call.
#[derive(Clone, Copy, Debug)]
enum Full {
    /// `--max-sessions 0`: answers `load limit`.
    SessionLimit,
    /// One port pair where a call needs two: answers `Ran out of ports`.
    OutOfPorts,
}

impl Stack {
    fn start(setup: Setup) -> anyhow::Result<Stack> {
        let topo = Topology::three(TopologyOptions {
            gro: Some(true),
            forwarding: true,
            ..Default::default()
        })?;
        let xdp = Relayd::start(&topo, 1, NG_SECOND, "xdp-native", "30000-30999", &[])?;
        let peer_pass = tests::xdp::attach_peer_pass(&topo, &xdp.instance)?;
        let mut relays = vec![xdp];
        let socks = if let Some(why) = setup.failover {
            let (ports, extra): (&str, &[&str]) = match why {
                Full::SessionLimit => ("31000-31099", &["--max-sessions", "0"]),
                Full::OutOfPorts => ("31000-31001", &[]),
            };
            let full = Relayd::start(&topo, 2, NG_FIRST, "userspace", ports, extra)?;
            relays.insert(0, full);
            // Kamailio hashes the Call-ID over the weights (256 buckets at most): 1000 to 1
            // sends every call to the first relay first.
            format!("udp:127.0.0.1:{NG_FIRST}=1000 udp:127.0.0.1:{NG_SECOND}=1")
        } else if setup.record {
            format!("udp:127.0.0.1:{}", parity::NG_RECORDER)
        } else {
            format!("udp:127.0.0.1:{NG_SECOND}")
        };
        let recorder = if setup.record {
            Some(parity::Recorder::start(
                &topo.relay,
                SocketAddr::from(([127, 0, 0, 1], NG_SECOND)),
            )?)
        } else {
            None
        };
        let listen = SocketAddr::new(topo.relay_caller_if.ip(false), SIP_PORT);
        let uas = SocketAddr::new(topo.callee_if.ip(false), SIP_PORT);
        let cfg = tests::kamailio::relayd_cfg(listen, &socks, uas)?;
        let tag = format!("sbct{}k{}", std::process::id(), topo.id());
        let cfg_path = std::env::temp_dir().join(format!("{tag}-kamailio.cfg"));
        std::fs::write(&cfg_path, cfg)?;
        let kam_log = std::env::temp_dir().join(format!("{tag}-kamailio.log"));
        let mut defines = Vec::new();
        if setup.sip_source {
            defines.push("WITH_SIP_SOURCE");
        }
        if setup.delete_delay {
            defines.push("WITH_DELETE_DELAY");
        }
        let kam =
            tests::kamailio::start_in(&topo.relay, &cfg_path, &defines, None, listen, &kam_log)?;
        let caller_rtp = rtp::bind_in(
            &topo.caller,
            SocketAddr::new(topo.caller_if.ip(false), RTP_PORT),
        )?;
        let callee_rtp = rtp::bind_in(
            &topo.callee,
            SocketAddr::new(topo.callee_if.ip(false), RTP_PORT),
        )?;
        Ok(Stack {
            topo,
            relays,
            kamailio: Some(kam),
            kam_log,
            kam_cfg: cfg_path,
            caller_rtp,
            callee_rtp,
            _peer_pass: Some(peer_pass),
            recorder,
        })
    }

    fn kam_log(&self) -> String {
        std::fs::read_to_string(&self.kam_log).unwrap_or_default()
    }

    /// The XDP relayd holds no call within 10 s (the BYE's `delete` reached it).
    fn assert_deleted_after_bye(&self) {
        self.xdp()
            .wait_no_calls(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("deleted on BYE: {e:#}\nkamailio:\n{}", self.kam_log()));
    }

    /// The XDP relayd (the only one, or the second of the failover set).
    fn xdp(&self) -> &Relayd {
        self.relays.last().expect("a relay")
    }

    fn kamailio_sip(&self) -> SocketAddr {
        SocketAddr::new(self.topo.relay_caller_if.ip(false), SIP_PORT)
    }

    fn relay_ip(&self) -> std::net::IpAddr {
        self.topo.relay_caller_if.ip(false)
    }

    /// The callee's sipp, started and bound.
    fn uas(&self, scenario: &str, rtp: bool) -> SippRun {
        let mut s = Sipp::new(
            scenario,
            SocketAddr::new(self.topo.callee_if.ip(false), SIP_PORT),
        );
        if rtp {
            s.var("rtp_port", &RTP_PORT.to_string());
        }
        let mut run = s.spawn(&self.topo.callee).expect("spawn uas");
        run.wait_bound(&self.topo.callee).expect("uas bound");
        run
    }

    /// The caller's sipp calling through Kamailio, holding `hold` after each answer.
    fn uac(&self, scenario: &str, hold: Duration) -> SippRun {
        let mut s = Sipp::uac(
            scenario,
            SocketAddr::new(self.topo.caller_if.ip(false), SIP_PORT),
            self.kamailio_sip(),
            "1001",
            "2002",
            RTP_PORT,
        );
        s.pause = hold;
        s.spawn(&self.topo.caller).expect("spawn uac")
    }

    /// Where each side was told to send (both must be relayd), then RTP both ways, checked.
    fn media(&self, uac: &mut SippRun, uas: &mut SippRun, tags: (&str, &str), stream: u32) {
        let at_caller = uac
            .wait_media(tags.0, Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("caller got an SDP: {e:#}\nkamailio:\n{}", self.kam_log()));
        let at_callee = uas
            .wait_media(tags.1, Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("callee got an SDP: {e:#}\nkamailio:\n{}", self.kam_log()));
        assert_eq!(at_caller.ip(), self.relay_ip(), "caller sends to relayd");
        assert_eq!(at_callee.ip(), self.relay_ip(), "callee sends to relayd");
        let check = MediaCheck::run(
            &self.caller_rtp,
            &self.callee_rtp,
            at_caller,
            at_callee,
            PACKETS,
            stream,
        );
        check.assert_lossless();
        let (at_callee_from, at_caller_from) = check.sources();
        assert!(
            at_callee_from
                .iter()
                .chain(&at_caller_from)
                .all(|s| s.ip() == self.relay_ip()),
            "media comes from relayd: {at_callee_from:?} {at_caller_from:?}"
        );
    }

    /// XDP forwarded (nearly) all of `total` packets: the first of each direction may take the
    /// slow path while the neighbour entry resolves.
    fn assert_kernel_forwarded(&self, total: u64, slack: u64) {
        let st = self.xdp().stats(&self.topo).expect("relayd status");
        let kernel =
            st["relay_redirect"].as_u64().unwrap_or(0) + st["relay_tx"].as_u64().unwrap_or(0);
        assert!(
            kernel + slack >= total,
            "kernel forwarded {kernel} of {total}: {st}\nrelayd log:\n{}",
            self.xdp().log_text()
        );
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SIGTERM: Kamailio's main process takes its children down with it.
        if let Some(mut k) = self.kamailio.take() {
            let _ = k.stop(Duration::from_secs(5));
        }
        self._peer_pass = None;
        for r in &mut self.relays {
            r.stop(&self.topo);
        }
        let _ = std::fs::remove_file(&self.kam_cfg);
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.kam_log);
        }
    }
}

/// A call with a re-INVITE through Kamailio and relayd: media relayed by XDP byte-exact before
/// and after the re-INVITE, `rtpengine_query` answered on the BYE, the call deleted after it.
fn call_with_reinvite(sip_source: bool) {
    require_privileged!();
    require_sipp!();
    require_kamailio!();
    let _s = serial();
    let stack = Stack::start(Setup {
        sip_source,
        ..Setup::default()
    })
    .expect("stack up");
    let mut uas = stack.uas("uas.xml", true);
    let mut uac = stack.uac("uac_reinvite.xml", Duration::from_secs(4));
    stack.media(&mut uac, &mut uas, ("MEDIA", "MEDIA"), 1);
    stack.media(&mut uac, &mut uas, ("REMEDIA", "REINVITE"), 3);
    let (uac, uas) = (uac.finish(), uas.finish());
    uac.assert_ok();
    uas.assert_ok();
    stack.assert_kernel_forwarded(4 * PACKETS, 8);
    stack.assert_deleted_after_bye();
    let log = stack.kam_log();
    assert!(
        log.contains("relayd query ok"),
        "rtpengine_query answered:\n{log}"
    );
    assert!(!log.contains("rtpengine_manage failed"), "{log}");
    // The module pings every relay at start and disables those that do not answer.
    assert!(
        log.contains(&format!(
            "<udp:127.0.0.1:{NG_SECOND}> found, support for it enabled"
        )),
        "start-up ping answered:\n{log}"
    );
    assert!(!log.contains("does not respond"), "{log}");
}

#[test]
fn call_with_reinvite_trust_address() {
    call_with_reinvite(false);
}

#[test]
fn call_with_reinvite_sip_source_address() {
    call_with_reinvite(true);
}

/// A late offer: INVITE without SDP, the offer in the 200 (the module sends it with the tags
/// swapped: the callee's To-tag as from-tag), the answer in the ACK. Media relayed, the call
/// deleted on BYE.
#[test]
fn late_offer_in_200_answer_in_ack() {
    require_privileged!();
    require_sipp!();
    require_kamailio!();
    let _s = serial();
    let stack = Stack::start(Setup::default()).expect("stack up");
    let mut uas = stack.uas("uas_late.xml", true);
    let mut uac = stack.uac("uac_late.xml", Duration::from_secs(4));
    stack.media(&mut uac, &mut uas, ("MEDIA", "MEDIA"), 1);
    let (uac, uas) = (uac.finish(), uas.finish());
    uac.assert_ok();
    uas.assert_ok();
    stack.assert_kernel_forwarded(2 * PACKETS, 4);
    stack.assert_deleted_after_bye();
    let log = stack.kam_log();
    assert!(!log.contains("rtpengine_manage failed"), "{log}");
}

/// A caller behind NAT: its SDP names a private address, its SIP and RTP come from its real
/// one. With `SIP-source-address` relayd sends the callee's media to where the SIP came from
/// at once; with `trust-address` to the SDP's address (nowhere), until the caller's own media
/// teaches it better. The callee speaks first, so the difference shows.
fn caller_behind_nat(sip_source: bool) {
    require_privileged!();
    require_sipp!();
    require_kamailio!();
    let _s = serial();
    let stack = Stack::start(Setup {
        sip_source,
        ..Setup::default()
    })
    .expect("stack up");
    let mut uas = stack.uas("uas.xml", true);
    let mut s = Sipp::uac(
        "uac_nat.xml",
        SocketAddr::new(stack.topo.caller_if.ip(false), SIP_PORT),
        stack.kamailio_sip(),
        "1001",
        "2002",
        RTP_PORT,
    );
    s.var("sdp_ip", "192.168.77.7");
    s.pause = Duration::from_secs(4);
    let mut uac = s.spawn(&stack.topo.caller).expect("spawn uac");
    uac.wait_media("MEDIA", Duration::from_secs(15))
        .expect("caller answered");
    let at_callee = uas
        .wait_media("MEDIA", Duration::from_secs(15))
        .expect("callee offered");
    const FIRST: u64 = 10;
    let send = SendConfig::g711(
        vec![Flow {
            stream: 9,
            dest: at_callee,
        }],
        FIRST,
    );
    let mut rc = RecvConfig::new(Duration::from_millis(FIRST * 20 + 1500));
    rc.expect = Some(FIRST);
    let got = std::thread::scope(|sc| {
        let rx = sc.spawn(|| rtp::receive(&stack.caller_rtp, &rc).expect("receive"));
        rtp::send(&stack.callee_rtp, &send);
        rx.join().expect("receiver")
    });
    if sip_source {
        assert_eq!(
            got.unique(),
            FIRST,
            "sent to the SIP source at once: {got:?}"
        );
    } else {
        assert_eq!(
            got.unique(),
            0,
            "sent to the SDP's private address: {got:?}"
        );
    }
    let (uac, uas) = (uac.finish(), uas.finish());
    uac.assert_ok();
    uas.assert_ok();
    stack
        .xdp()
        .wait_no_calls(Duration::from_secs(10))
        .expect("deleted");
}

#[test]
fn caller_behind_nat_sip_source_address() {
    caller_behind_nat(true);
}

#[test]
fn caller_behind_nat_trust_address() {
    caller_behind_nat(false);
}

/// `rtpengine_delete("delete-delay=10")` on the BYE: the call outlives the BYE (still listed
/// and queried), then goes by itself.
#[test]
fn delete_delay_keeps_the_call_after_bye() {
    require_privileged!();
    require_sipp!();
    require_kamailio!();
    let _s = serial();
    let stack = Stack::start(Setup {
        delete_delay: true,
        ..Setup::default()
    })
    .expect("stack up");
    let uas = stack.uas("uas.xml", true);
    let uac = stack.uac("uac.xml", Duration::from_millis(200));
    let (uac, uas) = (uac.finish(), uas.finish());
    uac.assert_ok();
    uas.assert_ok();
    let bye_answered = Instant::now();
    let relay = stack.xdp();
    let held = relay.ng.list().expect("list");
    assert_eq!(
        held.len(),
        1,
        "kept after the BYE: {held:?}\n{}",
        stack.kam_log()
    );
    let q = relay.ng.query(&held[0]).expect("query");
    assert_eq!(q.result(), Some("ok"), "{q:?}");
    // Gone by itself, with no ng request to prompt it (Kamailio sends none after the BYE):
    // watched in relayd's call table file, not over ng.
    let table = std::env::temp_dir()
        .join(&relay.instance)
        .join(relay_user::media::state::STATE_FILE);
    assert!(
        std::fs::read_to_string(&table).is_ok_and(|t| t.contains(held[0].as_str())),
        "{} holds the delayed call",
        table.display()
    );
    let end = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&table).is_ok_and(|t| t.contains(held[0].as_str())) {
        assert!(
            Instant::now() < end,
            "call still in {} 30 s after the BYE",
            table.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    relay
        .wait_no_calls(Duration::from_secs(5))
        .expect("deleted when the delay ran out");
    // The delay was honoured (a lower bound only: the deletion itself may come late).
    assert!(
        bye_answered.elapsed() >= Duration::from_secs(5),
        "gone after {:?}",
        bye_answered.elapsed()
    );
}

/// CANCEL before the answer, and a 503 from the callee: the module deletes the call it offered.
/// (Kamailio's tm turns the callee's 503 into a 500 towards the caller, as RFC 3261 16.7 asks
/// of a proxy.)
#[test]
fn cancel_and_failure_delete_the_call() {
    require_privileged!();
    require_sipp!();
    require_kamailio!();
    let _s = serial();
    let stack = Stack::start(Setup::default()).expect("stack up");
    for (uac_sc, uas_sc, final_code) in [
        ("uac_cancel.xml", "uas_ring.xml", 487),
        ("uac.xml", "uas_503.xml", 500),
    ] {
        let uas = stack.uas(uas_sc, false);
        let uac = stack.uac(uac_sc, Duration::ZERO);
        let (uac, uas) = (uac.finish(), uas.finish());
        uac.assert_ok();
        uas.assert_ok();
        let finals: Vec<_> = uac
            .trace
            .finals("INVITE")
            .iter()
            .filter_map(|m| m.status())
            .collect();
        assert_eq!(finals, [final_code], "{uac}");
        // The offer went through relayd: the callee was told to send to it.
        let invite = uas.trace.requests_received("INVITE");
        let body = invite
            .first()
            .map(|m| m.body().to_string())
            .unwrap_or_default();
        assert!(
            body.contains(&format!("c=IN IP4 {}", stack.relay_ip())),
            "offer anchored on relayd: {body}"
        );
        stack
            .xdp()
            .wait_no_calls(Duration::from_secs(10))
            .unwrap_or_else(|e| {
                panic!(
                    "{uac_sc}: call deleted: {e:#}\nkamailio:\n{}",
                    stack.kam_log()
                )
            });
    }
    // The CANCEL's delete is followed by the reply's and the failure route's for a call
    // already gone: rtpengine answers those `ok` (with a warning), so the script sees success.
    let log = stack.kam_log();
    assert!(!log.contains("rtpengine_manage failed"), "{log}");
}

/// Two relayds in the set: the first cannot take the call (`why`), and the module moves the
/// call to the second, which relays it.
fn failover(why: Full, refusal: &str) {
    require_privileged!();
    require_sipp!();
    require_kamailio!();
    let _s = serial();
    let stack = Stack::start(Setup {
        failover: Some(why),
        ..Setup::default()
    })
    .expect("stack up");
    let mut uas = stack.uas("uas.xml", true);
    let mut uac = stack.uac("uac.xml", Duration::from_secs(4));
    stack.media(&mut uac, &mut uas, ("MEDIA", "MEDIA"), 1);
    let (uac, uas) = (uac.finish(), uas.finish());
    uac.assert_ok();
    uas.assert_ok();
    let full = &stack.relays[0];
    let log = full.log_text();
    assert!(
        log.contains(refusal),
        "the first relayd was asked and refused ({why:?}):\n{log}"
    );
    assert!(
        full.ng.list().expect("list").is_empty(),
        "first relayd holds nothing"
    );
    // Both answered the module's start-up ping: the first was asked, not skipped as dead.
    let kam = stack.kam_log();
    for port in [NG_FIRST, NG_SECOND] {
        assert!(
            kam.contains(&format!(
                "<udp:127.0.0.1:{port}> found, support for it enabled"
            )),
            "ping of {port} answered:\n{kam}"
        );
    }
    stack.assert_kernel_forwarded(2 * PACKETS, 4);
    stack
        .xdp()
        .wait_no_calls(Duration::from_secs(10))
        .expect("deleted");
}

#[test]
fn session_limit_moves_kamailio_to_the_next_relayd() {
    failover(Full::SessionLimit, "session limit reached");
}

#[test]
fn out_of_ports_moves_kamailio_to_the_next_relayd() {
    failover(Full::OutOfPorts, "Ran out of ports");
}

/// The README's Kamailio excerpt is the tested configuration's, word for word.
#[test]
fn readme_excerpt_is_the_tested_config() {
    let cfg = std::fs::read_to_string(fixture("relayd.cfg")).expect("config");
    let readme =
        std::fs::read_to_string(tests::bins::workspace_root().join("README.md")).expect("README");
    let between = |s: &str| -> String {
        let begin = "# --- README: relayd begin ---\n";
        let end = "# --- README: relayd end ---";
        let from = s.find(begin).expect("begin marker") + begin.len();
        let to = from + s[from..].find(end).expect("end marker");
        s[from..to].to_string()
    };
    assert_eq!(
        between(&readme),
        between(&cfg),
        "README's excerpt differs from tests/fixtures/kamailio/relayd.cfg"
    );
}

// After the macros it uses.
#[path = "kamailio_relayd/parity.rs"]
mod parity;
