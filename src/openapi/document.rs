//! Writes `public/openapi.json` from the Rust types: the response structs the handlers
//! serialise and the documented request bodies (whose fields a test holds against what
//! the parsers really read). Runs as a native test that fails when the committed file is
//! stale, so CI catches a forgotten update; `UPDATE_OPENAPI=1 cargo test openapi` rewrites it.

use crate::error::Code;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/public/openapi.json");

/// Generators for both directions: responses describe what is serialised, requests what
/// is accepted. Both put their definitions under `components/schemas`.
struct Schemas {
    responses: SchemaGenerator,
    requests: SchemaGenerator,
}

impl Schemas {
    fn new() -> Self {
        let settings = SchemaSettings::draft2020_12().with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        });
        Schemas {
            responses: settings.clone().for_serialize().into_generator(),
            requests: settings.for_deserialize().into_generator(),
        }
    }

    fn response<T: JsonSchema>(&mut self) -> Value {
        self.responses.subschema_for::<T>().to_value()
    }

    fn request<T: JsonSchema>(&mut self) -> Value {
        self.requests.subschema_for::<T>().to_value()
    }

    fn components(self) -> Map<String, Value> {
        let mut all = self.requests.definitions().clone();
        for (name, schema) in self.responses.definitions() {
            if let Some(existing) = all.get(name) {
                assert_eq!(existing, schema, "schema {name} differs between request and response");
            }
            all.insert(name.clone(), schema.clone());
        }
        all
    }
}

fn request_id_header() -> Value {
    json!({"description": "`req_` + 24 hex, or the caller's own sane x-request-id", "schema": {"type": "string"}})
}

fn rate_headers() -> Value {
    json!({
        "x-request-id": request_id_header(),
        "x-ratelimit-limit-requests": {"description": "requests per minute allowed for this key", "schema": {"type": "string"}},
        "x-ratelimit-remaining-requests": {"description": "requests left before the limit trips", "schema": {"type": "string"}},
        "x-ratelimit-reset-requests": {"description": "time until the budget is full again, e.g. `1.5s`", "schema": {"type": "string"}},
        "x-quota-limit-images": {"description": "images per UTC day for this key", "schema": {"type": "string"}},
        "x-quota-remaining-images": {"description": "images left today", "schema": {"type": "string"}},
    })
}

fn json_response(description: &str, schema: Value, headers: Option<&Value>) -> Value {
    json!({
        "description": description,
        "headers": headers.cloned().unwrap_or_else(|| json!({"x-request-id": request_id_header()})),
        "content": {"application/json": {"schema": schema}},
    })
}

fn error_description(status: u16) -> String {
    let summary = match status {
        400 => "malformed JSON, a value outside the documented set, or content refused by the model",
        401 => "missing, malformed, unknown, revoked or expired credentials",
        403 => "a suspended account, closed registration, or a bad, tampered or expired image URL signature",
        404 => "unknown resource, or one that is not yours",
        409 => "conflict (email taken, too many active keys, an Idempotency-Key whose first request is still running, a generation no longer cancelable, or a webhook_url before a webhook secret)",
        413 => "body over 64 KiB (27,715,244 bytes on the routes that take images)",
        415 => "a JSON route sent another Content-Type (the edits route takes multipart/form-data)",
        422 => "a field fails validation; `param` names it",
        429 => "rate limit, the key's or the account's daily quota, or login throttling; see Retry-After",
        500 => "internal error or server misconfiguration",
        502 => "the image provider failed or answered something unusable",
        503 => "the image provider is not configured or overloaded after retries, or the deployment's daily live budget is spent (see Retry-After)",
        504 => "the image provider did not answer in time",
        _ => "any other error, in the same envelope",
    };
    // Name the codes a client can meet with this status, from the one table of codes.
    let mut codes: Vec<&str> = Code::ALL.iter().filter(|c| c.status() == status).map(|c| c.as_str()).collect();
    codes.dedup();
    if codes.is_empty() {
        summary.to_string()
    } else {
        format!("{summary}. Codes: `{}`.", codes.join("`, `"))
    }
}

