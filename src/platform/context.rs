//! The context of the work being done: which request's trace it belongs to, and which
//! database pool (and why) it reads from — task-local values that the HTTP edge sets for each
//! request ([`scope`]) and that errors (the `trace_id` of a problem) and database spans and
//! metrics read. Work outside a request (socket tasks, background loops) has none: no trace
//! id, and the route `("primary", "background")`.

use std::{cell::Cell, future::Future};

tokio::task_local! {
    static TRACE_ID: String;
    /// The pool (and reason) the request's database work goes to, for DB spans and metrics.
    static ROUTE: Cell<(&'static str, &'static str)>;
}

/// Runs `f` as the work of the request with `trace_id`, its database work on the primary
/// until [`set_route`] says otherwise.
pub async fn scope<F: Future>(trace_id: String, f: F) -> F::Output {
    TRACE_ID
        .scope(trace_id, ROUTE.scope(Cell::new(("primary", "default")), f))
        .await
}

/// Runs `f` with `trace_id` as the current trace id (for building an answer outside the
/// request's future).
pub fn with_trace_id<R>(trace_id: String, f: impl FnOnce() -> R) -> R {
    TRACE_ID.sync_scope(trace_id, f)
}

/// The W3C trace id (32 lowercase hex digits) of the request being served, if any.
pub fn current_trace_id() -> Option<String> {
    TRACE_ID.try_with(Clone::clone).ok()
}

/// Remembers which pool the current request's database work uses (see [`current_route`]).
pub fn set_route(pool: &'static str, reason: &'static str) {
    let _ = ROUTE.try_with(|r| r.set((pool, reason)));
}

/// `(pool, reason)` of the current request's database work; background tasks use the
/// primary.
pub fn current_route() -> (&'static str, &'static str) {
    ROUTE
        .try_with(Cell::get)
        .unwrap_or(("primary", "background"))
}
