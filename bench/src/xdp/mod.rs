//! `cargo xtask bench xdp`: the XDP program's cost per packet for each verdict of its pipeline,
//! measured by the kernel with `BPF_PROG_TEST_RUN` on the real object, against the floor of
//! what any XDP relay costs on this machine. No traffic and no topology: a regression shows up
//! here in seconds. Results: `target/bench/xdp.json` and `xdp.md` in the workspace root.
//!
//! Method: the object is loaded with its maps pinned under an instance of its own (removed
//! afterwards) and programmed by relay-user's typed API, inside a private network namespace
//! (`env.rs`) whose device `x0` has the relay's addresses and a permanent neighbour entry for
//! the peer, so the relay's `bpf_fib_lookup` answers "out of `x0`" and relayed frames get
//! `XDP_TX`, as on a one-armed appliance. Every frame arrives on `x0`. Before a case is
//! measured, one run checks its action and that its `STATS` counter moved by one. Then:
//! - "repeat": `--rounds` calls of `--repeat` runs of the same frame each; the kernel times
//!   the runs and reports the mean per run, without the system call; the median of the rounds.
//!   Everything is in cache: this is the pipeline's instruction cost. The kernel runs the
//!   repeats on one copy of the frame, so a relay call maps its frame onto itself (leg A's
//!   partner sends to leg A's address and port, `env.rs`) and the frames start with a TTL of
//!   255 (the relay decrements it; `--repeat` is at most 250).
//! - "one run per call": a call per frame with `repeat` = 1, over all of a case's frames (for
//!   the relay with many legs, one frame per call in a shuffled order, so each run finds a
//!   different leg, counter and partner, as live traffic does), the mean. Each call's time
//!   includes the kernel's own timing overhead, and the system call in between evicts some
//!   cache: compare with the floor measured the same way ("over floor").
//!
//! The floor: `sbc_xdp_pass` only returns `XDP_PASS`; `sbc_xdp_swap` (`relay-ebpf`'s
//! `floor.rs`) swaps the MACs, addresses and ports and returns `XDP_TX`: the least an XDP
//! relay does, without a map or a helper. The steps: frames that stop at successive points of
//! the relay path (no leg; a leg for another address, which stops after the leg lookup; TTL 1,
//! which stops after the counters and the partner, before the route lookup; a partner whose
//! peer has no neighbour entry, which stops after the route lookup) give each stage's cost by
//! difference from the next.
//!
//! What this does not see: the redirect's transmit after the program returns (live only, in
//! `bench relay`), and the cold caches of a CPU that also runs other work between packets.
//!
//! Where the relay's time goes (kernel 6.18 VM, 2 CPUs, under other builds; first run of this
//! bench, before any change to the program). Repeat ns, IPv4 / IPv6:
//!
//! | frame stops | ns | step's cost |
//! |---|---|---|
//! | floor: `XDP_PASS` only / swap and `XDP_TX` | 38 / 43, 52 / 61 | |
//! | no service, no leg (parse, ban and deny tries, service, leg miss) | 251 / 272 | ~210 / ~230 |
//! | leg of another address (+ leg hit) | 275 / 336 | ~25 / ~60 |
//! | TTL 1 (+ per-CPU counters created/found, last seen, partner) | 456 / 424 | ~180 / ~90 |
//! | partner's peer unresolved (+ `bpf_fib_lookup`, failing at the neighbour) | 692 / 845 | ~240 / ~420 |
//! | relayed (`bpf_fib_lookup` succeeding, rewrite, counters again) | 659 / 990 | |
//!
//! One run per call over many legs, IPv4: 831 ns with 2 legs, 1,047 with 1,000, 1,455 with
//! 10,000 (IPv6: 1,103, 1,862, 1,914): with thousands of calls each packet misses the cache on
//! its leg, its per-CPU counters and its partner, about 600 ns, the largest single item, and
//! most of the gap between this bench's ~650 ns and the 1,100 to 1,700 ns per run `bench relay`
//! measured live at 50,000 packets/s (issue 15 reported 1,730).
//! `perf record -F 15000 -g -- bench xdp --only "IPv4 RTP relayed (1 call)" --rounds 1001
//! --legs 2` (cpu-clock samples: this VM has no hardware counters, so `bpftool prog profile`
//! cannot run; the JIT's symbols name each BPF function; samples under `bpf_test_run` only),
//! IPv4 / IPv6 / IPv4 with 10,000 legs one run per call:
//! - the route lookup (`bpf_ipv4_fib_lookup`/`bpf_ipv6_fib_lookup`, `fib_table_lookup` or
//!   `fib6_*`, `ip_mtu_from_fib_result`, `dev_get_by_index_rcu`): 18% / 32% / 18%;
//! - hash-map lookups (`lookup_nulls_elem_raw`, `__htab_map_lookup_elem`, `htab_map_hash`;
//!   the leg, its counters, the partner, the service): 19% / 12% / 25% (the cache misses
//!   over many legs land here);
//! - the program's own code 30% / 31% / 30%, plus a `memset` subprogram zeroing the route
//!   plan and the lookup's parameters, 4%; LPM tries (bans, deny) 3%; the clock 5%; the rest
//!   is the test-run harness.
//!
//! So the wins, in order: the egress (interface, MACs) cached per leg and refreshed when the
//! neighbour or route changes, instead of `bpf_fib_lookup` per packet (~240 ns IPv4, ~420 ns
//! IPv6 here); fewer cache lines per packet (leg, counters and the partner's rewrite data
//! together); the per-CPU counters looked up once per packet instead of twice (done: last-seen
//! and the count share the lookup; within this machine's noise, about 25 ns).
//!
//! Done since (relay-common's `route.rs`, relay-ebpf's `route.rs`): the route cached per port
//! in an array (`ROUTES`, looked up again about every second, at once for a new peer, a
//! longer frame or a refused redirect); the legs in an array indexed by port (`LEGS`: two
//! inlined lookups instead of two hashes); the coarse clock per packet. Repeat ns before /
//! after, same machine, load about 2 (IPv4 / IPv6): relayed 603 / 967 -> 392 / 492; one run
//! per call with 10,000 legs 1,247 / 1,600 -> 1,056 / 1,175. What is left, per relayed
//! packet: the pipeline every packet pays (parse, two LPM tries, the service hash: 240 ns for
//! "no service, no leg", as before), the per-CPU counters' hash (~90 ns) and the cache misses
//! on leg, partner, counters and route with thousands of calls. The SIP verdicts read ~400 ns
//! against ~310 before (the precise clock for the guard comes on top of the coarse one, ~25 ns;
//! the rest is not explained yet).
//!
//! Then (relay-ebpf's `fw.rs` and `relay.rs`): the leg counters a per-CPU array indexed by
//! port (`LEG_STATS`) instead of the per-CPU hash, and a bit per service port (`SVC_PORTS`)
//! so a packet to a port without a service skips the `SERVICES` hash. Repeat ns, median of
//! 3 runs each, before / after, same machine and load (about 10 on 2 vCPUs, other builds):
//!
//! | case | IPv4 | IPv6 |
//! |---|---|---|
//! | floor `XDP_PASS` / swap and `XDP_TX` | 26 / 40 -> 27 / 40 | 26 / 51 -> 27 / 50 |
//! | relayed (1 call) | 266 -> 217 | 333 -> 283 |
//! | UDP to no service, no leg | 164 -> 148 | 178 -> 165 |
//! | TTL 1 (+ counters, partner) | 215 -> 168 | 233 -> 187 |
//! | banned source | 154 -> 156 | 170 -> 172 |
//! | SIP OPTIONS passed by the guard / dropped over its rate | 254 / 257 -> 260 / 261 | |
//! | relayed, 10,000 legs, one run per call | 851 -> 687 | 890 -> 704 |
//!
//! The service bit saves ~15 ns on every packet to a port without a service and costs SIP
//! ports ~5 (the bit, then the hash); the counters' array ~35 ns per relayed packet (no hash,
//! no insert) and, with many legs, a cache miss fewer. At this load the SIP guard's pass is
//! where it was before the route cache (~255 ns; the ~400 read earlier does not reproduce).
//! `perf record` of that case, samples under `bpf_test_run`: the program's own functions
//! about 40% (`sbc_xdp` 14, the guard's `check` 8, `parse` 6, `check_source` 5,
//! `service_acl` 4), hash lookups (`SERVICES`, the `SESSIONS` trusted check, `GUARD_STATE`)
//! 18%, LPM tries 7%, the precise clock the guard reads (`read_tsc`) 11%, the harness
//! (`bpf_test_run`, its cgroup storage and timer) 17%. Not done: exact bans in a hash ahead
//! of the tries. It would make a banned host's drop cheaper, but every other packet (the
//! relay's too) would pay the hash's miss on top of the tries, which still have to be asked
//! for prefix bans (IPv6 offenders are banned by /64).

