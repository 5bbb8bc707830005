//! Raw TCP connects for attack tests: many half-open connections from a chosen source address,
//! without a thread or a blocking connect each.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Starts a non-blocking TCP connect from `from` (port chosen by the kernel) to `to` (IPv4):
/// the SYN is on its way when this returns. Dropping the fd closes it.
pub fn connect_start(from: IpAddr, to: SocketAddr) -> io::Result<OwnedFd> {
    let (IpAddr::V4(f), IpAddr::V4(t)) = (from, to.ip()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "IPv4 only"));
    };
    let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket owned by the OwnedFd at once; addresses that live across the calls.
    unsafe {
        let raw = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(raw);
        let (local, remote) = (sin(f, 0), sin(t, to.port()));
        if libc::bind(raw, (&raw const local).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::connect(raw, (&raw const remote).cast(), len) != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        Ok(fd)
    }
}

/// Whether the connect started on `fd` completed without error within `timeout_ms`.
pub fn connected_within(fd: &OwnedFd, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let mut err: libc::c_int = 0;
    let mut elen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: one valid pollfd; SO_ERROR written into a c_int of the length given.
    unsafe {
        libc::poll(&raw mut p, 1, timeout_ms) == 1
            && libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&raw mut err).cast(),
                &raw mut elen,
            ) == 0
            && err == 0
    }
}
