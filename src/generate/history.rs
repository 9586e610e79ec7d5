//! `GET /v1/generations` and `GET /v1/generations/{id}`: the caller's history, newest
//! first, with cursor pagination and fresh image URLs. An account sees every key's
//! generations; an API key sees its own. Anyone else's generation is 404.

use super::inputs::InputRecord;
use super::{GenerationObject, Style};
use crate::auth::{self, KeyMode};
use crate::db::{self, Batch, D1ResultExt};
use crate::error::{ApiError, ApiResult, Code};
use crate::http::{self, ListObject, RequestContext};
use crate::storage;
use serde::{Deserialize, Serialize};
use worker::{Request, Response};

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

const COLUMNS: &str =
    "id, api_key_id, status, prompt, model, size, style, n, object_keys, mime_type, error_code, created_at, mode, width, height, aspect_ratio, resolution, inputs, error_message, webhook_url, webhook_attempts,
     webhook_last_status, webhook_delivered_at";
/// Rows the caller may see: its account's, narrowed to one key for an API key.
const VISIBLE: &str = "user_id = ?1 AND (?2 IS NULL OR api_key_id = ?2)";
/// The same for an API key not yet looked up, by its hash (?1): that key's rows. ?2 is
/// bound NULL so both forms take the same parameters.
const VISIBLE_TO_KEY_HASH: &str = "api_key_id = (SELECT id FROM api_keys WHERE key_hash = ?1) AND ?2 IS NULL";

crate::db::row! {
    struct Row {
        id: String,
        api_key_id: String,
        status: Status,
        prompt: String,
        model: String,
        size: String,
        style: Style,
        n: i64,
        object_keys: Option<String>,
        mime_type: Option<String>,
        error_code: Option<String>,
        created_at: String,
        mode: Option<KeyMode>,
        width: Option<u32>,
        height: Option<u32>,
        aspect_ratio: Option<String>,
        resolution: Option<String>,
        inputs: Option<String>,
        error_message: Option<String>,
        webhook_url: Option<String>,
        webhook_attempts: u32,
        webhook_last_status: Option<u16>,
        webhook_delivered_at: Option<String>,
    }
}

/// `limit` from the query: 1 to 100, default 20.
pub fn parse_limit(raw: Option<&str>) -> ApiResult<u32> {
    let Some(raw) = raw else { return Ok(DEFAULT_LIMIT) };
    let limit: u32 =
        raw.parse().map_err(|_| ApiError::validation(Code::InvalidType, "limit", "limit must be an integer"))?;
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::validation(Code::OutOfRange, "limit", format!("limit must be from 1 to {MAX_LIMIT}")))
    }
}

/// `GET /v1/generations`: a page of history.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct GenerationList {
    object: ListObject,
    data: Vec<GenerationRecord>,
    /// True when older generations follow; pass `last_id` as `starting_after` for them.
    has_more: bool,
    first_id: Option<String>,
    last_id: Option<String>,
}

/// A generation as history shows it, with image URLs signed now.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct GenerationRecord {
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::generation_id"))]
    id: String,
    object: GenerationObject,
    status: Status,
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::uuid"))]
    api_key_id: String,
    prompt: String,
    model: String,
    /// What was asked, in pixels (see `GenerationResponse`).
    size: String,
    /// Gemini's aspect ratio and resolution, however they were asked (null on generations
    /// older than these fields).
    aspect_ratio: Option<String>,
    resolution: Option<String>,
    style: Style,
    n: i64,
    /// The first image's URL, or null when none is stored.
    url: Option<String>,
    images: Vec<HistoryImage>,
    /// What it was made from, in order: earlier generations (follow `generation_id` to
    /// walk an edit chain) or uploaded bytes (their SHA-256). Empty when drawn from text.
    inputs: Vec<InputRecord>,
    /// Why a failed generation failed: the error envelope's `code` and `message`.
    error: Option<Failure>,
    /// Where an asynchronous generation announces its outcome, and how that went (null
    /// when it has no webhook_url).
    webhook: Option<WebhookState>,
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::timestamp"))]
    created_at: String,
}

