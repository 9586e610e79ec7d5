//! Resolving an API key to the principal a request runs as: one D1 query for key, owner
//! (suspended or not), the key's and the account's quotas and today's usage of both. `last_used_at` is written after the response, at most once a
//! minute per key, so a busy key is not a write per request.

use super::account;
use super::api_key::{ApiKey, KeyMode};
use crate::db;
use crate::error::{describe_worker_error, ApiError, ApiResult, Code};
use crate::http::RequestContext;
use crate::metering::Micros;
use crate::time::{date_from_millis, iso_from_millis};

const LAST_USED_GRANULARITY_MS: u64 = 60_000;

/// The key behind an API-key request, with what the request path needs about its owner
/// and quota.
#[derive(Debug, Clone)]
pub struct KeyPrincipal {
    pub key_id: String,
    pub user_id: String,
    pub mode: KeyMode,
    /// The key's own daily quota, else `DAILY_IMAGE_QUOTA`; never above
    /// `MAX_KEY_DAILY_IMAGE_QUOTA`.
    pub daily_quota: u32,
    /// Images already counted today (UTC).
    pub used_today: u32,
    /// Live images per day for the whole account: its own ceiling, else
    /// `ACCOUNT_DAILY_IMAGE_QUOTA`.
    pub account_quota: u32,
    /// The account's live images today, across its keys.
    pub account_used_today: u32,
    /// The key's money ceiling per UTC day: its own, never above
    /// `MAX_KEY_DAILY_BUDGET_USD` (None: neither is set).
    pub budget: Option<Micros>,
    /// Spent and reserved today by the key.
    pub spent_today: Micros,
}

crate::db::row! {
    struct PrincipalRow {
        id: String,
        user_id: String,
        is_active: i64,
        expires_at: Option<String>,
        last_used_at: Option<String>,
        daily_image_quota: Option<i64>,
        used_today: i64,
        suspended_at: Option<String>,
        account_quota: Option<i64>,
        account_used_today: i64,
        daily_budget_micros: Option<i64>,
        spent_today: i64,
    }
}

pub(super) async fn resolve(rc: &RequestContext, key: &ApiKey) -> ApiResult<KeyPrincipal> {
    let db = rc.db()?;
    let row = db.first(statement(rc, key)?).await?;
    accept(rc, key.mode(), row)
}

/// An API key whose lookup rides in the route's own first batch, so authenticating and
/// reading cost one D1 round trip. Its rows must not be used before [`PendingKey::resolve`]
/// has accepted the key.
pub struct PendingKey {
    slot: db::Slot<PrincipalRow>,
    mode: KeyMode,
}

impl PendingKey {
    /// Puts the key's lookup into `batch`.
    pub fn push(rc: &RequestContext, key: &ApiKey, batch: &mut db::Batch) -> ApiResult<PendingKey> {
        Ok(PendingKey { slot: batch.push(statement(rc, key)?), mode: key.mode() })
    }

    /// The principal, or the refusal the key earns (invalid, revoked, expired, suspended).
    pub fn resolve(self, rc: &RequestContext, results: &db::BatchResults) -> ApiResult<KeyPrincipal> {
        accept(rc, self.mode, results.first(self.slot)?)
    }
}

/// Key, owner, quotas and today's usage of both, by the key's hash.
fn statement(rc: &RequestContext, key: &ApiKey) -> ApiResult<worker::D1PreparedStatement> {
    let db = rc.db()?;
    Ok(db
        .prepare(
            "SELECT k.id, k.user_id, k.is_active, k.expires_at, k.last_used_at, k.daily_image_quota,
                        COALESCE(u.image_count, 0) AS used_today,
                        o.suspended_at, o.daily_image_quota AS account_quota,
                        COALESCE(a.live_images, 0) AS account_used_today,
                        k.daily_budget_micros, COALESCE(u.cost_micros, 0) AS spent_today
                 FROM api_keys k
                 JOIN users o ON o.id = k.user_id
                 LEFT JOIN usage u ON u.api_key_id = k.id AND u.usage_date = ?2
                 LEFT JOIN account_usage a ON a.user_id = k.user_id AND a.usage_date = ?2
                 WHERE k.key_hash = ?1",
        )
        .bind(&[db::text(&key.hash()), db::text(&date_from_millis(rc.now_ms))])?)
}

fn accept(rc: &RequestContext, mode: KeyMode, row: Option<PrincipalRow>) -> ApiResult<KeyPrincipal> {
    let row = row.ok_or_else(|| ApiError::new(Code::InvalidApiKey, "the API key is not valid"))?;
    if row.is_active == 0 {
        return Err(ApiError::new(Code::RevokedApiKey, "the API key has been revoked"));
    }
    let now_iso = iso_from_millis(rc.now_ms);
    if row.expires_at.as_deref().is_some_and(|expires| expires <= now_iso.as_str()) {
        return Err(ApiError::new(Code::ExpiredApiKey, "the API key has expired"));
    }
    if row.suspended_at.is_some() {
        return Err(account::suspended());
    }
    touch_last_used(rc, &row.id, row.last_used_at.as_deref())?;
    let config = &rc.config;
    let count = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
    Ok(KeyPrincipal {
        key_id: row.id,
        user_id: row.user_id,
        mode,
        daily_quota: row
            .daily_image_quota
            .map_or(config.daily_image_quota, count)
            .min(config.max_key_daily_image_quota),
        used_today: count(row.used_today),
        account_quota: row.account_quota.map_or(config.account_daily_image_quota, count),
        account_used_today: count(row.account_used_today),
        budget: match (row.daily_budget_micros, config.max_key_daily_budget) {
            (Some(own), Some(max)) => Some(Micros(u64::try_from(own).unwrap_or(0).min(max.0))),
            (own, max) => own.map(|own| Micros(u64::try_from(own).unwrap_or(0))).or(max),
        },
        spent_today: Micros(u64::try_from(row.spent_today).unwrap_or(0)),
    })
}

fn touch_last_used(rc: &RequestContext, key_id: &str, last_used_at: Option<&str>) -> ApiResult<()> {
    let stale_before = iso_from_millis(rc.now_ms.saturating_sub(LAST_USED_GRANULARITY_MS));
    if last_used_at.is_some_and(|last| last >= stale_before.as_str()) {
        return Ok(());
    }
    let statement = rc
        .d1_binding()?
        .prepare(
            "UPDATE api_keys SET last_used_at = ?1
             WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?3)",
        )
        .bind(&[db::text(&iso_from_millis(rc.now_ms)), db::text(key_id), db::text(&stale_before)])?;
    let request_id = rc.request_id.clone();
    rc.ctx.wait_until(async move {
        if let Err(err) = statement.run().await {
            crate::log::error_for(&request_id, "last_used_at update failed", &describe_worker_error(&err));
        }
    });
    Ok(())
}
