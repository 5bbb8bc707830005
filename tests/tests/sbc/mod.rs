//! The harness the sipd scenarios share (`sip_netns`, `attacks_loops`, `attacks_media`,
//! `softphone_netns`): the
//! carrier — relay — vendor namespaces with the peers' RTP sockets (and, for attacks, a host of
//! the attacker's on the carrier's network), what a test provisions, and a real `sipd run` in
//! the relay namespace. Each test binary uses part of it, hence the allow.
#![allow(dead_code)]

pub use tests::totp;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::netns::{NsChild, Topology, TopologyOptions};
use tests::rtp;
use tests::sip::{self, MediaCheck, Sipp};

pub const SIP_PORT: u16 = 5060;
pub const RTP_PORT: u16 = 20_000;
pub const CLI: &str = "441234567";
pub const CLD: &str = "3312345678";
/// 1 s of G.711 each way per checked call.
pub const PACKETS: u64 = 50;
/// The relay's port range in these tests (`[media] port_min`/`port_max`): 500 RTP/RTCP pairs.
pub const PORT_MIN: u16 = 30_000;
pub const PORT_MAX: u16 = 30_999;

pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Carrier, relay and vendor namespaces, with the peers' RTP sockets.
pub struct Net {
    pub topo: Topology,
    pub carrier_rtp: UdpSocket,
    pub vendor_rtp: UdpSocket,
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
        Net {
            topo,
            carrier_rtp,
            vendor_rtp,
        }
    }

    pub fn carrier_sip(&self) -> SocketAddr {
        SocketAddr::new(self.topo.caller_if.ip(false), SIP_PORT)
    }

    pub fn vendor_sip(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.topo.callee_if.ip(false), port)
    }

    pub fn carrier_rtp_addr(&self) -> SocketAddr {
        self.carrier_rtp.local_addr().expect("addr")
    }

    pub fn vendor_rtp_addr(&self) -> SocketAddr {
        self.vendor_rtp.local_addr().expect("addr")
    }

    /// A vendor UAS at `port`, started and bound.
    pub fn uas(&self, scenario: &str, port: u16, calls: u32, ring: Duration) -> sip::SippRun {
        let mut s = Sipp::new(scenario, self.vendor_sip(port));
        s.calls = calls;
        s.pause = ring;
        if !matches!(scenario, "uas_ring.xml" | "uas_503.xml") {
            s.var("rtp_port", &RTP_PORT.to_string());
        }
        let mut run = s.spawn(&self.topo.callee).expect("spawn uas");
        run.wait_bound(&self.topo.callee).expect("uas bound");
        run
    }

    /// A host of the attacker's on the carrier's /24 (`10.X.1.66`; inside a namespace it may
    /// send from anything), and its socket.
    pub fn attacker(&self) -> UdpSocket {
        let c = self.topo.caller_if.ipv4.octets();
        let ip = Ipv4Addr::new(c[0], c[1], c[2], 66);
        let cidr = format!("{ip}/24");
        self.topo
            .caller
            .ip(["addr", "add", &cidr, "dev", &self.topo.caller_if.dev])
            .expect("attacker address");
        rtp::bind_in(&self.topo.caller, SocketAddr::new(ip.into(), 40_000))
            .expect("attacker socket")
    }

    /// A carrier UAC behind NAT: its SDP names `sdp_ip`, a private address, while its SIP and
    /// RTP come from its real one.
    pub fn uac_nat(&self, target: SocketAddr, hold: Duration, sdp_ip: &str) -> Sipp {
        let mut s = self.uac("uac_nat.xml", target, hold);
        s.var("sdp_ip", sdp_ip);
        s
    }

    /// A carrier UAC sending to `target`.
    pub fn uac(&self, scenario: &str, target: SocketAddr, hold: Duration) -> Sipp {
        let mut s = Sipp::uac(scenario, self.carrier_sip(), target, CLI, CLD, RTP_PORT);
        s.pause = hold;
        s
    }

    /// Media of an answered call: waits for both sides' SDP and exchanges RTP both ways.
    pub fn media(&self, uac: &mut sip::SippRun, uas: &mut sip::SippRun, tag: &str) -> Media {
        let at_carrier = uac
            .wait_media(tag, Duration::from_secs(10))
            .expect("carrier got an SDP answer");
        let at_vendor = uas
            .wait_media("MEDIA", Duration::from_secs(10))
            .expect("vendor got an SDP offer");
        let check = MediaCheck::run(
            &self.carrier_rtp,
            &self.vendor_rtp,
            at_carrier,
            at_vendor,
            PACKETS,
            1,
        );
        Media {
            at_carrier,
            at_vendor,
            check,
        }
    }
}

