//! Image generation: `POST /v1/generate` (and, with another shape, the OpenAI-compatible
//! route). Owns the `generations` table.
//!
//! One request: authenticate the key (1 D1 round trip) -> validate -> reserve `n` images
//! of today's quota and record a pending generation (1 round trip, atomic) -> draw the
//! images (Gemini for live keys, the synthetic provider for test keys; `n` in parallel) ->
//! store them in R2 -> mark the generation succeeded (1 round trip). If anything fails
//! after the reservation, the stored objects are deleted, the reservation is released and
//! the generation is marked failed in one atomic batch: nothing is charged for an image
//! that was not delivered.

pub mod history;
pub mod request;

use crate::db::{self, D1ResultExt, Db};
use crate::error::{ApiError, ApiResult, ErrorType};
use crate::gemini::Image;
use crate::http::{self, RequestContext};
use crate::idempotency::{self, Begin, IdempotencyKey};
use crate::keys::{self, KeyMode, KeyPrincipal};
use crate::rate_limit;
use crate::storage;
use crate::synthetic::{render_png, SyntheticSpec};
use crate::time::{date_from_millis, iso_from_millis};
use crate::usage;
use base64::Engine;
pub use request::{GenerationRequest, ResponseFormat, Shape, Style};
use serde::Serialize;
use worker::{Request, Response};

/// A delivered image as the client receives it.
#[derive(Debug, Serialize)]
pub struct DeliveredImage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b64_json: Option<String>,
    pub mime_type: String,
}

/// A finished generation, ready to be rendered in either API shape.
pub struct Generated {
    pub id: String,
    pub created_ms: u64,
    pub request: GenerationRequest,
    pub images: Vec<DeliveredImage>,
    pub quota_limit: u32,
    pub quota_remaining: u32,
}

impl Generated {
    /// `/v1/generate`: `{id, url, prompt, created_at, model, size, style, n, images}`.
    pub fn native_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "object": "generation",
            "url": self.images.first().and_then(|image| image.url.clone()),
            "prompt": self.request.prompt,
            "created_at": iso_from_millis(self.created_ms),
            "model": self.request.model,
            "size": self.request.size.label(),
            "style": self.request.style.as_str(),
            "n": self.request.n,
            "images": self.images,
        })
    }

    /// OpenAI Images API: `{created, data: [{url} | {b64_json}]}`.
    pub fn openai_json(&self) -> serde_json::Value {
        let data: Vec<serde_json::Value> = self
            .images
            .iter()
            .map(|image| match (&image.b64_json, &image.url) {
                (Some(b64), _) => serde_json::json!({ "b64_json": b64, "revised_prompt": null }),
                (None, url) => serde_json::json!({ "url": url, "revised_prompt": null }),
            })
            .collect();
        serde_json::json!({ "created": self.created_ms / 1000, "data": data })
    }

    pub fn quota_headers(&self) -> [(&'static str, String); 2] {
        [
            ("x-quota-limit-images", self.quota_limit.to_string()),
            ("x-quota-remaining-images", self.quota_remaining.to_string()),
        ]
    }
}

/// `POST /v1/generate`.
pub async fn generate(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    handle(req, rc, Shape::Native).await
}

/// `POST /v1/images/generations`: the same path, OpenAI's shape.
pub async fn openai_images(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    handle(req, rc, Shape::OpenAi).await
}

