//! The account as its owner sees it, shared by the sign-in flow and the account endpoints.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// A user as the account owner sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub display_name: String,
    /// Whether `email` was proven by a mailed link (`POST /auth/email/verify`).
    pub email_verified: bool,
    pub created_at: DateTime<Utc>,
}

/// Columns for [`User::from_row`].
pub const USER_COLUMNS: &str =
    "id, username, email, display_name, email_verified_at IS NOT NULL AS email_verified, created_at";

impl User {
    /// Reads a row selected with [`USER_COLUMNS`].
    pub fn from_row(row: &tokio_postgres::Row) -> Self {
        Self {
            id: row.get("id"),
            username: row.get("username"),
            email: row.get("email"),
            display_name: row.get("display_name"),
            email_verified: row.get("email_verified"),
            created_at: row.get("created_at"),
        }
    }
}
