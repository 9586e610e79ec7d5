//! Every statement on the `generations` table, and the reservation chain that creates a
//! row. Nothing else in the crate reads or writes `generations`.
//!
//! Two rules hold here, so that callers cannot break them:
//! - **A row is created only inside its reservation.** [`Reservation::push`] adds to one
//!   batch: (the key lookup and the rate-limit take, when the caller put them first) ->
//!   the key's daily count -> the account's -> the deployment's -> the generation row.
//!   Each statement runs only if the one before it changed a row (`changes() = 1`), and
//!   the account's and deployment's rows carry CHECK constraints that roll the whole batch
//!   back; so either every level is charged and the row exists, or nothing is written.
//! - **A reservation is given back only by the transition that ends its generation.**
//!   [`push_end`] moves the row out of the statuses that may precede the end
//!   (`WHERE status IN (...)`) and releases the charge in the same batch only if that move
//!   took. Two endings racing (a cancel and the consumer, the cron and a late finish, a
//!   dead letter and a retry) release once between them.
//!
//! D1 binds only positional parameters; statements with many columns build their column
//! list and their `?N` from one list of `(column, value)` pairs ([`Values`]), so a value
//! can never be bound to its neighbour's column.

use super::inputs::InputRecord;
use super::request::{GenerationRequest, Style};
use super::status::Status;
use crate::auth::{KeyMode, KeyPrincipal};
use crate::config::Config;
use crate::db::{self, Batch, Db, JsValue, Slot, Write};
use crate::error::{ApiError, ApiResult};
use crate::metering::{Micros, Tokens};
use crate::usage;

/// Column values of one statement, in the order they are bound (generic so that its
/// numbering is tested natively, where no `JsValue` can be made).
pub struct Values<V = JsValue> {
    columns: Vec<&'static str>,
    values: Vec<V>,
}

impl<V> Default for Values<V> {
    fn default() -> Self {
        Values { columns: Vec::new(), values: Vec::new() }
    }
}

impl<V: Clone> Values<V> {
    pub fn new() -> Values<V> {
        Values::default()
    }

    pub fn set(mut self, column: &'static str, value: V) -> Values<V> {
        self.columns.push(column);
        self.values.push(value);
        self
    }

    /// `a, b, c`.
    pub fn column_list(&self) -> String {
        self.columns.join(", ")
    }

    /// `?1, ?2, ?3`: one placeholder per column, numbered from 1.
    pub fn placeholders(&self) -> String {
        (1..=self.columns.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
    }

    /// `a = ?1, b = ?2`.
    pub fn assignments(&self) -> String {
        self.columns.iter().enumerate().map(|(i, c)| format!("{c} = ?{}", i + 1)).collect::<Vec<_>>().join(", ")
    }

    /// The next free parameter number, for what the statement binds after these.
    pub fn next(&self) -> usize {
        self.columns.len() + 1
    }

    /// The values, then `more`.
    pub fn binds(self, more: &[V]) -> Vec<V> {
        let mut values = self.values;
        values.extend_from_slice(more);
        values
    }
}

// ---------------------------------------------------------------- creating: the reservation

/// A generation about to be reserved: what its record says, and which key it charges.
pub struct Reservation<'a> {
    pub id: &'a str,
    /// The key, by id once it has been looked up, or by the presented key's hash when the
    /// lookup rides in the same batch.
    pub key: usage::KeyRef<'a>,
    /// The statement just before is the rate limit's take: nothing is reserved unless it
    /// took a token.
    pub after_rate_take: bool,
    pub mode: KeyMode,
    /// The UTC day charged.
    pub day: &'a str,
    /// When the request started (`created_at`) and when the reservation is made
    /// (`reserved_at`: the cron measures abandonment from it).
    pub created_iso: &'a str,
    pub reserved_iso: &'a str,
    pub request: &'a GenerationRequest,
    pub input_records: &'a [InputRecord],
    /// [`Status::Pending`] (synchronous) or [`Status::Queued`].
    pub status: Status,
    /// Its cost's worst case, reserved against the money budgets and recorded with it.
    pub worst: Micros,
    /// The conversation it continues (`request.previous` names the generation), if any.
    pub conversation_id: Option<&'a str>,
}

