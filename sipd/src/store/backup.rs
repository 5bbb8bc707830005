//! `sipd backup DIR` and `sipd restore DIR`.
//!
//! A backup is a new sled store in `DIR/store` holding every tree of the live one (found with
//! `db.tree_names()`, so trees added later are covered), plus `DIR/manifest.json` (when,
//! schema, entries per tree, sipd version). It is one point in time across all trees: the
//! copy holds the store's gate exclusive, which every write path holds shared, so no write is
//! half done in it and none starts until the copy is over. To keep that wait short, the bulk
//! of the append-only trees (CDRs, audit) is copied first without the gate, and only their
//! ends and the other (small) trees under it; the log line and the manifest say how long
//! writes waited. It can be taken while `sipd run` serves (through
//! its admin socket, `server/admin.rs`) or with sipd stopped.
//!
//! A restore checks the backup first (every record decodes, the counts match the manifest),
//! refuses while the store is locked by a running sipd, moves the current store aside
//! (`store.before-restore-<unix seconds>`, nothing deleted) and copies the backup in.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::{AuditKind, AuditResult, SCHEMA, Store, StoreError, System, open_db};

/// The backup's store directory inside `DIR`.
pub const BACKUP_STORE: &str = "store";
/// The manifest's file name inside `DIR`.
pub const MANIFEST: &str = "manifest.json";
/// The manifest layout this build writes and reads.
const FORMAT: u32 = 1;
/// Entries copied per batch.
const BATCH: usize = 4096;

/// What a backup holds, written beside it as `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The manifest's own layout version.
    pub format: u32,
    /// When the copy was taken (the point in time it shows), Unix ms.
    pub taken_ms: u64,
    /// The store schema of the copy.
    pub schema: u32,
    /// The sipd that took it.
    pub sipd_version: String,
    /// The store it was taken from.
    pub source: PathBuf,
    /// Entries per tree.
    pub trees: BTreeMap<String, u64>,
    /// How long writes waited for the copy, ms.
    pub writes_paused_ms: u64,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    /// The backup's manifest.
    pub manifest: Manifest,
    /// Where the store that was in place went (`None`: there was none).
    pub moved_aside: Option<PathBuf>,
    /// The restored store.
    pub store: PathBuf,
}

/// Why a backup or a restore did not happen. Nothing was changed in the live store.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A backup goes into a new or empty directory, never over something.
    #[error("{0} is not an empty directory: a backup goes into a new or empty one")]
    NotEmpty(PathBuf),
    /// A file could not be made, read or moved.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: io::Error,
    },
    /// The store (live or backup) failed; `Locked` means a sipd is running on it.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The directory holds no readable manifest: not a backup, or an unfinished one.
    #[error("{path}: no readable backup manifest ({reason}); is this a `sipd backup` directory?")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// Why it could not be read.
        reason: String,
    },
    /// The backup's content does not match its manifest, or records do not decode.
    #[error("backup in {path} is damaged: {}", problems.join("; "))]
    Damaged {
        /// The backup directory.
        path: PathBuf,
        /// What is wrong (at most a few, then how many more).
        problems: Vec<String>,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (0700) or accepts an existing empty one (tightened to 0700).
fn prepare_dir(dir: &Path) -> Result<(), BackupError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::NotEmpty(dir.to_path_buf()));
            }
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir)),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            Err(BackupError::NotEmpty(dir.to_path_buf()))
        }
        Err(e) => Err(io_err(dir)(e)),
    }
}

fn sled_at(dir: &Path) -> Result<sled::Db, StoreError> {
    open_db(dir)
}

/// Trees whose keys only ever grow at the end (ids from a counter, or last + 1) and shrink
/// at the start (retention), with no record changed in between: a backup copies their bulk
/// before it takes the gate and, holding it, only what changed at either end since. Writes
/// then wait for the small trees only. A tree listed here must keep that promise.
const APPEND_ONLY: [&str; 2] = ["cdrs", "audit"];

