//! Measuring one system: the search over rates, one step (a sipp UAC run at a rate) and its
//! verdict, and settling the proxy between steps.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::procs::{self, Proc, TempDir};
use super::proxies::{Proxy, start_kamailio, start_sipd};
use super::report::{Step, SystemResult};
use super::sipp;
use super::{
    MAX_FAILED, MIN_GENERATED, Opts, PASSWORD, SIPP_CPU, System, UAC_PORT, UAS_PORT, USER,
};
use crate::common::opt;

pub(super) fn bench_system(
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
    let run = run_uac(&args, &uac_log, proxy)?;

    let stats = std::fs::read_to_string(&stat_file)
        .ok()
        .and_then(|s| sipp::parse_stats(&s, calls).ok());
    let errors = std::fs::read_to_string(&error_file)
        .map(|s| sipp::summarize_errors(&s, 6))
        .unwrap_or_default();
    let wall = run.wall;
    let proxy_cpu_s = run.cpu.1 - run.cpu.0;
    let cpu_busy_pct: Vec<f64> = run
        .busy
        .0
        .iter()
        .zip(&run.busy.1)
        .map(|(a, b)| 100.0 * (b - a) / wall)
        .collect();
    let (successful, failed, generated_cps, verdict, passed, st) =
        verdict(stats.as_ref(), run.status, calls, rate, timeout_s, &uac_log);
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
        media_cpu_s: run.media_cpu,
        cpu_ms_per_call: proxy_cpu_s * 1000.0 / calls as f64,
        proxy_cpu_pct: 100.0 * proxy_cpu_s / wall,
        cpu_busy_pct,
    };
    print_step(&step, o);
    Ok(step)
}

/// A sipp UAC run and the CPU the proxy and the machine spent over it.
struct UacRun {
    /// sipp's exit, `None` if it outlived its deadline (then it is killed).
    status: Option<std::process::ExitStatus>,
    wall: f64,
    /// The proxy's processes' CPU seconds (before, after).
    cpu: (f64, f64),
    /// rtpengine's share of it over the run, if the proxy has one.
    media_cpu: Option<f64>,
    /// Busy seconds of each CPU (before, after).
    busy: (Vec<f64>, Vec<f64>),
}

/// Runs the sipp UAC to its end (or `timeout_s` + 15 s), reading the proxy's CPU around it.
fn run_uac(args: &sipp::UacArgs, uac_log: &Path, proxy: &mut Proxy) -> anyhow::Result<UacRun> {
    let (main_pids, media_pids) = proxy.pids();
    let pids: Vec<u32> = main_pids.iter().chain(&media_pids).copied().collect();
    let busy0 = procs::per_cpu_busy();
    let (cpu0, media0) = (procs::cpu_secs(&pids), procs::cpu_secs(&media_pids));
    let started = Instant::now();
    let mut uac = Proc::spawn("sipp UAC", &mut sipp::uac_command(args), uac_log)?;
    let status = loop {
        if let Some(s) = uac.try_wait()? {
            break Some(s);
        }
        if started.elapsed() > Duration::from_secs(args.timeout_s + 15) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let wall = started.elapsed().as_secs_f64();
    let (cpu1, media1) = (procs::cpu_secs(&pids), procs::cpu_secs(&media_pids));
    let busy1 = procs::per_cpu_busy();
    drop(uac);
    Ok(UacRun {
        status,
        wall,
        cpu: (cpu0, cpu1),
        media_cpu: (!media_pids.is_empty()).then_some(media1 - media0),
        busy: (busy0, busy1),
    })
}

type Verdict = (u64, u64, Option<f64>, String, bool, sipp::UacStats);

/// (successful, failed, generated cps, verdict, passed, sipp's statistics) of a step.
fn verdict(
    stats: Option<&sipp::UacStats>,
    status: Option<std::process::ExitStatus>,
    calls: u64,
    rate: u32,
    timeout_s: u64,
    uac_log: &Path,
) -> Verdict {
    match (stats, status) {
        (None, _) => {
            let why = format!(
                "sipp UAC left no statistics (exit {status:?}); its output:\n{}",
                procs::tail(uac_log, 10)
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
    }
}

fn print_step(step: &Step, o: &Opts) {
    println!(
        "   {:>5} cps × {:>3.0} s: {}/{} ok, {} failed ({:.3}%), generated {} cps, setup {} ms, \
         retrans {}, proxy CPU {:.2} s = {:.3} ms/call{}, CPUs busy {:?}% → {}",
        step.rate,
        o.duration.as_secs_f64(),
        step.successful,
        step.calls,
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

#[cfg(test)]
mod unit {
    use super::*;

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
}
