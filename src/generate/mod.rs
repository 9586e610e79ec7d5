//! Image generation over HTTP: `POST /v1/generate` and, with OpenAI's shape,
//! `POST /v1/images/generations` and `POST /v1/images/edits`. Owns the `generations`
//! table. The handlers authenticate, rate-limit, parse, claim the Idempotency-Key and
//! render; the work itself is the [`engine::Generation`] every route runs.

pub mod background;
pub mod catalog;
pub mod edits;
pub mod engine;
pub mod history;
pub mod inputs;
pub mod request;

use crate::auth;
use crate::body::JsonObject;
use crate::error::ApiResult;
use crate::http::{self, HeaderList, RequestContext};
use crate::idempotency::{self, Begin, IdempotencyKey, Scope, Stored};
use crate::models::Resolution;
use crate::rate_limit;
pub use engine::{reconcile_abandoned, DeliveredImage, Generated, Generation};
use inputs::{InputRecord, InputSpec};
pub use request::{GenerationRequest, ResponseFormat, Shape, Style};
use serde::Serialize;
use worker::{Request, Response};

/// `object: "generation"` on a generation.
#[derive(Debug, Clone, Copy, Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum GenerationObject {
    Generation,
}

/// `POST /v1/generate`: the generation and its images.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct GenerationResponse<'a> {
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::generation_id"))]
    id: &'a str,
    object: GenerationObject,
    /// The first image's URL (`images[0].url`), for the common `n = 1`.
    url: Option<&'a str>,
    prompt: &'a str,
    #[cfg_attr(test, schemars(schema_with = "crate::openapi::schema::timestamp"))]
    created_at: String,
    model: &'a str,
    /// What was asked, in pixels: the documented size, or the aspect ratio at the
    /// resolution's long edge. What came back is each image's `width` and `height`.
    #[cfg_attr(test, schemars(regex(pattern = r"^\d+x\d+$")))]
    size: String,
    aspect_ratio: &'a str,
    resolution: Resolution,
    style: Style,
    n: u32,
    images: &'a [DeliveredImage],
    /// What it was made from, in the order given (empty when drawn from text alone).
    inputs: &'a [InputRecord],
}

/// `POST /v1/images/generations` and `/v1/images/edits`: OpenAI's Images API answer.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct OpenAiImagesResponse<'a> {
    /// Unix seconds.
    created: u64,
    data: Vec<OpenAiImage<'a>>,
}

/// One image in OpenAI's shape: `url` or `b64_json`, as asked.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub struct OpenAiImage<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    b64_json: Option<&'a str>,
    /// Always null: the prompt is sent as given.
    revised_prompt: Option<&'a str>,
}

impl Generated {
    pub fn native(&self) -> GenerationResponse<'_> {
        GenerationResponse {
            id: &self.id,
            object: GenerationObject::Generation,
            url: self.images.first().and_then(|image| image.url.as_deref()),
            prompt: &self.request.prompt,
            created_at: crate::time::iso_from_millis(self.created_ms),
            model: &self.request.model,
            size: self.request.output.label(),
            aspect_ratio: self.request.output.aspect_ratio,
            resolution: self.request.output.resolution,
            style: self.request.style,
            n: self.request.n,
            images: &self.images,
            inputs: &self.inputs,
        }
    }

    pub fn openai(&self) -> OpenAiImagesResponse<'_> {
        let data = self
            .images
            .iter()
            .map(|image| match &image.b64_json {
                Some(b64) => OpenAiImage { url: None, b64_json: Some(b64), revised_prompt: None },
                None => OpenAiImage { url: image.url.as_deref(), b64_json: None, revised_prompt: None },
            })
            .collect();
        OpenAiImagesResponse { created: self.created_ms / 1000, data }
    }

    fn render(&self, shape: Shape) -> ApiResult<String> {
        match shape {
            Shape::Native => http::to_json(&self.native()),
            Shape::OpenAi => http::to_json(&self.openai()),
        }
    }
}

/// The routes that make images, each a way into the same path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Generate,
    ImagesGenerations,
    ImagesEdits,
}

impl Entry {
    fn route(self) -> &'static str {
        match self {
            Entry::Generate => "POST /v1/generate",
            Entry::ImagesGenerations => "POST /v1/images/generations",
            Entry::ImagesEdits => "POST /v1/images/edits",
        }
    }

    fn shape(self) -> Shape {
        match self {
            Entry::Generate => Shape::Native,
            Entry::ImagesGenerations | Entry::ImagesEdits => Shape::OpenAi,
        }
    }

    /// The body's fields and its input images. Routes that take images read up to
    /// `GENERATION_BODY_LIMIT` (enforced as the body streams in); the other keeps 64 KiB.
    async fn read(self, req: &mut Request) -> ApiResult<(JsonObject, Vec<InputSpec>)> {
        match self {
            Entry::Generate => {
                crate::body::check_content_type(http::header(req, "content-type").as_deref())?;
                let raw = http::read_body(req, inputs::GENERATION_BODY_LIMIT).await?;
                let (body, images) = crate::body::parse_object_keeping(&raw, inputs::GENERATION_BODY_LIMIT, "images")?;
                let images = inputs::parse_raw(images)?;
                Ok((body, images))
            }
            Entry::ImagesGenerations => Ok((http::json_body(req).await?, Vec::new())),
            Entry::ImagesEdits => {
                let boundary = edits::boundary(http::header(req, "content-type").as_deref())?;
                let raw = http::read_body(req, inputs::GENERATION_BODY_LIMIT).await?;
                edits::read_form(&boundary, &raw)
            }
        }
    }
}

