//! relayd: the media relay. Brings up the data plane (XDP where it can, userspace where it
//! must, and says which), relays RTP/RTCP, and serves the rtpengine ng control protocol.

// The doc comments here are clap's --help text, shown as written: `<instance>` is a
// placeholder for the reader, not an HTML tag.
#![allow(rustdoc::invalid_html_tags)]

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, Result};
use clap::{Parser, ValueEnum};
use relay_user::{
    Cidr, DataPlane, PortRange, Sessions,
    loader::{self, LoaderConfig, RequestedMode},
    media::{DEFAULT_MAX_STREAMS, Interface, Limits, MediaPlane, Previous, StateFile},
    ng::{self, AllowList, NgStatsHandle, ServerConfig},
};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};
use tracing::{debug, info, warn};
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Dataplane {
    /// Native XDP, else generic (skb) XDP, else userspace; each fallback is logged.
    Auto,
    /// Native (driver) XDP or fail.
    XdpNative,
    /// Generic (skb) XDP or fail.
    XdpSkb,
    /// No XDP: relay in userspace sockets.
    Userspace,
}

impl From<Dataplane> for RequestedMode {
    fn from(d: Dataplane) -> Self {
        match d {
            Dataplane::Auto => RequestedMode::Auto,
            Dataplane::XdpNative => RequestedMode::XdpNative,
            Dataplane::XdpSkb => RequestedMode::XdpSkb,
            Dataplane::Userspace => RequestedMode::Userspace,
        }
    }
}

/// XDP SBC media relay (RTP/RTCP), controlled over the rtpengine ng protocol.
///
/// XDP links and maps are pinned under /sys/fs/bpf/<instance>/, so stopping or restarting
/// relayd does not interrupt calls; `--cleanup` detaches and removes the pins. Log level:
/// RUST_LOG (default info).
///
/// The ng protocol has no authentication, so the ng port answers only the sources in
/// --ng-allow (default: loopback, 127.0.0.0/8 and ::1). Datagrams from anyone else are dropped
/// without a reply and counted (`--status`, and one log line per 10 s at most). Its reply cache
/// (rtpengine's answer to retransmissions) is keyed by source address and cookie and bounded by
/// --ng-cache-bytes, oldest replies evicted first (counted).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Interface to attach the XDP program to (repeatable).
    #[arg(
        long = "interface",
        short = 'i',
        default_value = "lo",
        value_name = "IFNAME"
    )]
    interfaces: Vec<String>,

    /// Relay address: where media is anchored and sent from.
    #[arg(long, short = 'a', default_value = "127.0.0.1")]
    address: IpAddr,

    /// Address SDP names for the relay, one per family (repeatable; the first of a family
    /// wins). Default: --address. With --address :: give one IPv4 and one IPv6 address to
    /// bridge calls between IPv4 and IPv6 peers (in userspace).
    #[arg(long = "advertise", value_name = "ADDR")]
    advertise: Vec<IpAddr>,

    /// Relay port range, FIRST-LAST (each stream side takes an even RTP port and RTP+1).
    #[arg(long, default_value = "30000-39999")]
    ports: PortRange,

    /// Name of the pin directory under /sys/fs/bpf.
    #[arg(long, default_value = "sbc")]
    instance: String,

    /// Which data plane to run.
    #[arg(long, value_enum, default_value = "auto")]
    dataplane: Dataplane,

    /// Remove a session after this long without media (e.g. 60, 60s, 2m, 500ms).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    media_timeout: Duration,

    /// Where the ng call table is kept so a restarted relayd (XDP) can still query and delete
    /// the calls it carried over. Default: /run/relayd/<instance>.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Where the ng control protocol listens (UDP).
    #[arg(long, default_value = "127.0.0.1:2223")]
    ng_listen: SocketAddr,

    /// Who may use the ng port: a CIDR or an address (repeatable). Default: loopback only
    /// (127.0.0.0/8 and ::1). Giving any replaces the default, so list 127.0.0.0/8 too if local
    /// tools need the port. Other sources get no reply, and are counted.
    #[arg(long = "ng-allow", value_name = "CIDR")]
    ng_allow: Vec<Cidr>,

    /// Bound on the ng reply cache in bytes (suffixes K, M, KiB, MiB; at least 64KiB). Replies
    /// are replayed to retransmissions of the same source and cookie for 30 s; beyond the bound
    /// the oldest go first, counted.
    #[arg(long, default_value = "4MiB", value_parser = parse_bytes, value_name = "BYTES")]
    ng_cache_bytes: usize,

    /// Turn on IP forwarding where the kernel relay path needs it: IPv4 on each --interface,
    /// IPv6 host-wide. The kernel's route lookup for relayed media refuses to work without it,
    /// and such media takes the (slower) userspace path; relayd reports this at start either way.
    #[arg(long)]
    enable_forwarding: bool,

    /// Most m= lines one SDP may have (a call's streams); more is refused with an ng error,
    /// before any relay port is taken. A call holds at most 4 relay ports per stream.
    #[arg(long, default_value_t = DEFAULT_MAX_STREAMS, value_parser = clap::value_parser!(u16).range(1..=1024))]
    max_streams: u16,

    /// Most calls held at once. Offers for new calls beyond it get rtpengine's `load limit`
    /// reply ("Parallel session limit reached"), on which Kamailio's rtpengine module tries the
    /// next relay of its set. Default: no limit but the port range (whose exhaustion is
    /// answered "Ran out of ports", which Kamailio also fails over on).
    #[arg(long, value_name = "N")]
    max_sessions: Option<usize>,

    /// Userspace relay worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,

    /// How often stats are logged (at debug level).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    stats_interval: Duration,

    /// Detach the instance's XDP links, remove its pins, and exit.
    #[arg(long, conflicts_with = "status")]
    cleanup: bool,

    /// Print the pinned instance's data plane and stats, and exit.
    #[arg(long)]
    status: bool,

    /// With --status: print JSON.
    #[arg(long, requires = "status")]
    json: bool,
}

