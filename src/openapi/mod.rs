//! `GET /v1/openapi.json`: the OpenAPI 3.1 document of every route.
//!
//! `public/openapi.json` is written by a native test (`document.rs`) from the Rust types
//! the handlers serialise, so the document and the responses cannot drift; that test
//! fails when the committed file is stale. It is a static asset, not a part of the wasm
//! (56 KB the Worker need not load at every cold start): this route hands the asset's
//! bytes through, adding the headers every answer of the API carries. The end-to-end suite
//! validates real responses against it, and schemathesis fuzzes every operation in it.

#[cfg(test)]
mod document;
#[cfg(test)]
pub mod schema;

use crate::error::{describe_worker_error, ApiError, ApiResult};
use crate::http::RequestContext;
use worker::Response;

/// The static assets binding (`[assets]` in wrangler.toml).
const ASSETS: &str = "ASSETS";

pub async fn serve(rc: &RequestContext) -> ApiResult<Response> {
    let assets = rc.env.assets(ASSETS).map_err(|err| {
        ApiError::server_misconfigured(ASSETS).caused_by(format!("assets binding: {}", describe_worker_error(&err)))
    })?;
    // A Request rather than `fetch(url, None)`, whose unused RequestInit branch kept 11 KB
    // of `cf` option conversion in the wasm.
    let request = worker::Request::new("https://assets.invalid/openapi.json", worker::Method::Get)?;
    let asset = assets.fetch_request(request).await?;
    if asset.status_code() != 200 {
        return Err(ApiError::internal(format!("openapi.json asset answered {}", asset.status_code())));
    }
    let headers = worker::Headers::new();
    headers.set("content-type", "application/json")?;
    headers.set("cache-control", "public, max-age=300")?;
    // The runtime streams the asset's body; its bytes never pass through wasm.
    Ok(Response::from_body(asset.body().clone())?.with_headers(headers))
}

#[cfg(test)]
mod tests {
    #[test]
    fn document_is_openapi_3_1_json_covering_every_route() {
        let doc: serde_json::Value = serde_json::from_str(include_str!("../../public/openapi.json")).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        for path in [
            "/health",
            "/v1/auth/register",
            "/v1/auth/login",
            "/v1/auth/me",
            "/v1/keys",
            "/v1/keys/{id}",
            "/v1/generate",
            "/v1/images/generations",
            "/v1/images/{id}",
            "/v1/generations",
            "/v1/generations/{id}",
            "/v1/usage",
            "/v1/openapi.json",
            "/v1/models",
        ] {
            assert!(paths.contains_key(path), "{path} is not documented");
        }
    }
}
