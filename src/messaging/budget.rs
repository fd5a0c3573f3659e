//! Per-user budgets over fixed windows, shared by every messaging instance through one
//! UNLOGGED table on the primary (`messaging.user_counters`): messages sent, WebSocket
//! tickets issued, bytes uploaded. Spending past a budget is a 429 with `Retry-After` (the
//! seconds to the next window, RFC 9110 §10.2.3).

use crate::platform::db::Traced;
use std::time::Duration;

use uuid::Uuid;

use crate::platform::error::ApiError;

/// What a budget counts (the `budget` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Messages sent (text and files): `SEND_RATE_LIMIT` per `SEND_RATE_WINDOW_SECS`.
    Send,
    /// WebSocket tickets: `WS_TICKETS_PER_MINUTE` per minute.
    Ticket,
    /// Bytes uploaded: `UPLOAD_QUOTA_WINDOW_BYTES` per `UPLOAD_QUOTA_WINDOW_SECS`.
    UploadBytes,
    /// WebSocket `resume` frames, across all the user's sockets: `WS_RESUMES_PER_MINUTE`.
    Resume,
    /// Typing announcements over HTTP: `typing::HTTP_TYPING_PER_MINUTE`.
    Typing,
}

impl Budget {
    fn as_str(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Ticket => "ticket",
            Self::UploadBytes => "upload_bytes",
            Self::Resume => "resume",
            Self::Typing => "typing",
        }
    }
}

/// The 429's detail when the send budget (`SEND_RATE_LIMIT` per `SEND_RATE_WINDOW_SECS`) is
/// spent.
pub fn send_detail(limit: i64, window: Duration) -> String {
    format!(
        "at most {limit} messages per {} s; slow down",
        window.as_secs()
    )
}

/// Spends `amount` of `user_id`'s `budget` in the current window of `window` (windows are
/// aligned to the Unix epoch, so every instance agrees on them).
///
/// Errors: 429 with `Retry-After` once the window's total passes `limit` (`detail` says what
/// was limited; the amount stays spent, so hammering does not help); database failures.
pub async fn spend(
    db: &impl Traced,
    user_id: Uuid,
    budget: Budget,
    amount: i64,
    limit: i64,
    window: Duration,
    detail: impl FnOnce() -> String,
) -> Result<(), ApiError> {
    let window = window.as_secs_f64().max(1.0);
    let row = db
        .query_one_t(
            "INSERT INTO messaging.user_counters AS s (user_id, budget, window_start, amount)
             VALUES ($1, $2, to_timestamp(floor(extract(epoch FROM now())::float8 / $3::float8)
                                          * $3::float8), $4)
             ON CONFLICT (user_id, budget) DO UPDATE SET
                 amount = CASE WHEN s.window_start = EXCLUDED.window_start
                               THEN s.amount + EXCLUDED.amount ELSE EXCLUDED.amount END,
                 window_start = EXCLUDED.window_start
             RETURNING amount,
                 extract(epoch FROM window_start + make_interval(secs => $3::float8)
                                   - now())::float8",
            &[&user_id, &budget.as_str(), &window, &amount],
        )
        .await?;
    let total: i64 = row.get(0);
    let left: f64 = row.get(1);
    if total > limit {
        return Err(ApiError::TooManyRequests {
            detail: detail(),
            retry_after: left.ceil().max(1.0) as u32,
        });
    }
    Ok(())
}
