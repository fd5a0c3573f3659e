//! RFC 9457 problem details (`application/problem+json`) for every error answer.
//!
//! Handlers return [`ApiError`]; extractor failures (malformed JSON, bad path or query) are
//! turned into the same shape by [`json_config`], [`path_config`] and [`query_config`], and
//! unknown routes by [`not_found`]. Each body carries the request's `trace_id`
//! (see [`crate::platform::context::current_trace_id`]). Unexpected failures are logged with their cause
//! chain and answered as a bare 500 without internals.

use std::collections::BTreeMap;

use crate::platform::db::DbError;
use actix_web::{
    http::{header, StatusCode},
    web, HttpRequest, HttpResponse, ResponseError,
};
use serde::Serialize;

/// Field name → messages, as sent in the `errors` member of a 422 answer.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

/// Records a field's parse errors under `field` and gives back the parsed value, if any:
/// parse every field, then [`ApiError::check`] answers 422 with all of them at once.
pub fn field<T>(
    errors: &mut FieldErrors,
    field: &str,
    parsed: Result<T, Vec<String>>,
) -> Option<T> {
    match parsed {
        Ok(v) => Some(v),
        Err(messages) => {
            errors.entry(field.to_owned()).or_default().extend(messages);
            None
        }
    }
}

/// Every error a handler can answer with; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is not understood (malformed JSON, bad query parameter).
    #[error("{0}")]
    BadRequest(String),
    /// 400: a consistency token for a WAL position the primary has not reached (DESIGN.md
    /// §5): not issued by this cluster. The answer also clears the `ryw_lsn` cookie, so a
    /// browser holding such a token recovers on its next request.
    #[error("the consistency token is ahead of the primary's WAL: it was not issued by this database; drop it")]
    TokenAhead,
    /// 401: missing, invalid or expired credentials. Answers carry `WWW-Authenticate` when
    /// `bearer` is set (RFC 6750 §3).
    #[error("{detail}")]
    Unauthorized { detail: String, bearer: bool },
    /// 403: authenticated but not allowed (CSRF check, role).
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such object, or one the caller may not know about.
    #[error("{0}")]
    NotFound(String),
    /// 409: conflicts with existing state (username taken).
    #[error("{0}")]
    Conflict(String),
    /// 422: well-formed but invalid fields.
    #[error("{detail}")]
    Unprocessable { detail: String, errors: FieldErrors },
    /// 413: the body (an upload) is larger than allowed.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: the body is not of a media type this endpoint takes.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429: too many attempts; retry after the given seconds.
    #[error("{detail}")]
    TooManyRequests { detail: String, retry_after: u32 },
    /// 503: a read on a replica was cancelled by a recovery conflict, and so was its retry.
    #[error("the read conflicted with replication; try again")]
    RecoveryConflict,
    /// 503: the database connection broke mid-request (closed, server shutting down or not
    /// yet accepting connections: SQLSTATE 57P01/57P03). A read on a replica is retried once
    /// elsewhere by the router before this reaches a client.
    #[error("database unavailable, try again shortly")]
    ConnectionLost,
    /// 503: a dependency (database) is unavailable; retry after the given seconds.
    #[error("{detail}")]
    Unavailable { detail: String, retry_after: u32 },
    /// 500: a bug or an unexpected failure; the cause is logged, not sent.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A 401 for a bearer-authenticated endpoint.
    pub fn bearer(detail: impl Into<String>) -> Self {
        Self::Unauthorized {
            detail: detail.into(),
            bearer: true,
        }
    }

    /// A 401 for a cookie- or password-authenticated endpoint.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::Unauthorized {
            detail: detail.into(),
            bearer: false,
        }
    }

    /// A 422 for a single field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::invalid(field, vec![message.into()])
    }

    /// A 422 for a single field with each rule it broke (a domain type's parse errors).
    pub fn invalid(field: &str, messages: Vec<String>) -> Self {
        let mut errors = FieldErrors::new();
        errors.insert(field.to_owned(), messages);
        Self::Unprocessable {
            detail: format!("invalid field: {field}"),
            errors,
        }
    }

    /// A 422 from collected field errors; `Ok(())` when there are none.
    pub fn check(errors: FieldErrors) -> Result<(), Self> {
        if errors.is_empty() {
            return Ok(());
        }
        let fields: Vec<&str> = errors.keys().map(String::as_str).collect();
        Err(Self::Unprocessable {
            detail: format!("invalid fields: {}", fields.join(", ")),
            errors,
        })
    }

    fn slug(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad-request",
            Self::TokenAhead => "consistency-token-ahead",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not-found",
            Self::Conflict(_) => "conflict",
            Self::Unprocessable { .. } => "validation",
            Self::PayloadTooLarge(_) => "payload-too-large",
            Self::UnsupportedMediaType(_) => "unsupported-media-type",
            Self::TooManyRequests { .. } => "rate-limited",
            Self::Unavailable { .. } | Self::RecoveryConflict | Self::ConnectionLost => {
                "unavailable"
            }
            Self::Internal(_) => "internal",
        }
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a FieldErrors>,
    trace_id: Option<String>,
}

