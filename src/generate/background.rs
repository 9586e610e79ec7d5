//! Asynchronous generations on a Cloudflare Queue (`GENERATIONS`), announced by webhook.
//!
//! A request with `Prefer: respond-async`, `Prefer: wait=N` or a `webhook_url` is checked,
//! rate-limited, idempotency-claimed and reserved exactly as a synchronous one, recorded as
//! `queued`, and answered at once: 202 with the generation and `Location`. The queue
//! carries only the generation id; the consumer (this Worker's queue handler) takes it with
//! a conditional `queued -> running` update, so a message delivered twice never generates
//! twice, then runs the same engine as the synchronous path: draw, store, finish, or fail
//! and give the reservation back. A webhook then announces the outcome, retried through
//! the queue with growing delays. A message whose retries run out lands in the dead-letter
//! queue, whose handler ends its generation `failed` with the quota given back.

use super::engine::{parse_input_records, Generation};
use super::history::{self, GenerationRecord, Status};
use super::inputs::Input;
use super::request::{GenerationRequest, StoredRequest};
use crate::auth::{self, KeyMode, KeyPrincipal};
use crate::db::{self, Batch, D1ResultExt};
use crate::error::{ApiError, ApiResult, Code};
use crate::http::{self, HeaderList, RequestContext};
use crate::time::iso_from_millis;
use crate::{storage, usage, webhooks};
use serde::Serialize;
use worker::{Request, Response};

pub const QUEUE_BINDING: &str = "GENERATIONS";
pub const MAX_WAIT_SECONDS: u32 = 60;
const POLL_INTERVAL_MS: u64 = 500;

// ---------------------------------------------------------------- Prefer (RFC 7240)

/// What a `Prefer` header asks for. Unknown preferences are ignored, as the RFC says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Preference {
    pub respond_async: bool,
    /// `wait=N`, at most [`MAX_WAIT_SECONDS`].
    pub wait_seconds: Option<u32>,
}

impl Preference {
    pub fn parse(header: Option<&str>) -> Preference {
        let mut preference = Preference::default();
        for token in header.unwrap_or_default().split([',', ';']) {
            let token = token.trim();
            let (name, value) = token.split_once('=').map_or((token, ""), |(n, v)| (n.trim(), v.trim()));
            match name.to_ascii_lowercase().as_str() {
                "respond-async" => preference.respond_async = true,
                "wait" => {
                    if let Ok(seconds) = value.trim_matches('"').parse::<u64>() {
                        preference.wait_seconds = Some(seconds.min(u64::from(MAX_WAIT_SECONDS)) as u32);
                    }
                }
                _ => {}
            }
        }
        preference
    }

    pub fn is_async(&self) -> bool {
        self.respond_async || self.wait_seconds.is_some()
    }

    /// `Preference-Applied`.
    fn applied(&self) -> String {
        match (self.respond_async, self.wait_seconds) {
            (true, Some(wait)) => format!("respond-async, wait={wait}"),
            (false, Some(wait)) => format!("wait={wait}"),
            _ => "respond-async".into(),
        }
    }
}

// ---------------------------------------------------------------- jobs

/// What a queue message carries, as JSON text.
#[derive(Debug, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// Run generation `generation_id`; `origin` makes its image URLs absolute.
    Generate { generation_id: String, origin: String },
    /// Deliver (again) the event `webhook_id` of a generation: the same body every time.
    Webhook { generation_id: String, user_id: String, url: String, webhook_id: String, body: String, attempt: u32 },
}

