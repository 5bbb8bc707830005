//! The flood generator: raw Ethernet frames written with `sendmmsg` on an `AF_PACKET` socket
//! bound to the attacker's interface (`PACKET_QDISC_BYPASS`: no qdisc, no routing, no
//! netfilter on the sending side), 64 frames per call, paced to the asked rate by batch
//! (rate 0: as fast as it goes). Bounded twice: `rate × duration` frames at most, and the
//! duration (plus 1 s) on the clock, whichever comes first; a stop flag ends it earlier.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::packet::{Link, Template};

const BATCH: usize = 64;

/// What one flood did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sent {
    /// Frames the kernel took.
    pub packets: u64,
    /// `sendmmsg` calls that failed (ENOBUFS and the like: the link was full).
    pub errors: u64,
    pub elapsed_s: f64,
    /// packets / elapsed.
    pub pps: f64,
}

/// Floods `link` with `template` frames from `sources` (one after another) at `rate` frames/s
/// (0: unpaced) for `duration`. The socket is made in the attacker's namespace (`enter`).
pub fn flood(
    socket: &OwnedFd,
    link: &Link,
    template: &Template,
    sources: &[Ipv4Addr],
    rate: u32,
    duration: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<Sent> {
    if sources.is_empty() {
        bail!("no sources to flood from");
    }
    let budget: u64 = if rate == 0 {
        u64::MAX
    } else {
        (rate as f64 * duration.as_secs_f64()).round() as u64
    };
    let len = template.size();
    // About one batch per 10 ms at low rates, so no source bursts more than it must.
    let batch = if rate == 0 {
        BATCH
    } else {
        (rate as usize / 100).clamp(1, BATCH)
    };
    let mut bufs = vec![vec![0u8; len]; batch];
    // SAFETY: zeroed sockaddr_ll is valid; the fields set are the ones AF_PACKET reads.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = (libc::ETH_P_IP as u16).to_be();
    to.sll_ifindex = link.ifindex as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&link.dst_mac);
    let start = Instant::now();
    let end = start + duration + Duration::from_secs(1);
    let mut n: u64 = 0;
    let mut errors = 0u64;
    while n < budget && !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= end || (rate > 0 && now.duration_since(start) >= duration) {
            break;
        }
        if rate > 0 {
            // Ahead of the schedule: wait for this batch's time.
            let due = start + Duration::from_secs_f64(n as f64 / rate as f64);
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let count = (budget - n).min(batch as u64) as usize;
        for (i, b) in bufs.iter_mut().take(count).enumerate() {
            let k = n + i as u64;
            template.write(b, k, sources[(k % sources.len() as u64) as usize]);
        }
        let mut iov: Vec<libc::iovec> = bufs[..count]
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: zeroed mmsghdr is valid; each points at one iovec and at `to`, which outlive
        // the call.
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m.msg_hdr.msg_name = (&raw mut to).cast();
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                m
            })
            .collect();
        // SAFETY: msgs holds `count` valid headers.
        let r = unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), count as u32, 0) };
        if r < 0 {
            errors += 1;
            // The link's queue is full: let it drain rather than spin.
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        n += r as u64;
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    Ok(Sent {
        packets: n,
        errors,
        elapsed_s,
        pps: n as f64 / elapsed_s.max(1e-9),
    })
}

/// An `AF_PACKET` raw socket bound to `ifindex`, made in the calling thread's namespace.
pub fn packet_socket(ifindex: u32) -> anyhow::Result<OwnedFd> {
    // SAFETY: plain socket call; the fd is owned right after.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            (libc::ETH_P_IP as u16).to_be() as i32,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("AF_PACKET socket (root?)");
    }
    // SAFETY: fd is a fresh socket we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: option value is a c_int that lives through the call.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        );
    }
    let sndbuf: libc::c_int = 8 << 20;
    // SAFETY: as above.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&raw const sndbuf).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        );
    }
    // SAFETY: zeroed sockaddr_ll is valid; bind reads the fields set.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_IP as u16).to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: sll is a valid sockaddr_ll of the given size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("bind AF_PACKET socket");
    }
    Ok(fd)
}

/// `count` addresses from `base` up (skipping .0 and .255 of each /24).
pub fn sources(base: Ipv4Addr, count: usize) -> Vec<Ipv4Addr> {
    let b = u32::from(base);
    (0..)
        .map(|i| Ipv4Addr::from(b + i))
        .filter(|a| !matches!(a.octets()[3], 0 | 255))
        .take(count)
        .collect()
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn sources_skip_network_and_broadcast() {
        let s = sources(Ipv4Addr::new(10, 201, 0, 0), 300);
        assert_eq!(s.len(), 300);
        assert_eq!(s[0], Ipv4Addr::new(10, 201, 0, 1));
        assert_eq!(s[254], Ipv4Addr::new(10, 201, 1, 1));
        assert!(s.iter().all(|a| a.octets()[3] != 255));
    }
}
