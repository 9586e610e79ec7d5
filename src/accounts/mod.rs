//! Accounts: register, log in, and who am I. Owns the `users` table.

pub mod email;
pub mod password;

use crate::auth::{self, token, token::TokenType};
use crate::body::JsonObject;
use crate::db::{self, Batch, D1ResultExt};
use crate::error::{ApiError, ApiResult, Code};
use crate::http::{self, RequestContext};
use crate::throttle;
use email::Email;
use password::Password;
use serde::{Deserialize, Serialize};
use worker::{Request, Response};

#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct User {
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::uuid"))]
    pub id: String,
    pub email: String,
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::timestamp"))]
    pub created_at: String,
}

#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct RegisterResponse {
    user: User,
    access_token: String,
    token_type: TokenType,
    /// Seconds until the access token expires.
    expires_in: u64,
}

#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct LoginResponse {
    access_token: String,
    token_type: TokenType,
    /// Seconds until the access token expires.
    expires_in: u64,
}

/// `POST /v1/auth/register`: 201 with the new user and a token; 409 if the email is taken.
pub async fn register(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    let secret = rc.config.jwt_secret()?;
    let (email_raw, password_raw) = read_credentials(req).await?;
    let email = Email::parse(&email_raw)?;
    let password = Password::parse(password_raw)?;

    // Registrations per client IP, counted before the bcrypt work.
    let db = rc.db()?;
    let window = throttle::Window {
        scope: throttle::Scope::Register,
        max: rc.config.register_max_per_ip,
        window_ms: rc.config.register_window_seconds * 1000,
    };
    let client = http::header(req, "cf-connecting-ip").unwrap_or_else(|| "unknown".to_string());
    let mut batch = Batch::new();
    let attempt = throttle::take(&mut batch, &db, window, &client, rc.now_ms)?;
    let results = db.batch(batch).await.or_internal()?;
    throttle::outcome(&results, attempt, window, rc.now_ms)?;

    let password_hash = password.hash(rc.config.bcrypt_cost)?;
    let user = User {
        id: crate::random::uuid_v4()?,
        email: email.as_str().to_string(),
        created_at: crate::time::iso_from_millis(rc.now_ms),
    };
    // The unique index decides races: two concurrent sign-ups get one 201 and one 409.
    let insert = db
        .prepare("INSERT INTO users (id, email, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)")
        .bind(&[db::text(&user.id), db::text(&user.email), db::text(&password_hash), db::text(&user.created_at)])?;
    db.run(insert).await.on_unique(|| {
        ApiError::new(Code::EmailTaken, "an account with this email already exists").with_param("email")
    })?;

    let issued = token::issue(secret, &user.id, rc.now_ms / 1000)?;
    http::json(
        201,
        &RegisterResponse {
            user,
            access_token: issued.token,
            token_type: TokenType::Bearer,
            expires_in: issued.expires_in,
        },
    )
}

/// `{email, password}`, both required strings, nothing else.
async fn read_credentials(req: &mut Request) -> ApiResult<(String, String)> {
    credentials(http::json_body(req).await?)
}

pub(crate) fn credentials(mut body: JsonObject) -> ApiResult<(String, String)> {
    let email = body.required_str("email", Code::EmailRequired)?;
    let password = body.required_str("password", Code::PasswordRequired)?;
    body.finish()?;
    Ok((email, password))
}

/// The body of `POST /v1/auth/register` and `/v1/auth/login`, as documented.
#[cfg(test)]
#[derive(schemars::JsonSchema)]
#[schemars(rename = "Credentials", deny_unknown_fields)]
pub struct CredentialsRequest {
    #[schemars(email)]
    pub email: String,
    /// 8 to 72 bytes.
    #[schemars(length(min = 8))]
    pub password: String,
}

#[derive(Deserialize)]
struct Credentials {
    id: String,
    password_hash: String,
}

/// `POST /v1/auth/login`: unknown email and wrong password are the same 401, in the same
/// time. Too many failures for one email in the window: 429 whatever the password.
pub async fn login(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    let secret = rc.config.jwt_secret()?;
    let (email_raw, password_raw) = read_credentials(req).await?;
    let email = email_raw.trim().to_lowercase();

    // One round trip: take a login attempt for this email and look the user up.
    let db = rc.db()?;
    let window = throttle::Window {
        scope: throttle::Scope::Login,
        max: rc.config.login_max_failures,
        window_ms: rc.config.login_window_seconds * 1000,
    };
    let mut batch = Batch::new();
    let attempt = throttle::take(&mut batch, &db, window, &email, rc.now_ms)?;
    let user_slot = batch.push::<Credentials>(
        db.prepare("SELECT id, password_hash FROM users WHERE email = ?1").bind(&[db::text(&email)])?,
    );
    let results = db.batch(batch).await.or_internal()?;
    let attempt = throttle::outcome(&results, attempt, window, rc.now_ms)?;
    let found = results.first(user_slot)?;

    let stored_hash = found.as_ref().map(|c| c.password_hash.as_str());
    let ok = password::verify(&password_raw, stored_hash, rc.config.bcrypt_cost);
    let user = match found {
        Some(user) if ok => user,
        // The attempt stays in the window: it counts as a failure for this email.
        _ => return Err(ApiError::new(Code::InvalidCredentials, "incorrect email or password")),
    };
    // A successful login does not count against the email.
    db.run(throttle::forget(&db, attempt)?).await.or_internal()?;

    let issued = token::issue(secret, &user.id, rc.now_ms / 1000)?;
    http::json(
        200,
        &LoginResponse { access_token: issued.token, token_type: TokenType::Bearer, expires_in: issued.expires_in },
    )
}

/// `GET /v1/auth/me`: the account behind the token. A token for a deleted user is 401.
pub async fn me(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    let user_id = auth::require_account(req, rc)?;
    let db = rc.db()?;
    let user: Option<User> = db
        .first(db.prepare("SELECT id, email, created_at FROM users WHERE id = ?1").bind(&[db::text(&user_id)])?)
        .await?;
    match user {
        Some(user) => http::json(200, &user),
        None => Err(ApiError::new(Code::InvalidToken, "the access token is invalid")),
    }
}
