-- The cron gives up a pending or running generation by how long its current holder has had
-- it (`COALESCE(started_at, reserved_at, created_at)`), so that is what the partial index
-- orders by. The old index on created_at made the query also filter on created_at, which
-- is never later than the held time but named the wrong thing: a row's age is not its hold.
DROP INDEX IF EXISTS generations_unfinished;
CREATE INDEX generations_held ON generations (COALESCE(started_at, reserved_at, created_at))
  WHERE status IN ('pending', 'running');
