//! The D1 binding for one request: every execution goes through [`Db`], which counts
//! round trips (`d1_queries` in the request log line) and turns D1 failures into
//! [`ApiError`]s that keep their cause for the log. Batches are typed: each statement
//! pushed returns a [`Slot`] that reads its own rows back, so nobody counts positions.

use crate::error::{describe_worker_error, ApiError};
use std::marker::PhantomData;
use worker::js_sys;
use worker::wasm_bindgen::JsCast;
pub use worker::wasm_bindgen::JsValue;

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

/// One row as D1 returns it: a JS object from column name to value.
///
/// Rows are read column by column ([`Row::get`]) into structs declared with [`row!`],
/// not through serde: serde_wasm_bindgen compiled a deserializer into the wasm for every
/// row type (70 KB in all) and turned each column name into a Rust string to match it.
pub struct Row(JsValue);

impl Row {
    /// A row object as D1 hands it over.
    pub fn from_object(object: JsValue) -> Row {
        Row(object)
    }

    /// The value of `column`, or a 500 naming the column when it is missing or of
    /// another type (a schema and code out of step).
    pub fn get<T: Column>(&self, column: &'static str) -> Result<T, ApiError> {
        let mut missing = None;
        let value = self.take(column, &mut missing);
        row_or_error(value, missing)
    }

    /// The value of `column`; when it is missing or of another type, a stand-in, and the
    /// column is noted in `missing` ([`row!`] turns that into the error). Reading every
    /// field this way, with no early return, spares each row type the code that drops the
    /// fields read before a failing one: a third of their size.
    pub fn take<T: Column>(&self, column: &'static str, missing: &mut Option<&'static str>) -> T {
        match T::from_js(&self.value(column)) {
            Some(value) => value,
            None => {
                missing.get_or_insert(column);
                T::stand_in()
            }
        }
    }

    // Not generic and not inlined: every field of every row type calls this one copy.
    #[inline(never)]
    fn value(&self, column: &str) -> JsValue {
        js_sys::Reflect::get(&self.0, &JsValue::from_str(column)).unwrap_or(JsValue::UNDEFINED)
    }
}

/// A row read by [`row!`], or a 500 naming the first column that could not be read.
pub fn row_or_error<T>(row: T, missing: Option<&'static str>) -> Result<T, ApiError> {
    match missing {
        None => Ok(row),
        Some(column) => Err(unexpected_value(column)),
    }
}

#[cold]
#[inline(never)]
fn unexpected_value(column: &str) -> ApiError {
    ApiError::internal(format!("D1 column {column}: unexpected value"))
}

/// A type one D1 column converts to. NULL is only accepted by `Option`.
pub trait Column: Sized {
    fn from_js(value: &JsValue) -> Option<Self>;
    /// What [`Row::take`] puts in a field it could not read (never seen by a caller: the
    /// row is then an error).
    fn stand_in() -> Self;
}

impl Column for String {
    fn from_js(value: &JsValue) -> Option<Self> {
        value.as_string()
    }

    fn stand_in() -> Self {
        String::new()
    }
}

impl Column for i64 {
    /// D1 integers arrive as JS numbers; only whole numbers a double holds exactly.
    fn from_js(value: &JsValue) -> Option<Self> {
        integer(value.as_f64()?)
    }

    fn stand_in() -> Self {
        0
    }
}

/// A JS number as an integer: whole and within ±2^53, else None.
fn integer(number: f64) -> Option<i64> {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    (number.fract() == 0.0 && number.abs() <= EXACT).then_some(number as i64)
}

macro_rules! narrow_column {
    ($($ty:ty),*) => {$(
        impl Column for $ty {
            fn from_js(value: &JsValue) -> Option<Self> {
                i64::from_js(value)?.try_into().ok()
            }

            fn stand_in() -> Self {
                0
            }
        }
    )*};
}
narrow_column!(u16, u32, u64);

/// Money columns hold micro-dollars (never negative).
impl Column for crate::metering::Micros {
    fn from_js(value: &JsValue) -> Option<Self> {
        u64::from_js(value).map(crate::metering::Micros)
    }

    fn stand_in() -> Self {
        crate::metering::Micros(0)
    }
}

impl<T: Column> Column for Option<T> {
    fn from_js(value: &JsValue) -> Option<Self> {
        if value.is_null() || value.is_undefined() {
            Some(None)
        } else {
            T::from_js(value).map(Some)
        }
    }

    fn stand_in() -> Self {
        None
    }
}

/// A text column holding one of an enum's names (`as_str`): `text_column!(Role: Role::User, Role::Admin)`.
macro_rules! text_column {
    ($ty:ty: $first:expr $(, $variant:expr)*) => {
        impl $crate::db::Column for $ty {
            fn from_js(value: &$crate::db::JsValue) -> Option<Self> {
                let text = value.as_string()?;
                [$first $(, $variant)*].into_iter().find(|variant| variant.as_str() == text)
            }

            fn stand_in() -> Self {
                $first
            }
        }
    };
}
pub(crate) use text_column;

/// A struct D1 rows are read into; written by [`row!`].
pub trait FromRow: Sized {
    fn from_row(row: &Row) -> Result<Self, ApiError>;
}

