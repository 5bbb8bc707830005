//! `cargo xtask bench relay`: forwarded packets per second, loss and CPU per packet for each
//! data plane, on the same three-namespace topology, the same CPUs and the same streams.
//!
//! Planes: our relay with XDP native, XDP skb (generic), our userspace relay (`relayd`
//! started with the matching `--dataplane`), and Debian's `rtpengine` in userspace mode
//! (`--table=-1`). Each relay runs in the relay namespace and gets its calls over the ng
//! protocol on 127.0.0.1 inside that namespace; caller and callee namespaces send G.711-sized
//! RTP both ways through it (symmetric, one socket per side, one stream per call and direction).
//!
//! Method, per plane and rate (bounded: `--duration` seconds of traffic, then at most 2 s of
//! drain):
//! - CPUs: the relay process is pinned to the last CPU (`taskset`), the traffic generators
//!   (this process) to CPU 0. XDP and the kernel's receive path run in softirq on the CPU that
//!   transmitted into the veth, so that work lands on both CPUs.
//! - Forwarded = distinct packets the far side received intact (byte-exact check); loss =
//!   sent − forwarded; rate = forwarded / send time.
//! - CPU: relay process user+sys (`/proc/<pid>/stat`, all threads) plus the softirq time of
//!   all CPUs (`/proc/stat`, needs IRQ time accounting, which the kernel has when the softirq
//!   column moves) over the run. Softirq also carries the generators' own veth transmit and
//!   the sinks' receive; the `baseline` plane (plain kernel IP forwarding in the relay
//!   namespace, no relay) measures that share, so compare planes against it.
//!   `ns/pkt = (relay user+sys + softirq) / forwarded`.

#[allow(dead_code, clippy::all)]
#[path = "../../../relay-user/src/ng/bencode.rs"]
mod bencode;
#[allow(dead_code, clippy::all)]
#[path = "../../../relay-user/src/ng/client.rs"]
mod client;
#[allow(dead_code, clippy::all)]
#[path = "../../../relay-user/src/ng/message.rs"]
mod message;
#[allow(dead_code, clippy::all)]
#[path = "../../../relay-user/src/ng/sdp.rs"]
mod sdp;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ::tests::netns::{NsChild, Topology, TopologyOptions};
use ::tests::rtp::{self, Flow, RecvConfig, SendConfig};
use anyhow::{Context as _, bail};
use serde::Serialize;

use client::NgClient;
use message::OfferAnswer;

const NG_PORT: u16 = 2223;
const CALLER_PORT: u16 = 20000;
const CALLEE_PORT: u16 = 20002;
/// Calls carry 50 pps per direction (G.711, 20 ms): the call count follows the rate.
const PPS_PER_CALL: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Plane {
    Baseline,
    XdpNative,
    XdpSkb,
    Userspace,
    Rtpengine,
}

impl Plane {
    fn parse(s: &str) -> anyhow::Result<Plane> {
        Ok(match s {
            "baseline" => Plane::Baseline,
            "xdp-native" | "native" => Plane::XdpNative,
            "xdp-skb" | "skb" => Plane::XdpSkb,
            "userspace" | "user" => Plane::Userspace,
            "rtpengine" => Plane::Rtpengine,
            _ => bail!("unknown plane {s:?} (baseline, xdp-native, xdp-skb, userspace, rtpengine)"),
        })
    }
    fn name(self) -> &'static str {
        match self {
            Plane::Baseline => "baseline (kernel ip_forward)",
            Plane::XdpNative => "relayd XDP native",
            Plane::XdpSkb => "relayd XDP skb",
            Plane::Userspace => "relayd userspace",
            Plane::Rtpengine => "rtpengine userspace",
        }
    }
}

#[derive(Debug, Clone)]
struct Opts {
    rates: Vec<u32>,
    duration: Duration,
    planes: Vec<Plane>,
    relayd: Option<PathBuf>,
    v6: bool,
}

