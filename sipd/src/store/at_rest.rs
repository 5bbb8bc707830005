//! The store's secrets at rest: the data directory private (0700) and the store's files for
//! the owner only (sled creates them with the umask's mode, 0644 under the usual 022);
//! plain SIP passwords of stores written before HA1-only storage turned into HA1 values
//! when the store is opened; and HA1 values made for another realm than the configured one
//! found before `sipd run` serves calls with them.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sipd_core::auth::digest::Credential;

use super::{Account, Store, StoreError};

/// Why the store could not be opened privately.
#[derive(Debug, thiserror::Error)]
pub enum AtRestError {
    /// The data directory could not be created or its modes tightened.
    #[error("data directory {path}: {source}")]
    Dir {
        /// The data directory.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: io::Error,
    },
    /// The data directory belongs to another user than the one sipd runs as: a non-root sipd
    /// could not write it, and root would leave files in it its owner (the service) cannot
    /// read.
    #[error(
        "data directory {} belongs to uid {owner}, but sipd runs as uid {uid}: run this \
         command as its owner (`runuser -u sipd -- sipd ...` for the systemd unit's user), \
         or give it to uid {uid} with `chown -R {uid}: {}`",
        path.display(),
        path.display()
    )]
    Owner {
        /// The data directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The effective uid sipd runs as.
        uid: u32,
    },
    /// The store itself would not open, or turning plain passwords into HA1 values failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates `dir` (and missing parents) with mode 0700, or takes group and other access
/// away from an existing one: the store, the TLS key and the nonce secret live there.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = fs::metadata(dir)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{mode:04o}"), "data directory was open to group or others: now 0700");
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}

/// Takes group and other access away from everything under `dir` (files and directories),
/// without following symlinks.
pub fn owner_only(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.path().symlink_metadata()?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode & 0o700))?;
        }
        if meta.is_dir() {
            owner_only(&entry.path())?;
        }
    }
    Ok(())
}

/// Refuses a data directory owned by another user than the effective one (see
/// [`AtRestError::Owner`]).
pub(super) fn check_owner(data_dir: &Path) -> Result<(), AtRestError> {
    use std::os::unix::fs::MetadataExt as _;
    let owner = fs::metadata(data_dir)
        .map_err(|source| AtRestError::Dir {
            path: data_dir.to_path_buf(),
            source,
        })?
        .uid();
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if owner != uid {
        return Err(AtRestError::Owner {
            path: data_dir.to_path_buf(),
            owner,
            uid,
        });
    }
    Ok(())
}

impl Store {
    /// Opens the store under `data_dir` (created 0700), its files owner-only, with any plain
    /// SIP password turned into HA1 values for `realm` (see
    /// [`Store::hash_plain_sip_passwords`]). Every command that opens the store goes
    /// through here.
    pub fn open_private(data_dir: &Path, realm: &str) -> Result<Store, AtRestError> {
        let dir_err = |source| AtRestError::Dir {
            path: data_dir.to_path_buf(),
            source,
        };
        private_dir(data_dir).map_err(dir_err)?;
        check_owner(data_dir)?;
        let store = Store::open(&data_dir.join("store"))?;
        owner_only(data_dir).map_err(dir_err)?;
        let migrated = store.hash_plain_sip_passwords(realm)?;
        if !migrated.is_empty() {
            tracing::info!(accounts = ?migrated, %realm, "stored SIP passwords replaced by their HA1 values");
        }
        Ok(store)
    }

    /// Replaces every plain SIP password (stores from before HA1-only storage) by its HA1
    /// values for `realm`, MD5 and SHA-256, in one transaction: nothing is lost, since the
    /// HA1 values answer every challenge the password did. Returns the accounts changed.
    pub fn hash_plain_sip_passwords(&self, realm: &str) -> Result<Vec<String>, StoreError> {
        // A record that does not decode is reported by whoever reads it (and by `sipd
        // store check`); it must not stop the store from opening, or one bad record would
        // keep sipd down and `store check --repair` from running.
        let plain: Vec<Account> = self
            .accounts()
            .into_iter()
            .filter_map(|a| {
                a.inspect_err(|e| tracing::warn!(error = %e, "unreadable account skipped"))
                    .ok()
            })
            .filter(|a| a.sip.as_ref().is_some_and(|s| s.credential.is_plain()))
            .collect();
        if plain.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|tx| {
            for a in &plain {
                let mut a = a.clone();
                if let Some(s) = a.sip.as_mut()
                    && let Credential::Password { password } = &s.credential
                {
                    s.credential = Credential::hashed(&s.username, realm, password);
                }
                tx.put_account(&a)?;
            }
            Ok(())
        })?;
        Ok(plain.into_iter().map(|a| a.name).collect())
    }

    /// Accounts whose HA1 values were made for another realm than `realm`, with that realm:
    /// their digest can never succeed (HA1 = H(username:realm:password)).
    pub fn ha1_for_other_realms(&self, realm: &str) -> Vec<(String, String)> {
        self.accounts()
            .into_iter()
            .flatten()
            .filter_map(|a| {
                let other = a.sip.as_ref()?.credential.realm()?.to_owned();
                (other != realm).then_some((a.name, other))
            })
            .collect()
    }
}

