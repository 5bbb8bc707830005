//! Everything sipd programs into the data plane's firewall, in one place: the SIP and
//! management services and their allow lists, `sbc.toml`'s deny list, the SIP guard's limits,
//! trusted peers, the entries and manual bans stored through the API (applied again at every
//! start), the IDS's bans, and the changes operators make through the API ([`changes`]).
//!
//! Under XDP the kernel enforces it; on the userspace data plane, and on the XDP one for
//! whatever arrived where XDP is not attached ([`coverage`]), [`Firewall::admits`] runs the
//! same check on every SIP message before the core sees it, against the data plane's
//! userspace tables (in XDP mode the copy of the maps, written with them).

mod bans;
pub mod book;
pub mod changes;
pub mod coverage;
pub mod policy;
pub mod services;
pub mod shared;

pub use bans::{BanCounters, BanView, reason_name};
pub use policy::BansConfig;
pub use shared::{ApplyError, BanRecord};

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use ipnet::IpNet;
use tracing::{debug, error, info, warn};

use relay_user::{
    BanReason, Cidr, DataPlane, GuardSettings, Proto as DpProto, Service, ServiceId, Verdict,
};
use sipd_core::b2bua::Offence;
use sipd_core::sip::{Peer, Proto};

use crate::config::{FirewallConfig, GuardConfig};
use crate::store::{Store, canonical_ip};

/// The data plane's protocol for a SIP transport.
fn dp_proto(p: Proto) -> DpProto {
    match p {
        Proto::Udp => DpProto::Udp,
        // The kernel sees TLS as the TCP it runs over.
        Proto::Tcp | Proto::Tls => DpProto::Tcp,
    }
}

/// The data plane's ban reason for what a source did.
pub fn ban_reason(o: Offence) -> BanReason {
    match o {
        Offence::Scanner => BanReason::Scanner,
        Offence::BruteForce => BanReason::BruteForce,
        Offence::Enumeration => BanReason::Enumeration,
        Offence::Flood => BanReason::Flood,
        // Guessing at live dialogs is enumeration too; the audit entry says which kind.
        Offence::DialogProbe => BanReason::Enumeration,
    }
}

/// The firewall sipd runs: programs the data plane at start, keeps the management allow list
/// and the authoritative ban table, and answers `admits` for the userspace data plane. One,
/// shared (`Arc`) by the event loop and the management API.
pub struct Firewall {
    dp: Arc<DataPlane>,
    store: Arc<Store>,
    cfg: FirewallConfig,
    /// Sources allowed to connect to the management API: `management_allow` plus the API's
    /// own entries (checked before the TLS handshake).
    mgmt_allow: RwLock<Vec<IpNet>>,
    /// SIP messages and SIP-over-TCP connections the userspace firewall dropped (either data
    /// plane).
    dropped: AtomicU64,
    bans_cfg: BansConfig,
    /// Trusted peers: the IDS never bans a whole range holding one of them.
    trusted: RwLock<Vec<IpAddr>>,
    /// The authoritative table of bans (the data plane holds a copy).
    bans: Mutex<bans::BanState>,
    /// Which plane guards each of sipd's addresses (decided at start, refreshed as the
    /// host's interfaces change).
    coverage: RwLock<coverage::Coverage>,
    /// Where bans added and lifted are announced (`ban_added`, `ban_removed`).
    events: crate::events::Hub,
    /// Where the bans this node makes and lifts go when it is part of a cluster.
    share: shared::Share,
}

impl Firewall {
    /// The firewall for `cfg` and `bans`, with nothing programmed yet (see
    /// [`Firewall::program_sip`]); the management allow list is read from the store at once.
    pub fn new(
        cfg: &FirewallConfig,
        bans: &BansConfig,
        store: Arc<Store>,
        dp: Arc<DataPlane>,
    ) -> Firewall {
        let fw = Firewall {
            dp,
            store,
            cfg: cfg.clone(),
            mgmt_allow: RwLock::new(Vec::new()),
            dropped: AtomicU64::new(0),
            bans_cfg: bans.clone(),
            trusted: RwLock::new(Vec::new()),
            bans: Mutex::new(bans::BanState::new(bans)),
            coverage: RwLock::new(coverage::Coverage::default()),
            events: crate::events::Hub::default(),
            share: shared::Share::new(),
        };
        fw.refresh_mgmt_allow();
        fw
    }

