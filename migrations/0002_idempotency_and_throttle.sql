-- Idempotency-Key records: one per caller (account) and key, kept 24 hours.
CREATE TABLE idempotency_keys (
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    idempotency_key TEXT NOT NULL,
    route           TEXT NOT NULL,            -- "POST /v1/generate"
    fingerprint     TEXT NOT NULL,            -- SHA-256 of the canonical JSON body
    state           TEXT NOT NULL CHECK (state IN ('in_progress', 'done')),
    response_status INTEGER,
    response_body   TEXT,
    created_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (user_id, idempotency_key)
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at_ms);

-- Sliding-window counters for login failures (per email) and registrations (per IP).
-- A row is an attempt inside the window; rows older than the window are deleted as they pass.
CREATE TABLE auth_throttle (
    id            INTEGER PRIMARY KEY,
    scope         TEXT NOT NULL CHECK (scope IN ('login', 'register')),
    subject       TEXT NOT NULL,              -- lower-cased email, or client IP
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX auth_throttle_subject ON auth_throttle (scope, subject, created_at_ms);
