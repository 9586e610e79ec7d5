//! The HTTP entry points of generations: `POST /v1/generate` and, in OpenAI's shape,
//! `POST /v1/images/generations` and `POST /v1/images/edits`; history
//! (`GET /v1/generations`, `GET /v1/generations/{id}`); and cancel. Handlers authenticate,
//! rate-limit, parse, claim the Idempotency-Key and answer; the work is the engine's.

use super::edits;
use super::engine::{self, Generation, Reserved};
use super::inputs::{self, InputSpec};
use super::notify;
use super::prefer::Preference;
use super::render::{self, GenerationList, GenerationRecord};
use super::request::{GenerationRequest, ResponseFormat, Shape};
use super::status::Status;
use super::store::{self, End, Reservation, Visible};
use crate::auth::{self, KeyMode};
use crate::body::JsonObject;
use crate::db::Batch;
use crate::error::{ApiError, ApiResult, Code};
use crate::http::{self, HeaderList, RequestContext};
use crate::idempotency::{self, Begin, IdempotencyKey, Scope, Stored};
use crate::{rate_limit, storage, usage};
use worker::{Request, Response};

/// The routes that make images, each a way into the same path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Generate,
    ImagesGenerations,
    ImagesEdits,
}

impl Entry {
    fn route(self) -> &'static str {
        match self {
            Entry::Generate => "POST /v1/generate",
            Entry::ImagesGenerations => "POST /v1/images/generations",
            Entry::ImagesEdits => "POST /v1/images/edits",
        }
    }

    fn shape(self) -> Shape {
        match self {
            Entry::Generate => Shape::Native,
            Entry::ImagesGenerations | Entry::ImagesEdits => Shape::OpenAi,
        }
    }

    /// The body's fields and its input images. Routes that take images read up to
    /// `GENERATION_BODY_LIMIT` (enforced as the body streams in); the other keeps 64 KiB.
    async fn read(self, req: &mut Request) -> ApiResult<(JsonObject, Vec<InputSpec>)> {
        match self {
            Entry::Generate => {
                crate::body::check_content_type(http::header(req, "content-type").as_deref())?;
                let raw = http::read_body(req, inputs::GENERATION_BODY_LIMIT).await?;
                let (body, images) = crate::body::parse_object_keeping(&raw, inputs::GENERATION_BODY_LIMIT, "images")?;
                let images = inputs::parse_raw(images)?;
                Ok((body, images))
            }
            Entry::ImagesGenerations => Ok((http::json_body(req).await?, Vec::new())),
            Entry::ImagesEdits => {
                let boundary = edits::boundary(http::header(req, "content-type").as_deref())?;
                let raw = http::read_body(req, inputs::GENERATION_BODY_LIMIT).await?;
                edits::read_form(&boundary, &raw)
            }
        }
    }
}

/// `POST /v1/generate`.
pub async fn generate(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    handle(req, rc, Entry::Generate).await
}

/// `POST /v1/images/generations`: the same path, OpenAI's shape.
pub async fn openai_images(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    handle(req, rc, Entry::ImagesGenerations).await
}

/// `POST /v1/images/edits`: the same path, OpenAI's edits form.
pub async fn openai_edits(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    handle(req, rc, Entry::ImagesEdits).await
}

