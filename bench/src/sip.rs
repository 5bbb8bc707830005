//! `cargo xtask bench sip` (or `bench sip` from this crate): calls per second sustained with
//! under 0.1% failed calls, through `sipd` and through Debian's Kamailio set up as the
//! equivalent stateful proxy, in one run, on the same loopback setup, CPUs and scenario.
//! Results: `target/bench/sip.json` and `sip.md` in the workspace root; the proxies' logs
//! next to them (`sip-<system>.log`).
//!
//! The call (sipp scenarios in `bench/sip/`): INVITE with SDP → 401 digest challenge
//! (MD5, qop=auth) → ACK → INVITE with credentials → 100 → (proxy → callee: INVITE, 100,
//! 200 with SDP, ACK) → 200 with the relay's SDP → ACK → `--hold-ms` → BYE → 200.
//!
//! Setup, all on 127.0.0.1 (UDP):
//! - callee: a sipp UAS on :5090, CPU 0, for the whole run of a system;
//! - caller: a sipp UAC on :15070, CPU 0, one process per step (`-r RATE -m RATE×duration`);
//! - sipd on :5062, CPU 1: `sipd -c sbc.toml import prov.toml`, then `sipd -c sbc.toml run`
//!   (ready when it logs `sipd ready`); one account with a SIP username/password and a rule
//!   with no restrictions, a free tariff, one connection to the callee, limits (account,
//!   connection, kernel guard) far above the offered load, media anchored by its in-process
//!   relay (`--dataplane`, default userspace, like rtpengine's here) on ports 20000-37999;
//! - Kamailio on :5064, CPU 1 (`bench/sip/kamailio.cfg`: tm, sl, rr, maxfwd, auth with
//!   `pv_www_authenticate` against a plain password, record_route, t_relay to the callee,
//!   `rtpengine_offer/answer/delete`), with rtpengine (`--table=-1`, userspace forwarding,
//!   ports 40000-57999, ng on 127.0.0.1:22230) also on CPU 1: sipd anchors media in-process,
//!   so its relay's cost is in its number too.
//!
//! Method, per system: rates go up from `--start` by doubling until a step fails or `--max`
//! is reached, then bisect between the highest pass and the lowest failure (`--bisect`
//! steps, stopping early when they are within 5%). A step offers `rate × --duration` calls.
//! It passes when failed calls (sipp's FailedCall, plus calls sipp never finished) are under
//! 0.1% of them and sipp started them all at ≥ 95% of the offered rate (else the caller,
//! not the proxy, was the limit and the step fails as "generator"). Between steps the proxy
//! gets to go idle; after a failed step the proxy (with rtpengine) and the callee are
//! restarted, so an overload's leftovers do not fail the next, lower rate. CPU per call = the proxy's CPU time (utime + stime from /proc/<pid>/stat
//! of its processes: sipd; Kamailio's processes + rtpengine) over the step / calls offered.
//!
//! sipd logs at its default level (info, two lines per call, to a pipe the bench copies to
//! its log file) unless RUST_LOG is set in the environment, which it inherits; Kamailio logs
//! notices and above (none per call), rtpengine warnings.
//!
//! Clean-up: every process started is stopped by PID by a guard (also on errors), the
//! temporary directory (configs, sipd's store, sipp's files) is removed.

mod procs;
mod sipp;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use procs::{Proc, TempDir};
use relay_user::ng::client::NgClient;

const UAS_PORT: u16 = 5090;
const UAC_PORT: u16 = 15070;
const SIPD_PORT: u16 = 5062;
const KAMAILIO_PORT: u16 = 5064;
const NG_PORT: u16 = 22230;
/// sipd's management API: off the default 8443 so a developer's sipd is not in the way.
const SIPD_MGMT_PORT: u16 = 18443;
const USER: &str = "bench";
const PASSWORD: &str = "bench-secret-1";
const REALM: &str = "sbc";
/// sipd's relay ports and rtpengine's: distinct ranges, 2 ports (RTP, RTCP) per leg, so 4
/// per call: 18000 ports hold 4500 calls at once (rate × (hold + setup)). Both relays bind
/// a socket per port in userspace, so a range must stay under the open-file limit (20000
/// here, and the bench cannot raise the hard limit without CAP_SYS_RESOURCE).
const SIPD_MEDIA: (u16, u16) = (20_000, 37_998);
const RTPENGINE_MEDIA: (u16, u16) = (40_000, 57_999);
/// A step fails at or above this share of failed calls.
const MAX_FAILED: f64 = 0.001;
/// A step fails if sipp started its calls slower than this share of the offered rate.
const MIN_GENERATED: f64 = 0.95;
/// The callee, the caller and this process; the proxy under test gets `PROXY_CPU`.
const SIPP_CPU: usize = 0;

const KAMAILIO_CFG: &str = include_str!("../sip/kamailio.cfg");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum System {
    Sipd,
    Kamailio,
}

impl System {
    fn parse(s: &str) -> anyhow::Result<System> {
        Ok(match s {
            "sipd" => System::Sipd,
            "kamailio" => System::Kamailio,
            _ => bail!("unknown system {s:?} (sipd, kamailio)"),
        })
    }
    fn name(self) -> &'static str {
        match self {
            System::Sipd => "sipd",
            System::Kamailio => "Kamailio + rtpengine",
        }
    }
    fn slug(self) -> &'static str {
        match self {
            System::Sipd => "sipd",
            System::Kamailio => "kamailio",
        }
    }
    fn port(self) -> u16 {
        match self {
            System::Sipd => SIPD_PORT,
            System::Kamailio => KAMAILIO_PORT,
        }
    }
}

