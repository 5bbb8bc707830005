//! The relay benchmark's results: one point per plane and rate, the report written to
//! `relay.json`, and its Markdown table.

use serde::Serialize;

use super::{Family, Plane};
use crate::common::opt;

/// One measured point.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Point {
    pub(super) plane: Plane,
    /// The calls' address families (caller's, callee's).
    pub(super) family: Family,
    pub(super) offered_pps: u32,
    pub(super) calls: usize,
    pub(super) duration_s: f64,
    pub(super) sent: u64,
    pub(super) send_errors: u64,
    pub(super) sent_pps: f64,
    pub(super) forwarded: u64,
    pub(super) forwarded_pps: f64,
    pub(super) lost: u64,
    pub(super) loss_pct: f64,
    pub(super) duplicates: u64,
    pub(super) reordered: u64,
    pub(super) corrupt: u64,
    /// Relay process, all threads, CPU time (schedstat, ns-exact; includes the softirq work
    /// the kernel ran in its context).
    pub(super) relay_cpu_s: f64,
    /// Softirq ticks of all CPUs (/proc/stat; tick-sampled, also charged to the task it
    /// interrupted, so it overlaps the task times).
    pub(super) softirq_s: f64,
    /// The relay namespace's veth NAPI threads (threaded NAPI, pinned to the relay's CPU;
    /// schedstat): the relay side's kernel receive path (XDP, or the stack up to the relay's
    /// socket, or ip_forward for the baseline) and what it transmits on.
    pub(super) relay_napi_s: Option<f64>,
    /// This process (the generators and sinks, all threads; getrusage). They pace by
    /// sleeping and spinning, so this is about the run's wall time, not their work.
    pub(super) generators_cpu_s: f64,
    /// The ksoftirqd threads (schedstat).
    pub(super) ksoftirqd_s: f64,
    /// Everything but idle, iowait and steal, all CPUs (includes other work on the machine).
    pub(super) system_busy_s: f64,
    /// (relay_cpu_s + softirq_s) / forwarded.
    pub(super) ns_per_packet: Option<f64>,
    /// (relay_cpu_s + relay_napi_s) / forwarded: the relay side's whole CPU per packet,
    /// user and kernel, exact.
    pub(super) relay_side_ns_per_packet: Option<f64>,
    /// `relay_side_ns_per_packet` minus the baseline plane's (kernel ip_forward) at the same
    /// offered rate, when the baseline ran.
    pub(super) relay_side_over_baseline: Option<f64>,
    /// XDP planes: relayd's `relay_tx + relay_redirect` over the run (`relayd --status`).
    pub(super) kernel_forwarded: Option<u64>,
    /// XDP planes: relayd's `relay_to_userspace` over the run.
    pub(super) to_userspace: Option<u64>,
    /// XDP planes: kernel_forwarded / (kernel_forwarded + to_userspace), percent.
    pub(super) kernel_share_pct: Option<f64>,
    /// XDP planes: runs of relayd's XDP program(s) over the run (`bpftool prog show`,
    /// `kernel.bpf_stats_enabled=1`).
    pub(super) xdp_runs: Option<u64>,
    /// XDP planes: their total run time, ns.
    pub(super) xdp_run_ns: Option<u64>,
    /// XDP planes: xdp_run_ns / xdp_runs: the program's own cost per packet.
    pub(super) xdp_ns_per_run: Option<f64>,
}

/// A plane that failed or could not be measured, and why (its points so far are kept).
#[derive(Debug, Clone, Serialize)]
pub(super) struct Failed {
    pub(super) plane: Plane,
    pub(super) family: Family,
    pub(super) reason: String,
}

#[derive(Debug, Serialize)]
pub(super) struct Report {
    pub(super) kernel: String,
    pub(super) cpus: usize,
    /// The families the planes ran with, in order.
    pub(super) families: Vec<Family>,
    pub(super) method: &'static str,
    /// /proc/loadavg when the run started and when it ended (other work on the machine).
    pub(super) loadavg_start: String,
    pub(super) loadavg_end: String,
    pub(super) points: Vec<Point>,
    pub(super) failed: Vec<Failed>,
}

