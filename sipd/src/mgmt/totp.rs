//! TOTP second factor (RFC 6238): HMAC-SHA-1, 6 digits, 30-second steps, ±1 step of clock
//! skew, and no replay: a code is accepted only for a step later than the last one accepted
//! for that user (the caller stores the step this returns).
//!
//! SHA-1 because it is what every authenticator app implements (some silently use SHA-1
//! when told SHA-256); HMAC-SHA-1 is not weakened by SHA-1 collisions.

use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Builder, Secret, Totp};

/// The issuer shown in authenticator apps.
pub const ISSUER: &str = "XDP SBC";
/// Digits in a code.
pub const DIGITS: u8 = 6;
/// Seconds each code is valid for (one time step).
pub const STEP_SECS: u64 = 30;
/// Steps either side of the current one that are accepted.
pub const SKEW: u64 = 1;
/// Bytes of a new secret (160 bits, RFC 4226's recommendation).
pub const SECRET_LEN: usize = 20;

/// Why a TOTP code was refused or a secret could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    /// Not [`DIGITS`] ASCII digits once spaces are removed (checked before any HMAC work).
    #[error("the code must be {DIGITS} digits")]
    Malformed,
    /// No step within [`SKEW`] of now gives this code.
    #[error("wrong code")]
    Invalid,
    /// The code's step is not later than the last one accepted for this user.
    #[error("code already used (wait for the next one)")]
    Replayed,
    /// The secret could not be made (no randomness), the stored one does not decode, or the
    /// enrolment URI could not be drawn as a QR code.
    #[error("TOTP secret unusable: {0}")]
    Secret(String),
}

/// A new random secret, base32 as stored in `TotpState::secret`.
pub fn generate_secret() -> Result<String, TotpError> {
    let mut b = [0u8; SECRET_LEN];
    getrandom::fill(&mut b).map_err(|e| TotpError::Secret(e.to_string()))?;
    Ok(Secret::from(b.to_vec()).to_base32())
}

fn decode(secret_b32: &str) -> Result<Vec<u8>, TotpError> {
    Secret::try_from_base32(secret_b32)
        .map(|s| s.as_bytes().to_vec())
        .map_err(|e| TotpError::Secret(e.to_string()))
}

fn totp(secret: Vec<u8>, digits: u8, account: &str) -> Result<Totp, TotpError> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(digits)
        .with_skew(SKEW as u16)
        .with_step_duration(STEP_SECS)
        .with_secret(secret)
        .with_issuer(Some(ISSUER))
        .with_account_name(account)
        .build()
        .map_err(|e| TotpError::Secret(e.to_string()))
}

/// The code for raw `secret` at `unix_secs` with `digits` digits (6 for staff; 8 for the
/// RFC's test vectors).
pub fn code_at(secret: &[u8], unix_secs: u64, digits: u8) -> Result<String, TotpError> {
    Ok(totp(secret.to_vec(), digits, "x")?
        .generate(unix_secs)
        .to_string())
}

/// The time step of `unix_secs`.
pub fn step_of(unix_secs: u64) -> u64 {
    unix_secs / STEP_SECS
}

/// `otpauth://totp/XDP%20SBC:<username>?secret=…&issuer=XDP%20SBC` for an authenticator app.
pub fn provisioning_uri(secret_b32: &str, username: &str) -> Result<String, TotpError> {
    totp(decode(secret_b32)?, DIGITS, username)?
        .to_url()
        .map_err(|e| TotpError::Secret(e.to_string()))
}