impl Reservation<'_> {
    /// Pushes the reservation chain (see the module's first rule) and returns the slot of
    /// the key's count after it: no row means the key's quota (or a usable key) refused it.
    pub fn push(self, batch: &mut Batch, db: &Db<'_>, config: &Config) -> ApiResult<Slot<usage::Reserved>> {
        let request = self.request;
        let charge = usage::Reservation {
            key: self.key,
            day: self.day,
            n: request.n,
            mode: self.mode,
            now_iso: self.reserved_iso,
            after_rate_take: self.after_rate_take,
            worst: self.worst,
        };
        let reserved = usage::reserve(batch, db, charge, config)?;
        let inputs =
            (!self.input_records.is_empty()).then(|| serde_json::to_string(self.input_records).unwrap_or_default());
        let values = Values::new()
            .set("id", db::text(self.id))
            .set("prompt", db::text(&request.prompt))
            .set("model", db::text(&request.model))
            .set("size", db::text(&request.output.label()))
            .set("style", db::text(request.style.as_str()))
            .set("n", db::int(request.n.into()))
            .set("status", db::text(self.status.as_str()))
            .set("created_at", db::text(self.created_iso))
            .set("reserved_at", db::text(self.reserved_iso))
            .set("mode", db::text(self.mode.as_str()))
            .set("aspect_ratio", db::text(request.output.aspect_ratio))
            .set("resolution", db::text(request.output.resolution.as_str()))
            .set("inputs", db::opt_text(inputs.as_deref()))
            .set("follows_inputs", db::int(i64::from(request.output.follows_inputs)))
            .set("webhook_url", db::opt_text(request.webhook_url.as_deref()))
            .set("reserved_micros", db::int(self.worst.stored()))
            .set("previous_generation_id", db::opt_text(request.previous.as_ref().map(|p| p.generation_id.as_str())))
            .set("previous_image_index", db::opt_int(request.previous.as_ref().map(|p| i64::from(p.image_index))))
            // A generation that continues none starts its own conversation.
            .set("conversation_id", db::text(self.conversation_id.unwrap_or(self.id)));
        let (key_column, key) = self.key.column_and_value();
        let key_param = values.next();
        batch.push::<()>(
            db.prepare(&format!(
                "INSERT INTO generations ({}, api_key_id, user_id)
                 SELECT {}, k.id, k.user_id FROM api_keys k WHERE k.{key_column} = ?{key_param} AND changes() = 1",
                values.column_list(),
                values.placeholders(),
            ))
            .bind(&values.binds(&[db::text(key)]))?,
        );
        Ok(reserved)
    }
}

/// The key's count for today after a reservation, or the refusal of its quota (no row:
/// the request asked for more than was left, or a concurrent request took it).
pub fn reserved_count(
    reserved: Option<usage::Reserved>,
    principal: &KeyPrincipal,
    (n, worst): (u32, Micros),
    now_ms: u64,
) -> ApiResult<u32> {
    match reserved {
        Some(count) => Ok(u32::try_from(count.image_count).unwrap_or(u32::MAX)),
        // The key's budget in dollars, if what was spent when the key was read leaves too
        // little for the worst case.
        None if principal.budget.is_some_and(|budget| principal.spent_today.0.saturating_add(worst.0) > budget.0) => {
            Err(usage::budget_exceeded("this key's", now_ms))
        }
        // If the count read with the key leaves room, a concurrent request took it since
        // (or, rarely, the key was revoked since: it is not charged either way).
        None => {
            let quota = principal.daily_quota;
            let used = if principal.used_today.saturating_add(n) > quota { principal.used_today } else { quota };
            Err(usage::quota_exceeded(quota, used, n, now_ms))
        }
    }
}

// ---------------------------------------------------------------- ending: one release at most

/// How a generation ends: its new status, the statuses it may end from, and why.
pub struct End<'a> {
    pub to: Status,
    /// By default every status that may precede `to` ([`Status::from_for`]).
    pub from: Vec<Status>,
    /// The error envelope's code and message, for `failed`.
    pub error: Option<(&'a str, &'a str)>,
    pub finished_iso: &'a str,
}

impl<'a> End<'a> {
    pub fn new(to: Status, error: Option<(&'a str, &'a str)>, finished_iso: &'a str) -> End<'a> {
        End { to, from: Status::from_for(to), error, finished_iso }
    }

    /// Only from these statuses (the cron gives up only pending or running generations).
    pub fn only_from(mut self, from: &[Status]) -> End<'a> {
        self.from.retain(|status| from.contains(status));
        self
    }
}

/// Pushes the end of generation `id` and, only if that move took, the release of its
/// `charge` (see the module's second rule). Returns the move's slot: `changes() == 1`
/// when this ending won.
pub fn push_end(
    batch: &mut Batch,
    db: &Db<'_>,
    id: &str,
    end: &End<'_>,
    charge: usage::Charge<'_>,
) -> ApiResult<Write> {
    let moved = batch.push::<()>(
        db.prepare(&format!(
            "UPDATE generations SET status = ?2, error_code = ?3, error_message = ?4, finished_at = ?5
             WHERE id = ?1 AND status IN ({})",
            Status::sql_list(&end.from)
        ))
        .bind(&[
            db::text(id),
            db::text(end.to.as_str()),
            db::opt_text(end.error.map(|e| e.0)),
            db::opt_text(end.error.map(|e| e.1)),
            db::text(end.finished_iso),
        ])?,
    );
    usage::release_if_previous_took(batch, db, charge)?;
    Ok(moved)
}

