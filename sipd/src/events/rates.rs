//! The `counters` event: rates per second between two [`Status`] samples, from the very
//! counters `/metrics` serves (so the console and Prometheus never disagree).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use crate::control::Status;

/// The data of a `counters` event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Counters {
    /// Unix ms of the sample.
    pub at_ms: u64,
    /// Calls in progress (`sipd_calls_active`).
    pub calls_active: u64,
    /// Calls the media relay has ports for (`sipd_calls_capacity`).
    pub calls_capacity: u64,
    /// Initial INVITEs received (`sipd_invites_total`).
    pub invites_per_sec: f64,
    /// SIP messages received over UDP and TCP (`sipd_transport_events_total`, `udp_rx` and
    /// `tcp_rx`).
    pub sip_packets_per_sec: f64,
    /// Media packets relayed by the XDP program (`sbc_relay_plane_packets_total{plane="kernel"}`).
    pub relayed_kernel_pps: f64,
    /// Media packets relayed by the userspace relay (`{plane="userspace"}`).
    pub relayed_user_pps: f64,
    /// Data-plane drops by reason (`sbc_dataplane_packets_total{reason="drop_…"}`, named
    /// short: `ban`, `deny`, `acl`, `packet_rate`, `invite_rate`, `session_cap`,
    /// `malformed`, `strict_source`, `fragment`, `tcp_syn_rate`, …).
    pub drops_per_sec: BTreeMap<String, f64>,
}

/// The short name of a data-plane drop counter (`drop_banned` → `ban`); `None` for a
/// counter that is not a drop.
pub fn drop_reason(stat: &str) -> Option<String> {
    let rest = stat.strip_prefix("drop_")?;
    Some(
        match rest {
            "banned" => "ban",
            "denied" => "deny",
            "service_acl" => "acl",
            "sip_packet_rate" => "packet_rate",
            "sip_invite_rate" => "invite_rate",
            "sip_session_cap" => "session_cap",
            other => other,
        }
        .to_owned(),
    )
}

#[derive(Debug, Clone, Default)]
struct Sample {
    invites: u64,
    sip: u64,
    kernel: u64,
    user: u64,
    drops: BTreeMap<String, u64>,
}

impl Sample {
    fn of(s: &Status) -> Sample {
        Sample {
            invites: s.core.invites,
            sip: s.transport.udp_rx + s.transport.tcp_rx,
            kernel: s.relayed_kernel_packets,
            user: s.relayed_user_packets,
            drops: s
                .dataplane_stats
                .iter()
                .filter_map(|(k, v)| Some((drop_reason(k)?, *v)))
                .collect(),
        }
    }
}

/// Turns successive samples into `counters` events.
#[derive(Debug, Default)]
pub struct Rates {
    prev: Option<(Instant, Sample)>,
}

impl Rates {
    /// Forgets the last sample (nobody listened for a while).
    pub fn reset(&mut self) {
        self.prev = None;
    }

    /// The event for `status` sampled at `now`; `None` for the first sample (a rate needs
    /// two).
    pub fn next(&mut self, now: Instant, at_ms: u64, status: &Status) -> Option<Counters> {
        let cur = Sample::of(status);
        let prev = self.prev.replace((now, cur.clone()));
        let (then, p) = prev?;
        let secs = now.duration_since(then).as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        // Counters only grow; a smaller value (a data plane reattached) is not a negative rate.
        let rate = |c: u64, p: u64| c.saturating_sub(p) as f64 / secs;
        Some(Counters {
            at_ms,
            calls_active: status.active_calls as u64,
            calls_capacity: status.calls_capacity,
            invites_per_sec: rate(cur.invites, p.invites),
            sip_packets_per_sec: rate(cur.sip, p.sip),
            relayed_kernel_pps: rate(cur.kernel, p.kernel),
            relayed_user_pps: rate(cur.user, p.user),
            drops_per_sec: cur
                .drops
                .iter()
                .map(|(k, v)| (k.clone(), rate(*v, p.drops.get(k).copied().unwrap_or(0))))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_counters_get_the_dashboard_names() {
        assert_eq!(drop_reason("drop_banned").as_deref(), Some("ban"));
        assert_eq!(drop_reason("drop_service_acl").as_deref(), Some("acl"));
        assert_eq!(
            drop_reason("drop_sip_invite_rate").as_deref(),
            Some("invite_rate")
        );
        assert_eq!(
            drop_reason("drop_strict_source").as_deref(),
            Some("strict_source")
        );
        assert_eq!(
            drop_reason("drop_tcp_syn_rate").as_deref(),
            Some("tcp_syn_rate")
        );
        assert_eq!(drop_reason("pass_sip"), None);
    }
}
