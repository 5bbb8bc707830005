//! Staff passwords: Argon2id with a random salt per password and a pepper kept outside the
//! data directory, the password policy, and a strength estimate (zxcvbn).
//!
//! The pepper is Argon2's secret input (`K` in RFC 9106), so a hash is useless without the
//! pepper file: a stolen data directory (or backup of it) cannot be attacked offline. The
//! flip side: losing or changing the pepper makes every staff password unverifiable (reset
//! them with `sipd init`-style tooling), so back it up separately from the data directory.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, AssociatedData, Params, ParamsBuilder, Version};
use serde::{Deserialize, Serialize};
use sipd_core::records::Composition;

/// Bytes of pepper.
pub const PEPPER_LEN: usize = 32;
/// Bytes of salt per password.
pub const SALT_LEN: usize = 16;
/// Longest password accepted: Argon2 takes any length, but zxcvbn's cost grows with it and
/// nobody types more.
pub const MAX_PASSWORD_CHARS: usize = 256;

/// Argon2id costs (`[management.argon2]`). Defaults are OWASP's: 19 MiB, 2 passes, 1 lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Argon2Costs {
    /// Memory in KiB (`m`).
    pub memory_kib: u32,
    /// Passes (`t`).
    pub iterations: u32,
    /// Lanes (`p`).
    pub parallelism: u32,
    /// Argon2 computations (logins, password changes) run at once; more wait their turn, so
    /// parallel logins cannot take more than `max_concurrent × memory_kib` of memory.
    pub max_concurrent: u32,
}

impl Default for Argon2Costs {
    fn default() -> Self {
        Argon2Costs {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
            max_concurrent: 4,
        }
    }
}

impl Argon2Costs {
    /// Problems with these costs, for `sipd check-config` (below OWASP's floor is refused:
    /// 8 MiB is already a tenth of what a GPU attacker would face elsewhere).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(1..=16).contains(&self.parallelism) {
            out.push(format!(
                "parallelism {} is outside 1..=16",
                self.parallelism
            ));
        }
        if !(1..=16).contains(&self.iterations) {
            out.push(format!("iterations {} is outside 1..=16", self.iterations));
        }
        if !(1..=256).contains(&self.max_concurrent) {
            out.push(format!(
                "max_concurrent {} is outside 1..=256",
                self.max_concurrent
            ));
        }
        if !(8_192..=4_194_304).contains(&self.memory_kib) {
            out.push(format!(
                "memory_kib {} is outside 8192..=4194304 (8 MiB to 4 GiB)",
                self.memory_kib
            ));
        }
        out
    }

    fn params(&self) -> Result<Params, PasswordError> {
        Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| PasswordError::Hash(format!("Argon2 costs: {e}")))
    }
}

/// Why the pepper could not be loaded or created: the management API and `sipd init` cannot
/// run without it.
#[derive(Debug, thiserror::Error)]
pub enum PepperError {
    /// The pepper file could not be read, created or written.
    #[error("pepper file {path}: {source}")]
    Io {
        /// The pepper file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The pepper file is inside the data directory (refused: a stolen data directory would be
    /// enough to attack the hashes).
    #[error(
        "pepper file {path} is inside the data directory {data_dir}: a stolen data directory would then be enough to attack the password hashes; put it elsewhere ([management] pepper_file)"
    )]
    InsideDataDir {
        /// The pepper file.
        path: PathBuf,
        /// The data directory it must stay out of.
        data_dir: PathBuf,
    },
    /// Group or others may access the pepper file (refused, not repaired).
    #[error(
        "pepper file {path} has mode {mode:04o}: group and others must have no access (chmod 600)"
    )]
    Permissions {
        /// The pepper file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The pepper file is not [`PEPPER_LEN`] bytes: damaged, or not a pepper.
    #[error("pepper file {path} is {len} bytes; expected {PEPPER_LEN} (a damaged or foreign file)")]
    WrongSize {
        /// The pepper file.
        path: PathBuf,
        /// Its size in bytes.
        len: u64,
    },
    /// The path is a directory, a device or another non-regular file.
    #[error("pepper file {path} is not a regular file")]
    NotAFile {
        /// The path named by `[management] pepper_file`.
        path: PathBuf,
    },
    /// The system random source failed while making a new pepper.
    #[error("no randomness for the pepper: {0}")]
    Random(String),
    /// No pepper file but staff are stored: a new pepper would lock them all out, so none is
    /// made (restore the file from a backup).
    #[error(
        "pepper file {path} is missing but staff users exist: their password hashes need the pepper they were made with, and a new one would lock every one of them out. Restore the file from your backup (32 bytes, mode 0600) at that path or point [management] pepper_file at it (a relative path is relative to the configuration file's directory); only if it is lost for good, delete the staff users and run `sipd init` again"
    )]
    MissingWithStaff {
        /// Where the pepper file should be.
        path: PathBuf,
    },
}

