-- Catalog: what conversations are generated from. Human keys are unique besides the UUIDs.

CREATE TABLE personas (
    id                  UUID PRIMARY KEY,
    persona_key         TEXT NOT NULL UNIQUE,
    name                TEXT NOT NULL,
    archetype           TEXT NOT NULL,
    age                 INT  NOT NULL CHECK (age BETWEEN 0 AND 130),
    occupation          TEXT NOT NULL,
    income_range        TEXT NOT NULL,
    communication_style TEXT NOT NULL,
    emotional_baseline  TEXT NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE emotional_arcs (
    id               UUID PRIMARY KEY,
    arc_key          TEXT NOT NULL UNIQUE,
    name             TEXT NOT NULL,
    tier             TEXT NOT NULL CHECK (tier IN ('template', 'scenario', 'edge_case')),
    category         TEXT NOT NULL CHECK (category IN ('core', 'edge')),
    starting_emotion TEXT NOT NULL,
    ending_emotion   TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE training_topics (
    id         UUID PRIMARY KEY,
    topic_key  TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    category   TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE prompt_templates (
    id            UUID PRIMARY KEY,
    template_name TEXT NOT NULL UNIQUE,
    tier          TEXT NOT NULL CHECK (tier IN ('template', 'scenario', 'edge_case')),
    arc_key       TEXT NOT NULL REFERENCES emotional_arcs (arc_key) ON UPDATE CASCADE,
    template_text TEXT NOT NULL,
    placeholders  TEXT[] NOT NULL,
    active        BOOLEAN NOT NULL DEFAULT TRUE,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX prompt_templates_selection ON prompt_templates (arc_key, tier, template_name) WHERE active;
