//! Text rules shared across the services: the short names people type (display names, group
//! names: trimmed, between a fewest and a most characters — Unicode scalar values —, no
//! control characters), and the previews of a message shown elsewhere (cut on a character
//! boundary, never inside a UTF-8 sequence).

/// Characters of a message shown where the message is not (mail digests, push payloads, the
/// feed, quotes; SQL `left(content, 140)` cuts by characters too).
pub const PREVIEW_CHARS: usize = 140;

/// `text` cut to at most `max` characters (Unicode scalar values, so never inside a UTF-8
/// sequence), with `…` when it was cut; line breaks become spaces.
pub fn preview(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match flat.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", flat[..cut].trim_end()),
        None => flat,
    }
}

/// `value` trimmed, if it has `min..=max` characters and no control character.
///
/// Errors: each broken rule's message, for a 422 field error.
pub fn bounded_name(value: &str, min: usize, max: usize) -> Result<String, Vec<String>> {
    let value = value.trim();
    let mut errors = Vec::new();
    if !(min..=max).contains(&value.chars().count()) {
        errors.push(format!("must be {min} to {max} characters"));
    }
    if value.chars().any(char::is_control) {
        errors.push("must not contain control characters".into());
    }
    if errors.is_empty() {
        Ok(value.to_owned())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod preview_tests {
    use super::*;

    #[test]
    fn previews_cut_on_characters_not_bytes() {
        assert_eq!(preview("héllo wörld", 5), "héllo…");
        assert_eq!(preview("👍👍👍", 2), "👍👍…");
        assert_eq!(preview("short", 140), "short");
        assert_eq!(preview("a\nb", 10), "a b");
    }
}
