//! Provisioning shared record by record across three `sipd` nodes and one Redis (harness in
//! `cluster/mod.rs`): accounts created at the same moment on two nodes both stay; a SIP
//! username moved from one account to another reaches every node (no stuck import); an
//! account deleted while node 3 was dead stays deleted when node 3 returns with its old copy.
//! (A node started empty placing calls for an account made elsewhere: `cluster.rs`.)
//!
//! Before this work (whole snapshots, last writer wins): the later of the two creations
//! reverted the other, the moved username blocked every later import, the dead node's
//! snapshot brought the deleted account back.

#[path = "cluster/mod.rs"]
mod harness;
mod sbc;

use std::time::Duration;

use harness::{Node, eventually};
use sbc::*;
use serde_json::{Value, json};
use tests::require_privileged;

const PASSWORD: &str = "Vb6%lantern-Osprey-48";

fn wait_up(nodes: &[Node]) {
    assert!(
        eventually(Duration::from_secs(20), || nodes
            .iter()
            .all(|n| n.sbc.metric("sipd_cluster_up") == 1)),
        "the nodes did not connect to Redis:\n{}",
        nodes[0].sbc.log_text()
    );
}

fn account(n: &Node, name: &str) -> Option<Value> {
    let all = n.sbc.api(&n.token, "GET", "/api/accounts", None);
    all.as_array()?.iter().find(|a| a["name"] == name).cloned()
}

fn sip_user(n: &Node, name: &str) -> Option<String> {
    account(n, name).and_then(|a| a["sip"]["username"].as_str().map(str::to_owned))
}

fn call(n: &Node, method: &str, path: &str, body: Value) -> Value {
    let r = n.sbc.api(&n.token, method, path, Some(&body));
    assert!(r.get("error").is_none(), "{method} {path} refused: {r}");
    r
}

fn everywhere(nodes: &[Node], what: &str, f: impl Fn(&Node) -> bool) {
    assert!(
        eventually(Duration::from_secs(10), || nodes.iter().all(&f)),
        "{what} did not reach every node:\n{}",
        nodes[2].sbc.log_text()
    );
}

#[test]
fn provisioning_converges_record_by_record() {
    require_privileged!();
    let _g = serial();
    let (_redis, mut nodes) = harness::start(3, &Prov::default());
    wait_up(&nodes);
    // Two nodes, two accounts, the same moment.
    std::thread::scope(|s| {
        let sip = json!({"username": "mover", "password": PASSWORD});
        let (n1, n2) = (&nodes[0], &nodes[1]);
        s.spawn(move || {
            call(
                n1,
                "POST",
                "/api/accounts",
                json!({"name": "acct-1", "sip": sip}),
            )
        });
        s.spawn(move || call(n2, "POST", "/api/accounts", json!({"name": "acct-2"})));
    });
    everywhere(&nodes, "both accounts", |n| {
        account(n, "acct-1").is_some() && account(n, "acct-2").is_some()
    });
    // Node 2 moves the SIP username "mover" from acct-1 to acct-2.
    let n2 = &nodes[1];
    let id = |name| account(n2, name).unwrap()["id"].as_u64().unwrap();
    call(
        n2,
        "PUT",
        &format!("/api/accounts/{}", id("acct-1")),
        json!({"sip": null}),
    );
    let sip = json!({"sip": {"username": "mover", "password": PASSWORD}});
    call(n2, "PUT", &format!("/api/accounts/{}", id("acct-2")), sip);
    everywhere(&nodes, "the moved username", |n| {
        sip_user(n, "acct-2").as_deref() == Some("mover") && sip_user(n, "acct-1").is_none()
    });
    // acct-1 deleted on node 1 while node 3 is dead; node 3 comes back with it in its store.
    nodes[2].sbc.signal(libc::SIGKILL);
    let id1 = account(&nodes[0], "acct-1").unwrap()["id"]
        .as_u64()
        .unwrap();
    let r = nodes[0].sbc.api(
        &nodes[0].token,
        "DELETE",
        &format!("/api/accounts/{id1}"),
        None,
    );
    assert!(r.get("error").is_none(), "delete refused: {r}");
    let n3 = &mut nodes[2];
    n3.sbc.start_again(&n3.net);
    wait_up(&nodes);
    everywhere(&nodes, "the delete", |n| account(n, "acct-1").is_none());
    std::thread::sleep(Duration::from_secs(1));
    for n in &nodes {
        assert!(
            account(n, "acct-1").is_none(),
            "the deleted account came back"
        );
        assert!(account(n, "acct-2").is_some());
    }
}
