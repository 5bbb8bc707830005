//! `bench <name> [args...]`, normally run as `cargo xtask bench <name> [args...]`.
//! Benchmarks write their results under `target/bench/` in the workspace root.

mod cluster;
mod common;
mod console;
mod flood;
mod frames;
mod kamailio;
mod relay;
mod sip;
mod soak;
mod xdp;
mod xdp_log;

// The scenarios' harness (a sipd in carrier — relay — vendor namespaces), shared with the
// cluster tests' harness `bench cluster` includes.
#[path = "../../tests/tests/sbc/mod.rs"]
mod sbc;

use std::process::ExitCode;

/// Names `bench` accepts.
const NAMES: &[&str] = &[
    "relay", "sip", "kamailio", "console", "xdp", "xdp-log", "soak", "flood", "cluster",
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((name, rest)) = args.split_first() else {
        eprintln!("usage: bench <{}> [args...]", NAMES.join("|"));
        return ExitCode::from(2);
    };
    let r = match name.as_str() {
        "relay" => relay::run(rest),
        "sip" => sip::run(rest),
        "kamailio" => kamailio::run(rest),
        "console" => console::run(rest),
        "xdp" => xdp::run(rest),
        "xdp-log" => xdp_log::run_bench(rest),
        "soak" => soak::run(rest),
        "flood" => flood::run(rest),
        "cluster" => cluster::run(rest),
        other => Err(anyhow::anyhow!(
            "unknown benchmark {other:?}; known: {}",
            NAMES.join(", ")
        )),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