/// `POST /v1/generate`.
pub async fn generate(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    handle(req, rc, Entry::Generate).await
}

/// `POST /v1/images/generations`: the same path, OpenAI's shape.
pub async fn openai_images(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    handle(req, rc, Entry::ImagesGenerations).await
}

/// `POST /v1/images/edits`: the same path, OpenAI's edits form.
pub async fn openai_edits(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    handle(req, rc, Entry::ImagesEdits).await
}

/// Every generation route: authenticate and rate-limit (one D1 round trip), then generate.
/// Every answer after authentication carries the rate-limit and quota headers, errors
/// included; a fresh generation's own (post-charge) quota headers win over the ones read
/// at authentication.
///
/// A small synchronous text-only request (the common one) is read before its key is
/// looked up, so that the lookup, the rate limit and the reservation share one round trip
/// ([`generate_folded`]); its answers are the same, in the same order of precedence.
async fn handle(req: &mut Request, rc: &RequestContext, entry: Entry) -> ApiResult<Response> {
    let key = auth::api_key(req)?;
    let mut body = None;
    if foldable(req, rc, entry, &key) {
        let read = entry.read(req).await;
        if let Ok((fields, images)) = &read {
            let parsed = match images.is_empty() {
                true => GenerationRequest::parse(fields.clone(), Vec::new(), &rc.config, entry.shape()).ok(),
                false => None,
            };
            if let Some(request) = parsed.filter(|request| request.webhook_url.is_none()) {
                if let Some(response) = generate_folded(req, rc, &key, entry, request).await? {
                    return Ok(response);
                }
            }
        }
        body = Some(read);
    }
    let (principal, limit) = rate_limit::authenticate(rc, &key).await?;
    let common = common_headers(&principal, limit);
    let result = match limit {
        Some(decision) if !decision.allowed => Err(decision.exceeded()),
        _ => generate_idempotently(req, rc, &principal, entry, body).await,
    };
    with_common_headers(result, &common)
}

/// Whether a request may be read before its key is looked up: a JSON route, a declared
/// body of at most 64 KiB (text: an unauthenticated client gets no more read than any
/// JSON route reads), no Idempotency-Key or Prefer header, and a key whose provider is
/// configured (else the refusal of that comes after authentication, as it should).
fn foldable(req: &Request, rc: &RequestContext, entry: Entry, key: &auth::ApiKey) -> bool {
    let small = http::header(req, "content-length")
        .and_then(|len| len.trim().parse::<usize>().ok())
        .is_some_and(|len| len <= crate::body::JSON_BODY_LIMIT);
    entry != Entry::ImagesEdits
        && small
        && http::header(req, idempotency::HEADER).is_none()
        && http::header(req, "prefer").is_none()
        && (key.mode() == auth::KeyMode::Test || rc.config.google_api_key().is_some())
}

/// A synchronous text-only generation whose key lookup, rate limit and reservation (with
/// its pending record) are one D1 batch; then the engine draws and finishes it. None when
/// an account or deployment ceiling refused the reservation: that rolls the whole batch
/// back, the lookup included, so the ordinary path runs and says which.
async fn generate_folded(
    req: &Request,
    rc: &RequestContext,
    key: &auth::ApiKey,
    entry: Entry,
    request: GenerationRequest,
) -> ApiResult<Option<Response>> {
    let origin = http::origin(req);
    let db = rc.db()?;
    let (id, day) = (engine::new_id()?, crate::time::date_from_millis(rc.now_ms));
    let now_iso = crate::time::iso_from_millis(rc.now_ms);
    let key_hash = key.hash();
    let mut batch = crate::db::Batch::new();
    let pending = auth::PendingKey::push(rc, key, &mut batch)?;
    let take = rate_limit::Take::push(&mut batch, &db, &key_hash, rc.config.rate_limit_per_minute, rc.now_ms)?;
    let reserved = engine::push_reservation(
        &mut batch,
        &db,
        &rc.config,
        engine::Pending {
            id: &id,
            key: crate::usage::KeyRef::Hash(&key_hash),
            after_rate_take: take.is_some(),
            mode: key.mode(),
            day: &day,
            now_iso: &now_iso,
            request: &request,
            input_records: &[],
            status: "pending",
        },
    )?;
    let results = match db.batch(batch).await {
        Ok(results) => results,
        Err(err) => {
            let cause = crate::error::describe_worker_error(&err);
            return match crate::usage::is_ceiling(&cause) {
                true => Ok(None),
                false => Err(crate::error::ApiError::internal(cause)),
            };
        }
    };
    let principal = pending.resolve(rc, &results)?;
    let limit = take.map(|take| take.decide(&results)).transpose()?;
    let common = common_headers(&principal, limit);
    let result = async {
        if let Some(decision) = limit.filter(|decision| !decision.allowed) {
            return Err(decision.exceeded());
        }
        let used_after = engine::reserved_count(results.first(reserved)?, &principal, request.n, rc.now_ms)?;
        let generation = Generation::resumed(rc, &principal, request, id, day, origin?, Vec::new())?;
        let generated = generation.run_reserved(used_after).await?;
        Ok((http::json_text(200, generated.render(entry.shape())?)?, generated.quota_headers().to_vec()))
    };
    with_common_headers(result.await, &common).map(Some)
}

