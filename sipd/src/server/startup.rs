//! Bringing the appliance up, in order: store and records, data plane, media relay, SIP
//! transports, firewall, call core, management API. Each step says what failed.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use tracing::{error, info, warn};

use relay_user::PortRange;
use relay_user::loader::{LoaderConfig, RequestedMode};
use relay_user::media::{self, MediaPlane, Previous};
use sipd_core::auth::digest::{DigestVerifier, NonceKey};
use sipd_core::b2bua::ids::IdsConfig;
use sipd_core::b2bua::{Core, CoreConfig, Local};
use sipd_core::policy::routing::Router;
use sipd_core::sip::Proto;

use super::provisioned::Provisioned;
use super::tls_names::UpstreamTlsNames;
use crate::config::{Config, DataplaneMode};
use crate::firewall::{Firewall, coverage};
use crate::media::RelayMedia;
use crate::resolver::{Answer, Resolver};
use crate::store::Store;
use crate::transport::{Limits, TcpGuard, TlsSettings, Transports};

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
/// then generic XDP; the loader says which runs and why), the relay and its sessions.
/// Sessions a previous run left in the pinned maps are recovered: the calls it saved take
/// theirs back (`adopt_calls`), and the rest are freed then.
///
/// XDP goes on the configured interfaces plus every interface a SIP, media or management
/// address is reached through (returned: the interfaces it is on, none on userspace).
pub fn start_media(cfg: &Config) -> Result<(MediaPlane, RelayMedia, Vec<String>)> {
    let d = &cfg.dataplane;
    let host = host_addresses();
    let interfaces = if d.mode == DataplaneMode::Userspace {
        d.interfaces.clone()
    } else {
        let mut wanted = coverage::attach_list(&d.interfaces, &listen_ips(cfg), &host);
        if d.mode == DataplaneMode::XdpNative {
            // Loopback has no native XDP: adding it would stop sipd from starting. Its
            // packets come from this host only; coverage reports it as not XDP's.
            let lo: Vec<&String> = host
                .iter()
                .filter(|a| a.ip.is_loopback())
                .map(|a| &a.iface)
                .collect();
            wanted.retain(|i| d.interfaces.contains(i) || !lo.contains(&i));
        }
        let added: Vec<&String> = wanted
            .iter()
            .filter(|i| !d.interfaces.contains(i))
            .collect();
        if !added.is_empty() {
            info!(interfaces = ?added, "XDP also goes on the interfaces sipd's addresses are reached through");
        }
        wanted
    };
    let loader = LoaderConfig {
        instance: d.instance.clone(),
        interfaces: interfaces.clone(),
        mode: requested_mode(d.mode),
        enable_forwarding: d.enable_forwarding,
        relay_addresses: vec![cfg.media.address],
    };
    let ports =
        PortRange::new(cfg.media.port_min, cfg.media.port_max).context("media port range")?;
    let plane = MediaPlane::builder(loader, ports, cfg.media.address)
        .workers(2)
        .previous_sessions(Previous::Adopt)
        .media_timeout(Duration::from_secs(cfg.media.timeout_secs))
        .learn_window(Duration::from_secs(cfg.media.learn_window_secs))
        .start(relay_user::object::ebpf_object())
        .context("bringing up the data plane and the media relay")?;
    let media_addr = cfg.media.advertised_address.unwrap_or(cfg.media.address);
    let limits = media::Limits::streams(usize::from(cfg.media.max_streams));
    let mut media_addrs = vec![media_addr];
    media_addrs.extend(cfg.media.advertised_address_v6.map(IpAddr::V6));
    let media = RelayMedia::new(&plane, &media_addrs, limits, cfg.media.strip_ice);
    let attached = if plane.dataplane().mode().is_xdp() {
        interfaces
    } else {
        Vec::new()
    };
    Ok((plane, media, attached))
}

/// This host's interface addresses; none (said at warn) if they cannot be read, so coverage
/// then reports every address as not covered by XDP.
fn host_addresses() -> Vec<coverage::IfAddr> {
    read_host().addrs
}

