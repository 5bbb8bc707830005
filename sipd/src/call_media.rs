//! The media figures of `GET /api/calls`: each live call's relay ports (from the media call
//! table, asked of the event loop) joined with the relay's per-leg counters (one walk of the
//! data plane's maps per request, outside the event loop). The call core never sees them.
//!
//! Loss is RFC 3550's, counted by both planes per relay port (`relay_common::rtp`): a port's
//! kernel and userspace views are joined (one stream), then a direction's ports (one stream
//! each: audio, video) are added up.

use std::collections::HashMap;

use relay_common::relay::LegCounters;
use relay_user::PlaneCounters;
use serde::Serialize;
use sipd_core::b2bua::CallInfo;

/// The relay RTP ports (even; RTCP is each + 1) each party of a call sends to, one per stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaLegs {
    /// Where the caller's media arrives (caller → vendor).
    pub caller: Vec<u16>,
    /// Where the vendor's media arrives (vendor → caller).
    pub vendor: Vec<u16>,
}

/// Which data plane relayed a direction's (or a call's) packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Plane {
    /// All by the XDP program.
    Kernel,
    /// All by the userspace relay.
    Userspace,
    /// Some by each (XDP mode: packets XDP could not handle took the slow path).
    Mixed,
}

impl Plane {
    fn of(kernel: u64, user: u64) -> Option<Plane> {
        match (kernel > 0, user > 0) {
            (true, true) => Some(Plane::Mixed),
            (true, false) => Some(Plane::Kernel),
            (false, true) => Some(Plane::Userspace),
            (false, false) => None,
        }
    }
}

/// RTP received from one party and relayed to the other (RTCP not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Direction {
    /// Packets relayed.
    pub packets: u64,
    /// UDP payload bytes of those packets.
    pub bytes: u64,
    /// Unix ms of the last packet received; absent before the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<u64>,
    /// Which plane relayed them; absent before the first packet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plane: Option<Plane>,
    /// RTP packets expected (RFC 3550: highest sequence number - first + 1, per stream);
    /// 0 before the first RTP packet.
    pub expected: u64,
    /// RTP packets lost: expected - received per stream (never below 0: duplicates can
    /// outnumber losses).
    pub lost: u64,
    #[serde(skip)]
    kernel_packets: u64,
    #[serde(skip)]
    user_packets: u64,
}

/// A call's media, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CallMedia {
    /// The caller's RTP, relayed toward the vendor.
    pub caller_to_vendor: Direction,
    /// The vendor's RTP, relayed toward the caller.
    pub vendor_to_caller: Direction,
    /// Which plane relayed the call's packets (both directions); absent before any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plane: Option<Plane>,
}

/// An element of `GET /api/calls`: the core's description and, once media is anchored, the
/// relay's figures.
#[derive(Debug, Clone, Serialize)]
pub struct LiveCall {
    /// What the call core says about the call.
    #[serde(flatten)]
    pub call: CallInfo,
    /// The call's media; absent while no media is anchored (no SDP yet, or none at all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<CallMedia>,
}

/// Clock readings that turn the relay's monotonic last-seen times into Unix ms.
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    /// `CLOCK_MONOTONIC` now, ns (the relay's clock).
    pub mono_ns: u64,
    /// Unix ms now.
    pub wall_ms: u64,
}

/// Unix ms of `t` (0 before the epoch).
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn direction(ports: &[u16], counters: &HashMap<u16, PlaneCounters>, now: Clocks) -> Direction {
    let (mut kernel, mut user) = (LegCounters::default(), LegCounters::default());
    let (mut expected, mut lost) = (0, 0);
    for p in ports {
        if let Some(c) = counters.get(p) {
            kernel.merge(&c.kernel);
            user.merge(&c.user);
            let mut stream = c.kernel;
            stream.merge(&c.user);
            expected += stream.rtp_expected();
            lost += stream.rtp_lost();
        }
    }
    let last_ns = kernel.last_seen_ns.max(user.last_seen_ns);
    Direction {
        packets: kernel.packets + user.packets,
        bytes: kernel.bytes + user.bytes,
        last_seen_ms: (last_ns > 0).then(|| {
            let ago_ms = now.mono_ns.saturating_sub(last_ns) / 1_000_000;
            now.wall_ms.saturating_sub(ago_ms)
        }),
        plane: Plane::of(kernel.packets, user.packets),
        expected,
        lost,
        kernel_packets: kernel.packets,
        user_packets: user.packets,
    }
}

