//! The authentication gate: which account a new call belongs to, or why it gets none.
//!
//! Scanner user-agents, the Sippy-style rules (source, CLI, CLD, IP-only), the digest
//! challenge and check, and the IDS counters these feed (failed passwords, calls matching no
//! rule, floods reported by the kernel) live here with their state. The gate answers with a
//! [`Verdict`] and, when a source crossed a threshold, a [`Ban`]; the core turns both into
//! responses, CDRs and effects, so the gate never calls back into it.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, warn};

use super::ids::{Ids, IdsConfig, IdsStats, Offence};
use crate::auth::digest::{DigestAuthorization, DigestError, DigestVerifier, NonceError};
use crate::policy::rules::{Classification, RuleSet};
use crate::records::{Account, Id, RefusalReason};
use crate::sip::parse::clip;

/// What a new call presents to the gate.
#[derive(Debug, Clone, Copy)]
pub struct Knock<'a> {
    /// The source address of the request.
    pub src: IpAddr,
    /// Calling number: the user part of From.
    pub cli: &'a str,
    /// Called number: the user part of the Request-URI (of To when it has none).
    pub cld: &'a str,
    /// The request's method (`INVITE`, `REGISTER`, ...).
    pub method: &'a str,
    /// The Request-URI as sent: a digest answer must have been made for it.
    pub request_uri: &'a str,
    /// The User-Agent header, checked against known scanners.
    pub user_agent: Option<&'a str>,
    /// `Authorization` or `Proxy-Authorization`.
    pub authorization: Option<&'a str>,
    /// The DNS names of the caller's verified TLS client certificate; empty when it came
    /// without one (or not over TLS). A rule with a `tls_client_name` needs it here.
    pub tls_client_names: &'a [String],
}

/// The gate's answer to a [`Knock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The call belongs to this account; admission decides next.
    Admit(Id),
    /// 401 with fresh nonces; nothing is recorded (the caller retries with credentials).
    /// `account`: the account the caller's answer named, whose own algorithm list (if it has
    /// one) is what the new challenges offer; `None` before any answer: `[auth] algorithms`.
    Challenge {
        /// The answer was right but on an expired nonce: `stale=true`, no password prompt.
        stale: bool,
        /// See above.
        account: Option<Id>,
    },
    /// Refused with `code`. An empty `why` sends no Warning. `refusal`: the caller has not
    /// proved who it is, so the refusal is counted in the refusal table under this reason
    /// (one row per source and reason, never a record per packet) and answered once; `None`:
    /// its credentials were right, so it gets a CDR like any call attempt.
    Refuse {
        /// The SIP status to answer.
        code: u16,
        /// Warning text; empty for none.
        why: &'static str,
        /// See above: `Some` for a caller that has not authenticated.
        refusal: Option<RefusalReason>,
    },
}

/// What to answer an out-of-dialog request other than INVITE, ACK and CANCEL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeVerdict {
    /// Answer it as usual (OPTIONS 200, 405, 481…).
    Answer,
    /// Refuse it with `code` (no Warning), counted under `reason`.
    Refuse {
        /// The SIP status to answer.
        code: u16,
        /// The refusal table's reason.
        reason: RefusalReason,
    },
}

/// A source that earned a kernel ban.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ban {
    /// The source to ban.
    pub ip: IpAddr,
    /// How long: the configured ban, doubled for each earlier offence, at most the maximum.
    pub duration: Duration,
    /// What the source did.
    pub offence: Offence,
    /// Its first offence as the IDS recorded it ([`Ids::first_offence`]).
    pub first_offence: Instant,
}

/// Counters of the gate, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateStats {
    /// Digest responses refused (wrong password, unknown user, bad parameters).
    pub auth_failures: u64,
}

/// The authentication gate: rules, digest verifier and IDS, with their state (see the module
/// docs). Owned by the core.
pub struct AuthGate {
    rules: RuleSet,
    verifier: DigestVerifier,
    ids: Ids,
    stats: GateStats,
}

impl AuthGate {
    /// A ban the IDS hands out, said once in the log (never per packet: only a threshold
    /// crossed gets here), with the source's first offence.
    fn earned(&self, now: Instant, ip: IpAddr, duration: Duration, offence: Offence) -> Ban {
        warn!(src = %ip, ban = ?duration, ?offence, "banning the source");
        Ban {
            ip,
            duration,
            offence,
            first_offence: self.ids.first_offence(ip).unwrap_or(now),
        }
    }

    /// A gate over `rules`, checking digests with `verifier`; the IDS starts empty.
    pub fn new(rules: RuleSet, verifier: DigestVerifier, ids: IdsConfig) -> AuthGate {
        AuthGate {
            rules,
            verifier,
            ids: Ids::new(ids),
            stats: GateStats::default(),
        }
    }

