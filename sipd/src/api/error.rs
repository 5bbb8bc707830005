//! The API's one error shape, `{"error", "message", "field"?}`, the mapping from every
//! library error to a status and code, and the JSON body / query extractors that turn bad
//! input into a 400 naming the field.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::control::ControlError;
use crate::mgmt::{AuthzError, LoginError, StaffError};
use crate::store::StoreError;
use sipd_core::records::{FieldError, FieldErrors};

/// Every failure an API handler returns: rendered as the status and the JSON body `{"error": code,
/// "message", "field"?}`, with `Retry-After` and `WWW-Authenticate` when they apply.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Stable machine code clients decide on (`invalid`, `not_found`, `token_expired`, ...); never
    /// the message.
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// The request field at fault (dotted JSON path), on a 400.
    pub field: Option<String>,
    /// Seconds for the `Retry-After` header (sent as at least 1), on a 429 (login lock-out).
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: self.code,
            message: &self.message,
            field: self.field.as_deref(),
        };
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.max(1).to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sbc\""),
            );
        }
        r
    }
}

/// What every handler returns.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with no field and no `Retry-After`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// 400 naming the field at fault (dotted JSON path, e.g. `sip.username`).
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            field: Some(field.into()),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid", message)
        }
    }

    /// 404: no such record or endpoint.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: the change contradicts the stored state (a duplicate, the last admin, a step out
    /// of order).
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 500, logged as an error here; for faults the client cannot fix (store, join, I/O).
    pub fn internal(message: impl Into<String>) -> ApiError {
        let message = message.into();
        tracing::error!(error = %message, "management API internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 401 with `code` (`token_invalid`, `token_expired`, ...) and `WWW-Authenticate: Bearer`.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 403 with `code`: the caller is known but may not do this.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, code, message)
    }
}

impl From<AuthzError> for ApiError {
    fn from(e: AuthzError) -> Self {
        let m = e.to_string();
        match e {
            AuthzError::InvalidToken => ApiError::unauthorized("token_invalid", m),
            AuthzError::Expired => ApiError::unauthorized("token_expired", m),
            AuthzError::Revoked => ApiError::unauthorized("token_revoked", m),
            AuthzError::HostNotAllowed(_) => ApiError::forbidden("host_not_allowed", m),
            AuthzError::Disabled => ApiError::forbidden("disabled", m),
            AuthzError::Forbidden { .. } => ApiError::forbidden("forbidden", m),
            AuthzError::SetupOnly(_) => ApiError::forbidden("setup_only", m),
            AuthzError::OtherAccount => ApiError::not_found(m),
            AuthzError::Internal(_) => ApiError::internal(m),
        }
    }
}

impl From<LoginError> for ApiError {
    fn from(e: LoginError) -> Self {
        let m = e.to_string();
        match e {
            LoginError::BadCredentials => ApiError::unauthorized("bad_credentials", m),
            LoginError::LockedOut { retry_after, .. } => ApiError {
                retry_after: Some(retry_after.as_secs().max(1)),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "locked_out", m)
            },
            LoginError::TotpRequired => ApiError::unauthorized("totp_required", m),
            LoginError::TotpInvalid => ApiError::unauthorized("totp_invalid", m),
            LoginError::TotpReplayed => ApiError::unauthorized("totp_replayed", m),
            LoginError::Disabled => ApiError::forbidden("disabled", m),
            LoginError::EmailCodeSent => ApiError::unauthorized("email_code_sent", m),
            LoginError::EmailCodeInvalid => ApiError::unauthorized("email_code_invalid", m),
            LoginError::EmailCodeExpired => ApiError::unauthorized("email_code_expired", m),
            LoginError::EmailRateLimited { retry_after } => ApiError {
                retry_after: Some(retry_after.as_secs().max(1)),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "email_rate_limited", m)
            },
            LoginError::EmailUnavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "email_unavailable", m)
            }
            LoginError::Internal(_) => ApiError::internal(m),
        }
    }
}

impl From<crate::store::Invalid> for ApiError {
    fn from(e: crate::store::Invalid) -> Self {
        ApiError::invalid(e.field, e.reason)
    }
}

