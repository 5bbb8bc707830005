//! `cargo xtask bench xdp-log`: what the XDP program's rare-event logging (`relay-ebpf`'s `log`
//! feature, `diag.rs`) costs the normal verdicts. Results: `target/bench/xdp-log.json` and
//! `xdp-log.md` in the workspace root.
//!
//! Method: the program is built twice, with and without the `log` feature, exactly as
//! relay-user's build script builds it (nightly, bpf-linker, BTF; into
//! `target/bench/xdp-log/<variant>`). Each build is loaded with its maps pinned under an
//! instance of its own (removed afterwards), its maps programmed by relay-user's typed API (a
//! SIP service with the guard on at limits no run reaches, a relay leg), and each frame below
//! is run through `BPF_PROG_TEST_RUN` with `repeat` = `--repeat`: the kernel times the runs
//! itself and reports the mean ns per run, without the syscall. The two builds alternate for
//! `--rounds` rounds, each going first every other round, so drift on a shared machine hits
//! both alike; the table shows the median
//! of the rounds per build and the difference. No frame leaves the machine: a test run
//! delivers nothing, and the relay leg's peer (TEST-NET-2) has no route, so the kernel hands
//! that frame to userspace unmodified (which also keeps `repeat` honest: a rewritten frame
//! would be judged differently on its next run).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use aya::programs::Xdp;
use relay_common::{
    Addr,
    relay::{LEG_ACTIVE, LEG_PEER_KNOWN, Leg},
};
use relay_user::{Stat, loader, maps::XdpMaps, test_run::XdpRun};
use serde::Serialize;

use crate::xdp::SIP;

const USAGE: &str = "cargo xtask bench xdp-log [--rounds N] [--repeat N]";

const RELAY: [u8; 4] = [198, 51, 100, 1];
const PEER: [u8; 4] = [198, 51, 100, 20];
const CARRIER: [u8; 4] = [198, 51, 100, 30];
const LEG_A: u16 = 30_000;
const LEG_B: u16 = 30_002;

#[derive(Serialize)]
struct Row {
    frame: &'static str,
    verdict: &'static str,
    with_log_ns: f64,
    without_log_ns: f64,
    difference_ns: f64,
}

#[derive(Serialize)]
struct Report {
    kernel: String,
    rounds: u32,
    repeat: u32,
    method: &'static str,
    rows: Vec<Row>,
}

/// One frame of the normal traffic, and the verdict it must get.
struct Case {
    name: &'static str,
    frame: Vec<u8>,
    stat: Stat,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "SIP OPTIONS to the SIP service, guard on",
            frame: udp4(CARRIER, SIP, RELAY, SIP, b"OPTIONS sip:x SIP/2.0\r\n\r\n"),
            stat: Stat::PassSip,
        },
        Case {
            name: "SIP INVITE to the SIP service, guard on",
            frame: udp4(CARRIER, SIP, RELAY, SIP, b"INVITE sip:x SIP/2.0\r\n\r\n"),
            stat: Stat::PassSip,
        },
        Case {
            name: "RTP to a relay leg (peer unroutable: to userspace)",
            frame: udp4(PEER, 4000, RELAY, LEG_A, &[0x80; 172]),
            stat: Stat::RelayToUserspace,
        },
        Case {
            name: "UDP to no service and no leg",
            frame: udp4(CARRIER, 9, RELAY, 9999, b"x"),
            stat: Stat::PassOther,
        },
        Case {
            name: "ARP",
            frame: arp(),
            stat: Stat::PassNotIp,
        },
    ]
}

fn udp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    crate::frames::udp(src.into(), sport, dst.into(), dport, 64, payload)
}

fn arp() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    f.extend_from_slice(&CARRIER);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&RELAY);
    f
}

