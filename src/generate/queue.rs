//! The queue consumer (`#[event(queue)]` in lib.rs): asynchronous generations and webhook
//! retries off `GENERATIONS`, and their dead letters.
//!
//! A message is acked once handled, whatever the generation's outcome (failures are
//! recorded, not retried by the queue: the engine already retried upstream within its
//! deadline), and retried only when this Worker could not do its part (D1 unreachable,
//! say). A generation job takes its generation with a conditional `queued -> running`
//! update, so a message delivered twice never generates twice. A message whose retries
//! run out lands in the dead-letter queue, whose handler ends its generation `failed`
//! (`queue_exhausted`) with the reservation given back. One log line per message.

use super::engine::Reserved;
use super::inputs::{self, Input, InputRecord};
use super::jobs::Job;
use super::notify;
use super::request::{GenerationRequest, StoredRequest};
use super::status::Status;
use super::store::{self, End, PassedOver};
use crate::auth::{KeyMode, KeyPrincipal};
use crate::error::{ApiError, ApiResult};
use crate::http::RequestContext;
use crate::storage;
use crate::time::iso_from_millis;

/// What handling one message came to, for its log line: the generation's failure code
/// when it ran and failed.
type Handled = ApiResult<Option<&'static str>>;

/// The queue handler: every message of a batch, concurrently.
pub async fn consume(batch: worker::MessageBatch<String>, env: worker::Env, ctx: worker::Context) {
    use worker::MessageExt;
    let config = match crate::config::Config::for_env(&env) {
        Ok(config) => config,
        Err(invalid) => {
            crate::log::error("queue: invalid setting", invalid.0);
            return batch.retry_all();
        }
    };
    let queue = batch.queue();
    let dead_letters = queue.ends_with("-dlq");
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
        let (rc, queue) = (&rc, queue.as_str());
        async move {
            let job = message.body().as_string().and_then(|text| Job::parse(&text));
            let outcome: Handled = match &job {
                None => Ok(None),
                Some(job) if dead_letters => dead_letter(rc, job).await.map(|()| None),
                Some(job) => run(rc, job).await,
            };
            let message_id = message.id();
            let mut line = crate::log::QueueLine {
                request_id: &rc.request_id,
                queue,
                message_id: &message_id,
                job: job.as_ref().map_or("unreadable", Job::kind),
                generation_id: job.as_ref().map(Job::generation_id),
                outcome: "acked",
                code: None,
                cause: None,
            };
            let cause;
            match &outcome {
                Ok(code) => {
                    line.code = *code;
                    message.ack();
                }
                Err(err) => {
                    cause = err.cause.clone().unwrap_or_else(|| err.code.as_str().to_string());
                    (line.outcome, line.code, line.cause) = ("retried", Some(err.code.as_str()), Some(cause.as_str()));
                    message.retry();
                }
            }
            crate::log::queue_message(&line);
        }
    });
    crate::join::join_all(handled).await;
}

async fn run(rc: &RequestContext, job: &Job) -> Handled {
    match job {
        Job::Generate { generation_id, origin } => generate(rc, generation_id, origin).await,
        Job::Webhook { generation_id, user_id, url, webhook_id, body, attempt } => {
            notify::deliver(rc, generation_id, user_id, url, webhook_id, body.clone(), *attempt).await.map(|()| None)
        }
    }
}