/// `POST /v1/estimate`: what a `POST /v1/generate` body would cost, typically and at
/// worst (what its reservation would hold against the money budgets), at this deployment's
/// prices. Nothing is drawn, reserved or written; any key or account token may ask.
/// Inputs given by `generation_id` count at the largest size an input may have.
pub async fn estimate(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    let caller = auth::require_caller(req, rc).await?;
    let (body, images) = Entry::Generate.read(req).await?;
    let request = GenerationRequest::parse(body, images, &rc.config, Shape::Native)?;
    let sizes: Vec<_> = request
        .inputs
        .iter()
        .map(|spec| match spec {
            InputSpec::Inline(input) => (input.record.width, input.record.height),
            InputSpec::Generation { .. } => (None, None),
        })
        .collect();
    let mode = match &caller {
        auth::Caller::Key(principal) => principal.mode,
        auth::Caller::Account(_) => KeyMode::Live,
    };
    // A continued turn replays its conversation: the chain is read (and checked) too.
    let chain = match &request.previous {
        None => None,
        Some(previous) => {
            let added = request
                .inputs
                .iter()
                .map(|spec| match spec {
                    InputSpec::Inline(input) => input.record.bytes,
                    InputSpec::Generation { .. } => 0,
                })
                .sum();
            Some(super::chain::Chain::load(&rc.db()?, caller.user_id(), mode, previous, added).await?)
        }
    };
    let estimate = super::cost::Estimate::new(&request, &sizes, chain.as_ref(), &rc.config);
    let usage = |tokens: crate::metering::Tokens| {
        let tokens = tokens.times(request.n);
        render::Usage::new(tokens, tokens.cost(&estimate.prices), true, mode)
    };
    http::json(
        200,
        &render::Estimate {
            object: render::EstimateObject::Estimate,
            model: &request.model,
            resolution: request.output.resolution,
            n: request.n,
            input_images: sizes.len() as u32,
            typical: usage(estimate.call_typical),
            worst_case: usage(estimate.call_worst),
        },
    )
}

/// Every generation route: authenticate and rate-limit (one D1 round trip), then generate.
/// Every answer after authentication carries the rate-limit and quota headers, errors
/// included; a fresh generation's own (post-charge) quota headers win over the ones read
/// at authentication.
///
/// A small synchronous text-only request (the common one) is read before its key is
/// looked up, so that the lookup, the rate limit and the reservation share one round trip
/// ([`generate_folded`]); its answers are the same, in the same order of precedence.
async fn handle(req: &mut Request, rc: &RequestContext, entry: Entry) -> ApiResult<Response> {
    let key = auth::api_key(req)?;
    let mut body = None;
    if may_fold(&FoldFacts::of(req, rc, entry, key.mode())) {
        let read = entry.read(req).await;
        if let Some(request) = folded_request(&read, rc, entry) {
            if let Some(response) = generate_folded(req, rc, &key, entry, request).await? {
                return Ok(response);
            }
        }
        body = Some(read);
    }
    let (principal, limit) = rate_limit::authenticate(rc, &key).await?;
    let common = common_headers(&principal, limit);
    let result = match limit {
        Some(decision) if !decision.allowed => Err(decision.exceeded()),
        _ => generate_idempotently(req, rc, &principal, entry, body).await,
    };
    with_common_headers(result, &common)
}

/// What decides, before the body is read, whether a request may take the folded path.
#[derive(Debug, Clone, Copy)]
struct FoldFacts {
    entry: Entry,
    /// The declared `Content-Length`, if it is a number.
    content_length: Option<usize>,
    idempotency_key: bool,
    prefer: bool,
    mode: KeyMode,
    provider_configured: bool,
}

impl FoldFacts {
    fn of(req: &Request, rc: &RequestContext, entry: Entry, mode: KeyMode) -> FoldFacts {
        FoldFacts {
            entry,
            content_length: http::header(req, "content-length").and_then(|len| len.trim().parse().ok()),
            idempotency_key: http::header(req, idempotency::HEADER).is_some(),
            prefer: http::header(req, "prefer").is_some(),
            mode,
            provider_configured: rc.config.google_api_key().is_some(),
        }
    }
}

/// Whether a request may be read before its key is looked up: a JSON route, a declared
/// body of at most 64 KiB (so an unauthenticated client gets no more read than any JSON
/// route reads), no Idempotency-Key or Prefer header (they need the key first), and a key
/// whose provider is configured (else the refusal of that comes after authentication, as
/// it should).
fn may_fold(facts: &FoldFacts) -> bool {
    facts.entry != Entry::ImagesEdits
        && facts.content_length.is_some_and(|len| len <= crate::body::JSON_BODY_LIMIT)
        && !facts.idempotency_key
        && !facts.prefer
        && (facts.mode == KeyMode::Test || facts.provider_configured)
}

