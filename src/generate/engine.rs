//! The generation engine: one [`Generation`] value whose steps are its methods. Every
//! route that makes images (the native and OpenAI-shaped routes today) runs this, so the
//! guarantees below hold everywhere:
//!
//! reserve `n` images of today's quota and record a pending generation (1 D1 round trip,
//! atomic) -> draw the images (Gemini for live keys, the synthetic provider for test keys;
//! `n` in parallel) -> build what the client receives -> store the bytes in R2 -> mark the
//! generation succeeded (1 round trip). If anything fails after the reservation, the
//! stored objects are deleted, and the reservation is released and the generation marked
//! failed in one atomic batch: nothing is charged for an image that was not delivered.

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
use serde::{Deserialize, Serialize};

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
    pub fn quota_headers(&self) -> [(&'static str, String); 2] {
        [
            ("x-quota-limit-images", self.quota_limit.to_string()),
            ("x-quota-remaining-images", self.quota_remaining.to_string()),
        ]
    }
}

/// An image drawn by a provider, with the upstream latency of the call that drew it.
struct Drawn {
    image: Image,
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
        let google_api_key = match principal.mode {
            KeyMode::Live => Some(rc.config.google_api_key().ok_or_else(provider_not_configured)?.to_string()),
            KeyMode::Test => None,
        };
        if principal.used_today.saturating_add(request.n) > principal.daily_quota {
            return Err(usage::quota_exceeded(principal.daily_quota, principal.used_today, request.n, rc.now_ms));
        }
        Ok(Generation {
            db: rc.db()?,
            id: format!("gen_{}", crate::random::uuid_v4()?),
            day: date_from_millis(rc.now_ms),
            rc,
            principal,
            request,
            origin,
            google_api_key,
        })
    }

    /// Runs it: reserve, draw, deliver, store, finish; on any failure after the
    /// reservation, give it back.
    pub async fn run(self) -> ApiResult<Generated> {
        let used_after = self.reserve().await?;
        match self.complete().await {
            Ok(images) => {
                let quota = self.principal.daily_quota;
                Ok(Generated {
                    id: self.id,
                    created_ms: self.rc.now_ms,
                    request: self.request,
                    images,
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

    /// Reserves the images and records the pending generation in one atomic batch; the
    /// generation row is written only if the reservation took (`changes() = 1`). Returns
    /// the key's count for today after the reservation.
    async fn reserve(&self) -> ApiResult<u32> {
        let (db, request, principal) = (&self.db, &self.request, self.principal);
        let mut batch = Batch::new();
        let reserved =
            batch.push::<Reserved>(usage::reserve(db, &principal.key_id, &self.day, request.n, principal.daily_quota)?);
        batch.push::<()>(
            db.prepare(
                "INSERT INTO generations (id, api_key_id, user_id, prompt, model, size, style, n, status, created_at)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9 WHERE changes() = 1",
            )
            .bind(&[
                db::text(&self.id),
                db::text(&principal.key_id),
                db::text(&principal.user_id),
                db::text(&request.prompt),
                db::text(&request.model),
                db::text(&request.size.label()),
                db::text(request.style.as_str()),
                db::int(request.n.into()),
                db::text(&iso_from_millis(self.rc.now_ms)),
            ])?,
        );
        let results = db.batch(batch).await.or_internal()?;
        match results.first(reserved)? {
            Some(count) => Ok(u32::try_from(count.image_count).unwrap_or(u32::MAX)),
            // Someone else's concurrent request took what was left.
            None => Err(usage::quota_exceeded(principal.daily_quota, principal.daily_quota, request.n, self.rc.now_ms)),
        }
    }

    /// Draws the images, builds what the client receives (reading the bytes for
    /// `b64_json` or `data:` URLs), then moves the bytes into R2 and marks the generation
    /// succeeded. On a failure after storing, the stored objects are deleted again.
    async fn complete(&self) -> ApiResult<Vec<DeliveredImage>> {
        let drawn = self.draw().await?;
        let bucket = storage::bucket(self.rc);
        let delivered = self.deliver(&drawn, bucket.is_some())?;
        let total_bytes: usize = drawn.iter().map(|d| d.image.bytes.len()).sum();
        let max_latency = drawn.iter().map(|d| d.latency_ms).max().unwrap_or(0);
        let mime_type = drawn.first().map(|d| d.image.mime_type.clone()).unwrap_or_default();

        let stored = match &bucket {
            Some(bucket) => {
                let images = drawn.into_iter().map(|d| d.image).collect();
                Some(storage::put_all(bucket, &self.id, &self.principal.key_id, images).await?)
            }
            None => None,
        };
        let object_keys = stored.as_ref().map(|keys| serde_json::to_string(keys).unwrap_or_default());
        let finish = self
            .db
            .prepare(
                "UPDATE generations SET status = 'succeeded', object_keys = ?2, mime_type = ?3, bytes = ?4,
                        upstream_latency_ms = ?5
                 WHERE id = ?1",
            )
            .bind(&[
                db::text(&self.id),
                db::opt_text(object_keys.as_deref()),
                db::text(&mime_type),
                db::int(total_bytes as i64),
                db::int(max_latency as i64),
            ])?;
        if let Err(err) = self.db.run(finish).await.or_internal() {
            if let (Some(bucket), Some(keys)) = (&bucket, &stored) {
                storage::delete_all(bucket, keys).await;
            }
            return Err(err);
        }
        Ok(delivered)
    }

    /// `n` images from the key's provider.
    async fn draw(&self) -> ApiResult<Vec<Drawn>> {
        let request = &self.request;
        let Some(api_key) = self.google_api_key.as_deref() else {
            return Ok((0..request.n)
                .map(|index| Drawn { image: synthetic_image(request, index), latency_ms: 0 })
                .collect());
        };
        let text = request.upstream_text();
        let call = crate::gemini::ImageCall {
            model: &request.model,
            text: &text,
            aspect_ratio: request.size.aspect_ratio,
            image_size: request.size.image_size,
        };
        let config = &self.rc.config;
        // Gemini draws one image per call: n calls in parallel; the first failure fails all.
        let calls = (0..request.n)
            .map(|_| crate::gemini::generate_image(&config.gemini_api_base, api_key, &call, config.gemini_deadline_ms));
        let drawn = futures_util::future::try_join_all(calls).await?;
        Ok(drawn.into_iter().map(|(image, latency_ms)| Drawn { image, latency_ms }).collect())
    }

    /// What the client receives for each image: its URL (signed, public or `data:`), and
    /// the bytes again as base64 when asked for.
    fn deliver(&self, drawn: &[Drawn], stored: bool) -> ApiResult<Vec<DeliveredImage>> {
        drawn
            .iter()
            .enumerate()
            .map(|(index, Drawn { image, .. })| {
                let url = if stored {
                    storage::stored_image_url(self.rc, &self.origin, &self.id, index)?
                } else {
                    storage::data_url(image)
                };
                let b64_json = (self.request.response_format == ResponseFormat::B64Json)
                    .then(|| base64::engine::general_purpose::STANDARD.encode(&image.bytes));
                Ok(DeliveredImage { url: Some(url), b64_json, mime_type: image.mime_type.clone() })
            })
            .collect()
    }

    /// Releases the reservation and marks the generation failed, atomically. The request
    /// has already failed; if this write fails too it is logged (the reservation then stays
    /// until the reconciliation cron gives it back).
    async fn fail(&self, err: &ApiError) {
        let result = async {
            let mut batch = Batch::new();
            batch.push::<()>(usage::release(&self.db, &self.principal.key_id, &self.day, self.request.n)?);
            batch.push::<()>(
                self.db
                    .prepare("UPDATE generations SET status = 'failed', error_code = ?2 WHERE id = ?1")
                    .bind(&[db::text(&self.id), db::text(err.code.as_str())])?,
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

#[derive(Deserialize)]
struct Reserved {
    image_count: i64,
}

fn synthetic_image(request: &GenerationRequest, index: u32) -> Image {
    let spec = SyntheticSpec {
        prompt: &request.prompt,
        width: request.size.width,
        height: request.size.height,
        artistic: request.style == Style::Artistic,
        index,
    };
    Image { mime_type: "image/png".to_string(), bytes: render_png(&spec) }
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

/// The scheduled reconciliation (cron): releases the quota reserved by generations left
/// pending and marks them failed (`abandoned`), in one atomic batch. Returns how many.
pub async fn reconcile_abandoned(d1: worker::D1Database, now_ms: u64) -> ApiResult<usize> {
    let queries = std::cell::Cell::new(0);
    let db = Db::new(d1, &queries);
    let cutoff = iso_from_millis(now_ms.saturating_sub(ABANDONED_AFTER_MS));
    let mut batch = Batch::new();
    batch.push::<()>(usage::release_abandoned(&db, &cutoff)?);
    let marked = batch.push::<()>(
        db.prepare(
            "UPDATE generations SET status = 'failed', error_code = 'abandoned'
             WHERE status = 'pending' AND created_at < ?1",
        )
        .bind(&[db::text(&cutoff)])?,
    );
    let results = db.batch(batch).await.map_err(|err| ApiError::internal(describe_worker_error(&err)))?;
    Ok(results.changes(marked))
}
