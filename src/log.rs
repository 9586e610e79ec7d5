//! One-line JSON logs. Callers pass what happened and a detail that holds no secret:
//! never a key, token, password or request body.
//!
//! Each request ends in exactly one `request` line (`app::handle`); a 5xx puts its code and
//! cause on that line, so every failure is logged once, with its request id. Work that
//! outlives the response (`ctx.wait_until`) logs its own failures with `error_for`.

use serde::Serialize;

pub fn error(event: &str, detail: &str) {
    emit(&Line { level: "error", event, request_id: None, detail: Some(detail) });
}

/// An error of work done for a request but outside its response (after it, or beside it).
pub fn error_for(request_id: &str, event: &str, detail: &str) {
    emit(&Line { level: "error", event, request_id: Some(request_id), detail: Some(detail) });
}

pub fn info(event: &str, detail: &str) {
    emit(&Line { level: "info", event, request_id: None, detail: Some(detail) });
}

/// What happened to part of a request that still answered (one image of several failed).
pub fn info_for(request_id: &str, event: &str, detail: &str) {
    emit(&Line { level: "info", event, request_id: Some(request_id), detail: Some(detail) });
}

#[derive(Serialize)]
struct Line<'a> {
    level: &'static str,
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

/// The one line of a request: what was asked, how it ended, how many D1 round trips it
/// took, and for a 5xx the error code and its cause.
#[derive(Serialize)]
pub struct RequestLine<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub d1_queries: u32,
    /// The wasm instance's linear memory after the request. It only ever grows, so this is
    /// the isolate's peak so far (what `scripts/bench.sh` reads for the largest edit).
    pub wasm_memory_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<&'a str>,
}

/// The wasm instance's linear memory in bytes (0 natively).
pub fn wasm_memory_bytes() -> u64 {
    #[cfg(target_arch = "wasm32")]
    return core::arch::wasm32::memory_size(0) as u64 * 65_536;
    #[cfg(not(target_arch = "wasm32"))]
    0
}

pub fn request(line: &RequestLine) {
    #[derive(Serialize)]
    struct Tagged<'a> {
        level: &'static str,
        event: &'static str,
        #[serde(flatten)]
        line: &'a RequestLine<'a>,
    }
    let level = if line.status >= 500 { "error" } else { "info" };
    emit(&Tagged { level, event: "request", line });
}

/// The one line of a queue message: which message, which job of which generation, how it
/// ended (`acked`, or `retried` with the cause). A queue batch logs one line per message;
/// `request_id` is the consumer invocation's, shared by its messages.
#[derive(Serialize)]
pub struct QueueLine<'a> {
    pub request_id: &'a str,
    pub queue: &'a str,
    pub message_id: &'a str,
    /// `generate`, `webhook`, or `unreadable`.
    pub job: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation_id: Option<&'a str>,
    pub outcome: &'a str,
    /// The generation's failure code, when the job ran and the generation failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<&'a str>,
}

pub fn queue_message(line: &QueueLine) {
    #[derive(Serialize)]
    struct Tagged<'a> {
        level: &'static str,
        event: &'static str,
        #[serde(flatten)]
        line: &'a QueueLine<'a>,
    }
    let level = if line.outcome == "acked" { "info" } else { "error" };
    emit(&Tagged { level, event: "queue_message", line });
}

fn emit<T: Serialize>(line: &T) {
    // Serialising strings and numbers cannot fail.
    let text = serde_json::to_string(line).unwrap_or_default();
    let is_error = text.starts_with(r#"{"level":"error""#);
    write(is_error, &text);
}

#[cfg_attr(not(target_arch = "wasm32"), allow(unused_variables))]
fn write(is_error: bool, line: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        if is_error {
            worker::console_error!("{line}");
        } else {
            worker::console_log!("{line}");
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("{line}");
}
