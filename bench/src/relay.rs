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
//! Families (`--families v4,v6,v6-v4`, default `v4`; `--ipv6` is `v6`): each plane runs once
//! per family. `v6-v4` is an IPv6 caller and an IPv4 callee: relayd listens on `::` with one
//! `--advertise` address per family, each offer and answer asks for its receiver's family (ng's
//! `address family`, as sipd does), and the relay bridges the two in userspace (the XDP program
//! passes such packets up, so the 90% rule does not apply; the baseline cannot bridge and is
//! skipped). Its "over base" is against the IPv6 baseline.
//!
//! Clean-up: namespaces are deleted with the topology, relays are stopped by PID, relayd's
//! pins are removed with `relayd --cleanup` after each plane.

pub(crate) mod cpu;
mod measure;
pub(crate) mod planes;
mod report;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::common::{self, loadavg};
use cpu::BpfStats;
use report::{Failed, Report};

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

/// The address families of a run's calls: the caller's side, then the callee's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Family {
    V4,
    V6,
    /// An IPv6 caller and an IPv4 callee: the relay bridges the families (on `::`), which
    /// only its userspace path can do; plain forwarding cannot, so no baseline.
    V6V4,
}

impl Family {
    fn parse(s: &str) -> anyhow::Result<Family> {
        Ok(match s {
            "v4" | "ipv4" => Family::V4,
            "v6" | "ipv6" => Family::V6,
            "v6-v4" | "cross" => Family::V6V4,
            _ => bail!("unknown family {s:?} (v4, v6, v6-v4)"),
        })
    }
    fn caller_v6(self) -> bool {
        self != Family::V4
    }
    fn callee_v6(self) -> bool {
        self == Family::V6
    }
    fn cross(self) -> bool {
        self == Family::V6V4
    }
    fn slug(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
            Family::V6V4 => "v6-v4",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
            Family::V6V4 => "IPv6↔IPv4",
        }
    }
}

#[derive(Debug, Clone)]
struct Opts {
    rates: Vec<u32>,
    duration: Duration,
    planes: Vec<Plane>,
    relayd: Option<PathBuf>,
    /// Each plane runs once per family, in this order.
    families: Vec<Family>,
}

const USAGE: &str = "cargo xtask bench relay [--rates 5000,20000,50000,100000,150000] [--duration SECS] \
[--planes baseline,xdp-native,xdp-skb,userspace,rtpengine] [--relayd PATH] \
[--families v4,v6,v6-v4 | --ipv6]";

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
        families: vec![Family::V4],
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
            "--ipv6" => o.families = vec![Family::V6],
            "--families" => {
                o.families = val()?
                    .split(',')
                    .map(|f| Family::parse(f.trim()))
                    .collect::<anyhow::Result<_>>()?
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    Ok(o)
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    if !::tests::privileged() {
        bail!("bench relay needs root (network namespaces, XDP); run it as root");
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Generators on CPU 0; relays get the last CPU (see the module docs).
    common::pin_self(0);
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
    for &family in &o.families {
        for &plane in &o.planes {
            if plane == Plane::Baseline && family.cross() {
                println!(
                    "== {} {}: skipped (plain forwarding cannot bridge families)",
                    plane.name(),
                    family.name()
                );
                continue;
            }
            println!("== {} {}", plane.name(), family.name());
            if let Err(e) = measure::bench_plane(plane, family, &o, relay_cpu, &mut points) {
                eprintln!("   FAILED: {e:#}");
                failed.push(Failed {
                    plane,
                    family,
                    reason: format!("{e:#}"),
                });
            }
        }
    }
    // A cross-family run has no baseline of its own: the IPv6 one is the nearer path.
    let base: BTreeMap<(bool, u32), f64> = points
        .iter()
        .filter(|p| p.plane == Plane::Baseline)
        .filter_map(|p| {
            Some((
                (p.family.caller_v6(), p.offered_pps),
                p.relay_side_ns_per_packet?,
            ))
        })
        .collect();
    for p in &mut points {
        if p.plane != Plane::Baseline {
            p.relay_side_over_baseline = p
                .relay_side_ns_per_packet
                .zip(base.get(&(p.family.caller_v6(), p.offered_pps)))
                .map(|(n, b)| n - b);
        }
    }

    let report = Report {
        kernel: common::kernel_release(),
        cpus,
        families: o.families.clone(),
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
    let dir = ::tests::bins::workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let md = report::markdown(&report);
    crate::common::write_report(&dir, "relay", &report, &md)?;
    Ok(())
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
        assert_eq!(o.families, vec![Family::V4]);
        let o = parse(&["--families".into(), "v6,v6-v4,v4".into()]).unwrap();
        assert_eq!(o.families, vec![Family::V6, Family::V6V4, Family::V4]);
        assert_eq!(
            parse(&["--ipv6".into()]).unwrap().families,
            vec![Family::V6]
        );
        assert!(parse(&["--families".into(), "v5".into()]).is_err());
        assert!(parse(&["--rates".into(), "10".into()]).is_err());
        assert!(parse(&["--bogus".into()]).is_err());
    }
}
