-- Suspending an account ends its queued generations in the same batch (store.rs,
-- push_stop_queued_of): this finds them without reading the account's whole history.
CREATE INDEX generations_queued ON generations (user_id) WHERE status = 'queued';
