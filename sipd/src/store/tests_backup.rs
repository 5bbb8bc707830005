//! `store check`, backup and restore, on stores with planted damage and under writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::check::QUARANTINE;
use super::record::encode;
use super::tests::{account, draft};
use super::*;

/// What a torn write would leave: the first half of a record's bytes.
fn torn<R: Record>(r: &R) -> Vec<u8> {
    let b = encode(r).unwrap();
    b[..b.len() / 2].to_vec()
}

fn raw(s: &Store, tree: &str) -> sled::Tree {
    s.db.open_tree(tree).unwrap()
}

/// A torn last CDR and a torn account never block later writes: CDRs go on being
/// appended, other accounts change, the store opens privately (as `sipd run` opens it);
/// `check --repair` moves both into the quarantine tree (nothing deleted) and rebuilds the
/// indexes that pointed at the account; a second check is clean.
#[test]
fn torn_final_records_never_block_later_writes_and_repair_quarantines_them() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let s = Store::open_private(&data, "sbc").unwrap();
    let good = s.put_account(&account("good", Some("good-sip"))).unwrap();
    let torn_acc = s.put_account(&account("torn", Some("torn-sip"))).unwrap();
    for i in 0..3 {
        s.append_cdr(draft(&format!("c{i}"))).unwrap();
    }
    let next = Cdr {
        id: 4,
        call: draft("torn"),
    };
    raw(&s, "cdrs")
        .insert(4u64.to_be_bytes(), torn(&next))
        .unwrap();
    raw(&s, "accounts")
        .insert(torn_acc.id.to_be_bytes(), torn(&torn_acc))
        .unwrap();
    drop(s);

    let s =
        Store::open_private(&data, "sbc").expect("a torn account must not stop the store opening");
    assert_eq!(s.append_cdr(draft("after")).unwrap().id, 5);
    assert_eq!(
        s.adjust_balance(good.id, Micros(-1)).unwrap(),
        Micros(4_999_999)
    );
    s.put_account(&account("third", None)).unwrap();
    let accounts = s.accounts();
    assert_eq!(accounts.iter().filter(|a| a.is_err()).count(), 1);
    assert_eq!(accounts.len(), 3);

    let r = s.check(false).unwrap();
    let at: Vec<(&str, &str)> = r
        .problems
        .iter()
        .map(|p| (p.tree.as_str(), p.key.as_str()))
        .collect();
    assert!(at.contains(&("cdrs", "4")), "{r:#?}");
    assert!(
        at.contains(&("accounts", &torn_acc.id.to_string())),
        "{r:#?}"
    );
    assert!(at.contains(&("accounts_by_name", "torn")), "{r:#?}");
    assert!(at.contains(&("accounts_by_sip_user", "torn-sip")), "{r:#?}");
    assert_eq!(
        r.left(),
        r.problems.len(),
        "nothing repaired without --repair"
    );

    let r = s.check(true).unwrap();
    assert_eq!(r.left(), 0, "{r:#?}");
    let again = s.check(false).unwrap();
    assert!(again.problems.is_empty(), "{again:#?}");
    assert_eq!(again.quarantined, 2);
    let q = raw(&s, QUARANTINE);
    let kept: serde_json::Value = serde_json::from_slice(
        &q.get([&b"cdrs\0"[..], &4u64.to_be_bytes()].concat())
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(kept["tree"], "cdrs");
    let bytes: Vec<u8> = (0..kept["value_hex"].as_str().unwrap().len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&kept["value_hex"].as_str().unwrap()[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(bytes, torn(&next), "the bytes are kept as they were");
    assert!(s.account_by_name("torn").unwrap().is_none());
    assert_eq!(s.account_by_name("good").unwrap().unwrap().id, good.id);
    // The name is free again for a new record.
    s.put_account(&account("torn", Some("torn-sip"))).unwrap();
}

/// A CDR key that is not an id, sorting last, stops CDR appends (cdr.rs reads the last
/// key as the id); `check` names it and `--repair` quarantines it, after which CDRs append.
#[test]
fn a_cdr_key_that_is_not_an_id_is_quarantined() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    s.append_cdr(draft("c1")).unwrap();
    let bad = [0xffu8; 9];
    raw(&s, "cdrs")
        .insert(
            bad,
            encode(&Cdr {
                id: 9,
                call: draft("x"),
            })
            .unwrap(),
        )
        .unwrap();
    assert!(
        matches!(s.append_cdr(draft("c2")), Err(StoreError::Corrupt { .. })),
        "before the repair"
    );
    let r = s.check(false).unwrap();
    assert!(
        r.problems
            .iter()
            .any(|p| p.tree == "cdrs" && p.what.contains("not an id")),
        "{r:#?}"
    );
    assert_eq!(s.check(true).unwrap().left(), 0);
    assert_eq!(s.append_cdr(draft("c2")).unwrap().id, 2);
}

/// Index entries pointing nowhere or at the wrong record, a record missing from its index
/// and an id counter behind the records are found and repaired; two records claiming one
/// name are reported and left for an operator.
#[test]
fn bad_indexes_and_counters_are_found_and_rebuilt() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    let a = s.put_account(&account("a", None)).unwrap();
    let b = s.put_account(&account("b", None)).unwrap();
    let names = raw(&s, "accounts_by_name");
    names.insert("ghost", &999u64.to_be_bytes()).unwrap();
    names.insert("a", &b.id.to_be_bytes()).unwrap();
    names.remove("b").unwrap();
    raw(&s, "meta")
        .insert("next_id", &1u64.to_be_bytes())
        .unwrap();
    let r = s.check(false).unwrap();
    let keys: Vec<&str> = r.problems.iter().map(|p| p.key.as_str()).collect();
    for k in ["ghost", "a", "b", "next_id"] {
        assert!(keys.contains(&k), "{k}: {r:#?}");
    }
    assert_eq!(s.check(true).unwrap().left(), 0);
    assert!(s.check(false).unwrap().problems.is_empty());
    assert_eq!(s.account_by_name("a").unwrap().unwrap().id, a.id);
    assert_eq!(s.account_by_name("b").unwrap().unwrap().id, b.id);
    assert_eq!(s.put_account(&account("c", None)).unwrap().id, b.id + 1);

    // A record renamed behind the index's back onto another's name: not fixable by a tool.
    let mut clash = s.account(b.id).unwrap().unwrap();
    clash.name = "a".into();
    raw(&s, "accounts")
        .insert(b.id.to_be_bytes(), encode(&clash).unwrap())
        .unwrap();
    let r = s.check(true).unwrap();
    assert!(
        r.left() > 0 && r.problems.iter().any(|p| p.what.contains("both claim")),
        "{r:#?}"
    );
}

