//! Certificates obtained and renewed by ACME (RFC 8555) for the management API and SIP over
//! TLS, through `instant-acme` (ring + hyper-rustls: no aws-lc/cmake).
//!
//! One certificate for every name in `[acme] domains`, served by both. It and its key are
//! kept in the state directory (`cert.pem` 0644, `key.pem` 0600, the account key in
//! `account-<directory hash>.json` 0600), so a restart serves it at once and only renews
//! when due: `renew_before` ahead of expiry (a third of the validity by default).
//!
//! A failed attempt keeps the old certificate serving, raises the `acme_renewal_failed`
//! alert and is retried after `retry_secs`, doubling up to `retry_max_secs`; a success
//! clears the alert. `/metrics` shows the certificate's remaining seconds and the
//! renewals that worked and failed.

pub mod config;
pub mod http01;
pub mod issue;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use tracing::{error, info, warn};

pub use config::{AcmeConfig, ChallengeKind, KeyType};
use issue::Challenges;

use crate::tls::TlsState;

/// The ACME manager: its settings, the TLS servers it feeds and what happened so far.
pub struct Acme {
    cfg: AcmeConfig,
    dir: PathBuf,
    targets: Mutex<Vec<Arc<TlsState>>>,
    challenges: Challenges,
    /// Certificates obtained since start.
    pub renewals_ok: AtomicU64,
    /// Attempts that failed since start.
    pub renewals_failed: AtomicU64,
    /// The last attempt failed (the `acme_renewal_failed` alert).
    pub failing: AtomicBool,
    /// Why the last attempt failed.
    pub last_error: Mutex<Option<String>>,
    /// Unix seconds of the served ACME certificate's expiry; 0: none yet.
    pub not_after: AtomicI64,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A leaf certificate's validity, from the first certificate of a PEM chain.
pub fn validity(chain_pem: &[u8]) -> Result<(SystemTime, SystemTime)> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let leaf = CertificateDer::pem_slice_iter(chain_pem)
        .next()
        .ok_or_else(|| anyhow!("no certificate"))?
        .context("parsing the certificate")?;
    let (_, c) = x509_parser::parse_x509_certificate(&leaf)
        .map_err(|e| anyhow!("parsing the certificate: {e}"))?;
    let t = |s: i64| UNIX_EPOCH + Duration::from_secs(s.max(0) as u64);
    Ok((
        t(c.validity().not_before.timestamp()),
        t(c.validity().not_after.timestamp()),
    ))
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Acme {
    /// The manager when `[acme]` is on (its state directory made, 0700).
    pub fn new(cfg: &crate::config::Config) -> Result<Option<Arc<Acme>>> {
        if !cfg.acme.enabled() {
            return Ok(None);
        }
        let dir = cfg.acme.state_dir(&cfg.data_dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
        let me = Acme {
            cfg: cfg.acme.clone(),
            dir,
            targets: Mutex::default(),
            challenges: Challenges::default(),
            renewals_ok: AtomicU64::new(0),
            renewals_failed: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            last_error: Mutex::default(),
            not_after: AtomicI64::new(0),
        };
        if let Some((c, _)) = me.existing()
            && let Ok((_, end)) = std::fs::read(&c)
                .map_err(anyhow::Error::from)
                .and_then(|p| validity(&p))
        {
            me.not_after.store(unix(end), Ordering::Relaxed);
        }
        Ok(Some(Arc::new(me)))
    }

    /// Where the certificate chain and its key are kept.
    pub fn paths(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("cert.pem"), self.dir.join("key.pem"))
    }

    /// The stored certificate and key, when both are there (a TLS server starts on them).
    pub fn existing(&self) -> Option<(PathBuf, PathBuf)> {
        let (c, k) = self.paths();
        (c.exists() && k.exists()).then_some((c, k))
    }

    /// Feeds `st` every certificate obtained from now on.
    pub fn serve(&self, st: Arc<TlsState>) {
        self.targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(st);
    }

    /// Seconds left on the served ACME certificate (negative: expired); None: none yet.
    pub fn expiry_secs(&self) -> Option<i64> {
        let end = self.not_after.load(Ordering::Relaxed);
        (end != 0).then(|| end - unix(SystemTime::now()))
    }

    /// The alert message while the last attempt failed.
    pub fn alert(&self) -> Option<String> {
        if !self.failing.load(Ordering::Relaxed) {
            return None;
        }
        let why = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        let left = match self.expiry_secs() {
            Some(s) => format!("the current certificate expires in {}h", s / 3600),
            None => "no ACME certificate yet (the previous one is still served)".into(),
        };
        Some(format!(
            "ACME renewal of {} failed ({why}); the old certificate is still served and the renewal is retried; {left}",
            self.cfg.domains.join(", ")
        ))
    }

    /// Starts the HTTP-01 responder (for that challenge) and the renewal task.
    pub async fn start(self: Arc<Self>) -> Result<()> {
        let http01 = match self.cfg.challenge {
            ChallengeKind::Http01 => {
                Some(http01::start(self.cfg.http01_listen, self.challenges.clone()).await?)
            }
            // Answered by the TLS servers' resolvers (the API's port, ALPN acme-tls/1).
            ChallengeKind::TlsAlpn01 => None,
        };
        info!(?http01, challenge = ?self.cfg.challenge, domains = ?self.cfg.domains, directory = %self.cfg.directory, "ACME on");
        tokio::spawn(self.run());
        Ok(())
    }

    /// When the stored certificate is due for renewal (now when there is none).
    fn due(&self) -> SystemTime {
        let now = SystemTime::now();
        let Some((c, _)) = self.existing() else {
            return now;
        };
        match std::fs::read(&c)
            .map_err(anyhow::Error::from)
            .and_then(|p| validity(&p))
        {
            Ok((start, end)) => {
                let life = end.duration_since(start).unwrap_or_default();
                end.checked_sub(self.cfg.renew_before(life)).unwrap_or(now)
            }
            Err(e) => {
                warn!(error = format!("{e:#}"), cert = %c.display(), "stored ACME certificate unreadable; renewing");
                now
            }
        }
    }

    async fn run(self: Arc<Self>) {
        let retry = Duration::from_secs(self.cfg.retry_secs);
        let mut backoff = retry;
        loop {
            let wait = self
                .due()
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            tokio::time::sleep(wait).await;
            let limit = Duration::from_secs(self.cfg.timeout_secs);
            let resolvers: Vec<_> = self
                .targets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|t| t.resolver.clone())
                .collect();
            let work = issue::issue(&self.cfg, &self.dir, &self.challenges, &resolvers);
            let attempt = tokio::time::timeout(limit, work)
                .await
                .unwrap_or_else(|_| Err(anyhow!("not done in {limit:?}")))
                .and_then(|i| self.install(&i));
            match attempt {
                Ok(()) => {
                    self.renewals_ok.fetch_add(1, Ordering::Relaxed);
                    self.failing.store(false, Ordering::Relaxed);
                    backoff = retry;
                    // Never two renewals closer than retry_secs, even when renew_before is
                    // longer than the CA's validity.
                    tokio::time::sleep(retry).await;
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    error!(error = %why, retry_in = ?backoff, "ACME renewal failed; the old certificate is still served");
                    *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                    self.renewals_failed.fetch_add(1, Ordering::Relaxed);
                    self.failing.store(true, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(self.cfg.retry_max_secs));
                }
            }
        }
    }