    /// Announces bans on `hub` from now on.
    pub fn with_events(mut self, hub: crate::events::Hub) -> Firewall {
        self.events = hub;
        self
    }

    /// The data plane the firewall programs (kernel maps under XDP, or the userspace tables).
    pub fn dataplane(&self) -> &DataPlane {
        &self.dp
    }

    /// At start: the SIP guard's limits, the SIP services on `sip` (restricted when
    /// `sip_allow` has entries), `sip_allow`, `deny`, then what the API stored.
    pub fn program_sip(&self, guard: &GuardConfig, sip: &[(u16, Proto)]) -> Result<()> {
        let dp = &self.dp;
        dp.guard_set(&GuardSettings {
            packet_rate: guard.sip_packets_per_sec,
            packet_burst: guard.sip_packet_burst,
            invite_rate: guard.invites_per_sec,
            invite_burst: guard.invite_burst,
            max_sessions: guard.max_sessions_per_source,
            syn_rate: guard.tcp_syns_per_sec,
            syn_burst: guard.tcp_syn_burst,
            event_interval: Duration::from_secs(1),
        })
        .context("setting the SIP guard")?;
        let restricted = !self.cfg.sip_allow.is_empty();
        for &(port, proto) in sip {
            dp.service_set(Service {
                port,
                proto: dp_proto(proto),
                id: ServiceId::Sip,
                restricted,
                sip: true,
            })
            .with_context(|| format!("SIP service on port {port}"))?;
        }
        for net in &self.cfg.sip_allow {
            dp.allow_add(ServiceId::Sip, Cidr::from(*net))?;
        }
        for (i, net) in self.cfg.deny.iter().enumerate() {
            dp.deny_add(Cidr::from(*net), u32::try_from(i + 1).unwrap_or(u32::MAX))?;
        }
        self.reapply_stored();
        Ok(())
    }

    /// Puts the management port in the service ACL: restricted to its allow list.
    pub fn program_management(&self, port: u16) -> Result<()> {
        self.dp
            .service_set(Service {
                port,
                proto: DpProto::Tcp,
                id: ServiceId::Management,
                restricted: true,
                sip: false,
            })
            .context("management service in the data plane")?;
        for net in &self.cfg.management_allow {
            self.dp
                .allow_add(ServiceId::Management, Cidr::from(*net))
                .context("management allow entry")?;
        }
        Ok(())
    }

    /// Upstreams and IP-authenticated carriers (single-host rules) are exempt from the
    /// per-source SIP guard: a busy trunk sends far more than any flood limit meant for
    /// strangers. Wider CIDR rules cannot be listed host by host; their sources stay under
    /// the guard's limits.
    pub fn trust(&self, hosts: &[IpAddr]) {
        for ip in hosts {
            if let Err(e) = self.dp.sessions_set_limit(*ip, relay_user::TRUSTED_SOURCE) {
                warn!(%ip, error = %e, "could not exempt a trusted peer from the SIP guard");
            }
        }
        if !hosts.is_empty() {
            info!(peers = ?hosts, "trusted peers (upstreams, single-host IP-auth rules) skip the per-source SIP guard");
        }
        self.trusted
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(hosts.iter().map(|ip| canonical_ip(*ip)));
    }

    /// Records which plane guards each address and says, at warn, every address XDP does
    /// not cover (userspace-checked) and every one nothing covers.
    pub fn set_coverage(&self, c: coverage::Coverage) {
        Self::log_coverage(&c.entries);
        self.apply_coverage(c);
    }

