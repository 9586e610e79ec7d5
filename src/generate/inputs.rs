//! Reference images a generation is made from: editing, composition, iterating on a result.
//!
//! A request names its inputs in one of three forms (the `images` array of
//! `POST /v1/generate`, or the files of `POST /v1/images/edits`): bytes sent inline
//! (`{b64_json, mime_type}`, a `data:` URL, or a multipart file), or an image this account
//! generated earlier (`{generation_id, index}`), read back from R2. Parsing is pure and
//! checks what it can without I/O; the engine then reads the earlier images (one D1 round
//! trip for all of them, then R2) and applies the limits that need their bytes. Pure.
//!
//! Limits, each a 4xx whose `param` names the input (`images[2]`): PNG, JPEG or WebP by
//! their magic bytes (a declared type must agree); at most [`MAX_INPUT_BYTES`] each and
//! [`MAX_INPUTS_TOTAL_BYTES`] together, decoded; at most the model's
//! `max_input_images` (checked by the request parser).

use crate::error::{ApiError, ApiResult, Code};
use base64::Engine;
use hmac_sha256::Hash as Sha256;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// One input's decoded bytes, at most (Gemini's limit for an inline image).
pub const MAX_INPUT_BYTES: usize = 7_000_000;
/// All inputs together, decoded (Gemini's inline request limit).
pub const MAX_INPUTS_TOTAL_BYTES: usize = 20_000_000;
/// The body limit of the generation routes: every input's bytes as base64, plus 1 MiB for
/// the rest of the request (the prompt, field names, JSON or multipart framing).
pub const GENERATION_BODY_LIMIT: usize = MAX_INPUTS_TOTAL_BYTES / 3 * 4 + 4 + 1024 * 1024;
// Checked when compiling: the limit fits every input as base64 with room for the rest, and
// stays a bounded buffer.
const _: () = assert!(
    GENERATION_BODY_LIMIT >= MAX_INPUTS_TOTAL_BYTES.div_ceil(3) * 4 + 64 * 1024
        && GENERATION_BODY_LIMIT < 30 * 1024 * 1024
);
/// An `images` array longer than this is refused before anything in it is decoded (no
/// model takes more; the model's own maximum is checked after).
const MAX_LISTED_INPUTS: usize = 64;

/// An input as the request gave it.
#[derive(Debug, PartialEq)]
pub enum InputSpec {
    /// Bytes sent with the request, already checked (type and size).
    Inline(Input),
    /// An image this account generated earlier, to be read from R2.
    Generation { generation_id: String, index: u32 },
}

/// An input's bytes, ready to send upstream.
#[derive(Debug, PartialEq)]
pub struct Input {
    pub mime_type: &'static str,
    pub bytes: Vec<u8>,
    pub record: InputRecord,
}

/// What a generation was made from, as stored with it (never the bytes) and shown in
/// history: the source generation and index of an earlier image, or the digest of bytes
/// that were sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct InputRecord {
    /// `generation` (an earlier image of this account) or `upload` (bytes in the request).
    #[cfg_attr(test, schemars(schema_with = "input_kind_schema"))]
    pub source: String,
    /// The source generation, for `generation` inputs.
    pub generation_id: Option<String>,
    /// The image's index in the source generation.
    pub index: Option<u32>,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    pub bytes: u64,
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::image_mime_type"))]
    pub mime_type: String,
    /// Pixels, as the image's header declares them.
    pub width: Option<u32>,
    pub height: Option<u32>,
}

#[cfg(test)]
fn input_kind_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": ["generation", "upload"]})
}

impl Input {
    /// Checks bytes sent as input `position`: a PNG, JPEG or WebP by its magic bytes (the
    /// `declared` type, if any, must agree), at most [`MAX_INPUT_BYTES`].
    pub fn from_upload(position: usize, declared: Option<&str>, bytes: Vec<u8>) -> ApiResult<Input> {
        let param = param(position);
        if bytes.len() > MAX_INPUT_BYTES {
            return Err(too_large(
                &param,
                format!("{param} is {} bytes; an input may be at most {MAX_INPUT_BYTES} bytes", bytes.len()),
            ));
        }
        let mime_type = crate::media::sniff(&bytes).ok_or_else(|| {
            invalid_image(&param, format!("{param} is not a PNG, JPEG or WebP image (judged by its bytes)"))
        })?;
        if let Some(declared) = declared.map(|d| d.trim().to_ascii_lowercase()) {
            let agrees = declared == mime_type || (declared == "image/jpg" && mime_type == "image/jpeg");
            if !agrees {
                return Err(invalid_image(
                    &param,
                    format!("{param} is declared {declared} but its bytes are {mime_type}"),
                ));
            }
        }
        let record = InputRecord::of(&bytes, mime_type, None);
        Ok(Input { mime_type, bytes, record })
    }
}

