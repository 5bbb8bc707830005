//! Customer users: a `customer` of account A, endpoint by endpoint over the route table the
//! router is built from, reaches only its own login and A's records; its logins and changes
//! are audited with its account; the back-off and allowed hosts apply; the account's
//! password template (length, second factor) is enforced and the strength shown.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sipd::api::routes::{Access, ROUTES};
use sipd::mgmt::{AccountFrom, Action, Scope};

use super::{ADMIN_PW, Resp, Sipd, USER_PW};

/// A customer password that passes the default policy and is not the staff one.
const CUST_PW: &str = "Mossy-Kettle-Harbour-73";

/// What a customer of A gets from one endpoint.
#[derive(Debug, PartialEq)]
enum Want {
    /// Reached (2xx, or a 4xx about the body or the record, never 403).
    Reached,
    /// 403.
    Forbidden,
    /// 404 (another account's record, or none).
    NotFound,
}

/// The account ids, rule ids and a live call id the paths are filled with.
struct Ids {
    a: u64,
    b: u64,
    rule_a: u64,
    rule_b: u64,
}

/// Logs `user` in (waiting out a back-off left by an earlier step); the token.
fn login_ok(s: &Sipd, user: &str, pw: &str) -> Value {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let r = s.login(user, pw, None);
        if r.status != 429 || Instant::now() > end {
            assert_eq!(r.status, 200, "login {user}: {}", r.text);
            return r.json();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn token(v: &Value) -> String {
    v["token"].as_str().unwrap().to_owned()
}

fn account(s: &Sipd, admin: &str, name: &str) -> u64 {
    let v = s.ok(
        "POST",
        "/api/accounts",
        admin,
        Some(json!({"name": name, "balance": "5"})),
    );
    v["id"].as_u64().unwrap()
}

fn rule(s: &Sipd, admin: &str, account: u64, name: &str) -> u64 {
    let v = s.ok(
        "POST",
        &format!("/api/accounts/{account}/rules"),
        admin,
        Some(json!({"name": name, "remote": "192.0.2.10/32", "ip_only": true})),
    );
    v["id"].as_u64().unwrap()
}

/// `path` with `{id}` (of A when `mine`, of B otherwise, as `from` says) and `{addr}` filled.
fn fill(path: &str, scope: Scope, ids: &Ids, mine: bool) -> String {
    let id = match scope {
        Scope::Account(AccountFrom::PathAccount) => {
            if mine {
                ids.a
            } else {
                ids.b
            }
        }
        Scope::Account(AccountFrom::PathRule) => {
            if mine {
                ids.rule_a
            } else {
                ids.rule_b
            }
        }
        // No live call in this test: a call id that does not exist (see `hang_ups`).
        Scope::Account(AccountFrom::PathCall) => 987_654,
        _ => ids.a,
    };
    path.replace("{id}", &id.to_string())
        .replace("{addr}", "198.51.100.9")
}

fn call(s: &Sipd, method: &str, path: &str, token: &str) -> Resp {
    let body = matches!(method, "POST" | "PUT").then(|| json!({}));
    s.req(method, path, Some(token), body)
}

fn got(r: &Resp) -> Want {
    match r.status {
        403 => Want::Forbidden,
        404 => Want::NotFound,
        _ => Want::Reached,
    }
}

/// Every route of the table, as a customer of A: the expected outcome from its stated access
/// (the match is exhaustive, so a new kind of access must be classified here).
fn every_route(s: &Sipd, admin: &str, ids: &Ids) {
    let mut checked = 0;
    for r in ROUTES {
        // Each request with a fresh session: logging out, password and TOTP steps must not
        // spoil the next.
        let (action, scope) = match r.access {
            Access::Public => {
                assert_eq!(r.path, "/api/login", "only logging in is public");
                continue;
            }
            // metrics_public is off in this config.
            Access::Metrics => (Action::View, Scope::System),
            Access::Needs(a, sc) => (a, sc),
        };
        let cust = token(&login_ok(s, "alice", CUST_PW));
        let want_mine = match (action, scope) {
            (_, Scope::System) => Want::Forbidden,
            (Action::OwnPassword | Action::OwnTotp | Action::OwnSession, Scope::Own) => {
                Want::Reached
            }
            (Action::View, Scope::PerAccount) => Want::Reached,
            (Action::View | Action::Operate, Scope::Account(AccountFrom::PathCall)) => {
                Want::NotFound
            }
            (Action::View | Action::Operate, Scope::Account(_)) => Want::Reached,
            (_, _) => Want::Forbidden,
        };
        let path = fill(r.path, scope, ids, true);
        let resp = call(s, r.method, &path, &cust);
        assert_eq!(
            got(&resp),
            want_mine,
            "{} {path}: {} {}",
            r.method,
            resp.status,
            resp.text
        );
        if let Scope::Account(_) = scope {
            let want_other = match action {
                Action::View | Action::Operate => Want::NotFound,
                _ => Want::Forbidden,
            };
            let path = fill(r.path, scope, ids, false);
            let resp = call(s, r.method, &path, &cust);
            assert_eq!(
                got(&resp),
                want_other,
                "{} {path} (B's): {}",
                r.method,
                resp.text
            );
            assert!(!resp.text.contains("bravo"), "{path}: {}", resp.text);
        }
        if want_mine == Want::Reached && r.method == "GET" {
            only_as_data(s, r.path, &resp, ids);
        }
        checked += 1;
    }
    assert!(checked >= 50, "only {checked} routes checked");
    // B's records exist and are whole: nothing the customer did touched them.
    let b = s.ok("GET", &format!("/api/accounts/{}", ids.b), admin, None);
    assert_eq!(b["balance"], "5.00");
}

/// A GET a customer reached shows A's data only.
fn only_as_data(s: &Sipd, path: &str, r: &Resp, ids: &Ids) {
    let _ = s;
    assert_eq!(r.status, 200, "{path}: {}", r.text);
    assert!(!r.text.contains("bravo"), "{path} shows B: {}", r.text);
    match path {
        "/api/accounts" => {
            let ids_seen: Vec<u64> = r
                .json()
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["id"].as_u64().unwrap())
                .collect();
            assert_eq!(ids_seen, vec![ids.a], "{}", r.text);
        }
        "/api/accounts/{id}" => assert_eq!(r.json()["balance"], "15.00"),
        "/api/accounts/{id}/topups" => {
            let t = r.json();
            assert_eq!(t.as_array().unwrap().len(), 1, "{t:#}");
            assert_eq!(
                (t[0]["amount"].as_str(), t[0]["note"].as_str()),
                (Some("10.00"), Some("march"))
            );
        }
        "/api/accounts/{id}/rules" => {
            let v = r.json();
            assert!(
                v.as_array()
                    .unwrap()
                    .iter()
                    .all(|x| x["account_id"] == ids.a),
                "{v:#}"
            );
            assert_eq!(v.as_array().unwrap().len(), 1);
        }
        "/api/rules/{id}" => assert_eq!(r.json()["account_id"], ids.a),
        "/api/cdrs" | "/api/calls" => {
            let v = r.json();
            assert!(
                v.as_array()
                    .unwrap()
                    .iter()
                    .all(|x| x["account_id"] == ids.a),
                "{v:#}"
            );
        }
        "/api/cdrs.csv" => assert!(r.text.starts_with("id,call_id,"), "{}", r.text),
        "/api/me" => assert_eq!(r.json()["account"], ids.a),
        other => panic!("a GET a customer reaches is not checked for its data: {other}"),
    }
}

/// The hang-up route: another account's live call (or none) is 404, never a hang-up; staff
/// get the same 404 for a call that does not exist. (A live call of A is hung up by a
/// customer in the unit test of the decision, `customers_reach_only_their_account`.)
fn hang_ups(s: &Sipd) {
    let cust = token(&login_ok(s, "alice", CUST_PW));
    let r = s.req("DELETE", "/api/calls/987654", Some(&cust), None);
    assert_eq!(
        (r.status, r.error().as_str()),
        (404, "not_found"),
        "{}",
        r.text
    );
}

/// One customer of A and one of B; the last audit entries name the customer with its account.
pub fn customers_reach_only_their_account(s: &Sipd, admin: &str) {
    let a = account(s, admin, "acme");
    let b = account(s, admin, "bravo");
    s.ok(
        "POST",
        &format!("/api/accounts/{a}/topup"),
        admin,
        Some(json!({"amount": "10", "note": "march"})),
    );
    let ids = Ids {
        a,
        b,
        rule_a: rule(s, admin, a, "acme-pbx"),
        rule_b: rule(s, admin, b, "bravo-pbx"),
    };

    // Staff create customer users through the API; the strength is in the answer.
    let mark = s.last_audit_id(admin);
    let r = s.req(
        "POST",
        "/api/staff",
        Some(admin),
        Some(
            json!({"username": "alice", "role": "customer", "account": a,
                    "password": CUST_PW, "must_change_password": false}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["staff"]["account"], a);
    assert!(r.json()["strength"]["score"].is_u64(), "{}", r.text);
    s.one_audit(admin, mark, "create", "staff:alice");
    for (body, field) in [
        (
            json!({"username": "x1", "role": "customer", "password": CUST_PW}),
            "account",
        ),
        (
            json!({"username": "x2", "role": "operator", "account": a, "password": CUST_PW}),
            "account",
        ),
        (
            json!({"username": "x3", "role": "customer", "account": 99999, "password": CUST_PW}),
            "account",
        ),
    ] {
        let r = s.req("POST", "/api/staff", Some(admin), Some(body));
        assert_eq!((r.status, r.field().as_str()), (400, field), "{}", r.text);
    }
    s.ok(
        "POST",
        "/api/staff",
        admin,
        Some(json!({"username": "bob", "role": "customer", "account": b,
                    "password": CUST_PW, "must_change_password": false})),
    );

    // A customer's login is audited with its account.
    let mark = s.last_audit_id(admin);
    let cust = token(&login_ok(s, "alice", CUST_PW));
    let e = &s.ok("GET", &format!("/api/audit?after={mark}"), admin, None)[0];
    assert_eq!(
        (e["kind"].as_str(), e["result"].as_str()),
        (Some("login"), Some("success"))
    );
    assert_eq!(e["actor"], format!("alice (account #{a})"));

    drop(cust);
    every_route(s, admin, &ids);
    hang_ups(s);

    // Its refusals are audited as denials naming it and its account.
    let cust = token(&login_ok(s, "alice", CUST_PW));
    let mark = s.last_audit_id(admin);
    assert_eq!(s.req("GET", "/api/staff", Some(&cust), None).status, 403);
    assert_eq!(
        s.req("GET", &format!("/api/accounts/{b}"), Some(&cust), None)
            .status,
        404
    );
    let v = s.ok(
        "GET",
        &format!("/api/audit?after={mark}&kind=deny"),
        admin,
        None,
    );
    let v = v.as_array().unwrap();
    assert_eq!(v.len(), 2, "{v:#?}");
    assert!(
        v.iter()
            .all(|e| e["actor"] == format!("alice (account #{a})")),
        "{v:#?}"
    );

    // Its own password change: audited as it, with the strength shown.
    let mark = s.last_audit_id(admin);
    let cust = token(&login_ok(s, "alice", CUST_PW));
    let r = s.ok(
        "POST",
        "/api/me/password",
        &cust,
        Some(json!({"current": CUST_PW, "new": USER_PW})),
    );
    assert!(r["strength"]["score"].is_u64(), "{r:#}");
    let e = &s.ok(
        "GET",
        &format!("/api/audit?after={mark}&kind=password"),
        admin,
        None,
    )[0];
    assert_eq!(e["actor"], format!("alice (account #{a})"));
    assert_eq!(e["target"], "staff:alice");

    template_is_enforced(s, admin, a, &cust);
    backoff_and_allowed_hosts_apply(s, admin, a);
}

/// The account's template: a longer minimum, then a required second factor.
fn template_is_enforced(s: &Sipd, admin: &str, a: u64, cust: &str) {
    let path = format!("/api/accounts/{a}/login-template");
    let r = s.req("PUT", &path, Some(cust), Some(json!({"min_length": 30})));
    assert_eq!(r.status, 403, "a customer cannot set its own template");
    let mark = s.last_audit_id(admin);
    let v = s.ok(
        "PUT",
        &path,
        admin,
        Some(json!({"min_length": 30, "max_age_days": 90})),
    );
    assert_eq!(
        (v["min_length"].as_u64(), v["max_age_days"].as_u64()),
        (Some(30), Some(90))
    );
    assert_eq!(v["min_classes"], 3, "the rest from the system default");
    s.one_audit(admin, mark, "update", "login-template:acme");
    let r = s.req("PUT", &path, Some(admin), Some(json!({"min_length": 3})));
    assert_eq!(
        (r.status, r.field().as_str()),
        (400, "min_length"),
        "{}",
        r.text
    );

    let cust = token(&login_ok(s, "alice", USER_PW));
    let r = s.req(
        "POST",
        "/api/me/password",
        Some(&cust),
        Some(json!({"current": USER_PW, "new": "Granite-Pelican-Orbit-58"})),
    );
    assert_eq!((r.status, r.field().as_str()), (400, "new"), "{}", r.text);
    let long = "Granite-Pelican-Orbit-58-Quill-Xylo";
    let r = s.ok(
        "POST",
        "/api/me/password",
        &cust,
        Some(json!({"current": USER_PW, "new": long})),
    );
    assert!(r["strength"]["score"].as_u64().unwrap() >= 3, "{r:#}");

    // A required second factor: the next login may only enrol it.
    s.ok(
        "PUT",
        &path,
        admin,
        Some(json!({"require_second_factor": true})),
    );
    let v = login_ok(s, "alice", long);
    assert_eq!(v["setup_only"], true, "{v:#}");
    assert_eq!(v["must"], json!(["enrol_totp"]));
    let t = token(&v);
    let r = s.req("GET", &format!("/api/accounts/{a}"), Some(&t), None);
    assert_eq!((r.status, r.error().as_str()), (403, "setup_only"));
    let r = s.ok("POST", "/api/me/totp", &t, None);
    assert!(
        r["otpauth_uri"].as_str().unwrap().starts_with("otpauth://"),
        "{r:#}"
    );
    assert_eq!(s.req("DELETE", &path, Some(admin), None).status, 204);
    assert_eq!(login_ok(s, "alice", long)["setup_only"], false);
    let _ = ADMIN_PW;
}

/// A wrong password locks the customer out like staff; allowed hosts refuse elsewhere.
fn backoff_and_allowed_hosts_apply(s: &Sipd, admin: &str, a: u64) {
    let r = s.login("bob", "wrong-password-1", None);
    assert_eq!((r.status, r.error().as_str()), (401, "bad_credentials"));
    let r = s.login("bob", CUST_PW, None);
    assert_eq!(
        (r.status, r.error().as_str()),
        (429, "locked_out"),
        "{}",
        r.text
    );
    s.ok(
        "POST",
        "/api/staff",
        admin,
        Some(
            json!({"username": "carol", "role": "customer", "account": a,
                    "password": CUST_PW, "must_change_password": false,
                    "allowed_hosts": ["10.9.9.9/32"]}),
        ),
    );
    let end = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let r = s.login("carol", CUST_PW, None);
        if r.status != 429 || Instant::now() > end {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        (r.status, r.error().as_str()),
        (401, "bad_credentials"),
        "{}",
        r.text
    );
}
