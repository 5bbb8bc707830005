//! Attack: drive relayd's ng control port from a host that should not.
//!
//! The ng protocol has no authentication: whoever can send a datagram to the port can open
//! relay ports (`offer`), read calls (`list`, `query`) and tear them down (`delete`). So the
//! port must answer only the sources the operator listed (default: loopback), must say nothing
//! at all to anyone else (not even an error: a reply is a reflection and an oracle), and must
//! count what it refused so the operator sees the attempt.
//!
//! Topology: caller — relay — callee namespaces. relayd runs in the relay namespace with ng on
//! `[::]:2223`, so it is reachable on every address of the relay, over IPv4 and IPv6. The
//! callee namespace plays the attacker; the caller namespace is a signalling host that the
//! operator may list with `--ng-allow`.
//!
//! Before the fix (run against commit 90b4ac9): the attacker's `ping` got `pong` over IPv4 and
//! IPv6, its `offer` got an SDP with a relay port (`m=audio 30002`) and created the call
//! (`list` showed it), and nothing was counted. Its IPv6 client, reusing the IPv4 client's
//! cookies, was even handed the IPv4 client's cached replies: the reply cache was keyed by
//! cookie alone, so any host could read replies meant for another. After: silence, no call,
//! every datagram counted in `relayd --status`, one sampled log line.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::Stdio,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use relay_user::ng::{
    client::{ClientError, NgClient},
    message::OfferAnswer,
};
use tests::{
    netns::{NsChild, Topology, TopologyOptions},
    require_privileged,
};

const NG_PORT: u16 = 2223;

/// One relayd at a time: the machine has two cores and the other scenarios measure loss.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn relayd_bin() -> PathBuf {
    tests::bins::cargo_bin("relay-user", "relayd")
}

/// relayd with ng on `[::]:2223` in the relay namespace of a fresh topology.
struct Relayd {
    topo: Topology,
    instance: String,
    log: PathBuf,
    child: Option<NsChild>,
}

