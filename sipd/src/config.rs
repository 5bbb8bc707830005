//! `sbc.toml`: every setting has the design's default, so the appliance runs with no file at
//! all; a file only says what differs. Unknown keys are errors, because a misspelt security
//! setting silently falling back to its default is worse than refusing to start.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use crate::toml_span::Location;
use crate::toml_span::locate;
use sipd_core::auth::digest::{Algorithm, DigestPolicy, HashFn};
use sipd_core::records::{SipPasswordPolicies, SipSecrets};

/// File looked for in the working directory when none is named.
pub const DEFAULT_FILE: &str = "sbc.toml";

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The whole of `sbc.toml`: one table per section, each defaulted on its own, checked by
/// [`Config::problems`] after parsing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The sled store, the TLS certificate and the nonce secret live here.
    pub data_dir: PathBuf,
    /// `[sip]`: listening sockets, advertised addresses, message and TCP limits.
    pub sip: SipConfig,
    /// `[auth]`: SIP digest authentication.
    pub auth: AuthConfig,
    /// `[media]`: the RTP relay's address, port range and media policy.
    pub media: MediaConfig,
    /// `[dataplane]`: XDP or userspace, and which interfaces.
    pub dataplane: DataplaneConfig,
    /// `[management]`: the HTTPS API, staff sessions and password hashing.
    pub management: ManagementConfig,
    /// `[guard]`: per-source limits in the kernel and the IDS's ban policy.
    pub guard: GuardConfig,
    /// `[firewall]`: deny list, allow lists and host services.
    pub firewall: FirewallConfig,
    /// `[retention]`: how long CDRs and audit entries are kept.
    pub retention: RetentionConfig,
    /// How offenders are banned: prefixes, ranges, the table's capacity.
    pub bans: crate::firewall::BansConfig,
    /// How much of each call's SIP messages is kept for the console's ladder.
    pub call_messages: crate::events::capture::CaptureConfig,
    /// `[capture]`: copies of every SIP message to a HEPv3 collector (off by default).
    pub capture: crate::hep::HepConfig,
    /// `[acme]`: certificates obtained and renewed by ACME (off unless `domains` is set).
    pub acme: crate::acme::AcmeConfig,
    /// `[smtp]`: the mail server for email codes (none by default).
    pub smtp: crate::mail::SmtpConfig,
    /// `[cluster]`: the Redis shared with the other nodes; absent: this node is alone.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            sip: SipConfig::default(),
            auth: AuthConfig::default(),
            media: MediaConfig::default(),
            dataplane: DataplaneConfig::default(),
            management: ManagementConfig::default(),
            guard: GuardConfig::default(),
            firewall: FirewallConfig::default(),
            retention: RetentionConfig::default(),
            bans: crate::firewall::BansConfig::default(),
            call_messages: crate::events::capture::CaptureConfig::default(),
            capture: crate::hep::HepConfig::default(),
            acme: crate::acme::AcmeConfig::default(),
            smtp: crate::mail::SmtpConfig::default(),
            cluster: None,
        }
    }
}

