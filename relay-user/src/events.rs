//! Guard events (sampled SIP guard drops) for the IDS: from the kernel ring buffer via a small
//! reader thread, or straight from the userspace guard, into one channel.

use std::{os::fd::AsFd, thread};

use aya::maps::{MapData, RingBuf};
use relay_common::guard::GuardEvent;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::{sys::poll_readable, types::GuardEventInfo};

/// The stream of guard events. Use `recv().await` from async code, `blocking_recv()` from a
/// thread, or `try_recv()` to poll.
pub struct GuardEvents {
    rx: mpsc::Receiver<GuardEventInfo>,
}

impl GuardEvents {
    pub(crate) fn new(rx: mpsc::Receiver<GuardEventInfo>) -> Self {
        GuardEvents { rx }
    }

    /// Next event; `None` once the data plane is gone.
    pub async fn recv(&mut self) -> Option<GuardEventInfo> {
        self.rx.recv().await
    }

    /// Next event, blocking the thread; `None` once the data plane is gone. Not from async code.
    pub fn blocking_recv(&mut self) -> Option<GuardEventInfo> {
        self.rx.blocking_recv()
    }

    /// An event if one is waiting; `None` otherwise (or once the data plane is gone).
    pub fn try_recv(&mut self) -> Option<GuardEventInfo> {
        self.rx.try_recv().ok()
    }
}

/// Decodes one ring record; a short record (a layout mismatch) is skipped, never misread.
pub(crate) fn decode(bytes: &[u8]) -> Option<GuardEvent> {
    if bytes.len() < size_of::<GuardEvent>() {
        return None;
    }
    // SAFETY: GuardEvent is Pod (repr(C), no padding, any bit pattern valid) and the slice is
    // at least that long; read_unaligned copes with the ring's 8-byte alignment or less.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<GuardEvent>()) })
}

/// Polls the ring buffer and forwards records until the receiving side is dropped.
pub(crate) fn spawn_ring_reader(mut ring: RingBuf<MapData>, tx: mpsc::Sender<GuardEventInfo>) {
    let r = thread::Builder::new()
        .name("guard-events".into())
        .spawn(move || {
            loop {
                if tx.is_closed() {
                    break;
                }
                match poll_readable(ring.as_fd(), 250) {
                    Ok(_) => {}
                    Err(e) => {
                        warn!(error = %e, "guard event ring: poll failed, reader stops");
                        break;
                    }
                }
                while let Some(item) = ring.next() {
                    let Some(ev) = decode(&item) else {
                        debug!(len = item.len(), "guard event ring: short record skipped");
                        continue;
                    };
                    // A full queue means nobody is reading fast enough: drop, like the ring.
                    if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(ev.into()) {
                        return;
                    }
                }
            }
        });
    if let Err(e) = r {
        warn!(error = %e, "could not start the guard event reader; events are not delivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_rejects_short_records() {
        assert!(decode(&[0u8; 39]).is_none());
        let mut b = [0u8; 40];
        b[10] = 0xff;
        b[11] = 0xff;
        b[12..16].copy_from_slice(&[192, 0, 2, 1]);
        b[24] = 2; // kind, little-endian
        let e = decode(&b).unwrap();
        assert_eq!(e.kind, 2);
        assert_eq!(e.source.as_v4(), Some([192, 0, 2, 1]));
    }
}