/// The Argon2 secret. Not `Debug`-printable, not `Clone`.
pub struct Pepper([u8; PEPPER_LEN]);

impl Pepper {
    /// A pepper from its bytes (tests, and [`load_or_create_pepper`] after reading the file).
    pub fn from_bytes(b: [u8; PEPPER_LEN]) -> Pepper {
        Pepper(b)
    }
}

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pepper(<redacted>)")
    }
}

impl Drop for Pepper {
    fn drop(&mut self) {
        // Best effort (the optimiser may still elide it; the copy in the hasher lives for
        // the process anyway).
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

/// Reads the pepper from `path`, creating it (32 random bytes, mode 0600, exclusively) if it
/// does not exist. Refuses a path inside `data_dir`, a file group or others can access, a
/// file of the wrong size, or something that is not a regular file (symlinks are followed
/// for the location check, so a link into the data directory is refused too).
/// `staff_exist`: staff records are stored, so a missing file is refused rather than made
/// anew (their hashes need the old pepper).
pub fn load_or_create_pepper(
    path: &Path,
    data_dir: &Path,
    staff_exist: bool,
) -> Result<Pepper, PepperError> {
    let io = |source| PepperError::Io {
        path: path.to_path_buf(),
        source,
    };
    let resolved = resolve(path).map_err(io)?;
    let data = resolve(data_dir).map_err(io)?;
    if resolved.starts_with(&data) {
        return Err(PepperError::InsideDataDir {
            path: path.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
        });
    }
    match OpenOptions::new().read(true).open(path) {
        Ok(mut f) => {
            let meta = f.metadata().map_err(io)?;
            if !meta.is_file() {
                return Err(PepperError::NotAFile {
                    path: path.to_path_buf(),
                });
            }
            let mode = meta.mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(PepperError::Permissions {
                    path: path.to_path_buf(),
                    mode,
                });
            }
            if meta.len() != PEPPER_LEN as u64 {
                return Err(PepperError::WrongSize {
                    path: path.to_path_buf(),
                    len: meta.len(),
                });
            }
            let mut b = [0u8; PEPPER_LEN];
            f.read_exact(&mut b).map_err(io)?;
            Ok(Pepper(b))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && staff_exist => {
            Err(PepperError::MissingWithStaff {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut b = [0u8; PEPPER_LEN];
            getrandom::fill(&mut b).map_err(|e| PepperError::Random(e.to_string()))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(dir).map_err(io)?;
            }
            // create_new: never truncate a pepper another process just wrote.
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            // The umask cannot widen 0600, but be explicit in case the file system ignores
            // the create mode.
            f.set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(io)?;
            f.write_all(&b).map_err(io)?;
            f.sync_all().map_err(io)?;
            tracing::info!(path = %path.display(), "created the staff password pepper (back it up apart from the data directory)");
            Ok(Pepper(b))
        }
        Err(e) => Err(io(e)),
    }
}

/// An absolute path with symlinks resolved as far as the path exists, and `.`/`..` removed
/// lexically for the rest.
fn resolve(p: &Path) -> std::io::Result<PathBuf> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    // Find the longest existing prefix, canonicalize it, append the rest.
    let mut existing = abs.clone();
    let mut rest = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(c) => {
                let mut out = c;
                for part in rest.iter().rev() {
                    out.push(part);
                }
                return Ok(normalize(&out));
            }
            Err(_) => match (existing.file_name(), existing.parent()) {
                (Some(name), Some(parent)) => {
                    rest.push(name.to_os_string());
                    existing = parent.to_path_buf();
                }
                _ => return Ok(normalize(&abs)),
            },
        }
    }
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Why Argon2 could not hash or check a password; never a wrong password
/// (that is `Ok(false)` from [`PasswordHasher::verify`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Hashing failed: the costs are out of Argon2's bounds or the random source failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// The stored hash is not a PHC string this hasher can check (damaged or foreign).
    #[error("stored password hash is unusable: {0}")]
    BadStoredHash(String),
}