/// Error responses by reference to `components/responses`, defined once each.
struct Errors {
    responses: Map<String, Value>,
}

impl Errors {
    fn refs(&mut self, error: &Value, statuses: &[u16], headers: Option<&Value>) -> Map<String, Value> {
        let suffix = if headers.is_some() { "WithLimits" } else { "" };
        let mut out = Map::new();
        for status in statuses.iter().map(|s| s.to_string()).chain(["default".to_string()]) {
            let name = format!("Error{status}{suffix}");
            let description = status.parse().map_or("any other error, in the same envelope".into(), error_description);
            self.responses.insert(name.clone(), json_response(&description, error.clone(), headers));
            out.insert(status, json!({"$ref": format!("#/components/responses/{name}")}));
        }
        out
    }
}

fn responses(success: &[(&str, Value)], errors: Map<String, Value>) -> Value {
    let mut all: Map<String, Value> = success.iter().map(|(s, v)| (s.to_string(), v.clone())).collect();
    all.extend(errors);
    Value::Object(all)
}

fn json_body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

fn idempotency_header() -> Value {
    json!({"name": "Idempotency-Key", "in": "header", "required": false,
           "description": "1 to 255 printable ASCII characters; replays the first response for 24 hours",
           "schema": {"type": "string", "minLength": 1, "maxLength": 255}})
}

fn prefer_header() -> Value {
    json!({"name": "Prefer", "in": "header", "required": false,
           "description": "RFC 7240. `respond-async`: answer 202 at once and run on the queue; `wait=N` (N up to 60): \
               wait up to N seconds, 200 if the generation is final by then, else 202. A `webhook_url` also makes the \
               request asynchronous.",
           "schema": {"type": "string", "examples": ["respond-async", "respond-async, wait=20"]}})
}

/// The 202 (and the 200 of `Prefer: wait`) of an asynchronous request.
fn accepted(record: &Value) -> Value {
    json!({"description": "accepted: queued (or, with Prefer: wait, still unfinished); poll the Location",
           "headers": {"x-request-id": request_id_header(),
                       "location": {"description": "/v1/generations/{id}", "schema": {"type": "string"}},
                       "preference-applied": {"schema": {"type": "string"}}},
           "content": {"application/json": {"schema": record}}})
}

fn id_param() -> Value {
    json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}})
}

