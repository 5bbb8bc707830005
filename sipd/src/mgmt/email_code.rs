//! Email one-time codes: a second factor sent to the user's address at login, as an
//! alternative to TOTP for the roles `[management.email_codes] roles` allows (not admins by
//! default: their TOTP stays mandatory).
//!
//! - A code is `digits` decimal digits from the OS CSPRNG (rejection sampling: no modulo
//!   bias), valid `lifetime_secs`, single use (removed when it is used, and replaced when a
//!   new one is sent).
//! - It is kept in memory only, as SHA-256 of a random salt and the code: a memory dump
//!   does not show it, and a restart forgets it (the user asks for another).
//! - At most `max_sends` codes per user per `send_window_secs`, so a password holder cannot
//!   flood a mailbox; a wrong code counts towards the login back-off like a wrong TOTP code,
//!   and after `max_attempts` wrong codes the code is dropped.
//! - The mail goes out through a [`Mailer`] (SMTP in `crate::mail`), whose failures are
//!   kept for the `smtp_failed` alert.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::{Id, Role};

/// `[management.email_codes]`: who may use email codes and how they behave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailCodeConfig {
    /// Roles whose users may choose email codes instead of TOTP. Admins are not in the
    /// default: an admin must enrol TOTP unless `admin` is listed here.
    pub roles: Vec<Role>,
    /// How long a code is valid, in seconds (30..=3600).
    pub lifetime_secs: u64,
    /// Digits per code (6..=10).
    pub digits: u8,
    /// Codes sent per user per `send_window_secs` at most (1..=100).
    pub max_sends: u32,
    /// The window of `max_sends`, in seconds (60..=86400).
    pub send_window_secs: u64,
    /// Wrong codes before the code is dropped (1..=20); each also counts towards the back-off.
    pub max_attempts: u32,
    /// Wrong codes per user in any 24 hours, whatever the codes (1..=1000): past it no code
    /// is sent until the oldest wrong guess is a day old, so guessing a 6-digit code costs an
    /// attacker with the password days, not the `max_attempts` of each new code.
    pub max_wrong_per_day: u32,
}

impl Default for EmailCodeConfig {
    fn default() -> Self {
        EmailCodeConfig {
            roles: vec![Role::Operator, Role::ReadOnly, Role::Customer],
            lifetime_secs: 300,
            digits: 6,
            max_sends: 3,
            send_window_secs: 900,
            max_attempts: 5,
            max_wrong_per_day: 20,
        }
    }
}

impl EmailCodeConfig {
    /// Problems with these settings, for `sipd check-config`.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut range = |name: &str, v: u64, lo: u64, hi: u64| {
            if !(lo..=hi).contains(&v) {
                out.push(format!("{name} {v} is outside {lo}..={hi}"));
            }
        };
        range("lifetime_secs", self.lifetime_secs, 30, 3600);
        range("digits", self.digits.into(), 6, 10);
        range("max_sends", self.max_sends.into(), 1, 100);
        range("send_window_secs", self.send_window_secs, 60, 86_400);
        range("max_attempts", self.max_attempts.into(), 1, 20);
        range("max_wrong_per_day", self.max_wrong_per_day.into(), 1, 1000);
        out
    }
}

/// Why a mail could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// `[smtp] host` is not set.
    #[error("no SMTP server is configured ([smtp] host)")]
    NotConfigured,
    /// The server did not finish within `[smtp] timeout_secs`.
    #[error("the SMTP server did not answer within {0} s")]
    Timeout(u64),
    /// A recipient or sender address lettre refuses.
    #[error("bad mail address: {0}")]
    Address(String),
    /// Connection, TLS, authentication or the server refused the message.
    #[error("SMTP: {0}")]
    Smtp(String),
}

/// Sends a plain-text mail; blocking (called on the blocking threads the logins run on).
pub trait Mailer: Send + Sync + std::fmt::Debug {
    /// Sends `body` to `to`; returns once the server accepted it or failed.
    fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), MailError>;
}

/// The mailer when `[smtp]` is not configured: every send fails with `NotConfigured`.
#[derive(Debug)]
pub struct NoMailer;

