//! `sipd run`: the one process of the appliance. Brings up the data plane through relay-user
//! (XDP where it can, userspace where it must, and says which), the media relay, the SIP
//! transports, the firewall and the call core (`startup.rs`), then feeds the core and carries
//! out its effects (`Appliance::serve`).
//!
//! The core is single-threaded and owns all call state; this shell is the only place with I/O.
//! Store writes (saved calls, CDRs, balance debits) go to a writer thread (`writer.rs`) so a
//! flush never stalls the loop; the messages that must wait for one (an answered call's 2xx,
//! the 200 to a BYE that ended a billed call) are held until it is durable (`held.rs`).
//! Names go to the resolver so a slow DNS server never stalls signalling.
//!
//! Stopping: SIGTERM or SIGINT ends every call (BYE both ways, CDRs) and exits. SIGUSR2 hands
//! the calls over to the next run instead (an upgrade): new calls are refused, calls being set
//! up get [`HAND_OVER_DRAIN`] to finish, and the answered ones stay up, saved, for the next
//! start to adopt with the relay sessions the kernel kept forwarding.

pub mod admin;
mod ban_audit;
mod cluster_limits;
mod held;
pub use ban_audit::offence_name;
pub mod fds;
mod provisioned;
mod refusals;
pub mod retention;
mod startup;
mod tls_names;
mod writer;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{debug, info};

use relay_user::{DataPlane, GuardEventKind, GuardEvents};
use sipd_core::b2bua::{Core, Effect};

use crate::config::Config;
use crate::control::{Command, Control};
use crate::events::capture::{Capture, Dir, call_id_of};
use crate::events::{Audience, Hub};
use crate::firewall::Firewall;
use crate::media::RelayMedia;
use crate::mgmt::unix_ms;
use crate::resolver::{Answer, Resolver};
use crate::store::Store;
use crate::transport::{Event, Transports};
use held::Held;
pub use provisioned::Provisioned;
use writer::Writer;
pub use writer::{WriterProbe, WriterStats};

/// How long a hand-over (SIGUSR2) waits for calls being set up to be answered or to fail.
pub const HAND_OVER_DRAIN: Duration = Duration::from_secs(5);

/// How often the checkpoint ("the saved calls were up at …") is written while calls are up:
/// a call that cannot be resumed after a crash is billed up to it at worst.
const CHECKPOINT: Duration = Duration::from_secs(5);

/// How the process is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopping {
    /// Ending every call (SIGTERM, SIGINT).
    HangUp,
    /// Leaving answered calls up for the next run (SIGUSR2).
    HandOver,
}

/// Runs the appliance until SIGTERM/SIGINT (or SIGUSR2: see the module docs).
pub async fn run(cfg: Config) -> Result<()> {
    Appliance::start(cfg).await?.serve().await
}

/// sipd purges expired bans itself, from its table, the store and the data plane: the kernel
/// ignores them, but they hold room in a bounded table, and `relayd` may not be running.
fn purge_bans(firewall: Arc<Firewall>, every_secs: u64) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(every_secs.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let fw = firewall.clone();
            // Store writes and map syscalls: off the runtime's worker.
            let _ = tokio::task::spawn_blocking(move || fw.purge_expired()).await;
        }
    });
}

/// How often the host's interfaces are read again for firewall coverage: an interface or
/// address added after start is checked in userspace from then on.
const COVERAGE_REFRESH: Duration = Duration::from_secs(3);

/// Works out coverage again every [`COVERAGE_REFRESH`].
fn refresh_coverage(firewall: Arc<Firewall>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(COVERAGE_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let fw = firewall.clone();
            // getifaddrs and one if_nametoindex per interface: off the runtime's worker.
            let _ = tokio::task::spawn_blocking(move || fw.refresh_coverage()).await;
        }
    });
}