fn read_host() -> coverage::Host {
    coverage::Host::read().unwrap_or_else(|e| {
        warn!(error = %e, "cannot list the host's interface addresses");
        coverage::Host::default()
    })
}

/// SIP (UDP and TCP), media and management listen addresses.
fn listen_ips(cfg: &Config) -> Vec<IpAddr> {
    listens(cfg).into_iter().map(|(_, ip, _)| ip).collect()
}

/// (service, address, whether sipd checks it in userspace when XDP does not see it). sipd
/// checks SIP per message, management per connection and media per packet itself, on
/// either data plane (on XDP's only what XDP did not see). Host services sipd does not serve
/// (SSH, SIP over TLS, the operator's) listen wherever their daemon does: taken as every
/// address, and only XDP can guard them.
fn listens(cfg: &Config) -> Vec<coverage::Listen> {
    let mut out: Vec<coverage::Listen> = Vec::new();
    let mut add = |what: &str, ip: IpAddr, userspace: bool| {
        if !out.iter().any(|(w, a, _)| w == what && *a == ip) {
            out.push((what.to_owned(), ip, userspace));
        }
    };
    for a in cfg.sip.udp.iter().chain(&cfg.sip.tcp).chain(&cfg.sip.tls) {
        add("sip", a.ip(), true);
    }
    add("media", cfg.media.address, true);
    add("management", cfg.management.listen.ip(), true);
    let f = &cfg.firewall;
    for s in f.host_services().iter().chain(f.custom_services()) {
        add(&s.name, IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), false);
    }
    out
}

/// Which plane guards each address, given the interfaces XDP is on.
pub fn coverage(cfg: &Config, attached: Vec<String>) -> coverage::Coverage {
    coverage::Coverage::new(attached, read_host(), listens(cfg))
}

/// SIP over TLS's settings when `[sip] tls` is set: the certificate (watched for changes),
/// the upstream roots, the handshake deadline and `names` for upstream certificates.
fn sip_tls(
    cfg: &Config,
    names: &UpstreamTlsNames,
    acme: Option<&std::sync::Arc<crate::acme::Acme>>,
) -> Result<Option<TlsSettings>> {
    let s = &cfg.sip;
    let Some(first) = s.tls.first() else {
        return Ok(None);
    };
    let listen = s.advertised_for(first.ip()).unwrap_or(first.ip());
    let (cert, key) = crate::acme::startup_pair(
        acme.map(|a| &**a),
        s.tls_cert.as_deref(),
        s.tls_key.as_deref(),
    );
    let state = crate::tls::TlsState::load(
        crate::tls::SIP,
        cert.as_deref(),
        key.as_deref(),
        &cfg.data_dir,
        listen,
    )
    .context("SIP over TLS certificate")?;
    if let Some(a) = acme {
        a.serve(state.clone());
    }
    let client_roots = match s.tls_client_roots.as_deref() {
        Some(p) => Some(crate::tls::roots(Some(p)).context("sip.tls_client_roots")?),
        None => None,
    };
    let server = crate::tls::server_config_verifying(
        state.resolver.clone(),
        client_roots,
        s.tls_client_required,
    )?;
    let roots = crate::tls::roots(s.tls_roots.as_deref()).context("sip.tls_roots")?;
    let client = crate::tls::client_config(roots)?;
    info!(
        certificate = %state.cert_path.display(),
        self_signed = state.self_signed.load(std::sync::atomic::Ordering::Relaxed),
        client_certificates = s.tls_client_roots.is_some(),
        client_certificates_required = s.tls_client_roots.is_some() && s.tls_client_required,
        roots = %s.tls_roots.as_deref().map_or("webpki-roots (Mozilla)".into(), |p| p.display().to_string()),
        "SIP over TLS"
    );
    // Watched for the life of the process: the sender lives in the watching task.
    let (keep, stop) = tokio::sync::watch::channel(false);
    let ocsp = Duration::from_secs(cfg.acme.ocsp_timeout_secs);
    tokio::spawn(crate::ocsp::run(state.clone(), ocsp, stop.clone()));
    tokio::spawn(async move {
        let _keep = keep;
        state.watch(stop).await;
    });
    Ok(Some(TlsSettings {
        acceptor: tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server)),
        connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(client)),
        handshake_timeout: Duration::from_secs(s.tls_handshake_secs),
        names: names.lookup(),
    }))
}

