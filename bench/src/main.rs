//! `bench <name> [args...]`, normally run as `cargo xtask bench <name> [args...]`.
//! Benchmarks write their results under `target/bench/` in the workspace root.

mod relay;
mod sip;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Names `bench` accepts.
const NAMES: &[&str] = &["relay", "sip"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((name, rest)) = args.split_first() else {
        eprintln!("usage: bench <{}> [args...]", NAMES.join("|"));
        return ExitCode::from(2);
    };
    let r = match name.as_str() {
        "relay" => relay::run(rest),
        "sip" => sip::run(rest),
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

/// The workspace root (this crate lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench has a parent directory")
        .to_path_buf()
}

/// A workspace binary the bench runs: beside this one (`cargo xtask bench` builds it with the
/// same profile and target dir), else in the target dir's release or debug profile.
/// `package` is what `cargo build --release` needs to build it; `flag` the option that names it.
pub fn built_binary(name: &str, package: &str, flag: &str) -> anyhow::Result<std::path::PathBuf> {
    if let Some(p) = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.join(name)))
        .filter(|p| p.is_file())
    {
        return Ok(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    for profile in ["release", "debug"] {
        let p = target.join(profile).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    anyhow::bail!(
        "{name} not built (looked in {}/{{release,debug}}); `cargo build --release {package}` or pass {flag}",
        target.display()
    )
}
