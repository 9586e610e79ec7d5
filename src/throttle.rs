//! Login and registration throttling. Owns the `auth_throttle` table.
//!
//! A sliding window per subject (an email for logins, a client IP for registrations): an
//! attempt is a row, taken atomically *before* the expensive work (bcrypt) by an INSERT
//! that only succeeds while the window holds fewer than `max` rows, so a burst of parallel
//! attempts cannot get past the limit. Rows leave the window as it slides; a successful
//! login removes its own row, so only failures count against an email.

use crate::db::{self, Batch, BatchResults, Db, Slot};
use crate::error::{ApiError, ApiResult, Code};
use worker::D1PreparedStatement;

/// What is being throttled, and so whose attempts a window counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Failed logins, per email.
    Login,
    /// Failed logins, per client IP (whatever the emails).
    LoginIp,
    /// Registrations, per client IP.
    Register,
}

impl Scope {
    /// The `auth_throttle.scope` value.
    fn as_str(self) -> &'static str {
        match self {
            Scope::Login => "login",
            Scope::LoginIp => "login_ip",
            Scope::Register => "register",
        }
    }

    fn refusal(self) -> (Code, &'static str) {
        match self {
            Scope::Login => (Code::TooManyLoginAttempts, "too many failed logins for this email; try again later"),
            Scope::LoginIp => (Code::TooManyLoginAttempts, "too many failed logins from this address; try again later"),
            Scope::Register => {
                (Code::TooManyRegistrations, "too many registrations from this address; try again later")
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub scope: Scope,
    pub max: u32,
    pub window_ms: u64,
}

crate::db::row! {
    pub struct Taken {
        id: i64,
    }
}

crate::db::row! {
    pub struct Oldest {
        oldest: Option<i64>,
    }
}

/// One attempt's statements in a batch, to read back with [`outcome`].
pub struct Attempt {
    taken: Slot<Taken>,
    oldest: Slot<Oldest>,
}

/// Adds the statements that take one attempt to `batch`: prune what has left the window
/// (through the `(scope, created_at_ms)` index), insert an attempt if there is room
/// (RETURNING its id), and read the oldest attempt left (for Retry-After).
pub fn take(batch: &mut Batch, db: &Db, window: Window, subject: &str, now_ms: u64) -> ApiResult<Attempt> {
    push_take(batch, db, window, subject, now_ms, false)
}

/// Like [`take`], but the attempt is inserted only if the statement just before it in the
/// batch changed a row (the previous window's attempt was taken): a request refused by one
/// window leaves nothing in the next.
pub fn take_if_taken(batch: &mut Batch, db: &Db, window: Window, subject: &str, now_ms: u64) -> ApiResult<Attempt> {
    push_take(batch, db, window, subject, now_ms, true)
}

fn push_take(
    batch: &mut Batch,
    db: &Db,
    window: Window,
    subject: &str,
    now_ms: u64,
    chained: bool,
) -> ApiResult<Attempt> {
    let cutoff = now_ms.saturating_sub(window.window_ms) as i64;
    let scope = db::text(window.scope.as_str());
    let subject = db::text(subject);
    let insert = "INSERT INTO auth_throttle (scope, subject, created_at_ms)
         SELECT ?1, ?2, ?3
         WHERE (SELECT COUNT(*) FROM auth_throttle WHERE scope = ?1 AND subject = ?2 AND created_at_ms > ?5) < ?4";
    // The count looks only inside the window, so it is right whether or not the prune ran
    // first. A chained insert reads `changes()` of the insert before it, so its own prune
    // (a DELETE, which would reset that) comes after it.
    let prune = db
        .prepare("DELETE FROM auth_throttle WHERE scope = ?1 AND created_at_ms <= ?2")
        .bind(&[scope.clone(), db::int(cutoff)])?;
    let taken = if chained {
        let taken = batch.push(db.prepare(&format!("{insert} AND changes() = 1 RETURNING id")).bind(&[
            scope.clone(),
            subject.clone(),
            db::int(now_ms as i64),
            db::int(window.max.into()),
            db::int(cutoff),
        ])?);
        batch.push::<()>(prune);
        taken
    } else {
        batch.push::<()>(prune);
        batch.push(db.prepare(&format!("{insert} RETURNING id")).bind(&[
            scope.clone(),
            subject.clone(),
            db::int(now_ms as i64),
            db::int(window.max.into()),
            db::int(cutoff),
        ])?)
    };
    let oldest = batch.push(
        db.prepare(
            "SELECT MIN(created_at_ms) AS oldest FROM auth_throttle
             WHERE scope = ?1 AND subject = ?2 AND created_at_ms > ?3",
        )
        .bind(&[scope, subject, db::int(cutoff)])?,
    );
    Ok(Attempt { taken, oldest })
}

/// The attempt's id, or 429 with `Retry-After` until the oldest attempt leaves the window.
pub fn outcome(results: &BatchResults, attempt: Attempt, window: Window, now_ms: u64) -> ApiResult<i64> {
    if let Some(taken) = results.first(attempt.taken)? {
        return Ok(taken.id);
    }
    let oldest = results.first(attempt.oldest)?;
    let oldest_ms = oldest.and_then(|o| o.oldest).map_or(now_ms, |ms| ms.max(0) as u64);
    Err(refused(window, retry_after_secs(oldest_ms, window.window_ms, now_ms)))
}

pub fn retry_after_secs(oldest_ms: u64, window_ms: u64, now_ms: u64) -> u64 {
    (oldest_ms + window_ms).saturating_sub(now_ms).div_ceil(1000).max(1)
}

fn refused(window: Window, retry_after: u64) -> ApiError {
    let (code, message) = window.scope.refusal();
    ApiError::new(code, message).with_header("retry-after", retry_after.to_string())
}

/// Deletes attempts that have left their windows (cron), scope by scope through the
/// `(scope, created_at_ms)` index. Requests prune their own scope too; this catches
/// scopes nobody has used since.
pub async fn prune(db: &Db<'_>, config: &crate::config::Config, now_ms: u64) -> ApiResult<usize> {
    use crate::db::D1ResultExt;
    let login = config.login_window_seconds * 1000;
    let windows =
        [(Scope::Login, login), (Scope::LoginIp, login), (Scope::Register, config.register_window_seconds * 1000)];
    let mut batch = Batch::new();
    let slots: Vec<_> = windows
        .iter()
        .map(|(scope, window_ms)| {
            let cutoff = now_ms.saturating_sub(*window_ms) as i64;
            Ok(batch.push::<()>(
                db.prepare("DELETE FROM auth_throttle WHERE scope = ?1 AND created_at_ms <= ?2")
                    .bind(&[db::text(scope.as_str()), db::int(cutoff)])?,
            ))
        })
        .collect::<ApiResult<_>>()?;
    let results = db.batch(batch).await.or_internal()?;
    Ok(slots.into_iter().map(|slot| results.changes(slot)).sum())
}

/// Removes attempts from their windows (a login that succeeded).
pub fn forget(db: &Db, attempt_ids: &[i64]) -> ApiResult<D1PreparedStatement> {
    let ids = attempt_ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
    // The ids are integers this Worker got back from D1, not client input.
    Ok(db.prepare(&format!("DELETE FROM auth_throttle WHERE id IN ({ids})")))
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
        let login = Window { scope: Scope::Login, max: 5, window_ms: 1 };
        let err = refused(login, 42);
        assert_eq!((err.status(), err.code.as_str()), (429, "too_many_login_attempts"));
        assert_eq!(err.headers, vec![("retry-after", "42".to_string())]);
        let register = Window { scope: Scope::Register, max: 5, window_ms: 1 };
        assert_eq!(refused(register, 1).code, Code::TooManyRegistrations);
    }
}