/// Takes a queued generation and runs it through the engine, then winds it up.
async fn generate(rc: &RequestContext, generation_id: &str, origin: &str) -> Handled {
    if rc.config.queue_fail_generation_jobs {
        return Err(ApiError::internal("QUEUE_FAIL_GENERATION_JOBS drill: the job fails before it starts"));
    }
    let db = rc.db()?;
    let now_iso = iso_from_millis(crate::time::now_millis());
    let Some(taken) = store::take(&db, generation_id, &now_iso).await? else {
        return stop(rc, &db, origin, generation_id, &now_iso).await;
    };
    let principal = KeyPrincipal {
        key_id: taken.api_key_id,
        user_id: taken.user_id,
        mode: taken.mode.unwrap_or(KeyMode::Live),
        daily_quota: 0,
        used_today: 0,
        account_quota: 0,
        account_used_today: 0,
        budget: None,
        spent_today: crate::metering::Micros(0),
    };
    let records = inputs::parse_records(taken.inputs.as_deref());
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
        previous: taken.previous_generation_id.clone().map(|generation_id| super::request::Previous {
            generation_id,
            image_index: taken.previous_image_index.unwrap_or(0),
        }),
    });
    let day = taken.created_at.get(..10).unwrap_or_default().to_string();
    let input_count = records.len();
    let bucket = storage::bucket(rc);
    let reservation =
        (generation_id.to_string(), day, crate::metering::Micros(u64::try_from(taken.reserved_micros).unwrap_or(0)));
    let reserved = Reserved::taken(rc, db, &principal, request, reservation, origin.to_string(), records.clone());
    let outcome = match read_inputs(bucket.as_ref(), generation_id, records).await {
        Err(err) => {
            reserved.fail(&err).await;
            Err(err)
        }
        Ok(inputs) => reserved.finish(inputs).await.map(|_| ()),
    };
    wind_up(rc, origin, generation_id, &principal.user_id, taken.webhook_url.as_deref(), input_count).await?;
    Ok(outcome.err().map(|err| err.code.as_str()))
}

/// A queued generation the take passed over: a duplicate delivery (nothing to do), a
/// cancel (its inputs, if any, are deleted again: the cancel may have landed while they
/// uploaded), or one whose account was suspended or key revoked since it was queued, which
/// ends `canceled` with its reservation back and never reaches Gemini. A revoked key's
/// owner still hears of it by webhook; a suspended account is sent nothing.
async fn stop(
    rc: &RequestContext,
    db: &crate::db::Db<'_>,
    origin: &str,
    generation_id: &str,
    now_iso: &str,
) -> Handled {
    match store::stop_blocked(db, generation_id, now_iso).await? {
        PassedOver::Nothing => Ok(None),
        PassedOver::Canceled { input_count } => {
            if let (Some(bucket), true) = (storage::bucket(rc), input_count > 0) {
                storage::delete_inputs(&bucket, generation_id, input_count).await;
            }
            Ok(None)
        }
        PassedOver::Stopped(stopped) => {
            let url = stopped.webhook_url.as_deref().filter(|_| stopped.why != store::Stopped::AccountSuspended);
            wind_up(rc, origin, generation_id, &stopped.user_id, url, stopped.input_count).await?;
            Ok(Some(stopped.why.code()))
        }
    }
}

async fn read_inputs(
    bucket: Option<&worker::Bucket>,
    generation_id: &str,
    records: Vec<InputRecord>,
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
        Some(url) => notify::announce(rc, origin, generation_id, user_id, url).await,
        None => Ok(()),
    }
}

/// A message whose retries ran out. A generation job ends its generation `failed`
/// (`queue_exhausted`) with the reservation back, if it was still queued or running, and
/// announces that; a webhook job is only logged (its line says so).
async fn dead_letter(rc: &RequestContext, job: &Job) -> ApiResult<()> {
    let Job::Generate { generation_id, origin } = job else { return Ok(()) };
    let message = "the generation could not be run: its queue retries are exhausted";
    let now_iso = iso_from_millis(rc.now_ms);
    let end = End::new(Status::Failed, Some(("queue_exhausted", message)), &now_iso)
        .only_from(&[Status::Queued, Status::Running]);
    let (ended, before) = store::end(&rc.db()?, generation_id, &end).await?;
    match before.filter(|_| ended) {
        Some(owner) => {
            let input_count = inputs::parse_records(owner.inputs.as_deref()).len();
            let url = owner.webhook_url.as_deref();
            wind_up(rc, origin, generation_id, &owner.user_id, url, input_count).await
        }
        None => Ok(()),
    }
}