#[derive(Debug, Clone)]
struct Opts {
    systems: Vec<System>,
    /// Fixed rates instead of the search.
    rates: Option<Vec<u32>>,
    start: u32,
    max: u32,
    bisect: u32,
    duration: Duration,
    hold_ms: u64,
    sipd: Option<PathBuf>,
    dataplane: String,
    kamailio_children: u32,
    /// Per system, the search stops starting new steps after this long.
    budget: Duration,
}

const USAGE: &str = "cargo xtask bench sip [--systems sipd,kamailio] [--start 50] [--max 6400] \
[--bisect 3] [--rates R1,R2,...] [--duration SECS] [--hold-ms 1000] [--sipd PATH] \
[--dataplane userspace|auto|xdp] [--kamailio-children 4] [--budget SECS]";

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        systems: vec![System::Sipd, System::Kamailio],
        rates: None,
        start: 50,
        max: 6400,
        bisect: 3,
        duration: Duration::from_secs(10),
        hold_ms: 1000,
        sipd: None,
        dataplane: "userspace".into(),
        kamailio_children: 4,
        budget: Duration::from_secs(240),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .with_context(|| format!("{a} needs a value; {USAGE}"))
        };
        let rate = |s: &str| -> anyhow::Result<u32> {
            let r: u32 = s.trim().parse().with_context(|| format!("rate {s:?}"))?;
            if !(1..=100_000).contains(&r) {
                bail!("rate {r} is outside 1..=100000 calls/s");
            }
            Ok(r)
        };
        match a.as_str() {
            "--systems" => {
                o.systems = val()?
                    .split(',')
                    .map(|s| System::parse(s.trim()))
                    .collect::<anyhow::Result<_>>()?
            }
            "--rates" => {
                o.rates = Some(val()?.split(',').map(rate).collect::<anyhow::Result<_>>()?)
            }
            "--start" => o.start = rate(val()?)?,
            "--max" => o.max = rate(val()?)?,
            "--bisect" => o.bisect = val()?.parse().context("--bisect")?,
            "--duration" => {
                let s: f64 = val()?.parse().context("--duration")?;
                if !(1.0..=120.0).contains(&s) {
                    bail!("--duration must be 1..=120 s");
                }
                o.duration = Duration::from_secs_f64(s);
            }
            "--hold-ms" => {
                o.hold_ms = val()?.parse().context("--hold-ms")?;
                if o.hold_ms > 60_000 {
                    bail!("--hold-ms must be at most 60000");
                }
            }
            "--sipd" => o.sipd = Some(PathBuf::from(val()?)),
            "--dataplane" => {
                let d = val()?;
                if !["userspace", "auto", "xdp"].contains(&d.as_str()) {
                    bail!("--dataplane must be userspace, auto or xdp");
                }
                o.dataplane = d.clone();
            }
            "--kamailio-children" => {
                o.kamailio_children = val()?.parse().context("--kamailio-children")?;
                if !(1..=64).contains(&o.kamailio_children) {
                    bail!("--kamailio-children must be 1..=64");
                }
            }
            "--budget" => {
                o.budget = Duration::from_secs(val()?.parse().context("--budget")?);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    if o.start > o.max {
        bail!("--start {} is above --max {}", o.start, o.max);
    }
    Ok(o)
}

/// One step: `calls` calls offered at `rate`.
#[derive(Debug, Clone, Serialize)]
struct Step {
    system: System,
    rate: u32,
    calls: u64,
    successful: u64,
    /// sipp's failed calls plus calls it never finished.
    failed: u64,
    failed_pct: f64,
    /// Calls started per second by sipp (calls / time to start the last one).
    generated_cps: Option<f64>,
    passed: bool,
    /// Why it failed (failures, generator, the proxy exiting).
    verdict: String,
    failed_by_kind: std::collections::BTreeMap<String, u64>,
    /// Most frequent failure reasons in sipp's error log.
    errors: Vec<(String, u64)>,
    retransmissions: u64,
    /// Mean authenticated-INVITE → 200 time, ms.
    setup_ms: Option<f64>,
    /// Mean BYE → 200 time, ms.
    bye_ms: Option<f64>,
    /// Wall time of the step (sipp UAC start to exit), s.
    wall_s: f64,
    /// The proxy's CPU time over the step (utime + stime of its processes, Kamailio's
    /// including rtpengine), s.
    proxy_cpu_s: f64,
    /// Part of it in rtpengine (Kamailio only).
    media_cpu_s: Option<f64>,
    /// proxy_cpu_s / calls, ms.
    cpu_ms_per_call: f64,
    /// proxy_cpu_s / wall_s: how much of its CPU the proxy used, percent.
    proxy_cpu_pct: f64,
    /// Busy share of each CPU over the step (includes everything else on the machine).
    cpu_busy_pct: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
struct SystemResult {
    system: System,
    /// Version string of the proxy (and relay).
    version: String,
    /// Highest rate that passed, if any.
    max_cps: Option<u32>,
    /// Lowest rate that failed above it, if any.
    first_failed_cps: Option<u32>,
    /// CPU per call at max_cps, ms.
    cpu_ms_per_call: Option<f64>,
    steps: Vec<Step>,
    /// Set if the system could not be measured (or stopped early); its steps so far are kept.
    error: Option<String>,
    log: String,
}

#[derive(Debug, Serialize)]
struct Report {
    /// How this run was started.
    command: String,
    kernel: String,
    cpus: usize,
    sipp: String,
    setup: String,
    method: String,
    duration_s: f64,
    hold_ms: u64,
    loadavg_start: String,
    loadavg_end: String,
    systems: Vec<SystemResult>,
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    let sipp_version = sipp::check_installed()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let proxy_cpu = cpus.saturating_sub(1);
    if proxy_cpu == SIPP_CPU {
        eprintln!("bench: one CPU only: the proxy and sipp share it");
    }
    procs::pin_self(SIPP_CPU);
    // Relays bind two sockets per call leg; sipp and the proxies inherit this.
    procs::raise_nofile(65_536);
    for (port, what) in [(UAS_PORT, "sipp UAS"), (UAC_PORT, "sipp UAC")] {
        procs::ensure_free(port, what)?;
    }
    let out_dir = crate::root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;

    let loadavg_start = loadavg();
    let mut results = Vec::new();
    for &system in &o.systems {
        println!("== {}", system.name());
        let log = out_dir.join(format!("sip-{}.log", system.slug()));
        let _ = std::fs::remove_file(&log);
        let mut r = SystemResult {
            system,
            version: String::new(),
            max_cps: None,
            first_failed_cps: None,
            cpu_ms_per_call: None,
            steps: Vec::new(),
            error: None,
            log: log.display().to_string(),
        };
        if let Err(e) = bench_system(system, &o, proxy_cpu, &log, &mut r) {
            eprintln!("   FAILED: {e:#}");
            r.error = Some(format!("{e:#}"));
        }
        let best = r.steps.iter().filter(|s| s.passed).max_by_key(|s| s.rate);
        r.max_cps = best.map(|s| s.rate);
        r.cpu_ms_per_call = best.map(|s| s.cpu_ms_per_call);
        r.first_failed_cps = r
            .steps
            .iter()
            .filter(|s| !s.passed && Some(s.rate) > r.max_cps)
            .map(|s| s.rate)
            .min();
        results.push(r);
    }

    let report = Report {
        command: std::iter::once("cargo xtask bench sip".to_string())
            .chain(args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" "),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cpus,
        sipp: sipp_version,
        setup: setup_text(&o, proxy_cpu),
        method: method_text(&o),
        duration_s: o.duration.as_secs_f64(),
        hold_ms: o.hold_ms,
        loadavg_start,
        loadavg_end: loadavg(),
        systems: results,
    };
    std::fs::write(
        out_dir.join("sip.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let md = markdown(&report);
    std::fs::write(out_dir.join("sip.md"), &md)?;
    println!("\n{md}");
    println!("wrote {} and sip.md", out_dir.join("sip.json").display());
    if report.systems.iter().any(|s| s.error.is_some()) {
        bail!("not every system was measured (see above and sip.md)");
    }
    Ok(())
}

fn setup_text(o: &Opts, proxy_cpu: usize) -> String {
    format!(
        "All on 127.0.0.1/UDP. Caller: sipp UAC :{UAC_PORT} (one process per step), callee: \
         sipp UAS :{UAS_PORT}, both on CPU {SIPP_CPU} (with this process). Proxy under test \
         on CPU {proxy_cpu}: sipd :{SIPD_PORT} (data plane {dp}, media ports {}-{}, one \
         account with username/password digest, MD5 only, no source restriction, free \
         tariff, one connection to the UAS, limits far above the load) or Kamailio :{KAMAILIO_PORT} \
         ({children} UDP workers; tm, sl, rr, maxfwd, auth pv_www_authenticate with a \
         plain password, record_route, t_relay, rtpengine_offer/answer/delete) with \
         rtpengine --table=-1 (userspace forwarding, media ports {}-{}) on the same CPU. \
         Call: INVITE, 401 (MD5, qop=auth), ACK, INVITE with credentials, 100, 200 (SDP \
         through the relay), ACK, {hold} ms hold, BYE, 200; no RTP is sent. sipd log level: \
         {log}.",
        SIPD_MEDIA.0,
        SIPD_MEDIA.1 + 1,
        RTPENGINE_MEDIA.0,
        RTPENGINE_MEDIA.1,
        dp = o.dataplane,
        children = o.kamailio_children,
        hold = o.hold_ms,
        log = std::env::var("RUST_LOG").unwrap_or_else(|_| "default (info)".into()),
    )
}

fn method_text(o: &Opts) -> String {
    let search = match &o.rates {
        Some(r) => format!("fixed rates {r:?}"),
        None => format!(
            "rates doubling from {} up to {} until a step fails, then up to {} bisection steps \
             (stopping within 5%); at most {} s of steps per system",
            o.start,
            o.max,
            o.bisect,
            o.budget.as_secs()
        ),
    };
    format!(
        "{search}. A step offers rate × {} s calls; it passes with failed calls (sipp \
         FailedCall + calls never finished) < {}% and calls started at ≥ {}% of the rate; \
         after a failed step the proxy (and rtpengine) and the callee are restarted. CPU \
         per call = proxy processes' utime+stime (/proc/<pid>/stat; Kamailio: all its \
         processes + rtpengine) over the step / calls offered.",
        o.duration.as_secs_f64(),
        MAX_FAILED * 100.0,
        MIN_GENERATED * 100.0
    )
}

/// The proxy under test with what it needs (rtpengine), each stopped when dropped.
struct Proxy {
    main: Proc,
    media: Option<Proc>,
    version: String,
}

impl Proxy {
    /// The PIDs whose CPU counts as the proxy's: (proxy tree, media relay).
    fn pids(&mut self) -> (Vec<u32>, Vec<u32>) {
        let main = self.main.tree();
        let media = self.media.as_mut().map(|m| m.tree()).unwrap_or_default();
        (main, media)
    }
    fn check_alive(&mut self) -> anyhow::Result<()> {
        self.main.check_alive()?;
        if let Some(m) = self.media.as_mut() {
            m.check_alive()?;
        }
        Ok(())
    }
}

fn bench_system(
    system: System,
    o: &Opts,
    proxy_cpu: usize,
    log: &Path,
    r: &mut SystemResult,
) -> anyhow::Result<()> {
    procs::ensure_free(system.port(), system.name())?;
    let tmp = TempDir::new(system.slug())?;
    let uac_xml = tmp.path().join("uac.xml");
    let uas_xml = tmp.path().join("uas.xml");
    std::fs::write(&uac_xml, sipp::UAC_XML)?;
    std::fs::write(&uas_xml, sipp::UAS_XML)?;

    let start = || -> anyhow::Result<(Proxy, Proc)> {
        let proxy = match system {
            System::Sipd => start_sipd(o, proxy_cpu, tmp.path(), log)?,
            System::Kamailio => start_kamailio(o, proxy_cpu, tmp.path(), log)?,
        };
        let mut uas = Proc::spawn(
            "sipp UAS",
            &mut sipp::uas_command(&uas_xml, UAS_PORT, SIPP_CPU),
            &tmp.path().join("uas.log"),
        )?;
        procs::wait_bound(UAS_PORT, &mut uas, Duration::from_secs(5))?;
        Ok((proxy, uas))
    };
    // The proxy first, so a proxy that cannot start costs no callee.
    let (mut proxy, mut uas) = start()?;
    r.version = proxy.version.clone();
    println!("   {} ready on 127.0.0.1:{}", r.version, system.port());

    let t0 = Instant::now();
    let mut done: Vec<(u32, bool)> = Vec::new();
    let mut fixed = o.rates.clone().map(|v| v.into_iter());
    let mut restart = false;
    loop {
        let next = match &mut fixed {
            Some(it) => it.next(),
            None => next_rate(&done, o.start, o.max, o.bisect),
        };
        let Some(rate) = next else { break };
        if fixed.is_none() && t0.elapsed() > o.budget {
            println!(
                "   time budget ({} s) used: stopping the search",
                o.budget.as_secs()
            );
            break;
        }
        if restart {
            // An overloaded step leaves half-done calls, relay sessions and retransmissions
            // behind; the next step starts from a fresh proxy and callee (same store).
            println!(
                "   restarting {} and the callee after the failed step",
                system.name()
            );
            drop(uas);
            drop(proxy);
            (proxy, uas) = start()?;
        }
        settle(&mut proxy);
        let step = run_step(system, o, rate, &uac_xml, tmp.path(), &mut proxy)?;
        uas.check_alive()?;
        restart = !step.passed;
        done.push((rate, step.passed));
        r.steps.push(step);
        // A proxy that died fails the system; its steps so far stay in the report.
        proxy.check_alive()?;
    }
    drop(uas);
    let (main, media) = proxy.pids();
    println!(
        "   stopping {} (pids {main:?}{})",
        system.name(),
        if media.is_empty() {
            String::new()
        } else {
            format!(", media {media:?}")
        }
    );
    Ok(())
}

/// Waits (up to 10 s) until the proxy's CPU use drops under 5% over 0.5 s: the previous
/// step's transactions and calls have ended.
fn settle(proxy: &mut Proxy) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (a, b) = proxy.pids();
        let all: Vec<u32> = a.into_iter().chain(b).collect();
        let c0 = procs::cpu_secs(&all);
        std::thread::sleep(Duration::from_millis(500));
        let c1 = procs::cpu_secs(&all);
        if c1 - c0 < 0.025 || Instant::now() >= deadline {
            return;
        }
    }
}

fn run_step(
    system: System,
    o: &Opts,
    rate: u32,
    uac_xml: &Path,
    tmp: &Path,
    proxy: &mut Proxy,
) -> anyhow::Result<Step> {
    let calls = ((rate as f64 * o.duration.as_secs_f64()).round() as u64).max(1);
    let stat_file = tmp.join(format!("uac-{rate}.csv"));
    let error_file = tmp.join(format!("uac-{rate}-errors.log"));
    // Long enough for every call to finish or fail on its own timers.
    let timeout_s = o.duration.as_secs() + o.hold_ms / 1000 + 40;
    let args = sipp::UacArgs {
        scenario: uac_xml,
        local_port: UAC_PORT,
        target: SocketAddr::from(([127, 0, 0, 1], system.port())),
        user: USER,
        password: PASSWORD,
        rate,
        calls,
        hold_ms: o.hold_ms,
        stat_file: &stat_file,
        error_file: &error_file,
        timeout_s,
        cpu: SIPP_CPU,
    };
    let uac_log = tmp.join(format!("uac-{rate}.log"));
    let (main_pids, media_pids) = proxy.pids();
    let pids: Vec<u32> = main_pids.iter().chain(&media_pids).copied().collect();
    let busy0 = procs::per_cpu_busy();
    let (cpu0, media0) = (procs::cpu_secs(&pids), procs::cpu_secs(&media_pids));
    let started = Instant::now();
    let mut uac = Proc::spawn("sipp UAC", &mut sipp::uac_command(&args), &uac_log)?;
    let status = loop {
        if let Some(s) = uac.try_wait()? {
            break Some(s);
        }
        if started.elapsed() > Duration::from_secs(timeout_s + 15) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let wall = started.elapsed().as_secs_f64();
    let (cpu1, media1) = (procs::cpu_secs(&pids), procs::cpu_secs(&media_pids));
    let busy1 = procs::per_cpu_busy();
    drop(uac);

    let stats = std::fs::read_to_string(&stat_file)
        .ok()
        .and_then(|s| sipp::parse_stats(&s, calls).ok());
    let errors = std::fs::read_to_string(&error_file)
        .map(|s| sipp::summarize_errors(&s, 6))
        .unwrap_or_default();
    let proxy_cpu_s = cpu1 - cpu0;
    let cpu_busy_pct: Vec<f64> = busy0
        .iter()
        .zip(&busy1)
        .map(|(a, b)| 100.0 * (b - a) / wall)
        .collect();
    let (successful, failed, generated_cps, verdict, passed, st) = match (&stats, status) {
        (None, _) => {
            let why = format!(
                "sipp UAC left no statistics (exit {status:?}); its output:\n{}",
                procs::tail(&uac_log, 10)
            );
            (0, calls, None, why, false, sipp::UacStats::default())
        }
        (Some(s), status) => {
            let failed = calls.saturating_sub(s.successful);
            let gen_cps = s.generation_s.map(|g| calls as f64 / g.max(1e-3));
            let pct = failed as f64 / calls as f64;
            let verdict = if status.is_none() {
                format!("sipp UAC did not end within {} s", timeout_s + 15)
            } else if pct >= MAX_FAILED {
                format!("{failed} failed calls ({:.2}%)", pct * 100.0)
            } else if gen_cps.is_none_or(|g| g < MIN_GENERATED * rate as f64) {
                format!(
                    "generator: sipp started the calls at {} cps only",
                    gen_cps.map_or("?".into(), |g| format!("{g:.0}"))
                )
            } else {
                "pass".into()
            };
            let passed = verdict == "pass";
            (s.successful, failed, gen_cps, verdict, passed, s.clone())
        }
    };
    let step = Step {
        system,
        rate,
        calls,
        successful,
        failed,
        failed_pct: 100.0 * failed as f64 / calls as f64,
        generated_cps,
        passed,
        verdict,
        failed_by_kind: st.failed_by_kind,
        errors,
        retransmissions: st.retransmissions,
        setup_ms: st.setup_ms,
        bye_ms: st.bye_ms,
        wall_s: wall,
        proxy_cpu_s,
        media_cpu_s: (!media_pids.is_empty()).then_some(media1 - media0),
        cpu_ms_per_call: proxy_cpu_s * 1000.0 / calls as f64,
        proxy_cpu_pct: 100.0 * proxy_cpu_s / wall,
        cpu_busy_pct,
    };
    println!(
        "   {:>5} cps × {:>3.0} s: {}/{} ok, {} failed ({:.3}%), generated {} cps, setup {} ms, \
         retrans {}, proxy CPU {:.2} s = {:.3} ms/call{}, CPUs busy {:?}% → {}",
        rate,
        o.duration.as_secs_f64(),
        step.successful,
        calls,
        step.failed,
        step.failed_pct,
        opt(step.generated_cps, 0),
        opt(step.setup_ms, 1),
        step.retransmissions,
        step.proxy_cpu_s,
        step.cpu_ms_per_call,
        step.media_cpu_s
            .map_or(String::new(), |m| format!(" (of it rtpengine {m:.2} s)")),
        step.cpu_busy_pct
            .iter()
            .map(|b| b.round() as i64)
            .collect::<Vec<_>>(),
        if step.passed { "pass" } else { "FAIL" },
    );
    if !step.passed {
        println!("         {}", step.verdict);
        for (e, n) in &step.errors {
            println!("         {n} × {e}");
        }
    }
    Ok(step)
}

/// The next rate of the search given the steps so far (rate, passed): doubling from `start`
/// while steps pass (capped at `max`), then bisecting between the highest pass and the lowest
/// failure above it, at most `bisect` times and only while they are more than 5% apart.
/// With no pass at all it halves down to 10 cps.
fn next_rate(done: &[(u32, bool)], start: u32, max: u32, bisect: u32) -> Option<u32> {
    let Some(&(last, _)) = done.last() else {
        return Some(start);
    };
    let best = done.iter().filter(|d| d.1).map(|d| d.0).max();
    let fail = done
        .iter()
        .filter(|d| !d.1 && best.is_none_or(|b| d.0 > b))
        .map(|d| d.0)
        .min();
    match (best, fail) {
        (Some(b), None) => {
            let n = b.saturating_mul(2).min(max);
            (n > b && last == b).then_some(n)
        }
        (None, Some(f)) => {
            let n = f / 2;
            (n >= 10).then_some(n)
        }
        (Some(b), Some(f)) => {
            // Steps after the first failure (halving counts as one).
            let first_fail = done.iter().position(|d| !d.1).unwrap_or(0);
            let bisected = (done.len() - 1 - first_fail) as u32;
            if bisected >= bisect || (f - b) as f64 <= 0.05 * b as f64 {
                return None;
            }
            let mid = b + (f - b) / 2;
            // Round to a tidy number (10s, or 100s above 2000).
            let unit = if mid >= 2000 { 100 } else { 10 };
            let mid = (mid / unit * unit).max(b + 1);
            (mid < f).then_some(mid)
        }
        (None, None) => None,
    }
}

fn start_kamailio(o: &Opts, cpu: usize, tmp: &Path, log: &Path) -> anyhow::Result<Proxy> {
    let rtpengine = Path::new("/usr/bin/rtpengine");
    if !rtpengine.exists() {
        bail!("/usr/bin/rtpengine not installed (apt install rtpengine-daemon)");
    }
    procs::ensure_free(NG_PORT, "rtpengine ng")?;
    let version = |cmd: &str, arg: &str, prefix: &str| -> String {
        Command::new(cmd)
            .arg(arg)
            .output()
            .ok()
            .and_then(|o| {
                let s = String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr);
                s.lines()
                    .find(|l| l.trim_start().starts_with(prefix))
                    .map(|l| l.trim().to_string())
            })
            .unwrap_or_else(|| format!("{cmd} (version unknown)"))
    };
    let kv = version("kamailio", "-v", "version:").replace("version: ", "");
    let rv = version("rtpengine", "--version", "Version:").replace("Version: ", "rtpengine ");

    let media_log = log.with_file_name("sip-kamailio-rtpengine.log");
    let _ = std::fs::remove_file(&media_log);
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &cpu.to_string()]).arg(rtpengine).args([
        "--config-file=none",
        "--table=-1",
        "--foreground",
        "--log-stderr",
        "--log-level=4",
        "--delete-delay=0",
        &format!("--port-min={}", RTPENGINE_MEDIA.0),
        &format!("--port-max={}", RTPENGINE_MEDIA.1),
        "--interface=127.0.0.1",
        &format!("--listen-ng=127.0.0.1:{NG_PORT}"),
    ]);
    let mut media = Proc::spawn("rtpengine", &mut cmd, &media_log)?;
    let ng = NgClient::new(SocketAddr::from(([127, 0, 0, 1], NG_PORT)))?;
    if let Err(e) = ng.wait_ready(Duration::from_secs(10)) {
        media.check_alive()?;
        bail!(
            "rtpengine does not answer ng ping: {e}; log {}",
            media_log.display()
        );
    }

    let cfg = tmp.join("kamailio.cfg");
    std::fs::write(&cfg, kamailio_cfg(o.kamailio_children))?;
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &cpu.to_string(), "kamailio", "-DD", "-E"])
        // Shared memory for transactions (kept 5 s after they end) at thousands of calls/s.
        .args(["-m", "1024", "-M", "16", "-f"])
        .arg(&cfg);
    let mut main = Proc::spawn("kamailio", &mut cmd, log)?;
    procs::wait_sip(
        SocketAddr::from(([127, 0, 0, 1], KAMAILIO_PORT)),
        &mut main,
        Duration::from_secs(15),
    )?;
    Ok(Proxy {
        main,
        media: Some(media),
        version: format!("{kv}; {rv}"),
    })
}

