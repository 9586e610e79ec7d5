//! Webhooks, as the Standard Webhooks specification has them: each event is POSTed with
//! `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "id.timestamp.body">`, keyed by the account's signing secret (`whsec_` + base64).
//!
//! The secret is never stored: it is derived from a Worker secret (WEBHOOK_SECRET_KEY, else
//! JWT_SECRET), the account id and the account's secret version. Rotating bumps the
//! version; for 24 hours the previous secret signs too (two signatures in the header, as
//! the specification allows), so receivers can switch without losing an event.
//!
//! Owns `GET/POST /v1/webhook_secret` and the `webhook_secret_*` columns of `users`.

use crate::auth;
use crate::db;
use crate::error::{ApiError, ApiResult, Code};
use crate::http::{self, RequestContext};
use base64::Engine;
use serde::Serialize;
use worker::{Request, Response};

pub const SECRET_PREFIX: &str = "whsec_";
/// How long the previous secret keeps signing after a rotation.
pub const PREVIOUS_SECRET_VALID_MS: u64 = 24 * 60 * 60 * 1000;
pub const MAX_URL_LEN: usize = 2048;
/// One delivery attempt's time limit.
pub const DELIVERY_TIMEOUT_MS: u64 = 10_000;

// ---------------------------------------------------------------- pure parts

