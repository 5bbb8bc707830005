//! The XDP program's log lines (aya-log) forwarded into `tracing`.
//!
//! The program logs only rare events (the first packet of a rare kind, a table that refused
//! an insert, a state that should not happen; see `relay-ebpf/src/diag.rs`) into aya-log's
//! ring buffer. A small reader thread, like the guard events', drains it into `tracing`
//! events with target [`TARGET`], so `RUST_LOG=relay_ebpf=warn` and the daemon's usual
//! filters apply to them. The `log` crate is only the interface aya-log speaks: records go
//! straight to `tracing`, whether or not a `log` bridge is installed.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
};

use aya::Ebpf;
use aya_log::EbpfLogger;
use tracing::{debug, warn};

use crate::sys::poll_readable;

/// The `tracing` target of every line the XDP program logs.
pub const TARGET: &str = "relay_ebpf";

/// Turns aya-log's records into `tracing` events under [`TARGET`], with the program's module
/// and line as fields.
struct ToTracing;

impl log::Log for ToTracing {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        // `tracing`'s filters decide.
        true
    }

    fn log(&self, r: &log::Record<'_>) {
        let module = r.module_path().unwrap_or_default();
        let line = r.line().unwrap_or_default();
        let msg = r.args();
        match r.level() {
            log::Level::Error => tracing::error!(target: "relay_ebpf", module, line, "{msg}"),
            log::Level::Warn => tracing::warn!(target: "relay_ebpf", module, line, "{msg}"),
            log::Level::Info => tracing::info!(target: "relay_ebpf", module, line, "{msg}"),
            log::Level::Debug => tracing::debug!(target: "relay_ebpf", module, line, "{msg}"),
            log::Level::Trace => tracing::trace!(target: "relay_ebpf", module, line, "{msg}"),
        }
    }

    fn flush(&self) {}
}

/// Forwards the program's log lines while it lives; dropping it stops the reader thread.
pub struct KernelLog {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for KernelLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // At most one poll interval: the thread checks the flag between polls.
            let _ = t.join();
        }
    }
}

/// How long the reader waits for a line before it looks at the stop flag again.
const POLL_MS: i32 = 250;

/// Takes the program's log ring buffer out of `ebpf` and starts forwarding it. `None` (said
/// at debug level) when the object logs nothing (built without its `log` feature) or the
/// reader cannot start (said as a warning): the data plane works the same without it.
pub fn forward(ebpf: &mut Ebpf) -> Option<KernelLog> {
    let mut logger = match EbpfLogger::init_with_logger(ebpf, ToTracing) {
        Ok(l) => l,
        Err(e) => {
            debug!(error = %e, "the XDP program has no log ring buffer; no kernel log lines");
            return None;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let spawned = thread::Builder::new()
        .name("xdp-log".into())
        .spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                if let Err(e) = poll_readable(std::os::fd::AsFd::as_fd(&logger), POLL_MS) {
                    warn!(error = %e, "XDP log ring: poll failed, kernel log lines stop");
                    break;
                }
                logger.flush();
            }
        });
    match spawned {
        Ok(t) => Some(KernelLog {
            stop,
            thread: Some(t),
        }),
        Err(e) => {
            warn!(error = %e, "could not start the XDP log reader; kernel log lines are not shown");
            None
        }
    }
}
