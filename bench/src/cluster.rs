//! `cargo xtask bench cluster [--bans 100] [--calls 200] [--cps 20]` (or `bench cluster`
//! from this crate): what sharing one Redis costs and gives. Results:
//! `target/bench/cluster.json` and `cluster.md`.
//!
//! Setup: the cluster tests' harness (`tests/tests/cluster/mod.rs`): three sipd nodes, each
//! with XDP (skb mode) on its own carrier — relay — vendor namespaces, and one `redis-server`
//! in a namespace of its own, linked to every relay namespace by a veth.
//!
//! Measured:
//! - ban propagation: `--bans` operator bans made one after the other through node 1's API;
//!   for each, the time from node 1's answer (the ban is in node 1's kernel by then) and from
//!   the request leaving, to the ban being in node 3's kernel ban map (a thread polls the
//!   pinned map every 1 ms): min, median, p99, max;
//! - admission latency: `--calls` calls at `--cps` through node 1 of the cluster, then
//!   through one node without `[cluster]` (a fresh topology, same provisioning): sipp's
//!   message trace gives, per call, INVITE → 100 Trying (sipd's first answer) and INVITE →
//!   180 Ringing (admitted, routed, the vendor's ringing relayed back). The vendor (a sipp UAS)
//!   rings at once and answers; calls are held 100 ms.
//!
//! Bounded: at most 1000 bans, 5000 calls, 200 calls/s; every wait has a deadline. Clean-up:
//! the harness stops sipd and Redis by PID, removes sipd's pins and deletes the namespaces.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use relay_user::Cidr;
use serde::Serialize;
use serde_json::json;

use crate::common::{self, loadavg};
use crate::sbc::{Net, Plane, Prov, Sbc, Settings};

#[path = "../../tests/tests/cluster/mod.rs"]
mod harness;

mod admission;

const USAGE: &str = "cargo xtask bench cluster [--bans 100] [--calls 200] [--cps 20]";

struct Opts {
    bans: usize,
    calls: u32,
    cps: u32,
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        bans: 100,
        calls: 200,
        cps: 20,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .with_context(|| format!("{a} needs a value; {USAGE}"))
        };
        let num = |s: &str, what: &str, max: u64| {
            let v: u64 = s.parse().with_context(|| format!("{what} {s:?}"))?;
            if !(1..=max).contains(&v) {
                bail!("{what} must be within 1..={max}");
            }
            Ok(v)
        };
        match a.as_str() {
            "--bans" => o.bans = num(val()?, "--bans", 1000)? as usize,
            "--calls" => o.calls = num(val()?, "--calls", 5000)? as u32,
            "--cps" => o.cps = num(val()?, "--cps", 200)? as u32,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    Ok(o)
}

/// Min, median, p99 and max of a sample, in ms.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Stats {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub p99: f64,
    pub max: f64,
}

