//! What the console reads from the API, typed leniently: every field the console does not
//! strictly need has a default, so a daemon one version apart still shows what it can.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `GET /api/status`, the parts the console shows.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Status {
    /// Unix ms the daemon started.
    pub started_ms: u64,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Live calls.
    pub active_calls: u64,
    /// `xdp-native`, `xdp-skb` or `userspace`.
    pub dataplane: String,
    /// Why that data plane.
    pub dataplane_reason: String,
    /// Bans in the table.
    pub bans: u64,
    /// The CDR writer's queue.
    pub cdr_queue: WriterStats,
    /// Which plane firewalls each address.
    pub coverage: Vec<Covered>,
}

/// The CDR writer's queue (`status.cdr_queue`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct WriterStats {
    /// Records waiting.
    pub depth: u64,
    /// Queue capacity.
    pub capacity: u64,
    /// Records written to the store.
    pub written: u64,
    /// Times the event loop waited for room.
    pub blocked: u64,
    /// Unanswered attempts' records dropped on a full queue.
    pub dropped: u64,
}

/// One listening address and the plane that firewalls it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Covered {
    /// `sip`, `media`, `management` or a host service.
    pub service: String,
    /// The address.
    pub address: String,
    /// `xdp`, `userspace` or `none`.
    pub plane: String,
    /// Interfaces without the XDP program.
    pub uncovered: Vec<String>,
}

/// The `counters` event, once a second.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// When, Unix ms.
    pub at_ms: u64,
    /// Live calls.
    pub calls_active: u64,
    /// Call capacity.
    pub calls_capacity: u64,
    /// New INVITEs per second.
    pub invites_per_sec: f64,
    /// SIP packets per second.
    pub sip_packets_per_sec: f64,
    /// Media packets per second relayed by XDP.
    pub relayed_kernel_pps: f64,
    /// Media packets per second relayed in userspace.
    pub relayed_user_pps: f64,
    /// Drops per second by reason.
    pub drops_per_sec: BTreeMap<String, f64>,
}

/// A live call (`GET /api/calls`, `call_started`). Media fields are optional: a daemon that
/// does not report them shows `-`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Call {
    /// The API's call id.
    pub id: u64,
    /// SIP Call-ID of the caller's leg.
    pub call_id: String,
    /// Account admitted for.
    pub account_id: u64,
    /// Calling number.
    pub cli: String,
    /// Called number.
    pub cld: String,
    /// Caller's SIP source address.
    pub source: String,
    /// Upstream connection carrying it.
    pub connection_id: Option<u64>,
    /// Answered yet.
    pub answered: bool,
    /// Unix ms of the INVITE.
    pub started_ms: u64,
    /// Unix ms of the answer.
    pub answered_ms: Option<u64>,
    /// The relay's figures for the call's media; absent while none is anchored (or from a
    /// daemon that does not report them: shown as `-`).
    pub media: Option<CallMedia>,
}

/// RTP relayed in one direction of a call (`media.caller_to_vendor` / `vendor_to_caller`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct MediaDirection {
    /// Packets relayed.
    pub packets: u64,
    /// Payload bytes relayed.
    pub bytes: u64,
    /// Packets lost (RTP sequence gaps), where the daemon tracks them.
    pub lost: Option<u64>,
    /// Packets expected from the RTP sequence numbers (RFC 3550's extended highest
    /// sequence minus the first), where the daemon tracks them.
    pub expected: Option<u64>,
    /// Unix ms of the last packet.
    pub last_seen_ms: Option<u64>,
    /// `kernel`, `userspace` or `mixed`.
    pub plane: Option<String>,
}

impl MediaDirection {
    /// Packets expected: as reported, else those relayed plus those lost.
    fn expected_or_seen(&self) -> u64 {
        self.expected
            .unwrap_or(self.packets + self.lost.unwrap_or(0))
    }
}

fn pct(lost: u64, expected: u64) -> f64 {
    if expected == 0 {
        0.0
    } else {
        (lost as f64 * 100.0 / expected as f64).min(100.0)
    }
}

/// A call's media as `GET /api/calls` reports it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct CallMedia {
    /// The caller's media toward the vendor.
    pub caller_to_vendor: MediaDirection,
    /// The vendor's media toward the caller.
    pub vendor_to_caller: MediaDirection,
    /// Which plane relayed the call: `kernel`, `userspace` or `mixed`.
    pub plane: Option<String>,
}

