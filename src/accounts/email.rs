//! `Email`: trimmed, lower-cased and checked once, then trusted everywhere.

use crate::error::{ApiError, Code};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Accepts `local@domain.tld` with no spaces, one `@`, a dotted domain of letters,
    /// digits and hyphens, and the RFC 5321 lengths (64 local, 254 total).
    pub fn parse(raw: &str) -> Result<Email, ApiError> {
        // ASCII only (so no Unicode case tables in the wasm): anything else is refused below.
        let email = raw.trim().to_ascii_lowercase();
        let invalid = || ApiError::validation(Code::InvalidEmail, "email", "email must be a valid email address");
        if email.is_empty() || email.len() > 254 {
            return Err(invalid());
        }
        let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b));
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
            && labels.last().is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()));
        if local_ok && domain_ok {
            Ok(Email(email))
        } else {
            Err(invalid())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_whitespace() {
        assert_eq!(Email::parse("  Ada.Lovelace@Example.COM \n").unwrap().as_str(), "ada.lovelace@example.com");
        assert_eq!(Email::parse("a+tag@sub.example.co").unwrap().as_str(), "a+tag@sub.example.co");
    }

    #[test]
    fn rejects_what_is_not_an_address() {
        for bad in [
            "",
            "   ",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@b..com",
            "a@-b.com",
            "a@b-.com",
            ".a@b.com",
            "a.@b.com",
            "a..b@c.com",
            "a@b.c",
            "a@b.c0m",
            "a@b.com@c.com",
            "<script>@x.com",
            // Non-ASCII is refused, even where Unicode would lower-case it to ASCII
            // (KELVIN SIGN to "k"): no two spellings of one address.
            "\u{212A}@example.com",
            "a@\u{212A}.com",
            "ad\u{e4}@example.com",
        ] {
            let err = Email::parse(bad).unwrap_err();
            assert_eq!(
                (err.status(), err.code.as_str(), err.param.as_deref()),
                (422, "invalid_email", Some("email")),
                "{bad:?}"
            );
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(Email::parse(&long_local).is_err());
        let long_total = format!("a@{}.com", "b".repeat(250));
        assert!(Email::parse(&long_total).is_err());
    }
}
