//! The operator's surface, `/v1/admin/...`, for accounts whose `role` is `admin` (made
//! with `bash scripts/admin.sh promote EMAIL`). To everyone else every admin path is the
//! 404 of a route that does not exist.
//!
//! - `GET /v1/admin/accounts`: accounts by email, with today's live and test images and key
//!   counts; `email_prefix` to search, `limit` and `starting_after` to page.
//! - `POST /v1/admin/accounts`: create an account (also when `REGISTRATION` is closed).
//! - `POST /v1/admin/accounts/{id}`: suspend or unsuspend it, set its own daily ceiling.
//! - `GET /v1/admin/usage`: the deployment's images per UTC day, live and test.

use crate::accounts::email::Email;
use crate::accounts::password::Password;
use crate::auth::{self, Role};
use crate::body::JsonObject;
use crate::db::{self, Batch, D1ResultExt};
use crate::error::{ApiError, ApiResult, Code};
use crate::http::{self, ListObject, RequestContext};
use crate::metering::Micros;
use crate::routes::AdminRoute;
use crate::time::{date_from_millis, iso_from_millis};
use serde::Serialize;
use worker::{Request, Response};

const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;

crate::db::row! {
    /// An account as an operator sees it.
    #[derive(Debug, Serialize)]
    #[cfg_attr(test, derive(schemars::JsonSchema))]
    #[cfg_attr(test, schemars(deny_unknown_fields))]
    pub struct AdminAccount {
        #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::uuid"))]
        id: String,
        email: String,
        role: Role,
        #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::timestamp"))]
        created_at: String,
        /// When the account was suspended; null when it is not.
        #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::optional_timestamp"))]
        suspended_at: Option<String>,
        /// The account's own ceiling of live images per UTC day; null: `ACCOUNT_DAILY_IMAGE_QUOTA`.
        daily_image_quota: Option<i64>,
        /// The account's own money ceiling per UTC day; null: `ACCOUNT_DAILY_BUDGET_USD`.
        daily_budget_usd: Option<Micros>,
        /// What its live images cost today (actual, settled).
        live_cost_today_usd: Micros,
        live_images_today: i64,
        test_images_today: i64,
        active_keys: i64,
        keys: i64,
    }
}

/// `GET /v1/admin/accounts`.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct AdminAccountList {
    object: ListObject,
    data: Vec<AdminAccount>,
    has_more: bool,
    /// The account ceiling that applies where an account has none of its own.
    default_daily_image_quota: u32,
    /// `ACCOUNT_DAILY_BUDGET_USD`: the money ceiling of an account with none of its own.
    default_daily_budget_usd: Option<Micros>,
}

crate::db::row! {
    /// One UTC day of the deployment.
    #[derive(Serialize)]
    #[cfg_attr(test, derive(schemars::JsonSchema))]
    #[cfg_attr(test, schemars(deny_unknown_fields))]
    pub struct DeploymentDay {
        #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::date"))]
        date: String,
        live_images: i64,
        test_images: i64,
        /// What the day's live images cost, settled (reservations in flight excluded).
        live_cost_usd: Micros,
    }
}

crate::db::row! {
    /// What one account's live images cost on one UTC day.
    #[derive(Serialize)]
    #[cfg_attr(test, derive(schemars::JsonSchema))]
    #[cfg_attr(test, schemars(deny_unknown_fields))]
    pub struct AccountDay {
        #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::uuid"))]
        user_id: String,
        #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::date"))]
        date: String,
        live_images: i64,
        live_cost_usd: Micros,
    }
}

/// `GET /v1/admin/usage`.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct DeploymentUsage {
    object: ListObject,
    /// `DEPLOYMENT_DAILY_LIVE_IMAGES`: live images the deployment may make per UTC day.
    daily_live_budget: u32,
    /// `DEPLOYMENT_DAILY_BUDGET_USD`: what the deployment's live images may cost per UTC day.
    daily_budget_usd: Option<Micros>,
    /// Days with any images, newest first, over the last `days` days.
    data: Vec<DeploymentDay>,
    /// Cost per account and day over the same days, newest day first and the biggest
    /// spender first within it (at most 1,000 rows).
    accounts: Vec<AccountDay>,
}

