//! File descriptors: sipd raises its open-file limit at start (soft to hard, which needs no
//! privilege) and keeps a reserve that SIP over TCP may not take, so that relay ports (two
//! sockets per RTP/RTCP pair in userspace mode), store files and the management API still get
//! descriptors when a flood of TCP connections arrives. What it could not get is logged.

use tracing::{info, warn};

/// The open-file limit in force after trying to raise it; `None` when unlimited or unknown.
pub fn raise_nofile() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        let e = std::io::Error::last_os_error();
        warn!(error = %e, "cannot read the open-file limit; no descriptor reserve kept");
        return None;
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const want) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        } else {
            let e = std::io::Error::last_os_error();
            warn!(soft = before, hard = lim.rlim_max, error = %e,
                "cannot raise the open-file limit to its hard limit");
        }
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        info!("open-file limit: unlimited");
        return None;
    }
    let limit: u64 = lim.rlim_cur;
    if lim.rlim_cur == before && lim.rlim_cur == lim.rlim_max {
        info!(limit, "open-file limit (already at its hard limit)");
    } else {
        info!(limit, was = before, "open-file limit raised");
    }
    Some(limit)
}

/// Descriptor numbers from which SIP over TCP refuses connections: `limit - reserve`. A
/// limit too small to leave a useful share after the reserve is logged: SIP over TCP then
/// gets a quarter of it, so it still works, and media keeps the rest.
pub fn tcp_ceiling(limit: Option<u64>, reserve: usize) -> Option<u64> {
    let limit = limit?;
    let reserve = u64::try_from(reserve).unwrap_or(u64::MAX);
    if limit < reserve.saturating_mul(2) {
        let ceiling = limit / 4;
        warn!(
            limit,
            reserve,
            tcp_ceiling = ceiling,
            "open-file limit below twice sip.fd_reserve: SIP over TCP may use descriptors below {ceiling} only; raise the hard limit (LimitNOFILE=)"
        );
        return Some(ceiling);
    }
    Some(limit - reserve)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_keeps_the_reserve() {
        assert_eq!(tcp_ceiling(None, 256), None);
        assert_eq!(tcp_ceiling(Some(1024), 256), Some(768));
        assert_eq!(tcp_ceiling(Some(300), 256), Some(75));
        assert!(raise_nofile().is_none_or(|l| l >= 16));
    }
}
