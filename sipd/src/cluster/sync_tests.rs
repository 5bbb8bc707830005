//! The cluster's resync on a real `redis-server` (ours, on a random loopback port, no
//! persistence): Redis losing its data, a subscriber dropped, changes made during a resync,
//! pruning, and a second node with a name already in use. Skipped when redis-server is not
//! installed and CI is not set (`cargo xtask setup` installs it).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::interfaces::{ClientLike, HashesInterface, KeysInterface};
use relay_user::DataPlane;
use sipd_core::b2bua::Offence;

use super::*;
use crate::firewall::{BanRecord, BansConfig};
use crate::store::Store;

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Option<Redis> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            assert!(std::env::var_os("CI").is_none(), "redis-server missing");
            eprintln!("skipped: redis-server not installed (cargo xtask setup)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .ok()?
            .port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Redis { child, port })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn client(&self) -> Client {
        let c = Builder::from_config(RedisConfig::from_url(&self.url()).unwrap())
            .build()
            .unwrap();
        c.init().await.unwrap();
        c
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Node {
    _dir: tempfile::TempDir,
    fw: Arc<Firewall>,
    c: Arc<Cluster>,
}

fn node(redis: &Redis, name: &str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let config = crate::config::Config {
        cluster: Some(ClusterConfig {
            redis: redis.url(),
            node: Some(name.into()),
            heartbeat_ms: 100,
            node_ttl_ms: 400,
            ..ClusterConfig::default()
        }),
        ..Default::default()
    };
    let fw = Arc::new(Firewall::new(
        &config.firewall,
        &BansConfig::default(),
        store.clone(),
        Arc::new(DataPlane::userspace(name)),
    ));
    let c = Cluster::start(&config, store, fw.clone()).unwrap();
    Node { _dir: dir, fw, c }
}

async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ban(fw: &Firewall, last: u8) {
    let ip = std::net::IpAddr::from([198, 51, 100, last]);
    fw.ban(
        ip,
        Duration::from_secs(3600),
        Offence::Scanner,
        None,
        unix_ms(),
    );
}

fn unix_ms() -> u64 {
    crate::mgmt::unix_ms(std::time::SystemTime::now())
}

async fn in_redis(r: &Client, prefix: &str) -> bool {
    let v: Option<String> = r.hget("sbc:bans", prefix).await.unwrap();
    v.is_some()
}

/// Redis loses everything (FLUSHALL, as a restart without persistence would) while the node
/// stays connected: the new epoch is noticed and the node's bans go back up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_epoch_puts_everything_back() {
    let Some(redis) = Redis::start() else { return };
    let r = redis.client().await;
    let n = node(&redis, "n1");
    eventually("up", async || n.c.is_up()).await;
    ban(&n.fw, 1);
    eventually("ban written", async || {
        in_redis(&r, "198.51.100.1/32").await
    })
    .await;
    let _: () = r.flushall(false).await.unwrap();
    eventually("ban back after the flush", async || {
        in_redis(&r, "198.51.100.1/32").await
    })
    .await;
    assert!(n.c.counters().epoch_changes >= 1);
}

/// The other node's subscriber is dropped and a change reaches only the hash meanwhile: the
/// reconnection starts a resync that brings it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_subscriber_resyncs() {
    let Some(redis) = Redis::start() else { return };
    let r = redis.client().await;
    let n = node(&redis, "n2");
    eventually("up", async || n.c.is_up()).await;
    let before = n.c.counters().reconnects;
    let _: () = r
        .custom(fred::cmd!("CLIENT"), vec!["KILL", "TYPE", "pubsub"])
        .await
        .unwrap();
    // Written, not published: as if the message had been sent while it was away.
    let mut rec = BanRecord::removal("203.0.113.9/32".parse().unwrap(), unix_ms());
    rec.removed = false;
    rec.origin = "elsewhere".into();
    let _: () = r
        .hset(
            "sbc:bans",
            ("203.0.113.9/32", serde_json::to_string(&rec).unwrap()),
        )
        .await
        .unwrap();
    eventually("missed ban applied", async || {
        n.fw.ban_views()
            .iter()
            .any(|b| b.prefix == "203.0.113.9/32")
    })
    .await;
    assert!(n.c.counters().reconnects > before);
}

