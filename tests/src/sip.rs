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

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::netns::{Netns, NsChild};
use crate::rtp::{self, Flow, RecvConfig, SendConfig};

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

/// One sipp process to start: a scenario file and its command line.
#[derive(Debug, Clone)]
pub struct Sipp {
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
    pub extra: Vec<String>,
}

impl Sipp {
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
        cmd.arg("-sf")
            .arg(scenario(&self.scenario))
            .args(["-nostdin", "-t", self.transport])
            .args(["-i", &self.local.ip().to_string()])
            .args(["-p", &self.local.port().to_string()])
            // sipp binds RTP echo sockets (audio and video: port and port + 2, with their RTCP)
            // even when nobody uses them: keep them out of the way of our RTP sockets and of
            // other sipps in the namespace.
            .args([
                "-mp",
                &(40_000 + (self.local.port() % 2000) * 8).to_string(),
            ])
            .args(["-m", &self.calls.to_string()])
            .args(["-d", &self.pause.as_millis().to_string()])
            .args(["-timeout", &format!("{}s", self.deadline.as_secs().max(1))])
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
        })
    }
}

/// A running (or finished) sipp.
#[derive(Debug)]
pub struct SippRun {
    child: Option<NsChild>,
    dir: PathBuf,
    stem: String,
    pub command: String,
    started: Instant,
    deadline: Duration,
    local: SocketAddr,
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

    /// Waits until sipp's SIP socket is bound (a UAS before its UAC starts).
    pub fn wait_bound(&mut self, ns: &Netns) -> anyhow::Result<()> {
        let end = Instant::now() + Duration::from_secs(5);
        while !udp_bound(ns, self.local) {
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

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = s.len() - max;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// What a sipp did.
#[derive(Debug, Clone)]
pub struct SippOutcome {
    pub name: String,
    pub command: String,
    /// None: it could not be reaped.
    pub status: Option<ExitStatus>,
    /// It ran past its deadline and was killed.
    pub timed_out: bool,
    pub trace: Trace,
    pub logs: Vec<String>,
    pub errors: String,
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

/// One SIP message as sipp traced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub received: bool,
    pub text: String,
}

impl Msg {
    pub fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or("").trim_end()
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        let l = self.first_line().strip_prefix("SIP/2.0 ")?;
        l.get(..3)?.parse().ok()
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&str> {
        let l = self.first_line();
        if l.starts_with("SIP/2.0") {
            return None;
        }
        l.split(' ').next()
    }

    /// First value of a header (case-insensitive name, compact forms not expanded).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers(name).into_iter().next()
    }

    /// Every value of a header, in order.
    pub fn headers(&self, name: &str) -> Vec<&str> {
        self.text
            .lines()
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .filter_map(move |l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            })
            .collect()
    }

    /// The CSeq method.
    pub fn cseq_method(&self) -> Option<&str> {
        self.header("CSeq")?.split_whitespace().nth(1)
    }

    pub fn body(&self) -> &str {
        self.text
            .split_once("\r\n\r\n")
            .or_else(|| self.text.split_once("\n\n"))
            .map_or("", |(_, b)| b)
    }
}

/// A sipp message trace (`-trace_msg`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    pub msgs: Vec<Msg>,
}

impl Trace {
    pub fn parse(text: &str) -> Trace {
        let mut msgs = Vec::new();
        for block in text.split("----------------------------------------------- ") {
            let mut lines = block.splitn(3, '\n');
            let _stamp = lines.next();
            let Some(kind) = lines.next() else { continue };
            let received = kind.contains("message received");
            if !received && !kind.contains("message sent") {
                continue;
            }
            let body = lines.next().unwrap_or("").trim_start_matches(['\r', '\n']);
            msgs.push(Msg {
                received,
                text: body.trim_end().to_string(),
            });
        }
        Trace { msgs }
    }

    pub fn received(&self) -> impl Iterator<Item = &Msg> {
        self.msgs.iter().filter(|m| m.received)
    }

    pub fn sent(&self) -> impl Iterator<Item = &Msg> {
        self.msgs.iter().filter(|m| !m.received)
    }

    /// Final responses (>= 200) received to requests of `method`, in order.
    pub fn finals(&self, method: &str) -> Vec<&Msg> {
        self.received()
            .filter(|m| m.status().is_some_and(|s| s >= 200) && m.cseq_method() == Some(method))
            .collect()
    }

