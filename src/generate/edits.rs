//! `POST /v1/images/edits`: OpenAI's edits request, `multipart/form-data` with `image`
//! (one file) or `image[]` (several), `prompt`, `n`, `size`, `response_format`, `model`.
//! This module only turns the form into what `/v1/generate` parses (its fields as a JSON
//! object, its files as inputs); everything after is the one generation path.
//!
//! `mask` is refused with 400 `unsupported_parameter`: Gemini edits by instruction, not
//! by painting inside a mask.

use super::inputs::{self, Input, InputSpec};
use crate::body::{JsonObject, JSON_BODY_LIMIT};
use crate::error::{ApiError, ApiResult, Code};
use crate::multipart::{self, Part};
use serde_json::Value;

/// Why `mask` is refused, in the error message.
const NO_MASKS: &str = "mask is not supported: Gemini edits by instruction, so describe the change in the prompt \
                        (\"replace the sky with a sunset\") instead of painting a mask";

/// The form's boundary: anything but `multipart/form-data` is 415, refused before the body
/// is read.
pub fn boundary(content_type: Option<&str>) -> ApiResult<String> {
    content_type.and_then(multipart::boundary).ok_or_else(|| {
        ApiError::new(
            Code::UnsupportedMediaType,
            "this route takes multipart/form-data (with a boundary), as OpenAI's images.edit sends",
        )
    })
}

/// The form's text fields as a JSON object (`n` as a number when it is one) and its image
/// files as inputs, in order.
pub fn read_form(boundary: &str, body: &[u8]) -> ApiResult<(JsonObject, Vec<InputSpec>)> {
    from_parts(multipart::parse(body, boundary)?)
}

