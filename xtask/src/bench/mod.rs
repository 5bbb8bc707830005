//! `cargo xtask bench <name> [args...]`: runs the `bench` crate's binary, which writes its
//! results under `target/bench/`. (`xdp-log` builds the two variants of the XDP object it
//! compares itself.)
//!
//! The benchmarks live in their own crate because they need relay-user (the ng client, the XDP
//! object), and xtask must build on a fresh machine before `cargo xtask setup` has installed the
//! eBPF toolchain. So xtask only builds and starts them: the program under test (`relay`:
//! `cargo build --release -p relay-user --bin relayd`, also for `kamailio`; `sip`, `console`,
//! `flood`, `cluster` and `soak` (`cargo xtask soak`): `-p sipd --bin sipd`), then
//! `cargo run --release -p bench -- <name> [args...]`, passing the arguments through and
//! exiting with the benchmark's exit code. `all` runs each benchmark but `flood` with its
//! defaults.
//! If sipd does not build, `sip` still runs (Kamailio's half) and reports sipd as failed
//! rather than measuring a stale binary (`SBC_BENCH_SIPD_BUILD_FAILED`). Cargo's
//! environment (`CARGO_TARGET_DIR` among it) is inherited, so the bench finds the `relayd` built
//! next to it.

use std::process::Command;

use crate::util;

/// Names `cargo xtask bench` accepts (the `bench` binary's, and `all`).
pub const NAMES: &[&str] = &[
    "relay", "sip", "kamailio", "console", "xdp", "xdp-log", "flood", "cluster", "all",
];

/// Run through `cargo xtask soak`, never by `bench all` (it takes as long as it is told).
const SOAK: &str = "soak";

/// Builds what the benchmark measures, runs it; `Ok(code)` is the benchmark's exit code
/// (for `all`, the first non-zero one).
pub fn run(name: &str, args: &[String]) -> anyhow::Result<i32> {
    if !NAMES.contains(&name) && name != SOAK {
        anyhow::bail!("unknown benchmark {name:?}; known: {}", NAMES.join(", "));
    }
    if name == "all" {
        if !args.is_empty() {
            anyhow::bail!("`bench all` takes no arguments; run the benchmarks one by one");
        }
        let mut code = 0;
        // The flood matrix takes most of an hour: run on its own, like the soak.
        for n in NAMES.iter().filter(|n| !["all", "flood"].contains(*n)) {
            let c = run(n, &[])?;
            if code == 0 {
                code = c;
            }
        }
        return Ok(code);
    }
    let mut sipd_failed = false;
    if name == "relay" || name == "kamailio" {
        let mut build = util::cargo();
        build.args(["build", "--release", "-p", "relay-user", "--bin", "relayd"]);
        util::run(&mut build)?;
    } else if ["sip", "console", "flood", "cluster", SOAK].contains(&name) {
        let mut build = util::cargo();
        build.args(["build", "--release", "-p", "sipd", "--bin", "sipd"]);
        if let Err(e) = util::run(&mut build) {
            eprintln!("warning: {e:#}; the sipd half of the benchmark will fail");
            sipd_failed = true;
        }
    }
    let mut cmd = bench_command(name, args);
    if sipd_failed {
        cmd.env("SBC_BENCH_SIPD_BUILD_FAILED", "1");
    }
    println!("$ {}", util::show(&cmd));
    let status = cmd
        .status()
        .map_err(|e| anyhow::anyhow!("cannot run cargo: {e}"))?;
    // A signal leaves no code: report it like a shell would.
    Ok(status.code().unwrap_or(128))
}

/// `cargo run --release -p bench -- <name> [args...]`, in the workspace root.
fn bench_command(name: &str, args: &[String]) -> Command {
    let mut cmd = util::cargo();
    cmd.args([
        "run",
        "--release",
        "-p",
        "bench",
        "--bin",
        "bench",
        "--",
        name,
    ])
    .args(args);
    cmd
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn passes_args_through() {
        let cmd = bench_command("relay", &["--rates".into(), "5000".into(), "--ipv6".into()]);
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "run",
                "--release",
                "-p",
                "bench",
                "--bin",
                "bench",
                "--",
                "relay",
                "--rates",
                "5000",
                "--ipv6"
            ]
        );
        assert_eq!(cmd.get_current_dir(), Some(util::root().as_path()));
    }

    #[test]
    fn unknown_name_fails_before_building() {
        let e = run("nope", &[]).unwrap_err();
        assert!(
            e.to_string().contains(
                "known: relay, sip, kamailio, console, xdp, xdp-log, flood, cluster, all"
            ),
            "{e}"
        );
    }
}
