//! The HTTPS management API inside `sipd run` (see `sipd/API.md` for every endpoint).
//!
//! - [`tls`]: rustls (ring), TLS 1.2/1.3, forward-secret suites, self-signed or configured
//!   certificate, reloaded when its files change.
//! - Connections: each source is checked against `[firewall] management_allow` (plus allow
//!   entries added through the API) before the TLS handshake; the same list is programmed
//!   into the data plane's service ACL for the management port. [`conn`]: caps in total and
//!   per source, deadlines for the handshake and each request's headers, an idle timeout.
//! - Every request: bearer token → [`StaffAuth::authorize`] (expiry, revocation, the
//!   user's allowed hosts) → [`Authorized::permit`] with the endpoint's [`Action`].
//! - Every change: one store transaction holding the change and exactly one audit entry
//!   (before/after as JSON), then the call core is told (`Control::reload`/`credit`) or the
//!   data plane is programmed.
//! - [`metrics`]: `/metrics` in Prometheus text format; [`alerts`]: security warnings.
//! - `GET /api/events`: the live event stream ([`routes::events`], fed by the event loop,
//!   the firewall and the once-a-second `feed`).
//!
//! Store and Argon2 work runs on the blocking pool, never on the async workers.

mod alert_mail;
pub mod alerts;
pub mod conn;
pub mod error;
mod feed;
pub mod guard;
pub mod metrics;
pub mod routes;
pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use relay_user::DataPlane;

use crate::config::Config;
use crate::control::Control;
use crate::firewall::Firewall;
use crate::mgmt::{Action, Authorized, AuthzError, StaffAuth, Target, Visible};
use crate::store::{Actor, AuditDraft, AuditKind, AuditResult, Auditor, Store};
pub use conn::ConnLimits;
use error::{ApiError, ApiResult};

/// Request bodies larger than this are refused (413).
const MAX_BODY: usize = 64 * 1024;

/// Everything a handler may use.
pub struct ApiState {
    /// The call core's commands and the shared store, data plane, transports and firewall.
    pub control: Control,
    /// Logins, tokens and permissions of staff.
    pub auth: StaffAuth,
    /// The configuration `sipd run` started with (not reloaded: a change needs a restart).
    pub cfg: Config,
    /// The serving certificate, swapped in place when its files change.
    pub tls: Arc<tls::TlsState>,
    /// Turns `true` when the API stops (event streams end then).
    pub stop: watch::Receiver<bool>,
    /// Places for event streams (`max_event_streams`).
    pub streams: Arc<tokio::sync::Semaphore>,
}

/// The state every handler and extractor receives, shared by all connections.
pub type State = Arc<ApiState>;

impl ApiState {
    /// The store (staff, accounts, CDRs, audit); its writes flush, so call it from [`blocking`].
    pub fn store(&self) -> &Store {
        &self.control.store
    }

    /// The data plane (mode, counters, ban list, service ACLs).
    pub fn dp(&self) -> &DataPlane {
        &self.control.dataplane
    }

    /// The firewall, whose changes the API makes directly (SIP and management rules, bans).
    pub fn firewall(&self) -> &Firewall {
        &self.control.firewall
    }
}

/// Runs `f` with the state on the blocking pool (store flushes, Argon2).
pub async fn blocking<R: Send + 'static>(
    st: &State,
    f: impl FnOnce(&ApiState) -> ApiResult<R> + Send + 'static,
) -> ApiResult<R> {
    let st = st.clone();
    tokio::task::spawn_blocking(move || f(&st)).await?
}

/// The identity of a request, checked by [`guard`] against the endpoint's access before
/// the handler receives it.
#[derive(Clone)]
pub struct Caller {
    /// The staff member and session the token belongs to.
    pub authz: Authorized,
    /// The client's IP (the TCP peer), for audit entries and the allowed-host checks.
    pub ip: IpAddr,
    /// `METHOD /path` of the request, for the audit entry of a refusal.
    pub request: String,
    /// Where a refusal is audited.
    pub state: State,
    /// What the caller may see of lists across accounts (a customer: its own account).
    pub visible: Visible,
}

