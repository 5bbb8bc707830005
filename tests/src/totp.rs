//! TOTP (RFC 6238 over HMAC-SHA-1), for logging in as the admin `sipd init` makes: the secret
//! `init` prints (base32) and the code of the moment. Shared by the scenarios' harness and
//! the console benchmark.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, the TOTP clock.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Decodes RFC 4648 base32 (padding optional, any case); `None` on any other character.
pub fn b32_decode(s: &str) -> Option<Vec<u8>> {
    let mut bits = 0u64;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').chars() {
        let v = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".find(c.to_ascii_uppercase())? as u64;
        bits = (bits << 5) | v;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    Some(out)
}

/// The 6-digit TOTP code (30 s steps, SHA-1) of `secret` at `secs`.
pub fn totp(secret: &[u8], secs: u64) -> String {
    use hmac::{KeyInit, Mac};
    let mut h = hmac::Hmac::<sha1::Sha1>::new_from_slice(secret).expect("any key length");
    h.update(&(secs / 30).to_be_bytes());
    let mac = h.finalize().into_bytes();
    let off = (mac[19] & 0x0f) as usize;
    let n = u32::from_be_bytes([mac[off], mac[off + 1], mac[off + 2], mac[off + 3]]) & 0x7fff_ffff;
    format!("{:06}", n % 1_000_000)
}

/// The code of `secret` now.
pub fn totp_now(secret: &[u8]) -> String {
    totp(secret, now_secs())
}

/// The base32 TOTP secret in what `sipd init` printed ("… enter the secret XXXX."), if any.
pub fn init_secret(init_output: &str) -> Option<&str> {
    init_output
        .split("enter the secret ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .map(|s| s.trim_end_matches('.'))
}

/// `sipd -c config init` of an admin `admin` with `password` (written to a file in `dir`):
/// the TOTP secret it printed. Panics (with sipd's output) if that fails: for tests.
pub fn init_admin(sipd: &Path, config: &Path, dir: &Path, password: &str) -> Vec<u8> {
    let pw = dir.join("admin-pw");
    std::fs::write(&pw, format!("{password}\n")).expect("password file");
    let out = std::process::Command::new(sipd)
        .arg("-c")
        .arg(config)
        .args(["init", "--username", "admin", "--password-file"])
        .arg(&pw)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run sipd init");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sipd init: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret =
        init_secret(&text).unwrap_or_else(|| panic!("no TOTP secret in the init output:\n{text}"));
    b32_decode(secret).unwrap_or_else(|| panic!("TOTP secret not base32: {secret}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totp_matches_rfc_6238() {
        // RFC 6238 appendix B, SHA-1 (its 8-digit codes, last 6 digits here).
        let key = b"12345678901234567890";
        for (t, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(totp(key, t), code, "t={t}");
        }
        assert_eq!(b32_decode("GEZDGNBV").unwrap(), b"12345");
        assert!(b32_decode("not!").is_none());
        assert_eq!(
            init_secret("scan it, or enter the secret ABCD."),
            Some("ABCD")
        );
    }
}
