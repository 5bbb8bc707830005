//! `flood.json` and `flood.md`: the setup, one row per system × kind × rate, the rates at
//! which each system falls below 90% and 50% of calls completed, and the goal for XDP.

use std::collections::BTreeMap;

use serde::Serialize;

use super::generator::Sent;
use super::systems::Limits;
use super::{Kind, Opts, System};
use crate::common::opt;

/// The goal: with XDP, this share of calls completes at the highest flood rate …
const GOAL_PCT: f64 = 99.0;
/// … with the 99th percentile of setup times under this.
const GOAL_P99_MS: f64 = 200.0;

#[derive(Debug, Serialize)]
pub(super) struct Report {
    pub(super) command: String,
    pub(super) kernel: String,
    pub(super) cpus: usize,
    pub(super) box_cpu: usize,
    pub(super) sipp: String,
    pub(super) setup: String,
    pub(super) cps: u32,
    pub(super) hold_s: f64,
    pub(super) duration_s: f64,
    pub(super) limits: Limits,
    pub(super) loadavg_start: String,
    pub(super) loadavg_end: String,
    pub(super) systems: Vec<SystemResult>,
}

#[derive(Debug, Serialize)]
pub(super) struct SystemResult {
    pub(super) system: System,
    pub(super) name: String,
    pub(super) version: String,
    pub(super) log: String,
    pub(super) steps: Vec<Step>,
    pub(super) error: Option<String>,
}

/// One system × kind × rate (kind `None`: the run without flood).
#[derive(Debug, Serialize)]
pub(super) struct Step {
    pub(super) kind: Option<Kind>,
    /// Asked frames/s; 0: unpaced.
    pub(super) rate: Option<u32>,
    pub(super) sources: usize,
    pub(super) sent: Sent,
    pub(super) offered: u64,
    pub(super) successful: u64,
    pub(super) failed: u64,
    pub(super) completed_pct: f64,
    pub(super) setup_p50_ms: Option<f64>,
    pub(super) setup_p99_ms: Option<f64>,
    pub(super) media_sent: u64,
    pub(super) media_lost: u64,
    pub(super) wall_s: f64,
    /// The box's processes, % of one CPU.
    pub(super) box_cpu_pct: f64,
    /// The relay namespace's NAPI threads + the box CPU's softirq, % of one CPU.
    pub(super) kernel_cpu_pct: f64,
    /// Counters that moved during the step.
    pub(super) drops: BTreeMap<String, u64>,
    pub(super) uac_exit: Option<String>,
    pub(super) uac_errors: Vec<(String, u64)>,
}

impl Step {
    pub(super) fn rate_label(&self) -> String {
        match self.rate {
            None => "-".into(),
            Some(0) => "max".into(),
            Some(r) => r.to_string(),
        }
    }
    fn good(&self) -> bool {
        self.completed_pct >= GOAL_PCT && self.setup_p99_ms.is_some_and(|p| p < GOAL_P99_MS)
    }
}

pub(super) fn setup_text(o: &Opts, box_cpu: usize) -> String {
    format!(
        "three namespaces (caller — relay — callee, veths, GRO, threaded NAPI on CPU {box_cpu}); \
         the box on CPU {box_cpu}; carrier sipp UAC with digest auth at {} calls/s for {} s, \
         calls held {} s with G.711 RTP both ways; vendor sipp UAS; the flood from this process \
         on CPU 0 (AF_PACKET + sendmmsg on the carrier's link, spoofed sources in 198.18.0.0/15)",
        o.cps,
        o.duration.as_secs_f64(),
        o.hold.as_secs_f64()
    )
}

/// The lowest asked rate (by achieved pps) at which completion fell below `pct`; `max` sorts
/// last by its measured rate.
fn falls_below(steps: &[&Step], pct: f64) -> Option<String> {
    steps
        .iter()
        .filter(|s| s.completed_pct < pct)
        .min_by(|a, b| a.sent.pps.total_cmp(&b.sent.pps))
        .map(|s| format!("{:.0} pps", s.sent.pps))
}