/// Joins each call with the counters of its relay ports (`counters`: every leg's, by port, as
/// [`relay_user::DataPlane::leg_counters_by_plane`] returns them).
pub fn join(
    calls: Vec<(CallInfo, Option<MediaLegs>)>,
    counters: &HashMap<u16, PlaneCounters>,
    now: Clocks,
) -> Vec<LiveCall> {
    calls
        .into_iter()
        .map(|(call, legs)| {
            let media = legs.map(|l| {
                let a = direction(&l.caller, counters, now);
                let b = direction(&l.vendor, counters, now);
                CallMedia {
                    caller_to_vendor: a,
                    vendor_to_caller: b,
                    plane: Plane::of(
                        a.kernel_packets + b.kernel_packets,
                        a.user_packets + b.user_packets,
                    ),
                }
            });
            LiveCall { call, media }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u64) -> CallInfo {
        CallInfo {
            id,
            call_id: format!("c{id}"),
            account_id: 1,
            cli: "100".into(),
            cld: "200".into(),
            source: "192.0.2.1:5060".parse().unwrap(),
            connection_id: None,
            answered: true,
            started_ms: 0,
            answered_ms: None,
        }
    }

    fn leg(packets: u64, last_seen_ns: u64) -> LegCounters {
        LegCounters {
            packets,
            bytes: packets * 172,
            last_seen_ns,
            ..LegCounters::default()
        }
    }

    fn with_rtp(mut c: LegCounters, seqs: impl IntoIterator<Item = u16>) -> LegCounters {
        for s in seqs {
            c.rtp_seen(s);
        }
        c
    }

    /// Each direction sums its ports over both planes, says which plane carried it and turns
    /// the monotonic last-seen into Unix ms; a call without anchored media has no `media`.
    #[test]
    fn calls_are_joined_with_their_ports_counters() {
        let now = Clocks {
            mono_ns: 10_000_000_000,
            wall_ms: 1_700_000_010_000,
        };
        let mut counters = HashMap::new();
        counters.insert(
            30000,
            // The kernel missed 10 and 20: the userspace relay had them (the slow path),
            // so the stream lost nothing.
            PlaneCounters {
                kernel: with_rtp(
                    leg(50, 9_000_000_000),
                    (1..=50).filter(|s| s % 10 != 0 || *s > 20),
                ),
                user: with_rtp(leg(2, 8_000_000_000), [10, 20]),
            },
        );
        counters.insert(
            30002,
            PlaneCounters {
                kernel: with_rtp(leg(40, 9_500_000_000), (1..=41).filter(|s| *s != 7)),
                ..PlaneCounters::default()
            },
        );
        // A stale entry of some other call is not counted.
        counters.insert(
            30004,
            PlaneCounters {
                user: leg(7, 1),
                ..PlaneCounters::default()
            },
        );
        let legs = MediaLegs {
            caller: vec![30000],
            vendor: vec![30002],
        };
        let out = join(
            vec![
                (info(1), Some(legs)),
                (info(2), None),
                (info(3), Some(MediaLegs::default())),
            ],
            &counters,
            now,
        );
        let m = out[0].media.unwrap();
        assert_eq!(m.caller_to_vendor.packets, 52);
        assert_eq!(m.caller_to_vendor.bytes, 52 * 172);
        assert_eq!(m.caller_to_vendor.last_seen_ms, Some(1_700_000_009_000));
        assert_eq!(m.caller_to_vendor.plane, Some(Plane::Mixed));
        assert_eq!(
            (m.caller_to_vendor.expected, m.caller_to_vendor.lost),
            (50, 0)
        );
        assert_eq!(
            (m.vendor_to_caller.expected, m.vendor_to_caller.lost),
            (41, 1)
        );
        assert_eq!(m.vendor_to_caller.packets, 40);
        assert_eq!(m.vendor_to_caller.last_seen_ms, Some(1_700_000_009_500));
        assert_eq!(m.vendor_to_caller.plane, Some(Plane::Kernel));
        assert_eq!(m.plane, Some(Plane::Mixed));
        assert!(out[1].media.is_none());
        let quiet = out[2].media.unwrap();
        assert_eq!(quiet.caller_to_vendor, Direction::default());
        assert_eq!(quiet.plane, None);

        let json = serde_json::to_value(&out).unwrap();
        assert_eq!(json[0]["id"], 1, "CallInfo's fields stay where they were");
        assert_eq!(json[0]["media"]["caller_to_vendor"]["plane"], "mixed");
        assert_eq!(json[0]["media"]["vendor_to_caller"]["packets"], 40);
        assert_eq!(json[0]["media"]["vendor_to_caller"]["lost"], 1);
        assert_eq!(json[0]["media"]["vendor_to_caller"]["expected"], 41);
        assert!(json[1].get("media").is_none());
        assert!(
            json[2]["media"]["caller_to_vendor"]
                .get("last_seen_ms")
                .is_none()
        );
    }
}