impl From<FieldError> for ApiError {
    /// 400 naming the field; 409 for a value another record holds.
    fn from(e: FieldError) -> Self {
        if e.taken {
            ApiError {
                field: Some(e.field),
                ..ApiError::conflict(e.message)
            }
        } else {
            ApiError::invalid(e.field, e.message)
        }
    }
}

impl From<FieldErrors> for ApiError {
    /// The first problem: the one a client fixes first.
    fn from(e: FieldErrors) -> Self {
        e.first().into()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let m = e.to_string();
        match e {
            StoreError::NotFound { .. } => ApiError::not_found(m),
            StoreError::Conflict { .. } => ApiError::conflict(m),
            // Validation the handlers did not catch first: name the record at least.
            StoreError::Invalid { kind, reason } => ApiError::invalid(kind, reason),
            _ => ApiError::internal(m),
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Reload(r) => {
                ApiError::internal(format!("stored, but reload failed: {r}"))
            }
            e => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
        }
    }
}

impl From<StaffError> for ApiError {
    fn from(e: StaffError) -> Self {
        let m = e.to_string();
        match e {
            StaffError::Policy(v) => {
                // Each problem is a phrase about the password ("is 6 characters; ...").
                let mut msg = format!("the password {}", v.problems.join("; it "));
                if v.problems.is_empty() {
                    msg = m;
                }
                ApiError::invalid("password", msg)
            }
            StaffError::Store(s) => s.into(),
            StaffError::Password(_) => ApiError::internal(m),
            StaffError::Totp(_) => ApiError::invalid("code", m),
            StaffError::SamePassword => ApiError::invalid("password", m),
            StaffError::Invalid(_) => ApiError::invalid("username", m),
            StaffError::InvalidEmail(_) => ApiError::invalid("email", m),
            StaffError::EmailCodes(_) => ApiError::invalid("email_codes", m),
            StaffError::IdentityNeedsPassword(_) => ApiError::invalid("password", m),
            StaffError::ChangedMeanwhile => ApiError::conflict(m),
            StaffError::AlreadyInitialised => ApiError::conflict(m),
            StaffError::NotFound(_) => ApiError::not_found(m),
            StaffError::LastAdmin(_) => ApiError::conflict(m),
            StaffError::WrongCurrentPassword => ApiError::invalid("current", m),
            StaffError::LockedOut { retry_after } => ApiError {
                retry_after: Some(retry_after.as_secs().max(1)),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "locked_out", m)
            },
            StaffError::AlreadyEnrolled => ApiError::conflict(m),
            StaffError::NotPending => ApiError::conflict(m),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal(format!("worker failed: {e}"))
    }
}

/// A JSON body; a syntax, type, unknown or missing field error is a 400 naming the field.
pub struct JsonBody<T>(pub T);

/// Parses `bytes` as `T`, naming the field at fault.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        // serde names a missing or unknown field only in the message; the path is its parent.
        let named = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|p| msg.strip_prefix(p))
            .and_then(|rest| rest.split('`').next());
        let field = match (named, path.as_str()) {
            (Some(n), "." | "") => n.to_owned(),
            (Some(n), p) if msg.starts_with("missing") => format!("{p}.{n}"),
            (Some(n), _) if msg.starts_with("unknown") && path.ends_with(n) => path.clone(),
            (Some(n), p) => format!("{p}.{n}"),
            (None, "." | "") => "body".to_owned(),
            (None, p) => p.to_owned(),
        };
        ApiError::invalid(field, msg)
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE)
            && !ct
                .to_str()
                .is_ok_and(|c| c.trim_start().starts_with("application/json"))
        {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid",
                "send JSON with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid", e.body_text()))?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Query parameters as strings; handlers parse each with [`Query::get`] naming it.
pub struct Query(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::invalid("query", e.body_text()))
    }
}

impl Query {
    /// Parses parameter `name` if present and non-empty.
    pub fn get<T: std::str::FromStr>(&self, name: &str) -> ApiResult<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        match self.0.get(name).map(|s| s.trim()).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|e| ApiError::invalid(name, format!("{name}={v:?}: {e}"))),
        }
    }

    /// Refuses parameters the endpoint does not know (a typo must not silently widen a
    /// filter).
    pub fn only(&self, known: &[&str]) -> ApiResult<()> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(ApiError::invalid(
                k.clone(),
                format!("unknown parameter {k:?} (known: {})", known.join(", ")),
            )),
            None => Ok(()),
        }
    }
}
