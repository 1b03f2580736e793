-- Issue 12: what conversations and jobs cost, by kind of token, priced from a versioned price table; budgets,
-- the breaker and a reason for a job's state.

-- Cache writes by TTL (5-minute writes cost 1.25x input, 1-hour writes 2x). cache_creation_input_tokens becomes
-- their sum, computed by PostgreSQL; before this migration convgen wrote 5-minute entries only.
ALTER TABLE conversations
    ADD COLUMN cache_creation_5m_input_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN cache_creation_1h_input_tokens BIGINT NOT NULL DEFAULT 0,
    -- usage.service_tier: standard, or batch (the Batch API's half price).
    ADD COLUMN service_tier TEXT NOT NULL DEFAULT 'standard',
    -- The price table the cost was computed with; NULL for rows costed before price tables.
    ADD COLUMN price_version TEXT,
    -- The cost split by kind of token, each rounded to the micro-dollar (cost_usd is the exact sum rounded once).
    ADD COLUMN input_cost_usd NUMERIC(14, 6),
    ADD COLUMN output_cost_usd NUMERIC(14, 6),
    ADD COLUMN cache_write_5m_cost_usd NUMERIC(14, 6),
    ADD COLUMN cache_write_1h_cost_usd NUMERIC(14, 6),
    ADD COLUMN cache_read_cost_usd NUMERIC(14, 6),
    -- NULL: the price table does not know the model (or the service tier): the cost is unknown, never guessed.
    ALTER COLUMN cost_usd DROP NOT NULL,
    ALTER COLUMN cost_usd DROP DEFAULT;
UPDATE conversations SET cache_creation_5m_input_tokens = cache_creation_input_tokens;
ALTER TABLE conversations DROP COLUMN cache_creation_input_tokens;
ALTER TABLE conversations ADD COLUMN cache_creation_input_tokens BIGINT
    GENERATED ALWAYS AS (cache_creation_5m_input_tokens + cache_creation_1h_input_tokens) STORED;
-- Estimates read the output sizes of a template's recent conversations made by a model.
CREATE INDEX conversations_output_sizes ON conversations (template_id, model, created_at DESC);

-- A template's topic part, sent after its shared part (persona and arc) so that the shared part can be cached.
-- Templates stored before this have their topic inside template_text; `convgen catalog load` rewrites the builtin ones.
ALTER TABLE prompt_templates ADD COLUMN topic_text TEXT NOT NULL DEFAULT '';

-- Jobs and items carry the same usage columns as conversations (an item: its conversation's; a job: the sum of its
-- completed items'), and how many of those conversations could not be priced.
ALTER TABLE batch_jobs
    ADD COLUMN cache_creation_5m_input_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN cache_creation_1h_input_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN input_cost_usd NUMERIC(16, 6) NOT NULL DEFAULT 0,
    ADD COLUMN output_cost_usd NUMERIC(16, 6) NOT NULL DEFAULT 0,
    ADD COLUMN cache_write_5m_cost_usd NUMERIC(16, 6) NOT NULL DEFAULT 0,
    ADD COLUMN cache_write_1h_cost_usd NUMERIC(16, 6) NOT NULL DEFAULT 0,
    ADD COLUMN cache_read_cost_usd NUMERIC(16, 6) NOT NULL DEFAULT 0,
    ADD COLUMN unpriced_conversations INT NOT NULL DEFAULT 0,
    -- The budget: items are claimed only while cost_usd + reserved_cost_usd + the next item's reservation fit.
    ADD COLUMN max_cost_usd NUMERIC(16, 6) CHECK (max_cost_usd >= 0),
    -- The reservations of the items in flight (each item's estimated cost, held from its claim to its outcome).
    ADD COLUMN reserved_cost_usd NUMERIC(16, 6) NOT NULL DEFAULT 0,
    -- Why the job is in its state when the job put itself there (BUDGET_EXHAUSTED, or the breaker's reason).
    ADD COLUMN state_reason TEXT,
    ADD COLUMN state_message TEXT,
    -- The breaker: the reason shared by the latest finished attempts, all permanent failures, and how many.
    ADD COLUMN failure_streak_reason TEXT,
    ADD COLUMN failure_streak INT NOT NULL DEFAULT 0;
UPDATE batch_jobs SET cache_creation_5m_input_tokens = cache_creation_input_tokens;
ALTER TABLE batch_jobs DROP COLUMN cache_creation_input_tokens;
ALTER TABLE batch_jobs ADD COLUMN cache_creation_input_tokens BIGINT
    GENERATED ALWAYS AS (cache_creation_5m_input_tokens + cache_creation_1h_input_tokens) STORED;

ALTER TABLE batch_items
    ADD COLUMN cache_creation_5m_input_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN cache_creation_1h_input_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN input_cost_usd NUMERIC(14, 6) NOT NULL DEFAULT 0,
    ADD COLUMN output_cost_usd NUMERIC(14, 6) NOT NULL DEFAULT 0,
    ADD COLUMN cache_write_5m_cost_usd NUMERIC(14, 6) NOT NULL DEFAULT 0,
    ADD COLUMN cache_write_1h_cost_usd NUMERIC(14, 6) NOT NULL DEFAULT 0,
    ADD COLUMN cache_read_cost_usd NUMERIC(14, 6) NOT NULL DEFAULT 0,
    ADD COLUMN unpriced_conversations INT NOT NULL DEFAULT 0,
    -- What the item holds of its job's budget while it is processing (0 for a job without a budget).
    ADD COLUMN reserved_cost_usd NUMERIC(14, 6) NOT NULL DEFAULT 0;
UPDATE batch_items SET cache_creation_5m_input_tokens = cache_creation_input_tokens
    WHERE cache_creation_input_tokens <> 0;
ALTER TABLE batch_items DROP COLUMN cache_creation_input_tokens;
ALTER TABLE batch_items ADD COLUMN cache_creation_input_tokens BIGINT
    GENERATED ALWAYS AS (cache_creation_5m_input_tokens + cache_creation_1h_input_tokens) STORED;

-- A job state change the job made itself says why, in the event too (for the log and the watch stream).
ALTER TABLE batch_job_events ADD COLUMN state_reason TEXT, ADD COLUMN state_message TEXT;
