//! OCSP stapling (RFC 6960, RFC 6066 `status_request`): when the served certificate names an
//! OCSP responder (its AIA extension) and its chain carries the issuer, the response is
//! fetched by POST (bounded by `[acme] ocsp_timeout_secs`), stapled to the certificate
//! rustls serves, and refreshed halfway to its `nextUpdate`. A fetch that fails keeps the
//! previous response while it is still valid, drops it once expired (an expired staple makes
//! strict clients fail), and is retried after [`RETRY`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::sign::CertifiedKey;
use tracing::{debug, info, warn};

use crate::tls::TlsState;

/// Wait after a failed fetch.
pub const RETRY: Duration = Duration::from_secs(300);
/// How often the served certificate is checked for a change (a renewal needs a new staple).
const CHECK: Duration = Duration::from_secs(2);
/// Responses larger than this are refused.
const MAX_RESPONSE: usize = 64 * 1024;

/// The OCSP responder URL of a DER certificate's AIA extension, if it names one.
pub fn responder_url(cert: &[u8]) -> Option<String> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
    c.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityInfoAccess(aia) => {
                aia.accessdescs.iter().find_map(|d| {
                    match (&d.access_location, d.access_method.to_id_string().as_str()) {
                        (GeneralName::URI(u), "1.3.6.1.5.5.7.48.1") => Some((*u).to_owned()),
                        _ => None,
                    }
                })
            }
            _ => None,
        })
}

/// A DER TLV.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn sha1(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, data)
        .as_ref()
        .to_vec()
}

/// The DER OCSPRequest for `leaf` issued by `issuer` (one CertID, SHA-1, no nonce: a
/// stapled response is shared by every client, so it cannot carry one client's nonce).
pub fn request(leaf: &[u8], issuer: &[u8]) -> Result<Vec<u8>> {
    let (_, l) = x509_parser::parse_x509_certificate(leaf).map_err(|e| anyhow!("leaf: {e}"))?;
    let (_, i) = x509_parser::parse_x509_certificate(issuer).map_err(|e| anyhow!("issuer: {e}"))?;
    if l.issuer().as_raw() != i.subject().as_raw() {
        bail!("the second certificate of the chain is not the leaf's issuer");
    }
    // id-sha1 with NULL parameters.
    let alg = tlv(
        0x30,
        &[tlv(0x06, &[0x2b, 0x0e, 0x03, 0x02, 0x1a]), tlv(0x05, &[])].concat(),
    );
    let cert_id = tlv(
        0x30,
        &[
            alg,
            tlv(0x04, &sha1(i.subject().as_raw())),
            tlv(0x04, &sha1(&i.public_key().subject_public_key.data)),
            tlv(0x02, l.raw_serial()),
        ]
        .concat(),
    );
    let req = tlv(0x30, &cert_id);
    let list = tlv(0x30, &req);
    let tbs = tlv(0x30, &list);
    Ok(tlv(0x30, &tbs))
}

/// A DER reader over one level of TLVs.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The next TLV as (tag, content).
    fn next(&mut self) -> Result<(u8, &'a [u8])> {
        let b = self.0;
        if b.len() < 2 {
            bail!("truncated DER");
        }
        let tag = b[0];
        let (len, head) = match b[1] {
            n if n < 0x80 => (usize::from(n), 2),
            n => {
                let k = usize::from(n & 0x7f);
                if k == 0 || k > 4 || b.len() < 2 + k {
                    bail!("bad DER length");
                }
                let len = b[2..2 + k]
                    .iter()
                    .fold(0usize, |a, x| (a << 8) | usize::from(*x));
                (len, 2 + k)
            }
        };
        let end = head.checked_add(len).filter(|e| *e <= b.len());
        let end = end.ok_or_else(|| anyhow!("DER length past the end"))?;
        self.0 = &b[end..];
        Ok((tag, &b[head..end]))
    }

    fn expect(&mut self, tag: u8) -> Result<&'a [u8]> {
        let (t, c) = self.next()?;
        if t != tag {
            bail!("DER tag {t:#04x} where {tag:#04x} was expected");
        }
        Ok(c)
    }
}

