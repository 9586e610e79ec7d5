//! Per-key daily image counts. Owns the `usage` table: one row per key per UTC day,
//! changed only by atomic statements (an UPSERT to reserve, a decrement to release), never
//! read-modify-write, so concurrent requests can neither exceed a quota nor lose a count.

use crate::db::{self, Db};
use crate::error::{ApiError, ApiResult, ErrorType};
use worker::D1PreparedStatement;

/// Reserves `n` images of today's quota before any upstream work. Succeeds (changes one
/// row and returns the new count) only while today's count plus `n` stays within `quota`.
pub fn reserve(db: &Db, key_id: &str, date: &str, n: u32, quota: u32) -> ApiResult<D1PreparedStatement> {
    Ok(db
        .prepare(
            "INSERT INTO usage (api_key_id, usage_date, image_count)
             SELECT ?1, ?2, ?3 WHERE ?3 <= ?4
             ON CONFLICT (api_key_id, usage_date)
             DO UPDATE SET image_count = image_count + excluded.image_count
             WHERE usage.image_count + excluded.image_count <= ?4
             RETURNING image_count",
        )
        .bind(&[db::text(key_id), db::text(date), db::int(n.into()), db::int(quota.into())])?)
}

/// Gives back a reservation whose images were not delivered.
pub fn release(db: &Db, key_id: &str, date: &str, n: u32) -> ApiResult<D1PreparedStatement> {
    Ok(db
        .prepare(
            "UPDATE usage SET image_count = MAX(image_count - ?3, 0)
             WHERE api_key_id = ?1 AND usage_date = ?2",
        )
        .bind(&[db::text(key_id), db::text(date), db::int(n.into())])?)
}

/// 429 for a request that would pass today's quota: retry after the next UTC midnight.
pub fn quota_exceeded(quota: u32, used: u32, n: u32, now_ms: u64) -> ApiError {
    let remaining = quota.saturating_sub(used);
    ApiError::new(
        429,
        ErrorType::RateLimitError,
        "daily_quota_exceeded",
        format!("this key's daily quota of {quota} images is used up ({remaining} left, {n} requested); it resets at 00:00 UTC"),
    )
    .with_header("retry-after", crate::time::seconds_until_next_utc_midnight(now_ms).to_string())
    .with_header("x-should-retry", "false")
    .with_header("x-quota-limit-images", quota.to_string())
    .with_header("x-quota-remaining-images", remaining.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_error_says_when_to_come_back() {
        let midnight = crate::time::millis_from_date("2026-11-24").unwrap();
        let err = quota_exceeded(10, 9, 2, midnight - 90_000);
        assert_eq!((err.status, err.code), (429, "daily_quota_exceeded"));
        assert!(err.headers.contains(&("retry-after", "90".to_string())));
        assert!(err.headers.contains(&("x-should-retry", "false".to_string())));
        assert!(err.headers.contains(&("x-quota-remaining-images", "1".to_string())));
    }
}
