//! `Idempotency-Key` on the POST routes that create things (`/v1/generate`,
//! `/v1/images/generations`, `/v1/keys`). Owns the `idempotency_keys` table.
//!
//! Scoped to the credential that made the request: an API key's records are that key's,
//! an account token's are the account's, so one key can never replay another's result.
//! The first request with a key records its route and a fingerprint of its (canonical)
//! body, runs, and stores what is needed to answer again. Then:
//! - same key, same route and body: the same answer again, `Idempotent-Replayed: true`,
//!   with no second upstream call or charge;
//! - same key, another body or route: 422 `idempotency_key_reused`;
//! - same key while the first is still running: 409 `idempotency_in_progress`;
//! - 5xx and 429 outcomes are not stored (the record is dropped), so a retry really retries;
//!   requests refused by validation never create a record;
//! - records expire after 24 hours; a record left `in_progress` for 10 minutes (its Worker
//!   died) is abandoned and may be taken over.
//!
//! What is stored is never a secret nor image bytes: a generation is stored as its id (the
//! answer is rendered again from D1 and R2, with fresh URLs), a created key without the key.

use crate::body::JsonObject;
use crate::db::{self, Batch, D1ResultExt};
use crate::error::{ApiError, ApiResult, Code};
use crate::http::RequestContext;
use hmac_sha256::Hash as Sha256;
use worker::Response;

pub const HEADER: &str = "idempotency-key";
const TTL_MS: u64 = 24 * 3600 * 1000;
const ABANDONED_AFTER_MS: u64 = 10 * 60 * 1000;

/// A valid `Idempotency-Key` header value: 1 to 255 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(header: Option<&str>) -> ApiResult<Option<IdempotencyKey>> {
        let Some(value) = header else { return Ok(None) };
        let valid = !value.is_empty() && value.len() <= 255 && value.bytes().all(|b| (0x20..=0x7e).contains(&b));
        if valid {
            Ok(Some(IdempotencyKey(value.to_string())))
        } else {
            Err(ApiError::new(
                Code::InvalidIdempotencyKey,
                "Idempotency-Key must be 1 to 255 printable ASCII characters",
            )
            .with_param("Idempotency-Key"))
        }
    }
}

/// SHA-256 of the route and the body with its keys sorted, so formatting does not matter.
pub fn fingerprint(route: &str, body: &JsonObject) -> String {
    fingerprint_with(route, body, &[])
}

