//! The media call table's state file: what it needs to take its calls back after relayd
//! restarts over pinned XDP maps (call-ids, tags, session ids, streams and their ports, what
//! each side signalled).
//!
//! The kernel keeps forwarding while no daemon runs and the session layer re-adopts the legs
//! from the pinned maps, but the legs know nothing of Call-IDs or tags; without this file a
//! restarted relay could neither `query` nor `delete` its calls. The file is a whole snapshot,
//! replaced atomically (temporary file, fsync, rename, fsync of the directory) so a crash at
//! any point leaves either the old or the new snapshot, never a mix. A file that cannot be
//! read or parsed is an error the caller logs; it never stops the relay from starting.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::backend::{PeerSetup, SessionId, StreamPorts};

/// Layout version of the file; a file of another version is not used.
pub const STATE_VERSION: u32 = 1;

/// Name of the file inside the state directory.
pub const STATE_FILE: &str = "ng-calls.json";

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading, writing or renaming it failed.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// It is not the JSON of a [`Snapshot`].
    #[error("state file {path} is corrupt: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
    /// It was written by a build of another layout ([`STATE_VERSION`]); not used.
    #[error("state file {path} has layout version {found}, this relayd reads {STATE_VERSION}")]
    Version {
        /// The file.
        path: PathBuf,
        /// Its layout version.
        found: u32,
    },
}

/// Everything the engine persists: one record per call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`STATE_VERSION`] when written.
    pub version: u32,
    /// Every call the engine knew.
    pub calls: Vec<CallRecord>,
}

impl Snapshot {
    /// A snapshot of `calls` at this build's [`STATE_VERSION`].
    pub fn new(calls: Vec<CallRecord>) -> Snapshot {
        Snapshot {
            version: STATE_VERSION,
            calls,
        }
    }
}

/// One call as the engine knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The SIP Call-ID.
    pub call_id: String,
    /// The relay session; the pinned legs carry the same id.
    pub session: SessionId,
    /// Side A's (offerer's) and side B's (answerer's) tag.
    pub tags: [Option<String>; 2],
    /// Interface name per side: names, not indices, so a changed interface list does not
    /// silently move a call to another interface.
    pub iface: [String; 2],
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds of the last offer or answer.
    pub last_signal: u64,
    /// One per m= line, in SDP order.
    pub streams: Vec<StreamRecord>,
}

/// One m= line of a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecord {
    /// The media type (`audio`, `video`, ...).
    pub kind: String,
    /// The transport protocol (`RTP/AVP`, ...).
    pub proto: String,
    /// `None` for a disabled m= line (port 0).
    pub ports: Option<StreamPorts>,
    /// What each side (A, B) last signalled.
    pub peer: [Option<PeerSetup>; 2],
}

/// The state file of one relay instance.
#[derive(Debug, Clone)]
pub struct StateFile {
    dir: PathBuf,
    path: PathBuf,
}

