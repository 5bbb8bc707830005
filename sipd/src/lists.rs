//! `sipd audit list` and `sipd refusals list`: what the store holds, read with `sipd run`
//! stopped (the store has one writer), as a table or as JSON.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;

use sipd::store::{AuditFilter, Store};

/// The audit log, oldest first; exit 1 when an entry could not be read (it is skipped).
pub fn audit(store: &Store, json: bool, after: u64, limit: usize) -> Result<ExitCode> {
    let f = AuditFilter {
        after_id: after,
        limit,
        ..AuditFilter::default()
    };
    let (entries, bad) = readable(store.audit(&f));
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &entries)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{:>6}  {:>13}  {:<16} {:<10} {:<28} {:<8} reason",
            "id", "ts_ms", "actor", "kind", "target", "result"
        )?;
        for e in &entries {
            let d = &e.entry;
            writeln!(
                out,
                "{:>6}  {:>13}  {:<16} {:<10} {:<28} {:<8} {}",
                e.id,
                d.ts_ms,
                d.actor.as_deref().unwrap_or("-"),
                serde_json::to_value(d.kind)?.as_str().unwrap_or("?"),
                d.target.as_deref().unwrap_or("-"),
                serde_json::to_value(d.result)?.as_str().unwrap_or("?"),
                d.reason.as_deref().unwrap_or("")
            )?;
        }
    }
    Ok(status(bad))
}

/// The refusal table as `sipd run` last saved it, most recently seen first.
pub fn refusals(store: &Store, json: bool) -> Result<ExitCode> {
    let (mut rows, bad) = readable(store.refusals());
    rows.sort_by_key(|r| std::cmp::Reverse(r.last_ms));
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{:<40} {:<20} {:>4} {:>10}  {:>13}  {:>13}",
            "source", "reason", "code", "count", "first_ms", "last_ms"
        )?;
        for r in &rows {
            writeln!(
                out,
                "{:<40} {:<20} {:>4} {:>10}  {:>13}  {:>13}",
                r.source.to_string(),
                r.reason.as_str(),
                r.code,
                r.count,
                r.first_ms,
                r.last_ms
            )?;
        }
    }
    Ok(status(bad))
}

/// The readable records, and how many were not (each logged).
fn readable<T, E: std::fmt::Display>(all: Vec<Result<T, E>>) -> (Vec<T>, usize) {
    let mut ok = Vec::with_capacity(all.len());
    let mut bad = 0;
    for r in all {
        match r {
            Ok(v) => ok.push(v),
            Err(e) => {
                bad += 1;
                tracing::warn!(error = %e, "unreadable record skipped");
            }
        }
    }
    (ok, bad)
}

fn status(bad: usize) -> ExitCode {
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