/// `pending` -> `succeeded` | `failed` for a synchronous generation; `queued` -> `running`
/// -> `succeeded` | `failed` | `canceled` for an asynchronous one.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Queued,
    Running,
    Succeeded,
    Failed,
    Canceled,
}

crate::db::text_column!(
    Status: Status::Pending,
    Status::Queued,
    Status::Running,
    Status::Succeeded,
    Status::Failed,
    Status::Canceled
);

impl Status {
    /// As in the API and the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Canceled => "canceled",
        }
    }

    /// Whether it can still change.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Canceled)
    }
}

/// An asynchronous generation's webhook: each attempt is recorded.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct WebhookState {
    url: String,
    attempts: u32,
    /// The receiver's HTTP status at the last attempt (null: no answer, or none yet).
    last_status: Option<u16>,
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::timestamp"))]
    delivered_at: Option<String>,
}

#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct HistoryImage {
    url: String,
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::image_mime_type"))]
    mime_type: String,
    /// Pixels of what came back (null for generations older than this field).
    width: Option<u32>,
    height: Option<u32>,
}

#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct Failure {
    code: String,
    message: Option<String>,
}

pub async fn list(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    let params =
        match (parse_limit(http::query_param(req, "limit")?.as_deref()), http::query_param(req, "starting_after")) {
            (Ok(limit), Ok(cursor)) => Ok((limit, cursor.filter(|c| !c.is_empty()))),
            (Err(err), _) | (_, Err(err)) => Err(err),
        };
    let db = rc.db()?;
    let mut batch = Batch::new();
    // An API key is looked up in the page's own batch: one D1 round trip for both. Its
    // rows are read only once the key is accepted. Anything else authenticates first, and
    // so does a request with bad parameters (who is asking is said before what is wrong).
    let (pending, visible, scope) = match auth::api_key_credential(req)? {
        Some(key) if params.is_ok() => {
            let pending = auth::PendingKey::push(rc, &key, &mut batch)?;
            (Some(pending), VISIBLE_TO_KEY_HASH, [db::text(&key.hash()), db::opt_text(None)])
        }
        _ => {
            let caller = auth::require_caller(req, rc).await?;
            (None, VISIBLE, [db::text(caller.user_id()), db::opt_text(caller.key_id())])
        }
    };
    let (limit, cursor) = params?;
    // Rows strictly after the cursor in (created_at DESC, id DESC) order.
    let page = batch.push::<Row>(
        db.prepare(&format!(
            "SELECT {COLUMNS} FROM generations
             WHERE {visible}
               AND (?3 IS NULL OR (created_at, id) < (SELECT created_at, id FROM generations WHERE id = ?3))
             ORDER BY created_at DESC, id DESC LIMIT ?4"
        ))
        .bind(&[
            scope[0].clone(),
            scope[1].clone(),
            db::opt_text(cursor.as_deref()),
            db::int(i64::from(limit) + 1),
        ])?,
    );
    let cursor_check = batch.push::<Found>(
        db.prepare(&format!("SELECT COUNT(*) AS found FROM generations WHERE {visible} AND id = ?3")).bind(&[
            scope[0].clone(),
            scope[1].clone(),
            db::opt_text(cursor.as_deref()),
        ])?,
    );
    let results = db.batch(batch).await.or_internal()?;
    if let Some(pending) = pending {
        pending.resolve(rc, &results)?;
    }
    if cursor.is_some() && results.first(cursor_check)?.is_none_or(|f| f.found == 0) {
        return Err(ApiError::invalid_value(
            "starting_after",
            "starting_after must be the id of one of your generations",
        ));
    }
    let mut rows = results.rows(page)?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let origin = http::origin(req)?;
    let data = rows.into_iter().map(|row| record(rc, &origin, row)).collect::<ApiResult<Vec<_>>>()?;
    http::json(
        200,
        &GenerationList {
            object: ListObject::List,
            has_more,
            first_id: data.first().map(|r| r.id.clone()),
            last_id: data.last().map(|r| r.id.clone()),
            data,
        },
    )
}

