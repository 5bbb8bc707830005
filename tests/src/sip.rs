//! SIP peers for scenarios: Debian's `sipp` run inside a namespace with the scenarios under
//! `tests/sipp/`, what it did read back from its message trace and `<log>` lines, and a few
//! raw-UDP peers for what sipp cannot do well (a byte-identical INVITE retransmission, a
//! burst of malformed messages).
//!
//! Media is not sipp's: the scenarios put the port of a Rust RTP socket
//! (`-set rtp_port`) in their SDP and log where the far end's SDP says to send
//! (`MEDIA <call-id> <ip> <port>`), and the test exchanges [`crate::rtp`] streams between those
//! sockets, so every relayed byte is checked.
//!
//! Every sipp is bounded: it runs at most its deadline and is killed (by PID) when its guard
//! drops. Its files live in a temporary directory removed when the [`SippRun`] is dropped,
//! unless `SBCT_KEEP=1`.

mod raw;
pub mod tls;
mod trace;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::netns::{Netns, NsChild};
use crate::rtp::{self, Flow, RecvConfig, SendConfig};
use crate::tail;

pub use raw::{
    RawSip, audio_sdp, in_dialog, invite, invite_with_sdp, malformed_messages, nul_bytes,
    sdp_media, with_sdp,
};
pub use trace::{Msg, Trace};

static RUNS: AtomicU32 = AtomicU32::new(0);

/// `tests/sipp/<name>`.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sipp")
        .join(name)
}