mod env;

pub use env::{SIP, sip_service};

use std::net::IpAddr;

use anyhow::{Context as _, bail};
use relay_common::stats::Stat;
use relay_user::test_run::{XDP_DROP, XDP_PASS, XDP_TX, XdpRun};
use serde::Serialize;

use crate::frames::{rtp, udp};
use env::{
    BANNED4, BANNED6, CALLER_PORT, CALLER4, CALLER6, Env, NO_NEIGH_PORT, PEER4, PEER6, RELAY4,
    RELAY6, V4_BASE, V6_BASE, ip,
};

const USAGE: &str =
    "cargo xtask bench xdp [--rounds N] [--repeat N] [--legs 2,1000,10000] [--only TEXT]";

struct Opts {
    rounds: u32,
    repeat: u32,
    /// Legs per family in the maps for the relay's sweep.
    legs: Vec<u32>,
    /// Only the cases whose name contains this (and the floor), e.g. under `perf record`.
    only: Option<String>,
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        rounds: 51,
        repeat: 200,
        legs: vec![2, 1_000, 10_000],
        only: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .with_context(|| format!("{a} needs a value; {USAGE}"))
        };
        let num = |v: &str| {
            v.trim()
                .parse::<u32>()
                .with_context(|| format!("{a}: {USAGE}"))
        };
        match a.as_str() {
            "--rounds" => o.rounds = num(val()?)?.clamp(1, 1001),
            // A relayed frame's TTL starts at 255 and drops by one a run.
            "--repeat" => o.repeat = num(val()?)?.clamp(1, 250),
            "--legs" => {
                o.legs = val()?.split(',').map(num).collect::<anyhow::Result<_>>()?;
                o.legs.sort_unstable();
                if o.legs.iter().any(|&n| !(2..=env::MAX_LEGS).contains(&n)) {
                    bail!("--legs: each within 2..={}", env::MAX_LEGS);
                }
            }
            "--only" => o.only = Some(val()?.clone()),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    Ok(o)
}

