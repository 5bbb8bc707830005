//! sipp as caller and callee: command lines, the statistics CSV (`-trace_stat`) and the error
//! log (`-trace_err`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};
use serde::Serialize;

/// The caller's scenario: INVITE, 401, ACK, INVITE with credentials, 100, 200, ACK, pause, BYE,
/// 200.
pub const UAC_XML: &str = include_str!("../../sip/uac.xml");
/// The callee's: INVITE, 100, 200 with SDP, ACK, BYE, 200.
pub const UAS_XML: &str = include_str!("../../sip/uas.xml");

/// Called number (the UAC's `-s`).
pub const CLD: &str = "15551234567";

/// What one caller run is told.
#[derive(Debug, Clone)]
pub struct UacArgs<'a> {
    pub scenario: &'a Path,
    pub local_port: u16,
    pub target: std::net::SocketAddr,
    pub user: &'a str,
    pub password: &'a str,
    pub rate: u32,
    pub calls: u64,
    pub hold_ms: u64,
    pub stat_file: &'a Path,
    pub error_file: &'a Path,
    /// sipp's own global timeout, seconds.
    pub timeout_s: u64,
    pub cpu: usize,
}

/// `taskset -c CPU sipp -sf uac.xml ...`: `calls` calls at `rate` per second, each held
/// `hold_ms`; statistics every second to `stat_file`, failures to `error_file`.
pub fn uac_command(a: &UacArgs) -> Command {
    let mut c = Command::new("taskset");
    c.args(["-c", &a.cpu.to_string(), "sipp", "-sf"])
        .arg(a.scenario)
        .args(["-i", "127.0.0.1", "-p", &a.local_port.to_string()])
        .args(["-s", CLD, "-au", a.user, "-ap", a.password])
        // The digest uri sipd checks against the Request-URI (sipp's default is remote_ip:port).
        .args(["-auth_uri", &format!("{CLD}@{}", a.target)])
        .args(["-r", &a.rate.to_string(), "-rp", "1000"])
        // No cap on calls in progress that a step could reach (sipp warns when the cap is
        // near its open-file limit, though it uses one UDP socket).
        .args(["-m", &a.calls.to_string()])
        .args(["-l", &a.calls.min(15_000).to_string()])
        .args(["-d", &a.hold_ms.to_string()])
        // A reply that never comes fails the call after 8 s instead of hanging it.
        .args(["-recv_timeout", "8000"])
        .args(["-timeout", &format!("{}s", a.timeout_s)])
        .args(["-buff_size", "4194304", "-aa", "-nostdin"])
        .args(["-trace_stat", "-fd", "1", "-stf"])
        .arg(a.stat_file)
        .args(["-trace_err", "-error_file"])
        .arg(a.error_file)
        .arg(a.target.to_string());
    c
}

/// A sipp running a `tests/sipp/` scenario in a namespace, pinned to CPU 0, its files in
/// `dir` (`<stem>_*.log`), cwd `dir` (its `-trace_rtt` file lands there). `messages`: keep
/// every SIP message (`-trace_msg`); off, they go to /dev/null, for runs too long to keep
/// them all.
pub fn ns_command(
    ns: &::tests::netns::Netns,
    scenario: &str,
    local: std::net::SocketAddr,
    dir: &Path,
    messages: bool,
) -> Command {
    let mut cmd = ns.command("taskset");
    cmd.args(["-c", "0", "sipp"]).current_dir(dir);
    let stem = scenario.trim_end_matches(".xml");
    ::tests::sip::base_args(&mut cmd, scenario, "u1", local, |what| {
        if what == "messages.log" && !messages {
            return std::path::PathBuf::from("/dev/null");
        }
        dir.join(format!("{stem}_{what}"))
    });
    cmd.args(["-buff_size", "4194304"]);
    cmd
}