/// The rate-limit headers and the quota read at authentication, for every answer after it.
fn common_headers(principal: &auth::KeyPrincipal, limit: Option<rate_limit::Decision>) -> HeaderList {
    let mut common: HeaderList = limit.map(|d| d.headers().to_vec()).unwrap_or_default();
    common.push(("x-quota-limit-images", principal.daily_quota.to_string()));
    common.push(("x-quota-remaining-images", principal.daily_quota.saturating_sub(principal.used_today).to_string()));
    common
}

/// The answer with the common headers added wherever it did not set its own.
fn with_common_headers(result: ApiResult<(Response, HeaderList)>, common: &HeaderList) -> ApiResult<Response> {
    match result {
        Ok((mut response, mut headers)) => {
            http::add_missing(&mut headers, common);
            http::set_headers(&mut response, &headers)?;
            Ok(response)
        }
        Err(mut err) => {
            http::add_missing(&mut err.headers, common);
            Err(err)
        }
    }
}

/// Parses the request (read already, if `body` is Some), claims its Idempotency-Key, runs
/// the generation and records the answer. Returns the response and the headers it sets itself.
async fn generate_idempotently(
    req: &mut Request,
    rc: &RequestContext,
    principal: &auth::KeyPrincipal,
    entry: Entry,
    body: Option<ApiResult<(JsonObject, Vec<InputSpec>)>>,
) -> ApiResult<(Response, HeaderList)> {
    let idempotency_key = IdempotencyKey::parse(http::header(req, idempotency::HEADER).as_deref())?;
    let (body, images) = match body {
        Some(read) => read?,
        None => entry.read(req).await?,
    };
    let (route, shape) = (entry.route(), entry.shape());
    let fingerprint = idempotency::fingerprint_with(route, &body, &inputs::fingerprint_parts(&images));
    let request = GenerationRequest::parse(body, images, &rc.config, shape)?;
    let origin = http::origin(req)?;
    let preference = background::Preference::parse(http::header(req, "prefer").as_deref());
    let asynchronous = preference.is_async() || request.webhook_url.is_some();
    if asynchronous && request.response_format == ResponseFormat::B64Json {
        return Err(crate::error::ApiError::validation(
            crate::error::Code::ConflictingParameters,
            "response_format",
            "b64_json is for synchronous requests: an asynchronous generation's images are fetched by URL",
        ));
    }
    if request.webhook_url.is_some() {
        background::require_webhook_secret(rc, &principal.user_id).await?;
    }
    let scope = Scope::Key { key_id: &principal.key_id, user_id: &principal.user_id };
    let claim = match idempotency::begin(rc, idempotency_key, scope, route, &fingerprint).await? {
        Begin::Replay(Stored::Body { status, body }) => return Ok((idempotency::replay(status, body)?, Vec::new())),
        Begin::Replay(Stored::Generation { generation_id }) => {
            let generated = engine::replay(rc, principal, request, &generation_id, &origin).await?;
            let mut response = http::json_text(200, generated.render(shape)?)?;
            idempotency::mark_replayed(&mut response)?;
            return Ok((response, Vec::new()));
        }
        Begin::Proceed(claim) => claim,
    };
    if asynchronous {
        let queued = match Generation::new(rc, principal, request, origin.clone()) {
            Ok(generation) => generation.enqueue(&origin).await,
            Err(err) => Err(err),
        };
        let answered = match queued {
            Ok((id, quota_headers)) => {
                background::answer(rc, &origin, &id, &preference).await.map(|(status, body, mut headers)| {
                    headers.extend(quota_headers);
                    (status, body, headers)
                })
            }
            Err(err) => Err(err),
        };
        let stored = match &answered {
            Ok((status, body, _)) => Ok(Stored::Body { status: *status, body: body.clone() }),
            Err(err) => Err(err.clone()),
        };
        idempotency::finish(rc, claim, stored).await;
        let (status, body, headers) = answered?;
        return Ok((http::json_text(status, body)?, headers));
    }
    let outcome = match Generation::new(rc, principal, request, origin) {
        Ok(generation) => generation.run().await,
        Err(err) => Err(err),
    };
    let stored = match &outcome {
        Ok(generated) => Ok(Stored::Generation { generation_id: generated.id.clone() }),
        Err(err) => Err(err.clone()),
    };
    idempotency::finish(rc, claim, stored).await;
    let generated = outcome?;
    Ok((http::json_text(200, generated.render(shape)?)?, generated.quota_headers().to_vec()))
}
