use std::path::Path;

use super::*;
use sipd_core::auth::digest::Credential;

pub(super) fn account(name: &str, user: Option<&str>) -> Account {
    Account {
        id: 0,
        name: name.into(),
        enabled: true,
        sip: user.map(|u| SipAuth {
            username: u.into(),
            credential: Credential::hashed(u, "sbc", "pw"),
            algorithms: None,
            password_template: None,
        }),
        cps_limit: Some(10),
        max_sessions: Some(20),
        balance: Micros(5_000_000),
        tariff_id: None,
        max_call_secs: None,
    }
}

fn tariff(name: &str) -> Tariff {
    Tariff {
        id: 0,
        name: name.into(),
        rate_per_minute: Micros(10_000),
        expected_call_secs: 120,
        initial_increment_secs: 60,
        increment_secs: 6,
    }
}

fn connection(name: &str) -> Connection {
    Connection {
        id: 0,
        name: name.into(),
        enabled: true,
        host: "198.51.100.7".into(),
        port: 5060,
        transport: Transport::Udp,
        cld_prefixes: vec!["44".into()],
        max_channels: Some(100),
        cps_limit: None,
        priority: 10,
        tls_name: None,
    }
}

fn rule(account_id: Id, name: &str, ip_only: bool) -> AuthRule {
    AuthRule {
        id: 0,
        account_id,
        name: name.into(),
        remote: Some("203.0.113.0/24".parse().unwrap()),
        cli: None,
        cld: Some(Pattern::Prefix("44".into())),
        ip_only,
        tls_client_name: None,
    }
}

fn ok<R>(v: Vec<Result<R, StoreError>>) -> Vec<R> {
    v.into_iter().map(|r| r.unwrap()).collect()
}

#[test]
fn accounts_and_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let t = s.put_tariff(&tariff("std")).unwrap();
    let a = s
        .put_account(&Account {
            tariff_id: Some(t.id),
            ..account("acme", Some("acme-sip"))
        })
        .unwrap();
    assert_eq!((t.id, a.id), (1, 2), "ids are small and dense");
    assert_eq!(s.account(a.id).unwrap().unwrap(), a);
    assert_eq!(s.account_by_name("acme").unwrap().unwrap(), a);
    assert_eq!(s.account_by_sip_user("acme-sip").unwrap().unwrap(), a);

    // Rename and new username release the old index entries.
    let renamed = s
        .put_account(&Account {
            name: "acme2".into(),
            sip: Some(SipAuth {
                username: "acme2-sip".into(),
                credential: Credential::hashed("acme2-sip", "sbc", "x"),
                algorithms: None,
                password_template: None,
            }),
            ..a.clone()
        })
        .unwrap();
    assert_eq!(renamed.id, a.id);
    assert!(s.account_by_name("acme").unwrap().is_none());
    assert!(s.account_by_sip_user("acme-sip").unwrap().is_none());
    assert_eq!(
        s.account_by_sip_user("acme2-sip").unwrap().unwrap().id,
        a.id
    );

    assert!(matches!(
        s.put_account(&account("acme2", None)),
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        s.put_account(&account("other", Some("acme2-sip"))),
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        s.put_account(&Account {
            tariff_id: Some(999),
            ..account("x", None)
        }),
        Err(StoreError::NotFound { kind: "tariff", .. })
    ));
    assert_eq!(
        ok(s.accounts()).len(),
        1,
        "refused writes left nothing behind"
    );
    assert_eq!(
        s.adjust_balance(a.id, Micros(-1_500_000)).unwrap(),
        Micros(3_500_000)
    );
}

