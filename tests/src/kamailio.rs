//! Kamailio and rtpengine, the reference stack the SIP benchmark measures against and the
//! Kamailio scenarios put relayd behind: configuration templates, the SIP readiness probe,
//! rtpengine's userspace command line, and the Kamailio-in-front-of-relayd setup that
//! `tests/tests/kamailio_relayd.rs` tests and `cargo xtask bench kamailio` measures (the
//! tested configuration, Kamailio started in the relay namespace, relayd's command line).

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::netns::{Netns, NsChild, Topology};

/// Kamailio in front of relayd (`tests/fixtures/kamailio/relayd.cfg`, the configuration the
/// README shows): placeholders `LISTEN`, `RELAYS` (the module's `rtpengine_sock`) and `UAS`.
pub const RELAYD_CFG: &str = include_str!("../fixtures/kamailio/relayd.cfg");

/// [`RELAYD_CFG`] filled in: Kamailio on `listen`, media anchored by the ng peers in `relays`
/// (`rtpengine_sock` syntax, e.g. `udp:127.0.0.1:2223`), every call sent to `uas`.
pub fn relayd_cfg(listen: SocketAddr, relays: &str, uas: SocketAddr) -> anyhow::Result<String> {
    fill(
        RELAYD_CFG,
        &[
            ("LISTEN", &listen.to_string()),
            ("RELAYS", relays),
            ("UAS", &uas.to_string()),
        ],
    )
}

/// Starts Kamailio in `ns` with the configuration at `cfg` (`-A` for each of `defines`),
/// pinned to `cpu` if given, stdout and stderr to `log`, and waits (up to 20 s) until it
/// answers SIP on `listen`. The guard stops it by PID (its workers go with the main process).
pub fn start_in(
    ns: &Netns,
    cfg: &Path,
    defines: &[&str],
    cpu: Option<usize>,
    listen: SocketAddr,
    log: &Path,
) -> anyhow::Result<NsChild> {
    let logf = std::fs::File::create(log)?;
    let mut cmd = match cpu {
        Some(c) => {
            let mut cmd = ns.command("taskset");
            cmd.args(["-c", &c.to_string(), "kamailio"]);
            cmd
        }
        None => ns.command("kamailio"),
    };
    cmd.args(["-DD", "-E", "-m", "64", "-M", "8", "-f"])
        .arg(cfg);
    for d in defines {
        cmd.args(["-A", d]);
    }
    cmd.stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf);
    let mut kam = NsChild::spawn(&mut cmd)?;
    let ready = ns.enter(|| {
        wait_sip(listen, Duration::from_secs(20), || {
            match kam.try_wait()? {
                Some(st) => bail!("kamailio exited: {st}"),
                None => Ok(()),
            }
        })
    });
    if let Err(e) = ready {
        let _ = kam.stop(Duration::from_secs(5));
        bail!(
            "kamailio not ready: {e:#}; log:\n{}",
            crate::tail(&std::fs::read_to_string(log).unwrap_or_default(), 4000)
        );
    }
    Ok(kam)
}

/// relayd's arguments beside Kamailio in a [`Topology::three`]: data plane `plane`
/// (`xdp-native`, `userspace`...) on both relay veths, media anchored on the relay's
/// caller-side address (the callee reaches it through the relay namespace's forwarding),
/// `ports` (`first-last`), pins under `instance`, ng on `ng`.
pub fn relayd_args(
    topo: &Topology,
    plane: &str,
    ports: &str,
    instance: &str,
    ng: SocketAddr,
) -> Vec<String> {
    [
        "--dataplane",
        plane,
        "--interface",
        &topo.relay_caller_if.dev,
        "--interface",
        &topo.relay_callee_if.dev,
        "--address",
        &topo.relay_caller_if.ipv4.to_string(),
        "--ports",
        ports,
        "--instance",
        instance,
        "--ng-listen",
        &ng.to_string(),
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// Kamailio's version line (`kamailio -v`), or a placeholder.
pub fn version() -> String {
    Command::new("kamailio")
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| l.trim_start().starts_with("version:"))
                .map(|l| l.trim().replace("version: ", ""))
        })
        .unwrap_or_else(|| "kamailio (version unknown)".into())
}

/// Where Debian installs Kamailio's modules (the configurations' `mpath`).
pub const MODULES: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules/";

/// Fills a configuration template: every `@@NAME@@` is replaced by its value from `vars`.
/// Fails if the template still has a placeholder afterwards (a variable the caller forgot).
pub fn fill(template: &str, vars: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut out = template.to_string();
    for (name, value) in vars {
        out = out.replace(&format!("@@{name}@@"), value);
    }
    if let Some(at) = out.find("@@") {
        let rest = &out[at..];
        let end = rest[2..].find("@@").map_or(rest.len(), |e| e + 4);
        bail!("template placeholder {} not filled", &rest[..end]);
    }
    Ok(out)
}

/// Sends OPTIONS to `addr` until any SIP response comes back (ready) or `timeout` passes.
/// `alive` is asked between attempts, so a proxy that died fails at once with its own error.
/// The socket is bound in the caller's network namespace (enter it first for a namespace).
pub fn wait_sip(
    addr: SocketAddr,
    timeout: Duration,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let any: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(any)?;
    sock.connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let local = sock.local_addr()?;
    let deadline = Instant::now() + timeout;
    let mut n = 0;
    loop {
        n += 1;
        let msg = format!(
            "OPTIONS sip:ping@{addr} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-ping{n}\r\n\
             From: <sip:probe@{local}>;tag=ping\r\nTo: <sip:ping@{addr}>\r\n\
             Call-ID: ping-{n}-{}@probe\r\nCSeq: {n} OPTIONS\r\nMax-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n",
            std::process::id()
        );
        // Refused (nothing listening yet) is just "not ready".
        let _ = sock.send(msg.as_bytes());
        let mut buf = [0u8; 4096];
        if let Ok(len) = sock.recv(&mut buf)
            && buf[..len].starts_with(b"SIP/2.0 ")
        {
            return Ok(());
        }
        alive()?;
        if Instant::now() >= deadline {
            bail!("no answer to OPTIONS on {addr} after {timeout:?}");
        }
    }
}

/// rtpengine's arguments for a userspace-only instance: no configuration file, no kernel
/// table (the module is not loaded here), in the foreground logging warnings to stderr,
/// calls deleted at once, media on `ports` (first, last). Interfaces and the ng listener
/// come after.
pub fn rtpengine_userspace_args(ports: (u16, u16)) -> Vec<String> {
    [
        "--config-file=none",
        "--table=-1",
        "--foreground",
        "--log-stderr",
        "--log-level=4",
        "--delete-delay=0",
    ]
    .into_iter()
    .map(String::from)
    .chain([
        format!("--port-min={}", ports.0),
        format!("--port-max={}", ports.1),
    ])
    .collect()
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn fill_replaces_and_refuses_leftovers() {
        assert_eq!(
            fill("listen=@@A@@ x=@@B@@", &[("A", "1"), ("B", "2")]).unwrap(),
            "listen=1 x=2"
        );
        let e = fill("a=@@A@@ b=@@MISSING@@", &[("A", "1")]).unwrap_err();
        assert!(e.to_string().contains("@@MISSING@@"), "{e}");
    }
}
