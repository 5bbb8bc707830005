//! TLS for the management API and SIP over TLS: rustls with the *ring* provider, TLS 1.2
//! and 1.3 only, forward-secret suites only, and a certificate that can be replaced without a
//! restart.
//!
//! Each server (the API, SIP) has its own [`CertFiles`]: the configured pair
//! (`[management] tls_cert`/`tls_key`, `[sip] tls_cert`/`tls_key`) when set; otherwise a
//! self-signed one (CN and SAN: the listen address, plus `localhost`) made in the data
//! directory on first start (`mgmt-tls.crt`/`.key`, `sip-tls.crt`/`.key`, the key 0600) and
//! reused after.
//!
//! Reload: every [`RELOAD_EVERY`] the files' size and modification time are compared with
//! what was loaded; when they changed the pair is read again. A pair that does not load (or
//! whose key does not fit the certificate) is logged and the old one kept serving. A file
//! check rather than SIGHUP: certbot-style renewals need no hook, and SIGHUP keeps its
//! default meaning for sipd.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedCipherSuite};
use tracing::{error, info, warn};

/// How often the certificate files are checked for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// Whose certificate it is: names its self-signed files and its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertFiles {
    /// Who serves it, for the log ("management API", "SIP").
    pub label: &'static str,
    /// The section whose `tls_cert`/`tls_key` replace the self-signed pair.
    pub section: &'static str,
    /// File name, in the data directory, of the certificate made when none is configured.
    pub self_signed_cert: &'static str,
    /// File name, in the data directory, of that certificate's private key (mode 0600).
    pub self_signed_key: &'static str,
}

/// The management API's certificate.
pub const MANAGEMENT: CertFiles = CertFiles {
    label: "management API",
    section: "management",
    self_signed_cert: "mgmt-tls.crt",
    self_signed_key: "mgmt-tls.key",
};

/// SIP over TLS's certificate.
pub const SIP: CertFiles = CertFiles {
    label: "SIP over TLS",
    section: "sip",
    self_signed_cert: "sip-tls.crt",
    self_signed_key: "sip-tls.key",
};

/// The ALPN protocol of ACME's TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The certificate in use, swapped whole on reload; and the TLS-ALPN-01 challenge
/// certificates of an ACME order in progress, by name.
#[derive(Debug)]
pub struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
    alpn_challenges: RwLock<std::collections::HashMap<String, Arc<CertifiedKey>>>,
}

impl Resolver {
    /// Answers `acme-tls/1` handshakes for `name` with `ck` (None: stops).
    pub fn set_alpn_challenge(&self, name: &str, ck: Option<Arc<CertifiedKey>>) {
        let mut m = self
            .alpn_challenges
            .write()
            .unwrap_or_else(|p| p.into_inner());
        match ck {
            Some(ck) => m.insert(name.to_ascii_lowercase(), ck),
            None => m.remove(&name.to_ascii_lowercase()),
        };
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut a| a.any(|p| p == ACME_TLS_ALPN));
        if acme {
            // Only the challenge certificate, never the real one, and nothing when no
            // challenge is pending for that name (the handshake fails).
            let name = hello.server_name()?.to_ascii_lowercase();
            return self
                .alpn_challenges
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&name)
                .cloned();
        }
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// What a TLS server knows about its certificate.
#[derive(Debug)]
pub struct TlsState {
    /// Whose it is.
    pub files: CertFiles,
    /// The certificate rustls serves, replaced in place on reload.
    pub resolver: Arc<Resolver>,
    /// The certificate file in use (configured or generated), watched for changes.
    pub cert_path: PathBuf,
    /// The key file in use, watched for changes.
    pub key_path: PathBuf,
    /// The generated certificate is in use (an alert says so); cleared when ACME installs one.
    pub self_signed: AtomicBool,
    /// The files watched for changes now: `cert_path`/`key_path` until ACME installs its
    /// own pair, then that pair's.
    watched: RwLock<(PathBuf, PathBuf)>,
    /// Successful reloads since start.
    pub reloads: AtomicU64,
    /// The last reload attempt failed and the old certificate is still served (an alert says
    /// so until a reload succeeds).
    pub reload_failed: AtomicBool,
}

/// Whether a suite's key exchange is ephemeral. TLS 1.3 suites always are; TLS 1.2 ones
/// only with (EC)DHE.
pub fn forward_secret(s: &SupportedCipherSuite) -> bool {
    match s {
        SupportedCipherSuite::Tls13(_) => true,
        SupportedCipherSuite::Tls12(t) => matches!(
            t.kx,
            rustls::crypto::KeyExchangeAlgorithm::ECDHE | rustls::crypto::KeyExchangeAlgorithm::DHE
        ),
    }
}

/// rustls's ring provider, kept to forward-secret suites. Its defaults already are all
/// forward secret (TLS 1.3 AES-GCM/ChaCha20, and TLS 1.2 only ECDHE-ECDSA/ECDHE-RSA with
/// AES-GCM/ChaCha20: rustls has no static-RSA key exchange and no CBC), so the filter is a
/// guard against a future default, checked by a test.
pub fn provider() -> CryptoProvider {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.retain(forward_secret);
    p
}