crate::db::row! {
    struct Found {
        found: i64,
    }
}

pub async fn get(req: &mut Request, rc: &RequestContext, id: &str) -> ApiResult<Response> {
    let caller = auth::require_caller(req, rc).await?;
    let record = load(rc, &http::origin(req)?, id, Some(&caller)).await?.ok_or_else(not_found)?;
    http::json(200, &record)
}

pub fn not_found() -> ApiError {
    ApiError::not_found("no generation with this id")
}

/// One generation as history shows it, by id: as `caller` may see it (an account its
/// own, a key its own), or, with no caller, whoever's it is (the queue consumer).
pub async fn load(
    rc: &RequestContext,
    origin: &str,
    id: &str,
    caller: Option<&auth::Caller>,
) -> ApiResult<Option<GenerationRecord>> {
    let db = rc.db()?;
    let statement = db
        .prepare(&format!(
            "SELECT {COLUMNS} FROM generations
             WHERE id = ?3 AND (?1 IS NULL OR user_id = ?1) AND (?2 IS NULL OR api_key_id = ?2)"
        ))
        .bind(&[
            db::opt_text(caller.map(auth::Caller::user_id)),
            db::opt_text(caller.and_then(auth::Caller::key_id)),
            db::text(id),
        ])?;
    match db.first::<Row>(statement).await? {
        Some(row) => Ok(Some(record(rc, origin, row)?)),
        None => Ok(None),
    }
}

impl GenerationRecord {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn status(&self) -> Status {
        self.status
    }

    pub fn input_count(&self) -> usize {
        self.inputs.len()
    }
}

/// One history record, with image URLs signed now.
fn record(rc: &RequestContext, origin: &str, row: Row) -> ApiResult<GenerationRecord> {
    let stored: Vec<String> =
        row.object_keys.as_deref().and_then(|keys| serde_json::from_str(keys).ok()).unwrap_or_default();
    let mime_type = row.mime_type.unwrap_or_else(|| "image/png".into());
    let images = (0..stored.len())
        .map(|index| {
            Ok(HistoryImage {
                url: storage::stored_image_url(rc, origin, &row.id, index, row.mode.unwrap_or(KeyMode::Live))?,
                mime_type: mime_type.clone(),
                width: row.width,
                height: row.height,
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(GenerationRecord {
        url: images.first().map(|image| image.url.clone()),
        images,
        id: row.id,
        object: GenerationObject::Generation,
        status: row.status,
        api_key_id: row.api_key_id,
        prompt: row.prompt,
        model: row.model,
        size: row.size,
        aspect_ratio: row.aspect_ratio,
        resolution: row.resolution,
        style: row.style,
        n: row.n,
        inputs: super::engine::parse_input_records(row.inputs.as_deref()),
        error: row.error_code.map(|code| Failure { code, message: row.error_message }),
        webhook: row.webhook_url.map(|url| WebhookState {
            url,
            attempts: row.webhook_attempts,
            last_status: row.webhook_last_status,
            delivered_at: row.webhook_delivered_at,
        }),
        created_at: row.created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(parse_limit(None).unwrap(), 20);
        assert_eq!(parse_limit(Some("1")).unwrap(), 1);
        assert_eq!(parse_limit(Some("100")).unwrap(), 100);
        assert_eq!(parse_limit(Some("0")).unwrap_err().code.as_str(), "out_of_range");
        assert_eq!(parse_limit(Some("101")).unwrap_err().code.as_str(), "out_of_range");
        assert_eq!(parse_limit(Some("ten")).unwrap_err().code.as_str(), "invalid_type");
        assert_eq!(parse_limit(Some("-1")).unwrap_err().param.as_deref(), Some("limit"));
    }
}