    /// Distinct final statuses received for `method` per Call-ID+CSeq (retransmissions of a
    /// response counted once), as status → count.
    pub fn final_counts(&self, method: &str) -> BTreeMap<u16, usize> {
        let mut seen = std::collections::BTreeSet::new();
        let mut counts = BTreeMap::new();
        for m in self.finals(method) {
            let key = (
                m.header("Call-ID").unwrap_or("").to_string(),
                m.header("CSeq").unwrap_or("").to_string(),
            );
            if seen.insert(key) {
                *counts.entry(m.status().unwrap_or(0)).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Requests received with this method.
    pub fn requests_received(&self, method: &str) -> Vec<&Msg> {
        self.received()
            .filter(|m| m.method() == Some(method))
            .collect()
    }

    /// Distinct Call-IDs of received requests with this method.
    pub fn call_ids_received(&self, method: &str) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for m in self.requests_received(method) {
            let id = m.header("Call-ID").unwrap_or("").to_string();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }
}

impl std::fmt::Display for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The whole trace is long; the first lines and the interesting headers suffice.
        for m in &self.msgs {
            writeln!(
                f,
                "{} {}{}{}",
                if m.received { "<-" } else { "->" },
                m.first_line(),
                m.header("Warning")
                    .map(|w| format!("  [Warning: {w}]"))
                    .unwrap_or_default(),
                m.header("Call-ID")
                    .map(|c| format!("  [{c}]"))
                    .unwrap_or_default()
            )?;
        }
        Ok(())
    }
}

/// Whether a UDP socket is bound at `addr` inside `ns` (reads the thread's /proc/net).
pub fn udp_bound(ns: &Netns, addr: SocketAddr) -> bool {
    let file = if addr.is_ipv4() { "udp" } else { "udp6" };
    let text = ns
        .enter(|| std::fs::read_to_string(format!("/proc/thread-self/net/{file}")))
        .unwrap_or_default();
    let port = format!(":{:04X} ", addr.port());
    text.lines().skip(1).any(|l| {
        l.split_whitespace()
            .nth(1)
            .is_some_and(|local| format!("{local} ").ends_with(&port))
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

/// A bare SIP request/response over UDP for scenarios sipp cannot express.
pub struct RawSip {
    pub sock: UdpSocket,
    pub to: SocketAddr,
}

impl RawSip {
    pub fn bind_in(ns: &Netns, local: SocketAddr, to: SocketAddr) -> std::io::Result<RawSip> {
        let sock = ns.enter(|| UdpSocket::bind(local))?;
        Ok(RawSip { sock, to })
    }

    pub fn local(&self) -> SocketAddr {
        self.sock.local_addr().expect("bound socket")
    }

    pub fn send(&self, msg: &[u8]) -> std::io::Result<()> {
        self.sock.send_to(msg, self.to).map(|_| ())
    }

    /// Everything that arrives within `window` (each datagram as lossy text).
    pub fn collect(&self, window: Duration) -> Vec<String> {
        let end = Instant::now() + window;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            let now = Instant::now();
            if now >= end {
                return out;
            }
            let _ = self
                .sock
                .set_read_timeout(Some((end - now).max(Duration::from_millis(1))));
            match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(_) => return out,
            }
        }
    }

    /// Waits for a message whose first line starts with `prefix` and whose CSeq header
    /// contains `cseq` (e.g. "1 INVITE"); others are collected into `seen`.
    pub fn wait_for(
        &self,
        prefix: &str,
        cseq: &str,
        timeout: Duration,
        seen: &mut Vec<String>,
    ) -> Option<String> {
        let end = Instant::now() + timeout;
        let mut buf = vec![0u8; 65_536];
        while Instant::now() < end {
            let _ = self.sock.set_read_timeout(Some(Duration::from_millis(50)));
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(text.clone());
            let m = Msg {
                received: true,
                text: text.clone(),
            };
            if m.first_line().starts_with(prefix) && m.header("CSeq").is_some_and(|c| c == cseq) {
                return Some(text);
            }
        }
        None
    }
}

/// A carrier-side INVITE with SDP, byte-identical every time it is built with the same
/// arguments (fixed branch, tag, Call-ID), so sending it again is a true retransmission.
pub fn invite(
    local: SocketAddr,
    remote: SocketAddr,
    cli: &str,
    cld: &str,
    call_id: &str,
    rtp_port: u16,
) -> String {
    let fam = if local.is_ipv4() { "IP4" } else { "IP6" };
    let ip = local.ip();
    let sdp = format!(
        "v=0\r\no=carrier 1 1 IN {fam} {ip}\r\ns=-\r\nc=IN {fam} {ip}\r\nt=0 0\r\n\
         m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    );
    format!(
        "INVITE sip:{cld}@{remote} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id}-1\r\n\
         From: <sip:{cli}@{local}>;tag=raw-{call_id}\r\n\
         To: <sip:{cld}@{remote}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:{cli}@{local}>\r\n\
         Max-Forwards: 70\r\n\
         User-Agent: raw-carrier\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// The in-dialog request (ACK or BYE) for a call answered by `ok` (a 200 to [`invite`]).
pub fn in_dialog(
    method: &str,
    cseq: u32,
    local: SocketAddr,
    remote: SocketAddr,
    call_id: &str,
    ok: &str,
) -> String {
    let m = Msg {
        received: true,
        text: ok.to_string(),
    };
    let to = m.header("To").unwrap_or("").to_string();
    let from = m.header("From").unwrap_or("").to_string();
    // Remote target: the 200's Contact; route set: its Record-Routes (loose routing).
    let target = m
        .header("Contact")
        .and_then(|c| {
            let s = c.find('<')? + 1;
            let e = c[s..].find('>')? + s;
            Some(c[s..e].to_string())
        })
        .unwrap_or_else(|| format!("sip:{remote}"));
    let routes = m.headers("Record-Route");
    let route = if routes.is_empty() {
        String::new()
    } else {
        format!("Route: {}\r\n", routes.join(", "))
    };
    format!(
        "{method} {target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id}-{method}{cseq}\r\n\
         From: {from}\r\n\
         To: {to}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n\
         {route}Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Where an SDP body says to send media (first c= and first m=audio).
pub fn sdp_media(body: &str) -> Option<SocketAddr> {
    let mut ip = None;
    let mut port = None;
    for l in body.lines() {
        let l = l.trim();
        if let Some(c) = l
            .strip_prefix("c=IN IP4 ")
            .or_else(|| l.strip_prefix("c=IN IP6 "))
        {
            ip = ip.or_else(|| c.trim().parse::<IpAddr>().ok());
        }
        if let Some(m) = l.strip_prefix("m=audio ") {
            port = port.or_else(|| m.split_whitespace().next()?.parse::<u16>().ok());
        }
    }
    Some(SocketAddr::new(ip?, port?))
}

/// INVITEs with a NUL byte, which no SIP grammar rule allows (RFC 3261 §25.1): one in the
/// Request-URI (`sip:100` → `sip\0100`), one in the From tag. Each deserves a 400.
pub fn nul_bytes(local: SocketAddr, remote: SocketAddr) -> Vec<(&'static str, Vec<u8>)> {
    let msg = |k: &str| {
        format!(
            "INVITE sip:100@{remote} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-nul{k}\r\n\
             From: <sip:1@{local}>;tag=x\r\nTo: <sip:100@{remote}>\r\nCall-ID: nul{k}@x\r\n\
             CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    };
    let mut uri = msg("u");
    uri[10] = 0;
    let mut tag = msg("t");
    let at = tag.windows(5).position(|w| w == b"tag=x").expect("tag") + 4;
    tag[at] = 0;
    vec![
        ("NUL in the Request-URI", uri),
        ("NUL in the From tag", tag),
    ]
}

/// Malformed SIP for a robustness burst: garbage, truncated and missing headers, a lying
/// Content-Length, an oversized datagram. Each entry: (what, bytes).
pub fn malformed_messages(local: SocketAddr, remote: SocketAddr) -> Vec<(&'static str, Vec<u8>)> {
    // A different branch (and Call-ID) each, so none is taken for another's retransmission.
    let via = |k: &str| format!("Via: SIP/2.0/UDP {local};branch=z9hG4bK-bad-{k}");
    let base = |call: &str, extra: &str, clen: &str| {
        format!(
            "INVITE sip:100@{remote} SIP/2.0\r\n{}\r\nFrom: <sip:1@{local}>;tag=x\r\n\
             To: <sip:100@{remote}>\r\nCall-ID: bad-{call}@x\r\nCSeq: 1 INVITE\r\n\
             Max-Forwards: 70\r\n{extra}Content-Length: {clen}\r\n\r\n",
            via(call)
        )
        .into_bytes()
    };
    let mut v: Vec<(&'static str, Vec<u8>)> = vec![
        (
            "random bytes",
            (0..300u32).map(|i| (i * 37 % 251) as u8).collect(),
        ),
        ("empty datagram", Vec::new()),
        ("crlf keepalive", b"\r\n\r\n".to_vec()),
        ("not sip", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        (
            "request line only",
            format!("INVITE sip:100@{remote} SIP/2.0\r\n").into_bytes(),
        ),
        (
            "bad version",
            format!("INVITE sip:100@{remote} SIP/9.9\r\n{}\r\n\r\n", via("v")).into_bytes(),
        ),
        (
            "truncated headers",
            format!(
                "INVITE sip:100@{remote} SIP/2.0\r\n{}\r\nFrom: <sip:1@",
                via("t")
            )
            .into_bytes(),
        ),
        (
            "missing Call-ID",
            format!(
                "INVITE sip:100@{remote} SIP/2.0\r\n{}\r\nFrom: <sip:1@{local}>;tag=x\r\n\
                 To: <sip:100@{remote}>\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n\
                 Content-Length: 0\r\n\r\n",
                via("m")
            )
            .into_bytes(),
        ),
        ("huge Content-Length", base("h", "", "4294967296000")),
        ("Content-Length beyond the datagram", base("c", "", "5000")),
        ("negative Content-Length", base("n", "", "-1")),
        ("bad CSeq", {
            let mut b = base("s", "", "0");
            let s = String::from_utf8_lossy(&b).replace("CSeq: 1 INVITE", "CSeq: x INVITE");
            b = s.into_bytes();
            b
        }),
        (
            "header without colon",
            base("k", "This is not a header\r\n", "0"),
        ),
        ("oversized", {
            let mut b = base("o", &format!("X-Pad: {}\r\n", "a".repeat(60_000)), "0");
            b.truncate(65_000);
            b
        }),
        ("binary after request line", {
            let mut b = format!("INVITE sip:100@{remote} SIP/2.0\r\n").into_bytes();
            b.extend((0..200u32).map(|i| (i * 91 % 256) as u8));
            b
        }),
    ];
    v.push(("response with no transaction", {
        format!(
            "SIP/2.0 200 OK\r\n{}\r\nFrom: <sip:1@{local}>;tag=x\r\nTo: <sip:100@{remote}>\r\n\
             Call-ID: nobody@x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
            via("r")
        )
        .into_bytes()
    }));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_parses_sipp_message_file() {
        let text = "----------------------------------------------- 2026-11-23 12:04:32.130059\n\
            UDP message sent (20 bytes):\n\nINVITE sip:1@h SIP/2.0\r\nCSeq: 1 INVITE\r\n\
            Call-ID: a\r\n\r\nv=0\r\n\n\
            ----------------------------------------------- 2026-11-23 12:04:32.130440\n\
            UDP message received [229] bytes :\n\nSIP/2.0 403 Forbidden\r\nCSeq: 1 INVITE\r\n\
            Warning: 399 sbc \"no matching auth rule\"\r\nCall-ID: a\r\n\r\n\n\
            ----------------------------------------------- 2026-11-23 12:04:32.130440\n\
            UDP message received [229] bytes :\n\nSIP/2.0 403 Forbidden\r\nCSeq: 1 INVITE\r\n\
            Call-ID: a\r\n\r\n";
        let t = Trace::parse(text);
        assert_eq!(t.msgs.len(), 3);
        assert_eq!(t.msgs[0].method(), Some("INVITE"));
        assert!(!t.msgs[0].received);
        assert_eq!(t.msgs[0].body().trim(), "v=0");
        assert_eq!(t.msgs[1].status(), Some(403));
        assert!(t.msgs[1].header("warning").unwrap().contains("no matching"));
        assert_eq!(t.final_counts("INVITE"), BTreeMap::from([(403, 1)]));
        assert_eq!(t.finals("INVITE").len(), 2);
    }

    #[test]
    fn raw_messages() {
        let l: SocketAddr = "10.0.0.1:5060".parse().unwrap();
        let r: SocketAddr = "10.0.0.2:5060".parse().unwrap();
        let a = invite(l, r, "441", "331", "cid-1", 20000);
        assert_eq!(a, invite(l, r, "441", "331", "cid-1", 20000));
        let m = Msg {
            received: false,
            text: a.clone(),
        };
        assert_eq!(sdp_media(m.body()), Some("10.0.0.1:20000".parse().unwrap()));
        let clen: usize = m.header("Content-Length").unwrap().parse().unwrap();
        assert_eq!(clen, m.body().len());
        let ok = "SIP/2.0 200 OK\r\nTo: <sip:331@x>;tag=t\r\nFrom: <sip:441@y>;tag=f\r\n\
                  Contact: <sip:b2b@10.0.0.2:5060>\r\nRecord-Route: <sip:10.0.0.2;lr>\r\n\r\n";
        let bye = in_dialog("BYE", 2, l, r, "cid-1", ok);
        assert!(
            bye.starts_with("BYE sip:b2b@10.0.0.2:5060 SIP/2.0\r\n"),
            "{bye}"
        );
        assert!(bye.contains("To: <sip:331@x>;tag=t\r\n"));
        assert!(bye.contains("Route: <sip:10.0.0.2;lr>\r\n"));
        assert!(malformed_messages(l, r).len() > 10);
    }
}
