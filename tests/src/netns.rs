//! Network-namespace harness: throwaway namespaces and the standard three-host topology.
//!
//! Everything here is created by the calling process and removed when its guard drops:
//! [`Netns`] deletes its namespace, [`NsChild`] kills its process by PID, [`Topology`] owns
//! three namespaces (deleting a namespace deletes the veths inside it). The module needs only
//! `std`, `libc` and `anyhow`, so `xtask` uses it too (`cargo xtask netns up|down`).
//!
//! ```text
//!   caller ns                    relay ns                         callee ns
//!   to-relay  <--- link 1 --->  to-caller | to-callee  <--- link 2 --->  to-relay
//!   ifindex 11                   12          21                           22
//!   10.X.1.1                     10.X.1.2    10.X.2.1                     10.X.2.2
//!   fd00:X:1::1                  fd00:X:1::2 fd00:X:2::1                  fd00:X:2::2
//!   02:5b:X:01:00:01             ..:01:00:02 ..:02:00:01                  ..:02:00:02
//! ```
//!
//! The caller and callee route everything through the relay; the relay forwards between its
//! links (unless [`TopologyOptions::forwarding`] is off). X is [`Topology::id`], different for
//! each topology a process makes. The addresses exist only inside these namespaces.

use std::ffi::{CString, OsStr};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Prefix of every namespace this harness names by itself.
pub const PREFIX: &str = "sbct";

const NETNS_DIR: &str = "/run/netns";

static COUNTER: AtomicU32 = AtomicU32::new(0);
static REAP: Once = Once::new();

/// A network namespace made with `ip netns add`, deleted (`ip netns del`) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    owned: bool,
}

impl Netns {
    /// A new namespace with a unique short name, `sbct<pid>-<n>`.
    pub fn new() -> anyhow::Result<Netns> {
        Self::unique("")
    }

    /// A new namespace named `sbct<pid>-<n><tag>` (the tag only helps a human reading
    /// `ip netns list`).
    pub fn unique(tag: &str) -> anyhow::Result<Netns> {
        REAP.call_once(reap_stale);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self::named(&format!("{PREFIX}{}-{n}{tag}", std::process::id()))
    }

    /// A new namespace with exactly this name; fails if one by that name exists.
    pub fn named(name: &str) -> anyhow::Result<Netns> {
        if name.is_empty() || name.contains('/') {
            bail!("bad namespace name {name:?}");
        }
        if Self::exists(name) {
            bail!("network namespace {name} already exists");
        }
        ip(["netns", "add", name])?;
        Ok(Netns {
            name: name.to_string(),
            owned: true,
        })
    }

    /// Whether a namespace of this name is registered under /run/netns.
    pub fn exists(name: &str) -> bool {
        Path::new(NETNS_DIR).join(name).exists()
    }

    /// Deletes a namespace by name (one made by an earlier `keep`, say).
    pub fn delete(name: &str) -> anyhow::Result<()> {
        ip(["netns", "del", name])
    }

    /// The namespace's name, as `ip netns` lists it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's bind mount, `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// Leaves the namespace in place when the guard drops; returns its name.
    pub fn keep(mut self) -> String {
        self.owned = false;
        std::mem::take(&mut self.name)
    }

