-- The per-key rate limit (RATE_LIMIT_PER_MINUTE) moves from a Durable Object onto the
-- key's own row, where the key lookup's batch takes a token without a round trip of its
-- own (src/rate_limit.rs). A token bucket in fixed point: one token is 60000 units; NULL
-- in both columns is a full bucket, so every existing key starts full.
ALTER TABLE api_keys ADD COLUMN rate_units INTEGER;
ALTER TABLE api_keys ADD COLUMN rate_updated_ms INTEGER;
