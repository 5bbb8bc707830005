//! A blocking HTTPS client for the management API (ureq, rustls with the ring provider), and
//! the errors it reports with their exit codes. Shared by `sbcctl` and `sbc-tui`.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// Exit codes of `sbcctl`, documented in `--help` and the README.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Usage or validation error: bad arguments, or the API said 400/409 (other 4xx too).
    pub const USAGE: i32 = 1;
    /// Authentication or authorisation: not logged in, 401, 403.
    pub const AUTH: i32 = 2;
    /// The object does not exist: 404.
    pub const NOT_FOUND: i32 = 3;
    /// The server failed or could not be reached: 5xx, TLS, connection, bad reply.
    pub const SERVER: i32 = 4;
    /// Locked out after failed logins: 429.
    pub const LOCKED: i32 = 5;

    /// The exit code for an HTTP status the API answered with.
    pub fn for_status(status: u16) -> i32 {
        match status {
            200..=299 => OK,
            401 | 403 => AUTH,
            404 => NOT_FOUND,
            429 => LOCKED,
            400..=499 => USAGE,
            _ => SERVER,
        }
    }
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Bad arguments or input, found before asking the server.
    Usage(String),
    /// Not logged in (no token anywhere), found before asking the server.
    NotLoggedIn(String),
    /// The API answered with an error status.
    Api(ApiError),
    /// A name given for an id matched nothing in the list the API returned.
    NotFound(String),
    /// TLS, connection, timeout, or a reply that is not what the API promises.
    Transport(String),
    /// A local file (token, CA) could not be read or written.
    Local(String),
}

/// An error reply: `{"error", "message", "field"}` and the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The API's error code (`invalid`, `not_found`, ...); empty when the body had none.
    pub code: String,
    /// The message for people.
    pub message: String,
    /// The request field at fault, when the API names one.
    pub field: Option<String>,
    /// `Retry-After`, when a lockout says when to try again.
    pub retry_after: Option<String>,
}

impl Error {
    /// The exit code `sbcctl` ends with for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Local(_) => exit::USAGE,
            Error::NotLoggedIn(_) => exit::AUTH,
            Error::NotFound(_) => exit::NOT_FOUND,
            Error::Api(e) => exit::for_status(e.status),
            Error::Transport(_) => exit::SERVER,
        }
    }

    /// The error as one JSON object (what `--json` prints on standard error).
    pub fn to_json(&self) -> Value {
        let (code, message, status, field) = match self {
            Error::Usage(m) => ("usage", m.clone(), None, None),
            Error::NotLoggedIn(m) => ("not_logged_in", m.clone(), None, None),
            Error::Transport(m) => ("transport", m.clone(), None, None),
            Error::Local(m) => ("local", m.clone(), None, None),
            Error::NotFound(m) => ("not_found", m.clone(), None, None),
            Error::Api(e) => (
                e.code.as_str(),
                e.message.clone(),
                Some(e.status),
                e.field.clone(),
            ),
        };
        let mut v = serde_json::json!({
            "error": code,
            "message": message,
            "exit": self.exit_code(),
        });
        if let Some(s) = status {
            v["status"] = s.into();
        }
        if let Some(f) = field {
            v["field"] = f.into();
        }
        if let Error::Api(ApiError {
            retry_after: Some(r),
            ..
        }) = self
        {
            v["retry_after"] = r.clone().into();
        }
        v
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m)
            | Error::NotLoggedIn(m)
            | Error::Transport(m)
            | Error::Local(m)
            | Error::NotFound(m) => f.write_str(m),
            Error::Api(e) => {
                write!(f, "{} ({}", e.message, e.status)?;
                if !e.code.is_empty() {
                    write!(f, " {}", e.code)?;
                }
                f.write_str(")")?;
                if let Some(field) = &e.field {
                    write!(f, " [field: {field}]")?;
                }
                if let Some(r) = &e.retry_after {
                    write!(f, "; retry after {r} s")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {}

/// Where and how to connect.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Base URL, e.g. `https://127.0.0.1:8443`.
    pub url: String,
    /// Accept any certificate (a self-signed one).
    pub insecure: bool,
    /// Trust only the certificates in this PEM file.
    pub ca: Option<std::path::PathBuf>,
    /// Allow `http://` (tests only; hidden flag).
    pub allow_http: bool,
    /// Time allowed for one request.
    pub timeout: Duration,
}

/// A reply with a success status.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON; an empty body (204) is `null`.
    pub fn json(&self) -> Result<Value, Error> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::Transport(format!(
                "the server's reply ({}) is not JSON: {e}",
                self.status
            ))
        })
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// HTTP method of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `DELETE`.
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