impl Job {
    /// A message's text back into a job; None for anything else. Read through
    /// `serde_json::Value` by hand: a derived Deserialize of an internally tagged enum
    /// links serde's buffering `Content` machinery (about 5 KB of wasm) for two shapes.
    pub fn parse(text: &str) -> Option<Job> {
        let serde_json::Value::Object(mut fields) = serde_json::from_str(text).ok()? else { return None };
        let mut text_field = |name: &str| match fields.remove(name) {
            Some(serde_json::Value::String(value)) => Some(value),
            _ => None,
        };
        match text_field("kind")?.as_str() {
            "generate" => {
                Some(Job::Generate { generation_id: text_field("generation_id")?, origin: text_field("origin")? })
            }
            "webhook" => Some(Job::Webhook {
                generation_id: text_field("generation_id")?,
                user_id: text_field("user_id")?,
                url: text_field("url")?,
                webhook_id: text_field("webhook_id")?,
                body: text_field("body")?,
                attempt: fields.get("attempt")?.as_u64()?.try_into().ok()?,
            }),
            _ => None,
        }
    }
}

/// Sends a job to the queue, to be taken after `delay_seconds`.
pub async fn send(rc: &RequestContext, job: &Job, delay_seconds: u32) -> ApiResult<()> {
    let unavailable = |cause: String| {
        ApiError::new(Code::QueueUnavailable, "the generation queue is unavailable; try again later").caused_by(cause)
    };
    let queue = rc.env.queue(QUEUE_BINDING).map_err(|err| unavailable(format!("queue binding: {err}")))?;
    let text = serde_json::to_string(job).map_err(|err| unavailable(err.to_string()))?;
    let mut message = worker::RawMessageBuilder::new(worker::wasm_bindgen::JsValue::from_str(&text));
    if delay_seconds > 0 {
        message = message.delay_seconds(delay_seconds);
    }
    queue
        .send_raw(message.build_with_content_type(worker::QueueContentType::Text))
        .await
        .map_err(|err| unavailable(format!("queue send: {err}")))
}

// ---------------------------------------------------------------- the answer

/// The answer to an accepted asynchronous request: 202 with the generation and its
/// `Location`, or, with `Prefer: wait=N`, 200 once it is final if that happens within N
/// seconds (polled every half second, one D1 read each). Returns status and body.
pub async fn answer(
    rc: &RequestContext,
    origin: &str,
    generation_id: &str,
    preference: &Preference,
) -> ApiResult<(u16, String, HeaderList)> {
    let deadline = crate::time::now_millis() + u64::from(preference.wait_seconds.unwrap_or(0)) * 1000;
    let mut record = loaded(history::load(rc, origin, generation_id, None).await?)?;
    while !record.status().is_final() && crate::time::now_millis() + POLL_INTERVAL_MS <= deadline {
        worker::Delay::from(std::time::Duration::from_millis(POLL_INTERVAL_MS)).await;
        record = loaded(history::load(rc, origin, generation_id, None).await?)?;
    }
    let status = if record.status().is_final() && preference.wait_seconds.is_some() { 200 } else { 202 };
    let headers =
        vec![("location", format!("/v1/generations/{generation_id}")), ("preference-applied", preference.applied())];
    Ok((status, http::to_json(&record)?, headers))
}

fn loaded(record: Option<GenerationRecord>) -> ApiResult<GenerationRecord> {
    record.ok_or_else(|| ApiError::internal("an accepted generation has no record"))
}

/// 409 unless the account has a webhook signing secret to sign with.
pub async fn require_webhook_secret(rc: &RequestContext, user_id: &str) -> ApiResult<()> {
    match webhooks::secret_state(&rc.db()?, user_id).await? {
        Some(state) if state.webhook_secret_version > 0 => Ok(()),
        _ => Err(ApiError::new(
            Code::WebhookSecretMissing,
            "create the account's webhook signing secret first (POST /v1/webhook_secret), so events can be verified",
        )
        .with_param("webhook_url")),
    }
}

// ---------------------------------------------------------------- settling without drawing

crate::db::row! {
    /// What settling a generation reads of it: its charge, its status before, and what
    /// winding it up needs (its owner, webhook and queued inputs).
    struct Charged {
        api_key_id: String,
        user_id: String,
        n: i64,
        mode: Option<KeyMode>,
        created_at: String,
        status: Status,
        webhook_url: Option<String>,
        inputs: Option<String>,
    }
}

