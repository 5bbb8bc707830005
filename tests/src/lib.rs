//! Shared helpers for the integration scenarios (namespaces, peers, privilege checks).

// Every public item says what it is for (the repository explains itself).
#![warn(missing_docs)]

pub mod bins;
pub mod hep;
pub mod kamailio;
pub mod netns;
pub mod rtp;
pub mod sip;
pub mod tcp;
pub mod totp;
#[cfg(feature = "xdp")]
pub mod xdp;

/// A command line for showing: `VAR=value program arg arg`, arguments with spaces quoted.
pub fn show_command(cmd: &std::process::Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            s.push_str(&format!("{}={} ", k.to_string_lossy(), v.to_string_lossy()));
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(' ') {
            s.push_str(&format!(" '{a}'"));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

/// The last `max` bytes of `s` (fewer, to start on a character), for long outputs in messages.
pub fn tail(s: &str, max: usize) -> &str {
    let mut i = s.len().saturating_sub(max);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// Whether this process may load XDP programs and create network namespaces.
///
/// Privileged tests call [`require_privileged!`]: outside CI they skip with a message when this
/// is false; under CI (`CI=true`) they fail, because a skipped privileged test hides breakage.
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && std::path::Path::new("/sys/fs/bpf").exists()
}

/// Whether the tests run under CI (`CI=true` or `CI=1`), where a missing privilege or tool
/// fails a test instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips (returns from) the calling test when not privileged, or panics under CI.
#[macro_export]
macro_rules! require_privileged {
    () => {
        if !$crate::privileged() {
            if $crate::in_ci() {
                panic!("privileged test cannot run under CI=true: need root with CAP_BPF, CAP_NET_ADMIN and /sys/fs/bpf");
            }
            // Straight to the process's stderr: libtest captures eprintln! of passing tests,
            // and a skip nobody sees is a silent pass.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("SKIPPED {}: needs root (CAP_BPF, CAP_NET_ADMIN); run `cargo xtask test`\n", module_path!()).as_bytes(),
            );
            return;
        }
    };
}

/// Skips (returns from) the calling test when sipp is missing, or panics under CI.
#[macro_export]
macro_rules! require_sipp {
    () => {
        if !$crate::sip::sipp_available() {
            assert!(
                !$crate::in_ci(),
                "sipp is not installed (apt-get install sip-tester)"
            );
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("SKIPPED {}: sipp not installed\n", module_path!()).as_bytes(),
            );
            return;
        }
    };
}
