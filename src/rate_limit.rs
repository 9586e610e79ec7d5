//! Per-key request rate on the generation routes (`RATE_LIMIT_PER_MINUTE`, 0: off).
//!
//! A token bucket per API key: `limit` tokens, refilled continuously at `limit` per
//! minute, one taken per request. It is kept on the key's own `api_keys` row
//! (`rate_units`, `rate_updated_ms`) and taken in the same D1 batch that looks the key up,
//! so the limit costs no round trip of its own, and it is exact across every isolate and
//! location (D1 has one primary, and a batch is one transaction).

use crate::auth::{self, ApiKey, KeyPrincipal};
use crate::db::{self, Batch, BatchResults, D1ResultExt, Db, Slot};
use crate::error::{ApiError, ApiResult, Code};
use crate::http::RequestContext;

pub const PERIOD_MS: u64 = 60_000;

/// Token bucket in fixed point: one token is `PERIOD_MS` units, and `limit` units flow in
/// per millisecond, so a full refill takes exactly one period with integer arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    units: u64,
    updated_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

// A token bucket as `api_keys` stores it (NULL, NULL: never used, so full).
crate::db::row! {
    struct StoredBucket {
        rate_units: Option<i64>,
        rate_updated_ms: Option<i64>,
    }
}

/// One request taken from a key's budget inside the key lookup's own D1 batch: the bucket
/// as it was, then a conditional UPDATE that takes a token only if there is one. A batch is
/// one transaction on D1's single primary, so concurrent requests on any isolate, anywhere,
/// are counted exactly, and no statement writes for a refused request.
pub struct Take {
    before: Slot<StoredBucket>,
    taken: Slot<()>,
    limit: u32,
    now_ms: u64,
}

impl Take {
    /// Puts the take into `batch`; None when `RATE_LIMIT_PER_MINUTE` is 0 (no limiter).
    pub fn push(batch: &mut Batch, db: &Db<'_>, key_hash: &str, limit: u32, now_ms: u64) -> ApiResult<Option<Take>> {
        if limit == 0 {
            return Ok(None);
        }
        let before = batch.push(
            db.prepare("SELECT rate_units, rate_updated_ms FROM api_keys WHERE key_hash = ?1")
                .bind(&[db::text(key_hash)])?,
        );
        // TokenBucket::take in SQL. The elapsed time is capped at one period (a bucket is
        // full again after one), so the arithmetic stays far inside 64-bit integers.
        let rate = u64::from(limit);
        let taken = batch.push(
            db.prepare(
                "UPDATE api_keys SET
                        rate_units = MIN(?4, COALESCE(rate_units, ?4)
                                             + MIN(MAX(?2 - COALESCE(rate_updated_ms, ?2), 0), ?5) * ?3) - ?5,
                        rate_updated_ms = MAX(?2, COALESCE(rate_updated_ms, ?2))
                 WHERE key_hash = ?1 AND is_active = 1
                   AND MIN(?4, COALESCE(rate_units, ?4)
                               + MIN(MAX(?2 - COALESCE(rate_updated_ms, ?2), 0), ?5) * ?3) >= ?5",
            )
            .bind(&[
                db::text(key_hash),
                db::int(now_ms as i64),
                db::int(rate as i64),
                db::int((rate * PERIOD_MS) as i64),
                db::int(PERIOD_MS as i64),
            ])?,
        );
        Ok(Some(Take { before, taken, limit, now_ms }))
    }

    /// The decision, once the batch has run and the key was accepted. The headers are
    /// worked out from the bucket as it was; whether a token was taken is what D1 did.
    pub fn decide(self, results: &BatchResults) -> ApiResult<Decision> {
        let mut bucket = match results.first(self.before)? {
            Some(StoredBucket { rate_units: Some(units), rate_updated_ms: Some(updated_ms) }) => TokenBucket {
                units: u64::try_from(units).unwrap_or(0),
                updated_ms: u64::try_from(updated_ms).unwrap_or(0),
            },
            _ => TokenBucket::full(self.limit, self.now_ms),
        };
        let mut decision = bucket.take(self.limit, self.now_ms);
        let taken = results.changes(self.taken) == 1;
        if decision.allowed != taken {
            // Only a clock far behind the stored one could part them; D1 decided.
            decision.allowed = taken;
            decision.retry_after_ms = if taken { 0 } else { decision.retry_after_ms.max(1_000) };
        }
        Ok(decision)
    }
}

/// Looks a generation request's API key up and takes one request from its budget: one
/// D1 round trip for both. An unknown, revoked, expired or suspended key is refused as
/// such before the rate is looked at.
pub async fn authenticate(rc: &RequestContext, key: &ApiKey) -> ApiResult<(KeyPrincipal, Option<Decision>)> {
    let db = rc.db()?;
    let mut batch = Batch::new();
    let pending = auth::PendingKey::push(rc, key, &mut batch)?;
    let take = Take::push(&mut batch, &db, &key.hash(), rc.config.rate_limit_per_minute, rc.now_ms)?;
    let results = db.batch(batch).await.or_internal()?;
    let principal = pending.resolve(rc, &results)?;
    Ok((principal, take.map(|take| take.decide(&results)).transpose()?))
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