/// What a finished generation records.
pub struct Success<'a> {
    pub object_keys: Option<&'a str>,
    /// JSON of the images that did not come back (`render::ImageFailure`), if any.
    pub failures: Option<&'a str>,
    /// JSON of each image's model turn, by index (`gemini::TurnPart`s), to continue from.
    pub model_turns: Option<&'a str>,
    /// The settlement, made with the success: the images that did not come back, and the
    /// reserved worst case less the actual cost, given back.
    pub settle: usage::Charge<'a>,
    /// What the delivered images' calls reported, their cost, and the model they are
    /// counted under in the day's usage.
    pub usage: Metered<'a>,
    pub mime_type: &'a str,
    pub bytes: usize,
    pub upstream_latency_ms: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub finished_iso: &'a str,
}

/// Marks generation `id` succeeded, if it still may (the cron may have given it up), and
/// in the same batch, only if that took, gives back the charge of the images that did not
/// come back (`success.unreturned`). Returns whether it did.
pub async fn succeed(db: &Db<'_>, id: &str, success: Success<'_>) -> ApiResult<bool> {
    let usage = &success.usage;
    let tokens = usage.tokens;
    let count = |n: u64| db::int(i64::try_from(n).unwrap_or(usage::NO_CEILING));
    let values = Values::new()
        .set("input_text_tokens", count(tokens.input_text))
        .set("input_image_tokens", count(tokens.input_image))
        .set("output_image_tokens", count(tokens.output_image))
        .set("output_text_tokens", count(tokens.output_text))
        .set("reasoning_tokens", count(tokens.reasoning))
        .set("cost_micros", db::int(usage.cost.stored()))
        .set("usage_estimated", db::int(i64::from(usage.estimated)))
        .set("failures", db::opt_text(success.failures))
        .set("model_turns", db::opt_text(success.model_turns))
        .set("object_keys", db::opt_text(success.object_keys))
        .set("mime_type", db::text(success.mime_type))
        .set("bytes", db::int(success.bytes as i64))
        .set("upstream_latency_ms", db::int(success.upstream_latency_ms as i64))
        .set("width", db::opt_int(success.width.map(i64::from)))
        .set("height", db::opt_int(success.height.map(i64::from)))
        .set("finished_at", db::text(success.finished_iso))
        .set("status", db::text(Status::Succeeded.as_str()));
    let id_param = values.next();
    let statement = db
        .prepare(&format!(
            "UPDATE generations SET {} WHERE id = ?{id_param} AND status IN ({})",
            values.assignments(),
            Status::sql_list(&Status::from_for(Status::Succeeded))
        ))
        .bind(&values.binds(&[db::text(id)]))?;
    let mut batch = Batch::new();
    let moved = batch.push::<()>(statement);
    // The day's spend by model, only if the move took (each statement gates the next).
    let settle = success.settle;
    batch.push::<()>(
        db.prepare(
            "INSERT INTO usage_costs (api_key_id, usage_date, model, user_id, mode, images, input_text_tokens,
                                      input_image_tokens, output_image_tokens, output_text_tokens, reasoning_tokens,
                                      cost_micros)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12 WHERE changes() = 1
             ON CONFLICT (api_key_id, usage_date, model) DO UPDATE SET
                 images = images + excluded.images,
                 input_text_tokens = input_text_tokens + excluded.input_text_tokens,
                 input_image_tokens = input_image_tokens + excluded.input_image_tokens,
                 output_image_tokens = output_image_tokens + excluded.output_image_tokens,
                 output_text_tokens = output_text_tokens + excluded.output_text_tokens,
                 reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
                 cost_micros = cost_micros + excluded.cost_micros",
        )
        .bind(&[
            db::text(settle.key_id),
            db::text(settle.day),
            db::text(usage.model),
            db::text(settle.user_id),
            db::text(settle.mode.as_str()),
            db::int(i64::from(usage.images)),
            count(tokens.input_text),
            count(tokens.input_image),
            count(tokens.output_image),
            count(tokens.output_text),
            count(tokens.reasoning),
            db::int(usage.cost.stored()),
        ])?,
    );
    usage::release_if_previous_took(&mut batch, db, settle)?;
    let results = db.batch(batch).await.map_err(ApiError::from)?;
    Ok(results.changes(moved) == 1)
}

/// What a generation's delivered images cost, as [`succeed`] records it.
pub struct Metered<'a> {
    pub model: &'a str,
    pub images: u32,
    pub tokens: Tokens,
    pub cost: Micros,
    /// Some call reported no usage (or no split by modality), or the images were drawn by
    /// the synthetic provider: counted as the model documents them.
    pub estimated: bool,
}