/// Declares a struct and reads it from a D1 row, each field from the column of its name:
/// `row! { struct Found { found: i64 } }`.
macro_rules! row {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$field_meta:meta])* $field_vis:vis $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[$field_meta])* $field_vis $field : $ty ),*
        }

        impl $crate::db::FromRow for $name {
            fn from_row(_row: &$crate::db::Row) -> Result<Self, $crate::error::ApiError> {
                #[allow(unused_mut)] // a row type with no fields
                let mut missing = None;
                let read = $name { $( $field: _row.take(stringify!($field), &mut missing) ),* };
                $crate::db::row_or_error(read, missing)
            }
        }
    };
}
pub(crate) use row;

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

    /// The first row; None when there is no row.
    pub async fn first<T: FromRow>(&self, statement: worker::D1PreparedStatement) -> Result<Option<T>, ApiError> {
        match self.first_row(statement).await? {
            Some(row) => T::from_row(&row).map(Some),
            None => Ok(None),
        }
    }

    /// [`Db::first`] before its row is read: one copy for every row type.
    async fn first_row(&self, statement: worker::D1PreparedStatement) -> Result<Option<Row>, ApiError> {
        self.count();
        let row = settle(statement.inner().first(None)).await?;
        Ok((!(row.is_null() || row.is_undefined())).then_some(Row(row)))
    }

    /// Every row.
    pub async fn all<T: FromRow>(&self, statement: worker::D1PreparedStatement) -> Result<Vec<T>, ApiError> {
        rows_of(&self.all_rows(statement).await?)
    }

    /// [`Db::all`] before its rows are read: one copy for every row type.
    async fn all_rows(&self, statement: worker::D1PreparedStatement) -> Result<JsValue, ApiError> {
        self.count();
        Ok(settle(statement.inner().all()).await?)
    }

    /// Runs a write; returns how many rows it changed. The raw error is kept so the caller
    /// can turn a constraint violation into a client error (`D1ResultExt::on_unique`).
    pub async fn run(&self, statement: worker::D1PreparedStatement) -> Result<usize, worker::Error> {
        self.count();
        Ok(changes_of(&settle(statement.inner().run()).await?))
    }

    /// Runs a batch atomically in one round trip (all or nothing).
    pub async fn batch(&self, batch: Batch) -> Result<BatchResults, worker::Error> {
        self.count();
        let statements: js_sys::Array = batch.statements.iter().map(|statement| statement.inner().clone()).collect();
        let database: &worker::worker_sys::D1Database = self.d1.unchecked_ref();
        let results = settle(database.batch(statements)).await?;
        Ok(BatchResults(results.dyn_into::<js_sys::Array>()?))
    }
}

/// Awaits a D1 promise. A rejection keeps D1's own words (its message and, when there is
/// one, its cause's), so a UNIQUE violation can be told apart and the log says what failed.
async fn settle(promise: Result<js_sys::Promise, JsValue>) -> Result<JsValue, worker::Error> {
    let outcome = match promise {
        Ok(promise) => worker::wasm_bindgen_futures::JsFuture::from(promise).await,
        Err(err) => Err(err),
    };
    outcome.map_err(|err| {
        let message = |value: &JsValue| value.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message()));
        let cause = err.dyn_ref::<js_sys::Error>().and_then(|e| message(&e.cause()));
        worker::Error::RustError(match (message(&err), cause) {
            (Some(outer), Some(cause)) if !outer.contains(&cause) => format!("{outer}: {cause}"),
            (Some(outer), _) => outer,
            (None, _) => err.as_string().unwrap_or_else(|| "D1 failed with a non-Error value".to_string()),
        })
    })
}

/// The rows of one D1 result object (`{results: [...], meta: {...}}`).
fn rows_of<T: FromRow>(result: &JsValue) -> Result<Vec<T>, ApiError> {
    results_of(result).iter().map(|row| T::from_row(&Row(row))).collect()
}

/// The `results` array of a D1 result object (empty when absent). Apart from the generic
/// readers, which are instantiated for every row type.
#[inline(never)]
fn results_of(result: &JsValue) -> js_sys::Array {
    js_sys::Reflect::get(result, &JsValue::from_str("results"))
        .ok()
        .and_then(|rows| rows.dyn_into::<js_sys::Array>().ok())
        .unwrap_or_default()
}

/// `meta.changes` of one D1 result object (0 when absent).
fn changes_of(result: &JsValue) -> usize {
    let meta = Row(Row(result.clone()).value("meta"));
    meta.get::<u64>("changes").ok().and_then(|changes| usize::try_from(changes).ok()).unwrap_or(0)
}

/// Statements to run as one atomic batch. Each `push` returns the slot its rows are read
/// back from, typed with the row it yields.
#[derive(Default)]
pub struct Batch {
    statements: Vec<worker::D1PreparedStatement>,
}

/// Where one statement's results sit in a batch, and what its rows read into.
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

/// The result objects of a batch, in statement order.
pub struct BatchResults(js_sys::Array);

impl BatchResults {
    fn result<T>(&self, slot: Slot<T>) -> JsValue {
        self.0.get(slot.index as u32)
    }

    /// Every row of the statement in `slot`.
    pub fn rows<T: FromRow>(&self, slot: Slot<T>) -> Result<Vec<T>, ApiError> {
        rows_of(&self.result(slot))
    }

    /// The first row of the statement in `slot`, if it returned any.
    pub fn first<T: FromRow>(&self, slot: Slot<T>) -> Result<Option<T>, ApiError> {
        let row = results_of(&self.result(slot)).get(0);
        if row.is_undefined() {
            return Ok(None);
        }
        T::from_row(&Row(row)).map(Some)
    }

    /// How many rows the statement in `slot` changed.
    pub fn changes<T>(&self, slot: Slot<T>) -> usize {
        changes_of(&self.result(slot))
    }
}
