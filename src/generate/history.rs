//! `GET /v1/generations` and `GET /v1/generations/{id}`: the caller's history, newest
//! first, with cursor pagination and fresh image URLs. An account sees every key's
//! generations; an API key sees its own. Anyone else's generation is 404.

use crate::auth;
use crate::db::{self, D1ResultExt};
use crate::error::{ApiError, ApiResult};
use crate::http::{self, RequestContext};
use crate::storage;
use serde::Deserialize;
use worker::{Request, Response};

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

const COLUMNS: &str =
    "id, api_key_id, status, prompt, model, size, style, n, object_keys, mime_type, error_code, created_at";
/// Rows the caller may see: its account's, narrowed to one key for an API key.
const VISIBLE: &str = "user_id = ?1 AND (?2 IS NULL OR api_key_id = ?2)";

#[derive(Deserialize)]
struct Row {
    id: String,
    api_key_id: String,
    status: String,
    prompt: String,
    model: String,
    size: String,
    style: String,
    n: i64,
    object_keys: Option<String>,
    mime_type: Option<String>,
    error_code: Option<String>,
    created_at: String,
}

/// `limit` from the query: 1 to 100, default 20.
pub fn parse_limit(raw: Option<&str>) -> ApiResult<u32> {
    let Some(raw) = raw else { return Ok(DEFAULT_LIMIT) };
    let limit: u32 =
        raw.parse().map_err(|_| ApiError::validation("invalid_type", "limit", "limit must be an integer"))?;
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::validation("out_of_range", "limit", format!("limit must be from 1 to {MAX_LIMIT}")))
    }
}

pub async fn list(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    let caller = auth::require_caller(req, rc).await?;
    let limit = parse_limit(http::query_param(req, "limit")?.as_deref())?;
    let cursor = http::query_param(req, "starting_after")?.filter(|c| !c.is_empty());

    let db = rc.db()?;
    let scope = [db::text(caller.user_id()), db::opt_text(caller.key_id())];
    // Rows strictly after the cursor in (created_at DESC, id DESC) order.
    let page = db
        .prepare(&format!(
            "SELECT {COLUMNS} FROM generations
             WHERE {VISIBLE}
               AND (?3 IS NULL OR (created_at, id) < (SELECT created_at, id FROM generations WHERE id = ?3))
             ORDER BY created_at DESC, id DESC LIMIT ?4"
        ))
        .bind(&[scope[0].clone(), scope[1].clone(), db::opt_text(cursor.as_deref()), db::int(i64::from(limit) + 1)])?;
    let cursor_check = db
        .prepare(&format!("SELECT COUNT(*) AS found FROM generations WHERE {VISIBLE} AND id = ?3"))
        .bind(&[scope[0].clone(), scope[1].clone(), db::opt_text(cursor.as_deref())])?;
    let results = db.batch(vec![page, cursor_check]).await.or_internal()?;
    if cursor.is_some() {
        #[derive(Deserialize)]
        struct Found {
            found: i64,
        }
        let found: Vec<Found> = db::rows(&results, 1)?;
        if found.first().is_none_or(|f| f.found == 0) {
            return Err(ApiError::invalid_value(
                "starting_after",
                "starting_after must be the id of one of your generations",
            ));
        }
    }
    let mut rows: Vec<Row> = db::rows(&results, 0)?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let origin = super::origin(req)?;
    let data = rows.iter().map(|row| item(rc, &origin, row)).collect::<ApiResult<Vec<_>>>()?;
    http::json(
        200,
        &serde_json::json!({
            "object": "list",
            "data": data,
            "has_more": has_more,
            "first_id": rows.first().map(|r| r.id.clone()),
            "last_id": rows.last().map(|r| r.id.clone()),
        }),
    )
}

pub async fn get(req: &mut Request, rc: &RequestContext, id: &str) -> ApiResult<Response> {
    let caller = auth::require_caller(req, rc).await?;
    let db = rc.db()?;
    let statement = db.prepare(&format!("SELECT {COLUMNS} FROM generations WHERE {VISIBLE} AND id = ?3")).bind(&[
        db::text(caller.user_id()),
        db::opt_text(caller.key_id()),
        db::text(id),
    ])?;
    let row: Row = db.first(statement).await?.ok_or_else(|| ApiError::not_found("no generation with this id"))?;
    http::json(200, &item(rc, &super::origin(req)?, &row)?)
}

/// One history item, with image URLs signed now.
fn item(rc: &RequestContext, origin: &str, row: &Row) -> ApiResult<serde_json::Value> {
    let stored: Vec<String> =
        row.object_keys.as_deref().and_then(|keys| serde_json::from_str(keys).ok()).unwrap_or_default();
    let mime_type = row.mime_type.clone().unwrap_or_else(|| "image/png".into());
    let images = (0..stored.len())
        .map(|index| {
            Ok(serde_json::json!({
                "url": storage::stored_image_url(rc, origin, &row.id, index)?,
                "mime_type": mime_type,
            }))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(serde_json::json!({
        "id": row.id,
        "object": "generation",
        "status": row.status,
        "api_key_id": row.api_key_id,
        "prompt": row.prompt,
        "model": row.model,
        "size": row.size,
        "style": row.style,
        "n": row.n,
        "url": images.first().and_then(|image| image.get("url").cloned()),
        "images": images,
        "error": row.error_code.as_ref().map(|code| serde_json::json!({"code": code})),
        "created_at": row.created_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(parse_limit(None).unwrap(), 20);
        assert_eq!(parse_limit(Some("1")).unwrap(), 1);
        assert_eq!(parse_limit(Some("100")).unwrap(), 100);
        assert_eq!(parse_limit(Some("0")).unwrap_err().code, "out_of_range");
        assert_eq!(parse_limit(Some("101")).unwrap_err().code, "out_of_range");
        assert_eq!(parse_limit(Some("ten")).unwrap_err().code, "invalid_type");
        assert_eq!(parse_limit(Some("-1")).unwrap_err().param.as_deref(), Some("limit"));
    }
}
