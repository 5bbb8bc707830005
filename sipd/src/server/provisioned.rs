//! What the call core is given of the store: accounts and their rules, connections and
//! tariffs, read leniently so one unreadable record never takes every carrier down (each is
//! skipped with a warning; an account whose rule was skipped stays restricted).

use std::net::IpAddr;

use tracing::warn;

use sipd_core::policy::rules::RuleSet;
use sipd_core::records::{Connection, Tariff};

use crate::store::Store;

/// The provisioned records as the call core takes them, read from the store at start and
/// at every reload the management API asks for after a change.
pub struct Provisioned {
    /// The accounts with their usable rules (for the authentication gate and admission).
    pub rules: RuleSet,
    /// The readable upstream connections (for routing and their caps).
    pub connections: Vec<Connection>,
    /// The readable tariffs (for balance reservation and CDR cost).
    pub tariffs: Vec<Tariff>,
}

/// Keeps the readable records, logging the others.
fn readable<T>(what: &'static str, records: Vec<Result<T, crate::store::StoreError>>) -> Vec<T> {
    records
        .into_iter()
        .filter_map(|r| {
            r.map_err(|e| warn!(error = %e, "skipping an unreadable {what}"))
                .ok()
        })
        .collect()
}

impl Provisioned {
    /// Reads every account, rule, connection and tariff, skipping (and logging) each one that
    /// does not decode instead of failing.
    pub fn read(store: &Store) -> Provisioned {
        let accounts = readable("account", store.accounts());
        let rules: Vec<_> = accounts
            .iter()
            .flat_map(|a| {
                store
                    .rules_of(a.id)
                    .into_iter()
                    .map(move |r| (a.id, r.map_err(|e| e.to_string())))
            })
            .collect();
        Provisioned {
            rules: RuleSet::tolerant(accounts, rules),
            connections: readable("connection", store.connections()),
            tariffs: readable("tariff", store.tariffs()),
        }
    }

    /// Sources that skip the per-source SIP guard: enabled upstreams (their addresses as
    /// `resolve` finds them) and single-host IP-auth rules.
    pub fn trusted_hosts(&self, resolved: &[(String, Vec<IpAddr>)]) -> Vec<IpAddr> {
        let mut hosts: Vec<IpAddr> = Vec::new();
        for c in self.connections.iter().filter(|c| c.enabled) {
            match c.host.parse::<IpAddr>() {
                Ok(ip) => hosts.push(ip),
                Err(_) => hosts.extend(
                    resolved
                        .iter()
                        .filter(|(h, _)| *h == c.host)
                        .flat_map(|(_, a)| a.iter().copied()),
                ),
            }
        }
        for r in self.rules.rules() {
            if let Some(net) = r.remote
                && r.ip_only
                && net.prefix_len() == net.max_prefix_len()
            {
                hosts.push(net.addr());
            }
        }
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// Upstream host names (not address literals), for resolving at start.
    pub fn upstream_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .connections
            .iter()
            .filter(|c| c.enabled && c.host.parse::<IpAddr>().is_err())
            .map(|c| c.host.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Account, AuthRule, Transport};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn reads_rules_connections_and_trusted_hosts_from_the_store() {
        let (_d, store) = store();
        let carrier = store
            .put_account(&Account {
                id: 0,
                name: "carrier".into(),
                enabled: true,
                sip: None,
                cps_limit: None,
                max_sessions: None,
                balance: Default::default(),
                tariff_id: None,
                max_call_secs: None,
            })
            .unwrap();
        store
            .put_rule(&AuthRule {
                id: 0,
                account_id: carrier.id,
                name: "pbx".into(),
                remote: Some("203.0.113.7/32".parse().unwrap()),
                cli: None,
                cld: None,
                ip_only: true,
                tls_client_name: None,
            })
            .unwrap();
        for (name, host) in [("lit", "192.0.2.1"), ("named", "vendor.example")] {
            store
                .put_connection(&Connection {
                    id: 0,
                    name: name.into(),
                    enabled: true,
                    host: host.into(),
                    port: 5060,
                    transport: Transport::Udp,
                    cld_prefixes: vec![],
                    max_channels: None,
                    cps_limit: None,
                    priority: 1,
                    tls_name: None,
                })
                .unwrap();
        }
        let p = Provisioned::read(&store);
        assert_eq!(p.rules.accounts().count(), 1);
        assert_eq!(p.connections.len(), 2);
        assert_eq!(p.upstream_names(), vec!["vendor.example".to_owned()]);
        let resolved = vec![(
            "vendor.example".to_owned(),
            vec!["192.0.2.9".parse().unwrap()],
        )];
        let ips: Vec<String> = p
            .trusted_hosts(&resolved)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ips, vec!["192.0.2.1", "192.0.2.9", "203.0.113.7"]);
    }
}
