//! `/metrics` in the Prometheus text exposition format (0.0.4). Counters are monotonic
//! since sipd started (rates, CPS included, are Prometheus's `rate()`); gauges are now.

use std::fmt::Write;

use crate::control::Status;

/// Extra facts the status does not carry.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// The API still serves the certificate it made itself (`sipd_mgmt_tls_self_signed`).
    pub self_signed: bool,
    /// Times the certificate was reloaded from its files since start.
    pub cert_reloads: u64,
    /// Bans an operator added through the API (stored, so they survive a restart).
    pub manual_bans: usize,
    /// What happened to bans: replaced in a full table, refused, ranges, purged.
    pub bans: crate::firewall::BanCounters,
    /// sipd's table: bans held, capacity per family.
    pub ban_fill: (usize, usize),
    /// SIP messages not kept for a call's ladder (`[call_messages]` bounds).
    pub call_messages_dropped: u64,
    /// What the call ladder buffer holds now.
    pub call_messages: crate::events::capture::Held,
    /// HEP copies sent and dropped (all zero when capture is off).
    pub hep: crate::hep::HepCounts,
    /// ACME, when `[acme]` is on.
    pub acme: Option<AcmeFacts>,
    /// The cluster's counters; `None` without `[cluster]` (no series then).
    pub cluster: Option<crate::cluster::ClusterCounters>,
}

/// ACME's metrics.
#[derive(Debug, Clone, Default)]
pub struct AcmeFacts {
    /// Seconds until the ACME certificate expires (negative: expired); None: none yet.
    pub expiry_secs: Option<i64>,
    /// Certificates obtained since start.
    pub renewals_ok: u64,
    /// Attempts that failed since start.
    pub renewals_failed: u64,
    /// The last attempt failed (the `acme_renewal_failed` alert is up).
    pub failing: bool,
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, v: u64) {
        self.head(name, kind, help);
        let _ = writeln!(self.0, "{name} {v}");
    }

    fn labelled<'a>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (&'a str, u64)>,
    ) {
        self.head(name, kind, help);
        for (l, v) in values {
            let _ = writeln!(self.0, "{name}{{{label}=\"{}\"}} {v}", escape(l));
        }
    }
}

/// Label values: backslash, double quote and newline escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A metric with one value: name, type, help, and where its value comes from.
type Simple = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Status, &Extra) -> u64,
);

/// Calls, SIP messages and authentication.
const CALLS: &[Simple] = &[
    (
        "sipd_start_time_seconds",
        "gauge",
        "Unix time sipd started.",
        |s, _| s.started_ms / 1000,
    ),
    (
        "sipd_uptime_seconds",
        "gauge",
        "Seconds since sipd started.",
        |s, _| s.uptime_secs,
    ),
    (
        "sipd_calls_active",
        "gauge",
        "Calls in progress (set up or being set up).",
        |s, _| s.active_calls as u64,
    ),
    (
        "sipd_calls_capacity",
        "gauge",
        "Calls the media relay has ports for (RTP port pairs over two).",
        |s, _| s.calls_capacity,
    ),
    (
        "sipd_calls_total",
        "counter",
        "Call attempts (initial INVITEs) received.",
        |s, _| s.core.invites,
    ),
    (
        "sipd_invites_total",
        "counter",
        "Initial INVITEs received; rate() of this is the calls per second.",
        |s, _| s.core.invites,
    ),
    (
        "sipd_calls_answered_total",
        "counter",
        "Calls answered (2xx sent to the caller).",
        |s, _| s.core.answered,
    ),
    (
        "sipd_calls_failed_total",
        "counter",
        "Calls that ended with a failure response to the caller.",
        |s, _| s.core.failed,
    ),
    (
        "sipd_sip_requests_total",
        "counter",
        "SIP requests received.",
        |s, _| s.core.requests,
    ),
    (
        "sipd_sip_responses_received_total",
        "counter",
        "SIP responses received.",
        |s, _| s.core.responses,
    ),
    (
        "sipd_sip_malformed_total",
        "counter",
        "Malformed SIP messages received.",
        |s, _| s.core.malformed,
    ),
    (
        "sipd_sip_stray_total",
        "counter",
        "SIP messages matching no transaction or dialog.",
        |s, _| s.core.stray,
    ),
    (
        "sipd_in_dialog_refused_total",
        "counter",
        "In-dialog requests (BYE, re-INVITE, UPDATE, INFO, ...) refused with 403: not from the dialog's own peer.",
        |s, _| s.core.in_dialog_refused,
    ),
    (
        "sipd_auth_challenges_total",
        "counter",
        "Digest challenges (401) sent.",
        |s, _| s.core.challenges,
    ),
    (
        "sipd_auth_failures_total",
        "counter",
        "Failed digest authentications.",
        |s, _| s.core.auth_failures,
    ),
];

