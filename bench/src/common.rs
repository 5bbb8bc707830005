//! Helpers both benchmarks use: CPU pinning, readings from `/proc`, rtpengine's command line,
//! report formatting.

use std::path::Path;

/// Sets the CPU affinity of a thread (`tid` 0: the calling one) to one CPU.
pub fn set_affinity(tid: i32, cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Pins the calling thread (and the threads it starts later) to one CPU.
pub fn pin_self(cpu: usize) {
    if let Err(e) = set_affinity(0, cpu) {
        eprintln!("bench: cannot pin to CPU {cpu}: {e}");
    }
}

/// Clock ticks per second (`/proc/stat` and `/proc/<pid>/stat` count in them).
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// The `cpu` lines of `/proc/stat` (`cpu` for all CPUs, then `cpu0`, `cpu1`, …) with their tick
/// counts: user nice system idle iowait irq softirq steal ….
pub fn proc_stat_cpus() -> std::io::Result<Vec<(String, Vec<f64>)>> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    Ok(stat
        .lines()
        .filter(|l| l.starts_with("cpu"))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?.to_string();
            Some((name, f.map(|v| v.parse::<f64>().unwrap_or(0.0)).collect()))
        })
        .collect())
}

/// Busy ticks of a `/proc/stat` cpu line: everything but idle, iowait and steal.
pub fn busy_ticks(ticks: &[f64]) -> f64 {
    let get = |i: usize| ticks.get(i).copied().unwrap_or(0.0);
    get(0) + get(1) + get(2) + get(5) + get(6)
}

/// The PIDs in `/proc`.
pub fn pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

/// `/proc/<pid>/comm`, trimmed.
pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The 1, 5 and 15 minute load averages (other work on the machine).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The command line a report names: `name` and the arguments it was given.
pub fn command_line(name: &str, args: &[String]) -> String {
    std::iter::once(name)
        .chain(args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The running kernel's release.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A number with `prec` decimals, or `-`.
pub fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |n| format!("{n:.prec$}"))
}

/// Debian's rtpengine, if installed.
pub fn rtpengine() -> anyhow::Result<&'static Path> {
    let bin = Path::new("/usr/bin/rtpengine");
    if !bin.exists() {
        anyhow::bail!("/usr/bin/rtpengine not installed (apt install rtpengine-daemon)");
    }
    Ok(bin)
}

/// rtpengine's arguments as both benchmarks run it (shared with the Kamailio scenarios'
/// parity test: [`tests::kamailio::rtpengine_userspace_args`]).
pub use tests::kamailio::rtpengine_userspace_args;

/// Writes a benchmark's results as `<stem>.json` and `<stem>.md` in `dir`, prints the
/// Markdown and where both went.
pub fn write_report(
    dir: &Path,
    stem: &str,
    report: &impl serde::Serialize,
    md: &str,
) -> anyhow::Result<()> {
    let json = dir.join(format!("{stem}.json"));
    std::fs::write(&json, serde_json::to_string_pretty(report)?)?;
    std::fs::write(dir.join(format!("{stem}.md")), md)?;
    println!("\n{md}");
    println!("wrote {} and {stem}.md", json.display());
    Ok(())
}

#[cfg(test)]
mod unit {
    #[test]
    fn rtpengine_userspace_command_line() {
        assert_eq!(
            super::rtpengine_userspace_args((40000, 49999)),
            [
                "--config-file=none",
                "--table=-1",
                "--foreground",
                "--log-stderr",
                "--log-level=4",
                "--delete-delay=0",
                "--port-min=40000",
                "--port-max=49999",
            ]
        );
    }

    #[test]
    fn opt_formats_or_dashes() {
        assert_eq!(super::opt(Some(1.234), 1), "1.2");
        assert_eq!(super::opt(None, 1), "-");
    }
}