/// One row: a program, its frames, the verdict they must get.
struct Case {
    group: &'static str,
    name: String,
    program: &'static str,
    frames: Vec<Vec<u8>>,
    action: u32,
    /// The `STATS` counter the verdict moves (the relay program's cases only).
    stat: Option<Stat>,
}

#[derive(Serialize)]
struct Row {
    group: &'static str,
    case: String,
    program: &'static str,
    verdict: &'static str,
    frames: usize,
    repeat_ns: f64,
    one_run_ns: f64,
    one_run_over_floor_ns: f64,
}

#[derive(Serialize)]
struct Report {
    kernel: String,
    rounds: u32,
    repeat: u32,
    loadavg: String,
    method: &'static str,
    rows: Vec<Row>,
}

const PROG: &str = relay_common::maps::PROGRAM;

/// RTP from the caller to leg A of call `port` (each family).
fn rtp_to(v6: bool, port: u16, ttl: u8) -> Vec<u8> {
    let (src, dst) = (ip(v6, CALLER4, CALLER6), ip(v6, PEER4, PEER6));
    udp(src, CALLER_PORT, dst, port, ttl, &rtp())
}

fn family(v6: bool) -> &'static str {
    if v6 { "IPv6" } else { "IPv4" }
}

fn case(
    group: &'static str,
    name: String,
    program: &'static str,
    frame: Vec<u8>,
    action: u32,
    stat: Option<Stat>,
) -> Case {
    Case {
        group,
        name,
        program,
        frames: vec![frame],
        action,
        stat,
    }
}

