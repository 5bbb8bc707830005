//! `sipd store check`, `sipd backup DIR` and `sipd restore DIR`: the store looked after as a
//! whole. Check and restore need sipd stopped (they say so when it runs); backup works both
//! ways, through the running sipd's admin socket when it holds the store.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use sipd::config::Config;
use sipd::server::admin::{self, Reply, Request};
use sipd::store::{AtRestError, BackupError, Manifest, Store, StoreError};

/// Exit status when the check could not run at all (store locked or unreadable).
const CANNOT_RUN: u8 = 2;

fn locked_hint(cfg: &Config) -> String {
    format!(
        "the store in {} is in use: sipd is running on this data directory; stop it first",
        cfg.store_dir().display()
    )
}

/// Walks the store; `repair` fixes what it can. Exit 0 clean (or all repaired), 1 problems
/// left, 2 could not run.
pub fn check(cfg: &Config, repair: bool, json: bool) -> Result<ExitCode> {
    let dir = cfg.store_dir();
    if !dir.is_dir() {
        eprintln!("sipd: no store in {}", dir.display());
        return Ok(ExitCode::from(CANNOT_RUN));
    }
    // Privately, as every store command: refused for another user's data directory.
    let store = match Store::open_private(&cfg.data_dir, &cfg.auth.realm) {
        Ok(s) => s,
        Err(AtRestError::Store(StoreError::Locked { .. })) => {
            eprintln!("sipd: {}", locked_hint(cfg));
            return Ok(ExitCode::from(CANNOT_RUN));
        }
        Err(e) => {
            eprintln!("sipd: cannot open the store in {}: {e}", dir.display());
            return Ok(ExitCode::from(CANNOT_RUN));
        }
    };
    let report = match store.check(repair) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sipd: the check stopped: {e}");
            return Ok(ExitCode::from(CANNOT_RUN));
        }
    };
    let left = report.left();
    if json {
        let mut v = serde_json::to_value(&report)?;
        v["store"] = serde_json::json!(dir);
        v["left"] = serde_json::json!(left);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let entries: u64 = report.trees.values().sum();
        println!(
            "store {}: {} trees, {entries} entries",
            dir.display(),
            report.trees.len()
        );
        for p in &report.problems {
            match &p.repaired {
                Some(done) => println!("REPAIRED {} {}: {} ({done})", p.tree, p.key, p.what),
                None => println!("PROBLEM  {} {}: {}", p.tree, p.key, p.what),
            }
        }
        let repaired = report.problems.len() - left;
        if report.problems.is_empty() {
            println!("no problems found");
        } else {
            println!(
                "{} problem(s): {repaired} repaired, {left} left{}",
                report.problems.len(),
                if left > 0 && !repair {
                    " (`sipd store check --repair` fixes what it can)"
                } else if left > 0 {
                    " (these need an operator: see above)"
                } else {
                    ""
                }
            );
        }
        if report.quarantined > 0 {
            println!(
                "the quarantine tree holds {} record(s) taken out of their trees (nothing was deleted)",
                report.quarantined
            );
        }
    }
    Ok(if left == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn say_manifest(m: &Manifest, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(m)?);
    } else {
        let entries: u64 = m.trees.values().sum();
        println!(
            "backup taken at {} (Unix ms): {} trees, {entries} entries, schema {}, writes paused {} ms",
            m.taken_ms,
            m.trees.len(),
            m.schema,
            m.writes_paused_ms
        );
    }
    Ok(())
}

/// Takes a backup into `dir`: through the running sipd's admin socket, else directly.
pub fn backup(cfg: &Config, dir: &Path, json: bool) -> Result<ExitCode> {
    let dir = std::path::absolute(dir).with_context(|| format!("{}", dir.display()))?;
    let req = Request::Backup { dir: dir.clone() };
    match admin::ask(&cfg.data_dir, &req) {
        Ok(Some(Reply::Backup { manifest })) => {
            say_manifest(&manifest, json)?;
            eprintln!("backed up by the running sipd into {}", dir.display());
            return Ok(ExitCode::SUCCESS);
        }
        Ok(Some(Reply::Error { error })) => {
            eprintln!("sipd: the running sipd refused the backup: {error}");
            return Ok(ExitCode::FAILURE);
        }
        Ok(None) => {}
        Err(e) => {
            eprintln!(
                "sipd: cannot talk to the running sipd on {}: {e}",
                admin::socket_path(&cfg.data_dir).display()
            );
            return Ok(ExitCode::FAILURE);
        }
    }
    let store_dir = cfg.store_dir();
    if !store_dir.is_dir() {
        eprintln!("sipd: no store in {}", store_dir.display());
        return Ok(ExitCode::FAILURE);
    }
    let store = match Store::open_private(&cfg.data_dir, &cfg.auth.realm) {
        Ok(s) => s,
        Err(AtRestError::Store(StoreError::Locked { .. })) => {
            eprintln!(
                "sipd: {}, and its admin socket ({}) did not answer: see its log",
                locked_hint(cfg),
                admin::socket_path(&cfg.data_dir).display()
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    match store.backup_to(&dir) {
        Ok(m) => {
            say_manifest(&m, json)?;
            eprintln!("backed up into {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("sipd: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Replaces the store with the backup in `dir`, after verifying it; sipd must be stopped.
pub fn restore(cfg: &Config, dir: &Path, json: bool) -> Result<ExitCode> {
    let dir = std::path::absolute(dir).with_context(|| format!("{}", dir.display()))?;
    match sipd::store::restore(&cfg.data_dir, &dir, &cfg.auth.realm) {
        Ok(r) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("verified the backup in {}", dir.display());
            say_manifest(&r.manifest, false)?;
            match &r.moved_aside {
                Some(p) => println!("moved the store that was in place to {}", p.display()),
                None => println!("there was no store in place"),
            }
            println!(
                "restored into {}; start sipd to serve from it",
                r.store.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(BackupError::Store(StoreError::Locked { .. })) => {
            eprintln!("sipd: {}; nothing was changed", locked_hint(cfg));
            Ok(ExitCode::FAILURE)
        }
        Err(
            e @ (BackupError::Manifest { .. }
            | BackupError::Damaged { .. }
            | BackupError::NotEmpty(_)),
        ) => {
            eprintln!("sipd: {e}; nothing was changed");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("sipd: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
