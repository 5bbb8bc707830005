use super::*;
use crate::config::Config;
use crate::store::{Micros, Transport};
use sipd_core::auth::digest::Credential;

const SAMPLE: &str = r#"
[[tariff]]
name = "std"
rate_per_minute = "0.012"
expected_call_secs = 300
initial_increment_secs = 60
increment_secs = 6

[[connection]]
name = "vendor-a"
destination = "198.51.100.7:5070"
cld_prefixes = ["44", "1"]
max_channels = 100
cps_limit = 20
priority = 10

[[connection]]
name = "vendor-b"
destination = "[2001:db8::7]:5060"
transport = "tcp"

[[account]]
name = "carrier-a"
tariff = "std"
balance = "100.00"
cps_limit = 10
max_sessions = 50
max_call_secs = 7200
sip = { username = "carrier-a", password = "Kq9!Vt4m-Plover-82" }

[[account.rule]]
name = "office"
remote = "203.0.113.0/24"
cli = { prefix = "44" }
cld = { regex = "^00[1-9]" }

[[account]]
name = "carrier-b"

[[account.rule]]
name = "trunk"
remote = "192.0.2.10/32"
ip_only = true
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Our realm `realm`, the default SIP password policies and zxcvbn, as `sipd import` has.
fn secrets(realm: &'static str) -> SipSecrets<'static> {
    static POLICIES: std::sync::LazyLock<sipd_core::records::SipPasswordPolicies> =
        std::sync::LazyLock::new(Default::default);
    SipSecrets {
        realm,
        policies: &POLICIES,
        strength: |p, known| crate::mgmt::password::strength(p, known).score,
    }
}

fn setup() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    (dir, store)
}

#[test]
fn import_creates_then_reimport_updates_without_touching_balance() {
    let (dir, store) = setup();
    let f = write(dir.path(), "p.toml", SAMPLE);
    let s = import(&f, &store, &secrets("sbc"), &Config::default(), false)
        .unwrap()
        .unwrap();
    assert_eq!(s.created.values().sum::<usize>(), 7, "{s}");
    assert!(s.updated.is_empty());

    let a = store.account_by_name("carrier-a").unwrap().unwrap();
    assert_eq!(a.balance, Micros(100_000_000));
    assert_eq!(
        a.tariff_id,
        Some(store.tariff_by_name("std").unwrap().unwrap().id)
    );
    assert_eq!(
        store.account_by_sip_user("carrier-a").unwrap().unwrap().id,
        a.id
    );
    let v = store.connection_by_name("vendor-b").unwrap().unwrap();
    assert_eq!(
        (v.host.as_str(), v.port, v.transport),
        ("2001:db8::7", 5060, Transport::Tcp)
    );
    let b = store.account_by_name("carrier-b").unwrap().unwrap();
    assert!(store.rules_of(b.id)[0].as_ref().unwrap().ip_only);

    store.adjust_balance(a.id, Micros(-30_000_000)).unwrap();
    let s = import(&f, &store, &secrets("sbc"), &Config::default(), false)
        .unwrap()
        .unwrap();
    assert_eq!(s.updated.values().sum::<usize>(), 7, "{s}");
    assert!(s.created.is_empty());
    let again = store.account_by_name("carrier-a").unwrap().unwrap();
    assert_eq!(again.id, a.id);
    assert_eq!(
        again.balance,
        Micros(70_000_000),
        "re-import must not undo billing"
    );
    assert_eq!(store.rules().len(), 2);
}

