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

/// A `webhook_url` must be `https://`, at most 2,048 characters, with a public host, no
/// credentials and no spaces or control characters. 422 `invalid_webhook_url` otherwise.
///
/// The host may not be a name for this machine (`localhost`, `*.localhost`), a name only
/// a private resolver answers (one label, `*.local`, `*.internal`), non-ASCII (IDNA could
/// map full-width digits to an address: send the `xn--` form) or percent-encoded, nor an
/// address, in any form the WHATWG URL parser reads as one (`0x7f.1`, `2130706433`,
/// `[::ffff:127.0.0.1]`), in a loopback, private, CGNAT, link-local, unique-local,
/// multicast, reserved or unspecified range ([`is_public_v4`], [`is_public_v6`]).
/// Resolution is not checked: a public name that resolves to a private address is the
/// platform's to refuse (Cloudflare's fetch does not reach private networks).
///
/// With `allow_http_localhost` (tests), `127.0.0.1` and `localhost` are allowed, over
/// plain http too; nothing else private is.
pub fn check_url(url: &str, allow_http_localhost: bool) -> ApiResult<()> {
    let refuse = |why: &str| ApiError::validation(Code::InvalidWebhookUrl, "webhook_url", format!("webhook_url {why}"));
    if url.len() > MAX_URL_LEN {
        return Err(refuse("must be at most 2048 characters"));
    }
    if url.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'\\') {
        return Err(refuse("must not contain spaces, backslashes or control characters"));
    }
    let lower = url.to_ascii_lowercase();
    let (rest, plain_http) = match (lower.strip_prefix("https://"), lower.strip_prefix("http://")) {
        (Some(rest), _) => (rest, false),
        (None, Some(rest)) if allow_http_localhost => (rest, true),
        _ => return Err(refuse("must be an https:// URL")),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(refuse("must not carry credentials"));
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    if host.is_empty() {
        return Err(refuse("must name a host"));
    }
    let loopback_allowed = allow_http_localhost && matches!(host, "127.0.0.1" | "localhost");
    if plain_http && !loopback_allowed {
        return Err(refuse("must be https:// (plain http only to 127.0.0.1 or localhost here)"));
    }
    match host_kind(host) {
        _ if loopback_allowed => Ok(()),
        Host::Public => Ok(()),
        Host::Private => Err(refuse("must not name a loopback, private, link-local or reserved address")),
        Host::Local => Err(refuse("must name a public host, not localhost or a local-only name")),
        Host::Unreadable => Err(refuse("must name its host in plain ASCII (the xn-- form for other scripts)")),
    }
}

/// What a URL's host (lowercase) names, as far as can be told without resolving it.
#[derive(Debug, PartialEq, Eq)]
enum Host {
    Public,
    /// An address in a range a webhook may not reach.
    Private,
    /// A name for this machine or its private network.
    Local,
    /// Not ASCII, percent-encoded, or an address the URL parser would refuse.
    Unreadable,
}

fn host_kind(host: &str) -> Host {
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.strip_suffix(']').and_then(crate::ip::parse_v6) {
            Some(ip) if is_public_v6(ip) => Host::Public,
            Some(_) => Host::Private,
            None => Host::Unreadable,
        };
    }
    if !host.is_ascii() || host.contains('%') {
        return Host::Unreadable;
    }
    match whatwg_ipv4(host) {
        Some(Some(ip)) if is_public_v4(ip) => return Host::Public,
        Some(Some(_)) => return Host::Private,
        Some(None) => return Host::Unreadable,
        None => {}
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let local_suffix = [".localhost", ".local", ".internal"].iter().any(|suffix| name.ends_with(suffix));
    if name == "localhost" || local_suffix || !name.contains('.') {
        return Host::Local;
    }
    Host::Public
}

/// A host as the WHATWG URL parser reads IPv4 (what `fetch` does): None if it is a domain,
/// `Some(None)` if it ends in a number but is no valid address, else the address. Parts may
/// be decimal, octal (`0177`) or hex (`0x7f`), and the last fills the remaining bytes:
/// `127.1`, `0x7f000001` and `2130706433` are all 127.0.0.1.
fn whatwg_ipv4(host: &str) -> Option<Option<[u8; 4]>> {
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    let parts: Vec<&str> = trimmed.split('.').collect();
    let last = parts.last()?;
    let number = |part: &str| -> Option<u64> {
        let (digits, radix) = match part.strip_prefix("0x") {
            Some(hex) => (hex, 16),
            None if part.len() > 1 && part.starts_with('0') => (&part[1..], 8),
            None => (part, 10),
        };
        if digits.is_empty() {
            return (radix == 16).then_some(0);
        }
        if digits.len() > 32 {
            return Some(u64::MAX);
        }
        u64::from_str_radix(digits, radix).ok()
    };
    // WHATWG: a host whose last part is a number (or only hex digits after 0x) is IPv4.
    let ends_in_number = !last.is_empty() && (last.bytes().all(|b| b.is_ascii_digit()) || number(last).is_some());
    if !ends_in_number {
        return None;
    }
    if parts.len() > 4 {
        return Some(None);
    }
    let values: Option<Vec<u64>> = parts.iter().map(|part| number(part)).collect();
    let Some(values) = values else { return Some(None) };
    let (init, tail) = values.split_at(values.len() - 1);
    if init.iter().any(|&v| v > 255) || tail[0] >= 1u64 << (8 * (5 - values.len())) {
        return Some(None);
    }
    let mut address = tail[0];
    for (i, &v) in init.iter().enumerate() {
        address += v << (8 * (3 - i));
    }
    Some(u32::try_from(address).ok().map(u32::to_be_bytes))
}