const USAGE: &str = "cargo xtask bench relay [--rates 5000,20000,50000,100000] [--duration SECS] \
[--planes baseline,xdp-native,xdp-skb,userspace,rtpengine] [--relayd PATH] [--ipv6]";

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        rates: vec![5_000, 20_000, 50_000, 100_000],
        duration: Duration::from_secs(5),
        planes: vec![
            Plane::Baseline,
            Plane::XdpNative,
            Plane::XdpSkb,
            Plane::Userspace,
            Plane::Rtpengine,
        ],
        relayd: None,
        v6: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .with_context(|| format!("{a} needs a value; {USAGE}"))
        };
        match a.as_str() {
            "--rates" => {
                o.rates = val()?
                    .split(',')
                    .map(|r| r.trim().parse::<u32>().context("rate"))
                    .collect::<anyhow::Result<_>>()?;
                if o.rates
                    .iter()
                    .any(|r| !(PPS_PER_CALL..=1_000_000).contains(r))
                {
                    bail!("rates must be within {PPS_PER_CALL}..=1000000 pps");
                }
            }
            "--duration" => {
                let s: f64 = val()?.parse().context("duration")?;
                if !(0.5..=60.0).contains(&s) {
                    bail!("--duration must be 0.5..=60 s");
                }
                o.duration = Duration::from_secs_f64(s);
            }
            "--planes" => {
                o.planes = val()?
                    .split(',')
                    .map(|p| Plane::parse(p.trim()))
                    .collect::<anyhow::Result<_>>()?
            }
            "--relayd" => o.relayd = Some(PathBuf::from(val()?)),
            "--ipv6" => o.v6 = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    Ok(o)
}

/// One measured point.
#[derive(Debug, Clone, Serialize)]
struct Point {
    plane: Plane,
    offered_pps: u32,
    calls: usize,
    duration_s: f64,
    sent: u64,
    send_errors: u64,
    sent_pps: f64,
    forwarded: u64,
    forwarded_pps: f64,
    lost: u64,
    loss_pct: f64,
    duplicates: u64,
    reordered: u64,
    corrupt: u64,
    relay_cpu_s: f64,
    softirq_s: f64,
    system_busy_s: f64,
    ns_per_packet: Option<f64>,
}

/// A plane that could not be measured, and why.
#[derive(Debug, Clone, Serialize)]
struct Skipped {
    plane: Plane,
    reason: String,
}

#[derive(Debug, Serialize)]
struct Report {
    kernel: String,
    cpus: usize,
    ipv6: bool,
    method: &'static str,
    points: Vec<Point>,
    skipped: Vec<Skipped>,
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    if !::tests::privileged() {
        bail!("bench relay needs root (network namespaces, XDP); run it as root");
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Generators on CPU 0; relays get the last CPU (see the module docs).
    pin_self(0);
    let relay_cpu = cpus.saturating_sub(1);

    let mut points = Vec::new();
    let mut skipped = Vec::new();
    for &plane in &o.planes {
        println!("== {}", plane.name());
        match bench_plane(plane, &o, relay_cpu) {
            Ok(mut p) => points.append(&mut p),
            Err(e) => {
                eprintln!("   skipped: {e:#}");
                skipped.push(Skipped {
                    plane,
                    reason: format!("{e:#}"),
                });
            }
        }
    }

    let report = Report {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cpus,
        ipv6: o.v6,
        method: "relay user+sys from /proc/<pid>/stat + softirq of all CPUs from /proc/stat, \
                 per forwarded packet; relay pinned to the last CPU, generators to CPU 0",
        points,
        skipped,
    };
    let dir = crate::util::root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("relay.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let md = markdown(&report);
    std::fs::write(dir.join("relay.md"), &md)?;
    println!("\n{md}");
    println!("wrote {} and relay.md", dir.join("relay.json").display());
    Ok(())
}

fn markdown(r: &Report) -> String {
    let mut s = format!(
        "Relay benchmark: kernel {}, {} CPUs, {}; G.711 packets (172 B RTP), 50 pps per call \
         and direction.\nCPU/pkt = (relay user+sys + softirq all CPUs) / forwarded; the \
         baseline row is the generators' and sinks' own kernel cost.\n\n\
         | plane | offered pps | calls | sent pps | forwarded pps | loss % | dup | reord | \
         relay CPU s | softirq s | ns/pkt |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        r.kernel,
        r.cpus,
        if r.ipv6 { "IPv6" } else { "IPv4" }
    );
    for p in &r.points {
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.3} | {} | {} | {:.2} | {:.2} | {} |\n",
            p.plane.name(),
            p.offered_pps,
            p.calls,
            p.sent_pps,
            p.forwarded_pps,
            p.loss_pct,
            p.duplicates,
            p.reordered,
            p.relay_cpu_s,
            p.softirq_s,
            p.ns_per_packet.map_or("-".into(), |n| format!("{n:.0}")),
        ));
    }
    for k in &r.skipped {
        s.push_str(&format!("\nSkipped {}: {}\n", k.plane.name(), k.reason));
    }
    s
}

