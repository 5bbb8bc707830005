//! Outgoing mail (`[smtp]`): email one-time codes, and alerts to `alert_to`.
//!
//! lettre's tokio transport with rustls (ring), so no second TLS stack: STARTTLS (the
//! default, port 587), implicit TLS (465) or plain text, which is only allowed to a relay on
//! loopback (a local MTA or a test sink) because it would send codes and credentials in the
//! clear. Every send has a deadline (`timeout_secs`): a dead server is an error after it,
//! never a hang of the login that waits for the mail.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

use crate::mgmt::email_code::{MailError, Mailer};

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS: only to a relay on loopback.
    Plain,
}

/// `[smtp]`: the server mail goes out through. Without `host`, nothing is sent (email
/// codes then fail with a clear error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// The server's name (checked against its certificate) or address; unset: no mail.
    pub host: Option<String>,
    /// Unset: 587 for STARTTLS, 465 for TLS, 25 for plain.
    pub port: Option<u16>,
    /// `starttls` (default), `tls` or `plain` (loopback only).
    pub security: SmtpSecurity,
    /// The login at the server; set together with `password_file`.
    pub username: Option<String>,
    /// A file holding the password (one line; mode 0600 or stricter). A relative path is
    /// relative to the configuration file's directory.
    pub password_file: Option<PathBuf>,
    /// The sender address (`From:`), required with `host`.
    pub from: Option<String>,
    /// A PEM CA certificate the server's certificate may chain to, besides Mozilla's public
    /// roots (a private CA); relative: to the configuration file's directory.
    pub tls_roots: Option<PathBuf>,
    /// Deadline of a whole send (connect, TLS, login, message), seconds (1..=120).
    pub timeout_secs: u64,
    /// Where alerts are mailed when they are raised (empty: no alert mail).
    pub alert_to: Vec<String>,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: None,
            port: None,
            security: SmtpSecurity::Starttls,
            username: None,
            password_file: None,
            from: None,
            tls_roots: None,
            timeout_secs: 10,
            alert_to: Vec::new(),
        }
    }
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl SmtpConfig {
    /// Problems with these settings, for `sipd check-config` (key, problem).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !(1..=120).contains(&self.timeout_secs) {
            out.push((
                "smtp.timeout_secs",
                format!("{} is outside 1..=120", self.timeout_secs),
            ));
        }
        if self.username.is_some() != self.password_file.is_some() {
            out.push((
                "smtp.username",
                "username and password_file go together".into(),
            ));
        }
        if self.port == Some(0) {
            out.push(("smtp.port", "port 0 is not a port".into()));
        }
        for (i, a) in self.alert_to.iter().enumerate() {
            if let Err(e) = crate::store::normalize_email(a) {
                out.push(("smtp.alert_to", format!("[{i}]: {e}")));
            }
        }
        let Some(host) = &self.host else {
            if self.from.is_some() || self.username.is_some() || !self.alert_to.is_empty() {
                out.push(("smtp.host", "the other [smtp] settings need a host".into()));
            }
            return out;
        };
        if host.trim().is_empty() {
            out.push(("smtp.host", "empty".into()));
        }
        if self.security == SmtpSecurity::Plain && !is_loopback(host) {
            out.push((
                "smtp.security",
                format!(
                    "plain sends codes and credentials in the clear: only allowed to a relay on loopback, not {host:?} (use starttls or tls)"
                ),
            ));
        }
        match &self.from {
            None => out.push(("smtp.from", "a sender address is required with host".into())),
            Some(f) => {
                if let Err(e) = crate::store::normalize_email(f) {
                    out.push(("smtp.from", e));
                }
            }
        }
        out
    }

    /// A relative `password_file` names a file beside the configuration.
    pub fn resolve_against(&mut self, config_dir: &Path) {
        for p in [&mut self.password_file, &mut self.tls_roots]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = config_dir.join(&*p);
            }
        }
    }
}

/// Why `[smtp]` could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SmtpSetupError {
    /// The password file is unreadable or readable by group or others.
    #[error("[smtp] password_file {path}: {why}")]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// lettre refused the host or an address.
    #[error("[smtp]: {0}")]
    Settings(String),
}

/// Sends mail through the configured server.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: lettre::message::Mailbox,
    timeout: Duration,
    what: String,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

