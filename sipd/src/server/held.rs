//! Messages held until a store write is durable: the event loop queues a batch's messages
//! behind the write they must not overtake, and everything queued after them waits too, so
//! the order on the wire is the order the core produced.

use std::collections::VecDeque;

use sipd_core::sip::Transmit;

/// The queue (see the module docs).
#[derive(Default)]
pub struct Held {
    queue: VecDeque<(u64, Transmit)>,
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

    /// `t` back to send now when it waits for nothing (`wait_for` is durable already and
    /// nothing is queued before it), else queued behind write `wait_for`.
    pub fn hold_or_pass(&mut self, wait_for: u64, durable: u64, t: Transmit) -> Option<Transmit> {
        if self.queue.is_empty() && wait_for <= durable {
            return Some(t);
        }
        let after = self.queue.back().map_or(0, |(s, _)| *s);
        self.queue.push_back((wait_for.max(after), t));
        None
    }

    /// The messages whose write is durable now, in order.
    pub fn release(&mut self, durable: u64) -> Vec<Transmit> {
        let mut out = Vec::new();
        while self.queue.front().is_some_and(|(s, _)| *s <= durable) {
            if let Some((_, t)) = self.queue.pop_front() {
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

    /// A 200 waits for its CDR; a message produced later (for another call, needing no
    /// write) still goes after it, and both go once the CDR is durable.
    #[test]
    fn messages_wait_for_their_write_and_keep_their_order() {
        let mut h = Held::default();
        assert!(h.hold_or_pass(0, 0, t(1)).is_some(), "nothing to wait for");
        assert!(h.hold_or_pass(3, 2, t(2)).is_none());
        assert!(h.hold_or_pass(0, 2, t(3)).is_none(), "must not overtake");
        assert!(h.release(2).is_empty());
        let out: Vec<u8> = h.release(3).into_iter().map(|t| t.data[0]).collect();
        assert_eq!(out, [2, 3]);
        assert!(h.is_empty());
        assert!(h.hold_or_pass(3, 3, t(4)).is_some(), "already durable");
    }
}