/// Argon2 associated data that ties a hash to one user: see [`seasoning`].
pub type Seasoning = [u8; 32];

/// The seasoning of a user's hash: SHA-256 of their username (lowercased, unique among users)
/// and their email address when they have one, so a hash copied into another user's record
/// does not verify there, even when both share an address (ConnexCS seasons hashes with the
/// hashed email; the username is what makes ours unique per user).
pub fn seasoning(username: &str, email: Option<&str>) -> Seasoning {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"sipd staff password seasoning\0username\0");
    h.update(username.to_ascii_lowercase().as_bytes());
    if let Some(e) = email {
        h.update(b"\0email\0");
        h.update(e.to_ascii_lowercase().as_bytes());
    }
    h.finalize().into()
}

/// `params` with `seasoning` as their associated data (none: without any).
fn seasoned(params: &Params, seasoning: Option<&Seasoning>) -> Result<Params, PasswordError> {
    let e = |e: argon2::Error| PasswordError::Hash(format!("Argon2 parameters: {e}"));
    let mut b = ParamsBuilder::new();
    b.m_cost(params.m_cost())
        .t_cost(params.t_cost())
        .p_cost(params.p_cost());
    if let Some(len) = params.output_len() {
        b.output_len(len);
    }
    if let Some(s) = seasoning {
        b.data(AssociatedData::new(s).map_err(e)?);
    }
    b.build().map_err(e)
}

/// Hashes and verifies staff passwords with the pepper and the configured costs.
pub struct PasswordHasher {
    pepper: Pepper,
    costs: Argon2Costs,
    /// A hash of nothing in particular, verified against when the user does not exist so
    /// that unknown users take as long as wrong passwords.
    dummy: OnceLock<String>,
    slots: Slots,
    /// Verifications done (real and dummy), for tests and the timing-equality check.
    verified: AtomicU64,
}

/// A counting semaphore for the blocking threads Argon2 runs on (a tokio one would not do:
/// the work runs inside `spawn_blocking`, and `sipd init` has no runtime).
#[derive(Debug)]
struct Slots {
    max: u32,
    busy: Mutex<u32>,
    freed: Condvar,
}

struct Slot<'a>(&'a Slots);

impl Slots {
    fn new(max: u32) -> Slots {
        Slots {
            max: max.max(1),
            busy: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    fn take(&self) -> Slot<'_> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while *busy >= self.max {
            busy = self.freed.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        *busy += 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut busy = self.0.busy.lock().unwrap_or_else(|p| p.into_inner());
        *busy -= 1;
        self.0.freed.notify_one();
    }
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("costs", &self.costs)
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// A hasher with `pepper` and `costs`; refuses costs Argon2 does not accept.
    pub fn new(pepper: Pepper, costs: Argon2Costs) -> Result<PasswordHasher, PasswordError> {
        costs.params()?;
        Ok(PasswordHasher {
            pepper,
            costs,
            dummy: OnceLock::new(),
            slots: Slots::new(costs.max_concurrent),
            verified: AtomicU64::new(0),
        })
    }

    /// The configured Argon2 costs.
    pub fn costs(&self) -> Argon2Costs {
        self.costs
    }

    fn argon2(&self, params: Params) -> Result<Argon2<'_>, PasswordError> {
        Argon2::new_with_secret(&self.pepper.0, Algorithm::Argon2id, Version::V0x13, params)
            .map_err(|e| PasswordError::Hash(e.to_string()))
    }

