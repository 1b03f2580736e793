-- Creating a 100,000-item job spent most of its time in per-row foreign-key checks against the catalog and in
-- indexing 100,000 NULL conversation ids. CreateBatchJob already checks every referenced id up front (in the
-- same transaction), and an item whose catalog entry disappears later fails with NOT_FOUND at generation, so
-- these three checks bought nothing. The conversation foreign key (the seed's) stays.
ALTER TABLE batch_items DROP CONSTRAINT batch_items_persona_id_fkey;
ALTER TABLE batch_items DROP CONSTRAINT batch_items_emotional_arc_id_fkey;
ALTER TABLE batch_items DROP CONSTRAINT batch_items_training_topic_id_fkey;

DROP INDEX batch_items_conversation_id;
CREATE INDEX batch_items_conversation_id ON batch_items (conversation_id) WHERE conversation_id IS NOT NULL;
