//! One sample of everything the soak watches: sipd's memory and file descriptors (`/proc`),
//! the entries of every BPF map of its instance (the pins under `/sys/fs/bpf/<instance>`), and
//! the gauges of its `/metrics` page (the bounded tables), plus the counters the report needs.

use std::collections::BTreeMap;
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::path::Path;

use ::tests::netns::Netns;
use aya::maps::{MapInfo, MapType};

/// Gauges on `/metrics` that are not tables: limits, times, flags, a loss gauge.
const NOT_TABLES: &[&str] = &[
    "sipd_start_time_seconds",
    "sipd_uptime_seconds",
    "sipd_calls_capacity",
    "sbc_relay_rtp_lost",
    "sbc_firewall_coverage",
    "sbc_dataplane_mode",
    "sbc_bans_capacity",
    "sipd_mgmt_tls_self_signed",
    "sipd_cdr_queue_capacity",
];

/// Counters the report keeps (the last sample's).
pub(super) const COUNTERS: &[&str] = &[
    "sipd_calls_total",
    "sipd_calls_answered_total",
    "sipd_calls_failed_total",
    "sbc_relay_packets_total",
    "sbc_relay_plane_packets_total{plane=\"kernel\"}",
    "sbc_relay_plane_packets_total{plane=\"userspace\"}",
    "sipd_cdr_queue_dropped_total",
    "sipd_refusal_rows_evicted_total",
    "sipd_ids_sources_evicted_total",
    "sipd_call_messages_dropped_total",
];

/// One reading: seconds since the soak started, and every figure by name
/// (`proc.rss_kib`, `map.LEG_COUNTERS`, `metric.sipd_calls_active`, …).
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct Sample {
    pub(super) t_s: f64,
    pub(super) figures: BTreeMap<String, u64>,
    /// The counters of [`COUNTERS`] found on the page.
    #[serde(skip)]
    pub(super) counters: BTreeMap<String, u64>,
    /// What could not be read this time (a figure missing from one sample is not compared).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) errors: Vec<String>,
}

/// Where to read: sipd's PID, its BPF instance, and its `/metrics` URL in `ns`.
pub(super) struct Target<'a> {
    pub(super) pid: u32,
    pub(super) instance: &'a str,
    pub(super) ns: &'a Netns,
    pub(super) metrics_url: String,
}

