//! The generation lifecycle, as two types. Every route that makes images and the queue
//! consumer run it, so its guarantees hold everywhere:
//!
//! ```text
//! Generation::new            refuses what needs no write (no provider, quota used up)
//!   .run()                   read inputs (and the chain) -> reserve `pending` -> Reserved::finish
//!   .enqueue()               read inputs -> reserve `queued`  -> Reserved::park
//! Reserved::folded(..)       reserved in the batch that authenticated the key -> finish
//! Reserved::taken(..)        taken off the queue (`running`) -> finish
//!
//! Reserved::finish(self)     draw -> store each image as it arrives -> mark succeeded;
//!                            on any failure: delete what it stored, then fail(self)
//! Reserved::fail(self)       end `failed` and give the reservation back (store::push_end)
//! Reserved::park(self)       keep the inputs in R2, send the job; on failure, fail(self)
//! ```
//!
//! A [`Reserved`] stands for a reservation that exists in D1. `finish`, `fail` and `park`
//! take it by value, so each reservation is ended by exactly one of them: it cannot be
//! released twice by this code. Across Workers (the cron, a cancel, a dead letter),
//! `store::push_end` makes the release conditional on the status change, so it is given
//! back once whoever ends it.
//!
//! Images are drawn by Gemini for live keys and by the synthetic provider for test keys,
//! `n` in parallel; each is stored in R2 as soon as it arrives and its bytes let go (a 4K
//! image is 10 to 20 MB: four of them are never all held at once).

use super::chain::{self, Chain};
use super::cost::Estimate;
use super::inputs::{self, Input, InputRecord, InputSpec};
use super::jobs::{self, Job};
use super::render::{self, quota_headers, DeliveredImage, Generated, ImageFailure};
use super::request::{GenerationRequest, ResponseFormat, Style};
use super::status::Status;
use super::store::{self, End, Reservation, Success};
use crate::auth::{KeyMode, KeyPrincipal};
use crate::db::{Batch, Db};
use crate::error::{describe_worker_error, ApiError, ApiResult, Code};
use crate::gemini::Image;
use crate::http::RequestContext;
use crate::metering::{Micros, Tokens};
use crate::storage;
use crate::synthetic::{render_png, SyntheticSpec};
use crate::time::{date_from_millis, iso_from_millis};
use crate::usage;
use base64::Engine;

/// A new generation id: `gen_` and a UUID v4.
pub fn new_id() -> ApiResult<String> {
    Ok(format!("gen_{}", crate::random::uuid_v4()?))
}

