//! NanoBanana Edge: an image-generation API as one Cloudflare Worker.
//!
//! `app` runs the pipeline (request id, routing, error envelope); each feature module owns
//! its routes, types and SQL. Pure logic is kept free of `worker` types so `cargo test`
//! runs it natively.

pub mod accounts;
pub mod admin;
pub mod app;
pub mod auth;
pub mod body;
pub mod catalog;
pub mod config;
pub mod cron;
pub mod db;
pub mod error;
pub mod gemini;
pub mod generate;
pub mod health;
pub mod http;
pub mod idempotency;
pub mod ip;
pub mod join;
pub mod js;
pub mod keys;
pub mod log;
pub mod media;
pub mod metering;
pub mod models;
pub mod multipart;
pub mod openapi;
pub mod panic_hook;
pub mod png;
pub mod random;
pub mod rate_limit;
pub mod routes;
pub mod storage;
pub mod synthetic;
pub mod throttle;
pub mod time;
pub mod usage;
pub mod webhooks;

use worker::{event, Context, Env, Request, Response, ScheduleContext, ScheduledEvent};

#[event(fetch)]
pub async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    panic_hook::install();
    if routes::bills_upstream(req.method().as_ref(), &req.path()) {
        return app::handle_to_completion(req, env, ctx).await;
    }
    app::handle(req, env, ctx).await
}

/// The queue consumer (`[[queues.consumers]]`): queued generations, webhook retries, and
/// their dead letters (`generate::queue`).
#[event(queue)]
pub async fn queue(batch: worker::MessageBatch<String>, env: Env, ctx: Context) -> worker::Result<()> {
    panic_hook::install();
    generate::queue::consume(batch, env, ctx).await;
    Ok(())
}

/// Cron (`[triggers]` in wrangler.toml): reconciliation and retention (`cron.rs`).
#[event(scheduled)]
pub async fn scheduled(event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    panic_hook::install();
    let config = match config::Config::for_env(&env) {
        Ok(config) => config,
        Err(invalid) => return log::error("cron: invalid setting", invalid.0),
    };
    match env.d1("DB") {
        Ok(d1) => {
            // The cron's clock is its event's scheduled time (the run's own moment).
            let now_ms = match event.schedule() {
                ms if ms.is_finite() && ms > 0.0 => ms as u64,
                _ => time::now_millis(),
            };
            let summary = cron::run(d1, env.bucket(storage::BUCKET_BINDING).ok(), &config, now_ms).await;
            log::info("cron", &summary);
        }
        Err(err) => log::error("cron: D1 binding DB is missing", &error::describe_worker_error(&err)),
    }
}
