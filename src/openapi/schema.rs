//! Schemas for string fields whose Rust type is a plain `String` but whose form is fixed:
//! timestamps, dates, ids. Used by `#[schemars(schema_with = ...)]` on the response types
//! (test builds only: schemars never reaches the wasm). A leaf: it imports nothing of the
//! crate, so every feature may use it. Schemas of a feature's own values (sizes, error
//! codes) live with the feature.

use schemars::{json_schema, Schema, SchemaGenerator};

pub fn timestamp(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "format": "date-time", "description": "UTC, ISO-8601 with milliseconds"})
}

pub fn optional_timestamp(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": ["string", "null"], "format": "date-time", "description": "UTC, ISO-8601 with milliseconds"})
}

pub fn date(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "format": "date", "description": "UTC day, YYYY-MM-DD"})
}

pub fn uuid(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "format": "uuid"})
}

pub fn generation_id(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "pattern": "^gen_[0-9a-f-]{36}$"})
}

pub fn optional_generation_id(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": ["string", "null"], "pattern": "^gen_[0-9a-f-]{36}$"})
}

pub fn key_prefix(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "minLength": 12, "maxLength": 12,
                  "description": "the first 12 characters of the key (`nb_live_1a2b`)"})
}

pub fn full_api_key(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "pattern": "^nb_(live|test)_[0-9a-f]{32}$",
                  "description": "the full key, shown only here"})
}

pub fn image_mime_type(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "enum": ["image/png", "image/jpeg", "image/webp"]})
}
