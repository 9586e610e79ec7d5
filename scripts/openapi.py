"""Writes src/openapi.json, the OpenAPI 3.1 document served at /v1/openapi.json.

Edit this file and run `python3 scripts/openapi.py`; the test command fails when the
committed JSON differs from what this script writes, and the end-to-end suite validates
real responses against the document (tests/e2e/test_openapi.py, schemathesis).
"""

import json
from pathlib import Path

ERROR_TYPES = ["invalid_request_error", "authentication_error", "permission_error", "not_found_error",
               "conflict_error", "rate_limit_error", "content_policy_error", "upstream_error", "api_error"]
SIZES = ["1024x1024", "1536x1024", "1024x1536", "1792x1024", "1024x1792", "2048x2048"]


def ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema):
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties, required=None, extra=False):
    schema = {"type": "object", "properties": properties, "required": required if required is not None else list(properties)}
    if not extra:
        schema["additionalProperties"] = False
    return schema


STR = {"type": "string"}
TS = {"type": "string", "format": "date-time", "description": "UTC, ISO-8601 with milliseconds"}
DATE = {"type": "string", "format": "date", "description": "UTC day, YYYY-MM-DD"}
UUID = {"type": "string", "format": "uuid"}
GEN_ID = {"type": "string", "pattern": "^gen_[0-9a-f-]{36}$"}

REQUEST_ID = {"description": "`req_` + 24 hex, or the caller's own sane x-request-id", "schema": STR}
RATE_HEADERS = {
    "x-request-id": REQUEST_ID,
    "x-ratelimit-limit-requests": {"description": "requests per minute allowed for this key", "schema": {"type": "string"}},
    "x-ratelimit-remaining-requests": {"description": "requests left before the limit trips", "schema": {"type": "string"}},
    "x-ratelimit-reset-requests": {"description": "time until the budget is full again, e.g. `1.5s`", "schema": {"type": "string"}},
    "x-quota-limit-images": {"description": "images per UTC day for this key", "schema": {"type": "string"}},
    "x-quota-remaining-images": {"description": "images left today", "schema": {"type": "string"}},
}


def json_response(description, schema, headers=None):
    return {"description": description, "headers": headers or {"x-request-id": REQUEST_ID},
            "content": {"application/json": {"schema": schema}}}


RESPONSES = {}


def errors(*statuses, headers=None):
    """Error responses by reference to components/responses (one definition each)."""
    suffix = "WithLimits" if headers else ""
    out = {}
    for status in [*statuses, "default"]:
        name = f"Error{status}{suffix}"
        description = ERROR_DESCRIPTIONS.get(status, "any other error, in the same envelope")
        RESPONSES[name] = json_response(description, ref("Error"), headers)
        out[str(status)] = {"$ref": f"#/components/responses/{name}"}
    return out


ERROR_DESCRIPTIONS = {
    400: "malformed JSON, a value outside the documented set, or content refused by the model",
    401: "missing, malformed, unknown, revoked or expired credentials",
    403: "bad, tampered or expired image URL signature",
    404: "unknown resource, or one that is not yours",
    409: "conflict (email taken, or an Idempotency-Key whose first request is still running)",
    413: "body over 64 KiB",
    415: "a JSON route sent another Content-Type",
    422: "a field fails validation; `param` names it",
    429: "rate limit, daily quota or login throttling; see Retry-After",
    500: "internal error or server misconfiguration",
    502: "the image provider failed or answered something unusable",
    503: "the image provider is not configured, or overloaded after retries",
    504: "the image provider did not answer in time",
}

IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
               "description": "1 to 255 printable ASCII characters; replays the first response for 24 hours",
               "schema": {"type": "string", "minLength": 1, "maxLength": 255}}

JSON_BODY = lambda schema: {"required": True, "content": {"application/json": {"schema": schema}}}  # noqa: E731

GENERATE_PROPS = {
    "prompt": {"type": "string", "minLength": 1, "maxLength": 4000, "pattern": "\\S",
               "description": "1 to 4000 characters after trimming"},
    "size": {"type": "string", "enum": SIZES, "default": "1024x1024"},
    "style": {"type": "string", "enum": ["natural", "artistic"], "default": "natural",
              "description": "appends a style instruction to the prompt sent upstream"},
    "n": {"type": "integer", "minimum": 1, "maximum": 4, "default": 1},
    "model": {"type": "string", "description": "one of GEMINI_MODELS (the served document lists them); default GEMINI_MODEL"},
    "response_format": {"type": "string", "enum": ["url", "b64_json"], "default": "url"},
}