/// `[sip]`: where SIP is served and the limits on what it accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// UDP sockets to listen on (IPv4 and IPv6 alike); empty: no SIP over UDP (but not both
    /// this and `tcp`).
    pub udp: Vec<SocketAddr>,
    /// TCP sockets to listen on; empty: no SIP over TCP.
    pub tcp: Vec<SocketAddr>,
    /// Addresses to listen on for SIP over TLS (`"ip"` means port 5061); empty (the
    /// default): no SIP over TLS, in or out.
    #[serde(deserialize_with = "tls_listen")]
    pub tls: Vec<SocketAddr>,
    /// PEM certificate chain for SIP over TLS; unset: a self-signed one made in the data
    /// directory (`sip-tls.crt`). Replaced without a restart when the file changes.
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`; the two are set together.
    pub tls_key: Option<PathBuf>,
    /// PEM file of the CA certificates an upstream's TLS certificate must chain to; unset:
    /// Mozilla's public roots (compiled in).
    pub tls_roots: Option<PathBuf>,
    /// PEM file of the CA certificates a caller's TLS client certificate must chain to: when
    /// set, every inbound TLS connection must present one (mutual TLS) unless
    /// `tls_client_required` is false; unset: none asked. Auth rules with a
    /// `tls_client_name` need it.
    pub tls_client_roots: Option<PathBuf>,
    /// With `tls_client_roots`: true (the default), a caller without a client certificate
    /// fails the handshake; false, a certificate is asked for and verified when presented,
    /// and only the auth rules naming a `tls_client_name` refuse calls without one.
    pub tls_client_required: bool,
    /// An accepted TLS connection must finish its handshake within this many seconds, or it
    /// is closed (a connection that never speaks holds a slot for no longer than this).
    pub tls_handshake_secs: u64,
    /// Address put in Via/Record-Route/Contact when the listening one is not reachable by
    /// peers (behind 1:1 NAT, or listening on 0.0.0.0). Applies to listening addresses of
    /// its own family.
    pub advertised_address: Option<IpAddr>,
    /// The same for IPv6 listening addresses (`[::]`), when `advertised_address` is IPv4.
    pub advertised_address_v6: Option<Ipv6Addr>,
    /// Larger messages get a 513 (TCP) or are dropped (UDP). SIP over UDP must fit a
    /// datagram; real INVITEs with SDP are 1–4 KiB.
    pub max_message_bytes: usize,
    /// Peers see only the SBC: Via, Record-Route, Contact and Call-ID of the other leg are
    /// rewritten (what carriers expect from an SBC as opposed to a proxy).
    pub topology_hiding: bool,
    /// An upstream that has not answered an INVITE with any provisional within this many
    /// seconds is given up and the next connection tried (RFC 3261's 32 s is too long for
    /// failover).
    pub failover_secs: u64,
    /// Inbound SIP TCP connections open at once, from everyone; more are refused.
    pub tcp_max_connections: usize,
    /// Inbound SIP TCP connections open at once from one address; more are refused, so one
    /// source cannot take the descriptors every other peer needs.
    pub tcp_max_per_source: usize,
    /// An accepted connection must deliver its first complete message within this many
    /// seconds, or it is closed.
    pub tcp_first_message_secs: u64,
    /// A connection with no complete message either way for this long is closed. Bytes that
    /// do not finish a message (a drip, keep-alive CRLFs) do not count as traffic.
    pub tcp_idle_secs: u64,
    /// File descriptors kept free for media and the management API: an inbound SIP TCP
    /// connection that would use one of the last `fd_reserve` descriptors is refused.
    pub fd_reserve: usize,
    /// What we put in `Server` and `User-Agent`. Generic by default: naming the product and
    /// its version tells a scanner which exploits to try.
    pub agent: String,
}

impl SipConfig {
    /// What Via and Contact name us as on a listening address of `bound`'s family.
    pub fn advertised_for(&self, bound: IpAddr) -> Option<IpAddr> {
        match (bound, self.advertised_address, self.advertised_address_v6) {
            (IpAddr::V6(_), _, Some(v6)) => Some(IpAddr::V6(v6)),
            (_, Some(a), _) if a.is_ipv4() == bound.is_ipv4() => Some(a),
            _ => None,
        }
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            udp: vec![SocketAddr::new(LOCALHOST, 5060)],
            tcp: vec![SocketAddr::new(LOCALHOST, 5060)],
            tls: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_roots: None,
            tls_client_roots: None,
            tls_client_required: true,
            tls_handshake_secs: 10,
            advertised_address: None,
            advertised_address_v6: None,
            max_message_bytes: 16 * 1024,
            topology_hiding: true,
            failover_secs: 5,
            tcp_max_connections: 4096,
            tcp_max_per_source: 64,
            tcp_first_message_secs: 10,
            tcp_idle_secs: 300,
            fd_reserve: 256,
            agent: "SBC".into(),
        }
    }
}

/// Whether this configuration can serve connection `c`: one over TLS needs `[sip] tls` (a
/// TLS address of ours to leave from and to name in Via and Contact). Checked when a
/// connection is saved and at start, so it is refused up front, never skipped at call time.
pub fn check_connection(
    cfg: &Config,
    c: &sipd_core::records::Connection,
) -> Result<(), crate::store::Invalid> {
    if c.transport == sipd_core::records::Transport::Tls && cfg.sip.tls.is_empty() {
        return Err(crate::store::Invalid {
            kind: "connection",
            field: "transport".into(),
            reason: format!(
                "connection {:?} uses transport tls but SIP over TLS is not configured: set [sip] tls in sbc.toml",
                c.name
            ),
        });
    }
    Ok(())
}

/// Whether this configuration can serve auth rule `r`: one naming a `tls_client_name` needs
/// SIP over TLS (`[sip] tls`) and roots to verify client certificates against
/// (`[sip] tls_client_roots`), or no call could ever match it.
pub fn check_rule(
    cfg: &Config,
    r: &sipd_core::records::AuthRule,
) -> Result<(), crate::store::Invalid> {
    let Some(name) = &r.tls_client_name else {
        return Ok(());
    };
    let missing = if cfg.sip.tls.is_empty() {
        "[sip] tls"
    } else if cfg.sip.tls_client_roots.is_none() {
        "[sip] tls_client_roots"
    } else {
        return Ok(());
    };
    Err(crate::store::Invalid {
        kind: "rule",
        field: "tls_client_name".into(),
        reason: format!(
            "rule {:?} asks for a TLS client certificate for {name:?} but {missing} is not set in sbc.toml",
            r.name
        ),
    })
}

/// [`check_connection`] and [`check_rule`] over a set of records: the one check `sipd` runs
/// at start, the API on every save and `sipd import` on its file. The first problem.
pub fn check_records<'a>(
    cfg: &Config,
    connections: &[sipd_core::records::Connection],
    rules: impl IntoIterator<Item = &'a sipd_core::records::AuthRule>,
) -> Result<(), crate::store::Invalid> {
    for c in connections {
        check_connection(cfg, c)?;
    }
    for r in rules {
        check_rule(cfg, r)?;
    }
    Ok(())
}

/// The port of a `[sip] tls` address given without one.
pub const SIP_TLS_PORT: u16 = 5061;

/// `[sip] tls`: `"ip:port"`, `"[v6]:port"` or just the address (port [`SIP_TLS_PORT`]).
fn tls_listen<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    list.iter()
        .map(|a| {
            a.parse::<SocketAddr>()
                .or_else(|_| {
                    a.trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<IpAddr>()
                        .map(|ip| SocketAddr::new(ip, SIP_TLS_PORT))
                })
                .map_err(|_| {
                    serde::de::Error::custom(format!("{a:?} is not an address or address:port"))
                })
        })
        .collect()
}

/// `[auth]`: how SIP requests are challenged and answers checked (see [`Config::digest_policy`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Digest realm. Stored HA1 credentials are bound to it: changing it needs new HA1s.
    pub realm: String,
    /// Challenges offered, in this order on the wire (clients answer the first they support).
    /// MD5 alone by default, as Asterisk and Kamailio do: most user agents (sipp, baresip
    /// and the SIP libraries behind many phones) answer only MD5, and some give up on a 401
    /// whose first challenge they cannot answer. An account can require SHA-256 on its own
    /// (`sip.algorithms`).
    pub algorithms: Vec<Algorithm>,
    /// How long a nonce is accepted after issue, in seconds; an older one is answered `stale=true`.
    pub nonce_lifetime_secs: u64,
    /// Accept RFC 2069-style MD5 answers without qop. They carry no nonce-count, so a captured
    /// request can be replayed until the nonce expires: off unless a carrier's old equipment needs
    /// it.
    pub allow_md5_without_qop: bool,
    /// Nonces whose nonce-count is tracked; when full the oldest are forgotten and answered stale,
    /// never trusted.
    pub max_tracked_nonces: usize,
    /// `[auth.sip_password]`: what a SIP password must meet when an account is provisioned
    /// (before it is hashed), and named templates an account may choose instead
    /// (`[auth.sip_password.templates.NAME]`, `sip.password_template`).
    pub sip_password: SipPasswordPolicies,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            realm: "sbc".into(),
            algorithms: vec![Algorithm::Md5],
            nonce_lifetime_secs: 300,
            allow_md5_without_qop: false,
            max_tracked_nonces: 65_536,
            sip_password: SipPasswordPolicies::default(),
        }
    }
}

/// `[media]`: the relay that carries every call's RTP (XDP legs or userspace sockets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Relay sockets bind here.
    pub address: IpAddr,
    /// Written into SDP `c=` instead of `address` (NAT, or `address` = 0.0.0.0).
    pub advertised_address: Option<IpAddr>,
    /// Written into SDP toward IPv6 peers when `advertised_address` is IPv4: with
    /// `address = "::"` (the relay takes both families) calls are bridged between IPv4 and
    /// IPv6 peers.
    pub advertised_address_v6: Option<Ipv6Addr>,
    /// Inclusive; RTP takes the even port and RTCP the odd one above it (RFC 3550 §11).
    pub port_min: u16,
    /// Inclusive upper end of the relay port range (see `port_min`).
    pub port_max: u16,
    /// No packet in either direction for this long ends the call with BYE both ways.
    pub timeout_secs: u64,
    /// Drop packets from anyone but the learnt peer, and before it is learnt from anyone the
    /// leg may not learn it from (RTP bleed). On by default.
    pub strict_source: bool,
    /// How long after each offer, answer or re-INVITE a relay leg may learn its peer (from
    /// the SDP's address or the side's SIP source only).
    pub learn_window_secs: u64,
    /// Most m= lines (media streams) one SDP may have; more is answered 488 before any relay
    /// port is taken. A call holds at most 4 relay ports per stream.
    pub max_streams: u16,
    /// Remove ICE attributes (`a=candidate`, `a=ice-*`, `a=remote-candidates`,
    /// `a=end-of-candidates`) from relayed SDP: candidates leak the endpoints' addresses and
    /// let them send media around the relay. On by default.
    pub strip_ice: bool,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            address: LOCALHOST,
            advertised_address: None,
            advertised_address_v6: None,
            port_min: 30_000,
            port_max: 39_999,
            timeout_secs: 60,
            strict_source: true,
            learn_window_secs: 30,
            max_streams: relay_user::media::DEFAULT_MAX_STREAMS,
            strip_ice: true,
        }
    }
}

/// `[dataplane] mode`: which data plane carries the firewall, the SIP guard and the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataplaneMode {
    /// XDP where it attaches, else the userspace fallback, said loudly.
    Auto,
    /// XDP (native, else generic) or refuse to start.
    Xdp,
    /// Native (driver) XDP or refuse to start.
    XdpNative,
    /// Generic (skb) XDP or refuse to start.
    XdpSkb,
    /// No XDP at all: sipd's userspace firewall and relay (hosts or tests without XDP).
    Userspace,
}

/// `[dataplane]`: the XDP program and where it attaches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataplaneConfig {
    /// See [`DataplaneMode`]; `auto` by default.
    pub mode: DataplaneMode,
    /// Interfaces to attach XDP to besides those sipd finds itself (every interface carrying a SIP,
    /// media or management address).
    pub interfaces: Vec<String>,
    /// Maps are pinned under `/sys/fs/bpf/<instance>/`, so two appliances can share a host.
    pub instance: String,
    /// Turn on the IP forwarding sysctls the kernel relay path needs (IPv4 on each interface,
    /// IPv6 host-wide). IPv4 on `lo` is turned on regardless; without the rest, media of that
    /// family takes the userspace path, reported at start.
    pub enable_forwarding: bool,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            mode: DataplaneMode::Auto,
            interfaces: vec!["lo".into()],
            instance: "sbc".into(),
            enable_forwarding: false,
        }
    }
}

/// `[management]`: the HTTPS management API and staff authentication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManagementConfig {
    /// Where the HTTPS API listens (and `/metrics`); only `[firewall] management_allow` may
    /// reach it.
    pub listen: SocketAddr,
    /// Both absent: a self-signed certificate is made in the data directory on first start.
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`; the two are set together.
    pub tls_key: Option<PathBuf>,
    /// How long a staff session lasts from login, in seconds (60..=604800).
    pub session_ttl_secs: u64,
    /// A session unused this long ends (an unattended console); 0: only the TTL applies.
    /// Use is recorded at most once a minute, so this is exact to about a minute.
    pub session_idle_secs: u64,
    /// `/metrics` without a bearer token (for a Prometheus on an allowed source).
    pub metrics_public: bool,
    /// Secret mixed into every staff password hash; created (mode 0600) on first start.
    /// Must be outside `data_dir`, so a copy of the data directory is not enough to attack
    /// the hashes. Back it up separately: without it no staff password verifies.
    pub pepper_file: PathBuf,
    /// `[management.argon2]`: Argon2id costs of staff password hashes.
    pub argon2: crate::mgmt::Argon2Costs,
    /// `[management.password]`: what a staff password must meet.
    pub password: crate::mgmt::PasswordPolicy,
    /// `[management.backoff]`: lock-outs after failed logins.
    pub backoff: crate::mgmt::BackoffConfig,
    /// `[management.connections]`: caps and deadlines of the API's connections.
    pub connections: crate::api::ConnLimits,
    /// `[management.email_codes]`: which roles may use emailed one-time codes instead of
    /// TOTP, and their lifetime and limits (mailed through `[smtp]`).
    pub email_codes: crate::mgmt::EmailCodeConfig,
}