impl Caller {
    /// Whether the caller may do `a` on `t` (see [`Authorized::permit_in`]); a refusal (403,
    /// or 404 for another account's record) is audited as a `deny` entry naming the user, the
    /// source, the request and the reason. Only [`guard`] asks.
    pub(crate) fn permit_in(&self, a: Action, t: Target) -> ApiResult<Visible> {
        self.authz.permit_in(a, t).map_err(|e| {
            self.audit_denial(a, &e);
            ApiError::from(e)
        })
    }

    /// Appended before the 403 goes out (so it is listed at once) and flushed off the event
    /// loop (an fsync can take milliseconds). Role refusals only: a setup-only session's
    /// refusals are its own enrolment steps, not denials.
    fn audit_denial(&self, a: Action, e: &AuthzError) {
        if !matches!(e, AuthzError::Forbidden { .. } | AuthzError::OtherAccount) {
            return;
        }
        let by = self.actor();
        let entry = AuditDraft {
            ts_ms: by.ts_ms(),
            actor: by.username(),
            source: by.source(),
            kind: AuditKind::Deny,
            target: Some(self.request.clone()),
            result: AuditResult::Failure,
            reason: Some(e.to_string()),
            before: None,
            after: Some(serde_json::json!({
                "action": a,
                "role": self.authz.staff.role,
                "account": self.authz.staff.customer_of(),
            })),
        };
        if let Err(err) = self.state.store().append_audit_lazy(&entry) {
            tracing::error!(error = %err, "audit entry for a refused request not written");
            return;
        }
        let st = self.state.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(err) = st.store().flush_audit() {
                tracing::error!(error = %err, "audit log not flushed");
            }
        });
    }

    /// The caller's staff username.
    pub fn username(&self) -> &str {
        &self.authz.staff.username
    }

    /// Who this request acts as: every change it makes is audited as this (a customer
    /// user with its account: see [`crate::mgmt::audit_name`]).
    pub fn actor(&self) -> Actor {
        Actor {
            username: crate::mgmt::audit_name(&self.authz.staff),
            source: self.ip,
        }
    }
}

/// The client's address, as axum's `ConnectInfo` (set by [`conn`] on every request).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The client's IP from the connection's [`PeerAddr`]; `0.0.0.0` if missing, which [`conn`]
/// never leaves (it sets it on every request).
pub(crate) fn peer_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<PeerAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.0.ip())
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive); `None` if
/// absent or another scheme.
pub(crate) fn bearer(parts: &Parts) -> Option<String> {
    bearer_of(&parts.headers)
}

/// The bearer token in these headers (see [`bearer`]).
pub(crate) fn bearer_of(headers: &axum::http::HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

impl FromRequestParts<State> for Caller {
    type Rejection = ApiError;

    /// The caller [`guard`] checked; a handler on a route without one (a public route)
    /// gets a 500, never an unchecked caller.
    async fn from_request_parts(parts: &mut Parts, _: &State) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .remove::<Caller>()
            .ok_or_else(|| ApiError::internal("endpoint without a checked caller"))
    }
}

impl Caller {
    /// The bearer token checked (expiry, revocation, user enabled, allowed hosts); what it
    /// may do is [`guard`]'s decision next.
    pub(crate) async fn authenticate(parts: &Parts, st: &State) -> Result<Self, ApiError> {
        let ip = peer_ip(parts);
        let Some(token) = bearer(parts) else {
            return Err(ApiError::unauthorized(
                "token_invalid",
                "log in first: Authorization: Bearer <token>",
            ));
        };
        let authz = blocking(st, move |s| {
            s.auth
                .authorize(s.store(), &token, ip, SystemTime::now())
                .map_err(ApiError::from)
        })
        .await?;
        let request = format!("{} {}", parts.method, parts.uri.path());
        Ok(Caller {
            authz,
            ip,
            request,
            state: st.clone(),
            visible: Visible::All,
        })
    }
}

