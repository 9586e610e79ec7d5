//! API keys: create, list and revoke (account routes). Owns the `api_keys` table;
//! checking a key on a request is `auth`'s work.

use crate::auth::{self, ApiKey, KeyMode};
use crate::db::{self, D1ResultExt};
use crate::error::{ApiError, ApiResult, Code};
use crate::http::{self, header, RequestContext};
use crate::idempotency::{self, Begin, IdempotencyKey, Scope, Stored};
use crate::metering::Micros;
use crate::time::{iso_from_millis, MILLIS_PER_DAY};
use serde::Serialize;
use worker::{Request, Response};

const DEFAULT_NAME: &str = "Default key";
const MAX_NAME_CHARS: usize = 100;

/// A key as listed: never the key, never its hash.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct KeyView {
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::uuid"))]
    pub id: String,
    pub name: String,
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::key_prefix"))]
    pub prefix: String,
    pub mode: KeyMode,
    pub is_active: bool,
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::optional_timestamp"))]
    pub last_used_at: Option<String>,
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::optional_timestamp"))]
    pub expires_at: Option<String>,
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::optional_timestamp"))]
    pub revoked_at: Option<String>,
    /// The key's own daily quota; null means the deployment's `DAILY_IMAGE_QUOTA`.
    pub daily_image_quota: Option<i64>,
    /// The key's own money ceiling per UTC day, in US dollars; null: none but the
    /// deployment's `MAX_KEY_DAILY_BUDGET_USD`.
    pub daily_budget_usd: Option<Micros>,
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::timestamp"))]
    pub created_at: String,
}

crate::db::row! {
    struct KeyRow {
        id: String,
        name: String,
        prefix: String,
        mode: KeyMode,
        is_active: i64,
        last_used_at: Option<String>,
        expires_at: Option<String>,
        revoked_at: Option<String>,
        daily_image_quota: Option<i64>,
        daily_budget_micros: Option<i64>,
        created_at: String,
    }
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
            daily_budget_usd: row.daily_budget_micros.and_then(|m| u64::try_from(m).ok()).map(Micros),
            created_at: row.created_at,
        }
    }
}

/// `POST /v1/keys`: the key as listed, plus the key itself.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct CreatedKey {
    #[serde(flatten)]
    view: KeyView,
    /// The full key. Shown here, once; only its hash is kept. Null when an Idempotency-Key
    /// replays the creation: the key is stored nowhere, so it cannot be shown again.
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::full_api_key"))]
    key: Option<String>,
}

/// `GET /v1/keys`.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct KeyList {
    object: crate::http::ListObject,
    data: Vec<KeyView>,
}

/// What `POST /v1/keys` asks for, validated.
#[derive(Debug, PartialEq)]
pub struct NewKey {
    pub name: String,
    pub mode: KeyMode,
    pub expires_in_days: Option<u32>,
    pub daily_image_quota: Option<u32>,
    pub daily_budget: Option<Micros>,
}

impl NewKey {
    /// `max_quota` is `MAX_KEY_DAILY_IMAGE_QUOTA`: a key may not ask for more; nor for a
    /// budget above `MAX_KEY_DAILY_BUDGET_USD`, when it is set.
    pub fn parse(mut body: crate::body::JsonObject, max_quota: u32, max_budget: Option<Micros>) -> ApiResult<NewKey> {
        let name = match body.optional_str("name")? {
            None => DEFAULT_NAME.to_string(),
            Some(name) => parse_name(&name)?,
        };
        let mode = match body.optional_str("mode")? {
            None => KeyMode::Live,
            Some(mode) => KeyMode::parse(&mode, "mode")?,
        };
        let expires_in_days = body.optional_u32("expires_in_days", 1..=3650)?;
        let daily_image_quota = body.optional_u32("daily_image_quota", 1..=max_quota)?;
        let max_budget = max_budget.unwrap_or(crate::config::MAX_DAILY_BUDGET);
        let daily_budget = body.nullable_usd("daily_budget_usd", max_budget)?.flatten();
        body.finish()?;
        Ok(NewKey { name, mode, expires_in_days, daily_image_quota, daily_budget })
    }
}