impl Relayd {
    /// `extra` gives further relayd arguments, which may name the topology's addresses.
    fn start(plane: &str, extra: impl Fn(&Topology) -> Vec<String>) -> anyhow::Result<Relayd> {
        let topo = Topology::three(TopologyOptions::default())?;
        let extra = extra(&topo);
        let instance = format!("sbcng{}r{}", std::process::id(), topo.id());
        let log = std::env::temp_dir().join(format!("{instance}-relayd.log"));
        let logf = std::fs::File::create(&log)?;
        let mut cmd = topo.relay.command(relayd_bin());
        cmd.args([
            "--dataplane",
            plane,
            "--interface",
            &topo.relay_caller_if.dev,
            "--interface",
            &topo.relay_callee_if.dev,
            "--address",
            &topo.relay_caller_if.ipv4.to_string(),
            "--ports",
            "30000-30099",
            "--instance",
            &instance,
            "--ng-listen",
            &format!("[::]:{NG_PORT}"),
            // The ng counters reach `--status` at this pace.
            "--stats-interval",
            "200ms",
        ])
        .args(&extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf);
        let child = NsChild::spawn(&mut cmd)?;
        let mut r = Relayd {
            topo,
            instance,
            log,
            child: Some(child),
        };
        // Ready when it answers on loopback, from inside its own namespace.
        let local = r.client_in_relay()?;
        if let Err(e) = local.wait_ready(Duration::from_secs(15)) {
            let status = r.child.as_mut().map(|c| c.try_wait());
            bail!(
                "relayd not answering ng on loopback: {e}; exit {status:?}; log:\n{}",
                r.log_text()
            );
        }
        Ok(r)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A client on the relay host itself (loopback), the default allowed source.
    fn client_in_relay(&self) -> anyhow::Result<NgClient> {
        let addr = SocketAddr::from(([127, 0, 0, 1], NG_PORT));
        Ok(self.topo.relay.enter(|| NgClient::new(addr))?)
    }

    /// A client in the attacker's (callee) namespace, aimed at the relay's callee-side address.
    fn attacker(&self, v6: bool) -> anyhow::Result<NgClient> {
        let addr = SocketAddr::new(self.topo.relay_callee_if.ip(v6), NG_PORT);
        let mut c = self.topo.callee.enter(|| NgClient::new(addr))?;
        // Silence is the expected answer: do not wait the default 3 × 1 s for it.
        c.timeout = Duration::from_millis(400);
        c.tries = 2;
        Ok(c)
    }

    /// A client in the caller namespace, aimed at the relay's caller-side address.
    fn signalling_host(&self) -> anyhow::Result<NgClient> {
        let addr = SocketAddr::new(IpAddr::V4(self.topo.relay_caller_if.ipv4), NG_PORT);
        Ok(self.topo.caller.enter(|| NgClient::new(addr))?)
    }

    /// `relayd --status --json`'s `ng` object for this instance.
    fn ng_status(&self) -> anyhow::Result<serde_json::Value> {
        let out = self.topo.relay.run(
            &relayd_bin().to_string_lossy(),
            ["--status", "--json", "--instance", &self.instance],
        )?;
        let v: serde_json::Value = serde_json::from_str(&out).context("status JSON")?;
        v.get("ng")
            .cloned()
            .with_context(|| format!("status has no ng object: {out}"))
    }

    /// Waits until `--status` shows at least `n` refused datagrams; returns the ng object.
    fn wait_denied(&self, n: u64) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ng = self.ng_status();
            if let Ok(ng) = &ng
                && ng["denied"].as_u64().unwrap_or(0) >= n
            {
                return Ok(ng.clone());
            }
            if Instant::now() >= deadline {
                bail!("--status never showed {n} denied ng datagrams: {ng:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Relayd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.stop(Duration::from_secs(5));
        }
        let _ = self.topo.relay.exec(
            &relayd_bin().to_string_lossy(),
            [
                "--cleanup",
                "--instance",
                &self.instance,
                "--interface",
                &self.topo.relay_caller_if.dev,
                "--interface",
                &self.topo.relay_callee_if.dev,
            ],
        );
        let _ = std::fs::remove_file(&self.log);
    }
}

fn offer_from(host: IpAddr, call: &str) -> OfferAnswer {
    let fam = if host.is_ipv4() { "IP4" } else { "IP6" };
    let sdp = format!(
        "v=0\r\no=- 1 1 IN {fam} {host}\r\ns=-\r\nc=IN {fam} {host}\r\nt=0 0\r\n\
         m=audio 40000 RTP/AVP 0\r\n"
    );
    OfferAnswer::new(call, "attacker-tag", &sdp)
}

/// The attacker sends `ping` and `offer` over `v6` or IPv4; asserts both meet silence.
/// Returns how many datagrams it sent.
fn attack(r: &Relayd, v6: bool) -> u64 {
    let a = r.attacker(v6).expect("attacker client");
    let fam = if v6 { "IPv6" } else { "IPv4" };
    match a.ping() {
        Err(ClientError::Timeout { .. }) => {}
        other => panic!("attacker's ping over {fam} was answered: {other:?}"),
    }
    let call = format!("stolen-{fam}");
    match a.offer(&offer_from(r.topo.callee_if.ip(v6), &call)) {
        Err(ClientError::Timeout { .. }) => {}
        other => panic!("attacker's offer over {fam} was answered: {other:?}"),
    }
    2 * u64::from(a.tries)
}

/// The default allow list is loopback only: an attacker on another host gets no reply to
/// `ping` or `offer` over IPv4 or IPv6, no call is created, and the drops are counted in
/// `--status`. Loopback (also as a v4-mapped source on the dual-stack socket) still works.
fn unlisted_source_gets_nothing(plane: &str) {
    let _serial = serial();
    let r = Relayd::start(plane, |_| Vec::new()).expect("relayd");
    let sent = attack(&r, false) + attack(&r, true);

    let local = r.client_in_relay().expect("local client");
    local.ping().expect("loopback is allowed by default");
    assert_eq!(
        local.list().expect("list"),
        Vec::<String>::new(),
        "the attacker's offers created calls"
    );
    let ng = r.wait_denied(sent).expect("denied counter");
    assert_eq!(ng["denied"].as_u64(), Some(sent), "{ng}");
    assert!(
        r.log_text()
            .contains("ng requests from unlisted sources dropped"),
        "no sampled log line for the drops:\n{}",
        r.log_text()
    );
}

#[test]
fn ng_unlisted_source_gets_nothing_userspace() {
    require_privileged!();
    unlisted_source_gets_nothing("userspace");
}

#[test]
fn ng_unlisted_source_gets_nothing_xdp() {
    require_privileged!();
    unlisted_source_gets_nothing("xdp-skb");
}

/// A source the operator lists gets its `pong` and can offer; the attacker beside it still
/// gets nothing. `--ng-allow` replaces the default, so loopback is listed explicitly.
#[test]
fn ng_listed_source_is_served() {
    require_privileged!();
    let _serial = serial();
    let r = Relayd::start("userspace", |t| {
        vec![
            "--ng-allow".into(),
            "127.0.0.0/8".into(),
            "--ng-allow".into(),
            format!("{}/32", t.caller_if.ipv4),
        ]
    });
    let r = match r {
        Ok(r) => r,
        Err(e) => panic!("relayd with --ng-allow: {e:#}"),
    };
    let host = r.signalling_host().expect("signalling client");
    host.ping().expect("a listed source gets pong");
    let sdp = host
        .offer(&offer_from(
            IpAddr::V4(r.topo.caller_if.ipv4),
            "listed-call",
        ))
        .expect("a listed source can offer");
    assert!(sdp.contains("m=audio 300"), "{sdp}");
    // Another listed client whose cookies repeat the first one's (NgClient numbers them per
    // process from 1): its `list` must be answered as a list, not with the offer reply cached
    // for the caller's cookie. Before the fix the cache was keyed by cookie alone.
    let local = r.client_in_relay().expect("local client");
    local.ping().expect("loopback listed too");
    assert_eq!(
        local.list().expect("list"),
        vec!["listed-call".to_string()],
        "a reply cached for another source was replayed"
    );
    let sent = attack(&r, false);
    let ng = r.wait_denied(sent).expect("denied counter");
    assert_eq!(ng["denied"].as_u64(), Some(sent), "{ng}");
}
