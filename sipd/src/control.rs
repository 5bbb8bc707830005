//! What the management API may ask of the running daemon. The call core is owned by the
//! event loop in [`crate::server`]; the API reaches it only through these commands, answered
//! between SIP messages, so it never sees a call half-updated. The store and the data plane
//! are shared directly (both are safe to use from any thread).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use relay_user::{DataPlane, RelayTotals, Sessions};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::call_media::{Clocks, LiveCall, MediaLegs, join};
use crate::events::Hub;
use crate::events::capture::Capture;
use crate::firewall::Firewall;
use crate::server::{WriterProbe, WriterStats};
use crate::store::{Id, Micros, Store};
use crate::transport::{TransportStats, Transports};
use sipd_core::b2bua::{CallInfo, CallKey, CoreStats};
use sipd_core::records::RefusalRow;

/// A request to the event loop.
#[derive(Debug)]
pub enum Command {
    /// The calls in progress, as the core describes them, each with the relay ports of its
    /// media if anchored (`/api/calls`).
    Calls(oneshot::Sender<Vec<(CallInfo, Option<MediaLegs>)>>),
    /// End a call; the `String` is the staff member the CDR names as having hung up.
    Hangup(CallKey, String, oneshot::Sender<bool>),
    /// Re-read accounts, rules, connections and tariffs from the store.
    Reload(oneshot::Sender<Result<(), String>>),
    /// The store's balance of an account changed by this much (a top-up).
    Credit(Id, Micros, oneshot::Sender<()>),
    /// The core's counters and the number of active calls.
    Stats(oneshot::Sender<(CoreStats, usize)>),
    /// The refusal table: refusals before authentication by (source, reason).
    Refusals(oneshot::Sender<Vec<RefusalRow>>),
}

/// Why a [`Control`] command got no answer from the event loop.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The event loop is gone (shutdown): the command was not sent or its answer was dropped.
    #[error("sipd is shutting down")]
    Stopped,
    /// The event loop did not answer within the given time (a core stuck or overloaded); the
    /// command may still run later.
    #[error("the call core did not answer within {0:?}")]
    Timeout(Duration),
    /// The event loop answered a reload with an error (the text is its explanation).
    #[error("reload failed: {0}")]
    Reload(String),
}

/// Everything about the daemon an operator sees at once (`/api/status`, `/metrics`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// When the daemon started, in Unix milliseconds.
    pub started_ms: u64,
    /// Seconds since the daemon started (wall clock; 0 if the clock went backwards).
    pub uptime_secs: u64,
    /// Calls in progress in the core.
    pub active_calls: usize,
    /// The call core's counters.
    pub core: CoreStats,
    /// The SIP transports' counters (connections, messages, drops).
    pub transport: TransportStats,
    /// `xdp-native`, `xdp-skb` or `userspace`.
    pub dataplane: String,
    /// Why that data plane (the loader's explanation).
    pub dataplane_reason: String,
    /// The data plane's per-reason counters (packets passed, dropped by cause, relayed).
    pub dataplane_stats: BTreeMap<&'static str, u64>,
    /// Entries in the data plane's ban list (0 if it cannot be read).
    pub bans: usize,
    /// Media relayed since start, by the kernel and the userspace relay together.
    pub relay: RelayTotals,
    /// Media packets relayed by the XDP program since start (`relay_tx`, `relay_redirect`
    /// and `relay_local` less the userspace relay's).
    pub relayed_kernel_packets: u64,
    /// Media packets relayed by the userspace relay since start.
    pub relayed_user_packets: u64,
    /// Calls the media relay has ports for: RTP port pairs (used and free) over the two a
    /// call's audio takes.
    pub calls_capacity: u64,
    /// The CDR writer's queue.
    pub cdr_queue: WriterStats,
    /// Calls saved in the store (records of calls in progress).
    pub saved_calls: u64,
    /// Which plane firewalls each of sipd's addresses and host services.
    pub coverage: Vec<crate::firewall::coverage::Covered>,
    /// The host services in the firewall (SIP, management, SSH, SIP over TLS) and their
    /// allow lists.
    pub services: Vec<crate::firewall::changes::ServiceView>,
}

/// Cheap to clone; one per API worker.
#[derive(Clone)]
pub struct Control {
    tx: mpsc::Sender<Command>,
    /// The store the API reads and writes directly (safe from any thread).
    pub store: Arc<Store>,
    /// The data plane (mode, counters, ban list), shared with the event loop.
    pub dataplane: Arc<DataPlane>,
    /// The SIP transports, for their counters and connection list.
    pub transports: Transports,
    /// The media relay's sessions, for the relayed totals.
    pub sessions: Arc<Sessions>,
    /// The firewall (SIP and management rules), changed directly by the API.
    pub firewall: Arc<Firewall>,
    /// The CDR writer's queue, set once the writer runs.
    pub writer: WriterProbe,
    /// The event stream's publishing end (`GET /api/events`).
    pub events: Hub,
    /// The SIP messages of live and recent calls (`GET /api/calls/{id}/messages`).
    pub capture: Arc<Capture>,
    /// HEP capture's counters (`/metrics`); `None` when `[capture] hep` is off.
    pub hep: Option<crate::hep::Hep>,
    /// ACME's renewals and alert (`/metrics`, `GET /api/alerts`); `None` when `[acme]` is off.
    pub acme: Option<Arc<crate::acme::Acme>>,
    /// This node's membership of a cluster; `None` without `[cluster]`.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    started: SystemTime,
}