impl Stats {
    pub(crate) fn of(mut ms: Vec<f64>) -> Option<Stats> {
        if ms.is_empty() {
            return None;
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        Some(Stats {
            n: ms.len(),
            min: ms[0],
            median: at(0.5),
            p99: at(0.99),
            max: ms[ms.len() - 1],
        })
    }

    fn row(label: &str, s: Option<&Stats>) -> String {
        match s {
            Some(s) => format!(
                "| {label} | {} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
                s.n, s.min, s.median, s.p99, s.max
            ),
            None => format!("| {label} | 0 | - | - | - | - |\n"),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    command: String,
    kernel: String,
    loadavg_before: String,
    nodes: usize,
    bans: usize,
    /// Node 1's API answer → node 3's kernel map.
    propagation_from_answer_ms: Option<Stats>,
    /// Node 1's API request sent → node 3's kernel map.
    propagation_from_request_ms: Option<Stats>,
    /// Bans that never reached node 3 within the deadline.
    bans_missing: usize,
    admission: Vec<admission::Admission>,
}

/// Provisioning with limits far above the load: the admission path is measured, not a
/// refusal.
fn prov() -> Prov {
    Prov {
        balance: "100000.00",
        cps_limit: 1000,
        max_sessions: 1000,
        vendors: vec![(crate::sbc::SIP_PORT, 1000, 10)],
        vendor_cps: 1000,
        ..Prov::default()
    }
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench cluster needs root (network namespaces, XDP)");
    }
    for bin in ["redis-server", "redis-cli", "sipp"] {
        if !on_path(bin) {
            bail!("{bin} not installed (cargo xtask setup)");
        }
    }
    let out_dir = ::tests::bins::workspace_root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let loadavg_before = loadavg();
    let prov = prov();

    println!("cluster: starting Redis and three nodes");
    let (redis, nodes) = harness::start(3, &prov);
    let up = harness::eventually(Duration::from_secs(30), || {
        nodes.iter().all(|n| n.sbc.metric("sipd_cluster_up") == 1)
    });
    if !up {
        bail!(
            "the nodes did not connect to Redis:\n{}",
            nodes[0].sbc.log_text()
        );
    }
    println!(
        "cluster: {} bans on node 1, watched in node 3's kernel",
        o.bans
    );
    let (from_answer, from_request, missing) = propagation(&nodes[0], &nodes[2], o.bans)?;
    println!("cluster: {} calls at {}/s through node 1", o.calls, o.cps);
    let with = admission::measure("node 1 of a 3-node cluster", &nodes[0], o.calls, o.cps)?;
    drop(nodes);
    drop(redis);

    println!(
        "cluster: {} calls at {}/s through a node without [cluster]",
        o.calls, o.cps
    );
    let net = Net::new();
    let set = Settings {
        management: "metrics_public = true\n".into(),
        admin_password: Some(harness::ADMIN_PASSWORD),
        ..Settings::default()
    };
    let sbc = Sbc::start_with(&net, Plane::Xdp, &prov, &set);
    let token = sbc.login();
    let lone = harness::Node { sbc, net, token };
    let without = admission::measure("one node, no [cluster]", &lone, o.calls, o.cps)?;
    drop(lone);

    let report = Report {
        command: common::command_line("bench cluster", args),
        kernel: common::kernel_release(),
        loadavg_before,
        nodes: 3,
        bans: o.bans,
        propagation_from_answer_ms: Stats::of(from_answer),
        propagation_from_request_ms: Stats::of(from_request),
        bans_missing: missing,
        admission: vec![with, without],
    };
    common::write_report(&out_dir, "cluster", &report, &markdown(&report))
}

/// Whether `bin` is an executable file in a directory of `PATH`.
fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// Bans `n` addresses through `from`'s API one after the other; the times until each is in
/// `to`'s kernel ban map, from `from`'s answer and from the request, and how many never got
/// there within 60 s of the last.
fn propagation(
    from: &harness::Node,
    to: &harness::Node,
    n: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>, usize)> {
    // 198.18.0.0/15 (RFC 2544, benchmarks): never a real peer.
    let prefixes: Vec<Cidr> = (0..n)
        .map(|i| {
            let i = u16::try_from(i).unwrap_or(u16::MAX);
            let [hi, lo] = i.to_be_bytes();
            Cidr::host(IpAddr::V4(Ipv4Addr::new(198, 19, hi, lo.max(1))))
        })
        .collect();
    let instance = to.sbc.instance.clone();
    let watched = prefixes.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let poller = std::thread::spawn(move || -> anyhow::Result<Vec<Option<Instant>>> {
        let mut ebpf =
            relay_user::loader::load_pinned(relay_user::object::ebpf_object(), &instance)
                .context("node 3's pinned maps")?;
        let maps = relay_user::maps::XdpMaps::from_ebpf(&mut ebpf).context("node 3's maps")?;
        let _ = tx.send(());
        let mut seen: Vec<Option<Instant>> = vec![None; watched.len()];
        let mut deadline: Option<Instant> = None;
        while seen.iter().any(Option::is_none) && deadline.is_none_or(|d| Instant::now() < d) {
            for (i, p) in watched.iter().enumerate() {
                if seen[i].is_none() && maps.ban_get(*p).ok().flatten().is_some() {
                    seen[i] = Some(Instant::now());
                }
            }
            // Every ban made: 60 s more at most.
            if deadline.is_none() && stop_rx.try_recv().is_ok() {
                deadline = Some(Instant::now() + Duration::from_secs(60));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(seen)
    });
    rx.recv_timeout(Duration::from_secs(10))
        .context("the map poller did not start")?;
    let mut sent = Vec::with_capacity(n);
    let mut made = Vec::with_capacity(n);
    for p in &prefixes {
        sent.push(Instant::now());
        let r = from.sbc.api(
            &from.token,
            "POST",
            "/api/bans",
            Some(&json!({"addr": p.addr().to_string(), "duration_secs": 3600,
                         "reason": "bench cluster"})),
        );
        made.push(Instant::now());
        if r.get("prefix").is_none() {
            let _ = stop_tx.send(());
            bail!("ban {p} refused: {r}");
        }
    }
    let _ = stop_tx.send(());
    let seen = poller
        .join()
        .map_err(|_| anyhow::anyhow!("the map poller panicked"))??;
    let since = |from: &[Instant]| -> Vec<f64> {
        seen.iter()
            .zip(from)
            .filter_map(|(s, m)| {
                Some(s.as_ref()?.saturating_duration_since(*m).as_secs_f64() * 1000.0)
            })
            .collect()
    };
    let missing = seen.iter().filter(|s| s.is_none()).count();
    Ok((since(&made), since(&sent), missing))
}

fn markdown(r: &Report) -> String {
    let mut md = format!(
        "# Cluster: ban propagation and admission latency\n\n\
         `{}` — kernel {}, load average before {}. {} sipd nodes (XDP, skb mode) and one \
         redis-server, each in its own network namespaces on this machine.\n\n\
         ## Ban propagation, node 1's API → node 3's kernel ban map ({} bans, ms)\n\n\
         | from | bans | min | median | p99 | max |\n|---|---|---|---|---|---|\n",
        r.command, r.kernel, r.loadavg_before, r.nodes, r.bans
    );
    md += &Stats::row("node 1's answer", r.propagation_from_answer_ms.as_ref());
    md += &Stats::row(
        "the request sent (includes node 1's API)",
        r.propagation_from_request_ms.as_ref(),
    );
    md += "\n0 from node 1's answer: the ban was already in node 3's kernel when node 1's API \
           answered (the answer also waits for node 1's store and audit; the request time \
           includes the HTTPS client's start).\n";
    if r.bans_missing > 0 {
        md += &format!(
            "\n**{} bans never reached node 3** within 60 s.\n",
            r.bans_missing
        );
    }
    md += "\n## Admission latency (ms)\n\n";
    md += &admission::markdown(&r.admission);
    md
}
