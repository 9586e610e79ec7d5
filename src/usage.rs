//! Per-key daily image counts. Owns the `usage` table: one row per key per UTC day,
//! changed only by atomic statements (an UPSERT to reserve, a decrement to release), never
//! read-modify-write, so concurrent requests can neither exceed a quota nor lose a count.

use crate::auth;
use crate::auth::KeyMode;
use crate::config::Config;
use crate::db::{self, Batch, D1ResultExt, Db, Slot};
use crate::error::{ApiError, ApiResult, Code};
use crate::http::{self, RequestContext};
use crate::metering::Micros;
use crate::time::{date_from_millis, millis_from_date, MILLIS_PER_DAY};
use serde::Serialize;
use worker::{Request, Response};

/// Longest range one usage request may cover.
pub const MAX_RANGE_DAYS: u64 = 366;
/// Default range: the last 30 days, today included.
pub const DEFAULT_RANGE_DAYS: u64 = 30;

/// What one generation charges: `n` images of a key, of its account (live images only)
/// and of the deployment, on one UTC day, and `micros` of money beside them.
#[derive(Debug, Clone, Copy)]
pub struct Charge<'a> {
    pub key_id: &'a str,
    pub user_id: &'a str,
    pub day: &'a str,
    pub n: u32,
    pub mode: KeyMode,
    /// Micro-dollars: what a release gives back (negative: what a settlement adds, when the
    /// actual cost passed the reserved worst case).
    pub micros: i64,
}

/// "No money ceiling", as the SQL compares: the largest integer a JS number holds exactly.
pub const NO_CEILING: i64 = Micros::MAX_STORED;

/// A money ceiling as bound: its micro-dollars, or [`NO_CEILING`].
pub fn ceiling(budget: Option<Micros>) -> i64 {
    budget.map_or(NO_CEILING, Micros::stored)
}

crate::db::row! {
    pub struct Reserved {
        pub image_count: i64,
    }
}

/// The key a reservation charges, as the batch finds it: by id once the key has been
/// looked up, or by the hash of the presented key when the lookup rides in the same batch.
#[derive(Debug, Clone, Copy)]
pub enum KeyRef<'a> {
    Id(&'a str),
    Hash(&'a str),
}

impl<'a> KeyRef<'a> {
    /// The `api_keys` column to find the key by (`k.{column} = ?`), and its value.
    pub fn column_and_value(self) -> (&'static str, &'a str) {
        match self {
            KeyRef::Id(id) => ("id", id),
            KeyRef::Hash(hash) => ("key_hash", hash),
        }
    }
}

/// What a reservation charges: `n` images of a key (and, for a live key, of its account
/// and of the deployment) on one UTC day. The key's and the account's ceilings are read
/// from their rows inside the batch, so a key revoked, expired or suspended since it was
/// looked up charges nothing.
#[derive(Debug, Clone, Copy)]
pub struct Reservation<'a> {
    pub key: KeyRef<'a>,
    pub day: &'a str,
    pub n: u32,
    pub mode: KeyMode,
    /// Now, as the key's `expires_at` is compared.
    pub now_iso: &'a str,
    /// True when the statement just before is the rate limit's take: nothing is reserved
    /// unless it took a token (`changes() = 1`).
    pub after_rate_take: bool,
    /// The worst case of its cost, reserved against the money budgets.
    pub worst: Micros,
}

