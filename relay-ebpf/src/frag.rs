//! Fragments: the first fragment of a datagram is judged like any packet and its verdict
//! remembered; later fragments, which carry no transport header, follow it
//! (`relay_common::frag` says why and for how long).

use relay_common::frag::{FRAG_DROP, FRAG_PASS, FragKey, FragVerdict};

use crate::{
    diag::{self, Event},
    maps::FRAG_VERDICTS,
    parse::Packet,
};

// `Words::write` on the key's addresses relies on this.
const _: () = assert!(
    core::mem::align_of::<FragKey>() >= 8
        && core::mem::offset_of!(FragKey, src) % 8 == 0
        && core::mem::offset_of!(FragKey, dst) % 8 == 0
);

/// What a later fragment does.
#[derive(Clone, Copy)]
pub enum Follow {
    /// Its first fragment passed.
    Pass,
    /// Its first fragment was dropped.
    Drop,
    /// No verdict holds for its datagram.
    Unknown,
}

#[inline(always)]
fn key(pkt: &Packet) -> FragKey {
    let mut k = FragKey {
        id: pkt.frag_id,
        proto: pkt.frag_proto,
        ..FragKey::default()
    };
    // SAFETY: `FragKey` is 8-aligned with its addresses at offsets 0 and 16 (asserted above).
    unsafe {
        pkt.src.write(&raw mut k.src);
        pkt.dst.write(&raw mut k.dst);
    }
    k
}

/// The remembered verdict of a later fragment's datagram.
#[inline(never)]
pub fn follow(pkt: &Packet, now_ns: u64) -> Follow {
    let Some(v) = FRAG_VERDICTS.get_ptr(key(pkt)) else {
        return Follow::Unknown;
    };
    // SAFETY: a live element of the LRU hash; a concurrent update from another CPU's first
    // fragment of the same datagram can at worst tear this one verdict.
    match unsafe { v.read() }.follow(now_ns) {
        Some(true) => Follow::Pass,
        Some(false) => Follow::Drop,
        None => Follow::Unknown,
    }
}

/// Remembers a first fragment's verdict for its datagram's later fragments.
#[inline(never)]
pub fn remember(pkt: &Packet, pass: bool, now_ns: u64) {
    let v = FragVerdict {
        at_ns: now_ns,
        verdict: if pass { FRAG_PASS } else { FRAG_DROP },
        _pad: 0,
    };
    // An LRU insert only fails on memory pressure; the later fragments are then dropped as
    // unknown (counted), which is the safe side, and said once a second.
    if let Err(e) = FRAG_VERDICTS.insert(key(pkt), v, 0) {
        diag::note(Event::FragVerdictsFull, e.into());
    }
}
