//! The one error type of the API and its JSON envelope.
//!
//! Every failure a handler can meet becomes an [`ApiError`]; `app::handle` turns it into
//! `{"error": {type, code, message, param, request_id}}` with the status its [`Code`]
//! fixes. An internal failure carries its `cause` (never serialised): the app logs it once,
//! with the request id, and the client sees only the generic 500.

use serde::Serialize;

/// The `type` field of the envelope: the broad class a client can switch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
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

macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident = $code:literal, $status:literal, $kind:ident;)*) => {
        /// Every error code the API answers with, and the status and type it always has.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code {
            $($(#[$doc])* $variant,)*
        }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The `code` field of the envelope.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $code,)*
                }
            }

            pub fn status(self) -> u16 {
                match self {
                    $(Code::$variant => $status,)*
                }
            }

            pub fn kind(self) -> ErrorType {
                match self {
                    $(Code::$variant => ErrorType::$kind,)*
                }
            }
        }
    };
}

codes! {
    InvalidJson = "invalid_json", 400, InvalidRequestError;
    InvalidValue = "invalid_value", 400, InvalidRequestError;
    InvalidIdempotencyKey = "invalid_idempotency_key", 400, InvalidRequestError;
    /// OpenAI's route refuses unknown fields with 400, as OpenAI does.
    UnknownParameterOpenAi = "unknown_parameter", 400, InvalidRequestError;
    /// An input image that is not base64, not a data: URL, or not PNG, JPEG or WebP by
    /// its bytes (or not the type it declares).
    InvalidImage = "invalid_image", 400, InvalidRequestError;
    InvalidMultipart = "invalid_multipart", 400, InvalidRequestError;
    /// A parameter of OpenAI's API this service does not offer (`mask`), with why.
    UnsupportedParameter = "unsupported_parameter", 400, InvalidRequestError;
    ContentPolicyViolation = "content_policy_violation", 400, ContentPolicyError;
    MissingAuthorization = "missing_authorization", 401, AuthenticationError;
    MalformedAuthorization = "malformed_authorization", 401, AuthenticationError;
    ApiKeyNotAccepted = "api_key_not_accepted", 401, AuthenticationError;
    JwtNotAccepted = "jwt_not_accepted", 401, AuthenticationError;
    MalformedApiKey = "malformed_api_key", 401, AuthenticationError;
    InvalidApiKey = "invalid_api_key", 401, AuthenticationError;
    RevokedApiKey = "revoked_api_key", 401, AuthenticationError;
    ExpiredApiKey = "expired_api_key", 401, AuthenticationError;
    InvalidToken = "invalid_token", 401, AuthenticationError;
    TokenExpired = "token_expired", 401, AuthenticationError;
    /// The token was logged out, or the password changed after it was issued.
    TokenRevoked = "token_revoked", 401, AuthenticationError;
    InvalidCredentials = "invalid_credentials", 401, AuthenticationError;
    InvalidSignature = "invalid_signature", 403, PermissionError;
    UrlExpired = "url_expired", 403, PermissionError;
    RegistrationClosed = "registration_closed", 403, PermissionError;
    AccountSuspended = "account_suspended", 403, PermissionError;
    NotFound = "not_found", 404, NotFoundError;
    RouteNotFound = "route_not_found", 404, NotFoundError;
    MethodNotAllowed = "method_not_allowed", 405, InvalidRequestError;
    EmailTaken = "email_taken", 409, ConflictError;
    IdempotencyInProgress = "idempotency_in_progress", 409, ConflictError;
    TooManyKeys = "too_many_keys", 409, ConflictError;
    /// Only a queued generation can be canceled.
    NotCancelable = "not_cancelable", 409, ConflictError;
    /// A webhook_url was given before the account created its signing secret.
    WebhookSecretMissing = "webhook_secret_missing", 409, ConflictError;
    PayloadTooLarge = "payload_too_large", 413, InvalidRequestError;
    UnsupportedMediaType = "unsupported_media_type", 415, InvalidRequestError;
    PromptRequired = "prompt_required", 422, InvalidRequestError;
    PromptTooLong = "prompt_too_long", 422, InvalidRequestError;
    EmailRequired = "email_required", 422, InvalidRequestError;
    PasswordRequired = "password_required", 422, InvalidRequestError;
    InvalidEmail = "invalid_email", 422, InvalidRequestError;
    PasswordTooShort = "password_too_short", 422, InvalidRequestError;
    PasswordTooLong = "password_too_long", 422, InvalidRequestError;
    InvalidName = "invalid_name", 422, InvalidRequestError;
    InvalidType = "invalid_type", 422, InvalidRequestError;
    OutOfRange = "out_of_range", 422, InvalidRequestError;
    UnknownParameter = "unknown_parameter", 422, InvalidRequestError;
    ConflictingParameters = "conflicting_parameters", 422, InvalidRequestError;
    /// OpenAI's edits route needs at least one `image`.
    ImageRequired = "image_required", 422, InvalidRequestError;
    /// An input over its own limit, or inputs together over theirs.
    ImageTooLarge = "image_too_large", 422, InvalidRequestError;
    InvalidWebhookUrl = "invalid_webhook_url", 422, InvalidRequestError;
    /// The chosen model does not offer what was asked (a resolution, a ratio).
    UnsupportedByModel = "unsupported_by_model", 422, InvalidRequestError;
    IdempotencyKeyReused = "idempotency_key_reused", 422, InvalidRequestError;
    /// A conversation past its documented limit of generations or replayed bytes.
    ConversationTooLong = "conversation_too_long", 422, InvalidRequestError;
    /// `previous_generation_id` names a generation of the other key mode (test or live).
    ModeMismatch = "mode_mismatch", 422, InvalidRequestError;
    RateLimitExceeded = "rate_limit_exceeded", 429, RateLimitError;
    DailyQuotaExceeded = "daily_quota_exceeded", 429, RateLimitError;
    /// The account's live images for the day, across all its keys.
    AccountQuotaExceeded = "account_quota_exceeded", 429, RateLimitError;
    /// A key's or account's daily budget in dollars cannot cover the request's worst case.
    BudgetExceeded = "budget_exceeded", 429, RateLimitError;
    TooManyLoginAttempts = "too_many_login_attempts", 429, RateLimitError;
    TooManyRegistrations = "too_many_registrations", 429, RateLimitError;
    InternalError = "internal_error", 500, ApiError;
    ServerMisconfigured = "server_misconfigured", 500, ApiError;
    StorageFailed = "storage_failed", 500, ApiError;
    UpstreamError = "upstream_error", 502, UpstreamError;
    ProviderAuthFailed = "provider_auth_failed", 502, UpstreamError;
    ProviderNotConfigured = "provider_not_configured", 503, UpstreamError;
    UpstreamOverloaded = "upstream_overloaded", 503, UpstreamError;
    /// The deployment's live images or dollars for the day (`DEPLOYMENT_DAILY_LIVE_IMAGES`,
    /// `DEPLOYMENT_DAILY_BUDGET_USD`).
    DeploymentBudgetExhausted = "deployment_budget_exhausted", 503, RateLimitError;
    DatabaseUnavailable = "database_unavailable", 503, ApiError;
    /// The queue (or the R2 bucket it needs) is not there, or refused the message.
    QueueUnavailable = "queue_unavailable", 503, ApiError;
    UpstreamTimeout = "upstream_timeout", 504, UpstreamError;
}