/// The management API client.
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// A client for `opts.url`, sending `token` as a bearer token when given.
    pub fn new(opts: &Options, token: Option<String>) -> Result<Client, Error> {
        let base = check_url(&opts.url, opts.allow_http)?;
        let mut tls = TlsConfig::builder();
        if opts.insecure {
            tls = tls.disable_verification(true);
        } else if let Some(ca) = &opts.ca {
            tls = tls.root_certs(RootCerts::new_with_certs(&load_ca(ca)?));
        }
        let config = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .https_only(!opts.allow_http)
            .max_redirects(0)
            .timeout_global(Some(opts.timeout))
            .user_agent(concat!("sbcctl/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client {
            base,
            token,
            agent: config.new_agent(),
        })
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether a token is sent.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// One call. `query` pairs with empty values are left out. A non-2xx status is an
    /// [`Error::Api`] built from the error body.
    pub fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Reply, Error> {
        let url = format!("{}{}{}", self.base, path, query_string(query));
        let mut b = ureq::http::Request::builder()
            .method(method.as_str())
            .uri(&url)
            .header("Accept", "application/json");
        if let Some(t) = &self.token {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        let res = match body {
            Some(v) => {
                let bytes = serde_json::to_vec(v).expect("a JSON value serialises");
                let req = b
                    .header("Content-Type", "application/json")
                    .body(bytes)
                    .map_err(|e| Error::Usage(format!("bad request {url}: {e}")))?;
                self.agent.run(req)
            }
            None => {
                let req = b
                    .body(())
                    .map_err(|e| Error::Usage(format!("bad request {url}: {e}")))?;
                self.agent.run(req)
            }
        };
        let mut res = res.map_err(|e| transport_error(&self.base, e))?;
        let status = res.status().as_u16();
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header("content-type").unwrap_or_default();
        let retry_after = header("retry-after");
        let body = res
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .map_err(|e| transport_error(&self.base, e))?;
        if (200..300).contains(&status) {
            return Ok(Reply {
                status,
                content_type,
                body,
            });
        }
        Err(Error::Api(api_error(status, &body, retry_after)))
    }

    /// A call whose reply is JSON (`null` for 204).
    pub fn json(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        self.call(method, path, query, body)?.json()
    }

    /// `GET path`, the reply as JSON.
    pub fn get(&self, path: &str) -> Result<Value, Error> {
        self.json(Method::Get, path, &[], None)
    }

    /// Opens a long-lived `GET` (server-sent events, `Accept: text/event-stream`): the
    /// client's overall timeout does not apply, only the connect and first-reply ones, so
    /// the body can be read for as long as the server sends.
    pub fn open_stream(&self, path: &str) -> Result<impl std::io::Read + Send + use<>, Error> {
        let url = format!("{}{}", self.base, path);
        let mut b = ureq::http::Request::builder()
            .method("GET")
            .uri(&url)
            .header("Accept", "text/event-stream");
        if let Some(t) = &self.token {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        let req = b
            .body(())
            .map_err(|e| Error::Usage(format!("bad request {url}: {e}")))?;
        let req = self
            .agent
            .configure_request(req)
            .timeout_global(None)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_recv_response(Some(Duration::from_secs(10)))
            .build();
        let mut res = self
            .agent
            .run(req)
            .map_err(|e| transport_error(&self.base, e))?;
        let status = res.status().as_u16();
        if !(200..300).contains(&status) {
            let body = res
                .body_mut()
                .with_config()
                .limit(1 << 16)
                .read_to_vec()
                .unwrap_or_default();
            return Err(Error::Api(api_error(status, &body, None)));
        }
        Ok(res.into_body().into_reader())
    }
}

/// Builds the error of a non-2xx reply; a body that is not the API's error object (a proxy's
/// page, say) still gives a message.
pub fn api_error(status: u16, body: &[u8], retry_after: Option<String>) -> ApiError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let s = |k: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let code = s("error").unwrap_or_default();
    let message = s("message").unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() || parsed.is_some() {
            reason(status).to_owned()
        } else {
            text.chars().take(200).collect()
        }
    });
    ApiError {
        status,
        code,
        message,
        field: s("field"),
        retry_after,
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "bad request",
        401 => "not authenticated",
        403 => "forbidden",
        404 => "not found",
        409 => "conflict",
        429 => "too many attempts",
        500 => "internal server error",
        502 => "bad gateway",
        503 => "service unavailable",
        _ => "request failed",
    }
}

fn transport_error(base: &str, e: ureq::Error) -> Error {
    let text = e.to_string();
    // rustls's verdicts arrive as ureq::Error::Io as often as ::Tls/::Rustls.
    let cert = matches!(e, ureq::Error::Tls(_) | ureq::Error::Rustls(_))
        || text.contains("certificate")
        || text.contains("UnknownIssuer");
    let hint = if cert {
        "; for sipd's self-signed certificate pass --ca <data_dir>/mgmt-tls.crt (or --insecure)"
    } else {
        ""
    };
    Error::Transport(format!("{base}: {text}{hint}"))
}

