//! Attacks on a running appliance (`sipd run`) in network namespaces, on the XDP and the
//! userspace data plane: each test is a threat-model promise (`shared/DESIGN.md`) that fails
//! if the promise breaks. One module per kind of attack; `sbc` is the set-up every sipd
//! scenario shares.
//!
//! The scenarios share the machine's two cores, so they run one at a time (a lock).

#[path = "attacks_media/hijack.rs"]
mod hijack;
mod sbc;

use sbc::serial;
