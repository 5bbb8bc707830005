//! A cluster of three `sipd` nodes (XDP, each in its own carrier — relay — vendor
//! namespaces) sharing one `redis-server` in a namespace of its own (see `cluster/mod.rs`).
//!
//! (a) A scanner banned by node 1's IDS is dropped by node 3's kernel (its XDP drop counter
//!     grows for packets from that source), and node 3's audit names node 1.
//! (b) 100 operator bans on node 1: the time until each is in node 3's kernel ban map
//!     (min / median / p99 / max printed); an unban on node 1 leaves node 3's map.
//! (c) Redis stopped for 10 s, then restarted empty, or with the snapshot it saved before
//!     stopping: every node raises `cluster_down` and puts a call through on its own; a ban
//!     made on node 1 during the outage reaches node 3's kernel afterwards (one on node 2
//!     reaches nodes 1 and 3), an unban made on node 3 during it is not undone by the
//!     others' or Redis's old copies, and every node's alert clears.
//! (c') A ban lifted while a node was dead (SIGKILL) stays lifted when that node starts again
//!     with the ban still in its pinned kernel map and its store.
//! (d) and (e): calls and provisioning across nodes (see each test).
//! (f) Redis Sentinel: nodes find the master through a sentinel and follow a failover to the
//!     promoted replica.
//!
//! (f), (g) Shared limits and balance: see `cluster/limits.rs`.
//!
//! Before this work (no `[cluster]`): a node knew nothing of another's bans; (a) and (b)
//! saw no drop and no ban on node 3.

#[path = "cluster/mod.rs"]
mod harness;
#[path = "cluster/limits.rs"]
mod limits;
mod sbc;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use harness::{Callable, Node, eventually, sentinel};
use relay_user::Cidr;
use sbc::*;
use serde_json::json;
use tests::require_privileged;
use tests::sip::RawSip;

const ATTACK_PORT: u16 = 41_000;

fn all_up(nodes: &[Node]) -> bool {
    nodes.iter().all(|n| n.sbc.metric("sipd_cluster_up") == 1)
}

fn wait_up(nodes: &[Node]) {
    assert!(
        eventually(Duration::from_secs(20), || all_up(nodes)),
        "the nodes did not connect to Redis:\n{}",
        nodes[0].sbc.log_text()
    );
}

/// A SIP request from `from`: an INVITE with a scanner's User-Agent (the IDS bans it), or a
/// plain OPTIONS (nothing to ban).
fn request(from: &RawSip, scanner: bool, n: u32) -> String {
    let (l, r) = (from.local(), from.to);
    let tag = format!("cl{n}x{}", l.port());
    let (method, ua) = if scanner {
        ("INVITE", "friendly-scanner")
    } else {
        ("OPTIONS", "probe")
    };
    format!(
        "{method} sip:{CLD}@{r} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK-{tag}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{CLI}@{ip}>;tag={tag}\r\nTo: <sip:{CLD}@{r}>\r\n\
         Call-ID: {tag}@{ip}\r\nCSeq: 1 {method}\r\nContact: <sip:{CLI}@{l}>\r\n\
         User-Agent: {ua}\r\nContent-Length: 0\r\n\r\n",
        ip = l.ip()
    )
}

/// Whether node's kernel holds a ban of exactly `prefix`.
struct KernelBans {
    maps: relay_user::maps::XdpMaps,
    _ebpf: aya::Ebpf,
}

impl KernelBans {
    fn of(sbc: &Sbc) -> KernelBans {
        let mut ebpf =
            relay_user::loader::load_pinned(relay_user::object::ebpf_object(), &sbc.instance)
                .expect("open the instance's pinned maps");
        let maps = relay_user::maps::XdpMaps::from_ebpf(&mut ebpf).expect("maps");
        KernelBans { maps, _ebpf: ebpf }
    }

    fn has(&self, prefix: Cidr) -> bool {
        self.maps.ban_get(prefix).ok().flatten().is_some()
    }
}

/// A socket of `scanner` (given `/len` on the node's carrier side) talking to the node's SIP
/// port.
fn scanner_at(node: &Node, scanner: Ipv4Addr, len: u8) -> RawSip {
    let topo = &node.net.topo;
    topo.caller
        .ip([
            "addr",
            "add",
            &format!("{scanner}/{len}"),
            "dev",
            &topo.caller_if.dev,
        ])
        .expect("scanner address");
    RawSip::bind_in(
        &topo.caller,
        SocketAddr::new(scanner.into(), ATTACK_PORT),
        node.sbc.sip(),
    )
    .expect("bind")
}