/// [`fingerprint`] plus parts of the request kept outside the JSON body (the digests of
/// input images, rather than their base64 text). With none, the same as `fingerprint`.
pub fn fingerprint_with(route: &str, body: &JsonObject, extra: &[String]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update(b"\n");
    body.write_canonical(HashWriter(&mut hasher));
    for part in extra {
        hasher.update(b"\n");
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Feeds what is written into a SHA-256, so a body is hashed as it serialises.
struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whose records these are: the credential that made the request.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// An account token (of this user id).
    Account(&'a str),
    /// An API key (of this key id), acting for `user_id`.
    Key { key_id: &'a str, user_id: &'a str },
}

impl Scope<'_> {
    fn name(&self) -> String {
        match self {
            Scope::Account(user_id) => format!("account:{user_id}"),
            Scope::Key { key_id, .. } => format!("key:{key_id}"),
        }
    }

    fn user_id(&self) -> &str {
        match self {
            Scope::Account(user_id) | Scope::Key { user_id, .. } => user_id,
        }
    }
}

/// A claimed key: the request runs, and `finish` records what it answered.
pub struct Claim {
    scope: String,
    key: String,
}

/// What a finished request left to answer with again.
#[derive(Debug, PartialEq)]
pub enum Stored {
    /// A JSON body, as sent (an error envelope, a created key without its key).
    Body { status: u16, body: String },
    /// A generation: its answer is rendered again from its record.
    Generation { generation_id: String },
}

pub enum Begin {
    Proceed(Option<Claim>),
    Replay(Stored),
}

crate::db::row! {
    /// The row `RETURNING 1 AS claimed` gives when this request took the key.
    struct Claimed {}
}

crate::db::row! {
    struct Record {
        route: String,
        fingerprint: String,
        state: String,
        response_status: Option<u16>,
        response_body: Option<String>,
        generation_id: Option<String>,
    }
}

/// Claims the key for this request, or says how to answer instead. One D1 round trip.
pub async fn begin(
    rc: &RequestContext,
    key: Option<IdempotencyKey>,
    scope: Scope<'_>,
    route: &str,
    fingerprint: &str,
) -> ApiResult<Begin> {
    let Some(IdempotencyKey(key)) = key else { return Ok(Begin::Proceed(None)) };
    let scope_name = scope.name();
    let db = rc.db()?;
    let now = rc.now_ms as i64;
    let expired_before = now - TTL_MS as i64;
    let abandoned_before = now - ABANDONED_AFTER_MS as i64;
    let mut batch = Batch::new();
    batch.push::<()>(
        db.prepare("DELETE FROM idempotency_keys WHERE created_at_ms <= ?1").bind(&[db::int(expired_before)])?,
    );
    let claimed = batch.push::<Claimed>(
        db.prepare(
            "INSERT INTO idempotency_keys (scope, idempotency_key, user_id, route, fingerprint, state, created_at_ms)
             VALUES (?1, ?2, ?7, ?3, ?4, 'in_progress', ?5)
             ON CONFLICT (scope, idempotency_key) DO UPDATE SET
                 route = excluded.route, fingerprint = excluded.fingerprint, state = 'in_progress',
                 response_status = NULL, response_body = NULL, generation_id = NULL,
                 created_at_ms = excluded.created_at_ms
             WHERE idempotency_keys.state = 'in_progress' AND idempotency_keys.created_at_ms <= ?6
             RETURNING 1 AS claimed",
        )
        .bind(&[
            db::text(&scope_name),
            db::text(&key),
            db::text(route),
            db::text(fingerprint),
            db::int(now),
            db::int(abandoned_before),
            db::text(scope.user_id()),
        ])?,
    );
    let existing = batch.push::<Record>(
        db.prepare(
            "SELECT route, fingerprint, state, response_status, response_body, generation_id FROM idempotency_keys
             WHERE scope = ?1 AND idempotency_key = ?2",
        )
        .bind(&[db::text(&scope_name), db::text(&key)])?,
    );
    let results = db.batch(batch).await.or_internal()?;
    if results.first(claimed)?.is_some() {
        return Ok(Begin::Proceed(Some(Claim { scope: scope_name, key })));
    }
    let record =
        results.first(existing)?.ok_or_else(|| ApiError::internal("idempotency record neither claimed nor found"))?;
    decide(record, route, fingerprint)
}

fn decide(record: Record, route: &str, fingerprint: &str) -> ApiResult<Begin> {
    if record.route != route || record.fingerprint != fingerprint {
        return Err(ApiError::validation(
            Code::IdempotencyKeyReused,
            "Idempotency-Key",
            "this Idempotency-Key was already used with a different request; use a new key",
        ));
    }
    match (record.state.as_str(), record.response_status, record.response_body, record.generation_id) {
        ("done", _, _, Some(generation_id)) => Ok(Begin::Replay(Stored::Generation { generation_id })),
        ("done", Some(status), Some(body), None) => Ok(Begin::Replay(Stored::Body { status, body })),
        _ => Err(ApiError::new(
            Code::IdempotencyInProgress,
            "a request with this Idempotency-Key is still being processed; retry shortly",
        )),
    }
}

/// Deletes records past their 24 hours (cron; claims prune too, so this is a backstop).
pub async fn prune(db: &crate::db::Db<'_>, now_ms: u64) -> ApiResult<usize> {
    let expired_before = now_ms as i64 - TTL_MS as i64;
    let statement =
        db.prepare("DELETE FROM idempotency_keys WHERE created_at_ms <= ?1").bind(&[db::int(expired_before)])?;
    db.run(statement).await.or_internal()
}

/// A stored body as the replayed response.
pub fn replay(status: u16, body: String) -> ApiResult<Response> {
    let mut response = crate::http::json_text(status, body)?;
    mark_replayed(&mut response)?;
    Ok(response)
}

pub fn mark_replayed(response: &mut Response) -> ApiResult<()> {
    Ok(response.headers_mut().set("idempotent-replayed", "true")?)
}

/// Whether an outcome is kept for replay: not server errors, not throttling.
pub fn is_stored(status: u16) -> bool {
    status < 500 && status != 429
}

/// Records the outcome of a claimed request (for an error, its envelope), or drops the
/// claim for 5xx and 429 so that a retry really retries.
pub async fn finish(rc: &RequestContext, claim: Option<Claim>, outcome: Result<Stored, ApiError>) {
    let Some(claim) = claim else { return };
    let stored = match outcome {
        Ok(stored) => stored,
        Err(err) => Stored::Body { status: err.status(), body: err.envelope_json(&rc.request_id) },
    };
    let result = async {
        let db = rc.db()?;
        let statement = match stored {
            Stored::Body { status, .. } if !is_stored(status) => db
                .prepare("DELETE FROM idempotency_keys WHERE scope = ?1 AND idempotency_key = ?2")
                .bind(&[db::text(&claim.scope), db::text(&claim.key)])?,
            Stored::Body { status, body } => db
                .prepare(
                    "UPDATE idempotency_keys SET state = 'done', response_status = ?3, response_body = ?4
                     WHERE scope = ?1 AND idempotency_key = ?2",
                )
                .bind(&[db::text(&claim.scope), db::text(&claim.key), db::int(status.into()), db::text(&body)])?,
            Stored::Generation { generation_id } => db
                .prepare(
                    "UPDATE idempotency_keys SET state = 'done', response_status = 200, generation_id = ?3
                     WHERE scope = ?1 AND idempotency_key = ?2",
                )
                .bind(&[db::text(&claim.scope), db::text(&claim.key), db::text(&generation_id)])?,
        };
        db.run(statement).await.or_internal()
    };
    if let Err(err) = result.await {
        crate::log::error_for(&rc.request_id, "idempotency record not updated", &err.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::parse_object;

    #[test]
    fn header_values() {
        assert_eq!(IdempotencyKey::parse(None).unwrap(), None);
        assert!(IdempotencyKey::parse(Some("order-123 retry/2")).unwrap().is_some());
        assert!(IdempotencyKey::parse(Some(&"k".repeat(255))).unwrap().is_some());
        for bad in ["", &"k".repeat(256), "tab\there", "ünicode"] {
            let err = IdempotencyKey::parse(Some(bad)).unwrap_err();
            assert_eq!((err.status(), err.code.as_str()), (400, "invalid_idempotency_key"), "{bad:?}");
        }
    }

    #[test]
    fn fingerprint_ignores_formatting_but_not_content_or_route() {
        let a = parse_object(br#"{"prompt": "cat", "n": 2}"#).unwrap();
        let b = parse_object(b"{\"n\":2,\n \"prompt\":\"cat\"}").unwrap();
        let c = parse_object(br#"{"prompt": "cat", "n": 3}"#).unwrap();
        assert_eq!(fingerprint("POST /v1/generate", &a), fingerprint("POST /v1/generate", &b));
        assert_ne!(fingerprint("POST /v1/generate", &a), fingerprint("POST /v1/generate", &c));
        assert_ne!(fingerprint("POST /v1/generate", &a), fingerprint("POST /v1/images/generations", &a));
    }

    fn record(route: &str, fingerprint: &str, state: &str) -> Record {
        Record {
            route: route.into(),
            fingerprint: fingerprint.into(),
            state: state.into(),
            response_status: (state == "done").then_some(200),
            response_body: (state == "done").then(|| "{}".into()),
            generation_id: None,
        }
    }

    #[test]
    fn decisions() {
        let reused = decide(record("POST /v1/generate", "f1", "done"), "POST /v1/generate", "f2").err().unwrap();
        assert_eq!((reused.status(), reused.code.as_str()), (422, "idempotency_key_reused"));
        let other_route = decide(record("POST /v1/keys", "f1", "done"), "POST /v1/generate", "f1").err().unwrap();
        assert_eq!(other_route.code.as_str(), "idempotency_key_reused");
        let running =
            decide(record("POST /v1/generate", "f1", "in_progress"), "POST /v1/generate", "f1").err().unwrap();
        assert_eq!((running.status(), running.code.as_str()), (409, "idempotency_in_progress"));
        let stored = decide(record("POST /v1/keys", "f1", "done"), "POST /v1/keys", "f1").ok().unwrap();
        assert!(matches!(stored, Begin::Replay(Stored::Body { status: 200, .. })));
        let mut generation = record("POST /v1/generate", "f1", "done");
        generation.generation_id = Some("gen_1".into());
        let replayed = decide(generation, "POST /v1/generate", "f1").ok().unwrap();
        assert!(matches!(replayed, Begin::Replay(Stored::Generation { generation_id }) if generation_id == "gen_1"));
    }

    #[test]
    fn only_client_outcomes_are_stored() {
        assert!(is_stored(200) && is_stored(201) && is_stored(400) && is_stored(422));
        assert!(!is_stored(429) && !is_stored(500) && !is_stored(502) && !is_stored(503));
    }
}