/// How long an answered call may go without media before the calls screen marks it.
pub const MEDIA_QUIET_MS: u64 = 5_000;

impl Call {
    /// `ringing` or `answered`.
    pub fn state(&self) -> &'static str {
        if self.answered { "answered" } else { "ringing" }
    }

    /// Media packets caller → vendor.
    pub fn packets_out(&self) -> Option<u64> {
        self.media.as_ref().map(|m| m.caller_to_vendor.packets)
    }

    /// Media packets vendor → caller.
    pub fn packets_in(&self) -> Option<u64> {
        self.media.as_ref().map(|m| m.vendor_to_caller.packets)
    }

    /// Loss over both directions in percent, where the daemon reports lost packets: lost
    /// over expected (packets relayed plus lost where `expected` is absent).
    pub fn loss_pct(&self) -> Option<f64> {
        let m = self.media.as_ref()?;
        let (a, b) = (&m.caller_to_vendor, &m.vendor_to_caller);
        if a.lost.is_none() && b.lost.is_none() {
            return None;
        }
        let lost = a.lost.unwrap_or(0) + b.lost.unwrap_or(0);
        Some(pct(lost, a.expected_or_seen() + b.expected_or_seen()))
    }

    /// Packets lost per direction (caller → vendor, vendor → caller), where reported.
    pub fn lost(&self) -> Option<(Option<u64>, Option<u64>)> {
        let m = self.media.as_ref()?;
        let (a, b) = (m.caller_to_vendor.lost, m.vendor_to_caller.lost);
        (a.is_some() || b.is_some()).then_some((a, b))
    }

    /// Unix ms of the last media packet in either direction.
    pub fn last_media_ms(&self) -> Option<u64> {
        let m = self.media.as_ref()?;
        m.caller_to_vendor
            .last_seen_ms
            .max(m.vendor_to_caller.last_seen_ms)
    }

    /// An answered call with no media for more than [`MEDIA_QUIET_MS`] (none since the
    /// answer counts from the answer): one-way or dead audio an engineer wants to see.
    pub fn media_quiet(&self, now_ms: u64) -> bool {
        if !self.answered || self.media.is_none() {
            return false;
        }
        let since = self
            .last_media_ms()
            .or(self.answered_ms)
            .unwrap_or(self.started_ms);
        now_ms.saturating_sub(since) > MEDIA_QUIET_MS
    }
}

/// `call_ended`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CallEnded {
    /// The call id.
    pub id: u64,
    /// Why it ended.
    pub cause: String,
    /// `caller`, `vendor`, `staff`, ...
    pub hung_up_by: String,
}

/// One SIP message of a call (`GET /api/calls/{id}/messages`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Message {
    /// Unix ms.
    pub at_ms: u64,
    /// `in` (to the SBC) or `out` (from it).
    pub dir: String,
    /// `caller` or `vendor`.
    pub leg: String,
    /// Source address.
    pub from: String,
    /// Destination address.
    pub to: String,
    /// `udp`, `tcp`, `tls`.
    pub transport: String,
    /// Request or status line.
    pub first_line: String,
    /// The whole message.
    pub raw: String,
}

impl Message {
    /// `INVITE` for a request, `200 OK` for a response.
    pub fn label(&self) -> String {
        let l = self.first_line.trim();
        if let Some(rest) = l.strip_prefix("SIP/2.0 ") {
            return rest.to_owned();
        }
        l.split_whitespace().next().unwrap_or("?").to_owned()
    }

    /// `c=` and `m=` lines of an SDP body, for the SDP addresses of a call.
    pub fn sdp_addresses(&self) -> Vec<String> {
        self.raw
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("c=") || l.starts_with("m="))
            .map(str::to_owned)
            .collect()
    }
}

/// The reply of `GET /api/calls/{id}/messages`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CallMessages {
    /// The API's call id (as in `GET /api/calls`).
    pub id: u64,
    /// The caller's SIP Call-ID.
    pub call_id: String,
    /// Oldest first.
    pub messages: Vec<Message>,
    /// Messages of this call the daemon did not keep (its per-call bound).
    pub dropped: u64,
    /// Whether the call has ended.
    pub ended: bool,
}

