//! The workspace's own binaries (`sipd`, `relayd`, `sbcctl`) for tests and benchmarks to run.
//!
//! Tests build them once per test process ([`cargo_bin`]), so a stale binary from an earlier
//! build is never what gets tested; the benchmarks find the ones `cargo xtask bench` built
//! ([`find_built`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The workspace root (this crate lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests has a parent directory")
        .to_path_buf()
}

/// `target/<profile>` of the running executable: its own directory, or the parent of `deps/`
/// for a test binary (`target/<profile>/deps/<test>`).
fn profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    Some(if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent()?.to_path_buf()
    } else {
        dir.to_path_buf()
    })
}

/// Builds binaries of this workspace, each `(package, bin)`, with the running test's profile
/// into its target directory, once per process; returns their paths in the same order.
///
/// Panics if cargo fails: the test cannot run without them.
pub fn cargo_bins(bins: &[(&str, &str)]) -> Vec<PathBuf> {
    static BUILT: Mutex<BTreeMap<String, Vec<PathBuf>>> = Mutex::new(BTreeMap::new());
    let key = format!("{bins:?}");
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(paths) = built.get(&key) {
        return paths.clone();
    }
    let profile_dir = profile_dir().expect("test binary lives in target/<profile>/deps");
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.args(["build", "-q"]);
    for (package, bin) in bins {
        cmd.args(["-p", package, "--bin", bin]);
    }
    if release {
        cmd.arg("--release");
    }
    cmd.env(
        "CARGO_TARGET_DIR",
        profile_dir.parent().expect("target dir"),
    );
    let names: Vec<&str> = bins.iter().map(|(_, b)| *b).collect();
    let names = names.join(" and ");
    let st = cmd
        .status()
        .unwrap_or_else(|e| panic!("run cargo build for {names}: {e}"));
    assert!(st.success(), "building {names} failed");
    let paths: Vec<PathBuf> = bins.iter().map(|(_, b)| profile_dir.join(b)).collect();
    built.insert(key, paths.clone());
    paths
}

/// One binary of this workspace, built as [`cargo_bins`] does.
pub fn cargo_bin(package: &str, bin: &str) -> PathBuf {
    cargo_bins(&[(package, bin)]).remove(0)
}

/// A workspace binary already built: beside the running executable (`cargo xtask bench` builds
/// it with the same profile and target dir), else in the target dir's release or debug
/// profile. `package` is what `cargo build --release` needs to build it; `flag` the option that
/// names it instead (both for the error).
pub fn find_built(name: &str, package: &str, flag: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = profile_dir().map(|d| d.join(name)).filter(|p| p.is_file()) {
        return Ok(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
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