#[test]
fn all_problems_reported_with_places_and_nothing_written() {
    let (dir, store) = setup();
    let text = r#"
[[tariff]]
name = "std"
rate_per_minute = "cheap"

[[connection]]
name = "v"
destination = "host:notaport"

[[account]]
name = "a"
tariff = "missing"
balance = "1.2.3"
sip = { username = "u" }

[[account.rule]]
name = "r"
cld = { regex = "(" }

[[account]]
name = "a"

[[account.rule]]
name = "open"
"#;
    let f = write(dir.path(), "bad.toml", text);
    let e = import(&f, &store, &secrets("sbc"), &Config::default(), false).unwrap_err();
    let ProvisionError::Invalid(ps) = &e else {
        panic!("{e}")
    };
    let shown = e.to_string();
    for needle in [
        "4:19: tariff.0.rate_per_minute: \"cheap\" is not an amount",
        "8:15: connection.0.destination:",
        "12:10: account.0.tariff: no tariff \"missing\"",
        "13:11: account.0.balance:",
        "14:7: account.0.sip.password: needs password",
        "18:7: account.0.rule.0.cld: invalid regex",
        "21:8: account.1.name: account \"a\" appears twice",
        "23:1: account.1.rule.0.ip_only: account \"a\" has no SIP credentials",
    ] {
        assert!(shown.contains(needle), "missing {needle:?} in:\n{shown}");
    }
    assert!(ps.len() >= 8, "{shown}");
    assert!(
        store.tariffs().is_empty() && store.accounts().is_empty() && store.connections().is_empty()
    );
}

#[test]
fn syntax_and_unknown_keys_are_located() {
    let (dir, store) = setup();
    let f = write(
        dir.path(),
        "x.toml",
        "[[account]]\nname = \"a\"\nbalanse = \"1\"\n",
    );
    let e = import(&f, &store, &secrets("sbc"), &Config::default(), false)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("3:1: ") && e.contains("balanse"), "{e}");
    let f = write(dir.path(), "y.toml", "[[account]\n");
    let e = import(&f, &store, &secrets("sbc"), &Config::default(), false)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("1:"), "{e}");
    let e = import(
        &dir.path().join("absent.toml"),
        &store,
        &secrets("sbc"),
        &Config::default(),
        false,
    )
    .unwrap_err();
    assert!(matches!(e, ProvisionError::Io { .. }));
}

#[test]
fn username_owned_by_another_account_is_refused() {
    let (dir, store) = setup();
    import(
        &write(dir.path(), "p.toml", SAMPLE),
        &store,
        &secrets("sbc"),
        &Config::default(),
        false,
    )
    .unwrap();
    let f = write(
        dir.path(),
        "q.toml",
        "[[account]]\nname = \"thief\"\nsip = { username = \"carrier-a\", password = \"x\" }\n",
    );
    let e = import(&f, &store, &secrets("sbc"), &Config::default(), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("3:20: account.0.sip.username: SIP username \"carrier-a\" belongs to account \"carrier-a\""), "{e}");
}

#[test]
fn dry_run_writes_nothing() {
    let (dir, store) = setup();
    let f = write(dir.path(), "p.toml", SAMPLE);
    assert_eq!(
        import(&f, &store, &secrets("sbc"), &Config::default(), true).unwrap(),
        None
    );
    assert!(store.accounts().is_empty());
}

#[test]
fn ha1_credentials_default_to_the_configured_realm() {
    let (dir, store) = setup();
    let md5 = "0123456789abcdef0123456789abcdef";
    let f = write(
        dir.path(),
        "h.toml",
        &format!(
            "[[account]]\nname = \"h\"\nsip = {{ username = \"h\", ha1_md5 = \"{md5}\" }}\n[[account.rule]]\nname = \"any\"\n"
        ),
    );
    import(&f, &store, &secrets("my-realm"), &Config::default(), false).unwrap();
    let a = store.account_by_sip_user("h").unwrap().unwrap();
    assert_eq!(
        a.sip.unwrap().credential,
        Credential::Ha1 {
            realm: "my-realm".into(),
            md5: Some(md5.into()),
            sha256: None
        }
    );
}

