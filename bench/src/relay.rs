//! `cargo xtask bench relay` (or `bench relay` from this crate): forwarded packets per second,
//! loss and CPU per packet for each data plane, on the same three-namespace topology, the same
//! CPUs and the same streams. Results: `target/bench/relay.json` and `relay.md` in the
//! workspace root; relay logs next to them.
//!
//! Planes: plain kernel IP forwarding (`baseline`, no relay), our relay with XDP native, XDP
//! skb (generic), our userspace relay (`relayd` started with the matching `--dataplane`), and
//! Debian's `rtpengine` in userspace mode (`--table=-1`). Each relay runs in the relay namespace
//! and gets its calls over the ng protocol on 127.0.0.1 inside that namespace; caller and callee
//! namespaces send G.711-sized RTP both ways through it (symmetric, one socket per side, one
//! stream per call and direction, 50 pps each).
//!
//! XDP native needs an XDP program on the receiving end of a veth for a native XDP_REDIRECT
//! into it to be delivered (else the kernel drops it silently): the bench attaches the object's
//! `sbc_xdp_pass` in driver mode to the caller's and callee's veth ends for that plane, as the
//! integration tests do. A real NIC does not need this.
//!
//! Method, per plane and rate (bounded: 0.3 s warm-up, `--duration` seconds of traffic, then
//! at most 2 s of drain):
//! - CPUs: the relay process and the relay namespace's NAPI threads are pinned to the last
//!   CPU, the traffic generators (this process) to CPU 0.
//! - Forwarded = distinct packets the far side received intact (byte-exact check); loss =
//!   sent − forwarded; rate = forwarded / send time.
//! - CPU, two ways, over the measured run only:
//!   - "relay+softirq ns/pkt" = (relay process CPU + softirq time of all CPUs from
//!     `/proc/stat`) / forwarded. The relay process's CPU is the sum of its threads'
//!     `/proc/<pid>/task/*/schedstat` run time (ns-exact). Softirq time: on kernels without
//!     `CONFIG_IRQ_TIME_ACCOUNTING` (this VM's) it is tick-sampled (HZ ticks that land in
//!     softirq), overlaps the task times (the tick charges the interrupted task too), and
//!     misses most of a veth's softirq work, which runs on `local_bh_enable` inside the
//!     sending task. For XDP this column therefore shows little of its cost.
//!   - "relay side ns/pkt" = (relay process + the relay namespace's veth NAPI threads) /
//!     forwarded. The bench switches the relay's two veths to threaded NAPI
//!     (`/sys/class/net/<dev>/threaded`) and pins those kthreads to the relay's CPU, so the
//!     relay side's kernel work (the XDP program and its redirect, or the stack's receive up
//!     to the relay's socket, or ip_forward) runs in threads with exact run times
//!     (schedstat) instead of in softirq inside the sending generator, where it cannot be
//!     told apart from the generator's pacing (which sleeps and spins). Transmitting into the
//!     far peer's veth and that veth's receive up to the sink's socket run in the same
//!     context (the NAPI thread for XDP and the baseline, the relay's `sendmsg` for the
//!     userspace relays), so all planes count the same stretch: relay-side receive to the
//!     far socket. One CPU then carries the relay and its receive path, as on a real box.
//!     A NAPI thread woken per packet costs a wake-up each, which inflates this at low rates.
//!     "over base" subtracts the `baseline` plane (plain kernel IP forwarding, same path) at
//!     the same rate.
//!   - this process's CPU (generators, sinks) and ksoftirqd's are recorded in the JSON only.
//! - XDP planes, exact: `kernel.bpf_stats_enabled=1` for the run (old value restored), and
//!   `bpftool prog show` run_time_ns / run_cnt of the program(s) behind relayd's pinned links
//!   gives the XDP program's own ns per packet (parse, lookup, rewrite, checksum, the redirect
//!   decision); the redirect's transmit into the egress veth happens after the program returns
//!   and is not in it.
//! - XDP planes, kernel share: relayd's `relay_tx + relay_redirect` against
//!   `relay_to_userspace` (`relayd --status --json`) over the measured run. Under 90% kernel
//!   forwarding fails the plane: the XDP numbers would be measuring the fallback.
//!
//! Clean-up: namespaces are deleted with the topology, relays are stopped by PID, relayd's
//! pins are removed with `relayd --cleanup` after each plane.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ::tests::netns::{NsChild, Topology, TopologyOptions};
use ::tests::rtp::{self, Flow, RecvConfig, SendConfig};
use anyhow::{Context as _, bail};
use serde::Serialize;

