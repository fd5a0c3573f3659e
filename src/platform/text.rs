//! The rule shared by the short names people type (display names, group names): trimmed,
//! between a fewest and a most characters (Unicode scalar values), no control characters.

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