/// Whether a webhook may reach this IPv4 address: not in this network (0/8), private
/// (10/8, 172.16/12, 192.168/16), CGNAT (100.64/10), loopback (127/8), link-local
/// (169.254/16), IETF protocol (192.0.0/24), benchmarking (198.18/15), multicast or
/// reserved (224/3, which holds the broadcast address).
pub fn is_public_v4([a, b, c, _]: [u8; 4]) -> bool {
    !(a == 0
        || a == 10
        || (a == 100 && (64..128).contains(&b))
        || a == 127
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 168)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 224)
}

/// Whether a webhook may reach this IPv6 address: not unspecified or loopback, link-local
/// (fe80::/10), site-local (fec0::/10), unique-local (fc00::/7) or multicast (ff00::/8);
/// an IPv4 address inside one (mapped `::ffff:0:0/96`, compatible `::/96`, NAT64
/// `64:ff9b::/96`) is judged as that IPv4 address.
pub fn is_public_v6(segments: [u16; 8]) -> bool {
    if segments == [0; 8] || segments == [0, 0, 0, 0, 0, 0, 0, 1] {
        return false;
    }
    let mapped = segments[..5] == [0; 5] && segments[5] == 0xffff;
    let compatible = segments[..6] == [0; 6];
    let nat64 = segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if mapped || compatible || nat64 {
        return is_public_v4(crate::ip::embedded_v4(segments));
    }
    let first = segments[0];
    !((first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
        || (first & 0xfe00) == 0xfc00
        || (first & 0xff00) == 0xff00)
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
        assert!(check_url("https://LOCALHOST:8443/hook", true).is_ok());
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

    fn refused(url: &str, allow: bool) -> bool {
        check_url(url, allow).is_err_and(|err| err.code.as_str() == "invalid_webhook_url")
    }

    #[test]
    fn no_private_address_in_any_spelling_is_a_webhook() {
        // Every range the issue names, and the spellings the WHATWG parser turns into them.
        for host in [
            "127.0.0.1",
            "127.1",
            "127.0.0.2",
            "0x7f.1",
            "0x7f000001",
            "2130706433",
            "0177.0.0.1",
            "017700000001",
            "127.0.0.1.",
            "0.0.0.0",
            "0",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "192.0.0.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "[::1]",
            "[::]",
            "[fe80::1]",
            "[febf::1]",
            "[fc00::1]",
            "[fd12:3456::1]",
            "[ff02::1]",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "[::ffff:a9fe:a9fe]",
            "[::127.0.0.1]",
            "[64:ff9b::a00:1]",
            "[fec0::1]",
        ] {
            assert!(refused(&format!("https://{host}/hook"), false), "{host}");
            if host != "127.0.0.1" {
                assert!(refused(&format!("https://{host}:8443/hook"), true), "{host} with the test flag");
            }
        }
        for name in [
            "localhost",
            "LocalHost",
            "localhost.",
            "a.localhost",
            "printer.local",
            "metadata.google.internal",
            "intranet",
            "%31%32%37.0.0.1",
            "１２７.０.０.１",
            "exa%6dple.com",
            "[fe80::1%25eth0]",
            "[::1",
            "256.0.0.1",
            "1.2.3.4.5",
            "0x100000000",
            "09.0.0.1",
            "1.256.0.1",
        ] {
            assert!(refused(&format!("https://{name}/hook"), false), "{name}");
        }
        assert!(refused("https://127.0.0.1\\@example.com/", false), "a backslash is a path separator to WHATWG");
        // Public addresses and names are fine; neighbours of the ranges too.
        for host in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.0.1",
            "172.32.0.1",
            "169.253.0.1",
            "192.0.1.1",
            "198.17.0.1",
            "223.255.255.255",
            "[2606:4700::1111]",
            "[::ffff:8.8.8.8]",
            "[64:ff9b::808:808]",
            "example.com",
            "xn--bcher-kva.example",
            "a.b.c.example.co.uk",
            "0x7f.example.com",
            "1.2.3.example",
            "example.com.",
        ] {
            assert!(check_url(&format!("https://{host}/hook"), false).is_ok(), "{host}");
        }
        // The test flag lets exactly two loopback forms through.
        assert!(refused("http://[::1]:9000/hook", true));
        assert!(refused("http://127.0.0.2/hook", true));
        assert!(refused("https://10.0.0.1/hook", true));
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