#[test]
fn rules_upsert_by_name_within_account() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let a = s.put_account(&account("a", Some("a"))).unwrap();
    let b = s.put_account(&account("b", None)).unwrap();
    let r1 = s.put_rule(&rule(a.id, "office", false)).unwrap();
    let r1b = s
        .put_rule(&AuthRule {
            ip_only: true,
            ..rule(a.id, "office", false)
        })
        .unwrap();
    assert_eq!(r1.id, r1b.id);
    s.put_rule(&rule(b.id, "office", true)).unwrap();
    let of_a = ok(s.rules_of(a.id));
    assert_eq!(of_a.len(), 1);
    assert!(of_a[0].ip_only);
    assert_eq!(ok(s.rules()).len(), 2);
    assert!(matches!(
        s.put_rule(&rule(b.id, "digest", false)),
        Err(StoreError::Invalid { kind: "rule", .. })
    ));
    assert!(matches!(
        s.put_rule(&AuthRule {
            remote: None,
            ..rule(a.id, "open", true)
        }),
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        s.put_rule(&AuthRule {
            cld: Some(Pattern::Regex("(".into())),
            ..rule(a.id, "re", true)
        }),
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        s.put_rule(&rule(999, "x", true)),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn everything_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (a, t, c, cdr) = {
        let s = Store::open(dir.path()).unwrap();
        let t = s.put_tariff(&tariff("std")).unwrap();
        let a = s.put_account(&account("acme", Some("acme"))).unwrap();
        s.put_rule(&rule(a.id, "r", false)).unwrap();
        let c = s.put_connection(&connection("vendor")).unwrap();
        let cdr = s.append_cdr(draft("call-1")).unwrap();
        (a, t, c, cdr)
        // Dropped without any explicit close: what a crash after acknowledgement looks like
        // to sled, short of losing the page cache (which flush() covers).
    };
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.account(a.id).unwrap().unwrap(), a);
    assert_eq!(s.tariff_by_name("std").unwrap().unwrap(), t);
    assert_eq!(s.connection_by_name("vendor").unwrap().unwrap(), c);
    assert_eq!(ok(s.rules_of(a.id)).len(), 1);
    assert_eq!(ok(s.cdrs(0, 10)), std::slice::from_ref(&cdr));
    let next = s.append_cdr(draft("call-2")).unwrap();
    assert_eq!(
        next.id,
        cdr.id + 1,
        "CDR ids stay dense and increasing across restarts"
    );
    assert_eq!(ok(s.cdrs(cdr.id, 10)), [next]);
}

pub(super) fn draft(call_id: &str) -> CdrDraft {
    CdrDraft {
        call_id: call_id.into(),
        start_ms: 1,
        answer_ms: Some(2),
        end_ms: 62_002,
        caller: "441234".into(),
        callee: "449876".into(),
        source: Some("203.0.113.5:5060".parse().unwrap()),
        account_id: Some(1),
        connection_id: None,
        result_code: 200,
        reason: String::new(),
        duration_secs: 62,
        cost: Micros(12_000),
        hung_up_by: None,
    }
}

fn poke(dir: &Path, tree: &str, key: &[u8], value: &[u8]) {
    let db = sled::open(dir).unwrap();
    db.open_tree(tree).unwrap().insert(key, value).unwrap();
    db.flush().unwrap();
}

#[test]
fn corrupt_record_is_reported_and_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = {
        let s = Store::open(dir.path()).unwrap();
        (
            s.put_account(&account("good", None)).unwrap(),
            s.put_account(&account("bad", None)).unwrap(),
        )
    };
    poke(
        dir.path(),
        "accounts",
        &bad.id.to_be_bytes(),
        b"{\"v\":1,\"d\":{\"id\":tru",
    );
    let s = Store::open(dir.path()).unwrap();
    let e = s.account(bad.id).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Corrupt {
                kind: "account",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains(&format!("key {}", bad.id)), "{e}");
    assert!(matches!(
        s.account_by_name("bad"),
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(s.account(good.id).unwrap().unwrap(), good);
    let all = s.accounts();
    assert_eq!(all.len(), 2);
    assert_eq!(all.iter().filter(|r| r.is_ok()).count(), 1);
    // Overwriting the damaged record repairs it.
    s.put_account(&Account {
        id: bad.id,
        ..account("bad", None)
    })
    .unwrap();
    assert!(s.accounts().iter().all(|r| r.is_ok()));
}

#[test]
fn newer_record_version_is_refused_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    let t = Store::open(dir.path())
        .unwrap()
        .put_tariff(&tariff("std"))
        .unwrap();
    poke(
        dir.path(),
        "tariffs",
        &t.id.to_be_bytes(),
        br#"{"v":9,"d":{"something":"new"}}"#,
    );
    let s = Store::open(dir.path()).unwrap();
    assert!(matches!(
        s.tariff(t.id),
        Err(StoreError::NewerVersion {
            found: 9,
            supported: 1,
            ..
        })
    ));
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    poke(dir.path(), "meta", b"schema", &99u32.to_be_bytes());
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::NewerSchema { found: 99 })
    ));
}

#[test]
fn transaction_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let r = s.write(|tx| {
        tx.put_tariff(&tariff("t1"))?;
        tx.put_connection(&connection("c1"))?;
        tx.put_account(&Account {
            name: String::new(),
            ..account("", None)
        })
    });
    assert!(matches!(r, Err(StoreError::Invalid { .. })));
    assert!(s.tariffs().is_empty() && s.connections().is_empty());
}