/// Backups taken while a writer changes an account and appends an audit entry in each
/// transaction are each one point in time: in every copy the audit chain holds (its head in
/// `meta` matches the `audit` tree) and the balance matches the entries copied.
#[test]
fn backups_under_writes_are_each_one_point_in_time() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(Store::open(&d.path().join("live")).unwrap());
    let a = s.put_account(&account("busy", None)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            // Bounded, and paced so the store stays small: the copies are what is tested.
            while !stop.load(Ordering::Relaxed) && n < 20_000 {
                std::thread::sleep(std::time::Duration::from_micros(200));
                s.write_unflushed(|tx| {
                    let mut acc = tx.account(a.id)?.unwrap();
                    acc.balance = Micros(acc.balance.0 + 1);
                    tx.put(T::Accounts, &a.id.to_be_bytes(), &acc)?;
                    tx.append_audit(&AuditDraft {
                        ts_ms: 1,
                        actor: Some("sipd:test".into()),
                        source: None,
                        kind: AuditKind::Update,
                        target: Some("account:busy".into()),
                        result: AuditResult::Success,
                        reason: None,
                        before: None,
                        after: None,
                    })
                })
                .unwrap();
                n += 1;
            }
            n
        })
    };
    while s.last_audit_id() < 20 {
        std::thread::yield_now();
    }
    let mut seen = Vec::new();
    for i in 0..5 {
        let dir = d.path().join(format!("b{i}"));
        let m = s.backup_to(&dir).unwrap();
        assert_eq!(verify_backup(&dir).unwrap(), m);
        let copy = Store::open(&dir.join("store")).unwrap();
        let v = copy.verify_audit().unwrap();
        assert!(v.ok(), "copy {i}: {v:?}");
        let updates = copy
            .audit(&AuditFilter::default())
            .into_iter()
            .filter(|e| e.as_ref().unwrap().entry.target.as_deref() == Some("account:busy"))
            .count() as i64;
        let bal = copy.account(a.id).unwrap().unwrap().balance.0;
        assert_eq!(bal, 5_000_000 + updates, "copy {i}");
        seen.push(updates);
    }
    stop.store(true, Ordering::Relaxed);
    let total = writer.join().unwrap();
    assert!(
        total > 0 && seen.last().copied().unwrap_or(0) > 0,
        "writes happened during the backups: {seen:?} of {total}"
    );
    // Each backup is audited in the live store.
    let backups = s
        .audit(&AuditFilter {
            kind: Some(AuditKind::Backup),
            ..AuditFilter::default()
        })
        .len();
    assert_eq!(backups, 5);
    // Never over something.
    let e = s.backup_to(&d.path().join("b0")).unwrap_err();
    assert!(matches!(e, BackupError::NotEmpty(_)), "{e}");
}