use relay_user::ng::client::NgClient;
use relay_user::ng::message::OfferAnswer;
use relay_user::ng::sdp;

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

const USAGE: &str = "cargo xtask bench relay [--rates 5000,20000,50000,100000,150000] [--duration SECS] \
[--planes baseline,xdp-native,xdp-skb,userspace,rtpengine] [--relayd PATH] [--ipv6]";

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        rates: vec![5_000, 20_000, 50_000, 100_000, 150_000],
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
    /// Relay process, all threads, CPU time (schedstat, ns-exact; includes the softirq work
    /// the kernel ran in its context).
    relay_cpu_s: f64,
    /// Softirq ticks of all CPUs (/proc/stat; tick-sampled, also charged to the task it
    /// interrupted, so it overlaps the task times).
    softirq_s: f64,
    /// The relay namespace's veth NAPI threads (threaded NAPI, pinned to the relay's CPU;
    /// schedstat): the relay side's kernel receive path (XDP, or the stack up to the relay's
    /// socket, or ip_forward for the baseline) and what it transmits on.
    relay_napi_s: Option<f64>,
    /// This process (the generators and sinks, all threads; getrusage). They pace by
    /// sleeping and spinning, so this is about the run's wall time, not their work.
    generators_cpu_s: f64,
    /// The ksoftirqd threads (schedstat).
    ksoftirqd_s: f64,
    /// Everything but idle, iowait and steal, all CPUs (includes other work on the machine).
    system_busy_s: f64,
    /// (relay_cpu_s + softirq_s) / forwarded.
    ns_per_packet: Option<f64>,
    /// (relay_cpu_s + relay_napi_s) / forwarded: the relay side's whole CPU per packet,
    /// user and kernel, exact.
    relay_side_ns_per_packet: Option<f64>,
    /// `relay_side_ns_per_packet` minus the baseline plane's (kernel ip_forward) at the same
    /// offered rate, when the baseline ran.
    relay_side_over_baseline: Option<f64>,
    /// XDP planes: relayd's `relay_tx + relay_redirect` over the run (`relayd --status`).
    kernel_forwarded: Option<u64>,
    /// XDP planes: relayd's `relay_to_userspace` over the run.
    to_userspace: Option<u64>,
    /// XDP planes: kernel_forwarded / (kernel_forwarded + to_userspace), percent.
    kernel_share_pct: Option<f64>,
    /// XDP planes: runs of relayd's XDP program(s) over the run (`bpftool prog show`,
    /// `kernel.bpf_stats_enabled=1`).
    xdp_runs: Option<u64>,
    /// XDP planes: their total run time, ns.
    xdp_run_ns: Option<u64>,
    /// XDP planes: xdp_run_ns / xdp_runs: the program's own cost per packet.
    xdp_ns_per_run: Option<f64>,
}

/// A plane that failed or could not be measured, and why (its points so far are kept).
#[derive(Debug, Clone, Serialize)]
struct Failed {
    plane: Plane,
    reason: String,
}

#[derive(Debug, Serialize)]
struct Report {
    kernel: String,
    cpus: usize,
    ipv6: bool,
    method: &'static str,
    /// /proc/loadavg when the run started and when it ended (other work on the machine).
    loadavg_start: String,
    loadavg_end: String,
    points: Vec<Point>,
    failed: Vec<Failed>,
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

