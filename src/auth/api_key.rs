//! API keys: `nb_live_` or `nb_test_` + 32 lowercase hex (40 characters). Only the SHA-256
//! hex of a key is stored; the key itself exists in the 201 response and nowhere else.

use crate::error::{ApiError, Code};
use hmac_sha256::Hash as Sha256;

pub const KEY_LEN: usize = 40;
pub const PREFIX_LEN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum KeyMode {
    /// Calls Gemini; costs real money.
    Live,
    /// Never calls Gemini: a synthetic image, same auth, quota, rate limit and storage.
    Test,
}

crate::db::text_column!(KeyMode: KeyMode::Live, KeyMode::Test);

impl KeyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyMode::Live => "live",
            KeyMode::Test => "test",
        }
    }

    /// `live` or `test`; anything else is 400 `invalid_value` on `param`.
    pub fn parse(value: &str, param: &str) -> Result<KeyMode, ApiError> {
        match value {
            "live" => Ok(KeyMode::Live),
            "test" => Ok(KeyMode::Test),
            _ => Err(ApiError::invalid_value(param, format!("{param} must be \"live\" or \"test\""))),
        }
    }

    fn key_prefix(self) -> &'static str {
        match self {
            KeyMode::Live => "nb_live_",
            KeyMode::Test => "nb_test_",
        }
    }
}

/// A key of valid form (not yet known to exist).
pub struct ApiKey {
    full: String,
    mode: KeyMode,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({}...)", self.prefix())
    }
}

impl ApiKey {
    /// Checks the form before any database work: 401 `malformed_api_key` otherwise.
    pub fn parse(candidate: &str) -> Result<ApiKey, ApiError> {
        let mode = if candidate.starts_with(KeyMode::Live.key_prefix()) {
            KeyMode::Live
        } else if candidate.starts_with(KeyMode::Test.key_prefix()) {
            KeyMode::Test
        } else {
            return Err(malformed());
        };
        let secret = &candidate[mode.key_prefix().len()..];
        let well_formed =
            candidate.len() == KEY_LEN && secret.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if well_formed {
            Ok(ApiKey { full: candidate.to_string(), mode })
        } else {
            Err(malformed())
        }
    }

    /// A new key from 16 bytes of the platform CSPRNG.
    pub fn generate(mode: KeyMode) -> Result<ApiKey, ApiError> {
        let secret = crate::random::bytes::<16>()?;
        Ok(ApiKey { full: format!("{}{}", mode.key_prefix(), hex::encode(secret)), mode })
    }

    pub fn mode(&self) -> KeyMode {
        self.mode
    }

    /// What is stored and looked up: SHA-256 hex of the whole key. Keys carry 128 random
    /// bits, so a fast hash is enough (no salt, no bcrypt) and lookup is one index probe.
    pub fn hash(&self) -> String {
        hash_key(&self.full)
    }

    pub fn prefix(&self) -> &str {
        &self.full[..PREFIX_LEN]
    }

    /// The full key: for the creation response only.
    pub fn reveal(&self) -> &str {
        &self.full
    }
}

pub fn hash_key(full: &str) -> String {
    hex::encode(Sha256::hash(full.as_bytes()))
}

fn malformed() -> ApiError {
    ApiError::new(
        Code::MalformedApiKey,
        "the API key is malformed: expected nb_live_ or nb_test_ followed by 32 lowercase hex characters",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_form() {
        for mode in [KeyMode::Live, KeyMode::Test] {
            let key = ApiKey::generate(mode).unwrap();
            assert_eq!(key.reveal().len(), 40);
            assert!(key.reveal().starts_with(&format!("nb_{}_", mode.as_str())));
            assert_eq!(key.prefix(), &key.reveal()[..12]);
            let parsed = ApiKey::parse(key.reveal()).unwrap();
            assert_eq!(parsed.mode(), mode);
            assert_eq!(parsed.hash(), key.hash());
        }
        assert_ne!(
            ApiKey::generate(KeyMode::Live).unwrap().reveal(),
            ApiKey::generate(KeyMode::Live).unwrap().reveal()
        );
    }

    #[test]
    fn hash_is_sha256_hex_of_the_full_key() {
        // Pinned with an independent tool: printf nb_test_000...0 | sha256sum
        let key = ApiKey::parse("nb_test_00000000000000000000000000000000").unwrap();
        assert_eq!(key.hash(), "c5c3c6bce6ed32a2b8fd47513a3388fb44486f73f8e6e0be644dcf84edf5ea60");
        assert_ne!(key.hash(), hash_key("nb_test_00000000000000000000000000000001"));
    }

    #[test]
    fn malformed_keys_are_refused_before_any_lookup() {
        for bad in [
            "",
            "nb_live_",
            "nb_live_0123456789abcdef0123456789abcde",   // 31 hex
            "nb_live_0123456789abcdef0123456789abcdef0", // 33 hex
            "nb_live_0123456789ABCDEF0123456789abcdef",  // upper case
            "nb_prod_0123456789abcdef0123456789abcdef",
            "sk-0123456789abcdef0123456789abcdef",
            "nb_live_0123456789abcdef0123456789abcdeg",
            "nb_test_é123456789abcdef0123456789abcde",
        ] {
            let err = ApiKey::parse(bad).unwrap_err();
            assert_eq!((err.status(), err.code.as_str()), (401, "malformed_api_key"), "{bad}");
        }
    }

    #[test]
    fn debug_shows_only_the_prefix() {
        let key = ApiKey::generate(KeyMode::Live).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains(key.prefix()) && !shown.contains(key.reveal()), "{shown}");
    }

    #[test]
    fn mode_values() {
        assert_eq!(KeyMode::parse("test", "mode").unwrap(), KeyMode::Test);
        let err = KeyMode::parse("prod", "mode").unwrap_err();
        assert_eq!((err.status(), err.code.as_str(), err.param.as_deref()), (400, "invalid_value", Some("mode")));
    }
}
