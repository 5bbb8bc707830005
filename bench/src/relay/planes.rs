//! Starting the relay under test (relayd with a data plane, or rtpengine) in the relay
//! namespace, its calls over ng, and relayd's state (counters, pins) for this run.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ::tests::netns::{NsChild, Topology};
use anyhow::{Context as _, bail};
use relay_user::media::Family as MediaFamily;
use relay_user::ng::client::NgClient;
use relay_user::ng::message::OfferAnswer;
use relay_user::ng::sdp;

use super::{CALLEE_PORT, CALLER_PORT, Family, NG_PORT, Opts, Plane};
use crate::common;

/// A started relay and how to reach its calls.
pub(super) struct Relay {
    pub(super) child: Option<NsChild>,
    pub(super) ng: Option<NgClient>,
    pub(super) log: PathBuf,
    pub(super) pid: Option<u32>,
    /// (to-caller port, to-callee port) per call: where the caller sends, where the callee sends.
    pub(super) ports: Vec<(u16, u16)>,
    /// XDP native: `sbc_xdp_pass` on the caller's and callee's veth ends (see
    /// [`::tests::xdp::attach_peer_pass`]); detached when dropped.
    pub(super) peer_pass: Option<aya::Ebpf>,
}

pub(super) fn start_relay(
    plane: Plane,
    family: Family,
    o: &Opts,
    topo: &Topology,
    relay_cpu: usize,
) -> anyhow::Result<Relay> {
    let relay_a = topo.relay_caller_if.ip(family.caller_v6());
    let relay_b = topo.relay_callee_if.ip(family.callee_v6());
    // relayd anchors on one address: across families the unspecified one, as sipd's
    // `[media] address = "::"` does.
    let relayd_addr = if family.cross() {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        relay_a
    };
    let ng_addr: SocketAddr = ([127, 0, 0, 1], NG_PORT).into();
    let log = ::tests::bins::workspace_root().join(format!(
        "target/bench/relay-{}-{}.log",
        plane_slug(plane),
        family.slug()
    ));
    std::fs::create_dir_all(log.parent().expect("has parent"))?;
    let logf = std::fs::File::create(&log)?;

    // nsenter, not `ip netns exec`: the latter remounts /sys in a private mount namespace,
    // whose fresh bpffs relayd cannot pin XDP links in; nsenter changes only the network
    // namespace. Both exec, so the PID is the relay's own.
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg(format!("--net={}", topo.relay.path().display()))
        .args(["--", "taskset", "-c", &relay_cpu.to_string()]);
    match plane {
        Plane::Rtpengine => {
            cmd.arg(common::rtpengine()?)
                .args(common::rtpengine_userspace_args((40000, 49999)))
                .args([
                    &format!("--interface=caller/{relay_a}"),
                    &format!("--interface=callee/{relay_b}"),
                    &format!("--listen-ng={ng_addr}"),
                ]);
        }
        _ => {
            let bin = relayd_path(o)?;
            let mode = match plane {
                Plane::XdpNative => "xdp-native",
                Plane::XdpSkb => "xdp-skb",
                _ => "userspace",
            };
            cmd.arg(bin).args([
                "--dataplane",
                mode,
                "--interface",
                &topo.relay_caller_if.dev,
                "--interface",
                &topo.relay_callee_if.dev,
                "--address",
                &relayd_addr.to_string(),
                "--ng-listen",
                &ng_addr.to_string(),
                "--ports",
                "40000-49999",
                "--instance",
                &instance(),
                "--media-timeout",
                "60s",
            ]);
            if family.cross() {
                // SDP names the relay's address of each side's family (the ones the
                // generators send to, see measure_rates), as sipd's advertised addresses do.
                for a in [relay_a, topo.relay_caller_if.ip(false)] {
                    cmd.args(["--advertise", &a.to_string()]);
                }
            }
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf);
    println!("   {}", tests::show_command(&cmd));
    let mut child = NsChild::spawn(&mut cmd)?;
    let pid = child.pid();

    let ng = topo.relay.enter(|| NgClient::new(ng_addr))?;
    if let Err(e) = ng.wait_ready(Duration::from_secs(10)) {
        let status = child.try_wait()?;
        let _ = child.stop(Duration::from_secs(1));
        if plane != Plane::Rtpengine {
            // A relayd that failed half-way may have pinned maps already.
            cleanup_pins(o, topo);
        }
        bail!(
            "{} not answering ng ping ({e}; exit status {status:?}); log: {}",
            plane.name(),
            log.display()
        );
    }
    println!("   relay pid {pid} answers ng on {ng_addr}");
    Ok(Relay {
        child: Some(child),
        ng: Some(ng),
        log,
        pid: Some(pid),
        ports: Vec::new(),
        peer_pass: None,
    })
}

/// `relayd --cleanup`: detaches this run's XDP links and removes its pins. Runs in the relay
/// namespace, where the interfaces are (nsenter keeps the host's bpffs).
pub(super) fn cleanup_pins(o: &Opts, topo: &Topology) {
    let out = relayd_path(o).and_then(|bin| {
        topo.relay.exec(
            &bin.to_string_lossy(),
            ["--cleanup", "--instance", &instance()],
        )
    });
    match out {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "   relayd --cleanup failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!("   relayd --cleanup: {e:#}"),
    }
}

/// relayd's pin directory for this run (`/sys/fs/bpf/<instance>`), removed after each plane.
pub(super) fn instance() -> String {
    format!("sbcbench{}", std::process::id())
}

pub(super) fn plane_slug(p: Plane) -> &'static str {
    match p {
        Plane::Baseline => "baseline",
        Plane::XdpNative => "xdp-native",
        Plane::XdpSkb => "xdp-skb",
        Plane::Userspace => "userspace",
        Plane::Rtpengine => "rtpengine",
    }
}

pub(super) fn relayd_path(o: &Opts) -> anyhow::Result<PathBuf> {
    match &o.relayd {
        Some(p) => Ok(p.clone()),
        None => ::tests::bins::find_built("relayd", "-p relay-user --bin relayd", "--relayd"),
    }
}

pub(super) fn sdp(ip: IpAddr, port: u16, sess: usize) -> String {
    let fam = if ip.is_ipv4() { "IP4" } else { "IP6" };
    format!(
        "v=0\r\no=- {sess} 1 IN {fam} {ip}\r\ns=bench\r\nc=IN {fam} {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )
}

pub(super) fn media_port(body: &str) -> anyhow::Result<u16> {
    let s = sdp::Sdp::parse(body).context("relay returned unparsable SDP")?;
    s.media
        .first()
        .map(|m| m.port)
        .filter(|&p| p != 0)
        .context("relay returned SDP without an active m= line")
}

pub(super) fn call_id(i: usize) -> String {
    format!("bench-{i}@{}", std::process::id())
}

/// Offers and answers calls, or deletes the last ones, until there are `calls`; `ports` holds
/// per call (port the caller sends to, port the callee sends to).
pub(super) fn resize_calls(
    ng: &NgClient,
    topo: &Topology,
    family: Family,
    direction: bool,
    ports: &mut Vec<(u16, u16)>,
    calls: usize,
) -> anyhow::Result<()> {
    let caller_ip = topo.caller_if.ip(family.caller_v6());
    let callee_ip = topo.callee_if.ip(family.callee_v6());
    while ports.len() > calls {
        ng.delete(&call_id(ports.len() - 1), None)?;
        ports.pop();
    }
    let t0 = Instant::now();
    let new = calls.saturating_sub(ports.len());
    for i in ports.len()..calls {
        let id = call_id(i);
        let mut offer = OfferAnswer::new(&id, "caller-tag", &sdp(caller_ip, CALLER_PORT, i));
        if direction {
            // rtpengine: one named interface per side (see start_relay).
            offer.direction = vec!["caller".into(), "callee".into()];
        }
        offer.replace.origin = true;
        // Each SDP names the relay's address of its receiver's family (ng's `address
        // family`, as sipd asks): across families the relay bridges them.
        offer.address_family = Some(MediaFamily::of(&callee_ip));
        let to_callee = ng.offer(&offer)?;
        let mut answer = OfferAnswer::new(&id, "caller-tag", &sdp(callee_ip, CALLEE_PORT, i));
        answer.to_tag = Some("callee-tag".into());
        answer.address_family = Some(MediaFamily::of(&caller_ip));
        let to_caller = ng.answer(&answer)?;
        ports.push((media_port(&to_caller)?, media_port(&to_callee)?));
    }
    if new > 0 {
        let took = t0.elapsed();
        println!(
            "   ng: {new} calls offered+answered in {:.2} s ({:.0} µs per call)",
            took.as_secs_f64(),
            took.as_micros() as f64 / new as f64
        );
    }
    Ok(())
}

/// relayd's per-reason counters for this run's instance (`relayd --status --json`; reads the
/// pins, so it runs in the host namespace).
pub(super) fn relay_stats(o: &Opts) -> anyhow::Result<BTreeMap<String, u64>> {
    relay_stats_of(&relayd_path(o)?, &instance())
}

/// relayd's per-reason counters for `instance` (`<bin> --status --json`), from the host
/// namespace (it reads the pins).
pub(crate) fn relay_stats_of(
    bin: &std::path::Path,
    instance: &str,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let out = std::process::Command::new(bin)
        .args(["--status", "--json", "--instance", instance])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "relayd --status failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("status JSON")?;
    let stats = v
        .get("stats")
        .and_then(|s| s.as_object())
        .context("relayd --status has no stats: instance not pinned, XDP not running?")?;
    Ok(stats
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
        .collect())
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn sdp_round_trip() {
        let s = sdp("10.1.1.1".parse().unwrap(), 4000, 1);
        assert_eq!(media_port(&s).unwrap(), 4000);
    }
}
