//! RTP loss per leg, as RFC 3550 A.1 and A.3 count it: the extended highest sequence number
//! (sequence number and wrap count), the first one, and how many packets arrived; expected =
//! highest - first + 1, lost = expected - received (duplicates count as received, so a
//! duplicate can hide a loss; the figure never goes below zero).
//!
//! The XDP program and the userspace relay run the same [`LegCounters::rtp_seen`] on each
//! relayed packet that looks like RTP ([`rtp_seq`]). Each of them keeps its own state: the
//! kernel one per CPU (the counters are a per-CPU map, so updates never race), the userspace
//! relay one per leg. A reader joins them with [`LegCounters::merge`], which lines the states up
//! on their highest sequence numbers (see there for what that assumes).

use crate::relay::LegCounters;

/// A forward jump of fewer packets than this is a gap (loss) in the stream; a larger one is
/// believed only when the next packet continues from it (RFC 3550 A.1 `MAX_DROPOUT`).
pub const RTP_MAX_DROPOUT: u16 = 3000;
/// A packet at most this many behind the highest one is late or a duplicate, not a restart
/// of the stream (RFC 3550 A.1 `MAX_MISORDER`).
pub const RTP_MAX_MISORDER: u16 = 100;
/// `rtp_bad` when no jump awaits confirmation: no 16-bit sequence number equals it.
pub const RTP_NO_BAD: u32 = 1 << 16 | 1;
/// Bytes of the fixed RTP header: shorter payloads are not RTP.
pub const RTP_HEADER_LEN: usize = 12;

/// [`rtp_seq`] of a whole UDP payload (the userspace relay's form).
pub fn rtp_seq_of(payload: &[u8]) -> Option<u16> {
    let head: [u8; 4] = payload.get(..4)?.try_into().ok()?;
    rtp_seq(head, payload.len())
}

/// The sequence number of a UDP payload that looks like RTP, from its first four bytes and its
/// length: version 2, at least a fixed header, and not RTCP. RTCP multiplexed on the RTP port
/// (RFC 5761) has a packet type of 192-223 where RTP has marker and payload type; RFC 5761
/// keeps RTP payload types 64-95 free for that reason, so the whole range is left out, not only
/// the common report types 200-204.
#[inline(always)]
pub const fn rtp_seq(head: [u8; 4], payload_len: usize) -> Option<u16> {
    if payload_len < RTP_HEADER_LEN || head[0] >> 6 != 2 || matches!(head[1], 192..=223) {
        return None;
    }
    Some(u16::from_be_bytes([head[2], head[3]]))
}

/// A sequence of RTP sequence numbers as they arrive on a leg and the loss RFC 3550 makes of
/// it: the table every implementation is tested against (this module's tests, the XDP program
/// through `BPF_PROG_TEST_RUN` and the userspace relay, in relay-user).
#[derive(Clone, Copy, Debug)]
pub struct LossCase {
    /// What it shows.
    pub what: &'static str,
    /// Sequence numbers in arrival order.
    pub seqs: &'static [u16],
    /// RTP packets expected afterwards.
    pub expected: u64,
    /// RTP packets lost afterwards.
    pub lost: u64,
}

/// Wraps, reorders, duplicates and skips: see [`LossCase`].
pub const LOSS_CASES: &[LossCase] = &[
    LossCase {
        what: "in order",
        seqs: &[10, 11, 12, 13, 14],
        expected: 5,
        lost: 0,
    },
    LossCase {
        what: "a gap of 3",
        seqs: &[1, 2, 6, 7],
        expected: 7,
        lost: 3,
    },
    LossCase {
        what: "reordered",
        seqs: &[1, 3, 2, 4],
        expected: 4,
        lost: 0,
    },
    LossCase {
        what: "late after a gap",
        seqs: &[10, 11, 15, 12],
        expected: 6,
        lost: 2,
    },
    LossCase {
        what: "a duplicate hides a loss",
        seqs: &[1, 2, 2, 4],
        expected: 4,
        lost: 0,
    },
    LossCase {
        what: "duplicates only",
        seqs: &[5, 5, 5],
        expected: 1,
        lost: 0,
    },
    LossCase {
        what: "wrap",
        seqs: &[65533, 65534, 65535, 0, 1, 2],
        expected: 6,
        lost: 0,
    },
    LossCase {
        what: "wrap with a gap",
        seqs: &[65534, 65535, 1, 2],
        expected: 5,
        lost: 1,
    },
    LossCase {
        what: "a restarted sender (the first packet of a jump is not counted)",
        seqs: &[100, 101, 102, 40000, 40001, 40002],
        expected: 5,
        lost: 0,
    },
    LossCase {
        what: "one stray jump",
        seqs: &[1, 2, 30000, 3, 4],
        expected: 4,
        lost: 0,
    },
];