impl Default for ManagementConfig {
    fn default() -> Self {
        ManagementConfig {
            listen: SocketAddr::new(LOCALHOST, 8443),
            tls_cert: None,
            tls_key: None,
            session_ttl_secs: 3600,
            session_idle_secs: 900,
            metrics_public: false,
            pepper_file: PathBuf::from("./sipd.pepper"),
            argon2: crate::mgmt::Argon2Costs::default(),
            password: crate::mgmt::PasswordPolicy::default(),
            backoff: crate::mgmt::BackoffConfig::default(),
            connections: crate::api::ConnLimits::default(),
            email_codes: crate::mgmt::EmailCodeConfig::default(),
        }
    }
}

/// Per-source limits the kernel enforces on SIP ports, and the IDS ban policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuardConfig {
    /// SIP packets per second from one source (kernel guard); over it, packets are dropped and the
    /// source reported as flooding.
    pub sip_packets_per_sec: u32,
    /// Packets one source may send at once above the rate (at least the rate).
    pub sip_packet_burst: u32,
    /// INVITEs (new calls) per second from one source.
    pub invites_per_sec: u32,
    /// INVITEs one source may send at once above the rate (at least the rate).
    pub invite_burst: u32,
    /// Calls in progress at once from one source, counted by the SIP guard (at least 1).
    pub max_sessions_per_source: u32,
    /// New TCP connections (SYN) to a SIP port per source, in the kernel. A carrier keeps a
    /// few long-lived connections (RFC 5923), and even a proxy farm reconnecting after a
    /// restart opens tens, so the default is far above that and far below a SYN flood.
    pub tcp_syns_per_sec: u32,
    /// SYNs one source may send at once above the rate (at least the rate).
    pub tcp_syn_burst: u32,
    /// Failed digest attempts from one source within the window that earn a ban.
    pub auth_failures_before_ban: u32,
    /// The window, in seconds, over which `auth_failures_before_ban` are counted.
    pub auth_failure_window_secs: u64,
    /// Kernel flood reports (sampled once a second per source) within the window above that
    /// turn a source's rate-limiting into a ban; 0: rate-limit only.
    pub flood_reports_before_ban: u32,
    /// In-dialog requests (BYE, INFO, re-INVITE, …) and CANCELs from one source, within
    /// `auth_failure_window_secs`, naming a dialog or transaction that does not exist (481)
    /// or is someone else's (403), that earn a ban: a scanner guessing at live calls to end.
    /// Counted apart from failed passwords, and never for carriers an `ip_only` rule names or
    /// for upstreams (their stray BYE after a call we forgot is no probe). 0: such requests
    /// are still refused and counted in the refusal table, never banned for; 1 and 2 are
    /// refused (a peer's stray BYE or two must never ban it).
    pub dialog_probes_before_ban: u32,
    /// First ban; each repeat offence doubles it, up to `ban_max_secs`.
    pub ban_secs: u64,
    /// The longest ban a repeat offender gets, in seconds (at least `ban_secs`).
    pub ban_max_secs: u64,
    /// Sources the IDS tracks at once (failures, floods, past bans); when full, the source
    /// seen longest ago is forgotten (counted in `sipd_ids_sources_evicted_total`).
    pub ids_max_sources: usize,
    /// Rows of the refusal table: refusals before authentication are counted per (source,
    /// reason) there instead of a CDR each; when full, the row seen longest ago gives way.
    pub refusal_rows: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            sip_packets_per_sec: 200,
            sip_packet_burst: 400,
            invites_per_sec: 20,
            invite_burst: 40,
            max_sessions_per_source: 200,
            tcp_syns_per_sec: 50,
            tcp_syn_burst: 100,
            auth_failures_before_ban: 10,
            auth_failure_window_secs: 60,
            flood_reports_before_ban: 10,
            dialog_probes_before_ban: 20,
            ban_secs: 300,
            ban_max_secs: 86_400,
            ids_max_sources: 16_384,
            refusal_rows: 4_096,
        }
    }
}

/// How long CDRs and the audit log are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// CDRs and audit entries older than this many days are purged (hourly, by `sipd run`);
    /// 0 keeps them for ever. `sipd cdrs export` takes them out first.
    pub days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { days: 400 }
    }
}

/// `[firewall]`: the data plane's IP firewall (deny list, per-service allow lists).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FirewallConfig {
    /// Dropped in the kernel before anything else looks at them.
    pub deny: Vec<IpNet>,
    /// Sources allowed to reach the management API. Never empty: "everyone" must be
    /// written out as 0.0.0.0/0 and ::/0.
    pub management_allow: Vec<IpNet>,
    /// Empty: SIP is open to all (accounts' rules still decide who may call).
    pub sip_allow: Vec<IpNet>,
    /// Host services beyond SIP and management: an entry named `ssh` or `sip-tls` sets that
    /// predefined service's ports and allow list (see [`FirewallConfig::host_services`]); any
    /// other name adds one of the operator's (see [`FirewallConfig::custom_services`]).
    pub services: Vec<ServiceConfig>,
}

/// Transport of a host service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A service on this host the kernel firewall guards: `[[firewall.services]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// `ssh` or `sip-tls` to set a predefined service, any other name (`postgres`) for one
    /// of the operator's (SIP and management take their ports from `[sip]`/`[management]`).
    pub name: String,
    /// TCP or UDP.
    pub protocol: ServiceProtocol,
    /// The ports guarded.
    pub ports: Vec<u16>,
    /// Predefined services: empty means open to all until the API adds an entry. An
    /// operator's service is always restricted: only these (and the API's) sources reach it.
    #[serde(default)]
    pub allow: Vec<IpNet>,
}

/// Names `[[firewall.services]]` may configure, with their default port (TCP).
pub const HOST_SERVICES: [(&str, u16); 2] = [("ssh", 22), ("sip-tls", 5061)];

impl FirewallConfig {
    /// The predefined host services (`ssh` 22/tcp, `sip-tls` 5061/tcp, even before sipd
    /// serves TLS) with what `[[firewall.services]]` set for them.
    pub fn host_services(&self) -> Vec<ServiceConfig> {
        HOST_SERVICES
            .iter()
            .map(|(name, port)| {
                self.services
                    .iter()
                    .find(|s| s.name == *name)
                    .cloned()
                    .unwrap_or_else(|| ServiceConfig {
                        name: (*name).into(),
                        protocol: ServiceProtocol::Tcp,
                        ports: vec![*port],
                        allow: Vec::new(),
                    })
            })
            .collect()
    }

    /// The operator's own services (`[[firewall.services]]` entries with other names), in
    /// file order: their data-plane ids follow that order.
    pub fn custom_services(&self) -> impl Iterator<Item = &ServiceConfig> {
        self.services
            .iter()
            .filter(|s| !HOST_SERVICES.iter().any(|(h, _)| *h == s.name))
    }
}

impl Default for FirewallConfig {
    fn default() -> Self {
        FirewallConfig {
            deny: Vec::new(),
            management_allow: vec![
                IpNet::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8).unwrap_or_default(),
                IpNet::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128).unwrap_or_default(),
            ],
            sip_allow: Vec::new(),
            services: Vec::new(),
        }
    }
}

