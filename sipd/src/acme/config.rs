//! `[acme]`: certificates obtained and renewed by ACME (RFC 8555), off unless `domains` is set.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The key type of the issued certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256 (the default: small and fast handshakes).
    #[default]
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    /// RSA 2048 (PKCS#1 v1.5 with SHA-256), for clients that cannot do ECDSA.
    #[serde(rename = "rsa-2048")]
    Rsa2048,
}

/// How the ACME server checks that we hold the names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ChallengeKind {
    /// HTTP-01: the server fetches `http://<name>/.well-known/acme-challenge/<token>` from
    /// the responder on `http01_listen` (port 80 as the CA sees it).
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// TLS-ALPN-01 (RFC 8737): the server connects to port 443 of the names with ALPN
    /// `acme-tls/1`; the management API's TLS port answers it (443 must reach it).
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

/// `[acme]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AcmeConfig {
    /// The ACME directory URL (https). Let's Encrypt's production directory by default.
    pub directory: String,
    /// Contact address given to the CA (expiry warnings); optional.
    pub email: Option<String>,
    /// The DNS names of the certificate, served by the management API and SIP over TLS both.
    /// Empty (the default): ACME is off.
    pub domains: Vec<String>,
    /// The challenge type (`http-01` or `tls-alpn-01`).
    pub challenge: ChallengeKind,
    /// Where the HTTP-01 responder listens (the CA connects to port 80 of the names).
    pub http01_listen: SocketAddr,
    /// `ecdsa-p256` (default) or `rsa-2048`.
    pub key_type: KeyType,
    /// Renew this long before expiry; unset: when a third of the validity is left.
    pub renew_before_secs: Option<u64>,
    /// PEM roots to trust for the ACME server instead of Mozilla's (a private CA such as
    /// pebble's).
    pub ca_bundle: Option<PathBuf>,
    /// Account key, certificate and key live here; unset: `<data_dir>/acme`.
    pub state_dir: Option<PathBuf>,
    /// First retry after a failed attempt, doubled up to `retry_max_secs`; also the least time
    /// between two successful renewals.
    pub retry_secs: u64,
    /// The longest wait between retries.
    pub retry_max_secs: u64,
    /// One whole attempt (order, challenges, certificate) is abandoned after this.
    pub timeout_secs: u64,
    /// Timeout of one OCSP fetch (for stapling), whether or not ACME is on.
    pub ocsp_timeout_secs: u64,
}

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            directory: LETS_ENCRYPT.into(),
            email: None,
            domains: Vec::new(),
            challenge: ChallengeKind::Http01,
            http01_listen: SocketAddr::from(([0, 0, 0, 0], 80)),
            key_type: KeyType::EcdsaP256,
            renew_before_secs: None,
            ca_bundle: None,
            state_dir: None,
            retry_secs: 60,
            retry_max_secs: 6 * 3600,
            timeout_secs: 120,
            ocsp_timeout_secs: 10,
        }
    }
}

impl AcmeConfig {
    /// Whether ACME manages the certificates.
    pub fn enabled(&self) -> bool {
        !self.domains.is_empty()
    }

    /// Where the account key, certificate and key are kept.
    pub fn state_dir(&self, data_dir: &Path) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("acme"))
    }

    /// How long before `not_after` a certificate valid for `validity` is renewed.
    pub fn renew_before(&self, validity: Duration) -> Duration {
        self.renew_before_secs
            .map_or(validity / 3, Duration::from_secs)
    }

    /// What is wrong with the settings, as (key, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !self.enabled() {
            return out;
        }
        if !self.directory.starts_with("https://") {
            out.push((
                "acme.directory",
                format!("{:?} is not an https:// URL", self.directory),
            ));
        }
        if let Some(e) = &self.email
            && (!e.contains('@') || e.contains(char::is_whitespace) || e.len() > 254)
        {
            out.push(("acme.email", format!("{e:?} is not an email address")));
        }
        for d in &self.domains {
            if !valid_dns_name(d) {
                out.push((
                    "acme.domains",
                    format!("{d:?} is not a DNS name (letters, digits, '-', '.'; a leading \"*.\" is not supported by http-01)"),
                ));
            }
        }
        if self.retry_secs == 0 || self.retry_secs > self.retry_max_secs {
            out.push((
                "acme.retry_secs",
                format!(
                    "{} must be at least 1 and at most retry_max_secs ({})",
                    self.retry_secs, self.retry_max_secs
                ),
            ));
        }
        if !(5..=3600).contains(&self.timeout_secs) {
            out.push((
                "acme.timeout_secs",
                format!("{} is outside 5..=3600", self.timeout_secs),
            ));
        }
        if !(1..=300).contains(&self.ocsp_timeout_secs) {
            out.push((
                "acme.ocsp_timeout_secs",
                format!("{} is outside 1..=300", self.ocsp_timeout_secs),
            ));
        }
        out
    }
}

/// A host name as a CA accepts it: labels of letters, digits and '-', dot separated.
fn valid_dns_name(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_checked_when_on() {
        let c = AcmeConfig::default();
        assert!(!c.enabled() && c.problems().is_empty());
        let c = AcmeConfig {
            directory: "http://ca".into(),
            email: Some("nobody".into()),
            domains: vec!["sbc.example.com".into(), "*.x.com".into()],
            ..AcmeConfig::default()
        };
        let keys: Vec<_> = c.problems().into_iter().map(|p| p.0).collect();
        assert_eq!(keys, ["acme.directory", "acme.email", "acme.domains"]);
        assert_eq!(
            c.renew_before(Duration::from_secs(90 * 86400)),
            Duration::from_secs(30 * 86400)
        );
    }

    #[test]
    fn key_types_parse() {
        let c: AcmeConfig =
            toml::from_str("domains = [\"a.example\"]\nkey_type = \"rsa-2048\"").unwrap();
        assert_eq!(c.key_type, KeyType::Rsa2048);
        assert!(toml::from_str::<AcmeConfig>("key_type = \"rsa-1024\"").is_err());
    }
}
