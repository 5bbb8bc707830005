//! A panic anywhere in sipd ends the whole process, with one log line saying where.
//!
//! Without this, what a panic does depends on where it happens, and mostly it leaves a
//! half-working daemon: the call core runs on the runtime's main future, so a panic there
//! unwinds out of `main` (exit 101), but a panic in a `tokio::spawn`ed task (SIP over TCP
//! connections, the management API, ban purging) is caught by tokio and only ends that task,
//! and one on a thread (the store writer, the media relay's workers) only ends that thread:
//! a sipd whose store writer died keeps answering calls and logs "CDR lost" for each.
//! Supervisors (systemd's `Restart=always`) only act on a process that exits.
//!
//! Why a hook and not `panic = "abort"` in the release profile: the hook runs before any
//! unwinding or catching (tokio's included), in every build profile (the tests run debug
//! builds), logs through `tracing` with the location so the line lands in the journal with the
//! rest of sipd's log, and exits with a status of our choosing; the profile setting would also
//! apply to the workspace's other binaries (the TUI must unwind to restore the terminal).
//! The hook exits with `_exit`: no destructors or atexit handlers of other threads run, as
//! after a `kill -9`, which the store is built to survive; running them could deadlock on a
//! lock the panicking thread holds.

use std::io::Write as _;
use std::panic::PanicHookInfo;

/// Exit status of a sipd that panicked: `EX_SOFTWARE` of sysexits.h (internal software error).
pub const EXIT_PANIC: i32 = 70;

/// Installs the hook: every panic, on any thread or task, is logged at error level (thread,
/// file:line:column, message; a backtrace when `RUST_BACKTRACE` asks for one) and ends the
/// process with [`EXIT_PANIC`]. Install it once the log subscriber is set up.
pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        report(info);
        // SAFETY: _exit ends the process at once; it touches no memory of ours.
        unsafe { libc::_exit(EXIT_PANIC) }
    }));
}

/// Logs a panic as [`install`]'s hook does (also to stderr directly when no log subscriber
/// is set, so the line is never lost).
pub fn report(info: &PanicHookInfo<'_>) {
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("unnamed");
    let location = info.location().map_or_else(
        || "unknown location".to_string(),
        |l| format!("{}:{}:{}", l.file(), l.line(), l.column()),
    );
    let message = message(info);
    let backtrace = std::backtrace::Backtrace::capture();
    let backtrace = match backtrace.status() {
        std::backtrace::BacktraceStatus::Captured => format!("\n{backtrace}"),
        _ => String::new(),
    };
    if tracing::dispatcher::has_been_set() {
        tracing::error!(
            thread,
            location = %location,
            exit_status = EXIT_PANIC,
            "PANIC, sipd exits so its supervisor restarts it: {message}{backtrace}"
        );
    } else {
        eprintln!(
            "sipd: PANIC in thread {thread} at {location}, exiting with status {EXIT_PANIC}: \
             {message}{backtrace}"
        );
    }
    let _ = std::io::stderr().flush();
}

/// The panic's message: `panic!` with a format string gives a `String`, with a literal a
/// `&str`; anything else (`std::panic::panic_any`) has no text.
fn message(info: &PanicHookInfo<'_>) -> String {
    let p = info.payload();
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-text panic payload)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::Duration;

    use super::EXIT_PANIC;

    /// Set for the copy of this test binary that [`a_panicking_task_ends_the_process`] runs.
    const CHILD: &str = "SIPD_PANIC_HOOK_CHILD";

    /// In the child only: the real hook, then a panic inside a spawned tokio task on a
    /// runtime like `sipd run`'s, which tokio alone would swallow (the `block_on` future
    /// would go on). The parent test checks the process ended.
    #[test]
    fn child_panics_in_a_tokio_task() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
        super::install();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let task = tokio::spawn(async {
                let calls: Vec<u32> = Vec::new();
                // A bug in the core, as it would look.
                let _ = calls[usize::from(std::hint::black_box(3u8))];
            });
            // tokio turns the panic into a JoinError; without the hook we get here.
            let _ = task.await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            println!("STILL RUNNING AFTER THE PANIC");
        });
    }

    /// A panic in a spawned task (swallowed by tokio without the hook) ends the process with
    /// [`EXIT_PANIC`] and one error line naming the file and line of the panic.
    #[test]
    fn a_panicking_task_ends_the_process() {
        if std::env::var_os(CHILD).is_some() {
            return;
        }
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "panic::tests::child_panics_in_a_tokio_task",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(EXIT_PANIC),
            "stdout:\n{stdout}\nstderr:\n{stderr}"
        );
        assert!(!stdout.contains("STILL RUNNING"), "{stdout}");
        let line = stderr
            .lines()
            .find(|l| l.contains("PANIC"))
            .unwrap_or_else(|| panic!("no PANIC line:\n{stderr}"));
        assert!(line.contains("ERROR"), "{line}");
        assert!(line.contains("sipd/src/panic.rs:"), "no location: {line}");
        assert!(line.contains("index out of bounds"), "no message: {line}");
        assert!(line.contains("exit_status=70"), "{line}");
    }
}
