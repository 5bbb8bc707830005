//! `sipd run`: the one process of the appliance. Brings up the data plane through relay-user
//! (XDP where it can, userspace where it must, and says which), the media relay, the SIP
//! transports and the call core, then feeds the core and carries out its effects.
//!
//! The core is single-threaded and owns all call state; this shell is the only place with I/O.
//! Store writes (CDRs, balance debits) go to a writer thread so a flush never stalls
//! signalling.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{debug, error, info, warn};

use relay_user::loader::{LoaderConfig, RequestedMode};
use relay_user::media::{MediaPlane, Previous};
use relay_user::{
    Cidr, DataPlane, GuardEventKind, GuardSettings, PortRange, Proto as DpProto, Service,
    ServiceId, TRUSTED_SOURCE, Verdict,
};

use crate::auth::digest::{DigestVerifier, NonceKey};
use crate::b2bua::ids::IdsConfig;
use crate::b2bua::{Core, CoreConfig, Effect, Local, RelayMedia};
use crate::config::{Config, DataplaneMode};
use crate::control::{Command, Control};
use crate::policy::routing::Router;
use crate::policy::rules::RuleSet;
use crate::sip::txn::{Peer, Proto};
use crate::store::{CdrDraft, Id, Micros, Store};
use crate::transport::{self, Event, Limits, Outbound, Transports};

/// What the agent string says in User-Agent/Server.
pub const AGENT: &str = concat!("xdp-sbc/", env!("CARGO_PKG_VERSION"));

fn requested_mode(m: DataplaneMode) -> RequestedMode {
    match m {
        DataplaneMode::Auto => RequestedMode::Auto,
        DataplaneMode::Xdp => RequestedMode::Xdp,
        DataplaneMode::XdpNative => RequestedMode::XdpNative,
        DataplaneMode::XdpSkb => RequestedMode::XdpSkb,
        DataplaneMode::Userspace => RequestedMode::Userspace,
    }
}

/// Brings up the media plane the configuration asks for: the data plane (`xdp` tries native
/// then generic XDP), the relay and its sessions. Sessions a previous run left in the pinned
/// maps are freed: their calls cannot be resumed (their SIP dialogs died with that run).
fn start_media(cfg: &Config, ports: PortRange) -> Result<MediaPlane> {
    let d = &cfg.dataplane;
    let loader = LoaderConfig {
        instance: d.instance.clone(),
        interfaces: d.interfaces.clone(),
        mode: requested_mode(d.mode),
        enable_forwarding: d.enable_forwarding,
    };
    let plane = MediaPlane::builder(loader, ports, cfg.media.address)
        .workers(2)
        .previous_sessions(Previous::Remove)
        .media_timeout(Duration::from_secs(cfg.media.timeout_secs))
        .start(relay_user::object::ebpf_object())?;
    Ok(plane)
}

/// The firewall and guard tables the kernel (or the userspace fallback) enforces for SIP.
fn program_dataplane(cfg: &Config, dp: &DataPlane, sip_ports: &[(u16, DpProto)]) -> Result<()> {
    let g = &cfg.guard;
    dp.guard_set(&GuardSettings {
        packet_rate: g.sip_packets_per_sec,
        packet_burst: g.sip_packet_burst,
        invite_rate: g.invites_per_sec,
        invite_burst: g.invite_burst,
        max_sessions: g.max_sessions_per_source,
        event_interval: Duration::from_secs(1),
    })
    .context("setting the SIP guard")?;
    let restricted = !cfg.firewall.sip_allow.is_empty();
    for &(port, proto) in sip_ports {
        dp.service_set(Service {
            port,
            proto,
            id: ServiceId::Sip,
            restricted,
            sip: true,
        })
        .with_context(|| format!("SIP service on port {port}"))?;
    }
    for net in &cfg.firewall.sip_allow {
        let c: Cidr = net.to_string().parse().context("sip_allow CIDR")?;
        dp.allow_add(ServiceId::Sip, c)?;
    }
    for (i, net) in cfg.firewall.deny.iter().enumerate() {
        let c: Cidr = net.to_string().parse().context("deny CIDR")?;
        dp.deny_add(c, u32::try_from(i + 1).unwrap_or(u32::MAX))?;
    }
    Ok(())
}

