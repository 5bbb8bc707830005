//! `cargo xtask bench console`: how long each `sbc-tui` screen takes to open against a
//! `sipd` holding `--calls` live calls (default 1,000), and to draw.
//!
//! Setup, in a network namespace of its own (`sbct<pid>-<n>console`, everything on its
//! loopback, so nothing collides with another run's ports; deleted at the end):
//! - `sipd` as `bench sip` runs it (same sbc.toml and provisioning: one account with digest
//!   credentials, the callee as its connection, limits far above the load, userspace data
//!   plane, relay ports 20000-37999 — 4 per call), plus an admin made by `sipd init`
//!   whose TOTP code the bench computes;
//! - a sipp UAS answering every INVITE, and a sipp UAC starting `--calls` calls at `--cps`
//!   (100/s) that each hold for `--hold` seconds: the calls stay up while the screens are
//!   measured, then sipp and sipd are stopped by PID (sipp's own `-timeout` and a
//!   parent-death signal stop them if the bench itself is killed).
//!
//! Method: once the daemon lists the calls, for each screen and round (`--rounds`, 5) a fresh
//! console (the `tui` crate's `App` with its HTTPS `HttpSource`, logged in as the admin)
//! opens the screen: fetch = from the action (for the dashboard, the console's start; for
//! the ladder, `Enter` on the calls screen) to every request it made answered and applied;
//! draw = one frame of the screen at 200x60 and at 120x40 into a ratatui `TestBackend`.
//! Also sipd's resident memory (VmRSS, VmHWM) with the calls up.
//!
//! Results: a table on stdout (or JSON with `--json`), `target/bench/console.json` and
//! `console.md`; logs in `target/bench/console-*.log`.

mod measure;

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use tests::netns::Netns;
use tests::totp::{b32_decode, init_secret, totp_now};
use tui::api::Options;
use tui::console::source::http::HttpSource;

use crate::common::{self, loadavg};
use crate::sip::procs::{self, Proc, TempDir};
use crate::sip::{SIPD_MGMT_PORT, SIPD_PORT, SIPP_CPU, UAC_PORT, UAS_PORT, proxies, sipp};
use measure::{SIZES, Target, median_max};

const ADMIN: &str = "admin";
const ADMIN_PASSWORD: &str = "Console-Bench-7!qZ2x";

const USAGE: &str =
    "cargo xtask bench console [--calls 1000] [--rounds 5] [--cps 100] [--hold SECS] [--json]";

#[derive(Debug, Clone)]
struct Opts {
    calls: u64,
    rounds: u32,
    cps: u32,
    /// How long each call is held; None: long enough for the ramp and the rounds.
    hold_s: Option<u64>,
    json: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        calls: 1000,
        rounds: 5,
        cps: 100,
        hold_s: None,
        json: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .with_context(|| format!("{a} needs a value; {USAGE}"))
        };
        match a.as_str() {
            "--calls" => {
                o.calls = val()?.parse().context("--calls")?;
                if !(1..=4000).contains(&o.calls) {
                    bail!("--calls must be 1..=4000 (the relay's port range holds 4500)");
                }
            }
            "--rounds" => {
                o.rounds = val()?.parse().context("--rounds")?;
                if !(1..=100).contains(&o.rounds) {
                    bail!("--rounds must be 1..=100");
                }
            }
            "--cps" => {
                o.cps = val()?.parse().context("--cps")?;
                if !(1..=1000).contains(&o.cps) {
                    bail!("--cps must be 1..=1000");
                }
            }
            "--hold" => {
                let h: u64 = val()?.parse().context("--hold")?;
                if !(10..=3000).contains(&h) {
                    bail!("--hold must be 10..=3000 s");
                }
                o.hold_s = Some(h);
            }
            "--json" => o.json = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    Ok(o)
}

impl Opts {
    /// Seconds sipp takes to start every call.
    fn ramp_s(&self) -> u64 {
        self.calls.div_ceil(u64::from(self.cps))
    }
    /// Each call's hold: the ramp, a minute to get the daemon to list them all, and 30 s a
    /// round (ten screens, on a loaded machine), unless told.
    fn hold(&self) -> u64 {
        self.hold_s
            .unwrap_or(self.ramp_s() * 2 + 60 + 30 * u64::from(self.rounds))
    }
}

