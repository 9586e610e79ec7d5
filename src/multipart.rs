//! `multipart/form-data` bodies (RFC 7578), for OpenAI's edits route. Pure: the body is
//! read whole (under the route's limit) by `http::read_body`, and every part is a slice of
//! it, so a file is never copied to be found.
//!
//! Bounded against hostile bodies: at most [`MAX_PARTS`] parts, part headers of at most
//! [`MAX_HEADER_BYTES`], a boundary of 1 to 70 characters. Anything malformed is 400
//! `invalid_multipart`, naming what was wrong.

use crate::error::{ApiError, Code};

pub const MAX_PARTS: usize = 64;
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// One part: its form field name, its filename if it is a file, its declared type.
#[derive(Debug, PartialEq, Eq)]
pub struct Part<'a> {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub body: &'a [u8],
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidMultipart, message)
}

/// The boundary of a `multipart/form-data` Content-Type, or None if it is not one.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let essence = params.next()?.trim();
    if !essence.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.find_map(|param| {
        let (key, value) = param.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim().trim_matches('"');
        (1..=70).contains(&value.len()).then(|| value.to_string())
    })
}

/// The parts of `body`, in order.
pub fn parse<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, ApiError> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    // The first delimiter may follow a preamble, which is ignored.
    let mut at = find(body, delimiter, 0).ok_or_else(|| invalid("the body does not contain the boundary"))?;
    let mut parts = Vec::new();
    loop {
        at += delimiter.len();
        if body.get(at..at + 2) == Some(b"--") {
            return Ok(parts); // the close delimiter; an epilogue is ignored
        }
        at = skip_line_break(body, at).ok_or_else(|| invalid("a boundary line is not followed by a line break"))?;
        if parts.len() == MAX_PARTS {
            return Err(invalid(format!("the body has more than {MAX_PARTS} parts")));
        }
        let header_end = find(&body[..body.len().min(at + MAX_HEADER_BYTES)], b"\r\n\r\n", at)
            .ok_or_else(|| invalid("a part's headers are missing, unterminated, or longer than 8 KiB"))?;
        let headers =
            std::str::from_utf8(&body[at..header_end]).map_err(|_| invalid("a part's headers are not UTF-8"))?;
        let content_start = header_end + 4;
        let mut closing = Vec::with_capacity(delimiter.len() + 2);
        closing.extend_from_slice(b"\r\n");
        closing.extend_from_slice(delimiter);
        let content_end =
            find(body, &closing, content_start).ok_or_else(|| invalid("the body ends before its closing boundary"))?;
        parts.push(part(headers, &body[content_start..content_end])?);
        at = content_end + 2;
    }
}

fn part<'a>(headers: &str, body: &'a [u8]) -> Result<Part<'a>, ApiError> {
    let mut disposition = None;
    let mut content_type = None;
    for line in headers.split("\r\n") {
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid("a part header has no colon"));
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "content-disposition" => disposition = Some(value.trim()),
            "content-type" => content_type = Some(value.trim().to_string()),
            _ => {}
        }
    }
    let disposition = disposition.ok_or_else(|| invalid("a part has no Content-Disposition"))?;
    let mut params = disposition.split(';');
    if !params.next().is_some_and(|kind| kind.trim().eq_ignore_ascii_case("form-data")) {
        return Err(invalid("a part's Content-Disposition is not form-data"));
    }
    let (mut name, mut filename) = (None, None);
    for param in params {
        let Some((key, value)) = param.split_once('=') else { continue };
        let value = value.trim();
        let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
        match key.trim().to_ascii_lowercase().as_str() {
            "name" => name = Some(value.to_string()),
            "filename" => filename = Some(value.to_string()),
            _ => {}
        }
    }
    let name = name.filter(|n| !n.is_empty() && n.len() <= 64).ok_or_else(|| invalid("a part has no field name"))?;
    Ok(Part { name, filename, content_type, body })
}

fn skip_line_break(body: &[u8], at: usize) -> Option<usize> {
    // Whitespace may pad a boundary line (RFC 2046 transport padding).
    let mut at = at;
    while matches!(body.get(at), Some(b' ' | b'\t')) {
        at += 1;
    }
    (body.get(at..at + 2) == Some(b"\r\n")).then_some(at + 2)
}

/// The first `needle` in `haystack` at or after `from`.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut at = from;
    while at + needle.len() <= haystack.len() {
        let next = haystack[at..haystack.len() + 1 - needle.len()].iter().position(|b| *b == first)?;
        at += next;
        if haystack[at..].starts_with(needle) {
            return Some(at);
        }
        at += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nmake it blue\r\n--XyZ\r\nContent-Disposition: form-data; name=\"image[]\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n--X\r\n--XyZ--\r\nepilogue";

    #[test]
    fn boundaries_come_from_the_content_type() {
        assert_eq!(boundary("multipart/form-data; boundary=XyZ").as_deref(), Some("XyZ"));
        assert_eq!(boundary("Multipart/Form-Data;charset=utf-8; boundary=\"a b\"").as_deref(), Some("a b"));
        assert_eq!(boundary("application/json"), None);
        assert_eq!(boundary("multipart/form-data"), None);
        assert_eq!(boundary(&format!("multipart/form-data; boundary={}", "x".repeat(71))), None);
    }

    #[test]
    fn parts_are_slices_of_the_body_in_order() {
        let parts = parse(BODY, "XyZ").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (parts[0].name.as_str(), parts[0].filename.as_deref(), parts[0].body),
            ("prompt", None, &b"make it blue"[..])
        );
        assert_eq!(parts[1].name, "image[]");
        assert_eq!(parts[1].filename.as_deref(), Some("a.png"));
        assert_eq!(parts[1].content_type.as_deref(), Some("image/png"));
        // A line inside the file that looks like a shorter boundary is content.
        assert_eq!(parts[1].body, b"\x89PNG\r\n--X");
    }

    #[test]
    fn malformed_bodies_are_400_invalid_multipart() {
        let cases: [&[u8]; 6] = [
            b"no boundary at all",
            b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunterminated",
            b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nx\r\n--XyZ--",
            b"--XyZ\r\nContent-Type: text/plain\r\n\r\nx\r\n--XyZ--",
            b"--XyZ\r\nno-colon-here\r\n\r\nx\r\n--XyZ--",
            b"--XyZ\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nx\r\n--XyZ--",
        ];
        for body in cases {
            let err = parse(body, "XyZ").unwrap_err();
            assert_eq!(
                (err.status(), err.code.as_str()),
                (400, "invalid_multipart"),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn hostile_sizes_are_bounded() {
        let mut many = Vec::new();
        for _ in 0..=MAX_PARTS {
            many.extend_from_slice(b"--B\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n");
        }
        many.extend_from_slice(b"--B--");
        assert!(parse(&many, "B").unwrap_err().message.contains("more than 64 parts"));
        let long_header = format!(
            "--B\r\nContent-Disposition: form-data; name=\"x\"; pad=\"{}\"\r\n\r\n1\r\n--B--",
            "p".repeat(9000)
        );
        assert!(parse(long_header.as_bytes(), "B").unwrap_err().message.contains("8 KiB"));
    }
}
