//! Generations: every route that makes images, the queue consumer and the cron run one
//! lifecycle. Read top-down; every import between these files points down this list:
//!
//! - `routes`      the HTTP entry points (generate, OpenAI's two routes, history, cancel)
//! - `queue`       the queue consumer and its dead letters
//! - `maintenance` the cron's work: abandoned generations, expiring test images
//! - `notify`      webhook events and their delivery
//! - `engine`      the lifecycle: `Generation` -> `Reserved` -> finish | fail | park
//! - `cost`        what a request may cost, before it is drawn (pure)
//! - `chain`       conversations: the earlier turns a continued generation replays
//! - `render`      what a client receives: answers, records, history pages
//! - `store`       every statement on `generations`: the reservation chain, endings
//! - `request`, `edits`, `inputs`   parsing a request (pure)
//! - `prefer`, `status`, `jobs`     leaves: RFC 7240, which status may follow which, the
//!   queue message
//!
//! Owns the `generations` table (only `store` touches it).

pub mod chain;
pub mod cost;
pub mod edits;
pub mod engine;
pub mod inputs;
pub mod jobs;
pub mod maintenance;
pub mod notify;
pub mod prefer;
pub mod queue;
pub mod render;
pub mod request;
pub mod routes;
pub mod status;
pub mod store;

pub use request::{GenerationRequest, ResponseFormat, Shape, Style};