/// A generation not yet reserved: nothing about it is written.
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
    /// What the inputs were, once read.
    input_records: Vec<InputRecord>,
    /// The earlier turns of the conversation it continues, once read and checked.
    chain: Option<Chain>,
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
        provider_key(rc, principal)?;
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
            input_records: Vec::new(),
            chain: None,
        })
    }

    /// Synchronously: read the inputs, reserve, draw, store, finish.
    pub async fn run(mut self) -> ApiResult<Generated> {
        let inputs = self.read_inputs().await?;
        let reserved = self.reserve(Status::Pending).await?;
        reserved.finish(inputs).await
    }

    /// Asynchronously: read the inputs, reserve as `queued`, and park it for the queue
    /// consumer. Returns the id and the quota headers after the reservation.
    pub async fn enqueue(mut self) -> ApiResult<(String, [(&'static str, String); 2])> {
        let bucket = storage::bucket(self.rc).ok_or_else(|| {
            ApiError::new(
                Code::QueueUnavailable,
                "asynchronous generations are unavailable: no image storage is configured",
            )
        })?;
        let inputs = self.read_inputs().await?;
        let reserved = self.reserve(Status::Queued).await?;
        reserved.park(&bucket, inputs).await
    }

    /// The input images' bytes, in order, and a continued generation's chain, read and
    /// checked: all before anything is charged (a missing input or a foreign chain costs
    /// nothing). Output that follows the inputs takes the first one's shape, else that of
    /// the image it continues.
    async fn read_inputs(&mut self) -> ApiResult<Vec<Input>> {
        let specs = std::mem::take(&mut self.request.inputs);
        let inputs = match specs.is_empty() {
            true => Vec::new(),
            false => resolve_inputs(&self.db, storage::bucket(self.rc).as_ref(), self.principal, specs).await?,
        };
        self.input_records = inputs.iter().map(|input| input.record.clone()).collect();
        if let Some(previous) = &self.request.previous {
            let (user, mode, added) =
                (&self.principal.user_id, self.principal.mode, chain::bytes_of(&self.input_records));
            self.chain = Some(Chain::load(&self.db, user, mode, previous, added).await?);
        }
        if self.request.output.follows_inputs {
            let first = inputs.first().and_then(|input| input.record.width.zip(input.record.height));
            let shape = first.or_else(|| self.chain.as_ref().and_then(Chain::previous_size));
            if let (Some((width, height)), Some(caps)) = (shape, self.rc.config.caps(&self.request.model)) {
                self.request.output.follow(width, height, &caps.aspect_ratios);
            }
        }
        Ok(inputs)
    }

    /// Reserves the images (key, account, deployment) and records the generation in one
    /// atomic batch (`store::Reservation`).
    async fn reserve(self, status: Status) -> ApiResult<Reserved<'r>> {
        let (rc, principal) = (self.rc, self.principal);
        let mut batch = Batch::new();
        let created_iso = iso_from_millis(rc.now_ms);
        let reserved_iso = iso_from_millis(crate::time::now_millis());
        let worst = Estimate::of(&self.request, &self.input_records, self.chain.as_ref(), &rc.config).worst_cost();
        let slot = Reservation {
            id: &self.id,
            key: usage::KeyRef::Id(&principal.key_id),
            after_rate_take: false,
            mode: principal.mode,
            day: &self.day,
            created_iso: &created_iso,
            reserved_iso: &reserved_iso,
            request: &self.request,
            input_records: &self.input_records,
            status,
            worst,
            conversation_id: self.chain.as_ref().map(Chain::conversation_id),
        }
        .push(&mut batch, &self.db, &rc.config)?;
        let results = match self.db.batch(batch).await {
            Ok(results) => results,
            Err(err) => {
                let cause = describe_worker_error(&err);
                return Err(usage::ceiling_refusal(&cause, principal.account_quota, self.request.n, rc.now_ms)
                    .unwrap_or_else(|| ApiError::internal(cause)));
            }
        };
        let used_after = store::reserved_count(results.first(slot)?, principal, (self.request.n, worst), rc.now_ms)?;
        Ok(Reserved { generation: self, used_after, reserved: worst })
    }
}

/// A generation whose reservation and record exist. Consumed by exactly one of
/// [`Reserved::finish`], [`Reserved::fail`] or [`Reserved::park`].
#[must_use = "a reservation must be finished, failed or parked, or it is held until the cron gives it back"]
pub struct Reserved<'r> {
    generation: Generation<'r>,
    /// The key's count for today after the reservation.
    used_after: u32,
    /// The money it reserved: its worst case, settled to the actual cost when it ends.
    reserved: Micros,
}

impl<'r> Reserved<'r> {
    /// A text-only generation reserved (`id`, charged to `day`, `reserved` of money) in
    /// the batch that authenticated its key (`routes`, the folded path).
    pub fn folded(
        rc: &'r RequestContext,
        db: Db<'r>,
        principal: &'r KeyPrincipal,
        request: GenerationRequest,
        (id, day, reserved): (String, String, Micros),
        origin: String,
        used_after: u32,
    ) -> Self {
        let generation =
            Generation { rc, db, principal, request, id, day, origin, input_records: Vec::new(), chain: None };
        Reserved { generation, used_after, reserved }
    }