/// The request of a body read for the folded path, if it is one the path takes: valid,
/// text only, and synchronous (no webhook). Anything else goes the ordinary way, which
/// authenticates before it says what is wrong with the body.
fn folded_request(
    read: &ApiResult<(JsonObject, Vec<InputSpec>)>,
    rc: &RequestContext,
    entry: Entry,
) -> Option<GenerationRequest> {
    let (fields, images) = read.as_ref().ok()?;
    if !images.is_empty() {
        return None;
    }
    let request = GenerationRequest::parse(fields.clone(), Vec::new(), &rc.config, entry.shape()).ok()?;
    (request.webhook_url.is_none() && request.previous.is_none()).then_some(request)
}

/// A synchronous text-only generation whose key lookup, rate limit and reservation (with
/// its record) are one D1 batch; then the engine draws and finishes it. None when an
/// account or deployment ceiling refused the reservation: that rolls the whole batch
/// back, the lookup included, so the ordinary path runs and says which.
async fn generate_folded(
    req: &Request,
    rc: &RequestContext,
    key: &auth::ApiKey,
    entry: Entry,
    request: GenerationRequest,
) -> ApiResult<Option<Response>> {
    let origin = http::origin(req)?;
    let db = rc.db()?;
    let (id, day) = (engine::new_id()?, crate::time::date_from_millis(rc.now_ms));
    let now_iso = crate::time::iso_from_millis(rc.now_ms);
    let key_hash = key.hash();
    let worst = super::cost::Estimate::of(&request, &[], None, &rc.config).worst_cost();
    let mut batch = Batch::new();
    let pending = auth::PendingKey::push(rc, key, &mut batch)?;
    let take = rate_limit::Take::push(&mut batch, &db, &key_hash, rc.config.rate_limit_per_minute, rc.now_ms)?;
    let reserved = Reservation {
        id: &id,
        key: usage::KeyRef::Hash(&key_hash),
        after_rate_take: take.is_some(),
        mode: key.mode(),
        day: &day,
        created_iso: &now_iso,
        reserved_iso: &now_iso,
        request: &request,
        input_records: &[],
        status: Status::Pending,
        worst,
        conversation_id: None,
    }
    .push(&mut batch, &db, &rc.config)?;
    let results = match db.batch(batch).await {
        Ok(results) => results,
        Err(err) => {
            let cause = crate::error::describe_worker_error(&err);
            return match usage::is_ceiling(&cause) {
                true => Ok(None),
                false => Err(ApiError::internal(cause)),
            };
        }
    };
    let principal = pending.resolve(rc, &results)?;
    let limit = take.map(|take| take.decide(&results)).transpose()?;
    let common = common_headers(&principal, limit);
    let result = async {
        if let Some(decision) = limit.filter(|decision| !decision.allowed) {
            return Err(decision.exceeded());
        }
        let used_after = store::reserved_count(results.first(reserved)?, &principal, (request.n, worst), rc.now_ms)?;
        let reserved = Reserved::folded(rc, db, &principal, request, (id, day, worst), origin, used_after);
        let generated = reserved.finish(Vec::new()).await?;
        Ok((http::json_text(200, generated.render(entry.shape())?)?, generated.quota_headers().to_vec()))
    };
    with_common_headers(result.await, &common).map(Some)
}

/// The rate-limit headers and the quota read at authentication, for every answer after it.
fn common_headers(principal: &auth::KeyPrincipal, limit: Option<rate_limit::Decision>) -> HeaderList {
    let mut common: HeaderList = limit.map(|d| d.headers().to_vec()).unwrap_or_default();
    common.push(("x-quota-limit-images", principal.daily_quota.to_string()));
    common.push(("x-quota-remaining-images", principal.daily_quota.saturating_sub(principal.used_today).to_string()));
    common
}

/// The answer with the common headers added wherever it did not set its own.
fn with_common_headers(result: ApiResult<(Response, HeaderList)>, common: &HeaderList) -> ApiResult<Response> {
    match result {
        Ok((mut response, mut headers)) => {
            http::add_missing(&mut headers, common);
            http::set_headers(&mut response, &headers)?;
            Ok(response)
        }
        Err(mut err) => {
            http::add_missing(&mut err.headers, common);
            Err(err)
        }
    }
}

