//! Shared limits on a real `redis-server` (started here on a random loopback port): three
//! `SharedLimits` = three nodes on one Redis. Skipped only when redis-server is not
//! installed and CI is not set (`cargo xtask setup` installs it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::*;
use sipd::shared_limits::{Debit, Health, Kind, Scope, Settings, SharedLimits};
use sipd_core::records::Micros;

const PREFIX: &str = "sbc";
/// The account, by name (as the cluster keys it), and its id in the cores.
const ACCOUNT: &str = "acct-7";
const ACCOUNT_ID: u64 = 7;

/// A redis-server of our own, persisted (AOF, fsync always) so a restart keeps its data.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

fn redis_installed() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is not installed (cargo xtask setup installs it)"
        );
        eprintln!("skipped: redis-server not installed (cargo xtask setup)");
    }
    found
}

impl Redis {
    fn start(dir: &Path) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut r = Redis {
            child: None,
            port,
            dir: dir.to_path_buf(),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it (by its PID) and waits for it to be gone.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis of the test's own (in a temporary directory, dropped last) and an admin client
/// on it; None where redis-server is not installed.
async fn redis_and_admin() -> Option<(tempfile::TempDir, Redis, Client)> {
    if !redis_installed() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let admin = client(&redis).await;
    Some((dir, redis, admin))
}

async fn client(redis: &Redis) -> Client {
    let config = Config::from_url(&redis.url()).expect("url");
    let client = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(1);
            c.internal_command_timeout = Duration::from_secs(1);
        })
        .set_policy(ReconnectPolicy::new_constant(0, 200))
        .build()
        .expect("client");
    client.init().await.expect("connected");
    client
}

/// A node: its client, its outbox (in its own sled store) and its heartbeat key, which this
/// test refreshes in the heartbeat's place.
struct Node {
    limits: Arc<SharedLimits>,
    _store: tempfile::TempDir,
    outbox: sled::Tree,
}

async fn node(redis: &Redis, admin: &Client, name: &str) -> Node {
    let store = tempfile::tempdir().expect("tempdir");
    let db = sled::open(store.path()).expect("sled");
    let outbox = db.open_tree("cluster_debits").expect("tree");
    beat(admin, name).await;
    let settings = Settings {
        timeout: Duration::from_millis(300),
        ..Settings::default()
    };
    let limits = SharedLimits::new(client(redis).await, name, PREFIX, settings, outbox.clone());
    Node {
        limits: Arc::new(limits),
        _store: store,
        outbox,
    }
}

/// Nodes "n1", "n2" and "n3" on `redis`.
async fn three_nodes(redis: &Redis, admin: &Client) -> [Node; 3] {
    [
        node(redis, admin, "n1").await,
        node(redis, admin, "n2").await,
        node(redis, admin, "n3").await,
    ]
}

async fn beat(admin: &Client, name: &str) {
    let _: () = admin
        .set(
            format!("{PREFIX}:node:{name}"),
            "1",
            Some(Expiration::PX(600_000)),
            None,
            false,
        )
        .await
        .expect("heartbeat");
    let _: () = admin
        .sadd(format!("{PREFIX}:nodes"), name)
        .await
        .expect("nodes");
}

async fn lease_sum(admin: &Client, key: &str) -> i64 {
    let all: std::collections::HashMap<String, i64> = admin.hgetall(key).await.expect("hgetall");
    all.values().sum()
}

fn sessions_key() -> String {
    format!("{PREFIX}:lease:sessions:account:{ACCOUNT}")
}

