-- When a generation's reservation was made. The cron gives up a generation left pending
-- by a Worker that died, judged from this moment, not from created_at (the request's
-- start): a request whose body arrived slowly is reserved late, and must not be given up
-- (and its charge released) while its Worker is still drawing.
ALTER TABLE generations ADD COLUMN reserved_at TEXT;
