//! What the management API adds to the data plane's firewall, kept so a restart applies it
//! again: per-service allow entries, deny entries and manual bans. One tree (`firewall`),
//! three key prefixes. `sbc.toml`'s `[firewall]` lists are not stored here: the file stays
//! their source.
//!
//! Also the deletions the API needs for provisioning records (accounts with their rules,
//! rules, tariffs, connections), keeping the name indexes right.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{
    Account, AuthRule, Connection, Id, Record, Store, StoreError, T, Tariff, Tx, TxResult, abort,
    decode,
};

const ALLOW: &[u8] = b"allow/";
const DENY: &[u8] = b"deny/";
const BAN: &[u8] = b"ban/";

/// A source allowed to reach a restricted service (`service` is the data plane's name:
/// `sip`, `management`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwAllow {
    /// The data plane's service name the entry opens (`sip`, `management`, …).
    pub service: String,
    /// The allowed sources; one entry per service and network (the key uses the truncated
    /// network, so `10.0.0.1/8` and `10.0.0.0/8` are the same entry).
    pub cidr: IpNet,
    /// When it was added (Unix ms).
    pub created_ms: u64,
}

impl Record for FwAllow {
    const KIND: &'static str = "firewall allow";
    const VERSION: u32 = 1;
}

/// Sources dropped before anything else looks at them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwDeny {
    /// The entry's id, how operators name it to remove it; taken from the store's id counter.
    pub id: Id,
    /// The denied sources, truncated to the network.
    pub cidr: IpNet,
    /// When it was added (Unix ms).
    pub created_ms: u64,
}

impl Record for FwDeny {
    const KIND: &'static str = "firewall deny";
    const VERSION: u32 = 1;
}

/// A ban an operator made; `until_ms` `None` is permanent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualBan {
    /// What is banned: a host (/32, /128) or a range. Version 1 stored one address (`addr`);
    /// it reads as its host prefix.
    pub prefix: IpNet,
    /// Why, as the operator wrote it (shown in listings and the audit log).
    #[serde(default)]
    pub reason: Option<String>,
    /// When the ban ends (Unix ms); `None` keeps it until an operator lifts it.
    #[serde(default)]
    pub until_ms: Option<u64>,
    /// When it was made (Unix ms).
    pub created_ms: u64,
    /// The staff member who made it; absent in bans stored before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

impl Record for ManualBan {
    const KIND: &'static str = "ban";
    const VERSION: u32 = 2;

    fn upgrade(from: u32, mut body: serde_json::Value) -> Result<serde_json::Value, String> {
        if from != 1 {
            return Err(format!("no upgrade from version {from}"));
        }
        let obj = body
            .as_object_mut()
            .ok_or_else(|| "not an object".to_string())?;
        let addr = obj
            .remove("addr")
            .ok_or_else(|| "version 1 ban without addr".to_string())?;
        let ip: IpAddr = serde_json::from_value(addr).map_err(|e| e.to_string())?;
        obj.insert(
            "prefix".into(),
            serde_json::to_value(IpNet::from(ip)).map_err(|e| e.to_string())?,
        );
        Ok(body)
    }
}

fn allow_key(service: &str, cidr: &IpNet) -> Vec<u8> {
    [
        ALLOW,
        service.as_bytes(),
        b"/",
        cidr.trunc().to_string().as_bytes(),
    ]
    .concat()
}

fn deny_key(id: Id) -> Vec<u8> {
    [DENY, &id.to_be_bytes()[..]].concat()
}

fn ban_key(prefix: &IpNet) -> Vec<u8> {
    [BAN, prefix.trunc().to_string().as_bytes()].concat()
}

fn rule_key(account_id: Id, name: &str) -> Vec<u8> {
    [&account_id.to_be_bytes()[..], name.as_bytes()].concat()
}

