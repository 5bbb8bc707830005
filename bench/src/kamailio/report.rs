//! The Kamailio benchmark's results: one per system, the report written to `kamailio.json`,
//! and its Markdown table.

use serde::Serialize;

use super::System;
use super::media::MediaResult;
use crate::common::opt;
use crate::relay::cpu::CpuSnap;
use crate::sip::sipp::UacStats;

pub(super) const METHOD: &str = "Per system, a fresh three-namespace topology: Kamailio \
(tests/fixtures/kamailio/relayd.cfg) and the relay in the relay namespace on the last CPU, \
sipp UAC and UAS and the RTP generator on CPU 0. Calls at --rate for --duration, held --hold, \
RTP both ways at 50 pps per direction until 1.5 s before each BYE. Over the UAC's run: \
completed cps = successful calls / time sipp took to start them; setup = INVITE to 200 \
(sipp -trace_rtt); relayed = distinct intact packets received; relay ns/pkt = (relay \
process schedstat + relay namespace's threaded-NAPI kthreads) / relayed; +softirq = (relay \
process + softirq of all CPUs, /proc/stat, tick-sampled) / relayed; XDP ns/run = bpftool \
run_time_ns / run_cnt (kernel.bpf_stats_enabled=1); kernel share = (relay_tx + \
relay_redirect) / (those + relay_to_userspace) from relayd --status.";

/// One system's run.
#[derive(Debug, Clone, Serialize)]
pub(super) struct SystemResult {
    pub(super) system: System,
    /// The relay's version and mode.
    pub(super) relay: String,
    pub(super) calls_offered: u64,
    pub(super) calls_started: u64,
    pub(super) calls_successful: u64,
    pub(super) calls_failed: u64,
    /// Whether sipp's UAC ended by itself within the bound.
    pub(super) uac_finished: bool,
    /// sipp UAC's exit status.
    pub(super) uac_exit: Option<String>,
    /// The UAC's most frequent failure reasons (its error log), with counts.
    pub(super) uac_errors: Vec<(String, u64)>,
    /// Offered calls per second (sipp's -r).
    pub(super) offered_cps: u32,
    /// Successful calls / the time sipp took to start every call.
    pub(super) completed_cps: Option<f64>,
    /// INVITE → 200, per call (sipp's -trace_rtt), ms.
    pub(super) setup_median_ms: Option<f64>,
    pub(super) setup_p99_ms: Option<f64>,
    pub(super) setup_max_ms: Option<f64>,
    pub(super) retransmissions: u64,
    /// Calls that got media (both legs learnt).
    pub(super) media_calls: u64,
    pub(super) packets_sent: u64,
    pub(super) send_errors: u64,
    pub(super) packets_relayed: u64,
    pub(super) packets_lost: u64,
    pub(super) loss_pct: f64,
    pub(super) corrupt: u64,
    /// Times the RTP generator fell a 20 ms tick behind.
    pub(super) generator_late_ticks: u64,
    pub(super) wall_s: f64,
    /// The relay process, all threads (schedstat).
    pub(super) relay_cpu_s: f64,
    /// The relay namespace's veth NAPI threads (schedstat), if threaded NAPI worked.
    pub(super) relay_napi_s: Option<f64>,
    /// Softirq of all CPUs (/proc/stat, tick-sampled).
    pub(super) softirq_s: f64,
    /// ksoftirqd threads (schedstat).
    pub(super) ksoftirqd_s: f64,
    /// All CPUs busy (other work on the machine included).
    pub(super) system_busy_s: f64,
    /// Kamailio's processes (utime + stime).
    pub(super) kamailio_cpu_s: f64,
    pub(super) kamailio_ms_per_call: Option<f64>,
    /// relay process / relayed.
    pub(super) relay_process_ns_per_packet: Option<f64>,
    /// (relay process + relay NAPI) / relayed.
    pub(super) relay_ns_per_packet: Option<f64>,
    /// (relay process + softirq) / relayed.
    pub(super) relay_softirq_ns_per_packet: Option<f64>,
    /// relayd: relay_tx + relay_redirect over the run.
    pub(super) kernel_forwarded: Option<u64>,
    /// relayd: relay_to_userspace over the run.
    pub(super) to_userspace: Option<u64>,
    pub(super) kernel_share_pct: Option<f64>,
    pub(super) xdp_runs: Option<u64>,
    pub(super) xdp_ns_per_run: Option<f64>,
    pub(super) error: Option<String>,
}