/// The whole document.
pub fn build() -> Value {
    use crate::accounts::{CredentialsRequest, LoginResponse, Me, PasswordChange, RegisterResponse};
    use crate::admin::{AccountUpdateRequest, AdminAccount, AdminAccountList, DeploymentUsage};
    use crate::generate::notify::WebhookEvent;
    use crate::generate::render::{GenerationList, GenerationRecord};
    use crate::generate::render::{GenerationResponse, OpenAiImagesResponse};
    use crate::generate::request::{GenerateRequestDoc, OpenAiEditRequestDoc, OpenAiImagesRequestDoc};
    use crate::keys::{CreatedKey, KeyCreateRequest, KeyList};

    let mut s = Schemas::new();
    let mut e = Errors { responses: Map::new() };
    let error = s.response::<crate::error::Envelope>();
    let rate = rate_headers();
    let account = json!([{"accountToken": []}]);
    let key = json!([{"apiKey": []}]);
    let either = json!([{"accountToken": []}, {"apiKey": []}]);
    let date = json!({"type": "string", "format": "date", "description": "UTC day, YYYY-MM-DD"});
    let generation_id = json!({"type": "string", "pattern": "^gen_[0-9a-f-]{36}$"});

    let record = s.response::<GenerationRecord>();
    let queued = accepted(&record);
    let paths = json!({
        "/health": {"get": {
            "operationId": "health", "tags": ["meta"], "summary": "Liveness and D1 reachability", "security": [],
            "responses": responses(&[("200", json_response("healthy", s.response::<crate::health::Health>(), None))],
                                   e.refs(&error, &[503], None))}},
        "/": {"get": {
            "operationId": "console", "tags": ["meta"], "summary": "The web console (static assets)", "security": [],
            "responses": {"200": {"description": "the console page",
                                  "content": {"text/html": {"schema": {"type": "string"}}}}}}},
        "/v1/models": {"get": {
            "operationId": "listModels", "tags": ["meta"], "security": [],
            "summary": "The models a request may name here, with their resolutions, aspect ratios and reference-image limits",
            "responses": responses(
                &[("200", json_response("the models", s.response::<crate::catalog::ModelList>(), None))],
                e.refs(&error, &[], None))}},
        "/v1/estimate": {"post": {
            "operationId": "estimate", "tags": ["images"], "security": either,
            "summary": "What a generation body would cost, typically and at worst (what its reservation holds against \
                        the money budgets), at this deployment's prices; nothing is drawn, reserved or written",
            "requestBody": json_body(s.request::<GenerateRequestDoc>()),
            "responses": responses(&[("200", json_response("the estimate", s.response::<crate::generate::render::Estimate>(), None))],
                                   e.refs(&error, &[400, 401, 403, 413, 415, 422], None))}},
        "/v1/openapi.json": {"get": {
            "operationId": "openapi", "tags": ["meta"], "summary": "This document", "security": [],
            "responses": responses(&[("200", json_response("OpenAPI 3.1 document", json!({"type": "object"}), None))],
                                   e.refs(&error, &[], None))}},
        "/v1/auth/register": {"post": {
            "operationId": "register", "tags": ["account"], "summary": "Create an account", "security": [],
            "requestBody": json_body(s.request::<CredentialsRequest>()),
            "responses": responses(&[("201", json_response("account created", s.response::<RegisterResponse>(), None))],
                                   e.refs(&error, &[400, 403, 409, 413, 415, 422, 429, 500], None))}},
        "/v1/auth/login": {"post": {
            "operationId": "login", "tags": ["account"], "summary": "Get an access token", "security": [],
            "requestBody": json_body(s.request::<CredentialsRequest>()),
            "responses": responses(&[("200", json_response("logged in", s.response::<LoginResponse>(), None))],
                                   e.refs(&error, &[400, 401, 413, 415, 422, 429, 500], None))}},
        "/v1/auth/me": {"get": {
            "operationId": "me", "tags": ["account"], "summary": "The current account", "security": account,
            "responses": responses(&[("200", json_response("the account", s.response::<Me>(), None))],
                                   e.refs(&error, &[401, 403], None))}},
        "/v1/auth/logout": {"post": {
            "operationId": "logout", "tags": ["account"], "security": account,
            "summary": "Revoke the access token this request carries (other tokens keep working)",
            "responses": responses(
                &[("204", json!({"description": "revoked", "headers": {"x-request-id": request_id_header()}}))],
                e.refs(&error, &[401, 403], None))}},
        "/v1/auth/password": {"post": {
            "operationId": "changePassword", "tags": ["account"], "security": account,
            "summary": "Change the password; revokes every access token of the account and returns a new one",
            "requestBody": json_body(s.request::<PasswordChange>()),
            "responses": responses(&[("200", json_response("changed; a fresh token", s.response::<LoginResponse>(), None))],
                                   e.refs(&error, &[400, 401, 403, 413, 415, 422, 429], None))}},
        "/v1/admin/accounts": {
            "get": {
                "operationId": "adminListAccounts", "tags": ["admin"], "security": account,
                "summary": "Accounts by email, with today's images and key counts (admins only; 404 to anyone else)",
                "parameters": [
                    {"name": "email_prefix", "in": "query", "schema": {"type": "string", "maxLength": 254}},
                    {"name": "limit", "in": "query",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
                    {"name": "starting_after", "in": "query", "schema": {"type": "string"},
                     "description": "the id of the last account of the previous page"}],
                "responses": responses(&[("200", json_response("a page", s.response::<AdminAccountList>(), None))],
                                       e.refs(&error, &[404, 422], None))},
            "post": {
                "operationId": "adminCreateAccount", "tags": ["admin"], "security": account,
                "summary": "Create an account, also when registration is closed (admins only)",
                "requestBody": json_body(s.request::<CredentialsRequest>()),
                "responses": responses(&[("201", json_response("created", s.response::<AdminAccount>(), None))],
                                       e.refs(&error, &[400, 404, 409, 413, 415, 422], None))}},
        "/v1/admin/accounts/{id}": {"post": {
            "operationId": "adminUpdateAccount", "tags": ["admin"], "security": account,
            "summary": "Suspend or unsuspend an account, set its daily ceiling (admins only)",
            "parameters": [id_param()],
            "requestBody": json_body(s.request::<AccountUpdateRequest>()),
            "responses": responses(&[("200", json_response("updated", s.response::<AdminAccount>(), None))],
                                   e.refs(&error, &[400, 404, 413, 415, 422], None))}},
        "/v1/admin/usage": {"get": {
            "operationId": "adminUsage", "tags": ["admin"], "security": account,
            "summary": "The deployment's images per UTC day, live and test (admins only)",
            "parameters": [{"name": "days", "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 366, "default": 30}}],
            "responses": responses(&[("200", json_response("usage", s.response::<DeploymentUsage>(), None))],
                                   e.refs(&error, &[404, 422], None))}},
        "/v1/keys": {
            "post": {
                "operationId": "createKey", "tags": ["account"], "summary": "Create an API key (shown once)",
                "security": account, "parameters": [idempotency_header()],
                "requestBody": json_body(s.request::<KeyCreateRequest>()),
                "responses": responses(
                    &[("201", json_response("the new key, with the full `key` field", s.response::<CreatedKey>(), None))],
                    e.refs(&error, &[400, 401, 403, 409, 413, 415, 422], None))},
            "get": {
                "operationId": "listKeys", "tags": ["account"], "summary": "The account's keys, newest first",
                "security": account,
                "responses": responses(&[("200", json_response("keys", s.response::<KeyList>(), None))],
                                       e.refs(&error, &[401, 403], None))}},
        "/v1/keys/{id}": {"delete": {
            "operationId": "revokeKey", "tags": ["account"], "summary": "Revoke a key", "security": account,
            "parameters": [id_param()],
            "responses": responses(
                &[("204", json!({"description": "revoked (also when already revoked)",
                                 "headers": {"x-request-id": request_id_header()}}))],
                e.refs(&error, &[401, 403, 404], None))}},
        "/v1/generate": {"post": {
            "operationId": "generate", "tags": ["images"], "summary": "Generate or edit images", "security": key,
            "parameters": [idempotency_header(), prefer_header()],
            "requestBody": json_body(s.request::<GenerateRequestDoc>()),
            "responses": responses(
                &[("200", json_response("the generation (asynchronous with Prefer: wait and final in time: the \
                    generation record, as GET /v1/generations/{id})",
                    json!({"anyOf": [s.response::<GenerationResponse>(), record.clone()]}), Some(&rate))),
                  ("202", queued.clone())],
                e.refs(&error, &[400, 401, 403, 404, 409, 413, 415, 422, 429, 502, 503, 504], Some(&rate)))}},
        "/v1/images/generations": {"post": {
            "operationId": "createImage", "tags": ["images"], "summary": "OpenAI Images API compatible generation",
            "security": key, "parameters": [idempotency_header(), prefer_header()],
            "requestBody": json_body(s.request::<OpenAiImagesRequestDoc>()),
            "responses": responses(
                &[("200", json_response("OpenAI-shaped result (asynchronous with Prefer: wait and final in time: the \
                    generation record, as GET /v1/generations/{id})",
                    json!({"anyOf": [s.response::<OpenAiImagesResponse>(), record.clone()]}), Some(&rate))),
                  ("202", queued.clone())],
                e.refs(&error, &[400, 401, 403, 404, 409, 413, 415, 422, 429, 502, 503, 504], Some(&rate)))}},
        "/v1/images/edits": {"post": {
            "operationId": "editImage", "tags": ["images"], "security": key,
            "parameters": [idempotency_header(), prefer_header()],
            "summary": "OpenAI Images API compatible edit: change or compose images by instruction",
            "requestBody": {"required": true, "content": {"multipart/form-data": {
                "schema": s.request::<OpenAiEditRequestDoc>()}}},
            "responses": responses(
                &[("200", json_response("OpenAI-shaped result (asynchronous with Prefer: wait and final in time: the \
                    generation record)",
                    json!({"anyOf": [s.response::<OpenAiImagesResponse>(), record.clone()]}), Some(&rate))),
                  ("202", queued.clone())],
                e.refs(&error, &[400, 401, 403, 404, 409, 413, 415, 422, 429, 502, 503, 504], Some(&rate)))}},
        "/v1/images/{id}": {"get": {
            "operationId": "getImage", "tags": ["images"], "summary": "Image bytes behind a signed URL",
            "security": [],
            "parameters": [id_param(),
                           {"name": "expires", "in": "query", "required": true, "schema": {"type": "integer"}},
                           {"name": "signature", "in": "query", "required": true, "schema": {"type": "string"}}],
            "responses": responses(&[
                ("200", json!({"description": "the image, cached immutably",
                               "headers": {"x-request-id": request_id_header(), "etag": {"schema": {"type": "string"}},
                                           "cache-control": {"schema": {"type": "string"}}},
                               "content": {"image/png": {"schema": {"type": "string", "format": "binary"}},
                                           "image/jpeg": {"schema": {"type": "string", "format": "binary"}}}})),
                ("304", json!({"description": "not modified (If-None-Match)",
                               "headers": {"x-request-id": request_id_header()}})),
            ], e.refs(&error, &[403, 404], None))}},
        "/v1/generations": {"get": {
            "operationId": "listGenerations", "tags": ["history"], "summary": "History, newest first",
            "security": either,
            "parameters": [
                {"name": "limit", "in": "query",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
                {"name": "starting_after", "in": "query", "schema": generation_id,
                 "description": "the last id of the previous page"},
                {"name": "conversation_id", "in": "query", "schema": generation_id,
                 "description": "only this conversation's generations (its first generation's id), newest first"}],
            "responses": responses(&[("200", json_response("a page", s.response::<GenerationList>(), None))],
                                   e.refs(&error, &[400, 401, 403, 422], None))}},
        "/v1/generations/{id}": {"get": {
            "operationId": "getGeneration", "tags": ["history"], "summary": "One generation", "security": either,
            "parameters": [id_param()],
            "responses": responses(&[("200", json_response("the generation", record.clone(), None))],
                                   e.refs(&error, &[401, 403, 404], None))}},
        "/v1/generations/{id}/cancel": {"post": {
            "operationId": "cancelGeneration", "tags": ["history"], "security": either,
            "summary": "Cancel a queued generation (its quota comes back); 409 once running or final",
            "parameters": [id_param()],
            "responses": responses(&[("200", json_response("canceled", record.clone(), None))],
                                   e.refs(&error, &[401, 403, 404, 409], None))}},
        "/v1/webhook_secret": {
            "get": {
                "operationId": "getWebhookSecret", "tags": ["account"], "security": account,
                "summary": "Which webhook signing secret signs (its prefix, never the secret); 404 before one exists",
                "responses": responses(
                    &[("200", json_response("the secret's prefix", s.response::<crate::webhooks::WebhookSecret>(), None))],
                    e.refs(&error, &[401, 403, 404], None))},
            "post": {
                "operationId": "rotateWebhookSecret", "tags": ["account"], "security": account,
                "summary": "Create (201) or rotate (200) the webhook signing secret; shown in full only here. The \
                            previous one keeps signing beside it for 24 hours.",
                "responses": responses(
                    &[("200", json_response("rotated", s.response::<crate::webhooks::WebhookSecret>(), None)),
                      ("201", json_response("created", s.response::<crate::webhooks::WebhookSecret>(), None))],
                    e.refs(&error, &[401, 403], None))}},
        "/v1/usage": {"get": {
            "operationId": "usage", "tags": ["history"],
            "summary": "Images per key per UTC day, quota and remaining", "security": either,
            "parameters": [
                {"name": "from", "in": "query", "schema": date, "description": "default: 29 days before `to`"},
                {"name": "to", "in": "query", "schema": date, "description": "default: today"}],
            "responses": responses(&[("200", json_response("usage", s.response::<crate::usage::UsageReport>(), None))],
                                   e.refs(&error, &[400, 401, 403], None))}},
    });

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "NanoBanana Edge", "version": "1.0.0",
            "description": "Image generation with Google's Gemini image models, on Cloudflare Workers. Every error is \
                `{error: {type, code, message, param, request_id}}`; every response carries `x-request-id`. Test keys \
                (`nb_test_`) return deterministic synthetic PNGs."},
        "servers": [{"url": "/"}],
        "security": [],
        "tags": [{"name": "meta"}, {"name": "account", "description": "account access token (JWT)"},
                 {"name": "images", "description": "API key"},
                 {"name": "history", "description": "access token or API key"},
                 {"name": "admin", "description": "account access token of an admin; 404 to everyone else"}],
        "paths": paths,
        "webhooks": {
            "generationEvent": {"post": {
                "operationId": "generationEvent",
                "summary": "An asynchronous generation with a webhook_url ended: succeeded or failed",
                "description": "Sent as the Standard Webhooks specification has it: headers `webhook-id` (the same \
                    at every retry), `webhook-timestamp` (Unix seconds) and `webhook-signature` (`v1,` + base64 \
                    HMAC-SHA256 of `id.timestamp.body` keyed by the account's `whsec_` secret; two signatures, \
                    space-separated, for 24 hours after a rotation). Retried on network errors, timeouts (10 s) and \
                    non-2xx answers after WEBHOOK_RETRY_DELAYS_SECONDS (default 60, 300, 900, 2400: five attempts \
                    over about an hour). Redirects are not followed.",
                "requestBody": {"required": true, "content": {"application/json": {"schema": s.response::<WebhookEvent>()}}},
                "responses": {"2XX": {"description": "received; any other answer is retried"}}}}},
        "components": {
            "schemas": s.components(),
            "responses": e.responses,
            "securitySchemes": {
                "accountToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                 "description": "from /v1/auth/register or /v1/auth/login; valid 7 days"},
                "apiKey": {"type": "http", "scheme": "bearer", "bearerFormat": "nb_live_... or nb_test_...",
                           "description": "from POST /v1/keys; `nb_test_` keys never call Gemini"},
            },
        },
    })
}

/// Compact (it is embedded in the wasm), one line.
fn render() -> String {
    format!("{}\n", serde_json::to_string(&build()).unwrap())
}

#[test]
fn the_committed_document_is_the_one_the_types_describe() {
    let fresh = render();
    let committed = std::fs::read_to_string(PATH).unwrap_or_default();
    if committed != fresh {
        // Written only when asked: a test run never changes the work tree by itself.
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(PATH, &fresh).unwrap();
            return;
        }
        panic!("public/openapi.json is stale: `UPDATE_OPENAPI=1 cargo test openapi` rewrites it from the Rust types; review it and commit it");
    }
}