crate::db::row! {
    /// What ending a generation from outside its request reads of it first: its charge,
    /// its status, and what winding it up needs (its owner, webhook and queued inputs).
    pub struct Charged {
        pub api_key_id: String,
        pub user_id: String,
        pub n: i64,
        pub mode: Option<KeyMode>,
        pub created_at: String,
        pub status: Status,
        pub webhook_url: Option<String>,
        pub inputs: Option<String>,
        pub reserved_micros: i64,
    }
}

impl Charged {
    /// What it reserved, on the day it reserved it.
    pub fn charge(&self) -> usage::Charge<'_> {
        stored_charge(&self.api_key_id, &self.user_id, &self.created_at, (self.n, self.reserved_micros), self.mode)
    }
}

/// What a stored generation reserved: `n` images of its key (and account, for a live key)
/// and `micros` of money, on the UTC day it was created. Rows from before the mode column
/// count as live: releasing a charge that was never made changes nothing (counts stop at 0).
fn stored_charge<'a>(
    key_id: &'a str,
    user_id: &'a str,
    created_at: &'a str,
    (n, micros): (i64, i64),
    mode: Option<KeyMode>,
) -> usage::Charge<'a> {
    usage::Charge {
        key_id,
        user_id,
        day: created_at.get(..10).unwrap_or_default(),
        n: u32::try_from(n).unwrap_or(0),
        mode: mode.unwrap_or(KeyMode::Live),
        micros: micros.max(0),
    }
}

/// Ends generation `id` from outside its request (cancel, dead letter): reads its charge,
/// then moves it and releases in one batch. Returns whether this ending won, and the
/// generation as it was (None: no such generation).
pub async fn end(db: &Db<'_>, id: &str, end: &End<'_>) -> ApiResult<(bool, Option<Charged>)> {
    let row: Option<Charged> = db
        .first(
            db.prepare(
                "SELECT api_key_id, user_id, n, mode, created_at, status, webhook_url, inputs, reserved_micros
                 FROM generations WHERE id = ?1",
            )
            .bind(&[db::text(id)])?,
        )
        .await?;
    let Some(row) = row else { return Ok((false, None)) };
    let mut batch = Batch::new();
    let moved = push_end(&mut batch, db, id, end, row.charge())?;
    let results = db.batch(batch).await.map_err(ApiError::from)?;
    Ok((results.changes(moved) == 1, Some(row)))
}

// ---------------------------------------------------------------- the queue's take

crate::db::row! {
    /// A queued generation as the consumer takes it: enough to rebuild its request.
    pub struct Taken {
        pub api_key_id: String,
        pub user_id: String,
        pub prompt: String,
        pub model: String,
        pub size: String,
        pub style: String,
        pub n: u32,
        pub mode: Option<KeyMode>,
        pub aspect_ratio: Option<String>,
        pub resolution: Option<String>,
        pub inputs: Option<String>,
        pub follows_inputs: i64,
        pub webhook_url: Option<String>,
        pub created_at: String,
        pub reserved_micros: i64,
        pub previous_generation_id: Option<String>,
        pub previous_image_index: Option<u32>,
    }
}

/// Takes a queued generation (`queued -> running`), only while its account is not
/// suspended and its key not revoked, checked in the same statement. A duplicate delivery,
/// a canceled generation or a stopped one takes nothing (see [`stop_blocked`]).
pub async fn take(db: &Db<'_>, id: &str, now_iso: &str) -> ApiResult<Option<Taken>> {
    db.first(
        db.prepare(&format!(
            "UPDATE generations SET status = 'running', started_at = ?2 WHERE id = ?1 AND status = 'queued'
               AND NOT {ACCOUNT_SUSPENDED} AND {KEY_ACTIVE}
             RETURNING api_key_id, user_id, prompt, model, size, style, n, mode, aspect_ratio, resolution,
                       inputs, follows_inputs, webhook_url, created_at, reserved_micros, previous_generation_id,
                       previous_image_index"
        ))
        .bind(&[db::text(id), db::text(now_iso)])?,
    )
    .await
}

/// The two conditions a queued generation (`generations` in scope) runs under, in the
/// take and in [`stop_blocked`]'s account of why it did not: its account is suspended, its
/// key is active. Fixed SQL, no input.
const ACCOUNT_SUSPENDED: &str =
    "EXISTS (SELECT 1 FROM users u WHERE u.id = generations.user_id AND u.suspended_at IS NOT NULL)";
const KEY_ACTIVE: &str = "EXISTS (SELECT 1 FROM api_keys k WHERE k.id = generations.api_key_id AND k.is_active = 1)";

