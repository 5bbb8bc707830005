//! The soak's verdict (did every figure come back to its idle level?) and its report,
//! `target/bench/soak.json` and `soak.md`.

use std::fmt::Write as _;

use serde::Serialize;

use super::sample::Sample;

/// `[call_messages]` defaults (sipd's `CaptureConfig`): the bench's sbc.toml keeps them.
const LADDER_ENDED_CALLS: u64 = 500;
const LADDER_MAX_BYTES: u64 = 32 * 1024 * 1024;
/// Peer hosts in the soak (caller, callee): what an LRU map keyed by source may keep.
const PEER_HOSTS: u64 = 2;
/// RSS after the load may exceed idle by this much, or by half of idle if that is more.
const RSS_SLACK_KIB: u64 = 64 * 1024;
/// RSS may grow over the load's second half by this share of its first half's peak, plus
/// [`RSS_DRIFT_KIB`].
const RSS_DRIFT_SHARE: f64 = 0.10;
const RSS_DRIFT_KIB: u64 = 8 * 1024;

/// How a figure must come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum Rule {
    /// Back to its idle value exactly: tables keyed by call, leg, connection or source.
    Exact,
    /// An LRU map keyed by source address: at most one entry more per peer host.
    Lru,
    /// A cache with a configured bound (ended calls' ladders): at most that.
    AtMost(u64),
    /// sipd's RSS: see [`RSS_RULE`].
    Memory,
    /// Shown, not judged (high-water mark, threads).
    Info,
}

/// Why RSS gets a tolerance, as the report says it.
pub(super) const RSS_RULE: &str = "RSS is not expected back to its idle value: glibc's \
malloc keeps freed pages in its arenas (one per thread that allocated) and sled keeps its page \
cache, so after a load RSS stays near the load's plateau without any leak. It must (1) end \
within idle + max(64 MiB, 50% of idle), and (2) not grow over the load's second half by more \
than 10% + 8 MiB of the first half's peak: a leak of 1 KiB per call at 20 calls/s is 70 MiB \
an hour, which (2) catches in a long run.";

pub(super) fn rule(figure: &str) -> Rule {
    match figure {
        "proc.rss_kib" => Rule::Memory,
        "proc.hwm_kib" | "proc.threads" => Rule::Info,
        "map.GUARD_STATE" | "map.BAN_HITS" | "map.FRAG_VERDICTS" => Rule::Lru,
        "metric.sipd_call_messages_ended_calls" => Rule::AtMost(LADDER_ENDED_CALLS),
        "metric.sipd_call_messages_bytes" => Rule::AtMost(LADDER_MAX_BYTES),
        _ => Rule::Exact,
    }
}

/// One figure over the run.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Summary {
    pub(super) figure: String,
    pub(super) rule: Rule,
    /// The first sample's value.
    pub(super) start: u64,
    /// The last sample before the calls started: what "back" means.
    pub(super) idle: u64,
    pub(super) peak: u64,
    /// The last sample, after the calls and the relay's timeouts.
    pub(super) end: u64,
    /// `None`: came back (or not judged); else why not.
    pub(super) failed: Option<String>,
}

/// Summaries of every figure. `load`: the index of the first sample taken once the calls
/// started, and of the first once they ended; the sample before the first is "idle".
pub(super) fn summarize(samples: &[Sample], load: (usize, usize)) -> Vec<Summary> {
    let mut names: Vec<&String> = samples.iter().flat_map(|s| s.figures.keys()).collect();
    names.sort();
    names.dedup();
    let at = |i: usize, n: &str| samples.get(i).and_then(|s| s.figures.get(n).copied());
    names
        .into_iter()
        .map(|name| {
            let series: Vec<u64> = samples
                .iter()
                .filter_map(|s| s.figures.get(name).copied())
                .collect();
            let start = series.first().copied().unwrap_or(0);
            // The last idle sample that has the figure.
            let idle = (0..load.0.max(1))
                .rev()
                .find_map(|i| at(i, name))
                .unwrap_or(start);
            let end = samples.last().and_then(|s| s.figures.get(name).copied());
            let peak = series.iter().copied().max().unwrap_or(0);
            let r = rule(name);
            let failed = match end {
                None => Some("not read in the last sample".to_string()),
                Some(end) => judge(r, idle, end, &load_series(samples, load, name)),
            };
            Summary {
                figure: name.clone(),
                rule: r,
                start,
                idle,
                peak,
                end: end.unwrap_or(0),
                failed,
            }
        })
        .collect()
}

fn load_series(samples: &[Sample], load: (usize, usize), name: &str) -> Vec<u64> {
    samples
        .get(load.0..load.1.min(samples.len()))
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.figures.get(name).copied())
        .collect()
}

