//! Account access tokens: HS256 JWTs (RFC 7519) with issuer, audience, subject (user
//! id), a random id (`jti`, which logout revokes), the account's token version (`ver`,
//! which a password change bumps) and a seven-day expiry. Time is passed in, so issuing
//! and checking are pure; whether the token was revoked is `auth`'s one D1 query.
//!
//! Written here on the vetted HMAC of `hmac-sha256` rather than through `jwt-simple`:
//! one algorithm and one claim set need about 200 lines, while `jwt-simple` put 96 KB
//! into the wasm (a quarter of the gzipped bundle's excess). The tests check that both
//! read each other's tokens, so tokens issued before the switch keep working.

use crate::error::{ApiError, Code};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac_sha256::HMAC;
use serde::Serialize;
use serde_json::Value;

pub const ISSUER: &str = "nanobanana";
pub const AUDIENCE: &str = "nanobanana-api";
pub const LIFETIME_SECONDS: u64 = 7 * 24 * 3600;
/// Clock skew tolerated between Cloudflare locations: a token is accepted this long past
/// its `exp`, so its revocation is kept as long (`auth::prune_revoked_tokens`).
pub const LEEWAY_SECONDS: u64 = 60;
/// Longer is refused before any work: ours are about 330 characters.
const MAX_TOKEN_LENGTH: usize = 4096;
/// `{"alg":"HS256","typ":"JWT"}`, the only header this service issues.
const HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

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

/// The payload as issued. Field names and order match what `jwt-simple` wrote before.
#[derive(Serialize)]
struct IssuedClaims<'a> {
    iat: u64,
    exp: u64,
    nbf: u64,
    iss: &'a str,
    aud: &'a str,
    jti: &'a str,
    sub: &'a str,
    ver: u32,
}

fn signature(secret: &str, signed_part: &str) -> [u8; 32] {
    HMAC::mac(signed_part.as_bytes(), secret.as_bytes())
}

pub fn issue(secret: &str, user_id: &str, version: u32, now_secs: u64) -> Result<IssuedToken, ApiError> {
    let jti = hex::encode(crate::random::bytes::<16>()?);
    let claims = IssuedClaims {
        iat: now_secs,
        exp: now_secs + LIFETIME_SECONDS,
        nbf: now_secs,
        iss: ISSUER,
        aud: AUDIENCE,
        jti: &jti,
        sub: user_id,
        ver: version,
    };
    let payload = serde_json::to_vec(&claims).map_err(|err| ApiError::internal(format!("jwt claims: {err}")))?;
    let signed_part = format!("{HEADER}.{}", URL_SAFE_NO_PAD.encode(payload));
    let token = format!("{signed_part}.{}", URL_SAFE_NO_PAD.encode(signature(secret, &signed_part)));
    Ok(IssuedToken { token, expires_in: LIFETIME_SECONDS })
}