/// Media relayed.
const RELAY: &[Simple] = &[
    (
        "sbc_relay_packets_total",
        "counter",
        "Media packets relayed (RTP and RTCP, both directions, kernel and userspace).",
        |s, _| s.relay.packets,
    ),
    (
        "sbc_relay_bytes_total",
        "counter",
        "Media bytes relayed (UDP payload, both directions, kernel and userspace).",
        |s, _| s.relay.bytes,
    ),
    (
        "sbc_relay_rtp_lost",
        "gauge",
        "RTP packets lost before reaching the relay since start (RFC 3550 expected minus \
         received per relay port, both planes, calls ended or not); a gauge, not a counter: \
         a late packet takes back a loss counted on a live call.",
        |s, _| s.relay.rtp_lost,
    ),
    (
        "sbc_relay_sessions",
        "gauge",
        "Relay sessions (calls with anchored media) open now.",
        |s, _| s.relay.sessions,
    ),
];

/// Bans and the management API's certificate.
const OPERATIONS: &[Simple] = &[
    (
        "sbc_bans",
        "gauge",
        "Sources banned in the data plane now.",
        |s, _| s.bans as u64,
    ),
    (
        "sbc_bans_manual",
        "gauge",
        "Bans made by operators (stored, applied again at start).",
        |_, x| x.manual_bans as u64,
    ),
    (
        "sbc_bans_capacity",
        "gauge",
        "Bans sipd's table holds at most, per family (IPv4, IPv6).",
        |_, x| x.ban_fill.1 as u64,
    ),
    (
        "sbc_bans_table",
        "gauge",
        "Bans in sipd's table now (the data plane holds a copy).",
        |_, x| x.ban_fill.0 as u64,
    ),
    (
        "sbc_bans_replaced_total",
        "counter",
        "Bans that gave way, in a full table, to a newer one (the one expiring soonest goes).",
        |_, x| x.bans.replaced,
    ),
    (
        "sbc_bans_refused_total",
        "counter",
        "New bans not added: the table was full of bans outlasting them.",
        |_, x| x.bans.refused,
    ),
    (
        "sbc_bans_promoted_total",
        "counter",
        "Ranges banned because enough of their addresses offended.",
        |_, x| x.bans.promoted,
    ),
    (
        "sbc_bans_purged_total",
        "counter",
        "Expired bans sipd purged from its table and the data plane.",
        |_, x| x.bans.purged,
    ),
    (
        "sipd_mgmt_tls_self_signed",
        "gauge",
        "1 while the management API uses its self-signed certificate.",
        |_, x| u64::from(x.self_signed),
    ),
    (
        "sipd_mgmt_tls_reloads_total",
        "counter",
        "Management API certificate reloads.",
        |_, x| x.cert_reloads,
    ),
];

impl Out {
    fn table(&mut self, s: &Status, x: &Extra, t: &[Simple]) {
        for (name, kind, help, value) in t {
            self.one(name, kind, help, value(s, x));
        }
    }
}

