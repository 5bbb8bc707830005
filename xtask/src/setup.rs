//! `cargo xtask setup`: installs what a fresh Debian 12 machine (root, stable Rust via rustup)
//! lacks to build, run and test the project. Idempotent: on a ready machine it only checks.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::util::{self, output, run, which};

/// Debian packages: LLVM for bpf-linker, SIP/RTP peers (sipp, the baresip softphone),
/// the scanners the attack tests run (sipvicious: svmap, svwar, svcrack) and capture for
/// the tests, BPF and network tools for the netns harness, the reference rtpengine +
/// Kamailio, tmux (the console's end-to-end test drives `sbc-tui` in a tmux pane), sngrep
/// (the HEP capture test sends it a call through its `-L` listener), and
/// `systemd-analyze` (package systemd; it works with no systemd running) to verify the unit
/// in dist/systemd, pebble (an ACME test CA: sipd/tests/acme.rs), openssl and curl
/// (that test's OCSP responder and its pebble client), `redis-server` (the cluster's
/// shared engine; the tests start their own in a namespace, and its Sentinel as
/// `redis-server --sentinel`, the binary Debian's redis-sentinel links to), and python3-aiosmtpd
/// (the email one-time code test's SMTP sink). `setpriv`, which runs sipd with only the unit's
/// capabilities in
/// tests/tests/service.rs, is in util-linux, always installed.
pub const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "sip-tester",
    "baresip",
    "sipvicious",
    "tshark",
    "bpftool",
    "iproute2",
    "ethtool",
    "iputils-ping",
    "rtpengine",
    "kamailio",
    "systemd",
    "tmux",
    "sngrep",
    "pebble",
    "openssl",
    "curl",
    "redis-server",
    "python3-aiosmtpd",
    // `bench flood`: the per-source meters in front of sipd.
    "nftables",
];

/// Units the rtpengine, kamailio and redis-server packages install; they must not hold our
/// ports.
const SERVICES: &[&str] = &[
    "kamailio.service",
    "redis-server.service",
    "rtpengine-daemon.service",
    "rtpengine-recording-daemon.service",
];

/// bpf-linker is built against this LLVM; nightly's LLVM must not be newer.
const LLVM_MAJOR: u32 = 22;
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPF_LINKER_MIN: (u64, u64, u64) = (0, 13, 0);
/// The cargo-deny release whose `deny.toml` format the repository's file follows.
const CARGO_DENY: &str = "0.20.2";
/// The cargo-fuzz release `cargo xtask fuzz` drives (nightly, libFuzzer).
const CARGO_FUZZ: &str = "0.13.1";

/// Something setup could not do, and the command that does it.
pub struct Problem {
    pub what: String,
    pub fix: String,
}

#[derive(Default)]
pub struct Outcome {
    pub installed: Vec<String>,
    pub problems: Vec<Problem>,
}

impl Outcome {
    fn ok(&self, what: &str) {
        println!("  ok       {what}");
    }
    fn did(&mut self, what: String) {
        println!("  done     {what}");
        self.installed.push(what);
    }
    fn problem(&mut self, what: impl Into<String>, fix: impl Into<String>) {
        let (what, fix) = (what.into(), fix.into());
        println!("  MISSING  {what}\n           fix: {fix}");
        self.problems.push(Problem { what, fix });
    }
    fn note(&self, what: &str) {
        println!("  note     {what}");
    }

    /// Prints the closing summary; Err if anything is still missing.
    pub fn finish(&self) -> anyhow::Result<()> {
        if self.problems.is_empty() {
            return Ok(());
        }
        eprintln!("setup: {} thing(s) still missing:", self.problems.len());
        for p in &self.problems {
            eprintln!("  - {}\n    {}", p.what, p.fix);
        }
        anyhow::bail!("setup incomplete")
    }
}

pub fn setup() -> Outcome {
    let start = Instant::now();
    let root = util::is_root();
    println!(
        "setup: checking toolchains and packages{}",
        if root {
            ""
        } else {
            " (not root: package and service steps need root and are skipped)"
        }
    );
    let mut out = Outcome::default();
    rust(&mut out);
    apt(&mut out, root);
    services(&mut out, root);
    bpf_linker(&mut out);
    cargo_deny(&mut out);
    cargo_fuzz(&mut out);
    let verdict = if out.problems.is_empty() {
        "ready"
    } else {
        "INCOMPLETE"
    };
    let did = if out.installed.is_empty() {
        "nothing to install".to_string()
    } else {
        format!("did: {}", out.installed.join("; "))
    };
    println!(
        "setup: {verdict} in {:.1} s ({did})",
        start.elapsed().as_secs_f64()
    );
    out
}

