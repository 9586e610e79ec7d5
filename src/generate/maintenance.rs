//! The cron's work on generations (`crate::cron` runs it every 10 minutes), each step a
//! bounded batch through an index.

use super::status::Status;
use super::store::{self, End};
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

/// Gives up generations left pending or running by a Worker that died: each is marked
/// failed (`abandoned`) and what it reserved given back, in one batch whose every release
/// runs only if its own generation's update took (it may have finished since it was read).
/// Then only the images of the generations this run really gave up, and their queued
/// inputs, are deleted. Returns how many it gave up.
pub async fn reconcile_abandoned(db: &Db<'_>, bucket: Option<&worker::Bucket>, now_ms: u64) -> ApiResult<usize> {
    let cutoff = iso_from_millis(now_ms.saturating_sub(ABANDONED_AFTER_MS));
    let abandoned = store::unfinished_before(db, &cutoff, RECONCILE_BATCH).await?;
    if abandoned.is_empty() {
        return Ok(0);
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
    Ok(given_up.len())
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