/// Starts a UAS prepared with [`ns_command`] in `ns` and waits (up to 10 s) until its SIP
/// socket `addr` is bound, so the first INVITE finds it.
pub fn spawn_uas_bound(
    ns: &::tests::netns::Netns,
    addr: std::net::SocketAddr,
    cmd: &mut Command,
    log: &Path,
) -> anyhow::Result<super::procs::Proc> {
    let mut uas = super::procs::Proc::spawn("sipp UAS", cmd, log)?;
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !::tests::sip::udp_bound(ns, addr) {
        uas.check_alive()?;
        if std::time::Instant::now() > end {
            bail!("sipp UAS did not bind {addr}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(uas)
}

/// `taskset -c CPU sipp -sf uas.xml -p PORT`: answers every INVITE until stopped.
pub fn uas_command(scenario: &Path, port: u16, cpu: usize) -> Command {
    let mut c = Command::new("taskset");
    c.args(["-c", &cpu.to_string(), "sipp", "-sf"])
        .arg(scenario)
        .args(["-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-buff_size", "4194304", "-aa", "-nostdin"]);
    c
}

/// The caller's totals at the end of a run, from its statistics CSV.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UacStats {
    pub outgoing: u64,
    pub successful: u64,
    pub failed: u64,
    /// Non-zero `Failed*(C)` columns, e.g. `FailedUnexpectedMessage`.
    pub failed_by_kind: BTreeMap<String, u64>,
    pub retransmissions: u64,
    pub dead_call_msgs: u64,
    /// Seconds from the start until the last call was started (interpolated between the
    /// once-a-second dumps); `None` if not all were started.
    pub generation_s: Option<f64>,
    /// Seconds from the start to the last dump.
    pub elapsed_s: f64,
    /// Mean INVITE→200 time over the authenticated INVITE (rtd "setup"), ms (sipp's
    /// resolution: 0 is under 1 ms).
    pub setup_ms: Option<f64>,
    /// Mean BYE→200 time, ms.
    pub bye_ms: Option<f64>,
}

/// Parses sipp's `-trace_stat` CSV; `calls` is the `-m` the run was given.
pub fn parse_stats(csv: &str, calls: u64) -> anyhow::Result<UacStats> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .context("empty statistics file")?
        .trim_end_matches(';')
        .split(';')
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let need = |name: &str| col(name).with_context(|| format!("no {name} column"));
    let (start, now) = (need("StartTime")?, need("CurrentTime")?);
    let (out_c, ok_c, fail_c) = (
        need("OutgoingCall(C)")?,
        need("SuccessfulCall(C)")?,
        need("FailedCall(C)")?,
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(';').collect()).collect();
    let last = rows.last().context("statistics file has no data")?;
    let num = |row: &[&str], i: usize| -> u64 {
        row.get(i).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    };
    let t = |row: &[&str]| -> Option<f64> { Some(epoch(row.get(now)?)? - epoch(row.get(start)?)?) };
    let mut failed_by_kind = BTreeMap::new();
    for (i, h) in header.iter().enumerate() {
        if let Some(kind) = h.strip_suffix("(C)")
            && kind.starts_with("Failed")
            && kind != "FailedCall"
        {
            let n = num(last, i);
            if n > 0 {
                failed_by_kind.insert(kind.to_string(), n);
            }
        }
    }
    // When the last call was started: the first dump that counts them all, interpolated
    // with the one before.
    let mut generation_s = None;
    let mut prev = (0.0, 0u64);
    for row in &rows {
        let (Some(tt), n) = (t(row), num(row, out_c)) else {
            continue;
        };
        if n >= calls && calls > 0 {
            let (t0, n0) = prev;
            let frac = if n > n0 {
                (calls - n0.min(calls)) as f64 / (n - n0) as f64
            } else {
                1.0
            };
            generation_s = Some(t0 + frac * (tt - t0));
            break;
        }
        prev = (tt, n);
    }
    // sipp keeps ms: 0 is "under 1 ms" once calls completed, "none measured" before.
    let ms = |name: &str| -> Option<f64> {
        let v = last.get(col(name)?)?;
        duration_ms(v).filter(|_| num(last, ok_c) > 0)
    };
    Ok(UacStats {
        outgoing: num(last, out_c),
        successful: num(last, ok_c),
        failed: num(last, fail_c),
        failed_by_kind,
        retransmissions: col("Retransmissions(C)").map_or(0, |i| num(last, i)),
        dead_call_msgs: col("DeadCallMsgs(C)").map_or(0, |i| num(last, i)),
        generation_s,
        elapsed_s: t(last).unwrap_or(0.0),
        setup_ms: ms("ResponseTimesetup(C)"),
        bye_ms: ms("ResponseTimebye(C)"),
    })
}

/// sipp's date field `2026-11-23\t11:48:58.940886\t1795434538.940886`: the epoch seconds.
fn epoch(field: &str) -> Option<f64> {
    field.split('\t').next_back()?.trim().parse().ok()
}

/// `hh:mm:ss:micros` → ms.
fn duration_ms(v: &str) -> Option<f64> {
    let p: Vec<f64> = v
        .trim()
        .split(':')
        .map(|x| x.parse::<f64>().ok())
        .collect::<Option<_>>()?;
    match p[..] {
        [h, m, s, us] => Some((h * 3600.0 + m * 60.0 + s) * 1000.0 + us / 1000.0),
        [h, m, s] => Some((h * 3600.0 + m * 60.0 + s) * 1000.0),
        _ => None,
    }
}

/// The most frequent failure reasons in a sipp error log, most frequent first (at most
/// `max`), with Call-IDs and timestamps taken out so equal reasons count together.
pub fn summarize_errors(log: &str, max: usize) -> Vec<(String, u64)> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for line in log.lines() {
        let Some(text) = after_timestamp(line) else {
            continue;
        };
        *counts.entry(reason(text)).or_default() += 1;
    }
    let mut v: Vec<(String, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(max);
    v
}

/// The text after sipp's `<epoch secs>.<micros>: ` prefix, if the line has one.
fn after_timestamp(line: &str) -> Option<&str> {
    let mut from = 0;
    while let Some(i) = line[from..].find(": ") {
        let at = from + i;
        let before = &line[..at];
        let tok = before.rsplit(['\t', ' ', '\'']).next().unwrap_or("");
        if let Some((s, us)) = tok.split_once('.')
            && s.len() >= 9
            && us.len() == 6
            && s.bytes().all(|b| b.is_ascii_digit())
            && us.bytes().all(|b| b.is_ascii_digit())
        {
            return Some(&line[at + 2..]);
        }
        from = at + 2;
    }
    None
}

fn reason(text: &str) -> String {
    let received = |t: &str| -> String {
        t.split_once("received '")
            .map(|(_, r)| r.trim_end_matches('\'').chars().take(60).collect())
            .unwrap_or_default()
    };
    if let Some((_, rest)) = text.split_once("while expecting ") {
        let what = rest.split(", received").next().unwrap_or(rest);
        return format!("expecting {what}, received {}", received(rest));
    }
    if text.contains("receive timeout on message") {
        let idx = text
            .split("receive timeout on message")
            .nth(1)
            .and_then(|r| r.split(" without").next())
            .and_then(|r| r.rsplit(':').next())
            .unwrap_or("?");
        return format!("receive timeout at scenario index {}", idx.trim());
    }
    if let Some(rest) = text.strip_prefix("Dead call ") {
        let idx = rest
            .split_once("(aborted at index ")
            .and_then(|(_, r)| r.split(')').next())
            .unwrap_or("?");
        return format!(
            "message for a call already aborted at index {idx}: {}",
            received(rest)
        );
    }
    // Anything else: without Call-IDs (the tokens with an '@') and numbers of calls.
    text.split_whitespace()
        .filter(|w| !w.contains('@'))
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(100)
        .collect()
}

/// Fails unless `sipp -v` runs.
pub fn check_installed() -> anyhow::Result<String> {
    let out = Command::new("sipp")
        .arg("-v")
        .output()
        .context("sipp not found (apt install sip-tester)")?;
    let s = String::from_utf8_lossy(&out.stdout);
    let v = s
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("SIPp"))
        .map(str::to_string);
    match v {
        Some(v) => Ok(v),
        None => bail!("sipp -v printed no version: {s}"),
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    const CSV: &str = "StartTime;LastResetTime;CurrentTime;ElapsedTime(P);ElapsedTime(C);OutgoingCall(P);OutgoingCall(C);SuccessfulCall(C);FailedCall(C);FailedMaxUDPRetrans(C);FailedUnexpectedMessage(C);Retransmissions(C);DeadCallMsgs(C);ResponseTimesetup(C);ResponseTimebye(C);\n\
2026-11-23\t11:48:57.937666\t1795434537.937666;x;2026-11-23\t11:48:57.938222\t1795434537.938222;00:00:00;00:00:00;0;0;0;0;0;0;0;0;00:00:00:000000;00:00:00:000000;\n\
2026-11-23\t11:48:57.937666\t1795434537.937666;x;2026-11-23\t11:48:58.937666\t1795434538.937666;00:00:01;00:00:01;100;100;90;0;0;0;0;0;00:00:00:002000;00:00:00:001000;\n\
2026-11-23\t11:48:57.937666\t1795434537.937666;x;2026-11-23\t11:48:59.937666\t1795434539.937666;00:00:01;00:00:02;100;200;180;0;0;0;0;0;00:00:00:002000;00:00:00:001000;\n\
2026-11-23\t11:48:57.937666\t1795434537.937666;x;2026-11-23\t11:49:00.937666\t1795434540.937666;00:00:01;00:00:03;50;250;247;3;1;2;7;4;00:00:00:002500;00:00:00:001500;\n";

    #[test]
    fn stats_totals_and_generation_time() {
        let s = parse_stats(CSV, 250).unwrap();
        assert_eq!(s.outgoing, 250);
        assert_eq!(s.successful, 247);
        assert_eq!(s.failed, 3);
        assert_eq!(s.failed_by_kind.get("FailedUnexpectedMessage"), Some(&2));
        assert_eq!(s.failed_by_kind.get("FailedMaxUDPRetrans"), Some(&1));
        assert_eq!(s.retransmissions, 7);
        assert_eq!(s.dead_call_msgs, 4);
        // 200 at t=2, 250 at t=3: all 250 started at t=3.
        let g = s.generation_s.unwrap();
        assert!((g - 3.0).abs() < 1e-6, "{g}");
        // 220 calls: between t=2 (200) and t=3 (250).
        let g = parse_stats(CSV, 220).unwrap().generation_s.unwrap();
        assert!((g - 2.4).abs() < 1e-6, "{g}");
        assert!(parse_stats(CSV, 300).unwrap().generation_s.is_none());
        assert_eq!(s.setup_ms, Some(2.5));
        assert_eq!(s.bye_ms, Some(1.5));
        assert!((s.elapsed_s - 3.0).abs() < 1e-6);
    }

    #[test]
    fn stats_need_the_columns() {
        assert!(parse_stats("", 1).is_err());
        assert!(parse_stats("StartTime;CurrentTime\n", 1).is_err());
    }

    #[test]
    fn error_reasons_group() {
        let log = "The following events occurred:\n\
2026-11-23\t11:50:02.605618\t1795434602.605618: Aborting call on unexpected message for Call-Id '2310-23294@127.0.0.1': while expecting '100' (index 5), received 'SIP/2.0 500 I'm terribly sorry\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-23294-2310-4\n\
'2026-11-23\t11:50:02.607479\t1795434602.607479: Aborting call on unexpected message for Call-Id '2311-23294@127.0.0.1': while expecting '100' (index 5), received 'SIP/2.0 500 I'm terribly sorry\n\
'2026-11-23\t11:50:15.699999\t1795434615.699999: Call-Id: 3354-23294@127.0.0.1, receive timeout on message bench sip uac (digest):12 without label to jump to (ontimeout attribute): aborting call2026-11-23\t11:50:15.700264\t1795434615.700264: Dead call 3354-23294@127.0.0.1 (aborted at index 12), received 'SIP/2.0 404 Not Here\n";
        let v = summarize_errors(log, 5);
        assert_eq!(
            v[0],
            (
                "expecting '100' (index 5), received SIP/2.0 500 I'm terribly sorry".to_string(),
                2
            )
        );
        assert_eq!(v[1].0, "receive timeout at scenario index 12");
        assert_eq!(v.len(), 2, "{v:?}");
    }

    #[test]
    fn uac_command_line() {
        let a = UacArgs {
            scenario: Path::new("/t/uac.xml"),
            local_port: 5070,
            target: "127.0.0.1:5064".parse().unwrap(),
            user: "u",
            password: "p",
            rate: 200,
            calls: 2000,
            hold_ms: 1000,
            stat_file: Path::new("/t/s.csv"),
            error_file: Path::new("/t/e.log"),
            timeout_s: 60,
            cpu: 0,
        };
        let s = tests::show_command(&uac_command(&a));
        assert!(s.starts_with("taskset -c 0 sipp -sf /t/uac.xml"), "{s}");
        assert!(
            s.contains(" -r 200 -rp 1000 -m 2000 -l 2000 -d 1000 "),
            "{s}"
        );
        assert!(s.ends_with(" 127.0.0.1:5064"), "{s}");
    }
}
