//! Worker-facing request and response helpers: request ids, JSON bodies, JSON responses.

use crate::body::{self, JsonObject, JSON_BODY_LIMIT};
use crate::config::Config;
use crate::db::Db;
use crate::error::{describe_worker_error, ApiError, ApiResult};
use crate::js;
use serde::Serialize;
use worker::{Context, D1Database, Env, Request, Response};

/// What every handler gets besides the request.
pub struct RequestContext {
    pub env: Env,
    pub ctx: Context,
    pub config: std::rc::Rc<Config>,
    pub request_id: String,
    pub now_ms: u64,
    /// D1 round trips made for this request, for the request log line.
    pub d1_queries: std::cell::Cell<u32>,
}

impl RequestContext {
    pub fn db(&self) -> ApiResult<Db<'_>> {
        Ok(Db::new(self.d1_binding()?, &self.d1_queries, self.config.log_sql))
    }

    /// The raw binding, for work outside the request (`ctx.wait_until`), which is not counted.
    pub fn d1_binding(&self) -> ApiResult<D1Database> {
        self.env.d1("DB").map_err(|err| {
            ApiError::server_misconfigured("DB").caused_by(format!("D1 binding DB: {}", describe_worker_error(&err)))
        })
    }
}

/// A caller's `x-request-id` is kept when it is sane: 1 to 128 characters of
/// `[A-Za-z0-9._:-]`. Anything else is replaced, so logs never carry attacker text.
pub fn sane_request_id(candidate: &str) -> bool {
    !candidate.is_empty()
        && candidate.len() <= 128
        && candidate.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// `req_` + 24 lowercase hex.
pub fn new_request_id() -> String {
    match crate::random::bytes::<12>() {
        Ok(bytes) => format!("req_{}", hex::encode(bytes)),
        // The platform RNG does not fail in practice; an id is not worth a 500.
        Err(_) => format!("req_{:024x}", crate::time::now_millis()),
    }
}

/// The first value of query parameter `name`, decoded.
pub fn query_param(req: &Request, name: &str) -> ApiResult<Option<String>> {
    Ok(query_value(&req.inner().url(), name))
}

/// The first value of `name` in a serialised URL's query, decoded as a form
/// (`application/x-www-form-urlencoded`: `+` is a space, `%XX` a byte, bad UTF-8
/// replaced). Read from the runtime's own serialisation of the URL, which is already
/// valid: no URL parser (and its Unicode tables) is linked into the wasm for this.
pub fn query_value(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split_once('#').map_or(query, |(query, _)| query);
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(key) == name).then(|| form_decode(value))
    })
}

fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[at] {
            b'+' => out.push(b' '),
            b'%' => match (bytes.get(at + 1).copied().and_then(hex), bytes.get(at + 2).copied().and_then(hex)) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    at += 2;
                }
                _ => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        at += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn header(req: &Request, name: &str) -> Option<String> {
    req.headers().get(name).ok().flatten()
}

/// `https://host` of the request, for absolute URLs (signed image URLs).
pub fn origin(req: &Request) -> ApiResult<String> {
    Ok(origin_of(&req.inner().url()).to_string())
}

/// `scheme://host[:port]` of a serialised URL: everything before its path.
pub fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |at| at + 3);
    let end = url[after_scheme..].find(['/', '?', '#']).map_or(url.len(), |at| after_scheme + at);
    &url[..end]
}

/// Reads a JSON object body with the content-type, size and syntax rules of `body`.
pub async fn json_body(req: &mut Request) -> ApiResult<JsonObject> {
    body::check_content_type(header(req, "content-type").as_deref())?;
    body::parse_object(&read_body(req, JSON_BODY_LIMIT).await?)
}

/// The request body, at most `limit` bytes. A declared Content-Length over the limit is
/// refused before reading; a chunked body (no length) is cut off, 413, as soon as what
/// arrived passes the limit: an unauthenticated client cannot make the Worker buffer more.
pub async fn read_body(req: &mut Request, limit: usize) -> ApiResult<Vec<u8>> {
    let declared = header(req, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::payload_too_large(limit));
    }
    // No body at all (a GET, an empty POST) reads as empty.
    let Some(stream) = req.inner().body() else { return Ok(Vec::new()) };
    let mut body = Vec::with_capacity(declared.map_or(0, |len| len as usize));
    let unreadable = |err: wasm_bindgen::JsValue| {
        ApiError::invalid_json("the request body could not be read")
            .caused_by(describe_worker_error(&worker::Error::from(err)))
    };
    // The stream's reader, called directly: worker's `ByteStream` wraps it in
    // wasm_streams, whose adapters weighed several KB of wasm for this one loop.
    let reader = js::method(&stream, "getReader").and_then(|get| get.call0(&stream)).map_err(unreadable)?;
    let read = js::method(&reader, "read").map_err(unreadable)?;
    loop {
        let chunk = js::resolved(read.call0(&reader).map_err(unreadable)?).await.map_err(unreadable)?;
        if js::property(&chunk, "done").as_bool() == Some(true) {
            return Ok(body);
        }
        let bytes = worker::js_sys::Uint8Array::new(&js::property(&chunk, "value"));
        let start = body.len();
        if start + bytes.length() as usize > limit {
            let _ = js::method(&reader, "cancel").and_then(|cancel| cancel.call0(&reader));
            return Err(ApiError::payload_too_large(limit));
        }
        body.resize(start + bytes.length() as usize, 0);
        bytes.copy_to(&mut body[start..]);
    }
}

