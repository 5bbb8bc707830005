//! The name each upstream's TLS certificate must carry, by the address sipd connects to:
//! the connection's host as provisioned (a DNS name, or an address literal that the
//! certificate must then carry as an IP SAN). The transport asks at every outbound TLS
//! connect; connections and the resolver's answers keep it current.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use sipd_core::records::{Connection, Transport};

use crate::transport::TlsNames;

#[derive(Debug, Default)]
struct State {
    /// (host, port, name to verify) of every TLS connection.
    upstreams: Vec<(String, u16, String)>,
    /// What each host name resolved to last.
    resolved: HashMap<String, Vec<IpAddr>>,
}

/// Upstream TLS names (see the module docs); cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct UpstreamTlsNames(Arc<RwLock<State>>);

impl UpstreamTlsNames {
    fn state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The provisioned connections, at start and after every reload.
    pub fn set_connections(&self, conns: &[Connection]) {
        self.state().upstreams = conns
            .iter()
            .filter(|c| c.transport == Transport::Tls)
            .map(|c| {
                let name = c.tls_name.clone().unwrap_or_else(|| c.host.clone());
                (c.host.clone(), c.port, name)
            })
            .collect();
    }

    /// What `host` resolved to.
    pub fn resolved(&self, host: &str, addrs: &[IpAddr]) {
        let mut st = self.state();
        if st.upstreams.iter().any(|(h, _, _)| h == host) {
            st.resolved.insert(host.to_owned(), addrs.to_vec());
        }
    }

    /// The name to verify at `remote`: that of the first TLS connection on its port whose
    /// host is that address or resolved to it (its `tls_name`, else its host).
    pub fn name_for(&self, remote: SocketAddr) -> Option<String> {
        let st = self.0.read().unwrap_or_else(|p| p.into_inner());
        let ip = remote.ip().to_canonical();
        st.upstreams
            .iter()
            .filter(|(_, port, _)| *port == remote.port())
            .find(|(host, _, _)| match host.parse::<IpAddr>() {
                Ok(a) => a.to_canonical() == ip,
                Err(_) => st
                    .resolved
                    .get(host)
                    .is_some_and(|addrs| addrs.iter().any(|a| a.to_canonical() == ip)),
            })
            .map(|(_, _, name)| name.clone())
    }

    /// The transport's look-up.
    pub fn lookup(&self) -> TlsNames {
        let me = self.clone();
        Arc::new(move |remote| me.name_for(remote))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(host: &str, port: u16, transport: Transport) -> Connection {
        Connection {
            id: 1,
            name: host.into(),
            enabled: true,
            host: host.into(),
            port,
            transport,
            cld_prefixes: Vec::new(),
            max_channels: None,
            cps_limit: None,
            priority: 100,
            tls_name: None,
        }
    }

    #[test]
    fn names_by_literal_and_by_resolution_on_the_port() {
        let n = UpstreamTlsNames::default();
        let named = Connection {
            tls_name: Some("sip.vendor.example".into()),
            ..conn("192.0.2.2", 5061, Transport::Tls)
        };
        n.set_connections(&[
            named,
            conn("192.0.2.1", 5061, Transport::Tls),
            conn("vendor.example", 5061, Transport::Tls),
            conn("udp.example", 5060, Transport::Udp),
        ]);
        n.resolved("vendor.example", &["198.51.100.7".parse().unwrap()]);
        n.resolved("udp.example", &["198.51.100.8".parse().unwrap()]);
        let at = |s: &str| n.name_for(s.parse().unwrap());
        assert_eq!(at("192.0.2.1:5061").as_deref(), Some("192.0.2.1"));
        assert_eq!(
            at("192.0.2.2:5061").as_deref(),
            Some("sip.vendor.example"),
            "a configured tls_name"
        );
        assert_eq!(at("198.51.100.7:5061").as_deref(), Some("vendor.example"));
        assert_eq!(at("198.51.100.7:5062"), None, "another port");
        assert_eq!(at("198.51.100.8:5060"), None, "not a TLS connection");
    }
}