    /// A PHC string of `password` with a fresh random salt and the current costs, not
    /// seasoned (the format of hashes made before seasoning; see [`Self::hash_seasoned`]).
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        self.hash_seasoned(password, None)
    }

    /// A PHC string of `password` with a fresh random salt and the current costs, seasoned
    /// with `seasoning` as Argon2's associated data (`X` in RFC 9106) when given.
    pub fn hash_seasoned(
        &self,
        password: &str,
        seasoning: Option<&Seasoning>,
    ) -> Result<String, PasswordError> {
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
        let params = seasoned(&self.costs.params()?, seasoning)?;
        let a = self.argon2(params)?;
        let _slot = self.slots.take();
        a.hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    }

    /// Whether `password` matches an unseasoned `phc`; see [`Self::verify_seasoned`].
    pub fn verify(&self, password: &str, phc: &str) -> Result<bool, PasswordError> {
        self.verify_seasoned(password, phc, None)
    }

    /// Whether `password` matches `phc` (with the costs recorded in `phc`) seasoned with
    /// `seasoning`. The seasoning comes from the caller (the user's record), never from the
    /// PHC string's `data` field, so a hash copied into another user's record is checked
    /// with that user's seasoning and fails. The final comparison is constant-time
    /// (password-hash's `Output` equality). Only Argon2id hashes are accepted.
    pub fn verify_seasoned(
        &self,
        password: &str,
        phc: &str,
        seasoning: Option<&Seasoning>,
    ) -> Result<bool, PasswordError> {
        let bad = |e: &dyn std::fmt::Display| PasswordError::BadStoredHash(e.to_string());
        let parsed = PasswordHash::new(phc).map_err(|e| bad(&e))?;
        if parsed.algorithm.as_str() != "argon2id" {
            return Err(PasswordError::BadStoredHash(format!(
                "algorithm {} (only argon2id is accepted)",
                parsed.algorithm
            )));
        }
        let (Some(salt), Some(stored)) = (parsed.salt, parsed.hash) else {
            return Err(bad(&"no salt or no hash"));
        };
        let recorded = Params::try_from(&parsed).map_err(|e| bad(&e))?;
        let params = seasoned(&recorded, seasoning)?;
        let a = self.argon2(self.costs.params()?)?;
        let _slot = self.slots.take();
        self.verified.fetch_add(1, Ordering::Relaxed);
        let computed = a
            .hash_password_customized(
                password.as_bytes(),
                Some(parsed.algorithm),
                parsed.version,
                params,
                salt,
            )
            .map_err(|e| bad(&e))?;
        Ok(computed.hash == Some(stored))
    }

    /// Verifications done so far (real and dummy).
    pub fn verifications(&self) -> u64 {
        self.verified.load(Ordering::Relaxed)
    }

    /// Spends the time of one verification and returns false: for unknown users.
    pub fn verify_dummy(&self, password: &str) -> bool {
        let phc = self
            .dummy
            .get_or_init(|| self.hash("not a password of anyone").unwrap_or_default());
        let _ = self.verify(password, phc);
        false
    }

    /// Whether `phc` was made with other costs (or another algorithm/version) than the
    /// current ones: rehash it at the next successful login.
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return true;
        };
        let Ok(p) = Params::try_from(&parsed) else {
            return true;
        };
        parsed.algorithm.as_str() != "argon2id"
            || parsed.version != Some(Version::V0x13 as u32)
            || p.m_cost() != self.costs.memory_kib
            || p.t_cost() != self.costs.iterations
            || p.p_cost() != self.costs.parallelism
    }
}

/// `[management.password]`: what a new password must satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordPolicy {
    /// Characters (not bytes).
    pub min_length: usize,
    /// How many of the four classes (lowercase, uppercase, digit, other) must appear.
    pub min_classes: u8,
    /// Days after which a password must be changed at the next login; 0 = never.
    pub max_age_days: u32,
    /// Lowest zxcvbn score (0-4) accepted.
    pub min_strength: u8,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy {
            min_length: 12,
            min_classes: 3,
            max_age_days: 0,
            min_strength: 3,
        }
    }
}

/// zxcvbn's estimate, shown whenever a password is set or changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Strength {
    /// 0 (guessed in under 10^3 tries) to 4 (over 10^10).
    pub score: u8,
    /// log10 of the estimated guesses.
    pub guesses_log10: f64,
    /// zxcvbn's warning about the password ("this is a top-10 common password"), if any.
    #[serde(default)]
    pub warning: Option<String>,
    /// zxcvbn's advice for a stronger one.
    #[serde(default)]
    pub suggestions: Vec<String>,
}

