//! Captures and applies between two stores standing for two nodes.

use super::apply::apply;
use super::record::{Journal, ProvRecord};
use crate::config::Config;
use crate::store::{Account, Store};

const FILE: &str = r#"
[[tariff]]
name = "std"
rate_per_minute = "0.012"

[[account]]
name = "carrier-a"
tariff = "std"
balance = "100.00"
sip = { username = "alice", password = "Kq9!Vt4m-Plover-82" }

[[account.rule]]
name = "office"
remote = "203.0.113.0/24"

[[account]]
name = "carrier-b"
sip = { username = "bob", password = "Zr4$Wq8n-Heron-19" }
"#;

struct Node {
    _dir: tempfile::TempDir,
    store: Store,
    journal: Journal,
    name: &'static str,
}

fn node(name: &'static str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let journal = Journal::of(&store);
    Node {
        _dir: dir,
        store,
        journal,
        name,
    }
}

impl Node {
    fn capture(&self, now: u64) -> Vec<ProvRecord> {
        self.journal.capture(&self.store, self.name, now).unwrap()
    }

    fn take(&self, records: &[ProvRecord]) -> super::apply::Applied {
        apply(
            &self.store,
            &Config::default(),
            &self.journal,
            records,
            "test",
        )
        .unwrap()
    }

    fn account(&self, name: &str) -> Option<Account> {
        self.store.account_by_name(name).unwrap()
    }

    fn rename(&self, from: &str, to: &str) {
        let a = self.account(from).unwrap();
        self.store
            .put_account(&Account {
                name: to.into(),
                ..a
            })
            .unwrap();
    }

    fn account_by_user(&self, user: &str) -> Account {
        self.store.account_by_sip_user(user).unwrap().unwrap()
    }
}

fn seeded() -> (Node, Node) {
    let (a, b) = (node("node-1"), node("node-2"));
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.toml");
    std::fs::write(&f, FILE).unwrap();
    let secrets = Config::default();
    crate::provision::import(&f, &a.store, &secrets.sip_secrets(), &secrets, false).unwrap();
    let first = a.capture(1_000);
    assert_eq!(first.len(), 3, "{first:?}");
    assert!(
        first.iter().all(|r| r.version == 0),
        "first capture: version 0"
    );
    b.take(&first);
    assert!(
        b.capture(2_000).is_empty(),
        "applied records are not captured back"
    );
    (a, b)
}

#[test]
fn a_rename_is_a_delete_and_a_create_and_the_old_name_stays_gone() {
    let (a, b) = seeded();
    assert_eq!(
        b.store.rules_of(b.account("carrier-a").unwrap().id).len(),
        1
    );
    a.rename("carrier-a", "carrier-c");
    let batch = a.capture(3_000);
    assert_eq!(batch.len(), 2, "{batch:?}");
    b.take(&batch);
    assert!(b.account("carrier-a").is_none());
    let c = b.account("carrier-c").expect("renamed");
    assert_eq!(
        c.sip.unwrap().username,
        "alice",
        "the username moved with it"
    );
    // The tombstone of the old name is in b's journal: b's capture does not bring it back.
    assert!(b.capture(4_000).is_empty());
    assert!(
        b.journal
            .get("account:carrier-a")
            .unwrap()
            .unwrap()
            .body
            .is_none()
    );
}

#[test]
fn a_username_moved_between_accounts_is_applied_in_any_order() {
    let (a, b) = seeded();
    // On a: carrier-b gives up "bob", then carrier-a takes it (and gives up "alice").
    let bob = a.account_by_user("bob");
    let mut cb = a.account("carrier-b").unwrap();
    cb.sip = None;
    a.store.put_account(&cb).unwrap();
    let mut ca = a.account("carrier-a").unwrap();
    ca.sip = bob.sip;
    a.store.put_account(&ca).unwrap();
    let mut batch = a.capture(3_000);
    // carrier-a (which takes "bob") first: the name is freed inside the same transaction.
    batch.sort_by(|x, y| x.key.cmp(&y.key));
    let r = b.take(&batch);
    assert!(r.refused.is_empty() && r.displaced.is_empty(), "{r:?}");
    assert_eq!(b.account_by_user("bob").name, "carrier-a");
    assert!(b.account("carrier-b").unwrap().sip.is_none());
}

#[test]
fn a_username_claimed_by_two_accounts_goes_to_the_newer_record() {
    let (a, b) = seeded();
    // a gives "alice" to carrier-b (a newer record) while b still has it on carrier-a, and
    // carrier-a's change that freed it never arrives.
    let alice = a.account_by_user("alice");
    let mut ca = a.account("carrier-a").unwrap();
    ca.sip = None;
    a.store.put_account(&ca).unwrap();
    let mut cb = a.account("carrier-b").unwrap();
    cb.sip = alice.sip;
    a.store.put_account(&cb).unwrap();
    let batch: Vec<ProvRecord> = a
        .capture(3_000)
        .into_iter()
        .filter(|r| r.key == "account:carrier-b")
        .collect();
    let r = b.take(&batch);
    assert_eq!(r.displaced, vec!["carrier-a".to_string()], "{r:?}");
    assert_eq!(b.account_by_user("alice").name, "carrier-b");
    // Its digest rule cannot stand without credentials; no later capture republishes it.
    let ca = b.account("carrier-a").unwrap();
    assert!(ca.sip.is_none());
    assert!(
        b.store.rules_of(ca.id).is_empty(),
        "its digest rule went too"
    );
    assert!(b.capture(4_000).is_empty());
}

#[test]
fn an_older_record_is_not_captured_as_new_and_balances_are_not_shared() {
    let (a, b) = seeded();
    let id = b.account("carrier-a").unwrap().id;
    b.store
        .adjust_balance(id, crate::store::Micros(-5_000_000))
        .unwrap();
    assert!(
        b.capture(3_000).is_empty(),
        "a debit is not a change to share"
    );
    let mut ca = a.account("carrier-a").unwrap();
    ca.cps_limit = Some(7);
    a.store.put_account(&ca).unwrap();
    b.take(&a.capture(4_000));
    let got = b.account("carrier-a").unwrap();
    assert_eq!(got.cps_limit, Some(7));
    assert_eq!(
        got.balance,
        crate::store::Micros(95_000_000),
        "b's balance kept"
    );
}