/// Checks and normalises the base URL (no trailing slash).
pub fn check_url(url: &str, allow_http: bool) -> Result<String, Error> {
    let url = url.trim().trim_end_matches('/');
    let rest = if let Some(r) = url.strip_prefix("https://") {
        r
    } else if let Some(r) = url.strip_prefix("http://") {
        if !allow_http {
            return Err(Error::Usage(format!(
                "{url}: the management API is HTTPS only (use https://)"
            )));
        }
        r
    } else {
        return Err(Error::Usage(format!(
            "{url}: not a URL; expected https://HOST[:PORT]"
        )));
    };
    if rest.is_empty() || rest.contains('/') && !rest.split('/').skip(1).all(str::is_empty) {
        return Err(Error::Usage(format!(
            "{url}: expected https://HOST[:PORT] with no path"
        )));
    }
    Ok(url.to_owned())
}

/// Reads the certificates of a PEM file (a self-signed certificate or a CA bundle).
pub fn load_ca(path: &Path) -> Result<Vec<Certificate<'static>>, Error> {
    let pem =
        std::fs::read(path).map_err(|e| Error::Local(format!("--ca {}: {e}", path.display())))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(Error::Local(format!("--ca {}: {e}", path.display()))),
        }
    }
    if certs.is_empty() {
        return Err(Error::Local(format!(
            "--ca {}: no PEM certificate in the file",
            path.display()
        )));
    }
    Ok(certs)
}

/// `?k=v&…` with values percent-encoded; empty values left out.
pub fn query_string(query: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (k, v) in query.iter().filter(|(_, v)| !v.is_empty()) {
        out.push(if out.is_empty() { '?' } else { '&' });
        out.push_str(&encode(k));
        out.push('=');
        out.push_str(&encode(v));
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters; also for path segments.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_by_status() {
        assert_eq!(exit::for_status(200), 0);
        assert_eq!(exit::for_status(204), 0);
        assert_eq!(exit::for_status(400), 1);
        assert_eq!(exit::for_status(409), 1);
        assert_eq!(exit::for_status(422), 1);
        assert_eq!(exit::for_status(401), 2);
        assert_eq!(exit::for_status(403), 2);
        assert_eq!(exit::for_status(404), 3);
        assert_eq!(exit::for_status(429), 5);
        assert_eq!(exit::for_status(500), 4);
        assert_eq!(exit::for_status(503), 4);
        assert_eq!(exit::for_status(302), 4);
    }

    #[test]
    fn exit_codes_by_error() {
        assert_eq!(Error::Usage("x".into()).exit_code(), 1);
        assert_eq!(Error::Local("x".into()).exit_code(), 1);
        assert_eq!(Error::NotLoggedIn("x".into()).exit_code(), 2);
        assert_eq!(Error::Transport("x".into()).exit_code(), 4);
        assert_eq!(Error::NotFound("x".into()).exit_code(), 3);
        let api = |status| Error::Api(api_error(status, b"", None)).exit_code();
        assert_eq!(api(409), 1);
        assert_eq!(api(401), 2);
        assert_eq!(api(404), 3);
        assert_eq!(api(503), 4);
        assert_eq!(api(429), 5);
    }

    #[test]
    fn api_error_bodies() {
        let e = api_error(
            400,
            br#"{"error":"invalid","message":"bad cidr","field":"remote"}"#,
            None,
        );
        assert_eq!(e.code, "invalid");
        assert_eq!(e.message, "bad cidr");
        assert_eq!(e.field.as_deref(), Some("remote"));
        let shown = Error::Api(e).to_string();
        assert_eq!(shown, "bad cidr (400 invalid) [field: remote]");

        let e = api_error(502, b"<html>Bad Gateway</html>", None);
        assert_eq!(e.message, "<html>Bad Gateway</html>");
        let e = api_error(404, b"", None);
        assert_eq!(e.message, "not found");
        let e = api_error(
            429,
            br#"{"error":"locked_out","message":"try later"}"#,
            Some("30".into()),
        );
        let j = Error::Api(e).to_json();
        assert_eq!(j["exit"], 5);
        assert_eq!(j["retry_after"], "30");
        assert_eq!(j["status"], 429);
    }

    #[test]
    fn urls() {
        assert_eq!(
            check_url("https://127.0.0.1:8443/", false).unwrap(),
            "https://127.0.0.1:8443"
        );
        assert!(check_url("http://127.0.0.1:8443", false).is_err());
        assert!(check_url("http://127.0.0.1:8443", true).is_ok());
        assert!(check_url("127.0.0.1:8443", false).is_err());
        assert!(check_url("https://h/api", false).is_err());
        assert!(check_url("https://", false).is_err());
    }

    #[test]
    fn query_encoding() {
        assert_eq!(query_string(&[]), "");
        assert_eq!(
            query_string(&[
                ("a", "1".into()),
                ("b", String::new()),
                ("c", "x y&z".into())
            ]),
            "?a=1&c=x%20y%26z"
        );
        assert_eq!(encode("10.0.0.0/8"), "10.0.0.0%2F8");
        assert_eq!(encode("::1"), "%3A%3A1");
    }
}
