//! `GET /health`: liveness and D1 reachability.

use crate::error::{ApiError, ApiResult, ErrorType};
use crate::http::{self, RequestContext};
use serde_json::json;
use worker::Response;

pub async fn health(rc: &RequestContext) -> ApiResult<Response> {
    let db = rc.db()?;
    match db.prepare("SELECT 1 AS ok").first::<serde_json::Value>(None).await {
        Ok(Some(_)) => http::json(200, &json!({"status": "ok", "d1": "ok"})),
        Ok(None) | Err(_) => {
            crate::log::error("health: D1 unreachable", "");
            Err(ApiError::new(503, ErrorType::ApiError, "database_unavailable", "D1 is unreachable"))
        }
    }
}