impl LegCounters {
    /// Counts one RTP packet with sequence number `seq` (RFC 3550 A.1 `update_seq`, without
    /// the probation of a new source: a leg carries one stream). A jump of
    /// [`RTP_MAX_DROPOUT`] or more is not counted until the next packet confirms it; then the
    /// count goes on from there, keeping what was lost before.
    #[inline(always)]
    pub fn rtp_seen(&mut self, seq: u16) {
        if self.rtp_received == 0 {
            self.rtp_base = seq as u32;
            self.rtp_max = seq as u32;
            self.rtp_bad = RTP_NO_BAD;
            self.rtp_received = 1;
            return;
        }
        let ahead = seq.wrapping_sub(self.rtp_max as u16);
        if ahead < RTP_MAX_DROPOUT {
            // In order, maybe after a gap; past 65535 the wrap count (the high half) goes up.
            self.rtp_max = self.rtp_max.wrapping_add(ahead as u32);
        } else if ahead <= u16::MAX - RTP_MAX_MISORDER {
            if seq as u32 != self.rtp_bad {
                // A big jump: a restarted sender, or garbage. Believed if the next packet
                // follows it.
                self.rtp_bad = seq.wrapping_add(1) as u32;
                return;
            }
            // Confirmed: go on from `seq`, as many packets expected as before plus this one.
            let expected = self.rtp_max.wrapping_sub(self.rtp_base);
            self.rtp_max = (self.rtp_max & 0xffff_0000) | seq as u32;
            self.rtp_base = self.rtp_max.wrapping_sub(expected).wrapping_sub(1);
            self.rtp_bad = RTP_NO_BAD;
        }
        // Otherwise late or a duplicate: received, the highest unchanged.
        self.rtp_received = self.rtp_received.wrapping_add(1);
    }

    /// RTP packets expected on this leg: extended highest - first + 1; 0 before the first.
    pub const fn rtp_expected(&self) -> u64 {
        if self.rtp_received == 0 {
            return 0;
        }
        self.rtp_max.wrapping_sub(self.rtp_base) as u64 + 1
    }

    /// RTP packets received (counted for loss): RFC 3550's `received`.
    pub const fn rtp_received(&self) -> u64 {
        self.rtp_received as u64
    }

    /// RTP packets lost: expected - received, 0 when duplicates outnumber the losses.
    pub const fn rtp_lost(&self) -> u64 {
        self.rtp_expected().saturating_sub(self.rtp_received as u64)
    }