    /// A queued generation the consumer has taken (`queued -> running`), with the records
    /// of its inputs (whose bytes wait in R2).
    pub fn taken(
        rc: &'r RequestContext,
        db: Db<'r>,
        principal: &'r KeyPrincipal,
        request: GenerationRequest,
        reservation: (String, String, Micros),
        origin: String,
        input_records: Vec<InputRecord>,
    ) -> Self {
        let mut taken = Reserved::folded(rc, db, principal, request, reservation, origin, 0);
        taken.generation.input_records = input_records;
        taken
    }

    /// Draws, stores and finishes it; on any failure, gives the reservation back.
    pub async fn finish(self, inputs: Vec<Input>) -> ApiResult<Generated> {
        match self.complete(inputs).await {
            Ok((images, failures, unreturned, usage)) => {
                let g = self.generation;
                let quota = g.principal.daily_quota;
                Ok(Generated {
                    id: g.id,
                    created_ms: g.rc.now_ms,
                    request: g.request,
                    images,
                    inputs: g.input_records,
                    failures,
                    usage,
                    quota_limit: quota,
                    quota_remaining: quota.saturating_sub(self.used_after.saturating_sub(unreturned)),
                })
            }
            Err(err) => {
                self.fail(&err).await;
                Err(err)
            }
        }
    }

    /// Ends it `failed` with `err`'s code and message and gives the reservation back, in
    /// one batch, only if it is still unfinished (the cron, a cancel or a dead letter may
    /// have ended it). The request has already failed; if this write fails too it is
    /// logged, and the cron gives the reservation back later.
    pub async fn fail(self, err: &ApiError) {
        let g = &self.generation;
        let charge = self.charge(g.request.n, self.reserved.0);
        let finished_iso = iso_from_millis(crate::time::now_millis());
        let end = End::new(Status::Failed, Some((err.code.as_str(), &err.message)), &finished_iso);
        let result = async {
            let mut batch = Batch::new();
            store::push_end(&mut batch, &g.db, &g.id, &end, charge)?;
            g.db.batch(batch).await.map_err(ApiError::from)
        };
        if let Err(failure) = result.await {
            crate::log::error_for(
                &g.rc.request_id,
                "releasing a failed generation's reservation failed",
                &format!("{}: {}", g.id, failure.cause.as_deref().unwrap_or(failure.code.as_str())),
            );
        }
    }

