//! One system measured: the topology, the relay and Kamailio in the relay namespace, the
//! sipp callee and caller, the media, and the counters around the caller's run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ::tests::netns::{NsChild, Topology, TopologyOptions};
use anyhow::bail;
use relay_user::ng::client::NgClient;

use super::report::SystemResult;
use super::{Opts, System, media};
use crate::common;
use crate::relay::cpu::{CpuSnap, threaded_napi, xdp_prog_stats_of};
use crate::relay::planes::relay_stats_of;
use crate::sip::procs::{self, TempDir};
use crate::sip::sipp;

const SIP_PORT: u16 = 5060;
const RTP_PORT: u16 = 20_000;
const NG_PORT: u16 = 2223;
/// The relay's media ports (relayd and rtpengine alike): 2 per leg, 4 per call.
const MEDIA_PORTS: (u16, u16) = (30_000, 59_999);
/// Called number (the UAC's `-s`) and calling number.
const CLD: &str = "2002";
const CLI: &str = "1001";

/// Measures one system; a failure is recorded in the result, never propagated.
pub(super) fn bench_system(
    system: System,
    o: &Opts,
    box_cpu: usize,
    out_dir: &Path,
) -> SystemResult {
    let mut r = SystemResult::new(system);
    if let Err(e) = measure(system, o, box_cpu, out_dir, &mut r) {
        r.error = Some(format!("{e:#}"));
    }
    r
}

/// The relay under test, stopped by PID (and for relayd its pins removed) when dropped.
struct Relay {
    child: Option<NsChild>,
    /// relayd: (binary, instance) for `--status` and `--cleanup`.
    relayd: Option<(PathBuf, String)>,
    relay_ns: PathBuf,
    devs: [String; 2],
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.stop(Duration::from_secs(5));
        }
        if let Some((bin, instance)) = &self.relayd {
            // relayd leaves its pins for a restart to pick up; this run is over.
            let out = std::process::Command::new("nsenter")
                .arg(format!("--net={}", self.relay_ns.display()))
                .arg("--")
                .arg(bin)
                .args(["--cleanup", "--instance", instance])
                .args(["--interface", &self.devs[0], "--interface", &self.devs[1]])
                .stdin(Stdio::null())
                .output();
            if !out.as_ref().is_ok_and(|o| o.status.success()) {
                eprintln!("   relayd --cleanup failed: {out:?}");
            }
        }
    }
}

fn start_relay(
    system: System,
    o: &Opts,
    topo: &Topology,
    box_cpu: usize,
    log: &Path,
) -> anyhow::Result<(Relay, String)> {
    let ng_addr = SocketAddr::from(([127, 0, 0, 1], NG_PORT));
    let mut cmd = topo.relay.command("taskset");
    cmd.args(["-c", &box_cpu.to_string()]);
    let ports = format!("{}-{}", MEDIA_PORTS.0, MEDIA_PORTS.1);
    let (relayd, version) = match system {
        System::RelaydXdp => {
            let bin = match &o.relayd {
                Some(p) => p.clone(),
                None => {
                    ::tests::bins::find_built("relayd", "-p relay-user --bin relayd", "--relayd")?
                }
            };
            let instance = format!("sbckam{}", std::process::id());
            cmd.arg(&bin)
                .args(::tests::kamailio::relayd_args(
                    topo,
                    "xdp-native",
                    &ports,
                    &instance,
                    ng_addr,
                ))
                .args(["--media-timeout", "60s"]);
            (Some((bin, instance)), "relayd (xdp-native)".to_string())
        }
        System::Rtpengine => {
            cmd.arg(common::rtpengine()?)
                .args(common::rtpengine_userspace_args(MEDIA_PORTS))
                .args([
                    &format!("--interface={}", topo.relay_caller_if.ipv4),
                    &format!("--listen-ng={ng_addr}"),
                ]);
            let v = std::process::Command::new("rtpengine")
                .arg("--version")
                .output()
                .ok()
                .map(|o| {
                    let s = String::from_utf8_lossy(&o.stdout).into_owned()
                        + &String::from_utf8_lossy(&o.stderr);
                    s.lines()
                        .find(|l| l.contains("Version"))
                        .map_or("rtpengine".into(), |l| {
                            l.trim().replace("Version: ", "rtpengine ")
                        })
                })
                .unwrap_or_else(|| "rtpengine".into());
            (None, format!("{v} (--table=-1)"))
        }
    };
    let logf = std::fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf);
    println!("   {}", ::tests::show_command(&cmd));
    let child = NsChild::spawn(&mut cmd)?;
    let mut relay = Relay {
        child: Some(child),
        relayd,
        relay_ns: topo.relay.path(),
        devs: [
            topo.relay_caller_if.dev.clone(),
            topo.relay_callee_if.dev.clone(),
        ],
    };
    let ng = topo.relay.enter(|| NgClient::new(ng_addr))?;
    if let Err(e) = ng.wait_ready(Duration::from_secs(15)) {
        let st = relay.child.as_mut().map(|c| c.try_wait());
        bail!(
            "relay not answering ng ping ({e}; exit {st:?}); log {}:\n{}",
            log.display(),
            procs::tail(log, 15)
        );
    }
    Ok((relay, version))
}

