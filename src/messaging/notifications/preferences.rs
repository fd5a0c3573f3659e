//! How loudly each user is told (issue 19): per-user defaults, quiet hours in their time
//! zone and channels (`GET`/`PUT /api/notification-settings`), and per conversation a level
//! and a mute (`PUT /api/conversations/{id}/notifications`).

use actix_web::{
    http::StatusCode,
    web::{self, Json, Path},
    HttpResponse,
};
use chrono::{DateTime, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::super::{
    caller::Caller,
    consistency::{self, Consistency},
    visibility::conversation_not_found,
    State,
};
use crate::platform::{
    db::Traced,
    error::{ApiError, FieldErrors},
};

/// How much of a conversation notifies: every message, only those that mention the user
/// (`@username`, `@all`), or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    All,
    Mentions,
    None,
}

impl Level {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Mentions => "mentions",
            Self::None => "none",
        }
    }

    /// Reads a column value (anything unknown is `mentions`, the quieter default).
    pub fn from_column(value: &str) -> Self {
        match value {
            "all" => Self::All,
            "none" => Self::None,
            _ => Self::Mentions,
        }
    }
}

/// Quiet hours: from `start` to `end` (local times in `time_zone`; `end` before `start`
/// spans midnight), no push and no mail — the feed still fills.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuietHours {
    /// `HH:MM:SS`.
    #[schema(value_type = String, example = "22:00:00")]
    pub start: NaiveTime,
    #[schema(value_type = String, example = "07:00:00")]
    pub end: NaiveTime,
}

/// A user's notification settings (the defaults until they change them).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Settings {
    /// Level of direct conversations that set none (default `all`).
    pub direct_level: Level,
    /// Level of groups that set none (default `mentions`).
    pub group_level: Level,
    /// Web Push to the user's devices when they have no open socket.
    pub push: bool,
    /// Mail for messages left unread.
    pub email: bool,
    /// Whether pushes and mail may carry the start of a message (else only who and where).
    pub previews: bool,
    pub quiet_hours: Option<QuietHours>,
    /// IANA time zone of the quiet hours (default `UTC`).
    #[schema(example = "Europe/Berlin", max_length = 64)]
    pub time_zone: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            direct_level: Level::All,
            group_level: Level::Mentions,
            push: true,
            email: true,
            previews: true,
            quiet_hours: None,
            time_zone: "UTC".into(),
        }
    }
}

/// SQL: whether it is now within the quiet hours of the settings row `s`
/// (`messaging.notification_settings`; false without quiet hours; an `end` before `start`
/// spans midnight), in the user's time zone.
pub const QUIET_NOW: &str = "CASE WHEN s.quiet_start IS NULL THEN false
     WHEN s.quiet_start <= s.quiet_end
          THEN (now() AT TIME ZONE s.time_zone)::time >= s.quiet_start
           AND (now() AT TIME ZONE s.time_zone)::time < s.quiet_end
     ELSE (now() AT TIME ZONE s.time_zone)::time >= s.quiet_start
       OR (now() AT TIME ZONE s.time_zone)::time < s.quiet_end END";

/// The columns [`Settings::from_row`] reads, from `messaging.notification_settings s`.
pub const SETTINGS_COLUMNS: &str = "s.direct_level, s.group_level, s.push, s.email, s.previews, \
     s.quiet_start, s.quiet_end, s.time_zone";

impl Settings {
    /// Reads a row selected with [`SETTINGS_COLUMNS`] (all NULL: the defaults).
    pub fn from_row(row: &tokio_postgres::Row) -> Self {
        let Some(direct) = row.get::<_, Option<&str>>("direct_level") else {
            return Self::default();
        };
        let quiet = match (row.get("quiet_start"), row.get("quiet_end")) {
            (Some(start), Some(end)) => Some(QuietHours { start, end }),
            _ => None,
        };
        Self {
            direct_level: Level::from_column(direct),
            group_level: Level::from_column(row.get("group_level")),
            push: row.get("push"),
            email: row.get("email"),
            previews: row.get("previews"),
            quiet_hours: quiet,
            time_zone: row.get("time_zone"),
        }
    }
}

/// `GET /api/notification-settings`: the caller's settings (the defaults until changed).
#[utoipa::path(get, path = "/api/notification-settings", operation_id = "get_notification_settings", tag = "notifications",
    responses((status = 200, description = "The caller's notification settings.", body = Settings)))]
