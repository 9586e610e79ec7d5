//! The generation engine: one [`Generation`] value whose steps are its methods. Every
//! route that makes images (the native and OpenAI-shaped routes today) runs this, so the
//! guarantees below hold everywhere:
//!
//! read the input images (earlier generations from R2; nothing is charged if one is
//! missing) -> reserve `n` images of today's quota and record a pending generation (1 D1
//! round trip, atomic) -> draw the images (Gemini for live keys, the synthetic provider for
//! test keys; `n` in parallel), each one stored in R2 as soon as it arrives and its bytes
//! let go (a 4K image is 10 to 20 MB: four of them are never all held at once) -> mark
//! the generation succeeded (1 round trip). If anything fails after the reservation, every
//! object the generation may have stored is deleted, and the reservation is released and
//! the generation marked failed in one atomic batch: nothing is charged for an image that
//! was not delivered.

use super::inputs::{self, Input, InputRecord};
use super::request::{GenerationRequest, ResponseFormat, Style};
use crate::auth::{KeyMode, KeyPrincipal};
use crate::db::{self, Batch, D1ResultExt, Db};
use crate::error::{describe_worker_error, ApiError, ApiResult, Code};
use crate::gemini::Image;
use crate::http::RequestContext;
use crate::storage;
use crate::synthetic::{render_png, SyntheticSpec};
use crate::time::{date_from_millis, iso_from_millis};
use crate::usage;
use base64::Engine;
use serde::Serialize;