/// Moves a generation from one of `from` to `to` and gives its reservation back, in one
/// atomic batch whose releases run only if the move took. Returns whether it did, and
/// the generation as it was (None: no such generation).
async fn settle(
    rc: &RequestContext,
    generation_id: &str,
    from: &str,
    to: &str,
    error: Option<(&str, &str)>,
) -> ApiResult<(bool, Option<Charged>)> {
    let db = rc.db()?;
    let row: Option<Charged> = db
        .first(
            db.prepare(
                "SELECT api_key_id, user_id, n, mode, created_at, status, webhook_url, inputs FROM generations
                 WHERE id = ?1",
            )
            .bind(&[db::text(generation_id)])?,
        )
        .await?;
    let Some(row) = row else { return Ok((false, None)) };
    let mut batch = Batch::new();
    let moved = batch.push::<()>(
        db.prepare(&format!(
            "UPDATE generations SET status = ?2, error_code = ?3, error_message = ?4, finished_at = ?5
             WHERE id = ?1 AND status IN ({from})"
        ))
        .bind(&[
            db::text(generation_id),
            db::text(to),
            db::opt_text(error.map(|e| e.0)),
            db::opt_text(error.map(|e| e.1)),
            db::text(&iso_from_millis(rc.now_ms)),
        ])?,
    );
    let charge = usage::Charge {
        key_id: &row.api_key_id,
        user_id: &row.user_id,
        day: row.created_at.get(..10).unwrap_or_default(),
        n: u32::try_from(row.n).unwrap_or(0),
        mode: row.mode.unwrap_or(KeyMode::Live),
    };
    usage::release_if_previous_took(&mut batch, &db, charge)?;
    let results = db.batch(batch).await.or_internal()?;
    Ok((results.changes(moved) == 1, Some(row)))
}

/// Once a queued generation is final: its waiting inputs leave R2, and its webhook (if
/// it has one) announces the outcome.
async fn wind_up(
    rc: &RequestContext,
    origin: &str,
    generation_id: &str,
    user_id: &str,
    webhook_url: Option<&str>,
    input_count: usize,
) -> ApiResult<()> {
    if let (Some(bucket), true) = (storage::bucket(rc), input_count > 0) {
        storage::delete_inputs(&bucket, generation_id, input_count).await;
    }
    match webhook_url {
        Some(url) => announce(rc, origin, generation_id, user_id, url).await,
        None => Ok(()),
    }
}

/// `POST /v1/generations/{id}/cancel`: a queued generation becomes `canceled` and its
/// quota comes back; once running or final it is 409 `not_cancelable`.
pub async fn cancel(req: &mut Request, rc: &RequestContext, generation_id: &str) -> ApiResult<Response> {
    let caller = auth::require_caller(req, rc).await?;
    let origin = http::origin(req)?;
    let visible = history::load(rc, &origin, generation_id, Some(&caller)).await?.ok_or_else(history::not_found)?;
    let (canceled, before) = settle(rc, visible.id(), "'queued'", "canceled", None).await?;
    if !canceled {
        let status = before.map_or("", |b| b.status.as_str());
        return Err(ApiError::new(
            Code::NotCancelable,
            format!("only a queued generation can be canceled; this one is {status}"),
        ));
    }
    let record = loaded(history::load(rc, &origin, generation_id, None).await?)?;
    if let Some(bucket) = storage::bucket(rc) {
        storage::delete_inputs(&bucket, generation_id, record.input_count()).await;
    }
    http::json(200, &record)
}

// ---------------------------------------------------------------- the consumer

crate::db::row! {
    struct Taken {
        api_key_id: String,
        user_id: String,
        prompt: String,
        model: String,
        size: String,
        style: String,
        n: u32,
        mode: Option<KeyMode>,
        aspect_ratio: Option<String>,
        resolution: Option<String>,
        inputs: Option<String>,
        follows_inputs: i64,
        webhook_url: Option<String>,
        created_at: String,
    }
}