/// The whole `/metrics` page for `s` and `x`; pure, so a test can check it without a server.
pub fn render(s: &Status, x: &Extra) -> String {
    let mut o = Out(String::with_capacity(4096));
    let c = &s.core;
    o.table(s, x, CALLS);
    let codes: Vec<(String, u64)> = c
        .finals
        .iter()
        .map(|(code, n)| (code.to_string(), *n))
        .collect();
    o.labelled(
        "sipd_responses_sent_total",
        "counter",
        "Final responses sent to callers, by status code.",
        "code",
        codes.iter().map(|(k, v)| (k.as_str(), *v)),
    );
    let mut tcp_open = 0;
    let mut transport = Vec::new();
    if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(s.transport) {
        for (k, v) in m {
            let v = v.as_u64().unwrap_or(0);
            if k == "tcp_open" {
                tcp_open = v;
            } else {
                transport.push((k, v));
            }
        }
    }
    o.labelled(
        "sipd_transport_events_total",
        "counter",
        "SIP transport counters (datagrams, frames, connections, errors) by event.",
        "event",
        transport.iter().map(|(k, v)| (k.as_str(), *v)),
    );
    o.one(
        "sipd_transport_tcp_open",
        "gauge",
        "SIP TCP connections open.",
        tcp_open,
    );
    o.labelled(
        "sbc_dataplane_packets_total",
        "counter",
        "Data-plane packet verdicts and relay counts, by reason.",
        "reason",
        s.dataplane_stats.iter().map(|(k, v)| (*k, *v)),
    );
    o.table(s, x, RELAY);
    if let Some(a) = &x.acme {
        if let Some(left) = a.expiry_secs {
            o.head(
                "sipd_acme_cert_expiry_seconds",
                "gauge",
                "Seconds until the ACME certificate expires (negative: expired).",
            );
            let _ = writeln!(o.0, "sipd_acme_cert_expiry_seconds {left}");
        }
        o.labelled(
            "sipd_acme_renewals_total",
            "counter",
            "ACME certificate attempts since start, by result.",
            "result",
            [("ok", a.renewals_ok), ("failed", a.renewals_failed)],
        );
        o.one(
            "sipd_acme_renewal_failing",
            "gauge",
            "1 while the last ACME attempt failed (the acme_renewal_failed alert).",
            u64::from(a.failing),
        );
    }
    o.labelled(
        "sbc_relay_plane_packets_total",
        "counter",
        "Media packets relayed, by the plane that relayed them (kernel: XDP; userspace).",
        "plane",
        [
            ("kernel", s.relayed_kernel_packets),
            ("userspace", s.relayed_user_packets),
        ],
    );
    o.head(
        "sbc_firewall_coverage",
        "gauge",
        "1 for the plane (xdp, userspace, none) that firewalls each service address.",
    );
    for e in &s.coverage {
        let _ = writeln!(
            o.0,
            "sbc_firewall_coverage{{service=\"{}\",address=\"{}\",plane=\"{}\"}} 1",
            escape(&e.service),
            e.address,
            e.plane.name()
        );
    }
    o.labelled(
        "sbc_dataplane_mode",
        "gauge",
        "The active data plane (1 for the one in use).",
        "mode",
        ["xdp-native", "xdp-skb", "userspace"]
            .into_iter()
            .map(|m| (m, u64::from(m == s.dataplane))),
    );
    o.table(s, x, OPERATIONS);
    o.labelled(
        "sipd_refusals_total",
        "counter",
        "Requests refused before their sender authenticated, by reason (counted per source and reason in the refusal table, not written as CDRs).",
        "reason",
        c.refusals.iter().map(|(k, v)| (*k, *v)),
    );
    o.table(s, x, RECORDS);
    o.one(
        "sipd_hep_sent_total",
        "counter",
        "SIP messages copied to the HEP collector ([capture] hep).",
        x.hep.sent,
    );
    o.labelled(
        "sipd_hep_dropped_total",
        "counter",
        "SIP message copies not sent to the HEP collector, by reason (queue_full, send_error, collector_down, unresolved, too_large).",
        "reason",
        x.hep.dropped(),
    );
    if let Some(c) = &x.cluster {
        o.one(
            "sipd_cluster_up",
            "gauge",
            "1 while connected to the cluster's Redis and resynced.",
            u64::from(c.up),
        );
        o.one(
            "sipd_cluster_limits_shared",
            "gauge",
            "1 while the shared limits and balances reach Redis; 0 while this node falls back to its share.",
            u64::from(c.limits_shared),
        );
        o.one(
            "sipd_cluster_debits_queued",
            "gauge",
            "Debits and top-ups waiting to be applied to the cluster's shared balances.",
            c.debits_queued,
        );
        for (name, help, v) in [
            (
                "sipd_cluster_resyncs_total",
                "Complete resyncs with the cluster's Redis (first connection and reconnections).",
                c.resyncs,
            ),
            (
                "sipd_cluster_disconnects_total",
                "Times the cluster's Redis stopped answering.",
                c.disconnects,
            ),
            (
                "sipd_cluster_bans_published_total",
                "Ban changes made on this node and written to the cluster.",
                c.bans_published,
            ),
            (
                "sipd_cluster_bans_applied_total",
                "Ban changes of other nodes applied on this node.",
                c.bans_applied,
            ),
            (
                "sipd_cluster_write_failures_total",
                "Writes to the cluster's Redis that failed (sent again at the next resync).",
                c.write_failures,
            ),
            (
                "sipd_cluster_cdrs_streamed_total",
                "CDRs added to the cluster's CDR stream.",
                c.cdrs_streamed,
            ),
            (
                "sipd_cluster_cdrs_dropped_total",
                "CDRs that never reached the stream (too many waiting while Redis was away).",
                c.cdrs_dropped,
            ),
            (
                "sipd_cluster_reconnects_total",
                "Reconnections of the cluster's Redis clients (each starts a resync).",
                c.reconnects,
            ),
            (
                "sipd_cluster_pubsub_overflows_total",
                "Times the cluster's pub/sub buffer overflowed (messages lost; each starts a resync).",
                c.pubsub_overflows,
            ),
            (
                "sipd_cluster_epoch_changes_total",
                "Times the cluster's Redis lost its data (new epoch; a full resync both ways).",
                c.epoch_changes,
            ),
            (
                "sipd_cluster_bans_pruned_total",
                "Expired bans and old tombstones removed from the cluster's Redis while connected.",
                c.bans_pruned,
            ),
        ] {
            o.one(name, "counter", help, v);
        }
        o.one(
            "sipd_cluster_name_conflict",
            "gauge",
            "1 when another live node uses this node's name (this node refuses to join).",
            u64::from(c.name_conflict),
        );
    }
    o.0
}