fn read_password(path: &Path) -> Result<String, SmtpSetupError> {
    let fail = |why: String| SmtpSetupError::PasswordFile {
        path: path.to_path_buf(),
        why,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if meta.mode() & 0o077 != 0 {
        return Err(fail(format!(
            "mode {:04o}: group and others must have no access (chmod 600)",
            meta.mode() & 0o7777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

impl SmtpMailer {
    /// The mailer of `cfg`; `None` when no host is configured.
    pub fn from_config(cfg: &SmtpConfig) -> Result<Option<SmtpMailer>, SmtpSetupError> {
        let Some(host) = cfg.host.as_deref() else {
            return Ok(None);
        };
        let settings = |e: &dyn std::fmt::Display| SmtpSetupError::Settings(e.to_string());
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let mut b = match cfg.security {
            SmtpSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .map_err(|e| settings(&e))?,
            SmtpSecurity::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(|e| settings(&e))?
            }
            SmtpSecurity::Plain => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
        };
        let port = cfg.port.unwrap_or(match cfg.security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::Plain => 25,
        });
        if let Some(roots) = &cfg.tls_roots
            && cfg.security != SmtpSecurity::Plain
        {
            let pem = std::fs::read(roots).map_err(|e| {
                SmtpSetupError::Settings(format!("tls_roots {}: {e}", roots.display()))
            })?;
            let ca = Certificate::from_pem(&pem).map_err(|e| settings(&e))?;
            let params = TlsParameters::builder(host.to_owned())
                .add_root_certificate(ca)
                .build()
                .map_err(|e| settings(&e))?;
            b = b.tls(match cfg.security {
                SmtpSecurity::Tls => Tls::Wrapper(params),
                _ => Tls::Required(params),
            });
        }
        let timeout = Duration::from_secs(cfg.timeout_secs);
        b = b.port(port).timeout(Some(timeout));
        if let (Some(user), Some(file)) = (&cfg.username, &cfg.password_file) {
            b = b.credentials(Credentials::new(user.clone(), read_password(file)?));
        }
        let from = cfg
            .from
            .as_deref()
            .ok_or_else(|| settings(&"from is required with host"))?
            .parse()
            .map_err(|e| settings(&e))?;
        Ok(Some(SmtpMailer {
            transport: b.build(),
            from,
            timeout,
            what: format!("SmtpMailer({host}:{port}, {:?})", cfg.security),
        }))
    }
}

impl Mailer for SmtpMailer {
    fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), MailError> {
        let to = to
            .parse()
            .map_err(|e: lettre::address::AddressError| MailError::Address(e.to_string()))?;
        let msg = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_owned())
            .map_err(|e| MailError::Smtp(e.to_string()))?;
        let secs = self.timeout.as_secs();
        let send = async {
            match tokio::time::timeout(self.timeout, self.transport.send(msg)).await {
                Err(_) => Err(MailError::Timeout(secs)),
                Ok(Err(e)) => Err(MailError::Smtp(e.to_string())),
                Ok(Ok(_)) => Ok(()),
            }
        };
        // Logins run on tokio's blocking threads, which may block on the runtime; without
        // one (a command-line tool), a small runtime of our own.
        match tokio::runtime::Handle::try_current() {
            Ok(h) => h.block_on(send),
            Err(_) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| MailError::Smtp(e.to_string()))?
                .block_on(send),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_only_to_loopback_and_from_required() {
        let mut c = SmtpConfig {
            host: Some("mail.example.net".into()),
            security: SmtpSecurity::Plain,
            ..SmtpConfig::default()
        };
        let p = c.problems();
        assert!(p.iter().any(|(k, _)| *k == "smtp.security"), "{p:?}");
        assert!(p.iter().any(|(k, _)| *k == "smtp.from"), "{p:?}");
        c.host = Some("127.0.0.1".into());
        c.from = Some("sbc@example.net".into());
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        c.host = Some("localhost".into());
        assert!(c.problems().is_empty());
        assert!(SmtpConfig::default().problems().is_empty());
    }

    /// A dead server is an error within the deadline, not a hang.
    #[test]
    fn a_dead_server_fails_within_the_timeout() {
        // A listener that accepts and never speaks.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let m = SmtpMailer::from_config(&SmtpConfig {
            host: Some("127.0.0.1".into()),
            port: Some(port),
            security: SmtpSecurity::Plain,
            from: Some("sbc@example.net".into()),
            timeout_secs: 1,
            ..SmtpConfig::default()
        })
        .unwrap()
        .unwrap();
        let t = std::time::Instant::now();
        let e = m.send("a@example.net", "s", "b").unwrap_err();
        assert!(
            matches!(e, MailError::Timeout(1) | MailError::Smtp(_)),
            "{e}"
        );
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
        drop(l);
    }
}