/// One semantic problem; `key` is the dotted path, `at` its place in the file if it was set
/// there (a bad combination of defaults has no place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key (`guard.ban_secs`).
    pub key: String,
    /// Where the key is set in the file; `None` when the problem is a default's.
    pub at: Option<Location>,
    /// What is wrong, and what would be right.
    pub message: String,
}

/// Why the configuration could not be used; `sipd` refuses to start, naming file, line and column.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (it was named, or `sbc.toml` exists but is unreadable).
    #[error("cannot read {path}")]
    Io {
        /// The file named.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, a wrong type, or an unknown key.
    #[error("{}", fmt_parse(path, at, message))]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where TOML's parser stopped, when it says.
        at: Option<Location>,
        /// The parser's message.
        message: String,
    },
    /// Parsed, but settings are out of range or contradict each other.
    #[error("{}", fmt_problems(path, problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found, not only the first.
        problems: Vec<Problem>,
    },
}

fn fmt_parse(path: &Path, at: &Option<Location>, message: &str) -> String {
    match at {
        Some(l) => format!(
            "{}:{}:{}: {}",
            path.display(),
            l.line,
            l.column,
            message.trim_end()
        ),
        None => format!("{}: {}", path.display(), message.trim_end()),
    }
}

fn fmt_problems(path: &Path, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&match p.at {
            Some(l) => format!(
                "{}:{}:{}: {}: {}",
                path.display(),
                l.line,
                l.column,
                p.key,
                p.message
            ),
            None => format!("{}: {} (default): {}", path.display(), p.key, p.message),
        });
    }
    out
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Where the configuration came from, for the start-up banner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Read from this file.
    File(PathBuf),
    /// No file named and no `sbc.toml` in the working directory: every default.
    Defaults,
}

