//! HTTP plumbing shared by both services: request context (trace id, request id), the
//! request log line, problem+json for bodiless errors, and health endpoints.

use std::time::Instant;

use actix_web::{
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{header, StatusCode},
    middleware::Next,
    HttpResponse,
};
use tracing::Instrument;

/// A JSON answer (`application/json`) with `status`, `value` encoded straight into a buffer
/// of `capacity` bytes reserved up front — for large bodies whose size is known roughly
/// (a page of messages), which `HttpResponse::json` would write into a buffer grown by
/// doubling (each growth copying what was written so far; in total less than the body).
///
/// Errors: `value`'s `Serialize` fails (not for the plain data shapes of this API).
pub fn json_body<T: serde::Serialize>(
    status: StatusCode,
    value: &T,
    capacity: usize,
) -> Result<HttpResponse, serde_json::Error> {
    let mut body = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut body, value)?;
    Ok(HttpResponse::build(status)
        .insert_header(header::ContentType::json())
        .body(body))
}

/// Extracts the trace id from a W3C `traceparent` header
/// (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, W3C Trace Context §3.2).
/// Returns `None` for a malformed header or the all-zero (invalid) trace id.
pub fn trace_id_from_traceparent(value: &str) -> Option<String> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let parent_id = parts.next()?;
    let flags = parts.next()?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(version, 2) || version == "ff" || !hex(trace_id, 32) || !hex(parent_id, 16) {
        return None;
    }
    if !hex(flags, 2) || trace_id.bytes().all(|b| b == b'0') {
        return None;
    }
    Some(trace_id.to_ascii_lowercase())
}

/// The host of the request's `Host` header (NGINX sets it to the name the client asked
/// for), without the port: `server.address` of the server span. Never from `Forwarded` or
/// `X-Forwarded-Host`, which a client writes.
fn server_address(headers: &actix_web::http::header::HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.parse::<actix_web::http::uri::Authority>().ok())
        .map(|a| a.host().chars().take(255).collect())
        .unwrap_or_default()
}

