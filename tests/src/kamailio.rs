//! Kamailio and rtpengine, the reference stack the SIP benchmark measures against and the
//! Kamailio scenarios put relayd behind: configuration templates, the SIP readiness probe, and
//! rtpengine's userspace command line.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::bail;

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