impl Args {
    fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/run/relayd").join(&self.instance))
    }

    /// The addresses SDP names: `--advertise`, else `--address`.
    fn advertised(&self) -> Vec<IpAddr> {
        if self.advertise.is_empty() {
            vec![self.address]
        } else {
            self.advertise.clone()
        }
    }

    fn state_file(&self) -> StateFile {
        StateFile::new(self.state_dir())
    }

    /// Which data plane the last start brought up, and why: `--status` reads it, in every mode
    /// (a userspace instance has no pins to read).
    fn dataplane_file(&self) -> PathBuf {
        self.state_dir().join("dataplane.json")
    }

    /// The ng port's counters (requests, refused sources, reply cache), for `--status`.
    fn ng_file(&self) -> PathBuf {
        self.state_dir().join("ng.json")
    }

    /// The ng server's settings: `--ng-allow` replaces the loopback default.
    fn ng_config(&self) -> ServerConfig {
        let allow = if self.ng_allow.is_empty() {
            AllowList::loopback()
        } else {
            AllowList::new(self.ng_allow.clone())
        };
        ServerConfig {
            allow,
            cache_bytes: self.ng_cache_bytes,
        }
    }
}

/// Writes `v` to `path` for `--status` (temp file + rename: never half-written).
fn write_state_json(dir: &std::path::Path, path: &std::path::Path, v: &serde_json::Value) {
    let tmp = path.with_extension("json.tmp");
    let res = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&tmp, v.to_string()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = res {
        warn!(path = %path.display(), error = %e, "cannot record state for --status");
    }
}

/// Records the running data plane for `--status`.
fn write_dataplane(args: &Args, dp: &DataPlane) {
    let v = serde_json::json!({
        "mode": dp.mode().to_string(),
        "reason": dp.reason(),
        "interfaces": args.interfaces,
        "pid": std::process::id(),
    });
    write_state_json(&args.state_dir(), &args.dataplane_file(), &v);
}

/// The ng counters of the last (or running) relayd, as it last recorded them.
fn read_ng(args: &Args) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(args.ng_file()).ok()?;
    serde_json::from_str(&text).ok()
}

/// One line of `--status` text about the ng port.
fn print_ng(ng: Option<&serde_json::Value>) {
    let Some(ng) = ng else { return };
    let c = &ng["cache"];
    println!(
        "  ng: {} requests, {} dropped from unlisted sources (last: {}); allow {}",
        ng["requests"],
        ng["denied"],
        ng["last_denied"].as_str().unwrap_or("none"),
        ng["allow"]
    );
    println!(
        "  ng reply cache: {} entries, {} of {} bytes, {} hits, {} evicted, {} expired, {} too large",
        c["entries"],
        c["bytes"],
        c["max_bytes"],
        c["hits"],
        c["evicted"],
        c["expired"],
        c["too_large"]
    );
}

