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
pub mod health;
pub mod http;
pub mod log;
pub mod panic_hook;
pub mod random;
pub mod routes;
pub mod time;

use worker::{event, Context, Env, Request, Response};

#[event(fetch)]
pub async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    panic_hook::install();
    app::handle(req, env, ctx).await
}