/// A POST to another server (Gemini, a webhook receiver), built on the platform's
/// `RequestInit` directly: worker's own `RequestInit` carries every `cf` option (image
/// resizing, minify, ...) and its conversion weighed 11 KB of wasm. With `manual_redirect`
/// a 3xx comes back as the answer instead of being followed.
pub fn outbound_post(
    url: &str,
    headers: &[(&str, &str)],
    body: &wasm_bindgen::JsValue,
    manual_redirect: bool,
) -> worker::Result<Request> {
    use worker::web_sys;
    let header_list = web_sys::Headers::new()?;
    for (name, value) in headers {
        header_list.set(name, value)?;
    }
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_headers(&header_list);
    init.set_body(body);
    if manual_redirect {
        init.set_redirect(web_sys::RequestRedirect::Manual);
    }
    Ok(web_sys::Request::new_with_str_and_init(url, &init)?.into())
}

pub fn json<T: Serialize>(status: u16, value: &T) -> ApiResult<Response> {
    respond(status, to_json(value))
}

/// A response body as JSON text (kept as text where idempotency stores it).
pub fn to_json<T: Serialize>(value: &T) -> ApiResult<String> {
    serde_json::to_string(value).map_err(unserializable)
}

// The parts of `json` and `to_json` that do not depend on `T`, out of line: both are
// instantiated for every response type, and each copy carried them (about 8 KB of wasm).
#[inline(never)]
fn respond(status: u16, body: ApiResult<String>) -> ApiResult<Response> {
    Ok(json_text(status, body?)?)
}

#[cold]
#[inline(never)]
fn unserializable(err: serde_json::Error) -> ApiError {
    ApiError::internal(format!("serialising a response: {err}"))
}

/// `object: "list"` on list responses, as OpenAI and Stripe answer.
#[derive(Debug, Clone, Copy, Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum ListObject {
    List,
}

/// Extra headers to send, by name.
pub type HeaderList = Vec<(&'static str, String)>;

/// Adds each of `defaults` that `headers` does not already name: a route's common headers
/// (rate limit, quota) under the ones its answer set itself.
pub fn add_missing(headers: &mut HeaderList, defaults: &[(&'static str, String)]) {
    for (name, value) in defaults {
        if !headers.iter().any(|(existing, _)| existing == name) {
            headers.push((name, value.clone()));
        }
    }
}

/// Sets `headers` on a response.
pub fn set_headers(response: &mut Response, headers: &[(&'static str, String)]) -> worker::Result<()> {
    let target = response.headers_mut();
    for (name, value) in headers {
        target.set(name, value)?;
    }
    Ok(())
}

/// A response whose JSON body is already serialised (stored, replayed, or embedded).
pub fn json_text(status: u16, body: String) -> worker::Result<Response> {
    let mut response = Response::from_bytes(body.into_bytes())?.with_status(status);
    response.headers_mut().set("content-type", "application/json")?;
    Ok(response)
}

pub fn no_content() -> ApiResult<Response> {
    Ok(Response::empty()?.with_status(204))
}

/// The envelope response of an error, with its extra headers.
pub fn error_response(err: &ApiError, request_id: &str) -> worker::Result<Response> {
    let mut response = json_text(err.status(), err.envelope_json(request_id))?;
    set_headers(&mut response, &err.headers)?;
    Ok(response)
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn query_values_are_form_decoded() {
        let url = "https://x.test/v1/generations?limit=5&starting_after=gen_%61b&q=a+b%20c&empty=&flag#frag";
        assert_eq!(query_value(url, "limit").as_deref(), Some("5"));
        assert_eq!(query_value(url, "starting_after").as_deref(), Some("gen_ab"));
        assert_eq!(query_value(url, "q").as_deref(), Some("a b c"));
        assert_eq!(query_value(url, "empty").as_deref(), Some(""));
        assert_eq!(query_value(url, "flag").as_deref(), Some(""));
        assert_eq!(query_value(url, "frag"), None);
        assert_eq!(query_value(url, "missing"), None);
        assert_eq!(query_value("https://x.test/", "limit"), None);
        assert_eq!(query_value("https://x.test/?a=%zz%e2%82%ac%ff", "a").as_deref(), Some("%zz€\u{fffd}"));
        assert_eq!(query_value("https://x.test/?a=1&a=2", "a").as_deref(), Some("1"), "the first value");
    }

    #[test]
    fn origins_end_where_the_path_begins() {
        assert_eq!(origin_of("https://api.example.com/v1/generate?x=1"), "https://api.example.com");
        assert_eq!(origin_of("http://127.0.0.1:8787/"), "http://127.0.0.1:8787");
        assert_eq!(origin_of("http://127.0.0.1:8787?x"), "http://127.0.0.1:8787");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_from_callers_are_kept_only_when_sane() {
        assert!(sane_request_id("req_0123456789abcdef01234567"));
        assert!(sane_request_id("trace-1:span.2_x"));
        for bad in ["", "has space", "new\nline", "<script>", &"a".repeat(129), "ünï"] {
            assert!(!sane_request_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn generated_request_ids_have_the_documented_shape() {
        let id = new_request_id();
        assert_eq!(id.len(), 28, "{id}");
        assert!(id.starts_with("req_") && id[4..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(id, new_request_id());
    }
}
