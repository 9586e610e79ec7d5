//! The one place D1 errors become API errors.
//!
//! `Error::D1` carries a clean `cause()` ("UNIQUE constraint failed: users.email"); its
//! `Display` is a noisy dump, so only the cause is logged. Nothing from here reaches a client.

use crate::error::ApiError;
use worker::wasm_bindgen::JsValue;

/// A loggable description of a `worker` error: the D1 cause where there is one.
pub fn describe_error(err: &worker::Error) -> String {
    match err {
        worker::Error::D1(d1) => d1.cause(),
        other => other.to_string(),
    }
}

/// True when the statement failed on a UNIQUE (or primary key) constraint.
pub fn is_unique_violation(err: &worker::Error) -> bool {
    describe_error(err).contains("UNIQUE constraint failed")
}

pub trait D1ResultExt<T> {
    /// Any D1 failure: log the cause, answer 500.
    fn or_internal(self) -> Result<T, ApiError>;
    /// A unique violation becomes `on_unique`; anything else is internal.
    fn on_unique(self, on_unique: impl FnOnce() -> ApiError) -> Result<T, ApiError>;
}

impl<T> D1ResultExt<T> for Result<T, worker::Error> {
    fn or_internal(self) -> Result<T, ApiError> {
        self.map_err(|err| {
            crate::log::error("d1 error", &describe_error(&err));
            ApiError::internal()
        })
    }

    fn on_unique(self, on_unique: impl FnOnce() -> ApiError) -> Result<T, ApiError> {
        match self {
            Err(err) if is_unique_violation(&err) => Err(on_unique()),
            other => other.or_internal(),
        }
    }
}

/// The rows of statement `index` of a batch, deserialised (none if it returned none).
pub fn rows<T>(results: &[worker::D1Result], index: usize) -> Result<Vec<T>, ApiError>
where
    T: for<'de> serde::Deserialize<'de>,
{
    match results.get(index) {
        Some(result) => result.results().or_internal(),
        None => Ok(Vec::new()),
    }
}

/// Bind values for D1. `None` binds as NULL.
pub fn text(value: &str) -> JsValue {
    JsValue::from_str(value)
}

pub fn opt_text(value: Option<&str>) -> JsValue {
    value.map_or(JsValue::NULL, JsValue::from_str)
}

pub fn int(value: i64) -> JsValue {
    // D1 numbers are JS doubles; every count and size here is far below 2^53.
    JsValue::from_f64(value as f64)
}

pub fn opt_int(value: Option<i64>) -> JsValue {
    value.map_or(JsValue::NULL, int)
}

/// The D1 binding for one request. Every execution goes through here, so each request's
/// round trips are counted and logged (`d1_queries` in the request log line).
pub struct Db<'a> {
    d1: worker::D1Database,
    queries: &'a std::cell::Cell<u32>,
}

impl<'a> Db<'a> {
    pub fn new(d1: worker::D1Database, queries: &'a std::cell::Cell<u32>) -> Self {
        Db { d1, queries }
    }

    pub fn prepare(&self, sql: &str) -> worker::D1PreparedStatement {
        self.d1.prepare(sql)
    }

    fn count(&self) {
        self.queries.set(self.queries.get() + 1);
    }

    /// The first row, deserialised; None when there is no row.
    pub async fn first<T>(&self, statement: worker::D1PreparedStatement) -> Result<Option<T>, ApiError>
    where
        T: for<'de> serde::Deserialize<'de>,
    {
        self.count();
        statement.first(None).await.or_internal()
    }

    /// Every row, deserialised.
    pub async fn all<T>(&self, statement: worker::D1PreparedStatement) -> Result<Vec<T>, ApiError>
    where
        T: for<'de> serde::Deserialize<'de>,
    {
        self.count();
        statement.all().await.or_internal()?.results().or_internal()
    }

    /// Runs a write; returns how many rows it changed. The raw error is kept so the caller
    /// can turn a constraint violation into a client error (`D1ResultExt::on_unique`).
    pub async fn run(&self, statement: worker::D1PreparedStatement) -> Result<usize, worker::Error> {
        self.count();
        let result = statement.run().await?;
        Ok(result.meta()?.and_then(|meta| meta.changes).unwrap_or(0))
    }

    /// Runs statements atomically in one round trip (all or nothing).
    pub async fn batch(
        &self,
        statements: Vec<worker::D1PreparedStatement>,
    ) -> Result<Vec<worker::D1Result>, worker::Error> {
        self.count();
        self.d1.batch(statements).await
    }
}
