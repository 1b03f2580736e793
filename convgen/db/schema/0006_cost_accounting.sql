-- Issue 12: what a conversation cost, by kind of token, priced from a versioned price table.
-- cache_creation_input_tokens stays the sum of the two TTLs' writes (5-minute writes cost 1.25x input, 1-hour 2x).
-- Before this migration convgen only wrote 5-minute cache entries.
ALTER TABLE conversations
    ADD COLUMN cache_creation_5m_input_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN cache_creation_1h_input_tokens BIGINT NOT NULL DEFAULT 0,
    -- usage.service_tier: standard, or batch (the Batch API's half price).
    ADD COLUMN service_tier TEXT NOT NULL DEFAULT 'standard',
    -- The price table the cost was computed with; NULL for rows costed before the table existed.
    ADD COLUMN price_version TEXT;
UPDATE conversations SET cache_creation_5m_input_tokens = cache_creation_input_tokens;
ALTER TABLE conversations
    ADD CONSTRAINT conversations_cache_writes_add_up
        CHECK (cache_creation_input_tokens = cache_creation_5m_input_tokens + cache_creation_1h_input_tokens),
    -- NULL: the price table does not know the model (or the service tier): the cost is unknown, never guessed.
    ALTER COLUMN cost_usd DROP NOT NULL,
    ALTER COLUMN cost_usd DROP DEFAULT;

-- A template's topic part, sent after its shared part (persona and arc) so that the shared part can be cached.
-- Templates stored before this have their topic inside template_text; `convgen catalog load` rewrites the builtin ones.
ALTER TABLE prompt_templates ADD COLUMN topic_text TEXT NOT NULL DEFAULT '';

-- The cost split by kind of token (each rounded to the micro-dollar; cost_usd is the exact sum rounded once).
ALTER TABLE conversations
    ADD COLUMN input_cost_usd          NUMERIC(14, 6),
    ADD COLUMN output_cost_usd         NUMERIC(14, 6),
    ADD COLUMN cache_write_5m_cost_usd NUMERIC(14, 6),
    ADD COLUMN cache_write_1h_cost_usd NUMERIC(14, 6),
    ADD COLUMN cache_read_cost_usd     NUMERIC(14, 6);

-- Estimates read the output sizes of a template's recent conversations made by a model.
CREATE INDEX conversations_output_sizes ON conversations (template_id, model, created_at DESC);
