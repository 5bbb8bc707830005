//! One ACME issuance: account (created once, its key kept 0600), order, HTTP-01 challenges,
//! a fresh key and CSR, the certificate chain.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use tracing::info;

use super::config::{AcmeConfig, ChallengeKind, KeyType};
use crate::tls::Resolver;

/// Tokens the HTTP-01 responder answers, with their key authorizations.
pub type Challenges = Arc<RwLock<HashMap<String, String>>>;

/// What an issuance produced, as PEM.
pub struct Issued {
    /// The certificate chain, leaf first.
    pub chain_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// An HTTP client for the ACME server: our rustls config (TLS 1.2+, forward-secret suites),
/// trusting `ca_bundle` (every certificate in it) or Mozilla's roots.
fn http_client(ca_bundle: Option<&Path>) -> Result<Box<dyn instant_acme::HttpClient>> {
    let roots = crate::tls::roots(ca_bundle).context("acme.ca_bundle")?;
    let tls = crate::tls::client_config(roots)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    Ok(Box::new(
        Client::builder(TokioExecutor::new()).build(connector),
    ))
}

/// The file holding the account of `directory`: one per directory URL, so pointing sipd
/// at another CA does not present the old CA's account to it.
fn account_file(dir: &Path, directory: &str) -> PathBuf {
    use sha2::Digest;
    let h = sha2::Sha256::digest(directory.as_bytes());
    let tag: String = h[..6].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("account-{tag}.json"))
}

/// The stored account, or a new one registered and saved (0600: it holds the account key).
async fn account(cfg: &AcmeConfig, dir: &Path) -> Result<Account> {
    let path = account_file(dir, &cfg.directory);
    let http = || http_client(cfg.ca_bundle.as_deref());
    if let Ok(text) = std::fs::read_to_string(&path) {
        let creds: AccountCredentials = serde_json::from_str(&text)
            .with_context(|| format!("{}: not an ACME account", path.display()))?;
        return Account::builder_with_http(http()?)
            .from_credentials(creds)
            .await
            .context("ACME account");
    }
    let contact = cfg.email.as_ref().map(|e| format!("mailto:{e}"));
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, creds) = Account::builder_with_http(http()?)
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            cfg.directory.clone(),
            None,
        )
        .await
        .context("registering the ACME account")?;
    let json = serde_json::to_vec(&creds)?;
    crate::private_file::write(&path, &json)
        .with_context(|| format!("saving the ACME account to {}", path.display()))?;
    info!(id = account.id(), file = %path.display(), "ACME account registered");
    Ok(account)
}

/// A new key pair of `kind` for the certificate.
pub fn new_key(kind: KeyType) -> Result<rcgen::KeyPair> {
    match kind {
        KeyType::EcdsaP256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generating an ECDSA P-256 key"),
        KeyType::Rsa2048 => {
            // ring signs with RSA keys but cannot make them: the rsa crate does.
            use rsa::pkcs8::EncodePrivateKey;
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048)
                .context("generating an RSA-2048 key")?;
            let der = key.to_pkcs8_der().context("encoding the RSA key")?;
            let der = rustls::pki_types::PrivatePkcs8KeyDer::from(der.as_bytes());
            rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256)
                .context("loading the RSA key")
        }
    }
}

/// The TLS-ALPN-01 certificate for `name` (RFC 8737): self-signed, the name as its only
/// SAN, the critical acmeIdentifier extension holding the key authorization's SHA-256.
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<Arc<rustls::sign::CertifiedKey>> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let cert = params.self_signed(&key)?;
    // Built directly: CertifiedKey::from_der's fit check parses the certificate with webpki,
    // which refuses the (critical, unknown to it) acmeIdentifier extension.
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
    let signer = crate::tls::provider()
        .key_provider
        .load_private_key(der.into())
        .context("loading the tls-alpn-01 key")?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