fn ban_listed(node: &Node, prefix: &str) -> bool {
    node.sbc
        .api(&node.token, "GET", "/api/bans", None)
        .as_array()
        .is_some_and(|a| a.iter().any(|b| b["prefix"] == prefix))
}

fn alerts(node: &Node) -> Vec<String> {
    node.sbc
        .api(&node.token, "GET", "/api/alerts", None)
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["code"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn ban(node: &Node, addr: &str, note: &str) {
    let r = node.sbc.api(
        &node.token,
        "POST",
        "/api/bans",
        Some(&json!({"addr": addr, "duration_secs": 3600, "reason": note})),
    );
    assert!(r.get("prefix").is_some(), "ban {addr} refused: {r}");
}

fn unban(node: &Node, prefix: &str) {
    let path = format!("/api/bans/{}", prefix.replace('/', "%2F"));
    let r = node.sbc.api(&node.token, "DELETE", &path, None);
    assert!(r.is_null(), "unban {prefix}: {r}");
}

#[test]
fn a_scanner_banned_on_node_1_is_dropped_by_node_3s_kernel() {
    require_privileged!();
    let _g = serial();
    let (_redis, nodes) = harness::start(3, &Prov::default());
    wait_up(&nodes);
    let (n1, n3) = (&nodes[0], &nodes[2]);

    // The scanner, on node 1's carrier network.
    let c = n1.net.topo.caller_if.ipv4.octets();
    let scanner = Ipv4Addr::new(c[0], c[1], c[2], 66);
    let at1 = scanner_at(n1, scanner, 24);
    // The same source reaching node 3 (its carrier side may send from anything).
    let at3 = scanner_at(n3, scanner, 32);
    let prefix = Cidr::host(IpAddr::V4(scanner));
    let k3 = KernelBans::of(&n3.sbc);
    assert!(!k3.has(prefix), "node 3 has no ban of the scanner yet");
    let dropped_before = n3.sbc.kernel_stats()["drop_banned"];

    at1.send(request(&at1, true, 1).as_bytes()).expect("send");
    let k1 = KernelBans::of(&n1.sbc);
    assert!(
        eventually(Duration::from_secs(5), || k1.has(prefix)),
        "node 1's IDS did not ban the scanner:\n{}",
        n1.sbc.log_text()
    );
    let t0 = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || k3.has(prefix)),
        "the ban never reached node 3's kernel:\n{}",
        n3.sbc.log_text()
    );
    let propagated = t0.elapsed();
    let mut n = 0;
    let dropped = eventually(Duration::from_secs(5), || {
        n += 1;
        let _ = at3.send(request(&at3, false, n).as_bytes());
        n3.sbc.kernel_stats()["drop_banned"] > dropped_before
    });
    assert!(dropped, "node 3's XDP did not drop the scanner's packets");
    println!(
        "scanner banned on node 1: in node 3's kernel map {:.1} ms later",
        propagated.as_secs_f64() * 1000.0
    );

    // Node 3's listing and audit say where it came from.
    let bans = n3.sbc.api(&n3.token, "GET", "/api/bans", None);
    let b = bans
        .as_array()
        .and_then(|a| a.iter().find(|b| b["prefix"] == prefix.to_string()))
        .unwrap_or_else(|| panic!("not in node 3's list: {bans}"))
        .clone();
    assert_eq!(b["rule"], "scanner", "{b}");
    let audit = n3.sbc.api(&n3.token, "GET", "/api/audit", None);
    assert!(
        audit.to_string().contains("cluster:node-1"),
        "node 3's audit does not name node 1: {audit}"
    );
}