/// The account's signing secret at `version`: `whsec_` + base64 of 32 bytes.
pub fn secret(master: &str, user_id: &str, version: u32) -> String {
    let key = hmac_sha256::Hash::hash(format!("nanobanana/webhook-secret/v1\0{master}").as_bytes());
    let bytes = hmac_sha256::HMAC::mac(format!("{user_id}:{version}").as_bytes(), key);
    format!("{SECRET_PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The secrets that sign now: the current one, and the previous one within 24 hours of a
/// rotation. None before the account created one (version 0).
pub fn signing_secrets(
    master: &str,
    user_id: &str,
    version: u32,
    rotated_at_ms: Option<u64>,
    now_ms: u64,
) -> Vec<String> {
    let mut secrets = Vec::new();
    if version == 0 {
        return secrets;
    }
    secrets.push(secret(master, user_id, version));
    if version > 1 && rotated_at_ms.is_some_and(|at| now_ms < at + PREVIOUS_SECRET_VALID_MS) {
        secrets.push(secret(master, user_id, version - 1));
    }
    secrets
}

/// `v1,<sig>` for each secret, space-separated: the `webhook-signature` header.
pub fn signature_header(secrets: &[String], webhook_id: &str, timestamp: u64, body: &str) -> String {
    secrets
        .iter()
        .map(|secret| {
            let key = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
            let key = base64::engine::general_purpose::STANDARD.decode(key).unwrap_or_default();
            let mac = hmac_sha256::HMAC::mac(format!("{webhook_id}.{timestamp}.{body}").as_bytes(), key);
            format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A `webhook_url` must be `https://` (or, when `allow_http_localhost`, plain http to
/// 127.0.0.1 or localhost), at most 2,048 characters, with a host, no credentials and no
/// spaces or control characters. 422 `invalid_webhook_url` otherwise.
pub fn check_url(url: &str, allow_http_localhost: bool) -> ApiResult<()> {
    let refuse = |why: &str| ApiError::validation(Code::InvalidWebhookUrl, "webhook_url", format!("webhook_url {why}"));
    if url.len() > MAX_URL_LEN {
        return Err(refuse("must be at most 2048 characters"));
    }
    if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(refuse("must not contain spaces or control characters"));
    }
    let (rest, plain_http) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(rest), _) => (rest, false),
        (None, Some(rest)) if allow_http_localhost => (rest, true),
        _ => return Err(refuse("must be an https:// URL")),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(refuse("must not carry credentials"));
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    if host.is_empty() {
        return Err(refuse("must name a host"));
    }
    if plain_http && !matches!(host, "127.0.0.1" | "localhost") {
        return Err(refuse("must be https:// (plain http only to 127.0.0.1 or localhost here)"));
    }
    Ok(())
}

/// Seconds to wait before retry `retry` (1-based), or None when the attempts are spent.
pub fn retry_delay(delays: &[u32], retry: u32) -> Option<u32> {
    delays.get(usize::try_from(retry).ok()?.checked_sub(1)?).copied()
}

// ---------------------------------------------------------------- delivery

/// One attempt's outcome: the receiver's status (None on a network error or timeout).
pub struct Delivery {
    pub status: Option<u16>,
}

impl Delivery {
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// POSTs one signed event. Never follows a redirect (a 3xx is a failed attempt); gives
/// up after 10 seconds.
pub async fn deliver(url: &str, secrets: &[String], webhook_id: &str, body: &str, now_ms: u64) -> Delivery {
    use futures_util::future::{select, Either};
    use worker::{AbortController, Delay, Fetch};
    let timestamp = now_ms / 1000;
    let headers = [
        ("content-type", "application/json"),
        ("user-agent", "NanoBanana-Edge-Webhooks/1"),
        ("webhook-id", webhook_id),
        ("webhook-timestamp", &timestamp.to_string()),
        ("webhook-signature", &signature_header(secrets, webhook_id, timestamp, body)),
    ];
    let request = crate::http::outbound_post(url, &headers, &body.into(), true);
    let Ok(request) = request else { return Delivery { status: None } };
    let controller = AbortController::default();
    let signal = controller.signal();
    let fetch = Fetch::Request(request);
    let exchange = fetch.send_with_signal(&signal);
    let timeout = Delay::from(std::time::Duration::from_millis(DELIVERY_TIMEOUT_MS));
    futures_util::pin_mut!(exchange);
    match select(exchange, timeout).await {
        Either::Left((Ok(response), _)) => Delivery { status: Some(response.status_code()) },
        Either::Left((Err(_), _)) => Delivery { status: None },
        Either::Right(_) => {
            controller.abort();
            Delivery { status: None }
        }
    }
}

// ---------------------------------------------------------------- the account's secret

crate::db::row! {
    pub struct SecretState {
        pub webhook_secret_version: u32,
        pub webhook_secret_rotated_at: Option<String>,
        /// A suspended account is sent nothing.
        pub suspended_at: Option<String>,
    }
}

/// An account's secret version and rotation time, and whether it is suspended (None: no
/// such account).
pub async fn secret_state(db: &db::Db<'_>, user_id: &str) -> ApiResult<Option<SecretState>> {
    db.first(
        db.prepare("SELECT webhook_secret_version, webhook_secret_rotated_at, suspended_at FROM users WHERE id = ?1")
            .bind(&[db::text(user_id)])?,
    )
    .await
}

impl SecretState {
    pub fn secrets(&self, master: &str, user_id: &str, now_ms: u64) -> Vec<String> {
        let rotated = self.webhook_secret_rotated_at.as_deref().and_then(crate::time::millis_from_iso);
        signing_secrets(master, user_id, self.webhook_secret_version, rotated, now_ms)
    }
}

/// `GET /v1/webhook_secret`, and with `secret` the answer of `POST`.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct WebhookSecret {
    object: WebhookSecretObject,
    /// The full secret: only in the answer of the POST that created or rotated it.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    /// `whsec_` and the next 6 characters, to tell secrets apart.
    prefix: String,
    version: u32,
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::timestamp"))]
    rotated_at: Option<String>,
    /// Until when the previous secret also signs (24 hours after a rotation), or null.
    previous_valid_until: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum WebhookSecretObject {
    WebhookSecret,
}

fn answer(master: &str, user_id: &str, state: &SecretState, show: bool) -> WebhookSecret {
    let current = secret(master, user_id, state.webhook_secret_version);
    let previous_valid_until = state
        .webhook_secret_rotated_at
        .as_deref()
        .and_then(crate::time::millis_from_iso)
        .filter(|_| state.webhook_secret_version > 1)
        .map(|at| crate::time::iso_from_millis(at + PREVIOUS_SECRET_VALID_MS));
    WebhookSecret {
        object: WebhookSecretObject::WebhookSecret,
        prefix: current.chars().take(SECRET_PREFIX.len() + 6).collect(),
        secret: show.then_some(current),
        version: state.webhook_secret_version,
        rotated_at: state.webhook_secret_rotated_at.clone(),
        previous_valid_until,
    }
}

/// `GET /v1/webhook_secret`: which secret signs (its prefix), never the secret itself.
pub async fn get(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    let user = auth::require_account(req, rc).await?;
    let state = secret_state(&rc.db()?, &user.user_id).await?.ok_or_else(|| ApiError::not_found("no such account"))?;
    if state.webhook_secret_version == 0 {
        return Err(ApiError::not_found("this account has no webhook secret yet: POST /v1/webhook_secret creates one"));
    }
    http::json(200, &answer(rc.config.webhook_secret_key()?, &user.user_id, &state, false))
}

/// `POST /v1/webhook_secret`: creates the account's secret (201), or rotates it (200; the
/// previous one signs beside it for 24 hours). The full secret is in this answer only.
pub async fn rotate(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    let user = auth::require_account(req, rc).await?;
    let master = rc.config.webhook_secret_key()?;
    let db = rc.db()?;
    // The rotation time is kept only once there is a previous secret to retire.
    let state: SecretState = db
        .first(
            db.prepare(
                "UPDATE users SET webhook_secret_version = webhook_secret_version + 1,
                        webhook_secret_rotated_at = CASE WHEN webhook_secret_version = 0 THEN NULL ELSE ?2 END
                 WHERE id = ?1 RETURNING webhook_secret_version, webhook_secret_rotated_at",
            )
            .bind(&[db::text(&user.user_id), db::text(&crate::time::iso_from_millis(rc.now_ms))])?,
        )
        .await?
        .ok_or_else(|| ApiError::not_found("no such account"))?;
    let status = if state.webhook_secret_version == 1 { 201 } else { 200 };
    http::json(status, &answer(master, &user.user_id, &state, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn secrets_are_derived_per_account_and_version() {
        let a1 = secret(MASTER, "user-a", 1);
        assert!(
            a1.starts_with("whsec_") && base64::engine::general_purpose::STANDARD.decode(&a1[6..]).unwrap().len() == 32
        );
        assert_eq!(a1, secret(MASTER, "user-a", 1));
        assert_ne!(a1, secret(MASTER, "user-a", 2));
        assert_ne!(a1, secret(MASTER, "user-b", 1));
        assert_ne!(a1, secret("another master key of 32 chars..", "user-a", 1));
    }

    #[test]
    fn the_previous_secret_signs_for_24_hours_after_a_rotation() {
        let at = 1_000_000;
        assert!(signing_secrets(MASTER, "u", 0, None, at).is_empty());
        assert_eq!(signing_secrets(MASTER, "u", 1, None, at).len(), 1);
        let both = signing_secrets(MASTER, "u", 3, Some(at), at + PREVIOUS_SECRET_VALID_MS - 1);
        assert_eq!(both, vec![secret(MASTER, "u", 3), secret(MASTER, "u", 2)]);
        assert_eq!(signing_secrets(MASTER, "u", 3, Some(at), at + PREVIOUS_SECRET_VALID_MS).len(), 1);
    }

    /// The example of the Standard Webhooks specification (its reference libraries' tests).
    #[test]
    fn signatures_match_the_specification_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string();
        let header = signature_header(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, r#"{"test": 2432232314}"#);
        assert_eq!(header, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let two = signature_header(&["whsec_AAAA".into(), "whsec_BBBB".into()], "m", 1, "{}");
        assert_eq!(two.split(' ').count(), 2);
    }

    #[test]
    fn urls_must_be_https_and_sane() {
        for ok in ["https://example.com/hook", "https://example.com:8443/a?b=c", "https://x.io"] {
            assert!(check_url(ok, false).is_ok(), "{ok}");
        }
        assert!(check_url("http://127.0.0.1:9000/hook", true).is_ok());
        assert!(check_url("http://localhost/hook", true).is_ok());
        let long = format!("https://example.com/{}", "a".repeat(2048));
        for (bad, allow) in [
            ("http://127.0.0.1:9000/hook", false),
            ("http://example.com/hook", true),
            ("ftp://example.com", false),
            ("https://", false),
            ("https://user:pass@example.com/", false),
            ("https://exa mple.com/", false),
            ("https://example.com/\n", false),
            (long.as_str(), false),
            ("javascript:alert(1)", true),
        ] {
            let err = check_url(bad, allow).unwrap_err();
            assert_eq!(
                (err.status(), err.code.as_str(), err.param.as_deref()),
                (422, "invalid_webhook_url", Some("webhook_url")),
                "{bad}"
            );
        }
    }

    #[test]
    fn retries_follow_the_schedule_then_stop() {
        let delays = [60, 300, 900, 2400];
        assert_eq!(
            (1..=5).map(|r| retry_delay(&delays, r)).collect::<Vec<_>>(),
            vec![Some(60), Some(300), Some(900), Some(2400), None]
        );
        assert_eq!(retry_delay(&delays, 0), None);
    }
}