/// The Kamailio configuration with the bench's addresses and credentials filled in.
fn kamailio_cfg(children: u32) -> String {
    // The nonce secret only needs to be fixed for the run.
    let secret = format!("sbcbench{:016x}", std::process::id() as u64 * 0x9e37_79b9);
    KAMAILIO_CFG
        .replace("@@CHILDREN@@", &children.to_string())
        .replace("@@LISTEN@@", &format!("127.0.0.1:{KAMAILIO_PORT}"))
        .replace("@@SECRET@@", &secret)
        .replace("@@NG@@", &format!("127.0.0.1:{NG_PORT}"))
        .replace("@@USER@@", USER)
        .replace("@@PASSWORD@@", PASSWORD)
        .replace("@@REALM@@", REALM)
        .replace("@@UAS@@", &format!("127.0.0.1:{UAS_PORT}"))
}

fn sipd_path(o: &Opts) -> anyhow::Result<PathBuf> {
    if let Some(p) = &o.sipd {
        return Ok(p.clone());
    }
    if std::env::var_os("SBC_BENCH_SIPD_BUILD_FAILED").is_some() {
        bail!("sipd did not build (see cargo's errors above); not running a stale binary");
    }
    crate::built_binary("sipd", "-p sipd", "--sipd")
}

/// sbc.toml for the bench: SIP on 127.0.0.1:5062 (UDP), MD5 digest only (what sipp 3.6
/// computes, and Kamailio's), media on its own port range, guard limits far above the load.
fn sipd_config(o: &Opts, data_dir: &Path) -> String {
    format!(
        r#"# Written by `cargo xtask bench sip`.
data_dir = "{data}"

[sip]
udp = ["127.0.0.1:{SIPD_PORT}"]
tcp = []

[auth]
realm = "{REALM}"
algorithms = ["MD5"]

[media]
address = "127.0.0.1"
port_min = {pmin}
port_max = {pmax}
timeout_secs = 300

[dataplane]
mode = "{dp}"
instance = "sbcbench"

[management]
listen = "127.0.0.1:{SIPD_MGMT_PORT}"
pepper_file = "{pepper}"

# The kernel/IDS guard would (rightly) throttle one source sending thousands of INVITEs a
# second; the bench measures the call path, not the guard.
[guard]
sip_packets_per_sec = 10000000
sip_packet_burst = 20000000
invites_per_sec = 1000000
invite_burst = 2000000
max_sessions_per_source = 10000000
auth_failures_before_ban = 10000000
"#,
        data = data_dir.display(),
        // Outside the data directory, as sipd requires; the temp dir goes with the bench.
        pepper = data_dir
            .parent()
            .unwrap_or(data_dir)
            .join("sipd.pepper")
            .display(),
        pmin = SIPD_MEDIA.0,
        pmax = SIPD_MEDIA.1 + 1,
        dp = o.dataplane,
    )
}

