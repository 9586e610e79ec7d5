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
    use crate::routes::{resolve, AdminRoute, Route};

    /// The documented path and method of every route. Exhaustive, with no wildcard: a new
    /// route does not compile until it says where the document has it.
    fn documented(route: &Route) -> (&'static str, &'static str) {
        match route {
            Route::Health => ("get", "/health"),
            Route::Register => ("post", "/v1/auth/register"),
            Route::Login => ("post", "/v1/auth/login"),
            Route::Me => ("get", "/v1/auth/me"),
            Route::Logout => ("post", "/v1/auth/logout"),
            Route::ChangePassword => ("post", "/v1/auth/password"),
            Route::CreateKey => ("post", "/v1/keys"),
            Route::ListKeys => ("get", "/v1/keys"),
            Route::RevokeKey(_) => ("delete", "/v1/keys/{id}"),
            Route::Generate => ("post", "/v1/generate"),
            Route::ImagesGenerations => ("post", "/v1/images/generations"),
            Route::ImagesEdits => ("post", "/v1/images/edits"),
            Route::GetImage(_) => ("get", "/v1/images/{id}"),
            Route::ListGenerations => ("get", "/v1/generations"),
            Route::GetGeneration(_) => ("get", "/v1/generations/{id}"),
            Route::CancelGeneration(_) => ("post", "/v1/generations/{id}/cancel"),
            Route::GetWebhookSecret => ("get", "/v1/webhook_secret"),
            Route::RotateWebhookSecret => ("post", "/v1/webhook_secret"),
            Route::Usage => ("get", "/v1/usage"),
            Route::OpenApi => ("get", "/v1/openapi.json"),
            Route::Models => ("get", "/v1/models"),
            Route::Estimate => ("post", "/v1/estimate"),
            Route::Admin(AdminRoute::ListAccounts) => ("get", "/v1/admin/accounts"),
            Route::Admin(AdminRoute::CreateAccount) => ("post", "/v1/admin/accounts"),
            Route::Admin(AdminRoute::UpdateAccount(_)) => ("post", "/v1/admin/accounts/{id}"),
            Route::Admin(AdminRoute::Usage) => ("get", "/v1/admin/usage"),
            Route::Admin(AdminRoute::WrongMethod(_)) => ("", ""),
        }
    }

    /// Every documented operation resolves in the route table to the route documented
    /// there, and every route the table resolves (each reached from a documented path) is
    /// in the document: a route added to either side alone fails here.
    #[test]
    fn the_document_and_the_route_table_name_the_same_operations() {
        let doc: serde_json::Value = serde_json::from_str(include_str!("../../public/openapi.json")).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        let mut reached = std::collections::BTreeSet::new();
        for (path, operations) in paths {
            if path == "/" {
                continue; // the console: a static asset, served before the Worker runs
            }
            let concrete = path.replace("{id}", "gen_0b5c2f1e");
            for method in operations.as_object().unwrap().keys() {
                let route = resolve(&method.to_uppercase(), &concrete)
                    .unwrap_or_else(|err| panic!("{method} {path} is documented but the table answers {err:?}"));
                assert_eq!(documented(&route), (method.as_str(), path.as_str()), "{method} {path}");
                reached.insert(documented(&route));
            }
        }
        // Each route once, so a variant the document leaves out shows as a missing pair.
        let every: Vec<(&str, &str)> = [
            Route::Health,
            Route::Register,
            Route::Login,
            Route::Me,
            Route::Logout,
            Route::ChangePassword,
            Route::CreateKey,
            Route::ListKeys,
            Route::RevokeKey(String::new()),
            Route::Generate,
            Route::ImagesGenerations,
            Route::ImagesEdits,
            Route::GetImage(String::new()),
            Route::ListGenerations,
            Route::GetGeneration(String::new()),
            Route::CancelGeneration(String::new()),
            Route::GetWebhookSecret,
            Route::RotateWebhookSecret,
            Route::Usage,
            Route::OpenApi,
            Route::Models,
            Route::Admin(AdminRoute::ListAccounts),
            Route::Admin(AdminRoute::CreateAccount),
            Route::Admin(AdminRoute::UpdateAccount(String::new())),
            Route::Admin(AdminRoute::Usage),
        ]
        .iter()
        .map(documented)
        .collect();
        let missing: Vec<_> = every.iter().filter(|op| !reached.contains(*op)).collect();
        assert!(missing.is_empty(), "routes the document does not have: {missing:?}");
    }
}
