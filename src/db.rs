//! The D1 binding for one request: every execution goes through [`Db`], which counts
//! round trips (`d1_queries` in the request log line) and turns D1 failures into
//! [`ApiError`]s that keep their cause for the log. Batches are typed: each statement
//! pushed returns a [`Slot`] that reads its own rows back, so nobody counts positions.

use crate::error::{describe_worker_error, ApiError};
use std::marker::PhantomData;
use worker::wasm_bindgen::JsValue;

/// True when the statement failed on a UNIQUE (or primary key) constraint.
pub fn is_unique_violation(err: &worker::Error) -> bool {
    describe_worker_error(err).contains("UNIQUE constraint failed")
}

pub trait D1ResultExt<T> {
    /// Any D1 failure: a 500 that carries the cause.
    fn or_internal(self) -> Result<T, ApiError>;
    /// A unique violation becomes `on_unique`; anything else is internal.
    fn on_unique(self, on_unique: impl FnOnce() -> ApiError) -> Result<T, ApiError>;
}

impl<T> D1ResultExt<T> for Result<T, worker::Error> {
    fn or_internal(self) -> Result<T, ApiError> {
        self.map_err(ApiError::from)
    }

    fn on_unique(self, on_unique: impl FnOnce() -> ApiError) -> Result<T, ApiError> {
        match self {
            Err(err) if is_unique_violation(&err) => Err(on_unique()),
            other => other.or_internal(),
        }
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
    log_sql: bool,
}

impl<'a> Db<'a> {
    /// `log_sql` (the `LOG_SQL` setting, for the test suite) logs every statement's text,
    /// never its values, so a test can `EXPLAIN QUERY PLAN` each one.
    pub fn new(d1: worker::D1Database, queries: &'a std::cell::Cell<u32>, log_sql: bool) -> Self {
        Db { d1, queries, log_sql }
    }

    pub fn prepare(&self, sql: &str) -> worker::D1PreparedStatement {
        if self.log_sql {
            crate::log::info("sql", sql);
        }
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

    /// Runs a batch atomically in one round trip (all or nothing).
    pub async fn batch(&self, batch: Batch) -> Result<BatchResults, worker::Error> {
        self.count();
        Ok(BatchResults(self.d1.batch(batch.statements).await?))
    }
}

/// Statements to run as one atomic batch. Each `push` returns the slot its rows are read
/// back from, typed with the row it yields.
#[derive(Default)]
pub struct Batch {
    statements: Vec<worker::D1PreparedStatement>,
}

/// Where one statement's results sit in a batch, and what its rows deserialise to.
pub struct Slot<T> {
    index: usize,
    row: PhantomData<fn() -> T>,
}

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Slot<T> {}

/// A statement whose rows nobody reads (a write without RETURNING).
pub type Write = Slot<()>;

impl Batch {
    pub fn new() -> Self {
        Batch::default()
    }

    pub fn push<T>(&mut self, statement: worker::D1PreparedStatement) -> Slot<T> {
        self.statements.push(statement);
        Slot { index: self.statements.len() - 1, row: PhantomData }
    }

    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }
}

pub struct BatchResults(Vec<worker::D1Result>);

impl BatchResults {
    /// Every row of the statement in `slot`.
    pub fn rows<T>(&self, slot: Slot<T>) -> Result<Vec<T>, ApiError>
    where
        T: for<'de> serde::Deserialize<'de>,
    {
        match self.0.get(slot.index) {
            Some(result) => result.results().or_internal(),
            None => Ok(Vec::new()),
        }
    }

    /// The first row of the statement in `slot`, if it returned any.
    pub fn first<T>(&self, slot: Slot<T>) -> Result<Option<T>, ApiError>
    where
        T: for<'de> serde::Deserialize<'de>,
    {
        Ok(self.rows(slot)?.into_iter().next())
    }

    /// How many rows the statement in `slot` changed.
    pub fn changes<T>(&self, slot: Slot<T>) -> usize {
        self.0.get(slot.index).and_then(|r| r.meta().ok().flatten()).and_then(|m| m.changes).unwrap_or(0)
    }
}
