//! JSON request bodies: content type, size, syntax, and typed field extraction that names
//! the offending field in `param`.
//!
//! Rules (documented in the README): a JSON route takes `Content-Type: application/json`
//! (or none); 64 KiB at most; an empty body is `{}`; the top level must be an object; a
//! field of the wrong type or out of range is 422; a field the route does not know is 422
//! `unknown_parameter` (400 on the OpenAI-compatible route, as OpenAI does).

use crate::error::{ApiError, Code};
use crate::metering::Micros;
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

/// Parses the raw body (at most `limit` bytes) into a JSON object, except field `kept`,
/// which is returned as its raw JSON text, borrowed from `raw`: a field of megabytes (the
/// images of a generation) is never copied into the tree. The other fields together may
/// take [`JSON_BODY_LIMIT`] bytes, as on any JSON route, checked as each one is read: no
/// tree is built for a body that only looks like a big image request.
pub fn parse_object_keeping<'a>(
    raw: &'a [u8],
    limit: usize,
    kept: &str,
) -> Result<(JsonObject, Option<&'a serde_json::value::RawValue>), ApiError> {
    if raw.len() > limit {
        return Err(ApiError::payload_too_large(limit));
    }
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok((JsonObject::default(), None));
    }
    match split_object(raw, kept, JSON_BODY_LIMIT) {
        Ok((map, kept)) => Ok((JsonObject { map }, kept)),
        Err(Split::NotAnObject) => Err(not_an_object()),
        Err(Split::Syntax(err)) => Err(not_json(&err)),
        Err(Split::TooDeep) => Err(ApiError::invalid_json(format!(
            "the request body nests arrays and objects more than {MAX_NESTING} deep"
        ))),
        Err(Split::TooLarge(field)) => Err(ApiError::new(
            Code::PayloadTooLarge,
            format!(
                "the fields other than {kept} may take at most {JSON_BODY_LIMIT} bytes together; {field} passes that"
            ),
        )
        .with_param(field)),
    }
}

/// How deep a body's arrays and objects may nest. A request is three levels deep.
pub const MAX_NESTING: usize = 32;

/// Whether `raw`'s arrays and objects nest at most `max` deep, judged in one pass over the
/// bytes with nothing allocated. serde_json skips a value it keeps as raw text by pushing
/// a byte per level, so `[[[[...` of 27 MB would cost 27 MB (twice, as the buffer grows).
pub fn nesting_within(raw: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut at = 0;
    while at < raw.len() {
        match raw[at] {
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'"' => {
                // Skip the string: to its closing quote, past escaped characters.
                at += 1;
                while at < raw.len() {
                    match raw[at] {
                        b'\\' => at += 1,
                        b'"' => break,
                        _ => {}
                    }
                    at += 1;
                }
            }
            _ => {}
        }
        at += 1;
    }
    true
}

/// Why [`split_object`] refused.
#[derive(Debug)]
pub enum Split {
    NotAnObject,
    /// Nested deeper than [`MAX_NESTING`].
    TooDeep,
    Syntax(serde_json::Error),
    /// This field's name and value took the others past their limit.
    TooLarge(String),
}

/// An object's field `kept` as raw text borrowed from `raw`, and every other field as a
/// tree, built only while their names and raw values together stay within `others_limit`
/// bytes. A tree costs a few dozen bytes per value of raw JSON (`[0,0,0,...]` is 32 bytes
/// an element), so without the limit a 26 MB body became 700 MB of wasm memory. Nothing
/// is allocated for the fields between the one that crosses the limit and the end.
pub fn split_object<'a>(
    raw: &'a [u8],
    kept: &str,
    others_limit: usize,
) -> Result<(Map<String, Value>, Option<&'a serde_json::value::RawValue>), Split> {
    use serde::de::DeserializeSeed;
    if !nesting_within(raw, MAX_NESTING) {
        return Err(Split::TooDeep);
    }
    let crossed = std::cell::RefCell::new(None);
    let seed = SplitSeed { kept, others_limit, crossed: &crossed };
    let mut deserializer = serde_json::Deserializer::from_slice(raw);
    let result = seed.deserialize(&mut deserializer).and_then(|split| deserializer.end().map(|()| split));
    match result {
        Ok(split) => Ok(split),
        Err(_) if crossed.borrow().is_some() => Err(Split::TooLarge(crossed.take().unwrap_or_default())),
        Err(err) if err.classify() == serde_json::error::Category::Data => Err(Split::NotAnObject),
        Err(err) => Err(Split::Syntax(err)),
    }
}

struct SplitSeed<'s> {
    kept: &'s str,
    others_limit: usize,
    /// Set to the field that crossed `others_limit` (serde's errors carry only text).
    crossed: &'s std::cell::RefCell<Option<String>>,
}

