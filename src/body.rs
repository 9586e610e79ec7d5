//! JSON request bodies: content type, size, syntax, and typed field extraction that names
//! the offending field in `param`.
//!
//! Rules (documented in the README): a JSON route takes `Content-Type: application/json`
//! (or none); 64 KiB at most; an empty body is `{}`; the top level must be an object; a
//! field of the wrong type or out of range is 422; a field the route does not know is 422
//! `unknown_parameter` (400 on the OpenAI-compatible route, as OpenAI does).

use crate::error::{ApiError, Code};
use serde_json::{Map, Value};

pub const JSON_BODY_LIMIT: usize = 64 * 1024;

/// Accepts `application/json` (any parameters) and `application/*+json`; a missing header
/// is taken as JSON, which is what curl-less clients and SDKs mean.
pub fn check_content_type(content_type: Option<&str>) -> Result<(), ApiError> {
    let Some(content_type) = content_type else {
        return Ok(());
    };
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let is_json = essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"));
    if is_json || essence.is_empty() {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type())
    }
}

/// Parses the raw body into a JSON object.
pub fn parse_object(raw: &[u8]) -> Result<JsonObject, ApiError> {
    if raw.len() > JSON_BODY_LIMIT {
        return Err(ApiError::payload_too_large(JSON_BODY_LIMIT));
    }
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(JsonObject::default());
    }
    match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(map)) => Ok(JsonObject { map }),
        Ok(_) => Err(not_an_object()),
        Err(err) => Err(not_json(&err)),
    }
}

fn not_an_object() -> ApiError {
    ApiError::invalid_json("the request body must be a JSON object")
}

fn not_json(err: &serde_json::Error) -> ApiError {
    ApiError::invalid_json(format!("the request body is not valid JSON (line {}, column {})", err.line(), err.column()))
}

/// Parses the raw body into a JSON object of at most `limit` bytes, except field `kept`,
/// which is returned as its raw JSON text, borrowed from `raw`: a field of megabytes (the
/// images of a generation) is never copied into the tree.
pub fn parse_object_keeping<'a>(
    raw: &'a [u8],
    limit: usize,
    kept: &str,
) -> Result<(JsonObject, Option<&'a serde_json::value::RawValue>), ApiError> {
    use serde_json::value::RawValue;
    if raw.len() > limit {
        return Err(ApiError::payload_too_large(limit));
    }
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok((JsonObject::default(), None));
    }
    let fields: std::collections::BTreeMap<String, &RawValue> = match serde_json::from_slice(raw) {
        Ok(fields) => fields,
        // Valid JSON, but not an object.
        Err(err) if err.classify() == serde_json::error::Category::Data => return Err(not_an_object()),
        Err(err) => return Err(not_json(&err)),
    };
    let mut object = JsonObject::default();
    let mut kept_value = None;
    for (name, value) in fields {
        if name == kept {
            kept_value = Some(value);
        } else {
            // Already checked as JSON: this cannot fail.
            let value = serde_json::from_str(value.get()).unwrap_or(Value::Null);
            object.map.insert(name, value);
        }
    }
    Ok((object, kept_value))
}

/// A JSON object whose fields are taken one by one; what is left over is unknown.
#[derive(Debug, Default, Clone)]
pub struct JsonObject {
    map: Map<String, Value>,
}

impl JsonObject {
    /// A string field; absent or null is None.
    pub fn optional_str(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        asked::record(name);
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(wrong_type(name, "a string")),
        }
    }

    /// A string field that must be present; `missing_code` names the error (`prompt_required`).
    pub fn required_str(&mut self, name: &str, missing_code: Code) -> Result<String, ApiError> {
        self.optional_str(name)?.ok_or_else(|| ApiError::validation(missing_code, name, format!("{name} is required")))
    }

    /// A non-negative integer field within `range`; absent or null is None.
    pub fn optional_u32(&mut self, name: &str, range: std::ops::RangeInclusive<u32>) -> Result<Option<u32>, ApiError> {
        asked::record(name);
        let value = match self.map.remove(name) {
            None | Some(Value::Null) => return Ok(None),
            Some(value) => value,
        };
        let out_of_range = || {
            ApiError::validation(
                Code::OutOfRange,
                name,
                format!("{name} must be an integer from {} to {}", range.start(), range.end()),
            )
        };
        match value {
            Value::Number(n) => match n.as_u64() {
                Some(v) => u32::try_from(v).ok().filter(|v| range.contains(v)).map(Some).ok_or_else(out_of_range),
                None if n.is_i64() => Err(out_of_range()),
                None => Err(wrong_type(name, "an integer")),
            },
            _ => Err(wrong_type(name, "an integer")),
        }
    }

    /// A field's raw value, for a parser of its own (`generate::inputs`); absent is None.
    pub fn take(&mut self, name: &str) -> Option<Value> {
        asked::record(name);
        self.map.remove(name)
    }

    /// Sets a field, as a form field read from a multipart body.
    pub fn insert(&mut self, name: String, value: Value) -> Option<Value> {
        self.map.insert(name, value)
    }

    /// A boolean field; absent or null is None.
    pub fn optional_bool(&mut self, name: &str) -> Result<Option<bool>, ApiError> {
        asked::record(name);
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(wrong_type(name, "true or false")),
        }
    }

    /// An integer field where null means something (clear it): absent is None, null is
    /// `Some(None)`.
    pub fn nullable_u32(
        &mut self,
        name: &str,
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<Option<Option<u32>>, ApiError> {
        match self.map.get(name) {
            Some(Value::Null) => {
                asked::record(name);
                self.map.remove(name);
                Ok(Some(None))
            }
            _ => Ok(self.optional_u32(name, range)?.map(Some)),
        }
    }

    /// The remaining fields as JSON with sorted keys (serde_json's map is ordered), so two
    /// bodies that differ only in formatting or key order serialise the same.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(&self.map).unwrap_or_default()
    }

    /// Drops a field the route accepts but does not act on (OpenAI's optional hints).
    pub fn ignore(&mut self, name: &str) {
        asked::record(name);
        self.map.remove(name);
    }

    /// Fails on the first field nobody took: 422 `unknown_parameter`.
    pub fn finish(self) -> Result<(), ApiError> {
        self.finish_with(Code::UnknownParameter)
    }

    /// Fails on the first field nobody took, with `code` (OpenAI's route answers 400).
    pub fn finish_with(self, code: Code) -> Result<(), ApiError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(name) => Err(ApiError::validation(code, name, format!("unknown parameter: {name}"))),
        }
    }
}

