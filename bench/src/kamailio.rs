//! `cargo xtask bench kamailio` (or `bench kamailio` from this crate): Kamailio in front of
//! the relay, calls with RTP at a steady rate, once with `relayd` on XDP as the rtpengine
//! module's `rtpengine_sock` and once with Debian's rtpengine in userspace (`--table=-1`), in
//! one run. Results: `target/bench/kamailio.json` and `kamailio.md` in the workspace root;
//! logs next to them (`kamailio-<system>-{kamailio,relay}.log`).
//!
//! Setup, per system, on a fresh three-namespace topology (the one
//! `tests/tests/kamailio_relayd.rs` uses, through the same tests-library helpers):
//! - relay namespace ("the box", the last CPU): Kamailio 5.6 with the tested configuration
//!   `tests/fixtures/kamailio/relayd.cfg` (`rtpengine_manage` with `replace-origin
//!   replace-session-connection trust-address ICE=remove RTP/AVP`, `rtpengine_query` and the
//!   delete on BYE), and the relay: `relayd --dataplane xdp-native` on both veths, or
//!   `rtpengine --table=-1` (as `bench relay` and `bench sip` run it), both anchoring media on
//!   the relay's caller-side address, ng on 127.0.0.1 in the namespace;
//! - caller namespace (CPU 0): sipp UAC (`tests/sipp/uac.xml`), `--rate` calls per second
//!   for `--duration` seconds, each held `--hold` seconds, then BYE;
//! - callee namespace (CPU 0): sipp UAS (`tests/sipp/uas.xml`), answering at once;
//! - media (this process, CPU 0): both scenarios put one Rust RTP socket per side in their
//!   SDP and log where the relay's SDP tells them to send; once a call's two legs are known,
//!   the bench sends G.711-sized RTP both ways (50 pps per direction, the tests library's
//!   byte-checked packets) until 1.5 s before the call's BYE, and counts what arrives.
//!
//! Measured over the UAC's run (first INVITE to its exit): calls completed (sipp's
//! statistics), completed calls per second (successful / the time sipp took to start them),
//! setup time INVITE → 200 median and p99 (sipp's per-call response times, `-trace_rtt`),
//! packets sent, relayed (distinct packets that arrived intact) and lost, and CPU:
//! - relay process: all its threads (`/proc/<pid>/task/*/schedstat`, ns-exact);
//! - relay NAPI: the relay namespace's veth NAPI threads (threaded NAPI, pinned to the box's
//!   CPU, as `bench relay` does), which run the XDP program and its redirects for relayd, and
//!   the stack's receive up to the socket for rtpengine;
//! - softirq of all CPUs (`/proc/stat`, tick-sampled), as `bench relay`'s first column;
//! - XDP: `bpftool` run_time_ns / run_cnt of relayd's programs (`kernel.bpf_stats_enabled=1`
//!   for the run) and the kernel's share of the relayed packets (`relayd --status`);
//! - Kamailio's processes (utime + stime), per call.
//!
//! "relay ns/pkt" = (relay process + relay NAPI) / relayed: the relay side's whole CPU per
//! packet, user and kernel; "+softirq" = (relay process + softirq) / relayed.
//!
//! Clean-up: processes stopped by PID by their guards, relayd's pins removed with
//! `relayd --cleanup`, namespaces deleted with the topology, temporary files removed.

pub(crate) mod media;
mod report;
mod stack;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::common::{self, loadavg};
use crate::relay::cpu::BpfStats;
use report::Report;

/// The relay Kamailio's rtpengine module talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum System {
    /// relayd, XDP native on both veths.
    RelaydXdp,
    /// Debian's rtpengine, userspace forwarding (`--table=-1`).
    Rtpengine,
}

impl System {
    fn parse(s: &str) -> anyhow::Result<System> {
        Ok(match s {
            "relayd" | "relayd-xdp" | "xdp" => System::RelaydXdp,
            "rtpengine" => System::Rtpengine,
            _ => bail!("unknown system {s:?} (relayd, rtpengine)"),
        })
    }
    fn name(self) -> &'static str {
        match self {
            System::RelaydXdp => "Kamailio + relayd (XDP)",
            System::Rtpengine => "Kamailio + rtpengine (userspace)",
        }
    }
    fn slug(self) -> &'static str {
        match self {
            System::RelaydXdp => "relayd-xdp",
            System::Rtpengine => "rtpengine",
        }
    }
}

#[derive(Debug, Clone)]
struct Opts {
    systems: Vec<System>,
    /// Calls started per second.
    rate: u32,
    /// How long calls are started for.
    duration: Duration,
    /// How long each call is held after the answer.
    hold: Duration,
    relayd: Option<PathBuf>,
}

