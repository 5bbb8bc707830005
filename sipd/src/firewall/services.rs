//! The host's services beyond SIP and management in the kernel's service ACL: the predefined
//! `ssh` and `sip-tls`, installed at start whether or not sipd serves them (so an allow entry
//! for one restricts it for real), and the operator's own (`[[firewall.services]]`), always
//! restricted to their allow lists.

use anyhow::{Context, Result};
use tracing::{info, warn};

use relay_user::{CUSTOM_SERVICE_BASE, Cidr, Proto as DpProto, Service, ServiceId, SvcId};

use super::Firewall;
use crate::config::{ServiceConfig, ServiceProtocol};

/// The data plane's protocol for a host service.
pub fn dp_proto(p: ServiceProtocol) -> DpProto {
    match p {
        ServiceProtocol::Tcp => DpProto::Tcp,
        ServiceProtocol::Udp => DpProto::Udp,
    }
}

/// A service as the API and the store name it, with the id its allow list has in the data
/// plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    /// The name the API, the store and the audit log use (`sip`, `ssh`, or the operator's).
    pub name: String,
    /// The id of its allow list in the data plane.
    pub id: SvcId,
    /// The predefined service, `None` for one of the operator's.
    pub known: Option<ServiceId>,
}

impl Named {
    fn known(id: ServiceId) -> Named {
        Named {
            name: id.name().into(),
            id: id.into(),
            known: Some(id),
        }
    }

    /// Whether this is the predefined service `id` (the management service has lockout checks).
    pub fn is(&self, id: ServiceId) -> bool {
        self.known == Some(id)
    }
}

impl Firewall {
    /// The service `name` designates: a predefined one (`sip`, `management`, `ssh`, …) or
    /// one `[[firewall.services]]` added.
    pub fn service(&self, name: &str) -> Option<Named> {
        if let Some(id) = ServiceId::ALL.into_iter().find(|s| s.name() == name) {
            return Some(Named::known(id));
        }
        self.custom()
            .into_iter()
            .find(|(n, _)| n.name == name)
            .map(|(n, _)| n)
    }

    /// Every name [`Firewall::service`] knows, for an error message.
    pub fn service_names(&self) -> Vec<String> {
        ServiceId::ALL
            .iter()
            .map(|s| s.name().to_string())
            .chain(self.custom().into_iter().map(|(n, _)| n.name))
            .collect()
    }

    /// The operator's services with their configuration, ids in file order.
    pub(super) fn custom(&self) -> Vec<(Named, ServiceConfig)> {
        self.cfg
            .custom_services()
            .enumerate()
            .map(|(i, s)| {
                let n = Named {
                    name: s.name.clone(),
                    id: SvcId(
                        CUSTOM_SERVICE_BASE
                            + u32::try_from(i).unwrap_or(u32::MAX - CUSTOM_SERVICE_BASE),
                    ),
                    known: None,
                };
                (n, s.clone())
            })
            .collect()
    }