fn rust(out: &mut Outcome) {
    if which("rustup").is_none() {
        out.problem(
            "rustup (manages the stable and nightly Rust toolchains)",
            "install Rust with rustup, then run `cargo xtask setup` again",
        );
        return;
    }

    // The toolchain running us (rustup sets RUSTUP_TOOLCHAIN for the whole `cargo xtask`).
    let have = output("rustup", ["component", "list", "--installed"]).unwrap_or_default();
    let missing: Vec<&str> = ["rustfmt", "clippy"]
        .into_iter()
        .filter(|c| !have.lines().any(|l| l.starts_with(c)))
        .collect();
    if missing.is_empty() {
        out.ok("rust: rustfmt and clippy");
    } else {
        add_components(out, &missing, None);
    }

    let toolchains = output("rustup", ["toolchain", "list"]).unwrap_or_default();
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        let mut cmd = Command::new("rustup");
        cmd.args(["toolchain", "install", "nightly", "--profile", "minimal"]);
        match run(&mut cmd) {
            Ok(()) => out.did("installed the nightly toolchain".into()),
            Err(e) => {
                out.problem(
                    format!("nightly toolchain (builds the XDP program): {e:#}"),
                    util::show(&cmd),
                );
                return;
            }
        }
    }
    // rust-src for -Z build-std=core; clippy for the eBPF crate's lint step.
    let have = output(
        "rustup",
        ["component", "list", "--installed", "--toolchain", "nightly"],
    )
    .unwrap_or_default();
    let missing: Vec<&str> = ["rust-src", "clippy"]
        .into_iter()
        .filter(|c| !have.lines().any(|l| l.starts_with(c)))
        .collect();
    if !missing.is_empty() {
        add_components(out, &missing, Some("nightly"));
    }

    let version = output("rustc", ["+nightly", "-vV"]).unwrap_or_default();
    let release = version
        .lines()
        .find_map(|l| l.strip_prefix("release: "))
        .unwrap_or("?");
    let llvm = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .unwrap_or("?");
    if missing.is_empty() {
        out.ok(&format!(
            "rust nightly {release} (LLVM {llvm}) with rust-src, clippy"
        ));
    }
    let major: Option<u32> = llvm.split('.').next().and_then(|m| m.parse().ok());
    if major.is_some_and(|m| m > LLVM_MAJOR) {
        out.note(&format!(
            "nightly uses LLVM {llvm}, newer than the LLVM {LLVM_MAJOR} bpf-linker is built \
             against; if linking the XDP program fails, install llvm-{m}-dev and rebuild \
             bpf-linker with --features llvm-{m}",
            m = major.unwrap_or_default()
        ));
    }
}

fn add_components(out: &mut Outcome, components: &[&str], toolchain: Option<&str>) {
    let mut cmd = Command::new("rustup");
    cmd.args(["component", "add"]).args(components);
    if let Some(t) = toolchain {
        cmd.args(["--toolchain", t]);
    }
    let what = format!(
        "rust components {} ({})",
        components.join(", "),
        toolchain.unwrap_or("current toolchain")
    );
    match run(&mut cmd) {
        Ok(()) => out.did(format!("added {what}")),
        Err(e) => out.problem(format!("{what}: {e:#}"), util::show(&cmd)),
    }
}

/// Packages of `APT_PACKAGES` that dpkg does not report as installed.
fn missing_packages() -> Vec<&'static str> {
    // dpkg-query exits 1 when some package is unknown; its stdout still lists the rest.
    let listed = Command::new("dpkg-query")
        .arg("-W")
        .arg("-f=${Package} ${db:Status-Abbrev}\n")
        .args(APT_PACKAGES)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !listed.lines().any(|l| {
                l.split_once(' ')
                    .is_some_and(|(name, status)| name == *p && status.starts_with("ii"))
            })
        })
        .collect()
}