/// Adds the statements that reserve a charge to `batch`, before any upstream work:
/// - the key's count, by a conditional UPSERT that changes one row (and returns the new
///   count) only for a usable key (active, unexpired, owner not suspended) and while it
///   stays within the key's quota (its own, else `DAILY_IMAGE_QUOTA`, never above
///   `MAX_KEY_DAILY_IMAGE_QUOTA`);
/// - for a live key, the account's live count, and the deployment's; each runs only if
///   the statement before it changed a row (`changes() = 1`), and a CHECK constraint
///   fails it when it would pass its ceiling, which rolls back the whole batch.
///
/// So the batch either charges every level or none, and the statement the caller adds
/// next may test `changes() = 1` to run only when everything was reserved. A refusal by
/// the key's quota shows as no `Reserved` row; by the account or deployment ceiling, as
/// the batch's error ([`ceiling_refusal`] names it).
pub fn reserve(batch: &mut Batch, db: &Db, charge: Reservation, config: &Config) -> ApiResult<Slot<Reserved>> {
    let (key_column, key) = charge.key.column_and_value();
    let gate = if charge.after_rate_take { " AND changes() = 1" } else { "" };
    let n = db::int(charge.n.into());
    let day = db::text(charge.day);
    let worst = db::int(charge.worst.stored());
    let reserved = batch.push(
        db.prepare(&format!(
            "INSERT INTO usage (api_key_id, usage_date, image_count, cost_micros)
             SELECT k.id, ?2, ?3, ?7 FROM api_keys k JOIN users o ON o.id = k.user_id
              WHERE k.{key_column} = ?1 AND k.is_active = 1 AND (k.expires_at IS NULL OR k.expires_at > ?4)
                AND o.suspended_at IS NULL AND ?3 <= MIN(COALESCE(k.daily_image_quota, ?5), ?6)
                AND ?7 <= MIN(COALESCE(k.daily_budget_micros, ?8), ?8){gate}
             ON CONFLICT (api_key_id, usage_date)
             DO UPDATE SET image_count = image_count + excluded.image_count,
                           cost_micros = cost_micros + excluded.cost_micros
             WHERE usage.image_count + excluded.image_count <=
                   (SELECT MIN(COALESCE(daily_image_quota, ?5), ?6) FROM api_keys WHERE {key_column} = ?1)
               AND usage.cost_micros + excluded.cost_micros <=
                   (SELECT MIN(COALESCE(daily_budget_micros, ?8), ?8) FROM api_keys WHERE {key_column} = ?1)
             RETURNING image_count",
        ))
        .bind(&[
            db::text(key),
            day.clone(),
            n.clone(),
            db::text(charge.now_iso),
            db::int(config.daily_image_quota.into()),
            db::int(config.max_key_daily_image_quota.into()),
            worst.clone(),
            db::int(ceiling(config.max_key_daily_budget)),
        ])?,
    );
    let deployment_images = db::int(config.deployment_daily_live_images.into());
    let budget = |budget: Option<Micros>| db::opt_int(budget.map(Micros::stored));
    match charge.mode {
        KeyMode::Live => {
            batch.push::<()>(
                db.prepare(&format!(
                    "INSERT INTO account_usage (user_id, usage_date, live_images, live_limit, cost_micros, budget_micros)
                     SELECT k.user_id, ?2, ?3, COALESCE(o.daily_image_quota, ?4), ?5, COALESCE(o.daily_budget_micros, ?6)
                       FROM api_keys k JOIN users o ON o.id = k.user_id
                      WHERE k.{key_column} = ?1 AND changes() = 1
                     ON CONFLICT (user_id, usage_date) DO UPDATE SET
                         live_images = live_images + excluded.live_images, live_limit = excluded.live_limit,
                         cost_micros = cost_micros + excluded.cost_micros, budget_micros = excluded.budget_micros",
                ))
                .bind(&[
                    db::text(key),
                    day.clone(),
                    n.clone(),
                    db::int(config.account_daily_image_quota.into()),
                    worst.clone(),
                    budget(config.account_daily_budget),
                ])?,
            );
            batch.push::<()>(
                db.prepare(
                    "INSERT INTO deployment_usage (usage_date, live_images, test_images, live_limit, live_cost_micros, budget_micros)
                     SELECT ?1, ?2, 0, ?3, ?4, ?5 WHERE changes() = 1
                     ON CONFLICT (usage_date) DO UPDATE SET
                         live_images = live_images + excluded.live_images, live_limit = excluded.live_limit,
                         live_cost_micros = live_cost_micros + excluded.live_cost_micros,
                         budget_micros = excluded.budget_micros",
                )
                .bind(&[day, n, deployment_images, worst, budget(config.deployment_daily_budget)])?,
            );
        }
        // Test images count for the deployment's statistics, never against its budgets.
        KeyMode::Test => {
            batch.push::<()>(
                db.prepare(
                    "INSERT INTO deployment_usage (usage_date, live_images, test_images, live_limit)
                     SELECT ?1, 0, ?2, ?3 WHERE changes() = 1
                     ON CONFLICT (usage_date) DO UPDATE SET test_images = test_images + excluded.test_images",
                )
                .bind(&[day, n, deployment_images])?,
            );
        }
    }
    Ok(reserved)
}

