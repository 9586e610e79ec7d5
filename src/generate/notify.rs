//! Webhooks of asynchronous generations: the event a generation's end announces, and its
//! delivery, each attempt recorded on the generation and a failed one retried through the
//! queue after the next delay of `WEBHOOK_RETRY_DELAYS_SECONDS`. Signing and the HTTP call
//! itself are `crate::webhooks`.

use super::jobs::{self, Job};
use super::render::{self, GenerationRecord};
use super::status::Status;
use super::store::{self, Visible};
use crate::error::{ApiError, ApiResult, Code};
use crate::http::{self, RequestContext};
use crate::time::iso_from_millis;
use crate::webhooks;
use serde::Serialize;

/// The event a webhook carries.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct WebhookEvent<'a> {
    /// `generation.succeeded`, `generation.failed`, or `generation.canceled` (its key was
    /// revoked before it ran).
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
    schemars::json_schema!({"type": "string", "enum": ["generation.succeeded", "generation.failed", "generation.canceled"]})
}

/// The event type a generation's end announces.
pub fn event_type(status: Status) -> &'static str {
    match status {
        Status::Succeeded => "generation.succeeded",
        Status::Canceled => "generation.canceled",
        _ => "generation.failed",
    }
}

/// The event's id: the same at every attempt, so receivers can drop duplicates.
pub fn webhook_id(generation_id: &str) -> String {
    format!("msg_{}", generation_id.trim_start_matches("gen_"))
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

/// Builds the event once (its body is then the same at every attempt, as its id is) and
/// makes the first attempt.
pub async fn announce(
    rc: &RequestContext,
    origin: &str,
    generation_id: &str,
    user_id: &str,
    url: &str,
) -> ApiResult<()> {
    let db = rc.db()?;
    let row = store::load(&db, generation_id, &Visible::Anyone)
        .await?
        .ok_or_else(|| ApiError::internal(format!("{generation_id} has no record to announce")))?;
    let record = render::record(rc, origin, row)?;
    let event = WebhookEvent {
        kind: event_type(record.status()),
        timestamp: iso_from_millis(crate::time::now_millis()),
        data: &record,
    };
    let body = http::to_json(&event)?;
    deliver(rc, generation_id, user_id, url, &webhook_id(generation_id), body, 1).await
}

/// One delivery attempt, recorded on the generation; a failed one is retried through the
/// queue after the next delay, until they run out.
pub async fn deliver(
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
        Some(state) if state.suspended_at.is_none() => state.secrets(rc.config.webhook_secret_key()?, user_id, now),
        Some(_) => {
            crate::log::info("webhook: not sent, the account is suspended", generation_id);
            return Ok(());
        }
        None => return Ok(()), // the account is gone
    };
    let delivery = webhooks::deliver(url, &secrets, webhook_id, &body, now).await;
    let delivered = delivery.delivered();
    let now_iso = iso_from_millis(crate::time::now_millis());
    store::record_webhook_attempt(&db, generation_id, delivery.status, delivered, &now_iso).await?;
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
            jobs::send(rc, &next, delay).await
        }
        None => {
            crate::log::info("webhook: attempts exhausted", &format!("{generation_id} after {attempt}"));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_named_by_how_the_generation_ended_and_keep_one_id() {
        assert_eq!(event_type(Status::Succeeded), "generation.succeeded");
        assert_eq!(event_type(Status::Failed), "generation.failed");
        assert_eq!(event_type(Status::Canceled), "generation.canceled");
        assert_eq!(webhook_id("gen_3f2b"), "msg_3f2b");
        assert_eq!(webhook_id("gen_3f2b"), webhook_id("gen_3f2b"), "every attempt carries the same id");
    }
}
