-- A counter bumped by every change to the catalog tables, so services can cache the catalog and notice
-- changes (made by `convgen catalog load` or by hand) with the first query of their next request.

CREATE TABLE catalog_version (
    id      INT PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    version BIGINT NOT NULL
);

INSERT INTO catalog_version (id, version) VALUES (1, 1);

CREATE FUNCTION convgen_bump_catalog_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE catalog_version SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END;
$$;

CREATE TRIGGER personas_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON personas
    FOR EACH STATEMENT EXECUTE FUNCTION convgen_bump_catalog_version();
CREATE TRIGGER emotional_arcs_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON emotional_arcs
    FOR EACH STATEMENT EXECUTE FUNCTION convgen_bump_catalog_version();
CREATE TRIGGER training_topics_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON training_topics
    FOR EACH STATEMENT EXECUTE FUNCTION convgen_bump_catalog_version();
CREATE TRIGGER prompt_templates_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON prompt_templates
    FOR EACH STATEMENT EXECUTE FUNCTION convgen_bump_catalog_version();

-- A claim stays after its conversation is stored, pointing at it, with a lease that never expires: the claim
-- row alone then answers "is this request_id new, in progress, or done?" in one statement, race-free.
ALTER TABLE generation_claims ADD COLUMN conversation_pk UUID REFERENCES conversations (id) ON DELETE CASCADE;