/// The queue handler: every message of a batch, concurrently. A message is acked once
/// handled (whatever the generation's outcome: failures are recorded, not retried by the
/// queue, since the engine already retried upstream within its deadline), and retried
/// only when this Worker could not do its part (D1 unreachable, say).
pub async fn consume(batch: worker::MessageBatch<String>, env: worker::Env, ctx: worker::Context) {
    use worker::MessageExt;
    let config = match crate::config::Config::for_env(&env) {
        Ok(config) => config,
        Err(invalid) => {
            crate::log::error("queue: invalid setting", invalid.0);
            return batch.retry_all();
        }
    };
    let dead_letters = batch.queue().ends_with("-dlq");
    let rc = RequestContext {
        env,
        ctx,
        config,
        request_id: format!("queue_{}", crate::random::uuid_v4().unwrap_or_default()),
        now_ms: crate::time::now_millis(),
        d1_queries: Default::default(),
    };
    let messages: Vec<worker::RawMessage> = batch.raw_iter().collect();
    let handled = messages.iter().map(|message| {
        let rc = &rc;
        async move {
            let job = message.body().as_string().and_then(|text| Job::parse(&text));
            let outcome = match job {
                None => {
                    crate::log::error("queue: unreadable message", &message.id());
                    Ok(())
                }
                Some(job) if dead_letters => dead_letter(rc, job).await,
                Some(job) => run(rc, job).await,
            };
            match outcome {
                Ok(()) => message.ack(),
                Err(err) => {
                    let cause = err.cause.as_deref().unwrap_or(err.code.as_str()).to_string();
                    crate::log::error_for(&rc.request_id, "queue: job failed, retrying", &cause);
                    message.retry();
                }
            }
        }
    });
    futures_util::future::join_all(handled).await;
}

async fn run(rc: &RequestContext, job: Job) -> ApiResult<()> {
    match job {
        Job::Generate { generation_id, origin } => generate(rc, &generation_id, &origin).await,
        Job::Webhook { generation_id, user_id, url, webhook_id, body, attempt } => {
            deliver(rc, &generation_id, &user_id, &url, &webhook_id, body, attempt).await
        }
    }
}

/// Takes a queued generation (`queued -> running`, conditional: a duplicate delivery, or
/// a canceled one, does nothing) and runs it through the engine.
async fn generate(rc: &RequestContext, generation_id: &str, origin: &str) -> ApiResult<()> {
    if rc.config.queue_fail_generation_jobs {
        return Err(ApiError::internal("QUEUE_FAIL_GENERATION_JOBS drill: the job fails before it starts"));
    }
    let db = rc.db()?;
    let taken: Option<Taken> = db
        .first(
            db.prepare(
                "UPDATE generations SET status = 'running', started_at = ?2 WHERE id = ?1 AND status = 'queued'
                 RETURNING api_key_id, user_id, prompt, model, size, style, n, mode, aspect_ratio, resolution,
                           inputs, follows_inputs, webhook_url, created_at",
            )
            .bind(&[db::text(generation_id), db::text(&iso_from_millis(crate::time::now_millis()))])?,
        )
        .await?;
    let Some(taken) = taken else { return Ok(()) };
    let principal = KeyPrincipal {
        key_id: taken.api_key_id,
        user_id: taken.user_id,
        mode: taken.mode.unwrap_or(KeyMode::Live),
        daily_quota: 0,
        used_today: 0,
        account_quota: 0,
        account_used_today: 0,
    };
    let records = parse_input_records(taken.inputs.as_deref());
    let request = GenerationRequest::stored(StoredRequest {
        prompt: taken.prompt,
        model: taken.model,
        size: taken.size,
        aspect_ratio: taken.aspect_ratio.unwrap_or_default(),
        resolution: taken.resolution.unwrap_or_default(),
        follows_inputs: taken.follows_inputs != 0,
        style: taken.style,
        n: taken.n,
        webhook_url: taken.webhook_url.clone(),
    });
    let day = taken.created_at.get(..10).unwrap_or_default().to_string();
    let bucket = storage::bucket(rc);
    let input_count = records.len();
    let generation = Generation::resumed(
        rc,
        &principal,
        request,
        generation_id.to_string(),
        day,
        origin.to_string(),
        records.clone(),
    );
    let outcome = match generation {
        Err(err) => {
            settle(rc, generation_id, "'running'", "failed", Some((err.code.as_str(), &err.message))).await?;
            Err(err)
        }
        Ok(generation) => match read_inputs(bucket.as_ref(), generation_id, records).await {
            Err(err) => {
                generation.give_up(&err).await;
                Err(err)
            }
            Ok(inputs) => generation.finish_queued(inputs).await,
        },
    };
    if let Err(err) = &outcome {
        crate::log::info("queue: generation failed", &format!("{generation_id}: {}", err.code.as_str()));
    }
    wind_up(rc, origin, generation_id, &principal.user_id, taken.webhook_url.as_deref(), input_count).await
}