#[test]
fn export_round_trips_through_import() {
    let (dir, store) = setup();
    import(
        &write(dir.path(), "p.toml", SAMPLE),
        &store,
        &secrets("sbc"),
        &Config::default(),
        false,
    )
    .unwrap();
    let exported = export(&store).unwrap();
    let text = exported.to_toml().unwrap();
    let other = Store::open(&dir.path().join("other")).unwrap();
    import(
        &write(dir.path(), "e.toml", &text),
        &other,
        &secrets("sbc"),
        &Config::default(),
        false,
    )
    .unwrap();
    assert_eq!(export(&other).unwrap(), exported);
    assert_eq!(exported.accounts[0].balance.as_deref(), Some("100.00"));
    assert_eq!(exported.connections[1].destination, "[2001:db8::7]:5060");
}

/// `sipd export` never writes a password: the SIP credential goes out as its HA1 values
/// (MD5 and SHA-256, for our realm), and importing them back gives the same credential.
#[test]
fn export_has_no_password() {
    let (dir, store) = setup();
    import(
        &write(dir.path(), "p.toml", SAMPLE),
        &store,
        &secrets("sbc"),
        &Config::default(),
        false,
    )
    .unwrap();
    let stored = store.account_by_sip_user("carrier-a").unwrap().unwrap();
    assert_eq!(
        stored.sip.as_ref().unwrap().credential,
        Credential::hashed("carrier-a", "sbc", "Kq9!Vt4m-Plover-82"),
        "hashed on arrival"
    );
    let text = export(&store).unwrap().to_toml().unwrap();
    assert!(!text.contains("Kq9!Vt4m"), "{text}");
    assert!(!text.contains("password"), "{text}");
    assert!(
        text.contains("ha1_md5") && text.contains("ha1_sha256"),
        "{text}"
    );
}

/// A weak SIP password is refused at import with its place in the file and the field.
#[test]
fn weak_sip_password_is_refused_with_the_field_named() {
    let (dir, store) = setup();
    let f = write(
        dir.path(),
        "w.toml",
        "[[account]]\nname = \"weak\"\nsip = { username = \"weak\", password = \"password1\" }\n",
    );
    let e = import(&f, &store, &secrets("sbc"), &Config::default(), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("account.0.sip.password: the password"), "{e}");
    assert!(
        !e.contains("password1"),
        "the refusal does not echo it: {e}"
    );
    assert!(store.accounts().is_empty());
}

#[test]
fn records_this_configuration_cannot_serve_are_refused_as_at_start() {
    let (dir, store) = setup();
    let text = r#"
[[connection]]
name = "secure"
destination = "198.51.100.7:5061"
transport = "tls"

[[account]]
name = "a"

[[account.rule]]
name = "trunk"
remote = "192.0.2.10/32"
ip_only = true
tls_client_name = "carrier.example"
"#;
    let f = write(dir.path(), "tls.toml", text);
    let e = import(&f, &store, &secrets("sbc"), &Config::default(), false).unwrap_err();
    let shown = e.to_string();
    for needle in [
        "connection.0.transport: connection \"secure\" uses transport tls but SIP over TLS is not configured",
        "account.0.rule.0.tls_client_name: rule \"trunk\" asks for a TLS client certificate for \"carrier.example\" but [sip] tls is not set",
    ] {
        assert!(shown.contains(needle), "{needle:?} in:\n{shown}");
    }
    assert!(store.connections().is_empty(), "nothing written");
    // With SIP over TLS but no client roots, only the rule is refused.
    let mut cfg = Config::default();
    cfg.sip.tls = vec!["127.0.0.1:5061".parse().unwrap()];
    let e = import(&f, &store, &secrets("sbc"), &cfg, true).unwrap_err();
    let shown = e.to_string();
    assert!(!shown.contains("connection.0"), "{shown}");
    assert!(
        shown.contains("[sip] tls_client_roots is not set"),
        "{shown}"
    );
    cfg.sip.tls_client_roots = Some("/etc/sbc/carriers-ca.pem".into());
    assert_eq!(
        import(&f, &store, &secrets("sbc"), &cfg, false)
            .unwrap()
            .map(|s| s.to_string().is_empty()),
        Some(false)
    );
    let rules: Vec<_> = store.rules().into_iter().flatten().collect();
    assert_eq!(rules[0].tls_client_name.as_deref(), Some("carrier.example"));
}