    /// Its counters now.
    pub fn stats(&self) -> GateStats {
        self.stats
    }

    /// The rules and accounts in force.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// The account with this id, as of the rules in force.
    pub fn account(&self, id: Id) -> Option<&Account> {
        self.rules.account(id)
    }

    /// New accounts and rules; the IDS keeps what it counted.
    pub fn reload(&mut self, rules: RuleSet) {
        self.rules = rules;
    }

    /// Decides who `knock` is. Bans come with the verdict they were earned in.
    pub fn check(&mut self, now: Instant, wall: SystemTime, k: &Knock) -> (Verdict, Option<Ban>) {
        if let Some(duration) = self.ids.scanner(now, k.src, k.user_agent) {
            // Scanners get nothing useful back: a 403 without a Warning, and no CDR.
            let ban = self.earned(now, k.src, duration, Offence::Scanner);
            let refuse = Verdict::Refuse {
                code: 403,
                why: "",
                refusal: Some(RefusalReason::Scanner),
            };
            return (refuse, Some(ban));
        }
        let class = self.rules.classify(k.src, k.cli, k.cld);
        match (class, k.authorization) {
            (Classification::IpAuthenticated { account, rule }, _) => {
                if !self.rules.client_cert_ok(rule, k.tls_client_names) {
                    return (self.client_cert_refused(k, rule), None);
                }
                (Verdict::Admit(account), None)
            }
            (_, Some(header)) => self.check_digest(now, wall, k, header),
            (Classification::Challenge, None) => (
                Verdict::Challenge {
                    stale: false,
                    account: None,
                },
                None,
            ),
            (Classification::NoMatch, None) => {
                let refuse = Verdict::Refuse {
                    code: 403,
                    why: "no matching auth rule",
                    refusal: Some(RefusalReason::NoMatchingRule),
                };
                // A stranger trying number after number is enumerating or probing for an open
                // route: it counts like a failed password.
                let ban = self
                    .ids
                    .auth_failed(now, k.src)
                    .map(|d| self.earned(now, k.src, d, Offence::Enumeration));
                (refuse, ban)
            }
        }
    }

    /// The refusal of a call whose rule names a TLS client certificate it did not present.
    /// Not an IDS offence: a carrier with an expired or misissued certificate is no attacker,
    /// and its source is one the rule already names.
    fn client_cert_refused(&self, k: &Knock, rule: Id) -> Verdict {
        debug!(src = %k.src, rule, names = ?k.tls_client_names, "no TLS client certificate the rule names");
        Verdict::Refuse {
            code: 403,
            why: "TLS client certificate required",
            refusal: Some(RefusalReason::TlsClientCert),
        }
    }

    fn check_digest(
        &mut self,
        now: Instant,
        wall: SystemTime,
        k: &Knock,
        header: &str,
    ) -> (Verdict, Option<Ban>) {
        let refuse = |code, why, reason| Verdict::Refuse {
            code,
            why,
            refusal: Some(reason),
        };
        let auth: DigestAuthorization = match header.parse() {
            Ok(a) => a,
            Err(e) => {
                // A malformed answer is a wrong answer: it counts toward the brute-force ban
                // (else `Authorization: Digest x` would probe for free).
                debug!(error = %e, src = %k.src, "unparsable Authorization");
                self.stats.auth_failures += 1;
                let ban = self.brute_force(now, k.src);
                let r = refuse(
                    400,
                    "bad Authorization header",
                    RefusalReason::BadAuthorization,
                );
                return (r, ban);
            }
        };
        let account = self.rules.by_sip_user(&auth.username).cloned();
        let result = match account.as_ref().and_then(|a| a.sip.as_ref()) {
            Some(sip) => self.verifier.verify(
                &auth,
                k.method,
                k.request_uri,
                &sip.credential,
                sip.algorithms.as_deref(),
                wall,
            ),
            None => Err(DigestError::WrongResponse),
        };
        let named = account.as_ref().map(|a| a.id);
        let e = match (result, account) {
            (Ok(_), Some(account)) => {
                let verdict = match self.rules.digest_allowed(account.id, k.src, k.cli, k.cld) {
                    Ok(Some(rule)) if !self.rules.client_cert_ok(rule, k.tls_client_names) => {
                        self.client_cert_refused(k, rule)
                    }
                    Ok(_) => Verdict::Admit(account.id),
                    // Its credentials were right: a call attempt like any other, with a CDR.
                    Err(_) => Verdict::Refuse {
                        code: 403,
                        why: "no matching auth rule",
                        refusal: None,
                    },
                };
                return (verdict, None);
            }
            (Ok(_), None) => {
                let r = refuse(403, "bad credentials", RefusalReason::BadCredentials);
                return (r, None);
            }
            (Err(e), _) => e,
        };
        if e.wants_stale() {
            let stale = Verdict::Challenge {
                stale: true,
                account: named,
            };
            return (stale, None);
        }
        self.stats.auth_failures += 1;
        debug!(user = %clip(&auth.username), error = %e, src = %k.src, "digest refused");
        let ban = self.brute_force(now, k.src);
        if e.is_bad_credentials() {
            let r = refuse(403, "bad credentials", RefusalReason::BadCredentials);
            (r, ban)
        } else {
            // E.g. an MD5 answer for an account that requires SHA-256: challenged again with
            // what that account accepts, and nothing else.
            let again = Verdict::Challenge {
                stale: false,
                account: named,
            };
            (again, ban)
        }
    }