/// Why queued work stopped before it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    AccountSuspended,
    KeyRevoked,
}

impl Stopped {
    pub fn code(self) -> &'static str {
        match self {
            Stopped::AccountSuspended => "account_suspended",
            Stopped::KeyRevoked => "key_revoked",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Stopped::AccountSuspended => "the account was suspended before this generation ran",
            Stopped::KeyRevoked => "the API key was revoked before this generation ran",
        }
    }
}

crate::db::row! {
    /// A generation that a take passed over, and whether it may run.
    struct Passed {
        api_key_id: String,
        user_id: String,
        n: i64,
        mode: Option<KeyMode>,
        created_at: String,
        status: Status,
        webhook_url: Option<String>,
        inputs: Option<String>,
        reserved_micros: i64,
        suspended: i64,
        key_active: i64,
    }
}

/// What a [`take`] that took nothing found.
pub enum PassedOver {
    /// Another delivery runs or ran it, or it may run after all: nothing to do.
    Nothing,
    /// Canceled before it ran, perhaps while its inputs were uploading: their objects may
    /// still be in R2 (the cancel deleted what was there), to be deleted now that the
    /// upload is done (the job is sent after it).
    Canceled { input_count: usize },
    /// Its account was suspended or its key revoked: now ended (see [`stop_blocked`]).
    Stopped(StoppedGeneration),
}

/// A generation [`stop_blocked`] ended.
pub struct StoppedGeneration {
    pub why: Stopped,
    pub user_id: String,
    pub webhook_url: Option<String>,
    pub input_count: usize,
}

/// After a [`take`] that took nothing: if the generation is still queued because its
/// account was suspended or its key revoked, ends it `canceled` with that reason and its
/// reservation given back (the one ending, as [`push_end`] guards it).
pub async fn stop_blocked(db: &Db<'_>, id: &str, now_iso: &str) -> ApiResult<PassedOver> {
    let row: Option<Passed> = db
        .first(
            db.prepare(&format!(
                "SELECT api_key_id, user_id, n, mode, created_at, status, webhook_url, inputs, reserved_micros,
                        {ACCOUNT_SUSPENDED} AS suspended, {KEY_ACTIVE} AS key_active
                 FROM generations WHERE id = ?1"
            ))
            .bind(&[db::text(id)])?,
        )
        .await?;
    let Some(row) = row else { return Ok(PassedOver::Nothing) };
    let input_count = super::inputs::parse_records(row.inputs.as_deref()).len();
    let why = match (row.status, row.suspended != 0, row.key_active != 0) {
        (Status::Canceled, _, _) => return Ok(PassedOver::Canceled { input_count }),
        (Status::Queued, true, _) => Stopped::AccountSuspended,
        (Status::Queued, false, false) => Stopped::KeyRevoked,
        _ => return Ok(PassedOver::Nothing),
    };
    let end = End::new(Status::Canceled, Some((why.code(), why.message())), now_iso);
    let charge = stored_charge(&row.api_key_id, &row.user_id, &row.created_at, (row.n, row.reserved_micros), row.mode);
    let mut batch = Batch::new();
    let moved = push_end(&mut batch, db, id, &end, charge)?;
    let results = db.batch(batch).await.map_err(ApiError::from)?;
    if results.changes(moved) != 1 {
        return Ok(PassedOver::Nothing);
    }
    Ok(PassedOver::Stopped(StoppedGeneration { why, user_id: row.user_id, webhook_url: row.webhook_url, input_count }))
}

crate::db::row! {
    /// A queued generation ended with its account's suspension.
    pub struct CanceledQueued {
        pub id: String,
        pub inputs: Option<String>,
    }
}

