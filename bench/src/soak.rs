//! `cargo xtask soak --minutes N [--cps R] [--hold S]` (or `bench soak` from this crate): sipd
//! under a steady call load with media for N minutes, and proof that it gives back what the
//! calls took. Results: `target/bench/soak.json` (with every sample) and `soak.md`; sipd's
//! log next to them (`soak-sipd.log`). Exits non-zero with a table of what did not come back.
//!
//! Setup: the tests' three namespaces (caller — relay — callee, GRO on, forwarding), the
//! sipd configuration and provisioning `bench sip` uses (one account with a SIP password, a
//! rule without restrictions, a free tariff, the callee as the one connection) addressed to
//! the namespaces: `sipd run` in the relay namespace on the last CPU, data plane XDP native
//! on both relay veths (with the object's `sbc_xdp_pass` on their peers, as `bench kamailio`
//! does for relayd, so the kernel's redirects are delivered), `/metrics` public on
//! 127.0.0.1 in that namespace. The caller is sipp (`tests/sipp/uac.xml`, digest auth: each
//! call is INVITE → 401 → INVITE with credentials) at `--cps` for `--minutes`, each call held
//! `--hold` s then BYE; the callee sipp (`tests/sipp/uas.xml`) answers at once; this process
//! sends G.711-sized RTP both ways on every answered call (as `bench kamailio`, until 1.5 s
//! before the BYE) and checks what comes back byte for byte.
//!
//! Sampled every `--interval` s, from before the first call to the end: sipd's RSS and VmHWM,
//! open fds and threads (`/proc`), the entries of every BPF map pinned for its instance
//! (hash and LPM maps counted key by key through `BPF_MAP_GET_NEXT_KEY`; arrays and the ring
//! buffer have a fixed size and are not counted), and every gauge of `/metrics` that is a
//! table (calls, relay sessions, TCP connections, refusal rows, IDS sources, bans, call
//! ladders, the CDR writer's queue). After the last call ends, the soak waits at least the
//! relay's media timeout, then polls until every figure is back (at most 90 s more) and
//! judges the last sample against the last one before the calls (see `report::rule`).
//! Then sipd is stopped (SIGTERM) and its CDRs counted: they must equal its answered + failed
//! calls.
//!
//! Bounded: the caller places `cps × minutes × 60` calls and has a deadline, every wait has
//! one. Clean-up: processes stopped by PID by their guards, sipd's pins removed with
//! `sipd cleanup`, namespaces deleted with the topology, temporary files removed.

mod report;
mod sample;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ::tests::netns::{Topology, TopologyOptions};
use anyhow::{Context as _, bail};

use crate::common::{self, loadavg};
use crate::kamailio::media;
use crate::sip::procs::{self, Proc, TempDir};
use crate::sip::proxies::{self, SipdSite};
use crate::sip::{PASSWORD, USER, sipp};
use report::{Calls, Media, Report};
use sample::{Sample, Target};

const SIP_PORT: u16 = 5060;
const RTP_PORT: u16 = 20_000;
const MGMT_PORT: u16 = 18_443;
/// 2 ports per leg, 4 per call: 5000 calls at once, far above cps × (hold + setup).
const MEDIA_PORTS: (u16, u16) = (30_000, 49_999);
const CLD: &str = "2002";
const CLI: &str = "1001";
/// After the relay's media timeout, how long the figures get to come back.
const SETTLE_MAX: Duration = Duration::from_secs(90);

#[derive(Debug, Clone)]
struct Opts {
    minutes: f64,
    cps: u32,
    hold: Duration,
    interval: Duration,
    media_timeout_secs: u64,
    dataplane: String,
    sipd: Option<PathBuf>,
}

impl Opts {
    fn calls(&self) -> u64 {
        (self.cps as f64 * self.minutes * 60.0).round().max(1.0) as u64
    }
    /// The caller's deadline: its calls, the last one's hold, slack for set-up.
    fn bound(&self) -> Duration {
        Duration::from_secs_f64(self.minutes * 60.0) + self.hold + Duration::from_secs(60)
    }
}

