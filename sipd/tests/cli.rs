//! The `sipd` binary as an operator or a script uses it: exit codes and what is printed.

use std::path::Path;
use std::process::{Command, Output};

fn sipd(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sipd"))
        .args(args)
        .current_dir(dir)
        .env_remove("SIPD_CONFIG")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn check_config_exit_codes_and_locations() {
    let dir = tempfile::tempdir().unwrap();
    let o = sipd(dir.path(), &["check-config"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("defaults"));

    std::fs::write(dir.path().join("sbc.toml"), "[media]\nport_min = 100\n").unwrap();
    for args in [
        &["check-config"][..],
        &["--check-config"],
        &["--check-config", "sbc.toml"],
    ] {
        let o = sipd(dir.path(), args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(
            text(&o).contains("sbc.toml:2:12: media.port_min: 100 is a privileged port"),
            "{}",
            text(&o)
        );
    }

    std::fs::write(dir.path().join("ok.toml"), "data_dir = \"/tmp/x\"\n").unwrap();
    let o = sipd(dir.path(), &["check-config", "ok.toml"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = sipd(dir.path(), &["check-config", "missing.toml"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn import_list_export() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("sbc.toml"), "data_dir = \"d\"\n").unwrap();
    std::fs::write(
        p.join("prov.toml"),
        "[[account]]\nname = \"acme\"\nbalance = \"5\"\nsip = { username = \"acme\", password = \"Kq9!Vt4m-Plover-82\" }\n[[account.rule]]\nname = \"any\"\n",
    )
    .unwrap();
    let o = sipd(p, &["import", "prov.toml"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(p.join("d/store").exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = |f: &str| std::fs::metadata(p.join(f)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("d"), 0o700, "the data directory is private");

    let o = sipd(p, &["accounts", "list"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("acme") && out.contains("5.00") && !out.contains("pw "),
        "{out}"
    );

    let o = sipd(p, &["accounts", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows[0]["name"], "acme");
    assert_eq!(
        rows[0]["credential"], "ha1",
        "the password was hashed on arrival"
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains("Kq9!Vt4m"));

    let o = sipd(p, &["export", "-o", "backup.toml"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(mode("backup.toml"), 0o600);
    let backup = std::fs::read_to_string(p.join("backup.toml")).unwrap();
    assert!(
        !backup.contains("Kq9!Vt4m") && !backup.contains("password") && backup.contains("ha1_md5"),
        "{backup}"
    );

    std::fs::write(
        p.join("bad.toml"),
        "[[account]]\nname = \"x\"\ntariff = \"nope\"\n",
    )
    .unwrap();
    let o = sipd(p, &["import", "bad.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("bad.toml:3:10: account.0.tariff: no tariff \"nope\""),
        "{}",
        text(&o)
    );
}

/// `sipd cdrs export`: every CDR as one JSON line, oldest first, into a 0600 file; `--after`
/// resumes after an id (what an operator runs before `[retention] days` purges them).
#[test]
fn cdrs_export_writes_json_lines() {
    use sipd::store::{CdrDraft, Micros, Store};
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("sbc.toml"), "data_dir = \"d\"\n").unwrap();
    {
        let cfg = sipd::config::Config::parse(
            &std::fs::read_to_string(p.join("sbc.toml")).unwrap(),
            Path::new("sbc.toml"),
        )
        .unwrap();
        let store = Store::open(&p.join(cfg.store_dir())).unwrap();
        for i in 0..3u64 {
            store
                .append_cdr(CdrDraft {
                    call_id: format!("c{i}"),
                    start_ms: 1_000 + i,
                    answer_ms: None,
                    end_ms: 2_000 + i,
                    caller: "a".into(),
                    callee: "b".into(),
                    source: None,
                    account_id: None,
                    connection_id: None,
                    result_code: 486,
                    reason: "busy".into(),
                    duration_secs: 0,
                    cost: Micros(0),
                    hung_up_by: None,
                })
                .unwrap();
        }
    }
    let o = sipd(p, &["cdrs", "export", "-o", "out.jsonl"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = std::fs::read_to_string(p.join("out.jsonl")).unwrap();
    let ids: Vec<u64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(p.join("out.jsonl"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
    let o = sipd(p, &["cdrs", "export", "--after", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1);
}

/// `sipd import` is audited, and `sipd audit verify` finds an entry edited in the store behind
/// sipd's back (the sled tree opened directly), by number, in text and JSON, exit status 1.
#[test]
fn audit_verify_names_an_entry_edited_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("sbc.toml"), "data_dir = \"d\"\n").unwrap();
    std::fs::write(
        p.join("prov.toml"),
        "[[tariff]]\nname = \"t\"\nrate_per_minute = \"0.01\"\n",
    )
    .unwrap();
    for _ in 0..3 {
        let o = sipd(p, &["import", "prov.toml"]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = sipd(p, &["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("chain intact (3 entries"), "{}", text(&o));

    let store = p.join("d/store");
    {
        let s = sipd::store::Store::open(&store).unwrap();
        let all: Vec<_> = s
            .audit(&Default::default())
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(all.len(), 3);
        let e = &all[0].entry;
        assert_eq!(e.kind, sipd::store::AuditKind::Import);
        assert_eq!(e.actor.as_deref(), Some("sipd:import"));
        assert!(e.target.as_deref().unwrap().ends_with("prov.toml"), "{e:?}");
        assert_eq!(e.after.as_ref().unwrap()["created"]["tariff"], 1);
        assert_eq!(all[1].entry.after.as_ref().unwrap()["updated"]["tariff"], 1);
    }

    // Someone with the disk rewrites who did the second import.
    {
        // sled lets go of its file lock when its flusher thread notices the store above was
        // dropped, a moment later on a loaded machine: wait for it rather than race it.
        let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let db = loop {
            match sled::open(&store) {
                Ok(db) => break db,
                Err(e) if std::time::Instant::now() < end => {
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("store still locked after 20 s: {e}"),
            }
        };
        let t = db.open_tree("audit").unwrap();
        let key = 2u64.to_be_bytes();
        let mut v: serde_json::Value =
            serde_json::from_slice(&t.get(key).unwrap().unwrap()).unwrap();
        v["d"]["actor"] = "nobody".into();
        t.insert(key, serde_json::to_vec(&v).unwrap()).unwrap();
        db.flush().unwrap();
    }
    let o = sipd(p, &["audit", "verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("chain BROKEN at entry #2 (edited)"),
        "{}",
        text(&o)
    );
    let o = sipd(p, &["audit", "verify", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["broken"]["id"], 2, "{v:#}");
    assert_eq!(v["broken"]["problem"], "edited", "{v:#}");
    assert_eq!(v["checked"], 2, "{v:#}");
}
