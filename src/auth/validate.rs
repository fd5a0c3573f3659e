//! Account fields, parsed once at the edge into types that hold their rules; each broken
//! rule is a 422 field message, and each limit is a constant the OpenAPI schema is held to
//! (`openapi` tests).

/// A username: [`Username::MIN_CHARS`]–[`Username::MAX_CHARS`] characters of ASCII letters,
/// digits, `_`, `.`, `-`, starting with a letter or digit ([`Username::PATTERN`]). Compared
/// case-insensitively (the unique index is on `lower(username)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// Fewest characters.
    pub const MIN_CHARS: usize = 3;
    /// Most characters.
    pub const MAX_CHARS: usize = 32;
    /// The characters allowed, as the OpenAPI schema states them.
    pub const PATTERN: &'static str = "^[A-Za-z0-9][A-Za-z0-9_.-]*$";

    /// Parses a trimmed username.
    ///
    /// Errors: each broken rule's message (422 field `username`).
    pub fn parse(value: &str) -> Result<Self, Vec<String>> {
        let value = value.trim();
        let mut errors = Vec::new();
        if !(Self::MIN_CHARS..=Self::MAX_CHARS).contains(&value.chars().count()) {
            errors.push(format!(
                "must be {} to {} characters",
                Self::MIN_CHARS,
                Self::MAX_CHARS
            ));
        }
        if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            errors.push("may contain only letters, digits, '_', '.' and '-'".into());
        }
        if !value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        {
            errors.push("must start with a letter or digit".into());
        }
        errors
            .is_empty()
            .then(|| Self(value.to_owned()))
            .ok_or(errors)
    }

    /// The username as given (its case kept).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address: at most [`Email::MAX_OCTETS`] octets (RFC 5321 §4.5.3.1.3), one `@` with a
/// non-empty local part and a dotted domain, no spaces or control characters. Compared
/// case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Longest address, in octets (RFC 5321 §4.5.3.1.3).
    pub const MAX_OCTETS: usize = 254;

    /// Parses a trimmed address.
    ///
    /// Errors: each broken rule's message (422 field `email`).
    pub fn parse(value: &str) -> Result<Self, Vec<String>> {
        let value = value.trim();
        let mut errors = Vec::new();
        if value.len() > Self::MAX_OCTETS {
            errors.push(format!("must be at most {} characters", Self::MAX_OCTETS));
        }
        let ok = match value.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !value.chars().any(|c| c.is_whitespace() || c.is_control())
                    // What mail goes to must be the address itself, as the SMTP library reads
                    // it (no display-name or angle-bracket forms like `a<b@c.d>`).
                    && value.parse::<lettre::Address>().is_ok_and(|a| AsRef::<str>::as_ref(&a) == value)
            }
            None => false,
        };
        if !ok {
            errors.push("must be an email address like name@example.com".into());
        }
        errors
            .is_empty()
            .then(|| Self(value.to_owned()))
            .ok_or(errors)
    }

    /// The address as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A display name: [`DisplayName::MIN_CHARS`]–[`DisplayName::MAX_CHARS`] characters after
/// trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    /// Fewest characters.
    pub const MIN_CHARS: usize = 1;
    /// Most characters.
    pub const MAX_CHARS: usize = 64;

    /// Parses and trims a display name.
    ///
    /// Errors: each broken rule's message (422 field `display_name`).
    pub fn parse(value: &str) -> Result<Self, Vec<String>> {
        crate::platform::text::bounded_name(value, Self::MIN_CHARS, Self::MAX_CHARS).map(Self)
    }

    /// The trimmed name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(Username::parse(" alice_01 ").is_ok_and(|u| u.as_str() == "alice_01"));
        assert!(Username::parse("al").is_err());
        assert!(Username::parse("_alice").is_err());
        assert!(Username::parse("ali ce").is_err());
        assert!(Username::parse(&"a".repeat(33)).is_err());
    }

    #[test]
    fn emails() {
        assert!(Email::parse("a@example.com").is_ok());
        assert!(Email::parse("a@b").is_err());
        assert!(Email::parse("@b.c").is_err());
        assert!(Email::parse("a b@c.d").is_err());
        assert!(Email::parse("a@@b.c").is_err());
    }

    #[test]
    fn display_names() {
        assert!(DisplayName::parse("  Alice ").is_ok_and(|d| d.as_str() == "Alice"));
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse("a\u{7}b").is_err());
        assert!(DisplayName::parse(&"é".repeat(65)).is_err());
    }
}
