//! Per-key request rate on the generation routes (`RATE_LIMIT_PER_MINUTE`).
//!
//! Each API key has one Durable Object (`RATE_LIMITER`, named by the key id). A Durable
//! Object is a single instance worldwide that handles its requests one at a time, so the
//! count is exact across every isolate and location; an in-isolate map would not be.
//! Inside it is a token bucket: `limit` tokens, refilled continuously at `limit` per minute,
//! one taken per request. The bucket is kept in the object's storage, so it survives the
//! object being evicted.

use crate::error::{ApiError, Code};
use serde::{Deserialize, Serialize};

pub const BINDING: &str = "RATE_LIMITER";
pub const PERIOD_MS: u64 = 60_000;

/// Token bucket in fixed point: one token is `PERIOD_MS` units, and `limit` units flow in
/// per millisecond, so a full refill takes exactly one period with integer arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    units: u64,
    updated_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset_ms: u64,
    /// Until the next request would be allowed (0 when allowed).
    pub retry_after_ms: u64,
}

impl TokenBucket {
    pub fn full(limit: u32, now_ms: u64) -> Self {
        TokenBucket { units: u64::from(limit) * PERIOD_MS, updated_ms: now_ms }
    }

    pub fn take(&mut self, limit: u32, now_ms: u64) -> Decision {
        let limit = limit.max(1);
        let rate = u64::from(limit);
        let capacity = rate * PERIOD_MS;
        let elapsed = now_ms.saturating_sub(self.updated_ms);
        self.units = self.units.saturating_add(elapsed.saturating_mul(rate)).min(capacity);
        self.updated_ms = now_ms.max(self.updated_ms);
        let allowed = self.units >= PERIOD_MS;
        if allowed {
            self.units -= PERIOD_MS;
        }
        Decision {
            allowed,
            limit,
            remaining: (self.units / PERIOD_MS) as u32,
            reset_ms: (capacity - self.units).div_ceil(rate),
            retry_after_ms: if allowed { 0 } else { (PERIOD_MS - self.units).div_ceil(rate) },
        }
    }
}

impl Decision {
    /// `x-ratelimit-*-requests`, in OpenAI's style (reset as a duration, "1.5s").
    pub fn headers(&self) -> [(&'static str, String); 3] {
        [
            ("x-ratelimit-limit-requests", self.limit.to_string()),
            ("x-ratelimit-remaining-requests", self.remaining.to_string()),
            ("x-ratelimit-reset-requests", duration(self.reset_ms)),
        ]
    }

    pub fn exceeded(&self) -> ApiError {
        let mut err = ApiError::new(
            Code::RateLimitExceeded,
            format!("this key is limited to {} requests per minute; slow down", self.limit),
        )
        .with_header("retry-after", self.retry_after_ms.div_ceil(1000).max(1).to_string())
        .with_header("x-should-retry", "true");
        err.headers.extend(self.headers());
        err
    }
}

/// Milliseconds as a short duration: "0s", "0.25s", "59.001s".
fn duration(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        let text = format!("{}.{:03}", ms / 1000, ms % 1000);
        format!("{}s", text.trim_end_matches('0'))
    }
}

pub use object::{check, RateLimiter};

mod object {
    use super::*;
    use crate::http::RequestContext;
    use std::cell::Cell;
    use worker::wasm_bindgen::JsValue;
    use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

    const STORAGE_KEY: &str = "bucket";

    #[durable_object]
    pub struct RateLimiter {
        state: State,
        bucket: Cell<Option<TokenBucket>>,
    }

    impl DurableObject for RateLimiter {
        fn new(state: State, _env: Env) -> Self {
            RateLimiter { state, bucket: Cell::new(None) }
        }

        /// `GET /take?limit=N`: takes one token; answers the `Decision` as JSON.
        async fn fetch(&self, req: Request) -> Result<Response> {
            let limit = crate::http::query_param(&req, "limit").ok().flatten().and_then(|v| v.parse::<u32>().ok());
            let limit = limit.unwrap_or(60);
            let now = crate::time::now_millis();
            let storage = self.state.storage();
            let mut bucket = match self.bucket.get() {
                Some(bucket) => bucket,
                None => stored_bucket(&storage).await.unwrap_or(TokenBucket::full(limit, now)),
            };
            let decision = bucket.take(limit, now);
            self.bucket.set(Some(bucket));
            // The bucket lives in memory while the object does; storage only matters if the
            // object is evicted. It is written when losing it would matter: once the key has
            // spent half its budget (or is refused). Losing a fuller bucket to an eviction
            // resets it to full: at most half a minute's budget, once per eviction.
            if decision.remaining < limit / 2 || !decision.allowed {
                storage.put_raw(STORAGE_KEY, bucket_object(bucket)).await?;
            }
            Response::from_json(&decision)
        }
    }