/// Everything the event loop feeds and drains.
struct Appliance {
    store: Arc<Store>,
    dp: Arc<DataPlane>,
    firewall: Arc<Firewall>,
    ban_audit: ban_audit::BanAudit,
    refusal_saver: refusals::RefusalSaver,
    transports: Transports,
    events: mpsc::Receiver<Event>,
    core: Core<RelayMedia>,
    resolver: Resolver,
    answers: mpsc::Receiver<Answer>,
    /// The names upstream TLS certificates must carry, kept current for the transport.
    tls_names: tls_names::UpstreamTlsNames,
    commands: mpsc::Receiver<Command>,
    api: Option<crate::api::ApiHandle>,
    writer: Writer,
    /// Calls started and ended go out on the event stream.
    hub: Hub,
    /// The SIP messages of live and recent calls, filed as they pass.
    capture: Arc<Capture>,
    /// Copies of every SIP message in and out to a HEP collector (`[capture] hep`).
    hep: Option<crate::hep::Hep>,
    guard_events: Option<GuardEvents>,
    stopping: Option<(Instant, Stopping)>,
    /// Messages waiting for a store write to be durable.
    held: Held,
    /// The writer's durable sequence number.
    durable: tokio::sync::watch::Receiver<u64>,
    /// The writer thread ended (its channel closed): nothing will become durable any more.
    writer_gone: bool,
    /// When the checkpoint was last written.
    checkpoint: Instant,
    /// This node's membership of a cluster (`[cluster]`).
    cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The core's shares of the cluster's limits and balances (`[cluster]`).
    limits: Option<cluster_limits::LimitsSync>,
    limits_rx: Option<mpsc::UnboundedReceiver<cluster_limits::Synced>>,
}

