//! One system under the whole matrix: its topology and stack, the callee, then a step per
//! kind × rate (and one without flood first), each the carrier's run with the flood beside it.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ::tests::netns::{Topology, TopologyOptions};
use anyhow::Context as _;

use super::generator::{self, Sent};
use super::packet::{Link, Template};
use super::report::{Step, SystemResult};
use super::systems::{MEDIA_PORTS, SIP_PORT, Stack};
use super::{Kind, Opts, System};
use crate::common;
use crate::kamailio::media;
use crate::relay::cpu::{process_ns, threaded_napi};
use crate::sip::procs::{Proc, TempDir};
use crate::sip::{PASSWORD, USER, sipp};

const RTP_PORT: u16 = 20_000;
const CLD: &str = "2002";
const CLI: &str = "1001";
/// The attackers' addresses (RFC 2544's benchmark range), a /18 per kind.
const SPOOFED: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
const PER_KIND: u32 = 16_384;

/// Measures `system` over the matrix; a failure ends its steps and is recorded, never
/// propagated.
pub(super) fn bench_system(
    system: System,
    o: &Opts,
    box_cpu: usize,
    out_dir: &Path,
) -> SystemResult {
    let mut r = SystemResult {
        system,
        name: system.name().into(),
        version: String::new(),
        log: String::new(),
        steps: Vec::new(),
        error: None,
    };
    if let Err(e) = run_system(system, o, box_cpu, out_dir, &mut r) {
        r.error = Some(format!("{e:#}"));
    }
    r
}

fn run_system(
    system: System,
    o: &Opts,
    box_cpu: usize,
    out_dir: &Path,
    r: &mut SystemResult,
) -> anyhow::Result<()> {
    let tmp = TempDir::new(&format!("flood-{}", system.slug()))?;
    let topo = Topology::three(TopologyOptions {
        gro: Some(true),
        forwarding: true,
        ..Default::default()
    })?;
    // The box answers the spoofed sources through the attacker's link.
    topo.relay.ip([
        "route",
        "add",
        "198.18.0.0/15",
        "via",
        &topo.caller_if.ipv4.to_string(),
    ])?;
    let mut stack = Stack::start(system, o, &topo, tmp.path(), box_cpu, out_dir)?;
    r.version = stack.version.clone();
    r.log = stack.log.display().to_string();
    let napi = threaded_napi(&topo, box_cpu);
    let link = Link {
        ifindex: topo.caller_if.ifindex,
        src_mac: topo.caller_if.mac,
        dst_mac: topo.relay_caller_if.mac,
        dst_ip: topo.relay_caller_if.ipv4,
        sip_port: SIP_PORT,
        media_ports: MEDIA_PORTS,
    };
    let socket = topo
        .caller
        .enter(|| generator::packet_socket(link.ifindex))?;
    let uas_addr = SocketAddr::new(topo.callee_if.ip(false), SIP_PORT);
    let caller = ::tests::rtp::bind_in(
        &topo.caller,
        SocketAddr::new(topo.caller_if.ip(false), RTP_PORT),
    )?;
    let callee = ::tests::rtp::bind_in(&topo.callee, SocketAddr::new(uas_addr.ip(), RTP_PORT))?;
    let dir = tmp.path();
    let mut uas_cmd = sipp::ns_command(&topo.callee, "uas.xml", uas_addr, dir, false);
    uas_cmd.args(["-set", "rtp_port", &RTP_PORT.to_string()]);
    let _uas = sipp::spawn_uas_bound(
        &topo.callee,
        uas_addr,
        &mut uas_cmd,
        &dir.join("uas_stdout.log"),
    )?;
    let env = Env {
        o,
        topo: &topo,
        link,
        socket: &socket,
        caller: &caller,
        callee: &callee,
        napi: &napi,
        box_cpu,
    };
    let mut plan: Vec<Option<(Kind, u32)>> = vec![None];
    for &k in &o.kinds {
        plan.extend(o.rates.iter().map(|&rate| Some((k, rate))));
    }
    for (n, what) in plan.into_iter().enumerate() {
        let step_dir = dir.join(format!("step-{n}"));
        std::fs::create_dir_all(&step_dir)?;
        let s = env.step(&mut stack, what, n as u32, &step_dir)?;
        println!(
            "   {:<12} {:>8} sent {:>9.0} pps: {}/{} calls ({:.1}%), setup p50 {} p99 {} ms, box {:.0}% + kernel {:.0}%",
            s.kind.map_or("none", |k| k.slug()),
            s.rate_label(),
            s.sent.pps,
            s.successful,
            s.offered,
            s.completed_pct,
            common::opt(s.setup_p50_ms, 0),
            common::opt(s.setup_p99_ms, 0),
            s.box_cpu_pct,
            s.kernel_cpu_pct,
        );
        r.steps.push(s);
        stack.check_alive()?;
    }
    Ok(())
}

