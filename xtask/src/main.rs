//! Project tasks, run as `cargo xtask <command>` (alias in .cargo/config.toml).

mod bench;
mod build;
mod fuzz;
mod netns;
mod run;
mod setup;
mod test;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Project tasks for the XDP SBC")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what this machine lacks (nightly, rust-src, apt packages, bpf-linker); idempotent
    Setup,
    /// Build the workspace (the XDP object is built by relay-user's build script)
    Build {
        /// Build with the release profile
        #[arg(long)]
        release: bool,
    },
    /// Setup, then run the appliance on its defaults until Ctrl-C
    Run {
        /// Build and run with the release profile
        #[arg(long)]
        release: bool,
        /// Passed to relayd after its defaults; a flag given here replaces its default
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Setup, then fmt check, clippy (host crates and the eBPF crate) and all tests
    Test,
    /// Run a benchmark (results go to target/bench/)
    Bench {
        /// Which benchmark: relay, sip, kamailio, console, xdp, xdp-log, flood, cluster, all
        name: String,
        /// Passed to the benchmark
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Soak: sipd under steady calls with media (XDP) for N minutes; its memory, fds, BPF map
    /// entries and bounded tables must come back to their idle level (target/bench/soak.md)
    Soak {
        /// How long calls are placed
        #[arg(long)]
        minutes: f64,
        /// Calls started per second
        #[arg(long, default_value_t = 20)]
        cps: u32,
        /// Seconds each call is held
        #[arg(long, default_value_t = 10.0)]
        hold: f64,
        /// More options for the soak (--interval, --media-timeout, --dataplane, --sipd)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the cargo-fuzz targets (fuzz/, nightly) and run one or all, from the seed corpus
    Fuzz {
        /// One of: sip_parse, tcp_framing, digest_authorization, call_core, sdp_rewrite,
        /// ng_decode, api_json (default: all, one after the other)
        target: Option<String>,
        /// Seconds per target
        #[arg(long, default_value_t = 300)]
        secs: u64,
    },
    /// The tests' caller—relay—callee namespaces, kept standing for experiments
    Netns {
        #[command(subcommand)]
        cmd: NetnsCmd,
    },
}

#[derive(Subcommand)]
enum NetnsCmd {
    /// Create sbc-caller, sbc-relay, sbc-callee (10.200.{1,2}.0/24, fd00:c8:{1,2}::/64)
    Up {
        /// Turn GRO on for every veth (gives veths NAPI, for XDP_REDIRECT into them)
        #[arg(long)]
        gro: bool,
        /// Do not forward between the relay's links
        #[arg(long)]
        no_forwarding: bool,
    },
    /// Delete them (and namespaces left behind by killed test runs)
    Down,
    /// Show whether they exist
    Status,
}

fn main() -> ExitCode {
    match dispatch(Cli::parse().cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Setup => setup::setup().finish(),
        Cmd::Build { release } => {
            build::cargo_build(if release { &["--release"] } else { &[] }).map(|_| ())
        }
        Cmd::Run { release, args } => {
            // What run needs is the build toolchain; a missing test tool should not stop it.
            if setup::setup().finish().is_err() {
                eprintln!("run: continuing; the build says so if what is missing matters here");
            }
            run::run(&args, release)
        }
        Cmd::Test => test::test(),
        Cmd::Bench { name, args } => {
            let code = bench::run(&name, &args)?;
            if code != 0 {
                // The benchmark printed its own error; pass its exit code on.
                std::process::exit(code);
            }
            Ok(())
        }
        Cmd::Soak {
            minutes,
            cps,
            hold,
            args,
        } => {
            let mut all = vec![
                "--minutes".to_string(),
                minutes.to_string(),
                "--cps".into(),
                cps.to_string(),
                "--hold".into(),
                hold.to_string(),
            ];
            all.extend(args);
            let code = bench::run("soak", &all)?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Cmd::Fuzz { target, secs } => fuzz::fuzz(target.as_deref(), secs),
        Cmd::Netns { cmd } => match cmd {
            NetnsCmd::Up { gro, no_forwarding } => netns::up(gro, no_forwarding),
            NetnsCmd::Down => netns::down(),
            NetnsCmd::Status => netns::status(),
        },
    }
}