/// The claims of a valid token. Expired tokens get their own code, so clients know to log
/// in again; every other failure is `invalid_token` with no detail to probe. The signature
/// is checked (in constant time) before anything in the token is parsed.
pub fn verify(secret: &str, token: &str, now_secs: u64) -> Result<TokenClaims, ApiError> {
    if token.len() > MAX_TOKEN_LENGTH {
        return Err(invalid_token());
    }
    let (signed_part, signature_b64) = token.rsplit_once('.').ok_or_else(invalid_token)?;
    let (header_b64, payload_b64) = signed_part.split_once('.').ok_or_else(invalid_token)?;
    let mut given = [0u8; 32];
    match URL_SAFE_NO_PAD.decode_slice(signature_b64, &mut given) {
        Ok(32) => {}
        _ => return Err(invalid_token()),
    }
    let mut expected = HMAC::new(secret.as_bytes());
    expected.update(signed_part.as_bytes());
    if !expected.finalize_verify(&given) {
        return Err(invalid_token());
    }
    // Read as `serde_json::Value`, whose parser the wasm has anyway, rather than through
    // derived structs that would each add their own.
    let header = decode_part(header_b64)?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") || header.get("crit").is_some() {
        return Err(invalid_token());
    }
    let claims = decode_part(payload_b64)?;
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    // An absent time claim is None; one that is not a whole number is invalid.
    let time = |name: &str| match claims.get(name) {
        None => Ok(None),
        Some(value) => value.as_u64().map(Some).ok_or_else(invalid_token),
    };
    if text("iss") != Some(ISSUER) || text("aud") != Some(AUDIENCE) {
        return Err(invalid_token());
    }
    // Issued or valid only in the future (beyond the tolerated skew): not ours to accept.
    let in_future = |at: Option<u64>| at.is_some_and(|at| at > now_secs.saturating_add(LEEWAY_SECONDS));
    if in_future(time("iat")?) || in_future(time("nbf")?) {
        return Err(invalid_token());
    }
    let expires_at_secs = time("exp")?.ok_or_else(invalid_token)?;
    if now_secs > expires_at_secs.saturating_add(LEEWAY_SECONDS) {
        return Err(ApiError::new(Code::TokenExpired, "the access token has expired; log in again"));
    }
    let version = claims.get("ver").and_then(Value::as_u64).and_then(|ver| u32::try_from(ver).ok());
    match (text("sub"), text("jti"), version) {
        (Some(user_id), Some(jti), Some(version)) if !user_id.is_empty() && !jti.is_empty() => {
            Ok(TokenClaims { user_id: user_id.to_string(), jti: jti.to_string(), version, expires_at_secs })
        }
        _ => Err(invalid_token()),
    }
}

/// One base64url JSON object of a token whose signature already checked out.
fn decode_part(part: &str) -> Result<serde_json::Map<String, Value>, ApiError> {
    let json = URL_SAFE_NO_PAD.decode(part).map_err(|_| invalid_token())?;
    match serde_json::from_slice(&json) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(invalid_token()),
    }
}

fn invalid_token() -> ApiError {
    ApiError::new(Code::InvalidToken, "the access token is invalid")
}

// Native only: jwt-simple is a dev-dependency for the host.
#[cfg(test)]
#[cfg(not(target_arch = "wasm32"))]
mod tests {
    use super::*;
    // The crate these tokens were issued with before, kept to check both read each other.
    use jwt_simple::prelude::{Audiences, Claims, Duration, HS256Key, JWTClaims, MACLike, VerificationOptions};

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Session {
        ver: u32,
    }

    /// A token exactly as the jwt-simple version of `issue` wrote it.
    fn jwt_simple_token(secret: &str, user_id: &str, version: u32, now_secs: u64) -> String {
        let now = Duration::from_secs(now_secs);
        let claims = JWTClaims {
            issued_at: Some(now),
            expires_at: Some(now + Duration::from_secs(LIFETIME_SECONDS)),
            invalid_before: Some(now),
            audiences: Some(Audiences::AsString(AUDIENCE.to_string())),
            issuer: Some(ISSUER.to_string()),
            jwt_id: Some("0123456789abcdef0123456789abcdef".to_string()),
            subject: Some(user_id.to_string()),
            nonce: None,
            custom: Session { ver: version },
        };
        HS256Key::from_bytes(secret.as_bytes()).authenticate(claims).unwrap()
    }

    /// A token signed with SECRET over any header and payload.
    fn signed(header: &str, payload: &str) -> String {
        let part = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
        format!("{part}.{}", URL_SAFE_NO_PAD.encode(signature(SECRET, &part)))
    }

    fn payload(extra: &str) -> String {
        format!(
            r#"{{"iat":{NOW},"exp":{},"nbf":{NOW},"iss":"{ISSUER}","aud":"{AUDIENCE}","jti":"j","sub":"u","ver":1{extra}}}"#,
            NOW + 3600
        )
    }