/// A delivered image as the client receives it.
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct DeliveredImage {
    /// A signed Worker URL, a public R2 URL, or (with no R2 bucket) a `data:` URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The image bytes, base64, with `response_format: "b64_json"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b64_json: Option<String>,
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::image_mime_type"))]
    pub mime_type: String,
    /// Pixels, as the image's own header declares them: what came back, not what was asked.
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// A finished generation, ready to be rendered in either API shape.
pub struct Generated {
    pub id: String,
    pub created_ms: u64,
    pub request: GenerationRequest,
    pub images: Vec<DeliveredImage>,
    /// What it was made from, in order.
    pub inputs: Vec<InputRecord>,
    pub quota_limit: u32,
    pub quota_remaining: u32,
}

impl Generated {
    pub fn quota_headers(&self) -> [(&'static str, String); 2] {
        [
            ("x-quota-limit-images", self.quota_limit.to_string()),
            ("x-quota-remaining-images", self.quota_remaining.to_string()),
        ]
    }
}

crate::db::row! {
    struct Finished {
        created_at: String,
        object_keys: Option<String>,
        mime_type: Option<String>,
        n: i64,
        width: Option<u32>,
        height: Option<u32>,
        inputs: Option<String>,
    }
}

/// The records of a generation's inputs, as stored (NULL: none).
pub fn parse_input_records(stored: Option<&str>) -> Vec<InputRecord> {
    stored.and_then(|json| serde_json::from_str(json).ok()).unwrap_or_default()
}

/// The answer of a generation that already succeeded, rendered again for an idempotent
/// replay of the same request: fresh signed URLs, and for `b64_json` the bytes read back
/// from R2 (never kept in D1). One D1 round trip, plus one R2 read per image for b64.
pub async fn replay(
    rc: &RequestContext,
    principal: &KeyPrincipal,
    request: GenerationRequest,
    generation_id: &str,
    origin: &str,
) -> ApiResult<Generated> {
    let db = rc.db()?;
    let row: Finished = db
        .first(
            db.prepare(
                "SELECT created_at, object_keys, mime_type, n, width, height, inputs FROM generations
                 WHERE id = ?1 AND api_key_id = ?2 AND status = 'succeeded'",
            )
            .bind(&[db::text(generation_id), db::text(&principal.key_id)])?,
        )
        .await?
        .ok_or_else(|| {
            ApiError::internal(format!("idempotent replay: {generation_id} is not a succeeded generation"))
        })?;
    let stored = row.object_keys.is_some();
    let bucket = storage::bucket(rc).filter(|_| stored);
    let mime_type = row.mime_type.unwrap_or_else(|| "image/png".into());
    let mut images = Vec::new();
    for index in 0..usize::try_from(row.n).unwrap_or(0) {
        let b64_json = match (&bucket, request.response_format) {
            (Some(bucket), ResponseFormat::B64Json) => {
                let key = storage::object_key(generation_id, index, principal.mode);
                let gone =
                    || ApiError::internal(format!("idempotent replay: image {index} of {generation_id} is gone"));
                let bytes = storage::read(bucket, key).await?.ok_or_else(gone)?;
                Some(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            _ => None,
        };
        let url = match stored {
            true => Some(storage::stored_image_url(rc, origin, generation_id, index, principal.mode)?),
            // Images that were only ever sent inline (no R2) cannot be shown again.
            false => None,
        };
        images.push(DeliveredImage {
            url,
            b64_json,
            mime_type: mime_type.clone(),
            width: row.width,
            height: row.height,
        });
    }
    Ok(Generated {
        id: generation_id.to_string(),
        created_ms: crate::time::millis_from_iso(&row.created_at).unwrap_or(rc.now_ms),
        request,
        images,
        inputs: parse_input_records(row.inputs.as_deref()),
        quota_limit: principal.daily_quota,
        quota_remaining: principal.daily_quota.saturating_sub(principal.used_today),
    })
}

/// An image drawn, stored and let go: what the client receives, and what the record keeps.
struct Kept {
    delivered: DeliveredImage,
    bytes: usize,
    /// Upstream latency of the call that drew it.
    latency_ms: u64,
}

/// One generation from reservation to delivery.
pub struct Generation<'r> {
    rc: &'r RequestContext,
    db: Db<'r>,
    principal: &'r KeyPrincipal,
    request: GenerationRequest,
    id: String,
    /// The UTC day whose quota it is charged to.
    day: String,
    /// `https://host`, for absolute image URLs.
    origin: String,
    /// Gemini's key for a live key; None draws synthetic images.
    google_api_key: Option<String>,
    /// What the inputs were, once read.
    input_records: Vec<InputRecord>,
}

impl<'r> Generation<'r> {
    /// Prepares a generation, refusing what needs no write to refuse: a live key with no
    /// provider configured, or a quota already used up at authentication.
    pub fn new(
        rc: &'r RequestContext,
        principal: &'r KeyPrincipal,
        request: GenerationRequest,
        origin: String,
    ) -> ApiResult<Self> {
        let google_api_key = provider_key(rc, principal)?;
        if principal.used_today.saturating_add(request.n) > principal.daily_quota {
            return Err(usage::quota_exceeded(principal.daily_quota, principal.used_today, request.n, rc.now_ms));
        }
        let live = principal.mode == KeyMode::Live;
        if live && principal.account_used_today.saturating_add(request.n) > principal.account_quota {
            return Err(usage::account_quota_exceeded(principal.account_quota, request.n, rc.now_ms));
        }
        Ok(Generation {
            db: rc.db()?,
            id: new_id()?,
            day: date_from_millis(rc.now_ms),
            rc,
            principal,
            request,
            origin,
            google_api_key,
            input_records: Vec::new(),
        })
    }

    /// Runs it: read the inputs, reserve, draw, deliver, store, finish; on any failure
    /// after the reservation, give it back.
    pub async fn run(mut self) -> ApiResult<Generated> {
        let inputs = self.read_inputs().await?;
        let used_after = self.reserve("pending").await?;
        self.deliver(inputs, used_after).await
    }

    /// Runs one whose reservation and pending record were written already, in the batch
    /// that authenticated it ([`Generation::resumed`]): draw, deliver, store, finish.
    pub async fn run_reserved(self, used_after: u32) -> ApiResult<Generated> {
        self.deliver(Vec::new(), used_after).await
    }

    /// Everything after the reservation; on failure, gives it back.
    async fn deliver(self, inputs: Vec<Input>, used_after: u32) -> ApiResult<Generated> {
        match self.complete(inputs).await {
            Ok(images) => {
                let quota = self.principal.daily_quota;
                Ok(Generated {
                    id: self.id,
                    created_ms: self.rc.now_ms,
                    request: self.request,
                    images,
                    inputs: self.input_records,
                    quota_limit: quota,
                    quota_remaining: quota.saturating_sub(used_after),
                })
            }
            Err(err) => {
                self.fail(&err).await;
                Err(err)
            }
        }
    }

    /// The asynchronous start: read the inputs, reserve as `queued`, keep the inputs' bytes
    /// in R2 (`inputs/{id}/{i}`) for the consumer, and send the job. Nothing is drawn here.
    /// If the job cannot be sent, the reservation is given back. Returns the id and the
    /// quota headers after the reservation.
    pub async fn enqueue(mut self, origin_for_job: &str) -> ApiResult<(String, [(&'static str, String); 2])> {
        let bucket = storage::bucket(self.rc).ok_or_else(|| {
            ApiError::new(
                Code::QueueUnavailable,
                "asynchronous generations are unavailable: no image storage is configured",
            )
        })?;
        let inputs = self.read_inputs().await?;
        let used_after = self.reserve("queued").await?;
        let queued = async {
            storage::put_inputs(&bucket, &self.id, inputs.into_iter().map(|i| (i.mime_type.to_string(), i.bytes)))
                .await?;
            let job =
                super::background::Job::Generate { generation_id: self.id.clone(), origin: origin_for_job.to_string() };
            super::background::send(self.rc, &job, self.rc.config.queue_delay_seconds).await?;
            if self.rc.config.queue_duplicate_delivery {
                super::background::send(self.rc, &job, self.rc.config.queue_delay_seconds).await?;
            }
            Ok::<_, ApiError>(())
        };
        if let Err(err) = queued.await {
            storage::delete_inputs(&bucket, &self.id, self.input_records.len()).await;
            self.fail(&err).await;
            return Err(err);
        }
        let quota = self.principal.daily_quota;
        let headers = [
            ("x-quota-limit-images", quota.to_string()),
            ("x-quota-remaining-images", quota.saturating_sub(used_after).to_string()),
        ];
        Ok((self.id, headers))
    }

    /// A generation whose reservation and record exist already, so only the drawing and
    /// the finish are left: a queued one taken by the queue consumer (`status =
    /// 'running'`), or a text-only one reserved (`id`, charged to `day`) in the batch that
    /// authenticated its key ([`push_reservation`] by the key's hash; then
    /// [`Generation::run_reserved`]).
    pub fn resumed(
        rc: &'r RequestContext,
        principal: &'r KeyPrincipal,
        request: GenerationRequest,
        id: String,
        day: String,
        origin: String,
        input_records: Vec<InputRecord>,
    ) -> ApiResult<Self> {
        let google_api_key = provider_key(rc, principal)?;
        Ok(Generation { db: rc.db()?, rc, principal, request, id, day, origin, google_api_key, input_records })
    }

    /// Gives a resumed generation up before drawing (its inputs are gone, say): the
    /// reservation back, the error recorded.
    pub async fn give_up(self, err: &ApiError) {
        self.fail(err).await;
    }

    /// Draws, stores and finishes a resumed generation; on failure gives its reservation
    /// back and records why, as the synchronous path does.
    pub async fn finish_queued(self, inputs: Vec<Input>) -> ApiResult<()> {
        match self.complete(inputs).await {
            Ok(_) => Ok(()),
            Err(err) => {
                self.fail(&err).await;
                Err(err)
            }
        }
    }

    /// The input images' bytes, in order (before anything is charged: a missing one costs
    /// nothing). Output that follows the inputs takes the first one's ratio.
    async fn read_inputs(&mut self) -> ApiResult<Vec<Input>> {
        let specs = std::mem::take(&mut self.request.inputs);
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        let bucket = storage::bucket(self.rc);
        let inputs = inputs::resolve(&self.db, bucket.as_ref(), self.principal, specs).await?;
        if self.request.output.follows_inputs {
            let first = inputs.first().and_then(|input| input.record.width.zip(input.record.height));
            let caps = self.rc.config.model_caps.iter().find(|(id, _)| *id == self.request.model);
            if let (Some((width, height)), Some((_, caps))) = (first, caps) {
                self.request.output.follow(width, height, &caps.aspect_ratios);
            }
        }
        self.input_records = inputs.iter().map(|input| input.record.clone()).collect();
        Ok(inputs)
    }

    /// What this generation charges, and to whom.
    fn charge(&self) -> usage::Charge<'_> {
        usage::Charge {
            key_id: &self.principal.key_id,
            user_id: &self.principal.user_id,
            day: &self.day,
            n: self.request.n,
            mode: self.principal.mode,
        }
    }

    /// Reserves the images (key, account, deployment) and records the pending generation
    /// in one atomic batch; the generation row is written only if every reservation took
    /// (`changes() = 1`). Returns the key's count for today after the reservation.
    async fn reserve(&self, status: &str) -> ApiResult<u32> {
        let (db, request, principal) = (&self.db, &self.request, self.principal);
        let mut batch = Batch::new();
        let now_iso = iso_from_millis(self.rc.now_ms);
        let reserved = push_reservation(
            &mut batch,
            db,
            &self.rc.config,
            Pending {
                id: &self.id,
                key: usage::KeyRef::Id(&principal.key_id),
                after_rate_take: false,
                mode: principal.mode,
                day: &self.day,
                now_iso: &now_iso,
                request,
                input_records: &self.input_records,
                status,
            },
        )?;
        let results = match db.batch(batch).await {
            Ok(results) => results,
            Err(err) => {
                let cause = describe_worker_error(&err);
                return Err(usage::ceiling_refusal(&cause, principal.account_quota, request.n, self.rc.now_ms)
                    .unwrap_or_else(|| ApiError::internal(cause)));
            }
        };
        reserved_count(results.first(reserved)?, principal, request.n, self.rc.now_ms)
    }

    /// Draws and stores the images, then marks the generation succeeded. On any failure
    /// every object it may have stored is deleted again.
    async fn complete(&self, inputs: Vec<Input>) -> ApiResult<Vec<DeliveredImage>> {
        let bucket = storage::bucket(self.rc);
        let all_keys = || storage::object_keys(&self.id, self.request.n as usize, self.principal.mode);
        let kept = match self.draw(inputs, bucket.as_ref()).await {
            Ok(kept) => kept,
            Err(err) => {
                if let Some(bucket) = &bucket {
                    storage::delete_all(bucket, &all_keys()).await;
                }
                return Err(err);
            }
        };
        let total_bytes: usize = kept.iter().map(|k| k.bytes).sum();
        let max_latency = kept.iter().map(|k| k.latency_ms).max().unwrap_or(0);
        let first = kept.first().map(|k| &k.delivered);
        let mime_type = first.map(|image| image.mime_type.clone()).unwrap_or_default();
        let (width, height) = first.map_or((None, None), |image| (image.width, image.height));
        let object_keys = bucket.as_ref().map(|_| serde_json::to_string(&all_keys()).unwrap_or_default());
        let finish = self
            .db
            .prepare(
                "UPDATE generations SET status = 'succeeded', object_keys = ?2, mime_type = ?3, bytes = ?4,
                        upstream_latency_ms = ?5, width = ?6, height = ?7, finished_at = ?8
                 WHERE id = ?1 AND status IN ('pending', 'running')",
            )
            .bind(&[
                db::text(&self.id),
                db::opt_text(object_keys.as_deref()),
                db::text(&mime_type),
                db::int(total_bytes as i64),
                db::int(max_latency as i64),
                db::opt_int(width.map(i64::from)),
                db::opt_int(height.map(i64::from)),
                db::text(&iso_from_millis(crate::time::now_millis())),
            ])?;
        // Conditional: if the reconciliation cron already gave this generation up (its
        // Worker looked dead), the images are not delivered and nothing stays stored.
        let finished = match self.db.run(finish).await.or_internal() {
            Ok(1) => Ok(()),
            Ok(_) => Err(ApiError::internal(format!("{} was no longer pending when it finished", self.id))),
            Err(err) => Err(err),
        };
        if let Err(err) = finished {
            if let Some(bucket) = &bucket {
                storage::delete_all(bucket, &all_keys()).await;
            }
            return Err(err);
        }
        Ok(kept.into_iter().map(|k| k.delivered).collect())
    }

    /// `n` images from the key's provider, each kept (stored) as it arrives. The inputs'
    /// bytes are let go as soon as the upstream request holds them.
    async fn draw(&self, inputs: Vec<Input>, bucket: Option<&worker::Bucket>) -> ApiResult<Vec<Kept>> {
        let request = &self.request;
        let Some(api_key) = self.google_api_key.as_deref() else {
            let seed = inputs::digest(&self.input_records);
            let mut kept = Vec::with_capacity(request.n as usize);
            // One at a time: each is stored and let go before the next is drawn.
            for index in 0..request.n {
                kept.push(self.keep(index as usize, synthetic_image(request, index, seed), 0, bucket).await?);
            }
            return Ok(kept);
        };
        let text = request.upstream_text();
        let call = crate::gemini::ImageCall {
            model: &request.model,
            text: &text,
            aspect_ratio: (!request.output.follows_inputs).then_some(request.output.aspect_ratio),
            image_size: request.output.resolution.as_str(),
            inputs: &[],
        };
        let config = &self.rc.config;
        let inputs = inputs.into_iter().map(|input| (input.mime_type.to_string(), input.bytes));
        let prepared = crate::gemini::Prepared::new(&config.gemini_api_base, &call, inputs);
        // Gemini draws one image per call: n calls in parallel; one failure fails all. Every
        // call is waited for, so none is still storing when the failure cleans up after it.
        let calls = (0..request.n as usize).map(|index| {
            let prepared = &prepared;
            async move {
                let (image, latency_ms) =
                    crate::gemini::generate_image(prepared, api_key, config.gemini_deadline_ms).await?;
                self.keep(index, image, latency_ms, bucket).await
            }
        });
        futures_util::future::join_all(calls).await.into_iter().collect()
    }

    /// What the client receives for one image (its URL: signed, public or `data:`; its
    /// bytes again as base64 when asked for), after storing it in R2.
    async fn keep(
        &self,
        index: usize,
        image: Image,
        latency_ms: u64,
        bucket: Option<&worker::Bucket>,
    ) -> ApiResult<Kept> {
        let (width, height) = crate::media::dimensions(&image.bytes).unzip();
        let b64_json = (self.request.response_format == ResponseFormat::B64Json)
            .then(|| base64::engine::general_purpose::STANDARD.encode(&image.bytes));
        let (mime_type, bytes) = (image.mime_type.clone(), image.bytes.len());
        let url = match bucket {
            Some(bucket) => {
                let (principal, mode) = (self.principal, self.principal.mode);
                storage::put_one(bucket, &self.id, &principal.key_id, mode, index, image).await?;
                storage::stored_image_url(self.rc, &self.origin, &self.id, index, mode)?
            }
            None => storage::data_url(&image),
        };
        let delivered = DeliveredImage { url: Some(url), b64_json, mime_type, width, height };
        Ok(Kept { delivered, bytes, latency_ms })
    }

    /// Releases the reservation and marks the generation failed, atomically. The request
    /// has already failed; if this write fails too it is logged (the reservation then stays
    /// until the reconciliation cron gives it back).
    async fn fail(&self, err: &ApiError) {
        let result = async {
            let mut batch = Batch::new();
            usage::release(&mut batch, &self.db, self.charge())?;
            batch.push::<()>(
                self.db
                    .prepare(
                        "UPDATE generations SET status = 'failed', error_code = ?2, error_message = ?3, finished_at = ?4
                         WHERE id = ?1",
                    )
                    .bind(&[
                        db::text(&self.id),
                        db::text(err.code.as_str()),
                        db::text(&err.message),
                        db::text(&iso_from_millis(crate::time::now_millis())),
                    ])?,
            );
            self.db.batch(batch).await.map_err(ApiError::from)
        };
        if let Err(failure) = result.await {
            crate::log::error_for(
                &self.rc.request_id,
                "releasing a failed generation's reservation failed",
                &format!("{}: {}", self.id, failure.cause.as_deref().unwrap_or(failure.code.as_str())),
            );
        }
    }
}

fn synthetic_image(request: &GenerationRequest, index: u32, inputs: Option<[u8; 32]>) -> Image {
    let spec = SyntheticSpec {
        prompt: &request.prompt,
        width: request.output.width,
        height: request.output.height,
        artistic: request.style == Style::Artistic,
        index,
        inputs,
    };
    Image { mime_type: "image/png".to_string(), bytes: render_png(&spec) }
}

/// A new generation id: `gen_` and a UUID v4.
pub fn new_id() -> ApiResult<String> {
    Ok(format!("gen_{}", crate::random::uuid_v4()?))
}

/// A generation about to be reserved: what its record says, and which key it charges.
pub struct Pending<'a> {
    pub id: &'a str,
    pub key: usage::KeyRef<'a>,
    /// The rate limit's take is the statement just before (see [`usage::Reservation`]).
    pub after_rate_take: bool,
    pub mode: KeyMode,
    pub day: &'a str,
    pub now_iso: &'a str,
    pub request: &'a GenerationRequest,
    pub input_records: &'a [InputRecord],
    /// `pending` (synchronous) or `queued`.
    pub status: &'a str,
}

/// Pushes a generation's reservation (key, account, deployment) and its record into
/// `batch`; the record is written only if every reservation took (`changes() = 1`). The
/// key is found by id or by hash inside the batch, so the key lookup may ride in the same
/// batch (the text-only synchronous path: one round trip for authentication, rate limit
/// and reservation).
pub fn push_reservation(
    batch: &mut Batch,
    db: &Db<'_>,
    config: &crate::config::Config,
    pending: Pending<'_>,
) -> ApiResult<db::Slot<usage::Reserved>> {
    let request = pending.request;
    let reservation = usage::Reservation {
        key: pending.key,
        day: pending.day,
        n: request.n,
        mode: pending.mode,
        now_iso: pending.now_iso,
        after_rate_take: pending.after_rate_take,
    };
    let reserved = usage::reserve(batch, db, reservation, config)?;
    let (key_column, key) = pending.key.column_and_value();
    let inputs =
        (!pending.input_records.is_empty()).then(|| serde_json::to_string(pending.input_records).unwrap_or_default());
    batch.push::<()>(
        db.prepare(&format!(
            "INSERT INTO generations (id, api_key_id, user_id, prompt, model, size, style, n, status, created_at, mode,
                                      aspect_ratio, resolution, inputs, follows_inputs, webhook_url)
             SELECT ?1, k.id, k.user_id, ?3, ?4, ?5, ?6, ?7, ?13, ?8, ?9, ?10, ?11, ?12, ?14, ?15
               FROM api_keys k WHERE k.{key_column} = ?2 AND changes() = 1",
        ))
        .bind(&[
            db::text(pending.id),
            db::text(key),
            db::text(&request.prompt),
            db::text(&request.model),
            db::text(&request.output.label()),
            db::text(request.style.as_str()),
            db::int(request.n.into()),
            db::text(pending.now_iso),
            db::text(pending.mode.as_str()),
            db::text(request.output.aspect_ratio),
            db::text(request.output.resolution.as_str()),
            db::opt_text(inputs.as_deref()),
            db::text(pending.status),
            db::int(i64::from(request.output.follows_inputs)),
            db::opt_text(request.webhook_url.as_deref()),
        ])?,
    );
    Ok(reserved)
}

/// The key's count for today after a reservation, or the refusal of its quota (no row: the
/// request asked for more than was left, or a concurrent request took it).
pub fn reserved_count(
    reserved: Option<usage::Reserved>,
    principal: &KeyPrincipal,
    n: u32,
    now_ms: u64,
) -> ApiResult<u32> {
    match reserved {
        Some(count) => Ok(u32::try_from(count.image_count).unwrap_or(u32::MAX)),
        // If the count read with the key leaves room, a concurrent request took it since
        // (or, rarely, the key was revoked since: it is not charged either way).
        None => {
            let quota = principal.daily_quota;
            let used = if principal.used_today.saturating_add(n) > quota { principal.used_today } else { quota };
            Err(usage::quota_exceeded(quota, used, n, now_ms))
        }
    }
}

/// Gemini's key for a live key (503 when the deployment has none); None for a test key,
/// which draws synthetic images.
fn provider_key(rc: &RequestContext, principal: &KeyPrincipal) -> ApiResult<Option<String>> {
    match principal.mode {
        KeyMode::Live => Ok(Some(rc.config.google_api_key().ok_or_else(provider_not_configured)?.to_string())),
        KeyMode::Test => Ok(None),
    }
}

fn provider_not_configured() -> ApiError {
    ApiError::new(
        Code::ProviderNotConfigured,
        "live keys are unavailable: the image provider is not configured on this server (test keys still work)",
    )
}

/// A generation still `pending` this long after it started belongs to a Worker that died
/// (the upstream deadline is at most 10 minutes); its reservation is given back.
pub const ABANDONED_AFTER_MS: u64 = 15 * 60 * 1000;
/// Generations one cron run gives up, at most: a bounded batch whatever the backlog.
const RECONCILE_BATCH: i64 = 50;

crate::db::row! {
    struct Abandoned {
        id: String,
        api_key_id: String,
        user_id: String,
        n: i64,
        mode: Option<KeyMode>,
        created_at: String,
        started_at: Option<String>,
    }
}

/// The scheduled reconciliation (cron): gives up generations left pending (or running, for
/// a queued one) by a Worker that died: marks them failed (`abandoned`), gives back what they reserved (key, account,
/// deployment, on the day they reserved it) in one atomic batch, and deletes whatever
/// images they had stored. Returns how many.
pub async fn reconcile_abandoned(db: &Db<'_>, bucket: Option<&worker::Bucket>, now_ms: u64) -> ApiResult<usize> {
    let cutoff = iso_from_millis(now_ms.saturating_sub(ABANDONED_AFTER_MS));
    let abandoned: Vec<Abandoned> = db
        .all(
            db.prepare(
                "SELECT id, api_key_id, user_id, n, mode, created_at, started_at FROM generations
                 WHERE status IN ('pending', 'running') AND created_at < ?1 ORDER BY created_at LIMIT ?2",
            )
            .bind(&[db::text(&cutoff), db::int(RECONCILE_BATCH)])?,
        )
        .await?;
    // A queued generation may have waited long before a consumer took it: it is judged by
    // when it started running.
    let abandoned: Vec<Abandoned> =
        abandoned.into_iter().filter(|g| g.started_at.as_deref().is_none_or(|at| at < cutoff.as_str())).collect();
    if abandoned.is_empty() {
        return Ok(0);
    }
    let mut batch = Batch::new();
    for generation in &abandoned {
        // Rows from before the mode column count as live: releasing a charge that was
        // never made changes nothing (counts never go below zero).
        let mode = generation.mode.unwrap_or(KeyMode::Live);
        let day = generation.created_at.get(..10).unwrap_or_default();
        let n = u32::try_from(generation.n).unwrap_or(0);
        let charge = usage::Charge { key_id: &generation.api_key_id, user_id: &generation.user_id, day, n, mode };
        // The charge is given back only if the generation was still unfinished when the
        // batch ran (it may have finished since it was read).
        batch.push::<()>(
            db.prepare(
                "UPDATE generations SET status = 'failed', error_code = 'abandoned',
                        error_message = 'the Worker running this generation stopped before it finished'
                 WHERE id = ?1 AND status IN ('pending', 'running')",
            )
            .bind(&[db::text(&generation.id)])?,
        );
        usage::release_if_previous_took(&mut batch, db, charge)?;
    }
    db.batch(batch).await.or_internal()?;
    if let Some(bucket) = bucket {
        let keys: Vec<String> = abandoned
            .iter()
            .flat_map(|g| {
                storage::object_keys(&g.id, usize::try_from(g.n).unwrap_or(0), g.mode.unwrap_or(KeyMode::Live))
            })
            .collect();
        storage::delete_all(bucket, &keys).await;
    }
    Ok(abandoned.len())
}

/// Test generations whose images are kept, at most, per cron run.
const EXPIRE_BATCH: i64 = 200;

crate::db::row! {
    struct Expiring {
        id: String,
        n: i64,
    }
}

/// Test-key images are free to make, so they are not free to keep: after
/// `TEST_IMAGE_RETENTION_DAYS` the cron deletes them from R2 (deployments also set an R2
/// lifecycle rule on `test-images/`; this is the backstop, and all there is locally) and
/// the generation keeps its record without images. Returns how many generations.
pub async fn expire_test_images(
    db: &Db<'_>,
    bucket: Option<&worker::Bucket>,
    retention_days: u32,
    now_ms: u64,
) -> ApiResult<usize> {
    let Some(bucket) = bucket else { return Ok(0) };
    let cutoff = iso_from_millis(now_ms.saturating_sub(u64::from(retention_days) * crate::time::MILLIS_PER_DAY));
    let expiring: Vec<Expiring> = db
        .all(
            db.prepare(
                "SELECT id, n FROM generations
                 WHERE mode = 'test' AND object_keys IS NOT NULL AND created_at < ?1 ORDER BY created_at LIMIT ?2",
            )
            .bind(&[db::text(&cutoff), db::int(EXPIRE_BATCH)])?,
        )
        .await?;
    let keys: Vec<String> = expiring
        .iter()
        .flat_map(|g| storage::object_keys(&g.id, usize::try_from(g.n).unwrap_or(0), KeyMode::Test))
        .collect();
    if expiring.is_empty() || !storage::delete_all(bucket, &keys).await {
        return Ok(0);
    }
    let mut batch = Batch::new();
    for generation in &expiring {
        batch.push::<()>(
            db.prepare("UPDATE generations SET object_keys = NULL WHERE id = ?1").bind(&[db::text(&generation.id)])?,
        );
    }
    db.batch(batch).await.or_internal()?;
    Ok(expiring.len())
}