/// Pushes, into the batch that suspends account `user_id`, the end of every queued
/// generation of the account (`canceled`, `account_suspended`) with their reservations
/// given back, set-wise: the key, account and deployment counts of each day lose the
/// images of that day's queued generations, then those generations end. In one batch (one
/// transaction) with the suspension, so the consumer takes each either before (it runs)
/// or after (it finds it canceled), and releases and ends agree. The slot returns the
/// ended generations, whose waiting inputs the caller deletes.
pub fn push_stop_queued_of(
    batch: &mut Batch,
    db: &Db<'_>,
    user_id: &str,
    now_iso: &str,
) -> ApiResult<Slot<CanceledQueued>> {
    // The account's queued generations, per key and day (partial index generations_queued).
    const QUEUED: &str = "SELECT api_key_id, substr(created_at, 1, 10) AS day, COALESCE(mode, 'live') AS mode,
                                 SUM(n) AS n, SUM(reserved_micros) AS micros
                          FROM generations WHERE user_id = ?1 AND status = 'queued' GROUP BY 1, 2, 3";
    let user = || [db::text(user_id)];
    batch.push::<()>(
        db.prepare(&format!(
            "UPDATE usage SET image_count = MAX(image_count - q.n, 0), cost_micros = MAX(cost_micros - q.micros, 0)
             FROM ({QUEUED}) AS q
             WHERE usage.api_key_id = q.api_key_id AND usage.usage_date = q.day"
        ))
        .bind(&user())?,
    );
    batch.push::<()>(
        db.prepare(&format!(
            "UPDATE account_usage SET live_images = MAX(live_images - q.n, 0), cost_micros = MAX(cost_micros - q.micros, 0)
             FROM (SELECT day, SUM(n) AS n, SUM(micros) AS micros FROM ({QUEUED}) WHERE mode = 'live' GROUP BY day) AS q
             WHERE account_usage.user_id = ?1 AND account_usage.usage_date = q.day"
        ))
        .bind(&user())?,
    );
    batch.push::<()>(
        db.prepare(&format!(
            "UPDATE deployment_usage SET live_images = MAX(live_images - q.live, 0), test_images = MAX(test_images - q.test, 0),
                    live_cost_micros = MAX(live_cost_micros - q.micros, 0)
             FROM (SELECT day, SUM(CASE WHEN mode = 'live' THEN n ELSE 0 END) AS live,
                          SUM(CASE WHEN mode = 'test' THEN n ELSE 0 END) AS test,
                          SUM(CASE WHEN mode = 'live' THEN micros ELSE 0 END) AS micros
                   FROM ({QUEUED}) GROUP BY day) AS q
             WHERE deployment_usage.usage_date = q.day"
        ))
        .bind(&user())?,
    );
    let why = Stopped::AccountSuspended;
    Ok(batch.push::<CanceledQueued>(
        db.prepare(
            "UPDATE generations SET status = 'canceled', error_code = ?2, error_message = ?3, finished_at = ?4
             WHERE user_id = ?1 AND status = 'queued' RETURNING id, inputs",
        )
        .bind(&[db::text(user_id), db::text(why.code()), db::text(why.message()), db::text(now_iso)])?,
    ))
}

/// Records one webhook delivery attempt.
pub async fn record_webhook_attempt(
    db: &Db<'_>,
    id: &str,
    status: Option<u16>,
    delivered: bool,
    now_iso: &str,
) -> ApiResult<()> {
    db.run(
        db.prepare(
            "UPDATE generations SET webhook_attempts = webhook_attempts + 1, webhook_last_status = ?2,
                    webhook_delivered_at = CASE WHEN ?3 = 1 THEN ?4 ELSE webhook_delivered_at END
             WHERE id = ?1",
        )
        .bind(&[
            db::text(id),
            db::opt_int(status.map(i64::from)),
            db::int(i64::from(delivered)),
            db::text(now_iso),
        ])?,
    )
    .await
    .map_err(ApiError::from)?;
    Ok(())
}

// ---------------------------------------------------------------- reading records

/// The columns of a record ([`RecordRow`]).
const RECORD_COLUMNS: &str =
    "id, api_key_id, status, prompt, model, size, style, n, object_keys, mime_type, error_code, created_at, mode,
     width, height, aspect_ratio, resolution, inputs, error_message, webhook_url, webhook_attempts,
     webhook_last_status, webhook_delivered_at, failures, input_text_tokens, input_image_tokens,
     output_image_tokens, output_text_tokens, reasoning_tokens, cost_micros, usage_estimated, previous_generation_id,
     COALESCE(conversation_id, id) AS conversation_id";

crate::db::row! {
    /// A generation as history shows it (`render::record` signs its URLs).
    pub struct RecordRow {
        pub id: String,
        pub api_key_id: String,
        pub status: Status,
        pub prompt: String,
        pub model: String,
        pub size: String,
        pub style: Style,
        pub n: i64,
        pub object_keys: Option<String>,
        pub mime_type: Option<String>,
        pub error_code: Option<String>,
        pub created_at: String,
        pub mode: Option<KeyMode>,
        pub width: Option<u32>,
        pub height: Option<u32>,
        pub aspect_ratio: Option<String>,
        pub resolution: Option<String>,
        pub inputs: Option<String>,
        pub error_message: Option<String>,
        pub webhook_url: Option<String>,
        pub webhook_attempts: u32,
        pub webhook_last_status: Option<u16>,
        pub webhook_delivered_at: Option<String>,
        pub failures: Option<String>,
        pub input_text_tokens: i64,
        pub input_image_tokens: i64,
        pub output_image_tokens: i64,
        pub output_text_tokens: i64,
        pub reasoning_tokens: i64,
        pub cost_micros: i64,
        pub usage_estimated: i64,
        pub previous_generation_id: Option<String>,
        pub conversation_id: String,
    }
}

