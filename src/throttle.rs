//! Login and registration throttling. Owns the `auth_throttle` table.
//!
//! A sliding window per subject (an email for logins, a client IP for registrations): an
//! attempt is a row, taken atomically *before* the expensive work (bcrypt) by an INSERT
//! that only succeeds while the window holds fewer than `max` rows, so a burst of parallel
//! attempts cannot get past the limit. Rows leave the window as it slides; a successful
//! login removes its own row, so only failures count against an email.

use crate::db::{self, Db};
use crate::error::{ApiError, ApiResult, ErrorType};
use serde::Deserialize;
use worker::D1PreparedStatement;

#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub scope: &'static str,
    pub max: u32,
    pub window_ms: u64,
}

/// The statements that take one attempt: prune what has left the window, insert an attempt
/// if there is room (RETURNING its id), and read the oldest attempt left (for Retry-After).
/// Run them first in a batch; `outcome` reads their results.
pub fn take(db: &Db, window: Window, subject: &str, now_ms: u64) -> ApiResult<Vec<D1PreparedStatement>> {
    let cutoff = now_ms.saturating_sub(window.window_ms) as i64;
    let scope = db::text(window.scope);
    let subject = db::text(subject);
    Ok(vec![
        db.prepare("DELETE FROM auth_throttle WHERE scope = ?1 AND created_at_ms <= ?2")
            .bind(&[scope.clone(), db::int(cutoff)])?,
        db.prepare(
            "INSERT INTO auth_throttle (scope, subject, created_at_ms)
             SELECT ?1, ?2, ?3
             WHERE (SELECT COUNT(*) FROM auth_throttle WHERE scope = ?1 AND subject = ?2) < ?4
             RETURNING id",
        )
        .bind(&[scope.clone(), subject.clone(), db::int(now_ms as i64), db::int(window.max.into())])?,
        db.prepare("SELECT MIN(created_at_ms) AS oldest FROM auth_throttle WHERE scope = ?1 AND subject = ?2")
            .bind(&[scope, subject])?,
    ])
}

/// The attempt's id, or 429 with `Retry-After` until the oldest attempt leaves the window.
pub fn outcome(results: &[worker::D1Result], window: Window, now_ms: u64) -> ApiResult<i64> {
    #[derive(Deserialize)]
    struct Taken {
        id: i64,
    }
    #[derive(Deserialize)]
    struct Oldest {
        oldest: Option<i64>,
    }
    let taken: Vec<Taken> = db::rows(results, 1)?;
    if let Some(attempt) = taken.first() {
        return Ok(attempt.id);
    }
    let oldest: Vec<Oldest> = db::rows(results, 2)?;
    let oldest_ms = oldest.first().and_then(|o| o.oldest).map_or(now_ms, |ms| ms.max(0) as u64);
    Err(refused(window, retry_after_secs(oldest_ms, window.window_ms, now_ms)))
}

pub fn retry_after_secs(oldest_ms: u64, window_ms: u64, now_ms: u64) -> u64 {
    (oldest_ms + window_ms).saturating_sub(now_ms).div_ceil(1000).max(1)
}

fn refused(window: Window, retry_after: u64) -> ApiError {
    let (code, message) = match window.scope {
        "login" => ("too_many_login_attempts", "too many failed logins for this email; try again later"),
        _ => ("too_many_registrations", "too many registrations from this address; try again later"),
    };
    ApiError::new(429, ErrorType::RateLimitError, code, message).with_header("retry-after", retry_after.to_string())
}

/// Removes an attempt from the window (a login that succeeded).
pub fn forget(db: &Db, attempt_id: i64) -> ApiResult<D1PreparedStatement> {
    Ok(db.prepare("DELETE FROM auth_throttle WHERE id = ?1").bind(&[db::int(attempt_id)])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_when_the_oldest_attempt_leaves_the_window() {
        assert_eq!(retry_after_secs(1_000, 900_000, 1_000), 900);
        assert_eq!(retry_after_secs(1_000, 900_000, 900_500), 1);
        assert_eq!(retry_after_secs(1_000, 900_000, 2_000_000), 1, "never zero");
    }

    #[test]
    fn refusals_name_what_was_throttled() {
        let login = Window { scope: "login", max: 5, window_ms: 1 };
        let err = refused(login, 42);
        assert_eq!((err.status, err.code), (429, "too_many_login_attempts"));
        assert_eq!(err.headers, vec![("retry-after", "42".to_string())]);
        let register = Window { scope: "register", max: 5, window_ms: 1 };
        assert_eq!(refused(register, 1).code, "too_many_registrations");
    }
}
