//! `cargo xtask bench flood` (or `bench flood` from this crate): how many of a carrier's calls
//! still complete, and how fast, while an attacker floods the box, for sipd and for what
//! carriers put in front of a SIP proxy today. Results: `target/bench/flood.json` and
//! `flood.md`; each system's log beside them (`flood-<system>.log`).
//!
//! Setup, per system, on a fresh three-namespace topology (caller — relay — callee, GRO on,
//! forwarding, the relay's veths on threaded NAPI pinned to the box's CPU, the last one):
//! - relay namespace ("the box"): the system under test on the box's CPU, SIP on
//!   the relay's caller-side address :5060 (UDP, and TCP for the SYN flood), media anchored on
//!   ports 30000-45999 of that address, every call sent to the callee:
//!   - `sipd-xdp`: sipd, data plane XDP native on both veths (`sbc_xdp_pass` on their peers);
//!   - `sipd-userspace`: sipd, userspace data plane (its guard in userspace);
//!   - `sipd-guard-off`: sipd, userspace, every per-source limit far above the flood (the
//!     baseline: no defence but sipd's own parsing and authentication);
//!   - `nftables`: `sipd-guard-off` behind an nftables table with per-source `meter`s on the
//!     SIP port (UDP packets and TCP SYNs over the limits below are dropped and counted);
//!   - `kamailio`: Debian's Kamailio 5.6 (`bench/flood/kamailio.cfg`: `bench sip`'s proxy
//!     with digest auth, plus `pike` and an `htable` ban, the usual Kamailio flood defence,
//!     scanner User-Agents banned too) with rtpengine (`--table=-1`) for media.
//!
//!   The per-source limits every defence gets are sized for the carrier (see
//!   `systems::Limits`): 40 packets/s and 8 INVITEs/s per call/s of the carrier (at least
//!   200 and 20, sipd's defaults), 50 SYNs/s; bans last an hour.
//! - caller namespace: the carrier, a sipp UAC (`tests/sipp/uac.xml`: INVITE → 401 → INVITE
//!   with digest credentials → 200 → ACK, held `--hold` s, BYE) at `--cps` for `--duration`
//!   s, with G.711 RTP both ways on each answered call (this process, as `bench soak`); and
//!   the attacker, this process writing raw frames on the same veth (the carrier and the
//!   attacker share the box's public link, as on the Internet) from spoofed sources in
//!   198.18.0.0/15 (RFC 2544's benchmark range), a /18 per kind, fresh sources each step.
//!   The relay namespace routes 198.18.0.0/15 back to the caller namespace, which drops what
//!   the box answers (its forwarding is off): replies cost the box what they would cost it.
//! - callee namespace: the vendor, a sipp UAS (`tests/sipp/uas.xml`) answering at once.
//!
//! The flood (`flood/generator.rs`, `flood/packet.rs`): `AF_PACKET` + `sendmmsg`, up to 64
//! frames a call, qdisc bypassed, paced per batch to the rate (`max`: unpaced: what this machine can generate,
//! measured and reported as "sent pps"), for the carrier's whole `--duration`, bounded by
//! count and clock. Kinds: `invite-few` (INVITEs from 4 sources, far over the per-source
//! limits), `invite-many` (4096 sources, each under them), `options`, `register` and
//! `malformed` (256 sources), `banned` (INVITEs from 16 sources that first sent one
//! OPTIONS with a scanner's User-Agent, which both sipd and the Kamailio configuration ban
//! on sight; nftables has no such rule), `syn` (TCP SYNs to the SIP port, 256 sources), `rtp`
//! (UDP to random ports of the relay range, 256 sources).
//!
//! Measured per system × kind × rate, over the carrier's run (first INVITE to sipp's exit):
//! calls completed / calls offered, setup time (INVITE with credentials → 200, sipp's
//! `-trace_rtt` per call) median and 99th percentile, the box's CPU (its processes, all
//! threads, from `/proc/<pid>/task/*/schedstat`; the relay namespace's NAPI threads (the
//! kernel's receive path, XDP included); softirq ticks of the box's CPU, `/proc/stat`), each
//! as a share of one CPU, and the drop counters the system keeps (sipd: `/metrics`'
//! `sbc_dataplane_packets_total` by reason, refusals, malformed; nftables: the meters'
//! counters). Each system also gets one step without flood (rate `-`) first.
//!
//! Defaults are a reduced matrix that fits a coffee break: `--cps 20 --hold 5 --duration 10
//! --rates 1000,10000,max`, all systems and kinds (about 40 minutes). The full one the issue
//! asks for is `--cps 50 --hold 60 --duration 60` (about 4 hours).
//!
//! Clean-up: processes stopped by PID by their guards, sipd's pins removed with
//! `sipd cleanup`, namespaces deleted with the topology, temporary files removed.