    let loadavg_start = loadavg();
    // Exact per-run cost of the XDP programs; restored to its old value on the way out.
    let _bpf_stats = o
        .planes
        .iter()
        .any(|p| matches!(p, Plane::XdpNative | Plane::XdpSkb))
        .then(BpfStats::enable)
        .transpose()?;
    let mut points = Vec::new();
    let mut failed = Vec::new();
    for &plane in &o.planes {
        println!("== {}", plane.name());
        if let Err(e) = bench_plane(plane, &o, relay_cpu, &mut points) {
            eprintln!("   FAILED: {e:#}");
            failed.push(Failed {
                plane,
                reason: format!("{e:#}"),
            });
        }
    }
    let base: BTreeMap<u32, f64> = points
        .iter()
        .filter(|p| p.plane == Plane::Baseline)
        .filter_map(|p| Some((p.offered_pps, p.relay_side_ns_per_packet?)))
        .collect();
    for p in &mut points {
        if p.plane != Plane::Baseline {
            p.relay_side_over_baseline = p
                .relay_side_ns_per_packet
                .zip(base.get(&p.offered_pps))
                .map(|(n, b)| n - b);
        }
    }

    let report = Report {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cpus,
        ipv6: o.v6,
        method: "ns_per_packet = (relay process schedstat + softirq of all CPUs from \
                 /proc/stat, tick-sampled) / forwarded; relay_side_ns_per_packet = (relay \
                 process + relay namespace's threaded-NAPI kthreads, schedstat) / forwarded, \
                 over_baseline subtracts the kernel-forwarding plane at the same rate; relay \
                 and its NAPI threads pinned to the last CPU, generators to CPU 0. XDP \
                 planes: XDP ns/run = bpftool run_time_ns / run_cnt of relayd's programs \
                 (kernel.bpf_stats_enabled=1); kernel share = (relay_tx + relay_redirect) / \
                 (those + relay_to_userspace) from relayd --status",
        loadavg_start,
        loadavg_end: loadavg(),
        points,
        failed,
    };
    let dir = crate::root().join("target/bench");
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
        "Relay benchmark: kernel {}, {} CPUs, {}; G.711-sized RTP (172 B), 50 pps per call and \
         direction, both directions. Load average at start {}, at end {}.\n\n\
         - relay+softirq = (relay process CPU, schedstat + softirq of all CPUs, /proc/stat) / \
         forwarded packet. Without IRQ time accounting softirq is tick-sampled and mostly \
         charged to the task it ran in, so this misses most XDP work.\n\
         - relay side = (relay process + the relay namespace's veth NAPI threads, threaded \
         NAPI pinned to the relay's CPU; schedstat, exact) / forwarded packet: everything the \
         relay's CPU spends from receiving a packet to handing it to the far peer's socket. \
         Per-packet NAPI thread wake-ups inflate it at low rates. over base = that minus the \
         baseline's (plain kernel IP forwarding, no relay) at the same rate.\n\
         - XDP ns/run = relayd's XDP program run time / runs (bpftool, \
         kernel.bpf_stats_enabled=1): the exact in-kernel per-packet cost, excluding the \
         redirect's transmit into the egress veth.\n\
         - kernel % = packets the XDP program forwarded itself (relay_tx + relay_redirect) out \
         of those plus the ones it passed to relayd's userspace path.\n\n\
         | plane | offered pps | calls | sent pps | forwarded pps | loss % | \
         relay+softirq ns/pkt | relay side ns/pkt | over base | XDP ns/run | kernel % |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        r.kernel,
        r.cpus,
        if r.ipv6 { "IPv6" } else { "IPv4" },
        r.loadavg_start,
        r.loadavg_end,
    );
    for p in &r.points {
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.3} | {} | {} | {} | {} | {} |\n",
            p.plane.name(),
            p.offered_pps,
            p.calls,
            p.sent_pps,
            p.forwarded_pps,
            p.loss_pct,
            opt(p.ns_per_packet, 0),
            opt(p.relay_side_ns_per_packet, 0),
            opt(p.relay_side_over_baseline, 0),
            opt(p.xdp_ns_per_run, 1),
            opt(p.kernel_share_pct, 2),
        ));
    }
    for k in &r.failed {
        s.push_str(&format!("\nFAILED {}: {}\n", k.plane.name(), k.reason));
    }
    s
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |n| format!("{n:.prec$}"))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A started relay and how to reach its calls.
struct Relay {
    child: Option<NsChild>,
    ng: Option<NgClient>,
    log: PathBuf,
    pid: Option<u32>,
    /// (to-caller port, to-callee port) per call: where the caller sends, where the callee sends.
    ports: Vec<(u16, u16)>,
    /// XDP native: `sbc_xdp_pass` on the caller's and callee's veth ends (see
    /// [`attach_peer_pass`]); detached when dropped.
    peer_pass: Option<aya::Ebpf>,
}