#[test]
fn ban_propagation_over_100_bans() {
    require_privileged!();
    let _g = serial();
    let (_redis, nodes) = harness::start(3, &Prov::default());
    wait_up(&nodes);
    let (n1, n3) = (&nodes[0], &nodes[2]);
    let prefixes: Vec<Cidr> = (0..100u8)
        .map(|i| Cidr::host(IpAddr::V4(Ipv4Addr::new(198, 18, 7, i + 1))))
        .collect();
    let instance = n3.sbc.instance.clone();
    let watched = prefixes.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    // Node 3's kernel map, polled as fast as it answers until every ban is there.
    let poller = std::thread::spawn(move || {
        let mut ebpf =
            relay_user::loader::load_pinned(relay_user::object::ebpf_object(), &instance)
                .expect("pinned maps");
        let maps = relay_user::maps::XdpMaps::from_ebpf(&mut ebpf).expect("maps");
        let mut seen: Vec<Option<Instant>> = vec![None; watched.len()];
        let end = Instant::now() + Duration::from_secs(120);
        while seen.iter().any(Option::is_none) && Instant::now() < end {
            for (i, p) in watched.iter().enumerate() {
                if seen[i].is_none() && maps.ban_get(*p).ok().flatten().is_some() {
                    seen[i] = Some(Instant::now());
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = tx.send(seen);
    });
    // When each request left (an upper bound: it includes node 1's API, TLS and curl) and
    // when node 1 answered it (the ban was in node 1's kernel by then).
    let mut sent = Vec::new();
    let mut made = Vec::new();
    for p in &prefixes {
        sent.push(Instant::now());
        ban(n1, &p.addr().to_string(), "propagation");
        made.push(Instant::now());
    }
    let seen = rx.recv().expect("poller");
    poller.join().expect("poller");
    let seen: Vec<Instant> = seen
        .into_iter()
        .map(|s| s.expect("a ban never reached node 3"))
        .collect();
    for (label, from) in [("request sent", &sent), ("node 1's answer", &made)] {
        let mut ms: Vec<f64> = seen
            .iter()
            .zip(from)
            .map(|(s, m)| s.saturating_duration_since(*m).as_secs_f64() * 1000.0)
            .collect();
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        println!(
            "ban propagation node 1 -> node 3's kernel, 100 bans, from the {label}: \
             min {:.1} ms, median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms[0],
            at(0.5),
            at(0.99),
            ms[ms.len() - 1]
        );
    }
    // An unban on node 1 leaves node 3's kernel too.
    let k3 = KernelBans::of(&n3.sbc);
    unban(n1, &prefixes[0].to_string());
    assert!(
        eventually(Duration::from_secs(10), || !k3.has(prefixes[0])),
        "the unban never reached node 3"
    );
    assert!(k3.has(prefixes[1]));
}

/// How Redis comes back after the outage.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Comeback {
    /// Empty: it lost everything (no persistence): the nodes put it all back.
    Fresh,
    /// From the snapshot it saved just before it stopped (same data dir): it holds an older
    /// state than the nodes, which must not undo what they did meanwhile.
    Stale,
}

/// Redis stopped for 10 s and restarted (`comeback`): every node raises `cluster_down` and
/// keeps putting calls through on its own; a ban made on node 1 during the outage reaches node
/// 3's kernel afterwards, one made on node 2 reaches nodes 1 and 3, an unban made on node 3
/// is not undone by the others' (or Redis's) old copies, and the alert clears.
fn redis_outage(comeback: Comeback) {
    let (mut redis, nodes) = harness::start(3, &Prov::default());
    wait_up(&nodes);
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);
    // Made before the outage, lifted on node 3 during it.
    ban(n1, "203.0.113.50", "lifted during the outage");
    assert!(eventually(Duration::from_secs(10), || nodes
        .iter()
        .all(|n| ban_listed(n, "203.0.113.50/32"))));
    let calling: Vec<Callable> = nodes.iter().map(Callable::of).collect();
    let resyncs: Vec<u64> = nodes
        .iter()
        .map(|n| n.sbc.metric("sipd_cluster_resyncs_total"))
        .collect();

    if comeback == Comeback::Stale {
        assert_eq!(redis.cli(&["SAVE"]).trim(), "OK");
    }
    let down = Instant::now();
    redis.stop();
    assert!(
        eventually(Duration::from_secs(15), || nodes
            .iter()
            .all(|n| n.sbc.metric("sipd_cluster_up") == 0)),
        "the nodes did not notice Redis is gone"
    );
    for (i, n) in nodes.iter().enumerate() {
        let a = alerts(n);
        assert!(
            a.iter().any(|a| a == "cluster_down"),
            "no cluster_down alert on node {}: {a:?}",
            i + 1
        );
    }
    // The nodes keep working on their own: a ban applies where it is made at once; bans
    // already applied stay; every node puts a call through.
    ban(n1, "203.0.113.76", "made on node 1 during the outage");
    ban(n2, "203.0.113.77", "made on node 2 during the outage");
    assert!(ban_listed(n2, "203.0.113.77/32"));
    unban(n3, "203.0.113.50/32");
    assert!(ban_listed(n1, "203.0.113.50/32"), "applied bans stay");
    for (i, (n, c)) in nodes.iter().zip(&calling).enumerate() {
        let t = Instant::now();
        let code = c.call(n);
        assert_eq!(
            code,
            Some(200),
            "node {} did not put a call through while Redis was away:\n{}",
            i + 1,
            n.sbc.log_text()
        );
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "node {}'s call waited on Redis: {:?}",
            i + 1,
            t.elapsed()
        );
    }
    // The outage lasts 10 s in all (a scenario length, not a proof).
    std::thread::sleep(Duration::from_secs(10).saturating_sub(down.elapsed()));
    redis.run();
    if comeback == Comeback::Stale {
        let old = redis.cli(&["HGET", "sbct:bans", "203.0.113.50/32"]);
        assert!(
            old.contains("203.0.113.50") && !old.contains("\"removed\":true"),
            "Redis did not come back with its old copy: {old}"
        );
    }

    assert!(
        eventually(Duration::from_secs(20), || all_up(&nodes)),
        "the nodes did not reconnect"
    );
    for (i, n) in nodes.iter().enumerate() {
        assert!(
            n.sbc.metric("sipd_cluster_resyncs_total") > resyncs[i],
            "node {} did not resync",
            i + 1
        );
    }
    let k3 = KernelBans::of(&n3.sbc);
    assert!(
        eventually(Duration::from_secs(10), || k3
            .has("203.0.113.76/32".parse().unwrap())),
        "node 1's outage ban never reached node 3's kernel:\n{}",
        n3.sbc.log_text()
    );
    for n in [n1, n3] {
        assert!(
            eventually(Duration::from_secs(10), || ban_listed(n, "203.0.113.77/32")),
            "node 2's outage ban did not reach every node"
        );
    }
    for n in [n1, n2] {
        assert!(
            eventually(Duration::from_secs(10), || !ban_listed(
                n,
                "203.0.113.50/32"
            )),
            "the outage's unban was undone"
        );
    }
    let k1 = KernelBans::of(&n1.sbc);
    assert!(k1.has("203.0.113.77/32".parse().unwrap()));
    assert!(!k1.has("203.0.113.50/32".parse().unwrap()));
    assert!(!k3.has("203.0.113.50/32".parse().unwrap()));
    for (i, n) in nodes.iter().enumerate() {
        assert!(
            eventually(Duration::from_secs(10), || !alerts(n)
                .iter()
                .any(|a| a == "cluster_down")),
            "node {}'s alert did not clear",
            i + 1
        );
    }
    // Redis holds everything again, the unban as a tombstone.
    let hash = redis.cli(&["HKEYS", "sbct:bans"]);
    for p in ["203.0.113.76/32", "203.0.113.77/32"] {
        assert!(hash.contains(p), "{p} not in Redis: {hash}");
    }
    let lifted = redis.cli(&["HGET", "sbct:bans", "203.0.113.50/32"]);
    assert!(lifted.contains("\"removed\":true"), "{lifted}");
    // Calls go on once reconnected.
    for (n, c) in nodes.iter().zip(&calling) {
        assert_eq!(c.call(n), Some(200), "{}", n.sbc.log_text());
    }
}