    /// Checks the new pair, saves it (key first, 0600) and hands it to every TLS server.
    fn install(&self, i: &issue::Issued) -> Result<()> {
        let ck = crate::tls::pair_from_pem(i.chain_pem.as_bytes(), i.key_pem.as_bytes())
            .context("the issued certificate does not load")?;
        let (_, end) = validity(i.chain_pem.as_bytes())?;
        let (c, k) = self.paths();
        crate::private_file::write(&k, i.key_pem.as_bytes())
            .with_context(|| format!("writing {}", k.display()))?;
        crate::private_file::write_mode(&c, i.chain_pem.as_bytes(), 0o644)
            .with_context(|| format!("writing {}", c.display()))?;
        let ck = Arc::new(ck);
        for t in self
            .targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            t.install(ck.clone(), &c, &k);
        }
        self.not_after.store(unix(end), Ordering::Relaxed);
        info!(domains = ?self.cfg.domains, not_after = unix(end), cert = %c.display(), "ACME certificate installed");
        Ok(())
    }
}

/// The pair a TLS server starts on: the stored ACME one when ACME is on and has one, else
/// the configured files (`None`: self-signed).
pub fn startup_pair<'a>(
    acme: Option<&Acme>,
    cert: Option<&'a Path>,
    key: Option<&'a Path>,
) -> (
    Option<std::borrow::Cow<'a, Path>>,
    Option<std::borrow::Cow<'a, Path>>,
) {
    use std::borrow::Cow;
    match acme.and_then(Acme::existing) {
        Some((c, k)) => (Some(Cow::Owned(c)), Some(Cow::Owned(k))),
        None => (cert.map(Cow::Borrowed), key.map(Cow::Borrowed)),
    }
}