pub async fn handle(req: &mut Request, rc: &RequestContext, route: AdminRoute) -> ApiResult<Response> {
    let method = req.method().to_string();
    let admin = auth::require_admin(req, rc, &method, &req.path()).await?;
    match route {
        AdminRoute::ListAccounts => list_accounts(req, rc).await,
        AdminRoute::CreateAccount => create_account(req, rc).await,
        AdminRoute::UpdateAccount(id) => update_account(req, rc, &admin, &id).await,
        AdminRoute::Usage => usage(req, rc).await,
        AdminRoute::WrongMethod([]) => Err(ApiError::route_not_found(&method, &req.path())),
        AdminRoute::WrongMethod(allowed) => Err(ApiError::method_not_allowed(&method, allowed)),
    }
}

/// The account columns, with today's counts (`?1` is today), as subqueries per row: each
/// is a primary-key or index lookup, and a page holds at most 100 rows.
const ACCOUNT_SELECT: &str = "SELECT u.id, u.email, u.role, u.created_at, u.suspended_at, u.daily_image_quota,
        u.daily_budget_micros AS daily_budget_usd,
        COALESCE((SELECT SUM(c.cost_micros) FROM usage_costs c
                  WHERE c.user_id = u.id AND c.usage_date = ?1 AND c.mode = 'live'), 0) AS live_cost_today_usd,
        COALESCE((SELECT a.live_images FROM account_usage a WHERE a.user_id = u.id AND a.usage_date = ?1), 0)
            AS live_images_today,
        COALESCE((SELECT SUM(x.image_count) FROM api_keys k JOIN usage x ON x.api_key_id = k.id AND x.usage_date = ?1
                  WHERE k.user_id = u.id AND k.mode = 'test'), 0) AS test_images_today,
        (SELECT COUNT(*) FROM api_keys k WHERE k.user_id = u.id AND k.is_active = 1) AS active_keys,
        (SELECT COUNT(*) FROM api_keys k WHERE k.user_id = u.id) AS keys
    FROM users u";

async fn list_accounts(req: &Request, rc: &RequestContext) -> ApiResult<Response> {
    let limit = match http::query_param(req, "limit")? {
        None => DEFAULT_LIMIT,
        Some(raw) => raw.parse().ok().filter(|l| (1..=MAX_LIMIT).contains(l)).ok_or_else(|| {
            ApiError::validation(Code::OutOfRange, "limit", format!("limit must be an integer from 1 to {MAX_LIMIT}"))
        })?,
    };
    let prefix = http::query_param(req, "email_prefix")?.map(|p| p.trim().to_ascii_lowercase()).unwrap_or_default();
    if prefix.len() > 254 {
        return Err(ApiError::validation(Code::OutOfRange, "email_prefix", "email_prefix is at most 254 bytes"));
    }
    let cursor = http::query_param(req, "starting_after")?.filter(|c| !c.is_empty());
    let db = rc.db()?;
    // Accounts in email order; a prefix is a range of the unique email index.
    let statement = db
        .prepare(&format!(
            "{ACCOUNT_SELECT}
             WHERE u.email >= ?2 AND u.email < ?3
               AND (?4 IS NULL OR u.email > (SELECT email FROM users WHERE id = ?4))
             ORDER BY u.email LIMIT ?5"
        ))
        .bind(&[
            db::text(&date_from_millis(rc.now_ms)),
            db::text(&prefix),
            // Just past every string that starts with the prefix.
            db::text(&format!("{prefix}\u{10FFFF}")),
            db::opt_text(cursor.as_deref()),
            db::int(i64::from(limit) + 1),
        ])?;
    let mut data: Vec<AdminAccount> = db.all(statement).await?;
    let has_more = data.len() > limit as usize;
    data.truncate(limit as usize);
    http::json(
        200,
        &AdminAccountList {
            object: ListObject::List,
            data,
            has_more,
            default_daily_image_quota: rc.config.account_daily_image_quota,
            default_daily_budget_usd: rc.config.account_daily_budget,
        },
    )
}

async fn account(rc: &RequestContext, id: &str) -> ApiResult<AdminAccount> {
    let db = rc.db()?;
    let statement = db
        .prepare(&format!("{ACCOUNT_SELECT} WHERE u.id = ?2"))
        .bind(&[db::text(&date_from_millis(rc.now_ms)), db::text(id)])?;
    db.first(statement).await?.ok_or_else(|| ApiError::not_found("no account with this id"))
}