/// A started relay and how to reach its calls.
struct Relay {
    child: Option<NsChild>,
    ng: Option<NgClient>,
    log: PathBuf,
    pid: Option<u32>,
    /// (to-caller port, to-callee port) per call: where the caller sends, where the callee sends.
    ports: Vec<(u16, u16)>,
}

fn bench_plane(plane: Plane, o: &Opts, relay_cpu: usize) -> anyhow::Result<Vec<Point>> {
    // GRO on every veth: XDP_REDIRECT into a veth whose peer has no XDP program needs NAPI.
    let topo = Topology::three(TopologyOptions {
        gro: Some(true),
        forwarding: plane == Plane::Baseline,
        ..Default::default()
    })?;
    let v6 = o.v6;
    let caller_ip = topo.caller_if.ip(v6);
    let callee_ip = topo.callee_if.ip(v6);
    let relay_a = topo.relay_caller_if.ip(v6);
    let relay_b = topo.relay_callee_if.ip(v6);
    let max_calls = (o.rates.iter().copied().max().unwrap_or(0) / PPS_PER_CALL) as usize;

    let caller = rtp::bind_in(&topo.caller, SocketAddr::new(caller_ip, CALLER_PORT))?;
    let callee = rtp::bind_in(&topo.callee, SocketAddr::new(callee_ip, CALLEE_PORT))?;

    let mut relay = match plane {
        Plane::Baseline => Relay {
            child: None,
            ng: None,
            log: PathBuf::new(),
            pid: None,
            ports: vec![(CALLEE_PORT, CALLER_PORT); max_calls],
        },
        _ => start_relay(plane, o, &topo, relay_cpu)?,
    };
    // Baseline: straight to the other end through the forwarding relay namespace. relayd
    // anchors media on one address (`--address`), reachable from both sides.
    let (dst_a, dst_b) = match plane {
        Plane::Baseline => (callee_ip, caller_ip),
        Plane::Rtpengine => (relay_a, relay_b),
        _ => (relay_a, relay_a),
    };

    let mut points = Vec::new();
    for &rate in &o.rates {
        let calls = (rate / PPS_PER_CALL) as usize;
        // Only the calls this rate uses exist, so a relay's per-call overhead is the rate's.
        if let Some(ng) = &relay.ng {
            let direction = plane == Plane::Rtpengine;
            resize_calls(ng, &topo, v6, direction, &mut relay.ports, calls)
                .with_context(|| format!("calls over ng; log: {}", relay.log.display()))?;
        }
        let to_relay_a: Vec<Flow> = (0..calls)
            .map(|i| Flow {
                stream: i as u32,
                dest: SocketAddr::new(dst_a, relay.ports[i].0),
            })
            .collect();
        let to_relay_b: Vec<Flow> = (0..calls)
            .map(|i| Flow {
                stream: 1_000_000 + i as u32,
                dest: SocketAddr::new(dst_b, relay.ports[i].1),
            })
            .collect();
        // Warm-up: latching, ARP/ND, caches. Not measured.
        let warm = Duration::from_millis(300);
        run_traffic(
            &caller,
            &callee,
            &to_relay_a,
            &to_relay_b,
            2_000.min(rate),
            warm,
        )?;

        let cpu0 = CpuSnap::take(relay.pid)?;
        let (sent_a, got_b, sent_b, got_a) =
            run_traffic(&caller, &callee, &to_relay_a, &to_relay_b, rate, o.duration)?;
        let cpu1 = CpuSnap::take(relay.pid)?;
        if let Some(c) = relay.child.as_mut()
            && let Some(status) = c.try_wait()?
        {
            bail!("{} exited during the run: {status}", plane.name());
        }

        let sent = sent_a.total() + sent_b.total();
        let forwarded = got_b.unique() + got_a.unique();
        let lost = got_b.lost(&sent_a) + got_a.lost(&sent_b);
        let secs = sent_a.elapsed.max(sent_b.elapsed).as_secs_f64();
        let relay_cpu_s = cpu1.proc_s - cpu0.proc_s;
        let softirq_s = cpu1.softirq_s - cpu0.softirq_s;
        let p = Point {
            plane,
            offered_pps: rate,
            calls,
            duration_s: secs,
            sent,
            send_errors: sent_a.errors + sent_b.errors,
            sent_pps: sent as f64 / secs,
            forwarded,
            forwarded_pps: forwarded as f64 / secs,
            lost,
            loss_pct: if sent == 0 {
                0.0
            } else {
                100.0 * lost as f64 / sent as f64
            },
            duplicates: got_a.duplicates() + got_b.duplicates(),
            reordered: got_a.reordered() + got_b.reordered(),
            corrupt: got_a.corrupt + got_b.corrupt,
            relay_cpu_s,
            softirq_s,
            system_busy_s: cpu1.busy_s - cpu0.busy_s,
            ns_per_packet: (forwarded > 0)
                .then(|| (relay_cpu_s + softirq_s) * 1e9 / forwarded as f64),
        };
        println!(
            "   {rate:>7} pps offered, {calls:>4} calls: sent {:.0}/s, forwarded {:.0}/s, loss {:.3}%, \
             relay {:.2} s + softirq {:.2} s CPU, {} ns/pkt",
            p.sent_pps,
            p.forwarded_pps,
            p.loss_pct,
            p.relay_cpu_s,
            p.softirq_s,
            p.ns_per_packet.map_or("-".into(), |n| format!("{n:.0}"))
        );
        points.push(p);
    }
    if let Some(mut c) = relay.child.take() {
        let _ = c.stop(Duration::from_secs(3));
        if !matches!(plane, Plane::Rtpengine) {
            // relayd leaves its pins for a restart to pick up; this run is over.
            let bin = relayd_path(o)?;
            let _ = topo.relay.exec(
                &bin.to_string_lossy(),
                ["--cleanup", "--instance", &instance()],
            );
        }
    }
    relay.ports.clear();
    drop(topo);
    Ok(points)
}