/// The refusal `sipd run` gives when the configured realm would orphan stored HA1 values:
/// they cannot be recomputed without the passwords, which are not kept.
pub fn realm_change_refusal(realm: &str, orphaned: &[(String, String)]) -> Option<String> {
    let (_, old) = orphaned.first()?;
    let names: Vec<&str> = orphaned.iter().take(10).map(|(n, _)| n.as_str()).collect();
    let more = orphaned.len().saturating_sub(names.len());
    Some(format!(
        "[auth] realm is {realm:?}, but {} account(s) ({}{}) hold SIP digest credentials (HA1 values) made for realm {old:?}: HA1 binds the realm and cannot be recomputed without the passwords, so their calls would all fail. Set [auth] realm back to {old:?}, or provision new passwords (or HA1 values for {realm:?}) for these accounts with `sipd import` first",
        orphaned.len(),
        names.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    ))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::super::{Micros, SipAuth, T};
    use super::*;
    use sipd_core::auth::digest::HashFn;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// A store as sipd wrote it before HA1-only storage: an account record (version 1)
    /// holding `{"kind": "password"}`, written past today's guard as the old code did.
    fn old_store(dir: &Path) {
        let s = Store::open(&dir.join("store")).unwrap();
        let old = Account {
            id: 7,
            name: "legacy".into(),
            enabled: true,
            sip: Some(SipAuth {
                username: "legacy-user".into(),
                credential: Credential::Password {
                    password: "Circle Of Life".into(),
                },
                algorithms: None,
                password_template: None,
            }),
            cps_limit: None,
            max_sessions: None,
            balance: Micros(1_000_000),
            tariff_id: None,
            max_call_secs: None,
        };
        s.write(|tx| {
            tx.put(T::Accounts, &7u64.to_be_bytes(), &old)?;
            tx.index_claim(T::AccountNames, "account", "legacy", 7)?;
            tx.index_claim(T::SipUsers, "account", "legacy-user", 7)
        })
        .unwrap();
        let raw = s
            .tree(T::Accounts)
            .get(7u64.to_be_bytes())
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        assert!(
            text.contains(r#""kind":"password""#) && text.contains("Circle Of Life"),
            "{text}"
        );
    }

    /// Opening an old store replaces the plain password by its HA1 values (both hashes, for
    /// the configured realm): nothing is lost (they answer as the password did) and the
    /// password is gone from the files.
    #[test]
    fn plain_passwords_become_ha1_when_the_store_is_opened() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        fs::create_dir_all(&data).unwrap();
        old_store(&data);
        let s = Store::open_private(&data, "sbc").unwrap();
        let a = s.account_by_sip_user("legacy-user").unwrap().unwrap();
        let c = &a.sip.as_ref().unwrap().credential;
        let plain = Credential::Password {
            password: "Circle Of Life".into(),
        };
        assert!(!c.is_plain());
        for h in [HashFn::Md5, HashFn::Sha256] {
            assert_eq!(
                c.ha1(h, "legacy-user", "sbc"),
                plain.ha1(h, "legacy-user", "sbc")
            );
        }
        assert_eq!(
            a.balance,
            Micros(1_000_000),
            "the rest of the account is kept"
        );
        assert!(
            s.hash_plain_sip_passwords("sbc").unwrap().is_empty(),
            "once"
        );
        let raw = s
            .tree(T::Accounts)
            .get(7u64.to_be_bytes())
            .unwrap()
            .unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains("Circle Of Life"));
        // And no plain password can be stored again.
        let mut back = a.clone();
        back.sip.as_mut().unwrap().credential = plain;
        assert!(matches!(
            s.put_account(&back),
            Err(StoreError::Invalid { .. })
        ));
    }

    /// A data directory of another user is refused before anything is written in it, with
    /// what to do. Needs root to hand the directory to someone else; skipped otherwise.
    #[test]
    fn another_users_data_dir_is_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED another_users_data_dir_is_refused: needs root to chown");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        fs::create_dir(&data).unwrap();
        std::os::unix::fs::chown(&data, Some(64_123), Some(64_123)).unwrap();
        let e = Store::open_private(&data, "sbc").unwrap_err();
        assert!(
            matches!(
                e,
                AtRestError::Owner {
                    owner: 64_123,
                    uid: 0,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("runuser -u sipd"), "{e}");
        assert_eq!(fs::read_dir(&data).unwrap().count(), 0, "nothing written");
    }

    /// The data directory is made 0700 (or tightened to it) and the store's files are for
    /// the owner only.
    #[test]
    fn data_dir_is_0700_and_store_files_owner_only() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("new/data");
        let s = Store::open_private(&data, "sbc").unwrap();
        drop(s);
        assert_eq!(mode(&data), 0o700);
        let mut seen = 0;
        let mut stack = vec![data.clone()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                assert_eq!(mode(&p) & 0o077, 0, "{} is open to others", p.display());
                seen += 1;
                if p.is_dir() {
                    stack.push(p);
                }
            }
        }
        assert!(seen >= 2, "sled wrote files ({seen})");
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
        let loose = data.join("store").join("conf");
        if loose.exists() {
            fs::set_permissions(&loose, fs::Permissions::from_mode(0o644)).unwrap();
        }
        drop(Store::open_private(&data, "sbc").unwrap());
        assert_eq!(mode(&data), 0o700, "an existing directory is tightened");
        if loose.exists() {
            assert_eq!(mode(&loose), 0o600);
        }
    }

    /// HA1 values bind the realm: a configured realm that would orphan them is named with
    /// the accounts and the way back.
    #[test]
    fn a_realm_change_that_orphans_ha1_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        fs::create_dir_all(&data).unwrap();
        old_store(&data);
        let s = Store::open_private(&data, "old-realm").unwrap();
        assert!(s.ha1_for_other_realms("old-realm").is_empty());
        let orphaned = s.ha1_for_other_realms("new-realm");
        assert_eq!(orphaned, vec![("legacy".into(), "old-realm".into())]);
        let text = realm_change_refusal("new-realm", &orphaned).unwrap();
        assert!(
            text.contains("legacy")
                && text.contains("back to \"old-realm\"")
                && text.contains("sipd import"),
            "{text}"
        );
        assert_eq!(realm_change_refusal("x", &[]), None);
    }
}