fn bench_plane(
    plane: Plane,
    o: &Opts,
    relay_cpu: usize,
    points: &mut Vec<Point>,
) -> anyhow::Result<()> {
    // GRO on every veth gives them NAPI (XDP_REDIRECT into a veth in skb mode is fine with it);
    // native redirect also needs an XDP program on the receiving end: see attach_peer_pass.
    // IP forwarding on in the relay namespace for every plane: the baseline is that
    // forwarding, and XDP's bpf_fib_lookup refuses to route (BPF_FIB_LKUP_RET_FWD_DISABLED,
    // so every packet would go to relayd's userspace path) where it is off. Sockets-based
    // relays do not care.
    let topo = Topology::three(TopologyOptions {
        gro: Some(true),
        forwarding: true,
        ..Default::default()
    })?;
    let max_calls = (o.rates.iter().copied().max().unwrap_or(0) / PPS_PER_CALL) as usize;
    let mut relay = match plane {
        Plane::Baseline => Relay {
            child: None,
            ng: None,
            log: PathBuf::new(),
            pid: None,
            ports: vec![(CALLEE_PORT, CALLER_PORT); max_calls],
            peer_pass: None,
        },
        _ => start_relay(plane, o, &topo, relay_cpu)?,
    };
    let r = measure_rates(plane, o, relay_cpu, &topo, &mut relay, points);
    if let Some(mut c) = relay.child.take() {
        let _ = c.stop(Duration::from_secs(3));
    }
    drop(relay.peer_pass.take());
    if !matches!(plane, Plane::Rtpengine | Plane::Baseline) {
        // relayd leaves its pins for a restart to pick up; this run is over.
        cleanup_pins(o, &topo);
    }
    drop(topo);
    r
}