fn from_parts(parts: Vec<Part<'_>>) -> ApiResult<(JsonObject, Vec<InputSpec>)> {
    let mut fields = JsonObject::default();
    let mut files = Vec::new();
    let mut total = 0;
    let mut text_total = 0usize;
    for part in parts {
        match part.name.as_str() {
            "mask" => return Err(ApiError::new(Code::UnsupportedParameter, NO_MASKS).with_param("mask")),
            "image" | "image[]" => {
                let position = files.len();
                if part.filename.is_none() {
                    return Err(ApiError::validation(
                        Code::InvalidImage,
                        inputs::param(position),
                        "image must be a file (PNG, JPEG or WebP), not a text field",
                    ));
                }
                // Clients that cannot tell send application/octet-stream: the bytes decide.
                let declared = part.content_type.as_deref().filter(|t| t.starts_with("image/"));
                let input = Input::from_upload(position, declared, part.body.to_vec())?;
                total += input.bytes.len();
                inputs::check_total(position, total)?;
                files.push(InputSpec::Inline(input));
            }
            _ if part.filename.is_some() => {
                return Err(ApiError::validation(
                    Code::UnknownParameterOpenAi,
                    &part.name,
                    format!("unknown file parameter: {}", part.name),
                ))
            }
            _ => {
                // The text fields together are held to the JSON routes' limit before any is
                // copied: a 27 MB "prompt" is refused here, not after it is fingerprinted.
                text_total = text_total.saturating_add(part.name.len() + part.body.len());
                if text_total > JSON_BODY_LIMIT {
                    return Err(ApiError::new(
                        Code::PayloadTooLarge,
                        format!(
                            "the text fields may take at most {JSON_BODY_LIMIT} bytes together; {} passes that",
                            part.name
                        ),
                    )
                    .with_param(&part.name));
                }
                let text = String::from_utf8(part.body.to_vec()).map_err(|_| {
                    ApiError::new(Code::InvalidMultipart, format!("field {} is not UTF-8 text", part.name))
                })?;
                // A form carries only text: a whole number is a number, as JSON would send it.
                let value = match text.parse::<u64>() {
                    Ok(number) if part.name == "n" => Value::from(number),
                    _ => Value::String(text),
                };
                if fields.insert(part.name.clone(), value).is_some() {
                    return Err(ApiError::new(Code::InvalidMultipart, format!("field {} is given twice", part.name))
                        .with_param(&part.name));
                }
            }
        }
    }
    if files.is_empty() {
        return Err(ApiError::validation(
            Code::ImageRequired,
            "image",
            "at least one image file is required (image, or image[] for several)",
        ));
    }
    Ok((fields, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x04\0\0\0\x04\x08\x02\0\0\0";

    /// A form part: name, filename, content type, bytes.
    type FormPart<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [u8]);

    fn form(parts: &[FormPart]) -> Vec<u8> {
        let mut body = Vec::new();
        for (name, filename, content_type, data) in parts {
            body.extend_from_slice(b"--B\r\nContent-Disposition: form-data; name=\"");
            body.extend_from_slice(name.as_bytes());
            body.push(b'"');
            if let Some(filename) = filename {
                body.extend_from_slice(format!("; filename=\"{filename}\"").as_bytes());
            }
            if let Some(content_type) = content_type {
                body.extend_from_slice(format!("\r\nContent-Type: {content_type}").as_bytes());
            }
            body.extend_from_slice(b"\r\n\r\n");
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--B--\r\n");
        body
    }

    fn read(parts: &[FormPart]) -> ApiResult<(JsonObject, Vec<InputSpec>)> {
        read_form(&boundary(Some("multipart/form-data; boundary=B"))?, &form(parts))
    }

    #[test]
    fn fields_and_files_as_the_openai_sdk_sends_them() {
        let (mut fields, files) = read(&[
            ("image[]", Some("a.png"), Some("image/png"), PNG),
            ("image[]", Some("b.bin"), Some("application/octet-stream"), PNG),
            ("prompt", None, None, b"make it blue"),
            ("n", None, None, b"2"),
        ])
        .unwrap();
        assert_eq!(files.len(), 2);
        assert!(files.iter().all(|f| matches!(f, InputSpec::Inline(i) if i.mime_type == "image/png")));
        assert_eq!(fields.optional_str("prompt").unwrap().as_deref(), Some("make it blue"));
        assert_eq!(fields.optional_u32("n", 1..=4).unwrap(), Some(2));
        assert!(fields.finish().is_ok());
    }

    #[test]
    fn refusals_say_why() {
        let cases: Vec<(Vec<FormPart>, u16, &str, &str)> = vec![
            (
                vec![("image", Some("a.png"), None, PNG), ("mask", Some("m.png"), None, PNG)],
                400,
                "unsupported_parameter",
                "mask",
            ),
            (vec![("prompt", None, None, b"x")], 422, "image_required", "image"),
            (vec![("image", None, None, b"https://example.com/a.png")], 400, "invalid_image", "images[0]"),
            (vec![("image", Some("a.gif"), Some("image/gif"), b"GIF89a")], 400, "invalid_image", "images[0]"),
            (vec![("image", Some("a.png"), Some("image/jpeg"), PNG)], 400, "invalid_image", "images[0]"),
            (
                vec![("image", Some("a.png"), None, PNG), ("extra", Some("x.png"), None, PNG)],
                400,
                "unknown_parameter",
                "extra",
            ),
            (
                vec![("image", Some("a.png"), None, PNG), ("n", None, None, b"1"), ("n", None, None, b"2")],
                400,
                "invalid_multipart",
                "n",
            ),
        ];
        for (parts, status, code, param) in cases {
            let err = read(&parts).unwrap_err();
            assert_eq!(
                (err.status(), err.code.as_str(), err.param.as_deref()),
                (status, code, Some(param)),
                "{parts:?}"
            );
        }
        assert!(read(&[("mask", Some("m.png"), None, PNG)]).unwrap_err().message.contains("by instruction"));
        let json = boundary(Some("application/json")).unwrap_err();
        assert_eq!((json.status(), json.code.as_str()), (415, "unsupported_media_type"));
    }
}