#[test]
fn a_redis_outage_is_survived_and_resynced_both_ways() {
    require_privileged!();
    let _g = serial();
    redis_outage(Comeback::Fresh);
}

#[test]
fn a_redis_back_with_its_old_data_does_not_undo_the_outages_changes() {
    require_privileged!();
    let _g = serial();
    redis_outage(Comeback::Stale);
}

#[test]
fn a_ban_lifted_while_a_node_was_dead_stays_lifted_when_it_returns() {
    require_privileged!();
    let _g = serial();
    let (redis, mut nodes) = harness::start(3, &Prov::default());
    wait_up(&nodes);
    // An IDS ban (kernel and table only, not in the store): the kind a restarted node adopts
    // from its pinned kernel map, as new.
    let n1 = &nodes[0];
    let c = n1.net.topo.caller_if.ipv4.octets();
    let scanner = Ipv4Addr::new(c[0], c[1], c[2], 67);
    let at1 = scanner_at(n1, scanner, 24);
    at1.send(request(&at1, true, 1).as_bytes()).expect("send");
    let prefix = format!("{scanner}/32");
    assert!(
        eventually(Duration::from_secs(10), || nodes
            .iter()
            .all(|n| ban_listed(n, &prefix))),
        "the IDS ban did not reach every node"
    );
    nodes[2].sbc.signal(libc::SIGKILL);
    unban(&nodes[0], &prefix);
    assert!(eventually(Duration::from_secs(10), || !ban_listed(
        &nodes[1], &prefix
    )));
    // Node 3 comes back with the ban still in its pinned kernel map.
    let n3 = &mut nodes[2];
    n3.sbc.start_again(&n3.net);
    wait_up(&nodes);
    // Its resync wrote what it had before it was Up: Redis must still hold the unban.
    let record = redis.cli(&["HGET", "sbct:bans", &prefix]);
    assert!(record.contains("\"removed\":true"), "{record}");
    let n3 = &nodes[2];
    assert!(
        eventually(Duration::from_secs(10), || !ban_listed(n3, &prefix)),
        "node 3 kept the lifted ban"
    );
    assert!(
        eventually(Duration::from_secs(10), || !KernelBans::of(&n3.sbc)
            .has(prefix.parse().unwrap())),
        "node 3's kernel kept the lifted ban"
    );
    for n in &nodes[..2] {
        assert!(!ban_listed(n, &prefix), "the lifted ban came back");
    }
}

