//! The one error type of the API and its JSON envelope.
//!
//! Every failure a handler can meet becomes an [`ApiError`]; the app turns it into
//! `{"error": {type, code, message, param, request_id}}` with the right status. Internal
//! failures are logged where they happen and reach the client only as a generic 500.

use serde::Serialize;

/// The `type` field of the envelope: the broad class a client can switch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    InvalidRequestError,
    AuthenticationError,
    PermissionError,
    NotFoundError,
    ConflictError,
    RateLimitError,
    ContentPolicyError,
    UpstreamError,
    ApiError,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub kind: ErrorType,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    /// Extra response headers (`Allow`, `Retry-After`, rate-limit counters...).
    pub headers: Vec<(&'static str, String)>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: EnvelopeBody<'a>,
}

#[derive(Serialize)]
struct EnvelopeBody<'a> {
    #[serde(rename = "type")]
    kind: ErrorType,
    code: &'a str,
    message: &'a str,
    param: Option<&'a str>,
    request_id: &'a str,
}

impl ApiError {
    pub fn new(status: u16, kind: ErrorType, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, kind, code, message: message.into(), param: None, headers: Vec::new() }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// 400: the body is not JSON, or not the JSON object the route takes.
    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(400, ErrorType::InvalidRequestError, "invalid_json", message)
    }

    /// 400: a field holds a value outside the documented set (an unknown size, style...).
    pub fn invalid_value(param: &str, message: impl Into<String>) -> Self {
        Self::new(400, ErrorType::InvalidRequestError, "invalid_value", message).with_param(param)
    }

    /// 422: a field fails validation (missing, empty, too long, wrong type, out of range).
    pub fn validation(code: &'static str, param: &str, message: impl Into<String>) -> Self {
        Self::new(422, ErrorType::InvalidRequestError, code, message).with_param(param)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(401, ErrorType::AuthenticationError, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, ErrorType::NotFoundError, "not_found", message)
    }

    pub fn route_not_found(method: &str, path: &str) -> Self {
        Self::new(404, ErrorType::NotFoundError, "route_not_found", format!("no route for {method} {path}"))
    }

    pub fn method_not_allowed(method: &str, allowed: &[&str]) -> Self {
        let allow = allowed.join(", ");
        Self::new(
            405,
            ErrorType::InvalidRequestError,
            "method_not_allowed",
            format!("method {method} is not allowed here; use {allow}"),
        )
        .with_header("allow", allow)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(409, ErrorType::ConflictError, code, message)
    }

    pub fn payload_too_large(limit_bytes: usize) -> Self {
        Self::new(
            413,
            ErrorType::InvalidRequestError,
            "payload_too_large",
            format!("request body exceeds {limit_bytes} bytes"),
        )
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            415,
            ErrorType::InvalidRequestError,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        )
    }

    pub fn not_implemented() -> Self {
        Self::new(501, ErrorType::ApiError, "not_implemented", "this route is not available yet")
    }

    /// 500 that names the missing or invalid setting (never its value).
    pub fn server_misconfigured(setting: &str) -> Self {
        Self::new(
            500,
            ErrorType::ApiError,
            "server_misconfigured",
            format!("the server is misconfigured: {setting} is missing or invalid"),
        )
    }

    /// 500 for anything unexpected. Log the cause where it happened, never here.
    pub fn internal() -> Self {
        Self::new(500, ErrorType::ApiError, "internal_error", "an internal error occurred")
    }

    /// The envelope body, as sent.
    pub fn envelope_json(&self, request_id: &str) -> String {
        let envelope = Envelope {
            error: EnvelopeBody {
                kind: self.kind,
                code: self.code,
                message: &self.message,
                param: self.param.as_deref(),
                request_id,
            },
        };
        // Serialising plain strings cannot fail; fall back to a fixed body rather than panic.
        serde_json::to_string(&envelope).unwrap_or_else(|_| {
            r#"{"error":{"type":"api_error","code":"internal_error","message":"an internal error occurred","param":null,"request_id":null}}"#.to_string()
        })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// Unexpected `worker` errors (bindings, JS exceptions) are logged and become a bare 500.
impl From<worker::Error> for ApiError {
    fn from(err: worker::Error) -> Self {
        crate::log::error("worker error", &crate::db::describe_error(&err));
        ApiError::internal()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_every_field_of_the_contract() {
        let err = ApiError::validation("prompt_required", "prompt", "prompt must not be empty");
        let body: serde_json::Value = serde_json::from_str(&err.envelope_json("req_abc")).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {
                "type": "invalid_request_error",
                "code": "prompt_required",
                "message": "prompt must not be empty",
                "param": "prompt",
                "request_id": "req_abc"
            }})
        );
        assert_eq!(err.status, 422);
    }

    #[test]
    fn param_is_null_when_absent() {
        let body: serde_json::Value = serde_json::from_str(&ApiError::internal().envelope_json("req_x")).unwrap();
        assert!(body["error"]["param"].is_null());
        assert_eq!(body["error"]["type"], "api_error");
    }

    #[test]
    fn method_not_allowed_lists_allowed_methods_in_allow_header() {
        let err = ApiError::method_not_allowed("PUT", &["GET", "POST"]);
        assert_eq!(err.status, 405);
        assert_eq!(err.headers, vec![("allow", "GET, POST".to_string())]);
    }

    #[test]
    fn message_with_quotes_is_escaped() {
        let err = ApiError::invalid_json("unexpected \"}\" at line 1");
        let body: serde_json::Value = serde_json::from_str(&err.envelope_json("r")).unwrap();
        assert_eq!(body["error"]["message"], "unexpected \"}\" at line 1");
    }
}
