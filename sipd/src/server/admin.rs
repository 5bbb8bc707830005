//! The local admin socket: `admin.sock` in the data directory, for commands that need the
//! running sipd because it holds the store's lock (today `sipd backup`). Owner only: the
//! socket is 0600 in a 0700 directory, and a peer whose uid (SO_PEERCRED) is neither
//! sipd's nor root's is refused. One JSON request line in, one JSON answer line out.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};

use crate::store::{Manifest, Store};

/// The socket's file name in the data directory.
pub const SOCKET: &str = "admin.sock";

/// Longest request line read.
const MAX_REQUEST: u64 = 8192;
/// How long a client has to send its request.
const REQUEST_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// What a client asks.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    /// Take a backup into `dir` (absolute, new or empty).
    Backup {
        /// Where the copy goes.
        dir: PathBuf,
    },
}

/// What sipd answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Reply {
    /// The backup was taken.
    Backup {
        /// Its manifest.
        manifest: Manifest,
    },
    /// The request was refused or failed.
    Error {
        /// Why.
        error: String,
    },
}

/// The socket's path for `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// Listens on the admin socket for the life of the process. A failure to listen is said
/// loudly and does not stop sipd: calls matter more than online backups.
pub fn spawn(store: Arc<Store>, data_dir: &Path) {
    let path = socket_path(data_dir);
    let listener = match listen(&path) {
        Ok(l) => l,
        Err(e) => {
            warn!(socket = %path.display(), error = %e, "admin socket NOT listening: `sipd backup` cannot reach this sipd");
            return;
        }
    };
    info!(socket = %path.display(), "admin socket listening");
    let busy = Arc::new(AtomicBool::new(false));
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(serve(conn, store.clone(), busy.clone()));
        }
    });
}

fn listen(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    // A socket left by a run that was killed: only ever a socket is removed.
    if let Ok(m) = std::fs::symlink_metadata(path)
        && m.file_type().is_socket()
    {
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    // The directory is 0700 already, so nobody else could reach it before this.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

async fn serve(conn: UnixStream, store: Arc<Store>, busy: Arc<AtomicBool>) {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let uid = conn.peer_cred().map(|c| c.uid()).ok();
    let (rd, mut wr) = conn.into_split();
    let reply = match uid {
        Some(u) if u == me || u == 0 => {
            let mut line = String::new();
            let mut rd = BufReader::new(rd).take(MAX_REQUEST);
            let read = tokio::time::timeout(REQUEST_TIME, rd.read_line(&mut line)).await;
            match read {
                Ok(Ok(_)) => handle(&line, store, &busy).await,
                Ok(Err(e)) => Reply::Error {
                    error: format!("reading the request: {e}"),
                },
                Err(_) => Reply::Error {
                    error: format!("no request within {REQUEST_TIME:?}"),
                },
            }
        }
        other => {
            warn!(uid = ?other, "admin socket: peer of another user refused");
            Reply::Error {
                error: "refused: only sipd's own user or root may use this socket".into(),
            }
        }
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    let _ = wr.write_all(&out).await;
}

async fn handle(line: &str, store: Arc<Store>, busy: &Arc<AtomicBool>) -> Reply {
    let req: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => {
            return Reply::Error {
                error: format!("bad request: {e}"),
            };
        }
    };
    match req {
        Request::Backup { dir } => {
            if !dir.is_absolute() {
                return Reply::Error {
                    error: format!("{} is not an absolute path", dir.display()),
                };
            }
            if busy.swap(true, Ordering::AcqRel) {
                return Reply::Error {
                    error: "a backup is already being taken".into(),
                };
            }
            let r = tokio::task::spawn_blocking(move || store.backup_to(&dir)).await;
            busy.store(false, Ordering::Release);
            match r {
                Ok(Ok(manifest)) => Reply::Backup { manifest },
                Ok(Err(e)) => Reply::Error {
                    error: e.to_string(),
                },
                Err(e) => Reply::Error {
                    error: format!("backup task: {e}"),
                },
            }
        }
    }
}

/// Asks the sipd running on `data_dir` for `req`; `Ok(None)` when none listens there.
pub fn ask(data_dir: &Path, req: &Request) -> std::io::Result<Option<Reply>> {
    use std::io::{BufRead, Write};
    let path = socket_path(data_dir);
    let mut conn = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let mut line = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    line.push(b'\n');
    // A refused peer gets its answer without its request being read: the write may fail
    // (broken pipe) with the answer already waiting.
    let sent = conn.write_all(&line);
    let mut answer = String::new();
    let read = std::io::BufReader::new(conn).read_line(&mut answer);
    if answer.is_empty() {
        sent?;
        read?;
    }
    serde_json::from_str(&answer)
        .map(Some)
        .map_err(|e| std::io::Error::other(format!("sipd's answer {answer:?}: {e}")))
}