/// `POST /v1/admin/accounts` `{email, password}`: 201 with the account.
async fn create_account(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    let (email, password) = crate::accounts::credentials(http::json_body(req).await?)?;
    let (email, password) = (Email::parse(&email)?, Password::parse(password)?);
    let db = rc.db()?;
    let user = crate::accounts::create_user(rc, &db, &email, &password).await?;
    http::json(201, &account(rc, &user.id).await?)
}

/// What `POST /v1/admin/accounts/{id}` may change.
#[derive(Debug, PartialEq)]
pub struct AccountUpdate {
    pub suspended: Option<bool>,
    /// `Some(None)`: back to the deployment's default.
    pub daily_image_quota: Option<Option<u32>>,
    /// `Some(None)`: back to `ACCOUNT_DAILY_BUDGET_USD`.
    pub daily_budget: Option<Option<Micros>>,
}

impl AccountUpdate {
    pub fn parse(mut body: JsonObject) -> ApiResult<AccountUpdate> {
        let suspended = body.optional_bool("suspended")?;
        let daily_image_quota = body.nullable_u32("daily_image_quota", 0..=10_000_000)?;
        let daily_budget = body.nullable_usd("daily_budget_usd", crate::config::MAX_DAILY_BUDGET)?;
        body.finish()?;
        Ok(AccountUpdate { suspended, daily_image_quota, daily_budget })
    }
}

/// The body of `POST /v1/admin/accounts/{id}`.
#[cfg(test)]
#[derive(schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AccountUpdateRequest {
    /// `true` suspends: the account's token and every one of its keys get 403
    /// `account_suspended` from the next request. `false` lifts it.
    pub suspended: Option<bool>,
    /// The account's own ceiling of live images per UTC day (0 stops its live images);
    /// `null` returns it to `ACCOUNT_DAILY_IMAGE_QUOTA`.
    #[schemars(range(min = 0, max = 10_000_000))]
    pub daily_image_quota: Option<u32>,
    /// The account's own money ceiling per UTC day, in US dollars as a decimal string
    /// (`"0"` stops its live images); `null` returns it to `ACCOUNT_DAILY_BUDGET_USD`.
    #[schemars(regex(pattern = r"^[0-9]{1,10}(\.[0-9]{1,6})?$"))]
    pub daily_budget_usd: Option<String>,
}

async fn update_account(
    req: &mut Request,
    rc: &RequestContext,
    admin: &auth::Account,
    id: &str,
) -> ApiResult<Response> {
    let update = AccountUpdate::parse(http::json_body(req).await?)?;
    if update.suspended == Some(true) && id == admin.user_id {
        return Err(ApiError::invalid_value("suspended", "an admin cannot suspend their own account"));
    }
    let db = rc.db()?;
    let mut batch = Batch::new();
    let mut changed = Vec::new();
    if let Some(suspended) = update.suspended {
        changed.push(
            batch.push::<()>(
                db.prepare(
                    "UPDATE users SET suspended_at = CASE WHEN ?2 THEN COALESCE(suspended_at, ?3) ELSE NULL END
                 WHERE id = ?1",
                )
                .bind(&[
                    db::text(id),
                    db::int(i64::from(suspended)),
                    db::text(&iso_from_millis(rc.now_ms)),
                ])?,
            ),
        );
    }
    // Suspending ends the account's queued generations in the same batch (their charges
    // back); the consumer refuses any it would take after.
    let now_iso = iso_from_millis(rc.now_ms);
    let stopped = match update.suspended {
        Some(true) => Some(crate::generate::store::push_stop_queued_of(&mut batch, &db, id, &now_iso)?),
        _ => None,
    };
    if let Some(quota) = update.daily_image_quota {
        changed.push(
            batch.push::<()>(
                db.prepare("UPDATE users SET daily_image_quota = ?2 WHERE id = ?1")
                    .bind(&[db::text(id), db::opt_int(quota.map(i64::from))])?,
            ),
        );
    }
    if let Some(budget) = update.daily_budget {
        changed.push(
            batch.push::<()>(
                db.prepare("UPDATE users SET daily_budget_micros = ?2 WHERE id = ?1")
                    .bind(&[db::text(id), db::opt_int(budget.map(Micros::stored))])?,
            ),
        );
    }
    if !batch.is_empty() {
        let results = db.batch(batch).await.or_internal()?;
        if changed.into_iter().any(|slot| results.changes(slot) == 0) {
            return Err(ApiError::not_found("no account with this id"));
        }
        if let Some(slot) = stopped {
            let canceled = results.rows(slot)?;
            crate::log::info("admin: suspension canceled queued generations", &canceled.len().to_string());
            if let Some(bucket) = crate::storage::bucket(rc) {
                for generation in canceled {
                    let count = crate::generate::inputs::parse_records(generation.inputs.as_deref()).len();
                    crate::storage::delete_inputs(&bucket, &generation.id, count).await;
                }
            }
        }
    }
    http::json(200, &account(rc, id).await?)
}

