//! (f) One account's limit of 10 calls up holds across the three nodes (every node's calls
//!     sampled, and Redis's leases), and a node killed outright gives its slots back once
//!     its heartbeat key expires: the two others then reach the whole limit.
//! (g) One balance paid by calls on the three nodes never goes below zero in Redis and ends
//!     equal to the start minus the sum of every node's CDR costs.
//!
//! Before the shared limits were wired into the nodes: each node enforced the limit on its
//! own, so (f) saw up to 3 x 10 calls up, and (g) spent the balance once per node.

use super::*;

const LEASES: &str = "sbct:lease:sessions:account:carrier-a";
const BALANCE: &str = "sbct:balance:carrier-a";

/// Calls up on `node` now, as its API lists them.
fn calls_up(node: &Node) -> usize {
    node.sbc
        .api(&node.token, "GET", "/api/calls", None)
        .as_array()
        .map_or(0, Vec::len)
}

/// A vendor taking `calls` calls and a carrier placing them through `node` at 10 per
/// second, each held for `hold`.
fn place(node: &Node, calls: u32, hold: Duration) -> (tests::sip::SippRun, tests::sip::SippRun) {
    let uas = node
        .net
        .uas("uas.xml", SIP_PORT, calls, Duration::from_millis(50));
    let mut c = node.net.uac("uac.xml", node.sbc.sip(), hold);
    c.calls = calls;
    c.rate = Some((10, Duration::from_secs(1)));
    c.deadline = hold + Duration::from_secs(15);
    let uac = c.spawn(&node.net.topo.caller).expect("uac");
    (uac, uas)
}

/// The sum of the calls up on `nodes`, sampled for `span`: the largest seen.
fn busiest(nodes: &[&Node], redis: &harness::Redis, span: Duration, limit: usize) -> usize {
    let end = Instant::now() + span;
    let mut max = 0;
    while Instant::now() < end {
        let up: usize = nodes.iter().map(|n| calls_up(n)).sum();
        assert!(
            up <= limit,
            "{up} calls up across the cluster (limit {limit})"
        );
        let leased: i64 = lease_fields(redis).values().sum();
        assert!(
            leased <= limit as i64,
            "{leased} slots leased (limit {limit})"
        );
        max = max.max(up);
        std::thread::sleep(Duration::from_millis(30));
    }
    max
}

/// The account's sessions lease per node, from Redis.
fn lease_fields(redis: &harness::Redis) -> std::collections::BTreeMap<String, i64> {
    let out = redis.cli(&["HGETALL", LEASES]);
    let l: Vec<&str> = out.lines().map(str::trim).collect();
    l.chunks(2)
        .filter_map(|c| Some((c.first()?.to_string(), c.get(1)?.parse().ok()?)))
        .collect()
}