// ---------------------------------------------------------------- the request side

/// A value the documented schema of one property accepts, to feed the real parser.
fn sample(name: &str, schema: &Value, components: &Value) -> Value {
    let schema = resolve(schema, components);
    if let Some(default) = schema.get("default") {
        return default.clone();
    }
    if let Some(first) = schema.get("enum").and_then(|e| e.as_array()).and_then(|e| e.first()) {
        return first.clone();
    }
    if let Some(alternatives) = schema.get("anyOf").and_then(|a| a.as_array()) {
        let real = alternatives.iter().find(|a| a.get("type") != Some(&json!("null")));
        return sample(name, real.unwrap_or(&Value::Null), components);
    }
    match name {
        "email" => json!("ada@example.com"),
        "password" => json!("correct horse battery"),
        "model" => json!(crate::config::DEFAULT_GEMINI_MODEL),
        // An earlier image: parses without reading anything.
        "images" => json!([{"generation_id": "gen_sample", "index": 0}]),
        "webhook_url" => json!("https://example.com/hooks/nanobanana"),
        "daily_budget_usd" => json!("2.50"),
        "previous_generation_id" => json!("gen_3f2b9c1e-0000-4000-8000-000000000000"),
        _ => {
            let is = |kind: &str| {
                schema.get("type").is_some_and(|t| t == kind || t.as_array().is_some_and(|a| a.contains(&json!(kind))))
            };
            if is("integer") {
                schema.get("minimum").cloned().unwrap_or(json!(1))
            } else if is("boolean") {
                json!(true)
            } else {
                json!("a banana")
            }
        }
    }
}