pub struct Media {
    /// Where the carrier was told to send (the SDP answer it got).
    pub at_carrier: SocketAddr,
    /// Where the vendor was told to send (the SDP offer it got).
    pub at_vendor: SocketAddr,
    pub check: MediaCheck,
}

/// sipd as built by this workspace; built here once per test process (so a stale binary from
/// an earlier build is never what gets tested).
pub fn sipd_bin() -> PathBuf {
    tests::bins::cargo_bin("sipd", "sipd")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plane {
    /// Generic (skb) XDP: the kernel relays media; works on veths without peer programs.
    Xdp,
    Userspace,
}

impl Plane {
    pub fn mode(self) -> &'static str {
        match self {
            Plane::Xdp => "xdp-skb",
            Plane::Userspace => "userspace",
        }
    }
}

/// What a test provisions: one tariff, one or two vendor connections, one carrier account.
#[derive(Clone, Debug)]
pub struct Prov {
    /// Per minute, decimal.
    pub rate: &'static str,
    pub expected_call_secs: u64,
    pub balance: &'static str,
    pub cps_limit: u32,
    pub max_sessions: u32,
    pub max_call_secs: u64,
    /// Digest credentials; None: the rule authenticates by source address alone.
    pub digest: Option<(&'static str, &'static str)>,
    pub cli_prefix: &'static str,
    pub cld_prefix: &'static str,
    /// (port on the vendor host, max_channels, priority) per connection.
    pub vendors: Vec<(u16, u32, u32)>,
    pub vendor_cps: u32,
}

impl Default for Prov {
    fn default() -> Prov {
        Prov {
            rate: "0.60",
            expected_call_secs: 60,
            balance: "100.00",
            cps_limit: 20,
            max_sessions: 20,
            max_call_secs: 3600,
            digest: None,
            cli_prefix: "44",
            cld_prefix: "33",
            vendors: vec![(SIP_PORT, 20, 10)],
            vendor_cps: 50,
        }
    }
}

impl Prov {
    pub fn toml(&self, net: &Net) -> String {
        let vendor_ip = net.topo.callee_if.ip(false);
        let carrier_ip = net.topo.caller_if.ip(false);
        let mut t = format!(
            "[[tariff]]\nname = \"std\"\nrate_per_minute = \"{}\"\nexpected_call_secs = {}\n\
             initial_increment_secs = 1\nincrement_secs = 1\n\n",
            self.rate, self.expected_call_secs
        );
        for (i, (port, channels, prio)) in self.vendors.iter().enumerate() {
            t += &format!(
                "[[connection]]\nname = \"vendor-{i}\"\ndestination = \"{vendor_ip}:{port}\"\n\
                 transport = \"udp\"\ncld_prefixes = [\"{}\"]\nmax_channels = {channels}\n\
                 cps_limit = {}\npriority = {prio}\n\n",
                self.cld_prefix, self.vendor_cps
            );
        }
        t += &format!(
            "[[account]]\nname = \"carrier-a\"\ntariff = \"std\"\nbalance = \"{}\"\n\
             cps_limit = {}\nmax_sessions = {}\nmax_call_secs = {}\n",
            self.balance, self.cps_limit, self.max_sessions, self.max_call_secs
        );
        if let Some((u, p)) = self.digest {
            t += &format!("sip = {{ username = \"{u}\", password = \"{p}\" }}\n");
        }
        t += &format!(
            "\n[[account.rule]]\nname = \"office\"\nremote = \"{carrier_ip}/32\"\n\
             cli = {{ prefix = \"{}\" }}\ncld = {{ prefix = \"{}\" }}\nip_only = {}\n",
            self.cli_prefix,
            self.cld_prefix,
            self.digest.is_none()
        );
        t
    }
}