const USAGE: &str = "cargo xtask soak --minutes N [--cps 20] [--hold 10] [--interval 5] \
[--media-timeout 20] [--dataplane xdp-native|xdp-skb|userspace] [--sipd PATH]";

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        minutes: 0.0,
        cps: 20,
        hold: Duration::from_secs(10),
        interval: Duration::from_secs(5),
        media_timeout_secs: 20,
        dataplane: "xdp-native".into(),
        sipd: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .with_context(|| format!("{a} needs a value; {USAGE}"))
        };
        let num = |s: &str, what: &str, range: std::ops::RangeInclusive<f64>| {
            let v: f64 = s.parse().with_context(|| format!("{what} {s:?}"))?;
            if !range.contains(&v) {
                bail!("{what} must be within {}..={}", range.start(), range.end());
            }
            Ok(v)
        };
        match a.as_str() {
            "--minutes" => o.minutes = num(val()?, "--minutes", 0.5..=1440.0)?,
            "--cps" => o.cps = num(val()?, "--cps", 1.0..=200.0)? as u32,
            // Media stops 1.5 s before the BYE: shorter holds carry next to none.
            "--hold" => o.hold = Duration::from_secs_f64(num(val()?, "--hold", 3.0..=300.0)?),
            "--interval" => {
                o.interval = Duration::from_secs_f64(num(val()?, "--interval", 1.0..=60.0)?)
            }
            "--media-timeout" => {
                o.media_timeout_secs = num(val()?, "--media-timeout", 5.0..=300.0)? as u64
            }
            "--dataplane" => {
                let d = val()?;
                if !["xdp-native", "xdp-skb", "userspace"].contains(&d.as_str()) {
                    bail!("--dataplane must be xdp-native, xdp-skb or userspace");
                }
                o.dataplane = d.clone();
            }
            "--sipd" => o.sipd = Some(PathBuf::from(val()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    if o.minutes == 0.0 {
        bail!("--minutes is required; {USAGE}");
    }
    // Our RTP is 100 packets/s per call in progress: keep the generator within one CPU.
    let concurrent = o.cps as f64 * o.hold.as_secs_f64();
    if concurrent > 2_000.0 {
        bail!("--cps × --hold = {concurrent:.0} calls in progress; at most 2000");
    }
    Ok(o)
}

/// sipd's pins, removed (`sipd cleanup` in the relay namespace, then the directory) when
/// dropped: sipd leaves them for its next start, and this run is over.
pub(crate) struct Pins {
    pub(crate) bin: PathBuf,
    pub(crate) config: PathBuf,
    pub(crate) ns: PathBuf,
    pub(crate) instance: String,
}

impl Drop for Pins {
    fn drop(&mut self) {
        let st = std::process::Command::new("nsenter")
            .arg(format!("--net={}", self.ns.display()))
            .arg("--")
            .arg(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .arg("cleanup")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !st.as_ref().is_ok_and(|s| s.success()) {
            eprintln!("soak: `sipd cleanup` failed: {st:?}");
        }
        let _ = std::fs::remove_dir_all(Path::new("/sys/fs/bpf").join(&self.instance));
    }
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    if !::tests::privileged() {
        bail!("soak needs root (network namespaces, XDP); run it as root");
    }
    let sipp_version = sipp::check_installed()?;
    let bin = match &o.sipd {
        Some(p) => p.clone(),
        None if std::env::var_os("SBC_BENCH_SIPD_BUILD_FAILED").is_some() => {
            bail!("sipd did not build (see cargo's errors above); not soaking a stale binary")
        }
        None => ::tests::bins::find_built("sipd", "-p sipd", "--sipd")?,
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let box_cpu = cpus.saturating_sub(1);
    common::pin_self(0);
    procs::raise_nofile(65_536);
    let out_dir = ::tests::bins::workspace_root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let loadavg_start = loadavg();

    let tmp = TempDir::new("soak")?;
    let topo = Topology::three(TopologyOptions {
        gro: Some(true),
        forwarding: true,
        ..Default::default()
    })?;
    let instance = format!("sbcsoak{}", std::process::id());
    let relay_ip = topo.relay_caller_if.ip(false);
    let site = SipdSite {
        sip: SocketAddr::new(relay_ip, SIP_PORT),
        media: relay_ip,
        media_ports: MEDIA_PORTS,
        dataplane: o.dataplane.clone(),
        interfaces: vec![
            topo.relay_caller_if.dev.clone(),
            topo.relay_callee_if.dev.clone(),
        ],
        instance: instance.clone(),
        management: SocketAddr::from(([127, 0, 0, 1], MGMT_PORT)),
        metrics_public: true,
    };
    let uas_addr = SocketAddr::new(topo.callee_if.ip(false), SIP_PORT);
    let uac_addr = SocketAddr::new(topo.caller_if.ip(false), SIP_PORT);
    let cfg = tmp.path().join("sbc.toml");
    let prov = tmp.path().join("prov.toml");
    std::fs::write(
        &cfg,
        proxies::sipd_config_at(&site, &tmp.path().join("data"), o.media_timeout_secs),
    )?;
    std::fs::write(&prov, proxies::sipd_provisioning_to(uas_addr))?;
    proxies::sipd_import(&bin, &cfg, &prov)?;
    let sipd_version = proxies::sipd_version(&bin);

    let _pins = Pins {
        bin: bin.clone(),
        config: cfg.clone(),
        ns: topo.relay.path(),
        instance: instance.clone(),
    };
    let log = out_dir.join("soak-sipd.log");
    let _ = std::fs::remove_file(&log);
    let mut cmd = topo.relay.command("taskset");
    cmd.args(["-c", &box_cpu.to_string()])
        .arg(&bin)
        .arg("-c")
        .arg(&cfg)
        .arg("run")
        .env("NO_COLOR", "1");
    let mut sipd = Proc::spawn_until(
        "sipd",
        &mut cmd,
        &log,
        "sipd ready",
        Duration::from_secs(60),
    )?;
    let _peer_pass = if o.dataplane == "xdp-native" {
        Some(::tests::xdp::attach_peer_pass(&topo, &instance)?)
    } else {
        None
    };

    let caller = ::tests::rtp::bind_in(&topo.caller, SocketAddr::new(uac_addr.ip(), RTP_PORT))?;
    let callee = ::tests::rtp::bind_in(&topo.callee, SocketAddr::new(uas_addr.ip(), RTP_PORT))?;
    let target = Target {
        pid: sipd.pid(),
        instance: &instance,
        ns: &topo.relay,
        metrics_url: format!("https://127.0.0.1:{MGMT_PORT}/metrics"),
    };

    let calls = o.calls();
    let bound = o.bound();
    let dir = tmp.path();
    let mut uas_cmd = sipp::ns_command(&topo.callee, "uas.xml", uas_addr, dir, false);
    uas_cmd
        .args(["-set", "rtp_port", &RTP_PORT.to_string()])
        .args(["-m", &calls.to_string(), "-d", "0"])
        .args(["-timeout", &format!("{}s", bound.as_secs())]);
    let uas = sipp::spawn_uas_bound(
        &topo.callee,
        uas_addr,
        &mut uas_cmd,
        &dir.join("uas_stdout.log"),
    )?;
    let stat_file = dir.join("uac_stats.csv");
    let mut uac_cmd = sipp::ns_command(&topo.caller, "uac.xml", uac_addr, dir, false);
    let limit = (o.cps as f64 * (o.hold.as_secs_f64() + 10.0)).ceil() as u64;
    uac_cmd
        .args(["-s", CLD, "-set", "cli", CLI])
        .args(["-set", "rtp_port", &RTP_PORT.to_string()])
        .args(["-au", USER, "-ap", PASSWORD])
        // sipd checks the digest's uri against the Request-URI the scenario writes.
        .args(["-auth_uri", &format!("{CLD}@{}", site.sip)])
        .args(["-r", &o.cps.to_string(), "-rp", "1000"])
        .args(["-m", &calls.to_string(), "-l", &limit.to_string()])
        .args(["-d", &o.hold.as_millis().to_string()])
        .args(["-timeout", &format!("{}s", bound.as_secs())])
        .args(["-trace_stat", "-fd", "5", "-stf"])
        .arg(&stat_file)
        .arg(site.sip.to_string());

    // The sampler runs from here to the end; the phases are marked by sample index.
    let t0 = Instant::now();
    let samples: Mutex<Vec<Sample>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let mut problems = Vec::new();
    let (load, settled, media_result, uac_status) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let next = Instant::now() + o.interval;
                let smp = target.sample(t0.elapsed().as_secs_f64());
                for e in &smp.errors {
                    eprintln!("   sample: {e}");
                }
                samples.lock().unwrap_or_else(|p| p.into_inner()).push(smp);
                while Instant::now() < next && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        let count = || samples.lock().unwrap_or_else(|p| p.into_inner()).len();
        // Idle: three samples before the first call.
        wait_until(Duration::from_secs(60), || count() >= 3);
        println!(
            "   idle sampled; {calls} calls at {} cps for {:.1} min",
            o.cps, o.minutes
        );
        let load_start = (count(), t0.elapsed().as_secs_f64());
        let r = run_load(&o, &mut uac_cmd, dir, &caller, &callee, bound);
        let load_end = (count(), t0.elapsed().as_secs_f64());
        println!(
            "   calls done at {:.0} s; waiting for the relay's media timeout ({} s) and the tables",
            load_end.1, o.media_timeout_secs
        );
        std::thread::sleep(Duration::from_secs(o.media_timeout_secs + 5));
        let idle = load_start.0.saturating_sub(1);
        let back = || {
            let v = samples.lock().unwrap_or_else(|p| p.into_inner());
            let (Some(i), Some(last)) = (v.get(idle), v.last()) else {
                return false;
            };
            let f = report::summarize(&[i.clone(), last.clone()], (1, 1));
            f.iter().all(|x| x.failed.is_none())
        };
        let n = count();
        // At least one sample taken wholly after the wait, then until back or the limit.
        wait_until(SETTLE_MAX, || count() > n + 1 && back());
        stop.store(true, Ordering::Relaxed);
        let _ = sampler.join();
        let (media_r, uac_status) = match r {
            Ok(x) => x,
            Err(e) => (media::MediaResult::default(), Err(e)),
        };
        (
            (load_start, load_end),
            t0.elapsed().as_secs_f64(),
            media_r,
            uac_status,
        )
    });
    let samples = samples.into_inner().unwrap_or_else(|p| p.into_inner());
    let ((load_start, load_end), media_r) = (load, media_result);
    match &uac_status {
        Ok(Some(st)) if st.success() => {}
        Ok(Some(st)) => problems.push(format!("sipp UAC exited {st}")),
        Ok(None) => problems.push(format!(
            "sipp UAC did not end within {} s",
            bound.as_secs() + 15
        )),
        Err(e) => problems.push(format!("the load did not run: {e:#}")),
    }
    drop(uas);

    // sipd's counters, then its CDRs once it stopped (the store has one writer).
    let last = samples
        .last()
        .map(|s| s.counters.clone())
        .unwrap_or_default();
    let counter = |k: &str| last.get(k).copied().unwrap_or(0);
    if let Some(st) = sipd.try_wait()? {
        problems.push(format!("sipd exited during the run ({st})"));
    }
    let st = sipd.stop()?;
    if !st.success() {
        problems.push(format!("sipd did not stop cleanly on SIGTERM ({st})"));
    }
    let cdrs = count_cdrs(&bin, &cfg)?;
    let stats = std::fs::read_to_string(&stat_file)
        .ok()
        .and_then(|s| sipp::parse_stats(&s, calls).ok());
    let calls_r = Calls {
        planned: calls,
        placed: stats.as_ref().map_or(0, |s| s.outgoing),
        successful: stats.as_ref().map_or(0, |s| s.successful),
        failed: stats.as_ref().map_or(0, |s| s.failed),
        sipd_invites: counter("sipd_calls_total"),
        sipd_answered: counter("sipd_calls_answered_total"),
        sipd_failed: counter("sipd_calls_failed_total"),
        cdrs,
    };
    if calls_r.cdrs != calls_r.sipd_answered + calls_r.sipd_failed {
        problems.push(format!(
            "{} CDRs for {} answered + {} failed calls",
            calls_r.cdrs, calls_r.sipd_answered, calls_r.sipd_failed
        ));
    }
    // Failed calls and lost packets are in the report; on a machine shared with builds a
    // few calls time out, and that is not what the soak judges.
    let _ = std::fs::copy(
        dir.join("uac_errors.log"),
        out_dir.join("soak-uac-errors.log"),
    );

    let report = Report {
        command: common::command_line("cargo xtask soak", args),
        kernel: common::kernel_release(),
        cpus,
        sipp: sipp_version,
        sipd: format!("{sipd_version} (data plane {})", o.dataplane),
        setup: format!(
            "caller (sipp, digest auth, RTP from this process) — relay namespace: sipd on CPU \
             {box_cpu}, XDP on both veths ({}) — callee (sipp); sipd's log: {}",
            o.dataplane,
            log.display()
        ),
        minutes: o.minutes,
        cps: o.cps,
        hold_s: o.hold.as_secs_f64(),
        interval_s: o.interval.as_secs_f64(),
        media_timeout_s: o.media_timeout_secs,
        load_s: (load_start.1, load_end.1),
        settled_s: settled,
        loadavg_start,
        loadavg_end: loadavg(),
        calls: calls_r,
        media: Media {
            calls: media_r.calls,
            sent: media_r.sent,
            relayed: media_r.relayed,
            lost: media_r.lost,
            corrupt: media_r.corrupt,
            kernel_relayed: counter("sbc_relay_plane_packets_total{plane=\"kernel\"}"),
            userspace_relayed: counter("sbc_relay_plane_packets_total{plane=\"userspace\"}"),
        },
        rss_rule: report::RSS_RULE,
        rss_kib_per_min: report::rss_slope(&samples, (load_start.0, load_end.0)),
        figures: report::summarize(&samples, (load_start.0, load_end.0)),
        problems,
        samples,
    };
    let md = report::markdown(&report);
    crate::common::write_report(&out_dir, "soak", &report, &md)?;
    let failures = report.failures();
    if !failures.is_empty() {
        bail!(
            "{} figure(s) or check(s) did not come back:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

type LoadResult = (
    media::MediaResult,
    anyhow::Result<Option<std::process::ExitStatus>>,
);

/// Runs the caller to its end (or `bound` + 15 s) with the media alongside.
fn run_load(
    o: &Opts,
    uac_cmd: &mut std::process::Command,
    dir: &Path,
    caller: &std::net::UdpSocket,
    callee: &std::net::UdpSocket,
    bound: Duration,
) -> anyhow::Result<LoadResult> {
    let started = Instant::now();
    let mut uac = Proc::spawn("sipp UAC", uac_cmd, &dir.join("uac_stdout.log"))?;
    let done = AtomicBool::new(false);
    let (m, status) = std::thread::scope(|s| {
        let m = s.spawn(|| {
            media::run(
                caller,
                callee,
                (&dir.join("uac_logs.log"), &dir.join("uas_logs.log")),
                // sipd is a B2BUA: the callee's leg has a Call-ID of its own.
                media::Legs::OnTheirOwn,
                o.hold,
                bound,
                &done,
            )
        });
        let status = uac.wait_until(
            started + bound + Duration::from_secs(15),
            Duration::from_millis(200),
        );
        done.store(true, Ordering::Relaxed);
        (m.join().expect("media thread"), status)
    });
    drop(uac);
    Ok((m?, status))
}

/// Polls `cond` every 250 ms until it holds or `limit` passed.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// CDRs in the store (`sipd cdrs export`: one JSON line each), sipd stopped.
fn count_cdrs(bin: &Path, cfg: &Path) -> anyhow::Result<u64> {
    let out = std::process::Command::new(bin)
        .arg("-c")
        .arg(cfg)
        .args(["cdrs", "export"])
        .stderr(Stdio::inherit())
        .output()
        .context("run sipd cdrs export")?;
    if !out.status.success() {
        bail!("`sipd cdrs export` failed ({})", out.status);
    }
    Ok(out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as u64)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn args() {
        assert!(parse(&[]).is_err(), "--minutes is required");
        let o = parse(&["--minutes".into(), "1".into()]).unwrap();
        assert_eq!(
            (o.cps, o.hold, o.calls()),
            (20, Duration::from_secs(10), 1200)
        );
        assert_eq!(o.dataplane, "xdp-native");
        let o = parse(&[
            "--minutes".into(),
            "60".into(),
            "--cps".into(),
            "5".into(),
            "--hold".into(),
            "4".into(),
        ])
        .unwrap();
        assert_eq!(o.calls(), 18_000);
        assert!(
            parse(&[
                "--minutes".into(),
                "1".into(),
                "--cps".into(),
                "200".into(),
                "--hold".into(),
                "60".into()
            ])
            .is_err()
        );
        assert!(
            parse(&[
                "--minutes".into(),
                "1".into(),
                "--dataplane".into(),
                "dpdk".into()
            ])
            .is_err()
        );
        assert!(parse(&["--bogus".into()]).is_err());
    }
}