/// prov.toml: a free tariff, the callee as the only connection, one account with a SIP
/// username/password and a rule without restrictions; limits far above the load.
fn sipd_provisioning() -> String {
    format!(
        r#"# Written by `cargo xtask bench sip`.
[[tariff]]
name = "bench-free"
rate_per_minute = "0"
expected_call_secs = 60

[[connection]]
name = "bench-uas"
destination = "127.0.0.1:{UAS_PORT}"
transport = "udp"
max_channels = 1000000
cps_limit = 1000000
priority = 10

[[account]]
name = "bench"
tariff = "bench-free"
balance = "1000000"
cps_limit = 1000000
max_sessions = 1000000
max_call_secs = 3600
sip = {{ username = "{USER}", password = "{PASSWORD}" }}

[[account.rule]]
name = "anywhere"
"#
    )
}

fn start_sipd(o: &Opts, cpu: usize, tmp: &Path, log: &Path) -> anyhow::Result<Proxy> {
    let bin = sipd_path(o)?;
    let cfg = tmp.join("sbc.toml");
    let prov = tmp.join("prov.toml");
    std::fs::write(&cfg, sipd_config(o, &tmp.join("data")))?;
    std::fs::write(&prov, sipd_provisioning())?;
    let out = Command::new(&bin)
        .arg("-c")
        .arg(&cfg)
        .arg("import")
        .arg(&prov)
        .output()
        .with_context(|| format!("run {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "`sipd -c sbc.toml import prov.toml` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &cpu.to_string()])
        .arg(&bin)
        .arg("-c")
        .arg(&cfg)
        .arg("run");
    let main = Proc::spawn_until("sipd", &mut cmd, log, "sipd ready", Duration::from_secs(30))
        .map_err(|e| {
            let s = format!("{e:#}");
            if s.contains("unrecognized subcommand") {
                anyhow::anyhow!("{} has no `run` command yet: {s}", bin.display())
            } else {
                e
            }
        })?;
    let version = Command::new(&bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "sipd".into());
    Ok(Proxy {
        main,
        media: None,
        version: format!("{version} (data plane {})", o.dataplane),
    })
}

