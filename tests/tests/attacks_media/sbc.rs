//! The appliance under attack: `sipd run` in the relay namespace of a caller—relay—callee
//! topology, provisioned with one carrier account and one vendor, and an attacker host on the
//! carrier's network (an address of its own beside the carrier's; inside a namespace it may
//! send from anything).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tests::netns::{NsChild, Topology, TopologyOptions};
use tests::rtp;
use tests::sip::{self, Sipp};

pub const SIP_PORT: u16 = 5060;
pub const RTP_PORT: u16 = 20_000;
pub const CLI: &str = "441234567";
pub const CLD: &str = "3312345678";
/// The relay's port range in these tests: 500 RTP/RTCP pairs.
pub const PORT_MIN: u16 = 30_000;
pub const PORT_MAX: u16 = 30_999;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plane {
    /// Generic (skb) XDP: the kernel relays answered calls' media.
    Xdp,
    Userspace,
}

impl Plane {
    fn mode(self) -> &'static str {
        match self {
            Plane::Xdp => "xdp-skb",
            Plane::Userspace => "userspace",
        }
    }
}

/// Carrier, relay, vendor and attacker, with the peers' RTP sockets.
pub struct Net {
    pub topo: Topology,
    pub carrier_rtp: UdpSocket,
    pub vendor_rtp: UdpSocket,
    /// The attacker's socket, on the carrier's link (caller namespace) at its own address.
    pub attacker: UdpSocket,
}

impl Net {
    pub fn new() -> Net {
        let topo = Topology::three(TopologyOptions {
            gro: Some(true),
            forwarding: true,
            ..Default::default()
        })
        .expect("topology");
        let carrier_rtp = rtp::bind_in(
            &topo.caller,
            SocketAddr::new(topo.caller_if.ip(false), RTP_PORT),
        )
        .expect("carrier rtp socket");
        let vendor_rtp = rtp::bind_in(
            &topo.callee,
            SocketAddr::new(topo.callee_if.ip(false), RTP_PORT),
        )
        .expect("vendor rtp socket");
        // A host of its own on the carrier's /24: 10.X.1.66.
        let c = topo.caller_if.ipv4.octets();
        let attacker_ip = Ipv4Addr::new(c[0], c[1], c[2], 66);
        topo.caller
            .ip([
                "addr",
                "add",
                &format!("{attacker_ip}/24"),
                "dev",
                &topo.caller_if.dev,
            ])
            .expect("attacker address");
        let attacker = rtp::bind_in(&topo.caller, SocketAddr::new(attacker_ip.into(), 40_000))
            .expect("attacker socket");
        Net {
            topo,
            carrier_rtp,
            vendor_rtp,
            attacker,
        }
    }

    pub fn carrier_sip(&self) -> SocketAddr {
        SocketAddr::new(self.topo.caller_if.ip(false), SIP_PORT)
    }

    /// The vendor UAS, started and bound, ringing for `ring` before it answers.
    pub fn uas(&self, ring: Duration) -> sip::SippRun {
        let mut s = Sipp::new(
            "uas.xml",
            SocketAddr::new(self.topo.callee_if.ip(false), SIP_PORT),
        );
        s.pause = ring;
        s.var("rtp_port", &RTP_PORT.to_string());
        let mut run = s.spawn(&self.topo.callee).expect("spawn uas");
        run.wait_bound(&self.topo.callee).expect("uas bound");
        run
    }

    /// The carrier UAC calling `target`, hanging up after `hold`.
    pub fn uac(&self, target: SocketAddr, hold: Duration) -> sip::SippRun {
        let mut s = Sipp::uac("uac.xml", self.carrier_sip(), target, CLI, CLD, RTP_PORT);
        s.pause = hold;
        s.spawn(&self.topo.caller).expect("spawn uac")
    }

    /// As [`Net::uac`], for a carrier behind NAT: its SDP names `sdp_ip`, a private address,
    /// while its SIP and RTP come from its real one.
    pub fn uac_nat(&self, target: SocketAddr, hold: Duration, sdp_ip: &str) -> sip::SippRun {
        let mut s = Sipp::uac(
            "uac_nat.xml",
            self.carrier_sip(),
            target,
            CLI,
            CLD,
            RTP_PORT,
        );
        s.pause = hold;
        s.var("sdp_ip", sdp_ip);
        s.spawn(&self.topo.caller).expect("spawn uac")
    }

    fn prov(&self) -> String {
        let vendor_ip = self.topo.callee_if.ip(false);
        let carrier_ip = self.topo.caller_if.ip(false);
        format!(
            "[[tariff]]\nname = \"std\"\nrate_per_minute = \"0.60\"\nexpected_call_secs = 60\n\
             initial_increment_secs = 1\nincrement_secs = 1\n\n\
             [[connection]]\nname = \"vendor-0\"\ndestination = \"{vendor_ip}:{SIP_PORT}\"\n\
             transport = \"udp\"\ncld_prefixes = [\"33\"]\nmax_channels = 20\n\
             cps_limit = 50\npriority = 10\n\n\
             [[account]]\nname = \"carrier-a\"\ntariff = \"std\"\nbalance = \"100.00\"\n\
             cps_limit = 20\nmax_sessions = 20\nmax_call_secs = 3600\n\n\
             [[account.rule]]\nname = \"office\"\nremote = \"{carrier_ip}/32\"\n\
             cli = {{ prefix = \"44\" }}\ncld = {{ prefix = \"33\" }}\nip_only = true\n"
        )
    }
}

