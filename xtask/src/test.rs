//! `cargo xtask test`: setup, then formatting, lints (host crates and the eBPF crate), the
//! whole test suite and a short run of every fuzz target. Every step runs even when an earlier
//! one fails; the summary says which failed and the exit status is non-zero if any did.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::{fuzz, setup, util};

struct Step {
    name: &'static str,
    ok: bool,
    took: Duration,
}

/// Sums of cargo test's `test result:` lines.
#[derive(Default, Debug, PartialEq)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

pub fn test() -> anyhow::Result<()> {
    let start = Instant::now();
    let mut steps = Vec::new();

    let t = Instant::now();
    let ok = setup::setup().finish().is_ok();
    steps.push(Step {
        name: "setup",
        ok,
        took: t.elapsed(),
    });

    let ci = std::env::var("CI").unwrap_or_default();
    println!(
        "test: CI={ci:?} ({}), running as {}",
        if ::tests::in_ci() {
            "privileged tests fail when they cannot run"
        } else {
            "privileged tests skip when they cannot run"
        },
        if util::is_root() { "root" } else { "non-root" }
    );

    steps.extend(checks());

    let mut test = util::cargo();
    test.args([
        "test",
        "--workspace",
        "--exclude",
        "relay-ebpf",
        "--no-fail-fast",
    ]);
    let t = Instant::now();
    let (ok, counts) = match run_counting(&mut test) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("test: {e:#}");
            (false, Counts::default())
        }
    };
    steps.push(Step {
        name: "cargo test",
        ok,
        took: t.elapsed(),
    });

    steps.push(fuzz_smoke());

    println!();
    println!("test summary ({:.0} s):", start.elapsed().as_secs_f64());
    for s in &steps {
        println!(
            "  {:4}  {:28} {:>6.1} s",
            if s.ok { "ok" } else { "FAIL" },
            s.name,
            s.took.as_secs_f64()
        );
    }
    let failed: Vec<&str> = steps.iter().filter(|s| !s.ok).map(|s| s.name).collect();
    // The closing line is the tests' own count; steps that failed are named above it.
    if !failed.is_empty() {
        println!("failed steps: {}", failed.join(", "));
    }
    let skipped = if counts.ignored > 0 {
        format!(", {} skipped", counts.ignored)
    } else {
        String::new()
    };
    println!(
        "tests: {} passed, {} failed{skipped}",
        counts.passed, counts.failed
    );
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{} step(s) failed: {}", failed.len(), failed.join(", "))
    }
}

/// Formatting, lints (host crates and the eBPF crate), the dependency tree and the docs: every
/// step before the tests.
fn checks() -> Vec<Step> {
    let mut steps = Vec::new();
    let mut fmt = util::cargo();
    fmt.args(["fmt", "--all", "--check"]);
    steps.push(step("fmt", &mut fmt));

    // relay-ebpf only builds for bpfel; its own step below lints it for that target.
    let mut clippy = util::cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--exclude",
        "relay-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    steps.push(step("clippy", &mut clippy));

    // Lints the eBPF crate for its real target; with aya-ebpf 0.2 (the aya 0.14 family) this
    // type-checks against core built from rust-src and needs no bpf-linker (nothing links).
    let mut ebpf = util::cargo();
    ebpf.current_dir(util::root().join("relay-ebpf")).args([
        "+nightly",
        "clippy",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "-p",
        "relay-ebpf",
        "--",
        "-D",
        "warnings",
    ]);
    steps.push(step("clippy relay-ebpf (bpfel)", &mut ebpf));

    // The fuzz targets are their own workspace (nightly, cargo-fuzz): no workspace lint sees
    // them, so an API change would otherwise surface only when the fuzz smoke builds them.
    let mut fuzz_fmt = util::cargo();
    fuzz_fmt
        .current_dir(util::root().join("fuzz"))
        .args(["fmt", "--all", "--check"]);
    steps.push(step("fmt fuzz", &mut fuzz_fmt));
    let mut fuzz_clippy = util::cargo();
    fuzz_clippy
        .current_dir(util::root().join("fuzz"))
        .env("AYA_BUILD_SKIP", "1")
        .args(["+nightly", "clippy", "--bins", "--", "-D", "warnings"]);
    steps.push(step("clippy fuzz (nightly)", &mut fuzz_clippy));

    // The dependency tree: licences, bans, sources (deny.toml). Advisories need the advisory
    // database from the network, which CI does not reach: checked only against a local copy.
    let mut deny = util::cargo();
    deny.args([
        "deny",
        "--all-features",
        "check",
        "licenses",
        "bans",
        "sources",
    ]);
    steps.push(step("cargo deny", &mut deny));
    if advisory_db_present() {
        let mut adv = util::cargo();
        // `--offline`: cargo-deny's global flag (0.20 has no `check --disable-fetch`).
        adv.args(["deny", "--offline", "check", "advisories"]);
        steps.push(step("cargo deny advisories", &mut adv));
    } else {
        println!(
            "\n==> cargo deny advisories: skipped, no local advisory database \
             (`cargo deny fetch` where GitHub is reachable, then `cargo xtask test`)"
        );
    }

    // Docs build without warnings (broken intra-doc links, bad code blocks).
    let mut doc = util::cargo();
    doc.env("RUSTDOCFLAGS", "-D warnings").args([
        "doc",
        "--no-deps",
        "--workspace",
        "--exclude",
        "relay-ebpf",
    ]);
    steps.push(step("cargo doc", &mut doc));
    steps
}