#[test]
fn second_open_while_held_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Store::open(dir.path()).unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert!(matches!(e, StoreError::Locked { .. }), "{e}");
}

#[test]
fn settles_queue_their_debit_for_the_cluster_once_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let mut acct = account("acme", None);
    acct.balance = Micros(100_000);
    let a = s.put_account(&acct).unwrap();
    let settle = |c: &str, debit| CallWrite::Settle {
        cdr: draft(c),
        debit,
        saved: None,
    };
    assert!(
        s.settle_calls(vec![settle("c1", Some((a.id, Micros(5))))])
            .is_empty()
    );
    assert!(s.cluster_debits().is_empty(), "off: standalone");
    s.set_debit_outbox(true);
    let errors = s.settle_calls(vec![
        settle("c2", Some((a.id, Micros(12_000)))),
        settle("c3", None),
    ]);
    assert!(errors.is_empty(), "{errors:?}");
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    let queued: Vec<(String, Option<(String, Micros)>)> = s
        .cluster_debits()
        .iter()
        .map(|kv| {
            let (k, v) = kv.unwrap();
            (
                String::from_utf8_lossy(&k).into_owned(),
                crate::shared_limits::outbox_entry(&v),
            )
        })
        .collect();
    // Keyed by the CDR id: c1 is CDR 1, c2 is CDR 2.
    assert_eq!(
        queued,
        [("2".to_owned(), Some((a.name.clone(), Micros(12_000))))]
    );
    assert_eq!(s.account(a.id).unwrap().unwrap().balance, Micros(87_995));
    // `store check` reads the queue's entries as records.
    let report = s.check(false).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn settled_calls_debit_and_record_in_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let mut acct = account("acme", None);
    acct.balance = Micros(100_000);
    let a = s.put_account(&acct).unwrap();
    let settle = |c: &str, debit| CallWrite::Settle {
        cdr: draft(c),
        debit,
        saved: None,
    };
    let errors = s.settle_calls(vec![
        settle("c1", Some((a.id, Micros(12_000)))),
        settle("c2", None),
        // An account that is gone: the CDR is written without its debit.
        settle("c3", Some((a.id + 999, Micros(1)))),
    ]);
    assert!(errors.is_empty(), "{errors:?}");
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.account(a.id).unwrap().unwrap().balance, Micros(88_000));
    let ids: Vec<String> = ok(s.cdrs(0, 10))
        .into_iter()
        .map(|c| c.call.call_id)
        .collect();
    assert_eq!(ids, ["c1", "c2", "c3"]);
}

#[test]
fn address_bans_of_the_old_layout_become_host_prefixes_and_none_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    // As the build with single-address bans wrote them: key `ban/<addr>`, version 1.
    let tree = s.tree(T::Firewall);
    tree.insert(
        b"ban/192.0.2.1",
        br#"{"v":1,"d":{"addr":"192.0.2.1","reason":"pbx scan","until_ms":null,"created_ms":5}}"#
            .as_slice(),
    )
    .unwrap();
    tree.insert(
        b"ban/2001:db8::7",
        br#"{"v":1,"d":{"addr":"2001:db8::7","until_ms":99,"created_ms":6}}"#.as_slice(),
    )
    .unwrap();
    // Readable before the keys move (the record upgrade alone).
    assert_eq!(s.manual_bans().into_iter().flatten().count(), 2);
    assert_eq!(s.migrate_ban_keys().unwrap(), 2);
    assert_eq!(s.migrate_ban_keys().unwrap(), 0, "idempotent");
    let bans: Vec<ManualBan> = s.manual_bans().into_iter().map(Result::unwrap).collect();
    let v4: ipnet::IpNet = "192.0.2.1/32".parse().unwrap();
    let v6: ipnet::IpNet = "2001:db8::7/128".parse().unwrap();
    assert_eq!(bans.len(), 2);
    let b4 = bans.iter().find(|b| b.prefix == v4).unwrap();
    assert_eq!(
        (b4.reason.as_deref(), b4.until_ms),
        (Some("pbx scan"), None)
    );
    let b6 = bans.iter().find(|b| b.prefix == v6).unwrap();
    assert_eq!((b6.until_ms, b6.created_ms), (Some(99), 6));
    assert!(tree.get(b"ban/192.0.2.1").unwrap().is_none());
    let got = s.write(|tx| tx.manual_ban(&v4)).unwrap();
    assert_eq!(got.as_ref(), Some(b4));
}