    /// `n` of its images and `micros` of money, as its reservation charged them.
    fn charge(&self, n: u32, micros: u64) -> usage::Charge<'_> {
        let g = &self.generation;
        usage::Charge {
            key_id: &g.principal.key_id,
            user_id: &g.principal.user_id,
            day: &g.day,
            n,
            mode: g.principal.mode,
            micros: Micros(micros).stored(),
        }
    }

    /// Keeps the inputs' bytes in R2 (`inputs/{id}/{i}`) for the consumer and sends the
    /// job. If it cannot be sent, the inputs go and the reservation is given back.
    async fn park(
        self,
        bucket: &worker::Bucket,
        inputs: Vec<Input>,
    ) -> ApiResult<(String, [(&'static str, String); 2])> {
        let g = &self.generation;
        let parked = async {
            storage::put_inputs(bucket, &g.id, inputs.into_iter().map(|i| (i.mime_type.to_string(), i.bytes))).await?;
            let job = Job::Generate { generation_id: g.id.clone(), origin: g.origin.clone() };
            jobs::send(g.rc, &job, g.rc.config.queue_delay_seconds).await?;
            if g.rc.config.queue_duplicate_delivery {
                jobs::send(g.rc, &job, g.rc.config.queue_delay_seconds).await?;
            }
            Ok::<_, ApiError>(())
        };
        if let Err(err) = parked.await {
            storage::delete_inputs(bucket, &g.id, g.input_records.len()).await;
            self.fail(&err).await;
            return Err(err);
        }
        let quota = g.principal.daily_quota;
        Ok((g.id.clone(), quota_headers(quota, quota.saturating_sub(self.used_after))))
    }

    /// Draws and stores the images, then marks the generation succeeded with those that
    /// came back; the charge of the others is given back in the same batch, and they are
    /// returned as failures. When none came back, or it cannot be marked, every object it
    /// may have stored is deleted and the error returned (`finish` then fails it).
    async fn complete(
        &self,
        inputs: Vec<Input>,
    ) -> ApiResult<(Vec<DeliveredImage>, render::Failures, u32, render::Usage)> {
        let g = &self.generation;
        let bucket = storage::bucket(g.rc);
        let mode = g.principal.mode;
        let all_keys = || storage::object_keys(&g.id, g.request.n as usize, mode);
        let Drawn { kept, failed } = match self.draw(inputs, bucket.as_ref()).await {
            Ok(outcomes) => Drawn::split(outcomes),
            Err(err) => Drawn { kept: Vec::new(), failed: vec![(0, err)] },
        };
        if kept.is_empty() {
            if let Some(bucket) = &bucket {
                storage::delete_all(bucket, &all_keys()).await;
            }
            let first = failed.into_iter().next().map(|(_, err)| err);
            return Err(first.unwrap_or_else(|| ApiError::internal("no image was drawn")));
        }
        let failures: Vec<ImageFailure> = failed
            .iter()
            .map(|(index, err)| ImageFailure {
                index: *index as u32,
                code: err.code.as_str().into(),
                message: err.message.clone(),
            })
            .collect();
        for (index, err) in &failed {
            crate::log::info_for(
                &g.rc.request_id,
                "generation: one image failed, the others delivered",
                &format!("{} image {index}: {}", g.id, err.cause.as_deref().unwrap_or(err.code.as_str())),
            );
        }
        let stored_keys: Vec<String> = kept.iter().map(|(index, _)| storage::object_key(&g.id, *index, mode)).collect();
        let object_keys = bucket.as_ref().map(|_| serde_json::to_string(&stored_keys).unwrap_or_default());
        let failures_json = render::failures_json(&failures);
        let first = kept.first().map(|(_, k)| &k.delivered);
        let finished_iso = iso_from_millis(crate::time::now_millis());
        // Only the delivered images' calls are charged; their cost settles the reservation.
        let tokens = kept.iter().fold(Tokens::default(), |sum, (_, k)| sum + k.tokens);
        let estimate = Estimate::of(&g.request, &g.input_records, None, &g.rc.config);
        let cost = tokens.cost(&estimate.prices);
        let estimated = kept.iter().any(|(_, k)| k.estimated);
        if cost > self.reserved {
            crate::log::info_for(
                &g.rc.request_id,
                "generation: the actual cost passed the reserved worst case; charged in full",
                &format!("{}: {} > {}", g.id, cost.to_decimal(), self.reserved.to_decimal()),
            );
        }
        let refund = self.reserved.stored() - cost.stored();
        // What each delivered image's model turn was, a line per image index, to continue
        // from it (a turn is JSON text: it holds no raw line break).
        let mut turns = vec![""; g.request.n as usize];
        for (index, kept) in &kept {
            if let (Some(slot), Some(turn)) = (turns.get_mut(*index), &kept.turn) {
                *slot = turn;
            }
        }
        let model_turns = turns.iter().any(|turn| !turn.is_empty()).then(|| turns.join("\n"));
        let success = Success {
            object_keys: object_keys.as_deref(),
            failures: failures_json.as_deref(),
            model_turns: model_turns.as_deref(),
            settle: usage::Charge { micros: refund, ..self.charge(failures.len() as u32, 0) },
            usage: store::Metered { model: &g.request.model, images: kept.len() as u32, tokens, cost, estimated },
            mime_type: first.map(|image| image.mime_type.as_str()).unwrap_or_default(),
            bytes: kept.iter().map(|(_, k)| k.bytes).sum(),
            upstream_latency_ms: kept.iter().map(|(_, k)| k.latency_ms).max().unwrap_or(0),
            width: first.and_then(|image| image.width),
            height: first.and_then(|image| image.height),
            finished_iso: &finished_iso,
        };
        // Conditional: if the cron already gave this generation up (its Worker looked
        // dead), the images are not delivered and nothing stays stored.
        let finished = match store::succeed(&g.db, &g.id, success).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ApiError::internal(format!("{} was no longer unfinished when it finished", g.id))),
            Err(err) => Err(err),
        };
        if let Err(err) = finished {
            if let Some(bucket) = &bucket {
                storage::delete_all(bucket, &all_keys()).await;
            }
            return Err(err);
        }
        // A failed image may have failed while storing: nothing of it stays.
        if let (Some(bucket), false) = (&bucket, failed.is_empty()) {
            let keys: Vec<String> = failed.iter().map(|(index, _)| storage::object_key(&g.id, *index, mode)).collect();
            storage::delete_all(bucket, &keys).await;
        }
        let unreturned = failures.len() as u32;
        let usage = render::Usage::new(tokens, cost, estimated, g.principal.mode);
        Ok((kept.into_iter().map(|(_, k)| k.delivered).collect(), render::failures(failures_json), unreturned, usage))
    }

    /// `n` images from the key's provider, each kept (stored) as it arrives. The inputs'
    /// bytes are let go as soon as the upstream request holds them.
    async fn draw(&self, inputs: Vec<Input>, bucket: Option<&worker::Bucket>) -> ApiResult<Vec<ApiResult<Kept>>> {
        let g = &self.generation;
        let request = &g.request;
        // A queued generation's chain is read here, when the consumer runs it.
        let loaded;
        let chain = match (&g.chain, &request.previous) {
            (Some(chain), _) => Some(chain),
            (None, Some(previous)) => {
                let added = chain::bytes_of(&g.input_records);
                loaded = Chain::load(&g.db, &g.principal.user_id, g.principal.mode, previous, added).await?;
                Some(&loaded)
            }
            (None, None) => None,
        };
        let typical = Estimate::of(request, &g.input_records, chain, &g.rc.config).call_typical;
        let Some(api_key) = provider_key(g.rc, g.principal)? else {
            let seed = seed(inputs::digest(&g.input_records), chain.map(Chain::digest));
            let mut kept = Vec::with_capacity(request.n as usize);
            // One at a time: each is stored and let go before the next is drawn.
            for index in 0..request.n {
                let image = synthetic_image(request, index, seed);
                kept.push(self.keep(index as usize, image, (0, typical), bucket).await);
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
        let config = &g.rc.config;
        let mut draft = crate::gemini::Draft::new();
        if let Some(chain) = chain {
            let bucket = bucket.ok_or_else(|| {
                ApiError::invalid_value(
                    "previous_generation_id",
                    "conversations need image storage; this deployment has none",
                )
            })?;
            chain.write(&mut draft, bucket).await?;
        }
        let inputs = inputs.into_iter().map(|input| (input.mime_type.to_string(), input.bytes));
        let prepared = crate::gemini::Prepared::new(&config.gemini_api_base, &call, draft, inputs);
        // Gemini draws one image per call: n calls in parallel, each with its own outcome.
        // Every call is waited for, so none is still storing when a failure cleans up.
        let calls = (0..request.n as usize).map(|index| {
            let prepared = &prepared;
            async move {
                let (image, latency_ms) =
                    crate::gemini::generate_image(prepared, api_key, config.gemini_deadline_ms).await?;
                if image.usage.is_none() {
                    crate::log::info_for(
                        &g.rc.request_id,
                        "generation: an answer reported no readable usageMetadata; metered as documented",
                        &format!("{} image {index}", g.id),
                    );
                }
                self.keep(index, image, (latency_ms, typical), bucket).await
            }
        });
        Ok(crate::join::join_all(calls).await)
    }

    /// What the client receives for one image (its URL: signed, public or `data:`; its
    /// bytes again as base64 when asked for), after storing it in R2.
    /// `typical`: one call's documented tokens, what an answer without usage counts as.
    async fn keep(
        &self,
        index: usize,
        mut image: Image,
        (latency_ms, typical): (u64, Tokens),
        bucket: Option<&worker::Bucket>,
    ) -> ApiResult<Kept> {
        let g = &self.generation;
        let metered = crate::metering::meter(image.usage.as_ref(), typical);
        let turn = image.turn.take();
        let (width, height) = crate::media::dimensions(&image.bytes).unzip();
        let b64_json = (g.request.response_format == ResponseFormat::B64Json)
            .then(|| base64::engine::general_purpose::STANDARD.encode(&image.bytes));
        let (mime_type, bytes) = (image.mime_type.clone(), image.bytes.len());
        let url = match bucket {
            Some(bucket) => {
                let mode = g.principal.mode;
                storage::put_one(bucket, &g.id, &g.principal.key_id, mode, index, image).await?;
                storage::stored_image_url(g.rc, &g.origin, &g.id, index, mode)?
            }
            None => storage::data_url(&image),
        };
        let delivered = DeliveredImage { url: Some(url), b64_json, mime_type, width, height };
        Ok(Kept { delivered, bytes, latency_ms, tokens: metered.tokens, estimated: metered.estimated, turn })
    }
}

/// The images drawn, by their index among the `n`: those that came back, and the errors
/// of those that did not.
#[derive(Default)]
struct Drawn {
    kept: Vec<(usize, Kept)>,
    failed: Vec<(usize, ApiError)>,
}

impl Drawn {
    fn split(outcomes: Vec<ApiResult<Kept>>) -> Drawn {
        let mut drawn = Drawn::default();
        for (index, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Ok(image) => drawn.kept.push((index, image)),
                Err(err) => drawn.failed.push((index, err)),
            }
        }
        drawn
    }
}

