//! What the console's bans and alerts screens need: each ban's provenance and activity
//! (`rule`, `evidence`, `hits`, first and last seen), the sources the IDS spares
//! (`GET /api/bans/never`), and acknowledging an alert (`POST /api/alerts/{id}/ack`).

use serde_json::json;

use super::Ctx;

/// An operator's ban names them as its rule, has no IDS evidence and has stopped nothing yet.
pub fn a_staff_ban_says_who_made_it(c: &Ctx) {
    let Ctx {
        s, viewer, oper, ..
    } = c;
    let b = s.ok(
        "POST",
        "/api/bans",
        oper,
        Some(json!({"addr": "198.51.100.31", "duration_secs": 600})),
    );
    assert_eq!(b["rule"], "staff:oper", "{b:#}");
    assert!(b["evidence"].is_null(), "{b:#}");
    assert_eq!(b["hits"], 0, "{b:#}");
    let first = b["first_seen_ms"].as_u64().unwrap();
    assert!(first > 1_600_000_000_000, "{b:#}");
    assert_eq!(b["last_seen_ms"].as_u64(), Some(first), "{b:#}");
    let list = s.ok("GET", "/api/bans", viewer, None);
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["prefix"] == "198.51.100.31/32")
        .cloned()
        .unwrap_or_else(|| panic!("{list:#}"));
    assert_eq!(listed["rule"], "staff:oper");
    assert_eq!(
        s.req("DELETE", "/api/bans/198.51.100.31", Some(oper), None)
            .status,
        204
    );
}

/// An upstream given by address is listed with what it is spared; a disabled or deleted one
/// is not.
pub fn never_banned_sources_are_listed(c: &Ctx) {
    let Ctx {
        s, admin, viewer, ..
    } = c;
    let conn = s.ok(
        "POST",
        "/api/connections",
        admin,
        Some(json!({"name": "vendor-never", "destination": "192.0.2.50:5060"})),
    );
    let never = s.ok("GET", "/api/bans/never", viewer, None);
    let e = never
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "vendor-never")
        .cloned()
        .unwrap_or_else(|| panic!("{never:#}"));
    assert_eq!(
        (e["prefix"].as_str(), e["source"].as_str()),
        (Some("192.0.2.50/32"), Some("upstream")),
        "{e:#}"
    );
    assert!(
        e["still_banned_for"]
            .as_array()
            .unwrap()
            .contains(&json!("scanner"))
    );
    let cid = conn["id"].as_u64().unwrap();
    let path = format!("/api/connections/{cid}");
    assert_eq!(s.req("DELETE", &path, Some(admin), None).status, 204);
    let never = s.ok("GET", "/api/bans/never", viewer, None);
    assert!(
        !never
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "vendor-never"),
        "{never:#}"
    );
}

/// Acknowledging needs Operate, names a current alert (404 otherwise), is audited and shows
/// in the list with who and when.
pub fn an_alert_is_acknowledged_and_audited(c: &Ctx) {
    let Ctx {
        s,
        admin,
        viewer,
        oper,
    } = c;
    let ack = "/api/alerts/self_signed_certificate/ack";
    assert_eq!(
        s.req("POST", ack, Some(viewer), Some(json!({}))).status,
        403
    );
    let unknown = s.req(
        "POST",
        "/api/alerts/no_such_alert/ack",
        Some(oper),
        Some(json!({})),
    );
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    let list = s.ok("GET", "/api/alerts", viewer, None);
    let before = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "self_signed_certificate")
        .cloned()
        .unwrap_or_else(|| panic!("{list:#}"));
    assert!(before["acked_by"].is_null() && before["acked_ms"].is_null());
    let mark = s.last_audit_id(admin);
    let a = s.ok("POST", ack, oper, Some(json!({})));
    assert_eq!(a["acked_by"], "oper", "{a:#}");
    assert!(a["acked_ms"].as_u64().is_some(), "{a:#}");
    let list = s.ok("GET", "/api/alerts", viewer, None);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == "self_signed_certificate" && x["acked_by"] == "oper"),
        "{list:#}"
    );
    let v = s.ok("GET", &format!("/api/audit?after={mark}"), admin, None);
    let v = v.as_array().unwrap();
    assert!(
        v.iter().any(|e| e["kind"] == "update"
            && e["target"] == "alert:self_signed_certificate"
            && e["actor"] == "oper"),
        "{v:#?}"
    );
}

/// After a restart of sipd the acknowledgement made before it is still there (it is stored,
/// not kept in memory).
pub fn the_acknowledgement_survives_a_restart(c: &Ctx) {
    let list = c.s.ok("GET", "/api/alerts", &c.s.session("viewer"), None);
    let a = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "self_signed_certificate")
        .unwrap_or_else(|| panic!("{list:#}"));
    assert_eq!(a["acked_by"], "oper", "{a:#}");
    assert!(a["acked_ms"].as_u64().is_some_and(|t| t > 0), "{a:#}");
}
