//! Parity with rtpengine: the ng requests Kamailio's module really sends (recorded between it
//! and relayd during calls), plus a few it sends in other configurations, replayed in order to
//! Debian's rtpengine 10.5 (userspace) and to a fresh relayd; same result, and structurally the
//! same SDP (addresses, ports and origin numbers aside).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use relay_user::ng::{bencode::Value, message};
use tests::netns::Netns;

use super::*;

/// The ng port Kamailio is pointed at when recording (forwarded to relayd's).
pub(super) const NG_RECORDER: u16 = 2225;

/// A UDP forwarder between Kamailio and relayd that keeps every request it passes on.
pub(super) struct Recorder {
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Recorder {
    /// Listens on 127.0.0.1:[`NG_RECORDER`] in `ns`, forwarding to `upstream`.
    pub(super) fn start(ns: &Netns, upstream: SocketAddr) -> anyhow::Result<Recorder> {
        let (front, back) = ns.enter(|| -> std::io::Result<_> {
            let front = UdpSocket::bind(("127.0.0.1", NG_RECORDER))?;
            let back = UdpSocket::bind("127.0.0.1:0")?;
            back.connect(upstream)?;
            Ok((front, back))
        })?;
        front.set_read_timeout(Some(Duration::from_millis(100)))?;
        back.set_read_timeout(Some(Duration::from_secs(3)))?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, halt) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            let mut reply = vec![0u8; 65_536];
            while !halt.load(Ordering::Relaxed) {
                let Ok((len, from)) = front.recv_from(&mut buf) else {
                    continue;
                };
                reqs.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(buf[..len].to_vec());
                if back.send(&buf[..len]).is_err() {
                    continue;
                }
                if let Ok(n) = back.recv(&mut reply) {
                    let _ = front.send_to(&reply[..n], from);
                }
            }
        });
        Ok(Recorder {
            requests,
            stop,
            thread: Some(thread),
        })
    }

    /// The request dictionaries passed on so far, in order (cookies dropped).
    pub(super) fn requests(&self) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|d| message::parse_datagram(d).ok().map(|(_, v)| v))
            .collect()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const PARITY_RTPENGINE_NG: u16 = 2240;
const PARITY_RELAYD_NG: u16 = 2241;

/// rtpengine and relayd (userspace) side by side on loopback in a fresh namespace.
struct Pair {
    ns: Netns,
    rtpengine: Option<NsChild>,
    relayd: Option<NsChild>,
    logs: [PathBuf; 2],
    instance: String,
}

impl Pair {
    fn start() -> anyhow::Result<Pair> {
        let ns = Netns::unique("p")?;
        ns.ip(["link", "set", "lo", "up"])?;
        let instance = format!("sbct{}par", std::process::id());
        let tmp = std::env::temp_dir();
        let logs = [
            tmp.join(format!("{instance}-rtpengine.log")),
            tmp.join(format!("{instance}-relayd.log")),
        ];
        let out = |p: &Path| -> anyhow::Result<(Stdio, Stdio)> {
            let f = std::fs::File::create(p)?;
            Ok((f.try_clone()?.into(), f.into()))
        };
        let mut cmd = ns.command("rtpengine");
        let (o, e) = out(&logs[0])?;
        cmd.args(tests::kamailio::rtpengine_userspace_args((32000, 32999)))
            .args([
                "--interface=127.0.0.1".to_string(),
                format!("--listen-ng=127.0.0.1:{PARITY_RTPENGINE_NG}"),
            ])
            .stdin(Stdio::null())
            .stdout(o)
            .stderr(e);
        let rtpengine = NsChild::spawn(&mut cmd)?;
        let mut cmd = ns.command(relayd_bin());
        let (o, e) = out(&logs[1])?;
        cmd.args(["--dataplane", "userspace", "--interface", "lo"])
            .args(["--address", "127.0.0.1", "--ports", "33000-33999"])
            .args(["--instance", &instance])
            .args(["--ng-listen", &format!("127.0.0.1:{PARITY_RELAYD_NG}")])
            .args(["--state-dir", &tmp.join(&instance).to_string_lossy()])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(o)
            .stderr(e);
        let relayd = NsChild::spawn(&mut cmd)?;
        let pair = Pair {
            ns,
            rtpengine: Some(rtpengine),
            relayd: Some(relayd),
            logs,
            instance,
        };
        for port in [PARITY_RTPENGINE_NG, PARITY_RELAYD_NG] {
            pair.client(port)?
                .wait_ready(Duration::from_secs(15))
                .with_context(|| format!("ng on {port}; logs:\n{}", pair.log_text()))?;
        }
        Ok(pair)
    }

    fn client(&self, port: u16) -> anyhow::Result<NgClient> {
        Ok(self
            .ns
            .enter(|| NgClient::new(SocketAddr::from(([127, 0, 0, 1], port))))?)
    }