/// (d) A call through node 2 is listed by node 1's `GET /api/cluster/calls` and hung up from
/// node 1; its CDR reaches the stream `<prefix>:cdrs` with node 2's name. A node killed
/// outright is listed with an error, not waited for.
#[test]
fn calls_are_seen_and_hung_up_across_nodes_and_cdrs_are_streamed() {
    require_privileged!();
    let _g = serial();
    let (redis, mut nodes) = harness::start(3, &Prov::default());
    wait_up(&nodes);
    let (n1, n2) = (&nodes[0], &nodes[1]);
    let uas = n2
        .net
        .uas("uas.xml", SIP_PORT, 1, Duration::from_millis(100));
    let c = n2.net.uac("uac.xml", n2.sbc.sip(), Duration::from_secs(30));
    let uac = c.spawn(&n2.net.topo.caller).expect("uac");
    let mut id = None;
    assert!(
        eventually(Duration::from_secs(15), || {
            let v = n1.sbc.api(&n1.token, "GET", "/api/cluster/calls", None);
            id = v.as_array().and_then(|a| {
                a.iter()
                    .find(|n| n["node"] == "node-2")
                    .and_then(|n| n["calls"].as_array()?.first()?["id"].as_u64())
            });
            id.is_some()
        }),
        "node 2's call never listed by node 1"
    );
    let id = id.unwrap();
    let r = n1.sbc.api(
        &n1.token,
        "DELETE",
        &format!("/api/cluster/calls/node-2/{id}"),
        None,
    );
    assert!(r.is_null(), "hang-up refused: {r}");
    assert!(
        eventually(Duration::from_secs(10), || n2
            .sbc
            .api(&n2.token, "GET", "/api/calls", None)
            .as_array()
            .is_some_and(Vec::is_empty)),
        "the call is still up on node 2"
    );
    drop(uac.finish());
    let _ = uas.finish();
    assert!(
        eventually(Duration::from_secs(10), || redis
            .cli(&["XRANGE", "sbct:cdrs", "-", "+"])
            .contains("node-2")),
        "no CDR of node 2 in the stream: {}",
        redis.cli(&["XRANGE", "sbct:cdrs", "-", "+"])
    );
    let stream = redis.cli(&["XRANGE", "sbct:cdrs", "-", "+"]);
    for f in ["cost_micros", "staff:admin", "call_id", "cdr_id"] {
        assert!(stream.contains(f), "{f} not in the stream entry: {stream}");
    }

    // Node 3 dies: node 1 still answers, naming node 3's error.
    nodes[2].sbc.signal(libc::SIGKILL);
    let n1 = &nodes[0];
    let t = Instant::now();
    let v = n1.sbc.api(&n1.token, "GET", "/api/cluster/calls", None);
    let took = t.elapsed();
    let n3 = v
        .as_array()
        .and_then(|a| a.iter().find(|n| n["node"] == "node-3").cloned());
    // Listed with an error while its heartbeat key lives, then not at all.
    if let Some(n3) = n3 {
        assert!(n3["error"].is_string(), "{v}");
    }
    assert!(
        took < Duration::from_secs(9),
        "a dead node was waited for: {took:?}"
    );
    let r = n1
        .sbc
        .api(&n1.token, "DELETE", "/api/cluster/calls/node-3/1", None);
    assert!(
        r.to_string().contains("node-3"),
        "hanging up a dead node's call: {r}"
    );
}

