//! Starting a media plane: the data plane (XDP where it can, userspace where it must, said
//! loudly by the loader), the userspace relay, the relay sessions over them, what becomes of a
//! previous run's pinned sessions, and the media timeout. `relayd` and `sipd` both start theirs
//! here.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::calls::{Interface, MediaCalls};
use super::guard::Limits;
use crate::loader::{self, LoadError, LoaderConfig};
use crate::ports::PortRange;
use crate::session::{SessionReport, Sessions};
use crate::{DataPlane, UserRelay};

/// What to do with relay sessions a previous run left in the pinned maps (XDP only: a
/// userspace relay's sessions die with its process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Previous {
    /// Keep relaying them: they are adopted and end by media timeout or by a restored call's
    /// delete (relayd: the media never stops across a restart).
    Adopt,
    /// Free them: their calls cannot be resumed (sipd: the SIP dialogs died with the process).
    Remove,
}

/// Why a [`MediaPlane`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum PlaneError {
    /// Loading or attaching the XDP data plane failed (including its userspace fallback).
    #[error("bringing up the data plane")]
    DataPlane(#[source] LoadError),
    /// The userspace relay's sockets or threads could not start.
    #[error("starting the userspace relay")]
    Relay(#[source] io::Error),
}

/// How to start a [`MediaPlane`]; see [`MediaPlane::builder`].
#[derive(Debug, Clone)]
pub struct MediaPlaneBuilder {
    loader: LoaderConfig,
    ports: PortRange,
    address: IpAddr,
    workers: usize,
    previous: Previous,
    media_timeout: Duration,
    learn_window: Duration,
}

/// A running media plane: data plane, userspace relay and relay sessions.
pub struct MediaPlane {
    dp: Arc<DataPlane>,
    relay: Arc<UserRelay>,
    sessions: Arc<Sessions>,
    media_timeout: Duration,
    /// Where the relay's sockets are: SDP may not send media there.
    address: IpAddr,
    ports: PortRange,
}

impl MediaPlaneBuilder {
    /// Userspace relay worker threads (default 2).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// What to do with a previous run's pinned sessions (default: adopt them).
    pub fn previous_sessions(mut self, p: Previous) -> Self {
        self.previous = p;
        self
    }

    /// How long a session may go without media before the reaper removes it (default 60 s).
    pub fn media_timeout(mut self, d: Duration) -> Self {
        self.media_timeout = d;
        self
    }

    /// How long after each offer, answer or re-INVITE a leg may learn its peer (default
    /// 30 s): long enough for phones that only send media once answered, short enough that a
    /// stranger cannot wait for a later chance.
    pub fn learn_window(mut self, d: Duration) -> Self {
        self.learn_window = d;
        self
    }

    /// Brings everything up. `object` is the XDP object ([`crate::object::ebpf_object`]).
    pub fn start(self, object: &[u8]) -> Result<MediaPlane, PlaneError> {
        if self.media_timeout < Duration::from_secs(1) {
            warn!(timeout = ?self.media_timeout, "very short media timeout: calls on hold may be cut");
        }
        let dp = Arc::new(loader::start(&self.loader, object).map_err(PlaneError::DataPlane)?);
        let relay =
            Arc::new(UserRelay::start(dp.clone(), self.workers).map_err(PlaneError::Relay)?);
        let sessions = Arc::new(
            Sessions::new(dp.clone(), relay.clone(), self.ports, self.address)
                .with_learn_window(self.learn_window),
        );
        if dp.mode().is_xdp() {
            take_over(&sessions, self.previous);
        }
        Ok(MediaPlane {
            dp,
            relay,
            sessions,
            media_timeout: self.media_timeout,
            address: self.address,
            ports: self.ports,
        })
    }
}

/// Recovers the pinned sessions of a previous run, then keeps or frees them.
fn take_over(sessions: &Sessions, previous: Previous) {
    match (sessions.recover(), previous) {
        (Ok(0), _) => {}
        (Ok(n), Previous::Adopt) => info!(
            sessions = n,
            "live sessions carried over from the previous run"
        ),
        (Ok(n), Previous::Remove) => {
            for s in sessions.list() {
                let _ = sessions.remove_session(s);
            }
            warn!(
                sessions = n,
                "removed relay sessions left by a previous run"
            );
        }
        (Err(e), Previous::Adopt) => warn!(error = %e, "could not adopt pinned sessions"),
        (Err(e), Previous::Remove) => {
            warn!(error = %e, "could not check for sessions of a previous run")
        }
    }
}

impl MediaPlane {
    /// Relay sessions on `ports`, anchored at `address` (where media is received and sent
    /// from), over the data plane `loader` brings up.
    pub fn builder(loader: LoaderConfig, ports: PortRange, address: IpAddr) -> MediaPlaneBuilder {
        MediaPlaneBuilder {
            loader,
            ports,
            address,
            workers: 2,
            previous: Previous::Adopt,
            media_timeout: Duration::from_secs(60),
            learn_window: Duration::from_nanos(relay_common::relay::LEARN_WINDOW_NS),
        }
    }

    /// The data plane (firewall tables, legs, counters).
    pub fn dataplane(&self) -> &Arc<DataPlane> {
        &self.dp
    }

    /// The userspace relay.
    pub fn relay(&self) -> &Arc<UserRelay> {
        &self.relay
    }

    /// The relay sessions (ports and streams).
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// How long a session may go without media before it is removed.
    pub fn media_timeout(&self) -> Duration {
        self.media_timeout
    }

    /// A media call table over this plane's sessions, advertising `interfaces` in SDP, that
    /// refuses SDP sending media to this plane's own sockets, and holding each call to
    /// `limits`.
    pub fn calls(&self, interfaces: Vec<Interface>, limits: Limits) -> MediaCalls<Sessions> {
        let ports = self.ports.first..=self.ports.last;
        let calls = MediaCalls::new(self.sessions.clone(), interfaces);
        let calls = if self.address.is_unspecified() {
            // Bound to every address: each of the host's is the relay's.
            let host = crate::host::addresses().unwrap_or_else(|e| {
                warn!(error = %e, "cannot list the host's addresses; SDP naming one of them with a relay port is not refused (the userspace relay still drops such loops)");
                Vec::new()
            });
            calls.with_relay_on_host(self.address, ports, host)
        } else {
            calls.with_relay(self.address, ports)
        };
        calls.with_limits(limits)
    }

    /// Removes sessions without media for the media timeout on a thread, checking every
    /// second (or the timeout, if shorter); their reports arrive on the channel. For a
    /// daemon without a tick of its own: others call [`MediaCalls::timed_out`].
    pub fn spawn_reaper(&self) -> mpsc::UnboundedReceiver<SessionReport> {
        self.sessions.spawn_reaper(
            self.media_timeout,
            Duration::from_secs(1).min(self.media_timeout),
        )
    }
}