/// Adds the statements that give a reservation back (its images were not delivered).
pub fn release(batch: &mut Batch, db: &Db, charge: Charge) -> ApiResult<()> {
    release_where(batch, db, charge, "")
}

/// [`release`], but only if the statement pushed just before it changed a row (a
/// conditional status change: `queued -> canceled`): each statement runs only if the one
/// before it took, so a second cancel, or a race with the consumer, gives nothing back.
pub fn release_if_previous_took(batch: &mut Batch, db: &Db, charge: Charge) -> ApiResult<()> {
    release_where(batch, db, charge, " AND changes() = 1")
}

fn release_where(batch: &mut Batch, db: &Db, charge: Charge, guard: &str) -> ApiResult<()> {
    let (n, day, micros) = (db::int(charge.n.into()), db::text(charge.day), db::int(charge.micros));
    batch.push::<()>(
        db.prepare(&format!(
            "UPDATE usage SET image_count = MAX(image_count - ?3, 0), cost_micros = MAX(cost_micros - ?4, 0)
             WHERE api_key_id = ?1 AND usage_date = ?2{guard}"
        ))
        .bind(&[db::text(charge.key_id), day.clone(), n.clone(), micros.clone()])?,
    );
    // A settlement above the worst case (negative `micros`) is charged in full: the budget
    // in force is raised to the spend, so the CHECK holds, and the next reservation, which
    // sets the budget again, finds it spent.
    match charge.mode {
        KeyMode::Live => {
            batch.push::<()>(
                db.prepare(&format!(
                    "UPDATE account_usage SET live_images = MAX(live_images - ?3, 0),
                            cost_micros = MAX(cost_micros - ?4, 0), budget_micros = MAX(budget_micros, cost_micros - ?4)
                     WHERE user_id = ?1 AND usage_date = ?2{guard}"
                ))
                .bind(&[db::text(charge.user_id), day.clone(), n.clone(), micros.clone()])?,
            );
            batch.push::<()>(
                db.prepare(&format!(
                    "UPDATE deployment_usage SET live_images = MAX(live_images - ?2, 0),
                            live_cost_micros = MAX(live_cost_micros - ?3, 0),
                            budget_micros = MAX(budget_micros, live_cost_micros - ?3)
                     WHERE usage_date = ?1{guard}"
                ))
                .bind(&[day, n, micros])?,
            );
        }
        KeyMode::Test => {
            batch.push::<()>(
                db.prepare(&format!(
                    "UPDATE deployment_usage SET test_images = MAX(test_images - ?2, 0) WHERE usage_date = ?1{guard}"
                ))
                .bind(&[day, n])?,
            );
        }
    }
    Ok(())
}

/// The CHECK constraints of the account's and the deployment's daily rows, in images
/// (migrations/0003) and in money (0013), as D1 names them when one fails.
const ACCOUNT_CEILING: &str = "account_daily_limit";
const DEPLOYMENT_CEILING: &str = "deployment_daily_budget";
const ACCOUNT_SPEND: &str = "account_daily_spend";
const DEPLOYMENT_SPEND: &str = "deployment_daily_spend";