type Traffic = (
    rtp::SendReport,
    rtp::RecvReport,
    rtp::SendReport,
    rtp::RecvReport,
);

/// Both directions at once, each at half the rate; returns (sent by caller, received by
/// callee, sent by callee, received by caller).
fn run_traffic(
    caller: &UdpSocket,
    callee: &UdpSocket,
    a: &[Flow],
    b: &[Flow],
    rate: u32,
    duration: Duration,
) -> anyhow::Result<Traffic> {
    let mut rc = RecvConfig::new(duration + Duration::from_secs(2));
    rc.idle = Some(Duration::from_millis(400));
    let ca = SendConfig::at_rate(a.to_vec(), rate / 2, duration);
    let cb = SendConfig::at_rate(b.to_vec(), rate / 2, duration);
    let (r1, r2) = std::thread::scope(|s| {
        let t = s.spawn(|| rtp::send_and_receive(callee, &cb, &rc));
        let r1 = rtp::send_and_receive(caller, &ca, &rc);
        (r1, t.join().expect("callee thread"))
    });
    let (sent_a, got_a) = r1?;
    let (sent_b, got_b) = r2?;
    Ok((sent_a, got_b, sent_b, got_a))
}

fn start_relay(plane: Plane, o: &Opts, topo: &Topology, relay_cpu: usize) -> anyhow::Result<Relay> {
    let v6 = o.v6;
    let relay_a = topo.relay_caller_if.ip(v6);
    let relay_b = topo.relay_callee_if.ip(v6);
    let ng_addr: SocketAddr = ([127, 0, 0, 1], NG_PORT).into();
    let log = crate::util::root().join(format!("target/bench/relay-{}.log", plane_slug(plane)));
    std::fs::create_dir_all(log.parent().expect("has parent"))?;
    let logf = std::fs::File::create(&log)?;

    // nsenter, not `ip netns exec`: the latter remounts /sys in a private mount namespace,
    // whose fresh bpffs relayd cannot pin XDP links in; nsenter changes only the network
    // namespace. Both exec, so the PID is the relay's own.
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg(format!("--net={}", topo.relay.path().display()))
        .args(["--", "taskset", "-c", &relay_cpu.to_string()]);
    match plane {
        Plane::Rtpengine => {
            let bin = Path::new("/usr/bin/rtpengine");
            if !bin.exists() {
                bail!("/usr/bin/rtpengine not installed (apt install rtpengine-daemon)");
            }
            cmd.arg(bin).args([
                "--config-file=none",
                // No kernel table: userspace forwarding only (the module is not loaded here).
                "--table=-1",
                "--foreground",
                "--log-stderr",
                "--log-level=4",
                "--delete-delay=0",
                "--port-min=40000",
                "--port-max=49999",
                &format!("--interface=caller/{relay_a}"),
                &format!("--interface=callee/{relay_b}"),
                &format!("--listen-ng={ng_addr}"),
            ]);
        }
        _ => {
            let bin = relayd_path(o)?;
            let mode = match plane {
                Plane::XdpNative => "xdp-native",
                Plane::XdpSkb => "xdp-skb",
                _ => "userspace",
            };
            cmd.arg(bin).args([
                "--dataplane",
                mode,
                "--interface",
                &topo.relay_caller_if.dev,
                "--interface",
                &topo.relay_callee_if.dev,
                "--address",
                &relay_a.to_string(),
                "--ng-listen",
                &ng_addr.to_string(),
                "--ports",
                "40000-49999",
                "--instance",
                &instance(),
                "--media-timeout",
                "60s",
            ]);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf);
    println!("   {}", crate::util::show(&cmd));
    let mut child = NsChild::spawn(&mut cmd)?;
    let pid = child.pid();

    let ng = topo.relay.enter(|| NgClient::new(ng_addr))?;
    if let Err(e) = ng.wait_ready(Duration::from_secs(10)) {
        let status = child.try_wait()?;
        let _ = child.stop(Duration::from_secs(1));
        if plane != Plane::Rtpengine {
            // A relayd that failed half-way may have pinned maps already.
            let _ = std::fs::remove_dir_all(Path::new("/sys/fs/bpf").join(instance()));
        }
        bail!(
            "{} not answering ng ping ({e}; exit status {status:?}); log: {}",
            plane.name(),
            log.display()
        );
    }
    println!("   relay pid {pid} answers ng on {ng_addr}");
    Ok(Relay {
        child: Some(child),
        ng: Some(ng),
        log,
        pid: Some(pid),
        ports: Vec::new(),
    })
}

/// relayd's pin directory for this run (/sys/fs/bpf/<instance>), removed after each plane.
fn instance() -> String {
    format!("sbcbench{}", std::process::id())
}

fn plane_slug(p: Plane) -> &'static str {
    match p {
        Plane::Baseline => "baseline",
        Plane::XdpNative => "xdp-native",
        Plane::XdpSkb => "xdp-skb",
        Plane::Userspace => "userspace",
        Plane::Rtpengine => "rtpengine",
    }
}

