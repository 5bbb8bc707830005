//! Which plane firewalls traffic to each of sipd's addresses. XDP only sees packets on the
//! interfaces it is attached to, so sipd attaches it to every interface carrying a SIP,
//! media or management address (`0.0.0.0`/`::`: every interface with an address); what XDP
//! does not cover (loopback under native XDP, an interface added after start, one where
//! attaching failed), sipd's userspace firewall checks, per SIP message and per management
//! connection, against the copy of the kernel's tables; what neither can (a host service
//! sipd does not serve, such as SSH) is reported, never left a silent gap. The host's
//! interfaces are read again every few seconds ([`Coverage::refreshed`]), so an interface or
//! address added later is covered (and reported) too.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::net::IpAddr;

use serde::Serialize;

pub use crate::transport::Arrival;
pub use relay_user::host::IfAddr;

/// This host's interfaces at one moment: their addresses and their indexes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Host {
    /// Every interface address, loopback included.
    pub addrs: Vec<IfAddr>,
    /// Every interface with an address, by name: its index.
    pub index: BTreeMap<String, u32>,
}

impl Host {
    /// Reads the host's (network namespace's) interfaces now.
    pub fn read() -> io::Result<Host> {
        let addrs = relay_user::host::interface_addresses()?;
        let mut index = BTreeMap::new();
        for a in &addrs {
            if !index.contains_key(&a.iface)
                && let Some(i) = if_index(&a.iface)
            {
                index.insert(a.iface.clone(), i);
            }
        }
        Ok(Host { addrs, index })
    }
}

/// The interface's index, if it (still) exists.
fn if_index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a NUL-terminated string alive for the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// The interfaces packets to `addr` arrive on: for the unspecified address every interface
/// with an address (a dual-stack `::` socket receives IPv4 too), for a loopback address the
/// loopback interfaces (all of 127/8 is local), else those holding it.
pub fn interfaces_for(addr: IpAddr, host: &[IfAddr]) -> Vec<String> {
    let mut out: Vec<String> = host
        .iter()
        .filter(|a| {
            addr.is_unspecified()
                || a.ip == addr
                || (addr.is_loopback() && a.ip.is_loopback() && a.ip.is_ipv4() == addr.is_ipv4())
        })
        .map(|a| a.iface.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The interfaces XDP must be attached to: the configured ones, then every interface one of
/// `listens` arrives on, in order, without repeats.
pub fn attach_list(configured: &[String], listens: &[IpAddr], host: &[IfAddr]) -> Vec<String> {
    let mut out = configured.to_vec();
    for a in listens {
        for i in interfaces_for(*a, host) {
            if !out.contains(&i) {
                out.push(i);
            }
        }
    }
    out
}

/// Which plane firewalls one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Plane {
    /// The XDP program is on every interface the address is reached through.
    Xdp,
    /// sipd's userspace check runs on every message (SIP), connection (management) or
    /// packet (media) that XDP did not see.
    Userspace,
    /// Nothing: a service sipd does not serve itself, on an interface without XDP.
    None,
}

impl Plane {
    /// The plane's name in status, `/metrics` and alerts.
    pub fn name(self) -> &'static str {
        match self {
            Plane::Xdp => "xdp",
            Plane::Userspace => "userspace",
            Plane::None => "none",
        }
    }
}

/// One listening address and what firewalls it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Covered {
    /// `sip`, `media`, `management` or a host service's name.
    pub service: String,
    /// The address it listens on (`0.0.0.0`: every address).
    pub address: IpAddr,
    /// What firewalls it.
    pub plane: Plane,
    /// Interfaces it is reached through that lack the XDP program.
    pub uncovered: Vec<String>,
}

/// One listening address to cover: (service, address, whether sipd checks it in userspace
/// when XDP does not see it).
pub type Listen = (String, IpAddr, bool);

/// What XDP covers: the interfaces it went on at start, against the host's interfaces as
/// last read.
#[derive(Clone, Debug, Default)]
pub struct Coverage {
    /// Interfaces the XDP program was attached to (empty on the userspace data plane).
    pub attached: Vec<String>,
    /// Their indexes when it was: an interface deleted and made again under the same name has
    /// a new index and no program.
    attached_at: BTreeMap<String, u32>,
    host: Host,
    listens: Vec<Listen>,
    /// Indexes of the interfaces that carry the program now.
    covered: Vec<u32>,
    /// Each listening address and its plane.
    pub entries: Vec<Covered>,
}

