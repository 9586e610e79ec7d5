//! Resolving an access token to the account it acts for: one D1 query checks that the
//! account exists, is not suspended, and that the token was neither logged out (`jti` in
//! `revoked_tokens`) nor issued before a password change (`token_version`).

use super::token::TokenClaims;
use crate::db;
use crate::error::{ApiError, ApiResult, Code};
use crate::http::RequestContext;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    /// Reaches `/v1/admin/`.
    Admin,
}

impl Role {
    /// As in the API and the `role` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

crate::db::text_column!(Role: Role::User, Role::Admin);

/// The account behind a valid, unrevoked access token.
#[derive(Debug, Clone)]
pub struct Account {
    pub user_id: String,
    pub email: String,
    pub role: Role,
    pub created_at: String,
    /// The token's own id and expiry, for logout.
    pub jti: String,
    pub token_expires_at_secs: u64,
    pub token_version: u32,
}

crate::db::row! {
    struct AccountRow {
        email: String,
        role: Role,
        created_at: String,
        suspended_at: Option<String>,
        token_version: i64,
        revoked: i64,
    }
}

pub(super) async fn resolve(rc: &RequestContext, claims: TokenClaims) -> ApiResult<Account> {
    let db = rc.db()?;
    let row: Option<AccountRow> = db
        .first(
            db.prepare(
                "SELECT email, role, created_at, suspended_at, token_version,
                        EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = ?2) AS revoked
                 FROM users WHERE id = ?1",
            )
            .bind(&[db::text(&claims.user_id), db::text(&claims.jti)])?,
        )
        .await?;
    let row = row.ok_or_else(|| ApiError::new(Code::InvalidToken, "the access token is invalid"))?;
    if row.revoked != 0 || i64::from(claims.version) != row.token_version {
        return Err(ApiError::new(
            Code::TokenRevoked,
            "this access token was revoked (logged out, or the password changed); log in again",
        ));
    }
    if row.suspended_at.is_some() {
        return Err(suspended());
    }
    Ok(Account {
        user_id: claims.user_id,
        email: row.email,
        role: row.role,
        created_at: row.created_at,
        jti: claims.jti,
        token_expires_at_secs: claims.expires_at_secs,
        token_version: claims.version,
    })
}

pub fn suspended() -> ApiError {
    ApiError::new(Code::AccountSuspended, "this account is suspended; contact the operator of this service")
}
