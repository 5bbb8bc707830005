//! `cargo xtask fuzz [TARGET] [--secs N]`: builds the cargo-fuzz targets in `fuzz/` (their own
//! workspace, on nightly) and runs one or all of them for N seconds each, starting from the
//! seed corpus in `fuzz/corpus/<target>/`. What libFuzzer finds new goes to
//! `fuzz/target/corpus/<target>/` (never into the repository's seeds); a crash is kept in
//! `fuzz/artifacts/<target>/` and fails the run. `cargo xtask test` runs each briefly.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};

use crate::util;

/// Every target in `fuzz/Cargo.toml`, in the order `cargo xtask fuzz` runs them.
pub const TARGETS: &[&str] = &[
    "sip_parse",
    "tcp_framing",
    "digest_authorization",
    "call_core",
    "sdp_rewrite",
    "ng_decode",
    "api_json",
];

/// How long `cargo xtask test` runs each target.
pub const SMOKE_SECS: u64 = 15;

/// What one run found, from libFuzzer's final statistics.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stats {
    pub execs: u64,
    pub execs_per_sec: u64,
    /// Edges covered (`cov:`) and features (`ft:`) at the end.
    pub cov: u64,
    pub ft: u64,
    pub new_units: u64,
    pub peak_rss_mb: u64,
}

fn dir() -> PathBuf {
    util::root().join("fuzz")
}

/// Seeds kept elsewhere in the repository that a target also starts from: the RFC 4475 and
/// RFC 5118 torture messages (sipd-core's conformance fixtures) for the targets that read
/// whole SIP messages. Read-only: libFuzzer writes only to the first corpus directory.
fn extra_seeds(target: &str) -> Vec<PathBuf> {
    match target {
        "sip_parse" | "call_core" | "tcp_framing" => ["rfc4475", "rfc5118"]
            .iter()
            .map(|r| util::root().join("sipd/core/src/sip/torture").join(r))
            .collect(),
        _ => Vec::new(),
    }
}

/// `cargo +nightly fuzz <sub>` in `fuzz/`. No sanitizer: the code under test is safe Rust, and
/// without ASan the targets build faster and run several times more inputs per second; debug
/// assertions (overflow checks) stay on. relay-user's eBPF object is not needed here.
fn cargo_fuzz(sub: &str) -> Command {
    let mut cmd = util::cargo();
    cmd.current_dir(dir()).env("AYA_BUILD_SKIP", "1").args([
        "+nightly",
        "fuzz",
        sub,
        "--sanitizer",
        "none",
    ]);
    cmd
}

/// Builds every target.
pub fn build() -> anyhow::Result<()> {
    util::run(&mut cargo_fuzz("build"))
}