impl Coverage {
    /// At start: XDP went on `attached`, the host is `host`.
    pub fn new(attached: Vec<String>, host: Host, listens: Vec<Listen>) -> Self {
        let attached_at = attached
            .iter()
            .filter_map(|n| host.index.get(n).map(|i| (n.clone(), *i)))
            .collect();
        Coverage {
            attached,
            attached_at,
            host: Host::default(),
            listens,
            covered: Vec::new(),
            entries: Vec::new(),
        }
        .refreshed(host)
    }

    /// The same attachments against the host as it is now (`host` read again): an interface
    /// added since start, or made again, is not covered by XDP.
    pub fn refreshed(&self, host: Host) -> Coverage {
        let covered: Vec<u32> = self
            .attached_at
            .iter()
            .filter(|(n, i)| host.index.get(*n) == Some(i))
            .map(|(_, i)| *i)
            .collect();
        let has_xdp = |iface: &String| host.index.get(iface).is_some_and(|i| covered.contains(i));
        let entries = self
            .listens
            .iter()
            .map(|(service, address, userspace)| {
                let uncovered: Vec<String> = interfaces_for(*address, &host.addrs)
                    .into_iter()
                    .filter(|i| !has_xdp(i))
                    .collect();
                let plane = if uncovered.is_empty() && !covered.is_empty() {
                    Plane::Xdp
                } else if *userspace {
                    Plane::Userspace
                } else {
                    Plane::None
                };
                Covered {
                    service: service.clone(),
                    address: *address,
                    plane,
                    uncovered,
                }
            })
            .collect();
        Coverage {
            attached: self.attached.clone(),
            attached_at: self.attached_at.clone(),
            host,
            listens: self.listens.clone(),
            covered,
            entries,
        }
    }

    /// Whether XDP saw a message that arrived as `a` (then the kernel has judged it). By the
    /// interface when the socket said which (a packet for any of our addresses can come in
    /// on any interface); else by the local address: every interface it can arrive on
    /// carries the program (for the unspecified address: every interface).
    pub fn xdp_saw(&self, a: Arrival) -> bool {
        if self.covered.is_empty() {
            return false;
        }
        if let Some(i) = a.ifindex {
            return self.covered.contains(&i);
        }
        self.xdp_covers(a.local)
    }

    /// Whether every interface a packet to local address `local` can arrive on carries the
    /// program. For the unspecified address: covered only if every interface is.
    pub fn xdp_covers(&self, local: IpAddr) -> bool {
        let ifaces = interfaces_for(local, &self.host.addrs);
        !ifaces.is_empty()
            && ifaces.iter().all(|i| {
                self.host
                    .index
                    .get(i)
                    .is_some_and(|x| self.covered.contains(x))
            })
    }