/// What a test sets in sbc.toml beyond the defaults: lines added to a table each.
#[derive(Clone, Debug)]
pub struct Settings {
    pub media_timeout_secs: u64,
    /// Lines for `[sip]`, `[media]`, `[management]` and `[firewall]`, each ending in a newline.
    pub sip: String,
    pub media: String,
    pub management: String,
    pub firewall: String,
    /// sipd's open-file limit (soft and hard, set with `prlimit`); None: inherited.
    pub nofile: Option<u64>,
    /// SIP's listen address (UDP and TCP); None: the relay's carrier-facing address.
    pub sip_listen: Option<IpAddr>,
    /// `[dataplane] interfaces`; None: both relay veths.
    pub interfaces: Option<Vec<String>>,
    /// SIP on the relay's IPv6 address too, and the relay on `::` advertising both families.
    pub dual_stack: bool,
    /// `sipd init` an admin `admin` with this password before the start; the TOTP secret
    /// it printed is [`Sbc::admin_totp`].
    pub admin_password: Option<&'static str>,
    /// Run `sipd import` and `sipd run` as a non-root user with only some capabilities, as
    /// the systemd unit does; None: as the test runs (root).
    pub run_as: Option<RunAs>,
    /// Whole tables (`[cluster]` ...) appended at the end of sbc.toml.
    pub tables: String,
}

/// A non-root user (numeric ids, no passwd entry needed) and the capabilities `sipd run` gets
/// as them, through `setpriv`: ambient, inheritable, permitted, effective and bounding set are
/// exactly `caps`. The test directory and the instance's pin directory are handed to the user
/// first, as the unit's `StateDirectory=` and `ExecStartPre=` do.
#[derive(Clone, Debug)]
pub struct RunAs {
    /// The user id sipd runs as.
    pub uid: u32,
    /// Its group id.
    pub gid: u32,
    /// Capability names as systemd spells them (`CAP_BPF`).
    pub caps: Vec<String>,
    /// Leave a map pin of root's (mode 0600, made with `bpftool`) in the pin directory, as a
    /// run as root leaves its pins.
    pub root_owned_pin: bool,
}

impl RunAs {
    /// `setpriv ... --` as this user; with `caps` false, with no capability at all.
    fn setpriv(&self, mut cmd: std::process::Command, caps: bool) -> std::process::Command {
        let list: String = if caps {
            self.caps
                .iter()
                .map(|c| format!(",+{}", c.trim_start_matches("CAP_").to_lowercase()))
                .collect()
        } else {
            String::new()
        };
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg(format!("--inh-caps=-all{list}"))
            .arg(format!("--ambient-caps=-all{list}"))
            .arg(format!("--bounding-set=-all{list}"))
            .arg("--");
        cmd
    }

    /// Gives `path` to the user (not recursively: the test made it and what is in it).
    fn own(&self, path: &std::path::Path) {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            media_timeout_secs: 60,
            sip: String::new(),
            media: String::new(),
            management: String::new(),
            firewall: String::new(),
            nofile: None,
            sip_listen: None,
            interfaces: None,
            dual_stack: false,
            admin_password: None,
            run_as: None,
            tables: String::new(),
        }
    }
}

/// `sipd run` in the relay namespace, with its own data directory and BPF instance.
pub struct Sbc {
    pub plane: Plane,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub instance: String,
    pub child: Option<NsChild>,
    /// SIP and media address (the relay's carrier-facing one).
    pub addr: IpAddr,
    pub relay_ns: String,
    /// The TOTP secret of the admin made with [`Settings::admin_password`].
    pub admin_totp: Option<Vec<u8>>,
    /// Who store commands run as (the store's owner); None: as the test.
    pub run_as: Option<RunAs>,
    /// The admin's password (with [`Settings::admin_password`]), for [`Sbc::api_get`].
    pub admin_password: Option<&'static str>,
}