API_KEY_PROPS = {
    "id": UUID, "name": STR, "prefix": {"type": "string", "minLength": 12, "maxLength": 12},
    "mode": {"type": "string", "enum": ["live", "test"]}, "is_active": {"type": "boolean"},
    "last_used_at": nullable(TS), "expires_at": nullable(TS), "revoked_at": nullable(TS),
    "daily_image_quota": nullable({"type": "integer"}), "created_at": TS,
}

SCHEMAS = {
    "Error": obj({"error": obj({
        "type": {"type": "string", "enum": ERROR_TYPES},
        "code": STR,
        "message": STR,
        "param": nullable(STR),
        "request_id": STR,
    })}),
    "Health": obj({"status": {"type": "string", "enum": ["ok"]}, "d1": {"type": "string", "enum": ["ok"]}}),
    "Credentials": obj({"email": {"type": "string", "format": "email"},
                        "password": {"type": "string", "minLength": 8, "description": "8 to 72 bytes"}}),
    "User": obj({"id": UUID, "email": STR, "created_at": TS}),
    "RegisterResponse": obj({"user": ref("User"), "access_token": STR,
                             "token_type": {"type": "string", "enum": ["bearer"]}, "expires_in": {"type": "integer"}}),
    "LoginResponse": obj({"access_token": STR, "token_type": {"type": "string", "enum": ["bearer"]},
                          "expires_in": {"type": "integer"}}),
    "KeyCreateRequest": obj({
        "name": {"type": "string", "minLength": 1, "maxLength": 100, "default": "Default key"},
        "mode": {"type": "string", "enum": ["live", "test"], "default": "live"},
        "expires_in_days": {"type": "integer", "minimum": 1, "maximum": 3650},
        "daily_image_quota": {"type": "integer", "minimum": 1, "maximum": 100000},
    }, required=[]),
    "ApiKey": obj(API_KEY_PROPS),
    "ApiKeyCreated": obj({**API_KEY_PROPS, "key": {
        "type": "string", "pattern": "^nb_(live|test)_[0-9a-f]{32}$", "description": "the full key, shown only here"}}),
    "ApiKeyList": obj({"object": {"type": "string", "enum": ["list"]}, "data": {"type": "array", "items": ref("ApiKey")}}),
    "GenerateRequest": obj(GENERATE_PROPS, required=["prompt"]),
    "Image": obj({"url": STR, "b64_json": STR, "mime_type": {"type": "string", "enum": ["image/png", "image/jpeg", "image/webp"]}},
                 required=["mime_type"]),
    "Generation": obj({
        "id": GEN_ID, "object": {"type": "string", "enum": ["generation"]}, "url": nullable(STR), "prompt": STR,
        "created_at": TS, "model": STR, "size": {"type": "string", "enum": SIZES},
        "style": {"type": "string", "enum": ["natural", "artistic"]}, "n": {"type": "integer"},
        "images": {"type": "array", "items": ref("Image")},
    }),
    "OpenAIImagesRequest": obj({
        **{k: v for k, v in GENERATE_PROPS.items() if k != "style" and k != "size"},
        "size": {"type": "string", "enum": SIZES + ["auto"]},
        "style": {"type": "string", "enum": ["natural", "vivid", "artistic"]},
        "model": {"type": "string", "description": "one of GEMINI_MODELS; OpenAI names (dall-e-*, gpt-image-*) mean the default"},
        "user": {"type": "string", "description": "accepted and ignored, as an optional hint"},
        "quality": {"type": "string", "description": "accepted and ignored, as an optional hint"},
        "moderation": {"type": "string", "description": "accepted and ignored, as an optional hint"},
    }, required=["prompt"]),
    "OpenAIImagesResponse": obj({"created": {"type": "integer"}, "data": {"type": "array", "items": {
        "type": "object", "additionalProperties": False, "required": ["revised_prompt"],
        "properties": {"url": STR, "b64_json": STR, "revised_prompt": {"type": "null"}}}}}),
    "GenerationItem": obj({
        "id": GEN_ID, "object": {"type": "string", "enum": ["generation"]},
        "status": {"type": "string", "enum": ["pending", "succeeded", "failed"]}, "api_key_id": UUID,
        "prompt": STR, "model": STR, "size": STR, "style": STR, "n": {"type": "integer"}, "url": nullable(STR),
        "images": {"type": "array", "items": ref("Image")},
        "error": nullable(obj({"code": STR})), "created_at": TS,
    }),
    "GenerationList": obj({"object": {"type": "string", "enum": ["list"]},
                           "data": {"type": "array", "items": ref("GenerationItem")},
                           "has_more": {"type": "boolean"}, "first_id": nullable(GEN_ID), "last_id": nullable(GEN_ID)}),
    "Usage": obj({"object": {"type": "string", "enum": ["usage"]}, "from": DATE, "to": DATE, "today": DATE,
                  "data": {"type": "array", "items": obj({
                      "api_key_id": UUID, "name": STR, "prefix": STR, "mode": {"type": "string", "enum": ["live", "test"]},
                      "is_active": {"type": "boolean"}, "daily_image_quota": {"type": "integer"},
                      "images_today": {"type": "integer"}, "remaining_today": {"type": "integer"},
                      "total_images": {"type": "integer"},
                      "days": {"type": "array", "items": obj({"date": DATE, "images": {"type": "integer"}})},
                  })}}),
}