/// The protocol versions every server and client of ours speaks: TLS 1.3 and 1.2.
pub const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A server config: TLS 1.3 and 1.2 with [`provider`]'s suites, no client certificates, the
/// certificate from `resolver`.
pub fn server_config(resolver: Arc<Resolver>) -> Result<ServerConfig> {
    server_config_verifying(resolver, None, true)
}

/// [`server_config`], asking (when `client_roots` is given) for a client certificate that
/// chains to one of `client_roots`. A certificate presented must chain (else the handshake
/// fails); `required`: a peer without one fails the handshake too, otherwise it goes on
/// without (auth rules with a `tls_client_name` refuse its calls).
pub fn server_config_verifying(
    resolver: Arc<Resolver>,
    client_roots: Option<rustls::RootCertStore>,
    required: bool,
) -> Result<ServerConfig> {
    let provider = Arc::new(provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .context("TLS protocol versions")?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = if required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().context("client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    Ok(builder.with_cert_resolver(resolver))
}

/// The trust anchors for certificates we verify: every certificate in the PEM file `path`,
/// or (None) Mozilla's roots as webpki-roots carries them.
pub fn roots(path: Option<&Path>) -> Result<rustls::RootCertStore> {
    let Some(path) = path else {
        return Ok(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let mut store = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
    {
        let c = c.with_context(|| format!("parsing {}", path.display()))?;
        store
            .add(c)
            .with_context(|| format!("{}: a certificate is not a usable root", path.display()))?;
    }
    if store.is_empty() {
        bail!("{}: no certificate in it", path.display());
    }
    Ok(store)
}

/// A client config that verifies servers against `roots`: TLS 1.3 and 1.2 with
/// [`provider`]'s suites, no client certificate of ours.
pub fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig> {
    Ok(
        rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(VERSIONS)
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Reads a PEM certificate chain and private key and checks they belong together.
pub fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey> {
    let c = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
    let k =
        std::fs::read(key).with_context(|| format!("reading the private key {}", key.display()))?;
    pair_from_pem(&c, &k).with_context(|| format!("{} and {}", cert.display(), key.display()))
}

/// A PEM certificate chain (leaf first) and its PEM private key, checked to belong together.
pub fn pair_from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .context("parsing the certificate chain")?;
    if chain.is_empty() {
        bail!("no certificate in the chain");
    }
    let key_der = PrivateKeyDer::from_pem_slice(key_pem).context("reading the private key")?;
    let p = provider();
    CertifiedKey::from_der(chain, key_der, &p)
        .context("the certificate and key do not form a usable pair")
}

/// Makes `files`' self-signed pair in `dir` unless it is there already.
pub fn ensure_self_signed(
    files: CertFiles,
    dir: &Path,
    listen: IpAddr,
) -> Result<(PathBuf, PathBuf)> {
    let cert = dir.join(files.self_signed_cert);
    let key = dir.join(files.self_signed_key);
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let mut names = vec!["localhost".to_owned()];
    if !listen.is_unspecified() {
        names.insert(0, listen.to_string());
    }
    let mut params = rcgen::CertificateParams::new(names).context("certificate names")?;
    let cn = if listen.is_unspecified() {
        "localhost".to_owned()
    } else {
        listen.to_string()
    };
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "xdp-sbc (self-signed)");
    // Valid from a day ago (clock skew) for ten years.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + Duration::from_secs(now.saturating_sub(86_400));
    params.not_after = epoch + Duration::from_secs(now + 10 * 365 * 86_400);
    let key_pair = rcgen::KeyPair::generate().context("generating the TLS key")?;
    let c = params
        .self_signed(&key_pair)
        .context("self-signing the certificate")?;
    crate::private_file::write(&key, key_pair.serialize_pem().as_bytes())
        .with_context(|| format!("writing {}", key.display()))?;
    crate::private_file::write_mode(&cert, c.pem().as_bytes(), 0o644)
        .with_context(|| format!("writing {}", cert.display()))?;
    warn!(
        cert = %cert.display(),
        "{}: made a self-signed certificate; set [{}] tls_cert/tls_key for a real one",
        files.label,
        files.section
    );
    Ok((cert, key))
}

fn signature(cert: &Path, key: &Path) -> Option<[(u64, SystemTime); 2]> {
    let m = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)))
    };
    Some([m(cert)?, m(key)?])
}

