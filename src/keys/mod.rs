//! API keys: create, list, revoke (account routes), and authenticating a request by key.
//! Owns the `api_keys` table.

pub mod api_key;

use crate::auth;
use crate::db::{self, D1ResultExt};
use crate::error::{ApiError, ApiResult};
use crate::http::{self, header, RequestContext};
use crate::idempotency::{self, Begin, IdempotencyKey};
use crate::time::{iso_from_millis, MILLIS_PER_DAY};
pub use api_key::{ApiKey, KeyMode};
use serde::{Deserialize, Serialize};
use worker::{Request, Response};

const DEFAULT_NAME: &str = "Default key";
const MAX_NAME_CHARS: usize = 100;
/// `last_used_at` is written at most this often per key, so a busy key is not a write per request.
const LAST_USED_GRANULARITY_MS: u64 = 60_000;

/// A key as listed: never the key, never its hash.
#[derive(Debug, Serialize)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub mode: String,
    pub is_active: bool,
    pub last_used_at: Option<String>,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub daily_image_quota: Option<i64>,
    pub created_at: String,
}

#[derive(Deserialize)]
struct KeyRow {
    id: String,
    name: String,
    prefix: String,
    mode: String,
    is_active: i64,
    last_used_at: Option<String>,
    expires_at: Option<String>,
    revoked_at: Option<String>,
    daily_image_quota: Option<i64>,
    created_at: String,
}

impl From<KeyRow> for KeyView {
    fn from(row: KeyRow) -> Self {
        KeyView {
            id: row.id,
            name: row.name,
            prefix: row.prefix,
            mode: row.mode,
            is_active: row.is_active != 0,
            last_used_at: row.last_used_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            daily_image_quota: row.daily_image_quota,
            created_at: row.created_at,
        }
    }
}

#[derive(Serialize)]
struct CreatedKey {
    #[serde(flatten)]
    view: KeyView,
    /// The full key. Shown here, once; only its hash is kept.
    key: String,
}

/// What `POST /v1/keys` asks for, validated.
#[derive(Debug, PartialEq)]
pub struct NewKey {
    pub name: String,
    pub mode: KeyMode,
    pub expires_in_days: Option<u32>,
    pub daily_image_quota: Option<u32>,
}

impl NewKey {
    pub fn parse(mut body: crate::body::JsonObject) -> ApiResult<NewKey> {
        let name = match body.optional_str("name")? {
            None => DEFAULT_NAME.to_string(),
            Some(name) => parse_name(&name)?,
        };
        let mode = match body.optional_str("mode")? {
            None => KeyMode::Live,
            Some(mode) => KeyMode::parse(&mode, "mode")?,
        };
        let expires_in_days = body.optional_u32("expires_in_days", 1..=3650)?;
        let daily_image_quota = body.optional_u32("daily_image_quota", 1..=100_000)?;
        body.finish()?;
        Ok(NewKey { name, mode, expires_in_days, daily_image_quota })
    }
}

fn parse_name(raw: &str) -> ApiResult<String> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::validation(
            "invalid_name",
            "name",
            format!("name must be 1 to {MAX_NAME_CHARS} printable characters"),
        ));
    }
    Ok(name.to_string())
}

const KEY_COLUMNS: &str =
    "id, name, prefix, mode, is_active, last_used_at, expires_at, revoked_at, daily_image_quota, created_at";

/// `POST /v1/keys`: 201 with the full key, once (or, with an Idempotency-Key, the same
/// answer again: a retried creation must not mint a second key).
pub async fn create(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    const ROUTE: &str = "POST /v1/keys";
    let user_id = auth::require_account(req, rc)?;
    let idempotency_key = IdempotencyKey::parse(header(req, idempotency::HEADER).as_deref())?;
    let body = http::json_body(req).await?;
    let fingerprint = idempotency::fingerprint(ROUTE, &body);
    let new_key = NewKey::parse(body)?;
    let claim = match idempotency::begin(rc, idempotency_key, &user_id, ROUTE, &fingerprint).await? {
        Begin::Replay(response) => return Ok(response),
        Begin::Proceed(claim) => claim,
    };
    let outcome = create_for(rc, &user_id, new_key).await.map(|(status, body)| (status, body.to_string()));
    idempotency::finish(rc, claim, outcome.as_ref().map(|(status, text)| (*status, text.as_str()))).await;
    let (status, text) = outcome?;
    Ok(http::json_text(status, text)?)
}