impl Config {
    /// Loads `path`, or `sbc.toml` in the working directory if it exists, or the defaults.
    /// A file that was named explicitly must exist.
    pub fn load(path: Option<&Path>) -> Result<(Config, Origin), ConfigError> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None if Path::new(DEFAULT_FILE).exists() => PathBuf::from(DEFAULT_FILE),
            None => return Ok((Config::default(), Origin::Defaults)),
        };
        let src = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
        let mut cfg = Config::parse(&src, &path)?;
        cfg.resolve_against(path.parent().unwrap_or(Path::new("")));
        Ok((cfg, Origin::File(path)))
    }

    /// A relative `pepper_file` names a file beside the configuration, wherever sipd is
    /// started from: started from another directory it would otherwise find no pepper, make
    /// a new one, and lock every staff user out. `data_dir` keeps its meaning (relative to
    /// the working directory): moving it under an existing deployment would open an empty
    /// store in its place.
    pub fn resolve_against(&mut self, config_dir: &Path) {
        let p = &mut self.management.pepper_file;
        if p.is_relative() {
            *p = config_dir.join(&*p);
        }
        self.smtp.resolve_against(config_dir);
    }

    /// What provisioning needs to take a SIP credential: our realm, the password policies,
    /// and zxcvbn for the strength estimate.
    pub fn sip_secrets(&self) -> SipSecrets<'_> {
        SipSecrets {
            realm: &self.auth.realm,
            policies: &self.auth.sip_password,
            strength: sip_password_strength,
        }
    }

    /// Parses and validates; `path` only labels the errors.
    pub fn parse(src: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(src).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            at: e.span().map(|s| Location::of(src, s.start)),
            message: e.message().to_owned(),
        })?;
        let mut problems = cfg.problems();
        if problems.is_empty() {
            return Ok(cfg);
        }
        for p in &mut problems {
            p.at = locate(src, &p.key);
        }
        Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        })
    }

    /// Checks that serde cannot express: ranges, combinations, things that would lock the
    /// operator out.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |key: &str, message: String| {
            out.push(Problem {
                key: key.into(),
                at: None,
                message,
            })
        };
        if self.data_dir.as_os_str().is_empty() {
            bad("data_dir", "must not be empty".into());
        }
        self.sip_problems(&mut bad);
        self.auth_problems(&mut bad);
        self.media_problems(&mut bad);
        self.dataplane_problems(&mut bad);
        self.management_problems(&mut bad);
        self.guard_problems(&mut bad);
        self.firewall_problems(&mut bad);
        self.bans.problems(&mut bad);
        for p in self.call_messages.problems() {
            bad("call_messages", p);
        }
        for (key, p) in self.capture.problems() {
            bad(key, p);
        }
        for (key, p) in self.acme.problems() {
            bad(key, p);
        }
        for (key, p) in self.cluster.iter().flat_map(|c| c.problems()) {
            bad(key, p);
        }
        out
    }

    fn sip_problems(&self, bad: &mut impl FnMut(&str, String)) {
        let s = &self.sip;
        if s.udp.is_empty() && s.tcp.is_empty() {
            bad(
                "sip.udp",
                "no SIP listening address (sip.udp and sip.tcp are both empty)".into(),
            );
        }
        for (key, addrs) in [
            ("sip.udp", &s.udp),
            ("sip.tcp", &s.tcp),
            ("sip.tls", &s.tls),
        ] {
            let mut seen = BTreeSet::new();
            for a in addrs {
                if a.port() == 0 {
                    bad(key, format!("{a}: port 0 is not a listening port"));
                }
                if !seen.insert(a) {
                    bad(key, format!("{a} is listed twice"));
                }
                if a.ip().is_unspecified() && s.advertised_for(a.ip()).is_none() {
                    bad(
                        if a.is_ipv6() {
                            "sip.advertised_address_v6"
                        } else {
                            "sip.advertised_address"
                        },
                        format!(
                            "required when listening on {a}: peers must be told a reachable address"
                        ),
                    );
                }
            }
        }
        for a in s.tls.iter().filter(|a| s.tcp.contains(a)) {
            bad("sip.tls", format!("{a} is a SIP TCP address too"));
        }
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            bad("sip.tls_cert", "tls_cert and tls_key go together".into());
        }
        if !s.tls_client_required && s.tls_client_roots.is_none() {
            // Without roots no certificate is asked for: "optional" would mean nothing.
            bad(
                "sip.tls_client_required",
                "tls_client_required = false needs tls_client_roots (the CAs client certificates are verified against)".into(),
            );
        }
        if !(1..=60).contains(&s.tls_handshake_secs) {
            bad(
                "sip.tls_handshake_secs",
                format!("{} is outside 1..=60", s.tls_handshake_secs),
            );
        }
        if !(1..=32).contains(&s.failover_secs) {
            bad(
                "sip.failover_secs",
                format!("{} is outside 1..=32", s.failover_secs),
            );
        }
        if !(1..=1_000_000).contains(&s.tcp_max_connections) {
            bad(
                "sip.tcp_max_connections",
                format!("{} is outside 1..=1000000", s.tcp_max_connections),
            );
        }
        if s.tcp_max_per_source == 0 || s.tcp_max_per_source > s.tcp_max_connections {
            bad(
                "sip.tcp_max_per_source",
                format!(
                    "{} must be between 1 and sip.tcp_max_connections ({})",
                    s.tcp_max_per_source, s.tcp_max_connections
                ),
            );
        }
        if !(1..=300).contains(&s.tcp_first_message_secs) {
            bad(
                "sip.tcp_first_message_secs",
                format!("{} is outside 1..=300", s.tcp_first_message_secs),
            );
        }
        if !(1..=86_400).contains(&s.tcp_idle_secs) {
            bad(
                "sip.tcp_idle_secs",
                format!("{} is outside 1..=86400", s.tcp_idle_secs),
            );
        }
        if !(16..=1_000_000).contains(&s.fd_reserve) {
            bad(
                "sip.fd_reserve",
                format!("{} is outside 16..=1000000", s.fd_reserve),
            );
        }
        if !(1024..=65_535).contains(&s.max_message_bytes) {
            bad(
                "sip.max_message_bytes",
                format!("{} is outside 1024..=65535", s.max_message_bytes),
            );
        }
        if let Some(a) = s
            .advertised_address
            .filter(|a| a.is_unspecified() || a.is_multicast())
        {
            bad(
                "sip.advertised_address",
                format!("{a} cannot be advertised"),
            );
        }
        if let Some(a) = s
            .advertised_address_v6
            .filter(|a| a.is_unspecified() || a.is_multicast() || a.to_ipv4_mapped().is_some())
        {
            bad(
                "sip.advertised_address_v6",
                format!("{a} cannot be advertised"),
            );
        }
    }

    fn auth_problems(&self, bad: &mut impl FnMut(&str, String)) {
        let a = &self.auth;
        if a.realm.is_empty()
            || a.realm
                .chars()
                .any(|c| c.is_control() || c == '"' || c == '\\')
        {
            bad(
                "auth.realm",
                "must be non-empty, without quotes, backslashes or control characters".into(),
            );
        }
        if a.algorithms.is_empty() {
            bad("auth.algorithms", "at least one algorithm is needed".into());
        }
        for (i, alg) in a.algorithms.iter().enumerate() {
            if a.algorithms[..i].contains(alg) {
                bad("auth.algorithms", format!("{alg} is listed twice"));
            }
        }
        if !(10..=3600).contains(&a.nonce_lifetime_secs) {
            bad(
                "auth.nonce_lifetime_secs",
                format!("{} is outside 10..=3600 seconds", a.nonce_lifetime_secs),
            );
        }
        if a.allow_md5_without_qop && !a.algorithms.contains(&Algorithm::Md5) {
            bad(
                "auth.allow_md5_without_qop",
                "needs MD5 in auth.algorithms".into(),
            );
        }
        if !(1024..=10_000_000).contains(&a.max_tracked_nonces) {
            bad(
                "auth.max_tracked_nonces",
                format!("{} is outside 1024..=10000000", a.max_tracked_nonces),
            );
        }
        for (key, problem) in a.sip_password.problems() {
            bad(&key, problem);
        }
    }

    fn media_problems(&self, bad: &mut impl FnMut(&str, String)) {
        let s = &self.sip;
        let m = &self.media;
        if m.port_min > m.port_max {
            bad(
                "media.port_min",
                format!("{} is above media.port_max {}", m.port_min, m.port_max),
            );
        } else {
            if m.port_min < 1024 {
                bad(
                    "media.port_min",
                    format!("{} is a privileged port; use 1024 or above", m.port_min),
                );
            }
            if !m.port_min.is_multiple_of(2) {
                bad(
                    "media.port_min",
                    format!(
                        "{} is odd; RTP uses even ports and RTCP the next",
                        m.port_min
                    ),
                );
            }
            if m.port_max - m.port_min < 1 {
                bad(
                    "media.port_max",
                    "the range must hold at least one RTP/RTCP pair".into(),
                );
            }
            let relay = m.port_min..=m.port_max;
            let sip_ports = s.udp.iter().chain(&s.tcp).map(|a| ("SIP", a.port()));
            let mgmt = std::iter::once(("management", self.management.listen.port()));
            for (what, port) in sip_ports.chain(mgmt) {
                if relay.contains(&port) {
                    bad(
                        "media.port_min",
                        format!(
                            "relay range {}-{} contains the {what} port {port}",
                            m.port_min, m.port_max
                        ),
                    );
                    break;
                }
            }
        }
        if m.address.is_multicast() {
            bad("media.address", format!("{} is multicast", m.address));
        }
        if m.address.is_unspecified() && m.advertised_address.is_none() {
            bad(
                "media.advertised_address",
                format!(
                    "required when media.address is {}: SDP needs a reachable address",
                    m.address
                ),
            );
        }
        if let Some(a) = m
            .advertised_address
            .filter(|a| a.is_unspecified() || a.is_multicast())
        {
            bad(
                "media.advertised_address",
                format!("{a} cannot be put in SDP"),
            );
        }
        if let Some(a) = m
            .advertised_address_v6
            .filter(|a| a.is_unspecified() || a.is_multicast() || a.to_ipv4_mapped().is_some())
        {
            bad(
                "media.advertised_address_v6",
                format!("{a} cannot be put in SDP"),
            );
        }
        if !(1..=1024).contains(&m.max_streams) {
            bad(
                "media.max_streams",
                format!("{} is outside 1..=1024", m.max_streams),
            );
        }
        if !(1..=3600).contains(&m.learn_window_secs) {
            bad(
                "media.learn_window_secs",
                format!("{} is outside 1..=3600", m.learn_window_secs),
            );
        }
        if !(1..=86_400).contains(&m.timeout_secs) {
            bad(
                "media.timeout_secs",
                format!("{} is outside 1..=86400", m.timeout_secs),
            );
        }
    }

    fn dataplane_problems(&self, bad: &mut impl FnMut(&str, String)) {
        let d = &self.dataplane;
        if d.mode != DataplaneMode::Userspace && d.interfaces.is_empty() {
            bad(
                "dataplane.interfaces",
                "XDP needs at least one interface (or set mode = \"userspace\")".into(),
            );
        }
        for i in &d.interfaces {
            if i.is_empty()
                || i.len() > 15
                || i.contains(['/', ' ', '\t', '\n'])
                || i == "."
                || i == ".."
            {
                bad(
                    "dataplane.interfaces",
                    format!("{i:?} is not a valid interface name"),
                );
            }
        }
        if d.instance.is_empty()
            || !d
                .instance
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bad(
                "dataplane.instance",
                format!(
                    "{:?}: use letters, digits, '-' and '_' (it names a bpffs directory)",
                    d.instance
                ),
            );
        }
    }

    fn management_problems(&self, bad: &mut impl FnMut(&str, String)) {
        let s = &self.sip;
        let mg = &self.management;
        if mg.listen.port() == 0 {
            bad("management.listen", "port 0 is not a listening port".into());
        }
        if mg.tls_cert.is_some() != mg.tls_key.is_some() {
            bad(
                "management.tls_cert",
                "tls_cert and tls_key go together".into(),
            );
        }
        if mg.session_idle_secs != 0 && !(120..=86_400).contains(&mg.session_idle_secs) {
            bad(
                "management.session_idle_secs",
                format!(
                    "{} is outside 120..=86400 (0 turns the idle timeout off)",
                    mg.session_idle_secs
                ),
            );
        }
        if !(60..=7 * 86_400).contains(&mg.session_ttl_secs) {
            bad(
                "management.session_ttl_secs",
                format!("{} is outside 60..=604800", mg.session_ttl_secs),
            );
        }
        for (key, problems) in [
            ("management.argon2", mg.argon2.problems()),
            ("management.password", mg.password.problems()),
            ("management.backoff", mg.backoff.problems()),
            ("management.connections", mg.connections.problems()),
            ("management.email_codes", mg.email_codes.problems()),
        ] {
            for p in problems {
                bad(key, p);
            }
        }
        for (key, p) in self.smtp.problems() {
            bad(key, p);
        }
        if s.tcp.iter().any(|a| {
            a.port() == mg.listen.port()
                && (a.ip() == mg.listen.ip()
                    || a.ip().is_unspecified()
                    || mg.listen.ip().is_unspecified())
        }) {
            bad(
                "management.listen",
                format!("{} collides with a SIP TCP address", mg.listen),
            );
        }
    }

    fn guard_problems(&self, bad: &mut impl FnMut(&str, String)) {
        let g = &self.guard;
        for (key, rate, burst) in [
            (
                "guard.sip_packet_burst",
                g.sip_packets_per_sec,
                g.sip_packet_burst,
            ),
            ("guard.invite_burst", g.invites_per_sec, g.invite_burst),
            ("guard.tcp_syn_burst", g.tcp_syns_per_sec, g.tcp_syn_burst),
        ] {
            if rate == 0 {
                bad(
                    key,
                    "the matching rate is 0, which would drop all SIP".into(),
                );
            } else if burst < rate {
                bad(
                    key,
                    format!(
                        "{burst} is below the rate {rate}; a bucket must hold at least one second"
                    ),
                );
            }
        }
        if g.max_sessions_per_source == 0 {
            bad(
                "guard.max_sessions_per_source",
                "0 would refuse every call".into(),
            );
        }
        if g.auth_failures_before_ban == 0 {
            bad(
                "guard.auth_failures_before_ban",
                "0 would ban on the first challenge".into(),
            );
        }
        if (1..3).contains(&g.dialog_probes_before_ban) {
            bad(
                "guard.dialog_probes_before_ban",
                format!(
                    "{} would ban a peer for its stray BYE or two (a call we already ended); \
                     at least 3, or 0 never to ban for it",
                    g.dialog_probes_before_ban
                ),
            );
        }
        if g.auth_failure_window_secs == 0 {
            bad(
                "guard.auth_failure_window_secs",
                "must be at least 1".into(),
            );
        }
        for (key, v) in [
            ("guard.ids_max_sources", g.ids_max_sources),
            ("guard.refusal_rows", g.refusal_rows),
        ] {
            if !(16..=1_048_576).contains(&v) {
                bad(key, format!("{v} is outside 16..=1048576"));
            }
        }
        if self.retention.days > 36_500 {
            bad(
                "retention.days",
                format!(
                    "{} is over 100 years; 0 keeps records for ever",
                    self.retention.days
                ),
            );
        }
        let a = &self.sip.agent;
        if a.is_empty() || a.len() > 64 || !a.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            bad(
                "sip.agent",
                format!(
                    "{a:?}: 1 to 64 printable ASCII characters (it goes into Server and User-Agent)"
                ),
            );
        }
        if g.ban_secs == 0 {
            bad("guard.ban_secs", "must be at least 1".into());
        } else if g.ban_max_secs < g.ban_secs {
            bad(
                "guard.ban_max_secs",
                format!("{} is below guard.ban_secs {}", g.ban_max_secs, g.ban_secs),
            );
        }
    }

    fn firewall_problems(&self, bad: &mut impl FnMut(&str, String)) {
        let f = &self.firewall;
        if f.management_allow.is_empty() {
            bad(
                "firewall.management_allow",
                "empty would lock every operator out; write 0.0.0.0/0 and ::/0 to allow all".into(),
            );
        }
        self.service_problems(bad);
        let service_allows = f
            .services
            .iter()
            .map(|s| ("firewall.services.allow", &s.allow));
        for (key, nets) in [
            ("firewall.deny", &f.deny),
            ("firewall.management_allow", &f.management_allow),
            ("firewall.sip_allow", &f.sip_allow),
        ]
        .into_iter()
        .chain(service_allows)
        {
            for n in nets {
                if n.trunc() != *n {
                    bad(
                        key,
                        format!("{n} has host bits set; did you mean {}?", n.trunc()),
                    );
                }
            }
        }
    }

    fn service_problems(&self, bad: &mut impl FnMut(&str, String)) {
        let f = &self.firewall;
        let mut seen: Vec<&str> = Vec::new();
        for s in &f.services {
            let n = s.name.as_str();
            if n == "sip" || n == "management" {
                bad(
                    "firewall.services.name",
                    format!(
                        "{n:?} takes its ports from [{n}] and its allow list from firewall.{n}_allow"
                    ),
                );
            } else if n == "rtp" || n == "other" {
                bad(
                    "firewall.services.name",
                    format!("{n:?} is reserved (the data plane's own service ids)"),
                );
            } else if n.is_empty()
                || n.len() > 32
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                bad(
                    "firewall.services.name",
                    format!("{n:?}: 1 to 32 of a-z, 0-9 and -"),
                );
            }
            if seen.contains(&n) {
                bad("firewall.services.name", format!("{n:?} is listed twice"));
            }
            seen.push(n);
            if s.ports.is_empty() || s.ports.contains(&0) {
                bad(
                    "firewall.services.ports",
                    format!("{n}: needs at least one port, none of them 0"),
                );
            }
            let sip = self
                .sip
                .udp
                .iter()
                .map(|a| (a.port(), ServiceProtocol::Udp));
            let sip = sip.chain(
                self.sip
                    .tcp
                    .iter()
                    .map(|a| (a.port(), ServiceProtocol::Tcp)),
            );
            let mgmt = (self.management.listen.port(), ServiceProtocol::Tcp);
            for (port, proto) in sip.chain(std::iter::once(mgmt)) {
                if proto == s.protocol && s.ports.contains(&port) {
                    bad(
                        "firewall.services.ports",
                        format!("{n}: port {port} is sipd's own SIP or management port"),
                    );
                }
            }
        }
    }

    /// What the configured digest algorithms mean for the user agents that can call in,
    /// one line each, for `sipd check-config`.
    pub fn digest_interop(&self) -> Vec<String> {
        let algs = &self.auth.algorithms;
        let list = algs
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut out = vec![format!(
            "auth.algorithms = [{list}]: the 401 offers these challenges in this order; \
             user agents answer the first they support"
        )];
        let md5 = algs.iter().any(|a| a.hash() == HashFn::Md5);
        let sha = algs.iter().any(|a| a.hash() == HashFn::Sha256);
        match algs.first() {
            Some(a) if a.hash() == HashFn::Md5 && !sha => out.push(
                "MD5 only: every common user agent can answer (sipp, baresip, Asterisk, \
                 Kamailio, most phones); MD5 is weak against an eavesdropper who captures an \
                 exchange and guesses the password offline, so use long random passwords, \
                 and give accounts that can do better sip.algorithms = [\"SHA-256\"]"
                    .into(),
            ),
            Some(a) if a.hash() == HashFn::Md5 => out.push(
                "MD5 first: user agents that read only the first challenge answer MD5; \
                 those that choose read on and may answer SHA-256"
                    .into(),
            ),
            Some(_) if md5 => out.push(
                "SHA-256 first (RFC 8760): user agents with SHA-256 answer it; some MD5-only \
                 ones (sipp, and baresip 1.0 through its SIP library) read only the first \
                 challenge and give up, so their calls fail: put MD5 first or alone for them"
                    .into(),
            ),
            Some(_) => out.push(
                "SHA-256 only: MD5-only user agents (sipp, baresip 1.0, many phones) cannot \
                 authenticate at all; only equipment with RFC 8760 support can call in by \
                 digest"
                    .into(),
            ),
            None => {}
        }
        if algs.iter().any(|a| a.is_sess()) {
            out.push(
                "-sess variants are rarely implemented by user agents; offer them after a \
                 plain algorithm"
                    .into(),
            );
        }
        out.push(
            "per account, sip.algorithms replaces this list once the caller has named the \
             user: [\"SHA-256\"] requires SHA-256 (an MD5 answer is challenged again with \
             SHA-256 only), [\"MD5\"] allows MD5 where the list here does not"
                .into(),
        );
        out
    }

    /// The digest settings the call core authenticates SIP requests with.
    pub fn digest_policy(&self) -> DigestPolicy {
        DigestPolicy {
            realm: self.auth.realm.clone(),
            algorithms: self.auth.algorithms.clone(),
            nonce_lifetime: Duration::from_secs(self.auth.nonce_lifetime_secs),
            allow_md5_without_qop: self.auth.allow_md5_without_qop,
            max_tracked_nonces: self.auth.max_tracked_nonces,
        }
    }

    /// Where the sled store lives: `store` under `data_dir`.
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }
}