impl SystemResult {
    pub(super) fn new(system: System) -> SystemResult {
        SystemResult {
            system,
            relay: String::new(),
            calls_offered: 0,
            calls_started: 0,
            calls_successful: 0,
            calls_failed: 0,
            uac_finished: false,
            uac_exit: None,
            uac_errors: Vec::new(),
            offered_cps: 0,
            completed_cps: None,
            setup_median_ms: None,
            setup_p99_ms: None,
            setup_max_ms: None,
            retransmissions: 0,
            media_calls: 0,
            packets_sent: 0,
            send_errors: 0,
            packets_relayed: 0,
            packets_lost: 0,
            loss_pct: 0.0,
            corrupt: 0,
            generator_late_ticks: 0,
            wall_s: 0.0,
            relay_cpu_s: 0.0,
            relay_napi_s: None,
            softirq_s: 0.0,
            ksoftirqd_s: 0.0,
            system_busy_s: 0.0,
            kamailio_cpu_s: 0.0,
            kamailio_ms_per_call: None,
            relay_process_ns_per_packet: None,
            relay_ns_per_packet: None,
            relay_softirq_ns_per_packet: None,
            kernel_forwarded: None,
            to_userspace: None,
            kernel_share_pct: None,
            xdp_runs: None,
            xdp_ns_per_run: None,
            error: None,
        }
    }

    pub(super) fn record_calls(
        &mut self,
        offered: u64,
        rate: u32,
        stats: Option<&UacStats>,
        setup_ms: &[f64],
        finished: bool,
    ) {
        self.calls_offered = offered;
        self.offered_cps = rate;
        self.uac_finished = finished;
        if let Some(s) = stats {
            self.calls_started = s.outgoing;
            self.calls_successful = s.successful;
            self.calls_failed = offered.saturating_sub(s.successful);
            self.retransmissions = s.retransmissions;
            // Until every call was started; a run that did not start them all has none.
            self.completed_cps = s
                .generation_s
                .filter(|g| *g > 0.0)
                .map(|g| s.successful as f64 / g);
        } else {
            self.calls_failed = offered;
        }
        let mut v = setup_ms.to_vec();
        v.sort_by(f64::total_cmp);
        self.setup_median_ms = percentile(&v, 50.0);
        self.setup_p99_ms = percentile(&v, 99.0);
        self.setup_max_ms = v.last().copied();
    }

    pub(super) fn record_media(&mut self, m: &MediaResult) {
        self.media_calls = m.calls;
        self.packets_sent = m.sent;
        self.send_errors = m.send_errors;
        self.packets_relayed = m.relayed;
        self.packets_lost = m.lost;
        self.loss_pct = if m.sent == 0 {
            0.0
        } else {
            100.0 * m.lost as f64 / m.sent as f64
        };
        self.corrupt = m.corrupt;
        self.generator_late_ticks = m.late_ticks;
    }

    pub(super) fn record_cpu(&mut self, c0: &CpuSnap, c1: &CpuSnap, napi: bool, kam_s: f64) {
        self.relay_cpu_s = c1.relay_s - c0.relay_s;
        self.relay_napi_s = napi.then_some(c1.napi_s - c0.napi_s);
        self.softirq_s = c1.softirq_s - c0.softirq_s;
        self.ksoftirqd_s = c1.ksoftirqd_s - c0.ksoftirqd_s;
        self.system_busy_s = c1.busy_s - c0.busy_s;
        self.kamailio_cpu_s = kam_s;
        self.kamailio_ms_per_call =
            (self.calls_successful > 0).then(|| kam_s * 1000.0 / self.calls_successful as f64);
        let per =
            |s: f64| (self.packets_relayed > 0).then(|| s * 1e9 / self.packets_relayed as f64);
        self.relay_process_ns_per_packet = per(self.relay_cpu_s);
        self.relay_ns_per_packet = self.relay_napi_s.and_then(|n| per(self.relay_cpu_s + n));
        self.relay_softirq_ns_per_packet = per(self.relay_cpu_s + self.softirq_s);
    }

    pub(super) fn record_xdp(&mut self, kernel: u64, user: u64, prog: (u64, u64)) {
        self.kernel_forwarded = Some(kernel);
        self.to_userspace = Some(user);
        self.kernel_share_pct =
            (kernel + user > 0).then(|| 100.0 * kernel as f64 / (kernel + user) as f64);
        self.xdp_runs = Some(prog.1);
        self.xdp_ns_per_run = (prog.1 > 0).then(|| prog.0 as f64 / prog.1 as f64);
    }