    /// Puts each host service in the service ACL with its configured allow list: predefined
    /// ones are restricted as soon as their list (configured or stored) has an entry, the
    /// operator's always. A port sipd itself uses is left to sipd's service (said at warn).
    pub fn program_host_services(&self) -> Result<()> {
        let taken = self.dp.service_list().unwrap_or_default();
        let predefined = self.cfg.host_services().into_iter().filter_map(|s| {
            let n = self.service(&s.name)?;
            Some((n, s))
        });
        let all: Vec<(Named, ServiceConfig)> = predefined.chain(self.custom()).collect();
        for (n, s) in all {
            let proto = dp_proto(s.protocol);
            for &port in &s.ports {
                if let Some(t) = taken.iter().find(|t| t.port == port && t.proto == proto) {
                    if n.is(ServiceId::SipTls) && t.id == ServiceId::Sip {
                        // sipd serves SIP over TLS here itself: guarded as SIP (its allow
                        // list, the SIP guard, checked at accept like SIP over TCP).
                        info!(
                            port,
                            "sip-tls port served by sipd; guarded as its SIP service"
                        );
                    } else {
                        warn!(service = s.name, port, %proto, owner = t.id.name(), "port already guarded as another service; left to it");
                    }
                    continue;
                }
                let r = match n.known {
                    Some(id) => self.dp.service_set(Service {
                        port,
                        proto,
                        id,
                        restricted: false,
                        sip: false,
                    }),
                    None => self.dp.custom_service_set(port, proto, n.id),
                };
                r.with_context(|| format!("service {} on {port}/{proto}", s.name))?;
            }
            for net in &s.allow {
                self.dp
                    .allow_add(n.id, Cidr::from(*net))
                    .with_context(|| format!("{} allow entry {net}", s.name))?;
            }
            self.sync_restricted(&n);
            info!(service = s.name, ports = ?s.ports, %proto, allow = s.allow.len(), "host service in the firewall");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;

    use relay_user::{DataPlane, Verdict};
    use sipd_core::sip::Proto;

    use super::*;
    use crate::config::{Config, GuardConfig};
    use crate::firewall::BansConfig;
    use crate::store::{Actor, Store};

    fn passes(fw: &Firewall, src: &str, port: u16) -> bool {
        let src: IpAddr = src.parse().unwrap();
        matches!(
            fw.dataplane()
                .firewall_check(src, port, DpProto::Tcp, b"SSH-2.0-x\r\n"),
            Verdict::Pass(_)
        )
    }

    /// The engineer's SSH allow entry restricts SSH for real, and an operator's service only
    /// admits its list; names the firewall does not know are refused.
    #[test]
    fn ssh_and_operator_services_are_restricted_to_their_allow_lists() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mut cfg = Config::default().firewall;
        cfg.services.push(ServiceConfig {
            name: "postgres".into(),
            protocol: ServiceProtocol::Tcp,
            ports: vec![5432],
            allow: vec!["192.0.2.7/32".parse().unwrap()],
        });
        let dp = Arc::new(DataPlane::userspace("test"));
        let fw = Firewall::new(&cfg, &BansConfig::default(), store, dp);
        fw.program_sip(&GuardConfig::default(), &[(5060, Proto::Udp)])
            .unwrap();
        fw.program_host_services().unwrap();

        assert!(passes(&fw, "203.0.113.1", 22), "SSH open until listed");
        let ssh = fw.service("ssh").unwrap();
        let by = Actor {
            username: "admin".into(),
            source: "127.0.0.1".parse().unwrap(),
        };
        fw.allow_add(&by, &ssh, "10.0.0.0/8".parse().unwrap())
            .unwrap();
        assert!(!passes(&fw, "203.0.113.1", 22));
        assert!(passes(&fw, "10.1.2.3", 22));
        assert!(
            passes(&fw, "203.0.113.1", 5061),
            "sip-tls: open until listed"
        );

        assert!(!passes(&fw, "203.0.113.1", 5432));
        assert!(passes(&fw, "192.0.2.7", 5432));
        let pg = fw.service("postgres").unwrap();
        assert!(pg.known.is_none() && pg.id.0 >= CUSTOM_SERVICE_BASE);
        fw.allow_add(&by, &pg, "198.51.100.0/24".parse().unwrap())
            .unwrap();
        assert!(passes(&fw, "198.51.100.9", 5432));

        assert!(fw.service("mysql").is_none());
        assert!(fw.service_names().contains(&"postgres".to_string()));
        let view = fw.view().unwrap();
        let shown: Vec<(&str, u16, bool)> = view
            .services
            .iter()
            .map(|s| (s.service.as_str(), s.port, s.restricted))
            .collect();
        for want in [
            ("ssh", 22, true),
            ("sip-tls", 5061, false),
            ("postgres", 5432, true),
        ] {
            assert!(shown.contains(&want), "{want:?} not in {shown:?}");
        }
    }
}
