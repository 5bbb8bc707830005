//! The SIP benchmark's results: each step, each system's result, the report written to
//! `sip.json`, and its Markdown.

use serde::Serialize;

use super::{
    KAMAILIO_PORT, MAX_FAILED, MIN_GENERATED, Opts, RTPENGINE_MEDIA, SIPD_MEDIA, SIPD_PORT,
    SIPP_CPU, System, UAC_PORT, UAS_PORT,
};
use crate::common::opt;

/// One step: `calls` calls offered at `rate`.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Step {
    pub(super) system: System,
    pub(super) rate: u32,
    pub(super) calls: u64,
    pub(super) successful: u64,
    /// sipp's failed calls plus calls it never finished.
    pub(super) failed: u64,
    pub(super) failed_pct: f64,
    /// Calls started per second by sipp (calls / time to start the last one).
    pub(super) generated_cps: Option<f64>,
    pub(super) passed: bool,
    /// Why it failed (failures, generator, the proxy exiting).
    pub(super) verdict: String,
    pub(super) failed_by_kind: std::collections::BTreeMap<String, u64>,
    /// Most frequent failure reasons in sipp's error log.
    pub(super) errors: Vec<(String, u64)>,
    pub(super) retransmissions: u64,
    /// Mean authenticated-INVITE → 200 time, ms.
    pub(super) setup_ms: Option<f64>,
    /// Mean BYE → 200 time, ms.
    pub(super) bye_ms: Option<f64>,
    /// Wall time of the step (sipp UAC start to exit), s.
    pub(super) wall_s: f64,
    /// The proxy's CPU time over the step (utime + stime of its processes, Kamailio's
    /// including rtpengine), s.
    pub(super) proxy_cpu_s: f64,
    /// Part of it in rtpengine (Kamailio only).
    pub(super) media_cpu_s: Option<f64>,
    /// proxy_cpu_s / calls, ms.
    pub(super) cpu_ms_per_call: f64,
    /// proxy_cpu_s / wall_s: how much of its CPU the proxy used, percent.
    pub(super) proxy_cpu_pct: f64,
    /// Busy share of each CPU over the step (includes everything else on the machine).
    pub(super) cpu_busy_pct: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct SystemResult {
    pub(super) system: System,
    /// Version string of the proxy (and relay).
    pub(super) version: String,
    /// Highest rate that passed, if any.
    pub(super) max_cps: Option<u32>,
    /// Lowest rate that failed above it, if any.
    pub(super) first_failed_cps: Option<u32>,
    /// CPU per call at max_cps, ms.
    pub(super) cpu_ms_per_call: Option<f64>,
    pub(super) steps: Vec<Step>,
    /// Set if the system could not be measured (or stopped early); its steps so far are kept.
    pub(super) error: Option<String>,
    pub(super) log: String,
}

#[derive(Debug, Serialize)]
pub(super) struct Report {
    /// How this run was started.
    pub(super) command: String,
    pub(super) kernel: String,
    pub(super) cpus: usize,
    pub(super) sipp: String,
    pub(super) setup: String,
    pub(super) method: String,
    pub(super) duration_s: f64,
    pub(super) hold_ms: u64,
    pub(super) loadavg_start: String,
    pub(super) loadavg_end: String,
    pub(super) systems: Vec<SystemResult>,
}

pub(super) fn setup_text(o: &Opts, proxy_cpu: usize) -> String {
    format!(
        "All on 127.0.0.1/UDP. Caller: sipp UAC :{UAC_PORT} (one process per step), callee: \
         sipp UAS :{UAS_PORT}, both on CPU {SIPP_CPU} (with this process). Proxy under test \
         on CPU {proxy_cpu}: sipd :{SIPD_PORT} (data plane {dp}, media ports {}-{}, one \
         account with username/password digest, MD5 only (sipd's default), no source restriction, free \
         tariff, one connection to the UAS, limits far above the load) or Kamailio :{KAMAILIO_PORT} \
         ({children} UDP workers; tm, sl, rr, maxfwd, auth pv_www_authenticate with a \
         plain password, record_route, t_relay, rtpengine_offer/answer/delete) with \
         rtpengine --table=-1 (userspace forwarding, media ports {}-{}) on the same CPU. \
         Call: INVITE, 401 (MD5, qop=auth), ACK, INVITE with credentials, 100, 200 (SDP \
         through the relay), ACK, {hold} ms hold, BYE, 200; no RTP is sent. sipd log level: \
         {log}.",
        SIPD_MEDIA.0,
        SIPD_MEDIA.1 + 1,
        RTPENGINE_MEDIA.0,
        RTPENGINE_MEDIA.1,
        dp = o.dataplane,
        children = o.kamailio_children,
        hold = o.hold_ms,
        log = std::env::var("RUST_LOG").unwrap_or_else(|_| "default (info)".into()),
    )
}

pub(super) fn method_text(o: &Opts) -> String {
    let search = match &o.rates {
        Some(r) => format!("fixed rates {r:?}"),
        None => format!(
            "rates doubling from {} up to {} until a step fails, then up to {} bisection steps \
             (stopping within 5%); at most {} s of steps per system",
            o.start,
            o.max,
            o.bisect,
            o.budget.as_secs()
        ),
    };
    format!(
        "{search}. A step offers rate × {} s calls; it passes with failed calls (sipp \
         FailedCall + calls never finished) < {}% and calls started at ≥ {}% of the rate; \
         after a failed step the proxy (and rtpengine) and the callee are restarted. CPU \
         per call = proxy processes' utime+stime (/proc/<pid>/stat; Kamailio: all its \
         processes + rtpengine) over the step / calls offered.",
        o.duration.as_secs_f64(),
        MAX_FAILED * 100.0,
        MIN_GENERATED * 100.0
    )
}