impl RecordRow {
    /// Its usage columns, in the order `render::Usage::stored` reads them.
    pub fn usage(&self) -> [i64; 7] {
        [
            self.input_text_tokens,
            self.input_image_tokens,
            self.output_image_tokens,
            self.output_text_tokens,
            self.reasoning_tokens,
            self.cost_micros,
            self.usage_estimated,
        ]
    }
}

/// Whose generations a read may see.
pub enum Visible<'a> {
    /// An account's (every key's), or one key's of it.
    Caller { user_id: &'a str, key_id: Option<&'a str> },
    /// The rows of an API key not yet looked up, by its hash: its lookup rides in the
    /// same batch, and its rows are used only once the key is accepted.
    KeyHash(&'a str),
    /// Anyone's (the queue consumer, the webhook).
    Anyone,
}

impl Visible<'_> {
    /// The condition on `?1` and `?2`, and their values.
    fn condition(&self) -> (&'static str, [JsValue; 2]) {
        match self {
            Visible::Caller { user_id, key_id } => {
                ("user_id = ?1 AND (?2 IS NULL OR api_key_id = ?2)", [db::text(user_id), db::opt_text(*key_id)])
            }
            Visible::KeyHash(hash) => (
                "api_key_id = (SELECT id FROM api_keys WHERE key_hash = ?1) AND ?2 IS NULL",
                [db::text(hash), db::opt_text(None)],
            ),
            Visible::Anyone => ("?1 IS NULL AND ?2 IS NULL", [db::opt_text(None), db::opt_text(None)]),
        }
    }
}

/// One generation by id, as `visible` may see it.
pub async fn load(db: &Db<'_>, id: &str, visible: &Visible<'_>) -> ApiResult<Option<RecordRow>> {
    let (condition, [first, second]) = visible.condition();
    db.first(db.prepare(&format!("SELECT {RECORD_COLUMNS} FROM generations WHERE id = ?3 AND {condition}")).bind(&[
        first,
        second,
        db::text(id),
    ])?)
    .await
}

crate::db::row! {
    pub struct Found {
        pub found: i64,
    }
}

/// The statements of one history page, pushed into `batch`: up to `limit + 1` rows
/// strictly after the cursor in (created_at DESC, id DESC) order (one more tells whether
/// more follow), and whether the cursor is one of the visible generations.
pub fn push_page(
    batch: &mut Batch,
    db: &Db<'_>,
    visible: &Visible<'_>,
    (cursor, conversation): (Option<&str>, Option<&str>),
    limit: u32,
) -> ApiResult<(Slot<RecordRow>, Slot<Found>)> {
    let (condition, [first, second]) = visible.condition();
    // A conversation's generations: those that joined it, and the one that started it
    // (which has no conversation_id when it is older than conversations).
    let page = batch.push::<RecordRow>(
        db.prepare(&format!(
            "SELECT {RECORD_COLUMNS} FROM generations
             WHERE {condition}
               AND (?3 IS NULL OR (created_at, id) < (SELECT created_at, id FROM generations WHERE id = ?3))
               AND (?5 IS NULL OR conversation_id = ?5 OR id = ?5)
             ORDER BY created_at DESC, id DESC LIMIT ?4"
        ))
        .bind(&[
            first.clone(),
            second.clone(),
            db::opt_text(cursor),
            db::int(i64::from(limit) + 1),
            db::opt_text(conversation),
        ])?,
    );
    let cursor_check = batch.push::<Found>(
        db.prepare(&format!("SELECT COUNT(*) AS found FROM generations WHERE {condition} AND id = ?3")).bind(&[
            first,
            second,
            db::opt_text(cursor),
        ])?,
    );
    Ok((page, cursor_check))
}

/// Key `key_id`'s succeeded generation `id`, as an idempotent replay renders it again.
pub async fn finished(db: &Db<'_>, id: &str, key_id: &str) -> ApiResult<Option<RecordRow>> {
    db.first(
        db.prepare(&format!(
            "SELECT {RECORD_COLUMNS} FROM generations WHERE id = ?1 AND api_key_id = ?2 AND status = 'succeeded'"
        ))
        .bind(&[db::text(id), db::text(key_id)])?,
    )
    .await
}

crate::db::row! {
    /// An earlier generation an edit names as an input.
    pub struct Source {
        pub id: String,
        pub n: i64,
        pub mode: Option<KeyMode>,
        pub object_keys: Option<String>,
    }
}

/// The succeeded generations of account `user_id` among `ids` (one query for all).
pub async fn sources(db: &Db<'_>, user_id: &str, ids: &[&str]) -> ApiResult<Vec<Source>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = serde_json::to_string(ids).unwrap_or_default();
    db.all(
        db.prepare(
            "SELECT id, n, mode, object_keys FROM generations
             WHERE user_id = ?1 AND status = 'succeeded' AND id IN (SELECT value FROM json_each(?2))",
        )
        .bind(&[db::text(user_id), db::text(&ids)])?,
    )
    .await
}

