//! The scheduled work (`[triggers]` in wrangler.toml, every 10 minutes). Each step is
//! bounded (a fixed batch per run, through an index) and owned by its feature; a failing
//! step is logged and does not stop the others.

use crate::db::Db;
use crate::error::ApiResult;
use crate::{auth, config::Config, generate, idempotency, throttle};

/// Runs every step once; returns a summary for the log line.
pub async fn run(d1: worker::D1Database, bucket: Option<worker::Bucket>, config: &Config, now_ms: u64) -> String {
    let queries = std::cell::Cell::new(0);
    let db = Db::new(d1, &queries, config.log_sql);
    let bucket = bucket.as_ref();
    let steps: [(&str, ApiResult<usize>); 5] = [
        ("abandoned", generate::maintenance::reconcile_abandoned(&db, bucket, config, now_ms).await),
        (
            "test_images_expired",
            generate::maintenance::expire_test_images(&db, bucket, config.test_image_retention_days, now_ms).await,
        ),
        ("revoked_tokens_pruned", auth::prune_revoked_tokens(&db, now_ms).await),
        ("throttle_pruned", throttle::prune(&db, config, now_ms).await),
        ("idempotency_pruned", idempotency::prune(&db, now_ms).await),
    ];
    let summary: Vec<String> = steps
        .into_iter()
        .map(|(step, result)| match result {
            Ok(count) => format!("{step}={count}"),
            Err(err) => {
                crate::log::error("cron step failed", &format!("{step}: {err}"));
                format!("{step}=failed")
            }
        })
        .collect();
    format!("{} d1_queries={}", summary.join(" "), queries.get())
}