#[test]
fn ten_calls_up_at_most_across_three_nodes_and_a_dead_nodes_slots_come_back() {
    require_privileged!();
    let _g = serial();
    let prov = Prov {
        max_sessions: 10,
        cps_limit: 100,
        ..Prov::default()
    };
    let (redis, mut nodes) = harness::start(3, &prov);
    wait_up(&nodes);
    let hold = Duration::from_secs(3);
    let runs: Vec<_> = nodes.iter().map(|n| place(n, 8, hold)).collect();
    let all: Vec<&Node> = nodes.iter().collect();
    let max = busiest(&all, &redis, Duration::from_millis(1500), 10);
    let per_node: Vec<usize> = nodes.iter().map(calls_up).collect();
    println!(
        "24 calls through 3 nodes, limit 10: at most {max} up at once ({per_node:?} per node)"
    );
    assert!(max >= 7, "the nodes competed for the limit (max {max} up)");
    let held_by_2 = lease_fields(&redis).get("node-2").copied().unwrap_or(0);
    assert!(
        held_by_2 > 0,
        "node 2 holds slots: {:?}",
        lease_fields(&redis)
    );

    // Node 2 dies with its calls up: its slots stay leased until its heartbeat key expires
    // (node_ttl_ms = 1000), then a live node's maintenance gives them back.
    let killed = Instant::now();
    nodes[1].sbc.signal(libc::SIGKILL);
    assert!(
        eventually(Duration::from_secs(10), || !lease_fields(&redis)
            .contains_key("node-2")),
        "node 2's slots were never reclaimed: {:?}",
        lease_fields(&redis)
    );
    println!(
        "node 2 killed holding {held_by_2} slots: reclaimed {:.1} s later",
        killed.elapsed().as_secs_f64()
    );
    for (i, (uac, uas)) in runs.into_iter().enumerate() {
        if i != 1 {
            drop(uac.finish());
        }
        // Refused calls never reach the vendor: it is stopped, not waited for.
        drop(uas);
    }
    let (n1, n3) = (&nodes[0], &nodes[2]);
    assert!(eventually(Duration::from_secs(10), || calls_up(n1)
        + calls_up(n3)
        == 0));
    // The two live nodes now reach the whole limit, beyond what node 2 left them.
    let runs = [place(n1, 8, hold), place(n3, 8, hold)];
    let max = busiest(&[n1, n3], &redis, Duration::from_millis(2000), 10);
    println!("16 calls through nodes 1 and 3 after: at most {max} up");
    assert!(
        max as i64 > 10 - held_by_2,
        "nodes 1 and 3 got node 2's {held_by_2} slots back (max {max} up)"
    );
    for (uac, uas) in runs {
        drop(uac.finish());
        drop(uas);
    }
}

#[test]
fn a_balance_paid_from_three_nodes_never_goes_below_zero() {
    require_privileged!();
    let _g = serial();
    // 0.10 a second, 0.20 set aside per call: 1.00 pays about five 2 s calls of the twelve.
    let prov = Prov {
        rate: "6.00",
        expected_call_secs: 2,
        balance: "1.00",
        cps_limit: 100,
        ..Prov::default()
    };
    let (redis, mut nodes) = harness::start(3, &prov);
    wait_up(&nodes);
    let runs: Vec<_> = nodes
        .iter()
        .map(|n| place(n, 4, Duration::from_secs(2)))
        .collect();
    let balance = || -> Option<i64> { redis.cli(&["GET", BALANCE]).trim().parse().ok() };
    let mut lowest = i64::MAX;
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        if let Some(b) = balance() {
            assert!(b >= 0, "the shared balance went below zero: {b}");
            lowest = lowest.min(b);
        }
        if nodes.iter().all(|n| calls_up(n) == 0) && lowest < 1_000_000 {
            break;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    for (uac, uas) in runs {
        drop(uac.finish());
        drop(uas);
    }
    assert!(
        eventually(Duration::from_secs(10), || nodes
            .iter()
            .all(
                |n| calls_up(n) == 0 && n.sbc.metric("sipd_cluster_debits_queued") == 0
            )),
        "calls still up or debits still queued"
    );
    let end_balance = balance().expect("the shared balance");
    assert!(end_balance >= 0, "{end_balance}");
    let mut spent = 0;
    let mut paying_nodes = 0;
    for n in &mut nodes {
        let cost: i64 = n
            .sbc
            .cdrs()
            .iter()
            .map(|c| c["cost"].as_i64().unwrap_or(0))
            .sum();
        spent += cost;
        paying_nodes += usize::from(cost > 0);
    }
    println!(
        "shared balance 1.00: {spent} micros spent by calls on {paying_nodes} nodes, {end_balance} left"
    );
    assert_eq!(
        end_balance,
        1_000_000 - spent,
        "start minus every CDR's cost"
    );
    assert!(spent >= 500_000, "the calls used the balance ({spent})");
    assert!(paying_nodes >= 2, "calls on several nodes paid");
}