/// One target's numbers over the rounds.
#[derive(Debug, Serialize)]
struct Row {
    screen: &'static str,
    fetch_ms_median: f64,
    fetch_ms_max: f64,
    /// Per size in [`SIZES`]: (median, max).
    draw_ms: Vec<(String, f64, f64)>,
    rows: usize,
    samples: Vec<measure::Sample>,
}

#[derive(Debug, Serialize)]
struct Report {
    command: String,
    kernel: String,
    cpus: usize,
    sipp: String,
    sipd: String,
    calls_asked: u64,
    calls_live: usize,
    rounds: u32,
    sipd_rss_kib: Option<u64>,
    sipd_hwm_kib: Option<u64>,
    loadavg_start: String,
    loadavg_end: String,
    screens: Vec<Row>,
}

/// Runs the benchmark (see the module's documentation).
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    let sipp_version = sipp::check_installed()?;
    let sipd = sipd_path()?;
    let out_dir = tests::bins::workspace_root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let loadavg_start = loadavg();
    // Declared first, dropped last: every process in it is stopped before it goes.
    let ns = Netns::unique("console")?;
    ns.ip(["link", "set", "lo", "up"])?;
    println!("== namespace {}", ns.name());
    // This thread, what it starts (sipd, sipp) and the console's threads live in the
    // namespace from here on; `ip netns del` works from inside it.
    ns.join_current_thread()?;
    procs::raise_nofile(65_536);
    let tmp = TempDir::new("console")?;
    let (mut sipd_proc, totp_secret) = start_sipd(&sipd, &o, tmp.path(), &out_dir)?;
    let url = format!("https://127.0.0.1:{SIPD_MGMT_PORT}");
    let mut src = HttpSource::start(
        Options {
            url: url.clone(),
            insecure: false,
            ca: Some(tmp.path().join("data/mgmt-tls.crt")),
            allow_http: false,
            timeout: Duration::from_secs(30),
        },
        None,
        None,
    );
    measure::login(&mut src, ADMIN, ADMIN_PASSWORD, &totp_now(&totp_secret))?;

    let uas_xml = tmp.path().join("uas.xml");
    let uac_xml = tmp.path().join("uac.xml");
    std::fs::write(&uas_xml, sipp::UAS_XML)?;
    std::fs::write(&uac_xml, sipp::UAC_XML)?;
    let mut uas = Proc::spawn(
        "sipp UAS",
        die_with_parent(&mut sipp::uas_command(&uas_xml, UAS_PORT, SIPP_CPU)),
        &out_dir.join("console-uas.log"),
    )?;
    procs::wait_bound(UAS_PORT, &mut uas, Duration::from_secs(10))?;
    let hold = o.hold();
    let stat_file = tmp.path().join("uac.csv");
    let error_file = tmp.path().join("uac-errors.log");
    let uac_args = sipp::UacArgs {
        scenario: &uac_xml,
        local_port: UAC_PORT,
        target: ([127, 0, 0, 1], SIPD_PORT).into(),
        user: crate::sip::USER,
        password: crate::sip::PASSWORD,
        rate: o.cps,
        calls: o.calls,
        hold_ms: hold * 1000,
        stat_file: &stat_file,
        error_file: &error_file,
        timeout_s: hold + o.ramp_s() + 30,
        cpu: SIPP_CPU,
    };
    println!("== {} calls at {} cps, each held {hold} s", o.calls, o.cps);
    let mut uac = Proc::spawn(
        "sipp UAC",
        die_with_parent(&mut sipp::uac_command(&uac_args)),
        &out_dir.join("console-uac.log"),
    )?;
    let live = wait_calls(&mut src, &o, &mut uac, &mut sipd_proc, &error_file)?;
    let (rss, hwm) = memory(sipd_proc.pid());
    println!(
        "   {live} live calls; sipd VmRSS {} MiB (peak {} MiB)",
        common::opt(rss.map(|k| k as f64 / 1024.0), 1),
        common::opt(hwm.map(|k| k as f64 / 1024.0), 1)
    );

    let mut rows = Vec::new();
    for target in Target::all() {
        let mut samples = Vec::new();
        for _ in 0..o.rounds {
            samples.push(measure::open(&mut src, &url, target)?);
        }
        let fetch: Vec<f64> = samples.iter().map(|s| s.fetch_ms).collect();
        let (fm, fx) = median_max(&fetch);
        let draw_ms = SIZES
            .iter()
            .enumerate()
            .map(|(i, (w, h))| {
                let d: Vec<f64> = samples.iter().map(|s| s.draw_ms[i]).collect();
                let (m, x) = median_max(&d);
                (format!("{w}x{h}"), m, x)
            })
            .collect();
        let row = Row {
            screen: target.name(),
            fetch_ms_median: fm,
            fetch_ms_max: fx,
            draw_ms,
            rows: samples.last().map_or(0, |s| s.rows),
            samples,
        };
        if !o.json {
            println!("   {:<10} fetch {fm:.1} ms (max {fx:.1})", row.screen);
        }
        rows.push(row);
        uac.check_alive()?;
        sipd_proc.check_alive()?;
    }
    let still = measure::live_calls(&mut src)?;
    drop(src);
    drop(uac);
    drop(uas);
    drop(sipd_proc);

    let sipd_version = Command::new(&sipd)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let report = Report {
        command: common::command_line("cargo xtask bench console", args),
        kernel: common::kernel_release(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        sipp: sipp_version,
        sipd: sipd_version,
        calls_asked: o.calls,
        calls_live: live.min(still),
        rounds: o.rounds,
        sipd_rss_kib: rss,
        sipd_hwm_kib: hwm,
        loadavg_start,
        loadavg_end: loadavg(),
        screens: rows,
    };
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(out_dir.join("console.json"), &json)?;
    let md = markdown(&report);
    std::fs::write(out_dir.join("console.md"), &md)?;
    if o.json {
        println!("{json}");
    } else {
        println!("\n{md}");
        println!(
            "wrote {} and console.md",
            out_dir.join("console.json").display()
        );
    }
    if still < live {
        eprintln!("bench: {} calls ended during the measurement", live - still);
    }
    Ok(())
}