impl Tx<'_> {
    /// The allow entry of `service` for `cidr`, if one was added.
    pub fn fw_allow(&self, service: &str, cidr: &IpNet) -> TxResult<Option<FwAllow>> {
        self.get(T::Firewall, &allow_key(service, cidr))
    }

    /// Stores (or replaces) an allow entry, keyed by service and network.
    pub fn put_fw_allow(&self, a: &FwAllow) -> TxResult<()> {
        self.put(T::Firewall, &allow_key(&a.service, &a.cidr), a)
    }

    /// Removes the allow entry of `service` for `cidr`; returns it, `None` when there was none.
    pub fn remove_fw_allow(&self, service: &str, cidr: &IpNet) -> TxResult<Option<FwAllow>> {
        let k = allow_key(service, cidr);
        let old = self.get(T::Firewall, &k)?;
        self.tree(T::Firewall).remove(k)?;
        Ok(old)
    }

    /// Stores a new deny entry (its id is taken here) and returns it.
    pub fn add_fw_deny(&self, cidr: IpNet, created_ms: u64) -> TxResult<FwDeny> {
        let d = FwDeny {
            id: self.new_id()?,
            cidr: cidr.trunc(),
            created_ms,
        };
        self.put(T::Firewall, &deny_key(d.id), &d)?;
        Ok(d)
    }

    /// Removes deny entry `id`; returns it, `None` when there was none.
    pub fn remove_fw_deny(&self, id: Id) -> TxResult<Option<FwDeny>> {
        let k = deny_key(id);
        let old = self.get(T::Firewall, &k)?;
        self.tree(T::Firewall).remove(k)?;
        Ok(old)
    }

    /// The manual ban of exactly `prefix`, if any (a covering or covered prefix is another ban).
    pub fn manual_ban(&self, prefix: &IpNet) -> TxResult<Option<ManualBan>> {
        self.get(T::Firewall, &ban_key(prefix))
    }

    /// Stores (or replaces) the manual ban of `b.prefix`.
    pub fn put_manual_ban(&self, b: &ManualBan) -> TxResult<()> {
        self.put(T::Firewall, &ban_key(&b.prefix), b)
    }

    /// Lifts the manual ban of exactly `prefix`; returns it, `None` when there was none.
    pub fn remove_manual_ban(&self, prefix: &IpNet) -> TxResult<Option<ManualBan>> {
        let k = ban_key(prefix);
        let old = self.get(T::Firewall, &k)?;
        self.tree(T::Firewall).remove(k)?;
        Ok(old)
    }

    /// Deletes an account, the rules named in `rules` (list them with `Store::rules_of`
    /// first: a transaction cannot scan) and its name and SIP-user index entries.
    pub fn delete_account(&self, id: Id, rules: &[String]) -> TxResult<Account> {
        let Some(a) = self.account(id)? else {
            return abort(StoreError::NotFound {
                kind: "account",
                what: format!("#{id}"),
            });
        };
        for name in rules {
            self.tree(T::Rules).remove(rule_key(id, name))?;
        }
        self.index_release(T::AccountNames, &a.name)?;
        if let Some(s) = &a.sip {
            self.index_release(T::SipUsers, &s.username)?;
        }
        self.tree(T::Accounts).remove(&id.to_be_bytes())?;
        Ok(a)
    }

    /// Deletes the account's rule of that name.
    pub fn delete_rule(&self, account_id: Id, name: &str) -> TxResult<Option<AuthRule>> {
        let k = rule_key(account_id, name);
        let old = self.get(T::Rules, &k)?;
        self.tree(T::Rules).remove(k)?;
        Ok(old)
    }

    /// Deletes tariff `id` and its name index entry; returns it, `NotFound` when there is none.
    /// Accounts that point at it are the caller's to check first.
    pub fn delete_tariff(&self, id: Id) -> TxResult<Tariff> {
        let Some(t) = self.tariff(id)? else {
            return abort(StoreError::NotFound {
                kind: "tariff",
                what: format!("#{id}"),
            });
        };
        self.index_release(T::TariffNames, &t.name)?;
        self.tree(T::Tariffs).remove(&id.to_be_bytes())?;
        Ok(t)
    }

    /// Deletes connection `id` and its name index entry; returns it, `NotFound` when there is
    /// none.
    pub fn delete_connection(&self, id: Id) -> TxResult<Connection> {
        let Some(c) = self.connection(id)? else {
            return abort(StoreError::NotFound {
                kind: "connection",
                what: format!("#{id}"),
            });
        };
        self.index_release(T::ConnectionNames, &c.name)?;
        self.tree(T::Connections).remove(&id.to_be_bytes())?;
        Ok(c)
    }
}

impl Store {
    /// Every stored allow entry (what a restart programs into the service ACL again); a corrupt
    /// one is an `Err` in its place.
    pub fn fw_allows(&self) -> Vec<Result<FwAllow, StoreError>> {
        self.scan(T::Firewall, ALLOW)
    }

    /// Every stored deny entry, in id order; a corrupt one is an `Err` in its place.
    pub fn fw_denies(&self) -> Vec<Result<FwDeny, StoreError>> {
        self.scan(T::Firewall, DENY)
    }

    /// Every stored manual ban (expired ones included: the caller filters by `until_ms`); a
    /// corrupt one is an `Err` in its place.
    pub fn manual_bans(&self) -> Vec<Result<ManualBan, StoreError>> {
        self.scan(T::Firewall, BAN)
    }

    /// Bans stored by a build whose bans were single addresses sit under `ban/<addr>`; each
    /// moves to its prefix's key (`ban/<addr>/32`), its record read through the version-1
    /// upgrade, in one transaction with the removal of the old key, so none is lost or kept
    /// twice. A record that cannot be read stays where it is (and is reported by
    /// [`Store::manual_bans`]). Returns how many moved.
    pub fn migrate_ban_keys(&self) -> Result<usize, StoreError> {
        let old: Vec<(Vec<u8>, ManualBan)> = self
            .tree(T::Firewall)
            .scan_prefix(BAN)
            .filter_map(Result::ok)
            .filter(|(k, _)| !k[BAN.len()..].contains(&b'/'))
            .filter_map(|(k, v)| Some((k.to_vec(), decode(&k, &v).ok()?)))
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        self.write(|tx| {
            for (k, b) in &old {
                tx.put_manual_ban(b)?;
                tx.tree(T::Firewall).remove(k.as_slice())?;
            }
            Ok(())
        })?;
        Ok(old.len())
    }

    /// The rule with this id, wherever it is.
    pub fn rule_by_id(&self, id: Id) -> Result<Option<AuthRule>, StoreError> {
        // A corrupt record elsewhere must not hide this one.
        Ok(self.rules().into_iter().flatten().find(|r| r.id == id))
    }
}
