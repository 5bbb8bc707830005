//! Staff identity and audit for the management plane, sans-IO: no HTTP here, only the
//! decisions (who may log in, is this token good, may this role do that) over the store,
//! with the time passed in so tests run on a fake clock.
//!
//! - [`password`]: Argon2id with per-password salt and a pepper file outside the data
//!   directory; the password policy and zxcvbn strength estimate.
//! - [`totp`]: RFC 6238 codes, enrolment URI and terminal QR, replay refusal.
//! - [`email_code`]: email one-time codes, the second factor that roles allowed by policy
//!   may use instead of TOTP.
//! - [`backoff`]: doubling lock-out per username and per source after failed logins.
//! - [`role`]: `Role::can(Action)` and what a setup-only session may do.
//! - [`login`]: [`StaffAuth::login`], [`StaffAuth::authorize`], [`StaffAuth::logout`].
//! - [`staff`]: staff management (create, update, delete, passwords, TOTP enrolment,
//!   revocation, `sipd init`), each change with exactly one audit entry in the same
//!   transaction.
//! - [`tty`]: reading a password from the terminal without echo (`sipd init`).
//!
//! The records live in [`crate::store`]: `Staff`, `SessionRecord`, `AuditEntry`.

pub mod backoff;
pub mod email_code;
pub mod login;
pub mod password;
pub mod role;
pub mod staff;
pub mod template;
#[cfg(test)]
mod tests;
pub mod totp;
pub mod tty;

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use base64ct::{Base64UrlUnpadded, Encoding};
use sha2::{Digest, Sha256};

pub use backoff::{Backoff, BackoffConfig, Locked};
pub use email_code::{EmailCodeConfig, EmailCodes, MailError, Mailer};
pub use login::{Authorized, AuthzError, LoginAttempt, LoginError, Session, SessionInfo};
pub use password::{
    Argon2Costs, PasswordError, PasswordHasher, PasswordPolicy, Pepper, PepperError,
    PolicyViolation, Seasoning, Strength, load_or_create_pepper, seasoning,
};
pub use role::{AccountFrom, Action, Refused, Scope, Target, Visible};
pub use staff::{Actor, Enrolment, NewStaff, StaffError, StaffUpdate, StaffView};
pub use template::LoginRules;

use crate::store::{HashFormat, Staff, TokenHash};

/// Bytes of randomness in a session token.
pub const TOKEN_BYTES: usize = 32;

/// Unix milliseconds of `t`, as the store dates everything.
pub use sipd_core::records::unix_ms;

/// A new session token (base64url, 43 characters) and the hash the store keys it by.
pub fn new_token() -> Result<(String, TokenHash), getrandom::Error> {
    let mut raw = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut raw)?;
    Ok((Base64UrlUnpadded::encode_string(&raw), hash_raw(&raw)))
}

/// The store key of `token`; `None` if it is not a token this server could have issued
/// (so garbage never reaches the store).
pub fn token_hash(token: &str) -> Option<TokenHash> {
    let token = token.trim();
    if token.len() != 43 {
        return None;
    }
    let mut raw = [0u8; TOKEN_BYTES];
    let n = Base64UrlUnpadded::decode(token, &mut raw).ok()?.len();
    (n == TOKEN_BYTES).then(|| hash_raw(&raw))
}

fn hash_raw(raw: &[u8; TOKEN_BYTES]) -> TokenHash {
    Sha256::digest(raw).into()
}

/// The staff-authentication state of one sipd: the hasher (with the pepper), the password
/// policy, the failed-login back-off (in memory: a restart forgets it, which an attacker
/// cannot trigger) and the session lifetime.
#[derive(Debug)]
pub struct StaffAuth {
    /// Hashes and checks staff passwords (Argon2id with the pepper).
    pub hasher: PasswordHasher,
    /// What a new staff password must meet.
    pub policy: PasswordPolicy,
    /// How long a session lasts from login, however much it is used.
    pub session_ttl: Duration,
    /// Sessions unused this long end (`None`: only the TTL).
    pub session_idle: Option<Duration>,
    /// Email one-time codes: who may use them, the pending ones, the mailer.
    pub email: EmailCodes,
    backoff: Mutex<Backoff>,
}

impl StaffAuth {
    /// The state from its parts, with no idle timeout (add one with
    /// [`Self::with_idle_timeout`]); `sipd` builds it from `[management]` with
    /// [`StaffAuth::from_config`].
    pub fn new(
        hasher: PasswordHasher,
        policy: PasswordPolicy,
        backoff: BackoffConfig,
        session_ttl: Duration,
    ) -> StaffAuth {
        StaffAuth {
            hasher,
            policy,
            session_ttl,
            session_idle: None,
            email: EmailCodes::new(
                EmailCodeConfig::default(),
                std::sync::Arc::new(email_code::NoMailer),
            ),
            backoff: Mutex::new(Backoff::new(backoff)),
        }
    }

    /// Email codes per `codes` (its policy and mailer) instead of the default policy with no
    /// mailer.
    pub fn with_email_codes(mut self, codes: EmailCodes) -> StaffAuth {
        self.email = codes;
        self
    }

    /// Whether `password` is `s`'s, with the seasoning its hash format says (none for hashes
    /// stored before seasoning).
    pub fn verify_staff(&self, s: &Staff, password: &str) -> Result<bool, PasswordError> {
        let seas = match s.hash_format {
            HashFormat::Plain => None,
            HashFormat::Seasoned => Some(seasoning(&s.username, s.email.as_deref())),
        };
        self.hasher
            .verify_seasoned(password, &s.password_hash, seas.as_ref())
    }

    /// A new hash of `password` for the user named `username` with `email`, seasoned
    /// with them (store it with `HashFormat::Seasoned`).
    pub fn hash_for(
        &self,
        username: &str,
        email: Option<&str>,
        password: &str,
    ) -> Result<String, PasswordError> {
        self.hasher
            .hash_seasoned(password, Some(&seasoning(username, email)))
    }

    /// Ends sessions unused for `idle` (exact to about a minute: use is recorded once a
    /// minute at most).
    pub fn with_idle_timeout(mut self, idle: Option<Duration>) -> StaffAuth {
        self.session_idle = idle;
        self
    }

    pub(crate) fn backoff(&self) -> std::sync::MutexGuard<'_, Backoff> {
        // A panic while holding it leaves a consistent map; carry on.
        self.backoff.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The name a user's actions are audited under: the username, and for a customer user its
/// account too (`alice (account #7)`), so an entry says whose customer acted.
pub fn audit_name(s: &crate::store::Staff) -> String {
    match s.customer_of() {
        Some(a) => format!("{} (account #{a})", s.username),
        None => s.username.clone(),
    }
}

/// Sources compared for allowed hosts and recorded in sessions.
pub(crate) fn source(ip: IpAddr) -> IpAddr {
    crate::store::canonical_ip(ip)
}