/// The floor, the verdicts and the steps, at the smallest map (one call per family).
fn fixed_cases() -> Vec<Case> {
    let mut out = Vec::new();
    for v6 in [false, true] {
        let f = family(v6);
        let relay = || rtp_to(v6, if v6 { V6_BASE } else { V4_BASE }, 255);
        out.push(case(
            "floor",
            format!("{f} RTP, XDP_PASS only"),
            "sbc_xdp_pass",
            relay(),
            XDP_PASS,
            None,
        ));
        out.push(case(
            "floor",
            format!("{f} RTP, swap MAC/IP/port, XDP_TX"),
            "sbc_xdp_swap",
            relay(),
            XDP_TX,
            None,
        ));
        out.push(case(
            "verdict",
            format!("{f} RTP relayed (1 call)"),
            PROG,
            relay(),
            XDP_TX,
            Some(Stat::RelayTx),
        ));
        let banned = udp(
            ip(v6, BANNED4, BANNED6),
            CALLER_PORT,
            ip(v6, PEER4, PEER6),
            V4_BASE,
            64,
            &rtp(),
        );
        out.push(case(
            "verdict",
            format!("{f} banned source"),
            PROG,
            banned,
            XDP_DROP,
            Some(Stat::DropBanned),
        ));
        let other = udp(
            ip(v6, CALLER4, CALLER6),
            9,
            ip(v6, RELAY4, RELAY6),
            9,
            64,
            b"x",
        );
        out.push(case(
            "verdict",
            format!("{f} UDP to no service, no leg"),
            PROG,
            other,
            XDP_PASS,
            Some(Stat::PassOther),
        ));
        let base = if v6 { V6_BASE } else { V4_BASE };
        let (caller, relay_ip) = (ip(v6, CALLER4, CALLER6), ip(v6, RELAY4, RELAY6));
        let elsewhere = udp(caller, CALLER_PORT, relay_ip, base, 255, &rtp());
        out.push(case(
            "step",
            format!("{f} RTP to a leg's port on another address: leg lookup"),
            PROG,
            elsewhere,
            XDP_PASS,
            Some(Stat::RelayToUserspace),
        ));
        out.push(case(
            "step",
            format!("{f} RTP, TTL 1: + counters, partner; no route lookup"),
            PROG,
            rtp_to(v6, if v6 { V6_BASE } else { V4_BASE }, 1),
            XDP_PASS,
            Some(Stat::RelayToUserspace),
        ));
        let port = NO_NEIGH_PORT[usize::from(v6)];
        out.push(case(
            "step",
            format!("{f} RTP, partner's peer unresolved: + route lookup"),
            PROG,
            rtp_to(v6, port, 255),
            XDP_PASS,
            Some(Stat::RelayToUserspace),
        ));
    }
    let sip = |m: &str| {
        udp(
            IpAddr::from(CALLER4),
            SIP,
            IpAddr::from(RELAY4),
            SIP,
            64,
            format!("{m} sip:x SIP/2.0\r\n\r\n").as_bytes(),
        )
    };
    out.push(case(
        "verdict",
        "IPv4 SIP OPTIONS, guard on".into(),
        PROG,
        sip("OPTIONS"),
        XDP_PASS,
        Some(Stat::PassSip),
    ));
    out.push(case(
        "verdict",
        "IPv4 SIP INVITE, guard on".into(),
        PROG,
        sip("INVITE"),
        XDP_PASS,
        Some(Stat::PassSip),
    ));
    out
}

/// The relay at `legs` legs per family: one frame per call, to leg A of each.
fn legs_cases(legs: u32) -> Vec<Case> {
    [false, true]
        .into_iter()
        .map(|v6| {
            let base = if v6 { V6_BASE } else { V4_BASE };
            let mut frames: Vec<Vec<u8>> = (0..legs / 2)
                .map(|i| rtp_to(v6, base + 2 * i as u16, 255))
                .collect();
            shuffle(&mut frames);
            Case {
                group: "legs",
                name: format!("{} RTP relayed, {legs} legs per family", family(v6)),
                program: PROG,
                frames,
                action: XDP_TX,
                stat: Some(Stat::RelayTx),
            }
        })
        .collect()
}

/// A fixed permutation (xorshift, Fisher-Yates): the same order every run.
fn shuffle<T>(v: &mut [T]) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The case's first frame gets its action and moves its counter by one.
fn check(env: &Env, c: &Case) -> anyhow::Result<()> {
    let stats = |env: &Env| env.maps.stats_raw().context("STATS");
    let before = stats(env)?;
    let r = XdpRun::new(&c.frames[0])
        .ingress(env.ingress)
        .run_named(&env.ebpf, c.program)?;
    let after = stats(env)?;
    if r.action != c.action {
        bail!("{}: action {}, expected {}", c.name, r.action, c.action);
    }
    if let Some(stat) = c.stat
        && after[stat as usize] != before[stat as usize] + 1
    {
        let moved: Vec<_> = Stat::ALL
            .iter()
            .filter(|s| after[**s as usize] != before[**s as usize])
            .map(|s| s.name())
            .collect();
        bail!(
            "{}: not counted as {} (moved: {moved:?})",
            c.name,
            stat.name()
        );
    }
    Ok(())
}

/// (median of `rounds` calls of `repeat` runs of the first frame, mean of one run per call
/// over the frames).
fn measure(env: &Env, c: &Case, o: &Opts) -> anyhow::Result<(f64, f64)> {
    let one = |frame: &[u8], repeat: u32| -> anyhow::Result<f64> {
        Ok(XdpRun::new(frame)
            .ingress(env.ingress)
            .repeat(repeat)
            .run_named(&env.ebpf, c.program)?
            .ns_per_run())
    };
    let mut hot = (0..o.rounds)
        .map(|_| one(&c.frames[0], o.repeat))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // A warm-up pass creates each leg's per-CPU counters, as earlier packets of a call did.
    for f in &c.frames {
        one(f, 1)?;
    }
    let calls = (3 * c.frames.len()).max(20 * o.rounds as usize);
    let mut total = 0.0;
    for i in 0..calls {
        total += one(&c.frames[i % c.frames.len()], 1)?;
    }
    Ok((median(&mut hot), total / calls as f64))
}