impl Appliance {
    async fn start(cfg: Config) -> Result<Appliance> {
        let store = Arc::new(
            Store::open_private(&cfg.data_dir, &cfg.auth.realm)
                .with_context(|| format!("opening the store in {}", cfg.store_dir().display()))?,
        );
        let orphaned = store.ha1_for_other_realms(&cfg.auth.realm);
        if let Some(refusal) = crate::store::realm_change_refusal(&cfg.auth.realm, &orphaned) {
            anyhow::bail!(refusal);
        }
        let records = Provisioned::read(&store);
        startup::check_records(&cfg, &records)?;
        startup::first_start_hints(&store, &records);
        let accounts = records.rules.accounts().count();
        let nofile = fds::raise_nofile();

        let (plane, media, attached) = startup::start_media(&cfg)?;
        let dp = plane.dataplane().clone();
        let tls_names = tls_names::UpstreamTlsNames::default();
        tls_names.set_connections(&records.connections);
        let acme = crate::acme::Acme::new(&cfg)?;
        let (transports, events, locals, sip_ports) =
            startup::bind_sip(&cfg, nofile, &tls_names, acme.as_ref()).await?;
        let hub = Hub::default();
        let capture = Arc::new(Capture::new(cfg.call_messages));
        let hep = crate::hep::Hep::start(&cfg.capture);
        let firewall = Arc::new(
            Firewall::new(&cfg.firewall, &cfg.bans, store.clone(), dp.clone())
                .with_events(hub.clone()),
        );
        firewall.program_sip(&cfg.guard, &sip_ports)?;
        firewall.program_host_services()?;
        firewall.set_coverage(startup::coverage(&cfg, attached));
        refresh_coverage(firewall.clone());
        transports.set_tcp_guard(startup::tcp_guard(&cfg, &dp));
        let fw = firewall.clone();
        transports.set_tcp_filter(Arc::new(move |remote, local, _| {
            fw.admits_connection(remote, local)
        }));
        purge_bans(firewall.clone(), cfg.bans.purge_interval_secs);
        // After the stored bans are in: they are the node's starting point for the resync.
        let cluster = cfg
            .cluster
            .as_ref()
            .map(|_| crate::cluster::Cluster::start(&cfg, store.clone(), firewall.clone()))
            .transpose()?;
        let (resolver, answers) = Resolver::from_system();
        let names = startup::trust_peers(&firewall, &records, &resolver).await;

        let limited = cluster
            .as_ref()
            .map(|_| cluster_limits::Limits::of(&records));
        let mut core = startup::core(&cfg, records, locals, media)?;
        refusals::RefusalSaver::restore(&store, &mut core);
        for a in names {
            tls_names.resolved(&a.host, &a.addrs);
            core.on_resolved(Instant::now(), SystemTime::now(), &a.host, a.addrs, a.ttl);
        }
        let mut writer = Writer::spawn(store.clone())?;
        if let Some(c) = &cluster {
            writer.tap_cdrs(crate::cluster::cdrs::spawn(c.clone()));
        }
        startup::adopt_calls(&store, &mut core, plane.sessions(), &mut writer);
        // After the adoption: an adopted call's account keeps its stored balance until its
        // first reservation (zeroing it could cut the call).
        let (limits, limits_rx) = match (&cluster, limited) {
            (Some(c), Some(l)) => {
                let every = Duration::from_millis(c.config().limits_sync_ms);
                let (mut sync, rx) = cluster_limits::LimitsSync::new(c.limits().clone(), every);
                sync.set_records(l, &mut core);
                (Some(sync), Some(rx))
            }
            _ => (None, None),
        };
        let (mut control, commands) = Control::new(
            store.clone(),
            dp.clone(),
            transports.clone(),
            plane.sessions().clone(),
            firewall.clone(),
        );
        control.writer = writer.probe();
        control.events = hub.clone();
        control.capture = capture.clone();
        control.hep = hep.clone();
        control.acme = acme.clone();
        control.cluster = cluster.clone();
        if let Some(c) = &cluster {
            c.serve(control.clone());
        }
        retention::spawn(store.clone(), cfg.retention.days);
        admin::spawn(store.clone(), &cfg.data_dir);
        let api = startup::start_api(&cfg, control).await;
        if let Some(a) = acme {
            // After both TLS servers registered: the first certificate reaches them both.
            a.start().await.context("ACME")?;
        }
        let writer_durable = writer.durable();
        info!(
            sip_udp = ?transports.udp_addrs(),
            sip_tcp = ?transports.tcp_addrs(),
            sip_tls = ?transports.tls_addrs(),
            media = %cfg.media.address,
            ports = %format!("{}-{}", cfg.media.port_min, cfg.media.port_max),
            dataplane = %dp.mode(),
            accounts,
            "sipd ready"
        );
        Ok(Appliance {
            ban_audit: ban_audit::BanAudit::new(store.clone(), &cfg.guard),
            refusal_saver: refusals::RefusalSaver::new(store.clone()),
            guard_events: dp.guard_events(),
            store,
            dp,
            firewall,
            transports,
            events,
            core,
            resolver,
            answers,
            tls_names,
            commands,
            api,
            writer,
            hub,
            capture,
            hep,
            stopping: None,
            held: Held::default(),
            durable: writer_durable,
            writer_gone: false,
            checkpoint: Instant::now(),
            cluster,
            limits,
            limits_rx,
        })
    }

