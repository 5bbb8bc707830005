//! Processes the SIP benchmark starts, their CPU time, and the temporary directory: each is
//! stopped or removed by a guard, also when the benchmark fails half-way.

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::common;

/// A started process, stopped by PID when dropped: SIGTERM, up to 3 s, then SIGKILL. Forking
/// daemons (Kamailio) also have their workers, as seen by their parent in `/proc`, killed by PID
/// if they outlive their parent.
pub struct Proc {
    pub name: String,
    child: Child,
    /// Every descendant seen so far (PID, comm), to kill if the parent leaves them behind.
    seen: BTreeSet<(u32, String)>,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdin closed and stdout+stderr appended to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> anyhow::Result<Proc> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(f.try_clone()?).stderr(f);
        println!("   {}", tests::show_command(cmd));
        let child = cmd
            .spawn()
            .with_context(|| format!("start {name}: {}", tests::show_command(cmd)))?;
        Ok(Proc {
            name: name.into(),
            child,
            seen: BTreeSet::new(),
            log: log.to_path_buf(),
        })
    }

    /// Starts `cmd` with stdout+stderr copied line by line to `log` by a thread, and waits up
    /// to `timeout` for a line containing `marker`.
    pub fn spawn_until(
        name: &str,
        cmd: &mut Command,
        log: &Path,
        marker: &str,
        timeout: Duration,
    ) -> anyhow::Result<Proc> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        println!("   {}", tests::show_command(cmd));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("start {name}: {}", tests::show_command(cmd)))?;
        let (tx, rx) = mpsc::channel::<()>();
        let (ltx, lrx) = mpsc::channel::<String>();
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            let ltx = ltx.clone();
            let marker = marker.to_string();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if line.contains(&marker) {
                        let _ = tx.send(());
                    }
                    if ltx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        drop(ltx);
        // One writer thread keeps the two streams' lines whole in the log.
        std::thread::spawn(move || {
            for line in lrx {
                let _ = writeln!(f, "{line}");
            }
        });
        let mut p = Proc {
            name: name.into(),
            child,
            seen: BTreeSet::new(),
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + timeout;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(()) => return Ok(p),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Both pipes closed: the process ended.
                    let status = p.child.wait()?;
                    // Give the writer a moment to flush the last lines.
                    std::thread::sleep(Duration::from_millis(100));
                    bail!(
                        "{name} exited ({status}) before saying {marker:?}:\n{}",
                        tail(log, 15)
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = p.child.try_wait()? {
                        std::thread::sleep(Duration::from_millis(100));
                        bail!(
                            "{name} exited ({status}) before saying {marker:?}:\n{}",
                            tail(log, 15)
                        );
                    }
                    if Instant::now() >= deadline {
                        let _ = p.stop();
                        bail!(
                            "{name} did not say {marker:?} within {timeout:?}:\n{}",
                            tail(log, 15)
                        );
                    }
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Waits until `until`, looking every `poll`: its status, or `None` when it still runs
    /// then (the caller stops it).
    pub fn wait_until(
        &mut self,
        until: std::time::Instant,
        poll: std::time::Duration,
    ) -> anyhow::Result<Option<ExitStatus>> {
        loop {
            match self.child.try_wait()? {
                Some(st) => return Ok(Some(st)),
                None if std::time::Instant::now() > until => return Ok(None),
                None => std::thread::sleep(poll),
            }
        }
    }

    /// Fails with the log's tail if the process has ended.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.try_wait()? {
            bail!(
                "{} exited ({status}); log {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 15)
            );
        }
        Ok(())
    }

    /// The process and every descendant now (a forking daemon's workers); remembered for
    /// clean-up.
    pub fn tree(&mut self) -> Vec<u32> {
        let pids = descendants(self.pid());
        for &p in &pids {
            if let Some(c) = common::comm(p) {
                self.seen.insert((p, c));
            }
        }
        let mut all = vec![self.pid()];
        all.extend(pids);
        all
    }

    /// SIGTERM, up to 3 s, SIGKILL; then SIGKILL to remembered descendants still running
    /// under the same name.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        self.tree();
        let status = match self.child.try_wait()? {
            Some(s) => s,
            None => {
                signal(self.child.id(), libc::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(3);
                loop {
                    if let Some(s) = self.child.try_wait()? {
                        break s;
                    }
                    if Instant::now() >= deadline {
                        let _ = self.child.kill();
                        break self.child.wait()?;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        // Workers get the parent's SIGTERM relayed; give them a moment, then make sure.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let left: Vec<u32> = self
                .seen
                .iter()
                .filter(|(p, c)| common::comm(*p).as_deref() == Some(c))
                .map(|(p, _)| *p)
                .collect();
            if left.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                for p in left {
                    signal(p, libc::SIGKILL);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.seen.clear();
        Ok(status)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("bench: stopping {} (pid {}): {e:#}", self.name, self.pid());
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a PID we started (or one of its workers, checked by name).
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// Fields of `/proc/<pid>/stat` after the command name (field 3, the state, is index 0).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Every descendant of `root` (children, their children, …).
pub fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = common::pids()
        .into_iter()
        .filter_map(|pid| {
            let f = stat_fields(pid)?;
            Some((pid, f.get(1)?.parse().ok()?))
        })
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parents {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

/// utime + stime of the processes (all their threads), seconds; gone processes count 0.
pub fn cpu_secs(pids: &[u32]) -> f64 {
    let hz = common::clk_tck();
    pids.iter()
        .filter_map(|&p| {
            let f = stat_fields(p)?;
            // utime and stime are fields 14 and 15.
            let t: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(t / hz)
        })
        .sum()
}

/// Busy (all but idle, iowait, steal) seconds of each CPU, from `/proc/stat`.
pub fn per_cpu_busy() -> Vec<f64> {
    let hz = common::clk_tck();
    let Ok(cpus) = common::proc_stat_cpus() else {
        return Vec::new();
    };
    cpus.iter()
        .filter(|(name, _)| name != "cpu")
        .map(|(_, ticks)| common::busy_ticks(ticks) / hz)
        .collect()
}

/// The last `n` lines of a log, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..]
        .iter()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A directory under /tmp, removed with its contents when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> anyhow::Result<TempDir> {
        let p = std::env::temp_dir().join(format!("sbc-bench-{tag}-{}", std::process::id()));
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("remove {}", p.display()))?;
        }
        std::fs::create_dir_all(&p).with_context(|| format!("create {}", p.display()))?;
        Ok(TempDir(p))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("bench: cannot remove {}: {e}", self.0.display());
        }
    }
}

/// Fails if a UDP port is already taken on 127.0.0.1 (another benchmark, a stray daemon).
pub fn ensure_free(port: u16, what: &str) -> anyhow::Result<()> {
    UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .map(drop)
        .with_context(|| format!("UDP 127.0.0.1:{port} ({what}) is in use"))
}

/// Waits until something is bound to UDP 127.0.0.1:`port`.
pub fn wait_bound(port: u16, p: &mut Proc, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], port))).is_ok() {
        p.check_alive()?;
        if Instant::now() >= deadline {
            bail!(
                "{} did not bind UDP 127.0.0.1:{port} within {timeout:?}; log {}:\n{}",
                p.name,
                p.log.display(),
                tail(&p.log, 15)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Sends OPTIONS to a SIP proxy until it answers anything (then it is taking requests);
/// fails at once if `p` died.
pub fn wait_sip(addr: SocketAddr, p: &mut Proc, timeout: Duration) -> anyhow::Result<()> {
    tests::kamailio::wait_sip(addr, timeout, || p.check_alive()).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e:#}; log {}:\n{}",
            p.name,
            p.log.display(),
            tail(&p.log, 15)
        )
    })
}

/// Raises this process's open-file limit (inherited by what it starts): relays bind two
/// sockets per call leg.
pub fn raise_nofile(want: u64) {
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return;
        }
        if r.rlim_cur >= want {
            return;
        }
        let old = r;
        r.rlim_cur = want;
        r.rlim_max = r.rlim_max.max(want);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
            // Not root: as high as the hard limit allows.
            let r2 = libc::rlimit {
                rlim_cur: old.rlim_max,
                rlim_max: old.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &r2);
            eprintln!(
                "bench: open files limited to {} (wanted {want})",
                old.rlim_max
            );
        }
    }
}
