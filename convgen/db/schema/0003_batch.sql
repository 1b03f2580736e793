-- Batch jobs, their items, and the append-only event log every progress stream and job log is read from.

CREATE TABLE batch_jobs (
    id                          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name                        TEXT NOT NULL,
    request_id                  TEXT UNIQUE,
    created_by                  UUID NOT NULL,
    state                       TEXT NOT NULL
        CHECK (state IN ('queued', 'running', 'paused', 'stopping', 'completed', 'failed', 'cancelled')),
    -- Set while stopping: the terminal state the job takes when its last in-flight item ends.
    stop_target                 TEXT CHECK (stop_target IN ('failed', 'cancelled')),
    error_policy                TEXT NOT NULL CHECK (error_policy IN ('continue', 'stop_on_failure')),
    concurrency                 INT NOT NULL CHECK (concurrency > 0),
    max_attempts                INT NOT NULL CHECK (max_attempts > 0),
    total_items                 INT NOT NULL CHECK (total_items > 0),
    queued_items                INT NOT NULL CHECK (queued_items >= 0),
    processing_items            INT NOT NULL DEFAULT 0 CHECK (processing_items >= 0),
    completed_items             INT NOT NULL DEFAULT 0 CHECK (completed_items >= 0),
    failed_items                INT NOT NULL DEFAULT 0 CHECK (failed_items >= 0),
    cancelled_items             INT NOT NULL DEFAULT 0 CHECK (cancelled_items >= 0),
    input_tokens                BIGINT NOT NULL DEFAULT 0,
    output_tokens               BIGINT NOT NULL DEFAULT 0,
    cache_creation_input_tokens BIGINT NOT NULL DEFAULT 0,
    cache_read_input_tokens     BIGINT NOT NULL DEFAULT 0,
    cost_usd                    NUMERIC(16, 6) NOT NULL DEFAULT 0,
    last_sequence               BIGINT NOT NULL DEFAULT 0,
    terminal_sequence           BIGINT NOT NULL DEFAULT 0,
    log_uploaded_sequence       BIGINT NOT NULL DEFAULT 0,
    created_at                  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    started_at                  TIMESTAMPTZ,
    finished_at                 TIMESTAMPTZ,
    updated_at                  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT batch_jobs_counts_add_up CHECK (
        queued_items + processing_items + completed_items + failed_items + cancelled_items = total_items
    )
);

CREATE INDEX batch_jobs_listing ON batch_jobs (created_at DESC, id DESC);
CREATE INDEX batch_jobs_by_state ON batch_jobs (state, created_at DESC, id DESC);
CREATE INDEX batch_jobs_runnable ON batch_jobs (created_at) WHERE state = 'running';
CREATE INDEX batch_jobs_log_pending ON batch_jobs (terminal_sequence) WHERE log_uploaded_sequence < terminal_sequence;

CREATE TABLE batch_items (
    id                          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    batch_job_id                UUID NOT NULL REFERENCES batch_jobs (id) ON DELETE CASCADE,
    position                    INT NOT NULL CHECK (position >= 0),
    persona_id                  UUID NOT NULL REFERENCES personas (id),
    emotional_arc_id            UUID NOT NULL REFERENCES emotional_arcs (id),
    training_topic_id           UUID NOT NULL REFERENCES training_topics (id),
    tier                        TEXT NOT NULL CHECK (tier IN ('template', 'scenario', 'edge_case')),
    template_id                 UUID NOT NULL,
    status                      TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'processing', 'completed', 'failed', 'cancelled')),
    run                         INT NOT NULL DEFAULT 1,
    attempts                    INT NOT NULL DEFAULT 0,
    lease_owner                 TEXT,
    lease_expires_at            TIMESTAMPTZ,
    lease_recoveries            INT NOT NULL DEFAULT 0,
    next_attempt_at             TIMESTAMPTZ NOT NULL DEFAULT '-infinity',
    error_code                  TEXT,
    error_message               TEXT,
    conversation_id             UUID REFERENCES conversations (id) ON DELETE CASCADE,
    input_tokens                BIGINT NOT NULL DEFAULT 0,
    output_tokens               BIGINT NOT NULL DEFAULT 0,
    cache_creation_input_tokens BIGINT NOT NULL DEFAULT 0,
    cache_read_input_tokens     BIGINT NOT NULL DEFAULT 0,
    cost_usd                    NUMERIC(14, 6) NOT NULL DEFAULT 0,
    started_at                  TIMESTAMPTZ,
    finished_at                 TIMESTAMPTZ,
    CONSTRAINT batch_items_position_unique UNIQUE (batch_job_id, position),
    CONSTRAINT batch_items_completed_has_conversation CHECK ((status = 'completed') = (conversation_id IS NOT NULL))
);

CREATE INDEX batch_items_conversation_id ON batch_items (conversation_id);
CREATE INDEX batch_items_by_status ON batch_items (batch_job_id, status, position);
CREATE INDEX batch_items_claimable ON batch_items (batch_job_id, next_attempt_at, position) WHERE status = 'queued';
CREATE INDEX batch_items_leases ON batch_items (lease_expires_at) WHERE status = 'processing';
CREATE INDEX batch_items_lease_owner ON batch_items (lease_owner) WHERE status = 'processing';

CREATE TABLE batch_job_events (
    batch_job_id              UUID NOT NULL REFERENCES batch_jobs (id) ON DELETE CASCADE,
    sequence                  BIGINT NOT NULL,
    kind                      TEXT NOT NULL CHECK (kind IN (
        'job', 'queued', 'processing', 'completed', 'failed', 'retrying', 'cancelled', 'released')),
    job_state                 TEXT NOT NULL,
    previous_job_state        TEXT,
    item_id                   UUID,
    position                  INT,
    item_state                TEXT,
    attempt                   INT,
    conversation_pk           UUID,
    conversation_business_key UUID,
    error_code                TEXT,
    error_message             TEXT,
    retry_delay_ms            BIGINT,
    message                   TEXT NOT NULL DEFAULT '',
    queued_items              INT NOT NULL,
    processing_items          INT NOT NULL,
    completed_items           INT NOT NULL,
    failed_items              INT NOT NULL,
    cancelled_items           INT NOT NULL,
    created_at                TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (batch_job_id, sequence)
);