/// Headers every response carries.
const SECURITY_HEADERS: [(&str, &str); 6] = [
    (
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("cache-control", "no-store"),
    ("content-security-policy", "default-src 'none'"),
    ("referrer-policy", "no-referrer"),
];

async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    for (k, v) in SECURITY_HEADERS {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    r
}

/// All endpoints with the 404/405 fallbacks, the body size cap and the security headers, over `st`.
pub(crate) fn router(st: State) -> Router {
    routes::router()
        .route_layer(axum::middleware::from_fn_with_state(
            st.clone(),
            guard::guard,
        ))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(st)
}

/// The running API; [`ApiHandle::stop`] ends it.
pub struct ApiHandle {
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    /// Where the API listens (the bound address, so port 0 in the config becomes the real port).
    pub local_addr: SocketAddr,
}

impl ApiHandle {
    /// Stops accepting, lets requests in flight finish (graceful shutdown) for up to 3 seconds,
    /// then drops the connections still open.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(Duration::from_secs(3), self.server)
            .await
            .is_err()
        {
            warn!("management API: connections still open at shutdown; dropped");
        }
    }
}

/// Starts the API on `[management] listen`. Fails if the certificate, the pepper or the
/// address is unusable (`sipd run` then logs it as an error and serves calls without it).
pub async fn start(cfg: &Config, control: Control) -> Result<ApiHandle> {
    let m = &cfg.management;
    let auth = {
        let cfg = cfg.clone();
        let store = control.store.clone();
        tokio::task::spawn_blocking(move || StaffAuth::from_config(&cfg, store.has_staff()?))
            .await
            .context("staff authentication")??
    };
    let (cert, key) = crate::acme::startup_pair(
        control.acme.as_deref(),
        m.tls_cert.as_deref(),
        m.tls_key.as_deref(),
    );
    let tls = tls::TlsState::load(
        tls::MANAGEMENT,
        cert.as_deref(),
        key.as_deref(),
        &cfg.data_dir,
        m.listen.ip(),
    )
    .context("management API certificate")?;
    if let Some(a) = &control.acme {
        a.serve(tls.clone());
    }
    let server_cfg = tls::server_config(tls.resolver.clone())?;
    let listener = TcpListener::bind(m.listen).await.map_err(|e| {
        let hint = crate::transport::bind_hint(m.listen, &e);
        anyhow::Error::new(e).context(format!("management API: binding {}{hint}", m.listen))
    })?;
    let local = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let st: State = Arc::new(ApiState {
        control,
        auth,
        cfg: cfg.clone(),
        tls: tls.clone(),
        stop: stop_rx.clone(),
        streams: Arc::new(tokio::sync::Semaphore::new(m.connections.max_event_streams)),
    });
    st.firewall().program_management(local.port())?;

    tokio::spawn(tls.clone().watch(stop_rx.clone()));
    tokio::spawn(crate::ocsp::run(
        tls.clone(),
        Duration::from_secs(cfg.acme.ocsp_timeout_secs),
        stop_rx.clone(),
    ));
    tokio::spawn(feed::run(st.clone(), stop_rx.clone()));
    tokio::spawn(alert_mail::run(st.clone(), stop_rx.clone()));
    let app = router(st.clone());
    let server = tokio::spawn(conn::accept_loop(
        listener,
        TlsAcceptor::from(Arc::new(server_cfg)),
        st,
        app,
        stop_rx,
    ));
    info!(
        listen = %local,
        certificate = %tls.cert_path.display(),
        self_signed = tls.self_signed.load(std::sync::atomic::Ordering::Relaxed),
        "management API: https://{local}/"
    );
    Ok(ApiHandle {
        stop: stop_tx,
        server,
        local_addr: local,
    })
}
