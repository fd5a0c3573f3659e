//! Request queue time: how long a request had already waited when a handler first sees it,
//! counted from the edge. NGINX stamps every proxied request with its clock when it builds
//! the upstream request, `X-Request-Start: t=<Unix seconds>.<milliseconds>` (its `$msec`;
//! the header and format New Relic and Heroku use for the same purpose), replacing any value
//! a client sent. Time spent after that — in NGINX's upstream connection, the service's
//! accept queue, waiting for a core — is invisible to any queue inside the service;
//! admission control counts it through [`arrived_at`] (a send's queueing delay, `messaging::admission`).
//!
//! The edge and the service read different clocks (in Kubernetes, different nodes). A clock
//! skew would count as a wait for every request — an edge 50 ms behind would make every send
//! look 50 ms late, and the queue stand for good — so each edge's offset is learnt: the
//! smallest apparent wait seen from that peer over the last one to two minutes is taken as
//! its clock offset (some request always passes straight through) and subtracted
//! ([`EdgeClock`]).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{LazyLock, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use actix_web::HttpRequest;

/// The header NGINX sets (`nginx/switchboard.conf.template`).
pub const REQUEST_START: &str = "x-request-start";

/// The longest queue time believed: a larger one means the clocks disagree, not that the
/// request waited, and is counted as this much.
pub const MAX_QUEUE_TIME: Duration = Duration::from_secs(10);

/// How long the smallest apparent wait of a window stands as an edge's clock offset: it is
/// used for this window and the next.
pub const OFFSET_WINDOW: Duration = Duration::from_secs(60);

/// Edges (peer addresses) whose offsets are kept; past it the map starts over.
const MAX_EDGES: usize = 256;

/// When `req` reached the edge, as an [`Instant`] of this process: now minus the queue time
/// its `X-Request-Start` gives, less the edge's learnt clock offset ([`EdgeClock`]), at most
/// [`MAX_QUEUE_TIME`]. Now when the header is absent or not `t=<seconds>[.<fraction>]`: a
/// request is never counted older than it can be shown to be.
pub fn arrived_at(req: &HttpRequest) -> Instant {
    static EDGES: LazyLock<Mutex<HashMap<Option<IpAddr>, EdgeClock>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));
    let now = Instant::now();
    let Some(start) = req
        .headers()
        .get(REQUEST_START)
        .and_then(|v| v.to_str().ok())
        .and_then(parse)
    else {
        return now;
    };
    let apparent = match SystemTime::now().duration_since(start) {
        Ok(d) => micros(d.min(MAX_QUEUE_TIME)),
        Err(ahead) => -micros(ahead.duration().min(MAX_QUEUE_TIME)),
    };
    let waited = match EDGES.lock() {
        Ok(mut edges) => {
            if edges.len() >= MAX_EDGES {
                edges.clear();
            }
            edges
                .entry(req.peer_addr().map(|a| a.ip()))
                .or_insert_with(|| EdgeClock::new(now))
                .waited(apparent, now)
        }
        Err(_) => Duration::ZERO,
    };
    now.checked_sub(waited).unwrap_or(now)
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// One edge's clock offset from ours: the smallest apparent wait (our clock minus its stamp,
/// in microseconds; negative when its clock is ahead) of the current window and of the one
/// before it, each [`OFFSET_WINDOW`] long.
#[derive(Debug)]
pub struct EdgeClock {
    window_started: Instant,
    current_min: i64,
    previous_min: i64,
}

impl EdgeClock {
    /// No request seen yet; the first window starts at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            window_started: now,
            current_min: i64::MAX,
            previous_min: i64::MAX,
        }
    }

    /// Records an apparent wait (µs) seen at `now` and returns the wait it stands for: the
    /// apparent wait less the offset, never below zero or above [`MAX_QUEUE_TIME`].
    pub fn waited(&mut self, apparent_us: i64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.window_started);
        if elapsed >= OFFSET_WINDOW {
            // A window with nothing in it (or two gone by) leaves no offset behind.
            self.previous_min = if elapsed >= 2 * OFFSET_WINDOW {
                i64::MAX
            } else {
                self.current_min
            };
            self.current_min = i64::MAX;
            self.window_started = now;
        }
        self.current_min = self.current_min.min(apparent_us);
        let offset = self.current_min.min(self.previous_min);
        let us = apparent_us.saturating_sub(offset).max(0);
        Duration::from_micros(u64::try_from(us).unwrap_or(0)).min(MAX_QUEUE_TIME)
    }
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

    fn request(stamp: &str) -> HttpRequest {
        actix_web::test::TestRequest::default()
            .insert_header((REQUEST_START, stamp))
            .peer_addr("10.1.2.3:40000".parse().expect("address"))
            .to_http_request()
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
    fn a_request_without_a_stamp_arrived_now() {
        let req = actix_web::test::TestRequest::default().to_http_request();
        assert!(arrived_at(&req).elapsed() < Duration::from_millis(100));
        assert!(arrived_at(&request("t=junk")).elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn counts_the_wait_since_the_edge_beyond_its_offset() {
        // The first request from this edge passed straight through: it sets the offset.
        assert!(
            arrived_at(&request(&stamp(Duration::ZERO))).elapsed() < Duration::from_millis(100)
        );
        let waited = arrived_at(&request(&stamp(Duration::from_millis(250)))).elapsed();
        assert!(
            waited >= Duration::from_millis(240) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
    }

    #[test]
    fn a_skewed_edge_clock_is_not_a_wait() {
        let t0 = Instant::now();
        let ms = |n: i64| n * 1000;
        // An edge 200 ms behind: requests that went straight through look 200 ms late.
        let mut behind = EdgeClock::new(t0);
        assert_eq!(behind.waited(ms(200), t0), Duration::ZERO);
        assert_eq!(behind.waited(ms(205), t0), Duration::from_millis(5));
        // A request that really waited 300 ms counts 300 ms.
        assert_eq!(behind.waited(ms(500), t0), Duration::from_millis(300));
        // An edge ahead of us: the same, with negative apparent waits.
        let mut ahead = EdgeClock::new(t0);
        assert_eq!(ahead.waited(ms(-80), t0), Duration::ZERO);
        assert_eq!(ahead.waited(ms(20), t0), Duration::from_millis(100));
        // Never more than MAX_QUEUE_TIME.
        assert_eq!(ahead.waited(i64::MAX, t0), MAX_QUEUE_TIME);
    }

    #[test]
    fn an_offset_is_forgotten_after_two_windows() {
        let t0 = Instant::now();
        let mut edge = EdgeClock::new(t0);
        assert_eq!(edge.waited(0, t0), Duration::ZERO);
        // The clock then steps 50 ms behind (NTP): counted as waits for up to two windows…
        let t1 = t0 + OFFSET_WINDOW + Duration::from_secs(1);
        assert_eq!(edge.waited(50_000, t1), Duration::from_millis(50));
        // …then the old offset is gone and the new one is learnt.
        let t2 = t1 + OFFSET_WINDOW;
        assert_eq!(edge.waited(50_000, t2), Duration::ZERO);
        // A window with no request at all leaves no offset behind.
        let t3 = t2 + 3 * OFFSET_WINDOW;
        assert_eq!(edge.waited(90_000, t3), Duration::ZERO);
    }
}
