//! Accounts: register, log in, and who am I. Owns the `users` table.

pub mod email;
pub mod password;
pub mod token;

use crate::auth;
use crate::db::{self, D1ResultExt};
use crate::error::{ApiError, ApiResult};
use crate::http::{self, RequestContext};
use crate::throttle;
use email::Email;
use password::Password;
use serde::{Deserialize, Serialize};
use worker::{Request, Response};

#[derive(Debug, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub email: String,
    pub created_at: String,
}

#[derive(Serialize)]
struct RegisterResponse {
    user: User,
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
}

#[derive(Serialize)]
struct LoginResponse {
    access_token: String,
    token_type: &'static str,
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
        scope: "register",
        max: rc.config.register_max_per_ip,
        window_ms: rc.config.register_window_seconds * 1000,
    };
    let client = http::header(req, "cf-connecting-ip").unwrap_or_else(|| "unknown".to_string());
    let taken = db.batch(throttle::take(&db, window, &client, rc.now_ms)?).await.or_internal()?;
    throttle::outcome(&taken, window, rc.now_ms)?;

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
        ApiError::conflict("email_taken", "an account with this email already exists").with_param("email")
    })?;

    let issued = token::issue(secret, &user.id, rc.now_ms / 1000)?;
    http::json(
        201,
        &RegisterResponse { user, access_token: issued.token, token_type: "bearer", expires_in: issued.expires_in },
    )
}

/// `{email, password}`, both required strings, nothing else.
async fn read_credentials(req: &mut Request) -> ApiResult<(String, String)> {
    let mut body = http::json_body(req).await?;
    let email = body.required_str("email", "email_required")?;
    let password = body.required_str("password", "password_required")?;
    body.finish()?;
    Ok((email, password))
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
        scope: "login",
        max: rc.config.login_max_failures,
        window_ms: rc.config.login_window_seconds * 1000,
    };
    let mut statements = throttle::take(&db, window, &email, rc.now_ms)?;
    statements.push(db.prepare("SELECT id, password_hash FROM users WHERE email = ?1").bind(&[db::text(&email)])?);
    let results = db.batch(statements).await.or_internal()?;
    let attempt = throttle::outcome(&results, window, rc.now_ms)?;
    let found: Option<Credentials> = db::rows(&results, 3)?.into_iter().next();

    let stored_hash = found.as_ref().map(|c| c.password_hash.as_str());
    let ok = password::verify(&password_raw, stored_hash, rc.config.bcrypt_cost);
    let user = match found {
        Some(user) if ok => user,
        // The attempt stays in the window: it counts as a failure for this email.
        _ => return Err(ApiError::unauthorized("invalid_credentials", "incorrect email or password")),
    };
    // A successful login does not count against the email.
    db.run(throttle::forget(&db, attempt)?).await.or_internal()?;

    let issued = token::issue(secret, &user.id, rc.now_ms / 1000)?;
    http::json(200, &LoginResponse { access_token: issued.token, token_type: "bearer", expires_in: issued.expires_in })
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
        None => Err(ApiError::unauthorized("invalid_token", "the access token is invalid")),
    }
}
