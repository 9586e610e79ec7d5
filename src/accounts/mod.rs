//! Accounts: register, log in, and who am I. Owns the `users` table.

pub mod email;
pub mod password;
pub mod token;

use crate::auth;
use crate::db::{self, D1ResultExt};
use crate::error::{ApiError, ApiResult};
use crate::http::{self, RequestContext};
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
    let mut body = http::json_body(req).await?;
    let email_raw = body.required_str("email", "email_required")?;
    let password_raw = body.required_str("password", "password_required")?;
    body.finish()?;
    let email = Email::parse(&email_raw)?;
    let password = Password::parse(password_raw)?;

    let password_hash = password.hash(rc.config.bcrypt_cost)?;
    let user = User {
        id: crate::random::uuid_v4()?,
        email: email.as_str().to_string(),
        created_at: crate::time::iso_from_millis(rc.now_ms),
    };
    // The unique index decides races: two concurrent sign-ups get one 201 and one 409.
    let db = rc.db()?;
    let insert = db
        .prepare("INSERT INTO users (id, email, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)")
        .bind(&[
            db::text(&user.id),
            db::text(&user.email),
            db::text(&password_hash),
            db::text(&user.created_at),
        ])?;
    db.run(insert).await.on_unique(|| {
        ApiError::conflict("email_taken", "an account with this email already exists")
            .with_param("email")
    })?;

    let issued = token::issue(secret, &user.id, rc.now_ms / 1000)?;
    http::json(
        201,
        &RegisterResponse {
            user,
            access_token: issued.token,
            token_type: "bearer",
            expires_in: issued.expires_in,
        },
    )
}

#[derive(Deserialize)]
struct Credentials {
    id: String,
    password_hash: String,
}

/// `POST /v1/auth/login`: unknown email and wrong password are the same 401, in the same time.
pub async fn login(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    let secret = rc.config.jwt_secret()?;
    let mut body = http::json_body(req).await?;
    let email_raw = body.required_str("email", "email_required")?;
    let password_raw = body.required_str("password", "password_required")?;
    body.finish()?;
    let email = email_raw.trim().to_lowercase();

    let db = rc.db()?;
    let found: Option<Credentials> = db
        .first(
            db.prepare("SELECT id, password_hash FROM users WHERE email = ?1")
                .bind(&[db::text(&email)])?,
        )
        .await?;

    let ok = password::verify(
        &password_raw,
        found.as_ref().map(|c| c.password_hash.as_str()),
        rc.config.bcrypt_cost,
    );
    let user = match found {
        Some(user) if ok => user,
        _ => {
            return Err(ApiError::unauthorized(
                "invalid_credentials",
                "incorrect email or password",
            ))
        }
    };
    let issued = token::issue(secret, &user.id, rc.now_ms / 1000)?;
    http::json(
        200,
        &LoginResponse {
            access_token: issued.token,
            token_type: "bearer",
            expires_in: issued.expires_in,
        },
    )
}

/// `GET /v1/auth/me`: the account behind the token. A token for a deleted user is 401.
pub async fn me(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    let user_id = auth::require_account(req, rc)?;
    let db = rc.db()?;
    let user: Option<User> = db
        .first(
            db.prepare("SELECT id, email, created_at FROM users WHERE id = ?1")
                .bind(&[db::text(&user_id)])?,
        )
        .await?;
    match user {
        Some(user) => http::json(200, &user),
        None => Err(ApiError::unauthorized(
            "invalid_token",
            "the access token is invalid",
        )),
    }
}
