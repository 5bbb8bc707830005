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
//! restarted, so an overload's leftovers do not fail the next, lower rate. CPU per call = the proxy's CPU time (utime + stime from `/proc/<pid>/stat`
//! of its processes: sipd; Kamailio's processes + rtpengine) over the step / calls offered.
//!
//! sipd logs at its default level (info: nothing per call, only start, stop and trouble; to
//! a pipe the bench copies to its log file) unless RUST_LOG is set in the environment, which
//! it inherits; Kamailio logs notices and above (none per call), rtpengine warnings.
//!
//! Clean-up: every process started is stopped by PID by a guard (also on errors), the
//! temporary directory (configs, sipd's store, sipp's files) is removed.

pub(crate) mod procs;
pub(crate) mod proxies;
mod report;
pub(crate) mod sipp;
mod steps;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::common::{self, loadavg};
use report::{Report, SystemResult};

pub(crate) const UAS_PORT: u16 = 5090;
pub(crate) const UAC_PORT: u16 = 15070;
pub(crate) const SIPD_PORT: u16 = 5062;
const KAMAILIO_PORT: u16 = 5064;
const NG_PORT: u16 = 22230;
/// sipd's management API: off the default 8443 so a developer's sipd is not in the way.
pub(crate) const SIPD_MGMT_PORT: u16 = 18443;
pub(crate) const USER: &str = "bench";
pub(crate) const PASSWORD: &str = "Bench-Kq9!Vt4m-82";
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
pub(crate) const SIPP_CPU: usize = 0;

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

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    let sipp_version = sipp::check_installed()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let proxy_cpu = cpus.saturating_sub(1);
    if proxy_cpu == SIPP_CPU {
        eprintln!("bench: one CPU only: the proxy and sipp share it");
    }
    common::pin_self(SIPP_CPU);
    // Relays bind two sockets per call leg; sipp and the proxies inherit this.
    procs::raise_nofile(65_536);
    for (port, what) in [(UAS_PORT, "sipp UAS"), (UAC_PORT, "sipp UAC")] {
        procs::ensure_free(port, what)?;
    }
    let out_dir = ::tests::bins::workspace_root().join("target/bench");
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
        if let Err(e) = steps::bench_system(system, &o, proxy_cpu, &log, &mut r) {
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
        command: common::command_line("cargo xtask bench sip", args),
        kernel: common::kernel_release(),
        cpus,
        sipp: sipp_version,
        setup: report::setup_text(&o, proxy_cpu),
        method: report::method_text(&o),
        duration_s: o.duration.as_secs_f64(),
        hold_ms: o.hold_ms,
        loadavg_start,
        loadavg_end: loadavg(),
        systems: results,
    };
    let md = report::markdown(&report);
    crate::common::write_report(&out_dir, "sip", &report, &md)?;
    if report.systems.iter().any(|s| s.error.is_some()) {
        bail!("not every system was measured (see above and sip.md)");
    }
    Ok(())
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
}