/// Creates the key; returns the status and body of the response (idempotency stores them).
pub async fn create_for(rc: &RequestContext, user_id: &str, new_key: NewKey) -> ApiResult<(u16, serde_json::Value)> {
    let key = ApiKey::generate(new_key.mode)?;
    let view = KeyView {
        id: crate::random::uuid_v4()?,
        name: new_key.name,
        prefix: key.prefix().to_string(),
        mode: new_key.mode.as_str().to_string(),
        is_active: true,
        last_used_at: None,
        expires_at: new_key.expires_in_days.map(|days| iso_from_millis(rc.now_ms + u64::from(days) * MILLIS_PER_DAY)),
        revoked_at: None,
        daily_image_quota: new_key.daily_image_quota.map(i64::from),
        created_at: iso_from_millis(rc.now_ms),
    };
    let db = rc.db()?;
    let insert = db
        .prepare(
            "INSERT INTO api_keys (id, user_id, name, key_hash, prefix, mode, is_active, daily_image_quota, expires_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?8, ?9)",
        )
        .bind(&[
            db::text(&view.id),
            db::text(user_id),
            db::text(&view.name),
            db::text(&key.hash()),
            db::text(&view.prefix),
            db::text(&view.mode),
            db::opt_int(view.daily_image_quota),
            db::opt_text(view.expires_at.as_deref()),
            db::text(&view.created_at),
        ])?;
    db.run(insert).await.or_internal()?;
    let body =
        serde_json::to_value(CreatedKey { view, key: key.reveal().to_string() }).map_err(|_| ApiError::internal())?;
    Ok((201, body))
}

/// `GET /v1/keys`: the caller's keys, newest first, revoked ones included.
pub async fn list(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    let user_id = auth::require_account(req, rc)?;
    let db = rc.db()?;
    let rows: Vec<KeyRow> = db
        .all(
            db.prepare(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE user_id = ?1 ORDER BY created_at DESC, id DESC"
            ))
            .bind(&[db::text(&user_id)])?,
        )
        .await?;
    let data: Vec<KeyView> = rows.into_iter().map(KeyView::from).collect();
    http::json(200, &serde_json::json!({ "object": "list", "data": data }))
}

/// `DELETE /v1/keys/{id}`: revokes (soft delete). Revoking twice is still 204; a key that
/// is not the caller's is 404, exactly like one that does not exist.
pub async fn revoke(req: &mut Request, rc: &RequestContext, key_id: &str) -> ApiResult<Response> {
    let user_id = auth::require_account(req, rc)?;
    let db = rc.db()?;
    let update = db
        .prepare(
            "UPDATE api_keys SET is_active = 0, revoked_at = COALESCE(revoked_at, ?3)
             WHERE id = ?1 AND user_id = ?2",
        )
        .bind(&[db::text(key_id), db::text(&user_id), db::text(&iso_from_millis(rc.now_ms))])?;
    match db.run(update).await.or_internal()? {
        0 => Err(ApiError::not_found("no API key with this id")),
        _ => http::no_content(),
    }
}

/// The key behind an API-key request, with what the request path needs about its owner
/// and quota, resolved in one D1 round trip.
#[derive(Debug, Clone)]
pub struct KeyPrincipal {
    pub key_id: String,
    pub user_id: String,
    pub mode: KeyMode,
    /// The key's own daily quota, else `DAILY_IMAGE_QUOTA`.
    pub daily_quota: u32,
    /// Images already counted today (UTC).
    pub used_today: u32,
}

#[derive(Deserialize)]
struct PrincipalRow {
    id: String,
    user_id: String,
    is_active: i64,
    expires_at: Option<String>,
    last_used_at: Option<String>,
    daily_image_quota: Option<i64>,
    used_today: i64,
}

