//! Messages held until a store write is durable: the event loop queues a batch's messages
//! behind the write they must not overtake, and a later message of a call that has messages
//! waiting waits too, so each call's messages go out in the order the core produced them.
//! Other calls' messages, and messages of no call (challenges, OPTIONS), pass.
//!
//! Bounded ([`MAX_HELD`]): a disk that stalls while calls keep being answered must not grow
//! memory without end. Past the bound a message goes out at once, counted: signalling goes on
//! without the guarantee rather than stopping.

use std::collections::{HashMap, VecDeque};

use sipd_core::b2bua::CallKey;
use sipd_core::sip::Transmit;

/// Messages held at most.
pub const MAX_HELD: usize = 16_384;

/// The queue (see the module docs).
#[derive(Default)]
pub struct Held {
    queue: VecDeque<(u64, Option<CallKey>, Transmit)>,
    /// Messages waiting per call.
    waiting: HashMap<CallKey, usize>,
    /// Messages sent at once because the queue was full.
    pub overflowed: u64,
}

impl Held {
    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// `t` (of call `call`) back to send now when it waits for nothing (`wait_for` is durable
    /// already and none of its call's messages is queued), else queued behind write
    /// `wait_for`.
    pub fn hold_or_pass(
        &mut self,
        wait_for: u64,
        durable: u64,
        call: Option<CallKey>,
        t: Transmit,
    ) -> Option<Transmit> {
        let behind = call.is_some_and(|c| self.waiting.contains_key(&c));
        if wait_for <= durable && !behind {
            return Some(t);
        }
        if self.queue.len() >= MAX_HELD {
            self.overflowed += 1;
            if self.overflowed.is_power_of_two() {
                tracing::warn!(
                    overflowed = self.overflowed,
                    "held-message queue full (the store is not keeping up): sent without waiting for the disk"
                );
            }
            return Some(t);
        }
        // Sequence numbers in the queue never go down, so it is released from the front.
        let after = self.queue.back().map_or(0, |(s, _, _)| *s);
        if let Some(c) = call {
            *self.waiting.entry(c).or_default() += 1;
        }
        self.queue.push_back((wait_for.max(after), call, t));
        None
    }

    /// The messages whose write is durable now, in order.
    pub fn release(&mut self, durable: u64) -> Vec<Transmit> {
        let mut out = Vec::new();
        while self.queue.front().is_some_and(|(s, _, _)| *s <= durable) {
            if let Some((_, call, t)) = self.queue.pop_front() {
                if let Some(c) = call
                    && let Some(n) = self.waiting.get_mut(&c)
                {
                    *n -= 1;
                    if *n == 0 {
                        self.waiting.remove(&c);
                    }
                }
                out.push(t);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sipd_core::sip::{Peer, Proto};

    fn t(n: u8) -> Transmit {
        let a = "127.0.0.1:5060".parse().unwrap();
        Transmit {
            peer: Peer {
                proto: Proto::Udp,
                remote: a,
                local: a,
                conn: None,
            },
            data: vec![n],
            token: 0,
        }
    }

    /// A 200 waits for its CDR; a later message of the same call goes after it, one of
    /// another call (or of none) passes; both held go once the CDR is durable.
    #[test]
    fn a_calls_messages_wait_for_its_write_and_keep_their_order() {
        let mut h = Held::default();
        assert!(
            h.hold_or_pass(0, 0, Some(1), t(1)).is_some(),
            "nothing to wait for"
        );
        assert!(h.hold_or_pass(3, 2, Some(1), t(2)).is_none());
        assert!(
            h.hold_or_pass(0, 2, Some(1), t(3)).is_none(),
            "must not overtake"
        );
        assert!(
            h.hold_or_pass(0, 2, Some(2), t(4)).is_some(),
            "another call passes"
        );
        assert!(
            h.hold_or_pass(0, 2, None, t(5)).is_some(),
            "no call: passes"
        );
        assert!(h.release(2).is_empty());
        let out: Vec<u8> = h.release(3).into_iter().map(|t| t.data[0]).collect();
        assert_eq!(out, [2, 3]);
        assert!(h.is_empty());
        assert!(
            h.hold_or_pass(3, 3, Some(1), t(6)).is_some(),
            "already durable"
        );
    }

    /// A stalled disk never grows the queue past its bound: messages then go out unheld.
    #[test]
    fn the_queue_is_bounded() {
        let mut h = Held::default();
        for i in 0..MAX_HELD as u64 + 10 {
            let _ = h.hold_or_pass(i + 10, 0, Some(i), t(0));
        }
        assert_eq!(h.len(), MAX_HELD);
        assert_eq!(h.overflowed, 10);
    }
}