/// `None` if `end` is back by the rule; else why not.
fn judge(rule: Rule, idle: u64, end: u64, during: &[u64]) -> Option<String> {
    match rule {
        Rule::Info => None,
        Rule::Exact => (end != idle).then(|| format!("{end} ≠ idle {idle}")),
        Rule::Lru => (end > idle + PEER_HOSTS)
            .then(|| format!("{end} > idle {idle} + {PEER_HOSTS} peer hosts")),
        Rule::AtMost(max) => (end > max).then(|| format!("{end} > its bound {max}")),
        Rule::Memory => {
            let limit = idle + RSS_SLACK_KIB.max(idle / 2);
            if end > limit {
                return Some(format!("{end} KiB > idle {idle} + slack = {limit} KiB"));
            }
            rss_drift(during)
        }
    }
}

/// Growth of the peak over the load's second half against its first half's.
fn rss_drift(during: &[u64]) -> Option<String> {
    if during.len() < 4 {
        return None;
    }
    let (a, b) = during.split_at(during.len() / 2);
    let (pa, pb) = (*a.iter().max()?, *b.iter().max()?);
    let allowed = pa + (pa as f64 * RSS_DRIFT_SHARE) as u64 + RSS_DRIFT_KIB;
    (pb > allowed).then(|| {
        format!(
            "grew over the load's second half: peak {pb} KiB > first half's {pa} KiB + 10% + 8 MiB"
        )
    })
}

/// RSS growth (KiB/min) between the middle and the end of the load (`load`: sample indexes
/// as for [`summarize`]); `None` with fewer than 4 samples in the load.
pub(super) fn rss_slope(samples: &[Sample], load: (usize, usize)) -> Option<f64> {
    let during: Vec<&Sample> = samples
        .get(load.0..load.1.min(samples.len()))?
        .iter()
        .collect();
    if during.len() < 4 {
        return None;
    }
    let (a, b) = (during[during.len() / 2], during[during.len() - 1]);
    let (ra, rb) = (
        *a.figures.get("proc.rss_kib")?,
        *b.figures.get("proc.rss_kib")?,
    );
    let minutes = (b.t_s - a.t_s) / 60.0;
    (minutes > 0.0).then(|| (rb as f64 - ra as f64) / minutes)
}

/// Calls as sipp and sipd saw them, and the CDRs written.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct Calls {
    /// Calls the UAC was told to place (`-m`).
    pub(super) planned: u64,
    /// Calls sipp started, completed and failed (its statistics).
    pub(super) placed: u64,
    pub(super) successful: u64,
    pub(super) failed: u64,
    /// sipd's counters: initial INVITEs, answered, failed.
    pub(super) sipd_invites: u64,
    pub(super) sipd_answered: u64,
    pub(super) sipd_failed: u64,
    /// CDRs in the store after sipd stopped (`sipd cdrs export`).
    pub(super) cdrs: u64,
}

/// The media the bench sent and got back through the relay.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct Media {
    pub(super) calls: u64,
    pub(super) sent: u64,
    pub(super) relayed: u64,
    pub(super) lost: u64,
    pub(super) corrupt: u64,
    /// Packets sipd's XDP program relayed (`sbc_relay_plane_packets_total{plane="kernel"}`).
    pub(super) kernel_relayed: u64,
    pub(super) userspace_relayed: u64,
}

#[derive(Debug, Serialize)]
pub(super) struct Report {
    pub(super) command: String,
    pub(super) kernel: String,
    pub(super) cpus: usize,
    pub(super) sipp: String,
    pub(super) sipd: String,
    pub(super) setup: String,
    pub(super) minutes: f64,
    pub(super) cps: u32,
    pub(super) hold_s: f64,
    pub(super) interval_s: f64,
    pub(super) media_timeout_s: u64,
    /// Seconds since the start when the calls started and when the last ended.
    pub(super) load_s: (f64, f64),
    /// When the figures were back (or the wait ended), seconds since the start.
    pub(super) settled_s: f64,
    pub(super) loadavg_start: String,
    pub(super) loadavg_end: String,
    pub(super) calls: Calls,
    pub(super) media: Media,
    pub(super) rss_rule: &'static str,
    /// sipd's RSS growth over the load's second half, KiB per minute (a leak, or a cache
    /// filling, shows here first).
    pub(super) rss_kib_per_min: Option<f64>,
    pub(super) figures: Vec<Summary>,
    /// Problems besides the figures (CDRs missing, sipd exited, …).
    pub(super) problems: Vec<String>,
    pub(super) samples: Vec<Sample>,
}

impl Report {
    /// Everything that did not come back or add up.
    pub(super) fn failures(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .figures
            .iter()
            .filter_map(|f| f.failed.as_ref().map(|w| format!("{}: {w}", f.figure)))
            .collect();
        v.extend(self.problems.iter().cloned());
        v
    }
}

