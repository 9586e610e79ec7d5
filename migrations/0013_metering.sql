-- Metering in tokens and dollars (issue 22). Money is an integer number of micro-dollars
-- everywhere (US$ 0.000001), never a float.

-- What each generation cost: the sums of Gemini's usageMetadata over the calls whose
-- images were delivered, and that at the deployment's prices. `usage_estimated`: some
-- call reported no (or no split) usage, and its image was counted as the model documents
-- it. `reserved_micros`: the worst case its request reserved against the money budgets,
-- given back (less the actual cost) when it ends. All 0 on older generations.
ALTER TABLE generations ADD COLUMN input_text_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE generations ADD COLUMN input_image_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE generations ADD COLUMN output_image_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE generations ADD COLUMN output_text_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE generations ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE generations ADD COLUMN cost_micros INTEGER NOT NULL DEFAULT 0;
ALTER TABLE generations ADD COLUMN usage_estimated INTEGER NOT NULL DEFAULT 0;
ALTER TABLE generations ADD COLUMN reserved_micros INTEGER NOT NULL DEFAULT 0;

-- Money ceilings per UTC day: a key's own (NULL: none but MAX_KEY_DAILY_BUDGET_USD) and an
-- account's, set by an admin (NULL: ACCOUNT_DAILY_BUDGET_USD).
ALTER TABLE api_keys ADD COLUMN daily_budget_micros INTEGER;
ALTER TABLE users ADD COLUMN daily_budget_micros INTEGER;

-- Spent plus reserved today, beside each image count. A key's is checked by its
-- conditional UPSERT; the account's and the deployment's by a CHECK against the budget in
-- force when the row was last charged (NULL: no money ceiling), which rolls back the
-- whole reservation batch, like the image ceilings of 0003.
ALTER TABLE usage ADD COLUMN cost_micros INTEGER NOT NULL DEFAULT 0;
ALTER TABLE account_usage ADD COLUMN cost_micros INTEGER NOT NULL DEFAULT 0;
ALTER TABLE account_usage ADD COLUMN budget_micros INTEGER
    CONSTRAINT account_daily_spend CHECK (budget_micros IS NULL OR cost_micros <= budget_micros);
ALTER TABLE deployment_usage ADD COLUMN live_cost_micros INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deployment_usage ADD COLUMN budget_micros INTEGER
    CONSTRAINT deployment_daily_spend CHECK (budget_micros IS NULL OR live_cost_micros <= budget_micros);

-- What was actually spent, per key, UTC day and model: one UPSERT in the batch that marks
-- a generation succeeded, so GET /v1/usage reads a row per day and model, never the
-- generations themselves.
CREATE TABLE usage_costs (
    api_key_id          TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    usage_date          TEXT NOT NULL,
    model               TEXT NOT NULL,
    user_id             TEXT NOT NULL,
    mode                TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    images              INTEGER NOT NULL DEFAULT 0,
    input_text_tokens   INTEGER NOT NULL DEFAULT 0,
    input_image_tokens  INTEGER NOT NULL DEFAULT 0,
    output_image_tokens INTEGER NOT NULL DEFAULT 0,
    output_text_tokens  INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens    INTEGER NOT NULL DEFAULT 0,
    cost_micros         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (api_key_id, usage_date, model)
) WITHOUT ROWID;
-- An account's days (the console's chart, GET /v1/usage) and the deployment's (admin).
CREATE INDEX usage_costs_by_account ON usage_costs (user_id, usage_date);
CREATE INDEX usage_costs_by_day ON usage_costs (usage_date);
