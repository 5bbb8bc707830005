//! The systems under flood, each started in the relay namespace of a fresh topology on the
//! box's CPU: sipd (XDP, userspace, guard off, behind nftables) and Kamailio with pike and
//! an htable ban in front of rtpengine. Each is stopped by PID (sipd's pins removed, the
//! nftables table goes with the namespace) when its [`Stack`] is dropped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ::tests::netns::{NsChild, Topology};
use anyhow::{Context as _, bail};

use super::{Opts, System};
use crate::common;
use crate::kamailio::media::Legs;
use crate::sip::procs::{self, Proc};
use crate::sip::proxies::{self, SipdSite};
use crate::sip::{PASSWORD, USER};
use crate::soak::Pins;

pub(super) const SIP_PORT: u16 = 5060;
/// The relay's ports (sipd's and rtpengine's alike): 2 per leg, 4 per call.
/// 16000 ports: 4000 calls at once, under the open-file limit sipd's userspace relay needs.
pub(super) const MEDIA_PORTS: (u16, u16) = (30_000, 45_999);
const MGMT_PORT: u16 = 18_443;
const NG_PORT: u16 = 2223;
/// A ban lasts longer than any run.
const BAN_SECS: u64 = 3600;

/// The per-source limits every defence gets, sized for the carrier: at `cps` calls/s it sends
/// about 5 requests and 5 responses per call (INVITE, 401, ACK, INVITE, 100, 200, ACK, BYE,
/// 200, plus retransmissions), so 4 × its rate in packets, and 4 × its INVITEs.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(super) struct Limits {
    pub(super) packets_per_sec: u32,
    pub(super) invites_per_sec: u32,
    pub(super) syns_per_sec: u32,
    pub(super) max_sessions: u32,
}

impl Limits {
    pub(super) fn for_carrier(cps: u32, hold: Duration) -> Limits {
        Limits {
            packets_per_sec: (cps * 10 * 4).max(200),
            invites_per_sec: (cps * 2 * 4).max(20),
            syns_per_sec: 50,
            max_sessions: ((cps as f64 * (hold.as_secs_f64() + 10.0)) as u32 * 2).max(200),
        }
    }

    /// sipd's `[guard]` with these limits (bans on, as shipped, flood bans after 3 reports).
    fn sipd_guard(&self) -> String {
        format!(
            "# Per-source limits sized for the carrier (`bench flood`).\n[guard]\n\
             sip_packets_per_sec = {p}\nsip_packet_burst = {pb}\n\
             invites_per_sec = {i}\ninvite_burst = {ib}\n\
             max_sessions_per_source = {s}\n\
             tcp_syns_per_sec = {y}\ntcp_syn_burst = {yb}\n\
             flood_reports_before_ban = 3\nban_secs = {BAN_SECS}\nban_max_secs = {BAN_SECS}\n",
            p = self.packets_per_sec,
            pb = self.packets_per_sec * 2,
            i = self.invites_per_sec,
            ib = self.invites_per_sec * 2,
            s = self.max_sessions,
            y = self.syns_per_sec,
            yb = self.syns_per_sec * 2,
        )
    }
}

/// One system, running.
pub(super) struct Stack {
    /// Where the carrier calls.
    pub(super) sip: SocketAddr,
    pub(super) legs: Legs,
    pub(super) version: String,
    /// sipd's `/metrics` (in the relay namespace).
    metrics: Option<String>,
    nft: bool,
    main: Proc,
    /// rtpengine beside Kamailio.
    rtpengine: Option<NsChild>,
    _pins: Option<Pins>,
    _peer_pass: Option<aya::Ebpf>,
    pub(super) log: PathBuf,
}