/// The bounded tables a stranger can touch, and the CDR writer's queue.
const RECORDS: &[Simple] = &[
    (
        "sipd_refusal_rows",
        "gauge",
        "Rows in the refusal table (one per source and reason).",
        |s, _| s.core.refusal_rows as u64,
    ),
    (
        "sipd_refusal_rows_evicted_total",
        "counter",
        "Refusal table rows dropped because the table was full (the row seen longest ago goes).",
        |s, _| s.core.refusal_rows_evicted,
    ),
    (
        "sipd_ids_sources",
        "gauge",
        "Sources the IDS tracks (failures, floods, past bans).",
        |s, _| s.core.ids_sources as u64,
    ),
    (
        "sipd_ids_sources_evicted_total",
        "counter",
        "IDS sources forgotten because its table was full (the one seen longest ago goes).",
        |s, _| s.core.ids_evicted,
    ),
    (
        "sipd_call_messages_dropped_total",
        "counter",
        "SIP messages not kept for a call's ladder (the [call_messages] bounds).",
        |_, x| x.call_messages_dropped,
    ),
    (
        "sipd_call_messages_live_calls",
        "gauge",
        "Calls in progress whose SIP messages are kept for their ladder (back to 0 when no call is up).",
        |_, x| x.call_messages.live_calls as u64,
    ),
    (
        "sipd_call_messages_ended_calls",
        "gauge",
        "Ended calls whose SIP messages are kept (at most [call_messages] ended_calls).",
        |_, x| x.call_messages.ended_calls as u64,
    ),
    (
        "sipd_call_messages_bytes",
        "gauge",
        "Bytes of SIP messages kept for call ladders (at most [call_messages] max_bytes).",
        |_, x| x.call_messages.bytes as u64,
    ),
    (
        "sipd_cdr_queue_depth",
        "gauge",
        "CDRs and debits waiting for the store writer.",
        |s, _| s.cdr_queue.depth,
    ),
    (
        "sipd_cdr_queue_capacity",
        "gauge",
        "The CDR writer queue's capacity.",
        |s, _| s.cdr_queue.capacity,
    ),
    (
        "sipd_cdr_queue_blocked_total",
        "counter",
        "Times signalling waited for room in a full CDR queue (answered or billed calls' CDRs are never dropped).",
        |s, _| s.cdr_queue.blocked,
    ),
    (
        "sipd_held_messages",
        "gauge",
        "SIP messages held until the store write they follow is durable (group commit).",
        |s, _| s.cdr_queue.held,
    ),
    (
        "sipd_calls_saved",
        "gauge",
        "Calls saved in the store for the next run to adopt (answered or being set up).",
        |s, _| s.saved_calls,
    ),
    (
        "sipd_cdr_queue_dropped_total",
        "counter",
        "CDRs of unanswered attempts dropped because the CDR queue was full.",
        |s, _| s.cdr_queue.dropped,
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ladder_buffer_is_on_the_page() {
        let x = Extra {
            call_messages: crate::events::capture::Held {
                live_calls: 3,
                ended_calls: 7,
                bytes: 4096,
            },
            ..Extra::default()
        };
        let page = render(&Status::default(), &x);
        for line in [
            "sipd_call_messages_live_calls 3",
            "sipd_call_messages_ended_calls 7",
            "sipd_call_messages_bytes 4096",
            "# TYPE sipd_call_messages_bytes gauge",
        ] {
            assert!(page.lines().any(|l| l == line), "{line} not in:\n{page}");
        }
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