async fn read_inputs(
    bucket: Option<&worker::Bucket>,
    generation_id: &str,
    records: Vec<super::inputs::InputRecord>,
) -> ApiResult<Vec<Input>> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let bucket = bucket.ok_or_else(|| ApiError::internal("queued inputs need the IMAGES bucket"))?;
    let bytes = storage::get_inputs(bucket, generation_id, records.len()).await?;
    bytes
        .into_iter()
        .zip(records)
        .map(|(bytes, record)| {
            let mime_type =
                crate::media::sniff(&bytes).ok_or_else(|| ApiError::internal("a queued input changed type"))?;
            Ok(Input { mime_type, bytes, record })
        })
        .collect()
}

/// The event a webhook carries.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct WebhookEvent<'a> {
    /// `generation.succeeded` or `generation.failed`.
    #[serde(rename = "type")]
    #[cfg_attr(test, schemars(schema_with = "event_type_schema"))]
    kind: &'static str,
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::timestamp"))]
    timestamp: String,
    /// The generation, as `GET /v1/generations/{id}` shows it.
    data: &'a GenerationRecord,
}

#[cfg(test)]
fn event_type_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": ["generation.succeeded", "generation.failed"]})
}

/// Builds the event once (its body is then the same at every attempt, as its id is) and
/// makes the first attempt.
async fn announce(rc: &RequestContext, origin: &str, generation_id: &str, user_id: &str, url: &str) -> ApiResult<()> {
    let record = loaded(history::load(rc, origin, generation_id, None).await?)?;
    let kind = if record.status() == Status::Succeeded { "generation.succeeded" } else { "generation.failed" };
    let event = WebhookEvent { kind, timestamp: iso_from_millis(crate::time::now_millis()), data: &record };
    let body = http::to_json(&event)?;
    let webhook_id = format!("msg_{}", generation_id.trim_start_matches("gen_"));
    deliver(rc, generation_id, user_id, url, &webhook_id, body, 1).await
}

/// One delivery attempt, recorded on the generation; a failed one is retried through the
/// queue after the next delay of `WEBHOOK_RETRY_DELAYS_SECONDS`, until they run out.
async fn deliver(
    rc: &RequestContext,
    generation_id: &str,
    user_id: &str,
    url: &str,
    webhook_id: &str,
    body: String,
    attempt: u32,
) -> ApiResult<()> {
    let db = rc.db()?;
    let now = crate::time::now_millis();
    let secrets = match webhooks::secret_state(&db, user_id).await? {
        Some(state) => state.secrets(rc.config.webhook_secret_key()?, user_id, now),
        None => return Ok(()), // the account is gone
    };
    let delivery = webhooks::deliver(url, &secrets, webhook_id, &body, now).await;
    let delivered = delivery.delivered();
    db.run(
        db.prepare(
            "UPDATE generations SET webhook_attempts = webhook_attempts + 1, webhook_last_status = ?2,
                    webhook_delivered_at = CASE WHEN ?3 = 1 THEN ?4 ELSE webhook_delivered_at END
             WHERE id = ?1",
        )
        .bind(&[
            db::text(generation_id),
            db::opt_int(delivery.status.map(i64::from)),
            db::int(i64::from(delivered)),
            db::text(&iso_from_millis(crate::time::now_millis())),
        ])?,
    )
    .await
    .or_internal()?;
    if delivered {
        return Ok(());
    }
    match webhooks::retry_delay(&rc.config.webhook_retry_delays, attempt) {
        Some(delay) => {
            let next = Job::Webhook {
                generation_id: generation_id.to_string(),
                user_id: user_id.to_string(),
                url: url.to_string(),
                webhook_id: webhook_id.to_string(),
                body,
                attempt: attempt + 1,
            };
            send(rc, &next, delay).await
        }
        None => {
            crate::log::info("webhook: attempts exhausted", &format!("{generation_id} after {attempt}"));
            Ok(())
        }
    }
}

