//! The whole story of talking to Google, top to bottom: the wire types of
//! `models/{model}:generateContent`, the request we send, how every upstream outcome maps
//! to an image or an API error, the retry policy, and the fetch loop that applies it.
//!
//! Outcomes:
//! - an image: the last non-thought `inlineData` image part, with its real mime type;
//! - a refusal (`promptFeedback.blockReason`, a non-STOP `finishReason`, or text only):
//!   400 `content_policy_violation`, never retried;
//! - 429, 408, 500, 502, 503, 504 and network errors: retried with exponential backoff and
//!   jitter (honouring `RetryInfo.retryDelay` when it fits), at most 3 attempts inside the
//!   deadline; then 503 if upstream was overloaded, 504 if it timed out, 502 otherwise;
//! - `API_KEY_INVALID`: 502 `provider_auth_failed`, not retried;
//! - anything else unusable (other 4xx, a 200 that is not the documented JSON): 502.

use crate::error::{ApiError, Code};
use crate::metering::UsageMetadata;
use base64::Engine;
use serde::Deserialize;

pub const MAX_ATTEMPTS: u32 = 3;
const BACKOFF_BASE_MS: u64 = 500;
const BACKOFF_CAP_MS: u64 = 8_000;
/// The longest upstream `retryDelay` honoured; longer ones count as this (and so usually
/// do not fit the deadline: the request fails fast instead of waiting).
const MAX_RETRY_DELAY_MS: u64 = 120_000;
/// The largest answer read: a 4K image is at most about 20 MB as base64. Anything from
/// upstream is untrusted, and a bigger one would be copied into the wasm memory whole.
pub const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;
/// An error envelope's details are read as a tree; Google's are a few hundred bytes.
const MAX_ERROR_BYTES: usize = 64 * 1024;

// ---------------------------------------------------------------- request

/// What one upstream call asks for.
pub struct ImageCall<'a> {
    pub model: &'a str,
    /// The prompt as sent: the user's prompt plus the style's instruction.
    pub text: &'a str,
    /// None when the output follows the input images (no `aspectRatio` is sent).
    pub aspect_ratio: Option<&'a str>,
    pub image_size: &'a str,
    /// Reference images, sent as `inlineData` parts before the text, in this order.
    pub inputs: &'a [InlineImage<'a>],
}

/// An input image as it goes upstream.
pub struct InlineImage<'a> {
    pub mime_type: &'a str,
    pub bytes: &'a [u8],
}

pub fn endpoint(base: &str, model: &str) -> String {
    format!("{base}/v1beta/models/{model}:generateContent")
}

/// The request body. Written by hand rather than through `serde_json::Value`: the inputs'
/// base64 (up to 27 MB) is encoded once, straight into the body, with no tree to copy.
/// (`Prepared::new` sends the same text, put together part by part on the JS side; this
/// whole-text form is what the tests read.)
#[cfg(test)]
pub fn request_body(call: &ImageCall) -> String {
    let (head, tail) = request_frame(call);
    let mut body = CONTENTS.to_string() + &head;
    for input in call.inputs {
        body.push_str(&inline_part(input.mime_type, input.bytes));
    }
    body.push_str(&tail);
    body
}

/// How a request body starts; then come the earlier turns of a conversation, if any
/// ([`user_turn`], and the model turns kept with each image), then the new user turn
/// ([`request_frame`]).
const CONTENTS: &str = r#"{"contents":["#;