pub(super) fn markdown(r: &Report) -> String {
    let mut s = format!(
        "SIP benchmark: calls per second with < {}% failed calls, INVITE with digest auth \
         (401 challenge, then authenticated INVITE) / 100 / 200 / ACK / BYE / 200, media \
         anchored. Kernel {}, {} CPUs, {}. Load average at start {}, at end {} (other work \
         on the machine counts against both).\n\n\
         Command: `{}`\n\nSetup: {}\n\nMethod: {}\n\n\
         | system | max cps (< 0.1% failed) | first failing rate | CPU ms/call at max |\n\
         |---|---:|---:|---:|\n",
        MAX_FAILED * 100.0,
        r.kernel,
        r.cpus,
        r.sipp,
        r.loadavg_start,
        r.loadavg_end,
        r.command,
        r.setup,
        r.method,
    );
    for sys in &r.systems {
        s.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            sys.system.name(),
            sys.max_cps.map_or("none".into(), |c| c.to_string()),
            sys.first_failed_cps.map_or("-".into(), |c| c.to_string()),
            opt(sys.cpu_ms_per_call, 3),
        ));
    }
    s.push_str(
        "\nSteps:\n\n\
         | system | rate | calls | ok | failed | failed % | generated cps | setup ms | \
         retrans | proxy CPU s | of it rtpengine s | CPU ms/call | proxy CPU % | CPU0/CPU1 busy % \
         | result |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n",
    );
    for sys in &r.systems {
        for p in &sys.steps {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.3} | {} | {} | {} | {:.2} | {} | {:.3} | {:.0} | {} | {} |\n",
                sys.system.name(),
                p.rate,
                p.calls,
                p.successful,
                p.failed,
                p.failed_pct,
                opt(p.generated_cps, 0),
                opt(p.setup_ms, 1),
                p.retransmissions,
                p.proxy_cpu_s,
                opt(p.media_cpu_s, 2),
                p.cpu_ms_per_call,
                p.proxy_cpu_pct,
                p.cpu_busy_pct
                    .iter()
                    .map(|b| format!("{b:.0}"))
                    .collect::<Vec<_>>()
                    .join("/"),
                if p.passed {
                    "pass".to_string()
                } else {
                    format!("FAIL: {}", p.verdict.replace('|', "/"))
                },
            ));
        }
    }
    for sys in &r.systems {
        let failing: Vec<&Step> = sys.steps.iter().filter(|p| !p.errors.is_empty()).collect();
        if !failing.is_empty() {
            s.push_str(&format!(
                "\n{} failure reasons (sipp):\n\n",
                sys.system.name()
            ));
            for p in failing {
                for (e, n) in &p.errors {
                    s.push_str(&format!(
                        "- {} cps: {n} × {}\n",
                        p.rate,
                        e.replace('|', "/")
                    ));
                }
            }
        }
        if let Some(e) = &sys.error {
            s.push_str(&format!(
                "\nFAILED {}: {}\n",
                sys.system.name(),
                e.replace('\n', "\n    ")
            ));
        }
    }
    s
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn markdown_has_both_tables() {
        let step = Step {
            system: System::Kamailio,
            rate: 400,
            calls: 4000,
            successful: 4000,
            failed: 0,
            failed_pct: 0.0,
            generated_cps: Some(399.0),
            passed: true,
            verdict: "pass".into(),
            failed_by_kind: Default::default(),
            errors: vec![],
            retransmissions: 0,
            setup_ms: Some(1.5),
            bye_ms: Some(0.5),
            wall_s: 11.0,
            proxy_cpu_s: 2.0,
            media_cpu_s: Some(0.5),
            cpu_ms_per_call: 0.5,
            proxy_cpu_pct: 18.0,
            cpu_busy_pct: vec![50.0, 30.0],
        };
        let r = Report {
            command: "cargo xtask bench sip".into(),
            kernel: "6.1".into(),
            cpus: 2,
            sipp: "SIPp v3.6.1".into(),
            setup: "setup".into(),
            method: "method".into(),
            duration_s: 10.0,
            hold_ms: 1000,
            loadavg_start: "0.1 0.1 0.1".into(),
            loadavg_end: "0.2 0.1 0.1".into(),
            systems: vec![
                SystemResult {
                    system: System::Kamailio,
                    version: "kamailio".into(),
                    max_cps: Some(400),
                    first_failed_cps: Some(800),
                    cpu_ms_per_call: Some(0.5),
                    steps: vec![step],
                    error: None,
                    log: String::new(),
                },
                SystemResult {
                    system: System::Sipd,
                    version: String::new(),
                    max_cps: None,
                    first_failed_cps: None,
                    cpu_ms_per_call: None,
                    steps: vec![],
                    error: Some("sipd has no `run` command yet".into()),
                    log: String::new(),
                },
            ],
        };
        let md = markdown(&r);
        assert!(
            md.contains("| Kamailio + rtpengine | 400 | 800 | 0.500 |"),
            "{md}"
        );
        assert!(
            md.contains("| Kamailio + rtpengine | 400 | 4000 | 4000 | 0 | 0.000 | 399 | 1.5 | 0 | 2.00 | 0.50 | 0.500 | 18 | 50/30 | pass |"),
            "{md}"
        );
        assert!(
            md.contains("FAILED sipd: sipd has no `run` command yet"),
            "{md}"
        );
    }
}
