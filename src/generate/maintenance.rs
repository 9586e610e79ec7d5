//! The cron's work on generations (`crate::cron` runs it every 10 minutes), each step a
//! bounded batch through an index.

use super::render::{self, ImageFailure};
use super::status::Status;
use super::store::{self, End, Success};
use crate::auth::KeyMode;
use crate::db::{Batch, Db};
use crate::error::{ApiError, ApiResult};
use crate::storage;
use crate::time::iso_from_millis;

/// A generation still pending (or running) this long after its Worker reserved (or took)
/// it belongs to a Worker that died (the upstream deadline is at most 10 minutes).
pub const ABANDONED_AFTER_MS: u64 = 15 * 60 * 1000;
/// Generations one cron run gives up, at most: a bounded batch whatever the backlog.
const RECONCILE_BATCH: i64 = 50;
/// Test generations whose images are deleted, at most, per cron run.
const EXPIRE_BATCH: i64 = 200;

/// Ends generations left pending or running by a Worker that died. One whose images
/// Gemini drew and R2 holds was paid for upstream: it succeeds with those images, and only
/// the images that never came back are given back ([`salvage`]). The others are marked
/// failed (`abandoned`) and what they reserved given back, in one batch whose every
/// release runs only if its own generation's update took (it may have finished since it
/// was read). Then only the images of the generations this run really gave up, and the
/// queued inputs of both kinds, are deleted. Returns how many it ended.
pub async fn reconcile_abandoned(
    db: &Db<'_>,
    bucket: Option<&worker::Bucket>,
    config: &crate::config::Config,
    now_ms: u64,
) -> ApiResult<usize> {
    let cutoff = iso_from_millis(now_ms.saturating_sub(ABANDONED_AFTER_MS));
    let candidates = store::unfinished_before(db, &cutoff, RECONCILE_BATCH).await?;
    let (salvaged, abandoned) = match bucket {
        Some(bucket) => salvage(db, bucket, candidates, (config, now_ms)).await?,
        None => (0, candidates),
    };
    if abandoned.is_empty() {
        return Ok(salvaged);
    }
    let now_iso = iso_from_millis(now_ms);
    let reason = ("abandoned", "the Worker running this generation stopped before it finished");
    let end = End::new(Status::Failed, Some(reason), &now_iso).only_from(&[Status::Pending, Status::Running]);
    let mut batch = Batch::new();
    let mut moves = Vec::with_capacity(abandoned.len());
    for generation in &abandoned {
        moves.push(store::push_end(&mut batch, db, &generation.id, &end, generation.charge())?);
    }
    let results = db.batch(batch).await.map_err(ApiError::from)?;
    let given_up: Vec<_> =
        abandoned.iter().zip(moves).filter(|(_, moved)| results.changes(*moved) == 1).map(|(g, _)| g).collect();
    // One line per generation given up, so an operator can follow each one.
    for generation in &given_up {
        let charge = generation.charge();
        let detail = format!("{} ({} image(s) on {} given back)", generation.id, charge.n, charge.day);
        crate::log::info("cron: abandoned generation failed", &detail);
    }
    if let Some(bucket) = bucket {
        let keys: Vec<String> = given_up
            .iter()
            .flat_map(|g| {
                let n = usize::try_from(g.n).unwrap_or(0);
                let mut keys = storage::object_keys(&g.id, n, g.mode.unwrap_or(KeyMode::Live));
                let input_count = super::inputs::parse_records(g.inputs.as_deref()).len();
                keys.extend((0..input_count).map(|i| storage::input_key(&g.id, i)));
                keys
            })
            .collect();
        storage::delete_all(bucket, &keys).await;
    }
    Ok(salvaged + given_up.len())
}

/// Of `candidates`, succeeds those with images stored in R2 (the ones that came back),
/// recording the others as failures and giving back their charge with the success, in one
/// batch each. Returns how many it ended that way, and the candidates with nothing stored.
async fn salvage(
    db: &Db<'_>,
    bucket: &worker::Bucket,
    candidates: Vec<store::Unfinished>,
    (config, now_ms): (&crate::config::Config, u64),
) -> ApiResult<(usize, Vec<store::Unfinished>)> {
    let finished_iso = iso_from_millis(now_ms);
    let mut salvaged = 0;
    let mut rest = Vec::new();
    for generation in candidates {
        let n = usize::try_from(generation.n).unwrap_or(0);
        let mode = generation.mode.unwrap_or(KeyMode::Live);
        let stored = storage::stored_images(bucket, &generation.id, mode, n).await?;
        if stored.is_empty() {
            rest.push(generation);
            continue;
        }
        let keys: Vec<String> =
            stored.iter().map(|(index, _)| storage::object_key(&generation.id, *index, mode)).collect();
        let message = "the Worker running this generation stopped before this image came back";
        let failures: Vec<ImageFailure> = (0..n)
            .filter(|index| !stored.iter().any(|(stored, _)| stored == index))
            .map(|index| ImageFailure { index: index as u32, code: "abandoned".into(), message: message.into() })
            .collect();
        let object_keys = serde_json::to_string(&keys).unwrap_or_default();
        let failures_json = render::failures_json(&failures);
        // What its stored images' calls reported died with the Worker: each is counted as
        // its model documents an image at its resolution, and flagged estimated.
        let caps = config.caps_or_defaults(&generation.model);
        let resolution = generation.resolution.as_deref().and_then(crate::models::Resolution::parse);
        let per_image = caps.image_tokens.at(resolution.unwrap_or(crate::models::Resolution::R1K));
        let tokens = crate::metering::Tokens { output_image: per_image * keys.len() as u64, ..Default::default() };
        let cost = tokens.cost(&caps.pricing);
        let charge = generation.charge();
        let settle = crate::usage::Charge { n: failures.len() as u32, micros: charge.micros - cost.stored(), ..charge };
        let success = Success {
            object_keys: Some(&object_keys),
            failures: failures_json.as_deref(),
            // What Gemini answered died with the Worker: these images cannot be continued.
            model_turns: None,
            settle,
            usage: store::Metered {
                model: &generation.model,
                images: keys.len() as u32,
                tokens,
                cost,
                estimated: true,
            },
            // What the images are is in their bytes and R2's metadata; the record's type is
            // only a hint for history, and every image this service stores is served with
            // its own Content-Type.
            mime_type: "image/png",
            bytes: stored.iter().map(|(_, size)| *size as usize).sum(),
            upstream_latency_ms: 0,
            width: None,
            height: None,
            finished_iso: &finished_iso,
        };
        if store::succeed(db, &generation.id, success).await? {
            salvaged += 1;
            let detail =
                format!("{} ({} of {} image(s) were stored; the rest given back)", generation.id, keys.len(), n);
            crate::log::info("cron: abandoned generation succeeded with what it stored", &detail);
            let input_count = super::inputs::parse_records(generation.inputs.as_deref()).len();
            storage::delete_inputs(bucket, &generation.id, input_count).await;
        }
    }
    Ok((salvaged, rest))
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
    let expiring = store::expiring_test_images(db, &cutoff, EXPIRE_BATCH).await?;
    let keys: Vec<String> = expiring
        .iter()
        .flat_map(|g| storage::object_keys(&g.id, usize::try_from(g.n).unwrap_or(0), KeyMode::Test))
        .collect();
    if expiring.is_empty() || !storage::delete_all(bucket, &keys).await {
        return Ok(0);
    }
    let ids: Vec<&str> = expiring.iter().map(|g| g.id.as_str()).collect();
    store::forget_images(db, &ids).await?;
    Ok(expiring.len())
}
