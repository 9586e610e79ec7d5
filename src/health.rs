//! `GET /health`: liveness and D1 reachability.

use crate::error::{ApiError, ApiResult, Code};
use crate::http::{self, RequestContext};
use serde::Serialize;
use worker::Response;

/// `GET /health` when D1 answers.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct Health {
    status: Up,
    d1: Up,
}

#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Up {
    Ok,
}

pub async fn health(rc: &RequestContext) -> ApiResult<Response> {
    let db = rc.db()?;
    // Read through crate::db, not worker's `first::<T>`: that one links serde_wasm_bindgen's
    // deserializer and, through its error messages, core's float formatting (14 KB).
    match db.first::<One>(db.prepare("SELECT 1 AS ok")).await {
        Ok(Some(One { ok: 1 })) => http::json(200, &Health { status: Up::Ok, d1: Up::Ok }),
        Ok(_) => Err(ApiError::new(Code::DatabaseUnavailable, "D1 is unreachable").caused_by("SELECT 1 gave no 1")),
        Err(err) => Err(ApiError::new(Code::DatabaseUnavailable, "D1 is unreachable")
            .caused_by(err.cause.as_deref().unwrap_or(&err.message))),
    }
}

crate::db::row! {
    struct One { ok: i64 }
}