    /// The plane of `service`'s entries: the weakest of them (`None` when it has none).
    pub fn plane_of(&self, service: &str) -> Option<Plane> {
        self.entries
            .iter()
            .filter(|e| e.service == service)
            .map(|e| e.plane)
            .max_by_key(|p| match p {
                Plane::Xdp => 0,
                Plane::Userspace => 1,
                Plane::None => 2,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Vec<IfAddr> {
        [
            ("lo", "127.0.0.1"),
            ("lo", "::1"),
            ("eth0", "192.0.2.1"),
            ("eth1", "198.51.100.1"),
            ("eth1", "2001:db8::1"),
        ]
        .iter()
        .map(|(i, a)| IfAddr {
            iface: (*i).into(),
            ip: a.parse().unwrap(),
        })
        .collect()
    }

    #[test]
    fn addresses_map_to_the_interfaces_they_arrive_on() {
        let h = host();
        assert_eq!(
            interfaces_for("0.0.0.0".parse().unwrap(), &h),
            ["eth0", "eth1", "lo"]
        );
        assert_eq!(
            interfaces_for("::".parse().unwrap(), &h),
            ["eth0", "eth1", "lo"]
        );
        assert_eq!(interfaces_for("192.0.2.1".parse().unwrap(), &h), ["eth0"]);
        assert_eq!(interfaces_for("127.0.0.53".parse().unwrap(), &h), ["lo"]);
        assert_eq!(interfaces_for("2001:db8::1".parse().unwrap(), &h), ["eth1"]);
        assert!(interfaces_for("203.0.113.9".parse().unwrap(), &h).is_empty());
    }

    #[test]
    fn the_attach_list_adds_every_interface_a_listen_address_needs() {
        let h = host();
        let l = attach_list(&["lo".into()], &["192.0.2.1".parse().unwrap()], &h);
        assert_eq!(l, ["lo", "eth0"]);
        let l = attach_list(&["eth0".into()], &["0.0.0.0".parse().unwrap()], &h);
        assert_eq!(l, ["eth0", "eth1", "lo"]);
    }

    /// The host with indexes: lo 1, eth0 2, eth1 3.
    fn indexed(addrs: Vec<IfAddr>) -> Host {
        let index = [("lo", 1), ("eth0", 2), ("eth1", 3), ("eth2", 4)]
            .iter()
            .filter(|(n, _)| addrs.iter().any(|a| a.iface == *n))
            .map(|(n, i)| ((*n).to_string(), *i))
            .collect();
        Host { addrs, index }
    }

    fn arrival(local: &str, ifindex: Option<u32>) -> Arrival {
        Arrival {
            local: local.parse().unwrap(),
            ifindex,
        }
    }

    #[test]
    fn coverage_says_which_plane_guards_each_address() {
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let eth0: IpAddr = "192.0.2.1".parse().unwrap();
        let listens = vec![
            ("sip".to_string(), any, true),
            ("media".to_string(), eth0, false),
            ("ssh".to_string(), any, false),
        ];
        let c = Coverage::new(vec!["eth0".into()], indexed(host()), listens.clone());
        let planes: Vec<Plane> = c.entries.iter().map(|e| e.plane).collect();
        assert_eq!(planes, [Plane::Userspace, Plane::Xdp, Plane::None]);
        assert_eq!(c.entries[0].uncovered, ["eth1", "lo"]);
        assert!(c.xdp_covers(eth0));
        assert!(!c.xdp_covers("198.51.100.1".parse().unwrap()));
        assert!(
            !c.xdp_covers(any),
            "an unknown local address is covered only if all are"
        );
        assert_eq!(c.plane_of("sip"), Some(Plane::Userspace));
        let all = Coverage::new(
            vec!["eth0".into(), "eth1".into(), "lo".into()],
            indexed(host()),
            listens.clone(),
        );
        assert!(all.xdp_covers(any));
        assert!(all.entries.iter().all(|e| e.plane == Plane::Xdp));
        let none = Coverage::new(Vec::new(), indexed(host()), listens);
        assert!(!none.xdp_covers(eth0));
        assert!(!none.xdp_saw(arrival("192.0.2.1", Some(2))));
        assert_eq!(none.entries[2].plane, Plane::None);
    }

    /// The interface a datagram came in on decides, not the address it was sent to: our
    /// eth0 address reached through eth1 (a host route on eth1's link) was not seen by XDP.
    #[test]
    fn the_arrival_interface_decides_when_known() {
        let c = Coverage::new(
            vec!["eth0".into()],
            indexed(host()),
            vec![("sip".to_string(), "0.0.0.0".parse().unwrap(), true)],
        );
        assert!(c.xdp_saw(arrival("192.0.2.1", Some(2))));
        assert!(!c.xdp_saw(arrival("192.0.2.1", Some(3))));
        assert!(!c.xdp_saw(arrival("127.0.0.1", Some(1))));
        assert!(c.xdp_saw(arrival("192.0.2.1", None)), "TCP: by address");
        assert!(!c.xdp_saw(arrival("198.51.100.1", None)));
    }

    /// An interface added after start, or one made again under an attached name, has no
    /// program: the refresh says so and the check follows.
    #[test]
    fn a_refresh_sees_interfaces_added_or_made_again() {
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let listens = vec![
            ("sip".to_string(), any, true),
            ("ssh".to_string(), any, false),
        ];
        let all = vec!["lo".into(), "eth0".into(), "eth1".into()];
        let c = Coverage::new(all, indexed(host()), listens);
        assert!(c.entries.iter().all(|e| e.plane == Plane::Xdp));
        let mut later = host();
        later.push(IfAddr {
            iface: "eth2".into(),
            ip: "203.0.113.1".parse().unwrap(),
        });
        let r = c.refreshed(indexed(later));
        assert_eq!(r.entries[0].plane, Plane::Userspace);
        assert_eq!(r.entries[0].uncovered, ["eth2"]);
        assert_eq!(r.entries[1].plane, Plane::None);
        assert!(!r.xdp_saw(arrival("203.0.113.1", Some(4))));
        assert!(r.xdp_saw(arrival("192.0.2.1", Some(2))));
        // eth1 deleted and made again: a new index, no program.
        let mut again = indexed(host());
        again.index.insert("eth1".into(), 9);
        let r = c.refreshed(again);
        assert_eq!(r.entries[0].uncovered, ["eth1"]);
        assert!(!r.xdp_saw(arrival("198.51.100.1", Some(9))));
    }
}
