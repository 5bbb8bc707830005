//! Attacks on a running appliance (`sipd run`) in network namespaces, on the XDP and the
//! userspace data plane: each test is a threat-model promise (`shared/DESIGN.md`) that fails
//! if the promise breaks. One module per kind of attack; `sbc` is the shared set-up.
//!
//! The scenarios share the machine's two cores, so they run one at a time (a lock).

use std::sync::{Mutex, MutexGuard};

#[path = "attacks_media/hijack.rs"]
mod hijack;
#[path = "attacks_media/sbc.rs"]
mod sbc;

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}