fn resolve<'a>(schema: &'a Value, components: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(|r| r.as_str()) {
        Some(reference) => &components[reference.rsplit('/').next().unwrap_or_default()],
        None => schema,
    }
}

fn object(value: Value) -> crate::body::JsonObject {
    crate::body::parse_object(value.to_string().as_bytes()).unwrap()
}

/// For one documented request body: every property is accepted by the parser (alone with
/// the required ones, at a valid value), every property the parser reads is documented,
/// and an undocumented one is refused as `unknown_parameter`.
fn holds(schema_name: &str, parse: impl Fn(crate::body::JsonObject) -> crate::error::ApiResult<()>) {
    let document = build();
    let components = &document["components"]["schemas"];
    let schema = &components[schema_name];
    let properties = schema["properties"].as_object().unwrap();
    let required: Vec<&str> =
        schema["required"].as_array().map_or(vec![], |r| r.iter().filter_map(|v| v.as_str()).collect());
    assert_eq!(schema["additionalProperties"], json!(false), "{schema_name} must refuse what it does not document");
    let base: Map<String, Value> =
        required.iter().map(|name| (name.to_string(), sample(name, &properties[*name], components))).collect();

    crate::body::asked::take();
    parse(object(Value::Object(base.clone()))).unwrap_or_else(|e| panic!("{schema_name} {base:?}: {e}"));
    let mut read = crate::body::asked::take();
    let mut documented: Vec<String> = properties.keys().cloned().collect();
    read.sort();
    read.dedup();
    documented.sort();
    assert_eq!(read, documented, "{schema_name}: the fields the parser reads are the documented properties");

    // A property that only means something beside another is tried with it.
    let needs = |name: &str| (name == "previous_image_index").then_some("previous_generation_id");
    for (name, property) in properties {
        let mut body = base.clone();
        if let Some(other) = needs(name) {
            body.insert(other.to_string(), sample(other, &properties[other], components));
        }
        body.insert(name.clone(), sample(name, property, components));
        parse(object(Value::Object(body.clone())))
            .unwrap_or_else(|e| panic!("{schema_name}: documented {name} = {} refused: {e}", body[name]));
    }
    let mut body = base;
    body.insert("undocumented_field".into(), json!(1));
    let refused = parse(object(Value::Object(body))).unwrap_err();
    assert_eq!(refused.code.as_str(), "unknown_parameter", "{schema_name}");
}