/// `text` as a QR code of Unicode half blocks (two modules a character), with a quiet zone,
/// drawn for a dark terminal background: light modules are printed as blocks.
pub fn qr_terminal(text: &str) -> Result<String, TotpError> {
    let code = QrCode::new(text.as_bytes()).map_err(|e| TotpError::Secret(e.to_string()))?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// Checks `code` against `secret_b32` at `unix_secs`, allowing ±1 step. Accepts only a
/// step above `last_step` and returns it (store it as the new `last_step`). Every candidate
/// step is computed and compared in constant time, whatever matches.
pub fn verify(
    secret_b32: &str,
    code: &str,
    unix_secs: u64,
    last_step: u64,
) -> Result<u64, TotpError> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != usize::from(DIGITS) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TotpError::Malformed);
    }
    let t = totp(decode(secret_b32)?, DIGITS, "x")?;
    let now = step_of(unix_secs);
    let mut fresh: Option<u64> = None;
    let mut replayed = false;
    for step in now.saturating_sub(SKEW)..=now + SKEW {
        let expected = t.generate(step * STEP_SECS).to_string();
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            if step > last_step {
                // The earliest fresh step: a later one stays usable for the next login.
                fresh = fresh.or(Some(step));
            } else {
                replayed = true;
            }
        }
    }
    match (fresh, replayed) {
        (Some(s), _) => Ok(s),
        (None, true) => Err(TotpError::Replayed),
        (None, false) => Err(TotpError::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    /// RFC 6238 Appendix B, SHA-1 column.
    const VECTORS: [(u64, &str); 6] = [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ];

    #[test]
    fn rfc6238_appendix_b_sha1() {
        for (t, want) in VECTORS {
            assert_eq!(code_at(RFC_SECRET, t, 8).unwrap(), want, "T={t}");
            // Six digits are the same truncation mod 10^6.
            assert_eq!(code_at(RFC_SECRET, t, 6).unwrap(), &want[2..], "T={t}");
        }
    }

    fn rfc_b32() -> String {
        Secret::from(RFC_SECRET.to_vec()).to_base32()
    }

    #[test]
    fn verify_with_skew_and_no_replay() {
        let s = rfc_b32();
        // 1111111109 is step 37037036; its 6-digit code is 081804.
        let t = 1_111_111_109;
        let step = step_of(t);
        assert_eq!(verify(&s, "081804", t, 0), Ok(step));
        assert_eq!(verify(&s, "081 804", t, 0), Ok(step), "spaces ignored");
        // One step either way is accepted, two are not.
        assert_eq!(verify(&s, "081804", t + 30, 0), Ok(step));
        assert_eq!(verify(&s, "081804", t - 30, 0), Ok(step));
        assert_eq!(verify(&s, "081804", t + 60, 0), Err(TotpError::Invalid));
        assert_eq!(verify(&s, "081804", t - 60, 0), Err(TotpError::Invalid));
        // Replay: the same step again, or an older one, is refused.
        assert_eq!(verify(&s, "081804", t, step), Err(TotpError::Replayed));
        assert_eq!(
            verify(&s, "081804", t + 30, step + 1),
            Err(TotpError::Replayed)
        );
        // The next step's code is fine after it.
        let next = code_at(RFC_SECRET, t + 30, 6).unwrap();
        assert_eq!(verify(&s, &next, t + 30, step), Ok(step + 1));
    }

    #[test]
    fn malformed_and_wrong_codes() {
        let s = rfc_b32();
        for bad in ["", "12345", "1234567", "12345a", "０８１８０４"] {
            assert_eq!(
                verify(&s, bad, 1_111_111_109, 0),
                Err(TotpError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            verify(&s, "000000", 1_111_111_109, 0),
            Err(TotpError::Invalid)
        );
        assert!(matches!(
            verify("not base32!", "123456", 0, 0),
            Err(TotpError::Secret(_))
        ));
    }

    #[test]
    fn secrets_uri_and_qr() {
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        assert_ne!(a, b);
        assert_eq!(decode(&a).unwrap().len(), SECRET_LEN);
        let uri = provisioning_uri(&a, "alice").unwrap();
        assert!(
            uri.starts_with("otpauth://totp/XDP%20SBC:alice?secret="),
            "{uri}"
        );
        assert!(uri.contains(&format!("secret={a}")), "{uri}");
        assert!(uri.contains("issuer=XDP%20SBC"), "{uri}");
        let qr = qr_terminal(&uri).unwrap();
        let lines: Vec<&str> = qr.lines().collect();
        assert!(lines.len() > 10);
        let width = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == width));
        assert!(
            qr.chars()
                .all(|c| matches!(c, ' ' | '\n' | '\u{2580}' | '\u{2584}' | '\u{2588}'))
        );
        // The quiet zone is light, printed as full blocks on a dark terminal.
        assert!(lines[0].chars().all(|c| c == '\u{2588}'));
    }
}