impl Mailer for NoMailer {
    fn send(&self, _: &str, _: &str, _: &str) -> Result<(), MailError> {
        Err(MailError::NotConfigured)
    }
}

/// Why a code was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// `max_sends` codes went to this user within the window.
    #[error("too many codes sent: try again in {} s", retry_after.as_secs())]
    RateLimited {
        /// Until the oldest send of the window leaves it.
        retry_after: Duration,
    },
    /// The random source failed.
    #[error("no randomness for the code: {0}")]
    Random(String),
    /// The mail could not be sent (the code is dropped).
    #[error(transparent)]
    Mail(#[from] MailError),
}

/// Why a code was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    /// No code is pending for the user (never sent, already used, dropped, or sipd restarted).
    #[error("no email code is pending")]
    NoCode,
    /// The code's lifetime passed (it is dropped).
    #[error("the email code expired")]
    Expired,
    /// Wrong digits.
    #[error("wrong email code")]
    Invalid,
}

const DAY_MS: u64 = 86_400_000;

struct Pending {
    salt: [u8; 16],
    hash: [u8; 32],
    expires_ms: u64,
    wrong: u32,
}

#[derive(Default)]
struct PerUser {
    pending: Option<Pending>,
    /// Unix ms of the sends within the window.
    sends: VecDeque<u64>,
    /// Unix ms of the wrong codes within the last day (at most `max_wrong_per_day`).
    wrong: VecDeque<u64>,
}

/// The pending email codes of this sipd, and the mailer that sends them.
pub struct EmailCodes {
    cfg: EmailCodeConfig,
    mailer: Arc<dyn Mailer>,
    users: Mutex<HashMap<Id, PerUser>>,
    /// The last send's failure (Unix ms, what), cleared by a success: the `smtp_failed` alert.
    failure: Mutex<Option<(u64, String)>>,
}

impl std::fmt::Debug for EmailCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailCodes")
            .field("cfg", &self.cfg)
            .field("mailer", &self.mailer)
            .finish_non_exhaustive()
    }
}

fn digest(salt: &[u8; 16], code: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(code.as_bytes());
    h.finalize().into()
}

/// `digits` uniform decimal digits from the OS CSPRNG.
fn random_code(digits: u8) -> Result<String, getrandom::Error> {
    let mut out = String::with_capacity(digits.into());
    while out.len() < usize::from(digits) {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b)?;
        // 250 = 25 × 10: bytes from 250 up would favour 0-5; skip them.
        out.extend(
            b.iter()
                .filter(|&&x| x < 250)
                .map(|x| char::from(b'0' + x % 10))
                .take(usize::from(digits) - out.len()),
        );
    }
    Ok(out)
}

impl EmailCodes {
    /// Codes per `cfg`, mailed through `mailer`.
    pub fn new(cfg: EmailCodeConfig, mailer: Arc<dyn Mailer>) -> EmailCodes {
        EmailCodes {
            cfg,
            mailer,
            users: Mutex::new(HashMap::new()),
            failure: Mutex::new(None),
        }
    }

    /// The settings.
    pub fn config(&self) -> &EmailCodeConfig {
        &self.cfg
    }

    /// Whether users of `role` may use email codes.
    pub fn allowed(&self, role: Role) -> bool {
        self.cfg.roles.contains(&role)
    }