/// Runs `target` for `secs` seconds; Err when it crashed (the input is in fuzz/artifacts/).
pub fn run_one(target: &str, secs: u64) -> anyhow::Result<Stats> {
    let work = dir().join("target/corpus").join(target);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let seeds = dir().join("corpus").join(target);
    let log_path = dir().join("target").join(format!("{target}.log"));
    let mut cmd = cargo_fuzz("run");
    cmd.arg(target)
        .arg(&work)
        .arg(&seeds)
        .args(extra_seeds(target))
        .arg("--")
        .arg(format!("-max_total_time={secs}"))
        // A message that takes seconds is a finding too (a quadratic parser).
        .arg("-timeout=10")
        .arg("-print_final_stats=1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    println!("$ {}  (log: {})", util::show(&cmd), log_path.display());
    let mut child = cmd.spawn().context("cannot start cargo fuzz")?;
    let mut log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut stats = Stats::default();
    let mut tail: Vec<String> = Vec::new();
    for line in BufReader::new(child.stderr.take().expect("piped stderr")).lines() {
        let line = line?;
        writeln!(log, "{line}")?;
        read_line(&line, &mut stats);
        tail.push(line);
        if tail.len() > 40 {
            tail.remove(0);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        for l in &tail {
            eprintln!("  | {l}");
        }
        bail!("{target}: fuzzing failed ({status}); input kept in fuzz/artifacts/{target}/");
    }
    Ok(stats)
}

/// Folds one line of libFuzzer's output into `s`.
fn read_line(line: &str, s: &mut Stats) {
    let num = |v: &str| v.trim().parse::<u64>().ok();
    if let Some(rest) = line.strip_prefix("stat::") {
        let Some((k, v)) = rest.split_once(':') else {
            return;
        };
        let Some(v) = num(v) else { return };
        match k {
            "number_of_executed_units" => s.execs = v,
            "average_exec_per_sec" => s.execs_per_sec = v,
            "new_units_added" => s.new_units = v,
            "peak_rss_mb" => s.peak_rss_mb = v,
            _ => {}
        }
        return;
    }
    // `#12345  NEW    cov: 812 ft: 2301 corp: 90/12Kb ...`: the last one seen is the final.
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        match w {
            "cov:" => s.cov = words.next().and_then(num).unwrap_or(s.cov),
            "ft:" => s.ft = words.next().and_then(num).unwrap_or(s.ft),
            _ => {}
        }
    }
}

/// `cargo xtask fuzz`: builds, then runs `target` (or every target) for `secs` each; prints a
/// table and fails if any target crashed.
pub fn fuzz(target: Option<&str>, secs: u64) -> anyhow::Result<()> {
    let targets: Vec<&str> = match target {
        Some(t) if TARGETS.contains(&t) => vec![t],
        Some(t) => bail!("unknown fuzz target {t:?} (one of: {})", TARGETS.join(", ")),
        None => TARGETS.to_vec(),
    };
    build()?;
    let mut failed = Vec::new();
    let mut rows = Vec::new();
    for t in &targets {
        let start = Instant::now();
        match run_one(t, secs) {
            Ok(s) => rows.push((*t, s, start.elapsed().as_secs())),
            Err(e) => {
                eprintln!("{e:#}");
                failed.push(*t);
            }
        }
    }
    println!(
        "\n{:22} {:>6} {:>12} {:>8} {:>7} {:>7} {:>6} {:>7}",
        "target", "secs", "execs", "exec/s", "cov", "ft", "new", "rss MB"
    );
    for (t, s, took) in &rows {
        println!(
            "{t:22} {took:>6} {:>12} {:>8} {:>7} {:>7} {:>6} {:>7}",
            s.execs, s.execs_per_sec, s.cov, s.ft, s.new_units, s.peak_rss_mb
        );
    }
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("crashed: {}", failed.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_statistics() {
        let mut s = Stats::default();
        for l in [
            "#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb",
            "#4096\tpulse  cov: 812 ft: 2301 corp: 90/12Kb lim: 4 exec/s: 2048 rss: 41Mb",
            "stat::number_of_executed_units: 123456",
            "stat::average_exec_per_sec:     8230",
            "stat::new_units_added:          77",
            "stat::peak_rss_mb:              52",
        ] {
            read_line(l, &mut s);
        }
        assert_eq!(
            s,
            Stats {
                execs: 123_456,
                execs_per_sec: 8230,
                cov: 812,
                ft: 2301,
                new_units: 77,
                peak_rss_mb: 52
            }
        );
    }

    #[test]
    fn every_target_has_seeds_and_a_source() {
        for t in TARGETS {
            let seeds = dir().join("corpus").join(t);
            let n = std::fs::read_dir(&seeds).map_or(0, |d| d.count());
            assert!(n > 0, "no seeds in {}", seeds.display());
            for extra in extra_seeds(t) {
                assert!(extra.is_dir(), "{t}: no seed directory {}", extra.display());
            }
            assert!(
                dir().join("fuzz_targets").join(format!("{t}.rs")).is_file(),
                "no source for {t}"
            );
        }
    }
}