impl Target<'_> {
    pub(super) fn sample(&self, t_s: f64) -> Sample {
        let mut s = Sample {
            t_s,
            figures: BTreeMap::new(),
            counters: BTreeMap::new(),
            errors: Vec::new(),
        };
        match proc_figures(self.pid) {
            Ok(f) => s.figures.extend(f),
            Err(e) => s.errors.push(format!("/proc/{}: {e}", self.pid)),
        }
        for (name, r) in map_entries(&Path::new("/sys/fs/bpf").join(self.instance)) {
            match r {
                Ok(Some(n)) => {
                    s.figures.insert(format!("map.{name}"), n);
                }
                Ok(None) => {}
                Err(e) => s.errors.push(format!("map {name}: {e}")),
            }
        }
        match self.metrics() {
            Ok(text) => {
                let (gauges, counters) = parse_metrics(&text);
                s.figures
                    .extend(gauges.into_iter().map(|(k, v)| (format!("metric.{k}"), v)));
                s.counters = counters;
            }
            Err(e) => s.errors.push(format!("/metrics: {e:#}")),
        }
        s
    }

    fn metrics(&self) -> anyhow::Result<String> {
        let out = self
            .ns
            .command("curl")
            .args(["-sk", "--fail", "--max-time", "10"])
            .arg(&self.metrics_url)
            .output()?;
        if !out.status.success() {
            anyhow::bail!("curl exited {}", out.status);
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// RSS and its high-water mark (KiB, `/proc/<pid>/status`), open file descriptors, threads.
fn proc_figures(pid: u32) -> std::io::Result<Vec<(String, u64)>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let mut out = Vec::new();
    for (key, name) in [
        ("VmRSS:", "proc.rss_kib"),
        ("VmHWM:", "proc.hwm_kib"),
        ("Threads:", "proc.threads"),
    ] {
        if let Some(v) = status.lines().find_map(|l| {
            l.strip_prefix(key)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        }) {
            out.push((name.to_string(), v));
        }
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    out.push(("proc.fds".into(), fds));
    Ok(out)
}

/// The entries of every map of the program's layout pinned under `dir`: `Ok(None)` for the
/// ones whose size is fixed (arrays, the ring buffer).
fn map_entries(dir: &Path) -> Vec<(&'static str, anyhow::Result<Option<u64>>)> {
    relay_common::maps::LAYOUT
        .iter()
        .map(|l| (l.name, count_pinned(&dir.join(l.name))))
        .collect()
}

fn count_pinned(pin: &Path) -> anyhow::Result<Option<u64>> {
    let info = MapInfo::from_pin(pin)?;
    match info.map_type()? {
        MapType::Array | MapType::PerCpuArray | MapType::RingBuf => return Ok(None),
        _ => {}
    }
    let fd = info.fd()?;
    let key_size = info.key_size() as usize;
    // A hash changing under the walk can restart it: never count past its capacity.
    let cap = u64::from(info.max_entries());
    let mut key = vec![0u8; key_size];
    let mut next = vec![0u8; key_size];
    let mut n = 0u64;
    let mut first = true;
    while n <= cap {
        if !next_key(
            fd.as_fd().as_raw_fd(),
            (!first).then_some(&key[..]),
            &mut next,
        )? {
            break;
        }
        first = false;
        n += 1;
        std::mem::swap(&mut key, &mut next);
    }
    Ok(Some(n))
}

/// `BPF_MAP_GET_NEXT_KEY`: the key after `key` (the first with `None`); false at the end.
fn next_key(fd: i32, key: Option<&[u8]>, next: &mut [u8]) -> std::io::Result<bool> {
    /// The part of `union bpf_attr` the map element commands use.
    #[repr(C)]
    struct ElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        next_key: u64,
        flags: u64,
    }
    const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
    let attr = ElemAttr {
        map_fd: fd as u32,
        _pad: 0,
        key: key.map_or(0, |k| k.as_ptr() as u64),
        next_key: next.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: bpf(2) reads `attr` and the key buffer (the map's key size, which `key` has)
    // and writes one key into `next`, which has the map's key size too.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_GET_NEXT_KEY,
            &attr as *const ElemAttr,
            std::mem::size_of::<ElemAttr>() as u32,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOENT) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// (gauges that are tables, by series; the counters of [`COUNTERS`]) of a `/metrics` page.
fn parse_metrics(text: &str) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let mut kinds: BTreeMap<&str, &str> = BTreeMap::new();
    let (mut gauges, mut counters) = (BTreeMap::new(), BTreeMap::new());
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut w = rest.split_whitespace();
            if let (Some(n), Some(k)) = (w.next(), w.next()) {
                kinds.insert(n, k);
            }
            continue;
        }
        if l.starts_with('#') {
            continue;
        }
        let Some((series, v)) = l.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = v.trim().parse::<f64>() else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if COUNTERS.contains(&series) {
            counters.insert(series.to_string(), v as u64);
        }
        if kinds.get(name) == Some(&"gauge") && !NOT_TABLES.contains(&name) {
            gauges.insert(series.to_string(), v as u64);
        }
    }
    (gauges, counters)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn tables_and_counters_from_the_page() {
        let page = "# HELP sipd_calls_active x\n# TYPE sipd_calls_active gauge\n\
                    sipd_calls_active 3\n# TYPE sipd_uptime_seconds gauge\nsipd_uptime_seconds 9\n\
                    # TYPE sipd_calls_answered_total counter\nsipd_calls_answered_total 12\n\
                    # TYPE sbc_relay_plane_packets_total counter\n\
                    sbc_relay_plane_packets_total{plane=\"kernel\"} 40\n";
        let (g, c) = parse_metrics(page);
        assert_eq!(
            g.into_iter().collect::<Vec<_>>(),
            [("sipd_calls_active".into(), 3)]
        );
        assert_eq!(c["sipd_calls_answered_total"], 12);
        assert_eq!(c["sbc_relay_plane_packets_total{plane=\"kernel\"}"], 40);
    }

    #[test]
    fn own_process_figures() {
        let f = proc_figures(std::process::id()).unwrap();
        let names: Vec<&str> = f.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["proc.rss_kib", "proc.hwm_kib", "proc.threads", "proc.fds"]
        );
        assert!(f[0].1 > 0 && f[3].1 > 0);
    }
}
