//! The messaging domain's closed vocabularies, parsed once and used everywhere as types
//! rather than strings: a message's kind, a participant's role, and what a system message
//! records. Each matches a CHECK constraint of `migrations/messaging`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A message's `kind`: `text`, `file` or `system` (`messages.kind` CHECK).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    #[default]
    Text,
    File,
    /// Written by the service: a membership change or a rename.
    System,
}

impl MessageKind {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::File => "file",
            Self::System => "system",
        }
    }

    /// From the column value (the CHECK constraint allows no other).
    pub fn from_column(value: &str) -> Self {
        match value {
            "file" => Self::File,
            "system" => Self::System,
            _ => Self::Text,
        }
    }
}

/// A message's `priority`, set by its sender (`messages.priority` CHECK): shown to the
/// recipients; an `urgent` one notifies even through a mute (see
/// `notifications::worker`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    #[default]
    Normal,
    Important,
    Urgent,
}

impl Priority {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Important => "important",
            Self::Urgent => "urgent",
        }
    }

    /// From the column value (the CHECK constraint allows no other).
    pub fn from_column(value: &str) -> Self {
        match value {
            "important" => Self::Important,
            "urgent" => Self::Urgent,
            _ => Self::Normal,
        }
    }
}

/// A participant's role: `admin` or `member` (`participants.role` CHECK).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May rename the group, add and remove people, change roles, delete any message.
    Admin,
    Member,
}

impl Role {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }
}

/// What a system message records (its `system.action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum SystemAction {
    #[serde(rename = "participant.added")]
    ParticipantAdded,
    #[serde(rename = "participant.removed")]
    ParticipantRemoved,
    #[serde(rename = "participant.left")]
    ParticipantLeft,
    #[serde(rename = "participant.role")]
    ParticipantRole,
    #[serde(rename = "conversation.renamed")]
    ConversationRenamed,
}

/// The `system` member of a system message: `{action, actor_id, user_ids?, name?, role?}`.
/// `actor_id` is null for the service's own changes (an heir promoted).
#[derive(Debug, Clone, Serialize)]
pub struct SystemRecord {
    pub action: SystemAction,
    pub actor_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_ids: Option<Vec<Uuid>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

impl SystemRecord {
    /// `action` by `actor` concerning `user_ids`.
    pub fn of(action: SystemAction, actor: Option<Uuid>, user_ids: Vec<Uuid>) -> Self {
        Self {
            action,
            actor_id: actor,
            user_ids: Some(user_ids),
            name: None,
            role: None,
        }
    }