impl Opts {
    /// Calls the UAC makes.
    fn calls(&self) -> u64 {
        (self.rate as f64 * self.duration.as_secs_f64()).round() as u64
    }
    /// The whole run's bound: generation, the last call's hold, and slack for set-up.
    fn bound(&self) -> Duration {
        self.duration + self.hold + Duration::from_secs(30)
    }
}

const USAGE: &str = "cargo xtask bench kamailio [--systems relayd,rtpengine] [--rate 20] \
[--duration 60] [--hold 20] [--relayd PATH]";

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        systems: vec![System::RelaydXdp, System::Rtpengine],
        rate: 20,
        duration: Duration::from_secs(60),
        hold: Duration::from_secs(20),
        relayd: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .with_context(|| format!("{a} needs a value; {USAGE}"))
        };
        let secs = |s: &str,
                    what: &str,
                    range: std::ops::RangeInclusive<f64>|
         -> anyhow::Result<Duration> {
            let v: f64 = s.parse().with_context(|| format!("{what} {s:?}"))?;
            if !range.contains(&v) {
                bail!(
                    "{what} must be within {}..={} s",
                    range.start(),
                    range.end()
                );
            }
            Ok(Duration::from_secs_f64(v))
        };
        match a.as_str() {
            "--systems" => {
                o.systems = val()?
                    .split(',')
                    .map(|s| System::parse(s.trim()))
                    .collect::<anyhow::Result<_>>()?
            }
            "--rate" => {
                o.rate = val()?.parse().context("--rate")?;
                if !(1..=500).contains(&o.rate) {
                    bail!("--rate must be 1..=500 calls/s");
                }
            }
            "--duration" => o.duration = secs(val()?.as_str(), "--duration", 1.0..=600.0)?,
            // The media stops 1.5 s before the BYE: shorter holds carry next to none.
            "--hold" => o.hold = secs(val()?.as_str(), "--hold", 3.0..=300.0)?,
            "--relayd" => o.relayd = Some(PathBuf::from(val()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    // Our RTP is 100 pps per call in progress: keep the generator within one CPU's reach.
    let concurrent = o.rate as f64 * o.hold.as_secs_f64();
    if concurrent > 5_000.0 {
        bail!("--rate × --hold = {concurrent:.0} calls in progress; at most 5000");
    }
    Ok(o)
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    if !::tests::privileged() {
        bail!("bench kamailio needs root (network namespaces, XDP); run it as root");
    }
    let sipp_version = crate::sip::sipp::check_installed()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    common::pin_self(0);
    let box_cpu = cpus.saturating_sub(1);
    let out_dir = ::tests::bins::workspace_root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;

    let loadavg_start = loadavg();
    let _bpf_stats = o
        .systems
        .contains(&System::RelaydXdp)
        .then(BpfStats::enable)
        .transpose()?;
    let mut results = Vec::new();
    for &system in &o.systems {
        println!("== {}", system.name());
        let r = stack::bench_system(system, &o, box_cpu, &out_dir);
        if let Some(e) = &r.error {
            eprintln!("   FAILED: {e}");
        }
        results.push(r);
    }
    let report = Report {
        command: common::command_line("cargo xtask bench kamailio", args),
        kernel: common::kernel_release(),
        cpus,
        sipp: sipp_version,
        kamailio: ::tests::kamailio::version(),
        rate_cps: o.rate,
        duration_s: o.duration.as_secs_f64(),
        hold_s: o.hold.as_secs_f64(),
        calls: o.calls(),
        method: report::METHOD.into(),
        loadavg_start,
        loadavg_end: loadavg(),
        systems: results,
    };
    let md = report::markdown(&report);
    crate::common::write_report(&out_dir, "kamailio", &report, &md)?;
    if report.systems.iter().any(|s| s.error.is_some()) {
        bail!("not every system was measured (see above and kamailio.md)");
    }
    Ok(())
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn args() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.systems, vec![System::RelaydXdp, System::Rtpengine]);
        assert_eq!(o.calls(), 1200);
        let o = parse(&[
            "--systems".into(),
            "rtpengine".into(),
            "--rate".into(),
            "5".into(),
            "--duration".into(),
            "10".into(),
            "--hold".into(),
            "4".into(),
        ])
        .unwrap();
        assert_eq!(o.systems, vec![System::Rtpengine]);
        assert_eq!(o.calls(), 50);
        assert_eq!(o.bound(), Duration::from_secs(44));
        assert!(parse(&["--hold".into(), "1".into()]).is_err());
        assert!(parse(&["--rate".into(), "0".into()]).is_err());
        assert!(parse(&["--rate".into(), "500".into(), "--hold".into(), "60".into()]).is_err());
        assert!(parse(&["--systems".into(), "asterisk".into()]).is_err());
        assert!(parse(&["--bogus".into()]).is_err());
    }
}