/// A ban (`GET /api/bans`, `ban_added`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Ban {
    /// The banned prefix.
    pub prefix: String,
    /// `manual`, `flood`, `scanner`, ...
    pub reason: String,
    /// `ids` or `staff`.
    pub by: String,
    /// Unix ms; `None`: permanent.
    pub expires_ms: Option<u64>,
    /// `None`: permanent.
    pub remaining_secs: Option<u64>,
    /// Past its time.
    pub expired: bool,
    /// The operator's note.
    pub note: Option<String>,
    /// Stored and applied again after a restart.
    pub persistent: bool,
    /// The IDS rule that earned it, `range:<rule>`, or `staff:<username>`.
    pub rule: String,
    /// What the IDS saw (`offence`, `count`, `window_secs`, `evidence`, …); `None` for
    /// staff bans.
    pub evidence: Option<serde_json::Value>,
    /// Packets sipd dropped for it in userspace (XDP's drops are counted in total only).
    pub hits: u64,
    /// Unix ms it was first banned.
    pub first_seen_ms: u64,
    /// Unix ms of the last offence or counted hit.
    pub last_seen_ms: u64,
}

impl Ban {
    /// The evidence in one line: the IDS's sentence (`5 failed digest responses`) with its
    /// window, or what there is of it.
    pub fn evidence_line(&self) -> String {
        let Some(e) = &self.evidence else {
            return String::new();
        };
        let said = e
            .get("evidence")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .or_else(|| e.get("offence").and_then(|v| v.as_str()).map(str::to_owned))
            .unwrap_or_else(|| e.to_string());
        match e.get("window_secs").and_then(serde_json::Value::as_u64) {
            Some(w) if w > 0 => format!("{said} in {w}s"),
            _ => said,
        }
    }
}

/// A source the IDS spares (`GET /api/bans/never`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct NeverBan {
    /// Address, prefix or upstream host name.
    pub prefix: String,
    /// `ip_only_rule` or `upstream`.
    pub source: String,
    /// The rule (`<account id>/<rule name>`) or connection name.
    pub name: String,
    /// The IDS rules it is never banned for.
    pub spared: Vec<String>,
    /// The IDS rules that still ban it.
    pub still_banned_for: Vec<String>,
}

/// An alert (`GET /api/alerts`, `alert_raised`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Alert {
    /// Stable while the condition lasts (the code and what it is about); `alert_cleared`
    /// names alerts by it.
    pub id: String,
    /// The kind of finding (`ban_table_full`, `firewall_coverage`, ...).
    pub code: String,
    /// `critical`, `warning` or `info`.
    pub severity: String,
    /// What is wrong.
    pub message: String,
    /// Who acknowledged it (`POST /api/alerts/{id}/ack`); `None`: nobody yet.
    pub acked_by: Option<String>,
    /// Unix ms of the acknowledgement.
    pub acked_ms: Option<u64>,
}

impl Alert {
    /// What names this alert in the stream and in acknowledgements: its `id`, or its code from
    /// a daemon that sends no id.
    pub fn key(&self) -> &str {
        if self.id.is_empty() {
            &self.code
        } else {
            &self.id
        }
    }
}

/// An audit entry (`GET /api/audit`, `audit`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct AuditEntry {
    /// Sequence number.
    pub id: u64,
    /// Unix ms.
    pub ts_ms: u64,
    /// The staff username; `None` for the system.
    pub actor: Option<String>,
    /// Where from.
    pub source: Option<String>,
    /// `create`, `update`, `delete`, `login`, ...
    pub kind: String,
    /// What it was done to, `type:name`.
    pub target: Option<String>,
    /// `success` or `failure`.
    pub result: String,
    /// Why it failed, or a note.
    pub reason: Option<String>,
}

/// The reply of a successful login.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct LoginOk {
    /// The session token.
    pub token: String,
    /// Unix ms it expires.
    pub expires_ms: u64,
    /// `admin`, `operator`, `viewer`, ...
    pub role: String,
    /// A setup-only session (must enrol TOTP or change the password first).
    pub setup_only: bool,
}

/// `GET /api/me`, the parts the console uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Me {
    /// Staff username.
    pub username: String,
    /// `admin`, `operator` or `read-only`.
    pub role: String,
}

/// One event of `/api/events`.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// Once a second.
    Counters(Counters),
    /// A call was admitted.
    CallStarted(Call),
    /// A call ended.
    CallEnded(CallEnded),
    /// A ban was added.
    BanAdded(Ban),
    /// A ban was removed (`addr` is the prefix).
    BanRemoved(String),
    /// An alert was raised.
    AlertRaised(Alert),
    /// An alert was cleared (by code).
    AlertCleared(String),
    /// An audit entry was appended.
    Audit(AuditEntry),
    /// The server dropped this many events for us (we were slow).
    Lagged(u64),
}