impl Sbc {
    /// Writes sbc.toml (with `extra` appended inside the right tables via `sections`), imports
    /// `prov`, starts sipd and waits for "sipd ready".
    pub fn start(net: &Net, plane: Plane, prov: &Prov, media_timeout_secs: u64) -> Sbc {
        Sbc::start_with(
            net,
            plane,
            prov,
            &Settings {
                media_timeout_secs,
                ..Settings::default()
            },
        )
    }

    /// [`Sbc::start`] with more settings.
    pub fn start_with(net: &Net, plane: Plane, prov: &Prov, set: &Settings) -> Sbc {
        Sbc::start_provisioned(net, plane, &prov.toml(net), set)
    }

    /// [`Sbc::start_with`] with a provisioning file written by the test.
    pub fn start_provisioned(net: &Net, plane: Plane, prov_toml: &str, set: &Settings) -> Sbc {
        let mut sbc = Sbc::spawn_provisioned(net, plane, prov_toml, set);
        sbc.wait_ready(0);
        sbc
    }

    /// [`Sbc::start_with`] without waiting for "sipd ready": for a test that expects sipd to
    /// refuse to start ([`Sbc::wait_exit`]).
    pub fn spawn_with(net: &Net, plane: Plane, prov: &Prov, set: &Settings) -> Sbc {
        Sbc::spawn_provisioned(net, plane, &prov.toml(net), set)
    }

