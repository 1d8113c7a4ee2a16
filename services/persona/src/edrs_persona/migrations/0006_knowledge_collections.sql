-- The knowledge collections a persona answers from (ids in the knowledge service; no foreign key
-- across services: a collection deleted later is skipped, and logged, by the turns that search it).
ALTER TABLE personas ADD COLUMN knowledge_collections uuid[] NOT NULL DEFAULT '{}';