/// An image drawn, stored and let go: what the client receives, and what the record keeps.
struct Kept {
    delivered: DeliveredImage,
    bytes: usize,
    /// Upstream latency of the call that drew it.
    latency_ms: u64,
    /// What its call reported it used, and whether that had to be estimated.
    tokens: Tokens,
    estimated: bool,
    /// The model turn to continue from it.
    turn: Option<String>,
}

/// The synthetic provider's seed: the inputs' digest, and the chain's when it continues one.
fn seed(inputs: Option<[u8; 32]>, chain: Option<[u8; 32]>) -> Option<[u8; 32]> {
    match (inputs, chain) {
        (None, None) => None,
        (one, None) | (None, one) => one,
        (Some(inputs), Some(chain)) => {
            let mut hasher = hmac_sha256::Hash::new();
            hasher.update(inputs);
            hasher.update(chain);
            Some(hasher.finalize())
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
    Image { mime_type: "image/png".to_string(), bytes: render_png(&spec), usage: None, turn: None }
}

/// Gemini's key for a live key (503 when the deployment has none); None for a test key,
/// which draws synthetic images.
fn provider_key<'c>(rc: &'c RequestContext, principal: &KeyPrincipal) -> ApiResult<Option<&'c str>> {
    match principal.mode {
        KeyMode::Live => Ok(Some(rc.config.google_api_key().ok_or_else(provider_not_configured)?)),
        KeyMode::Test => Ok(None),
    }
}

