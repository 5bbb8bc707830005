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

/// Moves the calling test thread into a network namespace of its own with loopback up and
/// IPv4 and IPv6 forwarding on, so the program's route lookup (`bpf_fib_lookup`, which
/// declines when forwarding is off) sees the same thing on every host: the host's own
/// `ip_forward` (0 on a fresh Debian, 1 where Docker runs) must not decide the test.
/// A network namespace belongs to the thread, not the process; the namespace goes away when
/// the test's thread ends.
#[allow(dead_code)] // not every test file relays.
pub fn own_netns_with_forwarding() {
    // SAFETY: unshare with CLONE_NEWNET only changes the calling thread's network namespace.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET): {}",
        std::io::Error::last_os_error()
    );
    loopback_up();
    // /proc/sys/net is the calling thread's namespace's.
    for knob in [
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/net/ipv6/conf/all/forwarding",
    ] {
        std::fs::write(knob, "1").unwrap_or_else(|e| panic!("{knob}: {e}"));
    }
}

fn loopback_up() {
    // SAFETY: a plain datagram socket, closed below; it lives in the new namespace.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` names an interface and outlives both calls; SIOC[GS]IFFLAGS read and
    // write only `ifr_ifru.ifru_flags` of it.
    let ok = unsafe {
        libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) == 0 && {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) == 0
        }
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: `fd` is ours and not used after.
    unsafe { libc::close(fd) };
    assert!(ok, "bringing lo up: {err}");
}
