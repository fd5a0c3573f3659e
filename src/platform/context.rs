//! The context of the work being done: which request's trace it belongs to — a task-local
//! value that the HTTP edge sets for each request ([`scope`]) and that errors read (the
//! `trace_id` of a problem). Work outside a request (socket tasks, background loops) has
//! none. (Where a query runs is carried by its connection: `db::Conn`.)

use std::future::Future;

tokio::task_local! {
    static TRACE_ID: String;
}

/// Runs `f` as the work of the request with `trace_id`.
pub async fn scope<F: Future>(trace_id: String, f: F) -> F::Output {
    TRACE_ID.scope(trace_id, f).await
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