/// A message whose retries ran out. A generation job ends its generation `failed`
/// (`queue_exhausted`) with the quota back, if it was still queued or running, and
/// announces that; a webhook job is only logged.
async fn dead_letter(rc: &RequestContext, job: Job) -> ApiResult<()> {
    match job {
        Job::Generate { generation_id, origin } => {
            let message = "the generation could not be run: its queue retries are exhausted";
            let (settled, before) =
                settle(rc, &generation_id, "'queued', 'running'", "failed", Some(("queue_exhausted", message))).await?;
            match before.filter(|_| settled) {
                Some(owner) => {
                    let input_count = parse_input_records(owner.inputs.as_deref()).len();
                    let url = owner.webhook_url.as_deref();
                    wind_up(rc, &origin, &generation_id, &owner.user_id, url, input_count).await
                }
                None => Ok(()),
            }
        }
        Job::Webhook { generation_id, attempt, .. } => {
            crate::log::info("webhook: dead-lettered", &format!("{generation_id} at attempt {attempt}"));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_headers() {
        assert_eq!(Preference::parse(None), Preference::default());
        assert!(!Preference::parse(Some("return=minimal")).is_async());
        let p = Preference::parse(Some("respond-async"));
        assert!(p.is_async() && p.respond_async && p.wait_seconds.is_none());
        assert_eq!(
            Preference::parse(Some("respond-async, wait=10")),
            Preference { respond_async: true, wait_seconds: Some(10) }
        );
        assert_eq!(Preference::parse(Some("wait=600")).wait_seconds, Some(60), "at most 60 seconds");
        assert_eq!(Preference::parse(Some("Wait = \"5\"; handling=lenient")).wait_seconds, Some(5));
        assert_eq!(Preference::parse(Some("wait=soon")).wait_seconds, None, "ignored, as the RFC says");
        assert_eq!(Preference::parse(Some("wait=5")).applied(), "wait=5");
    }

    #[test]
    fn jobs_travel_as_tagged_json() {
        let job = Job::Generate { generation_id: "gen_1".into(), origin: "https://x".into() };
        let text = serde_json::to_string(&job).unwrap();
        assert_eq!(text, r#"{"kind":"generate","generation_id":"gen_1","origin":"https://x"}"#);
        assert_eq!(Job::parse(&text).unwrap(), job);
        let webhook = Job::Webhook {
            generation_id: "gen_1".into(),
            user_id: "u".into(),
            url: "https://hook".into(),
            webhook_id: "msg_1".into(),
            body: "{\"a\":1}".into(),
            attempt: 3,
        };
        assert_eq!(Job::parse(&serde_json::to_string(&webhook).unwrap()).unwrap(), webhook);
        for bad in [
            "",
            "[]",
            r#"{"kind":"other","generation_id":"g","origin":"o"}"#,
            r#"{"kind":"generate","generation_id":"g"}"#,
            r#"{"kind":"generate","generation_id":1,"origin":"o"}"#,
            r#"{"kind":"webhook","generation_id":"g","user_id":"u","url":"x","webhook_id":"w","body":"b","attempt":-1}"#,
        ] {
            assert_eq!(Job::parse(bad), None, "{bad}");
        }
    }
}
