//! SIP digest authentication, server side (RFC 3261 §22, RFC 7616, RFC 8760).
//!
//! Written here rather than taken from a SIP library because the check must be constant-time
//! and the `-sess` variants must derive their key from the nonce and cnonce, both of which
//! the common helpers get wrong. The verifier is stateless except for the bounded
//! nonce-count table, so challenging a flood costs nothing.

mod algorithm;
mod authorization;
mod challenge;
mod credential;
mod nonce;
mod replay;
mod response;
mod uri;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use subtle::ConstantTimeEq;

pub use algorithm::{Algorithm, HashFn, UnknownAlgorithm};
pub use authorization::{
    AuthorizationError, DigestAuthorization, MAX_HEADER_LEN, MAX_PARAMS, MAX_VALUE_LEN, Qop,
    QopParams,
};
pub use challenge::Challenge;
pub use credential::{Credential, CredentialError};
pub use nonce::{NONCE_LEN, NonceError, NonceKey, OpenedNonce};
pub use replay::{NonceCounts, ReplayError};
pub use response::expected_response;
pub use uri::same_uri;

/// Policy knobs, filled from `[auth]` in `sbc.toml`.
#[derive(Debug, Clone)]
pub struct DigestPolicy {
    /// Our realm: sent in every challenge, bound into every nonce and every stored HA1.
    pub realm: String,
    /// Offered and accepted, in this order on the wire (RFC 8760 §2.4: clients take the
    /// first they support). An account may name its own ([`Account::algorithms`]).
    ///
    /// [`Account::algorithms`]: crate::records::SipAuth::algorithms
    pub algorithms: Vec<Algorithm>,
    /// How long a nonce is accepted after issue; an older one is answered `stale=true`.
    pub nonce_lifetime: Duration,
    /// Accept RFC 2069-style MD5 answers without qop. They carry no nonce-count, so a
    /// captured request can be replayed until the nonce expires: off unless a carrier's old
    /// equipment needs it.
    pub allow_md5_without_qop: bool,
    /// Nonces whose nonce-count is tracked (see [`NonceCounts`]); when full the oldest are
    /// forgotten and answered stale, never trusted.
    pub max_tracked_nonces: usize,
}

/// Why a digest response was not accepted. The SIP layer maps these to responses and feeds
/// [`DigestError::is_bad_credentials`] to the IDS brute-force counter.
///
/// A realm that is not ours is challenged again (with our realm), as Kamailio ignores
/// credentials for other realms: a phone holding credentials for several realms answers the
/// one it was asked. A `uri` that is not the Request-URI is refused with 403: the phone
/// that sent it would compute the same `uri` again, so a new challenge could only loop, and
/// the one who gains from it is replaying someone else's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The answer names another realm (it is challenged again, with ours).
    #[error("realm {0:?} is not ours")]
    RealmMismatch(String),
    /// The answer was computed for another request (RFC 3261 §22.4): a replay against
    /// another destination, or a broken client.
    #[error("digest uri {digest:?} is not the Request-URI {request:?}")]
    UriMismatch {
        /// The answer's `uri` parameter.
        digest: String,
        /// The request's Request-URI.
        request: String,
    },
    /// The answer uses an algorithm neither the account nor the configuration offers.
    #[error("algorithm {0} is not enabled")]
    AlgorithmNotEnabled(Algorithm),
    /// An answer without qop, refused unless `allow_md5_without_qop` (MD5 only).
    #[error("qop=auth is required for {0}")]
    QopRequired(Algorithm),
    /// The nonce is not one we issued for this realm.
    #[error(transparent)]
    Nonce(#[from] NonceError),
    /// The stored credential cannot check this answer (other realm, no HA1 for the hash).
    #[error("account credential unusable: {0}")]
    Credential(#[from] CredentialError),
    /// The response does not prove the password: a failed guess, counted by the IDS.
    #[error("wrong response (password, method, uri, nonce, nc or cnonce do not match)")]
    WrongResponse,
    /// Right credentials on an expired nonce.
    #[error("nonce expired (credentials were right: challenge again with stale=true)")]
    Stale,
    /// A nonce-count already used, or a nonce the replay table forgot.
    #[error(transparent)]
    Replay(ReplayError),
}

impl DigestError {
    /// The client proved it knows the password but must retry with a fresh nonce.
    pub fn wants_stale(&self) -> bool {
        matches!(
            self,
            DigestError::Stale | DigestError::Replay(ReplayError::Forgotten)
        )
    }

    /// A guess at the password that failed, or an answer that was not made for this request:
    /// refused with 403 rather than challenged again.
    pub fn is_bad_credentials(&self) -> bool {
        matches!(
            self,
            DigestError::WrongResponse | DigestError::UriMismatch { .. }
        )
    }
}

/// Who was authenticated, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The digest username that answered.
    pub username: String,
    /// The algorithm it answered with.
    pub algorithm: Algorithm,
}

