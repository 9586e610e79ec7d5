//! `GET /v1/openapi.json`: the OpenAPI 3.1 document of every route.
//!
//! `src/openapi.json` is written by a native test (`document.rs`) from the Rust types the
//! handlers serialise, so the document and the responses cannot drift; that test fails
//! when the committed file is stale. The end-to-end suite validates real responses
//! against it, and schemathesis fuzzes every operation it describes.

#[cfg(test)]
mod document;
#[cfg(test)]
pub mod schema;

use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use worker::Response;

pub const DOCUMENT: &str = include_str!("../openapi.json");

/// The document for this deployment: `model` on `/v1/generate` lists the models this
/// server's `GEMINI_MODELS` allows, so clients and fuzzers see the real constraint.
pub fn document(config: &Config) -> ApiResult<String> {
    let mut doc: serde_json::Value =
        serde_json::from_str(DOCUMENT).map_err(|err| ApiError::internal(format!("openapi.json: {err}")))?;
    if let Some(model) = doc.pointer_mut("/components/schemas/GenerateRequest/properties/model") {
        model["enum"] = serde_json::json!(config.gemini_models);
    }
    crate::http::to_json(&doc)
}

pub fn serve(config: &Config) -> ApiResult<Response> {
    let mut response = crate::http::json_text(200, document(config)?)?;
    response.headers_mut().set("cache-control", "public, max-age=300")?;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    #[test]
    fn document_is_openapi_3_1_json_covering_every_route() {
        let doc: serde_json::Value = serde_json::from_str(super::DOCUMENT).unwrap();
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
        ] {
            assert!(paths.contains_key(path), "{path} is not documented");
        }
    }

    #[test]
    fn served_document_lists_the_configured_models() {
        let config = Config::from_lookup(|name| (name == "GEMINI_MODELS").then(|| "m-1,m-2".to_string())).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&super::document(&config).unwrap()).unwrap();
        let models = &doc["components"]["schemas"]["GenerateRequest"]["properties"]["model"]["enum"];
        assert_eq!(models, &serde_json::json!(["gemini-3.1-flash-image", "m-1", "m-2"]));
    }
}