/// The recorded data plane, with whether its relayd still runs.
fn read_dataplane(args: &Args) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(args.dataplane_file()).ok()?;
    let mut v: serde_json::Value = serde_json::from_str(&text).ok()?;
    // Alive, not a zombie, and still relayd (the PID may have been reused since).
    let running = v["pid"].as_u64().is_some_and(|pid| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(')').map(|(_, r)| r.trim_start());
        stat.contains("(relayd)") && !state.is_some_and(|r| r.starts_with('Z'))
    });
    v["running"] = running.into();
    Some(v)
}

/// A byte count: `65536`, `64K`/`64KiB`, `4M`/`4MiB` (binary multiples).
fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: usize = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with an optional unit (K, M, KiB, MiB)"))?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "K" | "k" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        u => return Err(format!("{s:?}: unknown unit {u:?} (K, M, KiB, MiB)")),
    };
    let v = n.checked_mul(mult).ok_or(format!("{s:?}: too large"))?;
    // Below this the largest ng reply (a UDP datagram) could never be cached.
    if v < 64 << 10 {
        return Err(format!("{s:?}: at least 64KiB"));
    }
    Ok(v)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with an optional unit (ms, s, m, h)"))?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    if d.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(d)
}

fn main() -> Result<()> {
    // Logs on stderr: stdout is for --status output that scripts parse.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    if args.cleanup {
        return cleanup(&args);
    }
    if args.status {
        return status(&args);
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?
        .block_on(run(args))
}

fn cleanup(args: &Args) -> Result<()> {
    let c = loader::detach(&args.instance, &args.interfaces)
        .with_context(|| format!("cleaning up instance {}", args.instance))?;
    if c.dir_removed {
        println!(
            "instance {}: detached {} XDP link(s), removed {} map pin(s) and the pin directory",
            args.instance,
            c.links.len(),
            c.maps.len()
        );
    } else {
        println!("instance {}: nothing pinned", args.instance);
    }
    // Without the pins the saved calls have nothing to be adopted from.
    let state = args.state_file();
    match state.remove() {
        Ok(true) => println!(
            "instance {}: removed the ng state file {}",
            args.instance,
            state.path().display()
        ),
        Ok(false) => {}
        Err(e) => warn!(error = %e, "ng state file not removed"),
    }
    let _ = std::fs::remove_file(args.dataplane_file());
    let _ = std::fs::remove_file(args.ng_file());
    // Only if empty: an operator's --state-dir may hold other things.
    let _ = std::fs::remove_dir(args.state_dir());
    Ok(())
}