/// The digest nonce secret: kept in the data directory so nonces survive a restart (clients
/// mid-challenge are not all refused), created 0600 on first start.
fn nonce_key(data_dir: &Path) -> Result<NonceKey> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("nonce.key");
    match std::fs::read(&path) {
        Ok(b) if b.len() == 32 => {
            let mut k = [0u8; 32];
            k.copy_from_slice(&b);
            return Ok(NonceKey::new(k));
        }
        Ok(_) => bail!(
            "{} is not a 32-byte key; remove it to make a new one",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let mut k = [0u8; 32];
    getrandom::fill(&mut k).map_err(|e| anyhow::anyhow!("no randomness for the nonce key: {e}"))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(&k)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(NonceKey::new(k))
}

enum StoreJob {
    Cdr(CdrDraft, Option<(Id, Micros)>),
}

/// CDRs and debits, in order. Whatever queued up while the last batch was flushed goes in
/// the next batch with one flush (the store's durability, at hundreds of calls per second).
fn spawn_writer(
    store: Arc<Store>,
) -> Result<(mpsc::Sender<StoreJob>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<StoreJob>();
    let h = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                while batch.len() < 1024 {
                    match rx.try_recv() {
                        Ok(j) => batch.push(j),
                        Err(_) => break,
                    }
                }
                let calls = batch
                    .into_iter()
                    .map(|StoreJob::Cdr(c, d)| (c, d))
                    .collect();
                for e in store.settle_calls(calls) {
                    error!(error = %e, "CDR or balance debit not stored");
                }
            }
        })?;
    Ok((tx, h))
}

fn dp_proto(p: transport::Proto) -> DpProto {
    match p {
        transport::Proto::Udp => DpProto::Udp,
        transport::Proto::Tcp => DpProto::Tcp,
    }
}

fn txn_proto(p: transport::Proto) -> Proto {
    match p {
        transport::Proto::Udp => Proto::Udp,
        transport::Proto::Tcp => Proto::Tcp,
    }
}

fn tp_proto(p: Proto) -> transport::Proto {
    match p {
        Proto::Udp => transport::Proto::Udp,
        Proto::Tcp => transport::Proto::Tcp,
    }
}