// Documented request body; a test in `openapi::document` holds it to `NewKey::parse`.
/// The body of `POST /v1/keys`.
#[cfg(test)]
#[derive(schemars::JsonSchema)]
#[schemars(rename = "KeyCreateRequest", deny_unknown_fields)]
pub struct KeyCreateRequest {
    #[schemars(length(min = 1, max = 100), extend("default" = "Default key"))]
    pub name: Option<String>,
    /// `test` keys never call Gemini and cost nothing.
    #[schemars(extend("default" = "live"))]
    pub mode: Option<KeyMode>,
    #[schemars(range(min = 1, max = 3650))]
    pub expires_in_days: Option<u32>,
    /// Images per UTC day for this key; default `DAILY_IMAGE_QUOTA`. At most this
    /// deployment's `MAX_KEY_DAILY_IMAGE_QUOTA` (default 1000); above it is 422 `out_of_range`.
    #[schemars(range(min = 1))]
    pub daily_image_quota: Option<u32>,
    /// US dollars this key may spend per UTC day (its requests' worst cases reserved,
    /// then their actual costs), as a decimal string; default none. At most this
    /// deployment's `MAX_KEY_DAILY_BUDGET_USD` when set; above it is 422 `out_of_range`.
    #[schemars(regex(pattern = r"^[0-9]{1,12}(\.[0-9]{1,6})?$"))]
    pub daily_budget_usd: Option<String>,
}

fn parse_name(raw: &str) -> ApiResult<String> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::validation(
            Code::InvalidName,
            "name",
            format!("name must be 1 to {MAX_NAME_CHARS} printable characters"),
        ));
    }
    Ok(name.to_string())
}

const KEY_COLUMNS: &str =
    "id, name, prefix, mode, is_active, last_used_at, expires_at, revoked_at, daily_image_quota, daily_budget_micros,
     created_at";

/// `POST /v1/keys`: 201 with the full key, once. With an Idempotency-Key, a retry gets the
/// same key record again (`Idempotent-Replayed: true`) with `key: null`: a retried creation
/// must not mint a second key, and the key itself is stored nowhere to be shown twice.
pub async fn create(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    const ROUTE: &str = "POST /v1/keys";
    let account = auth::require_account(req, rc).await?;
    let idempotency_key = IdempotencyKey::parse(header(req, idempotency::HEADER).as_deref())?;
    let body = http::json_body(req).await?;
    let fingerprint = idempotency::fingerprint(ROUTE, &body);
    let new_key = NewKey::parse(body, rc.config.max_key_daily_image_quota, rc.config.max_key_daily_budget)?;
    let scope = Scope::Account(&account.user_id);
    let claim = match idempotency::begin(rc, idempotency_key, scope, ROUTE, &fingerprint).await? {
        Begin::Replay(Stored::Body { status, body }) => return idempotency::replay(status, body),
        Begin::Replay(Stored::Generation { .. }) => {
            return Err(ApiError::internal("a key's record names a generation"))
        }
        Begin::Proceed(claim) => claim,
    };
    let created = create_for(rc, &account.user_id, new_key).await;
    let stored = match &created {
        Ok(created) => http::to_json(&created.without_key()).map(|body| Stored::Body { status: 201, body }),
        Err(err) => Err(err.clone()),
    };
    idempotency::finish(rc, claim, stored).await;
    http::json(201, &created?)
}

impl CreatedKey {
    /// What an idempotent replay answers: everything but the key.
    fn without_key(&self) -> CreatedKey {
        CreatedKey { view: self.view.clone(), key: None }
    }
}

