//! What the relay benchmark reads to cost a run: CPU time of the relay, its NAPI threads and
//! the whole machine, and the XDP programs' own run time.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use ::tests::netns::Topology;
use anyhow::{Context as _, bail};

use super::planes::instance;
use crate::common;

/// [`xdp_prog_stats_of`] this run's instance.
pub(super) fn xdp_prog_stats() -> anyhow::Result<(u64, u64)> {
    xdp_prog_stats_of(&instance())
}

/// (run_time_ns, run_cnt) summed over the programs behind relayd's pinned XDP links
/// (`/sys/fs/bpf/<instance>/link_*`), from `bpftool`. Needs `kernel.bpf_stats_enabled=1`.
pub(crate) fn xdp_prog_stats_of(instance: &str) -> anyhow::Result<(u64, u64)> {
    let dir = Path::new("/sys/fs/bpf").join(instance);
    let mut ids = BTreeSet::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
        let e = e?;
        if !e.file_name().to_string_lossy().starts_with("link_") {
            continue;
        }
        let v = bpftool_json(&["link", "show", "pinned", &e.path().to_string_lossy()])?;
        ids.insert(v["prog_id"].as_u64().context("bpftool link: no prog_id")?);
    }
    if ids.is_empty() {
        bail!("no XDP link pinned under {}", dir.display());
    }
    let (mut ns, mut cnt) = (0, 0);
    for id in ids {
        let v = bpftool_json(&["prog", "show", "id", &id.to_string()])?;
        // Both fields are absent while zero.
        ns += v["run_time_ns"].as_u64().unwrap_or(0);
        cnt += v["run_cnt"].as_u64().unwrap_or(0);
    }
    Ok((ns, cnt))
}

fn bpftool_json(args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let out = std::process::Command::new("bpftool")
        .arg("-j")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("run bpftool (apt install bpftool)")?;
    if !out.status.success() {
        bail!(
            "bpftool {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("bpftool JSON")
}

/// `kernel.bpf_stats_enabled=1` for the run; the old value comes back on drop.
pub(crate) struct BpfStats {
    pub(super) old: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub(crate) fn enable() -> anyhow::Result<BpfStats> {
        let old = std::fs::read_to_string(BPF_STATS)
            .with_context(|| format!("read {BPF_STATS}"))?
            .trim()
            .to_string();
        std::fs::write(BPF_STATS, "1").with_context(|| format!("write {BPF_STATS}"))?;
        Ok(BpfStats { old })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(BPF_STATS, &self.old) {
            eprintln!("bench: cannot restore {BPF_STATS} to {}: {e}", self.old);
        }
    }
}

/// CPU counters at one instant.
pub(crate) struct CpuSnap {
    /// The relay process, all threads, seconds (0 without a process).
    pub(crate) relay_s: f64,
    /// This process (generators, sinks), user + sys, seconds.
    pub(crate) self_s: f64,
    /// The ksoftirqd threads, seconds.
    pub(crate) ksoftirqd_s: f64,
    /// The relay namespace's NAPI threads, seconds.
    pub(crate) napi_s: f64,
    /// Softirq ticks, all CPUs, seconds.
    pub(crate) softirq_s: f64,
    /// Everything but idle, iowait and steal, all CPUs, seconds.
    pub(crate) busy_s: f64,
}

impl CpuSnap {
    pub(crate) fn take(pid: Option<u32>, napi: &[u32]) -> anyhow::Result<CpuSnap> {
        let hz = common::clk_tck();
        let (_, cpu) = common::proc_stat_cpus()?
            .into_iter()
            .find(|(name, _)| name == "cpu")
            .context("/proc/stat has no cpu line")?;
        // user nice system idle iowait irq softirq steal ...
        let softirq = cpu.get(6).copied().unwrap_or(0.0);
        let busy = common::busy_ticks(&cpu);
        let relay_s = match pid {
            None => 0.0,
            Some(pid) => {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    bail!("relay process {pid} gone");
                }
                process_ns(pid) as f64 / 1e9
            }
        };
        // SAFETY: getrusage writes the struct it is given.
        let self_s = unsafe {
            let mut ru: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_SELF, &mut ru);
            let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
            t(ru.ru_utime) + t(ru.ru_stime)
        };
        let ksoftirqd_s = kthreads("ksoftirqd/")
            .into_iter()
            .map(|p| process_ns(p) as f64 / 1e9)
            .sum();
        Ok(CpuSnap {
            napi_s: napi.iter().map(|&p| process_ns(p) as f64 / 1e9).sum(),
            relay_s,
            self_s,
            ksoftirqd_s,
            softirq_s: softirq / hz,
            busy_s: busy / hz,
        })
    }
}

/// CPU time of every thread of a process, ns (`/proc/<pid>/task/*/schedstat`, first field:
/// exact, not tick-sampled; without IRQ time accounting it includes the softirqs that ran in
/// the thread's context).
pub(crate) fn process_ns(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Switches the relay namespace's veths to threaded NAPI and pins those threads to the relay's
/// CPU, so the relay side's kernel work (the XDP program and its redirects, or the stack's
/// receive up to the relay's socket, or ip_forward) runs in threads whose CPU time is exact,
/// instead of in softirq inside the sending generator. Returns their PIDs (new `napi/*`
/// kthreads); empty, with a warning, if that did not work.
pub(crate) fn threaded_napi(topo: &Topology, relay_cpu: usize) -> Vec<u32> {
    let before = kthreads("napi/");
    let devs = [&topo.relay_caller_if.dev, &topo.relay_callee_if.dev];
    let script = devs
        .iter()
        .map(|d| format!("echo 1 > /sys/class/net/{d}/threaded"))
        .collect::<Vec<_>>()
        .join(" && ");
    // `ip netns exec` (not nsenter): it mounts the namespace's own /sys/class/net.
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", topo.relay.name(), "sh", "-c", &script])
        .stdin(Stdio::null())
        .output();
    if !out.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("   threaded NAPI on the relay's veths failed: {out:?}; no relay-side column");
        return Vec::new();
    }
    // The threads start asynchronously.
    std::thread::sleep(Duration::from_millis(100));
    let new: Vec<u32> = kthreads("napi/")
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    for &pid in &new {
        if let Err(e) = common::set_affinity(pid as i32, relay_cpu) {
            eprintln!("   cannot pin NAPI thread {pid}: {e}");
        }
    }
    if new.is_empty() {
        eprintln!("   threaded NAPI: no new napi/ threads appeared; no relay-side column");
    } else {
        println!(
            "   threaded NAPI on {}: threads {new:?} pinned to CPU {relay_cpu}",
            devs.iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    new
}

/// PIDs whose command name starts with `prefix`.
fn kthreads(prefix: &str) -> Vec<u32> {
    common::pids()
        .into_iter()
        .filter(|&pid| common::comm(pid).is_some_and(|c| c.starts_with(prefix)))
        .collect()
}