impl StreamEvent {
    /// Parses one event from its kind and data; `None` for an unknown kind (a newer daemon)
    /// or data that does not fit.
    pub fn parse(kind: &str, data: &str) -> Option<StreamEvent> {
        fn j<T: serde::de::DeserializeOwned>(d: &str) -> Option<T> {
            serde_json::from_str(d).ok()
        }
        fn field(d: &str, k: &str) -> Option<serde_json::Value> {
            j::<serde_json::Value>(d)?.get(k).cloned()
        }
        Some(match kind {
            "counters" => StreamEvent::Counters(j(data)?),
            "call_started" => StreamEvent::CallStarted(j(data)?),
            "call_ended" => StreamEvent::CallEnded(j(data)?),
            "ban_added" => StreamEvent::BanAdded(j(data)?),
            "ban_removed" => StreamEvent::BanRemoved(field(data, "addr")?.as_str()?.to_owned()),
            "alert_raised" => StreamEvent::AlertRaised(j(data)?),
            "alert_cleared" => {
                let v = field(data, "id")?;
                StreamEvent::AlertCleared(v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            }
            "audit" => StreamEvent::Audit(j(data)?),
            "lagged" => StreamEvent::Lagged(field(data, "missed")?.as_u64()?),
            _ => return None,
        })
    }
}

/// `GET /api/firewall`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct FirewallView {
    /// The host services and their allow lists.
    pub services: Vec<ServiceView>,
    /// The deny list.
    pub deny: Vec<DenyEntry>,
    /// Allow entries with their origin (`api` ones can be removed here).
    pub allow_entries: Vec<AllowEntry>,
}

/// One service of the firewall.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ServiceView {
    /// `sip`, `management`, `ssh`, ...
    pub service: String,
    /// Its port.
    pub port: u16,
    /// `udp`, `tcp`, ...
    pub proto: String,
    /// Only the allow list reaches it.
    pub restricted: bool,
    /// The allow list.
    pub allow: Vec<String>,
}

/// One deny entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DenyEntry {
    /// The prefix.
    pub cidr: String,
    /// Its id (`None` for entries from `sbc.toml`).
    pub id: Option<u64>,
    /// `api` or `config`.
    pub origin: String,
}

/// One allow entry with its origin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct AllowEntry {
    /// The service.
    pub service: String,
    /// The prefix.
    pub cidr: String,
    /// `api` or `config`.
    pub origin: String,
}

/// An account (`GET /api/accounts`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Account {
    /// Id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Takes calls.
    pub enabled: bool,
    /// Tariff name.
    pub tariff: Option<String>,
    /// Decimal balance.
    pub balance: String,
    /// New calls per second allowed.
    pub cps_limit: Option<u32>,
    /// Concurrent calls allowed.
    pub max_sessions: Option<u32>,
}

/// An upstream connection (`GET /api/connections`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Connection {
    /// Id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Carries calls.
    pub enabled: bool,
    /// `host:port`.
    pub destination: String,
    /// Concurrent calls allowed.
    pub max_channels: Option<u32>,
    /// New calls per second allowed.
    pub cps_limit: Option<u32>,
}

/// A CDR (`GET /api/cdrs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Cdr {
    /// Id.
    pub id: u64,
    /// SIP Call-ID.
    pub call_id: String,
    /// Unix ms of the INVITE.
    pub start_ms: u64,
    /// Unix ms of the answer.
    pub answer_ms: Option<u64>,
    /// Unix ms of the end.
    pub end_ms: u64,
    /// Calling number.
    pub caller: String,
    /// Called number.
    pub callee: String,
    /// The caller's address.
    pub source: Option<String>,
    /// Account.
    pub account_id: Option<u64>,
    /// Connection.
    pub connection_id: Option<u64>,
    /// Final SIP status.
    pub result_code: u16,
    /// Why it ended.
    pub reason: String,
    /// Billed seconds.
    pub duration_secs: u64,
    /// Decimal cost.
    pub cost: String,
}

/// A staff member (`GET /api/staff`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct StaffMember {
    /// Id.
    pub id: u64,
    /// Username.
    pub username: String,
    /// `admin`, `operator`, `read-only`.
    pub role: String,
    /// May log in.
    pub enabled: bool,
    /// `none`, `pending` or `enrolled`.
    pub totp: String,
    /// Where from they may log in.
    pub allowed_hosts: Vec<String>,
    /// Must change the password at next login.
    pub must_change_password: bool,
}