/// A ban made while a resync runs (a long one: 800 operators' bans of another node to
/// apply, each written to the store) reaches Redis after it; the heartbeat goes on
/// meanwhile (its key, with a TTL of 400 ms, never lapses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_during_a_resync_are_sent_after_it() {
    let Some(redis) = Redis::start() else { return };
    let r = redis.client().await;
    let n = node(&redis, "n3");
    eventually("up", async || n.c.is_up()).await;
    let now = unix_ms();
    for i in 0..800u32 {
        let mut rec = BanRecord::removal(
            format!("10.{}.{}.1/32", i / 256, i % 256).parse().unwrap(),
            now,
        );
        rec.removed = false;
        rec.origin = "elsewhere".into();
        let _: () = r
            .hset(
                "sbc:bans",
                (rec.prefix.as_str(), serde_json::to_string(&rec).unwrap()),
            )
            .await
            .unwrap();
    }
    let t = Instant::now();
    n.c.set_status(Status::Down);
    tokio::time::sleep(Duration::from_millis(150)).await;
    ban(&n.fw, 7);
    eventually("up again", async || {
        let alive: i64 = r.exists("sbc:node:n3").await.unwrap();
        assert_eq!(alive, 1, "heartbeat key lapsed during the resync");
        n.c.is_up()
    })
    .await;
    eprintln!("resync took about {:?}", t.elapsed());
    eventually("the ban made meanwhile in Redis", async || {
        in_redis(&r, "198.51.100.7/32").await
    })
    .await;
}

/// Expired bans and old tombstones leave the hash while connected; live bans stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_runs_while_connected() {
    let Some(redis) = Redis::start() else { return };
    let r = redis.client().await;
    let n = node(&redis, "n4");
    eventually("up", async || n.c.is_up()).await;
    let now = unix_ms();
    let mut expired = BanRecord::removal("192.0.2.1/32".parse().unwrap(), now - 3_600_000);
    expired.removed = false;
    expired.until_ms = Some(now - 600_000);
    let old = BanRecord::removal("192.0.2.2/32".parse().unwrap(), now - 8 * 24 * 3_600_000);
    let mut live = expired.clone();
    live.prefix = "192.0.2.3/32".into();
    live.until_ms = Some(now + 600_000);
    for rec in [&expired, &old, &live] {
        let _: () = r
            .hset(
                "sbc:bans",
                (rec.prefix.as_str(), serde_json::to_string(rec).unwrap()),
            )
            .await
            .unwrap();
    }
    eventually("pruned", async || {
        !in_redis(&r, "192.0.2.1/32").await && !in_redis(&r, "192.0.2.2/32").await
    })
    .await;
    assert!(in_redis(&r, "192.0.2.3/32").await);
    assert!(n.c.counters().bans_pruned >= 2);
}

/// A second process with a live node's name refuses to join; the first keeps its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_name_refuses_to_join() {
    let Some(redis) = Redis::start() else { return };
    let r = redis.client().await;
    let first = node(&redis, "same");
    eventually("up", async || first.c.is_up()).await;
    let second = node(&redis, "same");
    eventually("conflict seen", async || second.c.name_conflict().is_some()).await;
    assert!(!second.c.is_up());
    assert!(second.c.counters().name_conflict);
    let key: String = r.get("sbc:node:same").await.unwrap();
    assert!(key.starts_with(&format!("{} ", first.c.instance)), "{key}");
    // Its shared limits are fenced: a lease under the name would take the first's field.
    let acct = crate::shared_limits::Scope::Account("acct".into());
    let granted = second
        .c
        .limits
        .lease(crate::shared_limits::Kind::Sessions, &acct, 10, 0, true)
        .await;
    assert!(granted <= 10);
    assert!(matches!(
        second.c.limits.health(),
        crate::shared_limits::Health::Away { .. }
    ));
    let fields: std::collections::HashMap<String, String> =
        r.hgetall("sbc:lease:sessions:account:acct").await.unwrap();
    assert!(
        fields.is_empty(),
        "nothing leased under the shared name: {fields:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(first.c.is_up());
}

/// A restart of the same node (its previous key left by a hand-over) joins at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_name_is_taken_at_once() {
    let Some(redis) = Redis::start() else { return };
    let first = node(&redis, "ho");
    eventually("up", async || first.c.is_up()).await;
    first.c.leave(false).await;
    // Long enough that only taking a key marked left lets the next process in.
    let r = redis.client().await;
    let _: bool = r.pexpire("sbc:node:ho", 60_000, None).await.unwrap();
    let second = node(&redis, "ho");
    eventually("up", async || second.c.is_up()).await;
    assert!(second.c.name_conflict().is_none());
}