/// Parses the request (read already, if `body` is Some), claims its Idempotency-Key, runs
/// the generation and records the answer. Returns the response and the headers it sets itself.
async fn generate_idempotently(
    req: &mut Request,
    rc: &RequestContext,
    principal: &auth::KeyPrincipal,
    entry: Entry,
    body: Option<ApiResult<(JsonObject, Vec<InputSpec>)>>,
) -> ApiResult<(Response, HeaderList)> {
    let idempotency_key = IdempotencyKey::parse(http::header(req, idempotency::HEADER).as_deref())?;
    let (body, images) = match body {
        Some(read) => read?,
        None => entry.read(req).await?,
    };
    let (route, shape) = (entry.route(), entry.shape());
    let fingerprint = idempotency::fingerprint_with(route, &body, &inputs::fingerprint_parts(&images));
    let request = GenerationRequest::parse(body, images, &rc.config, shape)?;
    let origin = http::origin(req)?;
    let preference = Preference::parse(http::header(req, "prefer").as_deref());
    let asynchronous = preference.is_async() || request.webhook_url.is_some();
    if asynchronous && request.response_format == ResponseFormat::B64Json {
        return Err(ApiError::validation(
            Code::ConflictingParameters,
            "response_format",
            "b64_json is for synchronous requests: an asynchronous generation's images are fetched by URL",
        ));
    }
    if request.webhook_url.is_some() {
        notify::require_webhook_secret(rc, &principal.user_id).await?;
    }
    let scope = Scope::Key { key_id: &principal.key_id, user_id: &principal.user_id };
    let claim = match idempotency::begin(rc, idempotency_key, scope, route, &fingerprint).await? {
        Begin::Replay(Stored::Body { status, body }) => return Ok((idempotency::replay(status, body)?, Vec::new())),
        Begin::Replay(Stored::Generation { generation_id }) => {
            let generated = engine::replay(rc, principal, request, &generation_id, &origin).await?;
            let mut response = http::json_text(200, generated.render(shape)?)?;
            idempotency::mark_replayed(&mut response)?;
            return Ok((response, Vec::new()));
        }
        Begin::Proceed(claim) => claim,
    };
    if asynchronous {
        let answered = match Generation::new(rc, principal, request, origin.clone()) {
            Ok(generation) => match generation.enqueue().await {
                Ok((id, quota_headers)) => {
                    answer(rc, &origin, &id, &preference).await.map(|(status, body, mut headers)| {
                        headers.extend(quota_headers);
                        (status, body, headers)
                    })
                }
                Err(err) => Err(err),
            },
            Err(err) => Err(err),
        };
        let stored = match &answered {
            Ok((status, body, _)) => Ok(Stored::Body { status: *status, body: body.clone() }),
            Err(err) => Err(err.clone()),
        };
        idempotency::finish(rc, claim, stored).await;
        let (status, body, headers) = answered?;
        return Ok((http::json_text(status, body)?, headers));
    }
    let outcome = match Generation::new(rc, principal, request, origin) {
        Ok(generation) => generation.run().await,
        Err(err) => Err(err),
    };
    let stored = match &outcome {
        Ok(generated) => Ok(Stored::Generation { generation_id: generated.id.clone() }),
        Err(err) => Err(err.clone()),
    };
    idempotency::finish(rc, claim, stored).await;
    let generated = outcome?;
    Ok((http::json_text(200, generated.render(shape)?)?, generated.quota_headers().to_vec()))
}

/// How often `Prefer: wait=N` looks at the generation again (one D1 read each).
const POLL_INTERVAL_MS: u64 = 500;