/// An earlier user turn of a conversation: its input images, then its text, as they were
/// sent. Ends with a comma.
pub fn user_turn(text: &str, images: &[InlineImage]) -> String {
    let mut turn = String::from(r#"{"role":"user","parts":["#);
    for image in images {
        turn.push_str(&inline_part(image.mime_type, image.bytes));
    }
    turn.push_str(r#"{"text":"#);
    turn.push_str(&serde_json::Value::from(text).to_string());
    turn.push_str("}]},");
    turn
}

/// The body before the input parts, and after them (the text part and the config).
fn request_frame(call: &ImageCall) -> (String, String) {
    let head = r#"{"role":"user","parts":["#.to_string();
    let mut tail = String::from(r#"{"text":"#);
    tail.push_str(&serde_json::Value::from(call.text).to_string());
    tail.push_str("}]}],");
    let mut image_config = serde_json::Map::new();
    if let Some(ratio) = call.aspect_ratio {
        image_config.insert("aspectRatio".into(), ratio.into());
    }
    image_config.insert("imageSize".into(), call.image_size.into());
    let config = serde_json::json!({"responseModalities": ["TEXT", "IMAGE"], "imageConfig": image_config});
    tail.push_str(r#""generationConfig":"#);
    tail.push_str(&config.to_string());
    tail.push('}');
    (head, tail)
}

/// One input as an `inlineData` part, with its trailing comma.
fn inline_part(mime_type: &str, bytes: &[u8]) -> String {
    let mut part = String::with_capacity(bytes.len().div_ceil(3) * 4 + 64);
    part.push_str(r#"{"inlineData":{"mimeType":"#);
    part.push_str(&serde_json::Value::from(mime_type).to_string());
    part.push_str(r#","data":""#);
    base64::engine::general_purpose::STANDARD.encode_string(bytes, &mut part);
    part.push_str(r#""}},"#);
    part
}

// ---------------------------------------------------------------- response wire types

// The image parts borrow their base64 from the response bytes (a 4K image is ~20 MB of
// it): nothing is copied before it is decoded.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentResponse<'a> {
    /// Only the first candidate is read; the others are skipped without a tree.
    #[serde(default, borrow, rename = "candidates", deserialize_with = "first_candidate")]
    candidate: Option<Candidate<'a>>,
    prompt_feedback: Option<PromptFeedback>,
    /// Read apart, after: a malformed one costs the image nothing but its exact figures
    /// (it is then metered as documented, and flagged estimated).
    #[serde(borrow)]
    usage_metadata: Option<&'a serde_json::value::RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    block_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    #[serde(borrow)]
    content: Option<Content<'a>>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Content<'a> {
    /// The last non-thought image part, and the turn to send back to continue from it,
    /// kept as the parts stream by: a million empty parts from a hostile upstream cost
    /// nothing.
    #[serde(default, borrow, rename = "parts", deserialize_with = "answer_parts")]
    answer: Answer<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part<'a> {
    #[serde(borrow)]
    inline_data: Option<InlineData<'a>>,
    #[serde(default)]
    thought: bool,
    #[serde(borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    thought_signature: Option<std::borrow::Cow<'a, str>>,
}

/// What an answer's parts gave: its final image and its model turn.
#[derive(Default)]
struct Answer<'a> {
    final_image: Option<InlineData<'a>>,
    /// Each non-thought part as it goes back to Gemini (JSON), and which one is the image.
    parts: Vec<String>,
    image_part: Option<usize>,
    /// Bytes of text and signatures kept; past [`MAX_TURN_BYTES`] (or [`MAX_TURN_PARTS`]
    /// parts) the turn is not kept at all.
    kept: usize,
    overflow: bool,
}

/// The most text and signature bytes, and parts, of a model turn kept to continue from:
/// with `n` = 4 the turns stay far under D1's 1 MB row (signatures are a few KB).
pub const MAX_TURN_BYTES: usize = 128 * 1024;
pub const MAX_TURN_PARTS: usize = 32;

/// Where an image's base64 goes in a kept model turn: a character JSON text never holds
/// unescaped, so it cannot come from upstream.
pub const IMAGE_SLOT: char = '\u{1}';

impl Answer<'_> {
    /// The model turn as it goes back in the next turn of a conversation: its non-thought
    /// parts in order, text and `thoughtSignature`s exactly as received, the image's data
    /// left as [`IMAGE_SLOT`] (its bytes are stored in R2). Ends with a comma.
    fn turn(&self) -> Option<String> {
        (!self.overflow).then(|| format!(r#"{{"role":"model","parts":[{}]}},"#, self.parts.join(",")))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InlineData<'a> {
    mime_type: String,
    /// Borrowed unless the JSON escapes something in it (base64 never needs to).
    #[serde(borrow)]
    data: std::borrow::Cow<'a, str>,
}

/// Reads a JSON array one element at a time, handing each to `F`.
struct Fold<T, F>(F, std::marker::PhantomData<fn(T)>);

impl<'de, T: Deserialize<'de>, F: FnMut(T)> serde::de::Visitor<'de> for Fold<T, F> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut access: A) -> Result<(), A::Error> {
        while let Some(item) = access.next_element::<T>()? {
            (self.0)(item);
        }
        Ok(())
    }
}

fn first_candidate<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Candidate<'de>>, D::Error> {
    let mut first = None;
    let mut keep = |candidate: Option<Candidate<'de>>| {
        if first.is_none() {
            first = candidate;
        }
    };
    // Later candidates are read the same bounded way and dropped at once.
    deserializer.deserialize_seq(Fold(&mut keep, std::marker::PhantomData))?;
    Ok(first)
}

fn answer_parts<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Answer<'de>, D::Error> {
    let json = |text: &str| serde_json::Value::from(text).to_string();
    let mut answer = Answer::default();
    let mut keep = |part: Part<'de>| {
        if part.thought {
            return; // drafts are not sent back
        }
        let image = part.inline_data.filter(|data| data.mime_type.starts_with("image/"));
        let mut kept = match (&image, &part.text) {
            (Some(image), _) => {
                format!(r#"{{"inlineData":{{"mimeType":{},"data":"{IMAGE_SLOT}"}}"#, json(&image.mime_type))
            }
            (None, Some(text)) => format!(r#"{{"text":{}"#, json(text)),
            (None, None) => return,
        };
        if let Some(signature) = &part.thought_signature {
            kept.push_str(r#","thoughtSignature":"#);
            kept.push_str(&json(signature));
        }
        kept.push('}');
        answer.kept += kept.len();
        if image.is_some() {
            // Only the last image is delivered and stored: the turn keeps that one.
            if let Some(earlier) = answer.image_part.take() {
                answer.parts.remove(earlier);
            }
            answer.image_part = Some(answer.parts.len());
            answer.final_image = image;
        }
        answer.overflow |= answer.kept > MAX_TURN_BYTES || answer.parts.len() >= MAX_TURN_PARTS;
        if !answer.overflow {
            answer.parts.push(kept);
        }
    };
    deserializer.deserialize_seq(Fold(&mut keep, std::marker::PhantomData))?;
    Ok(answer)
}

/// Google's error envelope, `{"error": {"message", "details": [...]}}`: read as a
/// `serde_json::Value` (its parser is in the wasm anyway; a derived one was not).
struct GoogleError {
    message: String,
    details: Vec<serde_json::Value>,
}

// ---------------------------------------------------------------- outcomes

#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub mime_type: String,
    pub bytes: Vec<u8>,
    /// What the answer said it used (None: it did not say, or the image was not Gemini's).
    pub usage: Option<UsageMetadata>,
    /// The model turn to send back to continue from this image, with [`IMAGE_SLOT`] for
    /// its data (None: not Gemini's, or too large to keep).
    pub turn: Option<String>,
}

/// Why a retryable attempt failed; decides the final status once retries run out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transient {
    Overloaded,
    TimedOut,
    Failed,
}

#[derive(Debug, PartialEq)]
pub enum Attempt {
    Image(Image),
    Retry { why: Transient, retry_after_ms: Option<u64> },
    Fail(ApiError),
}

/// Maps one upstream HTTP answer to an outcome. Pure: every case is unit-tested.
pub fn interpret(status: u16, body: &[u8]) -> Attempt {
    match status {
        200 => interpret_success(body),
        429 => Attempt::Retry { why: Transient::Overloaded, retry_after_ms: retry_delay_ms(body) },
        503 => Attempt::Retry { why: Transient::Overloaded, retry_after_ms: None },
        408 | 504 => Attempt::Retry { why: Transient::TimedOut, retry_after_ms: None },
        500 | 502 => Attempt::Retry { why: Transient::Failed, retry_after_ms: None },
        _ if is_invalid_api_key(body) => Attempt::Fail(ApiError::new(
            Code::ProviderAuthFailed,
            "the image provider rejected the service's credentials",
        )),
        _ => Attempt::Fail(
            upstream_failed(format!("the image provider answered HTTP {status}"))
                .caused_by(format!("gemini HTTP {status}: {}", google_message(body))),
        ),
    }
}

fn interpret_success(body: &[u8]) -> Attempt {
    let response: GenerateContentResponse = match serde_json::from_slice(body) {
        Ok(response) => response,
        Err(_) => return Attempt::Fail(upstream_failed("the image provider sent an unreadable response")),
    };
    if let Some(reason) = response.prompt_feedback.and_then(|f| f.block_reason) {
        return Attempt::Fail(refused(&format!("the prompt was blocked ({reason})")));
    }
    let Some(candidate) = response.candidate else {
        return Attempt::Fail(upstream_failed("the image provider returned no candidates"));
    };
    let finish = candidate.finish_reason.unwrap_or_else(|| "STOP".to_string());
    let answer = candidate.content.map(|content| content.answer).unwrap_or_default();
    let turn = answer.turn();
    match answer.final_image {
        Some(data) => match base64::engine::general_purpose::STANDARD.decode(data.data.as_bytes()) {
            // The type is what the bytes are, not what upstream declares: only PNG, JPEG
            // and WebP are ever stored and served.
            Ok(bytes) => match crate::media::sniff(&bytes) {
                Some(mime_type) => Attempt::Image(Image {
                    mime_type: mime_type.to_string(),
                    bytes,
                    usage: response.usage_metadata.and_then(|raw| UsageMetadata::parse(raw.get())),
                    turn,
                }),
                None => Attempt::Fail(
                    upstream_failed("the image provider sent an image of a type this service does not serve")
                        .caused_by(format!("gemini declared {} but sent other bytes", data.mime_type)),
                ),
            },
            Err(_) => Attempt::Fail(upstream_failed("the image provider sent an undecodable image")),
        },
        None if finish != "STOP" => Attempt::Fail(refused(&format!("no image was produced (finish reason {finish})"))),
        None => Attempt::Fail(refused("the model answered with text only and no image")),
    }
}

fn refused(reason: &str) -> ApiError {
    ApiError::new(Code::ContentPolicyViolation, format!("the request was refused by the image model: {reason}"))
        .with_param("prompt")
}

/// An answer over [`MAX_ANSWER_BYTES`]: not read, not retried.
pub fn oversized() -> ApiError {
    upstream_failed("the image provider sent an answer too large to read")
        .caused_by(format!("gemini answered more than {MAX_ANSWER_BYTES} bytes"))
}

fn upstream_failed(message: impl Into<String>) -> ApiError {
    ApiError::new(Code::UpstreamError, message)
}

/// Google's error envelope; one larger than any Google sends is not read.
fn google_error(body: &[u8]) -> Option<GoogleError> {
    if body.len() > MAX_ERROR_BYTES {
        return None;
    }
    let mut envelope: serde_json::Value = serde_json::from_slice(body).ok()?;
    let error = envelope.get_mut("error")?;
    let message = error.get("message").and_then(|m| m.as_str()).unwrap_or_default().to_string();
    let details = match error.get_mut("details").map(serde_json::Value::take) {
        Some(serde_json::Value::Array(details)) => details,
        _ => Vec::new(),
    };
    Some(GoogleError { message, details })
}

/// Google's own message, cut short: it goes into a log line.
fn google_message(body: &[u8]) -> String {
    google_error(body).map(|e| e.message.chars().take(200).collect()).unwrap_or_default()
}

fn is_invalid_api_key(body: &[u8]) -> bool {
    google_error(body)
        .is_some_and(|e| e.details.iter().any(|d| d.get("reason").and_then(|r| r.as_str()) == Some("API_KEY_INVALID")))
}

/// `google.rpc.RetryInfo.retryDelay` ("47s", "1.5s") in milliseconds.
fn retry_delay_ms(body: &[u8]) -> Option<u64> {
    let error = google_error(body)?;
    error.details.iter().find_map(|detail| {
        let is_retry_info = detail.get("@type")?.as_str()?.ends_with("google.rpc.RetryInfo");
        let delay = duration_ms(detail.get("retryDelay")?.as_str()?)?;
        // Clamped: an absurd delay must not park the request.
        is_retry_info.then_some(delay.min(MAX_RETRY_DELAY_MS))
    })
}

/// A `google.protobuf.Duration` in its JSON form (decimal seconds and an `s`: "47s",
/// "0.000340012s") in whole milliseconds, saturating. Anything else (negative, exponent)
/// is None. Read by hand: `f64::from_str` would link 15 KB of float-parsing tables.
fn duration_ms(text: &str) -> Option<u64> {
    let seconds = text.strip_suffix('s')?;
    let (whole, fraction) = match seconds.split_once('.') {
        Some((whole, fraction)) if !fraction.is_empty() => (whole, fraction),
        Some(_) => return None,
        None => (seconds, ""),
    };
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) {
        return None;
    }
    let decimal = |acc: u64, digit: u8| acc.saturating_mul(10).saturating_add(u64::from(digit - b'0'));
    let whole_ms = whole.bytes().fold(0, decimal).saturating_mul(1000);
    let fraction_ms = fraction.bytes().chain(std::iter::repeat(b'0')).take(3).fold(0, decimal);
    Some(whole_ms.saturating_add(fraction_ms))
}

/// The error once retries are exhausted or the deadline has passed.
pub fn give_up(why: Transient) -> ApiError {
    match why {
        Transient::Overloaded => {
            ApiError::new(Code::UpstreamOverloaded, "the image provider is overloaded; try again later")
        }
        Transient::TimedOut => ApiError::new(Code::UpstreamTimeout, "the image provider did not answer in time"),
        Transient::Failed => upstream_failed("the image provider failed after retries"),
    }
}

// ---------------------------------------------------------------- retry policy

/// How long to wait before attempt `attempt + 1` (attempt counts from 1), or None to stop.
/// Exponential backoff with jitter (50-100% of the step); an upstream `retryDelay` is used
/// instead when given. Stops when the wait would not fit before the deadline.
pub fn next_delay_ms(attempt: u32, retry_after_ms: Option<u64>, jitter: u8, remaining_ms: u64) -> Option<u64> {
    if attempt >= MAX_ATTEMPTS {
        return None;
    }
    let delay = retry_after_ms.unwrap_or_else(|| {
        let step = (BACKOFF_BASE_MS << (attempt - 1).min(16)).min(BACKOFF_CAP_MS);
        step / 2 + step * u64::from(jitter) / 512
    });
    // Leave the next attempt at least a second of its own.
    (delay.saturating_add(1_000) <= remaining_ms).then_some(delay)
}

// ---------------------------------------------------------------- the fetch loop

pub use fetch::{generate_image, Draft, Prepared};

mod fetch {
    use super::*;
    use futures_util::future::{select, Either};
    use std::time::Duration;
    use wasm_bindgen::JsValue;
    use worker::{AbortController, Delay, Fetch};

    /// A request made once and sent by every call and retry of a generation: its body is a
    /// JS string, so `n` calls carrying 27 MB of inputs share one copy. It is put together
    /// on the JS side one input at a time, each input's bytes let go once its part is
    /// there: the wasm memory never holds the whole body, nor the inputs and their base64.
    pub struct Prepared {
        url: String,
        body: JsValue,
    }

    /// A request body being put together on the JS side: the earlier turns of a
    /// conversation are pushed one at a time (each turn's images let go once it is there),
    /// then [`Prepared::new`] adds the new turn.
    pub struct Draft(worker::js_sys::JsString);

    impl Draft {
        pub fn new() -> Draft {
            Draft(worker::js_sys::JsString::from(CONTENTS))
        }

        /// Appends a turn, or a piece of one.
        pub fn push(&mut self, turn: &str) {
            self.0 = self.0.concat(&JsValue::from_str(turn));
        }
    }

    impl Default for Draft {
        fn default() -> Self {
            Draft::new()
        }
    }

    impl Prepared {
        /// `call.inputs` must be empty: the inputs come as `inputs`, consumed in order,
        /// after the earlier turns in `draft`.
        pub fn new(
            base: &str,
            call: &ImageCall<'_>,
            draft: Draft,
            inputs: impl IntoIterator<Item = (String, Vec<u8>)>,
        ) -> Prepared {
            let (head, tail) = request_frame(call);
            let mut body = draft.0.concat(&JsValue::from_str(&head));
            for (mime_type, bytes) in inputs {
                let part = inline_part(&mime_type, &bytes);
                drop(bytes);
                body = body.concat(&JsValue::from_str(&part));
            }
            body = body.concat(&JsValue::from_str(&tail));
            Prepared { url: endpoint(base, call.model), body: body.into() }
        }
    }

    /// One image from Gemini, with retries, within `deadline_ms` overall. Returns the image
    /// and the upstream latency of the successful attempt.
    pub async fn generate_image(
        prepared: &Prepared,
        api_key: &str,
        deadline_ms: u64,
    ) -> Result<(Image, u64), ApiError> {
        let started = crate::time::now_millis();
        let (url, body) = (&prepared.url, &prepared.body);
        let mut attempt = 1;
        loop {
            let elapsed = crate::time::now_millis().saturating_sub(started);
            let remaining = deadline_ms.saturating_sub(elapsed);
            if remaining == 0 {
                return Err(give_up(Transient::TimedOut));
            }
            let attempt_started = crate::time::now_millis();
            let outcome = match send(url, api_key, body, remaining).await {
                Ok((status, bytes)) => interpret(status, &bytes),
                Err(outcome) => outcome,
            };
            match outcome {
                Attempt::Image(image) => {
                    return Ok((image, crate::time::now_millis().saturating_sub(attempt_started)));
                }
                Attempt::Fail(err) => return Err(err),
                Attempt::Retry { why, retry_after_ms } => {
                    let remaining = deadline_ms.saturating_sub(crate::time::now_millis().saturating_sub(started));
                    if why == Transient::TimedOut && remaining == 0 {
                        return Err(give_up(why));
                    }
                    let jitter = crate::random::bytes::<1>().map(|b| b[0]).unwrap_or(128);
                    match next_delay_ms(attempt, retry_after_ms, jitter, remaining) {
                        Some(delay) => {
                            crate::log::info(
                                "gemini: retrying",
                                &format!("attempt {attempt} {why:?}, waiting {delay} ms"),
                            );
                            Delay::from(Duration::from_millis(delay)).await;
                            attempt += 1;
                        }
                        None => return Err(give_up(why)),
                    }
                }
            }
        }
    }

    /// One HTTP call, aborted when `timeout_ms` passes. The key travels in a header only.
    /// Fails with the attempt's outcome when there is no answer to interpret: a network
    /// error or the deadline (retried), or an answer too big to read (not).
    async fn send(url: &str, api_key: &str, body: &JsValue, timeout_ms: u64) -> Result<(u16, Vec<u8>), Attempt> {
        let retry = |why| Attempt::Retry { why, retry_after_ms: None };
        let headers = [("content-type", "application/json"), ("x-goog-api-key", api_key)];
        let request = crate::http::outbound_post(url, &headers, body, false).map_err(|_| retry(Transient::Failed))?;

        let controller = AbortController::default();
        let signal = controller.signal();
        let exchange = async {
            let response = Fetch::Request(request).send_with_signal(&signal).await?;
            let status = response.status_code();
            // An answer that says it is too big is not read at all.
            let declared = response.headers().get("content-length").ok().flatten();
            if declared.and_then(|length| length.parse::<usize>().ok()).is_some_and(|length| length > MAX_ANSWER_BYTES)
            {
                return Ok(Err(oversized()));
            }
            // The whole body as one ArrayBuffer, copied into the wasm memory once at its
            // exact size. (`Response::bytes` appends stream chunks to a growing Vec: with
            // n answers of 16 MB streaming at once, that held several doubling buffers.)
            let response: worker::web_sys::Response = response.into();
            let buffer = worker::wasm_bindgen_futures::JsFuture::from(response.array_buffer()?).await?;
            let array = worker::js_sys::Uint8Array::new(&buffer);
            if array.length() as usize > MAX_ANSWER_BYTES {
                return Ok(Err(oversized()));
            }
            Ok::<_, worker::Error>(Ok((status, array.to_vec())))
        };
        let timeout = Delay::from(Duration::from_millis(timeout_ms));
        futures_util::pin_mut!(exchange);
        match select(exchange, timeout).await {
            Either::Left((Ok(Ok(answer)), _)) => Ok(answer),
            Either::Left((Ok(Err(unreadable)), _)) => Err(Attempt::Fail(unreadable)),
            Either::Left((Err(err), _)) => {
                crate::log::error("gemini: network error", &err.to_string());
                Err(retry(Transient::Failed))
            }
            Either::Right(_) => {
                controller.abort();
                Err(retry(Transient::TimedOut))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(value: serde_json::Value) -> Vec<u8> {
        value.to_string().into_bytes()
    }

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    const JPEG: &[u8] = &[0xff, 0xd8, 0xff, 0xe0, 0, 0x10, b'J', b'F', b'I', b'F'];

    #[test]
    fn an_image_whose_bytes_are_not_png_jpeg_or_webp_is_an_upstream_error() {
        let svg = b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>";
        for declared in ["image/svg+xml", "image/png"] {
            let response = body(json!({"candidates": [{"finishReason": "STOP", "content": {"parts": [
                {"inlineData": {"mimeType": declared, "data": b64(svg)}}
            ]}}]}));
            match interpret(200, &response) {
                Attempt::Fail(err) => assert_eq!(err.code, Code::UpstreamError, "{declared}"),
                other => panic!("{declared}: {other:?}"),
            }
        }
        // The type served is the one the bytes have, whatever was declared.
        let response = body(json!({"candidates": [{"content": {"parts": [
            {"inlineData": {"mimeType": "image/png", "data": b64(JPEG)}}
        ]}}]}));
        assert!(matches!(interpret(200, &response), Attempt::Image(image) if image.mime_type == "image/jpeg"));
    }

    #[test]
    fn an_images_usage_is_read_and_a_malformed_one_costs_the_image_nothing() {
        let answer = |usage: serde_json::Value| {
            body(
                json!({"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/jpeg", "data": b64(JPEG)}}]}}],
                "usageMetadata": usage}),
            )
        };
        let usage = |response: &[u8]| match interpret(200, response) {
            Attempt::Image(image) => image.usage,
            other => panic!("{other:?}"),
        };
        let read = usage(&answer(json!({"promptTokenCount": 7, "candidatesTokenCount": 1300,
            "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1290}]})))
        .unwrap();
        assert_eq!((read.prompt_token_count, read.candidates_tokens_details.image), (Some(7), 1_290));
        assert_eq!(usage(&answer(json!("garbage"))), None);
        // A count out of form counts as missing: the answer is then metered as documented.
        assert_eq!(usage(&answer(json!({"promptTokenCount": -1}))).unwrap().prompt_token_count, None);
        let padding = "x".repeat(crate::metering::MAX_USAGE_BYTES);
        assert_eq!(usage(&answer(json!({"promptTokenCount": 7, "padding": padding}))), None, "too large to read");
    }

    #[test]
    fn a_hostile_retry_delay_is_clamped_and_never_overflows() {
        for delay in ["18446744073709551615s", "99999999999999999999.9s", "3601s"] {
            let answer =
                body(json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "q", "details": [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}]}}));
            match interpret(429, &answer) {
                Attempt::Retry { retry_after_ms, .. } => {
                    assert_eq!(retry_after_ms, Some(MAX_RETRY_DELAY_MS), "{delay}")
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(next_delay_ms(1, Some(u64::MAX), 0, 90_000), None, "does not fit: give up, no overflow");
        assert_eq!(next_delay_ms(1, Some(MAX_RETRY_DELAY_MS), 0, u64::MAX), Some(MAX_RETRY_DELAY_MS));
    }

    #[test]
    fn retry_delays_are_protobuf_durations() {
        for (text, ms) in [("47s", 47_000), ("1.5s", 1_500), ("0.000340012s", 0), ("2.0345s", 2_034), ("0s", 0)] {
            assert_eq!(duration_ms(text), Some(ms), "{text}");
        }
        for text in ["", "s", "47", "-1s", "1e3s", ".5s", "1.s", "1..5s", " 1s", "infs", "NaNs", "1.5 s"] {
            assert_eq!(duration_ms(text), None, "{text}");
        }
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn request_follows_the_wire_format() {
        let call = ImageCall {
            model: "gemini-3.1-flash-image",
            text: "a \"cat\"\n",
            aspect_ratio: Some("16:9"),
            image_size: "2K",
            inputs: &[],
        };
        let sent: serde_json::Value = serde_json::from_str(&request_body(&call)).unwrap();
        assert_eq!(sent["contents"][0]["parts"], json!([{"text": "a \"cat\"\n"}]));
        assert_eq!(sent["generationConfig"]["responseModalities"], json!(["TEXT", "IMAGE"]));
        assert_eq!(sent["generationConfig"]["imageConfig"], json!({"aspectRatio": "16:9", "imageSize": "2K"}));
        assert_eq!(
            endpoint("http://127.0.0.1:9", "gemini-3.1-flash-image"),
            "http://127.0.0.1:9/v1beta/models/gemini-3.1-flash-image:generateContent"
        );
    }

    #[test]
    fn inputs_go_before_the_text_in_order_and_no_ratio_follows_them() {
        let inputs =
            [InlineImage { mime_type: "image/jpeg", bytes: JPEG }, InlineImage { mime_type: "image/png", bytes: PNG }];
        let call = ImageCall { model: "m", text: "blend", aspect_ratio: None, image_size: "4K", inputs: &inputs };
        let sent: serde_json::Value = serde_json::from_str(&request_body(&call)).unwrap();
        assert_eq!(
            sent["contents"][0]["parts"],
            json!([
                {"inlineData": {"mimeType": "image/jpeg", "data": b64(JPEG)}},
                {"inlineData": {"mimeType": "image/png", "data": b64(PNG)}},
                {"text": "blend"}
            ])
        );
        assert_eq!(sent["generationConfig"]["imageConfig"], json!({"imageSize": "4K"}));
    }

    #[test]
    fn takes_the_last_non_thought_image_and_its_mime_type() {
        let response = body(json!({"candidates": [{"finishReason": "STOP", "content": {"parts": [
            {"text": "thinking", "thought": true},
            {"inlineData": {"mimeType": "image/png", "data": b64(b"draft")}, "thought": true},
            {"inlineData": {"mimeType": "image/png", "data": b64(PNG)}},
            {"text": "here you go"},
            {"inlineData": {"mimeType": "image/jpeg", "data": b64(JPEG)}},
            {"inlineData": {"mimeType": "image/png", "data": b64(b"late draft")}, "thought": true}
        ]}}]}));
        assert_eq!(
            interpret(200, &response),
            Attempt::Image(Image {
                mime_type: "image/jpeg".into(),
                bytes: JPEG.to_vec(),
                usage: None,
                turn: Some(format!(
                    r#"{{"role":"model","parts":[{{"text":"here you go"}},{{"inlineData":{{"mimeType":"image/jpeg","data":"{IMAGE_SLOT}"}}}}]}},"#
                ))
            })
        );
    }

    fn refusal_code(response: serde_json::Value) -> (u16, &'static str, String) {
        match interpret(200, &body(response)) {
            Attempt::Fail(err) => (err.status(), err.code.as_str(), err.message.clone()),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn every_refusal_shape_is_400_content_policy_violation() {
        let (status, code, message) = refusal_code(json!({"promptFeedback": {"blockReason": "SAFETY"}}));
        assert_eq!((status, code), (400, "content_policy_violation"));
        assert!(message.contains("SAFETY"));
        for reason in ["SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "NO_IMAGE", "IMAGE_OTHER", "RECITATION"] {
            let (status, code, message) =
                refusal_code(json!({"candidates": [{"finishReason": reason, "content": {"parts": []}}]}));
            assert_eq!((status, code), (400, "content_policy_violation"));
            assert!(message.contains(reason), "{message}");
        }
        let (status, code, _) = refusal_code(json!({"candidates": [{"finishReason": "IMAGE_SAFETY"}]}));
        assert_eq!((status, code), (400, "content_policy_violation"));
        let (status, code, message) =
            refusal_code(json!({"candidates": [{"finishReason": "STOP", "content": {"parts": [{"text": "no"}]}}]}));
        assert_eq!((status, code), (400, "content_policy_violation"));
        assert!(message.contains("text only"));
    }

    #[test]
    fn unusable_200s_are_502() {
        for raw in [&b"<html>oops</html>"[..], b"", b"{\"candidates\": [{\"content\": \"x\"}]}", b"{}"] {
            match interpret(200, raw) {
                Attempt::Fail(err) => assert_eq!((err.status(), err.code.as_str()), (502, "upstream_error")),
                other => panic!("{other:?}"),
            }
        }
        let bad_base64 = body(
            json!({"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "!!!"}}]}}]}),
        );
        assert!(matches!(interpret(200, &bad_base64), Attempt::Fail(e) if e.status() == 502));
    }

    #[test]
    fn transient_statuses_are_retried() {
        assert_eq!(interpret(503, b"{}"), Attempt::Retry { why: Transient::Overloaded, retry_after_ms: None });
        assert_eq!(interpret(500, b""), Attempt::Retry { why: Transient::Failed, retry_after_ms: None });
        assert_eq!(interpret(502, b""), Attempt::Retry { why: Transient::Failed, retry_after_ms: None });
        assert_eq!(interpret(504, b""), Attempt::Retry { why: Transient::TimedOut, retry_after_ms: None });
        assert_eq!(interpret(408, b""), Attempt::Retry { why: Transient::TimedOut, retry_after_ms: None });
    }

    #[test]
    fn rate_limits_carry_the_retry_delay() {
        let limited =
            body(json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota", "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure"},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}
            ]}}));
        assert_eq!(interpret(429, &limited), Attempt::Retry { why: Transient::Overloaded, retry_after_ms: Some(1500) });
        assert_eq!(interpret(429, b"not json"), Attempt::Retry { why: Transient::Overloaded, retry_after_ms: None });
    }

    #[test]
    fn invalid_api_key_is_502_provider_auth_failed_without_retry() {
        let invalid = body(json!({"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "API key not valid",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}));
        match interpret(400, &invalid) {
            Attempt::Fail(err) => {
                assert_eq!((err.status(), err.code.as_str()), (502, "provider_auth_failed"));
                assert!(!err.message.contains("API key not valid"), "upstream text stays internal");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(interpret(400, b"{}"), Attempt::Fail(e) if e.code == Code::UpstreamError));
        assert!(matches!(interpret(404, b""), Attempt::Fail(e) if e.status() == 502));
    }

    #[test]
    fn exhausted_retries_map_to_503_504_502() {
        assert_eq!(give_up(Transient::Overloaded).status(), 503);
        assert_eq!(give_up(Transient::TimedOut).status(), 504);
        assert_eq!(give_up(Transient::Failed).status(), 502);
    }

    #[test]
    fn backoff_grows_with_jitter_and_respects_attempts_and_deadline() {
        // jitter 0 -> half the step; jitter 255 -> almost the whole step.
        assert_eq!(next_delay_ms(1, None, 0, 60_000), Some(250));
        assert_eq!(next_delay_ms(1, None, 255, 60_000), Some(499));
        assert_eq!(next_delay_ms(2, None, 0, 60_000), Some(500));
        assert_eq!(next_delay_ms(3, None, 0, 60_000), None, "three attempts at most");
        assert_eq!(next_delay_ms(1, Some(47_000), 0, 60_000), Some(47_000));
        assert_eq!(next_delay_ms(1, Some(47_000), 0, 10_000), None, "retryDelay past the deadline");
        assert_eq!(next_delay_ms(1, None, 0, 1_100), None, "no time left for another attempt");
    }

    #[test]
    fn a_model_turn_keeps_its_parts_and_signatures_as_sent_and_drops_the_drafts() {
        let response = body(json!({"candidates": [{"content": {"parts": [
            {"text": "thinking", "thought": true},
            {"inlineData": {"mimeType": "image/png", "data": b64(JPEG)}, "thought": true},
            {"inlineData": {"mimeType": "image/png", "data": b64(PNG)}, "thoughtSignature": "ZWFybGllcg=="},
            {"text": "Here \"it\" is.", "thoughtSignature": "c2lnLTE="},
            {"inlineData": {"mimeType": "image/jpeg", "data": b64(JPEG)}, "thoughtSignature": "c2lnLTI="}
        ]}}]}));
        let Attempt::Image(image) = interpret(200, &response) else { panic!() };
        let turn = image.turn.unwrap();
        // Sent back: the same parts in the same order (the earlier image replaced by the
        // last, the one delivered), the image's data spliced in from R2.
        let sent = turn.replace(IMAGE_SLOT, &b64(JPEG));
        let value: serde_json::Value = serde_json::from_str(sent.trim_end_matches(',')).unwrap();
        assert_eq!(
            value,
            json!({"role": "model", "parts": [
                {"text": "Here \"it\" is.", "thoughtSignature": "c2lnLTE="},
                {"inlineData": {"mimeType": "image/jpeg", "data": b64(JPEG)}, "thoughtSignature": "c2lnLTI="}
            ]})
        );
        assert_eq!(turn.matches(IMAGE_SLOT).count(), 1);
        let user: serde_json::Value =
            serde_json::from_str(user_turn("a \"quoted\" fox", &[]).trim_end_matches(',')).unwrap();
        assert_eq!(user, json!({"role": "user", "parts": [{"text": "a \"quoted\" fox"}]}));
    }

    #[test]
    fn a_turn_too_large_to_keep_is_not_kept_and_costs_no_memory() {
        let many: Vec<serde_json::Value> =
            (0..10_000).map(|i| json!({"text": "", "thoughtSignature": format!("s{i}")})).collect();
        let mut parts = many;
        parts.push(json!({"inlineData": {"mimeType": "image/jpeg", "data": b64(JPEG)}}));
        let response = body(json!({"candidates": [{"content": {"parts": parts}}]}));
        let Attempt::Image(image) = interpret(200, &response) else { panic!() };
        assert_eq!(image.turn, None, "past MAX_TURN_PARTS the turn is dropped, the image kept");
        let long = "x".repeat(MAX_TURN_BYTES + 1);
        let response = body(json!({"candidates": [{"content": {"parts": [
            {"text": long}, {"inlineData": {"mimeType": "image/jpeg", "data": b64(JPEG)}}]}}]}));
        let Attempt::Image(image) = interpret(200, &response) else { panic!() };
        assert_eq!(image.turn, None);
    }
}