    /// `WWW-Authenticate` values for a 401, one per algorithm, in the configured order, or
    /// in `account`'s own order and only those its credential can answer.
    pub fn challenges(
        &self,
        stale: bool,
        account: Option<Id>,
        wall: SystemTime,
    ) -> Result<Vec<String>, NonceError> {
        let sip = account
            .and_then(|id| self.rules.account(id))
            .and_then(|a| a.sip.as_ref());
        let credential = sip.map(|s| &s.credential);
        let own = sip.and_then(|s| s.algorithms.as_deref());
        Ok(self
            .verifier
            .challenges(stale, credential, own, wall)?
            .into_iter()
            .map(|c| c.to_string())
            .collect())
    }

    fn brute_force(&mut self, now: Instant, src: IpAddr) -> Option<Ban> {
        self.ids
            .auth_failed(now, src)
            .map(|d| self.earned(now, src, d, Offence::BruteForce))
    }

    /// An out-of-dialog request other than INVITE, ACK and CANCEL (OPTIONS, REGISTER,
    /// SUBSCRIBE, MESSAGE, …): the IDS looks at it like at an INVITE. A scanner's
    /// User-Agent is banned at once. We are no registrar, so every REGISTER is refused: with
    /// 405 and `Allow` to a source an `ip_only` rule names (a carrier's box set up to
    /// register learns why), with a 403 to anyone else, and those count toward the ban like
    /// a failed password (with `Authorization`: brute force; without: enumeration). Other
    /// requests from a source no rule names count as enumeration too (a few OPTIONS pings a
    /// minute stay far below the threshold; a sweep does not).
    pub fn probe(&mut self, now: Instant, k: &Knock) -> (ProbeVerdict, Option<Ban>) {
        if let Some(duration) = self.ids.scanner(now, k.src, k.user_agent) {
            let ban = self.earned(now, k.src, duration, Offence::Scanner);
            let refuse = ProbeVerdict::Refuse {
                code: 403,
                reason: RefusalReason::Scanner,
            };
            return (refuse, Some(ban));
        }
        let trusted = self.trusted(k.src);
        let register = k.method.eq_ignore_ascii_case("REGISTER");
        if trusted {
            return (ProbeVerdict::Answer, None);
        }
        let offence = if register && k.authorization.is_some() {
            self.stats.auth_failures += 1;
            Offence::BruteForce
        } else {
            Offence::Enumeration
        };
        let ban = self
            .ids
            .auth_failed(now, k.src)
            .map(|d| self.earned(now, k.src, d, offence));
        let verdict = if register {
            ProbeVerdict::Refuse {
                code: 403,
                reason: RefusalReason::NoRegistrar,
            }
        } else {
            ProbeVerdict::Answer
        };
        (verdict, ban)
    }

    /// An in-dialog request or CANCEL from `src` that named no dialog or transaction of its
    /// own (the core answered 481 or 403). The core asks only for sources it does not know
    /// (see [`Core`](super::Core)'s `dialog_probe`); counted apart from failed passwords,
    /// and a ban at the threshold.
    pub fn dialog_probe(&mut self, now: Instant, src: IpAddr) -> Option<Ban> {
        self.ids
            .dialog_probe(now, src)
            .map(|d| self.earned(now, src, d, Offence::DialogProbe))
    }

    /// Whether an `ip_only` rule names `src`: a carrier we know by its address.
    pub fn trusted(&self, src: IpAddr) -> bool {
        let src = src.to_canonical();
        self.rules
            .rules()
            .any(|r| r.ip_only && r.remote.is_some_and(|n| n.contains(&src)))
    }

    /// The IDS table's size and evictions.
    pub fn ids_stats(&self) -> IdsStats {
        self.ids.stats()
    }

    /// The kernel guard dropped SIP from `ip` for flooding (packet or INVITE rate).
    pub fn flood(&mut self, now: Instant, ip: IpAddr) -> Option<Ban> {
        let duration = self.ids.flood(now, ip)?;
        Some(self.earned(now, ip, duration, Offence::Flood))
    }

    /// Forgets IDS counts older than their windows.
    pub fn expire(&mut self, now: Instant) {
        self.ids.expire(now);
    }
}