    async fn serve(mut self) -> Result<()> {
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let mut usr2 = signal(SignalKind::user_defined2()).context("SIGUSR2 handler")?;
        // The adoption's BYEs, 503s and CDRs.
        self.carry_out();
        loop {
            // The core's next timer may be minutes away (a transaction reaper); the loop still
            // wakes every second, and every 100 ms while stopping, so shutdown never waits on
            // it.
            let cap = Instant::now()
                + if self.stopping.is_some() {
                    Duration::from_millis(100)
                } else {
                    Duration::from_secs(1)
                };
            let cap = self
                .limits
                .as_ref()
                .map_or(cap, |l| l.due().max(Instant::now()).min(cap));
            let deadline = self.core.next_timeout().map_or(cap, |t| t.min(cap));
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
            tokio::select! {
                ev = self.events.recv() => {
                    let Some(ev) = ev else { break };
                    self.on_transport(ev);
                }
                Some(a) = self.answers.recv() => {
                    self.tls_names.resolved(&a.host, &a.addrs);
                    self.core.on_resolved(Instant::now(), SystemTime::now(), &a.host, a.addrs, a.ttl);
                }
                Some(ev) = async {
                    match self.guard_events.as_mut() {
                        Some(g) => g.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    debug!(source = %ev.source, kind = ?ev.kind, suppressed = ev.suppressed, "guard event");
                    if matches!(
                        ev.kind,
                        Some(GuardEventKind::PacketRate | GuardEventKind::InviteRate | GuardEventKind::SynRate)
                    ) {
                        self.core.on_flood(Instant::now(), ev.source);
                    }
                }
                Some(cmd) = self.commands.recv() => self.on_command(cmd),
                Some(s) = async {
                    match self.limits_rx.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Some(l) = self.limits.as_mut() {
                        l.apply(s, &mut self.core);
                    }
                }
                _ = sleep => self.core.tick(Instant::now(), SystemTime::now()),
                r = self.durable.changed(), if !self.held.is_empty() && !self.writer_gone => {
                    if r.is_err() {
                        tracing::error!("store writer is gone: messages held for it are sent");
                        self.writer_gone = true;
                    }
                }
                _ = term.recv(), if self.stopping.is_none() => self.stop("SIGTERM"),
                _ = int.recv(), if self.stopping.is_none() => self.stop("SIGINT"),
                _ = usr2.recv(), if self.stopping.is_none() => self.hand_over(),
            }
            self.carry_out();
            if let Some(l) = self.limits.as_mut() {
                l.maybe_start(&mut self.core);
            }
            self.release_held();
            self.writer.set_held(self.held.len());
            self.write_checkpoint();
            self.refusal_saver.tick(Instant::now(), &mut self.core);
            // Give the BYEs of a shutdown a moment to be answered (a hand-over: the calls in
            // setup a moment to finish), then go once every held message is out.
            let done = match self.stopping {
                Some((t, Stopping::HangUp)) => {
                    self.core.active_calls() == 0 && t.elapsed() > Duration::from_millis(300)
                        || t.elapsed() > Duration::from_secs(2)
                }
                Some((t, Stopping::HandOver)) => {
                    self.core.unsettled() == 0 || t.elapsed() > HAND_OVER_DRAIN
                }
                None => false,
            };
            if done
                && (self.held.is_empty()
                    || self
                        .stopping
                        .is_some_and(|(t, _)| t.elapsed() > HAND_OVER_DRAIN * 2))
            {
                break;
            }
        }
        self.shut_down().await;
        Ok(())
    }

    fn on_transport(&mut self, ev: Event) {
        let (now, wall) = (Instant::now(), SystemTime::now());
        match ev {
            Event::Message(m) => {
                if self.firewall.admits(&m.peer, m.arrival, &m.data) {
                    // Every transport's messages pass here, so each is captured once.
                    if let Some(h) = &self.hep {
                        h.received(&m.peer, m.arrival.local, &m.data, wall);
                    }
                    self.core
                        .on_verified_message(now, wall, m.peer, &m.tls_client_names, &m.data);
                    // After the core: a new call is in its table only now.
                    self.file(Dir::In, &m.peer, &m.data, wall);
                }
            }
            Event::Malformed { inbound, error } => {
                self.core
                    .on_malformed(inbound.peer, &inbound.data, error.into());
            }
            Event::SendFailed {
                token,
                error,
                remote,
                ..
            } => {
                debug!(%remote, %error, "send failed");
                self.core.on_send_failed(now, wall, token);
            }
            Event::Closed { .. } => {}
            Event::Flooded { source } => self.core.on_flood(now, source),
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let core = &mut self.core;
        match cmd {
            Command::Calls(tx) => {
                let infos = core.call_infos();
                let media: std::collections::HashMap<_, _> =
                    core.calls().map(|c| (c.key, c.media_id.clone())).collect();
                let calls = infos
                    .into_iter()
                    .map(|i| {
                        let legs = media.get(&i.id).and_then(|m| core.media().legs(m));
                        (i, legs)
                    })
                    .collect();
                let _ = tx.send(calls);
            }
            Command::Hangup(id, by, tx) => {
                let _ = tx.send(core.hangup(now, wall, id, &by));
            }
            Command::Reload(tx) => {
                let p = Provisioned::read(&self.store);
                self.tls_names.set_connections(&p.connections);
                let limited = self.limits.as_ref().map(|_| cluster_limits::Limits::of(&p));
                core.reload(p.rules, p.connections, p.tariffs);
                if let (Some(l), Some(records)) = (self.limits.as_mut(), limited) {
                    l.set_records(records, core);
                }
                info!("accounts, rules, connections and tariffs reloaded");
                let _ = tx.send(Ok(()));
            }
            Command::Credit(account, delta, tx) => {
                match self.limits.as_mut() {
                    // The core spends its reservation of the shared balance, which the API
                    // raised: the next sync (now) reserves from it.
                    Some(l) => l.soon(),
                    None => core.credit(account, delta),
                }
                let _ = tx.send(());
            }
            Command::Stats(tx) => {
                let _ = tx.send((core.stats(), core.active_calls()));
            }
            Command::Refusals(tx) => {
                let _ = tx.send(core.refusals());
            }
        }
    }

    /// The core's effects, in order. The messages of a batch that wrote something they must
    /// not overtake (see `CallWrite::holds_signalling`) wait for it in `held`, and so do the
    /// later messages of the same calls, so a peer never sees a call's messages out of order;
    /// other calls' messages pass.
    fn carry_out(&mut self) {
        let effects = self.core.drain_effects();
        let mut sends = Vec::new();
        // The last write this batch's messages must wait for (never a droppable one).
        let mut wait_for = 0;
        for e in effects {
            match e {
                Effect::Send(t) => sends.push(t),
                Effect::SaveCall { call, hold } => {
                    let w = crate::store::CallWrite::Save { call, hold };
                    let holds = w.holds_signalling();
                    let seq = self.writer.write(w);
                    if holds {
                        wait_for = seq;
                    }
                }
                Effect::CallStarted(call) => {
                    self.hub.publish("call_started", Audience::View, &call);
                }
                Effect::CallEnded {
                    id,
                    cause,
                    hung_up_by,
                } => {
                    self.capture.ended(id);
                    self.hub.publish(
                        "call_ended",
                        Audience::View,
                        &serde_json::json!({ "id": id, "cause": cause, "hung_up_by": hung_up_by }),
                    );
                }
                Effect::Cdr { cdr, debit, saved } => {
                    if let (Some(l), Some((account, cost))) = (self.limits.as_mut(), debit) {
                        l.debited(account, cost);
                    }
                    let w = crate::store::CallWrite::Settle { cdr, debit, saved };
                    let holds = w.holds_signalling();
                    let seq = self.writer.write(w);
                    if holds {
                        wait_for = seq;
                    }
                }
                Effect::SourceSession { ip, up } => {
                    let r = if up {
                        self.dp.sessions_increment(ip)
                    } else {
                        self.dp.sessions_decrement(ip)
                    };
                    if let Err(e) = r {
                        debug!(%ip, error = %e, "per-source session count not updated");
                    }
                }
                Effect::Ban {
                    ip,
                    duration,
                    offence,
                    first_offence,
                } => {
                    let evidence = self.ban_audit.evidence(ip, duration, offence);
                    // The core keeps monotonic time; the ban list shows wall time.
                    let ago = Instant::now().saturating_duration_since(first_offence);
                    let first_ms = unix_ms(SystemTime::now())
                        .saturating_sub(u64::try_from(ago.as_millis()).unwrap_or(u64::MAX));
                    self.firewall
                        .ban(ip, duration, offence, Some(evidence), first_ms);
                    self.ban_audit.record(Instant::now(), ip, duration, offence);
                }
                Effect::Resolve { host } => self.resolver.ask(host),
            }
        }
        let durable = if self.writer_gone {
            u64::MAX
        } else {
            *self.durable.borrow()
        };
        for t in sends {
            let call = call_id_of(&t.data)
                .and_then(|cid| self.core.call_of(cid))
                .map(|c| c.0);
            if let Some(t) = self.held.hold_or_pass(wait_for, durable, call, t) {
                self.send(t);
            }
        }
    }

    /// Sends what the store has made durable the writes it waited for (everything, if the
    /// writer is gone: holding calls' signalling forever would not bring it back).
    fn release_held(&mut self) {
        let durable = if self.writer_gone {
            u64::MAX
        } else {
            *self.durable.borrow_and_update()
        };
        for t in self.held.release(durable) {
            self.send(t);
        }
    }

    /// Puts one message on the wire.
    fn send(&self, t: sipd_core::sip::Transmit) {
        let wall = SystemTime::now();
        self.file(Dir::Out, &t.peer, &t.data, wall);
        let out: crate::transport::Outbound = t.into();
        // The one place every message leaves, whatever its transport.
        if let Some(h) = &self.hep {
            h.sent(&out, wall);
        }
        self.transports.send(out);
    }

    /// Every [`CHECKPOINT`] while calls are up: the saved calls were up now.
    fn write_checkpoint(&mut self) {
        if self.checkpoint.elapsed() < CHECKPOINT || self.core.active_calls() == 0 {
            return;
        }
        self.checkpoint = Instant::now();
        self.writer
            .write(crate::store::CallWrite::Alive(unix_ms(SystemTime::now())));
    }

    /// Files a SIP message under its call, if it belongs to one.
    fn file(&self, dir: Dir, peer: &sipd_core::sip::Peer, data: &[u8], wall: SystemTime) {
        let Some(cid) = call_id_of(data) else {
            return;
        };
        let Some((key, side, caller_cid)) = self.core.call_of(cid) else {
            return;
        };
        self.capture
            .record(key, caller_cid, side, dir, peer, data, unix_ms(wall));
    }

    fn stop(&mut self, signal: &str) {
        info!("{signal}: ending calls");
        self.core.shutdown(Instant::now(), SystemTime::now());
        self.stopping = Some((Instant::now(), Stopping::HangUp));
    }

    /// SIGUSR2: the calls go on under the next run (see the module docs).
    fn hand_over(&mut self) {
        let calls = self.core.active_calls();
        let unsettled = self.core.hand_over();
        self.writer
            .write(crate::store::CallWrite::Alive(unix_ms(SystemTime::now())));
        info!(
            calls,
            unsettled,
            drain = ?HAND_OVER_DRAIN,
            "SIGUSR2: handing calls over to the next run; new calls are refused"
        );
        self.stopping = Some((Instant::now(), Stopping::HandOver));
    }

    async fn shut_down(self) {
        info!(
            stats = ?self.core.stats(),
            dropped_by_fw = self.firewall.dropped(),
            transport = ?self.transports.stats(),
            "sipd stopping"
        );
        // Stopped before the core goes: a request in flight gets "shutting down", not a hang.
        drop(self.commands);
        if let Some(api) = self.api {
            api.stop().await;
        }
        let mut core = self.core;
        self.refusal_saver.finish(&mut core);
        drop(core);
        self.transports.shutdown();
        self.writer.finish();
        if let Some(c) = &self.cluster {
            // A hand-over leaves its calls up for the next run: its heartbeat key stays to
            // expire (the next run sets it again), so the shared counts are not reclaimed.
            let handing_over = matches!(self.stopping, Some((_, Stopping::HandOver)));
            c.leave(!handing_over).await;
        }
        info!("sipd stopped");
    }
}