    /// Waits (polling, up to `limit`) for sipd to exit; its status, or None if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// [`Sbc::start_provisioned`] without waiting for "sipd ready" (see [`Sbc::spawn_with`]).
    pub fn spawn_provisioned(net: &Net, plane: Plane, prov_toml: &str, set: &Settings) -> Sbc {
        let media_timeout_secs = set.media_timeout_secs;
        let instance = format!("sbct{}s{}", std::process::id(), net.topo.id());
        let dir = std::env::temp_dir().join(format!("{instance}-sipd"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("sipd dir");
        let addr = net.topo.relay_caller_if.ip(false);
        let config = dir.join("sbc.toml");
        let v6 = net.topo.relay_caller_if.ip(true);
        let (listen, media_addr) = if set.dual_stack {
            (
                format!("\"{addr}:{SIP_PORT}\", \"[{v6}]:{SIP_PORT}\""),
                format!(
                    "\"::\"\nadvertised_address = \"{addr}\"\nadvertised_address_v6 = \"{v6}\""
                ),
            )
        } else {
            let sip = set.sip_listen.unwrap_or(addr);
            (format!("\"{sip}:{SIP_PORT}\""), format!("\"{addr}\""))
        };
        let toml = format!(
            "data_dir = \"{data}\"\n\n[sip]\nudp = [{listen}]\ntcp = [{listen}]\n\
             failover_secs = 2\n{sip_extra}\n[auth]\nrealm = \"sbc\"\n\n\
             [media]\naddress = {media_addr}\nport_min = {PORT_MIN}\nport_max = {PORT_MAX}\n\
             timeout_secs = {media_timeout_secs}\n{media_extra}\n[dataplane]\nmode = \"{mode}\"\n\
             interfaces = [{ifaces}]\ninstance = \"{instance}\"\n\n\
             [management]\npepper_file = \"{pepper}\"\n{mgmt_extra}\n[firewall]\n{fw_extra}\n{tables}",
            data = dir.join("data").display(),
            pepper = dir.join("sipd.pepper").display(),
            mode = plane.mode(),
            ifaces = set
                .interfaces
                .clone()
                .unwrap_or_else(|| vec![
                    net.topo.relay_caller_if.dev.clone(),
                    net.topo.relay_callee_if.dev.clone(),
                ])
                .iter()
                .map(|i| format!("\"{i}\""))
                .collect::<Vec<_>>()
                .join(", "),
            sip_extra = set.sip,
            media_extra = set.media,
            mgmt_extra = set.management,
            fw_extra = set.firewall,
            tables = set.tables,
        );
        std::fs::write(&config, toml).expect("write sbc.toml");
        let prov_file = dir.join("prov.toml");
        std::fs::write(&prov_file, prov_toml).expect("write prov.toml");
        if let Some(r) = &set.run_as {
            for f in [&dir, &config, &prov_file] {
                r.own(f);
            }
            let pins = PathBuf::from("/sys/fs/bpf").join(&instance);
            let _ = std::fs::remove_dir_all(&pins);
            std::fs::create_dir(&pins).expect("pin directory");
            std::fs::set_permissions(&pins, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .expect("chmod pins");
            r.own(&pins);
            if r.root_owned_pin {
                let pin = pins.join(relay_common::maps::SERVICES);
                let st = std::process::Command::new("bpftool")
                    .args(["map", "create"])
                    .arg(&pin)
                    .args(["type", "hash", "key", "4", "value", "4", "entries", "1"])
                    .args(["name", "left_by_root"])
                    .status()
                    .expect("run bpftool");
                assert!(st.success(), "bpftool map create {}", pin.display());
            }
        }
        let mut import = match &set.run_as {
            Some(r) => {
                let mut c = r.setpriv(std::process::Command::new("setpriv"), false);
                c.arg(sipd_bin());
                c
            }
            None => std::process::Command::new(sipd_bin()),
        };
        let out = import
            .arg("-c")
            .arg(&config)
            .arg("import")
            .arg(&prov_file)
            .output()
            .expect("run sipd import");
        assert!(
            out.status.success(),
            "sipd import failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            prov_toml
        );
        let admin_totp = set
            .admin_password
            .map(|pw| totp::init_admin(&sipd_bin(), &config, &dir, pw));
        let log = dir.join("sipd.log");
        let mut sbc = Sbc {
            plane,
            dir,
            config,
            log,
            instance,
            child: None,
            addr,
            relay_ns: net.topo.relay.name().to_string(),
            admin_totp,
            run_as: set.run_as.clone(),
            admin_password: set.admin_password,
        };
        sbc.launch(net, set.nofile);
        sbc
    }

    /// Starts `sipd run` again on the same configuration and data directory (after
    /// [`Sbc::stop`]): what an operator's restart does. Its log is appended to the first's.
    pub fn restart(&mut self, net: &Net) {
        self.stop();
        self.start_again(net);
    }

    /// Starts `sipd run` again after it exited (a hand-over, a kill) and waits until ready.
    pub fn start_again(&mut self, net: &Net) {
        assert!(self.child.is_none(), "sipd still runs");
        let start = self.launch(net, None);
        self.wait_ready(start);
    }

    /// Sends `sig` to sipd (by PID) and, for SIGKILL, reaps it.
    pub fn signal(&mut self, sig: i32) {
        let Some(pid) = self.pid() else { return };
        // SAFETY: kill(2) on our own child's PID, which is not reaped yet.
        unsafe { libc::kill(pid as libc::pid_t, sig) };
        if sig == libc::SIGKILL
            && let Some(mut c) = self.child.take()
        {
            let _ = c.wait();
        }
    }

    /// SIGUSR2: sipd hands its calls over to the next run; it must exit cleanly in `limit`.
    pub fn hand_over(&mut self, limit: Duration) {
        self.signal(libc::SIGUSR2);
        let st = self.wait_exit(limit);
        assert!(
            st.is_some_and(|s| s.success()),
            "sipd did not hand over and exit cleanly: {st:?}\n{}",
            self.log_text()
        );
    }

    /// `sipd run` in the relay namespace (as [`Sbc::run_as`] when set), its output appended to
    /// `self.log`; returns where in the log this run's output starts.
    fn launch(&mut self, net: &Net, nofile: Option<u64>) -> usize {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let start = self.log_text().len();
        let mut cmd = match (&self.run_as, nofile) {
            (Some(r), _) => {
                let mut c = r.setpriv(net.topo.relay.command("setpriv"), true);
                c.arg(sipd_bin());
                c
            }
            (None, Some(n)) => {
                let mut c = net.topo.relay.command("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(sipd_bin());
                c
            }
            (None, None) => net.topo.relay.command(sipd_bin()),
        };
        cmd.arg("-c")
            .arg(&self.config)
            .arg("run")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("log"))
            .stderr(logf);
        self.child = Some(NsChild::spawn(&mut cmd).expect("spawn sipd run"));
        start
    }

    /// Waits for "sipd ready" in the log after `start`; panics with the log if sipd exits
    /// first or is not ready in 20 s.
    fn wait_ready(&mut self, start: usize) {
        let end = Instant::now() + Duration::from_secs(20);
        while !self
            .log_text()
            .get(start..)
            .is_some_and(|t| t.contains("sipd ready"))
        {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("sipd exited ({st}) before ready:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < end,
                "no \"sipd ready\" in 20 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn sip(&self) -> SocketAddr {
        SocketAddr::new(self.addr, SIP_PORT)
    }

    /// sipd's process id while it runs (`prlimit` and `nsenter` exec it in place).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(NsChild::pid)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One sample of `/metrics`, read in the relay namespace as an operator's scraper would:
    /// the value of the series `key` (`sbc_relay_sessions`, or with its labels). Needs
    /// `metrics_public = true`.
    pub fn metric(&self, key: &str) -> u64 {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.relay_ns))
            .args(["--", "curl", "-sk", "--max-time", "5"])
            .arg("https://127.0.0.1:8443/metrics")
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse::<f64>().ok())?
            })
            .unwrap_or_else(|| panic!("no {key} in /metrics:\n{text}")) as u64
    }