/// An error, boxed: every `ApiResult` is one pointer wide on its error side, which keeps
/// the futures that carry them small.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError(Box<ErrorData>);

impl std::ops::Deref for ApiError {
    type Target = ErrorData;
    fn deref(&self) -> &ErrorData {
        &self.0
    }
}

impl std::ops::DerefMut for ApiError {
    fn deref_mut(&mut self) -> &mut ErrorData {
        &mut self.0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ErrorData {
    pub code: Code,
    pub message: String,
    pub param: Option<String>,
    /// Extra response headers (`Allow`, `Retry-After`, rate-limit counters...).
    pub headers: Vec<(&'static str, String)>,
    /// What really went wrong, for the log line of a 5xx. Never sent to the client.
    pub cause: Option<String>,
}

#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
#[cfg_attr(test, schemars(rename = "Error"))]
pub struct Envelope<'a> {
    error: EnvelopeBody<'a>,
}

#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
struct EnvelopeBody<'a> {
    #[serde(rename = "type")]
    kind: ErrorType,
    /// A stable, machine-readable code (`prompt_required`, `daily_quota_exceeded`, ...).
    #[cfg_attr(test, schemars(schema_with = "code_schema"))]
    code: &'a str,
    /// A sentence for people; may change.
    message: &'a str,
    /// The request field, header or query parameter at fault, when there is one.
    param: Option<&'a str>,
    request_id: &'a str,
}

/// Every error code the API can answer with, for the OpenAPI document.
#[cfg(test)]
fn code_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut codes: Vec<&str> = Code::ALL.iter().map(|code| code.as_str()).collect();
    codes.sort_unstable();
    codes.dedup();
    schemars::json_schema!({"type": "string", "enum": codes,
                            "description": "stable and machine-readable; see the README's error table"})
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError(Box::new(ErrorData { code, message: message.into(), param: None, headers: Vec::new(), cause: None }))
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Records what really went wrong, for the one log line of this request.
    pub fn caused_by(mut self, cause: impl Into<String>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    /// 400: the body is not JSON, or not the JSON object the route takes.
    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidJson, message)
    }

    /// 400: a field holds a value outside the documented set (an unknown size, style...).
    pub fn invalid_value(param: &str, message: impl Into<String>) -> Self {
        Self::new(Code::InvalidValue, message).with_param(param)
    }

    /// A field fails validation (missing, empty, too long, wrong type, out of range).
    pub fn validation(code: Code, param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(code, message).with_param(param)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    pub fn route_not_found(method: &str, path: &str) -> Self {
        Self::new(Code::RouteNotFound, format!("no route for {method} {path}"))
    }

    pub fn method_not_allowed(method: &str, allowed: &[&str]) -> Self {
        let allow = allowed.join(", ");
        Self::new(Code::MethodNotAllowed, format!("method {method} is not allowed here; use {allow}"))
            .with_header("allow", allow)
    }

    pub fn payload_too_large(limit_bytes: usize) -> Self {
        Self::new(Code::PayloadTooLarge, format!("request body exceeds {limit_bytes} bytes"))
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(Code::UnsupportedMediaType, "send the body as JSON with Content-Type: application/json")
    }

    /// 500 that names the missing or invalid setting (never its value).
    pub fn server_misconfigured(setting: &str) -> Self {
        Self::new(Code::ServerMisconfigured, format!("the server is misconfigured: {setting} is missing or invalid"))
            .caused_by(format!("setting {setting} is missing or invalid"))
    }

    /// 500 for anything unexpected; `cause` says what, in the log only.
    pub fn internal(cause: impl Into<String>) -> Self {
        Self::new(Code::InternalError, "an internal error occurred").caused_by(cause)
    }

    /// The envelope body, as sent.
    pub fn envelope_json(&self, request_id: &str) -> String {
        let envelope = Envelope {
            error: EnvelopeBody {
                kind: self.code.kind(),
                code: self.code.as_str(),
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
        write!(f, "{} {}: {}", self.status(), self.code.as_str(), self.message)?;
        match &self.cause {
            Some(cause) => write!(f, " (cause: {cause})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for ApiError {}

/// A loggable description of a `worker` error. `Error::D1` carries a clean `cause()`
/// ("UNIQUE constraint failed: users.email") where its `Display` is a noisy dump.
pub fn describe_worker_error(err: &worker::Error) -> String {
    match err {
        worker::Error::D1(d1) => d1.cause(),
        other => other.to_string(),
    }
}

/// Unexpected `worker` errors (bindings, D1, JS exceptions) become a bare 500 that keeps
/// its cause for the log.
impl From<worker::Error> for ApiError {
    fn from(err: worker::Error) -> Self {
        ApiError::internal(describe_worker_error(&err))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_every_field_of_the_contract() {
        let err = ApiError::validation(Code::PromptRequired, "prompt", "prompt must not be empty");
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
        assert_eq!(err.status(), 422);
    }

    #[test]
    fn param_is_null_when_absent() {
        let body: serde_json::Value = serde_json::from_str(&ApiError::internal("boom").envelope_json("req_x")).unwrap();
        assert!(body["error"]["param"].is_null());
        assert_eq!(body["error"]["type"], "api_error");
    }

    #[test]
    fn the_cause_is_never_sent() {
        let err = ApiError::internal("D1_ERROR: no such table: usage");
        let sent = err.envelope_json("req_x");
        assert!(!sent.contains("usage") && !sent.contains("D1"), "{sent}");
        assert!(err.to_string().contains("no such table"), "the cause is there for the log");
    }

    #[test]
    fn method_not_allowed_lists_allowed_methods_in_allow_header() {
        let err = ApiError::method_not_allowed("PUT", &["GET", "POST"]);
        assert_eq!(err.status(), 405);
        assert_eq!(err.headers, vec![("allow", "GET, POST".to_string())]);
    }

    #[test]
    fn message_with_quotes_is_escaped() {
        let err = ApiError::invalid_json("unexpected \"}\" at line 1");
        let body: serde_json::Value = serde_json::from_str(&err.envelope_json("r")).unwrap();
        assert_eq!(body["error"]["message"], "unexpected \"}\" at line 1");
    }

    #[test]
    fn codes_are_unique_per_status_and_statuses_match_their_type() {
        for code in Code::ALL {
            let same_name: Vec<&Code> = Code::ALL.iter().filter(|c| c.as_str() == code.as_str()).collect();
            // A name is shared only by the two `unknown_parameter` variants (422 and OpenAI's 400).
            assert!(same_name.len() == 1 || code.as_str() == "unknown_parameter", "{code:?}");
            let expected = match code.status() {
                401 => ErrorType::AuthenticationError,
                403 => ErrorType::PermissionError,
                404 => ErrorType::NotFoundError,
                409 => ErrorType::ConflictError,
                429 => ErrorType::RateLimitError,
                _ => code.kind(),
            };
            assert_eq!(code.kind(), expected, "{code:?}");
            assert!((400..600).contains(&code.status()));
        }
    }
}
