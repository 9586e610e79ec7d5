-- Operator controls: roles, suspension, per-account and deployment-wide daily ceilings,
-- access-token revocation, test-image retention, and indexes for the cron.

-- Accounts: `admin` reaches /v1/admin/; a suspended account's token and keys get 403;
-- `daily_image_quota` is the account's own live ceiling (NULL: ACCOUNT_DAILY_IMAGE_QUOTA);
-- `token_version` is in every access token, and a password change bumps it, so every
-- token issued before stops working.
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin'));
ALTER TABLE users ADD COLUMN suspended_at TEXT;
ALTER TABLE users ADD COLUMN daily_image_quota INTEGER;
ALTER TABLE users ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0;

-- Access tokens revoked by logout before they expire, by their `jti`. A row is useless
-- once its token has expired; the cron deletes those.
CREATE TABLE revoked_tokens (
    jti           TEXT PRIMARY KEY,
    expires_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX revoked_tokens_expiry ON revoked_tokens (expires_at_ms);

-- Live images per account per UTC day. `live_limit` is the ceiling in force when the row
-- was last charged; the CHECK makes a reservation past it fail, which rolls back its
-- whole batch (the key's reservation and the pending generation included).
CREATE TABLE account_usage (
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    usage_date  TEXT NOT NULL,
    live_images INTEGER NOT NULL DEFAULT 0 CHECK (live_images >= 0),
    live_limit  INTEGER NOT NULL,
    CONSTRAINT account_daily_limit CHECK (live_images <= live_limit),
    PRIMARY KEY (user_id, usage_date)
) WITHOUT ROWID;

-- Images per UTC day for the whole deployment; live ones against DEPLOYMENT_DAILY_LIVE_IMAGES.
CREATE TABLE deployment_usage (
    usage_date  TEXT PRIMARY KEY,
    live_images INTEGER NOT NULL DEFAULT 0 CHECK (live_images >= 0),
    test_images INTEGER NOT NULL DEFAULT 0 CHECK (test_images >= 0),
    live_limit  INTEGER NOT NULL,
    CONSTRAINT deployment_daily_budget CHECK (live_images <= live_limit)
) WITHOUT ROWID;

-- A generation's key mode: test images expire after TEST_IMAGE_RETENTION_DAYS.
-- NULL on generations made before this migration (they are treated as live).
ALTER TABLE generations ADD COLUMN mode TEXT CHECK (mode IN ('live', 'test'));

-- The cron's lookups, so it never scans the table: pending generations by age, and test
-- generations that still hold images, by age.
CREATE INDEX generations_pending ON generations (created_at) WHERE status = 'pending';
CREATE INDEX generations_test_images ON generations (created_at)
    WHERE mode = 'test' AND object_keys IS NOT NULL;

-- Login throttling now counts per client IP as well as per email: a new scope. The table
-- holds only attempts inside a window, so it is rebuilt rather than altered; pruning uses
-- (scope, created_at_ms).
DROP TABLE auth_throttle;
CREATE TABLE auth_throttle (
    id            INTEGER PRIMARY KEY,
    scope         TEXT NOT NULL CHECK (scope IN ('login', 'login_ip', 'register')),
    subject       TEXT NOT NULL,              -- lower-cased email (at most 254 bytes), or client IP
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX auth_throttle_subject ON auth_throttle (scope, subject, created_at_ms);
CREATE INDEX auth_throttle_age ON auth_throttle (scope, created_at_ms);

-- Admin listings: accounts by email (prefix search, cursor order).
-- users_email (unique) already serves `email >= ? ORDER BY email`.

-- Idempotency records are scoped to the credential that made the request ('key:{id}' or
-- 'account:{id}') instead of the account, and a generation is stored as its id (its
-- answer is rendered again, with fresh URLs) instead of a body that can exceed D1's row
-- limit. Records live 24 hours, so the table is rebuilt.
DROP TABLE idempotency_keys;
CREATE TABLE idempotency_keys (
    scope           TEXT NOT NULL,            -- 'key:{api key id}' or 'account:{user id}'
    idempotency_key TEXT NOT NULL,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    route           TEXT NOT NULL,            -- "POST /v1/generate"
    fingerprint     TEXT NOT NULL,            -- SHA-256 of the canonical JSON body
    state           TEXT NOT NULL CHECK (state IN ('in_progress', 'done')),
    response_status INTEGER,
    response_body   TEXT,                     -- small JSON (an error envelope, a key without its secret)
    generation_id   TEXT,                     -- or the generation whose answer is rendered again
    created_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (scope, idempotency_key)
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at_ms);
