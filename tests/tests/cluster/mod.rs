//! Several `sipd` nodes sharing one `redis-server`: each node is the usual carrier — relay —
//! vendor topology of [`crate::sbc`] (XDP on the relay's two veths); Redis runs in a
//! namespace of its own, linked to every relay namespace by a veth of its own
//! (`10.X.9.1` Redis's end, `10.X.9.2` the relay's, X the node's topology id). Redis and the
//! nodes are started and stopped by the test, by PID.
#![allow(dead_code)]

pub mod sentinel;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::sbc::{Net, Plane, Prov, Sbc, Settings};
use tests::netns::{Netns, NsChild};

/// The port Redis listens on in its namespace.
pub const REDIS_PORT: u16 = 6379;
/// The admin every node is initialised with.
pub const ADMIN_PASSWORD: &str = "Tq7#harbour-Lantern-55";

/// `redis-server` in its own namespace, without persistence (a restart loses everything: the
/// nodes must put it all back).
pub struct Redis {
    pub ns: Netns,
    pub dir: PathBuf,
    pub child: Option<NsChild>,
    links: u8,
}

impl Redis {
    /// The namespace, and the server started in it.
    pub fn start() -> Redis {
        let ns = Netns::unique("k").expect("redis namespace");
        ns.ip(["link", "set", "lo", "up"]).expect("lo up");
        let dir = std::env::temp_dir().join(format!("{}-redis", ns.name()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut r = Redis {
            ns,
            dir,
            child: None,
            links: 0,
        };
        r.run();
        r
    }

    /// Starts the server (after [`Redis::stop`]) and waits until it answers.
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "redis-server still runs");
        self.child = Some(self.server(REDIS_PORT, "redis", &[]));
    }

    /// A `redis-server` (or, with `--sentinel` in `extra`, a sentinel) on `port` in this
    /// namespace, `name.log` in the data dir, started and answering PING.
    pub fn server(&self, port: u16, name: &str, extra: &[&str]) -> NsChild {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).expect("log");
        let mut cmd = self.ns.command("redis-server");
        // A sentinel takes its configuration file first.
        cmd.args(extra.iter().take_while(|a| !a.starts_with("--")))
            .args(["--port", &port.to_string()])
            .args(["--bind", "0.0.0.0"])
            .args(["--protected-mode", "no"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(extra.iter().skip_while(|a| !a.starts_with("--")))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let child = NsChild::spawn(&mut cmd).expect("spawn redis-server");
        let end = Instant::now() + Duration::from_secs(10);
        while self.cli_at(port, &["PING"]).trim() != "PONG" {
            assert!(Instant::now() < end, "{name} does not answer");
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    /// Stops the server (SIGTERM by PID).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.stop(Duration::from_secs(5));
        }
    }

    /// `redis-cli` in the namespace; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        self.cli_at(REDIS_PORT, args)
    }