/// What every step of a system shares.
struct Env<'a> {
    o: &'a Opts,
    topo: &'a Topology,
    link: Link,
    socket: &'a std::os::fd::OwnedFd,
    caller: &'a std::net::UdpSocket,
    callee: &'a std::net::UdpSocket,
    napi: &'a [u32],
    box_cpu: usize,
}

/// CPU seconds at one instant: the box's processes, its NAPI threads, its CPU's softirq.
fn cpu_now(stack: &mut Stack, napi: &[u32], box_cpu: usize) -> (f64, f64, f64) {
    let procs: u64 = stack.pids().iter().map(|&p| process_ns(p)).sum();
    let napi_ns: u64 = napi.iter().map(|&p| process_ns(p)).sum();
    let name = format!("cpu{box_cpu}");
    let softirq = common::proc_stat_cpus()
        .ok()
        .and_then(|v| v.into_iter().find(|(n, _)| *n == name))
        .and_then(|(_, t)| t.get(6).copied())
        .unwrap_or(0.0)
        / common::clk_tck();
    (procs as f64 / 1e9, napi_ns as f64 / 1e9, softirq)
}

impl Env<'_> {
    fn step(
        &self,
        stack: &mut Stack,
        what: Option<(Kind, u32)>,
        n: u32,
        dir: &Path,
    ) -> anyhow::Result<Step> {
        let o = self.o;
        let sources = what.map(|(k, _)| {
            let count = k.sources() as u32;
            // Fresh sources each step, so an earlier step's bans do not carry over.
            let slots = (PER_KIND / count).max(1);
            let base = u32::from(SPOOFED) + k.index() * PER_KIND + (n % slots) * count;
            generator::sources(Ipv4Addr::from(base), count as usize)
        });
        if let (Some((Kind::Banned, _)), Some(src)) = (what, &sources) {
            // Each source shows itself as a scanner once; the ban lands before the flood.
            let t = Template::scanner(&self.link);
            let stop = AtomicBool::new(false);
            generator::flood(
                self.socket,
                &self.link,
                &t,
                src,
                1000,
                Duration::from_secs_f64(src.len() as f64 * 2.0 / 1000.0),
                &stop,
            )?;
            std::thread::sleep(Duration::from_secs(2));
        }
        let calls = (o.cps as f64 * o.duration.as_secs_f64()).round() as u64;
        let bound = o.duration + o.hold + Duration::from_secs(30);
        let uac_addr = SocketAddr::new(self.topo.caller_if.ip(false), SIP_PORT);
        let stat_file = dir.join("uac_stats.csv");
        let mut uac_cmd = sipp::ns_command(&self.topo.caller, "uac.xml", uac_addr, dir, false);
        let limit = (o.cps as f64 * (o.hold.as_secs_f64() + 10.0)).ceil() as u64;
        uac_cmd
            .args(["-s", CLD, "-set", "cli", CLI])
            .args(["-set", "rtp_port", &RTP_PORT.to_string()])
            .args(["-au", USER, "-ap", PASSWORD])
            .args(["-auth_uri", &format!("{CLD}@{}", stack.sip)])
            .args(["-r", &o.cps.to_string(), "-rp", "1000"])
            .args(["-m", &calls.to_string(), "-l", &limit.to_string()])
            .args(["-d", &o.hold.as_millis().to_string()])
            .args(["-recv_timeout", "10000"])
            .args(["-timeout", &format!("{}s", bound.as_secs())])
            .args(["-trace_stat", "-fd", "1", "-stf"])
            .arg(&stat_file)
            .args(["-trace_rtt", "-rtt_freq", "1"])
            .arg(stack.sip.to_string());

        let c0 = stack.counters(self.topo);
        let cpu0 = cpu_now(stack, self.napi, self.box_cpu);
        let started = Instant::now();
        let mut uac = Proc::spawn("sipp UAC", &mut uac_cmd, &dir.join("uac_stdout.log"))?;
        let done = AtomicBool::new(false);
        let stop = AtomicBool::new(false);
        let legs = stack.legs;
        let (media_r, sent, status) = std::thread::scope(|s| {
            let m = s.spawn(|| {
                media::run(
                    self.caller,
                    self.callee,
                    (&dir.join("uac_logs.log"), &dir.join("uas_logs.log")),
                    legs,
                    o.hold,
                    bound,
                    &done,
                )
            });
            let f = s.spawn(|| -> anyhow::Result<Sent> {
                let (Some((k, rate)), Some(src)) = (what, &sources) else {
                    return Ok(Sent::default());
                };
                generator::flood(
                    self.socket,
                    &self.link,
                    &Template::new(k, &self.link),
                    src,
                    rate,
                    o.duration,
                    &stop,
                )
            });
            let status = uac.wait_until(
                started + bound + Duration::from_secs(15),
                Duration::from_millis(100),
            );
            stop.store(true, Ordering::Relaxed);
            done.store(true, Ordering::Relaxed);
            let sent = f.join().expect("flood thread");
            (m.join().expect("media thread"), sent, status)
        });
        let wall = started.elapsed().as_secs_f64();
        let cpu1 = cpu_now(stack, self.napi, self.box_cpu);
        let c1 = stack.counters(self.topo);
        drop(uac);
        let sent = sent.context("flood")?;
        let status = status?;
        let media_r = media_r.unwrap_or_default();
        let stats = std::fs::read_to_string(&stat_file)
            .ok()
            .and_then(|s| sipp::parse_stats(&s, calls).ok());
        let mut setup = rtt_ms(dir);
        setup.sort_by(f64::total_cmp);
        let successful = stats.as_ref().map_or(0, |s| s.successful);
        let drops: BTreeMap<String, u64> = c1
            .iter()
            .filter_map(|(k, v)| {
                let d = v.saturating_sub(c0.get(k).copied().unwrap_or(0));
                (d > 0).then(|| (k.clone(), d))
            })
            .collect();
        Ok(Step {
            kind: what.map(|(k, _)| k),
            rate: what.map(|(_, r)| r),
            sources: sources.as_ref().map_or(0, Vec::len),
            sent,
            offered: calls,
            successful,
            failed: stats.as_ref().map_or(0, |s| s.failed),
            completed_pct: 100.0 * successful as f64 / calls.max(1) as f64,
            setup_p50_ms: percentile(&setup, 0.50),
            setup_p99_ms: percentile(&setup, 0.99),
            media_sent: media_r.sent,
            media_lost: media_r.lost,
            wall_s: wall,
            box_cpu_pct: 100.0 * (cpu1.0 - cpu0.0) / wall,
            kernel_cpu_pct: 100.0 * ((cpu1.1 - cpu0.1) + (cpu1.2 - cpu0.2)) / wall,
            drops,
            uac_exit: status.map(|s| s.to_string()),
            uac_errors: std::fs::read_to_string(dir.join("uac_errors.log"))
                .map(|s| sipp::summarize_errors(&s, 3))
                .unwrap_or_default(),
        })
    }
}

/// The `p` quantile (nearest rank) of sorted values.
pub(super) fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

/// INVITE → 200 times (ms) of every call, from sipp's `-trace_rtt` files in `dir`.
fn rtt_ms(dir: &Path) -> Vec<f64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("uac_") && n.ends_with("_rtt.csv")
        })
        .flat_map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split(';').nth(1)?.trim().parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod unit {
    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(super::percentile(&v, 0.99), Some(99.0));
        assert_eq!(super::percentile(&v, 0.5), Some(50.0));
        assert_eq!(super::percentile(&[], 0.5), None);
    }
}