/// Creates the key, unless the account already has `MAX_ACTIVE_KEYS_PER_ACCOUNT` active
/// (unrevoked, unexpired) keys: counted and inserted in one statement, so concurrent
/// creations cannot pass the limit. Answers what the client sees once.
pub async fn create_for(rc: &RequestContext, user_id: &str, new_key: NewKey) -> ApiResult<CreatedKey> {
    let key = ApiKey::generate(new_key.mode)?;
    let view = KeyView {
        id: crate::random::uuid_v4()?,
        name: new_key.name,
        prefix: key.prefix().to_string(),
        mode: new_key.mode,
        is_active: true,
        last_used_at: None,
        expires_at: new_key.expires_in_days.map(|days| iso_from_millis(rc.now_ms + u64::from(days) * MILLIS_PER_DAY)),
        revoked_at: None,
        daily_image_quota: new_key.daily_image_quota.map(i64::from),
        daily_budget_usd: new_key.daily_budget,
        created_at: iso_from_millis(rc.now_ms),
    };
    let db = rc.db()?;
    let insert = db
        .prepare(
            "INSERT INTO api_keys (id, user_id, name, key_hash, prefix, mode, is_active, daily_image_quota, expires_at,
                                   created_at, daily_budget_micros)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?8, ?9, ?11
             WHERE (SELECT COUNT(*) FROM api_keys
                    WHERE user_id = ?2 AND is_active = 1 AND (expires_at IS NULL OR expires_at > ?9)) < ?10",
        )
        .bind(&[
            db::text(&view.id),
            db::text(user_id),
            db::text(&view.name),
            db::text(&key.hash()),
            db::text(&view.prefix),
            db::text(view.mode.as_str()),
            db::opt_int(view.daily_image_quota),
            db::opt_text(view.expires_at.as_deref()),
            db::text(&view.created_at),
            db::int(rc.config.max_active_keys_per_account.into()),
            db::opt_int(view.daily_budget_usd.map(Micros::stored)),
        ])?;
    if db.run(insert).await.or_internal()? == 0 {
        let max = rc.config.max_active_keys_per_account;
        return Err(ApiError::new(
            Code::TooManyKeys,
            format!("this account already has {max} active keys, the most allowed; revoke one to create another"),
        ));
    }
    Ok(CreatedKey { view, key: Some(key.reveal().to_string()) })
}

/// `GET /v1/keys`: the caller's keys, newest first, revoked ones included.
pub async fn list(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    let user_id = auth::require_account(req, rc).await?.user_id;
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
    http::json(200, &KeyList { object: crate::http::ListObject::List, data })
}

/// `DELETE /v1/keys/{id}`: revokes (soft delete). Revoking twice is still 204; a key that
/// is not the caller's is 404, exactly like one that does not exist.
pub async fn revoke(req: &mut Request, rc: &RequestContext, key_id: &str) -> ApiResult<Response> {
    let user_id = auth::require_account(req, rc).await?.user_id;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::parse_object;

    fn parse(raw: &str) -> ApiResult<NewKey> {
        NewKey::parse(parse_object(raw.as_bytes()).unwrap(), 100_000, Some(Micros(5_000_000)))
    }

    #[test]
    fn defaults() {
        assert_eq!(
            parse("{}").unwrap(),
            NewKey {
                name: "Default key".into(),
                mode: KeyMode::Live,
                expires_in_days: None,
                daily_image_quota: None,
                daily_budget: None
            }
        );
    }

    #[test]
    fn every_field() {
        let key =
            parse(r#"{"name": "  CI  ", "mode": "test", "expires_in_days": 30, "daily_image_quota": 5}"#).unwrap();
        assert_eq!(
            key,
            NewKey {
                name: "CI".into(),
                mode: KeyMode::Test,
                expires_in_days: Some(30),
                daily_image_quota: Some(5),
                daily_budget: None
            }
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
            assert_eq!((err.status(), err.code.as_str(), err.param.as_deref()), (status, code, Some(param)), "{raw}");
        }
        let long = format!(r#"{{"name": "{}"}}"#, "é".repeat(101));
        assert_eq!(parse(&long).unwrap_err().code.as_str(), "invalid_name");
        let just_fits = format!(r#"{{"name": "{}"}}"#, "é".repeat(100));
        assert!(parse(&just_fits).is_ok());
    }
}