    fn log_coverage(entries: &[coverage::Covered]) {
        for e in entries {
            match e.plane {
                coverage::Plane::Xdp => {
                    info!(service = e.service, address = %e.address, "firewalled by XDP")
                }
                coverage::Plane::Userspace => warn!(
                    service = e.service,
                    address = %e.address,
                    interfaces = ?e.uncovered,
                    "not covered by XDP: sipd's userspace firewall checks this traffic"
                ),
                coverage::Plane::None => warn!(
                    service = e.service,
                    address = %e.address,
                    interfaces = ?e.uncovered,
                    "NOT FIREWALLED: XDP is not on these interfaces and sipd does not check this traffic itself"
                ),
            }
        }
    }

    fn apply_coverage(&self, c: coverage::Coverage) {
        // The relay checks media itself only where XDP does not see it.
        let media_seen = c
            .plane_of("media")
            .is_none_or(|p| p == coverage::Plane::Xdp);
        self.dp
            .set_relay_unseen(self.dp.mode().is_xdp() && !media_seen);
        *self.coverage.write().unwrap_or_else(|p| p.into_inner()) = c;
    }

    /// Reads the host's interfaces again and works out coverage anew (an interface or an
    /// address added since start has no XDP unless it was attached); says what changed.
    pub fn refresh_coverage(&self) {
        let host = match coverage::Host::read() {
            Ok(h) => h,
            Err(e) => {
                debug!(error = %e, "cannot read the host's interfaces; coverage kept");
                return;
            }
        };
        let (old, new) = {
            let c = self.coverage.read().unwrap_or_else(|p| p.into_inner());
            (c.entries.clone(), c.refreshed(host))
        };
        let changed: Vec<coverage::Covered> = new
            .entries
            .iter()
            .filter(|e| !old.contains(e))
            .cloned()
            .collect();
        if !changed.is_empty() {
            info!("the host's interfaces changed: firewall coverage worked out again");
            Self::log_coverage(&changed);
        }
        self.apply_coverage(new);
    }

    /// Which plane guards each of sipd's addresses.
    pub fn coverage(&self) -> Vec<coverage::Covered> {
        self.coverage
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .clone()
    }

    /// Whether XDP saw what arrived as `a` (on the userspace data plane: never).
    fn xdp_saw(&self, a: coverage::Arrival) -> bool {
        self.dp.mode().is_xdp()
            && self
                .coverage
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .xdp_saw(a)
    }

    /// The userspace firewall for one SIP message that arrived as `arrival`, unless XDP saw
    /// it (it has dropped what it refuses before it reaches a socket, so checking again
    /// would only count twice). Drops are counted.
    pub fn admits(&self, peer: &Peer, arrival: coverage::Arrival, data: &[u8]) -> bool {
        if self.xdp_saw(arrival) {
            return true;
        }
        let v = self.dp.userspace_check(
            peer.remote.ip(),
            peer.local.port(),
            dp_proto(peer.proto),
            data,
        );
        let pass = matches!(v, Verdict::Pass(_));
        if !pass {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.count_ban_hit(peer.remote.ip(), v);
            debug!(from = %peer.remote, verdict = ?v, "SIP dropped by the firewall");
        }
        pass
    }

    /// A drop for a ban counts on that ban (its `hits` in the listing).
    fn count_ban_hit(&self, ip: IpAddr, v: Verdict) {
        if v == Verdict::Drop(relay_user::Stat::DropBanned) {
            let now = crate::mgmt::unix_ms(std::time::SystemTime::now());
            self.ban_state().book.hit(canonical_ip(ip), now);
        }
    }

