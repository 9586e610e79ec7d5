-- Core schema: accounts, their API keys, per-key daily usage, and generation records.
-- Ids are TEXT (UUIDs, `gen_` + UUID for generations): D1 integers travel as JS numbers.
-- Timestamps are UTC ISO-8601 strings with milliseconds ("2026-11-23T00:42:29.123Z"),
-- which sort lexically in time order.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
-- Registration relies on this index, not on check-then-insert, so racing sign-ups get 409.
CREATE UNIQUE INDEX users_email ON users (email);

CREATE TABLE api_keys (
    id                TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    key_hash          TEXT NOT NULL,          -- SHA-256 hex of the full key; the key itself is never stored
    prefix            TEXT NOT NULL,          -- first 12 characters, for listings
    mode              TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    is_active         INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    daily_image_quota INTEGER,                -- NULL: the DAILY_IMAGE_QUOTA default applies
    expires_at        TEXT,
    last_used_at      TEXT,
    revoked_at        TEXT,
    created_at        TEXT NOT NULL
);
CREATE UNIQUE INDEX api_keys_key_hash ON api_keys (key_hash);
CREATE INDEX api_keys_user_created ON api_keys (user_id, created_at DESC, id DESC);

-- One row per key per UTC day, incremented by UPSERT.
CREATE TABLE usage (
    api_key_id  TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    usage_date  TEXT NOT NULL,                -- YYYY-MM-DD, UTC
    image_count INTEGER NOT NULL DEFAULT 0 CHECK (image_count >= 0),
    PRIMARY KEY (api_key_id, usage_date)
) WITHOUT ROWID;

CREATE TABLE generations (
    id                  TEXT PRIMARY KEY,     -- gen_ + UUID v4
    api_key_id          TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    user_id             TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    prompt              TEXT NOT NULL,
    model               TEXT NOT NULL,
    size                TEXT NOT NULL,
    style               TEXT NOT NULL,
    n                   INTEGER NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    object_keys         TEXT,                 -- JSON array of R2 keys (or NULL when inlined as data: URLs)
    mime_type           TEXT,
    bytes               INTEGER,              -- total bytes of all images
    upstream_latency_ms INTEGER,
    error_code          TEXT,
    created_at          TEXT NOT NULL
);
-- History pages: newest first per account and per key, id breaks ties.
CREATE INDEX generations_user_created ON generations (user_id, created_at DESC, id DESC);
CREATE INDEX generations_key_created ON generations (api_key_id, created_at DESC, id DESC);