fn new_trace_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct HeaderExtractor<'a>(&'a actix_web::http::header::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Middleware: one server span per request, continuing the caller's W3C trace
/// (`traceparent`, as NGINX's edge span passes it on) with NGINX's `X-Request-ID`; the trace id
/// goes into every problem answer and log line of the request. The span follows the stable
/// OpenTelemetry HTTP server semantic conventions (v1.23+): named `{method} {http.route}`,
/// with `http.request.method`, `http.route` (the route template), `url.path`, `url.scheme`
/// (NGINX's `X-Forwarded-Proto`), `server.address`, `client.address` (NGINX's `X-Real-IP`),
/// `user_agent.original`, `network.protocol.version` and `http.response.status_code`, an
/// error status for 5xx only; the project's facts under `switchboard.` (`request_id`,
/// `db.pool`, `db.route_reason`) and `user.id`. Records the duration in
/// `http_server_request_duration_seconds`, logs one line when the response is ready, and gives
/// error answers that have no body a problem+json body.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 256)
            .unwrap_or("")
            .to_owned()
    };
    let request_id = header("x-request-id");
    // Known methods by name; anything else is `_OTHER` (HTTP semantic conventions), so a
    // client cannot mint metric series with made-up methods.
    let method_original = req.method().as_str();
    let method = match method_original {
        "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH" => {
            method_original.to_owned()
        }
        _ => "_OTHER".to_owned(),
    };
    let scheme = match header("x-forwarded-proto") {
        s if s == "https" || s == "http" => s,
        _ => req.connection_info().scheme().to_owned(),
    };
    let client = match header("x-real-ip") {
        ip if !ip.is_empty() => ip,
        _ => req
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default(),
    };
    let span = tracing::info_span!(
        "http.request",
        // Named `{method} {route}` once routing has matched (below).
        otel.name = %method,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.request.method_original = (method != method_original).then_some(method_original),
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        url.path = %req.path(),
        url.scheme = %scheme,
        server.address = %server_address(req.headers()),
        client.address = %client,
        user_agent.original = %header("user-agent"),
        network.protocol.version = %format!("{:?}", req.version()).trim_start_matches("HTTP/"),
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        switchboard.request_id = %request_id,
        user.id = tracing::field::Empty,
        switchboard.db.pool = tracing::field::Empty,
        switchboard.db.route_reason = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(req.headers()))
    });
    let _ = span.set_parent(parent);
    // With OTLP export on, the span's own context has the ids; otherwise keep the caller's
    // trace id (or make one) so logs and problems still join up.
    let otel_cx = span.context();
    let span_cx = otel_cx.span().span_context().clone();
    let (trace_id, span_id) = if span_cx.is_valid() {
        (
            span_cx.trace_id().to_string(),
            span_cx.span_id().to_string(),
        )
    } else {
        let t = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(trace_id_from_traceparent)
            .unwrap_or_else(new_trace_id);
        (t, String::new())
    };
    span.record("trace_id", trace_id.as_str());
    if !span_id.is_empty() {
        span.record("span_id", span_id.as_str());
    }
    let started = Instant::now();
    let res =
        super::context::scope(trace_id.clone(), next.call(req).instrument(span.clone())).await?;
    // The route is read once routing has run: before it, `match_pattern` matches every
    // resource's pattern again (a regex each: regex matching fell from ~2.0 to ~0.7 % of all
    // CPU samples of a history benchmark once it stopped); after it, it reads the matched
    // resource's. So log lines written inside a
    // handler carry `url.path`, not yet `http.route`; the span and the last line carry both.
    let matched = res.request().match_pattern();
    if let Some(r) = &matched {
        // The span's OpenTelemetry context exists by now (its ids were read above), so the
        // name goes to that span itself: recording `otel.name` would no longer reach it.
        otel_cx.span().update_name(format!("{method} {r}"));
        span.record("http.route", r.as_str());
    }
    let route = matched.unwrap_or_else(|| "unmatched".into());
    let status = res.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    // The exemplar names this request's trace when it is sampled (exported).
    let sampled = span_cx.is_sampled().then_some(trace_id.as_str());
    crate::platform::metrics::observe_http(
        &method,
        &route,
        status.as_u16(),
        started.elapsed(),
        sampled,
    );
    let res = res.map_into_boxed_body();
    let res =
        if status.as_u16() >= 400 && res.response().headers().get(header::CONTENT_TYPE).is_none() {
            let (req, old) = res.into_parts();
            let mut new = super::context::with_trace_id(trace_id, || {
                crate::platform::error::problem_response(
                    status,
                    "http",
                    status.canonical_reason().unwrap_or("error").to_owned(),
                    None,
                )
            });
            for (name, value) in old.headers() {
                if name != header::CONTENT_LENGTH {
                    new.headers_mut().insert(name.clone(), value.clone());
                }
            }
            ServiceResponse::new(req, new)
        } else {
            res
        };
    let _enter = span.enter();
    tracing::info!(
        status = status.as_u16(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request served"
    );
    Ok(res)
}

/// A `limit` query parameter: `default` when absent, else 1..=`max`.
///
/// Errors: 400 outside the range.
pub fn page_size(
    limit: Option<i64>,
    default: i64,
    max: i64,
) -> Result<i64, crate::platform::error::ApiError> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(crate::platform::error::ApiError::BadRequest(format!(
            "limit must be between 1 and {max}"
        ))),
    }
}

/// `GET …/healthz` answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    #[schema(value_type = String, example = "ok")]
    pub status: &'static str,
}

/// `GET …/healthz`: 200 while the process serves requests.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(Health { status: "ok" })
}

/// A readiness answer: `status` is `ready` or `unavailable`; `checks` says what was checked
/// (for messaging: `primary`, `replicas` with each one's health, `read_only`).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    #[schema(value_type = String, example = "ready")]
    pub status: &'static str,
    #[schema(value_type = Object)]
    pub checks: serde_json::Value,
}

/// A readiness answer: 200 `{status:"ready", checks}` or 503 `{status:"unavailable", checks}`.
pub fn readiness(ready: bool, checks: serde_json::Value) -> HttpResponse {
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(Readiness {
            status: if ready { "ready" } else { "unavailable" },
            checks,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_per_w3c() {
        assert_eq!(
            trace_id_from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert!(trace_id_from_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        )
        .is_none());
        assert!(trace_id_from_traceparent("00-xyz-00f067aa0ba902b7-01").is_none());
        assert!(trace_id_from_traceparent(
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        )
        .is_none());
        assert!(trace_id_from_traceparent("").is_none());
    }
}