/// Both generation routes: authenticate, rate-limit, validate, claim the Idempotency-Key,
/// generate, and answer in the route's shape. Every answer after authentication carries
/// the rate-limit and quota headers, errors included.
async fn handle(req: &mut Request, rc: &RequestContext, shape: Shape) -> ApiResult<Response> {
    let principal = keys::authenticate(req, rc).await?;
    let limit = rate_limit::check(rc, &principal.key_id).await;
    let mut headers: Vec<(&'static str, String)> = limit.map(|d| d.headers().to_vec()).unwrap_or_default();
    headers.push(("x-quota-limit-images", principal.daily_quota.to_string()));
    headers.push(("x-quota-remaining-images", principal.daily_quota.saturating_sub(principal.used_today).to_string()));

    let result = match limit {
        Some(decision) if !decision.allowed => Err(decision.exceeded()),
        _ => generate_idempotently(req, rc, &principal, shape).await,
    };
    match result {
        Ok(mut response) => {
            for (name, value) in headers {
                // A fresh generation already set its own (post-charge) quota headers.
                if !response.headers().has(name)? {
                    response.headers_mut().set(name, &value)?;
                }
            }
            Ok(response)
        }
        Err(mut err) => {
            for (name, value) in headers {
                if !err.headers.iter().any(|(existing, _)| *existing == name) {
                    err.headers.push((name, value));
                }
            }
            Err(err)
        }
    }
}

async fn generate_idempotently(
    req: &mut Request,
    rc: &RequestContext,
    principal: &KeyPrincipal,
    shape: Shape,
) -> ApiResult<Response> {
    let idempotency_key = IdempotencyKey::parse(http::header(req, idempotency::HEADER).as_deref())?;
    let body = http::json_body(req).await?;
    let route = match shape {
        Shape::Native => "POST /v1/generate",
        Shape::OpenAi => "POST /v1/images/generations",
    };
    let fingerprint = idempotency::fingerprint(route, &body);
    let request = GenerationRequest::parse(body, &rc.config, shape)?;
    let claim = match idempotency::begin(rc, idempotency_key, &principal.user_id, route, &fingerprint).await? {
        Begin::Replay(response) => return Ok(response),
        Begin::Proceed(claim) => claim,
    };
    let outcome = run(rc, principal, request, &origin(req)?)
        .await
        .map(|generated| (render(&generated, shape).to_string(), generated.quota_headers()));
    idempotency::finish(rc, claim, outcome.as_ref().map(|(text, _)| (200, text.as_str()))).await;
    let (text, quota_headers) = outcome?;
    let mut response = http::json_text(200, text)?;
    for (name, value) in quota_headers {
        response.headers_mut().set(name, &value)?;
    }
    Ok(response)
}

fn render(generated: &Generated, shape: Shape) -> serde_json::Value {
    match shape {
        Shape::Native => generated.native_json(),
        Shape::OpenAi => generated.openai_json(),
    }
}

/// `https://host` of the request, for absolute signed URLs.
pub fn origin(req: &Request) -> ApiResult<String> {
    Ok(req.url()?.origin().ascii_serialization())
}

/// The generation itself, for both shapes.
pub async fn run(
    rc: &RequestContext,
    principal: &KeyPrincipal,
    request: GenerationRequest,
    origin: &str,
) -> ApiResult<Generated> {
    // A live key with no provider must fail before any quota is touched.
    let google_api_key = match principal.mode {
        KeyMode::Live => Some(rc.config.google_api_key().ok_or_else(provider_not_configured)?.to_string()),
        KeyMode::Test => None,
    };
    let db = rc.db()?;
    let generation_id = format!("gen_{}", crate::random::uuid_v4()?);
    let today = date_from_millis(rc.now_ms);
    let quota = principal.daily_quota;

    // Fast refusal without a write when the count read at authentication already says no.
    if principal.used_today.saturating_add(request.n) > quota {
        return Err(usage::quota_exceeded(quota, principal.used_today, request.n, rc.now_ms));
    }
    let used_after = reserve(&db, rc, principal, &request, &generation_id, &today).await?;

    // From here on every failure must give the reservation back.
    let delivered =
        match complete(rc, &db, principal, &request, &generation_id, origin, google_api_key.as_deref()).await {
            Ok(delivered) => delivered,
            Err(err) => {
                fail(&db, principal, &request, &generation_id, &today, err.code).await;
                return Err(err);
            }
        };

    Ok(Generated {
        id: generation_id,
        created_ms: rc.now_ms,
        request,
        images: delivered,
        quota_limit: quota,
        quota_remaining: quota.saturating_sub(used_after),
    })
}

/// Reserves the images and records the pending generation in one atomic batch; the
/// generation row is written only if the reservation took (`changes() = 1`).
async fn reserve(
    db: &Db<'_>,
    rc: &RequestContext,
    principal: &KeyPrincipal,
    request: &GenerationRequest,
    generation_id: &str,
    today: &str,
) -> ApiResult<u32> {
    let reserve = usage::reserve(db, &principal.key_id, today, request.n, principal.daily_quota)?;
    let record = db
        .prepare(
            "INSERT INTO generations (id, api_key_id, user_id, prompt, model, size, style, n, status, created_at)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9 WHERE changes() = 1",
        )
        .bind(&[
            db::text(generation_id),
            db::text(&principal.key_id),
            db::text(&principal.user_id),
            db::text(&request.prompt),
            db::text(&request.model),
            db::text(&request.size.label()),
            db::text(request.style.as_str()),
            db::int(request.n.into()),
            db::text(&iso_from_millis(rc.now_ms)),
        ])?;
    let results = db.batch(vec![reserve, record]).await.or_internal()?;
    #[derive(serde::Deserialize)]
    struct Count {
        image_count: i64,
    }
    let counted: Vec<Count> = db::rows(&results, 0)?;
    match counted.first() {
        Some(count) => Ok(u32::try_from(count.image_count).unwrap_or(u32::MAX)),
        // Someone else's concurrent request took what was left.
        None => Err(usage::quota_exceeded(principal.daily_quota, principal.daily_quota, request.n, rc.now_ms)),
    }
}

/// Releases the reservation and marks the generation failed, atomically. The request has
/// already failed; if this write fails too it is logged (the reservation then stays).
async fn fail(
    db: &Db<'_>,
    principal: &KeyPrincipal,
    request: &GenerationRequest,
    generation_id: &str,
    today: &str,
    code: &str,
) {
    let statements = (|| -> ApiResult<Vec<worker::D1PreparedStatement>> {
        Ok(vec![
            usage::release(db, &principal.key_id, today, request.n)?,
            db.prepare("UPDATE generations SET status = 'failed', error_code = ?2 WHERE id = ?1")
                .bind(&[db::text(generation_id), db::text(code)])?,
        ])
    })();
    let result = match statements {
        Ok(statements) => db.batch(statements).await.map(|_| ()).map_err(|e| db::describe_error(&e)),
        Err(err) => Err(err.to_string()),
    };
    if let Err(detail) = result {
        crate::log::error("releasing a failed generation's reservation failed", &format!("{generation_id}: {detail}"));
    }
}

/// Draws the images, builds what the client receives (reading the bytes for `b64_json` or
/// `data:` URLs), then moves the bytes into R2 and marks the generation succeeded. On any
/// failure after storing, the stored objects are deleted again.
async fn complete(
    rc: &RequestContext,
    db: &Db<'_>,
    principal: &KeyPrincipal,
    request: &GenerationRequest,
    generation_id: &str,
    origin: &str,
    google_api_key: Option<&str>,
) -> ApiResult<Vec<DeliveredImage>> {
    let drawn = match google_api_key {
        None => draw_synthetic(request),
        Some(api_key) => draw_with_gemini(rc, request, api_key).await?,
    };
    let bucket = storage::bucket(rc);
    let delivered = deliver(rc, origin, generation_id, request, &drawn, bucket.is_some())?;
    let total_bytes: usize = drawn.iter().map(|(image, _)| image.bytes.len()).sum();
    let max_latency = drawn.iter().map(|(_, latency)| *latency).max().unwrap_or(0);
    let mime_type = drawn.first().map(|(image, _)| image.mime_type.clone()).unwrap_or_default();

    let stored = match &bucket {
        Some(bucket) => {
            let images = drawn.into_iter().map(|(image, _)| image).collect();
            Some(storage::put_all(bucket, generation_id, &principal.key_id, images).await?)
        }
        None => None,
    };
    let object_keys = stored.as_ref().map(|keys| serde_json::to_string(keys).unwrap_or_default());
    let finish = db
        .prepare(
            "UPDATE generations SET status = 'succeeded', object_keys = ?2, mime_type = ?3, bytes = ?4,
                    upstream_latency_ms = ?5
             WHERE id = ?1",
        )
        .bind(&[
            db::text(generation_id),
            db::opt_text(object_keys.as_deref()),
            db::text(&mime_type),
            db::int(total_bytes as i64),
            db::int(max_latency as i64),
        ])?;
    if let Err(err) = db.run(finish).await.or_internal() {
        if let (Some(bucket), Some(keys)) = (&bucket, &stored) {
            storage::delete_all(bucket, keys).await;
        }
        return Err(err);
    }
    Ok(delivered)
}

fn draw_synthetic(request: &GenerationRequest) -> Vec<(Image, u64)> {
    (0..request.n)
        .map(|index| {
            let spec = SyntheticSpec {
                prompt: &request.prompt,
                width: request.size.width,
                height: request.size.height,
                artistic: request.style == Style::Artistic,
                index,
            };
            (Image { mime_type: "image/png".to_string(), bytes: render_png(&spec) }, 0)
        })
        .collect()
}

async fn draw_with_gemini(
    rc: &RequestContext,
    request: &GenerationRequest,
    api_key: &str,
) -> ApiResult<Vec<(Image, u64)>> {
    let text = request.upstream_text();
    let call = crate::gemini::ImageCall {
        model: &request.model,
        text: &text,
        aspect_ratio: request.size.aspect_ratio,
        image_size: request.size.image_size,
    };
    let base = &rc.config.gemini_api_base;
    let deadline = rc.config.gemini_deadline_ms;
    // Gemini draws one image per call: n calls in parallel; the first failure fails all.
    let calls = (0..request.n).map(|_| crate::gemini::generate_image(base, api_key, &call, deadline));
    futures_util::future::try_join_all(calls).await
}

fn deliver(
    rc: &RequestContext,
    origin: &str,
    generation_id: &str,
    request: &GenerationRequest,
    images: &[(Image, u64)],
    stored: bool,
) -> ApiResult<Vec<DeliveredImage>> {
    images
        .iter()
        .enumerate()
        .map(|(index, (image, _))| {
            let url = if stored {
                storage::stored_image_url(rc, origin, generation_id, index)?
            } else {
                storage::data_url(image)
            };
            let b64_json = (request.response_format == ResponseFormat::B64Json)
                .then(|| base64::engine::general_purpose::STANDARD.encode(&image.bytes));
            Ok(DeliveredImage { url: Some(url), b64_json, mime_type: image.mime_type.clone() })
        })
        .collect()
}

/// A generation still `pending` this long after it started belongs to a Worker that died
/// (the upstream deadline is at most 10 minutes); its reservation is given back.
pub const ABANDONED_AFTER_MS: u64 = 15 * 60 * 1000;

/// The scheduled reconciliation (cron): releases the quota reserved by generations left
/// pending and marks them failed (`abandoned`), in one atomic batch. Returns how many.
pub async fn reconcile_abandoned(d1: worker::D1Database, now_ms: u64) -> ApiResult<usize> {
    let queries = std::cell::Cell::new(0);
    let db = Db::new(d1, &queries);
    let cutoff = iso_from_millis(now_ms.saturating_sub(ABANDONED_AFTER_MS));
    let release = usage::release_abandoned(&db, &cutoff)?;
    let mark = db
        .prepare(
            "UPDATE generations SET status = 'failed', error_code = 'abandoned'
             WHERE status = 'pending' AND created_at < ?1",
        )
        .bind(&[db::text(&cutoff)])?;
    let results = db.batch(vec![release, mark]).await.or_internal()?;
    let marked = results.get(1).and_then(|r| r.meta().ok().flatten()).and_then(|m| m.changes).unwrap_or(0);
    Ok(marked)
}

fn provider_not_configured() -> ApiError {
    ApiError::new(
        503,
        ErrorType::UpstreamError,
        "provider_not_configured",
        "live keys are unavailable: the image provider is not configured on this server (test keys still work)",
    )
}