    /// A session token of the admin [`Settings::admin_password`] made (logged in with its
    /// TOTP code), for [`Sbc::api`].
    pub fn login(&self) -> String {
        let secret = self.admin_totp.as_ref().expect("Settings::admin_password");
        let login = serde_json::json!({
            "username": "admin",
            "password": self.admin_password,
            "totp": totp::totp(secret, totp::now_secs()),
        });
        let out = self.curl(
            &["-X", "POST", "--data-binary", &login.to_string()],
            "/api/login",
        );
        out["token"]
            .as_str()
            .unwrap_or_else(|| panic!("login refused: {out}"))
            .to_string()
    }

    /// `method path` with a JSON `body` on the management API, with a [`Sbc::login`] token;
    /// the JSON it answered (`null` for an empty answer).
    pub fn api(&self, token: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
        let auth = format!("Authorization: Bearer {token}");
        let mut args = vec!["-X", method, "-H", &auth];
        let data = body.map(ToString::to_string);
        if let Some(d) = &data {
            args.extend(["--data-binary", d.as_str()]);
        }
        self.curl_or_null(&args, path)
    }

    /// `GET path` on the management API as the admin [`Settings::admin_password`] made
    /// (logged in with its TOTP code), read in the relay namespace; the JSON it answered.
    pub fn api_get(&self, path: &str) -> Value {
        let secret = self.admin_totp.as_ref().expect("Settings::admin_password");
        let login = serde_json::json!({
            "username": "admin",
            "password": self.admin_password,
            "totp": totp::totp(secret, totp::now_secs()),
        });
        let out = self.curl(
            &["-X", "POST", "--data-binary", &login.to_string()],
            "/api/login",
        );
        let token = out["token"]
            .as_str()
            .unwrap_or_else(|| panic!("login refused: {out}"))
            .to_string();
        self.curl(&["-H", &format!("Authorization: Bearer {token}")], path)
    }

