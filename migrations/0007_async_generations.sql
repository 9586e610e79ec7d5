-- Asynchronous generations (issue 13): new statuses, the webhook's delivery record, the
-- error's message, and each account's webhook signing-secret version.
--
-- `status` gains queued -> running -> succeeded | failed | canceled (a synchronous
-- generation still goes pending -> succeeded | failed). SQLite cannot alter a CHECK, so
-- the table is rebuilt with every column it has, in the same order, plus the new ones.
PRAGMA defer_foreign_keys = on;

CREATE TABLE generations_new (
    id                   TEXT PRIMARY KEY,
    api_key_id           TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    user_id              TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    prompt               TEXT NOT NULL,
    model                TEXT NOT NULL,
    size                 TEXT NOT NULL,
    style                TEXT NOT NULL,
    n                    INTEGER NOT NULL,
    status               TEXT NOT NULL
                         CHECK (status IN ('pending', 'queued', 'running', 'succeeded', 'failed', 'canceled')),
    object_keys          TEXT,
    mime_type            TEXT,
    bytes                INTEGER,
    upstream_latency_ms  INTEGER,
    error_code           TEXT,
    created_at           TEXT NOT NULL,
    mode                 TEXT CHECK (mode IN ('live', 'test')),
    width                INTEGER,
    height               INTEGER,
    aspect_ratio         TEXT,
    resolution           TEXT,
    inputs               TEXT,
    -- The error envelope's message of a failed generation (its code is error_code).
    error_message        TEXT,
    -- 1 when no aspectRatio goes upstream (the output follows the input images): the
    -- queue consumer rebuilds the request from this row.
    follows_inputs       INTEGER NOT NULL DEFAULT 0,
    -- Asynchronous generations: where the outcome is announced, and how that went.
    webhook_url          TEXT,
    webhook_attempts     INTEGER NOT NULL DEFAULT 0,
    webhook_last_status  INTEGER,
    webhook_delivered_at TEXT,
    started_at           TEXT,
    finished_at          TEXT
);

INSERT INTO generations_new (id, api_key_id, user_id, prompt, model, size, style, n, status, object_keys,
                             mime_type, bytes, upstream_latency_ms, error_code, created_at, mode, width, height,
                             aspect_ratio, resolution, inputs)
SELECT id, api_key_id, user_id, prompt, model, size, style, n, status, object_keys,
       mime_type, bytes, upstream_latency_ms, error_code, created_at, mode, width, height,
       aspect_ratio, resolution, inputs
FROM generations;

DROP TABLE generations;
ALTER TABLE generations_new RENAME TO generations;

CREATE INDEX generations_user_created ON generations (user_id, created_at DESC, id DESC);
CREATE INDEX generations_key_created ON generations (api_key_id, created_at DESC, id DESC);
-- The cron gives up work whose Worker died: synchronous (pending) and queued work that a
-- consumer took and never finished (running).
CREATE INDEX generations_unfinished ON generations (created_at) WHERE status IN ('pending', 'running');
CREATE INDEX generations_test_images ON generations (created_at)
    WHERE mode = 'test' AND object_keys IS NOT NULL;

-- Each account's webhook signing secret is derived from a Worker secret and this version
-- (never stored): 0 until the account creates one, and rotating bumps it; the previous
-- version keeps signing beside the new one for 24 hours after webhook_secret_rotated_at.
ALTER TABLE users ADD COLUMN webhook_secret_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN webhook_secret_rotated_at TEXT;