/// Whether a failed reservation batch was refused by an account or deployment ceiling.
pub fn is_ceiling(cause: &str) -> bool {
    [ACCOUNT_CEILING, DEPLOYMENT_CEILING, ACCOUNT_SPEND, DEPLOYMENT_SPEND].iter().any(|name| cause.contains(name))
}

/// The refusal a reservation batch's error stands for, when a ceiling's CHECK failed
/// (`account_quota` is the account's ceiling, for the message).
pub fn ceiling_refusal(cause: &str, account_quota: u32, n: u32, now_ms: u64) -> Option<ApiError> {
    if cause.contains(ACCOUNT_CEILING) {
        Some(account_quota_exceeded(account_quota, n, now_ms))
    } else if cause.contains(DEPLOYMENT_CEILING) {
        Some(deployment_budget_exhausted("live images", now_ms))
    } else if cause.contains(ACCOUNT_SPEND) {
        Some(budget_exceeded("this account's", now_ms))
    } else if cause.contains(DEPLOYMENT_SPEND) {
        Some(deployment_budget_exhausted("dollars", now_ms))
    } else {
        None
    }
}

/// 429: the worst case of this request's cost would pass the daily budget in dollars of
/// `whose` ("this key's", "this account's"). Smaller requests may still fit.
pub fn budget_exceeded(whose: &str, now_ms: u64) -> ApiError {
    ApiError::new(
        Code::BudgetExceeded,
        format!("{whose} daily budget in dollars cannot cover this request's worst-case cost; it resets at 00:00 UTC (POST /v1/estimate shows a request's cost)"),
    )
    .with_header("retry-after", crate::time::seconds_until_next_utc_midnight(now_ms).to_string())
}

/// 429: the account's live images for today would pass its ceiling.
pub fn account_quota_exceeded(quota: u32, n: u32, now_ms: u64) -> ApiError {
    ApiError::new(
        Code::AccountQuotaExceeded,
        format!(
            "this account's daily ceiling of {quota} live images is used up ({n} requested); it resets at 00:00 UTC"
        ),
    )
    .with_header("retry-after", crate::time::seconds_until_next_utc_midnight(now_ms).to_string())
    .with_header("x-should-retry", "false")
}

/// 503: the deployment's live images (or dollars) for today are spent; test keys keep working.
pub fn deployment_budget_exhausted(unit: &str, now_ms: u64) -> ApiError {
    ApiError::new(
        Code::DeploymentBudgetExhausted,
        format!(
            "this service's daily budget of {unit} is spent; test keys still work, live ones again after 00:00 UTC"
        ),
    )
    .with_header("retry-after", crate::time::seconds_until_next_utc_midnight(now_ms).to_string())
}

/// 429 for a request that would pass today's quota: retry after the next UTC midnight.
pub fn quota_exceeded(quota: u32, used: u32, n: u32, now_ms: u64) -> ApiError {
    let remaining = quota.saturating_sub(used);
    ApiError::new(Code::DailyQuotaExceeded,
        format!("this key's daily quota of {quota} images is used up ({remaining} left, {n} requested); it resets at 00:00 UTC"),
    )
    .with_header("retry-after", crate::time::seconds_until_next_utc_midnight(now_ms).to_string())
    .with_header("x-should-retry", "false")
    .with_header("x-quota-limit-images", quota.to_string())
    .with_header("x-quota-remaining-images", remaining.to_string())
}

/// An inclusive range of UTC days.
#[derive(Debug, PartialEq, Eq)]
pub struct DateRange {
    pub from: String,
    pub to: String,
    pub days: Vec<String>,
}

