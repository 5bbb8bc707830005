//! Files sipd writes whole: beside the target, synced, then renamed over it, so a crash never
//! leaves a truncated key, certificate or export under the real name.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `data` to `path` readable by the owner only (0600).
pub fn write(path: &Path, data: &[u8]) -> io::Result<()> {
    write_mode(path, data, 0o600)
}

/// Writes `data` to `path` with `mode` (0644 for a certificate others may read).
pub fn write_mode(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_the_file_whole_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        super::write(&p, b"first").unwrap();
        super::write(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join("key.tmp").exists());
    }
}
