//! Reading environment variables (12-factor, DESIGN.md §6): a value or a default, parsed,
//! never silently replaced when present but malformed. Used by [`super::config`] and
//! [`super::secrets`].

use std::str::FromStr;

use anyhow::anyhow;

/// Reads `name` from the environment, or `default` when it is unset or empty.
pub fn var_or(name: &str, default: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => default.to_owned(),
    }
}

/// Reads and parses `name`, or returns `default` when it is unset or empty.
///
/// Errors: the value is present but does not parse as `T`.
pub fn parse_or<T>(name: &str, default: T) -> anyhow::Result<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<T>()
            .map_err(|e| anyhow!("{name}={v:?} is not valid: {e}")),
        _ => Ok(default),
    }
}

/// Reads a boolean (`true/false/1/0/yes/no/on/off`), or `default` when unset.
pub fn bool_or(name: &str, default: bool) -> anyhow::Result<bool> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(anyhow!("{name}={v:?} is not a boolean")),
        },
        _ => Ok(default),
    }
}

/// Reads a comma-separated list, trimming blanks.
pub fn list_or(name: &str, default: &str) -> Vec<String> {
    var_or(name, default)
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}