/// `from`/`to` query values (`YYYY-MM-DD`), defaulting to the 30 days ending today.
pub fn parse_range(from: Option<&str>, to: Option<&str>, now_ms: u64) -> ApiResult<DateRange> {
    let day = |value: &str, param: &str| {
        millis_from_date(value)
            .ok_or_else(|| ApiError::invalid_value(param, format!("{param} must be a date as YYYY-MM-DD")))
    };
    let to_ms = match to {
        Some(to) => day(to, "to")?,
        None => millis_from_date(&date_from_millis(now_ms)).unwrap_or(0),
    };
    let from_ms = match from {
        Some(from) => day(from, "from")?,
        None => to_ms.saturating_sub((DEFAULT_RANGE_DAYS - 1) * MILLIS_PER_DAY),
    };
    if from_ms > to_ms {
        return Err(ApiError::invalid_value("from", "from must not be after to"));
    }
    let span = (to_ms - from_ms) / MILLIS_PER_DAY + 1;
    if span > MAX_RANGE_DAYS {
        return Err(ApiError::invalid_value("from", format!("a range covers at most {MAX_RANGE_DAYS} days")));
    }
    let days = (0..span).map(|i| date_from_millis(from_ms + i * MILLIS_PER_DAY)).collect();
    Ok(DateRange { from: date_from_millis(from_ms), to: date_from_millis(to_ms), days })
}

crate::db::row! {
    struct KeyRow {
        id: String,
        name: String,
        prefix: String,
        mode: KeyMode,
        is_active: i64,
        daily_image_quota: Option<i64>,
        daily_budget_micros: Option<Micros>,
        images_today: i64,
    }
}

crate::db::row! {
    struct DayRow {
        api_key_id: String,
        usage_date: String,
        image_count: i64,
    }
}

crate::db::row! {
    /// What one key's images of one model cost on one UTC day (`usage_costs`).
    #[derive(Serialize)]
    #[cfg_attr(test, derive(schemars::JsonSchema))]
    #[cfg_attr(test, schemars(deny_unknown_fields))]
    pub struct CostDay {
        #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::date"))]
        date: String,
        model: String,
        #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::uuid"))]
        api_key_id: String,
        mode: KeyMode,
        images: u64,
        input_text_tokens: u64,
        input_image_tokens: u64,
        output_image_tokens: u64,
        output_text_tokens: u64,
        reasoning_tokens: u64,
        cost_usd: Micros,
    }
}

/// The sums of [`CostDay`]s.
#[derive(Serialize, Default)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct CostTotal {
    images: u64,
    input_text_tokens: u64,
    input_image_tokens: u64,
    output_image_tokens: u64,
    output_text_tokens: u64,
    reasoning_tokens: u64,
    /// Live and test together (test costs are what the tokens would cost; nothing is billed).
    cost_usd: Micros,
    live_cost_usd: Micros,
}

impl CostTotal {
    fn of(rows: &[CostDay]) -> CostTotal {
        rows.iter().fold(CostTotal::default(), |t, r| CostTotal {
            images: t.images + r.images,
            input_text_tokens: t.input_text_tokens + r.input_text_tokens,
            input_image_tokens: t.input_image_tokens + r.input_image_tokens,
            output_image_tokens: t.output_image_tokens + r.output_image_tokens,
            output_text_tokens: t.output_text_tokens + r.output_text_tokens,
            reasoning_tokens: t.reasoning_tokens + r.reasoning_tokens,
            cost_usd: Micros(t.cost_usd.0 + r.cost_usd.0),
            live_cost_usd: Micros(t.live_cost_usd.0 + if r.mode == KeyMode::Live { r.cost_usd.0 } else { 0 }),
        })
    }
}

crate::db::row! {
    /// The account's money ceiling and what it spent today.
    struct AccountBudget {
        daily_budget_micros: Option<Micros>,
        live_cost_today: Micros,
    }
}

#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct Day {
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::date"))]
    date: String,
    images: i64,
}

#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct KeyUsage {
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::uuid"))]
    api_key_id: String,
    name: String,
    prefix: String,
    mode: KeyMode,
    is_active: bool,
    daily_image_quota: i64,
    images_today: i64,
    remaining_today: i64,
    /// The key's own money ceiling per UTC day (null: none but `MAX_KEY_DAILY_BUDGET_USD`).
    daily_budget_usd: Option<Micros>,
    /// Images over the whole range.
    total_images: i64,
    /// One entry per day of the range, oldest first, zeros included.
    days: Vec<Day>,
}