    /// [`Sbc::curl`], but an empty answer is `null`.
    fn curl_or_null(&self, args: &[&str], path: &str) -> Value {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.relay_ns))
            .args(["--", "curl", "-sk", "--max-time", "10"])
            .args(["-H", "Content-Type: application/json"])
            .args(args)
            .arg(format!("https://127.0.0.1:8443{path}"))
            .output()
            .expect("run curl");
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Value::Null;
        }
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{path}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// curl `args` https://127.0.0.1:8443`path` in the relay namespace; its JSON answer.
    fn curl(&self, args: &[&str], path: &str) -> Value {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.relay_ns))
            .args(["--", "curl", "-sk", "--max-time", "10"])
            .args(["-H", "Content-Type: application/json"])
            .args(args)
            .arg(format!("https://127.0.0.1:8443{path}"))
            .output()
            .expect("run curl");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{path}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// A data-plane counter (`sbc_dataplane_packets_total`, by reason), on either plane.
    pub fn dataplane_metric(&self, reason: &str) -> u64 {
        self.metric(&format!(
            "sbc_dataplane_packets_total{{reason=\"{reason}\"}}"
        ))
    }

    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The kernel's verdict counters for this instance (XDP only), read from the pinned maps
    /// as an operator tool would.
    pub fn kernel_stats(&self) -> std::collections::BTreeMap<&'static str, u64> {
        let mut ebpf =
            relay_user::loader::load_pinned(relay_user::object::ebpf_object(), &self.instance)
                .expect("open the instance's pinned maps");
        let maps = relay_user::maps::XdpMaps::from_ebpf(&mut ebpf).expect("maps");
        relay_user::maps::stats_by_name(&maps.stats_raw().expect("stats"))
    }

    /// SIGTERM, and the exit must be clean (0) within 10 s.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let st = c.stop(Duration::from_secs(10)).expect("stop sipd");
            assert!(
                st.success(),
                "sipd did not exit cleanly on SIGTERM: {st:?}\n{}",
                self.log_text()
            );
        }
    }

    /// Stops sipd and reads its CDRs.
    pub fn cdrs(&mut self) -> Vec<Value> {
        self.stop();
        self.json_list(&["cdrs", "list", "--json"])
    }

    /// The accounts' ids by name (sipd stopped: the store has one writer).
    pub fn account_ids(&mut self) -> std::collections::BTreeMap<String, u64> {
        self.stop();
        self.json_list(&["accounts", "list", "--json"])
            .iter()
            .map(|a| {
                let name = a["name"].as_str().unwrap_or_default().to_string();
                (name, a["id"].as_u64().unwrap_or(0))
            })
            .collect()
    }

    /// `sipd`, as the store's owner ([`Sbc::run_as`], with no capability) when set.
    fn store_command(&self) -> std::process::Command {
        match &self.run_as {
            Some(r) => {
                let mut c = r.setpriv(std::process::Command::new("setpriv"), false);
                c.arg(sipd_bin());
                c
            }
            None => std::process::Command::new(sipd_bin()),
        }
    }

    /// `sipd <args>` against this instance's configuration (sipd stopped, for commands that
    /// open the store: it has one writer).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        self.store_command()
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run sipd")
    }

    /// `sipd <args>` against this instance's store, whose output is a JSON array.
    pub fn json_list(&self, args: &[&str]) -> Vec<Value> {
        let out = self
            .store_command()
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run sipd");
        assert!(
            out.status.success(),
            "sipd {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        match serde_json::from_slice::<Value>(&out.stdout) {
            Ok(Value::Array(v)) => v,
            other => panic!(
                "sipd {args:?} is not a JSON array: {other:?}: {}",
                String::from_utf8_lossy(&out.stdout)
            ),
        }
    }
}

/// The 6-digit TOTP code (RFC 6238: 30 s steps, HMAC-SHA-1) of `secret` now.
pub fn totp_now(secret: &[u8]) -> String {
    totp::totp_now(secret)
}

impl Drop for Sbc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.stop(Duration::from_secs(5));
        }
        // Pins of this instance (maps, XDP links), which sipd leaves for its next start.
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
