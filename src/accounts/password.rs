//! Passwords: 8 to 72 bytes, hashed with bcrypt at `BCRYPT_COST`.
//!
//! bcrypt ignores every byte past the 72nd, so a longer password is refused (422) rather
//! than silently truncated: two passwords sharing 72 bytes must not both work.

use crate::error::{ApiError, Code};

pub const MIN_BYTES: usize = 8;
pub const MAX_BYTES: usize = 72;

pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Password {
    pub fn parse(raw: String) -> Result<Password, ApiError> {
        Self::parse_as(raw, "password")
    }

    /// Parses a password sent in the field `param`.
    pub fn parse_as(raw: String, param: &str) -> Result<Password, ApiError> {
        if raw.len() < MIN_BYTES {
            return Err(ApiError::validation(
                Code::PasswordTooShort,
                param,
                format!("{param} must be at least {MIN_BYTES} bytes"),
            ));
        }
        if raw.len() > MAX_BYTES {
            return Err(ApiError::validation(
                Code::PasswordTooLong,
                param,
                format!("{param} must be at most {MAX_BYTES} bytes"),
            ));
        }
        Ok(Password(raw))
    }

    pub fn hash(&self, cost: u32) -> Result<String, ApiError> {
        bcrypt::hash(self.0.as_bytes(), cost).map_err(|err| ApiError::internal(format!("bcrypt hash failed: {err}")))
    }
}

/// Checks `candidate` against a stored hash. With no stored hash (unknown email) it checks
/// against a dummy of the same cost, so both failures take the same time.
pub fn verify(candidate: &str, stored_hash: Option<&str>, cost: u32) -> bool {
    let dummy;
    let hash = match stored_hash {
        Some(hash) => hash,
        None => {
            dummy = dummy_hash(cost);
            &dummy
        }
    };
    // Always run bcrypt (on at most 72 bytes, all it reads) so every failure costs the same;
    // it compares in constant time, and a malformed hash is a failure, not a panic.
    let bytes = candidate.as_bytes();
    let checked = bytes.get(..MAX_BYTES).unwrap_or(bytes);
    let matches = bcrypt::verify(checked, hash).unwrap_or(false);
    matches && bytes.len() <= MAX_BYTES && stored_hash.is_some()
}

/// A well-formed bcrypt hash of a random password nobody knows, at `cost`.
fn dummy_hash(cost: u32) -> String {
    format!("$2b${cost:02}$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_bounds_are_bytes_not_chars() {
        assert_eq!(Password::parse("1234567".into()).unwrap_err().code.as_str(), "password_too_short");
        assert!(Password::parse("12345678".into()).is_ok());
        assert!(Password::parse("x".repeat(72)).is_ok());
        assert_eq!(Password::parse("x".repeat(73)).unwrap_err().code.as_str(), "password_too_long");
        // 19 four-byte characters = 76 bytes: too long although only 19 chars.
        assert_eq!(Password::parse("😀".repeat(19)).unwrap_err().code.as_str(), "password_too_long");
    }

    #[test]
    fn hash_then_verify() {
        let hash = Password::parse("correct horse".into()).unwrap().hash(4).unwrap();
        assert!(hash.starts_with("$2b$04$"), "{hash}");
        assert!(verify("correct horse", Some(&hash), 4));
        assert!(!verify("wrong horse!", Some(&hash), 4));
        assert!(!verify("correct horse", Some("not-a-bcrypt-hash"), 4));
    }

    #[test]
    fn unknown_user_never_verifies_but_still_does_the_work() {
        assert!(!verify("anything at all", None, 4));
        assert!(bcrypt::verify("x", &dummy_hash(4)).is_ok(), "dummy hash must parse so it costs a real bcrypt run");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let p = Password::parse("hunter2hunter2".into()).unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