/// Runs the appliance until SIGTERM/SIGINT.
pub async fn run(cfg: Config) -> Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating the data directory {}", cfg.data_dir.display()))?;
    let store = Arc::new(
        Store::open(&cfg.store_dir())
            .with_context(|| format!("opening the store in {}", cfg.store_dir().display()))?,
    );
    let rules = RuleSet::load(&store).context("loading accounts and auth rules")?;
    let router = Router::load(&store).context("loading upstream connections")?;
    let tariffs = readable_tariffs(&store);
    if !store.has_staff().unwrap_or(true) {
        warn!(
            "no staff users yet: stop sipd and run `sipd init --username <admin>` to create the first admin \
             (it prints a QR code to enrol their TOTP); the management API needs one to log in"
        );
    }
    let accounts = rules.accounts().count();
    if accounts == 0 {
        warn!("no accounts provisioned: every call will be refused (see `sipd import`)");
    }
    let key = nonce_key(&cfg.data_dir)?;
    let verifier = DigestVerifier::new(cfg.digest_policy(), key, SystemTime::now());

    // Data plane and media relay.
    let ports =
        PortRange::new(cfg.media.port_min, cfg.media.port_max).context("media port range")?;
    let plane = start_media(&cfg, ports)?;
    let dp = plane.dataplane().clone();
    let media_addr = cfg.media.advertised_address.unwrap_or(cfg.media.address);
    let media = RelayMedia::new(&plane, media_addr);

    // SIP transports.
    let limits = Limits {
        max_message_bytes: cfg.sip.max_message_bytes,
        ..Limits::default()
    };
    let (transports, mut events) = Transports::bind(&cfg.sip.udp, &cfg.sip.tcp, limits, None)
        .await
        .context("binding SIP")?;
    let mut sip_ports: Vec<(u16, DpProto)> = Vec::new();
    let mut locals = Vec::new();
    for (proto, addrs) in [
        (Proto::Udp, transports.udp_addrs()),
        (Proto::Tcp, transports.tcp_addrs()),
    ] {
        for a in addrs {
            let adv = SocketAddr::new(cfg.sip.advertised_address.unwrap_or(a.ip()), a.port());
            locals.push(Local {
                proto,
                bind: a,
                advertised: adv,
            });
            sip_ports.push((
                a.port(),
                if proto == Proto::Udp {
                    DpProto::Udp
                } else {
                    DpProto::Tcp
                },
            ));
        }
    }
    program_dataplane(&cfg, &dp, &sip_ports)?;
    crate::api::apply_stored_firewall(&store, &dp);
    trust_peers(&store, &dp);

    let core_cfg = CoreConfig {
        locals: locals.clone(),
        topology_hiding: cfg.sip.topology_hiding,
        max_message_bytes: cfg.sip.max_message_bytes,
        media_timeout: Duration::from_secs(cfg.media.timeout_secs),
        strict_source: cfg.media.strict_source,
        failover_after: Duration::from_secs(cfg.sip.failover_secs),
        ids: IdsConfig {
            failures_before_ban: cfg.guard.auth_failures_before_ban,
            window: Duration::from_secs(cfg.guard.auth_failure_window_secs),
            ban: Duration::from_secs(cfg.guard.ban_secs),
            ban_max: Duration::from_secs(cfg.guard.ban_max_secs),
            ban_scanners: true,
            floods_before_ban: cfg.guard.flood_reports_before_ban,
        },
        agent: AGENT.into(),
    };
    let mut core = Core::new(core_cfg, rules, router, tariffs, verifier, media);
    let (control, mut commands) = Control::new(
        store.clone(),
        dp.clone(),
        transports.clone(),
        plane.sessions().clone(),
    );
    // The management API is the one user of `control`. Calls matter more than the
    // management plane: if the API cannot start, sipd says so loudly and keeps serving.
    let api = match crate::api::start(&cfg, control).await {
        Ok(api) => Some(api),
        Err(e) => {
            error!(
                error = format!("{e:#}"),
                "management API NOT started: no HTTPS management and no /metrics until sipd is restarted with this fixed"
            );
            None
        }
    };
    let (writer, writer_thread) = spawn_writer(store.clone())?;

    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let userspace_fw = !dp.mode().is_xdp();
    info!(
        sip_udp = ?transports.udp_addrs(),
        sip_tcp = ?transports.tcp_addrs(),
        media = %cfg.media.address,
        ports = %ports,
        dataplane = %dp.mode(),
        accounts,
        "sipd ready"
    );

    let mut guard_events = dp.guard_events();
    let mut stopping: Option<Instant> = None;
    let mut dropped_by_fw: u64 = 0;
    loop {
        // The core's next timer may be minutes away (a transaction reaper); the loop still
        // wakes every second, and every 100 ms while stopping, so shutdown never waits on it.
        let cap = Instant::now()
            + if stopping.is_some() {
                Duration::from_millis(100)
            } else {
                Duration::from_secs(1)
            };
        let deadline = core.next_timeout().map_or(cap, |t| t.min(cap));
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                let now = Instant::now();
                let wall = SystemTime::now();
                match ev {
                    Event::Message(m) => {
                        if userspace_fw {
                            let v = dp.firewall_check(m.remote.ip(), m.local.port(), dp_proto(m.proto), &m.data);
                            if !matches!(v, Verdict::Pass(_)) {
                                dropped_by_fw += 1;
                                debug!(from = %m.remote, verdict = ?v, "SIP dropped by the firewall");
                                continue;
                            }
                        }
                        let peer = Peer { proto: txn_proto(m.proto), remote: m.remote, local: m.local, conn: m.conn };
                        core.on_message(now, wall, peer, &m.data);
                    }
                    Event::Malformed { inbound, error } => {
                        let peer = Peer { proto: txn_proto(inbound.proto), remote: inbound.remote, local: inbound.local, conn: inbound.conn };
                        core.on_malformed(peer, &inbound.data, &error.to_string());
                    }
                    Event::SendFailed { token, error, remote, .. } => {
                        debug!(%remote, %error, "send failed");
                        core.on_send_failed(now, wall, token);
                    }
                    Event::Closed { .. } => {}
                }
            }
            Some(ev) = async {
                match guard_events.as_mut() {
                    Some(g) => g.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                debug!(source = %ev.source, kind = ?ev.kind, suppressed = ev.suppressed, "guard event");
                if matches!(ev.kind, Some(GuardEventKind::PacketRate | GuardEventKind::InviteRate)) {
                    core.on_flood(Instant::now(), ev.source);
                }
            }
            Some(cmd) = commands.recv() => {
                let now = Instant::now();
                let wall = SystemTime::now();
                match cmd {
                    Command::Calls(tx) => {
                        let _ = tx.send(core.call_infos());
                    }
                    Command::Hangup(id, tx) => {
                        let _ = tx.send(core.hangup(now, wall, id));
                    }
                    Command::Reload(tx) => {
                        let _ = tx.send(reload(&store, &mut core));
                    }
                    Command::Credit(account, delta, tx) => {
                        core.credit(account, delta);
                        let _ = tx.send(());
                    }
                    Command::Stats(tx) => {
                        let _ = tx.send((core.stats().clone(), core.active_calls()));
                    }
                }
            }
            _ = sleep => {
                core.tick(Instant::now(), SystemTime::now());
            }
            _ = term.recv(), if stopping.is_none() => {
                info!("SIGTERM: ending calls");
                core.shutdown(Instant::now(), SystemTime::now());
                stopping = Some(Instant::now());
            }
            _ = int.recv(), if stopping.is_none() => {
                info!("SIGINT: ending calls");
                core.shutdown(Instant::now(), SystemTime::now());
                stopping = Some(Instant::now());
            }
        }
        for e in core.drain_effects() {
            match e {
                Effect::Send(s) => transports.send(Outbound {
                    proto: tp_proto(s.peer.proto),
                    remote: s.peer.remote,
                    local: Some(s.peer.local),
                    conn: s.peer.conn,
                    token: s.token,
                    data: s.data.into(),
                }),
                Effect::Cdr { cdr, debit } => {
                    if writer.send(StoreJob::Cdr(cdr, debit)).is_err() {
                        error!("store writer is gone: CDR lost");
                    }
                }
                Effect::SourceSession { ip, up } => source_session(&dp, ip, up),
                Effect::Ban {
                    ip,
                    duration,
                    reason,
                } => {
                    warn!(%ip, ?duration, ?reason, "banning source");
                    if let Err(e) = dp.ban_add(ip, Some(duration), reason) {
                        error!(%ip, error = %e, "ban not applied");
                    }
                }
            }
        }
        // Give the BYEs of a shutdown a moment to be answered, then go.
        if let Some(t) = stopping
            && (core.active_calls() == 0 && t.elapsed() > Duration::from_millis(300)
                || t.elapsed() > Duration::from_secs(2))
        {
            break;
        }
    }
    let stats = core.stats().clone();
    info!(?stats, dropped_by_fw, transport = ?transports.stats(), "sipd stopping");
    // Stopped before the core goes: a request in flight gets "shutting down", not a hang.
    drop(commands);
    if let Some(api) = api {
        api.stop().await;
    }
    drop(core);
    transports.shutdown();
    drop(writer);
    if writer_thread.join().is_err() {
        error!("store writer panicked");
    }
    info!("sipd stopped");
    Ok(())
}

