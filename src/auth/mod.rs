//! Who is calling. Everything about credentials lives here: the `Authorization: Bearer`
//! header, account access tokens (`token`), API keys and their form (`api_key`), looking
//! a key up (`key_principal`), and the [`Caller`] a route that takes either one gets.
//! Each route takes exactly one kind, or either (history, usage); the wrong kind is
//! refused by name. `keys/` creates, lists and revokes keys; it does not authenticate.

mod account;
pub mod api_key;
mod key_principal;
pub mod token;

use crate::error::{ApiError, ApiResult, Code};
use crate::http::{header, RequestContext};
pub use account::{suspended, Account, Role};
pub use api_key::{ApiKey, KeyMode};
pub use key_principal::{KeyPrincipal, PendingKey};
use worker::Request;

/// The bearer credential, or 401 `missing_authorization` / `malformed_authorization`.
pub fn bearer(authorization: Option<&str>) -> ApiResult<&str> {
    let value = authorization.map(str::trim).filter(|v| !v.is_empty()).ok_or_else(|| {
        ApiError::new(Code::MissingAuthorization, "send your credentials as Authorization: Bearer <token>")
    })?;
    match value.split_once(' ') {
        Some((scheme, credential))
            if scheme.eq_ignore_ascii_case("bearer")
                && !credential.trim().is_empty()
                && !credential.trim().contains(' ') =>
        {
            Ok(credential.trim())
        }
        _ => Err(ApiError::new(Code::MalformedAuthorization, "the Authorization header must be: Bearer <token>")),
    }
}

/// True for anything shaped like an API key, valid or not.
pub fn looks_like_api_key(credential: &str) -> bool {
    credential.starts_with("nb_")
}

/// True for anything shaped like a JWT (three dot-separated parts), valid or not.
fn looks_like_jwt(credential: &str) -> bool {
    !looks_like_api_key(credential) && credential.matches('.').count() == 2
}

/// The claims of a valid account token. An API key here is refused by name.
pub fn account_from_token(credential: &str, secret: &str, now_secs: u64) -> ApiResult<token::TokenClaims> {
    if looks_like_api_key(credential) {
        return Err(ApiError::new(
            Code::ApiKeyNotAccepted,
            "this route takes an account access token from /v1/auth/login, not an API key",
        ));
    }
    token::verify(secret, credential, now_secs)
}

/// Authenticates an account route: a valid token (no D1), then one query for revocation
/// and suspension.
pub async fn require_account(req: &Request, rc: &RequestContext) -> ApiResult<Account> {
    let secret = rc.config.jwt_secret()?;
    let authorization = header(req, "authorization");
    let credential = bearer(authorization.as_deref())?;
    account::resolve(rc, account_from_token(credential, secret, rc.now_ms / 1000)?).await
}

/// Authenticates an admin route. Anyone else, signed in or not, gets the 404 of a route
/// that does not exist: the admin surface is not advertised.
pub async fn require_admin(req: &Request, rc: &RequestContext, method: &str, path: &str) -> ApiResult<Account> {
    match require_account(req, rc).await {
        Ok(account) if account.role == Role::Admin => Ok(account),
        // Misconfiguration and D1 failures stay what they are.
        Err(err) if err.status() >= 500 => Err(err),
        _ => Err(ApiError::route_not_found(method, path)),
    }
}

/// The API key an API-key-only route is called with, checked for form only (no D1): a
/// malformed key costs no round trip. The route then looks it up ([`PendingKey`]), in its
/// own first batch.
pub fn api_key(req: &Request) -> ApiResult<ApiKey> {
    let authorization = header(req, "authorization");
    let credential = bearer(authorization.as_deref())?;
    if looks_like_jwt(credential) {
        return Err(ApiError::new(
            Code::JwtNotAccepted,
            "this route takes an API key (nb_live_... or nb_test_...), not an account access token",
        ));
    }
    ApiKey::parse(credential)
}

/// The API key a request presents, checked for form only (no D1); None when the
/// credential is missing or is not shaped like an API key (`require_caller` then says why).
/// For routes that look the key up in their own first batch ([`PendingKey`]).
pub fn api_key_credential(req: &Request) -> ApiResult<Option<ApiKey>> {
    let authorization = header(req, "authorization");
    match bearer(authorization.as_deref()) {
        Ok(credential) if looks_like_api_key(credential) => ApiKey::parse(credential).map(Some),
        _ => Ok(None),
    }
}

/// Deletes revocations whose tokens are refused anyway (cron): past their `exp` plus the
/// leeway `token::verify` still accepts them for. Through the expiry index.
pub async fn prune_revoked_tokens(db: &crate::db::Db<'_>, now_ms: u64) -> ApiResult<usize> {
    use crate::db::D1ResultExt;
    let cutoff = now_ms.saturating_sub(token::LEEWAY_SECONDS * 1000);
    let statement =
        db.prepare("DELETE FROM revoked_tokens WHERE expires_at_ms < ?1").bind(&[crate::db::int(cutoff as i64)])?;
    db.run(statement).await.or_internal()
}

/// Who is asking on a route that takes either credential.
pub enum Caller {
    /// An account token: everything the account owns.
    Account(Account),
    /// An API key: only what that key did.
    Key(KeyPrincipal),
}

impl Caller {
    pub fn user_id(&self) -> &str {
        match self {
            Caller::Account(account) => &account.user_id,
            Caller::Key(principal) => &principal.user_id,
        }
    }

    pub fn key_id(&self) -> Option<&str> {
        match self {
            Caller::Account(_) => None,
            Caller::Key(principal) => Some(&principal.key_id),
        }
    }
}

/// Authenticates a route that takes an account token or an API key, told apart by shape.
pub async fn require_caller(req: &Request, rc: &RequestContext) -> ApiResult<Caller> {
    match api_key_credential(req)? {
        Some(key) => Ok(Caller::Key(key_principal::resolve(rc, &key).await?)),
        None => Ok(Caller::Account(require_account(req, rc).await?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer(Some("bearer   abc  ")).unwrap(), "abc");
        assert_eq!(bearer(None).unwrap_err().code, Code::MissingAuthorization);
        assert_eq!(bearer(Some("  ")).unwrap_err().code, Code::MissingAuthorization);
        for bad in ["abc", "Basic abc", "Bearer", "Bearer ", "Bearer a b", "Token abc"] {
            assert_eq!(bearer(Some(bad)).unwrap_err().code, Code::MalformedAuthorization, "{bad}");
        }
    }

    #[test]
    fn api_key_on_an_account_route_is_refused_by_name() {
        let err = account_from_token("nb_live_0123456789abcdef0123456789abcdef", "s", 0).unwrap_err();
        assert_eq!((err.status(), err.code), (401, Code::ApiKeyNotAccepted));
    }

    #[test]
    fn credentials_are_told_apart_by_shape() {
        assert!(looks_like_jwt("aaa.bbb.ccc"));
        assert!(!looks_like_jwt("nb_live_a.b.c"));
        assert!(!looks_like_jwt("abc"));
    }
}