/// (e) An account created through node 1's API (with its rule for node 3's carrier) reaches
/// node 3's store; node 3 then starts again with an empty store and puts a call of it
/// through (what it learnt from the cluster is in its core). Before: node 3 refused it (no
/// such account there), and a node started empty had the records in its store only.
#[test]
fn an_account_created_on_node_1_places_a_call_through_node_3() {
    require_privileged!();
    let _g = serial();
    // The imported account matches no CLI of the test's calls: only the new one will.
    let prov = Prov {
        cli_prefix: "99",
        ..Prov::default()
    };
    let (_redis, mut nodes) = harness::start(3, &prov);
    wait_up(&nodes);
    let (n1, n3) = (&nodes[0], &nodes[2]);
    let a = n1.sbc.api(
        &n1.token,
        "POST",
        "/api/accounts",
        Some(
            &json!({"name": "carrier-b", "tariff": "std", "balance": "50.00",
                     "cps_limit": 10, "max_sessions": 10}),
        ),
    );
    let id = a["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("account refused: {a}"));
    let remote = format!("{}/32", n3.net.topo.caller_if.ipv4);
    let r = n1.sbc.api(
        &n1.token,
        "POST",
        &format!("/api/accounts/{id}/rules"),
        Some(&json!({"name": "node3-office", "remote": remote,
                     "cli": {"prefix": "44"}, "cld": {"prefix": "33"}, "ip_only": true})),
    );
    assert!(r.get("name").is_some(), "rule refused: {r}");
    let has_rule = || {
        let accts = n3.sbc.api(&n3.token, "GET", "/api/accounts", None);
        let Some(b) = accts
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == "carrier-b"))
        else {
            return false;
        };
        let rules = n3.sbc.api(
            &n3.token,
            "GET",
            &format!("/api/accounts/{}/rules", b["id"]),
            None,
        );
        rules.to_string().contains("node3-office")
    };
    assert!(
        eventually(Duration::from_secs(10), has_rule),
        "the account never reached node 3:\n{}",
        n3.sbc.log_text()
    );
    // Node 3 starts again empty (its store gone): it learns every record from the cluster
    // and must load them into its running core, not only into its store.
    let n3 = &mut nodes[2];
    n3.sbc.signal(libc::SIGKILL);
    let data = n3.sbc.dir.join("data");
    for e in std::fs::read_dir(&data).expect("data dir").flatten() {
        let p = e.path();
        let _ = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
    }
    n3.sbc.start_again(&n3.net);
    wait_up(&nodes);
    let (n1, n3) = (&nodes[0], &nodes[2]);
    // The records are the cluster's, so is the vendor connection: node 1's vendor address.
    // Node 3 reaches a vendor host of its own at that address.
    let vendor = n1.net.topo.callee_if.ipv4;
    n3.net
        .topo
        .callee
        .ip([
            "addr",
            "add",
            &format!("{vendor}/32"),
            "dev",
            &n3.net.topo.callee_if.dev,
        ])
        .expect("vendor address at node 3");
    n3.net
        .topo
        .relay
        .ip([
            "route",
            "add",
            &format!("{vendor}/32"),
            "dev",
            &n3.net.topo.relay_callee_if.dev,
        ])
        .expect("route to it");
    let mut s = tests::sip::Sipp::new("uas.xml", SocketAddr::new(vendor.into(), SIP_PORT));
    s.calls = 1;
    s.pause = Duration::from_millis(100);
    s.var("rtp_port", &RTP_PORT.to_string());
    let mut uas = s.spawn(&n3.net.topo.callee).expect("uas");
    uas.wait_bound(&n3.net.topo.callee).expect("uas bound");
    let c = n3
        .net
        .uac("uac.xml", n3.sbc.sip(), Duration::from_millis(500));
    let uac = c.spawn(&n3.net.topo.caller).expect("uac").finish();
    let _ = uas.finish();
    let finals = uac.trace.final_counts("INVITE");
    assert_eq!(
        finals.get(&200),
        Some(&1),
        "node 3 did not put the call through: {uac}\n{}",
        n3.sbc.log_text()
    );
}