    /// `nsenter --net=/run/netns/<name> <program>`, ready for arguments, stdio and env.
    ///
    /// Not `ip netns exec`: that also remounts /sys in a private mount namespace, whose fresh
    /// bpffs is not the host's, so pins made by a program started that way are invisible to
    /// everyone else (and gone when it exits). nsenter changes only the network namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Runs a program inside the namespace and collects its output (any exit status).
    pub fn exec<I, S>(&self, program: &str, args: I) -> anyhow::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args).stdin(Stdio::null());
        cmd.output()
            .with_context(|| format!("nsenter --net {} {program}", self.name))
    }

    /// Like [`Netns::exec`], but a non-zero exit is an error (with its stderr); returns stdout.
    pub fn run<I, S>(&self, program: &str, args: I) -> anyhow::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<S> = args.into_iter().collect();
        let out = self.exec(program, &args)?;
        if !out.status.success() {
            let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
            bail!(
                "in netns {}: `{program} {}` failed ({}): {}",
                self.name,
                shown.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts a program inside the namespace; the guard kills it (by PID) on drop.
    /// Stdin is null; stdout and stderr are inherited (use [`Netns::command`] and
    /// [`NsChild::spawn`] to choose).
    pub fn spawn<I, S>(&self, program: &str, args: I) -> anyhow::Result<NsChild>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args).stdin(Stdio::null());
        NsChild::spawn(&mut cmd)
    }

    /// Runs `f` on a fresh thread that has joined this namespace, and returns its result.
    /// Sockets made in `f` stay in the namespace wherever they are used afterwards; this is how
    /// a test binds a socket, or loads and attaches a program, inside a namespace.
    /// A panic in `f` is passed on to the caller; so is failing to join the namespace.
    pub fn enter<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        std::thread::scope(|s| {
            let handle = s.spawn(|| {
                if let Err(e) = self.join_current_thread() {
                    panic!("{e:#}");
                }
                f()
            });
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Moves the calling thread into this namespace for good (`setns(CLONE_NEWNET)`). For a
    /// thread of your own that should live there; [`Netns::enter`] is the scoped form.
    pub fn join_current_thread(&self) -> anyhow::Result<()> {
        let path = self.path();
        let file =
            std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
        // SAFETY: the descriptor is valid for the duration of the call.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("setns into {}", self.name));
        }
        Ok(())
    }

    /// The interface index of `dev` inside this namespace.
    pub fn ifindex(&self, dev: &str) -> anyhow::Result<u32> {
        let c = CString::new(dev).context("interface name")?;
        // SAFETY: `c` is a valid NUL-terminated string.
        let idx = self.enter(|| unsafe { libc::if_nametoindex(c.as_ptr()) });
        if idx == 0 {
            bail!("no interface {dev} in netns {}", self.name);
        }
        Ok(idx)
    }

    /// Writes a sysctl under /proc/sys (e.g. `net/ipv4/ip_forward`) inside this namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let path = Path::new("/proc/sys").join(key);
        self.enter(|| std::fs::write(&path, value))
            .with_context(|| format!("sysctl {key}={value} in netns {}", self.name))
    }

    /// `ip -n <name> <args>`, failing with ip's message.
    pub fn ip<I, S>(&self, args: I) -> anyhow::Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        ip([OsStr::new("-n"), OsStr::new(&self.name)]
            .into_iter()
            .map(OsStr::to_os_string)
            .chain(args.into_iter().map(|a| a.as_ref().to_os_string())))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.owned
            && let Err(e) = Self::delete(&self.name)
        {
            eprintln!("netns: cannot delete {}: {e:#}", self.name);
        }
    }
}

/// A process started inside a namespace. Dropping it kills it (SIGKILL by PID) and reaps it.
/// Derefs to [`Child`] for its pipes and `wait`.
#[derive(Debug)]
pub struct NsChild {
    child: Child,
}

impl NsChild {
    /// Spawns a prepared command (e.g. from [`Netns::command`]). nsenter execs the
    /// program, so the PID is the program's own.
    pub fn spawn(cmd: &mut Command) -> anyhow::Result<NsChild> {
        let child = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?;
        Ok(NsChild { child })
    }

    /// The process's PID (the program's own, since nsenter execs it): what cleanup kills by.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the process to stop (SIGTERM), waits up to `grace`, then kills it.
    /// Returns its exit status.
    pub fn stop(&mut self, grace: Duration) -> anyhow::Result<std::process::ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        // SAFETY: plain kill(2) on our own child's PID, which is not reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        Ok(self.child.wait()?)
    }
}