impl TlsState {
    /// Loads the configured pair, or makes/reuses `files`' self-signed one.
    pub fn load(
        files: CertFiles,
        cert: Option<&Path>,
        key: Option<&Path>,
        data_dir: &Path,
        listen: IpAddr,
    ) -> Result<Arc<TlsState>> {
        let (cert_path, key_path, self_signed) = match (cert, key) {
            (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf(), false),
            _ => {
                let (c, k) = ensure_self_signed(files, data_dir, listen)?;
                (c, k, true)
            }
        };
        let ck = load_pair(&cert_path, &key_path)?;
        Ok(Arc::new(TlsState {
            files,
            resolver: Arc::new(Resolver {
                current: RwLock::new(Arc::new(ck)),
                alpn_challenges: RwLock::default(),
            }),
            watched: RwLock::new((cert_path.clone(), key_path.clone())),
            cert_path,
            key_path,
            self_signed: AtomicBool::new(self_signed),
            reloads: AtomicU64::new(0),
            reload_failed: AtomicBool::new(false),
        }))
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.resolver
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Serves `ck` from now on (an ACME certificate saved as `cert`/`key`, which are watched
    /// from then on).
    pub fn install(&self, ck: Arc<CertifiedKey>, cert: &Path, key: &Path) {
        *self
            .resolver
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = ck;
        *self.watched.write().unwrap_or_else(|p| p.into_inner()) =
            (cert.to_path_buf(), key.to_path_buf());
        self.self_signed.store(false, Ordering::Relaxed);
        info!(cert = %cert.display(), "{}: new TLS certificate installed", self.files.label);
    }

    /// Replaces the served certificate by `new` only if it still is `old` (an OCSP staple
    /// added to it must not undo a renewal that happened meanwhile).
    pub fn replace_if_current(&self, old: &Arc<CertifiedKey>, new: Arc<CertifiedKey>) -> bool {
        let mut cur = self
            .resolver
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if Arc::ptr_eq(&cur, old) {
            *cur = new;
            true
        } else {
            false
        }
    }

    fn watched(&self) -> (PathBuf, PathBuf) {
        self.watched
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the pair; keeps the old one if the new one is bad.
    pub fn reload(&self) -> Result<()> {
        let (cert, key) = self.watched();
        match load_pair(&cert, &key) {
            Ok(ck) => {
                *self
                    .resolver
                    .current
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = Arc::new(ck);
                self.reloads.fetch_add(1, Ordering::Relaxed);
                self.reload_failed.store(false, Ordering::Relaxed);
                info!(cert = %cert.display(), "{}: TLS certificate reloaded", self.files.label);
                Ok(())
            }
            Err(e) => {
                self.reload_failed.store(true, Ordering::Relaxed);
                error!(
                    error = format!("{e:#}"),
                    "{}: new TLS certificate not loaded; keeping the old one", self.files.label
                );
                Err(e)
            }
        }
    }

    /// Watches the files until `stop` says so.
    pub async fn watch(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let sig = || {
            let (c, k) = self.watched();
            signature(&c, &k)
        };
        let mut seen = sig();
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let now = sig();
            if now.is_some() && now != seen {
                // Both files are often rewritten one after the other: give the second a
                // moment so a half-renewed pair is not tried (and logged) for nothing.
                tokio::time::sleep(Duration::from_millis(200)).await;
                seen = sig();
                let me = self.clone();
                let _ = tokio::task::spawn_blocking(move || me.reload()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_forward_secret_suites_and_tls12_plus() {
        let p = provider();
        assert!(!p.cipher_suites.is_empty());
        // The filter removed nothing: ring's defaults are all (EC)DHE already.
        assert_eq!(
            p.cipher_suites.len(),
            rustls::crypto::ring::default_provider().cipher_suites.len()
        );
        for s in &p.cipher_suites {
            let name = format!("{:?}", s.suite());
            assert!(forward_secret(s), "{name}");
            assert!(
                !name.contains("CBC") && !name.starts_with("TLS_RSA_"),
                "{name}"
            );
        }
    }

    #[test]
    fn self_signed_is_made_once_and_reused_and_reload_keeps_a_good_pair() {
        let dir = tempfile::tempdir().unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let st = TlsState::load(SIP, None, None, dir.path(), ip).unwrap();
        assert!(st.self_signed.load(Ordering::Relaxed));
        let first = std::fs::read(dir.path().join(SIP.self_signed_cert)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(SIP.self_signed_key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = TlsState::load(SIP, None, None, dir.path(), ip).unwrap();
        assert!(again.self_signed.load(Ordering::Relaxed));
        assert_eq!(
            first,
            std::fs::read(dir.path().join(SIP.self_signed_cert)).unwrap()
        );
        // The API's pair is another one, beside it.
        let api = TlsState::load(MANAGEMENT, None, None, dir.path(), ip).unwrap();
        assert_ne!(api.cert_path, st.cert_path);
        // A broken replacement is refused and the old pair stays.
        std::fs::write(&st.cert_path, b"not a certificate").unwrap();
        assert!(st.reload().is_err());
        assert!(st.reload_failed.load(Ordering::Relaxed));
        std::fs::write(&st.cert_path, &first).unwrap();
        st.reload().unwrap();
        assert_eq!(st.reloads.load(Ordering::Relaxed), 1);
        server_config(st.resolver.clone()).unwrap();
    }
}