fn apt(out: &mut Outcome, root: bool) {
    let missing = missing_packages();
    if missing.is_empty() {
        out.ok(&format!(
            "apt: all {} packages installed ({})",
            APT_PACKAGES.len(),
            APT_PACKAGES.join(" ")
        ));
        return;
    }
    let install = format!(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    if !root {
        out.problem(
            format!("apt packages: {}", missing.join(" ")),
            format!("as root: apt-get update && {install}"),
        );
        return;
    }
    println!("  install  apt: {}", missing.join(" "));
    if let Err(e) = apt_install(&missing) {
        out.problem(
            format!("apt packages: {} ({e:#})", missing.join(" ")),
            format!("apt-get update && {install}"),
        );
        return;
    }
    let still = missing_packages();
    if still.is_empty() {
        out.did(format!("apt-get installed {}", missing.join(" ")));
    } else {
        out.problem(
            format!("apt packages still missing: {}", still.join(" ")),
            format!("apt-get update && {install}"),
        );
    }
}

fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    // tshark would ask whether non-root users may capture: answer no, up front.
    let mut preseed = Command::new("debconf-set-selections");
    preseed.stdin(Stdio::piped());
    let mut child = preseed.spawn()?;
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(b"wireshark-common wireshark-common/install-setuid boolean false\n")?;
    }
    if !child.wait()?.success() {
        anyhow::bail!("debconf-set-selections failed");
    }

    let _no_starts = NoServiceStarts::new();
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null());
        cmd
    };
    run(&mut apt(&["update"]))?;
    let mut install = apt(&["install", "-y", "--no-install-recommends"]);
    install.args(packages);
    run(&mut install)
}

/// While alive, a `policy-rc.d` that tells maintainer scripts not to start services, so
/// installing rtpengine or kamailio does not start them (on systemd or sysvinit). Only made,
/// and removed again, if there was none.
struct NoServiceStarts(Option<PathBuf>);

impl NoServiceStarts {
    fn new() -> Self {
        let path = Path::new("/usr/sbin/policy-rc.d");
        if path.exists() {
            return NoServiceStarts(None);
        }
        let script =
            "#!/bin/sh\n# made by cargo xtask setup while it installs packages\nexit 101\n";
        let made = std::fs::write(path, script)
            .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)));
        NoServiceStarts(made.is_ok().then(|| path.to_path_buf()))
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn services(out: &mut Outcome, root: bool) {
    if !Path::new("/run/systemd/system").exists() {
        out.ok("services: no systemd here, so nothing starts rtpengine or kamailio");
        return;
    }
    let mut running = Vec::new();
    for unit in SERVICES {
        let enabled =
            output("systemctl", ["is-enabled", unit]).is_some_and(|s| s.trim() == "enabled");
        let active = output("systemctl", ["is-active", unit]).is_some_and(|s| s.trim() == "active");
        if enabled || active {
            running.push(*unit);
        }
    }
    if running.is_empty() {
        out.ok("services: rtpengine and kamailio are stopped and disabled");
        return;
    }
    let fix = format!("systemctl disable --now {}", running.join(" "));
    if !root {
        out.problem(
            format!(
                "services {} are enabled or running and may hold ports 5060/2223",
                running.join(", ")
            ),
            format!("as root: {fix}"),
        );
        return;
    }
    let mut cmd = Command::new("systemctl");
    cmd.args(["disable", "--now"]).args(&running);
    match run(&mut cmd) {
        Ok(()) => out.did(format!("stopped and disabled {}", running.join(", "))),
        Err(e) => out.problem(format!("stopping services: {e:#}"), fix),
    }
}