    /// SIP messages and connections the userspace firewall dropped since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Whether a SIP-over-TCP connection from `peer` to our `local` may stay open: where XDP
    /// did not see it (the kernel refuses the handshake of what it sees), the kernel's
    /// pipeline runs in userspace once per connection, so a banned, denied or unlisted source
    /// holds no connection slot; its messages are checked one by one ([`Firewall::admits`])
    /// as well. Drops are counted.
    pub fn admits_connection(&self, peer: SocketAddr, local: SocketAddr) -> bool {
        let arrival = coverage::Arrival {
            local: local.ip(),
            ifindex: None,
        };
        if self.xdp_saw(arrival) {
            return true;
        }
        let v = self
            .dp
            .userspace_check(canonical_ip(peer.ip()), local.port(), DpProto::Tcp, b"");
        let pass = v.is_pass();
        if !pass {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.count_ban_hit(peer.ip(), v);
            debug!(%peer, %local, verdict = ?v, "SIP TCP connection closed by the firewall");
        }
        pass
    }

    /// Whether a management API connection from `peer` to our `local` may start its TLS
    /// handshake: the source is on the allow list and, where XDP did not see the
    /// connection, neither banned nor denied (the kernel's pipeline, run in userspace).
    pub fn management_admits(&self, peer: SocketAddr, local: SocketAddr) -> bool {
        let ip = canonical_ip(peer.ip());
        let listed = self
            .mgmt_allow
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|n| n.contains(&ip));
        if !listed {
            return false;
        }
        let arrival = coverage::Arrival {
            local: local.ip(),
            ifindex: None,
        };
        if self.xdp_saw(arrival) {
            return true;
        }
        let v = self.dp.userspace_check(ip, local.port(), DpProto::Tcp, b"");
        let pass = v.is_pass();
        if !pass {
            debug!(%peer, verdict = ?v, "management connection dropped by the firewall");
        }
        pass
    }

    /// The management allow list as configured plus stored, for the connection check.
    pub fn management_allow(&self) -> Vec<IpNet> {
        self.mgmt_allow
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn refresh_mgmt_allow(&self) {
        let mut v = self.cfg.management_allow.clone();
        for a in self.store.fw_allows().into_iter().flatten() {
            if a.service == ServiceId::Management.name() {
                v.push(a.cidr);
            }
        }
        *self.mgmt_allow.write().unwrap_or_else(|p| p.into_inner()) = v;
    }

    /// Restricted exactly when the allow list has entries (management and the operator's
    /// services: always, set when installed).
    fn sync_restricted(&self, svc: &services::Named) {
        let Some(id) = svc.known else { return };
        let restricted = id == ServiceId::Management
            || self
                .dp
                .allow_list(id)
                .map(|l| !l.is_empty())
                .unwrap_or(false);
        for s in self.dp.service_list().unwrap_or_default() {
            if s.id == id && s.restricted != restricted {
                let r = self.dp.service_set(Service { restricted, ..s });
                if let Err(e) = r {
                    error!(service = id.name(), error = %e, "service restriction not updated");
                }
            }
        }
    }

    /// The stored allow and deny entries, into the data plane, then the bans (`load_bans`).
    fn reapply_stored(&self) {
        let (dp, store) = (&self.dp, &self.store);
        let mut services = Vec::new();
        let mut n = 0;
        for a in store.fw_allows().into_iter().flatten() {
            let Some(svc) = self.service(&a.service) else {
                warn!(service = a.service, cidr = %a.cidr, "stored allow entry for a service no longer configured; skipped");
                continue;
            };
            match dp.allow_add(svc.id, Cidr::from(a.cidr)) {
                Ok(()) => n += 1,
                Err(e) => error!(cidr = %a.cidr, error = %e, "stored allow entry not applied"),
            }
            if !services.contains(&svc) {
                services.push(svc);
            }
        }
        for svc in &services {
            self.sync_restricted(svc);
        }
        for d in store.fw_denies().into_iter().flatten() {
            match dp.deny_add(Cidr::from(d.cidr), u32::try_from(d.id).unwrap_or(u32::MAX)) {
                Ok(()) => n += 1,
                Err(e) => error!(cidr = %d.cidr, error = %e, "stored deny entry not applied"),
            }
        }
        if n > 0 {
            info!(
                entries = n,
                "firewall entries from the management API applied"
            );
        }
        self.load_bans();
    }
}