fn provider_not_configured() -> ApiError {
    ApiError::new(
        Code::ProviderNotConfigured,
        "live keys are unavailable: the image provider is not configured on this server (test keys still work)",
    )
}

// ---------------------------------------------------------------- reading inputs

fn input_not_found(param: &str, generation_id: &str) -> ApiError {
    ApiError::not_found(format!("{param}: no generation {generation_id} of this account has images to read"))
        .with_param(param)
}

/// The inputs' bytes, in order: inline ones as sent, earlier generations read from R2
/// (one D1 round trip for all of them, then one R2 read each, in parallel). An id that is
/// not this account's succeeded generation, or whose images are gone, is 404; an index
/// past its images is 422. Inputs together are held to `inputs::MAX_INPUTS_TOTAL_BYTES`.
async fn resolve_inputs(
    db: &Db<'_>,
    bucket: Option<&worker::Bucket>,
    principal: &KeyPrincipal,
    specs: Vec<InputSpec>,
) -> ApiResult<Vec<Input>> {
    let wanted: Vec<&str> = specs
        .iter()
        .filter_map(|spec| match spec {
            InputSpec::Generation { generation_id, .. } => Some(generation_id.as_str()),
            InputSpec::Inline(_) => None,
        })
        .collect();
    let sources = store::sources(db, &principal.user_id, &wanted).await?;
    let mut reads = Vec::new();
    for (position, spec) in specs.iter().enumerate() {
        let InputSpec::Generation { generation_id, index } = spec else { continue };
        let param = inputs::param(position);
        let not_found = input_not_found(&param, generation_id);
        let source = sources.iter().find(|s| s.id == *generation_id).ok_or_else(|| not_found.clone())?;
        let Some(bucket) = bucket.filter(|_| source.object_keys.is_some()) else { return Err(not_found) };
        if i64::from(*index) >= source.n {
            let param = format!("{param}.index");
            let message = format!("{param} must be below {}, the number of images of {generation_id}", source.n);
            return Err(ApiError::validation(Code::OutOfRange, &param, message));
        }
        let key = storage::object_key(generation_id, *index as usize, source.mode.unwrap_or(KeyMode::Live));
        reads.push(async move {
            let bytes = storage::read(bucket, key).await?.ok_or(not_found)?;
            Ok::<_, ApiError>((position, bytes))
        });
    }
    let mut read = crate::join::join_all(reads).await.into_iter().collect::<Result<Vec<_>, _>>()?.into_iter();
    let mut next_read = read.next();
    let mut resolved = Vec::with_capacity(specs.len());
    let mut total = 0;
    for (position, spec) in specs.into_iter().enumerate() {
        let input = match spec {
            InputSpec::Inline(input) => input,
            InputSpec::Generation { generation_id, index } => {
                let bytes = match next_read.take() {
                    Some((at, bytes)) if at == position => bytes,
                    _ => return Err(ApiError::internal("input reads out of order")),
                };
                next_read = read.next();
                let mut input = Input::from_upload(position, None, bytes)?;
                input.record = InputRecord {
                    generation_id: Some(generation_id),
                    index: Some(index),
                    source: "generation".into(),
                    ..input.record
                };
                input
            }
        };
        total += input.bytes.len();
        inputs::check_total(position, total)?;
        resolved.push(input);
    }
    Ok(resolved)
}

// ---------------------------------------------------------------- replay

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
    let row = store::finished(&rc.db()?, generation_id, &principal.key_id).await?.ok_or_else(|| {
        ApiError::internal(format!("idempotent replay: {generation_id} is not a succeeded generation"))
    })?;
    let stored = row.object_keys.is_some();
    let bucket = storage::bucket(rc).filter(|_| stored);
    let usage = render::Usage::stored(row.usage(), row.mode.unwrap_or(KeyMode::Live));
    let mime_type = row.mime_type.unwrap_or_else(|| "image/png".into());
    let mut images = Vec::new();
    for index in render::delivered_indices(row.object_keys.as_deref(), row.n) {
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
        usage,
        inputs: inputs::parse_records(row.inputs.as_deref()),
        failures: render::failures(row.failures),
        quota_limit: principal.daily_quota,
        quota_remaining: principal.daily_quota.saturating_sub(principal.used_today),
    })
}
