//! Validated input types: once constructed, a value obeys its rules.
//!
//! Each `parse` returns the [`FieldError`] the API answers with (422), so
//! handlers never re-check and the message names the rule that failed.

use std::collections::HashSet;
use std::sync::LazyLock;

use keel_http::FieldError;

/// A normalised (trimmed, lowercased) email address. Lowercasing the local
/// part is technically lossy, but no real provider distinguishes case and
/// it makes "unique case-insensitively" trivially true.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let email = raw.trim().to_lowercase();
        let invalid = |message: &str| Err(FieldError::new("email", message));
        if email.is_empty() {
            return invalid("is required");
        }
        if email.len() > Self::MAX_LEN {
            return invalid("is longer than 254 characters");
        }
        if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return invalid("must not contain spaces or control characters");
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return invalid("is not an email address");
        };
        if local.is_empty() || local.len() > 64 || local.contains('@') {
            return invalid("is not an email address");
        }
        if !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
        {
            return invalid("is not an email address");
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Trusted input (read back from the database).
    pub fn from_stored(email: String) -> Self {
        Self(email)
    }
}

/// An optional display name: trimmed, 1–100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(FieldError::new("display_name", "must not be blank"));
        }
        if name.chars().count() > 100 {
            return Err(FieldError::new(
                "display_name",
                "is longer than 100 characters",
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(FieldError::new(
                "display_name",
                "must not contain control characters",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

static COMMON: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../data/common-passwords.txt")
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
});

/// A new password that passed the policy. Never logged or displayed.
pub struct NewPassword(String);

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPassword(<redacted>)")
    }
}

impl NewPassword {
    pub const MIN_CHARS: usize = 8;
    pub const MAX_CHARS: usize = 128;

    /// Policy (NIST SP 800-63B): length 8–128, not the email, not a known
    /// common password. `field` is the JSON field the password came in.
    pub fn parse(raw: &str, email: &Email, field: &str) -> Result<Self, FieldError> {
        let chars = raw.chars().count();
        if chars < Self::MIN_CHARS {
            return Err(FieldError::new(field, "is shorter than 8 characters"));
        }
        if chars > Self::MAX_CHARS {
            return Err(FieldError::new(field, "is longer than 128 characters"));
        }
        let lowered = raw.to_lowercase();
        if lowered == email.as_str()
            || email
                .as_str()
                .split('@')
                .next()
                .is_some_and(|local| local == lowered)
        {
            return Err(FieldError::new(field, "must not be the email address"));
        }
        if COMMON.contains(lowered.as_str()) {
            return Err(FieldError::new(
                field,
                "is too common (found in a list of leaked passwords)",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> Email {
        Email::parse("  Ada@Example.COM ").unwrap()
    }

    #[test]
    fn emails_are_trimmed_and_lowercased() {
        assert_eq!(email().as_str(), "ada@example.com");
    }

    #[test]
    fn malformed_emails_are_refused() {
        for raw in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "ada@.com",
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?}");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(300))).is_err());
    }

    #[test]
    fn the_password_policy_names_the_rule_that_failed() {
        let e = email();
        let message = |raw: &str| NewPassword::parse(raw, &e, "password").unwrap_err().message;
        assert!(message("short").contains("shorter"));
        assert!(message(&"x".repeat(129)).contains("longer"));
        assert!(message("ADA@example.com").contains("email"));
        assert!(message("Password123").contains("common"));
        assert!(NewPassword::parse("correct horse battery staple", &e, "password").is_ok());
    }

    #[test]
    fn the_common_password_list_is_loaded() {
        assert!(COMMON.len() > 1000);
    }
}
