//! The proxies under test, started and stopped by guards: sipd (its configuration and
//! provisioning written for the run) and Kamailio with rtpengine.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use relay_user::ng::client::NgClient;

use super::procs::{self, Proc};
use super::{
    KAMAILIO_PORT, NG_PORT, Opts, PASSWORD, REALM, RTPENGINE_MEDIA, SIPD_MEDIA, SIPD_MGMT_PORT,
    SIPD_PORT, UAS_PORT, USER,
};
use crate::common;

pub(super) const KAMAILIO_CFG: &str = include_str!("../../sip/kamailio.cfg");

/// The proxy under test with what it needs (rtpengine), each stopped when dropped.
pub(super) struct Proxy {
    pub(super) main: Proc,
    pub(super) media: Option<Proc>,
    pub(super) version: String,
}

impl Proxy {
    /// The PIDs whose CPU counts as the proxy's: (proxy tree, media relay).
    pub(super) fn pids(&mut self) -> (Vec<u32>, Vec<u32>) {
        let main = self.main.tree();
        let media = self.media.as_mut().map(|m| m.tree()).unwrap_or_default();
        (main, media)
    }
    pub(super) fn check_alive(&mut self) -> anyhow::Result<()> {
        self.main.check_alive()?;
        if let Some(m) = self.media.as_mut() {
            m.check_alive()?;
        }
        Ok(())
    }
}

pub(super) fn start_kamailio(
    o: &Opts,
    cpu: usize,
    tmp: &Path,
    log: &Path,
) -> anyhow::Result<Proxy> {
    let rtpengine = common::rtpengine()?;
    procs::ensure_free(NG_PORT, "rtpengine ng")?;
    let version = |cmd: &str, arg: &str, prefix: &str| -> String {
        Command::new(cmd)
            .arg(arg)
            .output()
            .ok()
            .and_then(|o| {
                let s = String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr);
                s.lines()
                    .find(|l| l.trim_start().starts_with(prefix))
                    .map(|l| l.trim().to_string())
            })
            .unwrap_or_else(|| format!("{cmd} (version unknown)"))
    };
    let kv = version("kamailio", "-v", "version:").replace("version: ", "");
    let rv = version("rtpengine", "--version", "Version:").replace("Version: ", "rtpengine ");

    let media_log = log.with_file_name("sip-kamailio-rtpengine.log");
    let _ = std::fs::remove_file(&media_log);
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &cpu.to_string()])
        .arg(rtpengine)
        .args(common::rtpengine_userspace_args(RTPENGINE_MEDIA))
        .args([
            "--interface=127.0.0.1",
            &format!("--listen-ng=127.0.0.1:{NG_PORT}"),
        ]);
    let mut media = Proc::spawn("rtpengine", &mut cmd, &media_log)?;
    let ng = NgClient::new(SocketAddr::from(([127, 0, 0, 1], NG_PORT)))?;
    if let Err(e) = ng.wait_ready(Duration::from_secs(10)) {
        media.check_alive()?;
        bail!(
            "rtpengine does not answer ng ping: {e}; log {}",
            media_log.display()
        );
    }

    let cfg = tmp.join("kamailio.cfg");
    std::fs::write(&cfg, kamailio_cfg(o.kamailio_children))?;
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &cpu.to_string(), "kamailio", "-DD", "-E"])
        // Shared memory for transactions (kept 5 s after they end) at thousands of calls/s.
        .args(["-m", "1024", "-M", "16", "-f"])
        .arg(&cfg);
    let mut main = Proc::spawn("kamailio", &mut cmd, log)?;
    procs::wait_sip(
        SocketAddr::from(([127, 0, 0, 1], KAMAILIO_PORT)),
        &mut main,
        Duration::from_secs(15),
    )?;
    Ok(Proxy {
        main,
        media: Some(media),
        version: format!("{kv}; {rv}"),
    })
}

/// The Kamailio configuration with the bench's addresses and credentials filled in.
pub(super) fn kamailio_cfg(children: u32) -> String {
    // The nonce secret only needs to be fixed for the run.
    let secret = format!("sbcbench{:016x}", std::process::id() as u64 * 0x9e37_79b9);
    tests::kamailio::fill(
        KAMAILIO_CFG,
        &[
            ("CHILDREN", &children.to_string()),
            ("LISTEN", &format!("127.0.0.1:{KAMAILIO_PORT}")),
            ("SECRET", &secret),
            ("NG", &format!("127.0.0.1:{NG_PORT}")),
            ("USER", USER),
            ("PASSWORD", PASSWORD),
            ("REALM", REALM),
            ("UAS", &format!("127.0.0.1:{UAS_PORT}")),
        ],
    )
    // The template is part of the bench: a placeholder left over is a bug here, caught by
    // the unit test below.
    .expect("bench/sip/kamailio.cfg placeholders")
}