mod generator;
mod packet;
mod report;
mod step;
mod systems;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::common::{self, loadavg};

/// The systems, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum System {
    SipdXdp,
    SipdUserspace,
    SipdGuardOff,
    Nftables,
    Kamailio,
}

impl System {
    const ALL: [System; 5] = [
        System::SipdXdp,
        System::SipdUserspace,
        System::SipdGuardOff,
        System::Nftables,
        System::Kamailio,
    ];
    fn slug(self) -> &'static str {
        match self {
            System::SipdXdp => "sipd-xdp",
            System::SipdUserspace => "sipd-userspace",
            System::SipdGuardOff => "sipd-guard-off",
            System::Nftables => "nftables",
            System::Kamailio => "kamailio",
        }
    }
    fn name(self) -> &'static str {
        match self {
            System::SipdXdp => "sipd, XDP",
            System::SipdUserspace => "sipd, userspace",
            System::SipdGuardOff => "sipd, guard off",
            System::Nftables => "nftables meter + sipd (guard off)",
            System::Kamailio => "Kamailio pike + htable + rtpengine",
        }
    }
    fn parse(s: &str) -> anyhow::Result<System> {
        System::ALL
            .into_iter()
            .find(|x| x.slug() == s)
            .with_context(|| format!("unknown system {s:?}; known: {}", slugs(&System::ALL)))
    }
}

/// What the attacker sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Kind {
    InviteFew,
    InviteMany,
    Options,
    Register,
    Malformed,
    Banned,
    Syn,
    Rtp,
}

impl Kind {
    const ALL: [Kind; 8] = [
        Kind::InviteFew,
        Kind::InviteMany,
        Kind::Options,
        Kind::Register,
        Kind::Malformed,
        Kind::Banned,
        Kind::Syn,
        Kind::Rtp,
    ];
    fn slug(self) -> &'static str {
        match self {
            Kind::InviteFew => "invite-few",
            Kind::InviteMany => "invite-many",
            Kind::Options => "options",
            Kind::Register => "register",
            Kind::Malformed => "malformed",
            Kind::Banned => "banned",
            Kind::Syn => "syn",
            Kind::Rtp => "rtp",
        }
    }
    fn parse(s: &str) -> anyhow::Result<Kind> {
        Kind::ALL
            .into_iter()
            .find(|x| x.slug() == s)
            .with_context(|| format!("unknown kind {s:?}; known: {}", slugs(&Kind::ALL)))
    }
    /// Sources it floods from.
    fn sources(self) -> usize {
        match self {
            Kind::InviteFew => 4,
            Kind::InviteMany => 4096,
            Kind::Banned => 16,
            _ => 256,
        }
    }
    fn index(self) -> u32 {
        Kind::ALL.iter().position(|k| *k == self).unwrap_or(0) as u32
    }
}

trait Slug: Copy {
    fn s(self) -> &'static str;
}
impl Slug for System {
    fn s(self) -> &'static str {
        self.slug()
    }
}
impl Slug for Kind {
    fn s(self) -> &'static str {
        self.slug()
    }
}
fn slugs<T: Slug>(all: &[T]) -> String {
    all.iter().map(|x| x.s()).collect::<Vec<_>>().join(", ")
}

#[derive(Debug, Clone)]
pub(crate) struct Opts {
    systems: Vec<System>,
    kinds: Vec<Kind>,
    /// Frames per second; 0: as fast as the generator goes (`max`).
    rates: Vec<u32>,
    duration: Duration,
    cps: u32,
    hold: Duration,
    sipd: Option<PathBuf>,
}