/// Reads the pinned maps of a running (or stopped) XDP instance without attaching anything.
fn status(args: &Args) -> Result<()> {
    let dir = loader::pin_dir(&args.instance)?;
    let dataplane = read_dataplane(args);
    let ng = read_ng(args);
    if !dir.exists() {
        if args.json {
            println!(
                "{}",
                serde_json::json!({ "instance": args.instance, "pinned": false, "dataplane": dataplane, "ng": ng })
            );
        } else if let Some(d) = &dataplane {
            println!(
                "instance {}: data plane {} ({}), relayd {}; nothing pinned",
                args.instance,
                d["mode"].as_str().unwrap_or("?"),
                d["reason"].as_str().unwrap_or(""),
                if d["running"] == true {
                    "running"
                } else {
                    "not running"
                },
            );
        } else {
            println!(
                "instance {}: nothing pinned under {} (not running, or running in userspace mode)",
                args.instance,
                dir.display()
            );
        }
        if !args.json {
            print_ng(ng.as_ref());
        }
        return Ok(());
    }
    let links: Vec<String> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("link_"))
        .collect();
    let mut ebpf = loader::load_pinned(relay_user::object::ebpf_object(), &args.instance)?;
    let maps = relay_user::maps::XdpMaps::from_ebpf(&mut ebpf)?;
    let stats = relay_user::maps::stats_by_name(&maps.stats_raw()?);
    let legs = maps.leg_list()?.len();
    let bans = maps.ban_list()?.len();
    if args.json {
        let v = serde_json::json!({
            "instance": args.instance,
            "pinned": true,
            "dataplane": dataplane,
            "links": links,
            "legs": legs,
            "bans": bans,
            "stats": stats,
            "ng": ng,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("instance {} ({}):", args.instance, dir.display());
        if let Some(d) = &dataplane {
            println!(
                "  data plane: {} ({}), relayd {}",
                d["mode"].as_str().unwrap_or("?"),
                d["reason"].as_str().unwrap_or(""),
                if d["running"] == true {
                    "running"
                } else {
                    "not running"
                },
            );
        }
        println!(
            "  links: {}",
            if links.is_empty() {
                "none (XDP not attached)".into()
            } else {
                links.join(", ")
            }
        );
        println!("  relay legs: {legs}, bans: {bans}");
        print_ng(ng.as_ref());
        for (k, v) in stats.iter().filter(|(_, v)| **v != 0) {
            println!("  {k:<22} {v}");
        }
    }
    Ok(())
}

async fn run(args: Args) -> Result<()> {
    let cfg = LoaderConfig {
        instance: args.instance.clone(),
        interfaces: args.interfaces.clone(),
        mode: args.dataplane.into(),
        enable_forwarding: args.enable_forwarding,
        relay_addresses: vec![args.address],
    };
    let plane = MediaPlane::builder(cfg, args.ports, args.address)
        .workers(args.workers)
        .previous_sessions(Previous::Adopt)
        .media_timeout(args.media_timeout)
        .start(relay_user::object::ebpf_object())?;
    let (dp, sessions) = (plane.dataplane().clone(), plane.sessions().clone());
    write_dataplane(&args, &dp);
    // The ng call table, joined with what was recovered, before anything is served.
    let engine = Arc::new(Mutex::new(ng_engine(&args, &plane)));
    let ng_server = ng::Server::bind_with(args.ng_listen, engine.clone(), args.ng_config())
        .await
        .context("ng control protocol")?;
    if !args.ng_listen.ip().is_loopback() && args.ng_allow.is_empty() {
        // Reachable from the network but answering only this host: say so, or the operator
        // sees a proxy's requests vanish with no hint why.
        warn!(ng = %args.ng_listen, "ng listens beyond loopback but only loopback sources are allowed; add --ng-allow for the proxies");
    }
    let ng_stats = ng_server.stats();
    let ng_file = NgFile {
        dir: args.state_dir(),
        path: args.ng_file(),
    };
    ng_file.write(&ng_stats);

    info!(
        dataplane = %dp.mode(),
        reason = dp.reason(),
        address = %args.address,
        ports = %args.ports,
        ng = %args.ng_listen,
        media_timeout = ?args.media_timeout,
        "relayd running"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut timeouts = plane.spawn_reaper();
    let reaped_engine = engine.clone();
    tokio::spawn(async move {
        while let Some(r) = timeouts.recv().await {
            info!(session = r.session, label = %r.label, packets = r.packets(), "session removed: media timeout");
            // Tell the ng side now, so `list`/`query` stop showing the call at once. The lock
            // is held for a map update and a small file write, never across an await.
            let call = reaped_engine
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .forget_session(r.session);
            if call.is_none() {
                debug!(session = r.session, "timed-out session had no ng call");
            }
        }
    });
    tokio::spawn(periodic(
        dp.clone(),
        sessions.clone(),
        (ng_stats.clone(), ng_file.clone()),
        args.stats_interval,
        stop_rx.clone(),
    ));

    let mut ng_stop = stop_rx.clone();
    let ng_task = tokio::spawn(ng_server.run(async move {
        let _ = ng_stop.wait_for(|s| *s).await;
    }));

    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM"),
        _ = int.recv() => info!("SIGINT"),
    }
    let _ = stop_tx.send(true);
    match ng_task.await {
        Ok(Err(e)) => warn!(error = %e, "ng server ended with an error"),
        Err(e) => warn!(error = %e, "ng server task failed"),
        Ok(Ok(())) => {}
    }
    log_stats(&dp, &sessions);
    ng_file.write(&ng_stats);
    if dp.mode().is_xdp() {
        info!(instance = %args.instance, "exiting; XDP stays attached and keeps forwarding (relayd --cleanup detaches)");
    } else {
        info!("exiting; userspace relay stopped");
    }
    Ok(())
}

/// The ng engine over the plane's sessions. XDP: its call table is persisted, and taken back
/// from the previous run's file. Userspace: nothing is persisted.
fn ng_engine(args: &Args, plane: &MediaPlane) -> ng::Engine<Sessions> {
    let interfaces = vec![Interface::new("default", &args.advertised())];
    let calls = plane.calls(interfaces, Limits::streams(usize::from(args.max_streams)));
    let mut engine = ng::Engine::over(calls).with_max_calls(args.max_sessions);
    let state = args.state_file();
    if plane.dataplane().mode().is_xdp() {
        restore_calls(&mut engine, &state);
        engine.set_state_file(state);
        return engine;
    }
    // Userspace relaying lives in this process's sockets: a previous run's calls died with it,
    // so its saved calls are stale, and saving ours would be pointless.
    match state.remove() {
        Ok(true) => warn!(
            path = %state.path().display(),
            "userspace data plane: calls saved by a previous run cannot be resumed (their relay sockets closed with it); ng state file cleared"
        ),
        Ok(false) => {}
        Err(e) => {
            warn!(error = %e, "userspace data plane: stale ng state file not removed; it is ignored")
        }
    }
    info!("userspace data plane: ng calls are not persisted (they do not survive a restart)");
    engine
}

/// Loads the calls a previous run saved and re-adopts those whose sessions came back from the
/// pinned maps. Anything wrong with the file is logged and the relay starts without it: the
/// kernel keeps relaying either way, and the recovered sessions end by media timeout.
fn restore_calls(engine: &mut ng::Engine<Sessions>, state: &StateFile) {
    let snap = match state.load() {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(e) => {
            match state.quarantine() {
                Ok(to) => {
                    warn!(error = %e, moved_to = %to.display(), "ng state file unusable; starting without the previous run's calls")
                }
                Err(q) => {
                    warn!(error = %e, quarantine_error = %q, "ng state file unusable; starting without the previous run's calls")
                }
            }
            return;
        }
    };
    let saved = snap.calls.len();
    let r = engine.restore(snap);
    info!(
        saved,
        adopted = r.adopted.len(),
        dropped = r.dropped.len(),
        path = %state.path().display(),
        "ng calls carried over from the previous run"
    );
}

/// Where the ng counters go for `--status`.
#[derive(Clone)]
struct NgFile {
    dir: PathBuf,
    path: PathBuf,
}

impl NgFile {
    fn write(&self, ng: &NgStatsHandle) {
        match serde_json::to_value(ng.snapshot()) {
            Ok(v) => write_state_json(&self.dir, &self.path, &v),
            Err(e) => warn!(error = %e, "ng counters not serialisable"),
        }
    }
}

async fn periodic(
    dp: Arc<DataPlane>,
    sessions: Arc<Sessions>,
    (ng, ng_file): (NgStatsHandle, NgFile),
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut last_ng = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match dp.ban_purge_expired() {
            Ok(0) => {}
            Ok(n) => debug!(n, "expired bans purged"),
            Err(e) => warn!(error = %e, "ban purge failed"),
        }
        log_stats(&dp, &sessions);
        // Only when something changed: an idle relay does not rewrite the file every tick.
        let now = ng.snapshot();
        if last_ng.as_ref() != Some(&now) {
            ng_file.write(&ng);
            debug!(
                requests = now.requests,
                denied = now.denied,
                cache_entries = now.cache.entries,
                cache_bytes = now.cache.bytes,
                "ng stats"
            );
            last_ng = Some(now);
        }
    }
}

fn log_stats(dp: &DataPlane, sessions: &Sessions) {
    let (used, free) = sessions.port_usage();
    match dp.stats() {
        Ok(s) => {
            let nonzero: Vec<String> = s
                .iter()
                .filter(|(_, v)| **v != 0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            debug!(mode = %dp.mode(), sessions = sessions.list().len(), ports_used = used, ports_free = free, stats = %nonzero.join(" "), "stats");
        }
        Err(e) => warn!(error = %e, "stats unavailable"),
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn sdp_names_the_advertised_addresses_else_the_relay_address() {
        let a = Args::try_parse_from(["relayd", "--address", "10.0.0.1"]).unwrap();
        assert_eq!(a.advertised(), vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        let a = Args::try_parse_from([
            "relayd",
            "--address",
            "::",
            "--advertise",
            "192.0.2.5",
            "--advertise",
            "2001:db8::5",
        ])
        .unwrap();
        let want: Vec<IpAddr> = vec!["192.0.2.5".parse().unwrap(), "2001:db8::5".parse().unwrap()];
        assert_eq!(a.advertised(), want);
    }
}