// ---------------------------------------------------------------- the cron's

crate::db::row! {
    /// A generation that may have been abandoned by a Worker that died.
    pub struct Unfinished {
        pub id: String,
        pub api_key_id: String,
        pub user_id: String,
        pub n: i64,
        pub mode: Option<KeyMode>,
        pub created_at: String,
        pub inputs: Option<String>,
        pub reserved_micros: i64,
        pub model: String,
        pub resolution: Option<String>,
    }
}

impl Unfinished {
    pub fn charge(&self) -> usage::Charge<'_> {
        stored_charge(&self.api_key_id, &self.user_id, &self.created_at, (self.n, self.reserved_micros), self.mode)
    }
}

/// Up to `limit` pending or running generations whose current holder has had them since
/// before `cutoff`, longest held first: a queued generation from when a consumer started it,
/// any other from its reservation (rows from before `reserved_at`: their start). The
/// expression is the one the partial index `generations_held` is built on, word for word.
pub async fn unfinished_before(db: &Db<'_>, cutoff: &str, limit: i64) -> ApiResult<Vec<Unfinished>> {
    db.all(
        db.prepare(
            "SELECT id, api_key_id, user_id, n, mode, created_at, inputs, reserved_micros, model, resolution FROM generations
             WHERE status IN ('pending', 'running') AND COALESCE(started_at, reserved_at, created_at) < ?1
             ORDER BY COALESCE(started_at, reserved_at, created_at) LIMIT ?2",
        )
        .bind(&[db::text(cutoff), db::int(limit)])?,
    )
    .await
}

crate::db::row! {
    pub struct Expiring {
        pub id: String,
        pub n: i64,
    }
}

/// Up to `limit` test generations created before `cutoff` whose images are still kept.
pub async fn expiring_test_images(db: &Db<'_>, cutoff: &str, limit: i64) -> ApiResult<Vec<Expiring>> {
    db.all(
        db.prepare(
            "SELECT id, n FROM generations
             WHERE mode = 'test' AND object_keys IS NOT NULL AND created_at < ?1 ORDER BY created_at LIMIT ?2",
        )
        .bind(&[db::text(cutoff), db::int(limit)])?,
    )
    .await
}

/// The generations keep their records, without images.
pub async fn forget_images(db: &Db<'_>, ids: &[&str]) -> ApiResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut batch = Batch::new();
    for id in ids {
        batch.push::<()>(db.prepare("UPDATE generations SET object_keys = NULL WHERE id = ?1").bind(&[db::text(id)])?);
    }
    db.batch(batch).await.map_err(ApiError::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_number_their_columns_in_one_place() {
        let values = Values::new().set("a", 10).set("b", 20).set("c", 30);
        assert_eq!(values.column_list(), "a, b, c");
        assert_eq!(values.placeholders(), "?1, ?2, ?3");
        assert_eq!(values.assignments(), "a = ?1, b = ?2, c = ?3");
        assert_eq!(values.next(), 4);
        // The value bound to ?N is the one set for the N-th column, and what follows is ?next.
        assert_eq!(values.binds(&[40]), vec![10, 20, 30, 40]);
    }

    #[test]
    fn an_ending_moves_only_from_unfinished_statuses() {
        let failed = End::new(Status::Failed, Some(("x", "y")), "t");
        assert_eq!(failed.from, vec![Status::Pending, Status::Queued, Status::Running]);
        let abandoned = End::new(Status::Failed, None, "t").only_from(&[Status::Pending, Status::Running]);
        assert_eq!(abandoned.from, vec![Status::Pending, Status::Running]);
        let canceled = End::new(Status::Canceled, None, "t");
        assert_eq!(canceled.from, vec![Status::Queued]);
        // only_from never widens what the transition table allows.
        let narrowed = End::new(Status::Canceled, None, "t").only_from(&[Status::Running, Status::Queued]);
        assert_eq!(narrowed.from, vec![Status::Queued]);
    }

    #[test]
    fn an_abandoned_generation_gives_back_the_day_it_was_charged_to() {
        let row = Unfinished {
            id: "gen_1".into(),
            api_key_id: "k".into(),
            user_id: "u".into(),
            n: 2,
            mode: None,
            created_at: "2026-11-30T23:59:00.000Z".into(),
            inputs: None,
            reserved_micros: 528_336,
            model: "gemini-3-pro-image".into(),
            resolution: Some("4K".into()),
        };
        let charge = row.charge();
        assert_eq!((charge.day, charge.n, charge.mode, charge.micros), ("2026-11-30", 2, KeyMode::Live, 528_336));
    }
}