pub(super) fn sipd_path(o: &Opts) -> anyhow::Result<PathBuf> {
    if let Some(p) = &o.sipd {
        return Ok(p.clone());
    }
    if std::env::var_os("SBC_BENCH_SIPD_BUILD_FAILED").is_some() {
        bail!("sipd did not build (see cargo's errors above); not running a stale binary");
    }
    ::tests::bins::find_built("sipd", "-p sipd", "--sipd")
}

/// Where a benchmark's sipd listens and relays: [`SipdSite::loopback`] for `bench sip` and
/// `bench console`, a namespace's addresses and veths for `bench soak`.
pub(crate) struct SipdSite {
    /// SIP over UDP (`[sip] udp`).
    pub(crate) sip: SocketAddr,
    /// `[media] address`.
    pub(crate) media: std::net::IpAddr,
    /// `[media] port_min`, `port_max`.
    pub(crate) media_ports: (u16, u16),
    /// `[dataplane] mode`.
    pub(crate) dataplane: String,
    /// `[dataplane] interfaces`; empty: sipd's default.
    pub(crate) interfaces: Vec<String>,
    /// `[dataplane] instance` (its pins under /sys/fs/bpf).
    pub(crate) instance: String,
    /// `[management] listen`.
    pub(crate) management: SocketAddr,
    /// `[management] metrics_public`: `/metrics` without a login.
    pub(crate) metrics_public: bool,
}

impl SipdSite {
    /// SIP on 127.0.0.1:5062, media on 127.0.0.1, the management API on 127.0.0.1:18443.
    pub(crate) fn loopback(dataplane: &str) -> SipdSite {
        SipdSite {
            sip: SocketAddr::from(([127, 0, 0, 1], SIPD_PORT)),
            media: [127, 0, 0, 1].into(),
            media_ports: (SIPD_MEDIA.0, SIPD_MEDIA.1 + 1),
            dataplane: dataplane.into(),
            interfaces: Vec::new(),
            instance: "sbcbench".into(),
            management: SocketAddr::from(([127, 0, 0, 1], SIPD_MGMT_PORT)),
            metrics_public: false,
        }
    }
}

/// sbc.toml for the bench on loopback ([`SipdSite::loopback`]); see [`sipd_config_at`].
pub(crate) fn sipd_config(dataplane: &str, data_dir: &Path, media_timeout_secs: u64) -> String {
    sipd_config_at(&SipdSite::loopback(dataplane), data_dir, media_timeout_secs)
}

/// sbc.toml for the bench: SIP over UDP only, the default `[auth]` (MD5 digest only: what
/// sipp 3.6 computes, and Kamailio's), media on its own port range, guard limits far above
/// the load. `media_timeout_secs`: how long a call may go without media (sipp sends none:
/// it must outlast the longest call held).
pub(crate) fn sipd_config_at(site: &SipdSite, data_dir: &Path, media_timeout_secs: u64) -> String {
    sipd_config_guarded(site, data_dir, media_timeout_secs, false, BENCH_GUARD)
}

/// The kernel/IDS guard would (rightly) throttle one source sending thousands of INVITEs a
/// second; the call benchmarks measure the call path, not the guard.
pub(crate) const BENCH_GUARD: &str = r#"[guard]
sip_packets_per_sec = 10000000
sip_packet_burst = 20000000
invites_per_sec = 1000000
invite_burst = 2000000
max_sessions_per_source = 10000000
auth_failures_before_ban = 10000000
"#;

/// sbc.toml as [`sipd_config_at`] writes it, with SIP over TCP on the UDP address too if
/// `tcp`, and `guard` (a whole `[guard]` section) instead of [`BENCH_GUARD`].
pub(crate) fn sipd_config_guarded(
    site: &SipdSite,
    data_dir: &Path,
    media_timeout_secs: u64,
    tcp: bool,
    guard: &str,
) -> String {
    let tcp = if tcp {
        format!("\"{}\"", site.sip)
    } else {
        String::new()
    };
    let interfaces = if site.interfaces.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = site.interfaces.iter().map(|i| format!("\"{i}\"")).collect();
        format!("interfaces = [{}]\n", list.join(", "))
    };
    format!(
        r#"# Written by `cargo xtask bench` (sip, console, soak, flood).
data_dir = "{data}"

[sip]
udp = ["{sip}"]
tcp = [{tcp}]

[auth]
realm = "{REALM}"

[media]
address = "{media}"
port_min = {pmin}
port_max = {pmax}
timeout_secs = {media_timeout_secs}

[dataplane]
mode = "{dp}"
{interfaces}instance = "{instance}"

[management]
listen = "{mgmt}"
pepper_file = "{pepper}"
metrics_public = {metrics_public}

{guard}"#,
        data = data_dir.display(),
        sip = site.sip,
        media = site.media,
        // Outside the data directory, as sipd requires; the temp dir goes with the bench.
        pepper = data_dir
            .parent()
            .unwrap_or(data_dir)
            .join("sipd.pepper")
            .display(),
        pmin = site.media_ports.0,
        pmax = site.media_ports.1,
        dp = site.dataplane,
        instance = site.instance,
        mgmt = site.management,
        metrics_public = site.metrics_public,
    )
}