impl StateFile {
    /// The file [`STATE_FILE`] in `dir` (created on the first save).
    pub fn new(dir: impl Into<PathBuf>) -> StateFile {
        let dir = dir.into();
        StateFile {
            path: dir.join(STATE_FILE),
            dir,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory holding it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(&self, path: &Path) -> impl FnOnce(io::Error) -> StateError {
        let path = path.to_path_buf();
        move |source| StateError::Io { path, source }
    }

    /// The saved snapshot; `None` when there is no file (first start, or cleaned up).
    pub fn load(&self) -> Result<Option<Snapshot>, StateError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(&self.path)(e)),
        };
        // The version is checked before the layout, so a file from another version says so
        // instead of looking corrupt.
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let v: Versioned =
            serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
                path: self.path.clone(),
                source,
            })?;
        if v.version != STATE_VERSION {
            return Err(StateError::Version {
                path: self.path.clone(),
                found: v.version,
            });
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StateError::Corrupt {
                path: self.path.clone(),
                source,
            })
    }

    /// Replaces the file with `snap`, atomically and durably.
    pub fn save(&self, snap: &Snapshot) -> Result<(), StateError> {
        // Only root (relayd) needs it: the file holds call-ids and peer addresses.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(self.io(&self.dir))?;
        let bytes = serde_json::to_vec(snap).map_err(|source| StateError::Corrupt {
            path: self.path.clone(),
            source,
        })?;
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(self.io(&tmp))?;
            f.write_all(&bytes).map_err(self.io(&tmp))?;
            // Data on disk before the rename makes it visible, or a crash could leave an
            // empty file under the real name.
            f.sync_all().map_err(self.io(&tmp))?;
        }
        fs::rename(&tmp, &self.path).map_err(self.io(&self.path))?;
        // The rename itself is durable only once the directory is.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(self.io(&self.dir))
    }

    /// Removes the file (and a leftover temporary file, and the directory if that leaves it
    /// empty). Returns whether the file existed.
    pub fn remove(&self) -> Result<bool, StateError> {
        let _ = fs::remove_file(self.path.with_extension("json.tmp"));
        let existed = match fs::remove_file(&self.path) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(self.io(&self.path)(e)),
        };
        // Not empty (an operator's file, a quarantined copy) or absent: leave it.
        let _ = fs::remove_dir(&self.dir);
        Ok(existed)
    }

    /// Moves an unusable file aside (kept for a post-mortem) so the next save starts clean.
    /// Returns where it went.
    pub fn quarantine(&self) -> Result<PathBuf, StateError> {
        let to = self.path.with_extension("json.bad");
        fs::rename(&self.path, &to).map_err(self.io(&self.path))?;
        Ok(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory per test under the system temp dir.
    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ng-state-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn record(call: &str, session: SessionId) -> CallRecord {
        CallRecord {
            call_id: call.into(),
            session,
            tags: [Some("ft".into()), Some("tt".into())],
            iface: ["pub".into(), "priv".into()],
            created: 1_700_000_000,
            last_signal: 1_700_000_005,
            streams: vec![
                StreamRecord {
                    kind: "audio".into(),
                    proto: "RTP/AVP".into(),
                    ports: Some(StreamPorts { a: 30002, b: 30000 }),
                    peer: [
                        Some(PeerSetup {
                            local: "203.0.113.1".parse().unwrap(),
                            rtp: Some("198.51.100.7:4000".parse().unwrap()),
                            rtcp: Some("198.51.100.7:4001".parse().unwrap()),
                            latch: true,
                            strict_source: true,
                            trusted: None,
                        }),
                        None,
                    ],
                },
                StreamRecord {
                    kind: "video".into(),
                    proto: "RTP/AVP".into(),
                    ports: None,
                    peer: [None, None],
                },
            ],
        }
    }

    #[test]
    fn round_trip_and_remove() {
        let d = tmpdir("rt");
        let f = StateFile::new(&d);
        assert_eq!(f.load().unwrap(), None, "no file yet");
        let snap = Snapshot::new(vec![record("c1", 1), record("c2", 7)]);
        f.save(&snap).unwrap();
        assert_eq!(f.load().unwrap(), Some(snap.clone()));
        // A second save replaces the first and leaves no temporary file behind.
        let smaller = Snapshot::new(vec![record("c2", 7)]);
        f.save(&smaller).unwrap();
        assert_eq!(f.load().unwrap(), Some(smaller));
        assert!(!f.path().with_extension("json.tmp").exists());
        assert!(f.remove().unwrap());
        assert!(!d.exists(), "empty state dir removed");
        assert!(!f.remove().unwrap());
        assert_eq!(f.load().unwrap(), None);
    }

    #[test]
    fn corrupt_partial_and_foreign_files_are_errors_not_panics() {
        let d = tmpdir("bad");
        let f = StateFile::new(&d);
        f.save(&Snapshot::new(vec![record("c1", 1)])).unwrap();
        let good = fs::read(f.path()).unwrap();
        // Truncated (a partial write by something other than save), garbage, empty, wrong
        // shape, another version.
        let cases: Vec<Vec<u8>> = vec![
            good[..good.len() / 2].to_vec(),
            b"\x00\xff garbage".to_vec(),
            Vec::new(),
            br#"{"version":1,"calls":[{"call_id":5}]}"#.to_vec(),
            br#"[1,2,3]"#.to_vec(),
        ];
        for c in cases {
            fs::write(f.path(), &c).unwrap();
            assert!(
                matches!(f.load(), Err(StateError::Corrupt { .. })),
                "{:?}",
                String::from_utf8_lossy(&c)
            );
        }
        fs::write(f.path(), br#"{"version":99,"calls":"whatever"}"#).unwrap();
        assert!(matches!(
            f.load(),
            Err(StateError::Version { found: 99, .. })
        ));
        let to = f.quarantine().unwrap();
        assert!(to.exists() && !f.path().exists());
        assert_eq!(f.load().unwrap(), None);
        fs::remove_dir_all(&d).unwrap();
    }
}
