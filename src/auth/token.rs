//! Account access tokens: HS256 JWTs with issuer, audience, subject (user id), a random
//! id (`jti`, which logout revokes), the account's token version (`ver`, which a password
//! change bumps) and a seven-day expiry. Time is passed in, so issuing and checking are
//! pure; whether the token was revoked is `auth`'s one D1 query.

use crate::error::{ApiError, Code};
use jwt_simple::prelude::*;
use jwt_simple::JWTError;

pub const ISSUER: &str = "nanobanana";
pub const AUDIENCE: &str = "nanobanana-api";
pub const LIFETIME_SECONDS: u64 = 7 * 24 * 3600;
/// Clock skew tolerated between Cloudflare locations.
const LEEWAY_SECONDS: u64 = 60;

/// `token_type` in the responses that issue a token.
#[derive(Debug, Clone, Copy, serde::Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    Bearer,
}

pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
}

/// The claims of our own beyond the registered ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    /// The account's `token_version` when the token was issued.
    ver: u32,
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    pub user_id: String,
    /// The token's own id, for revocation.
    pub jti: String,
    /// The account's token version at issue; older than the account's now: revoked.
    pub version: u32,
    pub expires_at_secs: u64,
}

pub fn issue(secret: &str, user_id: &str, version: u32, now_secs: u64) -> Result<IssuedToken, ApiError> {
    let key = HS256Key::from_bytes(secret.as_bytes());
    let now = Duration::from_secs(now_secs);
    let claims = JWTClaims {
        issued_at: Some(now),
        expires_at: Some(now + Duration::from_secs(LIFETIME_SECONDS)),
        invalid_before: Some(now),
        audiences: Some(Audiences::AsString(AUDIENCE.to_string())),
        issuer: Some(ISSUER.to_string()),
        jwt_id: Some(hex::encode(crate::random::bytes::<16>()?)),
        subject: Some(user_id.to_string()),
        nonce: None,
        custom: Session { ver: version },
    };
    let token = key.authenticate(claims).map_err(|err| ApiError::internal(format!("jwt signing failed: {err}")))?;
    Ok(IssuedToken { token, expires_in: LIFETIME_SECONDS })
}

/// The claims of a valid token. Expired tokens get their own code, so clients know to log
/// in again; every other failure is `invalid_token` with no detail to probe.
pub fn verify(secret: &str, token: &str, now_secs: u64) -> Result<TokenClaims, ApiError> {
    let key = HS256Key::from_bytes(secret.as_bytes());
    let options = VerificationOptions {
        allowed_issuers: Some(HashSet::from_strings(&[ISSUER])),
        allowed_audiences: Some(HashSet::from_strings(&[AUDIENCE])),
        time_tolerance: Some(Duration::from_secs(LEEWAY_SECONDS)),
        max_token_length: Some(4096),
        artificial_time: Some(Duration::from_secs(now_secs)),
        ..Default::default()
    };
    match key.verify_token::<Session>(token, Some(options)) {
        Ok(claims) => match (claims.subject, claims.jwt_id, claims.expires_at) {
            (Some(user_id), Some(jti), Some(expires)) if !user_id.is_empty() && !jti.is_empty() => {
                Ok(TokenClaims { user_id, jti, version: claims.custom.ver, expires_at_secs: expires.as_secs() })
            }
            _ => Err(invalid_token()),
        },
        Err(err) if matches!(err.downcast_ref::<JWTError>(), Some(JWTError::TokenHasExpired)) => {
            Err(ApiError::new(Code::TokenExpired, "the access token has expired; log in again"))
        }
        Err(_) => Err(invalid_token()),
    }
}

fn invalid_token() -> ApiError {
    ApiError::new(Code::InvalidToken, "the access token is invalid")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_795_394_549;

    #[test]
    fn issued_token_verifies_to_its_user_version_and_a_fresh_id() {
        let issued = issue(SECRET, "user-1", 3, NOW).unwrap();
        assert_eq!(issued.expires_in, 604_800);
        let claims = verify(SECRET, &issued.token, NOW + 10).unwrap();
        assert_eq!((claims.user_id.as_str(), claims.version), ("user-1", 3));
        assert_eq!((claims.jti.len(), claims.expires_at_secs), (32, NOW + LIFETIME_SECONDS));
        let again = verify(SECRET, &issue(SECRET, "user-1", 3, NOW).unwrap().token, NOW).unwrap();
        assert_ne!(again.jti, claims.jti, "each token has its own id");
    }

    #[test]
    fn a_token_without_an_id_is_invalid() {
        // Tokens issued before revocation existed carry no jti: they no longer work.
        let key = HS256Key::from_bytes(SECRET.as_bytes());
        let claims =
            Claims::create(Duration::from_hours(1)).with_subject("u").with_issuer(ISSUER).with_audience(AUDIENCE);
        let token = key.authenticate(claims).unwrap();
        assert_eq!(verify(SECRET, &token, coarsetime_now()).unwrap_err().code, Code::InvalidToken);
    }

    #[test]
    fn expired_token_is_token_expired() {
        let issued = issue(SECRET, "user-1", 0, NOW).unwrap();
        let later = NOW + LIFETIME_SECONDS + LEEWAY_SECONDS + 1;
        assert_eq!(verify(SECRET, &issued.token, later).unwrap_err().code.as_str(), "token_expired");
    }

    #[test]
    fn tampered_or_foreign_tokens_are_invalid() {
        let issued = issue(SECRET, "user-1", 0, NOW).unwrap();
        let other = issue("another-secret-another-secret-xx", "user-1", 0, NOW).unwrap();
        let mut tampered = issued.token.clone();
        tampered.pop();
        tampered.push(if issued.token.ends_with('A') { 'B' } else { 'A' });
        for bad in [other.token.as_str(), tampered.as_str(), "", "a.b.c", "nb_live_0123"] {
            let err = verify(SECRET, bad, NOW).unwrap_err();
            assert_eq!((err.status(), err.code.as_str()), (401, "invalid_token"), "{bad}");
        }
    }

    #[test]
    fn wrong_issuer_or_audience_is_invalid() {
        let key = HS256Key::from_bytes(SECRET.as_bytes());
        let claims = Claims::create(Duration::from_hours(1))
            .with_subject("u")
            .with_issuer("someone-else")
            .with_audience(AUDIENCE);
        let token = key.authenticate(claims).unwrap();
        assert_eq!(verify(SECRET, &token, coarsetime_now()).unwrap_err().code.as_str(), "invalid_token");
        let claims =
            Claims::create(Duration::from_hours(1)).with_subject("u").with_issuer(ISSUER).with_audience("other");
        let token = key.authenticate(claims).unwrap();
        assert_eq!(verify(SECRET, &token, coarsetime_now()).unwrap_err().code.as_str(), "invalid_token");
    }

    fn coarsetime_now() -> u64 {
        crate::time::now_millis() / 1000
    }
}
