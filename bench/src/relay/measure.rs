//! One plane measured: its topology and relay, then each rate's calls, warm-up and measured
//! run both ways, and the point it gives.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use ::tests::netns::{Topology, TopologyOptions};
use ::tests::rtp::{self, Flow, RecvConfig, SendConfig};
use anyhow::{Context as _, bail};

use super::cpu::{CpuSnap, threaded_napi, xdp_prog_stats};
use super::planes::{Relay, cleanup_pins, instance, relay_stats, resize_calls, start_relay};
use super::report::Point;
use super::{CALLEE_PORT, CALLER_PORT, Family, Opts, PPS_PER_CALL, Plane};
use crate::common::opt;

pub(super) fn bench_plane(
    plane: Plane,
    family: Family,
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
        _ => start_relay(plane, family, o, &topo, relay_cpu)?,
    };
    let r = measure_rates(plane, family, o, relay_cpu, &topo, &mut relay, points);
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
    family: Family,
    o: &Opts,
    relay_cpu: usize,
    topo: &Topology,
    relay: &mut Relay,
    points: &mut Vec<Point>,
) -> anyhow::Result<()> {
    let caller_ip = topo.caller_if.ip(family.caller_v6());
    let callee_ip = topo.callee_if.ip(family.callee_v6());
    let relay_a = topo.relay_caller_if.ip(family.caller_v6());
    let relay_b = topo.relay_callee_if.ip(family.callee_v6());
    let caller = rtp::bind_in(&topo.caller, SocketAddr::new(caller_ip, CALLER_PORT))?;
    let callee = rtp::bind_in(&topo.callee, SocketAddr::new(callee_ip, CALLEE_PORT))?;
    let xdp = matches!(plane, Plane::XdpNative | Plane::XdpSkb);
    if plane == Plane::XdpNative {
        relay.peer_pass = Some(::tests::xdp::attach_peer_pass(topo, &instance())?);
        println!("   sbc_xdp_pass attached (driver mode) to the caller's and callee's veths");
    }
    let napi = threaded_napi(topo, relay_cpu);
    // Baseline: straight to the other end through the forwarding relay namespace. relayd
    // anchors media on one address (`--address`), reachable from both sides; across families
    // on `::`, each side sending to the relay's carrier-side address of its own family.
    let (dst_a, dst_b) = match plane {
        Plane::Baseline => (callee_ip, caller_ip),
        Plane::Rtpengine => (relay_a, relay_b),
        _ => (relay_a, topo.relay_caller_if.ip(family.callee_v6())),
    };

    for &rate in &o.rates {
        let calls = (rate / PPS_PER_CALL) as usize;
        // Only the calls this rate uses exist, so a relay's per-call overhead is the rate's.
        if let Some(ng) = &relay.ng {
            let direction = plane == Plane::Rtpengine;
            resize_calls(ng, topo, family, direction, &mut relay.ports, calls)
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

        let run = measured_run(plane, o, relay, &napi, || {
            run_traffic(&caller, &callee, &to_relay_a, &to_relay_b, rate, o.duration)
        })?;
        let p = point(plane, family, rate, calls, &run);
        print_point(&p, xdp);
        let share = p.kernel_share_pct;
        points.push(p);
        // Across families the XDP program passes every packet up by design: what is measured
        // there is the userspace bridge behind an XDP program.
        if xdp && !family.cross() && !share.is_some_and(|s| s >= 90.0) {
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

/// One measured run and the counters around it.
struct Run {
    traffic: Traffic,
    cpu0: CpuSnap,
    cpu1: CpuSnap,
    /// Whether the relay's NAPI threads were measured.
    napi: bool,
    /// XDP planes: (forwarded by the kernel, passed to userspace) over the run.
    kernel: Option<(u64, u64)>,
    /// XDP planes: (run time ns, runs) of the XDP programs over the run.
    prog: Option<(u64, u64)>,
}

/// Runs `traffic` between readings of the relay's CPU, and for XDP planes of relayd's counters
/// and its programs' run time; fails if the relay exited meanwhile.
fn measured_run(
    plane: Plane,
    o: &Opts,
    relay: &mut Relay,
    napi: &[u32],
    traffic: impl FnOnce() -> anyhow::Result<Traffic>,
) -> anyhow::Result<Run> {
    let xdp = matches!(plane, Plane::XdpNative | Plane::XdpSkb);
    let (stats0, prog0) = if xdp {
        (Some(relay_stats(o)?), Some(xdp_prog_stats()?))
    } else {
        (None, None)
    };
    let cpu0 = CpuSnap::take(relay.pid, napi)?;
    let traffic = traffic()?;
    let cpu1 = CpuSnap::take(relay.pid, napi)?;
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
    Ok(Run {
        traffic,
        cpu0,
        cpu1,
        napi: !napi.is_empty(),
        kernel,
        prog,
    })
}

/// The point a measured run gives.
fn point(plane: Plane, family: Family, rate: u32, calls: usize, run: &Run) -> Point {
    let (sent_a, got_b, sent_b, got_a) = &run.traffic;
    let (cpu0, cpu1) = (&run.cpu0, &run.cpu1);
    let (kernel, prog) = (run.kernel, run.prog);
    let sent = sent_a.total() + sent_b.total();
    let forwarded = got_b.unique() + got_a.unique();
    let lost = got_b.lost(sent_a) + got_a.lost(sent_b);
    let secs = sent_a.elapsed.max(sent_b.elapsed).as_secs_f64();
    let relay_cpu_s = cpu1.relay_s - cpu0.relay_s;
    let softirq_s = cpu1.softirq_s - cpu0.softirq_s;
    let generators_cpu_s = cpu1.self_s - cpu0.self_s;
    let ksoftirqd_s = cpu1.ksoftirqd_s - cpu0.ksoftirqd_s;
    let relay_napi_s = run.napi.then_some(cpu1.napi_s - cpu0.napi_s);
    Point {
        plane,
        family,
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
        ns_per_packet: (forwarded > 0).then(|| (relay_cpu_s + softirq_s) * 1e9 / forwarded as f64),
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
    }
}

fn print_point(p: &Point, xdp: bool) {
    println!(
        "   {:>7} pps offered, {:>4} calls: sent {:.0}/s, forwarded {:.0}/s, loss {:.3}%, \
         relay {:.3} s + softirq {:.2} s CPU, {} ns/pkt; relay NAPI {} s, relay side {} ns/pkt; \
         ksoftirqd {:.3} s",
        p.offered_pps,
        p.calls,
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