/// `sipd run` in the relay namespace, with its own data directory and BPF instance; the
/// `[media]` section as shipped (no strict_source setting: the default is under test).
pub struct Sbc {
    dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    instance: String,
    child: Option<NsChild>,
    /// SIP and media address (the relay's carrier-facing one).
    pub addr: IpAddr,
    relay_ns: String,
}

fn sipd_bin() -> PathBuf {
    tests::bins::cargo_bin("sipd", "sipd")
}

impl Sbc {
    pub fn start(net: &Net, plane: Plane) -> Sbc {
        let instance = format!("sbcam{}s{}", std::process::id(), net.topo.id());
        let dir = std::env::temp_dir().join(format!("{instance}-sipd"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("sipd dir");
        let addr = net.topo.relay_caller_if.ip(false);
        let config = dir.join("sbc.toml");
        let toml = format!(
            "data_dir = \"{data}\"\n\n[sip]\nudp = [\"{addr}:{SIP_PORT}\"]\n\n\
             [auth]\nrealm = \"sbc\"\nalgorithms = [\"MD5\"]\n\n\
             [media]\naddress = \"{addr}\"\nport_min = {PORT_MIN}\nport_max = {PORT_MAX}\n\
             timeout_secs = 60\n\n[dataplane]\nmode = \"{mode}\"\n\
             interfaces = [\"{a}\", \"{b}\"]\ninstance = \"{instance}\"\n\n\
             [management]\npepper_file = \"{pepper}\"\nmetrics_public = true\n",
            data = dir.join("data").display(),
            pepper = dir.join("sipd.pepper").display(),
            mode = plane.mode(),
            a = net.topo.relay_caller_if.dev,
            b = net.topo.relay_callee_if.dev,
        );
        std::fs::write(&config, toml).expect("write sbc.toml");
        let prov_file = dir.join("prov.toml");
        std::fs::write(&prov_file, net.prov()).expect("write prov.toml");
        let out = std::process::Command::new(sipd_bin())
            .arg("-c")
            .arg(&config)
            .arg("import")
            .arg(&prov_file)
            .output()
            .expect("run sipd import");
        assert!(
            out.status.success(),
            "sipd import failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let log = dir.join("sipd.log");
        let logf = std::fs::File::create(&log).expect("log file");
        let mut cmd = net.topo.relay.command(sipd_bin());
        cmd.arg("-c")
            .arg(&config)
            .arg("run")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("log"))
            .stderr(logf);
        let child = NsChild::spawn(&mut cmd).expect("spawn sipd run");
        let mut sbc = Sbc {
            dir,
            config,
            log,
            instance,
            child: Some(child),
            addr,
            relay_ns: net.topo.relay.name().to_string(),
        };
        let end = Instant::now() + Duration::from_secs(20);
        while !sbc.log_text().contains("sipd ready") {
            if let Some(st) = sbc.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("sipd exited ({st}) before ready:\n{}", sbc.log_text());
            }
            assert!(
                Instant::now() < end,
                "no \"sipd ready\":\n{}",
                sbc.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sbc
    }

    pub fn sip(&self) -> SocketAddr {
        SocketAddr::new(self.addr, SIP_PORT)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A data-plane counter as `/metrics` reports it (`sbc_dataplane_packets_total`, by
    /// reason), on either plane: what an operator sees.
    pub fn dataplane_metric(&self, reason: &str) -> u64 {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.relay_ns))
            .args(["--", "curl", "-sk", "--max-time", "5"])
            .arg("https://127.0.0.1:8443/metrics")
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout);
        let key = format!("sbc_dataplane_packets_total{{reason=\"{reason}\"}}");
        text.lines()
            .find_map(|l| l.strip_prefix(&key)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in /metrics:\n{text}"))
    }

    /// The kernel's verdict counters for this instance (XDP only), from the pinned maps.
    pub fn kernel_stats(&self) -> std::collections::BTreeMap<&'static str, u64> {
        let mut ebpf =
            relay_user::loader::load_pinned(relay_user::object::ebpf_object(), &self.instance)
                .expect("open the instance's pinned maps");
        let maps = relay_user::maps::XdpMaps::from_ebpf(&mut ebpf).expect("maps");
        relay_user::maps::stats_by_name(&maps.stats_raw().expect("stats"))
    }
}

impl Drop for Sbc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.stop(Duration::from_secs(5));
        }
        let _ = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.relay_ns))
            .arg("--")
            .arg(sipd_bin())
            .arg("-c")
            .arg(&self.config)
            .arg("cleanup")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/{}", self.instance));
        if std::env::var_os("SBCT_KEEP").is_none() && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("sipd files kept in {}", self.dir.display());
        }
    }
}