    fn log_text(&self) -> String {
        self.logs
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n----\n")
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for c in [self.rtpengine.take(), self.relayd.take()]
            .into_iter()
            .flatten()
        {
            let mut c = c;
            let _ = c.stop(Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(&self.instance));
        if !std::thread::panicking() {
            for l in &self.logs {
                let _ = std::fs::remove_file(l);
            }
        }
    }
}

/// An SDP with what legitimately differs between two relays masked: addresses, ports, the
/// origin's session id and version.
fn shape(sdp: &str) -> Vec<String> {
    sdp.lines()
        .map(|l| {
            let mut words: Vec<String> = l
                .split(' ')
                .map(|w| {
                    if w.parse::<std::net::IpAddr>().is_ok() {
                        "ADDR".to_string()
                    } else {
                        w.to_string()
                    }
                })
                .collect();
            if l.starts_with("m=") && words.len() > 1 {
                words[1] = "PORT".into();
            } else if l.starts_with("o=") && words.len() > 2 {
                words[1] = "ID".into();
                words[2] = "VER".into();
            } else if let Some(rest) = l.strip_prefix("a=rtcp:") {
                let tail: Vec<&str> = rest.split(' ').skip(1).collect();
                return std::iter::once("a=rtcp:PORT".to_string())
                    .chain(tail.iter().map(|w| {
                        if w.parse::<std::net::IpAddr>().is_ok() {
                            "ADDR".to_string()
                        } else {
                            w.to_string()
                        }
                    }))
                    .collect::<Vec<_>>()
                    .join(" ");
            } else if l.starts_with("a=candidate:") {
                return "a=candidate:...".into();
            }
            words.join(" ")
        })
        .collect()
}

/// The SDP's structure: per section (the session, then each m=), its lines other than
/// attributes in order, then its attributes as a sorted list. Differences kept on purpose
/// (README, "Using relayd with Kamailio"): relayd writes no `a=rtcp:` (its RTCP port is always
/// RTP + 1, what a receiver assumes without the attribute), and it keeps the attributes in the
/// order the endpoint wrote them where rtpengine puts the direction and `a=rtcp` first.
fn structure(sdp: &str) -> Vec<Vec<String>> {
    let mut sections: Vec<(Vec<String>, Vec<String>)> = vec![(Vec::new(), Vec::new())];
    for l in shape(sdp) {
        if l.starts_with("m=") {
            sections.push((Vec::new(), Vec::new()));
        }
        let (lines, attrs) = sections.last_mut().expect("a section");
        if l.starts_with("a=rtcp:") {
            continue;
        }
        if l.starts_with("a=") {
            attrs.push(l);
        } else {
            lines.push(l);
        }
    }
    sections
        .into_iter()
        .map(|(mut lines, mut attrs)| {
            attrs.sort();
            lines.extend(attrs);
            lines
        })
        .collect()
}

/// What one reply says, for comparison: its result, whether it warns, and the structure of
/// its SDP.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    result: String,
    warning: bool,
    sdp: Option<Vec<Vec<String>>>,
}

fn outcome(v: &Value) -> Outcome {
    Outcome {
        result: v
            .get("result")
            .and_then(Value::as_str)
            .unwrap_or("(none)")
            .to_string(),
        warning: v.get("warning").is_some(),
        sdp: v.get("sdp").and_then(Value::as_str).map(structure),
    }
}

/// A short description of a request for the table.
fn describe(v: &Value) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let list = |k: &str| {
        v.get(k)
            .and_then(Value::as_list)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    format!(
        "{} call={} flags=[{}] replace=[{}] ICE={} tp={}",
        s("command"),
        s("call-id"),
        list("flags"),
        list("replace"),
        s("ICE"),
        s("transport-protocol")
    )
}

/// Requests the module sends in configurations the recorded calls do not use, and spellings
/// rtpengine accepts: hand-written after the recorded ones (same keys and value types).
fn extra_requests(offer: &Value) -> Vec<Value> {
    let with = |pairs: &[(&str, Value)]| {
        let mut v = offer.clone();
        for (k, x) in pairs {
            v.insert(*k, x.clone());
        }
        v
    };
    let call = "parity-extra-1";
    vec![
        // Spaces instead of hyphens, in flags and keys.
        with(&[
            ("call-id", Value::str(call)),
            (
                "flags",
                Value::List(vec![
                    Value::str("SIP source address"),
                    Value::str("trust address"),
                ]),
            ),
        ]),
        Value::dict().with("command", "query").with("call-id", call),
        // delete-delay as the module passes it (a string).
        Value::dict()
            .with("command", "delete")
            .with("call-id", call)
            .with("delete-delay", "2"),
        // Still there during the delay.
        Value::dict().with("command", "query").with("call-id", call),
        // ICE=remove on an SDP with ICE: both strip candidates and credentials.
        with(&[
            ("call-id", Value::str("parity-extra-ice")),
            ("sdp", Value::str(ICE_SDP)),
        ]),
        Value::dict().with("command", "list"),
        Value::dict()
            .with("command", "start recording")
            .with("call-id", call),
        Value::dict()
            .with("command", "delete")
            .with("call-id", "no-such-call"),
        Value::dict()
            .with("command", "query")
            .with("call-id", "no-such-call"),
        Value::dict()
            .with("command", "answer")
            .with("call-id", "no-such-call")
            .with("from-tag", "x")
            .with("to-tag", "y")
            .with("sdp", offer.get("sdp").cloned().unwrap_or(Value::str(""))),
    ]
}