/// Why a password was refused: every rule it broke, and the estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("password refused: it {}", problems.join("; it "))]
pub struct PolicyViolation {
    /// Every rule broken, a phrase each about the password ("is 6 characters; ...").
    pub problems: Vec<String>,
    /// The refused password's estimate, so the client can show why.
    pub strength: Strength,
}

/// The strength estimate of `password`; `user_inputs` (username, issuer) count as known
/// words an attacker would try first.
pub fn strength(password: &str, user_inputs: &[&str]) -> Strength {
    if password.is_empty() {
        return Strength {
            score: 0,
            guesses_log10: 0.0,
            warning: None,
            suggestions: vec!["Choose a password".into()],
        };
    }
    // zxcvbn's work grows with length; past the limit the policy refuses anyway.
    let capped: String = password.chars().take(MAX_PASSWORD_CHARS).collect();
    let e = zxcvbn::zxcvbn(&capped, user_inputs);
    let fb = e.feedback();
    Strength {
        score: u8::from(e.score()),
        guesses_log10: e.guesses_log10(),
        warning: fb.and_then(|f| f.warning()).map(|w| w.to_string()),
        suggestions: fb
            .map(|f| f.suggestions().iter().map(|s| s.to_string()).collect())
            .unwrap_or_default(),
    }
}

impl PasswordPolicy {
    /// The length, class and strength rules staff and SIP passwords share.
    fn composition(&self) -> Composition {
        Composition {
            min_length: self.min_length,
            max_chars: MAX_PASSWORD_CHARS,
            min_classes: self.min_classes,
            min_strength: self.min_strength,
        }
    }

    /// Problems with the policy itself, for `sipd check-config`.
    pub fn problems(&self) -> Vec<String> {
        self.composition().problems()
    }

    /// Checks `password` for `username`; returns the strength estimate when it passes.
    pub fn check(&self, password: &str, username: &str) -> Result<Strength, PolicyViolation> {
        let s = strength(password, &[username, super::totp::ISSUER, "sbc", "sipd"]);
        let rules = self.composition();
        let mut problems = rules.breaks(password);
        if !username.is_empty() && password.to_lowercase().contains(&username.to_lowercase()) {
            problems.push("contains the username".into());
        }
        if let Some(weak) = rules.too_weak(s.score) {
            let why = s.warning.as_ref().map(|w| format!(": {w}"));
            problems.push(format!("{weak}{}", why.unwrap_or_default()));
        }
        if problems.is_empty() {
            Ok(s)
        } else {
            Err(PolicyViolation {
                problems,
                strength: s,
            })
        }
    }