fn bpf_linker(out: &mut Outcome) {
    let found = which("bpf-linker");
    let version = found
        .as_ref()
        .and_then(|_| output("bpf-linker", ["--version"]))
        .and_then(|v| v.split_whitespace().last().and_then(parse_version));
    let built_for_llvm = installed_features("bpf-linker")
        .map(|f| f.iter().any(|f| f == &format!("llvm-{LLVM_MAJOR}")))
        // Not installed by cargo (or no record): trust it.
        .unwrap_or(true);
    match (&found, version) {
        (Some(_), Some(v)) if v >= BPF_LINKER_MIN && built_for_llvm => {
            out.ok(&format!("bpf-linker {}.{}.{}", v.0, v.1, v.2));
            return;
        }
        (Some(p), v) => println!(
            "  replace  {} ({}, need >= {}.{}.{} built for LLVM {LLVM_MAJOR})",
            p.display(),
            v.map_or("version unknown".into(), |v| format!(
                "{}.{}.{}",
                v.0, v.1, v.2
            )),
            BPF_LINKER_MIN.0,
            BPF_LINKER_MIN.1,
            BPF_LINKER_MIN.2
        ),
        (None, _) => {
            println!("  install  bpf-linker (builds against LLVM {LLVM_MAJOR}, takes minutes)")
        }
    }

    let mut cmd = Command::new("cargo");
    cmd.env("LLVM_PREFIX", LLVM_PREFIX).args([
        "install",
        "bpf-linker",
        "--no-default-features",
        "--features",
        &format!("llvm-{LLVM_MAJOR}"),
    ]);
    if found.is_some() {
        cmd.arg("--force");
    }
    if !Path::new(LLVM_PREFIX).join("bin/llvm-config").exists() {
        out.problem(
            format!("bpf-linker (needs llvm-{LLVM_MAJOR}-dev, which is missing)"),
            format!(
                "as root: apt-get install llvm-{LLVM_MAJOR}-dev libpolly-{LLVM_MAJOR}-dev, then {}",
                util::show(&cmd)
            ),
        );
        return;
    }
    match run(&mut cmd) {
        Ok(()) if which("bpf-linker").is_some() => out.did("cargo installed bpf-linker".into()),
        Ok(()) => out.problem(
            "bpf-linker was installed but is not on PATH",
            "add ~/.cargo/bin (or $CARGO_HOME/bin) to PATH",
        ),
        Err(e) => out.problem(format!("bpf-linker: {e:#}"), util::show(&cmd)),
    }
}

/// cargo-deny, for the dependency checks `cargo xtask test` runs (licences, bans, sources).
fn cargo_deny(out: &mut Outcome) {
    if let Some(v) = output("cargo", ["deny", "--version"]) {
        out.ok(v.trim());
        return;
    }
    println!("  install  cargo-deny {CARGO_DENY} (compiles from crates.io, takes minutes)");
    let mut cmd = Command::new("cargo");
    cmd.args(["install", "cargo-deny", "--locked", "--version", CARGO_DENY]);
    match run(&mut cmd) {
        Ok(()) if output("cargo", ["deny", "--version"]).is_some() => {
            out.did("cargo installed cargo-deny".into())
        }
        Ok(()) => out.problem(
            "cargo-deny was installed but cargo does not find it",
            "add ~/.cargo/bin (or $CARGO_HOME/bin) to PATH",
        ),
        Err(e) => out.problem(format!("cargo-deny: {e:#}"), util::show(&cmd)),
    }
}

/// cargo-fuzz, for `cargo xtask fuzz` and the fuzz smoke in `cargo xtask test`.
fn cargo_fuzz(out: &mut Outcome) {
    if let Some(v) = output("cargo", ["fuzz", "--version"])
        && v.split_whitespace().last() == Some(CARGO_FUZZ)
    {
        out.ok(v.trim());
        return;
    }
    println!("  install  cargo-fuzz {CARGO_FUZZ} (compiles from crates.io, takes minutes)");
    let mut cmd = Command::new("cargo");
    cmd.args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--force",
        "--version",
        CARGO_FUZZ,
    ]);
    match run(&mut cmd) {
        Ok(()) if output("cargo", ["fuzz", "--version"]).is_some() => {
            out.did("cargo installed cargo-fuzz".into())
        }
        Ok(()) => out.problem(
            "cargo-fuzz was installed but cargo does not find it",
            "add ~/.cargo/bin (or $CARGO_HOME/bin) to PATH",
        ),
        Err(e) => out.problem(format!("cargo-fuzz: {e:#}"), util::show(&cmd)),
    }
}

fn parse_version(s: &str) -> Option<(u64, u64, u64)> {
    let mut it = s.split(['.', '-', '+']).map(|p| p.parse::<u64>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

/// The features a crate was `cargo install`ed with, from cargo's install record.
fn installed_features(krate: &str) -> Option<Vec<String>> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let text = std::fs::read_to_string(home.join(".crates2.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let (_, entry) = json
        .get("installs")?
        .as_object()?
        .iter()
        .find(|(k, _)| k.starts_with(&format!("{krate} ")))?;
    Some(
        entry
            .get("features")?
            .as_array()?
            .iter()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("0.13.0"), Some((0, 13, 0)));
        assert_eq!(parse_version("1.2.3-rc.1"), Some((1, 2, 3)));
        assert_eq!(parse_version("x"), None);
        assert!(parse_version("0.9.9").unwrap() < BPF_LINKER_MIN);
    }
}