fn parse(args: &[String]) -> anyhow::Result<(u32, u32)> {
    let (mut rounds, mut repeat) = (9u32, 200_000u32);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || -> anyhow::Result<u32> {
            it.next()
                .with_context(|| format!("{a} needs a value; {USAGE}"))?
                .parse()
                .with_context(|| format!("{a}: a number; {USAGE}"))
        };
        match a.as_str() {
            "--rounds" => rounds = val()?.clamp(1, 101),
            "--repeat" => repeat = val()?.clamp(1_000, 10_000_000),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    Ok((rounds, repeat))
}

/// Builds relay-ebpf as aya-build does, with or without the `log` feature; returns the object.
fn build(root: &Path, log: bool) -> anyhow::Result<PathBuf> {
    let variant = if log { "with-log" } else { "without-log" };
    let target_dir = root.join("target/bench/xdp-log").join(variant);
    let mut cmd = Command::new("rustup");
    cmd.current_dir(root)
        .args([
            "run",
            "nightly",
            "cargo",
            "build",
            "--package",
            "relay-ebpf",
        ])
        .args(["--bins", "--release", "--target", "bpfel-unknown-none"])
        .args(["-Z", "build-std=core", "--quiet"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "--cfg=bpf_target_arch=\"x86_64\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf",
        )
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR");
    if !log {
        cmd.arg("--no-default-features");
    }
    println!("building relay-ebpf {variant}");
    let st = cmd
        .status()
        .context("running rustup (cargo xtask setup installs it)")?;
    if !st.success() {
        bail!("building relay-ebpf {variant} failed: {st}");
    }
    Ok(target_dir.join("bpfel-unknown-none/release/relay-ebpf"))
}

/// A loaded build with its maps programmed; its pins go when dropped.
struct Loaded {
    instance: String,
    ebpf: aya::Ebpf,
    maps: XdpMaps,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = loader::detach(&self.instance, &[]);
    }
}

fn load(object: &[u8], tag: &str) -> anyhow::Result<Loaded> {
    let instance = format!("sbc-bench-xdplog-{}-{tag}", std::process::id());
    let _ = loader::detach(&instance, &[]);
    let mut ebpf = loader::load_pinned(object, &instance)?;
    let mut maps = XdpMaps::from_ebpf(&mut ebpf)?;
    crate::xdp::sip_service(&mut maps, false)?;
    let leg = |port, peer_port, partner| Leg {
        local_addr: Addr::from_v4(RELAY),
        peer_addr: Addr::from_v4(PEER),
        session_id: 1,
        local_port: port,
        peer_port,
        partner_port: partner,
        _pad: 0,
        flags: LEG_ACTIVE | LEG_PEER_KNOWN,
        _pad2: 0,
        trust_addr: Addr::UNSPECIFIED,
        learn_until_ns: 0,
    };
    maps.leg_put(&leg(LEG_A, 4000, LEG_B))?;
    maps.leg_put(&leg(LEG_B, 4002, LEG_A))?;
    let prog: &mut Xdp = ebpf
        .program_mut(relay_common::maps::PROGRAM)
        .context("program")?
        .try_into()?;
    prog.load().context("the verifier refused the program")?;
    Ok(Loaded {
        instance,
        ebpf,
        maps,
    })
}

/// Mean ns per run of `repeat` runs of `frame`.
fn run(l: &Loaded, case: &Case, repeat: u32) -> anyhow::Result<f64> {
    let r = XdpRun::new(&case.frame)
        .repeat(repeat)
        .run_named(&l.ebpf, relay_common::maps::PROGRAM)?;
    Ok(r.ns_per_run())
}

/// Whether one run of `case` gets its verdict (its `STATS` counter, summed over CPUs, moves).
fn verdict_of(l: &Loaded, case: &Case) -> anyhow::Result<bool> {
    let before = l.maps.stats_raw()?[case.stat as usize];
    XdpRun::new(&case.frame).run_named(&l.ebpf, relay_common::maps::PROGRAM)?;
    Ok(l.maps.stats_raw()?[case.stat as usize] == before + 1)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run_bench(args: &[String]) -> anyhow::Result<()> {
    let (rounds, repeat) = parse(args)?;
    if !::tests::privileged() {
        bail!("bench xdp-log needs root (BPF_PROG_TEST_RUN, pinned maps)");
    }
    let root = ::tests::bins::workspace_root();
    let with = std::fs::read(build(&root, true)?)?;
    let without = std::fs::read(build(&root, false)?)?;
    crate::common::pin_self(0);
    let builds = [load(&with, "log")?, load(&without, "nolog")?];
    let cases = cases();
    for b in &builds {
        for c in &cases {
            if !verdict_of(b, c)? {
                bail!(
                    "{}: not the verdict {} in {}",
                    c.name,
                    c.stat.name(),
                    b.instance
                );
            }
        }
    }
    let mut rows = Vec::new();
    for c in &cases {
        let mut ns: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for round in 0..rounds {
            // Each build goes first every other round: no order effect favours either.
            for k in 0..2 {
                let i = (k + round as usize) % 2;
                ns[i].push(run(&builds[i], c, repeat)?);
            }
        }
        let (w, wo) = (median(&mut ns[0]), median(&mut ns[1]));
        println!("{:<52} {:>8.1} ns  {:>8.1} ns", c.name, w, wo);
        rows.push(Row {
            frame: c.name,
            verdict: c.stat.name(),
            with_log_ns: w,
            without_log_ns: wo,
            difference_ns: w - wo,
        });
    }
    drop(builds);
    let report = Report {
        kernel: crate::common::kernel_release(),
        rounds,
        repeat,
        method: "BPF_PROG_TEST_RUN mean ns per run (kernel-timed, repeat runs per call); \
                 median over the rounds; the two builds alternate, each first every other round",
        rows,
    };
    let mut md = format!(
        "# XDP program: normal verdicts with and without the log calls\n\nkernel {}, {} rounds \
         of {} runs, median of the rounds (ns per packet, BPF_PROG_TEST_RUN)\n\n\
         | frame | verdict | with log | without log | difference |\n|---|---|---|---|---|\n",
        report.kernel, rounds, repeat
    );
    for r in &report.rows {
        md += &format!(
            "| {} | {} | {:.1} | {:.1} | {:+.1} |\n",
            r.frame, r.verdict, r.with_log_ns, r.without_log_ns, r.difference_ns
        );
    }
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("xdp-log.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(dir.join("xdp-log.md"), &md)?;
    println!("\n{md}");
    Ok(())
}