/// Refuses to start with a provisioned connection or auth rule this configuration cannot
/// serve (see [`crate::config::check_records`]), naming it and the fix.
pub fn check_records(cfg: &Config, p: &Provisioned) -> Result<()> {
    crate::config::check_records(cfg, &p.connections, p.rules.rules())
        .map_err(|e| anyhow::anyhow!("{}", e.reason))
}

/// Binds SIP; returns the transports, our addresses for the core and the (port, transport)
/// pairs the firewall guards.
pub async fn bind_sip(
    cfg: &Config,
    nofile: Option<u64>,
    names: &UpstreamTlsNames,
    acme: Option<&std::sync::Arc<crate::acme::Acme>>,
) -> Result<(
    Transports,
    tokio::sync::mpsc::Receiver<crate::transport::Event>,
    Vec<Local>,
    Vec<(u16, Proto)>,
)> {
    let limits = Limits {
        fd_ceiling: super::fds::tcp_ceiling(nofile, cfg.sip.fd_reserve),
        ..Limits::from(&cfg.sip)
    };
    let tls = sip_tls(cfg, names, acme)?;
    let (transports, events) =
        Transports::bind_with_tls(&cfg.sip.udp, &cfg.sip.tcp, &cfg.sip.tls, tls, limits, None)
            .await
            .context("binding SIP")?;
    let mut locals = Vec::new();
    let mut ports = Vec::new();
    for (proto, addrs) in [
        (Proto::Udp, transports.udp_addrs()),
        (Proto::Tcp, transports.tcp_addrs()),
        (Proto::Tls, transports.tls_addrs()),
    ] {
        for a in addrs {
            let advertised =
                SocketAddr::new(cfg.sip.advertised_for(a.ip()).unwrap_or(a.ip()), a.port());
            locals.push(Local {
                proto,
                bind: a,
                advertised,
            });
            ports.push((a.port(), proto));
        }
    }
    Ok((transports, events, locals, ports))
}

/// The kernel guard's per-source INVITE rate and session cap, for SIP over TCP (the kernel
/// applies them to UDP only), over the same per-source session counts.
pub fn tcp_guard(cfg: &Config, dp: &std::sync::Arc<relay_user::DataPlane>) -> TcpGuard {
    let g = &cfg.guard;
    let dp = dp.clone();
    TcpGuard::new(
        g.invites_per_sec,
        g.invite_burst,
        g.max_sessions_per_source,
        std::sync::Arc::new(move |ip| dp.sessions_get(ip).ok().map(|s| (s.active, s.limit))),
    )
}

/// Resolves the upstream names (all at once) and exempts trusted peers from the SIP guard;
/// the answers go to the core too, so the first calls do not wait for them.
pub async fn trust_peers(firewall: &Firewall, p: &Provisioned, resolver: &Resolver) -> Vec<Answer> {
    let answers = resolver.lookup_all(p.upstream_names()).await;
    let resolved: Vec<(String, Vec<std::net::IpAddr>)> = answers
        .iter()
        .map(|a| (a.host.clone(), a.addrs.clone()))
        .collect();
    firewall.trust(&p.trusted_hosts(&resolved));
    answers
}