#[test]
fn every_documented_request_property_is_accepted_and_nothing_undocumented() {
    use crate::generate::request::{GenerationRequest, Shape};
    let config = crate::config::Config::from_lookup(|_| None).unwrap();
    holds("Credentials", |body| crate::accounts::credentials(body).map(|_| ()));
    holds("KeyCreateRequest", |body| crate::keys::NewKey::parse(body, 1000, None).map(|_| ()));
    holds("PasswordChange", |body| crate::accounts::password_change(body).map(|_| ()));
    holds("AccountUpdateRequest", |body| crate::admin::AccountUpdate::parse(body).map(|_| ()));
    holds("GenerateRequest", |mut body| {
        let images = crate::generate::inputs::parse_json(body.take("images"))?;
        GenerationRequest::parse(body, images, &config, Shape::Native).map(|_| ())
    });
    holds("OpenAIImagesRequest", |body| GenerationRequest::parse(body, vec![], &config, Shape::OpenAi).map(|_| ()));
}

#[test]
fn every_error_code_is_in_the_document() {
    let document = build();
    let listed = &document["components"]["schemas"]["EnvelopeBody"]["properties"]["code"]["enum"];
    for code in Code::ALL {
        assert!(listed.as_array().unwrap().contains(&json!(code.as_str())), "{code:?}");
    }
}