pub async fn get(
    state: web::Data<State>,
    caller: Caller,
    consistency: Consistency,
) -> Result<HttpResponse, ApiError> {
    let user = caller.user_id;
    let row = state
        .db
        .reading::<_, ApiError, _>(consistency.0, move |conn| {
            Box::pin(async move {
                Ok(conn
                    .query_opt_t(
                        &format!(
                            "SELECT {SETTINGS_COLUMNS} FROM messaging.notification_settings s
                             WHERE s.user_id = $1"
                        ),
                        &[&user],
                    )
                    .await?)
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(row.as_ref().map(Settings::from_row).unwrap_or_default()))
}

/// `PUT /api/notification-settings` with every field: 200 with the settings. 422 for an
/// unknown time zone (IANA names, as PostgreSQL's `pg_timezone_names` lists them).
#[utoipa::path(put, path = "/api/notification-settings", operation_id = "put_notification_settings", tag = "notifications", request_body = Settings,
    responses((status = 200, description = "Saved.", body = Settings)))]
pub async fn put(
    state: web::Data<State>,
    caller: Caller,
    body: Json<Settings>,
) -> Result<HttpResponse, ApiError> {
    let settings = body.into_inner();
    let conn = state.db.primary().await?;
    let known = settings.time_zone.len() <= 64
        && conn
            .query_one_t(
                "SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1)",
                &[&settings.time_zone],
            )
            .await?
            .get::<_, bool>(0);
    if !known {
        let mut errors = FieldErrors::new();
        errors.insert(
            "time_zone".into(),
            vec!["an IANA time zone such as Europe/Berlin or UTC".into()],
        );
        ApiError::check(errors)?;
    }
    let (start, end) = settings
        .quiet_hours
        .as_ref()
        .map(|q| (Some(q.start), Some(q.end)))
        .unwrap_or((None, None));
    conn.execute_t(
        "INSERT INTO messaging.notification_settings AS s
             (user_id, direct_level, group_level, push, email, previews, quiet_start, quiet_end,
              time_zone)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (user_id) DO UPDATE SET
             direct_level = EXCLUDED.direct_level, group_level = EXCLUDED.group_level,
             push = EXCLUDED.push, email = EXCLUDED.email, previews = EXCLUDED.previews,
             quiet_start = EXCLUDED.quiet_start, quiet_end = EXCLUDED.quiet_end,
             time_zone = EXCLUDED.time_zone, updated_at = now()",
        &[
            &caller.user_id,
            &settings.direct_level.as_str(),
            &settings.group_level.as_str(),
            &settings.push,
            &settings.email,
            &settings.previews,
            &start,
            &end,
            &settings.time_zone,
        ],
    )
    .await?;
    Ok(consistency::written(&state, &conn, StatusCode::OK)
        .await?
        .json(settings))
}

/// `PUT /api/conversations/{id}/notifications` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ConversationPreference {
    /// This conversation's level; null: the user's default for its kind.
    pub level: Option<Level>,
    /// Nothing notifies until then (the feed still fills); null: not muted.
    pub muted_until: Option<DateTime<Utc>>,
}

/// A conversation's notification preference as its participant set it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationNotifications {
    pub conversation_id: Uuid,
    /// As set (null: the default).
    pub level: Option<Level>,
    /// What applies: the set level, or the user's default for this kind of conversation.
    pub effective_level: Level,
    pub muted_until: Option<DateTime<Utc>>,
}

/// `PUT /api/conversations/{id}/notifications` `{level, muted_until}`: 200 with the
/// preference. 404 unless the caller is a current participant.
#[utoipa::path(put, path = "/api/conversations/{id}/notifications", operation_id = "put_conversation_notifications", tag = "notifications",
    params(("id" = Uuid, Path, description = "conversation id")),
    request_body = ConversationPreference,
    responses((status = 200, description = "Saved.", body = ConversationNotifications)))]
pub async fn put_conversation(
    state: web::Data<State>,
    caller: Caller,
    id: Path<Uuid>,
    body: Json<ConversationPreference>,
) -> Result<HttpResponse, ApiError> {
    let conversation_id = id.into_inner();
    let body = body.into_inner();
    let conn = state.db.primary().await?;
    let row = conn
        .query_opt_t(
            &format!(
                "UPDATE messaging.participants p SET notify_level = $3, muted_until = $4
                 FROM messaging.conversations c
                 LEFT JOIN messaging.notification_settings s ON s.user_id = $2
                 WHERE p.conversation_id = $1 AND p.user_id = $2 AND p.left_at IS NULL
                   AND c.id = p.conversation_id
                 RETURNING c.is_group, {SETTINGS_COLUMNS}"
            ),
            &[
                &conversation_id,
                &caller.user_id,
                &body.level.map(Level::as_str),
                &body.muted_until,
            ],
        )
        .await?
        .ok_or_else(conversation_not_found)?;
    let defaults = Settings::from_row(&row);
    let effective = body.level.unwrap_or(if row.get("is_group") {
        defaults.group_level
    } else {
        defaults.direct_level
    });
    Ok(consistency::written(&state, &conn, StatusCode::OK)
        .await?
        .json(ConversationNotifications {
            conversation_id,
            level: body.level,
            effective_level: effective,
            muted_until: body.muted_until,
        }))
}