impl Stack {
    /// Starts `system` in `topo`'s relay namespace.
    pub(super) fn start(
        system: System,
        o: &Opts,
        topo: &Topology,
        tmp: &Path,
        box_cpu: usize,
        out_dir: &Path,
    ) -> anyhow::Result<Stack> {
        let log = out_dir.join(format!("flood-{}.log", system.slug()));
        let _ = std::fs::remove_file(&log);
        let uas = SocketAddr::new(topo.callee_if.ip(false), SIP_PORT);
        let sip = SocketAddr::new(topo.relay_caller_if.ip(false), SIP_PORT);
        let limits = Limits::for_carrier(o.cps, o.hold);
        if system == System::Kamailio {
            return start_kamailio(topo, tmp, box_cpu, sip, uas, &limits, log);
        }
        let bin = match &o.sipd {
            Some(p) => p.clone(),
            None if std::env::var_os("SBC_BENCH_SIPD_BUILD_FAILED").is_some() => {
                bail!("sipd did not build (see cargo's errors above); not flooding a stale binary")
            }
            None => ::tests::bins::find_built("sipd", "-p sipd", "--sipd")?,
        };
        let instance = format!("sbcflood{}", std::process::id());
        let dataplane = if system == System::SipdXdp {
            "xdp-native"
        } else {
            "userspace"
        };
        let site = SipdSite {
            sip,
            media: sip.ip(),
            media_ports: MEDIA_PORTS,
            dataplane: dataplane.into(),
            interfaces: vec![
                topo.relay_caller_if.dev.clone(),
                topo.relay_callee_if.dev.clone(),
            ],
            instance: instance.clone(),
            management: SocketAddr::from(([127, 0, 0, 1], MGMT_PORT)),
            metrics_public: true,
        };
        let guard = match system {
            System::SipdXdp | System::SipdUserspace => limits.sipd_guard(),
            System::SipdGuardOff | System::Nftables => proxies::BENCH_GUARD.to_string(),
            System::Kamailio => unreachable!(),
        };
        let cfg = tmp.join("sbc.toml");
        let prov = tmp.join("prov.toml");
        // Media timeout: longer than a call's hold (the bench's RTP stops 1.5 s before BYE).
        let timeout = o.hold.as_secs() + 30;
        std::fs::write(
            &cfg,
            proxies::sipd_config_guarded(&site, &tmp.join("data"), timeout, true, &guard),
        )?;
        std::fs::write(&prov, proxies::sipd_provisioning_to(uas))?;
        proxies::sipd_import(&bin, &cfg, &prov)?;
        let version = format!("{} ({dataplane})", proxies::sipd_version(&bin));
        let pins = Pins {
            bin: bin.clone(),
            config: cfg.clone(),
            ns: topo.relay.path(),
            instance: instance.clone(),
        };
        if system == System::Nftables {
            nft_apply(topo, &limits)?;
        }
        let mut cmd = topo.relay.command("taskset");
        cmd.args(["-c", &box_cpu.to_string()])
            .arg(&bin)
            .arg("-c")
            .arg(&cfg)
            .arg("run")
            .env("NO_COLOR", "1");
        let main = Proc::spawn_until(
            "sipd",
            &mut cmd,
            &log,
            "sipd ready",
            Duration::from_secs(60),
        )?;
        let peer_pass = if system == System::SipdXdp {
            Some(::tests::xdp::attach_peer_pass(topo, &instance)?)
        } else {
            None
        };
        Ok(Stack {
            sip,
            legs: Legs::OnTheirOwn,
            version,
            metrics: Some(format!("https://127.0.0.1:{MGMT_PORT}/metrics")),
            nft: system == System::Nftables,
            main,
            rtpengine: None,
            _pins: Some(pins),
            _peer_pass: peer_pass,
            log,
        })
    }

    /// The box's processes now (Kamailio's workers included).
    pub(super) fn pids(&mut self) -> Vec<u32> {
        let mut p = self.main.tree();
        if let Some(r) = &self.rtpengine {
            p.push(r.pid());
        }
        p
    }

    /// Fails if the system's main process has ended.
    pub(super) fn check_alive(&mut self) -> anyhow::Result<()> {
        self.main.check_alive()
    }

    /// The drop and refusal counters the system keeps, by name (sipd: its data plane's
    /// verdicts, refusals, malformed SIP, transport events; nftables: the rules' counters;
    /// Kamailio keeps none a bench can read without its control socket).
    pub(super) fn counters(&self, topo: &Topology) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        if let Some(url) = &self.metrics {
            match topo
                .relay
                .command("curl")
                .args(["-sk", "--fail", "--max-time", "10", url.as_str()])
                .output()
            {
                Ok(o) if o.status.success() => {
                    out.extend(sipd_counters(&String::from_utf8_lossy(&o.stdout)));
                }
                other => eprintln!("   /metrics: {other:?}"),
            }
        }
        if self.nft {
            out.extend(nft_counters(topo));
        }
        out
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(mut r) = self.rtpengine.take() {
            let _ = r.stop(Duration::from_secs(5));
        }
        let _ = self.main.stop();
    }
}

/// Series of sipd's `/metrics` that count drops and refusals.
const SIPD_SERIES: &[&str] = &[
    "sbc_dataplane_packets_total",
    "sipd_refusals_total",
    "sipd_sip_malformed_total",
    "sipd_transport_events_total",
    "sipd_auth_challenges_total",
    "sipd_sip_requests_total",
];

