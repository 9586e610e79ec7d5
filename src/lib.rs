//! NanoBanana Edge: an image-generation API as one Cloudflare Worker.
//!
//! `app` runs the pipeline (request id, routing, error envelope); each feature module owns
//! its routes, types and SQL. Pure logic is kept free of `worker` types so `cargo test`
//! runs it natively.

pub mod accounts;
pub mod app;
pub mod auth;
pub mod body;
pub mod config;
pub mod db;
pub mod error;
pub mod gemini;
pub mod generate;
pub mod health;
pub mod http;
pub mod idempotency;
pub mod keys;
pub mod log;
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

use worker::{event, Context, Env, Request, Response};

#[event(fetch)]
pub async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    panic_hook::install();
    app::handle(req, env, ctx).await
}