/// Copies `kvs` into `to` in batches; returns how many.
fn copy_entries(
    kvs: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    to: &sled::Tree,
) -> Result<u64, StoreError> {
    let mut n = 0u64;
    let mut batch = sled::Batch::default();
    let mut in_batch = 0;
    for kv in kvs {
        let (k, v) = kv?;
        batch.insert(k, v);
        in_batch += 1;
        n += 1;
        if in_batch == BATCH {
            to.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
    }
    to.apply_batch(batch)?;
    Ok(n)
}

/// What the first pass copied of an append-only tree: its last key and how many entries.
type Bulk = BTreeMap<sled::IVec, (Option<sled::IVec>, u64)>;

/// First pass, writes going on: the bulk of the append-only trees.
pub(super) fn copy_bulk(src: &sled::Db, dst: &sled::Db) -> Result<Bulk, StoreError> {
    let mut bulk = Bulk::new();
    for name in src.tree_names() {
        if !APPEND_ONLY.iter().any(|t| t.as_bytes() == &*name) {
            continue;
        }
        let from = src.open_tree(&name)?;
        // Up to the last key as it is now; what comes after is for the second pass.
        let last = from.last()?.map(|(k, _)| k);
        let n = match &last {
            Some(l) => copy_entries(from.range(..=l.clone()), &dst.open_tree(&name)?)?,
            None => 0,
        };
        bulk.insert(name, (last, n));
    }
    Ok(bulk)
}

/// Second pass, under the gate: every other tree whole, and what changed at either end of
/// the append-only ones since the first pass. Returns entries per tree (sled's default tree
/// only when it holds something: sipd does not use it).
pub(super) fn copy_rest(
    src: &sled::Db,
    dst: &sled::Db,
    bulk: &Bulk,
) -> Result<BTreeMap<String, u64>, StoreError> {
    use std::ops::Bound::{Excluded, Unbounded};
    let mut counts = BTreeMap::new();
    for name in src.tree_names() {
        let from = src.open_tree(&name)?;
        if &*name == b"__sled__default" && from.is_empty() {
            continue;
        }
        let to = dst.open_tree(&name)?;
        let n = match bulk.get(&name) {
            None => copy_entries(from.iter(), &to)?,
            Some((None, _)) => copy_entries(from.iter(), &to)?,
            Some((Some(last), copied)) => {
                let added = copy_entries(from.range((Excluded(last.clone()), Unbounded)), &to)?;
                // Purged by retention meanwhile: everything before the first key left.
                let first = from.first()?.map(|(k, _)| k);
                let mut gone = 0u64;
                let purged: Vec<sled::IVec> = match &first {
                    Some(f) => to.range(..f.clone()).keys().collect::<Result<_, _>>()?,
                    None => to.iter().keys().collect::<Result<_, _>>()?,
                };
                for k in purged {
                    to.remove(k)?;
                    gone += 1;
                }
                copied + added - gone
            }
        };
        counts.insert(String::from_utf8_lossy(&name).into_owned(), n);
    }
    Ok(counts)
}

/// Copies every tree of `src` into `dst` at once (restore: nothing writes either).
fn copy_trees(src: &sled::Db, dst: &sled::Db) -> Result<BTreeMap<String, u64>, StoreError> {
    copy_rest(src, dst, &Bulk::new())
}

fn tree_counts(db: &sled::Db) -> BTreeMap<String, u64> {
    db.tree_names()
        .into_iter()
        .filter_map(|n| {
            let t = db.open_tree(&n).ok()?;
            let name = String::from_utf8_lossy(&n).into_owned();
            (!(name == "__sled__default" && t.is_empty())).then(|| (name, t.len() as u64))
        })
        .collect()
}

fn now_ms() -> u64 {
    sipd_core::records::unix_ms(SystemTime::now())
}

impl Store {
    /// Takes a consistent copy of the whole store into `dir` (new or empty, made 0700) and
    /// writes its manifest; audited as `sipd:backup`. Safe while sipd serves: writes wait
    /// for the copy (see the module doc).
    pub fn backup_to(&self, dir: &Path) -> Result<Manifest, BackupError> {
        prepare_dir(dir)?;
        let dst = sled_at(&dir.join(BACKUP_STORE))?;
        let bulk = copy_bulk(&self.db, &dst)?;
        let (trees, taken_ms, paused) = {
            let t0 = Instant::now();
            let _quiet = self.exclusive_gate();
            let trees = copy_rest(&self.db, &dst, &bulk)?;
            (trees, now_ms(), t0.elapsed())
        };
        dst.flush().map_err(StoreError::from)?;
        drop(dst);
        let manifest = Manifest {
            format: FORMAT,
            taken_ms,
            schema: SCHEMA,
            sipd_version: env!("CARGO_PKG_VERSION").into(),
            source: self.path.clone(),
            trees,
            writes_paused_ms: paused.as_millis() as u64,
        };
        let text = serde_json::to_vec_pretty(&manifest).map_err(|e| StoreError::Encode {
            kind: "manifest",
            reason: e.to_string(),
        })?;
        let path = dir.join(MANIFEST);
        crate::private_file::write(&path, &text).map_err(io_err(&path))?;
        super::owner_only(dir).map_err(io_err(dir))?;
        let records: u64 = manifest.trees.values().sum();
        tracing::info!(dir = %dir.display(), records, writes_paused_ms = manifest.writes_paused_ms, "store backed up");
        self.audit_system(
            &System("backup"),
            AuditKind::Backup,
            format!("store:{}", dir.display()),
            AuditResult::Success,
            None,
            serde_json::to_value(&manifest).ok(),
        )?;
        self.flush_audit()?;
        Ok(manifest)
    }
}

fn read_manifest(dir: &Path) -> Result<Manifest, BackupError> {
    let path = dir.join(MANIFEST);
    let bad = |reason: String| BackupError::Manifest {
        path: path.clone(),
        reason,
    };
    let text = fs::read(&path).map_err(|e| bad(e.to_string()))?;
    let m: Manifest = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    if m.format > FORMAT {
        return Err(bad(format!(
            "manifest format {} is newer than this sipd reads ({FORMAT})",
            m.format
        )));
    }
    Ok(m)
}

/// Checks the backup in `dir` without changing it: the manifest reads, every record
/// decodes and every index agrees (`Store::check`), and each tree holds what the manifest
/// says. Returns the manifest.
pub fn verify_backup(dir: &Path) -> Result<Manifest, BackupError> {
    let m = read_manifest(dir)?;
    let store_dir = dir.join(BACKUP_STORE);
    if !store_dir.is_dir() {
        return Err(BackupError::Damaged {
            path: dir.to_path_buf(),
            problems: vec![format!("{} is missing", store_dir.display())],
        });
    }
    if m.schema > SCHEMA {
        return Err(StoreError::NewerSchema { found: m.schema }.into());
    }
    let store = Store::open(&store_dir)?;
    let mut problems = Vec::new();
    let found = tree_counts(&store.db);
    for (tree, &want) in &m.trees {
        let got = found.get(tree).copied().unwrap_or(0);
        if got != want {
            problems.push(format!(
                "tree {tree} holds {got} entries, the manifest says {want}"
            ));
        }
    }
    for (tree, &got) in &found {
        if got > 0 && !m.trees.contains_key(tree) {
            problems.push(format!(
                "tree {tree} ({got} entries) is not in the manifest"
            ));
        }
    }
    let report = store.check(false)?;
    for p in report.problems.iter().filter(|p| p.repaired.is_none()) {
        problems.push(format!("{} {}: {}", p.tree, p.key, p.what));
    }
    if problems.is_empty() {
        return Ok(m);
    }
    let more = problems.len().saturating_sub(5);
    problems.truncate(5);
    if more > 0 {
        problems.push(format!("and {more} more"));
    }
    Err(BackupError::Damaged {
        path: dir.to_path_buf(),
        problems,
    })
}

/// Replaces the store of `data_dir` with the backup in `backup`: verified first, refused
/// while a sipd holds the store (`StoreError::Locked`), the current store moved aside, the
/// backup copied in, audited as `sipd:restore` in the restored store.
pub fn restore(data_dir: &Path, backup: &Path, realm: &str) -> Result<Restored, BackupError> {
    let manifest = verify_backup(backup)?;
    if data_dir.exists() {
        // Before anything moves: root restoring into the service's directory would leave
        // files the service cannot open.
        super::at_rest::check_owner(data_dir).map_err(|e| BackupError::Io {
            path: data_dir.to_path_buf(),
            source: io::Error::other(e.to_string()),
        })?;
    }
    let live = data_dir.join("store");
    let moved_aside = if live.exists() {
        // Opening it proves no sipd holds it (`Locked` after a second otherwise).
        let held = sled_at(&live)?;
        drop(held);
        let secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let mut aside = data_dir.join(format!("store.before-restore-{secs}"));
        let mut n = 1;
        while aside.exists() {
            aside = data_dir.join(format!("store.before-restore-{secs}.{n}"));
            n += 1;
        }
        fs::rename(&live, &aside).map_err(io_err(&live))?;
        Some(aside)
    } else {
        None
    };
    {
        super::private_dir(data_dir).map_err(io_err(data_dir))?;
        let src = Store::open(&backup.join(BACKUP_STORE))?;
        let dst = sled_at(&live)?;
        copy_trees(&src.db, &dst)?;
        dst.flush().map_err(StoreError::from)?;
        let got = tree_counts(&dst);
        let differs: Vec<String> = manifest
            .trees
            .iter()
            .filter(|(t, n)| got.get(*t).copied().unwrap_or(0) != **n)
            .map(|(t, n)| {
                format!(
                    "tree {t}: {} copied, {n} expected",
                    got.get(t).copied().unwrap_or(0)
                )
            })
            .collect();
        if !differs.is_empty() {
            return Err(BackupError::Damaged {
                path: backup.to_path_buf(),
                problems: differs,
            });
        }
    }
    let store = Store::open_private(data_dir, realm).map_err(|e| match e {
        super::AtRestError::Store(e) => BackupError::Store(e),
        other => BackupError::Io {
            path: data_dir.to_path_buf(),
            source: io::Error::other(other.to_string()),
        },
    })?;
    store.audit_system(
        &System("restore"),
        AuditKind::Restore,
        format!("store:{}", backup.display()),
        AuditResult::Success,
        moved_aside
            .as_ref()
            .map(|p| format!("the store before is kept in {}", p.display())),
        serde_json::to_value(&manifest).ok(),
    )?;
    store.flush_audit()?;
    tracing::info!(backup = %backup.display(), "store restored");
    Ok(Restored {
        manifest,
        moved_aside,
        store: live,
    })
}