    /// Joins another view of the same stream (another CPU's, or the userspace relay's) into
    /// this one's RTP state: the union of their ranges, the sum of what they received.
    ///
    /// The two extended numberings start apart (each from its own first packet), so `o`'s is
    /// moved onto this one's by the 16-bit distance between the two highest sequence numbers,
    /// read forwards or backwards by which view saw its last packet later. That is exact while
    /// the two last packets are fewer than 65,436 apart (over twenty minutes of 50 packet/s
    /// audio): a stream hops between CPUs when the sender does (veth, `lo`) and then every CPU
    /// sees it often, and stays on one CPU behind a NIC's receive hashing. A leg that moved
    /// longer ago than that could report loss a multiple of 65,536 off.
    pub(crate) fn merge_rtp(&mut self, o: &LegCounters) {
        if o.rtp_received == 0 {
            return;
        }
        if self.rtp_received == 0 {
            self.rtp_received = o.rtp_received;
            self.rtp_max = o.rtp_max;
            self.rtp_base = o.rtp_base;
            self.rtp_bad = o.rtp_bad;
            return;
        }
        let d = (o.rtp_max as u16).wrapping_sub(self.rtp_max as u16);
        let back = d as i64 - 0x1_0000;
        let shift: i64 = if o.last_seen_ns > self.last_seen_ns {
            if d > u16::MAX - RTP_MAX_MISORDER {
                back
            } else {
                d as i64
            }
        } else if o.last_seen_ns < self.last_seen_ns {
            if d < RTP_MAX_MISORDER { d as i64 } else { back }
        } else {
            d as i16 as i64
        };
        let o_max = self.rtp_max.wrapping_add(shift as u32);
        let o_base = o_max.wrapping_sub(o.rtp_max.wrapping_sub(o.rtp_base));
        if o_max.wrapping_sub(self.rtp_max) as i32 > 0 {
            self.rtp_max = o_max;
            self.rtp_bad = o.rtp_bad;
        }
        if self.rtp_base.wrapping_sub(o_base) as i32 > 0 {
            self.rtp_base = o_base;
        }
        self.rtp_received = self.rtp_received.wrapping_add(o.rtp_received);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    fn leg(seqs: &[u16]) -> LegCounters {
        let mut c = LegCounters::default();
        for s in seqs {
            c.rtp_seen(*s);
        }
        c
    }

    fn run(from: u16, n: u16) -> Vec<u16> {
        (0..n).map(|i| from.wrapping_add(i)).collect()
    }

    /// (what, sequence numbers, expected, lost): longer runs than [`LOSS_CASES`], and those.
    #[test]
    fn loss_follows_rfc_3550() {
        let mut wrap_gap = run(65530, 6);
        wrap_gap.extend([1, 2, 3]); // 0 lost, across the wrap
        let mut resync = run(100, 10);
        resync.extend(run(40000, 10)); // a restarted sender: the first jump packet not counted
        let table: &[(&str, Vec<u16>, u64, u64)] = &[
            ("nothing", Vec::new(), 0, 0),
            ("in order", run(10, 50), 50, 0),
            ("a gap of 3", [1, 2, 6, 7].to_vec(), 7, 3),
            ("reordered", [1, 3, 2, 4].to_vec(), 4, 0),
            ("duplicate hides a loss", [1, 2, 2, 4].to_vec(), 4, 0),
            ("duplicates only", [5, 5, 5].to_vec(), 1, 0),
            ("wrap", run(65500, 100), 100, 0),
            ("wrap with a gap", wrap_gap, 10, 1),
            ("restarted sender", resync, 19, 0),
            ("one stray jump", [1, 2, 30000, 3, 4].to_vec(), 4, 0),
            ("late after a gap", [10, 11, 15, 12].to_vec(), 6, 2),
        ];
        for (what, seqs, expected, lost) in table {
            let c = leg(seqs);
            assert_eq!(
                (c.rtp_expected(), c.rtp_lost()),
                (*expected, *lost),
                "{what}"
            );
        }
        for case in LOSS_CASES {
            let c = leg(case.seqs);
            assert_eq!(
                (c.rtp_expected(), c.rtp_lost()),
                (case.expected, case.lost),
                "{}",
                case.what
            );
        }
    }

    #[test]
    fn only_rtp_is_counted() {
        assert_eq!(rtp_seq([0x80, 0, 0x12, 0x34], 172), Some(0x1234));
        assert_eq!(rtp_seq([0x80, 0x80 | 8, 0, 7], 12), Some(7), "marker, PT 8");
        assert_eq!(rtp_seq([0x80, 0, 0, 1], 11), None, "short");
        assert_eq!(rtp_seq([0x40, 0, 0, 1], 172), None, "version 1");
        for pt in [192u8, 200, 201, 204, 205, 206, 223] {
            assert_eq!(rtp_seq([0x81, pt, 0, 7], 32), None, "RTCP {pt}");
        }
        assert_eq!(
            rtp_seq([0x80, 0x80 | 96, 0, 7], 32),
            Some(7),
            "marker, PT 96"
        );
    }

    /// One stream seen by two CPUs (or a CPU and the userspace relay) in turns.
    #[test]
    fn views_of_one_stream_join() {
        let split = |seqs: &[u16], which: &[bool]| {
            let (mut a, mut b) = (LegCounters::default(), LegCounters::default());
            for (i, (s, on_b)) in seqs.iter().zip(which).enumerate() {
                let c = if *on_b { &mut b } else { &mut a };
                c.rtp_seen(*s);
                c.last_seen_ns = i as u64 + 1;
            }
            let mut ab = a;
            ab.merge(&b);
            let mut ba = b;
            ba.merge(&a);
            assert_eq!(ab.rtp_expected(), ba.rtp_expected(), "order of the merge");
            assert_eq!(ab.rtp_received, ba.rtp_received);
            (ab.rtp_expected(), ab.rtp_lost())
        };
        // Turns of 100: A 1-100, B 101-200, A 201-300, one loss (150).
        let seqs: Vec<u16> = (1..=300).filter(|s| *s != 150).collect();
        let which: Vec<bool> = seqs.iter().map(|s| (s - 1) / 100 == 1).collect();
        assert_eq!(split(&seqs, &which), (300, 1));
        // Alternating packets across a wrap.
        let seqs = run(65000, 2000);
        let which: Vec<bool> = (0..2000).map(|i| i % 2 == 1).collect();
        assert_eq!(split(&seqs, &which), (2000, 0));
        // B saw the start only, 40,000 packets before A's last (over half the sequence space).
        let seqs = run(1000, 40_000);
        let which: Vec<bool> = (0..40_000).map(|i| i < 10).collect();
        assert_eq!(split(&seqs, &which), (40_000, 0));
        // An empty view changes nothing.
        let mut a = leg(&[1, 2, 4]);
        a.merge(&LegCounters::default());
        assert_eq!((a.rtp_expected(), a.rtp_lost()), (4, 1));
    }
}