    /// The mailer.
    pub fn mailer(&self) -> &Arc<dyn Mailer> {
        &self.mailer
    }

    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<Id, PerUser>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last send failure (Unix ms, what) when no send succeeded since.
    pub fn last_failure(&self) -> Option<(u64, String)> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes a new code for user `id` (replacing a pending one) and mails it to `to`.
    /// Refused past `max_sends` in the window; a failed mail drops the code (and still counts
    /// as a send, so a broken server cannot be hammered through logins).
    pub fn send(
        &self,
        id: Id,
        username: &str,
        to: &str,
        now_ms: u64,
    ) -> Result<Duration, SendError> {
        let code = random_code(self.cfg.digits).map_err(|e| SendError::Random(e.to_string()))?;
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| SendError::Random(e.to_string()))?;
        let lifetime = Duration::from_secs(self.cfg.lifetime_secs);
        {
            let mut users = self.users();
            let u = users.entry(id).or_default();
            let window_ms = self.cfg.send_window_secs * 1000;
            while u
                .sends
                .front()
                .is_some_and(|&t| now_ms.saturating_sub(t) >= window_ms)
            {
                u.sends.pop_front();
            }
            if u.sends.len() >= self.cfg.max_sends as usize {
                let oldest = u.sends.front().copied().unwrap_or(now_ms);
                let left = (oldest + window_ms).saturating_sub(now_ms);
                return Err(SendError::RateLimited {
                    retry_after: Duration::from_millis(left.max(1000)),
                });
            }
            while u
                .wrong
                .front()
                .is_some_and(|&t| now_ms.saturating_sub(t) >= DAY_MS)
            {
                u.wrong.pop_front();
            }
            if u.wrong.len() >= self.cfg.max_wrong_per_day as usize {
                let oldest = u.wrong.front().copied().unwrap_or(now_ms);
                let left = (oldest + DAY_MS).saturating_sub(now_ms);
                return Err(SendError::RateLimited {
                    retry_after: Duration::from_millis(left.max(1000)),
                });
            }
            u.sends.push_back(now_ms);
            u.pending = Some(Pending {
                salt,
                hash: digest(&salt, &code),
                expires_ms: now_ms + lifetime.as_millis() as u64,
                wrong: 0,
            });
        }
        let body = format!(
            "Your sign-in code for the SBC management ({username}) is:\n\n    {code}\n\n\
             It is valid for {} minutes and can be used once. If you did not just sign in, \
             someone knows your password: change it and tell your administrator.\n",
            lifetime.as_secs().div_ceil(60)
        );
        match self.mailer.send(to, "Your SBC sign-in code", &body) {
            Ok(()) => {
                *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Ok(lifetime)
            }
            Err(e) => {
                if let Some(u) = self.users().get_mut(&id) {
                    u.pending = None;
                }
                *self.failure.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((now_ms, e.to_string()));
                Err(e.into())
            }
        }
    }

    /// Checks `code` for user `id` at `now_ms`: right and in time, it is used up; wrong, it
    /// counts (and is dropped at `max_attempts`); expired, it is dropped.
    pub fn verify(&self, id: Id, code: &str, now_ms: u64) -> Result<(), CodeError> {
        let mut users = self.users();
        let Some(u) = users.get_mut(&id) else {
            return Err(CodeError::NoCode);
        };
        let Some(p) = u.pending.as_mut() else {
            return Err(CodeError::NoCode);
        };
        if now_ms >= p.expires_ms {
            u.pending = None;
            return Err(CodeError::Expired);
        }
        let code = code.trim();
        let ok = code.len() == usize::from(self.cfg.digits)
            && bool::from(digest(&p.salt, code).ct_eq(&p.hash));
        if ok {
            u.pending = None;
            return Ok(());
        }
        p.wrong += 1;
        if p.wrong >= self.cfg.max_attempts {
            u.pending = None;
        }
        u.wrong.push_back(now_ms);
        if u.wrong.len() >= self.cfg.max_wrong_per_day as usize {
            // The day's budget is spent: this code goes too, and `send` refuses new ones.
            u.pending = None;
        }
        Err(CodeError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps the last mail so the test can read the code.
    #[derive(Debug, Default)]
    pub(crate) struct Outbox(pub Mutex<Vec<(String, String)>>);

    impl Mailer for Outbox {
        fn send(&self, to: &str, _: &str, body: &str) -> Result<(), MailError> {
            self.0.lock().unwrap().push((to.into(), body.into()));
            Ok(())
        }
    }

    fn code_in(body: &str) -> String {
        body.split_whitespace()
            .find(|w| w.len() >= 6 && w.bytes().all(|b| b.is_ascii_digit()))
            .unwrap()
            .to_owned()
    }

    #[test]
    fn codes_are_single_use_expire_and_are_rate_limited() {
        let out = Arc::new(Outbox::default());
        let c = EmailCodes::new(EmailCodeConfig::default(), out.clone());
        c.send(7, "ann", "ann@example.net", 1000).unwrap();
        let code = code_in(&out.0.lock().unwrap()[0].1);
        assert_eq!(code.len(), 6);
        assert_eq!(c.verify(7, "000000x", 1001), Err(CodeError::Invalid));
        assert_eq!(c.verify(8, &code, 1001), Err(CodeError::NoCode));
        c.verify(7, &code, 1002).unwrap();
        assert_eq!(
            c.verify(7, &code, 1003),
            Err(CodeError::NoCode),
            "single use"
        );
        // Expired.
        c.send(7, "ann", "ann@example.net", 2000).unwrap();
        let code = code_in(&out.0.lock().unwrap()[1].1);
        assert_eq!(c.verify(7, &code, 2000 + 300_000), Err(CodeError::Expired));
        // Third send in the window is the last.
        c.send(7, "ann", "ann@example.net", 3000).unwrap();
        assert!(matches!(
            c.send(7, "ann", "ann@example.net", 4000),
            Err(SendError::RateLimited { .. })
        ));
        assert!(c.send(7, "ann", "ann@example.net", 1000 + 900_000).is_ok());
    }

    #[test]
    fn wrong_guesses_drop_the_code() {
        let out = Arc::new(Outbox::default());
        let c = EmailCodes::new(EmailCodeConfig::default(), out.clone());
        c.send(1, "ann", "ann@example.net", 0).unwrap();
        let code = code_in(&out.0.lock().unwrap()[0].1);
        let wrong = if code == "123456" { "654321" } else { "123456" };
        for _ in 0..5 {
            assert_eq!(c.verify(1, wrong, 1), Err(CodeError::Invalid));
        }
        assert_eq!(c.verify(1, &code, 2), Err(CodeError::NoCode));
    }

    #[test]
    fn wrong_codes_are_counted_per_user_across_codes() {
        let out = Arc::new(Outbox::default());
        let cfg = EmailCodeConfig {
            max_sends: 100,
            max_wrong_per_day: 7,
            ..EmailCodeConfig::default()
        };
        let c = EmailCodes::new(cfg, out.clone());
        // Each new code gets its own `max_attempts` (5), but the user only 7 a day in all.
        let mut wrong = 0;
        let mut t = 0;
        while c.send(1, "ann", "ann@example.net", t).is_ok() {
            let code = code_in(&out.0.lock().unwrap().last().unwrap().1);
            let bad = if code == "123456" { "654321" } else { "123456" };
            while c.verify(1, bad, t) == Err(CodeError::Invalid) {
                wrong += 1;
            }
            t += 1;
            assert!(t < 100, "sends never stopped");
        }
        assert_eq!(wrong, 7);
        assert!(matches!(
            c.send(1, "ann", "ann@example.net", t),
            Err(SendError::RateLimited { .. })
        ));
        // Another user is not affected; a day after the first wrong code, ann gets one again.
        assert!(c.send(2, "bob", "bob@example.net", t).is_ok());
        assert!(c.send(1, "ann", "ann@example.net", DAY_MS).is_ok());
    }

    #[test]
    fn a_dead_mailer_drops_the_code_and_is_remembered() {
        let c = EmailCodes::new(EmailCodeConfig::default(), Arc::new(NoMailer));
        assert!(matches!(
            c.send(1, "ann", "ann@example.net", 5),
            Err(SendError::Mail(MailError::NotConfigured))
        ));
        assert_eq!(c.verify(1, "123456", 6), Err(CodeError::NoCode));
        assert_eq!(c.last_failure().map(|f| f.0), Some(5));
    }

    #[test]
    fn random_codes_are_digits_of_the_length_asked() {
        for d in [6, 8, 10] {
            let c = random_code(d).unwrap();
            assert_eq!(c.len(), usize::from(d));
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
        }
        assert_ne!(random_code(10).unwrap(), random_code(10).unwrap());
    }
}