    /// `redis-cli` to the server (or sentinel) on `port`; its output.
    pub fn cli_at(&self, port: u16, args: &[&str]) -> String {
        let out = self
            .ns
            .exec(
                "redis-cli",
                ["-p", &port.to_string()]
                    .iter()
                    .map(|s| s.to_string())
                    .chain(args.iter().map(|s| s.to_string())),
            )
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Links the relay namespace of `net` to this one; the URL the node uses.
    pub fn link(&mut self, net: &Net) -> String {
        self.links += 1;
        let id = net.topo.id();
        let here = format!("rd{}", self.links);
        let relay = &net.topo.relay;
        self.ns
            .ip([
                "link",
                "add",
                &here,
                "index",
                &(100 + u32::from(self.links)).to_string(),
                "type",
                "veth",
                "peer",
                "name",
                "to-redis",
                "index",
                "90",
                "netns",
                relay.name(),
            ])
            .expect("redis veth");
        let (mine, theirs) = (format!("10.{id}.9.1"), format!("10.{id}.9.2"));
        self.ns
            .ip(["addr", "add", &format!("{mine}/24"), "dev", &here])
            .expect("redis address");
        relay
            .ip(["addr", "add", &format!("{theirs}/24"), "dev", "to-redis"])
            .expect("relay address");
        self.ns.ip(["link", "set", &here, "up"]).expect("up");
        relay.ip(["link", "set", "to-redis", "up"]).expect("up");
        format!("redis://{mine}:{REDIS_PORT}/0")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One node: its topology and its sipd.
pub struct Node {
    pub sbc: Sbc,
    pub net: Net,
    pub token: String,
}

/// The `[cluster]` table of node `name`.
pub fn cluster_table(url: &str, name: &str) -> String {
    format!(
        "[cluster]\nredis = \"{url}\"\nnode = \"{name}\"\nkey_prefix = \"sbct\"\n\
         heartbeat_ms = 200\nnode_ttl_ms = 1000\n"
    )
}

/// Redis and `n` nodes (`node-1`...), each with metrics public and an admin logged in.
pub fn start(n: usize, prov: &Prov) -> (Redis, Vec<Node>) {
    start_with(n, prov, cluster_table)
}

/// As [`start`], node `name`'s `[cluster]` table made by `table` from the URL of Redis on its
/// link. Every node also reaches Redis's end of node 1's link (`10.X.9.1`, X node 1's
/// topology id), through its own: an address all nodes can use (a sentinel's answer).
pub fn start_with(
    n: usize,
    prov: &Prov,
    table: impl Fn(&str, &str) -> String,
) -> (Redis, Vec<Node>) {
    let mut redis = Redis::start();
    let mut nodes: Vec<Node> = Vec::new();
    for i in 1..=n {
        let net = Net::new();
        let url = redis.link(&net);
        if let Some(first) = nodes.first() {
            let id = net.topo.id();
            net.topo
                .relay
                .ip([
                    "route",
                    "add",
                    &format!("10.{}.9.0/24", first.net.topo.id()),
                    "via",
                    &format!("10.{id}.9.1"),
                ])
                .expect("route to node 1's Redis address");
        }
        let set = Settings {
            management: "metrics_public = true\n".into(),
            admin_password: Some(ADMIN_PASSWORD),
            tables: table(&url, &format!("node-{i}")),
            ..Settings::default()
        };
        let sbc = Sbc::start_with(&net, Plane::Xdp, prov, &set);
        let token = sbc.login();
        nodes.push(Node { sbc, net, token });
    }
    (redis, nodes)
}

/// Polls `f` every 20 ms until it holds or `limit` passes; whether it held.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// What a node's calls need: the vendor address its (cluster-shared) connection names,
/// reachable from its relay, and a rule for its carrier's address.
pub struct Callable {
    pub vendor: SocketAddr,
}

impl Callable {
    pub fn of(node: &Node) -> Callable {
        let conns = node.sbc.api(&node.token, "GET", "/api/connections", None);
        let vendor: SocketAddr = conns
            .as_array()
            .and_then(|a| a.first()?["destination"].as_str()?.parse().ok())
            .unwrap_or_else(|| panic!("no connection on the node: {conns}"));
        let topo = &node.net.topo;
        if vendor.ip() != topo.callee_if.ip(false) {
            // The provisioning every node shares names another node's vendor address: this
            // node's vendor host takes it too.
            topo.callee
                .ip([
                    "addr",
                    "add",
                    &format!("{}/32", vendor.ip()),
                    "dev",
                    &topo.callee_if.dev,
                ])
                .expect("vendor address");
            topo.relay
                .ip([
                    "route",
                    "add",
                    &format!("{}/32", vendor.ip()),
                    "dev",
                    &topo.relay_callee_if.dev,
                ])
                .expect("route to it");
        }
        let accts = node.sbc.api(&node.token, "GET", "/api/accounts", None);
        let id = accts
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == "carrier-a"))
            .and_then(|a| a["id"].as_u64())
            .unwrap_or_else(|| panic!("no carrier-a: {accts}"));
        let path = format!("/api/accounts/{id}/rules");
        let remote = format!("{}/32", topo.caller_if.ipv4);
        let rules = node.sbc.api(&node.token, "GET", &path, None);
        if !rules.to_string().contains(&remote) {
            let name = format!("office-{}", topo.id());
            let r = node.sbc.api(
                &node.token,
                "POST",
                &path,
                Some(&serde_json::json!({"name": name, "remote": remote,
                             "cli": {"prefix": "44"}, "cld": {"prefix": "33"},
                             "ip_only": true})),
            );
            assert!(r.get("name").is_some(), "rule refused: {r}");
        }
        Callable { vendor }
    }

    /// One call through `node` (answered, held 100 ms, hung up): the INVITE's final status.
    pub fn call(&self, node: &Node) -> Option<u16> {
        let topo = &node.net.topo;
        let mut s = tests::sip::Sipp::new("uas.xml", self.vendor);
        s.calls = 1;
        s.pause = Duration::from_millis(100);
        s.var("rtp_port", &crate::sbc::RTP_PORT.to_string());
        let mut uas = s.spawn(&topo.callee).expect("uas");
        uas.wait_bound(&topo.callee).expect("uas bound");
        let c = node
            .net
            .uac("uac.xml", node.sbc.sip(), Duration::from_millis(100));
        let uac = c.spawn(&topo.caller).expect("uac").finish();
        let _ = uas.finish();
        let finals = uac.trace.final_counts("INVITE");
        finals.keys().next_back().copied()
    }
}