/// A GeneralizedTime (`YYYYMMDDHHMMSS[.f]Z`) as a time.
fn generalized_time(s: &[u8]) -> Result<SystemTime> {
    let s = std::str::from_utf8(s).context("GeneralizedTime")?;
    let n = |r: std::ops::Range<usize>| -> Result<i64> {
        s.get(r)
            .and_then(|x| x.parse().ok())
            .ok_or_else(|| anyhow!("bad GeneralizedTime {s:?}"))
    };
    let (y, mo, d, h, mi, se) = (
        n(0..4)?,
        n(4..6)?,
        n(6..8)?,
        n(8..10)?,
        n(10..12)?,
        n(12..14)?,
    );
    if !s.ends_with('Z') || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        bail!("bad GeneralizedTime {s:?}");
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y2, m2) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se;
    u64::try_from(secs)
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
        .map_err(|_| anyhow!("GeneralizedTime before 1970"))
}

/// What a response says about the first certificate in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// `good`, `revoked` or `unknown`.
    pub cert_status: &'static str,
    /// When it was known to be right.
    pub this_update: SystemTime,
    /// When a newer one is available; None: any time.
    pub next_update: Option<SystemTime>,
}

/// Reads a DER OCSPResponse: it must be `successful` and a basic response with one
/// SingleResponse at least. Its signature is the client's to check (that is what stapling
/// leaves to it); a response that does not parse is not stapled.
pub fn parse(der: &[u8]) -> Result<Status> {
    let mut top = Der(Der(der).expect(0x30)?);
    let status = top.expect(0x0a)?;
    if status != [0] {
        bail!("OCSP responder status {status:?} (not successful)");
    }
    let mut bytes = Der(Der(top.expect(0xa0)?).expect(0x30)?);
    let oid = bytes.expect(0x06)?;
    // id-pkix-ocsp-basic 1.3.6.1.5.5.7.48.1.1
    if oid != [0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01] {
        bail!("not a basic OCSP response");
    }
    let basic = bytes.expect(0x04)?;
    let mut tbs = Der(Der(Der(basic).expect(0x30)?).expect(0x30)?);
    let (mut t, _) = tbs.next()?;
    if t == 0xa0 {
        t = tbs.next()?.0; // version, then responderID
    }
    if t != 0xa1 && t != 0xa2 {
        bail!("bad responderID");
    }
    tbs.expect(0x18)?; // producedAt
    let mut responses = Der(tbs.expect(0x30)?);
    let mut single = Der(responses.expect(0x30)?);
    single.expect(0x30)?; // certID
    let cert_status = match single.next()?.0 {
        0x80 => "good",
        0xa1 => "revoked",
        0x82 => "unknown",
        t => bail!("bad certStatus tag {t:#04x}"),
    };
    let this_update = generalized_time(single.expect(0x18)?)?;
    let next_update = match single.next() {
        Ok((0xa0, c)) => Some(generalized_time(Der(c).expect(0x18)?)?),
        _ => None,
    };
    Ok(Status {
        cert_status,
        this_update,
        next_update,
    })
}

/// POSTs `req` to `url` (http only: OCSP is plain HTTP, its responses are signed).
async fn fetch(url: &str, req: Vec<u8>, timeout: Duration) -> Result<Vec<u8>> {
    if !url.starts_with("http://") {
        bail!("OCSP responder {url:?} is not an http:// URL");
    }
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let r = hyper::Request::post(url)
        .header("content-type", "application/ocsp-request")
        .header("accept", "application/ocsp-response")
        .body(Full::new(Bytes::from(req)))
        .context("OCSP request")?;
    let work = async {
        let resp = client.request(r).await.context("OCSP responder")?;
        if !resp.status().is_success() {
            bail!("OCSP responder answered {}", resp.status());
        }
        let body = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| anyhow!("reading the OCSP response: {e}"))?;
        Ok(body.to_bytes().to_vec())
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| anyhow!("OCSP responder {url}: no answer in {timeout:?}"))?
}

