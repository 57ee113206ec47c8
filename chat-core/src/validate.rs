//! Validation of names and bodies: one place, so every transport refuses the same input.

use crate::config::Limits;
use crate::error::{Error, Result};

/// Usernames: 1 to 32 characters from `[A-Za-z0-9_.-]`, starting with a letter or digit.
/// Unique case-insensitively (`Alice` and `alice` are the same account); stored as given.
/// The charset keeps names safe to print in terminals and URLs.
pub fn username(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 32 {
        return Err(Error::invalid("username", "must be 1 to 32 characters"));
    }
    let mut chars = name.chars();
    let first = chars.next().unwrap_or('_');
    if !first.is_ascii_alphanumeric() {
        return Err(Error::invalid(
            "username",
            "must start with a letter or digit",
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(Error::invalid(
            "username",
            "may contain only letters, digits, '_', '.' and '-'",
        ));
    }
    Ok(())
}

/// The case-folded form under which usernames and public room names are unique.
pub fn fold(name: &str) -> String {
    name.to_lowercase()
}

/// Room names: 1 to `max_room_name_chars` characters after trimming, no control characters.
pub fn room_name(name: &str, limits: &Limits) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::invalid("name", "must not be empty"));
    }
    if name.chars().count() > limits.max_room_name_chars {
        return Err(Error::invalid(
            "name",
            format!("must be at most {} characters", limits.max_room_name_chars),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "name",
            "must not contain control characters",
        ));
    }
    Ok(name.to_string())
}

/// Message bodies: non-empty (not only whitespace), at most `max_body_bytes`.
pub fn body(body: &str, limits: &Limits) -> Result<()> {
    if body.len() > limits.max_body_bytes {
        return Err(Error::BodyTooLarge {
            size: body.len(),
            limit: limits.max_body_bytes,
        });
    }
    if body.trim().is_empty() {
        return Err(Error::EmptyBody);
    }
    Ok(())
}

/// Client message ids: 1 to `max_client_msg_id_bytes` printable ASCII bytes.
pub fn client_msg_id(id: &str, limits: &Limits) -> Result<()> {
    if id.is_empty() || id.len() > limits.max_client_msg_id_bytes {
        return Err(Error::invalid(
            "client_msg_id",
            format!("must be 1 to {} bytes", limits.max_client_msg_id_bytes),
        ));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid("client_msg_id", "must be printable ASCII"));
    }
    Ok(())
}

/// Passwords for registration: at least `min_password_chars`, at most `max_password_bytes`.
pub fn new_password(password: &str, limits: &Limits) -> Result<()> {
    if password.len() > limits.max_password_bytes {
        return Err(Error::invalid(
            "password",
            format!("must be at most {} bytes", limits.max_password_bytes),
        ));
    }
    if password.chars().count() < limits.min_password_chars {
        return Err(Error::invalid(
            "password",
            format!("must be at least {} characters", limits.min_password_chars),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["alice", "Bob_2", "a", "x.y-z", "0day"] {
            assert!(username(ok).is_ok(), "{ok}");
        }
        for bad in ["", "_x", "-x", "a b", "ünï", "a\u{1b}[31m", &"x".repeat(33)] {
            assert!(username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bodies() {
        let l = Limits::default();
        assert!(body("hi", &l).is_ok());
        assert_eq!(body("", &l), Err(Error::EmptyBody));
        assert_eq!(body(" \n\t", &l), Err(Error::EmptyBody));
        let big = "x".repeat(l.max_body_bytes + 1);
        assert!(matches!(body(&big, &l), Err(Error::BodyTooLarge { .. })));
        assert!(body(&"x".repeat(l.max_body_bytes), &l).is_ok());
    }

    #[test]
    fn room_names_are_trimmed_and_bounded() {
        let l = Limits::default();
        assert_eq!(room_name("  lobby ", &l).unwrap(), "lobby");
        assert!(room_name("   ", &l).is_err());
        assert!(room_name("a\u{7}b", &l).is_err());
        assert!(room_name(&"é".repeat(101), &l).is_err());
        assert!(room_name(&"é".repeat(100), &l).is_ok());
    }

    #[test]
    fn client_ids_and_passwords() {
        let l = Limits::default();
        assert!(client_msg_id("abc-123", &l).is_ok());
        assert!(client_msg_id("", &l).is_err());
        assert!(client_msg_id("a b", &l).is_err());
        assert!(client_msg_id(&"x".repeat(65), &l).is_err());
        assert!(new_password("correct horse", &l).is_ok());
        assert!(new_password("short", &l).is_err());
        assert!(new_password(&"x".repeat(1025), &l).is_err());
    }
}