/// How long the API waits for the event loop before giving up on a command.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

impl Control {
    /// Builds the handle and the receiving end the event loop reads commands from (bounded at 64
    /// queued commands, so a flood of API requests waits instead of growing a queue). The start
    /// time is now.
    pub fn new(
        store: Arc<Store>,
        dataplane: Arc<DataPlane>,
        transports: Transports,
        sessions: Arc<Sessions>,
        firewall: Arc<Firewall>,
    ) -> (Control, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(64);
        (
            Control {
                tx,
                store,
                dataplane,
                transports,
                sessions,
                firewall,
                writer: WriterProbe::default(),
                events: Hub::default(),
                capture: Arc::new(Capture::new(Default::default())),
                hep: None,
                acme: None,
                cluster: None,
                started: SystemTime::now(),
            },
            rx,
        )
    }

    async fn ask<R>(
        &self,
        make: impl FnOnce(oneshot::Sender<R>) -> Command,
    ) -> Result<R, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| ControlError::Stopped)?;
        match tokio::time::timeout(ANSWER_WITHIN, rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(ControlError::Stopped),
            Err(_) => Err(ControlError::Timeout(ANSWER_WITHIN)),
        }
    }

    /// The calls in progress.
    pub async fn calls(&self) -> Result<Vec<CallInfo>, ControlError> {
        let calls = self.ask(Command::Calls).await?;
        Ok(calls.into_iter().map(|(c, _)| c).collect())
    }

    /// The calls in progress with their media figures: the ports from the event loop, the
    /// counters from one walk of the data plane's leg counters (here, not in the event loop).
    pub async fn live_calls(&self) -> Result<Vec<LiveCall>, ControlError> {
        let calls = self.ask(Command::Calls).await?;
        let dp = self.dataplane.clone();
        let counters = tokio::task::spawn_blocking(move || dp.leg_counters_by_plane())
            .await
            .ok()
            .and_then(|r| {
                r.inspect_err(|e| tracing::warn!(error = %e, "leg counters unreadable"))
                    .ok()
            })
            .unwrap_or_default();
        let now = Clocks {
            mono_ns: relay_user::clock::monotonic_ns(),
            wall_ms: crate::call_media::unix_ms(SystemTime::now()),
        };
        Ok(join(calls, &counters, now))
    }

    /// Ends a live call on both sides for staff member `by` (its CDR's `hung_up_by` is
    /// `staff:<by>`); `false` if no such call.
    pub async fn hangup(&self, id: CallKey, by: &str) -> Result<bool, ControlError> {
        let by = by.to_owned();
        self.ask(|tx| Command::Hangup(id, by, tx)).await
    }

    /// After a change to accounts, rules, connections or tariffs in the store.
    pub async fn reload(&self) -> Result<(), ControlError> {
        self.ask(Command::Reload)
            .await?
            .map_err(ControlError::Reload)
    }

    /// After a balance top-up (or correction) was written to the store.
    pub async fn credit(&self, account: Id, delta: Micros) -> Result<(), ControlError> {
        self.ask(|tx| Command::Credit(account, delta, tx)).await
    }

    /// Everything for `/api/status` and `/metrics`: the core's counters (asked of the event loop)
    /// and the transport, data plane, relay, CDR writer and firewall state (read directly).
    pub async fn status(&self) -> Result<Status, ControlError> {
        let (core, active_calls) = self.ask(Command::Stats).await?;
        let now = SystemTime::now();
        let dataplane_stats = self.dataplane.stats().unwrap_or_default();
        let relayed_user_packets = self.dataplane.user_relayed();
        let relayed_kernel_packets = ["relay_tx", "relay_redirect", "relay_local"]
            .iter()
            .map(|k| dataplane_stats.get(k).copied().unwrap_or(0))
            .sum::<u64>()
            .saturating_sub(relayed_user_packets);
        let (used, free) = self.sessions.port_usage();
        Ok(Status {
            relayed_kernel_packets,
            relayed_user_packets,
            calls_capacity: ((used + free) / 2) as u64,
            started_ms: crate::mgmt::unix_ms(self.started),
            uptime_secs: now.duration_since(self.started).map_or(0, |d| d.as_secs()),
            active_calls,
            core,
            transport: self.transports.stats(),
            dataplane: self.dataplane.mode().to_string(),
            dataplane_reason: self.dataplane.reason().to_owned(),
            dataplane_stats,
            bans: self.dataplane.ban_list().map_or(0, |b| b.len()),
            relay: self.sessions.totals(),
            cdr_queue: self.writer.stats(),
            saved_calls: self.store.saved_call_count(),
            coverage: self.firewall.coverage(),
            services: self.firewall.view().map(|v| v.services).unwrap_or_default(),
        })
    }

    /// Refusals before authentication by (source, reason), most recent first.
    pub async fn refusals(&self) -> Result<Vec<RefusalRow>, ControlError> {
        self.ask(Command::Refusals).await
    }
}