/// Polls `cond` until it holds or a generous deadline passes.
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_limit_holds_across_three_nodes() {
    let Some((_dir, redis, admin)) = redis_and_admin().await else {
        return;
    };
    let up = Arc::new(AtomicU32::new(0));
    let max_up = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for (i, name) in ["n1", "n2", "n3"].into_iter().enumerate() {
        let n = node(&redis, &admin, name).await;
        let (up, max_up) = (up.clone(), max_up.clone());
        tasks.push(tokio::spawn(async move {
            let mut in_use = 0u32;
            for step in 0..400u32 {
                // Each node places calls until its lease refuses, then hangs some up.
                let hang_up = in_use > 0 && (step + i as u32).is_multiple_of(3);
                if hang_up {
                    in_use -= 1;
                    up.fetch_sub(1, Ordering::SeqCst);
                }
                let cap = n
                    .limits
                    .lease(
                        Kind::Sessions,
                        &Scope::Account(ACCOUNT.into()),
                        10,
                        in_use,
                        true,
                    )
                    .await;
                if !hang_up && in_use < cap {
                    in_use += 1;
                    let now = up.fetch_add(1, Ordering::SeqCst) + 1;
                    max_up.fetch_max(now, Ordering::SeqCst);
                    assert!(now <= 10, "{now} calls up across the cluster");
                }
                tokio::task::yield_now().await;
            }
            n
        }));
    }
    let mut nodes = Vec::new();
    for t in tasks {
        nodes.push(t.await.expect("node task"));
    }
    let max = max_up.load(Ordering::SeqCst);
    assert!(max <= 10, "at most 10 up, saw {max}");
    assert!(
        max >= 6,
        "the nodes competed for the whole limit (max {max})"
    );
    assert!(lease_sum(&admin, &sessions_key()).await <= 10);
    assert!(nodes.iter().all(|n| n.limits.health() == Health::Up));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_nodes_slots_are_reclaimed() {
    let Some((_dir, redis, admin)) = redis_and_admin().await else {
        return;
    };
    let [n1, n2, n3] = three_nodes(&redis, &admin).await;
    let acct = Scope::Account(ACCOUNT.into());
    assert_eq!(
        n2.limits.lease(Kind::Sessions, &acct, 10, 7, false).await,
        8
    );
    assert_eq!(
        n1.limits.lease(Kind::Sessions, &acct, 10, 2, false).await,
        2
    );
    assert_eq!(
        n3.limits.lease(Kind::Sessions, &acct, 10, 0, false).await,
        0
    );
    assert_eq!(n3.limits.tick().await, Health::Up);
    assert_eq!(n3.limits.live_nodes(), 3);

    // n2 dies: its heartbeat key expires (deleted here).
    let _: () = admin.del(format!("{PREFIX}:node:n2")).await.unwrap();
    assert_eq!(n3.limits.tick().await, Health::Up);
    assert_eq!(n3.limits.live_nodes(), 2);
    let left: Option<i64> = admin.hget(sessions_key(), "n2").await.unwrap();
    assert_eq!(left, None, "n2's slots given back");
    assert_eq!(
        n3.limits.lease(Kind::Sessions, &acct, 10, 0, false).await,
        1
    );
    assert_eq!(
        n3.limits.lease(Kind::Sessions, &acct, 10, 8, false).await,
        8
    );
    assert_eq!(lease_sum(&admin, &sessions_key()).await, 10);
    // The live nodes' own leases are never reclaimed.
    assert_eq!(n1.limits.tick().await, Health::Up);
    let n1_left: Option<i64> = admin.hget(sessions_key(), "n1").await.unwrap();
    assert_eq!(n1_left, Some(2));
}

/// Places calls on three nodes against one balance: each reserves from the shared balance,
/// admits a call only within its reservation, and debits what the call cost.
async fn spend(n: &Node, tag: &str, calls: u32, debited: &AtomicI64) {
    const RESERVATION: i64 = 50_000;
    let mut held = 0i64;
    let mut open: Vec<(String, i64)> = Vec::new();
    for c in 0..calls {
        let budget = n
            .limits
            .budget(ACCOUNT, Micros(held), Micros(held + 2 * RESERVATION), false)
            .await;
        if budget.0 - held >= RESERVATION {
            held += RESERVATION;
            open.push((format!("{tag}-{c}"), RESERVATION - i64::from(c % 7) * 1_000));
        }
        if open.len() >= 3 || (c % 2 == 1 && !open.is_empty()) {
            let (id, cost) = open.remove(0);
            match n.limits.debit(ACCOUNT, &id, Micros(cost)).await.unwrap() {
                Debit::Applied(after) => assert!(after.0 >= 0, "balance went to {after:?}"),
                other => panic!("{id}: {other:?}"),
            }
            debited.fetch_add(cost, Ordering::SeqCst);
            held -= RESERVATION;
        }
        tokio::task::yield_now().await;
    }
    for (id, cost) in open {
        n.limits.debit(ACCOUNT, &id, Micros(cost)).await.unwrap();
        debited.fetch_add(cost, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_balance_never_below_zero() {
    let Some((_dir, redis, admin)) = redis_and_admin().await else {
        return;
    };
    let start = 1_000_000i64;
    let debited = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let n = node(&redis, &admin, name).await;
        if name == "n1" {
            assert!(n.limits.seed_balance(ACCOUNT, Micros(start)).await.unwrap());
        } else {
            assert!(!n.limits.seed_balance(ACCOUNT, Micros(1)).await.unwrap());
        }
        let debited = debited.clone();
        tasks.push(tokio::spawn(async move {
            spend(&n, n.limits.node().to_owned().as_str(), 200, &debited).await;
            n
        }));
    }
    let mut nodes = Vec::new();
    for t in tasks {
        nodes.push(t.await.expect("node task"));
    }
    let balance = nodes[0].limits.balance(ACCOUNT).await.unwrap();
    let spent = debited.load(Ordering::SeqCst);
    assert!(balance.0 >= 0, "balance {balance:?}");
    assert_eq!(balance.0, start - spent, "start - sum of debits");
    assert!(
        spent > start / 2,
        "the calls used the balance (spent {spent})"
    );
    // A top-up on one node is what every node reserves from next.
    assert_eq!(
        nodes[1]
            .limits
            .top_up(ACCOUNT, Micros(500_000), "t1")
            .await
            .unwrap(),
        Debit::Applied(Micros(balance.0 + 500_000))
    );
    let b = nodes[2]
        .limits
        .budget(ACCOUNT, Micros(0), Micros(400_000), false)
        .await;
    assert_eq!(b, Micros(400_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debit_retried_after_a_crash_is_applied_once() {
    let Some((_dir, redis, admin)) = redis_and_admin().await else {
        return;
    };
    let n1 = node(&redis, &admin, "n1").await;
    n1.limits
        .seed_balance(ACCOUNT, Micros(10_000))
        .await
        .unwrap();
    assert_eq!(
        n1.limits
            .debit(ACCOUNT, "n1-42", Micros(3_000))
            .await
            .unwrap(),
        Debit::Applied(Micros(7_000))
    );
    // The crash: Redis applied it, the outbox entry was not removed yet. A restarted node
    // (a new SharedLimits on the same outbox) sends it again.
    let entry = sipd::shared_limits::outbox_value(ACCOUNT, Micros(3_000));
    n1.outbox.insert("n1-42", entry).unwrap();
    let restarted = SharedLimits::new(
        client(&redis).await,
        "n1",
        PREFIX,
        Settings::default(),
        n1.outbox.clone(),
    );
    assert_eq!(restarted.queued_debits(), 1);
    assert_eq!(restarted.flush_outbox().await.unwrap(), 1);
    assert_eq!(restarted.queued_debits(), 0);
    assert_eq!(
        restarted
            .debit(ACCOUNT, "n1-42", Micros(3_000))
            .await
            .unwrap(),
        Debit::AlreadyApplied
    );
    assert_eq!(restarted.balance(ACCOUNT).await.unwrap(), Micros(7_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_falls_back_then_converges() {
    let Some((_dir, mut redis, admin)) = redis_and_admin().await else {
        return;
    };
    let nodes = three_nodes(&redis, &admin).await;
    let acct = Scope::Account(ACCOUNT.into());
    let start = 1_000_000i64;
    nodes[0]
        .limits
        .seed_balance(ACCOUNT, Micros(start))
        .await
        .unwrap();
    for n in &nodes {
        assert_eq!(n.limits.tick().await, Health::Up);
        assert_eq!(n.limits.lease(Kind::Sessions, &acct, 10, 2, false).await, 3);
        assert_eq!(
            n.limits
                .budget(ACCOUNT, Micros(0), Micros(100_000), false)
                .await,
            Micros(100_000)
        );
    }

    redis.kill();
    let down = Instant::now();
    let mut debited = 0i64;
    for (i, n) in nodes.iter().enumerate() {
        // The first failure marks the node away; nothing hangs (300 ms deadline).
        let t = Instant::now();
        let h = n.limits.tick().await;
        assert!(matches!(h, Health::Away { .. }), "{h:?}");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "tick hung {:?}",
            t.elapsed()
        );
        assert_eq!(
            n.limits.lease(Kind::Sessions, &acct, 10, 3, false).await,
            3,
            "fallback share: 10 / 3 live nodes"
        );
        // The balance last known (1_000_000) minus the other nodes' reservations at last
        // sight: n1 reserved first and saw none, n3 saw two of 100_000.
        let expected = 1_000_000 - 100_000 * i as i64;
        assert_eq!(
            n.limits
                .budget(ACCOUNT, Micros(0), Micros(100_000), false)
                .await,
            Micros(expected)
        );
        for c in 0..3 {
            let cost = 10_000 + i as i64 * 1_000 + c;
            let id = format!("{}-out-{c}", n.limits.node());
            assert_eq!(
                n.limits.debit(ACCOUNT, &id, Micros(cost)).await.unwrap(),
                Debit::Queued
            );
            debited += cost;
        }
        assert_eq!(n.limits.queued_debits(), 3);
        // The queued debits come off the fallback balance.
        let fallback = n
            .limits
            .budget(ACCOUNT, Micros(0), Micros(100_000), false)
            .await;
        assert!(
            fallback.0 < expected && fallback.0 >= expected - 40_000,
            "{fallback:?}"
        );
    }
    // Down for 10 s in all, then back with its data.
    let rest = Duration::from_secs(10).saturating_sub(down.elapsed());
    tokio::time::sleep(rest).await;
    redis.spawn();

    for n in &nodes {
        eventually("node back up", || async {
            n.limits.tick().await == Health::Up
        })
        .await;
        assert_eq!(n.limits.queued_debits(), 0, "queued debits sent");
        assert_eq!(n.outbox.len(), 0);
    }
    let admin = client(&redis).await;
    let balance = nodes[0].limits.balance(ACCOUNT).await.unwrap();
    assert_eq!(balance.0, start - debited, "each queued debit applied once");
    // Leases re-sent with what each node has up as the floor: the cluster sees them all.
    let mut granted = 0;
    for n in &nodes {
        let g = n.limits.lease(Kind::Sessions, &acct, 10, 3, false).await;
        assert!(g >= 3, "the calls up are kept: {g}");
        granted += i64::from(g);
    }
    assert!(granted <= 10, "{granted}");
    assert_eq!(lease_sum(&admin, &sessions_key()).await, granted);
    // A debit replayed after the outage is still applied once.
    assert_eq!(
        nodes[1]
            .limits
            .debit(ACCOUNT, "n2-out-0", Micros(11_000))
            .await
            .unwrap(),
        Debit::AlreadyApplied
    );
    assert_eq!(
        nodes[1].limits.balance(ACCOUNT).await.unwrap().0,
        start - debited
    );
}

/// Three nodes whose call cores (sipd-core `Admission`) admit within the shares the leases
/// give them, as the event loop does: CPS and sessions of one account, limits 30 CPS and 10
/// calls. Prints the busiest second seen across the cluster (the accuracy of the CPS lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cores_admit_within_their_leases() {
    use sipd::shared_limits::Usage;
    use sipd_core::policy::Admission;
    use sipd_core::records::Account;

    let Some((_dir, redis, admin)) = redis_and_admin().await else {
        return;
    };
    let account = Account {
        id: ACCOUNT_ID,
        name: ACCOUNT.into(),
        enabled: true,
        sip: None,
        cps_limit: Some(30),
        max_sessions: Some(10),
        balance: Micros(0),
        tariff_id: None,
        max_call_secs: None,
    };
    let up = Arc::new(AtomicU32::new(0));
    let admitted = Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let run_for = Duration::from_secs(4);
    let mut tasks = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let n = node(&redis, &admin, name).await;
        let (up, admitted, account) = (up.clone(), admitted.clone(), account.clone());
        tasks.push(tokio::spawn(async move {
            let mut core = Admission::new();
            let mut open = std::collections::VecDeque::new();
            let mut taken: std::collections::VecDeque<(Instant, u64)> = Default::default();
            let t0 = Instant::now();
            let mut key = 0u64;
            while t0.elapsed() < run_for {
                let now = Instant::now();
                let (in_use, tokens) = core.usage(ACCOUNT_ID);
                taken.push_back((now, tokens));
                while taken
                    .front()
                    .is_some_and(|(t, _)| now - *t > Duration::from_secs(1))
                {
                    taken.pop_front();
                }
                let last_second = tokens - taken.front().map_or(tokens, |(_, n)| *n);
                let usage = [Usage {
                    scope: Scope::Account(ACCOUNT.into()),
                    sessions: Some((10, in_use)),
                    cps: Some((30, u32::try_from(last_second).unwrap_or(u32::MAX))),
                    demand: true,
                }];
                for (_, share) in n.limits.pre_shares(&usage) {
                    core.set_share(ACCOUNT_ID, Some(share));
                }
                for (_, share) in n.limits.shares(&usage).await {
                    core.set_share(ACCOUNT_ID, Some(share));
                }
                // A few call attempts, then the oldest call ends now and then.
                for _ in 0..3 {
                    key += 1;
                    if core.admit(Instant::now(), key, &account, None).is_ok() {
                        open.push_back(key);
                        admitted.lock().unwrap().push(Instant::now());
                        let now_up = up.fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(now_up <= 10, "{now_up} calls up");
                    }
                }
                if (open.len() >= 2 || key.is_multiple_of(5))
                    && let Some(k) = open.pop_front()
                {
                    up.fetch_sub(1, Ordering::SeqCst);
                    core.end(Instant::now(), k);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("node task");
    }
    let mut at = admitted.lock().unwrap().clone();
    at.sort();
    let busiest = (0..at.len())
        .map(|i| {
            at[i..]
                .iter()
                .take_while(|t| **t - at[i] < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    let per_sec = at.len() as f64 / run_for.as_secs_f64();
    eprintln!(
        "cps lease: {} calls in {run_for:?} ({per_sec:.1}/s average), busiest second {busiest} (limit 30, burst 30)",
        at.len()
    );
    assert!(at.len() > 30, "the cluster admitted calls ({})", at.len());
    // The GCRA's own bound (limit + a burst of limit) plus the rate moved between nodes.
    assert!(busiest <= 90, "busiest second {busiest}");
}

/// A settle's debit queued in the store's outbox but not yet in Redis still counts: the
/// node cannot reserve that money again before the debit lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_debits_are_not_reserved_twice() {
    let Some((_dir, redis, admin)) = redis_and_admin().await else {
        return;
    };
    beat(&admin, "n1").await;
    let data = tempfile::tempdir().unwrap();
    let store = Arc::new(sipd::store::Store::open(data.path()).unwrap());
    let n = SharedLimits::for_store(
        client(&redis).await,
        "n1",
        PREFIX,
        Settings::default(),
        &store,
    );
    n.seed_balance(ACCOUNT, Micros(100_000)).await.unwrap();
    assert_eq!(
        n.budget(ACCOUNT, Micros(0), Micros(100_000), false).await,
        Micros(100_000)
    );
    // What the store's settle writes with the CDR (CDR id 1), before the tick sends it.
    store
        .cluster_debits()
        .insert(
            "1",
            sipd::shared_limits::outbox_value(ACCOUNT, Micros(100_000)),
        )
        .unwrap();
    assert_eq!(
        n.budget(ACCOUNT, Micros(0), Micros(50_000), false).await,
        Micros(0)
    );
    assert_eq!(n.tick().await, Health::Up);
    assert_eq!(n.queued_debits(), 0);
    assert_eq!(n.balance(ACCOUNT).await.unwrap(), Micros(0));
    assert_eq!(
        n.budget(ACCOUNT, Micros(0), Micros(50_000), false).await,
        Micros(0)
    );
    n.top_up(ACCOUNT, Micros(30_000), "t1").await.unwrap();
    assert_eq!(
        n.budget(ACCOUNT, Micros(0), Micros(50_000), false).await,
        Micros(30_000)
    );
}

/// Limit 2 over three nodes: two idle nodes hold a slot each (their headroom); the third,
/// with calls waiting, gets one as soon as an idle holder shows its lease again (within
/// `recheck`), not never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_slot_goes_to_the_node_that_waits_for_it() {
    let Some((_dir, redis, admin)) = redis_and_admin().await else {
        return;
    };
    let recheck = Duration::from_millis(100);
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        beat(&admin, name).await;
        let settings = Settings {
            recheck,
            ..Settings::default()
        };
        let outbox = sled::Config::new()
            .temporary(true)
            .open()
            .unwrap()
            .open_tree("o")
            .unwrap();
        nodes.push(SharedLimits::new(
            client(&redis).await,
            name,
            PREFIX,
            settings,
            outbox,
        ));
    }
    let acct = Scope::Account(ACCOUNT.into());
    let lease = |i: usize, demand: bool| nodes[i].lease(Kind::Sessions, &acct, 2, 0, demand);
    assert_eq!(lease(0, false).await, 1, "idle headroom");
    assert_eq!(lease(1, false).await, 1, "idle headroom");
    assert_eq!(lease(2, true).await, 0, "nothing left: n3 waits");
    tokio::time::sleep(recheck + Duration::from_millis(20)).await;
    // n1 learns that n3 waits: it bounds its core to its calls (none) first, then gives
    // the slot back (its core never admits within a slot Redis already gave away).
    assert_eq!(lease(0, false).await, 1, "n1 learns that n3 waits");
    assert_eq!(nodes[0].lease_bound(Kind::Sessions, &acct, 2, 0), 0);
    assert_eq!(lease(0, false).await, 0, "n1 gives its idle slot back");
    assert_eq!(lease(2, true).await, 1, "n3 gets it");
    assert!(lease_sum(&admin, &sessions_key()).await <= 2);
    // Nobody waits any more: an idle node may hold headroom again when there is room.
    assert_eq!(lease(2, false).await, 1);
    tokio::time::sleep(recheck + Duration::from_millis(20)).await;
    assert_eq!(lease(1, false).await, 1, "n2 keeps its slot: nobody waits");
}

/// An emptied Redis (balance key gone): the first debit seeds the balance from the node's
/// store (plus the debits still queued) instead of going below zero, and a top-up retried
/// with its id is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_redis_is_seeded_and_top_ups_apply_once() {
    let Some((_dir, redis, admin)) = redis_and_admin().await else {
        return;
    };
    beat(&admin, "n1").await;
    let outbox = sled::Config::new()
        .temporary(true)
        .open()
        .unwrap()
        .open_tree("o")
        .unwrap();
    // The store's balance after the settle below (10 000 before the call, 3 000 debited).
    let stored = Arc::new(AtomicI64::new(7_000));
    let s = stored.clone();
    let n = SharedLimits::new(
        client(&redis).await,
        "n1",
        PREFIX,
        Settings::default(),
        outbox,
    )
    .with_seed(Box::new(move |name| {
        (name == ACCOUNT).then(|| Micros(s.load(Ordering::SeqCst)))
    }));
    assert_eq!(
        n.debit(ACCOUNT, "1", Micros(3_000)).await.unwrap(),
        Debit::Applied(Micros(7_000)),
        "seeded with 10 000, then debited"
    );
    // A top-up: the store first, then the shared balance; the retry changes nothing.
    stored.store(12_000, Ordering::SeqCst);
    assert_eq!(
        n.top_up(ACCOUNT, Micros(5_000), "t-9").await.unwrap(),
        Debit::Applied(Micros(12_000))
    );
    assert_eq!(
        n.top_up(ACCOUNT, Micros(5_000), "t-9").await.unwrap(),
        Debit::AlreadyApplied
    );
    assert_eq!(n.balance(ACCOUNT).await.unwrap(), Micros(12_000));
    // Emptied again: a reservation seeds it too (never a balance of 0 nor below).
    let _: () = admin
        .del(format!("{PREFIX}:balance:{ACCOUNT}"))
        .await
        .unwrap();
    assert_eq!(
        n.budget(ACCOUNT, Micros(0), Micros(5_000), false).await,
        Micros(5_000)
    );
    assert_eq!(n.balance(ACCOUNT).await.unwrap(), Micros(12_000));
}

/// Names may hold ':': a node waiting for a slot of account "foo" must not write into the
/// lease of an account named "foo:waiting" (its marks, Redis times in ms, would count as
/// billions of slots taken and starve it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_holding_a_colon_is_its_own_account() {
    let Some((_dir, redis, admin)) = redis_and_admin().await else {
        return;
    };
    let [n1, n2, n3] = three_nodes(&redis, &admin).await;
    let foo = Scope::Account("foo".into());
    let held = n1.limits.lease(Kind::Sessions, &foo, 2, 2, true).await;
    assert_eq!(held, 2, "n1 holds foo's whole limit");
    // n2 needs one of foo's slots and has none: it leaves its waiting mark.
    let none = n2.limits.lease(Kind::Sessions, &foo, 2, 0, true).await;
    assert_eq!(none, 0, "foo's limit is all n1's");
    let other = Scope::Account("foo:waiting".into());
    let got = n3.limits.lease(Kind::Sessions, &other, 5, 0, true).await;
    assert!(got >= 1, "\"foo:waiting\" got {got} of its 5 slots");
    assert_eq!(
        lease_sum(
            &admin,
            &format!("{PREFIX}:lease:sessions:account:foo:waiting")
        )
        .await,
        i64::from(got),
        "its lease hash holds its own lease only"
    );
}