const USAGE: &str = "cargo xtask bench flood [--systems sipd-xdp,sipd-userspace,sipd-guard-off,\
nftables,kamailio] [--kinds invite-few,invite-many,options,register,malformed,banned,syn,rtp] \
[--rates 1000,10000,max] [--duration 10] [--cps 20] [--hold 5] [--sipd PATH]";

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        systems: System::ALL.to_vec(),
        kinds: Kind::ALL.to_vec(),
        rates: vec![1000, 10_000, 0],
        duration: Duration::from_secs(10),
        cps: 20,
        hold: Duration::from_secs(5),
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
            "--systems" => {
                o.systems = val()?
                    .split(',')
                    .map(|s| System::parse(s.trim()))
                    .collect::<anyhow::Result<_>>()?
            }
            "--kinds" => {
                o.kinds = val()?
                    .split(',')
                    .map(|s| Kind::parse(s.trim()))
                    .collect::<anyhow::Result<_>>()?
            }
            "--rates" => {
                o.rates = val()?
                    .split(',')
                    .map(|s| match s.trim() {
                        "max" => Ok(0),
                        r => Ok(num(r, "rate", 1.0..=10_000_000.0)? as u32),
                    })
                    .collect::<anyhow::Result<_>>()?
            }
            "--duration" => {
                o.duration = Duration::from_secs_f64(num(val()?, "--duration", 3.0..=600.0)?)
            }
            "--cps" => o.cps = num(val()?, "--cps", 1.0..=200.0)? as u32,
            // Media stops 1.5 s before the BYE: shorter holds carry none.
            "--hold" => o.hold = Duration::from_secs_f64(num(val()?, "--hold", 3.0..=300.0)?),
            "--sipd" => o.sipd = Some(PathBuf::from(val()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    if o.systems.is_empty() || o.kinds.is_empty() || o.rates.is_empty() {
        bail!("--systems, --kinds and --rates need at least one entry");
    }
    if o.cps as f64 * o.hold.as_secs_f64() > 3500.0 {
        bail!("--cps × --hold is over 3500 calls in progress (the relay range holds 4000)");
    }
    Ok(o)
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    if !::tests::privileged() {
        bail!("flood needs root (network namespaces, raw sockets, XDP); run it as root");
    }
    let sipp_version = crate::sip::sipp::check_installed()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let box_cpu = cpus.saturating_sub(1);
    common::pin_self(0);
    crate::sip::procs::raise_nofile(65_536);
    let out_dir = ::tests::bins::workspace_root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let loadavg_start = loadavg();
    let mut systems = Vec::new();
    for &system in &o.systems {
        println!("== {}", system.name());
        let r = step::bench_system(system, &o, box_cpu, &out_dir);
        if let Some(e) = &r.error {
            eprintln!("   FAILED: {e}");
        }
        systems.push(r);
    }
    let report = report::Report {
        command: common::command_line("cargo xtask bench flood", args),
        kernel: common::kernel_release(),
        cpus,
        box_cpu,
        sipp: sipp_version,
        setup: report::setup_text(&o, box_cpu),
        cps: o.cps,
        hold_s: o.hold.as_secs_f64(),
        duration_s: o.duration.as_secs_f64(),
        limits: systems::Limits::for_carrier(o.cps, o.hold),
        loadavg_start,
        loadavg_end: loadavg(),
        systems,
    };
    let md = report::markdown(&report);
    crate::common::write_report(&out_dir, "flood", &report, &md)?;
    if report.systems.iter().any(|s| s.error.is_some()) {
        bail!("not every system was measured (see above and flood.md)");
    }
    Ok(())
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn args() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.systems.len(), 5);
        assert_eq!(o.rates, vec![1000, 10_000, 0]);
        let o = parse(&[
            "--systems".into(),
            "sipd-xdp,kamailio".into(),
            "--kinds".into(),
            "syn".into(),
            "--rates".into(),
            "500,max".into(),
        ])
        .unwrap();
        assert_eq!(o.systems, vec![System::SipdXdp, System::Kamailio]);
        assert_eq!(o.kinds, vec![Kind::Syn]);
        assert_eq!(o.rates, vec![500, 0]);
        assert!(parse(&["--kinds".into(), "ping".into()]).is_err());
        assert!(parse(&["--rates".into(), "0".into()]).is_err());
        assert!(parse(&["--cps".into(), "200".into(), "--hold".into(), "60".into()]).is_err());
    }
}