/// Whether sipp is installed (`cargo xtask setup` installs Debian's sip-tester).
pub fn sipp_available() -> bool {
    std::process::Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// The arguments every sipp here starts with: the scenario `tests/sipp/<name>`, bound at
/// `local` over `transport` (`u1`, `t1`), no keyboard, a timeout failing the call, and its
/// message trace, `<log>` lines and errors written to `file("messages.log")`, `file("logs.log")`
/// and `file("errors.log")`.
pub fn base_args(
    cmd: &mut std::process::Command,
    name: &str,
    transport: &str,
    local: SocketAddr,
    file: impl Fn(&str) -> PathBuf,
) {
    cmd.arg("-sf")
        .arg(scenario(name))
        .args(["-nostdin", "-t", transport])
        .args(["-i", &local.ip().to_string()])
        .args(["-p", &local.port().to_string()])
        // sipp binds RTP echo sockets (audio and video: port and port + 2, with their RTCP)
        // even when nobody uses them: keep them out of the way of our RTP sockets and of
        // other sipps.
        .args(["-mp", &(40_000 + (local.port() % 2000) * 8).to_string()])
        .args(["-timeout_error", "-max_recv_loops", "1000"])
        .arg("-trace_msg")
        .arg("-message_file")
        .arg(file("messages.log"))
        .arg("-trace_logs")
        .arg("-log_file")
        .arg(file("logs.log"))
        .arg("-trace_err")
        .arg("-error_file")
        .arg(file("errors.log"));
}

/// One sipp process to start: a scenario file and its command line.
#[derive(Debug, Clone)]
pub struct Sipp {
    /// The scenario's file name under `tests/sipp/` (`uac.xml`); it also names the run's files.
    pub scenario: String,
    /// `-i`/`-p`: where sipp binds its SIP socket (and what it writes in Via/Contact/SDP).
    pub local: SocketAddr,
    /// The far end (UAC only).
    pub remote: Option<SocketAddr>,
    /// `-m`: calls to make (UAC) or to take (UAS) before exiting.
    pub calls: u32,
    /// `-r`/`-rp`: calls per period (UAC).
    pub rate: Option<(u32, Duration)>,
    /// `-l`: concurrent calls at most (UAC).
    pub limit: Option<u32>,
    /// `-d`: length of `<pause/>`: the UAC's hold time, the UAS's ringing time.
    pub pause: Duration,
    /// `-s`: the called number (UAC).
    pub service: Option<String>,
    /// `-au`/`-ap`: digest credentials (UAC).
    pub auth: Option<(String, String)>,
    /// `-set name value`: only variables the scenario declares (sipp refuses others).
    pub vars: Vec<(String, String)>,
    /// `-t`: u1 (UDP, default) or t1 (TCP).
    pub transport: &'static str,
    /// Killed after this long.
    pub deadline: Duration,
    /// Further arguments, passed before the remote address.
    pub extra: Vec<String>,
}

impl Sipp {
    /// One call (`-m 1`) of `scenario` from `local` over UDP with no pause, killed after 30 s;
    /// set the other fields before [`Sipp::spawn`].
    pub fn new(scenario: &str, local: SocketAddr) -> Sipp {
        Sipp {
            scenario: scenario.into(),
            local,
            remote: None,
            calls: 1,
            rate: None,
            limit: None,
            pause: Duration::ZERO,
            service: None,
            auth: None,
            vars: Vec::new(),
            transport: "u1",
            deadline: Duration::from_secs(30),
            extra: Vec::new(),
        }
    }

    /// A carrier: `scenario` from `local` to `remote`, calling `cld` from `cli`, with its RTP
    /// socket at `rtp_port`.
    pub fn uac(
        scenario: &str,
        local: SocketAddr,
        remote: SocketAddr,
        cli: &str,
        cld: &str,
        rtp_port: u16,
    ) -> Sipp {
        let mut s = Sipp::new(scenario, local);
        s.remote = Some(remote);
        s.service = Some(cld.into());
        s.var("cli", cli).var("rtp_port", &rtp_port.to_string());
        s
    }

    /// Adds `-set name value` (the scenario must declare `name`).
    pub fn var(&mut self, name: &str, value: &str) -> &mut Sipp {
        self.vars.push((name.into(), value.into()));
        self
    }

    /// Starts it in `ns`.
    pub fn spawn(&self, ns: &Netns) -> anyhow::Result<SippRun> {
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let stem = self.scenario.trim_end_matches(".xml");
        let dir = std::env::temp_dir().join(format!("sbct{}-sipp{n}-{stem}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let file = |what: &str| dir.join(format!("{stem}_{what}"));
        let mut cmd = ns.command("sipp");
        base_args(&mut cmd, &self.scenario, self.transport, self.local, file);
        cmd.args(["-m", &self.calls.to_string()])
            .args(["-d", &self.pause.as_millis().to_string()])
            .args(["-timeout", &format!("{}s", self.deadline.as_secs().max(1))]);
        if let Some((calls, per)) = self.rate {
            cmd.args([
                "-r",
                &calls.to_string(),
                "-rp",
                &per.as_millis().to_string(),
            ]);
        }
        if let Some(l) = self.limit {
            cmd.args(["-l", &l.to_string()]);
        }
        if let Some(s) = &self.service {
            cmd.args(["-s", s]);
        }
        if let Some((u, p)) = &self.auth {
            cmd.args(["-au", u, "-ap", p]);
            // sipp answers with uri="sip:remote_ip:remote_port" unless told; sipd, as RFC
            // 3261 §22.4 asks, wants the Request-URI its scenarios write.
            if let (Some(s), Some(r)) = (&self.service, self.remote) {
                cmd.args(["-auth_uri", &format!("{s}@{r}")]);
            }
        }
        for (k, v) in &self.vars {
            cmd.args(["-set", k, v]);
        }
        cmd.args(&self.extra);
        if let Some(r) = self.remote {
            cmd.arg(r.to_string());
        }
        let stderr = std::fs::File::create(file("stderr.log"))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let shown = crate::show_command(&cmd);
        let child = NsChild::spawn(&mut cmd)?;
        Ok(SippRun {
            child: Some(child),
            dir,
            stem: stem.to_string(),
            command: shown,
            started: Instant::now(),
            deadline: self.deadline,
            local: self.local,
            transport: self.transport,
        })
    }
}

/// A running (or finished) sipp.
#[derive(Debug)]
pub struct SippRun {
    child: Option<NsChild>,
    dir: PathBuf,
    stem: String,
    /// The command line as started, for failure messages.
    pub command: String,
    started: Instant,
    deadline: Duration,
    local: SocketAddr,
    transport: &'static str,
}

impl SippRun {
    fn path(&self, what: &str) -> PathBuf {
        self.dir.join(format!("{}_{what}", self.stem))
    }

    /// The `<log>` lines written so far.
    pub fn logs(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("logs.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The `<tag> <call-id> <ip> <port>` log lines so far (tag MEDIA, REMEDIA, REINVITE).
    pub fn media(&self, tag: &str) -> Vec<(String, SocketAddr)> {
        self.logs()
            .iter()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                if w.next()? != tag {
                    return None;
                }
                let call = w.next()?.to_string();
                let ip: IpAddr = w.next()?.parse().ok()?;
                let port: u16 = w.next()?.parse().ok()?;
                Some((call, SocketAddr::new(ip, port)))
            })
            .collect()
    }

    /// Waits (at most `timeout`) for the first `tag` media line.
    pub fn wait_media(&mut self, tag: &str, timeout: Duration) -> anyhow::Result<SocketAddr> {
        let end = Instant::now() + timeout;
        loop {
            if let Some((_, a)) = self.media(tag).into_iter().next() {
                return Ok(a);
            }
            if let Some(c) = self.child.as_mut()
                && let Some(st) = c.try_wait()?
            {
                bail!(
                    "{} exited ({st}) before logging {tag}\n{}",
                    self.stem,
                    self.report()
                );
            }
            if Instant::now() > end {
                bail!(
                    "no {tag} line from {} in {timeout:?}\n{}",
                    self.stem,
                    self.report()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until sipp's SIP socket is bound (a UAS before its UAC starts): its UDP socket,
    /// or over TCP (`t1`) its listening one.
    pub fn wait_bound(&mut self, ns: &Netns) -> anyhow::Result<()> {
        let end = Instant::now() + Duration::from_secs(5);
        let tcp = self.transport.starts_with('t');
        while !if tcp {
            tcp_listening(ns, self.local)
        } else {
            udp_bound(ns, self.local)
        } {
            if let Some(c) = self.child.as_mut()
                && let Some(st) = c.try_wait()?
            {
                bail!("{} exited ({st}) at start\n{}", self.stem, self.report());
            }
            if Instant::now() > end {
                bail!("{} did not bind {} in 5 s", self.stem, self.local);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Waits for the exit (killing it at its deadline) and collects what it did.
    pub fn finish(mut self) -> SippOutcome {
        let mut status = None;
        let mut timed_out = false;
        if let Some(mut child) = self.child.take() {
            let end = self.started + self.deadline + Duration::from_secs(2);
            loop {
                match child.try_wait() {
                    Ok(Some(st)) => {
                        status = Some(st);
                        break;
                    }
                    Ok(None) if Instant::now() < end => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        timed_out = true;
                        status = child.stop(Duration::from_secs(2)).ok();
                        break;
                    }
                }
            }
        }
        let read = |w: &str| std::fs::read_to_string(self.path(w)).unwrap_or_default();
        SippOutcome {
            name: self.stem.clone(),
            command: self.command.clone(),
            status,
            timed_out,
            trace: Trace::parse(&read("messages.log")),
            trace_bytes: std::fs::read(self.path("messages.log")).unwrap_or_default(),
            logs: self.logs(),
            errors: read("errors.log"),
            stderr: read("stderr.log"),
        }
    }

    /// What happened so far, for failure messages.
    pub fn report(&self) -> String {
        let read = |w: &str| std::fs::read_to_string(self.path(w)).unwrap_or_default();
        format!(
            "{}\n--- messages:\n{}\n--- errors:\n{}\n--- stderr:\n{}",
            self.command,
            tail(&read("messages.log"), 6000),
            tail(&read("errors.log"), 3000),
            tail(&read("stderr.log"), 2000)
        )
    }
}

impl Drop for SippRun {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.stop(Duration::from_secs(1));
        }
        if std::env::var_os("SBCT_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What a sipp did.
#[derive(Debug, Clone)]
pub struct SippOutcome {
    /// The run's scenario stem (`uac`), to tell runs apart in messages.
    pub name: String,
    /// The command line as started.
    pub command: String,
    /// None: it could not be reaped.
    pub status: Option<ExitStatus>,
    /// It ran past its deadline and was killed.
    pub timed_out: bool,
    /// Every message it sent and received, from its `-trace_msg` file.
    pub trace: Trace,
    /// The `-trace_msg` file as sipp wrote it: each message with its exact byte count, for
    /// checks that need the bytes rather than [`Trace`]'s trimmed text.
    pub trace_bytes: Vec<u8>,
    /// Its log lines (`<log>` actions: `MEDIA`, `REINVITE`, ...).
    pub logs: Vec<String>,
    /// Its error file (unexpected messages, timeouts).
    pub errors: String,
    /// What it wrote on stderr.
    pub stderr: String,
}

impl SippOutcome {
    /// Exit 0: every call followed the scenario.
    pub fn ok(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }

    /// Panics with everything sipp said unless every call followed the scenario.
    #[track_caller]
    pub fn assert_ok(&self) {
        assert!(self.ok(), "sipp {} failed:\n{self}", self.name);
    }
}

impl std::fmt::Display for SippOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\nexit {:?}{}\n--- messages:\n{}\n--- logs:\n{}\n--- errors:\n{}\n--- stderr:\n{}",
            self.command,
            self.status,
            if self.timed_out {
                " (killed at its deadline)"
            } else {
                ""
            },
            self.trace,
            self.logs.join("\n"),
            tail(&self.errors, 4000),
            tail(&self.stderr, 2000)
        )
    }
}

/// Whether a UDP socket is bound at `addr` inside `ns` (reads the thread's /proc/net).
pub fn udp_bound(ns: &Netns, addr: SocketAddr) -> bool {
    ns.enter(|| udp_bound_here(addr))
}

/// Whether a UDP socket is bound at `addr`'s port, of its family, in the calling thread's
/// network namespace.
pub fn udp_bound_here(addr: SocketAddr) -> bool {
    let file = if addr.is_ipv4() { "udp" } else { "udp6" };
    let text = std::fs::read_to_string(format!("/proc/thread-self/net/{file}")).unwrap_or_default();
    let port = format!(":{:04X} ", addr.port());
    text.lines().skip(1).any(|l| {
        l.split_whitespace()
            .nth(1)
            .is_some_and(|local| format!("{local} ").ends_with(&port))
    })
}

/// Whether a TCP socket listens at `addr`'s port, of its family, inside `ns`.
pub fn tcp_listening(ns: &Netns, addr: SocketAddr) -> bool {
    ns.enter(|| {
        let file = if addr.is_ipv4() { "tcp" } else { "tcp6" };
        let text =
            std::fs::read_to_string(format!("/proc/thread-self/net/{file}")).unwrap_or_default();
        let port = format!(":{:04X}", addr.port());
        // Fields: sl, local_address, rem_address, st (0A: LISTEN).
        text.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&port) && f[3] == "0A"
        })
    })
}

/// Both ends of one call's media: the carrier's and the vendor's RTP sockets, each sending 50
/// pps G.711 to where its own side's SDP said, and checking what arrives.
pub struct MediaCheck {
    /// carrier → vendor
    pub forward: (rtp::SendReport, rtp::RecvReport),
    /// vendor → carrier
    pub back: (rtp::SendReport, rtp::RecvReport),
}

impl MediaCheck {
    /// `packets` each way at once; `to_from_carrier` is where the carrier's SDP answer says to
    /// send, `to_from_vendor` where the vendor's offer says.
    pub fn run(
        carrier: &UdpSocket,
        vendor: &UdpSocket,
        to_from_carrier: SocketAddr,
        to_from_vendor: SocketAddr,
        packets: u64,
        stream: u32,
    ) -> MediaCheck {
        let mut rc = RecvConfig::new(Duration::from_millis(packets * 20 + 2500));
        rc.idle = Some(Duration::from_millis(700));
        rc.expect = Some(packets);
        let a = SendConfig::g711(
            vec![Flow {
                stream,
                dest: to_from_carrier,
            }],
            packets,
        );
        let b = SendConfig::g711(
            vec![Flow {
                stream: stream + 1,
                dest: to_from_vendor,
            }],
            packets,
        );
        std::thread::scope(|s| {
            let ha = s.spawn(|| rtp::send_and_receive(carrier, &a, &rc));
            let hb = s.spawn(|| rtp::send_and_receive(vendor, &b, &rc));
            let (sent_a, got_a) = ha.join().expect("carrier rtp").expect("carrier rtp I/O");
            let (sent_b, got_b) = hb.join().expect("vendor rtp").expect("vendor rtp I/O");
            MediaCheck {
                forward: (sent_a, got_b),
                back: (sent_b, got_a),
            }
        })
    }

    /// Every packet arrived once, intact, both ways.
    #[track_caller]
    pub fn assert_lossless(&self) {
        for (what, (sent, got)) in [
            ("carrier→vendor", &self.forward),
            ("vendor→carrier", &self.back),
        ] {
            assert!(sent.total() > 0, "{what}: nothing sent");
            assert_eq!(got.corrupt, 0, "{what}: corrupted packets {got:?}");
            assert_eq!(
                got.lost(sent),
                0,
                "{what}: lost packets: sent {sent:?} got {got:?}"
            );
            assert_eq!(got.duplicates(), 0, "{what}: duplicates");
        }
    }

    /// The single source address each side's media came from.
    pub fn sources(&self) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        let src = |r: &rtp::RecvReport| {
            r.streams
                .values()
                .flat_map(|s| s.sources.iter().copied())
                .collect()
        };
        (src(&self.forward.1), src(&self.back.1))
    }
}