impl InputRecord {
    fn of(bytes: &[u8], mime_type: &str, source: Option<(&str, u32)>) -> InputRecord {
        let (width, height) = crate::media::dimensions(bytes).unzip();
        InputRecord {
            source: if source.is_some() { "generation" } else { "upload" }.into(),
            generation_id: source.map(|(id, _)| id.to_string()),
            index: source.map(|(_, index)| index),
            sha256: hex::encode(Sha256::hash(bytes)),
            bytes: bytes.len() as u64,
            mime_type: mime_type.into(),
            width,
            height,
        }
    }
}

/// `images[i]`, the param of input `i`.
pub fn param(position: usize) -> String {
    format!("images[{position}]")
}

fn invalid_image(param: &str, message: String) -> ApiError {
    ApiError::validation(Code::InvalidImage, param, message)
}

fn too_large(param: &str, message: String) -> ApiError {
    ApiError::validation(Code::ImageTooLarge, param, message)
}

/// The `images` field of a JSON request as a tree: absent, null or `[]` is no inputs. The
/// same as [`parse_raw`], which is what the route uses.
pub fn parse_json(value: Option<Value>) -> ApiResult<Vec<InputSpec>> {
    let text = value.map(|value| value.to_string());
    let raw = text.as_deref().map(serde_json::from_str::<&RawValue>).transpose().map_err(|_| not_an_array())?;
    parse_raw(raw)
}