/// The answer to an accepted asynchronous request: 202 with the generation and its
/// `Location`, or, with `Prefer: wait=N`, 200 once it is final if that happens within N
/// seconds. Returns status, body and headers.
async fn answer(
    rc: &RequestContext,
    origin: &str,
    generation_id: &str,
    preference: &Preference,
) -> ApiResult<(u16, String, HeaderList)> {
    let deadline = crate::time::now_millis() + u64::from(preference.wait_seconds.unwrap_or(0)) * 1000;
    let mut record = accepted(rc, origin, generation_id).await?;
    while !record.status().is_final() && crate::time::now_millis() + POLL_INTERVAL_MS <= deadline {
        worker::Delay::from(std::time::Duration::from_millis(POLL_INTERVAL_MS)).await;
        record = accepted(rc, origin, generation_id).await?;
    }
    let status = if record.status().is_final() && preference.wait_seconds.is_some() { 200 } else { 202 };
    let headers =
        vec![("location", format!("/v1/generations/{generation_id}")), ("preference-applied", preference.applied())];
    Ok((status, http::to_json(&record)?, headers))
}

/// An accepted generation's record (it has one: it was just written).
async fn accepted(rc: &RequestContext, origin: &str, generation_id: &str) -> ApiResult<GenerationRecord> {
    let row = store::load(&rc.db()?, generation_id, &Visible::Anyone).await?;
    let row = row.ok_or_else(|| ApiError::internal("an accepted generation has no record"))?;
    render::record(rc, origin, row)
}

// ---------------------------------------------------------------- history

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// `limit` from the query: 1 to 100, default 20.
pub fn parse_limit(raw: Option<&str>) -> ApiResult<u32> {
    let Some(raw) = raw else { return Ok(DEFAULT_LIMIT) };
    let limit: u32 =
        raw.parse().map_err(|_| ApiError::validation(Code::InvalidType, "limit", "limit must be an integer"))?;
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::validation(Code::OutOfRange, "limit", format!("limit must be from 1 to {MAX_LIMIT}")))
    }
}

/// `GET /v1/generations`: a page of the caller's history, newest first. An account sees
/// every key's generations, an API key its own.
pub async fn list(req: &mut Request, rc: &RequestContext) -> ApiResult<Response> {
    let conversation = http::query_param(req, "conversation_id")?.filter(|c| !c.is_empty());
    let params =
        match (parse_limit(http::query_param(req, "limit")?.as_deref()), http::query_param(req, "starting_after")) {
            (Ok(limit), Ok(cursor)) => Ok((limit, cursor.filter(|c| !c.is_empty()))),
            (Err(err), _) | (_, Err(err)) => Err(err),
        };
    let db = rc.db()?;
    let mut batch = Batch::new();
    // An API key is looked up in the page's own batch: one D1 round trip for both. Its
    // rows are read only once the key is accepted. Anything else authenticates first, and
    // so does a request with bad parameters (who is asking is said before what is wrong).
    let key = auth::api_key_credential(req)?.filter(|_| params.is_ok());
    let key_hash = key.as_ref().map(auth::ApiKey::hash);
    let caller;
    let (pending, visible) = match (&key, &key_hash) {
        (Some(key), Some(hash)) => (Some(auth::PendingKey::push(rc, key, &mut batch)?), Visible::KeyHash(hash)),
        _ => {
            caller = auth::require_caller(req, rc).await?;
            (None, Visible::Caller { user_id: caller.user_id(), key_id: caller.key_id() })
        }
    };
    let (limit, cursor) = params?;
    let (page, cursor_check) =
        store::push_page(&mut batch, &db, &visible, (cursor.as_deref(), conversation.as_deref()), limit)?;
    let results = db.batch(batch).await.map_err(ApiError::from)?;
    if let Some(pending) = pending {
        pending.resolve(rc, &results)?;
    }
    if cursor.is_some() && results.first(cursor_check)?.is_none_or(|f| f.found == 0) {
        return Err(ApiError::invalid_value(
            "starting_after",
            "starting_after must be the id of one of your generations",
        ));
    }
    let mut rows = results.rows(page)?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let origin = http::origin(req)?;
    let data = rows.into_iter().map(|row| render::record(rc, &origin, row)).collect::<ApiResult<Vec<_>>>()?;
    http::json(200, &GenerationList::new(data, has_more))
}

