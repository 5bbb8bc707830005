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

/// Logs a panic as [`install`]'s hook does (to stderr directly when no log subscriber is set
/// or it filters errors out, so the line is never lost).
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
    // Filtered out (RUST_LOG=off, or no subscriber yet): straight to stderr, never lost.
    if tracing::dispatcher::has_been_set() && tracing::enabled!(tracing::Level::ERROR) {
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

    /// Set for the copy of this test binary that the tests below run: where to panic
    /// (`task`, `thread`) and whether the log filter drops errors (`task-log-off`).
    const CHILD: &str = "SIPD_PANIC_HOOK_CHILD";

    /// In the child only: the real hook, then a panic inside a spawned tokio task (or a named
    /// thread, as the store writer is) on a runtime like `sipd run`'s, which tokio or std
    /// alone would swallow (the `block_on` future would go on). The parent checks the
    /// process ended.
    #[test]
    fn child_panics() {
        let Some(mode) = std::env::var_os(CHILD) else {
            return;
        };
        let level = if mode == "task-log-off" {
            tracing::level_filters::LevelFilter::OFF
        } else {
            tracing::level_filters::LevelFilter::INFO
        };
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_max_level(level)
            .init();
        super::install();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // A bug in the core, as it would look.
            let bug = || {
                let calls: Vec<u32> = Vec::new();
                let _ = calls[usize::from(std::hint::black_box(3u8))];
            };
            if mode == "thread" {
                let t = std::thread::Builder::new()
                    .name("store-writer".into())
                    .spawn(bug)
                    .unwrap();
                // std turns the panic into an Err; without the hook we get here.
                let _ = t.join();
            } else {
                // tokio turns the panic into a JoinError; without the hook we get here.
                let _ = tokio::spawn(async move { bug() }).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            println!("STILL RUNNING AFTER THE PANIC");
        });
    }

    /// Runs [`child_panics`] in a child process; asserts it ended with [`EXIT_PANIC`] and
    /// did not go on, and returns the line of its stderr that reports the panic.
    fn panic_line(mode: &str) -> String {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "panic::tests::child_panics",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, mode)
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(EXIT_PANIC),
            "{mode}: stdout:\n{stdout}\nstderr:\n{stderr}"
        );
        assert!(!stdout.contains("STILL RUNNING"), "{mode}: {stdout}");
        let line = stderr
            .lines()
            .find(|l| l.contains("PANIC"))
            .unwrap_or_else(|| panic!("{mode}: no PANIC line:\n{stderr}"));
        assert!(line.contains("sipd/src/panic.rs:"), "no location: {line}");
        assert!(line.contains("index out of bounds"), "no message: {line}");
        line.to_string()
    }

    /// A panic in a spawned task (swallowed by tokio without the hook) ends the process with
    /// [`EXIT_PANIC`] and one error line naming the file and line of the panic.
    #[test]
    fn a_panicking_task_ends_the_process() {
        if std::env::var_os(CHILD).is_some() {
            return;
        }
        let line = panic_line("task");
        assert!(line.contains("ERROR"), "{line}");
        assert!(line.contains("exit_status=70"), "{line}");
    }

    /// A panic on a thread of its own (the store writer, the relay's workers), which only
    /// ended that thread without the hook, ends the process and names the thread.
    #[test]
    fn a_panicking_thread_ends_the_process() {
        if std::env::var_os(CHILD).is_some() {
            return;
        }
        let line = panic_line("thread");
        assert!(line.contains("thread=\"store-writer\""), "{line}");
    }

    /// With errors filtered out of the log (`RUST_LOG=off`), the line still reaches stderr.
    #[test]
    fn a_panic_is_reported_with_the_log_off() {
        if std::env::var_os(CHILD).is_some() {
            return;
        }
        let line = panic_line("task-log-off");
        assert!(line.starts_with("sipd: PANIC in thread"), "{line}");
        assert!(line.contains("exiting with status 70"), "{line}");
    }
}