/// The `images` field from its raw JSON text, as `/v1/generate` reads it. Nothing is
/// built for more than [`MAX_LISTED_INPUTS`] items (the count is checked while the array
/// is read), and each item is decoded and dropped in turn, so the base64 of all the inputs
/// is never copied out of the request body at once.
pub fn parse_raw(value: Option<&RawValue>) -> ApiResult<Vec<InputSpec>> {
    crate::body::asked::record("images");
    let Some(value) = value else { return Ok(Vec::new()) };
    let items = list_items(value.get())?;
    let mut total = 0;
    let mut specs = Vec::with_capacity(items.len());
    // Each item is dropped as soon as it is decoded: its base64 text and its bytes never
    // live side by side for more than one input.
    for (position, item) in items.into_iter().enumerate() {
        let spec = parse_item(position, item)?;
        if let InputSpec::Inline(input) = &spec {
            total += input.bytes.len();
            check_total(position, total)?;
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// The items of the `images` array, borrowed; null is none. Reading stops at the first item
/// past [`MAX_LISTED_INPUTS`] (`[0,0,0,...]` of 26 MB would otherwise be a list of 13
/// million).
fn list_items(text: &str) -> ApiResult<Vec<&RawValue>> {
    use serde::de::DeserializeSeed;
    let too_many = std::cell::Cell::new(false);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let items = ItemsSeed { too_many: &too_many }.deserialize(&mut deserializer);
    match items {
        Ok(items) => Ok(items.unwrap_or_default()),
        Err(_) if too_many.get() => Err(ApiError::validation(
            Code::UnsupportedByModel,
            "images",
            format!("images lists more than {MAX_LISTED_INPUTS} inputs; no model takes more"),
        )),
        Err(_) => Err(not_an_array()),
    }
}

struct ItemsSeed<'s> {
    too_many: &'s std::cell::Cell<bool>,
}

impl<'de> serde::de::DeserializeSeed<'de> for ItemsSeed<'_> {
    type Value = Option<Vec<&'de RawValue>>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ItemsSeed<'_> {
    type Value = Option<Vec<&'de RawValue>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = access.next_element::<&'de RawValue>()? {
            if items.len() == MAX_LISTED_INPUTS {
                self.too_many.set(true);
                return Err(serde::de::Error::custom("too many items"));
            }
            items.push(item);
        }
        Ok(Some(items))
    }
}

fn not_an_array() -> ApiError {
    ApiError::validation(Code::InvalidType, "images", "images must be an array")
}

/// Inputs together may not pass [`MAX_INPUTS_TOTAL_BYTES`]; `position` crossed it.
pub fn check_total(position: usize, total: usize) -> ApiResult<()> {
    if total > MAX_INPUTS_TOTAL_BYTES {
        let param = param(position);
        return Err(too_large(
            &param,
            format!("the inputs up to {param} come to {total} bytes; together they may be at most {MAX_INPUTS_TOTAL_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// The fields of one item other than `b64_json` may take this many bytes of JSON: a
/// generation id, an index and a type are a few dozen.
const ITEM_FIELDS_LIMIT: usize = 1024;

fn parse_item(position: usize, item: &RawValue) -> ApiResult<InputSpec> {
    let param = param(position);
    let wrong_shape = || {
        ApiError::validation(
            Code::InvalidType,
            &param,
            format!("{param} must be a data: URL, {{b64_json, mime_type}} or {{generation_id, index}}"),
        )
    };
    let (mut fields, b64) = match item.get().as_bytes().first() {
        Some(b'"') => {
            let url: String = serde_json::from_str(item.get()).map_err(|_| wrong_shape())?;
            return parse_data_url(position, &url).map(InputSpec::Inline);
        }
        Some(b'{') => crate::body::split_object(item.get().as_bytes(), "b64_json", ITEM_FIELDS_LIMIT).map_err(
            |why| match why {
                crate::body::Split::TooLarge(name) => invalid_image(
                    &format!("{param}.{name}"),
                    format!("{param}'s fields besides b64_json may take at most {ITEM_FIELDS_LIMIT} bytes"),
                ),
                _ => wrong_shape(),
            },
        )?,
        // Nothing else is an input; no tree is built to say so.
        _ => return Err(wrong_shape()),
    };
    let text = |fields: &mut serde_json::Map<String, Value>, name: &str| match fields.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::validation(
            Code::InvalidType,
            format!("{param}.{name}"),
            format!("{param}.{name} must be a string"),
        )),
    };
    let b64: Option<String> = match b64 {
        None => None,
        Some(raw) => serde_json::from_str(raw.get()).map_err(|_| {
            ApiError::validation(
                Code::InvalidType,
                format!("{param}.b64_json"),
                format!("{param}.b64_json must be a string"),
            )
        })?,
    };
    let mime_type = text(&mut fields, "mime_type")?;
    let generation_id = text(&mut fields, "generation_id")?;
    let index = match fields.remove("index") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
            ApiError::validation(Code::OutOfRange, format!("{param}.index"), format!("{param}.index must be 0 or more"))
        })?),
        Some(_) => {
            return Err(ApiError::validation(
                Code::InvalidType,
                format!("{param}.index"),
                format!("{param}.index must be an integer"),
            ))
        }
    };
    if let Some(unknown) = fields.keys().next() {
        return Err(ApiError::validation(
            Code::UnknownParameter,
            format!("{param}.{unknown}"),
            format!("unknown parameter: {param}.{unknown}"),
        ));
    }
    match (b64, generation_id) {
        (Some(_), Some(_)) => Err(ApiError::validation(
            Code::ConflictingParameters,
            &param,
            format!("{param} gives both b64_json and generation_id; give one"),
        )),
        (Some(b64), None) => {
            if index.is_some() {
                return Err(ApiError::validation(
                    Code::UnknownParameter,
                    format!("{param}.index"),
                    format!("{param}.index goes with generation_id, not b64_json"),
                ));
            }
            let bytes = decode_base64(&param, &b64)?;
            drop(b64);
            Input::from_upload(position, mime_type.as_deref(), bytes).map(InputSpec::Inline)
        }
        (None, Some(generation_id)) => {
            if mime_type.is_some() {
                return Err(ApiError::validation(
                    Code::UnknownParameter,
                    format!("{param}.mime_type"),
                    format!("{param}.mime_type goes with b64_json, not generation_id"),
                ));
            }
            Ok(InputSpec::Generation { generation_id, index: index.unwrap_or(0) })
        }
        (None, None) => Err(ApiError::validation(
            Code::InvalidImage,
            &param,
            format!("{param} needs b64_json (with mime_type) or generation_id (with index)"),
        )),
    }
}

/// `data:image/png;base64,....`: the declared type must be an accepted image type.
fn parse_data_url(position: usize, url: &str) -> ApiResult<Input> {
    let param = param(position);
    let malformed = || invalid_image(&param, format!("{param} must be a data: URL like data:image/png;base64,..."));
    let rest = url.strip_prefix("data:").ok_or_else(malformed)?;
    let (header, data) = rest.split_once(',').ok_or_else(malformed)?;
    let declared = header.strip_suffix(";base64").ok_or_else(malformed)?;
    // Parameters between the type and `;base64` (a charset, a name) are ignored.
    let declared = declared.split(';').next().unwrap_or_default();
    let bytes = decode_base64(&param, data)?;
    Input::from_upload(position, Some(declared).filter(|d| !d.is_empty()), bytes)
}

