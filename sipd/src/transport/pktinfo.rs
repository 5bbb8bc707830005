//! Where each datagram on a wildcard UDP socket arrived: the local address it was sent to and
//! the interface it came in on (`IP_PKTINFO`, `IPV6_RECVPKTINFO`), so the firewall knows
//! whether XDP saw it. One `recvmsg` instead of one `recvfrom`: the same system call with a
//! 64-byte control buffer the kernel fills, parsed in a few instructions: about 200 ns more per
//! datagram than `recvfrom` on loopback (`transport::tests::pktinfo_cost`), small next to parsing and
//! handling the SIP message it carries.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::Arrival;

/// Asks the kernel for each datagram's destination address and interface.
pub(super) fn enable(sock: &impl AsRawFd, v6: bool) -> io::Result<()> {
    let (level, opt) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    };
    let on: libc::c_int = 1;
    // SAFETY: `sock` owns an open socket for the duration of the call; the value is a c_int
    // of the length passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            opt,
            std::ptr::from_ref(&on).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One datagram into `buf`: its length, sender and where it arrived (`None` if the kernel
/// gave no packet info, which it always does once [`enable`]d).
pub(super) async fn recv(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<Arrival>)> {
    let fd = sock.as_raw_fd();
    sock.async_io(Interest::READABLE, || recv_now(fd, buf))
        .await
}

/// Room for one `cmsghdr` and one `in6_pktinfo` (the larger of the two), 8-byte aligned.
type Control = [u64; 8];

/// One datagram, now (`WouldBlock` when none is queued).
pub(super) fn recv_now(
    fd: RawFd,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<Arrival>)> {
    // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
    let mut from: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut control: Control = [0; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = std::ptr::from_mut(&mut from).cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of::<Control>() as _;
    // SAFETY: every pointer in `msg` points to a live buffer of the length given, owned by
    // this frame (or `buf`, borrowed mutably) for the duration of the call.
    let n = unsafe { libc::recvmsg(fd, &raw mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let remote = socket_addr(&from).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "datagram from a non-IP address")
    })?;
    // SAFETY: `msg` was filled by recvmsg; its control pointer and length describe the part
    // of `control` the kernel wrote.
    let arrival = unsafe { arrival(&msg) };
    Ok((n as usize, remote, arrival))
}

/// The packet info among the control messages.
///
/// # Safety
/// `msg` was filled by a successful `recvmsg` and its control buffer is still alive.
unsafe fn arrival(msg: &libc::msghdr) -> Option<Arrival> {
    // SAFETY: per the contract, the CMSG_* walk stays within the control buffer the kernel
    // wrote; the payloads are read unaligned as the type their level and type name.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let p: libc::in_pktinfo = std::ptr::read_unaligned(data.cast());
                    return Some(Arrival {
                        local: IpAddr::V4(Ipv4Addr::from(u32::from_be(p.ipi_addr.s_addr))),
                        ifindex: u32::try_from(p.ipi_ifindex).ok(),
                    });
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let p: libc::in6_pktinfo = std::ptr::read_unaligned(data.cast());
                    return Some(Arrival {
                        local: IpAddr::V6(Ipv6Addr::from(p.ipi6_addr.s6_addr)),
                        ifindex: Some(p.ipi6_ifindex),
                    });
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

fn socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read_unaligned(std::ptr::from_ref(s).cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read_unaligned(std::ptr::from_ref(s).cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}