/// prov.toml for the callee on loopback; see [`sipd_provisioning_to`].
pub(crate) fn sipd_provisioning() -> String {
    sipd_provisioning_to(SocketAddr::from(([127, 0, 0, 1], UAS_PORT)))
}

/// prov.toml: a free tariff, the callee at `uas` as the only connection, one account with a
/// SIP username/password and a rule without restrictions; limits far above the load.
pub(crate) fn sipd_provisioning_to(uas: SocketAddr) -> String {
    format!(
        r#"# Written by `cargo xtask bench` (sip, console, soak, flood).
[[tariff]]
name = "bench-free"
rate_per_minute = "0"
expected_call_secs = 60

[[connection]]
name = "bench-uas"
destination = "{uas}"
transport = "udp"
max_channels = 1000000
cps_limit = 1000000
priority = 10

[[account]]
name = "bench"
tariff = "bench-free"
balance = "1000000"
cps_limit = 1000000
max_sessions = 1000000
max_call_secs = 3600
sip = {{ username = "{USER}", password = "{PASSWORD}" }}

[[account.rule]]
name = "anywhere"
"#
    )
}

/// `sipd -c <cfg> import <prov>`, failing with sipd's output.
pub(crate) fn sipd_import(bin: &Path, cfg: &Path, prov: &Path) -> anyhow::Result<()> {
    let out = Command::new(bin)
        .arg("-c")
        .arg(cfg)
        .arg("import")
        .arg(prov)
        .output()
        .with_context(|| format!("run {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "`sipd -c sbc.toml import prov.toml` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `sipd --version`, or "sipd".
pub(crate) fn sipd_version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "sipd".into())
}

pub(super) fn start_sipd(o: &Opts, cpu: usize, tmp: &Path, log: &Path) -> anyhow::Result<Proxy> {
    let bin = sipd_path(o)?;
    let cfg = tmp.join("sbc.toml");
    let prov = tmp.join("prov.toml");
    std::fs::write(&cfg, sipd_config(&o.dataplane, &tmp.join("data"), 300))?;
    std::fs::write(&prov, sipd_provisioning())?;
    sipd_import(&bin, &cfg, &prov)?;
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &cpu.to_string()])
        .arg(&bin)
        .arg("-c")
        .arg(&cfg)
        .arg("run");
    let main = Proc::spawn_until("sipd", &mut cmd, log, "sipd ready", Duration::from_secs(30))
        .map_err(|e| {
            let s = format!("{e:#}");
            if s.contains("unrecognized subcommand") {
                anyhow::anyhow!("{} has no `run` command yet: {s}", bin.display())
            } else {
                e
            }
        })?;
    let version = sipd_version(&bin);
    Ok(Proxy {
        main,
        media: None,
        version: format!("{version} (data plane {})", o.dataplane),
    })
}

#[cfg(test)]
mod unit {
    use super::super::parse;
    use super::*;

    #[test]
    fn kamailio_cfg_is_filled_in() {
        let c = kamailio_cfg(4);
        assert!(!c.contains("@@"), "{c}");
        assert!(c.contains("listen=udp:127.0.0.1:5064"));
        assert!(c.contains("rtpengine_offer"));
        assert!(c.contains(&format!("pv_www_authenticate(\"{REALM}\", \"{PASSWORD}\"")));
    }

    #[test]
    fn sipd_files_mention_the_contract() {
        let c = sipd_config(
            &parse(&[]).unwrap().dataplane,
            Path::new("/tmp/x/data"),
            300,
        );
        assert!(c.contains("udp = [\"127.0.0.1:5062\"]"));
        assert!(c.contains("tcp = []"));
        assert!(c.contains("mode = \"userspace\""));
        let p = sipd_provisioning();
        assert!(p.contains("destination = \"127.0.0.1:5090\""));
        assert!(p.contains(&format!("password = \"{PASSWORD}\"")));
    }
}