fn decode_base64(param: &str, text: &str) -> ApiResult<Vec<u8>> {
    // Refuse what cannot fit before decoding it.
    if text.len() / 4 * 3 > MAX_INPUT_BYTES + 3 {
        return Err(too_large(param, format!("{param} is over {MAX_INPUT_BYTES} bytes; an input may be at most that")));
    }
    base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .map_err(|_| invalid_image(param, format!("{param} is not valid base64")))
}

/// What the idempotency fingerprint hashes for the inputs: their digests, not their
/// base64 text (which is hashed once already, into the record).
pub fn fingerprint_parts(specs: &[InputSpec]) -> Vec<String> {
    specs
        .iter()
        .map(|spec| match spec {
            InputSpec::Inline(input) => format!("upload:{}", input.record.sha256),
            InputSpec::Generation { generation_id, index } => format!("generation:{generation_id}:{index}"),
        })
        .collect()
}

/// One seed from every input's digest, in order, for the synthetic provider: the same
/// inputs give the same picture, a different input a different one.
pub fn digest(records: &[InputRecord]) -> Option<[u8; 32]> {
    if records.is_empty() {
        return None;
    }
    let mut hasher = Sha256::new();
    for record in records {
        hasher.update(record.sha256.as_bytes());
        hasher.update(b"\n");
    }
    Some(hasher.finalize())
}