/// Media type of RFC 9457 problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Builds a problem+json response. `type` is a tag URI (RFC 4151) naming the problem kind.
pub fn problem_response(
    status: StatusCode,
    slug: &str,
    detail: String,
    errors: Option<&FieldErrors>,
) -> HttpResponse {
    let body = Problem {
        kind: format!("tag:switchboard,2026:problem/{slug}"),
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        detail,
        errors,
        trace_id: crate::platform::context::current_trace_id(),
    };
    HttpResponse::build(status)
        .content_type(PROBLEM_JSON)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body)
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::TokenAhead => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } | Self::RecoveryConflict | Self::ConnectionLost => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let (detail, errors) = match self {
            Self::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                (
                    "internal error; quote the trace_id when reporting it".to_owned(),
                    None,
                )
            }
            Self::Unprocessable { detail, errors } => (detail.clone(), Some(errors)),
            other => (other.to_string(), None),
        };
        let mut res = problem_response(status, self.slug(), detail, errors);
        match self {
            Self::Unauthorized { bearer: true, .. } => {
                if let Ok(v) = header::HeaderValue::from_str("Bearer error=\"invalid_token\"") {
                    res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
            }
            Self::RecoveryConflict | Self::ConnectionLost => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            }
            Self::TokenAhead => {
                let mut gone = actix_web::cookie::Cookie::new("ryw_lsn", "");
                gone.set_path("/api");
                gone.make_removal();
                let _ = res.add_cookie(&gone);
            }
            Self::Unavailable { retry_after, .. } | Self::TooManyRequests { retry_after, .. } => {
                if let Ok(v) = header::HeaderValue::from_str(&retry_after.to_string()) {
                    res.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            _ => {}
        }
        res
    }
}

/// The HTTP answer to each database failure: every one a retryable 503 with `Retry-After`
/// but bad input (400) and the unexpected (500).
impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        let unavailable = |detail: &str| Self::Unavailable {
            detail: detail.into(),
            retry_after: 1,
        };
        match e {
            DbError::Unavailable(_) => unavailable("database unavailable, try again shortly"),
            DbError::ConnectionLost => Self::ConnectionLost,
            DbError::RecoveryConflict => Self::RecoveryConflict,
            DbError::Timeout => unavailable("the database took too long, try again shortly"),
            DbError::Deadlock => unavailable("the write conflicted with another, try again"),
            DbError::ReadOnly => unavailable("database unavailable for writes, try again shortly"),
            DbError::BadText => Self::BadRequest(e.to_string()),
            DbError::BadValue(_) => Self::BadRequest(
                "a value in the request is out of the range the service accepts".into(),
            ),
            DbError::TokenAhead => Self::TokenAhead,
            DbError::Query(e) => {
                Self::Internal(anyhow::Error::new(e).context("database query failed"))
            }
        }
    }
}

impl crate::platform::db::routing::RetryElsewhere for ApiError {
    fn retry_elsewhere(&self) -> bool {
        matches!(self, Self::RecoveryConflict | Self::ConnectionLost)
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        DbError::from(e).into()
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError::from(e).into()
    }
}

/// JSON body extractor settings: at most `limit` bytes; malformed JSON is a 400, a wrong
/// content type a 415, a missing or mistyped field a 422, all as problem+json.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _req| {
            use actix_web::error::JsonPayloadError as E;
            let (status, slug, detail) = match &err {
                E::ContentType => (
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-media-type",
                    "expected Content-Type: application/json".to_owned(),
                ),
                E::OverflowKnownLength { .. } | E::Overflow { .. } => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload-too-large",
                    "request body too large".to_owned(),
                ),
                E::Deserialize(de) if de.is_data() => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation",
                    format!("invalid request body: {de}"),
                ),
                E::Deserialize(de) => (
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    format!("malformed JSON: {de}"),
                ),
                other => (
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    format!("unreadable request body: {other}"),
                ),
            };
            let res = problem_response(status, slug, detail.clone(), None);
            actix_web::error::InternalError::from_response(detail, res).into()
        })
}

/// Path extractor settings: an id that does not parse is answered 404 (no such object).
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _req| {
        let res = problem_response(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no such resource: {err}"),
            None,
        );
        actix_web::error::InternalError::from_response(err.to_string(), res).into()
    })
}

/// Query-string extractor settings: a bad parameter is a 400.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        let detail = format!("invalid query parameters: {err}");
        let res = problem_response(StatusCode::BAD_REQUEST, "bad-request", detail.clone(), None);
        actix_web::error::InternalError::from_response(detail, res).into()
    })
}

/// Default service: unknown routes answer 404 as problem+json.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    problem_response(
        StatusCode::NOT_FOUND,
        "not-found",
        format!("no route for {} {}", req.method(), req.path()),
        None,
    )
}
