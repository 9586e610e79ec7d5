//! Accounts: register, log in, and who am I. Owns the `users` table.

pub mod email;
pub mod password;

use crate::auth::{self, token, token::TokenType, Role};
use crate::body::JsonObject;
use crate::config::Registration;
use crate::db::{self, Batch, D1ResultExt, Db};
use crate::error::{ApiError, ApiResult, Code};
use crate::http::{self, RequestContext};
use crate::throttle;
use email::Email;
use password::Password;
use serde::Serialize;
use worker::{Request, Response};

crate::db::row! {
    #[derive(Debug, Serialize)]
    #[cfg_attr(test, derive(schemars::JsonSchema))]
    #[cfg_attr(test, schemars(deny_unknown_fields))]
    pub struct User {
        #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::uuid"))]
        pub id: String,
        pub email: String,
        #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::timestamp"))]
        pub created_at: String,
    }
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

impl From<token::IssuedToken> for LoginResponse {
    fn from(issued: token::IssuedToken) -> Self {
        LoginResponse { access_token: issued.token, token_type: TokenType::Bearer, expires_in: issued.expires_in }
    }
}

/// `POST /v1/auth/register`: 201 with the new user and a token; 409 if the email is taken;
/// 403 `registration_closed` when the operator closed sign-up (`REGISTRATION = "closed"`).
pub async fn register(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    if rc.config.registration == Registration::Closed {
        return Err(ApiError::new(
            Code::RegistrationClosed,
            "sign-up is closed on this service; ask its operator for an account",
        ));
    }
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
    let mut batch = Batch::new();
    let attempt = throttle::take(&mut batch, &db, window, &client_ip(req), rc.now_ms)?;
    let results = db.batch(batch).await.or_internal()?;
    throttle::outcome(&results, attempt, window, rc.now_ms)?;

    let user = create_user(rc, &db, &email, &password).await?;
    let issued = token::issue(secret, &user.id, 0, rc.now_ms / 1000)?;
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

/// Inserts an account (role `user`). The unique index decides races: two concurrent
/// sign-ups with one email get one account and one 409.
pub async fn create_user(rc: &RequestContext, db: &Db<'_>, email: &Email, password: &Password) -> ApiResult<User> {
    let password_hash = password.hash(rc.config.bcrypt_cost)?;
    let user = User {
        id: crate::random::uuid_v4()?,
        email: email.as_str().to_string(),
        created_at: crate::time::iso_from_millis(rc.now_ms),
    };
    let insert = db
        .prepare("INSERT INTO users (id, email, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)")
        .bind(&[db::text(&user.id), db::text(&user.email), db::text(&password_hash), db::text(&user.created_at)])?;
    db.run(insert).await.on_unique(|| {
        ApiError::new(Code::EmailTaken, "an account with this email already exists").with_param("email")
    })?;
    Ok(user)
}

/// Who a per-IP throttle counts: the client's address as Cloudflare's edge reports it
/// (clients cannot set it there), "unknown" where there is none, as under `wrangler dev`.
fn client_ip(req: &Request) -> String {
    throttle_subject(http::header(req, "cf-connecting-ip").as_deref())
}

/// An IPv4 address as it is; an IPv6 address by its /64, the block one subscriber is
/// given (so rotating through its 2^64 addresses is one client). Anything unreadable is
/// "unknown".
pub fn throttle_subject(ip: Option<&str>) -> String {
    let Some(ip) = ip.map(str::trim) else { return "unknown".to_string() };
    let v4 = |[a, b, c, d]: [u8; 4]| format!("{a}.{b}.{c}.{d}");
    if let Some(octets) = crate::ip::parse_v4(ip) {
        return v4(octets);
    }
    match crate::ip::parse_v6(ip) {
        Some(groups) => match crate::ip::mapped_v4(groups) {
            Some(octets) => v4(octets),
            None => {
                let prefix: Vec<u8> = groups[..4].iter().flat_map(|group| group.to_be_bytes()).collect();
                format!("{}::/64", hex::encode(prefix))
            }
        },
        None => "unknown".to_string(),
    }
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

crate::db::row! {
    struct Credentials {
        id: String,
        password_hash: String,
        token_version: i64,
    }
}

/// Login attempts are throttled per client IP (any emails) and per email: both are taken,
/// atomically and before bcrypt runs, in the round trip that looks the user up. The email
/// is validated first, so what the throttle stores is bounded: at most
/// `LOGIN_MAX_FAILURES_PER_IP` rows of at most 254 bytes per address and window.
fn login_windows(config: &crate::config::Config) -> [throttle::Window; 2] {
    let window_ms = config.login_window_seconds * 1000;
    [
        throttle::Window { scope: throttle::Scope::LoginIp, max: config.login_max_failures_per_ip, window_ms },
        throttle::Window { scope: throttle::Scope::Login, max: config.login_max_failures, window_ms },
    ]
}

/// `POST /v1/auth/login`: unknown email and wrong password are the same 401, in the same
/// time. Too many failures for one email, or from one address, in the window: 429
/// whatever the password. A successful login does not count.
pub async fn login(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    let secret = rc.config.jwt_secret()?;
    let (email_raw, password_raw) = read_credentials(req).await?;
    let email = Email::parse(&email_raw)?;

    // One round trip: take an attempt for the address and for the email, look the user up.
    let db = rc.db()?;
    let [by_ip, by_email] = login_windows(&rc.config);
    let mut batch = Batch::new();
    let ip_attempt = throttle::take(&mut batch, &db, by_ip, &client_ip(req), rc.now_ms)?;
    let email_attempt = throttle::take_if_taken(&mut batch, &db, by_email, email.as_str(), rc.now_ms)?;
    let user_slot = batch.push::<Credentials>(
        db.prepare("SELECT id, password_hash, token_version FROM users WHERE email = ?1")
            .bind(&[db::text(email.as_str())])?,
    );
    let results = db.batch(batch).await.or_internal()?;
    let ip_attempt = throttle::outcome(&results, ip_attempt, by_ip, rc.now_ms)?;
    let email_attempt = throttle::outcome(&results, email_attempt, by_email, rc.now_ms)?;
    let found = results.first(user_slot)?;

    let stored_hash = found.as_ref().map(|c| c.password_hash.as_str());
    let ok = password::verify(&password_raw, stored_hash, rc.config.bcrypt_cost);
    let user = match found {
        Some(user) if ok => user,
        // The attempts stay in their windows: they count as failures.
        _ => return Err(ApiError::new(Code::InvalidCredentials, "incorrect email or password")),
    };
    db.run(throttle::forget(&db, &[ip_attempt, email_attempt])?).await.or_internal()?;

    let issued = token::issue(secret, &user.id, version(user.token_version), rc.now_ms / 1000)?;
    http::json(200, &LoginResponse::from(issued))
}

fn version(stored: i64) -> u32 {
    u32::try_from(stored).unwrap_or(0)
}

/// `GET /v1/auth/me`: the account behind the token.
pub async fn me(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    let account = auth::require_account(req, rc).await?;
    http::json(
        200,
        &Me { id: account.user_id, email: account.email, role: account.role, created_at: account.created_at },
    )
}

/// `GET /v1/auth/me`.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct Me {
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::uuid"))]
    id: String,
    email: String,
    /// `admin` accounts see the console's Admin page and reach `/v1/admin/`.
    role: Role,
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::timestamp"))]
    created_at: String,
}

/// `POST /v1/auth/logout`: revokes the access token it is called with (204). Other tokens
/// of the account keep working; change the password to revoke them all.
pub async fn logout(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    let account = auth::require_account(req, rc).await?;
    let db = rc.db()?;
    let expires_ms = account.token_expires_at_secs.saturating_mul(1000);
    db.run(
        db.prepare("INSERT INTO revoked_tokens (jti, expires_at_ms) VALUES (?1, ?2) ON CONFLICT (jti) DO NOTHING")
            .bind(&[db::text(&account.jti), db::int(expires_ms as i64)])?,
    )
    .await
    .or_internal()?;
    http::no_content()
}

/// `POST /v1/auth/password` `{current_password, new_password}`: changes the password and
/// revokes every access token of the account (its token version moves on); answers a
/// fresh token, like login. Wrong current passwords count as failed logins of the email.
pub async fn change_password(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    let secret = rc.config.jwt_secret()?;
    let account = auth::require_account(req, rc).await?;
    let (current, new) = password_change(http::json_body(req).await?)?;
    let new = Password::parse_as(new, "new_password")?;

    let db = rc.db()?;
    let [_, by_email] = login_windows(&rc.config);
    let mut batch = Batch::new();
    let attempt = throttle::take(&mut batch, &db, by_email, &account.email, rc.now_ms)?;
    let user_slot = batch.push::<Credentials>(
        db.prepare("SELECT id, password_hash, token_version FROM users WHERE id = ?1")
            .bind(&[db::text(&account.user_id)])?,
    );
    let results = db.batch(batch).await.or_internal()?;
    let attempt = throttle::outcome(&results, attempt, by_email, rc.now_ms)?;
    let found = results.first(user_slot)?;
    if !password::verify(&current, found.as_ref().map(|c| c.password_hash.as_str()), rc.config.bcrypt_cost) {
        return Err(
            ApiError::new(Code::InvalidCredentials, "the current password is not right").with_param("current_password")
        );
    }
    let new_hash = new.hash(rc.config.bcrypt_cost)?;
    let next_version = account.token_version.saturating_add(1);
    let mut batch = Batch::new();
    let changed = batch.push::<()>(
        db.prepare("UPDATE users SET password_hash = ?2, token_version = ?4 WHERE id = ?1 AND token_version = ?3")
            .bind(&[
                db::text(&account.user_id),
                db::text(&new_hash),
                db::int(account.token_version.into()),
                db::int(next_version.into()),
            ])?,
    );
    batch.push::<()>(throttle::forget(&db, &[attempt])?);
    let results = db.batch(batch).await.or_internal()?;
    if results.changes(changed) == 0 {
        // Another password change got there first: this token is already revoked.
        return Err(ApiError::new(Code::TokenRevoked, "the password was changed meanwhile; log in again"));
    }
    let issued = token::issue(secret, &account.user_id, next_version, rc.now_ms / 1000)?;
    http::json(200, &LoginResponse::from(issued))
}

/// `{current_password, new_password}`, both required strings, nothing else.
pub(crate) fn password_change(mut body: JsonObject) -> ApiResult<(String, String)> {
    let current = body.required_str("current_password", Code::PasswordRequired)?;
    let new = body.required_str("new_password", Code::PasswordRequired)?;
    body.finish()?;
    Ok((current, new))
}

/// The body of `POST /v1/auth/password`.
#[cfg(test)]
#[derive(schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PasswordChange {
    pub current_password: String,
    /// 8 to 72 bytes.
    #[schemars(length(min = 8))]
    pub new_password: String,
}