/// The records of a generation's inputs, as stored (NULL: none).
pub fn parse_records(stored: Option<&str>) -> Vec<InputRecord> {
    // Read through serde_json's Value (in the wasm anyway) rather than a derived
    // Deserialize: the records are ours, written by `Serialize` above.
    let Some(Ok(Value::Array(items))) = stored.map(serde_json::from_str::<Value>) else { return Vec::new() };
    let text = |item: &Value, name: &str| item.get(name).and_then(Value::as_str).map(str::to_string);
    let number = |item: &Value, name: &str| item.get(name).and_then(Value::as_u64);
    let small = |item: &Value, name: &str| number(item, name).and_then(|n| u32::try_from(n).ok());
    items
        .iter()
        .map(|item| InputRecord {
            source: text(item, "source").unwrap_or_default(),
            generation_id: text(item, "generation_id"),
            index: small(item, "index"),
            sha256: text(item, "sha256").unwrap_or_default(),
            bytes: number(item, "bytes").unwrap_or(0),
            mime_type: text(item, "mime_type").unwrap_or_default(),
            width: small(item, "width"),
            height: small(item, "height"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x08\x08\x02\0\0\0";
    const JPEG: &[u8] = &[0xff, 0xd8, 0xff, 0xe0, 0, 0x10, b'J', b'F', b'I', b'F'];

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn err(value: Value) -> (u16, &'static str, Option<String>) {
        let err = parse_json(Some(value)).unwrap_err();
        (err.status(), err.code.as_str(), err.param.clone())
    }

    #[test]
    fn each_form_parses_in_order() {
        let specs = parse_json(Some(json!([
            format!("data:image/png;base64,{}", b64(PNG)),
            {"b64_json": b64(JPEG), "mime_type": "image/jpeg"},
            {"generation_id": "gen_abc", "index": 2},
            {"generation_id": "gen_def"},
            {"b64_json": b64(PNG)},
        ])))
        .unwrap();
        assert_eq!(specs.len(), 5);
        let InputSpec::Inline(first) = &specs[0] else { panic!() };
        assert_eq!((first.mime_type, first.bytes.as_slice()), ("image/png", PNG));
        assert_eq!((first.record.width, first.record.height), (Some(16), Some(8)));
        assert_eq!(first.record.sha256, hex::encode(Sha256::hash(PNG)));
        assert_eq!((first.record.source.as_str(), first.record.bytes), ("upload", PNG.len() as u64));
        assert!(matches!(&specs[1], InputSpec::Inline(i) if i.mime_type == "image/jpeg"));
        assert_eq!(specs[2], InputSpec::Generation { generation_id: "gen_abc".into(), index: 2 });
        assert_eq!(specs[3], InputSpec::Generation { generation_id: "gen_def".into(), index: 0 });
        assert_eq!(parse_json(None).unwrap(), vec![]);
        assert_eq!(parse_json(Some(json!([]))).unwrap(), vec![]);
        // Read from the raw body as the handler reads it: the same inputs.
        let body = json!({"prompt": "x", "images": [format!("data:image/png;base64,{}", b64(PNG)), {"generation_id": "gen_abc", "index": 2}]}).to_string();
        let (_, raw) = crate::body::parse_object_keeping(body.as_bytes(), 1 << 20, "images").unwrap();
        let from_raw = parse_raw(raw).unwrap();
        assert_eq!((from_raw.len(), &from_raw[1]), (2, &specs[2]));
        assert!(matches!(&from_raw[0], InputSpec::Inline(i) if i.bytes == PNG));
        for (body, expected) in
            [(r#"{"images": null}"#, Ok(0)), (r#"{"images": "x"}"#, Err("invalid_type")), (r#"{}"#, Ok(0))]
        {
            let (_, raw) = crate::body::parse_object_keeping(body.as_bytes(), 1 << 20, "images").unwrap();
            assert_eq!(parse_raw(raw).map(|s| s.len()).map_err(|e| e.code.as_str()), expected, "{body}");
        }
    }

    #[test]
    fn bytes_are_judged_by_their_magic_and_must_agree_with_the_declared_type() {
        let svg = b64(b"<svg onload='x'/>");
        assert_eq!(
            err(json!([{"b64_json": svg, "mime_type": "image/png"}])),
            (400, "invalid_image", Some("images[0]".into()))
        );
        assert_eq!(
            err(json!([{"b64_json": b64(PNG)}, {"b64_json": b64(JPEG), "mime_type": "image/png"}])),
            (400, "invalid_image", Some("images[1]".into()))
        );
        assert_eq!(err(json!([format!("data:image/webp;base64,{}", b64(PNG))])).1, "invalid_image");
        assert_eq!(err(json!(["https://example.com/a.png"])).1, "invalid_image");
        assert_eq!(err(json!(["data:image/png,rawbytes"])).1, "invalid_image");
        assert_eq!(err(json!([{"b64_json": "!!!not base64"}])).1, "invalid_image");
        assert!(parse_json(Some(json!([{"b64_json": b64(JPEG), "mime_type": "image/jpg"}]))).is_ok());
    }

    #[test]
    fn shapes_that_are_wrong_name_the_input() {
        assert_eq!(err(json!("data:x")), (422, "invalid_type", Some("images".into())));
        assert_eq!(err(json!([3])), (422, "invalid_type", Some("images[0]".into())));
        assert_eq!(
            err(json!([{"b64_json": b64(PNG), "generation_id": "gen_x"}])),
            (422, "conflicting_parameters", Some("images[0]".into()))
        );
        assert_eq!(err(json!([{"url": "x"}])), (422, "unknown_parameter", Some("images[0].url".into())));
        assert_eq!(
            err(json!([{"generation_id": "gen_x", "index": -1}])),
            (422, "out_of_range", Some("images[0].index".into()))
        );
        assert_eq!(err(json!([{"generation_id": 7}])), (422, "invalid_type", Some("images[0].generation_id".into())));
        assert_eq!(err(json!([{}])), (400, "invalid_image", Some("images[0]".into())));
        assert_eq!(
            err(json!(vec![json!({"generation_id": "g"}); 65])),
            (422, "unsupported_by_model", Some("images".into()))
        );
    }

    #[test]
    fn sizes_are_limited_per_input_and_together() {
        let mut big = PNG.to_vec();
        big.resize(MAX_INPUT_BYTES + 1, 0);
        assert_eq!(err(json!([{"b64_json": b64(&big)}])), (422, "image_too_large", Some("images[0]".into())));
        let mut six = PNG.to_vec();
        six.resize(6_000_000, 0);
        let four: Vec<Value> = (0..4).map(|_| json!({"b64_json": b64(&six)})).collect();
        assert_eq!(err(Value::Array(four)), (422, "image_too_large", Some("images[3]".into())));
        let three: Vec<Value> = (0..3).map(|_| json!({"b64_json": b64(&six)})).collect();
        assert!(parse_json(Some(Value::Array(three))).is_ok());
    }

    #[test]
    fn the_synthetic_seed_follows_every_input() {
        let record = |sha: &str| InputRecord { sha256: sha.into(), ..InputRecord::of(PNG, "image/png", None) };
        assert_eq!(digest(&[]), None);
        assert_eq!(digest(&[record("a"), record("b")]), digest(&[record("a"), record("b")]));
        assert_ne!(digest(&[record("a"), record("b")]), digest(&[record("b"), record("a")]));
        assert_ne!(digest(&[record("a")]), digest(&[record("a"), record("b")]));
    }
}