    /// Whether a password changed at `changed_ms` has expired at `now_ms`.
    pub fn expired(&self, changed_ms: u64, now_ms: u64) -> bool {
        self.max_age_days > 0
            && now_ms.saturating_sub(changed_ms) >= u64::from(self.max_age_days) * 86_400_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordVerifier as _;

    /// Argon2's smallest memory, so debug-build tests stay fast.
    pub(crate) fn cheap() -> Argon2Costs {
        Argon2Costs {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            max_concurrent: 2,
        }
    }

    fn hasher(p: u8) -> PasswordHasher {
        PasswordHasher::new(Pepper([p; PEPPER_LEN]), cheap()).unwrap()
    }

    #[test]
    fn hash_verify_and_salt() {
        let h = hasher(1);
        let a = h.hash("correct horse battery staple").unwrap();
        let b = h.hash("correct horse battery staple").unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{a}");
        assert_ne!(a, b, "a fresh salt per password");
        assert!(h.verify("correct horse battery staple", &a).unwrap());
        assert!(!h.verify("correct horse battery stapler", &a).unwrap());
        assert!(!h.verify_dummy("anything"));
    }

    /// A hash seasoned for one user verifies only with that user's seasoning; the seasoning
    /// is not taken from the PHC string.
    #[test]
    fn seasoned_hash_needs_its_seasoning() {
        let h = hasher(1);
        let a = seasoning("alice", Some("alice@example.net"));
        let b = seasoning("bob", None);
        assert_ne!(a, seasoning("alice", None), "the email too, when set");
        assert_ne!(
            a,
            seasoning("mallory", Some("alice@example.net")),
            "the username too: two users may share an address"
        );
        assert_eq!(
            b,
            seasoning("BOB", None),
            "usernames without regard to case"
        );
        let phc = h.hash_seasoned("pw-one-two-three", Some(&a)).unwrap();
        assert!(
            h.verify_seasoned("pw-one-two-three", &phc, Some(&a))
                .unwrap()
        );
        assert!(
            !h.verify_seasoned("pw-one-two-three", &phc, Some(&b))
                .unwrap()
        );
        assert!(!h.verify("pw-one-two-three", &phc).unwrap());
        // An old unseasoned hash still verifies unseasoned, and only so.
        let old = h.hash("pw-one-two-three").unwrap();
        assert!(h.verify("pw-one-two-three", &old).unwrap());
        assert!(
            !h.verify_seasoned("pw-one-two-three", &old, Some(&a))
                .unwrap()
        );
    }

    #[test]
    fn pepper_is_needed() {
        let a = hasher(1).hash("pw-one-two-three").unwrap();
        assert!(!hasher(2).verify("pw-one-two-three", &a).unwrap());
        // And an unpeppered Argon2id of the same salt differs.
        let plain = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            cheap().params().unwrap(),
        );
        let parsed = PasswordHash::new(&a).unwrap();
        assert!(plain.verify_password(b"pw-one-two-three", &parsed).is_err());
    }