/// (f) Redis Sentinel: two nodes configured with a sentinel (not Redis's address) find the
/// master through it; a ban made on node 1 reaches node 2's kernel. The master then stops:
/// the sentinel promotes the replica, both nodes follow it (down, then up and resynced), and a
/// ban made on node 2 afterwards reaches node 1 and is in the new master.
#[test]
fn nodes_find_redis_through_a_sentinel_and_follow_a_failover() {
    require_privileged!();
    let _g = serial();
    let first = std::cell::RefCell::new(None::<String>);
    let (mut redis, nodes) = harness::start_with(2, &Prov::default(), |url, name| {
        // Redis's end of node 1's link: the sentinel's host and the master's.
        let host = first
            .borrow_mut()
            .get_or_insert_with(|| {
                url.trim_start_matches("redis://")
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .clone();
        format!(
            "[cluster]\nredis = \"redis://unused:6379/0\"\n\
             sentinels = [\"{host}:{}\"]\nsentinel_service = \"{}\"\nnode = \"{name}\"\n\
             key_prefix = \"sbct\"\nheartbeat_ms = 200\nnode_ttl_ms = 1000\n",
            sentinel::SENTINEL_PORT,
            sentinel::SERVICE
        )
    });
    let host = first.into_inner().expect("node 1's link");
    let mut sentinel = sentinel::Sentinel::start(&redis, &host);
    assert_eq!(
        sentinel.master(&redis),
        format!("{host}:{}", harness::REDIS_PORT)
    );
    wait_up(&nodes);
    let (n1, n2) = (&nodes[0], &nodes[1]);
    ban(n1, "203.0.113.90", "through the sentinel");
    let k2 = KernelBans::of(&n2.sbc);
    assert!(
        eventually(Duration::from_secs(5), || k2
            .has("203.0.113.90/32".parse().unwrap())),
        "node 1's ban never reached node 2's kernel:\n{}",
        n2.sbc.log_text()
    );

    // Failover: the master stops once the replica holds what it holds.
    assert!(
        eventually(Duration::from_secs(15), || sentinel.replica_synced(&redis)),
        "the replica never synced"
    );
    let resyncs: Vec<u64> = nodes
        .iter()
        .map(|n| n.sbc.metric("sipd_cluster_resyncs_total"))
        .collect();
    redis.stop();
    let promoted = format!("{host}:{}", sentinel::REPLICA_PORT);
    assert!(
        eventually(Duration::from_secs(30), || sentinel.master(&redis)
            == promoted),
        "the sentinel did not promote the replica: {}",
        sentinel.master(&redis)
    );
    assert!(
        eventually(Duration::from_secs(30), || nodes
            .iter()
            .enumerate()
            .all(|(i, n)| n.sbc.metric("sipd_cluster_up") == 1
                && n.sbc.metric("sipd_cluster_resyncs_total") > resyncs[i])),
        "the nodes did not follow the failover:\n{}",
        n1.sbc.log_text()
    );
    ban(n2, "203.0.113.91", "after the failover");
    let k1 = KernelBans::of(&n1.sbc);
    assert!(
        eventually(Duration::from_secs(5), || k1
            .has("203.0.113.91/32".parse().unwrap())),
        "node 2's ban after the failover never reached node 1:\n{}",
        n1.sbc.log_text()
    );
    let held = redis.cli_at(sentinel::REPLICA_PORT, &["HKEYS", "sbct:bans"]);
    for p in ["203.0.113.90/32", "203.0.113.91/32"] {
        assert!(held.contains(p), "{p} not in the new master: {held}");
    }
    sentinel.stop();
}