/// The built sipd (xtask builds it first; `SBC_BENCH_SIPD_BUILD_FAILED` if that failed).
fn sipd_path() -> anyhow::Result<PathBuf> {
    if std::env::var_os("SBC_BENCH_SIPD_BUILD_FAILED").is_some() {
        bail!("sipd did not build (see cargo's errors above); not running a stale binary");
    }
    tests::bins::find_built("sipd", "-p sipd", "--sipd")
}

/// Makes a started process get SIGKILL if the bench dies without stopping it.
fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

/// `sipd import` of the bench's provisioning, `sipd init` of the admin, then `sipd run`
/// until it says it is ready; the process and the admin's TOTP secret.
fn start_sipd(
    sipd: &Path,
    o: &Opts,
    tmp: &Path,
    out_dir: &Path,
) -> anyhow::Result<(Proc, Vec<u8>)> {
    let cfg = tmp.join("sbc.toml");
    let prov = tmp.join("prov.toml");
    // sipp sends no media: the relay must not time the calls out while they are held.
    let media_timeout = o.hold() + o.ramp_s() + 120;
    std::fs::write(
        &cfg,
        proxies::sipd_config("userspace", &tmp.join("data"), media_timeout),
    )?;
    std::fs::write(&prov, proxies::sipd_provisioning())?;
    let out = Command::new(sipd)
        .arg("-c")
        .arg(&cfg)
        .arg("import")
        .arg(&prov)
        .output()
        .with_context(|| format!("run {}", sipd.display()))?;
    if !out.status.success() {
        bail!(
            "`sipd import` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let log = out_dir.join("console-sipd.log");
    let _ = std::fs::remove_file(&log);
    // Before `run`: the store has one writer.
    let secret = init_admin(sipd, tmp)?;
    let mut cmd = Command::new(sipd);
    cmd.arg("-c").arg(&cfg).arg("run");
    die_with_parent(&mut cmd);
    let p = Proc::spawn_until(
        "sipd",
        &mut cmd,
        &log,
        "sipd ready",
        Duration::from_secs(60),
    )?;
    Ok((p, secret))
}

/// `sipd init` of the admin; the TOTP secret it printed.
fn init_admin(sipd: &Path, tmp: &Path) -> anyhow::Result<Vec<u8>> {
    let pw = tmp.join("admin-pw");
    std::fs::write(&pw, format!("{ADMIN_PASSWORD}\n"))?;
    let out = Command::new(sipd)
        .arg("-c")
        .arg(tmp.join("sbc.toml"))
        .args(["init", "--username", ADMIN, "--password-file"])
        .arg(&pw)
        .stdin(std::process::Stdio::null())
        .output()
        .context("run sipd init")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "sipd init failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let secret = init_secret(&text)
        .with_context(|| format!("no TOTP secret in sipd init's output:\n{text}"))?;
    b32_decode(secret).with_context(|| format!("TOTP secret {secret:?}"))
}

/// Waits until the daemon lists every call, or the count stops growing after sipp has
/// started them all; the count reached.
fn wait_calls(
    src: &mut HttpSource,
    o: &Opts,
    uac: &mut Proc,
    sipd: &mut Proc,
    error_file: &Path,
) -> anyhow::Result<usize> {
    let started = Instant::now();
    let end = started + Duration::from_secs(o.ramp_s() * 3 + 60);
    let mut last = (0usize, Instant::now());
    loop {
        uac.check_alive()?;
        sipd.check_alive()?;
        let n = measure::live_calls(src)?;
        if n as u64 >= o.calls {
            return Ok(n);
        }
        if n != last.0 {
            last = (n, Instant::now());
        }
        let ramped = started.elapsed().as_secs() > o.ramp_s() + 5;
        if (ramped && last.1.elapsed() > Duration::from_secs(15)) || Instant::now() >= end {
            let errors = std::fs::read_to_string(error_file)
                .map(|s| sipp::summarize_errors(&s, 4))
                .unwrap_or_default();
            eprintln!(
                "bench: only {n} of {} calls are up after {:.0} s; sipp's failures: {errors:?}",
                o.calls,
                started.elapsed().as_secs_f64()
            );
            if n == 0 {
                bail!("no call came up");
            }
            return Ok(n);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// sipd's VmRSS and VmHWM, KiB.
fn memory(pid: u32) -> (Option<u64>, Option<u64>) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn markdown(r: &Report) -> String {
    let mut s = format!(
        "# Console screens against a daemon with {} live calls\n\n\
         `{}` · kernel {} · {} CPUs · {} · load average {} → {}\n\n\
         sipd with {} live calls ({} asked): VmRSS {} MiB, peak {} MiB.\n\n\
         Fetch: from the key to every reply applied (median / max of {} rounds); draw: one frame \
         into a ratatui TestBackend.\n\n\
         | screen | fetch ms median | fetch ms max |",
        r.calls_live,
        r.command,
        r.kernel,
        r.cpus,
        r.sipp,
        r.loadavg_start,
        r.loadavg_end,
        r.calls_live,
        r.calls_asked,
        common::opt(r.sipd_rss_kib.map(|k| k as f64 / 1024.0), 1),
        common::opt(r.sipd_hwm_kib.map(|k| k as f64 / 1024.0), 1),
        r.rounds,
    );
    for (w, h) in SIZES {
        s += &format!(" draw {w}x{h} ms median | max |");
    }
    s += " rows |\n|---|---:|---:|";
    for _ in SIZES {
        s += "---:|---:|";
    }
    s += "---:|\n";
    for row in &r.screens {
        s += &format!(
            "| {} | {:.1} | {:.1} |",
            row.screen, row.fetch_ms_median, row.fetch_ms_max
        );
        for (_, m, x) in &row.draw_ms {
            s += &format!(" {m:.2} | {x:.2} |");
        }
        s += &format!(" {} |\n", row.rows);
    }
    s
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn args_and_defaults() {
        let o = parse(&[]).unwrap();
        assert_eq!((o.calls, o.rounds, o.cps, o.json), (1000, 5, 100, false));
        // 10 s of ramp: twice that, a minute, 30 s a round.
        assert_eq!(o.hold(), 20 + 60 + 150);
        let o = parse(&["--calls".into(), "50".into(), "--json".into()]).unwrap();
        assert_eq!((o.calls, o.json), (50, true));
        assert!(parse(&["--calls".into(), "0".into()]).is_err());
        assert!(parse(&["--rounds".into(), "x".into()]).is_err());
        assert!(parse(&["--bogus".into()]).is_err());
    }
}