fn markdown(r: &Report) -> String {
    let mut s = format!(
        "SIP benchmark: calls per second with < {}% failed calls, INVITE with digest auth \
         (401 challenge, then authenticated INVITE) / 100 / 200 / ACK / BYE / 200, media \
         anchored. Kernel {}, {} CPUs, {}. Load average at start {}, at end {} (other work \
         on the machine counts against both).\n\n\
         Command: `{}`\n\nSetup: {}\n\nMethod: {}\n\n\
         | system | max cps (< 0.1% failed) | first failing rate | CPU ms/call at max |\n\
         |---|---:|---:|---:|\n",
        MAX_FAILED * 100.0,
        r.kernel,
        r.cpus,
        r.sipp,
        r.loadavg_start,
        r.loadavg_end,
        r.command,
        r.setup,
        r.method,
    );
    for sys in &r.systems {
        s.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            sys.system.name(),
            sys.max_cps.map_or("none".into(), |c| c.to_string()),
            sys.first_failed_cps.map_or("-".into(), |c| c.to_string()),
            opt(sys.cpu_ms_per_call, 3),
        ));
    }
    s.push_str(
        "\nSteps:\n\n\
         | system | rate | calls | ok | failed | failed % | generated cps | setup ms | \
         retrans | proxy CPU s | of it rtpengine s | CPU ms/call | proxy CPU % | CPU0/CPU1 busy % \
         | result |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n",
    );
    for sys in &r.systems {
        for p in &sys.steps {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.3} | {} | {} | {} | {:.2} | {} | {:.3} | {:.0} | {} | {} |\n",
                sys.system.name(),
                p.rate,
                p.calls,
                p.successful,
                p.failed,
                p.failed_pct,
                opt(p.generated_cps, 0),
                opt(p.setup_ms, 1),
                p.retransmissions,
                p.proxy_cpu_s,
                opt(p.media_cpu_s, 2),
                p.cpu_ms_per_call,
                p.proxy_cpu_pct,
                p.cpu_busy_pct
                    .iter()
                    .map(|b| format!("{b:.0}"))
                    .collect::<Vec<_>>()
                    .join("/"),
                if p.passed {
                    "pass".to_string()
                } else {
                    format!("FAIL: {}", p.verdict.replace('|', "/"))
                },
            ));
        }
    }
    for sys in &r.systems {
        let failing: Vec<&Step> = sys.steps.iter().filter(|p| !p.errors.is_empty()).collect();
        if !failing.is_empty() {
            s.push_str(&format!(
                "\n{} failure reasons (sipp):\n\n",
                sys.system.name()
            ));
            for p in failing {
                for (e, n) in &p.errors {
                    s.push_str(&format!(
                        "- {} cps: {n} × {}\n",
                        p.rate,
                        e.replace('|', "/")
                    ));
                }
            }
        }
        if let Some(e) = &sys.error {
            s.push_str(&format!(
                "\nFAILED {}: {}\n",
                sys.system.name(),
                e.replace('\n', "\n    ")
            ));
        }
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

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn args() {
        let o = parse(&[
            "--systems".into(),
            "kamailio".into(),
            "--start".into(),
            "100".into(),
            "--hold-ms".into(),
            "0".into(),
        ])
        .unwrap();
        assert_eq!(o.systems, vec![System::Kamailio]);
        assert_eq!(o.start, 100);
        assert_eq!(o.hold_ms, 0);
        assert!(parse(&["--rates".into(), "0".into()]).is_err());
        assert!(parse(&["--start".into(), "500".into(), "--max".into(), "100".into()]).is_err());
        assert!(parse(&["--systems".into(), "asterisk".into()]).is_err());
        assert!(parse(&["--bogus".into()]).is_err());
    }

    /// Runs the search against a proxy that handles up to `cap` cps.
    fn search(cap: u32, start: u32, max: u32, bisect: u32) -> Vec<(u32, bool)> {
        let mut done = Vec::new();
        while let Some(r) = next_rate(&done, start, max, bisect) {
            assert!(done.len() < 30, "search does not end: {done:?}");
            done.push((r, r <= cap));
        }
        done
    }

    #[test]
    fn search_doubles_then_bisects() {
        let d = search(1000, 50, 6400, 3);
        let rates: Vec<u32> = d.iter().map(|x| x.0).collect();
        // 800 passes, 1600 fails; then 1200 (fail), 1000 (pass), 1100 (fail).
        assert_eq!(rates, [50, 100, 200, 400, 800, 1600, 1200, 1000, 1100]);
    }

    #[test]
    fn search_stops_at_max_and_when_close() {
        let d = search(100_000, 50, 1000, 3);
        assert_eq!(d.last(), Some(&(1000, true)));
        assert_eq!(d.iter().filter(|x| x.0 == 1000).count(), 1);
        // Within 5%: no more bisection.
        assert_eq!(next_rate(&[(1000, true), (1040, false)], 50, 6400, 3), None);
        // Nothing passes: halves down to 10 cps.
        let d = search(0, 50, 6400, 3);
        assert_eq!(d.iter().map(|x| x.0).collect::<Vec<_>>(), [50, 25, 12]);
    }

    #[test]
    fn kamailio_cfg_is_filled_in() {
        let c = kamailio_cfg(4);
        assert!(!c.contains("@@"), "{c}");
        assert!(c.contains("listen=udp:127.0.0.1:5064"));
        assert!(c.contains("rtpengine_offer"));
        assert!(c.contains(&format!("pv_www_authenticate(\"{REALM}\", \"{PASSWORD}\"")));
    }

    #[test]
    fn sipd_files_mention_the_contract() {
        let c = sipd_config(&parse(&[]).unwrap(), Path::new("/tmp/x/data"));
        assert!(c.contains("udp = [\"127.0.0.1:5062\"]"));
        assert!(c.contains("tcp = []"));
        assert!(c.contains("mode = \"userspace\""));
        let p = sipd_provisioning();
        assert!(p.contains("destination = \"127.0.0.1:5090\""));
        assert!(p.contains(&format!("password = \"{PASSWORD}\"")));
    }

    #[test]
    fn markdown_has_both_tables() {
        let step = Step {
            system: System::Kamailio,
            rate: 400,
            calls: 4000,
            successful: 4000,
            failed: 0,
            failed_pct: 0.0,
            generated_cps: Some(399.0),
            passed: true,
            verdict: "pass".into(),
            failed_by_kind: Default::default(),
            errors: vec![],
            retransmissions: 0,
            setup_ms: Some(1.5),
            bye_ms: Some(0.5),
            wall_s: 11.0,
            proxy_cpu_s: 2.0,
            media_cpu_s: Some(0.5),
            cpu_ms_per_call: 0.5,
            proxy_cpu_pct: 18.0,
            cpu_busy_pct: vec![50.0, 30.0],
        };
        let r = Report {
            command: "cargo xtask bench sip".into(),
            kernel: "6.1".into(),
            cpus: 2,
            sipp: "SIPp v3.6.1".into(),
            setup: "setup".into(),
            method: "method".into(),
            duration_s: 10.0,
            hold_ms: 1000,
            loadavg_start: "0.1 0.1 0.1".into(),
            loadavg_end: "0.2 0.1 0.1".into(),
            systems: vec![
                SystemResult {
                    system: System::Kamailio,
                    version: "kamailio".into(),
                    max_cps: Some(400),
                    first_failed_cps: Some(800),
                    cpu_ms_per_call: Some(0.5),
                    steps: vec![step],
                    error: None,
                    log: String::new(),
                },
                SystemResult {
                    system: System::Sipd,
                    version: String::new(),
                    max_cps: None,
                    first_failed_cps: None,
                    cpu_ms_per_call: None,
                    steps: vec![],
                    error: Some("sipd has no `run` command yet".into()),
                    log: String::new(),
                },
            ],
        };
        let md = markdown(&r);
        assert!(
            md.contains("| Kamailio + rtpengine | 400 | 800 | 0.500 |"),
            "{md}"
        );
        assert!(
            md.contains("| Kamailio + rtpengine | 400 | 4000 | 4000 | 0 | 0.000 | 399 | 1.5 | 0 | 2.00 | 0.50 | 0.500 | 18 | 50/30 | pass |"),
            "{md}"
        );
        assert!(
            md.contains("FAILED sipd: sipd has no `run` command yet"),
            "{md}"
        );
    }
}
