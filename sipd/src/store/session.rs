//! Management sessions, keyed by the SHA-256 of their bearer token: the token itself is
//! shown once at login and never stored, so a copy of the store yields no usable session.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::record::decode;
use super::{Id, Record, Store, StoreError, T, Tx, TxResult};

/// SHA-256 of a session token.
pub type TokenHash = [u8; 32];

/// What a session may do beyond its user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum SessionScope {
    /// Whatever the role allows.
    #[default]
    Full,
    /// Only what must happen before the user may work: enrol a TOTP factor (an admin
    /// without one), change the password (expired, or set by an admin). Logout and
    /// "who am I" always work.
    Setup {
        /// The user is an admin with no TOTP factor yet and must enrol one.
        enrol_totp: bool,
        /// The user must change the password before anything else.
        change_password: bool,
    },
}

impl SessionScope {
    /// `Setup` with nothing left to do is `Full`.
    pub fn setup(enrol_totp: bool, change_password: bool) -> SessionScope {
        if enrol_totp || change_password {
            SessionScope::Setup {
                enrol_totp,
                change_password,
            }
        } else {
            SessionScope::Full
        }
    }
}

/// A management session as stored: whose it is, when it ends and what it may do. Written at
/// login, checked on every API request, removed at logout, expiry or revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Hex SHA-256 of the token, compared in constant time after the keyed lookup.
    pub token_sha256: String,
    /// The staff user the session acts as.
    pub staff_id: Id,
    /// When the login happened (Unix ms).
    pub created_ms: u64,
    /// When the session stops working (Unix ms): the login time plus the configured session
    /// lifetime, never extended.
    pub expires_ms: u64,
    /// Where the login came from.
    pub source_ip: IpAddr,
    /// Updated at most once a minute by `authorize` (a write per request would be a flush
    /// per request).
    pub last_seen_ms: u64,
    /// The user's `session_epoch` when the session was made; a different one is revoked.
    pub epoch: u64,
    /// What the session may do (a setup-only session until TOTP enrolment or a password change
    /// is done); `Full` for records from before scopes existed.
    #[serde(default)]
    pub scope: SessionScope,
}

impl Record for SessionRecord {
    const KIND: &'static str = "session";
    const VERSION: u32 = 1;
}

impl SessionRecord {
    /// Constant-time check that this record belongs to `hash`.
    pub fn matches(&self, hash: &TokenHash) -> bool {
        let mine = token_hash_hex(hash);
        bool::from(mine.as_bytes().ct_eq(self.token_sha256.as_bytes()))
    }
}

/// Lower-case hex of a token hash: the form [`SessionRecord::token_sha256`] stores.
pub fn token_hash_hex(b: &TokenHash) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Tx<'_> {
    /// The session whose token hashes to `hash`, as this transaction sees it.
    pub fn session(&self, hash: &TokenHash) -> TxResult<Option<SessionRecord>> {
        self.get(T::Sessions, hash)
    }

    /// Stores (or replaces) the session keyed by `hash` in this transaction.
    pub fn put_session(&self, hash: &TokenHash, s: &SessionRecord) -> TxResult<()> {
        self.put(T::Sessions, hash, s)
    }

    /// Removes a session; returns whether it existed.
    pub fn remove_session(&self, hash: &TokenHash) -> TxResult<bool> {
        Ok(self.tree(T::Sessions).remove(&hash[..])?.is_some())
    }
}

impl Store {
    /// The session whose token hashes to `hash`; the caller still checks expiry, epoch and
    /// [`SessionRecord::matches`].
    pub fn session(&self, hash: &TokenHash) -> Result<Option<SessionRecord>, StoreError> {
        self.get(T::Sessions, hash)
    }

    /// Stores (or replaces) the session keyed by `hash`, durably.
    pub fn put_session(&self, hash: &TokenHash, s: &SessionRecord) -> Result<(), StoreError> {
        self.write(|tx| tx.put_session(hash, s))
    }

    /// Revokes one session; returns whether it existed.
    pub fn remove_session(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        self.write(|tx| tx.remove_session(hash))
    }

    /// Every session with its key; unreadable ones are skipped (and logged).
    pub fn sessions(&self) -> Result<Vec<(TokenHash, SessionRecord)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tree(T::Sessions).iter() {
            let (k, v) = kv?;
            let Ok(key) = <TokenHash>::try_from(&k[..]) else {
                continue;
            };
            match decode::<SessionRecord>(&k, &v) {
                Ok(s) => out.push((key, s)),
                Err(e) => tracing::warn!(error = %e, "unreadable session skipped"),
            }
        }
        Ok(out)
    }

    /// Removes the records of every session of `staff_id`; returns how many. (Bumping the
    /// user's `session_epoch` is what revokes them atomically; this is the clean-up.)
    pub fn remove_sessions_of(&self, staff_id: Id) -> Result<usize, StoreError> {
        self.remove_sessions_where(|s| s.staff_id == staff_id)
    }

    /// Removes sessions that expired at or before `now_ms`; returns how many.
    pub fn expire_sessions(&self, now_ms: u64) -> Result<usize, StoreError> {
        self.remove_sessions_where(|s| s.expires_ms <= now_ms)
    }

    fn remove_sessions_where(
        &self,
        pred: impl Fn(&SessionRecord) -> bool,
    ) -> Result<usize, StoreError> {
        let doomed: Vec<TokenHash> = self
            .sessions()?
            .into_iter()
            .filter(|(_, s)| pred(s))
            .map(|(k, _)| k)
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        self.write(|tx| {
            for k in &doomed {
                tx.remove_session(k)?;
            }
            Ok(())
        })?;
        Ok(doomed.len())
    }
}