pub(super) fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Soak: sipd under a steady call load\n");
    let _ = writeln!(s, "`{}`\n", r.command);
    let _ = writeln!(
        s,
        "{} calls/s held {:.0} s for {:.1} min; samples every {:.0} s; kernel {}, {} CPUs, \
         {}, {}; load average {} → {}.\n",
        r.cps,
        r.hold_s,
        r.minutes,
        r.interval_s,
        r.kernel,
        r.cpus,
        r.sipd,
        r.sipp,
        r.loadavg_start,
        r.loadavg_end
    );
    let _ = writeln!(s, "{}\n", r.setup);
    let c = &r.calls;
    let _ = writeln!(s, "## Calls\n");
    let _ = writeln!(
        s,
        "| | planned | placed (sipd: initial INVITEs, the challenged one included) | answered | failed | CDRs |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        s,
        "| sipp (caller) | {} | {} | {} | {} | |",
        c.planned, c.placed, c.successful, c.failed
    );
    let _ = writeln!(
        s,
        "| sipd | | {} | {} | {} | {} |",
        c.sipd_invites, c.sipd_answered, c.sipd_failed, c.cdrs
    );
    let m = &r.media;
    let _ = writeln!(
        s,
        "\nMedia: {} calls, {} packets sent, {} relayed back intact, {} lost, {} corrupt; \
         sipd relayed {} in the kernel (XDP) and {} in userspace.\n",
        m.calls, m.sent, m.relayed, m.lost, m.corrupt, m.kernel_relayed, m.userspace_relayed
    );
    let _ = writeln!(
        s,
        "## Figures\n\nCalls from {:.0} s to {:.0} s; the last sample at {:.0} s (the relay's \
         media timeout is {} s).\n",
        r.load_s.0, r.load_s.1, r.settled_s, r.media_timeout_s
    );
    let _ = writeln!(s, "| figure | rule | start | idle | peak | end | back? |");
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---|");
    for f in &r.figures {
        let rule = match f.rule {
            Rule::Exact => "exact".to_string(),
            Rule::Lru => format!("LRU: ≤ idle + {PEER_HOSTS}"),
            Rule::AtMost(n) => format!("≤ {n}"),
            Rule::Memory => "RSS (below)".into(),
            Rule::Info => "shown".into(),
        };
        let back = match (&f.failed, f.rule) {
            (Some(w), _) => format!("**NO**: {w}"),
            (None, Rule::Info) => "-".into(),
            (None, _) => "yes".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {rule} | {} | {} | {} | {} | {back} |",
            f.figure, f.start, f.idle, f.peak, f.end
        );
    }
    if let Some(slope) = r.rss_kib_per_min {
        let _ = writeln!(
            s,
            "\nsipd's RSS over the load's second half: {slope:+.0} KiB/min."
        );
    }
    let _ = writeln!(s, "\n{}\n", r.rss_rule);
    let failures = r.failures();
    if failures.is_empty() {
        let _ = writeln!(s, "**Every figure came back.**");
    } else {
        let _ = writeln!(s, "## Not back\n");
        for f in failures {
            let _ = writeln!(s, "- {f}");
        }
    }
    s
}

#[cfg(test)]
mod unit {
    use super::*;

    fn sample(t: f64, v: &[(&str, u64)]) -> Sample {
        Sample {
            t_s: t,
            figures: v.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            counters: Default::default(),
            errors: Vec::new(),
        }
    }

    #[test]
    fn exact_lru_and_bounded_figures() {
        let s = vec![
            sample(
                0.0,
                &[
                    ("map.RELAY_LEGS", 0),
                    ("map.GUARD_STATE", 0),
                    ("metric.sipd_call_messages_ended_calls", 0),
                ],
            ),
            sample(
                5.0,
                &[
                    ("map.RELAY_LEGS", 40),
                    ("map.GUARD_STATE", 2),
                    ("metric.sipd_call_messages_ended_calls", 300),
                ],
            ),
            sample(
                10.0,
                &[
                    ("map.RELAY_LEGS", 4),
                    ("map.GUARD_STATE", 2),
                    ("metric.sipd_call_messages_ended_calls", 500),
                ],
            ),
        ];
        let f = summarize(&s, (1, 2));
        let by = |n: &str| f.iter().find(|x| x.figure == n).unwrap();
        assert_eq!(by("map.RELAY_LEGS").failed.as_deref(), Some("4 ≠ idle 0"));
        assert_eq!(by("map.RELAY_LEGS").peak, 40);
        assert_eq!(by("map.GUARD_STATE").failed, None);
        assert_eq!(by("metric.sipd_call_messages_ended_calls").failed, None);
    }

    #[test]
    fn rss_slope_over_the_second_half() {
        let s: Vec<Sample> = (0..6)
            .map(|i| sample(i as f64 * 30.0, &[("proc.rss_kib", 1000 + 100 * i as u64)]))
            .collect();
        // Samples 1..5 are the load: from sample 3 (t 90 s) to 4 (t 120 s), +100 KiB.
        assert_eq!(rss_slope(&s, (1, 5)), Some(200.0));
        assert_eq!(rss_slope(&s, (1, 3)), None);
    }

    #[test]
    fn rss_slack_and_drift() {
        let idle = 20_000;
        assert_eq!(judge(Rule::Memory, idle, idle + 60_000, &[]), None);
        assert!(judge(Rule::Memory, idle, idle + 70_000, &[]).is_some());
        // Flat plateau: fine; steady growth: caught.
        assert_eq!(rss_drift(&[50_000, 51_000, 50_500, 51_000]), None);
        assert!(rss_drift(&[50_000, 60_000, 70_000, 80_000]).is_some());
    }
}