/// Runs one order for `cfg.domains` to its certificate. HTTP-01 tokens go to `challenges`
/// (the responder), TLS-ALPN-01 certificates to `alpn` (the TLS servers' resolvers).
pub async fn issue(
    cfg: &AcmeConfig,
    dir: &Path,
    challenges: &Challenges,
    alpn: &[Arc<Resolver>],
) -> Result<Issued> {
    let account = account(cfg, dir).await?;
    let ids: Vec<Identifier> = cfg
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&ids))
        .await
        .context("creating the ACME order")?;
    let mut tokens = Vec::new();
    let mut alpn_names = Vec::new();
    let result = async {
        let mut authzs = order.authorizations();
        while let Some(a) = authzs.next().await {
            let mut a = a.context("reading an authorization")?;
            match a.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                s => bail!("authorization {} is {s:?}", a.identifier()),
            }
            let kind = match cfg.challenge {
                ChallengeKind::Http01 => ChallengeType::Http01,
                ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
            };
            let mut ch = a
                .challenge(kind.clone())
                .ok_or_else(|| anyhow!("the CA offers no {kind:?} challenge"))?;
            match cfg.challenge {
                ChallengeKind::Http01 => {
                    challenges
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(ch.token.clone(), ch.key_authorization().as_str().to_owned());
                    tokens.push(ch.token.clone());
                }
                ChallengeKind::TlsAlpn01 => {
                    let name = ch.identifier().to_string();
                    let ck = alpn_certificate(&name, ch.key_authorization().digest().as_ref())
                        .context("making the tls-alpn-01 certificate")?;
                    for r in alpn {
                        r.set_alpn_challenge(&name, Some(ck.clone()));
                    }
                    alpn_names.push(name);
                }
            }
            ch.set_ready().await.context("answering the challenge")?;
        }
        let patience = RetryPolicy::new().timeout(Duration::from_secs(cfg.timeout_secs));
        let status = order
            .poll_ready(&patience)
            .await
            .context("waiting for validation")?;
        if status != OrderStatus::Ready {
            bail!("the order is {status:?}, not ready (the CA could not validate the names)");
        }
        let key = new_key(cfg.key_type)?;
        let csr = rcgen::CertificateParams::new(cfg.domains.clone())
            .context("certificate names")?
            .serialize_request(&key)
            .context("making the CSR")?;
        order
            .finalize_csr(csr.der())
            .await
            .context("finalizing the order")?;
        let chain_pem = order
            .poll_certificate(&patience)
            .await
            .context("downloading the certificate")?;
        Ok::<_, anyhow::Error>(Issued {
            chain_pem,
            key_pem: key.serialize_pem(),
        })
    }
    .await;
    let mut map = challenges.write().unwrap_or_else(|p| p.into_inner());
    for t in tokens {
        map.remove(&t);
    }
    for n in alpn_names {
        for r in alpn {
            r.set_alpn_challenge(&n, None);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_key_types_make_a_csr_and_a_key_rustls_serves_with() {
        for kind in [KeyType::EcdsaP256, KeyType::Rsa2048] {
            let key = new_key(kind).unwrap();
            let params = rcgen::CertificateParams::new(vec!["sbc.example.test".into()]).unwrap();
            assert!(!params.serialize_request(&key).unwrap().der().is_empty());
            let cert = params.self_signed(&key).unwrap();
            let ck =
                crate::tls::pair_from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
                    .unwrap_or_else(|e| panic!("{kind:?}: {e:#}"));
            let alg = ck.key.algorithm();
            match kind {
                KeyType::EcdsaP256 => assert_eq!(alg, rustls::SignatureAlgorithm::ECDSA),
                KeyType::Rsa2048 => assert_eq!(alg, rustls::SignatureAlgorithm::RSA),
            }
        }
    }

    #[test]
    fn one_account_file_per_directory() {
        let d = Path::new("/x");
        assert_ne!(
            account_file(d, "https://a/dir"),
            account_file(d, "https://b/dir")
        );
        assert_eq!(
            account_file(d, "https://a/dir"),
            account_file(d, "https://a/dir")
        );
    }
}