fn measure(
    system: System,
    o: &Opts,
    box_cpu: usize,
    out_dir: &Path,
    r: &mut SystemResult,
) -> anyhow::Result<()> {
    let tmp = TempDir::new(&format!("kamailio-{}", system.slug()))?;
    let topo = Topology::three(TopologyOptions {
        gro: Some(true),
        forwarding: true,
        ..Default::default()
    })?;
    let relay_log = out_dir.join(format!("kamailio-{}-relay.log", system.slug()));
    let (relay, version) = start_relay(system, o, &topo, box_cpu, &relay_log)?;
    r.relay = version;
    let _peer_pass = match &relay.relayd {
        Some((_, instance)) => Some(::tests::xdp::attach_peer_pass(&topo, instance)?),
        None => None,
    };

    let listen = SocketAddr::new(topo.relay_caller_if.ip(false), SIP_PORT);
    let uas_addr = SocketAddr::new(topo.callee_if.ip(false), SIP_PORT);
    let uac_addr = SocketAddr::new(topo.caller_if.ip(false), SIP_PORT);
    let cfg = tmp.path().join("kamailio.cfg");
    std::fs::write(
        &cfg,
        ::tests::kamailio::relayd_cfg(listen, &format!("udp:127.0.0.1:{NG_PORT}"), uas_addr)?,
    )?;
    let kam_log = out_dir.join(format!("kamailio-{}-kamailio.log", system.slug()));
    let mut kam =
        ::tests::kamailio::start_in(&topo.relay, &cfg, &[], Some(box_cpu), listen, &kam_log)?;
    let napi = threaded_napi(&topo, box_cpu);

    let caller = ::tests::rtp::bind_in(&topo.caller, SocketAddr::new(uac_addr.ip(), RTP_PORT))?;
    let callee = ::tests::rtp::bind_in(&topo.callee, SocketAddr::new(uas_addr.ip(), RTP_PORT))?;
    let calls = o.calls();
    let timeout = o.bound();

    let dir = tmp.path();
    let mut uas_cmd = sipp::ns_command(&topo.callee, "uas.xml", uas_addr, dir, true);
    uas_cmd
        .args(["-set", "rtp_port", &RTP_PORT.to_string()])
        .args(["-m", &calls.to_string(), "-d", "0"])
        .args(["-timeout", &format!("{}s", timeout.as_secs())]);
    let uas = sipp::spawn_uas_bound(
        &topo.callee,
        uas_addr,
        &mut uas_cmd,
        &dir.join("uas_stdout.log"),
    )?;

    let stat_file = dir.join("uac_stats.csv");
    let mut uac_cmd = sipp::ns_command(&topo.caller, "uac.xml", uac_addr, dir, true);
    let limit = (o.rate as f64 * (o.hold.as_secs_f64() + 10.0)).ceil() as u64;
    uac_cmd
        .args(["-s", CLD, "-set", "cli", CLI])
        .args(["-set", "rtp_port", &RTP_PORT.to_string()])
        .args(["-r", &o.rate.to_string(), "-rp", "1000"])
        .args(["-m", &calls.to_string(), "-l", &limit.to_string()])
        .args(["-d", &o.hold.as_millis().to_string()])
        .args(["-timeout", &format!("{}s", timeout.as_secs())])
        .args(["-trace_stat", "-fd", "1", "-stf"])
        .arg(&stat_file)
        .args(["-trace_rtt", "-rtt_freq", "1"])
        .arg(listen.to_string());

    // Counters before.
    let relay_pid = relay.child.as_ref().map(|c| c.pid());
    let kam_pids = || {
        let mut p = procs::descendants(kam.pid());
        p.push(kam.pid());
        p
    };
    let kam_cpu0 = procs::cpu_secs(&kam_pids());
    let xdp0 = match &relay.relayd {
        Some((bin, inst)) => Some((relay_stats_of(bin, inst)?, xdp_prog_stats_of(inst)?)),
        None => None,
    };
    let cpu0 = CpuSnap::take(relay_pid, &napi)?;
    let started = Instant::now();
    let mut uac = procs::Proc::spawn("sipp UAC", &mut uac_cmd, &dir.join("uac_stdout.log"))?;
    let done = AtomicBool::new(false);
    let (media, uac_status) = std::thread::scope(|s| {
        let m = s.spawn(|| {
            media::run(
                &caller,
                &callee,
                (&dir.join("uac_logs.log"), &dir.join("uas_logs.log")),
                media::Legs::SameCallId,
                o.hold,
                timeout,
                &done,
            )
        });
        let status = uac.wait_until(
            started + timeout + Duration::from_secs(15),
            Duration::from_millis(100),
        );
        done.store(true, Ordering::Relaxed);
        (m.join().expect("media thread"), status)
    });
    let wall = started.elapsed().as_secs_f64();
    let cpu1 = CpuSnap::take(relay_pid, &napi)?;
    let xdp1 = match &relay.relayd {
        Some((bin, inst)) => Some((relay_stats_of(bin, inst)?, xdp_prog_stats_of(inst)?)),
        None => None,
    };
    let kam_cpu1 = procs::cpu_secs(&kam_pids());
    let uac_status = uac_status?;
    let media = media?;
    drop(uac);
    drop(uas);

    // sipp's statistics and per-call setup times.
    let stats = std::fs::read_to_string(&stat_file)
        .ok()
        .and_then(|s| sipp::parse_stats(&s, calls).ok());
    let setup = rtt_ms(dir);
    r.record_calls(calls, o.rate, stats.as_ref(), &setup, uac_status.is_some());
    r.uac_exit = uac_status.map(|s| s.to_string());
    r.uac_errors = std::fs::read_to_string(dir.join("uac_errors.log"))
        .map(|s| sipp::summarize_errors(&s, 5))
        .unwrap_or_default();
    // The sipps' error logs and the caller's output stay beside the results.
    for (from, to) in [
        ("uac_errors.log", "uac-errors.log"),
        ("uas_errors.log", "uas-errors.log"),
        ("uac_stdout.log", "uac.log"),
    ] {
        let _ = std::fs::copy(
            dir.join(from),
            out_dir.join(format!("kamailio-{}-{to}", system.slug())),
        );
    }
    r.wall_s = wall;
    r.record_media(&media);
    r.record_cpu(&cpu0, &cpu1, !napi.is_empty(), kam_cpu1 - kam_cpu0);
    if let (Some((s0, p0)), Some((s1, p1))) = (xdp0, xdp1) {
        let d = |k: &str| {
            s1.get(k)
                .copied()
                .unwrap_or(0)
                .saturating_sub(s0.get(k).copied().unwrap_or(0))
        };
        r.record_xdp(
            d("relay_tx") + d("relay_redirect"),
            d("relay_to_userspace"),
            (p1.0 - p0.0, p1.1 - p0.1),
        );
    }
    r.print();
    if kam.try_wait()?.is_some() {
        bail!("kamailio exited during the run; log {}", kam_log.display());
    }
    let _ = kam.stop(Duration::from_secs(5));
    if uac_status.is_none() {
        bail!("sipp UAC did not end within {} s", timeout.as_secs() + 15);
    }
    Ok(())
}

/// The INVITE → 200 times (ms) of every call, from sipp's `-trace_rtt` file(s) in `dir`
/// (`<scenario>_<pid>_rtt.csv`: `Date_ms;response_time_ms;rtd_no`, then per call the time
/// since the start, the response time and the RTD, in ms as the header says for sipp 3.6;
/// its resolution is sipp's scheduling loop, a few ms on a loaded machine).
fn rtt_ms(dir: &Path) -> Vec<f64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("uac_") && name.ends_with("_rtt.csv")) {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        v.extend(parse_rtt(&text));
    }
    v
}

fn parse_rtt(text: &str) -> Vec<f64> {
    text.lines()
        .filter_map(|l| l.split(';').nth(1)?.trim().parse::<f64>().ok())
        .collect()
}

#[cfg(test)]
mod unit {
    #[test]
    fn rtt_lines() {
        // As sipp 3.6.1 writes it.
        let t = "Date_ms;response_time_ms;rtd_no\n512.001;8;1\n1020;16;1\n";
        assert_eq!(super::parse_rtt(t), vec![8.0, 16.0]);
    }
}