/// Upstreams and IP-authenticated carriers (single-host rules) are exempt from the per-source
/// SIP guard: a busy trunk sends far more than any flood limit meant for strangers. Wider
/// CIDR rules cannot be listed host by host; their sources stay under the guard's limits.
fn trust_peers(store: &Store, dp: &DataPlane) {
    let mut hosts: Vec<IpAddr> = Vec::new();
    for c in store.connections().into_iter().flatten() {
        if !c.enabled {
            continue;
        }
        match c.host.parse::<IpAddr>() {
            Ok(ip) => hosts.push(ip),
            Err(_) => {
                use std::net::ToSocketAddrs;
                if let Ok(addrs) = (c.host.as_str(), c.port).to_socket_addrs() {
                    hosts.extend(addrs.map(|a| a.ip()));
                }
            }
        }
    }
    for r in store.rules().into_iter().flatten() {
        if let Some(net) = r.remote
            && r.ip_only
            && net.prefix_len() == net.max_prefix_len()
        {
            hosts.push(net.addr());
        }
    }
    hosts.sort();
    hosts.dedup();
    for ip in &hosts {
        if let Err(e) = dp.sessions_set_limit(*ip, TRUSTED_SOURCE) {
            warn!(%ip, error = %e, "could not exempt a trusted peer from the SIP guard");
        }
    }
    if !hosts.is_empty() {
        info!(peers = ?hosts, "trusted peers (upstreams, single-host IP-auth rules) skip the per-source SIP guard");
    }
}

/// The store's tariffs, skipping (and logging) any that cannot be read.
fn readable_tariffs(store: &Store) -> Vec<crate::store::Tariff> {
    store
        .tariffs()
        .into_iter()
        .filter_map(|t| {
            t.map_err(|e| warn!(error = %e, "skipping an unreadable tariff"))
                .ok()
        })
        .collect()
}

/// The core takes the store's current accounts, rules, connections and tariffs.
fn reload(store: &Store, core: &mut Core<RelayMedia>) -> Result<(), String> {
    let rules = RuleSet::load(store).map_err(|e| e.to_string())?;
    core.reload(
        rules,
        crate::policy::routing::readable(store),
        readable_tariffs(store),
    );
    info!("accounts, rules, connections and tariffs reloaded");
    Ok(())
}

fn source_session(dp: &DataPlane, ip: IpAddr, up: bool) {
    let r = if up {
        dp.sessions_increment(ip)
    } else {
        dp.sessions_decrement(ip)
    };
    if let Err(e) = r {
        debug!(%ip, error = %e, "per-source session count not updated");
    }
}
