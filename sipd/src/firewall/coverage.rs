//! Which plane firewalls traffic to each of sipd's addresses. XDP only sees packets on the
//! interfaces it is attached to, so sipd attaches it to every interface carrying a SIP,
//! media or management address (`0.0.0.0`/`::`: every interface with an address); what XDP
//! does not cover, the userspace firewall checks, and what neither can (a host service sipd
//! does not serve, such as SSH) is reported, never left a silent gap.

use std::io;
use std::net::IpAddr;

use serde::Serialize;

pub use relay_user::host::IfAddr;

/// Every interface address of this host, loopback included.
pub fn host_addresses() -> io::Result<Vec<IfAddr>> {
    relay_user::host::interface_addresses()
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
    /// sipd's userspace check runs on every message (SIP) or connection (management).
    Userspace,
    /// Nothing: a service sipd does not serve itself, on an interface without XDP.
    None,
}

impl Plane {
    /// The plane's name as the `/metrics` labels spell it.
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
    /// The address the service listens on.
    pub address: IpAddr,
    /// What firewalls traffic to it.
    pub plane: Plane,
    /// Interfaces it is reached through that lack the XDP program.
    pub uncovered: Vec<String>,
}

/// What XDP covers, decided once at start.
#[derive(Clone, Debug, Default)]
pub struct Coverage {
    /// Interfaces the XDP program is attached to (empty on the userspace data plane).
    pub attached: Vec<String>,
    host: Vec<IfAddr>,
    /// One entry per address sipd listens on, with the plane that guards it.
    pub entries: Vec<Covered>,
}

impl Coverage {
    /// `listens`: (service, address, whether sipd can check it in userspace).
    pub fn new(
        attached: Vec<String>,
        host: Vec<IfAddr>,
        listens: &[(String, IpAddr, bool)],
    ) -> Self {
        let mut c = Coverage {
            attached,
            host,
            entries: Vec::new(),
        };
        for (service, address, userspace) in listens {
            let uncovered: Vec<String> = interfaces_for(*address, &c.host)
                .into_iter()
                .filter(|i| !c.attached.contains(i))
                .collect();
            let plane = if uncovered.is_empty() && !c.attached.is_empty() {
                Plane::Xdp
            } else if *userspace {
                Plane::Userspace
            } else {
                Plane::None
            };
            c.entries.push(Covered {
                service: service.clone(),
                address: *address,
                plane,
                uncovered,
            });
        }
        c
    }

    /// Whether XDP saw a packet that reached local address `local`: every interface it can
    /// arrive on carries the program. For a socket bound to the unspecified address the
    /// local address is unknown: covered only if every interface is.
    pub fn xdp_covers(&self, local: IpAddr) -> bool {
        if self.attached.is_empty() {
            return false;
        }
        let ifaces = interfaces_for(local, &self.host);
        !ifaces.is_empty() && ifaces.iter().all(|i| self.attached.contains(i))
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

    #[test]
    fn coverage_says_which_plane_guards_each_address() {
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let eth0: IpAddr = "192.0.2.1".parse().unwrap();
        let listens = [
            ("sip".to_string(), any, true),
            ("media".to_string(), eth0, false),
            ("ssh".to_string(), any, false),
        ];
        let c = Coverage::new(vec!["eth0".into()], host(), &listens);
        let planes: Vec<Plane> = c.entries.iter().map(|e| e.plane).collect();
        assert_eq!(planes, [Plane::Userspace, Plane::Xdp, Plane::None]);
        assert_eq!(c.entries[0].uncovered, ["eth1", "lo"]);
        assert!(c.xdp_covers(eth0));
        assert!(!c.xdp_covers("198.51.100.1".parse().unwrap()));
        assert!(
            !c.xdp_covers(any),
            "an unknown local address is covered only if all are"
        );
        let all = Coverage::new(
            vec!["eth0".into(), "eth1".into(), "lo".into()],
            host(),
            &listens,
        );
        assert!(all.xdp_covers(any));
        assert!(all.entries.iter().all(|e| e.plane == Plane::Xdp));
        let none = Coverage::new(Vec::new(), host(), &listens);
        assert!(!none.xdp_covers(eth0));
        assert_eq!(none.entries[2].plane, Plane::None);
    }
}
