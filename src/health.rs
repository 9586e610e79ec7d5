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
    match db.prepare("SELECT 1 AS ok").first::<serde_json::Value>(None).await {
        Ok(Some(_)) => http::json(200, &Health { status: Up::Ok, d1: Up::Ok }),
        Ok(None) => {
            Err(ApiError::new(Code::DatabaseUnavailable, "D1 is unreachable").caused_by("SELECT 1 gave no row"))
        }
        Err(err) => Err(ApiError::new(Code::DatabaseUnavailable, "D1 is unreachable")
            .caused_by(crate::error::describe_worker_error(&err))),
    }
}