/// The call core with the records, our addresses and the media relay.
pub fn core(
    cfg: &Config,
    p: Provisioned,
    locals: Vec<Local>,
    media: RelayMedia,
) -> Result<Core<RelayMedia>> {
    let key = nonce_key(&cfg.data_dir)?;
    let verifier = DigestVerifier::new(cfg.digest_policy(), key, SystemTime::now());
    let g = &cfg.guard;
    let core_cfg = CoreConfig {
        locals,
        topology_hiding: cfg.sip.topology_hiding,
        max_message_bytes: cfg.sip.max_message_bytes,
        media_timeout: Duration::from_secs(cfg.media.timeout_secs),
        strict_source: cfg.media.strict_source,
        failover_after: Duration::from_secs(cfg.sip.failover_secs),
        ids: IdsConfig {
            failures_before_ban: g.auth_failures_before_ban,
            window: Duration::from_secs(g.auth_failure_window_secs),
            ban: Duration::from_secs(g.ban_secs),
            ban_max: Duration::from_secs(g.ban_max_secs),
            ban_scanners: true,
            floods_before_ban: g.flood_reports_before_ban,
            max_sources: g.ids_max_sources,
            dialog_probes_before_ban: g.dialog_probes_before_ban,
        },
        agent: cfg.sip.agent.clone(),
        max_refusal_rows: g.refusal_rows,
    };
    let router = Router::new(p.connections);
    Ok(Core::new(
        core_cfg, p.rules, router, p.tariffs, verifier, media,
    ))
}

/// Says what a newcomer must do next when the store is empty.
pub fn first_start_hints(store: &Store, p: &Provisioned) {
    if !store.has_staff().unwrap_or(true) {
        warn!(
            "no staff users yet: stop sipd and run `sipd init --username <admin>` to create the first admin \
             (it prints a QR code to enrol their TOTP); the management API needs one to log in"
        );
    }
    if p.rules.accounts().count() == 0 {
        warn!("no accounts provisioned: every call will be refused (see `sipd import`)");
    }
}

/// The management API. Calls matter more than the management plane: if the API cannot
/// start, sipd says so loudly and keeps serving.
pub async fn start_api(
    cfg: &Config,
    control: crate::control::Control,
) -> Option<crate::api::ApiHandle> {
    match crate::api::start(cfg, control).await {
        Ok(api) => Some(api),
        Err(e) => {
            error!(
                error = format!("{e:#}"),
                "management API NOT started: no HTTPS management and no /metrics until sipd is restarted with this fixed"
            );
            None
        }
    }
}

/// The digest nonce secret: kept in the data directory so nonces survive a restart (clients
/// mid-challenge are not all refused), created 0600 on first start.
fn nonce_key(data_dir: &Path) -> Result<NonceKey> {
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
    crate::private_file::write(&path, &k).with_context(|| format!("writing {}", path.display()))?;
    Ok(NonceKey::new(k))
}

/// Takes back the calls the previous run saved (see `sipd_core::b2bua::adopt`), then frees
/// the relay sessions it recovered that no call took back. Records that cannot be used are
/// removed (the writer's `Forget`); one that does not decode stays for `sipd store check`.
pub fn adopt_calls(
    store: &Store,
    core: &mut Core<RelayMedia>,
    sessions: &relay_user::Sessions,
    writer: &mut super::writer::Writer,
) {
    let alive = store.calls_alive();
    let mut records = Vec::new();
    for r in store.saved_calls() {
        match r {
            Ok(mut c) => {
                c.alive_ms = alive;
                records.push(c);
            }
            Err(e) => warn!(error = %e, "a saved call cannot be read (see `sipd store check`)"),
        }
    }
    if !records.is_empty() {
        let adopted = core.adopt(Instant::now(), SystemTime::now(), records);
        let unusable: Vec<String> = adopted.unusable.into_iter().map(|(id, _)| id).collect();
        if !unusable.is_empty() {
            writer.write(crate::store::CallWrite::Forget(unusable));
        }
    }
    let live: std::collections::HashSet<String> =
        core.calls().map(|c| c.media_id.clone()).collect();
    let mut freed = 0;
    for s in sessions.list() {
        if sessions.label(s).is_some_and(|l| !live.contains(&l))
            && sessions.remove_session(s).is_ok()
        {
            freed += 1;
        }
    }
    if freed > 0 {
        info!(
            sessions = freed,
            "freed relay sessions of the previous run that no call took back"
        );
    }
}
