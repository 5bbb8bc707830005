//! The host's own IP addresses. A relay socket bound to the unspecified address receives on
//! every one of them, so each is "the relay itself" for the loop checks (SDP destinations and
//! the userspace relay). Read once at start: an address added later is not known.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One address of one interface of this host (network namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfAddr {
    /// The interface's name (`eth0`, `lo`, ...).
    pub iface: String,
    /// One of its IPv4 or IPv6 addresses.
    pub ip: IpAddr,
}

/// Every address on every interface of this host (network namespace), loopback included.
pub fn addresses() -> io::Result<Vec<IpAddr>> {
    let mut out: Vec<IpAddr> = interface_addresses()?.into_iter().map(|a| a.ip).collect();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Every (interface, address) pair of this host, loopback included, in the kernel's order.
pub fn interface_addresses() -> io::Result<Vec<IfAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list it allocated to `head`; freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        // SAFETY: ifa_addr is null or a sockaddr of the family it names.
        let ip = unsafe { sockaddr_ip(ifa.ifa_addr) };
        if let Some(ip) = ip
            && !ifa.ifa_name.is_null()
        {
            // SAFETY: a non-null ifa_name is a C string owned by the list, not yet freed.
            let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
            out.push(IfAddr {
                iface: name.to_string_lossy().into_owned(),
                ip,
            });
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The IP address of an AF_INET / AF_INET6 sockaddr; `None` for others (AF_PACKET, ...) and
/// for a null pointer (an interface without an address).
///
/// # Safety
/// `sa` is null or points to a sockaddr whose `sa_family` tells its real type.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: non-null and, per the contract, a sockaddr of the family it names.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET => {
                let sin = &*(sa as *const libc::sockaddr_in);
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))))
            }
            libc::AF_INET6 => {
                let sin6 = &*(sa as *const libc::sockaddr_in6);
                Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_is_among_the_host_addresses() {
        let all = super::addresses().unwrap();
        assert!(all.contains(&"127.0.0.1".parse().unwrap()), "{all:?}");
    }
}
