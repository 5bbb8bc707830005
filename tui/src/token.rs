//! The saved session: `$XDG_CONFIG_HOME/sbcctl/token` (else `~/.config/sbcctl/token`), a JSON
//! file with the token and the URL (and TLS choice) it belongs to. The directory is created
//! mode 0700 and the file 0600, written to a temporary file and renamed into place, so no
//! other user can read it at any moment.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::Error;

/// A saved session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// The API URL it was made for.
    pub url: String,
    /// The bearer token.
    pub token: String,
    /// Who logged in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// When it expires, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    /// The `--ca` file given at login, reused by later commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// `--insecure` was given at login.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

/// The config directory: `$XDG_CONFIG_HOME/sbcctl`, else `$HOME/.config/sbcctl`.
pub fn config_dir(xdg_config_home: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    match (xdg_config_home, home) {
        // XDG says a relative value is invalid and to be ignored.
        (Some(x), _) if Path::new(x).is_absolute() => Some(Path::new(x).join("sbcctl")),
        (_, Some(h)) if !h.is_empty() => Some(Path::new(h).join(".config").join("sbcctl")),
        _ => None,
    }
}

/// The token file in `dir`.
pub fn token_path(dir: &Path) -> PathBuf {
    dir.join("token")
}

/// Reads the saved session; `None` when there is none. A file others can read is refused.
pub fn load(dir: &Path) -> Result<Option<Saved>, Error> {
    let path = token_path(dir);
    let meta = match fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Local(format!("{}: {e}", path.display()))),
    };
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::Local(format!(
            "{}: readable by others (mode {:o}); run `chmod 600 {}` or log in again",
            path.display(),
            meta.permissions().mode() & 0o777,
            path.display()
        )));
    }
    let text =
        fs::read_to_string(&path).map_err(|e| Error::Local(format!("{}: {e}", path.display())))?;
    let saved = serde_json::from_str(&text).map_err(|e| {
        Error::Local(format!(
            "{}: not a saved session ({e}); log in again",
            path.display()
        ))
    })?;
    Ok(Some(saved))
}

/// Writes the session: the directory 0700 (tightened if it exists), the file 0600.
pub fn save(dir: &Path, saved: &Saved) -> Result<PathBuf, Error> {
    let local = |p: &Path, e: std::io::Error| Error::Local(format!("{}: {e}", p.display()));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| local(dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| local(dir, e))?;
    let path = token_path(dir);
    let tmp = dir.join(format!(".token.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| local(&tmp, e))?;
    let mut text = serde_json::to_string_pretty(saved).expect("serialises");
    text.push('\n');
    let written = f
        .write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .and_then(|()| fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(local(&path, e));
    }
    Ok(path)
}

/// Removes the saved session; `true` if there was one.
pub fn remove(dir: &Path) -> Result<bool, Error> {
    let path = token_path(dir);
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::Local(format!("{}: {e}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved() -> Saved {
        Saved {
            url: "https://127.0.0.1:8443".into(),
            token: "abc".into(),
            username: Some("ops".into()),
            expires_ms: Some(1),
            ca: None,
            insecure: false,
        }
    }

    #[test]
    fn dir_resolution() {
        assert_eq!(
            config_dir(Some("/x/cfg"), Some("/home/u")),
            Some(PathBuf::from("/x/cfg/sbcctl"))
        );
        assert_eq!(
            config_dir(Some("relative"), Some("/home/u")),
            Some(PathBuf::from("/home/u/.config/sbcctl"))
        );
        assert_eq!(
            config_dir(None, Some("/home/u")),
            Some(PathBuf::from("/home/u/.config/sbcctl"))
        );
        assert_eq!(config_dir(None, None), None);
    }

    #[test]
    fn saved_with_private_permissions() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cfg").join("sbcctl");
        let path = save(&dir, &saved()).unwrap();
        assert_eq!(path, dir.join("token"));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(load(&dir).unwrap(), Some(saved()));
        // No temporary file left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);

        // An existing, looser directory is tightened; the file replaced stays 0600.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        save(&dir, &saved()).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&path), 0o600);

        assert!(remove(&dir).unwrap());
        assert!(!remove(&dir).unwrap());
        assert_eq!(load(&dir).unwrap(), None);
    }

    #[test]
    fn readable_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = save(tmp.path(), &saved()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(tmp.path()).unwrap_err();
        assert!(e.to_string().contains("readable by others"), "{e}");
    }
}