/// A restore verifies the backup, refuses while the store is held, moves the store in
/// place aside and brings the backup back, audited.
#[test]
fn restore_brings_a_backup_back_and_keeps_the_store_it_replaces() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let bk = d.path().join("bk");
    let a = {
        let s = Store::open_private(&data, "sbc").unwrap();
        let a = s.put_account(&account("kept", None)).unwrap();
        s.append_cdr(draft("one")).unwrap();
        s.backup_to(&bk).unwrap();
        s.adjust_balance(a.id, Micros(-1_000_000)).unwrap();
        s.append_cdr(draft("two")).unwrap();
        a
    };
    {
        let _held = Store::open(&data.join("store")).unwrap();
        let e = restore(&data, &bk, "sbc").unwrap_err();
        assert!(
            matches!(e, BackupError::Store(StoreError::Locked { .. })),
            "{e}"
        );
    }
    let r = restore(&data, &bk, "sbc").unwrap();
    let aside = r.moved_aside.clone().unwrap();
    assert!(
        aside
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("store.before-restore-")
    );
    let s = Store::open(&data.join("store")).unwrap();
    assert_eq!(s.account(a.id).unwrap().unwrap().balance, Micros(5_000_000));
    assert_eq!(s.cdrs(0, 10).len(), 1);
    assert!(s.verify_audit().unwrap().ok());
    let restores = s
        .audit(&AuditFilter {
            kind: Some(AuditKind::Restore),
            ..AuditFilter::default()
        })
        .len();
    assert_eq!(restores, 1);
    drop(s);
    let before = Store::open(&aside).unwrap();
    assert_eq!(
        before.cdrs(0, 10).len(),
        2,
        "the replaced store is kept whole"
    );
    drop(before);

    // A damaged backup is refused before anything moves.
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bk.join("manifest.json")).unwrap()).unwrap();
    m["trees"]["cdrs"] = 7.into();
    std::fs::write(bk.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    let e = restore(&data, &bk, "sbc").unwrap_err();
    assert!(
        matches!(e, BackupError::Damaged { .. }) && e.to_string().contains("cdrs"),
        "{e}"
    );
    let entries = std::fs::read_dir(&data).unwrap().count();
    assert!(
        std::fs::read_dir(&data)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("store.before"))
            .count()
            == 1,
        "{entries}"
    );
}

/// How long writes wait for a backup of a store with 100,000 CDRs (a measurement, not a
/// test: `cargo test -p sipd --lib backup_pause -- --ignored --nocapture`).
#[test]
#[ignore = "a measurement, not a test"]
fn backup_pause_with_100k_cdrs() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&d.path().join("live")).unwrap();
    for i in 0..100_000 {
        s.append_cdr_unflushed(draft(&format!("call-{i}"))).unwrap();
    }
    s.flush().unwrap();
    let t0 = std::time::Instant::now();
    let m = s.backup_to(&d.path().join("b")).unwrap();
    eprintln!(
        "100k CDRs: writes paused {} ms, backup took {:?}, {} entries",
        m.writes_paused_ms,
        t0.elapsed(),
        m.trees.values().sum::<u64>()
    );
}

/// The two passes of a backup: CDRs appended and purged between them end up exactly as
/// the live tree is when the second pass runs.
#[test]
fn append_only_trees_catch_up_at_both_ends() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&d.path().join("live")).unwrap();
    for i in 0..10 {
        let mut c = draft(&format!("old-{i}"));
        c.end_ms = 1_000 + i;
        s.append_cdr(c).unwrap();
    }
    let dst = sled::open(d.path().join("copy")).unwrap();
    let bulk = super::backup::copy_bulk(&s.db, &dst).unwrap();
    for i in 0..5 {
        let mut c = draft(&format!("new-{i}"));
        c.end_ms = 10_000_000;
        s.append_cdr(c).unwrap();
    }
    assert_eq!(s.purge_cdrs_before(1_004).unwrap(), 4);
    let counts = super::backup::copy_rest(&s.db, &dst, &bulk).unwrap();
    let live: Vec<_> = raw(&s, "cdrs").iter().collect::<Result<_, _>>().unwrap();
    let copy: Vec<_> = dst
        .open_tree("cdrs")
        .unwrap()
        .iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(copy, live);
    assert_eq!(counts["cdrs"], 11);
}