fn measure_rates(
    plane: Plane,
    o: &Opts,
    relay_cpu: usize,
    topo: &Topology,
    relay: &mut Relay,
    points: &mut Vec<Point>,
) -> anyhow::Result<()> {
    let v6 = o.v6;
    let caller_ip = topo.caller_if.ip(v6);
    let callee_ip = topo.callee_if.ip(v6);
    let relay_a = topo.relay_caller_if.ip(v6);
    let relay_b = topo.relay_callee_if.ip(v6);
    let caller = rtp::bind_in(&topo.caller, SocketAddr::new(caller_ip, CALLER_PORT))?;
    let callee = rtp::bind_in(&topo.callee, SocketAddr::new(callee_ip, CALLEE_PORT))?;
    let xdp = matches!(plane, Plane::XdpNative | Plane::XdpSkb);
    if plane == Plane::XdpNative {
        relay.peer_pass = Some(attach_peer_pass(topo)?);
        println!("   sbc_xdp_pass attached (driver mode) to the caller's and callee's veths");
    }
    let napi = threaded_napi(topo, relay_cpu);
    // Baseline: straight to the other end through the forwarding relay namespace. relayd
    // anchors media on one address (`--address`), reachable from both sides.
    let (dst_a, dst_b) = match plane {
        Plane::Baseline => (callee_ip, caller_ip),
        Plane::Rtpengine => (relay_a, relay_b),
        _ => (relay_a, relay_a),
    };

    for &rate in &o.rates {
        let calls = (rate / PPS_PER_CALL) as usize;
        // Only the calls this rate uses exist, so a relay's per-call overhead is the rate's.
        if let Some(ng) = &relay.ng {
            let direction = plane == Plane::Rtpengine;
            resize_calls(ng, topo, v6, direction, &mut relay.ports, calls)
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

        let (stats0, prog0) = if xdp {
            (Some(relay_stats(o)?), Some(xdp_prog_stats()?))
        } else {
            (None, None)
        };
        let cpu0 = CpuSnap::take(relay.pid, &napi)?;
        let (sent_a, got_b, sent_b, got_a) =
            run_traffic(&caller, &callee, &to_relay_a, &to_relay_b, rate, o.duration)?;
        let cpu1 = CpuSnap::take(relay.pid, &napi)?;
        let prog = prog0.map(|p0| xdp_prog_stats().map(|p1| (p1.0 - p0.0, p1.1 - p0.1)));
        let prog = prog.transpose()?;
        let kernel = match stats0 {
            None => None,
            Some(s0) => {
                let s1 = relay_stats(o)?;
                let d = |k: &str| {
                    s1.get(k)
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(s0.get(k).copied().unwrap_or(0))
                };
                Some((d("relay_tx") + d("relay_redirect"), d("relay_to_userspace")))
            }
        };
        if let Some(c) = relay.child.as_mut()
            && let Some(status) = c.try_wait()?
        {
            bail!("{} exited during the run: {status}", plane.name());
        }

        let sent = sent_a.total() + sent_b.total();
        let forwarded = got_b.unique() + got_a.unique();
        let lost = got_b.lost(&sent_a) + got_a.lost(&sent_b);
        let secs = sent_a.elapsed.max(sent_b.elapsed).as_secs_f64();
        let relay_cpu_s = cpu1.relay_s - cpu0.relay_s;
        let softirq_s = cpu1.softirq_s - cpu0.softirq_s;
        let generators_cpu_s = cpu1.self_s - cpu0.self_s;
        let ksoftirqd_s = cpu1.ksoftirqd_s - cpu0.ksoftirqd_s;
        let relay_napi_s = (!napi.is_empty()).then_some(cpu1.napi_s - cpu0.napi_s);
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
            relay_napi_s,
            generators_cpu_s,
            ksoftirqd_s,
            system_busy_s: cpu1.busy_s - cpu0.busy_s,
            ns_per_packet: (forwarded > 0)
                .then(|| (relay_cpu_s + softirq_s) * 1e9 / forwarded as f64),
            relay_side_ns_per_packet: relay_napi_s
                .filter(|_| forwarded > 0)
                .map(|n| (relay_cpu_s + n) * 1e9 / forwarded as f64),
            relay_side_over_baseline: None,
            kernel_forwarded: kernel.map(|k| k.0),
            to_userspace: kernel.map(|k| k.1),
            kernel_share_pct: kernel
                .filter(|k| k.0 + k.1 > 0)
                .map(|(k, u)| 100.0 * k as f64 / (k + u) as f64),
            xdp_runs: prog.map(|p| p.1),
            xdp_run_ns: prog.map(|p| p.0),
            xdp_ns_per_run: prog.filter(|p| p.1 > 0).map(|p| p.0 as f64 / p.1 as f64),
        };
        println!(
            "   {rate:>7} pps offered, {calls:>4} calls: sent {:.0}/s, forwarded {:.0}/s, loss {:.3}%, \
             relay {:.3} s + softirq {:.2} s CPU, {} ns/pkt; relay NAPI {} s, relay side {} ns/pkt; \
             ksoftirqd {:.3} s",
            p.sent_pps,
            p.forwarded_pps,
            p.loss_pct,
            p.relay_cpu_s,
            p.softirq_s,
            p.ns_per_packet.map_or("-".into(), |n| format!("{n:.0}")),
            opt(p.relay_napi_s, 3),
            opt(p.relay_side_ns_per_packet, 0),
            p.ksoftirqd_s,
        );
        if xdp {
            println!(
                "            kernel forwarded {:?}, to userspace {:?}, XDP {:?} runs, {} ns/run",
                p.kernel_forwarded,
                p.to_userspace,
                p.xdp_runs,
                p.xdp_ns_per_run.map_or("-".into(), |n| format!("{n:.1}"))
            );
        }
        let share = p.kernel_share_pct;
        points.push(p);
        if xdp && !share.is_some_and(|s| s >= 90.0) {
            bail!(
                "{} at {rate} pps: the kernel forwarded {} of the relayed packets (< 90%): \
                 relayd's XDP path is not doing the work; log: {}",
                plane.name(),
                share.map_or("none".into(), |s| format!("{s:.2}%")),
                relay.log.display()
            );
        }
    }
    Ok(())
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
    let log = crate::root().join(format!("target/bench/relay-{}.log", plane_slug(plane)));
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
    println!("   {}", tests::show_command(&cmd));
    let mut child = NsChild::spawn(&mut cmd)?;
    let pid = child.pid();

    let ng = topo.relay.enter(|| NgClient::new(ng_addr))?;
    if let Err(e) = ng.wait_ready(Duration::from_secs(10)) {
        let status = child.try_wait()?;
        let _ = child.stop(Duration::from_secs(1));
        if plane != Plane::Rtpengine {
            // A relayd that failed half-way may have pinned maps already.
            cleanup_pins(o, topo);
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
        peer_pass: None,
    })
}