/// `GET /v1/generations/{id}`; anyone else's is 404.
pub async fn get(req: &mut Request, rc: &RequestContext, id: &str) -> ApiResult<Response> {
    let caller = auth::require_caller(req, rc).await?;
    let record = visible_record(rc, &http::origin(req)?, id, &caller).await?;
    http::json(200, &record)
}

fn not_found() -> ApiError {
    ApiError::not_found("no generation with this id")
}

async fn visible_record(
    rc: &RequestContext,
    origin: &str,
    id: &str,
    caller: &auth::Caller,
) -> ApiResult<GenerationRecord> {
    let visible = Visible::Caller { user_id: caller.user_id(), key_id: caller.key_id() };
    let row = store::load(&rc.db()?, id, &visible).await?.ok_or_else(not_found)?;
    render::record(rc, origin, row)
}

// ---------------------------------------------------------------- cancel

/// `POST /v1/generations/{id}/cancel`: a queued generation becomes `canceled` and its
/// reservation comes back; once running or final it is 409 `not_cancelable`.
pub async fn cancel(req: &mut Request, rc: &RequestContext, generation_id: &str) -> ApiResult<Response> {
    let caller = auth::require_caller(req, rc).await?;
    let origin = http::origin(req)?;
    let visible = visible_record(rc, &origin, generation_id, &caller).await?;
    let now_iso = crate::time::iso_from_millis(rc.now_ms);
    let (canceled, before) = store::end(&rc.db()?, visible.id(), &End::new(Status::Canceled, None, &now_iso)).await?;
    if !canceled {
        let status = before.map_or("", |b| b.status.as_str());
        return Err(ApiError::new(
            Code::NotCancelable,
            format!("only a queued generation can be canceled; this one is {status}"),
        ));
    }
    let record = visible_record(rc, &origin, generation_id, &caller).await?;
    if let Some(bucket) = storage::bucket(rc) {
        storage::delete_inputs(&bucket, generation_id, record.input_count()).await;
    }
    http::json(200, &record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(parse_limit(None).unwrap(), 20);
        assert_eq!(parse_limit(Some("1")).unwrap(), 1);
        assert_eq!(parse_limit(Some("100")).unwrap(), 100);
        assert_eq!(parse_limit(Some("0")).unwrap_err().code.as_str(), "out_of_range");
        assert_eq!(parse_limit(Some("101")).unwrap_err().code.as_str(), "out_of_range");
        assert_eq!(parse_limit(Some("ten")).unwrap_err().code.as_str(), "invalid_type");
        assert_eq!(parse_limit(Some("-1")).unwrap_err().param.as_deref(), Some("limit"));
    }

    fn facts() -> FoldFacts {
        FoldFacts {
            entry: Entry::Generate,
            content_length: Some(40),
            idempotency_key: false,
            prefer: false,
            mode: KeyMode::Live,
            provider_configured: true,
        }
    }

    #[test]
    fn a_small_plain_json_request_folds() {
        assert!(may_fold(&facts()));
        assert!(may_fold(&FoldFacts { entry: Entry::ImagesGenerations, ..facts() }));
        assert!(may_fold(&FoldFacts { content_length: Some(crate::body::JSON_BODY_LIMIT), ..facts() }));
        assert!(may_fold(&FoldFacts { mode: KeyMode::Test, provider_configured: false, ..facts() }));
    }

    #[test]
    fn what_needs_the_key_first_does_not_fold() {
        let refused = [
            ("multipart edits", FoldFacts { entry: Entry::ImagesEdits, ..facts() }),
            ("over 64 KiB", FoldFacts { content_length: Some(crate::body::JSON_BODY_LIMIT + 1), ..facts() }),
            ("no declared length (chunked)", FoldFacts { content_length: None, ..facts() }),
            ("an Idempotency-Key", FoldFacts { idempotency_key: true, ..facts() }),
            ("a Prefer header", FoldFacts { prefer: true, ..facts() }),
            ("a live key with no provider", FoldFacts { provider_configured: false, ..facts() }),
        ];
        for (why, facts) in refused {
            assert!(!may_fold(&facts), "{why} must take the ordinary path");
        }
    }
}
