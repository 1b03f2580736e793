-- Conversations: id is the primary key (what foreign keys hold); conversation_id is the business key
-- (what blob keys use). They are different values, always.

CREATE TABLE conversations (
    id                          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id             UUID NOT NULL UNIQUE,
    request_id                  TEXT NOT NULL UNIQUE,
    created_by                  UUID NOT NULL,
    persona_id                  UUID NOT NULL REFERENCES personas (id),
    emotional_arc_id            UUID NOT NULL REFERENCES emotional_arcs (id),
    training_topic_id           UUID NOT NULL REFERENCES training_topics (id),
    tier                        TEXT NOT NULL CHECK (tier IN ('template', 'scenario', 'edge_case')),
    template_id                 UUID NOT NULL REFERENCES prompt_templates (id),
    processing_status           TEXT NOT NULL CHECK (processing_status IN ('completed', 'needs_review')),
    raw_bucket                  TEXT NOT NULL,
    raw_key                     TEXT NOT NULL,
    final_bucket                TEXT NOT NULL,
    final_key                   TEXT NOT NULL,
    turn_count                  INT NOT NULL CHECK (turn_count >= 2),
    model                       TEXT NOT NULL,
    input_tokens                BIGINT NOT NULL DEFAULT 0,
    output_tokens               BIGINT NOT NULL DEFAULT 0,
    cache_creation_input_tokens BIGINT NOT NULL DEFAULT 0,
    cache_read_input_tokens     BIGINT NOT NULL DEFAULT 0,
    cost_usd                    NUMERIC(14, 6) NOT NULL DEFAULT 0,
    validation_warnings         TEXT[] NOT NULL DEFAULT '{}',
    created_at                  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT conversations_keys_differ CHECK (id <> conversation_id)
);

CREATE INDEX conversations_listing ON conversations (created_at DESC, id DESC);
CREATE INDEX conversations_persona ON conversations (persona_id, created_at DESC, id DESC);

-- One row per request_id being generated right now: the holder makes the model call, a repeat waits.
-- A holder that dies stops renewing its lease, and the next caller takes the claim over.
CREATE TABLE generation_claims (
    request_id       TEXT PRIMARY KEY,
    owner            TEXT NOT NULL,
    lease_expires_at TIMESTAMPTZ NOT NULL,
    claimed_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Generations that failed after the model was called: why, at which step, and the raw response if any.
CREATE TABLE generation_failures (
    id                UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    request_id        TEXT NOT NULL,
    conversation_id   UUID NOT NULL,
    created_by        UUID NOT NULL,
    persona_id        UUID NOT NULL,
    emotional_arc_id  UUID NOT NULL,
    training_topic_id UUID NOT NULL,
    tier              TEXT NOT NULL,
    template_id       UUID NOT NULL,
    step              TEXT NOT NULL,
    error_code        TEXT NOT NULL,
    reason            TEXT NOT NULL,
    error_message     TEXT NOT NULL,
    raw_bucket        TEXT,
    raw_key           TEXT,
    model             TEXT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX generation_failures_request ON generation_failures (request_id);
CREATE INDEX generation_failures_created ON generation_failures (created_at DESC);