pub(super) fn markdown(r: &Report) -> String {
    let mut m = String::new();
    m.push_str("# Floods: legitimate calls while the SIP port is flooded\n\n");
    m.push_str(&format!(
        "`{}` — kernel {}, {} CPUs, {}; load average {} → {}.\n\n",
        r.command, r.kernel, r.cpus, r.sipp, r.loadavg_start, r.loadavg_end
    ));
    m.push_str(&format!("Setup: {}.\n\n", r.setup));
    m.push_str(&format!(
        "Per-source limits every defence gets: {} packets/s, {} INVITEs/s, {} SYNs/s, {} calls \
         at once (sipd's `[guard]`; pike at the packet rate; nftables meters at the packet and \
         SYN rates). Cells: calls completed % / setup p99 ms, at the asked flood rate \
         (`max`: unpaced; the rate reached is in the detail).\n\n",
        r.limits.packets_per_sec,
        r.limits.invites_per_sec,
        r.limits.syns_per_sec,
        r.limits.max_sessions
    ));
    // Summary: one row per system × kind.
    let mut rates: Vec<u32> = Vec::new();
    for s in r.systems.iter().flat_map(|s| &s.steps) {
        if let Some(rate) = s.rate
            && !rates.contains(&rate)
        {
            rates.push(rate);
        }
    }
    let label = |r: u32| if r == 0 { "max".into() } else { r.to_string() };
    m.push_str("| system | flood | no flood |");
    for &rate in &rates {
        m.push_str(&format!(" {} pps |", label(rate)));
    }
    m.push_str(" < 90% at | < 50% at |\n|---|---|---|");
    m.push_str(&"---|".repeat(rates.len() + 2));
    m.push('\n');
    let cell = |s: &Step| format!("{:.1}% / {}", s.completed_pct, opt(s.setup_p99_ms, 0));
    for sys in &r.systems {
        let base = sys.steps.iter().find(|s| s.kind.is_none());
        let mut kinds: Vec<Kind> = Vec::new();
        for s in &sys.steps {
            if let Some(k) = s.kind
                && !kinds.contains(&k)
            {
                kinds.push(k);
            }
        }
        if kinds.is_empty() {
            m.push_str(&format!(
                "| {} | - | {} |{} | | |\n",
                sys.name,
                base.map_or("-".into(), cell),
                " |".repeat(rates.len())
            ));
        }
        for k in kinds {
            let steps: Vec<&Step> = sys.steps.iter().filter(|s| s.kind == Some(k)).collect();
            m.push_str(&format!(
                "| {} | {} | {} |",
                sys.name,
                k.slug(),
                base.map_or("-".into(), cell)
            ));
            for &rate in &rates {
                let c = steps
                    .iter()
                    .find(|s| s.rate == Some(rate))
                    .map_or("-".into(), |s| cell(s));
                m.push_str(&format!(" {c} |"));
            }
            m.push_str(&format!(
                " {} | {} |\n",
                falls_below(&steps, 90.0).unwrap_or_else(|| "never".into()),
                falls_below(&steps, 50.0).unwrap_or_else(|| "never".into())
            ));
        }
        if let Some(e) = &sys.error {
            m.push_str(&format!(
                "| {} | **failed**: {} |\n",
                sys.name,
                e.lines().next().unwrap_or("")
            ));
        }
    }
    // The goal, for XDP.
    if let Some(x) = r.systems.iter().find(|s| s.system == System::SipdXdp) {
        let top = x
            .steps
            .iter()
            .filter(|s| s.kind.is_some())
            .map(|s| s.sent.pps)
            .fold(0.0, f64::max);
        let at_top: Vec<&Step> = x
            .steps
            .iter()
            .filter(|s| s.kind.is_some() && s.rate == rates.last().copied())
            .collect();
        let missed: Vec<String> = at_top
            .iter()
            .filter(|s| !s.good())
            .map(|s| {
                format!(
                    "{} ({:.1}%, p99 {} ms)",
                    s.kind.map_or("-", |k| k.slug()),
                    s.completed_pct,
                    opt(s.setup_p99_ms, 0)
                )
            })
            .collect();
        m.push_str(&format!(
            "\nGoal (XDP: ≥ {GOAL_PCT}% of calls, p99 setup < {GOAL_P99_MS} ms at the highest \
             rate, up to {top:.0} pps reached): {}\n",
            if at_top.is_empty() {
                "not measured".to_string()
            } else if missed.is_empty() {
                "**met** for every kind".to_string()
            } else {
                format!("**missed** for {}", missed.join(", "))
            }
        ));
    }
    // Details.
    for sys in &r.systems {
        m.push_str(&format!("\n## {} — {}\n\n", sys.name, sys.version));
        m.push_str(
            "| flood | asked | sent pps | sources | calls | p50 ms | p99 ms | box CPU % | \
             kernel % | counters that moved | caller's errors |\n\
             |---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for s in &sys.steps {
            let mut d: Vec<(&String, &u64)> = s.drops.iter().collect();
            d.sort_by(|a, b| b.1.cmp(a.1));
            let drops = d
                .iter()
                .take(4)
                .map(|(k, v)| format!("`{k}` {v}"))
                .collect::<Vec<_>>()
                .join(", ");
            let errs = s
                .uac_errors
                .iter()
                .map(|(e, n)| format!("{n}× {e}"))
                .collect::<Vec<_>>()
                .join("; ");
            m.push_str(&format!(
                "| {} | {} | {:.0} | {} | {}/{} | {} | {} | {:.0} | {:.0} | {} | {} |\n",
                s.kind.map_or("none", |k| k.slug()),
                s.rate_label(),
                s.sent.pps,
                s.sources,
                s.successful,
                s.offered,
                opt(s.setup_p50_ms, 0),
                opt(s.setup_p99_ms, 0),
                s.box_cpu_pct,
                s.kernel_cpu_pct,
                drops,
                errs.replace('|', "\\|")
            ));
        }
        if let Some(e) = &sys.error {
            m.push_str(&format!("\nFailed: {}\n", e.replace('\n', " ")));
        }
        m.push_str(&format!("\nLog: `{}`\n", sys.log));
    }
    m
}