    pub(super) fn print(&self) {
        println!(
            "   calls {}/{} ok ({} failed), {} cps completed, setup median {} ms p99 {} ms; \
             RTP sent {}, relayed {}, lost {} ({:.3}%), corrupt {}; relay CPU {:.2} s + NAPI \
             {} s = {} ns/pkt (+softirq: {} ns/pkt); XDP {} ns/run, kernel share {}%; \
             Kamailio {:.2} s CPU ({} ms/call); generator late ticks {}",
            self.calls_successful,
            self.calls_offered,
            self.calls_failed,
            opt(self.completed_cps, 1),
            opt(self.setup_median_ms, 2),
            opt(self.setup_p99_ms, 2),
            self.packets_sent,
            self.packets_relayed,
            self.packets_lost,
            self.loss_pct,
            self.corrupt,
            self.relay_cpu_s,
            opt(self.relay_napi_s, 2),
            opt(self.relay_ns_per_packet, 0),
            opt(self.relay_softirq_ns_per_packet, 0),
            opt(self.xdp_ns_per_run, 1),
            opt(self.kernel_share_pct, 2),
            self.kamailio_cpu_s,
            opt(self.kamailio_ms_per_call, 3),
            self.generator_late_ticks,
        );
        if self.calls_failed > 0 {
            println!(
                "   sipp UAC exit: {}",
                self.uac_exit.as_deref().unwrap_or("-")
            );
            for (e, n) in &self.uac_errors {
                println!("         {n} × {e}");
            }
        }
    }
}

/// The `p`th percentile (nearest rank) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// What `kamailio.json` holds.
#[derive(Debug, Serialize)]
pub(super) struct Report {
    pub(super) command: String,
    pub(super) kernel: String,
    pub(super) cpus: usize,
    pub(super) sipp: String,
    pub(super) kamailio: String,
    pub(super) rate_cps: u32,
    pub(super) duration_s: f64,
    pub(super) hold_s: f64,
    pub(super) calls: u64,
    pub(super) method: String,
    pub(super) loadavg_start: String,
    pub(super) loadavg_end: String,
    pub(super) systems: Vec<SystemResult>,
}

pub(super) fn markdown(r: &Report) -> String {
    let mut s = format!(
        "Kamailio in front of the relay: `{}`; kernel {}, {} CPUs, {}, Kamailio {}; {} calls \
         at {} cps held {:.0} s, RTP 50 pps each way; load average {} at the start, {} at the \
         end.\n\n",
        r.command,
        r.kernel,
        r.cpus,
        r.sipp,
        r.kamailio,
        r.calls,
        r.rate_cps,
        r.hold_s,
        r.loadavg_start,
        r.loadavg_end
    );
    s.push_str(
        "| system | calls ok / offered | completed cps | setup median / p99 ms | RTP relayed \
         | lost | relay CPU s (process + NAPI) | relay ns/pkt | +softirq ns/pkt | XDP ns/run \
         | kernel share | Kamailio ms/call |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for x in &r.systems {
        if let Some(e) = &x.error
            && x.packets_sent == 0
        {
            s.push_str(&format!(
                "| {} | failed: {} |||||||||||\n",
                x.system.name(),
                e.lines().next().unwrap_or("")
            ));
            continue;
        }
        s.push_str(&format!(
            "| {} | {} / {} | {} | {} / {} | {} | {} ({:.3}%) | {:.2} + {} | {} | {} | {} | {} | {} |\n",
            x.system.name(),
            x.calls_successful,
            x.calls_offered,
            opt(x.completed_cps, 1),
            opt(x.setup_median_ms, 2),
            opt(x.setup_p99_ms, 2),
            x.packets_relayed,
            x.packets_lost,
            x.loss_pct,
            x.relay_cpu_s,
            opt(x.relay_napi_s, 2),
            opt(x.relay_ns_per_packet, 0),
            opt(x.relay_softirq_ns_per_packet, 0),
            opt(x.xdp_ns_per_run, 1),
            x.kernel_share_pct.map_or("-".into(), |k| format!("{k:.2}%")),
            opt(x.kamailio_ms_per_call, 3),
        ));
    }
    s.push_str(&format!("\nMethod: {}\n", r.method));
    s
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