/// Every fuzz target for [`fuzz::SMOKE_SECS`] from its seeds: a seed that crashes, or a crash
/// found in seconds, fails the step (about two minutes plus the nightly build).
fn fuzz_smoke() -> Step {
    println!("\n==> fuzz smoke ({} s per target)", fuzz::SMOKE_SECS);
    let t = Instant::now();
    let ok = match fuzz::build() {
        Ok(()) => {
            let mut ok = true;
            for target in fuzz::TARGETS {
                match fuzz::run_one(target, fuzz::SMOKE_SECS) {
                    Ok(s) => println!(
                        "  ok    {target:22} {} execs, cov {}, ft {}",
                        s.execs, s.cov, s.ft
                    ),
                    Err(e) => {
                        eprintln!("  FAIL  {e:#}");
                        ok = false;
                    }
                }
            }
            ok
        }
        Err(e) => {
            eprintln!("fuzz smoke: {e:#}");
            false
        }
    };
    Step {
        name: "fuzz smoke",
        ok,
        took: t.elapsed(),
    }
}

/// cargo-deny keeps its advisory database under `$CARGO_HOME/advisory-dbs`.
fn advisory_db_present() -> bool {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")));
    // A database is a directory (a git checkout) in there; a failed fetch leaves only its
    // `db.lock` behind.
    home.is_some_and(|h| {
        std::fs::read_dir(h.join("advisory-dbs")).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.path().is_dir() && e.path().join(".git").exists())
        })
    })
}

fn step(name: &'static str, cmd: &mut Command) -> Step {
    println!("\n==> {name}");
    let t = Instant::now();
    let ok = match util::run(cmd) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            false
        }
    };
    Step {
        name,
        ok,
        took: t.elapsed(),
    }
}

/// Runs cargo test, echoing its stdout line by line and adding up its `test result:` lines.
fn run_counting(cmd: &mut Command) -> anyhow::Result<(bool, Counts)> {
    println!("\n==> cargo test\n$ {}", util::show(cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start cargo test")?;
    let mut counts = Counts::default();
    let stdout = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(c) = parse_result(&line) {
            counts.passed += c.passed;
            counts.failed += c.failed;
            counts.ignored += c.ignored;
        }
    }
    let status = child.wait()?;
    Ok((status.success(), counts))
}

/// `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ...`
fn parse_result(line: &str) -> Option<Counts> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let mut c = Counts::default();
    for part in rest.split(['.', ';']) {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match what {
            "passed" => c.passed = n,
            "failed" => c.failed = n,
            "ignored" => c.ignored = n,
            _ => {}
        }
    }
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cargo_test_result_lines() {
        let c = parse_result(
            "test result: FAILED. 2 passed; 1 failed; 3 ignored; 0 measured; 0 filtered out; \
             finished in 0.21s",
        )
        .unwrap();
        assert_eq!(
            c,
            Counts {
                passed: 2,
                failed: 1,
                ignored: 3
            }
        );
        assert!(parse_result("running 3 tests").is_none());
    }
}
