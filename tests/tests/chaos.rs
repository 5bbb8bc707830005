//! "Nothing lost" under crashes (DESIGN.md): sipp places calls continuously with relayed media
//! while `sipd` is killed with SIGKILL at random moments (at least 10 times, with calls being
//! set up, up, and hanging up at each) and started again at once. Afterwards:
//! - every call sipp saw answered has exactly one CDR, answered, and no call has two;
//! - every BYE sipp sent was answered 200 (those sent while sipd was down were retransmitted
//!   until the next run answered them);
//! - the account's balance is its starting balance minus the sum of its CDRs' costs;
//! - a long call placed before the first kill stayed up through every restart, its media
//!   relayed byte for byte each time sipd was down and each time it was back, and its CDR
//!   covers it whole.

mod sbc;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use sbc::*;
use serde_json::Value;
use tests::sip::{MediaCheck, Sipp};
use tests::{require_privileged, require_sipp};

/// Short calls placed during the run, their rate and hold.
const CALLS: u32 = 240;
const CPS: u32 = 8;
const HOLD: Duration = Duration::from_secs(3);
/// Kills, at least.
const KILLS: usize = 10;

/// A decimal amount ("12.345678") in micro-units.
fn micros(s: &str) -> i64 {
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let (units, frac) = s.split_once('.').unwrap_or((s, ""));
    let frac = format!("{frac:0<6}");
    let v = units.parse::<i64>().unwrap_or(0) * 1_000_000 + frac[..6].parse::<i64>().unwrap_or(0);
    if neg { -v } else { v }
}

/// A small, seeded generator: the kill moments are random but reproducible from the seed the
/// test prints.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }
}

fn media_flows(net: &Net, at_carrier: SocketAddr, at_vendor: SocketAddr, stream: u32) {
    MediaCheck::run(
        &net.carrier_rtp,
        &net.vendor_rtp,
        at_carrier,
        at_vendor,
        PACKETS,
        stream,
    )
    .assert_lossless();
}

#[test]
fn sigkill_at_random_moments_loses_no_call_and_no_money_xdp() {
    require_privileged!();
    require_sipp!();
    let _s = serial();
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("chaos seed {seed} (CHAOS_SEED={seed} repeats this run)");
    let mut rng = Lcg(seed);
    let net = Net::new();
    let prov = Prov {
        cps_limit: 100,
        max_sessions: 100,
        vendors: vec![(SIP_PORT, 100, 10)],
        vendor_cps: 100,
        balance: "1000.00",
        ..Prov::default()
    };
    let mut sbc = Sbc::start(&net, Plane::Xdp, &prov, 60);
    let start_balance = micros(prov.balance);

    // The long call first (its media is what the vendor's first MEDIA line names), then the
    // short ones, all to the one vendor.
    let mut long_uas = net.uas("uas.xml", SIP_PORT, CALLS + 1, Duration::from_millis(100));
    let mut long = Sipp::uac(
        "uac.xml",
        SocketAddr::new(net.carrier_sip().ip(), SIP_PORT + 2),
        sbc.sip(),
        CLI,
        CLD,
        RTP_PORT,
    );
    let long_hold = Duration::from_secs(100);
    long.pause = long_hold;
    long.deadline = Duration::from_secs(160);
    let mut long = long.spawn(&net.topo.caller).expect("long call");
    let at_carrier = long
        .wait_media("MEDIA", Duration::from_secs(10))
        .expect("long call answered");
    let at_vendor = long_uas
        .wait_media("MEDIA", Duration::from_secs(10))
        .expect("vendor got the long call");
    media_flows(&net, at_carrier, at_vendor, 1);

    let mut uac = net.uac("uac.xml", sbc.sip(), HOLD);
    uac.calls = CALLS;
    uac.rate = Some((CPS, Duration::from_secs(1)));
    uac.deadline = Duration::from_secs(150);
    let uac = uac.spawn(&net.topo.caller).expect("uac");

    let run_for = Duration::from_secs(u64::from(CALLS / CPS));
    let began = Instant::now();
    let mut kills = 0;
    let mut stream = 3;
    // Kills until both enough were made and the short calls are placed; never past the long
    // call's hold (its media is checked at each).
    let last_kill = long_hold - Duration::from_secs(15);
    while (kills < KILLS || began.elapsed() < run_for) && began.elapsed() < last_kill {
        std::thread::sleep(Duration::from_millis(800 + rng.below(1_700)));
        sbc.signal(libc::SIGKILL);
        kills += 1;
        // While no sipd runs, the kernel relays the long call.
        media_flows(&net, at_carrier, at_vendor, stream);
        sbc.start_again(&net);
        media_flows(&net, at_carrier, at_vendor, stream + 2);
        stream += 4;
    }
    let uac = uac.finish();
    let long = long.finish();
    let _ = long_uas;

    // Calls answered, as the carrier saw them.
    let mut answered = BTreeSet::new();
    for m in uac
        .trace
        .finals("INVITE")
        .into_iter()
        .chain(long.trace.finals("INVITE"))
    {
        if m.status() == Some(200) {
            answered.insert(m.header("Call-ID").unwrap_or("").to_string());
        }
    }
    let byes: BTreeMap<u16, usize> = uac
        .trace
        .final_counts("BYE")
        .into_iter()
        .chain(long.trace.final_counts("BYE"))
        .fold(BTreeMap::new(), |mut m, (k, v)| {
            *m.entry(k).or_default() += v;
            m
        });
    let log = sbc.log_text();
    let cdrs = sbc.cdrs();
    let mut per_call: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for c in &cdrs {
        per_call
            .entry(c["call_id"].as_str().unwrap_or("").to_string())
            .or_default()
            .push(c);
    }
    eprintln!(
        "chaos: {kills} kills, {} calls answered, {} CDRs, BYE finals {byes:?}, adoption lines:\n{}",
        answered.len(),
        cdrs.len(),
        log.lines()
            .filter(|l| l.contains("calls of the previous run taken back"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(kills >= KILLS);
    assert!(answered.len() as u32 > CALLS / 2, "too few calls answered");
    for (call, list) in &per_call {
        assert_eq!(
            list.len(),
            1,
            "call {call} has {} CDRs: {list:#?}",
            list.len()
        );
    }
    for call in &answered {
        let c = per_call
            .get(call)
            .and_then(|l| l.first())
            .unwrap_or_else(|| panic!("answered call {call} has no CDR"));
        assert_eq!(c["result_code"], 200, "{c:#}");
        assert!(c["answer_ms"].is_number(), "{c:#}");
    }
    assert_eq!(
        byes.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "every BYE answered 200: {byes:?}"
    );
    // The long call lived through every restart and is billed whole.
    let long_id = long
        .trace
        .call_ids_sent("INVITE")
        .into_iter()
        .next()
        .expect("long call id");
    let lc = per_call[&long_id][0];
    let secs = lc["duration_secs"].as_u64().unwrap_or(0);
    assert!(
        secs + 2 >= long_hold.as_secs(),
        "long call billed {secs} s: {lc:#}"
    );
    // Money: the balance is the start less every CDR's cost.
    let spent: i64 = cdrs.iter().map(|c| c["cost"].as_i64().unwrap_or(0)).sum();
    let end_balance = micros(
        sbc.json_list(&["accounts", "list", "--json"])[0]["balance"]
            .as_str()
            .expect("balance"),
    );
    assert_eq!(
        end_balance,
        start_balance - spent,
        "balance {end_balance} != {start_balance} - {spent}"
    );
}