/// zxcvbn's score (0-4) of a SIP password, the same estimate staff passwords get.
fn sip_password_strength(password: &str, known: &[&str]) -> u8 {
    crate::mgmt::password::strength(password, known).score
}

// Staff authentication is built from its configuration here, so the management library never
// reads `Config` (configuration depends on the library, not the other way round).
impl crate::mgmt::StaffAuth {
    /// From `sbc.toml`: loads (or creates) the pepper file named by
    /// `[management] pepper_file`, which must be outside `data_dir`. `staff_exist`: staff
    /// records are stored, so a missing pepper is lost, not new (refused: a new one would
    /// lock every one of them out).
    pub fn from_config(cfg: &Config, staff_exist: bool) -> anyhow::Result<crate::mgmt::StaffAuth> {
        let m = &cfg.management;
        let pepper =
            crate::mgmt::load_or_create_pepper(&m.pepper_file, &cfg.data_dir, staff_exist)?;
        let hasher = crate::mgmt::PasswordHasher::new(pepper, m.argon2)?;
        let mailer: std::sync::Arc<dyn crate::mgmt::Mailer> =
            match crate::mail::SmtpMailer::from_config(&cfg.smtp)? {
                Some(m) => std::sync::Arc::new(m),
                None => std::sync::Arc::new(crate::mgmt::email_code::NoMailer),
            };
        let codes = crate::mgmt::EmailCodes::new(m.email_codes.clone(), mailer);
        Ok(crate::mgmt::StaffAuth::new(
            hasher,
            m.password,
            m.backoff,
            Duration::from_secs(m.session_ttl_secs),
        )
        .with_idle_timeout(
            (m.session_idle_secs > 0).then(|| Duration::from_secs(m.session_idle_secs)),
        )
        .with_email_codes(codes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Config, ConfigError> {
        Config::parse(src, Path::new("sbc.toml"))
    }

    #[test]
    fn empty_file_is_the_design_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.sip.udp, ["127.0.0.1:5060".parse::<SocketAddr>().unwrap()]);
        assert_eq!(c.sip.tcp, c.sip.udp);
        assert_eq!((c.media.port_min, c.media.port_max), (30_000, 39_999));
        assert_eq!(c.media.address, LOCALHOST);
        assert_eq!(c.management.listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(c.dataplane.interfaces, ["lo"]);
        assert_eq!(c.dataplane.mode, DataplaneMode::Auto);
        assert!(Config::default().problems().is_empty());
    }

    #[test]
    fn dual_stack_listening_advertises_one_address_per_family() {
        let src = "[sip]\nudp = [\"0.0.0.0:5060\", \"[::]:5060\"]\ntcp = []\n\
                   advertised_address = \"192.0.2.1\"\n";
        let err = parse(src).unwrap_err().to_string();
        assert!(
            err.contains("sip.advertised_address_v6") && err.contains("[::]:5060"),
            "[::] has no IPv6 address to advertise: {err}"
        );
        let c = parse(&format!("{src}advertised_address_v6 = \"2001:db8::1\"\n")).unwrap();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(
            c.sip.advertised_for("::".parse().unwrap()),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            c.sip.advertised_for("0.0.0.0".parse().unwrap()),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            c.sip.advertised_for("2001:db8::5".parse().unwrap()),
            Some("2001:db8::1".parse().unwrap())
        );
    }

    #[test]
    fn digest_defaults_to_md5_and_explains_each_choice() {
        let c = Config::default();
        assert_eq!(
            c.auth.algorithms,
            [Algorithm::Md5],
            "as Asterisk and Kamailio"
        );
        let notes = c.digest_interop().join("\n");
        assert!(
            notes.contains("MD5 only: every common user agent"),
            "{notes}"
        );
        let sha_first = parse("[auth]\nalgorithms = [\"SHA-256\", \"MD5\"]\n").unwrap();
        let notes = sha_first.digest_interop().join("\n");
        assert!(notes.contains("give up"), "{notes}");
        let sha_only = parse("[auth]\nalgorithms = [\"SHA-256\"]\n").unwrap();
        let notes = sha_only.digest_interop().join("\n");
        assert!(notes.contains("cannot authenticate at all"), "{notes}");
        let e = parse("[auth]\nalgorithms = [\"MD5\", \"MD5\"]\n").unwrap_err();
        assert!(e.to_string().contains("listed twice"), "{e}");
    }

    #[test]
    fn partial_sections_keep_other_defaults() {
        let c = parse("[media]\nport_min = 40000\nport_max = 40999\n[auth]\nalgorithms = [\"MD5\", \"SHA-256-sess\"]\n").unwrap();
        assert_eq!(c.media.port_min, 40_000);
        assert_eq!(c.media.timeout_secs, 60);
        assert_eq!(c.auth.algorithms, [Algorithm::Md5, Algorithm::Sha256Sess]);
        assert_eq!(c.sip, SipConfig::default());
    }

    #[test]
    fn media_max_streams_defaults_to_8_and_is_bounded() {
        assert_eq!(MediaConfig::default().max_streams, 8);
        assert_eq!(
            parse("[media]\nmax_streams = 2\n")
                .unwrap()
                .media
                .max_streams,
            2
        );
        for bad in [0, 1025] {
            let e = parse(&format!("[media]\nmax_streams = {bad}\n")).unwrap_err();
            assert!(
                e.to_string().contains("media.max_streams") && e.to_string().contains("1..=1024"),
                "{e}"
            );
        }
    }

    #[test]
    fn tcp_syn_rate_defaults_and_is_validated_like_the_other_buckets() {
        let g = GuardConfig::default();
        assert_eq!((g.tcp_syns_per_sec, g.tcp_syn_burst), (50, 100));
        let c = parse("[guard]\ntcp_syns_per_sec = 5\ntcp_syn_burst = 10\n").unwrap();
        assert_eq!((c.guard.tcp_syns_per_sec, c.guard.tcp_syn_burst), (5, 10));
        for src in [
            "[guard]\ntcp_syns_per_sec = 0\n",
            "[guard]\ntcp_syns_per_sec = 20\ntcp_syn_burst = 10\n",
        ] {
            let e = parse(src).unwrap_err();
            assert!(e.to_string().contains("guard.tcp_syn_burst"), "{src}: {e}");
        }
    }

    #[test]
    fn dialog_probe_ban_defaults_to_20_and_never_bans_a_stray_or_two() {
        assert_eq!(GuardConfig::default().dialog_probes_before_ban, 20);
        for ok in [0, 3, 1000] {
            let c = parse(&format!("[guard]\ndialog_probes_before_ban = {ok}\n")).unwrap();
            assert_eq!(c.guard.dialog_probes_before_ban, ok);
        }
        for bad in [1, 2] {
            let e = parse(&format!("[guard]\ndialog_probes_before_ban = {bad}\n")).unwrap_err();
            assert!(
                e.to_string().contains("guard.dialog_probes_before_ban")
                    && e.to_string().contains("at least 3"),
                "{e}"
            );
        }
    }

    #[test]
    fn host_services_are_predefined_and_operator_services_are_validated() {
        let c = parse("").unwrap();
        let hs = c.firewall.host_services();
        let ports: Vec<(&str, Vec<u16>)> = hs
            .iter()
            .map(|s| (s.name.as_str(), s.ports.clone()))
            .collect();
        assert_eq!(ports, [("ssh", vec![22]), ("sip-tls", vec![5061])]);
        assert_eq!(c.firewall.custom_services().count(), 0);
        let c = parse(
            "[[firewall.services]]
name = \"ssh\"
protocol = \"tcp\"
ports = [2222]
             allow = [\"10.0.0.0/8\"]

[[firewall.services]]
name = \"postgres\"
             protocol = \"tcp\"
ports = [5432]
allow = [\"192.0.2.7/32\"]
",
        )
        .unwrap();
        let ssh = &c.firewall.host_services()[0];
        assert_eq!((ssh.ports.as_slice(), ssh.allow.len()), (&[2222u16][..], 1));
        let custom: Vec<&str> = c
            .firewall
            .custom_services()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(custom, ["postgres"]);
        for (src, needle) in [
            (
                "name = \"sip\"\nprotocol = \"udp\"\nports = [5070]\n",
                "[sip]",
            ),
            (
                "name = \"rtp\"\nprotocol = \"udp\"\nports = [5070]\n",
                "reserved",
            ),
            ("name = \"My DB\"\nprotocol = \"tcp\"\nports = [1]\n", "a-z"),
            (
                "name = \"db\"\nprotocol = \"tcp\"\nports = []\n",
                "at least one port",
            ),
            (
                "name = \"db\"\nprotocol = \"tcp\"\nports = [8443]\n",
                "management port",
            ),
            ("name = \"db\"\nprotocol = \"udp\"\nports = [5060]\n", "SIP"),
            (
                "name = \"db\"\nprotocol = \"tcp\"\nports = [1]\nallow = [\"10.0.0.1/8\"]\n",
                "host bits",
            ),
        ] {
            let e = parse(&format!("[[firewall.services]]\n{src}")).unwrap_err();
            assert!(e.to_string().contains(needle), "{src}: {e}");
        }
        let twice = "[[firewall.services]]\nname = \"db\"\nprotocol = \"tcp\"\nports = [1]\n";
        let e = parse(&format!("{twice}{twice}")).unwrap_err();
        assert!(e.to_string().contains("listed twice"), "{e}");
        let e = parse("[[firewall.services]]\nname = \"db\"\nprotocol = \"sctp\"\nports = [1]\n")
            .unwrap_err();
        assert!(e.to_string().contains("sctp"), "{e}");
    }

    #[test]
    fn unknown_key_reports_line_and_column() {
        let e = parse("data_dir = \"/var/lib/sbc\"\n[media]\n  port_mn = 4\n").unwrap_err();
        let ConfigError::Parse { at, message, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(*at, Some(Location { line: 3, column: 3 }));
        assert!(message.contains("port_mn"), "{message}");
        assert!(e.to_string().starts_with("sbc.toml:3:3: "), "{e}");
    }

    #[test]
    fn bad_values_report_their_place() {
        for (src, line, needle) in [
            ("[firewall]\ndeny = [\"10.0.0.0/33\"]\n", 2, "invalid"),
            ("[sip]\nudp = [\"127.0.0.1\"]\n", 2, "socket address"),
            ("[media]\nport_min = 70000\n", 2, "70000"),
            ("[dataplane]\nmode = \"kernel\"\n", 2, "kernel"),
            ("[auth]\nalgorithms = [\"SHA-1\"]\n", 2, "SHA-1"),
            ("[sip\n", 1, ""),
        ] {
            let e = parse(src).unwrap_err();
            let ConfigError::Parse { at, message, .. } = &e else {
                panic!("{src}: {e}")
            };
            assert_eq!(at.map(|l| l.line), Some(line), "{src}: {e}");
            assert!(message.contains(needle), "{src}: {message}");
        }
    }

    #[test]
    fn ban_settings_are_checked_where_they_are_written() {
        let e = parse("[bans]\nv4_prefix = 24\npromote_v4_prefix = 24\ncapacity = 70000\n")
            .unwrap_err();
        let ConfigError::Invalid { problems, .. } = &e else {
            panic!("{e}")
        };
        let at = |k: &str| problems.iter().find(|p| p.key == k).and_then(|p| p.at);
        assert_eq!(at("bans.promote_v4_prefix").map(|l| l.line), Some(3), "{e}");
        assert_eq!(at("bans.capacity").map(|l| l.line), Some(4), "{e}");
        assert!(e.to_string().contains("65536"), "{e}");
        assert!(parse("[bans]\nv6_prefix = 56\npromote_after = 0\n").is_ok());
    }

    #[test]
    fn sip_tls_is_off_by_default_and_its_port_defaults_to_5061() {
        assert!(parse("").unwrap().sip.tls.is_empty());
        let c = parse("[sip]\ntls = [\"127.0.0.1\", \"[::1]\", \"127.0.0.1:5062\"]\n").unwrap();
        let want: Vec<SocketAddr> = ["127.0.0.1:5061", "[::1]:5061", "127.0.0.1:5062"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(c.sip.tls, want);
        assert!(parse("[sip]\ntls = [\"nowhere\"]\n").is_err());
        for (src, key) in [
            ("[sip]\ntls = [\"127.0.0.1:5060\"]\n", "sip.tls"),
            (
                "[sip]\ntls = [\"127.0.0.1\"]\ntls_cert = \"/x.crt\"\n",
                "sip.tls_cert",
            ),
            (
                "[sip]\ntls = [\"127.0.0.1\"]\ntls_handshake_secs = 0\n",
                "sip.tls_handshake_secs",
            ),
            (
                "[sip]\ntls = [\"127.0.0.1\"]\ntls_client_required = false\n",
                "sip.tls_client_required",
            ),
        ] {
            let e = parse(src).unwrap_err();
            let ConfigError::Invalid { problems, .. } = &e else {
                panic!("{e}")
            };
            assert_eq!(problems[0].key, key, "{src}");
        }
    }

    #[test]
    fn semantic_problems_point_at_the_key() {
        let e = parse("[media]\nport_min = 30001\nport_max = 30000\n").unwrap_err();
        let ConfigError::Invalid { problems, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "media.port_min");
        assert_eq!(
            problems[0].at,
            Some(Location {
                line: 2,
                column: 12
            })
        );
        assert!(
            e.to_string()
                .contains("sbc.toml:2:12: media.port_min: 30001 is above"),
            "{e}"
        );

        let e =
            parse("[media]\nport_min = 5000\nport_max = 6000\n[sip]\nudp = [\"127.0.0.1:5060\"]\n")
                .unwrap_err();
        assert!(e.to_string().contains("contains the SIP port 5060"), "{e}");
        let e = parse("[firewall]\nmanagement_allow = []\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("sbc.toml:2:20: firewall.management_allow"),
            "{e}"
        );
        let e = parse("[media]\naddress = \"0.0.0.0\"\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("media.advertised_address (default): required"),
            "{e}"
        );
        let e = parse("[firewall]\ndeny = [\"10.0.0.1/8\"]\n").unwrap_err();
        assert!(e.to_string().contains("did you mean 10.0.0.0/8"), "{e}");
    }

    /// ICE is stripped unless turned off; SIP password policies (default and templates)
    /// parse and are checked; a relative pepper path is beside the configuration file.
    #[test]
    fn credit_and_secrets_settings() {
        let c = parse("").unwrap();
        assert!(c.media.strip_ice);
        assert!(
            !parse("[media]\nstrip_ice = false\n")
                .unwrap()
                .media
                .strip_ice
        );
        let c = parse(
            "[auth.sip_password]\nmin_length = 16\n[auth.sip_password.templates.pbx]\nmin_length = 8\nmin_classes = 1\nmin_strength = 1\n",
        )
        .unwrap();
        assert_eq!(c.auth.sip_password.min_length, 16);
        assert_eq!(c.auth.sip_password.templates["pbx"].min_length, 8);
        assert_eq!(c.sip_secrets().realm, "sbc");
        let e = parse("[auth.sip_password.templates.weak]\nmin_length = 4\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("auth.sip_password.templates.weak: min_length 4 is outside 8..=128"),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("etc/sbc.toml");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "data_dir = \"d\"\n").unwrap();
        let (c, _) = Config::load(Some(&file)).unwrap();
        assert_eq!(
            c.management.pepper_file,
            dir.path().join("etc/./sipd.pepper")
        );
        assert_eq!(c.data_dir, PathBuf::from("d"), "data_dir keeps its meaning");
        std::fs::write(&file, "[management]\npepper_file = \"/abs/pepper\"\n").unwrap();
        let (c, _) = Config::load(Some(&file)).unwrap();
        assert_eq!(c.management.pepper_file, PathBuf::from("/abs/pepper"));
    }

    #[test]
    fn defaults_serialize_and_reparse() {
        let text = toml::to_string(&Config::default()).unwrap();
        assert_eq!(parse(&text).unwrap(), Config::default());
    }

    #[test]
    fn config_defaults_and_problems() {
        let cfg = Config::default();
        assert!(cfg.problems().is_empty());
        let m = &cfg.management;
        assert_eq!(m.password, crate::mgmt::PasswordPolicy::default());
        assert_eq!(m.argon2, crate::mgmt::Argon2Costs::default());
        let src = "[management.password]\nmin_length = 4\n[management.argon2]\nmemory_kib = 64\n";
        let e = Config::parse(src, std::path::Path::new("t.toml")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("management.password") && text.contains("min_length"),
            "{text}"
        );
        assert!(text.contains("management.argon2"), "{text}");
        let ok = "[management]\npepper_file = \"/etc/sipd/pepper\"\n[management.password]\nmax_age_days = 90\n";
        let c = Config::parse(ok, std::path::Path::new("t.toml")).unwrap();
        assert_eq!(c.management.password.max_age_days, 90);
    }

    #[test]
    fn the_learning_window_is_bounded() {
        assert_eq!(parse("").unwrap().media.learn_window_secs, 30);
        let e = parse("[media]\nlearn_window_secs = 0\n").unwrap_err();
        assert!(e.to_string().contains("media.learn_window_secs"), "{e}");
        assert_eq!(
            parse("[media]\nlearn_window_secs = 5\n")
                .unwrap()
                .media
                .learn_window_secs,
            5
        );
    }
}