/// `object: "usage"`.
#[derive(Debug, Clone, Copy, Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum UsageObject {
    Usage,
}

/// `GET /v1/usage`.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct UsageReport {
    object: UsageObject,
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::date"))]
    from: String,
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::date"))]
    to: String,
    /// Today's UTC date, whose counts `images_today` and `remaining_today` give.
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::date"))]
    today: String,
    data: Vec<KeyUsage>,
    /// What was spent, per day, model and key, oldest first (days with nothing are absent).
    costs: Vec<CostDay>,
    /// The sums of `costs`.
    total: CostTotal,
    /// The account's money ceiling per UTC day for its live keys: its own, else
    /// `ACCOUNT_DAILY_BUDGET_USD`; null when neither is set.
    daily_budget_usd: Option<Micros>,
    /// What the account's live images cost today, settled.
    live_cost_today_usd: Micros,
}

/// `GET /v1/usage`: images per key per UTC day over `from..=to`, with each key's quota
/// and what remains today. An API key sees itself; an account sees all its keys.
pub async fn get(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    let caller = auth::require_caller(req, rc).await?;
    let (from, to) = (http::query_param(req, "from")?, http::query_param(req, "to")?);
    let range = parse_range(from.as_deref(), to.as_deref(), rc.now_ms)?;
    let today = date_from_millis(rc.now_ms);

    let db = rc.db()?;
    // Keys in scope: the caller's key, or every key of the account.
    let scope = "(k.user_id = ?1 AND (?2 IS NULL OR k.id = ?2))";
    let bind_scope = [db::text(caller.user_id()), db::opt_text(caller.key_id())];
    let mut batch = Batch::new();
    let keys_query = batch.push::<KeyRow>(
        db.prepare(&format!(
            "SELECT k.id, k.name, k.prefix, k.mode, k.is_active, k.daily_image_quota, k.daily_budget_micros,
                    COALESCE(u.image_count, 0) AS images_today
             FROM api_keys k LEFT JOIN usage u ON u.api_key_id = k.id AND u.usage_date = ?3
             WHERE {scope} ORDER BY k.created_at DESC, k.id DESC"
        ))
        .bind(&[bind_scope[0].clone(), bind_scope[1].clone(), db::text(&today)])?,
    );
    let days_query = batch.push::<DayRow>(
        db.prepare(&format!(
            "SELECT u.api_key_id, u.usage_date, u.image_count
             FROM usage u JOIN api_keys k ON k.id = u.api_key_id
             WHERE {scope} AND u.usage_date BETWEEN ?3 AND ?4"
        ))
        .bind(&[bind_scope[0].clone(), bind_scope[1].clone(), db::text(&range.from), db::text(&range.to)])?,
    );
    let costs_query = batch.push::<CostDay>(
        db.prepare(&format!(
            "SELECT c.usage_date AS date, c.model, c.api_key_id, c.mode, c.images, c.input_text_tokens,
                    c.input_image_tokens, c.output_image_tokens, c.output_text_tokens, c.reasoning_tokens,
                    c.cost_micros AS cost_usd
             FROM usage_costs c JOIN api_keys k ON k.id = c.api_key_id
             WHERE {scope} AND c.user_id = ?1 AND c.usage_date BETWEEN ?3 AND ?4
             ORDER BY c.usage_date, c.model, c.api_key_id"
        ))
        .bind(&[bind_scope[0].clone(), bind_scope[1].clone(), db::text(&range.from), db::text(&range.to)])?,
    );
    let budget_query = batch.push::<AccountBudget>(
        db.prepare(
            "SELECT daily_budget_micros,
                    COALESCE((SELECT SUM(cost_micros) FROM usage_costs
                              WHERE user_id = ?1 AND usage_date = ?2 AND mode = 'live'), 0) AS live_cost_today
             FROM users WHERE id = ?1",
        )
        .bind(&[bind_scope[0].clone(), db::text(&today)])?,
    );
    let results = db.batch(batch).await.or_internal()?;
    let keys = results.rows(keys_query)?;
    let counted = results.rows(days_query)?;
    let costs = results.rows(costs_query)?;
    let budget = results.first(budget_query)?;

    let data: Vec<KeyUsage> = keys
        .into_iter()
        .map(|key| {
            let quota = key.daily_image_quota.unwrap_or(i64::from(rc.config.daily_image_quota));
            let days: Vec<Day> = range
                .days
                .iter()
                .map(|date| Day {
                    date: date.clone(),
                    images: counted
                        .iter()
                        .find(|row| row.api_key_id == key.id && &row.usage_date == date)
                        .map_or(0, |row| row.image_count),
                })
                .collect();
            KeyUsage {
                total_images: days.iter().map(|d| d.images).sum(),
                remaining_today: (quota - key.images_today).max(0),
                api_key_id: key.id,
                name: key.name,
                prefix: key.prefix,
                mode: key.mode,
                is_active: key.is_active != 0,
                daily_image_quota: quota,
                daily_budget_usd: key.daily_budget_micros,
                images_today: key.images_today,
                days,
            }
        })
        .collect();
    let (own_budget, live_cost_today_usd) =
        budget.map_or((None, Micros(0)), |b| (b.daily_budget_micros, b.live_cost_today));
    http::json(
        200,
        &UsageReport {
            object: UsageObject::Usage,
            from: range.from,
            to: range.to,
            today,
            data,
            total: CostTotal::of(&costs),
            costs,
            daily_budget_usd: own_budget.or(rc.config.account_daily_budget),
            live_cost_today_usd,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_range_is_the_last_30_days() {
        let now = millis_from_date("2026-11-23").unwrap() + 5_000;
        let range = parse_range(None, None, now).unwrap();
        assert_eq!((range.from.as_str(), range.to.as_str(), range.days.len()), ("2026-10-25", "2026-11-23", 30));
        assert_eq!(range.days.first().unwrap(), "2026-10-25");
    }

    #[test]
    fn explicit_ranges() {
        let now = millis_from_date("2026-11-23").unwrap();
        let range = parse_range(Some("2026-02-27"), Some("2026-03-01"), now).unwrap();
        assert_eq!(range.days, vec!["2026-02-27", "2026-02-28", "2026-03-01"]);
        let only_to = parse_range(None, Some("2026-01-30"), now).unwrap();
        assert_eq!(only_to.from, "2026-01-01");
        assert_eq!(parse_range(Some("2026-11-23"), None, now).unwrap().days, vec!["2026-11-23"]);
    }

    #[test]
    fn bad_ranges_are_400_naming_the_param() {
        let now = millis_from_date("2026-11-23").unwrap();
        for (from, to, param) in [
            (Some("2026-13-01"), None, "from"),
            (None, Some("yesterday"), "to"),
            (Some("2026-11-24"), Some("2026-11-23"), "from"),
            (Some("2024-01-01"), Some("2026-01-01"), "from"),
        ] {
            let err = parse_range(from, to, now).unwrap_err();
            assert_eq!((err.status(), err.code.as_str(), err.param.as_deref()), (400, "invalid_value", Some(param)));
        }
        assert!(parse_range(Some("2025-11-23"), Some("2026-11-23"), now).is_ok(), "366 days is allowed");
    }

    #[test]
    fn quota_error_says_when_to_come_back() {
        let midnight = crate::time::millis_from_date("2026-11-24").unwrap();
        let err = quota_exceeded(10, 9, 2, midnight - 90_000);
        assert_eq!((err.status(), err.code.as_str()), (429, "daily_quota_exceeded"));
        assert!(err.headers.contains(&("retry-after", "90".to_string())));
        assert!(err.headers.contains(&("x-should-retry", "false".to_string())));
        assert!(err.headers.contains(&("x-quota-remaining-images", "1".to_string())));
    }
}
