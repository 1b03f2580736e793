-- Dataset exports (DatasetService): one row per export, run in the background by a batch service replica that
-- holds its lease. A replica that dies stops renewing the lease and another one runs the export again from the
-- start: the files are a pure function of the selection and the seed, so a rerun writes the same bytes.

CREATE TABLE dataset_exports (
    id                      UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    request_id              TEXT UNIQUE,
    state                   TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed')),
    -- The validated request: selection, format, system prompt, split, quality gate, report_only.
    spec                    JSONB NOT NULL,
    selected_conversations  BIGINT NOT NULL DEFAULT 0 CHECK (selected_conversations >= 0),
    processed_conversations BIGINT NOT NULL DEFAULT 0 CHECK (processed_conversations >= 0),
    exported_train          BIGINT NOT NULL DEFAULT 0 CHECK (exported_train >= 0),
    exported_eval           BIGINT NOT NULL DEFAULT 0 CHECK (exported_eval >= 0),
    dropped_by_reason       JSONB NOT NULL DEFAULT '{}',
    files                   JSONB NOT NULL DEFAULT '[]',
    -- The DatasetReport (proto JSON) and the first dropped rows, set when the export succeeds.
    report                  JSONB,
    dropped_sample          JSONB NOT NULL DEFAULT '[]',
    error_code              TEXT,
    error_message           TEXT,
    runs                    INT NOT NULL DEFAULT 0,
    lease_owner             TEXT,
    lease_expires_at        TIMESTAMPTZ,
    created_at              TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    started_at              TIMESTAMPTZ,
    finished_at             TIMESTAMPTZ,
    updated_at              TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX dataset_exports_listing ON dataset_exports (created_at DESC, id DESC);
CREATE INDEX dataset_exports_runnable ON dataset_exports (created_at) WHERE state = 'running';
