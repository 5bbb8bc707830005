//! Stateless, unforgeable nonces: `hex(serial ‖ random ‖ HMAC-SHA256(secret, serial ‖ random ‖ realm)[..16])`.
//!
//! Nothing is stored per challenge, so a flood of unauthenticated INVITEs costs no memory.
//! The serial is the issue time in nanoseconds, forced strictly increasing in this process:
//! it dates the nonce for expiry and gives the replay tracker a total order (see `replay.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::algorithm::{from_hex, to_hex};

const SERIAL_LEN: usize = 8;
const RANDOM_LEN: usize = 8;
/// 128 bits of MAC is far beyond what an online forger can try.
const TAG_LEN: usize = 16;
const RAW_LEN: usize = SERIAL_LEN + RANDOM_LEN + TAG_LEN;
/// Length of a nonce as sent.
pub const NONCE_LEN: usize = RAW_LEN * 2;

/// A nonce this server issued and that is still bound to the realm it was issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenedNonce {
    /// Issue time, nanoseconds since the Unix epoch; unique per nonce issued by one process.
    pub serial: u64,
}

impl OpenedNonce {
    /// When the nonce was issued (its serial as a time).
    pub fn issued(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.serial)
    }

    /// Expired once older than `lifetime`. One from the future (a clock stepped back since it
    /// was issued) is treated as expired too, so the client simply gets a fresh one.
    pub fn is_expired(&self, now: SystemTime, lifetime: Duration) -> bool {
        match now.duration_since(self.issued()) {
            Ok(age) => age > lifetime,
            Err(_) => true,
        }
    }
}

/// Why a nonce was refused, or could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    /// Not a nonce of our format (length or hex).
    #[error("nonce is not one of ours (bad format)")]
    Malformed,
    /// Our format, but the MAC does not match this key and realm.
    #[error("nonce fails authentication (forged, altered, or from another realm or server)")]
    Forged,
    /// The OS gave no random bytes (for the key or a nonce).
    #[error("no randomness available from the operating system")]
    Rng,
}

/// The server secret. 32 random bytes; share it between instances behind one address so a
/// client may answer any of them.
pub struct NonceKey {
    secret: [u8; 32],
    last_serial: AtomicU64,
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(<secret>)")
    }
}

impl NonceKey {
    /// A key with this secret (from the store, shared by instances behind one address).
    pub fn new(secret: [u8; 32]) -> Self {
        NonceKey {
            secret,
            last_serial: AtomicU64::new(0),
        }
    }

    /// A key with a fresh random secret; fails only when the OS has no randomness.
    pub fn generate() -> Result<Self, NonceError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|_| NonceError::Rng)?;
        Ok(Self::new(secret))
    }

    fn tag(&self, serial_and_random: &[u8], realm: &str) -> [u8; TAG_LEN] {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(serial_and_random);
        mac.update(realm.as_bytes());
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// A fresh nonce for `realm`.
    pub fn issue(&self, realm: &str, now: SystemTime) -> Result<String, NonceError> {
        let now_ns = now
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let mut serial = now_ns;
        // Strictly increasing even when the clock is coarse or steps back.
        let _ = self
            .last_serial
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                serial = now_ns.max(last.saturating_add(1));
                Some(serial)
            });
        let mut raw = [0u8; RAW_LEN];
        raw[..SERIAL_LEN].copy_from_slice(&serial.to_be_bytes());
        crate::random::fill(&mut raw[SERIAL_LEN..SERIAL_LEN + RANDOM_LEN])
            .map_err(|_| NonceError::Rng)?;
        let tag = self.tag(&raw[..SERIAL_LEN + RANDOM_LEN], realm);
        raw[SERIAL_LEN + RANDOM_LEN..].copy_from_slice(&tag);
        Ok(to_hex(&raw))
    }

    /// Checks that `nonce` was issued by this key for `realm`. Says nothing about expiry.
    pub fn open(&self, realm: &str, nonce: &str) -> Result<OpenedNonce, NonceError> {
        if nonce.len() != NONCE_LEN {
            return Err(NonceError::Malformed);
        }
        let raw = from_hex(nonce).ok_or(NonceError::Malformed)?;
        let (body, tag) = raw.split_at(SERIAL_LEN + RANDOM_LEN);
        if !bool::from(self.tag(body, realm).ct_eq(tag)) {
            return Err(NonceError::Forged);
        }
        let mut serial = [0u8; SERIAL_LEN];
        serial.copy_from_slice(&body[..SERIAL_LEN]);
        Ok(OpenedNonce {
            serial: u64::from_be_bytes(serial),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn issue_open_round_trip_and_expiry() {
        let k = NonceKey::new([7; 32]);
        let n = k.issue("sbc", at(1_000)).unwrap();
        assert_eq!(n.len(), NONCE_LEN);
        let o = k.open("sbc", &n).unwrap();
        assert_eq!(o.issued(), at(1_000));
        let life = Duration::from_secs(300);
        assert!(!o.is_expired(at(1_300), life));
        assert!(o.is_expired(at(1_301), life));
        assert!(
            o.is_expired(at(999), life),
            "a nonce from the future is not accepted"
        );
    }

    #[test]
    fn serials_strictly_increase_and_nonces_differ() {
        let k = NonceKey::new([7; 32]);
        let a = k.issue("sbc", at(5)).unwrap();
        let b = k.issue("sbc", at(5)).unwrap();
        let c = k.issue("sbc", at(4)).unwrap();
        let s = |n: &str| k.open("sbc", n).unwrap().serial;
        assert!(s(&a) < s(&b) && s(&b) < s(&c));
        assert_ne!(a, b);
    }

    #[test]
    fn refuses_foreign_altered_and_malformed() {
        let k = NonceKey::new([7; 32]);
        let other = NonceKey::new([8; 32]);
        let n = k.issue("sbc", at(5)).unwrap();
        assert_eq!(other.open("sbc", &n), Err(NonceError::Forged));
        assert_eq!(k.open("other-realm", &n), Err(NonceError::Forged));
        // Moving the timestamp forward to extend a nonce's life breaks the tag.
        let mut bumped = n.clone().into_bytes();
        bumped[15] = if bumped[15] == b'0' { b'1' } else { b'0' };
        let bumped = String::from_utf8(bumped).unwrap();
        assert_eq!(k.open("sbc", &bumped), Err(NonceError::Forged));
        assert_eq!(k.open("sbc", "short"), Err(NonceError::Malformed));
        assert_eq!(
            k.open("sbc", &"z".repeat(NONCE_LEN)),
            Err(NonceError::Malformed)
        );
        assert_eq!(
            k.open("sbc", &"é".repeat(NONCE_LEN / 2)),
            Err(NonceError::Malformed)
        );
    }
}