/// Staples `der` to `ck` if `ck` is still the served certificate.
fn apply(st: &TlsState, ck: &Arc<CertifiedKey>, der: Option<Vec<u8>>) {
    let mut new = (**ck).clone();
    new.ocsp = der;
    st.replace_if_current(ck, Arc::new(new));
}

/// Fetches and staples a response for the certificate `ck`; returns when to refresh and
/// the response now stapled.
async fn staple(
    st: &TlsState,
    ck: &Arc<CertifiedKey>,
    timeout: Duration,
) -> (Duration, Option<Vec<u8>>) {
    let never = (Duration::MAX, None);
    let Some(leaf) = ck.cert.first() else {
        return never;
    };
    let Some(url) = responder_url(leaf) else {
        return never;
    };
    let Some(issuer) = ck.cert.get(1) else {
        warn!(%url, "{}: the certificate names an OCSP responder but its chain lacks the issuer; not stapling", st.files.label);
        return never;
    };
    let got = async {
        let req = request(leaf, issuer)?;
        let der = fetch(&url, req, timeout).await?;
        let status = parse(&der)?;
        Ok::<_, anyhow::Error>((der, status))
    }
    .await;
    let now = SystemTime::now();
    match got {
        Ok((der, status)) => {
            if status.cert_status != "good" {
                warn!(%url, status = status.cert_status, "{}: OCSP says the certificate is not good", st.files.label);
            }
            apply(st, ck, Some(der.clone()));
            info!(%url, status = status.cert_status, "{}: OCSP response stapled", st.files.label);
            // Halfway to nextUpdate, within [1 min, 1 day].
            let left = status
                .next_update
                .and_then(|n| n.duration_since(now).ok())
                .unwrap_or(Duration::from_secs(7200));
            (
                (left / 2).clamp(Duration::from_secs(60), Duration::from_secs(86_400)),
                Some(der),
            )
        }
        Err(e) => {
            let expired = ck
                .ocsp
                .as_deref()
                .and_then(|d| parse(d).ok())
                .and_then(|s| s.next_update)
                .is_some_and(|n| n <= now);
            if expired {
                apply(st, ck, None);
            }
            warn!(%url, error = format!("{e:#}"), expired_staple_dropped = expired, "{}: OCSP fetch failed; retrying", st.files.label);
            (RETRY, if expired { None } else { ck.ocsp.clone() })
        }
    }
}

/// Keeps `st`'s certificate stapled until `stop` says so.
pub async fn run(
    st: Arc<TlsState>,
    timeout: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // (leaf handled, when to fetch again, the response stapled to it)
    let mut handled: Option<(Vec<u8>, tokio::time::Instant, Option<Vec<u8>>)> = None;
    loop {
        let ck = st.current();
        let leaf = ck.cert.first().map(|c| c.to_vec()).unwrap_or_default();
        let now = tokio::time::Instant::now();
        let due = match &handled {
            Some((l, at, stapled)) if *l == leaf => {
                // The same certificate re-read from its files lost its staple: put it back.
                if ck.ocsp.is_none() && stapled.is_some() {
                    apply(&st, &ck, stapled.clone());
                }
                *at
            }
            _ => now,
        };
        if due <= now {
            let (next, stapled) = staple(&st, &ck, timeout).await;
            debug!(next = ?next, "{}: OCSP next check", st.files.label);
            let at = now
                .checked_add(next)
                .unwrap_or(now + Duration::from_secs(86_400 * 365));
            handled = Some((leaf, at, stapled));
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECK.min(due - now)) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generalized_times_and_der_lengths() {
        let t = generalized_time(b"20260102030405Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_767_323_045
        );
        assert!(generalized_time(b"2026").is_err());
        let long = tlv(0x04, &[7; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let mut d = Der(&long);
        assert_eq!(d.expect(0x04).unwrap().len(), 300);
        assert!(Der(&long[..100]).next().is_err());
        assert!(parse(&[0x30, 0x03, 0x0a, 0x01, 0x06]).is_err());
    }
}