ACCOUNT = [{"accountToken": []}]
KEY = [{"apiKey": []}]
EITHER = [{"accountToken": []}, {"apiKey": []}]
ID_PARAM = lambda name, schema: {"name": name, "in": "path", "required": True, "schema": schema}  # noqa: E731

PATHS = {
    "/health": {"get": {"operationId": "health", "tags": ["meta"], "summary": "Liveness and D1 reachability",
                        "security": [], "responses": {"200": json_response("healthy", ref("Health")), **errors(503)}}},
    "/": {"get": {"operationId": "console", "tags": ["meta"], "summary": "The web console (static assets)",
                  "security": [], "responses": {"200": {"description": "the console page",
                                                         "content": {"text/html": {"schema": {"type": "string"}}}}}}},
    "/v1/openapi.json": {"get": {"operationId": "openapi", "tags": ["meta"], "summary": "This document", "security": [],
                                 "responses": {"200": json_response("OpenAPI 3.1 document", {"type": "object"}), **errors()}}},
    "/v1/auth/register": {"post": {"operationId": "register", "tags": ["account"], "summary": "Create an account",
                                   "security": [], "requestBody": JSON_BODY(ref("Credentials")),
                                   "responses": {"201": json_response("account created", ref("RegisterResponse")),
                                                 **errors(400, 409, 413, 415, 422, 429, 500)}}},
    "/v1/auth/login": {"post": {"operationId": "login", "tags": ["account"], "summary": "Get an access token",
                                "security": [], "requestBody": JSON_BODY(ref("Credentials")),
                                "responses": {"200": json_response("logged in", ref("LoginResponse")),
                                              **errors(400, 401, 413, 415, 422, 429, 500)}}},
    "/v1/auth/me": {"get": {"operationId": "me", "tags": ["account"], "summary": "The current account",
                            "security": ACCOUNT, "responses": {"200": json_response("the account", ref("User")), **errors(401)}}},
    "/v1/keys": {
        "post": {"operationId": "createKey", "tags": ["account"], "summary": "Create an API key (shown once)",
                 "security": ACCOUNT, "parameters": [IDEMPOTENCY], "requestBody": JSON_BODY(ref("KeyCreateRequest")),
                 "responses": {"201": json_response("the new key, with the full `key` field", ref("ApiKeyCreated")),
                     **errors(400, 401, 409, 413, 415, 422)}},
        "get": {"operationId": "listKeys", "tags": ["account"], "summary": "The account's keys, newest first",
                "security": ACCOUNT, "responses": {"200": json_response("keys", ref("ApiKeyList")), **errors(401)}},
    },
    "/v1/keys/{id}": {"delete": {"operationId": "revokeKey", "tags": ["account"], "summary": "Revoke a key",
                                 "security": ACCOUNT, "parameters": [ID_PARAM("id", STR)],
                                 "responses": {"204": {"description": "revoked (also when already revoked)",
                                                       "headers": {"x-request-id": REQUEST_ID}}, **errors(401, 404)}}},
    "/v1/generate": {"post": {"operationId": "generate", "tags": ["images"], "summary": "Generate images",
                              "security": KEY, "parameters": [IDEMPOTENCY], "requestBody": JSON_BODY(ref("GenerateRequest")),
                              "responses": {"200": json_response("the generation", ref("Generation"), RATE_HEADERS),
                                            **errors(400, 401, 409, 413, 415, 422, 429, 502, 503, 504, headers=RATE_HEADERS)}}},
    "/v1/images/generations": {"post": {
        "operationId": "createImage", "tags": ["images"], "summary": "OpenAI Images API compatible generation",
        "security": KEY, "parameters": [IDEMPOTENCY], "requestBody": JSON_BODY(ref("OpenAIImagesRequest")),
        "responses": {"200": json_response("OpenAI-shaped result", ref("OpenAIImagesResponse"), RATE_HEADERS),
                      **errors(400, 401, 409, 413, 415, 422, 429, 502, 503, 504, headers=RATE_HEADERS)}}},
    "/v1/images/{id}": {"get": {
        "operationId": "getImage", "tags": ["images"], "summary": "Image bytes behind a signed URL", "security": [],
        "parameters": [ID_PARAM("id", STR),
                       {"name": "expires", "in": "query", "required": True, "schema": {"type": "integer"}},
                       {"name": "signature", "in": "query", "required": True, "schema": STR}],
        "responses": {"200": {"description": "the image, cached immutably",
                              "headers": {"x-request-id": REQUEST_ID, "etag": {"schema": STR}, "cache-control": {"schema": STR}},
                              "content": {"image/png": {"schema": {"type": "string", "format": "binary"}},
                                          "image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
                      "304": {"description": "not modified (If-None-Match)", "headers": {"x-request-id": REQUEST_ID}},
                      **errors(403, 404)}}},
    "/v1/generations": {"get": {
        "operationId": "listGenerations", "tags": ["history"], "summary": "History, newest first",
        "security": EITHER,
        "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
                       {"name": "starting_after", "in": "query", "schema": GEN_ID,
                        "description": "the last id of the previous page"}],
        "responses": {"200": json_response("a page", ref("GenerationList")), **errors(400, 401, 422)}}},
    "/v1/generations/{id}": {"get": {
        "operationId": "getGeneration", "tags": ["history"], "summary": "One generation", "security": EITHER,
        "parameters": [ID_PARAM("id", STR)],
        "responses": {"200": json_response("the generation", ref("GenerationItem")), **errors(401, 404)}}},
    "/v1/usage": {"get": {
        "operationId": "usage", "tags": ["history"], "summary": "Images per key per UTC day, quota and remaining",
        "security": EITHER,
        "parameters": [{"name": "from", "in": "query", "schema": DATE, "description": "default: 29 days before `to`"},
                       {"name": "to", "in": "query", "schema": DATE, "description": "default: today"}],
        "responses": {"200": json_response("usage", ref("Usage")), **errors(400, 401)}}},
}

DOCUMENT = {
    "openapi": "3.1.0",
    "info": {"title": "NanoBanana Edge", "version": "1.0.0",
             "description": "Image generation with Google's Gemini image models, on Cloudflare Workers. "
                            "Every error is `{error: {type, code, message, param, request_id}}`; every response "
                            "carries `x-request-id`. Test keys (`nb_test_`) return deterministic synthetic PNGs."},
    "servers": [{"url": "/"}],
    "security": [],
    "tags": [{"name": "meta"}, {"name": "account", "description": "account access token (JWT)"},
             {"name": "images", "description": "API key"}, {"name": "history", "description": "access token or API key"}],
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "responses": RESPONSES,
        "securitySchemes": {
            "accountToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                             "description": "from /v1/auth/register or /v1/auth/login; valid 7 days"},
            "apiKey": {"type": "http", "scheme": "bearer", "bearerFormat": "nb_live_... or nb_test_...",
                       "description": "from POST /v1/keys; `nb_test_` keys never call Gemini"},
        },
    },
}

if __name__ == "__main__":
    import sys

    path = Path(__file__).resolve().parents[1] / "src" / "openapi.json"
    text = json.dumps(DOCUMENT, separators=(",", ":")) + "\n"  # compact: it is embedded in the wasm
    if "--check" in sys.argv:
        if path.read_text() != text:
            sys.exit("src/openapi.json is stale: run python3 scripts/openapi.py")
        print("src/openapi.json is up to date")
    else:
        path.write_text(text)
        print(f"wrote {path}")