/// Which fields a parser asked for, so a test can hold the documented request properties
/// against what the parser really reads (`openapi::document`). Nothing is kept outside tests.
pub mod asked {
    #[cfg(test)]
    thread_local! {
        static ASKED: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    #[cfg(test)]
    pub fn record(name: &str) {
        ASKED.with(|asked| asked.borrow_mut().push(name.to_string()));
    }

    #[cfg(not(test))]
    pub fn record(_: &str) {}

    /// The fields asked for on this thread since the last call, in order.
    #[cfg(test)]
    pub fn take() -> Vec<String> {
        ASKED.with(|asked| std::mem::take(&mut *asked.borrow_mut()))
    }
}

fn wrong_type(name: &str, expected: &str) -> ApiError {
    ApiError::validation(Code::InvalidType, name, format!("{name} must be {expected}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(raw: &str) -> JsonObject {
        parse_object(raw.as_bytes()).unwrap()
    }

    #[test]
    fn content_types() {
        for ok in [
            None,
            Some("application/json"),
            Some("application/json; charset=utf-8"),
            Some("Application/JSON"),
            Some("application/merge-patch+json"),
        ] {
            assert!(check_content_type(ok).is_ok(), "{ok:?}");
        }
        for bad in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
            assert_eq!(check_content_type(Some(bad)).unwrap_err().status(), 415, "{bad}");
        }
    }

    #[test]
    fn body_syntax_errors_are_400_invalid_json() {
        for bad in ["{", "nul", "{\"a\":1,}", "\u{0}"] {
            let err = parse_object(bad.as_bytes()).unwrap_err();
            assert_eq!((err.status(), err.code.as_str()), (400, "invalid_json"), "{bad}");
        }
        for not_object in ["[]", "\"x\"", "1", "null"] {
            let err = parse_object(not_object.as_bytes()).unwrap_err();
            assert_eq!(err.message, "the request body must be a JSON object");
        }
    }

    #[test]
    fn empty_body_is_an_empty_object() {
        assert!(parse_object(b"").unwrap().finish().is_ok());
        assert!(parse_object(b"  \n").unwrap().finish().is_ok());
    }

    #[test]
    fn oversized_body_is_413() {
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(JSON_BODY_LIMIT));
        assert_eq!(parse_object(big.as_bytes()).unwrap_err().status(), 413);
    }

    #[test]
    fn typed_fields_name_their_param() {
        let mut o = obj(r#"{"name": 5, "n": "two", "m": 2.5, "k": -1, "big": 99999999999}"#);
        let err = o.optional_str("name").unwrap_err();
        assert_eq!((err.status(), err.code.as_str(), err.param.as_deref()), (422, "invalid_type", Some("name")));
        assert_eq!(o.optional_u32("n", 1..=4).unwrap_err().code.as_str(), "invalid_type");
        assert_eq!(o.optional_u32("m", 1..=4).unwrap_err().code.as_str(), "invalid_type");
        assert_eq!(o.optional_u32("k", 1..=4).unwrap_err().code.as_str(), "out_of_range");
        assert_eq!(o.optional_u32("big", 1..=4).unwrap_err().code.as_str(), "out_of_range");
    }

    #[test]
    fn required_and_null_fields() {
        let mut o = obj(r#"{"prompt": null}"#);
        let err = o.required_str("prompt", Code::PromptRequired).unwrap_err();
        assert_eq!((err.status(), err.code.as_str()), (422, "prompt_required"));
        assert_eq!(obj("{}").optional_u32("n", 1..=4).unwrap(), None);
        assert_eq!(obj(r#"{"n": 3}"#).optional_u32("n", 1..=4).unwrap(), Some(3));
    }

    #[test]
    fn leftover_fields_are_unknown_parameters() {
        let mut o = obj(r#"{"name": "a", "colour": "red"}"#);
        o.optional_str("name").unwrap();
        let err = o.finish().unwrap_err();
        assert_eq!((err.status(), err.code.as_str(), err.param.as_deref()), (422, "unknown_parameter", Some("colour")));

        let mut o = obj(r#"{"quality": "hd"}"#);
        o.ignore("quality");
        assert!(o.finish().is_ok());
    }
}