impl<'de> serde::de::DeserializeSeed<'de> for SplitSeed<'_> {
    type Value = (Map<String, Value>, Option<&'de serde_json::value::RawValue>);

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for SplitSeed<'_> {
    type Value = (Map<String, Value>, Option<&'de serde_json::value::RawValue>);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        let mut others = Map::new();
        let mut kept = None;
        let mut used = 0usize;
        while let Some(name) = access.next_key::<String>()? {
            let value: &'de serde_json::value::RawValue = access.next_value()?;
            if name == self.kept {
                kept = Some(value);
                continue;
            }
            used = used.saturating_add(name.len() + value.get().len());
            if used > self.others_limit {
                *self.crossed.borrow_mut() = Some(name);
                return Err(A::Error::custom("fields over their limit"));
            }
            // Valid JSON already, and small: this cannot fail.
            let value = serde_json::from_str(value.get()).unwrap_or(Value::Null);
            others.insert(name, value);
        }
        Ok((others, kept))
    }
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

    /// An amount of US dollars: a decimal string of at most six decimals (`"2.50"`) or a
    /// whole number, from 0 to `max`; absent is None, null is `Some(None)` (clear it).
    /// Never read through a float.
    pub fn nullable_usd(&mut self, name: &str, max: Micros) -> Result<Option<Option<Micros>>, ApiError> {
        asked::record(name);
        let amount = match self.map.remove(name) {
            None => return Ok(None),
            Some(Value::Null) => return Ok(Some(None)),
            Some(Value::String(text)) => Micros::parse(&text),
            Some(Value::Number(n)) if n.is_u64() => n.as_u64().and_then(|n| n.checked_mul(1_000_000)).map(Micros),
            Some(_) => return Err(wrong_type(name, "US dollars as a decimal string, such as \"2.50\"")),
        };
        amount.filter(|m| *m <= max).map(|m| Some(Some(m))).ok_or_else(|| {
            ApiError::validation(
                Code::OutOfRange,
                name,
                format!("{name} must be US dollars from 0 to {} with at most six decimals", max.to_decimal()),
            )
        })
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

    /// Writes the remaining fields as JSON with sorted keys (serde_json's map is ordered)
    /// into `out`, so two bodies that differ only in formatting or key order write the same.
    /// Streamed: a fingerprint hashes it without holding a second copy of the body.
    pub fn write_canonical(&self, out: impl std::io::Write) {
        // Writing to a hasher cannot fail, and a map of JSON values always serialises.
        let _ = serde_json::to_writer(out, &self.map);
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
    fn nesting_is_judged_outside_strings() {
        assert!(nesting_within(br#"{"a":[{"b":[]}]}"#, 4));
        assert!(!nesting_within(br#"{"a":[{"b":[[]]}]}"#, 4));
        assert!(nesting_within(br#"{"a":"[[[[[[\"[[[[["}"#, 1), "brackets in strings, escaped quotes");
        assert!(nesting_within(b"]]]]}}", 0), "unbalanced closers are for the parser to refuse");
    }

    #[test]
    fn the_kept_field_is_free_and_the_others_are_bounded() {
        let image = "A".repeat(JSON_BODY_LIMIT * 4);
        let raw = format!(r#"{{"prompt":"x","images":["{image}"]}}"#);
        let (mut fields, kept) = parse_object_keeping(raw.as_bytes(), usize::MAX, "images").unwrap();
        assert_eq!(kept.map(|k| k.get().len()), Some(image.len() + 4));
        assert_eq!(fields.optional_str("prompt").unwrap().as_deref(), Some("x"));

        let raw = format!(r#"{{"images":[],"prompt":"x","zz":"{}"}}"#, "y".repeat(JSON_BODY_LIMIT));
        let err = parse_object_keeping(raw.as_bytes(), usize::MAX, "images").unwrap_err();
        assert_eq!((err.status(), err.code.as_str(), err.param.as_deref()), (413, "payload_too_large", Some("zz")));

        let deep = format!(r#"{{"images":{}{}}}"#, "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING));
        let err = parse_object_keeping(deep.as_bytes(), usize::MAX, "images").unwrap_err();
        assert_eq!((err.status(), err.code.as_str()), (400, "invalid_json"));
        for (bad, code) in [("[1]", "invalid_json"), (r#"{"a":1} x"#, "invalid_json"), (r#"{"a":}"#, "invalid_json")] {
            let err = parse_object_keeping(bad.as_bytes(), usize::MAX, "images").unwrap_err();
            assert_eq!((err.status(), err.code.as_str()), (400, code), "{bad}");
        }
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
