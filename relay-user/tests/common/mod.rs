//! What relay-user's integration tests share.

use relay_user::{loader, object::ebpf_object};

/// True when this test can run (root and a built XDP object); otherwise says why and, under
/// CI, fails.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let why = if !root {
        "needs root (CAP_BPF + CAP_NET_ADMIN)"
    } else if ebpf_object().is_empty() {
        "the XDP object was not built (AYA_BUILD_SKIP=1)"
    } else {
        return true;
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: privileged test cannot run under CI: {why}");
    }
    // Straight to stderr: libtest hides eprintln! of passing tests, and a skip must be seen.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("SKIPPED {test}: {why}\n").as_bytes(),
    );
    false
}

/// A unique pin instance, removed (links and maps) when dropped.
#[allow(dead_code)] // kernel_log.rs, which shares this module, keeps its own.
pub struct Instance(pub String);

#[allow(dead_code)]
impl Instance {
    /// The instance `relay-user-test-<pid>-<tag>`, cleared of anything a killed run left.
    pub fn new(tag: &str) -> Self {
        let name = format!("relay-user-test-{}-{tag}", std::process::id());
        let _ = loader::detach(&name, &[]);
        Instance(name)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Err(e) = loader::detach(&self.0, &[]) {
            eprintln!("cleanup of {}: {e}", self.0);
        }
    }
}
