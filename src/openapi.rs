//! `GET /v1/openapi.json`: the OpenAPI 3.1 document of every route, written by
//! scripts/openapi.py and checked against real responses by the end-to-end suite.

use crate::error::ApiResult;
use worker::Response;

pub const DOCUMENT: &str = include_str!("openapi.json");

pub fn serve() -> ApiResult<Response> {
    let mut response = Response::from_bytes(DOCUMENT.as_bytes().to_vec())?;
    response.headers_mut().set("content-type", "application/json")?;
    response.headers_mut().set("cache-control", "public, max-age=300")?;
    Ok(response)
}

#[cfg(test)]
mod tests {
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
}