fn sipd_counters(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            if !SIPD_SERIES.contains(&name) {
                return None;
            }
            Some((series.to_string(), v.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// The nftables table in front of sipd: per-source `meter`s on the SIP port (UDP packets, TCP
/// SYNs), at the limits sipd's own guard gets, each with a named counter of its drops.
fn nft_rules(l: &Limits) -> String {
    format!(
        "table ip flood {{\n\
         \tcounter sip_over {{ }}\n\
         \tcounter syn_over {{ }}\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tudp dport {SIP_PORT} meter sip_src size 65535 {{ ip saddr timeout 10s limit rate over {p}/second burst {pb} packets }} counter name sip_over drop\n\
         \t\ttcp dport {SIP_PORT} tcp flags syn meter syn_src size 65535 {{ ip saddr timeout 10s limit rate over {y}/second burst {yb} packets }} counter name syn_over drop\n\
         \t}}\n\
         }}\n",
        p = l.packets_per_sec,
        pb = l.packets_per_sec * 2,
        y = l.syns_per_sec,
        yb = l.syns_per_sec * 2,
    )
}

fn nft_apply(topo: &Topology, l: &Limits) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = topo
        .relay
        .command("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("run nft (apt install nftables)")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(nft_rules(l).as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft -f refused the ruleset: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn nft_counters(topo: &Topology) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for name in ["sip_over", "syn_over"] {
        let text = topo
            .relay
            .run("nft", ["list", "counter", "ip", "flood", name])
            .unwrap_or_default();
        let packets = text
            .split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|v| v.parse().ok());
        if let Some(p) = packets {
            out.insert(format!("nft_{name}_dropped"), p);
        }
    }
    out
}

fn start_kamailio(
    topo: &Topology,
    tmp: &Path,
    box_cpu: usize,
    sip: SocketAddr,
    uas: SocketAddr,
    limits: &Limits,
    log: PathBuf,
) -> anyhow::Result<Stack> {
    let ng = SocketAddr::from(([127, 0, 0, 1], NG_PORT));
    let rtp_log = log.with_extension("rtpengine.log");
    let mut cmd = topo.relay.command("taskset");
    cmd.args(["-c", &box_cpu.to_string()])
        .arg(common::rtpengine()?)
        .args(common::rtpengine_userspace_args(MEDIA_PORTS))
        .arg(format!("--interface={}", sip.ip()))
        .arg(format!("--listen-ng={ng}"));
    let f = std::fs::File::create(&rtp_log)?;
    cmd.stdin(std::process::Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f);
    println!("   {}", ::tests::show_command(&cmd));
    let rtpengine = NsChild::spawn(&mut cmd)?;
    let client = topo
        .relay
        .enter(|| relay_user::ng::client::NgClient::new(ng))?;
    client
        .wait_ready(Duration::from_secs(15))
        .context("rtpengine not answering ng ping")?;
    let cfg = tmp.join("kamailio.cfg");
    let text = ::tests::kamailio::fill(
        include_str!("../../flood/kamailio.cfg"),
        &[
            ("CHILDREN", "4"),
            ("LISTEN", &sip.to_string()),
            // Pike counts requests per 2 s unit.
            ("DENSITY", &(limits.packets_per_sec * 2).to_string()),
            ("BAN", &BAN_SECS.to_string()),
            ("SECRET", "flood-bench-secret"),
            ("NG", &ng.to_string()),
            ("REALM", "sbc"),
            ("USER", USER),
            ("PASSWORD", PASSWORD),
            ("UAS", &uas.to_string()),
        ],
    )?;
    std::fs::write(&cfg, text)?;
    let mut cmd = topo.relay.command("taskset");
    cmd.args(["-c", &box_cpu.to_string(), "kamailio"])
        .args(["-DD", "-E", "-m", "256", "-M", "32", "-f"])
        .arg(&cfg);
    let mut main = Proc::spawn("kamailio", &mut cmd, &log)?;
    let ready = topo
        .relay
        .enter(|| ::tests::kamailio::wait_sip(sip, Duration::from_secs(20), || main.check_alive()));
    if let Err(e) = ready {
        bail!("kamailio not ready: {e:#}; log:\n{}", procs::tail(&log, 20));
    }
    Ok(Stack {
        sip,
        legs: Legs::SameCallId,
        version: ::tests::kamailio::version() + " + rtpengine (--table=-1), pike + htable",
        metrics: None,
        nft: false,
        main,
        rtpengine: Some(rtpengine),
        _pins: None,
        _peer_pass: None,
        log,
    })
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn limits_leave_room_for_the_carrier() {
        let l = Limits::for_carrier(50, Duration::from_secs(60));
        assert_eq!((l.packets_per_sec, l.invites_per_sec), (2000, 400));
        assert!(l.max_sessions >= 50 * 70);
        let g = l.sipd_guard();
        assert!(g.contains("invites_per_sec = 400\n"), "{g}");
    }

    #[test]
    fn counters_from_metrics() {
        let page = "# TYPE sbc_dataplane_packets_total counter\n\
sbc_dataplane_packets_total{reason=\"drop_banned\"} 12\n\
sipd_calls_total 3\n\
sipd_sip_malformed_total 4\n";
        let c = sipd_counters(page);
        assert_eq!(
            c.get("sbc_dataplane_packets_total{reason=\"drop_banned\"}"),
            Some(&12)
        );
        assert_eq!(c.get("sipd_sip_malformed_total"), Some(&4));
        assert!(!c.contains_key("sipd_calls_total"));
    }
}
