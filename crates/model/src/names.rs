//! Validation of user-chosen names and free text, shared by every object that has one.

use crate::limits::{MAX_DESCRIPTION_BYTES, MAX_NAME_BYTES};
use crate::rejection::Rejection;

/// Pool, network, tenant and job names: lowercase letters, digits and hyphens, starting
/// with a letter, not ending with a hyphen, 1..=64 bytes (the ModelArts pool name rule).
pub fn validate_name(field: &'static str, name: &str) -> Result<(), Rejection> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_NAME_BYTES {
        Some("must be at most 64 bytes")
    } else if !name.starts_with(|character: char| character.is_ascii_lowercase()) {
        Some("must start with a lowercase letter")
    } else if name.ends_with('-') {
        Some("must not end with a hyphen")
    } else if !name.chars().all(|character| {
        character.is_ascii_lowercase() || character.is_ascii_digit() || character == '-'
    }) {
        Some("may contain only lowercase letters, digits and hyphens")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Rejection::invalid(
            field,
            format!("'{}' {reason}", truncate(name)),
        )),
        None => Ok(()),
    }
}

/// Free text with an upper bound and no control characters.
pub fn validate_text(field: &'static str, text: &str, max_bytes: usize) -> Result<(), Rejection> {
    if text.len() > max_bytes {
        return Err(Rejection::invalid(
            field,
            format!("must be at most {max_bytes} bytes"),
        ));
    }
    if text
        .chars()
        .any(|character| character.is_control() && character != '\n')
    {
        return Err(Rejection::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

pub fn validate_description(text: &str) -> Result<(), Rejection> {
    validate_text("description", text, MAX_DESCRIPTION_BYTES)
}

/// Label keys and values, accelerator types, driver versions: printable ASCII without
/// spaces, so they are safe in environment variables and tables.
pub fn validate_token_text(
    field: &'static str,
    text: &str,
    max_bytes: usize,
) -> Result<(), Rejection> {
    if text.is_empty() || text.len() > max_bytes {
        return Err(Rejection::invalid(
            field,
            format!("must be 1..={max_bytes} bytes"),
        ));
    }
    if !text.chars().all(|character| character.is_ascii_graphic()) {
        return Err(Rejection::invalid(
            field,
            "must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

fn truncate(text: &str) -> String {
    text.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_name_rules() {
        assert!(validate_name("name", "pool-a1").is_ok());
        assert!(validate_name("name", "").is_err());
        assert!(validate_name("name", "1pool").is_err());
        assert!(validate_name("name", "Pool").is_err());
        assert!(validate_name("name", "pool-").is_err());
        assert!(validate_name("name", "pool_a").is_err());
        assert!(validate_name("name", &"a".repeat(65)).is_err());
    }

    #[test]
    fn text_rules() {
        assert!(validate_text("description", "hello\nworld", 20).is_ok());
        assert!(validate_text("description", "bell\u{7}", 20).is_err());
        assert!(validate_token_text("label", "zone=a", 20).is_ok());
        assert!(validate_token_text("label", "has space", 20).is_err());
    }
}