/// Issues challenges and checks digest answers against stored credentials: stateless but for
/// the bounded nonce-count table, so challenging a flood costs no memory.
#[derive(Debug)]
pub struct DigestVerifier {
    policy: DigestPolicy,
    key: NonceKey,
    counts: NonceCounts,
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl DigestVerifier {
    /// `now`: start time; nonces issued before it (by an earlier process with the same key)
    /// are answered stale, because their nonce-counts were lost with that process.
    /// The configured order is kept (it is the order on the wire); repeats are dropped.
    pub fn new(mut policy: DigestPolicy, key: NonceKey, now: SystemTime) -> Self {
        policy.algorithms = dedup_in_order(&policy.algorithms);
        let counts = NonceCounts::new(policy.max_tracked_nonces, nanos(now));
        DigestVerifier {
            policy,
            key,
            counts,
        }
    }

    /// The policy in force (algorithms deduplicated, in wire order).
    pub fn policy(&self) -> &DigestPolicy {
        &self.policy
    }

    /// The algorithms offered and accepted: `account`'s own list when it has one, else the
    /// configured one, in order.
    pub fn algorithms<'a>(&'a self, account: Option<&'a [Algorithm]>) -> &'a [Algorithm] {
        account.unwrap_or(&self.policy.algorithms)
    }

    /// Challenges for a 401/407, one per algorithm of [`Self::algorithms`], in that order.
    /// With `credential`, only algorithms that credential can answer are offered (an account
    /// provisioned with an MD5 HA1 only must not be pushed to SHA-256).
    pub fn challenges(
        &self,
        stale: bool,
        credential: Option<&Credential>,
        account: Option<&[Algorithm]>,
        now: SystemTime,
    ) -> Result<Vec<Challenge>, NonceError> {
        let nonce = self.key.issue(&self.policy.realm, now)?;
        Ok(self
            .algorithms(account)
            .iter()
            .filter(|a| credential.is_none_or(|c| c.supports(a.hash())))
            .map(|&algorithm| Challenge {
                realm: self.policy.realm.clone(),
                nonce: nonce.clone(),
                algorithm,
                stale,
            })
            .collect())
    }

    /// Verifies a digest response for a request with `method` and `request_uri` (as sent).
    /// The caller has found the account by `auth.username` and passes its credential.
    /// `account`: the account's own algorithm list, which replaces the configured one for it.
    #[allow(clippy::too_many_arguments)]
    pub fn verify(
        &self,
        auth: &DigestAuthorization,
        method: &str,
        request_uri: &str,
        credential: &Credential,
        account: Option<&[Algorithm]>,
        now: SystemTime,
    ) -> Result<Authenticated, DigestError> {
        let p = &self.policy;
        if auth.realm != p.realm {
            return Err(DigestError::RealmMismatch(
                auth.realm.chars().take(64).collect(),
            ));
        }
        if !self.algorithms(account).contains(&auth.algorithm) {
            return Err(DigestError::AlgorithmNotEnabled(auth.algorithm));
        }
        if auth.qop.is_none()
            && !(p.allow_md5_without_qop && response::allows_no_qop(auth.algorithm))
        {
            return Err(DigestError::QopRequired(auth.algorithm));
        }
        // Before the response is checked: a mismatch needs no password to detect, and a
        // replayed answer must not consume its nonce-count for the real request.
        if !same_uri(&auth.uri, request_uri) {
            return Err(DigestError::UriMismatch {
                digest: auth.uri.chars().take(128).collect(),
                request: request_uri.chars().take(128).collect(),
            });
        }
        let opened = self.key.open(&p.realm, &auth.nonce)?;
        let ha1 = credential.ha1(auth.algorithm.hash(), &auth.username, &p.realm)?;
        let expected = expected_response(&ha1, method, auth)
            .ok_or(DigestError::QopRequired(auth.algorithm))?;
        // Both are lowercase hex of the same length (the parser checked), so only the content
        // could leak through timing, and ct_eq does not let it.
        if !bool::from(expected.as_bytes().ct_eq(auth.response.as_bytes())) {
            return Err(DigestError::WrongResponse);
        }
        // Expiry is checked after the response so that stale=true is only ever said to
        // someone who knows the password (RFC 7616 §3.3).
        if opened.is_expired(now, p.nonce_lifetime) {
            return Err(DigestError::Stale);
        }
        if let Some(q) = &auth.qop {
            let lifetime_ns = u64::try_from(p.nonce_lifetime.as_nanos()).unwrap_or(u64::MAX);
            let expired_before = nanos(now).saturating_sub(lifetime_ns);
            self.counts
                .check_and_record(opened.serial, q.nc, expired_before)
                .map_err(DigestError::Replay)?;
        }
        Ok(Authenticated {
            username: auth.username.clone(),
            algorithm: auth.algorithm,
        })
    }
}

/// `list` without repeats, first occurrence kept.
pub fn dedup_in_order(list: &[Algorithm]) -> Vec<Algorithm> {
    let mut out: Vec<Algorithm> = Vec::with_capacity(list.len());
    for &a in list {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests;
