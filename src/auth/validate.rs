//! Account field rules, checked once at the edge; each failure is a 422 field message.

use crate::platform::error::FieldErrors;

/// Usernames: 3–32 characters of ASCII letters, digits, `_`, `.`, `-`, starting with a letter
/// or digit. Compared case-insensitively.
pub fn username(value: &str, errors: &mut FieldErrors) {
    let mut add = |m: &str| errors.entry("username".into()).or_default().push(m.into());
    let n = value.chars().count();
    if !(3..=32).contains(&n) {
        add("must be 3 to 32 characters");
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        add("may contain only letters, digits, '_', '.' and '-'");
    }
    if !value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
    {
        add("must start with a letter or digit");
    }
}

/// Email addresses: at most 254 octets (RFC 5321 §4.5.3.1.3), one `@` with a non-empty local
/// part and a dotted domain, no spaces or control characters. Compared case-insensitively.
pub fn email(value: &str, errors: &mut FieldErrors) {
    let mut add = |m: &str| errors.entry("email".into()).or_default().push(m.into());
    if value.len() > 254 {
        add("must be at most 254 characters");
    }
    let ok = match value.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    };
    if !ok {
        add("must be an email address like name@example.com");
    }
}

/// Display names: 1–64 characters after trimming, no control characters.
pub fn display_name(value: &str, errors: &mut FieldErrors) {
    let mut add = |m: &str| {
        errors
            .entry("display_name".into())
            .or_default()
            .push(m.into())
    };
    let n = value.trim().chars().count();
    if !(1..=64).contains(&n) {
        add("must be 1 to 64 characters");
    }
    if value.chars().any(char::is_control) {
        add("must not contain control characters");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(f: impl Fn(&str, &mut FieldErrors), v: &str) -> usize {
        let mut e = FieldErrors::new();
        f(v, &mut e);
        e.values().map(Vec::len).sum()
    }

    #[test]
    fn usernames() {
        assert_eq!(errs(username, "alice_01"), 0);
        assert!(errs(username, "al") > 0);
        assert!(errs(username, "_alice") > 0);
        assert!(errs(username, "ali ce") > 0);
        assert!(errs(username, &"a".repeat(33)) > 0);
    }

    #[test]
    fn emails() {
        assert_eq!(errs(email, "a@example.com"), 0);
        assert!(errs(email, "a@b") > 0);
        assert!(errs(email, "@b.c") > 0);
        assert!(errs(email, "a b@c.d") > 0);
        assert!(errs(email, "a@@b.c") > 0);
    }
}