/// `relayd --cleanup`: detaches this run's XDP links and removes its pins. Runs in the relay
/// namespace, where the interfaces are (nsenter keeps the host's bpffs).
fn cleanup_pins(o: &Opts, topo: &Topology) {
    let out = relayd_path(o).and_then(|bin| {
        topo.relay.exec(
            &bin.to_string_lossy(),
            ["--cleanup", "--instance", &instance()],
        )
    });
    match out {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "   relayd --cleanup failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!("   relayd --cleanup: {e:#}"),
    }
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
    match &o.relayd {
        Some(p) => Ok(p.clone()),
        None => crate::built_binary("relayd", "-p relay-user --bin relayd", "--relayd"),
    }
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

/// XDP native: attaches the object's `sbc_xdp_pass` in driver mode to the caller's and callee's
/// veth ends. A native XDP_REDIRECT into a veth is dropped unless the receiving end runs an XDP
/// program (NAPI from GRO is not enough on current kernels); relay_netns.rs does the same. The
/// returned Ebpf owns the links: keep it for the plane's duration, dropping it detaches them.
fn attach_peer_pass(topo: &Topology) -> anyhow::Result<aya::Ebpf> {
    use aya::programs::{Xdp, XdpMode};
    let mut ebpf = relay_user::loader::load_pinned(relay_user::object::ebpf_object(), &instance())
        .context("load the XDP object against relayd's pins")?;
    let prog: &mut Xdp = ebpf
        .program_mut("sbc_xdp_pass")
        .context("sbc_xdp_pass in the object")?
        .try_into()?;
    prog.load().context("load sbc_xdp_pass")?;
    for (ns, dev) in [
        (&topo.caller, &topo.caller_if.dev),
        (&topo.callee, &topo.callee_if.dev),
    ] {
        ns.enter(|| prog.attach(dev, XdpMode::Driver))
            .with_context(|| format!("attach sbc_xdp_pass to {dev} (driver mode)"))?;
    }
    Ok(ebpf)
}

/// relayd's per-reason counters for this run's instance (`relayd --status --json`; reads the
/// pins, so it runs in the host namespace).
fn relay_stats(o: &Opts) -> anyhow::Result<BTreeMap<String, u64>> {
    let bin = relayd_path(o)?;
    let out = std::process::Command::new(&bin)
        .args(["--status", "--json", "--instance", &instance()])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "relayd --status failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("status JSON")?;
    let stats = v
        .get("stats")
        .and_then(|s| s.as_object())
        .context("relayd --status has no stats: instance not pinned, XDP not running?")?;
    Ok(stats
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
        .collect())
}

/// (run_time_ns, run_cnt) summed over the programs behind relayd's pinned XDP links
/// (`/sys/fs/bpf/<instance>/link_*`), from `bpftool`. Needs `kernel.bpf_stats_enabled=1`.
fn xdp_prog_stats() -> anyhow::Result<(u64, u64)> {
    let dir = Path::new("/sys/fs/bpf").join(instance());
    let mut ids = BTreeSet::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
        let e = e?;
        if !e.file_name().to_string_lossy().starts_with("link_") {
            continue;
        }
        let v = bpftool_json(&["link", "show", "pinned", &e.path().to_string_lossy()])?;
        ids.insert(v["prog_id"].as_u64().context("bpftool link: no prog_id")?);
    }
    if ids.is_empty() {
        bail!("no XDP link pinned under {}", dir.display());
    }
    let (mut ns, mut cnt) = (0, 0);
    for id in ids {
        let v = bpftool_json(&["prog", "show", "id", &id.to_string()])?;
        // Both fields are absent while zero.
        ns += v["run_time_ns"].as_u64().unwrap_or(0);
        cnt += v["run_cnt"].as_u64().unwrap_or(0);
    }
    Ok((ns, cnt))
}

fn bpftool_json(args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let out = std::process::Command::new("bpftool")
        .arg("-j")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("run bpftool (apt install bpftool)")?;
    if !out.status.success() {
        bail!(
            "bpftool {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("bpftool JSON")
}

/// `kernel.bpf_stats_enabled=1` for the run; the old value comes back on drop.
struct BpfStats {
    old: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> anyhow::Result<BpfStats> {
        let old = std::fs::read_to_string(BPF_STATS)
            .with_context(|| format!("read {BPF_STATS}"))?
            .trim()
            .to_string();
        std::fs::write(BPF_STATS, "1").with_context(|| format!("write {BPF_STATS}"))?;
        Ok(BpfStats { old })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(BPF_STATS, &self.old) {
            eprintln!("bench: cannot restore {BPF_STATS} to {}: {e}", self.old);
        }
    }
}

/// CPU counters at one instant.
struct CpuSnap {
    /// The relay process, all threads, seconds (0 without a process).
    relay_s: f64,
    /// This process (generators, sinks), user + sys, seconds.
    self_s: f64,
    /// The ksoftirqd threads, seconds.
    ksoftirqd_s: f64,
    /// The relay namespace's NAPI threads, seconds.
    napi_s: f64,
    /// Softirq ticks, all CPUs, seconds.
    softirq_s: f64,
    /// Everything but idle, iowait and steal, all CPUs, seconds.
    busy_s: f64,
}

impl CpuSnap {
    fn take(pid: Option<u32>, napi: &[u32]) -> anyhow::Result<CpuSnap> {
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
        let busy = get(0) + get(1) + get(2) + get(5) + get(6);
        let relay_s = match pid {
            None => 0.0,
            Some(pid) => {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    bail!("relay process {pid} gone");
                }
                process_ns(pid) as f64 / 1e9
            }
        };
        // SAFETY: getrusage writes the struct it is given.
        let self_s = unsafe {
            let mut ru: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_SELF, &mut ru);
            let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
            t(ru.ru_utime) + t(ru.ru_stime)
        };
        let ksoftirqd_s = ksoftirqd_pids()
            .into_iter()
            .map(|p| process_ns(p) as f64 / 1e9)
            .sum();
        Ok(CpuSnap {
            napi_s: napi.iter().map(|&p| process_ns(p) as f64 / 1e9).sum(),
            relay_s,
            self_s,
            ksoftirqd_s,
            softirq_s: get(6) / hz,
            busy_s: busy / hz,
        })
    }
}

/// CPU time of every thread of a process, ns (`/proc/<pid>/task/*/schedstat`, first field:
/// exact, not tick-sampled; without IRQ time accounting it includes the softirqs that ran in
/// the thread's context).
fn process_ns(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Switches the relay namespace's veths to threaded NAPI and pins those threads to the relay's
/// CPU, so the relay side's kernel work (the XDP program and its redirects, or the stack's
/// receive up to the relay's socket, or ip_forward) runs in threads whose CPU time is exact,
/// instead of in softirq inside the sending generator. Returns their PIDs (new `napi/*`
/// kthreads); empty, with a warning, if that did not work.
fn threaded_napi(topo: &Topology, relay_cpu: usize) -> Vec<u32> {
    let before = kthreads("napi/");
    let devs = [&topo.relay_caller_if.dev, &topo.relay_callee_if.dev];
    let script = devs
        .iter()
        .map(|d| format!("echo 1 > /sys/class/net/{d}/threaded"))
        .collect::<Vec<_>>()
        .join(" && ");
    // `ip netns exec` (not nsenter): it mounts the namespace's own /sys/class/net.
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", topo.relay.name(), "sh", "-c", &script])
        .stdin(Stdio::null())
        .output();
    if !out.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("   threaded NAPI on the relay's veths failed: {out:?}; no relay-side column");
        return Vec::new();
    }
    // The threads start asynchronously.
    std::thread::sleep(Duration::from_millis(100));
    let new: Vec<u32> = kthreads("napi/")
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    for &pid in &new {
        // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(relay_cpu, &mut set);
            if libc::sched_setaffinity(pid as i32, std::mem::size_of::<libc::cpu_set_t>(), &set)
                != 0
            {
                eprintln!(
                    "   cannot pin NAPI thread {pid}: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    if new.is_empty() {
        eprintln!("   threaded NAPI: no new napi/ threads appeared; no relay-side column");
    } else {
        println!(
            "   threaded NAPI on {}: threads {new:?} pinned to CPU {relay_cpu}",
            devs.iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    new
}

fn ksoftirqd_pids() -> Vec<u32> {
    kthreads("ksoftirqd/")
}

/// PIDs whose command name starts with `prefix`.
fn kthreads(prefix: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with(prefix))
        })
        .collect()
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
    fn markdown_has_every_column() {
        let p = Point {
            plane: Plane::XdpNative,
            offered_pps: 5000,
            calls: 50,
            duration_s: 5.0,
            sent: 25_000,
            send_errors: 0,
            sent_pps: 5000.0,
            forwarded: 25_000,
            forwarded_pps: 5000.0,
            lost: 0,
            loss_pct: 0.0,
            duplicates: 0,
            reordered: 0,
            corrupt: 0,
            relay_cpu_s: 0.0,
            softirq_s: 0.01,
            relay_napi_s: Some(0.05),
            generators_cpu_s: 5.0,
            ksoftirqd_s: 0.0,
            system_busy_s: 6.0,
            ns_per_packet: Some(400.0),
            relay_side_ns_per_packet: Some(2000.0),
            relay_side_over_baseline: Some(-100.0),
            kernel_forwarded: Some(25_000),
            to_userspace: Some(0),
            kernel_share_pct: Some(100.0),
            xdp_runs: Some(25_000),
            xdp_run_ns: Some(30_000_000),
            xdp_ns_per_run: Some(1200.0),
        };
        let r = Report {
            kernel: "6.18".into(),
            cpus: 2,
            ipv6: false,
            method: "",
            loadavg_start: "1.00 1.00 1.00".into(),
            loadavg_end: "2.00 1.00 1.00".into(),
            points: vec![p],
            failed: vec![Failed {
                plane: Plane::Rtpengine,
                reason: "not installed".into(),
            }],
        };
        let md = markdown(&r);
        assert!(
            md.contains("| relayd XDP native | 5000 | 50 | 5000 | 5000 | 0.000 | 400 | 2000 | -100 | 1200.0 | 100.00 |"),
            "{md}"
        );
        assert!(
            md.contains("FAILED rtpengine userspace: not installed"),
            "{md}"
        );
        assert!(md.contains("Load average at start 1.00 1.00 1.00"), "{md}");
    }

    #[test]
    fn sdp_round_trip() {
        let s = sdp("10.1.1.1".parse().unwrap(), 4000, 1);
        assert_eq!(media_port(&s).unwrap(), 4000);
    }
}