    /// As JSON for the `meta` column.
    pub fn to_meta(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// A group's name: 1–[`GroupName::MAX_CHARS`] characters after trimming, no control
/// characters. The same rule for creating and renaming a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupName(String);

impl GroupName {
    /// Longest name, in characters (Unicode scalar values).
    pub const MAX_CHARS: usize = 100;

    /// Parses and trims a name.
    ///
    /// Errors: each broken rule's message (422 field `name`).
    pub fn parse(value: &str) -> Result<Self, Vec<String>> {
        crate::platform::text::bounded_name(value, 1, Self::MAX_CHARS).map(Self)
    }

    /// The trimmed name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A message's text (or a file's caption): not blank, at most `MESSAGE_MAX_CHARS` Unicode
/// scalar values (a setting, so the limit is given to [`MessageContent::parse`]), no NUL
/// (PostgreSQL `text` cannot hold one; JSON strings are valid UTF-8 once parsed). Kept as
/// sent, whitespace included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageContent(String);

impl MessageContent {
    /// The default of `MESSAGE_MAX_CHARS`, which the OpenAPI schema states.
    pub const DEFAULT_MAX_CHARS: usize = 4000;

    /// Parses content of at most `max_chars` characters.
    ///
    /// Errors: each broken rule's message (422 field `content` or `caption`).
    pub fn parse(value: String, max_chars: usize) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        if value.trim().is_empty() {
            errors.push("must not be empty".into());
        }
        if value.chars().count() > max_chars {
            errors.push(format!("must be at most {max_chars} characters"));
        }
        if value.contains('\0') {
            errors.push("must not contain NUL characters".into());
        }
        errors.is_empty().then_some(Self(value)).ok_or(errors)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The most distinct `@username`s one message may mention (more are plain text).
pub const MAX_MENTIONS: usize = 50;

/// Who a message's text mentions: `@username` (3–32 of `A–Z a–z 0–9 _ . -`, as usernames
/// are, not preceded by one of those characters, so `ann@example.com` mentions nobody; a
/// trailing `.` or `-` is punctuation) and `@all`. Names are lower-cased, distinct, at most
/// [`MAX_MENTIONS`]; which of them are participants is decided where the message is written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Mentions {
    pub names: Vec<String>,
    pub all: bool,
}

impl Mentions {
    /// Reads the mentions of `text`.
    pub fn of(text: &str) -> Self {
        let username_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        let mut found = Self::default();
        let mut previous: Option<char> = None;
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            let starts = c == '@' && !previous.is_some_and(username_char);
            previous = Some(c);
            if !starts {
                continue;
            }
            let rest = &text[i + 1..];
            let end = rest.find(|c: char| !username_char(c)).unwrap_or(rest.len());
            let name = rest[..end].trim_end_matches(['.', '-']);
            let valid = (3..=32).contains(&name.len())
                && name.starts_with(|c: char| c.is_ascii_alphanumeric());
            if name.eq_ignore_ascii_case("all") {
                found.all = true;
            } else if valid && found.names.len() < MAX_MENTIONS {
                let name = name.to_ascii_lowercase();
                if !found.names.contains(&name) {
                    found.names.push(name);
                }
            }
            // Skip the name itself (an `@` inside it does not start another).
            while chars.peek().is_some_and(|&(j, _)| j <= i + end) {
                previous = chars.next().map(|(_, c)| c);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_names_at_a_word_start_and_all() {
        let m = Mentions::of("hi @Bob, @bob and @carol_2. mail ann@example.com; @all @x @zoe-");
        assert_eq!(m.names, ["bob", "carol_2", "zoe"]);
        assert!(m.all);
        assert_eq!(Mentions::of("no one here @ all"), Mentions::default());
        assert_eq!(Mentions::of("@@dave").names, ["dave"]);
        assert_eq!(Mentions::of("(@eve)").names, ["eve"]);
        let many: String = (0..60).map(|i| format!("@user{i} ")).collect();
        assert_eq!(Mentions::of(&many).names.len(), MAX_MENTIONS);
    }

    /// The shapes stored in `meta` before these types existed stay the same.
    #[test]
    fn system_records_keep_their_stored_shape() {
        let actor = Uuid::nil();
        let added = SystemRecord::of(SystemAction::ParticipantAdded, Some(actor), vec![actor]);
        assert_eq!(
            added.to_meta(),
            serde_json::json!({"action": "participant.added", "actor_id": actor, "user_ids": [actor]})
        );
        let heir = SystemRecord {
            role: Some(Role::Admin),
            ..SystemRecord::of(SystemAction::ParticipantRole, None, vec![actor])
        };
        assert_eq!(
            heir.to_meta(),
            serde_json::json!({"action": "participant.role", "actor_id": null,
                               "user_ids": [actor], "role": "admin"})
        );
        assert_eq!(MessageKind::from_column("system"), MessageKind::System);
        assert_eq!(
            serde_json::json!(MessageKind::File),
            serde_json::json!("file")
        );
    }

    #[test]
    fn group_names_are_one_rule() {
        assert!(GroupName::parse("  Team  ").is_ok_and(|n| n.as_str() == "Team"));
        assert!(GroupName::parse(" ").is_err());
        assert!(GroupName::parse("a\nb").is_err());
        assert!(GroupName::parse(&"é".repeat(GroupName::MAX_CHARS)).is_ok());
        assert!(GroupName::parse(&"é".repeat(GroupName::MAX_CHARS + 1)).is_err());
    }

    #[test]
    fn content_keeps_its_whitespace_and_counts_characters() {
        assert!(MessageContent::parse(" hi ".into(), 4).is_ok_and(|c| c.as_str() == " hi "));
        assert!(MessageContent::parse("   ".into(), 4).is_err());
        assert!(MessageContent::parse("ééééé".into(), 4).is_err());
        assert!(MessageContent::parse("a\0".into(), 4).is_err());
    }
}