    #[test]
    fn tokens_issued_by_jwt_simple_still_verify_and_ours_verify_there() {
        let old = jwt_simple_token(SECRET, "user-9", 4, NOW);
        let claims = verify(SECRET, &old, NOW + 5).unwrap();
        assert_eq!((claims.user_id.as_str(), claims.version), ("user-9", 4));
        assert_eq!(claims.expires_at_secs, NOW + LIFETIME_SECONDS);
        assert_eq!(old.split('.').next(), Some(HEADER), "the same header");

        let ours = issue(SECRET, "user-9", 4, NOW).unwrap().token;
        let options = VerificationOptions { artificial_time: Some(Duration::from_secs(NOW + 5)), ..Default::default() };
        let read = HS256Key::from_bytes(SECRET.as_bytes()).verify_token::<Session>(&ours, Some(options)).unwrap();
        assert_eq!((read.subject.as_deref(), read.custom.ver), (Some("user-9"), 4));
        assert_eq!(read.issuer.as_deref(), Some(ISSUER));
        assert_eq!(read.expires_at.map(|at| at.as_secs()), Some(NOW + LIFETIME_SECONDS));
    }

    #[test]
    fn a_well_signed_token_is_still_refused_for_anything_we_do_not_issue() {
        assert!(verify(SECRET, &signed(r#"{"alg":"HS256","typ":"JWT"}"#, &payload("")), NOW).is_ok());
        let refused = [
            signed(r#"{"alg":"none"}"#, &payload("")),
            signed(r#"{"alg":"HS512"}"#, &payload("")),
            signed(r#"{"alg":"HS256","crit":["exp"]}"#, &payload("")),
            signed("not json", &payload("")),
            signed(r#"{"alg":"HS256"}"#, "[]"),
            signed(r#"{"alg":"HS256"}"#, &payload("").replace(r#","ver":1"#, "")),
            signed(r#"{"alg":"HS256"}"#, &payload("").replace(r#""sub":"u""#, r#""sub":"""#)),
            signed(
                r#"{"alg":"HS256"}"#,
                &payload("").replace(&format!(r#""nbf":{NOW}"#), &format!(r#""nbf":{}"#, NOW + 61)),
            ),
            signed(
                r#"{"alg":"HS256"}"#,
                &payload("").replace(&format!(r#""iat":{NOW}"#), &format!(r#""iat":{}"#, NOW + 61)),
            ),
            signed(r#"{"alg":"HS256"}"#, &payload("").replace(&format!(r#","exp":{}"#, NOW + 3600), "")),
            signed(r#"{"alg":"HS256"}"#, &payload("").replace(AUDIENCE, "elsewhere")),
            signed(r#"{"alg":"HS256"}"#, &payload("").replace(&format!(r#""iat":{NOW}"#), r#""iat":"now""#)),
            signed(r#"{"alg":"HS256"}"#, &payload("").replace(r#""ver":1"#, r#""ver":4294967296"#)),
            format!("{}.", signed(r#"{"alg":"HS256"}"#, &payload(""))),
            format!("{}{}", signed(r#"{"alg":"HS256"}"#, &payload("")), "A"),
            format!("x.{}", signed(r#"{"alg":"HS256"}"#, &payload(""))),
            signed(r#"{"alg":"HS256"}"#, &payload(&format!(r#","pad":"{}""#, "x".repeat(4096)))),
        ];
        for token in refused {
            let err = verify(SECRET, &token, NOW).unwrap_err();
            assert_eq!((err.status(), err.code), (401, Code::InvalidToken), "{token:.120}");
        }
        // Issued a little in the future (clock skew between locations) is fine.
        let skewed = payload("").replace(&format!(r#""nbf":{NOW}"#), &format!(r#""nbf":{}"#, NOW + 60));
        assert!(verify(SECRET, &signed(r#"{"alg":"HS256"}"#, &skewed), NOW).is_ok());
    }

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