/// Authenticates an API-key route. The key's form is checked before any query; then one
/// query resolves key, owner, quota and today's usage. `last_used_at` is written after the
/// response, at most once a minute per key.
pub async fn authenticate(req: &Request, rc: &RequestContext) -> ApiResult<KeyPrincipal> {
    let authorization = header(req, "authorization");
    let credential = auth::bearer(authorization.as_deref())?;
    if !auth::looks_like_api_key(credential) && credential.matches('.').count() == 2 {
        return Err(ApiError::unauthorized(
            "jwt_not_accepted",
            "this route takes an API key (nb_live_... or nb_test_...), not an account access token",
        ));
    }
    let key = ApiKey::parse(credential)?;
    let db = rc.db()?;
    let row: Option<PrincipalRow> = db
        .first(
            db.prepare(
                "SELECT k.id, k.user_id, k.is_active, k.expires_at, k.last_used_at, k.daily_image_quota,
                        COALESCE(u.image_count, 0) AS used_today
                 FROM api_keys k
                 LEFT JOIN usage u ON u.api_key_id = k.id AND u.usage_date = ?2
                 WHERE k.key_hash = ?1",
            )
            .bind(&[db::text(&key.hash()), db::text(&crate::time::date_from_millis(rc.now_ms))])?,
        )
        .await?;
    let row = row.ok_or_else(|| ApiError::unauthorized("invalid_api_key", "the API key is not valid"))?;
    if row.is_active == 0 {
        return Err(ApiError::unauthorized("revoked_api_key", "the API key has been revoked"));
    }
    let now_iso = iso_from_millis(rc.now_ms);
    if row.expires_at.as_deref().is_some_and(|expires| expires <= now_iso.as_str()) {
        return Err(ApiError::unauthorized("expired_api_key", "the API key has expired"));
    }
    touch_last_used(rc, &row.id, row.last_used_at.as_deref())?;
    Ok(KeyPrincipal {
        key_id: row.id,
        user_id: row.user_id,
        mode: key.mode(),
        daily_quota: row.daily_image_quota.and_then(|q| u32::try_from(q).ok()).unwrap_or(rc.config.daily_image_quota),
        used_today: u32::try_from(row.used_today).unwrap_or(u32::MAX),
    })
}

fn touch_last_used(rc: &RequestContext, key_id: &str, last_used_at: Option<&str>) -> ApiResult<()> {
    let stale_before = iso_from_millis(rc.now_ms.saturating_sub(LAST_USED_GRANULARITY_MS));
    if last_used_at.is_some_and(|last| last >= stale_before.as_str()) {
        return Ok(());
    }
    let statement = rc
        .d1_binding()?
        .prepare(
            "UPDATE api_keys SET last_used_at = ?1
             WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?3)",
        )
        .bind(&[db::text(&iso_from_millis(rc.now_ms)), db::text(key_id), db::text(&stale_before)])?;
    rc.ctx.wait_until(async move {
        if let Err(err) = statement.run().await {
            crate::log::error("last_used_at update failed", &db::describe_error(&err));
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::parse_object;

    fn parse(raw: &str) -> ApiResult<NewKey> {
        NewKey::parse(parse_object(raw.as_bytes()).unwrap())
    }

    #[test]
    fn defaults() {
        assert_eq!(
            parse("{}").unwrap(),
            NewKey { name: "Default key".into(), mode: KeyMode::Live, expires_in_days: None, daily_image_quota: None }
        );
    }

    #[test]
    fn every_field() {
        let key =
            parse(r#"{"name": "  CI  ", "mode": "test", "expires_in_days": 30, "daily_image_quota": 5}"#).unwrap();
        assert_eq!(
            key,
            NewKey { name: "CI".into(), mode: KeyMode::Test, expires_in_days: Some(30), daily_image_quota: Some(5) }
        );
    }

    #[test]
    fn invalid_fields_name_their_param() {
        let cases: [(&str, u16, &str, &str); 9] = [
            (r#"{"name": ""}"#, 422, "invalid_name", "name"),
            (r#"{"name": "   "}"#, 422, "invalid_name", "name"),
            (r#"{"name": "a\u0000b"}"#, 422, "invalid_name", "name"),
            (r#"{"mode": "prod"}"#, 400, "invalid_value", "mode"),
            (r#"{"mode": 1}"#, 422, "invalid_type", "mode"),
            (r#"{"expires_in_days": 0}"#, 422, "out_of_range", "expires_in_days"),
            (r#"{"expires_in_days": 3651}"#, 422, "out_of_range", "expires_in_days"),
            (r#"{"daily_image_quota": 100001}"#, 422, "out_of_range", "daily_image_quota"),
            (r#"{"scopes": ["all"]}"#, 422, "unknown_parameter", "scopes"),
        ];
        for (raw, status, code, param) in cases {
            let err = parse(raw).unwrap_err();
            assert_eq!((err.status, err.code, err.param.as_deref()), (status, code, Some(param)), "{raw}");
        }
        let long = format!(r#"{{"name": "{}"}}"#, "é".repeat(101));
        assert_eq!(parse(&long).unwrap_err().code, "invalid_name");
        let just_fits = format!(r#"{{"name": "{}"}}"#, "é".repeat(100));
        assert!(parse(&just_fits).is_ok());
    }
}
