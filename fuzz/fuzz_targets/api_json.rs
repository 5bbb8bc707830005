//! The management API's JSON bodies: each request type is read the way its handler reads it
//! (`parse_json`, field named on error), records are validated through their `*Spec::build`,
//! and an update's merge of a patch into the stored record is read back like a create.
//! The first byte picks the body type; the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipd::api::error::parse_json;
use sipd::api::routes::merge;
use sipd::api::routes::{accounts, bans, firewall, session, staff};
use sipd_core::records::{
    AccountSpec, ConnectionSpec, Id, Lookup, RuleOwner, RuleSpec, SipPasswordPolicies, SipSecrets,
    TariffSpec,
};

/// A store with one tariff (`t1`) and one SIP user (`taken`, held by account 9).
struct Fixed;

impl Lookup for Fixed {
    fn tariff_id(&self, name: &str) -> Result<Option<Id>, String> {
        Ok((name == "t1").then_some(1))
    }
    fn sip_user_owner(&self, username: &str) -> Result<Option<(Id, String)>, String> {
        Ok((username == "taken").then(|| (9, "other".to_owned())))
    }
}

fn spec(kind: u8, body: &[u8]) {
    match kind % 12 {
        0 => {
            if let Ok(s) = parse_json::<AccountSpec>(body) {
                let policies = SipPasswordPolicies::default();
                let secrets = SipSecrets {
                    realm: "sbc",
                    policies: &policies,
                    // A fixed score: the estimate itself is zxcvbn's, fuzzed by its authors.
                    strength: |_, _| 3,
                };
                let _ = s.build(&secrets, None, &Fixed);
            }
        }
        1 => {
            if let Ok(s) = parse_json::<ConnectionSpec>(body) {
                let _ = s.build(0);
            }
        }
        2 => {
            if let Ok(s) = parse_json::<RuleSpec>(body) {
                for has_sip in [false, true] {
                    let owner = RuleOwner {
                        id: 1,
                        name: "carrier",
                        has_sip,
                    };
                    let _ = s.build(0, owner);
                }
            }
        }
        3 => {
            if let Ok(s) = parse_json::<TariffSpec>(body) {
                let _ = s.build(0);
            }
        }
        4 => drop(parse_json::<accounts::TopupIn>(body)),
        5 => drop(parse_json::<bans::BanIn>(body)),
        6 => drop(parse_json::<firewall::AllowIn>(body)),
        7 => drop(parse_json::<firewall::DenyIn>(body)),
        8 => drop(parse_json::<session::LoginIn>(body)),
        9 => drop(parse_json::<session::PasswordIn>(body)),
        10 => drop(parse_json::<staff::StaffIn>(body)),
        _ => {
            // A PUT: the patch merged into a stored connection, read as a create.
            let current = serde_json::json!({
                "id": 1, "name": "vendor1", "enabled": true, "destination": "10.0.1.1:5060",
                "transport": "udp", "cld_prefixes": [], "max_channels": null,
                "cps_limit": null, "priority": 1
            });
            if let Ok(patch) = serde_json::from_slice::<serde_json::Value>(body)
                && let Ok(merged) = merge(current, patch, &[])
                && let Ok(s) =
                    parse_json::<ConnectionSpec>(&serde_json::to_vec(&merged).unwrap_or_default())
            {
                let _ = s.build(1);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some((&kind, body)) = data.split_first() {
        spec(kind, body);
    }
});