impl std::ops::Deref for NsChild {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl std::ops::DerefMut for NsChild {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for NsChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Choices for [`Topology::three`].
#[derive(Debug, Clone)]
pub struct TopologyOptions {
    /// GRO on every veth: `Some(true)` gives veths NAPI, which XDP_REDIRECT into a veth
    /// needs when the receiving end has no XDP program of its own; `None` leaves the default.
    pub gro: Option<bool>,
    /// IP forwarding (v4 and v6) in the relay namespace, so caller and callee reach each other
    /// through it. On by default; a relay-only test may turn it off.
    pub forwarding: bool,
    /// Fixed namespace names `<name>-caller`, `<name>-relay`, `<name>-callee` instead of
    /// unique ones (for `cargo xtask netns up`).
    pub name: Option<String>,
    /// Fixed X in 10.X.n.0/24 and fd00:X:n::/64 (1..=254) instead of a per-topology one.
    pub id: Option<u8>,
}

impl Default for TopologyOptions {
    fn default() -> Self {
        TopologyOptions {
            gro: None,
            forwarding: true,
            name: None,
            id: None,
        }
    }
}

/// One end of a veth link, as seen from inside its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Interface name inside the namespace.
    pub dev: String,
    /// Its interface index inside the namespace (fixed by the topology: 11, 12, 21, 22).
    pub ifindex: u32,
    /// Its MAC address (fixed by the topology, see the module docs).
    pub mac: [u8; 6],
    /// Address with a /24 on the link.
    pub ipv4: Ipv4Addr,
    /// Address with a /64 on the link.
    pub ipv6: Ipv6Addr,
}

impl Endpoint {
    /// Its IPv6 address when `v6`, else its IPv4 address.
    pub fn ip(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.ipv6)
        } else {
            IpAddr::V4(self.ipv4)
        }
    }

    /// The MAC as `aa:bb:cc:dd:ee:ff`.
    pub fn mac_string(&self) -> String {
        let m = self.mac;
        format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Caller — relay — callee over two veth pairs; see the module docs for the layout.
/// Dropping it deletes the three namespaces and with them the veths.
#[derive(Debug)]
pub struct Topology {
    id: u8,
    /// The caller host's namespace (link 1's far end).
    pub caller: Netns,
    /// The relay's namespace, where sipd or relayd runs between the two links.
    pub relay: Netns,
    /// The callee host's namespace (link 2's far end).
    pub callee: Netns,
    /// The caller's end of link 1 (in `caller`).
    pub caller_if: Endpoint,
    /// The relay's end of link 1, facing the caller (in `relay`).
    pub relay_caller_if: Endpoint,
    /// The relay's end of link 2, facing the callee (in `relay`).
    pub relay_callee_if: Endpoint,
    /// The callee's end of link 2 (in `callee`).
    pub callee_if: Endpoint,
}

impl Topology {
    /// Builds the topology: namespaces, veths with fixed MACs, v4 + v6 addresses (no DAD, so
    /// usable at once), `lo` up, TX checksum offload off, routes through the relay.
    pub fn three(opts: TopologyOptions) -> anyhow::Result<Topology> {
        let id = match opts.id {
            Some(id @ 1..=254) => id,
            Some(id) => bail!("topology id {id} out of 1..=254"),
            None => next_id(),
        };
        let (caller, relay, callee) = match &opts.name {
            Some(n) => (
                Netns::named(&format!("{n}-caller"))?,
                Netns::named(&format!("{n}-relay"))?,
                Netns::named(&format!("{n}-callee"))?,
            ),
            None => (
                Netns::unique("c")?,
                Netns::unique("r")?,
                Netns::unique("e")?,
            ),
        };

        for ns in [&caller, &relay, &callee] {
            // Before any veth exists, so `default` covers them; `all` covers lo.
            for scope in ["all", "default"] {
                ns.sysctl(&format!("net/ipv6/conf/{scope}/accept_dad"), "0")?;
            }
            ns.ip(["link", "set", "lo", "up"])?;
        }
        let fwd = if opts.forwarding { "1" } else { "0" };
        relay.sysctl("net/ipv4/ip_forward", fwd)?;
        relay.sysctl("net/ipv6/conf/all/forwarding", fwd)?;

        // Fixed ifindexes 10*link + host. The two ends of a pair must differ: the kernel treats
        // a carrier change on a veth whose ifindex equals its peer's (both 2 in fresh namespaces)
        // as not urgent and applies it up to a second later, and until then IPv6 drops packets.
        let plan = |link: u8, host: u8, dev: &str| Endpoint {
            dev: dev.to_string(),
            ifindex: u32::from(10 * link + host),
            mac: [0x02, 0x5b, id, link, 0x00, host],
            ipv4: Ipv4Addr::new(10, id, link, host),
            ipv6: Ipv6Addr::new(0xfd00, id.into(), link.into(), 0, 0, 0, 0, host.into()),
        };
        let caller_if = plan(1, 1, "to-relay");
        let relay_caller_if = plan(1, 2, "to-caller");
        let relay_callee_if = plan(2, 1, "to-callee");
        let callee_if = plan(2, 2, "to-relay");

        veth(&caller, &caller_if, &relay, &relay_caller_if)?;
        veth(&relay, &relay_callee_if, &callee, &callee_if)?;
        for (ns, ep) in [
            (&caller, &caller_if),
            (&relay, &relay_caller_if),
            (&relay, &relay_callee_if),
            (&callee, &callee_if),
        ] {
            configure(ns, ep, opts.gro)?;
        }
        for (ns, gw) in [(&caller, &relay_caller_if), (&callee, &relay_callee_if)] {
            ns.ip(["-4", "route", "add", "default", "via", &gw.ipv4.to_string()])?;
            ns.ip(["-6", "route", "add", "default", "via", &gw.ipv6.to_string()])?;
        }
        for (ns, ep) in [
            (&caller, &caller_if),
            (&relay, &relay_caller_if),
            (&relay, &relay_callee_if),
            (&callee, &callee_if),
        ] {
            wait_up(ns, ep)?;
        }

        Ok(Topology {
            id,
            caller,
            relay,
            callee,
            caller_if,
            relay_caller_if,
            relay_callee_if,
            callee_if,
        })
    }

    /// X in 10.X.n.0/24 and fd00:X:n::/64.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// The three namespaces, caller first.
    pub fn namespaces(&self) -> [&Netns; 3] {
        [&self.caller, &self.relay, &self.callee]
    }

    /// Leaves everything in place when dropped; returns the namespace names.
    pub fn keep(self) -> [String; 3] {
        [self.caller.keep(), self.relay.keep(), self.callee.keep()]
    }
}

/// Creates a veth pair with one end in each namespace (never in the caller's own namespace).
fn veth(a_ns: &Netns, a: &Endpoint, b_ns: &Netns, b: &Endpoint) -> anyhow::Result<()> {
    a_ns.ip([
        "link",
        "add",
        &a.dev,
        "index",
        &a.ifindex.to_string(),
        "address",
        &a.mac_string(),
        "type",
        "veth",
        "peer",
        "name",
        &b.dev,
        "index",
        &b.ifindex.to_string(),
        "address",
        &b.mac_string(),
        "netns",
        b_ns.name(),
    ])
}

fn configure(ns: &Netns, ep: &Endpoint, gro: Option<bool>) -> anyhow::Result<()> {
    ns.ip(["addr", "add", &format!("{}/24", ep.ipv4), "dev", &ep.dev])?;
    let v6 = format!("{}/64", ep.ipv6);
    ns.ip(["-6", "addr", "add", &v6, "dev", &ep.dev, "nodad"])?;
    let mut features = vec!["-K", &ep.dev, "tx", "off"];
    match gro {
        Some(true) => features.extend(["gro", "on"]),
        Some(false) => features.extend(["gro", "off"]),
        None => {}
    }
    ns.run("ethtool", &features)?;
    ns.ip(["link", "set", &ep.dev, "up"])
}

/// Waits until the kernel reports the link up (both ends up, carrier seen), at most 3 s.
fn wait_up(ns: &Netns, ep: &Endpoint) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let link = ns.run("ip", ["-o", "link", "show", "dev", &ep.dev])?;
        if link.contains("LOWER_UP") && link.contains("state UP") {
            let index = ns.ifindex(&ep.dev)?;
            if index != ep.ifindex {
                bail!(
                    "{} in {} has ifindex {index}, not {}",
                    ep.dev,
                    ns.name(),
                    ep.ifindex
                );
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} in {} not up after 3 s: {}",
                ep.dev,
                ns.name(),
                link.trim()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn next_id() -> u8 {
    // Spreads processes apart; any value works, the namespaces are private to the topology.
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) + std::process::id();
    (n % 254) as u8 + 1
}

fn ip<I, S>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<S> = args.into_iter().collect();
    let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
    let out = Command::new("ip")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .context("run `ip` (iproute2; `cargo xtask setup` installs it)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            shown.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Deletes `sbct<pid>-*` namespaces whose creating process is gone (a test that was killed
/// before its guards ran). Namespaces of live processes are left alone.
pub fn reap_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = Netns::delete(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn ping(ns: &Netns, to: IpAddr) {
        let to = to.to_string();
        let out = ns
            .exec("ping", ["-c", "2", "-W", "1", "-i", "0.2", "-n", &to])
            .expect("run ping (iputils-ping; `cargo xtask setup` installs it)");
        // Both replies: a topology that drops the first packets is not ready.
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains(" 2 received"),
            "ping {to} from {}: {}{}",
            ns.name(),
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn three_hosts_reach_each_other_and_vanish() {
        crate::require_privileged!();
        let topo = Topology::three(TopologyOptions {
            gro: Some(true),
            ..Default::default()
        })
        .expect("build topology");
        let names: Vec<String> = topo.namespaces().iter().map(|n| n.name().into()).collect();
        for name in &names {
            assert!(Netns::exists(name), "{name} missing");
            assert!(name.starts_with(PREFIX) && name.len() <= 20, "{name}");
        }
        let id = topo.id();
        assert_eq!(topo.caller_if.ipv4, Ipv4Addr::new(10, id, 1, 1));
        assert_eq!(topo.callee_if.mac[..3], [0x02, 0x5b, id]);
        assert_eq!(topo.callee_if.ifindex, 22);
        assert_ne!(topo.relay_caller_if.ifindex, topo.relay_callee_if.ifindex);
        assert_eq!(
            topo.relay.ifindex("to-callee").unwrap(),
            topo.relay_callee_if.ifindex
        );

        // Next hop and across the relay, both families.
        for v6 in [true, false] {
            ping(&topo.caller, topo.relay_caller_if.ip(v6));
            ping(&topo.caller, topo.callee_if.ip(v6));
            ping(&topo.callee, topo.caller_if.ip(v6));
        }

        // Sockets made in `enter` live in that namespace.
        let v6 = topo.callee_if.ipv6;
        let sink = topo.callee.enter(|| UdpSocket::bind((v6, 40000))).unwrap();
        sink.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let src = topo.caller.enter(|| UdpSocket::bind("[::]:0")).unwrap();
        src.send_to(b"hello", (v6, 40000)).unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = sink.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(from.ip(), IpAddr::V6(topo.caller_if.ipv6));
        // And are not in ours: nothing here owns 10.X.2.2.
        assert!(UdpSocket::bind((topo.callee_if.ipv4, 0)).is_err());

        // Offload is off where the harness says.
        let k = topo.relay.run("ethtool", ["-k", "to-caller"]).unwrap();
        assert!(k.contains("tx-checksumming: off"), "{k}");

        // Children die with their guard.
        let child = topo.relay.spawn("sleep", ["30"]).unwrap();
        let pid = child.pid();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(child);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());

        drop(topo);
        for name in &names {
            assert!(!Netns::exists(name), "{name} still there after drop");
        }
    }

    #[test]
    fn netns_guard_and_enter() {
        crate::require_privileged!();
        let ns = Netns::new().unwrap();
        let name = ns.name().to_string();
        assert!(Netns::exists(&name));
        // A fresh namespace has only lo, and it is down.
        let links = ns.run("ip", ["-o", "link"]).unwrap();
        assert_eq!(links.lines().count(), 1, "{links}");
        assert_eq!(ns.ifindex("lo").unwrap(), 1);
        assert!(ns.ifindex("nope0").is_err());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ns.enter(|| panic!("boom"));
        }));
        assert!(r.is_err(), "panic in enter must reach the caller");
        drop(ns);
        assert!(!Netns::exists(&name));
    }

    #[test]
    fn named_topology_can_be_kept_and_deleted() {
        crate::require_privileged!();
        let name = format!("{PREFIX}{}-k", std::process::id());
        let topo = Topology::three(TopologyOptions {
            name: Some(name.clone()),
            id: Some(254),
            forwarding: false,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(topo.relay.name(), format!("{name}-relay"));
        let kept = topo.keep();
        for n in &kept {
            assert!(Netns::exists(n));
            Netns::delete(n).unwrap();
            assert!(!Netns::exists(n));
        }
    }
}