fn relayd_path(o: &Opts) -> anyhow::Result<PathBuf> {
    if let Some(p) = &o.relayd {
        return Ok(p.clone());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::util::root().join("target"));
    for profile in ["release", "debug"] {
        let p = target.join(profile).join("relayd");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "relayd not built (looked in {}/{{release,debug}}); `cargo build --release -p relay-user` or pass --relayd",
        target.display()
    )
}

fn sdp(ip: IpAddr, port: u16, sess: usize) -> String {
    let fam = if ip.is_ipv4() { "IP4" } else { "IP6" };
    format!(
        "v=0\r\no=- {sess} 1 IN {fam} {ip}\r\ns=bench\r\nc=IN {fam} {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )
}

fn media_port(body: &str) -> anyhow::Result<u16> {
    let s = sdp::Sdp::parse(body).context("relay returned unparsable SDP")?;
    s.media
        .first()
        .map(|m| m.port)
        .filter(|&p| p != 0)
        .context("relay returned SDP without an active m= line")
}

fn call_id(i: usize) -> String {
    format!("bench-{i}@{}", std::process::id())
}

/// Offers and answers calls, or deletes the last ones, until there are `calls`; `ports` holds
/// per call (port the caller sends to, port the callee sends to).
fn resize_calls(
    ng: &NgClient,
    topo: &Topology,
    v6: bool,
    direction: bool,
    ports: &mut Vec<(u16, u16)>,
    calls: usize,
) -> anyhow::Result<()> {
    let caller_ip = topo.caller_if.ip(v6);
    let callee_ip = topo.callee_if.ip(v6);
    while ports.len() > calls {
        ng.delete(&call_id(ports.len() - 1), None)?;
        ports.pop();
    }
    let t0 = Instant::now();
    let new = calls.saturating_sub(ports.len());
    for i in ports.len()..calls {
        let id = call_id(i);
        let mut offer = OfferAnswer::new(&id, "caller-tag", &sdp(caller_ip, CALLER_PORT, i));
        if direction {
            // rtpengine: one named interface per side (see start_relay).
            offer.direction = vec!["caller".into(), "callee".into()];
        }
        offer.replace.origin = true;
        let to_callee = ng.offer(&offer)?;
        let mut answer = OfferAnswer::new(&id, "caller-tag", &sdp(callee_ip, CALLEE_PORT, i));
        answer.to_tag = Some("callee-tag".into());
        let to_caller = ng.answer(&answer)?;
        ports.push((media_port(&to_caller)?, media_port(&to_callee)?));
    }
    if new > 0 {
        let took = t0.elapsed();
        println!(
            "   ng: {new} calls offered+answered in {:.2} s ({:.0} µs per call)",
            took.as_secs_f64(),
            took.as_micros() as f64 / new as f64
        );
    }
    Ok(())
}

/// CPU counters at one instant.
struct CpuSnap {
    /// The relay process, user + sys, seconds (0 without a process).
    proc_s: f64,
    /// Softirq, all CPUs, seconds.
    softirq_s: f64,
    /// Everything but idle and iowait, all CPUs, seconds.
    busy_s: f64,
}

impl CpuSnap {
    fn take(pid: Option<u32>) -> anyhow::Result<CpuSnap> {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let stat = std::fs::read_to_string("/proc/stat")?;
        let cpu: Vec<f64> = stat
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("cpu "))
            .context("/proc/stat has no cpu line")?
            .split_whitespace()
            .map(|v| v.parse::<f64>().unwrap_or(0.0))
            .collect();
        // user nice system idle iowait irq softirq steal ...
        let get = |i: usize| cpu.get(i).copied().unwrap_or(0.0);
        let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
        let proc_s = match pid {
            None => 0.0,
            Some(pid) => {
                let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .with_context(|| format!("relay process {pid} gone"))?;
                // Fields after the ")" of the command name; utime and stime are 14 and 15.
                let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
                let f: Vec<&str> = rest.split_whitespace().collect();
                let t = |i: usize| {
                    f.get(i - 3)
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or(0.0)
                };
                (t(14) + t(15)) / hz
            }
        };
        Ok(CpuSnap {
            proc_s,
            softirq_s: get(6) / hz,
            busy_s: busy / hz,
        })
    }
}

/// Pins the calling thread (and the threads it starts later) to one CPU.
fn pin_self(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!(
                "bench: cannot pin to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn args() {
        let o = parse(&[
            "--rates".into(),
            "5000,20000".into(),
            "--planes".into(),
            "rtpengine,skb".into(),
        ])
        .unwrap();
        assert_eq!(o.rates, vec![5000, 20000]);
        assert_eq!(o.planes, vec![Plane::Rtpengine, Plane::XdpSkb]);
        assert!(parse(&["--rates".into(), "10".into()]).is_err());
        assert!(parse(&["--bogus".into()]).is_err());
    }

    #[test]
    fn sdp_round_trip() {
        let s = sdp("10.1.1.1".parse().unwrap(), 4000, 1);
        assert_eq!(media_port(&s).unwrap(), 4000);
    }
}