fn verdict(c: &Case) -> &'static str {
    match (c.stat, c.action) {
        (Some(s), _) => s.name(),
        (None, XDP_TX) => "XDP_TX",
        (None, _) => "XDP_PASS",
    }
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    if !::tests::privileged() {
        bail!("bench xdp needs root (BPF_PROG_TEST_RUN, pinned maps, a network namespace)");
    }
    crate::common::pin_self(0);
    let mut env = Env::new()?;
    // For good: every test run below must see `x0` and its routes.
    env.ns.join_current_thread()?;
    let mut rows = Vec::new();
    let mut floor = None;
    let mut bench = |env: &Env, c: Case, rows: &mut Vec<Row>| -> anyhow::Result<()> {
        let first = floor.is_none();
        if !first
            && o.only
                .as_ref()
                .is_some_and(|t| !c.name.contains(t.as_str()))
        {
            return Ok(());
        }
        check(env, &c)?;
        let (repeat_ns, one_run_ns) = measure(env, &c, &o)?;
        // The first case is the pass floor; everything else is read against it.
        let floor_ns = *floor.get_or_insert(one_run_ns);
        println!(
            "{:<62} {:>8.1} ns {:>8.1} ns",
            c.name, repeat_ns, one_run_ns
        );
        rows.push(Row {
            group: c.group,
            verdict: verdict(&c),
            case: c.name,
            program: c.program,
            frames: c.frames.len(),
            repeat_ns,
            one_run_ns,
            one_run_over_floor_ns: one_run_ns - floor_ns,
        });
        Ok(())
    };
    for c in fixed_cases() {
        bench(&env, c, &mut rows)?;
    }
    // Over the packet rate: the source's first packet spends the burst, the rest drop.
    env.guard(true)?;
    let flood = udp(
        IpAddr::from(BANNED4.map(|b| b ^ 1)),
        SIP,
        IpAddr::from(RELAY4),
        SIP,
        64,
        b"OPTIONS sip:x SIP/2.0\r\n\r\n",
    );
    XdpRun::new(&flood)
        .ingress(env.ingress)
        .run_named(&env.ebpf, PROG)?;
    bench(
        &env,
        case(
            "verdict",
            "IPv4 SIP OPTIONS over the guard's packet rate".into(),
            PROG,
            flood,
            XDP_DROP,
            Some(Stat::DropSipPacketRate),
        ),
        &mut rows,
    )?;
    env.guard(false)?;
    for &legs in &o.legs {
        env.grow(legs)?;
        for c in legs_cases(env.legs) {
            bench(&env, c, &mut rows)?;
        }
    }
    let report = Report {
        kernel: crate::common::kernel_release(),
        rounds: o.rounds,
        repeat: o.repeat,
        loadavg: crate::common::loadavg(),
        method: "BPF_PROG_TEST_RUN of the real object in a private netns (relayed frames get \
                 XDP_TX); repeat_ns: median over the rounds of the kernel's mean per run of \
                 `repeat` runs of one frame; one_run_ns: mean of one-run calls over the case's \
                 frames (the legs cases: one call per frame, shuffled); over floor: minus the \
                 XDP_PASS-only program measured the same way",
        rows,
    };
    let md = markdown(&report);
    let dir = ::tests::bins::workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    crate::common::write_report(&dir, "xdp", &report, &md)
}

fn markdown(r: &Report) -> String {
    let mut md = format!(
        "# XDP program: ns per packet for each verdict (BPF_PROG_TEST_RUN)\n\nkernel {}, load \
         {}; repeat: median of {} calls of {} runs of one frame; one run: mean of one-run \
         calls over the case's frames, and that minus the XDP_PASS-only program's\n\n\
         | group | case | verdict | repeat ns | one run ns | one run over floor |\n\
         |---|---|---|---|---|---|\n",
        r.kernel, r.loadavg, r.rounds, r.repeat
    );
    for w in &r.rows {
        md += &format!(
            "| {} | {} | {} | {:.1} | {:.1} | {:+.1} |\n",
            w.group, w.case, w.verdict, w.repeat_ns, w.one_run_ns, w.one_run_over_floor_ns
        );
    }
    md
}
