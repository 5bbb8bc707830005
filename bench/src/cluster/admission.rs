//! Admission latency: calls through one node, INVITE → 100 and INVITE → 180 per call, read
//! from the carrier sipp's message trace (each message's time stamp).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;

use super::Stats;
use super::harness::{Callable, Node};

/// One setup's calls.
#[derive(Debug, Serialize)]
pub(crate) struct Admission {
    pub setup: String,
    pub calls: u32,
    pub cps: u32,
    /// Calls whose INVITE got a 200.
    pub answered: usize,
    /// INVITE sent → 100 Trying received.
    pub to_100_ms: Option<Stats>,
    /// INVITE sent → 180 Ringing received.
    pub to_180_ms: Option<Stats>,
}

/// `calls` calls at `cps` through `node` (held 100 ms, the vendor answering at once).
pub(crate) fn measure(setup: &str, node: &Node, calls: u32, cps: u32) -> anyhow::Result<Admission> {
    let vendor = Callable::of(node).vendor;
    let topo = &node.net.topo;
    // The whole run, with room for the last calls and sipp's own timeouts.
    let deadline = Duration::from_secs(u64::from(calls / cps) + 30);
    let mut s = tests::sip::Sipp::new("uas.xml", vendor);
    s.calls = calls;
    s.pause = Duration::from_millis(1);
    s.deadline = deadline;
    s.var("rtp_port", &crate::sbc::RTP_PORT.to_string());
    let mut uas = s.spawn(&topo.callee)?;
    uas.wait_bound(&topo.callee)?;
    let mut c = node
        .net
        .uac("uac.xml", node.sbc.sip(), Duration::from_millis(100));
    c.calls = calls;
    c.rate = Some((cps, Duration::from_secs(1)));
    c.deadline = deadline;
    let uac = c.spawn(&topo.caller)?.finish();
    let _ = uas.finish();
    let answered = uac
        .trace
        .final_counts("INVITE")
        .get(&200)
        .copied()
        .unwrap_or(0);
    if answered == 0 {
        bail!(
            "{setup}: no call answered: {}\n{}",
            uac.errors,
            tests::tail(&node.sbc.log_text(), 4000)
        );
    }
    let (to_100, to_180) = delays(&String::from_utf8_lossy(&uac.trace_bytes));
    Ok(Admission {
        setup: setup.to_owned(),
        calls,
        cps,
        answered,
        to_100_ms: Stats::of(to_100),
        to_180_ms: Stats::of(to_180),
    })
}

/// Seconds since midnight of a sipp trace stamp (`2026-12-08 02:20:39.712712`).
fn stamp_secs(line: &str) -> Option<f64> {
    let time = line.split_whitespace().nth(1)?;
    let mut f = time.splitn(3, ':');
    let h: f64 = f.next()?.parse().ok()?;
    let m: f64 = f.next()?.parse().ok()?;
    let s: f64 = f.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// Per Call-ID, ms from the first INVITE sent to the first 100 and the first 180 received
/// for it (a call crossing midnight is left out).
fn delays(trace: &str) -> (Vec<f64>, Vec<f64>) {
    #[derive(Default)]
    struct Call {
        invite: Option<f64>,
        t100: Option<f64>,
        t180: Option<f64>,
    }
    let mut calls: HashMap<String, Call> = HashMap::new();
    for block in trace.split("----------------------------------------------- ") {
        let mut lines = block.splitn(3, '\n');
        let (Some(stamp), Some(kind), Some(msg)) = (lines.next(), lines.next(), lines.next())
        else {
            continue;
        };
        let Some(at) = stamp_secs(stamp) else {
            continue;
        };
        let received = kind.contains("message received");
        let msg = tests::sip::Msg {
            received,
            text: msg.trim_start_matches(['\r', '\n']).to_owned(),
        };
        let (Some(id), Some("INVITE")) = (msg.header("Call-ID"), msg.cseq_method()) else {
            continue;
        };
        let call = calls.entry(id.to_owned()).or_default();
        match (received, msg.status()) {
            (false, None) if call.invite.is_none() => call.invite = Some(at),
            (true, Some(100)) if call.t100.is_none() => call.t100 = Some(at),
            (true, Some(180)) if call.t180.is_none() => call.t180 = Some(at),
            _ => {}
        }
    }
    let mut to_100 = Vec::new();
    let mut to_180 = Vec::new();
    for c in calls.values() {
        let Some(i) = c.invite else { continue };
        for (t, out) in [(c.t100, &mut to_100), (c.t180, &mut to_180)] {
            if let Some(t) = t.filter(|t| *t >= i) {
                out.push((t - i) * 1000.0);
            }
        }
    }
    (to_100, to_180)
}

/// The admission table.
pub(crate) fn markdown(rows: &[Admission]) -> String {
    let mut md = String::from(
        "| setup | calls | cps | answered | INVITE→100 median | p99 | INVITE→180 median | p99 |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for a in rows {
        let f = |s: &Option<Stats>, p99: bool| {
            crate::common::opt(s.as_ref().map(|s| if p99 { s.p99 } else { s.median }), 2)
        };
        md += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            a.setup,
            a.calls,
            a.cps,
            a.answered,
            f(&a.to_100_ms, false),
            f(&a.to_100_ms, true),
            f(&a.to_180_ms, false),
            f(&a.to_180_ms, true),
        );
    }
    md
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn delays_per_call_from_the_trace() {
        let t = "----------------------------------------------- 2026-12-08 02:20:39.700000\n\
UDP message sent (10 bytes):\n\nINVITE sip:x SIP/2.0\r\nCall-ID: a\r\nCSeq: 1 INVITE\r\n\r\n\n\
----------------------------------------------- 2026-12-08 02:20:39.701500\n\
UDP message received [10] bytes :\n\nSIP/2.0 100 Trying\r\nCall-ID: a\r\nCSeq: 1 INVITE\r\n\r\n\n\
----------------------------------------------- 2026-12-08 02:20:39.710000\n\
UDP message received [10] bytes :\n\nSIP/2.0 180 Ringing\r\nCall-ID: a\r\nCSeq: 1 INVITE\r\n\r\n\n\
----------------------------------------------- 2026-12-08 02:20:39.711000\n\
UDP message received [10] bytes :\n\nSIP/2.0 180 Ringing\r\nCall-ID: a\r\nCSeq: 1 INVITE\r\n\r\n";
        let (a, b) = delays(t);
        assert_eq!(a.len(), 1);
        assert!((a[0] - 1.5).abs() < 1e-6, "{a:?}");
        assert!((b[0] - 10.0).abs() < 1e-6, "{b:?}");
    }
}