    #[test]
    fn other_algorithms_and_garbage_refused() {
        let h = hasher(1);
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            cheap().params().unwrap(),
        )
        .hash_password(b"x", &SaltString::encode_b64(&[7; 16]).unwrap())
        .unwrap()
        .to_string();
        assert!(matches!(
            h.verify("x", &argon2i),
            Err(PasswordError::BadStoredHash(_))
        ));
        assert!(h.verify("x", "not a hash").is_err());
        assert!(h.needs_rehash(&argon2i));
        assert!(h.needs_rehash("garbage"));
    }

    #[test]
    fn needs_rehash_when_costs_change() {
        let h = hasher(1);
        let phc = h.hash("pw").unwrap();
        assert!(!h.needs_rehash(&phc));
        let stronger = PasswordHasher::new(
            Pepper([1; PEPPER_LEN]),
            Argon2Costs {
                memory_kib: 128,
                ..cheap()
            },
        )
        .unwrap();
        assert!(stronger.needs_rehash(&phc));
        // Old hashes still verify after a cost change.
        assert!(stronger.verify("pw", &phc).unwrap());
    }

    #[test]
    fn default_costs_are_owasp() {
        let c = Argon2Costs::default();
        assert_eq!((c.memory_kib, c.iterations, c.parallelism), (19_456, 2, 1));
        assert!(c.problems().is_empty());
        assert!(!cheap().problems().is_empty(), "too cheap for production");
    }

    #[test]
    fn pepper_created_0600_and_reused() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        let path = d.path().join("etc/pepper");
        let a = load_or_create_pepper(&path, &data, false).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(meta.len(), PEPPER_LEN as u64);
        let b = load_or_create_pepper(&path, &data, false).unwrap();
        assert_eq!(a.0, b.0);
        assert_ne!(a.0, [0; PEPPER_LEN]);
    }

    /// With staff records stored, a missing pepper is lost, not new: refused with how to
    /// restore it, and nothing is created in its place.
    #[test]
    fn no_new_pepper_when_staff_exist() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        let path = d.path().join("etc/pepper");
        let e = load_or_create_pepper(&path, &data, true).unwrap_err();
        assert!(matches!(e, PepperError::MissingWithStaff { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("Restore") && text.contains("pepper_file"),
            "{text}"
        );
        assert!(!path.exists(), "no pepper made");
        let a = load_or_create_pepper(&path, &data, false).unwrap();
        let b = load_or_create_pepper(&path, &data, true).unwrap();
        assert_eq!(a.0, b.0, "an existing pepper loads with staff");
    }

    #[test]
    fn pepper_refused_with_loose_permissions() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("pepper");
        fs::write(&path, [5u8; PEPPER_LEN]).unwrap();
        for mode in [0o640, 0o604, 0o644, 0o660] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let e = load_or_create_pepper(&path, &d.path().join("data"), false).unwrap_err();
            assert!(
                matches!(e, PepperError::Permissions { mode: m, .. } if m == mode),
                "{e}"
            );
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(
            load_or_create_pepper(&path, &d.path().join("data"), false)
                .unwrap()
                .0,
            [5; PEPPER_LEN]
        );
    }

    #[test]
    fn pepper_refused_with_wrong_size_or_not_a_file() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        let path = d.path().join("pepper");
        fs::write(&path, [5u8; 31]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let e = load_or_create_pepper(&path, &data, false).unwrap_err();
        assert!(matches!(e, PepperError::WrongSize { len: 31, .. }), "{e}");
        let dir = d.path().join("adir");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(load_or_create_pepper(&dir, &data, false).is_err());
    }

    #[test]
    fn pepper_refused_inside_data_dir() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        fs::create_dir(&data).unwrap();
        // Directly, through `..`, and through a symlink into it; before and after creation.
        let direct = data.join("pepper");
        let e = load_or_create_pepper(&direct, &data, false).unwrap_err();
        assert!(matches!(e, PepperError::InsideDataDir { .. }), "{e}");
        assert!(!direct.exists(), "nothing created");
        let dotted = d.path().join("x/../data/sub/pepper");
        assert!(matches!(
            load_or_create_pepper(&dotted, &data, false),
            Err(PepperError::InsideDataDir { .. })
        ));
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&data, &link).unwrap();
        assert!(matches!(
            load_or_create_pepper(&link.join("pepper"), &data, false),
            Err(PepperError::InsideDataDir { .. })
        ));
        // The data directory named through a relative path that does not exist yet.
        let fresh = d.path().join("fresh");
        assert!(matches!(
            load_or_create_pepper(&fresh.join("p"), &fresh, false),
            Err(PepperError::InsideDataDir { .. })
        ));
        // Beside it is fine.
        assert!(load_or_create_pepper(&d.path().join("data.pepper"), &data, false).is_ok());
    }

    #[test]
    fn policy_lists_every_problem() {
        let p = PasswordPolicy::default();
        let v = p.check("abc", "alice").unwrap_err();
        assert!(
            v.problems
                .iter()
                .any(|s| s.contains("at least 12 are needed")),
            "{v}"
        );
        assert!(
            v.problems.iter().any(|s| s.contains("character classes")),
            "{v}"
        );
        assert!(v.problems.iter().any(|s| s.contains("too easy")), "{v}");
        assert_eq!(v.strength.score, 0);

        let v = p.check("alice-Password-1", "alice").unwrap_err();
        assert!(v.problems.iter().any(|s| s.contains("username")), "{v}");

        // Long and varied but a dictionary pattern: classes and length pass, strength fails.
        let v = p.check("Password1234!", "bob").unwrap_err();
        assert_eq!(v.problems.len(), 1, "{v}");
        assert!(v.problems[0].contains("too easy"), "{v}");
        assert!(v.strength.score < 3);
    }

    #[test]
    fn policy_accepts_a_good_password_with_its_strength() {
        let p = PasswordPolicy::default();
        let s = p.check("Tr4m-Lagoon-Quartz-91", "alice").unwrap();
        assert!(s.score >= 3, "{s:?}");
        // min_strength 0 and fewer classes relax it.
        let lax = PasswordPolicy {
            min_length: 8,
            min_classes: 1,
            min_strength: 0,
            max_age_days: 0,
        };
        assert!(lax.check("aaaaaaaa", "bob").is_ok());
        assert!(lax.problems().is_empty());
        assert!(
            !PasswordPolicy {
                min_length: 4,
                ..lax
            }
            .problems()
            .is_empty()
        );
    }

    #[test]
    fn expiry() {
        let never = PasswordPolicy::default();
        assert!(!never.expired(0, u64::MAX / 2));
        let p = PasswordPolicy {
            max_age_days: 90,
            ..never
        };
        let day = 86_400_000;
        assert!(!p.expired(1000, 1000 + 90 * day - 1));
        assert!(p.expired(1000, 1000 + 90 * day));
    }
}