    /// The stored bucket, if there is one: a plain object `{units, updated_ms}` (the form
    /// serde_wasm_bindgen wrote it in before, read field by field without it).
    async fn stored_bucket(storage: &worker::Storage) -> Option<TokenBucket> {
        let found = storage.get_multiple(vec![STORAGE_KEY]).await.ok()?;
        let object = found.get(&JsValue::from_str(STORAGE_KEY));
        if object.is_undefined() {
            return None;
        }
        let fields = crate::db::Row::from_object(object);
        Some(TokenBucket { units: fields.get("units").ok()?, updated_ms: fields.get("updated_ms").ok()? })
    }

    fn bucket_object(bucket: TokenBucket) -> JsValue {
        let object = worker::js_sys::Object::new();
        for (field, value) in [("units", bucket.units), ("updated_ms", bucket.updated_ms)] {
            // Both stay far below 2^53 (a limit of 4e9 a minute is 2.4e14 units).
            let _ = worker::js_sys::Reflect::set(&object, &JsValue::from_str(field), &JsValue::from_f64(value as f64));
        }
        object.into()
    }

    /// Takes one request from the key's budget. If the limiter cannot be reached the request
    /// is let through (logged): an outage of the limiter must not take the API down.
    /// `RATE_LIMIT_PER_MINUTE = 0` switches it off: no Durable Object call, no headers.
    pub async fn check(rc: &RequestContext, key_id: &str) -> Option<Decision> {
        if rc.config.rate_limit_per_minute == 0 {
            return None;
        }
        let attempt = async {
            let namespace = rc.env.durable_object(BINDING)?;
            let stub = namespace.id_from_name(key_id)?.get_stub()?;
            let url = format!("https://rate-limiter/take?limit={}", rc.config.rate_limit_per_minute);
            stub.fetch_with_str(&url).await?.json::<Decision>().await
        };
        match attempt.await {
            Ok(decision) => Some(decision),
            Err(err) => {
                crate::log::error_for(&rc.request_id, "rate limiter unavailable; request allowed", &err.to_string());
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_allows_limit_requests_then_refuses() {
        let mut bucket = TokenBucket::full(3, 0);
        let remaining: Vec<u32> =
            (0..3).map(|_| bucket.take(3, 0)).inspect(|d| assert!(d.allowed)).map(|d| d.remaining).collect();
        assert_eq!(remaining, vec![2, 1, 0]);
        let refused = bucket.take(3, 0);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after_ms, 20_000, "one token every 20 s at 3 per minute");
        assert_eq!(refused.reset_ms, 60_000);
    }

    #[test]
    fn tokens_come_back_continuously() {
        let mut bucket = TokenBucket::full(60, 0);
        for _ in 0..60 {
            assert!(bucket.take(60, 0).allowed);
        }
        assert!(!bucket.take(60, 500).allowed, "half a token after 0.5 s");
        let later = bucket.take(60, 1_000);
        assert!(later.allowed && later.remaining == 0);
        let refill = bucket.take(60, 61_000);
        assert_eq!(refill.remaining, 59, "a full minute refills everything (then one is taken)");
    }

    #[test]
    fn never_more_than_limit_in_any_minute() {
        let mut bucket = TokenBucket::full(10, 0);
        let allowed = (0..600u64).filter(|i| bucket.take(10, i * 100).allowed).count();
        // A request every 100 ms from 0 to 59.9 s: the 10 in the bucket, plus the 9 whole
        // tokens that refill in 59.9 s at 10 per minute.
        assert_eq!(allowed, 19);
    }

    #[test]
    fn headers_and_error() {
        let mut bucket = TokenBucket::full(2, 0);
        bucket.take(2, 0);
        let d = bucket.take(2, 0);
        let err = bucket.take(2, 0).exceeded();
        assert_eq!(d.headers()[1], ("x-ratelimit-remaining-requests", "0".to_string()));
        assert_eq!((err.status(), err.code.as_str()), (429, "rate_limit_exceeded"));
        assert!(err.headers.contains(&("retry-after", "30".to_string())));
        assert!(err.headers.iter().any(|(name, _)| *name == "x-ratelimit-limit-requests"));
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(1_500), "1.5s");
        assert_eq!(duration(59_001), "59.001s");
        assert_eq!(duration(250), "0.25s");
    }
}