/// `GET /v1/admin/usage?days=N` (1 to 366, default 30).
async fn usage(req: &Request, rc: &RequestContext) -> ApiResult<Response> {
    let days: u64 =
        match http::query_param(req, "days")? {
            None => 30,
            Some(raw) => raw.parse().ok().filter(|d| (1..=366).contains(d)).ok_or_else(|| {
                ApiError::validation(Code::OutOfRange, "days", "days must be an integer from 1 to 366")
            })?,
        };
    let since = date_from_millis(rc.now_ms.saturating_sub((days - 1) * crate::time::MILLIS_PER_DAY));
    let db = rc.db()?;
    let mut batch = Batch::new();
    let days = batch.push::<DeploymentDay>(
        db.prepare(
            "SELECT d.usage_date AS date, d.live_images, d.test_images,
                    COALESCE((SELECT SUM(c.cost_micros) FROM usage_costs c
                              WHERE c.usage_date = d.usage_date AND c.mode = 'live'), 0) AS live_cost_usd
             FROM deployment_usage d WHERE d.usage_date >= ?1 ORDER BY d.usage_date DESC",
        )
        .bind(&[db::text(&since)])?,
    );
    let accounts = batch.push::<AccountDay>(
        db.prepare(
            "SELECT user_id, usage_date AS date, SUM(images) AS live_images, SUM(cost_micros) AS live_cost_usd
             FROM usage_costs WHERE usage_date >= ?1 AND mode = 'live'
             GROUP BY user_id, usage_date ORDER BY usage_date DESC, live_cost_usd DESC, user_id LIMIT 1000",
        )
        .bind(&[db::text(&since)])?,
    );
    let results = db.batch(batch).await.or_internal()?;
    http::json(
        200,
        &DeploymentUsage {
            object: ListObject::List,
            daily_live_budget: rc.config.deployment_daily_live_images,
            daily_budget_usd: rc.config.deployment_daily_budget,
            data: results.rows(days)?,
            accounts: results.rows(accounts)?,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::parse_object;

    #[test]
    fn updates() {
        let parse = |raw: &str| AccountUpdate::parse(parse_object(raw.as_bytes()).unwrap());
        assert_eq!(
            parse("{}").unwrap(),
            AccountUpdate { suspended: None, daily_image_quota: None, daily_budget: None }
        );
        assert_eq!(
            parse(r#"{"suspended": true, "daily_image_quota": null, "daily_budget_usd": "12.5"}"#).unwrap(),
            AccountUpdate {
                suspended: Some(true),
                daily_image_quota: Some(None),
                daily_budget: Some(Some(Micros(12_500_000)))
            }
        );
        assert_eq!(parse(r#"{"daily_budget_usd": null}"#).unwrap().daily_budget, Some(None));
        assert_eq!(parse(r#"{"daily_budget_usd": 3}"#).unwrap().daily_budget, Some(Some(Micros(3_000_000))));
        for bad in [r#"{"daily_budget_usd": 1.5}"#, r#"{"daily_budget_usd": "-1"}"#, r#"{"daily_budget_usd": "1e2"}"#] {
            assert!(matches!(parse(bad).unwrap_err().code, Code::InvalidType | Code::OutOfRange), "{bad}");
        }
        assert_eq!(parse(r#"{"daily_image_quota": 5}"#).unwrap().daily_image_quota, Some(Some(5)));
        assert_eq!(parse(r#"{"suspended": "yes"}"#).unwrap_err().code, Code::InvalidType);
        assert_eq!(parse(r#"{"daily_image_quota": -1}"#).unwrap_err().code, Code::OutOfRange);
        assert_eq!(parse(r#"{"role": "admin"}"#).unwrap_err().code, Code::UnknownParameter);
    }
}