pub(super) fn markdown(r: &Report) -> String {
    let mut s = format!(
        "Relay benchmark: kernel {}, {} CPUs, {}; G.711-sized RTP (172 B), 50 pps per call and \
         direction, both directions. Load average at start {}, at end {}.\n\n\
         - relay+softirq = (relay process CPU, schedstat + softirq of all CPUs, /proc/stat) / \
         forwarded packet. Without IRQ time accounting softirq is tick-sampled and mostly \
         charged to the task it ran in, so this misses most XDP work.\n\
         - relay side = (relay process + the relay namespace's veth NAPI threads, threaded \
         NAPI pinned to the relay's CPU; schedstat, exact) / forwarded packet: everything the \
         relay's CPU spends from receiving a packet to handing it to the far peer's socket. \
         Per-packet NAPI thread wake-ups inflate it at low rates. over base = that minus the \
         baseline's (plain kernel IP forwarding, no relay) at the same rate.\n\
         - XDP ns/run = relayd's XDP program run time / runs (bpftool, \
         kernel.bpf_stats_enabled=1): the exact in-kernel per-packet cost, excluding the \
         redirect's transmit into the egress veth.\n\
         - kernel % = packets the XDP program forwarded itself (relay_tx + relay_redirect) out \
         of those plus the ones it passed to relayd's userspace path.\n\
         - family IPv6↔IPv4: an IPv6 caller and an IPv4 callee, bridged by the relay on `::` \
         (its userspace path: the XDP program passes such packets up); its over base is \
         against the IPv6 baseline.\n\n\
         | plane | family | offered pps | calls | sent pps | forwarded pps | loss % | \
         relay+softirq ns/pkt | relay side ns/pkt | over base | XDP ns/run | kernel % |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        r.kernel,
        r.cpus,
        r.families
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(", "),
        r.loadavg_start,
        r.loadavg_end,
    );
    for p in &r.points {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.3} | {} | {} | {} | {} | {} |\n",
            p.plane.name(),
            p.family.name(),
            p.offered_pps,
            p.calls,
            p.sent_pps,
            p.forwarded_pps,
            p.loss_pct,
            opt(p.ns_per_packet, 0),
            opt(p.relay_side_ns_per_packet, 0),
            opt(p.relay_side_over_baseline, 0),
            opt(p.xdp_ns_per_run, 1),
            opt(p.kernel_share_pct, 2),
        ));
    }
    for k in &r.failed {
        s.push_str(&format!(
            "\nFAILED {} {}: {}\n",
            k.plane.name(),
            k.family.name(),
            k.reason
        ));
    }
    s
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn markdown_has_every_column() {
        let p = Point {
            plane: Plane::XdpNative,
            family: Family::V4,
            offered_pps: 5000,
            calls: 50,
            duration_s: 5.0,
            sent: 25_000,
            send_errors: 0,
            sent_pps: 5000.0,
            forwarded: 25_000,
            forwarded_pps: 5000.0,
            lost: 0,
            loss_pct: 0.0,
            duplicates: 0,
            reordered: 0,
            corrupt: 0,
            relay_cpu_s: 0.0,
            softirq_s: 0.01,
            relay_napi_s: Some(0.05),
            generators_cpu_s: 5.0,
            ksoftirqd_s: 0.0,
            system_busy_s: 6.0,
            ns_per_packet: Some(400.0),
            relay_side_ns_per_packet: Some(2000.0),
            relay_side_over_baseline: Some(-100.0),
            kernel_forwarded: Some(25_000),
            to_userspace: Some(0),
            kernel_share_pct: Some(100.0),
            xdp_runs: Some(25_000),
            xdp_run_ns: Some(30_000_000),
            xdp_ns_per_run: Some(1200.0),
        };
        let r = Report {
            kernel: "6.18".into(),
            cpus: 2,
            families: vec![Family::V4],
            method: "",
            loadavg_start: "1.00 1.00 1.00".into(),
            loadavg_end: "2.00 1.00 1.00".into(),
            points: vec![p],
            failed: vec![Failed {
                plane: Plane::Rtpengine,
                family: Family::V4,
                reason: "not installed".into(),
            }],
        };
        let md = markdown(&r);
        assert!(
            md.contains("| relayd XDP native | IPv4 | 5000 | 50 | 5000 | 5000 | 0.000 | 400 | 2000 | -100 | 1200.0 | 100.00 |"),
            "{md}"
        );
        assert!(
            md.contains("FAILED rtpengine userspace IPv4: not installed"),
            "{md}"
        );
        assert!(md.contains("Load average at start 1.00 1.00 1.00"), "{md}");
    }
}
