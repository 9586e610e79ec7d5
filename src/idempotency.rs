//! `Idempotency-Key` on the POST routes that create things (`/v1/generate`,
//! `/v1/images/generations`, `/v1/keys`). Owns the `idempotency_keys` table.
//!
//! Scoped to the caller's account. The first request with a key records its route and a
//! fingerprint of its (canonical) body, runs, and stores its status and body. Then:
//! - same key, same route and body: the stored response again, `Idempotent-Replayed: true`,
//!   with no second upstream call or charge;
//! - same key, another body or route: 422 `idempotency_key_reused`;
//! - same key while the first is still running: 409 `idempotency_in_progress`;
//! - 5xx and 429 outcomes are not stored (the record is dropped), so a retry really retries;
//!   requests refused by validation never create a record;
//! - records expire after 24 hours; a record left `in_progress` for 10 minutes (its Worker
//!   died) is abandoned and may be taken over.

use crate::body::JsonObject;
use crate::db::{self, Batch, D1ResultExt};
use crate::error::{ApiError, ApiResult, Code};
use crate::http::RequestContext;
use serde::Deserialize;
use sha2::{Digest, Sha256};
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
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update(b"\n");
    hasher.update(body.canonical_json().as_bytes());
    hex::encode(hasher.finalize())
}

/// A claimed key: the request runs, and `finish` records what it answered.
pub struct Claim {
    user_id: String,
    key: String,
}

pub enum Begin {
    Proceed(Option<Claim>),
    Replay(Response),
}

/// The row `RETURNING 1 AS claimed` gives when this request took the key.
#[derive(Deserialize)]
struct Claimed {}

#[derive(Deserialize)]
struct Record {
    route: String,
    fingerprint: String,
    state: String,
    response_status: Option<u16>,
    response_body: Option<String>,
}

/// Claims the key for this request, or says how to answer instead. One D1 round trip.
pub async fn begin(
    rc: &RequestContext,
    key: Option<IdempotencyKey>,
    user_id: &str,
    route: &str,
    fingerprint: &str,
) -> ApiResult<Begin> {
    let Some(IdempotencyKey(key)) = key else { return Ok(Begin::Proceed(None)) };
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
            "INSERT INTO idempotency_keys (user_id, idempotency_key, route, fingerprint, state, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, 'in_progress', ?5)
             ON CONFLICT (user_id, idempotency_key) DO UPDATE SET
                 route = excluded.route, fingerprint = excluded.fingerprint, state = 'in_progress',
                 response_status = NULL, response_body = NULL, created_at_ms = excluded.created_at_ms
             WHERE idempotency_keys.state = 'in_progress' AND idempotency_keys.created_at_ms <= ?6
             RETURNING 1 AS claimed",
        )
        .bind(&[
            db::text(user_id),
            db::text(&key),
            db::text(route),
            db::text(fingerprint),
            db::int(now),
            db::int(abandoned_before),
        ])?,
    );
    let existing = batch.push::<Record>(
        db.prepare(
            "SELECT route, fingerprint, state, response_status, response_body FROM idempotency_keys
             WHERE user_id = ?1 AND idempotency_key = ?2",
        )
        .bind(&[db::text(user_id), db::text(&key)])?,
    );
    let results = db.batch(batch).await.or_internal()?;
    if results.first(claimed)?.is_some() {
        return Ok(Begin::Proceed(Some(Claim { user_id: user_id.to_string(), key })));
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
    match (record.state.as_str(), record.response_status, record.response_body) {
        ("done", Some(status), Some(body)) => Ok(Begin::Replay(replay(status, body)?)),
        _ => Err(ApiError::new(
            Code::IdempotencyInProgress,
            "a request with this Idempotency-Key is still being processed; retry shortly",
        )),
    }
}

fn replay(status: u16, body: String) -> ApiResult<Response> {
    let mut response = crate::http::json_text(status, body)?;
    response.headers_mut().set("idempotent-replayed", "true")?;
    Ok(response)
}

/// Whether an outcome is kept for replay: not server errors, not throttling.
pub fn is_stored(status: u16) -> bool {
    status < 500 && status != 429
}

/// Records the outcome of a claimed request: its status and JSON body, or for an error its
/// envelope (dropping the claim instead for 5xx and 429).
pub async fn finish(rc: &RequestContext, claim: Option<Claim>, outcome: Result<(u16, &str), &ApiError>) {
    let Some(claim) = claim else { return };
    let envelope;
    let (status, body) = match outcome {
        Ok(answer) => answer,
        Err(err) => {
            envelope = err.envelope_json(&rc.request_id);
            (err.status(), envelope.as_str())
        }
    };
    let result = async {
        let db = rc.db()?;
        let statement = if is_stored(status) {
            db.prepare(
                "UPDATE idempotency_keys SET state = 'done', response_status = ?3, response_body = ?4
                 WHERE user_id = ?1 AND idempotency_key = ?2",
            )
            .bind(&[
                db::text(&claim.user_id),
                db::text(&claim.key),
                db::int(status.into()),
                db::text(body),
            ])?
        } else {
            db.prepare("DELETE FROM idempotency_keys WHERE user_id = ?1 AND idempotency_key = ?2")
                .bind(&[db::text(&claim.user_id), db::text(&claim.key)])?
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
    }

    #[test]
    fn only_client_outcomes_are_stored() {
        assert!(is_stored(200) && is_stored(201) && is_stored(400) && is_stored(422));
        assert!(!is_stored(429) && !is_stored(500) && !is_stored(502) && !is_stored(503));
    }
}
