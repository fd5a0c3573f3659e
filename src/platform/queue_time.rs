//! Request queue time: how long a request had already waited when a handler first sees it,
//! counted from the edge. NGINX stamps every proxied request with the time it finished
//! reading it, `X-Request-Start: t=<Unix seconds>.<milliseconds>` (its `$msec`; the header
//! and format New Relic and Heroku use for the same purpose), replacing any value a client
//! sent. Time spent after that — in NGINX's upstream connection, the service's accept queue,
//! waiting for a core — is invisible to any queue inside the service; admission control
//! counts it through [`arrived_at`] (the send queue's standing-queue test).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::http::header::HeaderMap;

/// The header NGINX sets (`nginx/switchboard.conf.template`).
pub const REQUEST_START: &str = "x-request-start";

/// The longest queue time believed: a larger one means the clocks disagree, not that the
/// request waited, and is counted as this much.
pub const MAX_QUEUE_TIME: Duration = Duration::from_secs(10);

/// When the request reached the edge, as an [`Instant`] of this process: now minus the queue
/// time `X-Request-Start` gives, at most [`MAX_QUEUE_TIME`]. Now when the header is absent
/// or not `t=<seconds>[.<fraction>]`, or names a time after now (the edge's clock ahead of
/// ours): a request is never counted older than it can be shown to be.
pub fn arrived_at(headers: &HeaderMap) -> Instant {
    let now = Instant::now();
    headers
        .get(REQUEST_START)
        .and_then(|v| v.to_str().ok())
        .and_then(parse)
        .and_then(|start| SystemTime::now().duration_since(start).ok())
        .and_then(|waited| now.checked_sub(waited.min(MAX_QUEUE_TIME)))
        .unwrap_or(now)
}

/// `t=1764567890.123` (seconds since the Unix epoch, an optional fraction of up to 9
/// digits) as a time; `None` for anything else.
fn parse(value: &str) -> Option<SystemTime> {
    let value = value.trim().strip_prefix("t=")?;
    let (secs, fraction) = value.split_once('.').unwrap_or((value, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if secs.is_empty() || secs.len() > 12 || fraction.len() > 9 {
        return None;
    }
    if !all_digits(secs) || !all_digits(fraction) {
        return None;
    }
    let nanos = if fraction.is_empty() {
        0
    } else {
        fraction.parse::<u32>().ok()? * 10u32.pow(9 - fraction.len() as u32)
    };
    UNIX_EPOCH.checked_add(Duration::new(secs.parse().ok()?, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            HeaderName::from_static(REQUEST_START),
            HeaderValue::from_str(value).expect("header value"),
        );
        h
    }

    fn stamp(ago: Duration) -> String {
        let t = SystemTime::now() - ago;
        let d = t.duration_since(UNIX_EPOCH).expect("after the epoch");
        format!("t={}.{:03}", d.as_secs(), d.subsec_millis())
    }

    #[test]
    fn parses_nginx_msec() {
        let t = parse("t=1764567890.123").expect("parsed");
        assert_eq!(
            t.duration_since(UNIX_EPOCH).expect("after the epoch"),
            Duration::from_millis(1_764_567_890_123)
        );
        assert!(parse("t=1764567890").is_some());
        for bad in [
            "",
            "t=",
            "1764567890.123",
            "t=-5",
            "t=1.2.3",
            "t=12a",
            "t=1.1234567890",
            "t=.5",
        ] {
            assert!(parse(bad).is_none(), "{bad:?} parsed");
        }
    }

    #[test]
    fn counts_the_wait_since_the_edge() {
        let waited = arrived_at(&headers(&stamp(Duration::from_millis(250)))).elapsed();
        assert!(
            waited >= Duration::from_millis(240) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
    }

    #[test]
    fn never_older_than_shown_or_believed() {
        // No header, a bad one, and an edge clock ahead of ours: now.
        for h in [
            HeaderMap::new(),
            headers("t=junk"),
            headers(&format!(
                "t={}",
                (SystemTime::now() + Duration::from_secs(3600))
                    .duration_since(UNIX_EPOCH)
                    .expect("after the epoch")
                    .as_secs()
            )),
        ] {
            assert!(arrived_at(&h).elapsed() < Duration::from_millis(100));
        }
        // An edge clock far behind: at most MAX_QUEUE_TIME.
        let waited = arrived_at(&headers("t=1000000000.000")).elapsed();
        assert!(
            waited <= MAX_QUEUE_TIME + Duration::from_secs(1),
            "{waited:?}"
        );
    }
}