/// Commands rtpengine implements and relayd answers with an error on purpose (README).
const REFUSED: &[&str] = &["start recording"];

/// An offer with ICE candidates and credentials (a WebRTC-ish endpoint on plain RTP/AVP).
const ICE_SDP: &str = "v=0\r\no=ice 1 1 IN IP4 10.9.9.9\r\ns=-\r\nc=IN IP4 10.9.9.9\r\nt=0 0\r\n\
    m=audio 20000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ice-ufrag:abcd\r\n\
    a=ice-pwd:0123456789abcdef0123456789\r\n\
    a=candidate:1 1 UDP 2130706431 10.9.9.9 20000 typ host\r\n\
    a=candidate:1 2 UDP 2130706430 10.9.9.9 20001 typ host\r\na=sendrecv\r\n";

/// Sends the recorded requests (then the extra ones) to both; returns the rows that differ.
fn replay(pair: &Pair, requests: &[Value]) -> Vec<String> {
    let engine = pair.client(PARITY_RTPENGINE_NG).expect("client");
    let relayd = pair.client(PARITY_RELAYD_NG).expect("client");
    let mut differ = Vec::new();
    let mut table = Vec::new();
    for req in requests {
        let a = engine.request_value(req).expect("rtpengine replies");
        let b = relayd.request_value(req).expect("relayd replies");
        let (oa, ob) = (outcome(&a), outcome(&b));
        let row = format!(
            "{:<90} rtpengine={} relayd={}",
            describe(req),
            oa.result,
            ob.result
        );
        let refused = REFUSED.contains(&req.get("command").and_then(Value::as_str).unwrap_or(""));
        if refused && ob.result == "error" {
            table.push(format!("{row}  (kept: relayd does not implement it)"));
            continue;
        }
        if oa != ob {
            differ.push(format!(
                "{row}\n  rtpengine: {a:?}\n  relayd:    {b:?}\n  shapes: {:?}\n          {:?}",
                oa.sdp, ob.sdp
            ));
        }
        table.push(row);
    }
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("ng parity table:\n{}\n", table.join("\n")).as_bytes(),
    );
    differ
}

/// The module's requests during a call with a re-INVITE and `rtpengine_query`, a late offer
/// and a CANCEL, in both address variants, replayed to rtpengine 10.5 and to relayd.
#[test]
fn module_requests_same_results_as_rtpengine() {
    require_privileged!();
    require_sipp!();
    require_kamailio!();
    if which("rtpengine").is_none() {
        assert!(
            !tests::in_ci(),
            "rtpengine is not installed (cargo xtask setup)"
        );
        eprintln!("SKIPPED: rtpengine not installed");
        return;
    }
    let _s = serial();
    let mut recorded = Vec::new();
    for sip_source in [false, true] {
        let stack = Stack::start(Setup {
            sip_source,
            record: true,
            ..Setup::default()
        })
        .expect("stack up");
        for (uac_sc, uas_sc, rtp) in [
            ("uac_reinvite.xml", "uas.xml", true),
            ("uac_late.xml", "uas_late.xml", true),
            ("uac_cancel.xml", "uas_ring.xml", false),
        ] {
            let uas = stack.uas(uas_sc, rtp);
            let uac = stack.uac(uac_sc, Duration::from_millis(200));
            let (uac, uas) = (uac.finish(), uas.finish());
            uac.assert_ok();
            uas.assert_ok();
        }
        stack
            .xdp()
            .wait_no_calls(Duration::from_secs(10))
            .expect("deleted");
        recorded.extend(stack.recorder.as_ref().expect("recorder").requests());
    }
    // Kamailio pings once per process: one is enough.
    let mut pinged = false;
    recorded.retain(|r| {
        let ping = r.get("command").and_then(Value::as_str) == Some("ping");
        let keep = !ping || !pinged;
        pinged |= ping;
        keep
    });
    let commands: Vec<&str> = recorded
        .iter()
        .filter_map(|r| r.get("command").and_then(Value::as_str))
        .collect();
    for c in ["ping", "offer", "answer", "delete", "query"] {
        assert!(commands.contains(&c), "module sent {c}: {commands:?}");
    }
    let first_offer = recorded
        .iter()
        .find(|r| r.get("command").and_then(Value::as_str) == Some("offer"))
        .cloned()
        .expect("an offer");
    let mut all = recorded.clone();
    all.extend(extra_requests(&first_offer));
    let pair = Pair::start().expect("rtpengine and relayd up");
    let differ = replay(&pair, &all);
    assert!(
        differ.is_empty(),
        "{} of {} requests differ:\n{}\nlogs:\n{}",
        differ.len(),
        all.len(),
        differ.join("\n"),
        tests::tail(&pair.log_text(), 3000)
    );
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(program))
            .find(|f| f.is_file())
    })
}
